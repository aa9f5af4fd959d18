"""jq-noded: the node daemon of a cluster (see man/jq-noded.8.rst).

``make_service(config, reactor)`` builds the service tree: a NodeService holding the
node (jqueue.cluster.noderpc.Node: node state, cluster configuration, and on a master candidate
the replica of the queue) and the RPC listener (HTTPS with mutual TLS, jqueue.cluster.rpc.server).
Starting loads the node, opens its replica, listens and tells systemd "READY=1".
Stopping (SIGTERM, SIGINT) stops listening, lets the calls in progress finish, closes
the replica (it checkpoints and releases the queue lock) and exits.

``main(argv)`` runs it in the foreground and returns the exit status: 0 after a clean
stop, 1 if the daemon cannot start (or the replica could not be closed cleanly), 2 for a
usage error.
"""

import logging
import os
import sys

from twisted.application import service
from twisted.internet import defer, threads
from twisted.python import failure, threadpool

from jqueue import connlimit, constants, errors
from jqueue.cluster import admin, membership
from jqueue.cluster.nodeexec import FEATURES as EXEC_FEATURES
from jqueue.cluster.nodeexec import NodeExec
from jqueue.cluster.noderpc import Node
from jqueue.cluster.rpc import server
from jqueue.daemon import common
from jqueue.exec.executor import Executor
from jqueue.exec.supervisor import make_supervisor

logger = logging.getLogger("jqueue.daemon.noded")  # also when run as __main__

PROG = "jq-noded"
PROGRAM = "noded"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = common.EXIT_OK, common.EXIT_FAILURE, common.EXIT_USAGE
#: (status, meaning), as the man page's EXIT STATUS lists them.
EXIT_STATUSES = (
    (EXIT_OK, "stopped cleanly after SIGTERM or SIGINT"),
    (EXIT_FAILURE, "could not start (not part of a cluster, bad configuration, TLS files "
                   "missing or invalid, address in use), or the replica could not be "
                   "closed cleanly at stop"),
    (EXIT_USAGE, "usage error: unknown flag, bad flag value, --state-dir missing"),
)
NOT_JOINED = "not part of a cluster: run jqctl cluster init or jqctl node join"


def _joined_files(state_dir):
    return [membership.config_path(state_dir), os.path.join(state_dir, membership.NODE_FILE)] + [
        admin.tls_path(state_dir, name) for name in (
            constants.CA_CERT_FILE, constants.NODE_CERT_FILE, constants.NODE_KEY_FILE)]


def load_node(config):
    """The Node of a noded Config; StartupError if the state directory is in no cluster."""
    state_dir = os.path.abspath(config.state_dir)
    missing = [path for path in _joined_files(state_dir) if not os.path.exists(path)]
    if missing:
        raise common.StartupError("%s (missing: %s)" % (NOT_JOINED, ", ".join(missing)))
    node = Node.load(state_dir, checkpoint_interval=config.checkpoint_interval)
    credentials = admin.credentials(state_dir)
    if credentials.node_name != node.name:
        raise common.StartupError("node certificate %s names %s, but node.json names %s" % (
            credentials.cert_path, credentials.node_name, node.name))
    return node, credentials


def listen_address(config, node):
    """(host, port) to listen on: --listen, else this node's address in the configuration."""
    address = config.listen
    if address is None:
        if node.name not in node.config.nodes:
            raise common.StartupError("node %s is not in the cluster configuration: give "
                                      "--listen" % node.name)
        address = node.config.address(node.name)
    return membership.parse_address(address)


