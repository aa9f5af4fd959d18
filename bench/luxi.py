"""Benchmark through the LUXI socket of a real jq-masterd, with ratios to in-process figures.

Prints: durable submits per second from 1 and 16 client processes (a daemon with no
worker: jobs stay queued, as in the core figures), end-to-end no-op jobs
per second, waiter wake-up latency (median, p99: from the job's end timestamp to the
client holding the answer) with 1 and with 5,000 concurrent waiters, the daemon's
RSS and thread count with 5,000 waiters, and a queue of 100,000 jobs: Query, QueryJobs
and `jqctl list` over it, a restart on it and the RSS before and after (ratio: after /
before). Ratios compare with the in-process (core)
figures measured in the same run: the target is a socket path costing at most 2x.
"""

import multiprocessing
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import time

from jqueue import constants, serializer
from jqueue.job import ts_to_float
from jqueue.luxi import client as luxi_client

NOOP = {"OP_ID": "OP_TEST_DELAY", "duration": 0}


def start_daemon(state_dir, workers=2, checkpoint_interval=5, extra=()):
    """Start jq-masterd on state_dir; return (process, socket path) once it answers."""
    sock = os.path.join(state_dir, "run", "jqueue.sock")
    proc = subprocess.Popen([sys.executable, "-m", "jqueue.daemon.masterd", "--state-dir",
                             state_dir, "--workers", str(workers), "--log-level", "warning",
                             "--max-jobs", "1000000", "--checkpoint-interval",
                             str(checkpoint_interval), *extra],
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with luxi_client.Client(sock, timeout=5) as client:
                client.query_config_values(["drain_flag"])
            return proc, sock
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("jq-masterd did not start")


def stop_daemon(proc):
    proc.terminate()
    proc.wait(60)


def _submitter(sock, seconds, start_at, out):
    with luxi_client.Client(sock) as client:
        while time.time() < start_at:
            time.sleep(0.001)
        stop, count = start_at + seconds, 0
        while time.time() < stop:
            client.submit_job([NOOP])
            count += 1
    out.put(count)


def from_processes(target, args, processes):
    """Run target(*args, out) in `processes` processes at once; what each put in out."""
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=target, args=(*args, out))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    return results


def submit_rate(sock, clients, seconds):
    """Durable submits per second from `clients` processes, each with its own connection."""
    start_at = time.time() + 1.0
    return sum(from_processes(_submitter, (sock, seconds, start_at), clients)) / seconds


def open_waiters(sock, request, count, poller):
    """count raw connections to sock, each having sent request (a long poll) and
    registered in poller (a select.epoll) to be reported once, when its answer comes;
    the connections."""
    conns = []
    for _ in range(count):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(sock)
        conn.sendall(request)
        poller.register(conn, select.EPOLLIN | select.EPOLLONESHOT)
        conns.append(conn)
    return conns


def _batch_submitter(sock, count, out):
    ids = []
    with luxi_client.Client(sock) as client:
        for _ in range(count):
            ids.append(client.submit_job([NOOP]))
    out.put(ids)


def end_to_end(sock, jobs, clients=16):
    """No-op jobs per second from the first submit until every one succeeded."""
    start = time.perf_counter()
    ids = sorted(i for batch in from_processes(_batch_submitter, (sock, jobs // clients),
                                               clients) for i in batch)
    wait_all(sock, ids)
    return len(ids) / (time.perf_counter() - start)


def wait_all(sock, ids):
    """Return once every job of ids is finalized (see wait_jobs)."""
    with luxi_client.Client(sock, timeout=120) as client:
        wait_jobs(client, ids)


def wait_jobs(client, ids):
    """Return once every job of ids is finalized.

    Waits for the newest pending job (jobs mostly end in id order), then asks for the
    others once, again until none is left; polling the status of thousands of ids every
    few milliseconds would cost the daemon more than the jobs do.
    """
    pending = sorted(ids)
    while pending:
        info = None
        while info is None or info[0] not in constants.JOBS_FINALIZED:
            result = client.wait_for_job_change_once(pending[-1], ["status"], info, None, 10)
            if result != constants.JOB_NOTCHANGED:
                info = result[0]
        rows = client.query_jobs(pending, ["id", "status"])
        pending = [row[0] for row in rows if row[1] not in constants.JOBS_FINALIZED]


def one_waiter_latency(sock, samples):
    """Median and p99 seconds from job end to a blocked WaitForJobChange answer."""
    latencies = []
    with luxi_client.Client(sock) as client:
        for _ in range(samples):
            job_id = client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0.005}])
            info = None
            while True:
                result = client.wait_for_job_change_once(job_id, ["status", "end_ts"], info,
                                                         None, 10)
                if result != constants.JOB_NOTCHANGED:
                    info = result[0]
                    if info[0] in constants.JOBS_FINALIZED:
                        break
            latencies.append(time.time() - ts_to_float(info[1]))
    latencies.sort()
    return statistics.median(latencies), latencies[max(0, int(len(latencies) * 0.99) - 1)]


def _proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])


