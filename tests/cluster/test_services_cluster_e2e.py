"""End-to-end tests of supervised services in a cluster: each node's jq-noded keeps the
services placed on it alive, whatever happens to jq-noded itself or to the master.

Real jq-noded and jq-masterd processes on loopback; the services run on this machine,
each node with its own state directory. A service's processes are found by a marker in
their environment (JQ_TEST_MARK) and the node they run for (JQ_NODE).
"""

import glob
import json
import os
import signal
import time

from daemon_helpers import BURSTS, KEEP, allocated, mostly_freed, wait_all_final
from test_cluster_e2e import frozen, jqctl, start_cluster, wait_verified
from test_failover_e2e import _fail_over
from test_nodes_pool_e2e import HEALTH, tag

from jqueue import constants, service


def wait_until(predicate, timeout=40, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.05)


def processes_with(mark, node=None):
    """Pids of the processes carrying the marker (and running for node, if given)."""
    needles = {("JQ_TEST_MARK=%s" % mark).encode()}
    if node is not None:
        needles.add(("JQ_NODE=%s" % node).encode())
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/environ" % name, "rb") as stream:
                    if needles <= set(stream.read().split(b"\0")):
                        found.append(int(name))
            except OSError:
                pass
    return sorted(found)


def main_pid(mark, node=None):
    """The service's one process (it execs sleep), or None while there is not exactly one."""
    pids = processes_with(mark, node)
    return pids[0] if len(pids) == 1 else None


def sleeper(name, mark, **params):
    return dict({"name": name, "command": "exec sleep 600", "env": {"JQ_TEST_MARK": mark}},
                **params)


def view(master, name):
    with master.client() as client:
        return client.query_services([name])[0]


def wait_view(master, name, predicate, what, timeout=40):
    found = []

    def check():
        found[:] = [view(master, name)]
        return predicate(found[0])
    wait_until(check, timeout, "%s (last: %s)" % (what, found and (
        found[0]["state"], found[0]["node"], found[0]["pid"], found[0]["message"])))
    return found[0]


def running(master, name, pid=None, run=None):
    return wait_view(master, name, lambda v: v["state"] == service.RUNNING and v["reachable"]
                     and (pid is None or v["pid"] == pid) and (run is None or v["run"] >= run),
                     "%s RUNNING" % name)


