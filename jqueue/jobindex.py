"""The index of live jobs that listing pages are served from (HTTP ``GET /api/v1/jobs``).

Listing a page of jobs must not read every job: Salt's ``list_jobs`` read its whole cache
and took minutes on big ones. The index keeps the ids of the live jobs in order, and for
each filterable key (status, node, owner, parent) the ids per value, as sorted lists
(``sortedcontainers``: insertion, removal and a range from a given id in O(log n)). A page
walks the smallest of the lists its filters name, from its cursor, and checks the other
keys of each id against a small tuple per job, so that it costs about the page's length,
not the queue's.

The queue calls ``update`` whenever it journals a job's change (its status or node may
have moved) and ``remove`` when a job leaves (archived, or its submission refused); this
module does no I/O and knows nothing of locks: its owner holds its own.

``since``/``until`` (epoch seconds of submission) become a range of ids: ids are allocated
in submission order, as timestamps are, so the first id received at or after a time is
found by bisection (a clock stepped back while jobs were submitted may blur the edge by
the size of the step).
"""

import heapq

from sortedcontainers import SortedList

#: The keys a listing may filter on, in the order of the tuple kept per job.
KEYS = ("status", "node", "owner", "parent")


class JobIndex:
    """Live jobs by id, and by each of KEYS; filled by its owner (see the module doc)."""

    def __init__(self):
        self._ids = SortedList()
        self._by = {key: {} for key in KEYS}
        self._values = {}    # job id -> (status, node, owner, parent)
        self._received = {}  # job id -> epoch seconds of submission

    def __len__(self):
        return len(self._ids)

    def __contains__(self, job_id):
        return job_id in self._values

    def update(self, job_id, received, values):
        """Index job_id (submitted at received) with values, a tuple in KEYS' order."""
        old = self._values.get(job_id)
        if old == values:
            return
        if old is None:
            self._ids.add(job_id)
            self._received[job_id] = received
        for key, before, after in zip(KEYS, old or (None,) * len(KEYS), values):
            if old is not None and before == after:
                continue
            lists = self._by[key]
            if old is not None and before is not None:
                self._discard(lists, before, job_id)
            if after is not None:
                ids = lists.get(after)
                if ids is None:  # (not setdefault: it would build a list at every call)
                    ids = lists[after] = SortedList()
                ids.add(job_id)
        self._values[job_id] = values

    def fill(self, entries):
        """Index many jobs at once (sorted once, not inserted one by one: a queue opening
        with 10^5 jobs); entries: [(job_id, received, values)], as update() takes them.
        The index must be empty."""
        if self._values:
            raise ValueError("fill() is for an empty index")
        grouped = {key: {} for key in KEYS}
        for job_id, received, values in entries:
            self._values[job_id] = values
            self._received[job_id] = received
            for key, value in zip(KEYS, values):
                if value is not None:
                    grouped[key].setdefault(value, []).append(job_id)
        self._ids = SortedList(self._values)
        self._by = {key: {value: SortedList(ids) for value, ids in grouped[key].items()}
                    for key in KEYS}

    def remove(self, job_id):
        """Forget job_id (no error if unknown)."""
        values = self._values.pop(job_id, None)
        if values is None:
            return
        self._ids.discard(job_id)
        self._received.pop(job_id, None)
        for key, value in zip(KEYS, values):
            if value is not None:
                self._discard(self._by[key], value, job_id)

    @staticmethod
    def _discard(lists, value, job_id):
        ids = lists.get(value)
        if ids is not None:
            ids.discard(job_id)
            if not ids:
                del lists[value]

    def values(self, job_id):
        """The indexed (status, node, owner, parent) of job_id, or None."""
        return self._values.get(job_id)

    def counts(self, key):
        """{value: number of live jobs} for one of KEYS."""
        return {value: len(ids) for value, ids in self._by[key].items()}

    def select(self, filters=None, after=None, before=None, reverse=False, since=None,
               until=None):
        """Ids of the live jobs passing filters, in id order (reverse: newest first).

        filters maps keys of KEYS to a set of accepted values; after/before are exclusive
        id bounds; since/until inclusive submission times. A generator: the caller takes
        as many ids as its page needs.
        """
        filters = {key: set(accepted) for key, accepted in (filters or {}).items()
                   if accepted is not None}
        low, high = after, before
        if since is not None:
            first = self._first_received_at_or_after(since)
            low = first - 1 if low is None else max(low, first - 1)
        if until is not None:
            last = self._first_received_at_or_after(until, strict=True)
            high = last if high is None else min(high, last)
        sources = self._smallest_source(filters)
        if sources is None:
            return
        positions = [key_index for key_index, key in enumerate(KEYS) if key in filters]
        accepted = [filters[KEYS[key_index]] for key_index in positions]
        yield from self._walk(sources, low, high, reverse, positions, accepted)

    def _walk(self, sources, low, high, reverse, positions, accepted):
        """Merge the sorted lists of sources within (low, high) and check each id."""
        ranges = [ids.irange(low, high, inclusive=(False, False), reverse=reverse)
                  for ids in sources]
        merged = ranges[0] if len(ranges) == 1 else heapq.merge(*ranges, reverse=reverse)
        values = self._values
        for job_id in merged:
            row = values.get(job_id)
            if row is not None and all(row[p] in ok for p, ok in zip(positions, accepted)):
                yield job_id

    def _smallest_source(self, filters):
        """The lists to walk: those of the most selective filter (all ids if none);
        None if a filter accepts no value present."""
        if not filters:
            return [self._ids]
        best = None
        for key, accepted in filters.items():
            lists = [self._by[key][value] for value in accepted if value in self._by[key]]
            if not lists:
                return None
            size = sum(len(ids) for ids in lists)
            if best is None or size < best[0]:
                best = (size, lists)
        return best[1]

    def _first_received_at_or_after(self, when, strict=False):
        """The first live id submitted at or after when (after, if strict); one past the
        last id if none."""
        ids, received = self._ids, self._received
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            stamp = received[ids[mid]]
            if stamp > when or (not strict and stamp == when):
                hi = mid
            else:
                lo = mid + 1
        return ids[lo] if lo < len(ids) else (ids[-1] + 1 if ids else 0)
