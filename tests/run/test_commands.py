"""Tests of jqueue.run.commands: command attempts scheduled, logged, retried and reconciled.

The queue is real (journal, recovery, log files); the node is a FakeLink and time a fake
clock shared by the queue and the runner's host.
"""

import errno
import os
import time

import pytest
from conftest import run_jobs
from daemon_helpers import notify_recorder, wait_told
from fakes_commands import FakeHost, FakeLink, unreachable

from jqueue import commandjob, constants, errors
from jqueue.run import commands
from jqueue.run.commands import CommandRunner

FIELDS = ["status", "opstatus", "opresult"]


def command(cmd="echo hi", **params):
    return dict({"OP_ID": "OP_COMMAND_RUN", "cmd": cmd}, **params)


class Setup:
    """A queue with a runner over fake nodes, and helpers to drive them."""

    def __init__(self, open_queue, clock, tmp_path, nodes=("node1",), slots=4, rand=None):
        self.clock = clock
        self.host = FakeHost(clock)
        self.links = {name: FakeLink(name, slots) for name in nodes}
        self.open_queue = open_queue
        self.tmp_path = tmp_path
        self.rand = rand or (lambda: 1.0)
        self.queue = None
        self.open()

    def open(self, links=None):
        if links is not None:
            self.links = links
        self.queue = self.open_queue(
            self.tmp_path / "queue", commands=lambda queue: CommandRunner(
                queue, self.host, list(self.links.values()), "node1", rand=self.rand))
        self.settle()
        return self.queue

    def reopen(self, links=None):
        self.queue.shutdown(timeout=5)
        return self.open(links)

    @property
    def link(self):
        return self.links["node1"]

    def settle(self):
        """Run the queue's pool and the host's calls until nothing moves."""
        while True:
            run_jobs(self.queue)
            self.queue.wait_durable()
            if not self.host.drain():
                self.queue.wait_durable()
                if not self.host.drain():
                    return

    def submit(self, *ops):
        job_id = self.queue.submit_job(list(ops))
        self.settle()
        return job_id

    def write(self, job_id, data, attempt=1, node="node1"):
        self.links[node].write(job_id, attempt, data)
        self.settle()

    def end(self, job_id, attempt=1, node="node1", **result):
        self.links[node].end(job_id, attempt, **result)
        self.settle()

    def fields(self, job_id, fields=None):
        return self.queue.query_jobs([job_id], fields or FIELDS)[0]

    def log(self, job_id):
        return self.queue.read_job_log(job_id, 0, 1 << 30)["data"]


@pytest.fixture
def setup(open_queue, clock, tmp_path):
    return Setup(open_queue, clock, tmp_path)


def test_a_command_job_runs_on_its_node_and_succeeds_with_its_output_logged(setup):
    """The node gets argv, dir and the command's variables; output and banners land in
    the log."""
    job_id = setup.submit(command(["printf", "%s", "a b"], dir="/tmp", env={"X": "1"}))
    spec = setup.link.launched[0]
    assert spec["argv"] == ["printf", "%s", "a b"] and spec["dir"] == "/tmp"
    assert spec["env"] == {"X": "1", "JQ_JOB_ID": str(job_id), "JQ_ATTEMPT": "1",
                           "JQ_NODE": "node1"}
    assert setup.fields(job_id, ["status", "node", "attempt", "pid"]) == [
        "running", "node1", 1, 1001]
    setup.write(job_id, b"a b")
    setup.end(job_id, exit_status=0)
    status, exit_status, reason, progress = setup.fields(
        job_id, ["status", "exit_status", "reason", "progress"])
    assert (status, exit_status, reason, progress) == ("success", 0, "OK", 1.0)
    log = setup.log(job_id)
    assert log.startswith(b"* START ") and b"\n* CMD : printf %s 'a b'\na b\n* EXIT : 0\n" in log
    assert setup.link.forgotten == [(job_id, 1)]


def test_a_jobs_log_descriptor_is_closed_once_its_end_is_durable(setup):
    """While its command runs a job's log stays open (its output goes there); once the
    job's end is durable, no descriptor is kept for it (every command spawned later would
    copy it and close it again)."""
    job_id = setup.submit(command("true"))
    assert job_id in setup.queue._logs._fds
    setup.end(job_id, exit_status=0)
    assert setup.fields(job_id, ["status"]) == ["success"]
    assert job_id not in setup.queue._logs._fds
    assert b"\n* EXIT : 0\n* OK : " in setup.log(job_id)


def test_an_attempt_whose_output_is_all_in_ends_without_another_read(setup):
    """The node's end says the output's final size: once the log holds all of it the job
    ends, with no read to confirm it; a node that does not say reads until a read comes
    back empty (every byte still logged either way)."""
    job_id = setup.submit(command("echo hello"))
    setup.write(job_id, b"hello\n")
    setup.end(job_id, exit_status=0)
    assert setup.fields(job_id, ["status"]) == ["success"]
    assert setup.link.fetches == [(job_id, 1, 0)]
    with_size = setup.link.end

    def end_without_size(job, attempt, **result):  # a node of an earlier version
        setup.link._listener.link_event(setup.link.name, ("ended", job, attempt, {
            "exit_status": 0, "signal": None, "timed_out": False, "error": None,
            "ended": 2.0}))

    setup.link.end = end_without_size
    other = setup.submit(command("echo hello"))
    setup.write(other, b"hello\n")
    setup.end(other)
    setup.link.end = with_size
    assert setup.fields(other, ["status"]) == ["success"]
    assert [f for f in setup.link.fetches if f[0] == other] == [(other, 1, 0), (other, 1, 6)]
    assert b"hello\n* EXIT : 0\n" in setup.log(other)


def test_a_launch_answer_after_the_started_event_keeps_the_pid(setup, monkeypatch):
    """A node's "started" event may reach the runner before the answer to its launch (a
    batch of launches answers once all are done): the answer, older news without the
    pid, does not take the pid away again."""
    held = []
    monkeypatch.setattr(setup.link, "launch", lambda spec, done: held.append((spec, done)))
    job_id = setup.submit(command("sleep 60"))
    spec, done = held[0]
    info = {"job": job_id, "attempt": 1, "pid": None, "pgid": None, "cgroup": None,
            "started": 1.0, "deadline": None, "output_size": 0, "result": None}
    setup.link._listener.link_event("node1", ("started", dict(info, pid=4242)))
    setup.settle()
    done(dict(info))
    setup.settle()
    assert setup.fields(job_id, ["status", "pid"]) == ["running", 4242]
    runs = [e for e in setup.queue.read_events(0, {"job": job_id})["events"]
            if e["status"] == "RUN"]
    assert [e["message"] for e in runs] == ["attempt 1 of 1 pid 4242"]


def test_a_shell_string_runs_through_sh_and_the_base_environment_is_minimal(setup):
    """cmd as a string is /bin/sh -c; the node puts the command's variables over the
    minimal base by default: the master sends neither its user database's HOME and USER
    nor its own environment."""
    job_id = setup.submit(command("echo $HOME"))
    spec = setup.link.launched[0]
    assert spec["argv"] == ["/bin/sh", "-c", "echo $HOME"]
    assert spec["env_base"] == "minimal" and spec["run_as"] is None
    assert set(spec["env"]) == {"JQ_JOB_ID", "JQ_ATTEMPT", "JQ_NODE"}
    setup.end(job_id)


def test_env_inherit_asks_the_node_for_its_daemons_environment(setup):
    """env_inherit: env_base "inherit", and only the job's variables travel; env wins over
    the JQ_ ones; run_as goes as it is (the node looks it up)."""
    job_id = setup.submit(command("true", env_inherit=True, env={"JQ_NODE": "x", "A": "1"},
                                  run_as="nobody"))
    spec = setup.link.launched[0]
    assert spec["env_base"] == "inherit" and spec["run_as"] == "nobody"
    assert spec["env"] == {"JQ_JOB_ID": str(job_id), "JQ_ATTEMPT": "1", "JQ_NODE": "x",
                           "A": "1"}
    setup.end(job_id)


def test_an_exit_status_outside_the_success_codes_fails_the_opcode(setup):
    """exit 3 fails with an OpExecError naming it; success_exit_codes [0, 3] succeeds."""
    failing = setup.submit(command("exit 3"))
    setup.end(failing, exit_status=3)
    assert setup.fields(failing) == ["error", ["error"], [
        ["OpExecError", ["command exited with status 3"]]]]
    assert setup.fields(failing, ["exit_status", "reason"]) == [3, "FAILED"]
    passing = setup.submit(command("exit 3", success_exit_codes=[0, 3]))
    setup.end(passing, exit_status=3)
    assert setup.fields(passing, ["status", "exit_status"]) == ["success", 3]


def test_signal_timeout_and_refusal_give_their_reasons(setup):
    """A signal is KILLED, a timeout TIMEOUT, a refused launch INTERR (never retried)."""
    killed = setup.submit(command("sleep 9", max_attempts=1))
    setup.end(killed, exit_status=None, signal=15)
    assert setup.fields(killed, ["reason", "signal", "exit_status"]) == ["KILLED", 15, None]
    timed = setup.submit(command("sleep 9", timeout=1))
    setup.end(timed, exit_status=None, signal=9, timed_out=True)
    assert setup.fields(timed, ["reason", "timed_out"]) == ["TIMEOUT", True]
    setup.link.refuse = errors.CommandError("user bob is not allowed on node1")
    refused = setup.submit(command("id", run_as="bob", max_attempts=3))
    assert setup.fields(refused, ["status", "reason", "attempt"]) == ["error", "INTERR", 1]


def test_memory_max_reaches_the_node_and_its_kill_is_named_with_the_use(setup):
    """memory_max ("512M" taken as bytes) goes in the spec (and only when set: a node from
    before it refuses the key); an attempt killed over it is KILLED, its message saying what
    it held, and the job's fields carry the limit, its use and memory_exceeded."""
    plain = setup.submit(command("true"))
    assert "memory_max" not in setup.link.launched[-1]
    setup.end(plain, max_rss=3 << 20, cpu_time=0.25)
    assert setup.fields(plain, ["memory_max", "max_rss", "cpu_time", "memory_exceeded"]) == [
        None, 3 << 20, 0.25, False]
    big = setup.submit(command("make", memory_max="512M", max_attempts=2))
    assert setup.link.launched[-1]["memory_max"] == 512 << 20
    setup.end(big, exit_status=None, signal=9, memory_exceeded=True, max_rss=600 << 20,
              cpu_time=1.5)
    assert setup.fields(big, ["status", "reason", "attempt", "memory_exceeded"]) == [
        "waiting", "KILLED", 1, True]  # retried, as any failure
    setup.host.advance(setup.host.pending_timers()[-1])
    setup.settle()
    setup.end(big, attempt=2, exit_status=None, signal=9, memory_exceeded=True,
              max_rss=700 << 20)
    assert setup.fields(big, ["status", "memory_max", "max_rss", "signal"]) == [
        "error", 512 << 20, 700 << 20, 9]
    assert setup.fields(big, ["opresult"])[0] == [["OpExecError", [
        "command killed by signal SIGKILL: its processes held 700.0 MiB, over its "
        "memory_max of 512.0 MiB"]]]
    for bad in (-1, 1000, "lots", True, 2.5):
        with pytest.raises(errors.OpPrereqError, match="memory_max"):
            setup.queue.submit_job([command("x", memory_max=bad)])


