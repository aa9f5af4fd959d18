"""Tests of jqueue.queue.JobQueue: the library API over a real queue directory."""

import gc
import os
import shutil
import threading
import time

import pytest
from conftest import crash, delay, jqop, registry_of, run_jobs

from jqueue import constants as C
from jqueue import errors, opcodes, serializer
from jqueue.queue import JobQueue
from jqueue.store import faults, queuedir


def _status(queue, job_id):
    """The job's status once every change made so far is durable (reads show no other)."""
    queue.wait_durable(10)
    return queue.query_jobs([job_id], ["status"])[0][0]


# Submission


def test_submit_returns_increasing_ids_and_runs_jobs(open_queue):
    """Submitted jobs get increasing ids and run to success."""
    queue = open_queue()
    first = queue.submit_job([delay()])
    second = queue.submit_job([jqop(result={"answer": 42})])
    assert second == first + 1
    run_jobs(queue)
    rows = queue.query_jobs([first, second], ["id", "status", "opresult", "summary"])
    assert rows == [[first, "success", [None], ["TEST_DELAY(0)"]],
                    [second, "success", [{"answer": 42}], ["TEST_JQUEUE"]]]


def test_submitted_job_is_on_disk_before_the_call_returns(open_queue, tmp_path):
    """Once submit returns, the job's record is in the journal on disk."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    data = (tmp_path / "queue" / "journal").read_bytes()
    assert b'"id":%d' % job_id in data


def test_invalid_opcode_is_refused_before_an_id_is_allocated(open_queue):
    """A bad opcode raises OpPrereqError and burns no job id."""
    queue = open_queue()
    with pytest.raises(errors.OpPrereqError, match="duration"):
        queue.submit_job([delay(-1)])
    with pytest.raises(errors.OpPrereqError, match="job 1: .*OP_NOPE"):
        queue.submit_many_jobs([[delay()], [{"OP_ID": "OP_NOPE"}]])
    with pytest.raises(errors.OpPrereqError, match="non-empty list"):
        queue.submit_job([])
    assert queue.submit_job([delay()]) == 1


def test_submit_many_resolves_relative_dependencies(open_queue):
    """-1 in SubmitManyJobs means the job submitted just before in the request."""
    queue = open_queue()
    results = queue.submit_many_jobs([[delay()], [delay(depends=[[-1, ["success"]]])],
                                      [delay(depends=[[-2, []], [-1, ["success"]]])]])
    assert results == [(True, 1), (True, 2), (True, 3)]
    ops = queue.query_jobs([3], ["ops"])[0][0]
    assert ops[0]["depends"] == [[1, []], [2, ["success"]]]


def test_self_future_and_dangling_relative_dependencies_are_refused(open_queue):
    """A job may depend only on earlier jobs; the others are refused per job."""
    queue = open_queue()
    results = queue.submit_many_jobs([[delay(depends=[[-1, []]])], [delay()],
                                      [delay(depends=[[2, []]])], [delay(depends=[[9, []]])]])
    assert results[0][0] is False and "before the first job" in results[0][1]
    assert results[1] == (True, 1)
    assert results[2][0] is False and "itself or on a later job (2)" in results[2][1]
    assert results[3][0] is False and "itself or on a later job (9)" in results[3][1]
    with pytest.raises(errors.OpPrereqError, match="itself"):
        queue.submit_job([delay(depends=[[2, []]])])
    assert queue.submit_job([delay(depends=[[1, []]])]) == 2


def test_dependent_on_failed_submission_is_refused(open_queue):
    """A relative dependency on a job refused in the same request refuses the dependent."""
    queue = open_queue()
    results = queue.submit_many_jobs([[delay(depends=[[5, []]])],
                                      [delay(depends=[[-1, []]])]])
    assert [ok for ok, _ in results] == [False, False]
    assert "was not submitted" in results[1][1]


def test_dependency_released_when_it_finalizes(open_queue):
    """A dependent waits while its dependency runs and runs once it succeeds."""
    queue = open_queue()
    (_, first), (_, second) = queue.submit_many_jobs(
        [[delay()], [delay(depends=[[-1, ["success"]]])]])
    queue._pool.run_next()  # first job's task is first
    assert _status(queue, first) == "success"
    run_jobs(queue)
    assert _status(queue, second) == "success"


def test_dependent_waits_without_polling(open_queue):
    """A job waiting for a dependency leaves the pool; the dependency's end requeues it."""
    queue = open_queue()
    first = queue.submit_job([jqop()])
    second = queue.submit_job([delay(depends=[[first, ["success"]]])])
    queue._pool.pause()
    queue._pool.resume()
    # Run the dependent first: it must park itself in "waiting".
    queue.change_job_priority(second, -20)
    queue._pool.run_next()
    assert _status(queue, second) == "waiting"
    assert not queue._pool.has_waiting_task(second)
    run_jobs(queue)
    assert _status(queue, second) == "success"


def test_wrong_dependency_status_fails_the_job_clearly(open_queue):
    """A dependency that ends in a status not asked for fails the dependent with a message."""
    queue = open_queue()
    first = queue.submit_job([jqop(fail=True)])
    second = queue.submit_job([delay(depends=[[first, ["success"]]]), delay()])
    run_jobs(queue)
    status, results = queue.query_jobs([second], ["status", "opresult"])[0]
    assert status == "error"
    assert results[0] == ["OpExecError", [
        "dependency job %d finalized with status 'error', not one of success" % first]]
    assert results[1] == ["OpExecError", [C.MSG_PRECEDING_FAILED]]


