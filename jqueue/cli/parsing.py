"""Parsers of jqctl's command-line values: job ids, priorities, ages, dependencies, params.

The argparse ``type=`` functions raise argparse.ArgumentTypeError, so that argparse reports
a bad value as a usage error naming the option.
"""

import argparse
import datetime
import re

from jqueue import commandjob, constants, errors, ptypes, serializer
from jqueue.cli.exitcodes import CommandError

_AGE = re.compile(r"\A([0-9]+(?:\.[0-9]+)?)([smhdw]?)\Z")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: The age meaning "every finalized job, whatever its age" (AutoArchiveJobs' -1).
AGE_ALL = -1


def job_id(text):
    """A job id: a non-negative decimal integer."""
    try:
        return ptypes.parse_job_id(text)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid job id %r" % text) from None


def job_reference(text):
    """A job id, or a group's title or path of titles from the root (render|shot1)."""
    if text.isascii() and text.isdigit():
        return job_id(text)
    if not text.strip("| "):
        raise argparse.ArgumentTypeError("invalid job id or group path %r" % text)
    return text


def resolve_references(client, references):
    """The job ids of job_reference's values, a group's title or path asked of the daemon
    (JobNotFound if none matches)."""
    return [client.resolve_job(ref) if isinstance(ref, str) else ref for ref in references]


def priority_value(text):
    """A priority: high, normal, low or an integer from -20 to 19; ValueError otherwise."""
    if text in constants.OP_PRIO_NAMES:
        return constants.OP_PRIO_NAMES[text]
    return ptypes.Priority.check(ptypes.parse_int(text))


def priority(text):
    """A priority: high, normal, low or an integer from -20 to 19."""
    try:
        return priority_value(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "invalid priority %r: use high, normal, low or an integer from %d to %d" % (
                text, constants.OP_PRIO_HIGHEST, constants.OP_PRIO_LOWEST)) from None


def age(text):
    """An age like 30s, 30m, 6h, 1d, 2w or plain seconds, in seconds; "all" is AGE_ALL."""
    if text == "all":
        return AGE_ALL
    match = _AGE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            "invalid age %r: use all, seconds, or a number with s, m, h, d or w" % text)
    seconds = float(match.group(1)) * _AGE_UNITS[match.group(2)]
    return int(seconds) if seconds.is_integer() else seconds


def count(text):
    """A count or serial: an integer >= 0 written plainly (no spaces, _ or other scripts'
    digits)."""
    try:
        value = ptypes.parse_int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("invalid number %r: use an integer >= 0" % text)
    return value


def seconds(text):
    """A number of seconds >= 0 written plainly (30, 2.5)."""
    try:
        value = ptypes.parse_number(text)
    except ValueError:
        value = -1
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError("invalid duration %r: use seconds >= 0" % text)
    return value


def memory_size(text):
    """memory_max from a size: bytes, or a number with K, M, G or T (units of 1024), as the
    opcode's parameter takes it (commandjob.MemoryMax: one rule for both)."""
    try:
        return commandjob.MemoryMax.check(text)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid size %r: use bytes, or a number with K, M, "
                                         "G or T (0, or at least 1M)" % text) from None


def dependency(text):
    """A dependency ID[:STATUS,...] as [job id, [statuses]] (no statuses: any final one)."""
    id_text, _, status_text = text.partition(":")
    statuses = [s for s in status_text.split(",") if s] if status_text else []
    unknown = [s for s in statuses if s not in constants.JOBS_FINALIZED]
    if unknown:
        raise argparse.ArgumentTypeError("invalid dependency %r: %s is not one of %s" % (
            text, unknown[0], ", ".join(sorted(constants.JOBS_FINALIZED))))
    try:
        return [ptypes.parse_job_id(id_text), statuses]
    except ValueError:
        raise argparse.ArgumentTypeError("invalid dependency %r: bad job id" % text) from None


def param_value(text):
    """A parameter value: its JSON meaning when it parses as JSON, else the text itself."""
    try:
        return serializer.loads(text)
    except errors.ParseError:
        return text


