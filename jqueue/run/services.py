"""The master's side of supervised services: the table, placement, requests and logs.

A service (jqueue.service) is kept alive by the supervisor of the node it is placed on
(jqueue.exec.supervisor); the master holds what must survive a failover, in the queue's
service table (jqueue.store.services: journaled and replicated like jobs):

- the definition, its version and the node it is placed on (by ``node``, else by
  ``affinity``: the available node with those tags holding the fewest services, else
  the master's node);
- the last request (``target`` started or stopped, numbered by ``seq``, so that a
  request resent to a node is applied once);
- the state the node last reported (``state``, ``pid``, ``run``, ...), each change an
  event of kind ``service`` (STARTING, RUNNING, BACKOFF, STOPPING, STOPPED, EXITED,
  FATAL; NEW and REMOVED for the table's own changes, MOVED when a node is lost);
- the service's log: the output of every run (unless stdout and stderr go to files),
  between ``* `` lines of our own, copied from the node as journal records exactly like
  a command job's log (``out``: bytes of each run copied; ``done_run``: the last run
  copied to its end, after which the node may forget it). Unlike a job's, it keeps its
  end: past a quarter more than ``log_max_bytes`` its ``log_start`` moves on (the bytes
  before are dropped from the file by the next checkpoint: jqueue.store.services), output
  waiting on the node beyond what the log would keep is skipped, and a run's output out of
  the log for good is freed on its node. The log takes at most ``service_log_rate`` bytes
  a second of a service's output on average (8 seconds' worth at once; more waiting is
  skipped), and each piece is copied in a reactor turn of its own: a service printing
  without pause costs a bounded share of the master, its disk and its candidates, and
  never holds up the other requests.

Requests (add, modify, remove, start, stop, restart) are journaled, acknowledged, then
sent to the node; a node that does not answer gets them when it answers again (each
time a node is reached the master sends it its whole set: what it runs and nothing
else, so a node that was away drops the services that moved elsewhere meanwhile).

The node's supervisor decides restarts on its own: a master away (stopped, failing
over) stops nothing and delays nothing; it only hears late. A node that stays
unreachable for ``lost_grace`` takes its services down: STOPPED, or, for a ``movable``
service asked to run, placed on another matching node and started there.

Threads: public methods are called from any thread (LUXI's) and may block; everything
else runs in the command runner's host thread, as the runner's links answer there.
"""

import logging
import time

from jqueue import constants, errors, service
from jqueue.run.placement import NoMatchingNode

logger = logging.getLogger(__name__)

#: Output bytes read per fetch from a node.
FETCH_BYTES = 1024 * 1024
#: Output of a run out of its service's log for good, freed on its node in pieces of at
#: least this.
RELEASE_BYTES = constants.OUTPUT_RELEASE_BYTES
#: Bytes before a log's new start searched for the start of a line.
LINE_SEARCH = 64 * 1024
#: Seconds of service_log_rate a log may take at once (the budget's most), and the least
#: piece it waits to afford.
RATE_BURST_SECONDS = 8
RATE_PIECE = 64 * 1024
#: Seconds before a change the disk refused is tried again.
WRITE_RETRY = 1.0
#: Event words of the table's own changes.
EVENT_NEW, EVENT_REMOVED, EVENT_MOVED = "NEW", "REMOVED", "MOVED"
#: Keys of a record that the node reports (copied from its state).
REPORTED = ("state", "since", "run", "pid", "exit_status", "signal", "message", "retry_at",
            "restarts", "failures", "changes")


def public_view(record, reachable=True):
    """What clients get of a service: its state and, under ``definition``, its
    definition (a copy)."""
    view = {key: record.get(key) for key in (
        "name", "id", "node", "state", "since", "pid", "run", "exit_status", "signal",
        "message", "retry_at", "restarts", "failures", "target", "version", "log_bytes")}
    view["log_start"] = record.get("log_start") or 0
    view["reachable"] = reachable
    view["definition"] = dict(record["def"])
    return view


class _Cursor:
    """What the master knows of a service's runs while copying their output."""

    __slots__ = ("runs", "busy", "stale", "fresh", "passed", "skipped", "budget",
                 "budget_at", "paced")

    def __init__(self, budget, now):
        self.runs = {}      # run -> [output size known, ended]
        self.budget = budget  # bytes the log may take now (service_log_rate)
        self.budget_at = now
        self.paced = False  # a pump waits for the budget
        self.passed = {}    # run -> where its output not freed on its node begins
        self.skipped = set()  # runs whose output was skipped to the middle of a line
        self.busy = False   # a fetch or a refresh is in flight
        self.stale = False  # a refresh was asked while busy: refresh after it
        self.fresh = True   # nothing asked of the node yet (a start, a move)