def test_unknown_dependency_fails_the_job_clearly(open_queue):
    """A dependency on an id that exists nowhere fails the job naming that id."""
    queue = open_queue()
    queue.submit_job([delay()])
    queue.archive_job(1)  # not finalized: refused, stays live
    run_jobs(queue)
    queue.archive_job(1)
    (tmp_job,) = [queue.submit_job([delay()])]
    run_jobs(queue)
    # Job 1 is archived (found by id), job 3 will depend on a never-created id 0.
    third = queue.submit_job([delay(depends=[[0, []], [1, ["success"]]])])
    run_jobs(queue)
    assert queue.query_jobs([third], ["opresult"])[0][0][0] == [
        "OpExecError", ["dependency job 0 not found"]]
    fourth = queue.submit_job([delay(depends=[[1, ["success"]], [tmp_job, []]])])
    run_jobs(queue)
    assert _status(queue, fourth) == "success"


# Cancel, priority


def test_cancel_queued_job_is_immediate(open_queue):
    """A queued job is canceled at once and never runs."""
    queue = open_queue()
    job_id = queue.submit_job([delay(), delay()])
    assert queue.cancel_job(job_id) == (True, "Job %d canceled" % job_id)
    run_jobs(queue)
    assert queue.query_jobs([job_id], ["status", "opstatus", "opresult"])[0] == [
        "canceled", ["canceled", "canceled"], [C.MSG_CANCELED] * 2]


def test_cancel_waiting_job_is_immediate(open_queue):
    """A job waiting for a dependency is canceled at once."""
    queue = open_queue()
    first = queue.submit_job([delay()])
    second = queue.submit_job([delay(depends=[[first, []]])])
    queue.change_job_priority(second, -20)
    queue._pool.run_next()
    assert _status(queue, second) == "waiting"
    assert queue.cancel_job(second)[0] is True
    run_jobs(queue)
    assert _status(queue, second) == "canceled"


def test_cancel_finished_or_unknown_job_says_why(open_queue):
    """Canceling a finished or unknown job fails with a message naming it."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    run_jobs(queue)
    assert queue.cancel_job(job_id) == (False, "Job 1 is already finished (success)")
    assert queue.cancel_job(99) == (False, "Job 99 not found")
    with pytest.raises(errors.ParameterError):
        queue.cancel_job("../1")


class _Gate:
    """Opcode code that blocks on an event without a cancellation point, then checks."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def run(self, ctx):
        self.entered.set()
        self.release.wait(10)
        ctx.check_cancel()
        return "passed the gate"


def _gated_registry(gate):
    registry = opcodes.Registry()
    opcodes.register_opcodes(registry)

    class OpGate(opcodes.OpCode):
        OP_ID = "OP_GATE"

        def run(self, ctx):
            return gate.run(ctx)

    registry.register(OpGate)
    return registry


def test_cancel_running_job_stops_at_next_cancellation_point(tmp_path):
    """A running opcode is marked canceling and ends canceled at its cancellation point."""
    gate = _Gate()
    queue = JobQueue(str(tmp_path / "q"), workers=2, checkpoint_interval=None,
                     registry=_gated_registry(gate))
    try:
        job_id = queue.submit_job([{"OP_ID": "OP_GATE"}, delay()])
        assert gate.entered.wait(10)
        ok, message = queue.cancel_job(job_id)
        assert ok and "next cancellation point" in message
        assert queue.query_jobs([job_id], ["status", "opstatus"])[0] == [
            "canceling", ["canceling", "canceling"]]
        assert queue.cancel_job(job_id) == (True, "Job %d is already being canceled" % job_id)
        gate.release.set()
        info = ["canceling"]
        while info[0] not in C.JOBS_FINALIZED:
            info, _ = queue.wait_for_job_changes(job_id, ["status"], info, None, 10)
        assert queue.query_jobs([job_id], ["status", "opstatus", "opresult"])[0] == [
            "canceled", ["canceled", "canceled"], [C.MSG_CANCELED] * 2]
    finally:
        gate.release.set()
        queue.shutdown()


@pytest.mark.parametrize("duration", [3600, 2 ** 70, 1e300])
def test_cancel_wakes_a_sleeping_opcode_at_once(tmp_path, duration):
    """An opcode sleeping in ctx.sleep is woken by the cancel, not by its timer; a sleep
    longer than the platform's longest wait (any finite duration is valid) sleeps too."""
    queue = JobQueue(str(tmp_path / "q"), workers=1, checkpoint_interval=None)
    try:
        job_id = queue.submit_job([delay(duration)])
        assert queue.wait_for_job_changes(job_id, ["status"], ["queued"], None, 10)[0] == [
            "running"]
        assert queue.cancel_job(job_id)[0] is True
        info = queue.wait_for_job_changes(job_id, ["status"], ["running"], None, 10)[0]
        while info[0] not in C.JOBS_FINALIZED:
            info = queue.wait_for_job_changes(job_id, ["status"], info, None, 10)[0]
        assert info == ["canceled"]
    finally:
        queue.shutdown()


