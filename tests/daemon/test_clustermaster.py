"""Tests of jqueue.daemon.clustermaster: start checks, sessions and the cluster backend.

Nodes are ScriptedNodes (fakes_cluster): RPC clients answering from a script, recording
every call. The replicator is the real ClusterReplicator, never attached to a queue, so
its peers and policy can be inspected without any thread running.
"""

import json
import os
import time

import pytest
from fakes_cluster import FakeClusterOps, ScriptedNodes

from jqueue import constants, errors
from jqueue.cluster import membership
from jqueue.daemon import clustermaster, common
from jqueue.luxi import methods


def _config(candidates=("c1", "c2"), plain=(), min_acks=None, epoch=1, master="m"):
    nodes = {master: {"address": "127.0.0.1:7000", "candidate": True}}
    for index, name in enumerate(candidates, 1):
        nodes[name] = {"address": "127.0.0.1:%d" % (7000 + index), "candidate": True}
    for index, name in enumerate(plain, 1):
        nodes[name] = {"address": "127.0.0.1:%d" % (7100 + index), "candidate": False}
    return membership.ClusterConfig("test", master, nodes, epoch=epoch, min_acks=min_acks)


def _state_dir(tmp_path, config, name="m", epoch=None, master=None):
    state_dir = str(tmp_path / "state")
    os.makedirs(state_dir, exist_ok=True)
    membership.save_config(state_dir, config)
    membership.NodeState(state_dir, name, epoch=config.epoch if epoch is None else epoch,
                      master=master or config.master).save()
    return state_dir


class Setup:
    """A master's state directory, its scripted nodes, fake clusterops and deposals."""

    def __init__(self, tmp_path, config):
        self.state_dir = _state_dir(tmp_path, config)
        self.queue_dir = os.path.join(self.state_dir, "queue")
        self.nodes = ScriptedNodes()
        for name in config.nodes:
            self.nodes.answers[name] = {
                "node_info": {"name": name, "epoch": config.epoch, "master": config.master,
                              "config_version": config.version, "position": [1, 1, 0]},
                "cluster_config_update": lambda body: {"version": body["config"]["version"]}}
        self.ops = FakeClusterOps()
        self.deposed = []

    def start(self):
        return clustermaster.start(self.state_dir, self.queue_dir, self.deposed.append,
                                   client_factory=self.nodes, ops=self.ops)


@pytest.fixture
def setup(tmp_path):
    made = []

    def make(config=None):
        made.append(Setup(tmp_path, config or _config()))
        return made[-1]

    yield make


@pytest.fixture
def master(setup):
    """A started ClusterMaster of a master m with candidates c1, c2 and plain node n1."""
    started = setup(_config(plain=("n1",))).start()
    yield started
    started.close()


def _peers(master):
    return sorted(peer["name"] for peer in master.replicator.status()["peers"])


# Start checks


def test_without_cluster_json_start_returns_none(tmp_path):
    """A state directory without cluster.json is a single-node queue: no cluster master."""
    assert clustermaster.start(str(tmp_path), str(tmp_path / "queue")) is None


def test_a_node_that_is_not_the_master_refuses_to_start(tmp_path):
    """A node the configuration does not name as master refuses, naming the master."""
    config = _config()
    state_dir = _state_dir(tmp_path, config, name="c1")
    with pytest.raises(common.StartupError) as caught:
        clustermaster.start(state_dir, str(tmp_path / "q"), client_factory=ScriptedNodes())
    assert errors.error_message(caught.value) == (
        "this node (c1) is not the master: m (127.0.0.1:7000) is, epoch 1")


def test_a_node_state_knowing_a_newer_master_refuses_to_start(tmp_path):
    """node.json knowing a newer epoch's master wins over an old cluster.json."""
    state_dir = _state_dir(tmp_path, _config(), epoch=2, master="c2")
    with pytest.raises(common.StartupError, match=r"is not the master: c2 \(127.0.0.1:7002\) "
                                                  r"is, epoch 2"):
        clustermaster.start(state_dir, str(tmp_path / "q"), client_factory=ScriptedNodes())


