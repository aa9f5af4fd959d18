"""Tests of jqueue.store.journal: framing, group commit, rotation, tolerant reading."""

import errno
import os
import threading
import time

import pytest

from jqueue import errors
from jqueue.cluster import replication
from jqueue.store import faults, journal


def _open(tmp_path, **kwargs):
    return journal.Journal(str(tmp_path), **kwargs)


def test_appended_records_are_read_back_in_order(tmp_path):
    """Every record appended and waited for is read back, in append order."""
    jnl = _open(tmp_path)
    batches = [jnl.append(b"record %d" % i) for i in range(100)]
    batches[-1].wait(5)
    jnl.close()
    payloads, report = journal.read_records(str(tmp_path / "journal"))
    assert payloads == [b"record %d" % i for i in range(100)]
    assert report.clean and report.records == 100


def test_concurrent_appenders_share_syncs(tmp_path):
    """Records appended by many threads at once need far fewer syncs than records."""
    jnl = _open(tmp_path)
    start = threading.Barrier(16)

    def writer(n):
        start.wait()
        for i in range(50):
            jnl.append(b"w%d-%d" % (n, i)).wait(10)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = dict(jnl.stats)
    jnl.close()
    assert stats["records"] == 800
    assert stats["syncs"] < 800


def test_durability_listener_gets_tags_before_waiters_wake(tmp_path):
    """The listener sees a batch's tags before anyone waiting on the batch returns."""
    seen = []
    jnl = _open(tmp_path, on_durable=seen.extend)
    batch = jnl.append(b"a", tag="A")
    jnl.append(b"b")
    batch = jnl.append(b"c", tag="C")
    batch.wait(5)
    assert seen == ["A", "C"]
    jnl.close()


def test_replication_failure_fails_waiters_but_not_the_journal(tmp_path):
    """A ReplicationError reaches the batch's waiters; later records still commit.

    The hook receives the records framed as they are in the journal.
    """
    calls = []

    def replicate(payloads):
        calls.append(payloads)
        if len(calls) == 1:
            raise errors.ReplicationError("only 1 of 2 copies")

    jnl = _open(tmp_path, replicate=replicate)
    with pytest.raises(errors.ReplicationError):
        jnl.append(b"first").wait(5)
    jnl.append(b"second").wait(5)
    jnl.close()
    assert calls == [[journal.frame(b"first")], [journal.frame(b"second")]]


def test_commit_here_writes_and_finishes_in_the_calling_thread(tmp_path):
    """Deferred records stay unwritten until commit_here, which syncs them and runs the
    batch's callbacks and the durability listener in the caller's thread."""
    seen = []
    jnl = _open(tmp_path, on_durable=lambda tags: seen.append(
        (tags, threading.get_ident())))
    jnl.append(b"zero").wait(5)
    time.sleep(0.2)  # the committer is back waiting (a deferred record does not wake it)
    seen.clear()
    batch = jnl.append_all([(b"one", "T1"), (b"two", "T2")], defer=True)
    done_in = []
    batch.add_done_callback(lambda b: done_in.append(threading.get_ident()))
    assert not batch.written.wait(0.2)  # the committer was not woken
    jnl.commit_here()
    me = threading.get_ident()
    assert batch.done.is_set() and batch.error is None
    assert seen == [(["T1", "T2"], me)] and done_in == [me]
    jnl.close()
    assert _good_records(tmp_path / "journal") == [b"zero", b"one", b"two"]


def test_an_event_loop_commits_its_own_appends_once_per_turn(tmp_path):
    """After commit_in_loop, the loop thread's appends wake no committer: the first of a
    turn schedules one commit, run in the loop's thread, which writes them all with one
    sync; another thread's append wakes the committer as before."""
    scheduled, seen = [], []
    jnl = _open(tmp_path, on_durable=lambda tags: seen.append((tags, threading.get_ident())))
    jnl.append(b"zero").wait(5)
    time.sleep(0.2)  # the committer is back waiting
    seen.clear()
    jnl.commit_in_loop(scheduled.append)
    one = jnl.append(b"one", tag="T1")
    two = jnl.append(b"two", tag="T2")
    time.sleep(0.2)
    assert len(scheduled) == 1 and not one.written.is_set()  # the committer was not woken
    syncs = jnl.stats["syncs"]
    scheduled.pop()()
    assert one.done.is_set() and two.done.is_set() and jnl.stats["syncs"] == syncs + 1
    assert seen == [(["T1", "T2"], threading.get_ident())]
    other = []
    thread = threading.Thread(target=lambda: other.append(jnl.append(b"three")))
    thread.start()
    thread.join()
    other[0].wait(5)
    assert scheduled == []
    jnl.close()
    assert _good_records(tmp_path / "journal") == [b"zero", b"one", b"two", b"three"]


