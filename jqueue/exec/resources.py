"""What a node's machine has: its load and its memory, as the nodes' lists show them.

A node says them with each heartbeat (jq-noded's ``exec_poll`` answers: ``resources``), a
machine running its commands itself reads its own: ``load`` (the 1-minute load average),
``cpus``, ``mem_total`` and ``mem_available`` (bytes; /proc/meminfo's MemAvailable, what
can be had without swapping). Coalition's workers tab shows the same (Load, Memory). And
``mem_reserved``: the memory its daemon's ``memory_reserve`` keeps from the commands'
``memory_max`` (Slurm's MemSpecLimit). Read at most once a second: a node answers a poll
for every event.
"""

import math
import os
import time

from jqueue import constants

MEMINFO = "/proc/meminfo"
VMSTAT = "/proc/vmstat"
#: Seconds a reading is served again.
MAX_AGE = 1.0
#: The keys of a reading, all numbers (None where the machine does not tell).
KEYS = constants.NODE_RESOURCES


def read_meminfo(path=MEMINFO):
    """(MemTotal, MemAvailable) in bytes from a /proc/meminfo, None for one it lacks."""
    found = {}
    try:
        with open(path, "rb") as stream:
            for line in stream:
                name, _, rest = line.partition(b":")
                if name in (b"MemTotal", b"MemAvailable"):
                    fields = rest.split()
                    if fields and fields[0].isdigit():
                        found[name] = int(fields[0]) * 1024  # kB
    except OSError:
        pass
    return found.get(b"MemTotal"), found.get(b"MemAvailable")


def oom_kills():
    """How many processes the kernel's OOM killer has killed on this machine since it
    booted (/proc/vmstat's oom_kill, Linux 4.13 on), or None where it does not say."""
    try:
        fd = os.open(VMSTAT, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 1 << 16)
    except OSError:
        return None
    finally:
        os.close(fd)
    at = data.find(b"\noom_kill ")
    if at < 0:
        return None
    end = data.find(b"\n", at + 1)
    try:
        return int(data[at + 10:end if end > 0 else len(data)])
    except ValueError:
        return None


def read(reserve=0):
    """A reading of this machine now (a dict of KEYS), reserve bytes kept from commands."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    total, available = read_meminfo()
    return {"load": load, "cpus": os.cpu_count(), "mem_total": total,
            "mem_available": available, "mem_reserved": reserve}


class Resources:
    """This machine's readings, served again for MAX_AGE seconds; reserve: bytes of its
    memory kept from the commands (set_reserve changes it)."""

    def __init__(self, clock=time.monotonic, reader=read, reserve=0):
        self._clock, self._reader, self._reserve = clock, reader, reserve
        self._at, self._last = None, None

    def set_reserve(self, reserve):
        self._reserve, self._at = reserve, None

    def now(self):
        at = self._clock()
        if self._at is None or at - self._at >= MAX_AGE:
            self._at, self._last = at, self._reader(self._reserve)
        return self._last


def checked(value):
    """A reading a node sent, kept only as numbers >= 0 under KEYS (None: it sent none)."""
    if not isinstance(value, dict):
        return None
    return {key: number if isinstance(number, (int, float)) and not isinstance(number, bool)
            and math.isfinite(number) and number >= 0 else None
            for key, number in ((key, value.get(key)) for key in KEYS)}
