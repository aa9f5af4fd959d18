"""Tests of jqueue.cluster.rpc over real mutual TLS on loopback.

The servers run in a child process (tests/rpc_server_child.py: a real reactor, real
listeners, test handlers that record their calls), started once for this module; the
clients are the real blocking RpcClient of this process.
"""

import base64
import datetime
import http.client
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from daemon_helpers import closed_by_peer

from jqueue import errors, serializer
from jqueue.cluster import tls
from jqueue.cluster.rpc import client as rpc_client
from jqueue.cluster.rpc import server

CHILD = os.path.join(os.path.dirname(__file__), "rpc_server_child.py")
MAX_BODY = 1024 * 1024
#: Nodes the servers let call them (node3 has a valid certificate but is not one).
ALLOWED = "node1,node2,node4,node5"
#: Listener label -> the TLS directory it serves with (its certificate's node name).
LISTENERS = {"node1": "node1", "node4": "node4", "node5": "node5", "node7": "node7",
             "mismatch": "node9", "foreign": "foreign-node1", "capped": "node1",
             "hasty": "node1", "future": "future-node2"}
#: Listener label -> its idle timeout[, most connections[, handshake timeout]].
LIMITS = {"node7": [0.2], "capped": [60, 2], "hasty": [60, 1024, 0.3]}


def days_ago(days):
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)


def write_tls_dir(path, ca_cert, key, cert):
    os.makedirs(path)
    tls.write_pem(os.path.join(path, "ca.crt"), tls.cert_to_pem(ca_cert), False)
    tls.write_pem(os.path.join(path, "node.crt"), tls.cert_to_pem(cert), False)
    tls.write_pem(os.path.join(path, "node.key"), tls.key_to_pem(key), True)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """TLS directories: nodes of the cluster CA, an expired one, and nodes of a foreign CA."""
    base = str(tmp_path_factory.mktemp("pki"))
    ca_key, ca_cert = tls.create_ca("cluster")
    foreign = tls.create_ca("cluster")
    dirs = {}
    for name in ["node1", "node2", "node3", "node4", "node5", "node7", "node9"]:
        dirs[name] = write_tls_dir(os.path.join(base, name), ca_cert,
                                   *tls.issue_node_cert(ca_key, ca_cert, name))
    dirs["expired-node2"] = write_tls_dir(
        os.path.join(base, "expired-node2"), ca_cert,
        *tls.issue_node_cert(ca_key, ca_cert, "node2", days=1, not_before=days_ago(3)))
    dirs["future-node2"] = write_tls_dir(
        os.path.join(base, "future-node2"), ca_cert,
        *tls.issue_node_cert(ca_key, ca_cert, "node2", not_before=days_ago(-3)))
    for name in ["node1", "node2"]:
        dirs["foreign-" + name] = write_tls_dir(os.path.join(base, "foreign-" + name),
                                                foreign[1], *tls.issue_node_cert(*foreign, name))
    dirs["ca"] = os.path.join(base, "node1", "ca.crt")
    return dirs


@pytest.fixture(scope="module")
def ports(pki):
    """Start the child's listeners; {label: port}; the child ends with the module."""
    args = [sys.executable, CHILD, str(MAX_BODY), ALLOWED]
    for label, tls_name in LISTENERS.items():
        args.append("=".join([label, pki[tls_name], *map(str, LIMITS.get(label, []))]))
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORTS "):
        proc.kill()
        pytest.fail("the RPC server child did not start: %r" % line)
    yield serializer.loads(line[len("PORTS "):])
    proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def context_of(tls_dir, cert=True):
    """A client context trusting the cluster CA, presenting tls_dir's certificate (if cert)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(os.path.join(tls_dir, "ca.crt"))
    if cert:
        context.load_cert_chain(os.path.join(tls_dir, "node.crt"),
                                os.path.join(tls_dir, "node.key"))
    return context


@pytest.fixture
def make_client(pki, ports):
    """make_client(label, as_dir="node2", node_name=label, ...): an RpcClient closed at teardown."""
    made = []

    def make(label, as_dir="node2", node_name=None, timeout=5.0, context=None, port=None):
        if context is None:
            context = tls.Credentials.from_dir(pki[as_dir]).client_context()
        address = "127.0.0.1:%d" % (port if port is not None else ports[label])
        client = rpc_client.RpcClient(node_name or label, address, context, timeout=timeout)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def good(make_client):
    """A client of node2 (a member) calling node1."""
    return make_client("node1")


@pytest.fixture
def recorded(good):
    """recorded(): the handler calls recorded by the servers so far."""
    return lambda: good.call("calls", {})


def raw_request(ports, pki, method, path, body=b"", headers=None, label="node1"):
    """Send one HTTP request as node2; (status, headers, decoded JSON body or raw bytes)."""
    context = context_of(pki["node2"])
    context.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", ports[label], context=context, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        data = serializer.loads(data)
    except errors.ParseError:
        pass
    return response.status, response, data


def read_until_closed(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (OSError, ssl.SSLError):
            return data
        if not chunk:
            return data
        data += chunk


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# Calls that work


def test_a_member_calls_a_method_and_gets_its_result(good):
    """A member's call returns the handler's result, which saw the caller's node name."""
    assert good.call("echo", {"x": [1, "two"]}) == {"peer": "node2", "body": {"x": [1, "two"]},
                                                    "server": "node1"}


