"""Supervised services: their definitions, states and restart rules, with no I/O.

A service is a named, long-running command placed on a node (by ``node`` or
``affinity``) and kept alive there by the node's supervisor (jqueue.exec.supervisor),
JobMon's and supervisord's way. This module is its model: the definition's parameters
and their validation, the states and the transitions allowed between them, the
restart policy (back-off 1 s doubling to 60 s, reset after a stable run; start limit 5
failures in 60 s, then FATAL), the command line and variables of a run, and the exit
statuses of ``jqctl service status``. Running services is jqueue.exec.supervisor (on the
node); the master's table and placement is jqueue.run.services.

A definition is a dict of the parameters below (``PARAMS``; ``check_definition`` fills
in defaults). Times are seconds; timestamps are epoch seconds of the clock the
supervisor is given.
"""

import re
import signal as _signal

from jqueue import constants, errors, ptypes
from jqueue.commandjob import (
    AbsolutePath,
    Command,
    Environment,
    MemoryMax,
    NodeName,
    Tags,
    UserName,
    command_argv,
    exit_text,
    memory_text,
    overrides,
)
from jqueue.opcodes import Param, near_miss

# States (Supervisor's names; str-valued so they serialize as they are)
STOPPED = "STOPPED"
STARTING = "STARTING"
RUNNING = "RUNNING"
BACKOFF = "BACKOFF"
STOPPING = "STOPPING"
EXITED = "EXITED"
FATAL = "FATAL"
STATES = (STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL)
#: States in which a run of the service is alive (a process exists).
ALIVE = frozenset([STARTING, RUNNING, STOPPING])
#: Allowed transitions; anything else is a programming error (change_state refuses it).
TRANSITIONS = {
    STOPPED: frozenset([STARTING]),
    STARTING: frozenset([RUNNING, BACKOFF, FATAL, STOPPING, EXITED]),
    RUNNING: frozenset([STOPPING, BACKOFF, FATAL, EXITED]),
    BACKOFF: frozenset([STARTING, STOPPED, FATAL]),
    STOPPING: frozenset([STOPPED]),
    EXITED: frozenset([STARTING, STOPPED]),
    FATAL: frozenset([STARTING, STOPPED]),
}

# Restart policies (systemd's words); JobMon's true is always, false is no.
RESTART_NO = "no"
RESTART_ON_FAILURE = "on-failure"
RESTART_ALWAYS = "always"
RESTART_POLICIES = (RESTART_NO, RESTART_ON_FAILURE, RESTART_ALWAYS)

# The restart rules (other-systems.md, section 6, row 18)
BACKOFF_FIRST = 1.0       # seconds before the first restart
BACKOFF_MAX = 60.0        # the delay doubles up to this
STABLE_AFTER = 60.0       # a run RUNNING this long resets the back-off and the start limit
START_LIMIT_BURST = 5     # this many failures ...
START_LIMIT_INTERVAL = 60.0  # ... within this many seconds: FATAL

# Targets: what was last asked of a service (start or stop).
TARGET_STARTED = "started"
TARGET_STOPPED = "stopped"

# Control actions
ACTIONS = ("start", "stop", "restart")

# jqctl service status exit statuses (systemctl's, the LSB's)
STATUS_RUNNING = 0
STATUS_NOT_RUNNING = 3
STATUS_UNKNOWN = 4

_NAME = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.:@+=,-]*(?: [A-Za-z0-9_.:@+=,-]+)*\Z")
MAX_NAME = 128


class _ServiceName(ptypes.PType):
    desc = ("a service name: letters, digits and _.:@+=,- (single spaces inside), at most "
            "%d characters, starting with a letter, a digit or _" % MAX_NAME)

    def check(self, value):
        if not isinstance(value, str) or len(value) > MAX_NAME or not _NAME.match(value):
            self._fail(value)
        return value


class _Signal(ptypes.PType):
    desc = "a signal name (TERM, SIGINT, hup) or number from 1 to 31"

    def check(self, value):
        return signal_name(value, self)


class _Restart(ptypes.PType):
    desc = "one of no, on-failure, always (or JobMon's true/false)"

    def check(self, value):
        if value is True:
            return RESTART_ALWAYS
        if value is False:
            return RESTART_NO
        if not isinstance(value, str) or value not in RESTART_POLICIES:
            self._fail(value)
        return value


ServiceName = _ServiceName()
Signal = _Signal()
Restart = _Restart()