def test_change_priority_reorders_waiting_jobs(open_queue):
    """Raising a waiting job's priority makes it run before earlier jobs."""
    queue = open_queue()
    ids = [queue.submit_job([delay()]) for _ in range(3)]
    assert queue.change_job_priority(ids[2], -10)[0] is True
    queue._pool.run_next()
    assert [_status(queue, i) for i in ids] == ["queued", "queued", "success"]
    assert queue.query_jobs([ids[2]], ["priority", "oppriority"])[0] == [0, [-10]]
    assert queue.query_jobs([ids[0]], ["priority"])[0] == [0]


def test_change_priority_refusals(open_queue):
    """Finished and unknown jobs keep their priority; bad priorities are refused."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    with pytest.raises(errors.OpPrereqError, match="priority"):
        queue.change_job_priority(job_id, 20)
    run_jobs(queue)
    assert queue.change_job_priority(job_id, 5) == (False, "Job 1 is already finished (success)")
    assert queue.change_job_priority(7, 5) == (False, "Job 7 not found")


# Drain, size limit


def test_drain_flag_refuses_submits_and_survives_reopen(open_queue, tmp_path):
    """A drained queue refuses jobs (but not to the drained-queue call) across restarts."""
    queue = open_queue()
    queue.set_drain_flag(True)
    with pytest.raises(errors.JobQueueDrainError):
        queue.submit_job([delay()])
    with pytest.raises(errors.JobQueueDrainError):
        queue.submit_many_jobs([[delay()]])
    assert queue.submit_job_to_drained_queue([delay()]) == 1
    queue.shutdown()
    reopened = open_queue()
    assert reopened.drain_flag is True
    reopened.set_drain_flag(False)
    assert reopened.submit_job([delay()]) == 2


def test_queue_size_limit(open_queue):
    """Beyond max_jobs live jobs, submits fail with JobQueueFull until jobs are archived."""
    queue = open_queue(max_jobs=2)
    queue.submit_job([delay()])
    with pytest.raises(errors.JobQueueFull, match="limit 2"):
        queue.submit_many_jobs([[delay()], [delay()]])
    queue.submit_job([delay()])
    with pytest.raises(errors.JobQueueFull):
        queue.submit_job([delay()])
    run_jobs(queue)
    assert queue.archive_job(1) is True
    assert queue.submit_job([delay()]) == 3


# Archive


def test_archive_only_finalized_jobs(open_queue):
    """Archiving refuses unfinished jobs and moves finished ones out of the live list."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    assert queue.archive_job(job_id) is False
    run_jobs(queue)
    assert queue.archive_job(job_id) is True
    assert queue.archive_job(job_id) is False
    assert queue.query_jobs([], ["id"]) == []
    assert queue.query_jobs([job_id], ["id", "archived", "status"]) == [
        [job_id, True, "success"]]


def test_waiting_for_an_archived_job_is_job_lost_while_query_finds_it(open_queue):
    """WaitForJobChange watches live jobs only (Ganeti 3.0): an archived job is JobLost,
    before and after a checkpoint, and QueryJobs by id still answers it."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    run_jobs(queue)
    assert queue.archive_job(job_id) is True
    for _ in range(2):
        with pytest.raises(errors.JobLost):
            queue.wait_for_job_changes(job_id, ["status"], None, None, 0)
        assert queue.query_jobs([job_id], ["status", "archived"]) == [["success", True]]
        queue.checkpoint()


def test_an_archival_shows_only_once_it_is_durable(open_queue, monkeypatch):
    """While an archive record waits for the disk, QueryJobs still shows the job live
    (acknowledged means durable: a crash then would bring it back live); once the
    record is durable, archived."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    run_jobs(queue)
    gate, held = threading.Event(), threading.Event()
    real_check = faults.check

    def slow_sync(point):
        if point == "journal.sync" and not gate.is_set():
            held.set()
            gate.wait(10)
        return real_check(point)

    monkeypatch.setattr(faults, "check", slow_sync)
    archiver = threading.Thread(target=queue.archive_job, args=(job_id,))
    archiver.start()
    assert held.wait(10)
    assert queue.query_jobs([job_id], ["status", "archived"]) == [["success", False]]
    gate.set()
    archiver.join(10)
    assert queue.query_jobs([job_id], ["status", "archived"]) == [["success", True]]


def test_archived_file_lands_in_archive_directory(open_queue, tmp_path):
    """After a checkpoint the archived job lives in archive/<id // 10000>/ only."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    run_jobs(queue)
    queue.archive_job(job_id)
    queue.checkpoint()
    root = tmp_path / "queue"
    assert not (root / "job-1").exists()
    data = serializer.loads((root / "archive" / "0" / "job-1").read_bytes())
    assert data["ops"][0]["status"] == "success"
    assert queue.query_jobs([job_id], ["archived"]) == [[True]]


def test_archival_is_on_disk_when_answered(open_queue, tmp_path):
    """ArchiveJob and AutoArchiveJobs answer once the files are in archive/ (no
    checkpoint needed), with the job's current state, the live files gone."""
    queue = open_queue()
    ids = [queue.submit_job([delay()]) for _ in range(3)]
    run_jobs(queue)
    root = tmp_path / "queue"
    assert queue.archive_job(ids[0]) is True
    assert not (root / ("job-%d" % ids[0])).exists()
    data = serializer.loads((root / "archive" / "0" / ("job-%d" % ids[0])).read_bytes())
    assert data["ops"][0]["status"] == "success"
    assert queue.auto_archive_jobs(-1, 60) == (2, 0)
    for job_id in ids[1:]:
        assert not (root / ("job-%d" % job_id)).exists()
        assert (root / "archive" / "0" / ("job-%d" % job_id)).exists()
    assert queue.query_jobs(ids, ["archived"]) == [[True]] * 3


