"""Attempts survive the daemon: a new executor on the same state directory re-adopts them,
reports their true outcome and whole output, and never mistakes a stranger for a shim.
"""

import errno
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from daemon_helpers import c_shim_program, holding, seed_shim_cache, wait_until
from exec_helpers import (
    SHIMS,
    Executors,
    assert_no_cgroup_left,
    processes_with_marker,
    wait_ended,
)

from jqueue import errors, serializer
from jqueue.commandjob import LOST_UNSTARTED
from jqueue.exec import attemptdir, shims
from jqueue.exec import executor as executor_module

HERE = os.path.dirname(os.path.abspath(__file__))

#: Numbered lines, a pause (the daemon dies and comes back in it), more lines, exit 7.
LINES = ('i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo "line $i"; '
         '[ $i = 1500 ] && sleep 1; done; exit 7')
EXPECTED = b"".join(b"line %d\n" % i for i in range(1, 3001))


@pytest.fixture
def executors(tmp_path):
    made = Executors(tmp_path)
    yield made
    assert made.close() == [], "processes of a test job survived it"


@pytest.fixture(params=SHIMS)
def shim(request):
    return request.param


def edit_spec(executor, job, attempt, **changes):
    path = os.path.join(attemptdir.attempt_path(executor.state_dir, job, attempt), "spec.json")
    spec = serializer.loads(open(path, "rb").read())
    spec.update(changes)
    attemptdir.write_atomic(path, serializer.dumps_bytes(spec))
    return spec


def test_a_running_attempt_is_readopted_after_stop(executors, shim):
    """stop() leaves the job running; a new executor finds it, hears its end, exit 7."""
    first, reactor, recorder = executors.make(shim=shim)
    first.launch(executors.spec(1, LINES))
    reactor.run_until(lambda: first.read(1, 1, 0, 1 << 20).endswith(b"line 1500\n"), 10,
                      "the first half")
    first.stop()
    second, reactor2, recorder2 = executors.make(shim=shim, state_dir=first.state_dir,
                                                 start=False)
    (info,) = second.start()
    assert (info.job, info.attempt, info.result) == (1, 1, None) and info.pid > 0
    result = wait_ended(second, reactor2, recorder2, 1)
    assert (result.exit_status, result.error) == (7, None)
    assert second.read(1, 1, 0, 1 << 20) == EXPECTED
    assert recorder2.of("output")[-1][3] == len(EXPECTED)


def test_an_attempt_survives_sigkill_of_its_daemon(executors, shim):
    """A real daemon process (real reactor) is SIGKILLed mid-run; the attempt runs on and
    the next executor reports exit status 7 and the output byte-exact."""
    state_dir = executors.state_dir()
    if shim == "c":
        seed_shim_cache(state_dir)
    host = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "exec_host_child.py"), state_dir, shim,
         executors.marker, LINES], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(line.startswith("started") for line in lines):
            lines.append(host.stdout.readline())
            assert lines[-1], "the host ended early"
        pid = int(lines[-1].split()[1])
    finally:
        host.kill()
        host.wait()
    # the daemon is gone, not the job ("started" comes once the pid is recorded, just before
    # the exec, so the command may carry its environment a moment later)
    wait_until(lambda: pid in processes_with_marker(executors.marker), 10,
               "the command to outlive its daemon")
    executor, reactor, recorder = executors.make(shim=shim, state_dir=state_dir, start=False)
    (info,) = executor.start()
    assert (info.pid, info.result) == (pid, None)  # still running: watched again
    result = wait_ended(executor, reactor, recorder, 1)
    assert (result.exit_status, result.signal, result.error) == (7, None, None)
    assert executor.read(1, 1, 0, 1 << 20) == EXPECTED


def test_a_readopted_attempt_is_signalled_as_its_shim_was_told(executors, monkeypatch):
    """After re-adoption, signal() uses the forwarding base recorded for the attempt,
    even if this executor's own differs; terminate works as well."""
    first, reactor, _ = executors.make()
    first.launch(executors.spec(
        1, "trap 'echo got HUP' HUP; echo ready; while :; do sleep 0.05; done"))
    reactor.run_until(lambda: first.read(1, 1, 0, 10) == b"ready\n", 10, "ready")
    first.stop()
    monkeypatch.setattr(executor_module, "RT_BASE", signal.SIGRTMIN + 1)
    second, reactor2, recorder2 = executors.make(state_dir=first.state_dir)
    assert second.signal(1, 1, signal.SIGHUP)[0]
    reactor2.run_until(lambda: b"got HUP" in second.read(1, 1, 0, 100), 10, "the HUP")
    assert second.terminate(1, 1)[0]
    assert wait_ended(second, reactor2, recorder2, 1).signal == signal.SIGTERM


