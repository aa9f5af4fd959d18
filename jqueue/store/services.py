"""The service table: every supervised service's definition, placement and last known
state, kept by the queue and journaled, replicated and replayed like jobs.

``<queue>/services.json`` is the table as the last checkpoint wrote it::

    {"next_id": N, "services": {name: record, ...}}

A record is a plain dict (see jqueue.run.services for its keys): ``id`` (never reused:
``next_id`` only grows), ``name``, ``version``, ``def`` (the definition), ``node``, the
last request (``target``, ``seq``) and the state the node last reported, plus the
service's log: ``log_bytes`` (its length), ``log_start`` (where what it keeps begins: its
end only is kept, and the bytes before are dropped from the file, its offsets unchanged,
once a checkpoint wrote the record saying so) and ``out`` ({run: bytes of that run's output
logged}).

Changes are journal records (jqueue.store.records): ``{"t": "svc", "n": name, "s":
record or null, "i": next id}`` sets (or removes) one service as a whole, so replaying
it is idempotent; a service's log grows by binary records like a command job's (magic
``\\0SL1``, see ``log_chunk_record``), written to ``<state>/logs/services/<id>.log``.
The file is rewritten (temp file, fsync, rename) by checkpoints, before the journal
holding its changes is dropped.
"""

import hashlib
import os
import struct

from jqueue import errors, serializer
from jqueue.store import fsutil

FILE_NAME = "services.json"
RECORD = "svc"
LOG_MAGIC = b"\0SL1"
_HEAD = struct.Struct(">QQIQ")
LOG_HEADER = len(LOG_MAGIC) + _HEAD.size
#: The directory of services' logs inside the logs directory.
LOGS_SUBDIR = "services"


class ServiceTable:
    """The services of a queue in memory, and their file (see the module docstring).

    Callers serialize access (the queue's lock). Records are replaced, never changed in
    place, so a record handed out stays as it was.
    """

    def __init__(self, queue_dir):
        self.path = os.path.join(queue_dir, FILE_NAME)
        self.services = {}      # name -> record
        self.next_id = 1
        self.dirty = False

    def load(self):
        """Read the file (none: an empty table); JobFileCorrupted if it is not a table."""
        try:
            data = fsutil.read_file(self.path)
        except FileNotFoundError:
            return
        try:
            table = serializer.loads(data)
            services = table["services"]
            next_id = table["next_id"]
            if not isinstance(services, dict) or not isinstance(next_id, int):
                raise TypeError("not a service table")
        except (errors.ParseError, KeyError, TypeError) as err:
            raise errors.JobFileCorrupted("%s is not a service table: %s" % (
                self.path, err)) from None
        self.services = services
        self.next_id = next_id

    def get(self, name):
        return self.services.get(name)

    def by_id(self, sid):
        for record in self.services.values():
            if record["id"] == sid:
                return record
        return None

    def allocate_id(self):
        """A new service id (recorded with the next change)."""
        sid = self.next_id
        self.next_id += 1
        return sid

    def set(self, name, record):
        """Put (or with None, remove) a service's record."""
        if record is None:
            self.services.pop(name, None)
        else:
            self.services[name] = record
            self.next_id = max(self.next_id, record["id"] + 1)
        self.dirty = True

    def apply(self, record):
        """Apply a decoded ``svc`` journal record (replay, replication)."""
        self.set(record["n"], record["s"])
        self.next_id = max(self.next_id, record.get("i") or 1)

    def apply_chunk(self, chunk):
        """Account a piece of a service's log in its record; False if no service has it."""
        for name, record in self.services.items():
            if record["id"] == chunk.service_id:
                self.services[name] = account_chunk(record, chunk)
                self.dirty = True
                return True
        return False

    def log_starts(self):
        """{service id: log_start} of the services whose log dropped its beginning."""
        return {record["id"]: record["log_start"] for record in self.services.values()
                if record.get("log_start")}

    def snapshot(self):
        """The table as the file's bytes."""
        return serializer.dumps_bytes({"next_id": self.next_id, "services": self.services})

    def write(self, data):
        """Write the file durably (data: a snapshot)."""
        fsutil.write_file(self.path, data)

    def digests(self):
        """{name: digest of its record}: equal records, equal digests (resync)."""
        return {name: record_digest(record) for name, record in self.services.items()}


def account_chunk(record, chunk):
    """A record with a log chunk accounted: the log's length and the run's output offset."""
    record = dict(record)
    record["log_bytes"] = max(record.get("log_bytes") or 0, chunk.end)
    if chunk.run:
        out = dict(record.get("out") or {})
        key = str(chunk.run)
        out[key] = max(out.get(key, 0), chunk.out_offset + len(chunk.data))
        record["out"] = out
    return record


def record_digest(record):
    return hashlib.sha256(serializer.dumps_bytes(record)).hexdigest()[:32]


def service_record(name, record, next_id):
    """The journal record setting (or, record None, removing) one service."""
    return serializer.dumps_bytes({"t": RECORD, "n": name, "s": record, "i": next_id})


class ServiceLogChunk:
    """A decoded piece of a service's log (see the module docstring)."""

    __slots__ = ("service_id", "offset", "run", "out_offset", "data")

    def __init__(self, service_id, offset, run, out_offset, data):
        self.service_id, self.offset, self.run = service_id, offset, run
        self.out_offset, self.data = out_offset, data

    @property
    def end(self):
        return self.offset + len(self.data)


def log_chunk_record(service_id, offset, run, out_offset, data):
    """The binary record of a piece of a service's log (run 0: a line of our own)."""
    return LOG_MAGIC + _HEAD.pack(service_id, offset, run, out_offset) + bytes(data)


def is_log_chunk(payload):
    return payload[:len(LOG_MAGIC)] == LOG_MAGIC


def parse_log_chunk(payload):
    """The ServiceLogChunk of a record; JobFileCorrupted if it is cut short."""
    if len(payload) < LOG_HEADER:
        raise errors.JobFileCorrupted("service log record of %d bytes is too short" %
                                      len(payload))
    fields = _HEAD.unpack_from(payload, len(LOG_MAGIC))
    return ServiceLogChunk(*fields, data=bytes(payload[LOG_HEADER:]))


def logs_directory(logs_dir):
    """Where the services' logs live inside a queue's logs directory."""
    return os.path.join(logs_dir, LOGS_SUBDIR)
