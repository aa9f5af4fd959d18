"""Replication of the queue to the master candidates: the cluster replicator.

The queue hands every durable change to one replicator object (the interface and the
local-only one are jqueue.store.replicator): the journal records of each group commit
(``replicate_records``) and the files written outside the journal.

The cluster replicator numbers each group commit (position [epoch, session, seq], see
jqueue.cluster.replica) and sends it to every master candidate in parallel: one sender thread per
candidate over a kept-alive connection, each sending everything that queued up while its
previous call was in flight as one call, so replication batches like the local disk does.
The records travel as they are in the journal (framed, with their CRC, base64 in the JSON
body): a candidate checks and journals the very frames, parsing each record once to apply
it. A group commit is acknowledged once ``min_acks`` candidates confirmed it is on their disk
(default: a majority of master + candidates, i.e. floor((1 + n) / 2) candidates); until
then the callers waiting on it get a ReplicationError after ``ack_timeout`` saying how many
copies exist. The change is kept: it completes, and its job becomes visible and runs, once
enough candidates catch up; a failover before that may lose it (it was never
acknowledged). With min_acks 0 (best effort, the ancestor's behaviour) nothing waits and
the status says "degraded".

A candidate that is new, was down, fell too far behind or lost the thread of the stream is
resynchronized: the master compares content digests of its live jobs and archive with the
candidate's, sends what differs as full records and the deletions, then the serial, drain
flag and the stream position, and only then does the candidate count for acknowledgements
again. A candidate that knows a newer epoch answers FencedError: this master was deposed,
every pending and future change fails, and ``on_fenced`` tells the daemon to step down.
"""

import base64
import collections
import logging
import threading

from jqueue import errors, threadname
from jqueue.cluster.membership import default_min_acks
from jqueue.cluster.rpc import client as rpc_client
from jqueue.store import events as eventlog
from jqueue.store import records
from jqueue.store import services as servicetable

logger = logging.getLogger(__name__)

_CHUNK = 500
#: Bytes of command logs per resync call.
_LOG_PIECE = 4 * 1024 * 1024
#: The kinds of differences compare() finds.
DIFFERENCES = ("missing", "differ", "extra", "archive_missing", "archive_extra",
               "services_differ")


class Ticket:
    """One group commit waiting for candidate acknowledgements."""

    def __init__(self, replicator, seq, needed):
        self.seq = seq
        self.needed = needed
        self.acks = set()
        self.error = None
        self._replicator = replicator
        self._event = threading.Event()
        if needed == 0:
            self._event.set()

    def ack(self, name):
        self.acks.add(name)
        if len(self.acks) >= self.needed:
            self._event.set()

    @property
    def done(self):
        return self._event.is_set()

    def wait(self):
        """Block until acknowledged (or failed); return the error or None."""
        self._event.wait()
        return self.error

    def fail(self, error):
        if not self._event.is_set():
            self.error = error
            self._event.set()

    def timeout_error(self):
        return errors.ReplicationError(
            "change not acknowledged within %ss: it is on the master's disk and on %d of %d "
            "candidates (%d required%s); it stays queued and completes when enough "
            "candidates catch up, but a failover before that may lose it" % (
                self._replicator.ack_timeout, len(self.acks), self._replicator.candidates,
                self.needed, self._replicator.describe_peers()))


