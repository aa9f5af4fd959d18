"""End-to-end tests of command jobs on one machine: a real jq-masterd runs them itself.

Processes of a job are found by a unique marker in their environment, so that tests
running in parallel (each with its own daemon and job ids) never see each other's.
"""

import collections
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid

import pytest
from conftest import attempt_names
from daemon_helpers import (
    all_canceled_and_gone,
    holding,
    mostly_freed,
    processes_with,
    wait_all_final,
    wait_until,
)

from jqueue import constants, errors
from jqueue.exec import attemptdir, resources

FIELDS = ["status", "exit_status", "signal", "timed_out", "reason", "attempt", "node"]


def marked(env=None):
    """An environment with a fresh marker; (env, marker)."""
    mark = uuid.uuid4().hex
    return dict(env or {}, JQ_TEST_MARK=mark), mark


def command(cmd, **params):
    return dict({"OP_ID": constants.OP_COMMAND_RUN, "cmd": cmd}, **params)


def run_to_end(daemon, op, timeout=30):
    """Submit one command job and wait for its end; (job id, {field: value})."""
    with daemon.client() as client:
        job_id = client.submit_job([op])
        wait_all_final(client, [job_id], timeout)
        row = client.query_jobs([job_id], FIELDS)[0]
    return job_id, dict(zip(FIELDS, row))


def log_of(daemon, job_id):
    with daemon.client() as client:
        return "".join(client.follow_job_log(job_id))


@pytest.fixture
def daemon(daemons):
    return daemons()


def test_run_wait_exits_with_the_commands_status_and_logs_its_output(daemon, tmp_path):
    """jqctl run --wait: the command's exit status; its output and our banners in the log."""
    code, out, err = daemon.jqctl("run", "--wait", "--", "sh", "-c", "echo hello; exit 3")
    assert code == 3, (out, err)
    job_id = int(err.split("job ")[1].split()[0])
    assert out == "Job %d finished: error: opcode 1 (COMMAND_RUN(sh -c 'echo hello; exit " \
        "3')): OpExecError: command exited with status 3\n" % job_id
    log = log_of(daemon, job_id)
    assert "\nhello\n" in log and "* EXIT : 3" in log and "* CMD : sh -c " in log
    with daemon.client() as client:
        values = dict(zip(FIELDS, client.query_jobs([job_id], FIELDS)[0]))
    assert values["status"] == "error" and values["exit_status"] == 3
    assert values["reason"] == "FAILED" and values["node"]


def test_a_program_that_cannot_be_executed_is_named_in_the_jobs_error(daemon):
    """A missing program ends as sh's would (FAILED, exit status 127), and the job's error,
    the log's banner and the action log say why, not only the number."""
    code, out, err = daemon.jqctl("run", "--wait", "--", "no-such-program-jq", "x")
    assert code == 127, (out, err)
    job_id = int(err.split("job ")[1].split()[0])
    why = "command exited with status 127: cannot execute no-such-program-jq: No such file " \
        "or directory"
    assert out == "Job %d finished: error: opcode 1 (COMMAND_RUN(no-such-program-jq x)): " \
        "OpExecError: %s\n" % (job_id, why)
    assert "* FAILED : %s\n" % why in log_of(daemon, job_id)
    actions = open(os.path.join(daemon.state_dir, "actions.log")).read()
    assert " %d FAILED %s\n" % (job_id, why) in actions
    code, out, _ = daemon.jqctl("run", "--wait", "-c", "exit 127")
    assert code == 127 and out.endswith("OpExecError: command exited with status 127\n"), out


