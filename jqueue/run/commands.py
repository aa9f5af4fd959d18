"""The command runner: where, when and how often a command job's attempts run (the master's side).

A command opcode (OP_COMMAND_RUN, jqueue.commandjob) does not occupy a worker thread. When
the processor reaches one it hands the job here (``enqueue_unlocked``) and the runner:

1. queues it for its node; each node runs at most ``slots`` attempts at once and starts the
   next by priority, then job id. A command's ``memory_max`` is held of its node's memory
   while it runs; one that does not fit waits at the head of its node's queue, and the
   jobs behind it start first only where they cannot delay it (backfill, as Slurm's: see
   ``_Backfill``);
2. journals the attempt as *starting* (opcode running, attempt number raised, a banner in
   the job's log) and only once that is durable asks the node to launch it, so that a
   crash can never forget an attempt that may be running (a node launches an attempt at
   most once: a repeated launch of the same job and attempt returns the first one); a
   node's attempts are begun, and the starts made durable together launched,
   ``LAUNCH_SLICE`` at a time (for ``SLICE_SECONDS`` at most), a slice per turn of the
   host's loop, so that ends and requests are not kept waiting behind a burst;
3. copies the command's output into the job's log as journal records carrying (attempt,
   offset), so that output is logged exactly once whatever restarts: after a restart it
   asks the node again from the offset the journal holds; output is read ahead by at most
   ``INFLIGHT_BYTES`` not yet durable, and the log stops growing at ``log_max_bytes``
   (with a marker line);
4. follows progress patterns in the output;
5. when the attempt ends, reads the last output, journals the outcome (exit status,
   signal, timeout, reason) and either finishes the opcode (success iff the exit status is
   in ``success_exit_codes``), or waits out a back-off (``retry_delay`` doubling up to
   ``retry_delay_max``, times a random factor in [0.5, 1]) and runs the next attempt; once
   the outcome is durable the node may forget the attempt.

A hold (``hold_unlocked``) stops a running attempt like a cancel does, but the opcode
goes back to queued and the attempt does not count (exec state ``uncounted``: attempts
that do not count against ``max_attempts``, also raised by a reset, and by an attempt
whose command never started because the daemon launching it died: another runs at once).

A stop (cancel, hold) that finds the node unreachable is sent again when the node answers
again. A start the node could not be asked for, or refused for want of a resource (a full
disk: CommandResourceError), waits and is tried again (NOXFER, uncounted); one it refused
otherwise (a missing user, a malformed spec) fails INTERR. A start the node could not be
asked for may still have reached it: if
the job is canceled or held while that start is under way, or ends meanwhile, that
attempt is killed when the node reports it or when the start's retry falls due (a held
job's next attempt then numbered after it, uncounted); otherwise the retry, with the
same attempt number, adopts it.

When the queue is opened again (restart, failover) attempts journaled as starting or
running are reconciled with their nodes (``recover``): one that ended meanwhile gets its
true result, a running one is followed again, one the node never launched is launched, and
one its node cannot account for ends NODE_LOST (retried if attempts remain).

The runner does its work in one *host* thread (the daemon's reactor): entry points called
from other threads hop there. Nodes are reached through *links* (the embedded executor of
jqueue.exec, or a node's jq-noded through jqueue.cluster), whose operations are
asynchronous and answer in the host thread. The runner changes jobs under the queue's lock
and journals every change through the queue, so it keeps the queue's promises: a change is
visible once durable.

The host: ``call(fn, *args)`` (from any thread: run fn soon in the host thread),
``call_later(seconds, fn, *args)`` (a timer with ``cancel()``), ``call_sync(fn, *args)``
(from another thread: run fn in the host thread, wait, return or raise its outcome) and
``seconds()`` (the timers' clock, for delays and ages).

A link: ``name``, ``slots``, ``containment`` (text), and, each answering ``done(value)``
in the host thread with a value or an exception: ``launch(spec, done)`` -> info dict,
``fetch(job, attempt, offset, max_bytes, done)`` -> bytes, ``control(job, attempt, action,
signum, done)`` -> (ok, message) with action "signal", "terminate" or "kill",
``lookup(job, attempt, done)`` -> info dict or None, ``attempts(done)`` -> [info dict];
``forget(job, attempt)``; and ``subscribe(listener)``: the link then calls
``listener.link_event(link_name, event)`` with ("output", job, attempt, size), ("started",
info), ("usage", job, attempt, bytes its processes hold now) or ("ended", job, attempt,
result). An info dict has job, attempt, pid, pgid, cgroup,
started, deadline, output_size and result (None while running, else a dict with
exit_status, signal, timed_out, error, ended and, for attempts a node lost, lost); the
result of an "ended" event also has the output's final size, output_size (a node of an
earlier version may leave it out: its output is then read until a read comes back empty).
"""

import collections
import fnmatch
import heapq
import logging
import random
import time

from jqueue import commandjob, constants, errors, ptypes
from jqueue.job import timestamp, ts_to_float
from jqueue.run.placement import NoMatchingNode, Placement

logger = logging.getLogger(__name__)

#: Output bytes read per fetch: under the daemons' mmap threshold (1 MiB, see
#: jqueue.daemon.common.tune_malloc) with the record's header, so that the piece, its
#: journal record and its frame come from the heap and are reused, instead of three
#: fresh mappings per MiB whose pages the kernel zeroes and faults in (15% of
#: jq-masterd's time while a command wrote 400 MB).
FETCH_BYTES = 960 * 1024
#: Output bytes of one attempt read ahead of the journal (not durable yet).
INFLIGHT_BYTES = 8 * 1024 * 1024
#: Output past the log's cap freed on its node in pieces of at least this.
RELEASE_BYTES = constants.OUTPUT_RELEASE_BYTES
#: Seconds between two journaled progress changes of one job.
PROGRESS_INTERVAL = 0.5
#: Seconds before a node that could not be reached is tried again (NOXFER), doubling
#: with each start of the job that fails in a row, up to NOXFER_DELAY_MAX.
NOXFER_DELAY = 5.0
NOXFER_DELAY_MAX = 60.0
#: Attempts begun on a node, and attempts launched, in one turn of the host's loop. With
#: 1,000 slots, a burst of 1,000 `true` jobs on one machine was begun in one turn (a
#: banner and a new log file each) and, its starts durable together, launched in one
#: (a few ms each): a QueryJobs sent meanwhile waited 1.4-2.2 s (4.3 s after a mass
#: deletion on ext4 without a journal) for its answer; 64 at a time, 0.4-0.6 s.
LAUNCH_SLICE = 64
#: ... and the loop's time a turn spends on them (at least one each turn): a launch on
#: this machine spawns its shim (1-2 ms), one on a node only queues a call to it. At 64
#: a turn, a slice of local launches held the loop 100 ms and the QueryJobs waited
#: 0.20-0.32 s (median; 0.34-0.67 at most); at 10 ms, 0.04 (0.05-0.06), at the same
#: rate, while a node's launches still leave 64 at a time in one call.
SLICE_SECONDS = 0.01
#: Seconds before a change the disk refused (its log or journal) is tried again.
WRITE_RETRY = 1.0
#: Node health (jq-masterd's options ping_interval, ping_misses, lost_grace).
PING_INTERVAL = 2.0
PING_MISSES = 3
LOST_GRACE = 300.0
#: Seconds a stop waits for the node links' threads once their calls were aborted.
LINK_STOP_WAIT = 2.0
#: Seconds the table of where jobs wait in the nodes' queues serves (wait_reason_unlocked).
PLACES_AGE = 0.5
#: Seconds added to an attempt's timeout and kill_grace for when it has surely ended (its
#: launch, its node's prolog and epilog: an estimate for backfill, see _Backfill).
END_MARGIN = 5.0


class _Attempt:
    """What the runner follows of one attempt on a node."""

    __slots__ = ("job_id", "op_index", "number", "node", "out", "size", "fetching", "result",
                 "inflight", "stop", "tracker", "capped", "last_byte", "progress_at",
                 "progress_timer", "launched", "contained", "stop_unsent", "durable_out",
                 "released", "cap_out", "rss", "memory", "ends_by")

    def __init__(self, job_id, op_index, number, node, out=0, memory=0, ends_by=None):
        self.job_id, self.op_index, self.number, self.node = job_id, op_index, number, node
        self.memory = memory            # bytes it holds of its node's memory (memory_max)
        self.ends_by = ends_by          # when it has surely ended (epoch s; no timeout: None)
        self.out = out                  # output bytes logged (journaled)
        self.size = 0                   # output bytes the node reported
        self.fetching = False
        self.result = None              # the node's result once it ended
        self.inflight = 0               # bytes journaled, not durable yet
        self.stop = None                # None, or why it is being stopped ("cancel", ...)
        self.tracker = None
        self.capped = False
        self.last_byte = b"\n"
        self.progress_at = 0.0
        self.progress_timer = None
        self.launched = False
        self.contained = None           # its cgroup or process group, once the node said
        self.stop_unsent = False        # its stop found the node unreachable: sent again
        self.durable_out = out          # output bytes durable here (kept or dropped)
        self.cap_out = None             # where on the node the output past the cap begins
        self.released = 0               # the node was told to free its output up to there
        self.rss = None                 # bytes its processes held at the node's last look


def ends_by(params, started):
    """When an attempt of a command (its params) begun at started (epoch seconds) has
    surely ended: its timeout, kill_grace and END_MARGIN later; None without a timeout."""
    timeout = params.get("timeout") or 0
    if not timeout:
        return None
    return started + timeout + params.get("kill_grace", 10) + END_MARGIN