def many_waiters(sock, pid, waiters):
    """Latency of `waiters` concurrent waiters on one job; daemon RSS and threads meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with luxi_client.Client(sock) as client:
        job_id = client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 3.0}])
        info = client.wait_for_job_change(job_id, ["status"], ["queued"], None, 10)[0]
    request = serializer.dumps_bytes({"method": "WaitForJobChange", "args": [
        job_id, ["status"], info, None, 30]}) + b"\x03"
    with select.epoll() as poller:
        conns = open_waiters(sock, request, waiters, poller)
        time.sleep(1.0)
        rss, threads = _proc_status(pid)
        arrivals = collect(poller, conns, 60)
    for conn in conns:
        conn.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with luxi_client.Client(sock) as client:
        end = ts_to_float(client.query_jobs([job_id], ["end_ts"])[0][0])
    latencies = sorted(t - end for t in arrivals)
    return (statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1], rss,
            threads, len(arrivals))


def collect(poller, conns, timeout):
    """Arrival times of the waiters' answers: the time the poll that reported each one
    returned, by then its bytes had arrived.

    Only the poll is timed: each connection is reported once (EPOLLONESHOT) and read
    afterwards, so this one Python thread's work on thousands of sockets does not delay
    the next poll and add itself to the daemon's latency. An answer is one small write
    of the daemon's, so it arrives whole; connections whose answer is not whole (or that
    were closed) are left out.
    """
    times = {}
    deadline = time.monotonic() + timeout
    while len(times) < len(conns) and time.monotonic() < deadline:
        events = poller.poll(1.0)
        polled = time.time()
        for fd, _ in events:
            times[fd] = polled
    arrivals = []
    for conn in conns:
        if conn.fileno() in times:
            conn.settimeout(5)
            data = b""
            while not data.endswith(b"\x03"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            if data.endswith(b"\x03"):
                arrivals.append(times[conn.fileno()])
    return arrivals


def scale(root, jobs):
    """A queue of `jobs` jobs through the socket: listing it, restarting the daemon on it.

    Returns {figure: value}: seconds for Query ["job", ["id", "status"]] (the generic
    method Ganeti's newer tools list with), QueryJobs of the same fields, and `jqctl
    list` (default columns, the whole process); the daemon's RSS before a restart,
    seconds until the restarted daemon answers (the queue was just written: warm
    cache), and its RSS then.
    """
    out = {}
    state = os.path.join(root, "scale")
    proc, sock = start_daemon(state, workers=0, checkpoint_interval=60)
    try:
        with luxi_client.Client(sock, timeout=120) as client:
            for start in range(0, jobs, 1000):
                client.submit_many_jobs([[NOOP]] * min(1000, jobs - start))
            out["query"] = _best(lambda: client.query("job", ["id", "status"], None))
            out["queryjobs"] = _best(lambda: client.query_jobs([], ["id", "status"]))
        jqctl = [os.path.join(os.path.dirname(sys.executable), "jqctl"), "--socket", sock,
                 "list"]
        out["jqctl"] = _best(lambda: subprocess.run(jqctl, stdout=subprocess.DEVNULL,
                                                    check=True))
        out["rss_before"] = _proc_status(proc.pid)[0]
    finally:
        stop_daemon(proc)
    start = time.perf_counter()
    proc, sock = start_daemon(state, workers=0, checkpoint_interval=60)
    try:
        out["reopen"] = time.perf_counter() - start
        out["rss_after"] = _proc_status(proc.pid)[0]
    finally:
        stop_daemon(proc)
    return out


def _best(func, repeat=3):
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


def run(root, quick=False, results=None):
    """Run the socket measurements; rows of (label, value, unit, ratio)."""
    results = results if results is not None else {}
    rows = []
    seconds = 1.0 if quick else 3.0
    for clients in (1, 16):  # a fresh daemon each, as the in-process figures
        proc, sock = start_daemon(os.path.join(root, "submit%d" % clients), workers=0,
                                  checkpoint_interval=60)
        try:
            rate = submit_rate(sock, clients, seconds)
        finally:
            stop_daemon(proc)
        base = results.get("submit_%d" % clients)
        rows.append(("durable submits through the socket, %d client%s" % (
            clients, "s" * (clients > 1)), rate, "/s", _ratio(base, rate)))
    proc, sock = start_daemon(os.path.join(root, "state"))
    try:
        jobs = 2000 if quick else 10000
        rate = end_to_end(sock, jobs)
        rows.append(("submit -> success through the socket, %d jobs" % jobs, rate, "jobs/s",
                     _ratio(results.get("e2e"), rate)))
        median, p99 = one_waiter_latency(sock, 50 if quick else 200)
        rows.append(("1 waiter: job end -> answer, median", median * 1000, "ms",
                     _ratio(median, results.get("wait_median"))))
        rows.append(("1 waiter: job end -> answer, p99", p99 * 1000, "ms", None))
        count = 1000 if quick else 5000
        median, p99, rss, threads, got = many_waiters(sock, proc.pid, count)
        rows.append(("%d waiters (%d answered): job end -> answer, median" % (count, got),
                     median * 1000, "ms", None))
        rows.append(("%d waiters: job end -> answer, p99" % count, p99 * 1000, "ms", None))
        rows.append(("daemon RSS with %d waiters" % count, rss / 2 ** 20, "MiB", None))
        rows.append(("daemon threads with %d waiters" % count, threads, "", None))
    finally:
        stop_daemon(proc)
    jobs = 20000 if quick else 100000
    figures = scale(root, jobs)
    rows.append(("Query id,status of %d jobs (target < 0.3 s)" % jobs, figures["query"],
                 "s", None))
    rows.append(("QueryJobs id,status of %d jobs" % jobs, figures["queryjobs"], "s", None))
    rows.append(("jqctl list of %d jobs (target < 1 s)" % jobs, figures["jqctl"], "s", None))
    rows.append(("restart on %d jobs until it answers (target < 3 s)" % jobs,
                 figures["reopen"], "s", None))
    rows.append(("daemon RSS before the restart / after it", figures["rss_before"] / 2 ** 20,
                 "MiB", figures["rss_after"] / figures["rss_before"]))
    return rows


def _ratio(in_process, socket_figure):
    """Socket cost relative to in-process: rates as in/socket, latencies as socket/in."""
    if not in_process or not socket_figure:
        return None
    return in_process / socket_figure
