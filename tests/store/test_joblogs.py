"""Command logs of a queue that replicates to no one: the journal records extents of the
log files (where the bytes are), each file synced before its extents are durable."""

import errno
import os
import time

import pytest
from conftest import delay
from fakes import SyncPool

from jqueue import errors
from jqueue.queue import EXTENT_MIN, JobQueue
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


BIG = b"o" * EXTENT_MIN


def test_big_pieces_are_extents_and_a_replay_keeps_the_acknowledged_bytes(tmp_path):
    """A piece from EXTENT_MIN bytes up is an extent (offset, size), without its bytes in
    the journal; a smaller one carries its bytes (cheaper than a sync of the log). After
    a crash the log holds exactly the acknowledged bytes (what lies beyond is cut)."""
    queue = _open(tmp_path / "queue")
    job_id = queue.submit_job([delay()])
    _log(queue, job_id, b"small\n").wait(10)
    _log(queue, job_id, BIG).wait(10)
    payloads = _journal(queue)
    chunks = [records.parse_log_chunk(p) for p in payloads if records.is_log_chunk(p)]
    assert [(c.offset, c.data) for c in chunks] == [(0, b"small\n")]
    extents = [records.parse_log_extent(p) for p in payloads if records.is_log_extent(p)]
    assert [(e.job_id, e.offset, e.size) for e in extents] == [(job_id, 6, len(BIG))]
    _crash(queue)
    with open(queue._logs.file_path(job_id), "ab") as f:
        f.write(b"never acknowledged")
    queue = _open(tmp_path / "queue")
    try:
        assert queue.read_job_log(job_id, 0, 1 << 20)["data"] == b"small\n" + BIG
        assert queue.recovery.replay_problems == []
    finally:
        queue.shutdown()


def test_a_log_shorter_than_its_extents_is_reported(tmp_path):
    """Bytes an extent promised but the file lacks (a disk that lied about a sync) are a
    problem of the replay, said in the log."""
    queue = _open(tmp_path / "queue")
    job_id = queue.submit_job([delay()])
    _log(queue, job_id, BIG).wait(10)
    _crash(queue)
    os.truncate(queue._logs.file_path(job_id), 3)
    queue = _open(tmp_path / "queue")
    try:
        assert queue.recovery.replay_problems == [
            "the log of job %d holds 3 bytes of the %d acknowledged" % (job_id, len(BIG))]
    finally:
        queue.shutdown()


def test_an_extent_is_not_journaled_before_its_log_is_synced(tmp_path):
    """The log's sync fails: its extent is refused (not in the journal) and not
    acknowledged; once the disk works the job is recorded again, its log's tail an extent
    again (synced first), and a crash then keeps the bytes."""
    queue = _open(tmp_path / "queue")
    job_id = queue.submit_job([delay()])
    queue.wait_durable(10)
    faults.inject("logs.sync", errno.EIO)
    with pytest.raises(errors.JobQueueError, match="Input/output error"):
        _log(queue, job_id, BIG).wait(10)
    assert not any(records.is_log_extent(p) for p in _journal(queue))
    assert queue.read_job_log(job_id, 0, 1 << 20)["data"] == b""
    deadline = time.monotonic() + 10
    while queue.read_job_log(job_id, 0, 1 << 20)["data"] != BIG:
        assert time.monotonic() < deadline, "the job was not recorded again"
        time.sleep(0.02)  # the journal probes the disk, then the queue re-records the job
    assert any(records.is_log_extent(p) for p in _journal(queue))
    _crash(queue)
    queue = _open(tmp_path / "queue")
    try:
        assert queue.read_job_log(job_id, 0, 1 << 20)["data"] == BIG
    finally:
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
