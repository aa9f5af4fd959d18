"""The supervisor's rules on a fake clock and a fake executor: back-off, start limit,
stop and start during back-off, restart policies, and carrying on after a restart."""

import inspect
import os
import shutil
import signal

import pytest
from fakes_exec import FakeExecutor
from twisted.internet.task import Clock

from jqueue import errors, service
from jqueue.exec import supervisor as supervisor_module
from jqueue.exec.executor import Executor
from jqueue.exec.supervisor import Supervisor

BOOT = "boot-1"


def definition(**params):
    params.setdefault("name", "web")
    params.setdefault("command", "serve")
    return service.check_definition(params)


def entry(sid=1, version=1, target=service.TARGET_STARTED, seq=1, run=0, **params):
    data = definition(**params)
    return {"id": sid, "name": data["name"], "version": version, "definition": data,
            "target": target, "seq": seq, "run": run}


class Node:
    """A supervisor on a fake clock and executor, its events recorded."""

    def __init__(self, tmp_path, boot=BOOT, executor=None, clock=None, wall=None):
        self.clock = clock or Clock()
        self.clock.advance(1000)
        self.executor = executor or FakeExecutor(self.clock)
        self.supervisor = Supervisor(str(tmp_path / "services"), self.clock, self.executor,
                                     "node1", boot, clock=wall or self.clock.seconds)
        self.events = []
        self.supervisor.subscribe(self.events.append)
        self.supervisor.start()

    def state(self, sid=1):
        return {s["id"]: s for s in self.supervisor.states()}[sid]

    def states_seen(self, sid=1):
        return [e[1]["state"] for e in self.events if e[0] == "svc" and e[1]["id"] == sid]

    def fail_now(self, status=1):
        job, attempt = self.executor.last()
        self.executor.exec(job, attempt, 100 + attempt)
        self.executor.end(job, attempt, exit_status=status)


@pytest.fixture
def node(tmp_path):
    return Node(tmp_path)


def test_the_fake_executor_has_the_executors_signatures():
    """Every method of FakeExecutor the supervisor uses takes what Executor's takes."""
    for name in ("start", "stop", "subscribe", "launch", "signal", "kill", "terminate",
                 "read", "forget", "attempts", "check_user", "user_soon"):
        real = inspect.signature(getattr(Executor, name))
        fake = inspect.signature(getattr(FakeExecutor, name))
        assert list(real.parameters) == list(fake.parameters), name


def test_a_service_that_exits_at_once_backs_off_1_2_4_8_then_is_fatal(node):
    """Restarts after 1, 2, 4 and 8 s; the 5th failure within 60 s: FATAL, no more runs."""
    node.supervisor.apply([entry()])
    starts = [node.clock.seconds()]
    delays = []
    for failure in range(1, 6):
        node.fail_now()
        if failure == 5:
            break
        assert node.state()["state"] == service.BACKOFF
        retry_at = node.state()["retry_at"]
        delays.append(retry_at - node.clock.seconds())
        node.clock.advance(retry_at - node.clock.seconds() - 0.01)
        assert len(node.executor.launched) == failure  # not yet
        node.clock.advance(0.01)
        assert len(node.executor.launched) == failure + 1
        starts.append(node.clock.seconds())
    assert delays == [1, 2, 4, 8]
    state = node.state()
    assert state["state"] == service.FATAL
    assert "start limit" in state["message"]
    node.clock.advance(3600)
    assert len(node.executor.launched) == 5
    assert node.states_seen().count(service.BACKOFF) == 4
    assert node.states_seen()[-1] == service.FATAL


def test_a_wall_clock_stepped_back_delays_no_restart_and_counts_no_failure_longer(tmp_path):
    """A service whose runs die after 20 s (three failures a minute at most: never FATAL)
    while the wall clock goes back an hour: each restart comes after its delay (a
    timer), and the failures from before the step, now "in the future", no longer count
    for the start limit (they did for an hour: FATAL at the second failure after it)."""
    shift = [0.0]
    clock = Clock()
    node = Node(tmp_path, clock=clock, wall=lambda: clock.seconds() + shift[0])
    node.supervisor.apply([entry()])
    for run in range(1, 13):
        assert len(node.executor.launched) == run
        node.clock.advance(20)
        node.fail_now()
        assert node.state()["state"] == service.BACKOFF, run
        delay = node.state()["retry_at"] - (clock.seconds() + shift[0])
        if run == 3:
            shift[0] = -3600.0
        node.clock.advance(delay)


