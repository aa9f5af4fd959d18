"""Tests of jqueue.store.faults and of what the queue does when its disk fails.

Failpoints make the journal's write or sync, or a checkpoint's file writes or sync, fail
on their Nth call. Whatever fails, a refused change leaves no trace: not in memory, not
in the job files, not after reopening; internal changes are recorded once the disk
works again; a failed sync is fatal and never retried.
"""

import errno
import threading
import time

import pytest
from conftest import crash, delay, registry_of, run_jobs
from daemon_helpers import wait_until

from jqueue import errors, opcodes
from jqueue.store import faults

FIELDS = ["id", "status", "opstatus", "priority", "archived"]


@pytest.fixture(autouse=True)
def _disarm():
    yield
    faults.clear()


def _wait_writable(queue, timeout=10):
    deadline = time.monotonic() + timeout
    while queue.status()["writes"] != "accepted" or queue.status()["unrecorded_jobs"]:
        assert time.monotonic() < deadline, queue.status()
        time.sleep(0.01)
    queue.wait_durable(timeout)


def _reopen(queue, open_queue, **kwargs):
    queue.shutdown()
    return open_queue(retry_interval=0.01, **kwargs)


class OpFillDisk(opcodes.OpCode):
    """Makes the journal's next write fail as on a full disk: the one of its own end."""

    OP_ID = "OP_FILL_DISK"

    def run(self, ctx):
        faults.inject("journal.write", errno.ENOSPC)


def _counting_registry(runs):
    """A registry with OP_COUNTED, whose every run appends its job id to runs."""

    class OpCounted(opcodes.OpCode):
        OP_ID = "OP_COUNTED"

        def run(self, ctx):
            runs.append(ctx.job_id)
            return "ran"

    return registry_of(OpCounted)


def test_failpoint_fails_the_nth_call_then_disarms():
    """inject(point, E, nth=N) lets N-1 calls pass, fails the Nth, then is gone."""
    faults.inject("journal.write", errno.ENOSPC, nth=2)
    faults.check("journal.write")
    with pytest.raises(OSError) as info:
        faults.check("journal.write")
    assert info.value.errno == errno.ENOSPC and "journal.write" in str(info.value)
    faults.check("journal.write")
    assert not faults.armed("journal.write")
    with pytest.raises(ValueError):
        faults.inject("no.such.point", errno.EIO)


def test_refused_submission_leaves_no_trace(open_queue):
    """A submission the disk refused is answered with the cause and the directory, and
    exists nowhere: not in queries, not after reopening; the next one works."""
    queue = open_queue(retry_interval=0.01)
    first = queue.submit_job([delay()])
    faults.inject("journal.write", errno.ENOSPC)
    with pytest.raises(errors.JobQueueError) as info:
        queue.submit_job([delay()])
    message = errors.error_message(info.value)
    assert "No space left on device" in message and queue.path in message
    assert queue.query_jobs([], ["id"]) == [[first]]
    _wait_writable(queue)
    third = queue.submit_job([delay()])
    queue = _reopen(queue, open_queue)
    assert queue.query_jobs([], ["id"]) == [[first], [third]]


def test_a_refused_submit_many_leaves_none_of_its_jobs(open_queue):
    """The jobs of one SubmitManyJobs are recorded together: refused, none of them exists."""
    queue = open_queue(retry_interval=0.01)
    faults.inject("journal.write", errno.ENOSPC)
    with pytest.raises(errors.JobQueueError, match="No space"):
        queue.submit_many_jobs([[delay()], [delay()], [delay()]])
    assert queue.query_jobs([], ["id"]) == []
    _wait_writable(queue)
    assert [ok for ok, _ in queue.submit_many_jobs([[delay()], [delay()]])] == [True, True]
    queue = _reopen(queue, open_queue)
    assert len(queue.query_jobs([], ["id"])) == 2


