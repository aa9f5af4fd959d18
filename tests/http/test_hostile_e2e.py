"""End to end: hostile HTTP requests get a 4xx (JSON errors), change nothing, and the daemon
stays up; authentication (tokens, client certificates) and CSRF; non-loopback refusal."""

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest
from daemon_helpers import daemon_factory
from http_helpers import HttpClient, free_port, start_http_daemon, token_file

from jqueue.cluster import tls

JOBS = "/api/v1/jobs"
NOOP = {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    factory = daemon_factory(tmp_path_factory.mktemp("hostile"))
    make = next(factory)
    daemon, client = start_http_daemon(make, "--http-max-body", "4096",
                                       "--http-request-timeout", "1")
    yield daemon, client
    client.close()
    next(factory, None)


def raw(port, data, timeout=10):
    """Send raw bytes on a new connection; the whole answer (until the server closes or
    the timeout)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(timeout)
    try:
        sock.sendall(data)
    except OSError:
        pass
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    sock.close()
    return b"".join(chunks)


def status_and_error(answer):
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"] if body.strip() else None


def job_count(client):
    return client.get("/api/v1/info").json()["counts"]


def test_bad_bodies_and_ids_are_4xx_with_json_errors_and_create_nothing(served):
    """Bad JSON, wrong types, unknown opcodes and parameters, hostile ids: 400/404 with
    {"error": {"class", "message"}}; no job appears."""
    daemon, client = served
    before = job_count(client)
    cases = [
        (b"{not json", 400), (b'{"ops": "x"}', 400), (b'{"ops": []}', 400),
        (b'[1, 2]', 400), (b'{"cmd": 42}', 400), (b'{"cmd": "true", "bogus": 1}', 400),
        (b'{"ops": [{"OP_ID": "OP_NOPE"}]}', 400), (b'{"cmd": "true", "dir": "relative"}', 400),
        (b'{"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": -1}]}', 400),
        (b'{"cmd": "true", "token": 5}', 400), (b'{"cmd": "true", "OP_ID": "x"}', 400),
        (b'{"a": 1, "a": 2}', 400), (b"", 400), (b"\xff\xfe", 400),
        (b'{"cmd": "true", "parent": 7}', 404), (b'{"cmd": "true", "parent": true}', 400),
    ]
    for body, status in cases:
        answer = client.post(JOBS, body, headers={"Content-Type": "application/json"})
        assert answer.status == status, (body, answer)
        error = answer.json()["error"]
        assert set(error) == {"class", "message"} and error["message"], (body, error)
    for path in ("/api/v1/jobs/-1", "/api/v1/jobs/1e3", "/api/v1/jobs/..%2f..%2fetc",
                 "/api/v1/jobs/%00", "/api/v1/jobs/99999999999999999999999",
                 "/api/v1/jobs/0x10/log", "/api/v1/jobs/%20%31"):
        answer = client.get(path)
        assert answer.status in (400, 404), (path, answer)
        assert answer.json()["error"]["class"]
    assert client.get("/api/v1/jobs/424242").status == 404
    assert client.get(JOBS + "?limit=0").status == 400
    assert client.get(JOBS + "?limit=abc").status == 400
    assert client.get(JOBS + "?status=sleeping").status == 400
    assert client.get(JOBS + "?since=yesterday").status == 400
    assert client.get(JOBS + "?after=1&before=5").status == 400
    assert client.post(JOBS + "/1/cancel", b'{"kill": "yes"}').status == 400
    assert client.post(JOBS + "/1/signal", b'{"signal": "NOPE"}').status == 400
    assert client.request("PUT", JOBS).status == 405
    assert client.get("/nowhere").status == 404
    assert job_count(client) == before and daemon.alive()


def test_static_files_refuse_path_traversal(served):
    """Only the files shipped in static/ are served: ../ in any spelling is a 404."""
    _, client = served
    assert client.get("/static/app.js").status == 200
    for path in ("/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/api.py",
                 "/static/....//setup.cfg", "/static/app.js%00.png", "/static/.hidden.js",
                 "/static/", "/static/APP.JS", "/../../etc/passwd", "/static/%2fetc%2fpasswd"):
        answer = client.get(path)
        assert answer.status == 404, (path, answer)
        assert b"root:" not in answer.body and b"import" not in answer.body


def test_oversized_body_too_many_headers_and_slow_requests_are_refused(served):
    """413 before a big body is read, 431 for too many or too long headers, 408 for a
    request not sent in time; each closes its connection and the daemon goes on."""
    daemon, client = served
    before = job_count(client)
    port = client.port
    big = json.dumps({"cmd": "true", "title": "x" * 10000}).encode()
    answer = raw(port, b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d"
                 b"\r\n\r\n" % len(big) + big)
    assert status_and_error(answer)[0] == 413
    chunked = raw(port, b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: "
                  b"chunked\r\n\r\n" + b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n"
                                                  for _ in range(8)) + b"0\r\n\r\n")
    assert status_and_error(chunked)[0] == 413
    headers = b"".join(b"X-H%d: v\r\n" % n for n in range(200))
    answer = raw(port, b"GET /api/v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
    assert status_and_error(answer)[0] == 431
    answer = raw(port, b"GET /api/v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " +
                 b"a" * 20000 + b"\r\n\r\n")
    assert status_and_error(answer)[0] == 431
    started = time.monotonic()
    answer = raw(port, b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50"
                 b"\r\n\r\n{\"cmd\"")
    assert status_and_error(answer)[0] == 408 and time.monotonic() - started < 5
    answer = raw(port, b"GARBAGE\r\n\r\n")
    assert status_and_error(answer)[0] == 400
    assert job_count(client) == before and daemon.alive()
    assert client.get("/api/v1/info").status == 200


def test_a_browser_change_needs_the_pages_csrf_token_and_a_foreign_host_is_refused(served):
    """POST with Origin or cookies but no X-CSRF-Token: 403; with the page's token: 201.
    A cross-site GET of addjob: 403 and -1. A Host that is not loopback: 403."""
    _, client = served
    before = job_count(client)
    page = client.get("/")
    assert page.status == 200 and b"<table" in page.body
    cookie = page.headers["set-cookie"]
    token = cookie.split("jq_csrf=")[1].split(";")[0]
    browser = {"Origin": "http://127.0.0.1:%d" % client.port, "Content-Type":
               "application/json"}
    assert client.post(JOBS, NOOP, headers=browser).status == 403
    assert client.post(JOBS, NOOP, headers={"Cookie": "jq_csrf=" + token}).status == 403
    wrong = dict(browser, **{"X-CSRF-Token": "0" * 64})
    assert client.post(JOBS, NOOP, headers=wrong).status == 403
    other = dict(browser, Origin="http://evil.example", **{"X-CSRF-Token": token})
    assert client.post(JOBS, NOOP, headers=other).status == 403
    cross = client.get("/json/addjob?cmd=touch%20/tmp/pwned", headers={
        "Sec-Fetch-Site": "cross-site"})
    assert cross.status == 403 and cross.body == b"-1"
    rebound = client.get("/api/v1/info", headers={"Host": "evil.example:%d" % client.port})
    assert rebound.status == 403
    assert job_count(client) == before
    good = client.post(JOBS, NOOP, headers=dict(browser, **{"X-CSRF-Token": token}))
    assert good.status == 201
    typed = client.get("/json/addjob?cmd=true", headers={"Sec-Fetch-Site": "none"})
    assert typed.status == 200 and int(typed.body) > 0


def test_tokens_authenticate_and_own_jobs(daemons, tmp_path):
    """With a tokens file: no token or a bad one is 401 (nothing created); Bearer, ?token=
    and the page's cookie work; the job's owner is the token's name."""
    path = token_file(tmp_path, alice="a" * 24 + "secret", bob="b" * 32)
    daemon, client = start_http_daemon(daemons, "--http-tokens", path)
    assert client.get("/api/v1/info").status == 401
    assert client.post(JOBS, NOOP).status == 401
    assert client.get(JOBS, headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}).status \
        == 401
    assert client.get("/json/addjob?cmd=true").body == b"-1"
    bearer = {"Authorization": "Bearer " + "a" * 24 + "secret"}
    created = client.post(JOBS, dict(NOOP, owner="mallory"), headers=bearer)
    assert created.status == 201
    job = client.get("%s/%d" % (JOBS, created.json()["id"]), headers=bearer).json()
    assert job["owner"] == "alice"
    answer = client.get("/json/addjob?cmd=true&user=eve&token=" + "b" * 32)
    assert answer.status == 200
    job = client.get("%s/%s?token=%s" % (JOBS, answer.text, "b" * 32)).json()
    assert job["owner"] == "bob"
    page = client.get("/?token=" + "b" * 32)
    cookie = page.headers["set-cookie"]
    assert "jq_token=" in cookie and "HttpOnly" in cookie
    jar = "; ".join(part.split(";")[0] for part in page.headers["set-cookie"].split(", "))
    assert client.get("/api/v1/info", headers={"Cookie": jar}).json()["name"] == "bob"