def test_non_blocking_handlers_may_answer_with_a_deferred(good):
    """A non-blocking handler's Deferred result is answered when it fires."""
    assert good.call("later", {}) == {"from": "node1", "peer": "node2"}


def test_a_bytes_result_arrives_as_the_bytes_themselves(good):
    """A handler's Bytes result (a piece of output) is answered and returned as bytes,
    whole, however many TLS records it spans; the connection serves the next call."""
    for times in (0, 1, 20 * 1024 + 3):  # up to 5 MiB and more
        data = good.call("octets", {"times": times})
        assert isinstance(data, bytes)
        assert data == bytes(range(256)) * times
    assert good.call("echo", {"after": True})["body"] == {"after": True}


@pytest.mark.parametrize("accept, raw", [
    ("application/json", False), ("", False),
    ("application/json, application/octet-stream", True),
    ("application/octet-stream;q=0.5", True)])
def test_a_bytes_result_is_base64_json_unless_the_client_accepts_octets(ports, pki, accept,
                                                                        raw):
    """Bytes go out raw only to a client that says it accepts application/octet-stream
    (ours does); any other client gets the JSON answer with the data in base64."""
    headers = {"Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    status, response, data = raw_request(ports, pki, "POST", "/rpc/octets", b'{"times": 3}',
                                         headers)
    assert status == 200
    expected = bytes(range(256)) * 3
    if raw:
        assert response.getheader("Content-Type") == "application/octet-stream"
        assert data == expected
    else:
        assert response.getheader("Content-Type") == "application/json"
        assert data["success"] is True
        assert base64.b64decode(data["result"]["data"]) == expected


def test_many_calls_share_one_kept_alive_connection(good, make_client):
    """Fifty calls of one client use one TLS connection: the server accepted exactly one."""
    before = good.call("stats", {})["node1"]
    other = make_client("node1")
    other.call("echo", {})
    sock = other._conn.sock
    for i in range(50):
        assert other.call("echo", {"i": i})["body"] == {"i": i}
    assert other._conn.sock is sock
    assert good.call("stats", {})["node1"] - before == 1


def test_pipelined_calls_are_answered_in_order_on_one_connection(good, make_client):
    """Calls sent before the answers of those before them are read (HTTP/1.1 pipelining)
    get their answers in order, on one connection: a piece of output, a blocking and a
    non-blocking handler's results, a handler's error; then plain calls go on."""
    before = good.call("stats", {})["node1"]
    client = make_client("node1")
    calls = [("octets", {"times": 4096}), ("echo", {"i": 1}), ("later", {}), ("fail", {}),
             ("octets", {"times": 3})]
    for method, body in calls:
        client.send_pipelined(method, body)
    assert client.pipelined == 5
    assert client.receive_pipelined("octets") == bytes(range(256)) * 4096
    assert client.receive_pipelined("echo")["body"] == {"i": 1}
    assert client.receive_pipelined("later") == {"from": "node1", "peer": "node2"}
    with pytest.raises(errors.OpPrereqError, match="refused on purpose"):
        client.receive_pipelined("fail")
    assert client.pipelined == 1
    with pytest.raises(errors.ProgrammerError, match="1 pipelined calls not received"):
        client.call("echo", {})  # its answer would be taken for the one still unread
    assert client.receive_pipelined("octets") == bytes(range(256)) * 3
    assert client.pipelined == 0
    assert client.call("echo", {"after": True})["body"] == {"after": True}
    assert good.call("stats", {})["node1"] - before == 1


