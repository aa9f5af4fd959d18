"""Tests of jq-noded's replication handler in this process: what a call must do before it
applies (open the replica, or open it again after a failed sync: a replay) runs in the
thread pool, never on the event loop, and the calls behind it keep their order.

The test's main thread plays the event loop: the fake reactor queues what the pool hands
back (callFromThread) and the test runs it.
"""

import queue
import threading

import pytest
from twisted.python import threadpool

from jqueue import errors
from jqueue.daemon import noded


class QueueReactor:
    """callFromThread queues the call; run_until runs them in the calling thread."""

    def __init__(self):
        self.calls = queue.Queue()

    def callFromThread(self, func, *args, **kwargs):  # noqa: N802 - Twisted's name
        self.calls.put((func, args, kwargs))

    def run_until(self, predicate, timeout=10):
        while not predicate():
            func, args, kwargs = self.calls.get(timeout=timeout)
            func(*args, **kwargs)


class SlowNode:
    """A node whose replica must be opened again (a replay that waits for release)."""

    def __init__(self, refuse=None):
        self.ready = False
        self.release = threading.Event()
        self.refuse = refuse
        self.prepared_in, self.applied = [], []

    def replica_ready(self):
        return self.ready

    def prepare_replication(self, peer):
        self.prepared_in.append(threading.current_thread())
        assert self.release.wait(10)
        if self.refuse is not None:
            raise self.refuse
        self.ready = True

    def replicate_nowait(self, peer, body):
        self.applied.append((body["n"], threading.current_thread()))
        return {"n": body["n"]}, None


@pytest.fixture
def pool():
    pool = threadpool.ThreadPool(1, 1, name="test-rpc")
    pool.start()
    yield pool
    pool.stop()


def results(*deferreds):
    out = []
    for deferred in deferreds:
        deferred.addBoth(out.append)
    return out


def test_a_replay_runs_in_the_pool_and_the_calls_behind_it_keep_their_order(pool):
    """While the replica is opened again in the pool, the event loop goes on (the handler
    answers at once with pending Deferreds); the calls are then applied on the event
    loop in the order they came, and once the replica is ready a call applies at once."""
    reactor, node = QueueReactor(), SlowNode()
    handle = noded._answer_when_durable(reactor, pool, node)
    first, second = handle("node1", {"n": 1}), handle("node1", {"n": 2})
    answers = results(first, second)
    assert answers == [] and node.applied == []  # both wait; this thread was not held
    node.release.set()
    reactor.run_until(lambda: len(answers) == 2)
    assert answers == [{"n": 1}, {"n": 2}]
    main = threading.current_thread()
    assert node.applied == [(1, main), (2, main)]
    assert len(node.prepared_in) == 2 and main not in node.prepared_in
    assert handle("node1", {"n": 3}) == {"n": 3}  # ready: applied at once
    assert len(node.prepared_in) == 2


def test_a_refusal_found_while_preparing_is_the_callers_error_and_frees_the_turn(pool):
    """A call refused by the preparation (this node holds no replica) answers that error;
    the calls behind it still run."""
    reactor = QueueReactor()
    node = SlowNode(refuse=errors.NotMasterError("node node2 holds no replica"))
    handle = noded._answer_when_durable(reactor, pool, node)
    answers = results(handle("node1", {"n": 1}))
    node.release.set()
    reactor.run_until(lambda: answers)
    assert answers[0].check(errors.NotMasterError) and node.applied == []
    node.refuse = None
    answers = results(handle("node1", {"n": 2}))
    reactor.run_until(lambda: answers)
    assert answers == [{"n": 2}]
