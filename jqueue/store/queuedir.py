"""The queue directory: job files, serial, version, drain flag, lock, archive, corrupt.

This module knows only the on-disk contract (compatible with Ganeti 2.10's queue):

    <queue>/job-<id>, serial, version, drain, lock, journal
    <queue>/archive/<id // 10000>/job-<id>
    <queue>/corrupt/job-<id>[.N]      (ours: unparseable files set aside)
    <queue>/.spares/<n>               (ours: replaced job files, written again: write_job)

Every path is built from a parsed, non-negative integer id, never from a caller's text.
"""

import concurrent.futures
import errno
import fcntl
import itertools
import logging
import os
import re
import stat
import time

from jqueue import constants, errors, ptypes, serializer
from jqueue.store import faults, fsutil

logger = logging.getLogger(__name__)

_JOB_FILE_RE = re.compile(r"\Ajob-([0-9]{1,19})\Z")


def parse_job_file_name(name):
    """Return the job id of a job file name (``job-<digits>``), else None."""
    match = _JOB_FILE_RE.match(name)
    if match is None:
        return None
    job_id = int(match.group(1))
    return job_id if job_id <= ptypes.MAX_JOB_ID else None


def parse_job_id(value):
    """Parse a job id from a caller (int or strict decimal string); ParameterError if not."""
    try:
        return ptypes.parse_job_id(value)
    except ValueError as err:
        raise errors.ParameterError("invalid job id: %s" % err) from None


def _read_all(dirfd, names):
    """Read files (by name, relative to dirfd): [(job_id, bytes or OSError)]."""
    out = []
    for job_id, name in names:
        try:
            fd = os.open(name, os.O_RDONLY, dir_fd=dirfd)
        except OSError as err:
            out.append((job_id, err))
            continue
        try:
            # A job file is a few KiB: one read takes it whole, and a short read of a
            # regular file is its end (no second read() to find it: a third of the calls).
            data = os.read(fd, _READ_SIZE)
            if len(data) == _READ_SIZE:
                chunks = [data]
                while data:
                    data = os.read(fd, _READ_SIZE)
                    chunks.append(data)
                data = b"".join(chunks)
            out.append((job_id, data))
        except OSError as err:
            out.append((job_id, err))
        finally:
            os.close(fd)
    return out


_READ_SIZE = 1 << 16
#: Where the files of replaced job files wait to be written again (see QueueDir.write_job).
SPARES_DIR = ".spares"
#: Spare files kept at most (each holds an old job file: a few KiB).
SPARES_MAX = 1024
#: link() errors that say this file system takes no hard links (spares are given up).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}
#: Files read first in the calling thread, and the time per file under which the rest
#: are too (they are in the page cache, where threads only fight over the GIL: 100,000
#: files in 1.2 s from one thread, 3.1 s from four); slower, a pool of threads reads
#: the rest (cold: 5.6 s with four threads, 7.9 s from one, 9.4 s with sixteen).
_PROBE_FILES = 500
_WARM_SECONDS_PER_FILE = 40e-6


