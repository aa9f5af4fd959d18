"""Tests of jqueue.cli.command_cmds against a fake LUXI client: run, log, signal, term,
kill, running and the exit statuses of command jobs (wait)."""

import time

import pytest
from cli_helpers import Cli

from jqueue import constants, errors, serializer
from jqueue.cli import app, exitcodes


@pytest.fixture
def cli():
    return Cli()


def submitted(cli):
    """The opcode of the last SubmitJob."""
    return cli.fake.calls_of("submit_job")[-1][0][0]


def finish(cli, job_id, status, **exec_state):
    """End a fake command job with the given status and attempt fields."""
    job = cli.fake.jobs[job_id]
    job.ops[0].status = status
    job.ops[0].exec_state = dict({"state": "ended"}, **exec_state)
    job.end_timestamp = [1, 0]


def test_run_argv_after_the_double_dash_with_every_option(cli):
    """jqctl run -- ARGV sends OP_COMMAND_RUN with the options as parameters; prints the id."""
    result = cli("run", "--node", "n2", "--dir", "/srv", "--env", "A=1", "--env", "B=x=y",
                 "--timeout", "30", "--kill-grace", "2", "--attempts", "3", "--memory", "1.5G",
                 "--retry-delay", "1.5", "--retry-delay-max", "60", "--success-codes", "0,3",
                 "--run-as", "nobody", "--title", "render", "--priority", "high",
                 "--affinity", "LINUX,GPU", "--progress-pattern", "frame %percent",
                 "--global-progress-pattern", "shot %one", "--url", "https://farm.example", "--",
                 "printf", "%s", "a b")
    assert result.code == 0 and result.out == "1\n", result
    op = submitted(cli)
    assert op == {"OP_ID": constants.OP_COMMAND_RUN, "cmd": ["printf", "%s", "a b"],
                  "node": "n2", "dir": "/srv", "env": {"A": "1", "B": "x=y"}, "timeout": 30,
                  "memory_max": 3 << 29,
                  "kill_grace": 2, "max_attempts": 3, "retry_delay": 1.5,
                  "retry_delay_max": 60, "success_exit_codes": [0, 3], "run_as": "nobody",
                  "title": "render", "priority": -10, "affinity": "LINUX,GPU",
                  "progress_pattern": "frame %percent",
                  "global_progress_pattern": "shot %one", "url": "https://farm.example"}


@pytest.mark.parametrize("how, method", [("--wait", "wait_for_job_change"),
                                         ("--follow", "read_job_log")])
def test_run_interrupted_while_following_says_the_job_goes_on(cli, how, method):
    """Ctrl-C during run --wait or --follow stops jqctl only: exit 130, one line naming the
    job, how to follow it again and how to stop it."""
    cli.fake.fail(method, KeyboardInterrupt())
    result = cli("run", how, "--", "sleep", "60")
    assert result.code == exitcodes.EXIT_INTERRUPTED and result.out == "", result
    assert result.err == ("jqctl: job 1 submitted\njqctl: interrupted; job 1 goes on (jqctl "
                          "log -f 1 follows it again, jqctl kill 1 stops it)\n")
    assert cli.fake.calls_of("cancel_job") == []


def test_run_c_sends_a_shell_string(cli):
    """-c STRING is a string cmd (run by /bin/sh -c on the node)."""
    assert cli("run", "-c", "echo $HOME > /tmp/x").code == 0
    assert submitted(cli)["cmd"] == "echo $HOME > /tmp/x"


@pytest.mark.parametrize("argv", [
    ["run"], ["run", "--"], ["run", "-c", "x", "--", "y"],
    ["run", "--env", "NOEQUALS", "--", "x"], ["run", "--attempts", "0", "--", "x"],
    ["run", "--timeout", "-1", "--", "x"], ["run", "--success-codes", "256", "--", "x"],
    ["run", "--memory", "1000", "--", "x"], ["run", "--memory", "lots", "--", "x"],
])
def test_run_refuses_what_is_not_a_command(cli, argv):
    """No command, both forms, or a bad option value: a usage error and nothing submitted."""
    result = cli(*argv)
    assert result.code == 2 and result.err.startswith("jqctl: ")
    assert cli.fake.calls_of("submit_job") == []


