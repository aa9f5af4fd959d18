"""Tests of jqueue.cluster.pusher: the master retries the configuration push until it is taken."""

import threading
import time

from fakes_cluster import ScriptedNodes

from jqueue import errors
from jqueue.cluster import membership, pusher


def _config(version=3, epoch=2):
    nodes = {name: {"address": "127.0.0.1:%d" % (7000 + i), "candidate": True}
             for i, name in enumerate(["m", "c1", "c2"])}
    return membership.ClusterConfig("test", "m", nodes, epoch=epoch, version=version)


def _nodes():
    nodes = ScriptedNodes()
    for name in ("m", "c1", "c2"):
        nodes.answers[name]["cluster_config_update"] = (
            lambda body: {"version": body["config"]["version"]})
    return nodes


def test_a_node_that_missed_the_push_gets_it_once_it_answers():
    """A stale node that is down stays stale; once it answers it takes the configuration."""
    config, nodes = _config(), _nodes()
    push = pusher.ConfigPusher(lambda: config, nodes)
    nodes.down.add("c1")
    push.mark_stale("c1", "push failed")
    assert list(push.push_now()) == ["c1"]
    assert "c1" in push.stale
    nodes.down.clear()
    assert push.push_now() == {}
    assert push.stale == {}
    pushed = [body["config"] for _, body in nodes.calls("c1", "cluster_config_update")]
    assert pushed == [config.to_dict(), config.to_dict()]
    push.stop()


def test_answers_showing_an_older_configuration_mark_the_node_stale():
    """node_info answers of an older epoch or version, or no answer, mark a node stale."""
    config, nodes = _config(), _nodes()
    push = pusher.ConfigPusher(lambda: config, nodes)
    push.check_answers({"c1": {"epoch": 1, "config_version": 5},
                        "c2": {"epoch": 2, "config_version": 3},
                        "m": errors.RemoteError("connection refused")})
    assert sorted(push.stale) == ["c1", "m"]
    assert "epoch 1" in push.stale["c1"] and "connection refused" in push.stale["m"]


def test_a_refusal_keeps_the_node_stale_and_names_the_reason():
    """A node refusing the configuration stays stale; the round reports why."""
    config, nodes = _config(), _nodes()
    nodes.answers["c2"]["cluster_config_update"] = errors.FencedError("knows epoch 9")
    push = pusher.ConfigPusher(lambda: config, nodes)
    push.mark_stale("c2", "test")
    assert push.push_now() == {"c2": "knows epoch 9"}
    assert "c2" in push.stale


def test_the_thread_retries_until_the_node_takes_it():
    """Started, the pusher retries every retry_interval until the stale node takes it."""
    config, nodes = _config(), _nodes()
    nodes.down.add("c2")
    push = pusher.ConfigPusher(lambda: config, nodes, retry_interval=0.01)
    push.start()
    push.mark_stale("c2", "test")
    deadline = time.monotonic() + 20
    while len(nodes.calls("c2", "cluster_config_update")) < 3:
        assert time.monotonic() < deadline, "no retries"
        time.sleep(0.01)
    nodes.down.clear()
    while push.stale:
        assert time.monotonic() < deadline, "never taken"
        time.sleep(0.01)
    push.stop()
    assert not push._thread.is_alive()


def test_a_node_no_longer_in_the_configuration_is_forgotten():
    """A stale node that was removed from the configuration is not pushed to."""
    config, nodes = _config(), _nodes()
    push = pusher.ConfigPusher(lambda: config, nodes)
    push.mark_stale("gone", "removed")
    assert push.push_now() == {}
    assert push.stale == {}


class SilentNode:
    """A client of a node that does not answer (SIGSTOP): a call waits until close()
    aborts it (as RpcClient.close does a call in another thread), 60 s at most."""

    def __init__(self, name, address):
        self.node_name, self.address = name, address
        self.calling = threading.Event()
        self.closed = threading.Event()

    def call_encoded(self, method, data):
        self.calling.set()
        self.closed.wait(60)
        raise errors.RemoteError("RPC %s to node %s failed: connection closed" % (
            method, self.node_name))

    def close(self):
        self.closed.set()


def test_stopping_aborts_a_push_to_a_node_that_does_not_answer():
    """A master stopping while it pushes to a frozen node does not wait for the push's
    timeout: the push is aborted."""
    config, made = _config(), []

    def factory(name, address):
        made.append(SilentNode(name, address))
        return made[-1]

    push = pusher.ConfigPusher(lambda: config, factory, timeout=30)
    push.start()
    push.mark_stale("c1", "test")
    deadline = time.monotonic() + 10
    while not (made and made[0].calling.is_set()):
        assert time.monotonic() < deadline, "no push"
        time.sleep(0.01)
    stopper = threading.Thread(target=push.stop, daemon=True)
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive(), "the stop waits for the push's timeout"
    assert made[0].closed.is_set()
