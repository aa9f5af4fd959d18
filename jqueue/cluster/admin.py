"""Operator operations on a node's state directory: create, join and fail over a cluster.

These are the library side of ``jqctl cluster init``, ``jqctl node init|add|join`` and
``jqctl master-failover``; they need no daemon except where noted and no Twisted.

Joining: CSR and bundle, so that no private key ever leaves its node. The new node makes
its own key and a certificate signing request (``init_node``); the operator copies the
CSR (public) to the node holding the cluster CA key, which signs it under the name the
operator gives (``sign_node``: the signer, not the CSR, decides the name) and writes a
bundle of public material only: the cluster configuration, the CA certificate and the
node's certificate (``make_bundle``/``write_bundle``). The operator copies the bundle
back and ``join_node`` installs it after checking that the certificate comes from the
bundle's CA, names a node of the cluster and belongs to the key made on this node. The
copies go through the operator's own channel (ssh, a config manager), so no network
endpoint ever hands out certificates to whoever asks, and a stolen bundle is useless
without the key that never left the new node.

Failover (``master_failover``): run on a master candidate while its jq-noded runs. It
learns every node's epoch, asks every node for its vote in a new epoch (see
jqueue.cluster.membership for why a won election keeps every acknowledged job), then makes
itself the master in a new configuration version, pushes that configuration to every node
it reaches, and tells the old master to step down. jq-masterd is then started on this
node.
"""

import logging
import os
import time

from cryptography.hazmat.primitives import serialization

from jqueue import constants, errors, serializer
from jqueue.cluster import membership, tls
from jqueue.cluster.rpc import client as rpc_client
from jqueue.store import fsutil

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
_DIR_MODE = 0o750
_NOT_JOINED = "not part of a cluster: run jqctl cluster init or jqctl node join"


# Paths


def tls_dir(state_dir):
    return os.path.join(state_dir, constants.TLS_DIR)


def tls_path(state_dir, name):
    """The path of a file of <state>/tls (constants.CA_CERT_FILE, NODE_KEY_FILE, ...)."""
    return os.path.join(state_dir, constants.TLS_DIR, name)


def _make_dirs(state_dir):
    for path in (state_dir, tls_dir(state_dir)):
        fsutil.makedirs(path, _DIR_MODE)


def _read_text(path):
    return fsutil.read_file(path).decode("ascii")


def _pem_text(data):
    return data.decode("ascii") if isinstance(data, bytes) else str(data)


# Creating a cluster


def init_cluster(state_dir, cluster_name, node_name, address, min_acks=None,
                 ack_timeout=10.0):
    """Create a cluster whose first node (and master) is this one; its ClusterConfig.

    Writes tls/ca.key and ca.crt (the new cluster CA), the node's key and certificate,
    cluster.json (epoch 1, version 1, this node master and candidate) and node.json.
    ConfigurationError if the directory already holds a cluster or a node key.
    """
    config = membership.ClusterConfig(cluster_name, node_name,
                                   {node_name: {"address": address, "candidate": True}},
                                   epoch=1, version=1, min_acks=min_acks,
                                   ack_timeout=ack_timeout)
    for path in (membership.config_path(state_dir),
                 tls_path(state_dir, constants.NODE_KEY_FILE)):
        if os.path.exists(path):
            raise errors.ConfigurationError("%s exists: this node already belongs to a "
                                            "cluster or has a key of its own" % path)
    try:
        ca_key, ca_cert = tls.create_ca(cluster_name)
        key, cert = tls.issue_node_cert(ca_key, ca_cert, node_name)
    except errors.ParameterError as err:
        raise errors.ConfigurationError(errors.error_message(err)) from None
    _make_dirs(state_dir)
    tls.write_pem(tls_path(state_dir, constants.CA_KEY_FILE), tls.key_to_pem(ca_key), True)
    tls.write_pem(tls_path(state_dir, constants.CA_CERT_FILE), tls.cert_to_pem(ca_cert), False)
    tls.write_pem(tls_path(state_dir, constants.NODE_KEY_FILE), tls.key_to_pem(key), True)
    tls.write_pem(tls_path(state_dir, constants.NODE_CERT_FILE), tls.cert_to_pem(cert), False)
    membership.NodeState(state_dir, node_name, epoch=1, master=node_name).save()
    membership.save_config(state_dir, config)
    logger.info("created cluster %s with master %s in %s", cluster_name, node_name, state_dir)
    return config


