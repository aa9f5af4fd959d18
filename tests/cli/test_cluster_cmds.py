"""Tests of jqctl's cluster commands (jqueue.cli.cluster_cmds) with fakes: no daemon, no RPC.

The LUXI side is FakeLuxiClient (its ``cluster`` dict holds the daemon's answers); the
state-directory side is FakeClusterOps standing in for jqueue.cluster.admin.
"""

import inspect
import io
import os
import sys
import time

import pytest
from cli_helpers import Cli
from fakes_cluster import FakeClusterOps

from jqueue import errors, serializer
from jqueue.cli import app, cluster_cmds, exitcodes
from jqueue.cluster import admin, membership

NODES = [
    {"name": "c1", "address": "127.0.0.1:7001", "role": "candidate", "reachable": True,
     "in_sync": True, "position": [1, 2, 35], "last_error": None},
    {"name": "m", "address": "127.0.0.1:7000", "role": "master", "reachable": True,
     "in_sync": True, "position": [1, 2, 35], "last_error": None},
    {"name": "n1", "address": "127.0.0.1:7101", "role": "node", "reachable": False,
     "in_sync": None, "position": None, "last_error": "connection refused"},
]
INFO = {"name": "prod", "master": "m", "epoch": 1, "version": 4, "session": 2, "min_acks": 1,
        "min_acks_setting": None, "ack_timeout": 10.0, "mode": "cluster", "fenced": None,
        "nodes": [{"name": "m", "address": "127.0.0.1:7000", "role": "master"}]}


class ClusterCli(Cli):
    """jqctl in-process with the daemon's cluster answers and FakeClusterOps."""

    def __init__(self):
        super().__init__()
        self.fake.cluster = {"info": INFO, "nodes": NODES, "bundle": {"format": 1}}
        self.ops = FakeClusterOps()