def test_a_kill_by_the_oom_killer_is_named_unless_a_stop_sent_it(setup):
    """A node that saw the OOM killer strike while a command died of SIGKILL says so
    (oom_kills): the job's error names it; a kill the user asked for stays that."""
    job_id = setup.submit(command("bake"))
    setup.end(job_id, exit_status=None, signal=9, oom_kills=1)
    assert setup.fields(job_id, ["status", "reason"]) == ["error", "KILLED"]
    assert setup.fields(job_id, ["opresult"])[0] == [["OpExecError", [
        "command killed by signal SIGKILL: the kernel's OOM killer killed 1 process on its "
        "node while it ran, likely it (the machine ran out of memory; memory_max bounds a "
        "command)"]]]
    killed = setup.submit(command("bake"))
    setup.queue.cancel_job(killed, kill=True)
    setup.settle()
    setup.end(killed, exit_status=None, signal=9, oom_kills=1)
    assert b"* KILLED : command killed by signal SIGKILL (stopped by request)" in setup.log(
        killed)


def test_a_missing_directory_ends_the_attempt_internal_error(setup):
    """An attempt the node could not start (error set) is INTERR with the node's reason."""
    job_id = setup.submit(command("true", dir="/nonexistent", max_attempts=2))
    setup.end(job_id, exit_status=None, error="cannot change to directory /nonexistent")
    assert setup.fields(job_id, ["status", "reason", "attempt"]) == ["error", "INTERR", 1]
    assert b"cannot change to directory /nonexistent" in setup.log(job_id)


def test_failed_attempts_are_retried_with_doubling_back_off(setup):
    """max_attempts 3: retries after 5 s, then 10 s (rand 1.0), then the job fails."""
    job_id = setup.submit(command("false", max_attempts=3, retry_delay=5))
    setup.end(job_id, exit_status=1)
    assert setup.fields(job_id, ["status", "attempt", "reason"]) == ["waiting", 1, "FAILED"]
    assert setup.host.pending_timers() == [5.0]
    setup.host.advance(4.9)
    assert len(setup.link.launched) == 1
    setup.host.advance(0.2)
    setup.settle()
    assert len(setup.link.launched) == 2 and setup.link.launched[1]["attempt"] == 2
    assert setup.link.launched[1]["env"]["JQ_ATTEMPT"] == "2"
    setup.end(job_id, attempt=2, exit_status=1)
    assert setup.host.pending_timers() == [10.0]
    setup.host.advance(10)
    setup.settle()
    setup.end(job_id, attempt=3, exit_status=1)
    assert setup.fields(job_id, ["status", "attempt", "max_attempts"]) == ["error", 3, 3]
    log = setup.log(job_id)
    assert log.count(b"* START ") == 3 and b"* RETRY : attempt 2 of 3 in 5.0s" in log


def test_retry_at_says_when_the_next_attempt_starts_while_the_back_off_lasts(setup):
    """retry_at: the back-off's end while the job waits for it; null once it ran or ended."""
    job_id = setup.submit(command("false", max_attempts=3, retry_delay=5))
    assert setup.fields(job_id, ["retry_at"]) == [None]
    setup.end(job_id, exit_status=1)
    assert setup.fields(job_id, ["retry_at"]) == [pytest.approx(setup.clock() + 5.0)]
    setup.host.advance(5.1)
    setup.settle()
    assert setup.fields(job_id, ["status", "retry_at"]) == ["running", None]
    setup.end(job_id, attempt=2, exit_status=1)
    assert setup.fields(job_id, ["retry_at"])[0] is not None
    setup.queue.cancel_job(job_id)
    assert setup.fields(job_id, ["status", "retry_at"]) == ["canceled", None]


def test_jitter_scales_the_delay_between_half_and_all_of_it(open_queue, clock, tmp_path):
    """The random factor is in [0.5, 1]: rand 0 halves the delay."""
    setup = Setup(open_queue, clock, tmp_path, rand=lambda: 0.0)
    job_id = setup.submit(command("false", max_attempts=2, retry_delay=8))
    setup.end(job_id, exit_status=1)
    assert setup.host.pending_timers() == [4.0]


def test_the_retry_schedule_and_attempt_counter_survive_a_restart(setup):
    """Reopened during a back-off, the queue waits out the rest, then runs attempt 2."""
    job_id = setup.submit(command("false", max_attempts=2, retry_delay=10))
    setup.end(job_id, exit_status=1)
    setup.clock.advance(4)
    setup.reopen(links={"node1": FakeLink("node1")})
    assert setup.host.pending_timers()[-1] == pytest.approx(6.0)
    assert setup.fields(job_id, ["status", "retry_at"]) == ["waiting", setup.clock() + 6]
    setup.host.advance(6)
    setup.settle()
    assert setup.link.launched[0]["attempt"] == 2
    setup.end(job_id, attempt=2, exit_status=0)
    assert setup.fields(job_id, ["status", "attempt"]) == ["success", 2]


def test_slots_bound_a_node_and_the_next_attempt_goes_by_priority_then_id(open_queue, clock,
                                                                             tmp_path):
    """slots 1: queued p=10, p=0, p=0 start in the order 2nd, 3rd, 1st (BEX, Coalition)."""
    setup = Setup(open_queue, clock, tmp_path, slots=1)
    blocker = setup.submit(command("sleep 60"))
    low = setup.submit(command("a", priority=10))
    first = setup.submit(command("b", priority=0))
    second = setup.submit(command("c", priority=0))
    assert [s["job"] for s in setup.link.launched] == [blocker]
    assert setup.fields(low, ["status"]) == ["queued"]
    for job_id in (blocker, first, second):
        setup.end(job_id)
    assert [s["job"] for s in setup.link.launched] == [blocker, first, second, low]


def test_a_burst_is_begun_and_launched_a_slice_per_turn_and_a_cancel_meanwhile_holds(
        open_queue, clock, tmp_path):
    """A burst's attempts are begun (journaled as starting), and the starts one group commit
    made durable together launched, LAUNCH_SLICE at a time, one slice per turn of the
    host's loop, in job order: whatever else the host has to do waits for a slice, not
    for the burst. A job canceled while its launch waits for its turn never runs."""
    count = commands.LAUNCH_SLICE * 2 + 3
    setup = Setup(open_queue, clock, tmp_path, slots=count)
    runner = setup.queue.commands
    begun, begin = [], runner._begin_attempt_unlocked
    runner._begin_attempt_unlocked = lambda job, *args: begun.append(job.id) or begin(
        job, *args)
    durable = []  # the starts made durable, held back to arrive in one turn below
    runner._starting_durable = lambda *args: durable.append(args)
    ids = [setup.queue.submit_job([command("true")]) for _ in range(count)]
    run_jobs(setup.queue)
    begins = []
    while True:
        setup.queue.wait_durable()
        before = len(begun)
        if not setup.host.run_turn():
            break
        begins.append(len(begun) - before)
    assert [n for n in begins if n] == [commands.LAUNCH_SLICE, commands.LAUNCH_SLICE, 3]
    assert len(durable) == count and not setup.link.launched
    del runner._starting_durable
    for args in durable:
        setup.host.call(runner._starting_durable, *args)
    launches = []
    while setup.host.run_turn():
        launches.append(len(setup.link.launched) - sum(launches))
        if len(setup.link.launched) == commands.LAUNCH_SLICE:  # the last one waits
            assert setup.queue.cancel_job(ids[-1])[0]
    setup.settle()
    assert [n for n in launches if n] == [commands.LAUNCH_SLICE, commands.LAUNCH_SLICE, 2]
    assert [spec["job"] for spec in setup.link.launched] == ids[:-1]
    assert setup.fields(ids[-1], ["status"]) == ["canceled"]


def test_a_turn_begins_and_launches_attempts_for_at_most_slice_seconds(open_queue, clock,
                                                                      tmp_path):
    """However many are due, a turn stops beginning attempts, and launching them, once it
    spent SLICE_SECONDS on them (one at least): one a turn here, where each takes that
    long (a shim spawned on this machine takes 1-2 ms; a launch on a node, microseconds)."""
    setup = Setup(open_queue, clock, tmp_path, slots=3)
    runner = setup.queue.commands
    begin, launch = runner._begin_attempt_unlocked, runner._launch
    begun, launched = [], []

    def slow(real, seen):
        def step(first, *args):
            seen.append(first)
            setup.host.now += commands.SLICE_SECONDS
            return real(first, *args)
        return step

    runner._begin_attempt_unlocked = slow(begin, begun)
    runner._launch = slow(launch, launched)
    for _ in range(3):
        setup.queue.submit_job([command("true")])
    run_jobs(setup.queue)
    per_turn = []
    while True:
        setup.queue.wait_durable()
        before = (len(begun), len(launched))
        if not setup.host.run_turn():
            break
        per_turn.append((len(begun) - before[0], len(launched) - before[1]))
    assert sum(b for b, _ in per_turn) == 3 and max(b for b, _ in per_turn) == 1
    assert sum(n for _, n in per_turn) == 3 and max(n for _, n in per_turn) == 1
    setup.settle()


def test_canceling_a_queued_command_job_never_starts_it(open_queue, clock, tmp_path):
    """A job waiting for a slot is canceled at once and its command never runs."""
    setup = Setup(open_queue, clock, tmp_path, slots=1)
    blocker = setup.submit(command("sleep 60"))
    waiting = setup.submit(command("touch /x"))
    assert setup.queue.cancel_job(waiting)[0]
    setup.end(blocker)
    setup.settle()
    assert [s["job"] for s in setup.link.launched] == [blocker]
    assert setup.fields(waiting, ["status"]) == ["canceled"]


