"""The executor with real processes: outcomes, containment, signals, output, refusals.

The main behaviours run with both shims (C and Python fallback); the kill-tree tests
also run with both containments (cgroup v2 leaf and the process-group fallback).
"""

import contextlib
import errno
import os
import pwd
import queue
import shlex
import shutil
import signal
import sys
import threading
import time

import attrs
import pytest
from conftest import attempt_names
from daemon_helpers import holding
from exec_helpers import SHIMS, Executors, run_to_end, wait_ended
from twisted.internet import defer

from jqueue import errors, serializer
from jqueue.exec import attemptdir, containment, resources
from jqueue.exec import executor as executor_module

#: sh, a background sleep, a setsid'd sleep whose parent exits (re-parented to the shim),
#: a setsid'd sleep whose parent waits for it (escapes the group while its parent lives).
TREE = ("sleep 1000 & (setsid sleep 1000 &); (setsid sleep 1000 & wait) & "
        "sleep 1000")
TREE_SIZE = 6  # sh, sleep, setsid sleep, subshell, its setsid sleep, the last sleep


@pytest.fixture
def executors(tmp_path):
    made = Executors(tmp_path)
    yield made
    assert made.close() == [], "processes of a test job survived it"


@pytest.fixture(params=SHIMS)
def shim(request):
    return request.param


@pytest.fixture(params=["cgroup", "pgroup"])
def contained(request):
    return request.param


def make(executors, shim="c", contained="cgroup", **kwargs):
    executor, reactor, recorder = executors.make(
        shim=shim, use_cgroup=contained == "cgroup", **kwargs)
    if contained == "cgroup":
        assert executor.containment.startswith("cgroup "), executor.containment
    return executor, reactor, recorder


def test_exit_status_output_and_events_in_order(executors, shim):
    """stdout and stderr land in the output as written; events: started, output, ended."""
    executor, reactor, recorder = make(executors, shim)
    spec = executors.spec(1, "echo out; echo err >&2; exit 3")
    result, output = run_to_end(executors, executor, reactor, recorder, spec)
    assert (result.exit_status, result.signal, result.timed_out, result.error) == (
        3, None, False, None)
    assert output == b"out\nerr\n"
    kinds = [e[0] for e in recorder.events]
    assert kinds[0] == "started" and kinds[-1] == "ended"
    assert recorder.of("started")[0][1].pid > 0
    sizes = [e[3] for e in recorder.of("output", 1, 1)]
    assert sizes == sorted(sizes) and sizes[-1] == len(output)
    assert recorder.of("ended")[0][4] == len(output)  # the output's final size
    assert abs(result.ended - time.time()) < 30


@contextlib.contextmanager
def own_oom_score_adj(value):
    """This process's oom_score_adj set to value for the block (raising it needs no
    privilege, lowering it below 0 needs CAP_SYS_RESOURCE)."""
    path = executor_module.OOM_SCORE_ADJ
    with open(path, "rb") as stream:
        before = stream.read()
    with open(path, "wb") as stream:
        stream.write(b"%d" % value)
    try:
        yield
    finally:
        with open(path, "wb") as stream:
            stream.write(before)


def test_commands_start_at_oom_score_adj_0_whatever_the_daemons(executors, shim):
    """A daemon's standing with the OOM killer (the unit files' OOMScoreAdjust=-500; here
    300, as lowering needs a privilege) is not its commands': they start at 0, and the
    shim, which must outlive its command, keeps the daemon's."""
    with own_oom_score_adj(300):
        executor, reactor, recorder = make(executors, shim)
        spec = executors.spec(1, "cat /proc/self/oom_score_adj /proc/$PPID/oom_score_adj")
        result, output = run_to_end(executors, executor, reactor, recorder, spec)
    assert result.exit_status == 0, output
    assert output.split() == [b"0", b"300"]


def test_an_end_or_output_that_cannot_be_read_at_once_is_read_again(executors, monkeypatch,
                                                                     caplog):
    """With no descriptor left (EMFILE), neither the output polls nor the end of an attempt
    are lost: each is tried again a second later. The end used to be read once only, when
    the shim's pidfd said so: the attempt then stayed running for ever."""
    executor, reactor, recorder = make(executors)
    failing = {"output_size": 3, "read_result": 2}

    def flaky(name):
        real = getattr(executor_module.attemptdir, name)

        def read(*args):
            if recorder.of("started") and failing[name]:
                failing[name] -= 1
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return real(*args)
        return read
    for name in failing:
        monkeypatch.setattr(executor_module.attemptdir, name, flaky(name))
    spec = executors.spec(1, "echo out; sleep 0.3; echo more")
    with caplog.at_level("WARNING", logger="jqueue.exec.executor"):
        result, output = run_to_end(executors, executor, reactor, recorder, spec)
    assert result.exit_status == 0 and output == b"out\nmore\n"
    assert failing == {"output_size": 0, "read_result": 0}
    assert recorder.of("ended")[0][4] == len(output)
    messages = [r.getMessage() for r in caplog.records]
    assert any("its end cannot be read yet" in m for m in messages), messages