class ClusterReplicator:
    """Replicates to master candidates (RPC clients with ``call(method, body)``)."""

    mode = "cluster"

    def __init__(self, master, epoch, session, peers, min_acks=None, ack_timeout=10.0,
                 max_call_bytes=4 << 20, max_backlog_bytes=256 << 20, retry_interval=1.0,
                 on_fenced=None, on_peer_error=None):
        self.master, self.epoch, self.session = master, epoch, session
        self.candidates = len(peers)
        self.min_acks = default_min_acks(len(peers)) if min_acks is None else min_acks
        if not 0 <= self.min_acks <= len(peers):
            raise errors.ConfigurationError("min_acks %s impossible with %d candidates" % (
                self.min_acks, len(peers)))
        self.ack_timeout = ack_timeout
        self.max_call_bytes = max_call_bytes
        self.max_backlog_bytes = max_backlog_bytes
        self.retry_interval = retry_interval
        self._on_fenced = on_fenced
        #: on_peer_error(name, error): a call to a candidate failed (it may be stale).
        self._on_peer_error = on_peer_error
        self._cond = threading.Condition(threading.Lock())
        self._seq = 0
        self._pending = collections.deque()
        self._fenced = None
        self._stopped = False
        self._queue = None
        self._senders = {name: _Sender(self, name, client) for name, client in peers.items()}

    # Wiring

    def attach(self, queue):
        """Start replicating the given JobQueue (its resync source)."""
        self._queue = queue
        for sender in self._senders.values():
            sender.start()

    def add_peer(self, name, client):
        """Replicate to one more candidate (it is resynced before it counts)."""
        with self._cond:
            if name in self._senders:
                return
            sender = self._senders[name] = _Sender(self, name, client)
            self.candidates = len(self._senders)
        if self._queue is not None:
            sender.start()

    def remove_peer(self, name):
        """Stop replicating to a candidate; acknowledgements it gave still count."""
        with self._cond:
            sender = self._senders.pop(name, None)
            self.candidates = len(self._senders)
            if sender is not None:
                sender.stopped = True
                self._cond.notify_all()
        if sender is not None:
            sender.halt()
            sender.join()

    def set_min_acks(self, min_acks):
        """Change the policy for changes to come (None: the majority default)."""
        with self._cond:
            value = default_min_acks(len(self._senders)) if min_acks is None else min_acks
            if not 0 <= value <= len(self._senders):
                raise errors.ConfigurationError("min_acks %s impossible with %d candidates" % (
                    value, len(self._senders)))
            self.min_acks = value

    def stop(self):
        """Stop the senders; pending changes fail (they stay on the master's disk). A call
        a sender is waiting in (a frozen candidate answers none before the RPC timeout)
        is aborted: a candidate catches up by its resync at the next contact anyway."""
        with self._cond:
            self._stopped = True
            self._fail_pending_unlocked(errors.ReplicationError("replication stopped"))
            self._cond.notify_all()
            senders = list(self._senders.values())
        for sender in senders:
            sender.halt()
        for sender in senders:
            sender.join()

    def base_body(self):
        return {"epoch": self.epoch, "master": self.master, "session": self.session}

    # The journal's hook

    def replicate_records(self, frames):
        """Queue one group commit (its framed records) for every candidate; its Ticket.

        Candidates get a command log's bytes, not the extents of the master's log file
        that its journal may hold (JobQueue.replicated_frames); read outside the lock,
        or under it if a candidate came meanwhile.
        """
        expand = bool(self._senders) and self._queue is not None  # a hint: checked again
        if expand:
            frames = self._queue.replicated_frames(frames)
        with self._cond:
            if not expand and self._senders and self._queue is not None:
                frames = self._queue.replicated_frames(frames)
            nbytes = sum(len(f) for f in frames)
            self._seq += 1
            ticket = Ticket(self, self._seq, self.min_acks)
            if self._fenced is not None or self._stopped:
                ticket.fail(self._fenced or errors.ReplicationError("replication stopped"))
                return ticket
            if not ticket.done:
                self._pending.append(ticket)
            for sender in self._senders.values():
                sender.enqueue_unlocked(self._seq, frames, nbytes)
            self._cond.notify_all()
        return ticket

    def _acked_unlocked(self, name, seq):
        """Candidate name holds every batch up to seq: count its acknowledgements."""
        for ticket in self._pending:
            if ticket.seq > seq:
                break
            ticket.ack(name)
        while self._pending and self._pending[0].done:
            self._pending.popleft()

    def _fail_pending_unlocked(self, error):
        while self._pending:
            self._pending.popleft().fail(error)

    def fenced(self, name, error):
        """A candidate knows a newer epoch: this master is deposed."""
        with self._cond:
            if self._fenced is not None:
                return
            self._fenced = errors.FencedError("this node is no longer the master: %s (%s)" % (
                errors.error_message(error), name))
            self._fail_pending_unlocked(self._fenced)
            self._cond.notify_all()
        logger.error("fenced by %s: %s", name, errors.error_message(error))
        if self._on_fenced is not None:
            self._on_fenced(self._fenced)

    # Files outside the journal

    def update_file(self, name, text):
        """The serial travels with resyncs and job records; nothing else needs sending."""

    def rename_files(self, pairs):
        """Archival travels as journal records."""

    def purge(self):
        """Not used by this queue."""

    def set_drain_flag(self, flag):
        """Set the flag on the candidates; raise ReplicationError below min_acks copies."""
        body = dict(self.base_body(), flag=bool(flag))
        with self._cond:
            clients = [sender.client for sender in self._senders.values()]
        results = rpc_client.call_many(clients, "jobqueue_set_drain_flag", body,
                                       self.ack_timeout)
        done = [n for n, r in results.items() if not isinstance(r, Exception)]
        if len(done) < self.min_acks:
            raise errors.ReplicationError("drain flag set on the master and %d of %d candidates "
                                          "(%d required)" % (len(done), self.candidates,
                                                             self.min_acks))

    # Operators

    def describe_peers(self):
        parts = ["%s %s" % (s.name, s.describe()) for s in list(self._senders.values())]
        return ": " + ", ".join(parts) if parts else ""

    def status(self):
        """Mode, policy and every candidate's state."""
        with self._cond:
            peers = [s.status_unlocked() for s in self._senders.values()]
            return {"mode": "best-effort (degraded)" if self.min_acks == 0 else self.mode,
                    "min_acks": self.min_acks, "epoch": self.epoch, "session": self.session,
                    "seq": self._seq, "pending": len(self._pending),
                    "fenced": errors.error_message(self._fenced) if self._fenced else None,
                    "peers": peers}

    def verification(self, name, digests, info, config_key):
        """One candidate's line of a cluster verification: its state and differences.

        digests and info are the candidate's answers to resync_digests and node_info (or
        the exceptions they raised); config_key is the master's (epoch, version). The
        state is "in sync", "differs", "resyncing" (the master is bringing it in sync),
        "stale configuration" (it answers, with an older configuration: the master pushes
        the current one), "error" (it answers node_info but not resync_digests) or
        "unreachable" (it does not answer).
        """
        sender = self._senders.get(name)
        in_sync = sender is not None and sender.in_sync
        report = {"state": None, "position": None, "epoch": None, "config_version": None}
        if isinstance(info, Exception):
            report.update(state="unreachable", error=errors.error_message(info))
            return report
        report.update(epoch=info.get("epoch"), config_version=info.get("config_version"),
                      position=info.get("position"))
        if isinstance(digests, Exception):
            report["error"] = errors.error_message(digests)
        else:
            diff = compare(self._queue, digests)
            report.update({key: sorted(value) for key, value in diff.items()})
            report["position"] = digests.get("position")
        key = (report["epoch"] or 0, report["config_version"] or 0)
        if key < tuple(config_key):
            report["state"] = "stale configuration"
        elif not in_sync:
            report["state"] = "resyncing"
            report.setdefault("error", sender.last_error if sender is not None else None)
        elif "error" in report:
            report["state"] = "error"
        elif any(report.get(kind) for kind in DIFFERENCES):
            report["state"] = "differs"
        else:
            report["state"] = "in sync"
        return report

    def verify(self):
        """Compare every candidate's queue with the master's by content digests."""
        report = {}
        for name, sender in list(self._senders.items()):  # peers may change meanwhile
            try:
                remote = sender.client.call("resync_digests", self.base_body())
            except errors.GenericError as err:
                report[name] = {"error": errors.error_message(err)}
                continue
            diff = compare(self._queue, remote)
            report[name] = {key: sorted(value) for key, value in diff.items()}
            report[name]["position"] = remote.get("position")
        return report


