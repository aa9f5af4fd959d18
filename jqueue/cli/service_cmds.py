"""jqctl service: supervised services (add, modify, remove, start, stop, restart, status,
list, log, import).

``status NAME`` exits 0 if the service is RUNNING, 3 if it is not, 4 if there is no
such service (systemctl's convention). ``list`` prints one ``STATE name`` line per
service, as ``jobmon list-jobs`` does (``RUNNING web``, ``STOPPED db``), or a table with
``-o``. ``start``, ``stop`` and ``restart`` wait until the service settles (unless
``--no-wait``): start and restart exit 0 once it is RUNNING, 1 if it ended otherwise
(BACKOFF, EXITED, FATAL). ``import FILE`` reads a JobMon configuration (jqueue.cli.jobmon).
"""

import argparse

from jqueue import errors, serializer, service
from jqueue.cli import command_cmds, jobmon, output, parsing
from jqueue.cli.exitcodes import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_SUCCESS, CommandError

#: Seconds between two looks at a service being started or stopped.
WAIT_POLL = 0.2
#: Seconds a start, stop or restart waits beyond the service's own startsecs and
#: stop_timeout before giving up.
WAIT_MARGIN = 30.0
#: Fields of the table (name, title, kind); definition fields come after them.
STATE_FIELDS = (
    ("name", "Name", "text"), ("state", "State", "text"), ("node", "Node", "text"),
    ("pid", "PID", "number"), ("run", "Run", "number"), ("since", "Since", "time"),
    ("restarts", "Restarts", "number"), ("failures", "Failures", "number"),
    ("exit_status", "Exit", "number"), ("signal", "Signal", "number"),
    ("target", "Target", "text"), ("version", "Version", "number"),
    ("reachable", "Reachable", "text"), ("retry_at", "Retry_at", "time"),
    ("log_bytes", "Log_bytes", "number"), ("log_start", "Log_start", "number"),
    ("message", "Message", "text"), ("id", "Id", "number"),
)
DEFAULT_FIELDS = ("name", "state", "node", "pid", "run", "since", "restarts")
DEFINITION_FIELDS = tuple(n for n in service.PARAM_NAMES if n not in ("name", "node"))
SETTLED = frozenset([service.RUNNING, service.BACKOFF, service.EXITED, service.FATAL,
                     service.STOPPED])


