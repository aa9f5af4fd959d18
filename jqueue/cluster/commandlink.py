"""The command runner's link to a cluster node: its jq-noded's exec_* RPC methods.

In a cluster, jq-masterd's command runner (jqueue.run.commands) starts, follows and stops
attempts on a node through that node's jq-noded (jqueue.cluster.nodeexec), over the node
RPC (mutual TLS). The RPC client is blocking and makes one call at a time, so a link has
two threads of its own per node, never one per command: a *caller* running the runner's
requests in order (launch, read, signal, look up, forget), and a *poller* keeping one
long poll (``exec_poll``) open for the node's events. Answers and events reach the runner
in its host thread. After a full piece of output the caller asks for the next
``READ_AHEAD`` pieces at once, pipelined (the node's output only grows: bytes at an
offset never change), and reads their answers when the runner fetches them: the node
reads and sends a piece while this side takes in the last one and the runner journals
the one before, instead of each waiting for the other. The answers of calls sent ahead
are read before any other call (one connection, answers in order); an empty piece (the
end, so far) is never kept.
Launches and forgets waiting in a row go in one ``exec_batch`` call, to a node that says
it takes them (node_info's ``features``, asked before a first launch or services' set;
an older node gets them one by one). A node that does not say it completes a command's
environment itself (``env_base``: a jq-noded from before it, during a rolling upgrade)
gets it complete, built here as the first versions did (the minimal base with this
machine's passwd entry, or jq-masterd's environment): rather than a launch it would
refuse. A command with a ``memory_max`` is refused here (INTERR, named) for a node that
does not say it keeps one: it would refuse the spec's key as malformed, not as the node's
lack.

A poll that fails (the node is down or unreachable) is retried every ``RETRY`` seconds; a
node that answers again after its jq-noded restarted (a new event session) or after the
poller fell behind its event log is re-read: the link reports every attempt the node holds
as it stands now (its output size and, if it ended, its result), so that nothing is missed.
"""

import base64
import collections
import logging
import os
import queue as queue_module
import threading
import time

from jqueue import constants, errors
from jqueue.cluster import membership
from jqueue.cluster.nodeexec import BATCHED, MAX_BATCH
from jqueue.cluster.rpc import client as rpc_client
from jqueue.exec import resources
from jqueue.exec.executor import complete_environment

logger = logging.getLogger(__name__)

#: Roughly how much a batch of launches may carry (see RemoteLink._take_batch).
BATCH_BYTES = 1024 * 1024

#: Pieces of output asked for ahead of the runner's fetches, after a full one.
READ_AHEAD = 2
#: Pieces received ahead kept at most (the oldest go first): a few MiB per node.
AHEAD_KEEP = 2 * READ_AHEAD

#: Seconds between two failed polls. A poll waits at most the heartbeat interval on the
#: node: each answer is a heartbeat (jqueue.run.commands follows them).
RETRY = 2.0


def _read_key(body):
    return body["job"], body["attempt"], body["offset"], body["max_bytes"]


def _output_bytes(answer):
    """A piece of output as a node answers it: bytes, or {"data": base64} from an older
    jq-noded."""
    if isinstance(answer, bytes):
        return answer
    return base64.b64decode(answer["data"], validate=True)


