"""Tests of jqueue.retention and jqueue.store.purge: old jobs archived, then purged with
their logs, in bounded passes, the space really freed, replayed and replicated."""

import os
import threading
import time

import pytest
from conftest import FakeClock, delay, run_jobs
from fakes import SyncPool

from jqueue import errors
from jqueue.cluster.replica import Replica
from jqueue.queue import JobQueue
from jqueue.retention import Policy
from jqueue.store import journal, purge

HOUR, DAY = 3600.0, 86400.0


def du(*paths):
    """Bytes allocated under paths, as du counts them (files and directories)."""
    total = 0
    for path in paths:
        for directory, _, files in os.walk(path):
            total += os.lstat(directory).st_blocks * 512
            for name in files:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def empty_directories(path):
    return [d for d, dirs, files in os.walk(path) if not dirs and not files]


@pytest.fixture
def real_clock():
    """A fake clock starting now: archive files carry real mtimes."""
    return FakeClock(time.time())


def open_retained(tmp_path, clock, **policy):
    policy.setdefault("archive_after", 6 * HOUR)
    policy.setdefault("keep_archived", 21 * DAY)
    policy.setdefault("duty", 1.0)  # no rests, but in test_passes_rest_between_chunks
    return JobQueue(str(tmp_path / "queue"), pool_factory=SyncPool, checkpoint_interval=None,
                    clock=clock, retention=Policy(**policy))


def with_logs(queue, job_ids, size=8192):
    """Give finished jobs command logs (as the runner writes them: journaled chunks)."""
    with queue._lock:
        for job_id in job_ids:
            job = queue._jobs[job_id]
            queue._record_chunk_unlocked(job, 0, 0, 0, b"x" * size)
    queue.wait_durable(10)


def test_ten_thousand_jobs_are_archived_then_purged_and_the_space_freed(tmp_path, real_clock):
    """10,000 finished jobs: archived after 6 h, gone (files and logs) after 21 days, in
    passes of at most pass_jobs; du drops, no empty directory is left, and the next job
    id follows the purged ones."""
    queue = open_retained(tmp_path, real_clock, pass_jobs=4000, pass_scan=6000)
    try:
        ids = []
        for _ in range(10):
            ids += [job_id for _, job_id in queue.submit_many_jobs([[delay()]] * 1000)]
        run_jobs(queue)
        with_logs(queue, ids[:50])
        queue.checkpoint()
        before = du(tmp_path / "queue", tmp_path / "logs")
        real_clock.advance(6 * HOUR - 60)
        assert queue.retention_pass()["archived"] == 0
        real_clock.advance(120)
        reports = [queue.retention_pass() for _ in range(3)]
        assert [r["archived"] for r in reports] == [4000, 4000, 2000]
        assert [r["more"] for r in reports] == [True, True, False]
        queue.checkpoint()  # the files move
        archive = tmp_path / "queue" / "archive"
        assert (len(os.listdir(archive / "0")), len(os.listdir(archive / "1"))) == (9999, 1)
        real_clock.advance(20 * DAY)
        assert queue.retention_pass()["purged"] == 0  # not yet 21 days
        real_clock.advance(2 * DAY)
        purged = []
        while sum(purged) < 10000:
            report = queue.retention_pass()
            assert report["purged"] <= 4000
            purged.append(report["purged"])
        assert queue.retention_status()["totals"]["purged"] == 10000
        queue.checkpoint()
        after = du(tmp_path / "queue", tmp_path / "logs")
        assert after < before - 10000 * 512
        assert not os.path.exists(tmp_path / "queue" / "archive" / "0")
        assert empty_directories(tmp_path / "queue" / "archive") == [
            str(tmp_path / "queue" / "archive")]
        assert os.listdir(tmp_path / "logs") == []
        assert queue.query_jobs(ids[:3], ["id"]) == [None, None, None]
        assert queue.submit_job([delay()]) == 10001
    finally:
        queue.shutdown()
    queue = open_retained(tmp_path, real_clock)
    try:
        assert queue.query_jobs([1], ["id"]) == [None]
        assert queue.submit_job([delay()]) == 10002
    finally:
        queue.shutdown()


def test_zero_means_never(tmp_path, real_clock):
    """archive_after 0 and keep_archived 0: passes archive and purge nothing."""
    queue = open_retained(tmp_path, real_clock, archive_after=0, keep_archived=0)
    try:
        job_id = queue.submit_job([delay()])
        run_jobs(queue)
        real_clock.advance(365 * DAY)
        assert queue.retention_pass()["archived"] == 0
        assert queue.archive_job(job_id)
        assert queue.retention_pass()["purged"] == 0
        assert queue.query_jobs([job_id], ["archived"]) == [[True]]
    finally:
        queue.shutdown()