class NodeService(service.Service):
    """The daemon: the node (and its replica), then the RPC listener."""

    def __init__(self, config, reactor):
        self.config = config
        self.reactor = reactor
        self.node = None
        self.port = None
        self.site = None
        self.executor = None
        self.supervisor = None
        self.exec_rpc = None
        self._pool = None
        self.exit_status = EXIT_OK

    def startService(self):
        """Load the node, open its replica, listen, tell systemd; StartupError if not."""
        super().startService()
        try:
            self.node, credentials = load_node(self.config)
            host, port = listen_address(self.config, self.node)
            self.node.start()
            self._pool = threadpool.ThreadPool(0, self.config.rpc_threads, name="noded-rpc")
            handlers = {name: server.Handler(func) for name, func in self.node.handlers().items()}
            replicate = _answer_when_durable(self.reactor, self._pool, self.node)
            handlers["replicate"] = server.Handler(replicate, blocking=False)
            handlers["replicate_stream"] = server.StreamHandler(
                lambda peer, opening: _stream_of(replicate, peer, opening))
            handlers.update(self._exec_handlers())
            self.site = server.make_site(handlers, self.node.allowed_peer, self._pool,
                                         max_body=self.config.rpc_max_body,
                                         max_connections=connlimit.fit_caps(
                                             {"RPC": constants.RPC_MAX_CONNECTIONS})["RPC"],
                                         reactor=self.reactor)
            self.port = self._listen(credentials, host, port)
        except BaseException:
            self.running = 0
            if self.supervisor is not None:
                self.supervisor.stop()
            if self.executor is not None:
                self.executor.stop()
            if self.node is not None:
                self.node.stop()
            raise
        self._pool.start()
        common.sd_notify("READY=1")
        logger.info("jq-noded ready: node %s (%s) of cluster %s, listening on %s:%d, "
                    "epoch %d, master %s", self.node.name, self.node.role,
                    self.node.config.name, host, self.port.getHost().port,
                    self.node.state.epoch, self.node.state.master)

    def _exec_handlers(self):
        """The exec_* methods: this node runs the master's command jobs (in the reactor),
        and the svc_* methods: it keeps the services placed on it alive."""
        config, node = self.config, self.node
        self.executor = Executor(node.state_dir, self.reactor, allowed_users=config.allowed_users,
                                 use_cgroup=config.containment == "auto",
                                 run_dir=config.run_dir, hooks=common.command_hooks(config))
        self.executor.start()
        node.slots, node.containment = config.slots, self.executor.containment
        node.exec_features = EXEC_FEATURES
        logger.info("command jobs: %d slots, containment: %s", config.slots,
                    self.executor.containment)
        self.supervisor = make_supervisor(node.state_dir, self.reactor, node.name,
                                          config.allowed_users, config.containment == "auto",
                                          config.run_dir)
        self.supervisor.start()
        self.exec_rpc = NodeExec(self.executor, node.is_master, self.reactor, config.slots,
                                 supervisor=self.supervisor,
                                 memory_reserve=config.memory_reserve)
        return {name: server.Handler(func, blocking=False)
                for name, func in self.exec_rpc.handlers().items()}

    def reconfigure(self, new, changes):
        """SIGHUP (common.reload_daemon): the node's slots (the master hears of them at
        once), allowed users, prolog and epilog; the names of those applied."""
        applied = set()
        if self.exec_rpc is None:
            return applied
        if "slots" in changes:
            self.node.slots = self.exec_rpc.slots = new.slots
            self.exec_rpc.node_changed({"slots": new.slots})
            applied.add("slots")
        if "allowed_users" in changes:
            self.executor.allow_users(new.allowed_users)
            self.supervisor.executor.allow_users(new.allowed_users)
            applied.add("allowed_users")
        if "memory_reserve" in changes:
            self.exec_rpc.set_memory_reserve(new.memory_reserve)
            applied.add("memory_reserve")
        hooks = set(common.HOOK_OPTIONS) & set(changes)
        if hooks:
            self.executor.set_hooks(common.command_hooks(new))
            applied |= hooks
        return applied

    def _listen(self, credentials, host, port):
        outcome = []
        server.listen(self.reactor, self.site, credentials, host, port).addBoth(outcome.append)
        if outcome and not isinstance(outcome[0], failure.Failure):
            return outcome[0]
        err = outcome[0].value if outcome else "no answer"
        raise common.StartupError("cannot listen on %s:%d: %s" % (
            host, port, getattr(err, "socketError", None) or err))

    @defer.inlineCallbacks
    def stopService(self):
        """Stop listening, let the calls in progress end, close the replica."""
        super().stopService()
        common.sd_notify("STOPPING=1")
        logger.info("stopping: no new RPC calls; closing the replica")
        try:
            yield self.port.stopListening()
        except Exception:  # noqa: BLE001 - logged; the exit status says it
            self._stop_failed("closing the RPC port")
        yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                        self._stop_blocking)
        logger.info("jq-noded stopped")

    def _stop_blocking(self):
        """In a thread: end the RPC threads, close the replica, leave the services and
        commands running (the next start follows and re-adopts them); each step whatever
        the ones before did (a thread left would keep the process alive)."""
        steps = [("stopping the RPC threads", self._pool.stop),
                 ("closing the replica", self.node.stop)]
        if self.supervisor is not None:
            steps.append(("leaving the services", self.supervisor.stop))
        if self.executor is not None:
            steps.append(("leaving the commands", self.executor.stop))
        for what, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - logged; the exit status says it
                self._stop_failed(what)

    def _stop_failed(self, what):
        common.log_stop_failure("%s failed" % what)
        self.exit_status = EXIT_FAILURE


