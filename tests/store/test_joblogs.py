"""Command logs of a queue that replicates to no one: the journal records extents of the
log files (where the bytes are), each file synced before its extents are durable."""

import errno
import os
import time

import pytest
from conftest import crash, delay
from fakes import SyncPool

from jqueue import constants, errors
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
    crash(queue)


def _log(queue, job_id, data):
    with queue._lock:
        return queue._record_chunk_unlocked(queue._jobs[job_id], 0, 0, 0, data)


def _log_after_reopening(path, job_id):
    """job_id's whole log as the queue at path reads it once opened again."""
    queue = _open(path)
    try:
        return queue.read_job_log(job_id, 0, 1 << 20)["data"]
    finally:
        queue.shutdown()


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


@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC])
def test_a_failed_log_sync_is_fatal_and_the_replay_cuts_the_unsynced_bytes(tmp_path, error):
    """The log's sync fails: its extent is not journaled nor acknowledged, and, as for the
    journal's own sync, the queue refuses every change from then on (a sync that failed
    may have dropped the bytes while a later one reports success: it is never retried).
    The replay after the restart cuts the log back to its acknowledged bytes, for its
    writer to send the rest again."""
    fatal = []
    queue = JobQueue(str(tmp_path / "queue"), pool_factory=SyncPool, checkpoint_interval=None,
                     retry_interval=0.05, on_fatal=fatal.append)
    job_id = queue.submit_job([delay()])
    _log(queue, job_id, b"small\n").wait(10)
    faults.inject("logs.sync", error)
    with pytest.raises(errors.JobQueueError, match=os.strerror(error)):
        _log(queue, job_id, BIG).wait(10)
    assert not any(records.is_log_extent(p) for p in _journal(queue))
    assert [type(e) for e in fatal] == [errors.DiskSyncError]
    assert "cannot sync the logs" in str(fatal[0])
    time.sleep(0.2)  # several probe intervals: nothing is written again
    with pytest.raises(errors.JobQueueError, match="sync"):
        queue.submit_job([delay()])
    assert queue.read_job_log(job_id, 0, 1 << 20)["data"] == b"small\n"
    _crash(queue)
    queue = _open(tmp_path / "queue")
    try:
        assert queue.read_job_log(job_id, 0, 1 << 20)["data"] == b"small\n"
        assert os.path.getsize(queue._logs.file_path(job_id)) == len(b"small\n")
        _log(queue, job_id, BIG).wait(10)
        assert queue.read_job_log(job_id, 0, 1 << 20)["data"] == b"small\n" + BIG
    finally:
        queue.shutdown()


def test_a_queue_closed_after_a_failed_sync_closes_its_logs_without_syncing_them(tmp_path):
    """Closing a queue whose sync failed writes and syncs nothing more, but closes the
    logs' descriptors and the lock: the same process opens it again (a candidate's
    jq-noded does so with its replica), and the replay finds the acknowledged bytes."""
    queue = JobQueue(str(tmp_path / "queue"), pool_factory=SyncPool, checkpoint_interval=None,
                     on_fatal=lambda error: None)
    job_id = queue.submit_job([delay()])
    _log(queue, job_id, b"small\n").wait(10)
    faults.inject("logs.sync", errno.EIO)
    with pytest.raises(errors.JobQueueError):
        _log(queue, job_id, BIG).wait(10)
    faults.inject("logs.sync", errno.EIO)  # a sync at the close would raise again
    with pytest.raises(errors.DiskSyncError, match="closed without a checkpoint"):
        queue.shutdown()
    assert faults.armed("logs.sync") and queue._logs._fds == {}
    faults.clear()
    assert _log_after_reopening(tmp_path / "queue", job_id) == b"small\n"


def test_a_failed_log_sync_at_a_checkpoint_is_fatal(tmp_path):
    """The checkpoint's sync of the logs fails: fatal as its sync of the queue's files is,
    and the journal is kept (the restart replays it)."""
    fatal = []
    queue = JobQueue(str(tmp_path / "queue"), pool_factory=SyncPool, checkpoint_interval=None,
                     on_fatal=fatal.append)
    job_id = queue.submit_job([delay()])
    _log(queue, job_id, b"small\n").wait(10)
    faults.inject("logs.sync", errno.EIO)
    with pytest.raises(errors.DiskSyncError, match="cannot sync the logs"):
        queue.checkpoint()
    assert [type(e) for e in fatal] == [errors.DiskSyncError]
    old, _ = journal.read_records(os.path.join(queue._dir.path, constants.JOURNAL_OLD_FILE))
    assert any(records.is_log_chunk(p) for p in old)  # kept for the replay
    _crash(queue)
    assert _log_after_reopening(tmp_path / "queue", job_id) == b"small\n"


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


