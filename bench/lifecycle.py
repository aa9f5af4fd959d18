"""Benchmark of a job's whole life: retention over a big queue, and scheduled jobs.

Prints (a) durable submits per second (16 submitter threads) into a queue that holds
100,000 finished jobs, nothing else running: the idle rate, in steady state (measured
after the submitters ran for a while, so that the checkpointer writes their jobs' files
as it does under any lasting load; a first burst into an empty journal is faster than
any lasting rate); (b) retention archiving those
100,000 jobs in passes of at most 10,000 (journal records, then the checkpoint that moves
their files), in jobs per second, and the submit rate measured meanwhile, as a ratio to
(a) (target: at least 0.8); (c) the same for purging the 100,000 archived jobs (a journal
record per 1,000, then their files and the emptied directories removed), with the bytes
freed, and as a control the submit rate afterwards with retention idle (the queue then
holds every job submitted meanwhile); (d) a real jq-masterd's threads and RSS with 10,000
jobs scheduled an hour ahead, against the same daemon with none (a start time costs a
heap entry, not a thread).
"""

import os
import sys
import threading
import time

import core
import luxi

from jqueue.job import ts_to_float
from jqueue.luxi import client as luxi_client
from jqueue.queue import JobQueue
from jqueue.retention import Policy

HOUR, DAY = 3600.0, 86400.0


class Clock:
    """A clock the benchmark sets: the queue's ages are measured by it."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def du(path):
    total = 0
    for directory, _, files in os.walk(path):
        total += os.lstat(directory).st_blocks * 512
        for name in files:
            total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


class Submitters:
    """Threads submitting no-op jobs until stopped; their rate over the time they ran."""

    def __init__(self, queue, threads=16):
        self._queue = queue
        self._stop = threading.Event()
        self._counts = [0] * threads
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]
        self._start = time.perf_counter()
        for thread in self._threads:
            thread.start()

    def _run(self, index):
        while not self._stop.is_set():
            self._queue.submit_job([core.NOOP])
            self._counts[index] += 1

    def rate_over(self, seconds):
        """Submits per second over the next seconds (the submitters go on)."""
        first, start = sum(self._counts), time.perf_counter()
        time.sleep(seconds)
        return (sum(self._counts) - first) / (time.perf_counter() - start)

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return sum(self._counts) / (time.perf_counter() - self._start)


def retention_figures(root, count, quick):
    """(idle rate, archive jobs/s, submits during archival, purge jobs/s, submits during
    purge, bytes freed)."""
    path = os.path.join(root, "big")
    core.write_job_files(path, count)
    ended = ts_to_float([1800000000, 0])
    clock = Clock(ended + HOUR)
    queue = JobQueue(path, workers=0, max_jobs=10 ** 7, clock=clock,
                     retention=Policy(archive_after=6 * HOUR, keep_archived=21 * DAY))
    try:
        window, warm_up = (2.0, 4.0) if quick else (5.0, 10.0)
        load = Submitters(queue)
        time.sleep(warm_up)
        idle = load.rate_over(window)
        load.stop()
        clock.now = ended + 7 * HOUR
        load = Submitters(queue)
        start = time.perf_counter()
        archived = 0
        while archived < count:
            archived += queue.retention_pass()["archived"]
        queue.checkpoint()  # the files move to archive/
        archive_rate = archived / (time.perf_counter() - start)
        during_archive = load.stop()
        archive = os.path.join(path, "archive")  # the submits meanwhile add live files
        before = du(archive)
        clock.now = time.time() + 22 * DAY
        load = Submitters(queue)
        start = time.perf_counter()
        purged = freed = 0
        while purged < count:
            report = queue.retention_pass()
            purged, freed = purged + report["purged"], freed + report["bytes_freed"]
        purge_rate = purged / (time.perf_counter() - start)
        during_purge = load.stop()
        queue.checkpoint()
        dropped = before - du(archive)
        load = Submitters(queue)  # the control: the same queue, retention idle
        time.sleep(warm_up)
        after = load.rate_over(window)
        load.stop()
        return (idle, archive_rate, during_archive, purge_rate, during_purge, freed,
                dropped, after)
    finally:
        queue.shutdown()


def daemon_footprint(proc):
    """(threads, RSS in MiB) of a daemon process."""
    with open("/proc/%d/status" % proc.pid, encoding="ascii") as stream:
        status = dict(line.split(":", 1) for line in stream if ":" in line)
    return int(status["Threads"]), int(status["VmRSS"].split()[0]) / 1024.0


def scheduled_figures(root, count):
    """((threads, RSS) idle, (threads, RSS) with count jobs scheduled an hour ahead)."""
    proc, sock = luxi.start_daemon(os.path.join(root, "scheduled"), workers=4)
    try:
        with luxi_client.Client(sock, timeout=120) as client:
            client.submit_job([core.NOOP])  # warm: one job through every path
            time.sleep(1.0)
            idle = daemon_footprint(proc)
            for _ in range(0, count, 1000):
                client.submit_many_jobs([[core.NOOP]] * 1000,
                                        options=[{"start_in": HOUR}] * 1000)
            time.sleep(1.0)
            loaded = daemon_footprint(proc)
            queued = sum(1 for row in client.query_jobs([], ["status"]) if row[0] == "queued")
            assert queued == count, queued
    finally:
        luxi.stop_daemon(proc)
    return idle, loaded


def run(root, quick=False, results=None):
    """Rows of (label, value, unit, ratio) for the lifecycle measurements."""
    count = 20000 if quick else 100000
    rows = []
    idle, archive_rate, during_archive, purge_rate, during_purge, freed, du_drop, after = \
        retention_figures(root, count, quick)
    rows.append(("(a) durable submits, 16 submitters, %d finished jobs held, steady" % count,
                 idle, "/s", 1.0))
    rows.append(("(b) retention: archive %d jobs (passes + checkpoint)" % count,
                 archive_rate, "jobs/s", None))
    rows.append(("    durable submits meanwhile", during_archive, "/s", during_archive / idle))
    rows.append(("(c) retention: purge %d archived jobs (files, dirs)" % count, purge_rate,
                 "jobs/s", None))
    rows.append(("    durable submits meanwhile", during_purge, "/s", during_purge / idle))
    rows.append(("    bytes freed (reported / du drop of archive/)", freed / 2 ** 20, "MiB",
                 freed / du_drop if du_drop else None))
    rows.append(("    control: durable submits afterwards, retention idle", after, "/s",
                 after / idle))
    scheduled = 2000 if quick else 10000
    (threads0, rss0), (threads1, rss1) = scheduled_figures(root, scheduled)
    rows.append(("(d) jq-masterd threads, idle", threads0, "", 1.0))
    rows.append(("    jq-masterd threads, %d jobs scheduled an hour ahead" % scheduled,
                 threads1, "", threads1 / threads0))
    rows.append(("    jq-masterd RSS, idle", rss0, "MiB", 1.0))
    rows.append(("    jq-masterd RSS, %d jobs scheduled" % scheduled, rss1, "MiB",
                 rss1 / rss0))
    rows.append(("    RSS per scheduled job", (rss1 - rss0) * 1024 / scheduled, "KiB", None))
    return rows


if __name__ == "__main__":
    sys.exit("run it with bench/run.py --only lifecycle")
