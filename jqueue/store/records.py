"""Journal record formats: how the queue encodes job changes and how replay applies them.

Records (JSON objects):

    {"t": "job",  "job": <job file object>}           full state (new job, or first
                                                      change of a job after a rotation)
    {"t": "st",   "id": N, "s": <QueuedJob.state_dict()>}   status/priority/timestamps
    {"t": "log",  "id": N, "e": [[op_index, entry], ...]}   new log entries
    {"t": "arch", "id": N}                            job archived
    {"t": "del",  "id": N, "a": bool}                 job removed (replica resync only;
                                                      "a": from the archive)
    {"t": "purge", "ids": [N, ...]}                   archived jobs purged: their files
                                                      and command logs removed (retention)
    {"t": "pos",  "p": [epoch, session, seq]}         replication position (replicas)
    {"t": "ev",   "e": <event>}                       an event (jqueue.store.events)
    {"t": "svc",  "n": name, "s": record|null, "i": N}   a service set or removed
                                                      (jqueue.store.services)
    (empty)                                           the journal's probe of a disk that
                                                      refused a write: means nothing

and one binary record, a piece of a command job's log (jqueue.store.joblogs), whose data
travels as written (bytes, not JSON):

    b"\\0LG1" | job id (u64) | offset in the log (u64) | opcode index (u16)
              | attempt (u32; 0: a line of our own) | offset in that attempt's output (u64)
              | data

and a piece of a service's log (jqueue.store.services), ``b"\\0SL1"`` and its own header.
A master journals a big piece of a command log as an *extent*: the same header and the
piece's length, the bytes being in the log file, made durable before the record is (the
journal's before_write); what it sends its candidates carries the bytes instead:

    b"\\0LX1" | job id | offset in the log | opcode index | attempt | offset in that
              attempt's output | length (u64)

The first record of a job in each journal generation is a full one, so replaying a
generation never depends on a job file rewritten during that generation. Every record
sets absolute values (logs are deduplicated by serial), so replay is idempotent.
"""

import hashlib
import struct

from jqueue import errors, serializer
from jqueue.job import QueuedJob
from jqueue.store import services as services_mod

JOB = "job"
STATE = "st"
LOG = "log"
ARCHIVE = "arch"
DELETE = "del"
PURGE = "purge"
POSITION = "pos"
EVENT = "ev"
LOG_CHUNK_MAGIC = b"\0LG1"
_CHUNK_HEAD = struct.Struct(">QQHIQ")
LOG_CHUNK_HEADER = len(LOG_CHUNK_MAGIC) + _CHUNK_HEAD.size
LOG_EXTENT_MAGIC = b"\0LX1"
_EXTENT_HEAD = struct.Struct(">QQHIQQ")
LOG_EXTENT_SIZE = len(LOG_EXTENT_MAGIC) + _EXTENT_HEAD.size


def job_bytes(job):
    """The job file content of a job."""
    return serializer.dumps_bytes(job.to_dict())


def full_record(job_data):
    """The full record of a job given in the job file format (a dict)."""
    return serializer.dumps_bytes({"t": JOB, "job": job_data})


def job_record(job):
    return full_record(job.to_dict())


def job_record_and_bytes(job):
    """(full record, job file bytes) of a job, encoding the job once.

    The record is the file's bytes inside ``{"t":"job","job":...}``: byte for byte what
    full_record() gives (compact separators, keys in this order).
    """
    data = job_bytes(job)
    return b'{"t":"%s","job":%s}' % (JOB.encode("ascii"), data), data


def job_digest(job):
    """Content digest of a job as the queue serializes it: equal state, equal digest.

    The master and its replicas compare these to find what a resync must send.
    """
    return hashlib.sha256(job_bytes(job)).hexdigest()[:32]


def state_record(job, state=None):
    """The state record of a job (state: its state_dict(), if the caller has it)."""
    return serializer.dumps_bytes({"t": STATE, "id": job.id,
                                   "s": job.state_dict() if state is None else state})


def log_record(job_id, op_index, entry):
    return serializer.dumps_bytes({"t": LOG, "id": job_id, "e": [[op_index, entry]]})


