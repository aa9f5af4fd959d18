"""Tests of jqueue.cluster.noderpc.Node in this process: roles, configurations, epochs (a
node's epoch moves only with a configuration or a vote of that epoch)."""

import errno

import pytest
from cluster_helpers import build_cluster, job_record

from jqueue import errors
from jqueue.cluster import membership, noderpc
from jqueue.daemon import clustermaster
from jqueue.store import faults

FAR = 10 ** 30


@pytest.fixture
def node(tmp_path):
    """node2 of a 3-node cluster (a master candidate holding a replica), started."""
    test_cluster = build_cluster(tmp_path, count=3)
    node = noderpc.Node.load(test_cluster.state_dirs["node2"], checkpoint_interval=None)
    node.start()
    yield node
    node.stop()


def test_an_update_from_a_far_epoch_is_refused_and_not_adopted(node):
    """Replication (and the file calls) with an epoch ahead of the node's configuration
    and of its votes is refused: the node keeps its epoch and master."""
    epoch, master = node.state.epoch, node.state.master
    body = {"epoch": FAR, "session": 1, "seq_from": 1, "seq_to": 1, "records": []}
    with pytest.raises(errors.FencedError, match="no configuration of that epoch"):
        node.replicate("node3", body)
    with pytest.raises(errors.FencedError, match="no configuration of that epoch"):
        node.jobqueue_set_drain_flag("node3", {"epoch": FAR, "flag": True})
    assert (node.state.epoch, node.state.master) == (epoch, master)
    assert node.replica.known_epoch <= max(epoch, node.config.epoch)


def test_a_step_down_for_a_far_epoch_is_refused(node):
    """StepDown naming an epoch no configuration or vote of this node knows is refused."""
    epoch, master = node.state.epoch, node.state.master
    with pytest.raises(errors.FencedError, match="no configuration of that epoch"):
        node.step_down("node3", {"epoch": FAR, "master": "node3"})
    assert (node.state.epoch, node.state.master) == (epoch, master)


def test_a_vote_lets_the_node_follow_the_new_epoch(node):
    """After voting for node3 in epoch 2, node3's updates of epoch 2 are accepted."""
    answer = node.vote("node3", {"epoch": node.config.epoch + 1, "candidate": "node3",
                                 "position": [9, 9, 9]})
    assert answer["granted"] is True, answer
    body = {"epoch": node.config.epoch + 1, "session": 1, "seq_from": 1, "seq_to": 1,
            "records": []}
    with pytest.raises(errors.ResyncNeeded):  # accepted as master; the stream must resync
        node.replicate("node3", body)
    assert node.state.master == "node3"



def test_a_replica_whose_sync_failed_is_opened_again_by_the_next_replication(node):
    """A failed sync stops the replica's journal for good (its pages may be lost): the
    next call that reads or changes it (replication, node_info, a vote) closes it without
    a checkpoint and opens it again, whose replay finds the batches that were durable
    (node_info, which a failover compares, says that position); the master's retry of
    the failed one is applied and made durable, and the node goes on without a restart."""
    master, epoch = node.state.master, node.state.epoch

    def batch(seq, job_id):
        return {"epoch": epoch, "session": 1, "seq_from": seq, "seq_to": seq,
                "records": [job_record(job_id)]}

    node.resync_apply(master, {"epoch": epoch, "position": [epoch, 1, 0]})
    assert node.replicate(master, batch(1, 1)) == {"position": [epoch, 1, 1]}
    assert node.replica_ready()
    failed = node.replica
    faults.inject("journal.sync", errno.EIO)
    try:
        with pytest.raises(errors.GenericError, match="Input/output error"):
            node.replicate(master, batch(2, 2))
    finally:
        faults.clear()
    assert failed.failed is not None and failed.position == [epoch, 1, 2]
    assert not node.replica_ready()  # jq-noded prepares the next call in a thread
    # What a failover compares is the durable position, not the failed batch's.
    assert node.node_info("node3", {})["position"] == [epoch, 1, 1]
    assert node.replicate(master, batch(2, 2)) == {"position": [epoch, 1, 2]}
    assert node.replica is not failed and node.replica.failed is None and node.replica_ready()
    assert sorted(node.replica.queue._jobs) == [1, 2]
    node.stop()
    reopened = noderpc.Node.load(node.state_dir, checkpoint_interval=None)
    reopened.start()
    try:
        assert reopened.replica.position == [epoch, 1, 2]
        assert sorted(reopened.replica.queue._jobs) == [1, 2]
    finally:
        reopened.stop()


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
