"""The RPC methods of jq-noded as plain methods, apart from their transport (no Twisted).

A ``Node`` holds what one node knows: its NodeState (node.json), the cluster
configuration (cluster.json, replaced at run time by ``cluster_config_update``) and, while
it is a master candidate other than the master, the Replica of the master's queue in
<state>/queue (holding the queue lock). Every method takes the calling node's name
(authenticated by mutual TLS and authorized by ``allowed_peer``) and a JSON body, and
returns a JSON-able result or raises a jqueue error.

Replication calls go through jqueue.cluster.replica.ReplicaRpc (fencing by epoch and master).
The node's lock serializes everything that touches the replica or the epoch: a vote and a
replicated batch never interleave, so a batch from the old epoch is either in the position
the vote compared, or refused because the vote raised the epoch first.

The ancestor's file-level calls (``jobqueue_update``, ``jobqueue_rename``,
``jobqueue_purge``) accept only queue file names (``job-N``, ``archive/<N // 10000>/job-N``,
``serial``, ``drain``), checked before anything else happens; they are applied as records
through the replica, never by writing a path taken from the caller.
"""

import logging
import os
import re
import threading
import time

from jqueue import constants, errors, serializer
from jqueue.cluster import membership
from jqueue.cluster.replica import Replica, ReplicaRpc, body_int
from jqueue.job import QueuedJob
from jqueue.luxi import client as luxi_client
from jqueue.store import queuedir, records

logger = logging.getLogger(__name__)

QUEUE_DIR = "queue"
MASTERD_SOCKET = os.path.join("run", "jqueue.sock")
#: Longest test_delay a node accepts, in seconds.
MAX_TEST_DELAY = 3600
#: Seconds the LUXI call telling a local jq-masterd to step down may take.
STEP_DOWN_TIMEOUT = 10.0
_ARCHIVE_RE = re.compile(r"archive/([0-9]{1,16})/(job-[0-9]{1,19})")
_MAX_NAME = 128


# Queue file names of the file-level calls


