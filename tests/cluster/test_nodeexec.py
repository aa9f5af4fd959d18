"""Tests of jqueue.cluster.nodeexec's event log, as exec_poll answers it (no reactor needed
for answers given at once)."""

import pytest
from twisted.internet import defer, task

from jqueue import errors
from jqueue.cluster import nodeexec
from jqueue.exec.attempt import AttemptInfo


class _Executor:
    """Only what NodeExec needs of an Executor here: its subscription, launch and forget."""

    def __init__(self):
        self.listeners = []
        self.done = []  # ("launch", job) and ("forget", job), in order
        self.lookups = []  # (spec, Deferred) of launches whose user is being looked up

    def launch_soon(self, spec):
        if spec.run_as is not None:  # the user is looked up: the test fires the lookup
            found = defer.Deferred()
            self.lookups.append((spec, found))
            return found.addCallback(lambda _: self._launch(spec))
        return self._launch(spec)

    def _launch(self, spec):
        if spec.dir == "/missing":
            raise errors.CommandError("job %d: cannot change to directory /missing" % spec.job)
        self.done.append(("launch", spec.job))
        return AttemptInfo(job=spec.job, attempt=spec.attempt, pid=None, pgid=None, cgroup=None,
                           started=1.0, deadline=None, argv=list(spec.argv), dir=spec.dir,
                           run_as=None, output_size=0, result=None)

    def forget(self, job, attempt):
        self.done.append(("forget", job))

    def release(self, job, attempt, start, end):
        self.done.append(("release", job, start, end))

    def read(self, job, attempt, offset, max_bytes):
        self.done.append(("read", job, offset))
        return b""

    def subscribe(self, listener):
        self.listeners.append(listener)

    def emit(self, *event):
        for listener in self.listeners:
            listener(event)


def _node(is_master=lambda peer: peer == "master"):
    executor = _Executor()
    return executor, nodeexec.NodeExec(executor, is_master, reactor=task.Clock(), slots=1)


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


def test_each_answer_says_the_machine_and_its_memory_reserve():
    """jq-noded's memory_reserve goes with its heartbeats' reading; a reload's new value
    with the next answer."""
    executor = _Executor()
    node = nodeexec.NodeExec(executor, lambda peer: peer == "master", reactor=task.Clock(), slots=1,
                             memory_reserve=1 << 30)
    machine = _poll(node, 0)["resources"]
    assert machine["mem_reserved"] == 1 << 30 and machine["mem_total"] > 0
    node.set_memory_reserve(0)
    assert _poll(node, 0)["resources"]["mem_reserved"] == 0


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


def _launch(job, directory="/", run_as=None):
    return ["exec_launch", {"spec": {"job": job, "attempt": 1, "argv": ["true"], "dir": directory,
                                     "env": {}, "run_as": run_as}}]


def test_exec_release_frees_an_attempts_output_and_checks_its_arguments():
    """exec_release hands job, attempt, start and end to the executor; a bad one is the
    caller's error and nothing is freed."""
    executor, node = _node()
    assert node.exec_release("master", {"job": 4, "attempt": 2, "start": 10, "end": 99})
    assert executor.done == [("release", 4, 10, 99)]
    for body in ({"job": 4, "attempt": 2, "start": -1, "end": 99},
                 {"job": 4, "attempt": 2, "start": 10}, {"job": 4, "attempt": 2, "start": 0,
                                                         "end": "all"},
                 {"job": 4, "attempt": 2, "start": 0, "end": 2 ** 63},
                 {"job": 4, "attempt": 2, "start": 2 ** 70, "end": 2 ** 71}):
        with pytest.raises(errors.ParameterError):
            node.exec_release("master", body)
    with pytest.raises(errors.FencedError):
        node.exec_release("node2", {"job": 4, "attempt": 2, "start": 10, "end": 99})
    assert executor.done == [("release", 4, 10, 99)] and "release" in nodeexec.FEATURES