def test_a_changed_policy_rules_the_next_pass_and_the_passes_interval(tmp_path, real_clock):
    """change_retention (jq-masterd's reload): the next pass archives by the new age;
    passes run in a thread at the new interval (none without one), the old thread gone."""
    queue = open_retained(tmp_path, real_clock, archive_after=0, keep_archived=0)
    try:
        job_id = queue.submit_job([delay()])
        run_jobs(queue)
        real_clock.advance(2 * HOUR)
        assert queue.retention_pass()["archived"] == 0
        queue.change_retention(HOUR, 0, 0.05)
        assert queue.retention_status()["archive_after"] == HOUR
        deadline = time.monotonic() + 10  # the pass thread, every 0.05 s
        while queue.query_jobs([job_id], ["archived"]) != [[True]]:
            assert time.monotonic() < deadline, "no pass at the new interval"
            time.sleep(0.02)
        threads = [t for t in threading.enumerate() if t.name == "jq-retention"]
        assert len(threads) == 1
        queue.change_retention(HOUR, 0, None)
        threads[0].join(5)
        assert not any(t.name == "jq-retention" and t.is_alive()
                       for t in threading.enumerate())
        assert queue.retention_status()["interval"] is None
    finally:
        queue.shutdown()


def test_purge_now_removes_archived_jobs_older_than_an_age(tmp_path, real_clock):
    """purge_jobs(age) purges every archived job older than age now, logs too."""
    queue = open_retained(tmp_path, real_clock, archive_after=0, keep_archived=0)
    try:
        old = [queue.submit_job([delay()]) for _ in range(3)]
        run_jobs(queue)
        with_logs(queue, old)
        assert queue.auto_archive_jobs(-1, 60) == (3, 0)
        real_clock.advance(2 * DAY)
        young = queue.submit_job([delay()])
        run_jobs(queue)
        os.utime(tmp_path / "queue" / "archive" / "0" / "job-2", (real_clock.now,) * 2)
        result = queue.purge_jobs(DAY)
        assert result["purged"] == 2 and result["done"] and result["bytes_freed"] > 2 * 8192
        assert queue.query_jobs(old + [young], ["id"]) == [None, [2], None, [young]]
        assert sorted(os.listdir(tmp_path / "logs")) == ["2.log"]
        with pytest.raises(errors.OpPrereqError):
            queue.purge_jobs(-1)
    finally:
        queue.shutdown()


def test_a_journaled_purge_is_carried_out_when_the_queue_opens(tmp_path, real_clock,
                                                               monkeypatch):
    """If the files are still there after a purge record (a crash between the two), the
    next opening removes them: the journal says they are gone."""
    queue = open_retained(tmp_path, real_clock, archive_after=0, keep_archived=0)
    job_id = queue.submit_job([delay()])
    run_jobs(queue)
    with_logs(queue, [job_id])
    queue.archive_job(job_id)
    monkeypatch.setattr(purge, "remove_archived", lambda *args: 0)
    queue.purge_archived([job_id])
    assert os.path.exists(tmp_path / "queue" / "archive" / "0" / "job-1")
    monkeypatch.undo()
    queue._journal.close()  # the crash: no checkpoint, the journal stays
    queue._dir.unlock()
    queue = open_retained(tmp_path, real_clock)
    try:
        assert not os.path.exists(tmp_path / "queue" / "archive" / "0")
        assert os.listdir(tmp_path / "logs") == []
        assert queue.submit_job([delay()]) == 2
    finally:
        queue.shutdown()


def test_a_replica_purges_what_the_master_purged(tmp_path, real_clock):
    """Applying the master's records, a replica removes the purged jobs' files, logs and
    emptied archive directories at its checkpoint, and no longer lists them."""
    queue = open_retained(tmp_path, real_clock, archive_after=0, keep_archived=0)
    ids = [queue.submit_job([delay()]) for _ in range(3)]
    run_jobs(queue)
    with_logs(queue, ids)
    queue.auto_archive_jobs(-1, 60)
    real_clock.advance(DAY)
    queue.purge_jobs(0)
    queue.wait_durable(10)
    payloads = journal.read_records(str(tmp_path / "queue" / "journal"))[0]
    queue.shutdown()
    replica = Replica(str(tmp_path / "replica" / "queue"), pool_factory=None,
                      checkpoint_interval=None)
    try:
        replica.apply_batch(0, 0, 1, len(payloads) - 1, payloads[:-1])  # up to the purge
        replica.queue.checkpoint()
        assert len(os.listdir(tmp_path / "replica" / "queue" / "archive" / "0")) == 3
        assert len(os.listdir(tmp_path / "replica" / "logs")) == 3
        replica.apply_batch(0, 0, len(payloads), len(payloads), payloads[-1:])
        assert replica.digests()["archived"] == []
        replica.queue.checkpoint()
        assert not os.path.exists(tmp_path / "replica" / "queue" / "archive" / "0")
        assert os.listdir(tmp_path / "replica" / "logs") == []
        assert replica.queue._serial == 3
    finally:
        replica.close()