def test_status_tells_the_age_and_lag_of_the_job_files(open_queue, clock):
    """status(): seconds since the job files caught up, and how many jobs are behind."""
    queue = open_queue()
    clock.advance(1)
    queue.checkpoint()
    assert queue.status()["view_age"] == 0 and queue.status()["view_lag"] == 0
    queue.submit_job([delay()])
    queue.submit_job([delay()])
    clock.advance(7)
    assert queue.status()["view_age"] == 7 and queue.status()["view_lag"] == 2
    queue.checkpoint()
    assert queue.status()["view_age"] == 0 and queue.status()["view_lag"] == 0


def test_auto_archive_by_age_counts_exactly(open_queue, clock):
    """Auto-archive archives finished jobs older than the age and reports counts."""
    queue = open_queue()
    old = [queue.submit_job([delay()]) for _ in range(3)]
    run_jobs(queue)
    clock.advance(3600)
    new = queue.submit_job([delay()])
    run_jobs(queue)
    pending = queue.submit_job([delay()])
    assert queue.auto_archive_jobs(1800, 60) == (3, 0)
    assert [row[0] for row in queue.query_jobs([], ["id"])] == [new, pending]
    assert queue.auto_archive_jobs(-1, 60) == (1, 0)
    assert queue.query_jobs(old, ["archived"]) == [[True]] * 3


def test_auto_archive_reports_unchecked_jobs_on_timeout(open_queue, clock):
    """When the timeout runs out, auto-archive says how many jobs it did not check."""
    queue = open_queue()
    for _ in range(2500):
        queue.submit_job([delay()])
    run_jobs(queue)
    original = clock.now

    def slow_clock():
        slow_clock.calls += 1
        return original + slow_clock.calls * 10

    slow_clock.calls = 0
    queue._clock = slow_clock
    archived, left = queue.auto_archive_jobs(-1, 5)
    assert archived == 1000 and left == 1500
    assert len(queue.query_jobs([], ["id"])) == 1500


# Queries and waiting


def test_query_unknown_field_and_unknown_job(open_queue):
    """Unknown fields raise OpPrereqError; unknown ids give None rows."""
    queue = open_queue()
    queue.submit_job([delay()])
    with pytest.raises(errors.OpPrereqError, match="bogus"):
        queue.query_jobs([1], ["id", "bogus"])
    assert queue.query_jobs([1, 5], ["id"]) == [[1], None]
    assert queue.query_jobs(["1"], ["id"]) == [[1]]


def test_query_all_fields(open_queue):
    """Every field of the table answers for a finished job."""
    queue = open_queue()
    job_id = queue.submit_job([jqop(log_messages=["hi"])])
    run_jobs(queue)
    row = queue.query_jobs([job_id], list(C.JOB_FIELDS))[0]
    values = dict(zip(C.JOB_FIELDS, row))
    assert values["status"] == "success" and values["archived"] is False
    assert values["oplog"][0][0][2:] == ["message", "hi"]
    assert all(values[f] is not None for f in ("received_ts", "start_ts", "end_ts"))
    assert values["opstatus"] == ["success"] and values["summary"] == ["TEST_JQUEUE"]


def test_wait_returns_at_once_for_finalized_job(open_queue):
    """WaitForJobChanges on a finalized job answers at once even if nothing changed."""
    queue = open_queue()
    job_id = queue.submit_job([jqop(log_messages=["a", "b"])])
    run_jobs(queue)
    info, log = queue.wait_for_job_changes(job_id, ["status"], ["success"], None, 30)
    assert info == ["success"] and [e[3] for e in log] == ["a", "b"]
    info, log = queue.wait_for_job_changes(job_id, ["status"], ["success"], 2, 30)
    assert log == []


def test_wait_times_out_with_nochange(open_queue):
    """With nothing changing, WaitForJobChanges returns JOB_NOTCHANGED after the timeout."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    result = queue.wait_for_job_changes(job_id, ["status"], ["queued"], None, 0.05)
    assert result == C.JOB_NOTCHANGED
    assert queue.stats()["waiters"] == 0


def test_wait_on_unknown_job_is_job_lost(open_queue):
    """Waiting for a job that does not exist raises JobLost."""
    queue = open_queue()
    with pytest.raises(errors.JobLost):
        queue.wait_for_job_changes(3, ["status"], None, None, 1)


def test_waiter_woken_by_change_from_another_thread(open_queue):
    """A blocked waiter returns as soon as the job changes."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    answer = []
    waiter = threading.Thread(target=lambda: answer.append(queue.wait_for_job_changes(
        job_id, ["status"], ["queued"], None, 30)))
    waiter.start()
    while queue.stats()["waiters"] == 0:
        threading.Event().wait(0.001)
    run_jobs(queue)
    waiter.join(10)
    assert answer and answer[0][0] in (["running"], ["success"])