class _Sender:
    """One candidate: its backlog of batches, its thread, its sync state."""

    def __init__(self, replicator, name, client):
        self.rep, self.name, self.client = replicator, name, client
        self.needs_resync = True
        self.resyncing = False
        self.overflow = False
        self.stopped = False
        self.backlog = collections.deque()
        self.backlog_bytes = 0
        self.acked = 0
        self.last_error = None
        self.reachable = None
        #: Whether batches go on a stream (RpcClient.stream) rather than in calls.
        self.streams = hasattr(client, "stream")
        self._thread = threading.Thread(target=self._run, name="replicate-%s" % name,
                                        daemon=True)

    def start(self):
        self._thread.start()

    def halt(self):
        """Once stopped: abort the call in flight (RpcClient.close from another thread)
        and make every later one fail at once (the client is closed for good here)."""
        client, self.client = self.client, _Halted(self.name)
        close = getattr(client, "close", None)
        if close is not None:
            close()

    def join(self):
        if self._thread.is_alive():
            self._thread.join()

    @property
    def in_sync(self):
        return not self.needs_resync and not self.resyncing

    def describe(self):
        if self.in_sync:
            return "in sync"
        reason = self.last_error or "resyncing"
        return "not in sync (%s)" % reason

    def status_unlocked(self):
        return {"name": self.name, "in_sync": self.in_sync, "reachable": self.reachable,
                "acked_seq": self.acked, "backlog": len(self.backlog),
                "last_error": self.last_error}

    def enqueue_unlocked(self, seq, frames, nbytes):
        if self.needs_resync and not self.resyncing:
            return  # the coming resync's snapshot covers it
        self.backlog.append((seq, frames, nbytes))
        self.backlog_bytes += nbytes
        if self.backlog_bytes > self.rep.max_backlog_bytes:
            logger.warning("candidate %s is %d bytes behind; it will be resynced", self.name,
                           self.backlog_bytes)
            self.backlog.clear()
            self.backlog_bytes = 0
            self.overflow = self.resyncing
            self.needs_resync = True

    # Thread

    def _running(self):
        return not (self.stopped or self.rep._stopped or self.rep._fenced is not None)

    def _run(self):
        threadname.name_os_thread("jq-repl-" + self.name)
        while self._running():
            try:
                if self.needs_resync:
                    self._resync()
                else:
                    self._send_next()
            except errors.FencedError as err:
                self.rep.fenced(self.name, err)
                return
            except errors.ResyncNeeded as err:
                logger.info("candidate %s needs a resync: %s", self.name, err)
                with self.rep._cond:
                    self.needs_resync = True
            except errors.GenericError as err:
                self._failed(err)

    def _failed(self, err):
        if not self._running():
            return  # stopping: a call aborted by halt() is no candidate's failure
        if self.rep._on_peer_error is not None:
            self.rep._on_peer_error(self.name, err)
        message = errors.error_message(err)
        if message != self.last_error:
            logger.warning("replication to %s failed: %s", self.name, message)
        self.last_error = message
        self.reachable = not isinstance(err, errors.RemoteError)
        if not self.reachable:  # (it may come back upgraded: try its stream again)
            self.streams = hasattr(self.client, "stream")
        with self.rep._cond:
            self.rep._cond.wait_for(lambda: not self._running(), self.rep.retry_interval)

    def _take(self):
        """Wait for queued batches; return (seq_from, seq_to, frames, count) to send."""
        with self.rep._cond:
            self.rep._cond.wait_for(lambda: self.backlog or self.needs_resync
                                    or not self._running())
            if not self.backlog or self.needs_resync or not self._running():
                return None
            frames, size, count = [], 0, 0
            for _seq, batch_frames, nbytes in self.backlog:
                if count and size + nbytes > self.rep.max_call_bytes:
                    break
                frames.extend(batch_frames)
                size += nbytes
                count += 1
            return self.backlog[0][0], self.backlog[count - 1][0], frames, count

    def _send_next(self):
        batch = self._take()
        if batch is None:
            return
        seq_from, seq_to, frames, count = batch
        data = b"".join(frames)
        if self.streams:
            try:
                self.client.stream("replicate_stream", self.rep.base_body(),
                                   {"seq_from": seq_from, "seq_to": seq_to}, data)
            except rpc_client.StreamUnsupported:
                logger.info("candidate %s has no replication stream (an older jq-noded): "
                            "one call per batch", self.name)
                self.streams = False
        if not self.streams:
            body = dict(self.rep.base_body(), seq_from=seq_from, seq_to=seq_to,
                        frames=base64.b64encode(data).decode("ascii"))
            self.client.call("replicate", body)
        self._ok()
        with self.rep._cond:
            for _ in range(count):
                if self.backlog and self.backlog[0][0] <= seq_to:
                    self.backlog_bytes -= self.backlog.popleft()[2]
            self.acked = max(self.acked, seq_to)
            self.rep._acked_unlocked(self.name, seq_to)

    def _ok(self):
        if self.last_error is not None:
            logger.info("replication to %s works again", self.name)
        self.last_error = None
        self.reachable = True

    def _resync(self):
        with self.rep._cond:
            self.resyncing, self.overflow = True, False
            self.backlog.clear()
            self.backlog_bytes = 0
            point = self.rep._seq
        try:
            self._push_differences(point)
        finally:
            with self.rep._cond:
                self.resyncing = False
        with self.rep._cond:
            if self.overflow:
                return
            self.needs_resync = False
            self.acked = point
            self.rep._acked_unlocked(self.name, point)
        logger.info("candidate %s is in sync (position %s)", self.name,
                    [self.rep.epoch, self.rep.session, point])

    def _push_differences(self, point):
        base = self.rep.base_body()
        remote = self.client.call("resync_digests", base)
        self._ok()
        queue = self.rep._queue
        diff = compare(queue, remote)
        for payloads, deletes in resync_plan(queue, diff):
            self.client.call("resync_apply", dict(base, records=payloads, deletes=deletes))
        for logs in resync_logs(queue, remote, own_logs(remote, diff)):
            self.client.call("resync_apply", dict(base, records=[], deletes=[], logs=logs))
        services = resync_services(queue, remote)
        if services:
            self.client.call("resync_apply", dict(base, records=services, deletes=[]))
        for pieces in resync_service_logs(queue, remote):
            self.client.call("resync_apply", dict(base, records=[], deletes=[],
                                                  service_logs=pieces))
        cut = events_cut(queue, remote)
        if cut is not None:
            logger.info("candidate %s has events from serial %d on that this master does "
                        "not: replaced", self.name, cut)
            self.client.call("resync_apply", dict(base, records=[], deletes=[],
                                                  events_from=cut))
        self.client.call("resync_apply", dict(
            base, records=resync_events(queue, remote, cut), deletes=[], serial=queue._serial,
            drain=queue.drain_flag, position=[self.rep.epoch, self.rep.session, point]))