def test_argv_runs_without_a_shell(executors, shim):
    """A list command is exec'd as it is: no word splitting, no shell."""
    executor, reactor, recorder = make(executors, shim)
    spec = executors.spec(1, ["printf", "%s|", "a b", "$HOME"])
    result, output = run_to_end(executors, executor, reactor, recorder, spec)
    assert result.exit_status == 0 and output == b"a b|$HOME|"


def test_a_command_killed_by_a_signal_records_the_signal(executors, shim):
    """``kill -TERM $$`` ends the attempt with signal 15 and no exit status."""
    executor, reactor, recorder = make(executors, shim)
    result, _ = run_to_end(executors, executor, reactor, recorder,
                           executors.spec(1, "kill -TERM $$"))
    assert (result.exit_status, result.signal, result.error) == (None, 15, None)


def test_a_sigkill_while_the_oom_killer_struck_names_it(executors, tmp_path, monkeypatch):
    """A command ended by a SIGKILL its node did not send while /proc/vmstat's oom_kill
    grew (here a file standing for it, grown by the command) says how many the OOM killer
    killed; one ended so while it did not grow, or by another signal, says nothing."""
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("pgfault 10\noom_kill 4\nunevictable 0\n")
    monkeypatch.setattr(resources, "VMSTAT", str(vmstat))
    assert resources.oom_kills() == 4
    executor, reactor, recorder = make(executors)
    grown = "printf 'pgfault 10\\noom_kill 6\\n' > %s; kill -KILL $$" % vmstat
    result, _ = run_to_end(executors, executor, reactor, recorder,
                           executors.spec(1, grown))
    assert (result.signal, result.oom_kills) == (9, 2)
    for job, command in ((2, "kill -KILL $$"), (3, "printf 'oom_kill 9\\n' > %s; kill -TERM $$"
                                                % vmstat)):
        result, _ = run_to_end(executors, executor, reactor, recorder,
                               executors.spec(job, command))
        assert result.oom_kills is None, command


def test_a_missing_program_exits_127_with_a_message(executors, shim, tmp_path):
    """As in sh: exit status 127 (126 for a file that is no program) and the reason in
    the output; it is no node error, and the result names it (exec_error), which a
    command exiting 127 of its own accord has not."""
    executor, reactor, recorder = make(executors, shim)
    result, output = run_to_end(executors, executor, reactor, recorder,
                                executors.spec(1, ["no-such-program-jq"]))
    assert (result.exit_status, result.error) == (127, None)
    assert output == (b"jq-shim: cannot execute no-such-program-jq: "
                      b"No such file or directory\n")
    assert result.exec_error == "cannot execute no-such-program-jq: No such file or directory"
    data = tmp_path / "data.txt"
    data.write_text("not a program\n")
    result, _ = run_to_end(executors, executor, reactor, recorder,
                           executors.spec(2, [str(data)]))
    assert (result.exit_status, result.exec_error) == (
        126, "cannot execute %s: Permission denied" % data)
    result, _ = run_to_end(executors, executor, reactor, recorder,
                           executors.spec(3, "exit 127"))
    assert (result.exit_status, result.exec_error) == (127, None)


def test_a_shim_removed_from_the_state_directory_is_built_again(executors, caplog):
    """The compiled shim deleted under a running executor (a cleanup of its state
    directory): the next launch builds it again and runs, instead of every attempt failing
    INTERR until a restart."""
    executor, reactor, recorder = make(executors)
    shim_path = executor.shim.split("(", 1)[1].rstrip(")")  # "C shim (PATH)"
    shutil.rmtree(os.path.dirname(shim_path))
    result, output = run_to_end(executors, executor, reactor, recorder,
                                executors.spec(1, "echo still here"))
    assert (result.exit_status, result.error, output) == (0, None, b"still here\n")
    assert os.path.exists(shim_path) and "is gone: building it again" in caplog.text


@pytest.mark.parametrize("removed", ["attempts", "all"])
def test_an_attempts_directory_removed_is_made_again_by_the_next_launch(executors, caplog,
                                                                         removed):
    """The attempts' directory, or the executor's whole directory (a services'
    directory), removed while no attempt runs (a cleanup): the next launch makes what it
    needs again and runs, instead of every attempt failing INTERR until a restart."""
    state_dir = executors.state_dir("state/services")
    executor, reactor, recorder = make(executors, state_dir=state_dir)
    run_to_end(executors, executor, reactor, recorder, executors.spec(1, "true"))
    shutil.rmtree(attemptdir.attempts_dir(state_dir) if removed == "attempts" else state_dir)
    result, output = run_to_end(executors, executor, reactor, recorder,
                                executors.spec(2, "echo still here"))
    assert (result.exit_status, result.error, output) == (0, None, b"still here\n")
    assert "attempts' directory" in caplog.text and "is gone: making it again" in caplog.text


def test_a_missing_directory_is_an_error_and_the_command_never_runs(
        executors, shim, tmp_path):
    """The attempt ends with error set, no status, no "started"; the marker is absent."""
    executor, reactor, recorder = make(executors, shim)
    marker = tmp_path / "ran"
    spec = executors.spec(1, "touch %s" % marker, dir="/nonexistent/jq-dir")
    result, output = run_to_end(executors, executor, reactor, recorder, spec)
    assert result.error == ("cannot change to directory /nonexistent/jq-dir: "
                            "No such file or directory")
    assert (result.exit_status, result.signal) == (None, None)
    assert not marker.exists() and output == b""
    assert recorder.of("started") == []


