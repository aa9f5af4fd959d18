"""Write-ahead journal: framed records, group commit, rotation and recovery.

A record is opaque bytes (the queue puts JSON in it). On disk each record is framed as

    MAGIC (4 bytes) | payload length (u32, big endian) | CRC-32 of payload (u32) | payload

Appending is cheap and never touches the disk: records join the open batch. One committer
thread writes everything appended since its last pass with a single write and a single
fdatasync (group commit), then hands the records to the replication hook. Once a batch is
durable (and, with a replication hook, acknowledged by the peers the hook requires), the
durability listener gets the tags of its records and only then are the callers waiting on
the batch released. Many concurrent appenders therefore share one disk sync, and with
replication the committer goes on writing the next batches while earlier ones wait for
their acknowledgements (a completer thread finishes batches in order).

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
durable, accepts writes again and calls ``on_recovered``. A failed fdatasync (or a
failed rotation or truncation) is not retried: after a failed fsync the kernel may have
dropped the dirty pages, so a later fsync that succeeds proves nothing. The journal then
refuses everything for good and calls ``on_fatal(error)``; the daemon exits so that a
restart replays the journal (PostgreSQL's lesson of 2018).
"""

import collections
import logging
import os
import struct
import threading
import time
import zlib

from jqueue import constants, errors
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


def frame(payload):
    """Return the on-disk frame of one record."""
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