def test_the_real_reactor_hears_the_whole_life_of_an_attempt(executors):
    """Twisted's reactor (its SIGCHLD handler installed): started, output, ended 7."""
    state_dir = executors.state_dir()
    seed_shim_cache(state_dir)
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "exec_host_child.py"), state_dir, "c",
         executors.marker, "echo hello; exit 7", "until-end"],
        capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[1].startswith("started ") and lines[-1] == "ended 7 None"
    assert "output 6" in lines
    assert_no_cgroup_left(state_dir)


def test_an_attempt_that_ended_while_no_daemon_watched_reports_its_true_result(executors):
    """Ended during the gap: start() returns it with its real exit status."""
    first, reactor, recorder = executors.make()
    first.launch(executors.spec(1, "sleep 0.2; echo done; exit 5"))
    first.stop()
    time.sleep(0.5)
    second, _, recorder2 = executors.make(state_dir=first.state_dir, start=False)
    (info,) = second.start()
    assert (info.result.exit_status, info.result.error, info.output_size) == (5, None, 5)
    assert recorder2.events == []
    assert second.read(1, 1, 0, 100) == b"done\n"


def test_a_memory_limit_is_kept_while_no_daemon_watches(executors):
    """The shim enforces memory_max on its own: a job that goes over it while its daemon is
    stopped is killed, and the next daemon reports it so, with what it held."""
    first, reactor, recorder = executors.make()
    script = "sleep 0.3; exec " + shlex.join(holding(48))
    first.launch(executors.spec(1, script, memory_max=32 << 20))
    first.stop()
    result = os.path.join(attemptdir.attempt_path(first.state_dir, 1, 1), "result")
    deadline = time.monotonic() + 20
    while not os.path.exists(result):
        assert time.monotonic() < deadline, "the shim did not kill it"
        time.sleep(0.05)
    second, _, _ = executors.make(state_dir=first.state_dir, start=False)
    (info,) = second.start()
    assert (info.result.signal, info.result.memory_exceeded) == (signal.SIGKILL, True)
    assert info.result.max_rss > 32 << 20
    assert executors.survivors() == []


def test_a_recycled_shim_pid_is_not_mistaken_for_the_shim(executors, shim):
    """The recorded shim died; its pid now names another live process (start time differs).
    The attempt is lost, the stranger is left alone, what remained of the job is killed."""
    first, reactor, _ = executors.make(shim=shim)
    first.launch(executors.spec(1, ["sleep", "1000"]))
    reactor.run_until(lambda: first.info(1, 1).pid, 10, "the pid")
    first.stop()
    spec = serializer.loads(open(os.path.join(
        attemptdir.attempt_path(first.state_dir, 1, 1), "spec.json"), "rb").read())
    os.kill(spec["shim_pid"], signal.SIGKILL)
    stranger = subprocess.Popen(["sleep", "1000"])
    try:
        edit_spec(first, 1, 1, shim_pid=stranger.pid)
        second, _, _ = executors.make(shim=shim, state_dir=first.state_dir, start=False)
        (info,) = second.start()
        assert info.result.error == "attempt lost: its supervisor died"
        assert stranger.poll() is None  # not signalled, not watched
        assert second.terminate(1, 1) == (False, "job 1 attempt 1 is not running")
        deadline = time.monotonic() + 5
        while executors.survivors() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert executors.survivors() == []  # the orphaned command was killed
    finally:
        stranger.kill()
        stranger.wait()


def test_the_start_time_identifies_the_shim(executors):
    """A live process at the recorded shim pid is not the shim if its start time differs
    (here: this test process itself, which must be neither watched nor signalled)."""
    first, reactor, recorder = executors.make()
    first.launch(executors.spec(1, "exit 0"))
    wait_ended(first, reactor, recorder, 1)
    first.stop()
    os.unlink(os.path.join(attemptdir.attempt_path(first.state_dir, 1, 1), "result"))
    edit_spec(first, 1, 1, shim_pid=os.getpid())
    second, _, _ = executors.make(state_dir=first.state_dir, start=False)
    (info,) = second.start()
    assert info.result.error == "attempt lost: its supervisor died"


