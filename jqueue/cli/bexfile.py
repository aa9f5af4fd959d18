"""BEX job files for ``jqctl submit --bex FILE``.

BEX (mj.ucw.cz's Batch EXecutor) keeps a job as a mail-like text file: headers
``Keyword: value`` (case-sensitive keywords, one line each), an empty line, then the
body, the shell commands to run on the host. Its NOTES define ``ID`` and ``Subject``;
we read those and the headers of the contract (../shared/reference, BEX's row):

========== ==========================================================================
``ID``       the job's id, unique in the queue: the submission's idempotency token
             (``bex:ID``), so sending the same file twice queues it once
``Subject``  the title (``Title`` wins if both are given)
``Title``    the title
``Node``     the node to run on; several (comma or space separated) or a glob fan out:
             one job per node
``Affinity`` tags the node must have (comma separated)
``Dir``      the working directory (absolute)
``Env``      ``NAME=VALUE``; repeatable
``Timeout``  seconds of run time
``Retry``    tries in total (Coalition's ``retry``: 0 counts as 1)
``User``     the user to run as
``Parent``   the group the job belongs to (an id)
``Priority`` high, normal, low or an integer from -20 (highest) to 19
========== ==========================================================================

The body runs with ``/bin/sh -c``. Anything else is refused with the line it is on:
an unknown or repeated header, a line that is no header, a value of the wrong kind.
"""

import collections
import difflib
import re

from jqueue import constants, ptypes
from jqueue.cli import parsing

#: Headers read, in the order the documentation lists them.
HEADERS = ("ID", "Subject", "Title", "Node", "Affinity", "Dir", "Env", "Timeout", "Retry",
           "User", "Parent", "Priority")
#: Headers that may appear more than once.
REPEATABLE = frozenset(["Env"])
_HEADER = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):[ \t]*(.*?)[ \t]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NODE_LIST = re.compile(r"[,\s]+")


class BexFileError(ValueError):
    """A BEX job file that cannot be read (the message names the line)."""


#: A parsed job file: the OP_COMMAND_RUN opcode, the nodes to fan out to (None: one
#: job as the opcode says), the group id or None, the idempotency token or None.
BexJob = collections.namedtuple("BexJob", "op nodes parent token")


def parse(text, name="job file"):
    """The BexJob of the job file text (str); BexFileError if it is not one."""
    lines = text.split("\n")
    headers = {}
    env = {}
    body_start = None
    for number, line in enumerate(lines, 1):
        if line.rstrip("\r") == "":
            body_start = number
            break
        match = _HEADER.match(line.rstrip("\r"))
        if not match:
            raise BexFileError("%s, line %d: not a header (Keyword: value), and no empty line"
                               " before it to start the body: %r" % (name, number, line[:80]))
        keyword, value = match.groups()
        if keyword not in HEADERS:
            close = difflib.get_close_matches(keyword, HEADERS, 1)
            hint = (" (did you mean %s? keywords are case-sensitive)" % close[0]) if close else ""
            raise BexFileError("%s, line %d: unknown header %r%s; known: %s" % (
                name, number, keyword, hint, ", ".join(HEADERS)))
        if keyword in REPEATABLE:
            env_name, sep, env_value = value.partition("=")
            if not sep or not _ENV_NAME.match(env_name):
                raise BexFileError("%s, line %d: Env needs NAME=VALUE, not %r" % (
                    name, number, value))
            env[env_name] = env_value
            continue
        if keyword in headers:
            raise BexFileError("%s, line %d: header %s given twice" % (name, number, keyword))
        headers[keyword] = (number, value)
    if body_start is None:
        raise BexFileError("%s: no empty line ending the headers, so no body to run" % name)
    body = "\n".join(lines[body_start:])
    if not body.strip():
        raise BexFileError("%s: the body (the commands to run, after the empty line) is empty"
                           % name)
    return _job(name, headers, env, body)


def _job(name, headers, env, body):
    op = {"OP_ID": constants.OP_COMMAND_RUN, "cmd": body}

    def value(keyword, convert, what):
        number, text = headers[keyword]
        try:
            return convert(text)
        except ValueError:
            raise BexFileError("%s, line %d: %s: %r is not %s" % (
                name, number, keyword, text, what)) from None

    title = headers.get("Title") or headers.get("Subject")
    if title and title[1]:
        op["title"] = title[1]
    if env:
        op["env"] = env
    simple = (("Dir", "dir"), ("User", "run_as"), ("Affinity", "affinity"))
    for keyword, param in simple:
        if keyword in headers and headers[keyword][1]:
            op[param] = headers[keyword][1]
    if "Timeout" in headers:
        op["timeout"] = value("Timeout", _seconds, "a number of seconds")
    if "Retry" in headers:
        op["max_attempts"] = max(1, value("Retry", _count, "a number of tries"))
    if "Priority" in headers:
        op["priority"] = value("Priority", parsing.priority_value,
                               "high, normal, low or an integer from %d to %d" % (
                                   constants.OP_PRIO_HIGHEST, constants.OP_PRIO_LOWEST))
    nodes = None
    if "Node" in headers:
        names = [item for item in _NODE_LIST.split(headers["Node"][1]) if item]
        if len(names) == 1 and not _is_glob(names[0]):
            op["node"] = names[0]
        elif names:
            nodes = names[0] if len(names) == 1 else names
    parent = value("Parent", _count, "a job id") if "Parent" in headers else None
    token = None
    if "ID" in headers and headers["ID"][1]:
        token = "bex:" + headers["ID"][1]
    return BexJob(op, nodes, parent, token)


def _is_glob(text):
    return any(char in text for char in "*?[")


def _seconds(text):
    number = ptypes.parse_number(text)
    if not 0 <= number < float("inf"):
        raise ValueError(text)
    return number


def _count(text):
    number = ptypes.parse_int(text)
    if number < 0:
        raise ValueError(text)
    return number