def test_canceling_a_running_command_terminates_it_and_the_job_ends_canceled(setup):
    """cancel: TERM then KILL after the grace (the node's terminate); --kill: KILL now."""
    job_id = setup.submit(command("sleep 60"))
    ok, message = setup.queue.cancel_job(job_id)
    setup.settle()
    assert ok and "TERM, then KILL" in message
    assert setup.link.controls == [(job_id, 1, "terminate", None)]
    assert setup.fields(job_id, ["status"]) == ["canceling"]
    setup.end(job_id, exit_status=None, signal=15)
    assert setup.fields(job_id, ["status", "reason"]) == ["canceled", "KILLED"]
    killed = setup.submit(command("sleep 60", max_attempts=5))
    setup.queue.cancel_job(killed, kill=True)
    setup.settle()
    assert setup.link.controls[-1] == (killed, 1, "kill", None)
    setup.end(killed, exit_status=None, signal=9)
    assert setup.fields(killed, ["status", "attempt"]) == ["canceled", 1]


def test_a_command_ending_by_itself_on_a_stop_by_request_ends_killed(setup):
    """A command that handles the TERM of a cancel, term or hold and exits (even with
    status 0) was stopped all the same: reason KILLED with its true status, never OK
    or FAILED (row 11 of the contract); the job is canceled, or queued again if held."""
    canceled = setup.submit(command("sleep 60", max_attempts=3))
    setup.queue.cancel_job(canceled)
    setup.settle()
    setup.end(canceled, exit_status=0)
    assert setup.fields(canceled, ["status", "reason", "exit_status"]) == [
        "canceled", "KILLED", 0]
    assert b"* KILLED : command exited with status 0 (stopped by request)" in setup.log(
        canceled)
    failed = setup.submit(command("sleep 60", max_attempts=3))
    setup.queue.cancel_job(failed)
    setup.settle()
    setup.end(failed, exit_status=3)
    assert setup.fields(failed, ["status", "reason", "exit_status", "attempt"]) == [
        "canceled", "KILLED", 3, 1]
    held = setup.submit(command("sleep 60"))
    setup.queue.hold_job(held)
    setup.settle()
    setup.end(held, exit_status=143)
    assert setup.fields(held, ["status", "held", "attempt", "reason", "exit_status"]) == [
        "queued", True, 0, "KILLED", 143]


def test_signal_job_reaches_the_running_attempt(setup):
    """SignalJob sends the signal through the node; a job without a command says so."""
    job_id = setup.submit(command("sleep 60"))
    assert setup.queue.signal_job(job_id, 10)[0]
    assert setup.link.controls == [(job_id, 1, "signal", 10)]
    other = setup.submit({"OP_ID": "OP_TEST_DELAY", "duration": 0})
    assert setup.queue.signal_job(other, 10) == (False, "Job %d has no running command" % other)
    setup.end(job_id)


def test_progress_is_followed_across_chunk_boundaries(setup):
    """PROGRESS:25, then PROGRES + S:50 in two writes: 0.25, then 0.5; success is 1.0."""
    job_id = setup.submit(command("x", global_progress_pattern="[%one]"))
    setup.write(job_id, b"PROGRESS:25\n")
    assert setup.fields(job_id, ["progress"]) == [0.25]
    setup.clock.advance(1)
    setup.write(job_id, b"PROGRES")
    setup.clock.advance(1)
    setup.write(job_id, b"S:50\nstep [0.3]\n")
    assert setup.fields(job_id, ["progress", "global_progress"]) == [0.5, 0.3]
    setup.end(job_id)
    assert setup.fields(job_id, ["progress"]) == [1.0]


def test_the_log_stops_at_its_cap_with_a_marker(open_queue, clock, tmp_path):
    """Past log_max_bytes the log keeps a marker line and no more output."""
    setup = Setup(open_queue, clock, tmp_path)
    setup.queue.commands._log_max = 400
    job_id = setup.submit(command("yes"))
    setup.write(job_id, b"y\n" * 500)
    setup.end(job_id)
    log = setup.log(job_id)
    assert b"* LOG TRUNCATED" in log and log.count(b"y\n") < 200
    assert setup.fields(job_id, ["status"]) == ["success"]


def test_the_cap_marker_is_written_once_across_a_restart(open_queue, clock, tmp_path):
    """A master restarted after an attempt's output reached the cap follows it from where
    it was, without a second marker; the next attempt of the job, cut too, has its own."""
    setup = Setup(open_queue, clock, tmp_path)
    setup.queue.commands._log_max = 400
    job_id = setup.submit(command("yes", max_attempts=2))
    setup.write(job_id, b"y\n" * 500)
    link = setup.link
    setup.reopen(links={"node1": link})
    setup.queue.commands._log_max = 400
    assert link.fetches == [(job_id, 1, 0)]  # what was dropped is not read again
    setup.write(job_id, b"n\n" * 10)
    setup.end(job_id, exit_status=1)
    assert setup.log(job_id).count(b"* LOG TRUNCATED") == 1
    setup.host.advance(5)
    setup.settle()
    setup.write(job_id, b"z\n", attempt=2)
    setup.end(job_id, attempt=2)
    log = setup.log(job_id)
    assert log.count(b"* LOG TRUNCATED") == 2 and b"n\n" not in log and b"z\n" not in log
    assert setup.fields(job_id, ["status", "attempt"]) == ["success", 2]


def test_output_past_the_cap_is_passed_over_and_freed_on_its_node(setup, monkeypatch):
    """Past log_max_bytes nothing is kept: the runner reads only the last piece the node
    has (its progress still followed) and tells the node to free what it passed, from
    where the cap began; what the log keeps stays on the node."""
    monkeypatch.setattr(commands, "RELEASE_BYTES", 4096)
    setup.queue.commands._log_max = 1000
    job_id = setup.submit(command("yes"))
    setup.write(job_id, b"y\n" * 400)
    setup.write(job_id, b"y\n" * 50000)
    link = setup.link
    kept = setup.log(job_id).count(b"y\n") * 2  # the banner counts against the cap too
    assert 800 < kept < 1000 and link.released == [(job_id, 1, kept, 100800)]
    big = b"y\n" * (2 * commands.FETCH_BYTES) + b"PROGRESS:40\n"
    setup.write(job_id, big)
    size = 100800 + len(big)
    assert link.fetches[-2:] == [(job_id, 1, 800), (job_id, 1, size - commands.FETCH_BYTES)]
    assert link.released[-1] == (job_id, 1, 100800, size)
    assert setup.fields(job_id, ["progress"]) == [0.4]
    setup.end(job_id, exit_status=0)
    log = setup.log(job_id)
    assert log.count(b"* LOG TRUNCATED") == 1 and b"PROGRESS" not in log
    assert setup.fields(job_id, ["status"]) == ["success"]


def test_read_job_log_reads_acknowledged_bytes_and_says_eof_at_the_end(setup):
    """Offsets count bytes; eof only once the job finished and everything was read."""
    job_id = setup.submit(command("echo"))
    setup.write(job_id, "h\u00e9llo\n".encode())
    head = setup.queue.read_job_log(job_id, 0, 1 << 20)
    assert not head["eof"] and head["data"].endswith("h\u00e9llo\n".encode())
    setup.end(job_id)
    size = setup.queue.read_job_log(job_id, 0, 1 << 20)["offset"]
    tail = setup.queue.read_job_log(job_id, size, 100)
    assert tail == {"data": b"", "offset": size, "eof": True}
    with pytest.raises(errors.JobLost):
        setup.queue.read_job_log(999, 0, 10)


def test_read_job_log_never_cuts_a_utf8_character(setup):
    """A read limited in bytes ends on a character boundary."""
    job_id = setup.submit(command("echo"))
    setup.write(job_id, "\u00e9\u00e9\u00e9".encode())
    start = setup.log(job_id).index("\u00e9".encode())
    piece = setup.queue.read_job_log(job_id, start, 3)
    assert piece["data"] == "\u00e9".encode() and piece["offset"] == start + 2
    setup.end(job_id)


def test_watch_job_log_answers_when_the_log_grows(setup):
    """A log waiter costs no thread and hears of new acknowledged bytes."""
    job_id = setup.submit(command("echo"))
    size = setup.queue.read_job_log(job_id, 0, 1 << 20)["offset"]
    answers = []
    handle = setup.queue.watch_job_log(job_id, size, 100, answers.append)
    assert handle is not None and answers == []
    setup.write(job_id, b"more\n")
    assert answers == [{"data": b"more\n", "offset": size + 5, "eof": False}]
    setup.end(job_id)


def test_a_restarted_master_follows_a_running_attempt_from_the_logged_offset(setup):
    """No "Unclean master daemon shutdown": the attempt is looked up and output resumes."""
    job_id = setup.submit(command("count"))
    setup.write(job_id, b"1\n2\n")
    link = setup.link
    setup.reopen(links={"node1": link})
    assert setup.fields(job_id, ["status"]) == ["running"]
    link.output[(job_id, 1)] += b"3\n"
    link.known[(job_id, 1)]["output_size"] = 6
    setup.end(job_id, exit_status=7)
    assert setup.fields(job_id, ["status", "exit_status"]) == ["error", 7]
    assert (job_id, 1, 4) in link.fetches
    log = setup.log(job_id)
    assert log.count(b"1\n2\n3\n") == 1 and b"* EXIT : 7" in log


def test_an_attempt_that_ended_while_the_master_was_down_gets_its_true_result(setup):
    """Reopened after the command ended, the queue records its real exit status."""
    job_id = setup.submit(command("exit 7"))
    link = setup.link
    link.output[(job_id, 1)] = b"bye\n"
    link.known[(job_id, 1)].update(output_size=4, result={
        "exit_status": 7, "signal": None, "timed_out": False, "error": None, "ended": 3.0})
    setup.reopen(links={"node1": link})
    assert setup.fields(job_id, ["status", "exit_status"]) == ["error", 7]
    assert b"bye\n* EXIT : 7" in setup.log(job_id)
    assert link.forgotten == [(job_id, 1)]


@pytest.mark.parametrize("error", [
    errors.RemoteError("RPC exec_lookup to node node1 failed: connection refused"),
    errors.FencedError("node node9 is not the master; only the master runs commands on "
                       "nodes")], ids=["unreachable", "not-the-master-yet"])
def test_a_node_unreachable_when_the_master_starts_is_asked_again_not_lost(setup, error):
    """Reopened (a restart, a failover) while the node's daemon is down (connection
    refused), or while the node refuses the new master until the new configuration
    reaches it (it was lost at once, though its command had ended well there): the
    attempt is not lost for that; it is asked about every ping_interval, and once the
    node answers its true end is recorded, its command run once."""
    job_id = setup.submit(command("sleep 4", max_attempts=3))
    link = setup.link
    link.lookup_error = error
    setup.reopen(links={"node1": link})
    for _ in range(3):
        setup.host.advance(commands.PING_INTERVAL)
        setup.settle()
    assert setup.fields(job_id, ["status", "reason", "attempt"]) == ["running", None, 1]
    link.lookup_error = None
    link.known[(job_id, 1)].update(result={
        "exit_status": 0, "signal": None, "timed_out": False, "error": None, "ended": 9.0})
    setup.host.advance(commands.PING_INTERVAL)
    setup.settle()
    assert setup.fields(job_id, ["status", "reason", "attempt"]) == ["success", "OK", 1]
    assert len(link.launched) == 1