def test_a_program_that_cannot_be_executed_is_named_in_the_services_message(node):
    """The run of a missing program ends as sh's would, 127, and the message says why."""
    node.supervisor.apply([entry()])
    job, attempt = node.executor.last()
    node.executor.exec(job, attempt, 101)
    node.executor.end(job, attempt, exit_status=127,
                      exec_error="cannot execute serve: No such file or directory")
    state = node.state()
    assert state["state"] == service.BACKOFF and state["exit_status"] == 127
    assert state["message"] == ("run 1 exited with status 127: cannot execute serve: No "
                                "such file or directory; restart in 1s")


def test_a_memory_max_reaches_the_run_and_its_kill_is_a_failure_named_so(node):
    """memory_max ("64M") goes in each run's spec; a run the shim killed over it backs off
    and restarts like any failure, its message saying what it held."""
    node.supervisor.apply([entry(memory_max="64M")])
    assert node.executor.launched[-1].memory_max == 64 << 20
    job, attempt = node.executor.last()
    node.executor.exec(job, attempt, 101)
    node.executor.end(job, attempt, signal=signal.SIGKILL, memory_exceeded=True,
                      max_rss=70 << 20)
    state = node.state()
    assert state["state"] == service.BACKOFF and state["signal"] == signal.SIGKILL
    assert state["message"] == ("run 1 killed by SIGKILL: its processes held 70.0 MiB, over "
                                "its memory_max of 64.0 MiB; restart in 1s")


def test_a_definition_stored_before_memory_max_is_changed_without_it():
    """A definition kept from before the parameter existed has no memory_max: a change
    to it takes the default (no limit) rather than failing, and a run of it has none."""
    stored = definition()
    del stored["memory_max"]
    changed = service.check_definition({"stop_timeout": 3}, base=stored)
    assert (changed["memory_max"], changed["stop_timeout"]) == (0, 3)


def test_start_after_fatal_runs_again_with_a_fresh_count(node):
    """FATAL stays until start; then the back-off starts again at 1 s."""
    node.supervisor.apply([entry()])
    for delay in (1, 2, 4, 8, None):
        node.fail_now()
        if delay:
            node.clock.advance(delay)
    assert node.state()["state"] == service.FATAL
    node.clock.pump([1] * 200)
    assert node.state()["state"] == service.FATAL
    node.supervisor.control(1, "start", 2)
    assert node.state()["state"] == service.STARTING
    node.fail_now()
    assert node.state()["retry_at"] - node.clock.seconds() == 1


def test_stop_during_backoff_cancels_the_restart(node):
    """stop in BACKOFF: STOPPED at once, and the pending restart never happens."""
    node.supervisor.apply([entry()])
    node.fail_now()
    assert node.state()["state"] == service.BACKOFF
    node.supervisor.control(1, "stop", 2)
    assert node.state()["state"] == service.STOPPED
    node.clock.advance(120)
    assert len(node.executor.launched) == 1
    assert node.states_seen()[-1] == service.STOPPED


def test_a_removed_services_directory_gets_every_definition_written_again(node, tmp_path):
    """The services' directory removed while the node runs (a cleanup): the next change
    of a service makes its definitions' directory again with every service's file, so a
    restart still knows them."""
    node.supervisor.apply([entry(1, target=service.TARGET_STOPPED),
                           entry(2, target=service.TARGET_STOPPED, seq=1)])
    shutil.rmtree(tmp_path / "services")
    node.supervisor.control(1, "start", 2)
    defs = tmp_path / "services" / supervisor_module.DEFS
    assert sorted(os.listdir(defs)) == ["1.json", "2.json"]
    again = Node(tmp_path, executor=node.executor, clock=node.clock)
    assert sorted(s["id"] for s in again.supervisor.states()) == [1, 2]


