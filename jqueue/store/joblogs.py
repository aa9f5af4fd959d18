"""Command logs: one file per job, ``<state>/logs/<job-id>.log``, outside the queue directory.

A command job's log holds its output as written (bytes unchanged) between lines of our
own starting with ``* `` (attempt banners). The log grows only through journal records
(jqueue.store.records), each naming its absolute offset in the file; whatever lies beyond
the last acknowledged byte is cut off when the queue is opened. A small piece, and every
piece in a replica (a candidate journals what its master sends), is journaled with its
bytes (``log_chunk_record``): writing them is idempotent and replaying the journal after
a crash rewrites exactly the acknowledged bytes; the files are written without fsync and
synced by the checkpoint before the journal that covers them is dropped (by its syncfs of
the queue's file system, where the logs are on it). A master
journals only where the bytes of a big piece are (``log_extent_record``;
jqueue.queue.EXTENT_MIN) and syncs the files first (sync_now, from the journal's
before_write): each byte is then written to the disk once, not twice; its candidates get
the bytes (jqueue.queue.JobQueue.replicated_frames).

Files are opened per call through a small cache of descriptors (a daemon may follow
thousands of logs; the cache keeps the busiest ones open).

A service's log keeps only its end (jqueue.run.services): the bytes before its start are
punched out of the file (drop_before), which keeps its size, so that offsets never change.
"""

import collections
import os
import resource
import threading

from jqueue import errors, holes
from jqueue.store import faults, fsutil

#: Descriptors kept open for writing: at most this many, and at most an eighth of the
#: process's soft RLIMIT_NOFILE (which jq-masterd's executor raises to 65,536: a pidfd
#: per running attempt). A command job's log is written at its start and at its end: at
#: 64, a burst of 1,000 `true` jobs opened each log twice (jq-masterd 2.1-2.5 -> 1.9-2.0
#: ms of CPU a job at 1,024).
MAX_OPEN = 1024
NOFILE_SHARE = 8
#: Bytes at the end of a log left in the page cache once it is synced, for its followers;
#: the rest is dropped. A log is written once and seldom read whole: kept, 200 MB of a
#: command's output would be 200 MB of cache for good, crowding out what the machine
#: uses, and every new piece would take fresh memory instead of pages just freed (on a
#: virtual machine whose freed memory goes back to its host, fresh pages cost several
#: times the copy: a 200 MB log was written at 200-400 MB/s keeping its pages, about
#: 730 MB/s dropping them).
CACHED_TAIL = 8 * 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")
_SUFFIX = ".log"