class ServiceManager:
    """Supervised services of a JobQueue, over its command runner's nodes."""

    def __init__(self, queue, runner):
        self._queue = queue
        self._runner = runner
        self._host = runner.host
        self._rate = runner.service_log_rate
        self._burst = self._rate * RATE_BURST_SECONDS
        self._cursors = {}          # service name -> _Cursor
        self._lost_timers = {}      # node -> timer (lost_grace)
        self._stopped = False
        runner.services = self

    # Public: the table (any thread)

    def add(self, definitions, start=False):
        """Add services (all or none); their views once acknowledged.

        Each definition is checked (OpPrereqError naming the service and the problem),
        must have a new name, and is placed now. start: start them at once (as their
        ``autostart`` also does).
        """
        if not isinstance(definitions, list) or not definitions:
            raise errors.OpPrereqError("expected a non-empty list of service definitions",
                                       constants.ECODE_INVAL)
        checked = [service.check_definition(d) for d in definitions]
        names = [d["name"] for d in checked]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise errors.OpPrereqError("service %s is defined twice" % duplicates[0],
                                       constants.ECODE_INVAL)
        placed = self._host.call_sync(self._place_all, checked)
        queue = self._queue
        with queue._lock:
            self._check_changes_unlocked()
            for name in names:
                if queue._services.get(name) is not None:
                    raise errors.OpPrereqError("service %s already exists" % name,
                                               constants.ECODE_EXISTS)
            now = queue._clock()
            records, batch = [], None
            for definition, node in zip(checked, placed):
                started = start or definition["autostart"]
                record = _new_record(queue._services.allocate_id(), definition, node, now,
                                     started)
                batch = self._journal_unlocked(record["name"], record, batch, undo=None)
                queue._record_event_unlocked(EVENT_NEW, 0, node, "service", _say(
                    record, "added on %s%s" % (node, ", starting" if started else "")),
                    service=record["name"])
                records.append(record)
        self._wait(batch)
        self._host.call(self._push_many, [r["name"] for r in records])
        return [self._view(r) for r in records]

    def modify(self, name, changes):
        """Change a service's definition (from its next start); its view.

        A change of ``node`` or ``affinity`` that its node no longer satisfies moves it
        (stopped there, started on the new node if it was asked to run).
        """
        if not isinstance(changes, dict) or not changes:
            raise errors.OpPrereqError("expected an object of parameters to change",
                                       constants.ECODE_INVAL)
        queue = self._queue
        with queue._lock:
            record = self._known_unlocked(name)
            definition = service.check_definition(changes, base=record["def"])
        node = record["node"]
        if service.PLACEMENT & set(changes):
            node = self._host.call_sync(self._place, definition, node)
        with queue._lock:
            self._check_changes_unlocked()
            record = self._known_unlocked(name)
            new = dict(record, version=record["version"] + 1, modified=queue._clock(),
                       **{"def": definition})
            old_node = record["node"]
            if node != old_node:
                new.update(_moved(record, node, "moved from %s by a change of its placement"
                                  % old_node))
            batch = self._journal_unlocked(name, new, None, undo=record)
            if node != old_node:
                self._leave_run_unlocked(name, record)
            queue._record_event_unlocked(
                EVENT_MOVED if node != old_node else "MODIFIED", 0, node, "service",
                _say(new, "definition version %d%s" % (
                    new["version"], "; moved from %s" % old_node if node != old_node
                    else "")), service=name)
        self._wait(batch)
        if node != old_node:
            self._host.call(self._sync_node, old_node)
        self._host.call(self._push, name)
        return self._view(new)

    def remove(self, name):
        """Remove a service (its node stops it: stop signal, then SIGKILL); its log goes."""
        queue = self._queue
        with queue._lock:
            self._check_changes_unlocked()
            record = self._known_unlocked(name)
            batch = self._journal_unlocked(name, None, None, undo=record)
            queue._record_event_unlocked(EVENT_REMOVED, 0, record["node"], "service",
                                         _say(record, "removed"), service=name)
        self._wait(batch)
        with queue._lock:
            ready = queue._remove_service_log_unlocked(record["id"])
        _answer(ready)
        self._host.call(self._removed, record)
        return "service %s removed" % name

    def control(self, name, action):
        """start, stop or restart a service: (True, message) once the request is
        acknowledged (and the node told, or told later if it does not answer)."""
        if action not in service.ACTIONS:
            raise errors.OpPrereqError("unknown service action %r (start, stop, restart)" % (
                action,), constants.ECODE_INVAL)
        queue = self._queue
        with queue._lock:
            self._check_changes_unlocked()
            record = self._known_unlocked(name)
            target = service.TARGET_STOPPED if action == "stop" else service.TARGET_STARTED
            new = dict(record, target=target, seq=record["seq"] + 1)
            if action == "restart":  # for a node that misses the call (see _entry)
                new["restart_seq"] = new["seq"]
            batch = self._journal_unlocked(name, new, None, undo=record)
        self._wait(batch)
        answer = self._host.call_sync(self._send_control, name, action)
        return True, answer

    def query(self, names=None):
        """Views of the services named (every one if None), by name; unknown names are
        an OpPrereqError (ECODE_NOENT)."""
        queue = self._queue
        with queue._lock:
            if names is None:
                records = [queue._services.services[n] for n in sorted(queue._services.services)]
            else:
                records = [self._known_unlocked(n) for n in names]
        return [self._view(r) for r in records]

    def read_log(self, name, offset, max_bytes):
        """{"data": bytes, "offset", "eof"} of a service's log from offset, or from where
        what it keeps begins if offset is before it (eof: never, while it exists)."""
        with self._queue._lock:
            record = self._known_unlocked(name)
        return self._queue.read_service_log_bytes(
            record["id"], max(offset, record.get("log_start") or 0), max_bytes, False)

    def watch_log(self, name, offset, max_bytes, callback):
        """Call callback(read_log answer) once the log passes offset; costs no thread."""
        with self._queue._lock:
            record = self._known_unlocked(name)
        return self._queue.watch_service_log_bytes(
            record["id"], max(offset, record.get("log_start") or 0), max_bytes, callback)

    # Helpers of the public side

    def _known_unlocked(self, name):
        if not isinstance(name, str):
            raise errors.OpPrereqError("a service name is a string, not %r" % (name,),
                                       constants.ECODE_INVAL)
        record = self._queue._services.get(name)
        if record is None:
            raise errors.OpPrereqError("service %s not found" % _shown(name),
                                       constants.ECODE_NOENT)
        return record

    def _check_changes_unlocked(self):
        queue = self._queue
        queue._check_writable()
        queue._check_open_unlocked()
        queue._check_changes_unlocked()
        if queue._closing:
            raise errors.JobQueueError("job queue %s is shutting down" % queue.path)

    def _journal_unlocked(self, name, record, batch, undo=False):
        """Journal a client's change of a service; undo (the previous record, or None
        for a new one) restores it if the disk refuses the change."""
        queue = self._queue
        if record is not None:
            queue._service_durable.setdefault(record["id"], record.get("log_bytes") or 0)
        batch = queue._record_service_unlocked(name, record)
        if undo is not False:
            batch.undo.append(lambda: queue._services.set(name, undo))
        return batch

    def _wait(self, batch):
        if batch is not None:
            self._queue._wait(batch)

    def _view(self, record):
        link = self._runner._links.get(record["node"])
        reachable = link is not None and getattr(link, "reachable", True)
        return public_view(record, reachable)

    # Placement (host thread)

    def _place_all(self, definitions):
        placed, counts = [], None
        for definition in definitions:
            node = self._place(definition, None, counts)
            counts = counts or self._counts()
            counts[node] = counts.get(node, 0) + 1
            placed.append(node)
        return placed

    def _place(self, definition, current=None, counts=None):
        """The node a definition runs on (current if it still fits); OpPrereqError."""
        runner = self._runner
        name, node, affinity = definition["name"], definition["node"], definition["affinity"]
        if node is not None:
            if node not in runner._links:
                raise errors.OpPrereqError("service %s: unknown node %s (nodes: %s)" % (
                    name, node, ", ".join(runner.node_names()) or "none"),
                    constants.ECODE_NOENT)
            if not runner._placement.holds(node, affinity):
                raise errors.OpPrereqError(
                    "service %s: node %s has not the tags %s (its tags: %s)" % (
                        name, node, ",".join(affinity),
                        ",".join(sorted(runner._placement.tags(node))) or "none"),
                    constants.ECODE_INVAL)
        elif not affinity:
            node = runner._default_node
        elif current is not None and runner._placement.holds(current, affinity):
            node = current
        else:
            node = self._choose(name, affinity, counts)
        self._check_user(name, node, definition.get("run_as"))
        return node

    def _choose(self, name, affinity, counts=None, exclude=()):
        counts = counts or self._counts()
        try:
            node = self._runner._placement.choose(
                affinity, lambda n: n not in exclude and self._runner._available(n),
                lambda n: counts.get(n, 0))
        except NoMatchingNode as err:
            raise errors.OpPrereqError("service %s: %s" % (name, err),
                                       constants.ECODE_INVAL) from None
        if node is None:
            raise errors.OpPrereqError("service %s: no node with the tags %s is available "
                                       "now" % (name, ",".join(affinity)),
                                       constants.ECODE_STATE)
        return node

    def _counts(self):
        with self._queue._lock:
            records = list(self._queue._services.services.values())
        counts = {}
        for record in records:
            counts[record["node"]] = counts.get(record["node"], 0) + 1
        return counts

    def _check_user(self, name, node, user):
        check = getattr(self._runner._links.get(node), "check_user", None)
        refusal = check(user) if check is not None else None
        if refusal is not None:
            raise errors.OpPrereqError("service %s: %s" % (name, refusal),
                                       constants.ECODE_INVAL)

    # Talking to nodes (host thread)

    def recover(self):
        """The queue is open: bring every node in line with the table."""
        self._host.call(self._recover)

    def stop(self):
        self._stopped = True
        for timer in self._lost_timers.values():
            timer.cancel()
        self._lost_timers.clear()

    def _recover(self):
        if self._stopped:
            return
        for name in self._runner.node_names():
            self._sync_node(name)

    def _entries(self, node):
        with self._queue._lock:
            records = [r for r in self._queue._services.services.values()
                       if r["node"] == node]
        return [_entry(r) for r in records]

    def _sync_node(self, node):
        """Send node its whole set of services (it drops the others); follow them."""
        link = self._runner._links.get(node)
        if link is None or self._stopped or not hasattr(link, "svc_apply"):
            return
        link.svc_apply(self._entries(node), [], True,
                       lambda states: self._applied(node, states))

    def _push(self, name):
        """Send one service (new, changed or asked to start) to its node."""
        self._push_many([name])

    def _push_many(self, names):
        """Send services to their nodes: one call per node, whatever their number."""
        with self._queue._lock:
            records = [r for r in map(self._queue._services.get, names) if r is not None]
        by_node = {}
        for record in records:
            by_node.setdefault(record["node"], []).append(record)
        for node, records in by_node.items():
            link = self._runner._links.get(node)
            if link is None or self._stopped or not hasattr(link, "svc_apply"):
                continue
            ids = frozenset(r["id"] for r in records)
            link.svc_apply([_entry(r) for r in records], [], False,
                           lambda states, node=node, ids=ids: self._applied(
                               node, states, ids))

    def _removed(self, record):
        self._cursors.pop(record["name"], None)
        link = self._runner._links.get(record["node"])
        if link is not None and hasattr(link, "svc_apply") and not self._stopped:
            link.svc_apply([], [record["id"]], False, lambda states: self._applied(
                record["node"], states, frozenset()))

    def _send_control(self, name, action):
        with self._queue._lock:
            record = self._queue._services.get(name)
        link = self._runner._links.get(record["node"]) if record else None
        if record is None or link is None or not hasattr(link, "svc_control"):
            return "%s of service %s recorded" % (action, name)
        node, answers = record["node"], []

        def done(answer):
            answers.append(answer)
            if isinstance(answer, dict):
                self._reported(node, answer)
            elif isinstance(answer, Exception):
                logger.info("%s of service %s: node %s: %s (it is told again when it "
                            "answers)", action, name, node, errors.error_message(answer))
                self._ask_again(node, answer)

        link.svc_control(record["id"], action, record["seq"], done)
        if not answers:  # a remote node: its answer comes later
            word = "answers" if getattr(link, "reachable", True) else "does not answer now"
            return "%s of service %s sent to %s (it %s)" % (action, name, node, word)
        answer = answers[0]
        if isinstance(answer, Exception):
            return "%s of service %s recorded; node %s: %s (it is told again when it " \
                   "answers)" % (action, name, node, errors.error_message(answer))
        return "%s of service %s: %s" % (action, name, answer["state"])

    def _applied(self, node, states, ids=None):
        """A node's answer to svc_apply: the states of its services (of those in ids
        only, when given: the others' news comes as their events)."""
        if isinstance(states, Exception):
            logger.info("services of node %s not applied now: %s (again when it answers)",
                        node, errors.error_message(states))
            self._ask_again(node, states)
            return
        for state in states:
            if ids is None or (isinstance(state, dict) and state.get("id") in ids):
                self._reported(node, state)

    def _ask_again(self, node, err):
        """A node that answers, but took a request for stale (it had not run for longer
        than lost_grace: jqueue.cluster.nodeexec), is sent its services again at once, as
        they stand now: nothing else would (an unreachable node is, when it answers)."""
        if isinstance(err, errors.NodeStalledError):
            self._sync_node(node)

    # News from nodes (host thread)

    def link_event(self, node, event):
        """A node's news of its services (forwarded by the command runner)."""
        if self._stopped:
            return
        kind = event[0]
        if kind == "svc":
            self._reported(node, event[1])
        elif kind == "svc_output":
            name = self._name_of(node, event[1])
            if name is not None:
                cursor = self._cursor(name)
                known = cursor.runs.setdefault(event[2], [0, False])
                known[0] = max(known[0], event[3])
                self._pump(name)

    def node_contact(self, node):
        """A node answered again (a new connection): send it its services."""
        if not self._stopped:
            self._sync_node(node)

    def node_lost(self, node):
        """A node stopped answering: after lost_grace its services go down (or move)."""
        if self._stopped or node in self._lost_timers:
            return
        self._lost_timers[node] = self._host.call_later(
            self._runner._lost_grace, self._grace_over, node)

    def node_back(self, node):
        timer = self._lost_timers.pop(node, None)
        if timer is not None:
            timer.cancel()
        self.node_contact(node)

    def _name_of(self, node, sid):
        with self._queue._lock:
            record = self._queue._services.by_id(sid)
        if record is None or record["node"] != node:
            return None
        return record["name"]

    def _reported(self, node, state):
        """A node's state of one of its services: record what changed, with an event."""
        if not isinstance(state, dict) or self._stopped:
            return
        queue = self._queue
        with queue._lock:
            record = queue._services.by_id(state.get("id"))
            if record is None or record["node"] != node:
                return  # not ours (any more): the next full sync removes it there
            if (state.get("changes") or 0) < (record.get("changes") or 0):
                return  # older news than what we have
            name = record["name"]
            new = dict(record)
            for key in REPORTED:
                new[key] = state.get(key)
            if new != record:
                try:
                    queue._record_service_unlocked(name, new)
                except (errors.GenericError, OSError) as err:
                    logger.warning("cannot record the state of service %s now (%s); "
                                   "again in %gs", name, errors.error_message(err),
                                   WRITE_RETRY)
                    self._host.call_later(WRITE_RETRY, self._reported, node, state)
                    return
                last = (record["state"], record["run"])
                for _, state_was, since, message, run in _missed(state, record):
                    if (state_was, run) != last:  # a change we did not hear of, then
                        queue._record_event_unlocked(state_was, 0, node, "service",
                                                     _say(new, message or ""),
                                                     service=name, when=since)
                        last = (state_was, run)
                if (new["state"], new["run"]) != last:
                    queue._record_event_unlocked(new["state"], 0, node, "service",
                                                 _say(new, new.get("message") or ""),
                                                 service=name)
        cursor = self._cursor(name)
        run = state.get("run") or 0
        if run and run not in cursor.runs and run > (record.get("done_run") or 0):
            cursor.runs[run] = [0, False]
        if (cursor.fresh or state.get("state") not in service.ALIVE
                or run != record.get("run")):
            self._refresh(name)  # a run ended or began, or we just came: learn the sizes
        else:
            self._pump(name)

    def _grace_over(self, node):
        """node stayed unreachable for lost_grace: its services go down, movable ones
        that were asked to run start on another node."""
        self._lost_timers.pop(node, None)
        link = self._runner._links.get(node)
        if self._stopped or link is None or getattr(link, "reachable", True):
            return
        with self._queue._lock:
            names = [r["name"] for r in self._queue._services.services.values()
                     if r["node"] == node]
        for name in names:
            self._take_down(name, node)

    def _take_down(self, name, node):
        queue = self._queue
        with queue._lock:
            record = queue._services.get(name)
        if record is None or record["node"] != node:
            return
        definition = record["def"]
        target = None
        if (definition["movable"] and record["target"] == service.TARGET_STARTED
                and definition["node"] is None):
            try:
                target = self._choose(name, definition["affinity"], exclude=(node,))
            except errors.OpPrereqError as err:
                logger.warning("service %s cannot move from %s: %s", name, node,
                               errors.error_message(err))
        with queue._lock:
            if target is not None:
                new = dict(record, seq=record["seq"] + 1, **_moved(
                    record, target, "moved from %s: no answer for %gs (lost_grace)" % (
                        node, self._runner._lost_grace)))
                word = EVENT_MOVED
            else:
                new = dict(record, state=service.STOPPED, pid=None,
                           message="node %s lost: no answer for %gs (lost_grace)" % (
                               node, self._runner._lost_grace))
                word = service.STOPPED
            try:
                queue._record_service_unlocked(name, new)
            except (errors.GenericError, OSError) as err:
                logger.warning("cannot record service %s down now: %s", name, err)
                self._host.call_later(WRITE_RETRY, self._take_down, name, node)
                return
            if target is not None:
                self._leave_run_unlocked(name, record)
            queue._record_event_unlocked(word, 0, new["node"], "service",
                                         _say(new, new["message"]), service=name)
        if target is not None:
            self._cursors.pop(name, None)
            self._push(name)
            self._host.call(self._sync_node, node)  # nothing if it does not answer

    # The log: copying runs' output (host thread)

    def _refresh(self, name):
        """Ask the node which runs of the service it still holds, then copy their output."""
        with self._queue._lock:
            record = self._queue._services.get(name)
        cursor = self._cursor(name)
        if record is None or self._stopped:
            return
        if cursor.busy:
            cursor.stale = True  # asked again once the call in flight is answered
            return
        link = self._runner._links.get(record["node"])
        if link is None or not hasattr(link, "svc_runs"):
            return
        cursor.busy = True
        link.svc_runs(record["id"], lambda runs: self._refreshed(name, record, runs))

    def _refreshed(self, name, record, runs):
        cursor = self._cursor(name)
        cursor.busy = False
        if isinstance(runs, Exception) or self._stopped:
            return
        if cursor.stale:  # news since the question: this answer may predate it
            cursor.stale = False
            self._refresh(name)
            return
        cursor.fresh = False
        for info in runs:
            known = cursor.runs.setdefault(info["run"], [0, False])
            known[0] = max(known[0], info.get("output_size") or 0)
            known[1] = info.get("result") is not None
        held = {info["run"] for info in runs}
        for run in list(cursor.runs):
            if run not in held:
                del cursor.runs[run]  # forgotten there (or never launched)
        done = record.get("done_run") or 0
        for run in sorted(held):
            if run <= done:  # copied before a crash kept us from forgetting it
                self._forget(name, run)
        self._pump(name)

    def _pump(self, name):
        """Copy the next piece of output the node has and the log lacks."""
        cursor = self._cursor(name)
        if cursor.busy:
            return  # the answer in flight pumps again (_refreshed, _next)
        with self._queue._lock:
            record = self._queue._services.get(name)
        if record is None or self._stopped:
            return
        done = record.get("done_run") or 0
        pending = sorted(run for run in cursor.runs if run > done)
        if not pending:
            return
        run = pending[0]
        size, ended = cursor.runs[run]
        out = (record.get("out") or {}).get(str(run))
        if out is None:
            if self._log(name, run, 0, None, _banner_start(record, run)):
                self._pump(name)
            return
        if out < size:
            link = self._runner._links.get(record["node"])
            if link is None:
                return
            keep = min(self._runner._log_max, self._burst)
            if size - out > keep:
                self._skip(name, cursor, record, run, out, size - keep)
                return
            allowed = self._allowance(cursor)
            wanted = min(size - out, RATE_PIECE)
            if allowed < wanted:
                if not cursor.paced:
                    cursor.paced = True
                    self._host.call_later((wanted - allowed) / self._rate, self._paced, name)
                return
            cursor.busy = True
            link.svc_read(record["id"], run, out, min(FETCH_BYTES, allowed),
                          lambda data: self._fetched(name, run, out, data))
            return
        if ended:
            if self._log(name, run, 0, None, _banner_end(record, run, self._at_line(record))):
                self._done(name, run)

    def _cursor(self, name):
        cursor = self._cursors.get(name)
        if cursor is None:
            cursor = self._cursors[name] = _Cursor(self._burst, time.monotonic())
        return cursor

    def _allowance(self, cursor):
        """Bytes of output the service's log may take now: service_log_rate a second
        since the last look, up to RATE_BURST_SECONDS of it."""
        now = time.monotonic()
        cursor.budget = min(self._burst, cursor.budget + (now - cursor.budget_at) * self._rate)
        cursor.budget_at = now
        return int(cursor.budget)

    def _paced(self, name):
        cursor = self._cursor(name)
        cursor.paced = False
        self._pump(name)

    def _leave_run_unlocked(self, name, old):
        """The service moved off the node of old (its record before): its last run there,
        if its output was being copied, ends in the log with lines saying that the rest of
        it is not kept (_moved gives it up), rather than with nothing."""
        run = old.get("run") or 0
        if run <= (old.get("done_run") or 0) or str(run) not in (old.get("out") or {}):
            return
        line = "%s* MOVED : to %s; what run %d printed on %s after this is not kept\n" % (
            "" if self._at_line(old) else "\n", self._queue._services.get(name)["node"], run,
            old["node"])
        try:
            self._queue._record_service_chunk_unlocked(name, 0, 0, (
                line + "* END run %d %s\n" % (run, "*" * 32)).encode())
        except (errors.GenericError, OSError) as err:
            logger.warning("cannot log the move of service %s: %s", name,
                           errors.error_message(err))

    def _at_line(self, record):
        """Whether the service's log ends a line (or is empty)."""
        return self._queue._service_logs.read(
            record["id"], max(0, (record.get("log_bytes") or 1) - 1), 1) in (b"\n", b"")

    def _skip(self, name, cursor, record, run, out, to):
        """More of the run's output waits than the log keeps or takes at once (it printed
        faster than service_log_rate, or while no master copied): all but the last of it
        is passed over, after a line saying so."""
        line = "%s* SKIPPED: %d bytes of output of run %d, more than the log takes " \
            "(log_max_bytes %d, service_log_rate %d a second)\n" % (
                "" if self._at_line(record) else "\n", to - out, run, self._runner._log_max,
                self._rate)
        if self._log(name, run, 0, None, line.encode()):
            batch = self._log(name, run, to, b"", None)
            if batch:
                cursor.skipped.add(run)
                self._release_behind(name, cursor, run, to, batch)
                self._pump(name)

    def _release_behind(self, name, cursor, run, out, batch):
        """The run's output up to out is in the log (or passed over) once batch is
        durable; what lies more than log_max_bytes before out is then out of the log for
        good, and its node frees it in pieces of RELEASE_BYTES or more (a service printing
        for months must not fill its node's disk)."""
        start = cursor.passed.get(run, 0)
        end = out - self._runner._log_max
        if end - start < RELEASE_BYTES:
            return
        cursor.passed[run] = end
        batch.add_done_callback(lambda done: self._host.call(
            self._release, name, run, start, end) if done.error is None else None)

    def _rotate(self, name):
        """Once the log holds a quarter more than log_max_bytes durably, its start moves
        on to keep its last log_max_bytes (from the start of a line, if one begins in the
        64 KiB before): the bytes before are dropped from its file by the next checkpoint."""
        queue = self._queue
        keep = self._runner._log_max
        with queue._lock:
            record = queue._services.get(name)
            if record is None:
                return
            end = queue._service_durable.get(record["id"], 0)  # what readers can have
        start = record.get("log_start") or 0
        if end - start <= keep + keep // 4:
            return
        cut = end - keep
        before = queue._service_logs.read(record["id"], max(start, cut - LINE_SEARCH),
                                          min(LINE_SEARCH, cut - start))
        if b"\n" in before:
            cut -= len(before) - before.rindex(b"\n") - 1
        with queue._lock:
            record = queue._services.get(name)
            if record is None or (record.get("log_start") or 0) >= cut:
                return
            try:
                queue._record_service_unlocked(name, dict(record, log_start=cut))
            except (errors.GenericError, OSError) as err:
                logger.warning("cannot move the start of service %s's log now: %s", name,
                               errors.error_message(err))  # again after the next piece

    def _release(self, name, run, start, end):
        self._tell_node(name, "svc_release", run, start, end)

    def _fetched(self, name, run, offset, data):
        cursor = self._cursor(name)
        cursor.busy = False
        if self._stopped:
            return
        with self._queue._lock:
            record = self._queue._services.get(name)
        if record is None or run <= (record.get("done_run") or 0):
            self._next(name, cursor)  # given up meanwhile (moved, removed)
            return
        if isinstance(data, Exception):
            logger.warning("service %s: reading the output of run %d failed: %s", name, run,
                           errors.error_message(data))
            self._host.call_later(WRITE_RETRY, self._refresh, name)
            return
        if not data:
            cursor.runs.get(run, [0, False])[0] = offset  # the node has no more
            self._next(name, cursor)
            return
        cursor.budget -= len(data)
        line_end = 0
        if run in cursor.skipped:
            line_end = data.find(b"\n") + 1  # the line a skip cut is not kept either
        batch = self._log(name, run, offset + line_end, data[line_end:], None)
        if batch:
            cursor.skipped.discard(run)
            self._release_behind(name, cursor, run, offset + len(data), batch)
            batch.add_done_callback(lambda done: self._host.call(
                self._rotate, name) if done.error is None else None)
        self._host.call(self._next, name, cursor)  # a turn of its own: others come first

    def _next(self, name, cursor):
        """After a fetch: ask the node about the runs again if news came meanwhile (a run
        ended or began: without it, a run's end would wait for the next news), else copy
        on."""
        if cursor.stale:
            cursor.stale = False
            self._refresh(name)
        else:
            self._pump(name)

    def _log(self, name, run, out_offset, data, own_line):
        """Journal a piece of a run's output (or a line of our own, or an empty piece
        that only moves the run's offset) into the service's log; its batch (for a piece:
        true, as True for the others), False if the disk refused it (tried again later)."""
        queue = self._queue
        with queue._lock:
            record = queue._services.get(name)
            if record is None:
                return False
            try:
                if own_line is not None:
                    queue._record_service_chunk_unlocked(name, 0, 0, own_line)
                    if str(run) not in (queue._services.get(name).get("out") or {}):
                        queue._record_service_chunk_unlocked(name, run, 0, b"")
                    return True
                return queue._record_service_chunk_unlocked(name, run, out_offset, data or b"")
            except (errors.GenericError, OSError) as err:
                logger.warning("cannot log the output of service %s now: %s", name,
                               errors.error_message(err))
                self._host.call_later(WRITE_RETRY, self._pump, name)
                return False

    def _done(self, name, run):
        """A run's output is all in the log: record it, then let the node forget it."""
        queue = self._queue
        with queue._lock:
            record = queue._services.get(name)
            if record is None:
                return
            new = dict(record, done_run=max(run, record.get("done_run") or 0))
            try:
                batch = queue._record_service_unlocked(name, new)
            except (errors.GenericError, OSError):
                self._host.call_later(WRITE_RETRY, self._pump, name)
                return
        cursor = self._cursor(name)
        cursor.runs.pop(run, None)
        cursor.passed.pop(run, None)
        batch.add_done_callback(lambda done: self._host.call(
            self._forget, name, run) if done.error is None else None)
        self._pump(name)

    def _forget(self, name, run):
        self._tell_node(name, "svc_forget", run)

    def _tell_node(self, name, method, *args):
        """Call method (svc_forget, svc_release) of the link to the service's node with its
        id and args, if the node is still there and takes it."""
        with self._queue._lock:
            record = self._queue._services.get(name)
        link = self._runner._links.get(record["node"]) if record else None
        if link is not None and hasattr(link, method):
            getattr(link, method)(record["id"], *args)


