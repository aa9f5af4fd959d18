"""Write-ahead journal: framed records, group commit, rotation and recovery.

A record is opaque bytes (the queue puts JSON in it). On disk each record is framed as

    MAGIC (4 bytes) | payload length (u32, big endian) | CRC-32 of payload (u32) | payload

Appending is cheap and never touches the disk: records join the open batch. One committer
thread writes everything appended since its last pass with a single write and a single
fdatasync (group commit), and hands the records to the replication hook between the two:
once written (a write the disk refuses is never replicated) and while the local sync runs,
so that the candidates' syncs overlap ours. Once a batch is
durable (and, with a replication hook, acknowledged by the peers the hook requires), the
durability listener gets the tags of its records and only then are the callers waiting on
the batch released. Many concurrent appenders therefore share one disk sync, and with
replication the committer goes on writing the next batches while earlier ones wait for
their acknowledgements (a completer thread finishes batches in order).

The file is written ahead of its records: each time they reach its end it grows by
PREALLOCATE bytes of zeros, written in the same pass and made durable by the same
fdatasync (unless the commit is larger than WRITE_AHEAD_MAX: the file then grows by the
commit alone). Every later record then overwrites blocks the disk already holds, and its
fdatasync flushes data only, not the file's size (a third faster on ext4 here: SQLite's
write-ahead log gets its speed the same way). Zeros after the last record are the file's
unused end, not damage; a clean close cuts them off.

Rotation supports checkpoints: records appended before rotate() stay in ``journal``,
which becomes ``journal.old``; later records go to a fresh ``journal``. Reading tolerates
a torn tail and skips damaged records (found again by their magic), reporting both.

Disk errors. A write that fails (ENOSPC, EDQUOT, EROFS, EIO...) leaves nothing behind:
the file is truncated back to its last good size (and that size synced), so no record of
the failed batches, whole or partial, can come back at replay. Those batches and every
one appended until the disk works again are *refused*: the owner's listener
(``on_refused``) undoes their changes before anyone waiting on them hears the error,
which names the cause and the directory. The committer then probes the disk every
``retry_interval`` seconds with an empty record (a no-op at replay) and, once one is
durable, accepts writes again and calls ``on_recovered``. A failed fdatasync (the
journal's, or ``before_write``'s of the files its records point into: DiskSyncError; or a
failed rotation or truncation) is not retried: after a failed fsync the kernel may have
dropped the dirty pages, so a later fsync that succeeds proves nothing. The journal then
refuses everything for good and calls ``on_fatal(error)``; the daemon exits so that a
restart replays the journal (PostgreSQL's lesson of 2018).
"""

import bisect
import collections
import contextlib
import errno
import logging
import os
import struct
import threading
import time
import zlib

from jqueue import constants, errors, threadname
from jqueue.store import faults, fsutil

logger = logging.getLogger(__name__)

MAGIC = b"JQr1"
_HEADER = struct.Struct(">4sII")
HEADER_SIZE = _HEADER.size
MAX_RECORD_SIZE = 256 * 1024 * 1024
#: Seconds between two probes of a disk that refused a write.
DEFAULT_RETRY_INTERVAL = 1.0
#: The probe: an empty record, which replay ignores.
PROBE = b""
#: Bytes of zeros the file grows by ahead of its records (see the module docstring).
PREALLOCATE = 1024 * 1024
#: The largest commit that writes ahead: for a larger one the data is what its sync
#: costs, and zeros written ahead would double what goes to the disk (command output).
WRITE_AHEAD_MAX = PREALLOCATE // 8


def frame(payload):
    """Return the on-disk frame of one record."""
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


#: Guards the creation of an _Awaited's event against its setting (held for an instant).
_AWAITED_LOCK = threading.Lock()


class _Awaited:
    """A batch's flag (done, written), an Event in what it offers. The Event behind it is
    made only when a thread waits before it is set: most batches are answered through
    their callbacks, and two Events a batch (each a Condition with its lock) were about a
    twentieth of a single client's submission in jq-masterd (cProfile). A thread about to
    wait for one first has the journal commit what that thread left for the end of its
    turn (Journal.commit_in_loop): an event loop waiting for its own records would
    otherwise wait for ever."""

    __slots__ = ("_journal", "_set", "_event")

    def __init__(self, journal):
        self._journal = journal
        self._set = False
        self._event = None

    def is_set(self):
        return self._set

    def set(self):
        with _AWAITED_LOCK:
            self._set = True
            event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout=None):
        if self._set:
            return True
        if self._journal is not None:
            self._journal.commit_before_waiting()
        with _AWAITED_LOCK:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


