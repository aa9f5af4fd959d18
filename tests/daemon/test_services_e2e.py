"""End-to-end tests of supervised services on one machine: a real jq-masterd keeps them.

Every service of a test carries a fresh marker in its environment, so that its
processes are found (and, at the end, checked gone) whatever else runs here.
"""

import json
import os
import pwd
import re
import shlex
import signal
import time

import pytest
from daemon_helpers import (
    BURSTS,
    KEEP,
    allocated,
    holding,
    mostly_freed,
    processes_with,
    wait_all_final,
)
from test_commands_e2e import wait_until

from jqueue import service


@pytest.fixture
def mark(marks):
    """A marker for the test's services; no process carrying it may outlive the test
    (conftest's marks)."""
    return marks()


@pytest.fixture
def daemon(daemons):
    return daemons()


def view(daemon, name):
    with daemon.client() as client:
        return client.query_services([name])[0]


def wait_state(daemon, name, states, timeout=30, run=None):
    """Wait until the service is in one of states (with a run number >= run); its view."""
    states = [states] if isinstance(states, str) else states
    found = []

    def settled():
        found[:] = [view(daemon, name)]
        return found[0]["state"] in states and (run is None or found[0]["run"] >= run)
    wait_until(settled, timeout, "service %s %s (last: %s)" % (
        name, states, found and (found[0]["state"], found[0]["message"])))
    return found[0]


def events_of(daemon, name):
    with daemon.client() as client:
        return [e["status"] for e in client.wait_for_events(0, {"service": name}, 0)["events"]]


def test_status_exit_codes_list_and_log(daemon, mark):
    """status: 0 RUNNING, 3 not running, 4 unknown; list prints STATE name lines, -o a
    table; the service's output is in its log between our lines."""
    code, out, err = daemon.jqctl("service", "add", "web", "--start", "--env",
                                  "JQ_TEST_MARK=" + mark, "--", "sh", "-c",
                                  "echo hello from $JQ_SERVICE; exec sleep 300")
    assert code == 0 and "service web added" in out, err
    code, out, _ = daemon.jqctl("service", "add", "idle", "--env", "JQ_TEST_MARK=" + mark,
                                "-c", "sleep 300")
    assert code == 0
    running = wait_state(daemon, "web", service.RUNNING)
    code, out, _ = daemon.jqctl("service", "status", "web")
    assert code == 0 and out.startswith("web: RUNNING") and "pid: %d" % running["pid"] in out
    assert daemon.jqctl("service", "status", "idle")[0] == 3
    code, _, err = daemon.jqctl("service", "status", "nosuch")
    assert code == 4 and "service nosuch not found" in err
    assert daemon.jqctl_process("service", "status", "web").returncode == 0
    assert daemon.jqctl_process("service", "status", "nosuch").returncode == 4
    code, out, _ = daemon.jqctl("service", "list")
    assert out.splitlines() == ["STOPPED idle", "RUNNING web"]
    code, out, _ = daemon.jqctl("service", "list", "-o", "name,state,pid,restart")
    lines = out.splitlines()
    assert lines[0].split() == ["Name", "State", "PID", "Restart"]
    assert lines[2].split() == ["web", "RUNNING", str(running["pid"]), "on-failure"]
    wait_until(lambda: "hello from web" in daemon.jqctl("service", "log", "web")[1],
               what="the output in the log")
    log = daemon.jqctl("service", "log", "web")[1]
    assert log.startswith("* START run 1 ") and "* CMD : sh -c " in log
    code, out, _ = daemon.jqctl("service", "stop", "web")
    assert code == 0 and out.startswith("web: STOPPED")
    assert daemon.jqctl("service", "status", "web")[0] == 3
    assert processes_with(mark) == []
    wait_until(lambda: daemon.jqctl("service", "log", "web")[1].endswith("*\n"),
               what="the end of run 1 in the log")
    log = daemon.jqctl("service", "log", "web")[1]
    assert "* EXIT : killed by SIGTERM" in log
    logs = os.path.join(daemon.state_dir, "logs", "services")
    [name] = os.listdir(logs)  # removed by hand: the log is gone, said rather than waited for
    os.unlink(os.path.join(logs, name))
    followed = daemon.jqctl_process("service", "log", "-f", "web")
    assert followed.returncode == 6 and "the log of service " in followed.stderr, followed
    assert "is gone: %s holds 0 of the %d bytes" % (os.path.join(logs, name), len(
        log.encode())) in followed.stderr, followed.stderr
    wait_until(lambda: events_of(daemon, "web")[-1:] == ["STOPPED"], what="STOPPED")
    assert events_of(daemon, "web") == ["NEW", "STARTING", "RUNNING", "STOPPING", "STOPPED"]
    with open(os.path.join(daemon.state_dir, "actions.log"), encoding="utf-8") as stream:
        lines = [line for line in stream if " web: " in line]
    assert [line.split()[4] for line in lines] == ["NEW", "STARTING", "RUNNING", "STOPPING",
                                                   "STOPPED"]
    for name in ("web", "idle"):
        assert daemon.jqctl("service", "remove", name)[0] == 0
    assert daemon.jqctl("service", "list")[1] == ""


