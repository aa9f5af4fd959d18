"""Jobs as the HTTP API shows them: which fields are read, and the JSON object of a job.

A job object (``GET /api/v1/jobs``, its items; see openapi.json's Job):
id, status, title, summary, priority, node, owner, parent, attempt, max_attempts,
progress, global_progress, exit_status, reason, received, started, ended and retry_at (epoch
seconds or null; retry_at: the next attempt of a command waiting out its back-off),
log_bytes, held, children (a group's leaves by status, null for other jobs:
the query field ``counts``), wait_reason and wait_message (why a pending job does not run
now, null otherwise: the queue's reading of the moment), memory_max, max_rss, cpu_time and
memory_exceeded (a command's memory limit, what its last attempt used, and whether it was
killed over the limit), rss (what a running command holds now); a job's detail
(``GET /api/v1/jobs/{id}``) adds ops, opstatus, opresult, archived, signal, timed_out, pid,
not_before, notify and notified (its webhook, and how telling it went).

Every field of a list item is a lookup in the job or in the group tree (whose counts are
kept up along the tree): a row costs the same whatever the size of a group.
"""

from jqueue import query

LIST_FIELDS = ["id", "status", "priority", "title", "summary", "node", "owner", "attempt",
               "max_attempts", "progress", "global_progress", "exit_status", "reason",
               "received_ts", "start_ts", "end_ts", "retry_at", "log_bytes", "held", "counts",
               "wait_reason", "wait_message", "memory_max", "max_rss", "cpu_time",
               "memory_exceeded", "rss"]
DETAIL_FIELDS = LIST_FIELDS + ["ops", "opstatus", "opresult", "archived", "signal",
                               "timed_out", "pid", "not_before", "notify", "notified",
                               "notified_after"]
#: The parent field, once job groups exist (every job is a child of the root until then).
PARENT = "parent" if "parent" in query.FIELDS_BY_NAME else None
if PARENT:
    LIST_FIELDS.append(PARENT)
    DETAIL_FIELDS.append(PARENT)

#: Query fields shown under another name.
_RENAMED = {"received_ts": "received", "start_ts": "started", "end_ts": "ended",
            "counts": "children"}
_TIMES = ("received_ts", "start_ts", "end_ts")


def seconds(ts):
    """A [sec, usec] timestamp as float seconds (None stays None)."""
    if not ts:
        return None
    return ts[0] + ts[1] / 1e6


def job_object(fields, values):
    """The JSON object of a job from a row of fields."""
    row = dict(zip(fields, values))
    job = {}
    for name in fields:
        value = row[name]
        if name in _TIMES:
            value = seconds(value)
        job[_RENAMED.get(name, name)] = value
    if not job.get("title"):
        summary = row.get("summary") or []
        job["title"] = ", ".join(summary) if summary else None
    job.setdefault("parent", None)
    return job