def test_sighup_reads_the_tokens_file_again(daemons, tmp_path):
    """After SIGHUP a new token works and a removed one is 401, and the event streams it
    opened are closed; a file that does not parse keeps the tokens in force (and is
    logged); the daemon still stops cleanly."""
    old, new = "o" * 20, "n" * 20
    path = token_file(tmp_path, alice=old)
    daemon, client = start_http_daemon(daemons, "--http-tokens", path)
    assert client.get("/api/v1/info?token=" + old).json()["name"] == "alice"
    assert client.get("/api/v1/info?token=" + new).status == 401
    streams = [open_stream(client.port, "/api/v1/events?token=" + old)]
    assert streams[0].recv(4096).startswith(b"HTTP/1.1 200")  # the stream is open
    token_file(tmp_path, bob=new)
    daemon.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while client.get("/api/v1/info?token=" + new).status != 200:
        assert time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.05)
    assert client.get("/api/v1/info?token=" + new).json()["name"] == "bob"
    assert client.get("/api/v1/info?token=" + old).status == 401
    streams.append(open_stream(client.port, "/api/v1/events?token=" + new))
    try:
        read_to_end(streams[0])  # closed by the daemon
    except OSError:
        raise AssertionError(daemon.stderr()) from None
    streams[1].settimeout(1)
    assert streams[1].recv(4096).startswith(b"HTTP/1.1 200")  # the new token's stays open
    with pytest.raises(socket.timeout):
        while streams[1].recv(4096):
            pass
    for sock in streams:
        sock.close()
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("bob short\n")
    daemon.send_signal(signal.SIGHUP)
    while "kept the HTTP tokens" not in daemon.stderr():
        assert time.monotonic() < deadline + 10, daemon.stderr()
        time.sleep(0.05)
    assert client.get("/api/v1/info?token=" + new).json()["name"] == "bob"
    assert daemon.alive()