def register(commands):
    """Add ``service`` and its subcommands."""
    parser = commands.add_parser(
        "service", help="supervised services: long-running commands kept alive on a node",
        description="Manage supervised services: long-running commands placed on a node "
                    "(by --node or --affinity), kept alive there by the node's daemon "
                    "(restarts with back-off), stored in the replicated queue.")
    sub = parser.add_subparsers(dest="service_command", metavar="SUBCOMMAND", required=True,
                                title="subcommands")
    _register_add(sub)
    _register_modify(sub)
    for name, action, text in (("start", "start", "start services (at once, even in "
                                                  "BACKOFF or FATAL)"),
                               ("stop", "stop", "stop services (stop signal, then SIGKILL "
                                                "to all their processes after stop_timeout)"),
                               ("restart", "restart", "stop services, then start them")):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + "; "
                           "wait until they settle unless --no-wait.")
        p.add_argument("--no-wait", action="store_true",
                       help="return once the request is recorded")
        p.add_argument("names", nargs="+", metavar="NAME", help="service name")
        p.set_defaults(func=cmd_control, action=action)
    p = sub.add_parser("remove", help="remove services (stopped first)",
                       description="Remove services: their node stops them (stop signal, "
                                   "then SIGKILL after stop_timeout) and their log goes.")
    p.add_argument("names", nargs="+", metavar="NAME", help="service name")
    p.set_defaults(func=cmd_remove)
    p = sub.add_parser("status", help="show a service; exit 0 running, 3 not, 4 unknown",
                       description="Show a service's state. Exit status: 0 if it is "
                                   "RUNNING, 3 if it is not, 4 if there is no such service.")
    p.add_argument("--json", action="store_true", help="print the service as JSON")
    p.add_argument("name", metavar="NAME", help="service name")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("list", help="list services (STATE name, or a table with -o)",
                       description="List the services: one 'STATE name' line each (as "
                                   "jobmon list-jobs), or a table of the fields -o names.")
    p.add_argument("-o", "--output", metavar="[+]FIELDS",
                   help="table of these fields (comma-separated; +FIELDS adds to %s); "
                        "fields: %s and the definition's %s" % (
                            ",".join(DEFAULT_FIELDS), ",".join(n for n, _, _ in STATE_FIELDS),
                            ",".join(DEFINITION_FIELDS)))
    p.add_argument("--json", action="store_true", help="print the services as JSON")
    p.add_argument("--no-headers", action="store_true", help="omit the table's header line")
    p.add_argument("--separator", metavar="SEP", help="separate the table's fields with SEP")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these services")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("log", help="print a service's log",
                       description="Print a service's log: the output of its runs (unless "
                                   "they write to files) between '* ' lines of ours; with "
                                   "-f keep printing it as it grows.")
    p.add_argument("-f", "--follow", action="store_true",
                   help="follow the log (until the service is removed or Ctrl-C)")
    command_cmds.add_lines_option(p)
    p.add_argument("name", metavar="NAME", help="service name")
    p.set_defaults(func=cmd_log)
    p = sub.add_parser("import", help="add the jobs of a JobMon configuration as services",
                       description="Read a JobMon master configuration or job file (JSON, "
                                   "include-dirs, $NAME expansion) and add each job as a "
                                   "service; all or none.")
    p.add_argument("file", metavar="FILE", help="JobMon master configuration or job file")
    p.add_argument("--node", metavar="NODE", help="place every service on NODE")
    p.add_argument("--affinity", metavar="TAGS", help="place every service by these tags")
    p.add_argument("--start", action="store_true",
                   help="start every service now (autostart ones start anyway)")
    p.add_argument("--replace", action="store_true",
                   help="modify services that exist already instead of refusing")
    p.add_argument("--dry-run", action="store_true",
                   help="print the definitions as JSON; change nothing")
    p.set_defaults(func=cmd_import)


class _OptionsParser(argparse.ArgumentParser):
    """Parses options found after NAME (argparse leaves them in ARGV); errors are usage
    errors."""

    def error(self, message):
        raise CommandError("service: %s (see 'jqctl service add --help')" % message)


def _definition_options(parser, adding, with_argv=True):
    parser.add_argument("-c", dest="shell", metavar="STRING",
                        help="the command: STRING run by /bin/sh -c (else ARGV after --)")
    parser.add_argument("--node", metavar="NODE", help="node to run on")
    parser.add_argument("--affinity", metavar="TAGS",
                        help="tags the node must have (comma-separated)")
    parser.add_argument("--dir", metavar="DIR", help="working directory (absolute; default /)")
    parser.add_argument("--env", action="append", type=command_cmds.env_item, default=[],
                        metavar="NAME=VALUE", help="set a variable (repeatable)")
    parser.add_argument("--env-inherit", action=argparse.BooleanOptionalAction, default=None,
                        help="start from the node daemon's environment")
    for stream, text in (("stdin", "read stdin from FILE (default /dev/null)"),
                         ("stdout", "append stdout to FILE (default: the service's log)"),
                         ("stderr", "append stderr to FILE (default: the service's log)")):
        parser.add_argument("--" + stream, metavar="FILE", help=text + (
            "" if adding else "; '' resets it"))
    parser.add_argument("--run-as", metavar="USER", help="user to run as")
    parser.add_argument("--stop-signal", metavar="SIGNAL",
                        help="signal asking it to stop (default TERM)")
    parser.add_argument("--stop-timeout", type=parsing.seconds, metavar="SECONDS",
                        help="seconds before SIGKILL to all its processes (default 10)")
    parser.add_argument("--memory", dest="memory_max", type=parsing.memory_size,
                        metavar="SIZE", help="kill a run whose processes hold more memory "
                        "than this together (as run --memory; 0: no limit)")
    parser.add_argument("--restart", metavar="WHEN",
                        help="restart a run that ended: no, on-failure (default), always")
    parser.add_argument("--startsecs", type=parsing.seconds, metavar="SECONDS",
                        help="seconds a run must stay up to be RUNNING (default 1)")
    parser.add_argument("--autostart", action=argparse.BooleanOptionalAction, default=None,
                        help="start it when added and whenever its node boots")
    parser.add_argument("--movable", action=argparse.BooleanOptionalAction, default=None,
                        help="restart it on another node when its node is lost")
    if adding:
        parser.add_argument("--start", action="store_true", help="start it now")
    parser.add_argument("--json", action="store_true", help="print the service as JSON")
    if with_argv:
        parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="ARGV",
                            help="the command and its arguments, after --")


