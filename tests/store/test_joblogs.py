"""Command logs of a queue that replicates to no one: the journal records extents of the
log files (where the bytes are), each file synced before its extents are durable."""

import errno
import os
import time

import pytest
from conftest import delay
from fakes import SyncPool

from jqueue import errors
from jqueue.queue import JobQueue
from jqueue.store import faults, joblogs, journal, records


@pytest.fixture(autouse=True)
def no_faults():
    yield
    faults.clear()


def _open(path):
    return JobQueue(str(path), pool_factory=SyncPool, checkpoint_interval=None,
                    retry_interval=0.05)


def _crash(queue):
    """Stop without a checkpoint: what is durable is only in the journal."""
    queue.wait_durable(10)
    queue._closing = queue._closed = True
    queue._journal.close()
    queue._dir.unlock()


def _log(queue, job_id, data):
    with queue._lock:
        return queue._record_chunk_unlocked(queue._jobs[job_id], 0, 0, 0, data)


def _journal(queue):
    payloads, report = journal.read_records(os.path.join(queue._dir.path, "journal"))
    assert report.clean
    return payloads


def test_the_journal_holds_extents_and_a_replay_keeps_the_acknowledged_bytes(tmp_path):
    """Each piece is an extent (offset, size) and no piece's bytes are in the journal;
    after a crash the log holds exactly the acknowledged bytes (what was written beyond
    them is cut)."""
    queue = _open(tmp_path / "queue")
    job_id = queue.submit_job([delay()])
    _log(queue, job_id, b"one\n").wait(10)
    _log(queue, job_id, b"two\n").wait(10)
    payloads = _journal(queue)
    assert not any(records.is_log_chunk(p) for p in payloads)
    extents = [records.parse_log_extent(p) for p in payloads if records.is_log_extent(p)]
    assert [(e.job_id, e.offset, e.size) for e in extents] == [(job_id, 0, 4), (job_id, 4, 4)]
    _crash(queue)
    with open(queue._logs.file_path(job_id), "ab") as f:
        f.write(b"never acknowledged")
    queue = _open(tmp_path / "queue")
    try:
        assert queue.read_job_log(job_id, 0, 100)["data"] == b"one\ntwo\n"
        assert queue.query_jobs([job_id], ["log_bytes"]) == [[8]]
        assert queue.recovery.replay_problems == []
    finally:
        queue.shutdown()


def test_a_log_shorter_than_its_extents_is_reported(tmp_path):
    """Bytes an extent promised but the file lacks (a disk that lied about a sync) are a
    problem of the replay, said in the log."""
    queue = _open(tmp_path / "queue")
    job_id = queue.submit_job([delay()])
    _log(queue, job_id, b"0123456789").wait(10)
    _crash(queue)
    os.truncate(queue._logs.file_path(job_id), 3)
    queue = _open(tmp_path / "queue")
    try:
        assert queue.recovery.replay_problems == [
            "the log of job %d holds 3 bytes of the 10 acknowledged" % job_id]
    finally:
        queue.shutdown()


def test_an_extent_is_not_journaled_before_its_log_is_synced(tmp_path):
    """The log's sync fails: its extent is refused (not in the journal) and not
    acknowledged; once the disk works the job is recorded again in full, its log synced
    first, and a crash then keeps the bytes."""
    queue = _open(tmp_path / "queue")
    job_id = queue.submit_job([delay()])
    queue.wait_durable(10)
    faults.inject("logs.sync", errno.EIO)
    with pytest.raises(errors.JobQueueError, match="Input/output error"):
        _log(queue, job_id, b"late\n").wait(10)
    assert not any(records.is_log_extent(p) for p in _journal(queue))
    assert queue.read_job_log(job_id, 0, 100)["data"] == b""
    deadline = time.monotonic() + 10
    while queue.read_job_log(job_id, 0, 100)["data"] != b"late\n":
        assert time.monotonic() < deadline, "the job was not recorded again"
        time.sleep(0.02)  # the journal probes the disk, then the queue re-records the job
    _crash(queue)
    queue = _open(tmp_path / "queue")
    try:
        assert queue.read_job_log(job_id, 0, 100)["data"] == b"late\n"
    finally:
        queue.shutdown()


def test_a_full_record_of_a_job_with_a_log_waits_for_the_logs_sync(tmp_path):
    """A job's first record after a checkpoint is a full one, which says how long its log
    is: it too is written only once the log is synced (here the sync fails: refused)."""
    queue = _open(tmp_path / "queue")
    try:
        job_id = queue.submit_job([delay()])
        _log(queue, job_id, b"one\n").wait(10)
        queue.checkpoint()
        faults.inject("logs.sync", errno.EIO)
        with pytest.raises(errors.JobQueueError, match="Input/output error"):
            queue.change_job_priority(job_id, -5)
    finally:
        faults.clear()
        queue.shutdown()


def test_a_synced_log_keeps_only_its_tail_in_the_page_cache(tmp_path, monkeypatch):
    """Once synced, all but the last CACHED_TAIL bytes of a log (page aligned) are
    dropped from the page cache; a log shorter than that keeps everything."""
    dropped = []
    real = os.posix_fadvise

    def fadvise(fd, offset, length, advice):
        dropped.append((offset, length, advice))
        return real(fd, offset, length, advice)
    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    logs = joblogs.LogStore(str(tmp_path / "logs"))
    logs.write(1, 0, b"x" * 1000)
    logs.sync_now([1])
    assert dropped == []
    size = joblogs.CACHED_TAIL + 3 * joblogs.PAGE + 100
    logs.write(2, 0, b"y" * size)
    logs.sync_now([2])
    assert dropped == [(0, 3 * joblogs.PAGE, os.POSIX_FADV_DONTNEED)]
    logs.close()
