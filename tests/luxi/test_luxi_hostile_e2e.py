"""End-to-end tests of jq-masterd against hostile and broken LUXI clients.

Each attack runs while a well-behaved client keeps querying and must keep getting correct
answers; afterwards the daemon is alive and no stored job changed (QueryJobs before and
after are equal).
"""

import contextlib
import errno
import json
import socket
import threading
import time

import pytest
from daemon_helpers import (
    EOM,
    Daemon,
    RawLuxi,
    delay,
    jqop,
    raise_nofile_limit,
    wait_all_final,
    wait_for_status,
    write_config,
)

from jqueue import constants
from jqueue.luxi.client import Client

pytestmark = pytest.mark.timeout(120)

MAX_MESSAGE = 1024 * 1024
MAX_CONNECTIONS = 1500
MAX_PIPELINED = 8
FIELDS = list(constants.JOB_FIELDS)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """A daemon with short timeouts and small limits, holding a few finished jobs."""
    tmp = tmp_path_factory.mktemp("hostile")
    path = write_config(tmp / "jq.toml", read_timeout=1, idle_timeout=2,
                        max_message_bytes=MAX_MESSAGE, max_connections=MAX_CONNECTIONS,
                        max_pipelined=MAX_PIPELINED, luxi_threads=4, workers=2,
                        cluster_name="hostile")
    daemon = Daemon(tmp / "state", config=path).start()
    with daemon.client() as client:
        ids = [client.submit_job([delay(0)]),
               client.submit_job([jqop(log_messages=["x", "y"], fail=True)]),
               client.submit_job([delay(60)])]
        wait_for_status(client, ids[2], {"running"})
        client.cancel_job(ids[2])
        wait_all_final(client, ids)
    yield daemon
    assert daemon.stop() == 0, daemon.stderr()


def snapshot(daemon):
    """Every live job with every field, as QueryJobs answers."""
    return daemon.call("QueryJobs", [[], FIELDS])


@contextlib.contextmanager
def guarded(daemon):
    """Run the block while a good client keeps querying; then check nothing changed."""
    before = snapshot(daemon)
    ids = [row[0] for row in before]
    stop, problems, answered = threading.Event(), [], [0]

    def work():
        client = Client(daemon.socket, connect_timeout=5, timeout=15)
        while not stop.is_set():
            try:
                assert client.query_jobs(ids, FIELDS) == before
                assert client.query_config_values(["cluster_name"]) == ["hostile"]
                answered[0] += 1
            except Exception as err:  # noqa: BLE001 - reported below
                problems.append(repr(err))
                client.close()
            stop.wait(0.02)
        client.close()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(30)
    assert not problems, problems[:5]
    assert answered[0] > 0
    assert daemon.alive(), daemon.stderr()
    assert snapshot(daemon) == before


def request_bytes(method, args):
    return json.dumps({"method": method, "args": args}).encode() + EOM


def test_unterminated_message_is_closed_after_read_timeout(target):
    """Half a message and no terminator: the connection is closed after read_timeout (1 s);
    a silent connection after idle_timeout (2 s)."""
    with guarded(target):
        with RawLuxi(target.socket) as half, RawLuxi(target.socket) as silent:
            started = time.monotonic()
            half.send_raw(b'{"method": "QueryJobs", "args": [[], ["id"]]')
            assert half.eof(timeout=6)
            assert 0.8 <= time.monotonic() - started < 4
            assert silent.eof(timeout=8)
            assert 1.8 <= time.monotonic() - started < 6


def test_huge_message_is_refused_without_being_buffered(target):
    """A 100 MB message gets an error answer and a closed connection, and the daemon's
    memory never grows by anything near 100 MB."""
    peak_before = target.proc_status("VmHWM")
    chunk = b"[" + b"1," * (512 * 1024)
    sent = 0
    with guarded(target):
        with RawLuxi(target.socket) as raw:
            raw.send_raw(b'{"method": "QueryJobs", "args": ')
            try:
                while sent < 100 * 1024 * 1024:
                    raw.sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            success, result = raw.receive()
            assert not success and result[0] == "ProtocolError"
            assert "exceeds %d bytes" % MAX_MESSAGE in result[1][0]
            assert raw.eof()
    assert sent < 100 * 1024 * 1024
    peak_after = target.proc_status("VmHWM")
    assert peak_after < 100 * 1024 and peak_after - peak_before < 30 * 1024, (
        peak_before, peak_after)


