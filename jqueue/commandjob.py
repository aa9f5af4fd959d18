"""Command jobs: the OP_COMMAND_RUN opcode, its parameters, progress patterns and outcomes.

A command job is an ordinary job whose opcode is ``OP_COMMAND_RUN``: a user's command run
on a node (see DESIGN.md, "Command jobs"). This module is the model of it, with no I/O:
the opcode's parameters and their validation at submit, progress patterns, how an
attempt's end maps to success, a reason and a retry, the command's variables, and the
banner lines the job log carries between attempts. Scheduling and running attempts is
jqueue.run.commands (in the master) and jqueue.exec (on a node).

The runtime state of a command opcode is ``QueuedOpCode.exec_state`` (the job file's
``"exec"`` key of the opcode), a dict with these keys:

    state            pending | starting | running | retry_wait | ended (constants.ATTEMPT_*)
    node             where the current (or last) attempt runs
    attempt          attempts started so far (the current one's number: unique per job)
    uncounted        attempts that do not count against max_attempts: stopped by a hold,
                     before a reset, or never started (the ``attempt`` field shows
                     attempt - uncounted)
    unstarted        attempts lost before their command started (LOST_UNSTARTED)
    pid, started     the command's pid and start time (epoch seconds) once known
    exit_status, signal, timed_out, reason, message   the last attempt's end
    max_rss, cpu_time, memory_exceeded   what the last attempt's command used (bytes: its
                     peak resident memory; seconds of CPU) and whether it was killed for
                     going over memory_max
    retry_at         when the next attempt may start (retry_wait)
    progress, global_progress   fractions 0..1 from the progress patterns (or None)
    out              {attempt number (text): bytes of that attempt's output logged}
"""

import collections
import random
import re
import time

from jqueue import constants, errors, ptypes, userregex
from jqueue.opcodes import OpCode, Param, register
from jqueue.ptypes import Tags, parse_tags  # noqa: F401 - callers use them from here

#: Longest line the progress parser keeps while waiting for its end.
MAX_PARTIAL_LINE = 64 * 1024
#: Bytes of output a regex progress pattern decodes at once, from the end (whole lines).
_REGEX_BLOCK = 64 * 1024
#: Lines holding a token pattern's literal text tried one by one from the end before the
#: rest is searched in one pass (output whose every line holds the text and does not
#: match ran at about 20 MB/s line by line); likewise a regex's last lines in a block
#: that holds a match, before the block's matches are listed.
_CANDIDATE_LINES = 32
#: Assertions of a text's start or end, which a pattern searched over a block of lines
#: would see at the block's ends only (such a pattern is tried on each line alone).
_TEXT_ANCHORS = re.compile(r"\\[Az]")
_TOKENS = {"%percent": 100.0, "%one": 1.0}
_DIGITS = [bytes([digit]) for digit in b"0123456789"]
_NUMBER = r"([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
_ENV_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
_USER_NAME = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\Z")
_NODE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
#: PATH of the minimal environment a command starts from.
BASE_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
#: What the node that runs a command puts its variables over (AttemptSpec.env_base): the
#: minimal base (PATH, HOME, USER, LANG) or the environment of the daemon that runs it.
ENV_BASE_MINIMAL = "minimal"
ENV_BASE_INHERIT = "inherit"
ENV_BASES = (ENV_BASE_MINIMAL, ENV_BASE_INHERIT)


# Parameter types


#: Bytes Linux takes in one argument or environment string of an exec (MAX_ARG_STRLEN,
#: 32 pages): a longer one can never start, so it is refused at submit.
MAX_ARG_BYTES = 32 * 4096


def _check_arg_size(text, what):
    size = len(text.encode("utf-8", "surrogatepass"))
    if size >= MAX_ARG_BYTES:
        raise ValueError("%s is %d bytes: Linux starts no program with a single argument or "
                         "variable of %d bytes or more (put the script in a file)" % (
                             what, size, MAX_ARG_BYTES))


