"""Runs a job one opcode at a time: dependencies, cancellation points, results, logs.

The worker pool calls ``JobProcessor.run_step(job_id)``. A step runs the job's next
unfinished opcode and, if more remain, puts the job back into the pool at its current
priority, so that a higher-priority job can overtake a long job between opcodes. The
queue lock is held only while reading and changing the job, never while an opcode runs.

An opcode begins only once the record of its start is durable (and replicated as the
queue requires), as Ganeti writes a job's file before running it and as a command
attempt is launched: a crash while it runs then finds the job running and ends it as
"Unclean master daemon shutdown", never runs it a second time. A start the disk refuses
(or one still unwritten when the queue shuts down) is taken back: the opcode does not
run, the job is queued again and starts once the disk writes again.
"""

import logging
import threading
import time

from jqueue import commandjob, constants, errors, serializer
from jqueue.job import timestamp
from jqueue.run import dependencies

logger = logging.getLogger(__name__)

#: Seconds between a worker's looks at the queue's shutdown while a start is written.
START_POLL = 0.2


class OpContext:
    """What a running opcode may use: feedback, cancellation, its job id."""

    def __init__(self, processor, job_id, op_index, cancel_event):
        self._processor = processor
        self.job_id = job_id
        self.op_index = op_index
        self._cancel_event = cancel_event
        #: Work on cluster nodes, e.g. nodes.test_delay(names, seconds) (None without a
        #: cluster).
        self.nodes = None

    def feedback(self, *args):
        """Log a message: ``feedback(msg)`` or ``feedback(log_type, msg)`` (Ganeti's form)."""
        if len(args) == 1:
            log_type, message = constants.ELOG_MESSAGE, args[0]
        elif len(args) == 2:
            log_type, message = args
        else:
            raise errors.ProgrammerError("feedback takes (message) or (type, message)")
        self._processor.add_log(self.job_id, self.op_index, log_type, message)

    @property
    def canceled(self):
        """Whether the job is being canceled."""
        return self._cancel_event.is_set()

    def check_cancel(self):
        """A cancellation point: raise JobCanceled if the job is being canceled."""
        if self._cancel_event.is_set():
            raise errors.JobCanceled("job %s canceled" % self.job_id)

    def sleep(self, seconds):
        """Sleep, waking at once (with JobCanceled) if the job is canceled meanwhile; any
        finite duration, waiting in pieces no longer than the platform's longest wait."""
        deadline = time.monotonic() + seconds
        while True:
            if self._cancel_event.wait(min(seconds, threading.TIMEOUT_MAX)):
                raise errors.JobCanceled("job %s canceled" % self.job_id)
            seconds = deadline - time.monotonic()
            if seconds <= 0:
                return


