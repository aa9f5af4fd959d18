"""jq-masterd in a cluster: start checks, the replication session and the cluster backend.

A state directory holding cluster.json makes jq-masterd the master of a cluster (see
jqueue.cluster.membership). Before the queue is opened, ``start``:

1. refuses to run unless this node is the master of the configuration and its node.json
   knows no newer epoch and no other master ("this node (X) is not the master: Y (addr)
   is, epoch N");
2. asks every other node for its view (``node_info``, in parallel, a few seconds) and
   refuses if one knows a newer epoch: a failover happened while this node was away
   ("fenced: node Z knows epoch N (master Y)"); unreachable nodes are only logged;
3. takes the next replication session of the epoch from <queue>/replication, written
   durably before anything is replicated (the first session of an epoch is 1);
4. builds the ClusterReplicator over one RPC client per master candidate.

A ClusterMaster then serves the cluster LUXI methods (ClusterInfo, ListNodes, AddNode,
RemoveNode, ModifyNode, VerifyCluster, StepDown). A configuration change is serialized
with the others, saved durably with its version raised, pushed to the other nodes
(``cluster_config_update``) and applied to the replicator: a candidate that goes away is
dropped after the acknowledgement policy is lowered, a new one is added before it is
raised. The push includes this node's own jq-noded (it authorizes callers by the
configuration it holds), and not a node being added (it gets the configuration in its
bundle). Its methods block on node RPC: they run in the LUXI thread pool. A node that
misses a push (down, partitioned, or a deposed master coming back) is pushed the current
configuration again until it takes it (jqueue.cluster.pusher); at start, the nodes that do
not answer or answer with an older configuration are marked for that.

A start refused because another node knows a newer epoch records that epoch's
configuration when its master handed it over, so that the deposed node knows its master
and role (a master candidate again) even before its jq-noded hears from the new master.

A master that learns it was deposed (a candidate answers FencedError, or StepDown names a
newer epoch) calls ``on_deposed(reason)`` from whatever thread learnt it; the daemon then
stops serving.
"""

import importlib
import logging
import os
import threading
import time

from jqueue import constants, errors, serializer
from jqueue.cluster import commandlink, membership, pusher, tls
from jqueue.cluster.replication import ClusterReplicator
from jqueue.cluster.rpc import client as rpc_client
from jqueue.daemon import common
from jqueue.run.commands import node_list_fields
from jqueue.store import fsutil

logger = logging.getLogger(__name__)

#: Seconds the other nodes get to answer node_info (at start and for ListNodes).
NODE_INFO_TIMEOUT = 3.0
#: Seconds the other nodes get to take a new configuration.
PUSH_TIMEOUT = 10.0
#: Seconds a candidate gets to send the digests of its queue for VerifyCluster.
VERIFY_TIMEOUT = 10.0
NODE_INFO = "node_info"
CONFIG_UPDATE = "cluster_config_update"


def load(state_dir):
    """(ClusterConfig, NodeState) of a clustered state directory; None without cluster.json."""
    config = membership.load_config(state_dir)
    if config is None:
        return None
    return config, membership.NodeState.load(state_dir)


def check_master(config, state):
    """StartupError unless this node is the master of config and knows of nothing newer."""
    name = state.name
    if name not in config.nodes:
        raise common.StartupError("this node (%s) is not a node of cluster %s" % (
            name, config.name))
    if config.master != name:
        raise _not_master(config, name, config.master, config.epoch)
    if state.epoch > config.epoch or (state.epoch == config.epoch
                                      and state.master not in (None, name)):
        raise _not_master(config, name, state.master, state.epoch)


def _not_master(config, name, master, epoch):
    address = config.nodes.get(master, {}).get("address", "address unknown")
    return common.StartupError("this node (%s) is not the master: %s (%s) is, epoch %d" % (
        name, master, address, epoch))


#: Seconds an opcode's call on nodes may take beyond the work it asks for.
NODE_CALL_MARGIN = 10.0