def test_a_launch_records_bounds_of_its_shims_start_without_waiting_for_its_exec(
        executors, monkeypatch):
    """The shim's start time is not read from /proc at its launch (the read waits for the
    shim's exec to be complete): spec.json holds the clock ticks before and after its
    spawn, and they hold the start /proc shows."""
    executor, reactor, recorder = executors.make()
    read = []
    real = attemptdir.proc_start_time
    monkeypatch.setattr(attemptdir, "proc_start_time", lambda pid: read.append(pid) or real(pid))
    executor.launch(executors.spec(1, ["sleep", "1000"]))
    spec = serializer.loads(open(os.path.join(
        attemptdir.attempt_path(executor.state_dir, 1, 1), "spec.json"), "rb").read())
    assert spec["shim_pid"] not in read
    assert spec["shim_start"] <= real(spec["shim_pid"]) <= spec["shim_start_max"]
    executor.kill(1, 1)
    wait_ended(executor, reactor, recorder, 1)


NO_MAX = object()  # a spec.json from before the bounds: shim_start alone, the exact start


@pytest.mark.parametrize("earliest, latest, adopted", [
    (0, 0, True),
    (-2, 1, True),
    (0, NO_MAX, True),
    (1, 3, False),
    (-3, -1, False),
    (-1, NO_MAX, False),
    (0, "0", False),  # malformed
])
def test_a_shim_is_readopted_only_if_it_started_within_the_recorded_bounds(
        executors, earliest, latest, adopted):
    """The live process at the shim's pid is taken for the shim iff its start time (in
    ticks) lies within the bounds spec.json records (or equals the one start an older
    spec has); otherwise the attempt is lost, and not followed."""
    first, reactor, _ = executors.make()
    first.launch(executors.spec(1, ["sleep", "1000"]))
    reactor.run_until(lambda: first.info(1, 1).pid, 10, "the pid")
    first.stop()
    path = os.path.join(attemptdir.attempt_path(first.state_dir, 1, 1), "spec.json")
    spec = serializer.loads(open(path, "rb").read())
    start = attemptdir.proc_start_time(spec["shim_pid"])
    spec["shim_start"] = start + earliest
    if latest is NO_MAX:
        del spec["shim_start_max"]
    else:
        spec["shim_start_max"] = start + latest if isinstance(latest, int) else latest
    attemptdir.write_atomic(path, serializer.dumps_bytes(spec))
    second, reactor2, recorder2 = executors.make(state_dir=first.state_dir, start=False)
    (info,) = second.start()
    if adopted:
        assert info.result is None and info.pid > 0
        assert second.kill(1, 1)[0]
        assert wait_ended(second, reactor2, recorder2, 1).signal == signal.SIGKILL
    else:
        assert info.result.error == "attempt lost: its supervisor died"
        assert second.kill(1, 1) == (False, "job 1 attempt 1 is not running")
        try:
            os.kill(spec["shim_pid"], signal.SIGKILL)  # it was the shim all the same
        except ProcessLookupError:
            pass


def test_attempts_of_a_previous_boot_are_lost(executors):
    """A different boot id: the attempt is reported lost because the node rebooted."""
    first, reactor, recorder = executors.make()
    first.launch(executors.spec(1, "sleep 1000"))
    first.kill(1, 1)
    wait_ended(first, reactor, recorder, 1)
    first.stop()
    os.unlink(os.path.join(attemptdir.attempt_path(first.state_dir, 1, 1), "result"))
    edit_spec(first, 1, 1, boot_id="a-previous-boot")
    second, _, _ = executors.make(state_dir=first.state_dir, start=False)
    (info,) = second.start()
    assert info.result.error == "attempt lost: the node rebooted"
    assert (info.result.exit_status, info.result.signal) == (None, None)
    third, _, _ = executors.make(state_dir=first.state_dir, start=False)
    second.stop()
    (again,) = third.start()
    assert again.result == info.result  # the loss is recorded, not decided again


def test_a_launch_that_crashed_before_its_spec_is_lost(executors):
    """An attempt directory without spec.json: the daemon died while starting it."""
    state_dir = executors.state_dir()
    os.makedirs(attemptdir.attempt_path(state_dir, 3, 2))
    executor, _, _ = executors.make(state_dir=state_dir, start=False)
    (info,) = executor.start()
    assert (info.job, info.attempt) == (3, 2)
    assert info.result.error == "attempt lost: the daemon died while starting it"
    assert executor.launch(executors.spec(3, "true", attempt=2)).result == info.result


