"""Crash test of command jobs in a cluster: kill -9 (or SIGTERM) of jq-masterd, of a node's
jq-noded, or of both, at random moments, many times, while command jobs run on either node (the
workload and its checks: tests/crash_commands.py)."""

import os
import random

from crash_commands import Workload
from daemon_helpers import restart_at_random
from test_cluster_e2e import start_cluster
from test_failover_e2e import fail_over_at_random

#: Rounds of jobs and kills, and the seed of their choices (change them to hunt).
ROUNDS = int(os.environ.get("JQ_COMMAND_CRASH_ROUNDS", "5"))
SEED = int(os.environ.get("JQ_COMMAND_CRASH_SEED", "0"))
#: Failovers of the last test.
FAILOVERS = int(os.environ.get("JQ_COMMAND_CRASH_FAILOVERS", "3"))


def test_restarts_of_either_daemon_lose_no_attempt_output_or_outcome(tmp_path, nodeds,
                                                                     daemons):
    """As on one machine (tests/daemon/test_commands_crash_e2e.py), with the commands run
    by the jq-noded of the master's node or of the other one, and the daemons killed -9
    (or, one time in four, stopped by SIGTERM) each round chosen at random among
    jq-masterd, either jq-noded and all of them."""
    rng = random.Random(20261208 + SEED)
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 2,
                                                  noded_args={"node1": ["--slots", "6"],
                                                              "node2": ["--slots", "6"]})
    work = Workload(rng, tmp_path / "started", nodes=test_cluster.names)
    ids = []
    for _ in range(ROUNDS):
        work.round(master, ids)
        restart_at_random(rng, rng.choice([[master], [started["node1"]], [started["node2"]],
                                           [master, started["node2"]],
                                           [master, *started.values()]]))
    ids, problems = work.outcome(master, ids)
    assert not problems, "\n".join(problems)
    assert sum(len(work.started(job_id)) for job_id in ids) > len(ids)  # retries ran
    assert work.canceled


def test_failovers_amid_command_jobs_lose_no_attempt_output_or_outcome(tmp_path, nodeds,
                                                                       daemons):
    """Three nodes; after each round's jobs are submitted the master (jq-masterd and its
    jq-noded) is killed -9 at a random moment and another node, chosen at random, takes
    over (jqctl master-failover), the old one's jq-noded started again: at the end, as
    above, with the events as the last master tells them."""
    rng = random.Random(20261209 + SEED)
    test_cluster, started, master = start_cluster(
        tmp_path, nodeds, daemons, 3, noded_args={"node1": ["--slots", "6"],
                                                  "node2": ["--slots", "6"],
                                                  "node3": ["--slots", "6"]})
    work = Workload(rng, tmp_path / "started", nodes=test_cluster.names)
    ids, current = [], test_cluster.master
    for _ in range(FAILOVERS):
        work.round(master, ids)
        current, master = fail_over_at_random(rng, test_cluster, started, current, master,
                                              daemons, nodeds, noded_args=["--slots", "6"])
    ids, problems = work.outcome(master, ids, action_log=False)
    assert not problems, "\n".join(problems)
    assert work.canceled