def test_a_wait_in_the_loop_s_thread_commits_what_it_appended_first(tmp_path):
    """The loop's turn cannot end while it waits for a batch: the wait commits first,
    whichever event it waits on, instead of waiting for ever."""
    scheduled = []
    jnl = _open(tmp_path)
    jnl.commit_in_loop(scheduled.append)
    jnl.append(b"one").wait(5)
    assert jnl.append(b"two").written.wait(5)
    for commit in scheduled:  # the turn's end: nothing left
        commit()
    jnl.close()
    assert _good_records(tmp_path / "journal") == [b"one", b"two"]


def test_a_batchs_flags_wake_every_waiter_however_set_and_wait_interleave():
    """A batch's done and written flags make their Event only for a waiter that comes
    before them: a wait after the set returns at once, one before it is woken, and of
    hundreds of waits racing their sets none is lost; a wait that times out says so."""
    flag = journal._Awaited(None)
    assert not flag.wait(0.01) and not flag.is_set()
    flag.set()
    assert flag.is_set() and flag.wait(0) and flag.wait()
    flags = [journal._Awaited(None) for _ in range(300)]
    woken = []

    def waiter(flag):
        woken.append(flag.wait(10))

    threads = [threading.Thread(target=waiter, args=(flag,)) for flag in flags]
    for index, (flag, thread) in enumerate(zip(flags, threads)):
        if index % 2:
            thread.start()
            flag.set()
        else:
            flag.set()
            thread.start()
    for thread in threads:
        thread.join(15)
    assert woken == [True] * len(flags)


def test_the_loop_leaves_records_whose_files_need_a_sync_to_the_committer(tmp_path):
    """A record with presync (a command log's piece: its file is synced first) is not
    written in the loop's thread: the loop's commit wakes the committer for it."""
    synced = []
    jnl = _open(tmp_path, before_write=lambda ids: synced.append(
        (ids, threading.get_ident())))
    scheduled = []
    jnl.commit_in_loop(scheduled.append)
    batch = jnl.append(b"extent", presync=7)
    scheduled.pop()()
    deadline = time.monotonic() + 5
    while not batch.done.is_set() and time.monotonic() < deadline:  # (a wait would commit)
        time.sleep(0.01)
    assert synced and synced[0][0] == {7} and synced[0][1] != threading.get_ident()
    jnl.close()


def _hold_the_write_of(payload, monkeypatch):
    """Make the committer's write of the record payload wait: (entered, release), events
    set once it waits and to let it go on."""
    entered, release = threading.Event(), threading.Event()
    real_flush = journal.Journal._flush

    def slow_flush(self, frames, *args):
        if frames == [journal.frame(payload)]:
            entered.set()
            release.wait(5)
        return real_flush(self, frames, *args)

    monkeypatch.setattr(journal.Journal, "_flush", slow_flush)
    return entered, release


def test_commit_here_tells_its_caller_first_of_the_batches_it_made_durable(tmp_path):
    """durable_here hears of the batches commit_here made durable in the caller's thread,
    before the durability listener and the batches' callbacks do (the daemon sends their
    answers from it)."""
    order = []
    jnl = _open(tmp_path, on_durable=lambda tags: order.append(("listener", tags)))
    batch = jnl.append_all([(b"one", "T1"), (b"two", "T2")], defer=True)
    batch.add_done_callback(lambda b: order.append(("callback", b.error)))
    me = threading.get_ident()
    jnl.commit_here(lambda batches: order.append(
        ("here", batches, threading.get_ident(), batch.written.is_set(), batch.done.is_set())))
    assert order == [("here", [batch], me, True, False), ("listener", ["T1", "T2"]),
                     ("callback", None)]
    jnl.close()