class JobProcessor:
    """Executes job steps against a JobQueue's internals (the queue's lock and records)."""

    def __init__(self, queue):
        self._queue = queue

    def run_step(self, job_id):
        """Worker pool task: run the next opcode of job_id, if it may run (once its start
        is durable: see the module docstring)."""
        queue = self._queue
        with queue.deferred_commits():
            started = self._start(job_id)
        # This thread writes and syncs what it recorded, when the journal is idle: no
        # hand-off to the committer and back while the opcode waits for its start.
        queue.commit_pending()
        if started is None:
            return
        opcode, ctx, batch, before = started
        if not self._start_durable(job_id, ctx.op_index, batch, before):
            return
        status, result = self._execute(opcode, ctx)
        self._finish(job_id, ctx.op_index, status, result)

    def _start_durable(self, job_id, index, batch, before):
        """Wait until the start's record (batch) is durable; True then. If the disk
        refused it, or the queue shuts down before it is written, take the start back
        and return False."""
        queue = self._queue
        while not batch.done.wait(START_POLL):
            if queue._closing:
                break
        if batch.done.is_set() and batch.error is None:
            return True
        with queue._lock:
            job = queue._jobs.get(job_id)
            if job is not None:
                self._take_back_unlocked(job, index, before)
        return False

    def _take_back_unlocked(self, job, index, before):
        """An opcode whose start was not made durable did not run: its job is as it was
        before the start (queued, or waiting), or ends canceled if a cancel came meanwhile.

        A job the refusal left unrecorded is recorded as it is now, and scheduled, once
        the disk writes again (JobQueue._on_recovered); otherwise its start may be on
        disk by now (the disk came back first, or the queue is shutting down and writes
        what it holds), so the take-back is recorded too, and the job put back into the
        pool.
        """
        queue = self._queue
        op = job.ops[index]
        canceled = op.status == constants.OP_STATUS_CANCELING
        if canceled:
            self._end_unlocked(job, constants.OP_STATUS_CANCELED, constants.MSG_CANCELED,
                               record=False)
        elif op.status == constants.OP_STATUS_RUNNING:
            (op.status, op.start_timestamp, op.exec_timestamp, job.start_timestamp,
             job.event_status) = before
        else:
            return
        if job.id in queue._unrecorded or queue._closed or queue._fatal is not None:
            # (Closed: the final checkpoint writes the job as it is now. A failed sync:
            # the replay decides, and the opcode never ran.)
            queue._index_unlocked(job)
            return
        queue._record_state_unlocked(job)
        if not canceled:
            queue._schedule_unlocked(job)

    def add_log(self, job_id, op_index, log_type, message):
        queue = self._queue
        with queue._lock:
            job = queue._await_client_change_unlocked(job_id)
            if job is None or queue._closed:
                return
            entry = job.add_log(op_index, log_type, message, queue._clock())
            queue._record_log_unlocked(job, op_index, entry)

    def _execute(self, opcode, ctx):
        try:
            result = opcode.run(ctx)
        except errors.JobCanceled:
            return constants.OP_STATUS_CANCELED, constants.MSG_CANCELED
        except errors.GenericError as err:
            return constants.OP_STATUS_ERROR, errors.encode_exception(err)
        except Exception as err:  # noqa: BLE001 - an opcode's bug fails the opcode only
            logger.exception("job %s opcode %d failed", ctx.job_id, ctx.op_index)
            return constants.OP_STATUS_ERROR, errors.encode_exception(err)
        try:
            serializer.dumps(result)
        except (TypeError, ValueError, RecursionError) as err:
            return constants.OP_STATUS_ERROR, errors.encode_exception(errors.OpExecError(
                "opcode result is not JSON data: %s" % err))
        return constants.OP_STATUS_SUCCESS, result

    def _start(self, job_id):
        """Under the lock: decide what to do; return (opcode, ctx) if an opcode starts."""
        queue = self._queue
        with queue._lock:
            job = queue._await_client_change_unlocked(job_id)
            if job is None or not job.visible or queue._closing:
                return None
            index = job.next_op_index()
            if index is None:
                return None
            command = commandjob.is_command(job.ops[index].input)
            if job.calc_status() == constants.JOB_STATUS_CANCELING:
                if command and queue._commands is not None:
                    queue._commands.cancel_unlocked(job, job.kill_requested)
                else:
                    self._end_unlocked(job, constants.OP_STATUS_CANCELED,
                                       constants.MSG_CANCELED)
                return None
            if not queue._may_start_unlocked(job):  # held, or its start time is to come
                return None
            if not self._dependencies_met_unlocked(job, index):
                return None
            if command:
                self._hand_over_unlocked(job, index)
                return None
            return self._begin_opcode_unlocked(job, index)

    def _hand_over_unlocked(self, job, index):
        """A command opcode runs through the command runner, not in this worker."""
        runner = self._queue._commands
        if runner is None:
            self._fail_unlocked(job, index, errors.OpExecError(
                "cannot run %s: this queue runs no command jobs" % constants.OP_COMMAND_RUN))
            return
        runner.enqueue_unlocked(job, index)

    def _dependencies_met_unlocked(self, job, index):
        queue = self._queue
        op = job.ops[index]
        for dep_id, statuses in op.input.get("depends") or ():
            verdict, message = queue._deps.check(
                job.id, dep_id, statuses, queue._job_status_unlocked(dep_id))
            if verdict == dependencies.WAIT:
                if op.status != constants.OP_STATUS_WAITING:
                    op.status = constants.OP_STATUS_WAITING
                    op.start_timestamp = op.start_timestamp or timestamp(queue._clock())
                    queue._record_state_unlocked(job)
                return False
            if verdict == dependencies.FAILED:
                self._fail_unlocked(job, index, errors.OpExecError(message))
                return False
        return True

    def _begin_opcode_unlocked(self, job, index):
        """(opcode, context, the batch of the start's record, the job's values before
        it) of an opcode marked running, or None if it cannot run (the job failed)."""
        queue = self._queue
        op = job.ops[index]
        now = timestamp(queue._clock())
        try:
            opcode = queue._registry.from_input(op.input)
        except errors.GenericError as err:
            self._fail_unlocked(job, index, errors.OpExecError(
                "cannot run opcode: %s" % errors.error_message(err)))
            return None
        before = (op.status, op.start_timestamp, op.exec_timestamp, job.start_timestamp,
                  job.event_status)
        op.status = constants.OP_STATUS_RUNNING
        op.start_timestamp = op.start_timestamp or now
        op.exec_timestamp = now
        if job.start_timestamp is None:
            job.start_timestamp = now
        batch = queue._record_state_unlocked(job)
        ctx = OpContext(self, job.id, index, job.new_cancel_event())
        ctx.nodes = queue.nodes
        return opcode, ctx, batch, before

    def _fail_unlocked(self, job, index, err):
        op = job.ops[index]
        op.status = constants.OP_STATUS_ERROR
        op.result = errors.encode_exception(err)
        op.end_timestamp = timestamp(self._queue._clock())
        self._end_unlocked(job, constants.OP_STATUS_ERROR, errors.encode_exception(
            errors.OpExecError(constants.MSG_PRECEDING_FAILED)))

    def _end_unlocked(self, job, status, result, record=True):
        """Mark the remaining opcodes, finalize the job and record it (the batch; None
        with record false: the caller records it, if it may)."""
        job.mark_unfinished_ops(status, result)
        job.finalize(self._queue._clock())
        return self._queue._record_state_unlocked(job) if record else None

    def _finish(self, job_id, index, status, result):
        queue = self._queue
        with queue._lock:
            job = queue._await_client_change_unlocked(job_id)
            if job is None or queue._closed:
                return
            self.finish_unlocked(job, index, status, result)

    def finish_unlocked(self, job, index, status, result):
        """Record an opcode's end, then end the job or schedule its next opcode.

        Returns the journal batch of the record (the command runner waits on it).
        """
        queue = self._queue
        op = job.ops[index]
        canceling = any(o.status == constants.OP_STATUS_CANCELING for o in job.ops)
        op.status = status
        op.result = result
        op.end_timestamp = timestamp(queue._clock())
        if status == constants.OP_STATUS_ERROR:
            return self._end_unlocked(job, status, errors.encode_exception(
                errors.OpExecError(constants.MSG_PRECEDING_FAILED)))
        if status == constants.OP_STATUS_CANCELED or canceling:
            return self._end_unlocked(job, constants.OP_STATUS_CANCELED, constants.MSG_CANCELED)
        if job.next_op_index() is None:
            job.finalize(queue._clock())
            return queue._record_state_unlocked(job)
        batch = queue._record_state_unlocked(job)
        queue._schedule_unlocked(job)
        return batch
