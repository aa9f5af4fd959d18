"""The HTTP API of a cluster's master: real jq-noded processes on three nodes and jq-masterd
--http on the first. The nodes tab's data, Coalition's workers and the metrics an operator
scrapes (replication per candidate, reachability per node) name every node."""

import os
import time

from cluster_helpers import build_cluster
from http_helpers import HttpClient, check_schema, free_port
from prometheus_client.parser import text_string_to_metric_families

NOOP = {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]}


def metric_samples(client):
    """{family name: {node label: value}} of /metrics."""
    answer = client.get("/metrics")
    assert answer.status == 200, answer
    return {family.name: {s.labels.get("node"): s.value for s in family.samples}
            for family in text_string_to_metric_families(answer.text)}


def test_a_masters_nodes_workers_and_replication_metrics_name_every_node(
        tmp_path, nodeds, daemons):
    """Each candidate has its replication lag, backlog and in-sync gauges (in sync soon
    after a submit is acknowledged); /api/v1/nodes and /json/getworkers list the three
    nodes, reachable."""
    cluster = build_cluster(tmp_path / "cluster", 3)
    started = [nodeds(cluster, name, wait=False) for name in cluster.names]
    for noded in started:
        noded.wait_ready()
    port = free_port()
    daemons(cluster.state_dirs[cluster.master], args=["--http", "127.0.0.1:%d" % port])
    client = HttpClient(port)
    client.wait_ready()
    answer = client.post("/api/v1/jobs", NOOP)
    assert answer.status == 201, answer
    assert client.wait_job(answer.json()["id"])["status"] == "success"
    candidates = set(cluster.names) - {cluster.master}
    deadline = time.monotonic() + 20
    while True:
        samples = metric_samples(client)
        nodes = check_schema(client.get("/api/v1/nodes"), "/api/v1/nodes", "GET").json()
        reachable = {node["name"]: node["reachable"] for node in nodes["nodes"]}
        if (samples["jqueue_replication_in_sync"] == dict.fromkeys(candidates, 1.0)
                and all(reachable.values())):
            break
        assert time.monotonic() < deadline, (samples, nodes)
        time.sleep(0.2)
    assert set(reachable) == set(cluster.names)
    # What command jobs see of a node, as on one machine: its slots used, running jobs,
    # queue and last heartbeat (ListNodes names them otherwise; they were lost here).
    node = sorted(candidates)[0]
    sleeper = client.post("/api/v1/jobs", {"cmd": ["sleep", "30"], "node": node}).json()["id"]
    deadline = time.monotonic() + 20
    while True:
        row = next(n for n in client.get("/api/v1/nodes").json()["nodes"] if n["name"] == node)
        if row["running"] == [sleeper]:
            break
        assert time.monotonic() < deadline, row
        time.sleep(0.1)
    assert row["used"] == 1 and row["queued"] == 0 and row["last_heard"] > time.time() - 30
    workers = eval(client.get("/json/getworkers").text,  # noqa: S307 - Coalition's clients do
                   {"__builtins__": {}}, {})
    worker = {w[0]: dict(zip(workers["Vars"], w)) for w in workers["Workers"]}[node]
    assert (worker["State"], worker["LastJob"]) == ("WORKING", sleeper), worker
    assert 0 < worker["FreeMemory"] < worker["TotalMemory"], worker  # from its heartbeats
    assert row["cpus"] == os.cpu_count(), row
    assert row["mem_total"] // 2**20 == worker["TotalMemory"], (row, worker)
    assert client.post("/api/v1/jobs/%d/cancel" % sleeper, {}).status == 200
    lag = samples["jqueue_replication_lag_batches"]  # a snapshot: batches keep coming
    assert set(lag) == candidates and all(value >= 0 for value in lag.values())
    assert set(samples["jqueue_replication_backlog"]) == candidates
    assert samples["jqueue_node_reachable"] == dict.fromkeys(cluster.names, 1.0)
    memory = metric_samples(client)["jqueue_node_memory_total_bytes"]  # from heartbeats
    assert memory[node] == row["mem_total"] > 0, memory
    workers = eval(client.get("/json/getworkers").text,  # noqa: S307 - Coalition's clients do
                   {"__builtins__": {}}, {})
    assert sorted(worker[0] for worker in workers["Workers"]) == sorted(cluster.names)
    client.close()
