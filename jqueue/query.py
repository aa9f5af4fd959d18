"""Job fields: names, titles, kinds, documentation and how to read each from a job.

One table serves QueryJobs, WaitForJobChanges, the generic Query/QueryFields methods and
the CLI's column headers.
"""

import operator

from jqueue import commandjob, constants, errors, groupjob
from jqueue.job import QueuedJob

# Field kinds (Ganeti's QFT_*).
QFT_TEXT = "text"
QFT_BOOL = "bool"
QFT_NUMBER = "number"
QFT_TIMESTAMP = "timestamp"
QFT_OTHER = "other"


class Context:
    """What field getters read besides a job: the opcode registry (summaries) and, in a
    queue that has groups, its jqueue.groupkeeper.GroupKeeper (the group fields)."""

    def __init__(self, registry, groups=None, wait_reason=None, running_rss=None):
        self.registry = registry
        self.groups = groups
        #: job -> (code, message) or None: why a pending job does not run now (the queue's
        #: jqueue.jobcontrol.JobControl.wait_reason_unlocked), None without a queue.
        self.wait_reason = wait_reason or _no_reason
        #: job -> bytes or None: what a running command's processes hold now (the command
        #: runner's last look), None without a queue.
        self.running_rss = running_rss or _no_reason

    def summary(self, op):
        """The summary of an opcode (a jqueue.job.QueuedOpCode), derived once."""
        text = op.summary
        if text is None:
            text = op.summary = self.registry.summary(op.input)
        return text

    def group_info(self, job):
        """(Counts, shown status) of a group job (archived: as its tree ended), else None."""
        return self.groups.info(job) if self.groups is not None else None

    def status(self, job):
        """The job's status: a group's as its jobs make it, another job's its own."""
        info = self.group_info(job)
        return info[1] if info is not None else job.calc_status()

    def held(self, job):
        """Whether the job is held, by its own hold or a group's above it."""
        if job.held or self.groups is None or job.archived:
            return job.held
        return self.groups.held_unlocked(job)

    def group_children(self, job):
        """The ids of the jobs directly in a live group job, else None."""
        return self.groups.children(job) if self.groups is not None else None


_UNREAD = object()


def _no_reason(job):
    return None


class _LeafContext(Context):
    """A Context for the row of a job that is not a group: it has no group info."""

    def group_info(self, job):
        return None

    def status(self, job):
        return job.calc_status()


class _RowContext(Context):
    """A Context for the fields of one group job's row: its group_info (the group's
    counts and the status derived from them) is read once, not once per field."""

    def __init__(self, context):
        super().__init__(context.registry, context.groups, context.wait_reason,
                         context.running_rss)
        self._info = _UNREAD

    def group_info(self, job):
        if self._info is _UNREAD:
            self._info = super().group_info(job)
        return self._info


class Field:
    """A job field: name, column title, kind, one-line doc and getter(job, registry).

    plain, if given, is the getter's value for a job that is not a group as a function of
    the job alone (no context): what a listing of 10^5 jobs calls (see getters). A field
    whose value never depends on the context gives plain only (getter None).
    """

    __slots__ = ("name", "title", "kind", "doc", "getter", "plain")

    def __init__(self, name, title, kind, doc, getter, plain=None):
        if getter is None:
            getter = lambda job, ctx: plain(job)  # noqa: E731 - the getter made of plain
        self.name, self.title, self.kind, self.doc, self.getter = name, title, kind, doc, getter
        self.plain = plain

    def definition(self):
        """The field as QueryFields describes it."""
        return {"name": self.name, "title": self.title, "kind": self.kind, "doc": self.doc}


def _per_op(attr):
    return lambda job, registry: [getattr(op, attr) for op in job.ops]


FIELDS = [
    Field("id", "ID", QFT_NUMBER, "Job ID", None, operator.attrgetter("id")),
    Field("status", "Status", QFT_TEXT, "Job status",
          lambda job, ctx: ctx.status(job), QueuedJob.calc_status),
    Field("priority", "Prio", QFT_NUMBER, "Current job priority",
          lambda job, reg: job.calc_priority()),
    Field("archived", "Archived", QFT_BOOL, "Whether the job is archived",
          lambda job, reg: job.archived),
    Field("ops", "OpCodes", QFT_OTHER, "List of all opcodes", _per_op("input")),
    Field("opresult", "OpCode_result", QFT_OTHER, "List of opcode results",
          _per_op("result")),
    Field("opstatus", "OpCode_status", QFT_OTHER, "List of opcode statuses",
          _per_op("status")),
    Field("oplog", "OpCode_log", QFT_OTHER, "List of opcode logs",
          lambda job, reg: [list(op.log) for op in job.ops]),
    Field("opstart", "OpCode_start", QFT_OTHER, "List of opcode start timestamps",
          _per_op("start_timestamp")),
    Field("opexec", "OpCode_exec", QFT_OTHER, "List of opcode execution start timestamps",
          _per_op("exec_timestamp")),
    Field("opend", "OpCode_end", QFT_OTHER, "List of opcode end timestamps",
          _per_op("end_timestamp")),
    Field("oppriority", "OpCode_prio", QFT_OTHER, "List of opcode priorities",
          _per_op("priority")),
    Field("summary", "Summary", QFT_OTHER, "List of per-opcode summaries",
          lambda job, ctx: [ctx.summary(op) for op in job.ops]),
    Field("received_ts", "Received", QFT_OTHER, "Timestamp of job submission",
          lambda job, reg: job.received_timestamp),
    Field("start_ts", "Start", QFT_OTHER, "Timestamp of job start",
          lambda job, reg: job.start_timestamp),
    Field("end_ts", "End", QFT_OTHER, "Timestamp of job end",
          lambda job, reg: job.end_timestamp),
]