class _Command(ptypes.PType):
    desc = "a command: a non-empty string (run by /bin/sh -c) or a non-empty list of strings"

    def check(self, value):
        if isinstance(value, str):
            if not value.strip() or "\0" in value:
                self._fail(value)
            _check_arg_size(value, "the command")
            return value
        if (not isinstance(value, list) or not value or not value[0]
                or not all(isinstance(a, str) and "\0" not in a for a in value)):
            self._fail(value)
        for index, arg in enumerate(value):
            _check_arg_size(arg, "argument %d" % index)
        return list(value)


#: The smallest memory_max (but 0, none): less than a shell needs to start.
MIN_MEMORY_MAX = 1 << 20


class _MemoryMax(ptypes.PType):
    desc = ("bytes: 0 (no limit) or from 1 MiB, as an integer or a size such as 512M or 2G "
            "(units of 1024)")

    def check(self, value):
        if isinstance(value, str):
            try:
                value = ptypes.parse_size(value)
            except ValueError:
                self._fail(value)
        if (not ptypes._is_int(value) or value < 0 or value > ptypes.MAX_JOB_ID
                or 0 < value < MIN_MEMORY_MAX):
            self._fail(value)
        return value


class _AbsolutePath(ptypes.PType):
    desc = "an absolute path"

    def check(self, value):
        if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
            self._fail(value)
        return value


class _Environment(ptypes.PType):
    desc = "an object of environment variables (NAME: string value)"

    def check(self, value):
        if not isinstance(value, dict):
            self._fail(value)
        for name, text in value.items():
            if not _ENV_NAME.match(name):
                raise ValueError("has an invalid variable name %s" % ptypes._short(name))
            if not isinstance(text, str) or "\0" in text:
                raise ValueError("variable %s must be a string without NUL, got %s" % (
                    name, ptypes._short(text)))
            _check_arg_size("%s=%s" % (name, text), "variable %s" % name)
        return dict(value)


class _Name(ptypes.PType):
    def __init__(self, pattern, desc):
        self.pattern, self.desc = pattern, desc

    def check(self, value):
        if not isinstance(value, str) or not self.pattern.match(value):
            self._fail(value)
        return value


class _ExitCodes(ptypes.PType):
    desc = "a non-empty list of exit statuses (integers from 0 to 255)"

    def check(self, value):
        if not isinstance(value, list) or not value:
            self._fail(value)
        return [ptypes.IntRange(0, 255).check(code) for code in value]


class _ProgressPatternType(ptypes.PType):
    desc = ("a progress pattern: text with one %percent or %one token, or 'regex:' and a "
            "regular expression with one group (RE2 syntax: no backreferences or lookaround)")

    def check(self, value):
        if not isinstance(value, str):
            self._fail(value)
        try:
            ProgressPattern(value)
        except ValueError as err:
            raise ValueError("is not a usable progress pattern (%s): %s" % (
                err, ptypes._short(value))) from None
        return value


#: The most nodes one fan-out runs on (one job each).
MAX_FAN_OUT = 1000


class _NodeSet(ptypes.PType):
    desc = ("nodes: a non-empty list of distinct node names, or a glob of node names "
            "(node*, web[0-9]); at most %d" % MAX_FAN_OUT)

    _GLOB = re.compile(r"\A[A-Za-z0-9_.*?\[\]!-]{1,128}\Z")

    def check(self, value):
        if isinstance(value, str):
            if not self._GLOB.match(value):
                self._fail(value)
            return value
        if (not isinstance(value, list) or not value or len(value) > MAX_FAN_OUT
                or len(set(map(repr, value))) != len(value)):
            self._fail(value)
        return [NodeName.check(name) for name in value]

Command = _Command()
AbsolutePath = _AbsolutePath()
Environment = _Environment()
UserName = _Name(_USER_NAME, "a user name")
NodeName = _Name(_NODE_NAME, "a node name")
ExitCodes = _ExitCodes()
MemoryMax = _MemoryMax()
ProgressPatternType = _ProgressPatternType()
NodeSet = _NodeSet()


