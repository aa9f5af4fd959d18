"""Tests of jqueue.cluster.admin: creating and joining a cluster, and failover with fake nodes."""

import datetime
import inspect
import json
import os
import stat

import pytest
from cluster_helpers import build_cluster
from fakes_cluster import FakeNode, FakeNodeClient

from jqueue import constants, errors
from jqueue.cluster import admin, membership, noderpc, tls
from jqueue.cluster.rpc import client as rpc_client


def tls_file(state_dir, name):
    return os.path.join(str(state_dir), constants.TLS_DIR, name)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# Creating and joining


def test_init_cluster_writes_the_layout(tmp_path):
    """cluster init writes the CA, the node's key and cert, cluster.json and node.json."""
    state = str(tmp_path / "n1")
    config = admin.init_cluster(state, "prod", "n1", "10.0.0.1:1811", min_acks=0)
    assert (config.name, config.master, config.epoch, config.version) == ("prod", "n1", 1, 1)
    assert config.nodes == {"n1": {"address": "10.0.0.1:1811", "candidate": True}}
    assert membership.load_config(state).to_dict() == config.to_dict()
    node = membership.NodeState.load(state)
    assert (node.name, node.epoch, node.master) == ("n1", 1, "n1")
    for name in (constants.CA_KEY_FILE, constants.NODE_KEY_FILE):
        assert mode(tls_file(state, name)) == 0o600
    creds = admin.credentials(state)
    assert creds.node_name == "n1" and tls.is_ca(creds.ca_cert)


def test_init_cluster_refuses_to_run_twice(tmp_path):
    """A second init (or an init over a node key) is refused and changes nothing."""
    state = str(tmp_path / "n1")
    admin.init_cluster(state, "prod", "n1", "10.0.0.1:1811")
    before = open(tls_file(state, constants.CA_CERT_FILE), "rb").read()
    with pytest.raises(errors.ConfigurationError, match="cluster.json exists"):
        admin.init_cluster(state, "other", "n1", "10.0.0.1:1811")
    assert open(tls_file(state, constants.CA_CERT_FILE), "rb").read() == before
    other = str(tmp_path / "n2")
    admin.init_node(other, "n2")
    with pytest.raises(errors.ConfigurationError, match="node.key exists"):
        admin.init_cluster(other, "prod", "n2", "10.0.0.2:1811")


def test_init_cluster_refuses_bad_names_before_writing(tmp_path):
    """An invalid node name or address is refused before any file is written."""
    for name, address in (("../x", "10.0.0.1:1811"), ("n1", "nowhere")):
        with pytest.raises(errors.ConfigurationError):
            admin.init_cluster(str(tmp_path / "s"), "prod", name, address)
    assert not os.path.exists(tmp_path / "s")


def _join(tmp_path, name="n2"):
    """A cluster n1 and a node name joined through CSR, signature and bundle file."""
    master = str(tmp_path / "n1")
    config = admin.init_cluster(master, "prod", "n1", "10.0.0.1:1811")
    state = str(tmp_path / name)
    csr_path = admin.init_node(state, name)
    cert = admin.sign_node(master, name, open(csr_path, "rb").read())
    config = config.changed(nodes=dict(config.nodes, **{
        name: {"address": "10.0.0.2:1811", "candidate": True}}))
    bundle_path = str(tmp_path / "bundle.json")
    admin.write_bundle(bundle_path, admin.make_bundle(config, master, cert))
    return master, state, bundle_path


def test_node_joins_through_csr_and_bundle(tmp_path):
    """init_node, sign_node, a bundle file and join_node make a working node; no key moves."""
    master, state, bundle_path = _join(tmp_path)
    bundle = admin.read_bundle(bundle_path)
    assert mode(bundle_path) == 0o644 and "PRIVATE" not in open(bundle_path).read()
    key_before = open(tls_file(state, constants.NODE_KEY_FILE), "rb").read()
    config = admin.join_node(state, bundle)
    assert open(tls_file(state, constants.NODE_KEY_FILE), "rb").read() == key_before
    assert set(config.nodes) == {"n1", "n2"} and config.master == "n1"
    creds = admin.credentials(state)
    assert creds.node_name == "n2"
    assert tls.verify_signed_by(creds.cert, admin.credentials(master).ca_cert)
    node = membership.NodeState.load(state)
    assert (node.name, node.epoch, node.master) == ("n2", config.epoch, "n1")
    with pytest.raises(errors.ConfigurationError, match="already joined"):
        admin.init_node(state, "n2")