#: The parameters of a definition (name included), with their defaults.
PARAMS = (
    Param("name", ServiceName, doc="the service's name, unique in the cluster"),
    Param("command", Command, doc="string: run by /bin/sh -c; list: argv, no shell"),
    Param("dir", AbsolutePath, "/", "working directory on the node (absolute)"),
    Param("env", Environment, {}, "variables over the minimal base environment"),
    Param("env_inherit", ptypes.Bool, False,
          "start from the node daemon's environment instead of the minimal base"),
    Param("stdin", ptypes.Maybe(AbsolutePath), None, "file read as stdin (null: /dev/null)"),
    Param("stdout", ptypes.Maybe(AbsolutePath), None,
          "file stdout is appended to (null: the service's log at the master)"),
    Param("stderr", ptypes.Maybe(AbsolutePath), None,
          "file stderr is appended to (null: the service's log at the master)"),
    Param("run_as", ptypes.Maybe(UserName), None,
          "user to run as (null: the daemon's user); the node must allow it"),
    Param("stop_signal", Signal, "SIGTERM", "signal that asks the service to stop"),
    Param("stop_timeout", ptypes.NonNegativeNumber, 10,
          "seconds after the stop signal before SIGKILL to every process of the service"),
    Param("memory_max", MemoryMax, 0,
          "bytes the service's processes may hold resident together, else they are all "
          "killed and the run ends as a failure (0: no limit)"),
    Param("autostart", ptypes.Bool, False,
          "start when added and whenever its node boots"),
    Param("restart", Restart, RESTART_ON_FAILURE,
          "when to restart a run that ended: no, on-failure, always"),
    Param("startsecs", ptypes.NonNegativeNumber, 1,
          "seconds a run must stay up to count as started (RUNNING)"),
    Param("node", ptypes.Maybe(NodeName), None,
          "node to run on (null: a node with the affinity's tags, or the master's)"),
    Param("affinity", Tags, [], "tags the node must all have (exact, case-sensitive)"),
    Param("movable", ptypes.Bool, False,
          "when its node is lost, restart it on another matching node"),
)
PARAM_NAMES = tuple(p.name for p in PARAMS)
_BY_NAME = {p.name: p for p in PARAMS}
#: Parameters that say where a service runs (a change may move it).
PLACEMENT = frozenset(["node", "affinity"])


def signal_name(value, ptype=Signal):
    """The canonical name (SIGTERM) of a signal given as a number or a name; ValueError."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.strip():
        text = value.strip().upper()
        if text.isdigit():
            number = int(text)
        else:
            text = text if text.startswith("SIG") else "SIG" + text
            member = getattr(_signal.Signals, text, None) if text.isidentifier() else None
            number = int(member) if member is not None else None
    if number is None or not 1 <= number <= 31:
        ptype._fail(value)
    try:
        return _signal.Signals(number).name
    except ValueError:
        ptype._fail(value)


def signal_number(name):
    """The number of a canonical signal name."""
    return int(getattr(_signal.Signals, name))


def check_name(name):
    """The name if it is a valid service name; OpPrereqError saying why not."""
    try:
        return ServiceName.check(name)
    except ValueError as err:
        raise errors.OpPrereqError("service name %s" % err, constants.ECODE_INVAL) from None


def check_definition(data, base=None):
    """A definition checked, normalized and completed; OpPrereqError naming the problem.

    base, if given, is an existing definition that data changes (a modification: only
    the keys given change, null resets one to its default; the name cannot change).
    """
    if not isinstance(data, dict):
        raise errors.OpPrereqError("a service definition must be an object, got %s" %
                                   ptypes._short(data), constants.ECODE_INVAL)
    label = "service %s" % (base["name"] if base else data.get("name", "?"))
    unknown = sorted(k for k in data if k not in _BY_NAME)
    if unknown:
        raise errors.OpPrereqError("%s: unknown parameter(s) %s%s" % (
            label, ", ".join(ptypes._short(u) for u in unknown), near_miss(unknown, _BY_NAME)),
            constants.ECODE_INVAL)
    if base is not None and "name" in data and data["name"] != base["name"]:
        raise errors.OpPrereqError("%s: a service cannot be renamed (remove it and add it "
                                   "again)" % label, constants.ECODE_INVAL)
    values = {}
    for param in PARAMS:
        given = param.name in data
        if base is not None and not given:  # one stored before the parameter existed: its default
            values[param.name] = base.get(param.name, param.default_value())
            continue
        value = data.get(param.name)
        if value is None and not param.required:
            values[param.name] = param.default_value()
            continue
        if value is None:
            raise errors.OpPrereqError("%s: parameter '%s' is required" % (
                label, param.name), constants.ECODE_INVAL)
        try:
            values[param.name] = param.ptype.check(value)
        except ValueError as err:
            raise errors.OpPrereqError("%s: parameter '%s' %s" % (label, param.name, err),
                                       constants.ECODE_INVAL) from None
    return values


def describe_params():
    """The parameters as [{name, type, required, default, doc}] (for help and docs)."""
    return [{"name": p.name, "type": p.ptype.desc, "required": p.required,
             "default": None if p.required else p.default_value(), "doc": p.doc}
            for p in PARAMS]


# States and the restart policy


def check_transition(old, new):
    """Raise ProgrammerError unless old -> new is an allowed transition."""
    if new not in TRANSITIONS.get(old, ()):
        raise errors.ProgrammerError("service state %s cannot become %s" % (old, new))


def failed(result, restart):
    """Whether a run's end asks for a restart under the policy restart.

    result: exit_status, signal and error of the run (jqueue.exec's AttemptResult as a
    dict). ``on-failure`` restarts on a non-zero status, a signal or a run that never ran
    or was lost; ``always`` on any end; ``no`` never.
    """
    if restart == RESTART_ALWAYS:
        return True
    if restart == RESTART_NO:
        return False
    return (bool(result.get("error")) or result.get("signal") is not None
            or result.get("exit_status") != 0)


class Backoff:
    """The failures of a service that count for its back-off and its start limit.

    ``failures`` holds the times of the failures within the start limit's interval, in
    order; ``streak`` counts failures since the last stable run (the back-off doubles
    with it). Plain data, stored with the service.
    """

    def __init__(self, failures=(), streak=0):
        self.failures = list(failures)
        self.streak = streak

    def to_dict(self):
        return {"failures": list(self.failures), "streak": self.streak}

    @classmethod
    def from_dict(cls, data):
        data = data or {}
        return cls(data.get("failures") or (), data.get("streak") or 0)

    def reset(self):
        """A stable run, or a start asked by hand: forget every failure."""
        self.failures = []
        self.streak = 0

    def fail(self, now, running_for=None):
        """Count a failure at now; the delay before the next start, or None: FATAL.

        running_for: how long the run had been RUNNING (None: it never was); a run that
        stayed up STABLE_AFTER seconds first resets the count.
        """
        if running_for is not None and running_for >= STABLE_AFTER:
            self.reset()
        # A failure dated after now: the wall clock went back since, by an unknown amount.
        # Kept, it would count for as long again as the clock went back; dropped, the
        # limit comes a few restarts later at worst.
        self.failures = [t for t in self.failures if 0 <= now - t < START_LIMIT_INTERVAL]
        self.failures.append(now)
        self.streak += 1
        if len(self.failures) >= START_LIMIT_BURST:
            return None
        return self._delay()

    def wait(self):
        """A start the node could not make now (no room on its disk, a user lookup that
        did not answer): the delay before the next try, doubling as a failure's does, but
        not counted for the start limit: the node's trouble is not the service's."""
        self.streak += 1
        return self._delay()

    def _delay(self):
        return min(BACKOFF_FIRST * 2 ** (self.streak - 1), BACKOFF_MAX)


def limit_message():
    return "start limit reached: %d failures within %gs; start it again by hand" % (
        START_LIMIT_BURST, START_LIMIT_INTERVAL)


def status_exit_code(state):
    """jqctl service status's exit status for a state (None: an unknown service)."""
    if state is None:
        return STATUS_UNKNOWN
    return STATUS_RUNNING if state == RUNNING else STATUS_NOT_RUNNING