def test_scans_are_bounded_and_go_on_from_their_cursor(tmp_path, real_clock):
    """A scan examines at most limit files and the next one starts where it stopped."""
    queue = open_retained(tmp_path, real_clock, archive_after=0, keep_archived=0)
    try:
        queue.submit_many_jobs([[delay()]] * 5)
        run_jobs(queue)
        queue.auto_archive_jobs(-1, 60)
        cutoff = time.time() + 10
        first = purge.scan_archive(queue._dir, cutoff, limit=2)
        second = purge.scan_archive(queue._dir, cutoff, first.cursor, limit=2)
        third = purge.scan_archive(queue._dir, cutoff, second.cursor, limit=2)
        assert (first.ids, second.ids, third.ids) == ([1, 2], [3, 4], [5])
        assert not first.wrapped and third.wrapped and third.cursor is None
        assert purge.scan_archive(queue._dir, 0).ids == []  # none older than 1970
    finally:
        queue.shutdown()


class _Rests:
    """Stands for Retention's stop event: records the rests asked for, returns at once."""

    def __init__(self):
        self.asked = []

    def wait(self, seconds):
        self.asked.append(seconds)
        return False

    def set(self):
        pass


def test_passes_rest_between_chunks_for_their_duty(tmp_path, real_clock):
    """duty 0.25: after each chunk of archival (1,000 jobs) and each purge slice, a pass
    rests; a pass walks the finished jobs only (the 3,000 scheduled ones cost it no
    chunk); jqctl purge does not rest; a bad duty is refused."""
    queue = open_retained(tmp_path, real_clock, duty=0.25)
    try:
        rests = queue._retention._stopping = _Rests()
        scheduled = queue.submit_many_jobs([[delay()]] * 3000,
                                           options=[{"start_in": 1000 * DAY}] * 3000)
        queue.submit_many_jobs([[delay()]] * 2500)
        run_jobs(queue)
        real_clock.advance(7 * HOUR)
        assert queue.retention_pass()["archived"] == 2500
        assert len(rests.asked) == 2  # between the 3 chunks
        assert queue.query_jobs([scheduled[0][1]], ["status"]) == [["queued"]]
        queue.checkpoint()
        real_clock.advance(22 * DAY)
        rests = queue._retention._stopping = _Rests()
        assert queue.retention_pass()["purged"] == 2500
        assert len(rests.asked) == 2  # between the 3 slices
        queue.submit_many_jobs([[delay()]] * 1500)
        run_jobs(queue)
        real_clock.advance(7 * HOUR)
        assert queue.retention_pass()["archived"] == 1500
        queue.checkpoint()
        real_clock.advance(22 * DAY)
        rests = queue._retention._stopping = _Rests()
        assert queue.purge_jobs(21 * DAY)["purged"] == 1500  # asked for now: no rest
        assert rests.asked == []
    finally:
        queue.shutdown()
    with pytest.raises(ValueError, match="duty"):
        Policy(duty=0)


def test_a_rest_is_three_times_the_work_at_a_quarter_duty(tmp_path, real_clock):
    """A rest is (1 / duty - 1) times the processor time the pass's thread spent since
    its last rest: time spent waiting (for a lock, the disk) is no work; duty 1 never
    waits."""
    queue = open_retained(tmp_path, real_clock, duty=0.25)
    try:
        retention = queue._retention
        rests = retention._stopping = _Rests()
        retention._worked_from = time.thread_time()
        burn_until = time.thread_time() + 0.2
        while time.thread_time() < burn_until:
            pass
        time.sleep(0.3)  # waiting: not counted
        retention._rest()
        (asked,) = rests.asked
        assert 0.6 <= asked < 0.75
        retention.policy.duty = 1.0
        retention._rest()
        assert rests.asked == [asked]
    finally:
        queue.shutdown()