def test_a_node_knowing_a_newer_epoch_fences_the_start(setup):
    """A node reporting a newer epoch stops the start; the session file is left alone."""
    s = setup()
    s.nodes.answers["c2"]["node_info"] = {"epoch": 3, "master": "c1"}
    with pytest.raises(common.StartupError) as caught:
        s.start()
    assert errors.error_message(caught.value) == "fenced: node c2 knows epoch 3 (master c1)"
    assert not os.path.exists(os.path.join(s.queue_dir, constants.REPLICATION_FILE))


def test_a_fenced_start_records_the_new_masters_configuration(setup):
    """The new master's own answer carries its configuration: the refused start records it
    (cluster.json, node.json), so this node knows its master and that it is a candidate."""
    s = setup()
    newer = membership.load_config(s.state_dir).changed(master="c1", epoch=2)
    s.nodes.answers["c1"]["node_info"] = {"epoch": 2, "master": "c1",
                                          "config": newer.to_dict()}
    with pytest.raises(common.StartupError, match="fenced: node c1 knows epoch 2 .master c1.; "
                                                  "its configuration is recorded in"):
        s.start()
    assert membership.load_config(s.state_dir).to_dict() == newer.to_dict()
    state = membership.NodeState.load(s.state_dir)
    assert (state.epoch, state.master) == (2, "c1")


def _wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in %ss" % timeout
        time.sleep(0.01)


def test_nodes_with_an_older_configuration_at_start_get_the_current_one(setup):
    """A node answering node_info with an older version, or not at all, is pushed the
    current configuration until it takes it; up-to-date nodes are left alone."""
    s = setup(_config(plain=("n1",)))
    config = membership.load_config(s.state_dir)
    s.nodes.answers["c2"]["node_info"] = {"epoch": 1, "config_version": 0}
    s.nodes.down.add("n1")
    started = s.start()
    started.pusher.retry_interval = 0.01
    _wait_for(lambda: s.nodes.calls("c2", "cluster_config_update"))
    assert s.nodes.calls("c2", "cluster_config_update")[0][1] == {"config": config.to_dict()}
    _wait_for(lambda: len(s.nodes.calls("n1", "cluster_config_update")) >= 2)
    s.nodes.down.clear()
    _wait_for(lambda: not started.pusher.stale)
    assert s.nodes.calls("c1", "cluster_config_update") == []
    started.close()


def test_a_candidate_refusing_replication_for_its_role_is_pushed_the_configuration(master):
    """NotMasterError from a candidate (it thinks it is the master) marks it stale."""
    master._peer_error("c1", errors.RemoteError("connection refused"))
    assert "c1" not in master.pusher.stale
    master._peer_error("c1", errors.NotMasterError("node c1 holds no replica"))
    assert master.pusher.stale["c1"] == "node c1 holds no replica"


def test_verify_names_stale_and_unreachable_candidates(master, setup):
    """cluster verify says "stale configuration" for a candidate that answers with an older
    configuration (and pushes it), "unreachable" only for one that does not answer."""
    nodes = master._client_factory
    nodes.answers["c1"]["node_info"] = {"epoch": 1, "master": "c1", "config_version": 0}
    nodes.answers["c1"]["resync_digests"] = errors.NotMasterError("holds no replica")
    nodes.down.add("c2")
    report = master.verify()
    assert report["c1"]["state"] == "stale configuration"
    assert report["c1"]["error"] == "holds no replica"
    assert report["c2"]["state"] == "unreachable"
    assert "connection refused" in report["c2"]["error"]
    assert "c1" in master.pusher.stale


def test_unreachable_nodes_do_not_stop_the_start(setup):
    """Nodes that do not answer node_info are only logged: the master starts."""
    s = setup()
    s.nodes.down.update(["c1", "c2"])
    started = s.start()
    assert started is not None and _peers(started) == ["c1", "c2"]
    started.close()


def test_start_builds_the_replicator_over_the_candidates(setup):
    """The replicator gets one peer per candidate, the epoch, the session and the policy."""
    s = setup(_config(candidates=("c1", "c2", "c3", "c4"), plain=("n1",)))
    started = s.start()
    status = started.replicator.status()
    assert _peers(started) == ["c1", "c2", "c3", "c4"]
    assert (status["epoch"], status["session"], status["min_acks"]) == (1, 1, 2)
    assert started.replicator.ack_timeout == 10.0
    assert [m for m, _ in s.nodes.calls("n1")] == ["node_info"]
    started.close()