def test_a_read_past_what_a_file_can_hold_is_the_callers_error():
    """An offset from 2**63 on (no file has one: pread would overflow) is a ParameterError,
    of exec_read as of svc_read, not an internal error; one below is read."""
    executor, node = _node()
    node.exec_read("master", {"job": 4, "attempt": 2, "offset": 2 ** 63 - 1, "max_bytes": 9})
    assert executor.done == [("read", 4, 2 ** 63 - 1)]
    for method, body in (("exec_read", {"job": 4, "attempt": 2}),
                         ("svc_read", {"id": 4, "run": 2})):
        with pytest.raises(errors.ParameterError, match="'offset' must be a byte offset"):
            getattr(node, method)("master", dict(body, offset=2 ** 70, max_bytes=9))
    with pytest.raises(errors.ParameterError, match="'end' must be a byte offset"):
        node.svc_release("master", {"id": 4, "run": 2, "start": 0, "end": 2 ** 63})
    assert executor.done == [("read", 4, 2 ** 63 - 1)]


def test_a_batch_runs_its_calls_in_order_each_with_its_own_answer():
    """exec_batch: launches and forgets in order; a call's error is its own, encoded."""
    executor, node = _node()
    answers = node.exec_batch("master", {"calls": [
        _launch(1), _launch(2, "/missing"), ["exec_forget", {"job": 1, "attempt": 1}],
        ["exec_forget", {"job": "x", "attempt": 1}], _launch(3)]})
    assert executor.done == [("launch", 1), ("forget", 1), ("launch", 3)]
    assert [ok for ok, _ in answers] == [True, False, True, False, True]
    assert answers[0][1]["job"] == 1 and answers[2][1] is True and answers[4][1]["job"] == 3
    assert errors.decode_exception(answers[1][1]).__class__ is errors.CommandError
    assert errors.decode_exception(answers[3][1]).__class__ is errors.ParameterError
    assert "exec_batch" in nodeexec.FEATURES and "exec_batch" in node.handlers()


def test_a_batch_waits_for_a_launchs_user_lookup_and_goes_on_in_order():
    """A launch whose user is looked up (a Deferred) holds the calls after it until it is
    done; the batch then answers every call in order, a refused user's error its own."""
    executor, node = _node()
    answer = node.exec_batch("master", {"calls": [
        _launch(1), _launch(2, run_as="alice"), _launch(3), _launch(4, run_as="bob"),
        _launch(5)]})
    answers = []
    answer.addCallback(answers.append)
    assert executor.done == [("launch", 1)] and [s.job for s, _ in executor.lookups] == [2]
    executor.lookups[0][1].callback(None)
    assert executor.done == [("launch", 1), ("launch", 2), ("launch", 3)]
    assert [s.job for s, _ in executor.lookups] == [2, 4] and answers == []
    executor.lookups[1][1].errback(errors.CommandError("user bob does not exist"))
    assert executor.done == [("launch", 1), ("launch", 2), ("launch", 3), ("launch", 5)]
    [[ok1, info1], [ok2, info2], [ok3, _], [ok4, error4], [ok5, info5]] = answers[0]
    assert (ok1, ok2, ok3, ok4, ok5) == (True, True, True, False, True)
    assert (info1["job"], info2["job"], info5["job"]) == (1, 2, 5)
    assert "bob does not exist" in str(errors.decode_exception(error4))


def test_a_single_launchs_user_lookup_answers_with_a_deferred():
    executor, node = _node()
    answer = node.exec_launch("master", _launch(7, run_as="alice")[1])
    answers = []
    answer.addCallback(answers.append)
    assert answers == [] and executor.done == []
    executor.lookups[0][1].callback(None)
    assert answers[0]["job"] == 7 and executor.done == [("launch", 7)]


@pytest.mark.parametrize("calls", [
    None, [], "exec_launch", [["exec_poll", {}]], [["exec_read", {"job": 1}]], [_launch(1)[1]],
    [_launch(1)] * (nodeexec.MAX_BATCH + 1), [["exec_forget", [1, 1]]]])
def test_a_malformed_batch_is_refused_whole_and_runs_nothing(calls):
    """Anything but 1 to MAX_BATCH [method, body] pairs of launches and forgets is the
    caller's mistake, and nothing of it runs."""
    executor, node = _node()
    with pytest.raises(errors.ParameterError):
        node.exec_batch("master", {"calls": calls})
    assert executor.done == []


def test_only_the_master_may_send_a_batch():
    executor, node = _node()
    with pytest.raises(errors.FencedError):
        node.exec_batch("node2", {"calls": [_launch(1)]})
    assert executor.done == []


