"""Tests of jqueue.store.queuedir: the queue directory contract."""

import errno
import os
import subprocess
import sys

import pytest

from jqueue import errors
from jqueue.store import queuedir


def test_job_file_names_are_strict():
    """Only job-<digits> names are job files."""
    assert queuedir.parse_job_file_name("job-42") == 42
    for name in ("job-", "job--1", "job-1.tmp", ".job-1.tmp", "job-1 ", "xjob-1", "job-a",
                 "job-" + "9" * 20):
        assert queuedir.parse_job_file_name(name) is None


def test_hostile_ids_are_parameter_errors():
    """A hostile job id is refused with ParameterError before any path is built."""
    for bad in ("../1", "-1", 1.5, "1 ", 10 ** 30):
        with pytest.raises(errors.ParameterError, match="invalid job id"):
            queuedir.parse_job_id(bad)


def test_paths_follow_ganeti_layout(tmp_path):
    """Live and archived job paths follow <queue>/job-N and archive/<N // 10000>/job-N."""
    qdir = queuedir.QueueDir(str(tmp_path))
    assert qdir.job_path(7) == str(tmp_path / "job-7")
    assert qdir.archive_path(123456) == str(tmp_path / "archive" / "12" / "job-123456")


def test_new_queue_gets_version_file(tmp_path):
    """A new queue directory is created with version 1."""
    qdir = queuedir.QueueDir(str(tmp_path / "q"))
    qdir.ensure_layout()
    assert (tmp_path / "q" / "version").read_text() == "1\n"


def test_unknown_version_refuses_to_open(tmp_path):
    """A queue of another format version is refused, naming the version."""
    (tmp_path / "version").write_text("2\n")
    with pytest.raises(errors.JobQueueError, match="version '2'"):
        queuedir.QueueDir(str(tmp_path)).ensure_layout()


def test_job_files_without_version_are_refused(tmp_path):
    """A directory with job files but no version file is not silently adopted."""
    (tmp_path / "job-1").write_text("{}")
    with pytest.raises(errors.JobQueueError, match="no version file"):
        queuedir.QueueDir(str(tmp_path)).ensure_layout()


