"""Keeping every node's configuration current: the master retries the pushes nodes missed.

A node that was down, partitioned or restarted from an old state when the master pushed a
configuration (a node added or removed, a failover) still holds an older one: a deposed
master still thinks it is the master and refuses replication, a candidate does not know it
is one. The master marks such a node stale (a push failed, its node_info shows an older
epoch or version, or it refused replication because of its role) and a ConfigPusher thread
sends it the current configuration (``cluster_config_update``) every ``retry_interval``
seconds until it takes it. The node checks that the configuration comes from the master it
names (mutual TLS), so this is the only way, besides a vote it gives, that a node moves to
a newer epoch.
"""

import logging
import threading

from jqueue import errors
from jqueue.cluster.rpc import client as rpc_client

logger = logging.getLogger(__name__)

CONFIG_UPDATE = "cluster_config_update"
#: Seconds between two pushes to a node that has not taken the configuration yet.
RETRY_INTERVAL = 1.0
#: Seconds a node gets to take a configuration.
PUSH_TIMEOUT = 10.0


def is_stale(config, answer):
    """Whether a node_info answer shows an older configuration than config."""
    try:
        return (int(answer.get("epoch") or 0), int(answer.get("config_version") or 0)) < (
            config.epoch, config.version)
    except (AttributeError, TypeError, ValueError):
        return False


class ConfigPusher:
    """Pushes the current configuration to the nodes marked stale until they take it.

    get_config() returns the current ClusterConfig; client_factory(name, address) makes an
    RPC client (the pusher keeps its own, so that a slow node never holds up the master's
    other calls). ``stale`` maps node names to why they are believed stale.
    """

    def __init__(self, get_config, client_factory, retry_interval=RETRY_INTERVAL,
                 timeout=PUSH_TIMEOUT):
        self._get_config = get_config
        self._client_factory = client_factory
        self.retry_interval = retry_interval
        self.timeout = timeout
        self.stale = {}
        self._cond = threading.Condition(threading.Lock())
        self._clients = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="config-push", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        """Stop pushing and close the clients: first, so that a push in progress to a
        node that does not answer is aborted instead of waited for (up to the timeout)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for client in list(self._clients.values()):  # (a copy: the thread may add one)
            client.close()
        if self._thread.is_alive():
            self._thread.join()
        for client in self._clients.values():
            client.close()
        self._clients = {}

    def mark_stale(self, name, reason):
        """Node name lacks the current configuration (reason: why we think so)."""
        with self._cond:
            if name not in self.stale:
                logger.info("node %s has an older configuration (%s); pushing the current one",
                            name, reason)
            self.stale[name] = reason
            self._cond.notify_all()

    def mark_current(self, name):
        """Node name holds the current configuration."""
        with self._cond:
            self.stale.pop(name, None)

    def check_answers(self, answers):
        """Mark stale the nodes whose node_info answer (or failure) shows they may be."""
        config = self._get_config()
        for name, answer in answers.items():
            if isinstance(answer, Exception):
                self.mark_stale(name, "did not answer: %s" % errors.error_message(answer))
            elif is_stale(config, answer):
                self.mark_stale(name, "it has epoch %s, configuration version %s" % (
                    answer.get("epoch"), answer.get("config_version")))

    def push_now(self):
        """One round: push to every stale node; {node: error message} of those that failed."""
        config = self._get_config()
        with self._cond:
            names = sorted(n for n in self.stale if n in config.nodes)
            for name in set(self.stale) - set(config.nodes):
                del self.stale[name]
        if not names:
            return {}
        clients = [self._client(name, config.address(name)) for name in names]
        results = rpc_client.call_many(clients, CONFIG_UPDATE, {"config": config.to_dict()},
                                       self.timeout)
        failed = {}
        for name, result in sorted(results.items()):
            if _took(result, config):
                logger.info("node %s took configuration version %d (epoch %d, master %s)",
                            name, config.version, config.epoch, config.master)
                self._taken(name, config)
            else:
                failed[name] = errors.error_message(result) if isinstance(
                    result, Exception) else "unexpected answer %r" % (result,)
        return failed

    def _taken(self, name, config):
        with self._cond:
            if self._get_config() is config:
                self.stale.pop(name, None)

    def _client(self, name, address):
        client = self._clients.get(name)
        if client is None or client.address != address:
            if client is not None:
                client.close()
            client = self._clients[name] = self._client_factory(name, address)
        return client

    def _run(self):
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or self.stale)
                if self._stopped:
                    return
            try:
                self.push_now()
            except Exception:  # noqa: BLE001 - keep retrying; a bug is logged
                logger.exception("pushing the configuration failed")
            with self._cond:
                self._cond.wait_for(lambda: self._stopped, self.retry_interval)
                if self._stopped:
                    return


def _took(result, config):
    """Whether a cluster_config_update answer says the node holds config (or newer)."""
    return isinstance(result, dict) and isinstance(result.get("version"), int) and (
        result["version"] >= config.version)