def test_an_attempt_on_a_node_the_queue_no_longer_has_is_lost_after_a_restart(
        open_queue, clock, tmp_path):
    """Reopened without the node an attempt ran on: the attempt ends NODE_LOST at once
    (nobody could tell its end), and the runner counts no slot of that node."""
    setup = Setup(open_queue, clock, tmp_path, nodes=("node1", "node2"))
    job_id = setup.submit(command("sleep 9", node="node2"))
    setup.reopen(links={"node1": setup.links["node1"]})
    assert setup.fields(job_id, ["status", "reason"]) == ["error", "NODE_LOST"]
    assert b"node node2 is no longer a node of this queue" in setup.log(job_id)
    assert setup.queue.commands._running.get("node2", 0) == 0


def test_a_command_on_several_nodes_may_be_told_once_n_of_them_ended(open_queue, clock,
                                                                     tmp_path):
    """A fan-out's notify goes to its group: after 1 is told once the first node's job
    ended, whichever way, and never again (on none: not its end)."""
    setup = Setup(open_queue, clock, tmp_path, nodes=("node1", "node2"))
    setup.queue.set_notify_command(notify_recorder(tmp_path))
    [group] = [job_id for ok, job_id in setup.queue.submit_many_jobs(
        [[command("x", nodes=["node1", "node2"])]],
        options=[{"notify": {"to": "ops@example.com", "after": 1, "on": []}}])]
    setup.settle()
    first, second = setup.fields(group, ["children"])[0]
    setup.end(first, exit_status=3)
    [call] = wait_told(tmp_path)
    assert [call["input"][key] for key in ("event", "job", "finished", "errors")] == [
        "after", group, 1, 1]
    setup.end(second, node="node2")
    assert setup.fields(group, ["status"]) == ["error"]
    time.sleep(0.2)
    assert len(wait_told(tmp_path)) == 1


def test_a_node_unreachable_for_the_lost_grace_after_a_restart_loses_its_attempt(setup):
    """The node stays unreachable after the master restarted: after lost_grace its
    attempt ends NODE_LOST (and, attempts left, runs again); an error the node answers
    (not a lost connection) ends it at once."""
    job_id = setup.submit(command("sleep 4", max_attempts=1))
    second = setup.submit(command("sleep 4", max_attempts=1))
    link = setup.link
    link.lookup_error = errors.RemoteError("connection refused")
    setup.reopen(links={"node1": link})
    setup.host.advance(commands.LOST_GRACE - 1)
    setup.settle()
    assert setup.fields(job_id, ["status"]) == ["running"]
    setup.host.advance(commands.PING_INTERVAL + 1)
    setup.settle()
    assert setup.fields(job_id, ["status", "reason"]) == ["error", "NODE_LOST"]
    assert setup.fields(second, ["status", "reason"]) == ["error", "NODE_LOST"]
    link.lookup_error = errors.OpExecError("exec_lookup: bad attempt")
    third = setup.submit(command("sleep 4", max_attempts=1))
    setup.reopen(links={"node1": link})
    assert setup.fields(third, ["status", "reason"]) == ["error", "NODE_LOST"]


def test_an_attempt_whose_command_never_started_runs_again_at_once_uncounted(setup):
    """The daemon launching it died before the command could start (LOST_UNSTARTED, which
    jqueue.exec reports): another attempt runs at once and this one does not count, even
    with max_attempts 1; the log says so."""
    job_id = setup.submit(command("x"))
    setup.link._listener.link_event("node1", ("ended", job_id, 1, {
        "exit_status": None, "signal": None, "timed_out": False,
        "error": commandjob.LOST_UNSTARTED, "lost": True, "ended": 2.0, "output_size": 0}))
    setup.settle()
    setup.host.advance(0)  # no back-off: a timer of no time
    setup.settle()
    assert [spec["attempt"] for spec in setup.link.launched] == [1, 2]
    assert setup.fields(job_id, ["status", "attempt"]) == ["running", 1]
    setup.end(job_id, attempt=2)
    assert setup.fields(job_id, ["status", "attempt", "reason"]) == ["success", 1, "OK"]
    assert b"* RETRY : the command never started: attempt 1 of 1 again, now\n" in \
        setup.log(job_id)


def test_never_started_attempts_run_again_three_times_at_most(setup):
    """A launch that kills its daemon each time must not do so for ever: after three
    uncounted attempts the next loss counts (max_attempts 1: the job fails NODE_LOST)."""
    job_id = setup.submit(command("x"))
    for number in range(1, 5):
        setup.link._listener.link_event("node1", ("ended", job_id, number, {
            "exit_status": None, "signal": None, "timed_out": False,
            "error": commandjob.LOST_UNSTARTED, "lost": True, "ended": 2.0,
            "output_size": 0}))
        setup.settle()
        setup.host.advance(0)
        setup.settle()
    assert [spec["attempt"] for spec in setup.link.launched] == [1, 2, 3, 4]
    assert setup.fields(job_id, ["status", "reason", "attempt"]) == ["error", "NODE_LOST", 1]


def test_output_a_node_could_not_be_asked_for_is_read_once_it_answers(setup):
    """The attempt ended (its node said so) and the read of its output found the node
    down (jq-noded killed): the job waits and reads it once the node answers, instead of
    ending without it. A node that answers that it has no such attempt ends it as is."""
    job_id = setup.submit(command("echo hi"))
    setup.link.output[(job_id, 1)] = b"hi\n"
    fetch, down = setup.link.fetch, [True]

    def flaky_fetch(job, attempt, offset, max_bytes, done):
        if down[0]:
            return done(unreachable("node1"))
        return fetch(job, attempt, offset, max_bytes, done)

    setup.link.fetch = flaky_fetch
    setup.end(job_id, exit_status=0)
    assert setup.fields(job_id, ["status"]) == ["running"]
    down[0] = False
    setup.host.advance(1)
    setup.settle()
    assert setup.fields(job_id, ["status", "log_bytes"])[0] == "success"
    assert b"\nhi\n* EXIT : 0\n" in setup.log(job_id)
    other = setup.submit(command("echo gone"))
    setup.link.fetch = lambda job, attempt, offset, max_bytes, done: done(
        errors.CommandError("job %d attempt %d is not known on this node" % (job, attempt)))
    setup.end(other, exit_status=0)
    assert setup.fields(other, ["status"]) == ["success"]


def test_an_attempt_its_node_does_not_know_is_node_lost_and_retried(setup):
    """A running attempt the node cannot account for ends NODE_LOST; attempts remain: retry."""
    job_id = setup.submit(command("x", max_attempts=2, retry_delay=1))
    setup.reopen(links={"node1": FakeLink("node1")})
    assert setup.fields(job_id, ["status", "reason", "attempt"]) == ["waiting", "NODE_LOST", 1]
    setup.host.advance(1)
    setup.settle()
    assert setup.link.launched[0]["attempt"] == 2
    setup.end(job_id, attempt=2)
    assert setup.fields(job_id, ["status"]) == ["success"]


def test_an_attempt_journaled_as_starting_is_launched_after_a_restart(setup):
    """Crash between journaling the start and the launch: the same attempt is launched."""
    setup.link.refuse = unreachable("node1")
    job_id = setup.submit(command("x"))
    assert setup.fields(job_id, ["status", "reason"]) == ["waiting", "NOXFER"]
    queue = setup.queue
    with queue._lock:  # as if the process died after journaling the start
        job = queue._jobs[job_id]
        job.ops[0].exec_state = dict(job.ops[0].exec_state, state="starting", attempt=1)
        job.ops[0].status = "running"
        queue._record_state_unlocked(job)
    queue.wait_durable()
    setup.reopen(links={"node1": FakeLink("node1")})
    assert [s["attempt"] for s in setup.link.launched] == [1]
    setup.end(job_id)
    assert setup.fields(job_id, ["status", "attempt"]) == ["success", 1]


def test_an_unreachable_node_does_not_use_up_an_attempt(setup):
    """NOXFER: the start is tried again after a delay with the same attempt number."""
    setup.link.refuse = unreachable("node1")
    job_id = setup.submit(command("x", max_attempts=1))
    assert setup.fields(job_id, ["status", "reason", "attempt"]) == ["waiting", "NOXFER", 0]
    assert setup.log(job_id).count(b"\n* NOXFER : cannot start on node1: node node1 "
                                   b"unreachable (tried again in ") == 1
    setup.link.refuse = None
    setup.host.advance(5)
    setup.settle()
    assert setup.link.launched[0]["attempt"] == 1
    assert setup.log(job_id).count(b"* START") == 2  # the first one, then the one that ran
    setup.end(job_id)
    assert setup.fields(job_id, ["status"]) == ["success"]


def test_a_node_out_of_a_resource_does_not_fail_the_start(setup):
    """A start the node refused for want of a resource (its disk full: the error crossed
    the wire by class name) waits and is tried again, like NOXFER, uncounted; a start
    refused otherwise is INTERR (test_signal_timeout_and_refusal_give_their_reasons)."""
    setup.link.refuse = errors.decode_exception(errors.encode_exception(
        errors.command_start_error("job 1 attempt 1: no room for its result",
                                   OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))))
    job_id = setup.submit(command("x", max_attempts=1))
    assert setup.fields(job_id, ["status", "reason", "attempt"]) == ["waiting", "NOXFER", 0]
    assert b"no room for its result: No space left on device (tried again in " in setup.log(
        job_id)
    setup.link.refuse = None
    setup.host.advance(5)
    setup.settle()
    assert setup.link.launched[0]["attempt"] == 1
    setup.end(job_id)
    assert setup.fields(job_id, ["status", "attempt"]) == ["success", 1]


def test_a_stop_the_node_could_not_take_is_sent_again_when_it_answers(setup):
    """A cancel (or hold) whose terminate found the node down is not lost: it goes again
    when the node answers again (its node_info, or news of the attempt), once."""
    job_id = setup.submit(command("sleep 60"))
    setup.link.refuse_control = unreachable("node1")
    setup.queue.cancel_job(job_id)
    setup.settle()
    assert setup.link.controls == [(job_id, 1, "terminate", None)]
    setup.link.refuse_control = None
    setup.link.answers_again()
    setup.settle()
    assert setup.link.controls == [(job_id, 1, "terminate", None)] * 2
    setup.link.answers_again()  # sent: not again
    setup.settle()
    assert len(setup.link.controls) == 2
    setup.end(job_id, exit_status=None, signal=15)
    assert setup.fields(job_id, ["status", "reason"]) == ["canceled", "KILLED"]
    held = setup.submit(command("sleep 60"))
    setup.link.refuse_control = unreachable("node1")
    setup.queue.hold_job(held)
    setup.settle()
    setup.link.refuse_control = None
    setup.write(held, b"still running\n")  # news of the attempt: the node answers
    assert setup.link.controls[-2:] == [(held, 1, "terminate", None)] * 2


