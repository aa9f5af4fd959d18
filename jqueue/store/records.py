"""Journal record formats: how the queue encodes job changes and how replay applies them.

Records (JSON objects):

    {"t": "job",  "job": <job file object>}           full state (new job, or first
                                                      change of a job after a rotation)
    {"t": "st",   "id": N, "s": <QueuedJob.state_dict()>}   status/priority/timestamps
    {"t": "log",  "id": N, "e": [[op_index, entry], ...]}   new log entries
    {"t": "arch", "id": N}                            job archived
    {"t": "del",  "id": N, "a": bool}                 job removed (replica resync only;
                                                      "a": from the archive)
    {"t": "pos",  "p": [epoch, session, seq]}         replication position (replicas)

The first record of a job in each journal generation is a full one, so replaying a
generation never depends on a job file rewritten during that generation. Every record
sets absolute values (logs are deduplicated by serial), so replay is idempotent.
"""

import hashlib

from jqueue import errors, serializer
from jqueue.job import QueuedJob

JOB = "job"
STATE = "st"
LOG = "log"
ARCHIVE = "arch"
DELETE = "del"
POSITION = "pos"


def job_bytes(job):
    """The job file content of a job."""
    return serializer.dumps_bytes(job.to_dict())


def full_record(job_data):
    """The full record of a job given in the job file format (a dict)."""
    return serializer.dumps_bytes({"t": JOB, "job": job_data})


def job_record(job):
    return full_record(job.to_dict())


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


def position_record(position):
    return serializer.dumps_bytes({"t": POSITION, "p": list(position)})


class Replay:
    """Applies records in order over jobs loaded lazily from their files.

    ``load(job_id)`` returns the QueuedJob of the live job file or None;
    ``in_archive(job_id)`` tells whether the job's archive file exists. After replay,
    ``jobs`` holds every job a record touched, ``archived`` the ids archived, ``deleted``
    and ``deleted_archived`` the ids a resync removed, and ``position`` the last
    replication position recorded (replicas only).
    """

    def __init__(self, load, in_archive):
        self._load = load
        self._in_archive = in_archive
        self.jobs = {}
        self.archived = set()
        self.deleted = set()
        self.deleted_archived = set()
        self.position = None
        self.problems = []

    def apply(self, payload):
        """Apply one record (bytes); a record that cannot apply is noted in problems."""
        try:
            record = serializer.loads(payload)
            kind = record["t"]
            if kind == JOB:
                job = QueuedJob.from_dict(record["job"])
                self.jobs[job.id] = job
                self.archived.discard(job.id)
                self.deleted.discard(job.id)
                return
            if kind == POSITION:
                self.position = list(record["p"])
                return
            if kind == DELETE:
                self._delete(record["id"], record["a"])
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