# The opcode


@register
class OpCommandRun(OpCode):
    """Run a command on a node: contained, killable, logged, retried (a command job)."""

    OP_ID = constants.OP_COMMAND_RUN
    OP_DSC_FIELD = "title"
    #: Runs outside the worker pool: jqueue.run.commands starts and finishes it.
    COMMAND = True
    OP_PARAMS = (
        Param("cmd", Command, doc="string: run by /bin/sh -c; list: argv, no shell"),
        Param("dir", AbsolutePath, "/", "working directory on the node (absolute)"),
        Param("env", Environment, {}, "variables over the minimal base environment"),
        Param("env_inherit", ptypes.Bool, False,
              "start from the environment of the node daemon that runs the command "
              "instead of the minimal base"),
        Param("timeout", ptypes.NonNegativeNumber, 0,
              "seconds of run time, then TERM and KILL after kill_grace (0: none)"),
        Param("kill_grace", ptypes.NonNegativeNumber, 10,
              "seconds between TERM and KILL when the job is stopped"),
        Param("memory_max", MemoryMax, 0,
              "bytes the command's processes may hold resident together, else they are "
              "all killed (0: no limit)"),
        Param("max_attempts", ptypes.IntRange(1, 1000), 1, "attempts in total"),
        Param("retry_delay", ptypes.NonNegativeNumber, 5,
              "seconds before the 2nd attempt, doubling for each later one (with jitter)"),
        Param("retry_delay_max", ptypes.NonNegativeNumber, 300, "longest delay between attempts"),
        Param("success_exit_codes", ExitCodes, [0], "exit statuses that mean success"),
        Param("run_as", ptypes.Maybe(UserName), None,
              "user to run as (null: the daemon's user); the node must allow it"),
        Param("node", ptypes.Maybe(NodeName), None,
              "node to run on (null: the least loaded node with the affinity's tags, or the "
              "master's without an affinity)"),
        Param("affinity", Tags, [], "tags the node must all have (exact, case-sensitive)"),
        Param("nodes", ptypes.Maybe(NodeSet), None,
              "fan-out: run on each of these nodes, or on every node whose name matches "
              "this glob and that has the affinity's tags (neither drained nor offline); "
              "the job becomes a group with one job per node (jqueue.fanout)"),
        Param("title", ptypes.Maybe(ptypes.String), None, "display name"),
        Param("url", ptypes.Maybe(ptypes.String), None,
              "a link shown with the job (Coalition's url)"),
        Param("progress_pattern", ProgressPatternType, constants.DEFAULT_PROGRESS_PATTERN,
              "how the output reports progress (%percent: value/100, %one: 0..1)"),
        Param("global_progress_pattern", ptypes.Maybe(ProgressPatternType), None,
              "a second level of progress, the same way"),
    )

    def run(self, ctx):
        raise errors.ProgrammerError("%s runs through the command runner, not a worker" %
                                     self.OP_ID)

    @staticmethod
    def describe(op_input):
        """What summaries show: the title, else the command (shortened)."""
        text = op_input.get("title") or command_text(op_input.get("cmd") or "")
        return text if len(text) <= 60 else text[:57] + "..."


def is_command(op_input):
    """Whether a stored opcode input is a command opcode."""
    return op_input.get("OP_ID") == constants.OP_COMMAND_RUN


def command_argv(cmd):
    """The argv of a ``cmd`` value: a string runs through /bin/sh -c."""
    return ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


def command_text(cmd):
    """The command as one line, for banners and listings."""
    if isinstance(cmd, str):
        return cmd
    return " ".join(_shell_quote(arg) for arg in cmd)


def _shell_quote(arg):
    if arg and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


# Progress patterns


