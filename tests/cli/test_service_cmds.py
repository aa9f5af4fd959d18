"""jqctl service against a fake daemon: what each subcommand sends, prints and exits with
(the daemon's side is tests/daemon/test_services_e2e.py)."""

import json

import pytest
from cli_helpers import Cli

from jqueue import errors, service


@pytest.fixture
def cli():
    return Cli()


def test_add_sends_the_options_given_before_or_after_the_name(cli):
    """add NAME [options] -- ARGV: options on either side of NAME, the command as argv;
    -c STRING is a shell command; unset options are left to the daemon's defaults."""
    result = cli("service", "add", "--node", "node2", "web", "--restart", "always",
                 "--env", "A=1", "--stop-timeout", "3", "--", "serve", "--port", "80")
    assert result.code == 0 and result.out == "service web added on node2\n", result
    [(definitions, start)] = cli.fake.calls_of("add_services")
    assert definitions == [{"name": "web", "node": "node2", "restart": "always",
                            "env": {"A": "1"}, "stop_timeout": 3,
                            "command": ["serve", "--port", "80"]}]
    assert start is False
    result = cli("service", "add", "job", "-c", "exec sleep 9", "--autostart")
    assert result.code == 0 and result.out == "service job added on node1, starting\n"
    assert cli.fake.services["job"]["definition"]["command"] == "exec sleep 9"


@pytest.mark.parametrize("argv, text", [
    (("service", "add", "web"), "needs a command"),
    (("service", "add", "web", "-c", "x", "--", "y"), "not both"),
    (("service", "add", "web", "-c", "x", "--bogus"), "unrecognized arguments"),
    (("service", "modify", "web"), "needs something to change"),
])
def test_add_and_modify_refuse_what_they_cannot_send(cli, argv, text):
    """Usage errors: exit 2, one line naming the problem, nothing sent."""
    result = cli(*argv)
    assert result.code == 2 and text in result.err, result
    assert cli.fake.calls_of("add_services") == cli.fake.calls_of("modify_service") == []


def test_status_exits_0_running_3_not_running_4_unknown(cli):
    """systemctl's convention, with the state on the first line."""
    cli.fake.add_services([{"name": "web", "command": "serve"}], start=True)
    cli.fake.add_services([{"name": "db", "command": "db"}])
    result = cli("service", "status", "web")
    assert result.code == service.STATUS_RUNNING and result.out.startswith("web: RUNNING\n")
    assert "  pid: 1001\n" in result.out and "  command: serve\n" in result.out
    result = cli("service", "status", "db")
    assert result.code == service.STATUS_NOT_RUNNING and result.out.startswith("db: STOPPED")
    result = cli("service", "status", "nosuch")
    assert result.code == service.STATUS_UNKNOWN and "service nosuch not found" in result.err
    result = cli("service", "status", "--json", "web")
    assert json.loads(result.out)["definition"]["command"] == "serve"


def test_list_prints_jobmon_lines_or_a_table(cli):
    """STATE name lines as jobmon list-jobs; -o a table; an unknown field exits 4."""
    cli.fake.add_services([{"name": "a", "command": "x"}, {"name": "b", "command": "y"}])
    cli.fake.control_service("a", "start")
    assert cli("service", "list").out == "RUNNING a\nSTOPPED b\n"
    table = cli("service", "list", "-o", "name,state,restart", "--separator", ":",
                "--no-headers").out
    assert table == "a:RUNNING:on-failure\nb:STOPPED:on-failure\n"
    result = cli("service", "list", "-o", "name,colour")
    assert result.code == 4 and "unknown field 'colour'" in result.err


def test_start_and_stop_wait_until_the_service_settles(cli):
    """start prints the settled state and exits 0 once RUNNING; stop once STOPPED;
    --no-wait prints the daemon's message."""
    cli.fake.add_services([{"name": "web", "command": "serve"}])
    result = cli("service", "start", "web")
    assert result.code == 0 and result.out == "web: RUNNING (pid 1001, run 1, node node1)\n"
    result = cli("service", "stop", "--no-wait", "web")
    assert result.code == 0 and result.out == "stop of service web recorded\n"
    assert cli("service", "status", "web").code == service.STATUS_NOT_RUNNING
    assert cli("service", "remove", "web", "gone").code == 4
    assert cli.fake.services == {}