@pytest.fixture
def cli(monkeypatch, tmp_path):
    made = ClusterCli()
    monkeypatch.setattr(cluster_cmds, "clusterops", lambda: made.ops)
    monkeypatch.delenv(cluster_cmds.STATE_DIR_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    return made


def _config(master="m"):
    return membership.ClusterConfig("prod", master, {
        "m": {"address": "127.0.0.1:7000", "candidate": True},
        "c1": {"address": "127.0.0.1:7001", "candidate": True}})


def _node_dir(path, name, config):
    """A state directory of node name in config (cluster.json and node.json)."""
    os.makedirs(path, exist_ok=True)
    membership.save_config(str(path), config)
    membership.NodeState(str(path), name, epoch=config.epoch, master=config.master).save()
    return str(path)


# Parsing


@pytest.mark.parametrize("argv, func, expected", [
    (["cluster", "init", "--name", "p", "--node", "m", "--address", "h:1", "--min-acks", "2",
      "--ack-timeout", "0.5"], cluster_cmds.cmd_cluster_init,
     {"name": "p", "node": "m", "address": "h:1", "min_acks": 2, "ack_timeout": 0.5,
      "state_dir": None}),
    (["cluster", "info", "--json"], cluster_cmds.cmd_cluster_info, {"json": True}),
    (["cluster", "verify"], cluster_cmds.cmd_cluster_verify, {"json": False}),
    (["node", "init", "--name", "c1", "--state-dir", "/s"], cluster_cmds.cmd_node_init,
     {"name": "c1", "state_dir": "/s"}),
    (["node", "add", "c1", "--address", "h:2", "--candidate", "--csr", "c1.csr"],
     cluster_cmds.cmd_node_add, {"name": "c1", "candidate": True, "csr": "c1.csr",
                                 "bundle": None}),
    (["node", "join", "--bundle", "b"], cluster_cmds.cmd_node_join, {"bundle": "b"}),
    (["node", "list", "--json"], cluster_cmds.cmd_node_list, {"json": True}),
    (["node", "remove", "c1"], cluster_cmds.cmd_node_remove, {"name": "c1"}),
    (["node", "modify", "c1", "--candidate", "no"], cluster_cmds.cmd_node_modify,
     {"name": "c1", "candidate": "no"}),
    (["--timeout", "7", "master-failover", "--no-voting", "--yes", "--timeout", "3",
      "--start"], cluster_cmds.cmd_master_failover,
     {"no_voting": True, "yes": True, "failover_timeout": 3.0, "start": True, "timeout": 7.0}),
])
def test_cluster_commands_parse_to_their_function_and_values(argv, func, expected):
    """Each cluster command line selects its function and carries the parsed values."""
    args = app.build_parser().parse_args(argv)
    assert args.func is func
    for key, value in expected.items():
        assert getattr(args, key) == value, key


@pytest.mark.parametrize("argv", [
    ["cluster", "init", "--name", "p", "--node", "m"],
    ["cluster", "init", "--name", "p", "--node", "m", "--address", "h:1", "--min-acks", "-1"],
    ["cluster", "init", "--name", "p", "--node", "m", "--address", "h:1", "--ack-timeout", "0"],
    ["node", "add", "c1", "--csr", "x"],
    ["node", "modify", "c1", "--candidate", "maybe"],
    ["node", "remove"],
    ["master-failover", "--timeout", "soon"],
])
def test_bad_cluster_command_lines_are_usage_errors(cli, argv):
    """Missing or malformed arguments exit 2 with one line, touching nothing."""
    code, out, err = cli(*argv)
    assert code == exitcodes.EXIT_USAGE and err.startswith("jqctl: ") and out == ""
    assert cli.ops.calls == [] and cli.fake.calls == []


# Commands on the local state directory


def test_cluster_init_passes_its_options_and_prints_next_steps(cli, monkeypatch, tmp_path):
    """cluster init calls init_cluster on $JQ_STATE_DIR and says how to start the daemons."""
    monkeypatch.setenv(cluster_cmds.STATE_DIR_ENV_VAR, str(tmp_path / "st"))
    cli.ops.config = _config()
    code, out, _ = cli("cluster", "init", "--name", "prod", "--node", "m", "--address",
                       "127.0.0.1:7000", "--min-acks", "1", "--ack-timeout", "2")
    assert code == 0
    assert cli.ops.calls == [("init_cluster", (str(tmp_path / "st"), "prod", "m",
                                               "127.0.0.1:7000", 1, 2.0))]
    assert "Cluster prod created: m (127.0.0.1:7000) is its master, epoch 1." in out
    assert "jq-noded --state-dir %s --listen 127.0.0.1:7000" % (tmp_path / "st") in out
    assert "jq-masterd --state-dir %s" % (tmp_path / "st") in out


def test_a_refused_init_is_one_line(cli):
    """A clusterops refusal (a cluster already there) is one line and exit status 6."""
    cli.ops.fail("init_cluster", errors.ConfigurationError("/s/cluster.json exists"))
    code, out, err = cli("cluster", "init", "--name", "p", "--node", "m", "--address", "h:1",
                         "--state-dir", "/s")
    assert (code, out, err) == (exitcodes.EXIT_REFUSED, "", "jqctl: /s/cluster.json exists\n")


def test_node_init_prints_the_csr_and_the_command_for_the_master(cli):
    """node init names the CSR file and the node add command to run on the master."""
    code, out, _ = cli("node", "init", "--name", "c1", "--state-dir", "/st")
    assert code == 0 and cli.ops.calls == [("init_node", ("/st", "c1"))]
    assert "/state/tls/node.csr" in out
    assert "jqctl node add c1 --address HOST:PORT [--candidate] --csr node.csr" in out


def test_node_add_sends_the_csr_and_writes_the_bundle(cli, tmp_path):
    """node add sends AddNode with the CSR and writes the bundle to NAME.bundle."""
    (tmp_path / "c1.csr").write_text("-----BEGIN CERTIFICATE REQUEST-----\n")
    code, out, _ = cli("node", "add", "c1", "--address", "127.0.0.1:7001", "--candidate",
                       "--csr", "c1.csr")
    assert code == 0
    assert cli.fake.calls_of("add_node") == [
        ("c1", "127.0.0.1:7001", True, "-----BEGIN CERTIFICATE REQUEST-----\n")]
    assert cli.ops.written == {"c1.bundle": {"format": 1}}
    assert "added as master candidate; bundle written to c1.bundle" in out
    assert "jqctl node join --bundle c1.bundle --state-dir DIR" in out


def test_node_add_with_an_unreadable_csr_is_a_usage_error(cli):
    """A CSR file that cannot be read exits 2 before asking the daemon."""
    code, _, err = cli("node", "add", "c1", "--address", "h:1", "--csr", "missing.csr",
                       "--bundle", "out")
    assert code == exitcodes.EXIT_USAGE and "cannot read missing.csr" in err
    assert cli.fake.calls == []


def test_node_join_installs_the_bundle_and_says_what_to_start(cli, tmp_path):
    """node join reads the bundle, joins, and prints the jq-noded command with the address."""
    state_dir = _node_dir(tmp_path / "c1", "c1", _config())
    cli.ops.config = _config()
    code, out, _ = cli("node", "join", "--bundle", "c1.bundle", "--state-dir", state_dir)
    assert code == 0
    assert [name for name, _ in cli.ops.calls] == ["read_bundle", "join_node"]
    assert "Joined cluster prod (c1) as candidate; its master is m (127.0.0.1:7000)" in out
    assert "jq-noded --state-dir %s --listen 127.0.0.1:7001" % state_dir in out


# Commands through jq-masterd


def test_node_list_prints_a_table(cli):
    """node list shows one aligned row per node with yes/no/- and positions e/s/q."""
    code, out, _ = cli("node", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["Node", "Address", "Role", "Reachable", "In",
                                              "sync", "Position", "Tags", "Jobs", "Heartbeat",
                                              "Slots", "Running", "Load", "MemFree",
                                              "MemHeld"]
    assert lines[1].split()[:6] == ["c1", "127.0.0.1:7001", "candidate", "yes", "yes",
                                    "1/2/35"]
    assert lines[3].split()[:6] == ["n1", "127.0.0.1:7101", "node", "no", "-", "-"]
    assert lines[4:] == ["n1: connection refused"]  # why the node that does not answer


def test_node_list_shows_tags_health_slots_and_running_jobs(cli, monkeypatch):
    """The command jobs' columns: tags, ok/NOPING/drained, last heartbeat, used/total
    slots, the jobs running there, the load over the CPUs, the memory free of the
    total and what memory_max hold of the memory for commands (its total less its
    memory_reserve; - while unknown)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    cli.fake.cluster["nodes"] = [
        dict(NODES[0], tags=["LINUX", "24GB"], drained=False, offline=False, heartbeat=True,
             last_heartbeat=1795000000.0, slots=4, slots_used=1, running_jobs=[12],
             load=1.5, cpus=4, mem_total=8 * 2**30, mem_available=1536 * 2**20,
             mem_reserved=2**30, mem_held=5 * 2**30),
        dict(NODES[1], tags=[], drained=True, offline=False, heartbeat=False,
             last_heartbeat=None, slots=2, slots_used=0, running_jobs=[])]
    code, out, _ = cli("node", "list")
    first, second = out.splitlines()[1:3]
    assert first.split()[6:] == ["LINUX,24GB", "ok", "2026-11-18", "11:06:40", "1/4", "12",
                                 "1.50/4", "1.5G/8.0G", "5.0G/7.0G"]
    assert second.split()[6:] == ["-", "drained", "-", "0/2", "-", "-", "-", "-"]


def test_node_list_says_when_a_nodes_clock_is_off(cli, monkeypatch):
    """A node whose clock differs from the master's by CLOCK_SKEW_WARN or more has it
    said beside its heartbeat; a small difference, or none known, says nothing."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    cli.fake.cluster["nodes"] = [
        dict(NODES[0], heartbeat=True, last_heartbeat=1795000000.0, clock_skew=-3600.4),
        dict(NODES[1], heartbeat=True, last_heartbeat=1795000000.0, clock_skew=0.3),
        dict(NODES[2], heartbeat=True, last_heartbeat=1795000000.0, clock_skew=None)]
    lines = cli("node", "list")[1].splitlines()
    assert "2026-11-18 11:06:40 (clock -3600s)" in lines[1]
    assert all("clock" not in line for line in lines[2:])


def test_node_modify_sets_tags_drain_and_offline(cli):
    """--tags, --drain and --offline go to ModifyNode as changes; one is needed."""
    code, out, _ = cli("node", "modify", "n1", "--tags", "LINUX, 24GB", "--drain", "yes")
    assert code == 0 and "tagged LINUX,24GB, drained" in out
    assert cli.fake.calls[-1] == ("modify_node", ("n1", None,
                                                  {"tags": ["LINUX", "24GB"], "drained": True}))
    assert cli("node", "modify", "n1")[0] == 2


def test_node_list_json_is_the_daemon_answer(cli):
    """node list --json prints the rows as the daemon sent them."""
    code, out, _ = cli("node", "list", "--json")
    assert code == 0 and serializer.loads(out) == NODES


def test_node_remove_and_modify_report_the_version_and_missed_nodes(cli):
    """remove and modify print the new version and name nodes that missed it on stderr."""
    cli.fake.cluster["unreachable"] = {"n1": "connection refused"}
    code, out, err = cli("node", "remove", "c1")
    assert code == 0 and out == "Node c1 removed; configuration version 3\n"
    assert err == ("jqctl: node n1 did not get the new configuration yet (the master sends "
                   "it again until it takes it): connection refused\n")
    code, out, _ = cli("node", "modify", "n1", "--candidate", "yes")
    assert code == 0 and "Node n1 is now a master candidate" in out
    assert cli.fake.calls_of("modify_node") == [("n1", True)]
    cli.fake.cluster["changed"] = False
    assert "already a master candidate" in cli("node", "modify", "n1", "--candidate", "yes")[1]


def test_cluster_info_text_and_json(cli):
    """cluster info prints the cluster's facts; --json the daemon's object."""
    code, out, _ = cli("cluster", "info")
    assert code == 0 and "Cluster: prod" in out and "Master: m" in out
    assert "Epoch: 1, session: 2, configuration version: 4" in out
    assert "1 candidate copies required (default: majority), ack timeout 10.0s" in out
    assert serializer.loads(cli("cluster", "info", "--json")[1]) == INFO


@pytest.mark.parametrize("report, code, lines", [
    ({"c1": {"missing": [], "differ": [], "extra": [], "archive_missing": [],
             "archive_extra": [], "position": [1, 2, 9]}}, 0, ["c1: in sync (position 1/2/9)"]),
    ({"c1": {"missing": [1, 2, 3, 4, 5, 6], "differ": [9], "extra": [],
             "archive_missing": [], "archive_extra": [12], "position": [1, 2, 3]},
      "c2": {"missing": [], "position": None}}, 1,
     ["c1: 6 missing (1, 2, 3, 4, 5, ...); 1 differ (9); 1 archive extra (12)",
      "c2: in sync (position -)"]),
    ({"c1": {"missing": [4]}, "c2": {"error": "RPC resync_digests to node c2 failed"}}, 5,
     ["c1: 1 missing (4)", "c2: unreachable: RPC resync_digests to node c2 failed"]),
    ({}, 0, ["No master candidates: nothing to verify."]),
])
def test_cluster_verify_lines_and_exit_status(cli, report, code, lines):
    """verify: 'in sync' or counts with the first ids; exit 0, 1 on a difference, 5 unreachable."""
    cli.fake.cluster["verify"] = report
    result = cli("cluster", "verify")
    assert result[0] == code and result[1].splitlines() == lines


def test_cluster_methods_on_a_single_node_daemon_are_refused(cli):
    """Against a daemon without cluster.json, the LUXI commands exit 6 with its message;
    node list shows the machine's own node."""
    cli.fake.cluster = None
    for argv in (["cluster", "info"], ["cluster", "verify"]):
        code, _, err = cli(*argv)
        assert (code, err) == (exitcodes.EXIT_REFUSED,
                               "jqctl: not a cluster (no cluster.json)\n"), argv
    code, out, _ = cli("node", "list")
    assert code == 0 and out.splitlines()[1].split() == [
        "vm", "-", "master", "yes", "-", "-", "-", "ok", "-", "0/2", "-", "-", "-", "-"]


# master-failover


def test_failover_without_a_terminal_needs_yes(cli):
    """Without --yes and without a terminal, master-failover refuses (exit 2), asking nothing."""
    code, _, err = cli("master-failover", "--state-dir", "/st")
    assert code == exitcodes.EXIT_USAGE and "--yes" in err
    assert cli.ops.calls == [("check_failover", ("/st",))]


def test_failover_checks_the_state_dir_before_asking(cli):
    """A state directory that cannot fail over is refused before any question."""
    cli.ops.fail("check_failover", errors.ConfigurationError(
        "not part of a cluster: run jqctl cluster init or jqctl node join"))
    code, _, err = cli("master-failover", "--state-dir", "/st", stdin="yes\n", tty=True)
    assert code == exitcodes.EXIT_REFUSED
    assert err == "jqctl: not part of a cluster: run jqctl cluster init or jqctl node join\n"
    assert cli.ops.calls == [("check_failover", ("/st",))]


def test_failover_with_yes_prints_the_outcome(cli):
    """--yes elects without asking and prints the epoch, votes and what is next."""
    code, out, _ = cli("master-failover", "--yes", "--state-dir", "/st", "--timeout", "4")
    assert code == 0
    name, (state_dir, voting, timeout, confirm) = cli.ops.calls[1]
    assert (name, state_dir, voting, timeout) == ("master_failover", "/st", True, 4.0)
    assert "is now the master, epoch 2 (previous master: n1)." in out
    assert "Votes: n2, n3" in out and "Refused: none" in out
    assert "Previous master told to step down: yes" in out
    assert "Next: jq-masterd --state-dir /st" in out


def test_failover_asks_on_a_terminal_and_a_no_aborts(cli):
    """On a terminal, an answer other than yes aborts with status 130 and changes nothing."""
    code, _, err = cli("master-failover", "--state-dir", "/st", stdin="n\n", tty=True)
    assert code == exitcodes.EXIT_INTERRUPTED and "aborted" in err
    assert [name for name, _ in cli.ops.calls] == ["check_failover"]
    code, out, _ = cli("master-failover", "--state-dir", "/st", stdin="yes\n", tty=True)
    assert code == 0 and cli.ops.calls[-1][0] == "master_failover"
    assert cli.ops.calls[-1][1][1] is True


def test_failover_without_voting_confirms_the_warning(cli):
    """--no-voting passes the library's warning to the terminal; a no aborts with 130."""
    code, _, err = cli("master-failover", "--no-voting", "--state-dir", "/st", stdin="no\n",
                       tty=True)
    assert code == exitcodes.EXIT_INTERRUPTED and "aborted" in err
    assert "Failover without voting. Continue?" in err
    code, out, _ = cli("master-failover", "--no-voting", "--yes", "--state-dir", "/st")
    assert code == 0 and cli.ops.calls[-1][1][1] is False and "epoch 2" in out


def test_failover_start_spawns_the_daemon_and_waits(cli, monkeypatch):
    """--start spawns jq-masterd on the state directory and waits until it answers."""
    started = []
    monkeypatch.setattr(cluster_cmds, "start_masterd",
                        lambda ctx, state_dir: started.append(state_dir))
    code, out, _ = cli("master-failover", "--yes", "--start", "--state-dir", "/st")
    assert code == 0 and started == ["/st"] and "Next:" not in out


class _Proc:
    """A spawned daemon: exits with status after polls answers of None."""

    def __init__(self, polls, status):
        self.pid, self._polls, self._status = 4242, polls, status

    def poll(self):
        if self._polls:
            self._polls -= 1
            return None
        return self._status


def test_start_masterd_waits_for_the_socket(monkeypatch):
    """start_masterd polls the new daemon's socket until it answers, then says so."""
    answers = iter([False, False, True])
    monkeypatch.setattr(cluster_cmds, "spawn_masterd", lambda d: (_Proc(9, 0), "/st/log"))
    monkeypatch.setattr(cluster_cmds, "_answers", lambda path: next(answers))
    out, sleeps = io.StringIO(), []
    ctx = app.Context(None, stdout=out, sleep=sleeps.append)
    cluster_cmds.start_masterd(ctx, "/st")
    assert len(sleeps) == 2 and "answers on /st/run/jqueue.sock" in out.getvalue()


def test_start_masterd_reports_a_daemon_that_exits(monkeypatch):
    """A daemon that exits before answering is a one-line error naming its log."""
    monkeypatch.setattr(cluster_cmds, "spawn_masterd", lambda d: (_Proc(1, 1), "/st/log"))
    monkeypatch.setattr(cluster_cmds, "_answers", lambda path: False)
    ctx = app.Context(None, stdout=io.StringIO(), sleep=lambda s: None)
    with pytest.raises(exitcodes.CommandError, match="exited with status 1; see /st/log"):
        cluster_cmds.start_masterd(ctx, "/st")


def test_masterd_command_runs_the_jq_masterd_program_on_the_state_dir(monkeypatch, tmp_path):
    """The spawned command is the jq-masterd program beside this Python (so the process is
    named jq-masterd), else this Python running the daemon's module."""
    script = tmp_path / "jq-masterd"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert cluster_cmds.masterd_command("/st") == [str(script), "--state-dir", "/st"]
    script.unlink()
    assert cluster_cmds.masterd_command("/st") == [
        str(tmp_path / "python"), "-m", "jqueue.daemon.masterd", "--state-dir", "/st"]


def _fake_systemctl(tmp_path, monkeypatch, state_dir, load_state="loaded"):
    """A systemctl on PATH that shows a jq-masterd unit on state_dir and logs its calls."""
    log = tmp_path / "systemctl.log"
    script = tmp_path / "bin" / "systemctl"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\necho \"$@\" >> %s\n"
        "if [ \"$1\" = show ]; then\n"
        "  echo LoadState=%s\n"
        "  echo 'ExecStart={ path=/usr/bin/jq-masterd ; argv[]=/usr/bin/jq-masterd "
        "--state-dir %s ; ignore_errors=no }'\nfi\n" % (log, load_state, state_dir))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (script.parent, os.environ["PATH"]))
    return log


