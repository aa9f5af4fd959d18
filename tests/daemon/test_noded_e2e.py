"""End-to-end tests of jq-noded: real processes on loopback ports, called over mutual TLS.

Clusters are built with jqueue.cluster.admin (tests/cluster_helpers.py). The test process
plays the other nodes with their own credentials: node1 is the master that replicates,
node3 a candidate asking for votes.
"""

import datetime
import http.client
import os
import signal
import ssl
import subprocess
import sys
import time

import pytest
from cluster_helpers import (
    NodeDaemon,
    build_cluster,
    job_dict,
    job_record,
    snapshot,
    start_all,
)

from jqueue import constants, errors, serializer
from jqueue.cluster import admin, membership, tls
from jqueue.cluster.rpc import client as rpc_client
from jqueue.queue import JobQueue

MAX_BODY = 65536
START = {"epoch": 1, "records": [], "deletes": [], "serial": 0, "position": [1, 1, 0]}



@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A 3-node cluster with jq-noded running on node2 only (its replica stays empty)."""
    test_cluster = build_cluster(tmp_path_factory.mktemp("shared"), count=3)
    daemon = NodeDaemon(test_cluster, "node2", ["--rpc-max-body", str(MAX_BODY)]).start()
    yield test_cluster, daemon
    assert daemon.stop() == 0, daemon.stderr()


def state_of(test_cluster, name):
    return snapshot(test_cluster.state_dirs[name])


def assert_untouched(test_cluster, daemon, before):
    """The node's state directory is as before, and the daemon alive and answering."""
    assert state_of(test_cluster, daemon.name) == before
    assert daemon.alive()
    assert daemon.call("node_info", {}, caller="node1")["name"] == daemon.name


def update_body(name="job-1", epoch=1, job_id=1):
    return {"epoch": epoch, "file": name, "content": serializer.dumps(job_dict(job_id))}


# Mutual TLS


def test_node_info_over_mutual_tls(shared):
    """Any node of the cluster gets node_info; it tells role, epoch, master and replica."""
    test_cluster, daemon = shared
    for caller in ("node1", "node3"):
        before = time.time()
        info = daemon.call("node_info", {}, caller=caller)
        assert before <= info.pop("time") <= time.time()  # its clock (the same here)
        assert info.pop("config") == test_cluster.config.to_dict()
        assert info.pop("containment").startswith(("cgroup /", "process group ("))
        assert info == {"name": "node2", "epoch": 1, "master": "node1",
                        "config_version": test_cluster.config.version, "role": "candidate",
                        "replica": True, "position": [0, 0, 0], "jobs": 0,
                        "slots": os.cpu_count() or 1,
                        "features": ["exec_batch", "env_base", "release", "svc_restart",
                                     "memory_max"]}


def _write_client_files(path, key, cert):
    os.makedirs(path, exist_ok=True)
    tls.write_pem(os.path.join(path, "c.key"), tls.key_to_pem(key), True)
    tls.write_pem(os.path.join(path, "c.crt"), tls.cert_to_pem(cert), False)
    return os.path.join(path, "c.crt"), os.path.join(path, "c.key")


def _cluster_ca(test_cluster):
    tls_dir = os.path.join(test_cluster.state_dirs["node1"], constants.TLS_DIR)
    with open(os.path.join(tls_dir, constants.CA_KEY_FILE), "rb") as stream:
        key = tls.load_key_pem(stream.read())
    with open(os.path.join(tls_dir, constants.CA_CERT_FILE), "rb") as stream:
        return key, tls.load_cert_pem(stream.read())