# Records


def _new_record(sid, definition, node, now, started):
    return {"id": sid, "name": definition["name"], "version": 1, "def": definition,
            "node": node, "target": (service.TARGET_STARTED if started
                                     else service.TARGET_STOPPED),
            "seq": 1 if started else 0, "state": service.STOPPED, "since": now,
            "run": 0, "pid": None, "exit_status": None, "signal": None,
            "message": "added", "retry_at": None, "restarts": 0, "failures": 0,
            "changes": 0, "added": now, "modified": now, "log_bytes": 0, "out": {},
            "done_run": 0}


def _moved(record, node, message):
    """The changes of a record placed on another node: its runs there continue the
    numbering; output of runs left on the old node and not copied yet is given up."""
    return {"node": node, "changes": 0, "state": service.STOPPED, "pid": None,
            "message": message, "done_run": max(record.get("run") or 0,
                                                record.get("done_run") or 0)}


def _entry(record):
    """What a node's supervisor gets of a service (jqueue.exec.supervisor.apply):
    restart_seq, the last restart asked, restarts it on a node that missed that request."""
    return {"id": record["id"], "name": record["name"], "version": record["version"],
            "definition": record["def"], "target": record["target"], "seq": record["seq"],
            "run": max(record.get("run") or 0, record.get("done_run") or 0),
            "restart_seq": record.get("restart_seq", 0)}