def test_init_node_keeps_its_key_and_rewrites_the_csr(tmp_path):
    """Running node init again keeps the key and writes a CSR for the same key."""
    state = str(tmp_path / "n2")
    path = admin.init_node(state, "n2")
    key = open(tls_file(state, constants.NODE_KEY_FILE), "rb").read()
    assert mode(tls_file(state, constants.NODE_KEY_FILE)) == 0o600
    assert admin.init_node(state, "n2-new") == path
    assert open(tls_file(state, constants.NODE_KEY_FILE), "rb").read() == key
    csr = tls.load_csr_pem(open(path, "rb").read())
    assert tls.node_name_of(csr) == "n2-new"
    assert csr.public_key() == tls.load_key_pem(key).public_key()


def test_sign_node_needs_the_ca_key(tmp_path):
    """Signing on a node without tls/ca.key names the missing file."""
    _master, state, _bundle = _join(tmp_path)
    with pytest.raises(errors.ConfigurationError, match="ca.key missing"):
        admin.sign_node(state, "n3", open(tls_file(state, constants.NODE_CSR_FILE),
                                                 "rb").read())


def _bundle_with(bundle_path, **changes):
    bundle = json.load(open(bundle_path))
    bundle.update(changes)
    return bundle


def test_join_refuses_a_certificate_from_another_ca(tmp_path):
    """A certificate not signed by the bundle's CA is refused, nothing written."""
    _master, state, bundle_path = _join(tmp_path)
    other = admin.init_cluster(str(tmp_path / "x"), "other", "x1", "10.0.0.9:1811")
    assert other.name == "other"
    foreign_ca = open(tls_file(tmp_path / "x", constants.CA_CERT_FILE)).read()
    with pytest.raises(errors.TlsError, match="not signed by the bundle's CA"):
        admin.join_node(state, _bundle_with(bundle_path, ca=foreign_ca))
    assert not os.path.exists(tls_file(state, constants.NODE_CERT_FILE))
    assert membership.load_config(state) is None


def test_join_refuses_a_certificate_for_another_key(tmp_path):
    """A certificate made for another node's key is refused."""
    master, state, bundle_path = _join(tmp_path)
    stranger = admin.init_node(str(tmp_path / "s"), "n2")
    cert = admin.sign_node(master, "n2", open(stranger, "rb").read())
    with pytest.raises(errors.TlsError, match="another key"):
        admin.join_node(state, _bundle_with(bundle_path, cert=cert))
    assert membership.load_config(state) is None


def test_join_refuses_a_node_not_in_the_cluster(tmp_path):
    """A certificate naming a node absent from the bundle's configuration is refused."""
    master, state, bundle_path = _join(tmp_path)
    cert = admin.sign_node(master, "n7", open(tls_file(state, constants.NODE_CSR_FILE),
                                                   "rb").read())
    with pytest.raises(errors.TlsError, match="'n7', not a node of cluster prod"):
        admin.join_node(state, _bundle_with(bundle_path, cert=cert))
    assert not os.path.exists(tls_file(state, constants.CA_CERT_FILE))


def test_join_refuses_an_expired_certificate(tmp_path):
    """An expired certificate is refused even if everything else matches."""
    master, state, bundle_path = _join(tmp_path)
    ca_key = tls.load_key_pem(open(tls_file(master, constants.CA_KEY_FILE), "rb").read())
    ca_cert = tls.load_cert_pem(open(tls_file(master, constants.CA_CERT_FILE), "rb").read())
    csr = tls.load_csr_pem(open(tls_file(state, constants.NODE_CSR_FILE), "rb").read())
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    cert = tls.cert_to_pem(tls.sign_csr(ca_key, ca_cert, csr, "n2", days=1, not_before=old))
    with pytest.raises(errors.TlsError, match="expired"):
        admin.join_node(state, _bundle_with(bundle_path, cert=cert.decode()))


