"""End-to-end tests of command jobs in a cluster: the chosen node's jq-noded runs them.

Real jq-noded processes on every node, jq-masterd on the master, all on loopback; the
commands run on this machine, each node with its own state directory (and its own
directory of running attempts).
"""

import collections
import contextlib
import os
import signal
import subprocess
import time
import uuid

import pytest
from conftest import attempt_names
from daemon_helpers import (
    Receiver,
    all_canceled_and_gone,
    holding,
    mostly_freed,
    processes_with,
    wait_all_final,
)
from test_cluster_e2e import jqctl, start_cluster
from test_failover_e2e import _fail_over

from jqueue import constants

FIELDS = ["status", "exit_status", "node", "attempt", "reason"]


@pytest.fixture
def mark():
    """A fresh marker for a test's commands (JQ_TEST_MARK); whatever process still
    carries it after the test is killed, so that a failing test leaves nothing behind."""
    value = uuid.uuid4().hex
    yield value
    for pid in processes_with(value):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def killed_and_failed_over(test_cluster, started, master, daemons):
    """kill -9 of the master's jq-masterd and jq-noded, jqctl master-failover on the first
    other node that wins; the new master's jq-masterd, started."""
    old = test_cluster.master
    for proc in (master.proc, started[old].proc):
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    winner, _ = _fail_over(test_cluster, [n for n in test_cluster.names if n != old])
    return daemons(test_cluster.state_dirs[winner])


def command(cmd, **params):
    return dict({"OP_ID": constants.OP_COMMAND_RUN, "cmd": cmd}, **params)


def fields(client, job_id):
    return dict(zip(FIELDS, client.query_jobs([job_id], FIELDS)[0]))


def wait_until(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.05)


def submit_trees(client, node, mark, count):
    """Submit count jobs on node that each fork a tree of sleeps (one of them setsid'd),
    marked with mark; their ids."""
    return [job_id for _, job_id in client.submit_many_jobs(
        [[command("sleep 300 & (setsid sleep 300 &); sleep 300", node=node,
                  env={"JQ_TEST_MARK": mark})]] * count)]


def numbered(count, exit_status, pause_every=1000, pause=0.2):
    """A shell command printing n0..n<count-1>, pausing now and then, then exiting."""
    return ("i=0; while [ $i -lt %d ]; do echo n$i; i=$((i+1)); "
            "[ $((i %% %d)) -eq 0 ] && sleep %s; done; exit %d" % (
                count, pause_every, pause, exit_status))


def numbered_lines(log):
    return [line for line in log.splitlines() if line.startswith("n")]


def attempts_dir(test_cluster, name):
    return os.path.join(test_cluster.state_dirs[name], "attempts")