def test_start_masterd_goes_through_systemd_where_its_unit_runs_the_state_dir(
        tmp_path, monkeypatch):
    """With jq-masterd.service installed for the state directory, --start runs
    systemctl start jq-masterd.service instead of spawning the daemon."""
    log = _fake_systemctl(tmp_path, monkeypatch, "/st")
    monkeypatch.setattr(cluster_cmds, "spawn_masterd", lambda d: pytest.fail("spawned"))
    monkeypatch.setattr(cluster_cmds, "_answers", lambda path: True)
    out = io.StringIO()
    cluster_cmds.start_masterd(app.Context(None, stdout=out, sleep=lambda s: None), "/st")
    assert "start jq-masterd.service" in log.read_text()
    assert "started by systemd (jq-masterd.service)" in out.getvalue()


def test_systemd_is_not_used_for_another_state_dir_or_a_missing_unit(tmp_path, monkeypatch):
    """A unit running another state directory, or not installed, is not used."""
    _fake_systemctl(tmp_path, monkeypatch, "/var/lib/jqueue")
    assert not cluster_cmds.systemd_runs_masterd_on("/st")
    assert cluster_cmds.systemd_runs_masterd_on("/var/lib/jqueue")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert not cluster_cmds.systemd_runs_masterd_on("/var/lib/jqueue")