def test_run_wait_exits_with_the_commands_own_status(cli):
    """--wait follows the job and exits with the command's status (row 17), its line
    as jqctl wait prints it."""
    original = cli.fake._create

    def create(inputs, options=None):
        job_id = original(inputs, options)
        cli.fake.jobs[job_id].ops[0].exec_state = {"exit_status": 7, "reason": "FAILED"}
        cli.fake.script(job_id, ("error", []))
        return job_id
    cli.fake._create = create
    result = cli("run", "--wait", "--", "false")
    assert result.code == 7, result
    assert result.out == cli("wait", "1").out  # the same line, why it failed included
    assert result.out.startswith("Job 1 finished: error: opcode 1 (COMMAND_RUN(false))")


@pytest.mark.parametrize("status, exec_state, code", [
    ("success", {"exit_status": 0, "reason": "OK"}, 0),
    ("error", {"exit_status": 3, "reason": "FAILED"}, 3),
    ("error", {"exit_status": None, "signal": 9, "timed_out": True, "reason": "TIMEOUT"}, 124),
    ("canceled", {"exit_status": None, "signal": 15, "reason": "KILLED"}, 143),
    ("error", {"exit_status": None, "reason": "NODE_LOST"}, 125),
    ("error", {"exit_status": 0, "reason": "FAILED"}, 125),
])
def test_wait_exit_status_of_command_jobs(cli, status, exec_state, code):
    """0 success, the command's status, 124 timeout, 128+N signal, 125 otherwise."""
    cli("run", "--", "x")
    finish(cli, 1, status, **exec_state)
    assert cli("wait", "1").code == code


def test_wait_of_other_jobs_keeps_the_status_table(cli):
    """A job without a command exits 1 for error, 3 for canceled, as before."""
    job_id = cli.fake.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}])
    cli.fake.set_status(job_id, "error")
    assert cli("wait", str(job_id)).code == 1


def test_log_prints_the_log_as_it_is(cli):
    """jqctl log ID prints the bytes of the log (as text) and nothing else."""
    cli("run", "--", "x")
    cli.fake.logs[1] = b"* START\nhello\n\xff\n"
    finish(cli, 1, "success", exit_status=0, reason="OK")
    result = cli("log", "1")
    assert result.code == 0 and result.out == "* START\nhello\n\ufffd\n"


def test_log_follow_and_wait_connect_again_after_losing_the_daemon(cli):
    """log -f and wait go on where they were after the daemon went away (a restart, a
    failover: ConnectionClosedError, then NoMasterError), saying so on stderr; the log is
    printed whole, once, and wait exits with the command's status."""
    cli("run", "--", "x")
    cli.fake.logs[1] = b"hello\n"
    finish(cli, 1, "error", exit_status=3, reason="FAILED")
    cli.fake.fail("read_job_log", errors.ConnectionClosedError("gone"), times=1)
    cli.fake.fail("query_jobs", errors.NoMasterError("nobody there"), times=2)
    del cli.connections[:]
    result = cli("log", "-f", "1")
    assert result.code == 0 and result.out == "hello\n"
    assert result.err == "jqctl: gone; connecting again\njqctl: connected again\n"
    assert cli.sleeps == [app.RECONNECT_DELAY] and len(cli.connections) == 2
    result = cli("wait", "1")
    assert result.code == 3 and result.out.startswith("Job 1 finished: error")
    assert result.err.count("connecting again") == 1


def test_wait_gives_up_when_the_daemon_stays_away(cli):
    """Lost for app.RECONNECT_WINDOW seconds (its clock here: the sleeps), wait fails
    with the last error, unreachable."""
    cli("run", "--", "x")
    cli.fake.fail("wait_for_job_change", errors.NoMasterError("no jqueue daemon listening"))
    result = cli("wait", "1")
    assert result.code == exitcodes.EXIT_UNREACHABLE
    assert sum(cli.sleeps) == app.RECONNECT_WINDOW
    *_, gave_up, last = result.err.splitlines()
    assert gave_up == "jqctl: gave up after %gs" % app.RECONNECT_WINDOW
    assert last.startswith("jqctl: no jqueue daemon listening (socket from the default)")


