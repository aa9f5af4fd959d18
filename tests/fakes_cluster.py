"""First-class fakes for cluster tests: in-process candidates, nodes and their RPC clients."""

import collections
import os
import time

from jqueue import errors, serializer
from jqueue.cluster import membership
from jqueue.cluster.replica import Replica, ReplicaRpc
from jqueue.cluster.replication import ClusterReplicator
from jqueue.cluster.rpc import client as rpc_client
from jqueue.queue import JobQueue


class NodeState:
    """A node's view of the cluster for fencing: the epoch it knows and that epoch's master,
    the newest vote it gave and its configuration's epoch (see ReplicaRpc)."""

    def __init__(self, epoch=1, master="master"):
        self.epoch = epoch
        self.master = master
        self.voted_epoch = 0
        self.config_epoch = epoch

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


class StreamingLoopbackClient(LoopbackClient):
    """A LoopbackClient that also has RpcClient.stream: a message is the call the
    replication stream of jq-noded makes of it (the opening's body, the head, the data as
    raw frames); with ``unsupported`` the node answers as one without streams.
    ``calls`` counts messages under "<method> message"."""

    unsupported = False

    def stream(self, method, opening, head, data):
        if self.down:
            raise errors.RemoteError("node unreachable (test): connection refused")
        if self.unsupported:
            raise rpc_client.StreamUnsupported("node %s serves no stream %s (test)" % (
                self.node_name, method))
        assert method == "replicate_stream" and isinstance(data, bytes)
        self.calls[method + " message"] += 1
        body = dict(serializer.loads(serializer.dumps(opening)),
                    **serializer.loads(serializer.dumps(head)), frames=data)
        return serializer.loads(serializer.dumps(self.rpc.replicate(self.caller, body)))


