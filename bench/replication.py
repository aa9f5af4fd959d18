"""Benchmark of replication: durable submits per second with 0, 1, 2 and 4 candidates.

Each configuration is a real cluster on loopback (jq-noded on every node, jq-masterd on
the master, mutual TLS between them), built like the end-to-end tests build theirs;
submits come through the LUXI socket from 1 and from 16 client processes (no worker runs
the jobs, as in the other submit figures; no checkpoint during the windows). Every figure
is a ratio to the local-only one (a single-node jq-masterd) measured in the same run.
Target (the cost issue): with 2 candidates, at least 0.7x the local-only rate at 16 clients.
"""

import os
import sys

import luxi

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from cluster_helpers import NodeDaemon, build_cluster  # noqa: E402 - shared with the tests

CANDIDATES = (1, 2, 4)


def _measure(sock, seconds):
    return {clients: luxi.submit_rate(sock, clients, seconds) for clients in (1, 16)}


def local_only(root, seconds):
    proc, sock = luxi.start_daemon(os.path.join(root, "local"), workers=0,
                                   checkpoint_interval=60)
    try:
        return _measure(sock, seconds)
    finally:
        luxi.stop_daemon(proc)


def clustered(root, candidates, seconds):
    """Rates with a master and `candidates` candidates (default policy: a majority)."""
    test_cluster = build_cluster(os.path.join(root, "c%d" % candidates), candidates + 1)
    nodeds = [NodeDaemon(test_cluster, name).start(wait=False) for name in test_cluster.names]
    try:
        for noded in nodeds:
            noded.wait_ready()
        proc, sock = luxi.start_daemon(test_cluster.state_dirs[test_cluster.master], workers=0,
                                       checkpoint_interval=60)
        try:
            return _measure(sock, seconds), test_cluster.config.effective_min_acks()
        finally:
            luxi.stop_daemon(proc)
    finally:
        for noded in nodeds:
            noded.stop()


def run(root, quick=False, results=None):
    """Rows of (label, rate, unit, ratio to local-only)."""
    seconds = 1.0 if quick else 3.0
    local = local_only(root, seconds)
    rows = [("local only (no candidates), %d client%s" % (c, "s" * (c > 1)), rate, "/s", 1.0)
            for c, rate in local.items()]
    for candidates in CANDIDATES:
        rates, min_acks = clustered(root, candidates, seconds)
        for clients, rate in rates.items():
            rows.append(("%d candidate%s (min_acks %d), %d client%s" % (
                candidates, "s" * (candidates > 1), min_acks, clients, "s" * (clients > 1)),
                rate, "/s", rate / local[clients]))
    return rows
