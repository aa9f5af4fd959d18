"""Group jobs: the OP_GROUP opcode, and how a group's status derives from the jobs in it.

A group is an ordinary job of one ``OP_GROUP`` opcode (a valid Ganeti job file) with a
title and no work of its own; jobs join it at submit (their ``parent``). A job in a group
may itself be a group: groups form trees. The *leaves* of a group are the jobs below it
that have no jobs of their own (an empty group is a leaf too). This module is the model,
with no I/O: the opcode, the counts of a group's leaves and what they mean.

A group has two statuses (jqueue.groupkeeper keeps both up to date):

* the **shown** status (the ``status`` field: Coalition's order, other-systems row 15):
  running if a leaf runs (or is being canceled); else error if a leaf failed; else
  success if every leaf succeeded; else canceled if every leaf ended; else queued;
* the **recorded** status of its opcode (its job file, ``opstatus``): the same, except
  that it is final only once the group is *complete* (every leaf ended; an empty group
  only once canceled), and queued or running until then. Job statuses that are final
  stay final for Ganeti's machinery (waiters, dependencies, archival): a dependency on a
  group, ``jqctl wait`` on it and the archival of its tree all wait for the whole tree.
  The group's ``end_ts`` is set exactly while it is complete, and its opcode's exec state
  (the job file's ``exec``) holds its leaves' final counts (``final_state``): an archived
  group, whose tree is no longer live, still shows them.

Parameters a group passes on to the jobs submitted into it: ``INHERITED`` maps a
parameter name to ``merge(child_value, [group values, nearest first])``; a job's opcodes
that have the parameter get the merged value at submit. ``affinity`` is one (Coalition's
rule: a job needs its own tags and those of every group above it). A job submitted
without a priority takes its nearest group's current one (jqueue.groupkeeper).
"""

import collections

from jqueue import constants, errors, ptypes
from jqueue.opcodes import OpCode, Param, register

#: Longest group title.
MAX_TITLE = 200


class _GroupTitle(ptypes.PType):
    desc = ("a group title: 1 to %d printable characters, without '|' (it separates a "
            "path) and not only digits (a number names a job)" % MAX_TITLE)

    def check(self, value):
        if (not isinstance(value, str) or not value.strip() or len(value) > MAX_TITLE
                or not value.isprintable() or "|" in value
                or (value.isascii() and value.isdigit())):
            self._fail(value)
        return value


GroupTitle = _GroupTitle()


@register
class OpGroup(OpCode):
    """A group of jobs: no work of its own; its status derives from the jobs in it."""

    OP_ID = constants.OP_GROUP
    OP_DSC_FIELD = "title"
    OP_PARAMS = (
        Param("title", GroupTitle, doc="the group's name: what parent titles and paths "
                                       "match (render|shot1)"),
        Param("affinity", ptypes.Tags, [], "tags every command job in the group's tree "
                                               "needs besides its own"),
    )

    def run(self, ctx):
        raise errors.ProgrammerError("%s has no work of its own: it never runs" % self.OP_ID)


def union_tags(tags, inherited):
    """A job's tags followed by those of its groups it lacks (nearest group first)."""
    merged = list(tags or [])
    for more in inherited:
        merged.extend(tag for tag in more if tag not in merged)
    return merged


#: Parameters a group passes on: name -> merge(child value, [group values, nearest first]).
INHERITED = {"affinity": union_tags}


def is_group_input(op_input):
    """Whether a stored opcode input is a group's."""
    return op_input.get("OP_ID") == constants.OP_GROUP


def is_group(job):
    """Whether a job is a group job."""
    return len(job.ops) == 1 and is_group_input(job.ops[0].input)


def title_of(job):
    """A group's title (None for other jobs)."""
    return job.ops[0].input.get("title") if is_group(job) else None


