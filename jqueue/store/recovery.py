"""Opening a queue: load job files, replay the journal, apply the crash rules, checkpoint.

After opening, the job files hold every acknowledged change and the journal is empty:

1. The journals (``journal.old`` then ``journal``) are read; a torn tail or damaged
   records are skipped and reported, every complete record is replayed.
2. Every live job file not superseded by the journal is parsed; an unparseable file is
   moved to ``corrupt/`` and reported, never fatal.
3. Crash rules (DESIGN.md): queued jobs stay queued and resume after their finished
   opcodes; waiting goes back to queued; running or canceling opcodes become error
   "Unclean master daemon shutdown" and the job is finalized -- except a command opcode
   whose attempt is on a node (starting or running): its process may well be alive, so
   it stays running and the command runner reconciles it with the node.
   Command logs (jqueue.store.joblogs) are rewritten from the journal's log chunks and
   cut back to the length the job acknowledges.
4. Changed jobs and archivals are written, purged jobs' files and logs removed (with
   archive directories left empty), the serial is raised to the highest id seen anywhere
   (live, archived, set aside, journal, purged), one syncfs makes it durable, and the
   journal is reset.

A replica (a candidate's copy of the master's queue) skips step 3: its jobs may still be
running on the master. It restores its replication position instead (the ``replica``
file, then the journal's position records).
"""

import logging
import os

from jqueue import constants, errors, groupjob, serializer
from jqueue.job import QueuedJob
from jqueue.store import journal, purge, records

logger = logging.getLogger(__name__)


class Recovered:
    """The outcome of opening a queue."""

    def __init__(self):
        self.jobs = {}              # id -> QueuedJob, in id order
        self.max_id = 0
        self.journal_reports = []   # journal.ReadReport
        self.replay_problems = []   # text
        self.set_aside = []         # (path, reason)
        self.restarted = 0          # jobs that go back to the queue
        self.failed = 0             # jobs ended by "Unclean master daemon shutdown"
        self.position = None        # replicas: [epoch, session, seq] last applied
        self.commands = 0           # running command jobs left for the runner to reconcile

    def summary(self):
        """One line for the log."""
        return ("%d live jobs, %d resumed, %d failed by unclean shutdown, %d running commands "
                "to reconcile, %d files set aside, %d journal problems" % (
                    len(self.jobs), self.restarted, self.failed, self.commands,
                    len(self.set_aside),
                    len(self.replay_problems) + sum(
                        not r.clean for r in self.journal_reports)))


def open_queue(qdir, now, replica=False, logs=None, events=None, services=None,
               service_logs=None):
    """Recover the queue in qdir (locked by the caller); return Recovered.

    Loading creates millions of containers (job records, which hold no cycles): the
    caller (jqueue.queue.JobQueue) runs this with the cyclic collector paused.
    """
    state = Recovered()
    if services is not None:
        services.load()
    replay = records.Replay(lambda job_id: _load_quietly(qdir, job_id),
                            lambda job_id: os.path.exists(qdir.archive_path(job_id)),
                            write_log=logs.write if logs is not None else None,
                            services=services,
                            write_service_log=(service_logs.write if service_logs is not None
                                               else None))
    for name in (constants.JOURNAL_OLD_FILE, constants.JOURNAL_FILE):
        payloads, report = journal.read_records(qdir.file_path(name))
        state.journal_reports.append(report)
        if not report.clean:
            logger.warning("journal damage: %s", report.describe())
        for payload in payloads:
            replay.apply(payload)
    state.replay_problems = replay.problems
    for problem in replay.problems:
        logger.warning("journal replay: %s", problem)
    dirty = set(replay.jobs)
    _load_live_jobs(qdir, state, replay)
    if replica:
        state.position = replay.position or qdir.read_replica_position()
    else:
        # Changed outside the master's stream from now on: as a replica again, it resyncs.
        qdir.remove_replica_position()
        dirty.update(_apply_crash_rules(state, now))
    if logs is not None:
        _trim_logs(logs, state, replay)
    if events is not None and replay.events:
        events.add(sorted(replay.events, key=lambda e: e["serial"]))
    if services is not None:
        _recover_services(services, service_logs, replay)
    live_ids = list(state.jobs)
    state.max_id = max([qdir.read_serial()] + live_ids + list(replay.jobs) +
                       list(replay.purged) + qdir.archived_job_ids() + qdir.corrupt_job_ids())
    _materialize(qdir, state, replay, dirty, logs)
    return state


def _trim_logs(logs, state, replay):
    """Cut logs back to what their jobs acknowledge: replayed ones and running commands'
    (the only logs that can hold bytes whose record never became durable). A log shorter
    than its job says (an extent's bytes lost with the disk's cache: a disk that lies
    about its syncs) is reported."""
    for job in state.jobs.values():
        if job.id in replay.jobs or _on_node(job):
            if not logs.truncate(job.id, job.log_bytes) and job.log_bytes:
                size = logs.size(job.id)
                if size < job.log_bytes:
                    problem = "the log of job %d holds %d bytes of the %d acknowledged" % (
                        job.id, size, job.log_bytes)
                    logger.warning("journal replay: %s", problem)
                    state.replay_problems.append(problem)


