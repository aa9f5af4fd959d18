"""Prometheus metrics (``GET /metrics``), read from the daemon when they are scraped.

Nothing is counted twice: each scrape reads the queue's own counters (JobQueue.metrics:
jobs by status from the index, the last job id, waiters, the journal's syncs, records and
acknowledgement latency), the command runner's nodes and, in a cluster, the replication
status, through one prometheus_client collector on a registry of the daemon's own.

    jqueue_jobs{status}                     live jobs by status
    jqueue_jobs_submitted_total             jobs submitted (the last job id)
    jqueue_ack_latency_seconds              histogram: a change's journal batch, opened to
                                            acknowledged (durable and replicated)
    jqueue_journal_syncs_total              journal fdatasyncs
    jqueue_journal_records_total            journal records written
    jqueue_journal_records_per_sync         records per sync, on average
    jqueue_waiters{kind}                    waiting clients: job, log, events
    jqueue_retention_passes_total           retention passes (and jqctl purge runs)
    jqueue_retention_archived_total         jobs retention archived
    jqueue_retention_purged_total           archived jobs purged (with their logs)
    jqueue_retention_freed_bytes_total      bytes the purges freed
    jqueue_replication_lag_batches{node}    group commits a candidate has not acknowledged
    jqueue_replication_backlog{node}        group commits queued for a candidate
    jqueue_replication_in_sync{node}        1 if the candidate is in sync
    jqueue_node_running_commands{node}      command attempts running on a node
    jqueue_node_slots{node}                 command slots of a node
    jqueue_node_queued_commands{node}       command attempts waiting for a node's slot
    jqueue_node_reachable{node}             1 if the node answers its heartbeats
    jqueue_node_load1{node}                 a node's 1-minute load average
    jqueue_node_memory_total_bytes{node}    a node's memory
    jqueue_node_memory_available_bytes{node}  what of it is available (MemAvailable)

The last three as the node's last heartbeat said them; none for a node that does not
answer (its last reading is old news) or does not say them.
"""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from jqueue import constants
from jqueue.http.server import Response

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class QueueCollector:
    """Collects the metrics of a backend (JobQueue) and, if given, a replication status
    callable (the cluster's replicator.status)."""

    def __init__(self, backend, replication_status=None):
        self._backend = backend
        self._replication = replication_status

    def collect(self):
        stats = self._backend.metrics()
        jobs = GaugeMetricFamily("jqueue_jobs", "Live jobs by status", labels=["status"])
        for status in sorted(constants.JOB_STATUS_ALL):
            jobs.add_metric([status], stats["by_status"].get(status, 0))
        yield jobs
        yield CounterMetricFamily("jqueue_jobs_submitted", "Jobs submitted (the last job id)",
                                  value=stats["serial"])
        yield _histogram(stats["ack_latency"])
        journal = stats["journal"]
        yield CounterMetricFamily("jqueue_journal_syncs", "Journal fdatasyncs",
                                  value=journal.get("syncs", 0))
        yield CounterMetricFamily("jqueue_journal_records", "Journal records written",
                                  value=journal.get("records", 0))
        syncs = journal.get("syncs", 0)
        yield GaugeMetricFamily("jqueue_journal_records_per_sync",
                                "Journal records per fdatasync, on average",
                                value=journal.get("records", 0) / syncs if syncs else 0.0)
        waiters = GaugeMetricFamily("jqueue_waiters", "Clients waiting for a change",
                                    labels=["kind"])
        waiters.add_metric(["job"], stats["waiters"])
        waiters.add_metric(["log"], stats["log_waiters"])
        waiters.add_metric(["events"], stats["event_waiters"])
        yield waiters
        retention = stats.get("retention") or {}
        for key, name, text in (
                ("passes", "passes", "Retention passes (and jqctl purge runs)"),
                ("archived", "archived", "Jobs retention archived"),
                ("purged", "purged", "Archived jobs purged with their logs"),
                ("bytes_freed", "freed_bytes", "Bytes the purges freed")):
            yield CounterMetricFamily("jqueue_retention_" + name, text,
                                      value=retention.get(key, 0))
        yield from self._replication_metrics()
        yield from self._node_metrics()

    def _replication_metrics(self):
        lag = GaugeMetricFamily("jqueue_replication_lag_batches", "Group commits a candidate "
                                "has not acknowledged", labels=["node"])
        backlog = GaugeMetricFamily("jqueue_replication_backlog", "Group commits queued for a "
                                    "candidate", labels=["node"])
        in_sync = GaugeMetricFamily("jqueue_replication_in_sync", "1 if the candidate is in "
                                    "sync", labels=["node"])
        if self._replication is not None:
            status = self._replication()
            for peer in status.get("peers", []):
                acked = peer.get("acked_seq") or 0
                lag.add_metric([peer["name"]], max(0, (status.get("seq") or 0) - acked))
                backlog.add_metric([peer["name"]], peer.get("backlog") or 0)
                in_sync.add_metric([peer["name"]], 1 if peer.get("in_sync") else 0)
        yield lag
        yield backlog
        yield in_sync

    def _node_metrics(self):
        running = GaugeMetricFamily("jqueue_node_running_commands", "Command attempts "
                                    "running on a node", labels=["node"])
        slots = GaugeMetricFamily("jqueue_node_slots", "Command slots of a node",
                                  labels=["node"])
        queued = GaugeMetricFamily("jqueue_node_queued_commands", "Command attempts waiting "
                                   "for a slot of a node", labels=["node"])
        reachable = GaugeMetricFamily("jqueue_node_reachable", "1 if the node answers",
                                      labels=["node"])
        machine = {key: GaugeMetricFamily(name, doc, labels=["node"]) for key, name, doc in (
            ("load", "jqueue_node_load1", "A node's 1-minute load average"),
            ("mem_total", "jqueue_node_memory_total_bytes", "A node's memory"),
            ("mem_available", "jqueue_node_memory_available_bytes",
             "A node's memory available without swapping"),
            ("mem_reserved", "jqueue_node_memory_reserved_bytes",
             "A node's memory kept from the commands (memory_reserve)"))}
        commands = self._backend.commands
        nodes = commands.node_status() if commands is not None else {}
        for name, row in sorted(nodes.items()):
            running.add_metric([name], len(row.get("running") or []))
            slots.add_metric([name], row.get("slots") or 0)
            queued.add_metric([name], row.get("queued") or 0)
            reachable.add_metric([name], 1 if row.get("reachable", True) else 0)
            for key, value in (row.get("resources") or {}).items():
                if key in machine and value is not None:
                    machine[key].add_metric([name], value)
        yield running
        yield slots
        yield queued
        yield reachable
        yield from machine.values()


def _histogram(latency):
    buckets = [("+Inf" if bound == float("inf") else repr(bound), count)
               for bound, count in latency.buckets()]
    return HistogramMetricFamily(
        "jqueue_ack_latency_seconds", "Seconds from a change's journal batch being opened "
        "to its acknowledgement (durable and replicated)", buckets=buckets,
        sum_value=latency.sum)


def registry(backend, replication_status=None):
    """A registry of the daemon's metrics (not prometheus_client's global one)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(QueueCollector(backend, replication_status))
    return reg


def get_metrics(call):
    """GET /metrics: collected in the pool (a node's status is asked of the reactor)."""
    reg = call.site.context["metrics"]
    return call.blocking(generate_latest, reg).addCallback(
        lambda body: Response(200, body, CONTENT_TYPE))