# Joining: key and CSR on the new node, signature on the CA's node, bundle back


def init_node(state_dir, node_name):
    """Make this node's key (kept if it exists) and a CSR for node_name; the CSR's path.

    ConfigurationError if the node already joined a cluster (it has a certificate).
    """
    cert_path = tls_path(state_dir, constants.NODE_CERT_FILE)
    if os.path.exists(cert_path):
        raise errors.ConfigurationError("%s exists: this node already joined a cluster" %
                                        cert_path)
    membership._check_name(node_name)
    _make_dirs(state_dir)
    key_path = tls_path(state_dir, constants.NODE_KEY_FILE)
    if os.path.exists(key_path):
        key = tls.load_key_pem(fsutil.read_file(key_path))
    else:
        key = tls.generate_key()
        tls.write_pem(key_path, tls.key_to_pem(key), True)
    try:
        csr = tls.create_csr(key, node_name)
    except errors.ParameterError as err:
        raise errors.ConfigurationError(errors.error_message(err)) from None
    csr_path = tls_path(state_dir, constants.NODE_CSR_FILE)
    tls.write_pem(csr_path, tls.csr_to_pem(csr), False)
    return csr_path


def sign_node(state_dir, node_name, csr_pem):
    """Sign a node's CSR with the cluster CA of this node, naming node_name; the cert PEM."""
    ca_key_path = tls_path(state_dir, constants.CA_KEY_FILE)
    if not os.path.exists(ca_key_path):
        raise errors.ConfigurationError(
            "%s missing: sign on the node holding the cluster CA key (where jqctl cluster "
            "init ran)" % ca_key_path)
    ca_key = tls.load_key_pem(fsutil.read_file(ca_key_path))
    ca_cert = tls.load_cert_pem(fsutil.read_file(tls_path(state_dir, constants.CA_CERT_FILE)))
    csr = tls.load_csr_pem(csr_pem)
    try:
        cert = tls.sign_csr(ca_key, ca_cert, csr, node_name)
    except errors.ParameterError as err:
        raise errors.ConfigurationError(errors.error_message(err)) from None
    return _pem_text(tls.cert_to_pem(cert))


def make_bundle(config, state_dir, cert_pem):
    """The bundle for a new node: configuration, CA certificate, its certificate (public)."""
    ca_pem = _read_text(tls_path(state_dir, constants.CA_CERT_FILE))
    return {"format": BUNDLE_FORMAT, "cluster": config.to_dict(), "ca": ca_pem,
            "cert": _pem_text(cert_pem)}


def check_bundle(bundle, source="bundle"):
    """(config, ca_cert, cert) of a bundle; ConfigurationError saying what is wrong."""
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise errors.ConfigurationError("%s: not a jqueue node bundle of format %d" % (
            source, BUNDLE_FORMAT))
    for key, kind in (("cluster", dict), ("ca", str), ("cert", str)):
        if not isinstance(bundle.get(key), kind):
            raise errors.ConfigurationError("%s: '%s' missing or not a %s" % (
                source, key, kind.__name__))
    try:
        config = membership.ClusterConfig.from_dict(bundle["cluster"])
        ca_cert = tls.load_cert_pem(bundle["ca"])
        cert = tls.load_cert_pem(bundle["cert"])
    except errors.GenericError as err:
        raise errors.ConfigurationError("%s: %s" % (source, errors.error_message(err))) from None
    return config, ca_cert, cert


def write_bundle(path, bundle):
    """Write a bundle as a JSON file, mode 0644 (it holds no secret)."""
    check_bundle(bundle)
    fsutil.write_file(path, serializer.dumps_pretty(bundle).encode("utf-8"), 0o644)
    os.chmod(path, 0o644)


