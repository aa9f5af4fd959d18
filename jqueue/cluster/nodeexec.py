"""A node's command attempts as RPC methods: jq-noded's side of running command jobs.

The master's command runner reaches a cluster node through these calls (made by
jqueue.cluster.commandlink over the node RPC, mutual TLS). Each is a plain method
``func(peer, body) -> JSON`` over the node's Executor (jqueue.exec), run in the reactor
thread (the Executor's), so none takes a thread; ``exec_poll`` is a long poll answered
with a Deferred-like callback when the node has news, and a launch that runs as another
user than the daemon's answers with a Deferred (the user is looked up in a thread first).

The ``svc_*`` methods do the same over the node's Supervisor (jqueue.exec.supervisor):
the master sends the services placed here and its requests; the supervisor's news
(``svc``, ``svc_output``, ``svc_removed``) joins the same event log.

A request that may start something (a launch; svc_apply and svc_control, whatever they
carry) and says ``stale_after`` (the master's lost_grace) is refused (NodeStalledError:
the master asks again) if this daemon had not run for longer than that when it took the
request: frozen (SIGSTOP, a paused virtual machine), its requests waited in its socket
while the master, hearing nothing, gave its work to other nodes; done now, they would run
a second copy.

Only the master may call them: the node's current configuration and epoch name it
(``is_master(peer)``). The node keeps a short log of its Executor's events, numbered, so
that the master's poller asks "what happened after N" and misses nothing across
reconnections; a master that fell behind the log (or a restarted node, whose numbering
starts again under a new ``session``) re-reads the attempts instead.
"""

import base64
import collections
import itertools
import logging
import os
import time

from twisted.internet import defer

from jqueue import errors, service
from jqueue.cluster.rpc import server as rpc_server
from jqueue.exec import resources
from jqueue.exec.attempt import AttemptSpec
from jqueue.exec.link import ended_dict, info_dict

logger = logging.getLogger(__name__)

#: Events kept for pollers.
EVENT_LOG = 4096
#: Longest exec_poll wait and largest exec_read, as the node accepts them.
MAX_POLL = 60.0
MAX_READ = 4 * 1024 * 1024
METHODS = ("exec_launch", "exec_control", "exec_read", "exec_lookup", "exec_attempts",
           "exec_forget", "exec_poll", "exec_batch", "exec_release")
#: What this node's exec methods can do beyond the first version's, as node_info says
#: (``features``): a master sends exec_batch, and exec_release, only to a node that names
#: it; and a service entry's ``restart_seq`` (svc_restart); a launch with a memory_max
#: (memory_max).
FEATURES = ("exec_batch", "env_base", "release", "svc_restart", "memory_max")
#: The calls exec_batch takes, and how many at most.
BATCHED = ("exec_launch", "exec_forget")
MAX_BATCH = 256
#: Seconds between two ticks of the clock that tells how long the daemon did not run.
TICK = 0.5
#: Largest byte offset of a file (off_t).
MAX_OFFSET = 2 ** 63 - 1
#: The supervised services' methods (jqueue.exec.supervisor), when the node runs them.
SERVICE_METHODS = ("svc_apply", "svc_control", "svc_runs", "svc_read", "svc_forget",
                   "svc_states", "svc_release")
_ENTRY_KEYS = frozenset(["id", "name", "version", "definition", "target", "seq", "run"])
#: A service entry's keys that a master may leave out (one from before them).
_ENTRY_OPTIONAL = frozenset(["restart_seq"])