def test_run_as_an_allowed_user(executors, shim):
    """The command runs as run_as (id -un prints it) when allowed_users lists it."""
    executor, reactor, recorder = make(executors, shim, allowed_users=("nobody",))
    result, output = run_to_end(executors, executor, reactor, recorder,
                                executors.spec(1, "id -un", run_as="nobody"))
    assert result.exit_status == 0 and output == b"nobody\n"


def test_run_as_takes_the_groups_the_daemon_looks_up(executors, shim, monkeypatch):
    """The command gets the supplementary groups the daemon's C library gives for the user
    (NSS included), not a lookup of the shim's own (a musl shim reads only /etc/group)."""
    nobody = pwd.getpwnam("nobody")
    looked_up = []

    def getgrouplist(name, gid):
        looked_up.append((name, gid))
        return [gid, 4]  # "adm": no /etc/group makes nobody a member

    monkeypatch.setattr(os, "getgrouplist", getgrouplist)
    executor, reactor, recorder = make(executors, shim, allowed_users=("nobody",))
    result, output = run_to_end(executors, executor, reactor, recorder,
                                executors.spec(1, "id -G", run_as="nobody"))
    assert looked_up == [("nobody", nobody.pw_gid)]
    assert result.exit_status == 0 and output == b"%d 4\n" % nobody.pw_gid


def test_launch_soon_looks_a_user_up_in_a_pool_thread(executors, monkeypatch):
    """launch_soon: the daemon's own user starts at once; another user's passwd entry and
    groups are looked up in the reactor's pool (a real thread here), not in the event
    loop, and the attempt starts in the reactor's thread once the answer is back; a
    refused user fails the Deferred and leaves nothing."""
    executor, reactor, recorder = make(executors, allowed_users=("nobody", "no-such-user-jq"))
    lookups, back = [], queue.Queue()
    real_getpwnam, real_getgrouplist = pwd.getpwnam, os.getgrouplist

    def getpwnam(name):
        lookups.append(("pwd", threading.current_thread()))
        return real_getpwnam(name)

    def getgrouplist(name, gid):
        lookups.append(("groups", threading.current_thread()))
        return real_getgrouplist(name, gid)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(os, "getgrouplist", getgrouplist)
    monkeypatch.setattr(reactor, "callInThread",
                        lambda fn, *args: threading.Thread(target=fn, args=args).start())
    monkeypatch.setattr(reactor, "callFromThread", lambda fn, *args: back.put((fn, args)))
    own = executor.launch_soon(executors.spec(1, "true"))
    assert own.job == 1 and lookups == []
    pending = executor.launch_soon(executors.spec(2, "id -un", run_as="nobody"))
    refused = executor.launch_soon(executors.spec(3, "true", run_as="no-such-user-jq"))
    assert isinstance(pending, defer.Deferred) and isinstance(refused, defer.Deferred)
    for _ in range(2):
        fn, args = back.get(timeout=10)
        fn(*args)  # in this (the reactor's) thread, as callFromThread would
    assert {kind for kind, _ in lookups} == {"pwd", "groups"}
    assert all(thread is not threading.main_thread() for _, thread in lookups)
    infos, failures = [], []
    pending.addCallback(infos.append)
    refused.addErrback(failures.append)
    assert [info.job for info in infos] == [2]
    assert "user no-such-user-jq does not exist" in str(failures[0].value)
    assert sorted(i.job for i in executor.attempts()) == [1, 2]
    result = wait_ended(executor, reactor, recorder, 2, 1)
    assert result.exit_status == 0 and executor.read(2, 1, 0, 100) == b"nobody\n"
    wait_ended(executor, reactor, recorder, 1, 1)


def test_lookups_of_one_user_share_one_thread_and_give_up_after_a_while(executors,
                                                                      monkeypatch):
    """A directory server that does not answer: launches of attempts running as its user
    wait for the one lookup in flight (one thread, not one each) and fail, after
    USER_LOOKUP_TIMEOUT, with CommandResourceError (the master starts them again later);
    the answer coming late starts nothing, and the next launch asks again."""
    executor, reactor, recorder = make(executors, allowed_users=("nobody",))
    threads = []
    monkeypatch.setattr(reactor, "callInThread", lambda fn, *args: threads.append(fn))
    waiting = [executor.launch_soon(executors.spec(job, "true", run_as="nobody"))
               for job in (1, 2)]
    assert len(threads) == 1
    failures = []
    for found in waiting:
        found.addErrback(failures.append)
    reactor.advance(executor_module.USER_LOOKUP_TIMEOUT)
    assert [type(f.value) for f in failures] == [errors.CommandResourceError] * 2
    assert "job 2 attempt 1: the lookup of user nobody (NSS) has not answered within " \
        "30s" in str(failures[1].value)
    threads.pop()()  # the answer, late
    assert executor.attempts() == []
    late = executor.launch_soon(executors.spec(3, "true", run_as="nobody"))
    assert len(threads) == 1
    threads.pop()()
    started = []
    late.addCallback(started.append)
    assert [info.job for info in started] == [3]
    wait_ended(executor, reactor, recorder, 3, 1)