def test_a_restart_not_done_when_waiting_gives_up_fails_though_the_old_run_runs(cli):
    """restart of a service whose node does not act on it (unreachable): still RUNNING
    (its old run) when the wait gives up: the warning, and exit 1, not success."""
    cli.fake.add_services([{"name": "web", "command": "serve"}], start=True)
    cli.fake.control_service = lambda name, action: (True, "restart of service web sent")
    result = cli("service", "restart", "web")
    assert result.code == 1, result
    assert result.out == "web: RUNNING (pid 1001, run 1, node node1)\n"
    assert "service web: still RUNNING after" in result.err


def test_waiting_for_a_service_to_settle_outlives_losing_the_daemon(cli):
    """start reads the service's state (before the request and until it settles)
    through a restart of the daemon, connecting again as wait does, rather than failing
    as unreachable; the request itself is sent once."""
    cli.fake.add_services([{"name": "web", "command": "serve"}])
    lost = errors.NoMasterError("nobody there")
    cli.fake.fail("query_services", lost, times=2)
    control = cli.fake.control_service

    def control_then_lost(*args):
        answer = control(*args)
        cli.fake.fail("query_services", lost, times=2)
        return answer
    cli.fake.control_service = control_then_lost
    result = cli("service", "start", "web")
    assert result.code == 0 and result.out == "web: RUNNING (pid 1001, run 1, node node1)\n"
    assert result.err == 2 * "jqctl: nobody there; connecting again\njqctl: connected again\n"
    assert cli.fake.services["web"]["run"] == 1  # the request was sent once


def test_log_says_on_stderr_what_the_log_dropped_before_its_start(cli):
    """A service's log keeps its end: read from 0, it begins at its start, and jqctl says
    on stderr how many bytes before it were dropped; the lines printed are whole."""
    cli.fake.add_services([{"name": "web", "command": "serve"}])
    cli.fake.service_logs["web"] = b"".join(b"line %03d\n" % n for n in range(100))
    cli.fake.service_log_starts["web"] = 810
    result = cli("service", "log", "web")
    assert result.code == 0 and result.out.splitlines() == ["line %03d" % n
                                                            for n in range(90, 100)]
    assert result.err == ("jqctl: 810 bytes of the log from byte 0 were dropped before they "
                          "could be printed (a service's log keeps its last log_max_bytes)\n")


def test_import_dry_run_prints_the_definitions_and_import_adds_them(cli, tmp_path):
    """A JobMon job file: --dry-run changes nothing; then every job is added, --node
    places those that do not say; a second import is refused unless --replace."""
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"web": {"command": "serve", "autostart": True,
                                        "restart": True},
                                "db": {"command": "db", "node": "node3"}}))
    result = cli("service", "import", "--dry-run", "--node", "node2", str(path))
    definitions = json.loads(result.out)
    assert [(d["name"], d["node"], d["restart"]) for d in definitions] == [
        ("web", "node2", True), ("db", "node3", False)]
    assert cli.fake.services == {}
    result = cli("service", "import", "--node", "node2", str(path))
    assert result.code == 0 and result.out == ("service web added on node2, starting\n"
                                               "service db added on node3\n"), result
    assert cli.fake.services["web"]["definition"]["restart"] == service.RESTART_ALWAYS
    result = cli("service", "import", str(path))
    assert result.code == 1 and "web, db exist already" in result.err
    result = cli("service", "import", "--replace", str(path))
    assert result.code == 0 and result.out == "service web modified\nservice db modified\n"


def test_listen_service_asks_for_that_services_events_only(cli):
    """listen --service NAME: the filter goes to WaitForEvents; one action-log line each."""
    cli.fake.events = [
        {"serial": 1, "time": 1795000000, "kind": "service", "job": 0, "node": "node2",
         "status": "BACKOFF", "message": "web: run 1 exited with status 1",
         "service": "web"},
        {"serial": 2, "time": 1795000001, "kind": "service", "job": 0, "node": "node2",
         "status": "RUNNING", "message": "db: run 1", "service": "db"}]
    result = cli("listen", "1", "--since", "0", "--service", "web")
    assert result.code == 0, result
    assert result.out.split()[2:] == ["node2", "0", "BACKOFF", "web:", "run", "1", "exited",
                                      "with", "status", "1"]
    assert cli.fake.calls_of("wait_for_events")[0][1] == {"service": "web"}
