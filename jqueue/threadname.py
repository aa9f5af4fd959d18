"""Kernel names for the daemons' threads."""

import ctypes
import ctypes.util

_prctl = getattr(ctypes.CDLL(ctypes.util.find_library("c") or None), "prctl", None)
_PR_SET_NAME = 15


def name_os_thread(name):
    """Give the calling thread name as its kernel name (Linux; at most 15 bytes kept).

    Python's thread names stay inside Python; this one shows in ``top -H``, ``ps -L``
    and ``/proc/PID/task/TID/comm``, so an operator (and bench/) can tell which of the
    daemon's threads spends the CPU. Does nothing where prctl is missing.
    """
    if _prctl is not None:
        _prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode("ascii", "replace")[:15]), 0, 0, 0)