def check_job(inputs):
    """OpPrereqError if validated opcode inputs mix a group with other opcodes or give a
    group dependencies (a group runs nothing: depend on it, or give its jobs theirs)."""
    if not any(is_group_input(op) for op in inputs):
        return
    if len(inputs) != 1:
        raise errors.OpPrereqError("a group job is one %s opcode and nothing else" %
                                   constants.OP_GROUP, constants.ECODE_INVAL)
    if inputs[0].get("depends"):
        raise errors.OpPrereqError("opcode %s: a group has no dependencies of its own; give "
                                   "them to the jobs in it" % constants.OP_GROUP,
                                   constants.ECODE_INVAL)


def inherit(op_input, group_inputs):
    """Give op_input the INHERITED parameters of its groups (nearest first), in place."""
    for name, merge in INHERITED.items():
        if name not in op_input:
            continue
        values = [group.get(name) for group in group_inputs if group.get(name) is not None]
        if values:
            op_input[name] = merge(op_input[name], values)


# Counting a group's leaves and what the counts mean

_WORKING = (constants.JOB_STATUS_RUNNING, constants.JOB_STATUS_CANCELING)


class Counts(collections.Counter):
    """How many leaves of a group are in each job status."""

    @property
    def total(self):
        return sum(self.values())

    @property
    def finished(self):
        return sum(self[status] for status in constants.JOBS_FINALIZED)

    @property
    def errors(self):
        return self[constants.JOB_STATUS_ERROR]

    @property
    def working(self):
        return sum(self[status] for status in _WORKING)


def empty_status(own):
    """The status of a group without jobs: canceled once canceled, else queued."""
    return (constants.JOB_STATUS_CANCELED if own == constants.JOB_STATUS_CANCELED
            else constants.JOB_STATUS_QUEUED)


def shown_status(counts, own):
    """The group's ``status`` field (see the module docstring); own: its recorded status."""
    total = counts.total
    if not total:
        return empty_status(own)
    if counts.working:
        return constants.JOB_STATUS_RUNNING
    if counts.errors:
        return constants.JOB_STATUS_ERROR
    if counts[constants.JOB_STATUS_SUCCESS] == total:
        return constants.JOB_STATUS_SUCCESS
    if counts.finished == total:
        return constants.JOB_STATUS_CANCELED
    return constants.JOB_STATUS_QUEUED


def complete(counts, own):
    """Whether every leaf of the group ended (an empty group: once canceled)."""
    total = counts.total
    if not total:
        return empty_status(own) == constants.JOB_STATUS_CANCELED
    return counts.finished == total


def recorded_status(counts, own):
    """The status the group's opcode records: final only once the group is complete."""
    shown = shown_status(counts, own)
    if shown == constants.JOB_STATUS_RUNNING or complete(counts, own):
        return shown
    return constants.JOB_STATUS_QUEUED


def result(status, counts, job_id):
    """The result the group's opcode records for a recorded status."""
    if status == constants.JOB_STATUS_ERROR:
        return errors.encode_exception(errors.OpExecError(
            "%d of the %d jobs of group %d failed" % (counts.errors, counts.total, job_id)))
    if status == constants.JOB_STATUS_CANCELED:
        return constants.MSG_CANCELED
    if status == constants.JOB_STATUS_SUCCESS:
        return {"total": counts.total}
    return None


def final_state(counts):
    """What a complete group's opcode keeps as its exec state (the job file's "exec"):
    its leaves' final counts, which its archived file still shows when its tree is gone."""
    return {"counts": {status: n for status, n in sorted(counts.items()) if n}}


def final_counts(job):
    """The Counts a complete group recorded (see final_state), or None."""
    if not is_group(job):
        return None
    state = job.ops[0].exec_state
    counts = state.get("counts") if isinstance(state, dict) else None
    if not isinstance(counts, dict) or not all(
            status in constants.JOB_STATUS_ALL and isinstance(n, int) and n > 0
            for status, n in counts.items()):
        return None
    return Counts(counts)


def progress(counts):
    """Finished leaves over all leaves (None for a group without jobs)."""
    return counts.finished / counts.total if counts.total else None