def parse_queue_file(name):
    """(kind, job id) of a queue-relative file name: ("job"|"archive", N) or ("serial"|
    "drain", None); ParameterError naming anything else (paths, NUL, other names)."""
    if isinstance(name, str) and len(name) <= _MAX_NAME and "\0" not in name:
        if name in (constants.SERIAL_FILE, constants.DRAIN_FILE):
            return name, None
        job_id = _job_file_id(name)
        if job_id is not None:
            return "job", job_id
        match = _ARCHIVE_RE.fullmatch(name)
        if match is not None:
            job_id = _job_file_id(match.group(2))
            subdir = match.group(1)
            if job_id is not None and subdir == str(
                    job_id // constants.JOBS_PER_ARCHIVE_DIRECTORY):
                return "archive", job_id
    raise errors.ParameterError("queue file name %r refused: only job-N, archive/<N // %d>/"
                                "job-N, serial and drain are accepted" % (
                                    name, constants.JOBS_PER_ARCHIVE_DIRECTORY))


def _job_file_id(name):
    job_id = queuedir.parse_job_file_name(name)
    if job_id is None or name != "%s%d" % (constants.JOB_FILE_PREFIX, job_id):
        return None  # not a job file, or not in canonical form (job-007)
    return job_id


def _job_record(job_id, content):
    """The full journal record of a job file's content; ParameterError if it is not one."""
    if not isinstance(content, str):
        raise errors.ParameterError("the content of job-%d must be a string" % job_id)
    try:
        job = QueuedJob.from_dict(serializer.loads(content))
    except (errors.ParseError, errors.JobFileCorrupted) as err:
        raise errors.ParameterError("job-%d: not a job file: %s" % (
            job_id, errors.error_message(err))) from None
    if job.id != job_id:
        raise errors.ParameterError("job-%d holds job %s" % (job_id, job.id))
    return records.job_record(job).decode("utf-8")


def _serial_value(content):
    text = content.strip() if isinstance(content, str) else ""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise errors.ParameterError(("serial: %r is not a job id" % (content,))[:100])
    return int(text)


def _renames(body):
    """[job id, ...] of a rename list; ParameterError unless every pair archives a job."""
    pairs = body.get("renames")
    if not isinstance(pairs, list):
        raise errors.ParameterError("'renames' must be a list of [old, new] pairs")
    job_ids = []
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise errors.ParameterError("rename %r is not an [old, new] pair" % (pair,))
        old, new = (parse_queue_file(name) for name in pair)
        if old[0] != "job" or new != ("archive", old[1]):
            raise errors.ParameterError("rename %s -> %s refused: only job-N -> archive/"
                                        "<N // %d>/job-N is supported" % (
                                            pair[0], pair[1],
                                            constants.JOBS_PER_ARCHIVE_DIRECTORY))
        job_ids.append(old[1])
    return job_ids


class NodeReplicaRpc(ReplicaRpc):
    """ReplicaRpc plus the ancestor's file-level calls, with the same fencing."""

    def jobqueue_update(self, peer, body):
        kind, job_id = parse_queue_file(body.get("file"))
        content = body.get("content")
        payloads, serial, drain = [], None, None
        if kind == "job":
            payloads = [_job_record(job_id, content)]
        elif kind == "archive":
            payloads = [_job_record(job_id, content),
                        records.archive_record(job_id).decode("utf-8")]
        elif kind == constants.SERIAL_FILE:
            serial = _serial_value(content)
        else:
            drain = True
        replica, epoch = self._target(peer, body)
        return {"position": replica.resync_apply(epoch, payloads, [], serial=serial,
                                                 drain=drain)}

    def jobqueue_rename(self, peer, body):
        job_ids = _renames(body)
        replica, epoch = self._target(peer, body)
        payloads = [records.archive_record(job_id).decode("utf-8") for job_id in job_ids]
        return {"position": replica.resync_apply(epoch, payloads, [])}

    def jobqueue_purge(self, peer, body):
        replica, epoch = self._target(peer, body)
        with replica.queue._lock:
            live = sorted(replica.queue._jobs)
        return {"position": replica.resync_apply(epoch, [], [(i, False) for i in live])}


class _FencingState:
    """The node's epoch and master as ReplicaRpc sees them (over membership.NodeState)."""

    def __init__(self, state, config):
        self._state = state
        self._config = config

    @property
    def epoch(self):
        return self._state.epoch

    @property
    def voted_epoch(self):
        return self._state.voted_epoch

    @property
    def config_epoch(self):
        return self._config().epoch

    @property
    def master(self):
        return self._state.master

    def observe(self, epoch, master):
        if epoch > self._state.epoch:
            logger.info("learned epoch %d (master %s) from replication", epoch, master)
        self._state.observe(epoch, master)


# The node


class Node:
    """One node's RPC methods and its replica's lifecycle (see the module docstring)."""

    REPLICA_METHODS = ("replicate", "resync_digests", "resync_apply",
                       "jobqueue_set_drain_flag", "jobqueue_update", "jobqueue_rename",
                       "jobqueue_purge")
    METHODS = REPLICA_METHODS + ("node_info", "cluster_config_update", "vote", "step_down",
                                 "checkpoint", "test_delay")
    #: Stream methods jq-noded serves over these (replicate_stream: replicate's messages).
    STREAM_METHODS = ("replicate_stream",)

    def __init__(self, state_dir, state, config, checkpoint_interval=5.0,
                 masterd_socket=None):
        self.state_dir = os.path.abspath(state_dir)
        self.state = state
        self.config = config
        self.queue_dir = os.path.join(self.state_dir, QUEUE_DIR)
        self.masterd_socket = masterd_socket or os.path.join(self.state_dir, MASTERD_SOCKET)
        self.replica = None
        #: Command attempts this node runs at once (jq-noded's slots option).
        self.slots = None
        self.containment = None  # how its command attempts are held together
        self.exec_features = ()  # what its exec_* methods can do (jqueue.cluster.nodeexec)
        self._checkpoint_interval = checkpoint_interval
        self._lock = threading.RLock()
        self._open_error = None
        self._rpc = NodeReplicaRpc(lambda: self.replica,
                                   _FencingState(state, lambda: self.config))
        self._stamp = membership.file_stamp(self.state_dir)

    @classmethod
    def load(cls, state_dir, **kwargs):
        """The node of a state directory (ConfigurationError if it is in no cluster)."""
        config = membership.load_config(state_dir)
        if config is None:
            raise errors.ConfigurationError("%s missing" % membership.config_path(state_dir))
        return cls(state_dir, membership.NodeState.load(state_dir), config, **kwargs)

    @property
    def name(self):
        return self.state.name

    @property
    def role(self):
        return self.config.role(self.name)

    def allowed_peer(self, name):
        """Whether node name may call: it is a node of the current configuration."""
        return name in self.config.nodes

    def is_master(self, name):
        """Whether node name is the master this node follows (the newest epoch it knows)."""
        return name == (self.state.master or self.config.master)

    def handlers(self):
        """{method name: func(peer, body)} of every RPC method."""
        return {name: getattr(self, name) for name in self.METHODS}

    # Replica lifecycle

    def start(self):
        """Open the replica if this node is a master candidate (failures are logged)."""
        with self._lock:
            self._apply_role_locked()

    def stop(self):
        """Close the replica (it checkpoints and releases the queue lock)."""
        with self._lock:
            self._close_replica_locked()

    def _wants_replica(self):
        return self.role == membership.ROLE_CANDIDATE

    def _apply_role_locked(self):
        if self._wants_replica():
            self._open_replica_locked()
        else:
            self._close_replica_locked()

    def _open_replica_locked(self):
        if self.replica is not None:
            return self.replica
        try:
            self.replica = Replica(self.queue_dir, known_epoch=self.state.epoch,
                                   checkpoint_interval=self._checkpoint_interval)
        except (errors.GenericError, OSError) as err:
            message = errors.error_message(err)
            if message != self._open_error:
                logger.error("cannot open the replica %s: %s", self.queue_dir, message)
            self._open_error = message
            return None
        self._open_error = None
        logger.info("replica %s open at position %s", self.queue_dir, self.replica.position)
        return self.replica

    def _close_replica_locked(self):
        replica, self.replica = self.replica, None
        if replica is not None:
            replica.close()
            logger.info("replica %s closed (role %s)", self.queue_dir, self.role)

    def _usable_replica_locked(self):
        """The replica, opened now if this node should hold one and it was not open, or
        opened again if a failed sync stopped it (what it says, its position included, is
        then what was durable)."""
        if self.replica is not None and self.replica.failed is not None:
            self._reopen_failed_replica_locked()
        if self.replica is None and self._wants_replica():
            self._open_replica_locked()
        return self.replica

    def _reopen_failed_replica_locked(self):
        """A sync of the replica failed: the pages it had written may be lost, so it refuses
        every change. Close it without a checkpoint and let it be opened again, which is
        what a restart of the daemon does: the replay finds what was durable (the journal
        cut the failed batch off), and the master sends the rest again or resyncs."""
        logger.error("replica %s stopped after a failed sync (%s): opening it again",
                     self.queue_dir, errors.error_message(self.replica.failed))
        try:
            self._close_replica_locked()
        except errors.DiskSyncError:
            pass  # expected: closed without a checkpoint
        except (errors.GenericError, OSError) as err:
            logger.error("closing the failed replica %s: %s", self.queue_dir,
                         errors.error_message(err))

    def _refresh_locked(self):
        """Take what jq-masterd recorded in cluster.json or node.json meanwhile (a start
        refused because a node knew a newer epoch records that epoch's configuration)."""
        stamp = membership.file_stamp(self.state_dir)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self.state.reload()
        try:
            on_disk = membership.load_config(self.state_dir)
        except errors.ConfigurationError as err:
            logger.warning("cannot reload the configuration: %s", errors.error_message(err))
            return
        if on_disk is not None and on_disk.name == self.config.name and on_disk.newer_than(
                self.config):
            old_role, self.config = self.role, on_disk
            logger.info("configuration version %d (epoch %d, master %s) read from %s; role "
                        "%s -> %s", on_disk.version, on_disk.epoch, on_disk.master,
                        membership.config_path(self.state_dir), old_role, self.role)
            self._raise_epoch_locked(on_disk.epoch)
            self._apply_role_locked()

    def _check_takes_replication_locked(self, peer):
        """NotMasterError if this node holds no replica because of its configuration."""
        if self.replica is not None or self._wants_replica():
            return
        what = "the master" if self.role == membership.ROLE_MASTER else "not a master candidate"
        raise errors.NotMasterError(
            "node %s holds no replica: its configuration (epoch %d, version %d, master %s) "
            "makes it %s; replication from %s needs the current configuration first" % (
                self.name, self.config.epoch, self.config.version, self.config.master, what,
                peer))

    def _raise_epoch_locked(self, epoch):
        if self.replica is not None:
            self.replica.known_epoch = max(self.replica.known_epoch, epoch)

    # Replication (through ReplicaRpc)

    def replica_ready(self):
        """Whether a replication call would find nothing to do before it applies: the
        replica open and not failed, the configuration files unchanged. Read without the
        lock, a hint (the call checks again under it): when false, prepare_replication is
        worth a thread, as it may replay the journal."""
        replica = self.replica
        return (replica is not None and replica.failed is None
                and membership.file_stamp(self.state_dir) == self._stamp)

    def prepare_replication(self, peer):
        """What a replication call from peer does before it applies: the configuration
        taken up again, the call refused if this node holds no replica, the replica opened
        (again, after a failed sync: a replay of its journal)."""
        with self._lock:
            self._refresh_locked()
            self._check_takes_replication_locked(peer)
            self._usable_replica_locked()

    def _replicated(self, method, peer, body):
        with self._lock:
            self.prepare_replication(peer)
            return getattr(self._rpc, method)(peer, body)

    def replicate(self, peer, body):
        return self._replicated("replicate", peer, body)

    def replicate_nowait(self, peer, body):
        """replicate without waiting for the disk: (result, journal batch or None).

        The transport answers once the batch is done (jq-noded: from the journal's thread,
        without a pool thread); the answer acknowledges the batch to the master.
        """
        return self._replicated("replicate_nowait", peer, body)

    def resync_digests(self, peer, body):
        return self._replicated("resync_digests", peer, body)

    def resync_apply(self, peer, body):
        return self._replicated("resync_apply", peer, body)

    def jobqueue_set_drain_flag(self, peer, body):
        return self._replicated("jobqueue_set_drain_flag", peer, body)

    def jobqueue_update(self, peer, body):
        return self._replicated("jobqueue_update", peer, body)

    def jobqueue_rename(self, peer, body):
        return self._replicated("jobqueue_rename", peer, body)

    def jobqueue_purge(self, peer, body):
        return self._replicated("jobqueue_purge", peer, body)

    # The cluster

    def node_info(self, peer, body):
        """What failover and operators ask: epoch, master, role, replica position, the
        configuration this node holds (a node records it only from its master) and its
        clock (time)."""
        with self._lock:
            self._refresh_locked()
            # A replica stopped by a failed sync is opened again first: its position in
            # memory counts the batch whose sync failed, and a failover compares this one.
            replica = self._usable_replica_locked()
        return {"name": self.name, "epoch": self.state.epoch, "master": self.state.master,
                "config_version": self.config.version, "role": self.role,
                "replica": replica is not None,
                "position": replica.position if replica is not None else None,
                "jobs": replica.queue.stats()["jobs"] if replica is not None else None,
                "slots": self.slots, "containment": self.containment,
                "features": list(self.exec_features),
                "config": self.config.to_dict(), "time": time.time()}

    def cluster_config_update(self, peer, body):
        """Take a newer configuration from the master it names; apply the role change."""
        new = _config_of(body, self.config)
        if peer != new.master:
            raise errors.FencedError("configuration version %d names %s as master; node %s "
                                     "may not send it" % (new.version, new.master, peer))
        with self._lock:
            self._refresh_locked()
            self._check_config_epoch(new)
            if not new.newer_than(self.config):
                return {"version": self.config.version}
            membership.save_config(self.state_dir, new)
            old_role, self.config = self.role, new
            self.state.observe(new.epoch, new.master)
            self._raise_epoch_locked(new.epoch)
            logger.info("cluster configuration version %d (epoch %d, master %s) from %s; "
                        "role %s -> %s", new.version, new.epoch, new.master, peer, old_role,
                        self.role)
            self._apply_role_locked()
        return {"version": new.version}

    def _check_config_epoch(self, new):
        state = self.state
        if new.epoch < state.epoch:
            raise errors.FencedError("configuration of epoch %d refused: this node knows "
                                     "epoch %d (master %s)" % (new.epoch, state.epoch,
                                                               state.master))
        if new.epoch == state.epoch and state.master not in (None, new.master):
            raise errors.FencedError("configuration names %s master of epoch %d; this node "
                                     "knows %s as its master" % (new.master, new.epoch,
                                                                 state.master))

    def vote(self, peer, body):
        """Give (once per epoch) or refuse this node's vote to the calling candidate."""
        epoch = body_int(body, "epoch")
        candidate = body.get("candidate")
        position = _position(body.get("position"))
        if candidate != peer:
            raise errors.ParameterError("node %s may only ask votes for itself, not for %r" % (
                peer, candidate))
        with self._lock:
            self._refresh_locked()
            replica = self._usable_replica_locked()
            own = replica.position if replica is not None else None
            refusal = self._vote_refusal(candidate, replica)
            if refusal is not None:
                return {"granted": False, "reason": refusal, "position": own}
            granted, reason = membership.decide_vote(self.state, epoch, candidate, position, own)
            if granted:
                self._raise_epoch_locked(epoch)
        logger.info("vote for %s in epoch %d: %s", candidate, epoch, reason)
        return {"granted": granted, "reason": reason, "position": own}

    def _vote_refusal(self, candidate, replica):
        spec = self.config.nodes.get(candidate)
        if spec is None or not spec["candidate"]:
            return "%s is not a master candidate of cluster %s" % (candidate, self.config.name)
        if replica is None and self._wants_replica():
            return ("this candidate's replica is not open (%s): it cannot compare positions"
                    % (self._open_error or "unknown reason"))
        return None

    def step_down(self, peer, body):
        """The master of a newer epoch says so: learn it, stop a local jq-masterd."""
        epoch = body_int(body, "epoch")
        master = body.get("master")
        if master != peer:
            raise errors.FencedError("node %s may not ask to step down for %r" % (peer, master))
        with self._lock:
            state = self.state
            if epoch < state.epoch or (epoch == state.epoch
                                       and state.master not in (None, master)):
                raise errors.FencedError("step down for %s in epoch %d refused: this node "
                                         "knows epoch %d (master %s)" % (
                                             master, epoch, state.epoch, state.master))
            newest = max(state.epoch, state.voted_epoch, self.config.epoch)
            if epoch > newest:  # as for replication: only with its configuration or a vote
                logger.warning("refused to step down for %s in epoch %d: this node holds "
                               "no configuration of that epoch and gave no vote in it "
                               "(newest known: %d)", master, epoch, newest)
                raise errors.FencedError("step down for %s in epoch %d refused: this node "
                                         "knows no configuration of that epoch and gave no "
                                         "vote in it (newest known epoch %d)" % (
                                             master, epoch, newest))
            state.observe(epoch, master)
            self._raise_epoch_locked(epoch)
        self._tell_masterd(epoch, master)
        return {"ok": True}

    def _tell_masterd(self, epoch, master):
        """Best effort: a jq-masterd on this node gets StepDown [epoch, master]."""
        if not os.path.exists(self.masterd_socket):
            logger.info("stepping down for %s (epoch %d): no jq-masterd runs here", master,
                        epoch)
            return
        try:
            with luxi_client.Client(self.masterd_socket, connect_timeout=2,
                                    timeout=STEP_DOWN_TIMEOUT) as client:
                client.call("StepDown", [epoch, master])
        except (errors.GenericError, OSError) as err:
            logger.warning("could not tell jq-masterd to step down for %s (epoch %d): %s",
                           master, epoch, errors.error_message(err))
            return
        logger.info("jq-masterd told to step down for %s (epoch %d)", master, epoch)

    def checkpoint(self, peer, body):
        """Checkpoint the replica now (job files rewritten); for this node or the master."""
        if peer not in (self.name, self.config.master, self.state.master):
            raise errors.FencedError("node %s may not ask node %s to checkpoint" % (
                peer, self.name))
        with self._lock:
            replica = self._usable_replica_locked()
            if replica is None:
                raise errors.NotMasterError("node %s holds no replica (role %s)" % (
                    self.name, self.role))
            replica.queue.checkpoint()
            return {"position": replica.position}


    def test_delay(self, peer, body):
        """Sleep for body["duration"] seconds (OP_TEST_DELAY on_nodes); for the master only."""
        if peer not in (self.config.master, self.state.master):
            raise errors.FencedError("node %s is not the master; only the master runs "
                                     "opcodes on nodes" % peer)
        duration = body.get("duration")
        if (not isinstance(duration, (int, float)) or isinstance(duration, bool)
                or not 0 <= duration <= MAX_TEST_DELAY):
            raise errors.ParameterError("'duration' must be a number of seconds from 0 to %d"
                                        % MAX_TEST_DELAY)
        time.sleep(duration)
        return {"node": self.name, "slept": duration}


def _config_of(body, current):
    data = body.get("config")
    if not isinstance(data, dict):
        raise errors.ParameterError("'config' must be a cluster configuration object")
    new = membership.ClusterConfig.from_dict(data)
    if new.name != current.name:
        raise errors.ParameterError("configuration of cluster %s refused: this node is in "
                                    "cluster %s" % (new.name, current.name))
    return new


def _position(value):
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in value)):
        raise errors.ParameterError("'position' must be [epoch, session, seq]")
    return value