def check_not_fenced(config, clients, timeout=NODE_INFO_TIMEOUT, state_dir=None):
    """Ask the nodes of clients for their view; StartupError if one knows a newer epoch.

    Returns {node: node_info answer or exception}; unreachable nodes are logged. A node
    that knows a newer epoch and is that epoch's master hands its configuration over with
    its answer: with state_dir, this node records it (cluster.json, node.json), so that it
    knows it was deposed, whom to name, and that it is a master candidate again.
    """
    results = rpc_client.call_many(clients, NODE_INFO, {}, timeout) if clients else {}
    for name in sorted(results):
        answer = results[name]
        if isinstance(answer, Exception):
            logger.warning("node %s did not answer at start: %s", name,
                           errors.error_message(answer))
            continue
        epoch = _epoch_of(answer)
        if epoch > config.epoch:
            recorded = state_dir is not None and record_newer_config(state_dir, name, answer)
            raise common.StartupError("fenced: node %s knows epoch %d (master %s)%s" % (
                name, epoch, answer.get("master"),
                "; its configuration is recorded in %s" % membership.config_path(state_dir)
                if recorded else ""))
    return results


def record_newer_config(state_dir, peer, answer):
    """Record the configuration a node_info answer of node peer carries, if peer is its
    master and it is newer than this node's; whether it was recorded.

    Only the master of an epoch hands out that epoch's configuration (mutual TLS names
    peer): a bare epoch number from another node is never adopted.
    """
    data = answer.get("config") if isinstance(answer, dict) else None
    if not isinstance(data, dict):
        return False
    try:
        config = membership.ClusterConfig.from_dict(data)
    except errors.ConfigurationError as err:
        logger.warning("node %s sent an invalid configuration: %s", peer,
                       errors.error_message(err))
        return False
    if config.master != peer:
        return False
    if not membership.save_config_if_newer(state_dir, config):
        return False
    membership.NodeState.load(state_dir).observe(config.epoch, config.master)
    logger.warning("recorded configuration version %d from %s: %s is the master of epoch %d",
                   config.version, peer, config.master, config.epoch)
    return True


def _epoch_of(answer):
    try:
        return int(answer.get("epoch") or 0)
    except (AttributeError, TypeError, ValueError):
        return 0


def next_session(queue_dir, epoch):
    """Raise the replication session of epoch in <queue>/replication (durably); return it."""
    path = os.path.join(queue_dir, constants.REPLICATION_FILE)
    previous = _read_session(path)
    session = previous[1] + 1 if previous is not None and previous[0] == epoch else 1
    fsutil.makedirs(queue_dir)
    data = serializer.dumps({"epoch": epoch, "session": session}) + "\n"
    fsutil.write_file(path, data.encode("utf-8"), 0o640)
    return session


def _read_session(path):
    """(epoch, session) of the replication file, None if there is none."""
    try:
        data = serializer.loads(fsutil.read_file(path))
        return int(data["epoch"]), int(data["session"])
    except FileNotFoundError:
        return None
    except (errors.GenericError, KeyError, TypeError, ValueError, OSError) as err:
        raise common.StartupError("%s: unreadable replication state (%s); move it aside to "
                                  "start a new session" % (path, err)) from None


def tls_client_factory(state_dir, node_name, timeout=constants.RPC_TIMEOUT):
    """A factory of mutual-TLS RpcClients from <state>/tls; its certificate must name us."""
    credentials = tls.Credentials.from_dir(os.path.join(state_dir, constants.TLS_DIR))
    if credentials.node_name != node_name:
        raise common.StartupError("the certificate in %s names node %s, node.json names %s" % (
            credentials.cert_path, credentials.node_name, node_name))
    context = credentials.client_context()

    def make(name, address):
        return rpc_client.RpcClient(name, address, context, timeout)

    return make