def test_a_start_whose_answer_was_lost_is_killed_once_its_job_was_canceled(setup):
    """NOXFER: the start may have reached the node. If the job is canceled meanwhile, that
    attempt is killed when the node reports it, or when the retry falls due; if the job
    still wants it, the retry adopts it (the same attempt number) and nothing is killed."""
    setup.link.refuse = unreachable("node1")
    reported = setup.submit(command("sleep 60"))
    timed = setup.submit(command("sleep 60"))
    adopted = setup.submit(command("sleep 60"))
    assert {setup.fields(j, ["reason"])[0] for j in (reported, timed, adopted)} == {"NOXFER"}
    setup.link.refuse = None
    for job_id in (reported, timed):
        setup.queue.cancel_job(job_id)
        assert setup.fields(job_id, ["status"]) == ["canceled"]
    setup.link.run_unannounced(reported, 1)
    setup.link.run_unannounced(adopted, 1)
    setup.settle()
    assert setup.link.controls == [(reported, 1, "kill", None)]
    setup.host.advance(5)  # (reported's retry kills it again: harmless, it ended)
    setup.settle()
    assert set(setup.link.controls) == {(reported, 1, "kill", None), (timed, 1, "kill", None)}
    assert [s["job"] for s in setup.link.launched] == [adopted]
    assert setup.fields(adopted, ["status", "attempt", "pid"]) == ["running", 1, 4242]
    setup.end(adopted)
    assert setup.fields(adopted, ["status"]) == ["success"]


def test_a_job_canceled_while_its_start_fails_ends_canceled_and_the_start_is_fenced(setup):
    """Cancel while the launch is under way, then the launch fails (the node went down):
    the job ends canceled (not back to waiting for a retry that would run it), and the
    attempt, which may have reached the node, is killed there."""
    setup.link.held_launches = []
    job_id = setup.submit(command("sleep 60"))
    (spec, done), = setup.link.held_launches
    setup.queue.cancel_job(job_id)
    setup.settle()
    assert setup.fields(job_id, ["status"]) == ["canceling"]
    done(unreachable("node1"))
    setup.settle()
    assert setup.fields(job_id, ["status", "reason"]) == ["canceled", "KILLED"]
    assert setup.link.controls == [(job_id, 1, "kill", None)]
    setup.host.advance(120)
    setup.settle()
    assert setup.fields(job_id, ["status"]) == ["canceled"]
    assert len(setup.link.held_launches) == 1


def test_a_cancel_durable_while_the_start_fails_is_not_undone_by_the_retry(setup):
    """The start fails after the cancel was taken but before the runner heard of it (it
    hears once the cancel is durable): the job still ends canceled, never started again."""
    setup.link.held_launches = []
    job_id = setup.submit(command("sleep 60"))
    (spec, done), = setup.link.held_launches
    setup.queue.cancel_job(job_id)
    setup.queue.wait_durable()  # the runner's stop is queued on the host, not run yet
    done(unreachable("node1"))
    setup.settle()
    assert setup.fields(job_id, ["status", "reason"]) == ["canceled", "KILLED"]
    setup.host.advance(120)
    setup.settle()
    assert setup.fields(job_id, ["status"]) == ["canceled"]
    assert len(setup.link.held_launches) == 1


def test_a_job_held_while_its_start_fails_stays_held_and_its_start_is_fenced(setup):
    """Held while the launch is under way, then the launch fails: the job is queued and
    held (not waiting for a retry), the attempt that may have reached the node is killed
    there, and once released the next attempt, numbered after it, runs."""
    setup.link.held_launches = []
    job_id = setup.submit(command("sleep 60"))
    (spec, done), = setup.link.held_launches
    assert setup.queue.hold_job(job_id)[0]
    setup.queue.wait_durable()
    done(unreachable("node1"))
    setup.settle()
    assert setup.fields(job_id, ["status"]) == ["queued"]
    assert setup.link.controls == [(job_id, 1, "kill", None)]
    setup.host.advance(120)
    setup.settle()
    assert len(setup.link.held_launches) == 1
    setup.link.held_launches = None
    assert setup.queue.release_job(job_id)[0]
    setup.settle()
    assert [s["attempt"] for s in setup.link.launched] == [2]
    setup.end(job_id, 2)
    assert setup.fields(job_id, ["status", "attempt"]) == ["success", 1]  # the held one: uncounted


def held_start_whose_kill_fails(setup, started=False):
    """A job held while its launch is under way; the launch fails (the node died) and
    so does the kill of that start: the job's id. With started, the node holds the
    attempt (without having said so)."""
    setup.link.held_launches = []
    job_id = setup.submit(command("sleep 60"))
    (_, done), = setup.link.held_launches
    assert setup.queue.hold_job(job_id)[0]
    setup.queue.wait_durable()
    setup.link.refuse_control = unreachable("node1")
    if started:
        setup.link.known[(job_id, 1)] = {"job": job_id, "attempt": 1, "pid": 7,
                                         "result": None}
    done(unreachable("node1"))
    setup.settle()
    assert setup.link.controls == [(job_id, 1, "kill", None)]  # refused: the node is down
    setup.link.refuse_control = None
    return job_id


def test_a_held_start_whose_kill_found_the_node_down_is_killed_when_it_reports(setup):
    """Held while its launch is under way, the launch failing because the node died: the
    kill of that start finds the node down too. The node is back before it was ever seen
    unreachable (a quick restart): the attempt it reports (a "started" event, as its
    resync sends) is killed then, not left running under a held job."""
    job_id = held_start_whose_kill_fails(setup)
    setup.link.held_launches = None
    setup.link.run_unannounced(job_id, 1)
    setup.settle()
    assert setup.link.controls[1:] == [(job_id, 1, "kill", None)]
    assert setup.fields(job_id, ["status"]) == ["queued"]


def test_a_kill_the_node_missed_is_sent_again_when_it_answers_again(setup):
    """The same, but the node never restarted (its connection failed, not the node): it
    sends no "started" event. When it answers again, what it holds is listed and the
    attempt the master does not own is killed (an ended one it missed the forget of is
    forgotten: test_a_node_answering_again_forgets_an_ended_attempt_it_was_not_told_to)."""
    job_id = held_start_whose_kill_fails(setup, started=True)
    setup.link.answers_again()
    setup.settle()
    assert setup.link.controls == [(job_id, 1, "kill", None)] * 2


def test_a_node_answering_again_forgets_an_ended_attempt_it_was_not_told_to(setup):
    """An attempt whose end was recorded but whose forget the node never got (its
    connection failed): when the node answers again it is forgotten there."""
    job_id = setup.submit(command("true"))
    setup.end(job_id)
    assert setup.link.forgotten == [(job_id, 1)]
    setup.link.known[(job_id, 1)] = {"job": job_id, "attempt": 1, "pid": 7,
                                     "result": {"exit_status": 0}}  # the forget was lost
    setup.link.answers_again()
    setup.settle()
    assert setup.link.forgotten == [(job_id, 1)] * 2 and setup.link.controls == []
    assert setup.fields(job_id, ["status"]) == ["success"]


def test_a_job_held_after_its_start_failed_has_that_start_fenced_when_due(setup):
    """NOXFER, then a hold: when the retry falls due the start that may have reached the
    node is killed there (it must not run while the job is held) and its number is
    spent: once released, the next attempt, numbered after it, runs."""
    setup.link.refuse = unreachable("node1")
    job_id = setup.submit(command("sleep 60"))
    assert setup.fields(job_id, ["status", "reason"]) == ["waiting", "NOXFER"]
    setup.link.refuse = None
    assert setup.queue.hold_job(job_id)[0]
    setup.settle()
    setup.host.advance(5)
    setup.settle()
    assert setup.link.controls == [(job_id, 1, "kill", None)] and setup.link.launched == []
    assert setup.queue.release_job(job_id)[0]
    setup.settle()
    assert [s["attempt"] for s in setup.link.launched] == [2]
    setup.end(job_id, 2)
    assert setup.fields(job_id, ["status", "attempt"]) == ["success", 1]  # 1 uncounted


def test_an_attempt_whose_start_answer_was_lost_is_kept_for_the_retry_to_adopt(setup):
    """NOXFER, but the start reached the node: the node reports the attempt and its end
    (after a restart); the runner neither kills nor forgets it, and the retry, with the
    same number, adopts it and records its true end: the command ran once."""
    setup.link.refuse = unreachable("node1")
    job_id = setup.submit(command("exit 7", max_attempts=3))
    setup.link.refuse = None
    setup.link.run_unannounced(job_id, 1)
    setup.end(job_id, 1, exit_status=7)
    assert setup.link.controls == [] and setup.link.forgotten == []
    setup.host.advance(5)
    setup.settle()
    assert setup.fields(job_id, ["exit_status"]) == [7]
    assert [s["attempt"] for s in setup.link.launched] == [1]  # answered with the ended one
    assert setup.log(job_id).count(b"* EXIT : 7") == 1


def test_noxfer_backs_off_doubling_up_to_a_minute(setup):
    """Starts that keep failing are tried again after 5, 10, 20, 40, 60, 60 s; none uses
    an attempt; the job starts once the node answers."""
    setup.link.refuse = unreachable("node1")
    job_id = setup.submit(command("x", max_attempts=1))
    delays = []
    for _ in range(6):
        delays.append(setup.host.pending_timers()[-1])
        setup.host.advance(delays[-1])
        setup.settle()
    assert delays == [5, 10, 20, 40, 60, 60]
    assert setup.fields(job_id, ["status", "reason", "attempt"]) == ["waiting", "NOXFER", 0]
    setup.link.refuse = None
    setup.host.advance(60)
    setup.settle()
    assert [s["attempt"] for s in setup.link.launched] == [1]


def test_command_opcodes_are_validated_at_submit(setup):
    """Bad parameters and unknown nodes are refused before a job exists; so is a command
    or variable longer than an exec takes (the largest that fits is taken)."""
    bad = [command(""), command([]), command("x", dir="tmp"), command("x", env={"A=": "1"}),
           command("x", progress_pattern="no token"), command("x", max_attempts=0),
           command("x", success_exit_codes=[256]), command("x", node="nowhere"),
           command("x", timeout=-1), command("x", run_as="bad user")]
    for op in bad:
        with pytest.raises(errors.OpPrereqError):
            setup.queue.submit_job([op])
    big = "x" * commandjob.MAX_ARG_BYTES  # no exec takes a string this long
    size = commandjob.MAX_ARG_BYTES
    for op, what in ((command("echo " + big), "the command is %d" % (size + 5)),
                     (command(["echo", "a", big]), "argument 2 is %d" % size),
                     (command("x", env={"BIG": big}), "variable BIG is %d" % (size + 4))):
        with pytest.raises(errors.OpPrereqError, match=what + " bytes: Linux starts no "):
            setup.queue.submit_job([op])
    assert setup.queue.query_jobs([], ["id"]) == []
    setup.submit(command("echo " + "x" * (commandjob.MAX_ARG_BYTES - 6)))  # the largest


