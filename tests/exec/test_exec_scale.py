"""Many running attempts cost the daemon no thread, and one file descriptor each at most.

The benchmark's target is 1,000 concurrent ``sleep 30`` attempts; 200 keep the suite fast.
"""

import os
import resource
import subprocess
import sys

import pytest
from daemon_helpers import seed_shim_cache
from exec_helpers import Executors, assert_no_cgroup_left

from jqueue.exec import attemptdir

HERE = os.path.dirname(os.path.abspath(__file__))

COUNT = 200


@pytest.fixture
def executors(tmp_path):
    made = Executors(tmp_path)
    yield made
    assert made.close() == [], "processes of a test job survived it"


def threads():
    return len(os.listdir("/proc/self/task"))


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_200_running_attempts_add_no_thread(executors):
    """Threads stay as they were with none running; the pidfds are closed at the end."""
    executor, reactor, recorder = executors.make()
    threads_idle, fds_idle = threads(), open_fds()
    for job in range(1, COUNT + 1):
        executor.launch(executors.spec(job, ["sleep", "30"]))
    reactor.run_until(lambda: len(recorder.of("started")) == COUNT, 60, "every start")
    assert threads() == threads_idle
    assert open_fds() <= fds_idle + COUNT  # one pidfd per shim, nothing else kept open
    running = [i for i in executor.attempts() if i.result is None]
    assert len(running) == COUNT and len({i.pid for i in running}) == COUNT
    for job in range(1, COUNT + 1):
        assert executor.kill(job, 1)[0]
    reactor.run_until(lambda: len(recorder.of("ended")) == COUNT, 60, "every end")
    assert threads() == threads_idle and open_fds() == fds_idle
    assert {e[3].signal for e in recorder.of("ended")} == {9}


def test_the_open_files_limit_is_raised_for_the_daemon_but_not_for_commands(executors):
    """A daemon with a soft limit of 256 files: the executor raises its own (a pidfd per
    attempt), and the command still gets 256."""
    state_dir = executors.state_dir()
    seed_shim_cache(state_dir)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "exec_host_child.py"), state_dir, "c",
         executors.marker, "ulimit -n", "until-end"],
        capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[-1] == "ended 0 None"
    assert lines[0] == "nofile %d" % min(hard, 65536)
    assert_no_cgroup_left(state_dir)
    output = attemptdir.output_in(attemptdir.attempt_path(state_dir, 1, 1))
    assert attemptdir.read_output(output, 0, 100) == b"256\n"
