"""Tests of jqueue.store.recovery: a torn or damaged journal recovers every complete record.

The oracle: opening a queue whose journal has a torn tail (or a damaged record) must give
exactly the same jobs as opening one whose journal never contained those bytes.
"""

import shutil

import pytest
from conftest import crash, delay, jqop, run_jobs
from fakes import SyncPool

from jqueue.queue import JobQueue
from jqueue.store import journal, records

FIELDS = ["id", "status", "opstatus", "opresult", "oplog", "archived"]


def _crashed_queue(path):
    """Leave a queue whose whole history is only in its journal (no checkpoint)."""
    queue = JobQueue(str(path), pool_factory=SyncPool, checkpoint_interval=None)
    queue.submit_job([delay()])
    queue.submit_job([jqop(log_messages=["one", "two"]), jqop(fail=True)])
    run_jobs(queue)
    queue.submit_many_jobs([[jqop(log_messages=["three"])], [delay()]])
    queue._pool.run_next()
    queue.archive_job(1)
    queue.wait_durable(10)
    crash(queue)


def _frames(path):
    payloads, report = journal.read_records(str(path / "journal"))
    assert report.clean
    return [journal.frame(p) for p in payloads]


def _open_with_journal(template, target, data):
    shutil.copytree(template, target)
    (target / "journal").write_bytes(data)
    queue = JobQueue(str(target), pool_factory=SyncPool, checkpoint_interval=None)
    try:
        ids = list(range(1, queue.recovery.max_id + 1))
        return queue.query_jobs(ids, FIELDS), queue.recovery
    finally:
        queue.shutdown()


@pytest.fixture
def crashed(tmp_path):
    template = tmp_path / "template"
    _crashed_queue(template)
    return template, _frames(template)


def test_every_torn_tail_recovers_the_complete_records(crashed, tmp_path):
    """Cutting the journal anywhere in its last records equals never writing them."""
    template, frames = crashed
    assert len(frames) > 10
    for count in range(len(frames) - 4, len(frames)):
        whole = b"".join(frames[:count])
        expected, _ = _open_with_journal(template, tmp_path / ("ok%d" % count), whole)
        for cut in sorted({1, 5, 12, len(frames[count]) // 2, len(frames[count]) - 1}):
            torn = whole + frames[count][:cut]
            got, recovered = _open_with_journal(
                template, tmp_path / ("torn%d-%d" % (count, cut)), torn)
            assert got == expected
            report = recovered.journal_reports[-1]
            assert report.records == count and report.torn_tail == cut
            assert not report.damaged


def test_damaged_record_is_reported_and_later_records_recovered(crashed, tmp_path):
    """A corrupted record in the middle is skipped and reported; the rest still apply."""
    template, frames = crashed
    victim = len(frames) // 2
    damaged = bytearray(frames[victim])
    damaged[journal.HEADER_SIZE + 3] ^= 0x55
    data = b"".join(frames[:victim]) + bytes(damaged) + b"".join(frames[victim + 1:])
    without = b"".join(frames[:victim] + frames[victim + 1:])
    expected, _ = _open_with_journal(template, tmp_path / "without", without)
    got, recovered = _open_with_journal(template, tmp_path / "damaged", data)
    assert got == expected
    report = recovered.journal_reports[-1]
    assert report.records == len(frames) - 1
    assert report.damaged == [(sum(map(len, frames[:victim])), len(frames[victim]))]


def test_full_journal_replays_to_the_acknowledged_state(crashed, tmp_path):
    """With an intact journal, every job comes back as acknowledged (crash rules applied)."""
    template, frames = crashed
    got, recovered = _open_with_journal(template, tmp_path / "full", b"".join(frames))
    by_id = {row[0]: row for row in got if row}
    assert by_id[1][1] == "success" and by_id[1][5] is True
    assert by_id[2][1] == "error" and [e[3] for e in by_id[2][4][0]] == ["one", "two"]
    assert by_id[3][1] == "success" and by_id[4][1] == "queued"
    assert recovered.journal_reports[-1].clean


def test_reopen_after_recovery_leaves_an_empty_journal(crashed, tmp_path):
    """Recovery materializes the journal into files and empties it."""
    template, frames = crashed
    _open_with_journal(template, tmp_path / "once", b"".join(frames))
    assert (tmp_path / "once" / "journal").read_bytes() == b""
    assert (tmp_path / "once" / "job-2").exists()
    assert (tmp_path / "once" / "archive" / "0" / "job-1").exists()


def test_archive_record_of_a_job_already_moved_is_not_a_problem(tmp_path):
    """Replaying an archival whose file a checkpoint already moved changes nothing."""
    queue = JobQueue(str(tmp_path / "q"), pool_factory=SyncPool, checkpoint_interval=None)
    job_id = queue.submit_job([delay()])
    run_jobs(queue)
    queue.checkpoint()
    queue.archive_job(job_id)
    queue.wait_durable(10)
    journal_bytes = (tmp_path / "q" / "journal").read_bytes()
    queue.checkpoint()  # moves the file to archive/ and empties the journal
    queue.shutdown()
    # A crash before journal.old was removed: the archival is replayed once more.
    (tmp_path / "q" / "journal").write_bytes(journal_bytes)
    reopened = JobQueue(str(tmp_path / "q"), pool_factory=SyncPool, checkpoint_interval=None)
    try:
        assert reopened.recovery.replay_problems == []
        assert reopened.query_jobs([job_id], ["archived", "status"]) == [[True, "success"]]
        assert reopened.query_jobs([], ["id"]) == []
    finally:
        reopened.shutdown()


def test_a_log_replayed_from_the_journal_is_read_whole(tmp_path):
    """A command log whose pieces were only in the journal at the crash reads whole after
    the replay (its bytes are acknowledged), not empty until it grows again."""
    queue = JobQueue(str(tmp_path / "queue"), pool_factory=SyncPool, checkpoint_interval=None)
    job_id = queue.submit_job([delay()])
    with queue._lock:
        batch = queue._record_chunk_unlocked(queue._jobs[job_id], 0, 0, 0, b"one\n")
    batch.wait(10)
    queue.wait_durable(10)
    crash(queue)
    queue = JobQueue(str(tmp_path / "queue"), pool_factory=SyncPool, checkpoint_interval=None)
    try:
        assert queue.read_job_log(job_id, 0, 100)["data"] == b"one\n"
    finally:
        queue.shutdown()


def test_event_records_replay_whatever_their_text():
    """An event record (written as the event stream answers it) replays to the very event,
    whatever its text: UTF-8, escapes, a lone surrogate (which only simplejson writes)."""
    for message in ("plain", "\u00e9t\u00e9 \u2713 \"q\" \\ \t", "lone \udc80 surrogate"):
        event = {"serial": 7, "time": 1_800_000_000.25, "kind": "job", "job": 3, "node": None,
                 "status": "NEW", "message": message}
        replay = records.Replay(lambda job_id: None, lambda job_id: False)
        replay.apply(records.event_record(event))
        assert replay.events == [event] and replay.problems == []
