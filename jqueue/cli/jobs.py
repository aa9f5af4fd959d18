"""Commands that change jobs: submit, cancel, archive, autoarchive, change-priority."""

from jqueue import errors, serializer
from jqueue.cli import bexfile, exitcodes, outcome, parsing, selection, watching
from jqueue.cli.exitcodes import EXIT_REFUSED, EXIT_SUCCESS, CommandError

#: Seconds the daemon may spend in one AutoArchiveJobs call (at most half of --timeout).
AUTOARCHIVE_CALL_TIMEOUT = 10.0


def register(commands):
    """Add submit, cancel, archive, autoarchive and change-priority to the subparsers."""
    _register_submit(commands)
    _register_cancel(commands)
    parser = commands.add_parser("archive", help="archive finished jobs",
                                 description="Move finished jobs to the archive.")
    parser.add_argument("ids", nargs="+", type=parsing.job_id, metavar="ID", help="job id")
    parser.set_defaults(func=cmd_archive)
    parser = commands.add_parser(
        "autoarchive", help="archive every finished job older than an age",
        description="Archive every finished job older than AGE, until all jobs are checked.")
    parser.add_argument("age", type=parsing.age, metavar="AGE",
                        help="30s, 30m, 6h, 1d, 2w, plain seconds, or all")
    parser.set_defaults(func=cmd_autoarchive)
    parser = commands.add_parser("change-priority", help="change the priority of jobs",
                                 description="Change the priority of the pending opcodes of jobs.")
    parser.add_argument("--priority", type=parsing.priority, required=True, metavar="PRIO",
                        help="high, normal, low, or an integer from -20 (highest) to 19")
    parser.add_argument("ids", nargs="+", type=parsing.job_id, metavar="ID", help="job id")
    parser.set_defaults(func=cmd_change_priority)


def _register_submit(commands):
    parser = commands.add_parser(
        "submit", help="submit jobs from a JSON file, or one opcode",
        description="Submit the jobs of a JSON file (a list of opcodes is one job, a list of "
                    "such lists several jobs), or with --op one job of one opcode.")
    parser.add_argument("--priority", type=parsing.priority, metavar="PRIO",
                        help="set this priority on every opcode: high, normal, low, or an "
                             "integer from -20 (highest) to 19")
    follow = parser.add_mutually_exclusive_group()
    follow.add_argument("--wait", action="store_true",
                        help="wait for the jobs to finish; exit with their outcome")
    follow.add_argument("--watch", action="store_true",
                        help="print the jobs' log until they finish; exit with their outcome")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--op", metavar="OP_ID",
                        help="submit one job of this opcode, with KEY=VALUE parameters")
    source.add_argument("--bex", metavar="FILE",
                        help="submit a BEX job file (headers such as Node:, Affinity:, "
                             "Timeout:, an empty line, a shell body) as a command job; - "
                             "for standard input")
    parser.add_argument("--token", metavar="TOKEN", type=parsing.token,
                        help="idempotency token: if a live job was already submitted with it, "
                             "print that job's id instead of creating one (a file of N jobs: "
                             "job i gets TOKEN:i)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {\"id\", \"error\"} per job; with --wait, "
                             "of outcome records (see result --json)")
    parser.add_argument("--depends", type=parsing.dependency, action="append",
                        metavar="ID[:STATUS,...]",
                        help="with --op: wait for job ID to finish (with one of the statuses); "
                             "repeatable")
    parsing.add_job_options(parser)
    parser.add_argument("words", nargs="*", metavar="FILE|KEY=VALUE",
                        help="the job file (- for standard input), or with --op the opcode's "
                             "parameters (values parsed as JSON when they parse)")
    parser.set_defaults(func=cmd_submit)


def _register_cancel(commands):
    parser = commands.add_parser(
        "cancel", help="cancel jobs",
        description="Cancel jobs given by id (a group: every job of its tree), or every job "
                    "in a state.")
    parser.add_argument("ids", nargs="*", type=parsing.job_reference, metavar="ID|PATH",
                        help="job id, or a group's title or path (render|shot1)")
    selection.add_selector_options(parser, selection.CANCEL_SELECTORS)
    parser.add_argument("--force", action="store_true",
                        help="cancel several selected jobs without asking for confirmation")
    parser.add_argument("--kill", action="store_true",
                        help="interrupt a running opcode at once instead of at its next "
                             "cancellation point")
    parser.set_defaults(func=cmd_cancel)


# submit