class Batch:
    """Records committed together; callers wait on it to learn that theirs are durable."""

    __slots__ = ("frames", "tags", "rotate_after", "done", "error", "nbytes", "ticket",
                 "_callbacks", "_lock", "_finished", "slots", "written", "refused", "undo",
                 "opened", "presync")

    def __init__(self, journal=None):
        #: When the batch was opened (monotonic seconds): its acknowledgement latency's start.
        self.opened = time.monotonic()
        self.frames = []
        self.tags = []
        self.rotate_after = False
        self.done = _Awaited(journal)
        #: Set once the local write succeeded, or failed and the owner undid the changes.
        self.written = _Awaited(journal)
        #: True if the local write failed: nothing of the batch is on disk.
        self.refused = False
        #: The owner's undo actions for a refusal (run by its on_refused listener).
        self.undo = []
        self.error = None
        self.nbytes = 0
        #: The replication hook's ticket once the batch was handed to it (see Journal).
        self.ticket = None
        #: Coalescing key -> index in frames of the record a newer one may replace.
        self.slots = {}
        #: What the journal's before_write must make durable first (None: nothing).
        self.presync = None
        self._callbacks = []
        self._lock = threading.Lock()
        self._finished = False

    def add_done_callback(self, callback):
        """Call callback(batch) once the batch is finished (at once if it already is).

        It runs in the journal's thread: it must be quick and must not wait for the
        journal (hand the work to another thread, e.g. with reactor.callFromThread).
        Callbacks run before wait() returns for anyone.
        """
        with self._lock:
            if not self._finished:
                self._callbacks.append(callback)
                return
        callback(self)

    def _complete(self, error):
        with self._lock:
            self.error = error
            self._finished = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - one caller's bug must not stop the journal
                logger.exception("batch callback failed")
        self.done.set()

    def result(self):
        """Raise the batch's error, if it finished with one."""
        if self.error is not None:
            raise self.error

    def wait(self, timeout=None):
        """Block until the batch is durable (and replicated); raise if it failed.

        On timeout, raise the ticket's explanation (how many copies exist) if the batch
        waits for replication, else a JobQueueError.
        """
        if not self.done.wait(timeout):
            if self.ticket is not None:
                raise self.ticket.timeout_error()
            raise errors.JobQueueError("journal commit did not finish within %ss" % timeout)
        if self.error is not None:
            raise self.error


