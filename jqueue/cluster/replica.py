"""A candidate's replica of the master's queue, fed by replication.

The replica is a queue directory like the master's, kept by a JobQueue in replica mode:
no workers, no crash rules, and no client may change it. The master streams its group
commits as batches of journal records, numbered by position ``[epoch, session, seq]``:
the epoch is the master's term (raised by each failover), the session counts the
master's (re)starts within an epoch, and seq numbers its batches within a session.

The replica applies a batch only if it continues exactly where the replica stands
(same epoch and session, next seq). A replay of batches it already has is acknowledged
and changes nothing; anything else (a gap, another session, a record for a job it does
not know) raises ResyncNeeded, and the master then brings the replica to an identical
copy by comparing content digests (``digests``/``resync_apply``). A batch from an older
epoch than the replica knows is refused with FencedError: a deposed master can no longer
change anything here. Records are applied through the queue's own record path, so the
replica's journal keeps the queue's rules (a full record first in each generation) and a
takeover simply opens the directory as a normal queue.
"""

import base64
import logging
import threading

from jqueue import errors, serializer
from jqueue.job import QueuedJob
from jqueue.queue import JobQueue
from jqueue.store import journal, records
from jqueue.store import services as servicetable

logger = logging.getLogger(__name__)

NO_POSITION = [0, 0, 0]
_DIGEST_CHUNK = 500


class Replica:
    """Applies replicated batches to a replica queue, in order, with fencing."""

    def __init__(self, queue_dir, known_epoch=0, **queue_args):
        self.queue = JobQueue(queue_dir, replica=True, **queue_args)
        self._lock = threading.Lock()
        self.known_epoch = known_epoch

    @property
    def position(self):
        """[epoch, session, seq] of the last batch applied (zeros if none)."""
        return list(self.queue._position or NO_POSITION)

    @property
    def failed(self):
        """The error of a failed sync after which the replica refuses every batch until it
        is closed and opened again, else None."""
        return self.queue.failed

    def close(self):
        self.queue.shutdown()

    # Streaming

    def apply_batch(self, epoch, session, seq_from, seq_to, payloads):
        """Apply batch seq_from..seq_to of (epoch, session); return the new position."""
        position, batch = self.apply_batch_nowait(epoch, session, seq_from, seq_to, payloads)
        if batch is not None:
            batch.wait()
        return position

    def apply_batch_nowait(self, epoch, session, seq_from, seq_to, payloads):
        """Apply a batch without waiting: (new position, journal batch to wait on or None).

        The position may be acknowledged once the batch is done. A replay of batches
        already applied changes nothing; it is acknowledged once they are durable.
        """
        with self._lock:
            self._check_epoch(epoch)
            position = self.position
            if [epoch, session] != position[:2]:
                raise errors.ResyncNeeded("replica follows %s, batch is from %s: resync needed"
                                          % (position[:2], [epoch, session]))
            if seq_to <= position[2]:
                return position, self.queue._journal.barrier()
            if seq_from != position[2] + 1:
                raise errors.ResyncNeeded("replica has batches up to %d, got %d..%d" % (
                    position[2], seq_from, seq_to))
            new_position = [epoch, session, seq_to]
            return new_position, _apply(self.queue, payloads, new_position)

    def _check_epoch(self, epoch):
        if epoch < self.known_epoch:
            raise errors.FencedError("update from epoch %d refused: this node knows epoch %d"
                                     % (epoch, self.known_epoch))
        self.known_epoch = epoch

    # Resynchronization

    def digests(self):
        """What the master compares: digests of live jobs, archived ids, serial, drain."""
        queue = self.queue
        live = {}
        with queue._lock:
            ids = list(queue._jobs)
            archiving = list(queue._archiving)
            purged = set(queue._deleted_archived)
        for offset in range(0, len(ids), _DIGEST_CHUNK):
            with queue._lock:
                for job_id in ids[offset:offset + _DIGEST_CHUNK]:
                    job = queue._jobs.get(job_id)
                    if job is not None:
                        live[str(job_id)] = records.job_digest(job)
        archived = (set(queue._dir.archived_job_ids()) | set(archiving)) - purged
        with queue._lock:
            logs = [(job.id, job.log_bytes)
                    for job in list(queue._jobs.values()) + list(queue._archiving.values())
                    if job.log_bytes]
        with queue._lock:
            services = queue._services.digests()
            service_logs = [(r["id"], r.get("log_bytes") or 0)
                            for r in queue._services.services.values()]
        return {"live": live, "archived": sorted(archived), "serial": queue._serial,
                "drain": queue.drain_flag, "position": self.position,
                "logs": _held(queue._logs, logs), "events_last": queue._event_serial,
                "events_tail": queue._events.digests(),
                "services": services, "service_logs": _held(queue._service_logs, service_logs)}

    def resync_apply(self, epoch, payloads, deletes, serial=None, drain=None, position=None,
                     logs=(), service_logs=(), events_from=None):
        """Apply part of a resync: records, deletions, pieces of command logs ([job id,
        offset, bytes]) and of services' logs ([service id, offset, bytes]), and at the
        end serial, drain, position; first, the events from serial events_from on are
        forgotten (the master's replace them).

        Durable before it returns. Once ``position`` is given the replica follows that
        stream position.
        """
        if events_from is not None:
            with self._lock:
                self._check_epoch(epoch)
            self.queue.cut_events(events_from)
        raised, deleted = False, None
        with self._lock:
            self._check_epoch(epoch)
            queue = self.queue
            deleted = None
            with queue._lock:
                for job_id, archived in deletes:
                    deleted = _delete_unlocked(queue, job_id, archived)
                if serial is not None and serial > queue._serial:
                    queue._serial = serial
                    raised = True
            pieces = [records.log_chunk_record(job_id, offset, 0, 0, 0, data)
                      for job_id, offset, data in logs]
            pieces += [servicetable.log_chunk_record(sid, offset, 0, 0, data)
                       for sid, offset, data in service_logs]
            batch = _apply(queue, list(payloads) + pieces, position) or deleted  # durable first
            if drain is not None and drain != queue.drain_flag:
                queue.set_drain_flag(drain)
        if batch is not None:
            batch.wait()
        if raised:
            _write_serial(queue)
        return self.position