def _exec(key):
    """A field of a command job's current (or last) attempt (None for other jobs)."""
    def getter(job, registry):
        state = commandjob.op_exec(job)
        return state.get(key) if state is not None else None
    return getter


def _group(job, ctx, index):
    """Item index of the job's group_info (counts, shown status), or None."""
    info = ctx.group_info(job)
    return info[index] if info is not None else None


def _counted(name):
    def getter(job, ctx):
        counts = _group(job, ctx, 0)
        return getattr(counts, name) if counts is not None else None
    return getter


def _counts(job, ctx):
    counts = _group(job, ctx, 0)
    return {status: n for status, n in counts.items() if n} if counts is not None else None


def _progress(job, ctx):
    counts = _group(job, ctx, 0)
    if counts is not None:
        return groupjob.progress(counts)
    state = commandjob.op_exec(job)
    return state.get("progress") if state is not None else None


def _attempt(job, ctx):
    state = commandjob.op_exec(job)
    if state is None or state.get("attempt") is None:
        return None
    return state["attempt"] - state.get("uncounted", 0)


def _retry_at(job, registry):
    for op in job.ops:
        state = op.exec_state
        if (state is not None and op.status not in constants.OPS_FINALIZED
                and state.get("state") == constants.ATTEMPT_RETRY_WAIT):
            return state.get("retry_at")
    return None


def _title(job, registry):
    for op in job.ops:
        if commandjob.is_command(op.input) or groupjob.is_group_input(op.input):
            return op.input.get("title")
    return None


def _memory_max(job, registry):
    for op in job.ops:
        if commandjob.is_command(op.input):
            return op.input.get("memory_max") or None
    return None


def _max_attempts(job, registry):
    for op in job.ops:
        if commandjob.is_command(op.input) and op.status not in ("success",):
            return op.input.get("max_attempts")
    return None


