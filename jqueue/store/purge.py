"""Purging archived jobs: finding old archive files, removing them with their logs, and the
archive directories they leave empty.

An archived job is old once its file in ``archive/`` has not changed for a while (its
mtime: when it was archived, or last changed before a move; Ganeti's cleaner counts the
same way). Scans go through the archive in id order from a cursor and stop after a bounded
number of files, so that a pass over a huge archive costs a slice of it and the next pass
goes on where this one stopped. What is removed is counted in bytes as ``du`` counts them
(allocated blocks), files and directories alike.

Removal is not synced here: the caller journals the purge first (a replay removes the
files again) and the next checkpoint syncs the directories.
"""

import errno
import os

from jqueue.store.queuedir import parse_job_file_name


class Scan:
    """What one scan found: old job ids, the cursor to go on from, and whether it ended."""

    __slots__ = ("ids", "cursor", "wrapped", "examined")

    def __init__(self):
        self.ids = []
        self.cursor = None     # (directory number, last job id examined) or None: the start
        self.wrapped = False   # the scan reached the end of the archive
        self.examined = 0


def scan_archive(qdir, cutoff, cursor=None, limit=None, max_ids=None):
    """Archived job ids whose file's mtime is before cutoff (epoch seconds), in id order,
    from cursor (see Scan), examining at most limit files and finding at most max_ids."""
    scan = Scan()
    directories = _archive_directories(qdir)
    start_dir, start_id = cursor if cursor is not None else (-1, -1)
    for number in directories:
        if number < start_dir:
            continue
        path = os.path.join(qdir.archive_dir, str(number))
        for job_id, mtime in _entries(path):
            if number == start_dir and job_id <= start_id:
                continue
            if ((limit is not None and scan.examined >= limit)
                    or (max_ids is not None and len(scan.ids) >= max_ids)):
                return scan
            scan.examined += 1
            scan.cursor = (number, job_id)
            if mtime < cutoff:
                scan.ids.append(job_id)
    scan.wrapped = True
    scan.cursor = None
    return scan


def _archive_directories(qdir):
    try:
        names = os.listdir(qdir.archive_dir)
    except FileNotFoundError:
        return []
    return sorted(int(name) for name in names if name.isascii() and name.isdigit())


def _entries(path):
    """(job id, mtime) of the job files of an archive directory, by id."""
    found = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                job_id = parse_job_file_name(entry.name)
                if job_id is None:
                    continue
                try:
                    found.append((job_id, entry.stat(follow_symlinks=False).st_mtime))
                except FileNotFoundError:
                    continue
    except (FileNotFoundError, NotADirectoryError):
        return []
    found.sort()
    return found


def remove_archived(qdir, logs, job_ids):
    """Remove the archive files of job_ids and their command logs, then the archive
    directories left empty; the bytes freed (allocated blocks, as du counts)."""
    freed = 0
    directories = set()
    for job_id in job_ids:
        freed += _remove(qdir.archive_path(job_id))
        directories.add(qdir.archive_subdir(job_id))
        if logs is not None:
            freed += _remove_log(logs, job_id)
    return freed + remove_empty_directories(directories)


def remove_live(qdir, logs, job_ids):
    """Remove live job files (a replica's resync) and their logs; the bytes freed."""
    freed = 0
    for job_id in job_ids:
        freed += _remove(qdir.job_path(job_id))
        if logs is not None:
            freed += _remove_log(logs, job_id)
    return freed


def remove_empty_directories(paths):
    """rmdir each of paths that is empty (not the others); the bytes freed."""
    freed = 0
    for path in sorted(paths):
        try:
            size = _allocated(path)
            os.rmdir(path)
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
            continue
        freed += size
    return freed


def empty_archive_directories(qdir):
    """Every archive directory without a job file (left by an interrupted purge)."""
    paths = [os.path.join(qdir.archive_dir, str(number))
             for number in _archive_directories(qdir)]
    return [path for path in paths if _is_empty(path)]


def _is_empty(path):
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except (FileNotFoundError, NotADirectoryError):
        return False


def _remove(path):
    try:
        size = _allocated(path)
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return size


def _remove_log(logs, job_id):
    size = _allocated(logs.file_path(job_id))
    return size if logs.remove(job_id) else 0


def _allocated(path):
    try:
        return os.lstat(path).st_blocks * 512
    except FileNotFoundError:
        return 0