def test_log_lines_prints_the_last_lines_read_from_near_the_end(cli):
    """log -n N: the last N lines (an unterminated last one counts), read back from the
    end in windows (the start of a long log is never read); -n 0 nothing; more lines than
    the log has: all of it."""
    cli("run", "--", "x")
    body = "".join("line %d\n" % i for i in range(20000)).encode()
    cli.fake.logs[1] = body + b"tail"
    cli.fake.jobs[1].log_bytes = len(body) + 4
    finish(cli, 1, "success", exit_status=0, reason="OK")
    result = cli("log", "-n", "3", "1")
    assert result.code == 0 and result.out == "line 19998\nline 19999\ntail"
    assert min(args[1] for args in cli.fake.calls_of("read_job_log")) > len(body) - 20000
    assert cli("log", "-n", "0", "1").out == ""
    cli.fake.logs[1] = b"a\nb\n"
    assert cli("log", "--lines", "5", "-f", "1").out == "a\nb\n"
    assert cli("log", "-n", "1", "1").out == "b\n"
    assert cli("log", "-n", "2", "9").code == 4


def test_service_log_lines_prints_the_last_lines(cli):
    cli.fake.add_services([{"name": "web", "command": "serve"}])
    cli.fake.service_logs["web"] = b"".join(b"out %d\n" % i for i in range(5000))
    cli.fake.services["web"]["log_bytes"] = len(cli.fake.service_logs["web"])
    assert cli("service", "log", "-n", "2", "web").out == "out 4998\nout 4999\n"


def test_log_of_an_unknown_job_is_not_found(cli):
    result = cli("log", "9")
    assert result.code == 4 and "job 9 not found" in result.err


def test_signal_passes_names_and_numbers(cli):
    """jqctl signal ID SIG: names go as given (the daemon checks them), digits as numbers."""
    cli("run", "--", "x")
    assert cli("signal", "1", "usr1").code == 0
    assert cli("signal", "1", "15").code == 0
    assert cli.fake.calls_of("signal_job") == [(1, "usr1"), (1, 15)]
    result = cli("signal", "5", "TERM")
    assert result.code == 4 and "not found" in result.err


def test_term_and_kill_cancel_with_or_without_kill(cli):
    """term is CancelJob [id], kill is CancelJob [id, true]."""
    cli("run", "--", "x")
    cli("run", "--", "y")
    assert cli("term", "1").code == 0
    assert cli("kill", "2").code == 0
    assert cli.fake.calls_of("cancel_job")[-2:] == [(1, False), (2, True)]


def test_running_prints_a_table_or_json(cli):
    """jqctl running lists attempts; --node filters; --json keeps the raw rows."""
    cli.fake.running = [
        {"job": 4, "attempt": 2, "node": "n1", "pid": 4242, "started": 1795000000.5,
         "state": "running", "containment": "cgroup /sys/fs/cgroup/x", "rss": 72708096},
        {"job": 5, "attempt": 1, "node": "n2", "pid": None, "started": None,
         "state": "starting", "containment": "process group", "rss": None}]
    result = cli("running")
    lines = result.out.splitlines()
    assert lines[0].split() == ["Job", "Attempt", "Node", "PID", "Started", "Memory",
                                "Containment"]
    assert "4242" in lines[1] and "2026-11-18" in lines[1] and lines[2].split()[3] == "-"
    assert lines[1].split()[6] == "69.3M" and lines[2].split()[4] == "-"
    result = cli("running", "--node", "n2", "--json")
    assert '"job":5' in result.out and '"job":4' not in result.out


def test_run_with_a_token_submitted_again_prints_the_job_taken(cli):
    """--token makes a retried run print the first job's id instead of a second job."""
    first = cli("run", "--token", "render-42", "--", "true")
    again = cli("run", "--token", "render-42", "--", "true")
    assert first.code == again.code == 0 and first.out == again.out == "1\n"
    assert len(cli.fake.jobs) == 1
    assert cli("run", "--token", "", "--", "true").code == exitcodes.EXIT_USAGE


