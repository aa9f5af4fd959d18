"""Tests of jqueue.cluster.nodeexec's event log, as exec_poll answers it (no reactor needed
for answers given at once)."""

import pytest

from jqueue import errors
from jqueue.cluster import nodeexec


class _Executor:
    """Only what NodeExec needs of an Executor here: its subscription."""

    def __init__(self):
        self.listeners = []

    def subscribe(self, listener):
        self.listeners.append(listener)

    def emit(self, *event):
        for listener in self.listeners:
            listener(event)


def _node(is_master=lambda peer: peer == "master"):
    executor = _Executor()
    return executor, nodeexec.NodeExec(executor, is_master, reactor=None, slots=1)


def _poll(node, after, session=None):
    return node.exec_poll("master", {"session": session or node.session, "after": after})


def test_a_poll_gets_the_events_after_its_cursor_in_order():
    executor, node = _node()
    for number in range(1, 8):
        executor.emit("tick", number)
    answer = _poll(node, 4)
    assert answer["events"] == [[5, ["tick", 5]], [6, ["tick", 6]], [7, ["tick", 7]]]
    assert answer["last"] == 7 and not answer["reset"]
    assert _poll(node, 7)["events"] == [] and _poll(node, 0)["events"][0] == [1, ["tick", 1]]
    assert _poll(node, 9)["events"] == []  # a cursor ahead of the log gets nothing


def test_a_cursor_that_fell_out_of_the_full_log_is_told_to_reset(monkeypatch):
    monkeypatch.setattr(nodeexec, "EVENT_LOG", 5)
    executor, node = _node()
    for number in range(1, 13):
        executor.emit("tick", number)
    kept = _poll(node, 7)  # the log holds 8..12: a cursor at 7 missed nothing
    assert kept["events"] == [[n, ["tick", n]] for n in range(8, 13)] and not kept["reset"]
    assert _poll(node, 6)["reset"] is True and _poll(node, 6)["events"] == []  # 7 is gone
    assert _poll(node, 10, session="other")["reset"] is True


def test_only_the_master_may_poll():
    _, node = _node()
    with pytest.raises(errors.FencedError):
        node.exec_poll("node2", {"session": node.session, "after": 0})
