"""Commands for command jobs: run, log, signal, term, kill, running.

``run`` submits one OP_COMMAND_RUN job (argv after ``--``, or a shell string with ``-c``)
and prints its id; with ``--wait`` it waits and with ``--follow`` it prints the job's log as
it grows, both exiting as ``jqctl wait`` does. ``term`` and ``kill`` stop a job's command
(TERM then KILL after its grace, or KILL now) and end the job, like ``cancel`` and
``cancel --kill``; ``signal`` only delivers a signal.
"""

import argparse

from jqueue import constants, errors, ptypes, serializer
from jqueue.cli import exitcodes, fanout_cmds, outcome, output, parsing, watching
from jqueue.cli.exitcodes import EXIT_INTERRUPTED, EXIT_SUCCESS, CommandError

#: Bytes asked per ReadJobLog (ReadServiceLog) call, and the long poll of each (seconds).
LOG_READ_BYTES = 256 * 1024
LOG_POLL = 30.0
RUNNING_COLUMNS = (("job", "Job", "number"), ("attempt", "Attempt", "number"),
                   ("node", "Node", "text"), ("pid", "PID", "number"),
                   ("started", "Started", "text"), ("rss", "Memory", "number"),
                   ("containment", "Containment", "text"))


def register(commands):
    """Add run, log, signal, term, kill and running to the subparsers."""
    _register_run(commands)
    parser = commands.add_parser(
        "log", help="print a job's command log",
        description="Print the log of a command job (its output and our '* ' lines); with "
                    "-f keep printing it as it grows until the job ends.")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="follow the log until the job ends")
    add_lines_option(parser)
    parser.add_argument("id", type=parsing.job_id, metavar="ID", help="job id")
    parser.set_defaults(func=cmd_log)
    parser = commands.add_parser(
        "signal", help="send a signal to a job's command",
        description="Send a signal to every process of a command job's running attempt.")
    parser.add_argument("id", type=parsing.job_id, metavar="ID", help="job id")
    parser.add_argument("signal", type=signal_value, metavar="SIGNAL",
                        help="a name (TERM, SIGUSR1, hup) or a number")
    parser.set_defaults(func=cmd_signal)
    for name, kill, text in (("term", False, "TERM to every process of the command, then "
                                             "KILL after its kill_grace"),
                             ("kill", True, "KILL to every process of the command now")):
        parser = commands.add_parser(
            name, help="stop a job's command and end the job (%s)" % text,
            description="Stop the command of running jobs (%s) and end them canceled; "
                        "a job still queued is canceled at once." % text)
        parser.add_argument("ids", nargs="+", type=parsing.job_id, metavar="ID", help="job id")
        parser.set_defaults(func=cmd_stop, kill=kill)
    parser = commands.add_parser(
        "running", help="list the commands running on nodes",
        description="List the running attempts of command jobs: job, attempt, node, pid, "
                    "start time and how its processes are contained.")
    parser.add_argument("--node", metavar="NODE", help="only this node's")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-headers", action="store_true", help="omit the header line")
    parser.add_argument("--separator", metavar="SEP", help="separate fields with SEP")
    parser.set_defaults(func=cmd_running)


