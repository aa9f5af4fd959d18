"""End-to-end tests of the cluster's nodes as one pool: tags and affinity, drain, node
health (a node frozen with SIGSTOP), fencing, the action log and the event stream across
a failover. Real jq-noded and jq-masterd processes on loopback."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

from daemon_helpers import wait_all_final
from test_cluster_e2e import jqctl, start_cluster
from test_failover_e2e import _fail_over

from jqueue import constants

#: Fast health for the tests: a node is unreachable after 1.5 s, lost after 3 s more.
HEALTH = ["--ping-interval", "0.5", "--ping-misses", "3", "--lost-grace", "3"]
ACTION_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \d+ [A-Z_]+( .*)?$")


def command(cmd, **params):
    return dict({"OP_ID": constants.OP_COMMAND_RUN, "cmd": cmd}, **params)


def wait_until(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.05)


def node_of(client, job_id):
    return client.query_jobs([job_id], ["node"])[0][0]


def tag(master, node, tags):
    code, out, err = jqctl("node", "modify", node, "--tags", tags, socket=master.socket)
    assert code == 0, (out, err)


def processes_with(mark, attempt=None):
    """Our command's processes (by a mark in their environment), of one attempt or all."""
    needles = {("JQ_TEST_MARK=%s" % mark).encode()}
    if attempt is not None:
        needles.add(b"JQ_ATTEMPT=%d" % attempt)
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/environ" % name, "rb") as stream:
                    if needles <= set(stream.read().split(b"\0")):
                        found.append(int(name))
            except OSError:
                pass
    return found


def test_affinity_drain_and_a_tag_that_appears_later(tmp_path, nodeds, daemons):
    """node2 LINUX, node3 LINUX,24GB: a 24GB job only on node3; a GPU job waits
    (NO_MATCHING_NODE) until node2 is tagged GPU; a drained node3 gets nothing new."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 3)
    tag(master, "node1", "")
    tag(master, "node2", "LINUX")
    tag(master, "node3", "LINUX,24GB")
    with master.client() as client:
        big = [client.submit_job([command("true", affinity="LINUX,24GB")]) for _ in range(3)]
        gpu = client.submit_job([command("true", affinity=["GPU"])])
        wait_all_final(client, big, 30)
        assert {node_of(client, job_id) for job_id in big} == {"node3"}
        assert client.query_jobs([gpu], ["status", "reason"])[0] == ["queued",
                                                                    "NO_MATCHING_NODE"]
        tag(master, "node2", "LINUX,GPU")
        wait_all_final(client, [gpu], 30)
        assert node_of(client, gpu) == "node2"
        code, out, err = jqctl("node", "modify", "node3", "--drain", "yes",
                               socket=master.socket)
        assert code == 0, err
        linux = [client.submit_job([command("true", affinity="LINUX")]) for _ in range(4)]
        wait_all_final(client, linux, 30)
        assert {node_of(client, job_id) for job_id in linux} == {"node2"}
        stuck = client.submit_job([command("true", affinity="24GB")])
        why = "every node with the tags 24GB is unavailable: node3 is drained (no new " \
              "commands start there)"
        deadline = time.monotonic() + 20  # (placed once the pool has handed it over)
        while client.query_jobs([stuck], ["wait_reason"])[0] == [None]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.query_jobs([stuck], ["status", "wait_reason", "wait_message"])[0] == [
            "queued", "NODE_UNAVAILABLE", why]
        code, out, err = jqctl("info", str(stuck), socket=master.socket)
        assert "  Waiting: %s\n" % why in out, (out, err)
        client.cancel_job(stuck)
        modified = [e["message"] for e in client.wait_for_events(
            0, {"node": "node3", "kind": "node", "status": ["MODIFIED"]}, 1)["events"]]
        assert modified[0].endswith("(tags LINUX,24GB)"), modified
        assert modified[-1].endswith("(tags LINUX,24GB, drained)"), modified
    code, out, _ = jqctl("node", "list", socket=master.socket)
    row = [line for line in out.splitlines() if line.startswith("node3")][0]
    assert "LINUX,24GB" in row and "drained" in row
    path = os.path.join(test_cluster.state_dirs[test_cluster.master], "actions.log")
    with open(path, encoding="utf-8") as stream:
        assert any(line.split()[2:5] == ["node3", "0", "MODIFIED"] for line in stream)


def test_a_frozen_node_within_the_grace_reconciles_and_runs_once(tmp_path, nodeds, daemons):
    """node3's jq-noded stopped (SIGSTOP) past its heartbeats while its command runs, then
    resumed within lost_grace: NOPING then UP, the command's true status, run once."""
    test_cluster, started, master = start_cluster(
        tmp_path, nodeds, daemons, 3, args=HEALTH + ["--lost-grace", "60"])
    with master.client() as client:
        job_id = client.submit_job([command("sleep 3; echo done; exit 4", node="node3")])
        wait_until(lambda: client.query_jobs([job_id], ["pid"])[0][0], what="the start")
        since = client.wait_for_events(2 ** 62)["last"]
        started["node3"].proc.send_signal(signal.SIGSTOP)
        wait_until(lambda: any(e["status"] == "NOPING" for e in client.wait_for_events(
            since, {"node": "node3", "kind": "node"}, 1)["events"]), what="NOPING")
        assert client.query_jobs([job_id], ["status"])[0] == ["running"]
        time.sleep(3)  # the command ends while its node daemon is frozen
        started["node3"].proc.send_signal(signal.SIGCONT)
        wait_all_final(client, [job_id], 30)
        assert client.query_jobs([job_id], ["exit_status", "attempt", "node"])[0] == [
            4, 1, "node3"]
        wait_until(lambda: [e["status"] for e in client.wait_for_events(
            since, {"node": "node3", "kind": "node"}, 1)["events"]] == ["NOPING", "UP"],
            what="NOPING, then UP")
        log = "".join(client.follow_job_log(job_id))
    assert log.count("* START") == 1 and "\ndone\n" in log