class _Halted:
    """A stopped sender's client: every call fails at once."""

    def __init__(self, name):
        self.node_name = name

    def call(self, method, body):
        raise errors.RemoteError("replication to %s stopped" % self.node_name)

    def stream(self, method, opening, head, data):
        self.call(method, head)


def _master_view(queue):
    """(live ids, archived ids) of the master queue."""
    with queue._lock:
        live = list(queue._jobs)
        archiving = set(queue._archiving)
    return live, set(queue._dir.archived_job_ids()) | archiving


def compare(queue, remote):
    """Differences between the master queue and a replica's digests (job id sets)."""
    remote_live = {int(k): v for k, v in remote.get("live", {}).items()}
    remote_archived = set(remote.get("archived", []))
    live, archived = _master_view(queue)
    differ, missing = set(), set()
    for offset in range(0, len(live), _CHUNK):
        with queue._lock:
            for job_id in live[offset:offset + _CHUNK]:
                job = queue._jobs.get(job_id)
                if job is None:
                    continue
                digest = remote_live.get(job_id)
                if digest is None:
                    missing.add(job_id)
                elif digest != records.job_digest(job):
                    differ.add(job_id)
    live_set = set(live)
    theirs = remote.get("services") or {}
    with queue._lock:
        ours = queue._services.digests()
    return {"missing": missing, "differ": differ,
            "extra": set(remote_live) - live_set - archived,
            "archive_missing": archived - remote_archived,
            "archive_extra": remote_archived - archived - live_set,
            "services_differ": {name for name in set(ours) | set(theirs)
                                if ours.get(name) != theirs.get(name)}}


