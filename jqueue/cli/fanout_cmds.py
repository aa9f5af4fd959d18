"""``jqctl run --nodes``: one command on several nodes, answered node by node.

The master expands the submission into a group with one job per node (jqueue.fanout);
jqctl waits until every node answered (its job ended) or cannot answer now (its node
does not answer the master: the job waits there, reason NOPING), or until
``--answer-timeout`` passed, then prints each node's outcome and the output of its last
attempt, Salt's way::

    node1: success, exit status 0
        Linux node1 6.1.0 ...
    node2: did not answer (node node2 does not answer; job 14 stays queued)

A node that does not answer is listed, never left out; so is a node a glob matches but
the master left out because it is drained or offline (``node3: skipped (drained)``).
``--json`` prints ``{node: {job, status, exit_status, signal, answered, output}}``
(a skipped node: status ``skipped`` and its ``reason``). Once submitted, jqctl only
reads: a daemon lost meanwhile (a restart, a failover) is connected to again, as
``jqctl wait`` does (Context.again).
"""

import fnmatch
import time

from jqueue import constants, errors, serializer
from jqueue.cli import exitcodes
from jqueue.cli.exitcodes import EXIT_FAILURE, EXIT_SUCCESS

#: Fields read of each node's job.
NODE_FIELDS = ("id", "node", "status", "exit_status", "signal", "timed_out", "reason",
               "attempt", "ops")
#: Seconds between two looks at the nodes' jobs.
POLL = 0.25
#: Bytes of a node's log read at most (its end is shown).
OUTPUT_BYTES = 1024 * 1024
#: The banner lines of an attempt in its log (jqueue.commandjob.banner_start, banner_end).
_START_LINES = ("* JOB : ", "* NODE : ", "* DATE : ", "* DIR : ", "* CMD : ")
_END_LINES = ("* EXIT : ", "* SIGNAL : ") + tuple(
    "* %s : " % reason for reason in sorted(constants.REASONS))


def node_set(text):
    """--nodes: a glob (it has * ? or [) or a comma-separated list of names."""
    if any(c in text for c in "*?["):
        return text.strip()
    return [name.strip() for name in text.split(",") if name.strip()]


def run_on_nodes(ctx, op, options, answer_timeout, as_json):
    """Submit op (with ``nodes``; options: the submit's parent and start time), wait for
    the nodes, print them; the exit status."""
    group = ctx.client.submit_job([op], **options)
    children = ctx.again("query_jobs", [group], ["children"])[0][0] or []
    ctx.warn("job %d submitted: %d node(s)" % (group, len(children)))
    rows = _wait(ctx, children, answer_timeout)
    results = {}
    for row in rows:
        answered = row["status"] in constants.JOBS_FINALIZED
        results[row["node"]] = {
            "job": row["id"], "status": row["status"], "exit_status": row["exit_status"],
            "signal": row["signal"], "answered": answered,
            "output": _output(ctx, row["id"]) if answered else None}
    skipped = _skipped(ctx, op, results)
    for name, reason in skipped.items():
        results[name] = {"job": None, "status": "skipped", "reason": reason,
                         "exit_status": None, "signal": None, "answered": False,
                         "output": None}
    results = dict(sorted(results.items()))
    if as_json:
        ctx.out(serializer.dumps_pretty(results))
    else:
        for name, result in results.items():
            ctx.out(_header(name, result, rows))
            for line in (result["output"] or "").splitlines():
                ctx.out("    " + line, raw=True)
    codes = [EXIT_FAILURE if not r["answered"] else exitcodes.for_status(r["status"])
             for name, r in results.items() if name not in skipped]
    return exitcodes.worst(codes, EXIT_SUCCESS)


def _skipped(ctx, op, chosen):
    """{node: "drained" or "offline"} of the nodes a glob matches (with the affinity's
    tags) that the master left out; {} for a list, or without a cluster."""
    spec = op.get("nodes")
    if not isinstance(spec, str):
        return {}
    try:
        rows = ctx.again("list_nodes")
    except errors.GenericError:  # a daemon that answers no ListNodes: none to leave out
        return {}
    affinity = set(node_set(op["affinity"]) if isinstance(op.get("affinity"), str)
                   else op.get("affinity") or [])
    skipped = {}
    for row in rows:
        name = row.get("name")
        if (name in chosen or not fnmatch.fnmatchcase(name or "", spec)
                or not affinity <= set(row.get("tags") or [])):
            continue
        reason = "offline" if row.get("offline") else "drained" if row.get("drained") else None
        if reason is not None:
            skipped[name] = reason
    return skipped


def _wait(ctx, children, answer_timeout):
    """The rows of the nodes' jobs once each ended or waits for its node (or time ran out)."""
    deadline = None if answer_timeout is None else time.monotonic() + answer_timeout
    while True:
        rows = [dict(zip(NODE_FIELDS, row)) for row in
                ctx.again("query_jobs", children, list(NODE_FIELDS)) if row is not None]
        for row in rows:  # the node it is pinned to, before any attempt started there
            row["node"] = row["node"] or row.pop("ops")[0].get("node")
        waiting = [row for row in rows if row["status"] not in constants.JOBS_FINALIZED
                   and row["reason"] != constants.REASON_NOPING]
        if not waiting or (deadline is not None and time.monotonic() >= deadline):
            return rows
        time.sleep(POLL)


def _header(name, result, rows):
    if result["status"] == "skipped":
        return "%s: skipped (%s: no new commands start there)" % (name, result["reason"])
    if result["answered"]:
        text = "%s: %s" % (name, result["status"])
        if result["signal"] is not None:
            return text + ", signal %d" % result["signal"]
        if result["exit_status"] is not None:
            return text + ", exit status %d" % result["exit_status"]
        return text
    row = next(r for r in rows if r["id"] == result["job"])
    why = ("node %s does not answer" % name if row["reason"] == constants.REASON_NOPING
           else "still %s after the answer timeout" % row["status"])
    return "%s: did not answer (%s; job %d stays %s)" % (name, why, row["id"], row["status"])


def _output(ctx, job_id):
    """The output of the job's last attempt, without the log's banner lines."""
    answer = ctx.again("read_job_log", job_id, 0, OUTPUT_BYTES, 0)
    return last_attempt_output(answer["data"])


def last_attempt_output(log):
    """The command output of the last attempt in a command job's log text."""
    lines = log.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("* START ***")]
    if not starts:
        return log
    body = lines[starts[-1] + 1:]
    while body and body[0].startswith(_START_LINES):
        body = body[1:]
    ends = [i for i, line in enumerate(body) if line.startswith("* END ***")]
    if ends:
        body = body[:ends[-1]]
        while body and body[-1].startswith(_END_LINES):
            body = body[:-1]
        if body and body[-1] == "":
            body = body[:-1]
    return "\n".join(body).rstrip("\n")