def test_run_as_refused_unless_allowed_and_known(executors):
    """A user not allowed, or unknown, is refused at launch and nothing is created."""
    executor, reactor, recorder = make(executors, allowed_users=("no-such-user-jq",))
    with pytest.raises(errors.CommandError, match="user nobody may not run commands"):
        executor.launch(executors.spec(1, "true", run_as="nobody"))
    with pytest.raises(errors.CommandError, match="user no-such-user-jq does not exist"):
        executor.launch(executors.spec(2, "true", run_as="no-such-user-jq"))
    assert executor.attempts() == []
    assert os.listdir(attemptdir.attempts_dir(executor.state_dir)) == []
    own = pwd.getpwuid(os.geteuid()).pw_name
    result, output = run_to_end(executors, executor, reactor, recorder,
                                executors.spec(3, "id -un", run_as=own))
    assert output == own.encode() + b"\n"


@pytest.mark.parametrize("field, value, message", [
    ("dir", "relative/dir", "absolute path"),
    ("argv", [], "command is empty"),
    ("env", {"A=B": "1"}, "bad environment variable"),
    ("env_base", "daemon", "env_base must be null, minimal or inherit"),
    ("timeout", -1, "timeout must be a finite number >= 0"),
    ("kill_grace", float("inf"), "kill_grace must be a finite number >= 0"),
    ("memory_max", -1, "memory_max must be bytes"),
    ("memory_max", "1G", "memory_max must be bytes"),
])
def test_launch_refuses_malformed_specs(executors, field, value, message):
    """A relative dir, an empty argv, a bad variable or timeout: CommandError."""
    executor, _, _ = make(executors)
    spec = attrs.evolve(executors.spec(1, "true"), **{field: value})
    with pytest.raises(errors.CommandError, match=message):
        executor.launch(spec)
    assert executor.attempts() == []


def test_a_launch_without_room_for_its_result_is_a_resource_error(executors, monkeypatch):
    """The result's room is kept before the command may start: a full disk there refuses
    the launch as CommandResourceError (the master tries again later), any other failure
    as a CommandError; nothing is left either way. The room is what the result is written
    over (test_a_command_that_fills_the_attempts_disk_has_its_true_end_recorded)."""
    executor, reactor, recorder = make(executors)
    room = []

    def full(path):
        raise OSError(room.pop(0), os.strerror(errno.ENOSPC))

    monkeypatch.setattr(attemptdir, "reserve_result", full)
    room.append(errno.ENOSPC)
    with pytest.raises(errors.CommandResourceError, match="no room for its result: No sp"):
        executor.launch(executors.spec(1, "true"))
    room.append(errno.EACCES)
    with pytest.raises(errors.CommandError) as refused:
        executor.launch(executors.spec(1, "true"))
    assert not isinstance(refused.value, errors.CommandResourceError)
    assert executor.attempts() == []
    assert attempt_names(attemptdir.attempts_dir(executor.state_dir)) == []
    monkeypatch.undo()
    result, _ = run_to_end(executors, executor, reactor, recorder, executors.spec(1, "true"))
    assert result.exit_status == 0
    with open(os.path.join(executor.run_dir, "attempts", "1.1", "result"), "rb") as stream:
        assert stream.read().endswith(b"}\n")  # the room cut to the result's length