def resync_plan(queue, diff):
    """Yield (records, deletes) chunks that make a replica equal to the master queue
    (diff: compare's answer for the replica)."""
    chunk = []
    for job_id in sorted(diff["missing"] | diff["differ"]):
        chunk.extend(_job_records(queue, job_id))
        if len(chunk) >= _CHUNK:
            yield chunk, []
            chunk = []
    for job_id in sorted(diff["archive_missing"]):
        chunk.extend(_job_records(queue, job_id))
        if len(chunk) >= _CHUNK:
            yield chunk, []
            chunk = []
    deletes = [[job_id, False] for job_id in sorted(diff["extra"])]
    deletes += [[job_id, True] for job_id in sorted(diff["archive_extra"])]
    if chunk or deletes:
        yield chunk, deletes


def resync_events(queue, remote, cut=None):
    """Records of the events the replica lacks (those of its ring it has not, in order;
    from serial cut on if given: see events_cut), so that after a failover the stream goes
    on without a gap or a reused serial.

    With those journaled, not durable yet: the resync acknowledges every batch up to the
    position it started at, and those of them not acknowledged yet carry events that the
    ring does not hold yet (the replica missed them for good, as resync_logs says of log
    pieces)."""
    since = cut - 1 if cut is not None else remote.get("events_last") or 0
    found = {e["serial"]: e for e in queue.read_events(since, limit=None)["events"]}
    with queue._lock:
        found.update((serial, event) for serial, event in queue._pending_events.items()
                     if serial > since and serial not in found)
    return [records.event_record(found[serial]).decode("utf-8") for serial in sorted(found)]