def test_a_file_the_disk_refuses_is_written_again_once_there_is_room(node, tmp_path,
                                                                     monkeypatch, caplog):
    """A service's file that cannot be written (a full disk) is tried again every
    SAVE_RETRY seconds, said once, until it is: then it holds the newest state, which a
    restarted supervisor reads."""
    real = supervisor_module._write_durably
    refused = []

    def full(path, data):
        refused.append(path)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(supervisor_module, "_write_durably", full)
    with caplog.at_level("INFO", logger="jqueue.exec.supervisor"):
        node.supervisor.apply([entry(startsecs=1)])
        node.clock.advance(1)  # RUNNING: saved again, refused again
        node.clock.advance(supervisor_module.SAVE_RETRY)
        assert len(refused) >= 3
        monkeypatch.setattr(supervisor_module, "_write_durably", real)
        node.clock.advance(supervisor_module.SAVE_RETRY)
    errors_logged = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(errors_logged) == 1 and "written again" in caplog.records[-1].getMessage()
    again = Node(tmp_path, executor=node.executor, clock=node.clock)
    assert again.state()["state"] == service.RUNNING and again.state()["run"] == 1


def test_start_during_backoff_starts_at_once_and_only_once(node):
    """start in BACKOFF starts a run now; the back-off timer does not start a second one
    (JobMon's double-restart race)."""
    node.supervisor.apply([entry()])
    node.fail_now()
    node.clock.advance(1)
    node.fail_now()
    assert node.state()["state"] == service.BACKOFF  # waiting 2 s
    node.supervisor.control(1, "start", 2)
    assert node.state()["state"] == service.STARTING
    assert len(node.executor.launched) == 3
    node.clock.advance(30)
    assert len(node.executor.launched) == 3
    assert node.state()["state"] == service.RUNNING


def test_a_run_that_stays_up_becomes_running_after_startsecs(node):
    """STARTING for startsecs, then RUNNING with its pid."""
    node.supervisor.apply([entry(startsecs=5)])
    job, attempt = node.executor.last()
    node.executor.exec(job, attempt, 4321)
    node.clock.advance(4.9)
    assert node.state()["state"] == service.STARTING
    node.clock.advance(0.1)
    state = node.state()
    assert (state["state"], state["pid"], state["run"]) == (service.RUNNING, 4321, 1)
    assert state["message"] == "run 1 (pid 4321) stayed up its startsecs (5s)"


def test_a_service_that_ran_elsewhere_continues_its_run_numbers(node):
    """A service moved here after 3 runs on another node: its first run here is run 4."""
    node.supervisor.apply([entry(run=3)])
    assert node.state()["run"] == 4


def test_a_stable_run_resets_the_backoff(node):
    """After a run that stayed RUNNING 60 s, the next restart waits 1 s again."""
    node.supervisor.apply([entry()])
    node.fail_now()
    node.clock.advance(1)
    node.fail_now()
    node.clock.advance(2)
    node.fail_now()
    assert node.state()["retry_at"] - node.clock.seconds() == 4
    node.clock.pump([1] * 66)
    assert node.state()["state"] == service.RUNNING
    node.fail_now()
    assert node.state()["retry_at"] - node.clock.seconds() == 1


def test_restart_policies(tmp_path):
    """no: EXITED; on-failure: EXITED on 0, BACKOFF otherwise; always: BACKOFF on 0."""
    cases = [("no", 1, service.EXITED), ("on-failure", 0, service.EXITED),
             ("on-failure", 3, service.BACKOFF), ("always", 0, service.BACKOFF),
             (True, 0, service.BACKOFF), (False, 9, service.EXITED)]
    for index, (restart, status, expected) in enumerate(cases):
        node = Node(tmp_path / str(index))
        node.supervisor.apply([entry(restart=restart)])
        node.clock.advance(2)
        node.fail_now(status)
        assert node.state()["state"] == expected, (restart, status)
        assert node.state()["exit_status"] == status


def test_stop_sends_the_stop_signal_then_sigkill_after_the_timeout(node):
    """stop: STOPPING, the configured signal, SIGKILL after stop_timeout, STOPPED at the end."""
    node.supervisor.apply([entry(stop_signal="int", stop_timeout=3)])
    job, attempt = node.executor.last()
    node.supervisor.control(1, "stop", 2)
    assert node.state()["state"] == service.STOPPING
    assert node.executor.signals == [(job, attempt, signal.SIGINT)]
    node.clock.advance(2.9)
    assert node.executor.kills == []
    node.clock.advance(0.1)
    assert node.executor.kills == [(job, attempt)]
    node.executor.end(job, attempt, signal=9)
    state = node.state()
    assert state["state"] == service.STOPPED and state["target"] == service.TARGET_STOPPED
    node.clock.advance(100)
    assert len(node.executor.launched) == 1