def _register_run(commands):
    parser = commands.add_parser(
        "run", help="run a command as a job",
        description="Run a command as a job on a node (ARGV after --, or a shell string "
                    "with -c) and print the job's id.",
        usage="jqctl run [options] [--wait | --follow] (-c STRING | -- ARGV...)")
    parser.add_argument("-c", dest="shell", metavar="STRING",
                        help="run STRING with /bin/sh -c instead of ARGV")
    parser.add_argument("--node", metavar="NODE", help="node to run on (default: the master's)")
    parser.add_argument("--affinity", metavar="TAG,...",
                        help="run on a node with all these tags (the least loaded of them)")
    parser.add_argument("--nodes", type=fanout_cmds.node_set, metavar="NODES",
                        help="run on each of these nodes (name,name or a glob such as "
                             "'node*'), wait and print every node's outcome and output")
    parser.add_argument("--answer-timeout", type=parsing.seconds, metavar="SECONDS",
                        help="with --nodes: stop waiting for nodes after this long")
    parser.add_argument("--json", action="store_true",
                        help="with --nodes: print the outcomes as JSON")
    parser.add_argument("--dir", metavar="DIR", help="working directory (absolute; default /)")
    parser.add_argument("--env", action="append", type=env_item, default=[],
                        metavar="NAME=VALUE", help="set a variable (repeatable)")
    parser.add_argument("--env-inherit", action="store_true",
                        help="start from the environment of the daemon that runs the "
                             "command on its node, not the minimal one")
    parser.add_argument("--timeout", dest="run_timeout", type=parsing.seconds,
                        metavar="SECONDS",
                        help="stop the command after this run time (TERM, then KILL)")
    parser.add_argument("--kill-grace", type=parsing.seconds, metavar="SECONDS",
                        help="seconds between TERM and KILL (default 10)")
    parser.add_argument("--memory", dest="memory_max", type=parsing.memory_size, metavar="SIZE",
                        help="kill the command if its processes hold more memory than this "
                             "together (bytes, or 512M, 2G: units of 1024; 0: no limit)")
    parser.add_argument("--attempts", type=attempts, metavar="N",
                        help="attempts in total if it fails (default 1)")
    parser.add_argument("--retry-delay", type=parsing.seconds, metavar="SECONDS",
                        help="seconds before the second attempt, doubling (default 5)")
    parser.add_argument("--retry-delay-max", type=parsing.seconds, metavar="SECONDS",
                        help="longest delay between attempts (default 300)")
    parser.add_argument("--success-codes", type=exit_codes, metavar="N,...",
                        help="exit statuses that mean success (default 0)")
    parser.add_argument("--run-as", metavar="USER", help="user to run as")
    parser.add_argument("--title", metavar="TITLE", help="display name")
    parser.add_argument("--progress-pattern", metavar="PATTERN",
                        help="how the output reports progress (default PROGRESS:%%percent)")
    parser.add_argument("--global-progress-pattern", metavar="PATTERN",
                        help="a second level of progress, the same way (default none)")
    parser.add_argument("--url", metavar="URL", help="a link shown with the job")
    parser.add_argument("--token", metavar="TOKEN", type=parsing.token,
                        help="idempotency token: if a live job was already submitted with it, "
                             "print that job's id instead of creating one")
    parser.add_argument("--priority", type=parsing.priority, metavar="PRIO",
                        help="high, normal, low, or an integer from -20 (highest) to 19")
    parsing.add_job_options(parser)
    follow = parser.add_mutually_exclusive_group()
    follow.add_argument("--wait", action="store_true",
                        help="wait for the job; exit as jqctl wait does")
    follow.add_argument("--follow", action="store_true",
                        help="print the job's log until it ends; exit as jqctl wait does")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="ARGV",
                        help="the command and its arguments, after --")
    parser.set_defaults(func=cmd_run)


# Value parsers


def env_item(text):
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("invalid variable %r: use NAME=VALUE" % text)
    return name, value


def attempts(text):
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError("invalid attempts %r: use 1 to 1000" % text)
    return int(text)


def exit_codes(text):
    codes = []
    for item in text.split(","):
        item = item.strip()
        if not item.isascii() or not item.isdigit() or int(item) > 255:
            raise argparse.ArgumentTypeError("invalid exit status %r: use 0 to 255" % item)
        codes.append(int(item))
    return codes


def signal_value(text):
    """A signal as the daemon takes it: a number, or a name (checked by the daemon)."""
    if text.isascii() and text.isdigit():
        return int(text)
    return text


# run