def _held(logs, lengths):
    """{str(id): length} of the logs in a jqueue.store.joblogs store as far as their files
    hold them: a resync cut short (its master died) after a job's records, which count its
    log's length, and before the pieces of its log leaves a record counting bytes the file
    lacks, and the next resync sends a log from the length said here."""
    return {str(key): min(length, logs.size(key)) for key, length in lengths}


def _write_serial(queue):
    """Make a raised serial durable now: it has no journal record of its own."""
    with queue._checkpoint_lock:
        with queue._lock:
            serial = queue._serial
        queue._dir.write_serial(serial)


def _apply(queue, payloads, position):
    """Apply records to a replica queue and journal them; return the last batch (or None).

    If the replica's disk refuses the batch, the position goes back to where it was (so
    the master's retry is applied again, not acknowledged as already there); the records'
    jobs are re-recorded once the disk writes again (see jqueue.queue).
    """
    batch = None
    with queue._lock:
        for payload in payloads:
            batch = _apply_one_unlocked(queue, payload)
        if position is not None:
            previous = queue._position
            queue._position = list(position)
            batch = queue._journal.append(records.position_record(position))
            batch.undo.append(lambda: setattr(queue, "_position", previous))
    return batch


def _apply_one_unlocked(queue, payload):
    """Apply one record: its JSON text, or (payload, frame) as received from the master
    (then the frame itself is journaled when the record is journaled as it came)."""
    framed = None
    try:
        if isinstance(payload, tuple):
            payload, framed = payload
        elif isinstance(payload, str):
            payload = payload.encode("utf-8")
        if records.is_log_chunk(payload):
            return _apply_chunk_unlocked(queue, records.parse_log_chunk(payload), payload,
                                         framed)
        if servicetable.is_log_chunk(payload):
            return _apply_service_chunk_unlocked(
                queue, servicetable.parse_log_chunk(payload), payload, framed)
        record = serializer.loads(payload)
        kind, job_id = record["t"], record.get("id")
        if kind == servicetable.RECORD:
            return _service_unlocked(queue, record, payload, framed)
        if kind == records.JOB:
            return _put_job_unlocked(queue, QueuedJob.from_dict(record["job"]), payload, framed)
        if kind == records.ARCHIVE:
            return _archive_unlocked(queue, job_id)
        if kind == records.DELETE:
            return _delete_unlocked(queue, job_id, record["a"])
        if kind == records.EVENT:
            return _event_unlocked(queue, record["e"], payload, framed)
        if kind == records.PURGE:
            return _purge_unlocked(queue, records.purge_ids(record), payload, framed)
        job = queue._jobs.get(job_id)
        if job is None:
            raise errors.ResyncNeeded("record for job %s, unknown to this replica" % job_id)
        if kind == records.STATE:
            job.apply_state(record["s"])
        elif kind == records.LOG:
            job.add_log_entries(record["e"])
        else:
            raise errors.ResyncNeeded("unknown record type %r" % (kind,))
    except (KeyError, TypeError, IndexError, errors.ParseError, errors.JobFileCorrupted) as err:
        raise errors.ResyncNeeded("malformed record: %s" % err) from None
    return _journal_change_unlocked(queue, job, payload, framed)


