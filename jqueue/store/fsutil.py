"""Durable file operations: atomic replace, directory fsync, whole-filesystem sync."""

import ctypes
import ctypes.util
import errno
import logging
import os

from jqueue import fileread

logger = logging.getLogger(__name__)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def fsync_dir(path):
    """Flush a directory's entries (creations, renames, deletions) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path, fd=None):
    """Flush every dirty file and directory of the filesystem holding path (through fd, a
    descriptor of it the caller holds open, if given).

    One call replaces an fsync per file when many files were written; where the C
    library lacks syncfs, the whole system is synced instead.
    """
    if _syncfs is None:
        os.sync()
        return
    own = fd is None
    if own:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "syncfs(%s): %s" % (path, os.strerror(err)))
    finally:
        if own:
            os.close(fd)


def write_file(path, data, mode=0o640, sync=True, sync_dir=True):
    """Replace path atomically by data (bytes): temp file, write, [fsync], rename, [fsync dir].

    With sync=False the caller promises a later syncfs() before relying on the file.
    """
    dirname, basename = os.path.split(path)
    tmp = os.path.join(dirname, ".%s.tmp" % basename)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        fileread.write_all(fd, data)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    if sync and sync_dir:
        fsync_dir(dirname or ".")


def write_all(fd, data):
    """Write every byte of data to fd (os.write may write less than asked)."""
    fileread.write_all(fd, data)


#: Buffers one writev call takes (Linux's IOV_MAX).
_IOV_MAX = 1024


def write_all_buffers(fd, buffers):
    """Write every byte of buffers (a list of bytes) to fd in order, without joining
    them first (no copy of a large batch)."""
    for start in range(0, len(buffers), _IOV_MAX):
        chunk = buffers[start:start + _IOV_MAX]
        written = os.writev(fd, chunk)
        total = sum(len(b) for b in chunk)
        if written < total:  # rare for files: finish the rest the plain way
            fileread.write_all(fd, memoryview(b"".join(chunk))[written:])


def pwrite_all(fd, data, offset):
    """Write every byte of data to fd at offset (the file position does not move)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def unlink_quietly(path):
    """Remove path; a path already gone is no error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_file(path, sync_dir=True):
    """Remove path if it exists, then fsync its directory; return whether it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if sync_dir:
        fsync_dir(os.path.dirname(path) or ".")
    return True


#: The store reads files whole through this (jqueue.fileread: plain system calls).
read_file = fileread.read_file


def makedirs(path, mode=0o750):
    """Create a directory (and parents) if missing, then fsync its parent."""
    if os.path.isdir(path):
        return
    try:
        os.makedirs(path, mode)
    except OSError as err:
        if err.errno != errno.EEXIST:
            raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))
