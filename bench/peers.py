"""Side by side with Huey: the same clients, jobs and workers against jqueue and its peer.

Both durable: jqueue's journal (fdatasync before an answer) and Huey's SqliteHuey in WAL mode
with ``synchronous=FULL`` (an fsync per enqueue). No-op jobs (jqueue: OP_TEST_DELAY with
duration 0; Huey: a task returning 1). Prints, each in the same run:

  - durable submits per second from 1 and from 16 client processes: jqueue through
    jq-masterd's socket (no worker runs the jobs, a fresh daemon each, no checkpoint in
    the window), jqueue as a library in this process (threads), and Huey (each client
    process with its own connection);
  - the daemon's CPU seconds per 1,000 of those socket submits (from /proc, the whole
    process), and the clients' own CPU per 1,000 (for Huey the clients are all there is);
  - end to end: 10,000 no-op jobs submitted by 16 client processes until every one has
    finished, 2 workers (jq-masterd --workers 2; Huey's consumer with 2 worker threads,
    polling every 1-10 ms: its best case);
  - 16 clients sustained over 12 s with checkpoints every 5 s (the default): the rate,
    the daemon's CPU per 1,000 and the checkpoint thread's share of it.

Ratios are jqueue / Huey. Huey comes from the optional extra ``bench`` (``pip install -e
'.[bench]'``; ``make bench`` installs it); without it, its figures are skipped and said so.
RQ and Celery (on Redis with ``appendfsync always``) measured 0.1-0.6x of Huey on these
machines; they are not run here since the machine has no ``redis-server``.
"""

import multiprocessing
import os
import shutil
import time

import core
import luxi

from jqueue.luxi import client as luxi_client
from jqueue.queue import JobQueue