def test_watch_callbacks_cost_no_thread(open_queue):
    """Thousands of watch callbacks add no threads and all fire on the change."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    fired = []
    threads_before = threading.active_count()
    handles = [queue.watch_job(job_id, ["status"], ["queued"], None, fired.append)
               for _ in range(2000)]
    assert all(h is not None for h in handles)
    assert threading.active_count() == threads_before
    run_jobs(queue)
    assert len(fired) == 2000
    handles[0].cancel()


def test_waiters_are_told_with_the_cyclic_collector_paused(open_queue):
    """The thousands of answers a change releases are collected and handed over with the
    cyclic collector paused (a pass in the middle would delay every answer after it); it
    runs again afterwards."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    enabled = []
    for _ in range(100):
        queue.watch_job(job_id, ["status"], ["queued"], None,
                        lambda answer: enabled.append(gc.isenabled()))
    run_jobs(queue)
    queue.wait_durable(5)
    assert enabled and not any(enabled)
    assert gc.isenabled()


def test_log_messages_reach_waiters_in_order(open_queue):
    """Waiters see new log entries by serial."""
    queue = open_queue()
    job_id = queue.submit_job([jqop(log_messages=["one", "two", "three"])])
    run_jobs(queue)
    _, log = queue.wait_for_job_changes(job_id, ["status"], None, 1, 5)
    assert [entry[0] for entry in log] == [2, 3]
    assert [entry[3] for entry in log] == ["two", "three"]


def test_failing_opcode_fails_the_rest(open_queue):
    """When an opcode fails, the following ones end in error "Preceding opcode failed"."""
    queue = open_queue()
    job_id = queue.submit_job([jqop(), jqop(fail=True, fail_message="boom"), jqop()])
    run_jobs(queue)
    assert queue.query_jobs([job_id], ["status", "opstatus", "opresult"])[0] == [
        "error", ["success", "error", "error"],
        [True, ["OpExecError", ["boom"]], ["OpExecError", [C.MSG_PRECEDING_FAILED]]]]


def test_opcode_bug_fails_only_that_job(open_queue, monkeypatch):
    """An opcode raising an unexpected exception or returning non-JSON data (a set, a cycle)
    fails its job."""
    queue = open_queue()
    op_class = queue.registry.get("OP_TEST_JQUEUE")
    first = queue.submit_job([jqop()])
    monkeypatch.setattr(op_class, "run", lambda self, ctx: {1, 2})
    run_jobs(queue)
    second = queue.submit_job([jqop()])
    monkeypatch.setattr(op_class, "run", lambda self, ctx: 1 / 0)
    run_jobs(queue)
    cyclic = []
    cyclic.append(cyclic)
    monkeypatch.setattr(op_class, "run", lambda self, ctx: {"me": cyclic})
    fourth = queue.submit_job([jqop()])
    run_jobs(queue)
    monkeypatch.undo()
    third = queue.submit_job([jqop()])
    run_jobs(queue)
    rows = queue.query_jobs([first, second, third, fourth], ["status", "opresult"])
    assert rows[0][0] == "error" and "not JSON data" in rows[0][1][0][1][0]
    assert rows[1] == ["error", [["OpExecError", ["ZeroDivisionError: division by zero"]]]]
    assert rows[2] == ["success", [True]]
    assert rows[3][0] == "error" and "not JSON data" in rows[3][1][0][1][0]


# Opening, recovery


def test_second_queue_on_same_directory_fails_at_once(open_queue, tmp_path):
    """Opening a queue already open fails with the holder's PID."""
    open_queue()
    with pytest.raises(errors.JobQueueError, match="locked by PID %d" % os.getpid()):
        JobQueue(str(tmp_path / "queue"), checkpoint_interval=None)


def _write_job(root, job_id, *statuses):
    ops = [{"input": {"OP_ID": "OP_TEST_DELAY", "duration": 0, "priority": 0},
            "status": status, "result": None, "log": [], "start_timestamp": None,
            "exec_timestamp": None, "end_timestamp": None, "priority": 0}
           for status in statuses]
    root.mkdir(exist_ok=True)
    (root / "version").write_text("1\n")
    (root / ("job-%d" % job_id)).write_text(serializer.dumps(
        {"id": job_id, "ops": ops, "received_timestamp": [1, 0], "start_timestamp": None,
         "end_timestamp": None}))


def test_crash_recovery_rules(open_queue, tmp_path):
    """On open: queued resumes, waiting requeues, running/canceling end in error."""
    root = tmp_path / "queue"
    _write_job(root, 1, "success", "queued")
    _write_job(root, 2, "waiting")
    _write_job(root, 3, "success", "running", "queued")
    _write_job(root, 4, "canceling")
    _write_job(root, 5, "success")
    queue = open_queue()
    assert queue.recovery.restarted == 2 and queue.recovery.failed == 2
    unclean = ["OpExecError", [C.MSG_UNCLEAN_SHUTDOWN]]
    assert queue.query_jobs([3, 4], ["status", "opresult"]) == [
        ["error", [None, unclean, unclean]], ["error", [unclean]]]
    run_jobs(queue)
    assert queue.query_jobs([1, 2, 5], ["status", "opstatus"]) == [
        ["success", ["success", "success"]], ["success", ["success"]],
        ["success", ["success"]]]
    assert serializer.loads((root / "job-3").read_bytes())["ops"][1]["status"] == "error"


def test_corrupt_job_file_is_set_aside_not_fatal(open_queue, tmp_path):
    """An unparseable job file is moved to corrupt/ and reported; the queue opens."""
    root = tmp_path / "queue"
    _write_job(root, 1, "queued")
    (root / "job-2").write_text("{not json")
    (root / "job-3").write_text('{"id": 4, "ops": [{"input": {}}]}')
    queue = open_queue()
    assert [row[0] for row in queue.query_jobs([], ["id"])] == [1]
    assert sorted(os.listdir(root / "corrupt")) == ["job-2", "job-3"]
    assert len(queue.recovery.set_aside) == 2
    assert queue.submit_job([delay()]) == 4