# Who is the master


def _unreachable(path, timeout):
    raise errors.NoMasterError("no jqueue daemon listening on %s (No such file)" % path)


def test_jqctl_on_a_candidate_names_the_master(cli, tmp_path):
    """With the daemon unreachable on a cluster node, the error says who the master is."""
    state_dir = _node_dir(tmp_path / "c1", "c1", _config())
    cli.ops.master = ("m", "127.0.0.1:7000", 1)
    socket = os.path.join(state_dir, "run", "jqueue.sock")
    code, out, err = cli("--socket", socket, "list", factory=_unreachable)
    assert code == exitcodes.EXIT_UNREACHABLE and out == ""
    assert err == "jqctl: this node (c1) is not the master: m (127.0.0.1:7000) is (epoch 1)\n"
    assert cli.ops.calls == [("learn_master", (state_dir, 2.0))]


@pytest.mark.parametrize("command", [["wait", "1"], ["log", "-f", "1"], ["watch", "1"]])
def test_following_on_a_candidate_names_the_master_at_once(cli, tmp_path, command):
    """wait, log -f and watch on a candidate (its socket never reaches the master) say who
    the master is at once, exit 5, instead of connecting again for two minutes."""
    state_dir = _node_dir(tmp_path / "c1", "c1", _config())
    cli.ops.master = ("m", "127.0.0.1:7000", 1)
    socket = os.path.join(state_dir, "run", "jqueue.sock")
    result = cli("--socket", socket, *command, factory=_unreachable)
    assert result == (exitcodes.EXIT_UNREACHABLE, "", "jqctl: this node (c1) is not the "
                      "master: m (127.0.0.1:7000) is (epoch 1)\n")
    assert cli.sleeps == [] and cli.ops.calls == [("learn_master", (state_dir, 2.0))]