def test_command_jobs_run_on_the_node_they_name(tmp_path, nodeds, daemons):
    """node=node3 runs through node3's jq-noded (a memory_max too, which node3's shim
    enforces); no node: the master's; unknown: refused."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 3)
    with master.client() as client:
        on_three = client.submit_job([command("echo on $JQ_NODE", node="node3")])
        on_master = client.submit_job([command("echo on $JQ_NODE")])
        wait_all_final(client, [on_three, on_master], 30)
        assert fields(client, on_three)["node"] == "node3"
        assert "on node3\n" in "".join(client.follow_job_log(on_three))
        assert fields(client, on_master)["node"] == test_cluster.master
        assert "on %s\n" % test_cluster.master in "".join(client.follow_job_log(on_master))
        sleeper = client.submit_job([command("sleep 30", node="node3")])
        wait_until(lambda: [r for r in client.query_running("node3") if r["pid"]],
                   what="the attempt on node3")
        [row] = client.query_running("node3")  # how node3 holds it, as node3 said
        assert row["containment"].startswith(("cgroup /", "process group ")), row
        wait_until(lambda: client.query_running("node3")[0]["rss"],
                   what="node3's look at what the attempt holds")
        code, out, _ = jqctl("running", "--node", "node3", socket=master.socket)
        assert code == 0 and row["containment"] in out, out
        client.cancel_job(sleeper, True)
        missing = client.submit_job([command(["no-such-program-jq"], node="node3")])
        wait_all_final(client, [sleeper, missing], 30)
        assert fields(client, missing)["exit_status"] == 127
        assert client.query_jobs([missing], ["opresult"])[0][0] == [["OpExecError", [
            "command exited with status 127: cannot execute no-such-program-jq: No such "
            "file or directory"]]]  # as node3's shim said
        hungry = client.submit_job([command(holding(48), node="node3", memory_max="32M")])
        wait_all_final(client, [hungry], 30)  # node3's shim kills it over its limit
        [row] = client.query_jobs([hungry], ["signal", "memory_exceeded", "max_rss"])
        assert row[:2] == [signal.SIGKILL, True] and row[2] > 32 << 20, row
    code, _, err = jqctl("run", "--node", "nowhere", "--", "true", socket=master.socket)
    assert code != 0 and "unknown node nowhere" in err
    assert attempt_names(attempts_dir(test_cluster, "node3")) == []  # forgotten once recorded


def test_a_node_whose_disk_is_full_makes_its_jobs_wait_until_there_is_room(tmp_path, nodeds,
                                                                            daemons):
    """node2's attempts on a full 4 MiB tmpfs (mounted once its jq-noded runs): a job for
    node2 waits, NOXFER, uncounted (the refusal crossed the wire as a resource error);
    with room again it runs once."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 2)
    mount = attempts_dir(test_cluster, "node2")
    os.makedirs(mount, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount],
                             capture_output=True, text=True, check=False)
    assert mounted.returncode == 0, "a tmpfs needs root: %s" % mounted.stderr
    try:
        filler = os.path.join(mount, "filler")
        with open(filler, "wb") as stream, contextlib.suppress(OSError):
            while True:
                stream.write(b"\0" * 65536)
                stream.flush()
        with master.client() as client:
            job_id = client.submit_job([command("echo ran", node="node2")])
            wait_until(lambda: fields(client, job_id)["reason"] == "NOXFER",
                       what="the job to wait")
            assert fields(client, job_id)["status"] == "waiting"
            assert fields(client, job_id)["attempt"] == 0
            assert "No space left on device" in client.read_job_log(job_id, 0, 1 << 20, 0)[
                "data"]
            os.unlink(filler)
            wait_all_final(client, [job_id], 60)
            assert fields(client, job_id)["status"] == "success"
            assert "".join(client.follow_job_log(job_id)).splitlines().count("ran") == 1
        started["node2"].proc.send_signal(signal.SIGTERM)  # before the tmpfs goes
        assert started["node2"].proc.wait(30) == 0
    finally:
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def test_many_jobs_at_once_on_a_node_that_batches_its_launches(tmp_path, nodeds, daemons):
    """node2's jq-noded says it takes exec_batch; 60 jobs submitted at once (their
    launches and forgets pile up in the master's link, and go in batches) all run once,
    with their own output, and leave nothing behind on the node."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 2)
    assert "exec_batch" in started["node2"].call("node_info", {})["features"]
    with master.client() as client:
        ids = [job_id for _, job_id in client.submit_many_jobs(
            [[command("echo job $JQ_JOB_ID", node="node2")]] * 60)]
        wait_all_final(client, ids, 60)
        for job_id in ids:
            assert fields(client, job_id)["status"] == "success"
            log = "".join(client.follow_job_log(job_id))
            assert log.count("job %d\n" % job_id) == 1 and log.count("* START") == 1, log
    wait_until(lambda: attempt_names(attempts_dir(test_cluster, "node2")) == [],
               what="node2 to forget every attempt")


def test_env_inherit_gives_the_environment_of_the_nodes_daemon(tmp_path, nodeds, daemons):
    """env_inherit on node3 starts from node3's jq-noded environment (a variable only it
    has), not jq-masterd's (which lacks it); without env_inherit the base is minimal."""
    name, value = "JQ_TEST_NODED_ONLY", "node3's own"
    assert name not in os.environ
    test_cluster, started, master = start_cluster(
        tmp_path, nodeds, daemons, 3, noded_env={"node3": {name: value}})
    with open("/proc/%d/environ" % master.pid, "rb") as stream:
        assert name.encode() not in stream.read()
    with open("/proc/%d/environ" % started["node3"].proc.pid, "rb") as stream:
        assert ("%s=%s" % (name, value)).encode() in stream.read().split(b"\0")
    show = 'echo "seen: [$%s] on $JQ_NODE"' % name
    with master.client() as client:
        inherited = client.submit_job([command(show, node="node3", env_inherit=True)])
        minimal = client.submit_job([command(show, node="node3")])
        on_master = client.submit_job([command(show, node=test_cluster.master,
                                               env_inherit=True)])
        wait_all_final(client, [inherited, minimal, on_master], 30)
        logs = {job: "".join(client.follow_job_log(job))
                for job in (inherited, minimal, on_master)}
    assert "seen: [%s] on node3\n" % value in logs[inherited]
    assert "seen: [] on node3\n" in logs[minimal]
    assert "seen: [] on %s\n" % test_cluster.master in logs[on_master]