def _client_context(test_cluster, tmp_path, kind):
    """A context trusting the cluster CA, presenting a certificate of the given kind."""
    ca_key, ca_cert = _cluster_ca(test_cluster)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=tls.cert_to_pem(ca_cert).decode())
    if kind == "foreign-ca":
        foreign = tls.create_ca("testcluster")
        files = _write_client_files(tmp_path, *tls.issue_node_cert(*foreign, "node1"))
    elif kind == "expired":
        old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
        files = _write_client_files(tmp_path, *tls.issue_node_cert(
            ca_key, ca_cert, "node1", days=1, not_before=old))
    elif kind == "not-in-cluster":
        files = _write_client_files(tmp_path, *tls.issue_node_cert(ca_key, ca_cert, "node9"))
    else:
        files = None
    if files is not None:
        context.load_cert_chain(*files)
    return context


@pytest.mark.parametrize("kind, error", [
    ("foreign-ca", errors.RemoteError), ("expired", errors.RemoteError),
    ("not-in-cluster", errors.TlsError), ("no-cert", errors.RemoteError),
])
def test_tls_refusals_change_nothing(shared, tmp_path, kind, error):
    """A client the cluster CA does not vouch for, or not of the cluster, changes nothing."""
    test_cluster, daemon = shared
    before = state_of(test_cluster, "node2")
    context = _client_context(test_cluster, tmp_path, kind)
    address = test_cluster.config.address("node2")
    with rpc_client.RpcClient("node2", address, context, timeout=5) as client:
        for method, body in (("jobqueue_update", update_body()), ("resync_apply", START),
                             ("vote", {"epoch": 5, "candidate": "node1", "position": None})):
            with pytest.raises(error):
                client.call(method, body)
    assert_untouched(test_cluster, daemon, before)


def _raw_connection(test_cluster):
    """An HTTPS connection to node2 as node1 (host name check off: raw HTTP requests)."""
    context = admin.credentials(test_cluster.state_dirs["node1"]).client_context()
    context.check_hostname = False
    host, port = membership.parse_address(test_cluster.config.address("node2"))
    return http.client.HTTPSConnection(host, port, context=context, timeout=5)


