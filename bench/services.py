"""Benchmark of supervised services on one machine and through a node's jq-noded.

Prints (a) the latency from StartService to the run's first instruction (median and
p95 of sequential start/stop cycles; the instruction is a shell builtin opening a FIFO
named after $JQ_RUN for writing: when this process's blocked open of its other end
returns, against the call) against the same for a command job
(submit -> first instruction, bench/commands.py's (c)); (b) the time from a kill -9 of a
service with restart always to its next run's first instruction, whose floor is the
first back-off (1 s): the ratio is to that second; (c) StopService to STOPPED for a
service with a tree of 50 processes that honour SIGTERM; (d) N services started at once:
seconds until every one is RUNNING, then the daemons' threads and RSS with them running
against the same daemons idle; (e) submits a second from one client beside a service
printing without pause (``yes``), against the same daemon with nothing beside, and how
fast its log grows meanwhile (jq-masterd's service_log_rate bounds it). One machine's
figures come from a real jq-masterd, the node's from real jq-noded and jq-masterd
processes talking mutual TLS.
"""

import os
import signal
import statistics
import threading
import time

import commands
import luxi

from jqueue.luxi import client as luxi_client

RUNNING, STOPPED = "RUNNING", "STOPPED"


def views(client, names=None):
    return {v["name"]: v for v in client.query_services(names)}


def wait_for(predicate, timeout=120, what="a condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for %s" % what)
        time.sleep(0.005)


def watch(fifo):
    """Make a FIFO at fifo and a thread that notes when a writer opens it: the run's
    first instruction (bench/commands.py (c): a new file's mtime lags by up to a tick)."""
    os.mkfifo(fifo)
    opened = []
    reader = threading.Thread(target=commands._opened_at, args=(fifo, opened), daemon=True)
    reader.start()
    return reader, opened


def opened_at(watched, timeout=60):
    """When the FIFO of watch() was opened by a writer."""
    reader, opened = watched
    reader.join(timeout)
    if not opened:
        raise RuntimeError("nothing opened the FIFO within %gs" % timeout)
    return opened[0]


# (a) start -> first instruction


def start_latency(sock, workdir, cycles):
    """Seconds from StartService to the run's first instruction, per start/stop cycle."""
    marks = os.path.join(workdir, "a")
    os.makedirs(marks)
    latencies = []
    with luxi_client.Client(sock, timeout=60) as client:
        client.add_services([{"name": "lat", "startsecs": 0, "stop_timeout": 5,
                              "command": ": > %s/run.$JQ_RUN; exec sleep 300" % marks}])
        for run in range(1, cycles + 1):
            started = watch(os.path.join(marks, "run.%d" % run))
            called = time.time()
            client.control_service("lat", "start")
            latencies.append(opened_at(started) - called)
            client.control_service("lat", "stop")
            wait_for(lambda: views(client, ["lat"])["lat"]["state"] == STOPPED,
                     what="lat stopped")
        client.remove_service("lat")
    return latencies


# (b) kill -9 -> next run


def crash_restart(sock, workdir, count):
    """Seconds from kill -9 of a RUNNING service (restart always) to its next run's first
    instruction, once for each of count fresh services."""
    marks = os.path.join(workdir, "b")
    os.makedirs(marks)
    delays = []
    with luxi_client.Client(sock, timeout=60) as client:
        for number in range(count):
            name = "crash%d" % number
            first, second = (watch(os.path.join(marks, "%s.%d" % (name, run)))
                             for run in (1, 2))
            client.add_services([{"name": name, "restart": "always", "startsecs": 0,
                                  "command": ": > %s/%s.$JQ_RUN; exec sleep 300" % (
                                      marks, name)}], start=True)
            opened_at(first)
            view = _running(client, name)
            killed = time.time()
            os.kill(view["pid"], signal.SIGKILL)
            delays.append(opened_at(second) - killed)
            client.remove_service(name)
    return delays


def _running(client, name):
    found = {}

    def running():
        found.update(views(client, [name])[name])
        return found["state"] == RUNNING and found["pid"]
    wait_for(running, what="%s RUNNING" % name)
    return found


# (c) stopping a tree


def stop_tree(sock, size):
    """Seconds from StopService to STOPPED with a tree of size sleeping processes."""
    tree = "for i in $(seq %d); do sleep 300 & done; wait" % (size - 1)
    with luxi_client.Client(sock, timeout=60) as client:
        client.add_services([{"name": "tree", "command": tree, "startsecs": 0,
                              "env": {"JQ_BENCH_TREE": "1"}}], start=True)
        wait_for(lambda: views(client, ["tree"])["tree"]["state"] == RUNNING, what="tree")
        wait_for(lambda: _count_marked("JQ_BENCH_TREE=1") >= size, what="the tree")
        start = time.perf_counter()
        client.control_service("tree", "stop")
        wait_for(lambda: views(client, ["tree"])["tree"]["state"] == STOPPED, what="stop")
        elapsed = time.perf_counter() - start
        left = _count_marked("JQ_BENCH_TREE=1")
        client.remove_service("tree")
    if left:
        raise RuntimeError("%d processes of the tree survived its stop" % left)
    return elapsed