def test_run_as_is_decided_by_the_node_that_runs_the_command(tmp_path, nodeds, daemons):
    """node2's jq-noded allows nobody: a job run as nobody there runs as nobody; one run
    as a user node2 does not allow is accepted by the master (it cannot tell) and its
    attempt fails INTERR on node2, naming the refusal, without a retry, leaving nothing
    behind on the node."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 2,
                                            noded_args={"node2": ["--allowed-users", "nobody"]})
    with master.client() as client:
        allowed = client.submit_job([command("id -un", node="node2", run_as="nobody")])
        refused = client.submit_job([command("id -un", node="node2", run_as="daemon",
                                             max_attempts=3, retry_delay=0.1)])
        wait_all_final(client, [allowed, refused], 30)
        assert fields(client, allowed)["status"] == "success"
        assert "\nnobody\n" in "".join(client.follow_job_log(allowed))
        values = fields(client, refused)
        assert values["status"] == "error" and values["reason"] == "INTERR", values
        assert values["attempt"] == 1 and values["node"] == "node2", values
        log = "".join(client.follow_job_log(refused))
        assert "user daemon may not run commands on this node" in log, log
        assert "\ndaemon\n" not in log
    assert attempt_names(attempts_dir(test_cluster, "node2")) == []


def test_an_attempt_on_a_node_without_cgroups_says_so_in_its_log(tmp_path, nodeds, daemons):
    """node2's jq-noded contains attempts by process group: the log of a job it runs says
    so, as on the master's own machine (the master learns it from node_info)."""
    _, _, master = start_cluster(tmp_path, nodeds, daemons, 2,
                                 noded_args={"node2": ["--containment", "process-group"]})
    with master.client() as client:
        wait_until(lambda: [row for row in client.list_nodes()
                            if row["name"] == "node2" and row["last_heartbeat"]],
                   what="the master to hear node2")
        job_id = client.submit_job([command("echo hi", node="node2")])
        wait_all_final(client, [job_id], 30)
        assert fields(client, job_id)["status"] == "success"
        log = "".join(client.follow_job_log(job_id))
    assert "* CONTAINED BY : process group (cgroups disabled by configuration): a process " \
        "that leaves the group (setsid) is reached only while its parent lives\n" in log, log