def cmd_submit(ctx, args):
    """Submit the jobs; print their ids; with --wait/--watch follow them to the end."""
    job_list, many = _jobs_to_submit(ctx, args)
    if args.priority is not None:
        for ops in job_list:
            for op in ops:
                op["priority"] = args.priority
    if args.json and args.watch:
        raise CommandError("--json goes with --wait, not with --watch (whose log lines are "
                           "for people)")
    job_ids, code, entries = _submit(ctx, job_list, many, args.token, quiet=args.json,
                                     options=parsing.job_options(args))
    if code == exitcodes.EXIT_NOT_ACKNOWLEDGED or not (args.wait or args.watch):
        if args.json:
            ctx.out(serializer.dumps(entries))
        return code
    return exitcodes.worst([code] + watching.follow_jobs(ctx, job_ids, args.watch,
                                                         as_json=args.json))


def _jobs_to_submit(ctx, args):
    """Return ([ops, ...], many) from --op and its parameters, --bex, or the job file."""
    if args.bex is not None:
        return [_bex_job(ctx, args)], False
    if args.op is not None:
        op = {"OP_ID": args.op}
        op.update(parsing.params(args.words))
        if args.depends:
            op["depends"] = args.depends
        return [[op]], False
    if args.depends:
        raise CommandError("--depends needs --op (in a job file, set depends in the opcodes)")
    if len(args.words) != 1:
        raise CommandError("submit needs one job file (- for standard input), or --op OP_ID")
    return jobs_from_text(_read(ctx, args.words[0]), _file_label(args.words[0]))


def _bex_job(ctx, args):
    """The opcodes of the --bex job file (its ID: the token unless --token is given)."""
    if args.words or args.depends:
        raise CommandError("--bex takes the job file only (its headers say the rest)")
    try:
        job = bexfile.parse(_read(ctx, args.bex), _file_label(args.bex))
    except bexfile.BexFileError as err:
        raise CommandError(str(err)) from None
    if job.nodes is not None:  # several nodes or a glob: a fan-out (jqueue.fanout)
        job.op["nodes"] = job.nodes
    if job.parent is not None:
        if getattr(args, "parent", None) is not None:
            raise CommandError("%s: Parent is given in the file and by --parent" %
                               _file_label(args.bex))
        args.parent = str(job.parent)
    if args.token is None:
        args.token = job.token
    return [job.op]


def _file_label(name):
    return "standard input" if name == "-" else name


def _read(ctx, name):
    if name == "-":
        return ctx.stdin.read()
    try:
        with open(name, encoding="utf-8") as stream:
            return stream.read()
    except (OSError, UnicodeDecodeError) as err:
        raise CommandError("cannot read %s: %s" % (name, getattr(err, "strerror", err))) from None


def _is_job(value):
    return isinstance(value, list) and bool(value) and all(isinstance(op, dict) for op in value)


def jobs_from_text(text, label):
    """Parse a job file: a list of opcodes is one job, a list of such lists many jobs."""
    try:
        data = serializer.loads(text)
    except errors.ParseError as err:
        raise CommandError("%s: %s" % (label, errors.error_message(err))) from None
    if _is_job(data):
        return [data], False
    if isinstance(data, list) and data and all(_is_job(job) for job in data):
        return data, True
    raise CommandError("%s: expected a non-empty list of opcode objects, or a list of such "
                       "lists" % label)


def _tokens(token, count):
    return None if token is None else ["%s:%d" % (token, n) for n in range(1, count + 1)]


def _submit(ctx, job_list, many, token=None, quiet=False, options=None):
    """Submit; print each id unless quiet (refusals on stderr); return (ids, exit status,
    [{"id": id or None, "error": message or None}] per job).

    Jobs recorded but not acknowledged in time are printed all the same; the error says
    their fate and the status is EXIT_NOT_ACKNOWLEDGED.
    """
    try:
        answers = _submit_or_raise(ctx, job_list, many, token, options or {})
    except errors.SubmissionNotAcknowledged as err:
        message = errors.error_message(err)
        ctx.warn(message)
        for job_id in err.job_ids if not quiet else ():
            ctx.out(str(job_id), flush=True)
        return [], exitcodes.EXIT_NOT_ACKNOWLEDGED, [
            {"id": job_id, "error": message} for job_id in err.job_ids]
    job_ids, code, entries = [], EXIT_SUCCESS, []
    for index, (ok, value) in enumerate(answers):
        if ok:
            job_ids.append(value)
            entries.append({"id": value, "error": None})
            if not quiet:
                ctx.out(str(value), flush=True)
        else:
            ctx.warn("job %d of %d refused: %s" % (index + 1, len(job_list), value))
            entries.append({"id": None, "error": value})
            code = EXIT_REFUSED
    return job_ids, code, entries