def test_second_locker_is_told_the_holder_pid(tmp_path):
    """Locking a queue held by another process fails at once naming that PID."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from jqueue.store import queuedir\n"
         "q = queuedir.QueueDir(sys.argv[1]); q.lock(); print('locked', flush=True)\n"
         "time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(errors.JobQueueError, match="locked by PID %d" % holder.pid):
            queuedir.QueueDir(str(tmp_path)).lock()
    finally:
        holder.kill()
        holder.wait()
    queuedir.QueueDir(str(tmp_path)).lock()


def test_drain_flag_is_a_file(tmp_path):
    """The drain flag exists exactly while the drain file exists."""
    qdir = queuedir.QueueDir(str(tmp_path))
    qdir.set_drain_flag(True)
    assert (tmp_path / "drain").exists() and qdir.drain_flag()
    qdir.set_drain_flag(False)
    assert not (tmp_path / "drain").exists() and not qdir.drain_flag()


def test_serial_file_round_trip_and_garbage(tmp_path):
    """The serial file holds decimal text; garbage reads as 0 (ids come from disk then)."""
    qdir = queuedir.QueueDir(str(tmp_path))
    assert qdir.read_serial() == 0
    qdir.write_serial(17)
    assert (tmp_path / "serial").read_text() == "17\n" and qdir.read_serial() == 17
    (tmp_path / "serial").write_text("garbage")
    assert qdir.read_serial() == 0


def test_set_aside_never_overwrites(tmp_path):
    """Setting aside the same job id twice keeps both files."""
    qdir = queuedir.QueueDir(str(tmp_path))
    for content in ("first", "second"):
        (tmp_path / "job-3").write_text(content)
        qdir.set_aside(3, "test")
    assert sorted(os.listdir(tmp_path / "corrupt")) == ["job-3", "job-3.1"]
    assert qdir.corrupt_job_ids() == [3, 3]


def test_archive_moves_or_writes_the_file(tmp_path):
    """Archiving renames the live file, or writes given data and removes the live file."""
    qdir = queuedir.QueueDir(str(tmp_path))
    (tmp_path / "job-1").write_text("one")
    qdir.archive_job(1)
    (tmp_path / "job-2").write_text("stale")
    qdir.archive_job(2, b"fresh")
    assert (tmp_path / "archive" / "0" / "job-1").read_text() == "one"
    assert (tmp_path / "archive" / "0" / "job-2").read_text() == "fresh"
    assert qdir.live_job_ids() == [] and sorted(qdir.archived_job_ids()) == [1, 2]


@pytest.mark.parametrize("cold", [False, True])
def test_live_job_files_are_read_whole_from_the_cache_or_by_threads(tmp_path, monkeypatch,
                                                                   cold):
    """Every live job file not skipped is read whole (one of over 64 KiB too), an unreadable
    one as its error; by the calling thread, or by a pool once reads are slow (cold)."""
    monkeypatch.setattr(queuedir, "_PROBE_FILES", 3)
    if cold:
        monkeypatch.setattr(queuedir, "_WARM_SECONDS_PER_FILE", 0)
    qdir = queuedir.QueueDir(tmp_path)
    qdir.ensure_layout()
    contents = {job_id: b"{%d}" % job_id for job_id in range(1, 12)}
    contents[4] = b"x" * (200 * 1024 + 7)
    for job_id, data in contents.items():
        with open(qdir.job_path(job_id), "wb") as handle:
            handle.write(data)
    os.mkdir(qdir.job_path(12))  # read() of a directory: EISDIR
    got = dict(qdir.read_live_jobs(skip={7}))
    assert isinstance(got.pop(12), IsADirectoryError)
    del contents[7]
    assert got == contents


def _spares(root):
    return sorted(os.listdir(root / queuedir.SPARES_DIR))


def test_a_replaced_job_file_is_written_again_for_the_next_job(tmp_path):
    """A rewrite keeps the replaced file's inode as a spare; the next write takes it, cut to
    the new content's size, so that no inode is freed nor taken (ext4 without a journal)."""
    qdir = queuedir.QueueDir(str(tmp_path))
    qdir.lock()
    qdir.write_job(1, b"x" * 5000)
    first = os.stat(tmp_path / "job-1").st_ino
    qdir.write_job(1, b"one")
    assert (tmp_path / "job-1").read_bytes() == b"one"
    assert [os.stat(tmp_path / ".spares" / n).st_ino for n in _spares(tmp_path)] == [first]
    qdir.write_job(2, b"two")
    assert os.stat(tmp_path / "job-2").st_ino == first
    assert (tmp_path / "job-2").read_bytes() == b"two"
    assert (tmp_path / "job-1").read_bytes() == b"one"
    assert _spares(tmp_path) == [] and sorted(qdir.live_job_ids()) == [1, 2]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_new_jobs_first_file_tries_no_link_and_keeps_nothing(tmp_path, monkeypatch):
    """write_job(new=True), a job's first file: no link to a spare is tried (there is no
    file to keep); a rewrite still keeps the file it replaces."""
    qdir = queuedir.QueueDir(str(tmp_path))
    qdir.lock()
    links = []
    real_link = os.link
    monkeypatch.setattr(queuedir.os, "link", lambda *a, **k: (links.append(a),
                                                             real_link(*a, **k))[1])
    qdir.write_job(1, b"first", new=True)
    assert (tmp_path / "job-1").read_bytes() == b"first" and links == []
    assert _spares(tmp_path) == []
    qdir.write_job(1, b"again")
    assert (tmp_path / "job-1").read_bytes() == b"again"
    assert len(links) == 1 and len(_spares(tmp_path)) == 1
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_spares_left_by_the_last_owner_are_taken_unless_another_name_holds_them(tmp_path):
    """At the lock, spares are taken up to SPARES_MAX; one that still has another name (a
    crash between the link and the rename) is removed, never written, and names that are
    not spares' are left alone."""
    qdir = queuedir.QueueDir(str(tmp_path))
    qdir.lock()
    qdir.write_job(1, b"keep")
    spares = tmp_path / ".spares"
    os.link(tmp_path / "job-1", spares / "7")
    for name in ("3", "4"):
        (spares / name).write_bytes(b"old")
    (spares / "notes").write_text("mine")
    qdir.unlock()
    again = queuedir.QueueDir(str(tmp_path))
    again.lock()
    assert _spares(tmp_path) == ["3", "4", "notes"]
    inodes = {os.stat(spares / n).st_ino for n in ("3", "4")}
    for job_id in (2, 3, 4):
        again.write_job(job_id, b"job %d" % job_id)
    assert (tmp_path / "job-1").read_bytes() == b"keep"
    assert {os.stat(tmp_path / ("job-%d" % i)).st_ino for i in (2, 3)} == inodes
    assert sorted(again.live_job_ids()) == [1, 2, 3, 4]
    assert (spares / "notes").read_text() == "mine"