def test_stop_kills_every_process_the_service_started(daemon, mark):
    """A service that forks, double-forks with setsid and ignores SIGTERM: stop ends every
    one of its processes, by SIGKILL after stop_timeout."""
    tree = ("trap '' TERM; sleep 300 & (setsid sleep 300 &); (trap '' TERM; sleep 300) & "
            "while :; do sleep 1; done")
    with daemon.client() as client:
        client.add_services([{"name": "tree", "command": tree, "stop_timeout": 1,
                              "env": {"JQ_TEST_MARK": mark}}], start=True)
    wait_state(daemon, "tree", service.RUNNING)
    wait_until(lambda: len(processes_with(mark)) >= 5, what="the tree of processes")
    started = time.monotonic()
    code, out, _ = daemon.jqctl("service", "stop", "tree")
    assert code == 0 and out.startswith("tree: STOPPED"), out
    assert time.monotonic() - started >= 1  # TERM was ignored: SIGKILL after 1 s
    assert processes_with(mark) == []
    assert "killed by SIGKILL" in view(daemon, "tree")["message"]


def test_remove_and_restart_end_every_process_of_the_run(daemon, mark):
    """A running tree with a grandchild in its own session: restart leaves only the new
    run's processes, remove leaves none, not even the escaped grandchild."""
    tree = "(setsid sleep 300 &); sleep 300 & while :; do sleep 1; done"
    with daemon.client() as client:
        client.add_services([{"name": "tree2", "command": tree, "stop_timeout": 2,
                              "env": {"JQ_TEST_MARK": mark}}], start=True)
    wait_state(daemon, "tree2", service.RUNNING)
    wait_until(lambda: len(processes_with(mark)) >= 3, what="the first run's processes")
    first = set(processes_with(mark))
    code, out, _ = daemon.jqctl("service", "restart", "tree2")
    assert code == 0 and out.startswith("tree2: RUNNING"), out
    wait_until(lambda: len(processes_with(mark)) >= 3, what="the second run's processes")
    assert not first & set(processes_with(mark))
    code, out, _ = daemon.jqctl("service", "remove", "tree2")
    assert code == 0, out
    wait_until(lambda: processes_with(mark) == [], what="every process of the service gone")
    assert daemon.jqctl("service", "status", "tree2")[0] == service.STATUS_UNKNOWN


