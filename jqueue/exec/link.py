"""This machine as a node of the command runner: the runner's link over an in-process Executor.

jq-masterd on a single machine (and a library JobQueue) runs command attempts itself: the
command runner (jqueue.run.commands) reaches the Executor through this link instead of
through a node's RPC. The Executor lives in the same reactor thread as the runner, so
every operation answers at once; the link only translates between the Executor's records
(attrs classes) and the plain dicts the runner and the wire use.
"""

import logging

import attrs
from twisted.internet import defer

from jqueue import errors
from jqueue.exec import resources
from jqueue.exec.attempt import LOST_PREFIX, AttemptSpec

logger = logging.getLogger(__name__)


def result_dict(result):
    """A plain dict of an AttemptResult (None stays None)."""
    if result is None:
        return None
    data = attrs.asdict(result)
    # A lost attempt (its node rebooted, its supervisor died) ends NODE_LOST, not INTERR.
    data["lost"] = bool(result.error and result.error.startswith(LOST_PREFIX))
    return data


def ended_dict(event):
    """The result of an executor's ("ended", job, attempt, result, output_size) event as
    links pass it on: result_dict with the output's final size."""
    return dict(result_dict(event[3]), output_size=event[4])


def info_dict(info):
    """A plain dict of an AttemptInfo."""
    data = attrs.asdict(info, recurse=False)
    data["argv"] = list(info.argv)
    data["result"] = result_dict(info.result)
    return data


def _launch_error(err):
    """What a launch that raised err answers: a CommandError."""
    if isinstance(err, errors.CommandError):
        return err
    if not isinstance(err, OSError):
        logger.error("starting an attempt failed", exc_info=err)
    return errors.command_start_error("cannot start the attempt", err)


class LocalLink:
    """The runner's link to an Executor in this process (see jqueue.run.commands)."""

    #: This machine always answers: no heartbeats.
    heartbeats = False
    reachable = True
    drained = offline = False
    #: Why this node is degraded (its epilog failed: the runner sets it), or None.
    degraded = None

    def __init__(self, executor, name, slots, tags=(), supervisor=None, memory_reserve=0):
        self._executor = executor
        self._supervisor = supervisor
        self.name = name
        self.slots = slots
        self.tags = frozenset(tags)
        self._listener = None
        self._resources = resources.Resources(reserve=memory_reserve)

    @property
    def resources(self):
        """This machine's load and memory (jqueue.exec.resources)."""
        return self._resources.now()

    @property
    def containment(self):
        return self._executor.containment

    def reconfigure(self, slots=None, tags=None, allowed_users=None, memory_reserve=None):
        """This machine's slots, tags, allowed users or memory_reserve changed (a reload;
        None: kept)."""
        if memory_reserve is not None:
            self._resources.set_reserve(memory_reserve)
        if slots is not None:
            self.slots = slots
        if tags is not None:
            self.tags = frozenset(tags)
        if allowed_users is not None:
            self._executor.allow_users(allowed_users)
            if self._supervisor is not None:
                self._supervisor.executor.allow_users(allowed_users)

    def check_user(self, user):
        """The reason commands may not run as user here, or None (checked at submit)."""
        try:
            self._executor.check_user(user)
        except errors.CommandError as err:
            return errors.error_message(err)
        return None

    def subscribe(self, listener):
        self._listener = listener
        self._executor.subscribe(self._event)
        if self._supervisor is not None:
            self._supervisor.subscribe(self._service_event)

    def _service_event(self, event):
        if self._listener is not None:
            self._listener.link_event(self.name, event)

    def _event(self, event):
        if self._listener is None:
            return
        kind = event[0]
        if kind == "started":
            event = ("started", info_dict(event[1]))
        elif kind == "ended":
            event = ("ended", event[1], event[2], ended_dict(event))
        self._listener.link_event(self.name, event)

    def launch(self, spec, done):
        try:
            info = self._executor.launch_soon(AttemptSpec(**spec))
        except (errors.CommandError, OSError) as err:
            done(_launch_error(err))
            return
        if isinstance(info, defer.Deferred):  # its user is being looked up
            info.addCallbacks(lambda found: done(info_dict(found)),
                              lambda failure: done(_launch_error(failure.value)))
            return
        done(info_dict(info))

    def fetch(self, job, attempt, offset, max_bytes, done):
        try:
            data = self._executor.read(job, attempt, offset, max_bytes)
        except OSError as err:
            done(errors.CommandError("cannot read the output: %s" % err))
            return
        done(data)

    def control(self, job, attempt, action, signum, done):
        if action == "signal":
            done(self._executor.signal(job, attempt, signum))
        elif action == "terminate":
            done(self._executor.terminate(job, attempt))
        else:
            done(self._executor.kill(job, attempt))

    def lookup(self, job, attempt, done):
        for info in self._executor.attempts():
            if info.job == job and info.attempt == attempt:
                done(info_dict(info))
                return
        done(None)

    def attempts(self, done):
        done([info_dict(info) for info in self._executor.attempts()])

    def forget(self, job, attempt):
        self._executor.forget(job, attempt)

    def release(self, job, attempt, start, end):
        self._executor.release(job, attempt, start, end)

    # Supervised services (jqueue.exec.supervisor); answers as the remote link's

    def svc_apply(self, entries, remove, full, done):
        self._service_call(done, lambda sup: sup.apply(entries, remove, full))

    def svc_control(self, sid, action, seq, done):
        self._service_call(done, lambda sup: sup.control(sid, action, seq))

    def svc_runs(self, sid, done):
        self._service_call(done, lambda sup: sup.runs(sid))

    def svc_read(self, sid, run, offset, max_bytes, done):
        self._service_call(done, lambda sup: sup.read(sid, run, offset, max_bytes))

    def svc_forget(self, sid, run):
        self._service_call(None, lambda sup: sup.forget(sid, run))

    def svc_release(self, sid, run, start, end):
        self._service_call(None, lambda sup: sup.release(sid, run, start, end))

    def _service_call(self, done, fn):
        if self._supervisor is None:
            answer = errors.CommandError("node %s runs no services" % self.name)
        else:
            try:
                answer = fn(self._supervisor)
            except (errors.GenericError, OSError) as err:
                answer = err if isinstance(err, errors.GenericError) else \
                    errors.CommandError("services: %s" % err)
        if done is not None:
            done(answer)

    def stop(self):
        """The runner stopped: stop watching (the commands and services keep running)."""
        if self._supervisor is not None:
            self._supervisor.stop()
        self._executor.stop()
