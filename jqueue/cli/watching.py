"""Following jobs to their end: watch (print a job's log as it grows) and wait."""

from jqueue import commandjob, constants, errors, serializer
from jqueue.cli import exitcodes, outcome, output, parsing
from jqueue.job import DONE_FIELDS, is_done

#: Seconds between two looks at a job being canceled (the daemon answers those at once).
CANCELING_POLL_INTERVAL = 1.0
_FIELDS = DONE_FIELDS
#: Fields that tell how a command job ended (its exit status for jqctl wait).
END_FIELDS = ["status", "exit_status", "signal", "timed_out", "reason"]
#: follow_jobs' outcome of a job not finished by the deadline (wait --timeout): not an
#: exit status, as its number (3) is also a canceled job's.
STILL_RUNNING = "still running"
#: Seconds a followed job is waited for while it waits to start: how soon a change of
#: why it waits is said (WaitNotice; the first wait: FIRST_POLL, then it is asked).
WAIT_POLL = 5.0
FIRST_POLL = 1.0
_PENDING = (constants.JOB_STATUS_QUEUED, constants.JOB_STATUS_WAITING)


class WaitNotice:
    """Says on stderr why a followed job does not run, each time that changes (the
    master's wait_message): "job 8 waits: the slot of vm is busy (job 7)". poll: how
    long the follower waits for news before asking it (FIRST_POLL, then WAIT_POLL)."""

    def __init__(self, ctx, job_id):
        self._ctx, self._job_id = ctx, job_id
        self._said = None
        self.poll = FIRST_POLL

    def __call__(self):
        """Whether the job waits now (said if the reason is new)."""
        self.poll = WAIT_POLL
        row = self._ctx.again("query_jobs", [self._job_id], ["wait_message"])[0]
        message = row[0] if row is not None else None
        if message and message != self._said:
            self._ctx.warn("job %s waits: %s" % (self._job_id, message))
        self._said = message
        return bool(message)


def register(commands):
    """Add watch and wait to the subparsers."""
    parser = commands.add_parser(
        "watch", help="print a job's log until it finishes",
        description="Print the log of a job as it grows, until the job finishes; exit with "
                    "its outcome.")
    parser.add_argument("id", type=parsing.job_id, metavar="ID", help="job id")
    parser.set_defaults(func=cmd_watch)
    parser = commands.add_parser(
        "wait", help="wait for jobs to finish",
        description="Wait for jobs to finish (a group: every job of its tree); print one line "
                    "per job and exit with the worst outcome.")
    parser.add_argument("ids", nargs="+", type=parsing.job_reference, metavar="ID|PATH",
                        help="job id, or a group's title or path (render|shot1)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of outcome records once every job finished")
    parser.add_argument("--timeout", type=parsing.duration, dest="wait_for",
                        metavar="SECONDS",
                        help="stop waiting after SECONDS (exit status 3 if a job is not "
                             "finished then; the jobs go on); default: wait for ever")
    parser.set_defaults(func=cmd_wait)


def cmd_watch(ctx, args):
    """Stream the job's log, then print its outcome and exit with it."""
    return exitcodes.worst(follow_jobs(ctx, [args.id], show_log=True))


def cmd_wait(ctx, args):
    """Wait for every job (until args.wait_for seconds passed); exit with the worst
    outcome."""
    deadline = None if args.wait_for is None else ctx.clock() + args.wait_for
    codes = follow_jobs(ctx, parsing.resolve_references(ctx.client, args.ids), show_log=False,
                        as_json=args.json, deadline=deadline)
    if STILL_RUNNING in codes:  # the worst outcome, whatever its number
        return exitcodes.EXIT_STILL_RUNNING
    return exitcodes.worst(codes)


def follow_jobs(ctx, job_ids, show_log, as_json=False, deadline=None):
    """Follow jobs one after the other; print "Job N finished: STATUS" for each, with why
    it failed (the failing opcode's error), or with as_json a list of outcome records.
    Once ctx.clock() reaches deadline (if given), the jobs not finished are "still
    STATUS" (their records as they are).

    Returns the exit status of each job (not found for a job the daemon does not know,
    STILL_RUNNING for one not finished by the deadline).
    """
    codes, records = [], []
    for job_id in job_ids:
        try:
            status = follow(ctx, job_id, show_log, deadline)
            found = ctx.again(outcome.records, [job_id])[job_id]
        except errors.JobLost:
            found = None
        if found is None:
            ctx.warn(outcome.not_found_message(job_id))
            codes.append(exitcodes.EXIT_NOT_FOUND)
            continue
        if as_json:
            records.append(found)
        elif status is None:
            ctx.out("Job %s still %s" % (job_id, found["status"]), flush=True)
        else:
            ctx.out(outcome.finished_line(dict(found, status=status)), flush=True)
        if status is None:
            codes.append(STILL_RUNNING)
            continue
        codes.append(exit_status(ctx, job_id, status))
    if as_json:
        ctx.out(serializer.dumps(records), flush=True)
    return codes


def exit_status(ctx, job_id, status):
    """The exit status for a finished job: a command job's own (jqctl(8), "wait"), else
    the status table's."""
    row = ctx.again("query_jobs", [job_id], END_FIELDS)[0]
    if row is None or row[END_FIELDS.index("reason")] is None:
        return exitcodes.for_status(status)
    return commandjob.wait_exit_code(status, dict(zip(END_FIELDS, row)))


def follow(ctx, job_id, show_log, deadline=None):
    """Wait until the job is finalized, printing its log entries if show_log; return its
    status (None if ctx.clock() reached deadline first). The daemon lost (a restart, a
    failover), it connects again (Context.again)."""
    try:
        return _follow_live(ctx, job_id, show_log, deadline)
    except errors.JobLost:
        return _archived_outcome(ctx, job_id, show_log)


def _archived_outcome(ctx, job_id, show_log):
    """The status of an archived job (WaitForJobChange watches live jobs only); JobLost if
    the daemon does not know the job at all."""
    row = ctx.again("query_jobs", [job_id], ["status", "oplog"])[0]
    if row is None:
        raise errors.JobLost("job %s not found" % job_id)
    status, logs = row
    if show_log:
        for entry in sorted((e for log in logs for e in log), key=lambda e: e[0]):
            ctx.out(output.log_line(entry), flush=True)
    return status


def _follow_live(ctx, job_id, show_log, deadline):
    """(See follow.) While the job waits to start, the wait returns every FIRST_POLL,
    then WAIT_POLL seconds to say why it waits (WaitNotice)."""
    info, serial = None, None
    notice = WaitNotice(ctx, job_id)
    while True:
        left, lost = None, {}
        if deadline is not None:
            left = deadline - ctx.clock()
            if left <= 0:
                return None
            lost = {"window": left}  # a lost daemon is tried again until the deadline
        pending = info is not None and info[0] in _PENDING
        step = left
        if pending:  # back after notice.poll, to say why it waits
            step = notice.poll if left is None else min(left, notice.poll)
        result = ctx.again("wait_for_job_change", job_id, _FIELDS, info, serial, step, **lost)
        if result == constants.JOB_NOTCHANGED:
            if pending:
                notice()
            continue
        new_info, entries = result
        for entry in entries:
            serial = entry[0] if serial is None else max(serial, entry[0])
            if show_log:
                ctx.out(output.log_line(entry), flush=True)
        if is_done(new_info):
            return new_info[0]
        if new_info == info and not entries:
            ctx.sleep(CANCELING_POLL_INTERVAL)
        info = new_info
