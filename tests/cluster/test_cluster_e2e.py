"""End-to-end tests of a replicated queue: real jq-noded and jq-masterd processes on loopback.

Each node has its own state directory under tmp_path and its own port; jq-noded runs on
every node (the master included), jq-masterd on the master. One cluster is built the way
an operator does, with jqctl (cluster init, node init, node add --csr, node join); the
others with jqueue.cluster.admin (tests/cluster_helpers.build_cluster). The 5-node cluster
is a master and four master candidates (default policy: two candidate copies).
"""

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from cluster_helpers import TestCluster, build_cluster, free_port
from daemon_helpers import delay, wait_all_final

from jqueue import errors, serializer
from jqueue.cli import app as cli_app
from jqueue.cli import cluster_cmds
from jqueue.cluster import membership
from jqueue.luxi.client import Client

ACK_TIMEOUT = 1.5
SYNC_TIMEOUT = 30.0
_JOB_FILE = re.compile(r"job-[0-9]+")




def jqctl(*args, socket=None):
    """Run jqctl in this process; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    ctx = cli_app.Context(cli_app.connect, stdin=io.StringIO(), stdout=out, stderr=err)
    argv = (["--socket", socket] if socket else []) + ["--timeout", "30", *args]
    code = cli_app.run(ctx, argv)
    return code, out.getvalue(), err.getvalue()


def set_ack_timeout(test_cluster, seconds):
    """Give the cluster (every node's cluster.json, still at version 1) a short ack timeout."""
    for state_dir in test_cluster.state_dirs.values():
        config = membership.load_config(state_dir)
        data = config.to_dict()
        data["ack_timeout"] = seconds
        membership.save_config(state_dir, membership.ClusterConfig.from_dict(data))
    test_cluster.config = membership.load_config(test_cluster.state_dirs[test_cluster.master])


def start_cluster(tmp_path, nodeds, daemons, count, ack_timeout=ACK_TIMEOUT, args=(),
                  noded_env=None, noded_args=None, **master):
    """Build a cluster of count nodes (all candidates), start every jq-noded (with the
    variables noded_env[name] added to its environment and the arguments
    noded_args[name]), then jq-masterd (with args, and the Daemon's other arguments in
    master)."""
    test_cluster = build_cluster(tmp_path / "cluster", count)
    set_ack_timeout(test_cluster, ack_timeout)
    started = {name: nodeds(test_cluster, name, args=(noded_args or {}).get(name, ()),
                            wait=False, env=(noded_env or {}).get(name))
               for name in test_cluster.names}
    for daemon in started.values():
        daemon.wait_ready()
    master = daemons(test_cluster.state_dirs[test_cluster.master], args=list(args), **master)
    return test_cluster, started, master


@contextlib.contextmanager
def frozen(started, names):
    """The jq-noded of each of names stopped (SIGSTOP) for the block, continued after."""
    for name in names:
        os.kill(started[name].proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for name in names:
            os.kill(started[name].proc.pid, signal.SIGCONT)


class Load:
    """Client threads submitting zero-length jobs until stopped; ids and errors they got."""

    def __init__(self, socket, threads=3):
        self.socket = socket
        self.acked = []
        self.errors = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self):
        with Client(self.socket, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    self.acked.append(client.submit_job([delay(0)]))
                except errors.GenericError as err:
                    self.errors.append(err)
                    time.sleep(0.05)

    def wait_for(self, count, timeout=20):
        """Wait until count more submissions were acknowledged."""
        target = len(self.acked) + count
        deadline = time.monotonic() + timeout
        while len(self.acked) < target:
            assert time.monotonic() < deadline, "only %d of %d acknowledged; errors: %s" % (
                len(self.acked), target, self.errors[-3:])
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return sorted(self.acked)


def wait_verified(socket, timeout=SYNC_TIMEOUT):
    """Run jqctl cluster verify until it reports every candidate in sync; its output."""
    deadline = time.monotonic() + timeout
    while True:
        code, out, err = jqctl("cluster", "verify", socket=socket)
        if code == 0:
            return out
        assert time.monotonic() < deadline, "not in sync after %ss: %s%s" % (timeout, out, err)
        time.sleep(0.2)


def job_files(queue_dir):
    """{name: bytes} of the live job files of a queue directory."""
    files = {}
    for name in os.listdir(queue_dir):
        if _JOB_FILE.fullmatch(name):
            with open(os.path.join(queue_dir, name), "rb") as stream:
                files[name] = stream.read()
    return files


def stop_in_sync(load, master):
    """Stop the load (no submission refused), wait for its jobs to end and for cluster
    verify to find node2 and node3 in sync; the acknowledged ids."""
    acked = load.stop()
    assert load.errors == []
    with master.client() as client:
        wait_all_final(client, acked)
    lines = wait_verified(master.socket).splitlines()
    assert [line.split(" (")[0] for line in lines] == ["node2: in sync", "node3: in sync"]
    return acked


def stop_all(master, started):
    """SIGTERM jq-masterd, then every jq-noded: each writes its files and exits 0."""
    assert master.stop() == 0, master.stderr()
    for name, daemon in started.items():
        assert daemon.stop() == 0, (name, daemon.stderr())


def assert_identical_replicas(test_cluster, candidates, acked):
    """Every candidate's live job files equal the master's, byte for byte, acked ones included."""
    expected = job_files(test_cluster.queue_dir(test_cluster.master))
    assert {"job-%d" % job_id for job_id in acked} <= set(expected)
    for name in candidates:
        files = job_files(test_cluster.queue_dir(name))
        assert sorted(files) == sorted(expected), name
        differing = [n for n in expected if files[n] != expected[n]]
        assert not differing, (name, differing[:5])


# Building a cluster with jqctl


def test_jqctl_builds_lists_and_verifies_a_cluster(tmp_path, nodeds, daemons):
    """cluster init, node init/add/join build 3 nodes; node list, verify, and the master hint."""
    names = ["node1", "node2", "node3"]
    dirs = {name: str(tmp_path / name) for name in names}
    addresses = {name: "127.0.0.1:%d" % free_port() for name in names}
    code, out, err = jqctl("cluster", "init", "--name", "e2e", "--node", "node1", "--address",
                           addresses["node1"], "--ack-timeout", str(ACK_TIMEOUT),
                           "--state-dir", dirs["node1"])
    assert code == 0 and "jq-masterd --state-dir %s" % dirs["node1"] in out, err
    test_cluster = TestCluster(str(tmp_path), names, dirs, membership.load_config(dirs["node1"]))
    started = {"node1": nodeds(test_cluster, "node1")}
    master = daemons(dirs["node1"])
    for name in names[1:]:
        code, out, err = jqctl("node", "init", "--name", name, "--state-dir", dirs[name])
        assert code == 0, err
        csr = re.search(r"certificate request is (\S+)", out).group(1)
        bundle = str(tmp_path / ("%s.bundle" % name))
        code, out, err = jqctl("node", "add", name, "--address", addresses[name],
                               "--candidate", "--csr", csr, "--bundle", bundle,
                               socket=master.socket)
        assert code == 0 and "jqctl node join --bundle" in out, err
        code, out, err = jqctl("node", "join", "--bundle", bundle, "--state-dir", dirs[name])
        assert code == 0 and "as candidate" in out, err
        started[name] = nodeds(test_cluster, name)
    with master.client() as client:
        ids = [client.submit_job([delay(0)]) for _ in range(10)]
        wait_all_final(client, ids)
    assert "node2: in sync" in wait_verified(master.socket)
    with master.client() as client:  # (all of the first ones may have come by a resync)
        ids += [client.submit_job([delay(0)]) for _ in range(3)]
        wait_all_final(client, ids)
    wait_verified(master.socket)
    for name in names[1:]:  # batches go on a stream to each candidate
        assert "replication stream from node1 opened (epoch 1" in started[name].stderr()
    code, out, err = jqctl("node", "list", socket=master.socket)
    rows = [line.split() for line in out.splitlines()]
    assert code == 0 and rows[0][:4] == ["Node", "Address", "Role", "Reachable"], err
    assert [row[:5] for row in rows[1:]] == [
        ["node1", addresses["node1"], "master", "yes", "yes"],
        ["node2", addresses["node2"], "candidate", "yes", "yes"],
        ["node3", addresses["node3"], "candidate", "yes", "yes"]]
    assert membership.load_config(dirs["node3"]).version == membership.load_config(
        dirs["node1"]).version == 3
    on_candidate = jqctl("list", socket=os.path.join(dirs["node2"], "run", "jqueue.sock"))
    assert on_candidate == (5, "", "jqctl: this node (node2) is not the master: node1 (%s) is "
                            "(epoch 1)\n" % addresses["node1"])
    refused = subprocess.run([sys.executable, "-m", "jqueue.daemon.masterd", "--state-dir",
                              dirs["node2"]], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1
    assert "this node (node2) is not the master: node1 (%s) is, epoch 1" % (
        addresses["node1"]) in refused.stderr
    stop_all(master, started)
    assert_identical_replicas(test_cluster, ["node2", "node3"], ids)


# Failures


def test_killed_candidate_resyncs_to_identical_job_files(tmp_path, nodeds, daemons):
    """kill -9 a candidate under load: submissions go on; it comes back byte-identical."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    load = Load(master.socket)
    load.wait_for(30)
    started["node3"].stop(signal.SIGKILL)
    load.wait_for(100)
    started["node3"].start()
    load.wait_for(30)
    acked = stop_in_sync(load, master)
    stop_all(master, started)
    assert_identical_replicas(test_cluster, ["node2", "node3"], acked)


def test_a_candidate_whose_disk_failed_a_sync_opens_its_replica_again(tmp_path, nodeds,
                                                                      daemons):
    """A failed sync of a candidate's replica (EIO injected at its 20th journal sync) stops
    that replica for good; its jq-noded opens it again at the master's next batch, without
    a restart: submissions go on, and the candidate ends byte-identical to the master."""
    test_cluster, started, master = start_cluster(
        tmp_path, nodeds, daemons, 3, noded_env={"node3": {"JQ_FAILPOINTS": "journal.sync:EIO:20"}})
    load = Load(master.socket)
    load.wait_for(200)
    acked = stop_in_sync(load, master)
    log = started["node3"].stderr()
    assert "injected at journal.sync" in log and "opening it again" in log, log
    stop_all(master, started)
    assert_identical_replicas(test_cluster, ["node2", "node3"], acked)


def test_a_replica_the_disk_refuses_to_close_is_one_line_and_exit_1(tmp_path, nodeds):
    """A candidate's replica whose final checkpoint fails to sync (injected) at a stop:
    jq-noded exits 1 saying why in one line, without a traceback (the next start replays
    the journal)."""
    test_cluster = build_cluster(tmp_path / "cluster", 3)
    node = nodeds(test_cluster, "node2", env={"JQ_FAILPOINTS": "checkpoint.sync:EIO:1"})
    assert node.stop() == 1
    log = node.stderr()
    assert re.search(r"ERROR .*closing the replica failed: .*injected at checkpoint.sync",
                     log), log
    assert "Traceback" not in log, log
    node.env = None
    node.start()
    assert node.stop() == 0, node.stderr()


def test_partitioned_master_acknowledges_nothing_until_candidates_return(
        tmp_path, nodeds, daemons):
    """With both candidates stopped, a submission fails after ack_timeout naming its job and
    that job's fate (jqctl prints the id, exit 7); reads answer meanwhile; the job
    completes later, and a retry with the same token gets the same job."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    with master.client() as client:
        first = client.submit_job([delay(0)])
        wait_all_final(client, [first])
        with frozen(started, ("node2", "node3")):
            begun = time.monotonic()
            with pytest.raises(errors.SubmissionNotAcknowledged) as caught:
                client.submit_job([delay(0)], token="retry-me")
            assert time.monotonic() - begun >= ACK_TIMEOUT * 0.9
            message = errors.error_message(caught.value)
            assert message.startswith("job %d submitted but not acknowledged: " % (first + 1))
            assert "on the master's disk and on 0 of 2 candidates (1 required" in message
            assert "may lose it" in message and caught.value.job_ids == [first + 1]
            code, out, err = jqctl("submit", "--op", "OP_TEST_DELAY", "duration=0",
                                   socket=master.socket)
            assert (code, out) == (7, "%d\n" % (first + 2)), err
            assert "job %d submitted but not acknowledged" % (first + 2) in err
            # Reads answer at once from the acknowledged state, whatever the candidates do.
            assert client.query_jobs([], ["id"]) == [[first]]
            for argv in (["list"], ["queue", "info"], ["info", str(first)]):
                code, out, err = jqctl(*argv, socket=master.socket)
                assert code == 0, (argv, err)
        deadline = time.monotonic() + SYNC_TIMEOUT
        while True:
            rows = client.query_jobs([], ["id", "status"])
            if len(rows) == 3 and all(row[1] == "success" for row in rows):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
        assert [row[0] for row in rows] == [first, first + 1, first + 2]
        assert client.submit_job([delay(0)], token="retry-me") == first + 1
    wait_verified(master.socket)
    stop_all(master, started)
    assert_identical_replicas(test_cluster, ["node2", "node3"], [first, first + 1, first + 2])


def test_a_master_whose_candidates_are_all_down_still_checkpoints_and_stops(
        tmp_path, nodeds, daemons):
    """Both candidates frozen: a checkpoint that begins then (its journal holds a change
    nobody acknowledged) ends all the same, and SIGTERM stops jq-masterd with status 0
    instead of leaving it waiting for acknowledgements that cannot come."""
    test_cluster, started, master = start_cluster(
        tmp_path, nodeds, daemons, 3, args=["--checkpoint-interval", "0.5"])
    queue_dir = test_cluster.queue_dir(test_cluster.master)
    with master.client() as client:
        first = client.submit_job([delay(0)])
        wait_all_final(client, [first])
        with frozen(started, ("node2", "node3")):
            with pytest.raises(errors.SubmissionNotAcknowledged):
                client.submit_job([delay(0)])
            deadline = time.monotonic() + 10
            while not os.path.exists(os.path.join(queue_dir, "job-%d" % (first + 1))):
                assert time.monotonic() < deadline, "no checkpoint wrote the new job"
                time.sleep(0.1)
            assert master.stop() == 0, master.stderr()
    for name, daemon in started.items():
        assert daemon.stop() == 0, (name, daemon.stderr())


def test_five_nodes_keep_acknowledging_with_two_candidates_down(tmp_path, nodeds, daemons):
    """Master + 4 candidates (2 copies needed): two killed candidates stop nothing; both
    resync, and every replica ends byte-identical."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 5)
    code, out, _ = jqctl("node", "list", socket=master.socket)
    assert code == 0 and len(out.splitlines()) == 6
    load = Load(master.socket)
    load.wait_for(20)
    for name in ("node4", "node5"):
        started[name].stop(signal.SIGKILL)
    load.wait_for(60)
    code, out, _ = jqctl("node", "list", "--json", socket=master.socket)
    down = [row["name"] for row in serializer.loads(out) if not row["reachable"]]
    assert code == 0 and down == ["node4", "node5"]
    for name in ("node4", "node5"):
        started[name].start(wait=False)
    for name in ("node4", "node5"):
        started[name].wait_ready()
    load.wait_for(20)
    acked = load.stop()
    assert load.errors == []
    with master.client() as client:
        wait_all_final(client, acked)
    assert len(wait_verified(master.socket).splitlines()) == 4
    stop_all(master, started)
    assert_identical_replicas(test_cluster, ["node2", "node3", "node4", "node5"], acked)


def test_master_steps_down_for_a_newer_epoch(tmp_path, nodeds, daemons):
    """StepDown with a newer epoch stops jq-masterd cleanly (exit 0); an older one is refused."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    with pytest.raises(errors.OpPrereqError, match="not newer"):
        master.call("StepDown", [1, "node2"])
    assert master.call("StepDown", [2, "node2"]) is True
    assert master.wait(20) == 0
    assert "stepping down: node2 is master, epoch 2" in master.stderr()


def test_restart_takes_the_next_session_and_start_masterd_detaches(tmp_path, nodeds, daemons):
    """A restart of jq-masterd (here by master-failover's --start helper: detached, in its own
    session, logging to run/jq-masterd.log) raises the replication session of the epoch."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    assert master.call("ClusterInfo", [])["session"] == 1
    assert master.stop() == 0
    out = io.StringIO()
    cluster_cmds.start_masterd(cli_app.Context(None, stdout=out, sleep=time.sleep),
                               master.state_dir)
    pid = int(re.search(r"pid ([0-9]+)", out.getvalue()).group(1))
    try:
        assert os.getsid(pid) == pid
        assert master.call("ClusterInfo", [])["session"] == 2
    finally:
        os.kill(pid, signal.SIGTERM)
        assert os.waitpid(pid, 0)[1] == 0
    path = os.path.join(test_cluster.queue_dir("node1"), "replication")
    with open(path, encoding="utf-8") as stream:
        assert stream.read() == '{"epoch":1,"session":2}\n'
    with open(os.path.join(master.state_dir, "run", "jq-masterd.log"), encoding="utf-8") as log:
        assert "session 2" in log.read()


def test_fenced_master_stops_serving_and_cannot_start_again(tmp_path, nodeds, daemons):
    """A candidate that voted in a newer epoch fences the master: it stops (exit 0, "deposed")
    and a restart is refused while a node knows the newer epoch."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    with master.client() as client:
        wait_all_final(client, [client.submit_job([delay(0)])])
    deadline = time.monotonic() + 20  # one candidate acknowledges: the other may lag
    while True:
        position = started["node2"].call("node_info", {})["position"]
        if position == started["node3"].call("node_info", {})["position"]:
            break
        assert time.monotonic() < deadline, position
        time.sleep(0.05)
    vote = test_cluster.call("node2", "node3", "vote", {"epoch": 2, "candidate": "node2",
                                                        "position": position})
    assert vote["granted"] is True, vote
    with master.client() as client:
        try:
            client.submit_job([delay(0)])
        except (errors.FencedError, errors.ReplicationError, errors.ProtocolError):
            pass  # acknowledged by node2 first, or failed by the fencing: both are fine
    assert master.wait(20) == 0
    assert "deposed: this node is no longer the master" in master.stderr()
    assert "Traceback" not in master.stderr()
    restarted = subprocess.run([sys.executable, "-m", "jqueue.daemon.masterd", "--state-dir",
                                test_cluster.state_dirs["node1"]], capture_output=True,
                               text=True, timeout=30)
    assert restarted.returncode == 1
    assert "fenced: node node3 knows epoch 2 (master node2)" in restarted.stderr


def test_opcodes_run_on_cluster_nodes(tmp_path, nodeds, daemons):
    """OP_TEST_DELAY on_nodes sleeps on the named nodes; an unknown node fails the job."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    with master.client() as client:
        good = client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0.2, "on_master": False,
                                   "on_nodes": ["node2", "node3"]}])
        bad = client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0,
                                  "on_nodes": ["node9"]}])
        wait_all_final(client, [good, bad])
        (good_row, bad_row) = client.query_jobs([good, bad], ["status", "opresult", "opstart",
                                                              "opend"])
    assert good_row[0] == "success"
    elapsed = (good_row[3][0][0] + good_row[3][0][1] / 1e6) - (
        good_row[2][0][0] + good_row[2][0][1] / 1e6)
    assert elapsed >= 0.2
    assert bad_row[0] == "error" and "unknown node(s) node9" in bad_row[1][0][1][0]