def test_durable_here_hears_only_of_what_its_own_commit_finished(tmp_path, failpoints,
                                                                 monkeypatch):
    """Nothing for a write the disk refused, for records the committer took (the journal
    busy), or for a batch left waiting for a candidate's acknowledgement."""
    heard = []
    (tmp_path / "refused").mkdir()
    jnl = _open(tmp_path / "refused", retry_interval=60)
    failpoints.inject("journal.write", errno.ENOSPC, times=1)
    refused = jnl.append_all([(b"refused", None)], defer=True)
    jnl.commit_here(heard.append)
    assert refused.refused and heard == []
    jnl.close()

    entered, release = _hold_the_write_of(b"first", monkeypatch)
    (tmp_path / "busy").mkdir()
    jnl = _open(tmp_path / "busy")
    jnl.append(b"first")
    assert entered.wait(5)
    second = jnl.append_all([(b"second", None)], defer=True)
    jnl.commit_here(heard.append)  # the committer holds the file: it takes the record
    release.set()
    second.wait(5)
    assert heard == []
    jnl.close()

    ticket = replication.Ticket(None, 1, 1)  # one candidate's acknowledgement required
    (tmp_path / "cluster").mkdir()
    jnl = _open(tmp_path / "cluster", replicate=lambda frames: ticket)
    waiting = jnl.append_all([(b"one", "T1")], defer=True)
    jnl.commit_here(heard.append)
    assert waiting.written.is_set() and heard == []
    ticket.ack("c1")
    assert waiting.done.wait(5) and heard == []
    jnl.close()


def _done_ticket(error):
    """A cluster's replication ticket that needs nothing more (its outcome: error)."""
    if error is None:
        return replication.Ticket(None, 1, 0)  # no candidate required
    ticket = replication.Ticket(None, 1, 1)
    ticket.fail(error)
    return ticket


@pytest.mark.parametrize("error", [None, errors.ReplicationError("refused by the policy")])
def test_a_batch_already_acknowledged_finishes_in_the_committing_thread(tmp_path, error):
    """A ticket that needs nothing more (no candidate required, or acknowledged during the
    local sync) finishes its batch in commit_here's thread, with the ticket's outcome,
    instead of going through the completer thread."""
    finished_in = []
    jnl = _open(tmp_path, replicate=lambda frames: _done_ticket(error),
                on_durable=lambda tags: finished_in.append(threading.get_ident()))
    batch = jnl.append_all([(b"one", "T1")], defer=True)
    batch.add_done_callback(lambda b: finished_in.append(threading.get_ident()))
    jnl.commit_here()
    assert batch.done.is_set() and batch.error is error
    me = threading.get_ident()
    assert finished_in == ([me, me] if error is None else [me])
    jnl.close()


def test_a_batch_waiting_for_its_acknowledgement_finishes_when_it_comes(tmp_path):
    """A ticket not yet acknowledged leaves its batch to the completer: written but not
    done until the acknowledgement, then finished in another thread."""
    ticket = replication.Ticket(None, 1, 1)  # one candidate's acknowledgement required
    finished_in = []
    jnl = _open(tmp_path, replicate=lambda frames: ticket)
    batch = jnl.append_all([(b"one", "T1")], defer=True)
    batch.add_done_callback(lambda b: finished_in.append(threading.get_ident()))
    jnl.commit_here()
    assert batch.written.is_set() and not batch.done.wait(0.2)
    ticket.ack("c1")
    assert batch.done.wait(5) and batch.error is None
    assert finished_in and finished_in[0] != threading.get_ident()
    jnl.close()


def test_commit_here_leaves_the_work_to_a_busy_committer(tmp_path, monkeypatch):
    """While the committer writes, commit_here does not write too: it wakes the committer,
    which takes the deferred records next, in order."""
    entered, release = _hold_the_write_of(b"first", monkeypatch)
    jnl = _open(tmp_path)
    first = jnl.append(b"first")
    assert entered.wait(5)
    second = jnl.append_all([(b"second", None)], defer=True)
    jnl.commit_here()  # returns at once: the committer holds the file
    assert not second.written.is_set()
    release.set()
    second.wait(5)
    assert first.done.is_set()
    jnl.close()
    assert _good_records(tmp_path / "journal") == [b"first", b"second"]


@pytest.fixture
def failpoints():
    """Failpoints disarmed after the test, whatever happened."""
    yield faults
    faults.clear()


def _good_records(path):
    payloads, report = journal.read_records(str(path))
    assert report.clean, report.describe()
    return [p for p in payloads if p != journal.PROBE]