def test_restart_stops_then_starts_a_new_run(node):
    """restart of a RUNNING service: STOPPING, STOPPED, then STARTING run 2."""
    node.supervisor.apply([entry()])
    node.clock.advance(2)
    node.supervisor.control(1, "restart", 2)
    assert node.state()["state"] == service.STOPPING
    node.executor.end(1, 1, signal=15)
    assert node.state()["state"] == service.STARTING
    assert node.state()["run"] == 2
    assert node.states_seen()[-3:] == [service.STOPPING, service.STOPPED, service.STARTING]


def test_a_restart_the_node_missed_comes_with_the_masters_set_and_is_done_once(node):
    """The master's set naming a restart asked after the node's last request (restart_seq
    above the node's seq: it did not answer then) restarts the run; the same set again,
    or a later start, does not."""
    def restarted_at(seq, restart_seq):
        return dict(entry(seq=seq), restart_seq=restart_seq)
    node.supervisor.apply([entry()])
    node.clock.advance(2)
    node.supervisor.apply([restarted_at(3, 2)], full=True)
    assert node.state()["state"] == service.STOPPING
    node.executor.end(1, 1, signal=15)
    assert node.state()["state"] == service.STARTING and node.state()["run"] == 2
    node.supervisor.apply([restarted_at(3, 2)], full=True)
    node.supervisor.apply([restarted_at(4, 2)], full=True)
    assert node.state()["state"] == service.STARTING and node.state()["run"] == 2
    assert len(node.executor.launched) == 2


def test_a_control_is_applied_once_per_seq(node):
    """A repeated request (same seq, a resend) changes nothing."""
    node.supervisor.apply([entry()])
    node.supervisor.control(1, "stop", 2)
    node.executor.end(1, 1, signal=15)
    node.supervisor.control(1, "stop", 2)
    node.supervisor.apply([entry(seq=1)])
    assert node.state()["state"] == service.STOPPED
    assert len(node.executor.launched) == 1


def test_a_launch_the_node_refuses_is_fatal_without_retry(node):
    """A run_as the node refuses: FATAL with the reason, no back-off."""
    node.executor.refuse = "user nobody may not run commands on this node"
    node.supervisor.apply([entry()])
    state = node.state()
    assert state["state"] == service.FATAL and "nobody" in state["message"]
    node.clock.advance(100)
    assert node.executor.launched == []


def test_a_run_as_user_is_looked_up_before_the_start_and_the_service_waits(node):
    """A service that runs as another user: its start waits for the lookup (in a thread,
    Executor.user_soon) without a state change, asks once however often it is started
    meanwhile, and launches with the user found; a refused user is FATAL."""
    node.supervisor.apply([entry(run_as="alice")])
    assert node.state()["state"] == service.STOPPED and node.executor.launched == []
    node.supervisor.control(1, "restart", 2)
    node.supervisor.control(1, "start", 3)
    assert [name for name, _ in node.executor.lookups] == ["alice"]
    alice = ("alice", 1001, 1001, [1001], "/home/alice")
    node.executor.lookups[0][1].callback(alice)
    assert node.state()["state"] == service.STARTING
    assert len(node.executor.launched) == 1 and node.executor.users == [alice]
    node.fail_now()
    assert node.state()["state"] == service.BACKOFF
    node.clock.advance(1)  # the back-off's restart looks the user up again
    assert len(node.executor.lookups) == 2 and node.state()["state"] == service.BACKOFF
    node.executor.lookups[1][1].errback(errors.CommandError("user alice does not exist"))
    state = node.state()
    assert state["state"] == service.FATAL and "alice does not exist" in state["message"]
    assert len(node.executor.launched) == 1


def test_a_start_the_node_cannot_make_now_backs_off_instead_of_failing(node):
    """A lookup that timed out (or a full disk: CommandResourceError) is no refusal: the
    service backs off and starts once the node can."""
    node.supervisor.apply([entry(run_as="alice")])
    node.supervisor.control(1, "start", 2)
    node.executor.lookups[0][1].errback(errors.CommandResourceError(
        "the lookup of user alice (NSS) has not answered within 30s"))
    state = node.state()
    assert state["state"] == service.BACKOFF and "NSS" in state["message"]
    node.clock.advance(1)
    alice = ("alice", 1001, 1001, [1001], "/home/alice")
    node.executor.lookups[1][1].callback(alice)
    assert node.state()["state"] == service.STARTING and len(node.executor.launched) == 1


