"""The node's prolog and epilog around each command attempt (Hooks), with both shims:
what they see, what their failures do to the attempt, and that nothing of them is left.
"""

import os
import signal
import time

import pytest
from exec_helpers import SHIMS, Executors, run_to_end, wait_ended
from test_readoption import kill_shim_and_find_nothing_left

from jqueue import serializer
from jqueue.exec import Hooks, attemptdir


@pytest.fixture
def executors(tmp_path):
    made = Executors(tmp_path)
    yield made
    assert made.close() == [], "processes of a test job survived it"


@pytest.fixture(params=SHIMS)
def shim(request):
    return request.param


def test_the_prolog_and_the_epilog_run_around_the_command_as_it_runs(executors, shim,
                                                                     tmp_path):
    """Both run in the command's directory with its environment, their output in its
    output around the command's; the epilog hears the command's exit status; the outcome
    is the command's."""
    hooks = Hooks(prolog="echo prolog $JQ_JOB_ID in $PWD",
                  epilog="echo epilog status=$JQ_EXIT_STATUS signal=$JQ_SIGNAL")
    executor, reactor, recorder = executors.make(shim=shim, hooks=hooks)
    result, output = run_to_end(executors, executor, reactor, recorder, executors.spec(
        1, "echo command; exit 3", dir=str(tmp_path)))
    assert output.decode().splitlines() == [
        "prolog %s in %s" % (executors.marker, tmp_path), "command",
        "epilog status=3 signal="]
    assert (result.exit_status, result.error, result.prolog_failed,
            result.epilog_error) == (3, None, False, None)


def test_a_failing_prolog_means_the_command_never_runs(executors, shim, tmp_path):
    """prolog exit 1: the command's marker is absent, the result's error says why
    (prolog_failed), and the epilog runs still, with no status to report."""
    marker = tmp_path / "ran"
    hooks = Hooks(prolog="echo no scratch; exit 1", epilog="echo epilog [$JQ_EXIT_STATUS]")
    executor, reactor, recorder = executors.make(shim=shim, hooks=hooks)
    result, output = run_to_end(executors, executor, reactor, recorder,
                                executors.spec(1, "touch %s" % marker))
    assert not marker.exists()
    assert result.error == "prolog exited with status 1: the command never ran"
    assert result.prolog_failed and result.exit_status is None and result.max_rss is None
    assert output == b"no scratch\nepilog []\n"


def test_a_failing_epilog_is_reported_and_changes_nothing_of_the_outcome(executors, shim):
    hooks = Hooks(epilog="echo epilog $JQ_EXIT_STATUS; exit 2")
    executor, reactor, recorder = executors.make(shim=shim, hooks=hooks)
    result, output = run_to_end(executors, executor, reactor, recorder,
                                executors.spec(1, "echo done"))
    assert (result.exit_status, result.error, result.prolog_failed) == (0, None, False)
    assert result.epilog_error == "exited with status 2"
    assert output == b"done\nepilog 0\n"


def killed_once_it_wrote(executors, shim, hooks, command, output):
    """Job 1 (command) under an executor with hooks, killed once its output is output; its
    executor and result."""
    executor, reactor, recorder = executors.make(shim=shim, hooks=hooks)
    executor.launch(executors.spec(1, command))
    reactor.run_until(lambda: executor.read(1, 1, 0, 100) == output, 10, "the output")
    executor.kill(1, 1)
    return executor, reactor, recorder, wait_ended(executor, reactor, recorder, 1)


def test_the_epilog_runs_after_a_kill_and_after_a_timeout(executors, shim):
    executor, reactor, recorder, result = killed_once_it_wrote(
        executors, shim, Hooks(epilog="echo epilog signal=$JQ_SIGNAL"),
        "echo started; sleep 1000", b"started\n")
    assert result.signal == signal.SIGKILL and result.epilog_error is None
    assert executor.read(1, 1, 0, 100) == b"started\nepilog signal=9\n"
    result, output = run_to_end(executors, executor, reactor, recorder,
                                executors.spec(2, "sleep 1000", timeout=0.2))
    assert result.timed_out and result.signal == signal.SIGTERM
    assert output == b"epilog signal=15\n"