class _Supervisor:
    """Only what NodeExec needs of a Supervisor for svc_apply: apply, and subscribe."""

    def __init__(self):
        self.applied = []

    def subscribe(self, listener):
        pass

    def apply(self, entries, remove, full):
        self.applied.append(entries)
        return []


@pytest.mark.parametrize("restart_seq, ok", [(None, True), (2, True), (-1, False),
                                             ("2", False), (True, False)])
def test_a_service_entry_may_carry_a_restart_seq_and_nothing_else_unknown(restart_seq, ok):
    """svc_apply takes an entry with or without restart_seq (a count), and refuses a
    malformed one, or a key it does not know, whole; the node says it takes it."""
    supervisor = _Supervisor()
    node = nodeexec.NodeExec(_Executor(), lambda peer: peer == "master", reactor=task.Clock(),
                             slots=1, supervisor=supervisor)
    entry = {"id": 1, "name": "web", "version": 1, "definition": {"name": "web",
             "command": "serve"}, "target": "started", "seq": 3, "run": 0}
    if restart_seq is not None:
        entry["restart_seq"] = restart_seq
    if ok:
        node.svc_apply("master", {"entries": [entry]})
        assert supervisor.applied[0][0]["restart_seq" if restart_seq else "seq"] == (
            restart_seq or 3)
    else:
        with pytest.raises(errors.ParameterError):
            node.svc_apply("master", {"entries": [entry]})
    with pytest.raises(errors.ParameterError):
        node.svc_apply("master", {"entries": [dict(entry, colour="red")]})
    assert "svc_restart" in nodeexec.FEATURES


def _launch_body(job, **extra):
    return dict(_launch(job)[1], **extra)


def test_a_request_to_start_taken_after_the_daemon_stood_still_past_lost_grace_is_refused():
    """Frozen past the master's lost_grace (SIGSTOP, a paused VM), jq-noded may find in its
    socket a launch or a service's start the master gave up on, its work since given to
    another node: it refuses them (NodeStalledError: the master asks again) rather than
    run a second copy. A short stall, a master that does not say stale_after, and the
    requests after the next tick are served."""
    clock = task.Clock()
    executor, supervisor = _Executor(), _Supervisor()
    node = nodeexec.NodeExec(executor, lambda peer: peer == "master", reactor=clock, slots=1,
                             supervisor=supervisor)
    entry = {"id": 1, "name": "web", "version": 1, "definition": {"name": "web",
             "command": "serve"}, "target": "started", "seq": 3, "run": 0}
    clock.advance(2.0)  # ticking: no stall
    node.exec_launch("master", _launch_body(1, stale_after=3))
    clock.advance(5.0)  # stood still 5 s, its tick first once thawed (EINTR): then requests
    with pytest.raises(errors.NodeStalledError, match="lost_grace"):
        node.exec_launch("master", _launch_body(1, stale_after=3))
    clock.advance(nodeexec.TICK)
    clock.rightNow += 5.0  # stood still 5 s, the requests first
    with pytest.raises(errors.NodeStalledError, match="lost_grace"):
        node.exec_launch("master", _launch_body(2, stale_after=3))
    with pytest.raises(errors.NodeStalledError):
        node.svc_apply("master", {"entries": [entry], "stale_after": 3})
    with pytest.raises(errors.NodeStalledError):
        node.svc_control("master", {"id": 1, "action": "start", "seq": 4, "stale_after": 3})
    answers = node.exec_batch("master", {"calls": [["exec_launch",
                                                    _launch_body(3, stale_after=3)]]})
    assert answers[0][0] is False and answers[0][1][0] == "NodeStalledError"
    node.exec_launch("master", _launch_body(4, stale_after=10))  # within its lost_grace
    node.exec_launch("master", _launch_body(5))  # an older master
    clock.advance(0)  # its tick sees the stall: requests right after it still refused
    with pytest.raises(errors.NodeStalledError):
        node.svc_apply("master", {"entries": [entry], "stale_after": 3})
    clock.advance(nodeexec.TICK)  # a tick later: served
    node.exec_launch("master", _launch_body(6, stale_after=3))
    node.svc_apply("master", {"entries": [entry], "stale_after": 3})
    assert executor.done == [("launch", 1), ("launch", 4), ("launch", 5), ("launch", 6)]
    assert len(supervisor.applied) == 1