def test_sessions_count_up_within_an_epoch_and_restart_at_one(tmp_path):
    """Each start raises the session of its epoch, durably; a new epoch starts at 1."""
    queue_dir = str(tmp_path / "queue")
    assert [clustermaster.next_session(queue_dir, 1) for _ in range(3)] == [1, 2, 3]
    assert clustermaster.next_session(queue_dir, 2) == 1
    with open(os.path.join(queue_dir, constants.REPLICATION_FILE), encoding="utf-8") as f:
        assert json.load(f) == {"epoch": 2, "session": 1}


def test_an_unreadable_replication_file_stops_the_start(tmp_path):
    """A damaged replication file is never silently reset: the start fails, naming it."""
    queue_dir = tmp_path / "queue"
    queue_dir.mkdir()
    (queue_dir / constants.REPLICATION_FILE).write_text("{not json")
    with pytest.raises(common.StartupError, match="unreadable replication state"):
        clustermaster.next_session(str(queue_dir), 1)


# The backend


def test_cluster_info_and_config_values(master):
    """ClusterInfo answers the configuration and policy; QueryConfigValues the master."""
    info = master.info()
    assert (info["name"], info["master"], info["epoch"], info["session"]) == (
        "test", "m", 1, 1)
    assert (info["min_acks"], info["min_acks_setting"], info["mode"]) == (1, None, "cluster")
    assert [(n["name"], n["role"]) for n in info["nodes"]] == [
        ("c1", "candidate"), ("c2", "candidate"), ("m", "master"), ("n1", "node")]
    values = master.config_values()
    assert values["master_node"]() == "m" and values["cluster_name"]() == "test"


def test_add_candidate_signs_saves_pushes_and_replicates(master, setup):
    """AddNode signs the CSR, saves version 2, pushes it (not to the new node), adds a peer."""
    nodes, ops = master._client_factory, master._ops
    bundle = master.add_node("c3", "127.0.0.1:7003", True, "CSR of c3")
    assert bundle["cert"] == "CERT of c3" and bundle["config"]["version"] == 2
    assert ops.calls[0] == ("sign_node", (master.state_dir, "c3", "CSR of c3"))
    saved = membership.load_config(master.state_dir)
    assert saved.version == 2 and saved.nodes["c3"] == {"address": "127.0.0.1:7003",
                                                        "candidate": True}
    for name in ("m", "c1", "c2", "n1"):
        pushed = nodes.calls(name, "cluster_config_update")
        assert [b["config"]["version"] for _, b in pushed] == [2], name
    assert nodes.calls("c3", "cluster_config_update") == []
    assert _peers(master) == ["c1", "c2", "c3"]
    assert master.replicator.min_acks == 2  # the majority of master + 3 candidates


def test_add_plain_node_changes_no_peer(master):
    """A node added without --candidate only votes: no replication peer, same policy."""
    master.add_node("n2", "127.0.0.1:7102", False, "CSR")
    assert _peers(master) == ["c1", "c2"] and master.replicator.min_acks == 1
    assert master.config.role("n2") == "node" and master.config.version == 2


def test_adding_a_known_node_is_refused_and_changes_nothing(master):
    """AddNode of an existing name is OpPrereqError (already_exists); nothing is signed."""
    with pytest.raises(errors.OpPrereqError) as caught:
        master.add_node("c1", "127.0.0.1:7009", True, "CSR")
    assert caught.value.args[1] == constants.ECODE_EXISTS
    assert master._ops.calls == [] and membership.load_config(master.state_dir).version == 1


def test_a_signing_failure_leaves_the_configuration_alone(master):
    """If the CSR cannot be signed, no configuration is saved or pushed."""
    master._ops.fail("sign_node", errors.ConfigurationError("ca.key missing"))
    with pytest.raises(errors.ConfigurationError, match="ca.key"):
        master.add_node("c3", "127.0.0.1:7003", True, "CSR")
    assert master.config.version == 1 and _peers(master) == ["c1", "c2"]
    assert master._client_factory.calls("c1", "cluster_config_update") == []