@pytest.mark.parametrize("token", [None, "t1"])
def test_a_submission_without_an_answer_says_it_may_have_been_taken(cli, token):
    """A run or submit whose answer did not come in time says the daemon may have taken
    it, and how to submit again safely (the same --token) or look (jqctl list)."""
    def no_answer(*args, **kwargs):
        raise errors.RequestTimeoutError("no answer from the socket within 60.0s")
    cli.fake.submit_job = no_answer
    tokens = [] if token is None else ["--token", token]
    for argv in (["run", *tokens, "--", "true"],
                 ["submit", *tokens, "--op", "OP_TEST_DELAY", "duration=0"]):
        result = cli(*argv)
        assert result.code == exitcodes.EXIT_UNREACHABLE, result
        assert "no answer from the socket within 60.0s: the submission may have been taken" \
            in result.err
        assert ("same --token is safe" if token else "jqctl list shows it") in result.err


# info of command jobs

def test_info_says_how_the_last_attempt_ended_and_when_the_next_starts(cli):
    """A command job waiting out its back-off: attempt N of M on its node, how the last
    attempt ended, when the next starts, its progress and log size."""
    job_id = cli.fake.add_job([{"OP_ID": constants.OP_COMMAND_RUN, "cmd": "make",
                                "max_attempts": 3, "title": "nightly"}])
    job = cli.fake.jobs[job_id]
    job.ops[0].status = constants.OP_STATUS_WAITING
    job.ops[0].exec_state = {"state": "retry_wait", "node": "n1", "attempt": 1, "pid": 77,
                             "exit_status": 2, "reason": "FAILED", "progress": 0.4,
                             "retry_at": 1900000000.5}
    job.log_bytes = 312
    out = cli("info", job_id).out
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1900000000))
    assert "  Title: nightly\n" in out
    assert ("  Command: attempt 1 of 3 on n1\n  Last attempt: FAILED, exit status 2\n"
            "  Next attempt: %s\n  Progress: 40%%\n  Log: 312 bytes (jqctl log %d)\n"
            % (when, job_id)) in out
    job.ops[0].status = constants.OP_STATUS_RUNNING
    job.ops[0].exec_state = dict(job.ops[0].exec_state, state="running", attempt=2,
                                 reason=None, exit_status=None, retry_at=None)
    out = cli("info", job_id).out
    assert "  Command: attempt 2 of 3 on n1, running (pid 77)\n" in out
    assert "Last attempt" not in out and "Next attempt" not in out
    finish(cli, job_id, constants.OP_STATUS_ERROR, node="n1", attempt=3, signal=9,
           reason="KILLED", timed_out=True)
    assert "  Last attempt: KILLED, ended by signal SIGKILL, timed out\n" in cli("info",
                                                                             job_id).out
    job.ops[0].status = constants.OP_STATUS_QUEUED  # held while it ran: uncounted
    job.ops[0].exec_state = dict(job.ops[0].exec_state, attempt=1, uncounted=1)
    assert "  Command: no attempt counted yet (of 3) on n1\n" in cli("info", job_id).out


def test_info_says_what_a_command_used_and_why_it_was_killed_over_its_memory_limit(cli):
    """Resources: the limit while it runs, with what it holds now once its node looked;
    then its peak memory against the limit and its CPU time, the last attempt's line
    saying it went over."""
    job_id = cli.fake.add_job([{"OP_ID": constants.OP_COMMAND_RUN, "cmd": "make",
                                "memory_max": 2 << 30}])
    job = cli.fake.jobs[job_id]
    job.ops[0].status = constants.OP_STATUS_RUNNING
    job.ops[0].exec_state = {"state": "running", "node": "n1", "attempt": 1, "pid": 77}
    assert "  Resources: memory limit 2.0 GiB\n" in cli("info", job_id).out
    cli.fake.rss[job_id] = 1100 << 20  # the node looked
    assert "  Resources: memory now 1.1 GiB of its 2.0 GiB limit\n" in cli("info", job_id).out
    finish(cli, job_id, constants.OP_STATUS_ERROR, node="n1", attempt=1, signal=9,
           reason="KILLED", memory_exceeded=True, max_rss=(2 << 30) + (300 << 20),
           cpu_time=12.345)
    out = cli("info", job_id).out
    assert ("  Last attempt: KILLED, ended by signal SIGKILL, over its memory limit\n"
            "  Resources: peak memory 2.3 GiB of its 2.0 GiB limit, CPU 12.35s\n") in out
    plain = cli.fake.add_job([{"OP_ID": constants.OP_COMMAND_RUN, "cmd": "true"}])
    finish(cli, plain, constants.OP_STATUS_SUCCESS, attempt=1, exit_status=0, reason="OK",
           max_rss=5 << 20, cpu_time=0.01)
    assert "  Resources: peak memory 5.0 MiB, CPU 0.01s\n" in cli("info", plain).out