class NodeExec:
    """The exec_* RPC methods of a node over its Executor (see the module docstring)."""

    def __init__(self, executor, is_master, reactor, slots, supervisor=None,
                 memory_reserve=0):
        self._executor = executor
        self._supervisor = supervisor
        self._is_master = is_master
        self._reactor = reactor
        self.slots = slots
        self.session = base64.b32encode(os.urandom(10)).decode("ascii").lower()
        self._seq = itertools.count(1)
        self._events = collections.deque(maxlen=EVENT_LOG)
        self._last = 0
        self._waiters = []
        self._resources = resources.Resources(reserve=memory_reserve)
        self._ticked = None
        self._last_stall = (float("-inf"), 0.0)  # (when the tick saw it end, its length)
        self._tick()
        executor.subscribe(self._event)
        if supervisor is not None:
            supervisor.subscribe(self._event)

    def handlers(self):
        """{method name: func(peer, body)} of the exec RPC methods (and the services')."""
        names = METHODS + (SERVICE_METHODS if self._supervisor is not None else ())
        return {name: getattr(self, name) for name in names}

    def _check(self, peer):
        if not self._is_master(peer):
            raise errors.FencedError("node %s is not the master; only the master runs "
                                     "commands on nodes" % peer)

    def _tick(self):
        # The reactor's clock: the daemons' is monotonic (jqueue.daemon.common.run).
        now = self._reactor.seconds()
        if self._ticked is not None:
            self._last_stall = (now, now - self._ticked - TICK)
        self._ticked = now
        self._reactor.callLater(TICK, self._tick)

    def _stalled(self):
        """Seconds this daemon had not run, just before now: a stall the tick has not seen
        yet, or the one it saw end less than a tick ago (after SIGCONT the reactor's wait
        fails with EINTR: its timers run before the requests that waited in the socket)."""
        now = self._reactor.seconds()
        ended, length = self._last_stall
        return max(now - self._ticked - TICK, length if now - ended < TICK else 0.0)

    def _check_fresh(self, body):
        """NodeStalledError if this daemon did not run for longer than the request's
        stale_after (see the module docstring) before it took the request."""
        limit = body.get("stale_after")
        if not isinstance(limit, (int, float)) or isinstance(limit, bool):
            return  # a master from before it
        stalled = self._stalled()
        if stalled > limit:
            raise errors.NodeStalledError(
                "node did not run for %.1fs (over the master's lost_grace, %gs): the request "
                "may be stale; ask again" % (stalled, limit))

    # Calls

    def exec_launch(self, peer, body):
        self._check(peer)
        self._check_fresh(body)
        spec = body.get("spec")
        if not isinstance(spec, dict):
            raise errors.ParameterError("'spec' must be an attempt object")
        try:
            spec = AttemptSpec(**spec)
        except (TypeError, ValueError) as err:
            raise errors.ParameterError("'spec' is not an attempt: %s" % err) from None
        info = self._executor.launch_soon(spec)
        if isinstance(info, defer.Deferred):  # its user is being looked up, in a thread
            return info.addCallback(info_dict)
        return info_dict(info)

    def exec_batch(self, peer, body):
        """Several launches and forgets in one call, run in order: ``{"calls": [[method,
        body], ...]}`` -> ``[[true, result] or [false, encoded error], ...]``, one per call
        (a call's error is its own; the others run)."""
        self._check(peer)
        calls = body.get("calls")
        if (not isinstance(calls, list) or not 0 < len(calls) <= MAX_BATCH
                or not all(isinstance(c, list) and len(c) == 2 and c[0] in BATCHED
                           and isinstance(c[1], dict) for c in calls)):
            raise errors.ParameterError(
                "'calls' must be a list of 1 to %d [method, body] pairs, each method one of "
                "%s" % (MAX_BATCH, ", ".join(BATCHED)))
        return self._run_batch(peer, calls, [])

    def _run_batch(self, peer, calls, answers):
        """exec_batch's answers, calls run from the len(answers)-th on: a list, or a
        Deferred of it once a call answers with one (a launch whose user is looked up)."""
        for method, call_body in calls[len(answers):]:
            try:
                answer = getattr(self, method)(peer, call_body)
            except errors.GenericError as err:
                answers.append([False, errors.encode_exception(err)])
                continue
            if isinstance(answer, defer.Deferred):
                answer.addCallbacks(lambda value: answers.append([True, value]),
                                    lambda failure: answers.append(_batch_error(failure)))
                return answer.addCallback(lambda _: self._run_batch(peer, calls, answers))
            answers.append([True, answer])
        return answers

    def exec_control(self, peer, body):
        self._check(peer)
        job, attempt = _attempt_of(body)
        action = body.get("action")
        if action == "signal":
            signum = body.get("signal")
            if not isinstance(signum, int) or isinstance(signum, bool) or not 1 <= signum <= 31:
                raise errors.ParameterError("'signal' must be a signal number")
            return list(self._executor.signal(job, attempt, signum))
        if action == "terminate":
            return list(self._executor.terminate(job, attempt))
        if action == "kill":
            return list(self._executor.kill(job, attempt))
        raise errors.ParameterError("'action' must be signal, terminate or kill")

    def exec_read(self, peer, body):
        self._check(peer)
        job, attempt = _attempt_of(body)
        offset = _offset(body, "offset")
        size = min(_count(body, "max_bytes"), MAX_READ)
        data = self._executor.read(job, attempt, offset, size)
        return rpc_server.Bytes(data)

    def exec_lookup(self, peer, body):
        self._check(peer)
        job, attempt = _attempt_of(body)
        for info in self._executor.attempts():
            if info.job == job and info.attempt == attempt:
                return info_dict(info)
        return None

    def exec_attempts(self, peer, body):
        self._check(peer)
        return [info_dict(info) for info in self._executor.attempts()]

    def exec_forget(self, peer, body):
        self._check(peer)
        job, attempt = _attempt_of(body)
        self._executor.forget(job, attempt)
        return True

    def exec_release(self, peer, body):
        """The master needs no more of an attempt's output from ``start`` to ``end``: its
        blocks here are freed."""
        self._check(peer)
        job, attempt = _attempt_of(body)
        self._executor.release(job, attempt, _offset(body, "start"), _offset(body, "end"))
        return True

    # Services

    def svc_apply(self, peer, body):
        self._check(peer)
        self._check_fresh(body)
        entries = body.get("entries")
        if not isinstance(entries, list) or not all(_is_entry(e) for e in entries):
            raise errors.ParameterError("'entries' must be a list of service entries")
        remove = body.get("remove", [])
        if not isinstance(remove, list) or not all(_is_count(v) for v in remove):
            raise errors.ParameterError("'remove' must be a list of service ids")
        checked = []
        for entry in entries:
            try:
                definition = service.check_definition(entry["definition"])
            except errors.OpPrereqError as err:
                raise errors.ParameterError(errors.error_message(err)) from None
            checked.append(dict(entry, definition=definition))
        return self._supervisor.apply(checked, remove, bool(body.get("full")))

    def svc_control(self, peer, body):
        self._check(peer)
        self._check_fresh(body)
        return self._supervisor.control(_count(body, "id"), body.get("action"),
                                        _count(body, "seq"))

    def svc_runs(self, peer, body):
        self._check(peer)
        return self._supervisor.runs(_count(body, "id"))

    def svc_read(self, peer, body):
        self._check(peer)
        sid, run, offset = _count(body, "id"), _count(body, "run"), _offset(body, "offset")
        size = min(_count(body, "max_bytes"), MAX_READ)
        return rpc_server.Bytes(self._supervisor.read(sid, run, offset, size))

    def svc_forget(self, peer, body):
        self._check(peer)
        self._supervisor.forget(_count(body, "id"), _count(body, "run"))
        return True

    def svc_release(self, peer, body):
        """The master needs no more of a run's output from ``start`` to ``end`` (past its
        service's log's cap): its blocks here are freed."""
        self._check(peer)
        sid, run = _count(body, "id"), _count(body, "run")
        start, end = _offset(body, "start"), _offset(body, "end")
        self._supervisor.release(sid, run, start, end)
        return True

    def svc_states(self, peer, body):
        self._check(peer)
        return self._supervisor.states()

    def exec_poll(self, peer, body):
        """Events after ``after`` of ``session``: at once if any, else within ``timeout``.

        Answers {"session", "events": [[seq, event], ...], "reset": bool, "last", "time",
        "resources"}; reset means the caller's cursor is from another session or fell out
        of the log: re-read attempts; time is this node's clock when it answered (the
        master compares it with its own); resources its load and memory
        (jqueue.exec.resources).
        """
        self._check(peer)
        after = _count(body, "after")
        timeout = body.get("timeout", 0)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
            raise errors.ParameterError("'timeout' must be seconds >= 0")
        answer = self._answer(body.get("session"), after)
        if answer["events"] or answer["reset"] or not timeout:
            return answer
        from twisted.internet import defer
        deferred = defer.Deferred()
        waiter = [deferred, body.get("session"), after, None]
        waiter[3] = self._reactor.callLater(min(timeout, MAX_POLL), self._expire, waiter)
        self._waiters.append(waiter)
        return deferred

    # Events

    def set_memory_reserve(self, reserve):
        """This machine's memory_reserve changed (a reload): the next answers say it."""
        self._resources.set_reserve(reserve)

    def node_changed(self, info):
        """This node's settings changed (a reload of jq-noded: {"slots": N}): the master
        hears it as an event (a master that does not know the event reads it at the next
        node_info)."""
        self._event(("node", info))

    def _event(self, event):
        kind = event[0]
        if kind == "started":
            wire = ["started", info_dict(event[1])]
        elif kind == "ended":
            wire = ["ended", event[1], event[2], ended_dict(event)]
        elif kind == "svc":
            wire = ["svc", event[1]]
        else:
            wire = list(event)
        seq = next(self._seq)
        self._events.append((seq, wire))
        self._last = seq
        waiters, self._waiters = self._waiters, []
        for deferred, session, after, timer in waiters:
            if timer.active():
                timer.cancel()
            deferred.callback(self._answer(session, after))

    def _answer(self, session, after):
        if session != self.session or (self._events and after < self._events[0][0] - 1):
            return {"session": self.session, "events": [], "reset": True, "last": self._last,
                    "time": time.time(), "resources": self._resources.now()}
        # Sequence numbers are consecutive: the events after ``after`` are the last
        # ``_last - after`` of the log, taken from its end (a poll costs what it gets, not a
        # pass over the whole log).
        events = [[seq, event] for seq, event in
                  itertools.islice(reversed(self._events), max(0, self._last - after))]
        events.reverse()
        return {"session": self.session, "events": events, "reset": False,
                "last": self._last, "time": time.time(), "resources": self._resources.now()}

    def _expire(self, waiter):
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            deferred, session, after, _ = waiter
            deferred.callback(self._answer(session, after))


def _count(body, key):
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.ParameterError("'%s' must be a non-negative integer" % key)
    return value


def _offset(body, key):
    """A byte offset in a file: a count below 2**63 (off_t's end; pread and fallocate
    overflow past it)."""
    value = _count(body, key)
    if value > MAX_OFFSET:
        raise errors.ParameterError("'%s' must be a byte offset below 2**63, not %d" % (
            key, value))
    return value


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_entry(entry):
    """Whether a value has the shape of a service entry (its definition is checked
    apart)."""
    return (isinstance(entry, dict) and _ENTRY_KEYS <= set(entry) <= _ENTRY_KEYS | _ENTRY_OPTIONAL
            and _is_count(entry["id"]) and _is_count(entry["version"])
            and _is_count(entry["seq"]) and _is_count(entry["run"])
            and _is_count(entry.get("restart_seq", 0))
            and isinstance(entry["name"], str) and isinstance(entry["definition"], dict)
            and entry["target"] in ("started", "stopped"))


def _batch_error(failure):
    """A batched call's answer for its failure (a GenericError; others fail the batch)."""
    failure.trap(errors.GenericError)
    return [False, errors.encode_exception(failure.value)]


def _attempt_of(body):
    return _count(body, "job"), _count(body, "attempt")
