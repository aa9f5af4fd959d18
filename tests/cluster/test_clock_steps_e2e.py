"""End-to-end tests of the daemons when the wall clock is stepped (NTP, ``date -s``, a
virtual machine resumed): their timers go by the monotonic clock, so a step delays or
hastens none of them; times kept or shown stay the wall clock's.

Each stepped daemon has a wall clock of its own (tests/clockshift.c preloaded: the
clock_steps fixture), moved an hour while the daemons run.
"""

import os
import time

from cluster_helpers import build_cluster
from daemon_helpers import processes_with
from test_cluster_e2e import jqctl, set_ack_timeout, start_cluster
from test_nodes_pool_e2e import HEALTH
from test_services_cluster_e2e import running, view, wait_until

from jqueue import constants, service

HOUR = 3600


def command(cmd, **params):
    return dict({"OP_ID": constants.OP_COMMAND_RUN, "cmd": cmd}, **params)


def add_service(socket, name, mark, *options):
    code, out, err = jqctl("service", "add", name, "--start", "--env", "JQ_TEST_MARK=" + mark,
                           *options, "-c", "exec sleep 600", socket=socket)
    assert code == 0, err


def remove_service(socket, name, mark):
    assert jqctl("service", "remove", name, socket=socket)[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_one_machine_clock_back_an_hour_delays_no_timer(daemons, clock_steps, marks):
    """jq-masterd's clock goes back an hour while a service waits out its startsecs and a
    job its retry_delay: the service is RUNNING and the job's second attempt runs seconds
    later, not an hour later; the service's times are the (stepped) wall clock's."""
    master, mark = daemons(env=clock_steps.env("master")), marks()
    add_service(master.socket, "web", mark, "--startsecs", "2")
    with master.client() as client:
        job_id = client.submit_job([command("exit 3", max_attempts=2, retry_delay=2)])
        wait_until(lambda: client.query_jobs([job_id], ["status"])[0] == ["waiting"],
                   what="the back-off")
        clock_steps.step("master", -HOUR)
        before = time.monotonic()
        up = running(master, "web", run=1)
        wait_until(lambda: client.query_jobs([job_id], ["status"])[0] == ["error"], 15,
                   "the second attempt")
        assert time.monotonic() - before < 15
        assert client.query_jobs([job_id], ["attempt", "reason"])[0] == [2, "FAILED"]
    assert abs(up["since"] - (time.time() - HOUR)) < 30
    remove_service(master.socket, "web", mark)


def test_master_clock_forward_an_hour_finds_every_node_still_there(tmp_path, nodeds, daemons,
                                                                   clock_steps):
    """The master's clock jumps an hour ahead while a command runs on node2: no node is
    said unreachable (the heartbeats' ages are not an hour), the command ends once with
    its status, and the nodes' last heartbeats read the master's new time."""
    _, _, master = start_cluster(tmp_path, nodeds, daemons, 2, args=HEALTH,
                                 env=clock_steps.env("master"))
    with master.client() as client:
        job_id = client.submit_job([command("sleep 3; exit 5", node="node2")])
        wait_until(lambda: client.query_jobs([job_id], ["pid"])[0][0], what="the start")
        since = client.wait_for_events(2 ** 62)["last"]
        clock_steps.step("master", HOUR)
        time.sleep(2.5)  # five heartbeats; three missed make a node unreachable
        wait_until(lambda: client.query_jobs([job_id], ["status"])[0] == ["error"],
                   what="the end")
        assert client.query_jobs([job_id], ["exit_status", "attempt", "reason"])[0] == [
            5, 1, "FAILED"]
        words = [e["status"] for e in client.wait_for_events(since, {"kind": "node"}, 0)[
            "events"]]
        assert "NOPING" not in words
        nodes = {row["name"]: row for row in client.list_nodes()}
    for name in ("node1", "node2"):
        assert nodes[name]["heartbeat"] is True
        assert abs(nodes[name]["last_heartbeat"] - (time.time() + HOUR)) < 10


def test_node_clock_back_an_hour_delays_nothing_on_the_node(tmp_path, nodeds, daemons,
                                                            clock_steps, marks):
    """node2's clock goes back an hour while its service waits out its startsecs and its
    command is between two lines of output: the service is RUNNING seconds later, and the
    second line reaches the master's log while the command still runs."""
    _, _, master = start_cluster(tmp_path, nodeds, daemons, 2, args=HEALTH,
                                 noded_env={"node2": clock_steps.env("node2")})
    mark = marks()
    add_service(master.socket, "web", mark, "--node", "node2", "--startsecs", "3")
    with master.client() as client:
        job_id = client.submit_job([command("echo one; sleep 2; echo two; sleep 30",
                                            node="node2")])
        wait_until(lambda: client.query_jobs([job_id], ["log_bytes"])[0][0], 15,
                   "the first line")
        clock_steps.step("node2", -HOUR)
        before = time.monotonic()
        wait_until(lambda: "two" in client.read_job_log(job_id, 0, 1 << 16)["data"], 15,
                   "the second line")
        assert client.query_jobs([job_id], ["status"])[0] == ["running"]
        assert running(master, "web", run=1)["node"] == "node2"
        assert time.monotonic() - before < 15
        client.cancel_job(job_id)
        wait_until(lambda: client.query_jobs([job_id], ["status"])[0] == ["canceled"],
                   what="the cancel")
    assert view(master, "web")["state"] == service.RUNNING
    remove_service(master.socket, "web", mark)


def test_a_node_whose_clock_is_years_behind_says_so_and_serves_once_it_is_right(
        tmp_path, nodeds, daemons, clock_steps):
    """node2's clock twenty years behind (a machine booted without its clock): every
    certificate is "not yet valid" there, so it refuses the others' calls. Its log says
    why, naming its clock, once (not a line per refused call); the master's node list
    says node2 refused this node's certificate. Once its clock is set right it serves
    again, without a restart: a job placed on it runs."""
    test_cluster = build_cluster(tmp_path / "cluster", 2)
    set_ack_timeout(test_cluster, 2)
    nodeds(test_cluster, "node1")
    clock = clock_steps.env("node2")
    clock_steps.step("node2", -20 * 365 * 86400)
    node2 = nodeds(test_cluster, "node2", wait=False, env=clock)
    master = daemons(test_cluster.state_dirs[test_cluster.master], args=HEALTH)
    wait_until(lambda: "node refused this node's certificate" in jqctl(
        "cluster", "verify", socket=master.socket)[1], what="the master told why")
    below = jqctl("node", "list", socket=master.socket)[1].splitlines()[-1]
    assert below.startswith("node2: ") and "the node refused this node's certificate" in below
    time.sleep(2)  # heartbeats, replication and polls refused meanwhile
    refused = [line for line in node2.stderr().splitlines()
               if "TLS connection(s) failed" in line]
    assert len(refused) == 1, refused
    assert ("certificate of cluster testcluster is not valid before " in refused[0]
            and "by this node's clock, 2006-" in refused[0] and "is it right?" in refused[0])
    clock_steps.step("node2", 0)
    with master.client() as client:
        job_id = client.submit_job([command("echo ran on $JQ_NODE", node="node2")])
        wait_until(lambda: client.query_jobs([job_id], ["status"])[0] == ["success"], 30,
                   "the job on node2")
        assert "ran on node2" in client.read_job_log(job_id)["data"]
    assert jqctl("cluster", "verify", socket=master.socket)[0] == 0


def test_a_node_whose_clock_is_off_is_named_until_it_is_right(tmp_path, nodeds, daemons,
                                                               clock_steps):
    """node2's clock an hour ahead (its certificates still valid there): jq-masterd says
    so once in its log and jqctl node list beside node2's heartbeat, as does node list on
    node2 itself (no jq-masterd there: the nodes' answers against jqctl's clock); set
    right, they say so no more."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 2, args=HEALTH,
                                            noded_env={"node2": clock_steps.env("node2")})
    clock_steps.step("node2", HOUR)

    def heartbeats():
        rows = jqctl("node", "list", socket=master.socket)[1].splitlines()[1:]
        return {row.split()[0]: row for row in rows}
    wait_until(lambda: "(clock +3600s)" in heartbeats()["node2"], what="node2's clock said")
    assert "clock" not in heartbeats()["node1"]
    with master.client() as client:
        skews = {row["name"]: row["clock_skew"] for row in client.list_nodes()}
    assert abs(skews["node2"] - HOUR) < 5 and abs(skews["node1"]) < 5
    time.sleep(1)  # more heartbeats: still one line
    said = [line for line in master.stderr().splitlines() if "its clock is" in line]
    assert len(said) == 1 and "node node2: its clock is 3600s ahead of this node's" in said[0]
    node2_dir = test_cluster.state_dirs["node2"]
    code, out, err = jqctl("--state-dir", node2_dir, "node", "list",
                           socket=os.path.join(node2_dir, "run", "jqueue.sock"))
    assert code == 0 and "jq-masterd does not answer here" in err, err
    rows = {row.split()[0]: row for row in out.splitlines()[1:]}
    assert "(clock +3600s)" in rows["node2"] and "clock" not in rows["node1"]
    code, out, _ = jqctl("cluster", "verify", socket=master.socket)
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    assert code == 0 and lines["node2"].startswith("node2: in sync (position ")
    assert lines["node2"].endswith("; its clock is 3600s ahead of the master's (set it right: NTP)")
    clock_steps.step("node2", 0)
    wait_until(lambda: "clock" not in heartbeats()["node2"], what="node2's clock right")
    assert "node node2: its clock agrees with this node's again" in master.stderr()