def test_failed_write_is_refused_truncated_and_retried(tmp_path, failpoints):
    """A failed write refuses its batch (naming cause and directory) and every later one
    until a probe succeeds; nothing of a refused batch stays in the file."""
    refused, recovered = [], threading.Event()
    jnl = _open(tmp_path, retry_interval=0.05,
                on_refused=lambda batches, err: refused.extend(batches),
                on_recovered=recovered.set)
    jnl.append(b"good").wait(5)
    failpoints.inject("journal.write", errno.ENOSPC, times=2)
    batch = jnl.append(b"refused")
    with pytest.raises(errors.JobQueueError) as info:
        batch.wait(5)
    message = errors.error_message(info.value)
    assert "No space left on device" in message and str(tmp_path) in message
    assert batch.refused and refused == [batch] and batch.written.is_set()
    assert "No space" in errors.error_message(jnl.refusal())
    assert recovered.wait(5)
    assert jnl.refusal() is None and jnl.failing is None
    jnl.append(b"later").wait(5)
    jnl.close()
    assert _good_records(tmp_path / "journal") == [b"good", b"later"]


def test_records_go_to_replication_once_written_before_their_sync(tmp_path, failpoints,
                                                                  monkeypatch):
    """The candidates get a batch's records as soon as they are written, while the local
    fdatasync runs (the two disks' syncs overlap); a batch whose write fails is refused
    and never replicated; the waiters hear only once both the local sync and the
    replication are done."""
    order, calls = [], []
    real_sync = os.fdatasync

    def fdatasync(fd):
        order.append("sync")
        real_sync(fd)

    def replicate(frames):
        order.append("replicate")
        calls.append(frames)

    monkeypatch.setattr(journal.os, "fdatasync", fdatasync)
    recovered = threading.Event()
    jnl = _open(tmp_path, retry_interval=0.05, replicate=replicate,
                on_recovered=recovered.set)
    jnl.append(b"first").wait(5)
    assert order == ["replicate", "sync"] and calls == [[journal.frame(b"first")]]
    failpoints.inject("journal.write", errno.ENOSPC)
    with pytest.raises(errors.JobQueueError):
        jnl.append(b"refused").wait(5)
    assert recovered.wait(5)
    jnl.append(b"later").wait(5)
    jnl.close()
    assert calls == [[journal.frame(b"first")], [journal.frame(b"later")]]
    assert _good_records(tmp_path / "journal") == [b"first", b"later"]


def test_a_write_refused_in_commit_here_is_probed_by_the_committer(tmp_path, failpoints):
    """A disk that refuses the write of commit_here is probed by the committer thread,
    and changes are accepted again once it writes."""
    recovered = threading.Event()
    jnl = _open(tmp_path, retry_interval=0.05, on_recovered=recovered.set)
    failpoints.inject("journal.write", errno.ENOSPC, times=2)
    batch = jnl.append_all([(b"refused", None)], defer=True)
    jnl.commit_here()
    assert batch.refused and isinstance(batch.error, errors.JobQueueError)
    assert recovered.wait(5)
    later = jnl.append_all([(b"later", None)], defer=True)
    jnl.commit_here()
    later.wait(5)
    jnl.close()
    assert _good_records(tmp_path / "journal") == [b"later"]


def test_a_partial_write_is_cut_back_to_the_last_good_record(tmp_path, monkeypatch):
    """Whole records a failed write left behind are truncated away: none can be replayed."""
    jnl = _open(tmp_path, retry_interval=60)
    jnl.append(b"good").wait(5)
    real_write = journal.fsutil.write_all

    def half_then_enospc(fd, buffers):
        data = b"".join(buffers)
        real_write(fd, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.fsutil, "write_all_buffers", half_then_enospc)
    batch = None
    for index in range(10):
        batch = jnl.append(journal.frame(b"x" * 10) + b"%d" % index)
    with pytest.raises(errors.JobQueueError):
        batch.wait(5)
    assert os.path.getsize(tmp_path / "journal") == len(journal.frame(b"good"))
    jnl.close()
    assert _good_records(tmp_path / "journal") == [b"good"]


def test_failed_sync_is_fatal_and_not_retried(tmp_path, failpoints):
    """A failed fdatasync calls on_fatal; the journal then refuses everything for good."""
    fatal = []
    jnl = _open(tmp_path, retry_interval=0.01, on_fatal=fatal.append)
    failpoints.inject("journal.sync", errno.EIO)
    with pytest.raises(errors.JobQueueError, match="outcome unknown"):
        jnl.append(b"x").wait(5)
    assert len(fatal) == 1 and fatal[0].errno == errno.EIO
    assert jnl.failed is not None
    with pytest.raises(errors.JobQueueError, match="journal failed"):
        jnl.append(b"y")
    jnl.close()