def test_remove_candidate_lowers_the_policy_and_drops_the_peer(master):
    """RemoveNode drops the peer, saves version 2 and pushes it to every node and the removed."""
    result = master.remove_node("c2")
    assert result == {"version": 2, "unreachable": {}}
    assert _peers(master) == ["c1"] and master.replicator.min_acks == 1
    assert "c2" not in membership.load_config(master.state_dir).nodes
    for name in ("m", "c1", "n1", "c2"):
        assert len(master._client_factory.calls(name, "cluster_config_update")) == 1, name


def test_removing_the_master_or_an_unknown_node_is_refused(master):
    """The master cannot be removed (wrong_state); an unknown node is unknown_entity."""
    with pytest.raises(errors.OpPrereqError, match="it is the master") as caught:
        master.remove_node("m")
    assert caught.value.args[1] == constants.ECODE_STATE
    with pytest.raises(errors.OpPrereqError) as caught:
        master.remove_node("ghost")
    assert caught.value.args[1] == constants.ECODE_NOENT
    assert master.config.version == 1


def test_a_fixed_policy_that_becomes_impossible_refuses_the_change(setup):
    """With min_acks 2 set, removing one of two candidates is refused before any change."""
    started = setup(_config(min_acks=2)).start()
    with pytest.raises(errors.OpPrereqError, match="min_acks 2 impossible"):
        started.remove_node("c1")
    assert started.config.version == 1 and _peers(started) == ["c1", "c2"]
    started.close()


def test_modify_node_promotes_and_demotes(master):
    """ModifyNode adds a peer for a new candidate and drops it again; each raises the version."""
    assert master.modify_node("n1", True)["version"] == 2
    assert _peers(master) == ["c1", "c2", "n1"] and master.replicator.min_acks == 2
    assert master.modify_node("n1", False) == {"version": 3, "unreachable": {},
                                               "changed": True}
    assert _peers(master) == ["c1", "c2"] and master.replicator.min_acks == 1
    assert membership.load_config(master.state_dir).version == 3


def test_modify_node_to_its_current_role_changes_nothing(master):
    """Asking for the role a node already has keeps the version and pushes nothing."""
    assert master.modify_node("c1", True) == {"version": 1, "unreachable": {},
                                              "changed": False}
    assert master._client_factory.calls("c2", "cluster_config_update") == []


def test_nodes_that_miss_a_push_are_reported(master):
    """A node that cannot take the new configuration is named with the reason."""
    master._client_factory.down.add("n1")
    result = master.modify_node("c2", False)
    assert list(result["unreachable"]) == ["n1"]
    assert "connection refused" in result["unreachable"]["n1"]


def test_list_nodes_combines_node_info_and_replication(master):
    """ListNodes: every node's role, reachability, sync state and position."""
    master._client_factory.down.add("c2")
    rows = {row["name"]: row for row in master.list_nodes()}
    assert rows["m"]["role"] == "master" and rows["m"]["position"] == [1, 1, 0]
    assert rows["c1"]["reachable"] is True and rows["c1"]["position"] == [1, 1, 0]
    assert rows["c1"]["in_sync"] is False  # never synced: the replicator is not attached
    assert rows["c2"]["reachable"] is False and "connection refused" in rows["c2"]["last_error"]
    assert rows["n1"]["role"] == "node" and rows["n1"]["in_sync"] is None
    assert set(rows["c1"]) >= {"name", "address", "role", "reachable", "in_sync", "position",
                               "last_error"}


def test_step_down_for_a_newer_epoch_deposes_once(setup):
    """StepDown with a newer epoch calls on_deposed once; an older one is refused."""
    s = setup()
    started = s.start()
    with pytest.raises(errors.OpPrereqError, match="not newer"):
        started.step_down(1, "c1")
    assert s.deposed == []
    assert started.step_down(2, "c1") is True
    started.step_down(3, "c2")
    assert s.deposed == ["stepping down: c1 is master, epoch 2"]
    started.close()


def test_a_fencing_candidate_deposes_the_master(setup):
    """The replicator's on_fenced makes the master call on_deposed with "deposed: ..."."""
    s = setup()
    started = s.start()
    started.replicator.fenced("c1", errors.FencedError("this node knows epoch 2"))
    assert len(s.deposed) == 1 and s.deposed[0].startswith("deposed: ")
    assert "epoch 2" in s.deposed[0]
    started.close()