def _post(test_cluster, path, body, headers=None):
    conn = _raw_connection(test_cluster)
    try:
        conn.request("POST", path, body=body, headers=headers or {
            "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, serializer.loads(response.read())
    finally:
        conn.close()


def test_unknown_method_bad_json_and_oversized_body_are_refused(shared):
    """Unknown calls get 404, invalid JSON 400, a body over the limit 413; nothing changes."""
    test_cluster, daemon = shared
    before = state_of(test_cluster, "node2")
    status, answer = _post(test_cluster, "/rpc/format_disk", b"{}")
    assert status == 404 and answer["success"] is False
    status, answer = _post(test_cluster, "/rpc/jobqueue_update", b'{"epoch": 1, "file"')
    assert status == 400 and answer["result"][0] == "RequestError"
    conn = _raw_connection(test_cluster)
    try:
        conn.putrequest("POST", "/rpc/jobqueue_update")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(MAX_BODY + 1))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413 and b"too large" in response.read()
    finally:
        conn.close()
    assert_untouched(test_cluster, daemon, before)


@pytest.mark.parametrize("name", ["../job-1", "/etc/passwd", "job-1\u0000", "archive/9/job-1",
                                  "job-01", "archive/0/../job-1", "lock", ""])
def test_path_traversal_in_file_calls_is_refused(shared, name):
    """jobqueue_update and jobqueue_rename refuse anything but queue file names."""
    test_cluster, daemon = shared
    before = state_of(test_cluster, "node2")
    with pytest.raises(errors.ParameterError, match="refused"):
        daemon.call("jobqueue_update", update_body(name), caller="node1")
    for pair in (["job-1", name], [name, "archive/0/job-1"]):
        with pytest.raises(errors.ParameterError, match="refused"):
            daemon.call("jobqueue_rename", {"epoch": 1, "renames": [pair]}, caller="node1")
    assert_untouched(test_cluster, daemon, before)
    assert not os.path.exists(os.path.join(test_cluster.state_dirs["node2"], "job-1"))


def test_file_level_calls_apply_through_the_replica(tmp_path, nodeds):
    """The ancestor's update, rename, serial, drain and purge calls reach the replica."""
    test_cluster = build_cluster(tmp_path, count=2)
    daemon = nodeds(test_cluster, "node2")
    queue_dir = test_cluster.queue_dir("node2")
    for job_id in (5, 12345):
        daemon.call("jobqueue_update", update_body("job-%d" % job_id, job_id=job_id),
                    caller="node1")
    daemon.call("jobqueue_rename", {"epoch": 1, "renames": [["job-5", "archive/0/job-5"]]},
                caller="node1")
    daemon.call("jobqueue_update", {"epoch": 1, "file": "serial", "content": "20000\n"},
                caller="node1")
    with open(os.path.join(queue_dir, constants.SERIAL_FILE)) as stream:
        assert stream.read() == "20000\n"  # durable at once, before any checkpoint
    daemon.call("jobqueue_update", {"epoch": 1, "file": "drain", "content": ""},
                caller="node1")
    assert os.path.exists(os.path.join(queue_dir, constants.DRAIN_FILE))
    daemon.call("checkpoint", {}, caller="node1")
    assert os.path.exists(os.path.join(queue_dir, "archive", "0", "job-5"))
    assert os.path.exists(os.path.join(queue_dir, "job-12345"))
    assert daemon.call("node_info", {})["jobs"] == 1
    daemon.call("jobqueue_purge", {"epoch": 1}, caller="node1")
    daemon.call("checkpoint", {}, caller="node1")
    assert daemon.call("node_info", {})["jobs"] == 0
    assert not os.path.exists(os.path.join(queue_dir, "job-12345"))


# Replication


def _started_replica(test_cluster, start, name="node2", jobs=(1,)):
    """noded on name, its replica following [1, 1] with one batch of jobs applied."""
    daemon = start(test_cluster, name)
    return daemon, _follow(daemon, jobs)


def _follow(daemon, jobs=(1,)):
    """Bring a fresh replica to [1, 1, 0] (resync), then apply batch 1 of jobs; the batch."""
    assert daemon.call("resync_apply", START, caller="node1") == {"position": [1, 1, 0]}
    batch = {"epoch": 1, "session": 1, "seq_from": 1, "seq_to": 1,
             "records": [job_record(job_id) for job_id in jobs]}
    assert daemon.call("replicate", batch, caller="node1") == {"position": [1, 1, 1]}
    return batch


def test_replicated_batch_is_applied_and_a_replay_changes_nothing(tmp_path, nodeds):
    """The master's batch lands in the replica's files; the same batch again changes nothing."""
    test_cluster = build_cluster(tmp_path, count=3)
    daemon, batch = _started_replica(test_cluster, nodeds, jobs=(1, 2))
    assert daemon.call("checkpoint", {}, caller="node1") == {"position": [1, 1, 1]}
    queue_dir = test_cluster.queue_dir("node2")
    with open(os.path.join(queue_dir, "job-2"), "rb") as stream:
        assert serializer.loads(stream.read()) == job_dict(2)
    before = snapshot(queue_dir)
    assert daemon.call("replicate", batch, caller="node1") == {"position": [1, 1, 1]}
    daemon.call("checkpoint", {}, caller="node2")
    assert snapshot(queue_dir) == before
    assert daemon.call("node_info", {})["jobs"] == 2
    with pytest.raises(errors.FencedError, match="may not ask"):
        daemon.call("checkpoint", {}, caller="node3")


def test_batch_from_an_older_epoch_is_refused_after_a_vote(tmp_path, nodeds):
    """Once node2 voted in epoch 2, the epoch-1 master's next batch is fenced off."""
    test_cluster = build_cluster(tmp_path, count=3)
    daemon, _batch = _started_replica(test_cluster, nodeds)
    vote = daemon.call("vote", {"epoch": 2, "candidate": "node3", "position": [1, 1, 1]},
                       caller="node3")
    assert vote["granted"] is True and vote["position"] == [1, 1, 1]
    before = snapshot(test_cluster.queue_dir("node2"))
    late = {"epoch": 1, "session": 1, "seq_from": 2, "seq_to": 2, "records": [job_record(3)]}
    with pytest.raises(errors.FencedError, match="epoch 1 refused"):
        daemon.call("replicate", late, caller="node1")
    with pytest.raises(errors.FencedError):
        daemon.call("jobqueue_update", update_body("job-3", job_id=3), caller="node1")
    assert snapshot(test_cluster.queue_dir("node2")) == before
    info = daemon.call("node_info", {})
    assert (info["epoch"], info["master"], info["position"]) == (2, "node3", [1, 1, 1])


def test_a_node_votes_once_per_epoch(tmp_path, nodeds):
    """The vote of an epoch goes to one candidate; one behind the replica gets none."""
    test_cluster = build_cluster(tmp_path, count=3)
    daemon, _batch = _started_replica(test_cluster, nodeds)
    ask = {"epoch": 2, "candidate": "node3", "position": [1, 1, 1]}
    assert daemon.call("vote", ask, caller="node3")["granted"] is True
    assert daemon.call("vote", ask, caller="node3")["granted"] is True  # the same promise
    other = daemon.call("vote", dict(ask, candidate="node1"), caller="node1")
    assert other["granted"] is False and "already promised epoch 2 to node3" in other["reason"]
    behind = daemon.call("vote", {"epoch": 3, "candidate": "node1", "position": [1, 1, 0]},
                         caller="node1")
    assert behind["granted"] is False and "behind" in behind["reason"]
    with pytest.raises(errors.ParameterError, match="only ask votes for itself"):
        daemon.call("vote", dict(ask, epoch=4), caller="node1")
    state = membership.NodeState.load(test_cluster.state_dirs["node2"])
    assert (state.voted_epoch, state.voted_for) == (2, "node3")


def test_config_making_the_node_master_releases_the_queue(tmp_path, nodeds):
    """A configuration naming node2 master closes its replica: a JobQueue can open it."""
    test_cluster = build_cluster(tmp_path, count=3)
    daemon, _batch = _started_replica(test_cluster, nodeds)
    with pytest.raises(errors.JobQueueError, match="locked"):
        JobQueue(test_cluster.queue_dir("node2"), checkpoint_interval=None)
    new = test_cluster.config.changed(master="node2", epoch=2)
    with pytest.raises(errors.FencedError, match="may not send it"):
        daemon.call("cluster_config_update", {"config": new.to_dict()}, caller="node1")
    stale = {"config": test_cluster.config.to_dict()}
    assert daemon.call("cluster_config_update", stale, caller="node1") == {
        "version": test_cluster.config.version}
    assert daemon.call("cluster_config_update", {"config": new.to_dict()}) == {
        "version": new.version}
    info = daemon.call("node_info", {})
    assert (info["role"], info["replica"], info["epoch"]) == ("master", False, 2)
    assert membership.load_config(test_cluster.state_dirs["node2"]).to_dict() == new.to_dict()
    queue = JobQueue(test_cluster.queue_dir("node2"), checkpoint_interval=None)
    try:
        assert queue.stats()["jobs"] == 1
    finally:
        queue.shutdown()


def test_sigterm_exits_0_and_a_restart_keeps_the_position(tmp_path, nodeds):
    """SIGTERM closes the replica cleanly (status 0); restarted, it is where it was."""
    test_cluster = build_cluster(tmp_path, count=2)
    daemon, _batch = _started_replica(test_cluster, nodeds)
    assert daemon.stop() == 0
    assert os.path.exists(os.path.join(test_cluster.queue_dir("node2"), "job-1"))
    info = daemon.start().call("node_info", {})
    assert (info["position"], info["jobs"], info["replica"]) == ([1, 1, 1], 1, True)


def test_sighup_does_not_stop_the_node(tmp_path, nodeds):
    """SIGHUP ended jq-noded at once; now it is logged and the node answers on; SIGUSR1
    writes its threads' stacks to its log; SIGUSR2 (which ended it too) logs at debug
    level (its RPC calls), and again at its own level."""
    test_cluster = build_cluster(tmp_path, count=2)
    daemon, _batch = _started_replica(test_cluster, nodeds)
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "received SIGHUP" not in daemon.stderr():
        assert daemon.alive() and time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.05)
    assert daemon.call("node_info", {})["replica"] and daemon.alive()
    daemon.proc.send_signal(signal.SIGUSR1)
    while "SIGUSR1: end of the stacks" not in daemon.stderr():
        assert daemon.alive() and time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.05)
    assert daemon.call("node_info", {})["replica"]
    daemon.proc.send_signal(signal.SIGUSR2)
    while "SIGUSR2: logging at debug level" not in daemon.stderr():
        assert daemon.alive() and time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.05)
    assert " DEBUG " not in daemon.stderr().split("SIGUSR2")[0]
    daemon.call("node_info", {})
    daemon.proc.send_signal(signal.SIGUSR2)
    while "SIGUSR2: logging at info level again" not in daemon.stderr():
        assert daemon.alive() and time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.05)
    debug = daemon.stderr().split("SIGUSR2: logging at debug level")[1].split(
        "SIGUSR2: logging at info level again")[0]
    assert " DEBUG " in debug, daemon.stderr()
    assert daemon.stop() == 0


