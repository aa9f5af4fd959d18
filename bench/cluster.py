"""Benchmark of a cluster's two promises: reads with the candidates unreachable, healing.

Each figure comes from a real 3-node cluster on loopback (jq-noded on node1, node2 and
node3, jq-masterd on the master node1, node2 and node3 master candidates, mutual TLS),
built as the end-to-end tests build theirs (tests/cluster_helpers.build_cluster), with
1,000 queued jobs submitted through LUXI first (no worker runs them).

(a) Reads while both candidates are unreachable. Both candidates' jq-noded are frozen
with SIGSTOP (they accept connections and never answer), and one more submit is left
waiting for its acknowledgement, so that the master holds a change no candidate has
acknowledged: before reads stopped waiting on replication, a read then waited for the
candidates until ack_timeout (10 s) and failed. Three reads of every job are timed N
times each (a new LUXI connection each time): QueryJobs of id and status, and the real
`jqctl list` and `jqctl queue info` run as processes (.venv/bin/jqctl, as an operator
runs them); median and max, next to the same reads with the candidates running (ratio:
stopped / running). SIGCONT wakes them afterwards. Target: the reads answer at once,
i.e. as fast as with the candidates running, far under the 10 s ack timeout.

(b) Healing after a failover. jq-masterd on node1 is killed (kill -9) with node1's
jq-noded; `jqctl master-failover --yes --timeout 5` on node2 elects node2 (as
tests/cluster/test_failover_e2e.py does), jq-masterd starts there, and once node3 is
in sync node1's jq-noded is started again (as the heal test does; it still holds the
configuration naming it master). Timed: from that start until `jqctl cluster verify`
against node2 exits 0 (every candidate in sync), polled every 0.1 s through the CLI's
own code in this process (as the tests' wait_verified; a new process per poll would
add its own start-up). Median over 3 runs, each on a new cluster (1 with --quick).
Target: within seconds.

Every process started here is stopped at the end, on error too.
"""

import contextlib
import io
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import luxi

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from cluster_helpers import NodeDaemon, build_cluster  # noqa: E402 - shared with the tests

from jqueue.cli import app as cli_app  # noqa: E402
from jqueue.luxi import client as luxi_client  # noqa: E402

JOBS = 1000
JQCTL = os.path.join(os.path.dirname(sys.executable), "jqctl")
POLL = 0.1
HEAL_TIMEOUT = 120.0
READS = ("QueryJobs id,status", "jqctl list", "jqctl queue info")


