"""Helpers of the end-to-end tests: real jq-masterd processes, jqctl, and a raw LUXI client.

``Daemon`` starts ``python -m jqueue.daemon.masterd`` on a temporary state directory, waits
until its socket answers, and stops it (SIGTERM, then SIGKILL). ``RawLuxi`` speaks LUXI
from the wire format alone (a Unix socket, JSON and 0x03), as Ganeti's clients do. The
``daemon_factory`` generator (behind a ``daemons`` fixture) starts daemons and checks at
teardown that each one still running stops cleanly (exit status 0). Each daemon's state
directory is first given the C command shim compiled once per test process
(``seed_shim_cache``), as a directory a daemon ran on before has it: compiling it anew
at each daemon's start took half a second of processor time, some 300 times a run.
"""

import atexit
import http.server
import io
import itertools
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from jqueue import constants
from jqueue.cli import app as cli_app
from jqueue.exec import shims
from jqueue.luxi.client import Client

EOM = b"\x03"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 20.0
#: What Ganeti's clients send as "version" (ignored by the server).
CLIENT_VERSION = 2100000
FINAL = constants.JOBS_FINALIZED


def toml_value(value):
    """A Python value as TOML (enough for the daemon's options)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[%s]" % ", ".join(toml_value(v) for v in value)
    raise TypeError(value)


def write_config(path, section="masterd", **options):
    """Write a TOML config file with one table of options; return its path as text."""
    lines = ["[%s]" % section] + ["%s = %s" % (k, toml_value(v)) for k, v in options.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def raise_nofile_limit():
    """Raise this process's soft limit of open files to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


_C_SHIM = []


def c_shim_program():
    """The C shim, compiled once per test process into a temporary directory."""
    if not _C_SHIM:
        directory = tempfile.mkdtemp(prefix="jq-shim-cache-")
        atexit.register(shutil.rmtree, directory, True)
        _C_SHIM.append(shims.c_shim(directory))
    return _C_SHIM[0]


def seed_shim_cache(state_dir):
    """Put the compiled C shim where an executor on state_dir will look for it."""
    program = c_shim_program()
    cache = os.path.join(state_dir, "exec")
    os.makedirs(cache, exist_ok=True)
    target = os.path.join(cache, os.path.basename(program.executable))
    if not os.path.exists(target):
        shutil.copy2(program.executable, target)


def seed_daemon_shim(state_dir):
    """seed_shim_cache for a daemon about to start on state_dir, where it can be: nothing
    without a C compiler (the daemon then uses the Python shim itself) or where the
    directory cannot be made (a test of the daemon's refusal)."""
    try:
        os.makedirs(state_dir, 0o750, exist_ok=True)  # as the daemons make it
        seed_shim_cache(state_dir)
    except (shims.ShimUnavailable, OSError):
        pass


def masterd_command(*args):
    return [sys.executable, "-m", "jqueue.daemon.masterd", *args]


class Daemon:
    """One jq-masterd process on a state directory (restartable on the same directory)."""

    _serial = itertools.count()

    def __init__(self, state_dir, socket_path=None, config=None, args=(), env=None):
        self.state_dir = str(state_dir)
        self.socket = socket_path or os.path.join(self.state_dir, "run", "jqueue.sock")
        self.queue_dir = os.path.join(self.state_dir, "queue")
        self.config = config
        self.args = list(args)
        self.env = env
        self.proc = None
        self.log_path = None
        self.returncode = None

    def command(self):
        args = ["--state-dir", self.state_dir]
        if self.socket != os.path.join(self.state_dir, "run", "jqueue.sock"):
            args += ["--socket", self.socket]
        if self.config:
            args += ["--config", self.config]
        return masterd_command(*args, *self.args)

    def start(self, wait=True):
        """Start the process (and by default wait until it answers); return self."""
        self.log_path = "%s-masterd-%d.log" % (self.state_dir.rstrip("/"), next(self._serial))
        env = dict(os.environ, **(self.env or {}))
        seed_daemon_shim(self.state_dir)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, env=env)
        self.returncode = None
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        """What the daemon logged so far (its standard error)."""
        with open(self.log_path, encoding="utf-8", errors="replace") as stream:
            return stream.read()

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Poll QueryConfigValues until the socket answers; fail with the log if it died."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                pytest.fail("jq-masterd exited with %s before answering:\n%s" % (
                    self.proc.poll(), self.stderr()))
            try:
                with Client(self.socket, connect_timeout=0.5, timeout=2) as client:
                    client.query_config_values(["cluster_name"])
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    pytest.fail("jq-masterd did not answer within %ss:\n%s" % (
                        timeout, self.stderr()))
                time.sleep(0.05)

    def client(self, timeout=20):
        return Client(self.socket, connect_timeout=5, timeout=timeout)

    def call(self, method, args, timeout=20):
        """One LUXI request on a new connection; the result (errors raised)."""
        with self.client(timeout) as client:
            return client.call(method, args)

    def jqctl(self, *args, stdin=""):
        """Run jqctl in this process with captured streams; (exit status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        ctx = cli_app.Context(cli_app.connect, stdin=io.StringIO(stdin), stdout=out, stderr=err)
        code = cli_app.run(ctx, ["--socket", self.socket, "--timeout", "30", *args])
        return code, out.getvalue(), err.getvalue()

    def jqctl_process(self, *args, stdin="", env=None):
        """Run jqctl as a process (python -m jqueue.cli), with the variables of env added
        to our environment; the CompletedProcess."""
        return subprocess.run([sys.executable, "-m", "jqueue.cli", "--socket", self.socket,
                               "--timeout", "30", *args], input=stdin, capture_output=True,
                              text=True, timeout=60, check=False,
                              env=dict(os.environ, **env) if env else None)

    def send_signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout=STOP_TIMEOUT):
        """Wait for the process to exit; its exit status."""
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def stop(self, signum=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send signum and wait (SIGKILL after timeout); the exit status."""
        if not self.alive():
            return self.wait()
        self.proc.send_signal(signum)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.wait()
            pytest.fail("jq-masterd did not stop within %ss after %s:\n%s" % (
                timeout, signal.Signals(signum).name, self.stderr()))

    def kill(self):
        """SIGKILL the process and reap it."""
        self.proc.kill()
        return self.wait()

    def proc_status(self, key):
        """A field of /proc/PID/status as an int (VmRSS, VmHWM in kB; Threads)."""
        with open("/proc/%d/status" % self.pid, encoding="ascii") as stream:
            for line in stream:
                name, _, value = line.partition(":")
                if name == key:
                    return int(value.split()[0])
        raise KeyError(key)

    def thread_count(self):
        return len(os.listdir("/proc/%d/task" % self.pid))