def test_node_list_on_one_machine_shows_its_own_node(daemons):
    """Without a cluster, jqctl node list shows the machine's node as a cluster's master
    lists its nodes: its tags, slots used of its slots and the jobs running there."""
    daemon = daemons(args=["--tags", "gpu,big", "--slots", "2"])
    with daemon.client() as client:
        sleeper = client.submit_job([command("sleep 30")])
        deadline = time.monotonic() + 20
        while not [row for row in client.query_running(None) if row["pid"]]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        [row] = client.list_nodes()
        assert (row["role"], row["reachable"], row["tags"], row["slots"], row["slots_used"],
                row["running_jobs"]) == ("master", True, ["big", "gpu"], 2, 1, [sleeper])
        code, out, err = daemon.jqctl("node", "list")
        assert code == 0, err
        cells = out.splitlines()[1].split()
        assert cells[:11] == [row["name"], "-", "master", "yes", "-", "-", "big,gpu", "ok", "-",
                              "1/2", str(sleeper)]
        assert re.fullmatch(r"\d+\.\d\d/%d" % os.cpu_count(), cells[11]), cells
        assert re.fullmatch(r"[\d.]+[KMGT]/[\d.]+[MGT]", cells[12]), cells  # free of total
        assert row["cpus"] == os.cpu_count() and 0 < row["mem_available"] < row["mem_total"]
        # both slots busy: a third job waits, and jqctl info says why
        second, third = (client.submit_job([command(cmd)]) for cmd in ("sleep 30", "true"))
        deadline = time.monotonic() + 20
        while client.list_nodes()[0]["slots_used"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        code, out, err = daemon.jqctl("info", str(third))
        assert "  Waiting: all 2 slots of %s are busy (jobs %d, %d)\n" % (
            row["name"], sleeper, second) in out, out
        client.cancel_job(sleeper, True)
        client.cancel_job(second, True)
        wait_all_final(client, [sleeper, second, third], 30)
        assert "Waiting" not in daemon.jqctl("info", str(third))[1]
        # a fan-out to it by a glob: the command's own output as it wrote it (its colours),
        # as jqctl log shows it to whoever ran the command
        code, out, err = daemon.jqctl("run", "--nodes", row["name"][0] + "*", "--", "printf",
                                      "\\033[31mred\\033[0m\\n")
        assert code == 0, err
        assert out == "%s: success, exit status 0\n    \x1b[31mred\x1b[0m\n" % row["name"]


def test_a_log_removed_or_cut_outside_jqueue_is_an_error_not_a_wait_for_ever(daemon):
    """jqctl log -f of a finished job whose log file was removed waited for ever for bytes
    the file no longer has; now the read says the log is gone (with its path and how much
    of it is left), so does a follower of a running job once its file is removed, and a
    log cut short gives what is left, then the same error."""
    with daemon.client() as client:
        done = client.submit_job([command("echo hello")])
        running = client.submit_job([command("echo first; sleep 1; echo second; sleep 30")])
        wait_all_final(client, [done], 30)
        path = os.path.join(daemon.state_dir, "logs", "%d.log" % done)
        size = os.path.getsize(path)
        os.truncate(path, 20)
        followed = daemon.jqctl_process("log", "-f", str(done))  # fails, not hangs, if not
        code, out, err = followed.returncode, followed.stdout, followed.stderr
        assert code == 6 and len(out) == 20, (code, out, err)
        assert err == ("jqctl: the log of job %d is gone: %s holds 20 of the %d bytes "
                       "written to it (removed or cut outside jqueue)\n" % (done, path, size))
        os.unlink(path)
        assert daemon.jqctl("log", str(done))[0] == 6
        answer = client.read_job_log(running, 0, 65536, 10)
        while "first" not in answer["data"]:
            answer = client.read_job_log(running, answer["offset"], 65536, 10)
        os.unlink(os.path.join(daemon.state_dir, "logs", "%d.log" % running))
        with pytest.raises(errors.JobQueueError, match="the log of job %d is gone" % running):
            for _ in range(3):  # a follower waiting when "second" comes hears it next
                answer = client.read_job_log(running, answer["offset"], 65536, 10)
        client.cancel_job(running, True)
        wait_all_final(client, [running], 30)


def test_a_shell_string_and_its_environment(daemon):
    """-c runs through /bin/sh; the environment is minimal plus JQ_* and --env."""
    code, out, _ = daemon.jqctl("run", "--wait", "--env", "GREETING=hi", "-c",
                                "echo $GREETING $JQ_JOB_ID $JQ_ATTEMPT; env | sort")
    assert code == 0, out
    job_id = int(out.split("Job ")[1].split()[0])
    log = log_of(daemon, job_id)
    assert "hi %d 1\n" % job_id in log
    names = {line.split("=")[0] for line in log.splitlines() if "=" in line
             and not line.startswith("*")}
    assert {"PATH", "HOME", "USER", "LANG", "JQ_JOB_ID", "JQ_NODE", "GREETING"} <= names
    assert "PYTHONPATH" not in names and "PWD" in names  # sh sets PWD; the daemon's is gone


def test_a_backtracking_regex_progress_pattern_does_not_stop_the_daemon(daemon):
    """(?:a+)+(\\d) against a line of 40 a's took Python's regex engine hours, in
    jq-masterd's event loop; on RE2 the job ends with the progress of the line that
    matches. A pattern outside RE2's syntax (a backreference) is refused at submit as the
    caller's error, with RE2's reason, and leaves no job."""
    op = command("echo a5; printf 'a%.0s' $(seq 40); echo c",
                 progress_pattern="regex:(?:a+)+(\\d)")
    job_id, row = run_to_end(daemon, op, timeout=30)
    with daemon.client() as client:
        assert row["status"] == "success" and client.query_jobs([job_id], ["progress"]) == [[1.0]]
        with pytest.raises(errors.OpPrereqError, match=r"RE2 syntax: invalid escape sequence"):
            client.submit_job([command("true", progress_pattern="regex:(a)\\1(\\d)")])
        assert [row[0] for row in client.query_jobs([], ["id"])] == [job_id]


def test_a_missing_directory_fails_internal_error_and_the_command_never_runs(daemon,
                                                                           tmp_path):
    """dir missing on the node: reason INTERR, no retry, the marker file never appears."""
    marker = tmp_path / "ran"
    job_id, values = run_to_end(daemon, command("touch %s" % marker, dir="/nonexistent/x",
                                                max_attempts=3))
    assert values["status"] == "error" and values["reason"] == "INTERR"
    assert values["attempt"] == 1 and not marker.exists()
    assert "/nonexistent/x" in log_of(daemon, job_id)


def test_timeout_kills_the_whole_tree_and_wait_exits_124(daemon):
    """A tree of processes (one escaping with setsid) is gone after the timeout."""
    env, mark = marked()
    code, out, err = daemon.jqctl(
        "run", "--wait", "--timeout", "1", "--kill-grace", "1",
        *sum((["--env", "%s=%s" % kv] for kv in env.items()), []),
        "-c", "sleep 1000 & (setsid sleep 1000 &); sleep 1000")
    assert code == 124, (out, err)
    assert processes_with(mark) == []


def test_a_command_over_its_memory_limit_is_killed_whole_and_said_so(daemon):
    """jqctl run --memory 64M: a shell whose two children hold 48 MiB each is killed, every
    process of it (a sleeper too), wait exiting 137 (SIGKILL); info, list and the log say
    why, with what it held; a job under its limit succeeds and says what it used."""
    env, mark = marked()
    hold = shlex.join(holding(48))
    code, out, err = daemon.jqctl(
        "run", "--wait", "--memory", "64M",
        *sum((["--env", "%s=%s" % kv] for kv in env.items()), []),
        "-c", "%s & %s & sleep 1000" % (hold, hold))
    assert code == 128 + signal.SIGKILL, (out, err)
    job_id = int(err.split("job ")[1].split()[0])
    assert processes_with(mark) == []
    assert "OpExecError: command killed by signal SIGKILL: its processes held " in out
    assert "over its memory_max of 64.0 MiB" in out
    code, out, _ = daemon.jqctl("info", str(job_id))
    assert "  Last attempt: KILLED, ended by signal SIGKILL, over its memory limit\n" in out
    assert re.search(r"  Resources: peak memory [0-9.]+ MiB of its 64\.0 MiB limit, CPU ", out)
    code, out, _ = daemon.jqctl("list", "--no-headers", "-o", "id,memory_max,memory_exceeded",
                                str(job_id))
    assert out.split() == [str(job_id), "64.0M", "Y"], out
    assert "* KILLED : command killed by signal SIGKILL: its processes held " in log_of(
        daemon, job_id)
    job_id, values = run_to_end(daemon, command(holding(24, 0.6), memory_max="128M"))
    assert values["status"] == "success", values
    with daemon.client() as client:
        [[max_rss, cpu_time, exceeded]] = client.query_jobs(
            [job_id], ["max_rss", "cpu_time", "memory_exceeded"])
    assert 24 << 20 <= max_rss < 128 << 20 and cpu_time > 0 and exceeded is False


def test_memory_limits_share_the_machines_memory_and_one_too_large_is_refused(daemon):
    """Two sleepers asking 60% of this machine's memory each (--memory): the second waits
    (MEMORY, said by jqctl info) until the first ends, which holds its share meanwhile
    (ListNodes' mem_held); one asking more than the machine has is refused at submit,
    naming both sizes (jqctl: exit status 6, refused)."""
    total = resources.read()["mem_total"]
    share = "%dK" % (total * 6 // 10 >> 10)
    with daemon.client() as client:
        first, second = (client.submit_job([command("sleep 60", memory_max=share)])
                         for _ in range(2))
        wait_until(lambda: client.query_jobs([second], ["wait_reason"])[0] == ["MEMORY"],
                   what="the second job waiting for memory")
        code, out, _ = daemon.jqctl("info", str(second))
        assert client.list_nodes()[0]["mem_held"] == (total * 6 // 10 >> 10) << 10
        assert re.search(r"  Waiting: its memory_max \([0-9.]+ [MG]iB\) and those of the "
                         r"commands running on \S+ \(job %d\), [0-9.]+ [MG]iB in all, are "
                         r"more than its memory \([0-9.]+ [MG]iB\)\n" % first, out), out
        client.cancel_job(first, True)
        wait_until(lambda: client.query_jobs([second], ["status"])[0] == ["running"],
                   what="the second job started once the first ended")
        client.cancel_job(second, True)
        wait_all_final(client, [first, second], 30)
    code, out, err = daemon.jqctl("run", "--memory", "%dK" % ((total >> 10) + 1024), "true")
    assert code == 6 and "its memory_max" in err and "is more than the memory of node" in err, \
        (out, err)


def test_jobs_behind_one_waiting_for_memory_start_first_where_they_cannot_delay_it(daemons):
    """Backfill on a real jq-masterd: a job holding 60% of the memory with a timeout runs,
    another asking 60% waits; behind it a short one (its timeout ends first) runs and ends,
    and one of 35% without a timeout runs beside them, in the 40% the waiting one leaves
    free, while one of 45% waits. The first's end starts the one that waited."""
    daemon = daemons(args=["--slots", "4"])
    share = resources.read()["mem_total"] // 100 >> 10  # 1% in KiB
    with daemon.client() as client:
        first = client.submit_job([command("sleep 60", memory_max="%dK" % (60 * share),
                                           timeout=120)])
        head = client.submit_job([command("sleep 60", memory_max="%dK" % (60 * share))])
        late = client.submit_job([command("sleep 60", memory_max="%dK" % (45 * share))])
        short = client.submit_job([command("true", memory_max="%dK" % (10 * share),
                                           timeout=30)])
        beside = client.submit_job([command("sleep 60", memory_max="%dK" % (35 * share))])
        wait_all_final(client, [short], 20)
        wait_until(lambda: client.query_jobs([beside], ["status"])[0] == ["running"],
                   what="the job that fits beside the waiting one running")
        assert client.query_jobs([short], ["status"])[0] == ["success"]
        assert client.query_jobs([head, late], ["status", "wait_reason"]) == [
            ["queued", "MEMORY"], ["queued", "MEMORY"]]
        code, out, _ = daemon.jqctl("info", str(late))
        assert "job %d, first in" % head in out and "at the latest" in out, out
        client.cancel_job(first, True)
        wait_until(lambda: client.query_jobs([head], ["status"])[0] == ["running"],
                   what="the waiting job started once the first ended")
        assert client.query_jobs([late], ["status"])[0] == ["queued"]
        for job_id in (head, late, beside):
            client.cancel_job(job_id, True)
        wait_all_final(client, [first, head, late, beside], 30)


def test_memory_reserve_keeps_memory_from_the_commands_and_sighup_changes_it(daemons,
                                                                           tmp_path):
    """--memory-reserve: a job asking what the machine has, less the reserve, and a bit
    more is refused at submit; jqctl node list --json says the reserve; a reload with a
    smaller reserve lets it in."""
    total = resources.read()["mem_total"]
    path = tmp_path / "masterd.toml"
    path.write_text("[masterd]\nmemory_reserve = '%dK'\n" % (total // 2 >> 10))
    daemon = daemons(args=["--config", str(path)])
    asked = "%dK" % ((total * 6 // 10) >> 10)
    code, out, err = daemon.jqctl("run", "--memory", asked, "true")
    assert code == 6 and "is more than the memory of node" in err, (out, err)
    code, out, _ = daemon.jqctl("node", "list", "--json")
    assert json.loads(out)[0]["mem_reserved"] == (total // 2 >> 10) << 10, out
    path.write_text("[masterd]\nmemory_reserve = '1M'\n")
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP: memory_reserve changed" in daemon.stderr(),
               what="the reload said")
    code, out, err = daemon.jqctl("run", "--wait", "--memory", asked, "true")
    assert code == 0, (out, err)


def test_kill_ends_every_process_and_the_job_canceled(daemon):
    """jqctl kill: KILL to the process group and the cgroup; nothing of the job is left."""
    env, mark = marked()
    with daemon.client() as client:
        job_id = client.submit_job([command(
            "sleep 1000 & (setsid sleep 1000 &); sleep 1000", env=env)])
    wait_until(lambda: len(processes_with(mark)) >= 3, what="the job's processes")
    code, out, _ = daemon.jqctl("kill", str(job_id))
    assert code == 0 and "KILL now" in out
    code, out, _ = daemon.jqctl("wait", str(job_id))
    assert code == 128 + signal.SIGKILL, out
    assert processes_with(mark) == []
    with daemon.client() as client:
        assert client.query_jobs([job_id], ["status", "reason"])[0] == ["canceled", "KILLED"]


def test_term_escalates_to_kill_for_a_command_that_traps_term(daemon):
    """jqctl term: TERM, and KILL after kill_grace when the command ignores TERM."""
    env, mark = marked()
    with daemon.client() as client:
        job_id = client.submit_job([command(
            "trap 'echo ignoring TERM' TERM; while :; do sleep 0.1; done", env=env,
            kill_grace=1)])
    wait_until(lambda: processes_with(mark), what="the job to start")
    time.sleep(0.3)
    started = time.monotonic()
    assert daemon.jqctl("term", str(job_id))[0] == 0
    assert daemon.jqctl("wait", str(job_id))[0] == 128 + signal.SIGKILL
    assert time.monotonic() - started >= 0.9
    assert "ignoring TERM" in log_of(daemon, job_id)
    assert processes_with(mark) == []


def test_signal_reaches_the_command(daemon):
    """jqctl signal ID USR1: the command's trap runs; the job then ends as it chooses."""
    with daemon.client() as client:
        job_id = client.submit_job([command([  # one process: the signal reaches only it
            sys.executable, "-c", "import signal, sys, time\n"
            "signal.signal(signal.SIGUSR1, lambda *a: (print('got USR1'), sys.exit(0)))\n"
            "print('ready', flush=True)\ntime.sleep(60)"])])
        wait_until(lambda: "\nready\n" in client.read_job_log(job_id, 0, 65536, 1)["data"],
                   what="the command to be ready")  # a line of its own: the banner says
                                                    # "ready" too
    code, out, _ = daemon.jqctl("signal", str(job_id), "usr1")
    assert code == 0, out
    assert daemon.jqctl("wait", str(job_id))[0] == 0
    assert "got USR1" in log_of(daemon, job_id)
    code, _, err = daemon.jqctl("signal", str(job_id), "TERM")
    assert code != 0 and "no running command" in err


def test_log_follow_prints_the_output_as_it_comes(daemon):
    """jqctl log -f prints the whole log and returns once the job has ended; log -n 4
    its last four lines."""
    with daemon.client() as client:
        job_id = client.submit_job([command("for i in 1 2 3; do echo line$i; sleep 0.2; "
                                            "done")])
    code, out, _ = daemon.jqctl("log", "-f", str(job_id))
    assert code == 0 and "line1\nline2\nline3\n" in out and "* END" in out
    code, tail, _ = daemon.jqctl("log", "-n", "4", str(job_id))
    assert code == 0 and tail == "".join(out.splitlines(keepends=True)[-4:])
    assert tail.startswith("line3\n")


def test_log_prints_binary_output_byte_for_byte(daemon, tmp_path):
    """jqctl log (a process, stdout a pipe) of a command writing bytes that are not UTF-8:
    exactly what the command wrote, as the log file holds it; -n 4 from the last line of
    output (it had no newline) on."""
    copy = tmp_path / "written"
    with daemon.client() as client:
        job_id = client.submit_job([command(
            "head -c 200000 /dev/urandom | tee %s; printf '\\nend \\377\\376'" % copy)])
        wait_all_final(client, [job_id], 30)
    written = copy.read_bytes()
    with open(os.path.join(daemon.state_dir, "logs", "%d.log" % job_id), "rb") as stream:
        on_disk = stream.read()
    assert written in on_disk and b"end \xff\xfe\n* EXIT : 0" in on_disk
    printed = subprocess.run([sys.executable, "-m", "jqueue.cli", "--socket", daemon.socket,
                              "log", str(job_id)], capture_output=True, timeout=60)
    assert printed.returncode == 0 and printed.stdout == on_disk
    last = subprocess.run([sys.executable, "-m", "jqueue.cli", "--socket", daemon.socket,
                           "log", "-n", "4", str(job_id)], capture_output=True, timeout=60)
    assert last.stdout.startswith(b"end \xff\xfe\n") and on_disk.endswith(last.stdout)


def test_a_command_printing_for_ever_does_not_fill_the_disk(daemons):
    """yes, with the log capped at 1 MiB: its output past the cap is freed on the disk of
    the attempts as it is passed, so the disk holds a fraction of what it printed; the
    log keeps its first MiB and one marker."""
    daemon = daemons(args=["--log-max-bytes", "1048576"])
    with daemon.client() as client:
        job_id = client.submit_job([command(["yes", "a line of output"])])
        output = os.path.join(attemptdir.attempt_path(daemon.state_dir, job_id, 1), "output")
        wait_until(mostly_freed(output, 512 << 20), 60, "the output to be freed as it grows")
        client.cancel_job(job_id, True)
        wait_all_final(client, [job_id], 30)
        log_bytes = client.query_jobs([job_id], ["log_bytes"])[0][0]
    log = log_of(daemon, job_id)
    assert (1 << 20) < log_bytes < (1 << 20) + 1024 and log.count("* LOG TRUNCATED") == 1


def test_wait_timeout_leaves_a_running_job_running(daemon):
    """jqctl wait --timeout 1 on a command still running: exit 3 after about a second
    (other-systems row 17), "still running"; the job goes on (then killed)."""
    with daemon.client() as client:
        job_id = client.submit_job([command("sleep 60")])
    started = time.monotonic()
    code, out, _ = daemon.jqctl("wait", "--timeout", "1", str(job_id))
    assert (code, out) == (3, "Job %d still running\n" % job_id)
    assert 1 <= time.monotonic() - started < 10
    code, _, _ = daemon.jqctl("kill", str(job_id))
    with daemon.client() as client:
        wait_all_final(client, [job_id], 30)
        assert client.query_jobs([job_id], ["status"])[0] == ["canceled"]


def test_run_follow_rides_over_a_killed_master(daemon):
    """jqctl run --follow (a process) while jq-masterd is killed -9 and started again: it
    connects again, prints every line once and exits with the command's status."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "jqueue.cli", "--socket", daemon.socket, "run", "--follow",
         "-c", "echo go; i=0; while [ $i -lt 40 ]; do echo n$i; i=$((i+1)); sleep 0.05; "
         "done; exit 42"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with daemon.client() as client:
        wait_until(lambda: client.query_jobs([1], ["status"])[0] not in (None, ["queued"]),
                   what="the job to start")
    daemon.kill()
    time.sleep(0.5)
    daemon.start()
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 42, err
    assert [line for line in out.splitlines() if line.startswith("n")] == [
        "n%d" % i for i in range(40)]
    assert "connecting again" in err and "connected again" in err


def test_an_attempt_without_a_cgroup_says_so_in_its_log(daemons):
    """--containment process-group: the job's own log says how its processes are reached
    (and what escapes), as jqctl running does."""
    daemon = daemons(args=["--containment", "process-group"])
    job_id, row = run_to_end(daemon, command("echo hi"))
    assert row["status"] == "success"
    log = log_of(daemon, job_id)
    assert "* CONTAINED BY : process group (cgroups disabled by configuration): a process " \
        "that leaves the group (setsid) is reached only while its parent lives\n" in log


def test_running_lists_the_attempt_with_its_pid(daemon):
    """jqctl running shows the job, its node, the command's pid, the memory it holds (here
    a process holding 24 MiB, looked at a second after its start) and its containment; a
    node the queue does not have is not found (not an empty list)."""
    env, mark = marked()
    with daemon.client() as client:
        job_id = client.submit_job([command(holding(24, 30), env=env)])
        wait_until(lambda: client.query_running() and (client.query_running()[0]["rss"] or 0)
                   >= 24 << 20, what="the attempt's pid and memory")
        rows = client.query_running()
    assert [(r["job"], r["attempt"]) for r in rows] == [(job_id, 1)]
    assert rows[0]["pid"] in processes_with(mark)
    assert rows[0]["containment"].startswith(("cgroup /", "process group ")), rows
    code, out, _ = daemon.jqctl("running")
    assert code == 0 and str(rows[0]["pid"]) in out and rows[0]["containment"] in out
    assert re.search(r" [0-9.]+M ", out.splitlines()[1]), out
    code, out, err = daemon.jqctl("running", "--node", "no-such-node")  # a typo says so
    assert (code, out) == (4, "") and "unknown node no-such-node (nodes: " in err
    daemon.jqctl("kill", str(job_id))


def test_retries_run_again_after_a_failure(daemon, tmp_path):
    """max_attempts 2: the first attempt fails, the second succeeds (a file it leaves)."""
    flag = tmp_path / "second"
    job_id, values = run_to_end(daemon, command(
        "if [ -e %s ]; then exit 0; fi; touch %s; exit 1" % (flag, flag), max_attempts=2,
        retry_delay=0.2))
    assert values["status"] == "success" and values["attempt"] == 2
    assert log_of(daemon, job_id).count("* START") == 2


def test_run_as_an_allowed_user_and_refusal_of_another(daemons, tmp_path):
    """run_as nobody (allowed) runs as nobody; a user not allowed is refused at submit;
    an allowed user this machine does not know fails its attempt INTERR, not retried."""
    daemon = daemons(args=["--allowed-users", "nobody,no-such-user-jq"])
    job_id, values = run_to_end(daemon, command("id -un", run_as="nobody"))
    assert values["status"] == "success", log_of(daemon, job_id)
    assert "\nnobody\n" in log_of(daemon, job_id)
    code, _, err = daemon.jqctl("run", "--run-as", "daemon", "--", "id", "-un")
    assert code == 6 and "user daemon may not run commands on this node" in err
    with daemon.client() as client:
        assert len(client.query_jobs([], ["id"])) == 1  # the refused job left no trace
    job_id, values = run_to_end(daemon, command("true", run_as="no-such-user-jq",
                                                max_attempts=3))
    assert (values["status"], values["reason"], values["attempt"]) == ("error", "INTERR", 1)
    assert "user no-such-user-jq does not exist on this node" in log_of(daemon, job_id)


def killed_midway(daemon, cmd, seen):
    """Run cmd as a job; once its log holds seen, kill -9 jq-masterd and start it again;
    wait for the job. (Its fields, its log.)"""
    with daemon.client() as client:
        job_id = client.submit_job([command(cmd)])
        wait_until(lambda: seen in client.read_job_log(job_id, 0, 1 << 22, 0)["data"],
                   what="output to flow")
    daemon.kill()
    daemon.start()
    with daemon.client() as client:
        wait_all_final(client, [job_id], 60)
        values = dict(zip(FIELDS, client.query_jobs([job_id], FIELDS)[0]))
    return values, log_of(daemon, job_id)


def test_a_killed_master_keeps_the_command_and_records_its_true_end(daemon):
    """kill -9 of jq-masterd while a job prints 10,000 lines and exits 7: after a restart
    the job ends with status 7 and the log holds every line exactly once."""
    values, log = killed_midway(daemon, "i=0; while [ $i -lt 10000 ]; do echo n$i; i=$((i+1)); "
                                "[ $((i % 1000)) -eq 0 ] && sleep 0.2; done; exit 7", "n1500")
    assert values["exit_status"] == 7 and values["attempt"] == 1
    lines = [line for line in log.splitlines() if line.startswith("n")]
    assert lines == ["n%d" % i for i in range(10000)]


def test_a_killed_master_keeps_big_output_whole(daemon):
    """The same with output in bursts of 50,000 lines (pieces of over 64 KiB, which one
    machine journals as extents of the log, the log synced first): after kill -9 and a
    restart the log holds every line exactly once."""
    values, log = killed_midway(daemon, "for k in 0 1 2 3 4 5; do seq $((k * 50000)) "
                                "$((k * 50000 + 49999)); sleep 0.3; done; exit 7", "\n60000\n")
    assert values["exit_status"] == 7 and values["attempt"] == 1
    lines = [line for line in log.splitlines() if line[:1].isdigit()]
    assert lines == [str(i) for i in range(300000)]


def test_a_master_killed_amid_many_short_jobs_runs_each_once(daemon):
    """kill -9 of jq-masterd while 300 short jobs start and end (their directories taken
    from and given back to the spares): after a restart each job ran once and succeeded
    (an attempt whose launch the kill interrupted runs again, uncounted), its log whole,
    and what is left of the attempts is spares: no output, no spec.json that parses."""
    with daemon.client() as client:
        ids = [job_id for _, job_id in client.submit_many_jobs(
            [[command("echo job $JQ_JOB_ID")]] * 300)]
        wait_until(lambda: sum(row[0] == "success" for row in client.query_jobs(
            ids, ["status"])) >= 100, what="a hundred jobs to end")
    daemon.kill()
    daemon.start()
    with daemon.client() as client:
        wait_all_final(client, ids, 60)
        failed = [(job_id, row) for job_id, row in zip(ids, client.query_jobs(ids, FIELDS))
                  if row[0] != "success"]
        assert failed == [], [(f, log_of(daemon, f[0])) for f in failed]
    for job_id in ids:
        log = log_of(daemon, job_id)
        assert log.count("\njob %d\n" % job_id) == 1, log  # ran once, its output whole
        assert log.count("* START") == 1 + log.count("* RETRY : the command never started")
    attempts = os.path.join(daemon.state_dir, "attempts")
    wait_until(lambda: not attempt_names(attempts), what="every attempt to be forgotten")
    for name in os.listdir(attempts):
        assert name.startswith(".spare-"), name
        spare = os.path.join(attempts, name)
        assert set(os.listdir(spare)) <= {"spec.json", "output", ".pid.tmp", ".result.tmp"}
        assert os.stat(os.path.join(spare, "output")).st_size == 0
        assert attemptdir.read_spec(spare) is None


def test_a_cancel_storm_amid_launches_ends_every_job_and_process(daemons):
    """200 jobs that fork a tree and sleep, cancelled one by one while their attempts are
    being launched (slots 50, 150 still queued): every job ends canceled and no process
    of any of them is left."""
    daemon = daemons(args=["--slots", "50"])
    env, mark = marked()
    with daemon.client() as client:
        ids = [job_id for _, job_id in client.submit_many_jobs(
            [[command("sleep 300 & (setsid sleep 300 &); sleep 300", env=env)]] * 200)]
        wait_until(lambda: len(processes_with(mark)) >= 30, what="launches to begin")
        for job_id in ids:
            client.cancel_job(job_id)
        all_canceled_and_gone(client, ids, mark)


def test_jobs_cancelled_as_a_killed_master_comes_back_end_with_every_process(daemons):
    """kill -9 of jq-masterd while 60 jobs run trees of sleeps (20 slots, the rest
    queued), then each job cancelled as soon as the restarted daemon answers, while it
    re-adopts the running ones: every job ends canceled, no process of them is left."""
    daemon = daemons(args=["--slots", "20"])
    env, mark = marked()
    with daemon.client() as client:
        ids = [job_id for _, job_id in client.submit_many_jobs(
            [[command("sleep 300 & (setsid sleep 300 &); sleep 300", env=env)]] * 60)]
        wait_until(lambda: sum(row[0] == "running" for row in client.query_jobs(
            ids, ["status"])) >= 20, what="twenty jobs to run")
    daemon.kill()
    daemon.start()
    with daemon.client() as client:
        for job_id in ids:
            client.cancel_job(job_id)
        all_canceled_and_gone(client, ids, mark)


def test_retries_amid_a_master_kill_run_each_attempt_once(daemons, tmp_path):
    """40 jobs that fail three times (short back-offs) on one machine; jq-masterd is
    killed -9 amid them and started again: every job ends failed after three counted
    attempts, its command run exactly three times, no attempt twice."""
    daemon = daemons(args=["--slots", "20"])
    ran = tmp_path / "ran"
    script = "echo $JQ_JOB_ID $JQ_ATTEMPT >> %s; sleep 0.05; exit 3" % ran
    with daemon.client() as client:
        ids = [job_id for _, job_id in client.submit_many_jobs(
            [[command(script, max_attempts=3, retry_delay=0.2, retry_delay_max=0.5)]] * 40)]
        wait_until(lambda: ran.exists() and len(ran.read_text().splitlines()) >= 50,
                   what="fifty attempts to run")
    daemon.kill()
    daemon.start()
    with daemon.client() as client:
        wait_all_final(client, ids, 90)
        rows = client.query_jobs(ids, ["status", "attempt", "exit_status"])
    assert {tuple(row) for row in rows} == {("error", 3, 3)}, rows
    runs = collections.Counter(ran.read_text().splitlines())
    assert [line for line, count in runs.items() if count > 1] == []
    assert collections.Counter(int(line.split()[0]) for line in runs) == {
        job_id: 3 for job_id in ids}


def across_a_clean_restart(daemon, cmd, while_running=lambda job_id: None):
    """Run cmd as a job; while it runs, call while_running(job id) and stop jq-masterd
    with SIGTERM (the command must go on); start the daemon again and wait for the job,
    which must succeed. (Its id, its log.)"""
    env, mark = marked()
    with daemon.client() as client:
        job_id = client.submit_job([command(cmd, env=env)])
    wait_until(lambda: processes_with(mark), what="the command to start")
    while_running(job_id)
    assert daemon.stop() == 0
    assert processes_with(mark), "the command died with the daemon"
    daemon.start()
    with daemon.client() as client:
        wait_all_final(client, [job_id], 30)
        assert client.query_jobs([job_id], ["status"])[0] == ["success"]
    return job_id, log_of(daemon, job_id)


def test_a_command_still_running_survives_a_clean_restart(daemon):
    """SIGTERM of jq-masterd does not stop a running command; the next daemon follows it."""
    _, log = across_a_clean_restart(daemon, "sleep 2; echo done")
    assert "done" in log


def test_with_a_run_directory_attempts_live_there_and_survive_a_restart(daemons, tmp_path):
    """--run-dir: a running command's directory is in the run directory, its output in
    DIR/outputs; it survives a restart of jq-masterd (a SIGTERM), whose successor
    follows it there to its end, its log whole; once recorded, nothing is left; a
    service's runs go to RUNDIR/services."""
    run_dir = str(tmp_path / "run")
    daemon = daemons(args=["--run-dir", run_dir])

    def where(job_id):
        assert os.listdir(os.path.join(run_dir, "attempts")) == ["%d.1" % job_id]
        assert os.listdir(os.path.join(daemon.state_dir, "outputs")) == ["%d.1" % job_id]
        assert not os.path.exists(os.path.join(daemon.state_dir, "attempts"))
        assert os.path.isdir(os.path.join(run_dir, "services", "attempts"))

    _, log = across_a_clean_restart(daemon, "echo before; sleep 2; echo after", where)
    assert "before\n" in log and "after\n" in log
    wait_until(lambda: not attempt_names(os.path.join(run_dir, "attempts"))
               and not os.listdir(os.path.join(daemon.state_dir, "outputs")),
               what="the attempt to be forgotten")


def test_a_running_command_is_followed_when_the_run_directory_is_set_on_a_restart(
        daemons, tmp_path):
    """A command started by a jq-masterd without --run-dir is followed to its end, its log
    whole, by the next one started with --run-dir (the operator switched it on); the new
    daemon's attempts go to the run directory; nothing is left once both are recorded."""
    run_dir = str(tmp_path / "run")
    daemon = daemons()

    def switch(job_id):
        assert os.listdir(os.path.join(daemon.state_dir, "attempts")) == ["%d.1" % job_id]
        daemon.args += ["--run-dir", run_dir]

    job_id, log = across_a_clean_restart(daemon, "echo before; sleep 2; echo after", switch)
    assert "before\nafter\n" in log
    with daemon.client() as client:
        second = client.submit_job([command("echo again")])
        wait_all_final(client, [second], 30)
        assert client.query_jobs([second], ["status"])[0] == ["success"]
    assert "again\n" in log_of(daemon, second)
    wait_until(lambda: not attempt_names(os.path.join(daemon.state_dir, "attempts"))
               and not attempt_names(os.path.join(run_dir, "attempts"))
               and not os.listdir(os.path.join(daemon.state_dir, "outputs")),
               what="both attempts to be forgotten")


def test_many_running_commands_cost_no_thread_each(daemons):
    """1,000 concurrent sleeps (the issue's figure): the daemon's thread count stays as it
    was with none."""
    count = 1000
    daemon = daemons(args=["--slots", str(count)])
    idle = daemon.thread_count()
    env, mark = marked()
    with daemon.client(timeout=120) as client:
        results = client.submit_many_jobs([[command("sleep 30", env=env)]] * count)
        job_ids = [job_id for ok, job_id in results]
        wait_until(lambda: len(processes_with(mark)) >= count, timeout=120,
                   what="%d sleeps" % count)
        busy = daemon.thread_count()
        for job_id in job_ids:
            client.cancel_job(job_id, True)
        wait_all_final(client, job_ids, 120)
    assert busy <= idle + 2, (idle, busy)
    wait_until(lambda: not processes_with(mark), timeout=60, what="the sleeps to end")


def test_a_bex_job_file_runs_once_however_often_it_is_sent(daemon, tmp_path):
    """jqctl submit --bex: the headers make the command job, the body runs in the shell;
    the same ID submitted again names the same job; a bad header is refused, nothing
    queued."""
    path = tmp_path / "job.bex"
    path.write_text("ID: backup-7\nSubject: nightly backup\nDir: %s\nEnv: WHAT=db\n"
                    "Retry: 2\nTimeout: 60\n\necho saving $WHAT in $(pwd)\nexit 0\n"
                    % tmp_path)
    code, out, err = daemon.jqctl("submit", "--bex", str(path), "--wait")
    assert code == 0, (out, err)
    job_id = int(out.split()[0])
    code, again, err = daemon.jqctl("submit", "--bex", str(path))
    assert code == 0 and int(again) == job_id, (again, err)
    assert "saving db in %s\n" % tmp_path in log_of(daemon, job_id)
    with daemon.client() as client:
        assert client.query_jobs([job_id], ["title", "max_attempts", "status"])[0] == [
            "nightly backup", 2, "success"]
        before = client.query_jobs(None, ["id"])
    path.write_text("ID: backup-8\nsubject: typo\n\ntrue\n")
    code, out, err = daemon.jqctl("submit", "--bex", str(path))
    assert code == 2 and out == "" and "line 2: unknown header 'subject'" in err
    with daemon.client() as client:
        assert client.query_jobs(None, ["id"]) == before


def test_sighup_applies_the_config_files_slots_users_and_retention(daemons, tmp_path):
    """systemctl reload after editing the configuration file: one slot becomes two and the
    job that waited for it starts; a user allowed now may be run_as; the retention ages
    are the new ones; an option the running daemon cannot take (max_jobs) is said to wait
    for a restart; a file with an error changes nothing, and the daemon answers on."""
    path = tmp_path / "masterd.toml"
    path.write_text("[masterd]\nslots = 1\n")
    daemon = daemons(args=["--config", str(path)])
    with daemon.client() as client:
        first, second = (client.submit_job([command("sleep 30")]) for _ in range(2))
        wait_until(lambda: client.query_jobs([second], ["wait_reason"])[0] == ["SLOTS"],
                   what="the second job waiting for the slot")
        with pytest.raises(errors.OpPrereqError, match="user nobody may not run commands"):
            client.submit_job([command("true", run_as="nobody")])
        path.write_text("[masterd]\nslots = 2\nmax_jobs = 50\nallowed_users = ['nobody']\n"
                        "archive_after = '1h'\n")
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: client.query_jobs([second], ["status"])[0] == ["running"],
                   what="the second job started in the new slot")
        log = daemon.stderr()
        assert "SIGHUP: slots changed from 1 to 2" in log, log
        assert "SIGHUP: allowed_users changed from [] to [nobody]" in log
        assert "SIGHUP: max_jobs changed in %s (from %d to 50): it takes effect at the next " \
               "restart" % (path, constants.DEFAULT_MAX_JOBS) in log
        retention = client.query_config_values([constants.CONFIG_RETENTION])[0]
        assert retention["archive_after"] == 3600
        nobody = client.submit_job([command("true", run_as="nobody")])
        assert nobody > second
        path.write_text("[masterd]\nslots = 'two'\n")
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: "the running configuration stays" in daemon.stderr(),
                   what="the error said")
        assert client.list_nodes()[0]["slots"] == 2
        for job_id in (first, second, nobody):
            client.cancel_job(job_id, True)
        wait_all_final(client, [first, second, nobody], 30)


def behind_the_one_slot(daemons, argv, said, job=None):
    """jqctl argv (job's id appended), started while a sleeper holds a one-slot daemon's
    slot, until it said said on stderr; then the slot freed: (its process, the sleeper,
    its stdout and stderr once it ended)."""
    daemon = daemons(args=["--slots", "1"])
    with daemon.client() as client:
        sleeper = client.submit_job([command("sleep 60")])
        wait_until(lambda: client.query_jobs([sleeper], ["status"])[0] == ["running"],
                   what="the sleeper running")
        if job is not None:
            argv = argv + [str(client.submit_job([job]))]
        proc = subprocess.Popen([sys.executable, "-m", "jqueue.cli", "--socket", daemon.socket,
                                 *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        err = b""
        while said.encode() not in err:
            assert time.monotonic() < deadline, err
            err += os.read(proc.stderr.fileno(), 4096)
        client.cancel_job(sleeper, True)
        out, rest = proc.communicate(timeout=30)
    return proc, sleeper, out, (err + rest).decode()


def test_run_follow_says_why_the_job_waits_then_prints_its_output(daemons):
    """One slot, taken: jqctl run --follow says on stderr what its job waits for (once),
    then, when the slot frees, prints the command's output and exits with its status."""
    waited = "waits: the slot of "
    proc, sleeper, out, err = behind_the_one_slot(
        daemons, ["run", "--follow", "--", "sh", "-c", "echo done; exit 4"], waited)
    assert proc.returncode == 4, (out, err)
    assert b"\ndone\n" in out
    job_id = int(err.split("job ")[1].split()[0])
    assert "jqctl: job %d waits: the slot of " % job_id in err
    assert err.count(waited) == 1 and "is busy (job %d)" % sleeper in err


def test_wait_says_why_the_job_waits(daemons):
    """jqctl wait of a job waiting for the one slot says why on stderr (once), then its
    outcome when it ran."""
    proc, sleeper, out, err = behind_the_one_slot(daemons, ["wait"], "waits: the slot of ",
                                                  job=command("true"))
    job_id = int(proc.args[-1])
    said = "jqctl: job %d waits: the slot of " % job_id
    assert proc.returncode == 0, (out, err)
    assert out.decode().startswith("Job %d finished: success" % job_id)
    assert err.count(said) == 1 and "is busy (job %d)" % sleeper in err