def test_info_shows_a_held_job_and_its_start_time_until_it_starts(cli):
    """Held and Not before (a time the calendar cannot hold shows as its number)."""
    job_id = cli.fake.add_job()
    job = cli.fake.jobs[job_id]
    job.held, job.not_before = True, 1e300
    out = cli("info", job_id).out
    assert "  Held: yes (it starts once released)\n  Not before: 1e+300\n" in out
    assert "Command:" not in out


def test_titles_and_commands_cannot_drive_the_operators_terminal(cli):
    """Anyone who may submit chooses a job's title and command: a newline, an escape
    sequence or a carriage return in them is shown escaped by list, info and tree (one
    line per job, nothing recoloured or overwritten); --json gives them back as sent."""
    title = "a\nb\x1b[31mred\rc\t\x9b2J"
    job_id = cli.fake.add_job([{"OP_ID": constants.OP_COMMAND_RUN, "title": title,
                                "cmd": ["printf", "\x1b]0;pwn\x07"]}])
    other = cli.fake.add_job()
    lines = cli("list", "-o", "id,title,summary", "--no-headers").out.splitlines()
    assert len(lines) == 2 and lines[1].split() == [str(other), "-", "TEST_DELAY(0)"]
    assert lines[0].split(None, 2) == [
        str(job_id), "a\\nb\\x1b[31mred\\rc\\t\\x9b2J",
        "COMMAND_RUN(a\\nb\\x1b[31mred\\rc\\t\\x9b2J)"]
    out = cli("info", job_id).out
    assert "  Title: a\\nb\\x1b[31mred\\rc\\t\\x9b2J\n" in out
    assert "\x1b" not in out and "\r" not in out and "\x9b" not in out
    assert '"printf",\n' in out and '"\\u001b]0;pwn\\u0007"' in out  # the input's JSON
    rows = serializer.loads(cli("list", "-o", "title", "--json").out)
    assert rows[0]["title"] == title
    group = cli.fake.submit_job([{"OP_ID": constants.OP_GROUP, "title": "render"}])
    child = cli.fake.submit_job([{"OP_ID": constants.OP_COMMAND_RUN, "cmd": "true",
                                  "title": "x\n\x1b[2J"}], parent=group)
    assert cli("tree").out.splitlines()[2].split() == [str(child), "queued", "x\\n\\x1b[2J"]


def test_info_says_why_a_pending_job_waits_as_the_master_says(cli):
    """info's Waiting line is the queue's wait_message (its slots busy, a node drained, no
    node with the tags...); none when the queue says nothing, nor for the reasons info
    says on lines of their own (held, a start time, a back-off)."""
    job_id = cli.fake.add_job([{"OP_ID": constants.OP_COMMAND_RUN, "cmd": "make"}])
    assert "Waiting" not in cli("info", job_id).out
    for reason, message in (("SLOTS", "all 2 slots of vm are busy (jobs 7, 9)"),
                            ("NODE_UNAVAILABLE", "vm is drained (no new commands start there)"),
                            ("NO_MATCHING_NODE", "no node has the tags gpu"),
                            ("DEPENDENCY", "it waits for job 3 to end")):
        cli.fake.wait_reasons[job_id] = (reason, message)
        assert "  Waiting: %s\n" % message in cli("info", job_id).out
    for reason in ("HELD", "NOT_BEFORE", "BACKOFF"):
        cli.fake.wait_reasons[job_id] = (reason, "said elsewhere")
        assert "Waiting" not in cli("info", job_id).out
    cli.fake.wait_reasons[job_id] = ("SLOTS", "all 2 slots of \x1b[2Jvm are busy")
    assert "  Waiting: all 2 slots of \\x1b[2Jvm are busy\n" in cli("info", job_id).out
    rows = serializer.loads(cli("list", "-o", "id,wait_reason", "--json").out)
    assert rows == [{"id": job_id, "wait_reason": "SLOTS"}]
