"""The info command: everything about jobs, one indented block of lines per job."""

from jqueue import commandjob, constants, ptypes, serializer, text
from jqueue.cli import outcome, output, parsing
from jqueue.cli.exitcodes import EXIT_NOT_FOUND, EXIT_SUCCESS
from jqueue.job import ts_to_float

INFO_FIELDS = ["id", "status", "priority", "archived", "received_ts", "start_ts", "end_ts",
               "summary", "ops", "opstatus", "opresult", "opstart", "opexec", "opend", "oplog",
               "oppriority", "title", "owner", "parent", "held", "not_before", "node",
               "attempt", "max_attempts", "pid", "reason", "exit_status", "signal",
               "timed_out", "progress", "retry_at", "log_bytes", "wait_reason", "wait_message",
               "memory_max", "max_rss", "cpu_time", "memory_exceeded", "rss", "notify",
               "notified", "notified_after"]
_OP_INDENT = " " * 4
_DETAIL_INDENT = " " * 6
_BLOCK_INDENT = " " * 8


def register(commands):
    """Add info to the subparsers."""
    parser = commands.add_parser(
        "info", help="show everything about jobs",
        description="Show jobs in detail: status, times, and each opcode's input, result "
                    "and log. Archived jobs are found too.")
    parser.add_argument("ids", nargs="+", type=parsing.job_id, metavar="ID", help="job id")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of objects, one per job, mapping each of "
                             "the fields %s to its raw value" % ",".join(INFO_FIELDS))
    parser.set_defaults(func=cmd_info)


def cmd_info(ctx, args):
    """Print a block per job (or JSON); a job not found is reported on stderr."""
    code = EXIT_SUCCESS
    found = []
    for job_id, row in zip(args.ids, ctx.client.query_jobs(args.ids, INFO_FIELDS)):
        if row is None:
            ctx.warn(outcome.not_found_message(job_id))
            code = EXIT_NOT_FOUND
        else:
            found.append(dict(zip(INFO_FIELDS, row)))
    if args.json:
        ctx.out(serializer.dumps(found))
        return code
    for job in found:
        for line in job_lines(job):
            ctx.out(text.printable(line))
    return code


def job_lines(job):
    """The lines describing one job (a dict of INFO_FIELDS)."""
    lines = ["Job %s" % job["id"], "  Status: %s" % job["status"],
             "  Priority: %s" % output.priority_text(
                 output.shown_priority(job["status"], job["priority"], job["oppriority"]))]
    if job["archived"]:
        lines.append("  Archived: yes")
    lines.extend("  " + line for line in about_lines(job))
    lines.extend("  " + line for line in time_lines(job))
    lines.extend("  " + line for line in command_lines(job))
    lines.extend("  " + line for line in waiting_lines(job))
    lines.append("  Opcodes:")
    for index in range(len(job["ops"])):
        lines.extend(opcode_lines(job, index))
    return lines


def duration(start, end):
    """Seconds from one [sec, usec] timestamp to another, as "2.01s"."""
    return "%.2fs" % (ts_to_float(end) - ts_to_float(start))


def time_lines(job):
    """Received, started and ended times, with how long the job was queued and ran."""
    received, start, end = job["received_ts"], job["start_ts"], job["end_ts"]
    if start is None:
        started = "never" if end is not None else "not yet"
    else:
        started = "%s (queued for %s)" % (output.format_time(start), duration(received, start))
    if end is None:
        ended = "not yet"
    elif start is None:
        ended = "%s (after %s in the queue)" % (output.format_time(end), duration(received, end))
    else:
        ended = "%s (ran for %s)" % (output.format_time(end), duration(start, end))
    return ["Received: %s" % output.format_time(received), "Started:  %s" % started,
            "Ended:    %s" % ended]


def about_lines(job):
    """Title, owner, group, hold and start time, those the job has."""
    lines = ["%s: %s" % (label, job[key]) for label, key in (
        ("Title", "title"), ("Owner", "owner"), ("Group", "parent")) if job.get(key)]
    if job.get("held"):
        lines.append("Held: yes (it starts once released)")
    if job.get("not_before") is not None and job["start_ts"] is None:
        lines.append("Not before: %s" % output.format_time(job["not_before"]))
    if job.get("notify"):
        lines.append("Notify: %s" % notify_text(job["notify"], job.get("notified")))
        if job["notify"].get("after"):
            lines.append("Notify after: %s" % after_text(job["notify"],
                                                         job.get("notified_after")))
    return lines


def notify_text(notify, notified):
    """Who is told of a job's end and how it went: "POST http://h/x on error, canceled:
    delivered (HTTP 200) 2026-12-06 17:30:02, after 1 try" ("to ops@example.com" for an
    address)."""
    on = notify.get("on") or []
    if not on:
        return "%s: not of its end" % _notify_target(notify)
    text = _notify_target(notify)
    if set(on) != {constants.JOB_STATUS_SUCCESS, constants.JOB_STATUS_ERROR,
                   constants.JOB_STATUS_CANCELED}:
        text += " on %s" % ", ".join(on)
    return text + _notified_text(notified)


def after_text(notify, notified):
    """A group's after: "to ops@x once 10 of its jobs finished: delivered..."."""
    return "%s once %d of its jobs finished%s" % (
        _notify_target(notify), notify["after"], _notified_text(notified))


def _notify_target(notify):
    return "POST %s" % notify["url"] if "url" in notify else "to %s" % notify.get("to")


