"""jq-masterd: the queue daemon (see man/jq-masterd.8.rst).

``make_service(config, reactor)`` builds the service tree: a MasterService holding the
QueueService (the JobQueue), the LuxiService (the Unix-socket server) and, with --http,
the HttpService (jqueue.http: the web page, the REST and Coalition APIs, metrics). Starting opens
the queue with its workers held, listens, then lets the workers go and tells systemd
"READY=1". Stopping (SIGTERM, SIGINT) refuses new submissions, lets running opcodes
finish within the grace period while queries and waiters are still served, writes the
queue's state, answers the remaining waiters and closes the socket.

In a cluster (DIR/cluster.json exists), the start first checks that this node is the
master and was not deposed, and the queue replicates to the master candidates (see
jqueue.daemon.clustermaster). A master that learns it was deposed (fenced by a candidate,
or told by StepDown) stops as it does on SIGTERM.

``main(argv)`` runs it in the foreground and returns the exit status: 0 after a clean
stop (a deposed master included), 1 if the daemon cannot start (or its state could not
be written at stop), 2 for a usage error.
"""

import logging
import os
import sys

from twisted.application import service
from twisted.internet import defer, error, threads
from twisted.python import threadpool

import jqueue
from jqueue import constants, embedded, notify, opcodes
from jqueue.daemon import clustermaster, common, httpd, unixsocket
from jqueue.daemon import config as configmod
from jqueue.luxi.server import LuxiServerFactory, ServerLimits
from jqueue.queue import JobQueue
from jqueue.retention import Policy as RetentionPolicy
from jqueue.run import workerpool
from jqueue.run.commands import CommandRunner, ReactorHost

logger = logging.getLogger("jqueue.daemon.masterd")  # also when run as __main__

PROG = "jq-masterd"
PROGRAM = "masterd"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = common.EXIT_OK, common.EXIT_FAILURE, common.EXIT_USAGE
#: (status, meaning), as the man page's EXIT STATUS lists them.
EXIT_STATUSES = (
    (EXIT_OK, "stopped cleanly after SIGTERM or SIGINT, or after being deposed (fenced "
              "by a candidate, or told to step down)"),
    (EXIT_FAILURE, "could not start (bad configuration, queue locked by another process, "
                   "socket in use, directory not writable, opcode module not loadable; in "
                   "a cluster: this node is not the master, or it was fenced), or the "
                   "queue's state could not be written at stop, or a sync of the queue "
                   "failed (the restart replays the journal)"),
    (EXIT_USAGE, "usage error: unknown flag, bad flag value, --state-dir missing"),
)
#: Pending connections the kernel keeps for us (a burst of clients connecting at once).
LISTEN_BACKLOG = 1024
#: Seconds connections get at stop to take their last answers before being cut.
CLOSE_TIMEOUT = 5.0
#: Mode of the state directory and of its run/ directory.
DIR_MODE = 0o750


def build_registry(modules):
    """An opcode registry: the built-ins, the jqueue.opcodes entry points, then modules."""
    registry = opcodes.Registry()
    opcodes.register_opcodes(registry)
    try:
        registry.load_entry_points()
    except Exception as err:  # noqa: BLE001 - any broken plugin stops the start, with its name
        raise common.StartupError("cannot load the opcodes of the %s entry points: %s: %s" % (
            opcodes.ENTRY_POINT_GROUP, err.__class__.__name__, err)) from None
    for name in modules:
        try:
            registry.load_module(name)
        except Exception as err:  # noqa: BLE001 - as above
            raise common.StartupError("cannot load opcode module %s: %s: %s" % (
                name, err.__class__.__name__, err)) from None
    return registry


def exit_after_failed_sync(error):
    """A sync of the queue failed: exit at once with status 1, writing nothing more.

    After a failed fsync the kernel may have dropped the dirty pages, so no later write
    or sync can be trusted: no checkpoint, no journal reset. systemd restarts the daemon
    and opening the queue replays the journal. Clients lose their connection unanswered
    (Ganeti's clients resend) and their changes' outcome is what the replay finds.
    """
    logger.critical("a sync of the queue failed (%s): exiting with status %d so that a "
                    "restart replays the journal", error, EXIT_FAILURE)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_FAILURE)


