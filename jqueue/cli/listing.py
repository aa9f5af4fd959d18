"""Listing commands: list (alias query) and list-fields.

Jobs named by id are read with QueryJobs, which also finds archived jobs, and so are all
live jobs (the answer the generic Query would give, without its per-cell wrappers); those a
status selector or a group picks are read with Query and a qlang filter.
"""

import operator

from jqueue import constants, query, serializer
from jqueue.cli import output, parsing, selection
from jqueue.cli.exitcodes import EXIT_NOT_FOUND, EXIT_SUCCESS, CommandError

DEFAULT_FIELDS = ("id", "status", "summary")
#: Columns of list-fields: (name, title, kind).
FIELD_COLUMNS = [("name", "Name", "text"), ("title", "Title", "text"),
                 ("kind", "Kind", "text"), ("doc", "Description", "text")]
#: Hidden fields read after the shown ones when jobs are named by id.
_ID_EXTRA_FIELDS = ["status", "archived"]


def register(commands):
    """Add list (alias query) and list-fields to the subparsers."""
    parser = commands.add_parser(
        "list", aliases=["query"], help="list jobs",
        description="List jobs: the given ones, or every live job (the selectors narrow "
                    "them by status and combine with 'or').")
    parser.add_argument("ids", nargs="*", type=parsing.job_id, metavar="ID", help="job id")
    parser.add_argument("-o", "--output", metavar="[+]FIELDS",
                        help="comma-separated fields to show (default: %s); with a leading "
                             "+, fields added to the default ones" % ",".join(DEFAULT_FIELDS))
    add_format_options(parser)
    selection.add_selector_options(parser, selection.LIST_SELECTORS)
    parser.add_argument("--archived", action="store_true",
                        help="also show archived jobs (needs job IDs: the archive is looked "
                             "up by id)")
    parser.add_argument("--parent", metavar="ID|PATH",
                        help="only the jobs directly in this group (its id, its title, or "
                             "the path of titles from the root, render|shot1)")
    parser.set_defaults(func=cmd_list)
    parser = commands.add_parser("list-fields", help="describe the job fields",
                                 description="Describe the job fields: name, title, kind.")
    parser.add_argument("fields", nargs="*", metavar="FIELD", help="field name (default: all)")
    add_format_options(parser)
    parser.set_defaults(func=cmd_list_fields)


def add_format_options(parser):
    """Add --no-headers, --separator and --json."""
    parser.add_argument("--no-headers", action="store_true", help="omit the header line")
    parser.add_argument("--separator", metavar="SEP",
                        help="separate fields with SEP instead of aligning columns")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {field: raw value} objects")


def output_fields(spec):
    """The field names of -o: "f1,f2" replaces the defaults, "+f1,f2" adds to them."""
    if spec is None:
        return list(DEFAULT_FIELDS)
    append = spec.startswith("+")
    names = list(DEFAULT_FIELDS) if append else []
    for name in (spec[1:] if append else spec).split(","):
        name = name.strip()
        if not name:
            raise CommandError("invalid field list %r: empty field name" % spec)
        if name not in names:
            names.append(name)
    check_known(names)
    return names


def check_known(names):
    """Raise CommandError (not found) if a name is not a job field."""
    unknown = [name for name in names if name not in query.FIELDS_BY_NAME]
    if unknown:
        raise CommandError("unknown field(s) %s (see 'jqctl list-fields')" % ", ".join(
            unknown), EXIT_NOT_FOUND)


def local_columns(names):
    """(name, title, kind) of fields, from the library's field table."""
    return [(name, query.FIELDS_BY_NAME[name].title, query.FIELDS_BY_NAME[name].kind)
            for name in names]


#: Fields shown readably in tables, and the hidden fields that needs.
_READABLE = {"opresult": ["opstatus"], "oplog": [], "priority": ["status", "oppriority"]}


def cmd_list(ctx, args):
    """Print the jobs as a table, separated text or JSON."""
    with serializer.paused_collection():  # 10^5 rows: see paused_collection
        return _list(ctx, args)