def _submit_or_raise(ctx, job_list, many, token, options):
    """[(ok, id or message)] of the submission of job_list, each job with options (its
    group and start time)."""
    if not many:
        return [(True, parsing.submitting(lambda: ctx.client.submit_job(
            job_list[0], token=token, **options), token))]
    return parsing.submitting(lambda: ctx.client.submit_many_jobs(
        job_list, tokens=_tokens(token, len(job_list)),
        options=[options] * len(job_list) if options else None), token)


# cancel

def cmd_cancel(ctx, args):
    """Cancel the given or selected jobs; print each message the daemon returns."""
    job_ids = _jobs_to_cancel(ctx, args)
    if not job_ids:
        ctx.out("No jobs to cancel")
        return EXIT_SUCCESS
    return report_each(ctx, job_ids, lambda job_id: ctx.client.cancel_job(job_id,
                                                                           kill=args.kill))


def _jobs_to_cancel(ctx, args):
    statuses = selection.selected_statuses(args)
    if args.ids and statuses:
        raise CommandError("give job IDs or a status selector, not both")
    if args.ids:
        return parsing.resolve_references(ctx.client, args.ids)
    if not statuses:
        raise CommandError("give job IDs, or select jobs with --pending, --queued or --waiting")
    job_ids = selection.job_ids_with_status(ctx.client, statuses)
    if len(job_ids) > 1 and not args.force:
        _confirm_cancel(ctx, job_ids)
    return job_ids


def _confirm_cancel(ctx, job_ids):
    if not ctx.interactive():
        raise CommandError("refusing to cancel %d jobs without confirmation (standard input "
                           "is not a terminal); use --force" % len(job_ids))
    shown = ", ".join(str(i) for i in job_ids[:10]) + (", ..." if len(job_ids) > 10 else "")
    if not ctx.ask("Cancel %d jobs (%s)?" % (len(job_ids), shown)):
        raise CommandError("not confirmed; no job canceled", exitcodes.EXIT_INTERRUPTED)


# archive, autoarchive, change-priority

def cmd_archive(ctx, args):
    """Archive finished jobs; a job not archived is reported: status 4 if it does not
    exist, else 6 (it is not finished, or already archived)."""
    codes = [EXIT_SUCCESS]
    for job_id in args.ids:
        if not ctx.client.archive_job(job_id):
            codes.append(outcome.refused(ctx, job_id, None))
    return exitcodes.worst(codes)




def cmd_autoarchive(ctx, args):
    """Archive old finished jobs, calling the daemon until every job was checked."""
    call_timeout = min(AUTOARCHIVE_CALL_TIMEOUT, ctx.timeout / 2)
    total = auto_archive(ctx.client, args.age, call_timeout, ctx.timeout / 2)
    ctx.out("Archived %d jobs" % total)
    return EXIT_SUCCESS


def auto_archive(client, age, call_timeout, max_call_timeout):
    """Call AutoArchiveJobs until no job is left unchecked; return how many were archived.

    A call that archives nothing while jobs are left unchecked made no progress: the next
    call gets twice the time, up to max_call_timeout, and then jqctl gives up.
    """
    total = 0
    while True:
        archived, left = client.auto_archive_jobs(age, call_timeout)
        total += archived
        if not left:
            return total
        if not archived and call_timeout >= max_call_timeout:
            raise CommandError("archived %d jobs, but %d jobs were left unchecked: the daemon "
                               "made no progress in %gs" % (total, left, call_timeout),
                               EXIT_REFUSED)
        if not archived:
            call_timeout = min(call_timeout * 2, max_call_timeout)


def cmd_change_priority(ctx, args):
    """Change the priority of jobs; print each message the daemon returns."""
    return report_each(ctx, args.ids, lambda job_id: ctx.client.change_job_priority(
        job_id, args.priority))


def report_each(ctx, job_ids, call, describe=None):
    """call(job_id) -> (ok, message) for each job; print each message (describe(job_id,
    message) if given); the exit status (a job that does not exist: not found)."""
    codes = [EXIT_SUCCESS]
    for job_id in job_ids:
        ok, message = call(job_id)
        if ok:
            ctx.out(describe(job_id, message) if describe else message)
        else:
            codes.append(outcome.refused(ctx, job_id, message))
    return exitcodes.worst(codes)