class FailoverAfter(list):
    """Sleeps (a list, as Cli keeps them) after which the cluster's master moves to m."""

    def __init__(self, ops, count):
        super().__init__()
        self.ops, self.count = ops, count

    def append(self, seconds):
        super().append(seconds)
        if len(self) == self.count:
            self.ops.master = ("m", "127.0.0.1:7000", 2)


def test_following_on_the_master_gives_up_once_a_failover_moved_it(cli, tmp_path):
    """jqctl wait on the master whose jq-masterd is lost connects again (a restart) and
    looks every MASTER_CHECK_INTERVAL seconds at who the master is: once a failover made
    another node master, it says so and exits 5, not at the end of the two minutes."""
    state_dir = _node_dir(tmp_path / "c1", "c1", _config(master="c1"))
    cli.ops.master = ("c1", "127.0.0.1:7001", 1)
    cli.sleeps = FailoverAfter(cli.ops, 5)
    job_id = cli.fake.add_job(status="running")
    cli.fake.fail("wait_for_job_change", errors.ConnectionClosedError("connection closed"))
    socket = os.path.join(state_dir, "run", "jqueue.sock")
    code, out, err = cli("--socket", socket, "wait", job_id)
    assert (code, out) == (exitcodes.EXIT_UNREACHABLE, "")
    assert err.splitlines() == [
        "jqctl: connection closed; connecting again",
        "jqctl: this node (c1) is not the master: m (127.0.0.1:7000) is (epoch 2)"]
    assert sum(cli.sleeps) == app.MASTER_CHECK_INTERVAL
    assert cli.ops.calls == [("learn_master", (state_dir, 2.0))] * 2


