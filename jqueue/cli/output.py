"""Output of jqctl: human formatting of field values, aligned tables, separated text, JSON.

Timestamps are [sec, usec] on the wire and local ISO time for people. Lists are joined
by commas. Cells without a value (a Query status other than RS_NORMAL) show a label in
tables and null in JSON.
"""

import itertools
import time

from jqueue import constants, ptypes, serializer, text

#: Fields holding one timestamp ([sec, usec], or epoch seconds for the later ones), and
#: fields holding one timestamp per opcode.
TIMESTAMP_FIELDS = frozenset(["received_ts", "start_ts", "end_ts", "not_before", "retry_at"])
#: Fields of memory sizes, shown as sizes ("69.3M"; --json gives the bytes).
SIZE_FIELDS = frozenset(["memory_max", "max_rss", "rss"])
TIMESTAMP_LIST_FIELDS = frozenset(["opstart", "opexec", "opend"])
NUMERIC_KINDS = frozenset(["number"])


class Unavailable:
    """A Query cell without a value; ``status`` is the RS_* code the daemon gave."""

    LABELS = {constants.RS_UNKNOWN: "(unknown)", constants.RS_NODATA: "(nodata)",
              constants.RS_UNAVAIL: "(unavail)", constants.RS_OFFLINE: "(offline)"}

    def __init__(self, status):
        self.status = status

    def __str__(self):
        return self.LABELS.get(self.status, "(status %s)" % self.status)

    def __eq__(self, other):
        return isinstance(other, Unavailable) and other.status == self.status

    __hash__ = None


def format_time(ts, precise=False):
    """A [sec, usec] timestamp, or epoch seconds, as local time "2026-11-22 14:03:05"
    (".123456" if precise); one past what the calendar holds as its number."""
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        ts = [int(ts // 1), int(round(ts % 1 * 1e6)) % 1000000] if abs(ts) < 1e15 else [ts, 0]
    if not isinstance(ts, (list, tuple)) or len(ts) != 2:
        return "-" if ts is None else str(ts)
    try:
        shown = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts[0]))
    except (OverflowError, OSError, ValueError):
        return "%g" % ts[0]
    return "%s.%06d" % (shown, ts[1]) if precise else shown


def format_scalar(value):
    """One value for people: "-" for null, Y/N for booleans, compact JSON for structures."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, (str, int, float, Unavailable)):
        return str(value)
    return serializer.dumps(value)


def format_value(name, value):
    """The value of field name for people (timestamps as local time, lists joined by ",")."""
    if type(value) is str:  # the most common cell first: a listing has 10^5 rows of them
        return value
    if isinstance(value, Unavailable):
        return str(value)
    if name in TIMESTAMP_FIELDS:
        return format_time(value)
    if name in SIZE_FIELDS and type(value) is int:
        return ptypes.human_bytes(value, compact=True)
    if name in TIMESTAMP_LIST_FIELDS and isinstance(value, list):
        return ",".join(format_time(ts) for ts in value)
    if isinstance(value, list):
        if all(type(item) is str for item in value):  # e.g. each job's opcode summaries
            return ",".join(value)
        return ",".join(format_scalar(item) for item in value)
    return format_scalar(value)


def format_column(name, values):
    """format_value of each of a column's values; whole columns of the common kinds (text,
    integers, lists of text: a listing's id, status and summary) at once."""
    kinds = set(map(type, values))
    if kinds <= {str}:
        return list(values)
    if kinds <= {int} and name not in SIZE_FIELDS:
        return list(map(str, values))
    if (kinds == {list} and name not in TIMESTAMP_FIELDS and name not in TIMESTAMP_LIST_FIELDS
            and set(map(type, itertools.chain.from_iterable(values))) <= {str}):
        return list(map(",".join, values))
    return [format_value(name, value) for value in values]