MALFORMED = [
    (b'{"method": "QueryJobs", "args": [[], ["id"]', "RequestError", "not valid JSON"),
    (b'\xff\xfe{"method": "QueryJobs"}', "RequestError", "UTF-8"),
    (b'[1, 2, 3]', "RequestError", "JSON object"),
    (b'"QueryJobs"', "RequestError", "JSON object"),
    (b'null', "RequestError", "JSON object"),
    (b'{"method": "QueryJobs", "args": [[NaN], ["id"]]}', "RequestError", "not valid JSON"),
    (b'[' * 100000 + b']' * 100000, "RequestError", "not valid JSON"),
    (b'{"args": []}', "RequestError", "no 'method'"),
    (b'{"method": 5, "args": []}', "RequestError", "'method' must be a string"),
    (b'{"method": "QueryJobs", "args": {"a": 1}}', "RequestError", "'args' must be a list"),
    (b'{"method": "__init__", "args": []}', "RequestError", "unknown method"),
    (b'{"method": "RemoveAllJobs", "args": []}', "RequestError", "unknown method"),
    (b'{"method": "query_jobs", "args": [[], ["id"]]}', "RequestError", "unknown method"),
    (b'{"method": "QueryJobs", "args": [[]]}', "RequestError", "takes 2 arguments"),
    (b'{"method": "QueryJobs", "args": [[], ["id"], 3]}', "RequestError", "takes 2"),
    (b'{"method": "QueryJobs", "args": [5, ["id"]]}', "RequestError", "argument 1"),
    (b'{"method": "QueryJobs", "args": [[], "id"]}', "RequestError", "argument 2"),
    (b'{"method": "QueryJobs", "args": [[], ["nosuchfield"]]}', "OpPrereqError", "nosuchfield"),
    (b'{"method": "SetDrainFlag", "args": ["yes"]}', "RequestError", "boolean"),
    (b'{"method": "SubmitJob", "args": ["ops"]}', "RequestError", "list of opcodes"),
    (b'{"method": "SubmitJob", "args": [[{"OP_ID": "OP_NOPE"}]]}', "OpPrereqError", "OP_NOPE"),
    (b'{"method": "SubmitJob", "args": [[{"OP_ID": "OP_TEST_DELAY", "duration": -1}]]}',
     "OpPrereqError", "duration"),
    (b'{"method": "SubmitManyJobs", "args": [[[{"OP_ID": "OP_TEST_DELAY", "duration": 0}],'
     b' [{"OP_ID": "OP_TEST_DELAY"}]]]}', "OpPrereqError", "duration"),
    (b'{"method": "WaitForJobChange", "args": [1, ["status"], null, null, -5]}',
     "RequestError", "timeout"),
    (b'{"method": "AutoArchiveJobs", "args": ["all", 10]}', "RequestError", "age"),
    (b'{"method": "AutoArchiveJobs", "args": [-1, -1]}', "OpPrereqError",
     "argument 2 (timeout)"),
    (b'{"method": "AutoArchiveJobs", "args": [-2, 10]}', "OpPrereqError", "argument 1 (age)"),
    (b'{"method": "ChangeJobPriority", "args": [1, 99]}', "OpPrereqError",
     "argument 2 (priority)"),
    (b'{"method": "QueryJobs", "method": "SetDrainFlag", "args": [true]}', "RequestError",
     "duplicate key 'method'"),
    (b'{"method": "SubmitJob", "args": [[{"OP_ID": "OP_TEST_DELAY", "duration": 0, '
     b'"duration": 5}]]}', "RequestError", "duplicate key 'duration'"),
    (b'{"method": "Query", "args": ["node", ["name"], null]}', "OpPrereqError", "node"),
    (b'{"method": "Query", "args": ["job", ["id"], ["=~", "id"]]}', "QueryFilterParseError",
     ""),
]


def test_malformed_requests_get_errors_and_the_connection_goes_on(target):
    """Invalid JSON or UTF-8, non-objects, unknown methods, wrong arity and types each get
    an error answer naming the problem; the same connection then works normally."""
    with guarded(target):
        with RawLuxi(target.socket) as raw:
            for payload, error_class, words in MALFORMED:
                raw.send_raw(payload + b"\n" + EOM)
                success, result = raw.receive()
                assert not success, payload[:80]
                assert result[0] == error_class and words in json.dumps(result), (
                    payload[:80], result)
                assert raw.ok("QueryConfigValues", [["cluster_name"]]) == ["hostile"]


