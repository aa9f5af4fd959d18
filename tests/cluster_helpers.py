"""Helpers of the cluster end-to-end tests: clusters built with clusterops, jq-noded processes.

``build_cluster`` makes the state directories of an N-node cluster the way operators do
(``init_cluster`` on the first node; ``init_node``, ``sign_node``, a bundle and
``join_node`` for the others), each node on its own free loopback port. ``NodeDaemon``
starts ``python -m jqueue.daemon.noded`` on one of them, waits until it answers
``node_info`` over mutual TLS, and stops it (SIGTERM, then SIGKILL). ``noded_factory``
(behind a fixture) checks at teardown that every daemon still running stops with status 0.
"""

import itertools
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from daemon_helpers import seed_daemon_shim

from jqueue import serializer
from jqueue.cluster import admin, membership
from jqueue.job import QueuedJob, QueuedOpCode

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0


#: Each pytest-xdist worker hands out ports from a band of its own below the range the
#: kernel picks the local ports of outgoing connections from (ip_local_port_range).
PORT_BAND = 1000
_port_counter = itertools.count()


def _ephemeral_low(path="/proc/sys/net/ipv4/ip_local_port_range"):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A TCP port free on 127.0.0.1 now, for a daemon to bind just after.

    Not one the kernel picks (binding port 0): that range is also where every connect()
    takes its local port from, so another test's client could take it before the daemon
    binds it (a full run failed so, "Address already in use"). Checked with SO_REUSEADDR,
    as the daemons bind (a port in TIME_WAIT is free for them)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    low = _ephemeral_low() - PORT_BAND * (1 + (int(worker) if worker.isdigit() else 0))
    for _ in range(PORT_BAND):
        port = low + next(_port_counter) % PORT_BAND
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in %d-%d" % (low, low + PORT_BAND - 1))


class TestCluster:
    """State directories of a cluster: names, {name: state dir}, the final configuration."""

    __test__ = False  # not a test class

    def __init__(self, root, names, state_dirs, config):
        self.root = root
        self.names = names
        self.state_dirs = state_dirs
        self.config = config

    @property
    def master(self):
        return self.config.master

    def queue_dir(self, name):
        return os.path.join(self.state_dirs[name], "queue")

    def client(self, caller, target, timeout=10.0):
        """An RpcClient of node caller (its credentials) calling node target."""
        config = membership.load_config(self.state_dirs[caller]) or self.config
        return admin.node_client(self.state_dirs[caller], config, target, timeout)

    def call(self, caller, target, method, body, timeout=10.0):
        """One call from caller to target on a new connection; its result (errors raised)."""
        with self.client(caller, target, timeout) as client:
            return client.call(method, body)


def build_cluster(root, count=3, candidates=None, min_acks=None, name="testcluster"):
    """A cluster node1..nodeN under root (node1 the master); candidates: names (default all)."""
    root = str(root)
    names = ["node%d" % i for i in range(1, count + 1)]
    candidates = set(names if candidates is None else candidates) | {names[0]}
    state_dirs = {n: os.path.join(root, n) for n in names}
    address = "127.0.0.1:%d"
    config = admin.init_cluster(state_dirs[names[0]], name, names[0],
                                     address % free_port())
    certs = {}
    for node in names[1:]:
        csr_path = admin.init_node(state_dirs[node], node)
        with open(csr_path, "rb") as stream:
            certs[node] = admin.sign_node(state_dirs[names[0]], node, stream.read())
        nodes = dict(config.nodes)
        nodes[node] = {"address": address % free_port(), "candidate": node in candidates}
        config = config.changed(nodes=nodes)
    config = config.changed(min_acks=min_acks)
    membership.save_config(state_dirs[names[0]], config)
    for node in names[1:]:
        bundle = admin.make_bundle(config, state_dirs[names[0]], certs[node])
        path = os.path.join(root, "%s.bundle" % node)
        admin.write_bundle(path, bundle)
        admin.join_node(state_dirs[node], admin.read_bundle(path))
    return TestCluster(root, names, state_dirs, config)


def noded_command(*args):
    return [sys.executable, "-m", "jqueue.daemon.noded", *args]


class NodeDaemon:
    """One jq-noded process on a node's state directory (restartable)."""

    _serial = itertools.count()

    def __init__(self, test_cluster, name, args=(), env=None):
        self.cluster = test_cluster
        self.name = name
        self.state_dir = test_cluster.state_dirs[name]
        self.args = list(args)
        self.env = env
        self.proc = None
        self.log_path = None

    def start(self, wait=True):
        """Start the process (and by default wait until it answers); return self. Its
        environment is ours with the variables of env added."""
        self.log_path = "%s-noded-%d.log" % (self.state_dir, next(self._serial))
        env = dict(os.environ, **(self.env or {}))
        seed_daemon_shim(self.state_dir)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                noded_command("--state-dir", self.state_dir, "--checkpoint-interval", "60",
                              *self.args), stdout=log, stderr=log, env=env)
        if wait:
            self.wait_ready()
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as stream:
            return stream.read()

    def call(self, method, body, caller=None, timeout=10.0):
        """A call to this node from caller (default: itself)."""
        return self.cluster.call(caller or self.name, self.name, method, body, timeout)

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Poll node_info until it answers; fail with the log if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                pytest.fail("jq-noded %s exited with %s before answering:\n%s" % (
                    self.name, self.proc.poll(), self.stderr()))
            try:
                return self.call("node_info", {}, timeout=2)
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    pytest.fail("jq-noded %s did not answer within %ss:\n%s" % (
                        self.name, timeout, self.stderr()))
                time.sleep(0.05)

    def stop(self, signum=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send signum and wait (SIGKILL after timeout); the exit status."""
        if not self.alive():
            return self.proc.wait()
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("jq-noded %s did not stop within %ss:\n%s" % (
                self.name, timeout, self.stderr()))


def noded_factory():
    """Generator for a fixture: yields start(cluster, name, ...) -> NodeDaemon; afterwards
    each daemon still running is stopped and must exit 0."""
    started = []

    def start(test_cluster, name, args=(), wait=True, env=None):
        daemon = NodeDaemon(test_cluster, name, args, env)
        started.append(daemon)
        return daemon.start(wait)

    yield start
    problems = []
    for daemon in started:
        if daemon.alive():
            code = daemon.stop()
            if code != 0:
                problems.append("%s: exit status %s:\n%s" % (daemon.name, code,
                                                             daemon.stderr()))
    assert not problems, "\n".join(problems)


def start_all(start, test_cluster, names=None):
    """Start noded on several nodes at once (in parallel); {name: NodeDaemon}."""
    daemons = {n: start(test_cluster, n, wait=False) for n in names or test_cluster.names}
    for daemon in daemons.values():
        daemon.wait_ready()
    return daemons


def job_dict(job_id, status="queued"):
    """A job file object with one OP_TEST_DELAY opcode in the given status."""
    op = QueuedOpCode({"OP_ID": "OP_TEST_DELAY", "duration": 0, "priority": 0,
                       "depends": None, "comment": None})
    op.status = status
    return QueuedJob(job_id, [op], [1800000000, 0]).to_dict()


def job_record(job_id, status="queued"):
    """The full journal record of job_dict(job_id, status), as the master replicates it."""
    return serializer.dumps({"t": "job", "job": job_dict(job_id, status)})


def snapshot(path):
    """{relative path: bytes} of every file under path (what changed, if anything)."""
    files = {}
    for folder, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(folder, name)
            with open(full, "rb") as stream:
                files[os.path.relpath(full, path)] = stream.read()
    return files
