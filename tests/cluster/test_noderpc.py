"""Tests of jqueue.cluster.noderpc.Node: a node's epoch moves only with a configuration or
a vote of that epoch."""

import pytest
from cluster_helpers import build_cluster

from jqueue import errors
from jqueue.cluster import noderpc

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
