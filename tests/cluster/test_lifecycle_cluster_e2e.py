"""End-to-end tests of holds, start times, groups and purges in a cluster: they are journal
records like any change, so candidates hold them, a failover keeps them, and candidates
purge what the master purged (files and logs)."""

import os
import signal
import time

from daemon_helpers import wait_all_final
from test_cluster_e2e import jqctl, start_cluster, wait_verified
from test_commands_cluster_e2e import command, wait_until
from test_failover_e2e import _fail_over

import jqueue
from jqueue.job import ts_to_float


def fields(client, job_id, names):
    return dict(zip(names, client.query_jobs([job_id], names)[0]))


def test_start_times_holds_and_groups_survive_a_failover(tmp_path, nodeds, daemons):
    """A scheduled job, a held one and a group: after kill -9 of the master and a failover
    the new master keeps the start time (the job runs then, not before), the hold and the
    tree."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    old = test_cluster.master
    with jqueue.Client(master.socket) as client:
        group = client.submit_job([{"OP_ID": "OP_GROUP", "title": "nightly"}])
        held = client.submit_job([{"OP_ID": "OP_GROUP", "title": "held"}], parent=group)
        assert client.hold_job(held)[0]
        waiting = client.submit_job([command("true", node="node3")], parent="nightly|held")
        scheduled = client.submit_job([command("true", node="node2")], parent="nightly",
                                      start_in=8)
        not_before = fields(client, scheduled, ["not_before"])["not_before"]
    master.proc.send_signal(signal.SIGKILL)
    started[old].proc.send_signal(signal.SIGKILL)
    master.proc.wait(10)
    started[old].proc.wait(10)
    winner, _ = _fail_over(test_cluster, [n for n in test_cluster.names if n != old])
    new_master = daemons(test_cluster.state_dirs[winner])
    with jqueue.Client(new_master.socket) as client:
        got = fields(client, scheduled, ["status", "not_before", "parent"])
        if time.time() < not_before:
            assert got["status"] == "queued"
        assert got["not_before"] == not_before and got["parent"] == group
        assert fields(client, held, ["held"]) == {"held": True}
        assert client.wait_for_job(scheduled, timeout=60).status == "success"
        assert ts_to_float(fields(client, scheduled, ["start_ts"])["start_ts"]) >= not_before
        assert fields(client, waiting, ["status"]) == {"status": "queued"}  # its group held
        wait_until(lambda: fields(client, group, ["finished"]) == {"finished": 1}, 30,
                   "the group to count the scheduled job")
        assert fields(client, group, ["status", "total"]) == {"status": "queued", "total": 2}
        assert client.release_job(group)[0]
        assert client.wait_for_job(group, timeout=60).status == "success"
        assert fields(client, waiting, ["status"]) == {"status": "success"}


def test_candidates_purge_what_the_master_purged(tmp_path, nodeds, daemons):
    """jqctl purge on the master: the candidates remove the same jobs' archive files and
    command logs, and the archive directories left empty; the cluster verifies clean."""
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    with master.client() as client:
        ids = [client.submit_job([command("echo job $JQ_JOB_ID")]) for _ in range(3)]
        wait_all_final(client, ids, 60)
    code, out, err = jqctl("autoarchive", "all", socket=master.socket)
    assert code == 0 and out == "Archived 3 jobs\n", err
    candidates = [n for n in test_cluster.names if n != test_cluster.master]

    def files(name):
        state = test_cluster.state_dirs[name]
        archive = os.path.join(test_cluster.queue_dir(name), "archive")
        logs = os.path.join(state, "logs")
        return (sorted(os.listdir(archive)) if os.path.isdir(archive) else [],
                sorted(os.listdir(logs)) if os.path.isdir(logs) else [])

    master_name = test_cluster.master

    def checkpointed(name):  # the test's nodes checkpoint every 60s: ask for one now
        test_cluster.call(master_name, name, "checkpoint", {})
        return files(name)

    for name in candidates:
        assert checkpointed(name) == (["0"], ["%d.log" % i for i in ids]), name
    code, out, err = jqctl("purge", "--older-than", "0", socket=master.socket)
    assert code == 0 and out.startswith("Purged 3 jobs"), err
    assert files(master_name) == ([], [])
    for name in candidates:  # the purge is acknowledged: they have its record
        assert checkpointed(name) == ([], []), name
    wait_verified(master.socket)
