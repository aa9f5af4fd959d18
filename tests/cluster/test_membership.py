"""Tests of jqueue.cluster.membership: configuration, node state, votes and election arithmetic."""

import pytest

from jqueue import errors
from jqueue.cluster import membership


def _config(candidates=2, regular=0, min_acks=None):
    nodes = {"m": {"address": "127.0.0.1:7000", "candidate": True}}
    for i in range(1, candidates + 1):
        nodes["c%d" % i] = {"address": "127.0.0.1:%d" % (7000 + i), "candidate": True}
    for i in range(1, regular + 1):
        nodes["n%d" % i] = {"address": "127.0.0.1:%d" % (7100 + i), "candidate": False}
    return membership.ClusterConfig("test", "m", nodes, min_acks=min_acks)


def test_config_round_trip_and_roles(tmp_path):
    """A saved configuration loads back equal, with roles derived from it."""
    config = _config(2, 1)
    membership.save_config(str(tmp_path), config)
    loaded = membership.load_config(str(tmp_path))
    assert loaded.to_dict() == config.to_dict()
    assert [loaded.role(n) for n in ("m", "c1", "n1")] == ["master", "candidate", "node"]
    assert loaded.candidates() == ["c1", "c2"] and loaded.effective_min_acks() == 1
    assert membership.load_config(str(tmp_path / "none")) is None


@pytest.mark.parametrize("change, words", [
    ({"master": "ghost"}, "master"), ({"name": "../x"}, "invalid node name"),
    ({"min_acks": 5}, "min_acks 5"),
])
def test_invalid_configurations_are_refused(change, words):
    """Bad configurations raise ConfigurationError naming the problem."""
    data = _config().to_dict()
    data.update(change)
    with pytest.raises(errors.ConfigurationError, match=words):
        membership.ClusterConfig.from_dict(data)


def test_bad_addresses_are_refused():
    """Addresses must be HOST:PORT with a valid port."""
    assert membership.parse_address("10.0.0.1:1811") == ("10.0.0.1", 1811)
    for bad in ("host", "host:0", "host:99999", ":80", "host:x"):
        with pytest.raises(errors.ConfigurationError):
            membership.parse_address(bad)


def test_a_vote_is_given_once_per_epoch_and_persists(tmp_path):
    """A node votes for one candidate per epoch, remembers it, and learns the epoch."""
    state = membership.NodeState(str(tmp_path), "c1", epoch=1, master="m")
    state.save()
    assert membership.decide_vote(state, 2, "c2", [1, 1, 5])[0] is True
    assert membership.decide_vote(state, 2, "c3", [1, 1, 9])[0] is False
    assert membership.decide_vote(state, 1, "c3", [1, 1, 9])[0] is False
    reloaded = membership.NodeState.load(str(tmp_path))
    assert (reloaded.epoch, reloaded.master, reloaded.voted_for) == (2, "c2", "c2")


def test_a_replica_refuses_a_candidate_behind_it(tmp_path):
    """A replica holder does not vote for a candidate with an older position."""
    state = membership.NodeState(str(tmp_path), "c1", epoch=1, master="m")
    granted, reason = membership.decide_vote(state, 2, "c2", [1, 1, 5], own_position=[1, 1, 7])
    assert not granted and "behind" in reason
    assert state.epoch == 1
    assert membership.decide_vote(state, 2, "c2", [1, 2, 1], own_position=[1, 1, 7])[0]


def test_elections_need_both_quorums():
    """Winning takes a majority of all nodes and enough up-to-date candidates."""
    config = _config(candidates=2, regular=2)  # m, c1, c2, n1, n2; min_acks 1
    assert membership.candidate_votes_needed(config) == 2
    assert membership.election_won(config, "c1", {"c1", "c2", "n1"})
    assert not membership.election_won(config, "c1", {"c1", "n1", "n2", "m"})
    assert not membership.election_won(config, "c1", {"c1", "c2"})
    five = _config(candidates=4)  # min_acks 2: three candidates needed
    assert membership.candidate_votes_needed(five) == 3
    assert membership.election_won(five, "c1", {"c1", "c2", "c3"})
    assert not membership.election_won(five, "c1", {"c1", "c2", "m"})


def test_best_effort_clusters_cannot_elect():
    """With min_acks 0 no vote count is enough: failover needs --no-voting."""
    config = _config(candidates=2, min_acks=0)
    assert not membership.election_won(config, "c1", {"m", "c1", "c2"})
