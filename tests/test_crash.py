"""Crash test: SIGKILL a process working a queue at random moments, many times.

After each kill the queue is reopened and checked against everything the killed process
had been told: no acknowledged job, state change, log entry, cancel or archival is
missing, no file is torn, and job ids continue without reuse.
"""

import os
import random
import signal
import subprocess
import sys
import time

from fakes import SyncPool

from jqueue import constants as C
from jqueue import serializer
from jqueue.queue import JobQueue
from jqueue.store import queuedir

CHILD = os.path.join(os.path.dirname(__file__), "crash_child.py")
ROUNDS = int(os.environ.get("JQ_CRASH_ROUNDS", "20"))
#: Progress of an opcode: an acknowledged opcode status may only move forward.
RANK = {"queued": 0, "waiting": 0, "running": 1, "canceling": 1, "canceled": 2, "success": 2,
        "error": 2}


def _run_child(path, seed, lifetime):
    proc = subprocess.Popen([sys.executable, CHILD, path, str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    opened = proc.stdout.readline()
    assert opened.startswith(b"OPEN"), proc.stderr.read().decode()
    time.sleep(lifetime)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    lines = out.decode().split("\n")
    return [line.split() for line in lines[:-1]], err.decode()


def _check_files_parse(path):
    for dirpath, _, names in os.walk(path):
        for name in names:
            if name.startswith("job-") and not name.endswith(".tmp"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    serializer.loads(f.read())


def _check_acknowledged(queue, events):
    # Any event names a job whose submission was acknowledged (a query may print first).
    submitted = sorted({int(e[1]) for e in events if e[0] in "SQAC"})
    fields = ["status", "opstatus", "oplog", "archived"]
    rows = dict(zip(submitted, queue.query_jobs(submitted, fields)))
    for job_id, row in rows.items():
        assert row is not None, "acknowledged job %d lost" % job_id
    for event in events:
        job_id = int(event[1]) if len(event) > 1 else None
        status, opstatus, oplog, archived = rows.get(job_id) or (None,) * 4
        if event[0] == "Q":
            seen, logs = event[2].split(","), int(event[3])
            assert sum(len(log) for log in oplog) >= logs, "job %d lost log" % job_id
            for before, now in zip(seen, opstatus):
                if before in C.OPS_FINALIZED:
                    assert now == before, "job %d: %s became %s" % (job_id, seen, opstatus)
                else:
                    assert RANK[now] >= RANK[before], "job %d: %s went back to %s" % (
                        job_id, seen, opstatus)
        elif event[0] == "A":
            assert archived, "archived job %d is live again" % job_id
        elif event[0] == "C":
            assert status in C.JOBS_FINALIZED, "canceled job %d is %s" % (job_id, status)
    return max(submitted, default=0)


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """Repeated SIGKILLs never lose an acknowledged job, change, log entry or archival."""
    path = str(tmp_path / "queue")
    rng = random.Random(1234)
    total_acks = spares_seen = 0
    for round_no in range(ROUNDS):
        events, err = _run_child(path, round_no * 100, rng.uniform(0.05, 0.4))
        assert "Traceback" not in err, err
        _check_files_parse(path)
        spares_seen += len(_spares(path))
        queue = JobQueue(path, pool_factory=SyncPool, checkpoint_interval=None)
        try:
            # A spare linked but not yet renamed when the kill came is removed, not used.
            assert all(os.stat(p).st_nlink == 1 for p in _spares(path))
            assert not queue.recovery.set_aside, queue.recovery.set_aside
            assert not any(r.damaged for r in queue.recovery.journal_reports)
            assert not queue.recovery.replay_problems, queue.recovery.replay_problems
            highest = _check_acknowledged(queue, events)
            assert queue.recovery.max_id >= highest
            assert queue.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}]) > highest
            queue.auto_archive_jobs(-1, 60)
        finally:
            queue.shutdown()
        total_acks += len(events)
    assert total_acks > ROUNDS * 20
    assert spares_seen > 0  # rewrites went through replaced files (queuedir.write_job)


def _spares(path):
    spares = os.path.join(path, queuedir.SPARES_DIR)
    return [os.path.join(spares, name) for name in os.listdir(spares)]