@pytest.mark.parametrize("change, words", [
    ({"format": 2}, "not a jqueue node bundle"), ({"cert": None}, "'cert' missing"),
    ({"ca": "junk"}, "invalid PEM certificate"), ({"cluster": {"name": "x"}}, "invalid cluster"),
])
def test_malformed_bundles_are_refused(tmp_path, change, words):
    """read_bundle names the file and what is wrong with it."""
    _master, _state, bundle_path = _join(tmp_path)
    path = str(tmp_path / "bad.json")
    with open(path, "w") as stream:
        json.dump(_bundle_with(bundle_path, **change), stream)
    with pytest.raises(errors.ConfigurationError, match=words):
        admin.read_bundle(path)


def test_who_is_master_follows_the_newest_epoch(tmp_path):
    """The master is the configuration's, unless the node state knows a newer epoch."""
    test_cluster = build_cluster(tmp_path, count=2)
    state_dir = test_cluster.state_dirs["node2"]
    address = test_cluster.config.address("node1")
    assert admin.who_is_master(state_dir) == ("node1", address, 1)
    state = membership.NodeState.load(state_dir)
    state.observe(3, "node2")
    assert admin.who_is_master(state_dir) == (
        "node2", test_cluster.config.address("node2"), 3)


def test_node_clients_call_every_other_node(tmp_path):
    """node_clients names every node but this one, at its configured address."""
    test_cluster = build_cluster(tmp_path, count=3)
    clients = admin.node_clients(test_cluster.state_dirs["node2"], test_cluster.config)
    assert sorted(clients) == ["node1", "node3"]
    assert clients["node3"].address == test_cluster.config.address("node3")


# Failover with fake nodes


def _failover_setup(tmp_path, positions=None, min_acks=None, regular=("n1",)):
    """State of candidate c1 (cluster m, c1, c2, n1) and fake nodes answering for all."""
    nodes = {"m": {"address": "127.0.0.1:7000", "candidate": True},
             "c1": {"address": "127.0.0.1:7001", "candidate": True},
             "c2": {"address": "127.0.0.1:7002", "candidate": True}}
    for name in regular:
        nodes[name] = {"address": "127.0.0.1:7100", "candidate": False}
    config = membership.ClusterConfig("test", "m", nodes, min_acks=min_acks)
    state_dir = str(tmp_path / "c1")
    os.makedirs(state_dir)
    membership.save_config(state_dir, config)
    membership.NodeState(state_dir, "c1", epoch=1, master="m").save()
    positions = positions or {"c1": [1, 1, 5], "c2": [1, 1, 5]}
    fakes = {name: FakeNode(str(tmp_path / "fake" / name), name, position=positions.get(name),
                            role=config.role(name)) for name in nodes}
    clients = {name: FakeNodeClient("c1", node) for name, node in fakes.items()}
    return state_dir, config, fakes, clients


def test_failover_wins_and_pushes_the_new_configuration(tmp_path):
    """A won election makes c1 master of epoch 2 everywhere and tells m to step down."""
    state_dir, config, fakes, clients = _failover_setup(tmp_path)
    result = admin.master_failover(state_dir, clients=clients)
    assert result["epoch"] == 2 and result["previous_master"] == "m"
    assert result["votes"] == ["c1", "c2", "m", "n1"] and result["stepped_down"]
    assert not result["refused"] and not result["unreachable"] and not result["update_failed"]
    saved = membership.load_config(state_dir)
    assert (saved.master, saved.epoch, saved.version) == ("c1", 2, config.version + 1)
    for fake in fakes.values():
        assert fake.config == saved.to_dict()
    assert fakes["m"].methods()[-1] == "step_down"


def test_failover_refused_when_no_election_can_be_won(tmp_path):
    """With c2 ahead of c1 the election cannot be won: no vote asked, nothing saved."""
    state_dir, config, fakes, clients = _failover_setup(
        tmp_path, positions={"c1": [1, 1, 5], "c2": [1, 1, 9]})
    with pytest.raises(errors.JobQueueError, match="c1 cannot be elected.*ahead of this one: c2"):
        admin.master_failover(state_dir, clients=clients)
    assert membership.load_config(state_dir).to_dict() == config.to_dict()
    assert all(fake.methods() == ["node_info"] for fake in fakes.values())


