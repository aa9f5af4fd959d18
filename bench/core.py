"""Benchmark of the core library (in process), against the raw disk, in one run.

Prints:
  (a) the disk: write+fsync+rename+directory fsync of a 1 KiB file per second (one file
      per change, the ancestor's design), one append+fdatasync per second, and 100
      records per fdatasync (group commit ceiling);
  (b) durable single-job submits per second from 1 and 16 concurrent submitters (jobs
      stay queued: no worker runs them; a fresh queue each, 3 s, no checkpoint in the
      window), and 16 submitters sustained over 12 s with the checkpoints that write
      the job files;
  (c) jobs per second through submit -> success for 10,000 no-op jobs;
  (d) median and p99 latency from a job finalizing to a blocked waiter returning;
  (e) query of id,status for 10,000 and 100,000 jobs;
  (f) time to open a queue of 100,000 job files.
Ratios are to (a) where that applies. Absolute figures drift on shared machines.
"""

import os
import statistics
import threading
import time

from jqueue import constants, opcodes, serializer
from jqueue.queue import JobQueue

NOOP = {"OP_ID": "OP_TEST_DELAY", "duration": 0}


def disk_rates(root, seconds=2.0):
    """(one-file-per-change rate, append+fdatasync rate, batched append records/s)."""
    record = b"x" * 1024
    path = os.path.join(root, "disk")
    os.makedirs(path)
    dirfd = os.open(path, os.O_RDONLY)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tmp = os.path.join(path, "tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        os.write(fd, record)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, os.path.join(path, "job-%d" % (count % 64)))
        os.fsync(dirfd)
        count += 1
    one_file = count / (time.perf_counter() - start)
    fd = os.open(os.path.join(path, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    single = _append_rate(fd, record, 1, seconds / 2)
    batched = _append_rate(fd, record, 100, seconds / 2)
    os.close(fd)
    os.close(dirfd)
    return one_file, single, batched


def _append_rate(fd, record, per_sync, seconds):
    data = record * per_sync
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        os.write(fd, data)
        os.fdatasync(fd)
        count += per_sync
    return count / (time.perf_counter() - start)


def submit_rate(queue, threads, seconds=2.0):
    """Durable single-job submits per second from `threads` concurrent submitters."""
    stop = time.perf_counter() + seconds
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)

    def submitter(index):
        barrier.wait()
        while time.perf_counter() < stop:
            queue.submit_job([NOOP])
            counts[index] += 1

    workers = [threading.Thread(target=submitter, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - start)


def end_to_end(root, jobs=10000, workers=2, submitters=16):
    """Jobs per second from the first submit until every job succeeded."""
    queue = JobQueue(os.path.join(root, "e2e"), workers=workers, max_jobs=jobs * 2)
    done = threading.Event()
    finished = [0]
    lock = threading.Lock()

    def on_done(_result):
        with lock:
            finished[0] += 1
            if finished[0] == jobs:
                done.set()

    def submitter(count):
        for _ in range(count):
            job_id = queue.submit_job([NOOP])
            queue.watch_job(job_id, ["status"], ["success"], None, on_done)

    start = time.perf_counter()
    threads = [threading.Thread(target=submitter, args=(jobs // submitters,))
               for _ in range(submitters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.wait(600)
    elapsed = time.perf_counter() - start
    return jobs / elapsed, queue


class _Stamp(opcodes.OpCode):
    """Records when its run() ends (the moment the job finalizes, from the worker's view)."""

    OP_ID = "OP_BENCH_STAMP"
    ends = {}

    def run(self, ctx):
        self.ends[ctx.job_id] = time.perf_counter()


def waiter_latency(root, samples=300):
    """Median and p99 seconds from a job's opcode ending to a blocked waiter returning."""
    registry = opcodes.Registry()
    opcodes.register_opcodes(registry)
    registry.register(_Stamp)
    queue = JobQueue(os.path.join(root, "wait"), workers=1, registry=registry)
    gate = threading.Event()
    latencies = []
    try:
        for _ in range(samples):
            blocker = queue.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0.002}])
            job_id = queue.submit_job([{"OP_ID": "OP_BENCH_STAMP",
                                        "depends": [[blocker, []]]}])
            gate.clear()
            result = queue.wait_for_job_changes(job_id, ["status"], None, None, 10)
            info = result[0]
            while info[0] not in constants.JOBS_FINALIZED:
                info = queue.wait_for_job_changes(job_id, ["status"], info, None, 10)[0]
            returned = time.perf_counter()
            latencies.append(returned - _Stamp.ends[job_id])
    finally:
        queue.shutdown()
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def query_time(queue, repeat=3):
    """Best time to query id,status of every live job."""
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        rows = queue.query_jobs([], ["id", "status"])
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, len(rows)


def write_job_files(path, count):
    """Create a queue directory holding count finished no-op job files."""
    os.makedirs(path)
    with open(os.path.join(path, "version"), "w") as f:
        f.write("1\n")
    ts = [1800000000, 0]
    template = {"id": 0, "received_timestamp": ts, "start_timestamp": ts, "end_timestamp": ts,
                "ops": [{"input": dict(NOOP, priority=0, depends=None, comment=None),
                         "status": "success", "result": None, "log": [],
                         "start_timestamp": ts, "exec_timestamp": ts, "end_timestamp": ts,
                         "priority": 0}]}
    for job_id in range(1, count + 1):
        template["id"] = job_id
        with open(os.path.join(path, "job-%d" % job_id), "wb") as f:
            f.write(serializer.dumps_bytes(template))
    with open(os.path.join(path, "serial"), "w") as f:
        f.write("%d\n" % count)
    os.sync()


def run(root, quick=False, results=None):
    """Run every core measurement under root; return rows of (label, value, unit, ratio).

    Figures later suites compare with go into results.
    """
    results = results if results is not None else {}
    rows = []
    one_file, single, batched = disk_rates(root, 1.0 if quick else 2.0)
    rows.append(("(a) disk: 1 KiB file write+fsync+rename+dir fsync", one_file, "/s", 1.0))
    rows.append(("    disk: append 1 KiB + fdatasync", single, "/s", single / one_file))
    rows.append(("    disk: append 100 x 1 KiB + one fdatasync (ceiling)", batched,
                 "records/s", batched / one_file))
    # Pure submission: no worker runs the jobs (the socket figures use the same setup), a
    # fresh queue per figure, a window shorter than the checkpoint interval.
    for threads in (1, 16):
        queue = JobQueue(os.path.join(root, "submit%d" % threads), workers=0,
                         max_jobs=10 ** 7)
        rate = submit_rate(queue, threads, 1.0 if quick else 3.0)
        results["submit_%d" % threads] = rate
        rows.append(("(b) durable submits, %d submitter%s" % (threads, "s" * (threads > 1)),
                     rate, "/s", rate / one_file))
        stats = queue.stats()["journal"]
        queue.shutdown()
    rows.append(("    records per journal sync (16 submitters)",
                 stats["records"] / max(1, stats["syncs"]), "", None))
    queue = JobQueue(os.path.join(root, "sustained"), workers=0, max_jobs=10 ** 7)
    rate = submit_rate(queue, 16, 4.0 if quick else 12.0)
    queue.shutdown()
    rows.append(("    sustained, 16 submitters over %ds, checkpoints included" % (
        4 if quick else 12), rate, "/s", rate / one_file))
    jobs = 2000 if quick else 10000
    rate, e2e_queue = end_to_end(root, jobs)
    results["e2e"] = rate
    rows.append(("(c) submit -> success, %d no-op jobs, 2 workers" % jobs, rate, "jobs/s",
                 rate / one_file))
    elapsed, count = query_time(e2e_queue)
    rows.append(("(e) query id,status of %d jobs" % count, elapsed * 1000, "ms", None))
    e2e_queue.shutdown()
    median, p99 = waiter_latency(root, 100 if quick else 300)
    results["wait_median"] = median
    rows.append(("(d) job finalized -> blocked waiter returns, median", median * 1000, "ms",
                 None))
    rows.append(("    job finalized -> blocked waiter returns, p99", p99 * 1000, "ms", None))
    big = 20000 if quick else 100000
    path = os.path.join(root, "big")
    write_job_files(path, big)
    start = time.perf_counter()
    queue = JobQueue(path, workers=2, checkpoint_interval=None, max_jobs=big * 2)
    opened = time.perf_counter() - start
    elapsed, count = query_time(queue)
    rows.append(("(e) query id,status of %d jobs" % count, elapsed * 1000, "ms", None))
    rows.append(("(f) open a queue of %d job files" % big, opened, "s", None))
    queue.shutdown()
    # Left for run.py to remove at the end: on ext4 without a journal, inodes freed in the
    # last minutes slow every file created after them (recently_deleted), and the command
    # suites' figures would pay for these 100,000 files.
    return rows
