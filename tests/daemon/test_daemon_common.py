"""Tests of jqueue.daemon.common and jqueue.daemon.unixsocket (no daemon process needed)."""

import io
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest
from twisted.application import service
from twisted.internet.task import Clock

from jqueue.daemon import common, masterd, unixsocket
from jqueue.daemon import config as configmod

# sd_notify


def test_sd_notify_without_notify_socket_does_nothing():
    """No $NOTIFY_SOCKET: nothing is sent and False is returned."""
    assert common.sd_notify("READY=1", environ={}) is False


def test_sd_notify_to_a_path_and_to_an_abstract_name(tmp_path):
    """The datagram reaches a socket given by path, and one given as @abstract."""
    path = str(tmp_path / "notify")
    abstract = "jq-test-notify-%d" % os.getpid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_path, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_name:
        by_path.bind(path)
        by_name.bind("\0" + abstract)
        assert common.sd_notify("READY=1", environ={"NOTIFY_SOCKET": path})
        assert common.sd_notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + abstract})
        assert by_path.recv(100) == b"READY=1"
        assert by_name.recv(100) == b"STOPPING=1"


def test_sd_notify_failure_is_logged_not_raised(tmp_path, caplog):
    """A notification socket that is gone costs a warning, not the daemon."""
    with caplog.at_level(logging.WARNING):
        assert common.sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert "cannot notify systemd" in caplog.text


# Limits and logging


def test_raise_nofile_limit_reaches_the_hard_limit():
    """The soft limit of open files is raised to the hard limit (in a child process)."""
    code = ("import resource; from jqueue.daemon import common; "
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
            "assert common.raise_nofile_limit() == hard; "
            "assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))

    subprocess.run([sys.executable, "-c", code], check=True, preexec_fn=lower, timeout=30)


def test_tune_gc_makes_young_collections_rarer():
    """The daemons collect cyclic garbage every 10,000 allocations, not Python's 700."""
    out = subprocess.run([sys.executable, "-c", "import gc; from jqueue.daemon import common; "
                          "common.tune_gc(); print(gc.get_threshold())"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(common.GC_THRESHOLDS) == "(10000, 10, 10)"


_KEPT_AFTER_FREEING = """
import ctypes
from jqueue.daemon import common

class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if TUNE:
    common.tune_malloc()
buffers = [bytes(256 * 1024) for _ in range(16)]  # 4 MiB: what serving output allocates
del buffers
print(libc.mallinfo2().keepcost)
"""


@pytest.mark.parametrize("tuned", [True, False])
def test_tune_malloc_keeps_freed_buffers_for_the_next_ones(tuned):
    """After 4 MiB of buffers under the mmap threshold are freed, a daemon's heap keeps
    them for the next allocations (no page faults taking them again); glibc alone gives
    all but 128 KiB back."""
    code = "TUNE = %r\n%s" % (tuned, _KEPT_AFTER_FREEING)
    kept = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=30).stdout)
    if tuned:
        assert kept >= 4 * 1024 * 1024
    else:
        assert kept < 1024 * 1024


def test_journal_lines_carry_their_priority(monkeypatch, tmp_path):
    """With $JOURNAL_STREAM naming standard error, lines start with <priority>."""
    stream = open(tmp_path / "log", "w+")  # noqa: SIM115 - closed below
    info = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", "%d:%d" % (info.st_dev, info.st_ino))
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        common.setup_logging("info", stream, bridge_twisted=False)
        logging.getLogger("jq.test").warning("careful")
        logging.getLogger("jq.test").debug("hidden")
        stream.flush()
        assert (tmp_path / "log").read_text() == "<4>jq.test: careful\n"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)
        stream.close()