class QueueService(service.Service):
    """Owns the JobQueue: opened at start with its workers held, shut down in a thread."""

    name = "queue"

    def __init__(self, config, reactor):
        self._config = config
        self._reactor = reactor
        self.path = os.path.join(os.path.abspath(config.state_dir), "queue")
        self.queue = None
        #: The queue's replicator (a cluster's; None: local only), set before the start.
        self.replicator = None
        #: Work on the cluster's nodes for opcodes (the ClusterMaster; None: single node).
        self.nodes = None
        #: The executor of command jobs on this machine (single node; None in a cluster).
        self.executor = None
        self._pool = None

    def startService(self):
        registry = build_registry(self._config.opcode_modules)
        self.queue = JobQueue(self.path, workers=self._config.workers,
                              max_jobs=self._config.max_jobs, registry=registry,
                              checkpoint_interval=self._config.checkpoint_interval,
                              pool_factory=self._held_pool, replicator=self.replicator,
                              nodes=self.nodes, commands=self._command_runner(),
                              on_fatal=exit_after_failed_sync,
                              event_buffer=self._config.event_buffer,
                              action_log_bytes=self._config.action_log_max_bytes,
                              action_log_utc=self._config.action_log_time == "utc",
                              retention=RetentionPolicy(self._config.archive_after,
                                                        self._config.keep_archived,
                                                        self._config.retention_interval),
                              notify_prefixes=self._config.notify_prefixes,
                              notify_secret=notify.read_secret(self._config.notify_secret_file)
                              if self._config.notify_secret_file else None,
                              notify_command=notify.command_argv(
                                  self._config.notify_command))
        self.queue.commit_in_loop(lambda fn: self._reactor.callLater(0, fn))
        super().startService()

    def _command_runner(self):
        """The factory of the queue's command runner: in a cluster over the nodes'
        jq-noded, else over an Executor of its own (started first: it re-adopts the
        attempts still running)."""
        config = self._config
        host = ReactorHost(self._reactor)
        if self.nodes is not None:
            cluster = self.nodes
            links = cluster.command_links(config.ping_interval)

            def make(queue):
                cluster.commands = CommandRunner(
                    queue, host, links, cluster.name, log_max_bytes=config.log_max_bytes,
                    ping_interval=config.ping_interval, ping_misses=config.ping_misses,
                    lost_grace=config.lost_grace, service_log_rate=config.service_log_rate)
                cluster.epilog_failure = config.epilog_failure
                cluster.commands.on_degraded = cluster.epilog_failed
                return cluster.commands
            return make

        return embedded.command_runner(
            self._reactor, config.state_dir, config.master_node, config.slots,
            config.allowed_users, config.containment == "auto", config.log_max_bytes,
            on_executor=self._executor_started, tags=config.tags, run_dir=config.run_dir,
            service_log_rate=config.service_log_rate, hooks=common.command_hooks(config),
            memory_reserve=config.memory_reserve)

    def reconfigure(self, new, changes):
        """SIGHUP (common.reload_daemon): apply the changed options a running queue takes;
        the names of those applied."""
        queue, applied = self.queue, set()
        if queue is None:
            return applied
        if "workers" in changes:
            queue.resize_workers(new.workers)
            applied.add("workers")
        retention = {"archive_after", "keep_archived", "retention_interval"} & set(changes)
        if retention:
            queue.change_retention(new.archive_after, new.keep_archived,
                                   new.retention_interval)
            applied |= retention
        if "epilog_failure" in changes:
            if self.nodes is not None:
                self.nodes.epilog_failure = new.epilog_failure
            applied.add("epilog_failure")
        if "notify_command" in changes:
            queue.set_notify_command(notify.command_argv(new.notify_command))
            applied.add("notify_command")
        runner = queue.commands
        if runner is not None and "log_max_bytes" in changes:
            runner.set_log_max_bytes(new.log_max_bytes)
            applied.add("log_max_bytes")
        node = {name: getattr(new, name) for name in ("slots", "tags", "allowed_users",
                                                      "memory_reserve") if name in changes}
        if self.executor is not None and node:  # one machine: its own node
            runner.reconfigure_node(self._config.master_node, **node)
            applied |= set(node)
        hooks = set(common.HOOK_OPTIONS) & set(changes)
        if self.executor is not None and hooks:
            self.executor.set_hooks(common.command_hooks(new))
            applied |= hooks
        return applied

    def _executor_started(self, executor):
        self.executor = executor
        logger.info("command jobs run on this machine (%s, %d slots; containment: %s)",
                    self._config.master_node, self._config.slots, executor.containment)

    def _held_pool(self, name, workers, task_fn):
        """A worker pool that starts no task until start_workers()."""
        self._pool = workerpool.WorkerPool(name, workers, task_fn)
        self._pool.pause()
        return self._pool

    def start_workers(self):
        self._pool.resume()

    def abort(self):
        """Close the queue at once (startup failed: no opcode ran, workers were held)."""
        if self.queue is not None:
            self.queue.shutdown(timeout=0)

    def stopService(self):
        """Shut the queue down in a thread (see JobQueue.shutdown); a Deferred.

        Running commands keep running: the next start re-adopts them.
        """
        super().stopService()
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                         self.queue.shutdown, self._config.shutdown_grace)


