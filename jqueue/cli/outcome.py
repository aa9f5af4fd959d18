"""What became of jobs: the outcome record (status, why a job failed, each opcode's result)
and the result command.

One shape serves ``result --json``, ``wait --json`` and ``submit --wait --json``:

    {"id": 3, "status": "error", "error": "opcode 1 (TEST_JQUEUE): OpExecError: disk full",
     "ops": [{"summary": "TEST_JQUEUE", "status": "error",
              "result": ["OpExecError", ["disk full"]], "error": "OpExecError: disk full"}]}

``error`` is null unless the job (or the opcode) failed; ``result`` is the opcode's raw
result as the daemon has it.
"""

from jqueue import constants, serializer
from jqueue.cli import exitcodes, parsing

FIELDS = ["id", "status", "summary", "opstatus", "opresult"]
_INDENT = " " * 4


def register(commands):
    """Add result to the subparsers."""
    parser = commands.add_parser(
        "result", help="show the result or error of each opcode of jobs",
        description="Show the status of jobs and the result (or error) of each of their "
                    "opcodes. Archived jobs are found too.")
    parser.add_argument("ids", nargs="+", type=parsing.job_id, metavar="ID", help="job id")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of outcome records")
    parser.set_defaults(func=cmd_result)


def not_found_message(job_id):
    """The one wording of a job that does not exist, for every command."""
    return "job %s not found" % job_id


def refused(ctx, job_id, message):
    """Report a request the daemon refused for job_id; EXIT_NOT_FOUND (with the common
    wording) if the job does not exist, else EXIT_REFUSED with message (or, for archive
    (message None), why the job was not archived)."""
    row = ctx.client.query_jobs([job_id], ["status", "archived"])[0]
    if row is None:
        ctx.warn(not_found_message(job_id))
        return exitcodes.EXIT_NOT_FOUND
    if message is None:
        status, archived = row
        message = ("job %s is already archived" % job_id if archived else
                   "job %s not archived: it is not finished (status %s)" % (job_id, status))
    ctx.warn(message)
    return exitcodes.EXIT_REFUSED


def is_encoded_error(result):
    """Whether an opcode result is an error as the wire encodes it: ["Class", [args]]."""
    return (isinstance(result, list) and len(result) == 2 and isinstance(result[0], str)
            and isinstance(result[1], list))


def error_text(status, result):
    """An opcode's error as one line ("OpExecError: disk full"), or None if it has none."""
    if status not in (constants.OP_STATUS_ERROR, constants.OP_STATUS_CANCELED) or (
            result is None):
        return None
    if is_encoded_error(result):
        return "%s: %s" % (result[0], " ".join(str(arg) for arg in result[1]))
    return result if isinstance(result, str) else serializer.dumps(result)


def record(row):
    """The outcome record of a QueryJobs row of FIELDS."""
    job_id, status, summaries, statuses, results = row
    ops = [{"summary": summary, "status": op_status, "result": result,
            "error": error_text(op_status, result)}
           for summary, op_status, result in zip(summaries, statuses, results)]
    return {"id": job_id, "status": status, "error": _job_error(status, ops), "ops": ops}


def _job_error(status, ops):
    if status != constants.JOB_STATUS_ERROR:
        return None
    for index, op in enumerate(ops):
        if op["status"] == constants.OP_STATUS_ERROR:
            if op["error"] is None:
                return "opcode %d (%s) failed" % (index + 1, op["summary"])
            return "opcode %d (%s): %s" % (index + 1, op["summary"], op["error"])
    return None


def records(client, job_ids):
    """{job id: outcome record, or None if the job does not exist}."""
    rows = client.query_jobs(list(job_ids), FIELDS)
    return {job_id: record(row) if row is not None else None
            for job_id, row in zip(job_ids, rows)}


def finished_line(outcome):
    """"Job 3 finished: error: opcode 1 (TEST_JQUEUE): OpExecError: disk full"."""
    line = "Job %s finished: %s" % (outcome["id"], outcome["status"])
    return "%s: %s" % (line, outcome["error"]) if outcome["error"] else line


def result_text(op):
    """An opcode's result for people, on one line: its error, or its result as JSON."""
    if op["error"] is not None:
        return op["error"]
    return serializer.dumps(op["result"])


def result_lines(outcome):
    """The lines of result for one job."""
    lines = ["Job %s: %s" % (outcome["id"], outcome["status"])]
    for index, op in enumerate(outcome["ops"]):
        if op["status"] in constants.OPS_FINALIZED:
            text = result_text(op)
        else:
            text = "no result yet"
        lines.append("%sOpcode %d %s: %s: %s" % (_INDENT, index + 1, op["summary"],
                                                 op["status"], text))
    return lines


def cmd_result(ctx, args):
    """Print each job's opcode results; a job not found is reported (exit 4)."""
    found = records(ctx.client, args.ids)
    codes = [exitcodes.EXIT_SUCCESS]
    shown = []
    for job_id in args.ids:
        if found[job_id] is None:
            ctx.warn(not_found_message(job_id))
            codes.append(exitcodes.EXIT_NOT_FOUND)
        else:
            shown.append(found[job_id])
    if args.json:
        ctx.out(serializer.dumps(shown))
    else:
        for outcome in shown:
            for line in result_lines(outcome):
                ctx.out(line)
    return exitcodes.worst(codes)