class ProgressPattern:
    """A compiled progress pattern; ``value(line)`` is the fraction it reports, or None.

    Text with one token ``%percent`` (a number, divided by 100) or ``%one`` (0..1); the
    rest is matched literally, anywhere in a line. ``regex:`` followed by a regular
    expression with one group gives that group's number (a fraction 0..1). The last
    match of a line wins; values are clamped to [0, 1].

    ``last_value(text, end)`` is the value of the last line of ``text[:end]`` (bytes,
    whole lines) that matches: a token pattern finds it from the end with a bytes search
    for its literal text, without decoding or even splitting the lines before it (output
    runs at hundreds of MB/s; a line-by-line scan in Python ran at about 20); a regex
    pattern (RE2's syntax and engine: linear time, whatever the pattern) decodes blocks
    of lines from the end and searches each whole before any of its lines.
    """

    def __init__(self, pattern):
        self._bytes_regex = None
        self._anchor = b""
        self._block_regex = None
        if pattern.startswith("regex:"):
            source = pattern[len("regex:"):]
            self.regex = _compile_raw(source)
            self.scale = 1.0
            if not _TEXT_ANCHORS.search(source):  # (those would see a block's ends only)
                self._block_regex = userregex.compile_pattern("(?m)" + source, never_nl=True)
            return
        found = [(pattern.find(token), token) for token in _TOKENS if token in pattern]
        count = sum(pattern.count(token) for token in _TOKENS)
        if count != 1:
            raise ValueError("it needs exactly one %percent or %one token")
        position, token = found[0]
        before, after = pattern[:position], pattern[position + len(token):]
        self.regex = re.compile(re.escape(before) + _NUMBER + re.escape(after))
        self.scale = _TOKENS[token]
        if "\n" not in pattern:  # (one with a newline never matches a line)
            raw_before, raw_after = before.encode("utf-8"), after.encode("utf-8")
            self._bytes_regex = re.compile(re.escape(raw_before) + _NUMBER.encode("ascii")
                                           + re.escape(raw_after))
            self._anchor = max(raw_before, raw_after, key=len)

    def value(self, line):
        matches = list(self.regex.finditer(line))
        if not matches:
            return None
        return self._number(matches[-1].group(1))

    def _number(self, text):
        try:
            number = float(text) / self.scale
        except (TypeError, ValueError):
            return None
        return min(1.0, max(0.0, number))

    def last_value(self, text, end):
        """The value of the last matching line of text[:end] (bytes, whole lines), or None."""
        if self._bytes_regex is None:
            return self._last_regex_value(text, end)
        for _ in range(_CANDIDATE_LINES):
            if end <= 0:
                return None
            at = self._last_candidate(text, end)
            if at < 0:
                return None
            start = text.rfind(b"\n", 0, at) + 1
            stop = text.find(b"\n", at, end)
            value = self._line_value(text, start, end if stop < 0 else stop)
            if value is not None:
                return value
            end = start  # that line did not match: look before it
        # Many lines hold the text without matching: one pass of the search over the rest.
        # A match never spans lines, so the last one is the last matching line's last.
        last = collections.deque(self._bytes_regex.finditer(text, 0, end), maxlen=1)
        return self._number(last[0].group(1)) if last else None

    def _last_regex_value(self, text, end):
        """last_value for a regex: blocks of whole lines from the end, each decoded at once.

        RE2 runs in time linear in the text whatever the pattern (Python's engine took
        seconds for 24 characters of ``(?:a+)+(\\d)``, in jq-masterd's event loop). A
        call costs about a microsecond, so a block is first searched whole, in multi-line
        mode with no match crossing a newline (``never_nl``), which finds a match exactly
        where some line of it matches alone: a block without one is done in one call. In
        a block with one, its last lines are tried one by one, then its matches are
        listed (few, if not in its last lines) and their lines tried from the last.
        """
        while end > 0:
            start = text.rfind(b"\n", 0, max(0, end - _REGEX_BLOCK)) + 1
            value = self._block_value(text[start:end - 1].decode("utf-8", "replace"))
            if value is not None:
                return value
            end = start
        return None

    def _block_value(self, block):
        """The value of the last line of block (lines joined by newlines) that gives one."""
        if self._block_regex is None:  # \A or \z: every line alone, from the last
            return _first_value(self.value, reversed(block.split("\n")))
        if self._block_regex.search(block) is None:
            return None
        cut = len(block)
        for _ in range(_CANDIDATE_LINES):
            if cut < 0:
                return None
            line_start = block.rfind("\n", 0, cut) + 1
            value = self.value(block[line_start:cut])
            if value is not None:
                return value
            cut = line_start - 1
        starts = [found.start() for found in self._block_regex.finditer(block, 0, max(cut, 0))]
        return _first_value(self.value, (block[block.rfind("\n", 0, at) + 1:_line_end(block, at)]
                                         for at in reversed(starts)))

    def _last_candidate(self, text, end):
        """A position in the last line of text[:end] that may match (-1: none can)."""
        if self._anchor:
            return text.rfind(self._anchor, 0, end)
        return max(text.rfind(digit, 0, end) for digit in _DIGITS)  # the token alone

    def _line_value(self, text, start, stop):
        matches = list(self._bytes_regex.finditer(text, start, stop))
        return self._number(matches[-1].group(1)) if matches else None