def test_changes_are_refused_up_front_while_the_disk_refuses(open_queue):
    """While the journal cannot write, changes are refused at once; reads are served."""
    queue = open_queue(retry_interval=60)
    job_id = queue.submit_job([delay()])
    faults.inject("journal.write", errno.EDQUOT, times=1000)
    with pytest.raises(errors.JobQueueError):
        queue.submit_job([delay()])
    for change in (lambda: queue.submit_job([delay()]),
                   lambda: queue.cancel_job(job_id),
                   lambda: queue.change_job_priority(job_id, 5),
                   lambda: queue.archive_job(job_id),
                   lambda: queue.auto_archive_jobs(-1, 10)):
        with pytest.raises(errors.JobQueueError, match="Disk quota exceeded"):
            change()
    assert queue.query_jobs([job_id], ["status", "priority"]) == [["queued", 0]]
    assert "Disk quota exceeded" in queue.status()["writes"]
    faults.clear()


@pytest.mark.parametrize("change, fields", [
    (lambda q, i: q.cancel_job(i), ["status", "opstatus"]),
    (lambda q, i: q.change_job_priority(i, 10), ["priority", "oppriority"]),
])
def test_refused_change_to_a_job_is_rolled_back(open_queue, change, fields):
    """A cancel or priority change the disk refused is undone in memory and on disk."""
    queue = open_queue(retry_interval=0.01)
    job_id = queue.submit_job([delay()])
    before = queue.query_jobs([job_id], fields)
    faults.inject("journal.write", errno.ENOSPC)
    with pytest.raises(errors.JobQueueError, match="No space"):
        change(queue, job_id)
    assert queue.query_jobs([job_id], fields) == before
    _wait_writable(queue)
    queue = _reopen(queue, open_queue)
    assert queue.query_jobs([job_id], fields) == before
    run_jobs(queue)
    assert queue.query_jobs([job_id], ["status"]) == [["success"]]


def test_refused_archival_is_rolled_back(open_queue, tmp_path):
    """An archival the disk refused leaves the job live, its file where it was."""
    queue = open_queue(retry_interval=0.01)
    ids = [queue.submit_job([delay()]) for _ in range(3)]
    run_jobs(queue)
    faults.inject("journal.write", errno.ENOSPC)
    with pytest.raises(errors.JobQueueError):
        queue.auto_archive_jobs(-1, 60)
    assert queue.query_jobs([], ["id", "archived"]) == [[i, False] for i in ids]
    assert not (tmp_path / "queue" / "archive" / "0" / "job-1").exists()
    _wait_writable(queue)
    queue = _reopen(queue, open_queue)
    assert queue.query_jobs([], ["id", "archived"]) == [[i, False] for i in ids]


def test_internal_changes_are_recorded_once_the_disk_works_again(open_queue):
    """The processor's record of an opcode's end, lost to a refused write, is re-recorded
    in full; until then the job counts as not durable (a waiter does not hear of it)."""
    queue = open_queue(retry_interval=0.2, registry=registry_of(OpFillDisk))
    job_id = queue.submit_job([{"OP_ID": "OP_FILL_DISK"}])
    queue._pool.run_all()
    queue.wait_durable(5)
    assert queue.status()["unrecorded_jobs"] == 1
    answer = queue.wait_for_job_changes(job_id, ["status"], ["running"], None, 0)
    assert answer == "nochange"  # its start is durable, its end is not
    _wait_writable(queue)
    queue.checkpoint()
    crash(queue)  # the journal and files as they are
    queue = open_queue(retry_interval=0.01)
    assert queue.query_jobs([job_id], ["status"]) == [["success"]]


class OpFullDiskThenLog(opcodes.OpCode):
    """Fills the disk for the journal (every write refused until the failpoint is
    cleared), then logs two messages."""

    OP_ID = "OP_FULL_DISK_THEN_LOG"

    def run(self, ctx):
        faults.inject("journal.write", errno.ENOSPC, times=1000)
        ctx.feedback("m1")
        ctx.feedback("m2")
        return "logged"


