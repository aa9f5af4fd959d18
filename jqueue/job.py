"""Queued jobs and opcodes: records, status and priority, Ganeti 2.10 file format.

A QueuedJob holds its opcodes (QueuedOpCode) and the timestamps of the job file format;
``to_dict``/``from_dict`` read and write that format. The job's status and priority are
derived from its opcodes exactly as Ganeti derives them. The few runtime-only fields
(journal generation, visibility, cancellation) are not serialized.
"""

import collections
import math
import sys
import threading
import time

from jqueue import constants, errors

#: The acknowledged state of a job no change has reached yet (see QueuedJob.view).
PRISTINE = "pristine"

#: Each opcode status, to itself (see QueuedOpCode.from_dict).
_OP_STATUSES = {status: status for status in constants.OP_STATUS_ALL}
_OP_STATE_KEYS = ("status", "result", "start_timestamp", "exec_timestamp", "end_timestamp",
                  "priority", "exec_state")
#: Job file key of an opcode's command state (jqueue.commandjob), present only if set.
EXEC_KEY = "exec"
#: Job file key of the length of a job's command log, present only if it has one.
LOG_BYTES_KEY = "log_bytes"
#: Job file key (ours) of who submitted the job, present only if known.
OWNER_KEY = "owner"
#: Job file keys (ours) of a job's group, its start time and its hold (see QueuedJob).
PARENT_KEY = "parent"
NOT_BEFORE_KEY = "not_before"
HELD_KEY = "held"
#: Job file keys (ours) of a job's webhook and of how telling it went (see jqueue.notify).
NOTIFY_KEY = "notify"
NOTIFIED_KEY = "notified"
NOTIFIED_AFTER_KEY = "notified_after"


#: Job fields a JobOutcome is made of, in from_row's order.
OUTCOME_FIELDS = ["id", "status", "opstatus", "opresult"]


class JobOutcome(collections.namedtuple("JobOutcome", "id status op_statuses results")):
    """What became of a finished job: its final status, and each opcode's status and result
    (a failed opcode's result is its encoded error, ["OpExecError", ["message"]])."""

    __slots__ = ()

    @classmethod
    def from_row(cls, row):
        """From a QueryJobs row of OUTCOME_FIELDS."""
        return cls(*row)

    @property
    def succeeded(self):
        return self.status == constants.JOB_STATUS_SUCCESS

    @property
    def error(self):
        """The error of the first failed opcode (an exception object), or None."""
        for status, result in zip(self.op_statuses, self.results):
            if status == constants.OP_STATUS_ERROR:
                return errors.decode_exception(result) if isinstance(result, list) else (
                    errors.OpExecError(str(result)))
        return None


#: Fields that tell whether a job is done (see is_done).
DONE_FIELDS = ["status", "opstatus"]


def is_done(info):
    """Whether a job whose DONE_FIELDS are info is done: its status is final and so is
    every opcode's (a group's status may be error while jobs of it still run: it is done
    once its own opcode is final, see jqueue.groupjob)."""
    status, op_statuses = info
    return status in constants.JOBS_FINALIZED and all(
        op in constants.OPS_FINALIZED for op in op_statuses or ())


def wait_until_final(wait_changes, job_id, timeout, clock=time.monotonic):
    """Wait with wait_changes(job_id, DONE_FIELDS, prev, serial, seconds) (WaitForJobChange's
    shape) until the job is finalized, at most timeout seconds (None: no limit); its status.

    Raises WaitTimeout when the time is up first (JobLost from wait_changes passes on).
    """
    deadline = None if timeout is None else clock() + timeout
    info, serial = None, None
    while True:
        left = 60.0 if deadline is None else max(0.0, deadline - clock())
        answer = wait_changes(job_id, DONE_FIELDS, info, serial, left)
        if answer != constants.JOB_NOTCHANGED:
            new_info, entries = answer
            for entry in entries:
                serial = entry[0] if serial is None else max(serial, entry[0])
            if is_done(new_info):
                return new_info[0]
            info = list(new_info)
        if deadline is not None and clock() >= deadline:
            raise errors.WaitTimeout("job %s did not finish within %ss (status %s)" % (
                job_id, timeout, info[0] if info else "unknown"))


