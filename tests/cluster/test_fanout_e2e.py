"""End-to-end tests of the fan-out: one command on several nodes (jqctl run --nodes, the
nodes parameter, BEX's multi-node files), real jq-noded and jq-masterd processes on
loopback, one node frozen (SIGSTOP) so that it does not answer."""

import json
import re
import signal
import subprocess
import sys

from daemon_helpers import wait_all_final
from test_cluster_e2e import jqctl, start_cluster
from test_nodes_pool_e2e import HEALTH, command, wait_until

from jqueue import constants


def test_a_glob_runs_everywhere_and_a_silent_node_is_listed(tmp_path, nodeds, daemons):
    """jqctl run --nodes 'node*' with node3 frozen: node1 and node2 answer with their
    output, node3 is listed as not answering and jqctl returns; once node3 is back its
    job runs, and the group (the submission's id) ends when every node's job ended."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3, args=HEALTH)
    with master.client() as client:
        since = client.wait_for_events(2 ** 62)["last"]
        started["node3"].proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: any(e["status"] == "NOPING" for e in client.wait_for_events(
                since, {"node": "node3", "kind": "node"}, 1)["events"]), what="NOPING")
            code, out, err = jqctl("run", "--nodes", "node*", "-c",
                                   "echo hello from $JQ_NODE", socket=master.socket)
        finally:
            started["node3"].proc.send_signal(signal.SIGCONT)
        assert code == 1, (out, err)
        lines = out.splitlines()
        assert lines[:2] == ["node1: success, exit status 0", "    hello from node1"], out
        assert lines[2:4] == ["node2: success, exit status 0", "    hello from node2"], out
        assert lines[4].startswith("node3: did not answer (node node3 does not answer; job ")
        group = int(re.search(r"job (\d+) submitted: 3 node", err).group(1))
        row = client.query_jobs([group], ["ops", "children", "status"])[0]
        assert row[0][0]["OP_ID"] == constants.OP_GROUP and len(row[1]) == 3
        assert row[2] in ("running", "queued")
        wait_all_final(client, [group], 60)
        nodes = client.query_jobs(row[1], ["node", "status", "parent"])
        assert sorted(nodes) == [["node%d" % n, "success", group] for n in (1, 2, 3)]


def test_a_list_of_nodes_in_json_with_a_failure(tmp_path, nodeds, daemons):
    """--nodes node1,node2 --json: each node's job, status, exit status and output; the
    worst outcome is jqctl's exit status."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 2)
    code, out, err = jqctl("run", "--nodes", "node1,node2", "--json", "--",
                           "sh", "-c", 'echo on $JQ_NODE; [ "$JQ_NODE" = node1 ] || exit 3',
                           socket=master.socket)
    assert code == 1, (out, err)
    answer = json.loads(out)
    assert set(answer) == {"node1", "node2"}
    assert answer["node1"]["status"] == "success" and answer["node1"]["output"] == "on node1"
    assert answer["node2"]["exit_status"] == 3 and answer["node2"]["answered"] is True
    assert answer["node2"]["output"] == "on node2"


def test_jqctl_waiting_for_the_nodes_outlives_a_restart_of_the_master(tmp_path, nodeds,
                                                                      daemons):
    """jq-masterd killed -9 and started again while jqctl run --nodes waits for the
    nodes: jqctl connects again (as jqctl wait does) and prints every node's answer,
    rather than giving up with "the daemon is unreachable" and no outcome."""
    _, _, master = start_cluster(tmp_path, nodeds, daemons, 2)
    waiting = subprocess.Popen(
        [sys.executable, "-m", "jqueue.cli", "--socket", master.socket, "run", "--nodes",
         "node*", "--json", "-c", "sleep 2; echo done on $JQ_NODE"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # jqctl has the group's id (its submit answered: a submit lost with the daemon is
        # not sent again), then both nodes run their commands.
        said = waiting.stderr.readline()
        assert "submitted: 2 node(s)" in said, said
        with master.client() as client:
            wait_until(lambda: len(client.query_running(None)) == 2, what="both running")
        master.kill()
        master.start()
        out, err = waiting.communicate(timeout=60)
        err = said + err
    finally:
        waiting.kill()
    assert waiting.returncode == 0, (out, err)
    answer = json.loads(out)
    assert {node: answer[node]["output"] for node in answer} == {
        "node1": "done on node1", "node2": "done on node2"}
    assert "connecting again" in err and "connected again" in err


def test_a_drained_node_a_glob_matches_is_listed_as_skipped(tmp_path, nodeds, daemons):
    """node2 drained: --nodes 'node*' runs on node1 only and lists node2 as skipped (in
    the text and in JSON); the skipped node does not fail the run."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 2)
    code, out, err = jqctl("node", "modify", "node2", "--drain", "yes", socket=master.socket)
    assert code == 0, err
    code, out, err = jqctl("run", "--nodes", "node*", "-c", "echo on $JQ_NODE",
                           socket=master.socket)
    assert code == 0, (out, err)
    assert out.splitlines() == ["node1: success, exit status 0", "    on node1",
                                "node2: skipped (drained: no new commands start there)"]
    assert "submitted: 1 node(s)" in err
    code, out, err = jqctl("run", "--nodes", "node*", "--json", "-c", "true",
                           socket=master.socket)
    answer = json.loads(out)
    assert code == 0 and answer["node1"]["status"] == "success"
    assert answer["node2"]["status"] == "skipped" and answer["node2"]["reason"] == "drained"


def test_refusals_leave_nothing(tmp_path, nodeds, daemons):
    """No node matches, an unknown node, node and nodes together, a second opcode: the
    caller's error, and no job recorded."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 2)
    with master.client() as client:
        before = client.query_jobs([], ["id"])
    for args, words in ((["--nodes", "web*"], "no node matches web*"),
                        (["--nodes", "node1,node9"], "unknown node node9"),
                        (["--nodes", "node*", "--node", "node1"], "not with --node")):
        code, out, err = jqctl("run", *args, "--", "true", socket=master.socket)
        assert code != 0 and words in err, (args, err)
    with master.client() as client:
        for ops in ([command("true", nodes="node*"), command("true")],
                    [command("true", nodes="node*", node="node1")]):
            try:
                client.submit_job(ops)
            except Exception as err:  # noqa: BLE001 - the refusal is what is tested
                assert "OpPrereqError" in type(err).__name__ or "node" in str(err)
            else:
                raise AssertionError("accepted %r" % ops)
        assert client.query_jobs([], ["id"]) == before


def test_a_bex_file_naming_several_nodes_fans_out(tmp_path, nodeds, daemons):
    """A BEX job file whose Node header lists two nodes: one job per node in a group."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 2)
    path = tmp_path / "job.bex"
    path.write_text("ID: nightly-1\nNode: node1 node2\n\necho nightly on $JQ_NODE\n")
    code, out, err = jqctl("submit", "--bex", str(path), socket=master.socket)
    assert code == 0, err
    group = int(out.strip().split()[-1])
    with master.client() as client:
        wait_all_final(client, [group], 60)
        children = client.query_jobs([group], ["children"])[0][0]
        assert sorted(client.query_jobs(children, ["node", "status"])) == [
            ["node1", "success"], ["node2", "success"]]
        # the same file again (its ID is the token): the same group, nothing new
    code, out, err = jqctl("submit", "--bex", str(path), socket=master.socket)
    assert code == 0 and int(out.strip().split()[-1]) == group, (out, err)