def test_a_prolog_over_its_timeout_is_killed_whole_and_fails_the_attempt(executors, shim):
    """A prolog that hangs (with a child in the background) is terminated at the hooks'
    timeout: nothing of it is left and the command never ran."""
    hooks = Hooks(prolog="sleep 1000 & sleep 1000", timeout=0.3)
    executor, reactor, recorder = executors.make(shim=shim, hooks=hooks)
    result, _ = run_to_end(executors, executor, reactor, recorder,
                           executors.spec(1, "echo command"))
    assert result.error == "prolog timed out after 0.3s: the command never ran"
    assert result.prolog_failed and not result.timed_out
    assert executors.survivors() == []


def test_a_stop_during_the_prolog_ends_it_and_the_command_never_runs(executors, shim):
    """terminate() while the prolog runs: it is stopped (TERM) and the command is not
    started; a forwarded signal, the command's, does not reach the prolog."""
    hooks = Hooks(prolog="trap 'echo prolog got USR1' USR1; echo prolog; "
                         "while :; do sleep 0.05; done")
    executor, reactor, recorder = executors.make(shim=shim, hooks=hooks)
    executor.launch(executors.spec(1, "echo command"))
    reactor.run_until(lambda: executor.read(1, 1, 0, 100) == b"prolog\n", 10, "the prolog")
    assert executor.info(1, 1).pid is None  # the command has not started
    assert executor.signal(1, 1, signal.SIGUSR1)[0]
    time.sleep(0.3)
    executor.terminate(1, 1)
    result = wait_ended(executor, reactor, recorder, 1)
    assert result.error == "stopped by request during the prolog: the command never ran"
    assert result.prolog_failed
    assert executor.read(1, 1, 0, 100) == b"prolog\n"
    assert recorder.of("started", 1, 1) == []


def test_a_prolog_that_cannot_start_fails_the_attempt_as_the_command_would(executors, shim,
                                                                           tmp_path):
    """A missing directory stops the prolog as it would the command: the attempt's error,
    not a prolog failure (no retry helps); nothing ran, so no epilog either."""
    hooks = Hooks(prolog="true", epilog="echo epilog >> %s" % (tmp_path / "epilog"))
    executor, reactor, recorder = executors.make(shim=shim, hooks=hooks)
    result, _ = run_to_end(executors, executor, reactor, recorder,
                           executors.spec(1, "true", dir=str(tmp_path / "missing")))
    assert result.error.startswith("cannot change to directory %s" % (tmp_path / "missing"))
    assert not result.prolog_failed
    assert not (tmp_path / "epilog").exists()


def test_a_stop_during_the_epilog_does_not_cut_it_short(executors, shim):
    executor, _, _, result = killed_once_it_wrote(
        executors, shim, Hooks(epilog="echo epilog; sleep 0.5; echo cleaned"), "true",
        b"epilog\n")
    assert (result.exit_status, result.epilog_error) == (0, None)
    assert executor.read(1, 1, 0, 100) == b"epilog\ncleaned\n"


@pytest.mark.parametrize("contained", ["cgroup", "pgroup"])
def test_a_shim_killed_during_the_prolog_leaves_nothing_of_it(executors, shim, contained):
    """The prolog's group is in hook-pid: whoever finds the shim dead kills it."""
    hooks = Hooks(prolog="sleep 1000 & sleep 1000")
    executor, reactor, recorder = executors.make(shim=shim, use_cgroup=contained == "cgroup",
                                                 hooks=hooks)
    executor.launch(executors.spec(1, "echo command"))
    path = attemptdir.attempt_path(executor.state_dir, 1, 1)
    reactor.run_until(lambda: len(executors.survivors()) >= 3, 10, "the prolog")
    assert attemptdir.read_pid(path) is None and attemptdir.read_pid(path, "hook-pid")
    kill_shim_and_find_nothing_left(executors, executor, reactor, recorder)


def test_hooks_changed_apply_to_the_next_attempts(executors):
    executor, reactor, recorder = executors.make()
    _, output = run_to_end(executors, executor, reactor, recorder, executors.spec(1, "true"))
    assert output == b""
    executor.set_hooks(Hooks(prolog="echo prolog"))
    _, output = run_to_end(executors, executor, reactor, recorder, executors.spec(2, "true"))
    assert output == b"prolog\n"
    spec = serializer.loads(open(os.path.join(
        attemptdir.attempt_path(executor.state_dir, 2, 1), "spec.json"), "rb").read())
    assert spec["job"] == 2