def test_ids_are_never_reused(open_queue, tmp_path):
    """New ids exceed the serial and every id on disk: live, archived, set aside."""
    root = tmp_path / "queue"
    _write_job(root, 5, "success")
    (root / "archive" / "1").mkdir(parents=True)
    (root / "archive" / "1" / "job-10007").write_text("{}")
    (root / "serial").write_text("3\n")
    queue = open_queue()
    assert queue.submit_job([delay()]) == 10008
    queue.shutdown()
    (root / "corrupt").mkdir()
    (root / "corrupt" / "job-20000.1").write_text("x")
    assert open_queue().submit_job([delay()]) == 20001


def test_reopen_sees_every_acknowledged_change(open_queue):
    """After shutdown and reopen, jobs, statuses, logs and archive are as acknowledged."""
    queue = open_queue()
    done = queue.submit_job([jqop(log_messages=["kept"])])
    run_jobs(queue)
    pending = queue.submit_job([delay()])
    queue.cancel_job(queue.submit_job([delay()]))
    queue.archive_job(done)
    fields = ["id", "status", "oplog", "archived"]
    before = queue.query_jobs([done, pending, pending + 1], fields)
    queue.shutdown()
    reopened = open_queue()
    assert reopened.query_jobs([done, pending, pending + 1], fields) == before


def test_reopen_replays_journal_without_checkpoint(open_queue, tmp_path):
    """Changes only in the journal (no checkpoint, no clean shutdown) survive reopening."""
    queue = open_queue()
    job_id = queue.submit_job([jqop(log_messages=["x"])])
    run_jobs(queue)
    expected = queue.query_jobs([job_id], ["status", "oplog"])
    crash(queue)  # no checkpoint ran
    assert not (tmp_path / "queue" / ("job-%d" % job_id)).exists()
    reopened = open_queue()
    assert reopened.query_jobs([job_id], ["status", "oplog"]) == expected
    assert (tmp_path / "queue" / ("job-%d" % job_id)).exists()