def daemon_factory(tmp_path):
    """Generator for a fixture: yields a factory of Daemons on tmp_path; afterwards each one
    still running is stopped and must exit 0."""
    started = []
    counter = itertools.count()

    def make(state_dir=None, start=True, **kwargs):
        daemon = Daemon(state_dir or tmp_path / ("state%d" % next(counter)), **kwargs)
        started.append(daemon)
        return daemon.start() if start else daemon

    yield make
    problems = []
    for daemon in started:
        if daemon.alive():
            code = daemon.stop()
            if code != 0:
                problems.append("exit status %s:\n%s" % (code, daemon.stderr()))
    assert not problems, "\n".join(problems)


class RawLuxi:
    """A LUXI client from the wire format alone: JSON objects each followed by 0x03."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._buffer = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, method, args):
        """Send a request as Ganeti's clients do: with a version and a newline before 0x03."""
        request = {"method": method, "args": args, "version": CLIENT_VERSION}
        self.send_raw(json.dumps(request).encode("utf-8") + b"\n" + EOM)

    def receive(self):
        """Read one response; (success, result). Fails on any key besides those two."""
        while EOM not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the daemon")
            self._buffer += data
        message, self._buffer = self._buffer.split(EOM, 1)
        response = json.loads(message.decode("utf-8"))
        assert set(response) == {"success", "result"}, response
        return response["success"], response["result"]

    def request(self, method, args):
        self.send(method, args)
        return self.receive()

    def ok(self, method, args):
        """A request that must succeed; its result."""
        success, result = self.request(method, args)
        assert success, (method, args, result)
        return result

    def eof(self, timeout=10):
        """Whether the daemon closes the connection (reads nothing more) within timeout."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def wait_for_status(client, job_id, statuses, timeout=20):
    """Wait (WaitForJobChange) until the job's status is one of statuses; return it."""
    deadline = time.monotonic() + timeout
    info, serial = None, None
    while time.monotonic() < deadline:
        result = client.wait_for_job_change_once(job_id, ["status"], info, serial,
                                                 max(0.1, min(5, deadline - time.monotonic())))
        if result != constants.JOB_NOTCHANGED:
            info = result[0]
            serial = max([serial or 0] + [entry[0] for entry in result[1]])
            if info[0] in statuses:
                return info[0]
            if info[0] in FINAL:
                raise AssertionError("job %s ended %s, expected %s" % (job_id, info[0],
                                                                      statuses))
    raise AssertionError("job %s not %s within %ss (last %s)" % (job_id, statuses, timeout,
                                                                info))


def wait_all_final(client, job_ids, timeout=30):
    """Poll QueryJobs until every job is finalized; return {id: (status, opresult)}."""
    deadline = time.monotonic() + timeout
    while True:
        rows = client.query_jobs(list(job_ids), ["id", "status", "opresult"])
        missing = [i for i, row in zip(job_ids, rows) if row is None]
        assert not missing, "jobs lost: %s" % missing
        if all(row[1] in FINAL for row in rows):
            return {row[0]: (row[1], row[2]) for row in rows}
        assert time.monotonic() < deadline, [r for r in rows if r[1] not in FINAL][:5]
        time.sleep(0.05)


def delay(duration=0, **params):
    return dict({"OP_ID": "OP_TEST_DELAY", "duration": duration}, **params)


