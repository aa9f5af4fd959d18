"""Helpers of the executor's tests: a reactor pumped by hand, executors that clean up,
and a way to find the real processes of a job (by a marker in their environment).
"""

import os
import select
import signal
import time
import uuid

from daemon_helpers import processes_with, seed_shim_cache
from twisted.internet.task import Clock

from jqueue.exec import AttemptSpec, Executor, containment

SHIMS = ["c", "python"]


class PumpReactor(Clock):
    """A fake reactor: task.Clock's timers plus readers, pumped by the test.

    ``pump`` waits (in real time, with poll) for a reader to become readable, calls its
    doRead, then moves the clock by the real time that passed, so the executor's timers
    fire as they would in a real reactor; a test may also ``advance`` the clock itself.
    """

    def __init__(self):
        super().__init__()
        self.readers = set()

    def addReader(self, reader):
        self.readers.add(reader)

    def removeReader(self, reader):
        self.readers.discard(reader)

    def callInThread(self, func, *args):
        """The reactor's thread pool, synchronous here: func runs at once."""
        func(*args)

    def callFromThread(self, func, *args):
        """From the pool's thread (this one): func runs at once."""
        func(*args)

    def pump(self, wait=0.02):
        before = time.monotonic()
        fds = {reader.fileno(): reader for reader in self.readers}
        if fds:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            ready = [fd for fd, _ in poller.poll(wait * 1000)]
        else:
            time.sleep(wait)
            ready = []
        for fd in ready:
            if fds[fd] in self.readers:
                fds[fd].doRead()
        self.advance(time.monotonic() - before)

    def run_until(self, condition, timeout=20, what="the condition"):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s" % what)
            self.pump()


class Recorder:
    """A listener that keeps every event of an executor."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def of(self, kind, job=None, attempt=None):
        """Events of one kind (for one attempt if given)."""
        found = [e for e in self.events if e[0] == kind]
        if job is None:
            return found
        if kind == "started":
            return [e for e in found if (e[1].job, e[1].attempt) == (job, attempt)]
        return [e for e in found if e[1:3] == (job, attempt)]

    def result(self, job, attempt):
        """The result of an "ended" event of that attempt, or None."""
        ended = self.of("ended", job, attempt)
        return ended[-1][3] if ended else None


class Executors:
    """Makes executors on temporary state directories and cleans up after a test:
    every attempt still running is killed and waited for, every executor stopped, and
    any process still carrying the test's marker is killed (and reported)."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.marker = uuid.uuid4().hex
        self.made = []

    def state_dir(self, name="state"):
        path = str(self.tmp_path / name)
        os.makedirs(path, exist_ok=True)
        return path

    def make(self, shim="c", use_cgroup=True, state_dir=None, allowed_users=(),
             start=True, environ=None, run_dir=None, hooks=None):
        """(executor, reactor, recorder), the executor started unless start=False."""
        state_dir = state_dir or self.state_dir()
        if shim == "c":
            seed_shim_cache(state_dir)
        reactor = PumpReactor()
        executor = Executor(state_dir, reactor, allowed_users=allowed_users,
                            use_cgroup=use_cgroup, shim=shim, environ=environ,
                            run_dir=run_dir, hooks=hooks)
        recorder = Recorder()
        executor.subscribe(recorder)
        self.made.append((executor, reactor))
        if start:
            executor.start()
        return executor, reactor, recorder

    def env(self, **extra):
        """The minimal environment of a test command, with the test's marker."""
        return dict({"PATH": "/usr/bin:/bin", "JQ_JOB_ID": self.marker}, **extra)

    def spec(self, job, command, attempt=1, **fields):
        """An AttemptSpec; a string command runs with /bin/sh -c."""
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
        fields.setdefault("dir", "/")
        fields.setdefault("env", self.env())
        return AttemptSpec(job=job, attempt=attempt, argv=argv, **fields)

    def survivors(self):
        return processes_with_marker(self.marker)

    def close(self):
        for executor, reactor in self.made:
            if executor._lock_fd is None:
                continue
            running = [(i.job, i.attempt) for i in executor.attempts() if i.result is None]
            for job, attempt in running:
                executor.kill(job, attempt)
            try:
                reactor.run_until(lambda e=executor: all(
                    i.result is not None for i in e.attempts()), timeout=15,
                    what="the attempts killed at teardown")
            finally:
                executor.stop()
        for executor, _ in self.made:
            parent = executor._containment.cgroup_root
            assert parent is None or not os.path.exists(parent), \
                "the executor left cgroups behind: %s" % os.listdir(parent)
        left = self.survivors()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return left


def assert_no_cgroup_left(state_dir):
    """The parent cgroup of state_dir's executor is gone (or there is no cgroup v2 here)."""
    try:
        parent = os.path.join(containment.own_cgroup_dir(), containment.parent_name(state_dir))
    except (OSError, LookupError):
        return
    assert not os.path.exists(parent), "cgroups left behind: %s" % os.listdir(parent)


def processes_with_marker(marker):
    """Pids of live processes whose environment has JQ_JOB_ID=marker."""
    return processes_with(marker, "JQ_JOB_ID")


def wait_ended(executor, reactor, recorder, job, attempt=1, timeout=20):
    """Pump until the attempt's "ended" event; its AttemptResult."""
    reactor.run_until(lambda: recorder.result(job, attempt) is not None, timeout,
                      "job %d attempt %d to end" % (job, attempt))
    return recorder.result(job, attempt)


def run_to_end(executors, executor, reactor, recorder, spec, timeout=20):
    """Launch spec, wait for its end; (result, output bytes)."""
    executor.launch(spec)
    result = wait_ended(executor, reactor, recorder, spec.job, spec.attempt, timeout)
    return result, executor.read(spec.job, spec.attempt, 0, 1 << 20)