def test_past_the_grace_the_job_reruns_elsewhere_and_the_old_attempt_is_killed(
        tmp_path, nodeds, daemons):
    """Frozen longer than lost_grace: NODE_LOST, attempt 2 on node2; when node3 comes back
    its attempt 1 (still running there) is killed: the command never runs twice unseen."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3, args=HEALTH)
    tag(master, "node1", "")
    tag(master, "node2", "W")
    tag(master, "node3", "W")
    mark = uuid.uuid4().hex
    with master.client() as client:
        jqctl("node", "modify", "node2", "--drain", "yes", socket=master.socket)
        job_id = client.submit_job([command(
            "echo attempt $JQ_ATTEMPT on $JQ_NODE; sleep 600", affinity="W", max_attempts=2,
            retry_delay=0, env={"JQ_TEST_MARK": mark})])
        wait_until(lambda: client.query_jobs([job_id], ["pid"])[0][0], what="the start")
        assert node_of(client, job_id) == "node3"
        jqctl("node", "modify", "node2", "--drain", "no", socket=master.socket)
        started["node3"].proc.send_signal(signal.SIGSTOP)
        wait_until(lambda: client.query_jobs([job_id], ["node", "attempt", "pid"])[0][:2] == [
            "node2", 2], timeout=30, what="attempt 2 on node2")
        assert processes_with(mark, 1)  # attempt 1 still runs on the frozen node
        started["node3"].proc.send_signal(signal.SIGCONT)
        wait_until(lambda: not processes_with(mark, 1), what="attempt 1 killed")
        assert processes_with(mark, 2)
        client.cancel_job(job_id, True)
        wait_all_final(client, [job_id], 30)
        attempts = [(e["node"], e["status"]) for e in client.wait_for_events(
            0, {"job": job_id, "kind": "attempt"}, 0)["events"]]
    assert ("node3", "NODE_LOST") in attempts and ("node2", "SEND") in attempts
    wait_until(lambda: processes_with(mark) == [], what="every process gone")


def test_the_action_log_tells_a_jobs_life_in_bexs_lines(tmp_path, nodeds, daemons):
    """actions.log: one line per change, BEX's shape, a job's lines NEW, SEND, RUN, OK,
    DONE in order."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 2)
    with master.client() as client:
        job_id = client.submit_job([command("true", node="node2")])
        wait_all_final(client, [job_id], 30)
        wait_until(lambda: client.wait_for_events(0, {"job": job_id, "status": "DONE"}, 0)[
            "events"], what="DONE")
    path = os.path.join(test_cluster.state_dirs[test_cluster.master], "actions.log")
    lines = open(path).read().splitlines()
    assert lines and all(ACTION_LINE.match(line) for line in lines), lines
    mine = [line.split()[2:5] for line in lines if line.split()[3] == str(job_id)]
    assert [words[2] for words in mine] == ["NEW", "SEND", "RUN", "OK", "DONE"]
    assert [words[0] for words in mine] == ["-", "node2", "node2", "node2", "-"]