def _list(ctx, args):
    fields = output_fields(args.output)
    statuses = selection.selected_statuses(args)
    fetch = list(fields)
    if not args.json:
        for name in fields:
            fetch += [h for h in _READABLE.get(name, ()) if h not in fetch]
    parent = None
    if args.parent is not None:
        if args.ids:
            raise CommandError("give job IDs or --parent, not both")
        parent = ctx.client.resolve_job(int(args.parent) if args.parent.isascii()
                                        and args.parent.isdigit() else args.parent)
    if args.ids:
        rows, code = rows_by_id(ctx, args.ids, fetch, statuses, args.archived)
        columns = local_columns(fields)
    elif args.archived:
        raise CommandError("--archived needs job IDs: the archive is looked up by id only")
    elif statuses or parent is not None:
        columns, rows = rows_by_query(ctx.client, fetch, statuses, parent)
        columns = columns[:len(fields)]
        code = EXIT_SUCCESS
    else:
        rows = live_rows(ctx.client, fetch)
        columns = local_columns(fields)
        code = EXIT_SUCCESS
    if not args.json and _READABLE.keys() & set(fields):  # else the values read as they are
        rows = [readable_row(fields, fetch, row) for row in rows]
    output.print_records(ctx, columns, [row[:len(fields)] for row in rows], args)
    return code


def readable_row(fields, fetch, row):
    """A row's values for people: results and logs as text, the priority a job ran at."""
    values = dict(zip(fetch, row))
    shown = []
    for name in fields:
        value = values[name]
        if not isinstance(value, output.Unavailable) and not any(
                isinstance(values.get(h), output.Unavailable) for h in _READABLE.get(name, ())):
            value = _readable(name, value, values)
        shown.append(value)
    return shown


def _readable(name, value, values):
    if name == "opresult":
        return ",".join(output.result_cell(status, result)
                        for status, result in zip(values["opstatus"], value))
    if name == "oplog":
        return ",".join(output.log_cell(entries) or "-" for entries in value)
    if name == "priority":
        return output.shown_priority(values["status"], value, values["oppriority"])
    return value


def rows_by_id(ctx, job_ids, fields, statuses, archived):
    """Rows of the named jobs through QueryJobs; report the missing ones on stderr."""
    answer = ctx.client.query_jobs(job_ids, fields + _ID_EXTRA_FIELDS)
    rows, code = [], EXIT_SUCCESS
    for job_id, row in zip(job_ids, answer):
        if row is None:
            ctx.warn("job %s not found" % job_id)
            code = EXIT_NOT_FOUND
        elif row[-1] and not archived:
            ctx.warn("job %s is archived (add --archived to show it)" % job_id)
            code = EXIT_NOT_FOUND
        elif not statuses or row[-2] in statuses:
            rows.append(row[:len(fields)])
    return rows, code


def live_rows(client, fields):
    """Rows of every live job through QueryJobs, in id order (as Query lists them): a
    listing of 10^5 jobs without Query's [status, value] pair per cell has a third fewer
    values to build, encode, send and parse. A row may end with an extra id."""
    names = fields if "id" in fields else fields + ["id"]
    rows = client.query_jobs([], names)
    rows.sort(key=operator.itemgetter(names.index("id")))
    return rows


def rows_by_query(client, fields, statuses, parent=None):
    """(columns, rows) of the live jobs through Query, filtered by status and group if
    asked."""
    terms = [selection.status_filter(statuses)] if statuses else []
    if parent is not None:
        terms.append(["=", "parent", parent])
    qfilter = terms[0] if len(terms) == 1 else (["&"] + terms if terms else None)
    result = client.query("job", fields, qfilter)
    columns = [(f["name"], f["title"], f["kind"]) for f in result["fields"]]
    rows = [[value if status == constants.RS_NORMAL else output.Unavailable(status)
             for status, value in row] for row in result["data"]]
    return columns, rows


def cmd_list_fields(ctx, args):
    """Print name, title, kind and description of the job fields the daemon knows."""
    check_known(args.fields)
    definitions = ctx.client.query_fields("job", args.fields or None)["fields"]
    unknown = [d["name"] for d in definitions if d.get("kind") == "unknown"]
    if unknown:
        raise CommandError("unknown field(s) %s" % ", ".join(unknown), EXIT_NOT_FOUND)
    rows = [[d.get(name) for name, _, _ in FIELD_COLUMNS] for d in definitions]
    output.print_records(ctx, FIELD_COLUMNS, rows, args)
    return EXIT_SUCCESS