def test_checkpoint_rewrites_files_and_empties_journal(open_queue, tmp_path):
    """A checkpoint writes job files in Ganeti format and leaves an empty journal."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    run_jobs(queue)
    queue.checkpoint()
    root = tmp_path / "queue"
    data = serializer.loads((root / ("job-%d" % job_id)).read_bytes())
    assert data["ops"][0]["status"] == "success" and data["id"] == job_id
    assert (root / "journal").stat().st_size == 0
    assert not (root / "journal.old").exists()
    assert (root / "serial").read_text() == "%d\n" % job_id


def test_a_checkpoint_writes_a_new_jobs_file_as_new_and_a_changed_ones_as_a_rewrite(
        open_queue, monkeypatch):
    """A job's first file is written as new (no spare link tried); once written, a later
    checkpoint of its changes replaces the file (new=False)."""
    queue = open_queue()
    writes = []
    real = queuedir.QueueDir.write_job
    monkeypatch.setattr(queuedir.QueueDir, "write_job", lambda self, job_id, data, new=False: (
        writes.append((job_id, new)), real(self, job_id, data, new))[1])
    first = queue.submit_job([delay()])
    queue.checkpoint()
    run_jobs(queue)
    second = queue.submit_job([delay()])
    queue.checkpoint()
    assert writes == [(first, True), (first, False), (second, True)]


def test_shutdown_refuses_new_work(open_queue):
    """After shutdown starts, submits fail with a JobQueueError."""
    queue = open_queue()
    queue.shutdown()
    with pytest.raises(errors.JobQueueError, match="shutting down"):
        queue.submit_job([delay()])


def test_failed_checkpoint_is_finished_by_the_next_one(open_queue, tmp_path, monkeypatch):
    """A checkpoint that fails midway leaves the queue working; the next one completes it."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    run_jobs(queue)
    real_write = queue._dir.write_job

    def broken_write(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(queue._dir, "write_job", broken_write)
    with pytest.raises(OSError):
        queue.checkpoint()
    assert (tmp_path / "queue" / "journal.old").exists()
    second = queue.submit_job([delay()])
    run_jobs(queue)
    monkeypatch.setattr(queue._dir, "write_job", real_write)
    queue.checkpoint()
    queue.checkpoint()
    root = tmp_path / "queue"
    assert not (root / "journal.old").exists()
    for done in (job_id, second):
        assert serializer.loads((root / ("job-%d" % done)).read_bytes())["ops"][0][
            "status"] == "success"


@pytest.mark.parametrize("value", [float("inf"), float("nan"), {1, 2}, object(), {1: "x"}])
def test_non_json_parameter_values_are_refused_and_leave_nothing(open_queue, value):
    """A value that is not plain JSON data is an OpPrereqError naming the parameter."""
    queue = open_queue()
    with pytest.raises(errors.OpPrereqError, match="'result' must be JSON data"):
        queue.submit_job([jqop(result=value)])
    assert queue.stats()["jobs"] == 0
    assert queue.submit_job([delay()]) == 1


def test_on_nodes_needs_a_cluster(open_queue):
    """A single-node queue fails OP_TEST_DELAY on_nodes with a message saying why."""
    queue = open_queue()
    job_id = queue.submit_job([delay(0, on_nodes=["node2"])])
    run_jobs(queue)
    status, result = queue.query_jobs([job_id], ["status", "opresult"])[0]
    assert status == "error" and "single node (no cluster)" in result[0][1][0]


def test_the_package_exports_the_library_api():
    """import jqueue gives JobQueue, the error classes and the constants, as DESIGN.md says."""
    import jqueue
    assert jqueue.JobQueue is JobQueue
    assert jqueue.errors.JobQueueError is errors.JobQueueError
    assert jqueue.constants.JOB_NOTCHANGED == "nochange"
    assert jqueue.version()


# Idempotency tokens


def test_a_known_token_returns_the_first_job_instead_of_a_new_one(open_queue, tmp_path):
    """A second submission with a live job's token gets that job's id; tokens survive a
    reopen (they are in the job files) and are forgotten once the job is archived."""
    queue = open_queue()
    first = queue.submit_job([delay()], token="deploy-42")
    assert queue.submit_job([delay(5)], token="deploy-42") == first
    assert queue.submit_job([delay()], token="other") == first + 1
    assert queue.submit_many_jobs([[delay()], [delay(depends=[[-1, []]])]],
                                  tokens=["deploy-42", None]) == [(True, first),
                                                                  (True, first + 2)]
    assert queue._jobs[first + 2].ops[0].input["depends"] == [[first, []]]
    assert len(queue._jobs) == 3
    run_jobs(queue)
    queue.shutdown()
    reopened = open_queue()
    assert reopened.submit_job([delay()], token="deploy-42") == first
    with open(os.path.join(reopened.path, "job-%d" % first)) as stream:
        assert serializer.loads(stream.read())["token"] == "deploy-42"
    assert reopened.archive_job(first)
    assert reopened.submit_job([delay()], token="deploy-42") == first + 3


@pytest.mark.parametrize("tokens", [[""], ["x" * 257], ["a\nb"], [5], ["a", "b"], "ab"])
def test_malformed_tokens_are_refused_before_anything_is_recorded(open_queue, tokens):
    """An empty, long, unprintable or non-string token, or a wrong count, is refused."""
    queue = open_queue()
    with pytest.raises(errors.OpPrereqError, match="token"):
        queue.submit_many_jobs([[delay()]], tokens=tokens)
    assert queue._jobs == {} and queue._serial == 0


def test_a_known_token_is_answered_even_when_the_queue_is_drained(open_queue):
    """Retrying a submission whose job exists is not a new job: the drain flag allows it."""
    queue = open_queue()
    first = queue.submit_job([delay()], token="t")
    queue.set_drain_flag(True)
    assert queue.submit_job([delay()], token="t") == first
    with pytest.raises(errors.JobQueueDrainError):
        queue.submit_job([delay()], token="new")


def test_cancel_with_kill_says_what_kill_did(open_queue):
    """A kill of a queued job says it made no difference; of a running job, that its
    opcode cannot be killed and stops at its next cancellation point."""
    queue = open_queue()
    queued = queue.submit_job([delay()])
    ok, message = queue.cancel_job(queued, kill=True)
    assert ok and message == ("Job %d canceled (kill made no difference: no opcode of it "
                              "was running)" % queued)
    running = queue.submit_job([delay(60)])
    started = threading.Thread(target=queue._pool.run_all)
    started.start()
    deadline = time.monotonic() + 20
    while _status(queue, running) != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ok, message = queue.cancel_job(running, kill=True)
    started.join(20)
    assert ok and message.startswith("Job %d will be canceled at its next cancellation "
                                     "point; kill cannot stop it sooner" % running)
    assert queue.cancel_job(running)[1] == "Job %d is already finished (canceled)" % running


def test_wait_for_job_returns_the_final_status_and_each_opcodes_result(tmp_path):
    """wait_for_job blocks until the job is finished and returns its JobOutcome; it raises
    WaitTimeout when the job does not finish in time, JobLost for an unknown job."""
    with JobQueue(str(tmp_path / "q"), workers=2, checkpoint_interval=None) as queue:
        ok = queue.submit_job([delay(0.05), jqop(result={"rows": 3})])
        failed = queue.submit_job([jqop(fail=True, fail_message="disk full"), delay()])
        outcome = queue.wait_for_job(ok, timeout=30)
        assert outcome == (ok, "success", ["success", "success"], [None, {"rows": 3}])
        assert outcome.succeeded and outcome.error is None
        outcome = queue.wait_for_job(failed, timeout=30)
        assert outcome.status == "error" and not outcome.succeeded
        assert isinstance(outcome.error, errors.OpExecError)
        assert errors.error_message(outcome.error) == "disk full"
        slow = queue.submit_job([delay(30)])
        with pytest.raises(errors.WaitTimeout, match="job %d did not finish within 0.2s" % slow):
            queue.wait_for_job(slow, timeout=0.2)
        queue.cancel_job(slow)
        with pytest.raises(errors.JobLost):
            queue.wait_for_job(999, timeout=1)


# The event stream (jqueue.store.events)


def _events(queue, since=0, **flt):
    return [(e["job"], e["status"], e["message"]) for e in
            queue.read_events(since, flt or None)["events"]]


def test_a_jobs_life_is_in_the_event_stream_in_order(open_queue):
    """NEW at submit, RUN, then DONE with the final status: numbered, in order, durable."""
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    run_jobs(queue)
    assert _events(queue, job=job_id) == [(job_id, "NEW", "TEST_DELAY(0)"),
                                          (job_id, "RUN", ""), (job_id, "DONE", "success")]
    serials = [e["serial"] for e in queue.read_events(0)["events"]]
    assert serials == sorted(serials) and len(set(serials)) == len(serials)


def test_events_of_canceled_and_failed_jobs(open_queue):
    """A canceled queued job is DONE canceled; a failing one DONE error."""
    queue = open_queue()
    canceled = queue.submit_job([delay()])
    queue.cancel_job(canceled)
    failing = queue.submit_job([jqop(fail=True)])
    run_jobs(queue)
    assert _events(queue, job=canceled)[-1] == (canceled, "DONE", "canceled")
    assert _events(queue, job=failing)[-1] == (failing, "DONE", "error")


def test_events_survive_a_reopen_with_their_serials(open_queue, tmp_path):
    """The ring is refilled from the files; new events go on after the last serial."""
    queue = open_queue()
    queue.submit_job([delay()])
    run_jobs(queue)
    before = queue.read_events(0)["events"]
    queue.shutdown()
    again = open_queue()
    assert again.read_events(0)["events"] == before
    again.submit_job([delay()])
    after = again.read_events(before[-1]["serial"])["events"]
    assert after[0]["serial"] == before[-1]["serial"] + 1 and after[0]["status"] == "NEW"
    lines = (tmp_path / "actions.log").read_text().splitlines()
    assert len(lines) == len(before) + 1 and lines[0].split()[3:5] == ["1", "NEW"]


def test_an_event_waiter_hears_of_the_next_event(open_queue):
    """watch_events answers once a matching event is durable, without a thread."""
    queue = open_queue()
    last = queue.read_events(2 ** 62)["last"]
    heard = []
    assert queue.watch_events(last, {"status": ["DONE"]}, heard.append) is not None
    queue.submit_job([delay()])
    assert heard == []
    run_jobs(queue)
    assert [e["status"] for e in heard[0]["events"]] == ["DONE"]


def test_a_checkpoint_the_disk_refuses_is_one_line_and_a_bug_a_traceback(caplog):
    """The checkpoint thread says a disk's refusal (full, a failed sync: said where it
    happened) in one line without a traceback, once a minute while it lasts, a bug with
    one, and that checkpoints succeed again; and goes on."""
    from jqueue.queue import _Checkpointer

    class Queue:
        class _journal:
            size = 0

        def __init__(self):
            self.calls = 0
            self.done = threading.Event()

        def checkpoint(self):
            self.calls += 1
            if self.calls <= 20:
                raise errors.JobQueueError("changes refused: disk full")
            if self.calls == 21:
                raise KeyError("a bug")
            self.done.set()

    queue = Queue()
    checkpointer = _Checkpointer(queue, 0.01, 1 << 20)
    checkpointer.start()
    try:
        assert queue.done.wait(10)
    finally:
        checkpointer.stop()
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records
             if "checkpoint" in r.getMessage()]
    assert lines[:3] == [  # twenty refusals in a row: one line (then one a minute)
        ("ERROR", "1 checkpoint(s) failed since the last line: changes refused: disk full "
                  "(the journal keeps every change meanwhile)", False),
        ("ERROR", "checkpoint failed", True),
        ("WARNING", "checkpoints succeed again", False)]