def archive_record(job_id):
    return serializer.dumps_bytes({"t": ARCHIVE, "id": job_id})


def delete_record(job_id, archived):
    return serializer.dumps_bytes({"t": DELETE, "id": job_id, "a": bool(archived)})


def purge_record(job_ids):
    return serializer.dumps_bytes({"t": PURGE, "ids": list(job_ids)})


def purge_ids(record):
    """The job ids of a decoded purge record; JobFileCorrupted if they are not ids."""
    ids = record["ids"]
    if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise errors.JobFileCorrupted("purge record with ids %r" % (ids,))
    return ids


def position_record(position):
    return serializer.dumps_bytes({"t": POSITION, "p": list(position)})


def event_record(event):
    # Written as the event stream answers it (orjson): an event holds only what the queue
    # made, its time from the clock, never a float that JSON cannot hold.
    return serializer.dumps_answer({"t": EVENT, "e": event})


class LogChunk:
    """A decoded log chunk record, or an extent's (data None; see the module docstring)."""

    __slots__ = ("job_id", "offset", "op_index", "attempt", "out_offset", "data", "size")

    def __init__(self, job_id, offset, op_index, attempt, out_offset, data, size=None):
        self.job_id, self.offset, self.op_index = job_id, offset, op_index
        self.attempt, self.out_offset, self.data = attempt, out_offset, data
        self.size = len(data) if size is None else size

    @property
    def end(self):
        """The log offset just past this chunk."""
        return self.offset + self.size


def log_chunk_record(job_id, offset, op_index, attempt, out_offset, data):
    return (LOG_CHUNK_MAGIC + _CHUNK_HEAD.pack(job_id, offset, op_index, attempt, out_offset)
            + bytes(data))


def is_log_chunk(payload):
    return payload[:len(LOG_CHUNK_MAGIC)] == LOG_CHUNK_MAGIC


def parse_log_chunk(payload):
    """The LogChunk of a chunk record; JobFileCorrupted if it is cut short."""
    if len(payload) < LOG_CHUNK_HEADER:
        raise errors.JobFileCorrupted("log chunk record of %d bytes is too short" %
                                      len(payload))
    fields = _CHUNK_HEAD.unpack_from(payload, len(LOG_CHUNK_MAGIC))
    return LogChunk(*fields, data=bytes(payload[LOG_CHUNK_HEADER:]))


def log_extent_record(job_id, offset, op_index, attempt, out_offset, size):
    return LOG_EXTENT_MAGIC + _EXTENT_HEAD.pack(job_id, offset, op_index, attempt,
                                                out_offset, size)


def is_log_extent(payload):
    return payload[:len(LOG_EXTENT_MAGIC)] == LOG_EXTENT_MAGIC


def parse_log_extent(payload):
    """The LogChunk (data None) of an extent record; JobFileCorrupted if its size is not
    an extent's."""
    if len(payload) != LOG_EXTENT_SIZE:
        raise errors.JobFileCorrupted("log extent record of %d bytes, not %d" % (
            len(payload), LOG_EXTENT_SIZE))
    *fields, size = _EXTENT_HEAD.unpack_from(payload, len(LOG_EXTENT_MAGIC))
    return LogChunk(*fields, data=None, size=size)


def apply_log_chunk(job, chunk):
    """Account a chunk in its job: the log's length and the attempt's output offset.

    The job's exec state is replaced, never changed in place (readers serialize it
    without the queue lock).
    """
    job.log_bytes = max(job.log_bytes, chunk.end)
    if not chunk.attempt:
        return
    if chunk.op_index >= len(job.ops):
        raise errors.JobFileCorrupted("log chunk for opcode %d of job %d, which has %d" % (
            chunk.op_index, job.id, len(job.ops)))
    op = job.ops[chunk.op_index]
    state = dict(op.exec_state or {})
    out = dict(state.get("out") or {})
    key = str(chunk.attempt)
    out[key] = max(out.get(key, 0), chunk.out_offset + chunk.size)
    state["out"] = out
    op.exec_state = state