def test_a_journal_removed_while_open_fails_the_next_commit(tmp_path):
    """The journal's file removed by hand (a cleanup of the queue directory): a sync of
    the unlinked file would make nothing a replay finds, so the next commit fails for
    good (on_fatal, as a failed sync) instead of being acknowledged."""
    fatal = []
    jnl = _open(tmp_path, on_fatal=fatal.append)
    jnl.append(b"before").wait(5)
    os.unlink(tmp_path / "journal")
    with pytest.raises(errors.JobQueueError, match="No such file or directory"):
        jnl.append(b"after").wait(5)
    assert isinstance(jnl.failed, FileNotFoundError) and fatal == [jnl.failed]
    jnl.close()


def test_commits_never_stat_the_journal_file(tmp_path, monkeypatch):
    """A commit checks that the journal still has its name without a stat of the file:
    after one, the kernel gives the next write a fine-grained ctime and the next sync
    writes the inode too (70-90 us a sync here, see _flush). The check still works: a
    journal removed by hand fails the next commit (see the test above)."""
    jnl = _open(tmp_path)
    jnl.append(b"first").wait(5)
    journal_inode = os.stat(tmp_path / "journal").st_ino
    stats = []
    real_fstat, real_stat = os.fstat, os.stat

    def fstat(fd):
        info = real_fstat(fd)
        stats.append(info.st_ino)
        return info

    def stat(path, *args, **kwargs):
        info = real_stat(path, *args, **kwargs)
        stats.append(info.st_ino)
        return info

    monkeypatch.setattr(journal.os, "fstat", fstat)
    monkeypatch.setattr(journal.os, "stat", stat)
    for n in range(20):
        jnl.append(b"record %d" % n).wait(5)
        jnl.append_all([(b"here %d" % n, None)], defer=True)
        jnl.commit_here()
    monkeypatch.undo()
    jnl.close()
    assert journal_inode not in stats
    assert len(_good_records(tmp_path / "journal")) == 41


