"""The cluster: its configuration (nodes, roles, master, epoch) and each node's own state.

Files of a node's state directory:

    <state>/cluster.json    the cluster configuration, the same on every node once
                            distributed; ordered by (epoch, version)
    <state>/node.json       this node: its name, the newest epoch it knows and that epoch's
                            master, and the vote it gave (never given twice in an epoch)
    <state>/tls/            ca.crt, node.crt, node.key (ca.key on the node that signs)
    <state>/queue/          the queue (master) or its replica (master candidates)

Roles: the master owns the queue; master candidates hold replicas and may become master;
other nodes only vote. Failover safety rests on two quorums that must intersect. A change
is acknowledged once the master and ``min_acks`` of the n candidates hold it. A candidate
becomes master only with votes from a majority of all nodes *and* from at least
``n - min_acks + 1`` candidates, each of which refuses a requester whose replication
position is older than its own. Any such group of candidates shares a member with every
acknowledging group, so the winner's position is at least that member's: the winner holds
every acknowledged change. With min_acks 0 (best effort) no election can promise that, so
failover then needs an explicit --no-voting.
"""

import contextlib
import fcntl
import os
import threading

from jqueue import constants, errors, serializer
from jqueue.store import fsutil

CLUSTER_FILE = "cluster.json"
NODE_FILE = "node.json"
#: Held (flock) while cluster.json or node.json is read and rewritten: jq-noded and
#: jq-masterd of one node both record what they learn.
LOCK_FILE = ".node.lock"
ROLE_MASTER = "master"
ROLE_CANDIDATE = "candidate"
ROLE_NODE = "node"


def default_min_acks(candidates):
    """Candidate copies for a majority of master + candidates."""
    return (1 + candidates) // 2


#: Optional keys of a node's entry (command jobs): its tags, drain and offline flags.
NODE_EXTRAS = ("tags", "drained", "offline")


def _check_node_extras(node, spec):
    tags = spec.get("tags", [])
    if not isinstance(tags, list) or not all(
            isinstance(t, str) and t and t == t.strip() and "," not in t for t in tags):
        raise errors.ConfigurationError("node %s: 'tags' must be a list of tags" % node)
    for flag in ("drained", "offline"):
        if not isinstance(spec.get(flag, False), bool):
            raise errors.ConfigurationError("node %s: '%s' must be a boolean" % (node, flag))


def _check_name(name):
    if not isinstance(name, str) or not name or len(name) > 253 or not all(
            c.isalnum() or c in "-._" for c in name) or not name[0].isalnum():
        raise errors.ConfigurationError("invalid node name %r (letters, digits, '-', '.', "
                                        "'_'; starting with a letter or digit)" % (name,))
    return name


def parse_address(address):
    """Split "host:port" into (host, port); ConfigurationError if malformed."""
    if not isinstance(address, str) or ":" not in address:
        raise errors.ConfigurationError("address %r is not HOST:PORT" % (address,))
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.ConfigurationError("address %r is not HOST:PORT" % (address,))
    return host, int(port)


def clock_off(skew):
    """Whether a node's clock skew (seconds, rpc client's clock_skew; None: unknown) is
    worth saying, to the master's log and in jqctl: CLOCK_SKEW_WARN or more either way."""
    return (isinstance(skew, (int, float)) and not isinstance(skew, bool)
            and abs(skew) >= constants.CLOCK_SKEW_WARN)