def events_cut(queue, remote):
    """The first serial at which a replica's events ("events_tail": [[serial, digest],
    ...] of its ring; older nodes say none) part from this master's, among those both
    rings hold, or None.

    A master that failed had journaled events that no candidate acknowledged; replayed
    when it came back as a candidate, they are its own, while the new master's events
    carry the same serials. Sent from its last serial on, it kept its own and missed the
    master's for good."""
    tail = remote.get("events_tail")
    if not tail:
        return None
    theirs = {serial: value for serial, value in tail}
    answer = queue.read_events(tail[0][0] - 1, limit=None)
    ours = {event["serial"]: eventlog.digest(event) for event in answer["events"]
            if event["serial"] <= tail[-1][0]}
    if answer["gap"]:  # this ring does not reach back as far: compare where both reach
        oldest = min(ours, default=tail[-1][0] + 1)
        theirs = {serial: value for serial, value in theirs.items() if serial >= oldest}
    for serial in sorted(set(theirs) | set(ours)):
        if theirs.get(serial) != ours.get(serial):
            return serial
    return None


def resync_logs(queue, remote, whole=()):
    """Yield [[job id, offset, base64 bytes], ...] pieces bringing a replica's command logs
    to the master's length (each log from the replica's length, those of the jobs whole
    names from their start; bounded per call).

    The length written, not the acknowledged one: the resync acknowledges every batch up
    to the position it started at, and those not acknowledged yet carry pieces beyond the
    acknowledged length (a candidate added while a log grew missed one for good). A log
    only grows, each piece at its offset, so bytes below the written length are final."""
    remote_logs = dict(remote.get("logs") or {})
    for job_id in whole:
        remote_logs.pop(str(job_id), None)
    with queue._lock:
        wanted = [(job.id, job.log_bytes) for job in
                  list(queue._jobs.values()) + list(queue._archiving.values())
                  if job.log_bytes]
    yield from _log_pieces(queue._logs, wanted, remote_logs)