def test_garbage_in_cycles_at_a_checkpoint_is_collected_not_frozen(tmp_path):
    """A checkpoint freezes the objects alive then (jqueue.queue._freeze_long_lived):
    garbage in reference cycles not yet collected at that moment is collected first, not
    kept for ever (the closures of calls handed to threads leaked so, job after job)."""
    import weakref

    class Node:
        pass

    queue = JobQueue(str(tmp_path / "q"), workers=0, checkpoint_interval=None)
    gc.disable()
    try:
        garbage = Node()
        garbage.itself = garbage
        alive = weakref.ref(garbage)
        del garbage
        queue.submit_job([delay()])
        queue.checkpoint()
        gc.collect()
        assert alive() is None
    finally:
        gc.enable()
        queue.shutdown()


def test_an_opcode_begins_only_once_its_start_is_on_disk(open_queue, tmp_path):
    """When an opcode begins, every reader sees its job running, and the disk says so: a
    crash at that moment (the queue's directory as it is, opened) ends the job as
    "Unclean master daemon shutdown", never runs the opcode again."""
    seen = []

    class OpSnapshot(opcodes.OpCode):
        OP_ID = "OP_SNAPSHOT"

        def run(self, ctx):
            seen.append(queue.query_jobs([ctx.job_id], ["status", "opstatus"])[0])
            shutil.copytree(tmp_path / "queue", tmp_path / "crashed")
            return "ran"

    registry = registry_of(OpSnapshot)
    queue = open_queue(registry=registry)
    job_id = queue.submit_job([{"OP_ID": "OP_SNAPSHOT"}])
    run_jobs(queue)
    assert seen == [["running", ["running"]]]
    crashed = open_queue(tmp_path / "crashed", registry=registry)
    assert crashed.query_jobs([job_id], ["status", "opresult"]) == [
        ["error", [["OpExecError", [C.MSG_UNCLEAN_SHUTDOWN]]]]]