def test_a_killed_noded_leaves_its_service_running_and_follows_it_again(
        tmp_path, nodeds, daemons, marks):
    """kill -9 of node2's jq-noded: the service keeps its pid; the restarted jq-noded
    follows it (the master says RUNNING, same pid) and restarts it when it dies."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    mark = marks()
    code, out, err = jqctl("service", "add", "web", "--node", "node2", "--start",
                           "--env", "JQ_TEST_MARK=" + mark, "--", "sh", "-c", "exec sleep 600",
                           socket=master.socket)
    assert code == 0, err
    first = running(master, "web")
    assert first["node"] == "node2" and processes_with(mark, "node2") == [first["pid"]]
    started["node2"].proc.send_signal(signal.SIGKILL)
    started["node2"].proc.wait(10)
    time.sleep(0.5)
    assert processes_with(mark) == [first["pid"]]
    started["node2"] = nodeds(test_cluster, "node2")
    with master.client() as client:  # the master follows the new jq-noded's events (a
        # job's end comes through them): a state change from now on reaches it
        job_id = client.submit_job([{"OP_ID": constants.OP_COMMAND_RUN, "cmd": "true",
                                     "node": "node2"}])
        wait_all_final(client, [job_id], 30)
    again = running(master, "web", pid=first["pid"])
    assert again["run"] == 1
    assert jqctl("service", "status", "web", socket=master.socket)[0] == 0
    os.kill(first["pid"], signal.SIGKILL)
    restarted = running(master, "web", run=2)
    assert restarted["pid"] != first["pid"] and restarted["restarts"] == 1
    assert processes_with(mark) == [restarted["pid"]]
    with master.client() as client:
        words = [e["status"] for e in client.wait_for_events(0, {"service": "web"}, 0)[
            "events"]]
    assert words[:3] == ["NEW", "STARTING", "RUNNING"] and "BACKOFF" in words
    assert jqctl("service", "remove", "web", socket=master.socket)[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_a_restart_asked_while_the_nodes_noded_is_down_is_done_once_it_is_back(
        tmp_path, nodeds, daemons, marks):
    """jqctl service restart while node2's jq-noded is killed (the call cannot reach it):
    the restart is recorded, and once jq-noded is back the service's run 2 replaces run
    1 (it did only "start" before: the old run kept running)."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    mark = marks()
    assert jqctl("service", "add", "web", "--node", "node2", "--start", "--env",
                 "JQ_TEST_MARK=" + mark, "--", "sh", "-c", "exec sleep 600",
                 socket=master.socket)[0] == 0
    first = running(master, "web")
    started["node2"].proc.send_signal(signal.SIGKILL)
    started["node2"].proc.wait(10)
    code, out, err = jqctl("service", "restart", "--no-wait", "web", socket=master.socket)
    assert code == 0, err
    started["node2"] = nodeds(test_cluster, "node2")
    again = running(master, "web", run=2)
    assert again["pid"] != first["pid"]
    wait_until(lambda: processes_with(mark) == [again["pid"]], what="run 1 to end")
    assert jqctl("service", "remove", "web", socket=master.socket)[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_a_service_printing_for_ever_does_not_fill_its_nodes_disk(tmp_path, nodeds, daemons,
                                                                   marks):
    """yes as a service on node2, the log capped at 1 MiB: node2's jq-noded frees the
    output the master passed over (svc_release), so its disk holds a fraction of it."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 2,
                                            args=["--log-max-bytes", "1048576"])
    mark = marks()
    code, _, err = jqctl("service", "add", "chatty", "--node", "node2", "--start", "--env",
                         "JQ_TEST_MARK=" + mark, "--", "yes", "a line of output",
                         socket=master.socket)
    assert code == 0, err
    sid = view(master, "chatty")["id"]
    output = os.path.join(test_cluster.state_dirs["node2"], "services", "attempts",
                          "%d.1" % sid, "output")
    wait_until(mostly_freed(output, 256 << 20), 60, "the run's output to be freed on node2")
    assert jqctl("service", "remove", "chatty", socket=master.socket)[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_a_run_ending_while_its_output_is_read_ends_in_the_log_and_the_next_is_copied(
        tmp_path, nodeds, daemons, marks):
    """A service on node2 printing without pause is stopped: its run ends while the master
    reads a piece of its output, and that news must not be lost (the master waited for
    the next news of the service, which may never come: the run's end missing from the
    log, its output never forgotten on node2, the next run's output never copied). Its
    log may take 64 MiB/s: the master reads without pause, as it does whatever the rate."""
    _, _, master = start_cluster(tmp_path, nodeds, daemons, 2,
                                 args=["--service-log-rate", str(64 << 20)])
    mark = marks()
    code, _, err = jqctl("service", "add", "chatty", "--node", "node2", "--start", "--env",
                         "JQ_TEST_MARK=" + mark, "--", "yes", "a line of output",
                         socket=master.socket)
    assert code == 0, err
    wait_until(lambda: view(master, "chatty")["log_bytes"] > 4 << 20, 30, "output logged")

    def stopped_and_logged(run):
        assert jqctl("service", "stop", "chatty", socket=master.socket)[0] == 0
        wait_until(lambda: jqctl("service", "log", "-n", "1", "chatty", socket=master.socket)[
            1] == "* END run %d ********************************\n" % run, 30,
            "the end of run %d in the log" % run)
        return view(master, "chatty")["log_bytes"]
    end = stopped_and_logged(1)
    assert jqctl("service", "start", "chatty", socket=master.socket)[0] == 0
    with master.client() as client:
        wait_until(lambda: client.read_service_log("chatty", end, 200)["data"].startswith(
            "* START run 2 "), 30, "run 2 in the log")
    wait_until(lambda: view(master, "chatty")["log_bytes"] > end + (4 << 20), 30,
               "run 2's output logged")
    stopped_and_logged(2)
    assert jqctl("service", "remove", "chatty", socket=master.socket)[0] == 0


def test_a_logs_kept_end_is_the_same_on_a_candidate_that_was_down_and_took_over(
        tmp_path, nodeds, daemons, marks):
    """A service on node3 prints 8 MB, its log kept to 1 MiB, while candidate node2 is
    down (it catches up when started again): after a failover to node2 the log reads the
    same, from the same start, and node2's copy holds no more than it keeps on the disk."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3,
                                                  args=["--log-max-bytes", str(KEEP)])
    mark = marks()
    code, _, err = jqctl("service", "add", "counter", "--node", "node3", "--env",
                         "JQ_TEST_MARK=" + mark, "-c", BURSTS, socket=master.socket)
    assert code == 0, err
    started["node2"].stop(signal.SIGKILL)
    assert jqctl("service", "start", "counter", socket=master.socket)[0] == 0
    wait_until(lambda: jqctl("service", "log", "-n", "1", "counter", socket=master.socket)[
        1] == "300000 a line of its output\n", 60, "the whole output in the log")
    started["node2"].start()
    shown = view(master, "counter")
    assert shown["log_start"] > 0
    kept = jqctl("service", "log", "counter", socket=master.socket)[1]
    assert kept.startswith(kept.split()[0] + " a line") and "SKIPPED" not in kept
    copy = os.path.join(test_cluster.state_dirs["node2"], "logs", "services",
                        "%d.log" % shown["id"])
    wait_verified(master.socket)  # node2 caught up (else the election rightly refuses it)
    assert os.path.getsize(copy) == shown["log_bytes"]
    old = test_cluster.master
    master.kill()
    started[old].proc.send_signal(signal.SIGKILL)
    started[old].proc.wait(10)
    winner, _ = _fail_over(test_cluster, ["node2"])
    new_master = daemons(test_cluster.state_dirs[winner])
    assert view(new_master, "counter")["log_start"] == shown["log_start"]
    assert jqctl("service", "log", "counter", socket=new_master.socket)[1] == kept
    assert allocated(copy) <= len(kept.encode()) + (64 << 10)
    assert jqctl("service", "remove", "counter", socket=new_master.socket)[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")


def test_restarts_go_on_without_a_master_and_a_failover_touches_nothing(
        tmp_path, nodeds, daemons, marks):
    """With jq-masterd killed, node3 still restarts its service when it dies; after a
    failover the new master knows the service, the same process runs, and it answers;
    the changes no master heard (BACKOFF, then run 2 STARTING) are in its events, at
    the times they happened, before run 2's RUNNING."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    old = test_cluster.master
    mark, quiet = marks(), marks()
    with master.client() as client:
        client.add_services([sleeper("web", mark, node="node3", restart="always"),
                             sleeper("quiet", quiet, node="node3")], start=True)
    first = running(master, "web")
    quiet_pid = running(master, "quiet")["pid"]
    master.proc.send_signal(signal.SIGKILL)
    started[old].proc.send_signal(signal.SIGKILL)
    master.proc.wait(10)
    started[old].proc.wait(10)
    os.kill(first["pid"], signal.SIGKILL)
    wait_until(lambda: main_pid(mark) not in (None, first["pid"]),
               what="node3 to restart the service with no master")
    second = main_pid(mark)
    before_failover = time.time()
    winner, _ = _fail_over(test_cluster, ["node2", "node3"])
    new_master = daemons(test_cluster.state_dirs[winner])
    after = running(new_master, "web", pid=second)
    assert after["node"] == "node3" and after["run"] == 2
    with new_master.client() as client:  # (events show once durable, after the view; the
        # RUNNING of run 1 the old master heard may be the last until then)
        def caught_up():
            words = [e["status"] for e in client.wait_for_events(0, {"service": "web"}, 0)[
                "events"]]
            return "BACKOFF" in words and words[-1] == "RUNNING"
        wait_until(caught_up, what="the BACKOFF no master heard, then run 2's RUNNING")
        events = client.wait_for_events(0, {"service": "web"}, 0)["events"]
    words = [event["status"] for event in events]
    assert words[words.index("BACKOFF") - 1:] == ["RUNNING", "BACKOFF", "STARTING", "RUNNING"]
    backoff = events[words.index("BACKOFF")]
    assert "run 1" in backoff["message"] and backoff["time"] < before_failover
    assert running(new_master, "quiet")["pid"] == quiet_pid  # untouched by all of it
    assert main_pid(mark) == second
    code, out, _ = jqctl("service", "stop", "web", "quiet", socket=new_master.socket)
    assert code == 0 and "web: STOPPED" in out and "quiet: STOPPED" in out
    assert processes_with(mark) == processes_with(quiet) == []


def _simulate_reboot(state_dir, marks_):
    """What a reboot does to a node's services: every process of them dies (their shims
    too), and the files written before it carry the previous boot's id. Returns once
    they are gone (a SIGKILL is delivered, and the dead reaped, a moment after kill)."""
    for mark in marks_:
        for pid in processes_with(mark):
            os.kill(pid, signal.SIGKILL)
    for mark in marks_:
        wait_until(lambda mark=mark: not processes_with(mark), what="the killed processes gone")
    for path in glob.glob(os.path.join(state_dir, "services", "attempts", "*", "spec.json")):
        with open(path, encoding="utf-8") as stream:
            spec = json.load(stream)
        try:
            os.kill(spec["shim_pid"], signal.SIGKILL)
        except OSError:
            pass
        spec["boot_id"] = "the-boot-before"
        with open(path, "w", encoding="utf-8") as stream:
            json.dump(spec, stream)
    for path in glob.glob(os.path.join(state_dir, "services", "defs", "*.json")):
        with open(path, encoding="utf-8") as stream:
            record = json.load(stream)
        record["boot_id"] = "the-boot-before"
        with open(path, "w", encoding="utf-8") as stream:
            json.dump(record, stream)


def test_after_a_node_restart_autostart_services_start_again(tmp_path, nodeds, daemons,
                                                             marks):
    """node2 goes down with its services and boots again: the autostart service runs
    again (a new run, a new pid); the one started by hand stays STOPPED."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    auto, manual = marks(), marks()
    with master.client() as client:
        client.add_services([sleeper("auto", auto, node="node2", autostart=True),
                             sleeper("manual", manual, node="node2")])
        client.control_service("manual", "start")
    before = running(master, "auto")
    running(master, "manual")
    started["node2"].proc.send_signal(signal.SIGKILL)
    started["node2"].proc.wait(10)
    _simulate_reboot(test_cluster.state_dirs["node2"], [auto, manual])
    assert processes_with(auto) == processes_with(manual) == []
    started["node2"] = nodeds(test_cluster, "node2")
    after = running(master, "auto", run=2)
    assert after["pid"] != before["pid"] and processes_with(auto) == [after["pid"]]
    stopped = wait_view(master, "manual", lambda v: v["state"] == service.STOPPED,
                        "manual STOPPED")
    assert "rebooted" in stopped["message"]
    assert processes_with(manual) == []
    assert jqctl("service", "status", "manual", socket=master.socket)[0] == 3
    assert jqctl("service", "stop", "auto", socket=master.socket)[0] == 0


def test_a_lost_node_takes_its_services_down_and_a_movable_one_moves(tmp_path, nodeds,
                                                                     daemons, marks):
    """node3 frozen past lost_grace: its pinned service is STOPPED, its movable one runs
    on node2 (its log ends run 1 with a line saying so); when node3 answers again the
    moved one is killed there (it runs once) and the pinned one, still running, is
    RUNNING again."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3, args=HEALTH)
    tag(master, "node2", "W")
    tag(master, "node3", "W")
    jqctl("node", "modify", "node2", "--drain", "yes", socket=master.socket)
    stay, move = marks(), marks()
    with master.client() as client:
        client.add_services([sleeper("stay", stay, affinity="W"),
                             sleeper("move", move, affinity="W", movable=True)], start=True)
    jqctl("node", "modify", "node2", "--drain", "no", socket=master.socket)
    assert running(master, "stay")["node"] == running(master, "move")["node"] == "node3"
    started["node3"].proc.send_signal(signal.SIGSTOP)
    try:
        moved = wait_view(master, "move", lambda v: v["node"] == "node2"
                          and v["state"] == service.RUNNING, "move RUNNING on node2")
        down = wait_view(master, "stay", lambda v: v["state"] == service.STOPPED,
                         "stay STOPPED")
        assert "node3 lost" in down["message"]
        assert moved["run"] == 2  # its runs on node2 continue node3's numbering
        assert processes_with(move, "node2") == [moved["pid"]]
        assert len(processes_with(move, "node3")) == 1  # the frozen node's copy, for now
    finally:
        started["node3"].proc.send_signal(signal.SIGCONT)
    wait_until(lambda: processes_with(move, "node3") == [], what="the old copy killed")
    assert processes_with(move) == [moved["pid"]]
    back = running(master, "stay")
    assert back["node"] == "node3" and processes_with(stay) == [back["pid"]]
    with master.client() as client:
        words = [e["status"] for e in client.wait_for_events(0, {"service": "move"}, 0)[
            "events"]]
    assert "MOVED" in words
    log = jqctl("service", "log", "move", socket=master.socket)[1]
    assert ("* MOVED : to node2; what run 1 printed on node3 after this is not kept\n"
            "* END run 1 ********************************\n* START run 2 ") in log
    for name in ("stay", "move"):
        assert jqctl("service", "remove", name, socket=master.socket)[0] == 0
    wait_until(lambda: processes_with(stay) == processes_with(move) == [],
               what="removed services to stop")


def test_a_start_that_waited_in_a_frozen_nodes_socket_does_not_run_after_the_move(
        tmp_path, nodeds, daemons, marks):
    """node2's jq-noded is frozen when a movable service on it is started: the start waits
    in its socket while the master, hearing nothing for lost_grace, moves the service to
    node1 and starts it there. Thawed, node2 refuses the stale start (NodeStalledError)
    and takes the service's removal: no run of it ever starts on node2 (each run appends
    its node to a file: a stale start once ran there for a few ms, a second copy)."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3, args=HEALTH)
    tag(master, "node1", "W")  # (node3 only acknowledges while node2 is frozen)
    tag(master, "node2", "W")
    jqctl("node", "modify", "node1", "--drain", "yes", socket=master.socket)
    mark, runs = marks(), tmp_path / "runs"
    definition = dict(sleeper("move", mark, affinity="W", movable=True),
                      command='echo "$JQ_RUN $JQ_NODE" >> %s; exec sleep 600' % runs)
    with master.client() as client:
        client.add_services([definition])
    assert view(master, "move")["node"] == "node2"
    jqctl("node", "modify", "node1", "--drain", "no", socket=master.socket)
    with frozen(started, ["node2"]):
        code, out, err = jqctl("service", "start", "move", socket=master.socket)
        assert code == 0, (out, err)
        moved = wait_view(master, "move", lambda v: v["node"] == "node1"
                          and v["state"] == service.RUNNING, "move RUNNING on node1")
    time.sleep(3)  # node2 has taken what waited in its socket (it did so at once)
    with open(runs, encoding="utf-8") as stream:
        assert stream.read().split() == [str(moved["run"]), "node1"]
    assert processes_with(mark) == [moved["pid"]]
    assert jqctl("service", "remove", "move", socket=master.socket)[0] == 0
    wait_until(lambda: processes_with(mark) == [], what="the removed service to stop")