def test_a_killed_and_restarted_noded_loses_no_output_and_records_the_true_end(
        tmp_path, nodeds, daemons):
    """kill -9 of node2's jq-noded while its job prints 10,000 lines and exits 7, then a
    restart: every line is in the log exactly once and the job ends with status 7."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    with master.client() as client:
        job_id = client.submit_job([command(numbered(10000, 7), node="node2")])
        wait_until(lambda: "n1500" in client.read_job_log(job_id, 0, 1 << 22, 0)["data"],
                   what="output to flow")
    started["node2"].proc.send_signal(signal.SIGKILL)
    started["node2"].proc.wait(10)
    time.sleep(1)
    started["node2"] = nodeds(test_cluster, "node2")
    with master.client() as client:
        wait_all_final(client, [job_id], 60)
        values = fields(client, job_id)
        log = "".join(client.follow_job_log(job_id))
    assert values["exit_status"] == 7 and values["attempt"] == 1, values
    assert numbered_lines(log) == ["n%d" % i for i in range(10000)]


def test_a_noded_killed_amid_many_short_jobs_runs_each_once(tmp_path, nodeds, daemons):
    """kill -9 of node2's jq-noded while 200 short jobs start and end there, then a
    restart: each job succeeds with its output once in its log (an attempt that had
    ended is read once the node answers again: it was finished without its output; a
    start the node did not take says so in the log), and node2 keeps no attempt."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 2)
    with master.client() as client:
        ids = [job_id for _, job_id in client.submit_many_jobs(
            [[command("echo job $JQ_JOB_ID", node="node2")]] * 200)]
        wait_until(lambda: sum(row[0] == "success" for row in client.query_jobs(
            ids, ["status"])) >= 50, what="fifty jobs to end")
    started["node2"].proc.send_signal(signal.SIGKILL)
    started["node2"].proc.wait(10)
    started["node2"] = nodeds(test_cluster, "node2")
    with master.client() as client:
        wait_all_final(client, ids, 90)
        failed = [(job_id, row) for job_id, row in zip(
            ids, client.query_jobs(ids, ["status", "reason", "attempt"])) if row[0] != "success"]
        assert failed == [], failed
        for job_id in ids:
            log = "".join(client.follow_job_log(job_id))
            assert log.count("\njob %d\n" % job_id) == 1, log  # ran once, its output whole
            assert log.count("* START") == 1 + log.count("\n* NOXFER : ") + log.count(
                "* RETRY : the command never started"), log  # each other start says why
    wait_until(lambda: attempt_names(attempts_dir(test_cluster, "node2")) == [],
               what="node2 to forget every attempt")


def test_a_cancel_storm_amid_launches_on_a_node_ends_every_job_and_process(tmp_path, nodeds,
                                                                          daemons, mark):
    """200 jobs on node2 (slots 50) that fork a tree and sleep, cancelled one by one while
    node2's jq-noded launches them in batches: every job ends canceled, no process of
    them is left and node2 forgets every attempt."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 2,
                                            noded_args={"node2": ["--slots", "50"]})
    with master.client() as client:
        ids = submit_trees(client, "node2", mark, 200)
        wait_until(lambda: len(processes_with(mark)) >= 30, what="launches to begin")
        for job_id in ids:
            client.cancel_job(job_id)
        all_canceled_and_gone(client, ids, mark)
    wait_until(lambda: attempt_names(attempts_dir(test_cluster, "node2")) == [],
               what="node2 to forget every attempt")


def test_jobs_cancelled_while_their_noded_is_down_end_once_it_is_back(tmp_path, nodeds,
                                                                     daemons, mark):
    """kill -9 of node2's jq-noded while 60 jobs run trees of sleeps there (20 slots, the
    rest queued); each job is cancelled while it is down (node3 acknowledges the
    changes); once it is back every job ends canceled and no process of them is left."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3,
                                                  noded_args={"node2": ["--slots", "20"]})
    with master.client() as client:
        ids = submit_trees(client, "node2", mark, 60)
        wait_until(lambda: sum(row[0] == "running" for row in client.query_jobs(
            ids, ["status"])) >= 20, what="twenty jobs to run")
        started["node2"].proc.send_signal(signal.SIGKILL)
        started["node2"].proc.wait(10)
        for job_id in ids:
            client.cancel_job(job_id)
        started["node2"] = nodeds(test_cluster, "node2", args=["--slots", "20"])
        all_canceled_and_gone(client, ids, mark)
    wait_until(lambda: attempt_names(attempts_dir(test_cluster, "node2")) == [],
               what="node2 to forget every attempt")