class Cluster:
    """A master queue replicating to in-process candidate replicas under one directory."""

    def __init__(self, root, candidates=2, min_acks=None, ack_timeout=2.0, pool_factory=None,
                 epoch=1, session=1, client_class=LoopbackClient):
        self.root = str(root)
        self.names = ["c%d" % i for i in range(1, candidates + 1)]
        self.states = {name: NodeState(epoch, "master") for name in self.names}
        self.replicas = {name: self._open_replica(name) for name in self.names}
        self.clients = {name: client_class("master", self._rpc(name), name)
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


class FakeNode:
    """A node as master_failover sees it: a real membership.NodeState and replica position.

    Votes follow the real rules (membership.decide_vote over the node's state in state_dir).
    Set ``down`` to make every call fail as an unreachable node would, ``vote_refusal`` to
    refuse every vote with that reason; ``calls`` records (method, body) in order, and
    ``config`` the last configuration pushed to the node.
    """

    def __init__(self, state_dir, name, epoch=1, master="m", position=None, role="candidate"):
        os.makedirs(state_dir, exist_ok=True)
        self.state = membership.NodeState(state_dir, name, epoch=epoch, master=master)
        self.state.save()
        self.name = name
        self.position = position
        self.role = role
        self.down = False
        self.vote_refusal = None
        self.calls = []
        self.config = None

    def methods(self):
        """The methods the node was called with, in order."""
        return [method for method, _ in self.calls]

    def handle(self, caller, method, body):
        """Answer one call from node caller as jq-noded would (for the calls used here)."""
        if self.down:
            raise errors.RemoteError("RPC %s to node %s failed: connection refused (test)" % (
                method, self.name))
        self.calls.append((method, body))
        return getattr(self, "_" + method)(caller, body)

    def _node_info(self, caller, body):
        return {"name": self.name, "epoch": self.state.epoch, "master": self.state.master,
                "config_version": 1, "role": self.role, "replica": self.position is not None,
                "position": self.position, "jobs": 0 if self.position is not None else None,
                "slots": 1, "containment": "process group (a fake node)", "features": [],
                "config": self.config, "time": time.time()}

    def _vote(self, caller, body):
        if self.vote_refusal is not None:
            return {"granted": False, "reason": self.vote_refusal, "position": self.position}
        granted, reason = membership.decide_vote(self.state, body["epoch"], body["candidate"],
                                              body["position"], self.position)
        return {"granted": granted, "reason": reason, "position": self.position}

    def _cluster_config_update(self, caller, body):
        self.config = body["config"]
        self.state.observe(body["config"]["epoch"], body["config"]["master"])
        return {"version": body["config"]["version"]}

    def _step_down(self, caller, body):
        self.state.observe(body["epoch"], body["master"])
        return {"ok": True}


class FakeNodeClient:
    """An RpcClient stand-in calling a FakeNode in this process, through a JSON round trip."""

    def __init__(self, caller, node):
        self.caller = caller
        self.node = node
        self.node_name = node.name
        self.address = "fake:%s" % node.name

    def call(self, method, body):
        answer = self.node.handle(self.caller, method, serializer.loads(serializer.dumps(body)))
        return serializer.loads(serializer.dumps(answer))

    def call_encoded(self, method, data):
        return self.call(method, serializer.loads(data))

    def close(self):
        pass


class ScriptedNodeClient:
    """A node RPC client answering from a script: ``answers[method]`` is a value, an
    exception to raise, or a callable(body) giving either; ``calls`` records (method, body).

    Set ``down`` to fail every call as an unreachable node (RemoteError).
    """

    def __init__(self, node_name, address, answers=None):
        self.node_name = node_name
        self.address = address
        self.answers = dict(answers or {})
        self.calls = []
        self.down = False
        self.closed = False

    def call(self, method, body):
        self.calls.append((method, body))
        if self.down:
            raise errors.RemoteError("RPC %s to node %s (%s) failed: connection refused" % (
                method, self.node_name, self.address))
        answer = self.answers.get(method, {})
        if callable(answer):
            answer = answer(body)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def call_encoded(self, method, data):
        return self.call(method, serializer.loads(data))

    def close(self):
        self.closed = True

    def methods(self):
        """The methods called, in order."""
        return [method for method, _ in self.calls]


class ScriptedNodes:
    """A client factory over ScriptedNodeClients: one set of answers per node name.

    ``clients[name]`` lists every client made for that node (management clients and the
    replicator's); ``answers[name]`` is shared by them, ``down`` holds unreachable nodes.
    """

    def __init__(self):
        self.answers = collections.defaultdict(dict)
        self.clients = collections.defaultdict(list)
        self.down = set()

    def __call__(self, name, address):
        client = _SharedClient(self, name, address)
        self.clients[name].append(client)
        return client

    def calls(self, name, method=None):
        """(method, body) of every call made to a node (of one method if given)."""
        return [(m, b) for client in self.clients[name] for m, b in client.calls
                if method is None or m == method]


class _SharedClient(ScriptedNodeClient):
    """A ScriptedNodeClient whose answers and reachability come from its ScriptedNodes."""

    def __init__(self, nodes, node_name, address):
        super().__init__(node_name, address)
        self._nodes = nodes

    def call(self, method, body):
        self.answers = self._nodes.answers[self.node_name]
        self.down = self.node_name in self._nodes.down
        return super().call(method, body)


class FakeClusterOps:
    """A stand-in for jqueue.cluster.admin recording each call in ``calls`` as (name, args).

    Results come from attributes the test sets (``config``, ``csr_path``, ``bundle``,
    ``master``, ``failover``); ``fail(name, error)`` makes a function raise.
    """

    def __init__(self):
        self.calls = []
        self.config = None
        self.csr_path = "/state/tls/node.csr"
        self.bundle = {"cluster": "test"}
        self.master = ("n1", "127.0.0.1:7001", 1)
        self.failover = {"epoch": 2, "votes": ["n2", "n3"], "refused": {}, "unreachable": [],
                         "previous_master": "n1", "updated": ["n1", "n2", "n3"],
                         "update_failed": {}, "stepped_down": True}
        self.written = {}
        self.nodes = []
        self._failures = {}

    def fail(self, name, error):
        self._failures[name] = error

    def _record(self, name, *args):
        self.calls.append((name, args))
        if name in self._failures:
            raise self._failures[name]

    def init_cluster(self, state_dir, cluster_name, node_name, address, min_acks=None,
                     ack_timeout=10.0):
        self._record("init_cluster", state_dir, cluster_name, node_name, address, min_acks,
                     ack_timeout)
        return self.config

    def init_node(self, state_dir, node_name):
        self._record("init_node", state_dir, node_name)
        return self.csr_path

    def sign_node(self, state_dir, node_name, csr_pem):
        self._record("sign_node", state_dir, node_name, csr_pem)
        return "CERT of %s" % node_name

    def make_bundle(self, config, state_dir, cert_pem):
        self._record("make_bundle", config, state_dir, cert_pem)
        return {"config": config.to_dict(), "cert": cert_pem}

    def write_bundle(self, path, bundle):
        self._record("write_bundle", path, bundle)
        self.written[path] = bundle

    def read_bundle(self, path):
        self._record("read_bundle", path)
        return self.bundle

    def join_node(self, state_dir, bundle):
        self._record("join_node", state_dir, bundle)
        return self.config

    def who_is_master(self, state_dir):
        self._record("who_is_master", state_dir)
        return self.master

    def learn_master(self, state_dir, timeout=2.0):
        self._record("learn_master", state_dir, timeout)
        return self.master

    def node_view(self, state_dir, timeout=3.0):
        self._record("node_view", state_dir, timeout)
        return self.config, self.nodes

    def check_failover(self, state_dir):
        self._record("check_failover", state_dir)
        return self.config

    def master_failover(self, state_dir, voting=True, timeout=10.0, confirm=None):
        self._record("master_failover", state_dir, voting, timeout, confirm)
        if not voting and (confirm is None or not confirm("Failover without voting. Continue?")):
            raise errors.OpPrereqError("aborted: failover without voting not confirmed")
        return self.failover