def test_a_crashing_service_is_restarted_then_fatal_and_start_runs_it_again(daemon, mark):
    """Exits at once, restart always: restarted after back-offs, FATAL on the 5th failure
    (in about 15 s: 1+2+4+8), and start runs it again."""
    with daemon.client() as client:
        client.add_services([{"name": "crash", "command": "exit 7", "restart": "always",
                              "env": {"JQ_TEST_MARK": mark}}], start=True)
    fatal = wait_state(daemon, "crash", service.FATAL, timeout=40)
    assert fatal["run"] == 5 and fatal["exit_status"] == 7
    assert "start limit" in fatal["message"]
    wait_until(lambda: events_of(daemon, "crash")[-1:] == ["FATAL"], what="the FATAL event")
    assert events_of(daemon, "crash").count("BACKOFF") == 4
    code, out, _ = daemon.jqctl("service", "start", "crash")
    assert code == 1 and out.startswith("crash: BACKOFF (")
    assert view(daemon, "crash")["run"] == 6
    assert daemon.jqctl("service", "stop", "crash")[0] == 0
    assert view(daemon, "crash")["state"] == service.STOPPED


def test_a_service_over_its_memory_limit_is_killed_whole_and_restarted(daemon, mark):
    """jqctl service add --memory 64M of a shell whose child holds 96 MiB: the node's shim
    kills the run, the message says what it held, and on-failure restarts it (killed
    again); removed, nothing of it is left."""
    code, out, err = daemon.jqctl(
        "service", "add", "hog", "--memory", "64M", "--env", "JQ_TEST_MARK=%s" % mark,
        "--start", "-c", "%s; sleep 1000" % shlex.join(holding(96)))
    assert code == 0, (out, err)
    backoff = wait_state(daemon, "hog", service.BACKOFF)
    assert backoff["signal"] == signal.SIGKILL, backoff
    assert re.match(r"run 1 killed by SIGKILL: its processes held [0-9.]+ MiB, over its "
                    r"memory_max of 64\.0 MiB; restart in 1s\Z", backoff["message"]), backoff
    second = wait_state(daemon, "hog", [service.BACKOFF], run=2)  # restarted, killed again
    assert "run 2 killed by SIGKILL: its processes held " in second["message"]
    assert daemon.jqctl("service", "remove", "hog")[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the service's processes to end")


def test_a_killed_master_leaves_the_service_alone_and_supervising_goes_on(daemons, mark):
    """kill -9 of jq-masterd: the service keeps its pid; the restarted daemon follows it
    (status 0), and restarts it when it dies."""
    daemon = daemons()
    with daemon.client() as client:
        client.add_services([{"name": "web", "command": "exec sleep 300",
                              "env": {"JQ_TEST_MARK": mark}}], start=True)
    pid = wait_state(daemon, "web", service.RUNNING)["pid"]
    daemon.kill()
    assert processes_with(mark) == [pid]
    daemon.start()
    assert view(daemon, "web")["pid"] == pid
    assert daemon.jqctl("service", "status", "web")[0] == 0
    os.kill(pid, signal.SIGKILL)
    restarted = wait_state(daemon, "web", service.RUNNING, run=2)
    assert restarted["pid"] != pid and restarted["restarts"] == 1
    assert processes_with(mark) == [restarted["pid"]]
    assert daemon.jqctl("service", "remove", "web")[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_files_for_stdio_are_appended_and_the_environment_is_minimal(daemon, mark, tmp_path):
    """stdin, stdout and stderr files (appended, never truncated); the environment is the
    minimal base plus env and the JQ_ variables."""
    out, err, inp = tmp_path / "out", tmp_path / "err", tmp_path / "in"
    out.write_text("before\n")
    inp.write_text("from stdin\n")
    script = "cat; env | sort; echo oops >&2; exec sleep 300"
    with daemon.client() as client:
        client.add_services([{"name": "files", "command": script, "stdin": str(inp),
                              "stdout": str(out), "stderr": str(err), "dir": str(tmp_path),
                              "env": {"JQ_TEST_MARK": mark, "LEVEL": "3"}}], start=True)
    wait_state(daemon, "files", service.RUNNING)
    wait_until(lambda: "oops" in err.read_text(), what="stderr in its file")
    text = out.read_text()
    assert text.startswith("before\nfrom stdin\n")
    assert "LEVEL=3\n" in text and "JQ_SERVICE=files\n" in text and "JQ_RUN=1\n" in text
    assert "PATH=" in text and "JQ_SOCKET" not in text
    log = daemon.jqctl("service", "log", "files")[1]
    assert log.startswith("* START run 1 ")
    assert [line for line in log.splitlines() if not line.startswith("* ")] == []
    daemon.jqctl("service", "remove", "files")
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_a_service_runs_as_an_allowed_user(daemons, mark):
    """run_as nobody (allowed): its runs are nobody's, HOME and USER from its entry (looked
    up in a thread before each start)."""
    daemon = daemons(args=["--allowed-users", "nobody"])
    nobody = pwd.getpwnam("nobody")
    with daemon.client() as client:
        client.add_services([{"name": "as-nobody", "run_as": "nobody",
                              "command": "echo $USER $HOME; id -un; exec sleep 300",
                              "env": {"JQ_TEST_MARK": mark}}], start=True)
    running = wait_state(daemon, "as-nobody", service.RUNNING)
    assert os.stat("/proc/%d" % running["pid"]).st_uid == nobody.pw_uid
    wait_until(lambda: "\nnobody\n" in daemon.jqctl("service", "log", "as-nobody")[1],
               what="the run's output")
    assert "nobody %s\n" % nobody.pw_dir in daemon.jqctl("service", "log", "as-nobody")[1]
    daemon.jqctl("service", "remove", "as-nobody")
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_a_service_printing_for_ever_does_not_fill_the_disk(daemons, mark):
    """yes as a service, its log kept to 1 MiB and taking up to 64 MiB/s: it prints
    faster than that, so what the log would drop unread is passed over (a line says so)
    and freed on the disk, and the log itself holds about its last 1 MiB on the disk,
    growing on."""
    daemon = daemons(args=["--log-max-bytes", "1048576", "--service-log-rate", str(64 << 20)])
    code, _, err = daemon.jqctl("service", "add", "chatty", "--start", "--env",
                                "JQ_TEST_MARK=" + mark, "--", "yes", "a line of output")
    assert code == 0, err
    sid = view(daemon, "chatty")["id"]
    output = os.path.join(daemon.state_dir, "services", "attempts", "%d.1" % sid, "output")
    wait_until(mostly_freed(output, 512 << 20), 60, "the run's output to be freed as it grows")
    log = os.path.join(daemon.state_dir, "logs", "services", "%d.log" % sid)
    wait_until(lambda: os.path.getsize(log) > 256 << 20, 60, "the log to pass 256 MiB")
    assert allocated(log) < os.path.getsize(log) // 2  # checkpoints drop its beginning
    kept = daemon.jqctl("service", "log", "chatty")[1]
    assert kept.count("a line of output\n") > 50000 and "* SKIPPED: " in kept
    assert daemon.jqctl("service", "remove", "chatty")[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_a_services_log_keeps_its_end_and_drops_the_rest(daemons, mark):
    """A service printing 8 MB, its log kept to 1 MiB: the log holds its last 1 MiB or a
    little more, from the start of a line, every line up to the last; read from 0 it
    begins there (log_start), its file holds no more on the disk than that, and so again
    after jq-masterd is killed and started again."""
    daemon = daemons(args=["--log-max-bytes", str(KEEP)])
    code, _, err = daemon.jqctl("service", "add", "counter", "--start", "--env",
                                "JQ_TEST_MARK=" + mark, "-c", BURSTS)
    assert code == 0, err
    last = b"300000 a line of its output\n"
    wait_until(lambda: view(daemon, "counter")["log_bytes"] > 8_000_000, 60,
               what="the whole output in the log")
    with daemon.client() as client:
        wait_until(lambda: client.read_service_log(
            "counter", view(daemon, "counter")["log_bytes"] - len(last), exact=True)[
                "data"] == last, 30, "the last line in the log")
    shown = view(daemon, "counter")
    start, end = shown["log_start"], shown["log_bytes"]
    assert KEEP <= end - start <= KEEP + KEEP // 4
    path = os.path.join(daemon.state_dir, "logs", "services", "%d.log" % shown["id"])
    assert os.path.getsize(path) == end

    def whole_log():
        code, out, err = daemon.jqctl("service", "log", "counter")
        assert code == 0, err
        return out
    kept = whole_log()
    assert len(kept.encode()) == end - start
    lines = kept.splitlines()
    first = int(lines[0].split()[0])
    assert lines == ["%d a line of its output" % n for n in range(first, 300001)]
    assert "SKIPPED" not in kept
    daemon.kill()
    daemon.start()
    assert allocated(path) <= end - start + (64 << 10)  # dropped by the recovery
    assert view(daemon, "counter")["log_start"] == start
    assert whole_log() == kept
    assert daemon.jqctl("service", "log", "-n", "2", "counter")[1].splitlines() == lines[-2:]
    assert daemon.jqctl("service", "remove", "counter")[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_a_service_printing_without_pause_gets_its_log_rate_and_no_more(daemons, mark):
    """yes as a service under the default service_log_rate (1 MiB/s, 8 MiB at once): its
    log grows by about that and the rest is skipped (a line says so), while the daemon
    serves jobs as usual. Without the rate, the master copied it as fast as it could,
    in one reactor turn after another: a submit waited a second."""
    daemon = daemons()
    started = time.monotonic()
    code, _, err = daemon.jqctl("service", "add", "chatty", "--start", "--env",
                                "JQ_TEST_MARK=" + mark, "--", "yes", "a line of output")
    assert code == 0, err
    wait_until(lambda: view(daemon, "chatty")["log_bytes"] > 8 << 20, 30, "the first 8 MiB")
    time.sleep(2)
    with daemon.client() as client:
        ids = [client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}])
               for _ in range(20)]
        assert all(row[0] == "success" for row in wait_all_final(client, ids).values())
        logged = view(daemon, "chatty")["log_bytes"]
        assert logged <= (8 << 20) + (time.monotonic() - started + 1) * (1 << 20)
        tail = client.read_service_log("chatty", logged - (2 << 20), 2 << 20, exact=True)
    assert b"* SKIPPED: " in tail["data"]
    assert daemon.jqctl("service", "remove", "chatty")[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_bad_requests_are_refused_clearly_and_leave_no_trace(daemon):
    """Unknown services, bad values, hostile names and paths: one clear error each, the
    daemon up, nothing recorded (no service, no event)."""
    bad = [
        ({"name": "x", "command": "true", "restart": "sometimes"}, "'restart' must be one of"),
        ({"name": "x", "command": "true", "stop_signal": "SIGFOO"}, "'stop_signal' must be"),
        ({"name": "x", "command": "true", "stop_signal": 64}, "'stop_signal' must be"),
        ({"name": "../../etc/passwd", "command": "true"}, "'name' must be a service name"),
        ({"name": "a\nb", "command": "true"}, "'name' must be a service name"),
        ({"name": "x" * 200, "command": "true"}, "'name' must be a service name"),
        ({"name": "x", "command": "true", "dir": "relative"}, "'dir' must be an absolute"),
        ({"name": "x", "command": "true", "stdout": "a/../b"}, "'stdout' must be an absolute"),
        ({"name": "x", "command": "true", "stdin": "/x\0y"}, "'stdin' must be an absolute"),
        ({"name": "x", "command": ""}, "'command' must be a command"),
        ({"name": "x", "command": "true", "node": "nowhere"}, "unknown node nowhere"),
        ({"name": "x", "command": "true", "affinity": "GPU"}, "no node has the tags GPU"),
        ({"name": "x", "command": "true", "bogus": 1}, "unknown parameter(s) 'bogus'"),
        ({"name": "x", "command": "true", "stop_timeout": -1}, "'stop_timeout' must be"),
        ({"name": "x", "command": "true", "run_as": "root; rm"}, "'run_as' must be"),
    ]
    with daemon.client() as client:
        for definition, words in bad:
            with pytest.raises(Exception) as caught:
                client.add_services([definition])
            assert words in str(caught.value), (definition, caught.value)
        with pytest.raises(Exception, match="defined twice"):
            client.add_services([{"name": "d", "command": "true"}] * 2)
        for call, args in ((client.remove_service, ["nosuch"]),
                           (client.control_service, ["nosuch", "start"]),
                           (client.modify_service, ["nosuch", {"dir": "/"}]),
                           (client.read_service_log, ["nosuch"]),
                           (client.query_services, [["nosuch"]])):
            with pytest.raises(Exception, match="service nosuch not found"):
                call(*args)
        assert client.query_services() == []
        assert client.wait_for_events(0, {"kind": "service"}, 0)["events"] == []
        client.add_services([{"name": "ok", "command": "true", "restart": "no"}])
        with pytest.raises(Exception, match="already exists"):
            client.add_services([{"name": "new", "command": "true"},
                                 {"name": "ok", "command": "true"}])
        with pytest.raises(Exception, match="cannot be renamed"):
            client.modify_service("ok", {"name": "other"})
        assert [v["name"] for v in client.query_services()] == ["ok"]
    code, _, err = daemon.jqctl("service", "add", "y", "--stop-signal", "NOPE", "-c", "true")
    assert code == 6 and "'stop_signal' must be a signal name" in err
    code, _, err = daemon.jqctl("service", "modify", "nosuch", "--dir", "/")
    assert code == 4 and "service nosuch not found" in err
    assert daemon.alive()


def test_a_jobmon_configuration_is_imported_and_started(daemon, mark, tmp_path, monkeypatch):
    """A JobMon master file with include-dirs and $NAME expansion: every job becomes a
    service; autostart ones start, restart true restarts, files are JobMon's."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    monkeypatch.setenv("JQ_TEST_LOGDIR", str(tmp_path))
    (tmp_path / "master.json").write_text(json.dumps({
        "supervisor": {"working-dir": str(tmp_path), "control-port": 6666,
                       "include-dirs": ["$JQ_TEST_LOGDIR/jobs/*.json"],
                       "log-file": "$TMP/supervisor.log", "log-level": "warning"},
        "jobs": {"ticker": {"command": "while :; do echo tick; sleep 0.2; done",
                            "stdout": "$JQ_TEST_LOGDIR/ticker.out",
                            "env": {"JQ_TEST_MARK": mark}, "autostart": True,
                            "restart": True, "signal": "SIGINT"}}}))
    (jobs / "more.json").write_text(json.dumps({
        "true-job": {"command": "/bin/true", "stdin": "$DEVNULL", "stdout": "$DEVNULL",
                     "stderr": "$DEVNULL", "env": {"JQ_TEST_MARK": mark},
                     "working-dir": "jobs", "autostart": False, "restart": False}}))
    code, out, err = daemon.jqctl("service", "import", str(tmp_path / "master.json"))
    assert code == 0, err
    assert "service ticker added" in out and "service true-job added" in out
    ticker = wait_state(daemon, "ticker", service.RUNNING)
    definition = ticker["definition"]
    assert (definition["restart"], definition["stop_signal"], definition["dir"]) == (
        "always", "SIGINT", str(tmp_path))
    assert view(daemon, "true-job")["definition"]["dir"] == str(jobs)
    assert view(daemon, "true-job")["state"] == service.STOPPED
    wait_until(lambda: (tmp_path / "ticker.out").exists()
               and "tick" in (tmp_path / "ticker.out").read_text(), what="ticks")
    os.kill(ticker["pid"], signal.SIGKILL)
    wait_state(daemon, "ticker", service.RUNNING, run=2)
    code, out, _ = daemon.jqctl("service", "list")
    assert out.splitlines() == ["RUNNING ticker", "STOPPED true-job"]
    code, _, err = daemon.jqctl("service", "import", str(tmp_path / "master.json"))
    assert code == 1 and "exist already" in err
    code, out, _ = daemon.jqctl("service", "stop", "ticker")
    assert code == 0
    assert processes_with(mark) == []


def test_a_jobmon_file_with_a_mistake_is_refused_whole(daemon, tmp_path):
    """A job without a command, or with an unknown key: nothing is added."""
    (tmp_path / "jobs.json").write_text(json.dumps({
        "good": {"command": "true"}, "bad": {"comand": "true"}}))
    code, _, err = daemon.jqctl("service", "import", str(tmp_path / "jobs.json"))
    assert code == 2 and "job bad: unknown key(s) 'comand'" in err
    (tmp_path / "jobs.json").write_text(json.dumps({
        "good": {"command": "true", "stdout": "$NOT_SET_ANYWHERE/x"}}))
    code, _, err = daemon.jqctl("service", "import", str(tmp_path / "jobs.json"))
    assert code == 2 and "$NOT_SET_ANYWHERE is not set" in err
    assert daemon.jqctl("service", "list")[1] == ""


def test_a_tree_laid_out_as_jobmons_test_suite_is_imported_and_runs(daemon, mark, tmp_path,
                                                                     monkeypatch):
    """JobMon's layout (a master with control-dir and a relative include glob, one job a
    file, commands that are scripts beside them): imported from its directory with
    --start, the scripts run from there with their env, and the stop signal is theirs."""
    suite = tmp_path / "suite"
    (suite / "test-jobs").mkdir(parents=True)
    (suite / "jobfile.json").write_text(json.dumps({"supervisor": {
        "working-dir": ".", "control-dir": "/tmp/supervisor",
        "include-dirs": ["test-jobs/*.json"], "log-file": "jobmon-test-output.log",
        "log-level": "INFO"}}))
    scripts = {"env-values": 'echo "A=$A B=$B"; exec sleep 300',
               "on-signal": "trap 'echo got USR1; exit 0' USR1; echo ready\n"
                            "while :; do sleep 0.1; done"}
    for name, body in scripts.items():
        script = suite / "test-jobs" / name
        script.write_text("#!/bin/sh\n" + body + "\n")
        script.chmod(0o755)
        job = {"command": "test-jobs/" + name, "stdout": str(tmp_path / (name + ".out")),
               "env": {"JQ_TEST_MARK": mark}}
        if name == "env-values":
            job["env"].update(A="a", B="b")
        else:
            job["signal"] = "SIGUSR1"
        (suite / "test-jobs" / (name + ".json")).write_text(json.dumps({name: job}))
    monkeypatch.chdir(suite)
    code, out, err = daemon.jqctl("service", "import", "--start", "jobfile.json")
    assert code == 0, err
    for name in scripts:
        assert "service %s added" % name in out
        assert wait_state(daemon, name, service.RUNNING)["definition"]["dir"] == str(suite)
    wait_until(lambda: (tmp_path / "env-values.out").read_text() == "A=a B=b\n",
               what="env-values' output")
    wait_until(lambda: "ready" in (tmp_path / "on-signal.out").read_text(), what="ready")
    code, out, _ = daemon.jqctl("service", "list")
    assert out.splitlines() == ["RUNNING env-values", "RUNNING on-signal"]
    started = time.monotonic()
    code, out, _ = daemon.jqctl("service", "stop", "on-signal", "env-values")
    assert code == 0, out
    assert time.monotonic() - started < 10  # both ended on their stop signal
    # USR1 went to the run's processes: /bin/sh -c dies of it, or the script's trap
    # ends it (whichever is the run's first process); never the SIGKILL of the timeout.
    message = view(daemon, "on-signal")["message"]
    assert "killed by SIGUSR1" in message or "exited with status 0" in message, message
    assert processes_with(mark) == []
