"""The master's link to a node's jq-noded (jqueue.cluster.commandlink.RemoteLink): how its
poller follows the node's event log across a restart of the node, with a scripted node."""

import base64
import collections
import queue
import threading
import time

from jqueue import errors
from jqueue.cluster import commandlink, nodeexec


def wait_until(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.005)


class ScriptedNode:
    """A node RPC client answering exec_poll from a script (an exception is raised);
    records the bodies of the polls. Other calls answer nothing."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.polls = []
        self.done = threading.Event()

    def __call__(self):
        return self  # the factory: one client serves both threads

    def call(self, method, body):
        if method == "node_info":
            return {}
        if method != "exec_poll":
            return []
        self.polls.append(dict(body))
        if not self.answers:
            self.done.set()
            time.sleep(0.01)
            return {"session": body["session"], "events": [], "reset": False, "last": 0}
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self):
        pass


class Host:
    """The runner's host, synchronous."""

    def call(self, function, *args):
        function(*args)

    def seconds(self):
        return time.monotonic()


class Listener:
    host = Host()

    def __init__(self):
        self.events = []

    def link_event(self, node, event):
        self.events.append(event)


def follow(monkeypatch, answers):
    monkeypatch.setattr(commandlink, "RETRY", 0.01)
    node, listener = ScriptedNode(answers), Listener()
    link = commandlink.RemoteLink("node2", 1, node, ping_interval=0.1)
    link.subscribe(listener)
    try:
        assert node.done.wait(10)
    finally:
        link.stop()
    return node, [e for e in listener.events if e[0] == "svc"]


def test_a_node_that_restarted_is_read_from_the_start_of_its_new_session(monkeypatch):
    """Events the restarted node logged before the link came back (a service's BACKOFF)
    are delivered; at the first contact the link starts from the node's present."""
    backoff = {"id": 1, "state": "BACKOFF", "changes": 3}
    node, events = follow(monkeypatch, [
        {"session": "s1", "events": [], "reset": True, "last": 5},
        {"session": "s1", "events": [[6, ["svc", {"id": 1, "state": "RUNNING"}]]],
         "reset": False, "last": 6},
        OSError("connection refused"),  # the node's jq-noded is down, then back
        {"session": "s2", "events": [], "reset": True, "last": 2},
        {"session": "s2", "events": [[1, ["svc", backoff]],
                                     [2, ["svc", {"id": 1, "state": "STARTING"}]]],
         "reset": False, "last": 2},
    ])
    assert [(p["session"], p["after"]) for p in node.polls[:5]] == [
        (None, 0), ("s1", 5), ("s1", 6), ("s1", 6), ("s2", 0)]
    assert ("svc", backoff) in events


class OutputNode(ScriptedNode):
    """Answers exec_read and svc_read with one piece of output, as answer(data) gives it."""

    def __init__(self, answer):
        super().__init__([])
        self.answer = answer

    def call(self, method, body):
        if method in ("exec_read", "svc_read"):
            return self.answer(b"out\x00\xff")
        return super().call(method, body)


def test_output_is_read_as_bytes_and_as_the_base64_of_an_older_node():
    """A node answers a piece of output as bytes (application/octet-stream); an older
    jq-noded answered {"data": base64}: both give the runner the same bytes, and a
    malformed base64 answer is an error, not garbage in the log."""
    for answer in (lambda data: data,
                   lambda data: {"data": base64.b64encode(data).decode("ascii")},
                   lambda data: {"data": "!!not base64"}):
        node, listener = OutputNode(answer), Listener()
        link = commandlink.RemoteLink("node2", 1, node, ping_interval=0.1)
        link.subscribe(listener)
        got = []
        both = threading.Event()

        def done(value, got=got, both=both):
            got.append(value)
            if len(got) == 2:
                both.set()

        try:
            link.fetch(7, 1, 0, 1024, done)
            link.svc_read(3, 1, 0, 1024, done)
            assert both.wait(10)
        finally:
            link.stop()
        if answer(b"x") == {"data": "!!not base64"}:
            assert all(isinstance(value, errors.RemoteError) for value in got), got
        else:
            assert got == [b"out\x00\xff", b"out\x00\xff"]


