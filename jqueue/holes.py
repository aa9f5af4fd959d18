"""Freeing the disk blocks of a range of a file whose size must not change.

An attempt's output file on a node (jqueue.exec) and a service's log at the master
(jqueue.store.joblogs) keep their offsets for good, as readers name bytes by them, while
the bytes they no longer need go: fallocate(2) punches them out, and reading them then
gives zeros.
"""

import os

#: fallocate(2)'s flags: free a range of a file, its size unchanged.
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
BLOCK = 4096
_libc = None


def punch(path, start, end):
    """Free the disk blocks of path's bytes from start to end (the whole 4 KiB blocks
    between), its size and other bytes unchanged. True if done; False where it cannot be
    (nothing whole between, a file system without holes, the file gone)."""
    global _libc
    first = -(-start // BLOCK) * BLOCK
    length = end - end % BLOCK - first
    if length <= 0:
        return False
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong,
                                    ctypes.c_longlong]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, first,
                               length) == 0
    finally:
        os.close(fd)