def _first_value(value, lines):
    """The first value value(line) gives for lines (an iterable), or None."""
    for line in lines:
        found = value(line)
        if found is not None:
            return found
    return None


def _line_end(text, at):
    end = text.find("\n", at)
    return len(text) if end < 0 else end


def _compile_raw(text):
    """A regex progress pattern's text compiled by RE2 (jqueue.userregex)."""
    try:
        regex = userregex.compile_pattern(text, never_nl=True)
    except ValueError as err:
        raise ValueError("bad regular expression (%s)" % err) from None
    if regex.groups != 1:
        raise ValueError("the regular expression needs exactly one group")
    return regex


class ProgressTracker:
    """Feeds a command's output to its patterns, line by line across chunk boundaries."""

    def __init__(self, local_pattern, global_pattern=None):
        self._patterns = [ProgressPattern(local_pattern) if local_pattern else None,
                          ProgressPattern(global_pattern) if global_pattern else None]
        self._partial = b""
        #: [local, global] fractions; None until a line matched.
        self.values = [None, None]

    def feed(self, data):
        """Parse complete lines of data (a carriage return ends a line too: a progress
        meter redrawn in place, as curl's, rsync's or pv's, is followed as it goes);
        return True if a value changed."""
        text = self._partial + data if self._partial else bytes(data)
        if b"\r" in text:
            text = text.replace(b"\r", b"\n")
        end = text.rfind(b"\n") + 1
        self._partial = text[end:]
        if len(self._partial) > MAX_PARTIAL_LINE:
            self._partial = b""
        changed = False
        if end:
            for index, pattern in enumerate(self._patterns):
                value = pattern.last_value(text, end) if pattern is not None else None
                if value is not None and value != self.values[index]:
                    self.values[index] = value
                    changed = True
        return changed

    def skip(self):
        """Output was passed over: the line under way is not continued by what comes."""
        self._partial = b""


# Attempts: outcome, retry, environment, banners


def classify(result, success_codes, stopped_by_user=False, canceled=False, memory_max=0):
    """(reason, message) of an attempt's end; reason OK means success.

    result is a dict with exit_status, signal, timed_out, memory_exceeded, error,
    prolog_failed and oom_kills (see jqueue.exec); memory_max the limit the attempt ran
    with, for the message. A node's failed prolog is INTERR (KILLED if a stop request ended it). An
    attempt stopped by request (cancel, term, kill, hold) that ends with a status outside
    success_codes (it handled the TERM) ends KILLED as one its signal ended does; with
    canceled, whatever its status (the job does not succeed, so its attempt did not).
    """
    if result.get("error"):
        if result.get("prolog_failed") and stopped_by_user:
            return constants.REASON_KILLED, result["error"]
        lost = result.get("lost")
        return (constants.REASON_NODE_LOST if lost else constants.REASON_INTERR,
                result["error"])
    if result.get("timed_out"):
        return constants.REASON_TIMEOUT, "command timed out%s" % _ending(result)
    if result.get("memory_exceeded"):
        return constants.REASON_KILLED, "command killed by signal SIGKILL: %s" % (
            memory_text(result, memory_max))
    signum = result.get("signal")
    if signum is not None and result.get("oom_kills") and not stopped_by_user:
        count = result["oom_kills"]
        return constants.REASON_KILLED, "command killed by signal SIGKILL: the kernel's OOM " \
            "killer killed %d process%s on its node while it ran, likely it (the machine " \
            "ran out of memory; memory_max bounds a command)" % (count,
                                                                 "" if count == 1 else "es")
    if signum is not None:
        return (constants.REASON_KILLED,
                "command killed by signal %s%s" % (signal_name(signum),
                                                   " (stopped by request)" if stopped_by_user
                                                   else ""))
    status = result.get("exit_status")
    message = "command " + exit_text(result)
    if canceled or (stopped_by_user and status not in success_codes):
        return constants.REASON_KILLED, message + " (stopped by request)"
    if status in success_codes:
        return constants.REASON_OK, message
    return constants.REASON_FAILED, message