def test_an_adoption_cut_short_leaves_the_attempt_unknown_to_be_adopted_again(executors,
                                                                            monkeypatch):
    """A launch finding the directory of a start that failed adopts it; when a read fails
    on the way (no descriptor left: EMFILE) it raises and knows nothing of the attempt,
    so the next launch adopts it whole (lost, never started). It used to keep the attempt
    half known: every later launch answered "running", and its job ran for ever."""
    state_dir = executors.state_dir()
    executor, _, _ = executors.make(state_dir=state_dir)
    os.makedirs(attemptdir.attempt_path(state_dir, 3, 2))
    real = attemptdir.output_size

    def no_descriptors(path):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    monkeypatch.setattr(attemptdir, "output_size", no_descriptors)
    with pytest.raises(OSError):
        executor.launch(executors.spec(3, "true", attempt=2))
    assert [(i.job, i.attempt) for i in executor.attempts()] == []
    monkeypatch.setattr(attemptdir, "output_size", real)
    info = executor.launch(executors.spec(3, "true", attempt=2))
    assert info.result.error == "attempt lost: the daemon died while starting it"


def test_a_process_whose_start_time_cannot_be_read_is_not_taken_for_gone(monkeypatch):
    """Out of descriptors, /proc cannot be read: that is an error, not "no such process"
    (which made a running attempt lost and its command's group killed)."""
    assert attemptdir.proc_start_time(os.getpid()) is not None
    assert attemptdir.proc_start_time(2 ** 22 + 1) is None  # above pid_max: none

    def no_descriptors(*args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    monkeypatch.setattr(os, "open", no_descriptors)
    with pytest.raises(OSError):
        attemptdir.proc_start_time(os.getpid())
    with pytest.raises(OSError):
        attemptdir.group_is_ours(os.getpid(), 1, "boot", "boot")


def test_a_launch_that_crashed_while_writing_its_spec_is_lost(executors):
    """spec.json is written once, without a rename: whatever part of it a crash left
    does not parse, and the attempt is lost as if there were none."""
    spec = {"job": 3, "attempt": 2, "argv": ["true"], "dir": "/", "boot_id": "b",
            "shim_pid": 1, "shim_start": 1, "cgroup": None, "output": "/nonexistent"}
    whole = serializer.dumps_bytes(spec)
    for cut in (1, len(whole) // 2, len(whole) - 1):
        state_dir = executors.state_dir("state-%d" % cut)
        path = attemptdir.attempt_path(state_dir, 3, 2)
        os.makedirs(path)
        with open(os.path.join(path, "spec.json"), "wb") as stream:
            stream.write(whole[:cut])
        assert attemptdir.read_spec(path) is None
        executor, _, _ = executors.make(state_dir=state_dir, start=False)
        (info,) = executor.start()
        assert info.result.error == "attempt lost: the daemon died while starting it"
        executor.stop()


@pytest.mark.parametrize("contained", ["cgroup", "pgroup"])
def test_a_shim_killed_while_its_command_runs_loses_the_attempt(executors, shim, contained):
    """SIGKILL to the shim: "attempt lost: its supervisor died"; nothing of the job is left."""
    executor, reactor, recorder = executors.make(shim=shim, use_cgroup=contained == "cgroup")
    executor.launch(executors.spec(1, "sleep 1000 & sleep 1000"))
    reactor.run_until(lambda: len(executors.survivors()) >= 3, 10, "the job")
    kill_shim_and_find_nothing_left(executors, executor, reactor, recorder)


def kill_shim_and_find_nothing_left(executors, executor, reactor, recorder):
    """SIGKILL to job 1 attempt 1's shim: the attempt is lost, "its supervisor died", and
    within 5 s no process of the job is left."""
    spec = serializer.loads(open(os.path.join(
        attemptdir.attempt_path(executor.state_dir, 1, 1), "spec.json"), "rb").read())
    os.kill(spec["shim_pid"], signal.SIGKILL)
    result = wait_ended(executor, reactor, recorder, 1)
    assert result.error == "attempt lost: its supervisor died"
    deadline = time.monotonic() + 5
    while executors.survivors() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert executors.survivors() == []


def test_a_group_is_ours_until_another_process_takes_its_id():
    """A recorded leader's group may be signalled while the leader lives and once no
    process has its id (its orphans keep the group); not when a process with another
    start time has the id, nor after a reboot."""
    me, start = os.getpid(), attemptdir.proc_start_time(os.getpid())
    assert attemptdir.group_is_ours(me, start, "boot", "boot")
    assert not attemptdir.group_is_ours(me, start - 1, "boot", "boot")  # a stranger has it
    assert not attemptdir.group_is_ours(me, start, "earlier boot", "boot")
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert attemptdir.group_is_ours(gone.pid, 12345, "boot", "boot")
    assert not attemptdir.group_is_ours(0, 12345, "boot", "boot")


@pytest.mark.parametrize("contained", ["cgroup", "pgroup"])
def test_a_shim_killed_after_its_command_exited_leaves_no_orphan(executors, shim, contained):
    """The command's main process exited, leaving a child that ignores SIGTERM; while the
    shim waits out the grace, SIGKILL to the shim: the executor kills the orphan, whose
    group outlives its leader (with the process group alone as well as with a cgroup)."""
    executor, reactor, recorder = executors.make(shim=shim, use_cgroup=contained == "cgroup")
    executor.launch(executors.spec(1, "trap '' TERM; sleep 1000 & echo started",
                                   kill_grace=60))
    reactor.run_until(lambda: executor.read(1, 1, 0, 100) == b"started\n", 10, "the job")
    path = attemptdir.attempt_path(executor.state_dir, 1, 1)
    leader = attemptdir.read_pid(path)[0]
    deadline = time.monotonic() + 10
    while attemptdir.proc_start_time(leader) is not None and time.monotonic() < deadline:
        time.sleep(0.02)  # the shim reaped the main process: only the orphan is left
    assert attemptdir.proc_start_time(leader) is None
    (orphan,) = executors.survivors()
    assert os.getpgid(orphan) == leader
    kill_shim_and_find_nothing_left(executors, executor, reactor, recorder)


@pytest.mark.parametrize("env_data", [b"", b"PATH=/bin\0"])
def test_a_shim_without_the_end_mark_never_runs_the_command(tmp_path, shim, env_data):
    """The daemon died before sending the whole environment: the command never starts."""
    program = c_shim_program() if shim == "c" else shims.python_shim()
    marker = tmp_path / "ran"
    done = subprocess.run(
        program.argv_prefix + ["--attempt-dir", str(tmp_path), "--dir", "/", "--timeout",
                               "0", "--grace", "1", "--rt-base", str(signal.SIGRTMIN), "--",
                               "touch", str(marker)], input=env_data, env={})
    assert done.returncode == 3
    assert not marker.exists()
    result = attemptdir.read_result(str(tmp_path))
    assert result.error == "attempt lost: the daemon died while starting it"


def test_one_state_directory_has_one_executor(executors):
    """A second executor on the same state directory is refused while the first runs."""
    first, _, _ = executors.make()
    second, _, _ = executors.make(state_dir=first.state_dir, start=False)
    with pytest.raises(errors.CommandError, match="another executor uses"):
        second.start()
    first.stop()
    assert second.start() == []


def test_one_run_directory_has_one_executor(executors, tmp_path):
    """Two executors of different state directories cannot share a run directory (each
    would adopt the other's attempts); the refused one holds no lock after."""
    run_dir = str(tmp_path / "run")
    first, _, _ = executors.make(state_dir=executors.state_dir("one"), run_dir=run_dir)
    second, _, _ = executors.make(state_dir=executors.state_dir("two"), run_dir=run_dir,
                                  start=False)
    with pytest.raises(errors.CommandError, match="another executor uses %s" % run_dir):
        second.start()
    third, _, _ = executors.make(state_dir=second.state_dir, start=False)
    assert third.start() == []  # the refused one released its state directory
    first.stop()
    third.stop()
    assert second.start() == []


# A run directory (tmpfs in production: /run) for the attempts' directories


def test_with_a_run_directory_attempts_live_there_and_their_output_on_disk(executors, shim,
                                                                           tmp_path):
    """The attempt's directory (spec, pid, result) is in the run directory, its output in
    the state directory's outputs/ (spec.json names it); a new executor re-adopts the
    running attempt from there with its whole output and true end; forgetting it removes
    both."""
    run_dir = str(tmp_path / "run")
    first, reactor, _ = executors.make(shim=shim, run_dir=run_dir)
    first.launch(executors.spec(1, LINES))
    reactor.run_until(lambda: first.read(1, 1, 0, 1 << 20).endswith(b"line 1500\n"), 10,
                      "the first half")
    path = attemptdir.attempt_path(run_dir, 1, 1)
    output = attemptdir.output_path(first.state_dir, 1, 1)
    assert sorted(os.listdir(path)) == [".result.tmp", "pid", "spec.json"]  # result's room
    assert attemptdir.read_spec(path)["output"] == output and os.path.isfile(output)
    assert not os.path.exists(attemptdir.attempts_dir(first.state_dir))
    first.stop()
    second, reactor2, recorder2 = executors.make(shim=shim, state_dir=first.state_dir,
                                                 run_dir=run_dir, start=False)
    (info,) = second.start()
    assert (info.job, info.attempt, info.result) == (1, 1, None) and info.pid > 0
    result = wait_ended(second, reactor2, recorder2, 1)
    assert (result.exit_status, result.error) == (7, None)
    assert second.read(1, 1, 0, 1 << 20) == EXPECTED
    second.forget(1, 1)
    assert os.listdir(attemptdir.attempts_dir(run_dir)) == [".spare-1.1"]  # kept for reuse
    assert os.listdir(attemptdir.outputs_dir(first.state_dir)) == []


def test_an_output_whose_run_directory_was_emptied_is_an_attempt_lost_with_its_output(
        executors, tmp_path):
    """A reboot empties the run directory (tmpfs) but not the outputs on disk: the next
    executor takes each such output up as an attempt that ended lost (NODE_LOST for the
    master), its output still readable; forgotten, it leaves nothing. A forgotten
    attempt's output never comes back that way."""
    run_dir = str(tmp_path / "run")
    first, reactor, recorder = executors.make(run_dir=run_dir)
    first.launch(executors.spec(1, "echo kept; echo twice"))
    first.launch(executors.spec(2, "echo forgotten"))
    wait_ended(first, reactor, recorder, 1)
    wait_ended(first, reactor, recorder, 2)
    first.forget(2, 1)
    first.stop()
    attemptdir.remove(run_dir)  # what a reboot does to a tmpfs
    second, _, _ = executors.make(state_dir=first.state_dir, run_dir=run_dir, start=False)
    (info,) = second.start()
    assert (info.job, info.attempt, info.pid) == (1, 1, None)
    assert info.result.error.startswith("attempt lost: its record in the run directory")
    assert second.read(1, 1, 0, 100) == b"kept\ntwice\n"
    second.forget(1, 1)
    assert os.listdir(attemptdir.attempts_dir(run_dir)) == [".spare-1.1"]  # kept for reuse
    assert os.listdir(attemptdir.outputs_dir(first.state_dir)) == []


@pytest.mark.parametrize("before,after", [(None, "run"), ("run", None), ("run", "other")])
def test_a_running_attempt_is_followed_when_the_run_directory_changes(executors, tmp_path,
                                                                      before, after):
    """A daemon restarted with a run directory, without one, or with another, still finds
    the attempts it started before (exec/run-dirs names where they are), follows them to
    their true end with their whole output, and forgets them there; new attempts go to
    the new place, and once the old one holds none it is no longer named."""
    old_dir, new_dir = [str(tmp_path / name) if name else None for name in (before, after)]
    first, reactor, _ = executors.make(run_dir=old_dir)
    state_dir = first.state_dir
    first.launch(executors.spec(1, LINES))
    reactor.run_until(lambda: first.read(1, 1, 0, 1 << 20).endswith(b"line 1500\n"), 10,
                      "the first half")
    old_path = attemptdir.attempt_path(old_dir or state_dir, 1, 1)
    assert os.path.isdir(old_path)
    first.stop()

    second, reactor2, recorder2 = executors.make(state_dir=state_dir, run_dir=new_dir,
                                                 start=False)
    (info,) = second.start()
    assert (info.job, info.attempt, info.result) == (1, 1, None) and info.pid > 0
    run_dirs = os.path.join(state_dir, "exec", executor_module.RUN_DIRS_FILE)
    named = serializer.loads(open(run_dirs, "rb").read())
    assert named == [d for d in (new_dir, old_dir) if d]
    second.launch(executors.spec(2, "echo new"))
    assert os.path.isdir(attemptdir.attempt_path(new_dir or state_dir, 2, 1))
    result = wait_ended(second, reactor2, recorder2, 1)
    assert (result.exit_status, result.error) == (7, None)
    assert second.read(1, 1, 0, 1 << 20) == EXPECTED
    wait_ended(second, reactor2, recorder2, 2)
    second.forget(1, 1)
    assert not os.path.exists(old_path)
    outputs = attemptdir.outputs_dir(state_dir)
    assert not os.path.exists(attemptdir.output_path(state_dir, 1, 1))
    second.stop()

    third, _, _ = executors.make(state_dir=state_dir, run_dir=new_dir, start=False)
    assert [(i.job, i.result.exit_status) for i in third.start()] == [(2, 0)]
    if new_dir:
        assert serializer.loads(open(run_dirs, "rb").read()) == [new_dir]
    else:
        assert not os.path.exists(run_dirs)
    third.forget(2, 1)
    assert not os.path.isdir(outputs) or os.listdir(outputs) == []


@pytest.mark.parametrize("content", [b"{not json", b'{"a": 1}', b'["relative/dir", 7]'])
def test_a_malformed_list_of_run_directories_is_ignored_and_rewritten(executors, tmp_path,
                                                                       content):
    """exec/run-dirs that is not a list of absolute paths does not stop the executor: it
    is ignored (logged) and written again with the run directory in use."""
    run_dir = str(tmp_path / "run")
    state_dir = executors.state_dir("one")
    os.makedirs(os.path.join(state_dir, "exec"))
    run_dirs = os.path.join(state_dir, "exec", executor_module.RUN_DIRS_FILE)
    with open(run_dirs, "wb") as handle:
        handle.write(content)
    executor, _, _ = executors.make(state_dir=state_dir, run_dir=run_dir, start=False)
    assert executor.start() == []
    assert serializer.loads(open(run_dirs, "rb").read()) == [run_dir]


def _inodes(path):
    return {name: os.stat(os.path.join(path, name)).st_ino for name in os.listdir(path)}


def assert_clean_spare(spare):
    """A spare holds no output and no spec.json that parses, and has freed no block."""
    assert sorted(os.listdir(spare)) == [".pid.tmp", ".result.tmp", "output", "spec.json"]
    assert os.stat(os.path.join(spare, "output")).st_size == 0
    assert attemptdir.read_spec(spare) is None
    with open(os.path.join(spare, "spec.json"), "rb") as f:
        assert f.read(1) == b"\0"
    assert all(os.stat(os.path.join(spare, n)).st_blocks > 0
               for n in (".pid.tmp", ".result.tmp", "spec.json"))


def test_a_forgotten_attempts_directory_serves_the_next_launch_emptied(executors, shim):
    """forget keeps the directory as a spare, its output emptied and its spec.json made
    unparsable, no block freed; the next launch takes it (the same inodes: no file made,
    none deleted) and nothing of the first attempt shows."""
    executor, reactor, recorder = executors.make(shim=shim)
    executor.launch(executors.spec(1, "echo first; exit 3"))
    assert wait_ended(executor, reactor, recorder, 1).exit_status == 3
    first = attemptdir.attempt_path(executor.state_dir, 1, 1)
    used = _inodes(first)
    directory = os.stat(first).st_ino
    executor.forget(1, 1)
    spare = os.path.join(attemptdir.attempts_dir(executor.state_dir), ".spare-1.1")
    assert os.listdir(attemptdir.attempts_dir(executor.state_dir)) == [".spare-1.1"]
    assert_clean_spare(spare)
    info = executor.launch(executors.spec(2, "echo second"))
    # nothing of the first attempt (6 bytes); the command may have written its own already
    assert info.result is None and info.output_size in (0, len(b"second\n"))
    result = wait_ended(executor, reactor, recorder, 2)
    second = attemptdir.attempt_path(executor.state_dir, 2, 1)
    assert (result.exit_status, os.stat(second).st_ino) == (0, directory)
    assert executor.read(2, 1, 0, 1000) == b"second\n"
    assert attemptdir.read_spec(second)["job"] == 2
    assert set(_inodes(second).values()) == set(used.values())
    assert os.listdir(attemptdir.attempts_dir(executor.state_dir)) == ["2.1"]


def test_a_small_attempt_becomes_a_spare_at_once_a_big_one_in_a_pool_thread(executors,
                                                                           monkeypatch):
    """An attempt with at most SPARE_HERE_BYTES of output is made a spare by forget
    itself (no hand-off to a thread per attempt); one with more goes to a pool thread,
    where freeing its output keeps the reactor waiting for nothing."""
    executor, reactor, recorder = executors.make()
    handed = []
    monkeypatch.setattr(reactor, "callInThread", lambda fn, *args: handed.append((fn, args)))
    big = executor_module.SPARE_HERE_BYTES + 1
    executor.launch(executors.spec(1, "echo small"))
    executor.launch(executors.spec(2, "head -c %d /dev/zero" % big))
    wait_ended(executor, reactor, recorder, 1)
    wait_ended(executor, reactor, recorder, 2)
    attempts = attemptdir.attempts_dir(executor.state_dir)
    executor.forget(1, 1)
    assert handed == [] and sorted(os.listdir(attempts)) == [".spare-1.1", "2.1"]
    executor.forget(2, 1)
    assert len(handed) == 1 and sorted(os.listdir(attempts)) == [".forgotten-2.1", ".spare-1.1"]
    fn, args = handed.pop()
    fn(*args)
    assert sorted(os.listdir(attempts)) == [".spare-1.1", ".spare-2.1"]
    assert_clean_spare(os.path.join(attempts, ".spare-2.1"))


def test_a_spec_json_cut_short_over_a_spare_s_old_one_does_not_parse(tmp_path, monkeypatch):
    """write_spec writes the first byte last: cut short before it, over a spare's old
    spec.json of the same shape (new bytes before old ones could have parsed), the file
    starts with the spare's NUL and reads as no spec.json."""
    trash = tmp_path / ".forgotten-1.1"
    trash.mkdir()
    old = {"job": 1, "attempt": 1, "argv": ["x" * 5000], "shim_pid": 12345}
    new = dict(old, job=2)
    attemptdir.write_spec(str(trash), old)
    spare = attemptdir.make_spare(str(trash))

    def cut(fd, data, offset):
        raise OSError(errno.EIO, "cut short")

    monkeypatch.setattr(attemptdir.os, "pwrite", cut)
    with pytest.raises(OSError, match="cut short"):
        attemptdir.write_spec(spare, new)
    monkeypatch.undo()
    with open(os.path.join(spare, "spec.json"), "rb") as f:
        assert f.read() == b"\0" + serializer.dumps_bytes(new)[1:]
    assert attemptdir.read_spec(spare) is None
    attemptdir.write_spec(spare, new)
    assert attemptdir.read_spec(spare) == new


def test_a_launch_that_died_in_a_spare_before_its_spec_is_lost(executors):
    """The daemon dies between taking a spare for an attempt and writing its spec.json:
    the next start finds the attempt lost, never the spare's old attempt under its name."""
    first, reactor, recorder = executors.make()
    first.launch(executors.spec(1, "echo first; exit 3"))
    wait_ended(first, reactor, recorder, 1)
    first.forget(1, 1)
    first.stop()
    attempts = attemptdir.attempts_dir(first.state_dir)
    os.rename(os.path.join(attempts, ".spare-1.1"), os.path.join(attempts, "2.1"))  # claimed
    second, _, _ = executors.make(state_dir=first.state_dir, start=False)
    (info,) = second.start()
    assert (info.job, info.attempt, info.argv) == (2, 1, [])
    assert info.result.error == LOST_UNSTARTED


def test_spares_are_no_attempts_after_a_restart_and_serve_it(executors):
    """A restarted executor adopts no spare and launches into one."""
    executor, reactor, recorder = executors.make()
    executor.launch(executors.spec(1, "true"))
    wait_ended(executor, reactor, recorder, 1)
    directory = os.stat(attemptdir.attempt_path(executor.state_dir, 1, 1)).st_ino
    executor.forget(1, 1)
    executor.stop()
    again, reactor2, recorder2 = executors.make(state_dir=executor.state_dir, start=False)
    assert again.start() == []
    again.launch(executors.spec(2, "true"))
    assert wait_ended(again, reactor2, recorder2, 2).exit_status == 0
    assert os.stat(attemptdir.attempt_path(again.state_dir, 2, 1)).st_ino == directory


def test_spares_are_kept_up_to_a_bound_and_never_with_foreign_files(executors, monkeypatch):
    """Past SPARES_MAX a forgotten directory is removed; so is one holding a file no
    attempt writes."""
    monkeypatch.setattr(executor_module, "SPARES_MAX", 1)
    executor, reactor, recorder = executors.make()
    for job in (1, 2, 3):
        executor.launch(executors.spec(job, "true"))
        wait_ended(executor, reactor, recorder, job)
    with open(os.path.join(attemptdir.attempt_path(executor.state_dir, 1, 1), "x"), "w"):
        pass
    executor.forget(1, 1)
    assert sorted(os.listdir(attemptdir.attempts_dir(executor.state_dir))) == ["2.1", "3.1"]
    executor.forget(2, 1)
    executor.forget(3, 1)
    assert os.listdir(attemptdir.attempts_dir(executor.state_dir)) == [".spare-2.1"]