class ClusterConfig:
    """Cluster name, epoch, master, config version, nodes and the acknowledgement policy."""

    def __init__(self, name, master, nodes, epoch=1, version=1, min_acks=None,
                 ack_timeout=10.0):
        self.name = name
        self.master = master
        # name -> {"address": "host:port", "candidate": bool} and, for command jobs,
        # optionally "tags" (list), "drained" and "offline" (booleans)
        self.nodes = nodes
        self.epoch = epoch
        self.version = version
        self.min_acks = min_acks
        self.ack_timeout = ack_timeout
        self.validate()

    def validate(self):
        _check_name(self.name)
        for node, spec in self.nodes.items():
            _check_name(node)
            parse_address(spec.get("address"))
            if not isinstance(spec.get("candidate"), bool):
                raise errors.ConfigurationError("node %s: 'candidate' must be a boolean" % node)
            _check_node_extras(node, spec)
        if self.master not in self.nodes:
            raise errors.ConfigurationError("master %r is not a node of the cluster" %
                                            (self.master,))
        if self.min_acks is not None and not 0 <= self.min_acks <= len(self.candidates()):
            raise errors.ConfigurationError("min_acks %s impossible with %d candidates" % (
                self.min_acks, len(self.candidates())))

    def role(self, node):
        if node == self.master:
            return ROLE_MASTER
        if node in self.nodes and self.nodes[node]["candidate"]:
            return ROLE_CANDIDATE
        return ROLE_NODE

    def candidates(self):
        """Master candidates other than the master, sorted."""
        return sorted(n for n, s in self.nodes.items() if s["candidate"] and n != self.master)

    def replica_set(self):
        """The master and its candidates: the nodes holding the queue."""
        return [self.master] + self.candidates()

    def effective_min_acks(self):
        if self.min_acks is not None:
            return self.min_acks
        return default_min_acks(len(self.candidates()))

    def address(self, node):
        return self.nodes[node]["address"]

    def newer_than(self, other):
        return (self.epoch, self.version) > (other.epoch, other.version)

    def to_dict(self):
        return {"name": self.name, "master": self.master, "epoch": self.epoch,
                "version": self.version, "min_acks": self.min_acks,
                "ack_timeout": self.ack_timeout,
                "nodes": {n: dict(s) for n, s in sorted(self.nodes.items())}}

    @classmethod
    def from_dict(cls, data):
        try:
            nodes = {n: dict({"address": s["address"], "candidate": s["candidate"]},
                             **{key: s[key] for key in NODE_EXTRAS if key in s})
                     for n, s in data["nodes"].items()}
            return cls(data["name"], data["master"], nodes, epoch=int(data["epoch"]),
                       version=int(data["version"]), min_acks=data.get("min_acks"),
                       ack_timeout=float(data.get("ack_timeout", 10.0)))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise errors.ConfigurationError("invalid cluster configuration: %s" % err) from None

    def changed(self, **changes):
        """A copy with changes applied and the version raised."""
        data = self.to_dict()
        data.update(changes)
        data["version"] = self.version + 1
        return ClusterConfig.from_dict(data)


def config_path(state_dir):
    return os.path.join(state_dir, CLUSTER_FILE)


def load_config(state_dir):
    """The node's cluster configuration, or None for a single-node (unclustered) queue."""
    path = config_path(state_dir)
    try:
        data = fsutil.read_file(path)
    except FileNotFoundError:
        return None
    try:
        return ClusterConfig.from_dict(serializer.loads(data))
    except errors.GenericError as err:
        raise errors.ConfigurationError("%s: %s" % (path, errors.error_message(err))) from None


def save_config(state_dir, config):
    """Write the configuration durably (temp file, fsync, rename, fsync dir)."""
    fsutil.write_file(config_path(state_dir),
                      serializer.dumps_pretty(config.to_dict()).encode("utf-8"), 0o644)


@contextlib.contextmanager
def state_lock(state_dir):
    """Hold the node's state lock: one process at a time reads and rewrites its files."""
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def save_config_if_newer(state_dir, config):
    """Save config unless cluster.json already holds it or a newer one; whether it did."""
    with state_lock(state_dir):
        current = load_config(state_dir)
        if current is not None and not config.newer_than(current):
            return False
        save_config(state_dir, config)
        return True


def file_stamp(state_dir):
    """What changes when cluster.json or node.json is rewritten (by any process)."""
    stamp = []
    for name in (CLUSTER_FILE, NODE_FILE):
        try:
            info = os.stat(os.path.join(state_dir, name))
            stamp.append((info.st_ino, info.st_mtime_ns, info.st_size))
        except FileNotFoundError:
            stamp.append(None)
    return tuple(stamp)


