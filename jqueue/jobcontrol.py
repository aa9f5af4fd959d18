"""Changing a job's course: cancel, priority, hold, release, reset and retry, and when a job
may start at all (its hold, its groups' holds, its start time).

A JobControl belongs to a master's JobQueue and changes jobs under the queue's lock, the
way every client change is made (see jqueue.queue): each change is journaled, acknowledged
only once durable (and replicated per the policy), and undone without a trace if the
journal refuses it. Applied to a group, a change applies to every job of its tree it
concerns; the records of all those jobs share one journal batch, so that the whole
change is durable, or refused, as one.

* ``hold``: a held job does not start (nor does any job of a held group, including jobs
  added later). A running command job is stopped (TERM, then KILL after its kill_grace,
  see jqueue.run.commands) and goes back to queued without counting the attempt; a
  running opcode of another kind finishes, and the job goes no further.
* ``release`` lifts a hold: the job is runnable again.
* ``reset`` (a finished job): back to queued, as submitted, with its attempts counted
  anew; its log is kept, with a marker line.
* ``retry`` (a failed job): its failed opcodes go back to queued for one more attempt;
  the attempt counter goes on.
"""

import functools
import logging

from jqueue import commandjob, constants, errors, ptypes
from jqueue.run import starttimes
from jqueue.store import queuedir

logger = logging.getLogger(__name__)

_C = constants
_PENDING = (_C.JOB_STATUS_QUEUED, _C.JOB_STATUS_WAITING)
#: A refusal that says nothing: a group whose own state follows its jobs.
_SKIP = (True, None)


class JobControl:
    """The course-changing requests of a JobQueue and its start gate."""

    def __init__(self, queue, clock, thread=True):
        self._queue = queue
        self._clock = clock
        #: Jobs waiting for their start time (jqueue.run.starttimes).
        self.starts = starttimes.StartSchedule(clock, self._starts_due, thread=thread)

    # The gate

    def may_start_unlocked(self, job):
        """Whether job may start now: not a group, not held (nor a group above it), its
        start time come (if not, it is woken then)."""
        queue = self._queue
        if queue._groups.tree.is_group(job.id) or queue._groups.held_unlocked(job):
            return False
        if not job.start_due(self._clock()):
            self.starts.add(job.id, job.not_before)
            return False
        return True

    def wait_reason_unlocked(self, job):
        """(code, message) saying why job, pending, does not run now (constants.WAIT_*),
        or None: it runs, it ended, or nothing keeps it back (it starts in its turn).

        A reading of the moment, of the queue and (for a command) of its nodes as the
        command runner sees them: the query fields wait_reason and wait_message. A change
        of it alone is no change of the job: it wakes no WaitForJobChanges.
        """
        queue = self._queue
        if job.archived or job.calc_status() not in _PENDING or queue._groups.tree.is_group(
                job.id):
            return None
        if job.held:
            return _C.WAIT_HELD, "held: it starts once released"
        holder = queue._groups.holder_unlocked(job)
        if holder is not None:
            return _C.WAIT_HELD, "its group %d is held: it starts once that is released" % (
                holder)
        if not job.start_due(self._clock()):
            return _C.WAIT_NOT_BEFORE, "its start time has not come (not_before)"
        index = job.next_op_index()
        if index is None:
            return None
        params = job.ops[index].input
        waits = [dep_id for dep_id, _ in params.get("depends") or ()
                 if queue._known_job_unlocked(dep_id) is not None
                 and queue._job_status_unlocked(dep_id) not in _C.JOBS_FINALIZED]
        if waits:
            return _C.WAIT_DEPENDENCY, "it waits for job%s %s to end" % (
                "s" if len(waits) > 1 else "", ", ".join(map(str, waits)))
        if commandjob.is_command(params) and queue._commands is not None:
            found = queue._commands.wait_reason_unlocked(job, index)
            if found is not None:
                return found
        if queue._pool.has_waiting_task(job.id):
            stats = queue._pool.stats()
            if stats["running"] >= stats["workers"]:
                return _C.WAIT_WORKERS, ("the worker is busy" if stats["workers"] == 1
                                         else "all %d workers are busy" % stats["workers"])
        return None

    def _starts_due(self, job_ids):
        queue = self._queue
        with queue._lock:
            for job_id in job_ids:
                job = queue._jobs.get(job_id)
                if job is not None and job.calc_status() in _PENDING:
                    queue._schedule_unlocked(job)

    # Requests

    def cancel(self, job_id, kill=False):
        """CancelJob: see JobQueue.cancel_job; a group's unfinished jobs are canceled."""
        return self._change(job_id, _Cancel(self._queue, kill))

    def change_priority(self, job_id, priority):
        """ChangeJobPriority: see JobQueue.change_job_priority; a group's jobs too."""
        try:
            priority = ptypes.Priority.check(priority)
        except ValueError as err:
            raise errors.OpPrereqError("priority %s" % err, constants.ECODE_INVAL) from None
        return self._change(job_id, _Priority(self._queue, priority))

    def hold(self, job_id):
        return self._change(job_id, _Hold(self._queue))

    def release(self, job_id):
        return self._change(job_id, _Release(self._queue))

    def reset(self, job_id):
        return self._change(job_id, _Reset(self._queue))

    def retry(self, job_id):
        return self._change(job_id, _Retry(self._queue))

    def _change(self, job_id, action):
        """Apply action to a job (a group: to the jobs of its tree it concerns), journal
        it in one batch, wait until acknowledged; (ok, message)."""
        queue = self._queue
        queue._check_writable()
        job_id = queuedir.parse_job_id(job_id)
        with queue._lock:
            queue._check_open_unlocked()
            queue._check_changes_unlocked()
            job = queue._visible_job_unlocked(job_id)
            if job is None:
                return (False, "Job %s not found" % job_id)
            group = bool(queue._groups.tree.children(job_id))  # a group with jobs
            changes, notes = [], []
            targets = queue._groups.subtree_unlocked(job)
            for target in targets:
                refusal = action.refusal(target, group)
                if refusal is not None:
                    if refusal is not _SKIP:
                        notes.append(refusal)
                    continue
                changes.append((target, queue._snapshot_unlocked(target)))
                action.apply_unlocked(target)
            if not changes:
                ok, message = notes[0] if notes else (False, "Job %s: nothing to %s" % (
                    job_id, action.verb))
                return (ok, message if not group else "Group %s: nothing to %s (%s)" % (
                    job_id, action.verb, message))
            batch = queue._record_client_changes_unlocked(changes, action.event)
            action.recorded_unlocked(batch, [target for target, _ in changes], targets)
        action.after(batch)
        queue._wait(batch)
        return (True, action.message(job_id, group, [target for target, _ in changes]))