def make_service(config, reactor):
    """The daemon's service tree for a noded Config."""
    return NodeService(config, reactor)


def build_parser():
    return common.build_parser(
        PROG, PROGRAM, "The jqueue node daemon: node RPC over mutual TLS (replication to "
        "master candidates, votes, cluster configuration). Runs in the foreground.")


def _check_listen(config, args):
    """A malformed --listen is a usage error; the same value in a file, a failure."""
    if config.listen is None:
        return
    try:
        membership.parse_address(config.listen)
    except errors.ConfigurationError as err:
        if getattr(args, "listen", None) is not None:
            raise common.UsageError("--listen: %s" % errors.error_message(err)) from None
        raise


def main(argv=None):
    """Run jq-noded with argv (default sys.argv[1:]) until stopped; the exit status."""
    parser = build_parser()
    config = common.load_config(parser, PROG, PROGRAM, sys.argv[1:] if argv is None else argv,
                                check=_check_listen)
    if config is None:
        return EXIT_FAILURE
    return common.run(PROG, config, make_service)


def _answer_when_durable(reactor, pool, node):
    """A non-blocking handler of replication: node.replicate_nowait(peer, body) -> (result,
    batch) in the reactor, answered once the batch is durable: at once if it committed the
    batch itself, else when its done-callback hops back to the reactor.

    What a call must do first when the replica is not ready (open it, or open it again
    after a failed sync: a replay of its journal, about a second for 50,000 jobs) runs in
    the pool, the event loop answering other calls meanwhile; calls that come then wait
    their turn behind it, in order (a stream's messages are applied as they were sent).
    """
    turn = defer.DeferredLock()

    def prepared_then_apply(peer, body):
        prepared = threads.deferToThreadPool(reactor, pool, node.prepare_replication, peer)
        return prepared.addCallback(lambda _: apply(peer, body))

    def handle(peer, body):
        if not turn.locked and node.replica_ready():
            return apply(peer, body)
        return turn.run(prepared_then_apply, peer, body)

    def apply(peer, body):
        result, batch = node.replicate_nowait(peer, body)
        if batch is None:
            return result
        if batch.done.is_set():  # committed by itself (see ReplicaRpc.replicate_nowait)
            batch.result()
            return result
        deferred = defer.Deferred()
        batch.add_done_callback(lambda done: reactor.callFromThread(_fire, deferred, done,
                                                                    result))
        return deferred
    return handle


def _stream_of(replicate, peer, opening):
    """The messages of a replication stream: each a replicate call whose body is the
    opening's (epoch, master, session) with the message's head (seq_from, seq_to) and
    its data as the frames (raw, not base64). Every message is checked as a call is."""
    logger.info("replication stream from %s opened (epoch %s, session %s)", peer,
                opening.get("epoch"), opening.get("session"))

    def on_message(head, data):
        return replicate(peer, dict(opening, **head, frames=data))
    return on_message


def _fire(deferred, batch, result):
    if batch.error is not None:
        deferred.errback(batch.error)
    else:
        deferred.callback(result)


if __name__ == "__main__":
    sys.exit(main())