def test_a_checkpoint_leaves_short_logs_to_the_sync_of_the_queue_file_system(tmp_path,
                                                                            monkeypatch):
    """The checkpoint syncs the queue's file system whole (syncfs) after the logs: a log
    on it is not synced alone before, unless long enough to have its cache dropped; the
    syncfs comes after, and the journal that held the bytes goes only then."""
    calls = []
    real_sync_path, real_syncfs = joblogs._sync_path, joblogs.fsutil.syncfs
    monkeypatch.setattr(joblogs, "_sync_path", lambda path: (
        calls.append(("log", os.path.basename(path))), real_sync_path(path)))
    monkeypatch.setattr(joblogs.fsutil, "syncfs", lambda *args: (
        calls.append(("syncfs",)), real_syncfs(*args)))
    queue = JobQueue(str(tmp_path / "queue"), pool_factory=SyncPool, checkpoint_interval=None)
    try:
        short, long_ = queue.submit_job([delay()]), queue.submit_job([delay()])
        _log(queue, short, b"small\n").wait(10)
        queue.wait_durable(10)
        with queue._lock:  # written as a replica's chunks are: synced by the checkpoint
            queue._logs.write(long_, 0, b"y" * (joblogs.CACHED_TAIL + 1))
        queue.checkpoint()
        assert ("log", "%d.log" % short) not in calls
        assert calls.index(("log", "%d.log" % long_)) < calls.index(("syncfs",))
        old, _ = journal.read_records(os.path.join(queue._dir.path, constants.JOURNAL_OLD_FILE))
        assert not any(records.is_log_chunk(p) for p in old)
        calls.clear()
        queue.checkpoint()  # nothing left to sync alone
        assert [c for c in calls if c[0] == "log"] == []
    finally:
        queue.shutdown()
    assert _log_after_reopening(tmp_path / "queue", short) == b"small\n"


def test_logs_on_another_file_system_are_synced_one_by_one(tmp_path, monkeypatch):
    """A logs directory the queue's syncfs does not reach (here tmpfs) has every log
    synced by itself."""
    other = "/dev/shm"
    assert os.stat(other).st_dev != os.stat(tmp_path).st_dev
    synced = []
    monkeypatch.setattr(joblogs, "_sync_path", synced.append)
    logs = joblogs.LogStore(str(tmp_path / "logs"))
    logs.write(1, 0, b"x" * 1000)
    logs.write(2, 0, b"y" * 1000)
    logs.sync(then_syncfs=other)
    assert sorted(os.path.basename(p) for p in synced) == ["1.log", "2.log"]
    synced.clear()
    logs.write(3, 0, b"z")
    logs.sync(then_syncfs=str(tmp_path))
    assert synced == []
    logs.close(sync=False)


def test_the_log_of_an_ended_job_is_closed_and_still_synced_and_written(tmp_path,
                                                                          monkeypatch):
    """written(job) closes the log's descriptor (a job that ended writes no more); its
    bytes still become durable at the next sync, and a write after all opens it again."""
    store = joblogs.LogStore(str(tmp_path / "logs"))
    store.write(1, 0, b"* start\n")
    store.write(2, 0, b"* start\n")
    store.written(1)
    store.written(3)  # never opened: nothing
    assert list(store._fds) == [2]
    synced = []
    monkeypatch.setattr(joblogs, "_sync_path", synced.append)
    store.sync()
    assert sorted(synced) == [store.file_path(1), store.file_path(2)]
    store.write(1, 8, b"* end\n")
    assert sorted(store._fds) == [1, 2] and store.read(1, 0, 100) == b"* start\n* end\n"
    store.close()


def test_the_logs_of_a_burst_stay_open_within_a_share_of_the_descriptor_limit(tmp_path,
                                                                           monkeypatch):
    """A burst's 200 logs, each written at its job's start and at its end, are opened once
    each; the descriptors kept are at most an eighth of the soft RLIMIT_NOFILE."""
    store = joblogs.LogStore(str(tmp_path / "logs"))
    opened = []
    real_open = os.open
    monkeypatch.setattr(joblogs.os, "open", lambda path, *args: opened.append(path) or
                        real_open(path, *args))
    for job in range(200):
        store.write(job, 0, b"* start\n")
    for job in range(200):
        store.write(job, 8, b"* end\n")
    monkeypatch.undo()
    assert len(opened) == 200 and len(store._fds) == 200
    monkeypatch.setattr(joblogs.resource, "getrlimit", lambda which: (160, 4096))
    store.write(200, 0, b"* start\n")
    assert len(store._fds) == 160 // joblogs.NOFILE_SHARE
    store.close()
    assert all(store.size(job) == 14 for job in range(200))