class _Action:
    """One kind of change: which jobs it concerns, what it does to each, what it says."""

    verb = "change"
    #: The word of the event each job it changes gets (besides its status's), or None.
    event = None

    def __init__(self, queue):
        self._queue = queue
        self._afters = []

    def refusal(self, job, in_group):
        """None if the change applies to job, else (ok, message) saying why not."""
        raise NotImplementedError

    def apply_unlocked(self, job):
        raise NotImplementedError

    def recorded_unlocked(self, batch, jobs, targets):
        """The changes of jobs (of targets, the jobs the request concerned) were appended
        as batch (under the lock): what follows them."""

    def after(self, batch):
        """Register what happens once the batch is durable (outside the lock)."""
        for callback in self._afters:
            batch.add_done_callback(callback)

    def message(self, job_id, group, jobs):
        if group:
            return "Group %s: %d job(s) %s" % (job_id, len(jobs), self.done_word)
        return "Job %s %s" % (job_id, self.done_word)

    done_word = "changed"

    def _is_group_with_jobs(self, job):
        tree = self._queue._groups.tree
        return tree.is_group(job.id) and bool(tree.children(job.id))


class _Cancel(_Action):
    """CancelJob: queued jobs end at once, running ones at their next cancellation point
    (a command: TERM, then KILL after its grace; or KILL at once with kill)."""

    verb = "cancel"

    def __init__(self, queue, kill):
        super().__init__(queue)
        self._kill = kill
        self._messages = []

    def refusal(self, job, in_group):
        if self._is_group_with_jobs(job):
            return _SKIP
        status = job.calc_status()
        if status in _C.JOBS_FINALIZED:
            return (False, "Job %s is already finished (%s)" % (job.id, status))
        if status == _C.JOB_STATUS_CANCELING:
            return (True, "Job %s is already being canceled" % job.id)
        return None

    def apply_unlocked(self, job):
        queue = self._queue
        kill = self._kill
        status = job.calc_status()
        job.kill_requested = job.kill_requested or bool(kill)
        if status in _PENDING:
            job.mark_unfinished_ops(_C.OP_STATUS_CANCELED, _C.MSG_CANCELED)
            job.finalize(queue._clock())
            self._messages.append("Job %s canceled" % job.id + (
                " (kill made no difference: no opcode of it was running)" if kill else ""))
            return
        command = queue._command_on_node_unlocked(job)
        job.mark_unfinished_ops(_C.OP_STATUS_CANCELING, None)
        event = job.new_cancel_event()
        message = "Job %s will be canceled at its next cancellation point" % job.id + (
            "; kill cannot stop it sooner: its opcode runs inside jq-masterd and cannot "
            "be killed, it stops at once only where it sleeps or checks for "
            "cancellation" if kill else "")
        if command:
            message = "Job %s: its command is being stopped (%s)" % (
                job.id, "KILL now" if kill else "TERM, then KILL after its kill_grace")
        self._messages.append(message)
        # The running opcode (or command) stops only for a cancel on disk.
        self._afters.append(functools.partial(queue._canceled_on_disk, job, event, kill,
                                              command))

    def message(self, job_id, group, jobs):
        if not group:
            return self._messages[0]
        return "Group %s: %d job(s) canceled or being canceled" % (job_id, len(jobs))


