"""Benchmark of jq-masterd's HTTP API, against LUXI's figure measured in the same run.

Prints, for one daemon serving both (no worker runs the jobs, as in the other submit
figures; no checkpoint during the windows):
  (a) durable submits per second through the LUXI socket, 16 client processes (the
      reference: ratio 1);
  (b) Coalition's GET /json/addjob, 16 client processes on keep-alive connections (command
      jobs whose affinity no node has: they stay queued, nothing runs);
  (c) REST POST /api/v1/jobs ({"ops": [OP_TEST_DELAY 0]}, LUXI's payload), 16 keep-alive
      clients;
  (d) GET /api/v1/info, 16 keep-alive clients: the HTTP stack's own ceiling here (no
      write), to tell what the durable writes cost;
  (e) GET /api/v1/jobs?limit=100 (and with after=, status=, before=) on a queue of
      100,000 jobs: median and p99 latency of one keep-alive client;
  (f) the same queue with 100 groups of 1,000 jobs more (200 in --quick): the root's
      newest page (the 100 groups, each row with its counts) and a group's page.
Targets (issue 13): (b) and (c) at least half of (a); (e) median under 20 ms. Huey, the
peer of the core figures, has no HTTP API: nothing to compare with here.
"""

import json
import multiprocessing
import os
import statistics
import time

import luxi

from jqueue.luxi import client as luxi_client