# Runs: the command line and the environment

#: How the wrapper shell names itself ($0) in its complaints.
WRAPPER_NAME = "jq-service"


def run_argv(definition):
    """The argv of a run: the command, through a small sh wrapper that opens the stdin,
    stdout and stderr files (appending) when the definition names them.

    The wrapper execs the command, so the run's pid is the command's; a file it cannot
    open ends the run at once with sh's message in the service's log (status 2).
    """
    argv = command_argv(definition["command"])
    redirects, files = [], []
    for fd, key, op in ((0, "stdin", "<"), (1, "stdout", ">>"), (2, "stderr", ">>")):
        if definition.get(key):
            files.append(definition[key])
            redirects.append('%d%s"$%d"' % (fd, op, len(files)))
    if not files:
        return argv
    script = 'exec %s || exit 2; shift %d; exec "$@"' % (" ".join(redirects), len(files))
    return ["/bin/sh", "-c", script, WRAPPER_NAME] + files + argv


def run_environment(definition, service_id, run, node):
    """A run's own variables: JQ_SERVICE, JQ_SERVICE_ID, JQ_RUN, JQ_NODE, then ``env``.

    The executor puts them over the base (``commandjob.env_base(definition)``), as for a
    command job.
    """
    return overrides({"JQ_SERVICE": definition["name"], "JQ_SERVICE_ID": str(service_id),
                      "JQ_RUN": str(run), "JQ_NODE": node}, definition)


def describe_end(result, memory_max=0):
    """A run's end in words: "exited with status 3", "killed by SIGKILL", the error;
    "killed by SIGKILL: its processes held 70.3 MiB, over its memory_max of 64.0 MiB"."""
    if result.get("error"):
        return result["error"]
    if result.get("memory_exceeded"):
        return "killed by SIGKILL: " + memory_text(result, memory_max)
    if result.get("signal") is not None:
        try:
            name = _signal.Signals(result["signal"]).name
        except ValueError:
            name = "signal %s" % result["signal"]
        return "killed by %s" % name
    return exit_text(result)