class QueueDir:
    """Paths and file operations of one queue directory (not thread-safe by itself)."""

    def __init__(self, path, replicator=None):
        self.path = os.path.abspath(path)
        self.archive_dir = os.path.join(self.path, constants.ARCHIVE_DIR)
        self.corrupt_dir = os.path.join(self.path, constants.CORRUPT_DIR)
        self.spares_dir = os.path.join(self.path, SPARES_DIR)
        self._lock_fd = None
        #: The queue directory, held open by the lock's holder: a checkpoint's syncfs needs
        #: no new descriptor (one that ran out of them failed the queue for good).
        self._dir_fd = None
        self._replicator = replicator
        #: Paths of spare files (popped and appended by whichever thread writes: both
        #: are atomic), their next name, and whether this file system takes hard links.
        self._spares = []
        self._spare_names = itertools.count(1)
        self._keep_replaced = True

    # Paths

    def job_path(self, job_id):
        return os.path.join(self.path, "%s%d" % (constants.JOB_FILE_PREFIX, job_id))

    def archive_subdir(self, job_id):
        return os.path.join(self.archive_dir, str(job_id // constants.JOBS_PER_ARCHIVE_DIRECTORY))

    def archive_path(self, job_id):
        return os.path.join(self.archive_subdir(job_id),
                            "%s%d" % (constants.JOB_FILE_PREFIX, job_id))

    def file_path(self, name):
        return os.path.join(self.path, name)

    # Creation, version and lock

    def ensure_layout(self):
        """Create the queue directory and its version file if new; refuse other versions."""
        fsutil.makedirs(self.path)
        version_path = self.file_path(constants.VERSION_FILE)
        try:
            text = fsutil.read_file(version_path).decode("ascii", "replace").strip()
        except FileNotFoundError:
            if any(parse_job_file_name(n) is not None for n in os.listdir(self.path)):
                raise errors.JobQueueError("queue %s holds job files but no version file" %
                                           self.path) from None
            self.write_small_file(constants.VERSION_FILE, "%d\n" % constants.QUEUE_FORMAT_VERSION)
            return
        if text != str(constants.QUEUE_FORMAT_VERSION):
            raise errors.JobQueueError("queue %s has format version %r; this jqueue only "
                                       "understands version %d" % (
                                           self.path, text, constants.QUEUE_FORMAT_VERSION))

    def lock(self):
        """Take the exclusive queue lock at once or raise JobQueueError naming the holder."""
        path = self.file_path(constants.LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise errors.JobQueueError("queue %s is locked by PID %s" % (
                    self.path, holder)) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        self._lock_fd = fd
        self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        self._adopt_spares()

    def _adopt_spares(self):
        """Take the spare files the queue's last owner left (see write_job)."""
        fsutil.makedirs(self.spares_dir)
        self._spares, last = [], 0
        for name in os.listdir(self.spares_dir):
            path = os.path.join(self.spares_dir, name)
            try:
                info = os.lstat(path)
                if not (name.isdigit() and name.isascii() and stat.S_ISREG(info.st_mode)):
                    continue  # not ours: left alone, never written
                if info.st_nlink == 1 and len(self._spares) < SPARES_MAX:
                    self._spares.append(path)
                    last = max(last, int(name))
                else:
                    os.unlink(path)
            except OSError as err:
                logger.warning("queue %s: spare file %s: %s", self.path, name, err)
        self._spare_names = itertools.count(last + 1)

    def unlock(self):
        """Release the queue lock."""
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # Small files written outside the journal: temp, fsync, rename, fsync dir

    def write_small_file(self, name, text, sync=True):
        fsutil.write_file(self.file_path(name), text.encode("utf-8"), sync=sync)
        if self._replicator is not None:
            self._replicator.update_file(name, text)

    def read_serial(self):
        """The last allocated job id according to the serial file (0 if absent or bad)."""
        try:
            text = fsutil.read_file(self.file_path(constants.SERIAL_FILE)).decode("ascii")
            return int(text.strip())
        except FileNotFoundError:
            return 0
        except (ValueError, UnicodeDecodeError):
            logger.warning("queue %s: serial file unreadable; using the ids on disk", self.path)
            return 0

    def write_serial(self, serial, sync=True):
        """Write the serial file (durable at once, or at the next sync() if not sync)."""
        self.write_small_file(constants.SERIAL_FILE, "%d\n" % serial, sync)

    def read_replica_position(self):
        """A replica's last recorded replication position [epoch, session, seq], or None."""
        try:
            data = serializer.loads(fsutil.read_file(self.file_path(constants.REPLICA_FILE)))
            return [int(v) for v in data["position"]]
        except FileNotFoundError:
            return None
        except (errors.ParseError, KeyError, TypeError, ValueError):
            logger.warning("queue %s: replica position file unreadable", self.path)
            return None

    def write_replica_position(self, position, sync=False):
        """Record a replica's replication position (durable at the next sync() unless sync)."""
        fsutil.write_file(self.file_path(constants.REPLICA_FILE),
                          serializer.dumps_bytes({"position": list(position)}), sync=sync)

    def remove_replica_position(self):
        """Forget a replica position (the queue is now its own master); durable at once."""
        fsutil.remove_file(self.file_path(constants.REPLICA_FILE))

    def drain_flag(self):
        return os.path.exists(self.file_path(constants.DRAIN_FILE))

    def set_drain_flag(self, flag):
        path = self.file_path(constants.DRAIN_FILE)
        if flag:
            fsutil.write_file(path, b"")
        else:
            fsutil.remove_file(path)
        if self._replicator is not None:
            self._replicator.set_drain_flag(flag)

    # Job files

    def live_job_ids(self):
        """Ids of every ``job-<id>`` file in the queue directory."""
        ids = []
        for name in os.listdir(self.path):
            job_id = parse_job_file_name(name)
            if job_id is not None:
                ids.append(job_id)
        return ids

    def archived_job_ids(self):
        """Ids of every archived job file (archive/<n>/job-<id>)."""
        ids = []
        if not os.path.isdir(self.archive_dir):
            return ids
        for sub in os.listdir(self.archive_dir):
            subdir = os.path.join(self.archive_dir, sub)
            if not sub.isdigit() or not os.path.isdir(subdir):
                continue
            for name in os.listdir(subdir):
                job_id = parse_job_file_name(name)
                if job_id is not None:
                    ids.append(job_id)
        return ids

    def corrupt_job_ids(self):
        """Ids of job files set aside in corrupt/ (``job-<id>`` or ``job-<id>.N``)."""
        if not os.path.isdir(self.corrupt_dir):
            return []
        ids = []
        for name in os.listdir(self.corrupt_dir):
            job_id = parse_job_file_name(name.split(".", 1)[0])
            if job_id is not None:
                ids.append(job_id)
        return ids

    def read_live_jobs(self, skip=(), threads=4):
        """Yield (job_id, bytes or OSError) for every live job file not in skip.

        Files are read in inode order; from the page cache by the calling thread, else
        by a pool of threads (reads release the GIL): see _PROBE_FILES.
        """
        entries = sorted((entry.inode(), job_id, entry.name) for entry in os.scandir(self.path)
                         for job_id in [parse_job_file_name(entry.name)]
                         if job_id is not None and job_id not in skip)
        names = [(job_id, name) for _, job_id, name in entries]
        chunks = [names[i:i + _PROBE_FILES] for i in range(0, len(names), _PROBE_FILES)]
        dirfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            done = 0
            while done < len(chunks):  # while the files come from the page cache
                start = time.monotonic()
                part = _read_all(dirfd, chunks[done])
                done += 1
                cold = time.monotonic() - start >= _WARM_SECONDS_PER_FILE * len(part)
                yield from part
                if cold:
                    break
            if done < len(chunks):
                with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                    for part in pool.map(lambda chunk: _read_all(dirfd, chunk),
                                         chunks[done:]):
                        yield from part
        finally:
            os.close(dirfd)

    def has_live_job(self, job_id):
        return os.path.exists(self.job_path(job_id))

    def has_archived_job(self, job_id):
        return os.path.exists(self.archive_path(job_id))

    def read_job(self, job_id, archived=False):
        """Parse a job file into a dict; raise JobFileCorrupted or FileNotFoundError."""
        path = self.archive_path(job_id) if archived else self.job_path(job_id)
        data = fsutil.read_file(path)
        try:
            return serializer.loads(data)
        except errors.ParseError as err:
            raise errors.JobFileCorrupted("%s: %s" % (path, err)) from None

    def write_job(self, job_id, data, new=False):
        """Replace a live job file atomically (another file renamed over it); durable after
        sync(). new: the job has no file yet (its first write): none is kept as a spare,
        and no link to one is tried (a link that finds no file took 15 us of CPU here in
        a directory of 20,000 jobs, three times a stat's: most jobs are written once)."""
        faults.check("checkpoint.write")
        self._replace(self.job_path(job_id), data, keep=not new)

    def _replace(self, path, data, keep=True):
        """Write data to a spare file, or else a new temporary one, and rename it to path;
        the file it replaces becomes a spare.

        A checkpoint rewrites every job changed since the last one, each a new file whose
        rename frees the old one. On ext4 without a journal, every new inode is searched
        for past the inodes freed in the last minutes: after a burst of freed ones, a file
        took 170 us instead of 35 (5,000 job files rewritten four times). Spares are those
        inodes written again (overwritten, then cut to size): none is freed, none taken.
        A spare is written only while this is its one name (st_nlink), so that a link
        left by a failure can never change a job file through it. Without keep, the file
        replaced (if any) is freed rather than kept.
        """
        spare, fd = self._open_spare()
        if fd is None:
            directory, name = os.path.split(path)
            spare = os.path.join(directory, ".%s.tmp" % name)
            fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                         constants.JOB_FILE_MODE)
            reused = False
        else:
            reused = True
        try:
            fsutil.write_all(fd, data)
            if reused:
                os.ftruncate(fd, len(data))
        except BaseException:
            os.close(fd)
            self._drop(spare, reused)
            raise
        os.close(fd)
        kept = self._keep(path) if keep else None
        try:
            os.rename(spare, path)
        except BaseException:
            if kept is not None:
                fsutil.unlink_quietly(kept)
            self._drop(spare, reused)
            raise
        if kept is not None:
            self._spares.append(kept)

    def _open_spare(self):
        """(path, descriptor) of a spare file open for writing, or (None, None)."""
        while True:
            try:
                path = self._spares.pop()
            except IndexError:
                return None, None
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # removed by hand: the next one
            if os.fstat(fd).st_nlink == 1:
                return path, fd
            os.close(fd)
            fsutil.unlink_quietly(path)

    def _spare_name(self):
        """A new spare's path, or None (the spares full, or no hard links here)."""
        if not self._keep_replaced or len(self._spares) >= SPARES_MAX:
            return None
        return os.path.join(self.spares_dir, str(next(self._spare_names)))

    def _keep(self, path):
        """Link path (the file about to be replaced) into the spares; the link, or None
        (no file there, the spares full, or no hard links on this file system)."""
        kept = self._spare_name()
        if kept is None:
            return None
        try:
            os.link(path, kept)
        except OSError as err:
            # No file there (a new job's), no room, ...: freed as before, this time.
            if err.errno in _NO_HARD_LINKS:
                logger.info("queue %s: replaced job files are not kept as spares: %s",
                            self.path, err)
                self._keep_replaced = False
            return None
        return kept

    def _drop(self, spare, reused):
        """A write into spare failed: a spare goes back to the others, a temp file goes."""
        if reused:
            self._spares.append(spare)
        else:
            fsutil.unlink_quietly(spare)

    def _retire(self, path):
        """Remove a job file, keeping it as a spare if there is room."""
        kept = self._spare_name()
        if kept is not None:
            try:
                os.rename(path, kept)
            except OSError:
                pass  # gone already, or no spares' directory: removed below
            else:
                self._spares.append(kept)
                return
        fsutil.unlink_quietly(path)

    def archive_job(self, job_id, data=None):
        """Move a live job to the archive (writing data there first if given); no fsync."""
        subdir = self.archive_subdir(job_id)
        if not os.path.isdir(subdir):
            os.makedirs(subdir, 0o750, exist_ok=True)
        target = self.archive_path(job_id)
        faults.check("checkpoint.write")
        if data is not None:
            self._replace(target, data)
            self._retire(self.job_path(job_id))
        else:
            os.rename(self.job_path(job_id), target)
        if self._replicator is not None:
            self._replicator.rename_files([[os.path.relpath(self.job_path(job_id), self.path),
                                            os.path.relpath(target, self.path)]])

    def remove_job(self, job_id, archived=False):
        """Remove a live or archived job file if present (durable at the next sync())."""
        try:
            os.unlink(self.archive_path(job_id) if archived else self.job_path(job_id))
        except FileNotFoundError:
            pass

    def set_aside(self, job_id, reason):
        """Move an unparseable live job file to corrupt/ durably; return the new path."""
        os.makedirs(self.corrupt_dir, 0o750, exist_ok=True)
        base = os.path.join(self.corrupt_dir, "%s%d" % (constants.JOB_FILE_PREFIX, job_id))
        target, count = base, 0
        while os.path.exists(target):
            count += 1
            target = "%s.%d" % (base, count)
        os.rename(self.job_path(job_id), target)
        fsutil.fsync_dir(self.corrupt_dir)
        fsutil.fsync_dir(self.path)
        logger.error("job file %s is corrupt (%s); moved to %s", self.job_path(job_id),
                     reason, target)
        return target

    def sync(self):
        """Make every file written without fsync durable (one syncfs).

        DiskSyncError if it fails: not to be retried (see jqueue.store.journal).
        """
        try:
            faults.check("checkpoint.sync")
            fsutil.syncfs(self.path, self._dir_fd)
        except OSError as err:
            raise errors.DiskSyncError("cannot sync the queue %s: %s" % (self.path, err)
                                       ) from None
