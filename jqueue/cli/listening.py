"""jqctl listen: follow the event stream, as action-log lines or JSON lines.

Events are numbered; listen remembers the last one it printed, so after losing the
daemon (a restart, a failover: a new master holds the same events under the same
serials) it connects again and goes on after that one, without a gap or a duplicate.
Events older than the daemon keeps (its ``event_buffer``) are gone: listen then says so
on standard error and goes on with the oldest it can get.
"""

from jqueue import serializer
from jqueue.cli import parsing
from jqueue.cli.exitcodes import EXIT_SUCCESS
from jqueue.store.events import action_line

#: Seconds of one WaitForEvents long poll.
POLL = 30.0
#: A serial above every real one: asking after it answers the newest serial.
NOW = 2 ** 62


def register(commands):
    parser = commands.add_parser(
        "listen", help="print events as they happen",
        description="Print the event stream (every job, attempt, node and service state "
                    "change) as "
                    "action-log lines, or JSON lines with --json; keep going across "
                    "daemon restarts and failovers.")
    parser.add_argument("count", nargs="?", type=parsing.count, default=0, metavar="N",
                        help="stop after N events (default 0: never)")
    parser.add_argument("--json", action="store_true", help="print one JSON object a line")
    parser.add_argument("--job", type=parsing.job_id, metavar="ID", help="only this job's")
    parser.add_argument("--node", metavar="NODE", help="only this node's")
    parser.add_argument("--service", metavar="NAME", help="only this service's")
    parser.add_argument("--since", type=parsing.count, metavar="SERIAL",
                        help="start after this event serial (0: every event kept); "
                             "default: from now on")
    parser.set_defaults(func=cmd_listen)


def cmd_listen(ctx, args):
    flt = {key: value for key, value in (("job", args.job), ("node", args.node),
                                         ("service", args.service))
           if value is not None} or None
    since = args.since
    printed = 0
    while args.count <= 0 or printed < args.count:
        if since is None:
            since = ctx.again("wait_for_events", NOW, None, 0, window=None)["last"]
        answer = ctx.again("wait_for_events", since, flt, POLL, window=None)
        if answer["gap"]:
            ctx.warn("events after %d are no longer kept by the daemon; going on with the "
                     "oldest it has" % since)
        for event in answer["events"]:
            ctx.out(serializer.dumps(event) if args.json else action_line(event), flush=True)
            printed += 1
            if args.count > 0 and printed >= args.count:
                break
        if answer["events"]:
            since = answer["events"][-1]["serial"]
        elif answer["gap"]:
            since = answer["last"]
    return EXIT_SUCCESS
