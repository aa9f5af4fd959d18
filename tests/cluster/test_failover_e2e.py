"""End-to-end failover: kill -9 the master under load, fail over, lose nothing, fence the old.

Clients submit jobs, each carrying a unique token in its comment, and record every
acknowledged (job id, token). The master node dies (jq-masterd and its jq-noded, kill -9)
in the middle of that load, while the candidates lag behind (frozen with SIGSTOP): a
master acknowledging anything before candidates hold it would lose jobs here. jqctl
master-failover elects a candidate, jq-masterd starts there, and the history is checked
against the new master: every acknowledged job is there with its own token (nothing
lost, no id reused), no token appears twice (nothing duplicated), and new ids continue
above every one seen. The old master, restarted, is fenced: its jq-masterd refuses to
start, and its updates are refused by every node.
"""

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from daemon_helpers import delay, wait_all_final, wait_for_status
from test_cluster_e2e import job_files, jqctl, start_cluster, wait_verified

from jqueue import errors
from jqueue.luxi.client import Client

FIELDS = ["id", "status", "ops"]




class TokenLoad:
    """Client threads submitting jobs with unique tokens; the acknowledged (id, token)."""

    def __init__(self, socket, threads=3):
        self.socket = socket
        self.acked = {}
        self.failures = 0
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, number):
        while not self._stop.is_set():
            try:
                with Client(self.socket, timeout=10) as client:
                    while not self._stop.is_set():
                        token = "client%d-%d" % (number, next(self._tokens))
                        job_id = client.submit_job([{"OP_ID": "OP_TEST_DELAY",
                                                     "duration": 0, "comment": token}])
                        with self._lock:
                            self.acked[job_id] = token
            except errors.GenericError:
                with self._lock:
                    self.failures += 1
                time.sleep(0.05)

    def wait_for(self, count, timeout=30):
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, "only %d acknowledged" % len(self.acked)
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        with self._lock:
            return dict(self.acked)


def _fail_over(test_cluster, candidates):
    """Run jqctl master-failover on the first candidate that wins; its name and output."""
    outputs = []
    for name in candidates:
        code, out, err = jqctl("master-failover", "--yes", "--timeout", "5",
                               "--state-dir", test_cluster.state_dirs[name])
        outputs.append((name, code, out, err))
        if code == 0:
            return name, out
    raise AssertionError("no candidate won the election: %s" % outputs)


def fail_over_at_random(rng, test_cluster, started, current, master, daemons, nodeds,
                        noded_args=(), master_args=()):
    """kill -9 of the master's two daemons (master, and its node current's jq-noded in
    started), a failover to another node (jqctl master-failover, the candidates tried in
    an order rng chooses), the old node's jq-noded started again (noded_args): the new
    master's node and its Daemon (master_args)."""
    for daemon in (master, started[current]):
        daemon.proc.kill()
        daemon.proc.wait()
    others = [name for name in test_cluster.names if name != current]
    winner, _ = _fail_over(test_cluster, rng.sample(others, len(others)))
    master = daemons(test_cluster.state_dirs[winner], args=list(master_args))
    started[current] = nodeds(test_cluster, current, args=noded_args)
    return winner, master


def _tokens_on(client, ids):
    """{job id: token} of the given jobs on a master (None for missing ones)."""
    tokens = {}
    for job_id, row in zip(ids, client.query_jobs(ids, FIELDS)):
        tokens[job_id] = None if row is None else row[2][0]["comment"]
    return tokens


def test_failover_after_kill_loses_nothing_and_fences_the_old_master(tmp_path, nodeds,
                                                                      daemons):
    """kill -9 of the master under load, then failover: every acknowledged job survives with
    its own id, none twice, ids continue above; the restarted old master is fenced."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    old = test_cluster.master
    load = TokenLoad(master.socket)
    load.wait_for(150)
    candidates = [n for n in test_cluster.names if n != old]
    # The candidates fall behind (frozen) while the load goes on; then the master dies.
    # Whatever the master acknowledged meanwhile would exist nowhere else.
    for name in candidates:
        started[name].proc.send_signal(signal.SIGSTOP)
    time.sleep(0.5)
    master.proc.send_signal(signal.SIGKILL)
    started[old].proc.send_signal(signal.SIGKILL)
    master.proc.wait(10)
    started[old].proc.wait(10)
    for name in candidates:
        started[name].proc.send_signal(signal.SIGCONT)
    acked = load.stop()
    assert len(acked) >= 150

    winner, output = _fail_over(test_cluster, candidates)
    assert "epoch 2" in output
    new_master = daemons(test_cluster.state_dirs[winner])
    with new_master.client() as client:
        ids = sorted(acked)
        found = _tokens_on(client, ids)
        lost = [i for i in ids if found[i] is None]
        reused = [i for i in ids if found[i] is not None and found[i] != acked[i]]
        assert not lost, "acknowledged jobs lost: %s" % lost[:10]
        assert not reused, "ids reused for other jobs: %s" % reused[:10]
        everything = [row[0] for row in client.query_jobs([], ["id"])]
        all_tokens = _tokens_on(client, everything)
        seen = {}
        for job_id, token in all_tokens.items():
            assert token not in seen, "job submitted twice: %s and %s" % (seen[token], job_id)
            seen[token] = job_id
        fresh = client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}])
        assert fresh > max(everything)
        wait_all_final(client, [fresh] + ids[-20:])

    # The old master comes back: its noded runs again, its jq-masterd is refused.
    started[old] = nodeds(test_cluster, old)
    refused = subprocess.run([sys.executable, "-m", "jqueue.daemon.masterd", "--state-dir",
                              test_cluster.state_dirs[old]], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 1
    assert "fenced" in refused.stderr or "not the master" in refused.stderr, refused.stderr
    other = [n for n in candidates if n != winner][0]
    with pytest.raises(errors.FencedError):
        test_cluster.call(old, other, "replicate", {
            "epoch": 1, "master": old, "session": 99, "seq_from": 1, "seq_to": 1,
            "records": []})


def _stop_spawned(pid):
    """SIGTERM a jq-masterd that jqctl spawned (a child of this process); its exit status."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("jq-masterd %d did not stop" % pid)
        time.sleep(0.05)