def test_plain_lines_have_a_timestamp_and_level():
    """Without journald, lines carry a timestamp, the level and the logger name."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        common.setup_logging("debug", stream, bridge_twisted=False)
        logging.getLogger("jq.test").debug("details")
        assert " DEBUG jq.test: details" in stream.getvalue()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)


# Stop signals


class FakeReactor(Clock):
    """Enough of a reactor for StopSignals: running, callFromThread, callWhenRunning."""

    def __init__(self):
        super().__init__()
        self.running = False
        self.when_running = []
        self.from_thread = []

    def callWhenRunning(self, fn):
        self.when_running.append(fn)

    def callFromThread(self, fn):
        self.from_thread.append(fn)


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in common.StopSignals.SIGNALS + (signal.SIGHUP,)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_first_signal_stops_once_later_ones_are_only_logged(restore_signals, caplog):
    """SIGTERM stops the reactor once; a second SIGTERM and a SIGINT only log."""
    reactor, stops = FakeReactor(), []
    signals = common.StopSignals(reactor, lambda: stops.append(1), lambda: " (1.0s left)")
    signals.install()
    reactor.running = True
    with caplog.at_level(logging.INFO):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    for call in reactor.from_thread:
        call()
    assert stops == [1]
    assert "received SIGTERM, stopping (1.0s left)" in caplog.text
    assert "received SIGINT again; already stopping" in caplog.text


def test_signal_before_the_reactor_runs_stops_it_once_running(restore_signals):
    """A signal during startup is remembered and stops the reactor when it runs."""
    reactor, stops = FakeReactor(), []
    signals = common.StopSignals(reactor, lambda: stops.append(1))
    signals.install()
    os.kill(os.getpid(), signal.SIGINT)
    assert stops == [] and reactor.from_thread == []
    signals.reinstall_when_running()
    reactor.running = True
    for call in reactor.when_running:
        call()
    assert stops == [1]


def test_sighup_reloads_and_never_stops(restore_signals, caplog):
    """SIGHUP (a reload, a closed terminal) calls reload from the reactor's thread, as
    often as it comes, and never stops the daemon; before the reactor runs, or once
    stopping, it is only logged."""
    reactor, stops, reloads = FakeReactor(), [], []
    signals = common.StopSignals(reactor, lambda: stops.append(1),
                                 reload=lambda: reloads.append(1))
    signals.install()
    with caplog.at_level(logging.INFO):
        os.kill(os.getpid(), signal.SIGHUP)
        assert reactor.from_thread == [] and "received SIGHUP: ignored (starting)" in caplog.text
        reactor.running = True
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)
        for call in reactor.from_thread:
            call()
        assert reloads == [1, 1] and stops == []
        reactor.from_thread.clear()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
    for call in reactor.from_thread:
        call()
    assert stops == [1] and reloads == [1, 1]
    assert "received SIGHUP: ignored (stopping)" in caplog.text


class _Reloadable(service.Service):
    def __init__(self, answer, calls):
        self.answer, self.calls = answer, calls

    def reload(self):
        self.calls.append(self)
        if self.answer is None:
            raise RuntimeError("broken reload")
        return self.answer


def _no_file():
    return [configmod.Config("masterd", {"log_level": "info"})]


def test_reload_calls_every_reload_of_the_tree(caplog):
    """Each service with a reload() in the tree is called, a failing one logged; with
    no configuration file and nothing to read again, the log says options need a
    restart."""
    calls = []
    top, inner = service.MultiService(), service.MultiService()
    inner.setServiceParent(top)
    broken, idle, busy = _Reloadable(None, calls), _Reloadable(False, calls), \
        _Reloadable(True, calls)
    broken.setServiceParent(top)
    idle.setServiceParent(inner)
    with caplog.at_level(logging.INFO):
        common.reload_daemon(_no_file(), top)
    assert sorted(map(id, calls)) == sorted(map(id, [broken, idle]))
    assert "reloading" in caplog.text and "broken reload" in caplog.text
    assert "nothing to read again" in caplog.text and "restart to change them" in caplog.text
    caplog.clear()
    busy.setServiceParent(inner)
    with caplog.at_level(logging.INFO):
        common.reload_daemon(_no_file(), top)
    assert busy in calls and "nothing to read again" not in caplog.text


def test_sigusr2_toggles_debug_logging_and_back_to_the_configured_level(caplog):
    """debug, then the configured level again (the one a reload set last); at debug by
    configuration, it stays and says so."""
    root = logging.getLogger()
    level = root.level
    current = [configmod.Config("masterd", {"log_level": "warning"})]
    try:
        root.setLevel(logging.WARNING)
        common.toggle_debug(current)
        assert root.level == logging.DEBUG
        assert "SIGUSR2: logging at debug level (SIGUSR2 again: back to warning)" in caplog.text
        current[0] = current[0].with_values({"log_level": "error"})
        common.toggle_debug(current)
        assert root.level == logging.ERROR
        current[0] = current[0].with_values({"log_level": "debug"})
        root.setLevel(logging.DEBUG)
        common.toggle_debug(current)
        assert root.level == logging.DEBUG and "log_level is debug already" in caplog.text
    finally:
        root.setLevel(level)


class _Reconfigurable(service.Service):
    """Takes the options named takes; records what it was given."""

    def __init__(self, takes):
        self.takes, self.given = takes, []

    def reconfigure(self, new, changes):
        self.given.append((new, dict(changes)))
        return set(changes) & self.takes


def test_reload_reads_the_file_again_and_applies_what_the_daemon_takes(tmp_path, caplog):
    """SIGHUP reads the configuration file again: a change a service takes is applied
    and said, log_level here; another is said to wait for a restart (and said again at
    the next SIGHUP); what the command line set stays; a file that does not check
    changes nothing."""
    path = tmp_path / "jq.toml"
    path.write_text("[masterd]\nstate_dir = 'x'\nslots = 2\nmax_jobs = 10\n")
    args = masterd.build_parser().parse_args(["--config", str(path), "--workers", "3"])
    current = [configmod.load("masterd", args)]
    top = service.MultiService()
    taker = _Reconfigurable({"slots"})
    taker.setServiceParent(top)
    path.write_text("[masterd]\nstate_dir = 'x'\nslots = 4\nmax_jobs = 20\nworkers = 9\n"
                    "log_level = 'debug'\n")
    root = logging.getLogger()
    level = root.level
    try:
        with caplog.at_level(logging.INFO):
            common.reload_daemon(current, top)
            assert root.level == logging.DEBUG
    finally:
        root.setLevel(level)
    assert [(new.slots, new.max_jobs, new.workers, changes) for new, changes in taker.given] == [
        (4, 20, 3, {"slots": (2, 4), "max_jobs": (10, 20), "log_level": ("info", "debug")})]
    assert "SIGHUP: slots changed from 2 to 4" in caplog.text
    assert "SIGHUP: log_level changed from info to debug" in caplog.text
    assert "SIGHUP: max_jobs changed in %s (from 10 to 20): it takes effect at the next " \
           "restart" % path in caplog.text
    assert (current[0].slots, current[0].max_jobs, current[0].workers) == (4, 10, 3)
    caplog.clear()
    path.write_text("[masterd]\nstate_dir = 'x'\nslots = 'many'\n")
    with caplog.at_level(logging.INFO):
        common.reload_daemon(current, top)
    assert "SIGHUP: config file %s: [masterd] slots: must be an integer >= 1" % path in \
        caplog.text and "the running configuration stays" in caplog.text
    assert "no option changed" not in caplog.text
    assert len(taker.given) == 1 and current[0].slots == 4
    caplog.clear()
    path.write_text("[masterd]\nstate_dir = 'x'\nslots = 4\nmax_jobs = 10\n"
                    "log_level = 'debug'\n")
    with caplog.at_level(logging.INFO):
        common.reload_daemon(current, top)
    assert "no option changed" in caplog.text and len(taker.given) == 1
    assert current[0].slots == 4


# The socket path


def _bind_stale(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_prepare_leaves_a_fresh_path_alone(tmp_path):
    """No socket, no lock: nothing to do."""
    unixsocket.prepare(str(tmp_path / "s.sock"))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("holder", ["dead", "self"])
def test_prepare_clears_the_lock_and_socket_of_a_gone_daemon(tmp_path, holder):
    """A lock naming a dead PID (or our own, as in a restarted container) is stale."""
    path = str(tmp_path / "s.sock")
    _bind_stale(path)
    os.symlink(str(_dead_pid() if holder == "dead" else os.getpid()), path + ".lock")
    unixsocket.prepare(path)
    assert os.listdir(tmp_path) == []


def test_prepare_clears_a_lock_whose_pid_was_reused(tmp_path):
    """A live PID that started after the lock was made is not the lock's daemon."""
    path = str(tmp_path / "s.sock")
    _bind_stale(path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        os.symlink(str(sleeper.pid), path + ".lock")
        old = time.time() - 600
        os.utime(path + ".lock", (old, old), follow_symlinks=False)
        unixsocket.prepare(path)
        assert os.listdir(tmp_path) == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_prepare_refuses_a_live_holder(tmp_path):
    """A lock held by a live process that predates it: refused, naming the PID."""
    path = str(tmp_path / "s.sock")
    _bind_stale(path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.1)
        os.symlink(str(sleeper.pid), path + ".lock")
        with pytest.raises(common.StartupError, match="in use by PID %d" % sleeper.pid):
            unixsocket.prepare(path)
        assert sorted(os.listdir(tmp_path)) == ["s.sock", "s.sock.lock"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_prepare_without_lock_removes_a_dead_socket_but_not_a_live_one(tmp_path):
    """A socket without a lock is removed if nobody accepts on it, else refused."""
    path = str(tmp_path / "s.sock")
    _bind_stale(path)
    unixsocket.prepare(path)
    assert not os.path.exists(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(path)
        live.listen(1)
        with pytest.raises(common.StartupError, match="in use by another process"):
            unixsocket.prepare(path)
    assert os.path.exists(path)


def test_prepare_never_removes_what_is_not_a_socket(tmp_path):
    """A regular file at the socket path is refused, with or without a stale lock."""
    path = tmp_path / "s.sock"
    path.write_text("precious")
    with pytest.raises(common.StartupError, match="not a socket"):
        unixsocket.prepare(str(path))
    os.symlink(str(_dead_pid()), str(path) + ".lock")
    with pytest.raises(common.StartupError, match="not a socket"):
        unixsocket.prepare(str(path))
    assert path.read_text() == "precious"


class _ReadersClock(Clock):
    """Just enough reactor for a listening port driven by hand."""

    def __init__(self):
        super().__init__()
        self.readers = []

    def addReader(self, reader):
        self.readers.append(reader)

    def removeReader(self, reader):
        if reader in self.readers:
            self.readers.remove(reader)

    def addWriter(self, writer):
        pass

    def removeWriter(self, writer):
        pass


def test_the_socket_port_reads_its_connections_with_plain_recv(tmp_path, monkeypatch):
    """unixsocket.Port serves connections as Twisted's Unix port does, but reads them
    with recv: Twisted's recvmsg (ancillary data, unused by LUXI) is never called."""
    from twisted.internet import protocol
    from twisted.python import sendmsg

    def no_recvmsg(*args, **kwargs):
        raise AssertionError("recvmsg was called")

    monkeypatch.setattr(sendmsg, "recvmsg", no_recvmsg)
    received = []

    class Echo(protocol.Protocol):
        def dataReceived(self, data):
            received.append(data)
            self.transport.write(data.upper())

    factory = protocol.Factory.forProtocol(Echo)
    reactor = _ReadersClock()
    path = str(tmp_path / "s.sock")
    port = unixsocket.Port(path, factory, 5, mode=0o660, reactor=reactor, wantPID=True)
    port.startListening()
    try:
        assert os.path.islink(path + ".lock") and oct(os.stat(path).st_mode & 0o777) == "0o660"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            port.doRead()  # accept
            connection = reactor.readers[-1]
            assert connection is not port
            client.sendall(b"hello")
            connection.doRead()
            assert received == [b"hello"]
            connection.doWrite()
            assert client.recv(10) == b"HELLO"
            connection.loseConnection()
    finally:
        port.stopListening()