def _max_open():
    """How many descriptors the cache may keep now (see MAX_OPEN)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN
    return max(1, min(MAX_OPEN, soft // NOFILE_SHARE))


class LogStore:
    """The logs directory of a queue: write at offsets, read, truncate, sync, remove."""

    def __init__(self, directory):
        self.path = directory
        self._lock = threading.Lock()
        self._fds = collections.OrderedDict()  # job id -> fd, most recent last
        self._dirty = set()
        self._long = set()  # dirty logs written beyond CACHED_TAIL (their cache is dropped)
        self._created = False  # a file was made since the directory was last synced
        self._made = False
        self._dropped = {}  # log id -> bytes at its start punched out (drop_before)

    def file_path(self, job_id):
        """The log file of job_id (an int: never a path from a caller)."""
        if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 0:
            raise errors.ProgrammerError("job id %r is not a job id" % (job_id,))
        return os.path.join(self.path, "%d%s" % (job_id, _SUFFIX))

    def write(self, job_id, offset, data):
        """Write data at offset of job_id's log (creating it and the directory)."""
        with self._lock:
            fd = self._fd_unlocked(job_id)
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            self._dirty.add(job_id)
            if offset > CACHED_TAIL:
                self._long.add(job_id)

    def _fd_unlocked(self, job_id):
        fd = self._fds.get(job_id)
        if fd is not None:
            self._fds.move_to_end(job_id)
            return fd
        if not self._made:
            os.makedirs(self.path, 0o750, exist_ok=True)
            self._made = True
        fd = os.open(self.file_path(job_id), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._created = True
        self._fds[job_id] = fd
        limit = _max_open()
        while len(self._fds) > limit:
            _, old_fd = self._fds.popitem(last=False)
            os.close(old_fd)  # still dirty if it was: sync() reopens it by its path
        return fd

    def written(self, job_id):
        """job_id's log is written no more (its job ended): its descriptor closed, if
        open. Kept, the descriptors of ended jobs filled the cache, and every command
        spawned copied them and closed them again at its exec (1,024 of them a `true` job
        after a burst). A write after all opens it again; a sync reopens it by its path,
        as it does one the cache dropped."""
        with self._lock:
            fd = self._fds.pop(job_id, None)
            if fd is not None:
                os.close(fd)

    def read(self, job_id, offset, max_bytes):
        """Up to max_bytes of job_id's log from offset (b"" if none, or no log)."""
        try:
            with open(self.file_path(job_id), "rb") as stream:
                stream.seek(offset)
                return stream.read(max_bytes)
        except FileNotFoundError:
            return b""

    def size(self, job_id):
        """Bytes in job_id's log file (0 if it has none)."""
        try:
            return os.stat(self.file_path(job_id)).st_size
        except FileNotFoundError:
            return 0

    def truncate(self, job_id, size):
        """Cut job_id's log to size bytes if it is longer (bytes never acknowledged)."""
        path = self.file_path(job_id)
        with self._lock:
            try:
                if os.stat(path).st_size > size:
                    os.truncate(path, size)
                    self._dirty.add(job_id)
                    return True
            except FileNotFoundError:
                pass
        return False

    def sync(self, then_syncfs=None):
        """Make every log written since the last sync durable (the checkpoint calls this).

        The files are synced by path, outside the lock: writers go on meanwhile. With
        then_syncfs, the path of a directory whose file system the caller syncs whole
        next (syncfs): if it holds the logs, only those long enough to have their cache
        dropped are synced here, the others left to that one flush (a checkpoint after
        1,000 short command jobs made 1,000 fdatasync, each a flush of the disk's cache).
        """
        covered = then_syncfs is not None and _same_file_system(self.path, then_syncfs)
        with self._lock:
            if covered:
                self._dirty &= self._long
                self._created = False
            dirty = set(self._dirty)
        self._sync(dirty)

    def sync_now(self, job_ids):
        """Make the logs of job_ids durable now (the journal's before_write, in its
        committer thread: their extents must not be durable before their bytes)."""
        self._sync(set(job_ids))

    def _sync(self, job_ids):
        """fdatasync the logs of job_ids, and the directory if a file was made since it
        was last synced; DiskSyncError if that fails (see jqueue.store.journal)."""
        with self._lock:
            self._dirty -= job_ids
            self._long -= job_ids
            created, self._created = self._created, False
        try:
            try:
                faults.check("logs.sync")
                for job_id in sorted(job_ids):
                    _sync_path(self.file_path(job_id))
                if created:
                    fsutil.fsync_dir(self.path)
            except OSError as err:
                # Not to be retried: a failed sync may have dropped the bytes, and a later
                # one (on a new descriptor) reports success all the same.
                raise errors.DiskSyncError("cannot sync the logs in %s: %s" % (
                    self.path, err)) from None
        except BaseException:
            with self._lock:
                self._dirty |= job_ids
                self._created = self._created or created
            raise

    def drop_before(self, job_id, offset):
        """Free the disk blocks of job_id's log before offset (those whole blocks): its
        size and its other bytes unchanged, reading them gives zeros. Asked again for the
        same offset, nothing is done; where holes cannot be made, the bytes stay."""
        with self._lock:
            if offset <= self._dropped.get(job_id, 0):
                return
            self._dropped[job_id] = offset
        holes.punch(self.file_path(job_id), 0, offset)

    def remove(self, job_id):
        """Delete job_id's log (retention); True if there was one."""
        with self._lock:
            fd = self._fds.pop(job_id, None)
            if fd is not None:
                os.close(fd)
            self._dirty.discard(job_id)
            self._long.discard(job_id)
            self._dropped.pop(job_id, None)
            try:
                os.unlink(self.file_path(job_id))
            except FileNotFoundError:
                return False
        return True

    def close(self, sync=True):
        """Sync (unless told not to: after a failed sync nothing more is trusted) and close
        every descriptor."""
        if sync:
            self.sync()
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _same_file_system(path, other):
    """Whether path (if it exists) is on other's file system."""
    try:
        return os.stat(path).st_dev == os.stat(other).st_dev
    except FileNotFoundError:
        return False


def _sync_path(path):
    """fdatasync the file at path, then drop all but its last CACHED_TAIL bytes from the
    page cache (clean now: dropping them writes nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
        cold = (os.fstat(fd).st_size - CACHED_TAIL) & ~(PAGE - 1)
        if cold > 0:
            os.posix_fadvise(fd, 0, cold, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def default_directory(queue_dir):
    """``<state>/logs`` for a queue in ``<state>/queue`` (the daemons' layout)."""
    return os.path.join(os.path.dirname(os.path.abspath(queue_dir)), "logs")