def memory_for_commands(machine):
    """What a node's reading (jqueue.exec.resources: mem_total, mem_reserved) leaves for
    the commands' memory_max in bytes: its MemTotal less its memory_reserve; None while
    unknown."""
    machine = machine or {}
    total = machine.get("mem_total")
    return None if total is None else max(0, total - (machine.get("mem_reserved") or 0))


def memory_text(result, memory_max):
    """Why an attempt over its memory limit was killed: "its processes held 1.2 GiB, over
    its memory_max of 1.0 GiB"."""
    held = result.get("max_rss")
    return "its processes held %s, over its memory_max of %s" % (
        ptypes.human_bytes(held) if held else "more", ptypes.human_bytes(memory_max))


def exit_text(result):
    """ "exited with status 1", and why where the exec failed: "exited with status 127:
    cannot execute x: No such file or directory"."""
    text = "exited with status %s" % result.get("exit_status")
    return text + ": " + result["exec_error"] if result.get("exec_error") else text


def _ending(result):
    if result.get("signal") is not None:
        return ", ended by signal %s" % signal_name(result["signal"])
    if result.get("exit_status") is not None:
        return ", exit status %d" % result["exit_status"]
    return ""


def signal_name(signum):
    """SIGTERM for 15; the number as text if unknown."""
    import signal as _signal
    try:
        return _signal.Signals(signum).name
    except (ValueError, TypeError):
        return str(signum)


#: The error of an attempt whose launch the death of the daemon starting it interrupted
#: before the command could start (jqueue.exec: no spec.json, or no complete environment
#: for the shim): the command never ran, so another attempt runs at once and this one does
#: not count against max_attempts (at most UNSTARTED_RETRIES times a job: a command whose
#: launch kills its daemon each time must not do so for ever).
LOST_UNSTARTED = "attempt lost: the daemon died while starting it"
UNSTARTED_RETRIES = 3

#: Reasons after which another attempt may run (if attempts remain and nobody stopped it),
#: and INTERR after a node's failed prolog (may_retry).
RETRYABLE = frozenset([constants.REASON_FAILED, constants.REASON_TIMEOUT,
                       constants.REASON_KILLED, constants.REASON_NODE_LOST])


def may_retry(reason, result):
    """Whether an attempt that ended so (classify's reason, its result) may be retried."""
    return reason in RETRYABLE or bool(result.get("prolog_failed"))


def retry_delay(attempts_done, base, cap, rand=random.random):
    """Seconds before the next attempt: base doubling per attempt, capped, times [0.5, 1]."""
    delay = min(base * (2 ** max(0, attempts_done - 1)), cap)
    return delay * (0.5 + rand() / 2.0)


def environment(params, job_id, attempt, node):
    """The command's own variables: JQ_JOB_ID, JQ_ATTEMPT, JQ_NODE, then ``env``.

    The node that runs the attempt puts them over its base (``env_base``): the minimal
    one, with HOME and USER from its own user database, or its daemon's environment.
    """
    return overrides({"JQ_JOB_ID": str(job_id), "JQ_ATTEMPT": str(attempt), "JQ_NODE": node},
                     params)