def test_a_job_refused_twice_is_re_recorded_whole_with_its_messages(open_queue):
    """An opcode's messages and end are refused; then, the disk still full, the next
    opcode's start, which was to record the job whole: once the disk has room again
    the job is recorded whole, its messages with it, and a crash keeps them."""
    queue = open_queue(retry_interval=0.05, registry=registry_of(OpFullDiskThenLog))
    job_id = queue.submit_job([{"OP_ID": "OP_FULL_DISK_THEN_LOG"}, delay()])
    queue._pool.run_next()  # the first opcode: its messages and end refused
    wait_until(lambda: queue.status()["unrecorded_jobs"], 10, "the refusal")
    queue._pool.run_next()  # the second's start: refused, taken back
    faults.clear()
    _wait_writable(queue)
    fields = ["status", "opstatus", "opresult"]
    expected = [["queued", ["success", "queued"], ["logged", None]]]

    def messages():
        return [[entry[3] for entry in log] for log in
                queue.query_jobs([job_id], ["oplog"])[0][0]]

    assert queue.query_jobs([job_id], fields) == expected
    assert messages() == [["m1", "m2"], []]
    crash(queue)  # the journal and files as they are
    queue = open_queue(retry_interval=0.01)
    assert queue.query_jobs([job_id], fields) == expected
    assert messages() == [["m1", "m2"], []]


def test_a_refused_piece_of_a_log_is_read_once_the_disk_works_again(open_queue):
    """A piece of a command log whose record a full disk refused is in the log's file: it
    is journaled again with the job, readable then and after a crash."""
    queue = open_queue(retry_interval=0.05)
    job_id = queue.submit_job([delay()])
    queue.wait_durable(5)
    faults.inject("journal.write", errno.ENOSPC)
    with queue._lock:
        batch = queue._record_chunk_unlocked(queue._jobs[job_id], 0, 0, 0, b"late\n")
    with pytest.raises(errors.JobQueueError):
        batch.wait(5)
    assert queue.read_job_log(job_id, 0, 100)["data"] == b""
    _wait_writable(queue)
    queue.wait_durable(5)
    assert queue.read_job_log(job_id, 0, 100)["data"] == b"late\n"
    crash(queue)  # the journal and files as they are
    queue = open_queue(retry_interval=0.01)
    assert queue.read_job_log(job_id, 0, 100)["data"] == b"late\n"


def test_failed_checkpoint_write_keeps_every_change(open_queue):
    """A checkpoint whose file write fails keeps the journal; the next one finishes."""
    queue = open_queue()
    ids = [queue.submit_job([delay()]) for _ in range(3)]
    run_jobs(queue)
    faults.inject("checkpoint.write", errno.ENOSPC, nth=2)
    with pytest.raises(OSError):
        queue.checkpoint()
    queue.checkpoint()
    queue = _reopen(queue, open_queue)
    assert queue.query_jobs([], ["status"]) == [["success"]] * len(ids)


@pytest.mark.parametrize("point", ["journal.sync", "checkpoint.sync"])
def test_failed_sync_is_fatal_and_reopening_replays(open_queue, point):
    """A failed sync calls on_fatal, refuses every change, closes without a checkpoint;
    reopening replays the journal: acknowledged jobs are there."""
    fatal = []
    queue = open_queue(on_fatal=fatal.append)
    acknowledged = queue.submit_job([delay()])
    faults.inject(point, errno.EIO)
    try:
        queue.submit_job([delay()])
        queue.checkpoint()
    except errors.JobQueueError:
        pass
    assert fatal and fatal[0].errno == errno.EIO if point == "journal.sync" else fatal
    with pytest.raises(errors.JobQueueError, match="restart|for good"):
        queue.submit_job([delay()])
    with pytest.raises(errors.DiskSyncError):
        queue.shutdown()
    queue = open_queue()
    assert [acknowledged] in queue.query_jobs([], ["id"])


