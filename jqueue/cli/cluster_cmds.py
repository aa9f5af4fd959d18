"""The cluster commands: cluster init|info|verify, node init|add|join|list|remove|modify,
master-failover; and the "this node is not the master" message.

Commands working on this node's own state directory (cluster init, node init, node join,
master-failover) take ``--state-dir`` (default: $JQ_STATE_DIR, else /var/lib/jqueue) and
call jqueue.cluster.admin; the others ask jq-masterd over LUXI. jqueue.cluster.admin (and with
it the TLS libraries) is imported only by the commands that need it.
"""

import argparse
import importlib
import os
import shutil
import subprocess
import sys

from jqueue import commandjob, constants, errors, ptypes, serializer
from jqueue.cli import exitcodes, output
from jqueue.cli.exitcodes import EXIT_FAILURE, EXIT_SUCCESS, EXIT_UNREACHABLE, CommandError
from jqueue.cluster import membership
from jqueue.luxi import client as luxi_client

#: Environment variable naming this node's state directory.
STATE_DIR_ENV_VAR = "JQ_STATE_DIR"
#: Job ids shown per kind of difference by cluster verify.
SHOWN_IDS = 5
#: Seconds master-failover --start waits for the new daemon's socket to answer.
START_TIMEOUT = 30.0
#: The master daemon's program and systemd unit.
MASTERD = "jq-masterd"
MASTERD_UNIT = "jq-masterd.service"
DIFFERENCES = ("missing", "differ", "extra", "archive_missing", "archive_extra",
               "services_differ")
NODE_COLUMNS = (("name", "Node"), ("address", "Address"), ("role", "Role"),
                ("reachable", "Reachable"), ("in_sync", "In sync"), ("position", "Position"),
                ("tags", "Tags"), ("state", "Jobs"), ("last_heartbeat", "Heartbeat"),
                ("slots", "Slots"), ("running_jobs", "Running"), ("load", "Load"),
                ("mem_available", "MemFree"), ("mem_held", "MemHeld"))


def clusterops():
    """jqueue.cluster.admin (imported on first use; tests replace this function)."""
    return importlib.import_module("jqueue.cluster.admin")


def default_state_dir():
    return os.environ.get(STATE_DIR_ENV_VAR) or constants.DEFAULT_STATE_DIR


def _add_state_dir(parser):
    parser.add_argument("--state-dir", metavar="DIR", default=None,
                        help="this node's state directory (default: $%s, else %s)" % (
                            STATE_DIR_ENV_VAR, constants.DEFAULT_STATE_DIR))


def _add_json(parser, shape):
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: %s (see jqctl(8))" % shape)


def _print_json(ctx, record):
    ctx.out(serializer.dumps(record))
    return EXIT_SUCCESS


def _state_dir(args):
    return os.path.abspath(args.state_dir or getattr(args, "global_state_dir", None)
                           or default_state_dir())


def _positive(text):
    value = _number(text)
    if not 0 < value < float("inf"):
        raise _bad_value(text, "a positive number")
    return value


def _number(text):
    try:
        return ptypes.parse_number(text)
    except ValueError:
        raise _bad_value(text, "a number") from None


def _non_negative_int(text):
    try:
        value = ptypes.parse_int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise _bad_value(text, "an integer >= 0")
    return value


def _bad_value(text, what):
    return argparse.ArgumentTypeError("invalid value %r: use %s" % (text, what))


# Registration

def register(commands):
    """Add the cluster, node and master-failover commands to the subparsers."""
    _register_cluster(commands)
    _register_node(commands)
    _register_failover(commands)