class _Priority(_Action):
    verb = "change the priority of"

    def __init__(self, queue, priority):
        super().__init__(queue)
        self._priority = priority

    def refusal(self, job, in_group):
        status = job.calc_status()
        if status in _C.JOBS_FINALIZED and not self._is_group_with_jobs(job):
            return (False, "Job %s is already finished (%s)" % (job.id, status))
        if status == _C.JOB_STATUS_CANCELING:
            return (False, "Job %s is being canceled" % job.id)
        return None

    def apply_unlocked(self, job):
        for op in job.ops:
            if op.status not in _C.OPS_FINALIZED or self._is_group_with_jobs(job):
                op.priority = self._priority
        self._queue._pool.change_task_priority(job.id, job.calc_priority())

    def message(self, job_id, group, jobs):
        if group:
            return "Priorities of the pending opcodes of group %s (%d job(s)) have been " \
                   "changed to %s" % (job_id, len(jobs), self._priority)
        return "Priorities of pending opcodes for job %s have been changed to %s" % (
            job_id, self._priority)


class _Hold(_Action):
    verb = "hold"
    event = "HOLD"
    done_word = "held"

    def __init__(self, queue):
        super().__init__(queue)
        self._running = []

    def refusal(self, job, in_group):
        status = job.calc_status()
        if status in _C.JOBS_FINALIZED and not self._is_group_with_jobs(job):
            return (False, "Job %s is already finished (%s)" % (job.id, status))
        if status == _C.JOB_STATUS_CANCELING:
            return (False, "Job %s is being canceled" % job.id)
        if job.held:
            return (True, "Job %s is already held" % job.id)
        return None

    def apply_unlocked(self, job):
        queue = self._queue
        job.held = True
        queue._control.starts.discard(job.id)
        if queue._command_on_node_unlocked(job):
            self._afters.append(functools.partial(_stop_held, queue, job))
        elif job.calc_status() == _C.JOB_STATUS_RUNNING and not self._is_group_with_jobs(job):
            self._running.append(job.id)

    def message(self, job_id, group, jobs):
        text = super().message(job_id, group, jobs)
        if self._running:
            text += ("; job(s) %s run an opcode that cannot be stopped: it finishes, and "
                     "the job goes no further until released" % ", ".join(
                         str(i) for i in self._running))
        return text


def _stop_held(queue, job, batch):
    """A hold is durable (journal thread): stop the job's command on its node."""
    if not batch.refused and queue._commands is not None:
        with queue._lock:
            if job.held and queue._command_on_node_unlocked(job):
                queue._commands.hold_unlocked(job)


class _Release(_Action):
    verb = "release"
    event = "RELEASE"
    done_word = "released"

    def refusal(self, job, in_group):
        if not job.held:
            holder = None if in_group else self._queue._groups.holder_unlocked(job)
            if holder is not None:
                return (False, "Job %s is not held itself: group %d above it is (release "
                        "the group)" % (job.id, holder))
            return (True, "Job %s is not held" % job.id)
        return None

    def apply_unlocked(self, job):
        job.held = False

    def recorded_unlocked(self, batch, jobs, targets):
        for job in targets:  # a released group's jobs may run, held themselves or not
            _schedule_pending_unlocked(self._queue, job)