def test_spares_over_their_bound_are_removed_at_the_lock(tmp_path, monkeypatch):
    """At most SPARES_MAX spares are kept from the last owner; the others are freed."""
    monkeypatch.setattr(queuedir, "SPARES_MAX", 2)
    (tmp_path / ".spares").mkdir()
    for name in ("1", "2", "3"):
        (tmp_path / ".spares" / name).write_bytes(b"old")
    qdir = queuedir.QueueDir(str(tmp_path))
    qdir.lock()
    assert len(_spares(tmp_path)) == 2
    for job_id in (1, 2, 3):
        qdir.write_job(job_id, b"v1")
    assert _spares(tmp_path) == []
    assert all((tmp_path / ("job-%d" % i)).read_bytes() == b"v1" for i in (1, 2, 3))


def test_a_failed_write_or_rename_leaves_the_job_file_and_no_second_name(tmp_path,
                                                                         monkeypatch):
    """A write into a spare that fails puts it back; a rename that fails removes the link
    made to keep the old file, so no spare ever shares an inode with a job file."""
    qdir = queuedir.QueueDir(str(tmp_path))
    qdir.lock()
    qdir.write_job(1, b"one")
    qdir.write_job(1, b"one again")  # a spare now
    qdir.write_job(2, b"two")        # took it; job-1's old file is free

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    qdir.write_job(2, b"two again")  # a spare again
    monkeypatch.setattr(queuedir.fsutil, "write_all", full)
    with pytest.raises(OSError):
        qdir.write_job(1, b"lost")
    monkeypatch.undo()
    assert (tmp_path / "job-1").read_bytes() == b"one again"
    assert len(_spares(tmp_path)) == 1

    real_rename = os.rename

    def refused(src, dst):
        if dst == qdir.job_path(2):
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(queuedir.os, "rename", refused)
    with pytest.raises(OSError):
        qdir.write_job(2, b"lost")
    monkeypatch.undo()
    assert (tmp_path / "job-2").read_bytes() == b"two again"
    assert os.stat(tmp_path / "job-2").st_nlink == 1
    for job_id in (3, 4, 5):
        qdir.write_job(job_id, b"new")
    assert (tmp_path / "job-1").read_bytes() == b"one again"
    assert (tmp_path / "job-2").read_bytes() == b"two again"


def test_the_lock_holder_syncs_without_opening_a_descriptor(tmp_path, monkeypatch):
    """sync() goes through the directory descriptor the lock's holder keeps: with every
    descriptor taken it still syncs (a failure there fails the queue for good)."""
    qdir = queuedir.QueueDir(str(tmp_path))
    qdir.lock()
    qdir.write_job(1, b"one")

    def no_descriptors(*args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    monkeypatch.setattr(os, "open", no_descriptors)
    qdir.sync()
    monkeypatch.undo()
    qdir.unlock()