def jqop(**params):
    return dict({"OP_ID": "OP_TEST_JQUEUE"}, **params)


def allocated(path):
    """Bytes of disk the file at path holds."""
    return os.stat(path).st_blocks * 512


def mostly_freed(path, least):
    """A predicate: the file at path (an attempt's or a run's output) has grown past least
    bytes and holds disk blocks for under a quarter of them (the rest freed: punched out)."""
    def check():
        try:
            return os.path.getsize(path) > least and allocated(path) < least // 4
        except FileNotFoundError:
            return False
    return check


#: A service's shell command printing 300,000 numbered lines (8.3 MB) in 30 bursts, then
#: sleeping; and a log_max_bytes it passes eight times.
BURSTS = ("for k in $(seq 0 29); do seq $((k * 10000 + 1)) $((k * 10000 + 10000)) | "
          "sed 's/$/ a line of its output/'; sleep 0.05; done; exec sleep 600")
KEEP = 1 << 20


def holding(mib, seconds=1000):
    """argv of a Python process that holds mib MiB of memory it has written to, says so
    ("holding"), then sleeps for seconds."""
    return [sys.executable, "-c", "import sys, time; block = bytearray(%d << 20); "
            "print('holding', flush=True); time.sleep(%s)" % (mib, seconds)]


def wait_until(predicate, timeout=20, what="condition"):
    """Poll predicate every 50 ms until it is true; fail naming what after timeout s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.05)


def processes_with(mark, variable="JQ_TEST_MARK"):
    """Pids of the processes whose environment holds JQ_TEST_MARK=mark (a test's commands
    carry a fresh one, so that tests running in parallel never see each other's), or
    variable=mark."""
    needle = ("%s=%s" % (variable, mark)).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as stream:
                if needle in stream.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def all_canceled_and_gone(client, job_ids, mark, timeout=60):
    """Wait for every job of job_ids to end, assert each ended canceled, then wait for
    every process carrying mark (JQ_TEST_MARK) to be gone."""
    wait_all_final(client, job_ids, timeout)
    statuses = {row[0] for row in client.query_jobs(job_ids, ["status"])}
    assert statuses == {"canceled"}, statuses
    deadline = time.monotonic() + timeout
    while processes_with(mark):
        assert time.monotonic() < deadline, "processes of the cancelled jobs survived them"
        time.sleep(0.05)


def closed_by_peer(sock, within):
    """Whether the other end closed sock (EOF or reset) within that many seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


class Receiver:
    """An HTTP server on loopback keeping every POST it answers (204): (path, body as
    JSON, headers); a webhook's receiver (jqueue.notify)."""

    def __init__(self, port=0):
        received = self.received = []
        raw = self.raw = []  # the bodies as they came (bytes), in the same order
        lock = self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    received.append((self.path, json.loads(body), dict(self.headers)))
                    raw.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/hook"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def wait(self, count, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            assert time.monotonic() < deadline, self.received
            time.sleep(0.05)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait_notified(source, job_id, timeout=20, field="notified"):
    """The notified field of job_id once set (how telling its end went; field
    "notified_after": a group's after); source is a JobQueue or a client (both answer
    query_jobs)."""
    deadline = time.monotonic() + timeout
    while True:
        [value] = source.query_jobs([job_id], [field])[0]
        if value is not None:
            return value
        assert time.monotonic() < deadline, "job %d never notified" % job_id
        time.sleep(0.02)


def notify_recorder(tmp_path, body="exit 0"):
    """A notify command (argv) that appends its arguments, environment and input to
    tmp_path/told (one JSON line each) and then runs body (shell)."""
    script = tmp_path / "tell"
    script.write_text(
        "#!/bin/sh\n"
        "printf '%%s\\n' \"$(%s -c 'import json,os,sys; print(json.dumps({"
        "\"argv\": sys.argv[1:], \"input\": json.load(sys.stdin), \"env\": {k: v for k, v "
        "in os.environ.items() if k.startswith(\"JQ_\")}}))' \"$@\")\" >> %s\n%s\n"
        % (shlex.quote(sys.executable), tmp_path / "told", body))
    script.chmod(0o755)
    return [str(script), "--from", "jqueue@example.com"]


def wait_told(tmp_path, count=1, timeout=20):
    """The calls of a notify_recorder once there are count of them."""
    path, deadline = tmp_path / "told", time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        assert time.monotonic() < deadline, lines
        time.sleep(0.02)


def restart_at_random(rng, victims, pauses=(0, 0.2)):
    """What crash tests do to daemons between rounds: kill -9 each of victims (or, one time
    in four, stop them by SIGTERM: each must exit 0), wait one of pauses (seconds), start
    them again."""
    graceful = rng.random() < 0.25
    for daemon in victims:
        if graceful:
            assert daemon.stop() == 0
        else:
            daemon.proc.kill()
            daemon.proc.wait()
    time.sleep(rng.choice(pauses))
    for daemon in victims:
        daemon.start()