def test_master_failover_fences_the_old_master_everywhere(tmp_path, nodeds):
    """After failover to node2, node1's writes are refused and job ids continue."""
    test_cluster = build_cluster(tmp_path, count=3)
    daemons = start_all(nodeds, test_cluster)
    for name in ("node2", "node3"):
        _follow(daemons[name])
    result = admin.master_failover(test_cluster.state_dirs["node2"])
    assert result["epoch"] == 2 and result["votes"] == ["node1", "node2", "node3"]
    assert result["updated"] == ["node1", "node2", "node3"] and result["stepped_down"]
    late = {"epoch": 1, "session": 1, "seq_from": 2, "seq_to": 2, "records": [job_record(9)]}
    for name in ("node1", "node3"):
        info = test_cluster.call("node1", name, "node_info", {})
        assert (info["epoch"], info["master"]) == (2, "node2")
        with pytest.raises(errors.FencedError):
            test_cluster.call("node1", name, "replicate", late)
    queue = JobQueue(test_cluster.queue_dir("node2"), checkpoint_interval=None)
    try:
        assert queue.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}]) == 2
    finally:
        queue.shutdown(timeout=5)


def test_a_directory_outside_any_cluster_does_not_start(tmp_path):
    """jq-noded on a directory that never joined exits 1 with one line saying so."""
    done = subprocess.run([sys.executable, "-m", "jqueue.daemon.noded", "--state-dir",
                           str(tmp_path), "--listen", "127.0.0.1:1"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert "not part of a cluster: run jqctl cluster init or jqctl node join" in done.stderr
    assert "Traceback" not in done.stderr


def test_test_delay_runs_for_the_master_only(shared):
    """test_delay sleeps for the master; other nodes and bad durations are refused."""
    test_cluster, daemon = shared
    assert daemon.call("test_delay", {"duration": 0.05}, caller="node1") == {
        "node": "node2", "slept": 0.05}
    with pytest.raises(errors.FencedError, match="not the master"):
        daemon.call("test_delay", {"duration": 0}, caller="node3")
    for bad in (-1, 7200, "1", True, None):
        with pytest.raises(errors.ParameterError, match="duration"):
            daemon.call("test_delay", {"duration": bad}, caller="node1")
