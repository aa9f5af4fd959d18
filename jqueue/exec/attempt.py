"""The records of a command attempt: what to run, what is known of it, how it ended.

Plain values (attrs, frozen) that the executor hands out and the master codes against;
``check_spec`` says why a spec cannot be started on this node.
"""

import math
import os

import attrs

from jqueue import errors
from jqueue.commandjob import ENV_BASES

#: How the error of a lost attempt begins (see AttemptResult).
LOST_PREFIX = "attempt lost"


@attrs.frozen
class AttemptSpec:
    """What to run: one attempt (numbered from 1) of a command job."""

    job: int
    attempt: int
    argv: list                 # a shell string is given as ["/bin/sh", "-c", s]
    dir: str                   # absolute
    env: dict                  # complete environment (env_base None), else over the base
    run_as: str | None = None  # None: the daemon's user
    timeout: float = 0         # seconds from exec; 0: none
    kill_grace: float = 10
    #: None: env is the command's complete environment. "minimal": env goes over PATH,
    #: HOME and USER (this node's passwd entry of run_as, or of the daemon's user) and
    #: LANG; "inherit": over the environment of the daemon that runs it (the Executor's).
    env_base: str | None = None
    #: Bytes the job's processes may hold resident together (0: no limit): over it, the
    #: shim kills them all (AttemptResult.memory_exceeded).
    memory_max: int = 0


@attrs.frozen
class AttemptResult:
    """How an attempt ended; ``error`` is set iff the command never ran or was lost.

    An ``error`` starting with LOST_PREFIX means the node lost the attempt ("attempt
    lost: the node rebooted", "...: its supervisor died", "...: the daemon died while
    starting it"; the command may or may not have run). Any other error means the command
    could not be started here and never ran ("cannot change to directory /x: No such file
    or directory", "cannot switch to user u: ..."). ``exec_error`` says why the exec of
    the command failed ("cannot execute x: No such file or directory"): its failure, with
    the exit status sh would give (127 not found, 126 not executable). ``max_rss`` (bytes)
    and ``cpu_time`` (seconds) are what the command used (None if it never ran, or if a
    shim of an earlier version ran it); ``memory_exceeded``: killed for going over its
    spec's ``memory_max``. ``prolog_failed``: the node's prolog (Hooks) failed or was
    stopped, so the command never ran (``error`` says how); ``epilog_error``: how the
    node's epilog failed after the command (the outcome stands as it is). ``oom_kills``:
    for a command ended by SIGKILL that its node did not send, how many processes the
    kernel's OOM killer killed on the machine while it ran (its executor's reading, not
    the shim's: likely the command among them), else None.
    """

    exit_status: int | None    # None if killed by a signal or never ran
    signal: int | None
    timed_out: bool
    error: str | None
    ended: float               # epoch seconds
    exec_error: str | None = None
    max_rss: int | None = None
    cpu_time: float | None = None
    memory_exceeded: bool = False
    prolog_failed: bool = False
    epilog_error: str | None = None
    oom_kills: int | None = None

    def to_dict(self):
        """The result as JSON data (the shim writes the same keys)."""
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data):
        """Rebuild a result from JSON data; ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a result is an object, not %r" % (data,))
        try:
            return cls(exit_status=_opt_int(data["exit_status"]),
                       signal=_opt_int(data["signal"]),
                       timed_out=bool(data["timed_out"]),
                       error=_opt_str(data["error"]),
                       ended=float(data["ended"]),
                       exec_error=_opt_str(data.get("exec_error")),
                       max_rss=_opt_int(data.get("max_rss")),
                       cpu_time=_opt_float(data.get("cpu_time")),
                       memory_exceeded=bool(data.get("memory_exceeded")),
                       prolog_failed=bool(data.get("prolog_failed")),
                       epilog_error=_opt_str(data.get("epilog_error")),
                       oom_kills=_opt_int(data.get("oom_kills")))
        except (KeyError, TypeError) as err:
            raise ValueError("malformed result %r: %s" % (data, err)) from None


@attrs.frozen
class Hooks:
    """A node's own commands around each of its command attempts (shell scripts, run by
    the attempt's shim as the command runs: same user, directory, environment, cgroup and
    output). ``prolog`` runs before the command, which runs only if it exits 0;
    ``epilog`` after it (after a timeout or a kill too) with JQ_EXIT_STATUS and JQ_SIGNAL;
    each for at most ``timeout`` seconds (0: no limit). See shim.c's "Hooks"."""

    prolog: str | None = None
    epilog: str | None = None
    timeout: float = 60.0

    def options(self):
        """The shim's options that carry them."""
        options = []
        if self.prolog:
            options += ["--prolog", self.prolog]
        if self.epilog:
            options += ["--epilog", self.epilog]
        if options:
            options += ["--hook-timeout", repr(float(self.timeout))]
        return options


@attrs.frozen
class AttemptInfo:
    """What the node knows of an attempt; ``result`` None while it runs."""

    job: int
    attempt: int
    pid: int | None            # the command's pid (None until the shim reported it)
    pgid: int | None
    cgroup: str | None
    started: float
    deadline: float | None
    argv: list
    dir: str
    run_as: str | None
    output_size: int
    result: AttemptResult | None


def check_spec(spec):
    """Raise CommandError if spec is malformed (user checks are the executor's)."""
    key = "job %s attempt %s" % (spec.job, spec.attempt)
    if not _is_int(spec.job) or spec.job < 0 or not _is_int(spec.attempt) or spec.attempt < 1:
        raise errors.CommandError("%s: job and attempt must be integers, attempt >= 1" % key)
    if not isinstance(spec.argv, (list, tuple)) or not spec.argv:
        raise errors.CommandError("%s: the command is empty" % key)
    if not all(isinstance(a, str) and "\0" not in a for a in spec.argv):
        raise errors.CommandError("%s: the command's arguments must be strings without "
                                  "NUL characters" % key)
    if not isinstance(spec.dir, str) or not os.path.isabs(spec.dir) or "\0" in spec.dir:
        raise errors.CommandError("%s: the directory must be an absolute path, not %r"
                                  % (key, spec.dir))
    _check_env(key, spec.env)
    if spec.env_base is not None and spec.env_base not in ENV_BASES:
        raise errors.CommandError("%s: env_base must be null, %s, not %r" % (
            key, " or ".join(ENV_BASES), spec.env_base))
    for name in ("timeout", "kill_grace"):
        value = getattr(spec, name)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 <= value < math.inf):
            raise errors.CommandError("%s: %s must be a finite number >= 0, not %r"
                                      % (key, name, value))
    if not _is_int(spec.memory_max) or spec.memory_max < 0:
        raise errors.CommandError("%s: memory_max must be bytes (an integer >= 0), not %r"
                                  % (key, spec.memory_max))


def _check_env(key, env):
    if not isinstance(env, dict):
        raise errors.CommandError("%s: the environment must be a dict" % key)
    for name, value in env.items():
        if (not isinstance(name, str) or not name or "=" in name or "\0" in name
                or not isinstance(value, str) or "\0" in value):
            raise errors.CommandError("%s: bad environment variable %r" % (key, name))


#: Signals that can be sent to every process of a job (the shim forwards 1..31).
SENDABLE_SIGNALS = range(1, 32)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _opt_str(value):
    return None if value is None else str(value)


def _opt_float(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%r is not a number" % (value,))
    return float(value)


def _opt_int(value):
    if value is None:
        return None
    if not _is_int(value):
        raise TypeError("%r is not an integer" % (value,))
    return value