def _missed(state, record):
    """The changes a node's state of a service names (its "recent") that came after what
    record holds and before that state: [changes, state, since, message, run] each, in
    order; malformed entries are left out."""
    known, now = record.get("changes") or 0, state.get("changes") or 0
    missed = []
    for entry in state.get("recent") or ():
        if not (isinstance(entry, list) and len(entry) == 5):
            continue
        changes, name, since, message, run = entry
        if (isinstance(changes, int) and known < changes < now and name in service.STATES
                and isinstance(since, (int, float)) and not isinstance(since, bool)
                and (message is None or isinstance(message, str))):
            missed.append(entry)
    return sorted(missed, key=lambda entry: entry[0])


def _say(record, text):
    """An event's message: the service's name first."""
    return ("%s: %s" % (record["name"], text)).rstrip(": ")


def _shown(name):
    text = repr(name)[1:-1] if isinstance(name, str) else repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def _answer(ready):
    for callback, result in ready:
        try:
            callback(result)
        except Exception:  # noqa: BLE001 - one waiter must not hurt the others
            logger.exception("service log callback failed")


def _stamp(seconds):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _banner_start(record, run):
    from jqueue.commandjob import command_text
    lines = ["* START run %d %s" % (run, "*" * 30),
             "* SERVICE : %s  NODE : %s" % (record["name"], record["node"]),
             "* DATE : %s" % _stamp(time.time()),
             "* DIR : %s" % record["def"]["dir"],
             "* CMD : %s" % command_text(record["def"]["command"])]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _banner_end(record, run, after_newline=True):
    lines = [] if after_newline else [""]
    if record.get("run") == run and record.get("state") not in service.ALIVE:
        lines.append("* EXIT : %s" % service.describe_end(record))
        lines.append("* %s : %s" % (record.get("state"), record.get("message") or ""))
    lines.append("* END run %d %s" % (run, "*" * 32))
    return ("\n".join(lines) + "\n").encode("utf-8")