class Replay:
    """Applies records in order over jobs loaded lazily from their files.

    ``load(job_id)`` returns the QueuedJob of the live job file or None;
    ``in_archive(job_id)`` tells whether the job's archive file exists; ``write_log(job_id,
    offset, data)``, if given, writes log chunks into the job's log file. After replay,
    ``jobs`` holds every job a record touched, ``archived`` the ids archived, ``deleted``
    and ``deleted_archived`` the ids a resync removed, ``purged`` the ids purged, and
    ``position`` the last replication position recorded (replicas only).
    """

    def __init__(self, load, in_archive, write_log=None, services=None,
                 write_service_log=None):
        self._load = load
        self._in_archive = in_archive
        self._write_log = write_log
        self._services = services
        self._write_service_log = write_service_log
        self.services_changed = False   # a service record or log piece was replayed
        self.jobs = {}
        self.archived = set()
        self.deleted = set()
        self.deleted_archived = set()
        self.purged = set()
        self.position = None
        self.events = []        # event dicts, in journal order
        self.problems = []

    def apply(self, payload):
        """Apply one record (bytes); a record that cannot apply is noted in problems."""
        if not payload:
            return  # the journal's probe
        try:
            if is_log_chunk(payload):
                self._apply_chunk(parse_log_chunk(payload))
                return
            if is_log_extent(payload):  # its bytes are in the log file already
                extent = parse_log_extent(payload)
                apply_log_chunk(self._job(extent.job_id), extent)
                return
            if services_mod.is_log_chunk(payload):
                self._apply_service_chunk(services_mod.parse_log_chunk(payload))
                return
            record = serializer.loads(payload)
            kind = record["t"]
            if kind == services_mod.RECORD:
                if self._services is not None:
                    self._services.apply(record)
                    self.services_changed = True
                return
            if kind == JOB:
                job = QueuedJob.from_dict(record["job"])
                self.jobs[job.id] = job
                self.archived.discard(job.id)
                self.deleted.discard(job.id)
                return
            if kind == EVENT:
                self.events.append(record["e"])
                return
            if kind == POSITION:
                self.position = list(record["p"])
                return
            if kind == DELETE:
                self._delete(record["id"], record["a"])
                return
            if kind == PURGE:
                for job_id in purge_ids(record):
                    self._delete(job_id, True)
                    self.purged.add(job_id)
                return
            if kind == ARCHIVE and record["id"] not in self.jobs and self._in_archive(
                    record["id"]):
                return  # a checkpoint already moved it; the record is done
            job = self._job(record["id"])
            if kind == STATE:
                job.apply_state(record["s"])
            elif kind == LOG:
                job.add_log_entries(record["e"])
            elif kind == ARCHIVE:
                self.archived.add(job.id)
            else:
                raise errors.JobFileCorrupted("unknown record type %r" % (kind,))
        except (errors.GenericError, KeyError, TypeError, IndexError, ValueError) as err:
            self.problems.append("record %s: %s" % (payload[:80], err))

    def _apply_chunk(self, chunk):
        job = self._job(chunk.job_id)
        apply_log_chunk(job, chunk)
        if self._write_log is not None:
            self._write_log(chunk.job_id, chunk.offset, chunk.data)

    def _apply_service_chunk(self, chunk):
        if self._services is None:
            return
        if not self._services.apply_chunk(chunk):
            raise errors.JobFileCorrupted("log piece of service %d, which no record "
                                          "holds" % chunk.service_id)
        self.services_changed = True
        if self._write_service_log is not None:
            self._write_service_log(chunk.service_id, chunk.offset, chunk.data)

    def _delete(self, job_id, archived):
        if archived:
            self.deleted_archived.add(job_id)
            self.archived.discard(job_id)
        else:
            self.deleted.add(job_id)
        self.jobs.pop(job_id, None)

    def _job(self, job_id):
        job = self.jobs.get(job_id)
        if job is None:
            job = self._load(job_id)
            if job is None:
                raise errors.JobLost("job %s has a record but neither a full record nor a "
                                     "file" % job_id)
            self.jobs[job_id] = job
        return job