def test_a_bug_in_the_committer_fails_the_commit_instead_of_leaving_it_waiting(
        tmp_path, monkeypatch):
    """An unexpected exception in the committer thread (a bug) fails the journal for good
    (on_fatal: the daemon exits and its restart replays) and the commit's waiters hear
    it, instead of waiting for ever."""
    fatal = []
    jnl = _open(tmp_path, on_fatal=fatal.append)
    jnl.append(b"before").wait(5)

    def broken(*args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(jnl, "_write_batches", broken)
    with pytest.raises(errors.JobQueueError, match="outcome unknown"):
        jnl.append(b"after").wait(5)
    assert isinstance(jnl.failed, RuntimeError) and fatal == [jnl.failed]
    with pytest.raises(errors.JobQueueError, match="journal failed"):
        jnl.append(b"later")
    jnl.close()


def test_rotation_splits_records_between_old_and_new_file(tmp_path):
    """Records before rotate() land in journal.old, later ones in the new journal."""
    jnl = _open(tmp_path)
    jnl.append(b"before")
    generation = jnl.generation
    jnl.rotate().wait(5)
    jnl.append(b"after").wait(5)
    assert jnl.generation == generation + 1
    old, _ = journal.read_records(str(tmp_path / "journal.old"))
    new, _ = journal.read_records(str(tmp_path / "journal"))
    assert (old, new) == ([b"before"], [b"after"])
    jnl.remove_old()
    assert not (tmp_path / "journal.old").exists()
    jnl.close()


def test_a_rotation_that_fails_leaves_close_its_own_descriptor(tmp_path):
    """The journal's directory removed (a cleanup) fails the rotation's rename: the
    journal fails, and its close closes its own descriptor only; it used to close the
    number again, by then another file's (here: the next file opened)."""
    directory = tmp_path / "queue"
    directory.mkdir()
    fatal = []
    jnl = _open(directory, on_fatal=fatal.append)
    jnl.append(b"before").wait(5)
    for name in os.listdir(directory):
        os.unlink(directory / name)
    directory.rmdir()
    jnl.rotate().wait(5)  # its records were synced before the switch...
    deadline = time.monotonic() + 5
    while jnl.failed is None and time.monotonic() < deadline:  # ... the failure comes after
        time.sleep(0.01)
    assert isinstance(jnl.failed, FileNotFoundError) and fatal == [jnl.failed]
    other = os.open(os.devnull, os.O_RDONLY)
    try:
        jnl.close()
        os.fstat(other)  # still open
    finally:
        os.close(other)


def test_a_rotation_opens_no_descriptor(tmp_path, monkeypatch):
    """With every descriptor taken (EMFILE from any open), a rotation still succeeds: its
    new journal was prepared unnamed beforehand and its directory is held open. The next
    preparation fails quietly; the rotation after it opens its file as it used to."""
    fatal = []
    jnl = _open(tmp_path, on_fatal=fatal.append)
    jnl.append(b"before").wait(5)
    real_open = os.open

    def no_descriptors(*args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    monkeypatch.setattr(journal.os, "open", no_descriptors)
    jnl.rotate().wait(5)
    jnl.append(b"after").wait(5)
    assert jnl.failed is None and fatal == []
    monkeypatch.setattr(journal.os, "open", real_open)
    old, _ = journal.read_records(str(tmp_path / "journal.old"))
    new, _ = journal.read_records(str(tmp_path / "journal"))
    assert (old, new) == ([b"before"], [b"after"])
    assert os.stat(tmp_path / "journal").st_mode & 0o777 == 0o600
    jnl.remove_old()
    jnl.rotate().wait(5)
    jnl.append(b"last").wait(5)
    old, _ = journal.read_records(str(tmp_path / "journal.old"))
    new, _ = journal.read_records(str(tmp_path / "journal"))
    assert (old, new) == ([b"after"], [b"last"])
    assert sorted(os.listdir(tmp_path)) == ["journal", "journal.old"]
    jnl.close()


def test_torn_tail_is_ignored_and_reported(tmp_path):
    """A record cut short at the end is dropped; the complete ones are kept."""
    data = b"".join(journal.frame(b"rec%d" % i) for i in range(3))
    for cut in range(1, len(journal.frame(b"rec2"))):
        path = tmp_path / ("j%d" % cut)
        path.write_bytes(data[:-cut])
        payloads, report = journal.read_records(str(path))
        assert payloads == [b"rec0", b"rec1"]
        assert report.torn_tail == len(journal.frame(b"rec2")) - cut
        assert not report.damaged


def test_zeros_after_the_last_record_are_the_unused_end_not_damage(tmp_path):
    """The zeros a journal writes ahead of its records are neither damage nor a torn
    tail; garbage after them still is a torn tail."""
    path = tmp_path / "journal"
    path.write_bytes(journal.frame(b"ok") + b"\0" * 4096)
    payloads, report = journal.read_records(str(path))
    assert payloads == [b"ok"] and report.clean
    path.write_bytes(journal.frame(b"ok") + b"\0" * 4096 + b"JQr")
    payloads, report = journal.read_records(str(path))
    assert payloads == [b"ok"] and report.torn_tail == 4096 + 3


def test_the_file_is_written_ahead_and_records_overwrite_its_zeros(tmp_path):
    """A commit grows the file by PREALLOCATE zeros, durable with its records; later
    records go over them, the size unchanged; a clean close cuts the unused end."""
    jnl = _open(tmp_path)
    first = journal.frame(b"first")
    jnl.append(b"first").wait(5)
    path = tmp_path / "journal"
    assert path.stat().st_size == len(first) + journal.PREALLOCATE
    assert jnl.size == len(first)
    jnl.append(b"second").wait(5)
    assert path.stat().st_size == len(first) + journal.PREALLOCATE
    assert journal.read_records(str(path))[0] == [b"first", b"second"]
    jnl.close()
    assert path.stat().st_size == len(first) + len(journal.frame(b"second"))


def test_a_big_commit_grows_the_file_by_itself_alone(tmp_path):
    """A commit larger than WRITE_AHEAD_MAX (command output) writes no zeros ahead: its
    data is its sync's cost, and zeros would double what goes to the disk."""
    jnl = _open(tmp_path)
    big = b"x" * (journal.WRITE_AHEAD_MAX + 1)
    jnl.append(big).wait(5)
    path = tmp_path / "journal"
    assert path.stat().st_size == len(journal.frame(big)) == jnl.size
    jnl.append(b"small").wait(5)  # a small one writes ahead again
    assert path.stat().st_size == jnl.size + journal.PREALLOCATE
    assert journal.read_records(str(path))[0] == [big, b"small"]
    jnl.close()


def test_a_journal_reopened_after_a_crash_writes_after_its_last_record(tmp_path):
    """Opened on a file a crash left with its unused end (zeros), the journal writes its
    next record right after the last one, not after the zeros: nothing reads as damage."""
    path = tmp_path / "journal"
    path.write_bytes(journal.frame(b"one") + b"\0" * 8192)
    jnl = _open(tmp_path)
    assert jnl.size == len(journal.frame(b"one"))
    jnl.append(b"two").wait(5)
    payloads, report = journal.read_records(str(path))
    assert payloads == [b"one", b"two"] and report.clean
    jnl.close()


def test_records_are_kept_when_the_disk_refuses_the_zeros_ahead(tmp_path, monkeypatch):
    """Writing ahead is an optimisation: a disk too full for the zeros still takes the
    records (the batch is acknowledged), and the next commit tries again."""
    real = journal.fsutil.pwrite_all
    calls = []

    def full(fd, data, offset):
        calls.append(offset)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(journal.fsutil, "pwrite_all", full)
    jnl = _open(tmp_path)
    jnl.append(b"kept").wait(5)
    path = tmp_path / "journal"
    assert path.stat().st_size == len(journal.frame(b"kept"))
    jnl.append(b"next").wait(5)
    assert len(calls) == 2 and path.stat().st_size > journal.PREALLOCATE
    assert journal.read_records(str(path))[0] == [b"kept", b"next"]
    jnl.close()


def test_damaged_record_in_the_middle_is_skipped_and_later_ones_kept(tmp_path):
    """A corrupted record is reported and the records after it are still read."""
    frames = [journal.frame(b"record-%d" % i) for i in range(5)]
    data = bytearray(b"".join(frames))
    offset = len(frames[0]) + len(frames[1]) + journal.HEADER_SIZE + 2
    data[offset] ^= 0xFF
    path = tmp_path / "journal"
    path.write_bytes(bytes(data))
    payloads, report = journal.read_records(str(path))
    assert payloads == [b"record-0", b"record-1", b"record-3", b"record-4"]
    assert report.damaged == [(len(frames[0]) + len(frames[1]), len(frames[2]))]
    assert report.torn_tail == 0


def test_missing_journal_reads_as_empty(tmp_path):
    """A queue without a journal file has no records and nothing to report."""
    payloads, report = journal.read_records(str(tmp_path / "journal"))
    assert payloads == [] and report.clean


def test_closed_journal_refuses_appends(tmp_path):
    """Appending after close() raises a JobQueueError instead of losing the record."""
    jnl = _open(tmp_path)
    jnl.close()
    with pytest.raises(errors.JobQueueError, match="closed"):
        jnl.append(b"late")


def test_reset_leaves_an_empty_journal_and_no_old_one(tmp_path):
    """reset() empties the journal and removes journal.old."""
    (tmp_path / "journal").write_bytes(journal.frame(b"x"))
    (tmp_path / "journal.old").write_bytes(journal.frame(b"y"))
    journal.reset(str(tmp_path))
    assert (tmp_path / "journal").read_bytes() == b""
    assert not (tmp_path / "journal.old").exists()


def test_keyed_records_coalesce_only_while_unwritten(tmp_path, monkeypatch):
    """A record with the key of one still in the open batch replaces it; written ones stay."""
    gate, entered = threading.Event(), threading.Event()
    real_sync = os.fdatasync

    def held_sync(fd):
        entered.set()
        gate.wait(5)
        real_sync(fd)

    jnl = _open(tmp_path)
    monkeypatch.setattr(journal.os, "fdatasync", held_sync)
    jnl.append(b"first")
    assert entered.wait(5)  # the committer holds "first"; what follows shares one batch
    jnl.append(b"state v1", key="job-1")
    jnl.append(b"log")
    batch = jnl.append(b"state v2", key="job-1")
    gate.set()
    batch.wait(5)
    jnl.append(b"state v3", key="job-1").wait(5)
    jnl.close()
    payloads, _ = journal.read_records(str(tmp_path / "journal"))
    assert payloads == [b"first", b"state v2", b"log", b"state v3"]