def test_a_queue_without_a_runner_refuses_command_jobs(open_queue):
    """Without a command runner, submitting a command job is the caller's error."""
    queue = open_queue()
    with pytest.raises(errors.OpPrereqError, match="runs no command jobs"):
        queue.submit_job([command("true")])


def test_a_command_opcode_after_another_opcode_runs_in_order(setup):
    """A job mixing opcodes runs its command after the preceding opcode succeeded."""
    job_id = setup.submit({"OP_ID": "OP_TEST_JQUEUE", "result": 1}, command("x"))
    assert setup.link.launched[0]["job"] == job_id
    setup.end(job_id)
    assert setup.fields(job_id, ["status", "opstatus"]) == ["success",
                                                           ["success", "success"]]


def test_running_lists_attempts_with_their_node_and_pid(setup):
    """QueryRunning's rows: job, attempt, node, pid and the memory its processes hold as
    the node last said; an unknown node is not found."""
    job_id = setup.submit(command("sleep 1"))
    rows = setup.queue.query_running()
    assert [(r["job"], r["attempt"], r["node"], r["pid"]) for r in rows] == [
        (job_id, 1, "node1", 1001)]
    assert setup.queue.query_running("node1") == rows
    assert rows[0]["rss"] is None  # until the node looked
    assert setup.fields(job_id, ["rss"]) == [None]
    setup.link._listener.link_event("node1", ("usage", job_id, 1, 5 << 20))
    setup.settle()
    assert [r["rss"] for r in setup.queue.query_running()] == [5 << 20]
    assert setup.fields(job_id, ["rss"]) == [5 << 20]  # the job's field too
    with pytest.raises(errors.OpPrereqError, match="unknown node elsewhere"):
        setup.queue.query_running("elsewhere")
    setup.end(job_id)
    assert setup.queue.query_running() == []
    assert setup.fields(job_id, ["rss"]) == [None]


def test_status_constants_cover_every_reason():
    """Every reason the runner can give is one of the documented words."""
    assert {"OK", "FAILED", "TIMEOUT", "KILLED", "INTERR", "NOXFER", "NODE_LOST"} <= \
        constants.REASONS


def test_a_full_disk_delays_output_and_ends_but_loses_nothing(setup, monkeypatch):
    """While the log cannot be written, output and the end wait and are tried again."""
    job_id = setup.submit(command("x"))
    real_write = setup.queue._logs.write
    full = [True]

    def write(*args):
        if full[0]:
            raise OSError(28, "No space left on device")
        return real_write(*args)
    monkeypatch.setattr(setup.queue._logs, "write", write)
    setup.write(job_id, b"kept\n")
    setup.end(job_id, exit_status=0)
    assert setup.fields(job_id, ["status"]) == ["running"]
    full[0] = False
    setup.host.advance(1)
    setup.settle()
    setup.host.advance(1)
    setup.settle()
    assert setup.fields(job_id, ["status", "exit_status"]) == ["success", 0]
    log = setup.log(job_id)
    assert log.count(b"kept\n") == 1 and b"* EXIT : 0" in log