class LuxiService(service.Service):
    """Serves LUXI on the Unix socket over the queue of a QueueService."""

    name = "luxi"

    def __init__(self, config, reactor, queue_service):
        self._config = config
        self._reactor = reactor
        self._queue_service = queue_service
        self.path = configmod.socket_path(config)
        #: The LUXI and HTTP servers' caps, fitted together once (jqueue.connlimit).
        self.connection_caps = configmod.connection_caps(config)
        #: The cluster backend (a ClusterMaster; None: single node), set before the start.
        self.cluster = None
        self.factory = None
        self.port = None
        self._pool = None

    def limits(self):
        c = self._config
        return ServerLimits(max_message_bytes=c.max_message_bytes, read_timeout=c.read_timeout,
                            idle_timeout=c.idle_timeout,
                            max_connections=self.connection_caps["LUXI"],
                            max_wait_timeout=c.max_wait_timeout, max_pipelined=c.max_pipelined,
                            threads=c.luxi_threads)

    def config_values(self):
        """What QueryConfigValues answers (callables give live values)."""
        queue = self._queue_service.queue
        values = {constants.CONFIG_DRAIN_FLAG: lambda: queue.drain_flag,
                  constants.CONFIG_MASTER_NODE: self._config.master_node,
                  constants.CONFIG_CLUSTER_NAME: self._config.cluster_name,
                  "queue_dir": queue.path, "version": jqueue.version(),
                  constants.CONFIG_QUEUE_STATUS: queue.status,
                  constants.CONFIG_RETENTION: queue.retention_status}
        if self.cluster is not None:
            values.update(self.cluster.config_values())
        return values

    def startService(self):
        limits = self.limits()
        self._pool = threadpool.ThreadPool(0, limits.threads, name="luxi")
        self.factory = LuxiServerFactory(self._queue_service.queue, self.config_values(),
                                         self._reactor, limits, threadpool=self._pool,
                                         cluster=self.cluster)
        self.port = self._listen()
        self._pool.start()
        super().startService()

    def _listen(self):
        unixsocket.prepare(self.path)
        port = unixsocket.Port(self.path, self.factory, LISTEN_BACKLOG, mode=0o660,
                               reactor=self._reactor, wantPID=True)
        try:
            port.startListening()
        except (error.CannotListenError, OSError) as err:
            if self.factory.numPorts:
                self.factory.doStop()
            if getattr(err, "socketError", None) == "Cannot acquire lock":
                raise unixsocket.in_use_error(
                    self.path, unixsocket.lock_holder(self.path)) from None
            raise common.StartupError("cannot listen on %s: %s" % (
                self.path, getattr(err, "socketError", None) or err)) from None
        return port

    def stop_accepting_submissions(self):
        if self.factory is not None:
            self.factory.stop_accepting_submissions()

    @defer.inlineCallbacks
    def stopService(self):
        """Answer waiters, stop listening, let connections take their last answers; the
        pool's threads end whatever failed before (one left keeps the process alive)."""
        super().stopService()
        yield common.close_server(self._reactor, self.port, self.factory.protocols, self._pool,
                                  CLOSE_TIMEOUT, first=self.factory.answer_waiters_and_close)


