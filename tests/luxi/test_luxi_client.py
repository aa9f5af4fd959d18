"""Tests of jqueue.luxi.client.Client against a scripted LUXI server on a Unix socket."""

import errno
import socket
import subprocess
import sys
import threading

import pytest

from jqueue import constants, errors, opcodes, serializer
from jqueue.luxi import client as client_mod
from jqueue.luxi import framing
from jqueue.luxi.client import Client, default_socket_path

CAP = 10  # seconds: safety cap on waits expected to end at once
CLOSE = "close"  # a handler action: close the connection without answering
HANG = "hang"  # a handler action: answer nothing and keep the connection open


def ok(result):
    return framing.encode_response(True, result)


def fail(error):
    return framing.encode_response(False, errors.encode_exception(error))


class FakeLuxiServer:
    """A scripted LUXI server: one thread per connection, recording every request.

    handler(request) returns a list of actions: bytes to send, CLOSE or HANG.
    """

    def __init__(self, path, handler):
        self.path = path
        self.handler = handler
        self.requests = []  # (connection number, request dict)
        self.connections = 0
        self.closed_connections = threading.Semaphore(0)  # released as each one ends
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn, self.connections),
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn, number):
        try:
            self._serve_requests(conn, number)
        except OSError:
            pass  # the client went away: that is what some tests do
        finally:
            conn.close()
            self.closed_connections.release()

    def _serve_requests(self, conn, number):
        buffer = framing.MessageBuffer(64 * 1024 * 1024)
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for message in list(buffer.feed(data)):
                request = serializer.loads(message)
                self.requests.append((number, request))
                if not self._act(conn, self.handler(request)):
                    return

    def _act(self, conn, actions):
        for action in actions:
            if action == CLOSE:
                return False
            if action == HANG:
                self._stop.wait(CAP)
                return False
            conn.sendall(action)
        return True

    def close(self):
        self._stop.set()
        self._listener.close()
        for thread in self._threads[1:]:
            thread.join(CAP)


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "luxi.sock")


