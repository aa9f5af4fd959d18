"""Group commands: group (make one) and tree (show groups and the jobs in them).

A group is a job of one OP_GROUP opcode; jobs join it at submit (``--parent``). ``tree``
reads the live jobs with the generic Query and prints each group's tree, indented, with
its progress (finished over total of its leaves).
"""

from jqueue import constants, serializer, text
from jqueue.cli import parsing
from jqueue.cli.exitcodes import EXIT_SUCCESS

TREE_FIELDS = ["id", "parent", "status", "held", "total", "finished", "errors", "title",
               "summary"]
_INDENT = "  "


def register(commands):
    """Add group and tree to the subparsers."""
    parser = commands.add_parser(
        "group", help="make a group of jobs",
        description="Make a group (a job of one OP_GROUP opcode: no work of its own) and "
                    "print its id; jobs join it with --parent at submit or run.")
    parser.add_argument("title", metavar="TITLE",
                        help="its title (what --parent titles and paths match)")
    parser.add_argument("--parent", metavar="ID|PATH",
                        help="make it inside this group (its id, title or path)")
    parser.add_argument("--affinity", metavar="TAG[,...]",
                        help="tags every command job of its tree needs besides its own")
    parsing.add_notify_options(parser)  # the group's end: once every job of its tree ended
    parser.set_defaults(func=cmd_group)
    parser = commands.add_parser(
        "tree", help="show groups and the jobs in them",
        description="Show every group of live jobs as a tree (or the tree of one job: its "
                    "id, a group's title, or a path of titles from the root), with each "
                    "job's status and each group's finished and total jobs.")
    parser.add_argument("root", nargs="?", metavar="ID|PATH",
                        help="the job or group to start from (default: every group)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of nested objects (the fields %s and "
                             "\"children\")" % ",".join(TREE_FIELDS))
    parser.set_defaults(func=cmd_tree)


def cmd_group(ctx, args):
    """Submit the group job; print its id."""
    options = parsing.job_options(args)
    op = {"OP_ID": constants.OP_GROUP, "title": args.title}
    if args.affinity is not None:
        op["affinity"] = args.affinity
    job_id = ctx.client.submit_job([op], **options)
    ctx.out(str(job_id))
    return EXIT_SUCCESS


def cmd_tree(ctx, args):
    """Print the trees (or one tree) of the live jobs."""
    result = ctx.client.query("job", TREE_FIELDS, None)
    jobs = [dict(zip(TREE_FIELDS, [value for _, value in row])) for row in result["data"]]
    by_id = {job["id"]: job for job in jobs}
    children = {}
    for job in jobs:
        if job["parent"] in by_id:
            children.setdefault(job["parent"], []).append(job)
    if args.root is not None:
        roots = [by_id[ctx.client.resolve_job(_reference(args.root))]]
    else:
        roots = [job for job in jobs if job["parent"] not in by_id
                 and (job["total"] is not None or job["id"] in children)]
    if args.json:
        ctx.out(serializer.dumps([_nested(job, children) for job in roots]))
        return EXIT_SUCCESS
    ctx.out("%-8s %-9s %-9s %s" % ("ID", "Status", "Done", "Title"))
    for job in roots:
        for depth, node in _walk(job, children, 0):
            ctx.out(_line(node, depth))
    return EXIT_SUCCESS


def _reference(given):
    return int(given) if given.isascii() and given.isdigit() else given


def _walk(job, children, depth):
    yield depth, job
    for child in children.get(job["id"], ()):
        yield from _walk(child, children, depth + 1)


def _nested(job, children):
    return dict(job, children=[_nested(c, children) for c in children.get(job["id"], ())])


def _line(job, depth):
    done = "%d/%d" % (job["finished"], job["total"]) if job["total"] is not None else ""
    status = job["status"] + ("*" if job["held"] else "")
    title = job["title"] or (job["summary"] or [""])[0]
    return "%-8s %-9s %-9s %s%s" % (job["id"], status, done, _INDENT * depth,
                                   text.printable(title))