class Batch:
    """Records committed together; callers wait on it to learn that theirs are durable."""

    __slots__ = ("frames", "tags", "rotate_after", "done", "error", "nbytes", "ticket",
                 "_callbacks", "_lock", "_finished", "slots", "written", "refused", "undo")

    def __init__(self):
        self.frames = []
        self.tags = []
        self.rotate_after = False
        self.done = threading.Event()
        #: Set once the local write succeeded, or failed and the owner undid the changes.
        self.written = threading.Event()
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
                 on_recovered=None, on_fatal=None, retry_interval=DEFAULT_RETRY_INTERVAL):
        """Open (create) ``directory/journal`` and start the committer.

        replicate, if given, is called by the committer with each group commit's framed
        records after they are on the local disk. It returns None (nothing to wait for) or a
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
        self._on_refused = on_refused
        self._on_recovered = on_recovered
        self._on_fatal = on_fatal
        self._retry_interval = retry_interval
        self._cond = threading.Condition(threading.Lock())
        self._queue = []
        self._writing = []  # the batches the committer is writing
        self._closing = False
        self._failed = None
        self._failing = None  # the write error while the disk refuses writes
        self._next_probe = None
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size
        self.generation = 0
        self.stats = {"batches": 0, "records": 0, "syncs": 0}
        self._acks = collections.deque()
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
                                        "(%s); the daemon must restart" % (self._dir, error))
        return errors.JobQueueError(
            "changes refused: cannot write the journal in %s: %s; retrying every %gs, "
            "reads are still served" % (self._dir, _reason(error), self._retry_interval))

    def append(self, payload, tag=None, key=None):
        """Queue one record; return the Batch to wait on. Never blocks on the disk.

        With a key, the record replaces the previous record of the same key while both
        are still in the open batch (not written yet): the caller promises that the newer
        record, applied at the older one's place, gives the same state (a job's status
        records set absolute values). Records of short jobs then take one record, not two.
        """
        data = frame(payload)
        if key is None:
            return self.append_frame(data, tag)
        with self._cond:
            self._check_open_unlocked()
            batch = self._open_batch_unlocked()
            index = batch.slots.get(key)
            if index is None:
                batch.slots[key] = len(batch.frames)
                batch.frames.append(data)
                batch.nbytes += len(data)
                self._cond.notify_all()  # the completer waits on it too
            else:
                batch.nbytes += len(data) - len(batch.frames[index])
                batch.frames[index] = data
            if tag is not None:
                batch.tags.append(tag)
            return batch

    def append_all(self, entries):
        """Queue records [(payload, tag or None), ...] into one batch; return it.

        They are written, or refused, together (a request's jobs are all or nothing).
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
            self._cond.notify_all()  # the completer waits on it too
            return batch

    def append_frame(self, data, tag=None):
        """Queue one record already framed (e.g. received from the master, CRC checked)."""
        with self._cond:
            self._check_open_unlocked()
            batch = self._open_batch_unlocked()
            batch.frames.append(data)
            batch.nbytes += len(data)
            if tag is not None:
                batch.tags.append(tag)
            self._cond.notify_all()  # the completer waits on it too
            return batch

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
            if self._writing:  # taken by the committer, not yet handed on
                return self._writing[-1]
            return self._acks[-1][0][-1] if self._acks else None

    def rotate(self):
        """Close the current file for new records; return the Batch that completes rotation.

        Records appended before this call end up in ``journal.old`` once the returned
        batch is done; records appended after it go to a fresh ``journal``. The caller
        must remove ``journal.old`` (remove_old) before rotating again.
        """
        with self._cond:
            self._check_open_unlocked()
            batch = self._open_batch_unlocked()
            batch.rotate_after = True
            self.generation += 1
            self._cond.notify_all()  # the completer waits on it too
            return batch

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
        os.close(self._fd)

    def _check_open_unlocked(self):
        if self._failed is not None:
            raise errors.JobQueueError("journal failed: %s" % self._failed)
        if self._closing:
            raise errors.JobQueueError("journal is closed")

    def _open_batch_unlocked(self):
        if not self._queue or self._queue[-1].rotate_after:
            self._queue.append(Batch())
        return self._queue[-1]

    def _run(self):
        while True:
            with self._cond:
                while not self._queue and not self._closing and not self._probe_due():
                    self._cond.wait(self._probe_wait())
                if not self._queue and self._closing:
                    self._committed_all = True
                    self._cond.notify_all()
                    return
                batches, self._queue = self._queue, []
                self._writing = batches
            if batches:
                self._commit(batches)
                with self._cond:
                    self._writing = []
            else:
                self._probe()

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
        try:
            self._write_batches(batches)
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
        self._done_locally(batches)

    def _done_locally(self, batches):
        """Batches are on the local disk: hand them to replication, or finish them."""
        if not batches:
            return
        for batch in batches:
            batch.written.set()
        if self._replicate is None:
            self._finish(batches, None)
            return
        try:
            ticket = self._replicate([f for b in batches for f in b.frames])
        except errors.GenericError as err:
            ticket = _FailedTicket(err)
        for batch in batches:
            batch.ticket = ticket
        with self._cond:
            self._acks.append((batches, ticket))
            self._cond.notify_all()

    def _complete(self):
        """Completer thread: finish replicated batches in order as their tickets clear."""
        while True:
            with self._cond:
                while not self._acks and not self._committed_all:
                    self._cond.wait()
                if not self._acks:
                    return
                batches, ticket = self._acks[0]
            error = ticket.wait() if ticket is not None else None
            with self._cond:
                self._acks.popleft()
            self._finish(batches, error)

    def _write_batches(self, batches):
        """Write batches in order; _DiskError (with how many are durable) on failure."""
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
            self._flush(pending, durable)
        self.stats["records"] += sum(len(b.frames) for b in batches)
        self.stats["batches"] += 1

    def _flush(self, frames, durable=0):
        """Append frames and fdatasync; on a failed write, truncate back (see above)."""
        size = sum(len(f) for f in frames)
        if not size:
            return
        try:
            faults.check("journal.write")
            fsutil.write_all_buffers(self._fd, frames)
        except OSError as err:
            self._truncate(err, durable)
            raise _DiskError(err, durable) from None
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
        self._size += size
        self.stats["syncs"] += 1

    def _truncate(self, cause, durable):
        """Cut what a failed write left after the last good record, durably."""
        try:
            os.ftruncate(self._fd, self._size)
            os.fdatasync(self._fd)
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
        logger.critical("journal %s: %s; refusing every change: the daemon must exit and "
                        "replay the journal", self._path, cause)
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
        os.close(self._fd)
        os.rename(self._path, self._old_path)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fsutil.fsync_dir(self._dir)
        self._size = 0

    def _finish(self, batches, error):
        if error is None and self._on_durable is not None:
            tags = [t for b in batches for t in b.tags]
            try:
                self._on_durable(tags)
            except Exception:  # noqa: BLE001 - a listener bug must not stop commits
                logger.exception("durability listener failed")
        for batch in batches:
            batch.written.set()
            batch._complete(error)


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
    payloads = []
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
        report.damaged.append((pos, found - pos))
        pos = found
    # Damage after the last good record is a torn tail (an unacknowledged last write).
    report.damaged = [(off, n) for off, n in report.damaged if off < good_end]
    report.torn_tail = end - good_end
    report.records = len(payloads)
    return payloads, report


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