def start(state_dir, queue_dir, on_deposed=None, client_factory=None, ops=None):
    """The ClusterMaster of state_dir after the start checks, or None without cluster.json.

    StartupError (or another GenericError) if this node may not run as master.
    """
    loaded = load(state_dir)
    if loaded is None:
        return None
    config, state = loaded
    check_master(config, state)
    factory = client_factory or tls_client_factory(state_dir, state.name)
    master = ClusterMaster(state_dir, config, state.name, factory, ops=ops,
                           on_deposed=on_deposed)
    try:
        answers = check_not_fenced(config, [master.client(n) for n in master.other_nodes()],
                                   state_dir=state_dir)
        master.open_replicator(next_session(queue_dir, config.epoch))
    except BaseException:
        master.close()
        raise
    master.pusher.check_answers(answers)
    master.pusher.start()
    return master


class ClusterMaster:
    """This node as the master of its cluster: configuration, node clients, replicator.

    client_factory(name, address) makes an RPC client for a node; ops is the module with
    sign_node and make_bundle (default jqueue.cluster.admin, imported when first needed);
    on_deposed(reason) is called once, from any thread, when this master must stop serving.
    """

    def __init__(self, state_dir, config, node_name, client_factory, ops=None,
                 on_deposed=None):
        self.state_dir = state_dir
        self.config = config
        self.name = node_name
        self.session = None
        self.replicator = None
        self.deposed = None
        self._client_factory = client_factory
        self._ops = ops
        self._on_deposed = on_deposed
        self._change_lock = threading.Lock()
        self._clients_lock = threading.Lock()
        self._clients = {}
        #: Retries the configuration push to nodes that missed it (started by start()).
        self.pusher = pusher.ConfigPusher(lambda: self.config, client_factory)
        #: The queue's command runner (set by the daemon once the queue is open).
        self.commands = None
        self._links = {}
        #: What a failed epilog does to its node (jq-masterd's epilog_failure): "mark" or
        #: "drain" (see epilog_failed).
        self.epilog_failure = "mark"

    def open_replicator(self, session, **kwargs):
        """Build the replicator of this session (the JobQueue attaches and starts it)."""
        config = self.config
        self.session = session
        peers = {name: self._client_factory(name, config.address(name))
                 for name in config.candidates()}
        self.replicator = ClusterReplicator(
            self.name, config.epoch, session, peers, min_acks=config.min_acks,
            ack_timeout=config.ack_timeout, on_fenced=self._fenced,
            on_peer_error=self._peer_error, **kwargs)
        logger.info("cluster %s: master %s, epoch %d, session %d, candidates %s, min_acks %d",
                    config.name, self.name, config.epoch, session,
                    ", ".join(config.candidates()) or "none", self.replicator.min_acks)
        return self.replicator

    def close(self):
        """Stop replicating and pushing, stop the command links and close the node
        clients."""
        self.pusher.stop()
        if self.replicator is not None:
            self.replicator.stop()
        for link in self._links.values():
            link.stop()
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    # Nodes and their clients

    def other_nodes(self, config=None):
        """The nodes of config (default: the current one) other than this one, sorted."""
        config = config or self.config
        return sorted(name for name in config.nodes if name != self.name)

    def client(self, name, address=None):
        """The management client of a node (kept; replaced when its address changes)."""
        address = address or self.config.address(name)
        with self._clients_lock:
            client = self._clients.get(name)
            if client is not None and client.address == address:
                return client
            self._clients[name] = self._client_factory(name, address)
        if client is not None:
            client.close()
        return self._clients[name]

    def _drop_client(self, name):
        with self._clients_lock:
            client = self._clients.pop(name, None)
        if client is not None:
            client.close()

    # Running opcodes on nodes (the ``nodes`` of an opcode's context)

    def test_delay(self, nodes, duration):
        """OP_TEST_DELAY on_nodes: every node sleeps duration seconds; OpExecError naming
        unknown nodes, or the nodes that failed and why."""
        unknown = sorted(set(nodes) - set(self.config.nodes))
        if unknown:
            raise errors.OpExecError("unknown node(s) %s: not in cluster %s" % (
                ", ".join(unknown), self.config.name))
        clients = [self.client(name) for name in sorted(set(nodes))]
        results = rpc_client.call_many(clients, "test_delay", {"duration": duration},
                                       timeout=duration + NODE_CALL_MARGIN)
        failed = {name: result for name, result in results.items()
                  if isinstance(result, Exception)}
        if failed:
            raise errors.OpExecError("delay failed on %s" % "; ".join(
                "%s: %s" % (name, errors.error_message(err))
                for name, err in sorted(failed.items())))

    # Command jobs on the nodes (their jq-noded runs them: jqueue.cluster.nodeexec)

    def command_links(self, ping_interval=2.0):
        """A RemoteLink per node of the cluster, the master's own node included."""
        self._ping_interval = ping_interval
        for name in sorted(self.config.nodes):
            self._links.setdefault(name, self._command_link(name))
        return [self._links[name] for name in sorted(self._links)]

    def _command_link(self, name):
        spec = self.config.nodes[name]
        return commandlink.RemoteLink(
            name, 1, lambda: self._client_factory(name, self.config.address(name)),
            tags=spec.get("tags", ()), drained=spec.get("drained", False),
            offline=spec.get("offline", False),
            ping_interval=getattr(self, "_ping_interval", 2.0))

    def epilog_failed(self, name, why):
        """Node name's epilog failed (the command runner says so, under the queue's lock:
        this only starts the work): with epilog_failure "drain", drain the node, as
        ModifyNode would (journaled, replicated, pushed to the nodes), with an event."""
        if self.epilog_failure == "drain":
            threading.Thread(target=self._drain_after_epilog, args=(name, why),
                             name="jq-drain-%s" % name, daemon=True).start()

    def _drain_after_epilog(self, name, why):
        try:
            changed = self.modify_node(name, None, {"drained": True})["changed"]
        except errors.GenericError as err:  # no longer master, the node removed
            logger.error("node %s: not drained after its epilog failed (%s): %s", name,
                         why, errors.error_message(err))
            return
        if changed:
            logger.warning("node %s drained: %s", name, why)
            self.commands.node_event("DRAINED", name, why)

    def _update_command_links(self, config):
        """The configuration changed: tags, drain and offline flags reach the runner."""
        runner = self.commands
        if runner is None:
            return

        def apply():
            for name, link in self._links.items():
                spec = config.nodes.get(name)
                if spec is None:
                    link.offline = True  # removed: nothing new starts there
                    continue
                link.tags = frozenset(spec.get("tags", ()))
                link.drained, link.offline = spec.get("drained", False), spec.get(
                    "offline", False)
            runner.nodes_changed()
        runner.host.call(apply)

    def _add_command_link(self, name):
        """A node was added: the command runner may use it from now on."""
        runner = self.commands
        if runner is None or name in self._links:
            return
        link = self._links[name] = self._command_link(name)
        runner.host.call(runner.add_link, link)

    # Being deposed

    def _fenced(self, error):
        self._depose("deposed: %s" % errors.error_message(error))

    def _peer_error(self, name, error):
        """A candidate refused replication because of its role: it has an older
        configuration (e.g. a deposed master that came back). Push it the current one."""
        if isinstance(error, errors.NotMasterError):
            self.pusher.mark_stale(name, errors.error_message(error))

    def _depose(self, reason):
        if self.deposed is not None:
            return
        self.deposed = reason
        logger.warning("%s", reason)
        if self._on_deposed is not None:
            self._on_deposed(reason)

    # LUXI methods

    def config_values(self):
        """QueryConfigValues names answered from the cluster configuration."""
        return {constants.CONFIG_MASTER_NODE: lambda: self.config.master,
                constants.CONFIG_CLUSTER_NAME: lambda: self.config.name}

    def info(self):
        """ClusterInfo: the configuration and the replication policy in force."""
        config, status = self.config, self.replicator.status()
        return {"name": config.name, "master": config.master, "epoch": config.epoch,
                "version": config.version, "session": self.session,
                "min_acks": status["min_acks"], "min_acks_setting": config.min_acks,
                "ack_timeout": config.ack_timeout, "mode": status["mode"],
                "fenced": status.get("fenced"),
                "nodes": [{"name": n, "address": config.address(n), "role": config.role(n)}
                          for n in sorted(config.nodes)]}

    def list_nodes(self):
        """ListNodes: every node with its reachability, sync state and replica position."""
        config = self.config
        others = self.other_nodes(config)
        infos = rpc_client.call_many([self.client(n) for n in others], NODE_INFO, {},
                                     NODE_INFO_TIMEOUT) if others else {}
        status = self.replicator.status()
        peers = {peer["name"]: peer for peer in status["peers"]}
        rows = []
        for name in sorted(config.nodes):
            if name == self.name:
                rows.append(self._own_row(config, status))
            else:
                rows.append(_node_row(config, name, infos.get(name), peers.get(name)))
        commands = self.commands.node_status() if self.commands is not None else {}
        for row in rows:
            row.update(node_list_fields(commands.get(row["name"]), config.nodes[row["name"]]))
            if not row.get("reachable", True):  # its machine's last reading is old news
                row.update(dict.fromkeys(constants.NODE_RESOURCES))
        return rows

    def _own_row(self, config, status):
        return {"name": self.name, "address": config.address(self.name),
                "role": config.role(self.name), "reachable": True, "in_sync": True,
                "position": [status["epoch"], status["session"], status["seq"]],
                "last_error": status.get("fenced"), "epoch": config.epoch,
                "config_version": config.version}

    def add_node(self, name, address, candidate, csr_pem):
        """AddNode: sign the node's CSR, add it, push the configuration; the join bundle."""
        with self._change_lock:
            config = self.config
            if name in config.nodes:
                raise errors.OpPrereqError("node %s is already in cluster %s" % (
                    name, config.name), constants.ECODE_EXISTS)
            nodes = dict(config.nodes)
            nodes[name] = {"address": address, "candidate": bool(candidate)}
            new = _changed(config, nodes=nodes)
            ops = self._ops_module()
            try:
                cert_pem = ops.sign_node(self.state_dir, name, csr_pem)
                bundle = ops.make_bundle(new, self.state_dir, cert_pem)
            except OSError as err:
                raise errors.OpPrereqError("cannot sign the certificate of %s: %s" % (
                    name, err), constants.ECODE_STATE) from None
            self._change(new, push_to=[n for n in sorted(new.nodes) if n != name])
        self._add_command_link(name)
        logger.info("node %s (%s) added as %s; configuration version %d", name, address,
                    new.role(name), new.version)
        return bundle

    def remove_node(self, name):
        """RemoveNode: drop a node (never the master, nor one that command jobs or
        services still use); {"version", "unreachable"}."""
        with self._change_lock:
            config = self.config
            self._check_other_node(config, name, "remove")
            self._check_unused(name)
            new = _changed(config, nodes={n: s for n, s in config.nodes.items() if n != name})
            failed = self._change(new, push_to=sorted(new.nodes),
                                  extra={name: config.address(name)})
        self._drop_client(name)
        link = self._links.pop(name, None)
        if link is not None:
            self.commands.host.call(self.commands.remove_link, name)
        logger.info("node %s removed; configuration version %d", name, new.version)
        return {"version": new.version, "unreachable": failed}

    def _check_unused(self, name):
        """OpPrereqError if command jobs run on node name or are pinned to it, or services
        are placed there: removed, it would leave them running unwatched, or waiting for
        ever (Ganeti refuses to remove a node that holds instances, likewise)."""
        if self.commands is None:
            return
        jobs, services = self.commands.node_holdings(name)
        if not jobs and not services:
            return
        held = []
        if jobs:
            held.append("command jobs running there or pinned to it: %s%s" % (
                ", ".join(str(job_id) for job_id in jobs[:20]),
                " (%d in all)" % len(jobs) if len(jobs) > 20 else ""))
        if services:
            held.append("services placed there: %s" % ", ".join(services[:20]))
        raise errors.OpPrereqError(
            "node %s is in use (%s); drain it (jqctl node modify %s --drain yes), let its "
            "jobs end or cancel them, and move or remove its services first" % (
                name, "; ".join(held), name), constants.ECODE_STATE)

    def modify_node(self, name, candidate, changes=None):
        """ModifyNode: make a node a master candidate or not (candidate null: unchanged),
        and change its tags, drain or offline flags (changes: {"tags": [...], "drained":
        bool, "offline": bool}); {"version", "unreachable", "changed"}."""
        with self._change_lock:
            config = self.config
            if name not in config.nodes:
                raise errors.OpPrereqError("node %s is not in cluster %s" % (
                    name, config.name), constants.ECODE_NOENT)
            spec = dict(config.nodes[name])
            if candidate is not None and spec["candidate"] != bool(candidate):
                self._check_other_node(config, name, "modify")
                spec["candidate"] = bool(candidate)
            spec.update(changes or {})
            if spec == config.nodes[name]:
                return {"version": config.version, "unreachable": {}, "changed": False}
            nodes = dict(config.nodes)
            nodes[name] = spec
            new = _changed(config, nodes=nodes)
            failed = self._change(new, push_to=sorted(new.nodes))
        logger.info("node %s is now %s%s; configuration version %d", name, new.role(name),
                    _flags_text(spec), new.version)
        if self.commands is not None:
            self.commands.node_event("MODIFIED", name, "now %s%s" % (
                new.role(name), _flags_text(spec)))
        return {"version": new.version, "unreachable": failed, "changed": True}

    def verify(self):
        """VerifyCluster: each candidate's queue compared with the master's (digests), its
        state ("in sync", "differs", "resyncing", "stale configuration", "unreachable"),
        and how far its clock is off the master's (clock_skew).

        Asks the candidates in parallel on the management clients, each call bounded:
        it never waits for replication.
        """
        config = self.config
        names = config.candidates()
        if not names:
            return {}
        sent = time.time()
        infos = rpc_client.call_many([self.client(name) for name in names], NODE_INFO, {},
                                     NODE_INFO_TIMEOUT)
        received = time.time()
        answering = [name for name in names if not isinstance(infos[name], Exception)]
        digests = dict.fromkeys(names, errors.RemoteError("no answer"))
        if answering:
            digests.update(rpc_client.call_many([self.client(name) for name in answering],
                                                "resync_digests",
                                                self.replicator.base_body(), VERIFY_TIMEOUT))
        self.pusher.check_answers({n: a for n, a in infos.items()
                                   if not isinstance(a, Exception)})
        report = {name: self.replicator.verification(name, digests[name], infos[name],
                                                     (config.epoch, config.version))
                  for name in names}
        for name in answering:  # (at least as far off as that: the calls' span agrees)
            report[name]["clock_skew"] = rpc_client.clock_skew(infos[name], sent, received)
        return report

    def step_down(self, epoch, master):
        """StepDown: a newer epoch has another master; stop serving (True)."""
        if epoch <= self.config.epoch:
            raise errors.OpPrereqError("StepDown refused: epoch %d is not newer than this "
                                       "master's epoch %d" % (epoch, self.config.epoch),
                                       constants.ECODE_STATE)
        self._depose("stepping down: %s is master, epoch %d" % (master, epoch))
        return True

    # Configuration changes (under the change lock)

    def _check_other_node(self, config, name, verb):
        if name not in config.nodes:
            raise errors.OpPrereqError("node %s is not in cluster %s" % (name, config.name),
                                       constants.ECODE_NOENT)
        if name == config.master:
            raise errors.OpPrereqError("cannot %s node %s: it is the master (fail over "
                                       "first)" % (verb, name), constants.ECODE_STATE)

    def _check_still_master(self):
        """NotMasterError (and deposed) if cluster.json on disk names a newer epoch.

        A failover pushes its configuration to this node's jq-noded, which saves it here,
        before it tells this daemon to step down: never overwrite it with an older epoch.
        """
        on_disk = membership.load_config(self.state_dir)
        if on_disk is not None and on_disk.epoch > self.config.epoch:
            self._depose("deposed: %s names %s master of epoch %d" % (
                membership.config_path(self.state_dir), on_disk.master, on_disk.epoch))
            raise errors.NotMasterError("this node is no longer the master: %s is, epoch %d" % (
                on_disk.master, on_disk.epoch))

    def _change(self, new, push_to, extra=None):
        """Save new, apply it to the replicator, push it; {node: error} of failed pushes."""
        self._check_still_master()
        old = self.config
        membership.save_config(self.state_dir, new)
        self.config = new
        added = [n for n in new.candidates() if n not in old.candidates()]
        removed = [n for n in old.candidates() if n not in new.candidates()]
        min_acks = new.effective_min_acks()
        if removed:
            self.replicator.set_min_acks(min_acks)
            for name in removed:
                self.replicator.remove_peer(name)
        targets = [(n, new.address(n)) for n in push_to] + sorted((extra or {}).items())
        failed = self._push(new, targets)
        for name, _ in targets:
            if name in new.nodes and name in failed:
                self.pusher.mark_stale(name, failed[name])
            else:
                self.pusher.mark_current(name)
        for name in added:
            self.replicator.add_peer(name, self._client_factory(name, new.address(name)))
        self.replicator.set_min_acks(min_acks)
        self._update_command_links(new)
        return failed

    def _push(self, config, targets):
        """Send config to the (name, address) targets; {node: message} of those that failed."""
        clients = [self.client(name, address) for name, address in targets]
        if not clients:
            return {}
        results = rpc_client.call_many(clients, CONFIG_UPDATE, {"config": config.to_dict()},
                                       PUSH_TIMEOUT)
        failed = {}
        for name, result in sorted(results.items()):
            if isinstance(result, Exception):
                failed[name] = errors.error_message(result)
                logger.warning("node %s did not take configuration version %d: %s", name,
                               config.version, failed[name])
        return failed

    def _ops_module(self):
        if self._ops is None:
            self._ops = importlib.import_module("jqueue.cluster.admin")
        return self._ops


def _flags_text(spec):
    words = ["tags %s" % ",".join(spec.get("tags", ())) if spec.get("tags") else ""]
    words += [flag for flag in ("drained", "offline") if spec.get(flag)]
    text = ", ".join(word for word in words if word)
    return " (%s)" % text if text else ""


def _changed(config, **changes):
    """config.changed(...) with a refusal as OpPrereqError."""
    try:
        return config.changed(**changes)
    except errors.ConfigurationError as err:
        raise errors.OpPrereqError(errors.error_message(err), constants.ECODE_INVAL) from None


def _node_row(config, name, answer, peer):
    """A ListNodes row for another node from its node_info answer and replicator status."""
    row = {"name": name, "address": config.address(name), "role": config.role(name),
           "reachable": None, "in_sync": None, "position": None, "last_error": None,
           "epoch": None, "config_version": None}
    if isinstance(answer, Exception):
        row.update(reachable=False, last_error=errors.error_message(answer))
    elif isinstance(answer, dict):
        row.update(reachable=True, position=answer.get("position"), epoch=answer.get("epoch"),
                   config_version=answer.get("config_version"))
    if peer is not None:
        row["in_sync"] = peer["in_sync"]
        row["last_error"] = row["last_error"] or peer["last_error"]
    return row
