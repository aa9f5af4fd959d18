"""Side by side with Huey, RQ and Celery: the same clients, jobs and workers against each.

All durable: jqueue's journal (fdatasync before an answer), Huey's SqliteHuey in WAL mode
with ``synchronous=FULL`` (an fsync per enqueue), and RQ and Celery on Redis with
``appendonly yes``, ``appendfsync always`` (the AOF fsync'd before Redis answers a write;
no RDB snapshots). No-op jobs (jqueue: OP_TEST_DELAY with duration 0; Huey, RQ, Celery: a
module-level function returning 1). Prints, each in the same run:

  - durable submits per second from 1 and from 16 client processes: jqueue through
    jq-masterd's socket (no worker runs the jobs, a fresh daemon each, no checkpoint in
    the window), jqueue as a library in this process (threads), and Huey (each client
    process with its own connection), RQ (``Queue.enqueue``) and Celery (``task.delay()``,
    no result backend). jqueue's socket and Huey take turns, ROUNDS rounds each (jqueue
    first), and each figure is the mean over its rounds: their ratio then sees the same
    machine (on a 2-vCPU virtual machine, Huey's one client ran anywhere between 1,760
    and 2,572 submits/s in runs minutes apart, moving the ratio more than any change);
  - the daemon's CPU seconds per 1,000 of those socket submits (from /proc, the whole
    process; for RQ and Celery, redis-server's), and the clients' own CPU per 1,000 (for
    Huey the clients are all there is);
  - end to end: 10,000 no-op jobs submitted by 16 client processes until every one has
    finished, 2 workers (jq-masterd --workers 2; Huey's consumer with 2 worker threads,
    polling every 1-10 ms: its best case; RQ: 2 processes of its default ``Worker``,
    which forks a work horse per job, each started with this module imported as RQ's
    performance notes advise, done when the queue's finished registry holds every job;
    Celery: ``celery worker`` with its default prefork pool, concurrency 2, and a Redis
    result backend (on the workers' side only: the clients' app has none, so no result
    subscription per submit), done when every job's result is stored, then all checked
    SUCCESS); and jq-masterd's CPU per job over it, by thread (the kernel's names: its
    reactor, its workers, its checkpoint);
  - 16 clients sustained over 12 s with checkpoints every 5 s (the default): the rate,
    the daemon's CPU per 1,000 and the checkpoint thread's share of it.

Ratios are jqueue / Huey, and jqueue / RQ or Celery on their rows. Huey, RQ, Celery and
redis-py come from the optional extra ``bench`` (``pip install -e '.[bench]'``; ``make
bench`` installs them); RQ and Celery also need a ``redis-server`` binary (Debian:
``apt-get install redis-server``; its service need not run). Each RQ or Celery measurement
gets a private redis-server of its own, on a free loopback port and a temporary directory
under the run's work dir, waited for until it answers PING, stopped (with its workers)
and removed afterwards. Whatever is missing, its figures are skipped and said so.
"""

import contextlib
import functools
import importlib.util
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import core
import luxi

from jqueue.luxi import client as luxi_client
from jqueue.queue import JobQueue

NOOP = {"OP_ID": "OP_TEST_DELAY", "duration": 0}
#: Alternate rounds of jqueue's socket and Huey in the submit rates (see the docstring).
ROUNDS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


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