def _register_cluster(commands):
    parser = commands.add_parser("cluster", help="create, describe or verify the cluster",
                                 description="Create, describe or verify the cluster.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    title="actions")
    init = actions.add_parser("init", help="create a cluster with this node as its master",
                              description="Create a cluster (its CA, this node's "
                                          "certificate, cluster.json and node.json) with "
                                          "this node as its master.")
    init.add_argument("--name", required=True, metavar="NAME", help="name of the cluster")
    init.add_argument("--node", required=True, metavar="NODE", help="name of this node")
    init.add_argument("--address", required=True, metavar="HOST:PORT",
                      help="where this node's jq-noded listens")
    init.add_argument("--min-acks", type=_non_negative_int, metavar="N", default=None,
                      help="candidate copies a change needs before it is acknowledged "
                           "(default: a majority of master and candidates)")
    init.add_argument("--ack-timeout", type=_positive, metavar="SECONDS", default=10.0,
                      help="how long a change waits for its copies (default: %(default)g)")
    _add_state_dir(init)
    _add_json(init, '{"state_dir", "config"}')
    init.set_defaults(func=cmd_cluster_init)
    info = actions.add_parser("info", help="show the cluster, its policy and nodes",
                              description="Show the cluster's name, master, epoch, "
                                          "replication policy and nodes.")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_cluster_info)
    verify = actions.add_parser("verify", help="compare the candidates' queues with the "
                                               "master's", description="Compare each master "
                                "candidate's copy of the queue with the master's queue.")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=cmd_cluster_verify)


