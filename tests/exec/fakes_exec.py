"""A fake Executor for the supervisor's unit tests: runs that start and end when told.

FakeExecutor has the Executor's methods the supervisor uses (a test compares their
signatures with the real class), keeps its attempts in memory and runs nothing: a test
reports a run's pid (``exec``), its output (``output``) and its end (``end``), and reads
what the supervisor asked (``launched``, ``signals``, ``kills``, ``forgotten``). Events go
to the listeners as the real executor sends them.
"""

import attrs
from twisted.internet import defer

from jqueue import errors
from jqueue.exec.attempt import AttemptInfo, AttemptResult


class FakeExecutor:
    """An Executor whose runs live only in memory (see the module docstring)."""

    def __init__(self, clock, attempts=()):
        self._clock = clock
        self._attempts = {(i.job, i.attempt): i for i in attempts}
        self._listeners = []
        self.started = False
        self.launched = []          # AttemptSpecs, in order
        self.signals = []           # (job, attempt, signum)
        self.kills = []             # (job, attempt)
        self.forgotten = []         # (job, attempt)
        self.released = []          # (job, attempt, start, end)
        self.refuse = None          # a CommandError message (or an error) launch raises
        self.lookups = []           # (user name, Deferred) of users being looked up
        self.users = []             # what launch was given to run as, in order

    def start(self):
        self.started = True
        return [self._attempts[key] for key in sorted(self._attempts)]

    def stop(self):
        self.started = False
        self._listeners = []

    def subscribe(self, listener):
        self._listeners.append(listener)

    def user_soon(self, name):
        """None for no user; else a Deferred the test fires (see lookups)."""
        if name is None:
            return None
        found = defer.Deferred()
        self.lookups.append((name, found))
        return found

    def launch(self, spec, user=None):
        self.users.append(user)
        key = (spec.job, spec.attempt)
        if key in self._attempts:
            return self._attempts[key]
        if isinstance(self.refuse, Exception):
            raise self.refuse
        if self.refuse:
            raise errors.CommandError(self.refuse)
        self.launched.append(spec)
        info = AttemptInfo(job=spec.job, attempt=spec.attempt, pid=None, pgid=None,
                           cgroup=None, started=self._clock.seconds(), deadline=None,
                           argv=list(spec.argv), dir=spec.dir, run_as=spec.run_as,
                           output_size=0, result=None)
        self._attempts[key] = info
        return info

    def signal(self, job, attempt, signum):
        if not self._running(job, attempt):
            return False, "job %d attempt %d is not running" % (job, attempt)
        self.signals.append((job, attempt, signum))
        return True, "sent"

    def kill(self, job, attempt):
        if not self._running(job, attempt):
            return False, "job %d attempt %d is not running" % (job, attempt)
        self.kills.append((job, attempt))
        return True, "killing"

    def terminate(self, job, attempt):
        return self.kill(job, attempt)

    def read(self, job, attempt, offset, max_bytes):
        return b""

    def forget(self, job, attempt):
        info = self._attempts.get((job, attempt))
        if info is not None and info.result is None:
            raise errors.CommandError("job %d attempt %d is still running" % (job, attempt))
        self._attempts.pop((job, attempt), None)
        self.forgotten.append((job, attempt))

    def release(self, job, attempt, start, end):
        self.released.append((job, attempt, start, end))

    def attempts(self, job=None):
        return [self._attempts[key] for key in sorted(self._attempts)
                if job is None or key[0] == job]

    def check_user(self, name):
        return None

    # What a test does

    def last(self):
        """(job, attempt) of the latest launch."""
        spec = self.launched[-1]
        return spec.job, spec.attempt

    def exec(self, job, attempt, pid):
        """The run's command exec'd with pid."""
        info = attrs.evolve(self._attempts[(job, attempt)], pid=pid, pgid=pid)
        self._attempts[(job, attempt)] = info
        self._emit(("started", info))

    def output(self, job, attempt, size):
        info = attrs.evolve(self._attempts[(job, attempt)], output_size=size)
        self._attempts[(job, attempt)] = info
        self._emit(("output", job, attempt, size))

    def end(self, job, attempt, exit_status=None, signal=None, error=None, exec_error=None,
            **usage):
        """The run ended (every process of it gone); usage: max_rss, cpu_time,
        memory_exceeded."""
        result = AttemptResult(exit_status=exit_status, signal=signal, timed_out=False,
                               error=error, ended=self._clock.seconds(),
                               exec_error=exec_error, **usage)
        self._attempts[(job, attempt)] = attrs.evolve(self._attempts[(job, attempt)],
                                                      result=result)
        self._emit(("ended", job, attempt, result,
                    self._attempts[(job, attempt)].output_size))

    def _running(self, job, attempt):
        info = self._attempts.get((job, attempt))
        return info is not None and info.result is None

    def _emit(self, event):
        for listener in list(self._listeners):
            listener(event)
