"""Shared fixtures: queues on temporary directories, with a synchronous pool by default."""

import os
import signal
import subprocess
import sys
import uuid

import pytest
from cluster_helpers import noded_factory
from daemon_helpers import daemon_factory, processes_with
from fakes import SyncPool

from jqueue import opcodes
from jqueue.queue import JobQueue


class FakeClock:
    """A settable clock for the queue's timestamps and ages."""

    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def open_queue(tmp_path, clock):
    """Open (and at teardown close) queues on tmp_path/queue with a SyncPool and fake clock."""
    opened = []

    def opener(path=None, **kwargs):
        kwargs.setdefault("pool_factory", SyncPool)
        kwargs.setdefault("checkpoint_interval", None)
        kwargs.setdefault("clock", clock)
        queue = JobQueue(str(path or tmp_path / "queue"), **kwargs)
        opened.append(queue)
        return queue

    yield opener
    for queue in opened:
        queue.shutdown(timeout=5)


def delay(duration=0, **params):
    """An OP_TEST_DELAY opcode."""
    return dict({"OP_ID": "OP_TEST_DELAY", "duration": duration}, **params)


def jqop(**params):
    """An OP_TEST_JQUEUE opcode."""
    return dict({"OP_ID": "OP_TEST_JQUEUE"}, **params)


def registry_of(*classes):
    """Every opcode jqueue has, and classes (a test's own opcodes)."""
    registry = opcodes.Registry()
    opcodes.register_opcodes(registry)
    for cls in classes:
        registry.register(cls)
    return registry


def crash(queue):
    """Leave queue as a crash would: no checkpoint, no final write; its directory (the
    journal, the files as they are) is free to be opened again."""
    queue._closing = queue._closed = True
    queue._journal.close()
    queue._dir.unlock()


def run_jobs(queue):
    """Run a SyncPool queue's jobs until nothing is left to run, changes durable."""
    total = 0
    while True:
        ran = queue._pool.run_all()
        queue.wait_durable(10)
        total += ran
        if not ran and not queue._pool.stats()["waiting"]:
            return total


@pytest.fixture
def daemons(tmp_path):
    """Start jq-masterd processes on tmp_path; each must still stop with status 0."""
    yield from daemon_factory(tmp_path)


@pytest.fixture
def nodeds():
    """Start jq-noded processes of test clusters; each must still stop with status 0."""
    yield from noded_factory()


@pytest.fixture
def marks():
    """make() gives a fresh marker for a test's commands or services (JQ_TEST_MARK in
    their environment); no process carrying one may outlive the test."""
    made = []

    def make():
        made.append(uuid.uuid4().hex)
        return made[-1]
    yield make
    left = [pid for mark in made for pid in processes_with(mark)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert left == [], "processes of the test survived it"


def attempt_names(path):
    """The attempts' directories in an attempts directory (not its spares and trash, whose
    names start with a dot: jqueue.exec.attemptdir)."""
    return sorted(name for name in os.listdir(path) if not name.startswith("."))


def python_child(script, timeout=60):
    """The words a child Python prints running script; the test fails if it has not ended
    within timeout seconds (for work that must not hang this process, as a regular
    expression in a backtracking engine would)."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


class ClockSteps:
    """Steps of the wall clock, one process at a time: env(name) are the variables that
    give a process its own wall clock (tests/clockshift.c, preloaded), step(name, seconds)
    moves it by seconds (forward, or back if negative) from what the machine's says."""

    def __init__(self, library, directory):
        self._library = library
        self._directory = directory

    def _path(self, name):
        return os.path.join(self._directory, "clock-" + name)

    def env(self, name):
        self.step(name, 0)
        return {"LD_PRELOAD": self._library, "JQ_TEST_CLOCK_SHIFT": self._path(name)}

    def step(self, name, seconds):
        with open(self._path(name) + ".new", "w", encoding="ascii") as stream:
            stream.write("%g\n" % seconds)
        os.replace(self._path(name) + ".new", self._path(name))


@pytest.fixture(scope="session")
def clockshift_library(tmp_path_factory):
    """tests/clockshift.c built (with cc, as the command shim is)."""
    out = str(tmp_path_factory.mktemp("clockshift") / "clockshift.so")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clockshift.c")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", out, source, "-ldl"], check=True)
    return out


@pytest.fixture
def clock_steps(clockshift_library, tmp_path):
    return ClockSteps(clockshift_library, str(tmp_path))