# Through the LUXI dispatcher


def test_cluster_methods_without_a_cluster_are_refused():
    """A single-node daemon answers the cluster methods with "not a cluster", and
    ListNodes with its machine's own node (the queue's list_nodes)."""
    class Backend:
        def list_nodes(self):
            return [{"name": "vm"}]
    dispatcher = methods.Dispatcher(Backend(), {})
    for method, args in (("ClusterInfo", []), ("StepDown", [2, "c1"]),
                         ("AddNode", ["n", "h:1", True, "CSR"]), ("VerifyCluster", [])):
        with pytest.raises(errors.OpPrereqError, match=r"not a cluster \(no cluster.json\)"):
            dispatcher.call(method, args)
    assert dispatcher.call("ListNodes", []) == [{"name": "vm"}]


@pytest.mark.parametrize("method, args", [
    ("AddNode", ["c3", "h:1", "yes", "CSR"]), ("AddNode", ["c3", "h:1", True]),
    ("RemoveNode", [7]), ("ModifyNode", ["c1", "no"]), ("StepDown", [-1, "c1"]),
    ("StepDown", ["2", "c1"]), ("ClusterInfo", [1]),
])
def test_cluster_method_arguments_are_checked(master, method, args):
    """Wrong argument counts or types are RequestErrors before the backend is asked."""
    dispatcher = methods.Dispatcher(object(), {}, master)
    with pytest.raises(errors.RequestError):
        dispatcher.call(method, args)
    assert master.config.version == 1


def test_dispatcher_runs_the_cluster_methods(master):
    """The table's cluster methods reach the backend with their checked arguments."""
    dispatcher = methods.Dispatcher(object(), {}, master)
    master.verify = lambda: {"c1": {"missing": [], "position": [1, 1, 0]}}
    assert dispatcher.call("ClusterInfo", [])["master"] == "m"
    assert len(dispatcher.call("ListNodes", [])) == 4
    assert dispatcher.call("ModifyNode", ["n1", True])["version"] == 2
    assert dispatcher.call("RemoveNode", ["n1"])["version"] == 3
    assert dispatcher.call("AddNode", ["n2", "127.0.0.1:7200", False, "CSR"])["cert"]
    assert dispatcher.call("VerifyCluster", []) == {
        "c1": {"missing": [], "position": [1, 1, 0]}}
    assert dispatcher.call("StepDown", [5, "c1"]) is True


def test_a_newer_epoch_on_disk_stops_changes_and_deposes(setup):
    """A cluster.json of a newer epoch (saved by jq-noded after a failover) is never
    overwritten: the change is refused with NotMasterError and the master is deposed."""
    s = setup()
    started = s.start()
    membership.save_config(s.state_dir, started.config.changed(master="c1", epoch=2))
    with pytest.raises(errors.NotMasterError, match="c1 is, epoch 2"):
        started.modify_node("c2", False)
    assert membership.load_config(s.state_dir).master == "c1"
    assert len(s.deposed) == 1 and "names c1 master of epoch 2" in s.deposed[0]
    assert _peers(started) == ["c1", "c2"]
    started.close()


# Opcodes on nodes


def test_test_delay_runs_on_the_named_nodes_through_their_noded(master, setup):
    """OP_TEST_DELAY on_nodes calls test_delay on each named node, in parallel."""
    nodes = master._client_factory
    master.test_delay(["c1", "n1", "c1"], 0.25)
    assert nodes.calls("c1", "test_delay") == [("test_delay", {"duration": 0.25})]
    assert nodes.calls("n1", "test_delay") == [("test_delay", {"duration": 0.25})]
    assert nodes.calls("c2", "test_delay") == []


def test_test_delay_names_unknown_and_failed_nodes(master):
    """Unknown nodes are refused before any call; a node that fails is named with why."""
    with pytest.raises(errors.OpExecError, match="unknown node.*zz"):
        master.test_delay(["c1", "zz"], 0)
    assert master._client_factory.calls("c1", "test_delay") == []
    master._client_factory.down.add("n1")
    with pytest.raises(errors.OpExecError, match="delay failed on n1: .*connection refused"):
        master.test_delay(["c1", "n1"], 0)