def test_failover_lost_election_saves_nothing(tmp_path):
    """Votes refused at voting time lose the election: no configuration saved or pushed."""
    state_dir, config, fakes, clients = _failover_setup(tmp_path)
    fakes["c2"].vote_refusal = "already promised epoch 2 to c9"
    fakes["n1"].down = True
    with pytest.raises(errors.JobQueueError) as caught:
        admin.master_failover(state_dir, clients=clients)
    message = errors.error_message(caught.value)
    assert "Granted: c1, m" in message and "c2 (already promised" in message
    assert "unreachable: n1" in message and "including 2 of the master candidates" in message
    assert membership.load_config(state_dir).to_dict() == config.to_dict()
    assert not any("cluster_config_update" in fake.methods() for fake in fakes.values())


def test_best_effort_cluster_needs_no_voting(tmp_path):
    """With min_acks 0 no election can be won: the error points to --no-voting."""
    state_dir, config, fakes, clients = _failover_setup(tmp_path, min_acks=0)
    with pytest.raises(errors.JobQueueError, match="--no-voting"):
        admin.master_failover(state_dir, clients=clients)
    assert membership.load_config(state_dir).to_dict() == config.to_dict()


def test_no_voting_aborts_without_confirmation(tmp_path):
    """--no-voting with a refused confirmation (or none) stops before any vote."""
    state_dir, config, fakes, clients = _failover_setup(tmp_path, min_acks=0)
    asked = []
    with pytest.raises(errors.OpPrereqError, match="aborted"):
        admin.master_failover(state_dir, voting=False, clients=clients,
                                   confirm=lambda message: asked.append(message) or False)
    assert "without voting" in asked[0] and "lost" in asked[0]
    with pytest.raises(errors.OpPrereqError, match="aborted"):
        admin.master_failover(state_dir, voting=False, clients=clients)
    assert all(fake.methods() == ["node_info", "node_info"] for fake in fakes.values())
    assert membership.load_config(state_dir).to_dict() == config.to_dict()


def test_no_voting_confirmed_proceeds_without_the_old_master(tmp_path):
    """--no-voting confirmed takes over with whatever votes it gets, m unreachable."""
    state_dir, _config, fakes, clients = _failover_setup(tmp_path, min_acks=0)
    fakes["m"].down = True
    result = admin.master_failover(state_dir, voting=False, clients=clients,
                                        confirm=lambda message: "does NOT answer" in message)
    assert result["epoch"] == 2 and result["unreachable"] == ["m"]
    assert result["update_failed"].keys() == {"m"} and not result["stepped_down"]
    assert membership.load_config(state_dir).master == "c1"
    assert fakes["c2"].state.epoch == 2 and fakes["c2"].state.master == "c1"


def test_failover_is_refused_on_the_master_and_on_plain_nodes(tmp_path):
    """Only a master candidate other than the master can take over."""
    state_dir, config, _fakes, clients = _failover_setup(tmp_path)
    for name, words in (("m", "already the master"), ("n1", "not a master candidate")):
        membership.NodeState(state_dir, name, epoch=1, master="m").save()
        with pytest.raises(errors.OpPrereqError, match=words):
            admin.master_failover(state_dir, clients=clients)


def test_failover_needs_the_local_noded(tmp_path):
    """Without an answer from this node's own jq-noded, nothing is asked of anyone."""
    state_dir, _config, fakes, clients = _failover_setup(tmp_path)
    fakes["c1"].down = True
    with pytest.raises(errors.OpPrereqError, match="local jq-noded does not answer"):
        admin.master_failover(state_dir, clients=clients)
    assert not any("vote" in fake.methods() for fake in fakes.values())


def test_fakes_match_the_real_interfaces(tmp_path):
    """FakeNodeClient has RpcClient's call signatures; FakeNode answers node_info's keys."""
    for method in ("call", "call_encoded", "close"):
        assert (inspect.signature(getattr(FakeNodeClient, method))
                == inspect.signature(getattr(rpc_client.RpcClient, method))), method
    test_cluster = build_cluster(tmp_path, count=1)
    real = noderpc.Node.load(test_cluster.state_dirs["node1"]).node_info("node1", {})
    fake = FakeNode(str(tmp_path / "f"), "f").handle("x", "node_info", {})
    assert set(real) == set(fake)
