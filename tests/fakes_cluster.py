"""First-class fakes for replication tests: in-process candidates and their RPC clients."""

import collections
import os

from jqueue import errors, serializer
from jqueue.queue import JobQueue
from jqueue.replica import Replica, ReplicaRpc
from jqueue.replication import ClusterReplicator


class NodeState:
    """A node's view of the cluster for fencing: the epoch it knows and that epoch's master."""

    def __init__(self, epoch=1, master="master"):
        self.epoch = epoch
        self.master = master

    def observe(self, epoch, master):
        self.epoch, self.master = epoch, master


class LoopbackClient:
    """An RPC client calling a ReplicaRpc in this process, through a JSON round trip.

    Set ``down`` to make every call fail as an unreachable node would (RemoteError);
    ``calls`` counts the calls by method.
    """

    def __init__(self, caller, rpc, node_name="peer"):
        self.caller = caller
        self.rpc = rpc
        self.node_name = node_name
        self.address = "loopback"
        self.down = False
        self.calls = collections.Counter()

    def call_encoded(self, method, data):
        return self.call(method, serializer.loads(data))

    def call(self, method, body):
        if self.down:
            raise errors.RemoteError("node unreachable (test): connection refused")
        self.calls[method] += 1
        handler = getattr(self.rpc, method)
        result = handler(self.caller, serializer.loads(serializer.dumps(body)))
        return serializer.loads(serializer.dumps(result))

    def close(self):
        pass


class Cluster:
    """A master queue replicating to in-process candidate replicas under one directory."""

    def __init__(self, root, candidates=2, min_acks=None, ack_timeout=2.0, pool_factory=None,
                 epoch=1, session=1):
        self.root = str(root)
        self.names = ["c%d" % i for i in range(1, candidates + 1)]
        self.states = {name: NodeState(epoch, "master") for name in self.names}
        self.replicas = {name: self._open_replica(name) for name in self.names}
        self.clients = {name: LoopbackClient("master", self._rpc(name), name)
                        for name in self.names}
        self.fenced = []
        self.replicator = ClusterReplicator(
            "master", epoch, session, self.clients, min_acks=min_acks, ack_timeout=ack_timeout,
            retry_interval=0.02, on_fenced=self.fenced.append)
        kwargs = {"checkpoint_interval": None}
        if pool_factory is not None:
            kwargs["pool_factory"] = pool_factory
        self.queue = JobQueue(os.path.join(self.root, "master"), replicator=self.replicator,
                              **kwargs)

    def _open_replica(self, name):
        return Replica(os.path.join(self.root, name), known_epoch=self.states[name].epoch,
                       checkpoint_interval=None)

    def _rpc(self, name):
        return ReplicaRpc(lambda: self.replicas.get(name), self.states[name])

    def stop_replica(self, name):
        """Take a candidate down (closed replica, calls refused)."""
        self.clients[name].down = True
        self.replicas[name].close()
        self.replicas[name] = None

    def start_replica(self, name):
        """Bring a candidate back from its directory."""
        self.replicas[name] = self._open_replica(name)
        self.clients[name].down = False

    def close(self):
        self.queue.shutdown(timeout=5)
        for replica in self.replicas.values():
            if replica is not None:
                replica.close()