def _count_marked(entry):
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as stream:
                if entry.encode() in stream.read().split(b"\0"):
                    count += 1
        except OSError:
            pass
    return count


# (d) many services


def many(sock, pids, count):
    """(seconds until count services are all RUNNING, {pid: (idle, busy) figures})."""
    idle = {pid: commands.proc_figures(pid) for pid in pids}
    names = ["many%d" % n for n in range(count)]
    with luxi_client.Client(sock, timeout=300) as client:
        start = time.perf_counter()
        client.add_services([{"name": n, "command": ["sleep", "600"], "startsecs": 0}
                             for n in names], start=True)
        wait_for(lambda: all(v["state"] == RUNNING for v in views(client).values()),
                 timeout=300, what="%d services RUNNING" % count)
        elapsed = time.perf_counter() - start
        busy = {pid: commands.proc_figures(pid) for pid in pids}
        for name in names:
            client.remove_service(name)
        wait_for(lambda: not views(client), timeout=300, what="the services removed")
    return elapsed, {pid: (idle[pid], busy[pid]) for pid in pids}


def _submit_rate(client, seconds):
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}])
        count += 1
    return count / (time.perf_counter() - start)


def chatty(sock, seconds):
    """(submits a second with nothing beside, the same beside ``yes`` as a service, its
    log's growth in bytes a second meanwhile)."""
    with luxi_client.Client(sock, timeout=60) as client:
        idle = _submit_rate(client, seconds)
        client.add_services([{"name": "chatty", "command": ["yes", "a line of output"],
                              "startsecs": 0}], start=True)
        wait_for(lambda: views(client, ["chatty"])["chatty"]["log_bytes"] > 0,
                 what="the chatty service's first output")
        time.sleep(1)
        before, start = views(client, ["chatty"])["chatty"]["log_bytes"], time.perf_counter()
        busy = _submit_rate(client, seconds)
        growth = (views(client, ["chatty"])["chatty"]["log_bytes"] - before) / (
            time.perf_counter() - start)
        client.remove_service("chatty")
        wait_for(lambda: not views(client), what="the chatty service removed")
    return idle, busy, growth


def _suite(rows, where, sock, workdir, pids, quick, job_latency):
    cycles = 10 if quick else 50
    lat = start_latency(sock, workdir, cycles)
    median = statistics.median(lat)
    rows.append(("(a) StartService -> first instruction, %s, median" % where,
                 median * 1e3, "ms", median / job_latency if job_latency else None))
    rows.append(("    p95", sorted(lat)[int(len(lat) * 0.95) - 1] * 1e3, "ms", None))
    delays = crash_restart(sock, workdir, 3 if quick else 5)
    median = statistics.median(delays)
    rows.append(("(b) kill -9 -> next run's first instruction, %s, median" % where,
                 median * 1e3, "ms", median / 1.0))
    rows.append(("(c) StopService -> STOPPED, a tree of 50, %s" % where,
                 stop_tree(sock, 50) * 1e3, "ms", None))
    count = 50 if quick else 300
    elapsed, figures = many(sock, list(pids.values()), count)
    rows.append(("(d) %d services started at once, all RUNNING, %s" % (count, where),
                 elapsed, "s", None))
    for name, pid in pids.items():
        (idle_t, idle_r), (busy_t, busy_r) = figures[pid]
        rows.append(("    %s threads with them (idle %d)" % (name, idle_t), busy_t, "",
                     busy_t / idle_t))
        rows.append(("    %s RSS with them (idle %.0f MiB)" % (name, idle_r), busy_r, "MiB",
                     busy_r / idle_r))
    idle, busy, growth = chatty(sock, 2 if quick else 5)
    rows.append(("(e) submits beside a service printing without pause, %s" % where, busy,
                 "/s", busy / idle))
    rows.append(("    with nothing beside", idle, "/s", None))
    rows.append(("    the service's log's growth meanwhile", growth / 2 ** 20, "MiB/s", None))


def _job_latency(sock, workdir, jobs):
    return statistics.median(commands.first_instruction(sock, workdir, jobs))


def run(root, quick=False, results=None):
    """Rows of (label, value, unit, ratio)."""
    rows = []
    jobs = 10 if quick else 50
    proc, sock = commands.start_single(root, slots=8)
    try:
        job_latency = _job_latency(sock, root, jobs)
        _suite(rows, "one machine", sock, os.path.join(root, "single-work"),
               {"jq-masterd": proc.pid}, quick, job_latency)
    finally:
        luxi.stop_daemon(proc)
    node = commands.Noded(root, slots=8)
    try:
        job_latency = _job_latency(node.socket, root, jobs)
        _suite(rows, "through jq-noded", node.socket, os.path.join(root, "node-work"),
               {"jq-masterd": node.proc.pid, "jq-noded": node.noded.proc.pid}, quick,
               job_latency)
    finally:
        node.stop()
    return rows