class RemoteLink:
    """A node of the command runner reached through its jq-noded (see the module docstring)."""

    #: Until the node said how it contains attempts (node_info; an older node never does).
    containment = "on the node (see jqctl running --node)"
    #: The runner follows this node's heartbeats (its answers to exec_poll).
    heartbeats = True
    #: Seconds a node may not have run before it refuses this master's launches and
    #: service starts as stale (the runner's lost_grace; jqueue.cluster.nodeexec).
    stale_after = None

    def __init__(self, name, slots, client_factory, tags=(), drained=False, offline=False,
                 ping_interval=2.0):
        """client_factory() makes an RPC client for the node (two are made: calls, polls)."""
        self.name = name
        self.slots = slots
        self.tags = frozenset(tags)
        self.drained, self.offline = drained, offline
        self.degraded = None  # why (its epilog failed: the runner sets it), or None
        self.reachable = True
        self.last_heard = None
        #: The node's clock minus this one's at its last answer (seconds; None: unknown).
        self.clock_skew = None
        #: The node's load and memory at its last heartbeat (jqueue.exec.resources; None:
        #: not heard yet, or an older node).
        self.resources = None
        self._clock_off = False
        self._ping_interval = ping_interval
        self._factory = client_factory
        self._listener = None
        self._host = None
        self._calls = queue_module.Queue()
        #: What the node's exec methods can do (node_info's features; None until it said).
        self.features = None
        self._stopped = threading.Event()
        self._threads = []
        self._clients = set()  # the RPC clients of the two threads, which stop() aborts
        self._clients_lock = threading.Lock()

    def subscribe(self, listener):
        """Start the link: listener (the runner) hears of the node's attempts."""
        self._listener = listener
        self._host = listener.host
        self.last_heard = self._host.seconds()
        for target, kind in ((self._call_loop, "calls"), (self._poll_loop, "poll")):
            thread = threading.Thread(target=target, name="jq-node-%s-%s" % (self.name, kind),
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self):
        """Stop the threads: the calls in flight fail at once (their connections shut
        down); join() waits for the threads to end."""
        self._stopped.set()
        self._calls.put(None)
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            client.close()  # thread-safe: a call in progress in another thread fails

    def join(self, deadline):
        """Wait for the stopped threads until deadline (time.monotonic()): a daemon that
        goes on to exit must not leave one inside a TLS read of a node that does not
        answer while the interpreter finalizes (an abort at exit, seen with a frozen
        node). A thread still connecting (not abortable) is left at the deadline."""
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _new_client(self):
        """An RPC client for the node, known to stop() until _drop(client)."""
        client = self._factory()
        with self._clients_lock:
            self._clients.add(client)
        if self._stopped.is_set():  # stop() came while it was made: it missed it
            client.close()
        return client

    def _drop(self, client):
        """Close client and forget it (None, for the caller's variable)."""
        client.close()
        with self._clients_lock:
            self._clients.discard(client)

    # The runner's operations: queued for the caller thread

    def launch(self, spec, done):
        self._submit("exec_launch", self._fresh({"spec": spec}), done)

    def fetch(self, job, attempt, offset, max_bytes, done):
        self._submit("exec_read", {"job": job, "attempt": attempt, "offset": offset,
                                   "max_bytes": max_bytes},
                     done, _output_bytes)

    def control(self, job, attempt, action, signum, done):
        body = {"job": job, "attempt": attempt, "action": action}
        if signum is not None:
            body["signal"] = signum
        self._submit("exec_control", body, done, tuple)

    def lookup(self, job, attempt, done):
        self._submit("exec_lookup", {"job": job, "attempt": attempt}, done)

    def attempts(self, done):
        self._submit("exec_attempts", {}, done)

    def forget(self, job, attempt):
        self._submit("exec_forget", {"job": job, "attempt": attempt}, None)

    def release(self, job, attempt, start, end):
        """Tell the node it may free the attempt's output from start to end (a node that
        does not name ``release`` in its features keeps it until the attempt is forgotten)."""
        self._release("exec_release", {"job": job, "attempt": attempt, "start": start,
                                       "end": end})

    def _release(self, method, body):
        if self.features and "release" in self.features:
            self._submit(method, body, None)

    # Supervised services: the node's svc_* methods (jqueue.cluster.nodeexec)

    def svc_apply(self, entries, remove, full, done):
        self._submit("svc_apply", self._fresh({"entries": entries, "remove": list(remove),
                                               "full": bool(full)}), done)

    def _fresh(self, body):
        """body saying stale_after, when the runner set it."""
        if self.stale_after is not None:
            body["stale_after"] = self.stale_after
        return body

    def svc_control(self, sid, action, seq, done):
        self._submit("svc_control", self._fresh({"id": sid, "action": action, "seq": seq}),
                     done)

    def svc_runs(self, sid, done):
        self._submit("svc_runs", {"id": sid}, done)

    def svc_read(self, sid, run, offset, max_bytes, done):
        self._submit("svc_read", {"id": sid, "run": run, "offset": offset,
                                  "max_bytes": max_bytes},
                     done, _output_bytes)

    def svc_forget(self, sid, run):
        self._submit("svc_forget", {"id": sid, "run": run}, None)

    def svc_release(self, sid, run, start, end):
        """As release, for a service's run."""
        self._release("svc_release", {"id": sid, "run": run, "start": start, "end": end})

    def _submit(self, method, body, done, convert=None):
        self._calls.put((method, body, done, convert))

    def _call_loop(self):
        client = None
        ahead = _Ahead()
        held = None  # the call after a batch, taken from the queue while filling it
        while not self._stopped.is_set():
            item, held = (held, None) if held is not None else (self._calls.get(), None)
            if item is None:
                break
            method, body, done, convert = item
            if method == "exec_read":
                client = self._read(client, ahead, body, done, convert)
                continue
            client = self._collect(client, ahead)
            if method in ("exec_launch", "svc_apply") and self.features is None:
                client, failure = self._ask_features(client)
                if failure is not None:  # the launch would fail the same way: one wait
                    if done is not None:
                        self._host.call(done, failure)
                    continue
            refusal = self._refusal(method, body)
            if refusal is not None:
                if done is not None:
                    self._host.call(done, refusal)
                continue
            if self.features and "exec_batch" in self.features and method in BATCHED:
                batch, held = self._take_batch(item)
                if len(batch) > 1:
                    client = self._call_batch(client, batch)
                    continue
            client, answer = self._call(client, method, self._for_node(method, body), convert)
            if done is not None:
                self._host.call(done, answer)
        if client is not None:
            self._drop(client)

    def _read(self, client, ahead, body, done, convert):
        """An exec_read: answered from the pieces read ahead, or called; after a full
        piece, the next ones are asked for (see the module docstring). The client to use
        next."""
        key = _read_key(body)
        if key in ahead.sent:
            client = self._collect(client, ahead, key)
        answer = ahead.received.pop(key, None)
        if answer is None:
            client = self._collect(client, ahead)
            client, answer = self._call(client, "exec_read", body, convert)
        if done is not None:
            self._host.call(done, answer)
        if (isinstance(answer, bytes) and len(answer) == body["max_bytes"]
                and self._calls.empty()):
            # A full piece: more output is likely there, and the runner's next fetches ask
            # for exactly the pieces that follow it (their answers are read before any
            # other call: none is delayed for them that waits now).
            for step in range(1, READ_AHEAD + 1):
                following = dict(body, offset=body["offset"] + step * len(answer))
                if not ahead.has(_read_key(following)):
                    client = self._send_ahead(client, ahead, following)
        return client

    def _send_ahead(self, client, ahead, body):
        try:
            client = client or self._new_client()
            client.send_pipelined("exec_read", body)
        except (errors.GenericError, OSError) as err:
            logger.debug("node %s: exec_read ahead: %s", self.name, err)
            ahead.sent.clear()  # lost with the connection
            return self._drop(client) if client is not None else None
        ahead.sent.append(_read_key(body))
        return client

    def _collect(self, client, ahead, until=None):
        """Read the answers of the reads sent ahead, up to until's (all: None), keeping
        the pieces; the client to use next."""
        heard = False
        while ahead.sent:
            key = ahead.sent.popleft()
            try:
                data = _output_bytes(client.receive_pipelined("exec_read"))
                heard = True
            except errors.RemoteError as err:  # the connection failed: the rest is lost
                logger.debug("node %s: exec_read ahead: %s", self.name, err)
                ahead.sent.clear()
                client = self._drop(client)
                break
            except (errors.GenericError, ValueError, TypeError, KeyError):
                continue  # answered, with an error: asked again if the runner wants it
            if data:  # never an end of output ahead of time
                ahead.keep(key, data)
            if key == until:
                break
        if heard:
            self._host.call(self._heard)
        return client

    def _take_batch(self, first):
        """([first and the batchable calls queued after it], the next call or None).

        A batch stays under BATCH_BYTES of arguments and environment (roughly: what its
        body weighs), far below what a node takes in one call; a call alone above it
        goes alone, as it would to an older node."""
        batch, size = [first], _weight(first[1])
        while len(batch) < MAX_BATCH and size < BATCH_BYTES:
            try:
                item = self._calls.get_nowait()
            except queue_module.Empty:
                return batch, None
            if item is None or item[0] not in BATCHED:
                return batch, item
            weight = _weight(item[1])
            if size + weight > BATCH_BYTES or self._refusal(item[0], item[1]) is not None:
                return batch, item
            batch.append(item)
            size += weight
        return batch, None

    def _ask_features(self, client):
        """Ask the node what it can do before its first launch (the poller asks too, at
        each connection): (the client to use next, the call's error or None)."""
        client, info = self._call(client, "node_info", {}, None)
        if isinstance(info, Exception):
            return client, info
        self._learn(info)
        return client, None

    def _refusal(self, method, body):
        """The CommandError of a launch this node cannot keep as asked, or None."""
        spec = body.get("spec") if method == "exec_launch" else None
        if (isinstance(spec, dict) and spec.get("memory_max") and self.features is not None
                and "memory_max" not in self.features):
            return errors.CommandError(
                "node %s cannot keep a memory_max: its jq-noded is of an earlier version"
                % self.name)
        return None

    def _for_node(self, method, body):
        """body as this node takes it: a launch's environment completed here for a node
        that does not complete it (see the module docstring); services' entries without
        restart_seq for a node that does not take it (one restart asked while it did not
        answer is then only a start for it, as it always was), and their definitions
        without memory_max for a node that does not keep one (it would refuse the whole
        set for the unknown key; a service with a limit runs there without it, logged)."""
        if method == "svc_apply":
            features = self.features or ()
            return dict(body, entries=[self._entry_for_node(entry, features)
                                       for entry in body["entries"]])
        spec = body.get("spec") if method == "exec_launch" else None
        if (not isinstance(spec, dict) or "env_base" not in spec
                or (self.features is not None and "env_base" in self.features)):
            return body
        spec = dict(spec)
        spec["env"] = complete_environment(spec.get("env") or {}, spec.pop("env_base"),
                                           spec.get("run_as"), os.environ)
        return dict(body, spec=spec)

    def _entry_for_node(self, entry, features):
        if "svc_restart" not in features:
            entry = {k: v for k, v in entry.items() if k != "restart_seq"}
        definition = entry["definition"]
        if "memory_max" not in features and "memory_max" in definition:
            if definition["memory_max"]:
                logger.warning("node %s cannot keep service %s's memory_max: its jq-noded is "
                               "of an earlier version; the service runs there without it",
                               self.name, entry["name"])
            entry = dict(entry, definition={k: v for k, v in definition.items()
                                            if k != "memory_max"})
        return entry

    def _call_batch(self, client, batch):
        """One exec_batch call for the calls of batch; each done hears its own answer."""
        client, answers = self._call(client, "exec_batch", {
            "calls": [[method, self._for_node(method, body)]
                      for method, body, _, _ in batch]}, None)
        if not isinstance(answers, Exception) and (
                not isinstance(answers, list) or len(answers) != len(batch)):
            answers = errors.RemoteError("node %s: exec_batch: %d answers for %d calls" % (
                self.name, len(answers) if isinstance(answers, list) else 0, len(batch)))
        for index, (_, _, done, convert) in enumerate(batch):
            if isinstance(answers, Exception):
                answer = answers
            else:
                answer = _batched_answer(answers[index], convert)
            if done is not None:
                self._host.call(done, answer)
        return client

    def _call(self, client, method, body, convert):
        """(the client to use next, the call's answer or its error)."""
        try:
            client = client or self._new_client()
            answer = client.call(method, body)
            self._host.call(self._heard)
            if convert is not None and answer is not None:
                answer = convert(answer)
        except (errors.GenericError, OSError, ValueError, TypeError, KeyError) as err:
            answer = err if isinstance(err, errors.GenericError) else errors.RemoteError(
                "node %s: %s: %s" % (self.name, method, err))
            if isinstance(err, (errors.RemoteError, OSError)) and client is not None:
                client = self._drop(client)
        return client, answer

    # Events: the poller thread

    def _poll_loop(self):
        client, session, after = None, None, 0
        while not self._stopped.is_set():
            try:
                if client is None:
                    client = self._new_client()
                    self._learn(client.call("node_info", {}))
                answer = client.call("exec_poll", {"session": session, "after": after,
                                                   "timeout": self._ping_interval})
                received = time.time()  # (the node answers as it sends: no span)
                self.resources = resources.checked(answer.get("resources"))
                self._host.call(self._heard,
                                rpc_client.clock_skew(answer, received, received))
            except (errors.GenericError, OSError) as err:
                logger.debug("node %s: exec_poll: %s", self.name, err)
                if client is not None:
                    client = self._drop(client)
                self._stopped.wait(RETRY)
                continue
            if answer.get("reset"):
                # A node restarted while we followed it: read its new session from the
                # start (a service's BACKOFF while we were away is news too); else, or
                # if those events are gone already, from now on. Either way, resync.
                restarted = session is not None and answer["session"] != session
                session, after = answer["session"], 0 if restarted else answer["last"]
                self._resync()
                continue
            for seq, event in answer["events"]:
                after = max(after, seq)
                if event and event[0] == "node":  # its settings changed (a reload)
                    self._learn_slots(event[1] if len(event) > 1 else None)
                self._host.call(self._listener.link_event, self.name, _event(event))
        if client is not None:
            self._drop(client)

    def _heard(self, skew=None):
        """The node answered (host thread): a heartbeat, with how far its clock was off
        this one's then (None: an older node does not say it)."""
        self.last_heard = self._host.seconds()
        if skew is None:
            return
        self.clock_skew = skew
        if membership.clock_off(skew) and not self._clock_off:
            self._clock_off = True
            logger.warning("node %s: its clock is %.0fs %s this node's: the times it records "
                           "(a service's since, an attempt's start and end) are off by as "
                           "much; set it right (NTP)", self.name, abs(skew),
                           "ahead of" if skew > 0 else "behind")
        elif self._clock_off and abs(skew) < constants.CLOCK_SKEW_WARN / 2:
            self._clock_off = False
            logger.info("node %s: its clock agrees with this node's again (%+.1fs)",
                        self.name, skew)

    def _learn(self, info):
        """The node answered node_info: its slots (the runner may start more now) and how
        it contains attempts (what their logs' banners say)."""
        info = info if isinstance(info, dict) else {}
        self._learn_slots(info)
        containment = info.get("containment")
        if isinstance(containment, str) and containment.isprintable() and containment:
            self.containment = containment[:200]
        features = info.get("features")
        self.features = frozenset(f for f in features if isinstance(f, str)) if isinstance(
            features, list) else frozenset()
        self._host.call(self._listener.link_event, self.name, ("node", info))

    def _learn_slots(self, info):
        slots = info.get("slots") if isinstance(info, dict) else None
        if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0:
            self.slots = slots

    def _resync(self):
        """Report every attempt and service the node holds as it stands (after a gap in
        the events)."""
        self.attempts(self._resynced)
        self._submit("svc_states", {}, self._services_resynced)

    def _services_resynced(self, states):
        if isinstance(states, Exception):
            return
        for state in states:
            self._listener.link_event(self.name, ("svc", state))

    def _resynced(self, infos):
        if isinstance(infos, Exception):
            return
        for info in infos:
            self._listener.link_event(self.name, ("started", info))
            if info.get("result") is not None:
                result = dict(info["result"], output_size=info.get("output_size"))
                self._listener.link_event(self.name, ("ended", info["job"], info["attempt"],
                                                      result))