def _all_job_files_identical(test_cluster):
    """Whether every node's live job files equal the master's, byte for byte."""
    files = {name: job_files(test_cluster.queue_dir(name)) for name in test_cluster.names}
    return all(other == files["node2"] for other in files.values()), files


def test_after_a_failover_the_cluster_heals_by_itself(tmp_path, nodeds, daemons):
    """kill -9 of the master, master-failover --start elsewhere, the old master's daemons
    restarted: with no operator step the old master takes the new configuration, becomes a
    candidate again, is resynced and counts for acknowledgements; cluster verify exits 0 and
    every job file is byte-identical on all three nodes."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    dirs = test_cluster.state_dirs
    with master.client() as client:
        before = [client.submit_job([delay(0, comment="before %d" % n)]) for n in range(20)]
        wait_all_final(client, before)
        running = client.submit_job([delay(3600)])
        wait_for_status(client, running, ["running"])
    # jqctl wait on the master's node follows the job through the master's loss...
    waiting = subprocess.Popen(
        [sys.executable, "-m", "jqueue.cli", "--socket", master.socket, "wait", str(running)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    master.kill()
    started["node1"].proc.kill()
    started["node1"].proc.wait(10)

    code, out, err = jqctl("master-failover", "--yes", "--start", "--timeout", "5",
                           "--state-dir", dirs["node2"])
    assert code == 0, (out, err)
    pid = int(re.search(r"jq-masterd started \(pid (\d+)", out).group(1))
    try:
        # ... and once the failover made node2 master, says so (its socket never reaches
        # it).
        try:
            waited_out, waited_err = waiting.communicate(timeout=60)
        finally:
            waiting.kill()
        assert waiting.returncode == 5 and waited_out == "", (waited_out, waited_err)
        assert waited_err.splitlines()[-1].startswith(
            "jqctl: this node (node1) is not the master: node2 (%s) is (epoch 2)" % (
                test_cluster.config.address("node2"))), waited_err
        with open("/proc/%d/comm" % pid, encoding="ascii") as stream:
            assert stream.read().strip() == "jq-masterd"
        _heal_and_check(test_cluster, started, nodeds, dirs, before)
    finally:
        assert _stop_spawned(pid) == 0
    same, files = _all_job_files_identical(test_cluster)
    assert same, {name: sorted(f) for name, f in files.items()}
    assert len(files["node1"]) >= len(before) + 2


def _heal_and_check(test_cluster, started, nodeds, dirs, before):
    new_socket = os.path.join(dirs["node2"], "run", "jqueue.sock")
    old_socket = os.path.join(dirs["node1"], "run", "jqueue.sock")
    # Before it is back, jqctl on the old master asks the nodes: it names the new master.
    code, _, err = jqctl("list", socket=old_socket)
    assert code == 5 and "this node (node1) is not the master: node2" in err, err
    # The old master comes back (jq-noded first, as its systemd units order them): it still
    # holds the configuration of epoch 1 naming it master; the new master pushes it the
    # current one, and it becomes a candidate again and is resynced.
    started["node1"] = nodeds(test_cluster, "node1")
    code, out, err = jqctl("cluster", "verify", "--json", socket=new_socket)
    state = json.loads(out)["node1"]["state"]
    assert state in ("stale configuration", "resyncing", "in sync"), (out, err)
    out = wait_verified(new_socket)
    assert "node1: in sync" in out and "node3: in sync" in out
    refused = subprocess.run([sys.executable, "-m", "jqueue.daemon.masterd", "--state-dir",
                              dirs["node1"]], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "not the master: node2" in refused.stderr, (
        refused.stderr)
    code, _, err = jqctl("list", socket=old_socket)
    assert code == 5 and "not the master: node2" in err and "(epoch 2)" in err, err
    # node1 counts for acknowledgements: with node3 down, it is the one copy needed.
    started["node3"].stop()
    with Client(new_socket, timeout=30) as client:
        alone = client.submit_job([delay(0, comment="node3 down")])
        wait_all_final(client, [alone])
    started["node3"] = nodeds(test_cluster, "node3")
    wait_verified(new_socket)
    with Client(new_socket, timeout=30) as client:
        after = client.submit_job([delay(0, comment="after")])
        wait_all_final(client, before + [alone, after])
    for name in test_cluster.names:
        if name != "node2":
            test_cluster.call("node2", name, "checkpoint", {})
    code, _, _ = jqctl("list", socket=new_socket)  # the master's view answers at once
    assert code == 0
    # On a candidate (no jq-masterd there), node list shows what the node knows.
    code, out, err = jqctl("--state-dir", dirs["node3"], "node", "list", "--json",
                           socket=os.path.join(dirs["node3"], "run", "jqueue.sock"))
    assert code == 0 and "jq-masterd does not answer here" in err, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert {name: (row["role"], row["reachable"], row["epoch"]) for name, row in rows.items()
            } == {"node1": ("candidate", True, 2), "node2": ("master", True, 2),
                  "node3": ("candidate", True, 2)}