class GrowingOutput(ScriptedNode):
    """exec_read over an output of `size` bytes, called or pipelined (answered in order,
    as a node's connection does; `lose` pipelined answers fail as a broken connection);
    records the offsets read, as the node reads them, and the other calls."""

    def __init__(self, size, lose=0):
        super().__init__([])
        self.output = bytes(range(256)) * (size // 256)
        self.reads = []
        self.others = []
        self.sent = collections.deque()
        self.lose = lose

    def call(self, method, body):
        if method != "exec_poll":
            assert not self.sent, "a call while pipelined answers are unread"
        if method == "exec_read":
            return self._read(body)
        if method != "exec_poll" and method != "node_info":
            self.others.append((method, len(self.reads)))
        return super().call(method, body)

    def _read(self, body):
        self.reads.append(body["offset"])
        return self.output[body["offset"]:body["offset"] + body["max_bytes"]]

    def send_pipelined(self, method, body):
        assert method == "exec_read"
        self.sent.append(self._read(body))

    def receive_pipelined(self, method):
        data = self.sent.popleft()
        if self.lose:
            self.lose -= 1
            self.sent.clear()
            raise errors.RemoteError("RPC exec_read to node node2: connection reset")
        return data


class QueuedHost:
    """A host whose calls wait until the test runs them (as a reactor runs them later)."""

    def __init__(self):
        self.pending = queue.Queue()

    def call(self, function, *args):
        self.pending.put((function, args))

    def seconds(self):
        return time.monotonic()

    def run_until(self, predicate, timeout=10):
        deadline = time.monotonic() + timeout
        while not predicate():
            function, args = self.pending.get(timeout=max(0.01, deadline - time.monotonic()))
            function(*args)


def read_all(node, then=None):
    """Fetch node's output piece by piece as the runner does (the next fetch once the last
    answer is in); then(link) after the second piece. [(offset, answer)]."""
    listener = Listener()
    listener.host = QueuedHost()
    link = commandlink.RemoteLink("node2", 1, node, ping_interval=0.1)
    link.subscribe(listener)
    got = []
    try:
        offset = 0
        while True:
            link.fetch(7, 1, offset, 1024, lambda data, at=offset: got.append((at, data)))
            listener.host.run_until(lambda offset=offset: got and got[-1][0] == offset)
            data = got[-1][1]
            if not data:
                break
            offset += len(data)
            if len(got) == 2 and then is not None:
                then(link)
    finally:
        link.stop()
    return got


def test_after_a_full_piece_the_next_ones_are_asked_for_at_once_and_served_from_there():
    """After a full piece of output the link asks for the next two at once (pipelined:
    the node reads them while the runner journals this one) and answers the runner's
    next fetches from them; the runner gets the output, each byte once, and the end (an
    empty piece) is always read anew, never taken from ahead of time."""
    node = GrowingOutput(4096)
    got = read_all(node)
    assert b"".join(data for _, data in got) == node.output and got[-1] == (4096, b"")
    assert node.reads == [0, 1024, 2048, 3072, 4096, 5120, 4096]
    assert not node.sent


def test_reads_ahead_lost_with_the_connection_are_read_again_and_other_calls_wait_for_them():
    """A broken connection loses the answers asked for ahead: the runner's fetch reads its
    piece anew and gets every byte once. A call queued while answers are on their way is
    made once they are in (the node's connection answers in order)."""
    node = GrowingOutput(8192, lose=1)
    got = read_all(node)
    assert b"".join(data for _, data in got) == node.output and got[-1] == (8192, b"")
    assert node.reads[:5] == [0, 1024, 2048, 1024, 2048]  # asked again after the loss

    node = GrowingOutput(8192)
    got = read_all(node, then=lambda link: link.forget(9, 1))
    assert b"".join(data for _, data in got) == node.output
    assert node.others and node.others[0][0] == "exec_forget"


class InfoNode(ScriptedNode):
    """A node whose node_info answers `info`."""

    def __init__(self, info):
        super().__init__([])
        self.info = info

    def call(self, method, body):
        if method == "node_info":
            return self.info
        return super().call(method, body)


def test_the_link_learns_how_the_node_contains_attempts():
    """node_info's containment becomes the link's (what the banner of an attempt's log
    says); an older node's answer without it, or a malformed one, leaves the default."""
    default = commandlink.RemoteLink.containment
    for info, expected in [
            ({"slots": 3, "containment": "process group (no cgroup v2 here)"},
             "process group (no cgroup v2 here)"),
            ({"slots": 3}, default), ({"containment": 7}, default),
            ({"containment": "bad\nline"}, default), ([], default)]:
        node = InfoNode(info)
        link = commandlink.RemoteLink("node2", 1, node, ping_interval=0.1)
        link.subscribe(Listener())
        try:
            assert node.done.wait(10)
        finally:
            link.stop()
        assert link.containment == expected, info


class BatchingNode(ScriptedNode):
    """A node that says (or not) it takes exec_batch; the first exec_lookup waits until the
    test releases it, so that the calls after it pile up in the link's queue."""

    def __init__(self, features):
        super().__init__([])
        self.features = features
        self.calls = []  # (method, body), in the order they reached the node
        self.release = threading.Event()

    def call(self, method, body):
        if method == "node_info":
            if threading.current_thread().name.endswith("-poll"):
                time.sleep(0.3)  # the poller learns late: the caller must ask itself
            return {"features": self.features}
        if method == "exec_poll":
            return super().call(method, body)
        self.calls.append((method, body))
        if method == "exec_lookup":
            assert self.release.wait(10)
            return None
        if method == "exec_batch":
            return [self._one(m, b) for m, b in body["calls"]]
        ok, value = self._one(method, body)
        if not ok:  # as the RPC client raises a node's error
            raise errors.decode_exception(value)
        return value

    @staticmethod
    def _one(method, body):
        if method == "exec_launch" and body["spec"]["job"] == 2:
            return [False, ["CommandError", ["job 2: cannot start"]]]
        return [True, {"job": body["spec"]["job"]} if method == "exec_launch" else True]


def _queued_behind_a_lookup(features):
    node, listener = BatchingNode(features), Listener()
    link = commandlink.RemoteLink("node2", 1, node, ping_interval=0.1)
    link.subscribe(listener)
    answers = {}
    try:
        wait_until(lambda: node.polls)  # node_info answered: the link knows its features
        link.lookup(9, 1, lambda value: answers.setdefault("lookup", value))
        wait_until(lambda: node.calls)
        for job in (1, 2, 3):
            link.launch({"job": job}, lambda value, job=job: answers.setdefault(job, value))
        link.forget(1, 1)
        link.release(4, 1, 4096, 65536)
        link.control(3, 1, "kill", None, lambda value: answers.setdefault("kill", value))
        node.release.set()
        wait_until(lambda: "kill" in answers)
    finally:
        link.stop()
    return node, answers


def test_launches_and_forgets_in_a_row_go_in_one_batch_to_a_node_that_takes_it():
    """Queued launches and forgets reach the node in one exec_batch, in order, and each
    caller gets its own answer (one launch's error is its own); the call after them goes
    on its own, after them."""
    node, answers = _queued_behind_a_lookup(["exec_batch"])
    assert [method for method, _ in node.calls] == ["exec_lookup", "exec_batch", "exec_control"]
    batch = node.calls[1][1]["calls"]
    assert batch == [["exec_launch", {"spec": {"job": 1}}], ["exec_launch", {"spec": {"job": 2}}],
                     ["exec_launch", {"spec": {"job": 3}}],
                     ["exec_forget", {"job": 1, "attempt": 1}]]
    assert answers[1] == {"job": 1} and answers[3] == {"job": 3}
    assert isinstance(answers[2], errors.CommandError) and "cannot start" in str(answers[2])


def test_a_node_that_does_not_say_it_batches_gets_the_calls_one_by_one():
    """An older jq-noded (no features in node_info) gets each launch and forget alone."""
    node, answers = _queued_behind_a_lookup(None)
    assert [method for method, _ in node.calls] == [
        "exec_lookup", "exec_launch", "exec_launch", "exec_launch", "exec_forget",
        "exec_control"]
    assert answers[1] == {"job": 1} and isinstance(answers[2], errors.CommandError)


def test_output_past_a_cap_is_freed_only_by_a_node_that_says_it_can():
    """exec_release (free an attempt's output past its log's cap) goes only to a node
    naming "release" in its features: the others (above) never see it."""
    node, _ = _queued_behind_a_lookup(["exec_batch", "release"])
    assert [method for method, _ in node.calls] == [
        "exec_lookup", "exec_batch", "exec_release", "exec_control"]
    assert node.calls[2][1] == {"job": 4, "attempt": 1, "start": 4096, "end": 65536}


def test_a_batch_stays_under_its_weight_and_the_rest_goes_in_the_next(monkeypatch):
    """Launches whose arguments and environment would make a batch too heavy go in the
    next one, in order (a launch heavier than the limit alone would go alone)."""
    monkeypatch.setattr(commandlink, "BATCH_BYTES", 600)  # two launches of the test
    node, answers = _queued_behind_a_lookup(["exec_batch"])
    assert [method for method, _ in node.calls] == [
        "exec_lookup", "exec_batch", "exec_batch", "exec_control"]
    assert [[m, b.get("spec", b).get("job")] for m, b in node.calls[1][1]["calls"]] == [
        ["exec_launch", 1], ["exec_launch", 2]]
    assert [[m, b.get("spec", b).get("job")] for m, b in node.calls[2][1]["calls"]] == [
        ["exec_launch", 3], ["exec_forget", 1]]
    assert answers[1] == {"job": 1} and answers[3] == {"job": 3}


def _sent_to(features, send, method):
    """The body of the first call method a node with these features (None: it says none)
    receives when send(link, done) asks the link for it."""
    node, listener = BatchingNode(features), Listener()
    link = commandlink.RemoteLink("node2", 1, node, ping_interval=0.1)
    link.subscribe(listener)
    answered = threading.Event()
    try:
        send(link, lambda value: answered.set())
        assert answered.wait(10)
    finally:
        link.stop()
    return [body for name, body in node.calls if name == method][0]


def _launch_to(features, spec):
    """The launch spec a node with these features receives."""
    return _sent_to(features, lambda link, done: link.launch(spec, done), "exec_launch")["spec"]


def test_a_node_that_does_not_complete_environments_gets_them_complete(monkeypatch):
    """A jq-noded from before env_base (no "env_base" in its features) would refuse a
    spec carrying it: it gets the environment complete instead, built as the first
    versions did; a node that says it completes them gets the spec as it is."""
    monkeypatch.setenv("JQ_TEST_MASTER_ONLY", "yes")
    spec = {"job": 5, "attempt": 1, "argv": ["true"], "dir": "/", "run_as": None,
            "env": {"JQ_JOB_ID": "5", "LANG": "fr_FR.UTF-8"}, "env_base": "minimal"}
    assert _launch_to(["exec_batch", "env_base"], spec) == spec
    old = _launch_to(None, spec)
    assert "env_base" not in old and old["argv"] == ["true"]
    assert old["env"]["JQ_JOB_ID"] == "5" and old["env"]["LANG"] == "fr_FR.UTF-8"
    assert old["env"]["PATH"] and old["env"]["HOME"] and "JQ_TEST_MASTER_ONLY" not in old["env"]
    inherited = _launch_to([], dict(spec, env_base="inherit"))
    assert inherited["env"]["JQ_TEST_MASTER_ONLY"] == "yes" and "env_base" not in inherited


def test_a_memory_max_goes_only_to_a_node_that_says_it_keeps_one():
    """A jq-noded from before memory_max would take the key for a malformed spec: a launch
    with one is refused here, naming why (the runner ends it INTERR), and the launches
    queued around it go on in order; a node that says it keeps one gets the spec as is."""
    node, listener = BatchingNode(["exec_batch", "env_base"]), Listener()
    link = commandlink.RemoteLink("node2", 1, node, ping_interval=0.1)
    link.subscribe(listener)
    answers = {}
    try:
        wait_until(lambda: node.polls)
        link.lookup(9, 1, lambda value: answers.setdefault("lookup", value))
        wait_until(lambda: node.calls)
        for spec in ({"job": 1}, {"job": 3, "memory_max": 1 << 30}, {"job": 5}):
            link.launch(spec, lambda value, job=spec["job"]: answers.setdefault(job, value))
        node.release.set()
        wait_until(lambda: 5 in answers)
    finally:
        link.stop()
    assert [(m, b["spec"]["job"]) for m, b in node.calls[1:]] == [
        ("exec_launch", 1), ("exec_launch", 5)]
    assert isinstance(answers[3], errors.CommandError)
    assert str(answers[3]) == ("node node2 cannot keep a memory_max: its jq-noded is of an "
                               "earlier version")
    spec = {"job": 7, "attempt": 1, "argv": ["true"], "dir": "/", "run_as": None, "env": {},
            "env_base": "minimal", "memory_max": 1 << 30}
    assert _launch_to(list(nodeexec.FEATURES), spec) == spec


def _applied_to(features, entry):
    """The entries a node with these features receives for entry."""
    return _sent_to(features, lambda link, done: link.svc_apply([entry], [], True, done),
                    "svc_apply")["entries"]


def test_a_node_that_does_not_take_restart_seq_gets_services_without_it():
    """restart_seq (a restart the node missed) goes only to a node naming svc_restart; a
    jq-noded from before it, which refuses an entry with a key it does not know, gets
    the entries as it always did. The link asks before the first set, as before a launch."""
    entry = {"id": 1, "name": "web", "version": 1, "definition": {}, "target": "started",
             "seq": 3, "run": 1, "restart_seq": 2}
    assert _applied_to(["exec_batch", "svc_restart"], entry) == [entry]
    old = dict(entry)
    del old["restart_seq"]
    assert _applied_to(["exec_batch", "env_base"], entry) == [old]
    assert _applied_to(None, entry) == [old]


def test_a_node_that_does_not_keep_a_memory_max_gets_services_without_it(caplog):
    """A definition's memory_max would make a jq-noded from before it refuse the whole
    set (an unknown parameter): such a node gets the definitions without it, a limit
    dropped so logged; a node naming memory_max gets them as they are."""
    entry = {"id": 1, "name": "web", "version": 1, "target": "started", "seq": 3, "run": 1,
             "restart_seq": 2, "definition": {"command": "serve", "memory_max": 1 << 30}}
    assert _applied_to(list(nodeexec.FEATURES), entry) == [entry]
    assert caplog.records == []
    [old] = _applied_to(["exec_batch", "svc_restart"], entry)
    assert old == dict(entry, definition={"command": "serve"})
    assert "node node2 cannot keep service web's memory_max" in caplog.text
    caplog.clear()
    unlimited = dict(entry, definition={"command": "serve", "memory_max": 0})
    assert _applied_to(["exec_batch", "svc_restart"], unlimited) == [
        dict(entry, definition={"command": "serve"})]
    assert caplog.records == []


class UnreachableNode(ScriptedNode):
    """A node that does not answer: every call fails as a refused connection would."""

    def __init__(self):
        super().__init__([])
        self.calls = []

    def call(self, method, body):
        if not threading.current_thread().name.endswith("-poll"):
            self.calls.append(method)
        raise OSError("connection refused")


def test_a_launch_to_a_node_that_cannot_say_its_features_fails_with_that_error(monkeypatch):
    """Before its first launch the link asks a node what it can do; if that fails, the
    launch gets the failure at once (a second call to the same unreachable node would
    only wait as long again), and nothing else is sent."""
    monkeypatch.setattr(commandlink, "RETRY", 0.01)
    node, listener = UnreachableNode(), Listener()
    link = commandlink.RemoteLink("node2", 1, node, ping_interval=0.1)
    link.subscribe(listener)
    answers = []
    try:
        link.launch({"job": 1}, answers.append)
        wait_until(lambda: answers)
    finally:
        link.stop()
    assert isinstance(answers[0], errors.RemoteError) and "refused" in str(answers[0])
    assert node.calls == ["node_info"]


class FrozenNode:
    """A node that answers nothing: each call blocks until its client is closed (as a
    TLS read of a SIGSTOPped jq-noded does until its connection is shut down)."""

    def __init__(self):
        self.calls = queue.Queue()

    def __call__(self):
        return _FrozenClient(self)


class _FrozenClient:
    def __init__(self, node):
        self.node, self.closed = node, threading.Event()

    def call(self, method, body):
        self.node.calls.put(method)
        if not self.closed.wait(30):
            raise AssertionError("a call to a frozen node was never aborted")
        raise OSError("connection shut down")

    def close(self):
        self.closed.set()


def test_stop_aborts_the_calls_in_flight_and_waits_for_the_threads():
    """A node that does not answer (frozen): stop() shuts the poll's and the launch's calls
    down and join() returns once both threads ended, promptly; a daemon that exits next
    leaves no thread inside a TLS read while its interpreter finalizes (it aborted once
    so)."""
    node, listener = FrozenNode(), Listener()
    link = commandlink.RemoteLink("node3", 1, node, ping_interval=0.1)
    link.features = {}
    link.subscribe(listener)
    link.launch({"job": 1}, lambda answer: None)
    assert {node.calls.get(timeout=10), node.calls.get(timeout=10)} == {
        "node_info", "exec_launch"}
    started = time.monotonic()
    link.stop()
    link.join(started + 10)
    assert time.monotonic() - started < 5
    assert not any(thread.is_alive() for thread in link._threads)