FIELDS += [
    Field("node", "Node", QFT_TEXT, "Node of the command's current or last attempt",
          _exec("node")),
    Field("attempt", "Attempt", QFT_NUMBER, "Attempts of the command started so far "
          "(that count: not those a hold stopped, nor those before a reset)", _attempt),
    Field("max_attempts", "MaxAttempts", QFT_NUMBER, "Attempts the command may have",
          lambda job, reg: (commandjob.op_exec(job) or {}).get("max_attempts")
          or _max_attempts(job, reg)),
    Field("exit_status", "Exit", QFT_NUMBER, "Exit status of the command's last attempt",
          _exec("exit_status")),
    Field("signal", "Signal", QFT_NUMBER, "Signal that ended the command's last attempt",
          _exec("signal")),
    Field("timed_out", "TimedOut", QFT_BOOL, "Whether the command's last attempt timed out",
          _exec("timed_out")),
    Field("reason", "Reason", QFT_TEXT, "Why the command's last attempt ended (OK, FAILED, "
          "TIMEOUT, KILLED, INTERR, NOXFER, NODE_LOST)", _exec("reason")),
    Field("progress", "Progress", QFT_NUMBER, "Progress of the command (0..1); of a group: "
          "its finished jobs over all", _progress),
    Field("global_progress", "GlobalProgress", QFT_NUMBER,
          "Second-level progress of the command (0..1)", _exec("global_progress")),
    Field("log_bytes", "LogBytes", QFT_NUMBER, "Bytes in the job's command log",
          lambda job, reg: job.log_bytes),
    Field("pid", "PID", QFT_NUMBER, "Process id of the command's current or last attempt",
          _exec("pid")),
    Field("retry_at", "RetryAt", QFT_TIMESTAMP, "Time (epoch seconds) of the command's next "
          "attempt, while it waits out its back-off after a failed one", _retry_at),
    Field("title", "Title", QFT_TEXT, "Title of the command or group job", _title),
    Field("memory_max", "MemoryMax", QFT_NUMBER, "Bytes the command's processes may hold "
          "resident together (null: no limit)", _memory_max),
    Field("max_rss", "MaxRSS", QFT_NUMBER, "Peak resident memory of the command's last "
          "attempt (bytes: the largest of any one process, or of the sums sampled under "
          "a memory_max)", _exec("max_rss")),
    Field("cpu_time", "CPUTime", QFT_NUMBER, "Seconds of CPU (user and system) the "
          "command's last attempt used", _exec("cpu_time")),
    Field("memory_exceeded", "MemoryExceeded", QFT_BOOL, "Whether the command's last "
          "attempt was killed for going over its memory_max", _exec("memory_exceeded")),
    Field("rss", "RSS", QFT_NUMBER, "Resident memory the running command's processes hold "
          "together now (bytes, as its node last looked: a second after the start, then "
          "every 5 s; null: not running, or not looked at yet)",
          lambda job, ctx: ctx.running_rss(job) if isinstance(ctx, Context) else None),
    Field("owner", "Owner", QFT_TEXT, "Who submitted the job (an HTTP client's name)",
          lambda job, reg: job.owner),
    # Groups (jqueue.groupjob), holds and start times.
    Field("parent", "Parent", QFT_NUMBER, "The group the job is in", lambda job, ctx:
          job.parent),
    Field("children", "Children", QFT_OTHER, "Jobs directly in the group (null: not a "
          "group)", lambda job, ctx: ctx.group_children(job) if isinstance(ctx, Context)
          else None),
    Field("total", "Total", QFT_NUMBER, "Jobs in the group's tree that have no jobs of "
          "their own (its leaves)", _counted("total")),
    Field("finished", "Finished", QFT_NUMBER, "The group's leaves that finished",
          _counted("finished")),
    Field("errors", "Errors", QFT_NUMBER, "The group's leaves that failed",
          _counted("errors")),
    Field("working", "Working", QFT_NUMBER, "The group's leaves running now",
          _counted("working")),
    Field("counts", "Counts", QFT_OTHER, "The group's leaves by status ({status: number}, "
          "statuses without leaves left out; null: not a group)", _counts),
    Field("held", "Held", QFT_BOOL, "Whether the job is held, itself or by a group above "
          "it (it does not start until released)",
          lambda job, ctx: ctx.held(job) if isinstance(ctx, Context) else job.held),
    Field("not_before", "NotBefore", QFT_TIMESTAMP, "Time (epoch seconds) before which the "
          "job does not start", lambda job, ctx: job.not_before),
    Field("notify", "Notify", QFT_OTHER, "Who is told of the job's final state ({url or "
          "to, on: [final states], after: N for a group}; null: nobody)", None,
          lambda job: job.notify),
    Field("notified", "Notified", QFT_OTHER, "How telling its final state went ({url or "
          "to, delivered, status, error, tries, at}; null: not yet, or nothing to tell)",
          None, lambda job: job.notified),
    Field("notified_after", "NotifiedAfter", QFT_OTHER, "How telling that N jobs of the "
          "group finished went (its notify's after; as notified)", None,
          lambda job: job.notified_after),
]


def _waiting(index):
    def getter(job, ctx):
        found = ctx.wait_reason(job)
        return found[index] if found is not None else None
    return getter


FIELDS += [
    Field("wait_reason", "WaitReason", QFT_TEXT, "Why the job, pending, does not run now "
          "(%s; null: it runs, it ended, or it starts in its turn)"
          % ", ".join(constants.WAIT_REASONS), _waiting(0)),
    Field("wait_message", "Waiting", QFT_TEXT, "What the job, pending, waits for, in words "
          "(\"all 2 slots of vm are busy (jobs 31, 32)\")", _waiting(1)),
]
FIELDS_BY_NAME = {f.name: f for f in FIELDS}


def check_fields(fields):
    """Return the Field objects for names; raise OpPrereqError on unknown or malformed."""
    if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) for f in fields):
        raise errors.OpPrereqError("fields must be a list of field names")
    unknown = [f for f in fields if f not in FIELDS_BY_NAME]
    if unknown:
        raise errors.OpPrereqError("unknown job field(s): %s" % ", ".join(unknown))
    return [FIELDS_BY_NAME[f] for f in fields]


def getters(fields, context):
    """Return a function job -> [value, ...] for the given field names; context is a
    Context, or an opcode registry."""
    if not isinstance(context, Context):
        context = Context(context)
    definitions = check_fields(fields)
    funcs = [f.getter for f in definitions]
    if context.groups is None:
        return lambda job: [func(job, context) for func in funcs]

    leaf = _LeafContext(context.registry, context.groups, context.wait_reason,
                        context.running_rss)
    plain = _plain_row([f.plain for f in definitions])

    def row(job):
        if groupjob.is_group(job):
            ctx = _RowContext(context)
            return [func(job, ctx) for func in funcs]
        if plain is not None:
            return plain(job)
        return [func(job, leaf) for func in funcs]
    return row


def _plain_row(plains):
    """job -> [value, ...] of a job that is not a group, from the fields' plain getters
    (unrolled for the widths listings ask); None if a field has none."""
    if None in plains:
        return None
    if len(plains) == 1:
        first, = plains
        return lambda job: [first(job)]
    if len(plains) == 2:
        first, second = plains
        return lambda job: [first(job), second(job)]
    return lambda job: [get(job) for get in plains]