def run_opcode(args):
    """The OP_COMMAND_RUN opcode of jqctl run's options."""
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if (args.shell is None) == (not argv):
        raise CommandError("run needs a command: ARGV after --, or -c STRING (not both)")
    op = {"OP_ID": constants.OP_COMMAND_RUN,
          "cmd": args.shell if args.shell is not None else argv}
    names = (("node", "node"), ("nodes", "nodes"), ("affinity", "affinity"), ("dir", "dir"),
             ("run_timeout", "timeout"), ("memory_max", "memory_max"),
             ("kill_grace", "kill_grace"), ("attempts", "max_attempts"),
             ("retry_delay", "retry_delay"), ("retry_delay_max", "retry_delay_max"),
             ("success_codes", "success_exit_codes"), ("run_as", "run_as"), ("title", "title"),
             ("progress_pattern", "progress_pattern"),
             ("global_progress_pattern", "global_progress_pattern"), ("url", "url"),
             ("priority", "priority"))
    for attr, param in names:
        value = getattr(args, attr, None)
        if value is not None:
            op[param] = value
    if args.env:
        op["env"] = dict(args.env)
    if args.env_inherit:
        op["env_inherit"] = True
    return op


def cmd_run(ctx, args):
    """Submit the command job and print its id; follow it with --wait or --follow."""
    op = run_opcode(args)
    options = parsing.job_options(args)
    if args.nodes is not None:
        if args.node is not None or args.follow or args.token is not None:
            raise CommandError("--nodes runs on several nodes: not with --node, --follow or "
                               "--token")
        return fanout_cmds.run_on_nodes(ctx, op, options, args.answer_timeout, args.json)
    if args.answer_timeout is not None or args.json:
        raise CommandError("--answer-timeout and --json go with --nodes")
    job_id = parsing.submitting(
        lambda: ctx.client.submit_job([op], token=args.token, **options), args.token)
    if not (args.wait or args.follow):
        ctx.out(str(job_id))
        return EXIT_SUCCESS
    ctx.warn("job %d submitted" % job_id)
    try:
        if args.follow:
            print_log(ctx, job_id, follow=True)
        return wait_exit(ctx, job_id, announce=args.wait)
    except KeyboardInterrupt:  # only jqctl stops: say so, and how to stop the job too
        ctx.warn("interrupted; job %d goes on (jqctl log -f %d follows it again, jqctl "
                 "kill %d stops it)" % (job_id, job_id, job_id))
        return EXIT_INTERRUPTED


def wait_exit(ctx, job_id, announce=True):
    """Wait for a job; its exit status as jqctl wait gives it (command jobs: row 17), and
    if announce its line as jqctl wait prints it (why it failed included)."""
    if announce:
        return watching.follow_jobs(ctx, [job_id], show_log=False)[0]
    return watching.exit_status(ctx, job_id, watching.follow(ctx, job_id, show_log=False))


# log


def add_lines_option(parser):
    """-n/--lines N of log and service log."""
    parser.add_argument("-n", "--lines", type=parsing.count, metavar="N",
                        help="only the last N lines (then, with -f, what comes)")


def cmd_log(ctx, args):
    """Print the job's log (and with -f, follow it to the end)."""
    start = 0
    if args.lines is not None:
        row = ctx.again("query_jobs", [args.id], ["log_bytes"])[0]
        if row is None:
            raise errors.JobLost("job %s not found" % args.id)
        start = print_tail(ctx, "read_job_log", args.id, row[0] or 0, args.lines)
    copy_log(ctx, "read_job_log", args.id, args.follow, start=start,
             waiting=watching.WaitNotice(ctx, args.id) if args.follow else None)
    return EXIT_SUCCESS


def print_log(ctx, job_id, follow):
    """Write the job's log to stdout, its bytes as they are; follow it until the job ended if asked
    (across a restart or failover of the daemon: Context.again)."""
    copy_log(ctx, "read_job_log", job_id, follow,
             waiting=watching.WaitNotice(ctx, job_id) if follow else None)


#: Bytes read back from a log's end at first when looking for its last lines (doubled
#: until enough lines are found).
TAIL_READ = 16 * 1024


