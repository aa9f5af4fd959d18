"""The group tree: which live job is in which group, and the counts of each group's leaves.

An index over job ids, no I/O and no lock of its own (jqueue.groupkeeper keeps it under
the queue's lock). It holds every group and every job that is in a group; a job whose
group is gone (archived) is a root. Each group keeps the counts of the statuses of the
leaves below it (jqueue.groupjob.Counts), updated along the path to the root whenever a
leaf joins, leaves or changes status, so that a change costs the depth of the tree, not
the size of a group.

References to a group (a job's ``parent`` at submit, ``jqctl tree PATH``): a job id, a
title (unique among the groups), or a path of titles from the root joined by ``|``
(``render|shot1``). A title or path that names several groups is refused as ambiguous.
"""

from jqueue.groupjob import Counts, empty_status

#: Longest reference (title or path) accepted.
MAX_REFERENCE = 4096
#: Separator of the titles of a path.
PATH_SEPARATOR = "|"


class GroupReferenceError(ValueError):
    """A reference that names no group, or several (the message says which)."""


def check_reference(value, relative=True, what="parent"):
    """A group reference as a caller gave it: an int (negative only if relative), a
    decimal string (an id) or a title or path; ValueError naming what is wrong (what the
    value was given as)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0 and not relative:
            raise ValueError("invalid job reference %d: a job id is not negative" % value)
        return value
    if (isinstance(value, str) and value and len(value) <= MAX_REFERENCE
            and value.isprintable()):
        if value.isascii() and value.isdigit():
            return int(value)
        return value
    text = repr(value)
    raise ValueError("invalid %s %s: a job id, a group title or a path of titles "
                     "(a|b)" % (what, text if len(text) <= 60 else text[:57] + "..."))


class GroupTree:
    """Groups and the jobs in them; see the module docstring."""

    def __init__(self):
        self._parent = {}     # job id -> group id, or None (a root)
        self._children = {}   # group id -> set of job ids (every group has one)
        self._leaf = {}       # leaf id (a job without jobs of its own) -> its status
        self._own = {}        # group id -> its recorded status (what it is when empty)
        self._counts = {}     # group id -> Counts of the leaves below it
        self._titles = {}     # title -> set of group ids
        self._title_of = {}   # group id -> title

    # Membership

    def __contains__(self, job_id):
        return job_id in self._parent

    def __len__(self):
        return len(self._parent)

    def is_group(self, job_id):
        return job_id in self._children

    def add(self, job_id, parent, status, title=None):
        """Add a job (a group if title is given) in group parent (None, or a group not in
        the tree: a root) with status; return the groups whose counts changed, nearest
        first (as each mutator does)."""
        if job_id in self._parent:
            return []
        parent = parent if parent in self._children else None
        self._parent[job_id] = parent
        if title is not None:
            self._children[job_id] = set()
            self._counts[job_id] = Counts()
            self._own[job_id] = status
            self._titles.setdefault(title, set()).add(job_id)
            self._title_of[job_id] = title
            status = empty_status(status)
        self._leaf[job_id] = status
        if parent is None:
            return []
        siblings = self._children[parent]
        if not siblings:  # the group was a leaf: it is one no more
            self._count(parent, self._leaf.pop(parent), -1)
        siblings.add(job_id)
        self._count(job_id, status, +1)
        return self.ancestors(job_id)

    def remove(self, job_id):
        """Remove a job without jobs of its own; return the groups whose counts changed."""
        if job_id not in self._parent:
            return []
        if self._children.get(job_id):
            raise ValueError("group %d still has jobs" % job_id)
        changed = self.ancestors(job_id)
        self._count(job_id, self._leaf.pop(job_id), -1)
        parent = self._parent.pop(job_id)
        if job_id in self._children:
            del self._children[job_id], self._counts[job_id], self._own[job_id]
            title = self._title_of.pop(job_id)
            self._titles[title].discard(job_id)
            if not self._titles[title]:
                del self._titles[title]
        if parent is not None:
            self._children[parent].discard(job_id)
            if not self._children[parent]:  # an empty group is a leaf again
                self._leaf[parent] = empty_status(self._own[parent])
                self._count(parent, self._leaf[parent], +1)
        return changed

    def set_status(self, job_id, status):
        """A job's status changed (its recorded status, for a group); return the groups
        whose counts changed (only a leaf's status counts for the groups above it)."""
        if job_id in self._own:
            self._own[job_id] = status
            if self._children[job_id]:
                return []
            status = empty_status(status)
        old = self._leaf.get(job_id)
        if old is None or old == status:
            return []
        self._leaf[job_id] = status
        self._count(job_id, old, -1)
        self._count(job_id, status, +1)
        return self.ancestors(job_id)

    def _count(self, job_id, status, delta):
        """Add delta to status in the counts of every group above job_id."""
        group = self._parent.get(job_id)
        while group is not None:
            counts = self._counts[group]
            counts[status] += delta
            if not counts[status]:
                del counts[status]
            group = self._parent.get(group)

    # Reading

    def parent(self, job_id):
        """The group of a job in the tree (None: a root, or not in the tree)."""
        return self._parent.get(job_id)

    def children(self, job_id):
        """The jobs directly in a group, by id (empty for other jobs)."""
        return sorted(self._children.get(job_id, ()))

    def counts(self, job_id):
        """The Counts of a group's leaves (None for other jobs)."""
        return self._counts.get(job_id)

    def own_status(self, job_id):
        return self._own.get(job_id)

    def title(self, job_id):
        return self._title_of.get(job_id)

    def ancestors(self, job_id):
        """The groups above a job, nearest first."""
        found = []
        group = self._parent.get(job_id)
        while group is not None:
            found.append(group)
            group = self._parent.get(group)
        return found

    def subtree(self, job_id):
        """A job and every job below it, parents before their jobs (ids in order)."""
        found, stack = [], [job_id]
        while stack:
            current = stack.pop()
            found.append(current)
            stack.extend(sorted(self._children.get(current, ()), reverse=True))
        return found

    def root(self, job_id):
        """The topmost group above a job (the job itself if it is in no group)."""
        ancestors = self.ancestors(job_id)
        return ancestors[-1] if ancestors else job_id

    # References

    def resolve(self, reference, pending=None):
        """The id of the group a title or a path names; GroupReferenceError if none or several.

        pending maps the ids of groups not in the tree yet (submitted earlier in the same
        request) to (parent id or None, title).
        """
        pending = pending or {}
        names = reference.split(PATH_SEPARATOR)
        if any(not name for name in names):
            raise GroupReferenceError("invalid group path %r: empty title" % (reference,))
        if len(names) == 1:
            found = self._titled(names[0], pending)
            what = "group titled %r" % (reference,)
        else:
            found = [g for g in self._titled(names[0], pending)
                     if self._parent_of(g, pending) is None]
            for name in names[1:]:
                found = [g for g in self._titled(name, pending)
                         if self._parent_of(g, pending) in found]
            what = "group at path %r" % (reference,)
        if not found:
            raise GroupReferenceError("no live %s" % what)
        if len(found) > 1:
            raise GroupReferenceError("ambiguous %s: jobs %s match; give the job id" % (
                what, ", ".join(str(g) for g in sorted(found))))
        return found[0]

    def _titled(self, title, pending):
        ids = set(self._titles.get(title, ()))
        ids.update(g for g, (_, t) in pending.items() if t == title)
        return sorted(ids)

    def _parent_of(self, group, pending):
        if group in pending:
            return pending[group][0]
        return self._parent.get(group)

