"""The queue command: drain, undrain, and info (drain flag, master, job counts)."""

from jqueue import serializer
from jqueue.cli import output, selection
from jqueue.cli.exitcodes import EXIT_SUCCESS

CONFIG_NAMES = ["drain_flag", "master_node", "cluster_name", "queue_status", "retention"]


def register(commands):
    """Add queue drain|undrain|info to the subparsers."""
    parser = commands.add_parser("queue", help="drain, undrain or describe the queue",
                                 description="Drain, undrain or describe the job queue.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    title="actions")
    actions.add_parser("drain", help="refuse new jobs (running and queued jobs go on)",
                       description="Set the drain flag: the queue refuses new jobs."
                       ).set_defaults(func=cmd_drain)
    actions.add_parser("undrain", help="accept new jobs again",
                       description="Clear the drain flag: the queue accepts new jobs."
                       ).set_defaults(func=cmd_undrain)
    info = actions.add_parser("info", help="show the drain flag, master node and job counts",
                              description="Show the drain flag, the master node, the "
                                          "cluster name and how many jobs are in each status.")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_queue_info)


def cmd_drain(ctx, args):
    """Set the drain flag."""
    ctx.client.set_drain_flag(True)
    return EXIT_SUCCESS


def cmd_undrain(ctx, args):
    """Clear the drain flag."""
    ctx.client.set_drain_flag(False)
    return EXIT_SUCCESS


def status_counts(rows):
    """{status: number of jobs} over every status (zeros included), from QueryJobs rows."""
    counts = dict.fromkeys(selection.STATUS_ORDER, 0)
    for row in rows:
        if row is not None:
            counts[row[0]] = counts.get(row[0], 0) + 1
    return counts


def cmd_queue_info(ctx, args):
    """Print the drain flag, master node, cluster name and the jobs per status."""
    drained, master, cluster, health, retention = ctx.client.query_config_values(
        CONFIG_NAMES)
    counts = status_counts(ctx.client.query_jobs([], ["status"]))
    if args.json:
        ctx.out(serializer.dumps({"drain_flag": drained, "master_node": master,
                                  "cluster_name": cluster, "jobs": counts,
                                  "queue_status": health, "retention": retention}))
        return EXIT_SUCCESS
    ctx.out("Drained: %s" % ("yes" if drained else "no"))
    ctx.out("Master node: %s" % master)
    ctx.out("Cluster name: %s" % cluster)
    ctx.out("Jobs: %d" % sum(counts.values()))
    for status, count in counts.items():
        ctx.out("  %s: %d" % (status, count))
    for line in health_lines(health or {}) + retention_lines(retention or {}):
        ctx.out(line)
    return EXIT_SUCCESS


def health_lines(health):
    """Lines about the queue's health: the disk condition and the job files' lag."""
    lines = []
    if "writes" in health:
        lines.append("Changes: %s" % health["writes"])
    if "view_age" in health:
        interval = health.get("checkpoint_interval")
        lines.append("Job files: %.1fs since the last checkpoint, %d job(s) behind%s" % (
            health["view_age"], health.get("view_lag", 0),
            " (checkpoint every %gs)" % interval if interval else ""))
    return lines


def retention_lines(retention):
    """Lines about retention: the policy, the last pass and the totals since the start."""
    if "archive_after" not in retention:
        return []
    lines = ["Retention: archive after %s, purge %s" % (
        _duration(retention["archive_after"], "never"),
        "after %s" % _duration(retention["keep_archived"], None)
        if retention["keep_archived"] else "never") + (
        " (a pass every %s)" % _duration(retention["interval"], None)
        if retention.get("interval") else " (no passes: only jqctl purge)")]
    last = retention.get("last")
    if last:
        lines.append("  Last pass: %s: archived %d, purged %d, %d bytes freed%s" % (
            output.format_time(last["at"]), last["archived"], last["purged"],
            last["bytes_freed"], "; more at the next" if last.get("more") else ""))
    totals = retention.get("totals") or {}
    if totals.get("passes"):
        lines.append("  Since the start: %d passes, archived %d, purged %d, %d bytes freed" %
                     (totals["passes"], totals["archived"], totals["purged"],
                      totals["bytes_freed"]))
    return lines


def _duration(seconds, zero):
    """6h for 21600, 21d for 1814400, else seconds; zero's text for 0."""
    if not seconds:
        return zero
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return "%d%s" % (seconds // size, unit)
    return "%gs" % seconds