def read_bundle(path):
    """Read and check a bundle file; ConfigurationError naming the file if unusable."""
    try:
        bundle = serializer.loads(fsutil.read_file(path))
    except OSError as err:
        raise errors.ConfigurationError("bundle %s: %s" % (path, err.strerror)) from None
    except errors.ParseError as err:
        raise errors.ConfigurationError("bundle %s: %s" % (path, errors.error_message(err))
                                        ) from None
    check_bundle(bundle, "bundle %s" % path)
    return bundle


def join_node(state_dir, bundle):
    """Install a bundle on the node whose key signed the CSR; the cluster's ClusterConfig.

    Refused (ConfigurationError or TlsError, nothing written) if the node already joined,
    has no key, or if the certificate is not from the bundle's CA, names no node of the
    bundle's cluster, belongs to another key or has expired.
    """
    config, ca_cert, cert = check_bundle(bundle)
    for path in (membership.config_path(state_dir), tls_path(state_dir, constants.NODE_CERT_FILE)):
        if os.path.exists(path):
            raise errors.ConfigurationError("%s exists: this node already joined a cluster" %
                                            path)
    name = _check_joining_cert(state_dir, config, ca_cert, cert)
    tls.write_pem(tls_path(state_dir, constants.CA_CERT_FILE), tls.cert_to_pem(ca_cert), False)
    tls.write_pem(tls_path(state_dir, constants.NODE_CERT_FILE), tls.cert_to_pem(cert), False)
    membership.NodeState(state_dir, name, epoch=config.epoch, master=config.master).save()
    membership.save_config(state_dir, config)
    logger.info("node %s joined cluster %s (master %s, epoch %d)", name, config.name,
                config.master, config.epoch)
    return config


def _check_joining_cert(state_dir, config, ca_cert, cert):
    key_path = tls_path(state_dir, constants.NODE_KEY_FILE)
    if not os.path.exists(key_path):
        raise errors.ConfigurationError("%s missing: run jqctl node init on this node first"
                                        % key_path)
    key = tls.load_key_pem(fsutil.read_file(key_path))
    if not tls.is_ca(ca_cert):
        raise errors.TlsError("the bundle's CA certificate is not a CA")
    if not tls.verify_signed_by(cert, ca_cert):
        raise errors.TlsError("the bundle's node certificate is not signed by the bundle's "
                              "CA (cluster %s)" % config.name)
    name = tls.node_name_of(cert)
    if name is None or name not in config.nodes:
        raise errors.TlsError("the bundle's certificate names %r, not a node of cluster %s "
                              "(nodes: %s)" % (name, config.name, ", ".join(sorted(config.nodes))))
    if _public_der(key) != _public_der(cert):
        raise errors.TlsError("the bundle's certificate is for another key than %s (was jqctl "
                              "node init run again after the CSR was copied?)" % key_path)
    problem = tls.validity_problem(cert)
    if problem is not None and problem.startswith("expired"):
        raise errors.TlsError("the bundle's certificate %s" % problem)
    return name


def _public_der(key_or_cert):
    return key_or_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# Talking to nodes


def credentials(state_dir):
    """This node's TLS credentials (<state>/tls), checked."""
    return tls.Credentials.from_dir(tls_dir(state_dir))


def load_cluster(state_dir):
    """(ClusterConfig, NodeState) of a node; ConfigurationError if it is in no cluster."""
    config = membership.load_config(state_dir)
    if config is None:
        raise errors.ConfigurationError("%s (%s missing)" % (
            _NOT_JOINED, membership.config_path(state_dir)))
    return config, membership.NodeState.load(state_dir)


def node_client(state_dir, config, name, timeout=10.0, context=None):
    """An RpcClient calling node name at its address in config."""
    if name not in config.nodes:
        raise errors.ParameterError("%s is not a node of cluster %s" % (name, config.name))
    if context is None:
        context = credentials(state_dir).client_context()
    return rpc_client.RpcClient(name, config.address(name), context, timeout=timeout)