class Listener:
    """jqctl listen --json as a process; the events it printed, read by a thread."""

    def __init__(self, socket, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jqueue.cli", "--socket", socket, "--timeout", "5",
             "listen", "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.events = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def seen(self, job_id, status):
        return any(e["job"] == job_id and e["status"] == status for e in self.events)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self._thread.join(10)
        return self.proc.stderr.read()


def test_listen_goes_on_across_a_failover_without_gap_or_repeat(tmp_path, nodeds, daemons):
    """jqctl listen on the master's socket goes on after kill -9 and a failover (the new
    master serving the same socket): every event once, in serial order, the same serials
    the new master holds, then the new master's events."""
    socket = str(tmp_path / "master.sock")
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3,
                                                  socket_path=socket)
    old = test_cluster.master
    listener = Listener(socket, "--since", "0")
    try:
        with master.client() as client:
            ids = [client.submit_job([command("true", node="node2")]) for _ in range(3)]
            wait_all_final(client, ids, 30)
        wait_until(lambda: listener.seen(ids[-1], "DONE"), what="the last DONE, listened")
        master.proc.send_signal(signal.SIGKILL)
        started[old].proc.send_signal(signal.SIGKILL)
        master.proc.wait(10)
        started[old].proc.wait(10)
        winner, _ = _fail_over(test_cluster, [n for n in test_cluster.names if n != old])
        new_master = daemons(test_cluster.state_dirs[winner], socket_path=socket)
        with new_master.client() as client:
            fresh = client.submit_job([command("true", node=winner)])
            wait_all_final(client, [fresh], 30)
            wait_until(lambda: listener.seen(fresh, "DONE"), what="the new job's DONE")
            held = client.wait_for_events(0, None, 0)["events"]
    finally:
        errors = listener.stop()
    serials = [e["serial"] for e in listener.events]
    assert serials == sorted(set(serials)), "a repeat or a step back"
    assert listener.events == held[:len(listener.events)]
    assert "connecting again" in errors


def test_a_nodes_reloaded_slots_reach_the_master_at_once(tmp_path, nodeds, daemons):
    """jq-noded of node2 with slots = 1 in its configuration file: a second job pinned
    there waits (SLOTS); the file says 2 and SIGHUP: the master hears it (its node list)
    and starts the job."""
    path = tmp_path / "noded2.toml"
    path.write_text("[noded]\nslots = 1\n")
    _, started, master = start_cluster(tmp_path, nodeds, daemons, 2,
                                       noded_args={"node2": ["--config", str(path)]})
    with master.client() as client:
        first, second = (client.submit_job([command("sleep 30", node="node2")])
                         for _ in range(2))
        wait_until(lambda: client.query_jobs([second], ["wait_reason"])[0] == ["SLOTS"],
                   what="the second job waiting for node2's slot")
        path.write_text("[noded]\nslots = 2\n")
        started["node2"].proc.send_signal(signal.SIGHUP)
        wait_until(lambda: client.query_jobs([second], ["status"])[0] == ["running"],
                   what="the second job started")
        assert [row["slots"] for row in client.list_nodes() if row["name"] == "node2"] == [2]
        assert "SIGHUP: slots changed from 1 to 2" in started["node2"].stderr()
        for job_id in (first, second):
            client.cancel_job(job_id, True)
        wait_all_final(client, [first, second], 30)