def params(items):
    """Turn KEY=VALUE words into a dict of opcode parameters; raise CommandError if bad."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError("invalid parameter %r: expected KEY=VALUE" % item)
        if key == "OP_ID" or key in result:
            raise CommandError("parameter %r given twice (or OP_ID, which --op sets)" % key)
        result[key] = param_value(value)
    return result


def duration(text):
    """A duration like 30s, 30m, 6h, 1d, 2w or plain seconds, in seconds."""
    try:
        return ptypes.parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "invalid duration %r: use seconds, or a number with s, m, h, d or w" % text
        ) from None


def point_in_time(text):
    """A time as epoch seconds, or an ISO 8601 date and time (local time unless it has an
    offset or Z): 2026-12-03T18:00, 2026-12-03 18:00:00+01:00."""
    try:
        return ptypes.NonNegativeNumber.check(ptypes.parse_number(text))
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(
            "invalid time %r: use epoch seconds or an ISO 8601 date and time such as "
            "2026-12-03T18:00" % text) from None


def token(text):
    """An idempotency token: 1 to 200 printable characters."""
    if not text or not text.isprintable() or len(text) > 200:
        raise argparse.ArgumentTypeError("invalid token %r: use 1 to 200 printable "
                                         "characters" % text)
    return text


def submitting(submit, token):
    """submit(); a timeout says what became of the submission, which nobody knows: the
    daemon may have taken it."""
    try:
        return submit()
    except errors.RequestTimeoutError as err:
        again = ("submitting again with the same --token is safe: it prints the job taken, "
                 "if any" if token is not None else
                 "jqctl list shows it if it was (--token makes submitting again safe)")
        raise errors.RequestTimeoutError("%s: the submission may have been taken; %s" % (
            errors.error_message(err), again)) from None


def add_job_options(parser):
    """Add --parent, --in, --not-before, --notify and --notify-on (a job's group, start
    time and webhook) to a parser."""
    parser.add_argument("--parent", metavar="ID|PATH",
                        help="put the job in this group: its id, its title, or the path "
                             "of titles from the root (render|shot1)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--in", dest="start_in", type=duration, metavar="DURATION",
                       help="do not start the job before this much time passed (30m, 6h)")
    start.add_argument("--not-before", type=point_in_time, metavar="TIME",
                       help="do not start the job before TIME (epoch seconds, or ISO 8601 "
                            "such as 2026-12-03T18:00)")
    add_notify_options(parser)


def add_notify_options(parser):
    """Add --notify, --notify-to, --notify-on and --notify-after (who is told of a job's
    end) to a parser."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--notify", metavar="URL",
                        help="POST the job's final state to this http(s) URL (a JSON "
                             "object; once per final state, tried again for 20 minutes)")
    target.add_argument("--notify-to", metavar="ADDRESS",
                        help="tell the job's final state to this address through the "
                             "master's notify_command (an e-mail address, say)")
    parser.add_argument("--notify-on", metavar="STATE,...",
                        help="only for these final states (success, error, canceled; "
                             "default: all; none: only --notify-after's)")
    parser.add_argument("--notify-after", metavar="N", type=count,
                        help="a group's: tell once N jobs of its tree finished too")


def _notify_option(args):
    """The notify option args give (None if none)."""
    url, to = getattr(args, "notify", None), getattr(args, "notify_to", None)
    on, after = getattr(args, "notify_on", None), getattr(args, "notify_after", None)
    if url is None and to is None:
        if on is not None or after is not None:
            raise CommandError("--notify-%s goes with --notify or --notify-to" % (
                "on" if on is not None else "after"))
        return None
    if on is None and after is None and to is None:
        return url
    notify = {"url": url} if url is not None else {"to": to}
    if on is not None:
        notify["on"] = on if on.strip() != "none" else []
    if after is not None:
        notify["after"] = after
    return notify


def job_options(args):
    """The submit options (parent, not_before, start_in, notify) that args give (only
    those)."""
    parent = getattr(args, "parent", None)
    if parent is not None and parent.isascii() and parent.isdigit():
        parent = int(parent)
    notify = _notify_option(args)
    options = {"parent": parent, "not_before": getattr(args, "not_before", None),
               "start_in": getattr(args, "start_in", None), "notify": notify}
    return {key: value for key, value in options.items() if value is not None}