def test_jobs_held_while_their_noded_is_down_stop_and_run_again_when_released(
        tmp_path, nodeds, daemons, mark):
    """kill -9 of node2's jq-noded while 30 jobs run or start there; each is held while it
    is down; once it is back no process of them runs and no job runs; released, each
    runs to its end, its output once."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3,
                                                  noded_args={"node2": ["--slots", "20"]})
    go = tmp_path / "go"
    script = "while [ ! -e %s ]; do sleep 0.1; done; echo done $JQ_JOB_ID" % go
    with master.client() as client:
        ids = [job_id for _, job_id in client.submit_many_jobs(
            [[command(script, node="node2", env={"JQ_TEST_MARK": mark})]] * 30)]
        wait_until(lambda: sum(row[0] == "running" for row in client.query_jobs(
            ids, ["status"])) >= 20, what="twenty jobs to run")
        started["node2"].proc.send_signal(signal.SIGKILL)
        started["node2"].proc.wait(10)
        for job_id in ids:
            assert client.hold_job(job_id)[0]
        started["node2"] = nodeds(test_cluster, "node2", args=["--slots", "20"])
        wait_until(lambda: processes_with(mark) == [], timeout=60,
                   what="the held jobs' processes to end")
        # queued again, or still waiting where its start had failed (NOXFER) before the hold
        wait_until(lambda: {row[0] for row in client.query_jobs(ids, ["status"])} <= {
            "queued", "waiting"}, what="every held job to stop")
        go.touch()
        for job_id in ids:
            assert client.release_job(job_id)[0]
        wait_all_final(client, ids, 60)
        assert {row[0] for row in client.query_jobs(ids, ["status"])} == {"success"}
        for job_id in ids:
            log = "".join(client.follow_job_log(job_id))
            assert log.count("done %d\n" % job_id) == 1, log


def test_a_command_printing_for_ever_does_not_fill_its_nodes_disk(tmp_path, nodeds, daemons):
    """yes on node2, the log capped at 1 MiB: node2's jq-noded frees the output the master
    passed over (exec_release), so its disk holds a fraction of what was printed."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 2,
                                            args=["--log-max-bytes", "1048576"])
    with master.client() as client:
        job_id = client.submit_job([command(["yes", "a line of output"], node="node2")])
        output = os.path.join(attempts_dir(test_cluster, "node2"), "%d.1" % job_id, "output")
        wait_until(mostly_freed(output, 256 << 20), 60, "the output to be freed on node2")
        client.cancel_job(job_id, True)
        wait_all_final(client, [job_id], 30)


def test_a_node_in_use_is_not_removed_and_one_left_idle_takes_no_more_jobs(
        tmp_path, nodeds, daemons, mark):
    """node remove of a node running a command job and holding a service: refused (they
    would run on unwatched), naming both; once they are gone the node is removed and
    jobs naming it are refused as for any unknown node, while the others run on."""
    test_cluster, _, master = start_cluster(tmp_path, nodeds, daemons, 3)
    with master.client() as client:
        job_id = client.submit_job([command("sleep 60", node="node3",
                                            env={"JQ_TEST_MARK": mark})])
        wait_until(lambda: fields(client, job_id)["status"] == "running", what="the job")
    code, _, err = jqctl("service", "add", "web", "--node", "node3", "--start", "--env",
                         "JQ_TEST_MARK=" + mark, "-c", "exec sleep 600", socket=master.socket)
    assert code == 0, err
    code, _, err = jqctl("node", "remove", "node3", socket=master.socket)
    assert code == 6 and "node node3 is in use" in err, err
    assert "pinned to it: %d" % job_id in err and "services placed there: web" in err
    assert "node3" in jqctl("node", "list", socket=master.socket)[1]
    assert jqctl("kill", str(job_id), socket=master.socket)[0] == 0
    assert jqctl("service", "remove", "web", socket=master.socket)[0] == 0
    with master.client() as client:
        wait_all_final(client, [job_id], 30)
    wait_until(lambda: processes_with(mark) == [], what="the job's and service's processes")
    code, out, err = jqctl("node", "remove", "node3", socket=master.socket)
    assert code == 0, err
    code, _, err = jqctl("run", "--node", "node3", "--", "true", socket=master.socket)
    assert code == 6 and "unknown node node3" in err, err
    assert jqctl("running", "--node", "node3", socket=master.socket)[0] == 4
    code, out, err = jqctl("run", "--node", "node2", "--wait", "--", "true",
                           socket=master.socket)
    assert code == 0, (out, err)