def overrides(own, params):
    """The variables a command (or a service's run) sends to its node: its JQ_ ones
    (own), then the ``env`` of its parameters (which win)."""
    env = dict(own)
    env.update(params.get("env") or {})
    return env


def env_base(params):
    """What the node puts the command's variables over: the daemon's environment with
    ``env_inherit``, else the minimal base (ENV_BASE_INHERIT or ENV_BASE_MINIMAL)."""
    return ENV_BASE_INHERIT if params.get("env_inherit") else ENV_BASE_MINIMAL


def banner_start(params, job_id, attempt, node, now=None, containment=None, allowed=None,
                 start=None):
    """The lines the log carries before an attempt's output (Coalition's style); a
    containment without a cgroup (the node's description of it) is said there too.
    allowed: the attempts in all (default the op's max_attempts); start: the attempt's
    start number (JQ_ATTEMPT), said after attempts that did not count."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    lines = ["* START " + "*" * 40,
             "* JOB : %d  ATTEMPT : %d/%d%s" % (
                 job_id, attempt, allowed or params["max_attempts"],
                 " (start %d)" % start if start not in (None, attempt) else ""),
             "* NODE : %s" % node, "* DATE : %s" % stamp,
             "* DIR : %s" % params["dir"], "* CMD : %s" % command_text(params["cmd"])]
    if containment and containment.startswith("process group"):
        lines.append("* CONTAINED BY : %s: a process that leaves the group (setsid) is "
                     "reached only while its parent lives" % containment)
    return ("\n".join(lines) + "\n").encode("utf-8")


def banner_end(result, reason, message, output_ended_with_newline=True):
    """The lines the log carries after an attempt's output."""
    lines = []
    if not output_ended_with_newline:
        lines.append("")
    if result.get("exit_status") is not None:
        lines.append("* EXIT : %d" % result["exit_status"])
    if result.get("signal") is not None:
        lines.append("* SIGNAL : %s" % signal_name(result["signal"]))
    lines.append("* %s : %s" % (reason, message))
    if result.get("epilog_error"):
        lines.append("* EPILOG : %s (the outcome stands)" % result["epilog_error"])
    lines.append("* END " + "*" * 42)
    return ("\n".join(lines) + "\n").encode("utf-8")


def allowed_attempts(params, state):
    """The attempts a command op may have in all: its max_attempts, or more once a retry by
    request gave it one more (kept in its exec_state: banners and fields count to it)."""
    return max(params["max_attempts"], (state or {}).get("max_attempts") or 0)


def attempt_text(number, uncounted, max_attempts):
    """An attempt as the action log and the banners count it: "attempt C of M", C the
    attempts that count; with uncounted ones before it (held, never started), the start
    number too, as JQ_ATTEMPT has it: "attempt 1 of 1 (start 2)"."""
    text = "attempt %d of %d" % (number - uncounted, max_attempts)
    return text + (" (start %d)" % number if uncounted else "")


def banner_note(text):
    """One line of our own in the log (``* `` and text)."""
    return ("* %s\n" % text).encode("utf-8")


def op_exec(job):
    """The exec state of a job's current (or last) command opcode, or None."""
    found = None
    for op in job.ops:
        if op.exec_state is not None:
            found = op.exec_state
            if op.status not in constants.OPS_FINALIZED:
                break
    return found


def wait_exit_code(status, exec_state):
    """jqctl wait's exit status for a final job (DESIGN.md; other-systems row 17)."""
    if status == constants.JOB_STATUS_SUCCESS:
        return 0
    exec_state = exec_state or {}
    if exec_state.get("timed_out"):
        return 124
    if exec_state.get("signal") is not None:
        return 128 + exec_state["signal"]
    code = exec_state.get("exit_status")
    if status == constants.JOB_STATUS_ERROR and code is not None and code not in (0,):
        return code
    return 125