def test_the_state_dir_may_come_from_the_environment(cli, monkeypatch, tmp_path):
    """JQ_STATE_DIR names the state directory when the socket does not tell it."""
    state_dir = _node_dir(tmp_path / "c1", "c1", _config())
    monkeypatch.setenv(cluster_cmds.STATE_DIR_ENV_VAR, state_dir)
    cli.ops.master = ("m", "127.0.0.1:7000", 1)
    code, _, err = cli("--socket", "/elsewhere/jq.sock", "queue", "info", factory=_unreachable)
    assert code == exitcodes.EXIT_UNREACHABLE and "is not the master: m" in err


def test_on_the_master_itself_the_error_says_its_daemon_is_down(cli, tmp_path):
    """On the master, the message says this node is the master and keeps the cause."""
    state_dir = _node_dir(tmp_path / "m", "m", _config())
    cli.ops.master = ("m", "127.0.0.1:7000", 1)
    socket = os.path.join(state_dir, "run", "jqueue.sock")
    _, _, err = cli("--socket", socket, "list", factory=_unreachable)
    assert err.startswith("jqctl: this node (m) is the master (epoch 1) but jq-masterd does "
                          "not answer: no jqueue daemon listening on ")


def test_without_cluster_files_or_with_broken_ones_the_error_is_unchanged(cli, tmp_path):
    """No cluster.json, or a lookup that fails, keeps the plain one-line error."""
    code, _, err = cli("--socket", str(tmp_path / "run" / "jqueue.sock"), "list",
                       factory=_unreachable)
    assert code == exitcodes.EXIT_UNREACHABLE and err.startswith("jqctl: no jqueue daemon")
    state_dir = _node_dir(tmp_path / "c1", "c1", _config())
    cli.ops.fail("learn_master", errors.ConfigurationError("node.json: invalid"))
    _, _, err = cli("--socket", os.path.join(state_dir, "run", "jqueue.sock"), "list",
                    factory=_unreachable)
    assert err.startswith("jqctl: no jqueue daemon listening") and err.count("\n") == 1