def test_a_launch_on_a_full_disk_waits_even_into_a_spare(executors, monkeypatch):
    """A spare keeps its files' blocks, so a launch into it would need no new block: on a
    disk with less than a result's room free it is refused all the same, as a resource
    error (NOXFER: the master tries again later), the spare kept for the next one. A
    filesystem that reports no size at all (an unlimited tmpfs) refuses nothing."""
    executor, reactor, recorder = make(executors)
    run_to_end(executors, executor, reactor, recorder, executors.spec(1, "true"))
    executor.forget(1, 1)
    attempts = attemptdir.attempts_dir(executor.state_dir)
    assert os.listdir(attempts) == [".spare-1.1"]
    real = os.statvfs(attempts)
    sizes = [real.f_blocks, attemptdir.RESULT_ROOM // real.f_frsize - 1]  # blocks, free

    def statvfs(path):
        return os.statvfs_result(real[:2] + (sizes[0],) + real[3:4] + (sizes[1],) + real[5:])

    monkeypatch.setattr(os, "statvfs", statvfs)
    with pytest.raises(errors.CommandResourceError, match="2.1: No space left on device"):
        executor.launch(executors.spec(2, "true"))
    assert os.listdir(attempts) == [".spare-1.1"] and executor.attempts() == []
    sizes[1] += 1
    result, _ = run_to_end(executors, executor, reactor, recorder, executors.spec(2, "true"))
    assert result.exit_status == 0 and os.listdir(attempts) == ["2.1"]
    sizes[:] = [0, 0]  # no size reported
    result, _ = run_to_end(executors, executor, reactor, recorder, executors.spec(3, "true"))
    assert result.exit_status == 0


def test_launch_is_idempotent(executors, shim):
    """Launching the same job and attempt again returns it; the command runs once."""
    executor, reactor, recorder = make(executors, shim)
    spec = executors.spec(4, "echo once; sleep 0.3", attempt=2)
    first = executor.launch(spec)
    again = executor.launch(spec)
    assert (again.job, again.attempt, again.started) == (first.job, first.attempt,
                                                          first.started)
    wait_ended(executor, reactor, recorder, 4, 2)
    assert executor.launch(spec).result is not None
    assert executor.read(4, 2, 0, 100) == b"once\n"
    assert len(recorder.of("ended")) == 1


def wait_tree(executors, reactor, count=TREE_SIZE):
    reactor.run_until(lambda: len(executors.survivors()) >= count, 10, "the job's tree")


def test_kill_leaves_no_process_of_the_job(executors, shim, contained):
    """kill: SIGKILL to the group, the cgroup and re-parented orphans; none survives."""
    executor, reactor, recorder = make(executors, shim, contained)
    executor.launch(executors.spec(1, TREE))
    wait_tree(executors, reactor)
    ok, message = executor.kill(1, 1)
    assert ok and message == "killing job 1 attempt 1"
    result = wait_ended(executor, reactor, recorder, 1)
    assert executors.survivors() == []  # "ended" means no process of the job is left
    assert (result.signal, result.timed_out, result.error) == (signal.SIGKILL, False, None)


def test_timeout_leaves_no_process_of_the_job(executors, shim, contained):
    """timeout: SIGTERM to everything, SIGKILL after the grace; timed_out; none survives."""
    executor, reactor, recorder = make(executors, shim, contained)
    started = time.monotonic()
    executor.launch(executors.spec(1, TREE, timeout=0.5, kill_grace=0.3))
    result = wait_ended(executor, reactor, recorder, 1)
    assert executors.survivors() == []
    assert result.timed_out and result.signal == signal.SIGTERM
    assert time.monotonic() - started >= 0.5


MiB = 1 << 20


def test_a_job_whose_processes_together_go_over_its_memory_max_is_killed_whole(
        executors, shim, contained):
    """Two processes holding 40 MiB each, under a limit of 64 MiB alone but not together:
    the shim kills every process of the job (SIGKILL, the sleeper too) and says why."""
    executor, reactor, recorder = make(executors, shim, contained)
    hold = shlex.join(holding(40))
    executor.launch(executors.spec(1, "%s & %s & sleep 1000" % (hold, hold),
                                   memory_max=64 * MiB))
    result = wait_ended(executor, reactor, recorder, 1)
    assert executors.survivors() == []
    assert result.memory_exceeded and not result.timed_out
    assert result.signal == signal.SIGKILL
    assert result.max_rss > 64 * MiB
    assert result.cpu_time > 0
    assert executor.info(1, 1).result == result


def test_a_job_under_its_memory_max_runs_to_its_end_and_reports_its_use(executors, shim):
    """Under its limit a job ends as it would without one; the result says its peak memory
    (at least the 40 MiB it held) and its CPU time (the second it spent busy)."""
    executor, reactor, recorder = make(executors, shim)
    busy = "import time; end = time.process_time() + 1\nwhile time.process_time() < end: pass"
    script = "%s & pid=$!; %s; kill $pid" % (shlex.join(holding(40, 2)),
                                             shlex.join([sys.executable, "-c", busy]))
    result, output = run_to_end(executors, executor, reactor, recorder,
                                executors.spec(1, script, memory_max=256 * MiB))
    assert (result.exit_status, result.memory_exceeded) == (0, False), output
    assert 40 * MiB <= result.max_rss < 256 * MiB
    assert 1.0 <= result.cpu_time < 10


def test_a_running_attempt_says_what_its_processes_hold_now(executors, shim, monkeypatch):
    """A "usage" event once the attempt has run for USAGE_FIRST, with the resident sets of
    all its processes (here a sleeping shell and a child holding 40 MiB); none for a job
    that ends before."""
    monkeypatch.setattr(executor_module, "USAGE_FIRST", 0.3)
    executor, reactor, recorder = make(executors, shim)
    executor.launch(executors.spec(1, "%s & sleep 1000" % shlex.join(holding(40))))
    reactor.run_until(lambda: [e for e in recorder.of("usage", 1, 1) if e[3] >= 40 * MiB],
                      10, "a usage event")
    executor.kill(1, 1)
    wait_ended(executor, reactor, recorder, 1)
    run_to_end(executors, executor, reactor, recorder, executors.spec(2, "true"))
    assert recorder.of("usage", 2, 1) == []


TRAP = "trap '' TERM; echo ready; while :; do sleep 0.1; done"


def test_terminate_kills_a_job_ignoring_sigterm_after_the_grace(executors, shim):
    """terminate: the job ignores SIGTERM, so SIGKILL ends it once the grace is over."""
    executor, reactor, recorder = make(executors, shim)
    executor.launch(executors.spec(1, TRAP, kill_grace=0.4))
    reactor.run_until(lambda: executor.read(1, 1, 0, 10) == b"ready\n", 10, "ready")
    asked = time.monotonic()
    ok, message = executor.terminate(1, 1)
    assert ok and "SIGKILL after 0.4 s" in message
    result = wait_ended(executor, reactor, recorder, 1)
    assert time.monotonic() - asked >= 0.4
    assert (result.signal, result.timed_out) == (signal.SIGKILL, False)
    assert executors.survivors() == []


def test_timeout_kills_a_job_ignoring_sigterm_after_the_grace(executors, shim):
    """The timeout escalates the same way and records timed_out."""
    executor, reactor, recorder = make(executors, shim)
    started = time.monotonic()
    executor.launch(executors.spec(1, TRAP, timeout=0.3, kill_grace=0.3))
    result = wait_ended(executor, reactor, recorder, 1)
    assert time.monotonic() - started >= 0.6
    assert (result.signal, result.timed_out) == (signal.SIGKILL, True)


@pytest.mark.parametrize("name", ["USR1", "HUP", "SYS"])
def test_signal_reaches_the_job(executors, shim, name):
    """signal(n) delivers n to the job's processes; the job's handler runs. HUP and SYS
    are the ends of the range the shim is asked through (RT_BASE + n - 1: 34 and 64;
    musl reserves 34 for itself)."""
    executor, reactor, recorder = make(executors, shim)
    executor.launch(executors.spec(1, "trap 'echo got %s; exit 3' %s; echo ready; "
                                      "while :; do sleep 0.05; done" % (name, name)))
    reactor.run_until(lambda: executor.read(1, 1, 0, 10) == b"ready\n", 10, "ready")
    signum = signal.Signals["SIG" + name]
    assert executor.signal(1, 1, signum) == (True, "SIG%s sent to job 1 attempt 1" % name)
    result = wait_ended(executor, reactor, recorder, 1)
    assert result.exit_status == 3
    output = executor.read(1, 1, 0, 1000)  # the sleep got it too; sh may say so
    assert output.startswith(b"ready\n") and output.endswith(b"got %s\n" % name.encode())


COUNTER = (
    "import os, signal, sys, time\n"
    "count = []\n"
    "signal.signal(signal.SIGUSR1, lambda *a: count.append(1))\n"
    "child = os.fork()\n"
    "if child == 0:\n"
    "    os.setsid()\n"  # its own group: the cgroup or the shim's walk reaches it
    "    signal.signal(signal.SIGUSR1, lambda *a: count.append(1))\n"
    "    print('ready', flush=True)\n"
    "    time.sleep(1.5)\n"
    "    print('child got', len(count), flush=True)\n"
    "    os._exit(0)\n"
    "time.sleep(1.5)\n"
    "os.waitpid(child, 0)\n"
    "print('main got', len(count), flush=True)\n")


@pytest.mark.parametrize("contained", ["cgroup", "pgroup"])
def test_a_signal_reaches_each_process_of_the_job_once(executors, shim, contained):
    """A user's signal is delivered once per process, whatever reaches it (group, cgroup,
    the shim's walk over its descendants): a handler counting it counts one, in a child
    that left the command's group (setsid) while its parent lives, too."""
    executor, reactor, recorder = make(executors, shim, contained)
    executor.launch(executors.spec(1, [sys.executable, "-c", COUNTER]))
    reactor.run_until(lambda: b"ready" in executor.read(1, 1, 0, 100), 10, "ready")
    assert executor.signal(1, 1, signal.SIGUSR1)[0]
    result = wait_ended(executor, reactor, recorder, 1)
    output = executor.read(1, 1, 0, 1000)
    assert result.exit_status == 0, output
    assert b"main got 1\n" in output and b"child got 1\n" in output, output


def test_control_of_an_unknown_or_ended_attempt_says_not_running(executors):
    """signal, terminate and kill answer (False, "... is not running")."""
    executor, reactor, recorder = make(executors)
    expected = (False, "job 5 attempt 1 is not running")
    assert executor.signal(5, 1, 15) == expected
    assert executor.terminate(5, 1) == expected
    assert executor.kill(5, 1) == expected
    run_to_end(executors, executor, reactor, recorder, executors.spec(5, "true"))
    assert executor.kill(5, 1) == expected
    assert executor.terminate(5, 1) == expected


def test_signals_outside_1_to_31_are_refused(executors):
    """Signal 0 or a real-time signal cannot be forwarded; the job keeps running."""
    executor, reactor, recorder = make(executors)
    executor.launch(executors.spec(1, "sleep 1000"))
    for signum in (0, 32, 40, -1):
        ok, message = executor.signal(1, 1, signum)
        assert not ok and "cannot be sent" in message
    assert executor.info(1, 1).result is None


def test_read_at_offsets(executors):
    """read gives the bytes from an offset, up to max_bytes; b"" past the end."""
    executor, reactor, recorder = make(executors)
    run_to_end(executors, executor, reactor, recorder, executors.spec(1, "printf 0123456789"))
    assert executor.read(1, 1, 0, 4) == b"0123"
    assert executor.read(1, 1, 4, 100) == b"456789"
    assert executor.read(1, 1, 10, 5) == b""
    with pytest.raises(errors.CommandError, match="job 9 attempt 1 is not known"):
        executor.read(9, 1, 0, 1)
    with pytest.raises(errors.ParameterError):
        executor.read(1, 1, -1, 1)


def test_output_is_polled_fast_when_it_grows_and_slowly_when_quiet(executors):
    """With a fake clock: growth is seen within 50 ms; a quiet attempt backs off to 1 s."""
    executor, reactor, recorder = make(executors)
    executor.launch(executors.spec(1, "sleep 1000"))
    output = os.path.join(attemptdir.attempt_path(executor.state_dir, 1, 1), "output")
    reactor.run_until(lambda: recorder.of("started"), 10, "the start")

    def append(data):
        with open(output, "ab") as f:
            f.write(data)

    def step_until_event(limit):
        """Advance the fake clock in 10 ms steps until an output event; the time taken."""
        before, waited = len(recorder.of("output")), 0.0
        while len(recorder.of("output")) == before:
            assert waited <= limit, "no output event within %s s" % limit
            reactor.advance(0.01)
            waited += 0.01
        return waited

    append(b"a")
    assert step_until_event(1.0) <= 1.0
    append(b"b")
    assert step_until_event(0.06) <= 0.06  # it grew recently: fast polling
    reactor.advance(30)  # quiet: the interval doubles up to 1 s
    for _ in range(10):
        reactor.advance(1.0)
    append(b"c")
    assert 0.1 < step_until_event(1.05) <= 1.05
    assert recorder.of("output")[-1][3] == 3


def test_output_is_reported_only_after_the_start(executors):
    """Output written before the shim reported the pid: "started" still comes first."""
    executor, reactor, recorder = make(executors)
    executor.launch(executors.spec(1, "echo early; sleep 1000"))
    path = attemptdir.attempt_path(executor.state_dir, 1, 1)
    deadline = time.monotonic() + 10
    output = attemptdir.output_in(path)
    while attemptdir.output_size(output) == 0 or attemptdir.read_pid(path) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.rename(os.path.join(path, "pid"), os.path.join(path, "pid.hidden"))
    reactor.advance(3)  # several polls: the output is there, the pid is not (yet)
    assert recorder.events == []
    os.rename(os.path.join(path, "pid.hidden"), os.path.join(path, "pid"))
    reactor.advance(1)
    assert [e[0] for e in recorder.events] == ["started", "output"]


def test_forget_removes_only_ended_attempts(executors):
    """forget refuses a running attempt, removes an ended one, ignores an unknown one."""
    executor, reactor, recorder = make(executors)
    executor.launch(executors.spec(1, "sleep 1000"))
    with pytest.raises(errors.CommandError, match="still running"):
        executor.forget(1, 1)
    executor.kill(1, 1)
    wait_ended(executor, reactor, recorder, 1)
    path = attemptdir.attempt_path(executor.state_dir, 1, 1)
    assert os.path.isdir(path)
    executor.forget(1, 1)
    executor.forget(1, 1)
    executor.forget(7, 7)
    assert not os.path.exists(path) and executor.attempts() == []


def test_the_environment_reaches_only_the_command(executors, shim):
    """The command gets exactly its env; spec.json and the shim's environ hold none of it."""
    executor, reactor, recorder = make(executors, shim)
    env = executors.env(SECRET="hunter2")
    executor.launch(executors.spec(1, "env; sleep 1000", env=env))
    reactor.run_until(lambda: executor.read(1, 1, 0, 1000).count(b"\n") >= len(env), 10,
                      "the env")
    printed = dict(line.split("=", 1) for line in
                   executor.read(1, 1, 0, 1000).decode().splitlines())
    printed.pop("PWD", None)
    printed.pop("SHLVL", None)
    assert printed == env
    path = attemptdir.attempt_path(executor.state_dir, 1, 1)
    spec = serializer.loads(open(os.path.join(path, "spec.json"), "rb").read())
    assert b"hunter2" not in open(os.path.join(path, "spec.json"), "rb").read()
    with open("/proc/%d/environ" % spec["shim_pid"], "rb") as f:
        assert f.read() == b""
    assert {"job", "attempt", "argv", "dir", "run_as", "timeout", "kill_grace", "started",
            "deadline", "boot_id", "shim_pid", "shim_start", "cgroup"} <= set(spec)
    assert spec["boot_id"] == attemptdir.boot_id()


def printed_env(executor, job, attempt=1):
    """The variables an ``env`` command printed (without the shell's PWD and SHLVL)."""
    printed = dict(line.split("=", 1) for line in
                   executor.read(job, attempt, 0, 1 << 20).decode().splitlines())
    printed.pop("PWD", None)
    printed.pop("SHLVL", None)
    return printed


def test_the_executor_completes_the_environment_over_its_base(executors):
    """env_base "minimal": PATH, LANG, and HOME and USER of the user that runs the command
    here, under env; "inherit": the executor's environ under env; None: env as it is."""
    environ = {"NODE_DAEMON_ONLY": "yes", "PATH": "/daemon/bin", "HOME": "/daemon"}
    executor, reactor, recorder = make(executors, allowed_users=("nobody",), environ=environ)
    own, nobody = pwd.getpwuid(os.geteuid()), pwd.getpwnam("nobody")
    overrides = {"JQ_JOB_ID": executors.marker, "X": "1", "LANG": "fr_FR.UTF-8"}
    specs = {
        1: executors.spec(1, ["env"], env=overrides, env_base="minimal"),
        2: executors.spec(2, ["env"], env=overrides, env_base="minimal", run_as="nobody"),
        3: executors.spec(3, ["/usr/bin/env"], env=overrides, env_base="inherit"),
        4: executors.spec(4, ["/usr/bin/env"], env=executors.env(X="1")),
    }
    for spec in specs.values():
        result, _ = run_to_end(executors, executor, reactor, recorder, spec)
        assert result.exit_status == 0, (spec.job, result)
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"}
    assert printed_env(executor, 1) == dict(base, HOME=own.pw_dir, USER=own.pw_name,
                                            **overrides)
    assert printed_env(executor, 2) == dict(base, HOME=nobody.pw_dir, USER="nobody",
                                            **overrides)
    assert printed_env(executor, 3) == dict(environ, **overrides)
    assert printed_env(executor, 4) == executors.env(X="1")
    assert executor.environment(specs[3]) == dict(environ, **overrides)


def test_the_inherited_environment_is_the_daemons_by_default(executors, monkeypatch):
    """Without environ, "inherit" starts from os.environ as it was when the executor was
    made; the spec's env still wins."""
    monkeypatch.setenv("JQ_TEST_DAEMON_VAR", "from the daemon")
    executor, _, _ = make(executors, start=False)
    monkeypatch.setenv("JQ_TEST_DAEMON_VAR", "changed later")
    spec = executors.spec(1, "true", env={"X": "1"}, env_base="inherit")
    env = executor.environment(spec)
    assert env["JQ_TEST_DAEMON_VAR"] == "from the daemon" and env["X"] == "1"
    assert env["PATH"] == os.environ["PATH"]


def test_a_large_environment_reaches_the_command(executors, shim):
    """An environment larger than a pipe's buffer still arrives whole."""
    executor, reactor, recorder = make(executors, shim)
    big = {"BIG%d" % i: str(i) * 100_000 for i in range(3)}  # 128 KiB per string at most
    spec = executors.spec(1, 'printf %s "$BIG0$BIG1$BIG2" | wc -c',
                          env=executors.env(**big), timeout=1e9)
    result, output = run_to_end(executors, executor, reactor, recorder, spec)
    assert result.exit_status == 0 and output.strip() == b"300000"


def test_each_attempt_has_its_own_cgroup_leaf_while_it_runs(executors, shim):
    """The command is in the attempt's leaf (the shim is not); the leaf goes at the end."""
    executor, reactor, recorder = make(executors, shim)
    info = executor.launch(executors.spec(3, ["sleep", "1000"], attempt=2))
    assert info.cgroup == os.path.join(executor.containment[len("cgroup "):], "3.2")
    reactor.run_until(lambda: executor.info(3, 2).pid, 10, "the pid")
    pid = executor.info(3, 2).pid
    assert open(os.path.join(info.cgroup, "cgroup.procs")).read().split() == [str(pid)]
    assert executor.info(3, 2).pgid == pid == os.getpgid(pid)
    executor.kill(3, 2)
    wait_ended(executor, reactor, recorder, 3, 2)
    assert not os.path.exists(info.cgroup)


def test_stop_waits_for_the_leaf_of_an_ended_attempt_to_empty(executors, monkeypatch):
    """When a shim dies, the executor kills its leaf; cgroup.kill only sends the signals,
    and a leaf whose last process is still exiting cannot be removed yet (here: removal
    refused until 0.3 s into stop). stop() keeps trying for a while, so that it leaves
    no leaf and no parent cgroup behind."""
    executor, reactor, recorder = make(executors)
    info = executor.launch(executors.spec(1, ["sleep", "1000"]))
    reactor.run_until(lambda: executor.info(1, 1).pid, 10, "the pid")
    real_remove, busy_until = containment.remove_leaf, [float("inf")]

    def remove_leaf(path):
        return time.monotonic() >= busy_until[0] and real_remove(path)
    monkeypatch.setattr(containment, "remove_leaf", remove_leaf)
    spec = serializer.loads(open(os.path.join(
        attemptdir.attempt_path(executor.state_dir, 1, 1), "spec.json"), "rb").read())
    os.kill(spec["shim_pid"], signal.SIGKILL)
    assert wait_ended(executor, reactor, recorder, 1).error == (
        "attempt lost: its supervisor died")
    assert os.path.isdir(info.cgroup)  # still "emptying"
    parent = os.path.dirname(info.cgroup)
    busy_until[0] = time.monotonic() + 0.3
    executor.stop()
    assert not os.path.exists(info.cgroup) and not os.path.exists(parent)


def test_the_fallback_says_why_and_uses_no_cgroup(executors):
    """use_cgroup=False: "process group (...)", and the attempt has no cgroup."""
    executor, reactor, recorder = make(executors, contained="pgroup")
    assert executor.containment == "process group (cgroups disabled by configuration)"
    info = executor.launch(executors.spec(1, "true"))
    assert info.cgroup is None
    wait_ended(executor, reactor, recorder, 1)


def test_attempts_lists_running_and_ended(executors):
    """attempts() has every attempt not forgotten with its argv, dir, pid and result."""
    executor, reactor, recorder = make(executors)
    executor.launch(executors.spec(1, "sleep 1000", dir="/tmp", timeout=100))
    run_to_end(executors, executor, reactor, recorder, executors.spec(2, "exit 4"))
    reactor.run_until(lambda: executor.info(1, 1).pid, 10, "the pid")
    first, second = executor.attempts()
    assert (first.job, first.result, first.dir, first.argv[-1]) == (1, None, "/tmp",
                                                                     "sleep 1000")
    assert first.deadline == pytest.approx(first.started + 100)
    assert (second.job, second.result.exit_status, second.deadline) == (2, 4, None)