def _client(make_submit, seconds, ready, go, start, out):
    submit = make_submit()
    ready.put(os.getpid())
    go.wait()
    start_at = start.value
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
    calling make_submit() once for its own connection, then submit() in a loop. They all
    start 1 s after the first was started, or 0.1 s after the last one is ready if that
    is later (16 Celery clients take 1-2 s to set up on 2 vCPUs)."""
    out, ready = multiprocessing.Queue(), multiprocessing.Queue()
    go, start = multiprocessing.Event(), multiprocessing.Value("d", 0.0)
    start_at = time.time() + 1.0
    procs = [multiprocessing.Process(target=_client,
                                     args=(make_submit, seconds, ready, go, start, out))
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get()
    start.value = max(start_at, time.time() + 0.1)
    go.set()
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


def jqueue_socket(root, clients, seconds, checkpoint_interval=60, rounds=1, between=None):
    """Socket submits: (rate, daemon CPU per 1,000, client CPU per 1,000, thread CPU, the
    daemon's CPU seconds), over `rounds` rounds of `seconds` on one daemon; between(), if
    given, runs after each round (a peer's turn, while the daemon idles)."""
    proc, sock = luxi.start_daemon(os.path.join(root, "sock%d-%s" % (
        clients, checkpoint_interval)), workers=0, checkpoint_interval=checkpoint_interval)
    count = client_cpu = cpu = 0.0
    threads = {}
    try:
        for _ in range(rounds):
            cpu0, threads0 = process_cpu(proc.pid), thread_cpu(proc.pid)
            rate, per_1000 = client_rate(_LuxiSubmit(sock), clients, seconds)
            cpu1, threads1 = process_cpu(proc.pid), thread_cpu(proc.pid)
            count += rate * seconds
            client_cpu += per_1000 * rate * seconds / 1000
            cpu += cpu1 - cpu0
            for name, used in threads1.items():
                threads[name] = threads.get(name, 0.0) + used - threads0.get(name, 0.0)
            if between is not None:
                between()
    finally:
        luxi.stop_daemon(proc)
    return (count / (rounds * seconds), 1000 * cpu / count, 1000 * client_cpu / count,
            threads, cpu)


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


def _huey_round(out, root, clients, seconds):
    out.append(huey_rate(root, clients, seconds))


def _mean_rate(rounds):
    """(rate, client CPU per 1,000) over rounds of the same length [(rate, CPU per 1,000)]."""
    count = sum(rate for rate, _ in rounds)
    return count / len(rounds), sum(rate * cpu for rate, cpu in rounds) / max(count, 1)


def _huey_consumer(path, workers):
    huey, _ = make_huey(path)
    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=False,
                                    initial_delay=0.001, max_delay=0.01)
    consumer.run()


def huey_end_to_end(root, jobs, clients=16, workers=2):
    """Jobs per second from the first enqueue until every result is stored."""
    path = os.path.join(root, "huey-e2e.db")
    huey, _ = make_huey(path)
    consumer = multiprocessing.Process(target=_huey_consumer, args=(path, workers))
    consumer.start()
    time.sleep(1.0)  # the consumer is up, as jq-masterd is before its clients start
    try:
        start = time.perf_counter()
        total = _submit_batches(_HueySubmit(path), jobs, clients)
        deadline = time.monotonic() + 600
        while huey.result_count() < total and time.monotonic() < deadline:
            time.sleep(0.02)
        return total / (time.perf_counter() - start)
    finally:
        consumer.terminate()  # SIGTERM: Huey's immediate shutdown
        consumer.join(30)


# RQ and Celery, each on a private durable redis-server

def redis_peers_missing():
    """None if RQ and Celery can be measured here, else the line saying why not."""
    if shutil.which("redis-server") is None:
        return "  (RQ and Celery not measured: no redis-server on this machine)"
    missing = [name for name in ("redis", "rq", "celery") if importlib.util.find_spec(name) is None]
    if missing:
        return ("  (RQ and Celery not measured: Python package%s %s missing: pip install -e "
                "'.[bench]')" % ("s" * (len(missing) > 1), ", ".join(missing)))
    return None


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server(root, name):
    """A durable redis-server (AOF, fsync always, no RDB) of its own: yields (process, URL,
    its directory) once it answers PING; stopped and the directory removed afterwards."""
    from redis import Redis
    work = tempfile.mkdtemp(prefix="redis-%s-" % name, dir=root)
    try:
        for _ in range(5):  # another process may take the free port before redis binds it
            port = _free_port()
            proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", work,
                 "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                 "--daemonize", "no", "--logfile", os.path.join(work, "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            client = Redis(host="127.0.0.1", port=port, socket_timeout=1)
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    client.ping()
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.02)
            client.close()
            if proc.poll() is None and time.monotonic() < deadline:
                break
            _stop(proc)
        else:
            raise RuntimeError("redis-server did not start: see %s" % work)
        try:
            yield proc, "redis://127.0.0.1:%d" % port, work
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stop(proc, group=False, timeout=60):
    """SIGTERM (a clean shutdown for Redis and for RQ's and Celery's workers), SIGKILL if it
    lingers; with group (a worker started in a session of its own), then SIGKILL to what
    is left of its process group (a work horse or pool child)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _start_worker(code, work, env=None):
    """A worker subprocess running `code` with this module importable, in its own session."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (BENCH_DIR, env.get("PYTHONPATH")) if p)
    log = open(os.path.join(work, "worker-%d.log" % time.monotonic_ns()), "wb")
    with log:
        return subprocess.Popen([sys.executable, *code], cwd=work, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _peer_batch(make_submit, count, out):
    submit = make_submit()
    for _ in range(count):
        submit()
    out.put(count)


def _submit_batches(make_submit, jobs, clients):
    """`jobs` submitted by `clients` processes (jobs // clients each); returns how many."""
    return sum(luxi.from_processes(_peer_batch, (make_submit, jobs // clients), clients))


def _wait_count(count, target, what, timeout=600):
    deadline = time.monotonic() + timeout
    while count() < target:
        if time.monotonic() > deadline:
            raise RuntimeError("%s: %d of %d jobs done after %d s" % (what, count(), target,
                                                                       timeout))
        time.sleep(0.02)


def _redis_rate(root, name, make_submit, clients, seconds):
    """(submits per second, client CPU per 1,000, redis-server CPU per 1,000). Each client
    submits once before the window (RQ's and Celery's first submit connects, and Celery's
    also finalizes its app: some 50 ms of CPU, which 16 processes starting together on 2
    vCPUs would otherwise spend in the window), as jqueue's and Huey's clients connect
    before theirs; the client library is imported here, before the clients fork."""
    importlib.import_module(name)
    with redis_server(root, "%s-submit%d" % (name, clients)) as (proc, url, _):
        cpu0 = process_cpu(proc.pid)
        rate, client_cpu = client_rate(make_submit(url, warm=True), clients, seconds)
        server_cpu = process_cpu(proc.pid) - cpu0
    return rate, client_cpu, 1000 * server_cpu / max(1, rate * seconds)


# RQ: Queue.enqueue of _noop (importable as peers._noop by the workers)

RQ_QUEUE = "bench"


def _rq_queue(url):
    from redis import Redis
    from rq import Queue
    return Queue(RQ_QUEUE, connection=Redis.from_url(url))


class _RQSubmit:
    """make_submit for RQ (warm: one enqueue first, before the measured window)."""

    def __init__(self, url, warm=False):
        self.url, self.warm = url, warm

    def __call__(self):
        queue = _rq_queue(self.url)

        def submit():
            queue.enqueue(_noop)
        if self.warm:
            submit()
        return submit


def _rq_worker_main(url, name):
    """One RQ worker: its default Worker class, which forks a work horse per job."""
    from rq import Worker
    queue = _rq_queue(url)
    Worker([queue], connection=queue.connection, name=name).work(logging_level="WARNING")


def rq_rate(root, clients, seconds):
    return _redis_rate(root, "rq", _RQSubmit, clients, seconds)


def rq_end_to_end(root, jobs, clients=16, workers=2):
    """Jobs per second from the first enqueue until the finished registry holds them all."""
    from rq import Worker
    with redis_server(root, "rq-e2e") as (_, url, work):
        queue = _rq_queue(url)
        procs = [_start_worker(["-c", "import sys, peers; peers._rq_worker_main(*sys.argv[1:])",
                                url, "bench-%d" % i], work) for i in range(workers)]
        try:
            # Both workers registered and one job through: they are up, as jq-masterd is
            # before its clients start.
            _wait_count(lambda: Worker.count(connection=queue.connection), workers, "RQ", 60)
            _submit_batches(_RQSubmit(url), 1, 1)
            _wait_count(lambda: queue.finished_job_registry.count, 1, "RQ", 60)
            start = time.perf_counter()
            total = _submit_batches(_RQSubmit(url), jobs, clients)

            def done():
                if queue.failed_job_registry.count:
                    raise RuntimeError("RQ: %d jobs failed" % queue.failed_job_registry.count)
                return queue.finished_job_registry.count - 1
            _wait_count(done, total, "RQ")
            return total / (time.perf_counter() - start)
        finally:
            for proc in procs:
                _stop(proc, group=True)


# Celery: task.delay() of _noop, registered as bench.noop

def make_celery(broker, backend=None):
    """A Celery app on the Redis broker (with a result backend if given) and its task."""
    from celery import Celery
    app = Celery("bench", broker=broker, backend=backend, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    return app, app.task(name="bench.noop", shared=False)(_noop)


_celery_worker_app = None


def __getattr__(name):
    """`celery -A peers:celery_app`: the worker's app, from the environment it is given."""
    global _celery_worker_app
    if name != "celery_app":
        raise AttributeError(name)
    if _celery_worker_app is None:
        _celery_worker_app = make_celery(os.environ["JQ_BENCH_CELERY_BROKER"],
                                         os.environ["JQ_BENCH_CELERY_BACKEND"])[0]
    return _celery_worker_app


class _CelerySubmit:
    """make_submit for Celery (warm: one delay() first, before the measured window)."""

    def __init__(self, url, warm=False):
        self.url, self.warm = url, warm

    def __call__(self):
        _, task = make_celery(self.url + "/0")
        if self.warm:
            task.delay()
        return task.delay


def celery_rate(root, clients, seconds):
    return _redis_rate(root, "celery", _CelerySubmit, clients, seconds)


def celery_end_to_end(root, jobs, clients=16, workers=2):
    """Jobs per second from the first delay() until every result is stored (results in
    Redis database 1, nothing else there: its key count is the count of finished jobs)."""
    from redis import Redis
    with redis_server(root, "celery-e2e") as (_, url, work):
        results = Redis.from_url(url + "/1")
        proc = _start_worker(["-m", "celery", "-A", "peers:celery_app", "worker", "--pool",
                              "prefork", "--concurrency", str(workers), "--loglevel",
                              "WARNING", "--hostname", "bench@%h"], work,
                             {"JQ_BENCH_CELERY_BROKER": url + "/0",
                              "JQ_BENCH_CELERY_BACKEND": url + "/1"})
        try:
            _submit_batches(_CelerySubmit(url), 1, 1)  # the worker is up: one job through
            _wait_count(results.dbsize, 1, "Celery", 120)
            start = time.perf_counter()
            total = _submit_batches(_CelerySubmit(url), jobs, clients)
            _wait_count(results.dbsize, total + 1, "Celery")
            elapsed = time.perf_counter() - start
            keys = list(results.scan_iter("celery-task-meta-*", count=1000))
            ok = sum(b'"SUCCESS"' in (meta or b"") for meta in results.mget(keys))
            if ok != total + 1:
                raise RuntimeError("Celery: %d of %d jobs succeeded" % (ok, total + 1))
            return total / elapsed
        finally:
            _stop(proc, group=True)


# The suite

def run(root, quick=False, results=None):
    """Yield rows (label, value, unit, ratio to Huey; RQ's and Celery's rows: their own
    figure and the ratio to it), then print the side-by-side table."""
    seconds = 1.0 if quick else 3.0
    jobs = 2000 if quick else 10000
    have_huey = huey_available()
    redis_missing = redis_peers_missing()
    redis_peers = [] if redis_missing else [
        ("RQ", "RQ (Redis, appendfsync always)", rq_rate, rq_end_to_end,
         "RQ, 2 default Workers (a forked work horse per job)"),
        ("Celery", "Celery (Redis, appendfsync always)", celery_rate, celery_end_to_end,
         "Celery, worker: prefork pool, concurrency 2")]
    names = [peer[0] for peer in redis_peers]
    table = []

    def row(label, ours, library, theirs, others=None, unit="/s"):
        table.append((label, ours, library, theirs, others or {}))
        ratio = ours / theirs if (ours is not None and theirs) else None
        return (label, ours, unit, ratio)

    def peer_row(label, ours, theirs, unit="/s"):
        return (label, theirs, unit, ours / theirs if theirs else None)

    for clients in (1, 16):
        huey_rounds = []
        between = functools.partial(_huey_round, huey_rounds, root, clients, seconds)
        rate, daemon_cpu, client_cpu, _, _ = jqueue_socket(
            root, clients, seconds, rounds=ROUNDS, between=between if have_huey else None)
        library = jqueue_library(root, clients, seconds)
        theirs = _mean_rate(huey_rounds) if have_huey else (None, None)
        others = {name: rate_of(root, clients, seconds)
                  for name, _, rate_of, _, _ in redis_peers}
        plural = "s" * (clients > 1)
        yield row("durable submits, %d client%s" % (clients, plural), rate, library, theirs[0],
                  {name: other[0] for name, other in others.items()})
        for name, label, _, _, _ in redis_peers:
            yield peer_row("  %s: its rate" % label, rate, others[name][0])
        yield ("  jqueue daemon CPU per 1,000 of them", daemon_cpu, "s", None)
        for name in names:
            yield ("  redis-server CPU per 1,000 of them: %s" % name, others[name][2], "s", None)
        table.append(("daemon CPU per 1,000 submits, %d client%s (s)" % (clients, plural),
                      daemon_cpu, None, None, {name: others[name][2] for name in names}))
        yield ("  client CPU per 1,000: jqueue", client_cpu, "s", None)
        if have_huey:
            yield ("  client CPU per 1,000: Huey (it has no daemon)", theirs[1], "s", None)
        for name in names:
            yield ("  client CPU per 1,000: %s" % name, others[name][1], "s", None)
        table.append(("client CPU per 1,000 submits, %d client%s (s)" % (clients, plural),
                      client_cpu, None, theirs[1], {name: others[name][1] for name in names}))
    proc, sock = luxi.start_daemon(os.path.join(root, "e2e"), workers=2)
    try:
        threads0 = thread_cpu(proc.pid)
        ours = luxi.end_to_end(sock, jobs)
        threads = {name: used - threads0.get(name, 0.0)
                   for name, used in thread_cpu(proc.pid).items()}
    finally:
        luxi.stop_daemon(proc)
    library, queue = core.end_to_end(os.path.join(root, "e2e-lib"), jobs)
    queue.shutdown()
    theirs = huey_end_to_end(root, jobs) if have_huey else None
    others = {name: end_to_end(root, jobs) for name, _, _, end_to_end, _ in redis_peers}
    yield row("end to end, %d no-op jobs, 16 clients, 2 workers" % jobs, ours, library, theirs,
              others, "jobs/s")
    for name, _, _, _, label in redis_peers:
        yield peer_row("  %s" % label, ours, others[name], "jobs/s")
    # Where the daemon's CPU goes, a job at a time: its reactor (jq-masterd: submits and
    # answers), its workers (each commits the starts it waits for), its checkpoint.
    for name, cpu in sorted(threads.items(), key=lambda item: -item[1]):
        if cpu >= 0.01:
            yield ("  daemon CPU per job, thread %s" % name, cpu / jobs * 1e6, "us", None)
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
    if redis_missing:
        print(redis_missing)
    _print_table(table, names)


def _print_table(table, peers=()):
    """The figures side by side; `peers` (RQ, Celery) get a column and a ratio column each
    after Huey's, only when they were measured."""
    extra = "".join(" %s | socket / %s |" % (name, name) for name in peers)
    print()
    print("  | figure | jqueue via the socket | jqueue library | Huey | socket / Huey |" + extra)
    print("  |---|---|---|---|---|" + "---|---|" * len(peers))
    for label, ours, library, theirs, others in table:
        cells = [label, _fmt(ours), _fmt(library), _fmt(theirs), _ratio(label, ours, theirs)]
        for name in peers:
            cells += [_fmt(others.get(name)), _ratio(label, ours, others.get(name))]
        print("  | %s |" % " | ".join(cells))


def _ratio(label, ours, theirs):
    return "%.2f" % (ours / theirs) if ours and theirs and "CPU" not in label else ""


def _fmt(value):
    if value is None:
        return ""
    return f"{value:,.0f}" if value >= 100 else "%.3f" % value
