"""The JobQueue: a durable, thread-safe queue of jobs run by a priority worker pool.

Every change is a journal record; a change is acknowledged (the call returns, waiters
and dependents hear of it) only once its record is durable. Callers that change jobs
together share one disk sync (see jqueue.store.journal). The queue lock guards the in-memory
jobs and the order of records; it is never held across a disk sync or a network call.
Methods whose name ends in ``_unlocked`` expect the caller to hold it.

Job files are a view rewritten by checkpoints (see ``checkpoint``), which run
periodically and at shutdown.

A refused change leaves no trace. A change enters memory under the lock, then its record
joins the journal; if the journal cannot write it (a full disk, see jqueue.store.journal)
the batch is *refused*: nothing of it is on disk, and before anyone waiting on it hears
the error the queue undoes what it refused to the client. A submission is removed; a
cancel, priority change or archival is rolled back to the job's state before it (each
registers its undo with the batch). While the disk refuses writes, new client changes
are refused up front and reads and waiters are still served. Internal changes (the
processor recording an opcode's progress and end) cannot be undone, since the work
happened: their jobs are kept as *unrecorded*, counted as not durable (waiters and
dependents do not see them), and re-recorded with a full record as soon as the journal
writes again. So that an undo never takes back the processor's work, the processor waits
before touching a job whose client change is still being written (``client_batch``), and
a running job's cancellation signal is given only once the cancel is written. A failed
sync is fatal: ``on_fatal`` (the daemon exits; the journal is replayed at restart).
"""

import functools
import gc
import logging
import os
import threading
import time

from jqueue import (
    commandjob,
    constants,
    errors,
    fanout,
    groupjob,
    groupkeeper,
    jobcontrol,
    jobindex,
    joboptions,
    notify,
    opcodes,
    ptypes,
    query,
    ratelog,
    serializer,
    threadname,
)
from jqueue.job import (
    OUTCOME_FIELDS,
    PRISTINE,
    JobOutcome,
    QueuedJob,
    QueuedOpCode,
    timestamp,
    ts_to_float,
    wait_until_final,
)
from jqueue.retention import Policy as RetentionPolicy
from jqueue.retention import Retention
from jqueue.run import dependencies, processor, waiting, workerpool
from jqueue.run import services as servicemanager
from jqueue.run.commands import node_list_fields
from jqueue.store import events, joblogs, journal, purge, queuedir, records, recovery
from jqueue.store import services as servicetable
from jqueue.store.replicator import LocalReplicator

logger = logging.getLogger(__name__)

_CHECKPOINT_CHUNK = 256
#: Pieces of a command log from this size up are journaled as extents of its file by a
#: master (jqueue.store.joblogs); smaller ones (banners, a short command's output) carry
#: their bytes: copying them costs less than a sync of the log.
EXTENT_MIN = 64 * 1024
#: Tag of a journaled piece of a service's log.
_SERVICE_LOG = "svclog"
#: Journal batches a change may cause after it is durable (a group, then its groups).
_DERIVED_STEPS = 2
_ARCHIVE_CHUNK = 1000