def test_starts_a_full_disk_refuses_back_off_without_ever_making_it_fatal(node):
    """No room for a run (CommandResourceError), again and again: BACKOFF, the delay
    doubling to its most, but never FATAL (the start limit counts the service's own
    failures); once there is room the next try starts it."""
    node.executor.refuse = errors.CommandResourceError("no room for its result: disk full")
    node.supervisor.apply([entry()])
    for _ in range(12):
        state = node.state()
        assert state["state"] == service.BACKOFF and state["failures"] == 0, state
        assert "not counted as a failure" in state["message"]
        node.clock.advance(state["retry_at"] - node.clock.seconds())
    assert state["retry_at"] - state["since"] == service.BACKOFF_MAX
    node.executor.refuse = None
    node.clock.advance(service.BACKOFF_MAX)
    assert node.state()["state"] == service.STARTING and len(node.executor.launched) == 1


def test_a_service_stopped_or_removed_while_its_user_is_looked_up_never_starts(node):
    node.supervisor.apply([entry(run_as="alice"), entry(sid=2, run_as="bob")])
    node.supervisor.control(1, "stop", 2)
    node.supervisor.apply([entry(run_as="alice")], full=True)  # removes service 2
    for _, found in node.executor.lookups:
        found.callback(("x", 1, 1, [1], "/"))
    assert node.executor.launched == [] and node.state()["state"] == service.STOPPED
    assert [s["id"] for s in node.supervisor.states()] == [1]


def test_removal_stops_the_service_first(node):
    """A service removed while running is stopped, then removed with its runs."""
    node.supervisor.apply([entry()])
    node.supervisor.apply([], full=True)
    assert node.state()["state"] == service.STOPPING
    node.executor.end(1, 1, signal=15)
    assert node.supervisor.states() == []
    assert ("svc_removed", 1) in node.events
    assert (1, 1) in node.executor.forgotten


def test_a_restarted_daemon_follows_the_same_run(tmp_path):
    """Same boot: a run alive is followed again (same run and pid), nothing is launched."""
    first = Node(tmp_path)
    first.supervisor.apply([entry(startsecs=0)])
    first.executor.exec(1, 1, 777)
    first.clock.advance(1)
    info = first.executor.attempts()[0]
    first.supervisor.stop()
    second = Node(tmp_path, executor=FakeExecutor(first.clock, [info]), clock=first.clock)
    state = second.state()
    assert (state["state"], state["run"], state["pid"]) == (service.RUNNING, 1, 777)
    assert second.executor.launched == []
    second.executor.end(1, 1, exit_status=1)
    assert second.state()["state"] == service.BACKOFF


def test_the_last_changes_are_kept_numbered_in_the_file_and_each_state(tmp_path):
    """Each change is numbered; the last RECENT_MAX ride along in every state ("recent":
    what a master that missed some records) and in the file, so a restarted daemon goes
    on numbering after them."""
    first = Node(tmp_path)
    first.supervisor.apply([entry(startsecs=0)])
    for _ in range(6):  # RUNNING, BACKOFF, STARTING, RUNNING... (never 5 failures in 60 s)
        first.fail_now()
        first.clock.advance(100)
    state = first.state()
    recent = state["recent"]
    assert len(recent) == supervisor_module.RECENT_MAX
    assert [change[0] for change in recent] == list(
        range(state["changes"] - supervisor_module.RECENT_MAX + 1, state["changes"] + 1))
    assert recent[-1][1:] == [state["state"], state["since"], state["message"], state["run"]]
    assert [change[1] for change in recent[-3:]] == [
        service.BACKOFF, service.STARTING, service.RUNNING]
    first.supervisor.stop()
    second = Node(tmp_path, executor=FakeExecutor(first.clock, first.executor.attempts()),
                  clock=first.clock)
    assert second.state()["recent"] == recent
    second.supervisor.control(1, "stop", 9)
    assert second.state()["recent"][-1][:2] == [state["changes"] + 1, service.STOPPING]


