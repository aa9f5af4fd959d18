"""Tests of jqueue.jobcontrol through a JobQueue: hold, release, reset, retry, start times.

Every change is a journal record: it survives reopening, a refused one leaves no trace,
and a replica applies it like any other.
"""

import errno
import threading

import pytest
from conftest import delay, jqop, run_jobs
from test_groups import group

from jqueue import JobQueue, errors
from jqueue.cluster.replica import Replica
from jqueue.store import faults

FIELDS = ["status", "opstatus", "held"]


@pytest.fixture(autouse=True)
def _disarm():
    yield
    faults.clear()


def state(queue, job_id, fields=FIELDS):
    queue.wait_durable(10)
    return queue.query_jobs([job_id], fields)[0]


# Hold and release


def test_a_held_job_does_not_start_until_released(open_queue):
    """Held, a queued job stays queued however the pool runs; released, it runs."""
    queue = open_queue()
    job_id = queue.submit_job([jqop()])
    assert queue.hold_job(job_id) == (True, "Job %d held" % job_id)
    assert queue.hold_job(job_id) == (True, "Job %d is already held" % job_id)
    run_jobs(queue)
    assert state(queue, job_id) == ["queued", ["queued"], True]
    assert queue.release_job(job_id) == (True, "Job %d released" % job_id)
    assert queue.release_job(job_id) == (True, "Job %d is not held" % job_id)
    run_jobs(queue)
    assert state(queue, job_id) == ["success", ["success"], False]


def test_a_hold_stops_a_job_between_opcodes(open_queue):
    """A job held while an opcode runs finishes that opcode and goes no further."""
    queue = open_queue()
    job_id = queue.submit_job([jqop(), jqop()])
    pool = queue._pool
    pool.run_next()  # the first opcode; the job goes back to the pool for the second
    queue.wait_durable(10)
    queue.hold_job(job_id)
    run_jobs(queue)
    assert state(queue, job_id) == ["queued", ["success", "queued"], True]
    queue.release_job(job_id)
    run_jobs(queue)
    assert state(queue, job_id)[:2] == ["success", ["success", "success"]]


def test_holding_a_group_holds_jobs_added_later(open_queue):
    """A held group holds its tree, and jobs submitted into it later; release lifts all."""
    queue = open_queue()
    outer = queue.submit_job([group("outer")])
    inner = queue.submit_job([group("inner")], parent=outer)
    first = queue.submit_job([jqop()], parent=inner)
    ok, message = queue.hold_job(outer)
    assert ok and message == "Group %d: 3 job(s) held" % outer
    later = queue.submit_job([jqop()], parent=inner)
    run_jobs(queue)
    assert [state(queue, i)[:2] for i in (first, later)] == [["queued", ["queued"]]] * 2
    assert state(queue, later)[2] is True  # held through the group above it
    assert queue.release_job(outer) == (True, "Group %d: 3 job(s) released" % outer)
    run_jobs(queue)
    assert [state(queue, i)[0] for i in (outer, first, later)] == ["success"] * 3


def test_finished_and_canceling_jobs_cannot_be_held(open_queue):
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    run_jobs(queue)
    assert queue.hold_job(job_id) == (False, "Job %d is already finished (success)" % job_id)
    assert queue.hold_job(999) == (False, "Job 999 not found")
    with pytest.raises(errors.ParameterError):
        queue.hold_job("../1")


# Reset and retry


def test_reset_requeues_a_finished_job_with_a_marker_and_runs_it_again(open_queue):
    """A reset job is queued as submitted (its log kept, a marker added) and runs again."""
    queue = open_queue()
    job_id = queue.submit_job([jqop(log_messages=["hello"])], token="t1")
    run_jobs(queue)
    assert queue.reset_job(job_id) == (True, "Job %d reset" % job_id)
    assert state(queue, job_id, ["status", "opstatus", "opresult", "end_ts"]) == [
        "queued", ["queued"], [None], None]
    messages = [entry[3] for entry in state(queue, job_id, ["oplog"])[0][0]]
    assert messages[0] == "hello" and messages[1].startswith("* RESET : by request")
    assert queue.submit_job([delay()], token="t1") == job_id  # the token stays its own
    run_jobs(queue)
    assert state(queue, job_id)[0] == "success"
    assert queue.reset_job(job_id)[0] and queue.cancel_job(job_id)[0]
    assert queue.reset_job(job_id)[0]  # a canceled job can be reset too


def test_reset_refuses_unfinished_jobs(open_queue):
    queue = open_queue()
    job_id = queue.submit_job([delay()])
    assert queue.reset_job(job_id) == (False, "Job %d is not finished (queued): only a "
                                              "finished job can be reset" % job_id)