class _Ahead:
    """The pieces of output a link asked for ahead of the runner's fetches."""

    def __init__(self):
        self.sent = collections.deque()  # keys of the reads sent, answers not read yet
        self.received = collections.OrderedDict()  # key -> bytes, oldest first

    def has(self, key):
        return key in self.received or key in self.sent

    def keep(self, key, data):
        self.received[key] = data
        while len(self.received) > AHEAD_KEEP:
            self.received.popitem(last=False)


def _weight(body):
    """Roughly the bytes of a launch's or a forget's body: its spec's strings."""
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return 64
    env = spec.get("env") or {}
    return 256 + sum(len(a) for a in spec.get("argv") or ()) + sum(
        len(k) + len(v) for k, v in env.items())


def _batched_answer(answer, convert):
    """One call's answer in an exec_batch answer: its result, or its error rebuilt."""
    if not (isinstance(answer, list) and len(answer) == 2 and isinstance(answer[0], bool)):
        return errors.RemoteError("malformed answer in an exec_batch: %r" % (answer,))
    if not answer[0]:
        return errors.decode_exception(answer[1])
    if convert is not None and answer[1] is not None:
        return convert(answer[1])
    return answer[1]


def _event(wire):
    """An event as the runner takes it, from its JSON form."""
    return tuple(wire)