def test_a_run_that_ended_while_the_daemon_was_down_is_handled_at_start(tmp_path):
    """Same boot, the run ended meanwhile: its end counts now (back-off, then a restart)."""
    first = Node(tmp_path)
    first.supervisor.apply([entry()])
    first.supervisor.stop()
    executor = FakeExecutor(first.clock, first.executor.attempts())
    executor._attempts[(1, 1)] = first.executor.attempts()[0]
    executor.end(1, 1, exit_status=4)  # no listener yet: only the record changes
    second = Node(tmp_path, executor=executor, clock=first.clock)
    assert second.state()["state"] == service.BACKOFF
    assert second.state()["exit_status"] == 4
    second.clock.advance(1)
    assert second.executor.last() == (1, 2)


def test_a_pending_backoff_survives_a_restart_of_the_daemon(tmp_path):
    """BACKOFF saved with its retry time; the next daemon starts the run then."""
    first = Node(tmp_path)
    first.supervisor.apply([entry()])
    first.fail_now()
    first.supervisor.stop()
    second = Node(tmp_path, executor=FakeExecutor(first.clock, first.executor.attempts()),
                  clock=first.clock)
    assert second.state()["state"] == service.BACKOFF
    second.clock.advance(1)
    assert second.executor.last() == (1, 2)


def test_after_a_reboot_autostart_services_start_and_others_stay_stopped(tmp_path):
    """New boot id: autostart services get a fresh run; the others are STOPPED."""
    first = Node(tmp_path)
    first.supervisor.apply([entry(1, name="auto", autostart=True),
                            entry(2, name="manual")])
    first.supervisor.stop()
    second = Node(tmp_path, boot="boot-2", clock=first.clock)
    auto, manual = second.state(1), second.state(2)
    assert auto["state"] == service.STARTING and auto["run"] == 2
    assert manual["state"] == service.STOPPED
    assert "rebooted" in manual["message"]
    assert [spec.job for spec in second.executor.launched] == [1]


def test_a_new_version_applies_from_the_next_start(node):
    """A modified definition does not touch the running run; the next run uses it."""
    node.supervisor.apply([entry(command="one")])
    node.supervisor.apply([entry(version=2, command="two")])
    assert node.executor.launched[-1].argv[-1] == "one"
    node.supervisor.control(1, "restart", 2)
    node.executor.end(1, 1, signal=15)
    assert node.executor.launched[-1].argv[-1] == "two"


def test_stdio_files_are_opened_by_a_wrapper_that_execs_the_command(node):
    """stdout/stderr files: a sh wrapper appends to them, then execs the command."""
    node.supervisor.apply([entry(command=["/bin/echo", "hi"], stdout="/tmp/o",
                                 stdin="/dev/null")])
    argv = node.executor.launched[-1].argv
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[3:] == [service.WRAPPER_NAME, "/dev/null", "/tmp/o", "/bin/echo", "hi"]
    env = node.executor.launched[-1].env
    assert env["JQ_SERVICE"] == "web" and env["JQ_RUN"] == "1" and env["JQ_NODE"] == "node1"


def test_a_run_sends_its_variables_and_the_base_they_go_over(node):
    """The executor completes the environment: the spec holds the run's own variables
    (env over the JQ_ ones) and env_base, minimal or (env_inherit) inherit."""
    node.supervisor.apply([entry(env={"A": "1", "JQ_RUN": "mine"}),
                           entry(sid=2, name="db", env_inherit=True)])
    specs = {spec.job: spec for spec in node.executor.launched}
    assert specs[1].env_base == "minimal" and specs[2].env_base == "inherit"
    assert specs[1].env == {"JQ_SERVICE": "web", "JQ_SERVICE_ID": "1", "JQ_RUN": "mine",
                            "JQ_NODE": "node1", "A": "1"}
    assert specs[2].env == {"JQ_SERVICE": "db", "JQ_SERVICE_ID": "2", "JQ_RUN": "1",
                            "JQ_NODE": "node1"}


def test_unknown_service_and_action_are_refused(node):
    """Control of a service not on this node, or an unknown action: an error."""
    with pytest.raises(errors.CommandError):
        node.supervisor.control(9, "start", 1)
    node.supervisor.apply([entry()])
    with pytest.raises(errors.ParameterError):
        node.supervisor.control(1, "explode", 5)
