"""Failpoints: make a named disk operation fail on its Nth call (tests only).

The store calls ``check(point)`` just before each operation that can fail on a real disk:

    journal.write      appending a group commit's records to the journal
    journal.sync       the journal's fdatasync
    checkpoint.write   writing a job file (or an archived one) at a checkpoint
    checkpoint.sync    the checkpoint's sync of the queue's filesystem

A test arms one with ``inject(point, errno.ENOSPC, nth=3)``: the third call from then on
raises OSError(ENOSPC) (``times`` calls in a row, default one), and ``clear()`` disarms
everything. Nothing is armed in production, where a check costs one dictionary lookup.
"""

import os
import threading

POINTS = ("journal.write", "journal.sync", "checkpoint.write", "checkpoint.sync")

_lock = threading.Lock()
_armed = {}  # point -> [calls left before failing, failures left, errno]


def inject(point, error, nth=1, times=1):
    """Make the nth call of point from now on (and times - 1 more) raise OSError(error)."""
    if point not in POINTS:
        raise ValueError("unknown failpoint %r (known: %s)" % (point, ", ".join(POINTS)))
    if nth < 1 or times < 1:
        raise ValueError("nth and times must be at least 1")
    with _lock:
        _armed[point] = [nth - 1, times, error]


def clear(point=None):
    """Disarm one failpoint, or all of them."""
    with _lock:
        if point is None:
            _armed.clear()
        else:
            _armed.pop(point, None)


def armed(point):
    """Whether point will still fail (tests ask before deciding what to expect)."""
    with _lock:
        return point in _armed


def check(point):
    """Raise the injected OSError if point is armed and its turn has come."""
    if not _armed:
        return
    with _lock:
        state = _armed.get(point)
        if state is None:
            return
        if state[0] > 0:
            state[0] -= 1
            return
        state[1] -= 1
        if state[1] <= 0:
            del _armed[point]
        error = state[2]
    raise OSError(error, "%s (injected at %s)" % (os.strerror(error), point))
