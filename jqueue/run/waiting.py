"""WaitForJobChanges: the change check and the registry of waiters.

A waiter costs one small object: no thread, no file watch. The queue evaluates the
waiters of a job when a change of that job has become durable, and calls each waiter's
callback at most once, outside the queue lock.
"""

import threading

from jqueue import constants

#: Job statuses in which a job may still change without anything else happening to it.
_CHANGING = frozenset([constants.JOB_STATUS_QUEUED, constants.JOB_STATUS_WAITING,
                       constants.JOB_STATUS_RUNNING])


def check_change(job, info_fn, prev_job_info, prev_log_serial, max_log_serial):
    """Return (job_info, log_entries) if the caller should be answered now, else None.

    Answer when the job info differs from prev_job_info, when there are log entries
    newer than prev_log_serial (up to max_log_serial, the newest durable one), or when
    the job can no longer change by itself (finalized or being canceled).
    """
    job_info = info_fn(job)
    since = prev_log_serial if isinstance(prev_log_serial, int) else -1
    entries = [e for e in job.log_entries_since(since) if e[0] <= max_log_serial]
    if (job.calc_status() not in _CHANGING or job_info != prev_job_info or entries):
        return (job_info, entries)
    return None


class Waiter:
    """One pending WaitForJobChanges call.

    fields_key (the requested fields as a tuple), if given, lets the registry compute a
    job's info once for every waiter asking the same fields (see collect_ready).
    """

    __slots__ = ("job_id", "info_fn", "prev_job_info", "prev_log_serial", "callback",
                 "_registry", "fields_key")

    def __init__(self, job_id, info_fn, prev_job_info, prev_log_serial, callback,
                 fields_key=None):
        self.job_id = job_id
        self.info_fn = info_fn
        self.prev_job_info = prev_job_info
        self.prev_log_serial = prev_log_serial
        self.callback = callback
        self._registry = None
        self.fields_key = fields_key

    def check(self, job, max_log_serial):
        return check_change(job, self.info_fn, self.prev_job_info, self.prev_log_serial,
                            max_log_serial)

    def check_shared(self, job, max_log_serial, final, answers):
        """check(), with the answer shared among waiters asking the same thing.

        answers maps (fields, log serial since) to the (job_info, entries) already
        computed for this change of the job: thousands of waiters on one job then cost
        one evaluation of its fields, and they get the very same answer object, which
        the LUXI server encodes once for all of them.
        """
        if self.fields_key is None:
            return self.check(job, max_log_serial)
        since = self.prev_log_serial if isinstance(self.prev_log_serial, int) else -1
        key = (self.fields_key, since)
        answer = answers.get(key)
        if answer is None:
            entries = [e for e in job.log_entries_since(since) if e[0] <= max_log_serial]
            answer = answers[key] = (self.info_fn(job), entries)
        if final or answer[0] != self.prev_job_info or answer[1]:
            return answer
        return None

    def cancel(self):
        """Stop waiting; the callback will not be called after this returns."""
        if self._registry is not None:
            self._registry.remove(self)


class WaiterRegistry:
    """Waiters by job id; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_job = {}

    def add(self, waiter):
        with self._lock:
            waiter._registry = self
            self._by_job.setdefault(waiter.job_id, set()).add(waiter)

    def remove(self, waiter):
        with self._lock:
            waiters = self._by_job.get(waiter.job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._by_job[waiter.job_id]

    def has_waiters(self, job_id):
        return job_id in self._by_job

    def collect_ready(self, job, max_log_serial):
        """Remove and return [(callback, result)] for the waiters of job that are answered."""
        with self._lock:
            waiters = self._by_job.get(job.id)
            if not waiters:
                return []
            ready = []
            answers = {}
            final = job.calc_status() not in _CHANGING
            for waiter in list(waiters):
                result = waiter.check_shared(job, max_log_serial, final, answers)
                if result is not None:
                    waiters.discard(waiter)
                    waiter._registry = None  # its cancel() has nothing left to do
                    ready.append((waiter.callback, result))
            if not waiters:
                del self._by_job[job.id]
            return ready

    def count(self):
        with self._lock:
            return sum(len(w) for w in self._by_job.values())


class LogWaiter:
    """A wait for a command log to grow beyond offset (ReadJobLog's long poll)."""

    __slots__ = ("job_id", "offset", "callback", "_registry")

    def __init__(self, job_id, offset, callback):
        self.job_id, self.offset, self.callback = job_id, offset, callback
        self._registry = None

    def cancel(self):
        """Withdraw the wait (its timeout expired or its client went away)."""
        if self._registry is not None:
            self._registry.remove(self)


class LogWaiterRegistry:
    """Log waiters by job id; thread-safe. A waiter is answered with (size, final)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_job = {}

    def add(self, job_id, offset, callback):
        """Wait until job_id's durable log passes offset or the job ends; the waiter."""
        waiter = LogWaiter(job_id, offset, callback)
        with self._lock:
            waiter._registry = self
            self._by_job.setdefault(job_id, set()).add(waiter)
        return waiter

    def remove(self, waiter):
        with self._lock:
            waiters = self._by_job.get(waiter.job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._by_job[waiter.job_id]

    def collect_ready(self, job_id, size, final):
        """Remove and return [(callback, (size, final))] for the waiters answered now."""
        if job_id not in self._by_job:
            return []
        with self._lock:
            waiters = self._by_job.get(job_id, ())
            ready = [w for w in waiters if final or size > w.offset]
            for waiter in ready:
                waiters.discard(waiter)
            if not waiters:
                self._by_job.pop(job_id, None)
        return [(w.callback, (size, final)) for w in ready]

    def count(self):
        with self._lock:
            return sum(len(w) for w in self._by_job.values())