NOOP = {"OP_ID": "OP_TEST_DELAY", "duration": 0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# CPU of a process and of its threads, from /proc

def process_cpu(pid):
    """CPU seconds (user + system) the process has used."""
    return _stat_cpu("/proc/%d/stat" % pid)


def thread_cpu(pid):
    """{kernel thread name: CPU seconds} summed over the process's threads of that name."""
    out = {}
    task_dir = "/proc/%d/task" % pid
    for tid in os.listdir(task_dir):
        try:
            with open(os.path.join(task_dir, tid, "comm")) as f:
                name = f.read().strip()
            cpu = _stat_cpu(os.path.join(task_dir, tid, "stat"))
        except OSError:  # the thread ended meanwhile
            continue
        out[name] = out.get(name, 0.0) + cpu
    return out


def _stat_cpu(path):
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# Client processes, the same harness for both systems

def _client(make_submit, seconds, start_at, out):
    submit = make_submit()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0 = time.process_time()
    stop, count = start_at + seconds, 0
    while time.time() < stop:
        submit()
        count += 1
    out.put((count, time.process_time() - cpu0))


def client_rate(make_submit, clients, seconds):
    """(submits per second, client CPU seconds per 1,000) from `clients` processes, each
    calling make_submit() once for its own connection, then submit() in a loop."""
    out = multiprocessing.Queue()
    start_at = time.time() + 1.0
    procs = [multiprocessing.Process(target=_client, args=(make_submit, seconds, start_at, out))
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    count = sum(n for n, _ in results)
    return count / seconds, 1000 * sum(c for _, c in results) / max(1, count)


class _LuxiSubmit:
    """make_submit for jqueue's socket (picklable: multiprocessing may need it)."""

    def __init__(self, sock):
        self.sock = sock

    def __call__(self):
        client = luxi_client.Client(self.sock)
        return lambda: client.submit_job([NOOP])


def jqueue_socket(root, clients, seconds, checkpoint_interval=60):
    """Socket submits: (rate, daemon CPU per 1,000, client CPU per 1,000, thread CPU)."""
    proc, sock = luxi.start_daemon(os.path.join(root, "sock%d-%s" % (
        clients, checkpoint_interval)), workers=0, checkpoint_interval=checkpoint_interval)
    try:
        cpu0, threads0 = process_cpu(proc.pid), thread_cpu(proc.pid)
        rate, client_cpu = client_rate(_LuxiSubmit(sock), clients, seconds)
        cpu1, threads1 = process_cpu(proc.pid), thread_cpu(proc.pid)
    finally:
        luxi.stop_daemon(proc)
    count = rate * seconds
    threads = {name: cpu - threads0.get(name, 0.0) for name, cpu in threads1.items()}
    return rate, 1000 * (cpu1 - cpu0) / count, client_cpu, threads, cpu1 - cpu0


def jqueue_library(root, threads, seconds):
    """In-process submits per second (the core suite's measurement)."""
    queue = JobQueue(os.path.join(root, "lib%d" % threads), workers=0, max_jobs=10 ** 7)
    try:
        return core.submit_rate(queue, threads, seconds)
    finally:
        queue.shutdown()


# Huey

def _noop():
    return 1


def make_huey(path):
    """A durable SqliteHuey (WAL, synchronous=FULL) and its no-op task."""
    from huey import SqliteHuey
    huey = SqliteHuey("bench", filename=path, fsync=True, journal_mode="wal")
    return huey, huey.task(name="noop")(_noop)


def huey_available():
    try:
        import huey  # noqa: F401 - only asking whether it is installed
    except ImportError:
        return False
    return True


class _HueySubmit:
    def __init__(self, path):
        self.path = path

    def __call__(self):
        _, task = make_huey(self.path)
        return task


def huey_rate(root, clients, seconds):
    path = os.path.join(root, "huey-submit%d.db" % clients)
    make_huey(path)  # create the tables once, before the clients race to
    return client_rate(_HueySubmit(path), clients, seconds)


def _huey_consumer(path, workers):
    huey, _ = make_huey(path)
    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=False,
                                    initial_delay=0.001, max_delay=0.01)
    consumer.run()


def _huey_batch(path, count, out):
    _, task = make_huey(path)
    for _ in range(count):
        task()
    out.put(count)


def huey_end_to_end(root, jobs, clients=16, workers=2):
    """Jobs per second from the first enqueue until every result is stored."""
    path = os.path.join(root, "huey-e2e.db")
    huey, _ = make_huey(path)
    consumer = multiprocessing.Process(target=_huey_consumer, args=(path, workers))
    consumer.start()
    time.sleep(1.0)  # the consumer is up, as jq-masterd is before its clients start
    try:
        out = multiprocessing.Queue()
        start = time.perf_counter()
        procs = [multiprocessing.Process(target=_huey_batch, args=(path, jobs // clients, out))
                 for _ in range(clients)]
        for proc in procs:
            proc.start()
        total = sum(out.get() for _ in procs)
        for proc in procs:
            proc.join()
        deadline = time.monotonic() + 600
        while huey.result_count() < total and time.monotonic() < deadline:
            time.sleep(0.02)
        return total / (time.perf_counter() - start)
    finally:
        consumer.terminate()  # SIGTERM: Huey's immediate shutdown
        consumer.join(30)


# The suite

def run(root, quick=False, results=None):
    """Yield rows (label, value, unit, ratio to Huey), then print the side-by-side table."""
    seconds = 1.0 if quick else 3.0
    jobs = 2000 if quick else 10000
    have_huey = huey_available()
    table = []

    def row(label, ours, library, theirs, unit="/s"):
        table.append((label, ours, library, theirs))
        ratio = ours / theirs if (ours is not None and theirs) else None
        return (label, ours, unit, ratio)

    for clients in (1, 16):
        rate, daemon_cpu, client_cpu, _, _ = jqueue_socket(root, clients, seconds)
        library = jqueue_library(root, clients, seconds)
        theirs = huey_rate(root, clients, seconds) if have_huey else (None, None)
        plural = "s" * (clients > 1)
        yield row("durable submits, %d client%s" % (clients, plural), rate, library, theirs[0])
        yield ("  jqueue daemon CPU per 1,000 of them", daemon_cpu, "s", None)
        table.append(("daemon CPU per 1,000 submits, %d client%s (s)" % (clients, plural),
                      daemon_cpu, None, None))
        yield ("  client CPU per 1,000: jqueue", client_cpu, "s", None)
        if have_huey:
            yield ("  client CPU per 1,000: Huey (it has no daemon)", theirs[1], "s", None)
        table.append(("client CPU per 1,000 submits, %d client%s (s)" % (clients, plural),
                      client_cpu, None, theirs[1]))
    proc, sock = luxi.start_daemon(os.path.join(root, "e2e"), workers=2)
    try:
        ours = luxi.end_to_end(sock, jobs)
    finally:
        luxi.stop_daemon(proc)
    library, queue = core.end_to_end(os.path.join(root, "e2e-lib"), jobs)
    queue.shutdown()
    theirs = huey_end_to_end(root, jobs) if have_huey else None
    yield row("end to end, %d no-op jobs, 16 clients, 2 workers" % jobs, ours, library, theirs,
              "jobs/s")
    sustained = 4.0 if quick else 12.0
    rate, daemon_cpu, _, threads, total = jqueue_socket(root, 16, sustained,
                                                        checkpoint_interval=5)
    share = threads.get("jq-checkpoint", 0.0) / total if total else 0.0
    yield ("sustained: 16 clients over %gs, checkpoints every 5 s" % sustained, rate, "/s",
           None)
    yield ("  daemon CPU per 1,000 submits", daemon_cpu, "s", None)
    yield ("  checkpoint thread's share of the daemon's CPU", 100 * share, "%", None)
    for name, cpu in sorted(threads.items(), key=lambda item: -item[1]):
        if cpu >= 0.01:
            yield ("    daemon thread %s" % name, cpu, "s", None)
    if not have_huey:
        print("  (Huey is not installed: pip install -e '.[bench]' for its figures)")
    if shutil.which("redis-server") is None:
        print("  (RQ and Celery not measured: no redis-server on this machine)")
    _print_table(table)


def _print_table(table):
    print()
    print("  | figure | jqueue via the socket | jqueue library | Huey | socket / Huey |")
    print("  |---|---|---|---|---|")
    for label, ours, library, theirs in table:
        ratio = "%.2f" % (ours / theirs) if ours and theirs and "CPU" not in label else ""
        print("  | %s | %s | %s | %s | %s |" % (label, _fmt(ours), _fmt(library), _fmt(theirs),
                                               ratio))


def _fmt(value):
    if value is None:
        return ""
    return f"{value:,.0f}" if value >= 100 else "%.3f" % value