@pytest.fixture
def serve(sock_path):
    """Start a FakeLuxiServer with a handler; stop it at teardown."""
    servers = []

    def start(handler):
        server = FakeLuxiServer(sock_path, handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def luxi(sock_path):
    with Client(sock_path, connect_timeout=CAP, timeout=CAP) as client:
        yield client


def echo(request):
    """Answer each request with [method, args]."""
    return [ok([request["method"], request["args"]])]


# Calls and answers


def test_call_returns_the_result_and_sends_method_and_args(serve, luxi):
    """A call sends {"method", "args"} and returns the answered result."""
    server = serve(echo)
    assert luxi.call("QueryJobs", [[1], ["id"]]) == ["QueryJobs", [[1], ["id"]]]
    assert server.requests == [(1, {"method": "QueryJobs", "args": [[1], ["id"]]})]


def test_error_answers_raise_the_named_jqueue_class(serve, luxi):
    """["JobLost", ["job 4 not found"]] is raised as errors.JobLost with its arguments."""
    serve(lambda request: [fail(errors.JobLost("job 4 not found"))])
    with pytest.raises(errors.JobLost) as info:
        luxi.call("WaitForJobChange", [4, ["id"], None, None, 1])
    assert info.value.args == ("job 4 not found",)


def test_op_prereq_error_keeps_its_error_code(serve, luxi):
    """OpPrereqError comes back with its message and code."""
    serve(lambda request: [fail(errors.OpPrereqError("bad", constants.ECODE_NOENT))])
    with pytest.raises(errors.OpPrereqError) as info:
        luxi.submit_job([])
    assert info.value.args == ("bad", constants.ECODE_NOENT)


@pytest.mark.parametrize("result, text", [
    (["SomeGanetiError", ["it broke"]], "SomeGanetiError: it broke"),
    ("just text", "malformed error"),
])
def test_unknown_or_malformed_errors_raise_generic_error(serve, luxi, result, text):
    """An error class we do not know, or a malformed error, is a GenericError with its text."""
    serve(lambda request: [framing.encode_response(False, result)])
    with pytest.raises(errors.GenericError, match=text):
        luxi.call("ArchiveJob", [1])


@pytest.mark.parametrize("answer", [b"not json\x03", b'{"result": 1}\x03', b'[true, 1]\x03',
                                    b'{"success": "yes", "result": 1}\x03'])
def test_malformed_answers_are_protocol_errors_and_drop_the_connection(serve, luxi, answer):
    """An answer that is not a LUXI response raises ProtocolError; the next call reconnects."""
    answers = iter([[answer], [ok(True)]])
    server = serve(lambda request: next(answers))
    with pytest.raises(errors.ProtocolError):
        luxi.call("ArchiveJob", [1])
    assert luxi.call("ArchiveJob", [1]) is True
    assert server.connections == 2


def test_extra_data_after_an_answer_drops_the_connection(serve, luxi):
    """A server sending two answers for one request is not trusted with the next one."""
    server = serve(lambda request: [ok(1) + ok(2)])
    assert luxi.call("ArchiveJob", [1]) == 1
    assert luxi.call("ArchiveJob", [1]) == 1
    assert server.connections == 2


def test_unencodable_arguments_are_a_parameter_error(serve, luxi):
    """Arguments JSON cannot hold raise ParameterError before anything is sent."""
    server = serve(echo)
    with pytest.raises(errors.ParameterError, match="cannot encode request SubmitJob"):
        luxi.call("SubmitJob", [[{"OP_ID": "X", "x": {1, 2}}]])
    assert server.requests == []


# Connecting


def test_missing_socket_is_no_master_error_naming_the_path(sock_path):
    """No socket file: NoMasterError whose message names the socket."""
    with pytest.raises(errors.NoMasterError, match=sock_path):
        Client(sock_path).call("QueryJobs", [[], ["id"]])


def test_socket_without_listener_is_no_master_error(sock_path):
    """A socket file nobody listens on (connection refused) is NoMasterError."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    try:
        with pytest.raises(errors.NoMasterError, match="no jqueue daemon listening on"):
            Client(sock_path).archive_job(1)
    finally:
        stale.close()


class _RefusingSocket:
    """A socket.socket stand-in whose connect fails with a given OSError."""

    error = None

    def __init__(self, *args):
        pass

    def settimeout(self, timeout):
        pass

    def connect(self, address):
        raise self.error

    def close(self):
        pass


@pytest.mark.parametrize("error, cls, text", [
    (PermissionError(errno.EACCES, "Permission denied"), errors.AccessDeniedError,
     "permission denied connecting to"),
    (OSError(errno.EPERM, "Operation not permitted"), errors.AccessDeniedError, "permission"),
    (TimeoutError("timed out"), errors.RequestTimeoutError, "connecting to .* timed out"),
    (BlockingIOError(errno.EAGAIN, "busy"), errors.RequestTimeoutError, "busy"),
    (OSError(errno.ENAMETOOLONG, "name too long"), errors.NoMasterError, "cannot connect to"),
])
def test_connect_errors_map_to_luxi_errors(monkeypatch, sock_path, error, cls, text):
    """Each way connecting fails is raised as the matching LUXI error naming the socket."""
    monkeypatch.setattr(_RefusingSocket, "error", error)
    monkeypatch.setattr(client_mod.socket, "socket", _RefusingSocket)
    with pytest.raises(cls, match=text):
        Client(sock_path).archive_job(1)


def test_closed_kept_connection_is_replaced_before_sending(serve, luxi):
    """If the daemon closed the kept connection, the client reconnects once and sends."""
    server = serve(lambda request: [ok(True), CLOSE])
    assert luxi.archive_job(1) is True
    assert server.closed_connections.acquire(timeout=CAP)
    assert luxi.archive_job(2) is True
    assert server.connections == 2
    assert [(n, r["args"]) for n, r in server.requests] == [(1, [1]), (2, [2])]


def test_kept_connection_is_reused(serve, luxi):
    """Calls share one connection while it stays open."""
    server = serve(echo)
    for n in range(3):
        luxi.archive_job(n)
    assert server.connections == 1 and len(server.requests) == 3


def test_connection_closed_after_sending_is_not_resent(serve, luxi):
    """A request sent and then left unanswered raises ConnectionClosedError, sent once."""
    answers = iter([[CLOSE], [ok(7)]])
    server = serve(lambda request: next(answers))
    with pytest.raises(errors.ConnectionClosedError, match="closed the connection before"):
        luxi.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}])
    assert len(server.requests) == 1
    assert luxi.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}]) == 7


def test_no_answer_within_the_timeout_is_request_timeout_error(serve, sock_path):
    """A daemon that never answers makes the call raise RequestTimeoutError."""
    server = serve(lambda request: [HANG])
    client = Client(sock_path, timeout=0.05)
    with pytest.raises(errors.RequestTimeoutError, match="no answer from .* within 0.05s"):
        client.archive_job(1)
    server.handler = lambda request: [ok(True)]
    client.timeout = CAP
    assert client.archive_job(1) is True
    assert server.connections == 2
    client.close()


def test_refusal_sent_before_closing_is_raised(serve, luxi):
    """When the daemon refuses a huge request mid-send and closes, its error is raised."""
    def handler(request):
        raise AssertionError("the huge request must not be read whole")

    server = serve(handler)
    server._serve_requests = _refuse_after_reading(1000)
    with pytest.raises(errors.ProtocolError, match="message exceeds 1000 bytes") as info:
        luxi.call("SubmitJob", [["x" * (8 * 1024 * 1024)]])
    assert not isinstance(info.value, errors.ConnectionClosedError)


def _refuse_after_reading(limit):
    """A FakeLuxiServer._serve_requests replacement: read limit bytes, refuse, return."""
    def serve(conn, number):
        received = 0
        while received < limit:
            received += len(conn.recv(limit))
        conn.sendall(fail(errors.ProtocolError("message exceeds %d bytes" % limit)))
    return serve


def test_context_manager_closes_the_connection(serve, sock_path):
    """Leaving the with block closes the socket."""
    serve(echo)
    with Client(sock_path) as client:
        client.archive_job(1)
        sock = client._sock
    assert client._sock is None and sock.fileno() == -1


def test_default_socket_path_comes_from_the_environment(monkeypatch):
    """$JQ_SOCKET wins; without it the default path is used."""
    monkeypatch.setenv("JQ_SOCKET", "/run/other.sock")
    assert default_socket_path() == "/run/other.sock"
    assert Client().address == "/run/other.sock"
    monkeypatch.delenv("JQ_SOCKET")
    assert default_socket_path() == constants.DEFAULT_SOCKET == "/var/lib/jqueue/run/jqueue.sock"


def test_importing_the_client_does_not_import_twisted():
    """jqueue.luxi.client (and the jqueue.luxi package) load without Twisted."""
    code = ("import sys, jqueue.luxi, jqueue.luxi.client; "
            "sys.exit('twisted' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# Methods


@pytest.mark.parametrize("call, method, args", [
    (lambda c: c.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}]), "SubmitJob",
     [[{"OP_ID": "OP_TEST_DELAY", "duration": 0}]]),
    (lambda c: c.submit_job_to_drained_queue([]), "SubmitJobToDrainedQueue", [[]]),
    (lambda c: c.submit_many_jobs([[], [{}]]), "SubmitManyJobs", [[[], [{}]]]),
    (lambda c: c.cancel_job(3), "CancelJob", [3]),
    (lambda c: c.cancel_job(3, kill=True), "CancelJob", [3, True]),
    (lambda c: c.change_job_priority("3", -10), "ChangeJobPriority", ["3", -10]),
    (lambda c: c.archive_job(3), "ArchiveJob", [3]),
    (lambda c: c.auto_archive_jobs(-1, 30), "AutoArchiveJobs", [-1, 30]),
    (lambda c: c.query_jobs(None, ["id"]), "QueryJobs", [None, ["id"]]),
    (lambda c: c.query("job", ["id"]), "Query", ["job", ["id"], None]),
    (lambda c: c.query("job", ["id"], ["=", "id", 1]), "Query", ["job", ["id"], ["=", "id", 1]]),
    (lambda c: c.query_fields("job"), "QueryFields", ["job", None]),
    (lambda c: c.query_config_values(["drain_flag"]), "QueryConfigValues", [["drain_flag"]]),
    (lambda c: c.set_drain_flag(True), "SetDrainFlag", [True]),
    (lambda c: c.wait_for_job_change_once(3, ["status"], None, None, 3), "WaitForJobChange",
     [3, ["status"], None, None, 3]),
    (lambda c: c.add_services([{"name": "w"}]), "AddServices", [[{"name": "w"}]]),
    (lambda c: c.add_services([{"name": "w"}], start=True), "AddServices",
     [[{"name": "w"}], {"start": True}]),
    (lambda c: c.modify_service("w", {"dir": "/"}), "ModifyService", ["w", {"dir": "/"}]),
    (lambda c: c.remove_service("w"), "RemoveService", ["w"]),
    (lambda c: c.control_service("w", "start"), "StartService", ["w"]),
    (lambda c: c.control_service("w", "stop"), "StopService", ["w"]),
    (lambda c: c.control_service("w", "restart"), "RestartService", ["w"]),
    (lambda c: c.query_services(), "QueryServices", [None]),
    (lambda c: c.query_services(["w"]), "QueryServices", [["w"]]),
    (lambda c: c.read_service_log("w", 5, 100), "ReadServiceLog", ["w", 5, 100, 0]),
    (lambda c: c.read_job_log(4, 5, 100), "ReadJobLog", [4, 5, 100, 0]),
])
def test_methods_send_ganeti_wire_names_and_arguments(serve, luxi, call, method, args):
    """Each snake_case method sends its Ganeti method name with the Ganeti argument list."""
    serve(echo)
    assert call(luxi) == [method, args]


def test_exact_log_reads_ask_for_base64_and_answer_bytes(serve, luxi):
    """read_job_log and read_service_log with exact: "base64" as 5th argument, data bytes."""
    asked = []

    def answer(request):
        asked.append(request["args"])
        return [ok({"data": "AP8K", "offset": 3, "eof": True})]
    serve(answer)
    assert luxi.read_job_log(7, 0, 100, exact=True) == {"data": b"\x00\xff\n", "offset": 3,
                                                        "eof": True}
    assert luxi.read_service_log("w", 1, 50, exact=True)["data"] == b"\x00\xff\n"
    assert asked == [[7, 0, 100, 0, "base64"], ["w", 1, 50, 0, "base64"]]


def test_opcode_objects_are_sent_as_their_dicts(serve, luxi):
    """OpCode objects given to submit_job travel as their job-file input dicts."""
    serve(echo)
    op = opcodes.OpTestDelay(duration=0.5)
    method, args = luxi.submit_job([op])
    assert args == [[op.to_dict()]] and args[0][0]["OP_ID"] == "OP_TEST_DELAY"


# WaitForJobChange loop


class StepClock:
    """A fake monotonic clock that the fake server advances by each wait's timeout."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_wait_once_caps_its_timeout_below_the_socket_timeout(serve, sock_path):
    """A single wait never asks for more than timeout/2 - 1 seconds (at least 1)."""
    server = serve(echo)
    with Client(sock_path, timeout=10) as client:
        assert client.wait_for_job_change_once(1, ["id"], None, None, 100)[1][4] == 4
    with Client(sock_path, timeout=2) as client:
        assert client.wait_for_job_change_once(1, ["id"], None, None, 100)[1][4] == 1
    assert len(server.requests) == 2


def test_wait_loops_until_a_change_with_no_overall_timeout(serve, sock_path):
    """With timeout None, "nochange" answers are retried until a change comes."""
    answers = iter([[ok("nochange")]] * 3 + [[ok([["success"], []])]])
    server = serve(lambda request: next(answers))
    with Client(sock_path, timeout=10) as client:
        assert client.wait_for_job_change(1, ["status"], None, None) == [["success"], []]
    assert [r["args"][4] for _, r in server.requests] == [4, 4, 4, 4]


def test_wait_returns_nochange_once_the_overall_timeout_passed(serve, sock_path):
    """The loop's calls add up to the overall timeout, then "nochange" is returned."""
    clock = StepClock()

    def handler(request):
        clock.now += request["args"][4]
        return [ok("nochange")]

    server = serve(handler)
    with Client(sock_path, timeout=10, clock=clock) as client:
        assert client.wait_for_job_change(1, ["status"], ["queued"], 3, timeout=9) == "nochange"
    assert [r["args"][4] for _, r in server.requests] == [4, 4, 1]
    assert all(r["args"][:4] == [1, ["status"], ["queued"], 3] for _, r in server.requests)


def test_wait_with_zero_timeout_asks_once(serve, sock_path):
    """timeout=0 makes exactly one call with a zero timeout."""
    server = serve(lambda request: [ok("nochange")])
    with Client(sock_path, clock=StepClock()) as client:
        assert client.wait_for_job_change(1, ["status"], None, None, timeout=0) == "nochange"
    assert [r["args"][4] for _, r in server.requests] == [0]