def test_the_real_who_is_master_names_a_newer_master_from_node_json(tmp_path):
    """With the real clusterops, node.json's newer epoch names the master (no fakes)."""
    state_dir = _node_dir(tmp_path / "c1", "c1", _config())
    membership.NodeState(state_dir, "c1", epoch=2, master="c1").save()
    socket = os.path.join(state_dir, "run", "jqueue.sock")
    message = cluster_cmds.not_master_message(socket, errors.NoMasterError("down"))
    assert message == "this node (c1) is the master (epoch 2) but jq-masterd does not " \
                      "answer: down"


# The fake stays honest


def test_fake_clusterops_has_the_signatures_of_clusterops():
    """Every public function of FakeClusterOps has the signature of clusterops' function."""
    for name, member in vars(FakeClusterOps).items():
        if name.startswith("_") or name == "fail" or not callable(member):
            continue
        real = inspect.signature(getattr(admin, name))
        fake = inspect.signature(member)
        real_params = [p for p in real.parameters if p != "clients"]
        assert list(fake.parameters)[1:] == real_params, name


def test_node_list_without_jq_masterd_shows_the_last_known_configuration(cli, tmp_path):
    """On a candidate (no jq-masterd), node list shows this node's configuration and which
    nodes answer now, with a note on standard error, instead of refusing."""
    state_dir = _node_dir(tmp_path / "c1", "c1", _config())
    cli.ops.config = _config()
    cli.ops.nodes = [dict(NODES[0], in_sync=None), dict(NODES[2], in_sync=None)]
    socket = os.path.join(state_dir, "run", "jqueue.sock")
    code, out, err = cli("--socket", socket, "node", "list", factory=_unreachable)
    assert code == 0 and cli.ops.calls == [("node_view", (state_dir, 3.0))]
    assert "jq-masterd does not answer here" in err and "master m" in err
    lines = out.splitlines()
    assert lines[1].split()[:4] == ["c1", "127.0.0.1:7001", "candidate", "yes"]
    assert lines[2].split()[:4] == ["n1", "127.0.0.1:7101", "node", "no"]
    code, out, _ = cli("--socket", socket, "node", "list", "--json", factory=_unreachable)
    assert code == 0 and serializer.loads(out) == cli.ops.nodes