def test_a_failover_while_a_command_runs_on_a_third_node(tmp_path, nodeds, daemons):
    """The master dies while node3 runs a job; after the failover the new master follows
    it: the job completes, its outcome is recorded once and its log is whole."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    with master.client() as client:
        job_id = client.submit_job([command(numbered(3000, 5, 500, 0.3), node="node3")])
        wait_until(lambda: "n600" in client.read_job_log(job_id, 0, 1 << 22, 0)["data"],
                   what="output to flow")
    new_master = killed_and_failed_over(test_cluster, started, master, daemons)
    with new_master.client() as client:
        wait_all_final(client, [job_id], 60)
        values = fields(client, job_id)
        log = "".join(client.follow_job_log(job_id))
    assert values["status"] == "error" and values["exit_status"] == 5, values
    assert values["node"] == "node3" and values["attempt"] == 1
    assert numbered_lines(log) == ["n%d" % i for i in range(3000)]
    assert log.count("* EXIT : 5") == 1


def test_a_failover_waits_for_the_old_masters_node_and_records_its_commands_true_end(
        tmp_path, nodeds, daemons):
    """The master (jq-masterd and its jq-noded) dies while a command runs on its own node;
    after the failover the new master cannot reach that node until its jq-noded is
    started again: the attempt is not lost meanwhile (NODE_LOST, though the command runs
    on), and once the node answers the command's true end is recorded."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    old = test_cluster.master
    ran = tmp_path / "ran"
    with master.client() as client:
        job_id = client.submit_job([command("echo ran >> %s; sleep 6; exit 3" % ran,
                                            node=old)])
        wait_until(lambda: ran.exists(), what="the command to start")
    new_master = killed_and_failed_over(test_cluster, started, master, daemons)
    with new_master.client() as client:
        time.sleep(2)  # reconciled meanwhile: the node refuses connections
        assert fields(client, job_id)["status"] == "running"
        started[old] = nodeds(test_cluster, old)
        wait_all_final(client, [job_id], 60)
        values = fields(client, job_id)
    assert values["status"] == "error" and values["exit_status"] == 3, values
    assert values["attempt"] == 1 and values["node"] == old and values["reason"] == "FAILED"
    assert ran.read_text() == "ran\n"


def test_a_failover_amid_many_short_jobs_on_a_third_node_runs_each_once(tmp_path, nodeds,
                                                                        daemons):
    """kill -9 of the master (jq-masterd and its jq-noded) while 150 short jobs start and
    end on node3, then a failover: the new master finishes every job, each command ran
    exactly once (each run appends its line to a file) and its output is once in its
    log."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3,
                                                  noded_args={"node3": ["--slots", "4"]})
    ran = tmp_path / "ran"
    with master.client() as client:
        ids = [job_id for _, job_id in client.submit_many_jobs(
            [[command("echo ran $JQ_JOB_ID >> %s; sleep 0.02; echo job $JQ_JOB_ID" % ran,
                      node="node3")]] * 150)]
        wait_until(lambda: sum(row[0] == "success" for row in client.query_jobs(
            ids, ["status"])) >= 40, what="forty jobs to end")
    new_master = killed_and_failed_over(test_cluster, started, master, daemons)
    with new_master.client() as client:
        wait_all_final(client, ids, 120)
        failed = [(job_id, row) for job_id, row in zip(
            ids, client.query_jobs(ids, ["status", "reason", "attempt"])) if row[0] != "success"]
        assert failed == [], failed
        for job_id in ids:
            log = "".join(client.follow_job_log(job_id))
            assert log.count("\njob %d\n" % job_id) == 1, log
    runs = collections.Counter(ran.read_text().splitlines())
    assert runs == {"ran %d" % job_id: 1 for job_id in ids}


def test_jobs_cancelled_just_before_a_failover_end_with_every_process(tmp_path, nodeds,
                                                                      daemons, mark):
    """20 jobs run trees of sleeps on node3; each is cancelled and at once the master
    (jq-masterd and its jq-noded) is killed -9; after the failover the new master stops
    what still runs: every job ends canceled and no process of them is left."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3,
                                                  noded_args={"node3": ["--slots", "20"]})
    with master.client() as client:
        ids = submit_trees(client, "node3", mark, 20)
        wait_until(lambda: len(processes_with(mark)) >= 60, what="the jobs' processes")
        for job_id in ids:
            client.cancel_job(job_id)
    new_master = killed_and_failed_over(test_cluster, started, master, daemons)
    with new_master.client() as client:
        all_canceled_and_gone(client, ids, mark)