def node_clients(state_dir, config, names=None, timeout=10.0):
    """{name: RpcClient} for names (default: every node but this one); one ssl context."""
    creds = credentials(state_dir)
    if names is None:
        names = [n for n in sorted(config.nodes) if n != creds.node_name]
    context = creds.client_context()
    return {name: node_client(state_dir, config, name, timeout, context) for name in names}


def who_is_master(state_dir):
    """(name, address, epoch) of the master as this node knows it (the newest epoch).

    The node state may know a newer epoch than the configuration (it voted, or a newer
    master replicated to it); address is None if the master is not in the configuration.
    """
    config, state = load_cluster(state_dir)
    if state.epoch > config.epoch and state.master:
        name, epoch = state.master, state.epoch
    else:
        name, epoch = config.master, config.epoch
    address = config.address(name) if name in config.nodes else None
    return name, address, epoch


def learn_master(state_dir, timeout=2.0):
    """(name, address, epoch) of the master of the newest epoch this node can learn of.

    Starts from its own files (who_is_master) and asks every node it can reach
    (node_info, timeout seconds) which epoch and master it knows: a failover this node
    missed is found that way. Nothing is recorded (a node records a newer epoch only
    with its configuration from its master, or by voting).
    """
    name, address, epoch = who_is_master(state_dir)
    try:
        config, _ = load_cluster(state_dir)
        clients = node_clients(state_dir, config, sorted(config.nodes), timeout)
    except (errors.GenericError, OSError):
        return name, address, epoch
    try:
        answers = rpc_client.call_many(list(clients.values()), "node_info", {}, timeout)
    finally:
        for client in clients.values():
            client.close()
    for answer in answers.values():
        if not isinstance(answer, dict) or not isinstance(answer.get("epoch"), int):
            continue
        if answer["epoch"] > epoch and isinstance(answer.get("master"), str):
            name, epoch = answer["master"], answer["epoch"]
            address = _address_in(answer.get("config"), name) or (
                config.address(name) if name in config.nodes else None)
    return name, address, epoch


def _address_in(config_data, name):
    try:
        return config_data["nodes"][name]["address"]
    except (KeyError, TypeError):
        return None


def node_view(state_dir, timeout=3.0):
    """What this node knows without jq-masterd: (its ClusterConfig, one row per node).

    Each row has the keys of jq-masterd's ListNodes (name, address, role, reachable,
    in_sync, position, last_error, epoch, config_version, clock_skew), from the
    configuration this node holds and the node's own node_info answer; in_sync is unknown
    (None) here, clock_skew at least what it is (its clock against this process's, over
    the time the calls took).
    """
    config, _ = load_cluster(state_dir)
    clients = node_clients(state_dir, config, sorted(config.nodes), timeout)
    try:
        sent = time.time()
        answers = rpc_client.call_many(list(clients.values()), "node_info", {}, timeout)
        received = time.time()
    finally:
        for client in clients.values():
            client.close()
    rows = []
    for name in sorted(config.nodes):
        answer = answers.get(name)
        row = {"name": name, "address": config.address(name), "role": config.role(name),
               "reachable": isinstance(answer, dict), "in_sync": None, "position": None,
               "last_error": None, "epoch": None, "config_version": None, "clock_skew": None}
        if isinstance(answer, dict):
            row.update(position=answer.get("position"), epoch=answer.get("epoch"),
                       config_version=answer.get("config_version"),
                       clock_skew=rpc_client.clock_skew(answer, sent, received))
        else:
            row["last_error"] = _reason(answer) if answer is not None else "no client"
        rows.append(row)
    return config, rows


# Failover


def check_failover(state_dir):
    """OpPrereqError (or ConfigurationError) unless this node could take over: it is in a
    cluster, not its master, and a master candidate. Changes nothing, asks no node."""
    config, state = load_cluster(state_dir)
    _check_can_take_over(config, state.name)
    return config