def test_retry_requeues_the_failed_opcodes_of_a_failed_job(open_queue):
    """Retry keeps what succeeded and queues the failed opcode and those after it."""
    queue = open_queue()
    job_id = queue.submit_job([jqop(), jqop(fail=True), jqop()])
    run_jobs(queue)
    assert state(queue, job_id)[1] == ["success", "error", "error"]
    ok, message = queue.retry_job(job_id)
    assert ok and message == "Job %d queued for one more attempt" % job_id
    assert state(queue, job_id)[:2] == ["queued", ["success", "queued", "queued"]]
    run_jobs(queue)
    assert state(queue, job_id)[1] == ["success", "error", "error"]
    success = queue.submit_job([delay()])
    run_jobs(queue)
    assert queue.retry_job(success) == (
        False, "Job %d has not failed (success): only a failed job can be retried (a "
               "finished job can be reset)" % success)


# Durability: reopening, refusals, replicas


def test_holds_resets_and_retries_survive_reopening(open_queue):
    """Each is a journal record: a reopened queue has them."""
    queue = open_queue()
    held = queue.submit_job([jqop()])
    failed = queue.submit_job([jqop(fail=True)])
    run_jobs(queue)  # held is not held yet: it ran
    queue.hold_job(queue.submit_job([jqop()]))
    queue.retry_job(failed)
    queue.reset_job(held)
    queue.shutdown()
    queue = open_queue()
    assert [state(queue, i) for i in (held, failed, 3)] == [
        ["queued", ["queued"], False], ["queued", ["queued"], False],
        ["queued", ["queued"], True]]


@pytest.mark.parametrize("prepare, change", [
    (lambda q, i: None, lambda q, i: q.hold_job(i)),
    (lambda q, i: q.hold_job(i), lambda q, i: q.release_job(i)),
    (lambda q, i: run_jobs(q), lambda q, i: q.reset_job(i)),
    (lambda q, i: run_jobs(q), lambda q, i: q.retry_job(i)),
])
def test_a_refused_change_leaves_no_trace(open_queue, prepare, change):
    """A hold, release, reset or retry the disk refused is undone in memory, on disk and
    in the log (no marker), and the queue reopens as before it."""
    queue = open_queue(retry_interval=0.01)
    job_id = queue.submit_job([jqop(fail=True)])
    prepare(queue, job_id)
    fields = ["status", "opstatus", "held", "oplog", "end_ts"]
    before = state(queue, job_id, fields)
    faults.inject("journal.write", errno.ENOSPC)
    with pytest.raises(errors.JobQueueError, match="No space"):
        change(queue, job_id)
    assert state(queue, job_id, fields) == before
    while queue.status()["writes"] != "accepted" or queue.status()["unrecorded_jobs"]:
        threading.Event().wait(0.01)
    queue.shutdown()
    queue = open_queue()
    assert state(queue, job_id, fields) == before


def test_a_refused_change_of_a_group_leaves_none_of_its_jobs_changed(open_queue):
    """The records of a group's jobs share one batch: refused, none of them changed."""
    queue = open_queue(retry_interval=0.01)
    top = queue.submit_job([group("top")])
    jobs = [queue.submit_job([jqop()], parent=top) for _ in range(3)]
    faults.inject("journal.write", errno.ENOSPC)
    with pytest.raises(errors.JobQueueError, match="No space"):
        queue.hold_job(top)
    assert [state(queue, i)[2] for i in [top] + jobs] == [False] * 4


def test_a_replica_applies_holds_resets_and_retries(open_queue, tmp_path):
    """The records a master journals for these changes apply on a replica (by replay of
    the master's journal records, as replication ships them)."""
    queue = open_queue()
    failed = queue.submit_job([jqop(fail=True)])
    done = queue.submit_job([jqop()])
    run_jobs(queue)
    queue.hold_job(queue.submit_job([jqop()]))
    queue.retry_job(failed)
    queue.reset_job(done)
    queue.wait_durable(10)
    from jqueue.store import journal
    payloads = journal.read_records(str(tmp_path / "queue" / "journal"))[0]
    replica = Replica(str(tmp_path / "replica"), pool_factory=None, checkpoint_interval=None)
    try:
        replica.apply_batch(0, 0, 1, 1, payloads)
        got = replica.queue.query_jobs([failed, done, 3], FIELDS)
        assert got == [["queued", ["queued"], False], ["queued", ["queued"], False],
                       ["queued", ["queued"], True]]
    finally:
        replica.close()


# Start times


def test_a_job_does_not_start_before_its_time(open_queue, clock):
    """start_in (or not_before) keeps a job queued until the clock reaches it."""
    queue = open_queue()
    later = queue.submit_job([jqop()], start_in=3600)
    at = queue.submit_job([jqop()], not_before=clock.now + 60)
    now = queue.submit_job([jqop()])
    run_jobs(queue)
    assert [state(queue, i)[0] for i in (later, at, now)] == ["queued", "queued", "success"]
    assert state(queue, later, ["not_before"]) == [clock.now + 3600]
    clock.advance(61)
    queue.start_due_jobs()  # (or the queue's own timer did)
    run_jobs(queue)
    assert [state(queue, i)[0] for i in (later, at)] == ["queued", "success"]
    clock.advance(3600)
    queue.start_due_jobs()
    run_jobs(queue)
    assert state(queue, later)[0] == "success"