def test_node_list_outside_a_cluster_keeps_the_error(cli, tmp_path):
    """Without a cluster state directory, node list reports the unreachable daemon."""
    code, _, err = cli("--socket", str(tmp_path / "run" / "jqueue.sock"), "node", "list",
                       factory=_unreachable)
    assert code == exitcodes.EXIT_UNREACHABLE and "no jqueue daemon listening" in err


def test_node_and_cluster_commands_print_one_json_object(cli, tmp_path):
    """--json on the node and cluster commands that print a record: one documented object."""
    cli.ops.config = _config()
    out = cli("cluster", "init", "--name", "prod", "--node", "m", "--address",
              "127.0.0.1:7000", "--state-dir", "/st", "--json").out
    assert serializer.loads(out) == {"state_dir": "/st", "config": _config().to_dict()}
    out = cli("node", "init", "--name", "n2", "--state-dir", "/st", "--json").out
    assert serializer.loads(out) == {"name": "n2", "state_dir": "/st",
                                     "csr": "/state/tls/node.csr"}
    csr = tmp_path / "n2.csr"
    csr.write_text("CSR")
    out = cli("node", "add", "n2", "--address", "127.0.0.1:7002", "--csr", str(csr),
              "--json").out
    assert serializer.loads(out) == {"name": "n2", "address": "127.0.0.1:7002",
                                     "candidate": False, "bundle": "n2.bundle"}
    assert serializer.loads(cli("node", "remove", "c1", "--json").out) == {
        "version": 3, "unreachable": {}}
    assert serializer.loads(cli("node", "modify", "c1", "--candidate", "no", "--json").out
                            ) == {"version": 3, "unreachable": {}, "changed": True}
    report = serializer.loads(cli("master-failover", "--yes", "--state-dir", "/st",
                                  "--json").out)
    assert report == dict(cli.ops.failover, started=False)
