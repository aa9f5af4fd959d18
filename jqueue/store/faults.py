"""Failpoints: make a named disk operation fail on its Nth call (tests only).

The store calls ``check(point)`` just before each operation that can fail on a real disk:

    journal.write      appending a group commit's records to the journal
    journal.sync       the journal's fdatasync
    checkpoint.write   writing a job file (or an archived one) at a checkpoint
    checkpoint.sync    the checkpoint's sync of the queue's filesystem
    logs.sync          syncing command logs (before the journal records their extents,
                       and at a checkpoint)

A test arms one with ``inject(point, errno.ENOSPC, nth=3)``: the third call from then on
raises OSError(ENOSPC) (``times`` calls in a row, default one), and ``clear()`` disarms
everything. Nothing is armed in production, where a check costs one dictionary lookup.
End-to-end tests arm a daemon through its environment: ``JQ_FAILPOINTS`` holds
``point:ERRNO:nth[:times]`` items separated by commas (``journal.sync:EIO:5``), read by
``arm_from_environment`` when the daemon starts; it is meant for tests only.
"""

import errno
import os
import threading

ENV_VAR = "JQ_FAILPOINTS"

POINTS = ("journal.write", "journal.sync", "checkpoint.write", "checkpoint.sync", "logs.sync")

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


def arm_from_environment(environ=os.environ):
    """Arm the failpoints named in JQ_FAILPOINTS; return how many (ValueError if bad)."""
    text = environ.get(ENV_VAR, "").strip()
    if not text:
        return 0
    items = [item.split(":") for item in text.split(",")]
    for item in items:
        if len(item) not in (3, 4) or not hasattr(errno, item[1]):
            raise ValueError("%s: %r is not point:ERRNO:nth[:times]" % (ENV_VAR, ":".join(item)))
        inject(item[0], getattr(errno, item[1]), int(item[2]),
               int(item[3]) if len(item) == 4 else 1)
    return len(items)
