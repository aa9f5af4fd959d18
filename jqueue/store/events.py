"""The event stream and the action log: every state change, numbered, kept and followed.

An event is a plain dict: ``serial`` (global, increasing; never reused, though a refused
change may leave a hole), ``time`` (epoch seconds), ``kind`` (``job``, ``attempt``,
``node``, ``service``), ``job`` (id, 0 for a node's or a service's own events), ``node``
(name or None), ``status`` (an upper-case word, BEX's where there is one: NEW, SEND, RUN,
OK, FAILED, TIMEOUT, KILLED, INTERR, NOPING, NOXFER, NODE_LOST, RETRY, DONE, UP, ...; for
services their states STARTING, RUNNING, BACKOFF, STOPPING, STOPPED, EXITED, FATAL and
NEW, MODIFIED, MOVED, REMOVED) and ``message``; a service's events also carry
``service`` (its name; their message starts with it).

Events are journal records like any change (jqueue.store.records, ``{"t": "ev"}``): they
are durable, replicated to the candidates and replayed after a crash along with the
change they describe, so a new master after a failover holds the same events under the
same serials. Once durable, an event goes to

- the ring of the last ``buffer`` events that WaitForEvents reads (``since`` older than
  the ring answers ``gap``: the client re-reads state instead of missing events);
- ``<state>/events.jsonl``, one JSON object per line, from which the ring is refilled
  when the queue is opened (``<state>/events.jsonl.1`` after a rotation);
- ``<state>/actions.log``, BEX's line ``YYYY-MM-DD HH:MM:SS <node or -> <job id> <STATUS>
  [<message>]`` (UTC unless configured; job id 0 for a node's own events), appended in
  whole lines (O_APPEND), rotated by size.

The files are appended without fsync and synced by the checkpoint before the journal
holding their records is dropped; a replay appends only the events past the last serial
the events file holds. An append the disk refuses (full) changes nothing in the file (it
is cut back to where it was) and is kept to be written again with the next one, or by the
checkpoint, which fails (and keeps the journal) until it is: the ring and the waiters
have the events at once regardless.
"""

import bisect
import functools
import json
import logging
import os
import threading
import time
import zlib

from jqueue import errors, ratelog, serializer, text
from jqueue.store import fsutil

logger = logging.getLogger(__name__)

DEFAULT_BUFFER = 10000
DEFAULT_ROTATE_BYTES = 64 * 1024 * 1024
EVENTS_FILE = "events.jsonl"
ACTIONS_FILE = "actions.log"
KEYS = ("serial", "time", "kind", "job", "node", "status", "message")
#: Keys an event has only when they apply.
OPTIONAL_KEYS = ("service",)


def action_line(event, utc=True):
    """The action log's line of an event (no newline)."""
    stamp = _stamp(int(event["time"]), utc)
    line = "%s %s %d %s" % (stamp, event.get("node") or "-", event.get("job") or 0,
                            event["status"])
    message = text.printable(" ".join(str(event.get("message") or "").split()))
    return line + (" " + message if message else "")


def digest(event):
    """A short digest of an event as the events file keeps it: what a resync compares
    (jqueue.cluster.replication)."""
    return zlib.crc32(serializer.dumps_answer(_stored(event)))


@functools.lru_cache(maxsize=4)
def _stamp(second, utc):
    """The action log's time of a whole second (events come many a second)."""
    return time.strftime("%Y-%m-%d %H:%M:%S",
                         time.gmtime(second) if utc else time.localtime(second))


def matches(event, flt):
    """Whether an event passes a WaitForEvents filter (None: every event).

    A filter is an object of optional keys: ``job`` (an id), ``node`` (a name),
    ``service`` (a service's name), ``kind`` (a kind or a list of kinds), ``status`` (a
    word or a list of words).
    """
    if not flt:
        return True
    for key in ("job", "node", "service"):
        if key in flt and flt[key] is not None and event.get(key) != flt[key]:
            return False
    for key in ("kind", "status"):
        wanted = flt.get(key)
        if wanted is None:
            continue
        wanted = [wanted] if isinstance(wanted, str) else wanted
        if event.get(key) not in wanted:
            return False
    return True


