"""Ganeti 3.0.2's real clients drive a real jq-masterd, unchanged.

Ganeti's client code comes from Debian's ganeti-3.0 package, downloaded and unpacked (never
installed) under build/ganeti by tools/fetch-ganeti (``make test`` runs it; this test runs
it too when the tree is missing). Ganeti finds its LUXI socket through ``pathutils``: with
a virtual cluster root (GANETI_ROOTDIR=<root>/node1, GANETI_HOSTNAME=node1) that is
<root>/node1/var/run/ganeti/socket/ganeti-query, where jq-masterd listens here. The
commands are Ganeti's own scripts (gnt-job, gnt-debug, gnt-cluster) run as processes; the
library calls (luxi.Client, cli.PollJob, cli.SubmitOpCode, cli.JobExecutor) run in
ganeti_client_child.py. Where the package cannot be had, the test fails saying so: it
never skips.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
from daemon_helpers import wait_all_final

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GANETI_ROOT = os.environ.get("JQ_GANETI_ROOT") or os.path.join(REPO, "build", "ganeti")
GANETI_TREE = os.path.join(GANETI_ROOT, "usr", "share", "ganeti", "3.0")
FETCH = os.path.join(REPO, "tools", "fetch-ganeti")
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ganeti_client_child.py")
HOST = "node1"
CLUSTER = "jqcompat"
TIMEOUT = 120


def _loud_failure(what, detail):
    pytest.fail("\n" + "=" * 72 + "\nGANETI COMPATIBILITY TEST CANNOT RUN: %s\n%s\n" % (
        what, detail) + "=" * 72, pytrace=False)


def _ganeti_tree():
    """The unpacked Ganeti 3.0 tree; fetched now if missing; a loud failure if impossible."""
    if not os.path.isfile(os.path.join(GANETI_TREE, "ganeti", "luxi.py")):
        result = subprocess.run(["sh", FETCH], capture_output=True, text=True, timeout=600,
                                check=False)
        if result.returncode != 0:
            _loud_failure(
                "Debian's ganeti-3.0 package could not be had",
                "tools/fetch-ganeti (apt-get download ganeti-3.0 and dpkg-deb -x into %s) "
                "failed with status %d:\n%s%s" % (GANETI_ROOT, result.returncode,
                                                  result.stdout, result.stderr))
    return GANETI_TREE


class VirtualCluster:
    """A throwaway Ganeti virtual cluster root for one node, pointing at our socket."""

    def __init__(self, tree):
        self.tree = tree
        # Short: a Unix socket path must fit in 108 bytes.
        self.base = tempfile.mkdtemp(prefix="jqg")
        self.root = os.path.join(self.base, HOST)
        self.socket_dir = os.path.join(self.root, "var", "run", "ganeti", "socket")
        self.query_socket = os.path.join(self.socket_dir, "ganeti-query")
        data_dir = os.path.join(self.root, "var", "lib", "ganeti")
        for path in (self.socket_dir, data_dir, os.path.join(self.root, "var", "log",
                                                             "ganeti")):
            os.makedirs(path)
        # The master socket is the same daemon (Ganeti 3.0 splits queries and jobs).
        os.symlink("ganeti-query", os.path.join(self.socket_dir, "ganeti-master"))
        # Minimal ssconf: what Ganeti's clients read when they look for the master.
        for key, value in (("master_node", HOST), ("cluster_name", CLUSTER),
                           ("node_list", HOST), ("master_candidates", HOST)):
            with open(os.path.join(data_dir, "ssconf_" + key), "w") as stream:
                stream.write(value + "\n")

    def env(self):
        env = dict(os.environ, GANETI_ROOTDIR=self.root, GANETI_HOSTNAME=HOST,
                   PYTHONPATH=self.tree)
        env.pop("FORCE_LUXI_SOCKET", None)
        return env

    def run(self, *argv):
        """A Ganeti command (gnt-job list, ...) as a process: (status, stdout, stderr)."""
        command = [sys.executable, os.path.join(self.tree, argv[0]), *argv[1:]]
        result = subprocess.run(command, capture_output=True, text=True, env=self.env(),
                                timeout=TIMEOUT, check=False)
        return result.returncode, result.stdout, result.stderr

    def python(self, script):
        result = subprocess.run([sys.executable, script], capture_output=True, text=True,
                                env=self.env(), timeout=TIMEOUT, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    def close(self):
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def ganeti_tree():
    tree = _ganeti_tree()
    probe = subprocess.run([sys.executable, "-c", "import ganeti.cli, ganeti.client.gnt_job"],
                           capture_output=True, text=True, env=dict(os.environ,
                                                                    PYTHONPATH=tree),
                           timeout=TIMEOUT, check=False)
    if probe.returncode != 0:
        _loud_failure("Ganeti's Python modules do not import",
                      "install the ganeti-compat extra (pip install -e '.[ganeti-compat]', "
                      "which make test does):\n" + probe.stderr)
    return tree


@pytest.fixture
def cluster(ganeti_tree, daemons):
    """(VirtualCluster, jq-masterd listening on its Ganeti query socket)."""
    vcluster = VirtualCluster(ganeti_tree)
    daemon = daemons(socket_path=vcluster.query_socket)
    yield vcluster, daemon
    status = daemon.stop()
    vcluster.close()
    assert status == 0, daemon.stderr()


def _ok(result):
    status, out, err = result
    assert status == 0, "exit status %d\nstdout:\n%s\nstderr:\n%s" % (status, out, err)
    return out


def test_ganeti_client_library_submits_polls_and_manages_jobs(cluster):
    """luxi.Client, cli.PollJob, cli.SubmitOpCode and cli.JobExecutor work unchanged."""
    vcluster, daemon = cluster
    seen = vcluster.python(CHILD)
    job_id = seen["submit_job_id"]
    assert isinstance(job_id, int)
    assert seen["poll_job"] == [None] and seen["submit_opcode"] is None
    assert seen["feedback"] == ["Test delay iteration 0/1", "Test delay iteration 1/1"]
    assert seen["executor"] == [[True, [None]]] * 3
    assert seen["query_jobs"] == [[job_id, "success", ["success"], ["TEST_DELAY(0)"]]]
    assert seen["query"] == [[[0, job_id], [0, "success"]]]
    assert {"id", "status", "summary", "oplog"} <= set(seen["query_fields"])
    assert seen["change_priority"][0] is True and seen["cancel"][0] is True
    assert seen["cancel_result"] is not None
    assert seen["archive"] is True
    assert seen["archived_wait"] == "JobLost"
    assert seen["archived_query_jobs"] == [[job_id, "success", True]]
    assert seen["auto_archive"][1] == 0 and seen["auto_archive"][0] >= 4
    assert seen["drain"] is True and seen["drained_values"] == [True]
    assert seen["drained_submit"] == "JobQueueDrainError"
    assert seen["undrain"] is True and seen["config_values"][0] is False
    assert seen["unknown_job_wait"] == "JobLost"
    with daemon.client() as client:
        rows = client.query_jobs([job_id], ["archived"])
    assert rows == [[True]]


def test_gnt_debug_and_gnt_job_commands(cluster):
    """gnt-debug delay, gnt-job list/info/watch/cancel/archive/autoarchive as shipped."""
    vcluster, daemon = cluster
    _ok(vcluster.run("gnt-debug", "delay", "0.1"))
    waited = _ok(vcluster.run("gnt-debug", "delay", "--submit", "--print-jobid", "0"))
    second = int(waited.split()[0])
    slow = int(_ok(vcluster.run("gnt-debug", "delay", "--submit", "--print-jobid",
                                "60")).split()[0])
    with daemon.client() as client:
        wait_all_final(client, [1, second])
    listing = _ok(vcluster.run("gnt-job", "list", "--no-headers", "-o", "id,status,summary"))
    assert re.search(r"^\s*1 success TEST_DELAY\(0\.1\)$", listing, re.M), listing
    assert re.search(r"^\s*%d success TEST_DELAY\(0\.0\)$" % second, listing, re.M), listing
    info = _ok(vcluster.run("gnt-job", "info", "1", "424242"))
    assert "Job ID: 1" in info and "Status: success" in info and "OP_TEST_DELAY" in info
    assert "Job ID 424242 not found" in info
    watched = _ok(vcluster.run("gnt-job", "watch", str(second)))
    assert "Output from job %d follows" % second in watched
    cancel = _ok(vcluster.run("gnt-job", "cancel", str(slow)))
    assert str(slow) in cancel
    with daemon.client() as client:
        assert wait_all_final(client, [slow])[slow][0] == "canceled"
    _ok(vcluster.run("gnt-job", "archive", "1"))
    assert os.path.exists(os.path.join(daemon.queue_dir, "archive", "0", "job-1"))
    auto = _ok(vcluster.run("gnt-job", "autoarchive", "all"))
    assert "Archived 2 jobs, 0 unchecked left" in auto
    listing = _ok(vcluster.run("gnt-job", "list", "--no-headers"))
    assert listing.strip() == ""
    archived = _ok(vcluster.run("gnt-job", "list", "--no-headers", "--archived",
                                "-o", "id,status"))
    assert re.findall(r"^\s*(\d+) (\w+)\s+Y$", archived, re.M) == [
        ("1", "success"), (str(second), "success"), (str(slow), "canceled")], archived


def test_gnt_cluster_queue_drain_undrain_info(cluster):
    """gnt-cluster queue drain/info/undrain, and a drained queue refuses gnt-debug delay."""
    vcluster, _daemon = cluster
    _ok(vcluster.run("gnt-cluster", "queue", "drain"))
    assert "The drain flag is set" in _ok(vcluster.run("gnt-cluster", "queue", "info"))
    status, out, err = vcluster.run("gnt-debug", "delay", "0")
    assert status != 0 and "drain" in (out + err)
    _ok(vcluster.run("gnt-cluster", "queue", "undrain"))
    assert "The drain flag is unset" in _ok(vcluster.run("gnt-cluster", "queue", "info"))
    _ok(vcluster.run("gnt-debug", "delay", "0"))
