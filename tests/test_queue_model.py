"""Model-based test of JobQueue: random operations, reopen from disk, invariants.

Operations: submit (single and many, with dependencies and failing opcodes), cancel,
change priority, run some jobs, archive, auto-archive, drain/undrain, checkpoint, clean
reopen and crash reopen (journal not checkpointed), and disk faults (a failpoint makes the
journal's write or a checkpoint's file write fail with ENOSPC on its Nth call). Invariants
after every step: every job file parses; the serial only grows; archived jobs are
finalized; a finalized job never changes status; a drained queue refuses submits; a
refused change changes nothing; no job exists that was not acknowledged; reopening shows
exactly the acknowledged state.
"""

import errno
import os
import shutil
import tempfile
import time

import hypothesis.strategies as st
from conftest import FakeClock, crash, delay, jqop
from fakes import SyncPool
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jqueue import constants as C
from jqueue import errors, serializer
from jqueue.queue import JobQueue
from jqueue.store import faults

FIELDS = ["id", "status", "opstatus", "opresult", "oplog", "priority", "archived"]


def _opcode(kind):
    if kind == "ok":
        return delay()
    if kind == "log":
        return jqop(log_messages=["m1", "m2"])
    return jqop(fail=True)


class QueueMachine(RuleBasedStateMachine):
    """Drives one queue directory through random operations and restarts."""

    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="jq-model-")
        self.path = os.path.join(self.root, "queue")
        self.clock = FakeClock()
        self.queue = self._open()
        self.ids = []
        self.final = {}
        self.archived = set()
        self.drained = False
        self.serial_seen = 0

    def _open(self):
        return JobQueue(self.path, pool_factory=SyncPool, checkpoint_interval=None,
                        clock=self.clock, retry_interval=0.002)

    def teardown(self):
        faults.clear()
        if not self.queue._closing:
            self.queue.shutdown()
        shutil.rmtree(self.root, ignore_errors=True)

    def _settle(self):
        """Wait until what was appended is written or refused, the disk accepts writes
        again, and nothing is left unrecorded (reads show acknowledged states only)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                self.queue.wait_durable(10)  # first: a write may still be about to fail
            except errors.JobQueueError:
                pass
            status = self.queue.status()
            if status["writes"] == "accepted" and not status["unrecorded_jobs"]:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.002)
        self.queue.wait_durable(10)

    def _rows(self, job_id, fields):
        return self.queue.query_jobs([job_id], fields)

    def _snapshot(self):
        return self.queue.query_jobs(list(self.ids), FIELDS) if self.ids else []

    @staticmethod
    def _after_reopen(rows):
        """What reopening must show: the same rows, waiting jobs back to queued."""
        expected = []
        for row in rows:
            row = list(row)
            if row[1] == C.JOB_STATUS_WAITING:
                row[1] = C.JOB_STATUS_QUEUED
                row[2] = [C.OP_STATUS_QUEUED if s == C.OP_STATUS_WAITING else s
                          for s in row[2]]
            expected.append(row)
        return expected

    # Rules

    @rule(kinds=st.lists(st.sampled_from(["ok", "log", "fail"]), min_size=1, max_size=3),
          priority=st.sampled_from([-10, 0, 10]))
    def submit(self, kinds, priority):
        ops = [dict(_opcode(k), priority=priority) for k in kinds]
        try:
            job_id = self.queue.submit_job(ops)
        except errors.JobQueueDrainError:
            assert self.drained
            return
        except errors.JobQueueError as err:
            assert "changes refused" in str(err)
            self._settle()  # deterministic: the next rule finds the disk writable
            return
        assert not self.drained
        assert job_id > max(self.ids, default=0)
        self.ids.append(job_id)

    @rule(count=st.integers(1, 4), dep=st.sampled_from([None, "success", "any"]))
    def submit_many(self, count, dep):
        jobs = []
        for index in range(count):
            op = delay()
            if dep and index:
                op["depends"] = [[-1, ["success"] if dep == "success" else []]]
            jobs.append([op])
        try:
            results = self.queue.submit_many_jobs(jobs)
        except errors.JobQueueDrainError:
            assert self.drained
            return
        except errors.JobQueueError as err:
            assert "changes refused" in str(err)
            self._settle()  # deterministic: the next rule finds the disk writable
            return
        assert all(ok for ok, _ in results)
        self.ids.extend(job_id for _, job_id in results)

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def cancel(self, data):
        job_id = data.draw(st.sampled_from(self.ids))
        before = self._rows(job_id, FIELDS)
        try:
            ok, message = self.queue.cancel_job(job_id)
        except errors.JobQueueError as err:
            assert "changes refused" in str(err)
            self._settle()  # deterministic: the next rule finds the disk writable
            assert self._rows(job_id, FIELDS) == before
            return
        if job_id in self.final or job_id in self.archived:
            assert not ok
        elif ok:
            status = self.queue.query_jobs([job_id], ["status"])[0][0]
            assert status in ("canceled", "canceling"), message

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), priority=st.integers(-20, 19))
    def change_priority(self, data, priority):
        job_id = data.draw(st.sampled_from(self.ids))
        before = self._rows(job_id, FIELDS)
        try:
            ok, _ = self.queue.change_job_priority(job_id, priority)
        except errors.JobQueueError as err:
            assert "changes refused" in str(err)
            self._settle()  # deterministic: the next rule finds the disk writable
            assert self._rows(job_id, FIELDS) == before
            return
        if job_id in self.final:
            assert not ok

    @rule(count=st.integers(1, 6))
    def run_some(self, count):
        for _ in range(count):
            if not self.queue._pool.run_next():
                break
        self._settle()

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def archive(self, data):
        job_id = data.draw(st.sampled_from(self.ids))
        before = self._rows(job_id, FIELDS)
        try:
            done = self.queue.archive_job(job_id)
        except errors.JobQueueError as err:
            if "durable in the journal" in str(err):  # archived; the file moves later
                self.archived.add(job_id)
                return
            assert "changes refused" in str(err)
            self._settle()  # deterministic: the next rule finds the disk writable
            assert self._rows(job_id, FIELDS) == before
            return
        if done:
            assert job_id in self.final or self._status(job_id) in C.JOBS_FINALIZED
            self.archived.add(job_id)
        elif job_id not in self.archived:
            assert self._status(job_id) not in C.JOBS_FINALIZED

    @rule(age=st.sampled_from([-1, 0, 3600]))
    def auto_archive(self, age):
        self.clock.advance(10)
        before = self._snapshot()
        try:
            archived, left = self.queue.auto_archive_jobs(age, 60)
        except errors.JobQueueError as err:
            if "durable in the journal" in str(err):  # archived; the files move later
                self.archived = self._archived_now()
                return
            assert "changes refused" in str(err)
            self._settle()  # deterministic: the next rule finds the disk writable
            assert self._snapshot() == before
            return
        assert left == 0
        now_archived = self._archived_now()
        assert len(now_archived - self.archived) == archived
        self.archived = now_archived

    def _archived_now(self):
        rows = self.queue.query_jobs(list(self.ids), ["archived"]) if self.ids else []
        return {i for i, row in zip(self.ids, rows) if row and row[0]}

    @rule(flag=st.booleans())
    def drain(self, flag):
        self.queue.set_drain_flag(flag)
        self.drained = flag

    @rule(point=st.sampled_from(["journal.write", "checkpoint.write"]), nth=st.integers(1, 4))
    def disk_fault(self, point, nth):
        faults.inject(point, errno.ENOSPC, nth=nth)

    @rule()
    def checkpoint(self):
        try:
            self.queue.checkpoint()
        except OSError as err:
            assert err.errno == errno.ENOSPC
        except errors.JobQueueError as err:  # its journal rotation was refused
            assert "changes refused" in str(err)
            self._settle()  # deterministic: the next rule finds the disk writable

    @rule()
    def reopen(self):
        self._settle()
        before = self._snapshot()
        try:
            self.queue.shutdown()
        except OSError as err:  # the final checkpoint failed: the journal is kept
            assert err.errno == errno.ENOSPC
        faults.clear()  # the restart finds space again (opening must write)
        self.queue = self._open()
        assert self._snapshot() == self._after_reopen(before)
        assert self.queue.drain_flag == self.drained

    @rule()
    def crash_and_reopen(self):
        self._settle()
        before = self._snapshot()
        crash(self.queue)
        faults.clear()  # the restart finds space again (opening must write)
        self.queue = self._open()
        assert self._snapshot() == self._after_reopen(before)

    # Invariants

    def _status(self, job_id):
        row = self.queue.query_jobs([job_id], ["status"])[0]
        return row[0] if row else None

    @invariant()
    def files_parse_and_serial_grows(self):
        for dirpath, _, names in os.walk(self.path):
            for name in names:
                if name.startswith("job-") and "corrupt" not in dirpath:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        serializer.loads(f.read())
        serial_path = os.path.join(self.path, "serial")
        if os.path.exists(serial_path):
            with open(serial_path) as f:
                serial = int(f.read())
            assert serial >= self.serial_seen
            self.serial_seen = serial

    @invariant()
    def only_acknowledged_jobs_exist(self):
        live = {row[0] for row in self.queue.query_jobs([], ["id"])}
        assert live <= set(self.ids), "unacknowledged jobs %s" % (live - set(self.ids))

    @invariant()
    def finals_are_final_and_archived_jobs_finalized(self):
        if not self.ids:
            return
        rows = self.queue.query_jobs(list(self.ids), ["status", "archived"])
        for job_id, row in zip(self.ids, rows):
            assert row is not None, "job %d lost" % job_id
            status, archived = row
            if job_id in self.final:
                assert status == self.final[job_id]
            elif status in C.JOBS_FINALIZED:
                self.final[job_id] = status
            if archived:
                assert status in C.JOBS_FINALIZED


QueueMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestQueueModel = QueueMachine.TestCase