def _late_options(args, adding):
    """Options given after NAME, and the command after ``--`` (ARGV)."""
    rest = list(args.argv)
    head, tail = (rest[:rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest \
        else (rest, [])
    if head:
        parser = _OptionsParser(prog="jqctl service", add_help=False,
                                argument_default=argparse.SUPPRESS)
        _definition_options(parser, adding, with_argv=False)
        parser.parse_args(head, namespace=args)
    return tail


def _register_add(sub):
    p = sub.add_parser("add", help="add a service",
                       description="Add a service placed on a node; with --start (or "
                                   "--autostart) start it now.",
                       usage="jqctl service add NAME [options] (-c STRING | -- ARGV...)")
    p.add_argument("name", metavar="NAME", help="service name")
    _definition_options(p, adding=True)
    p.set_defaults(func=cmd_add)


def _register_modify(sub):
    p = sub.add_parser("modify", help="change a service (from its next start)",
                       description="Change parameters of a service; they apply from its "
                                   "next start (jqctl service restart NAME applies them "
                                   "now). A new --node or --affinity may move it.",
                       usage="jqctl service modify NAME [options] [-c STRING | -- ARGV...]")
    p.add_argument("name", metavar="NAME", help="service name")
    _definition_options(p, adding=False)
    p.set_defaults(func=cmd_modify)


# Building definitions from options


def definition_of(args, adding):
    """The parameters the options give (a definition for add, changes for modify)."""
    params = {}
    argv = _late_options(args, adding)
    if args.shell is not None and argv:
        raise CommandError("give the command as -c STRING or as ARGV after --, not both")
    if args.shell is not None:
        params["command"] = args.shell
    elif argv:
        params["command"] = argv
    elif adding:
        raise CommandError("service add needs a command: ARGV after --, or -c STRING")
    simple = (("node", "node"), ("dir", "dir"), ("run_as", "run_as"),
              ("stop_signal", "stop_signal"), ("stop_timeout", "stop_timeout"),
              ("memory_max", "memory_max"),
              ("restart", "restart"), ("startsecs", "startsecs"), ("autostart", "autostart"),
              ("movable", "movable"), ("env_inherit", "env_inherit"))
    for attr, key in simple:
        value = getattr(args, attr)
        if value is not None:
            params[key] = None if value == "" and not adding else value
    for key in ("stdin", "stdout", "stderr"):
        value = getattr(args, key)
        if value is not None:
            params[key] = None if value == "" and not adding else value
    if args.affinity is not None:
        params["affinity"] = args.affinity
    if args.env:
        params["env"] = dict(args.env)
    return params


def cmd_add(ctx, args):
    definition = dict(definition_of(args, adding=True), name=args.name)
    view = ctx.client.add_services([definition], args.start)[0]
    if args.json:
        ctx.out(serializer.dumps(view))
    else:
        ctx.out("service %s added on %s%s" % (view["name"], view["node"], (
            ", starting" if args.start or view["definition"]["autostart"] else "")))
    return EXIT_SUCCESS


def cmd_modify(ctx, args):
    changes = definition_of(args, adding=False)
    if not changes:
        raise CommandError("service modify needs something to change (see --help)")
    view = ctx.client.modify_service(args.name, changes)
    if args.json:
        ctx.out(serializer.dumps(view))
    else:
        ctx.out("service %s modified (version %d, on %s); it applies from its next start"
                % (view["name"], view["version"], view["node"]))
    return EXIT_SUCCESS


def cmd_remove(ctx, args):
    code = EXIT_SUCCESS
    for name in args.names:
        try:
            ctx.out(ctx.client.remove_service(name))
        except errors.OpPrereqError as err:
            ctx.warn(errors.error_message(err))
            code = max(code, EXIT_NOT_FOUND)
    return code


# start, stop, restart


def cmd_control(ctx, args):
    """Record the request for each service; wait until each settles unless --no-wait."""
    before = {view["name"]: view for view in ctx.again("query_services", args.names)}
    for name in args.names:
        _, message = ctx.client.control_service(name, args.action)
        if args.no_wait:
            ctx.out(message)
    if args.no_wait:
        return EXIT_SUCCESS
    code = EXIT_SUCCESS
    for name in args.names:
        view, settled = wait_settled(ctx, before[name], args.action)
        ctx.out("%s: %s%s" % (name, view["state"], _detail(view)), flush=True)
        wanted = service.STOPPED if args.action == "stop" else service.RUNNING
        if not settled or (view["state"] != wanted and not (
                args.action == "stop" and view["state"] in (service.EXITED, service.FATAL))):
            code = EXIT_FAILURE
    return code


def wait_settled(ctx, before, action):
    """(The service's view, whether it settled after action): once it did, or when waiting
    gave up (a restart not done by then fails, even if the service runs: its old run);
    the request is recorded, so a daemon lost meanwhile is connected to again."""
    definition = before["definition"]
    limit = definition["startsecs"] + definition["stop_timeout"] + WAIT_MARGIN
    deadline = ctx.clock() + limit
    old_run = before.get("run") or 0
    while True:
        view = ctx.again("query_services", [before["name"]])[0]
        if _settled(view, action, old_run, before):
            return view, True
        if ctx.clock() > deadline:
            ctx.warn("service %s: still %s after %gs" % (before["name"], view["state"], limit))
            return view, False
        ctx.sleep(WAIT_POLL)


def _settled(view, action, old_run, before):
    """Whether a service is done with a start, stop or restart asked when it was before."""
    state = view["state"]
    if action == "stop":
        return state in (service.STOPPED, service.EXITED, service.FATAL)
    if state not in SETTLED or not view.get("reachable", True):
        return False
    run = view.get("run") or 0
    if action == "start" and before["state"] in (service.STARTING, service.RUNNING):
        return True  # it was running already: done once it is past STARTING
    return run > old_run


def _detail(view):
    parts = []
    if view.get("pid"):
        parts.append("pid %d" % view["pid"])
    if view.get("run"):
        parts.append("run %d" % view["run"])
    if view.get("node"):
        parts.append("node %s" % view["node"])
    text = " (%s)" % ", ".join(parts) if parts else ""
    if view.get("message"):
        text += ": %s" % view["message"]
    return text


# status, list, log


def cmd_status(ctx, args):
    """Print the service; exit 0 RUNNING, 3 not running, 4 no such service."""
    try:
        view = ctx.client.query_services([args.name])[0]
    except errors.OpPrereqError as err:
        ctx.warn(errors.error_message(err))
        return service.STATUS_UNKNOWN
    if args.json:
        ctx.out(serializer.dumps(view))
    else:
        for line in status_lines(view):
            ctx.out(line)
    if not view.get("reachable", True):
        return service.STATUS_NOT_RUNNING  # not known to be running now
    return service.status_exit_code(view["state"])


def status_lines(view):
    """What status prints: a headline, then one line per fact."""
    definition = view["definition"]
    lines = ["%s: %s%s" % (view["name"], view["state"], "" if view.get("reachable", True)
                           else " (last known: node %s does not answer)" % view["node"])]
    since = view.get("since")
    facts = [("node", view.get("node")), ("pid", view.get("pid")), ("run", view.get("run")),
             ("since", _time(since)), ("message", view.get("message")),
             ("restarts", view.get("restarts")), ("failures in the last minute",
                                                   view.get("failures")),
             ("retry at", _time(view.get("retry_at"))),
             ("command", _command(definition["command"])), ("dir", definition["dir"]),
             ("restart", definition["restart"]), ("autostart", definition["autostart"]),
             ("stop", "%s, SIGKILL after %gs" % (definition["stop_signal"],
                                                 definition["stop_timeout"])),
             ("asked", view.get("target"))]
    for key in ("stdin", "stdout", "stderr", "run_as"):
        if definition.get(key):
            facts.append((key, definition[key]))
    for label, value in facts:
        if value is not None and value != "":
            lines.append("  %s: %s" % (label, output.format_scalar(value)))
    return lines


def _time(value):
    if not isinstance(value, (int, float)):
        return None
    return output.format_time(value)


def _command(command):
    from jqueue.commandjob import command_text
    return command_text(command)


def cmd_list(ctx, args):
    views = ctx.client.query_services(args.names or None)
    if args.json:
        ctx.out(serializer.dumps(views))
        return EXIT_SUCCESS
    if args.output is None:
        for view in views:
            ctx.out("%s %s" % (view["state"], view["name"]))
        return EXIT_SUCCESS
    columns = _columns(args.output)
    rows = [[_cell(view, name, kind) for name, _, kind in columns] for view in views]
    headers = None if args.no_headers else [title for _, title, _ in columns]
    numeric = {i for i, (_, _, kind) in enumerate(columns) if kind == "number"}
    for line in output.table_lines(headers, rows, numeric, args.separator):
        ctx.out(line)
    return EXIT_SUCCESS


def _columns(text):
    names = list(DEFAULT_FIELDS) if text.startswith("+") else []
    names += [n.strip() for n in text.lstrip("+").split(",") if n.strip()]
    known = {name: (name, title, kind) for name, title, kind in STATE_FIELDS}
    known.update((name, (name, name.capitalize(), "text")) for name in DEFINITION_FIELDS)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise CommandError("unknown field %r (fields: %s)" % (
            unknown[0] if unknown else text, ", ".join(sorted(known))), EXIT_NOT_FOUND)
    return [known[n] for n in names]


def _cell(view, name, kind):
    value = view.get(name) if name in view else view["definition"].get(name)
    if kind == "time":
        return _time(value) or "-"
    if name == "command":
        return _command(value)
    if isinstance(value, list):
        return ",".join(output.format_scalar(v) for v in value)
    return output.format_scalar(value)


def cmd_log(ctx, args):
    """Print the service's log (and with -f, follow it, across restarts of the daemon)."""
    start = 0
    if args.lines is not None:
        views = ctx.again("query_services", [args.name])
        size = views[0].get("log_bytes") or 0 if views else 0
        start = command_cmds.print_tail(ctx, "read_service_log", args.name, size,
                                        args.lines)
    command_cmds.copy_log(ctx, "read_service_log", args.name, args.follow, forever=True,
                          start=start)
    return EXIT_SUCCESS


# import


def cmd_import(ctx, args):
    """Add (or with --replace, modify) every job of a JobMon file as a service."""
    definitions = jobmon.load(args.file)
    for definition in definitions:
        if args.node is not None and "node" not in definition:
            definition["node"] = args.node
        if args.affinity is not None and "affinity" not in definition:
            definition["affinity"] = args.affinity
    if args.dry_run:
        ctx.out(serializer.dumps(definitions))
        return EXIT_SUCCESS
    existing = {view["name"] for view in ctx.client.query_services()}
    clash = [d["name"] for d in definitions if d["name"] in existing]
    if clash and not args.replace:
        raise CommandError("service(s) %s exist already (--replace modifies them)" %
                           ", ".join(clash), EXIT_FAILURE)
    new = [d for d in definitions if d["name"] not in existing]
    for definition in definitions:
        if definition["name"] in existing:
            changes = {k: v for k, v in definition.items() if k != "name"}
            ctx.client.modify_service(definition["name"], changes)
            ctx.out("service %s modified" % definition["name"])
    if new:
        for view in ctx.client.add_services(new, args.start):
            ctx.out("service %s added on %s%s" % (view["name"], view["node"], (
                ", starting" if args.start or view["definition"]["autostart"] else "")))
    if args.start:
        for name in clash:
            ctx.client.control_service(name, "start")
    return EXIT_SUCCESS
