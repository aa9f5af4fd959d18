"""End-to-end test of WaitForJobChange at scale: 5,000 waiters on one jq-masterd.

The waiters are non-blocking sockets driven by one selector in this process. Half of them
wait for a running job to change, half time out; the daemon must answer them all without
a thread per waiter and with bounded memory.
"""

import errno
import json
import selectors
import socket
import time

import pytest
from daemon_helpers import (
    EOM,
    Daemon,
    delay,
    raise_nofile_limit,
    wait_for_status,
    write_config,
)

from jqueue import constants

pytestmark = pytest.mark.timeout(120)

WAITERS = 5000
SHORT_TIMEOUT = 2
LONG_TIMEOUT = 40
#: Threads the daemon may add while serving the waiters (the LUXI pool is 4 threads).
THREAD_SLACK = 6
RSS_LIMIT_KB = 300 * 1024


@pytest.fixture
def daemon(tmp_path):
    path = write_config(tmp_path / "jq.toml", luxi_threads=4, workers=2, idle_timeout=120,
                        read_timeout=30, max_connections=10000, max_wait_timeout=60)
    daemon = Daemon(tmp_path / "state", config=path).start()
    yield daemon
    assert daemon.stop() == 0, daemon.stderr()


class Waiter:
    """One connection with one WaitForJobChange request, its bytes and its answer."""

    def __init__(self, job_id, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.timeout = timeout
        request = {"method": "WaitForJobChange", "version": 2100000,
                   "args": [job_id, ["status"], ["running"], None, timeout]}
        self.outgoing = json.dumps(request).encode() + b"\n" + EOM
        self.incoming = b""
        self.answer = None
        self.connected = False

    def try_connect(self, path):
        """Connect without blocking; False while the daemon's backlog is full."""
        err = self.sock.connect_ex(path)
        if err in (errno.EAGAIN, errno.EWOULDBLOCK):
            return False
        assert err == 0, errno.errorcode.get(err, err)
        self.connected = True
        return True

    def on_writable(self):
        sent = self.sock.send(self.outgoing)
        self.outgoing = self.outgoing[sent:]

    def on_readable(self):
        data = self.sock.recv(65536)
        assert data, "connection closed without an answer"
        self.incoming += data
        if EOM in self.incoming:
            self.answer = json.loads(self.incoming.split(EOM, 1)[0])
            return True
        return False


def connect_all(waiters, path, timeout=30):
    """Connect every waiter, retrying those the full backlog turned away."""
    deadline = time.monotonic() + timeout
    pending = list(waiters)
    while pending:
        pending = [w for w in pending if not w.try_connect(path)]
        if pending:
            assert time.monotonic() < deadline, "%d waiters could not connect" % len(pending)
            time.sleep(0.01)


def pump(selector, done_count, target, deadline):
    """Send requests and read answers until target waiters are answered; return the count."""
    while done_count < target:
        assert time.monotonic() < deadline, "only %d of %d waiters answered" % (done_count,
                                                                             target)
        for key, events in selector.select(timeout=0.5):
            waiter = key.data
            if events & selectors.EVENT_WRITE:
                waiter.on_writable()
                if not waiter.outgoing:
                    selector.modify(waiter.sock, selectors.EVENT_READ, waiter)
            elif waiter.on_readable():
                selector.unregister(waiter.sock)
                waiter.sock.close()
                done_count += 1
    return done_count


def test_five_thousand_waiters_cost_no_thread_each(daemon):
    """5,000 concurrent WaitForJobChange calls all return, on the change or on timeout,
    while the daemon's thread count stays flat and its memory bounded."""
    assert raise_nofile_limit() >= WAITERS + 100
    with daemon.client() as client:
        job_id = client.submit_job([delay(60)])
        wait_for_status(client, job_id, {"running"})
        for _ in range(20):
            client.query_jobs([job_id], ["status"])
    threads_before = daemon.thread_count()
    short = [Waiter(job_id, SHORT_TIMEOUT) for _ in range(WAITERS // 2)]
    long_ = [Waiter(job_id, LONG_TIMEOUT) for _ in range(WAITERS - len(short))]
    started = time.monotonic()
    connect_all(short + long_, daemon.socket)
    selector = selectors.DefaultSelector()
    for waiter in short + long_:
        selector.register(waiter.sock, selectors.EVENT_WRITE, waiter)
    done = pump(selector, 0, len(short), started + 30)
    assert all(w.answer == {"success": True, "result": constants.JOB_NOTCHANGED}
               for w in short), [w.answer for w in short if w.answer][:3]
    assert all(w.answer is None for w in long_)
    threads_waiting = daemon.thread_count()
    rss_waiting = daemon.proc_status("VmRSS")
    with daemon.client() as client:
        assert client.cancel_job(job_id)[0]
    pump(selector, done, WAITERS, time.monotonic() + 30)
    selector.close()
    statuses = {w.answer["result"][0][0] for w in long_ if w.answer["success"]}
    assert all(w.answer["success"] for w in long_), [w.answer for w in long_][:3]
    assert statuses <= {"canceling", "canceled"}, statuses
    assert threads_waiting <= threads_before + THREAD_SLACK, (threads_before, threads_waiting)
    assert daemon.thread_count() <= threads_before + THREAD_SLACK
    assert rss_waiting < RSS_LIMIT_KB and daemon.proc_status("VmHWM") < RSS_LIMIT_KB, (
        rss_waiting, daemon.proc_status("VmHWM"))
    print("5000 waiters: threads %d -> %d, VmRSS %d kB while waiting, VmHWM %d kB, %.1fs" % (
        threads_before, threads_waiting, rss_waiting, daemon.proc_status("VmHWM"),
        time.monotonic() - started))