def test_starts_refused_by_a_full_disk_wait_on_one_timer_per_node(setup, monkeypatch,
                                                                  caplog):
    """While a full disk refuses the banners, the starts of ten submissions are tried
    again by one timer (one log line), not one each; they all start once there is room."""
    real_write = setup.queue._logs.write
    full = [True]

    def write(*args):
        if full[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(*args)
    monkeypatch.setattr(setup.queue._logs, "write", write)
    with caplog.at_level("WARNING", logger="jqueue.run.commands"):
        ids = [setup.submit(command("x%d" % i)) for i in range(10)]
        setup.host.advance(1)
        setup.settle()
    assert len([r for r in caplog.records if "cannot start job" in r.getMessage()]) == 2
    assert len(setup.host._timers) == 1
    full[0] = False
    setup.host.advance(1)
    setup.settle()
    assert len(setup.link.launched) == 4  # the node's slots
    assert [setup.fields(i, ["status"])[0] for i in ids].count("running") == 4


def test_a_command_jobs_life_in_the_event_stream(setup):
    """NEW, SEND (attempt 1 of 2), RUN with the pid, FAILED, RETRY, ..., OK, DONE."""
    job_id = setup.submit(command("x", max_attempts=2, retry_delay=1))
    setup.end(job_id, exit_status=3)
    setup.host.advance(1)
    setup.settle()
    setup.end(job_id, attempt=2, exit_status=0)
    seen = [(e["kind"], e["status"], e["node"]) for e in
            setup.queue.read_events(0, {"job": job_id})["events"]]
    assert seen == [("job", "NEW", None), ("attempt", "SEND", "node1"),
                    ("attempt", "RUN", "node1"), ("attempt", "FAILED", "node1"),
                    ("attempt", "RETRY", "node1"), ("job", "WAIT", None),
                    ("attempt", "SEND", "node1"), ("attempt", "RUN", "node1"),
                    ("attempt", "OK", "node1"), ("job", "DONE", None)]


# Placement (affinity, drain) and node health (heartbeats, lost grace, fencing)


def cluster_setup(open_queue, clock, tmp_path, tags, heartbeats=False, lost_grace=300):
    """A runner over nodes with tags: {"a": ("LINUX",), "b": ("LINUX", "24GB")}."""
    setup = Setup.__new__(Setup)
    setup.clock, setup.host = clock, FakeHost(clock)
    setup.links = {name: FakeLink(name, 4, tags=node_tags, heartbeats=heartbeats)
                   for name, node_tags in tags.items()}
    setup.open_queue, setup.tmp_path, setup.rand = open_queue, tmp_path, lambda: 1.0
    setup.queue = open_queue(tmp_path / "queue", commands=lambda queue: CommandRunner(
        queue, setup.host, list(setup.links.values()), sorted(tags)[0], rand=setup.rand,
        lost_grace=lost_grace))
    setup.settle()
    return setup


def launched_on(setup, job_id):
    return [name for name, link in setup.links.items()
            if any(spec["job"] == job_id for spec in link.launched)]


def test_affinity_is_a_subset_of_the_nodes_tags(open_queue, clock, tmp_path):
    """LINUX,24GB only ever on b; LINUX goes to the least loaded of a and b."""
    setup = cluster_setup(open_queue, clock, tmp_path, {"a": ["LINUX"], "b": ["LINUX", "24GB"]})
    big = [setup.submit(command("x", affinity="LINUX, 24GB")) for _ in range(3)]
    assert all(launched_on(setup, job_id) == ["b"] for job_id in big)
    small = setup.submit(command("x", affinity=["LINUX"]))
    assert launched_on(setup, small) == ["a"]  # b runs three already
    assert setup.fields(small, ["node"]) == ["a"]


def test_a_job_waits_for_a_node_with_its_tags_then_runs(open_queue, clock, tmp_path):
    """No node holds GPU: the job stays queued (NO_MATCHING_NODE, an event); once a node
    gets the tag it runs there."""
    setup = cluster_setup(open_queue, clock, tmp_path, {"a": ["LINUX"], "b": []})
    job_id = setup.submit(command("x", affinity="GPU"))
    assert setup.fields(job_id, ["status", "reason"]) == ["queued", "NO_MATCHING_NODE"]
    assert launched_on(setup, job_id) == []
    assert "NO_MATCHING_NODE" in [e["status"] for e in
                                  setup.queue.read_events(0, {"job": job_id})["events"]]
    setup.links["b"].tags = frozenset(["GPU"])
    setup.queue.commands.nodes_changed()
    setup.settle()
    assert launched_on(setup, job_id) == ["b"]


def test_node_and_affinity_that_contradict_are_refused(open_queue, clock, tmp_path):
    """node=a with an affinity a lacks: the caller's error at submit, nothing queued."""
    setup = cluster_setup(open_queue, clock, tmp_path, {"a": ["LINUX"], "b": ["24GB"]})
    with pytest.raises(errors.OpPrereqError, match="node a has not the tags 24GB"):
        setup.queue.submit_job([command("x", node="a", affinity="24GB")])
    assert setup.queue.query_jobs([], ["id"]) == []


def test_a_drained_node_starts_nothing_new(open_queue, clock, tmp_path):
    """Drained: pinned jobs wait, floating ones go elsewhere; undrained, the pinned run."""
    setup = cluster_setup(open_queue, clock, tmp_path, {"a": ["X"], "b": ["X"]})
    setup.links["a"].drained = True
    setup.queue.commands.nodes_changed()
    pinned = setup.submit(command("x", node="a"))
    floating = [setup.submit(command("x", affinity="X")) for _ in range(3)]
    assert launched_on(setup, pinned) == []
    assert all(launched_on(setup, job_id) == ["b"] for job_id in floating)
    setup.links["a"].drained = False
    setup.queue.commands.nodes_changed()
    setup.settle()
    assert launched_on(setup, pinned) == ["a"]


def test_an_unreachable_node_is_noping_its_jobs_wait_or_move(open_queue, clock, tmp_path):
    """Missing 3 heartbeats: NOPING; a pinned job waits, an affinity job moves; UP again."""
    setup = cluster_setup(open_queue, clock, tmp_path, {"a": ["X"], "b": ["X"]},
                          heartbeats=True)
    setup.links["b"].slots = 0  # b runs nothing for now: jobs queue there
    setup.queue.commands.nodes_changed()
    for _ in range(4):  # a keeps answering, b does not
        setup.host.advance(2)
        setup.links["a"].heard(setup.host)
    setup.settle()
    node_events = setup.queue.read_events(0, {"kind": "node"})["events"]
    assert [(e["node"], e["status"]) for e in node_events] == [("b", "NOPING")]
    pinned = setup.submit(command("x", node="b"))
    moved = setup.submit(command("x", affinity="X"))
    assert launched_on(setup, pinned) == [] and launched_on(setup, moved) == ["a"]
    assert setup.fields(pinned, ["status", "reason"]) == ["queued", "NOPING"]
    setup.links["b"].slots = 4
    setup.links["b"].heard(setup.host)
    setup.host.advance(2)
    setup.settle()
    assert launched_on(setup, pinned) == ["b"]
    assert [e["status"] for e in setup.queue.read_events(0, {"kind": "node"})["events"]] == [
        "NOPING", "UP"]


def test_a_node_back_within_the_grace_reconciles_its_attempt(open_queue, clock, tmp_path):
    """The node is lost while its command runs and ends meanwhile: once it answers again
    the true exit status is recorded, and the command ran once."""
    setup = cluster_setup(open_queue, clock, tmp_path, {"a": ["X"], "b": ["X"]},
                          heartbeats=True)
    job_id = setup.submit(command("x", node="b"))
    for _ in range(4):
        setup.host.advance(2)
        setup.links["a"].heard(setup.host)
    setup.settle()
    assert not setup.links["b"].reachable
    assert setup.fields(job_id, ["status", "attempt"]) == ["running", 1]
    link = setup.links["b"]
    link.known[(job_id, 1)]["result"] = {"exit_status": 5, "signal": None, "timed_out": False,
                                         "error": None, "ended": 2.0}
    link.heard(setup.host)
    setup.host.advance(2)
    setup.settle()
    assert setup.fields(job_id, ["status", "exit_status", "attempt", "node"]) == [
        "error", 5, 1, "b"]
    assert len(link.launched) == 1 and setup.links["a"].launched == []


def test_past_the_grace_the_attempt_runs_elsewhere_and_the_old_one_is_killed(
        open_queue, clock, tmp_path):
    """Lost for longer than lost_grace: NODE_LOST, attempt 2 on another node; when the
    lost node comes back, its attempt (still running there) is killed: never twice."""
    setup = cluster_setup(open_queue, clock, tmp_path, {"a": ["X"], "b": ["X"]},
                          heartbeats=True, lost_grace=10)
    setup.links["a"].drained = True
    setup.queue.commands.nodes_changed()
    job_id = setup.submit(command("x", affinity="X", max_attempts=2, retry_delay=1))
    assert launched_on(setup, job_id) == ["b"]
    setup.links["a"].drained = False
    setup.queue.commands.nodes_changed()
    for _ in range(10):  # b silent: unreachable after 3 missed heartbeats, lost 10 s later
        setup.host.advance(2)
        setup.links["a"].heard(setup.host)
        setup.settle()
    statuses = [(e["node"], e["status"]) for e in
                setup.queue.read_events(0, {"job": job_id, "kind": "attempt"})["events"]]
    assert ("b", "NODE_LOST") in statuses and statuses[-2:] == [("a", "SEND"), ("a", "RUN")]
    assert [spec["attempt"] for spec in setup.links["a"].launched] == [2]
    b = setup.links["b"]
    b.heard(setup.host)
    setup.host.advance(2)
    setup.links["a"].heard(setup.host)
    setup.settle()
    assert (job_id, 1, "kill", None) in b.controls
    setup.end(job_id, attempt=2, node="a")
    assert setup.fields(job_id, ["status", "node", "attempt"]) == ["success", "a", 2]


def test_at_start_an_attempt_nobody_owns_is_killed(open_queue, clock, tmp_path):
    """A node holding an attempt the journal does not have (a crash hid it) gets it killed
    when the master starts, and forgotten once it ended."""
    link = FakeLink("node1")
    link.known[(77, 1)] = {"job": 77, "attempt": 1, "pid": 5, "pgid": None, "cgroup": None,
                           "started": 1.0, "deadline": None, "output_size": 0,
                           "result": None}
    setup = Setup.__new__(Setup)
    setup.clock, setup.host, setup.links = clock, FakeHost(clock), {"node1": link}
    setup.open_queue, setup.tmp_path, setup.rand = open_queue, tmp_path, lambda: 1.0
    setup.open()
    assert (77, 1, "kill", None) in link.controls
    link.end(77, 1, exit_status=None, signal=9)
    setup.settle()
    assert (77, 1) in link.forgotten


# Hold, release, reset and retry of command jobs (jqueue.jobcontrol)


def test_a_hold_stops_the_running_command_and_release_runs_it_again(setup):
    """Held: TERM (then KILL after the grace) through the node; the attempt ends, does
    not count, and the job is queued and held; released, attempt 2 runs as the 1st."""
    job_id = setup.submit(command("sleep 60", max_attempts=1))
    ok, message = setup.queue.hold_job(job_id)
    setup.settle()
    assert ok and message == "Job %d held" % job_id
    assert setup.link.controls == [(job_id, 1, "terminate", None)]
    setup.end(job_id, exit_status=None, signal=15)
    assert setup.fields(job_id, ["status", "held", "attempt", "reason"]) == [
        "queued", True, 0, "KILLED"]
    assert b"* HOLD : stopped by a hold; the attempt does not count" in setup.log(job_id)
    assert setup.link.forgotten == [(job_id, 1)]
    assert len(setup.link.launched) == 1
    setup.queue.release_job(job_id)
    setup.settle()
    assert [s["attempt"] for s in setup.link.launched] == [1, 2]
    # the log's banner says the start number, which the command's JQ_ATTEMPT has
    assert b"ATTEMPT : 1/1 (start 2)\n" in setup.log(job_id).split(b"* HOLD")[1]
    sends = [e["message"] for e in setup.queue.read_events(0, {"job": job_id})["events"]
             if e["status"] in ("SEND", "RUN")]  # as the banners count, the start number too
    assert sends == ["attempt 1 of 1", "attempt 1 of 1 pid 1001", "attempt 1 of 1 (start 2)",
                     "attempt 1 of 1 (start 2) pid 1002"]
    setup.end(job_id, attempt=2)
    assert setup.fields(job_id, ["status", "attempt"]) == ["success", 1]


def test_a_held_command_waiting_for_a_slot_does_not_start(open_queue, clock, tmp_path):
    """A job pending on a busy node and held meanwhile is passed over when a slot frees."""
    setup = Setup(open_queue, clock, tmp_path, slots=1)
    blocker = setup.submit(command("sleep 60"))
    held = setup.submit(command("touch /x"))
    setup.queue.hold_job(held)
    setup.end(blocker)
    setup.settle()
    assert [s["job"] for s in setup.link.launched] == [blocker]
    setup.queue.release_job(held)
    setup.settle()
    assert [s["job"] for s in setup.link.launched] == [blocker, held]


def test_reset_counts_attempts_anew_and_retry_keeps_the_counter(setup):
    """Reset: the attempts start again from 1 with every retry available (node attempt
    numbers go on, never reused); retry: one more attempt, the counter kept, and counted
    in all (attempt 3 of 3, not of 2) until a reset."""
    job_id = setup.submit(command("false", max_attempts=2, retry_delay=0))
    setup.end(job_id, exit_status=1)
    setup.host.advance(1)
    setup.settle()
    setup.end(job_id, attempt=2, exit_status=1)
    assert setup.fields(job_id, ["status", "attempt"]) == ["error", 2]
    assert setup.queue.retry_job(job_id)[0]
    setup.settle()
    assert setup.fields(job_id, ["status", "attempt", "max_attempts"]) == ["running", 3, 3]
    setup.end(job_id, attempt=3, exit_status=1)
    assert setup.fields(job_id, ["status", "attempt"]) == ["error", 3]  # no retry after it
    assert b"* JOB : %d  ATTEMPT : 3/3\n" % job_id in setup.log(job_id)
    assert setup.queue.reset_job(job_id)[0]
    setup.settle()
    assert setup.fields(job_id, ["status", "attempt", "max_attempts"]) == ["running", 1, 2]
    assert [s["attempt"] for s in setup.link.launched] == [1, 2, 3, 4]
    setup.end(job_id, attempt=4, exit_status=1)
    setup.host.advance(1)
    setup.settle()
    assert setup.fields(job_id, ["status", "attempt"]) == ["running", 2]  # retried anew
    setup.end(job_id, attempt=5)
    assert setup.fields(job_id, ["status"]) == ["success"]
    log = setup.log(job_id)
    assert b"* RETRY : by request; one more attempt" in log
    assert b"* RESET : by request; the job runs again, its attempts counted anew" in log


def test_jobs_in_a_group_need_the_groups_tags_too(open_queue, clock, tmp_path):
    """A group's affinity is added to its jobs' own (nearest group first): a job needing
    LINUX in a group needing 24GB inside one needing GPU runs only where all three are."""
    setup = cluster_setup(open_queue, clock, tmp_path, {
        "a": ["LINUX", "24GB"], "b": ["LINUX", "24GB", "GPU"], "c": ["GPU"]})
    queue = setup.queue
    outer = queue.submit_job([{"OP_ID": "OP_GROUP", "title": "render", "affinity": "GPU"}])
    inner = queue.submit_job([{"OP_ID": "OP_GROUP", "title": "shot", "affinity": ["24GB"]}],
                             parent=outer)
    jobs = [None] * 3
    jobs[0] = queue.submit_job([command("x", affinity="LINUX")], parent="render|shot")
    jobs[1] = queue.submit_job([command("x")], parent=inner)
    jobs[2] = queue.submit_job([command("x", affinity="GPU")], parent=outer)
    setup.settle()
    affinities = [queue.query_jobs([j], ["ops"])[0][0][0]["affinity"] for j in jobs]
    assert affinities == [["LINUX", "24GB", "GPU"], ["24GB", "GPU"], ["GPU"]]
    assert [launched_on(setup, j) for j in jobs] == [["b"], ["b"], launched_on(setup, jobs[2])]
    assert launched_on(setup, jobs[2])[0] in ("b", "c")
    before = queue.query_jobs([], ["id"])
    with pytest.raises(errors.OpPrereqError, match="parent: the group's tags: .*node a has "
                       "not the tags GPU"):
        queue.submit_job([command("x", node="a")], parent=outer)  # a lacks GPU
    assert queue.query_jobs([], ["id"]) == before
    with pytest.raises(errors.OpPrereqError, match="affinity"):
        queue.submit_job([{"OP_ID": "OP_GROUP", "title": "bad", "affinity": 7}])


def wait_fields(setup, job_id):
    return tuple(setup.fields(job_id, ["wait_reason", "wait_message"]))


def test_wait_reason_says_why_a_pending_command_does_not_start(open_queue, clock, tmp_path):
    """Its node's slots busy (the jobs there, those before it), its hold, its start time,
    a job it depends on, its back-off: each a code and words; null once it runs or when
    nothing keeps it back."""
    setup = Setup(open_queue, clock, tmp_path, slots=1)
    blocker = setup.submit(command("sleep 60"))
    assert wait_fields(setup, blocker) == (None, None)
    first, second = setup.submit(command("a")), setup.submit(command("b"))
    assert wait_fields(setup, first) == ("SLOTS", "the slot of node1 is busy (job %d)"
                                         % blocker)
    assert wait_fields(setup, second) == (
        "SLOTS", "the slot of node1 is busy (job %d); 1 job before it in node1's queue"
        % blocker)
    setup.queue.hold_job(second)
    assert wait_fields(setup, second) == ("HELD", "held: it starts once released")
    later = setup.queue.submit_job([command("c")], not_before=clock.now + 60)
    assert wait_fields(setup, later) == ("NOT_BEFORE",
                                         "its start time has not come (not_before)")
    after = setup.submit(command("d", depends=[[first, []]]))
    assert wait_fields(setup, after) == ("DEPENDENCY", "it waits for job %d to end" % first)
    retried = setup.submit(command("false", max_attempts=2, retry_delay=5, priority=-10))
    setup.end(blocker)
    assert setup.fields(retried, ["status"]) == ["running"]
    assert wait_fields(setup, retried) == (None, None)
    setup.end(retried, exit_status=1)
    assert wait_fields(setup, retried) == (
        "BACKOFF", "its next attempt waits out the back-off after one that ended FAILED "
        "(retry_at)")
    assert setup.fields(first, ["status", "wait_reason"]) == ["running", None]


def test_wait_reason_names_the_nodes_that_keep_a_command_back(open_queue, clock, tmp_path):
    """No node with its tags; the nodes with them drained or not answering (each one's
    reason); its own node drained; nothing once one can start it."""
    setup = cluster_setup(open_queue, clock, tmp_path, {"a": ["X"], "b": ["X"]})
    gpu = setup.submit(command("x", affinity="GPU"))
    assert wait_fields(setup, gpu) == ("NO_MATCHING_NODE", "no node has the tags GPU")
    setup.links["a"].drained = True
    setup.links["b"].reachable = False
    setup.queue.commands.nodes_changed()
    setup.settle()
    tagged = setup.submit(command("x", affinity="X"))
    pinned = setup.submit(command("x", node="a"))
    assert wait_fields(setup, tagged) == (
        "NODE_UNAVAILABLE", "every node with the tags X is unavailable: a is drained (no "
        "new commands start there); b does not answer")
    assert wait_fields(setup, pinned) == ("NODE_UNAVAILABLE",
                                          "a is drained (no new commands start there)")
    setup.links["a"].drained = False
    setup.links["b"].reachable = True
    setup.queue.commands.nodes_changed()
    setup.settle()
    assert launched_on(setup, pinned) == ["a"] and launched_on(setup, tagged) != []
    assert wait_fields(setup, pinned) == (None, None)
    assert wait_fields(setup, gpu)[0] == "NO_MATCHING_NODE"
    on_a = [pinned] + [setup.submit(command("x", node="a")) for _ in range(4)]
    assert wait_fields(setup, on_a[-1]) == (
        "SLOTS", "all 4 slots of a are busy (jobs %s)" % ", ".join(map(str, on_a[:4])))


def test_jobs_canceled_or_held_are_not_counted_before_a_waiting_one(open_queue, clock,
                                                                    tmp_path, monkeypatch):
    """Their entries stay in the node's queue until popped (for as long as the slots stay
    busy); "N jobs before it" counts only those that will start first, once the table of
    places is read again (here at each question)."""
    monkeypatch.setattr(commands, "PLACES_AGE", 0.0)
    setup = Setup(open_queue, clock, tmp_path, slots=1)
    blocker = setup.submit(command("sleep 60"))
    first, second, third = (setup.submit(command(c)) for c in ("a", "b", "c"))
    assert wait_fields(setup, third)[1].endswith("; 2 jobs before it in node1's queue")
    setup.queue.cancel_job(first)
    setup.queue.hold_job(second)
    setup.settle()
    assert wait_fields(setup, third) == (
        "SLOTS", "the slot of node1 is busy (job %d)" % blocker)


GiB = 1 << 30


def test_a_commands_memory_max_holds_its_share_of_its_nodes_memory(open_queue, clock,
                                                                   tmp_path):
    """8 GiB on node1: a 5 GiB job runs, a 4 GiB one waits for memory at the head of the
    queue (slots are free) and a job without a limit waits behind it, also after a
    restart; the first's end starts both. A job asking more than the node has is refused
    at submit."""
    setup = Setup(open_queue, clock, tmp_path, slots=4)
    setup.link.resources = {"mem_total": 8 * GiB}
    first = setup.submit(command("a", memory_max=5 * GiB))
    second = setup.submit(command("b", memory_max=4 * GiB))
    third = setup.submit(command("c"))
    assert [s["job"] for s in setup.link.launched] == [first]
    assert wait_fields(setup, second) == (
        "MEMORY", "its memory_max (4.0 GiB) and those of the commands running on node1 "
        "(job %d), 9.0 GiB in all, are more than its memory (8.0 GiB)" % first)
    assert wait_fields(setup, third) == (
        "MEMORY", "job %d, first in node1's queue, waits for memory (1 job before it in the "
        "queue); nothing behind it starts first: a command holding memory it needs has no "
        "timeout" % second)
    setup.reopen()  # the running attempt holds its memory again once reconciled
    setup.link.resources = {"mem_total": 8 * GiB}
    setup.queue.commands.nodes_changed()
    setup.settle()
    assert setup.fields(second, ["status"]) == ["queued"]
    setup.end(first)
    assert [s["job"] for s in setup.link.launched] == [first, second, third]
    with pytest.raises(errors.OpPrereqError, match=r"its memory_max \(9.0 GiB\) is more than "
                       r"the memory of node node1 \(8.0 GiB\)"):
        setup.queue.submit_job([command("d", memory_max=9 * GiB)])


def test_jobs_behind_one_waiting_for_memory_start_first_only_where_they_cannot_delay_it(
        open_queue, clock, tmp_path):
    """Backfill: 16 GiB; a 10 GiB job with a timeout runs, a 12 GiB one waits for it at
    the head. Behind it a 5 GiB job without a timeout would delay it (it waits); a 5 GiB
    one whose timeout ends before the first's starts; so do a 1 GiB one and one without a
    limit, which fit in what the head leaves free. Also after a restart."""
    setup = Setup(open_queue, clock, tmp_path, slots=5)
    setup.link.resources = {"mem_total": 16 * GiB}
    first = setup.submit(command("a", memory_max=10 * GiB, timeout=600))
    head = setup.submit(command("b", memory_max=12 * GiB))
    late = setup.submit(command("c", memory_max=5 * GiB))
    short = setup.submit(command("d", memory_max=5 * GiB, timeout=60))
    small = setup.submit(command("e", memory_max=GiB))
    free = setup.submit(command("f"))
    assert [s["job"] for s in setup.link.launched] == [first, short, small, free]
    sends = {e["job"]: e["message"] for e in setup.queue.read_events(0)["events"]
             if e["status"] == "SEND"}
    assert sends[first] == "attempt 1 of 1"
    assert sends[short] == "attempt 1 of 1 (backfill: ahead of job %d, which waits for " \
        "memory)" % head
    assert wait_fields(setup, late) == (
        "MEMORY", "job %d, first in node1's queue, waits for memory (1 job before it in the "
        "queue); it starts within 615s at the latest (by the timeouts of those running): a "
        "job behind it starts first if its timeout ends before then, or if it fits beside "
        "it" % head)
    setup.reopen()  # the running attempts are followed again, their ends known again
    setup.link.resources = {"mem_total": 16 * GiB}
    clock.advance(100)
    setup.queue.commands.nodes_changed()
    setup.settle()
    assert wait_fields(setup, late)[1].split("; ")[1].startswith("it starts within 515s ")
    setup.end(short)
    setup.end(first)
    assert [s["job"] for s in setup.link.launched][4:] == [head]
    assert setup.fields(late, ["status"]) == ["queued"]


def test_a_nodes_memory_reserve_is_kept_from_the_commands(setup):
    """10 GiB less 2 kept (memory_reserve, as the node says it): 8 GiB for commands."""
    setup.link.resources = {"mem_total": 10 * GiB, "mem_reserved": 2 * GiB}
    with pytest.raises(errors.OpPrereqError, match=r"its memory_max \(9.0 GiB\) is more than "
                       r"the memory of node node1 \(8.0 GiB\)"):
        setup.queue.submit_job([command("x", memory_max=9 * GiB)])
    first = setup.submit(command("a", memory_max=5 * GiB))
    second = setup.submit(command("b", memory_max=4 * GiB))
    assert [s["job"] for s in setup.link.launched] == [first]
    assert wait_fields(setup, second)[1].endswith("are more than its memory (8.0 GiB)")
    setup.link.resources = {"mem_total": 10 * GiB, "mem_reserved": None}  # an older node
    setup.queue.commands.nodes_changed()
    setup.settle()
    assert [s["job"] for s in setup.link.launched] == [first, second]


def test_without_a_known_memory_a_node_weighs_no_memory_max(setup):
    jobs = [setup.submit(command("a", memory_max=1 << 50)) for _ in range(2)]
    assert [s["job"] for s in setup.link.launched] == jobs


def test_an_affinity_goes_only_to_a_node_with_the_memory_it_asks(open_queue, clock,
                                                                 tmp_path):
    """a has 4 GiB, b 16: 8 GiB goes to b (a is less loaded); 32 GiB waits for a node
    that large (NO_MATCHING_NODE, saying the largest there is)."""
    setup = cluster_setup(open_queue, clock, tmp_path, {"a": ["X"], "b": ["X"]})
    setup.links["a"].resources = {"mem_total": 4 * GiB}
    setup.links["b"].resources = {"mem_total": 16 * GiB}
    setup.submit(command("x", node="b"))
    big = setup.submit(command("x", affinity="X", memory_max=8 * GiB))
    assert launched_on(setup, big) == ["b"]
    huge = setup.submit(command("x", affinity="X", memory_max=32 * GiB))
    assert launched_on(setup, huge) == []
    assert wait_fields(setup, huge) == (
        "NO_MATCHING_NODE", "no node with the tags X has the 32.0 GiB its memory_max asks "
        "(the largest: 16.0 GiB)")
    small = setup.submit(command("x", affinity="X", memory_max=GiB))
    assert launched_on(setup, small) == ["a"]


def test_a_node_degraded_by_its_epilog_stays_so_across_a_restart_until_one_succeeds(setup):
    """The mark comes back from the event stream when the queue opens again (a restart,
    a failover's new master), and so does its end."""
    failing = setup.submit(command("a"))
    setup.end(failing, epilog_error="exited with status 2")
    why = "the epilog of job %d attempt 1 exited with status 2" % failing
    assert setup.link.degraded == why
    setup.link.degraded = None  # a new master's link knows nothing of it
    setup.reopen()
    assert setup.queue.commands.node_status()["node1"]["degraded"] == why
    ok = setup.submit(command("b"))
    setup.end(ok)
    assert setup.link.degraded is None
    setup.reopen()
    assert setup.link.degraded is None
