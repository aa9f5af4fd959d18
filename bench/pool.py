"""Benchmark of the nodes pool: placement over 100 simulated nodes, and 5,000 event listeners.

Prints (a) command jobs placed, started and finished per second with 100 simulated nodes
(4 slots each; tags: every node LINUX, one rack tag of ten, every fourth BIG, its own
name) and 10,000 jobs queued at once with a mix of affinities (LINUX; a rack; LINUX and
BIG; one node's name), against the same jobs on one simulated node with the same slots
in all (the ratio: 1 means placement costs nothing as the cluster grows); (b) the start
latency (submit to launch on the node, median of sequential jobs) of a job whose affinity
matches one idle node while the 10,000 jobs wait behind the other 100, against the same
on an empty one-node queue; (c) 5,000 WaitForEvents listeners on a real jq-masterd: one
state change (a submit's NEW) reaching all of them, median and p95 from the event's time
to each answer (target: median under 50 ms), and the daemon's RSS and threads with them
against idle.

The simulated nodes answer a start at once and end each command after --run seconds
(0 by default), in the same process as a real JobQueue (journal, group commit, fsync)
and the real CommandRunner on Twisted's reactor: what is measured is the master's work.
"""

import os
import select
import socket
import statistics
import time

import luxi

from jqueue import constants, serializer
from jqueue.embedded import running_reactor
from jqueue.luxi import client as luxi_client
from jqueue.queue import JobQueue
from jqueue.run.commands import CommandRunner, ReactorHost

SLOTS = 4


class SimNode:
    """A node link whose commands start at once and end after run seconds."""

    containment = "simulated"

    def __init__(self, name, tags, slots=SLOTS, run=0.0, launched=None):
        self.name, self.tags, self.slots, self.run = name, frozenset(tags), slots, run
        self.reachable, self.drained, self.offline = True, False, False
        self.launched = launched if launched is not None else {}
        self._runner = None
        self._pid = 0

    def subscribe(self, runner):
        self._runner = runner

    def launch(self, spec, done):
        self._pid += 1
        key = (spec["job"], spec["attempt"])
        self.launched[spec["job"]] = time.perf_counter()
        done({"job": key[0], "attempt": key[1], "pid": self._pid, "pgid": None,
              "cgroup": None, "started": time.time(), "deadline": None, "output_size": 0,
              "result": None})
        if self.run is not None:
            self._runner.host.call_later(self.run, self._end, key)

    def _end(self, key):
        self._runner.link_event(self.name, ("ended", key[0], key[1], {
            "exit_status": 0, "signal": None, "timed_out": False, "error": None,
            "ended": time.time(), "output_size": 0}))

    def fetch(self, job, attempt, offset, max_bytes, done):
        done(b"")

    def control(self, job, attempt, action, signum, done):
        done((True, "%s sent" % action))

    def lookup(self, job, attempt, done):
        done(None)

    def attempts(self, done):
        done([])

    def forget(self, job, attempt):
        pass

    def release(self, job, attempt, start, end):
        pass


def cluster(count, run=0.0, launched=None):
    """count simulated nodes n000..; with count 1, one node holding every tag and the
    slots of 100."""
    if count == 1:
        tags = {"LINUX", "BIG"} | {"rack%d" % r for r in range(10)} | {
            "n%03d" % i for i in range(100)}
        return [SimNode("n000", tags, SLOTS * 100, run, launched)]
    return [SimNode("n%03d" % i, {"LINUX", "rack%d" % (i % 10), "n%03d" % i} | (
        {"BIG"} if i % 4 == 0 else set()), SLOTS, run, launched) for i in range(count)]


def affinity(i):
    """The mix: 40% LINUX, 30% one rack, 20% LINUX and BIG, 10% one node."""
    kind = i % 10
    if kind < 4:
        return ["LINUX"]
    if kind < 7:
        return ["rack%d" % (i % 10)]
    if kind < 9:
        return ["LINUX", "BIG"]
    return ["n%03d" % (i % 100)]


def command(**params):
    return dict({"OP_ID": constants.OP_COMMAND_RUN, "cmd": ["true"]}, **params)


def open_queue(path, nodes):
    reactor = running_reactor()
    return JobQueue(path, workers=2, checkpoint_interval=5, max_jobs=1000000,
                    commands=lambda queue: CommandRunner(queue, ReactorHost(reactor), nodes,
                                                         nodes[0].name))


def wait_finished(queue, ids, timeout=600):
    deadline = time.monotonic() + timeout
    pending = list(ids)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError("%d jobs did not finish" % len(pending))
        rows = queue.query_jobs(pending, ["id", "status"])
        pending = [row[0] for row in rows if row[1] not in constants.JOBS_FINALIZED]
        if pending:
            time.sleep(0.05)