HOSTILE_IDS = ["../1", "1/../2", -1, 1.5, "1 ", " 1", "+1", "1\n", "0x10", "", None, True,
               "\u0661", 10 ** 30, "9" * 25, [1], {"id": 1}, "1e3", "-0"]


@pytest.mark.parametrize("job_id", HOSTILE_IDS, ids=repr)
def test_hostile_job_ids_are_refused_by_every_method(target, job_id):
    """A hostile job id is refused by every method taking one, before it nears a path."""
    calls = [("QueryJobs", [[job_id], ["id"]]), ("CancelJob", [job_id]),
             ("CancelJob", [job_id, True]), ("ArchiveJob", [job_id]),
             ("ChangeJobPriority", [job_id, 0]),
             ("WaitForJobChange", [job_id, ["status"], None, None, 0])]
    with guarded(target):
        with RawLuxi(target.socket) as raw:
            for method, args in calls:
                success, result = raw.request(method, args)
                assert not success and result[0] == "RequestError", (method, result)
                assert "job id" in result[1][0], result


def test_two_thousand_connections_at_once(target):
    """2,000 connections opened together are each served or refused cleanly (closed), some
    of each with a limit of 1,500; the daemon serves normally afterwards."""
    raise_nofile_limit()
    sockets = []
    served = refused = 0
    with guarded(target):
        try:
            for _ in range(2000):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(target.socket)  # blocking: waits while the backlog is full
                sock.settimeout(20)
                sockets.append(sock)
            request = request_bytes("QueryConfigValues", [["cluster_name"]])
            for sock in sockets:
                try:
                    sock.sendall(request)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            for sock in sockets:
                answer = _read_answer(sock)
                if answer is None:
                    refused += 1
                else:
                    assert json.loads(answer) == {"success": True, "result": ["hostile"]}
                    served += 1
        finally:
            for sock in sockets:
                sock.close()
    assert served + refused == 2000
    assert served >= MAX_CONNECTIONS - 100 and refused >= 400, (served, refused)
    assert target.call("QueryConfigValues", [["cluster_name"]]) == ["hostile"]


def _read_answer(sock):
    """One answer (bytes without terminator), or None if the daemon closed the connection."""
    data = b""
    try:
        while EOM not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    except ConnectionResetError:
        return None
    return data.split(EOM, 1)[0]


def test_clients_vanishing_mid_request(target):
    """Clients that close after half a request, after a full request without reading the
    answer, or with waits and pipelined requests in flight, leave the daemon unharmed."""
    job_ids = [row[0] for row in snapshot(target)]
    full = request_bytes("QueryJobs", [job_ids, FIELDS])
    wait = request_bytes("WaitForJobChange", [job_ids[0], ["status"], None, None, 5])
    with guarded(target):
        for round_ in range(40):
            for data in (full[:len(full) // 2], full, wait, full * 4 + wait):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(target.socket)
                sock.sendall(data)
                if round_ % 2:
                    sock.shutdown(socket.SHUT_WR)
                sock.close()
        time.sleep(0.3)


def test_too_many_pipelined_requests_close_the_connection(target):
    """Requests sent far ahead of the answers: the first ones are answered, then an error,
    then the connection is closed."""
    with guarded(target):
        with RawLuxi(target.socket) as raw:
            raw.send_raw(request_bytes("QueryConfigValues", [["cluster_name"]]) * 200)
            answers = []
            with contextlib.suppress(ConnectionError):
                while True:
                    answers.append(raw.receive())
            assert answers[0] == (True, ["hostile"])
            assert answers[-1][0] is False and answers[-1][1][0] == "ProtocolError"
            assert "pipelined" in answers[-1][1][1][0]
            assert len(answers) <= MAX_PIPELINED + 2


def test_client_that_never_reads_its_answers_is_cut_off(target):
    """A client asking for large answers and never reading them is cut off once it stayed
    idle_timeout (2 s) blocked: the daemon holds no answers for it without bound."""
    job_ids = [row[0] for row in snapshot(target)]
    request = request_bytes("QueryJobs", [job_ids * 100, FIELDS])
    with guarded(target):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(target.socket)
        try:
            for _ in range(6):
                sock.sendall(request)
                time.sleep(0.1)
            time.sleep(2 + 1.5)
            sock.setblocking(False)
            with pytest.raises(OSError) as raised:
                for _ in range(100):
                    sock.send(request)
            assert raised.value.errno in (errno.EPIPE, errno.ECONNRESET), raised.value
        finally:
            sock.close()
        assert "read no answer" in target.stderr()