NOOP = {"OP_ID": "OP_TEST_DELAY", "duration": 0}
CLIENTS = 16


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RawClient:
    """A minimal HTTP/1.1 keep-alive client (prebuilt request bytes, Content-Length
    answers): light enough that 16 of them leave the CPU to the daemon, as LUXI's small
    clients do (http.client parses headers with the email package, at several times the
    cost)."""

    def __init__(self, port):
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(self, data):
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body

    def _read(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buffer += chunk

    def close(self):
        self.sock.close()


def request_bytes(method, path, body=None):
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
    if body is not None:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head.encode() + b"\r\n" + (body or b"")


def _http_worker(port, method, path, body, seconds, start_at, out):
    client = RawClient(port)
    data = request_bytes(method, path, body)
    while time.time() < start_at:
        time.sleep(0.001)
    stop, count, errors = start_at + seconds, 0, 0
    while time.time() < stop:
        status, _ = client.request(data)
        if status in (200, 201):
            count += 1
        else:
            errors += 1
    client.close()
    out.put((count, errors))


def http_rate(port, method, path, body, clients, seconds):
    """Answers per second from `clients` processes, each on one keep-alive connection."""
    out = multiprocessing.Queue()
    start_at = time.time() + 1.0
    procs = [multiprocessing.Process(target=_http_worker, args=(
        port, method, path, body, seconds, start_at, out)) for _ in range(clients)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    errors = sum(e for _, e in results)
    if errors:
        raise RuntimeError("%d HTTP requests failed during the run" % errors)
    return sum(c for c, _ in results) / seconds


def fill(sock, count, chunk=1000):
    """Submit count no-op jobs (kept queued) in requests of chunk jobs."""
    with luxi_client.Client(sock, timeout=300) as client:
        for start in range(0, count, chunk):
            client.submit_many_jobs([[NOOP] for _ in range(min(chunk, count - start))])


def fill_groups(sock, groups, size, chunk=1000):
    """Submit groups groups of size no-op jobs each (kept queued); the group ids."""
    ids = []
    with luxi_client.Client(sock, timeout=300) as client:
        for number in range(groups):
            answer = client.submit_many_jobs(
                [[{"OP_ID": "OP_GROUP", "title": "bench-%d" % number}]])
            group = answer[0][1]
            ids.append(group)
            for start in range(0, size, chunk):
                part = min(chunk, size - start)
                client.submit_many_jobs([[NOOP] for _ in range(part)],
                                        options=[{"parent": group}] * part)
    return ids


def latency(port, path, samples):
    client = RawClient(port)
    data = request_bytes("GET", path)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        status, body = client.request(data)
        times.append(time.perf_counter() - started)
        assert status == 200, body[:200]
    client.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1], json.loads(body)


def run(root, quick=False, results=None):
    results = results if results is not None else {}
    rows = []
    seconds = 1.5 if quick else 4.0
    port = free_port()
    proc, sock = luxi.start_daemon(os.path.join(root, "submit"), workers=0,
                                   checkpoint_interval=600,
                                   extra=("--http", "127.0.0.1:%d" % port,
                                          "--http-threads", "4"))
    try:
        base = luxi.submit_rate(sock, CLIENTS, seconds)
        rows.append(("(a) LUXI socket: durable submits, %d clients" % CLIENTS, base, "/s", 1.0))
        addjob = http_rate(port, "GET", "/json/addjob?cmd=true&title=bench&affinity=NOWHERE",
                           None, CLIENTS, seconds)
        rows.append(("(b) GET /json/addjob, %d keep-alive clients" % CLIENTS, addjob, "/s",
                     addjob / base))
        body = json.dumps({"ops": [NOOP]}).encode()
        rest = http_rate(port, "POST", "/api/v1/jobs", body, CLIENTS, seconds)
        rows.append(("(c) POST /api/v1/jobs, %d keep-alive clients" % CLIENTS, rest, "/s",
                     rest / base))
        info = http_rate(port, "GET", "/api/v1/info", None, CLIENTS, seconds)
        rows.append(("(d) GET /api/v1/info (no write), %d keep-alive clients" % CLIENTS, info,
                     "/s", info / base))
    finally:
        luxi.stop_daemon(proc)
    results["http_submit_ratio"] = min(addjob, rest) / base
    count = 20000 if quick else 100000
    port = free_port()
    proc, sock = luxi.start_daemon(os.path.join(root, "list"), workers=0,
                                   checkpoint_interval=600,
                                   extra=("--http", "127.0.0.1:%d" % port))
    try:
        started = time.perf_counter()
        fill(sock, count)
        rows.append(("    (filling the queue with %d jobs)" % count,
                     time.perf_counter() - started, "s", None))
        samples = 60 if quick else 200
        for label, path in (
                ("first page", "/api/v1/jobs?limit=100"),
                ("page in the middle", "/api/v1/jobs?limit=100&after=%d" % (count // 2)),
                ("newest first", "/api/v1/jobs?limit=100&before=%d" % (count + 1)),
                ("status=queued from the middle",
                 "/api/v1/jobs?limit=100&status=queued&after=%d" % (count // 2))):
            median, p99, page = latency(port, path, samples)
            assert len(page["jobs"]) == 100, page
            rows.append(("(e) GET %s on %d jobs (%s), median" % (
                path.split("?")[0] + "?limit=100", count, label), median * 1000, "ms", None))
            rows.append(("    p99", p99 * 1000, "ms", None))
        groups, size = 100, 200 if quick else 1000
        started = time.perf_counter()
        group_ids = fill_groups(sock, groups, size)
        rows.append(("    (adding %d groups of %d jobs)" % (groups, size),
                     time.perf_counter() - started, "s", None))
        for label, path in (
                ("the root, newest first: the groups",
                 "/api/v1/jobs?limit=100&parent=0&before=%d" % (2 ** 53)),
                ("a group's jobs", "/api/v1/jobs?limit=100&parent=%d" % group_ids[50])):
            median, p99, page = latency(port, path, samples)
            assert len(page["jobs"]) == 100, page
            if label.startswith("the root"):
                assert sorted(job["id"] for job in page["jobs"]) == group_ids, page
            rows.append(("(f) GET /api/v1/jobs?limit=100 (%s, %d per group), median" % (
                label, size), median * 1000, "ms", None))
            rows.append(("    p99", p99 * 1000, "ms", None))
    finally:
        luxi.stop_daemon(proc)
    return rows
