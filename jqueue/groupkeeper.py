"""The queue's groups: the tree of its live jobs, group statuses kept up, parents at submit.

A GroupKeeper belongs to a master's JobQueue and works under its lock (methods ending in
``_unlocked``). Its GroupTree follows the *acknowledged* state of the jobs: a job joins
it once its submission is durable, and a job's status counts for its groups once the
change is durable (the queue calls ``changed_unlocked`` from its durability listener).
So readers never see a group counting a change that a full disk could still take back,
and a refused change needs no undo here.

When the counts of a group change, the keeper derives its statuses (jqueue.groupjob) and,
if its recorded status, its completeness or its shown status moved, records the group's
new state through the queue's journal like any change: the group's file, replicas, waiters
and dependents follow. A group's recorded state is derived, so whenever memory is put back
(a refused client change undone), the keeper derives it again.
"""

import logging

from jqueue import constants, errors, groupjob, query
from jqueue.grouptree import GroupReferenceError, GroupTree, check_reference
from jqueue.job import state_status, timestamp

logger = logging.getLogger(__name__)


class GroupKeeper:
    """The group tree of a JobQueue and the upkeep of its group jobs."""

    def __init__(self, queue, active=True):
        self._queue = queue
        #: False in a replica: the master records its groups' states; nothing to do here.
        self.active = active
        self.tree = GroupTree()
        self._shown = {}  # group id -> the shown status its last record had

    def field_context(self, registry, wait_reason=None, running_rss=None):
        """The query context of the queue's fields (group fields read the tree; the
        wait fields call wait_reason, rss running_rss)."""
        return query.Context(registry, self, wait_reason, running_rss)

    # Building and following the tree

    def rebuild_unlocked(self, jobs):
        """Build the tree of the live jobs (ascending ids) and derive every group (after
        opening the queue: recorded statuses may lag, e.g. after a crash)."""
        if not self.active:
            return
        for job in jobs:
            self._add_unlocked(job, job.calc_status())
        groups = sorted((j for j in jobs if self.tree.is_group(j.id)), key=lambda j: j.id,
                        reverse=True)  # nested groups first
        for job in groups:
            self._shown[job.id] = groupjob.shown_status(self.tree.counts(job.id),
                                                        job.ops[0].status)
            self._derive_unlocked(job.id, record=True)
            self._queue._index_unlocked(job)  # indexed before the tree: by its opcode

    def visible_unlocked(self, job):
        """A job's submission is durable: it joins the tree (if it is in one)."""
        if not self.active:
            return
        self._derive_all_unlocked(self._add_unlocked(job, constants.JOB_STATUS_QUEUED))

    def _add_unlocked(self, job, status):
        title = groupjob.title_of(job)
        if title is None and job.parent is None:
            return []
        changed = self.tree.add(job.id, job.parent, status, title)
        if title is not None:
            self._shown.setdefault(job.id, groupjob.shown_status(self.tree.counts(job.id),
                                                                 job.ops[0].status))
        return changed

    def changed_unlocked(self, job):
        """A change of job is durable: its acknowledged status counts for its groups."""
        if not self.active:
            return
        if job.id not in self.tree:
            return
        status = (job.calc_status() if not job.unacked_state
                  else state_status(job.acked_state))
        self._derive_all_unlocked(self.tree.set_status(job.id, status))

    def archived_unlocked(self, jobs):
        """jobs were archived (their records appended): they leave the tree."""
        if not self.active:
            return
        changed = []
        for job in sorted(jobs, key=lambda j: j.id, reverse=True):  # jobs before groups
            changed += self.tree.remove(job.id)
        gone = {job.id for job in jobs}
        self._derive_all_unlocked([g for g in _unique(changed) if g not in gone])

    def unarchived_unlocked(self, jobs):
        """A refused archival was undone: jobs are back (memory only, see restored)."""
        if not self.active:
            return
        changed = []
        for job in sorted(jobs, key=lambda j: j.id):
            changed += self._add_unlocked(job, job.calc_status())
        for group_id in _unique(changed):
            self._derive_unlocked(group_id, record=False)

    def restored_unlocked(self, job):
        """A refused client change put job back: derive it again if it is a group."""
        if not self.active:
            return
        if self.tree.is_group(job.id):
            self._derive_unlocked(job.id, record=False)

    def _derive_all_unlocked(self, group_ids):
        for group_id in group_ids:  # nearest first: inner groups before outer ones
            self._derive_unlocked(group_id, record=True)

    def _derive_unlocked(self, group_id, record):
        """Derive a group's statuses from its counts; record them if they moved."""
        queue = self._queue
        job = queue._jobs.get(group_id)
        if job is None or not job.visible:
            return
        counts = self.tree.counts(group_id)
        if record:  # the counts of durable changes: N of its jobs may have succeeded
            queue._notify_after_due_unlocked(job)
        op = job.ops[0]
        status = groupjob.recorded_status(counts, op.status)
        done = groupjob.complete(counts, op.status)
        shown = groupjob.shown_status(counts, op.status)
        final = groupjob.final_state(counts) if done else None
        if (status == op.status and done == (job.end_timestamp is not None)
                and shown == self._shown.get(group_id) and final == op.exec_state):
            return
        if record:
            queue._prepare_change_unlocked(job)
        _set_group_state(job, status, done, counts, timestamp(queue._clock()))
        op.exec_state = final
        self._shown[group_id] = shown
        if record:
            queue._record_state_unlocked(job)  # indexes it (by its shown status)
        else:
            queue._dirty.add(job.id)
            queue._index_unlocked(job)

    # Reading

    def shown_unlocked(self, job):
        """The shown status of a live group (its status field) as its opcode and the tree
        have it now, or None for other jobs: what the queue's index lists a group by."""
        info = self.info(job)
        return info[1] if info is not None else None

    def complete_unlocked(self, job_id):
        """Whether a job is done for those who depend on it: a group once complete."""
        counts = self.tree.counts(job_id)
        if counts is None:
            return True
        return groupjob.complete(counts, self.tree.own_status(job_id))

    def held_unlocked(self, job):
        """Whether the job or a group above it is held."""
        return job.held or self.holder_unlocked(job) is not None

    def holder_unlocked(self, job):
        """The id of the nearest held group above the job (None if none is)."""
        jobs = self._queue._jobs
        return next((g for g in self.tree.ancestors(job.id)
                     if getattr(jobs.get(g), "held", False)), None)

    def subtree_unlocked(self, job):
        """The visible live jobs of a group's tree (parents first), or [job]."""
        if not self.tree.is_group(job.id):
            return [job]
        jobs = self._queue._jobs
        return [jobs[i] for i in self.tree.subtree(job.id) if i in jobs and jobs[i].visible]

    def tree_of_unlocked(self, job):
        """job and, for a group, the live jobs of its tree (what archiving it takes)."""
        return self.subtree_unlocked(job)

    def archivable_unlocked(self, jobs, old_enough):
        """Of jobs, those to archive when old_enough(job) says a finished job may go,
        each with its tree: a job in a group only goes with its topmost group, a group
        only once every job of its tree ended (old enough: its end, when that happened)
        and was told to whom its notify names (or given up)."""
        chosen = []
        telling = self._queue._telling_unlocked
        for job in jobs:
            if self.tree.parent(job.id) is not None or not old_enough(job):
                continue
            tree = self.subtree_unlocked(job)
            if all(j.is_finalized() and not j.unacked_state and not telling(j)
                   for j in tree):
                chosen.extend(tree)
        return chosen

    def info(self, job):
        """(Counts, shown status) of a group (an archived one: as its tree ended), or None
        (query fields): a lookup, what a listing may read for every row (the counts are
        kept up along the tree)."""
        counts = self.tree.counts(job.id)
        if counts is None or job.archived:
            counts = groupjob.final_counts(job)  # an archived group: as it ended
            if counts is None:
                return None
        return counts, groupjob.shown_status(counts, job.ops[0].status)

    def children(self, job):
        """The ids of the jobs directly in a live group (sorted: its size's cost), or None."""
        if job.archived or not self.tree.is_group(job.id):
            return None
        return self.tree.children(job.id)

    # Submission

    def resolve_parents_unlocked(self, jobs, parents, own_priority):
        """The parent id of each job of a request, or a problem; inherit parameters.

        jobs: [(job id or None if refused, opcode inputs)]; parents: the references given
        (None, a job id, a negative id relative to the request, a title or a path);
        own_priority: whether each job was given a priority (else its opcodes take the
        group's current one). Returns [(parent id or None, problem or None)] in order.
        """
        pending, inputs_of, ids, answers = {}, {}, [], []
        for index, ((job_id, inputs), reference) in enumerate(zip(jobs, parents)):
            ids.append(job_id)
            if job_id is None or reference is None:
                answers.append((None, None))
            else:
                try:
                    parent = self._parent_id(reference, index, ids, pending)
                    self._inherit(inputs, parent, pending, inputs_of, own_priority[index])
                    answers.append((parent, None))
                except GroupReferenceError as err:
                    answers.append((None, "parent: %s" % err))
            if job_id is not None and answers[-1][1] is None and groupjob.is_group_input(
                    inputs[0]):
                pending[job_id] = (answers[-1][0], inputs[0]["title"])
                inputs_of[job_id] = inputs[0]
        return answers

    def _parent_id(self, reference, index, ids, pending):
        if isinstance(reference, str):
            if reference.isascii() and reference.isdigit():
                reference = int(reference)
            else:
                return self.tree.resolve(reference, pending)
        if reference < 0:
            target = index + reference
            if target < 0 or ids[target] is None:
                raise GroupReferenceError("relative parent %d names no job of this request "
                                          "that was accepted" % reference)
            reference = ids[target]
        if reference in pending or self.tree.is_group(reference):
            return reference
        job = self._queue._visible_job_unlocked(reference)
        if job is None:
            raise GroupReferenceError("job %d is not a live job" % reference)
        raise GroupReferenceError("job %d is not a group (jobs join groups only)" % reference)

    def _inherit(self, inputs, parent, pending, inputs_of, own_priority):
        """Give a job's opcodes the inherited parameters of the groups above it, and
        the priority of the nearest one now unless the job was given its own."""
        if not own_priority:
            priority = (inputs_of[parent]["priority"] if parent in pending
                        else self._queue._jobs[parent].ops[0].priority)
            for op_input in inputs:
                op_input["priority"] = priority
        groups = []
        while parent is not None:
            if parent in pending:
                groups.append(inputs_of[parent])
                parent = pending[parent][0]
            else:
                groups.append(self._queue._jobs[parent].ops[0].input)
                parent = self.tree.parent(parent)
        for op_input in inputs:
            before = dict(op_input)
            groupjob.inherit(op_input, groups)
            if op_input != before:  # a pinned node must still hold the tags now needed
                try:
                    self._queue._check_command(op_input)
                except errors.OpPrereqError as err:
                    raise GroupReferenceError("the group's tags: %s" %
                                              errors.error_message(err)) from None

    def resolve(self, reference):
        """The id of the live job a reference names (ResolveJob); OpPrereqError if none."""
        try:
            reference = check_reference(reference, relative=False, what="job or group")
        except ValueError as err:
            raise errors.OpPrereqError(str(err), constants.ECODE_INVAL) from None
        queue = self._queue
        with queue._lock:
            if isinstance(reference, int):
                if queue._visible_job_unlocked(reference) is None:
                    raise errors.OpPrereqError("job %d is not a live job" % reference,
                                               constants.ECODE_NOENT)
                return reference
            try:
                return self.tree.resolve(reference)
            except GroupReferenceError as err:
                raise errors.OpPrereqError(str(err), constants.ECODE_NOENT) from None


def _set_group_state(job, status, done, counts, now):
    """A group job's recorded state for status and completeness."""
    op = job.ops[0]
    if status != op.status:
        op.status = status
        op.result = groupjob.result(status, counts, job.id)
    if status == constants.JOB_STATUS_RUNNING and job.start_timestamp is None:
        job.start_timestamp = op.start_timestamp = op.exec_timestamp = now
    if done and job.end_timestamp is None:
        job.end_timestamp = op.end_timestamp = now
        op.result = groupjob.result(status, counts, job.id)
    elif not done:
        job.end_timestamp = op.end_timestamp = None
        job.notified = None  # it ends again (a job added, reset or retried): told again


def _unique(ids):
    seen, out = set(), []
    for item in ids:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