class NodeState:
    """This node's durable state: name, newest known epoch and master, the vote it gave.

    Thread-safe. ``observe`` and ``grant_vote`` write node.json (fsync) before returning,
    so a promise made to another node survives a crash.
    """

    def __init__(self, state_dir, name, epoch=0, master=None, voted_epoch=0, voted_for=None):
        self._dir = state_dir
        self._path = os.path.join(state_dir, NODE_FILE)
        self._lock = threading.Lock()
        self.name = _check_name(name)
        self.epoch = epoch
        self.master = master
        self.voted_epoch = voted_epoch
        self.voted_for = voted_for

    @classmethod
    def load(cls, state_dir):
        path = os.path.join(state_dir, NODE_FILE)
        try:
            data = serializer.loads(fsutil.read_file(path))
            return cls(state_dir, data["name"], int(data.get("epoch", 0)), data.get("master"),
                       int(data.get("voted_epoch", 0)), data.get("voted_for"))
        except FileNotFoundError:
            raise errors.ConfigurationError("%s missing: this node has not joined a cluster "
                                            "(jqctl cluster init or jqctl node join)" % path
                                            ) from None
        except (errors.GenericError, KeyError, TypeError, ValueError) as err:
            raise errors.ConfigurationError("%s: invalid node state: %s" % (path, err)) from None

    def save(self):
        data = {"name": self.name, "epoch": self.epoch, "master": self.master,
                "voted_epoch": self.voted_epoch, "voted_for": self.voted_for}
        fsutil.write_file(self._path, serializer.dumps_pretty(data).encode("utf-8"), 0o644)

    def reload(self):
        """Take what another process of this node recorded meanwhile (never goes back)."""
        with self._lock, state_lock(self._dir):
            self._merge_disk_unlocked()

    def _merge_disk_unlocked(self):
        try:
            data = serializer.loads(fsutil.read_file(self._path))
            epoch, voted = int(data.get("epoch", 0)), int(data.get("voted_epoch", 0))
        except (OSError, errors.GenericError, AttributeError, TypeError, ValueError):
            return
        if epoch > self.epoch:
            self.epoch, self.master = epoch, data.get("master")
        if voted > self.voted_epoch:
            self.voted_epoch, self.voted_for = voted, data.get("voted_for")

    def observe(self, epoch, master):
        """Learn of a newer epoch and its master (never goes back); durable on return."""
        with self._lock, state_lock(self._dir):
            self._merge_disk_unlocked()
            if epoch > self.epoch or (epoch == self.epoch and self.master is None):
                self.epoch, self.master = epoch, master
                self.save()

    def grant_vote(self, epoch, candidate):
        """Promise this node's vote for epoch to candidate; False if already given elsewhere.

        Granting makes epoch the newest one known: updates from older epochs are refused
        from then on (the deposed master is fenced by the very votes that deposed it).
        """
        with self._lock, state_lock(self._dir):
            self._merge_disk_unlocked()
            if epoch < self.epoch or (epoch == self.epoch and self.master not in (None,
                                                                                 candidate)):
                return False
            if epoch == self.voted_epoch and self.voted_for != candidate:
                return False
            self.voted_epoch, self.voted_for = epoch, candidate
            self.epoch, self.master = epoch, candidate
            self.save()
            return True


def position_key(position):
    """Sortable form of a replication position (None is oldest)."""
    return tuple(position) if position else (0, 0, 0)


def candidate_votes_needed(config):
    """Candidate votes an election needs so that it meets every acknowledging quorum."""
    return len(config.candidates()) - config.effective_min_acks() + 1


def election_won(config, candidate, granted):
    """Whether the nodes in granted elect candidate under config.

    granted holds the nodes that gave their vote (the candidate's own included); a
    candidate's vote already implies the requester was at least as up to date.
    """
    voters = set(config.nodes)
    granted = set(granted) & voters
    candidates = set(config.candidates()) | {candidate}
    candidates.discard(config.master)
    return (len(granted) * 2 > len(voters)
            and len(granted & candidates) >= candidate_votes_needed(config))


def decide_vote(state, epoch, candidate, candidate_position, own_position=None):
    """Answer a vote request: (granted, reason). own_position: this node's replica, if any."""
    if own_position is not None and position_key(candidate_position) < position_key(
            own_position):
        return False, "%s is behind: position %s, this replica has %s" % (
            candidate, candidate_position, own_position)
    if not state.grant_vote(epoch, candidate):
        return False, "already promised epoch %d to %s (knows epoch %d, master %s)" % (
            state.voted_epoch, state.voted_for, state.epoch, state.master)
    return True, "vote for %s in epoch %d" % (candidate, epoch)
