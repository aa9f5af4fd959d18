"""Test doubles for the LUXI server: a scriptable backend, a fake reactor, a fake pool."""

import collections

from twisted.internet.task import Clock
from twisted.python.failure import Failure

from jqueue import constants


class FakeWatch:
    """The handle of one FakeBackend.watch_job call; the test answers or inspects it."""

    def __init__(self, args, callback):
        self.args = args
        self.callback = callback
        self.canceled = False

    def cancel(self):
        """Withdraw the waiter (recorded for the test)."""
        self.canceled = True


class FakeBackend:
    """A JobQueue stand-in that records calls and answers as the test scripts it.

    ``results[name]`` is returned by method name (default: a plain answer), and
    ``failures[name]`` is raised instead when set. watch_job records a FakeWatch in
    ``watches``, or answers at once with ``immediate_watch`` when that is not None.
    """

    def __init__(self):
        self.calls = []
        self.results = {}
        self.failures = {}
        self.watches = []
        self.immediate_watch = None
        self.drained = False

    def _call(self, name, *args, default=None):
        self.calls.append((name,) + args)
        if name in self.failures:
            raise self.failures[name]
        return self.results.get(name, default)

    def submit_job(self, ops, drained_ok=False, token=None, owner=None, parent=None,
                   not_before=None, start_in=None, notify=None):
        if owner is not None:
            return self._call("submit_job", ops, drained_ok, token, owner, default=1)
        extra = _given(parent=parent, not_before=not_before, start_in=start_in,
                       notify=notify)
        if token is not None or extra:
            return self._call("submit_job", ops, drained_ok, token, *extra, default=1)
        return self._call("submit_job", ops, drained_ok, default=1)

    def submit_job_to_drained_queue(self, ops, token=None, **options):
        extra = _given(**options)
        if token is not None or extra:
            return self._call("submit_job_to_drained_queue", ops, token, *extra, default=1)
        return self._call("submit_job_to_drained_queue", ops, default=1)

    def submit_job_nowait(self, ops, drained_ok=False, token=None, options=None, owner=None,
                          defer_commit=False):
        """Recorded as submit_job (or submit_job_to_drained_queue), with the token, owner
        and options if given; nothing to wait for."""
        if owner is not None:
            return self._call("submit_job", ops, drained_ok, token, owner, default=1), None
        if token is not None or options:
            return self._call("submit_job", ops, drained_ok, token, *_given(**options or {}),
                              default=1), None
        if drained_ok:
            return self.submit_job_to_drained_queue(ops), None
        return self.submit_job(ops), None

    def submit_nowait(self, jobs, drained_ok=False, single=False, tokens=None, options=None,
                      owner=None, defer_commit=False):
        """Recorded as submit_many_jobs (with the tokens and options if given); nothing to
        wait for."""
        return self.submit_many_jobs(jobs, drained_ok, tokens, options), None

    def commit_pending(self, durable_here=None):
        """Nothing is ever left to commit here (no batch to wait for)."""

    @property
    def ack_timeout(self):
        """No replication: nothing times out."""
        return None

    def submit_many_jobs(self, jobs, drained_ok=False, tokens=None, owner=None, options=None):
        answer = [(True, n + 1) for n in range(len(jobs))]
        if options is not None:
            return self._call("submit_many_jobs", jobs, drained_ok, tokens, options,
                              default=answer)
        if tokens is not None:
            return self._call("submit_many_jobs", jobs, drained_ok, tokens, default=answer)
        return self._call("submit_many_jobs", jobs, drained_ok, default=answer)

    def cancel_job(self, job_id, kill=False):
        return self._call("cancel_job", job_id, kill, default=(True, "Job %s canceled" % job_id))

    def change_job_priority(self, job_id, priority):
        return self._call("change_job_priority", job_id, priority, default=(True, "changed"))

    def hold_job(self, job_id):
        return self._call("hold_job", job_id, default=(True, "Job %s held" % job_id))

    def release_job(self, job_id):
        return self._call("release_job", job_id, default=(True, "Job %s released" % job_id))

    def reset_job(self, job_id):
        return self._call("reset_job", job_id, default=(True, "Job %s reset" % job_id))

    def retry_job(self, job_id):
        return self._call("retry_job", job_id, default=(True, "Job %s queued" % job_id))

    def resolve_job(self, reference):
        return self._call("resolve_job", reference, default=7)

    def purge_jobs(self, age, timeout=None):
        return self._call("purge_jobs", age, timeout,
                          default={"purged": 0, "bytes_freed": 0, "done": True})

    def archive_job(self, job_id):
        return self._call("archive_job", job_id, default=True)

    def auto_archive_jobs(self, age, timeout):
        return self._call("auto_archive_jobs", age, timeout, default=(0, 0))

    def query_jobs(self, job_ids, fields):
        return self._call("query_jobs", job_ids, fields, default=[])

    def wait_for_job_changes(self, job_id, fields, prev_job_info, prev_log_serial, timeout):
        return self._call("wait_for_job_changes", job_id, fields, prev_job_info,
                          prev_log_serial, timeout, default=constants.JOB_NOTCHANGED)

    def watch_job(self, job_id, fields, prev_job_info, prev_log_serial, callback):
        self._call("watch_job", job_id, fields, prev_job_info, prev_log_serial)
        if self.immediate_watch is not None:
            callback(self.immediate_watch)
            return None
        watch = FakeWatch((job_id, fields, prev_job_info, prev_log_serial), callback)
        self.watches.append(watch)
        return watch

    # Supervised services

    def add_services(self, definitions, start=False):
        return self._call("add_services", definitions, start,
                          default=[{"name": d.get("name")} for d in definitions])

    def modify_service(self, name, changes):
        return self._call("modify_service", name, changes, default={"name": name})

    def remove_service(self, name):
        return self._call("remove_service", name, default="service %s removed" % name)

    def control_service(self, name, action):
        return self._call("control_service", name, action, default=(True, action))

    def query_services(self, names=None):
        return self._call("query_services", names, default=[])

    def read_service_log(self, name, offset, max_bytes):
        return self._call("read_service_log", name, offset, max_bytes,
                          default={"data": b"", "offset": offset, "eof": True})

    def watch_service_log(self, name, offset, max_bytes, callback):
        self._call("watch_service_log", name, offset, max_bytes)
        callback(self.immediate_watch or {"data": b"", "offset": offset, "eof": True})

    def read_job_log(self, job_id, offset, max_bytes):
        return self._call("read_job_log", job_id, offset, max_bytes,
                          default={"data": b"", "offset": offset, "eof": True})

    def watch_job_log(self, job_id, offset, max_bytes, callback):
        self._call("watch_job_log", job_id, offset, max_bytes)
        if self.immediate_watch is not None:
            callback(self.immediate_watch)
            return None
        watch = FakeWatch((job_id, offset, max_bytes), callback)
        self.watches.append(watch)
        return watch

    def read_events(self, since, flt=None, limit=1000):
        return self._call("read_events", since, flt,
                          default={"events": [], "last": since, "gap": False})

    def watch_events(self, since, flt, callback):
        self._call("watch_events", since, flt)
        if self.immediate_watch is not None:
            callback(self.immediate_watch)
            return None
        watch = FakeWatch((since, flt), callback)
        self.watches.append(watch)
        return watch

    def signal_job(self, job_id, signum):
        return self._call("signal_job", job_id, signum, default=(True, "signaled"))

    def query_running(self, node=None):
        return self._call("query_running", node, default=[])

    def set_drain_flag(self, flag):
        self._call("set_drain_flag", flag)
        self.drained = flag
        return True

    @property
    def drain_flag(self):
        return self.drained