class JobQueue:
    """A job queue over one queue directory; see DESIGN.md for the contract."""

    def __init__(self, queue_dir, workers=constants.DEFAULT_WORKERS,
                 max_jobs=constants.DEFAULT_MAX_JOBS, clock=time.time, registry=None,
                 replicator=None, pool_factory=None,
                 checkpoint_interval=constants.DEFAULT_CHECKPOINT_INTERVAL,
                 checkpoint_bytes=constants.DEFAULT_CHECKPOINT_BYTES, replica=False,
                 nodes=None, logs_dir=None, commands=None, on_fatal=None,
                 retry_interval=journal.DEFAULT_RETRY_INTERVAL, events_dir=None,
                 event_buffer=events.DEFAULT_BUFFER,
                 action_log_bytes=events.DEFAULT_ROTATE_BYTES, action_log_utc=True,
                 retention=None, notify_post=notify.post, notify_prefixes=(),
                 notify_secret=None, notify_command=None):
        """Open (or create) the queue in queue_dir, recover it and start its workers.

        With replica=True the queue is a candidate's copy of the master's queue (see
        jqueue.cluster.replica): no workers, no crash rules, and clients may not change it.
        nodes, if given, lets opcodes run work on cluster nodes (their context's ``nodes``).
        Command jobs' logs live in logs_dir (default: ``logs`` beside queue_dir), the
        event stream's files in events_dir (default: beside queue_dir; jqueue.store.events,
        of which the last event_buffer events are kept for WaitForEvents; the files rotate
        at action_log_bytes, the action log's times are UTC or, without action_log_utc,
        local);
        commands(queue), if given, builds the jqueue.run.commands.CommandRunner that runs
        command opcodes (without one, command jobs are refused at submit).
        on_fatal(error) is called (from any thread) when a sync fails: the queue then
        refuses every change, and its owner should exit without a checkpoint so that a
        restart replays the journal. retry_interval: seconds between two tries of a disk
        that refused a write. retention (a jqueue.retention.Policy; default: none) archives
        and purges old jobs in passes. notify_prefixes: what a job's notify URL must begin
        with (one of them; none: any http(s) URL); notify_secret (bytes) signs each
        notification (jqueue.notify); notify_command (an argv) is run for a notify's
        address (none: a notify "to" is refused); notify_post: how jqueue.notify POSTs
        (tests).
        """
        self._notify_prefixes = tuple(notify_prefixes or ())
        self._notify_command = list(notify_command) if notify_command else None
        #: jqueue.notify.Notifier, once the queue is open (a master's): changes may become
        #: durable before (recovery); the scan at the end of the opening tells those.
        self._notifier = None
        self.nodes = nodes
        logs_dir = logs_dir or joblogs.default_directory(queue_dir)
        self._logs = joblogs.LogStore(logs_dir)
        self._services = servicetable.ServiceTable(queue_dir)
        self._service_logs = joblogs.LogStore(servicetable.logs_directory(logs_dir))
        # Each change refused while the disk refuses (the journal says when it starts and
        # ends): a service printing every 200 ms makes one a few times a second.
        self._refusals = ratelog.CountedWarning(
            time.monotonic, "%d journal batch(es) refused since the last warning: %s", logger)
        self._events = events.EventLog(
            events_dir or os.path.dirname(os.path.abspath(queue_dir)), buffer=event_buffer,
            rotate_bytes=action_log_bytes, utc=action_log_utc)
        #: None (the callbacks a durable batch releases run in the journal's thread), or
        #: hand_over([(callback, result), ...]) running them elsewhere: the LUXI server's
        #: runs them in its reactor, where its own long polls answer at once, instead of
        #: this thread queueing 5,000 answers one by one for the reactor to pick up.
        self.answer_handoff = None
        self._fatal_hook = on_fatal
        self._fatal = None
        self._clock = clock
        self._replica = replica
        self._registry = registry or opcodes.REGISTRY
        self._replicator = replicator or LocalReplicator()
        self._max_jobs = max_jobs
        self._dir = queuedir.QueueDir(queue_dir, self._replicator)
        self._dir.ensure_layout()
        self._dir.lock()
        # Loading creates millions of containers (job records, which hold no cycles): the
        # collector's passes over them would more than double the time to open a large
        # queue; they are frozen before it resumes, else its first pass would walk them all.
        with serializer.paused_collection():
            try:
                self.recovery = recovery.open_queue(self._dir, clock(), replica=replica,
                                                    logs=self._logs, events=self._events,
                                                    services=self._services,
                                                    service_logs=self._service_logs)
            except BaseException:
                self._dir.unlock()
                raise
            logger.info("opened queue %s: %s", self._dir.path, self.recovery.summary())
            self._init_state()
            _freeze_long_lived(collect=False)
        replicate = None if replica else self._replicator.replicate_records
        # A command log's big pieces are journaled as extents of its file, synced before
        # them (jqueue.store.joblogs): written to the disk once. Candidates get the bytes
        # (replicated_frames); a replica journals what its master sends.
        self._log_extents = not replica
        self._journal = journal.Journal(
            self._dir.path, on_durable=self._on_durable, replicate=replicate,
            on_refused=self._on_refused, on_recovered=self._on_recovered,
            on_fatal=self._on_fatal, retry_interval=retry_interval,
            before_write=self._logs.sync_now if self._log_extents else None)
        if replica:
            pool_factory = _NullPool
        self._pool = (pool_factory or workerpool.WorkerPool)(
            "jq-worker", workers, self._processor.run_step)
        if commands is not None and not replica:
            self._commands = commands(self)
            self._service_manager = servicemanager.ServiceManager(self, self._commands)
        with self._lock:
            self._groups.rebuild_unlocked(list(self._jobs.values()))
            # In one call (a lock and a wake-up, not one per job: 10^5 may wait).
            self._pool.add_many_tasks([((job.id,), job.calc_priority(), job.id)
                                       for job in self._jobs.values()
                                       if not job.is_finalized()
                                       and self._may_start_unlocked(job)])
        if self._commands is not None:
            self._commands.recover()
            self._service_manager.recover()
        attach = getattr(self._replicator, "attach", None)
        if attach is not None and not replica:
            attach(self)
        self._checkpointer = None
        self._checkpoint_interval = checkpoint_interval
        if checkpoint_interval:
            self._checkpointer = _Checkpointer(self, checkpoint_interval, checkpoint_bytes)
            self._checkpointer.start()
        self._retention = Retention(self, retention or RetentionPolicy(), clock)
        self._notifier = None if replica else notify.Notifier(
            self, poster=notify_post, secret=notify_secret, command=self._notify_command)
        if not replica:
            self._retention.start()
            with self._lock:  # what the last master did not tell, or did not record
                for job in self._jobs.values():
                    self._notify_due_unlocked(job)

    def _init_state(self):
        self._lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        # Archive directories change under it only (moves in, purges out); a purge need
        # not wait for a checkpoint writing thousands of live files. Inside the above.
        self._archive_lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._jobs = self.recovery.jobs
        self._tokens = {job.token: job.id for job in self._jobs.values()
                        if job.token is not None}
        self._event_serial = self._events.last_serial
        self._pending_events = {}  # serial -> event journaled, not durable yet
        for job in self._jobs.values():
            job.durable_log_serial = job.log_serial
            job.durable_log_bytes = job.log_bytes  # a replayed log's pieces are durable
            job.event_status = job.calc_status()
            if not job.is_finalized():
                # A queued job as submitted (most of a big queue) shares the PRISTINE
                # mark, as after its submission, rather than a dict of its own state:
                # 10^5 of those were RSS a reopened daemon had and the one before not.
                job.acked_state = PRISTINE if job.is_pristine() else job.state_dict()
        self._serial = self.recovery.max_id
        # Replicas change jobs behind the queue's back (jqueue.cluster.replica): no index.
        self._index = None if self._replica else jobindex.JobIndex()
        if self._index is not None:
            self._index.fill([self._index_entry(job) for job in self._jobs.values()])
        self._archiving = {}
        self._dirty = set()
        self._unrecorded = set()  # jobs whose internal changes a refused batch lost
        self._deleted = set()  # replicas: live job files a resync removed
        self._deleted_archived = set()  # replicas: archive files a resync removed
        self._position = self.recovery.position
        self._old_journal_pending = False
        self._view_written = self._clock()  # when the job files last matched memory
        self._drained = self._dir.drain_flag()
        self._closing = self._closed = False
        self._deps = dependencies.DependencyManager()
        self._waiters = waiting.WaiterRegistry()
        self._log_waiters = waiting.LogWaiterRegistry()
        self._commands = None
        self._service_manager = None
        self._unrecorded_services = set()  # services whose records a refused batch lost
        # Bytes of each service's log that are durable (readers see only these).
        self._service_durable = {record["id"]: record.get("log_bytes") or 0
                                 for record in self._services.services.values()}
        self._service_log_waiters = waiting.LogWaiterRegistry()
        self._processor = processor.JobProcessor(self)
        self._groups = groupkeeper.GroupKeeper(self, active=not self._replica)
        self._control = jobcontrol.JobControl(self, self._clock, thread=not self._replica)
        self._fields = self._groups.field_context(
            self._registry, None if self._replica else self._control.wait_reason_unlocked,
            None if self._replica else self._running_rss)

    @property
    def path(self):
        """The queue directory."""
        return self._dir.path

    @property
    def registry(self):
        """The opcode registry used to validate and run opcodes."""
        return self._registry

    @property
    def failed(self):
        """The error of a failed sync (journal or checkpoint) after which the queue refuses
        every change until reopened, else None."""
        return self._fatal or self._journal.failed

    # Submission

    def submit_job(self, ops, drained_ok=False, token=None, owner=None, parent=None,
                   not_before=None, start_in=None, notify=None):
        """Submit one job (a list of opcodes); return its id once it is acknowledged.

        token (a string) makes the submission idempotent: while the job an earlier
        submission with the same token created is live, its id is returned and no job is
        created. owner names who submits (kept as the job's ``owner``). parent puts the
        job in a group (a job id, a group title or a path of titles ``a|b``; see
        jqueue.groupjob); not_before (epoch seconds) or start_in (seconds from now) keep it
        queued until then; notify (a URL, or {"url" or "to", "on", "after"}) has its final
        state told there (jqueue.notify). SubmissionNotAcknowledged (naming the id) if the job is
        recorded but not acknowledged within the acknowledgement timeout.
        """
        job_id, batch = self.submit_job_nowait(
            ops, drained_ok, token=token, owner=owner,
            options=joboptions.given(parent, not_before, start_in, notify))
        if batch is not None:
            self._wait_submitted(batch, [job_id])
        return job_id

    def submit_job_to_drained_queue(self, ops, token=None, **options):
        """Submit one job even if the queue is drained (for the cluster's own work)."""
        return self.submit_job(ops, drained_ok=True, token=token, **options)

    def submit_many_jobs(self, jobs, drained_ok=False, tokens=None, owner=None, options=None):
        """Submit several jobs; return [(True, id) | (False, message)] in order.

        Negative dependency ids are relative: -1 is the job just before in this request.
        An invalid opcode anywhere refuses the whole request before any id is allocated.
        tokens, if given, holds a token (or None) per job, as for submit_job; options, if
        given, an object (or None) per job with submit_job's parent, not_before and
        start_in (a negative parent is relative, as dependencies are). A parent that names
        no group, or several, refuses the whole request.
        """
        if not isinstance(jobs, list) or not jobs:
            raise errors.OpPrereqError("expected a non-empty list of jobs")
        results, batch = self.submit_nowait(jobs, drained_ok, single=False, tokens=tokens,
                                            owner=owner, options=options)
        if batch is not None:
            self._wait_submitted(batch, [value for ok, value in results if ok])
        return results

    def _wait_submitted(self, batch, job_ids):
        """Wait for submissions; a ReplicationError names the jobs and their fate."""
        try:
            self._wait(batch)
        except errors.SubmissionNotAcknowledged:
            raise
        except errors.ReplicationError as err:
            raise errors.not_acknowledged(job_ids, err) from None

    def _validate_job(self, ops, label):
        if not isinstance(ops, list) or not ops:
            raise errors.OpPrereqError("%sa job must be a non-empty list of opcodes" % label)
        inputs = []
        for index, op in enumerate(ops):
            try:
                inputs.append(self._registry.input_of(op))
                self._check_command(inputs[-1])
            except errors.OpPrereqError as err:
                prefix = label + ("opcode %d: " % index if len(ops) > 1 else "")
                raise errors.OpPrereqError(prefix + errors.error_message(err),
                                           constants.ECODE_INVAL) from None
        try:
            groupjob.check_job(inputs)
        except errors.OpPrereqError as err:
            raise errors.OpPrereqError(label + errors.error_message(err),
                                       constants.ECODE_INVAL) from None
        return inputs

    def _check_command(self, op_input):
        """A command opcode must be runnable here: a command runner and a known node."""
        if not commandjob.is_command(op_input):
            return
        if self._commands is None:
            raise errors.OpPrereqError("opcode %s: this queue runs no command jobs" %
                                       constants.OP_COMMAND_RUN, constants.ECODE_STATE)
        self._commands.check_submit(op_input)

    @property
    def commands(self):
        """The CommandRunner (None if this queue runs no command jobs)."""
        return self._commands

    def submit_nowait(self, jobs, drained_ok=False, single=False, tokens=None, options=None,
                      owner=None, defer_commit=False):
        """Validate and record jobs without waiting: return (results, batch).

        results is what submit_many_jobs returns; the submissions are acknowledged once
        batch (None if there is nothing to wait for) finishes without error: callers that
        must not block (the daemon's event loop) use batch.add_done_callback. Raises the
        same errors as submit_many_jobs, before anything is recorded. With defer_commit
        the caller promises to call commit_pending() soon (see there).
        """
        count = len(jobs) if isinstance(jobs, list) else 0
        tokens = _check_tokens(tokens, count)
        _check_owner(owner)
        options = joboptions.check(options, count, single)
        validated = [self._validate_job(ops, "" if single else "job %d: " % index)
                     for index, ops in enumerate(jobs)]
        self._check_notify_options(options, validated, single)
        # A job none of whose opcodes was given a priority takes its group's (if in one).
        own_priority = [any(op.get("priority") is not None for op in ops) for ops in jobs]
        heads = None
        if fanout.wants_fan_out(validated):  # a group and one job per node (jqueue.fanout)
            validated, tokens, options, heads = fanout.expand(
                validated, tokens, options, single, self._fan_out_nodes, self._group_input)
            ends = heads[1:] + [len(validated)]
            own_priority = [own for own, head, end in zip(own_priority, heads, ends)
                            for _ in range(end - head)]
            single = False
        with self._lock:
            known = [self._token_job_unlocked(token) for token in tokens]
            new = sum(1 for job in known if job is None)
            if new:
                self._check_accepting_unlocked(new, drained_ok)
            else:
                self._check_writable()
                self._check_open_unlocked()
            results, batch = self._create_jobs_unlocked(validated, tokens, known, options,
                                                        single, owner, defer_commit,
                                                        own_priority)
        return fanout.answers(results, heads), batch

    def _fan_out_nodes(self, op_input):
        """The nodes a fan-out runs on, each checked as its own job will be."""
        names = self._commands.fan_out(op_input)
        for name in names:
            self._commands.check_submit(dict(op_input, node=name, nodes=None))
        return names

    def _group_input(self, title):
        return self._registry.build({"OP_ID": constants.OP_GROUP, "title": title}).to_dict()

    def _token_job_unlocked(self, token):
        """The live job an earlier submission with token created, or None."""
        if token is None:
            return None
        job = self._jobs.get(self._tokens.get(token))
        return job if job is not None and job.token == token else None

    def submit_job_nowait(self, ops, drained_ok=False, token=None, options=None, owner=None,
                          defer_commit=False):
        """Like submit_job, without waiting: return (job id, batch to wait on or None);
        options: submit_job's parent, not_before and start_in as an object (or None)."""
        results, batch = self.submit_nowait([ops], drained_ok, single=True, tokens=[token],
                                            options=[options], owner=owner,
                                            defer_commit=defer_commit)
        ok, value = results[0]
        if not ok:
            raise errors.OpPrereqError(value, constants.ECODE_INVAL)
        return value, batch

    def deferred_commits(self):
        """A context in which this thread's changes do not wake the journal's committer;
        call commit_pending() after it (see jqueue.store.journal.Journal.deferring)."""
        return self._journal.deferring()

    def commit_pending(self, durable_here=None):
        """Make the changes recorded with defer_commit durable: in this thread if the
        journal is idle, else by its committer (jqueue.store.journal.Journal.commit_here,
        which calls durable_here(batches) before the queue hears they are durable).
        The daemon's event loop calls it once per pass over its sockets."""
        self._journal.commit_here(durable_here)

    def commit_in_loop(self, schedule):
        """Changes made in the calling thread, an event loop's, are committed at the end of
        its turn (jqueue.store.journal.Journal.commit_in_loop; schedule(fn) calls fn in
        this thread soon). The daemon's reactor calls it once, before it runs."""
        self._journal.commit_in_loop(schedule)

    @property
    def ack_timeout(self):
        """Seconds a change may wait for replication before callers are told it failed."""
        return self._replicator.ack_timeout

    def _check_writable(self):
        """Clients may not change a replica; the master replicates to it."""
        if self._replica:
            raise errors.NotMasterError("queue %s is a replica; changes come from the master"
                                        % self._dir.path)

    def _check_open_unlocked(self):
        """Refuse a change once shutdown() closed the queue (its state is being written)."""
        if self._closed:
            raise errors.JobQueueError("job queue %s is shut down" % self._dir.path)

    def _check_changes_unlocked(self):
        """Refuse a client's change up front while the disk refuses writes."""
        if self._fatal is not None:
            raise errors.JobQueueError("changes refused: a sync of %s failed (%s); restart "
                                       "to replay the journal" % (self._dir.path, self._fatal))
        refusal = self._journal.refusal()
        if refusal is not None:
            raise refusal

    def _check_accepting_unlocked(self, count, drained_ok):
        self._check_writable()
        self._check_changes_unlocked()
        if self._closing:
            raise errors.JobQueueError("job queue %s is shutting down" % self._dir.path)
        if self._drained and not drained_ok:
            raise errors.JobQueueDrainError("job queue is drained, refusing new jobs")
        if len(self._jobs) + count > self._max_jobs:
            raise errors.JobQueueFull("job queue is full: %d live jobs, limit %d; archive "
                                      "finished jobs" % (len(self._jobs), self._max_jobs))

    def _create_jobs_unlocked(self, validated, tokens, known, options, single, owner,
                              defer_commit, own_priority):
        """Create the jobs of one request; their records join one batch, so that the
        request is durable, or refused, as a whole. A job whose token the queue knows is
        not created again: the first submission's id is answered. own_priority[i] says
        whether job i was given a priority (else it takes its group's)."""
        results, created, pending = [], [], None
        clock = self._clock()
        now = timestamp(clock)
        resolved = dependencies.resolve_request(
            validated, self._serial + 1, [job.id if job else None for job in known])
        parents = self._parents_unlocked(validated, resolved, known, options, single,
                                         own_priority)
        for inputs, (job_id, problem), token, old, parent, option in zip(
                validated, resolved, tokens, known, parents, options):
            if old is not None:
                results.append((True, old.id))
                if not old.visible:  # the first submission is not acknowledged yet
                    pending = self._journal.barrier()
                continue
            if problem:
                results.append((False, problem))
                continue
            job = QueuedJob(job_id, [QueuedOpCode(i, i["priority"]) for i in inputs], now,
                            token=token, owner=owner, parent=parent,
                            not_before=joboptions.start_time(option, clock),
                            notify=option.get("notify"))
            job.visible = False
            job.file_new = True
            payload, job.file_bytes = records.job_record_and_bytes(job)
            created.append((job, payload))  # encoded before any change
            results.append((True, job.id))
        if not created:
            return results, pending
        entries = []
        for job, payload in created:
            self._serial = job.id
            self._jobs[job.id] = job
            self._index_unlocked(job)
            if job.token is not None:
                self._tokens[job.token] = job.id
            job.generation = self._journal.generation
            job.unacked_state += 1
            self._dirty.add(job.id)
            entries.append((payload, (job.id, PRISTINE, job.log_serial)))
            entries.append(self._new_event_entry_unlocked(job))
        batch = self._journal.append_all(entries, defer=defer_commit)
        batch.undo.extend(functools.partial(self._unsubmit_unlocked, job) for job, _ in created)
        return results, batch

    def _new_event_entry_unlocked(self, job):
        """(record, tag) of a new job's NEW event (journaled in its submission's batch)."""
        job.event_status = constants.JOB_STATUS_QUEUED
        return self._event_entry_unlocked(
            "NEW", job.id, message=", ".join(self._registry.summary(op.input)
                                             for op in job.ops))

    def _parents_unlocked(self, validated, resolved, known, options, single, own_priority):
        """The parent id of each job (None if none); OpPrereqError refuses the request
        if a parent names no group or several (inherited parameters are given here)."""
        references = [None if old is not None else option.get("parent")
                      for old, option in zip(known, options)]
        if not any(reference is not None for reference in references):
            return [None] * len(validated)
        answers = self._groups.resolve_parents_unlocked(
            [(job_id, inputs) for inputs, (job_id, _) in zip(validated, resolved)], references,
            own_priority)
        for index, (_, problem) in enumerate(answers):
            if problem:
                raise errors.OpPrereqError(("" if single else "job %d: " % index) + problem,
                                           constants.ECODE_NOENT)
        return [parent for parent, _ in answers]

    def _unsubmit_unlocked(self, job):
        """Undo a refused submission: the job was never visible; it leaves no trace."""
        if self._jobs.get(job.id) is job and not job.visible:
            del self._jobs[job.id]
            self._unindex_unlocked(job)
            self._dirty.discard(job.id)
            self._unrecorded.discard(job.id)
            if job.token is not None and self._tokens.get(job.token) == job.id:
                del self._tokens[job.token]

    # Changes to existing jobs

    def cancel_job(self, job_id, kill=False):
        """Cancel a job; return (success, message) saying what happened.

        A queued or dependency-waiting job is canceled at once. A running job is marked
        canceling and its opcode stops at its next cancellation point. Canceling a group
        cancels every unfinished job of its tree.
        """
        return self._control.cancel(job_id, kill)

    def change_job_priority(self, job_id, priority):
        """Change the priority of a job's unfinished opcodes (a group: of every job of its
        tree); return (success, message)."""
        return self._control.change_priority(job_id, priority)

    def hold_job(self, job_id):
        """Hold a job (a group: its tree): it does not start until released; a running
        command is stopped (TERM, then KILL) and its attempt does not count; (ok, message).
        """
        return self._control.hold(job_id)

    def release_job(self, job_id):
        """Release a held job (a group: its tree): it may run again; (ok, message)."""
        return self._control.release(job_id)

    def reset_job(self, job_id):
        """A finished job (a group: its finished jobs) back to queued, its attempts counted
        anew, its log kept with a marker line; (ok, message)."""
        return self._control.reset(job_id)

    def retry_job(self, job_id):
        """A failed job (a group: its failed jobs) queued for one more attempt, keeping its
        attempt counter; (ok, message)."""
        return self._control.retry(job_id)

    def resolve_job(self, reference):
        """The id of the live job a reference names: an id, a group title or a path of
        group titles (``a|b``); OpPrereqError if none or several."""
        return self._groups.resolve(reference)

    def start_due_jobs(self):
        """Start the jobs whose start time has come by the queue's clock now (the queue
        does it by itself; for a clock that a test moves); how many."""
        return self._control.starts.fire_due()

    def _command_on_node_unlocked(self, job):
        index = job.next_op_index()
        return (self._commands is not None and index is not None
                and commandjob.is_command(job.ops[index].input)
                and (job.ops[index].exec_state or {}).get("state")
                in constants.ATTEMPTS_ON_NODE)

    def _canceled_on_disk(self, job, event, kill, command, batch):
        """A running job's cancel is durable (journal thread): stop its opcode or command."""
        if batch.refused:
            return
        event.set()
        if command:
            self._commands.cancel_unlocked(job, kill)

    def _snapshot_unlocked(self, job):
        """What a client change may alter of job, to undo it if refused (see
        _restore_unlocked); readers go on seeing the acknowledged state meanwhile."""
        self._prepare_change_unlocked(job)
        return _snapshot(job)

    def _prepare_change_unlocked(self, job):
        """Before changing a job: keep its acknowledged state for readers (a finished,
        acknowledged job keeps none)."""
        if job.acked_state is None and not job.unacked_state:
            job.acked_state = job.state_dict()

    def _record_client_changes_unlocked(self, changes, event=None):
        """Journal client changes [(job, snapshot)] in one batch (durable, or refused, as
        one), with their events (event: the word of the request's own, HOLD, RESET...);
        if refused, each job goes back to its snapshot."""
        entries = []
        for job, _ in changes:
            entries.append(self._state_entry_unlocked(job)[:2])
            if event is not None and not self._replica:
                entries.append(self._event_entry_unlocked(event, job.id))
            status_event = self._job_event_entry_unlocked(job)
            if status_event is not None:
                entries.append(status_event)
        batch = self._journal.append_all(entries)
        for job, snapshot in changes:
            batch.undo.append(functools.partial(self._restore_unlocked, job, snapshot))
            job.client_batch = batch
            # Not finished yet: the journal's listeners need the lock we hold to finish it.
            batch.add_done_callback(functools.partial(self._forget_client_batch, job))
        return batch

    def _forget_client_batch(self, job, batch):
        with self._lock:
            if job.client_batch is batch:
                job.client_batch = None

    def _restore_unlocked(self, job, snapshot):
        """Undo a refused client change: the job's state as it was before."""
        state, kill_requested = snapshot
        job.file_bytes = None
        job.apply_state(state)
        job.kill_requested = kill_requested
        if job.id in self._jobs:
            self._index_unlocked(job)
        self._groups.restored_unlocked(job)
        if job.id in self._jobs and not job.is_finalized():
            self._pool.change_task_priority(job.id, job.calc_priority())
            if job.next_op_index() is not None and all(
                    op.status != constants.OP_STATUS_RUNNING for op in job.ops):
                self._schedule_unlocked(job)

    def _await_client_change_unlocked(self, job_id):
        """The live job job_id once no client change to it is still being written.

        The processor calls this before changing a job, so that the undo of a refused
        cancel or priority change never takes back what the processor did. Releases the
        lock while waiting (writing takes milliseconds; a refusal is immediate).
        """
        while True:
            job = self._jobs.get(job_id)
            batch = job.client_batch if job is not None else None
            if batch is None or batch.written.is_set():
                return job
            self._lock.release()
            try:
                batch.written.wait()
            finally:
                self._lock.acquire()

    def _unfinished_job_unlocked(self, job_id):
        """(job, status, None) for a live unfinished job, else (None, None, (False, why))."""
        self._check_open_unlocked()
        self._check_changes_unlocked()
        job = self._visible_job_unlocked(job_id)
        if job is None:
            return None, None, (False, "Job %s not found" % job_id)
        status = job.calc_status()
        if status in constants.JOBS_FINALIZED:
            return None, None, (False, "Job %s is already finished (%s)" % (job_id, status))
        return job, status, None

    def archive_job(self, job_id):
        """Archive a finalized job (a group: with its tree, once all of it ended); return
        False if it is not live or not finalized.

        Returns once the archival is durable and the job's file is in ``archive/`` (see
        _move_to_archive).
        """
        self._check_writable()
        job_id = queuedir.parse_job_id(job_id)
        with self._lock:
            self._check_open_unlocked()
            self._check_changes_unlocked()
            job = self._visible_job_unlocked(job_id)
            jobs = self._groups.tree_of_unlocked(job) if job is not None else []
            if not jobs or not all(j.is_finalized() for j in jobs):
                return False
            batch = self._archive_all_unlocked(jobs)
        self._wait(batch)
        self._move_to_archive([j.id for j in jobs])
        return True

    def auto_archive_jobs(self, age, timeout):
        """Archive finalized jobs older than age seconds (-1: all) within timeout seconds.

        Returns (archived, left_unchecked): how many jobs were archived and how many
        finished top-level jobs were not examined because the timeout ran out.
        """
        self._check_writable()
        try:
            age = -1 if age == -1 else ptypes.NumberRange(0).check(age)
        except ValueError as err:
            raise errors.OpPrereqError("age %s (or -1 for every finalized job)" % err,
                                       constants.ECODE_INVAL) from None
        try:
            timeout = ptypes.NumberRange(0).check(timeout)
        except ValueError as err:
            raise errors.OpPrereqError("timeout %s" % err, constants.ECODE_INVAL) from None
        archived, left = self.archive_finished(age, timeout, move=True)
        self._move_to_archive(archived)
        return len(archived), left

    def archive_finished(self, age, timeout=None, limit=None, move=False, pace=None):
        """Archive finalized jobs older than age seconds (-1: all; a group goes with its
        tree, jobs in a group only with it), chunk by chunk, each chunk durable before the
        next, until timeout seconds passed or about limit jobs were archived. pace() is
        called between chunks (retention rests there).

        Only the jobs that may go are walked: the index's top-level jobs showing a final
        status (a pass costs what it archives, not the queue's size; callers refuse a
        replica, which has no index).

        Returns (ids archived, candidates left unchecked). Their files move to archive/ at
        the next checkpoint (with move, the caller moves them: see auto_archive_jobs).
        """
        start = now = self._clock()
        with self._lock:
            self._check_open_unlocked()
            self._check_changes_unlocked()
            ids = list(self._index.select({"status": constants.JOBS_FINALIZED, "parent": [0]}))
        archived = []
        checked = 0
        for offset in range(0, len(ids), _ARCHIVE_CHUNK):
            if offset and timeout is not None and self._clock() - start > timeout:
                break
            if limit is not None and len(archived) >= limit:
                break
            if offset and pace is not None:
                pace()
            with self._lock:
                if self._closed:
                    break
                chunk = [self._jobs.get(job_id) for job_id in ids[offset:offset + _ARCHIVE_CHUNK]]
                checked += len(chunk)
                jobs = self._groups.archivable_unlocked(
                    [job for job in chunk if job is not None],
                    functools.partial(_old_enough, age=age, now=now))
                batch = self._archive_all_unlocked(jobs) if jobs else None
            if batch is not None:  # chunk by chunk: each durable, or refused, as a whole
                self._wait_archival(batch, archived, move)
                archived.extend(job.id for job in jobs)
        return archived, len(ids) - checked

    def _wait_archival(self, batch, archived, move=True):
        """Wait for a chunk of archivals; if refused, finish the earlier chunks first."""
        try:
            self._wait(batch)
        except errors.JobQueueError as err:
            if archived and move:
                self._move_to_archive(archived)
                raise errors.JobQueueError("%s (%d job(s) were archived before)" % (
                    errors.error_message(err), len(archived))) from None
            raise

    def _move_to_archive(self, job_ids):
        """Move the files of jobs whose archival is durable into ``archive/`` now.

        Archival is an operator's explicit act, so ArchiveJob and AutoArchiveJobs answer
        only once it shows on disk: each job's current state is written to its archive
        file and its live file removed (no fsync each), then one sync makes the batch
        durable. Serialized with checkpoints (which would otherwise move them later). If
        the move fails, the jobs stay in the archiving set and the next checkpoint
        finishes it (the journal already holds the archival); the caller hears why.
        """
        with self._checkpoint_lock:
            with self._lock:
                moves = [(job_id, records.job_bytes(self._archiving[job_id]))
                         for job_id in job_ids if job_id in self._archiving]
            try:
                with self._archive_lock:
                    for job_id, data in moves:
                        self._dir.archive_job(job_id, data)
                if moves:
                    self._dir.sync()
            except errors.DiskSyncError as err:
                self._on_fatal(err)
                raise
            except OSError as err:
                raise errors.JobQueueError(
                    "archival of %d job(s) is durable in the journal of %s, but moving their "
                    "files to archive/ failed (%s); the next checkpoint retries" % (
                        len(moves), self._dir.path, err)) from None
            with self._lock:
                for job_id, _ in moves:
                    self._archiving.pop(job_id, None)
                    self._dirty.discard(job_id)

    def _archive_unlocked(self, job):
        return self._archive_all_unlocked([job])

    def _archive_all_unlocked(self, jobs):
        """Archive jobs in memory and journal it in one batch (undone if refused).

        An archived job's token is forgotten: a later submission with it makes a new job.
        """
        for job in jobs:
            if job.token is not None and self._tokens.get(job.token) == job.id:
                del self._tokens[job.token]
            del self._jobs[job.id]
            self._unindex_unlocked(job)
            job.archived = True
            job.archive_pending = True
            self._archiving[job.id] = job
        batch = self._journal.append_all([(records.archive_record(job.id), None)
                                          for job in jobs])
        batch.add_done_callback(functools.partial(_archival_finished, jobs))
        batch.undo.append(functools.partial(self._groups.unarchived_unlocked, jobs))
        batch.undo.extend(functools.partial(self._unarchive_unlocked, job) for job in jobs)
        self._groups.archived_unlocked(jobs)
        return batch

    def _unarchive_unlocked(self, job):
        """Undo a refused archival: the job is live again, in id order, with its token."""
        if self._archiving.get(job.id) is job:
            del self._archiving[job.id]
            job.archived = False
            job.archive_pending = False
            in_order = not self._jobs or next(reversed(self._jobs)) < job.id
            self._jobs[job.id] = job
            self._index_unlocked(job)
            if not in_order:
                self._jobs = dict(sorted(self._jobs.items()))
            if job.token is not None:
                self._tokens.setdefault(job.token, job.id)

    def retention_pass(self):
        """Run one retention pass now (see jqueue.retention); its report."""
        self._check_writable()
        return self._retention.run_pass()

    def purge_jobs(self, age, timeout=None):
        """Purge every archived job (and its log) older than age seconds, within timeout
        seconds: {"purged", "bytes_freed", "done"} (not done: call again)."""
        self._check_writable()
        try:
            age = ptypes.NumberRange(0).check(age)
            timeout = None if timeout is None else ptypes.NumberRange(0).check(timeout)
        except ValueError as err:
            raise errors.OpPrereqError("age and timeout must be seconds: %s" % err,
                                       constants.ECODE_INVAL) from None
        return self._retention.purge(age, timeout)

    def retention_status(self):
        """The retention policy, the last pass's report and the totals (queue info)."""
        return self._retention.status()

    def change_retention(self, archive_after, keep_archived, interval):
        """Archive and purge by these ages, in passes every interval seconds (None: only
        when asked), from now on (jq-masterd's reload)."""
        self._retention.change(archive_after, keep_archived, interval)

    def resize_workers(self, workers):
        """Run opcodes in this many worker threads from now on (jq-masterd's reload):
        more start at once; the surplus retire after their opcode."""
        self._pool.resize(workers)

    def purge_archived(self, job_ids):
        """Purge archived jobs: journal it (replicas purge the same), then remove their
        files, command logs and the archive directories left empty; the bytes freed.

        Ids of live jobs, or of jobs still being moved to the archive, are left alone.
        """
        self._check_writable()
        with self._lock:
            self._check_open_unlocked()
            self._check_changes_unlocked()
            ids = sorted(i for i in set(job_ids) if i not in self._jobs
                         and i not in self._archiving)
            if not ids:
                return 0
            batch = self._journal.append(records.purge_record(ids))
        self._wait(batch)
        with self._archive_lock:
            return purge.remove_archived(self._dir, self._logs, ids)

    def set_drain_flag(self, flag):
        """Set or clear the drain flag (durably); a drained queue refuses new jobs."""
        if not isinstance(flag, bool):
            raise errors.OpPrereqError("drain flag must be a boolean, got %r" % (flag,))
        with self._drain_lock:
            try:
                self._dir.set_drain_flag(flag)
            except OSError as err:
                raise errors.JobQueueError("cannot %s the drain flag in %s: %s" % (
                    "set" if flag else "clear", self._dir.path, err)) from None
            self._drained = flag
        return True

    @property
    def drain_flag(self):
        return self._drained

    # Reading

    def query_jobs(self, job_ids, fields):
        """Return [[value, ...] or None] for the given ids (all live jobs if empty).

        Archived jobs are found by id. Answers at once with the acknowledged state of
        each job: a change still waiting for the disk or for the candidates is not shown
        (and a job whose submission is not acknowledged is not found); a change the disk
        refused never shows. Reads go on while writes fail.
        """
        info = query.getters(fields, self._fields)
        ids = None if not job_ids else [queuedir.parse_job_id(i) for i in job_ids]
        with self._lock:
            if ids is None:
                with serializer.paused_collection():  # 10^5 rows: see paused_collection
                    rows = [info(self._acked_view_unlocked(job))
                            for job in self._jobs.values() if job.visible]
                missing = []
            else:
                jobs = [self._known_job_unlocked(i) for i in ids]
                rows = [info(self._acked_view_unlocked(job)) if job is not None else None
                        for job in jobs]
                missing = [n for n, job in enumerate(jobs) if job is None]
        for index in missing:
            job = self._load_archived(ids[index])
            rows[index] = info(job) if job is not None else None
        return rows

    def archived_job_ids(self):
        """Ids of the archived jobs (in archive/, or being moved there), in order."""
        with self._lock:
            moving = set(self._archiving)
        return sorted(moving.union(self._dir.archived_job_ids()))

    @staticmethod
    def _acked_view_unlocked(job):
        """The job as its acknowledged changes leave it (itself if nothing is pending;
        live while its archival is not durable)."""
        if (not job.unacked_state and job.durable_log_serial >= job.log_serial
                and not job.archive_pending):
            return job
        view = job.view(job.acked_state if job.unacked_state else None,
                        job.durable_log_serial)
        if job.archive_pending:
            view.archived = False
        return view

    def wait_for_job_changes(self, job_id, fields, prev_job_info, prev_log_serial, timeout):
        """Block until the job differs from prev_job_info or logs beyond prev_log_serial.

        Returns (job_info, log_entries), at once if the job is finalized, or
        JOB_NOTCHANGED after timeout seconds. Raises JobLost for a job that is not live
        (unknown or archived: as in Ganeti, only live jobs are watched; QueryJobs finds
        archived ones).
        """
        done = threading.Event()
        box = []

        def answer(result):
            box.append(result)
            done.set()

        handle = self.watch_job(job_id, fields, prev_job_info, prev_log_serial, answer)
        if handle is not None and not done.wait(timeout):
            handle.cancel()
        return box[0] if box else constants.JOB_NOTCHANGED

    def wait_for_job(self, job_id, timeout=None):
        """Wait until the job is finished; its JobOutcome (final status, each opcode's
        status and result). WaitTimeout after timeout seconds (None: no limit), JobLost
        for an unknown job."""
        wait_until_final(self.wait_for_job_changes, job_id, timeout)
        row = self.query_jobs([job_id], OUTCOME_FIELDS)[0]
        if row is None:
            raise errors.JobLost("job %s not found" % job_id)
        return JobOutcome.from_row(row)

    def watch_job(self, job_id, fields, prev_job_info, prev_log_serial, callback):
        """Call callback((job_info, log_entries)) once the job changed (see above).

        Costs no thread: the callback runs in the thread that made the change durable,
        or in this one if the answer is immediate (then None is returned). Otherwise
        returns a handle whose cancel() withdraws the callback. Raises JobLost for a job
        that is not live.
        """
        job_id = queuedir.parse_job_id(job_id)
        info = query.getters(fields, self._fields)
        with self._lock:
            job = self._visible_job_unlocked(job_id)
            if job is None:
                raise errors.JobLost("job %s is not a live job (unknown, or archived: "
                                     "QueryJobs finds archived jobs)" % job_id)
            result = waiting.check_change(self._acked_view_unlocked(job), info,
                                          prev_job_info, prev_log_serial,
                                          job.durable_log_serial)
            if result is None:
                waiter = waiting.Waiter(job_id, info, prev_job_info, prev_log_serial,
                                        callback, fields_key=_fields_key(fields))
                self._waiters.add(waiter)
                return waiter
        callback(result)
        return None

    # Command jobs: logs, signals, running attempts

    def read_job_log(self, job_id, offset, max_bytes):
        """{"data": bytes, "offset": next offset, "eof": bool} of job_id's log from offset.

        Only acknowledged bytes are read; eof once the job is finished and read to the
        end. JobLost for an unknown job.
        """
        job_id = queuedir.parse_job_id(job_id)
        with self._lock:
            job = self._known_job_unlocked(job_id)
            if job is not None:
                size, final = job.durable_log_bytes, self._log_final_unlocked(job)
        if job is None:
            job = self._load_archived(job_id)
            if job is None:
                raise errors.JobLost("job %s not found" % job_id)
            size, final = job.log_bytes, True
        return self._log_answer(job_id, offset, max_bytes, size, final)

    @staticmethod
    def _log_final_unlocked(job):
        return job.is_finalized() and not job.unacked_state

    def _log_answer(self, job_id, offset, max_bytes, size, final):
        return _log_slice(self._logs, job_id, offset, max_bytes, size, final, "job")

    def watch_job_log(self, job_id, offset, max_bytes, callback):
        """Call callback(answer) once job_id's log has bytes beyond offset (or it ended).

        Like watch_job: costs no thread; None if answered at once, else a handle with
        cancel(). The answer is read_job_log's.
        """
        job_id = queuedir.parse_job_id(job_id)
        with self._lock:
            job = self._known_job_unlocked(job_id)
            if (job is not None and offset >= job.durable_log_bytes
                    and not self._log_final_unlocked(job)):
                return self._log_waiters.add(
                    job_id, offset, lambda state: callback(_answer_or_retry(
                        self._log_answer, job_id, offset, max_bytes, *state)))
        callback(self.read_job_log(job_id, offset, max_bytes))
        return None

    def signal_job(self, job_id, signum):
        """Send a signal to every process of a command job's attempt: (ok, message)."""
        self._check_writable()
        job_id = queuedir.parse_job_id(job_id)
        with self._lock:
            job = self._visible_job_unlocked(job_id)
            if job is None:
                return (False, "Job %s not found" % job_id)
            if not self._command_on_node_unlocked(job):
                return (False, "Job %s has no running command" % job_id)
        return tuple(self._commands.signal(job_id, signum))

    def list_nodes(self):
        """ListNodes without a cluster: this machine's node, as a cluster's master lists
        its nodes, with what command jobs see of it ([] if the queue runs none)."""
        status = self._commands.node_status() if self._commands is not None else {}
        return [dict({"name": name, "address": None, "role": "master", "reachable": True,
                      "in_sync": None, "position": None, "last_error": None, "epoch": None,
                      "config_version": None}, **node_list_fields(row))
                for name, row in sorted(status.items())]

    def query_running(self, node=None):
        """Running command attempts: [{job, attempt, node, pid, started, ...}]."""
        if self._commands is None:
            return []
        return self._commands.running(node)

    def wait_durable(self, timeout=None):
        """Block until every change made so far is durable and its waiters were told,
        and so are the changes they caused (a group's state follows its jobs' once
        theirs are durable: at most two steps later)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        barrier = self._journal.barrier()
        for _ in range(_DERIVED_STEPS + 1):
            if barrier is None:
                return
            try:
                barrier.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except errors.JobQueueError:
                if not barrier.refused:
                    raise
            following = self._journal.barrier()
            barrier = following if following is not barrier else None

    def _wait(self, batch):
        """Wait for a batch to be acknowledged; ReplicationError if it is not in time."""
        batch.wait(self.ack_timeout)

    def stats(self):
        """Counters for monitoring: jobs, waiters, journal, pool."""
        with self._lock:
            counts = {}
            for job in self._jobs.values():
                status = job.calc_status()
                counts[status] = counts.get(status, 0) + 1
            return {"jobs": len(self._jobs), "by_status": counts, "serial": self._serial,
                    "waiters": self._waiters.count(), "drained": self._drained,
                    "journal": dict(self._journal.stats), "pool": self._pool.stats(),
                    "retention": dict(self._retention.totals)}

    def metrics(self):
        """Counters for monitoring that cost no scan of the jobs: the jobs by status (from
        the index), the last job id, waiters, the journal's counters and its latency
        histogram (jqueue.store.journal.LatencyHistogram), retention's totals."""
        with self._lock:
            by_status = self._index.counts("status") if self._index is not None else {}
            serial = self._serial
            waiters = self._waiters.count()
        return {"by_status": by_status, "serial": serial, "waiters": waiters,
                "event_waiters": self._events.waiter_count(),
                "log_waiters": self._log_waiters.count(),
                "journal": dict(self._journal.stats), "ack_latency": self._journal.ack_latency,
                "retention": dict(self._retention.totals)}

    def _running_rss(self, job):
        """What job's running command holds now (the query field rss), or None."""
        commands = self._commands
        return commands.rss_of(job.id) if commands is not None else None

    def status(self):
        """What an operator sees of the queue's health (``jqctl queue info``).

        ``view_age``: seconds since the job files last caught up with the journal (the
        last checkpoint); ``view_lag``: jobs whose file is behind; ``checkpoint_interval``
        bounds the age while the queue is healthy (jqueue-queue(5)).
        """
        refusal = self._journal.refusal()
        with self._lock:
            return {"writes": errors.error_message(refusal) if refusal else "accepted",
                    "unrecorded_jobs": len(self._unrecorded),
                    "view_age": max(0.0, self._clock() - self._view_written),
                    "view_lag": len(self._dirty.union(self._archiving)),
                    "checkpoint_interval": self._checkpoint_interval}

    def _visible_job_unlocked(self, job_id):
        job = self._jobs.get(job_id)
        return job if job is not None and job.visible else None

    def _known_job_unlocked(self, job_id):
        """A live visible job, or one archived since the last checkpoint."""
        return self._visible_job_unlocked(job_id) or self._archiving.get(job_id)

    def _load_archived(self, job_id):
        try:
            return recovery.load_job(self._dir, job_id, archived=True)
        except FileNotFoundError:
            return None
        except errors.JobFileCorrupted as err:
            logger.error("archived job %s unreadable: %s", job_id, err)
            return None

    # Internals used by the processor (callers hold the lock)

    def _record_state_unlocked(self, job, full_record=None):
        """Journal a job's new state (a full record if first in this generation).

        full_record, if given, is the job's full record already encoded.
        """
        payload, tag, key = self._state_entry_unlocked(job, full_record)
        batch = self._journal.append(payload, tag=tag, key=key)
        self._job_event_unlocked(job)
        return batch

    def _state_entry_unlocked(self, job, full_record=None):
        """(payload, tag, coalescing key or None) of the record of a job's new state,
        counted as not yet durable."""
        key = None
        if full_record is not None:
            job.generation = self._journal.generation
            payload, state = full_record, PRISTINE
        elif job.generation != self._journal.generation:
            job.generation = self._journal.generation
            payload, state = records.job_record(job), job.state_dict()
        else:
            state = job.state_dict()
            payload = records.state_record(job, state)
            key = (records.STATE, job.id)  # a newer state record may replace it
        job.unacked_state += 1
        job.file_bytes = None
        self._dirty.add(job.id)
        self._index_unlocked(job)
        return payload, (job.id, state, job.log_serial), key

    # The index of live jobs (jqueue.jobindex): what listing pages are served from

    def _index_unlocked(self, job):
        """Index a job by its status (a group: its shown status, as its status field),
        node, owner and parent."""
        if self._index is not None:
            self._index.update(*self._index_entry(job))

    def _index_entry(self, job):
        """(id, submission time, values) of a job for the index (jqueue.jobindex)."""
        groups = getattr(self, "_groups", None)  # None while the queue opens
        shown = groups.shown_unlocked(job) if groups is not None else None
        return job.id, ts_to_float(job.received_timestamp or (0, 0)), (
            shown or job.calc_status(), (commandjob.op_exec(job) or {}).get("node"),
            job.owner, getattr(job, "parent", None) or 0)  # 0: the root

    def _unindex_unlocked(self, job):
        if self._index is not None:
            self._index.remove(job.id)

    def list_jobs(self, fields, limit=100, after=None, before=None, filters=None,
                  since=None, until=None):
        """A page of live jobs, from the index: {"rows": [[value, ...]], "more": bool}.

        Jobs in id order after the id after (newest first before the id before, if given
        instead), at most limit, passing filters ({key: [values]} for the keys of
        jqueue.jobindex.KEYS; a parent of 0 is the root) and submitted within
        since..until (epoch seconds). Rows show acknowledged states, as query_jobs does;
        a job whose acknowledged status does not pass the status filter yet is skipped.
        The cost is about the page's, whatever the queue holds.
        """
        if self._index is None:
            raise errors.JobQueueError("queue %s is a replica: list the master's" %
                                       self._dir.path)
        fields = list(fields)
        shown = "status" in fields  # else read for the filter, then dropped
        info = query.getters(fields if shown else fields + ["status"], self._fields)
        at = fields.index("status") if shown else len(fields)
        statuses = (filters or {}).get("status")
        rows = []
        more = False
        with self._lock:
            selected = self._index.select(filters, after=after, before=before,
                                          reverse=before is not None, since=since,
                                          until=until)
            for job_id in selected:
                job = self._jobs.get(job_id)
                if job is None or not job.visible:
                    continue
                if len(rows) >= limit:
                    more = True
                    break
                values = info(self._acked_view_unlocked(job))
                if statuses is not None and values[at] not in statuses:
                    continue
                rows.append(values if shown else values[:-1])
        return {"rows": rows, "more": more}

    def count_jobs(self, key="status"):
        """{value: live jobs} for a key of jqueue.jobindex.KEYS (from the index)."""
        with self._lock:
            return self._index.counts(key) if self._index is not None else {}

    # Events (jqueue.store.events): journaled with the change they describe

    def _record_event_unlocked(self, status, job=0, node=None, kind="job", message="",
                               service=None, when=None):
        """Journal an event (service: the name of the service it is about, if one; when:
        the time it happened, if not now); it reaches readers once durable. The batch."""
        payload, tag = self._event_entry_unlocked(status, job, node, kind, message, service,
                                                  when)
        return self._journal.append(payload, tag=tag)

    def _event_entry_unlocked(self, status, job=0, node=None, kind="job", message="",
                              service=None, when=None):
        """(record, tag) of an event, to journal with the change it describes."""
        self._event_serial += 1
        event = {"serial": self._event_serial, "time": self._clock() if when is None else when,
                 "kind": kind, "job": job, "node": node, "status": status, "message": message}
        if service is not None:
            event["service"] = service
        self._pending_events[event["serial"]] = event
        return records.event_record(event), (None, records.EVENT, event["serial"])

    def _job_event_unlocked(self, job):
        """Journal the event of a job's status change, if its status changed."""
        entry = self._job_event_entry_unlocked(job)
        if entry is not None:
            self._journal.append(entry[0], tag=entry[1])

    def _job_event_entry_unlocked(self, job):
        """(record, tag) of the event of a job's status change, if its status changed
        (masters only), else None."""
        status = job.calc_status()
        if self._replica or status == job.event_status:
            return None
        job.event_status = status
        if status in constants.JOBS_FINALIZED:
            return self._event_entry_unlocked("DONE", job.id, message=status)
        index = job.next_op_index()
        if status == constants.JOB_STATUS_RUNNING and index is not None and (
                commandjob.is_command(job.ops[index].input)):
            return None  # a command's attempt events say where and how it runs
        word = _STATUS_EVENTS.get(status)
        return self._event_entry_unlocked(word, job.id) if word is not None else None

    def cut_events(self, serial):
        """Forget this replica's events from serial on, which its master's resync replaces
        (jqueue.cluster.replication): the master's own that no candidate acknowledged
        before it failed, replayed from its journal. A checkpoint made now drops their
        records from the journal (a crash before it brings them back, and the next resync
        cuts them again)."""
        with self._lock:
            self._event_serial = min(self._event_serial, serial - 1)
            for pending in [s for s in self._pending_events if s >= serial]:
                del self._pending_events[pending]
            self._events.cut_from(serial)
        self.checkpoint()

    def record_event(self, status, job=0, node=None, kind="job", message=""):
        """Journal an event of our own (node health, services): its serial once durable."""
        with self._lock:
            return self._record_event_unlocked(status, job, node, kind, message)

    def read_events(self, since, flt=None, limit=1000):
        """{"events", "last", "gap"}: durable events after serial since passing flt (at
        most limit; None: every one the ring holds)."""
        return self._events.read(since, flt, limit)

    def watch_events(self, since, flt, callback):
        """Call callback(read_events answer) once an event after since passes flt; costs no
        thread. None if answered at once, else a handle with cancel()."""
        return self._events.watch(since, flt, callback)

    def _record_chunk_unlocked(self, job, op_index, attempt, out_offset, data):
        """Append data to job's command log (its file at once; a journal record of the
        bytes, or of where they are, see jqueue.store.joblogs)."""
        if job.generation != self._journal.generation:
            self._record_state_unlocked(job)
        chunk = records.LogChunk(job.id, job.log_bytes, op_index, attempt, out_offset, data)
        try:
            self._logs.write(job.id, chunk.offset, data)  # first: nothing changed if it fails
        except OSError as err:
            raise errors.JobQueueError("cannot write the log of job %d in %s: %s" % (
                job.id, self._logs.path, err.strerror or err)) from None
        records.apply_log_chunk(job, chunk)
        job.file_bytes = None
        self._dirty.add(job.id)
        payload, presync = self._piece_record(job.id, chunk.offset, op_index, attempt,
                                              out_offset, len(data), data)
        return self._journal.append(payload, tag=(job.id, None, job.log_bytes),
                                    presync=presync)

    def _piece_record(self, job_id, offset, op_index, attempt, out_offset, size, data=None):
        """(record, presync) of a piece of job_id's log, in its file at offset: its
        bytes (data, else read from the file), or with extents where they are."""
        if self._log_extents and size >= EXTENT_MIN:
            return records.log_extent_record(job_id, offset, op_index, attempt, out_offset,
                                             size), job_id
        if data is None:
            data = self._logs.read(job_id, offset, size)
        return records.log_chunk_record(job_id, offset, op_index, attempt, out_offset,
                                        data), None

    def replicated_frames(self, frames):
        """A commit's framed records as candidates take them: each extent of a command
        log replaced by a record of the bytes it names, read from the log (a candidate's
        copy of the log grows only by what it is sent). Called by the replicator in the
        journal's committer, after the log was written."""
        if not any(_is_extent_frame(f) for f in frames):
            return frames
        sent = []
        for data in frames:
            if _is_extent_frame(data):
                extent = records.parse_log_extent(data[journal.HEADER_SIZE:])
                data = journal.frame(records.log_chunk_record(
                    extent.job_id, extent.offset, extent.op_index, extent.attempt,
                    extent.out_offset, self._logs.read(extent.job_id, extent.offset,
                                                       extent.size)))
            sent.append(data)
        return sent

    def _record_log_tail_unlocked(self, job):
        """Journal again the pieces of job's log that refused batches held: their bytes
        are in its file, beyond what is acknowledged (a line of our own: the full record
        already counts the attempts' output)."""
        start = job.durable_log_bytes
        if job.log_bytes <= start:
            return
        payload, presync = self._piece_record(job.id, start, 0, 0, 0, job.log_bytes - start)
        self._journal.append(payload, tag=(job.id, None, job.log_bytes), presync=presync)

    def _record_log_unlocked(self, job, op_index, entry):
        """Journal a new log entry (a full record if first in this generation)."""
        if job.generation != self._journal.generation:
            return self._record_state_unlocked(job)
        job.file_bytes = None
        self._dirty.add(job.id)
        return self._journal.append(records.log_record(job.id, op_index, entry),
                                    tag=(job.id, False, entry[0]))

    # Services (jqueue.store.services): records the ServiceManager journals

    def _record_service_unlocked(self, name, record):
        """Journal a service's whole record (None: its removal); the batch."""
        self._services.set(name, record)
        payload = servicetable.service_record(name, record, self._services.next_id)
        return self._journal.append(payload, tag=(None, servicetable.RECORD, name))

    def _record_service_chunk_unlocked(self, name, run, out_offset, data):
        """Append data to a service's log (its file at once, a journal record); the batch.

        run 0 is a line of our own; else data is that run's output from out_offset.
        """
        record = self._services.get(name)
        chunk = servicetable.ServiceLogChunk(record["id"], record.get("log_bytes") or 0, run,
                                             out_offset, data)
        try:
            self._service_logs.write(chunk.service_id, chunk.offset, data)
        except OSError as err:
            raise errors.JobQueueError("cannot write the log of service %s in %s: %s" % (
                name, self._service_logs.path, err.strerror or err)) from None
        self._services.set(name, servicetable.account_chunk(record, chunk))
        payload = servicetable.log_chunk_record(chunk.service_id, chunk.offset, run,
                                                out_offset, data)
        return self._journal.append(payload, tag=(None, _SERVICE_LOG,
                                                  (chunk.service_id, chunk.end, name)))

    def _service_log_durable_unlocked(self, sid, end, _name=None):
        self._service_durable[sid] = max(self._service_durable.get(sid, 0), end)
        return self._service_log_waiters.collect_ready(sid, self._service_durable[sid], False)

    def _remove_service_log_unlocked(self, sid):
        """A removed service: its log goes, its followers hear the end."""
        self._service_durable.pop(sid, None)
        self._service_logs.remove(sid)
        return self._service_log_waiters.collect_ready(sid, 0, True)

    def read_service_log_bytes(self, sid, offset, max_bytes, final):
        """{"data", "offset", "eof"} of a service's log: its durable bytes from offset."""
        with self._lock:
            size = self._service_durable.get(sid, 0)
        return _log_slice(self._service_logs, sid, offset, max_bytes, size, final, "service")

    def watch_service_log_bytes(self, sid, offset, max_bytes, callback):
        """Call callback(read_service_log_bytes answer) once sid's durable log passes
        offset, or the service is removed (eof); costs no thread. A handle with cancel(),
        or None if answered at once."""
        with self._lock:
            if sid in self._service_durable and offset >= self._service_durable[sid]:
                return self._service_log_waiters.add(sid, offset, lambda state: callback(
                    _answer_or_retry(self.read_service_log_bytes, sid, offset, max_bytes,
                                     state[1])))
        callback(self.read_service_log_bytes(sid, offset, max_bytes,
                                             sid not in self._service_durable))
        return None

    @property
    def services(self):
        """The ServiceManager (None if this queue runs no command jobs, hence no services)."""
        return self._service_manager

    # Supervised services: the library's and LUXI's entry points (jqueue.run.services)

    def add_services(self, definitions, start=False):
        """Add services (all or none); their views. See ServiceManager.add."""
        return self._services_or_refuse().add(definitions, start)

    def modify_service(self, name, changes):
        """Change a service's definition; its view."""
        return self._services_or_refuse().modify(name, changes)

    def remove_service(self, name):
        """Remove a service (its node stops it first); a message."""
        return self._services_or_refuse().remove(name)

    def control_service(self, name, action):
        """start, stop or restart a service: (True, message)."""
        return self._services_or_refuse().control(name, action)

    def query_services(self, names=None):
        """Views of the services named (None: every one)."""
        if self._service_manager is None:
            if names:
                raise errors.OpPrereqError("service %s not found (this queue runs no "
                                           "services)" % names[0], constants.ECODE_NOENT)
            return []
        return self._service_manager.query(names)

    def read_service_log(self, name, offset, max_bytes):
        """{"data": bytes, "offset", "eof"} of a service's log from offset."""
        return self._services_or_refuse().read_log(name, offset, max_bytes)

    def watch_service_log(self, name, offset, max_bytes, callback):
        """Like watch_job_log, for a service's log."""
        return self._services_or_refuse().watch_log(name, offset, max_bytes, callback)

    def _services_or_refuse(self):
        if self._service_manager is None:
            raise errors.OpPrereqError("this queue runs no services (no command runner)",
                                       constants.ECODE_STATE)
        return self._service_manager

    def _schedule_unlocked(self, job):
        if (not self._closing and not self._pool.has_waiting_task(job.id)
                and self._may_start_unlocked(job)):
            self._pool.add_task((job.id,), job.calc_priority(), job.id)

    def _may_start_unlocked(self, job):
        """Whether a job may start now (not held, its start time come: jobcontrol)."""
        return self._control.may_start_unlocked(job)

    def _job_status_unlocked(self, job_id):
        """Status of a job for dependency checks; None if unknown.

        A final status that is not durable yet counts as running, so that a dependent
        never starts on a result that a crash could still take back.
        """
        job = self._known_job_unlocked(job_id)
        if job is None:
            job = self._load_archived(job_id)
            return job.calc_status() if job is not None else None
        status = job.calc_status()
        if status in constants.JOBS_FINALIZED and (
                job.unacked_state or not self._groups.complete_unlocked(job_id)):
            return constants.JOB_STATUS_RUNNING  # a group: until its whole tree ended
        return status

    def _on_durable(self, tags):
        """Journal listener: the changes tagged are durable; tell waiters and dependents.

        A tag is (job id, the state_dict() recorded or PRISTINE, False for a log entry or
        None for a command log chunk, log serial or the log's length); the newest state
        acknowledged is what readers see. Without the cyclic collector: a job's end may
        release thousands of waiters at once, and a collection in the middle (15-20 ms)
        would delay all the answers after it; the daemon's server keeps it paused until
        it has sent them (jqueue.luxi.server, hand_over).
        """
        with serializer.paused_collection():
            self._tell_durable(tags)

    def _tell_durable(self, tags):
        ready = []
        with self._lock:
            touched = {}
            durable_events = []
            for job_id, state, log_serial in tags:
                if job_id is None:
                    if state == records.EVENT:  # an event: log_serial is its serial
                        event = self._pending_events.pop(log_serial, None)
                        if event is not None:
                            durable_events.append(event)
                    elif state == _SERVICE_LOG:  # log_serial: (service id, log length)
                        ready.extend(self._service_log_durable_unlocked(*log_serial))
                    continue
                job = self._jobs.get(job_id) or self._archiving.get(job_id)
                if job is None:
                    continue
                if state is None:  # a log chunk: log_serial is the log's new length
                    job.durable_log_bytes = max(job.durable_log_bytes, log_serial)
                    touched[job_id] = job
                    continue
                if state is not False:
                    job.unacked_state -= 1
                    job.acked_state = state
                job.durable_log_serial = max(job.durable_log_serial, log_serial)
                if not job.visible:
                    job.visible = True
                    self._groups.visible_unlocked(job)
                    self._schedule_unlocked(job)
                touched[job_id] = job
            for job in touched.values():
                self._groups.changed_unlocked(job)
                if not job.unacked_state:
                    if job.is_finalized():
                        job.acked_state = None  # final and acknowledged: nothing to keep
                    ready.extend(self._settled_unlocked(job))
                elif self._waiters.has_waiters(job.id):
                    ready.extend(self._waiters.collect_ready(
                        self._acked_view_unlocked(job), job.durable_log_serial))
        if durable_events:
            ready.extend(self._events.add(durable_events))
        if not ready:
            return
        if self.answer_handoff is not None:
            self.answer_handoff(ready)
            return
        for callback, result in ready:
            try:
                callback(result)
            except Exception:  # noqa: BLE001 - one waiter must not hurt the others
                logger.exception("job change callback failed")

    def _on_refused(self, batches, error):
        """Journal listener: batches were refused (nothing of them is on disk).

        Undo the client changes they carried, latest first, and keep the jobs whose
        internal changes they lost as unrecorded (not durable) until _on_recovered.
        """
        with self._lock:
            for batch in reversed(batches):
                for undo in reversed(batch.undo):
                    undo()
            for batch in batches:
                for job_id, state, serial in batch.tags:
                    if job_id is None:
                        if state == records.EVENT:  # a refused change's event: never was
                            self._pending_events.pop(serial, None)
                        elif state in (servicetable.RECORD, _SERVICE_LOG):
                            self._unrecorded_services.add(serial if state ==
                                                          servicetable.RECORD else serial[2])
                        continue
                    job = self._jobs.get(job_id) or self._archiving.get(job_id)
                    if job is None:
                        continue
                    if state:
                        job.unacked_state -= 1
                    if not job.visible:
                        continue
                    # The re-record is a full record: also when the job was unrecorded
                    # already, as the record refused now may be the full one an earlier
                    # refusal called for (its making counted the job recorded in full).
                    job.generation = -1
                    if job.id not in self._unrecorded:
                        self._unrecorded.add(job.id)
                        job.unacked_state += 1  # not durable until re-recorded
        for _ in batches:
            self._refusals.count(errors.error_message(error))

    def _on_recovered(self):
        """Journal listener: writes work again; record the unrecorded jobs in full."""
        with self._lock:
            unrecorded, self._unrecorded = self._unrecorded, set()
            for job_id in sorted(unrecorded):
                job = self._jobs.get(job_id) or self._archiving.get(job_id)
                if job is not None:
                    job.unacked_state -= 1
                    self._record_state_unlocked(job)
                    self._record_log_tail_unlocked(job)
                    if job.calc_status() == constants.JOB_STATUS_QUEUED:
                        self._schedule_unlocked(job)  # its start was taken back
            services, self._unrecorded_services = self._unrecorded_services, set()
            for name in sorted(services):
                self._record_service_unlocked(name, self._services.get(name))
        if unrecorded:
            logger.info("re-recorded %d job(s) whose changes a full disk had refused",
                        len(unrecorded))

    def _on_fatal(self, error):
        """A sync failed (journal or checkpoint): refuse changes; the owner must stop
        without a checkpoint (see __init__ and shutdown)."""
        logger.critical("queue %s: a sync failed (%s): refusing changes until it is opened "
                        "again, which replays the journal", self._dir.path, error)
        self._fatal = error
        if self._fatal_hook is not None:
            self._fatal_hook(error)

    def _settled_unlocked(self, job):
        """A job's changes are all durable: release dependents, collect waiters, tell
        its webhook."""
        if job.is_finalized():
            self._logs.written(job.id)
            self._notify_due_unlocked(job)
            for dependent_id in self._deps.release(job.id):
                dependent = self._jobs.get(dependent_id)
                if dependent is not None and not dependent.is_finalized():
                    self._schedule_unlocked(dependent)
        ready = self._log_waiters.collect_ready(job.id, job.durable_log_bytes,
                                                self._log_final_unlocked(job))
        if self._waiters.has_waiters(job.id):
            ready.extend(self._waiters.collect_ready(job, job.durable_log_serial))
        return ready

    # Notifications (jqueue.notify)

    def set_notify_command(self, command):
        """The notify command from now on (an argv, or None: a notify "to" is refused at
        submit; those submitted before wait for one)."""
        self._notify_command = list(command) if command else None
        if self._notifier is not None:
            self._notifier.set_command(self._notify_command)

    def _check_notify_options(self, options, validated, single):
        """OpPrereqError unless every notify URL of options begins with a notify prefix,
        an address has a notify command to go to and only groups have an after."""
        for index, (option, inputs) in enumerate(zip(options, validated)):
            spec = option.get("notify")
            if spec is None:
                continue
            label = "" if single else "job %d: " % index
            url = spec.get("url")
            if url is not None and self._notify_prefixes and not url.startswith(
                    self._notify_prefixes):
                raise errors.OpPrereqError("%snotify URL %s is not allowed here: it must "
                                           "begin with %s" % (
                                               label, url, " or ".join(self._notify_prefixes)),
                                           constants.ECODE_INVAL)
            if url is None and not self._notify_command:
                raise errors.OpPrereqError(
                    "%snotify to %s: this master has no notify_command to tell an address "
                    "(notify a URL instead)" % (label, spec["to"]), constants.ECODE_INVAL)
            if "after" in spec and not (len(inputs) == 1 and (
                    groupjob.is_group_input(inputs[0]) or fanout.is_fan_out(inputs[0]))):
                raise errors.OpPrereqError(
                    "%snotify's after counts the jobs of a group: only a group (or a "
                    "command on several nodes) may have it" % label, constants.ECODE_INVAL)

    def _notify_due_unlocked(self, job):
        """Tell the notifier what of job is due: its end, a group's after."""
        if self._notifier is None or job.archived:
            return
        if self._end_untold(job):
            self._notifier.due(job.id)
        self._notify_after_due_unlocked(job)

    def _notify_after_due_unlocked(self, job):
        """Tell the notifier if a group's after is due (its counts changed: the group
        keeper's)."""
        if self._notifier is not None and not job.archived and self._after_untold(job):
            self._notifier.due(job.id, notify.AFTER)

    def _telling_unlocked(self, job):
        """Whether something of a job is due to be told and not told (nor given up) yet:
        retention and AutoArchiveJobs leave it until it is."""
        return self._notifier is not None and (self._end_untold(job)
                                               or self._after_untold(job))

    def _end_untold(self, job):
        spec = job.notify
        return (spec is not None and job.notified is None and job.is_finalized()
                and job.calc_status() in spec.get("on", ()))

    def _after_untold(self, job):
        spec = job.notify
        return (spec is not None and "after" in spec and job.notified_after is None
                and self._after_reached(job))

    def _untold(self, job, what, durable=True):
        """Whether what (END, AFTER) of job is due and not told (nor given up) yet; with
        durable, its end only once it is durable."""
        if what == notify.AFTER:
            return self._after_untold(job)
        return self._end_untold(job) and not (durable and job.unacked_state)

    def _after_reached(self, job):
        counts = self._groups.tree.counts(job.id)
        return counts is not None and counts.finished >= job.notify["after"]

    def notification(self, job_id, what=notify.END):
        """(target, payload, idempotency key) of what (jqueue.notify's END or AFTER) of
        job_id while it is due, else None (the Notifier's; any thread)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not self._untold(job, what):
                return None
            row = query.getters(notify.PAYLOAD_FIELDS, self._fields)(job)
            target = {key: job.notify[key] for key in ("url", "to") if key in job.notify}
            return (target, notify.payload(row, what, job.notify.get("after")),
                    notify.key_of(job, what))

    def record_notified(self, job_id, what, key, outcome):
        """Journal how telling what of job_id (key) went, with an event, unless the job
        changed meanwhile (reset: its next end is told)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if (job is None or not self._untold(job, what, durable=False)
                    or notify.key_of(job, what) != key):
                return
            self._check_open_unlocked()
            if what == notify.AFTER:
                self._prepare_change_unlocked(job)  # a group may still run
                job.notified_after = outcome
            else:
                job.notified = outcome
            self._record_state_unlocked(job)
            self._record_event_unlocked(
                "NOTIFIED" if outcome["delivered"] else "NOTIFY_FAILED", job.id, None, "job",
                notify.outcome_text(outcome, job.notify.get("after") if what == notify.AFTER
                                    else None))

    # Checkpoints and shutdown

    def checkpoint(self):
        """Write changed job files and archive moves, sync once, drop the old journal.

        If a checkpoint fails after rotating the journal, ``journal.old`` stays and what it
        covered is marked changed again; the next checkpoint finishes the job without
        rotating a second time.
        """
        with self._checkpoint_lock:
            with self._lock:
                if self._closed:
                    return
                if not (self._dirty or self._archiving or self._journal.size
                        or self._old_journal_pending or self._deleted
                        or self._deleted_archived or self._services.dirty):
                    self._view_written = self._clock()  # nothing behind: the view is current
                    return
                rotation = None if self._old_journal_pending else self._journal.rotate()
                self._old_journal_pending = True
                dirty, self._dirty = self._dirty, set()
                deleted = self._take_deleted_unlocked()
                archiving = dict(self._archiving)
                serial, position = self._serial, self._position
                services = self._take_services_unlocked()
            try:
                if rotation is not None:
                    self._journal.wait_written(rotation)
                self._materialize(dirty, archiving, serial, deleted, position, services)
            except BaseException as err:
                with self._lock:
                    self._services.dirty = self._services.dirty or services is not None
                    self._dirty |= dirty
                    self._deleted |= deleted[0]
                    self._deleted_archived |= deleted[1]
                if isinstance(err, errors.DiskSyncError):
                    self._on_fatal(err)
                raise
            self._journal.remove_old()
            with self._lock:
                self._old_journal_pending = False
                self._view_written = self._clock()
                for job_id in archiving:
                    self._archiving.pop(job_id, None)
        _freeze_long_lived()

    def _take_deleted_unlocked(self):
        deleted = (self._deleted, self._deleted_archived)
        self._deleted, self._deleted_archived = set(), set()
        return deleted

    def _take_services_unlocked(self):
        """The service table's bytes if it changed since the last write (else None), and
        where each service's log starts ({id: log_start}; see _materialize)."""
        if not self._services.dirty:
            return None
        self._services.dirty = False
        return self._services.snapshot(), self._services.log_starts()

    def _materialize(self, dirty, archiving, serial, deleted=(), position=None,
                     services=None):
        ids = sorted(dirty - set(archiving))
        for offset in range(0, len(ids), _CHECKPOINT_CHUNK):
            with self._lock:
                snapshots = []
                for job_id in ids[offset:offset + _CHECKPOINT_CHUNK]:
                    job = self._jobs.get(job_id) or self._archiving.get(job_id)
                    if job is not None:
                        # A job unchanged since its submission: the bytes already encoded.
                        snapshots.append((job, job.file_bytes or job.to_dict()))
            for job, data in snapshots:
                # Serialized outside the lock: values are replaced, never changed in place,
                # and a log appended meanwhile only makes the file newer.
                if isinstance(data, dict):
                    data = serializer.dumps_bytes(data)
                self._dir.write_job(job.id, data, new=job.file_new)
                job.file_new = False
                if job.file_bytes is data:
                    job.file_bytes = None  # written: memory is worth more than a re-encode
        with self._archive_lock:
            for job_id, job in archiving.items():
                fresh = job_id in dirty or not self._dir.has_live_job(job_id)
                self._dir.archive_job(job_id, records.job_bytes(job) if fresh else None)
            if deleted:
                self._remove_deleted(*deleted)
        # The logs on the queue's file system are made durable by its sync at the end.
        self._logs.sync(then_syncfs=self._dir.path)
        self._service_logs.sync(then_syncfs=self._dir.path)
        self._events.sync()
        if services is not None:
            self._services.write(services[0])
            # The file says where each log starts now: the bytes before go for good.
            for sid, start in services[1].items():
                self._service_logs.drop_before(sid, start)
        self._dir.write_serial(serial, sync=False)
        if position is not None:
            self._dir.write_replica_position(position)
        self._dir.sync()

    def _remove_deleted(self, live_ids, archived_ids):
        """Replicas: remove the files and logs of jobs a resync deleted or the master
        purged (unless they came back), and archive directories left empty."""
        with self._lock:
            live_ids = [i for i in live_ids if i not in self._jobs and i not in self._archiving]
            archived_ids = [i for i in archived_ids if i not in self._archiving]
        purge.remove_live(self._dir, self._logs, live_ids)
        purge.remove_live(self._dir, None, archived_ids)  # purged before it was moved
        purge.remove_archived(self._dir, self._logs, archived_ids)

    def shutdown(self, timeout=None):
        """Stop: refuse new work, let running opcodes finish (up to timeout), checkpoint.

        Opcodes still running after the timeout are recorded as running, so that
        reopening the queue ends them with "Unclean master daemon shutdown".
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._retention.stop()
        if self._notifier is not None:
            self._notifier.stop()
        self._control.starts.stop()
        if self._commands is not None:
            self._commands.stop()
        self._pool.terminate(timeout)
        with self._lock:
            self._closed = True
        self._journal.close(ack_timeout=self._replicator.ack_timeout)
        self._replicator.stop()
        failed = self.failed is not None
        try:
            if not failed:
                with self._checkpoint_lock:
                    self._materialize(self._dirty, self._archiving, self._serial,
                                      self._take_deleted_unlocked(), self._position,
                                      self._take_services_unlocked())
                    journal.reset(self._dir.path)
            self._logs.close(sync=not failed)
            self._service_logs.close(sync=not failed)
            self._events.close()
        finally:
            self._dir.unlock()  # a failed final checkpoint keeps the journal: replay decides
        if failed:
            raise errors.DiskSyncError("queue %s closed without a checkpoint after a failed "
                                       "sync; reopening replays its journal" % self._dir.path)
        logger.info("closed queue %s", self._dir.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


def _archival_finished(jobs, batch):
    """The archive records of jobs are durable: readers see them archived (a refused
    archival is undone instead: see _unarchive_unlocked)."""
    if batch.error is None:
        for job in jobs:
            job.archive_pending = False


def _snapshot(job):
    """What a client change may alter, to undo it if refused (see _restore_unlocked)."""
    return job.state_dict(), job.kill_requested


#: Longest idempotency token accepted.
MAX_TOKEN_LENGTH = 256


def _check_tokens(tokens, count):
    """tokens as a list of count strings or None; OpPrereqError if malformed."""
    if tokens is None:
        return [None] * count
    if not isinstance(tokens, (list, tuple)) or len(tokens) != count:
        raise errors.OpPrereqError("tokens must be a list of one token (or null) per job, "
                                   "got %s" % ptypes._short(tokens), constants.ECODE_INVAL)
    for token in tokens:
        if token is not None and not (
                isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LENGTH
                and token.isprintable()):
            raise errors.OpPrereqError("invalid token %s: a token is a printable string of "
                                       "1 to %d characters" % (ptypes._short(token),
                                                               MAX_TOKEN_LENGTH),
                                       constants.ECODE_INVAL)
    return list(tokens)


def _fields_key(fields):
    """The fields of a watch as a dictionary key (None if they cannot be one)."""
    try:
        key = tuple(fields)
        hash(key)
    except TypeError:
        return None
    return key


#: Longest owner name accepted.
MAX_OWNER_LENGTH = 256


def _check_owner(owner):
    """OpPrereqError unless owner is None or a printable string of 1 to 256 characters."""
    if owner is not None and not (isinstance(owner, str) and 0 < len(owner) <= MAX_OWNER_LENGTH
                                  and owner.isprintable()):
        raise errors.OpPrereqError("invalid owner %s: an owner is a printable string of 1 "
                                   "to %d characters" % (ptypes._short(owner),
                                                         MAX_OWNER_LENGTH),
                                   constants.ECODE_INVAL)


def _is_extent_frame(data):
    return (len(data) == journal.HEADER_SIZE + records.LOG_EXTENT_SIZE
            and records.is_log_extent(data[journal.HEADER_SIZE:]))


def _freeze_long_lived(collect=True):
    """Exempt the objects alive now (mostly job records) from cyclic garbage collection.

    Job records hold no reference cycles: reference counting frees them when a job goes
    (archival), frozen or not. Without this, a full pass of the cyclic collector scans
    every container of every job (millions for 10^5 jobs) and pauses the process for
    seconds. Objects created later are collected as usual until the next freeze.

    Garbage in cycles that is still uncollected when the objects are frozen is never
    collected (a closure of each call handed to a thread, a Deferred's: about 240 bytes
    a command job, for ever). So a full collection runs first: it walks only what is not
    frozen yet, the objects made since the last freeze. collect=False where nothing but
    cycle-free records was made (a queue just loaded).
    """
    if collect:
        gc.collect()
    gc.freeze()


class _NullPool:
    """The pool of a replica: jobs never run there."""

    def __init__(self, name, num_workers, task_fn):
        pass

    def add_task(self, args, priority=0, task_id=None):
        pass

    def add_many_tasks(self, tasks):
        pass

    def has_waiting_task(self, task_id):
        return False

    def change_task_priority(self, task_id, priority):
        return False

    def terminate(self, timeout=None):
        return True

    def stats(self):
        return {"workers": 0, "waiting": 0, "running": 0, "paused": False}


def _old_enough(job, age, now):
    if not job.is_finalized():
        return False
    if age == -1:
        return True
    ts = job.end_timestamp or job.start_timestamp or job.received_timestamp
    return ts is None or now - ts_to_float(ts) > age


class _Checkpointer(threading.Thread):
    """Runs JobQueue.checkpoint every interval seconds, or sooner once the journal is big."""

    def __init__(self, queue, interval, max_bytes):
        super().__init__(name="jq-checkpoint", daemon=True)
        self._queue = queue
        self._interval = interval
        self._max_bytes = max_bytes
        self._stopped = threading.Event()
        # The disk's refusal (said where it happened; a failed sync is fatal there): no
        # traceback, and one line a minute while it lasts (every 5 s otherwise).
        self._failures = ratelog.CountedWarning(
            time.monotonic, "%d checkpoint(s) failed since the last line: %s (the journal "
            "keeps every change meanwhile)", logger, level=logging.ERROR)

    def run(self):
        threadname.name_os_thread("jq-checkpoint")
        last = time.monotonic()
        while not self._stopped.wait(min(self._interval, 0.5)):
            due = time.monotonic() - last >= self._interval
            if due or self._queue._journal.size >= self._max_bytes:
                last = time.monotonic()
                try:
                    self._queue.checkpoint()
                except (OSError, errors.JobQueueError) as err:
                    self._failures.count(errors.error_message(err))
                except Exception:  # noqa: BLE001 - keep checkpointing; the journal stays valid
                    logger.exception("checkpoint failed")
                else:
                    if self._failures.reset():
                        logger.warning("checkpoints succeed again")

    def stop(self):
        self._stopped.set()
        self.join()


def _log_slice(logs, key, offset, max_bytes, size, final, kind):
    """{"data", "offset", "eof"} of the log of key (a job's or a service's id; kind says
    which) in logs (a JobLogs) from offset, of its size durable bytes; eof once final and
    read to the end. JobQueueError if the file lacks bytes it was acknowledged to hold
    (removed or cut outside jqueue): a follower would wait for them for ever."""
    data = b""
    if offset < size:
        raw = logs.read(key, offset, min(max_bytes, size - offset))
        if not raw:
            raise errors.JobQueueError(
                "the log of %s %s is gone: %s holds %d of the %d bytes written to it "
                "(removed or cut outside jqueue)" % (kind, key, logs.file_path(key),
                                                     logs.size(key), size))
        data = _utf8_prefix(raw, offset + max_bytes < size)
    next_offset = offset + len(data)
    return {"data": data, "offset": next_offset, "eof": final and next_offset >= size}


def _answer_or_retry(read, key, offset, max_bytes, *state):
    """read(key, offset, max_bytes, *state) for a log waiter, whose answer must not raise
    in the thread that wakes it: a log found gone answers "nothing yet", and the reader's
    next call, answered at once, hears why."""
    try:
        return read(key, offset, max_bytes, *state)
    except errors.JobQueueError:
        return {"data": b"", "offset": offset, "eof": False}


def _utf8_prefix(data, cut):
    """data without a UTF-8 sequence cut at its end (if it was cut at a size limit)."""
    if not cut:
        return data
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


#: The event word of a job's new status (finalized statuses are DONE, with the status).
_STATUS_EVENTS = {constants.JOB_STATUS_WAITING: "WAIT", constants.JOB_STATUS_RUNNING: "RUN",
                  constants.JOB_STATUS_CANCELING: "CANCELING",
                  constants.JOB_STATUS_QUEUED: "QUEUED"}