def own_logs(remote, diff):
    """Jobs whose logs a replica is sent whole: those whose state differs from this
    master's, when its own came from no master's stream (position [0, 0, 0]: it was the
    master itself). A master that failed had written log bytes that no candidate
    acknowledged, and the next master wrote others at those offsets; sent from where its
    copy ended, the copy kept its own bytes there."""
    if any(remote.get("position") or ()):
        return set()
    return diff["differ"]


def _log_pieces(logs, wanted, theirs):
    """Pieces [[key, offset, base64 bytes], ...] of at most about _LOG_PIECE bytes
    bringing each (key, length) of wanted from the replica's length (theirs, by str(key))
    to length, read from logs (a jqueue.store.joblogs store)."""
    piece, size = [], 0
    for key, length in sorted(wanted):
        offset = min(theirs.get(str(key), 0), length)
        while offset < length:
            data = logs.read(key, offset, min(_LOG_PIECE, length - offset))
            if not data:
                break
            piece.append([key, offset, base64.b64encode(data).decode("ascii")])
            offset += len(data)
            size += len(data)
            if size >= _LOG_PIECE:
                yield piece
                piece, size = [], 0
    if piece:
        yield piece


def resync_services(queue, remote):
    """Records (text) making a replica's service table equal to the master's: every
    service it lacks or holds differently, and the removal of those it should not hold."""
    theirs = remote.get("services") or {}
    with queue._lock:
        table = queue._services
        ours = table.digests()
        texts = [servicetable.service_record(name, table.get(name), table.next_id)
                 for name in sorted(ours) if theirs.get(name) != ours[name]]
        texts += [servicetable.service_record(name, None, table.next_id)
                  for name in sorted(set(theirs) - set(ours))]
    return [text.decode("utf-8") for text in texts]


def resync_service_logs(queue, remote):
    """Yield [[service id, offset, base64 bytes], ...] pieces bringing a replica's service
    logs to the master's length (written, as resync_logs says), each from its start at
    least (the bytes before are dropped)."""
    theirs = dict(remote.get("service_logs") or {})
    with queue._lock:
        wanted = []
        for record in queue._services.services.values():
            wanted.append((record["id"], record.get("log_bytes") or 0))
            key = str(record["id"])
            theirs[key] = max(theirs.get(key, 0), record.get("log_start") or 0)
    yield from _log_pieces(queue._service_logs, wanted, theirs)


def _job_records(queue, job_id):
    """Full records for one job as the master has it now (live or archived)."""
    with queue._lock:
        job = queue._jobs.get(job_id) or queue._archiving.get(job_id)
        data = job.to_dict() if job is not None else None
        archived = job is not None and job.archived
    if data is None:
        try:
            data = queue._dir.read_job(job_id, archived=True)
        except (FileNotFoundError, errors.JobFileCorrupted):
            return []
        archived = True
    texts = [records.full_record(data).decode("utf-8")]
    if archived:
        texts.append(records.archive_record(job_id).decode("utf-8"))
    return texts