def print_tail(ctx, method, name, size, lines):
    """Write the last lines of a log of about size bytes (a line not ended yet counts as
    one) to stdout, read with the client's method in windows from its end that double
    until they hold enough; the offset where the log goes on."""
    window = TAIL_READ
    while True:
        start = max(0, size - window)
        pieces, offset = [], start
        while True:
            answer = ctx.again(method, name, offset, LOG_READ_BYTES, 0, True)
            pieces.append(answer["data"])
            offset = answer["offset"]
            if not answer["data"] or answer["eof"]:
                break
        found = [line + b"\n" for line in b"".join(pieces).split(b"\n")]
        found[-1] = found[-1][:-1]  # what follows the last newline, if anything
        if not found[-1]:
            found.pop()
        if start > 0 and found:
            found = found[1:]  # the window began within a line
        if len(found) >= lines or start == 0:
            write_bytes(ctx, b"".join(found[len(found) - lines:] if lines else []))
            return offset
        window *= 2


def copy_log(ctx, method, name, follow, forever=False, start=0, waiting=None):
    """Write the log of a job or service (name) to stdout from start, the client's
    method (read_job_log, read_service_log) a piece at a time; with follow, until its
    end, connecting again whenever the daemon is lost (Context.again; for ever if
    forever). waiting (a watching.WaitNotice), if given, is asked whenever a read brought
    nothing; until it says the job does not wait, reads wait its poll at most."""
    offset = start
    window = {"window": None} if forever else {}
    waits = waiting is not None
    while True:
        timeout = (waiting.poll if waits else LOG_POLL) if follow else 0
        answer = ctx.again(method, name, offset, LOG_READ_BYTES, timeout, True, **window)
        dropped = answer["offset"] - len(answer["data"]) - offset
        if dropped > 0:  # a service's log keeps its end: it began later than asked
            ctx.warn("%d bytes of the log from byte %d were dropped before they could be "
                     "printed (a service's log keeps its last log_max_bytes)" % (dropped, offset))
        if answer["data"]:
            write_bytes(ctx, answer["data"])
        offset = answer["offset"]
        if answer["eof"] or (not follow and not answer["data"]):
            return
        if waiting is not None and not answer["data"]:
            waits = waiting()


def write_bytes(ctx, data):
    """Write a log's bytes to stdout as they are (a stream without a binary buffer gets
    them as text, invalid UTF-8 replaced), and flush."""
    buffer = getattr(ctx.stdout, "buffer", None)
    ctx.stdout.flush()
    if buffer is None:
        ctx.stdout.write(data.decode("utf-8", "replace"))
        ctx.stdout.flush()
    else:
        buffer.write(data)
        buffer.flush()


# signal, term, kill


def cmd_signal(ctx, args):
    ok, message = ctx.client.signal_job(args.id, args.signal)
    if not ok:
        return outcome.refused(ctx, args.id, message)
    ctx.out(message)
    return EXIT_SUCCESS


def cmd_stop(ctx, args):
    code = EXIT_SUCCESS
    for job_id in args.ids:
        try:
            ok, message = ctx.client.cancel_job(job_id, args.kill)
        except errors.JobLost as err:
            ctx.warn(errors.error_message(err))
            code = exitcodes.worst([code, exitcodes.EXIT_NOT_FOUND])
            continue
        if ok:
            ctx.out(message)
        else:
            code = exitcodes.worst([code, outcome.refused(ctx, job_id, message)])
    return code


# running


def cmd_running(ctx, args):
    rows = ctx.client.query_running(args.node)
    if args.json:
        ctx.out(serializer.dumps(rows))
        return EXIT_SUCCESS
    names = [name for name, _, _ in RUNNING_COLUMNS]
    cells = [[_running_cell(name, row.get(name)) for name in names] for row in rows]
    headers = None if args.no_headers else [title for _, title, _ in RUNNING_COLUMNS]
    for line in output.table_lines(headers, cells, {0, 1, 3, 5}, args.separator):
        ctx.out(line)
    return EXIT_SUCCESS


def _running_cell(name, value):
    if name == "started" and isinstance(value, (int, float)):
        return output.format_time(value)
    if name == "rss" and isinstance(value, int):
        return ptypes.human_bytes(value, compact=True)
    return output.format_scalar(value)