def test_a_failed_pipelined_answer_loses_the_calls_after_it_and_the_client_goes_on(
        make_client):
    """A pipelined answer that times out closes the connection: the calls sent after it
    are lost (asking for one is a RemoteError, not a hang) and the next call connects
    anew."""
    client = make_client("node1", timeout=0.3)
    client.send_pipelined("sleep", {"seconds": {"node1": 1.0}})
    client.send_pipelined("echo", {"i": 2})
    with pytest.raises(errors.RemoteError, match="timed out after 0.3s"):
        client.receive_pipelined("sleep")
    assert client.pipelined == 0
    with pytest.raises(errors.RemoteError, match="closed before the answer"):
        client.receive_pipelined("echo")
    time.sleep(0.8)  # (the server's thread is still in the sleep)
    assert client.call("echo", {"i": 3})["body"] == {"i": 3}


def test_a_kept_connection_closed_by_the_server_is_replaced(make_client):
    """After the server closed an idle kept connection, the next call reconnects by itself."""
    client = make_client("node7", as_dir="node2")
    before = client.call("stats", {})["node7"]
    time.sleep(0.6)
    assert client.call("echo", {})["server"] == "node7"
    assert client.call("stats", {})["node7"] - before == 1


def test_at_the_cap_a_new_connection_takes_the_place_of_the_oldest_in_its_handshake(
        ports, make_client):
    """Silent peers holding every slot cannot keep a node out: at the cap, a new connection
    takes the place of the oldest one still in its TLS handshake."""
    silent = [socket.create_connection(("127.0.0.1", ports["capped"])) for _ in range(2)]
    try:
        time.sleep(0.2)  # both accepted
        assert make_client("capped", node_name="node1").call("echo", {})["server"] == "capped"
        assert closed_by_peer(silent[0], 5)
        assert not closed_by_peer(silent[1], 0.2)
    finally:
        for sock in silent:
            sock.close()


def test_at_the_cap_with_every_connection_authenticated_a_new_one_is_closed_at_once(
        ports, make_client):
    """When every slot is an authenticated connection, the next one is closed as soon as it
    is made (no descriptor of the node kept for it); once one ends, calls go through."""
    clients = [make_client("capped", node_name="node1") for _ in range(2)]
    for client in clients:
        assert client.call("echo", {})["server"] == "capped"  # kept alive: a slot each
    with socket.create_connection(("127.0.0.1", ports["capped"])) as extra:
        assert closed_by_peer(extra, 5)
    clients[0].close()
    time.sleep(0.2)
    assert make_client("capped", node_name="node1").call("echo", {})["server"] == "capped"


def test_a_connection_without_a_tls_handshake_is_dropped_after_its_deadline(ports,
                                                                            make_client):
    """A peer that connects and never completes the handshake is dropped after
    handshake_timeout; an authenticated connection stays past it (kept alive, reused)."""
    client = make_client("hasty", node_name="node1")
    before = client.call("stats", {})["hasty"]
    with socket.create_connection(("127.0.0.1", ports["hasty"])) as silent:
        started = time.monotonic()
        assert closed_by_peer(silent, 10)
        assert 0.2 < time.monotonic() - started < 8
    assert client.call("echo", {})["server"] == "hasty"
    assert client.call("stats", {})["hasty"] - before == 1  # only the silent one was new