def master_failover(state_dir, voting=True, timeout=10.0, confirm=None, clients=None):
    """Make this master candidate the master of a new epoch; a report (dict).

    The local jq-noded must run: it holds this node's replica and votes for it. Steps:
    every node's epoch and replica position (node_info); with voting, a check that an
    election can be won at all (else nothing is asked); votes for epoch max(known) + 1
    from every node; without enough votes (membership.election_won) JobQueueError and no
    configuration changes. Without voting (``voting=False``), ``confirm(message)`` must
    return True before anything is asked (OpPrereqError "aborted" otherwise, or if
    confirm is None): the failover then goes on with whatever votes it gets, and may lose
    acknowledged jobs that only the old master and unreachable candidates hold, or, if
    the old master still runs unreachable, let it go on alone until it learns the new
    epoch. Then the new configuration (this node master, new epoch, version + 1) is saved
    and pushed to every node answering (the local jq-noded then releases the queue), and
    the old master is told to step down (best effort).

    Returns {"epoch", "votes" (nodes granting), "refused" ({node: reason}), "unreachable"
    ([nodes]), "previous_master", "updated" (nodes taking the configuration),
    "update_failed" ({node: reason}), "stepped_down" (bool)}. clients ({name: client with
    call(method, body)}, every node including this one) replaces node_clients (tests).
    """
    config, state = load_cluster(state_dir)
    me = state.name
    _check_can_take_over(config, me)
    own = clients is None
    if own:
        clients = node_clients(state_dir, config, sorted(config.nodes), timeout)
    try:
        return _failover(state_dir, config, state, me, clients, voting, timeout, confirm)
    finally:
        if own:
            for client in clients.values():
                client.close()


def _check_can_take_over(config, me):
    if me not in config.nodes:
        raise errors.OpPrereqError("this node (%s) is not in the cluster configuration" % me)
    if config.master == me:
        raise errors.OpPrereqError("%s is already the master (epoch %d)" % (me, config.epoch))
    if not config.nodes[me]["candidate"]:
        raise errors.OpPrereqError("%s is not a master candidate: only a candidate holds a "
                                   "replica of the queue and can take over" % me)


def _failover(state_dir, config, state, me, clients, voting, timeout, confirm):
    infos = _node_infos(clients, me, timeout)
    epoch = max([config.epoch, state.epoch] + [info["epoch"] for info in infos.values()]) + 1
    position = infos[me].get("position") or [0, 0, 0]
    if voting:
        _check_electable(config, me, infos, position)
    elif confirm is None or not confirm(_no_voting_warning(config, me, infos, epoch)):
        raise errors.OpPrereqError("aborted: failover without voting not confirmed")
    votes, refused, unreachable = _ask_votes(clients, me, epoch, position, timeout)
    if voting and not membership.election_won(config, me, votes):
        raise errors.JobQueueError(_lost_message(config, me, epoch, votes, refused,
                                                 unreachable))
    new_config = config.changed(master=me, epoch=epoch)
    membership.save_config(state_dir, new_config)
    updated, update_failed = _push_config(clients, new_config, timeout)
    stepped_down = _step_down(clients, config.master, epoch, me)
    logger.info("%s is the master of epoch %d (votes: %s)", me, epoch, ", ".join(votes))
    return {"epoch": epoch, "votes": votes, "refused": refused, "unreachable": unreachable,
            "previous_master": config.master, "updated": updated,
            "update_failed": update_failed, "stepped_down": stepped_down}


def _node_infos(clients, me, timeout):
    """{node: node_info} of the nodes answering; OpPrereqError if the local noded does not."""
    results = rpc_client.call_many(list(clients.values()), "node_info", {}, timeout)
    mine = results.get(me)
    if isinstance(mine, Exception) or mine is None:
        raise errors.OpPrereqError("the local jq-noded does not answer (%s): start it; it "
                                   "holds this node's replica and votes for it" % (
                                       errors.error_message(mine) if mine else "no client"))
    infos = {}
    for name, result in results.items():
        if isinstance(result, dict) and isinstance(result.get("epoch"), int):
            infos[name] = result
        else:
            logger.warning("node %s: no node information: %s", name, _reason(result))
    return infos