def jqctl_here(*args, socket=None):
    """Run jqctl's own code in this process, as the tests do; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    ctx = cli_app.Context(cli_app.connect, stdin=io.StringIO(), stdout=out, stderr=err)
    argv = (["--socket", socket] if socket else []) + ["--timeout", "30", *args]
    return cli_app.run(ctx, argv), out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _logged():
    """Collect what jqueue logs in this process (the in-process jqctl's warnings about the
    dead node1) instead of letting it reach standard error; yields the StringIO."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("jqueue")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def _stop(proc, timeout=30):
    """Wake (SIGCONT) and stop one process (SIGTERM, SIGKILL after timeout); never raises
    for a process that is gone already."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


class Cluster:
    """A running 3-node cluster (node1 the master) with JOBS queued jobs; a context manager
    that stops every process it started, whatever happened."""

    def __init__(self, root):
        self.root = root
        self.test_cluster = None
        self.nodeds = {}
        self.masterds = []

    def __enter__(self):
        try:
            self.test_cluster = build_cluster(self.root, 3)
            for name in self.test_cluster.names:
                self.nodeds[name] = NodeDaemon(self.test_cluster, name).start(wait=False)
            for noded in self.nodeds.values():
                noded.wait_ready()
            sock = self.start_master("node1")
            with luxi_client.Client(sock, timeout=120) as client:
                for start in range(0, JOBS, 100):
                    client.submit_many_jobs([[luxi.NOOP]] * min(100, JOBS - start))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def socket(self, name):
        return os.path.join(self.test_cluster.state_dirs[name], "run", "jqueue.sock")

    def start_master(self, name):
        """Start jq-masterd on node name (no worker); its socket once it answers."""
        proc, sock = luxi.start_daemon(self.test_cluster.state_dirs[name], workers=0,
                                       checkpoint_interval=60)
        self.masterds.append(proc)
        return sock

    def close(self):
        for noded in self.nodeds.values():  # frozen ones could not stop (nor answer)
            if noded.alive():
                noded.proc.send_signal(signal.SIGCONT)
        for proc in self.masterds:
            _stop(proc, 60)
        for noded in self.nodeds.values():
            _stop(noded.proc)


def _timed(func):
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _reads(sock, tries):
    """{read: [seconds of each try]} of the three reads of every job."""
    def query_jobs():
        with luxi_client.Client(sock, timeout=60) as client:
            rows = client.query_jobs([], ["id", "status"])
        if len(rows) < JOBS:
            raise RuntimeError("QueryJobs returned %d jobs, not %d" % (len(rows), JOBS))

    def cli(*args):
        return lambda: subprocess.run([JQCTL, "--socket", sock, *args],
                                      stdout=subprocess.DEVNULL, check=True, timeout=60)

    funcs = dict(zip(READS, (query_jobs, cli("list"), cli("queue", "info"))))
    times = {read: [] for read in READS}
    for _ in range(tries):
        for read, func in funcs.items():
            times[read].append(_timed(func))
    return times


def _pending_submit(sock, outcome):
    """One submit that waits for the frozen candidates' acknowledgement (and fails after
    ack_timeout): the master holds an unacknowledged change meanwhile."""
    try:
        with luxi_client.Client(sock, timeout=60) as client:
            outcome.append(client.submit_job([luxi.NOOP]))
    except Exception as err:  # noqa: BLE001 - expected: not acknowledged in time
        outcome.append(err)


def unreachable_reads(root, tries):
    """({read: [seconds]} with the candidates running, the same with both frozen)."""
    with Cluster(root) as cluster:
        sock = cluster.socket("node1")
        running = _reads(sock, tries)
        candidates = [cluster.nodeds[name].proc for name in ("node2", "node3")]
        outcome = []
        submitter = threading.Thread(target=_pending_submit, args=(sock, outcome),
                                     daemon=True)
        try:
            for proc in candidates:
                proc.send_signal(signal.SIGSTOP)
            submitter.start()
            time.sleep(0.3)  # the submit is journaled and sent, and waits
            if outcome:
                raise RuntimeError("the submit was answered with both candidates frozen: "
                                   "%r" % outcome)
            stopped = _reads(sock, tries)
        finally:
            for proc in candidates:
                proc.send_signal(signal.SIGCONT)
            if submitter.ident is not None:
                submitter.join(60)
        return running, stopped


def _verify_until(sock, done, timeout=HEAL_TIMEOUT):
    """Poll jqctl cluster verify every POLL seconds until done(exit status, output)."""
    deadline = time.monotonic() + timeout
    while True:
        code, out, err = jqctl_here("cluster", "verify", socket=sock)
        if done(code, out):
            return out
        if time.monotonic() > deadline:
            raise RuntimeError("cluster verify after %ss: exit %s\n%s%s" % (
                timeout, code, out, err))
        time.sleep(POLL)


def heal(root):
    """Seconds from node1's jq-noded restart after a failover to node2 until cluster verify
    exits 0."""
    with Cluster(root) as cluster:
        _verify_until(cluster.socket("node1"), lambda code, _out: code == 0)
        cluster.masterds[0].kill()
        cluster.masterds[0].wait(10)
        cluster.nodeds["node1"].proc.kill()
        cluster.nodeds["node1"].proc.wait(10)
        with _logged() as log:
            code, out, err = jqctl_here("master-failover", "--yes", "--timeout", "5",
                                        "--state-dir", cluster.test_cluster.state_dirs["node2"])
        if code != 0:
            raise RuntimeError("master-failover on node2: exit %s\n%s%s%s" % (
                code, out, err, log.getvalue()))
        sock = cluster.start_master("node2")
        _verify_until(sock, lambda _code, out: "node3: in sync" in out)
        start = time.perf_counter()
        cluster.nodeds["node1"] = NodeDaemon(cluster.test_cluster, "node1").start(wait=False)
        out = _verify_until(sock, lambda code, _out: code == 0)
        elapsed = time.perf_counter() - start
        if "node1: in sync" not in out or "node3: in sync" not in out:
            raise RuntimeError("cluster verify exited 0 with: %s" % out)
        return elapsed


def run(root, quick=False, results=None):
    """Rows of (label, value, unit, ratio)."""
    tries = 5 if quick else 20
    running, stopped = unreachable_reads(os.path.join(root, "reads"), tries)
    rows = []
    for read in READS:
        base = statistics.median(running[read])
        median, worst = statistics.median(stopped[read]), max(stopped[read])
        rows.append(("%s of %d jobs, candidates running, median" % (read, JOBS),
                     base * 1000, "ms", None))
        rows.append(("  same, both candidates frozen, median of %d" % tries, median * 1000,
                     "ms", median / base))
        rows.append(("  same, both candidates frozen, max (target: far under 10 s)",
                     worst * 1000, "ms", worst / max(running[read])))
    runs = 1 if quick else 3
    heals = [heal(os.path.join(root, "heal%d" % n)) for n in range(runs)]
    rows.append(("heal: node1's jq-noded restart -> verify exit 0, median of %d" % runs,
                 statistics.median(heals), "s", None))
    if runs > 1:
        rows.append(("heal: the same, max (target: within seconds)", max(heals), "s", None))
    return rows