def test_one_client_is_safe_to_share_between_threads(good):
    """Calls from several threads over one client all get their own answers."""
    failures = []

    def work(n):
        for i in range(20):
            if good.call("echo", {"n": n, "i": i})["body"] != {"n": n, "i": i}:
                failures.append((n, i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_body_just_under_the_limit_is_accepted(good):
    """A body a little under max_body is served."""
    data = "x" * (MAX_BODY - 100)
    assert good.call("size", {"data": data}) == len(data)


# Refusals: the handler never runs


def test_a_node_outside_the_cluster_is_refused_with_403(make_client, recorded):
    """A valid certificate of a node the cluster does not hold gets TlsError naming it."""
    before = recorded()
    with pytest.raises(errors.TlsError, match="node node3 is not a node of this cluster"):
        make_client("node1", as_dir="node3").call("echo", {})
    assert recorded() == before


@pytest.mark.parametrize("tls_dir", ["foreign-node2", "expired-node2", "no certificate"])
def test_bad_client_certificates_fail_the_handshake(make_client, pki, recorded, tls_dir):
    """A client certificate from another CA, an expired one, or none at all: no call is made;
    the caller is told the node refused its certificate (and what may be wrong there)."""
    if tls_dir == "no certificate":
        context = context_of(pki["node2"], cert=False)
    else:
        context = context_of(pki[tls_dir])
        context.load_verify_locations(pki["ca"])
    before = recorded()
    with pytest.raises(errors.RemoteError, match="RPC echo to node node1 .* failed") as info:
        make_client("node1", context=context).call("echo", {})
    assert recorded() == before
    hint = "the node refused this node's certificate (its clock wrong, or another cluster's CA"
    assert (hint in str(info.value)) == (tls_dir != "no certificate")


def test_a_refused_certificate_is_described_with_this_nodes_clock_if_dates_are_why(pki):
    """The RPC server's log line of a refused certificate says why: its dates by this
    node's clock (which may be what is wrong), or that another CA issued it."""
    def cert(name):
        return tls.load_cert_pem(open(os.path.join(pki[name], "node.crt"), "rb").read())
    expired = tls.verify_problem(cert("expired-node2"), 10)
    assert expired.startswith("the certificate of node2 is expired on ")
    assert expired.endswith(" UTC: is it right?") and "by this node's clock, " in expired
    assert tls.verify_problem(cert("foreign-node2"), 20) == (
        "the certificate of node2 is refused: its issuer is not this cluster's CA")
    ca = tls.load_cert_pem(open(pki["ca"], "rb").read())
    assert tls.verify_problem(ca, 9).startswith("the CA certificate of cluster cluster is ")
    assert tls.verify_problem(cert("node1"), 99) == (
        "the certificate of node1 is refused: OpenSSL's verification error 99")


def test_unknown_methods_get_404(good, ports, pki, recorded):
    """An unknown method is a 404 with RequestError; the client raises it."""
    before = recorded()
    with pytest.raises(errors.RequestError, match="unknown RPC method: /rpc/nope"):
        good.call("nope", {})
    status, _, body = raw_request(ports, pki, "POST", "/other", b"{}",
                                  {"Content-Type": "application/json"})
    assert (status, body["success"], body["result"][0]) == (404, False, "RequestError")
    assert recorded() == before


def test_other_http_methods_get_405(ports, pki, recorded):
    """GET on a method is a 405 that says to use POST."""
    before = recorded()
    status, response, body = raw_request(ports, pki, "GET", "/rpc/echo")
    assert status == 405 and response.getheader("Allow") == "POST"
    assert body["result"][0] == "RequestError"
    assert recorded() == before


@pytest.mark.parametrize("body,content_type,message", [
    (b"{not json", "application/json", "invalid JSON"),
    (b"[1, 2]", "application/json", "must be a JSON object, not list"),
    (b'"text"', "application/json; charset=utf-8", "must be a JSON object, not str"),
    (b"{}", "text/plain", "must be application/json"),
    (b"\xff\xfe", "application/json", "invalid JSON"),
])
def test_bad_bodies_get_400(ports, pki, recorded, body, content_type, message):
    """Invalid JSON, JSON that is not an object, and other content types are 400s."""
    before = recorded()
    status, _, answer = raw_request(ports, pki, "POST", "/rpc/echo", body,
                                    {"Content-Type": content_type})
    assert status == 400
    assert answer["success"] is False and answer["result"][0] == "RequestError"
    assert message in answer["result"][1][0]
    assert recorded() == before


def test_an_oversized_content_length_is_refused_before_the_body(ports, pki, recorded, good):
    """A Content-Length over the limit is answered 413 at once, without sending the body."""
    before = recorded()
    sock = context_of(pki["node2"]).wrap_socket(
        socket.create_connection(("127.0.0.1", ports["node1"]), timeout=5),
        server_hostname="node1")
    with sock:
        sock.sendall(b"POST /rpc/echo HTTP/1.1\r\nHost: node1\r\nContent-Type: application/json"
                     b"\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"success":false,"result":["RequestError",["request body too large' in answer
    assert recorded() == before
    assert good.call("echo", {})["peer"] == "node2"


def test_a_chunked_body_growing_past_the_limit_is_refused(ports, pki, recorded, good):
    """A body without Content-Length is cut off with 413 once it passes the limit."""
    before = recorded()
    sock = context_of(pki["node2"]).wrap_socket(
        socket.create_connection(("127.0.0.1", ports["node1"]), timeout=5),
        server_hostname="node1")
    chunk = b"x" * 65536
    with sock:
        sock.sendall(b"POST /rpc/echo HTTP/1.1\r\nHost: node1\r\nContent-Type: application/json"
                     b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(8 * MAX_BODY // len(chunk)):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"grew past the limit of %d bytes" % MAX_BODY in answer
    assert recorded() == before
    assert good.call("echo", {})["peer"] == "node2"


# Handler errors


def test_a_handler_error_arrives_as_its_class(good):
    """A GenericError raised by a handler is raised by the client as that class, with its args."""
    with pytest.raises(errors.OpPrereqError) as info:
        good.call("fail", {})
    assert info.value.args == ("refused on purpose", "wrong_input")


def test_a_handler_bug_is_a_programmer_error_and_the_server_goes_on(good):
    """A ZeroDivisionError in a handler arrives as ProgrammerError; the next call works."""
    with pytest.raises(errors.ProgrammerError, match="internal error: ZeroDivisionError"):
        good.call("bug", {})
    assert good.call("echo", {})["peer"] == "node2"


# The client's check of the server


def test_a_server_naming_another_node_is_refused(make_client, recorded):
    """A server whose certificate names node9 is refused when node1 was wanted."""
    before = recorded()
    client = make_client("mismatch", node_name="node1")
    with pytest.raises(errors.RemoteError, match="server certificate refused: Hostname mismatch"):
        client.call("echo", {})
    assert recorded() == before


def test_a_server_of_a_foreign_ca_is_refused(make_client, recorded):
    """A server whose certificate comes from another CA is refused, even if it names node1."""
    before = recorded()
    client = make_client("foreign", node_name="node1")
    with pytest.raises(errors.RemoteError, match="server certificate refused"):
        client.call("echo", {})
    assert recorded() == before


def test_a_server_certificate_not_yet_valid_is_refused_naming_this_nodes_clock(make_client,
                                                                               recorded):
    """A server whose certificate is not valid yet (by the caller's clock, which may be
    what is wrong) is refused, and the error says by which clock."""
    before = recorded()
    with pytest.raises(errors.RemoteError, match=r"server certificate refused: certificate "
                       r"is not yet valid \(by this node's clock, 20\d\d-.* UTC: is it right\?\)"):
        make_client("future", node_name="node2").call("echo", {})
    assert recorded() == before


def test_a_refused_connection_is_a_remote_error(make_client):
    """Nobody listening: RemoteError naming node, address, method and cause."""
    port = closed_port()
    client = make_client("node1", port=port)
    with pytest.raises(errors.RemoteError) as info:
        client.call("echo", {})
    assert str(info.value) == "RPC echo to node node1 (127.0.0.1:%d) failed: connection refused" % (
        port)


def test_unsendable_bodies_are_refused_before_sending(good):
    """A body that is not a dict, not JSON-able, or a bad method name: ParameterError."""
    for method, body in [("echo", [1]), ("echo", {"x": object()}), ("no/such", {})]:
        with pytest.raises(errors.ParameterError):
            good.call(method, body)


# Streams


def open_raw_stream(ports, pki, opening):
    """A TLS socket as node2 to node1 whose stream method "stream" was opened with opening."""
    sock = context_of(pki["node2"]).wrap_socket(
        socket.create_connection(("127.0.0.1", ports["node1"]), timeout=5),
        server_hostname="node1")
    body = serializer.dumps_bytes(opening)
    sock.sendall(b"POST /rpc/stream HTTP/1.1\r\nHost: node1\r\nContent-Type: application/json"
                 b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    opened = b'{"success":true,"result":{"stream":1}}'
    head = b""
    while not head.endswith(opened) and len(head) < 1000:  # read exactly the opening's answer
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(opened)
    return sock


def message(head, data=b""):
    head = serializer.dumps_bytes(head)
    return server.MESSAGE_LENGTHS.pack(len(head), len(data)) + head + data


def read_answers(sock, count):
    data = b""
    answers = []
    while len(answers) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while len(data) >= 4 and len(data) >= 4 + server.ANSWER_LENGTH.unpack_from(data)[0]:
            (length,) = server.ANSWER_LENGTH.unpack_from(data)
            answers.append(serializer.loads(data[4:4 + length]))
            data = data[4 + length:]
    return answers


def test_a_stream_carries_messages_and_answers_them_on_one_connection(good, make_client):
    """After its opening call, each message's head and data reach the handler with the
    opening's body and the caller; 20 messages use one connection."""
    client = make_client("node1")
    before = good.call("stats", {})["node1"]
    for seq in range(20):
        answer = client.stream("stream", {"epoch": 3}, {"seq": seq}, b"x" * seq * 5000)
        assert answer == {"seq": seq, "size": seq * 5000, "opening": {"epoch": 3},
                          "peer": "node2"}
    assert good.call("stats", {})["node1"] - before == 1


def test_stream_answers_keep_the_order_of_their_messages(ports, pki):
    """A message answered later (a Deferred) is answered before the next one, answered at
    once: answers go back in the messages' order."""
    with open_raw_stream(ports, pki, {}) as sock:
        sock.sendall(message({"seq": 1, "delay": 0.2}) + message({"seq": 2}, b"abc"))
        answers = read_answers(sock, 2)
    assert [a["result"]["seq"] for a in answers] == [1, 2]
    assert answers[1]["result"]["size"] == 3


def test_a_refused_stream_message_is_its_callers_error_and_the_stream_goes_on(
        good, make_client):
    """A handler's error answers its message with its class; the next message is served on
    the same connection."""
    client = make_client("node1")
    client.stream("stream", {}, {"seq": 1}, b"")
    before = good.call("stats", {})["node1"]
    with pytest.raises(errors.OpPrereqError, match="message refused on purpose"):
        client.stream("stream", {}, {"seq": 2, "fail": True}, b"")
    assert client.stream("stream", {}, {"seq": 3}, b"")["seq"] == 3
    assert good.call("stats", {})["node1"] == before


def test_a_refused_opening_is_raised_and_keeps_no_stream(make_client):
    """An opening the handler refuses raises its error; the next opening is tried anew."""
    client = make_client("node1")
    with pytest.raises(errors.OpPrereqError, match="stream refused on purpose"):
        client.stream("stream", {"refuse": True}, {"seq": 1}, b"")
    assert client._stream is None
    assert client.stream("stream", {"ok": 1}, {"seq": 2}, b"")["opening"] == {"ok": 1}


def test_a_new_opening_body_opens_a_new_stream(good, make_client):
    """A stream is kept for one opening (a replication stream for one epoch): another
    opening body opens another stream."""
    client = make_client("node1")
    before = good.call("stats", {})["node1"]
    assert client.stream("stream", {"epoch": 1}, {}, b"")["opening"] == {"epoch": 1}
    assert client.stream("stream", {"epoch": 2}, {}, b"")["opening"] == {"epoch": 2}
    assert good.call("stats", {})["node1"] - before == 2


def test_a_stream_closed_by_the_server_is_opened_again(make_client):
    """After the server closed an idle stream, the next message opens it again by itself."""
    client = make_client("node7", as_dir="node2")
    before = client.call("stats", {})["node7"]
    assert client.stream("stream", {}, {"seq": 1}, b"")["seq"] == 1
    time.sleep(0.6)
    assert client.stream("stream", {}, {"seq": 2}, b"")["seq"] == 2
    # the stream twice, and the calls' connection again (closed by the same idle timeout)
    assert client.call("stats", {})["node7"] - before == 3


def test_a_node_without_the_stream_method_is_stream_unsupported(good):
    """An older node answers the opening of a stream it does not serve with 404:
    StreamUnsupported, a RemoteError the caller falls back from."""
    with pytest.raises(rpc_client.StreamUnsupported, match="serves no stream replicate_stream"):
        good.stream("replicate_stream", {}, {}, b"")
    assert good.call("echo", {})["server"] == "node1"


def test_a_stream_of_a_node_no_longer_allowed_is_refused_and_closed(good, make_client):
    """Membership is asked at every message, as at every request: once the calling node
    is no longer allowed, its next message is answered with TlsError and its stream
    closed; allowed again, it opens a new one."""
    client = make_client("node1", as_dir="node4")
    assert client.stream("stream", {}, {"seq": 1}, b"")["peer"] == "node4"
    try:
        good.call("allow", {"name": "node4", "allowed": False})
        with pytest.raises(errors.TlsError, match="node node4 is not a node of this cluster"):
            client.stream("stream", {}, {"seq": 2}, b"")
        with pytest.raises(errors.TlsError, match="not a node of this cluster"):
            client.stream("stream", {}, {"seq": 3}, b"")  # a new opening: refused (403)
    finally:
        good.call("allow", {"name": "node4", "allowed": True})
    assert client.stream("stream", {}, {"seq": 4}, b"")["seq"] == 4


@pytest.mark.parametrize("bad, error", [
    (server.MESSAGE_LENGTHS.pack(10, MAX_BODY + 1), "stream message too large"),
    (server.MESSAGE_LENGTHS.pack(server.MAX_MESSAGE_HEAD + 1, 0), "stream message too large"),
    (server.MESSAGE_LENGTHS.pack(3, 0) + b"[1]", "must be a JSON object, not list"),
    (server.MESSAGE_LENGTHS.pack(3, 0) + b"{x}", "bad stream message head"),
])
def test_a_malformed_stream_message_is_answered_and_the_stream_closed(ports, pki, good, bad,
                                                                       error):
    """Lengths over the limits or a head that is not a JSON object: the messages before it
    are answered, then a RequestError, then the server closes the connection; it serves
    others as before."""
    with open_raw_stream(ports, pki, {}) as sock:
        sock.sendall(message({"seq": 1}) + bad)
        answers = read_answers(sock, 3)
    assert answers[0]["result"]["seq"] == 1
    assert answers[1]["success"] is False and answers[1]["result"][0] == "RequestError"
    assert error in answers[1]["result"][1][0]
    assert len(answers) == 2  # closed after the refusal
    assert good.call("echo", {})["server"] == "node1"


# Timeouts and fan-out


def test_a_slow_handler_times_out_and_the_client_recovers(make_client):
    """A handler slower than the client's timeout gives RemoteError; the next call works."""
    client = make_client("node1", timeout=0.3)
    start = time.monotonic()
    with pytest.raises(errors.RemoteError, match="timed out after 0.3s"):
        client.call("sleep", {"seconds": {"node1": 1.0}})
    assert time.monotonic() - start < 0.9
    assert client.call("echo", {})["server"] == "node1"


def test_call_many_runs_in_parallel_and_reports_every_node(make_client):
    """Results and per-node errors come back together, in about the time of one call."""
    clients = [make_client("node1"), make_client("node4"), make_client("node5"),
               make_client("node1", node_name="node6", port=closed_port()),
               make_client("mismatch", node_name="node8")]
    start = time.monotonic()
    results = rpc_client.call_many(clients, "sleep", {"seconds": {
        "node1": 0.5, "node4": 0.5, "node5": 0.5}})
    assert time.monotonic() - start < 1.2
    assert {name: results[name] for name in ["node1", "node4", "node5"]} == {
        "node1": "node1", "node4": "node4", "node5": "node5"}
    assert isinstance(results["node6"], errors.RemoteError)
    assert "connection refused" in str(results["node6"])
    assert isinstance(results["node8"], errors.RemoteError)


def test_call_many_gives_up_on_slow_nodes_at_its_timeout(make_client):
    """Nodes still busy at call_many's timeout map to RemoteError "timed out"; others answer."""
    clients = [make_client("node1"), make_client("node5")]
    start = time.monotonic()
    results = rpc_client.call_many(clients, "sleep", {"seconds": {"node1": 0, "node5": 1.2}},
                                   timeout=0.4)
    assert time.monotonic() - start < 1.0
    assert results["node1"] == "node1"
    assert isinstance(results["node5"], errors.RemoteError)
    assert "node node5" in str(results["node5"]) and "timed out" in str(results["node5"])


def test_call_many_passes_on_handler_errors_per_node(make_client):
    """A handler error on a node is that node's result, as its own class."""
    results = rpc_client.call_many([make_client("node1"), make_client("node4")], "fail", {})
    assert all(isinstance(r, errors.OpPrereqError) for r in results.values())
    assert sorted(results) == ["node1", "node4"]