class MasterService(service.MultiService):
    """The daemon: the queue, then the LUXI server; started and stopped in a fixed order."""

    def __init__(self, config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.queue_service = QueueService(config, reactor)
        self.luxi_service = LuxiService(config, reactor, self.queue_service)
        self.http_service = httpd.HttpService(config, reactor, self.queue_service,
                                              self.luxi_service)
        self.queue_service.setServiceParent(self)
        self.luxi_service.setServiceParent(self)
        self.http_service.setServiceParent(self)
        self.exit_status = EXIT_OK
        self.stop_started = None
        self.cluster = None
        self._stop_requested = False

    def startService(self):
        """Check the cluster, open the queue, listen, release the workers, tell systemd.

        StartupError (or another GenericError) if the daemon cannot start.
        """
        service.Service.startService(self)
        try:
            self._start_cluster()
            self.queue_service.startService()
            self.luxi_service.startService()
            self.http_service.startService()
        except BaseException:
            self.running = 0
            self.http_service.abort()
            self.queue_service.abort()
            if self.cluster is not None:
                self.cluster.close()
            raise
        self.queue_service.start_workers()
        common.sd_notify("READY=1")
        logger.info("jq-masterd ready: queue %s, socket %s, %d jobs", self.queue_service.path,
                    self.luxi_service.path, self.queue_service.queue.stats()["jobs"])

    def _start_cluster(self):
        """In a cluster: the start checks, and the replicator the queue opens with."""
        self.cluster = clustermaster.start(os.path.abspath(self.config.state_dir),
                                           self.queue_service.path, on_deposed=self._deposed)
        if self.cluster is not None:
            self.queue_service.replicator = self.cluster.replicator
            self.queue_service.nodes = self.cluster
            self.luxi_service.cluster = self.cluster

    def _deposed(self, reason):
        """This master was deposed (any thread): stop serving, as on SIGTERM."""
        self.reactor.callFromThread(self.request_stop, reason)

    def request_stop(self, reason):
        """Stop the daemon (in the reactor thread) for reason (already logged), once."""
        if self._stop_requested:
            return
        self._stop_requested = True
        logger.debug("stop requested: %s", reason)
        common.stop_reactor(self.reactor)

    @defer.inlineCallbacks
    def stopService(self):
        """Refuse submissions; shut the queue down (grace); close the LUXI server."""
        service.Service.stopService(self)
        self.stop_started = self.reactor.seconds()
        common.sd_notify("STOPPING=1")
        logger.info("stopping: refusing new jobs, giving running opcodes up to %gs",
                    self.config.shutdown_grace)
        self.luxi_service.stop_accepting_submissions()
        self.http_service.stop_accepting_submissions()
        steps = [("shutting the queue down", self.queue_service.stopService),
                 ("closing the LUXI server", self.luxi_service.stopService),
                 ("closing the HTTP server", self.http_service.stopService)]
        if self.cluster is not None:
            steps.append(("closing the cluster's connections", self.cluster.close))
        for what, step in steps:  # each runs whatever the ones before did
            try:
                yield step()
            except Exception:  # noqa: BLE001 - logged; the exit status says it
                common.log_stop_failure("%s failed" % what)
                self.exit_status = EXIT_FAILURE
        logger.info("jq-masterd stopped")

    def grace_left(self):
        """Text for the log: how much of the grace period is left (when stopping)."""
        if self.stop_started is None:
            return ""
        left = self.config.shutdown_grace - (self.reactor.seconds() - self.stop_started)
        return " (%.1fs of grace left)" % max(0.0, left)


def make_service(config, reactor):
    """The daemon's service tree for a masterd Config."""
    return MasterService(config, reactor)


def build_parser():
    return common.build_parser(
        PROG, PROGRAM, "The jqueue master daemon: owns the job queue, runs jobs and serves "
        "LUXI clients on a Unix socket. Runs in the foreground.")


def prepare_directories(config):
    """Create the state directory and its run/ directory (mode 0750) if missing."""
    state_dir = os.path.abspath(config.state_dir)
    for path in (state_dir, os.path.join(state_dir, "run")):
        try:
            os.makedirs(path, DIR_MODE, exist_ok=True)
        except OSError as err:
            raise common.StartupError("cannot create %s: %s" % (path, err.strerror)) from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise common.StartupError("directory %s is not writable" % path)


def main(argv=None):
    """Run jq-masterd with argv (default sys.argv[1:]) until stopped; the exit status."""
    parser = build_parser()
    config = common.load_config(parser, PROG, PROGRAM, sys.argv[1:] if argv is None else argv)
    if config is None:
        return EXIT_FAILURE
    return common.run(PROG, config, _build, describe=lambda master: master.grace_left())


def _build(config, reactor):
    prepare_directories(config)
    return make_service(config, reactor)


if __name__ == "__main__":
    sys.exit(main())
