"""The daemon's Unix socket path: who holds it, and clearing what a dead daemon left.

Twisted's ``listenUNIX(..., wantPID=True)`` keeps a lock next to the socket, a symbolic
link ``<socket>.lock`` whose target is the holder's PID, and takes a stale socket over
only when that PID is dead. Two cases it gets wrong are handled here before listening:
the PID was reused by an unrelated process (after a reboot, or in a container where the
daemon always gets the same PID, our own), and a socket left without a lock. A socket
whose holder is alive is never touched. ``Port`` listens on it.
"""

import errno
import logging
import os
import socket
import stat

from twisted.internet import tcp, unix

from jqueue.daemon.common import StartupError
from jqueue.store import fsutil

logger = logging.getLogger(__name__)

#: Seconds of slack when comparing a process's start time with its lock's creation.
_START_SLACK = 2.0


class _Connection(unix.Server):
    """A connection to the daemon's socket, read with recv: LUXI passes no file
    descriptors, and Twisted's Unix connections read with recvmsg and look through its
    ancillary data at every read (2% of jq-masterd's CPU under 16 clients)."""

    doRead = tcp.Connection.doRead


class Port(unix.Port):
    """Twisted's Unix listening port (``listenUNIX``'s) with connections read by recv,
    whose close removes the socket file and its lock only if they are still its own.

    Twisted's removes them whatever they are: a run directory cleaned while the daemon
    ran (an operator, tmpfiles, systemd's RuntimeDirectory) made that raise, which failed
    the daemon's stop, and a socket another daemon bound there since would be removed.
    """

    transport = _Connection
    _bound = None

    def startListening(self):
        super().startListening()
        self._bound = _identity(self._bindPath)

    def connectionLost(self, reason):
        if self._bound is not None and _identity(self._bindPath) == self._bound:
            fsutil.unlink_quietly(self._bindPath)
        else:
            logger.warning("socket %s was removed or replaced while this daemon served it; "
                           "leaving it", os.fsdecode(self._bindPath))
        if self.lockFile is not None:
            try:
                self.lockFile.unlock()
            except (OSError, ValueError) as err:  # gone, or another process's now
                logger.warning("socket lock %s is not this daemon's any more (%s); leaving "
                               "it", os.fsdecode(self.lockFile.name), err)
        tcp.Port.connectionLost(self, reason)  # unix.Port's, without its removals


def _identity(path):
    """(device, inode) of the file at path (not followed), or None if there is none."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def lock_path(path):
    return path + ".lock"


def lock_holder(path):
    """The PID named by the socket's lock, or None if there is no lock."""
    try:
        target = os.readlink(lock_path(path))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StartupError("socket lock %s is unusable: %s" % (lock_path(path), err)) from None
    try:
        return int(target)
    except ValueError:
        raise StartupError("socket lock %s names no PID (%r); remove it if no daemon "
                           "runs" % (lock_path(path), target)) from None


def prepare(path):
    """Make path ready for listening: refuse a live holder, clear what a dead one left.

    Raises StartupError naming the holder if another process serves the socket.
    """
    pid = lock_holder(path)
    if pid is not None:
        if not _is_stale(pid, lock_path(path)):
            raise in_use_error(path, pid)
        logger.warning("removing the stale lock %s of PID %d (no such daemon any more)",
                       lock_path(path), pid)
        _remove_if_unchanged(lock_path(path), pid)
        _remove_socket(path)
    elif os.path.lexists(path):
        _clear_unlocked_socket(path)


def in_use_error(path, pid):
    return StartupError("socket %s is in use by PID %s (lock %s); is another jq-masterd "
                        "serving it?" % (path, pid, lock_path(path)))


def _is_stale(pid, lock):
    """Whether the lock's PID no longer runs the process that created the lock."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    started = process_start_time(pid)
    if started is None:
        return False
    try:
        created = os.lstat(lock).st_mtime
    except FileNotFoundError:
        return True
    return started > created + _START_SLACK


def process_start_time(pid):
    """When process pid started (seconds since the epoch), from /proc; None if unknown."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as stream:
            fields = stream.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as stream:
            boot = next(int(line.split()[1]) for line in stream if line.startswith(b"btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def _remove_if_unchanged(lock, pid):
    try:
        if os.readlink(lock) == str(pid):
            os.unlink(lock)
    except FileNotFoundError:
        pass


def _remove_socket(path):
    """Remove path if it is a socket; refuse to remove anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError("%s exists and is not a socket" % path)
    os.unlink(path)


def _clear_unlocked_socket(path):
    """A socket without a lock: remove it if nobody accepts on it, else refuse."""
    mode = os.lstat(path).st_mode
    if not stat.S_ISSOCK(mode):
        raise StartupError("%s exists and is not a socket" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as err:
        if err.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise StartupError("cannot check the socket %s: %s" % (path, err)) from None
        logger.warning("removing the stale socket %s (nobody accepts on it)", path)
        _remove_socket(path)
        return
    finally:
        probe.close()
    raise StartupError("socket %s is in use by another process (it accepts connections "
                       "but has no lock %s)" % (path, lock_path(path)))