def _given(**options):
    """The values of the options given (not None), by name, as extra recorded arguments."""
    return tuple("%s=%s" % (k, v) for k, v in sorted(options.items()) if v is not None)


class FakeReactor(Clock):
    """A Clock whose callFromThread calls wait (from any thread) until run_from_threads()."""

    def __init__(self):
        super().__init__()
        self._from_threads = collections.deque()

    def callFromThread(self, f, *args, **kwargs):
        self._from_threads.append((f, args, kwargs))

    def run_from_threads(self):
        """Run the calls queued by callFromThread (and those they queue); return how many."""
        count = 0
        while self._from_threads:
            f, args, kwargs = self._from_threads.popleft()
            f(*args, **kwargs)
            count += 1
        return count


class FakeThreadPool:
    """A ThreadPool stand-in running calls in the caller's thread, at once or when told.

    With ``hold`` set, calls wait in ``held`` until run_held(); this is how a test keeps
    a request in flight.
    """

    def __init__(self, hold=False):
        self.hold = hold
        self.held = collections.deque()
        self.started = False

    def start(self):
        self.started = True

    def stop(self):
        self.started = False

    def callInThreadWithCallback(self, on_result, func, *args, **kwargs):
        self.held.append((on_result, func, args, kwargs))
        if not self.hold:
            self.run_held()

    def run_held(self, limit=None):
        """Run held calls (all, or up to limit); return how many ran."""
        count = 0
        while self.held and (limit is None or count < limit):
            on_result, func, args, kwargs = self.held.popleft()
            try:
                result = func(*args, **kwargs)
            except BaseException:
                on_result(False, Failure())
            else:
                on_result(True, result)
            count += 1
        return count