def _apply_chunk_unlocked(queue, chunk, payload, framed):
    """A piece of a command log: written to the replica's log, journaled as it came."""
    job = queue._jobs.get(chunk.job_id) or queue._archiving.get(chunk.job_id)
    if job is None:
        raise errors.ResyncNeeded("log of job %s, unknown to this replica" % chunk.job_id)
    queue._logs.write(chunk.job_id, chunk.offset, chunk.data)
    records.apply_log_chunk(job, chunk)
    return _journal_change_unlocked(queue, job, payload, framed)


def _service_unlocked(queue, record, payload, framed):
    """A service set or removed: the table follows; a removed service's log goes."""
    old = queue._services.get(record["n"])
    if record["s"] is None and old is not None:
        queue._service_logs.remove(old["id"])
    queue._services.apply(record)
    return _journal(queue, payload, framed)


def _apply_service_chunk_unlocked(queue, chunk, payload, framed):
    """A piece of a service's log: written to the replica's log, journaled as it came."""
    if not queue._services.apply_chunk(chunk):
        raise errors.ResyncNeeded("log of service %d, unknown to this replica" %
                                  chunk.service_id)
    queue._service_logs.write(chunk.service_id, chunk.offset, chunk.data)
    return _journal(queue, payload, framed)


def _event_unlocked(queue, event, payload, framed):
    """The master's event: the replica keeps it (same serial) once durable."""
    if not isinstance(event, dict) or not isinstance(event.get("serial"), int):
        raise errors.ResyncNeeded("malformed event record")
    queue._event_serial = max(queue._event_serial, event["serial"])
    queue._pending_events[event["serial"]] = event
    tag = (None, records.EVENT, event["serial"])
    if framed is not None:
        return queue._journal.append_frame(framed, tag=tag)
    return queue._journal.append(payload, tag=tag)


def _journal(queue, payload, framed):
    if framed is not None:
        return queue._journal.append_frame(framed)
    return queue._journal.append(payload)


def _journal_change_unlocked(queue, job, payload, framed):
    """Journal a change: the master's record as is, or a full one if first this generation."""
    if job.generation != queue._journal.generation:
        return queue._record_state_unlocked(job)
    job.file_bytes = None
    queue._dirty.add(job.id)
    return _journal(queue, payload, framed)


def _put_job_unlocked(queue, job, payload, framed=None):
    queue._jobs.pop(job.id, None)
    queue._archiving.pop(job.id, None)
    queue._deleted.discard(job.id)
    queue._jobs[job.id] = job
    queue._serial = max(queue._serial, job.id)
    job.generation = queue._journal.generation
    queue._dirty.add(job.id)
    return _journal(queue, payload, framed)


def _archive_unlocked(queue, job_id):
    job = queue._jobs.get(job_id)
    if job is not None:
        return queue._archive_unlocked(job)
    if job_id in queue._archiving or queue._dir.has_archived_job(job_id):
        return None
    raise errors.ResyncNeeded("archival of job %s, unknown to this replica" % job_id)


def _purge_unlocked(queue, job_ids, payload, framed):
    """The master purged archived jobs: their files and logs go at the next checkpoint."""
    for job_id in job_ids:
        if job_id in queue._jobs:
            raise errors.ResyncNeeded("purge of job %s, live on this replica" % job_id)
        queue._archiving.pop(job_id, None)
        queue._deleted_archived.add(job_id)
    return _journal(queue, payload, framed)


def _delete_unlocked(queue, job_id, archived):
    queue._jobs.pop(job_id, None)
    queue._archiving.pop(job_id, None)
    (queue._deleted_archived if archived else queue._deleted).add(job_id)
    return queue._journal.append(records.delete_record(job_id, archived))