def timestamp(now=None):
    """Return now (seconds since the epoch, default the current time) as [sec, usec]."""
    if now is None:
        now = time.time()
    sec = int(now)
    return [sec, int(round((now - sec) * 1000000)) % 1000000]


def ts_to_float(ts):
    """Convert a [sec, usec] timestamp (or None) to seconds (or None)."""
    if ts is None:
        return None
    return ts[0] + ts[1] / 1000000.0


def job_status(op_statuses):
    """A job's status from its opcodes' statuses, as Ganeti computes it."""
    status = constants.JOB_STATUS_QUEUED
    all_success = True
    for op_status in op_statuses:
        if op_status == constants.OP_STATUS_SUCCESS:
            continue
        all_success = False
        if op_status == constants.OP_STATUS_WAITING:
            status = constants.JOB_STATUS_WAITING
        elif op_status == constants.OP_STATUS_RUNNING:
            status = constants.JOB_STATUS_RUNNING
        elif op_status in (constants.OP_STATUS_CANCELING, constants.OP_STATUS_ERROR,
                           constants.OP_STATUS_CANCELED):
            return op_status
    if all_success:
        return constants.JOB_STATUS_SUCCESS
    return status


def state_status(state):
    """The job status a state_dict() (or PRISTINE: queued) describes."""
    if state is PRISTINE or state is None:
        return constants.JOB_STATUS_QUEUED
    return job_status(op["status"] for op in state["ops"])


def _is_log_entry(entry):
    """Whether entry looks like [serial, [sec, usec], type, message]."""
    return (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], int)
            and not isinstance(entry[0], bool))