class _Waiter:
    __slots__ = ("filter", "key", "callback", "_log")

    def __init__(self, log, since, flt, callback):
        self._log, self.filter, self.callback = log, flt, callback
        self.key = (since, _filter_key(flt))    # what it asks: its group in the log

    def cancel(self):
        """Withdraw the wait (its timeout passed, or its client went away); nothing to do
        once it was answered (its log let go of it then)."""
        log = self._log
        if log is not None:
            log._remove(self)


class EventLog:
    """Durable events: the ring, the two files, and the waiters of WaitForEvents."""

    def __init__(self, directory, buffer=DEFAULT_BUFFER, rotate_bytes=DEFAULT_ROTATE_BYTES,
                 utc=True):
        self.directory = directory
        self._buffer = buffer
        self._rotate = rotate_bytes
        self._utc = utc
        self._ring = []             # events by serial; the last `buffer` are kept (_trim)
        self._lock = threading.Lock()
        # (since, filter key) -> {_Waiter: None}: the waiters asking the same thing, as
        # listeners that keep up do, are answered together (insertion-ordered, O(1) removal)
        self._waiters = {}
        self._dirty = False
        self._files = {}            # name -> _AppendFile
        self._refused = ratelog.CountedWarning(
            time.monotonic, "%d append(s) of events refused since the last warning, in %s: "
            "%s; kept, to be written with the next ones", logger)
        self.last_serial = 0        # the newest durable event's serial
        self.file_serial = 0        # the newest event in the events file (or kept for it)
        self._load()

    # Opening

    def _path(self, name):
        return os.path.join(self.directory, name)

    def _load(self):
        """Refill the ring from the events files (the previous generation first).

        Events are written in serial order: the kept ones are the last `buffer` lines
        that parse, read from the end (the files hold 10^5 and more; only those are
        parsed). Should their serials not rise one after another (files edited by hand),
        every line is read in order instead, and an event no newer than one before it is
        dropped.
        """
        lines = []
        for name in (EVENTS_FILE + ".1", EVENTS_FILE):
            try:
                with open(self._path(name), encoding="utf-8") as stream:
                    lines.extend(stream)
            except FileNotFoundError:
                continue
        kept = []  # newest first
        for line in reversed(lines):
            event = _parse(line)
            if event is None:
                continue
            if kept and event["serial"] >= kept[-1]["serial"]:
                kept = None
                break
            kept.append(event)
            if len(kept) == self._buffer:
                break
        if kept is None:
            for event in filter(None, map(_parse, lines)):
                if event["serial"] > self.last_serial:
                    self._ring.append(event)
                    self.last_serial = event["serial"]
                    self._trim()
        elif kept:
            self._ring = kept[::-1]
            self.last_serial = kept[0]["serial"]
        self.file_serial = self.last_serial

    # Durable events

    def add(self, events):
        """Events became durable (or were replayed): keep, write and tell the waiters.

        Events at or below the newest serial known are skipped (a replay), so each is
        written once. Returns [(callback, answer)] for the waiters answered now; the caller
        calls them (outside its locks).
        """
        with self._lock:
            fresh = [e for e in events if e["serial"] > self.last_serial]
            if not fresh:
                return []
            self._ring.extend(fresh)
            self._trim()
            self.last_serial = fresh[-1]["serial"]
            try:
                self._append_files(fresh)
            except OSError as err:  # kept by the files (see the module docstring)
                self._refused.count(self.directory, err)
            return self._collect_unlocked()

    def _trim(self):
        """Keep the last `buffer` events (dropping the older ones in amortized O(1))."""
        if len(self._ring) > 2 * self._buffer:
            del self._ring[:len(self._ring) - self._buffer]

    def _kept(self):
        """Index in the ring of the oldest event kept."""
        return max(0, len(self._ring) - self._buffer)

    def digests(self):
        """[[serial, digest], ...] of the events in the ring, oldest first."""
        with self._lock:
            return [[event["serial"], digest(event)] for event in self._ring[self._kept():]]

    def cut_from(self, serial):
        """Forget the events from serial on: out of the ring and off the end of both files
        (a candidate's own, which its master's resync replaces: see
        jqueue.cluster.replication). OSError if the files cannot be cut (their appends
        kept by a full disk cannot be written first)."""
        with self._lock:
            del self._ring[bisect.bisect_left(self._ring, serial, key=_serial):]
            self.last_serial = min(self.last_serial, serial - 1)
            self.file_serial = min(self.file_serial, serial - 1)
            cut = self._file(EVENTS_FILE).cut_lines(
                doomed=lambda line: (_parse(line) or {}).get("serial", 0) >= serial)
            self._file(ACTIONS_FILE).cut_lines(count=cut)  # a line for each event
            self._dirty = True

    def _append_files(self, events):
        # Each line as the event stream answers it (orjson): an event holds only what the
        # queue made, its time from the clock, never a float that JSON cannot hold.
        jsonl = b"".join(serializer.dumps_answer(_stored(e)) + b"\n" for e in events)
        lines = "".join(action_line(e, self._utc) + "\n" for e in events)
        self.file_serial = events[-1]["serial"]
        self._dirty = True
        events_file, actions_file = self._file(EVENTS_FILE), self._file(ACTIONS_FILE)
        events_file.keep(jsonl)
        actions_file.keep(lines.encode("utf-8"))
        try:
            events_file.flush()
        finally:
            actions_file.flush()

    def _file(self, name):
        handle = self._files.get(name)
        if handle is None:
            handle = self._files[name] = _AppendFile(self.directory, name, self._rotate)
        return handle

    def sync(self):
        """Make the files durable (the checkpoint calls this before dropping the journal).
        OSError if appends kept (refused) still cannot be written: the checkpoint fails
        and is tried again; DiskSyncError if the sync fails: not to be retried (see
        jqueue.store.journal)."""
        with self._lock:  # held: an append may rotate (close) a file meanwhile
            if not self._dirty:
                return
            for handle in self._files.values():
                handle.flush()
            self._dirty = False
            try:
                for handle in self._files.values():
                    handle.sync()
            except OSError as err:
                raise self._sync_error(err) from None
        try:
            fsutil.fsync_dir(self.directory)
        except OSError as err:
            raise self._sync_error(err) from None

    def _sync_error(self, err):
        return errors.DiskSyncError("cannot sync the events in %s: %s" % (self.directory, err))

    def close(self):
        """Sync and close the files."""
        self.sync()
        with self._lock:
            files, self._files = list(self._files.values()), {}
        for handle in files:
            handle.close()

    # Reading and waiting

    def read(self, since, flt=None, limit=1000):
        """{"events": [...], "last": serial, "gap": bool} after serial since (now)."""
        with self._lock:
            return self._answer_unlocked(since, flt, limit)

    def _answer_unlocked(self, since, flt, limit=1000):
        """The answer to (since, flt): found by bisection, so a waiter costs O(log buffer
        + what it gets), not a scan of the ring."""
        kept = self._kept()
        oldest = self._ring[kept]["serial"] if len(self._ring) > kept else self.last_serial + 1
        gap = since < oldest - 1 and since < self.last_serial
        start = bisect.bisect_right(self._ring, since, lo=kept, key=_serial)
        events = []
        for index in range(start, len(self._ring)):
            event = self._ring[index]
            if matches(event, flt):
                events.append(event)
                if limit is not None and len(events) > limit:
                    events.pop()
                    return {"events": events, "last": events[-1]["serial"], "gap": gap}
        return {"events": events, "last": self.last_serial, "gap": gap}

    def watch(self, since, flt, callback):
        """Call callback(answer) once an event after since passes flt (now if one has).

        Returns None if answered at once, else a handle with cancel(); no thread waits.
        """
        with self._lock:
            answer = self._answer_unlocked(since, flt)
            if not (answer["events"] or answer["gap"]):
                waiter = _Waiter(self, since, flt, callback)
                self._waiters.setdefault(waiter.key, {})[waiter] = None
                return waiter
        callback(answer)
        return None

    def _collect_unlocked(self):
        """The waiters answered by the newest events, each once. Waiters asking the same
        (since, filter) share one answer object, computed once per group (the LUXI server
        then encodes it once)."""
        ready, keep = [], {}
        for key, group in self._waiters.items():
            answer = self._answer_unlocked(key[0], next(iter(group)).filter)
            if answer["events"] or answer["gap"]:
                for waiter in group:
                    waiter._log = None  # answered: its cancel() has nothing to withdraw
                    ready.append((waiter.callback, answer))
            else:
                keep[key] = group
        self._waiters = keep
        return ready

    def _remove(self, waiter):
        with self._lock:
            group = self._waiters.get(waiter.key)
            if group is not None:
                group.pop(waiter, None)
                if not group:
                    del self._waiters[waiter.key]

    def waiter_count(self):
        with self._lock:
            return sum(len(group) for group in self._waiters.values())