class _Backfill:
    """What may start on a node beside the job at the head of its queue that waits for
    memory there (EASY backfill, as Slurm's): from the running attempts' ends (their
    timeouts), the time by which it can start at the latest (``shadow``), the memory it
    leaves free then (``extra``) and the slots (``spare``). A job behind it that fits now
    may start if it surely ends before the shadow time, or if it takes only extra memory
    and a spare slot (it holds them beyond). Without a shadow time (an attempt whose memory
    it needs has no timeout), nothing overtakes it."""

    def __init__(self, attempts, total, reserved, slots, memory):
        free, shadow = total - reserved, None
        for attempt in sorted((a for a in attempts if a.ends_by is not None),
                              key=lambda a: a.ends_by):
            if free >= memory:
                break
            free += attempt.memory
            shadow = attempt.ends_by
        if free < memory:
            shadow = None  # it needs memory held by a command without a timeout
        self.shadow = shadow
        if shadow is not None:
            ended = [a for a in attempts if a.ends_by is not None and a.ends_by <= shadow]
            self.extra = total - reserved + sum(a.memory for a in ended) - memory
            self.spare = slots - (len(attempts) - len(ended)) - 1

    def admits(self, memory, ends):
        """Whether a job holding memory that surely ends by ends (None: unknown) may start
        now without delaying the head's start (taking extra memory and a spare slot)."""
        if self.shadow is None:
            return False
        if ends is not None and ends <= self.shadow:
            return True
        if memory <= self.extra and self.spare > 0:
            self.extra -= memory
            self.spare -= 1
            return True
        return False


def _backfill_text(shadow, now):
    """What may overtake a job waiting for memory (see _Backfill)."""
    if shadow is None:
        return "nothing behind it starts first: a command holding memory it needs has " \
            "no timeout"
    return "it starts within %ds at the latest (by the timeouts of those running): a job " \
        "behind it starts first if its timeout ends before then, or if it fits beside " \
        "it" % max(0, round(shadow - now))