def _register_node(commands):
    parser = commands.add_parser("node", help="prepare, add, join, list, remove or modify "
                                              "nodes", description="Manage the nodes of "
                                 "the cluster.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    title="actions")
    init = actions.add_parser("init", help="prepare this node: key and certificate request",
                              description="Create this node's key and certificate signing "
                                          "request, to be signed by 'node add' on the master.")
    init.add_argument("--name", required=True, metavar="NAME", help="name of this node")
    _add_state_dir(init)
    _add_json(init, '{"name", "state_dir", "csr"}')
    init.set_defaults(func=cmd_node_init)
    add = actions.add_parser("add", help="add a node (on the master)",
                             description="Add a node to the cluster: sign its certificate "
                                         "request and write the bundle it joins with.")
    add.add_argument("name", metavar="NAME", help="name of the new node")
    add.add_argument("--address", required=True, metavar="HOST:PORT",
                     help="where the new node's jq-noded listens")
    add.add_argument("--candidate", action="store_true",
                     help="make it a master candidate (it holds a copy of the queue)")
    add.add_argument("--csr", required=True, metavar="FILE",
                     help="the node's certificate request (from 'node init')")
    add.add_argument("--bundle", metavar="OUT", default=None,
                     help="where to write the bundle (default: NAME.bundle)")
    _add_json(add, '{"name", "address", "candidate", "bundle"}')
    add.set_defaults(func=cmd_node_add)
    join = actions.add_parser("join", help="join the cluster with a bundle (on the new node)",
                              description="Install the bundle written by 'node add': the "
                                          "certificate and the cluster configuration.")
    join.add_argument("--bundle", required=True, metavar="FILE", help="the bundle")
    _add_state_dir(join)
    _add_json(join, '{"name", "role", "state_dir", "config"}')
    join.set_defaults(func=cmd_node_join)
    listing = actions.add_parser("list", help="list the nodes and their state",
                                 description="List the nodes: address, role, whether they "
                                             "answer, whether their copy is in sync and its "
                                             "replication position.")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(func=cmd_node_list)
    remove = actions.add_parser("remove", help="remove a node from the cluster",
                                description="Remove a node (not the master) from the cluster.")
    remove.add_argument("name", metavar="NAME", help="the node")
    _add_json(remove, '{"version", "unreachable"}')
    remove.set_defaults(func=cmd_node_remove)
    modify = actions.add_parser(
        "modify", help="change a node: candidate, tags, drained, offline",
        description="Make a node a master candidate or not, set its tags (what command "
                    "jobs' affinity must be among), drain it (no new command attempt starts "
                    "there; running ones finish) or set it offline.")
    modify.add_argument("name", metavar="NAME", help="the node")
    modify.add_argument("--candidate", choices=("yes", "no"),
                        help="yes: master candidate; no: plain node")
    modify.add_argument("--tags", metavar="TAG,...",
                        help="the node's tags, replacing the old ones ('' for none)")
    modify.add_argument("--drain", choices=("yes", "no"),
                        help="yes: start no new command attempt there")
    modify.add_argument("--offline", choices=("yes", "no"),
                        help="yes: the node is out of service (nothing starts there)")
    _add_json(modify, '{"version", "unreachable", "changed"}')
    modify.set_defaults(func=cmd_node_modify)


def _register_failover(commands):
    parser = commands.add_parser(
        "master-failover", help="make this node the master (run on a candidate)",
        description="Make this node, a master candidate, the master of the cluster: with a "
                    "vote of the nodes, or without one (--no-voting).")
    parser.add_argument("--no-voting", action="store_true",
                        help="take over without an election (when most nodes are down)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--timeout", dest="failover_timeout", type=_positive, default=10.0,
                        metavar="SECONDS",
                        help="how long each node gets to answer (default: %(default)g)")
    parser.add_argument("--start", action="store_true",
                        help="then start jq-masterd here and wait until it answers")
    _add_state_dir(parser)
    _add_json(parser, "the failover report")
    parser.set_defaults(func=cmd_master_failover)


# cluster

def cmd_cluster_init(ctx, args):
    """Create the cluster with this node as master; print what was made and what is next."""
    state_dir = _state_dir(args)
    config = clusterops().init_cluster(state_dir, args.name, args.node, args.address,
                                       min_acks=args.min_acks, ack_timeout=args.ack_timeout)
    if args.json:
        return _print_json(ctx, {"state_dir": state_dir, "config": config.to_dict()})
    ctx.out("Cluster %s created: %s (%s) is its master, epoch %d." % (
        config.name, config.master, config.address(config.master), config.epoch))
    ctx.out("Written in %s: %s, %s, %s/ (the cluster CA and this node's certificate; "
            "keep %s/%s secret)." % (state_dir, membership.CLUSTER_FILE, membership.NODE_FILE,
                                     constants.TLS_DIR, constants.TLS_DIR,
                                     constants.CA_KEY_FILE))
    ctx.out("Next, on %s:" % config.master)
    ctx.out("  jq-noded --state-dir %s --listen %s" % (state_dir, config.address(config.master)))
    ctx.out("  jq-masterd --state-dir %s" % state_dir)
    ctx.out("Then add nodes: 'jqctl node init' on each new node, 'jqctl node add' here.")
    return EXIT_SUCCESS


def cmd_cluster_info(ctx, args):
    """Print the cluster's configuration, policy and nodes."""
    info = ctx.client.cluster_info()
    if args.json:
        ctx.out(serializer.dumps(info))
        return EXIT_SUCCESS
    setting = info.get("min_acks_setting")
    ctx.out("Cluster: %s" % info["name"])
    ctx.out("Master: %s" % info["master"])
    ctx.out("Epoch: %s, session: %s, configuration version: %s" % (
        info["epoch"], info.get("session"), info.get("version")))
    ctx.out("Replication: %s; %s candidate copies required (%s), ack timeout %ss" % (
        info["mode"], info["min_acks"], "default: majority" if setting is None else "set",
        info["ack_timeout"]))
    if info.get("fenced"):
        ctx.out("Fenced: %s" % info["fenced"])
    ctx.out("Nodes:")
    for node in info["nodes"]:
        ctx.out("  %s %s %s" % (node["name"], node["address"], node["role"]))
    return EXIT_SUCCESS


def cmd_cluster_verify(ctx, args):
    """Print each candidate's differences from the master; exit 0, 1 or 5."""
    report = ctx.client.verify_cluster()
    codes = [_verify_code(result) for result in report.values()]
    if args.json:
        ctx.out(serializer.dumps(report))
    else:
        if not report:
            ctx.out("No master candidates: nothing to verify.")
        for name in sorted(report):
            ctx.out("%s: %s%s" % (name, describe_verification(report[name]),
                                  _clock_note(report[name].get("clock_skew"))))
    return exitcodes.worst(codes)


def _clock_note(skew):
    """What cluster verify adds for a candidate whose clock is off the master's."""
    if not membership.clock_off(skew):
        return ""
    return "; its clock is %.0fs %s the master's (set it right: NTP)" % (
        abs(skew), "ahead of" if skew > 0 else "behind")


def _verify_code(result):
    state = result.get("state")
    if state == "unreachable" or (state is None and result.get("error")):
        return EXIT_UNREACHABLE
    if state not in (None, "in sync"):
        return EXIT_FAILURE
    return EXIT_FAILURE if any(result.get(kind) for kind in DIFFERENCES) else EXIT_SUCCESS


def describe_verification(result):
    """One line for one candidate of a VerifyCluster report."""
    state = result.get("state")
    if state == "unreachable" or (state is None and result.get("error")):
        return "unreachable: %s" % result["error"]
    if state == "stale configuration":
        return ("stale configuration: it answers with epoch %s, configuration version %s; "
                "the master is sending it the current one" % (
                    result.get("epoch"), result.get("config_version")))
    differences = _differences(result)
    if state == "resyncing":
        detail = "; ".join(p for p in [differences, result.get("error")] if p)
        return "resyncing: the master is bringing its copy in sync" + (
            " (%s)" % detail if detail else "")
    if state == "error":
        return "error: it answers, but its copy cannot be compared: %s" % result.get("error")
    return differences or "in sync (position %s)" % format_position(result.get("position"))


def _differences(result):
    """The differences of a report line as text ("" if none)."""
    parts = []
    for kind in DIFFERENCES:
        ids = result.get(kind) or []
        if ids:
            shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
            more = ", ..." if len(ids) > SHOWN_IDS else ""
            parts.append("%d %s (%s%s)" % (len(ids), kind.replace("_", " "), shown, more))
    return "; ".join(parts)


def format_position(position):
    """[epoch, session, seq] as "epoch/session/seq", "-" if none."""
    if not isinstance(position, list) or not position:
        return "-"
    return "/".join(str(v) for v in position)


# node

def cmd_node_init(ctx, args):
    """Create this node's key and CSR; print the CSR's path and the next step."""
    state_dir = _state_dir(args)
    csr_path = clusterops().init_node(state_dir, args.name)
    if args.json:
        return _print_json(ctx, {"name": args.name, "state_dir": state_dir, "csr": csr_path})
    ctx.out("Node %s prepared in %s; its certificate request is %s" % (
        args.name, state_dir, csr_path))
    ctx.out("Next: copy %s to the master and run there:" % csr_path)
    ctx.out("  jqctl node add %s --address HOST:PORT [--candidate] --csr %s" % (
        args.name, os.path.basename(csr_path)))
    return EXIT_SUCCESS


def cmd_node_add(ctx, args):
    """Add a node through jq-masterd and write its bundle; print the next step."""
    try:
        with open(args.csr, encoding="ascii") as stream:
            csr_pem = stream.read()
    except (OSError, UnicodeDecodeError) as err:
        raise CommandError("cannot read %s: %s" % (args.csr, getattr(err, "strerror", None)
                                                   or err)) from None
    bundle = ctx.client.add_node(args.name, args.address, args.candidate, csr_pem)
    path = args.bundle or "%s.bundle" % args.name
    clusterops().write_bundle(path, bundle)
    if args.json:
        return _print_json(ctx, {"name": args.name, "address": args.address,
                                 "candidate": bool(args.candidate), "bundle": path})
    ctx.out("Node %s (%s) added as %s; bundle written to %s" % (
        args.name, args.address, "master candidate" if args.candidate else "plain node", path))
    ctx.out("Next: copy %s to %s and run there:" % (path, args.name))
    ctx.out("  jqctl node join --bundle %s --state-dir DIR" % os.path.basename(path))
    ctx.out("  jq-noded --state-dir DIR --listen %s" % args.address)
    return EXIT_SUCCESS


def cmd_node_join(ctx, args):
    """Install a bundle on this node; print the next step."""
    state_dir = _state_dir(args)
    try:
        bundle = clusterops().read_bundle(args.bundle)
    except OSError as err:
        raise CommandError("cannot read %s: %s" % (args.bundle, err.strerror or err)) from None
    config = clusterops().join_node(state_dir, bundle)
    name = _own_name(state_dir)
    role = config.role(name) if name else "node"
    if args.json:
        return _print_json(ctx, {"name": name, "role": role, "state_dir": state_dir,
                                 "config": config.to_dict()})
    ctx.out("Joined cluster %s%s as %s; its master is %s (%s), epoch %d." % (
        config.name, " (%s)" % name if name else "", role, config.master,
        config.address(config.master), config.epoch))
    address = config.address(name) if name in config.nodes else "HOST:PORT"
    ctx.out("Next: jq-noded --state-dir %s --listen %s" % (state_dir, address))
    return EXIT_SUCCESS


def cmd_node_list(ctx, args):
    """Print the nodes as a table (or JSON); without jq-masterd on this node, this node's
    last known configuration and which nodes answer now."""
    try:
        rows = ctx.client.list_nodes()
    except (errors.NoMasterError, errors.AccessDeniedError) as err:
        rows = _local_node_rows(ctx, args, err)
    if args.json:
        ctx.out(serializer.dumps(rows))
        return EXIT_SUCCESS
    cells = [[_node_cell(key, row.get(key), row) for key, _ in NODE_COLUMNS] for row in rows]
    for line in output.table_lines([title for _, title in NODE_COLUMNS], cells):
        ctx.out(line)
    for row in rows:  # why a node does not answer (a refused certificate names the clock)
        if row.get("reachable") is False and row.get("last_error"):
            ctx.out("%s: %s" % (row.get("name"), row["last_error"]))
        if row.get("degraded"):
            ctx.out("%s: degraded: %s" % (row.get("name"), row["degraded"]))
    return EXIT_SUCCESS


def _local_node_rows(ctx, args, err):
    """The rows of node list from this node's state directory (jq-masterd unreachable)."""
    state_dir = cluster_state_dir(ctx.socket_path, getattr(args, "global_state_dir", None))
    if state_dir is None:
        raise err
    config, rows = clusterops().node_view(state_dir)
    ctx.warn("jq-masterd does not answer here (%s); showing the configuration this node "
             "knows (version %s, epoch %s, master %s, from %s) and which nodes answer now" % (
                 errors.error_message(err), config.version, config.epoch, config.master,
                 membership.config_path(state_dir)))
    return rows


def _node_cell(key, value, row=None):
    if key == "position":
        return format_position(value)
    if key == "state":
        row = row or {}
        state = {True: "ok", False: "NOPING", None: "-"}[row.get("heartbeat")]
        return ("offline" if row.get("offline") else "drained" if row.get("drained")
                else "degraded" if state == "ok" and row.get("degraded") else state)
    if key == "tags":
        return ",".join(value or []) or "-"
    if key == "last_heartbeat":
        skew = (row or {}).get("clock_skew")
        note = " (clock %+.0fs)" % skew if membership.clock_off(skew) else ""
        return (output.format_time(value) if value else "-") + note
    if key == "slots":
        row = row or {}
        return "-" if value is None else "%s/%s" % (row.get("slots_used"), value)
    if key == "running_jobs":
        return ",".join(str(v) for v in value or []) or "-"
    if key == "load":  # the 1-minute load average over the CPUs: 0.52/2
        cpus = (row or {}).get("cpus")
        return "-" if value is None else "%.2f%s" % (value, "/%d" % cpus if cpus else "")
    if key == "mem_available":  # what is free (available) of the memory: 1.2G/7.8G
        total = (row or {}).get("mem_total")
        return "-" if value is None or total is None else "%s/%s" % (
            ptypes.human_bytes(value, True), ptypes.human_bytes(total, True))
    if key == "mem_held":  # what memory_max hold of the memory for commands: 4.0G/7.0G
        total = commandjob.memory_for_commands(row)
        return "-" if value is None or total is None else "%s/%s" % (
            ptypes.human_bytes(value, True), ptypes.human_bytes(total, True))
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    return str(value)


def cmd_node_remove(ctx, args):
    """Remove a node through jq-masterd."""
    result = ctx.client.remove_node(args.name)
    if args.json:
        return _print_json(ctx, result)
    ctx.out("Node %s removed; configuration version %s" % (args.name, result.get("version")))
    _warn_unreachable(ctx, result)
    return EXIT_SUCCESS


def cmd_node_modify(ctx, args):
    """Change a node (candidate, tags, drain, offline) through jq-masterd."""
    changes = {}
    if args.tags is not None:
        changes["tags"] = [tag.strip() for tag in args.tags.split(",") if tag.strip()]
    for option, key in (("drain", "drained"), ("offline", "offline")):
        if getattr(args, option) is not None:
            changes[key] = getattr(args, option) == "yes"
    if args.candidate is None and not changes:
        raise CommandError("node modify needs --candidate, --tags, --drain or --offline")
    candidate = None if args.candidate is None else args.candidate == "yes"
    result = ctx.client.modify_node(args.name, candidate, changes or None)
    if args.json:
        return _print_json(ctx, result)
    what = _change_text(candidate, changes)
    if result.get("changed") is False:
        ctx.out("Node %s is already %s" % (args.name, what))
        return EXIT_SUCCESS
    ctx.out("Node %s is now %s; configuration version %s" % (args.name, what,
                                                               result.get("version")))
    _warn_unreachable(ctx, result)
    return EXIT_SUCCESS


def _change_text(candidate, changes):
    words = []
    if candidate is not None:
        words.append("a master candidate" if candidate else "a plain node")
    if "tags" in changes:
        words.append("tagged %s" % (",".join(changes["tags"]) or "with no tag"))
    if "drained" in changes:
        words.append("drained" if changes["drained"] else "not drained")
    if "offline" in changes:
        words.append("offline" if changes["offline"] else "online")
    return ", ".join(words)


def _warn_unreachable(ctx, result):
    for name, message in sorted((result.get("unreachable") or {}).items()):
        ctx.warn("node %s did not get the new configuration yet (the master sends it again "
                 "until it takes it): %s" % (name, message))


# master-failover

def cmd_master_failover(ctx, args):
    """Make this node the master (asking first unless --yes); with --start, run the daemon."""
    state_dir = _state_dir(args)
    clusterops().check_failover(state_dir)
    if not args.yes and not ctx.interactive():
        raise CommandError("master-failover needs a confirmation: run it on a terminal or "
                           "give --yes")
    name = _own_name(state_dir) or "this node"
    if not args.yes and not args.no_voting and not ctx.ask(
            "Make %s the master of the cluster (by election)?" % name):
        ctx.warn("master failover aborted")
        return exitcodes.EXIT_INTERRUPTED
    declined = []

    def confirm(message):
        if args.yes:
            return True
        if not ctx.ask(" ".join(str(message).split())):
            declined.append(message)
            return False
        return True

    try:
        result = clusterops().master_failover(state_dir, voting=not args.no_voting,
                                              timeout=args.failover_timeout, confirm=confirm)
    except errors.OpPrereqError:
        if declined:
            ctx.warn("master failover aborted")
            return exitcodes.EXIT_INTERRUPTED
        raise
    if args.json:
        if args.start:
            start_masterd(_Stderr(ctx), state_dir)
        return _print_json(ctx, dict(result, started=bool(args.start)))
    _print_failover(ctx, name, result)
    if args.start:
        start_masterd(ctx, state_dir)
    else:
        ctx.out("Next: jq-masterd --state-dir %s" % state_dir)
    return EXIT_SUCCESS


class _Stderr:
    """A command context whose lines go to standard error (beside --json output)."""

    def __init__(self, ctx):
        self._ctx = ctx
        self.sleep = ctx.sleep

    def out(self, text="", flush=False):
        print(text, file=self._ctx.stderr, flush=flush)


def _print_failover(ctx, name, result):
    ctx.out("%s is now the master, epoch %s (previous master: %s)." % (
        name, result.get("epoch"), result.get("previous_master") or "-"))
    for key, title in (("votes", "Votes"), ("refused", "Refused"),
                       ("unreachable", "Unreachable"), ("update_failed", "Not updated")):
        ctx.out("%s: %s" % (title, _names(result.get(key))))
    if "stepped_down" in result:
        ctx.out("Previous master told to step down: %s" % (
            "yes" if result["stepped_down"] else "no (it stops when it learns the new "
                                                  "epoch)"))


def _names(value):
    """Node names (a list, or a dict of name to reason) as text; "none" if empty."""
    if not value:
        return "none"
    if isinstance(value, dict):
        return ", ".join("%s (%s)" % (name, value[name]) for name in sorted(value))
    return ", ".join(str(name) for name in value)


def masterd_command(state_dir):
    """The command line starting jq-masterd on state_dir: the jq-masterd program installed
    beside this Python (so that the process is named jq-masterd), else this Python
    running the module (the daemon then names its process jq-masterd itself)."""
    script = os.path.join(os.path.dirname(sys.executable), MASTERD)
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script, "--state-dir", state_dir]
    return [sys.executable, "-m", "jqueue.daemon.masterd", "--state-dir", state_dir]