class _Reset(_Action):
    """A finished job back to queued, attempts counted anew, its log kept with a marker."""

    verb = "reset"
    event = "RESET"
    done_word = "reset"

    def refusal(self, job, in_group):
        if self._is_group_with_jobs(job):
            return _SKIP
        status = job.calc_status()
        if status not in _C.JOBS_FINALIZED:
            return (False, "Job %s is not finished (%s): only a finished job can be reset" % (
                job.id, status))
        return None

    def apply_unlocked(self, job):
        for op in job.ops:
            priority, state = op.priority, op.exec_state
            op.apply_state(op.pristine_state())
            op.priority = priority  # the priority it was given last
            if state is not None:  # attempts go on being numbered, but count anew
                op.exec_state = {"attempt": state.get("attempt", 0),
                                 "uncounted": state.get("attempt", 0),
                                 "out": dict(state.get("out") or {})}
        job.start_timestamp = job.end_timestamp = None
        job.notified = None  # its next end is told again
        job.kill_requested = False
        job.cancel_event = None

    def recorded_unlocked(self, batch, jobs, targets):
        _mark_and_schedule_unlocked(self._queue, batch, jobs, "RESET : by request; the job "
                                    "runs again, its attempts counted anew")


class _Retry(_Action):
    """A failed job's failed opcodes back to queued: one more attempt, counter kept."""

    verb = "retry"
    event = "RETRY"
    done_word = "queued for one more attempt"

    def refusal(self, job, in_group):
        if self._is_group_with_jobs(job):
            return _SKIP
        status = job.calc_status()
        if status != _C.JOB_STATUS_ERROR:
            return (False, "Job %s has not failed (%s): only a failed job can be retried "
                           "(a finished job can be reset)" % (job.id, status))
        return None

    def apply_unlocked(self, job):
        for op in job.ops:
            if op.status in (_C.OP_STATUS_ERROR, _C.OP_STATUS_CANCELED):
                op.status = _C.OP_STATUS_QUEUED
                op.result = None
                op.start_timestamp = op.exec_timestamp = op.end_timestamp = None
                state = op.exec_state
                if state is not None:
                    op.exec_state = dict(state, state=_C.ATTEMPT_PENDING, retry_at=None)
                    if "max_attempts" in op.input and "attempt" in state:
                        # one more than the attempts counted so far: shown as "3 of 3"
                        counted = state["attempt"] - state.get("uncounted", 0)
                        op.exec_state["max_attempts"] = max(
                            commandjob.allowed_attempts(op.input, state), counted + 1)
        job.end_timestamp = None
        job.notified = None  # its next end is told again
        job.cancel_event = None

    def recorded_unlocked(self, batch, jobs, targets):
        _mark_and_schedule_unlocked(self._queue, batch, jobs,
                                    "RETRY : by request; one more attempt")


def _schedule_pending_unlocked(queue, job):
    """Hand a job that may run again to the workers (the processor waits for the change
    to be written before it runs anything)."""
    if job.calc_status() in _PENDING:
        queue._schedule_unlocked(job)


def _mark_and_schedule_unlocked(queue, batch, jobs, text):
    """After a reset or retry was appended: a marker line in each job's log, then run it.

    The marker is recorded after the change, so that if the change is refused the marker
    is too (a later batch) and undone with it.
    """
    for job in jobs:
        undo = _log_marker_unlocked(queue, job, text)
        batch.undo.append(undo)
        _schedule_pending_unlocked(queue, job)


def _log_marker_unlocked(queue, job, text):
    """Append ``* text`` to a command job's log (else a log entry of its first opcode);
    return the undo of it."""
    index = next((i for i, op in enumerate(job.ops) if commandjob.is_command(op.input)), None)
    if index is not None:
        size = job.log_bytes
        try:
            queue._record_chunk_unlocked(job, index, 0, 0, commandjob.banner_note(text))
        except (errors.GenericError, OSError) as err:
            logger.warning("job %d: cannot mark its log (%s)", job.id, err)
            return lambda: None
        return functools.partial(_unlog_chunk, queue, job, size)
    entry = job.add_log(0, _C.ELOG_MESSAGE, "* " + text, queue._clock())
    queue._record_log_unlocked(job, 0, entry)
    return functools.partial(_unlog_entry, job, entry)


def _unlog_chunk(queue, job, size):
    job.log_bytes = min(job.log_bytes, size)
    queue._logs.truncate(job.id, size)


def _unlog_entry(job, entry):
    log = job.ops[0].log
    if log and log[-1] is entry:
        log.pop()
        job.log_serial = entry[0] - 1