class CommandRunner:
    """Runs command opcodes of a JobQueue on nodes reached through links."""

    def __init__(self, queue, host, links, default_node, rand=random.random,
                 log_max_bytes=constants.DEFAULT_LOG_MAX_BYTES,
                 ping_interval=PING_INTERVAL, ping_misses=PING_MISSES, lost_grace=LOST_GRACE,
                 service_log_rate=constants.DEFAULT_SERVICE_LOG_RATE):
        self._queue = queue
        self._host = host
        #: on_degraded(node, why): a node's epilog failed (host thread, under the queue's
        #: lock: it may only start work); the cluster master drains it if so configured.
        self.on_degraded = None
        self._links = {}
        self._default_node = default_node
        self._rand = rand
        self._log_max = log_max_bytes
        self.service_log_rate = service_log_rate  # for the ServiceManager
        self._pending = {}      # node -> heap of (priority, job id, op index)
        self._running = {}      # node -> count of attempts holding a slot
        self._reserved = collections.Counter()  # node -> bytes its attempts' memory_max hold
        #: node -> (the job at its queue's head waiting for memory, its backfill's shadow)
        self._memory_blocked = {}
        self._attempts = {}     # job id -> _Attempt
        self._timers = {}       # job id -> retry timer
        self._dispatch_retries = {}  # node -> the timer trying its starts again
        self._placement = Placement()
        self._unplaced = {}     # job id -> op index: waiting for a node to match or come up
        self._places_table = None  # (built, enqueued, {job: (node, ahead)}, {node: [jobs]})
        self._enqueued = 0         # jobs queued on nodes so far
        self._ping_interval, self._ping_misses = ping_interval, ping_misses
        self._lost_grace = lost_grace
        self._lost_timers = {}  # node -> the timer ending its attempts NODE_LOST
        self._health_timer = None
        self._forgetting = set()  # (node, job, attempt) whose end is being recorded
        self._to_launch = collections.deque()  # attempts whose start is durable, in order
        self._launch_queued = False  # a _launch_slice waits in the host's calls
        self._dispatching = set()  # nodes whose _dispatch_now waits in the host's calls
        self._stopped = False
        #: The ServiceManager (jqueue.run.services) hearing of services and node health.
        self.services = None
        for link in links:
            self.add_link(link)

    @property
    def host(self):
        """The host thread's interface (links answer through it)."""
        return self._host

    # Links

    def add_link(self, link):
        """Run attempts on link's node from now on."""
        self._links[link.name] = link
        if hasattr(link, "stale_after"):  # a remote node's: see jqueue.cluster.nodeexec
            link.stale_after = self._lost_grace
        self._pending.setdefault(link.name, [])
        self._running.setdefault(link.name, 0)
        self._placement.set_tags(link.name, getattr(link, "tags", ()))
        link.subscribe(self)
        if not self._stopped:
            self._nodes_changed()

    def remove_link(self, name):
        """Node name left the queue: nothing runs or is placed there from now on (a job
        still pinned to it ends INTERR when it would start: _place)."""
        link = self._links.pop(name, None)
        if link is None:
            return
        self._pending.pop(name, None)
        self._running.pop(name, None)
        self._reserved.pop(name, None)
        self._memory_blocked.pop(name, None)
        self._placement.remove(name)
        timer = self._lost_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        stop = getattr(link, "stop", None)
        if stop is not None:
            stop()
        if not self._stopped:
            self._nodes_changed()

    def node_holdings(self, name):
        """What keeps node name in the queue (blocking; any thread): ([job ids whose
        command runs there or is pinned to it], [names of services placed there])."""
        return self._host.call_sync(self._holdings, name)

    def _holdings(self, name):
        jobs = {job_id for job_id, attempt in self._attempts.items() if attempt.node == name}
        queue = self._queue
        with queue._lock:
            for job in queue._jobs.values():
                if job.is_finalized():
                    continue
                if any(op.status not in constants.OPS_FINALIZED
                       and op.input.get("OP_ID") == constants.OP_COMMAND_RUN
                       and op.input.get("node") == name for op in job.ops):
                    jobs.add(job.id)
            services = sorted(record["name"] for record in queue._services.services.values()
                              if record.get("node") == name)
        return sorted(jobs), services

    def nodes_changed(self):
        """Nodes' tags, drain or offline flags changed (any thread): place and start again."""
        self._host.call(self._nodes_changed)

    def reconfigure_node(self, name, **changes):
        """A node of this process (a LocalLink) has new slots, tags or allowed users (a
        reload; any thread): placed and started again by them."""
        def apply():
            link = self._links.get(name)
            if link is not None:
                link.reconfigure(**changes)
                self._nodes_changed()
        self._host.call(apply)

    def set_log_max_bytes(self, size):
        """Logs grow to size bytes from now on (a reload): a job's log keeps its first
        size bytes, a service's its last."""
        self._log_max = size

    def node_names(self):
        return sorted(self._links)

    def node_of(self, params):
        """The node an opcode names (its ``node``, else the master's without an affinity)."""
        return params.get("node") or self._default_node

    def check_submit(self, params):
        """OpPrereqError if a command opcode can never run here: an unknown node, a node
        without the affinity's tags, or a run_as user its node refuses (when the node can
        tell the master at once). An affinity no node holds is not refused: the job waits
        (NO_MATCHING_NODE) for a node to get the tags. A fan-out (nodes) is checked by
        fan_out, and each of its jobs here once expanded."""
        if params.get("nodes") is not None:
            return
        node = self.node_of(params)
        if node not in self._links:
            raise errors.OpPrereqError("opcode %s: unknown node %s (nodes: %s)" % (
                constants.OP_COMMAND_RUN, node, ", ".join(self.node_names()) or "none"),
                constants.ECODE_NOENT)
        affinity = params.get("affinity") or []
        if params.get("node") and not self._placement.holds(node, affinity):
            raise errors.OpPrereqError(
                "opcode %s: node %s has not the tags %s of the affinity (its tags: %s)" % (
                    constants.OP_COMMAND_RUN, node, ",".join(affinity),
                    ",".join(sorted(self._placement.tags(node))) or "none"),
                constants.ECODE_INVAL)
        if affinity and not params.get("node"):
            return  # its node is chosen when it runs
        too_big = self._memory_too_big(node, params.get("memory_max") or 0)
        if too_big is not None:
            raise errors.OpPrereqError("opcode %s: %s" % (constants.OP_COMMAND_RUN, too_big),
                                       constants.ECODE_INVAL)
        check_user = getattr(self._links[node], "check_user", None)
        refusal = check_user(params.get("run_as")) if check_user is not None else None
        if refusal is not None:  # where the master can tell (this machine): at submit
            raise errors.OpPrereqError("opcode %s: %s" % (constants.OP_COMMAND_RUN, refusal),
                                       constants.ECODE_INVAL)

    def fan_out(self, params):
        """The nodes a fan-out (the opcode's ``nodes``) runs on, in name order.

        A list names its nodes: each must be a node of this queue with the affinity's
        tags (a drained or unreachable one is kept: its job waits for it). A glob picks
        every node whose name matches it and that has the tags, drained and offline
        ones left out. OpPrereqError if a named node is unknown or lacks the tags, or if
        no node matches.
        """
        spec, affinity = params["nodes"], params.get("affinity") or []
        if isinstance(spec, list):
            for name in spec:
                self.check_submit(dict(params, node=name, nodes=None))
            return list(spec)
        names = [name for name in self.node_names()
                 if fnmatch.fnmatchcase(name, spec) and self._placement.holds(name, affinity)
                 and not getattr(self._links.get(name), "drained", False)
                 and not getattr(self._links.get(name), "offline", False)]
        if not names:
            raise errors.OpPrereqError(
                "opcode %s: no node matches %s%s (nodes: %s)" % (
                    constants.OP_COMMAND_RUN, spec,
                    " with the tags %s" % ",".join(affinity) if affinity else "",
                    ", ".join(self.node_names()) or "none"), constants.ECODE_NOENT)
        return names

    # Entry points (any thread)

    def enqueue_unlocked(self, job, op_index):
        """The processor reached a command opcode of job (the queue lock is held)."""
        self._host.call(self._enqueue, job.id, op_index)

    def cancel_unlocked(self, job, kill):
        """job (canceling) has an attempt on a node: stop it (the queue lock is held)."""
        self._host.call(self._stop, job.id, "kill" if kill else "cancel")

    def hold_unlocked(self, job):
        """job was held while an attempt of it is on a node: stop the attempt (TERM, then
        KILL after its grace); the opcode goes back to queued and the attempt does not
        count (the queue lock is held)."""
        self._host.call(self._stop, job.id, "hold")

    def signal(self, job_id, signum):
        """Send signal signum to every process of job_id's running attempt: (ok, message)."""
        return self._host.call_sync(self._signal_sync, job_id, "signal", signum)

    def terminate(self, job_id, kill=False):
        """TERM (then KILL after the grace), or KILL now, to job_id's attempt."""
        return self._host.call_sync(self._signal_sync, job_id, "kill" if kill else "terminate",
                                    None)

    def running(self, node=None):
        """Attempts on nodes, as QueryRunning lists them (blocking; any thread);
        OpPrereqError (not found) for a node this queue does not have."""
        if node is not None and node not in self._links:
            raise errors.OpPrereqError("unknown node %s (nodes: %s)" % (
                node, ", ".join(self.node_names()) or "none"), constants.ECODE_NOENT)
        return self._host.call_sync(self._running_rows, node)

    def node_status(self):
        """{node: {reachable, last_heard, tags, drained, offline, slots, used, queued,
        running: [job ids], resources, degraded: why or None, mem_held: bytes the
        memory_max of its running commands hold}} (blocking; any thread)."""
        return self._host.call_sync(self._node_rows)

    def recover(self):
        """Reconcile attempts journaled as on a node with their nodes (after opening)."""
        self._host.call(self._recover)

    def stop(self):
        """The queue is closing: start and record nothing more (attempts keep running on
        their nodes; the next opening reconciles them)."""
        self._stopped = True
        self._host.call(self._stop_all)

    def _stop_all(self):
        if self.services is not None:
            self.services.stop()
        timers, self._timers = self._timers, {}
        timers.update(("lost:%s" % n, t) for n, t in self._lost_timers.items())
        timers.update(("dispatch:%s" % n, t) for n, t in self._dispatch_retries.items())
        self._lost_timers, self._dispatch_retries = {}, {}
        if self._health_timer is not None:
            timers["health"], self._health_timer = self._health_timer, None
        for timer in timers.values():
            timer.cancel()
        for attempt in self._attempts.values():
            if attempt.progress_timer is not None:
                attempt.progress_timer.cancel()
        for link in self._links.values():
            stop = getattr(link, "stop", None)
            if stop is not None:
                stop()
        deadline = time.monotonic() + LINK_STOP_WAIT  # one wait for all: they end together
        for link in self._links.values():
            join = getattr(link, "join", None)
            if join is not None:
                join(deadline)

    # Queueing and starting attempts (host thread)

    def _enqueue(self, job_id, op_index):
        if self._stopped:
            return
        queue = self._queue
        with queue._lock:
            job = queue._jobs.get(job_id)
            if job is None or not self._wants_start_unlocked(job, op_index):
                return
            op = job.ops[op_index]
            state = op.exec_state or {}
            node = self.node_of(op.input)
            retry_at = state.get("retry_at")
            if state.get("state") == constants.ATTEMPT_RETRY_WAIT and retry_at:
                delay = retry_at - queue._clock()
                if delay > 0:
                    if op.status != constants.OP_STATUS_WAITING:  # requeued by a restart
                        op.status = constants.OP_STATUS_WAITING
                        queue._record_state_unlocked(job)
                    self._arm_retry(job_id, op_index, delay)
                    return
            priority = job.calc_priority()
            params = op.input
        node = self._place(job_id, op_index, params)
        if node is None:
            return
        heapq.heappush(self._pending[node], (priority, job_id, op_index))
        self._enqueued += 1
        self._dispatch(node)

    def _place(self, job_id, op_index, params):
        """The node whose queue the job joins now, or None (it waits, or it ended)."""
        self._unplaced.pop(job_id, None)
        affinity = params.get("affinity") or []
        if params.get("node") or not affinity:
            node = self.node_of(params)
            if node not in self._links:
                self._end_unstarted(job_id, op_index, constants.REASON_INTERR,
                                    "node %s is not a node of this queue" % node)
                return None
            if not getattr(self._links[node], "reachable", True):
                self._note_unreachable(job_id, op_index, node)
            return node  # pinned: it waits there while the node is unavailable
        memory = params.get("memory_max") or 0
        try:
            node = self._placement.choose(affinity, lambda name: self._available(name) and (
                self._memory_too_big(name, memory) is None), self._load)
        except NoMatchingNode as err:
            self._unplaced[job_id] = op_index
            self._note_waiting(job_id, op_index, constants.REASON_NO_MATCHING_NODE, str(err))
            return None
        if node is None:
            self._unplaced[job_id] = op_index
            too_small = self._none_big_enough(affinity, memory)
            if too_small:
                self._note_waiting(job_id, op_index, constants.REASON_NO_MATCHING_NODE,
                                   too_small)
            else:
                self._note_waiting(job_id, op_index, constants.REASON_NOPING,
                                   "no node with the tags %s is available" % ",".join(affinity))
        return node

    def _none_big_enough(self, affinity, memory):
        """Why no node with the tags of affinity can ever run a command asking memory
        bytes (each has less), or None if one may."""
        nodes = self._placement.matching(affinity)
        if not memory or not nodes or any(self._memory_too_big(name, memory) is None
                                          for name in nodes):
            return None
        return "no node with the tags %s has the %s its memory_max asks (the largest: %s)" % (
            ",".join(sorted(affinity)) or "(any)", ptypes.human_bytes(memory),
            ptypes.human_bytes(max(self._memory_of(name) for name in nodes)))

    def _note_waiting(self, job_id, op_index, reason, message):
        """Record (once per reason) why a job waits for a node: visible, and an event."""
        queue = self._queue
        with queue._lock:
            job = queue._jobs.get(job_id)
            if job is None or not self._wants_start_unlocked(job, op_index):
                return
            op = job.ops[op_index]
            state = op.exec_state or {}
            if state.get("reason") == reason and state.get("state") == "waiting_node":
                return
            op.exec_state = dict(state, state="waiting_node", reason=reason, message=message,
                                 max_attempts=commandjob.allowed_attempts(op.input, state))
            queue._record_event_unlocked(reason, job_id, None, "attempt", message)
            queue._record_state_unlocked(job)

    def _available(self, node):
        """Whether attempts may start on node now (reachable, not drained nor offline)."""
        return self._unavailable(node) is None

    def _unavailable(self, node):
        """Why attempts may not start on node now, or None if they may."""
        link = self._links.get(node)
        if link is None:
            return "%s is not a node of this queue" % node
        if getattr(link, "offline", False):
            return "%s is offline" % node
        if getattr(link, "drained", False):
            return "%s is drained (no new commands start there)" % node
        if not getattr(link, "reachable", True):
            return "%s does not answer" % node
        return None

    # Why a command waits (any thread, under the queue's lock)

    def wait_reason_unlocked(self, job, op_index):
        """(code, message) of why command opcode op_index of job, pending, does not start
        now, or None (see JobControl.wait_reason_unlocked). It reads the host thread's
        tables by copies and never waits for that thread (which takes the queue's lock)."""
        if job.id in self._attempts:
            return None
        state = job.ops[op_index].exec_state or {}
        if state.get("state") == constants.ATTEMPT_RETRY_WAIT and state.get("retry_at"):
            return constants.WAIT_BACKOFF, "its next attempt waits out the back-off after " \
                "one that ended %s (retry_at)" % state.get("reason")
        if self._unplaced.get(job.id) == op_index:
            return self._unplaced_reason(job.ops[op_index].input)
        place = self._places(job.id)
        if place is None:
            return None
        node, ahead, running = place
        why, link = self._unavailable(node), self._links.get(node)
        if why is not None or link is None:
            return constants.WAIT_NODE, why or "%s is not a node of this queue" % node
        slots = max(1, link.slots)
        if self._running.get(node, 0) < slots:
            return self._memory_reason(job, op_index, node, ahead)
        text = "%s of %s %s busy (%s %s)" % (
            "the slot" if slots == 1 else "all %d slots" % slots, node,
            "is" if slots == 1 else "are", "job" if len(running) == 1 else "jobs",
            _some(running))
        if ahead:
            text += "; %d job%s before it in %s's queue" % (ahead, "" if ahead == 1 else "s",
                                                          node)
        return constants.WAIT_SLOTS, text

    def _memory_reason(self, job, op_index, node, ahead):
        """(WAIT_MEMORY, why) of a job in node's queue while slots are free there: it, or
        the job at the queue's head, waits for memory; None if it starts now."""
        memory = job.ops[op_index].input.get("memory_max") or 0
        blocked, shadow = self._memory_blocked.get(node) or (None, None)
        if not ahead and self._memory_short(node, memory):
            holders = sorted(a.job_id for a in list(self._attempts.values())
                             if a.node == node and a.memory)
            return constants.WAIT_MEMORY, "its memory_max (%s) and those of the commands " \
                "running on %s (%s %s), %s in all, are more than its memory (%s)" % (
                    ptypes.human_bytes(memory), node,
                    "job" if len(holders) == 1 else "jobs", _some(holders),
                    ptypes.human_bytes(self._reserved[node] + memory),
                    ptypes.human_bytes(self._memory_of(node)))
        if ahead and blocked is not None and blocked != job.id:
            return constants.WAIT_MEMORY, "job %d, first in %s's queue, waits for memory " \
                "(%d job%s before it in the queue); %s" % (
                    blocked, node, ahead, "" if ahead == 1 else "s", _backfill_text(
                        shadow, self._queue._clock()))
        return None

    def _unplaced_reason(self, params):
        """Why a job with an affinity has no node now: none has its tags, or those that
        have them are unavailable (each one's reason)."""
        affinity = params.get("affinity") or []
        nodes = sorted(self._placement.matching(affinity))
        if not nodes:
            return constants.WAIT_NO_MATCHING_NODE, "no node has the tags %s" % ",".join(
                sorted(affinity))
        too_small = self._none_big_enough(affinity, params.get("memory_max") or 0)
        if too_small:
            return constants.WAIT_NO_MATCHING_NODE, too_small
        reasons = [why for why in map(self._unavailable, nodes) if why is not None]
        if not reasons:
            return None  # one came up: it is being placed
        return constants.WAIT_NODE, "every node with the tags %s is unavailable: %s" % (
            ",".join(sorted(affinity)), _some(reasons, "; "))

    def _places(self, job_id):
        """(node, jobs before it in that node's queue, [jobs running there]) of a job
        waiting in a node's queue, or None. From a table of every queue, rebuilt once
        PLACES_AGE seconds old, or at once for a job it lacks if jobs were queued since
        (one just queued): a listing of 10^5 jobs builds it about once."""
        now, enqueued = time.monotonic(), self._enqueued
        table = self._places_table
        if table is None or now - table[0] > PLACES_AGE or (
                job_id not in table[2] and enqueued != table[1]):
            table = self._places_table = (now, enqueued) + self._build_places()
        found = table[2].get(job_id)
        if found is None:
            return None
        node, ahead = found
        return node, ahead, table[3].get(node, [])

    def _build_places(self):
        """(Under the queue's lock.) The places of the jobs that still want to start: an
        entry of one canceled or held meanwhile stays in its heap until popped, and is
        not counted before the others."""
        places, jobs = {}, self._queue._jobs
        for node, heap in list(self._pending.items()):
            ahead = 0
            for _, job_id, op_index in sorted(list(heap)):
                job = jobs.get(job_id)
                if (job_id in places or job is None
                        or not self._wants_start_unlocked(job, op_index)):
                    continue
                places[job_id] = (node, ahead)
                ahead += 1
        running = {}
        for attempt in list(self._attempts.values()):
            running.setdefault(attempt.node, []).append(attempt.job_id)
        return places, {node: sorted(ids) for node, ids in running.items()}

    def _load(self, node):
        slots = max(1, self._links[node].slots)
        return (self._running[node] + len(self._pending[node])) / slots

    # Memory: a command's memory_max is held of its node's memory while it runs

    def _occupy(self, attempt):
        """attempt holds a slot of its node, and its memory_max of the node's memory."""
        self._running[attempt.node] += 1
        self._reserved[attempt.node] += attempt.memory

    def _vacate(self, attempt):
        self._running[attempt.node] -= 1
        self._reserved[attempt.node] -= attempt.memory

    def _memory_of(self, node):
        """The memory of node's machine for commands in bytes (its MemTotal less its
        memory_reserve, as it last said), or None while not known (then memory_max is not
        weighed there)."""
        link = self._links.get(node)
        return commandjob.memory_for_commands(getattr(link, "resources", None))

    def _memory_too_big(self, node, memory):
        """Why a command asking memory bytes can never run on node (its machine has less),
        or None."""
        total = self._memory_of(node) if memory else None
        if total is not None and memory > total:
            return "its memory_max (%s) is more than the memory of node %s (%s)" % (
                ptypes.human_bytes(memory), node, ptypes.human_bytes(total))
        return None

    def _memory_short(self, node, memory):
        """Whether node lacks memory for a command asking memory bytes now: the memory_max
        of the attempts running there and memory together are more than its machine's."""
        total = self._memory_of(node) if memory else None
        return total is not None and self._reserved[node] + memory > total

    def _nodes_changed(self):
        """Tags or availability changed: evict jobs a node may no longer run, place the
        waiting ones again, start what can start."""
        if self._stopped:
            return
        for name, link in self._links.items():
            self._placement.set_tags(name, getattr(link, "tags", ()))
            if not self._available(name):
                self._evict(name)
        for job_id, op_index in list(self._unplaced.items()):
            self._enqueue(job_id, op_index)
        for name in self._links:
            self._dispatch(name)

    def _evict(self, node):
        """Jobs queued on a node that cannot start them now and are not pinned to it go
        back to placement (pinned ones wait for their node)."""
        kept = []
        for entry in self._pending[node]:
            _, job_id, op_index = entry
            with self._queue._lock:
                job = self._queue._jobs.get(job_id)
                pinned = job is not None and job.ops[op_index].input.get("node")
            if pinned or job is None:
                kept.append(entry)
            else:
                self._unplaced[job_id] = op_index
        heapq.heapify(kept)
        self._pending[node] = kept
        if not getattr(self._links[node], "reachable", True):
            for _, job_id, op_index in kept:
                self._note_unreachable(job_id, op_index, node)

    def _note_unreachable(self, job_id, op_index, node):
        self._note_waiting(job_id, op_index, constants.REASON_NOPING,
                           "node %s does not answer" % node)

    def _wants_start_unlocked(self, job, op_index):
        if job.next_op_index() != op_index or job.id in self._attempts:
            return False
        if not self._queue._may_start_unlocked(job):  # held meanwhile
            return False
        op = job.ops[op_index]
        state = (op.exec_state or {}).get("state")
        return (op.status in (constants.OP_STATUS_QUEUED, constants.OP_STATUS_WAITING)
                and state not in constants.ATTEMPTS_ON_NODE)

    def _unsure_start_unlocked(self, job, op_index):
        """(node, info) of the start of job's opcode that a NOXFER left unsure (the call
        may have reached the node before it failed) once the job ended or is held, else
        None. A held job's next attempt is numbered after that one, which does not count
        (a retry adopts an attempt the node holds; a held job must not run meanwhile)."""
        if job is None:
            return None
        ended = job.calc_status() in constants.JOBS_FINALIZED
        if not ended and not job.held:
            return None
        op = job.ops[op_index]
        state = op.exec_state or {}
        node = state.get("node") or self.node_of(op.input)
        if (state.get("reason") != constants.REASON_NOXFER
                or state.get("state") != constants.ATTEMPT_RETRY_WAIT
                or node not in self._links):
            return None
        number = (state.get("attempt") or 0) + 1
        if not ended:
            op.exec_state = dict(state, state=constants.ATTEMPT_PENDING, attempt=number,
                                 uncounted=state.get("uncounted", 0) + 1, retry_at=None)
            self._queue._record_state_unlocked(job)
        return node, {"job": job.id, "attempt": number, "result": None}

    def _arm_retry(self, job_id, op_index, delay):
        old = self._timers.pop(job_id, None)
        if old is not None:
            old.cancel()
        self._timers[job_id] = self._host.call_later(delay, self._retry_due, job_id, op_index)

    def _retry_due(self, job_id, op_index):
        if self._stopped:
            return
        self._timers.pop(job_id, None)
        queue = self._queue
        with queue._lock:
            job = queue._jobs.get(job_id)
            wanted = job is not None and self._wants_start_unlocked(job, op_index)
            if wanted:
                op = job.ops[op_index]
                op.exec_state = dict(op.exec_state, state=constants.ATTEMPT_PENDING,
                                     retry_at=None)
            else:
                unsure = self._unsure_start_unlocked(job, op_index)
        if wanted:
            self._enqueue(job_id, op_index)
        elif unsure is not None:  # canceled or held meanwhile: fence that start
            self._fence(*unsure)

    def _dispatch(self, node):
        """Start queued attempts on node while it has free slots, in the host's next turn
        (once for all the calls of this one: a burst of submissions is started from the
        whole queue, the first by priority)."""
        if node not in self._dispatching:
            self._dispatching.add(node)
            self._host.call(self._dispatch_now, node)

    def _dispatch_now(self, node):
        """Start up to LAUNCH_SLICE queued attempts on node, for up to SLICE_SECONDS, while
        it has free slots; the rest in the host's next turn."""
        self._dispatching.discard(node)
        link = self._links.get(node)
        if self._stopped or link is None:  # (an attempt on a node gone from the queue)
            return
        heap = self._pending[node]
        if not self._available(node):
            return
        self._memory_blocked.pop(node, None)
        backfill, passed = None, []  # once the head waits for memory: who may overtake it
        try:
            self._start_queued(node, link, heap, passed, backfill)
        finally:
            for entry in passed:
                heapq.heappush(heap, entry)

    def _start_queued(self, node, link, heap, passed, backfill):
        """_dispatch_now's loop: start what the slots and memory allow, the entries left in
        the heap for later put in passed."""
        budget, deadline = LAUNCH_SLICE, self._host.seconds() + SLICE_SECONDS
        while heap and self._running[node] < max(1, link.slots):
            if not budget or budget < LAUNCH_SLICE and self._host.seconds() >= deadline:
                self._dispatch(node)
                return
            priority, job_id, op_index = heapq.heappop(heap)
            queue = self._queue
            with queue._lock:
                job = queue._jobs.get(job_id)
                if job is None or not self._wants_start_unlocked(job, op_index):
                    continue
                current = job.calc_priority()
                if current != priority:
                    heapq.heappush(heap, (current, job_id, op_index))
                    continue
                params = job.ops[op_index].input
                memory = params.get("memory_max") or 0
                too_big = self._memory_too_big(node, memory)
                if too_big is None and (self._memory_short(node, memory) or (
                        backfill is not None and not backfill.admits(
                            memory, ends_by(params, queue._clock())))):
                    passed.append((priority, job_id, op_index))
                    if backfill is None:
                        # The head waits for memory: what is behind it starts first only
                        # where it cannot delay it (else it could wait for ever).
                        backfill = _Backfill(
                            [a for a in self._attempts.values() if a.node == node],
                            self._memory_of(node), self._reserved[node],
                            max(1, link.slots), memory)
                        self._memory_blocked[node] = (job_id, backfill.shadow)
                        if backfill.shadow is None:
                            return
                    continue
                try:
                    batch = None if too_big else self._begin_attempt_unlocked(
                        job, op_index, node,
                        None if backfill is None else self._memory_blocked[node][0])
                except (errors.GenericError, OSError) as err:
                    passed.append((priority, job_id, op_index))
                    self._dispatch_later(err, job_id, node)
                    return
            if too_big is not None:
                self._end_unstarted(job_id, op_index, constants.REASON_INTERR, too_big)
                continue
            budget -= 1
            self._occupy(self._attempts[job_id])
            batch.add_done_callback(
                lambda done, job_id=job_id: self._host.call(self._starting_durable, job_id,
                                                            done.error))

    def _dispatch_later(self, err, job_id, node):
        """A start on node failed (a full disk): try the node's starts again in a while.

        Every submission and every attempt's end dispatches again; while the disk stays
        full each of those would add a timer of its own and a log line every WRITE_RETRY
        seconds. One timer per node does: the calls that fail meanwhile say nothing.
        """
        if node not in self._dispatch_retries:
            self._dispatch_retries[node] = self._later(
                err, "start job %d" % job_id, self._dispatch_again, node)

    def _dispatch_again(self, node):
        self._dispatch_retries.pop(node, None)
        self._dispatch(node)

    def _begin_attempt_unlocked(self, job, op_index, node, ahead_of=None):
        """Journal the start of an attempt on node (ahead_of: the job waiting for memory
        it overtakes by backfill, said in its SEND event)."""
        queue = self._queue
        op = job.ops[op_index]
        previous = op.exec_state or {}
        number = previous.get("attempt", 0) + 1
        uncounted = previous.get("uncounted", 0)
        allowed = commandjob.allowed_attempts(op.input, previous)
        now = queue._clock()
        # First the banner: the one step that may fail (a full disk), before any change.
        link = self._links.get(node)
        queue._record_chunk_unlocked(job, op_index, 0, 0, commandjob.banner_start(
            op.input, job.id, number - uncounted, node, now,
            link.containment if link is not None else None, allowed, number))
        stamp = timestamp(now)
        op.status = constants.OP_STATUS_RUNNING
        op.start_timestamp = op.start_timestamp or stamp
        op.exec_timestamp = stamp
        if job.start_timestamp is None:
            job.start_timestamp = stamp
        op.exec_state = {
            "state": constants.ATTEMPT_STARTING, "node": node, "attempt": number,
            "max_attempts": allowed, "pid": None, "started": None,
            "exit_status": None, "signal": None, "timed_out": False, "reason": None,
            "message": None, "retry_at": None, "progress": previous.get("progress"),
            "global_progress": previous.get("global_progress"),
            "out": dict(previous.get("out") or {}), "uncounted": uncounted,
            "noxfers": previous.get("noxfers", 0), "unstarted": previous.get("unstarted", 0),
        }
        attempt = _Attempt(job.id, op_index, number, node,
                           memory=op.input.get("memory_max") or 0,
                           ends_by=ends_by(op.input, now))
        attempt.tracker = commandjob.ProgressTracker(op.input["progress_pattern"],
                                                     op.input.get("global_progress_pattern"))
        self._attempts[job.id] = attempt
        text = commandjob.attempt_text(number, uncounted, allowed)
        if ahead_of is not None:
            text += " (backfill: ahead of job %d, which waits for memory)" % ahead_of
        queue._record_event_unlocked("SEND", job.id, node, "attempt", text)
        return queue._record_state_unlocked(job)

    def _starting_durable(self, job_id, error):
        if self._stopped:
            return
        attempt = self._attempts.get(job_id)
        if attempt is None:
            return
        if error is not None:
            logger.error("job %d: the start of attempt %d was not acknowledged (%s); it is "
                         "launched once the journal takes it", job_id, attempt.number, error)
        self._to_launch.append(attempt)
        if not self._launch_queued:
            self._launch_queued = True
            self._host.call(self._launch_slice)

    def _launch_slice(self):
        """Launch the next LAUNCH_SLICE attempts whose start is durable, for up to
        SLICE_SECONDS; the rest in the host's next turn."""
        self._launch_queued = False
        deadline = self._host.seconds() + SLICE_SECONDS
        for done in range(min(LAUNCH_SLICE, len(self._to_launch))):
            if done and self._host.seconds() >= deadline:
                break
            attempt = self._to_launch.popleft()
            if self._attempts.get(attempt.job_id) is attempt:
                self._launch(attempt)
        if self._to_launch and not self._stopped:
            self._launch_queued = True
            self._host.call(self._launch_slice)

    def _launch(self, attempt):
        if self._stopped:
            return
        queue = self._queue
        with queue._lock:
            job = queue._jobs.get(attempt.job_id)
            if job is None:
                return
            op = job.ops[attempt.op_index]
            if attempt.stop is not None:
                spec = None
            else:
                spec = self._spec_unlocked(job, op, attempt)
        if spec is None:  # canceled before it was launched: it never runs
            self._finish(attempt, {"error": None, "exit_status": None, "signal": None,
                                   "timed_out": False, "never_ran": True})
            return
        self._links[attempt.node].launch(
            spec, lambda answer: self._launched(attempt, answer))

    def _spec_unlocked(self, job, op, attempt):
        """The attempt's spec for its node: the command's own variables and the base the
        node puts them over (its user database, its daemon's environment: not ours)."""
        params = op.input
        env = commandjob.environment(params, job.id, attempt.number, attempt.node)
        spec = {"job": job.id, "attempt": attempt.number,
                "argv": commandjob.command_argv(params["cmd"]), "dir": params["dir"],
                "env": env, "env_base": commandjob.env_base(params),
                "run_as": params.get("run_as"), "timeout": params["timeout"],
                "kill_grace": params["kill_grace"]}
        if params.get("memory_max"):  # only then: a node from before it refuses the key
            spec["memory_max"] = params["memory_max"]
        return spec

    def _launched(self, attempt, answer):
        if self._stopped:
            return
        if self._attempts.get(attempt.job_id) is not attempt:
            return
        if isinstance(answer, errors.CommandError) and not isinstance(
                answer, errors.CommandResourceError):  # it cannot run there: INTERR
            self._finish(attempt, {"error": errors.error_message(answer)})
            return
        if isinstance(answer, Exception):  # not now (no answer, or out of a resource)
            self._noxfer(attempt, answer)
            return
        attempt.launched = True
        self._record_info(attempt, answer)
        if attempt.stop is not None:
            self._send_stop(attempt)
        self._absorb_info(attempt, answer)

    def _absorb_info(self, attempt, info):
        """Follow what a node says of an attempt: its output size and, if ended, result."""
        attempt.size = max(attempt.size, info.get("output_size") or 0)
        if info.get("cgroup"):
            attempt.contained = "cgroup %s" % info["cgroup"]
        elif info.get("pgid"):
            attempt.contained = "process group %d (no cgroup)" % info["pgid"]
        if info.get("result") is not None:
            attempt.result = info["result"]
        self._pump(attempt)

    def _record_info(self, attempt, info):
        queue = self._queue
        with queue._lock:
            job = queue._jobs.get(attempt.job_id)
            if job is None:
                return
            op = job.ops[attempt.op_index]
            state = op.exec_state or {}
            pid = info.get("pid")
            if state.get("state") == constants.ATTEMPT_RUNNING and state.get("pid"):
                # Known already: an answer without it is older news (a launch's answer
                # that reaches us after the node's "started" event), never a loss of it.
                pid = pid or state["pid"]
                if state["pid"] == pid:
                    return
            op.exec_state = dict(state, state=constants.ATTEMPT_RUNNING, pid=pid,
                                 started=info.get("started"), noxfers=0)
            if pid and state.get("pid") != pid:
                queue._record_event_unlocked("RUN", job.id, attempt.node, "attempt", "%s pid %d" % (
                    commandjob.attempt_text(attempt.number, state.get("uncounted", 0),
                                            commandjob.allowed_attempts(op.input, state)),
                    pid))
            queue._record_state_unlocked(job)

    def _noxfer(self, attempt, err):
        """The node could not be asked: the attempt never started; try again later."""
        logger.warning("job %d: cannot start attempt %d on %s: %s", attempt.job_id,
                       attempt.number, attempt.node, errors.error_message(err))
        with self._queue._lock:
            job = self._queue._jobs.get(attempt.job_id)
            if job is not None and attempt.stop is None:  # its stop may come later
                if job.ops[attempt.op_index].status == constants.OP_STATUS_CANCELING:
                    attempt.stop = "kill" if job.kill_requested else "cancel"
                elif job.held:
                    attempt.stop = "hold"
        if attempt.stop is not None:  # canceled or held while its start was under way:
            # it ends (a hold's attempt uncounted, the next one numbered after it)
            self._finish(attempt, {"error": None, "exit_status": None, "signal": None,
                                   "timed_out": False, "never_ran": True})
            # The start may have reached the node before the call failed.
            self._fence(attempt.node, {"job": attempt.job_id, "attempt": attempt.number,
                                       "result": None})
            return
        queue = self._queue
        with queue._lock:
            job = queue._jobs.get(attempt.job_id)
            self._attempts.pop(attempt.job_id, None)
            self._vacate(attempt)
            if job is None:
                return
            op = job.ops[attempt.op_index]
            state = dict(op.exec_state)
            failures = state.get("noxfers", 0) + 1
            delay = min(NOXFER_DELAY * 2 ** min(failures - 1, 16), NOXFER_DELAY_MAX)
            state.update(state=constants.ATTEMPT_RETRY_WAIT, attempt=attempt.number - 1,
                         reason=constants.REASON_NOXFER, noxfers=failures,
                         message="cannot start on %s: %s (tried again in %gs)" % (
                             attempt.node, errors.error_message(err), delay),
                         retry_at=queue._clock() + delay)
            try:  # the log says why its START banner has no end (and comes again)
                queue._record_chunk_unlocked(job, attempt.op_index, 0, 0, commandjob.banner_note(
                    "NOXFER : " + state["message"]))
            except (errors.GenericError, OSError) as note_err:
                logger.warning("job %d: cannot note the NOXFER in its log: %s", job.id,
                               errors.error_message(note_err))
            op.exec_state = state
            op.status = constants.OP_STATUS_WAITING
            queue._record_event_unlocked(constants.REASON_NOXFER, job.id, attempt.node,
                                         "attempt", state["message"])
            queue._record_state_unlocked(job)
        self._arm_retry(attempt.job_id, attempt.op_index, delay)
        self._dispatch(attempt.node)

    # Link events (host thread)

    def link_event(self, node, event):
        """A node's news of an attempt (see the module docstring)."""
        if self._stopped:
            return
        kind = event[0]
        if kind == "node":  # the node answered again (its slots may have changed)
            if node in self._links:  # what it holds: a stop, kill or forget it missed, again
                self._links[node].attempts(lambda infos: self._reconcile_node(node, infos))
                self._dispatch(node)
                if self.services is not None:
                    self.services.node_contact(node)
            return
        if kind.startswith("svc"):  # news of supervised services
            if self.services is not None:
                self.services.link_event(node, event)
            return
        if kind == "started":
            info = event[1]
            attempt = self._known(node, info["job"], info["attempt"])
            if attempt is not None:
                self._record_info(attempt, info)
            self._reported(node, attempt, info)
            return
        _, job_id, number, value = event
        attempt = self._known(node, job_id, number)
        if attempt is None:
            if kind == "ended":
                self._fence(node, {"job": job_id, "attempt": number, "result": value})
            return
        if kind == "usage":  # kept for QueryRunning only: nothing to fetch
            attempt.rss = value
            return
        if kind == "output":
            attempt.size = max(attempt.size, value)
            if attempt.stop_unsent:
                self._send_stop(attempt)
        elif kind == "ended":
            attempt.result = value
            attempt.size = max(attempt.size, value.get("output_size") or 0)
        self._pump(attempt)

    def _known(self, node, job_id, number):
        attempt = self._attempts.get(job_id)
        if attempt is None or attempt.node != node or attempt.number != number:
            return None
        return attempt

    # Output (host thread)

    def _pump(self, attempt):
        """Fetch output the node has and the journal lacks; finish once all is in."""
        if self._stopped:
            return
        if attempt.fetching or self._attempts.get(attempt.job_id) is not attempt:
            return
        result = attempt.result
        if (result is not None and result.get("output_size") is not None
                and attempt.out >= attempt.size):  # the node said the final size
            self._finish(attempt, result)  # all of it is in: no read to confirm it
            return
        if attempt.out < attempt.size or attempt.result is not None:
            if attempt.inflight >= INFLIGHT_BYTES and attempt.result is None:
                return  # resumed when the journal catches up
            if attempt.capped and attempt.size - attempt.out > FETCH_BYTES:
                # Past the cap nothing is kept: only the last piece is read (for progress)
                attempt.out = attempt.size - FETCH_BYTES
                if attempt.tracker is not None:
                    attempt.tracker.skip()
            attempt.fetching = True
            self._links[attempt.node].fetch(
                attempt.job_id, attempt.number, attempt.out, FETCH_BYTES,
                lambda data: self._fetched(attempt, data))

    def _fetched(self, attempt, data):
        if self._stopped:
            return
        attempt.fetching = False
        if self._attempts.get(attempt.job_id) is not attempt:
            return
        if isinstance(data, Exception):
            logger.warning("job %d: reading the output of attempt %d failed: %s",
                           attempt.job_id, attempt.number, errors.error_message(data))
            if attempt.result is None:
                return  # the next news of the attempt reads again
            if _not_answered(data):  # no answer (the node restarts?):
                # read again in a while; a node that stays away ends it at lost_grace
                self._host.call_later(WRITE_RETRY, self._pump, attempt)
            else:  # the node answered that it cannot: what is in is all there is
                self._finish(attempt, attempt.result)
            return
        if not data:
            if attempt.result is not None:
                self._finish(attempt, attempt.result)
            return
        attempt.size = max(attempt.size, attempt.out + len(data))
        if self._log_output(attempt, data):
            self._pump(attempt)

    def _log_output(self, attempt, data):
        queue = self._queue
        progressed = attempt.tracker.feed(data) if attempt.tracker is not None else False
        with queue._lock:
            job = queue._jobs.get(attempt.job_id)
            if job is None:
                return False
            offset, capped = attempt.out, attempt.capped
            keep = self._log_room_unlocked(job, attempt, data)
            # past the cap, where the attempt's output resumes is past what was dropped
            out_offset = offset if keep is data else max(0, offset + len(data) - len(keep))
            try:
                batch = queue._record_chunk_unlocked(job, attempt.op_index, attempt.number,
                                                     out_offset, keep)
            except (errors.GenericError, OSError) as err:
                attempt.capped = capped
                self._later(err, "log the output of job %d" % attempt.job_id, self._pump,
                            attempt)
                return False
            attempt.out += len(data)
            attempt.last_byte = data[-1:]
            if progressed:
                self._progress_unlocked(job, attempt)
        attempt.inflight += len(keep)
        end = offset + len(data)
        batch.add_done_callback(lambda done: self._host.call(
            self._durable, attempt, len(keep), end if done.error is None else 0))
        return True

    def _later(self, err, what, fn, *args):
        """A journal or log write failed (a full disk): log it, try fn again in a while;
        the timer."""
        logger.warning("cannot %s now (%s); trying again in %gs", what,
                       errors.error_message(err), WRITE_RETRY)
        return self._host.call_later(WRITE_RETRY, fn, *args)

    def _log_room_unlocked(self, job, attempt, data):
        """The part of data that fits under log_max_bytes (a marker line when it is full,
        once an attempt: one followed again after a restart finds its marker at the end)."""
        if attempt.capped:
            return b""
        room = self._log_max - job.log_bytes
        if len(data) <= room:
            return data
        attempt.capped = True
        attempt.cap_out = attempt.out + max(0, room)
        marker = b"\n" + commandjob.banner_note("LOG TRUNCATED: the log reached %d bytes "
                                                "(log_max_bytes); later output is not kept"
                                                % self._log_max)
        if room < 0 and self._queue._logs.read(
                job.id, job.log_bytes - len(marker), len(marker)) == marker:
            return b""
        return data[:max(0, room)] + marker

    def _durable(self, attempt, size, end=0):
        """size bytes of the attempt's output are durable here, all of it up to end on the
        node (0: not known, the batch failed); past the cap, the node frees what was
        passed (RELEASE_BYTES)."""
        if self._stopped:
            return
        attempt.inflight -= size
        attempt.durable_out = max(attempt.durable_out, end)
        start = None if attempt.cap_out is None else max(attempt.cap_out, attempt.released)
        link = self._links.get(attempt.node)
        if (start is not None and attempt.durable_out - start >= RELEASE_BYTES
                and self._attempts.get(attempt.job_id) is attempt and link is not None):
            attempt.released = attempt.durable_out
            link.release(attempt.job_id, attempt.number, start, attempt.released)
        self._pump(attempt)

    def _progress_unlocked(self, job, attempt):
        now = self._queue._clock()
        if now - attempt.progress_at < PROGRESS_INTERVAL:
            if attempt.progress_timer is None:
                attempt.progress_timer = self._host.call_later(
                    PROGRESS_INTERVAL, self._progress_due, attempt)
            return
        attempt.progress_at = now
        op = job.ops[attempt.op_index]
        local, overall = attempt.tracker.values
        op.exec_state = dict(op.exec_state, progress=local, global_progress=overall)
        self._queue._record_state_unlocked(job)

    def _progress_due(self, attempt):
        if self._stopped:
            return
        attempt.progress_timer = None
        if self._attempts.get(attempt.job_id) is not attempt:
            return
        with self._queue._lock:
            job = self._queue._jobs.get(attempt.job_id)
            if job is not None:
                attempt.progress_at = 0.0
                self._progress_unlocked(job, attempt)

    # The end of an attempt (host thread)

    def _finish(self, attempt, result):
        """The attempt ended and its output is logged: journal the outcome, retry or end."""
        if self._stopped:
            return
        if self._attempts.get(attempt.job_id) is not attempt:
            return
        del self._attempts[attempt.job_id]
        self._vacate(attempt)
        if attempt.progress_timer is not None:
            attempt.progress_timer.cancel()
        queue = self._queue
        with queue._lock:
            job = queue._jobs.get(attempt.job_id)
            if job is None:
                return
            try:
                batch = self._record_end_unlocked(job, attempt, result)
            except (errors.GenericError, OSError) as err:
                self._attempts[attempt.job_id] = attempt
                self._occupy(attempt)
                self._later(err, "record the end of job %d" % attempt.job_id, self._finish,
                            attempt, result)
                return
        if (attempt.launched or result.get("lost")) and not result.get("unreachable"):
            self._forgetting.add((attempt.node, attempt.job_id, attempt.number))
            batch.add_done_callback(lambda done: self._host.call(
                self._forget, attempt, done.error))
        self._dispatch(attempt.node)

    def _record_end_unlocked(self, job, attempt, result):
        queue = self._queue
        op = job.ops[attempt.op_index]
        params = op.input
        canceled = attempt.stop in ("cancel", "kill") or any(
            o.status == constants.OP_STATUS_CANCELING for o in job.ops)
        reason, message = commandjob.classify(result, params["success_exit_codes"],
                                              stopped_by_user=attempt.stop is not None,
                                              canceled=canceled,
                                              memory_max=params.get("memory_max", 0))
        if result.get("never_ran"):
            reason, message = constants.REASON_KILLED, "canceled before it started"
        local, overall = attempt.tracker.values if attempt.tracker else (None, None)
        if reason == constants.REASON_OK:
            local = 1.0
        counted = attempt.number - (op.exec_state or {}).get("uncounted", 0)
        allowed = commandjob.allowed_attempts(params, op.exec_state)
        unstarted = (result.get("error") == commandjob.LOST_UNSTARTED and not canceled
                     and attempt.stop is None and (op.exec_state or {}).get("unstarted", 0)
                     < commandjob.UNSTARTED_RETRIES)
        retry = unstarted or (commandjob.may_retry(reason, result) and not canceled
                              and attempt.stop is None and counted < allowed)
        delay = commandjob.retry_delay(counted, params["retry_delay"], params["retry_delay_max"],
                                       self._rand) if retry and not unstarted else 0
        held = attempt.stop == "hold" and not canceled and reason != constants.REASON_OK
        banner = commandjob.banner_end(result, reason, message, attempt.last_byte == b"\n")
        if unstarted:
            banner += commandjob.banner_note("RETRY : the command never started: attempt %d "
                                             "of %d again, now" % (counted, allowed))
        elif retry:
            banner += commandjob.banner_note("RETRY : attempt %d of %d in %.1fs" % (
                counted + 1, allowed, delay))
        if held:
            banner += commandjob.banner_note("HOLD : stopped by a hold; the attempt does not "
                                             "count")
        # First the banner: the one step that may fail (a full disk), before any change.
        queue._record_chunk_unlocked(job, attempt.op_index, 0, 0, banner)
        state = dict(op.exec_state or {})
        state.update(state=constants.ATTEMPT_ENDED, exit_status=result.get("exit_status"),
                     signal=result.get("signal"), timed_out=bool(result.get("timed_out")),
                     reason=reason, message=message, progress=local,
                     global_progress=overall, max_rss=result.get("max_rss"),
                     cpu_time=result.get("cpu_time"),
                     memory_exceeded=bool(result.get("memory_exceeded")))
        if unstarted:
            state["uncounted"] = state.get("uncounted", 0) + 1
            state["unstarted"] = state.get("unstarted", 0) + 1
        op.exec_state = state
        queue._record_event_unlocked(reason, job.id, attempt.node, "attempt", message)
        self._note_epilog_unlocked(job, attempt, result)
        if retry:
            queue._record_event_unlocked("RETRY", job.id, attempt.node, "attempt", (
                "attempt %d of %d again: the command never started" % (
                    counted, allowed) if unstarted else
                "attempt %d of %d in %.1fs" % (counted + 1, allowed, delay)))
            return self._retry_unlocked(job, attempt, delay)
        if held:  # back to queued, the attempt uncounted; it starts again once released
            op.exec_state = dict(state, state=constants.ATTEMPT_PENDING,
                                 uncounted=state.get("uncounted", 0) + 1)
            op.status = constants.OP_STATUS_QUEUED
            return queue._record_state_unlocked(job)
        if canceled:
            status, outcome = constants.OP_STATUS_CANCELED, constants.MSG_CANCELED
        elif reason == constants.REASON_OK:
            status, outcome = constants.OP_STATUS_SUCCESS, _result_value(state)
        else:
            status = constants.OP_STATUS_ERROR
            outcome = errors.encode_exception(errors.OpExecError(message))
        return queue._processor.finish_unlocked(job, attempt.op_index, status, outcome)

    def _note_epilog_unlocked(self, job, attempt, result):
        """A node whose epilog failed is degraded (an event; node list says why) until an
        attempt that ran there ends without an epilog failure."""
        link = self._links.get(attempt.node)
        if link is None or result.get("lost") or result.get("never_ran") or (
                result.get("error") and not result.get("prolog_failed")):
            return  # the attempt never ran there: no epilog ran either
        failed = result.get("epilog_error")
        if failed:
            link.degraded = "the epilog of job %d attempt %d %s" % (job.id, attempt.number,
                                                                    failed)
            logger.warning("node %s is degraded: %s", attempt.node, link.degraded)
            self._queue._record_event_unlocked("DEGRADED", 0, attempt.node, "node",
                                               link.degraded)
            if self.on_degraded is not None:
                self.on_degraded(attempt.node, link.degraded)
        elif getattr(link, "degraded", None):
            link.degraded = None
            logger.info("node %s is no longer degraded: the epilog of job %d succeeded",
                        attempt.node, job.id)
            self._queue._record_event_unlocked(
                "RECOVERED", 0, attempt.node, "node", "the epilog of job %d attempt %d "
                "succeeded" % (job.id, attempt.number))

    def _retry_unlocked(self, job, attempt, delay):
        queue = self._queue
        op = job.ops[attempt.op_index]
        op.exec_state = dict(op.exec_state, state=constants.ATTEMPT_RETRY_WAIT,
                             retry_at=queue._clock() + delay)
        op.status = constants.OP_STATUS_WAITING
        batch = queue._record_state_unlocked(job)
        self._host.call(self._arm_retry, job.id, attempt.op_index, delay)
        return batch

    def _forget(self, attempt, error):
        self._forgetting.discard((attempt.node, attempt.job_id, attempt.number))
        link = self._links.get(attempt.node)
        if error is None and link is not None:
            link.forget(attempt.job_id, attempt.number)

    def _end_unstarted(self, job_id, op_index, reason, message):
        """End a command opcode that cannot start at all (INTERR, no retry)."""
        queue = self._queue
        with queue._lock:
            job = queue._jobs.get(job_id)
            if job is None:
                return
            op = job.ops[op_index]
            op.exec_state = dict(op.exec_state or {}, state=constants.ATTEMPT_ENDED,
                                 reason=reason, message=message)
            queue._processor.finish_unlocked(job, op_index, constants.OP_STATUS_ERROR,
                                             errors.encode_exception(errors.OpExecError(message)))

    # Stopping and signals (host thread)

    def _stop(self, job_id, why):
        if self._stopped:
            return
        attempt = self._attempts.get(job_id)
        if attempt is None:
            self._stop_unfollowed(job_id)
            return
        if attempt.stop is None or why == "kill":
            attempt.stop = why
        if attempt.launched:
            self._send_stop(attempt)

    def _send_stop(self, attempt):
        """Ask attempt's node to stop it as attempt.stop says (KILL now, or TERM and KILL
        after its grace). A node that cannot be asked (down, restarting) is asked again
        when it answers again: a cancel is never lost with the call."""
        action = "kill" if attempt.stop == "kill" else "terminate"
        attempt.stop_unsent = False

        def done(answer):
            _log_control(attempt, action, answer)
            if _not_answered(answer) and self._attempts.get(
                    attempt.job_id) is attempt and attempt.result is None:
                attempt.stop_unsent = True

        self._control(attempt, action, done=done)

    def _stop_unfollowed(self, job_id):
        """Cancel of a job no attempt of which is followed: end it if it is canceling."""
        queue = self._queue
        with queue._lock:
            job = queue._jobs.get(job_id)
            if job is None or job.calc_status() != constants.JOB_STATUS_CANCELING:
                return
            index = job.next_op_index()
            queue._processor.finish_unlocked(job, index, constants.OP_STATUS_CANCELED,
                                             constants.MSG_CANCELED)

    def _control(self, attempt, action, signum=None, done=None):
        self._links[attempt.node].control(
            attempt.job_id, attempt.number, action, signum,
            done or (lambda answer: _log_control(attempt, action, answer)))

    def _signal_sync(self, job_id, action, signum):
        """Start a signal; a Deferred-free answer: the link's answer via a holder."""
        attempt = self._attempts.get(job_id)
        if attempt is None or not attempt.launched:
            return (False, "job %d has no running command" % job_id)
        answers = []
        self._control(attempt, action, signum, answers.append)
        if answers:  # the embedded executor answers at once
            answer = answers[0]
            if isinstance(answer, Exception):
                return (False, errors.error_message(answer))
            return tuple(answer)
        return (True, "%s requested for job %d attempt %d on %s" % (
            action, job_id, attempt.number, attempt.node))

    def rss_of(self, job_id):
        """Bytes job_id's running command holds now, as its node last said, or None (any
        thread: one read of the attempt's table)."""
        attempt = self._attempts.get(job_id)
        return attempt.rss if attempt is not None else None

    def _running_rows(self, node):
        rows = []
        for attempt in sorted(self._attempts.values(), key=lambda a: a.job_id):
            if node is not None and attempt.node != node:
                continue
            with self._queue._lock:
                job = self._queue._jobs.get(attempt.job_id)
                state = job.ops[attempt.op_index].exec_state if job else None
            state = state or {}
            rows.append({"job": attempt.job_id, "attempt": attempt.number,
                         "node": attempt.node, "pid": state.get("pid"),
                         "started": state.get("started"), "state": state.get("state"),
                         "rss": attempt.rss,
                         "containment": (attempt.contained
                                         or self._links[attempt.node].containment)})
        return rows

    # Reconciliation after the queue was opened (host thread)

    def _recover(self):
        if self._stopped:
            return
        queue = self._queue
        found = []
        with queue._lock:
            for job in queue._jobs.values():
                for index, op in enumerate(job.ops):
                    state = op.exec_state
                    if (state is not None and op.status not in constants.OPS_FINALIZED
                            and state.get("state") in constants.ATTEMPTS_ON_NODE):
                        found.append((job.id, index, dict(state), op.input,
                                      ts_to_float(op.exec_timestamp)))
        for job_id, index, state, params, begun in found:
            self._reattach(job_id, index, state, params, begun)
        self._recover_degraded()
        for name, link in self._links.items():  # fence what nobody follows any more
            link.attempts(lambda infos, name=name: self._reconcile_node(name, infos))
        self._schedule_health()

    def _recover_degraded(self):
        """The nodes degraded as the last master left them: the last DEGRADED or RECOVERED
        event of each node that the event stream still holds (its last event_buffer)."""
        marks = self._queue.read_events(0, {"kind": "node", "status": ["DEGRADED",
                                                                       "RECOVERED"]}, None)
        for event in marks["events"]:
            link = self._links.get(event.get("node"))
            if link is not None:
                link.degraded = event["message"] if event["status"] == "DEGRADED" else None

    def _reattach(self, job_id, index, state, params, begun):
        """Follow an attempt begun (epoch seconds, or None) before the queue was opened."""
        node = state.get("node")
        number = state.get("attempt")
        out = (state.get("out") or {}).get(str(number), 0)
        attempt = _Attempt(job_id, index, number, node, out, params.get("memory_max") or 0,
                           None if begun is None else ends_by(params, begun))
        attempt.tracker = commandjob.ProgressTracker(params["progress_pattern"],
                                                     params.get("global_progress_pattern"))
        attempt.tracker.values = [state.get("progress"), state.get("global_progress")]
        self._attempts[job_id] = attempt
        self._running.setdefault(node, 0)
        self._occupy(attempt)
        with self._queue._lock:
            job = self._queue._jobs.get(job_id)
            if job is not None and job.calc_status() == constants.JOB_STATUS_CANCELING:
                attempt.stop = "kill" if job.kill_requested else "cancel"
        logger.info("job %d: reconciling attempt %d on %s", job_id, number, node)
        self._look_up(attempt, state, None)

    def _look_up(self, attempt, state, since):
        """Ask attempt's node about it (again, if since: the time of the first try); lost
        if its node is not one of the queue's (any more)."""
        if self._stopped or self._attempts.get(attempt.job_id) is not attempt:
            return
        link = self._links.get(attempt.node)
        if link is None:
            self._lost(attempt, "node %s is no longer a node of this queue" % attempt.node)
            return
        link.lookup(attempt.job_id, attempt.number,
                    lambda info: self._looked_up(attempt, state, info, since))

    def _looked_up(self, attempt, state, info, since=None):
        if self._stopped:
            return
        if self._attempts.get(attempt.job_id) is not attempt:
            return
        if isinstance(info, Exception):
            # A node that cannot be reached (its jq-noded restarting, as after the failover
            # that killed it with the old master), or that does not take this master's
            # orders yet, is asked again every ping_interval: its commands run on, and it
            # is lost only after lost_grace, as when a node goes silent under a running
            # master.
            now = self._host.seconds()
            since = now if since is None else since
            if _not_answered(info) and now - since < self._lost_grace:
                logger.warning("job %d: node %s cannot be asked about attempt %d yet (%s); "
                               "asking again", attempt.job_id, attempt.node, attempt.number,
                               errors.error_message(info))
                self._host.call_later(self._ping_interval, self._look_up, attempt, state,
                                      since)
                return
            self._lost(attempt, "node %s cannot be asked about it: %s" % (
                attempt.node, errors.error_message(info)),
                unreachable=_not_answered(info))
            return
        if info is None:
            if state.get("state") == constants.ATTEMPT_STARTING:
                self._launch(attempt)  # journaled, never launched: launch it now
            else:
                self._lost(attempt, "node %s does not know attempt %d" % (
                    attempt.node, attempt.number))
            return
        attempt.launched = True
        if attempt.stop is not None and info.get("result") is None:
            self._send_stop(attempt)
        self._record_info(attempt, info)
        self._absorb_info(attempt, info)

    # Node health: heartbeats, lost nodes, fencing (host thread)

    def _schedule_health(self):
        if self._health_timer is None and not self._stopped and any(
                getattr(link, "heartbeats", False) for link in self._links.values()):
            self._health_timer = self._host.call_later(self._ping_interval, self._health_tick)

    def _health_tick(self):
        """Every ping_interval: a node silent for ping_misses heartbeats is unreachable; one
        heard again is back."""
        self._health_timer = None
        if self._stopped:
            return
        now = self._host.seconds()
        limit = self._ping_interval * self._ping_misses
        for name, link in list(self._links.items()):
            if not getattr(link, "heartbeats", False):
                continue
            heard = getattr(link, "last_heard", None)
            silent = heard is None or now - heard > limit
            if link.reachable and silent:
                self._node_lost(name, now - heard if heard is not None else limit)
            elif not link.reachable and not silent:
                self._node_back(name)
        self._schedule_health()

    def node_event(self, word, name, message):
        """Journal an event of node name (NOPING, UP, MODIFIED): the stream, the action
        log."""
        self._queue.record_event(word, 0, name, "node", message)

    def _node_lost(self, name, silence):
        link = self._links[name]
        link.reachable = False
        logger.warning("node %s is unreachable (no answer for %.1fs)", name, silence)
        self.node_event("NOPING", name, "no answer for %.1fs (%d heartbeats missed)" % (
            silence, self._ping_misses))
        self._evict(name)
        self._nodes_changed()
        if any(a.node == name for a in self._attempts.values()):
            self._lost_timers[name] = self._host.call_later(self._lost_grace,
                                                            self._grace_over, name)
        if self.services is not None:
            self.services.node_lost(name)

    def _node_back(self, name):
        link = self._links[name]
        link.reachable = True
        timer = self._lost_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        logger.info("node %s answers again", name)
        self.node_event("UP", name, "answers again")
        link.attempts(lambda infos: self._reconcile_node(name, infos))
        self._nodes_changed()
        if self.services is not None:
            self.services.node_back(name)

    def _grace_over(self, name):
        """A node stayed unreachable for lost_grace: its attempts end NODE_LOST (and may
        run again elsewhere); when it comes back, what still runs there is killed."""
        self._lost_timers.pop(name, None)
        if self._stopped or self._links[name].reachable:
            return
        for attempt in [a for a in self._attempts.values() if a.node == name]:
            self._lost(attempt, "node %s did not answer for %gs (lost_grace)" % (
                name, self._lost_grace), unreachable=True)

    def _reconcile_node(self, name, infos):
        """What a node holds (after it came back, or at start): follow the attempts we
        own, fence the others."""
        if isinstance(infos, Exception) or self._stopped:
            return
        for info in infos:
            attempt = self._known(name, info["job"], info["attempt"])
            if attempt is not None:
                attempt.launched = True
            self._reported(name, attempt, info)

    def _reported(self, name, attempt, info):
        """Node name holds an attempt (info), ours (attempt) or not (None): follow ours
        (sending again a stop its node missed), fence the others (one launched, its answer
        lost, then canceled or held: _fence decides)."""
        if attempt is None:
            self._fence(name, info)
            return
        if attempt.stop_unsent and info.get("result") is None:
            self._send_stop(attempt)  # its node answers again
        self._absorb_info(attempt, info)

    def _fence(self, name, info):
        """An attempt on node name that this master does not own (it ended NODE_LOST, or
        a crash hid it): kill whatever still runs of it, forget it once ended. An attempt
        the journal still has on that node is left for reconciliation to adopt, and one
        whose start failed (NOXFER) for that start's retry to adopt."""
        job_id, number = info["job"], info["attempt"]
        if (name, job_id, number) in self._forgetting:
            return  # its end is being recorded; it is forgotten once durable
        with self._queue._lock:
            job = self._queue._jobs.get(job_id)
            for op in job.ops if job is not None else ():
                state = op.exec_state or {}
                if (state.get("node") != name or op.status in constants.OPS_FINALIZED):
                    continue
                if (state.get("attempt") == number
                        and state.get("state") in constants.ATTEMPTS_ON_NODE):
                    return
                if (state.get("state") == constants.ATTEMPT_RETRY_WAIT
                        and state.get("reason") == constants.REASON_NOXFER
                        and (state.get("attempt") or 0) + 1 == number and not job.held):
                    return  # a start whose answer was lost: its retry adopts it
        link = self._links[name]
        if info.get("result") is None:
            logger.warning("job %d attempt %d runs on %s, which this master no longer owns: "
                           "killing it", job_id, number, name)
            link.control(job_id, number, "kill", None,
                         lambda answer: self._fenced(name, job_id, number, answer))
        else:
            link.forget(job_id, number)

    @staticmethod
    def _fenced(name, job_id, number, answer):
        if isinstance(answer, Exception):
            logger.error("could not kill job %d attempt %d on %s: %s; it is fenced again"
                         " when the node next answers", job_id, number, name, answer)

    def _node_rows(self):
        rows = {}
        now, wall = self._host.seconds(), self._queue._clock()
        for name, link in sorted(self._links.items()):
            heard = getattr(link, "last_heard", None)  # by the timers' clock: an age here
            rows[name] = {
                "reachable": getattr(link, "reachable", True),
                "last_heard": None if heard is None else wall - (now - heard),
                "clock_skew": getattr(link, "clock_skew", None),
                "tags": sorted(self._placement.tags(name)),
                "drained": getattr(link, "drained", False),
                "offline": getattr(link, "offline", False), "slots": link.slots,
                "used": self._running[name], "queued": len(self._pending[name]),
                "running": sorted(a.job_id for a in self._attempts.values()
                                  if a.node == name),
                "resources": getattr(link, "resources", None)
                if getattr(link, "reachable", True) else None,
                "degraded": getattr(link, "degraded", None), "mem_held": self._reserved[name]}
        return rows

    def _lost(self, attempt, why, unreachable=False):
        """End an attempt NODE_LOST. If its node is unreachable it is not forgotten there:
        when the node comes back, whatever still runs of it is killed (fenced)."""
        logger.warning("job %d: attempt %d lost: %s", attempt.job_id, attempt.number, why)
        self._finish(attempt, {"error": "attempt lost: " + why, "lost": True,
                               "unreachable": unreachable})