class ReplicaRpc:
    """The replication calls of jq-noded over a Replica; bodies and results are JSON.

    ``replica()`` returns the node's Replica, or None while the node owns its queue (then
    every update is refused). ``state`` is the node's view of the cluster: ``epoch`` and
    ``master`` (who may send updates in that epoch), ``voted_epoch`` (the newest vote it
    gave), optionally ``config_epoch`` (its configuration's) and ``observe(epoch,
    master)``. Fencing: an update from an older epoch, or from a node that is not the
    master of the current epoch, is refused with FencedError. An update may move the node
    to a newer epoch only up to the newest it holds a configuration or gave a vote for:
    an epoch ahead of both (a forged or corrupt 10^30) is refused and logged, never
    adopted, since adopting it would fence the real master. A failover pushes the new
    epoch's configuration, or the node voted for it, before the new master replicates.
    """

    def __init__(self, replica, state):
        self._replica = replica
        self._state = state

    def _target(self, peer, body):
        replica = self._replica()
        if replica is None:
            raise errors.NotMasterError("this node owns its queue; it takes no replication")
        epoch = body_int(body, "epoch")
        state = self._state
        if epoch < state.epoch:
            raise errors.FencedError("update from epoch %d refused: this node knows epoch %d "
                                     "(master %s)" % (epoch, state.epoch, state.master))
        if epoch == state.epoch and state.master not in (None, peer):
            raise errors.FencedError("node %s is not the master of epoch %d (%s is)" % (
                peer, epoch, state.master))
        if epoch > state.epoch:
            allowed = max(state.epoch, getattr(state, "voted_epoch", 0),
                          getattr(state, "config_epoch", 0))
            if epoch > allowed:
                logger.warning("refused an update from %s with epoch %d: this node holds no "
                               "configuration of that epoch and gave no vote in it (newest "
                               "known: %d)", peer, epoch, allowed)
                raise errors.FencedError(
                    "update from epoch %d refused: this node knows no configuration of that "
                    "epoch and gave no vote in it (newest known epoch %d)" % (epoch, allowed))
            state.observe(epoch, peer)
        replica.known_epoch = max(replica.known_epoch, epoch)
        return replica, epoch

    def replicate(self, peer, body):
        result, batch = self.replicate_nowait(peer, body)
        if batch is not None:
            batch.wait()
        return result

    def replicate_nowait(self, peer, body):
        """replicate without waiting: (result, journal batch that must finish first)."""
        replica, epoch = self._target(peer, body)
        # The batch's records are committed here, by the thread that applied them (in
        # jq-noded, its event loop), rather than handed to the journal's committer and
        # waited for: one thread hand-off less per replicated batch on every candidate.
        with replica.queue.deferred_commits():
            position, batch = replica.apply_batch_nowait(
                epoch, body_int(body, "session"), body_int(body, "seq_from"),
                body_int(body, "seq_to"), _records(body))
        replica.queue.commit_pending()
        return {"position": position}, batch

    def resync_digests(self, peer, body):
        self._target(peer, body)
        return self._replica().digests()

    def resync_apply(self, peer, body):
        replica, epoch = self._target(peer, body)
        deletes = [(int(job_id), bool(archived)) for job_id, archived in body.get("deletes", [])]
        position = body.get("position")
        return {"position": replica.resync_apply(
            epoch, _strings(body, "records"), deletes, body.get("serial"), body.get("drain"),
            [int(v) for v in position] if position is not None else None,
            logs=_log_pieces(body), service_logs=_log_pieces(body, "service_logs"),
            events_from=body_int(body, "events_from") if "events_from" in body else None)}

    def jobqueue_set_drain_flag(self, peer, body):
        replica, epoch = self._target(peer, body)
        return {"position": replica.resync_apply(epoch, [], [], drain=bool(body["flag"]))}


def body_int(body, key):
    """A non-negative integer field of an RPC body; ParameterError naming it otherwise."""
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.ParameterError("'%s' must be a non-negative integer" % key)
    return value


def _records(body):
    """The records of a replicate body: "frames" (journal frames, each CRC checked:
    [(payload, frame)]; base64 in a call, bytes in a stream message) or "records" (a
    list of record texts)."""
    if "frames" not in body:
        return _strings(body, "records")
    value = body["frames"]
    try:
        if isinstance(value, bytes):
            return journal.split_frames(value)
        data = base64.b64decode(value.encode("ascii") if isinstance(value, str) else b"!",
                                validate=True)
        return journal.split_frames(data)
    except (ValueError, errors.ParseError) as err:
        raise errors.ParameterError("'frames' must be base64 of journal records: %s" % err
                                    ) from None


def _log_pieces(body, key="logs"):
    """The "logs" (or "service_logs") of a resync_apply body: [[job (or service) id,
    offset, base64 bytes], ...]."""
    value = body.get(key, [])
    pieces = []
    if not isinstance(value, list):
        raise errors.ParameterError("'%s' must be a list of [id, offset, data]" % key)
    for item in value:
        try:
            job_id, offset, text = item
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in (job_id, offset)):
                raise ValueError("job id and offset must be non-negative integers")
            pieces.append((job_id, offset, base64.b64decode(text.encode("ascii"),
                                                            validate=True)))
        except (ValueError, TypeError, AttributeError) as err:
            raise errors.ParameterError("'%s' item refused: %s" % (key, err)) from None
    return pieces


def _strings(body, key):
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.ParameterError("'%s' must be a list of strings" % key)
    return value