def _notified_text(notified):
    if not notified:
        return ""
    tries = notified.get("tries") or 0
    if notified.get("delivered"):
        how = "delivered (HTTP %s)" % notified.get("status") if "url" in notified else \
            "delivered"
    else:
        how = "not delivered (%s)" % notified.get("error")
    return ": %s %s, after %d tr%s" % (how, output.format_time(notified.get("at")), tries,
                                       "y" if tries == 1 else "ies")


def command_lines(job):
    """A command job's attempts: where, how the last one ended, when the next starts."""
    if job.get("attempt") is None:
        return []
    if job["attempt"]:
        where = "attempt %s of %s" % (job["attempt"], job["max_attempts"] or 1)
    else:  # those stopped by a hold, or before a reset, do not count
        where = "no attempt counted yet (of %s)" % (job["max_attempts"] or 1)
    if job.get("node"):
        where += " on %s" % job["node"]
    running = job["status"] == constants.JOB_STATUS_RUNNING  # (a back-off is "waiting")
    if running:
        where += ", running" + (" (pid %s)" % job["pid"] if job.get("pid") else "")
    lines = ["Command: " + where]
    if job.get("reason") and not running:
        lines.append("Last attempt: " + ended_text(job))
    usage = usage_text(job, running)
    if usage:
        lines.append("Resources: " + usage)
    if job.get("retry_at") is not None:
        lines.append("Next attempt: %s" % output.format_time(job["retry_at"]))
    if job.get("progress") is not None:
        lines.append("Progress: %d%%" % round(job["progress"] * 100))
    if job.get("log_bytes"):
        lines.append("Log: %d bytes (jqctl log %s)" % (job["log_bytes"], job["id"]))
    return lines


#: Wait reasons info says on lines of their own (Held, Not before, Next attempt).
_SAID_ELSEWHERE = (constants.WAIT_HELD, constants.WAIT_NOT_BEFORE, constants.WAIT_BACKOFF)


def waiting_lines(job):
    """Why a pending job does not run now, as the master sees it (wait_message):
    "Waiting: all 2 slots of vm are busy (jobs 31, 32)"; nothing when it starts in turn."""
    if not job.get("wait_message") or job.get("wait_reason") in _SAID_ELSEWHERE:
        return []
    return ["Waiting: " + job["wait_message"]]


def ended_text(job):
    """How an attempt ended: "FAILED, exit status 1", "KILLED, ended by signal SIGKILL"."""
    parts = [job["reason"]]
    if job.get("exit_status") is not None:
        parts.append("exit status %s" % job["exit_status"])
    if job.get("signal") is not None:
        parts.append("ended by signal %s" % commandjob.signal_name(job["signal"]))
    if job.get("timed_out"):
        parts.append("timed out")
    if job.get("memory_exceeded"):
        parts.append("over its memory limit")
    return ", ".join(parts)


def usage_text(job, running=False):
    """What the last attempt used and may use: "peak memory 1.2 GiB of its 2.0 GiB limit,
    CPU 3.21s"; while it runs what it holds now ("memory now 1.1 GiB of its 2.0 GiB
    limit") or its limit; None if there is nothing to say."""
    limit = ptypes.human_bytes(job["memory_max"]) if job.get("memory_max") else None
    peak = job.get("max_rss") if not running else None
    now = job.get("rss") if running else None
    if peak is not None or now is not None:
        memory = "%s %s" % ("peak memory" if peak is not None else "memory now",
                            ptypes.human_bytes(peak if peak is not None else now)) + (
            " of its %s limit" % limit if limit else "")
    else:
        memory = "memory limit %s" % limit if limit else None
    cpu = "CPU %.2fs" % job["cpu_time"] if job.get("cpu_time") is not None and not running \
        else None
    return ", ".join(part for part in (memory, cpu) if part) or None


def opcode_lines(job, index):
    """The lines describing opcode index of job."""
    status, log = job["opstatus"][index], job["oplog"][index]
    lines = ["%sOpcode %d: %s" % (_OP_INDENT, index + 1, job["summary"][index]),
             "%sStatus: %s" % (_DETAIL_INDENT, status),
             "%sPriority: %s" % (_DETAIL_INDENT, output.priority_text(job["oppriority"][index]))]
    lines += _block("Input:", serializer.dumps_pretty(job["ops"][index]))
    lines += _block("Result:", result_text(status, job["opresult"][index]))
    for label, key in (("Started: ", "opstart"), ("Executed:", "opexec"), ("Ended:   ", "opend")):
        lines.append("%s%s %s" % (_DETAIL_INDENT, label, output.format_time(job[key][index])))
    lines.append(_DETAIL_INDENT + ("Log:" if log else "Log: none"))
    lines.extend(_BLOCK_INDENT + output.log_line(entry) for entry in log)
    return lines


def _block(label, body):
    """label and a one-line body on one line, or label then the body indented below."""
    text_lines = body.splitlines() or [""]
    if len(text_lines) == 1:
        return ["%s%s %s" % (_DETAIL_INDENT, label, text_lines[0])]
    return [_DETAIL_INDENT + label] + [_BLOCK_INDENT + line for line in text_lines]


def is_encoded_error(status, result):
    """Whether an opcode result is an error as the wire encodes it: ["Class", [args]]."""
    return (status == constants.OP_STATUS_ERROR and isinstance(result, list)
            and len(result) == 2 and isinstance(result[0], str)
            and isinstance(result[1], list))


def result_text(status, result):
    """An opcode result for people: "OpExecError: msg" for errors, else pretty JSON."""
    if is_encoded_error(status, result):
        return "%s: %s" % (result[0], " ".join(str(arg) for arg in result[1]))
    if isinstance(result, str) and status in (constants.OP_STATUS_ERROR,
                                          constants.OP_STATUS_CANCELED):
        return result
    return serializer.dumps_pretty(result)