def open_stream(port, path):
    """A raw connection that asked for path (an event stream)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
    return sock


def read_to_end(sock, timeout=10):
    """What sock receives until the other side closes it (AssertionError after timeout)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_a_non_loopback_address_without_authentication_is_refused(tmp_path):
    """--http 0.0.0.0:PORT without tokens or TLS: the daemon refuses to start."""
    state = tmp_path / "state"
    proc = subprocess.run([sys.executable, "-m", "jqueue.daemon.masterd", "--state-dir",
                           str(state), "--http", "0.0.0.0:%d" % free_port()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "not a loopback address" in proc.stderr


def test_ipv6_loopback_serves_without_authentication(daemons, tmp_path):
    """--http [::1]:PORT is loopback: served openly (Host [::1]:PORT accepted), and the
    log names the URL with its brackets."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = free_port()
    daemon = daemons(args=["--http", "[::1]:%d" % port])
    client = HttpClient(port, host="::1")
    answer = client.wait_ready()
    assert answer.status == 200 and answer.json()["authenticated"] is False
    job_id = client.get("/json/addjob?cmd=true").text
    assert job_id.isdigit()
    assert client.wait_job(int(job_id))["status"] == "success"  # ended before the daemon stops
    assert "HTTP on http://[::1]:%d/ (loopback, no authentication)" % port in daemon.stderr()
    client.close()


def write_tls(state_dir, node="node1"):
    """A CA, and this node's key and certificate, in state_dir/tls; (ca, ca_key)."""
    tls_dir = os.path.join(state_dir, "tls")
    os.makedirs(tls_dir)
    ca_key, ca = tls.create_ca("test")
    key, cert = tls.issue_node_cert(ca_key, ca, node)
    tls.write_pem(os.path.join(tls_dir, "ca.crt"), tls.cert_to_pem(ca), False)
    tls.write_pem(os.path.join(tls_dir, "node.crt"), tls.cert_to_pem(cert), False)
    tls.write_pem(os.path.join(tls_dir, "node.key"), tls.key_to_pem(key), True)
    return ca, ca_key


def client_cert(tmp_path, ca, ca_key, name):
    key, cert = tls.issue_node_cert(ca_key, ca, name)
    cert_path, key_path = tmp_path / (name + ".crt"), tmp_path / (name + ".key")
    tls.write_pem(str(cert_path), tls.cert_to_pem(cert), False)
    tls.write_pem(str(key_path), tls.key_to_pem(key), True)
    return str(cert_path), str(key_path)


def test_client_certificates_of_the_cluster_ca_authenticate_over_https(daemons, tmp_path):
    """--http-tls cluster: a client certificate of the CA
    authenticates (its CN owns the jobs); without one, 401; another CA's fails."""
    state = tmp_path / "tlsstate"
    ca, ca_key = write_tls(str(state))
    port = free_port()
    daemons(state_dir=state, args=["--http", "127.0.0.1:%d" % port, "--http-tls", "cluster",
                                   "--http-tokens", token_file(tmp_path, ops="t" * 20)])
    cert, key = client_cert(tmp_path, ca, ca_key, "operator1")
    context = ssl.create_default_context(cafile=str(state / "tls" / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(cert, key)

    def get(path, ctx, body=None, method="GET"):
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    deadline = time.monotonic() + 20
    while True:
        try:
            status, body = get("/api/v1/info", context)
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert status == 200 and json.loads(body)["name"] == "operator1"
    status, body = get(JOBS, context, json.dumps(NOOP), "POST")
    assert status == 201
    status, body = get("%s/%d" % (JOBS, json.loads(body)["id"]), context)
    assert json.loads(body)["owner"] == "operator1"
    anonymous = ssl.create_default_context(cafile=str(state / "tls" / "ca.crt"))
    anonymous.check_hostname = False
    assert get("/api/v1/info", anonymous)[0] == 401
    assert get("/api/v1/info?token=" + "t" * 20, anonymous)[0] == 200
    other_key, other_ca = tls.create_ca("other")
    stranger = client_cert(tmp_path, other_ca, other_key, "stranger")
    foreign = ssl.create_default_context(cafile=str(state / "tls" / "ca.crt"))
    foreign.check_hostname = False
    foreign.load_cert_chain(*stranger)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        status = get("/api/v1/info", foreign)[0]
        assert status == 401  # a server that let it through must still not trust it


def test_the_daemon_still_serves_after_many_broken_connections(served):
    """A burst of half-open and reset connections leaves the server answering."""
    daemon, client = served
    socks = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", client.port))
        sock.sendall(b"GET /api/v1/info HTTP/1.1\r\nHo")
        socks.append(sock)
    for sock in socks:
        sock.close()
    fresh = HttpClient(client.port)
    assert fresh.get("/api/v1/info").status == 200 and daemon.alive()
    fresh.close()


def access_lines(path, count, daemon):
    """The access log's lines once it has count of them (it is written as answers end)."""
    deadline = time.monotonic() + 10
    while True:
        lines = open(path, encoding="ascii").read().splitlines() if os.path.exists(path) else []
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, (lines, daemon.stderr())
        time.sleep(0.05)


def test_the_access_log_hides_tokens_and_is_reopened_on_sighup(daemons, tmp_path):
    """--http-access-log: a line per answered request (caller, request line, status, body
    bytes, milliseconds), never a token, a hostile target escaped into one field; after
    logrotate's move and SIGHUP, the next lines go to a new file; a log that cannot be
    opened refuses the start."""
    secret = "s" * 24
    log = str(tmp_path / "access.log")
    daemon, client = start_http_daemon(daemons, "--http-tokens", token_file(tmp_path,
                                                                           alice=secret),
                                       "--http-access-log", log)
    bearer = {"Authorization": "Bearer " + secret}
    (ready,) = access_lines(log, 1, daemon)  # start_http_daemon's request, unauthenticated
    assert ready.split(" ")[2:7] == ["-", '"GET', "/api/v1/info", 'HTTP/1.1"', "401"]
    info = client.get("/api/v1/info?token=" + secret)
    assert info.status == 200
    assert client.get("/api/v1/info").status == 401
    assert client.get('/api/v1/jobs/1%22%20x?a=%0a&Token=' + secret, headers=bearer).status \
        in (400, 404)
    lines = access_lines(log, 4, daemon)[1:]
    assert secret not in "".join(lines)
    fields = lines[0].split(" ")
    assert fields[0].endswith("Z") and fields[1] == "127.0.0.1" and fields[2] == "alice"
    assert fields[3:6] == ['"GET', "/api/v1/info?token=*", 'HTTP/1.1"']
    assert fields[6] == "200" and int(fields[7]) == len(info.body) and float(fields[8]) >= 0
    assert lines[1].split(" ")[2] == "-" and lines[1].split(" ")[6] == "401"
    hostile = lines[2].split(" ")
    assert len(hostile) == 9 and hostile[4] == "/api/v1/jobs/1%22%20x?a=%0a&Token=*"
    os.rename(log, log + ".1")
    daemon.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reopened the HTTP access log" not in daemon.stderr():
        assert time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.05)
    client.get("/api/v1/info", headers=bearer)
    (line,) = access_lines(log, 1, daemon)
    assert line.split(" ")[3:5] == ['"GET', "/api/v1/info"]
    assert len(open(log + ".1", encoding="ascii").read().splitlines()) == 4
    assert daemon.alive()
    proc = subprocess.run([sys.executable, "-m", "jqueue.daemon.masterd", "--state-dir",
                           str(tmp_path / "other"), "--http", "127.0.0.1:%d" % free_port(),
                           "--http-access-log", str(tmp_path / "no" / "dir" / "access.log")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "cannot open the HTTP access log" in proc.stderr