def test_retries_amid_a_noded_kill_run_each_attempt_once(tmp_path, nodeds, daemons):
    """40 jobs that fail three times (max_attempts 3, short back-offs) on node2; its
    jq-noded is killed -9 amid them and started again: every job ends failed after three
    counted attempts, each command run exactly three times, no attempt twice (each run
    appends its job and JQ_ATTEMPT; an attempt whose command never started, its launch
    cut by the kill, runs again under the next number, uncounted)."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3,
                                                  noded_args={"node2": ["--slots", "20"]})
    ran = tmp_path / "ran"
    script = "echo $JQ_JOB_ID $JQ_ATTEMPT >> %s; sleep 0.05; exit 3" % ran
    with master.client() as client:
        ids = [job_id for _, job_id in client.submit_many_jobs(
            [[command(script, node="node2", max_attempts=3, retry_delay=0.2,
                      retry_delay_max=0.5)]] * 40)]
        wait_until(lambda: ran.exists() and len(ran.read_text().splitlines()) >= 50,
                   what="fifty attempts to run")
        started["node2"].proc.send_signal(signal.SIGKILL)
        started["node2"].proc.wait(10)
        started["node2"] = nodeds(test_cluster, "node2", args=["--slots", "20"])
        wait_all_final(client, ids, 90)
        rows = client.query_jobs(ids, ["status", "attempt", "exit_status"])
    assert {tuple(row) for row in rows} == {("error", 3, 3)}, rows
    runs = collections.Counter(ran.read_text().splitlines())
    assert [line for line, count in runs.items() if count > 1] == []
    per_job = collections.Counter(int(line.split()[0]) for line in runs)
    assert per_job == {job_id: 3 for job_id in ids}


def test_the_attempt_counter_of_retries_survives_a_failover(tmp_path, nodeds, daemons):
    """A job failing on node2 with attempts left: after a failover during its back-off the
    new master runs the next attempt with the next number."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    with master.client() as client:
        job_id = client.submit_job([command("exit $((JQ_ATTEMPT < 2))", node="node2",
                                            max_attempts=3, retry_delay=3)])
        wait_until(lambda: client.query_jobs([job_id], ["status"])[0][0] == "waiting",
                   what="the first attempt to fail")
    new_master = killed_and_failed_over(test_cluster, started, master, daemons)
    with new_master.client() as client:
        wait_all_final(client, [job_id], 60)
        values = fields(client, job_id)
    assert values["status"] == "success" and values["attempt"] == 2, values