def systemd_runs_masterd_on(state_dir, run=subprocess.run):
    """Whether the jq-masterd systemd unit is installed and runs on state_dir."""
    if shutil.which("systemctl") is None:
        return False
    try:
        shown = run(["systemctl", "show", "--property=LoadState", "--property=ExecStart",
                     MASTERD_UNIT], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    properties = dict(line.partition("=")[::2] for line in shown.stdout.splitlines())
    if shown.returncode != 0 or properties.get("LoadState") != "loaded":
        return False
    words = properties.get("ExecStart", "").replace("=", " ").split()
    for index, word in enumerate(words[:-1]):
        if word == "--state-dir":
            return os.path.abspath(words[index + 1]) == os.path.abspath(state_dir)
    return False


def _start_unit(run=subprocess.run):
    """systemctl start jq-masterd.service; CommandError saying where to look if it fails."""
    try:
        done = run(["systemctl", "start", MASTERD_UNIT], capture_output=True, text=True,
                   timeout=START_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        raise CommandError("systemctl start %s failed: %s" % (MASTERD_UNIT, err),
                           EXIT_FAILURE) from None
    if done.returncode != 0:
        raise CommandError("systemctl start %s failed (status %s): %s; see 'systemctl status "
                           "%s'" % (MASTERD_UNIT, done.returncode,
                                    " ".join(done.stderr.split()) or "no message",
                                    MASTERD_UNIT), EXIT_FAILURE)


def spawn_masterd(state_dir):
    """Start jq-masterd detached (own session, output to run/jq-masterd.log); (Popen, log)."""
    run_dir = os.path.join(state_dir, "run")
    os.makedirs(run_dir, 0o750, exist_ok=True)
    log_path = os.path.join(run_dir, "jq-masterd.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(masterd_command(state_dir), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)
    return proc, log_path


def start_masterd(ctx, state_dir, timeout=START_TIMEOUT):
    """Start jq-masterd and wait until its socket answers; CommandError if it does not.

    Through systemd (systemctl start jq-masterd.service) where its unit is installed for
    state_dir, else spawned detached.
    """
    socket_path = os.path.join(state_dir, "run", "jqueue.sock")
    if systemd_runs_masterd_on(state_dir):
        _start_unit()
        _wait_answering(ctx, socket_path, timeout, "see 'systemctl status %s'" % MASTERD_UNIT)
        ctx.out("jq-masterd started by systemd (%s); it answers on %s" % (
            MASTERD_UNIT, socket_path))
        return
    proc, log_path = spawn_masterd(state_dir)
    waited = 0.0
    while True:
        status = proc.poll()
        if status is not None:
            raise CommandError("jq-masterd exited with status %s; see %s" % (status, log_path),
                               EXIT_FAILURE)
        if _answers(socket_path):
            ctx.out("jq-masterd started (pid %d, log %s); it answers on %s" % (
                proc.pid, log_path, socket_path))
            return
        if waited >= timeout:
            raise CommandError("jq-masterd (pid %d) did not answer within %gs; see %s" % (
                proc.pid, timeout, log_path), EXIT_UNREACHABLE)
        ctx.sleep(0.1)
        waited += 0.1


def _wait_answering(ctx, socket_path, timeout, hint):
    waited = 0.0
    while not _answers(socket_path):
        if waited >= timeout:
            raise CommandError("jq-masterd did not answer on %s within %gs; %s" % (
                socket_path, timeout, hint), EXIT_UNREACHABLE)
        ctx.sleep(0.1)
        waited += 0.1


def _answers(socket_path):
    try:
        with luxi_client.Client(socket_path, connect_timeout=1, timeout=5) as client:
            client.query_config_values([constants.CONFIG_MASTER_NODE])
        return True
    except errors.GenericError:
        return False


# Who is the master

def _own_name(state_dir):
    try:
        return membership.NodeState.load(state_dir).name
    except Exception:  # noqa: BLE001 - only for messages
        return None


def cluster_state_dir(socket_path, state_dir=None):
    """The state directory of a cluster node this jqctl runs for, or None.

    Tried in order: state_dir (jqctl --state-dir), the directory of the socket's run/
    directory, $JQ_STATE_DIR, the default; the first holding cluster.json wins.
    """
    socket_path = socket_path or luxi_client.default_socket_path()
    tries = [state_dir] if state_dir else []
    run_dir = os.path.dirname(os.path.abspath(socket_path))
    if os.path.basename(run_dir) == "run":
        tries.append(os.path.dirname(run_dir))
    tries.append(default_state_dir())
    for path in tries:
        if os.path.isfile(os.path.join(path, membership.CLUSTER_FILE)):
            return path
    return None


def not_master_message(socket_path, error, state_dir=None):
    """For an unreachable daemon on a cluster node: who the master is (None otherwise).

    Never raises: anything missing or broken gives None (the caller keeps its message).
    """
    found = _master_of(socket_path, state_dir)
    if found is None:
        return None
    name, master, address, epoch = found
    if master == (name or "unknown"):
        return "this node (%s) is the master (epoch %s) but jq-masterd does not answer: %s" % (
            name, epoch, errors.error_message(error))
    return _elsewhere_message(name or "unknown", master, address, epoch)


def master_elsewhere(socket_path, state_dir=None):
    """For a daemon lost while jqctl follows something (a log, jobs) on a cluster node:
    the message naming the master if it is another node (a failover, or jqctl run on a
    candidate), whose daemon this node's socket never reaches; None if following may go
    on: not a cluster node, this node is the master (its jq-masterd restarting), or
    nothing can be told. Never raises."""
    found = _master_of(socket_path, state_dir)
    if found is None or found[0] is None or found[1] == found[0]:
        return None
    return _elsewhere_message(*found)


def _master_of(socket_path, state_dir):
    """(this node's name or None, master, address, epoch) of the cluster node jqctl runs
    for (admin.learn_master: its files, then what the nodes it reaches know); None if it
    is not a cluster node or nothing can be learnt."""
    try:
        state_dir = cluster_state_dir(socket_path, state_dir)
        if state_dir is None:
            return None
        return (_own_name(state_dir),) + tuple(clusterops().learn_master(state_dir))
    except Exception:  # noqa: BLE001 - a message, never a traceback
        return None


def _elsewhere_message(name, master, address, epoch):
    return "this node (%s) is not the master: %s (%s) is (epoch %s)" % (
        name, master, address, epoch)
