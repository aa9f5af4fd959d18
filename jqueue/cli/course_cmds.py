"""Commands that change a job's course: hold, release, reset, retry; and purge.

Each of hold, release, reset and retry takes job ids or group titles and paths (a group
applies the change to its tree) and prints the daemon's message per job; a job the daemon
refused is reported on stderr with exit status 6 (4 if it does not exist). purge removes
archived jobs and their logs older than an age, calling the daemon until every archived
job was looked at.
"""

from jqueue import ptypes, serializer
from jqueue.cli import jobs, parsing
from jqueue.cli.exitcodes import EXIT_REFUSED, EXIT_SUCCESS, CommandError

#: Seconds the daemon may spend in one PurgeJobs call (at most half of --timeout).
PURGE_CALL_TIMEOUT = 10.0

_COURSE = (
    ("hold", "hold_job", "hold jobs: they do not start until released",
     "Hold jobs: a held job does not start; a running command job is stopped (TERM, then "
     "KILL after its kill_grace) and goes back to queued without counting the attempt. "
     "Holding a group holds its tree, and the jobs added to it later."),
    ("release", "release_job", "release held jobs",
     "Release held jobs (a group: its tree): they may run again."),
    ("reset", "reset_job", "run finished jobs again from the start",
     "Put finished jobs (a group: its finished jobs) back to queued, as submitted: their "
     "attempts are counted anew; their logs are kept, with a marker line."),
    ("retry", "retry_job", "give failed jobs one more attempt",
     "Queue the failed opcodes of failed jobs (a group: its failed jobs) for one more "
     "attempt; the attempt counter goes on."),
)


def register(commands):
    """Add hold, release, reset, retry and purge to the subparsers."""
    for name, method, help_text, description in _COURSE:
        parser = commands.add_parser(name, help=help_text, description=description)
        parser.add_argument("ids", nargs="+", type=parsing.job_reference, metavar="ID|PATH",
                            help="job id, or a group's title or path of titles from the "
                                 "root (render|shot1): the change applies to its tree")
        parser.set_defaults(func=cmd_course, method=method)
    parser = commands.add_parser(
        "purge", help="remove archived jobs and their logs older than an age",
        description="Purge archived jobs older than AGE now: their files and command logs "
                    "are removed, on the master and its candidates (retention does it by "
                    "itself after keep_archived).")
    parser.add_argument("--older-than", required=True, type=parsing.duration, metavar="AGE",
                        help="how long ago a job was archived: 30m, 6h, 21d, 2w or seconds")
    parser.add_argument("--json", action="store_true",
                        help='print {"purged": N, "bytes_freed": N} as JSON')
    parser.set_defaults(func=cmd_purge)


def cmd_course(ctx, args):
    """Call the daemon's method for each job; print what it says."""
    call = getattr(ctx.client, args.method)
    return jobs.report_each(ctx, parsing.resolve_references(ctx.client, args.ids), call)


def cmd_purge(ctx, args):
    """Purge in calls of at most PURGE_CALL_TIMEOUT seconds until the daemon is done."""
    call_timeout = min(PURGE_CALL_TIMEOUT, ctx.timeout / 2)
    purged = freed = 0
    idle = 0
    while True:
        answer = ctx.client.purge_jobs(args.older_than, call_timeout)
        purged += answer["purged"]
        freed += answer["bytes_freed"]
        if answer["done"]:
            break
        idle = idle + 1 if not answer["purged"] else 0
        if idle >= 3:
            raise CommandError("purged %d jobs, but the daemon made no progress in %d calls "
                               "of %gs" % (purged, idle, call_timeout), EXIT_REFUSED)
    if args.json:
        ctx.out(serializer.dumps({"purged": purged, "bytes_freed": freed}))
    else:
        ctx.out("Purged %d jobs, %s freed" % (purged, ptypes.human_bytes(freed)))
    return EXIT_SUCCESS