class QueuedOpCode:
    """One opcode of a job: its input parameters, status, result and log."""

    __slots__ = ("input", "status", "result", "log", "start_timestamp", "exec_timestamp",
                 "end_timestamp", "priority", "exec_state", "summary")

    def __init__(self, op_input, priority=constants.OP_PRIO_DEFAULT):
        self.input = op_input
        self.status = constants.OP_STATUS_QUEUED
        self.result = None
        self.log = []
        self.start_timestamp = None
        self.exec_timestamp = None
        self.end_timestamp = None
        self.priority = priority
        #: A command opcode's attempts (see jqueue.commandjob); None for other opcodes.
        self.exec_state = None
        #: Its summary once read (jqueue.query: a listing reads 10^5), None before: the
        #: input it derives from never changes.
        self.summary = None

    @property
    def op_id(self):
        return self.input.get("OP_ID")

    def to_dict(self):
        """Serialize in the job file format."""
        data = {
            "input": self.input, "status": self.status, "result": self.result,
            "log": self.log, "start_timestamp": self.start_timestamp,
            "exec_timestamp": self.exec_timestamp, "end_timestamp": self.end_timestamp,
            "priority": self.priority,
        }
        if self.exec_state is not None:
            data[EXEC_KEY] = self.exec_state
        return data

    def state_dict(self):
        """The fields that change while a job runs (everything but input and log)."""
        state = {key: getattr(self, key) for key in _OP_STATE_KEYS[:-1]}
        if self.exec_state is not None:
            state[EXEC_KEY] = self.exec_state
        return state

    def pristine_state(self):
        """The state_dict() of the opcode as it was submitted."""
        return {"status": constants.OP_STATUS_QUEUED, "result": None,
                "start_timestamp": None, "exec_timestamp": None, "end_timestamp": None,
                "priority": self.input.get("priority", constants.OP_PRIO_DEFAULT),
                EXEC_KEY: None}

    def copy(self, max_log_serial):
        """A copy with the log entries up to max_log_serial (for a view read at once: the
        log list may be the live one)."""
        op = QueuedOpCode.__new__(QueuedOpCode)
        for key in self.__slots__:
            setattr(op, key, getattr(self, key))
        if self.log and self.log[-1][0] > max_log_serial:
            op.log = [entry for entry in self.log if entry[0] <= max_log_serial]
        return op

    def apply_state(self, state):
        """Set the fields of a state_dict()."""
        for key in _OP_STATE_KEYS[:-1]:
            if key in state:
                setattr(self, key, state[key])
        if EXEC_KEY in state:
            self.exec_state = state[EXEC_KEY]

    @classmethod
    def from_dict(cls, data):
        """Rebuild from the job file format; raise JobFileCorrupted if malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("input"), dict):
            raise errors.JobFileCorrupted("opcode is not an object with an input object")
        op = cls.__new__(cls)
        # Short string values (OP_IDs, choices) interned, statuses the constants
        # themselves: a parsed file has its own copy of each, where jobs submitted in this
        # process share them. Parameter names are shared already: orjson (see
        # jqueue.serializer) caches the names it parses, one object per name across files
        # (the rare file the standard decoder parses keeps its own). The input is kept,
        # not copied: 10^5 at an opening, 0.26 s less, for 16 MiB more (orjson sizes a
        # dict more generously than a copy would).
        intern = sys.intern
        op.input = data["input"]
        for key, value in op.input.items():
            if type(value) is str and len(value) <= 32:
                op.input[key] = intern(value)
        op.status = _OP_STATUSES.get(data.get("status", constants.OP_STATUS_QUEUED))
        if op.status is None:
            raise errors.JobFileCorrupted("unknown opcode status %r" % (data.get("status"),))
        op.result = data.get("result")
        op.log = data.get("log") or []
        if not isinstance(op.log, list) or op.log and not all(map(_is_log_entry, op.log)):
            raise errors.JobFileCorrupted("opcode log is not a list of log entries")
        op.start_timestamp = data.get("start_timestamp")
        op.exec_timestamp = data.get("exec_timestamp")
        op.end_timestamp = data.get("end_timestamp")
        op.priority = data.get("priority", op.input.get("priority", constants.OP_PRIO_DEFAULT))
        if not isinstance(op.priority, int) or isinstance(op.priority, bool):
            raise errors.JobFileCorrupted("opcode priority %r is not an integer" % (op.priority,))
        op.exec_state = data.get(EXEC_KEY)
        if op.exec_state is not None and not isinstance(op.exec_state, dict):
            raise errors.JobFileCorrupted("opcode exec state is not an object")
        op.summary = None
        return op


class QueuedJob:
    """A job: an id, a list of QueuedOpCode and its timestamps."""

    __slots__ = ("id", "ops", "received_timestamp", "start_timestamp", "end_timestamp",
                 "log_serial", "log_bytes", "generation", "visible", "archived", "cancel_event",
                 "kill_requested", "unacked_state", "durable_log_serial", "durable_log_bytes",
                 "client_batch", "acked_state", "token", "event_status",
                 "file_bytes", "owner", "parent", "not_before", "held", "archive_pending",
                 "notify", "notified", "notified_after", "file_new")

    def __init__(self, job_id, ops, received_timestamp, token=None, owner=None, parent=None,
                 not_before=None, notify=None):
        self.id = job_id
        self.ops = ops
        self.received_timestamp = received_timestamp
        self.start_timestamp = None
        self.end_timestamp = None
        self.log_serial = 0
        #: Bytes in the job's command log (<state>/logs/<id>.log); 0 without one.
        self.log_bytes = 0
        #: The submission's idempotency token (job file key "token"; ours), or None.
        self.token = token
        #: Who submitted the job (job file key "owner"; ours): the name an HTTP client
        #: authenticated as, or the owner it gave; None if unknown.
        self.owner = owner
        #: The id of the group job this job belongs to (job file key "parent"), or None.
        self.parent = parent
        #: Epoch seconds before which the job does not start (key "not_before"), or None.
        self.not_before = not_before
        #: Whether the job is held: it does not start until released (key "held").
        self.held = False
        #: Who is told of its final state ({"url" or "to", "on", and "after" for a
        #: group}; key "notify"), or None.
        self.notify = notify
        #: How telling its final state went ({"url" or "to", "delivered", "status",
        #: "error", "tries", "at"}; key "notified"), None until then (and after a reset).
        self.notified = None
        #: How telling a group's after went (the same; key "notified_after"), or None.
        self.notified_after = None
        self._init_runtime()

    def _init_runtime(self):
        # Runtime state, never serialized: the journal generation of the job's last full
        # record; whether its submission is durable (visible); archived; cancellation;
        # how many state records are not durable yet and the newest durable log serial.
        self.generation = -1
        self.visible = True
        self.archived = False
        self.cancel_event = None
        self.kill_requested = False
        self.unacked_state = 0
        self.durable_log_serial = self.log_serial
        self.durable_log_bytes = self.log_bytes
        # The journal batch of a client's change (cancel, priority) not yet written.
        self.client_batch = None
        # The status the event stream last told of (jqueue.store.events).
        self.event_status = None
        # The state_dict() of the newest acknowledged state (PRISTINE: as submitted),
        # kept while the job may change; what readers see while changes are pending.
        self.acked_state = None
        # Archived in memory, its archive record not durable yet: readers see it live.
        self.archive_pending = False
        # The job file's bytes as encoded for the submission's journal record, kept until
        # a checkpoint writes them, so that a job that did not change since is not
        # encoded twice. Every recorded change clears it (JobQueue._record_*).
        self.file_bytes = None
        # True from a job's submission until a checkpoint first writes its file: there is
        # no file of it to keep as a spare when it is written (QueueDir.write_job's new).
        self.file_new = False

    # Derived state

    def calc_status(self):
        """Return the job status computed from its opcodes (Ganeti's rules)."""
        ops = self.ops
        if len(ops) == 1:
            # Most jobs have one opcode, whose status names the job's (the two sets of
            # statuses are the same words): read 10^5 times when listing a queue.
            return ops[0].status
        return job_status(op.status for op in ops)

    def calc_priority(self):
        """Return the lowest priority value among unfinished opcodes (default if none)."""
        prios = [op.priority for op in self.ops if op.status not in constants.OPS_FINALIZED]
        return min(prios) if prios else constants.OP_PRIO_DEFAULT

    def is_finalized(self):
        return self.calc_status() in constants.JOBS_FINALIZED

    def is_pristine(self):
        """Whether the job's state_dict() is as submitted: what view(PRISTINE) shows."""
        if self.start_timestamp is not None or self.end_timestamp is not None or self.held:
            return False
        return all(op.status == constants.OP_STATUS_QUEUED and op.result is None
                   and op.start_timestamp is None and op.exec_timestamp is None
                   and op.end_timestamp is None and op.exec_state is None
                   and op.priority == op.input.get("priority", constants.OP_PRIO_DEFAULT)
                   for op in self.ops)

    def next_op_index(self):
        """Index of the first opcode not finalized, or None."""
        for idx, op in enumerate(self.ops):
            if op.status not in constants.OPS_FINALIZED:
                return idx
        return None

    def log_entries_since(self, serial):
        """Every log entry with a serial above serial, in serial order."""
        entries = [entry for op in self.ops for entry in op.log if entry[0] > serial]
        entries.sort(key=lambda entry: entry[0])
        return entries

    # Changes

    def add_log(self, op_index, log_type, message, now):
        """Append a log entry to an opcode; return it."""
        self.log_serial += 1
        entry = [self.log_serial, timestamp(now), log_type, message]
        self.ops[op_index].log.append(entry)
        return entry

    def mark_unfinished_ops(self, status, result):
        """Set status and result of every opcode not yet finalized."""
        for op in self.ops:
            if op.status not in constants.OPS_FINALIZED:
                op.status = status
                op.result = result

    def finalize(self, now):
        """Record the end of the job."""
        if self.end_timestamp is None:
            self.end_timestamp = timestamp(now)

    # Serialization

    def to_dict(self):
        """Serialize in the Ganeti 2.10 job file format (plus ``log_bytes`` if a log exists,
        and "token" if the job has one)."""
        data = {
            "id": self.id, "ops": [op.to_dict() for op in self.ops],
            "received_timestamp": self.received_timestamp,
            "start_timestamp": self.start_timestamp, "end_timestamp": self.end_timestamp,
        }
        if self.log_bytes:
            data[LOG_BYTES_KEY] = self.log_bytes
        if self.token is not None:
            data["token"] = self.token
        if self.owner is not None:
            data[OWNER_KEY] = self.owner
        if self.parent is not None:
            data[PARENT_KEY] = self.parent
        if self.not_before is not None:
            data[NOT_BEFORE_KEY] = self.not_before
        if self.held:
            data[HELD_KEY] = True
        if self.notify is not None:
            data[NOTIFY_KEY] = self.notify
        if self.notified is not None:
            data[NOTIFIED_KEY] = self.notified
        if self.notified_after is not None:
            data[NOTIFIED_AFTER_KEY] = self.notified_after
        return data

    def state_dict(self):
        """Everything a status change may alter (no opcode inputs, no logs); ``held`` is
        present only while the job is held."""
        state = {
            "start_timestamp": self.start_timestamp, "end_timestamp": self.end_timestamp,
            "ops": [op.state_dict() for op in self.ops],
        }
        if self.held:
            state[HELD_KEY] = True
        if self.notified is not None:
            state[NOTIFIED_KEY] = self.notified
        if self.notified_after is not None:
            state[NOTIFIED_AFTER_KEY] = self.notified_after
        return state

    def apply_state(self, state):
        """Set the fields of a state_dict(); raise JobFileCorrupted on a shape mismatch."""
        ops = state.get("ops")
        if not isinstance(ops, list) or len(ops) != len(self.ops):
            raise errors.JobFileCorrupted("job %s: state for %s opcodes, job has %d" % (
                self.id, len(ops) if isinstance(ops, list) else "no", len(self.ops)))
        self.start_timestamp = state.get("start_timestamp")
        self.end_timestamp = state.get("end_timestamp")
        self.held = state.get(HELD_KEY) is True
        self.notified = state.get(NOTIFIED_KEY)
        self.notified_after = state.get(NOTIFIED_AFTER_KEY)
        for op, op_state in zip(self.ops, ops):
            op.apply_state(op_state)

    def add_log_entries(self, entries):
        """Add [op_index, entry] pairs not present yet (by serial): replay is idempotent."""
        known = {entry[0] for op in self.ops for entry in op.log}
        for op_index, entry in entries:
            if entry[0] not in known:
                self.ops[op_index].log.append(entry)
                known.add(entry[0])
                self.log_serial = max(self.log_serial, entry[0])

    @classmethod
    def from_dict(cls, data):
        """Rebuild a job from the job file format; raise JobFileCorrupted if malformed."""
        if not isinstance(data, dict):
            raise errors.JobFileCorrupted("job is not a JSON object")
        job_id = data.get("id")
        if isinstance(job_id, str) and job_id.isdigit() and job_id.isascii():
            job_id = int(job_id)
        if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 0:
            raise errors.JobFileCorrupted("invalid job id %r" % (job_id,))
        ops = data.get("ops")
        if not isinstance(ops, list) or not ops:
            raise errors.JobFileCorrupted("job %s has no list of opcodes" % job_id)
        job = cls.__new__(cls)
        job.id = job_id
        job.ops = [QueuedOpCode.from_dict(op) for op in ops]
        job.received_timestamp = data.get("received_timestamp")
        job.start_timestamp = data.get("start_timestamp")
        job.end_timestamp = data.get("end_timestamp")
        job.token = data.get("token")
        if job.token is not None and not isinstance(job.token, str):
            raise errors.JobFileCorrupted("job %s: token %r is not a string" % (
                job_id, job.token))
        job.owner = data.get(OWNER_KEY)
        if job.owner is not None and not isinstance(job.owner, str):
            raise errors.JobFileCorrupted("job %s: owner %r is not a string" % (
                job_id, job.owner))
        _read_lifecycle_keys(job, data)
        job.log_serial = max([entry[0] for op in job.ops for entry in op.log], default=0)
        job.log_bytes = data.get(LOG_BYTES_KEY) or 0
        if not isinstance(job.log_bytes, int) or isinstance(job.log_bytes, bool) or (
                job.log_bytes < 0):
            raise errors.JobFileCorrupted("job %s: log_bytes %r is not a length" % (
                job_id, job.log_bytes))
        job._init_runtime()
        return job

    def view(self, state, max_log_serial):
        """A copy showing state (a state_dict(), PRISTINE, or None: the current one), only
        the log entries up to max_log_serial and the durable command log; for readers of
        acknowledged changes."""
        copy = QueuedJob.__new__(QueuedJob)
        copy.id, copy.token, copy.owner = self.id, self.token, self.owner
        copy.parent, copy.not_before, copy.held = self.parent, self.not_before, self.held
        copy.notify, copy.notified = self.notify, self.notified
        copy.notified_after = self.notified_after
        copy.received_timestamp = self.received_timestamp
        copy.start_timestamp, copy.end_timestamp = self.start_timestamp, self.end_timestamp
        copy.ops = [op.copy(max_log_serial) for op in self.ops]
        copy.log_serial = min(self.log_serial, max_log_serial)
        copy.log_bytes = self.durable_log_bytes
        copy._init_runtime()
        copy.archived = self.archived
        if state is PRISTINE:
            copy.start_timestamp = copy.end_timestamp = None
            copy.held, copy.notified, copy.notified_after = False, None, None
            for op in copy.ops:
                op.apply_state(op.pristine_state())
        elif state is not None:
            copy.apply_state(state)
        return copy

    def start_due(self, now):
        """Whether the job's start time (if any) has come at now (epoch seconds)."""
        return self.not_before is None or self.not_before <= now

    def new_cancel_event(self):
        """Create (once) and return the event that running opcodes watch for cancellation."""
        if self.cancel_event is None:
            self.cancel_event = threading.Event()
        return self.cancel_event


def _read_lifecycle_keys(job, data):
    """Set parent, not_before and held from a job file's keys; JobFileCorrupted if bad."""
    parent, not_before, held = (data.get(PARENT_KEY), data.get(NOT_BEFORE_KEY),
                                data.get(HELD_KEY, False))
    if parent is not None and (not isinstance(parent, int) or isinstance(parent, bool)
                               or not 0 <= parent < job.id):
        raise errors.JobFileCorrupted("job %s: parent %r is not an earlier job id" % (
            job.id, parent))
    if not_before is not None and (not isinstance(not_before, (int, float))
                                   or isinstance(not_before, bool)
                                   or not math.isfinite(not_before)):
        raise errors.JobFileCorrupted("job %s: not_before %r is not a time" % (
            job.id, not_before))
    if not isinstance(held, bool):
        raise errors.JobFileCorrupted("job %s: held %r is not a boolean" % (job.id, held))
    job.parent, job.not_before, job.held = parent, not_before, held
    job.notify, job.notified = data.get(NOTIFY_KEY), data.get(NOTIFIED_KEY)
    job.notified_after = data.get(NOTIFIED_AFTER_KEY)
    for key in (NOTIFY_KEY, NOTIFIED_KEY, NOTIFIED_AFTER_KEY):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise errors.JobFileCorrupted("job %s: %s %r is not an object" % (
                job.id, key, data[key]))