def test_start_times_survive_reopening(open_queue, clock):
    """The start time is in the job file: a reopened queue waits for it again."""
    queue = open_queue()
    job_id = queue.submit_job([jqop()], start_in=600)
    queue.shutdown()
    queue = open_queue()
    run_jobs(queue)
    assert state(queue, job_id)[0] == "queued"
    clock.advance(601)
    queue.start_due_jobs()
    run_jobs(queue)
    assert state(queue, job_id)[0] == "success"


def test_scheduled_jobs_cost_no_thread_each(open_queue, clock):
    """10,000 scheduled jobs: at most one more thread than none."""
    queue = open_queue()
    before = threading.active_count()
    results = queue.submit_many_jobs([[delay()] for _ in range(10000)],
                                     options=[{"start_in": 100 + n} for n in range(10000)])
    assert all(ok for ok, _ in results)
    run_jobs(queue)
    assert threading.active_count() <= before + 1
    assert len(queue._control.starts) == 10000
    clock.advance(100 + 10000)
    queue.start_due_jobs()
    assert len(queue._control.starts) == 0


def test_hold_release_retry_and_reset_are_events_and_action_log_lines(open_queue, tmp_path):
    """Each request is an event of its own word (beside the job's status events), in the
    stream and in actions.log; a refused request is no event."""
    queue = open_queue()
    job_id = queue.submit_job([jqop(fail=True)])
    queue.hold_job(job_id)
    queue.release_job(job_id)
    queue.release_job(job_id)  # not held: nothing changes, no event
    run_jobs(queue)
    queue.retry_job(job_id)
    run_jobs(queue)
    queue.reset_job(job_id)
    run_jobs(queue)
    queue.wait_durable(10)
    words = [e["status"] for e in queue.read_events(0, {"job": job_id})["events"]]
    requests = [w for w in words if w in ("HOLD", "RELEASE", "RETRY", "RESET")]
    assert requests == ["HOLD", "RELEASE", "RETRY", "RESET"], words
    lines = [line.split() for line in (tmp_path / "actions.log").read_text().splitlines()]
    logged = [line[4] for line in lines if line[3] == str(job_id)
              and line[4] in ("HOLD", "RELEASE", "RETRY", "RESET")]
    assert logged == requests


# Why a job waits


def test_wait_reason_says_why_a_pending_job_does_not_run(open_queue, clock, tmp_path):
    """Held, its group held, its start time to come, a job it depends on running: a code
    and words each (wait_reason, wait_message); null for a group, a job that may start
    and one that ended; a replica says nothing of it."""
    queue = open_queue()
    fields = ["wait_reason", "wait_message"]
    held = queue.submit_job([jqop()])
    queue.hold_job(held)
    render = queue.submit_job([group("render")])
    frame = queue.submit_job([jqop()], parent="render")
    queue.hold_job(render)
    added = queue.submit_job([jqop()], parent="render")
    later = queue.submit_job([jqop()], not_before=clock.now + 60)
    free = queue.submit_job([jqop()])
    after = queue.submit_job([jqop(depends=[[later, []]])])
    assert {job_id: state(queue, job_id, fields) for job_id in (
        held, render, frame, added, later, free, after)} == {
        held: ["HELD", "held: it starts once released"],
        render: [None, None],
        frame: ["HELD", "held: it starts once released"],
        added: ["HELD", "its group %d is held: it starts once that is released" % render],
        later: ["NOT_BEFORE", "its start time has not come (not_before)"],
        free: [None, None],
        after: ["DEPENDENCY", "it waits for job %d to end" % later]}
    from jqueue.store import journal
    payloads = journal.read_records(str(tmp_path / "queue" / "journal"))[0]
    replica = Replica(str(tmp_path / "replica"), pool_factory=None, checkpoint_interval=None)
    try:
        replica.apply_batch(0, 0, 1, 1, payloads)
        assert replica.queue.query_jobs([held, added], fields) == [[None, None]] * 2
    finally:
        replica.close()
    clock.advance(61)
    queue.start_due_jobs()
    queue.release_job(held)
    run_jobs(queue)
    assert state(queue, held, ["status"] + fields) == ["success", None, None]
    assert state(queue, after, ["status"] + fields) == ["success", None, None]


def test_wait_reason_of_a_job_behind_busy_workers(tmp_path):
    """One worker, running a long opcode: the next job waits for it (WORKERS)."""
    queue = JobQueue(str(tmp_path / "q"), workers=1, checkpoint_interval=None)
    try:
        busy = queue.submit_job([delay(3600)])
        assert queue.wait_for_job_changes(busy, ["status"], ["queued"], None, 10)[0] == [
            "running"]
        behind = queue.submit_job([jqop()])
        assert queue.query_jobs([behind], ["wait_reason", "wait_message"])[0] == [
            "WORKERS", "the worker is busy"]
        queue.cancel_job(busy)
        queue.wait_for_job(behind, 10)
        assert queue.query_jobs([behind], ["wait_reason"])[0] == [None]
    finally:
        queue.shutdown()