def _check_electable(config, me, infos, position):
    """Refuse before any vote if the nodes answering cannot elect this node."""
    mine = membership.position_key(position)
    likely = {name for name, info in infos.items()
              if info.get("position") is None or membership.position_key(info["position"]) <= mine}
    if membership.election_won(config, me, likely):
        return
    ahead = sorted(n for n, i in infos.items() if n not in likely)
    down = sorted(set(config.nodes) - set(infos))
    raise errors.JobQueueError(
        "%s cannot be elected, nothing was changed: %d of %d nodes answer (not answering: %s; "
        "replica ahead of this one: %s); %s%s" % (
            me, len(infos), len(config.nodes), ", ".join(down) or "none",
            ", ".join(ahead) or "none", _needed(config),
            _best_effort_hint(config)))


def _needed(config):
    return "an election needs votes from a majority of the %d nodes (%d) including %d of the " \
        "master candidates" % (len(config.nodes), len(config.nodes) // 2 + 1,
                               membership.candidate_votes_needed(config))


def _best_effort_hint(config):
    if config.effective_min_acks() == 0:
        return ("; the cluster acknowledges changes best effort (min_acks 0), so no election "
                "can promise to keep every job: use --no-voting")
    return ""


def _no_voting_warning(config, me, infos, epoch):
    down = sorted(set(config.nodes) - set(infos))
    master = "answers" if config.master in infos else "does NOT answer"
    return ("Failover without voting makes %s the master of epoch %d whatever the other nodes "
            "say. Jobs acknowledged by the old master but missing from this replica are lost; "
            "an old master that still runs unreachable goes on until it learns the new epoch. "
            "The old master %s %s; nodes not answering: %s. Continue?" % (
                me, epoch, config.master, master, ", ".join(down) or "none"))


def _ask_votes(clients, me, epoch, position, timeout):
    body = {"epoch": epoch, "candidate": me, "position": list(position)}
    results = rpc_client.call_many(list(clients.values()), "vote", body, timeout)
    votes, refused, unreachable = [], {}, []
    for name, result in sorted(results.items()):
        if isinstance(result, errors.RemoteError):
            unreachable.append(name)
        elif isinstance(result, dict) and result.get("granted") is True:
            votes.append(name)
        elif isinstance(result, dict):
            refused[name] = str(result.get("reason"))
        else:
            refused[name] = _reason(result)
    return votes, refused, unreachable


def _lost_message(config, me, epoch, votes, refused, unreachable):
    return ("%s lost the election for epoch %d; the configuration is unchanged (the votes "
            "given only fence the old epoch). Granted: %s; refused: %s; unreachable: %s; %s%s"
            % (me, epoch, ", ".join(votes) or "none",
               "; ".join("%s (%s)" % item for item in sorted(refused.items())) or "none",
               ", ".join(unreachable) or "none", _needed(config), _best_effort_hint(config)))


def _push_config(clients, new_config, timeout):
    results = rpc_client.call_many(list(clients.values()), "cluster_config_update",
                                   {"config": new_config.to_dict()}, timeout)
    updated, failed = [], {}
    for name, result in sorted(results.items()):
        if isinstance(result, dict) and result.get("version") == new_config.version:
            updated.append(name)
        else:
            failed[name] = _reason(result)
            logger.warning("node %s did not take configuration version %d: %s", name,
                           new_config.version, failed[name])
    return updated, failed


def _step_down(clients, old_master, epoch, me):
    client = clients.get(old_master)
    if client is None:
        return False
    try:
        client.call("step_down", {"epoch": epoch, "master": me})
    except errors.GenericError as err:
        logger.warning("old master %s not told to step down: %s", old_master,
                       errors.error_message(err))
        return False
    return True


def _reason(result):
    if isinstance(result, Exception):
        return errors.error_message(result)
    return "unexpected answer %r" % (result,)