def _serial(event):
    return event["serial"]


def _filter_key(flt):
    """A hashable form of a WaitForEvents filter."""
    if not flt:
        return None
    return tuple(sorted((key, tuple(value) if isinstance(value, list) else value)
                        for key, value in flt.items()))


def _stored(event):
    """An event as the events file keeps it: its keys, in order."""
    data = {k: event.get(k) for k in KEYS}
    data.update((k, event[k]) for k in OPTIONAL_KEYS if event.get(k) is not None)
    return data


def _parse(line):
    try:
        event = json.loads(line)
    except ValueError:
        return None  # a torn last line
    if not isinstance(event, dict) or not isinstance(event.get("serial"), int):
        return None
    return event


def _line_starts(fd, end, block=64 * 1024):
    """Offsets at which the lines of a file of whole lines (each ending with a newline)
    start, the last line's first; none if it is empty."""
    position = end - 1  # the last line's newline: not the start of another
    while position > 0:
        low = max(0, position - block)
        data = os.pread(fd, position - low, low)
        index = data.rfind(b"\n")
        while index >= 0:
            yield low + index + 1
            index = data.rfind(b"\n", 0, index)
        position = low
    if end > 0:
        yield 0


class _AppendFile:
    """A file appended in whole writes, rotated to ``<path>.1`` once it grows too big.

    What is kept (``keep``) is written by the next ``flush``, all of it or nothing: a
    write the disk refuses half way is cut off again, and stays kept."""

    def __init__(self, directory, name, rotate_bytes):
        self.directory, self.path = directory, os.path.join(directory, name)
        self._rotate = rotate_bytes
        self._fd = None
        self._size = 0
        self._kept = []

    def keep(self, data):
        self._kept.append(data)

    def flush(self):
        """Write what is kept; OSError (and it stays kept) if the disk refuses."""
        if not self._kept:
            return
        data = b"".join(self._kept)
        if self._fd is None:
            self._open()
        if self._rotate and self._size and self._size + len(data) > self._rotate:
            os.fdatasync(self._fd)
            os.replace(self.path, self.path + ".1")
            fd, self._fd = self._fd, None
            os.close(fd)
            self._open()
        try:
            fsutil.write_all(self._fd, data)
        except OSError:
            os.ftruncate(self._fd, self._size)  # no part of it: a line is whole or absent
            raise
        self._kept = []
        self._size += len(data)

    def cut_lines(self, doomed=None, count=None):
        """Cut whole lines off the end of the file, and of its previous generation when
        they reach back into it: those doomed(line) says (until one it does not), or the
        last count (what is kept is written first). How many were cut."""
        self.flush()
        cut = 0
        for path in (self.path, self.path + ".1"):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                break
            try:
                end = os.fstat(fd).st_size
                keep, whole = end, True
                for start in _line_starts(fd, end):
                    if count is not None and cut == count:
                        whole = False
                        break
                    if doomed is not None and not doomed(os.pread(fd, keep - start, start)):
                        whole = False
                        break
                    keep, cut = start, cut + 1
                if keep < end:
                    os.ftruncate(fd, keep)
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            if path == self.path:
                self._size = keep
            if not whole:
                break
        return cut

    def _open(self):
        os.makedirs(self.directory, 0o750, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o640)
        self._size = os.fstat(self._fd).st_size

    def sync(self):
        if self._fd is not None:
            os.fdatasync(self._fd)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