def _not_answered(err):
    """Whether a node's call failed without an answer about the attempt, to be made again:
    the node could not be reached, or it refused this master (FencedError: after a
    failover a node answers "not the master" until the new master's configuration reaches
    it; the attempt was lost at once, and the command had ended well on the node)."""
    return isinstance(err, (errors.RemoteError, errors.FencedError))


def node_list_fields(status, spec=None):
    """What ListNodes says of a node from what command jobs see of it: status, its row of
    CommandRunner.node_status (None: none runs there), and spec, its configuration (tags,
    drained, offline; None: those status has). Its machine's load, cpus, mem_total and
    mem_available are its link's last reading (None: not known)."""
    spec = (status or {}) if spec is None else spec
    fields = {"tags": list(spec.get("tags", ())), "drained": spec.get("drained", False),
              "offline": spec.get("offline", False), "degraded": None, "mem_held": None,
              "heartbeat": None,
              "last_heartbeat": None, "clock_skew": None, "slots": None, "slots_used": None,
              "running_jobs": [], **dict.fromkeys(constants.NODE_RESOURCES)}
    if status is not None:
        fields.update(heartbeat=status["reachable"], last_heartbeat=status["last_heard"],
                      clock_skew=status.get("clock_skew"), slots=status["slots"],
                      slots_used=status["used"], running_jobs=status["running"],
                      degraded=status.get("degraded"), mem_held=status.get("mem_held"))
        machine = status.get("resources") or {}
        fields.update({key: machine.get(key) for key in constants.NODE_RESOURCES})
    return fields