def _recover_services(services, service_logs, replay):
    """Cut services' logs back to what their records acknowledge and drop what they no
    longer keep; write the table if the journal changed it (before the journal is reset)."""
    if service_logs is not None:
        for record in services.services.values():
            service_logs.truncate(record["id"], record.get("log_bytes") or 0)
            # Replayed pieces may have written again what the log no longer keeps.
            service_logs.drop_before(record["id"], record.get("log_start") or 0)
    if replay.services_changed:
        if service_logs is not None:
            service_logs.sync()
        services.write(services.snapshot())
    services.dirty = False


def _on_node(job):
    """Whether a command opcode of the job has an attempt on a node (may be running)."""
    return any(op.exec_state is not None and op.status not in constants.OPS_FINALIZED
               and op.exec_state.get("state") in constants.ATTEMPTS_ON_NODE
               for op in job.ops)


def _load_quietly(qdir, job_id):
    try:
        return load_job(qdir, job_id)
    except (FileNotFoundError, errors.JobFileCorrupted):
        return None


def load_job(qdir, job_id, archived=False):
    """Parse the job file of job_id; raise JobFileCorrupted or FileNotFoundError."""
    return _checked_job(job_id, qdir.read_job(job_id, archived), archived)


def _checked_job(job_id, data, archived=False):
    """The job of a parsed job file named for job_id; JobFileCorrupted if it is not."""
    job = QueuedJob.from_dict(data)
    if job.id != job_id:
        raise errors.JobFileCorrupted("file of job %d holds job %d" % (job_id, job.id))
    job.archived = archived
    return job


def _load_live_jobs(qdir, state, replay):
    """Parse every live job file the journal does not supersede; set aside bad ones."""
    loaded = dict(replay.jobs)
    for job_id, data in qdir.read_live_jobs(skip=replay.jobs):
        try:
            if isinstance(data, OSError):
                raise data
            job = _checked_job(job_id, serializer.loads(data))
        except (errors.ParseError, errors.JobFileCorrupted) as err:
            state.set_aside.append((qdir.set_aside(job_id, err), str(err)))
            continue
        except FileNotFoundError:
            continue
        loaded[job_id] = job
    gone = replay.archived | (replay.deleted - set(replay.jobs))
    for job_id in sorted(loaded):
        if job_id not in gone:
            state.jobs[job_id] = loaded[job_id]


def _apply_crash_rules(state, now):
    """Apply DESIGN.md's crash rules; return the ids of the jobs changed."""
    changed = set()
    unclean = errors.encode_exception(errors.OpExecError(constants.MSG_UNCLEAN_SHUTDOWN))
    for job in state.jobs.values():
        if groupjob.is_group(job):
            continue  # its status follows its jobs: the queue derives it again
        status = job.calc_status()
        if status == constants.JOB_STATUS_QUEUED:
            state.restarted += 1
        elif status == constants.JOB_STATUS_WAITING:
            job.mark_unfinished_ops(constants.OP_STATUS_QUEUED, None)
            state.restarted += 1
            changed.add(job.id)
        elif status in (constants.JOB_STATUS_RUNNING, constants.JOB_STATUS_CANCELING):
            if _on_node(job):
                state.commands += 1
                continue
            logger.warning("job %d was %s when the queue was last closed: %s", job.id, status,
                           constants.MSG_UNCLEAN_SHUTDOWN)
            job.mark_unfinished_ops(constants.OP_STATUS_ERROR, unclean)
            job.finalize(now)
            state.failed += 1
            changed.add(job.id)
    return changed


def _materialize(qdir, state, replay, dirty, logs=None):
    """Write what replay and recovery changed, sync once, reset the journal."""
    wrote = False
    for job_id in sorted(dirty):
        job = state.jobs.get(job_id)
        if job is not None:
            qdir.write_job(job_id, records.job_bytes(job))
            wrote = True
    for job_id in sorted(replay.archived):
        job = replay.jobs.get(job_id)
        if job is not None and not os.path.exists(qdir.archive_path(job_id)):
            qdir.archive_job(job_id, records.job_bytes(job))
            wrote = True
        elif os.path.exists(qdir.job_path(job_id)):
            os.unlink(qdir.job_path(job_id))
            wrote = True
    for job_id in replay.deleted - set(replay.jobs):
        wrote = _unlink(qdir.job_path(job_id)) or wrote
    for job_id in replay.deleted_archived - set(replay.jobs) - replay.purged:
        wrote = _unlink(qdir.archive_path(job_id)) or wrote
    if replay.purged or purge.empty_archive_directories(qdir):
        purge.remove_archived(qdir, logs, sorted(replay.purged))  # its records say so
        purge.remove_empty_directories(purge.empty_archive_directories(qdir))
        wrote = True
    if state.max_id > qdir.read_serial():
        qdir.write_serial(state.max_id)
    if state.position is not None and replay.position is not None:
        qdir.write_replica_position(state.position)
        wrote = True
    if wrote:
        qdir.sync()
    if (wrote or os.path.exists(qdir.file_path(constants.JOURNAL_OLD_FILE))
            or any(r.records or not r.clean for r in state.journal_reports)):
        journal.reset(qdir.path)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