def placement_rate(path, count, jobs):
    """Jobs per second from all queued (nodes drained) to all finished, once the nodes
    open."""
    nodes = cluster(count)
    for node in nodes:
        node.drained = True
    queue = open_queue(path, nodes)
    runner = queue._commands
    try:
        ids = []
        for start in range(0, jobs, 1000):
            answers = queue.submit_many_jobs([[command(affinity=affinity(i))]
                                              for i in range(start, min(jobs, start + 1000))])
            ids.extend(value for ok, value in answers if ok)
        queue.wait_durable()
        began = time.perf_counter()
        for node in nodes:
            node.drained = False
        runner.nodes_changed()
        wait_finished(queue, ids)
        return len(ids) / (time.perf_counter() - began)
    finally:
        queue.shutdown(timeout=60)


def start_latency(path, count, queued, samples):
    """Median seconds from submit to launch of a job for an idle node, with `queued` jobs
    waiting for the other nodes (all of whose slots are busy)."""
    launched = {}
    nodes = cluster(count, run=None, launched=launched)  # their commands never end
    idle = SimNode("idle", {"FREE"}, SLOTS, 0.0, launched)
    queue = open_queue(path, nodes + [idle])
    try:
        for start in range(0, queued, 1000):
            queue.submit_many_jobs([[command(affinity=affinity(i))]
                                    for i in range(start, min(queued, start + 1000))])
        queue.wait_durable()
        latencies = []
        for _ in range(samples):
            began = time.perf_counter()
            job_id = queue.submit_job([command(affinity=["FREE"])])
            while job_id not in launched:
                time.sleep(0.0002)
            latencies.append(launched[job_id] - began)
            wait_finished(queue, [job_id])
        return statistics.median(latencies)
    finally:
        queue.shutdown(timeout=60)


# (c) event listeners


def listeners(root, count):
    """(median, p95, answered, idle RSS, RSS, threads) of count WaitForEvents listeners
    woken by one submit."""
    proc, sock = luxi.start_daemon(os.path.join(root, "events"), workers=0)
    poller = select.epoll()
    conns = []
    try:
        idle_rss, _ = luxi._proc_status(proc.pid)
        with luxi_client.Client(sock) as client:
            last = client.wait_for_events(2 ** 62, None, 0)["last"]
        request = serializer.dumps_bytes({"method": "WaitForEvents",
                                          "args": [last, None, 60]}) + b"\x03"
        conns.extend(luxi.open_waiters(sock, request, count, poller))
        time.sleep(1.0 + count / 5000)  # every request read and waiting
        rss, threads = luxi._proc_status(proc.pid)
        # The submit is sent, not waited for: a client blocked on its own answer would
        # start reading the listeners' answers only after it, and time itself.
        submitter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conns.append(submitter)
        submitter.connect(sock)
        submitter.sendall(serializer.dumps_bytes({"method": "SubmitJob", "args": [
            [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]]}) + b"\x03")
        arrivals = luxi.collect(poller, conns[:count], 60)
        with luxi_client.Client(sock) as client:
            first = client.wait_for_events(last, None, 0)["events"][0]
        latencies = sorted(t - first["time"] for t in arrivals)
        return (statistics.median(latencies), latencies[int(len(latencies) * 0.95) - 1],
                len(arrivals), idle_rss, rss, threads)
    finally:
        for conn in conns:
            conn.close()
        poller.close()
        luxi.stop_daemon(proc)


def run(root, quick=False, results=None):
    rows = []
    jobs = 2000 if quick else 10000
    one = placement_rate(os.path.join(root, "one"), 1, jobs)
    many = placement_rate(os.path.join(root, "many"), 100, jobs)
    rows.append(("(a) %d jobs placed, started, ended: one node (400 slots)" % jobs, one,
                 "jobs/s", None))
    rows.append(("(a) the same over 100 nodes (4 slots each), mixed affinities", many,
                 "jobs/s", many / one))
    samples = 50 if quick else 200
    base = start_latency(os.path.join(root, "lat1"), 0, 0, samples)
    loaded = start_latency(os.path.join(root, "lat100"), 100, jobs, samples)
    rows.append(("(b) start latency, an empty queue, median", base * 1000, "ms", None))
    rows.append(("(b) with %d jobs waiting on 100 busy nodes, median" % jobs, loaded * 1000,
                 "ms", loaded / base))
    count = 1000 if quick else 5000
    median, p95, got, idle, rss, threads = listeners(root, count)
    rows.append(("(c) %d WaitForEvents listeners (%d answered): event -> answer, median" % (
        count, got), median * 1000, "ms", None))
    rows.append(("(c) event -> answer, p95", p95 * 1000, "ms", None))
    rows.append(("(c) daemon RSS with %d listeners" % count, rss / 2 ** 20, "MiB",
                 rss / idle))
    rows.append(("(c) daemon threads with %d listeners" % count, threads, "", None))
    return rows