def test_a_nodes_prolog_and_epilog_are_its_own(tmp_path, nodeds, daemons):
    """node2's jq-noded has a prolog and an epilog (--prolog, --epilog), the master's node
    none: on node2 a refused prolog fails the attempt INTERR without running the command,
    a failing epilog leaves the job's success as it is and the master lists node2 as
    degraded and (--epilog-failure drain) drains it, as Slurm does: a job pinned there
    waits; a job on the master's node runs without either."""
    prolog = '[ "$JQ_TEST_MARK" != fail ] || { echo refused on $JQ_NODE; exit 1; }'
    epilog = 'echo epilog on $JQ_NODE: $JQ_EXIT_STATUS; [ "$JQ_TEST_MARK" != bad ] || exit 2'
    test_cluster, _, master = start_cluster(
        tmp_path, nodeds, daemons, 2, args=["--epilog-failure", "drain"],
        noded_args={"node2": ["--prolog", prolog, "--epilog", epilog]})
    with master.client() as client:
        refused = client.submit_job([command("echo ran", node="node2",
                                             env={"JQ_TEST_MARK": "fail"})])
        degrading = client.submit_job([command("echo ran", node="node2",
                                               env={"JQ_TEST_MARK": "bad"})])
        plain = client.submit_job([command("echo ran", env={"JQ_TEST_MARK": "fail"})])
        wait_all_final(client, [refused, degrading, plain], 30)
        logs = {job: "".join(client.follow_job_log(job)) for job in (refused, degrading, plain)}
        values = fields(client, refused)
        assert (values["status"], values["reason"]) == ("error", "INTERR"), values
        assert "refused on node2\n" in logs[refused] and "\nran\n" not in logs[refused]
        assert "epilog on node2:\n" in logs[refused]
        assert fields(client, degrading)["status"] == "success"
        assert "\nran\nepilog on node2: 0\n" in logs[degrading]
        assert "* EPILOG : exited with status 2 (the outcome stands)" in logs[degrading]
        assert fields(client, plain)["status"] == "success"
        assert "epilog" not in logs[plain] and "refused" not in logs[plain]
        wait_until(lambda: {row["name"]: row["drained"] for row in client.list_nodes()}
                   == {"node1": False, "node2": True}, what="node2 drained")
        rows = {row["name"]: row for row in client.list_nodes()}
        # The event follows the drain (recorded once the change is made): waited for.
        events = client.wait_for_events(0, {"kind": "node", "status": ["DRAINED"]}, 10)
        later = client.submit_job([command("echo ran", node="node2")])
        wait_until(lambda: client.query_jobs([later], ["wait_reason"])[0] == [
            "NODE_UNAVAILABLE"], what="the job pinned to node2 waiting")
        client.cancel_job(later, True)
    why = "the epilog of job %d attempt 1 exited with status 2" % degrading
    assert rows["node2"]["degraded"] == why
    assert [(e["node"], e["message"]) for e in events["events"]] == [("node2", why)]
    assert rows[test_cluster.master]["degraded"] is None


def test_an_end_the_failed_master_could_not_tell_is_told_by_the_new_one_once(tmp_path, nodeds,
                                                                             daemons):
    """A job with notify ends on node3 while its receiver is down; the master's first try
    fails and the master dies (kill -9) before the next; after the failover, with the
    receiver up, the new master tells that end once, and records it (replicated)."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    down = Receiver()
    port = down.port
    down.close()  # nothing listens there now: the POST is refused
    with master.client() as client:
        job_id = client.submit_job([command("exit 4", node="node3")],
                                   notify="http://127.0.0.1:%d/end" % port)
        wait_all_final(client, [job_id], 30)
    wait_until(lambda: "notification to http://127.0.0.1:%d/end not delivered" % port
               in master.stderr(), what="the first try to fail")
    up = Receiver(port)
    try:
        new_master = killed_and_failed_over(test_cluster, started, master, daemons)
        [(path, body, _)] = up.wait(1, timeout=30)
        assert (path, body["job"], body["status"], body["exit_status"]) == (
            "/end", job_id, "error", 4)
        with new_master.client() as client:
            wait_until(lambda: client.query_jobs([job_id], ["notified"])[0][0],
                       what="the delivery recorded")
            assert client.query_jobs([job_id], ["notified"])[0][0]["delivered"]
        time.sleep(1)
        assert len(up.received) == 1
    finally:
        up.close()