def shown_priority(status, priority, op_priorities):
    """The priority people see for a job: the daemon's while it is pending or running;
    once it is finished (when the daemon's says the default, as Ganeti's does), the
    priority it ran at, the highest of its opcodes'."""
    if status in constants.JOBS_FINALIZED and op_priorities:
        return min(op_priorities)
    return priority


def priority_text(priority):
    """A priority with its name when it has one: "-10 (high)", "3"."""
    names = {value: name for name, value in constants.OP_PRIO_NAMES.items()}
    return "%s (%s)" % (priority, names[priority]) if priority in names else str(priority)


def result_cell(status, result):
    """One opcode's result in a table cell: its error as "Class: message", else JSON."""
    if status in (constants.OP_STATUS_ERROR, constants.OP_STATUS_CANCELED):
        if (isinstance(result, list) and len(result) == 2 and isinstance(result[0], str)
                and isinstance(result[1], list)):
            return "%s: %s" % (result[0], " ".join(str(arg) for arg in result[1]))
        if isinstance(result, str):
            return result
    return "-" if result is None else serializer.dumps(result)


def log_cell(entries):
    """One opcode's log entries in a table cell: their messages, joined by "; "."""
    return "; ".join(entry[3] if isinstance(entry[3], str) else serializer.dumps(entry[3])
                     for entry in entries)


def json_value(value):
    """The raw value for --json (null for a cell without a value)."""
    return None if isinstance(value, Unavailable) else value


def table_lines(headers, rows, numeric=(), separator=None):
    """Lines of a table of strings: aligned columns, or joined by separator if given.

    headers may be None (no header line); numeric holds the indexes of right-aligned
    columns. Aligned lines carry no trailing blanks.
    """
    width = len(headers) if headers is not None else len(rows[0]) if rows else 0
    return column_lines(headers, list(zip(*rows)) if rows else [()] * width, numeric,
                        separator)


def column_lines(headers, columns, numeric=(), separator=None):
    """table_lines of a table given by its columns (lists of strings, of one length)."""
    columns = [column if text.LINE_CONTROLS.search("".join(column)) is None
               else list(map(text.printable, column)) for column in columns]
    if headers is not None:
        columns = [[title, *column] for title, column in zip(headers, columns)]
    if separator is not None:
        return list(map(separator.join, zip(*columns)))
    padded = []
    for index, column in enumerate(columns):
        if index == len(columns) - 1 and index not in numeric:
            padded.append(column)  # the line's end is stripped of blanks anyway
            continue
        width = max(map(len, column), default=0)
        pad = str.rjust if index in numeric else str.ljust
        padded.append(list(map(pad, column, itertools.repeat(width))))
    return [line.rstrip() for line in map(" ".join, zip(*padded))]


def json_records(names, rows):
    """Compact JSON text of a list of {field: raw value} objects."""
    return serializer.dumps([
        {name: json_value(value) for name, value in zip(names, row)} for row in rows])


def print_records(ctx, columns, rows, args):
    """Print rows as --json, --separator or an aligned table, as args ask.

    columns is a list of (name, title, kind); rows hold raw values in that order.
    """
    names = [name for name, _, _ in columns]
    if getattr(args, "json", False):
        ctx.out(json_records(names, rows))
        return
    headers = None if args.no_headers else [title for _, title, _ in columns]
    values = list(zip(*rows)) if rows else [()] * len(names)
    cells = [format_column(name, column) for name, column in zip(names, values)]
    numeric = {i for i, (_, _, kind) in enumerate(columns) if kind in NUMERIC_KINDS}
    lines = column_lines(headers, cells, numeric, args.separator)
    if lines:  # one write: a listing has 10^5 lines
        ctx.out("\n".join(lines))


def log_line(entry):
    """A log entry [serial, [sec, usec], type, message] as "<precise local time> message"."""
    message = entry[3] if isinstance(entry[3], str) else serializer.dumps(entry[3])
    return "%s %s" % (format_time(entry[1], precise=True), message)