class Journal:
    """Appends records to ``<dir>/journal`` and makes them durable in groups."""

    def __init__(self, directory, on_durable=None, replicate=None, on_refused=None,
                 on_recovered=None, on_fatal=None, retry_interval=DEFAULT_RETRY_INTERVAL,
                 before_write=None):
        """Open (create) ``directory/journal`` and start the committer.

        before_write, if given, is called by the committer with the set of every
        ``presync`` value appended with the records of a commit (see append), before it
        writes them, when there is one: records that promise data kept elsewhere (a
        command log's bytes) become durable only after it returns. Its failure (OSError or
        DiskSyncError) is a failed sync: fatal, as the journal's own (nothing of the
        commit's batches is written).

        replicate, if given, is called by the committer with each group commit's framed
        records once they are written to the local file, before its fdatasync (after it
        for a commit that rotates the file). It returns None (nothing to wait for) or a
        ticket with ``wait() -> error or None``, ``fail(error)`` and ``timeout_error()``;
        batches complete, in order, once their ticket's wait() returns.

        The disk error listeners (see the module docstring), all called in the committer's
        thread: on_refused(batches, error) before refused batches complete, on_recovered()
        once writes work again, on_fatal(error) when the journal fails for good.
        """
        self._dir = directory
        self._path = os.path.join(directory, constants.JOURNAL_FILE)
        self._old_path = os.path.join(directory, constants.JOURNAL_OLD_FILE)
        self._on_durable = on_durable
        self._replicate = replicate
        self._before_write = before_write
        self._on_refused = on_refused
        self._on_recovered = on_recovered
        self._on_fatal = on_fatal
        self._retry_interval = retry_interval
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        # The completer waits on its own condition (same lock): appends wake only the
        # committer, not a thread that has nothing to do with them.
        self._acked = threading.Condition(lock)
        self._queue = []
        self._writing = []  # the batches the committer is writing
        self._closing = False
        self._failed = None
        self._failing = None  # the write error while the disk refuses writes
        self._next_probe = None
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        #: The directory, held open, and the next journal file, prepared unnamed: a
        #: rotation takes no new descriptor (see _switch_file).
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        self._next_fd = None
        self._prepare_next()
        #: Where the next record goes (the end of the last one), and the file's size.
        self._size, self._allocated = _ends(self._fd)
        os.lseek(self._fd, self._size, os.SEEK_SET)
        self.generation = 0
        self.stats = {"batches": 0, "records": 0, "syncs": 0}
        #: Seconds from a batch's opening to its acknowledgement (durable, replicated).
        self.ack_latency = LatencyHistogram()
        self._acks = collections.deque()
        #: Batches the committer took and has not finished or handed to the completer.
        self._writing = []
        #: Whether a thread (the committer, or one in commit_here) is writing the file.
        self._committing = False
        self._local = threading.local()  # defer: appends in deferring() blocks
        #: (thread id, schedule) of the event loop that commits its own appends, if any.
        self._loop = None
        self._loop_commit_due = False  # its commit is scheduled (see commit_in_loop)
        self._committed_all = False
        self._thread = threading.Thread(target=self._run, name="journal-commit", daemon=True)
        self._thread.start()
        self._completer = None
        if replicate is not None:
            self._completer = threading.Thread(target=self._complete, name="journal-acks",
                                               daemon=True)
            self._completer.start()

    @property
    def size(self):
        """Bytes in the current journal file (written, not merely appended)."""
        return self._size

    @property
    def failing(self):
        """The write error while writes are refused (retried), else None."""
        return self._failing

    @property
    def failed(self):
        """The error that stopped the journal for good (a failed sync), else None."""
        return self._failed

    def refusal(self):
        """The JobQueueError a change gets while the disk refuses writes (or None)."""
        error = self._failed or self._failing
        if error is None:
            return None
        if self._failed is not None:
            return errors.JobQueueError("changes refused: the journal of %s failed for good "
                                        "(%s) until it is opened again, which replays it"
                                        % (self._dir, error))
        return errors.JobQueueError(
            "changes refused: cannot write the journal in %s: %s; retrying every %gs, "
            "reads are still served" % (self._dir, _reason(error), self._retry_interval))

    def append(self, payload, tag=None, key=None, presync=None):
        """Queue one record; return the Batch to wait on. Never blocks on the disk.

        With a key, the record replaces the previous record of the same key while both
        are still in the open batch (not written yet): the caller promises that the newer
        record, applied at the older one's place, gives the same state (a job's status
        records set absolute values). Records of short jobs then take one record, not two.
        With presync (a record without a key), the commit that writes the record first
        passes presync, with its other records' ones, to before_write (see __init__).
        """
        data = frame(payload)
        if key is None:
            with self._cond:
                return self._add_unlocked(data, tag, presync)
        with self._cond:
            self._check_open_unlocked()
            batch = self._open_batch_unlocked()
            index = batch.slots.get(key)
            if index is None:
                batch.slots[key] = len(batch.frames)
                batch.frames.append(data)
                batch.nbytes += len(data)
                self._wake_unlocked()
            else:
                batch.nbytes += len(data) - len(batch.frames[index])
                batch.frames[index] = data
            if tag is not None:
                batch.tags.append(tag)
            return batch

    def append_all(self, entries, defer=False):
        """Queue records [(payload, tag or None), ...] into one batch; return it.

        They are written, or refused, together (a request's jobs are all or nothing).
        With defer, the committer is not woken: the caller promises to call
        commit_here() soon (see there).
        """
        frames = [(frame(payload), tag) for payload, tag in entries]
        with self._cond:
            self._check_open_unlocked()
            batch = self._open_batch_unlocked()
            for data, tag in frames:
                batch.frames.append(data)
                batch.nbytes += len(data)
                if tag is not None:
                    batch.tags.append(tag)
            if not defer:
                self._wake_unlocked()
            return batch

    def commit_here(self, durable_here=None):
        """Commit what is queued in the calling thread, unless the committer is at work.

        The daemon's event loop records the submissions of one pass over its sockets
        with defer, then calls this: when the disk is idle the loop writes and syncs the
        batch itself and the answers go out from the same thread, instead of waking the
        committer and being woken by it again (two thread hand-offs per batch, which on
        a busy machine cost more than the sync). When the committer is busy (writing an
        earlier batch, or refusing changes after a disk error) or the journal closes, it
        is woken instead and takes the records along with the rest.

        durable_here(batches), if given, is called with the batches this call finishes
        without an error (durable, and acknowledged if replicated), in this thread, before
        the durability listener hears of them and before their callbacks run. The event
        loop sends their answers from it: the listener's bookkeeping (a job made visible,
        scheduled, its events written) then follows while the client reads its answer,
        and still comes before anything the client sends next, which the loop reads only
        once this returns.
        """
        with self._cond:
            if not self._queue:
                return
            if (self._committing or self._closing or self._failing is not None
                    or self._failed is not None):
                self._cond.notify()
                return
            batches, self._queue = self._queue, []
            self._writing = batches
            self._committing = True
        self._local.durable_here = durable_here
        try:
            self._commit(batches)
        finally:
            self._local.durable_here = None
            with self._cond:
                self._writing = []
                self._committing = False
                # The committer waits for us: records appended meanwhile, close(), or a
                # disk that refused the write (it probes it from now on).
                if self._queue or self._closing or self._next_probe is not None:
                    self._cond.notify()

    def append_frame(self, data, tag=None):
        """Queue one record already framed (e.g. received from the master, CRC checked)."""
        with self._cond:
            return self._add_unlocked(data, tag)

    def _add_unlocked(self, data, tag, presync=None):
        self._check_open_unlocked()
        batch = self._open_batch_unlocked()
        batch.frames.append(data)
        batch.nbytes += len(data)
        if tag is not None:
            batch.tags.append(tag)
        if presync is not None:
            if batch.presync is None:
                batch.presync = set()
            batch.presync.add(presync)
        self._wake_unlocked()
        return batch

    @contextlib.contextmanager
    def deferring(self):
        """Within the block, this thread's appends do not wake the committer: the caller
        calls commit_here() after it (a candidate applying a batch of the master's
        records commits them itself, as the master's event loop does its submissions)."""
        self._local.defer = getattr(self._local, "defer", 0) + 1
        try:
            yield
        finally:
            self._local.defer -= 1

    def commit_in_loop(self, schedule):
        """From now on, what the calling thread (an event loop's) appends is committed at
        the end of the loop's turn, by the loop itself if the committer is idle: the first
        append of a turn calls schedule(fn), which must have fn called in this thread
        soon (reactor.callLater(0, fn)); fn is commit_here, but for records whose files
        must be synced first (before_write: a command log's pieces), left to the
        committer thread. Every change of a turn is one commit, with no thread woken and
        none waking the loop again (1,000 `true` command jobs in jq-masterd: 258-290 ->
        360-388 jobs/s, 27 -> 6 context switches and 3.1 -> 1.9 ms of CPU a job: the
        committer's wake-ups, its Python after each sync, and every system call of the
        loop's giving the GIL up to it). A wait for a batch in this thread commits
        first (_Awaited)."""
        with self._cond:
            self._loop = (threading.get_ident(), schedule)

    def commit_before_waiting(self):
        """The calling thread is about to wait for a batch: if it is the event loop's,
        commit what it left for the end of its turn (see commit_in_loop)."""
        loop = self._loop
        if loop is not None and loop[0] == threading.get_ident():
            self.commit_here()

    def _commit_loop(self):
        with self._cond:
            self._loop_commit_due = False
            if any(batch.presync for batch in self._queue):
                self._cond.notify()
                return
        self.commit_here()

    def _wake_unlocked(self):
        if getattr(self._local, "defer", 0):
            return
        loop = self._loop
        if loop is None or loop[0] != threading.get_ident():
            self._cond.notify()
        elif not self._loop_commit_due:
            self._loop_commit_due = True
            loop[1](self._commit_loop)

    def barrier(self):
        """Return the newest unfinished batch, written or not (None if none).

        Batches finish in order, so once it is done every earlier change is durable and
        acknowledged.
        """
        with self._cond:
            if self._closing:
                raise errors.JobQueueError("journal is closed")
            if self._queue:
                return self._queue[-1]
            if self._writing:
                return self._writing[-1]
            return self._acks[-1][0][-1] if self._acks else None

    def rotate(self):
        """Close the current file for new records; return the Batch that completes rotation.

        Records appended before this call end up in ``journal.old`` once the returned
        batch is written (wait_written); records appended after it go to a fresh
        ``journal``. The caller must remove ``journal.old`` (remove_old) before rotating
        again.
        """
        with self._cond:
            self._check_open_unlocked()
            batch = self._open_batch_unlocked()
            batch.rotate_after = True
            self.generation += 1
            self._cond.notify()
            return batch

    def wait_written(self, batch):
        """Block until batch is on the local disk, not for its replication (a checkpoint
        needs the rotation here; the candidates' copies are the replicator's business);
        raise if its write failed."""
        batch.written.wait()
        if batch.refused or self._failed is not None:
            batch.wait()  # finished with its error (at once, or as soon as it is told)

    def remove_old(self):
        """Delete ``journal.old`` durably (after a checkpoint made its records redundant)."""
        fsutil.remove_file(self._old_path)

    def close(self, ack_timeout=None):
        """Commit what is queued, stop the committer and close the file.

        Batches still waiting for replication after ack_timeout seconds fail with a
        ReplicationError (they stay on the local disk).
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
            self._acked.notify_all()
        self._thread.join()
        if self._completer is not None:
            self._completer.join(ack_timeout)
            if self._completer.is_alive():
                with self._cond:
                    pending = list(self._acks)
                for _, ticket in pending:
                    ticket.fail(errors.ReplicationError(
                        "journal closed before replication was acknowledged"))
                self._completer.join()
        self._cut_unused()
        os.close(self._fd)
        for fd in (self._next_fd, self._dir_fd):
            if fd is not None:
                os.close(fd)
        self._next_fd = self._dir_fd = None

    def _cut_unused(self):
        """Drop the zeros after the last record (best effort: they are harmless)."""
        if self._allocated > self._size:
            try:
                os.ftruncate(self._fd, self._size)
                self._allocated = self._size
            except OSError as err:
                logger.warning("cannot cut the unused end of %s: %s", self._path, err)

    def _check_open_unlocked(self):
        if self._failed is not None:
            raise errors.JobQueueError("journal failed: %s" % self._failed)
        if self._closing:
            raise errors.JobQueueError("journal is closed")

    def _open_batch_unlocked(self):
        if not self._queue or self._queue[-1].rotate_after:
            self._queue.append(Batch(self))
        return self._queue[-1]

    def _run(self):
        threadname.name_os_thread("jq-commit")
        while True:
            with self._cond:
                # One writer at a time: another thread may be in commit_here().
                while self._committing or (not self._queue and not self._closing
                                           and not self._probe_due()):
                    self._cond.wait(None if self._committing else self._probe_wait())
                if not self._queue and self._closing:
                    self._committed_all = True
                    self._acked.notify_all()
                    return
                batches, self._queue = self._queue, []
                self._writing = batches
                self._committing = True
            try:
                if batches:
                    self._commit(batches)
                else:
                    self._probe()
            except Exception as err:  # noqa: BLE001 - a bug: fail, never leave waiters hanging
                logger.exception("journal %s: the committer failed", self._path)
                self._fail_for_good(err)
                with self._cond:
                    handed = {id(b) for waiting, _ in self._acks for b in waiting}
                self._finish([b for b in batches if not b.done.is_set() and id(b) not in handed],
                             errors.JobQueueError("journal of %s failed (%s): outcome unknown "
                                                  "until the journal is replayed"
                                                  % (self._dir, _reason(err))))
            finally:
                with self._cond:  # finished, refused or waiting in _acks by now
                    self._writing = []
                    self._committing = False

    def _probe_due(self):
        return self._next_probe is not None and time.monotonic() >= self._next_probe

    def _probe_wait(self):
        if self._next_probe is None:
            return None
        return max(0.0, self._next_probe - time.monotonic())

    def _commit(self, batches):
        if self._failing is not None or self._failed is not None:
            self._refuse(batches)  # nothing of them was written
            return
        sent = []  # the ticket of batches replicated before their sync
        send = None
        if self._replicate is not None and not any(b.rotate_after for b in batches):
            # (A commit that rotates syncs its first part before the switch: it is
            # replicated after, in _done_locally, as a whole and only once.)
            def send():
                sent.append(self._replicate_frames(batches))
        try:
            self._write_batches(batches, send)
        except _DiskError as err:
            durable, batches = batches[:err.durable], batches[err.durable:]
            self._done_locally(durable)
            if not err.fatal:
                logger.error("cannot write the journal in %s: %s; refusing changes, "
                             "retrying every %gs", self._dir, _reason(err.cause),
                             self._retry_interval)
                with self._cond:
                    self._failing = err.cause
                    self._next_probe = time.monotonic() + self._retry_interval
                self._refuse(batches)
                return
            self._fail_for_good(err.cause)
            self._finish(batches, errors.JobQueueError(
                "journal of %s failed (%s): outcome unknown until the journal is replayed"
                % (self._dir, _reason(err.cause))))
            return
        self._done_locally(batches, *sent)

    def _replicate_frames(self, batches):
        try:
            return self._replicate([f for b in batches for f in b.frames])
        except errors.GenericError as err:
            return _FailedTicket(err)

    def _done_locally(self, batches, *sent):
        """Batches are on the local disk: hand them to replication (unless sent already,
        with the ticket sent), or finish them."""
        if not batches:
            return
        for batch in batches:
            batch.written.set()
        if self._replicate is None:
            self._finish(batches, None)
            return
        ticket = sent[0] if sent else self._replicate_frames(batches)
        if ticket is None or ticket.done:
            with self._cond:
                # Nothing (left) to wait for: a single node, no candidate required, or
                # acknowledged during the local sync. Finish here, unless earlier batches
                # still wait for their acknowledgements (batches finish in order). Saves
                # a hand-off to the completer thread per batch, which costs more CPU and
                # latency than the batch's own work.
                inline = not self._acks
            if inline:
                self._finish(batches, None if ticket is None else ticket.wait())
                return
        for batch in batches:
            batch.ticket = ticket
        with self._cond:
            self._acks.append((batches, ticket))
            self._acked.notify()

    def _complete(self):
        """Completer thread: finish replicated batches in order as their tickets clear."""
        threadname.name_os_thread("jq-acks")
        while True:
            with self._cond:
                while not self._acks and not self._committed_all:
                    self._acked.wait()
                if not self._acks:
                    return
                batches, ticket = self._acks[0]
            error = ticket.wait() if ticket is not None else None
            self._finish(batches, error)
            with self._cond:  # only now: the committer finishes a batch itself only once
                self._acks.popleft()  # every earlier one is finished (see _done_locally)

    def _write_batches(self, batches, before_sync=None):
        """Write batches in order; _DiskError (with how many are durable) on failure.
        before_sync(), if given, is called once the last of them is written, before its
        fdatasync."""
        presync = [batch.presync for batch in batches if batch.presync]
        if presync and self._before_write is not None:
            try:
                self._before_write(set().union(*presync))
            except (OSError, errors.DiskSyncError) as err:
                raise _DiskError(err, 0, fatal=True) from None
        pending = []
        durable = 0
        for index, batch in enumerate(batches):
            pending.extend(batch.frames)
            if batch.rotate_after:
                self._flush(pending, durable)
                pending = []
                durable = index + 1
                try:
                    self._switch_file()
                except OSError as err:
                    raise _DiskError(err, durable, fatal=True) from None
        if pending:
            self._flush(pending, durable, before_sync)
        elif before_sync is not None:
            before_sync()
        self.stats["records"] += sum(len(b.frames) for b in batches)
        self.stats["batches"] += 1

    def _flush(self, frames, durable=0, before_sync=None):
        """Append frames, call before_sync() if given, and fdatasync; on a failed write,
        truncate back (see above)."""
        size = sum(len(f) for f in frames)
        if not size:
            return
        try:
            faults.check("journal.write")
            fsutil.write_all_buffers(self._fd, frames)
        except OSError as err:
            self._truncate(err, durable)
            raise _DiskError(err, durable) from None
        if self._size + size > self._allocated:
            if size <= WRITE_AHEAD_MAX:
                self._preallocate(self._size + size)
            else:  # a big commit: its data is the sync's cost, not the file's size
                self._allocated = self._size + size
        if before_sync is not None:
            before_sync()
        try:
            faults.check("journal.sync")
            os.fdatasync(self._fd)
        except OSError as err:
            try:  # best effort: the daemon exits next, and replays what stays
                os.ftruncate(self._fd, self._size)
                os.fdatasync(self._fd)
            except OSError:
                pass
            raise _DiskError(err, durable, fatal=True) from None
        # Removed by hand: no replay would find it. Asked of its name, not of the file
        # with fstat: here (Linux 6.18, ext4) a stat of the file between two syncs made
        # the second 70-90 us slower (its timestamps asked for, the next write takes a
        # fine-grained ctime, which dirties the inode: the kernel's multigrain timestamps).
        if not os.access(constants.JOURNAL_FILE, os.F_OK, dir_fd=self._dir_fd):
            raise _DiskError(FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT),
                                               self._path), durable, fatal=True)
        self._size += size
        self.stats["syncs"] += 1

    def _preallocate(self, end):
        """Write PREALLOCATE bytes of zeros after end (the end of the records being
        written), for the sync that follows to make durable. A disk that refuses them
        costs nothing but the speed: the records are written, and the file's size is
        whatever the zeros reached."""
        try:
            fsutil.pwrite_all(self._fd, bytes(PREALLOCATE), end)
            self._allocated = end + PREALLOCATE
        except OSError as err:
            logger.debug("cannot write ahead of the journal %s: %s", self._path, err)
            self._allocated = max(end, os.fstat(self._fd).st_size)

    def _truncate(self, cause, durable):
        """Cut what a failed write left after the last good record, durably."""
        try:
            os.ftruncate(self._fd, self._size)
            os.fdatasync(self._fd)
            os.lseek(self._fd, self._size, os.SEEK_SET)
            self._allocated = self._size
        except OSError as err:
            logger.critical("cannot truncate the journal %s back to %d bytes after a "
                            "failed write (%s): %s", self._path, self._size, cause, err)
            raise _DiskError(err, durable, fatal=True) from None

    def _probe(self):
        """Write the probe record; on success accept writes again (on_recovered)."""
        try:
            self._flush([frame(PROBE)])
        except _DiskError as err:
            if err.fatal:
                self._fail_for_good(err.cause)
                return
            with self._cond:
                self._failing = err.cause
                self._next_probe = time.monotonic() + self._retry_interval
            return
        logger.warning("the journal in %s is writable again; accepting changes", self._dir)
        with self._cond:
            self._failing = self._next_probe = None
        if self._on_recovered is not None:
            try:
                self._on_recovered()
            except Exception:  # noqa: BLE001 - a listener bug must not stop commits
                logger.exception("recovery listener failed")

    def _fail_for_good(self, cause):
        logger.critical("journal %s: %s; refusing every change until it is opened again, "
                        "which replays it", self._path, cause)
        with self._cond:
            self._failed = cause
            self._failing = self._next_probe = None
        if self._on_fatal is not None:
            self._on_fatal(cause)

    def _refuse(self, batches):
        """Finish batches that are not on disk: the owner undoes them, waiters hear why."""
        if not batches:
            return
        error = self.refusal()
        for batch in batches:
            batch.refused = True
        if self._on_refused is not None:
            try:
                self._on_refused(batches, error)
            except Exception:  # noqa: BLE001 - a listener bug must not stop commits
                logger.exception("refusal listener failed")
        for batch in batches:
            batch.written.set()
            batch._complete(error)

    def _switch_file(self):
        if os.path.exists(self._old_path):
            raise errors.ProgrammerError("journal rotated twice without a checkpoint")
        os.fdatasync(self._fd)
        self._cut_unused()
        # Renamed open: whatever fails, self._fd stays a descriptor of this journal's, never
        # a closed number that close() would close again (another file's, once reused).
        os.rename(self._path, self._old_path)
        old_fd, self._fd = self._fd, self._new_file()
        os.close(old_fd)
        os.fsync(self._dir_fd)
        self._size = self._allocated = 0
        self._prepare_next()

    def _prepare_next(self):
        """Open the file the next rotation names ``journal``, unnamed until then (O_TMPFILE:
        a crash leaves nothing), so that the rotation opens nothing. Clients or commands
        holding every descriptor the process may have made a rotation's open fail (EMFILE),
        which failed the journal for good and made jq-masterd exit. Best effort: where
        this fails (no O_TMPFILE on this file system), the rotation opens its file."""
        if self._next_fd is not None:
            return
        try:
            self._next_fd = os.open(self._dir, os.O_RDWR | os.O_TMPFILE, 0o600)
        except (OSError, AttributeError) as err:  # AttributeError: a libc without it
            logger.debug("cannot prepare the next journal file in %s: %s", self._dir, err)

    def _new_file(self):
        """A new, empty ``journal``: the prepared file linked under that name, else one
        created now."""
        fd, self._next_fd = self._next_fd, None
        if fd is not None:
            try:
                # linkat(AT_SYMLINK_FOLLOW) through /proc: the way for an unnamed file
                # (os.link uses it when given a directory descriptor; plain link() fails).
                os.link("/proc/self/fd/%d" % fd, constants.JOURNAL_FILE,
                        dst_dir_fd=self._dir_fd, follow_symlinks=True)
                return fd
            except OSError as err:
                logger.warning("cannot name the prepared journal file %s: %s", self._path, err)
                os.close(fd)
        return os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def _finish(self, batches, error):
        if error is None:
            durable_here = getattr(self._local, "durable_here", None)
            if durable_here is not None:  # commit_here's caller, in its own thread
                try:
                    durable_here(batches)
                except Exception:  # noqa: BLE001 - the batches are durable all the same
                    logger.exception("durable_here callback failed")
        if error is None and self._on_durable is not None:
            tags = [t for b in batches for t in b.tags]
            try:
                self._on_durable(tags)
            except Exception:  # noqa: BLE001 - a listener bug must not stop commits
                logger.exception("durability listener failed")
        now = time.monotonic()
        for batch in batches:
            if error is None:
                self.ack_latency.observe(now - batch.opened)
            batch.written.set()
            batch._complete(error)


class LatencyHistogram:
    """Counts of observations per upper bound (cumulative, Prometheus style), their sum.

    Observed by one thread at a time (the journal's); read by anyone (a snapshot may be a
    few observations behind).
    """

    BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
              10.0)

    def __init__(self):
        self._counts = [0] * (len(self.BOUNDS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds):
        self._counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1  # the first bound >=
        self.sum += seconds
        self.count += 1

    def buckets(self):
        """[(upper bound, cumulative count)], the last bound +Inf."""
        total, out = 0, []
        for bound, count in zip(self.BOUNDS + (float("inf"),), self._counts):
            total += count
            out.append((bound, total))
        return out


class _DiskError(Exception):
    """A write or sync of the journal failed; durable: how many batches made it first."""

    def __init__(self, cause, durable, fatal=False):
        super().__init__(str(cause))
        self.cause, self.durable, self.fatal = cause, durable, fatal


def _reason(error):
    """An OSError as "[Errno 28] No space left on device" without the file name."""
    if isinstance(error, OSError) and error.errno is not None:
        return "[Errno %d] %s" % (error.errno, os.strerror(error.errno))
    return str(error)


class _FailedTicket:
    """The ticket of a batch the replication hook refused outright."""

    done = True

    def __init__(self, error):
        self._error = error

    def wait(self):
        return self._error

    def fail(self, error):
        pass

    def timeout_error(self):
        return self._error


class ReadReport:
    """What reading a journal found: good records and the damaged byte ranges."""

    def __init__(self, path):
        self.path = path
        self.records = 0
        self.damaged = []  # [(offset, length)]
        self.torn_tail = 0

    def describe(self):
        """One line for the log."""
        return "%s: %d records, %d damaged ranges (%d bytes), torn tail of %d bytes" % (
            self.path, self.records, len(self.damaged),
            sum(n for _, n in self.damaged), self.torn_tail)

    @property
    def clean(self):
        return not self.damaged and not self.torn_tail


def read_records(path):
    """Return (payloads, ReadReport) for the journal file at path (missing file: empty)."""
    report = ReadReport(path)
    try:
        data = fsutil.read_file(path)
    except FileNotFoundError:
        return [], report
    payloads, damaged, good_end = _scan(data)
    # Damage after the last good record is a torn tail (an unacknowledged last write);
    # zeros alone there are the file's unused end.
    report.damaged = [(off, n) for off, n in damaged if off < good_end]
    report.torn_tail = len(data) - good_end if _garbage_after(data, good_end) else 0
    report.records = len(payloads)
    return payloads, report


def _scan(data):
    """([payload], [(offset, length) damaged], end of the last good record) of data."""
    payloads, damaged = [], []
    pos = good_end = 0
    end = len(data)
    while pos < end:
        payload, nxt = _record_at(data, pos)
        if payload is not None:
            payloads.append(payload)
            pos = good_end = nxt
            continue
        found = data.find(MAGIC, pos + 1)
        if found == -1:
            break
        damaged.append((pos, found - pos))
        pos = found
    return payloads, damaged, good_end


def _ends(fd):
    """(where the next record goes, the size) of an open journal file: after its last
    record if only zeros follow it (its unused end), else at its end."""
    size = os.fstat(fd).st_size
    if not size:
        return 0, 0
    data = os.pread(fd, size, 0)
    good_end = _scan(data)[2]
    if _garbage_after(data, good_end):
        return size, size
    return good_end, size


def _garbage_after(data, start):
    """Whether data holds anything but zeros from start on."""
    return bool(data[start:].strip(b"\0"))


def _record_at(data, pos):
    """Return (payload, next position) if a valid record starts at pos, else (None, None)."""
    if pos + HEADER_SIZE > len(data):
        return None, None
    magic, length, crc = _HEADER.unpack_from(data, pos)
    if magic != MAGIC or length > MAX_RECORD_SIZE:
        return None, None
    start = pos + HEADER_SIZE
    stop = start + length
    if stop > len(data):
        return None, None
    payload = data[start:stop]
    if zlib.crc32(payload) != crc:
        return None, None
    return payload, stop


def split_frames(data):
    """[(payload, frame)] of concatenated frames; ParseError if any is damaged or cut."""
    records = []
    pos = 0
    while pos < len(data):
        payload, end = _record_at(data, pos)
        if payload is None:
            raise errors.ParseError("damaged or incomplete journal record at byte %d" % pos)
        records.append((payload, data[pos:end]))
        pos = end
    return records


def reset(directory):
    """Leave an empty, durable ``journal`` and no ``journal.old`` in directory."""
    path = os.path.join(directory, constants.JOURNAL_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    old = os.path.join(directory, constants.JOURNAL_OLD_FILE)
    if os.path.exists(old):
        os.unlink(old)
    fsutil.fsync_dir(directory)