def _some(items, separator=", ", shown=5):
    """The first few of items, joined, and how many more there are."""
    text = separator.join(map(str, items[:shown]))
    return text + (" and %d more" % (len(items) - shown) if len(items) > shown else "")


def _log_control(attempt, action, answer):
    if isinstance(answer, Exception) or not answer[0]:
        logger.warning("job %d: %s of attempt %d on %s: %s", attempt.job_id, action,
                       attempt.number, attempt.node,
                       errors.error_message(answer) if isinstance(answer, Exception)
                       else answer[1])


def _result_value(state):
    """A successful command opcode's result: what it ended with."""
    return {"exit_status": state.get("exit_status"), "node": state.get("node"),
            "attempt": state.get("attempt")}


def monotonic_timers(reactor):
    """Make the reactor's timers count on the monotonic clock.

    Twisted schedules callLater by its ``seconds()``, the wall clock by default
    (twisted#2424): a step of the clock (NTP, an operator's ``date -s``, a virtual machine
    resumed) moved every timer armed before it by as much. An hour back and a service
    stayed STARTING, a job waited out its back-off, a node's heartbeat went unanswered, an
    hour longer; an hour forward and every node was unreachable at once. Our timers are
    delays (what they mean in wall time, a job's retry_at, a service's since, is read
    from time.time), so the daemons (and the library's reactor, when jqueue starts it) run
    them on the monotonic clock.
    """
    reactor.seconds = time.monotonic


class ReactorHost:
    """The runner's host over a Twisted reactor (the daemons')."""

    def __init__(self, reactor):
        self._reactor = reactor

    def call(self, fn, *args):
        self._reactor.callFromThread(fn, *args)

    def call_later(self, delay, fn, *args):
        return self._reactor.callLater(max(0.0, delay), fn, *args)

    def call_sync(self, fn, *args):
        from twisted.internet import threads
        from twisted.python import threadable
        if threadable.isInIOThread() or not self._reactor.running:
            return fn(*args)  # the reactor's own thread (or the one about to run it)
        return threads.blockingCallFromThread(self._reactor, fn, *args)

    def seconds(self):
        """The timers' clock: for delays and ages only (monotonic in the daemons: see
        jqueue.daemon.common.monotonic_timers); times kept or shown are the queue's."""
        return self._reactor.seconds()