def test_a_refused_cancel_never_takes_back_the_processors_work(open_queue):
    """While a cancel of a running job is being refused, the opcode's end waits for the
    undo: the job ends as it ran, not stuck running."""
    queue = open_queue(retry_interval=0.01)
    job_id = queue.submit_job([delay(0.2)])
    worker = threading.Thread(target=queue._pool.run_all)
    worker.start()
    deadline = time.monotonic() + 10
    while queue.query_jobs([job_id], ["status"])[0][0] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.005)
    faults.inject("journal.write", errno.ENOSPC)
    with pytest.raises(errors.JobQueueError):
        queue.cancel_job(job_id)
    worker.join(10)
    _wait_writable(queue)
    run_jobs(queue)
    deadline = time.monotonic() + 10  # reads show acknowledged states only: the job's end
    while queue.query_jobs([job_id], ["status"]) != [["success"]]:  # shows once re-recorded
        assert time.monotonic() < deadline, queue.query_jobs([job_id], ["status"])
        time.sleep(0.01)


def test_after_a_reopen_readers_see_queued_jobs_as_acknowledged(open_queue):
    """A reopened queue's queued jobs show readers their acknowledged state while the
    processor's changes are not durable: as submitted, or as a client changed them."""
    queue = open_queue()
    plain = queue.submit_job([delay()])
    changed = queue.submit_job([delay(), delay()])
    queue.change_job_priority(changed, 10)
    queue.shutdown()
    queue = open_queue(retry_interval=30)
    fields = ["status", "priority", "oppriority", "opstatus", "start_ts"]
    before = queue.query_jobs([plain, changed], fields)
    assert before == [["queued", 0, [0], ["queued"], None],
                      ["queued", 10, [10, 10], ["queued", "queued"], None]]
    faults.inject("journal.write", errno.ENOSPC)
    queue._pool.run_all()
    queue.wait_durable(5)
    assert queue.status()["unrecorded_jobs"] == 2
    assert queue.query_jobs([plain, changed], fields) == before


def test_refused_batches_are_warned_about_once_a_minute_with_their_count(open_queue, caplog):
    """While the disk refuses, each internal change refused (a service's output every
    200 ms) is counted, not logged: one warning, then one a minute with the count."""
    from jqueue.store import journal
    queue = open_queue(retry_interval=60)
    error = errors.JobQueueError("changes refused: cannot write the journal: disk full")
    with caplog.at_level("WARNING", logger="jqueue.queue"):
        for _ in range(50):
            queue._on_refused([journal.Batch(), journal.Batch()], error)
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert lines == ["1 journal batch(es) refused since the last warning: changes refused: "
                     "cannot write the journal: disk full"]


def test_an_opcode_whose_start_the_disk_refuses_waits_for_the_disk(open_queue):
    """A job whose running record a full disk refuses does not start: its opcode runs
    once the disk writes again (the job queued until then, to readers and on disk)."""
    runs = []
    queue = open_queue(retry_interval=0.05, registry=_counting_registry(runs))
    job_id = queue.submit_job([{"OP_ID": "OP_COUNTED"}])
    faults.inject("journal.write", errno.ENOSPC)
    queue._pool.run_all()
    assert runs == []
    assert queue.query_jobs([job_id], ["status", "opstatus"]) == [["queued", ["queued"]]]
    _wait_writable(queue)
    queue._pool.run_all()
    queue.wait_durable(5)
    assert runs == [job_id]
    assert queue.query_jobs([job_id], ["status", "opresult"]) == [["success", ["ran"]]]


def test_a_crash_while_the_disk_refuses_a_start_runs_the_opcode_once(open_queue):
    """A job whose start was refused, then a crash (the disk still full): reopened, the
    job is queued and its opcode runs, once in all."""
    runs = []
    queue = open_queue(retry_interval=0.05, registry=_counting_registry(runs))
    job_id = queue.submit_job([{"OP_ID": "OP_COUNTED"}])
    faults.inject("journal.write", errno.ENOSPC, times=1000)
    queue._pool.run_all()
    crash(queue)  # the journal and files as they are
    faults.clear()
    queue = open_queue(retry_interval=0.05, registry=_counting_registry(runs))
    queue._pool.run_all()
    queue.wait_durable(5)
    assert runs == [job_id]
    assert queue.query_jobs([job_id], ["status", "opresult"]) == [["success", ["ran"]]]
