"""Tests of jqueue.cluster.noderpc.Node in this process: roles, configurations, epochs."""

import pytest
from cluster_helpers import build_cluster

from jqueue import errors
from jqueue.cluster import membership, noderpc
from jqueue.daemon import clustermaster


@pytest.fixture
def deposed(tmp_path):
    """A 3-node cluster whose master node1 missed the failover to node2 (epoch 2)."""
    test_cluster = build_cluster(tmp_path, 3)
    new = test_cluster.config.changed(master="node2", epoch=2)
    node = noderpc.Node.load(test_cluster.state_dirs["node1"], checkpoint_interval=None)
    node.start()
    yield test_cluster, node, new
    node.stop()


def test_a_deposed_master_refuses_replication_until_it_has_the_configuration(deposed):
    """The old master refuses the new master's replication, saying why (its configuration
    makes it the master); the new configuration makes it a candidate with a replica."""
    test_cluster, node, new = deposed
    body = {"epoch": 2, "master": "node2", "session": 1}
    with pytest.raises(errors.NotMasterError, match="makes it the master; replication from "
                                                    "node2 needs the current configuration"):
        node.resync_digests("node2", body)
    assert node.cluster_config_update("node2", {"config": new.to_dict()}) == {
        "version": new.version}
    assert node.role == membership.ROLE_CANDIDATE and node.replica is not None
    assert node.resync_digests("node2", body)["position"] == [0, 0, 0]
    state = membership.NodeState.load(test_cluster.state_dirs["node1"])
    assert (state.epoch, state.master) == (2, "node2")


def test_a_configuration_recorded_by_another_process_is_taken_up(deposed):
    """cluster.json of a newer epoch written by jq-masterd (a fenced start) is read by the
    running node: its node_info, role and replica follow it."""
    test_cluster, node, new = deposed
    assert node.node_info("node2", {})["role"] == membership.ROLE_MASTER
    assert clustermaster.record_newer_config(test_cluster.state_dirs["node1"], "node2",
                                             {"config": new.to_dict()})
    info = node.node_info("node2", {})
    assert (info["epoch"], info["master"], info["role"]) == (2, "node2", "candidate")
    assert info["config"] == new.to_dict() and info["replica"] is True


def test_a_configuration_is_recorded_only_from_its_master(deposed):
    """A node that is not the master of the newer epoch cannot hand its configuration over;
    an older or equal configuration is not recorded either."""
    test_cluster, node, new = deposed
    state_dir = test_cluster.state_dirs["node1"]
    before = membership.load_config(state_dir).to_dict()
    assert not clustermaster.record_newer_config(state_dir, "node3", {"config": new.to_dict()})
    assert not clustermaster.record_newer_config(state_dir, "node1",
                                                 {"config": test_cluster.config.to_dict()})
    assert not clustermaster.record_newer_config(state_dir, "node2", {"epoch": 2})
    assert membership.load_config(state_dir).to_dict() == before
    assert membership.NodeState.load(state_dir).epoch == 1


def test_node_state_writes_of_two_processes_never_lose_a_vote(tmp_path):
    """Two NodeState objects on one directory (jq-noded, jq-masterd): an epoch observed by
    one never erases the vote the other recorded, nor goes back."""
    membership.NodeState(str(tmp_path), "n1", epoch=1, master="n1").save()
    noded = membership.NodeState.load(str(tmp_path))
    masterd = membership.NodeState.load(str(tmp_path))
    assert noded.grant_vote(3, "n3")
    masterd.observe(2, "n2")
    on_disk = membership.NodeState.load(str(tmp_path))
    assert (on_disk.epoch, on_disk.master) == (3, "n3")
    assert (on_disk.voted_epoch, on_disk.voted_for) == (3, "n3")
    assert not masterd.grant_vote(3, "n2")
