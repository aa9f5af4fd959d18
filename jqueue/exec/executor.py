"""The executor: starts command attempts on this machine and watches them from the reactor.

Each attempt runs under its own shim (``shim.c``; ``shims`` picks it), which the
executor starts with ``posix_spawn`` in a new session, with an empty environment and the
command's events (SIGCHLD, SIGTERM, SIGUSR1, the forwarding signals) blocked from birth.
The launch, in the reactor thread and without blocking:

1. ``mkdir attempts/<job>.<attempt>`` (or a spare directory renamed so: see
   attemptdir): the claim; an existing directory is returned as it is, so an attempt is
   never started twice;
2. the room of its result on disk (``attemptdir.reserve_result``: a command that fills
   the disk still has its result written), and the cgroup leaf (``containment``);
3. ``posix_spawn`` of the shim, its stdin a pipe; a pidfd on it at once (it is our
   child: its pid cannot be reused before we reap it);
4. ``spec.json`` with the shim's pid, the bounds of its start time (the clock before
   and after the spawn: never read from /proc, which waits for the shim's exec) and the
   boot id;
5. the command's environment down the pipe, with the end mark: only now may the shim
   start the command. If the daemon dies before, the shim sees no end mark and never
   starts it; an attempt directory without spec.json is found lost at the next start.

A step that fails because this machine is out of a resource (a full disk, no file
descriptors, processes or memory) raises CommandResourceError: the master starts the
attempt again later (NOXFER) rather than failing it; other failures are CommandError.

The environment is completed here, on the node that runs the command: the spec's ``env``
goes over its ``env_base``, the minimal base (PATH, LANG, and HOME and USER from this
machine's passwd entry of ``run_as`` or of the daemon's user) or the executor's
``environ`` (the daemon's environment); a spec without ``env_base`` brings it complete.

Watching costs no thread: the pidfd of each live shim is a reader of the reactor
(readable = the shim exited: the result file is read, and the shim reaped if it is a
child of this process); a timer polls the sizes of the output files (every 50 ms for
attempts that wrote recently, backing off to 1 s for quiet ones) and the ``pid`` files,
and polls once more when an attempt ends, so listeners hear "started" before any
"output", and every "output" before "ended". Twisted's SIGCHLD handling reaps only
the processes it spawned itself, so it leaves the shims alone.

Signals go to the shim through its pidfd (race-free), and the shim acts on every
process of the job: SIGTERM = terminate (TERM, KILL after the grace), SIGUSR1 = kill
now, and the real-time signal ``SIGRTMIN + n - 1`` asks it to send signal n (1..31).

After a restart, ``start`` re-adopts every attempt directory: a live shim (pid, start
time and boot id match) is watched again; an ended one reports its true result; a shim
gone without a result, or one of a previous boot, is recorded as lost (after killing
whatever is left in its cgroup) with the reason in ``error``. The directories are looked
for where this executor puts them and where earlier ones did: the state directory's
``attempts/`` and every run directory named in ``exec/run-dirs`` (written at each start:
the run directory in use, and any other that still holds attempts), so a daemon
restarted with another run directory, or without one, still follows the commands it
started before; new attempts go to the new place only.

Events for listeners, in the reactor thread: ``("started", AttemptInfo)`` once the
command's pid is recorded (the shim records it just before the exec, so that no process
it starts goes unrecorded), ``("output", job, attempt, output_size)`` when the output
grew, ``("usage", job, attempt, bytes)`` when what its processes hold resident together
changed (looked at USAGE_FIRST seconds after it started, then every USAGE_POLL),
``("ended", job, attempt, AttemptResult, output_size)`` (the output's final size: nothing
is written after the shim's end). ``start`` returns what it found instead of
announcing it.
"""

import collections
import errno
import fcntl
import logging
import os
import pwd
import resource
import signal
import time

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from jqueue import errors, holes, ratelog, serializer
from jqueue.commandjob import BASE_PATH, ENV_BASE_INHERIT, LOST_UNSTARTED, signal_name
from jqueue.exec import attemptdir, containment, shims
from jqueue.exec import resources as machine
from jqueue.exec.attempt import (
    SENDABLE_SIGNALS,
    AttemptInfo,
    AttemptResult,
    Hooks,
    check_spec,
)
from jqueue.exec.shim import job_rss

logger = logging.getLogger(__name__)

POLL_FAST = 0.05  # seconds between output checks of an attempt that wrote recently
POLL_SLOW = 1.0   # ... of a quiet one (the interval doubles up to this)
USAGE_FIRST = 1.0  # seconds after its start (or adoption) before a running attempt's memory
USAGE_POLL = 5.0   # is first added up, and between two looks; a change of USAGE_STEP bytes
USAGE_STEP = 1 << 20  # or more is reported ("usage")
#: Seconds stop() waits for the leaves of ended attempts to empty: cgroup.kill only sends
#: the signals, and a leaf cannot be removed until its last process has exited.
STOP_LEAF_WAIT = 2.0
#: Spare attempt directories kept for launches at most (attemptdir's docstring).
SPARES_MAX = 1024
#: A forgotten attempt with at most this much output is made a spare by forget itself,
#: in the reactor's thread; a bigger one in a pool thread (emptying its files frees its
#: output, which takes about as long as writing it did). A pool thread for every
#: attempt cost more than the work: 1,000 `true` jobs on one machine, jq-masterd's
#: context switches 80 -> 26 a job, its system CPU 1.6-1.9 -> 1.25 ms a job (the
#: pool's ten threads taking the GIL back after each of a spare's dozen system calls).
SPARE_HERE_BYTES = 256 * 1024
#: Seconds a lookup of the user a command runs as may take (NSS: perhaps a directory
#: server) before that attempt's start fails, to be tried again later (user_soon).
USER_LOOKUP_TIMEOUT = 30.0
NOFILE_WANTED = 65536  # soft RLIMIT_NOFILE the executor asks for (a pidfd per shim)
#: In ``<state_dir>/exec``: the run directories that may hold attempts (a JSON list).
RUN_DIRS_FILE = "run-dirs"
RT_BASE = signal.SIGRTMIN  # "send signal n" is RT_BASE + n - 1 for the shim
#: launch()'s default user: look it up there (see Executor.launch_soon).
LOOK_UP = object()
SHIM_EVENTS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR1} | set(
    range(RT_BASE, RT_BASE + len(SENDABLE_SIGNALS)))
SHIM_DEFAULTS = {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE,
                 signal.SIGXFSZ, signal.SIGALRM, signal.SIGUSR2}

#: Shims spawned by this process and not reaped yet (shared by every Executor in it).
_OWN_SHIMS = set()
#: The soft RLIMIT_NOFILE before an executor raised it (what commands get back).
_ORIGINAL_NOFILE = []
#: Where a process's standing with the OOM killer is (-1000 spared .. 1000 chosen first).
OOM_SCORE_ADJ = "/proc/self/oom_score_adj"


@implementer(IReadDescriptor)
class _ShimWatch:
    """A shim's pidfd as a reader of the reactor: readable once the shim has exited."""

    def __init__(self, fd, on_exit):
        self.fd = fd
        self.on_exit = on_exit

    def fileno(self):
        return self.fd

    def doRead(self):
        self.on_exit()

    def connectionLost(self, reason):
        """The reactor dropped us (at its shutdown): nothing to do."""

    def logPrefix(self):
        return "jq-shim"


class _Attempt:
    """The executor's record of one attempt (its spec.json, what it learnt since)."""

    def __init__(self, key, path, spec):
        self.key = key
        self.path = path
        self.spec = spec
        output = spec.get("output")
        self.output = output if isinstance(output, str) else attemptdir.output_in(path)
        self.pid = None
        self.output_size = 0
        self.result = None
        self.watch = None
        self.interval = POLL_FAST
        self.next_poll = 0.0
        self.rss = None  # bytes its processes held at the last look
        self.next_usage = None

    @property
    def name(self):
        return "job %d attempt %d" % self.key

    @property
    def running(self):
        return self.result is None


class Executor:
    """Runs command attempts on this machine; see the module docstring.

    Every method is called in the reactor thread and none blocks (``start`` compiles
    the C shim on its first use; ``launch`` of an attempt that runs as another user
    looks the user up through NSS, where ``launch_soon`` does it in a thread).
    ``start`` comes first: until then and after ``stop``, the other methods raise
    ProgrammerError. One executor per state directory at a time
    (``start`` raises CommandError otherwise). ``allowed_users``: who ``run_as`` may
    name besides the daemon's own user; ``use_cgroup=False`` forces the process-group
    containment; ``shim``: None (C if it compiles, else Python), "c" or "python";
    ``environ``: what a spec with ``env_base`` "inherit" starts from (default: this
    process's environment, as it is when the executor is made); ``run_dir``: where the
    attempts' directories go (see jqueue.exec.attemptdir; default: the state directory);
    ``hooks``: the node's prolog and epilog (jqueue.exec.attempt.Hooks; default none),
    which each new attempt's shim runs around its command.
    An attempt that was forgotten must not be launched again: its number is spent.
    """

    def __init__(self, state_dir, reactor, allowed_users=(), use_cgroup=True, shim=None,
                 environ=None, run_dir=None, hooks=None):
        self.state_dir = os.path.abspath(state_dir)
        self.run_dir = os.path.abspath(run_dir) if run_dir else self.state_dir
        self._reactor = reactor
        self._allowed_users = frozenset(allowed_users)
        self._hooks = hooks or Hooks()
        self._own_home = user_home()  # (home, name): read once, not at every launch
        self._own_user = self._own_home[1]
        self._environ = dict(os.environ if environ is None else environ)
        self._containment = containment.Containment.find(self.state_dir, use_cgroup)
        self._shim_choice = shim
        self._shim = None
        self._boot_id = attemptdir.boot_id()
        self._attempts = {}
        #: Spare attempt directories (appended in pool threads, taken in the reactor's).
        self._spares = collections.deque()
        self._poll_failures = ratelog.CountedWarning(
            reactor.seconds, "could not look at the attempts' output %d time(s) (the last: "
            "%s); each is tried again %gs later", logger)
        #: This process's standing with the OOM killer (its commands get 0 whatever it is).
        self._own_oom_score_adj = 0
        self._listeners = []
        self._timer = None
        self._lock_fd = None
        self._run_lock_fd = None  # the run directory's, when it is not the state directory
        self._former_run_dirs = []  # run directories of earlier starts, and their locks
        self._former_lock_fds = []
        self._recorded_run_dirs = []  # what exec/run-dirs said at the start
        self._doomed_leaves = set()  # cgroups of lost attempts, killed, not yet empty
        self._lookups = {}  # user name -> the Deferreds waiting for its lookup in flight

    # ---- lifecycle ----

    @property
    def containment(self):
        """How attempts are contained, for ``jqctl running`` and the log."""
        return self._containment.description

    @property
    def _separate_outputs(self):
        return self.run_dir != self.state_dir

    def _output_of(self, job, attempt, path):
        """Where a new attempt's output goes."""
        if self._separate_outputs:
            return attemptdir.output_path(self.state_dir, job, attempt)
        return attemptdir.output_in(path)

    @property
    def shim(self):
        """Which shim runs the attempts (a description; None before start)."""
        return None if self._shim is None else self._shim.description

    def start(self):
        """Take the state directory, pick the shim, re-adopt every attempt; their infos.

        Compiling the C shim on its first use blocks for a moment (once per source version).
        """
        if self._lock_fd is not None:
            raise errors.ProgrammerError("the executor is already started")
        self._lock()
        try:
            self._shim = shims.find_shim(os.path.join(self.state_dir, "exec"),
                                         self._shim_choice)
        except shims.ShimUnavailable as err:
            self._unlock()
            raise errors.CommandError("no command shim: %s" % err) from None
        _raise_nofile()
        self._own_oom_score_adj = _oom_score_adj()
        os.makedirs(attemptdir.attempts_dir(self.run_dir), mode=0o750, exist_ok=True)
        if self._separate_outputs:
            os.makedirs(attemptdir.outputs_dir(self.state_dir), mode=0o750, exist_ok=True)
        logger.info("command attempts: %s, contained by %s", self._shim.description,
                    self.containment)
        infos = [self._info(att) for att in self._adopt_all()]
        self._remember_run_dirs()
        self._schedule_poll()
        return infos

    def stop(self):
        """Stop watching and release the state directory; the attempts keep running."""
        if self._lock_fd is None:
            return
        for att in self._attempts.values():
            self._unwatch(att)
        self._attempts.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        deadline = time.monotonic() + STOP_LEAF_WAIT
        while self._remove_doomed_leaves() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._containment.remove_parent()
        self._unlock()

    def subscribe(self, listener):
        """Call listener(event) for every event (see the module docstring)."""
        self._listeners.append(listener)

    # ---- starting ----

    def launch(self, spec, user=LOOK_UP):
        """Start an attempt (or return the existing one of that job and attempt).

        user: what ``look_up_user(spec.run_as)`` answered, when the caller looked it up ahead
        (``launch_soon`` does, in a thread); by default it is looked up here."""
        self._require_started()
        key = (spec.job, spec.attempt)
        if key in self._attempts:
            return self._info(self._attempts[key])
        check_spec(spec)
        if user is LOOK_UP:
            user = self._user_of(spec)
        env = self.environment(spec, user)
        path = attemptdir.attempt_path(self.run_dir, spec.job, spec.attempt)
        try:
            self._make_attempt_dir(path)
        except FileExistsError:
            return self._info(self._adopt(key, path, announce=True))
        except OSError as err:
            raise errors.command_start_error("job %d attempt %d: cannot create %s"
                                             % (spec.job, spec.attempt, path), err) from None
        att = self._spawn(spec, path, user, env)
        self._attempts[key] = att
        self._watch(att)
        return self._info(att)

    def _make_attempt_dir(self, path):
        """Make an attempt's directory: a spare renamed (attemptdir's docstring says why),
        else a new one; FileExistsError if there is one, ENOSPC if the disk is full (even
        for a spare: see attemptdir.check_room)."""
        attemptdir.check_room(os.path.dirname(path))
        while self._spares:
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "exists", path)
            try:
                os.rename(self._spares.popleft(), path)
                return
            except OSError as err:
                logger.debug("a spare attempt directory cannot be used: %s", err)
        try:
            os.mkdir(path, 0o750)
        except FileNotFoundError:  # the attempts' directory removed (a cleanup): again
            parent = os.path.dirname(path)
            if os.path.isdir(os.path.dirname(os.path.dirname(parent))):  # the run dir's
                logger.warning("the attempts' directory %s is gone: making it again", parent)
                os.makedirs(parent, mode=0o750, exist_ok=True)
            os.mkdir(path, 0o750)

    def launch_soon(self, spec):
        """launch(spec), its user looked up off the event loop (see user_soon): the
        attempt's info, or a Deferred of it when spec runs as another user than the
        daemon's."""
        found = self.user_soon(spec.run_as)
        if found is None:
            return self.launch(spec, None)

        def refused(failure):
            failure.trap(errors.CommandError)
            raise _attempt_error(spec, failure.value)

        return found.addCallbacks(lambda user: self.launch(spec, user), refused)

    def user_soon(self, name):
        """None if commands run as name without a lookup (the daemon's own user), else a
        Deferred of look_up_user(name) (fired in the reactor's thread; CommandError if
        refused), looked up in the reactor's thread pool: NSS may ask a directory server,
        and a slow one must not stall this daemon's other work. Lookups of a name asked
        for while one is in flight wait for that one (a directory server that hangs holds
        one thread, not one per attempt); one that has not answered within
        USER_LOOKUP_TIMEOUT fails with CommandResourceError (the attempt starts later)."""
        if not self._needs_lookup(name):
            return None
        found = defer.Deferred()
        timer = self._reactor.callLater(USER_LOOKUP_TIMEOUT, self._lookup_late, name, found)
        waiting = self._lookups.get(name)
        if waiting is not None:
            waiting.append((found, timer))
            return found
        waiting = self._lookups[name] = [(found, timer)]

        def look_up():
            try:
                answer = (True, self.look_up_user(name))
            except Exception as err:  # noqa: BLE001 - whatever it is, its waiters hear
                answer = (False, err)
            self._reactor.callFromThread(self._looked_up, name, waiting, answer)

        self._reactor.callInThread(look_up)
        return found

    def _looked_up(self, name, waiting, answer):
        if self._lookups.get(name) is waiting:
            del self._lookups[name]
        ok, value = answer
        for found, timer in waiting:
            if not timer.active():
                continue  # it gave up waiting
            timer.cancel()
            if ok:
                found.callback(value)
            else:
                found.errback(value)

    def _lookup_late(self, name, found):
        found.errback(errors.CommandResourceError(
            "the lookup of user %s (NSS) has not answered within %gs" % (
                name, USER_LOOKUP_TIMEOUT)))

    def _needs_lookup(self, name):
        return name is not None and name != self._own_user

    def look_up_user(self, name):
        """None (the daemon's own user) or (name, uid, gid, supplementary group ids, home)
        of the user commands run as; CommandError if refused. Blocks (NSS), and may be
        called from any thread. The groups are looked up here, through the daemon's C
        library and its NSS (the shim may be linked with musl, which has none)."""
        entry = self._entry_of(name)
        if entry is None:
            return None
        try:
            groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
        except OSError as err:
            raise errors.CommandError("cannot look up the groups of user %s: %s"
                                      % (entry.pw_name, err.strerror or err)) from None
        return entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir or "/"

    def _user_of(self, spec):
        """look_up_user for spec's attempt (an error names it)."""
        try:
            return self.look_up_user(spec.run_as)
        except errors.CommandError as err:
            raise _attempt_error(spec, err) from None

    def allow_users(self, names):
        """Commands may run as names from now on (a reload); a start checks again."""
        self._allowed_users = frozenset(names)

    def set_hooks(self, hooks):
        """Attempts launched from now on run hooks (a reload); those running keep theirs."""
        self._hooks = hooks or Hooks()

    def check_user(self, name):
        """CommandError unless commands may run as user name here (the daemon's own user,
        or one of allowed_users), without a lookup: whether the user exists is known
        when an attempt starts (the check at submit never waits for NSS)."""
        if self._needs_lookup(name) and name not in self._allowed_users:
            raise errors.CommandError(
                "user %s may not run commands on this node (allowed: %s)" % (
                    name, ", ".join(sorted(self._allowed_users | {self._own_user}))))

    def _entry_of(self, name):
        if not self._needs_lookup(name):
            return None
        self.check_user(name)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise errors.CommandError("user %s does not exist on this node" % name) from None

    def environment(self, spec, user=LOOK_UP):
        """The complete environment of a spec's command: its ``env`` over its ``env_base``
        (see AttemptSpec), built here, as this node and its daemon see things (user: what
        look_up_user answered, by default looked up here)."""
        if user is LOOK_UP:
            user = self._user_of(spec)
        home = self._own_home if user is None else (user[4], user[0])
        return complete_environment(spec.env, spec.env_base, spec.run_as, self._environ, home)

    def _spawn(self, spec, path, user, env):
        """Steps 2 to 5 of a launch (module docstring); cleans up if one fails."""
        cgroup = None
        output = self._output_of(spec.job, spec.attempt, path)
        oom_kills = machine.oom_kills()  # before it runs: see _oom_named
        try:
            attemptdir.reserve_result(path)
        except OSError as err:
            self._discard(path, None, output)
            raise errors.command_start_error("job %d attempt %d: no room for its result"
                                             % (spec.job, spec.attempt), err) from None
        try:
            cgroup = self._containment.create_leaf(spec.job, spec.attempt)
            # Its start time is known to be between the two: read from /proc at once, it
            # waited for the shim's exec to be complete (0.2 ms a launch on a busy machine).
            earliest = attemptdir.boot_ticks()
            pid, env_pipe = self._spawn_shim(spec, path, cgroup, user, output)
            latest = attemptdir.boot_ticks()
        except OSError as err:
            self._discard(path, cgroup, output)
            raise errors.command_start_error("job %d attempt %d: cannot start the shim"
                                             % (spec.job, spec.attempt), err) from None
        started = time.time()
        record = {
            "job": spec.job, "attempt": spec.attempt, "argv": list(spec.argv),
            "dir": spec.dir, "run_as": spec.run_as, "timeout": spec.timeout,
            "kill_grace": spec.kill_grace, "started": started,
            "deadline": started + spec.timeout if spec.timeout else None,
            "boot_id": self._boot_id, "shim_pid": pid, "shim_start": earliest,
            "shim_start_max": latest, "cgroup": cgroup,
            "shim": self._shim.kind, "rt_base": RT_BASE, "output": output,
            "memory_max": spec.memory_max, "oom_kills": oom_kills,
        }
        att = _Attempt((spec.job, spec.attempt), path, record)
        try:
            att.watch = _ShimWatch(os.pidfd_open(pid), lambda: self._shim_exited(att))
            attemptdir.write_spec(path, record)
        except OSError as err:
            os.close(env_pipe)  # no end mark: the shim gives up without starting anything
            if att.watch is not None:
                os.close(att.watch.fd)
            self._reap(pid, block=True)
            self._discard(path, cgroup, output)
            raise errors.command_start_error("job %d attempt %d: cannot record the attempt"
                                             % (spec.job, spec.attempt), err) from None
        _send_env(env_pipe, env)
        return att

    def _spawn_shim(self, spec, path, cgroup, user, output):
        """posix_spawn the shim; (its pid, the write end of its stdin pipe)."""
        options = ["--attempt-dir", path, "--dir", spec.dir, "--timeout",
                   repr(float(spec.timeout)), "--grace", repr(float(spec.kill_grace)),
                   "--rt-base", str(RT_BASE), "--output", output]
        if cgroup:
            options += ["--cgroup", cgroup]
        if user:
            name, uid, gid, groups, _ = user
            options += ["--user", name, str(uid), str(gid), "--groups", ",".join(map(str, groups))]
        if _ORIGINAL_NOFILE:
            options += ["--nofile", str(_ORIGINAL_NOFILE[0])]
        if self._own_oom_score_adj:
            options += ["--oom-score-adj", "0"]
        if spec.memory_max:
            options += ["--memory-max", str(spec.memory_max)]
        options += self._hooks.options() + ["--"] + list(spec.argv)
        read_end, write_end = _pipe_above_stdio()
        actions = [
            (os.POSIX_SPAWN_DUP2, read_end, 0),
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),  # the shim writes its complaints to shim.log
        ]
        try:
            try:
                pid = self._posix_spawn(options, actions)
            except FileNotFoundError:
                if not self._shim_rebuilt():
                    raise
                pid = self._posix_spawn(options, actions)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        _OWN_SHIMS.add(pid)
        return pid, write_end

    def _posix_spawn(self, options, actions):
        """posix_spawn the shim with options (its command line after its own path)."""
        return os.posix_spawn(self._shim.executable, list(self._shim.argv_prefix) + options,
                              {}, file_actions=actions, setsid=True, setsigmask=SHIM_EVENTS,
                              setsigdef=SHIM_DEFAULTS)

    def _shim_rebuilt(self):
        """After a spawn found no shim: if its binary was removed from the state
        directory (by hand: a cleanup), build it again as the start did (the Python shim
        if the C one cannot be); whether there is a new one to try."""
        if os.path.exists(self._shim.executable):
            return False
        logger.warning("the command shim %s is gone: building it again",
                       self._shim.executable)
        try:
            self._shim = shims.find_shim(os.path.join(self.state_dir, "exec"),
                                         self._shim_choice)
        except shims.ShimUnavailable as err:
            logger.error("no command shim: %s", err)
            return False
        return True

    def _discard(self, path, cgroup, output):
        """Undo a launch that failed before the command could start."""
        if cgroup:
            containment.remove_leaf(cgroup)
        _remove_attempt(path, output)

    # ---- re-adoption ----

    def _adopt_all(self):
        """Re-adopt every attempt directory, wherever an executor of this state directory
        put it (the module docstring); the attempts, in name order."""
        found = []
        places = [self.run_dir] + self._former_run_dirs
        for place in places:
            for trash in attemptdir.trash(place):
                key = attemptdir.parse_name(
                    os.path.basename(trash)[len(attemptdir.TRASH_PREFIX):])
                _remove_attempt(trash, self._found_output(key, trash) if key else None)
            for spare in attemptdir.spares(place):
                if place == self.run_dir and len(self._spares) < SPARES_MAX:
                    self._spares.append(spare)
                else:
                    attemptdir.remove(spare)
        self._take_up_orphan_outputs(places)
        for place in places:
            base = attemptdir.attempts_dir(place)
            try:
                names = os.listdir(base)
            except FileNotFoundError:
                continue
            for name in names:
                key = attemptdir.parse_name(name)
                path = os.path.join(base, name)
                if key is None or not os.path.isdir(path):
                    continue
                if key in self._attempts:
                    logger.error("job %d attempt %d: a second directory %s is ignored (it "
                                 "is followed from %s)", *key, path, self._attempts[key].path)
                    continue
                found.append(self._adopt(key, path, announce=False))
        found.sort(key=lambda att: os.path.basename(att.path))
        keep = {att.spec.get("cgroup") for att in found if att.running}
        for leaf in self._containment.leftover_leaves(keep):
            logger.warning("removing leftover cgroup %s", leaf)
            containment.kill_leaf(leaf)
            containment.remove_leaf(leaf)
        return found

    def _take_up_orphan_outputs(self, places):
        """An output whose attempt directory is gone (a reboot emptied the run directory)
        gets a directory again, with a lost result: adopted below as an attempt that ended
        lost, its output still there for the master to copy."""
        try:
            names = os.listdir(attemptdir.outputs_dir(self.state_dir))
        except FileNotFoundError:
            return
        base = attemptdir.attempts_dir(self.run_dir)
        for name in names:
            path = os.path.join(base, name)
            if attemptdir.parse_name(name) is None or any(
                    os.path.isdir(os.path.join(attemptdir.attempts_dir(place), name))
                    for place in places):
                continue
            logger.warning("job %s attempt %s: its directory in %s is gone (a reboot?): "
                           "recorded as lost", *name.split("."), self.run_dir)
            os.mkdir(path, 0o750)
            attemptdir.write_result(path, AttemptResult(
                exit_status=None, signal=None, timed_out=False, ended=time.time(),
                error="attempt lost: its record in the run directory is gone (the node "
                      "rebooted?)"))

    def _adopt(self, key, path, announce):
        """Take up an attempt directory found on disk (see the module docstring).

        A step that fails (no descriptor left: EMFILE) raises and leaves the attempt
        unknown, to be adopted again by the next call: known but never followed, it
        stayed running for ever."""
        spec = attemptdir.read_spec(path)
        att = _Attempt(key, path, spec or dict(_placeholder_spec(key, path),
                                               output=self._found_output(key, path)))
        self._attempts[key] = att
        try:
            att.output_size = attemptdir.output_size(att.output)
            pid = attemptdir.read_pid(path)
            att.pid = pid[0] if pid else None
            att.result = _oom_named(attemptdir.read_result(path), att.spec)
            if att.result is not None:
                self._clean_cgroup(att)
            elif spec is None:
                self._declare_lost(att, LOST_UNSTARTED, announce)
            elif spec.get("boot_id") != self._boot_id:
                self._declare_lost(att, "attempt lost: the node rebooted", announce)
            elif not self._rewatch(att):
                # It may have ended meanwhile.
                att.result = _oom_named(attemptdir.read_result(path), att.spec)
                if att.result is None:
                    self._declare_lost(att, self._supervisor_died(att), announce)
        except BaseException:
            self._unwatch(att)
            if self._attempts.get(key) is att:
                del self._attempts[key]
            raise
        return att

    def _found_output(self, key, path):
        """The output of an attempt directory found without spec.json: in it if it is
        there (started without a run directory), else in outputs/ if it is there, else
        where this executor would put it."""
        for output in (attemptdir.output_in(path),
                       attemptdir.output_path(self.state_dir, *key)):
            if os.path.exists(output):
                return output
        return self._output_of(key[0], key[1], path)

    def _remember_run_dirs(self):
        """Name in exec/run-dirs the run directories that hold this state directory's
        attempts now: the one in use, and any earlier one some of them are still in."""
        held = [place for place in self._former_run_dirs if place != self.state_dir
                and any(_is_within(att.path, place) for att in self._attempts.values())]
        wanted = ([self.run_dir] if self._separate_outputs else []) + held
        path = self._run_dirs_file()
        if wanted == self._recorded_run_dirs:
            return
        try:
            if wanted:
                attemptdir.write_atomic(path, serializer.dumps_bytes(wanted))
            else:
                os.unlink(path)
        except OSError as err:
            logger.error("cannot record the run directories in %s: %s (attempts in %s are "
                         "not found again if the run directory changes before the next "
                         "start)", path, err.strerror, ", ".join(wanted))

    def _run_dirs_file(self):
        return os.path.join(self.state_dir, "exec", RUN_DIRS_FILE)

    def _read_run_dirs(self):
        """The run directories exec/run-dirs names ([] if none or unreadable)."""
        try:
            with open(self._run_dirs_file(), "rb") as handle:
                names = serializer.loads(handle.read())
        except FileNotFoundError:
            return []
        except (OSError, errors.ParseError) as err:
            logger.error("ignoring %s: %s", self._run_dirs_file(), err)
            return []
        if not isinstance(names, list):
            return []
        return [name for name in names if isinstance(name, str) and os.path.isabs(name)]

    def _rewatch(self, att):
        """Watch the attempt's shim again if it is still the recorded process."""
        pid, start = att.spec.get("shim_pid"), att.spec.get("shim_start")
        latest = att.spec.get("shim_start_max", start)  # none: an exact start
        if not (isinstance(pid, int) and pid > 0 and isinstance(start, int)
                and isinstance(latest, int)):
            return False
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, ValueError):  # gone (other errors: not now, raised)
            return False
        try:
            same = attemptdir.started_within(pid, start, latest)  # after opening: race-free
        except OSError:
            os.close(fd)
            raise
        if not same:
            os.close(fd)
            return False
        att.watch = _ShimWatch(fd, lambda: self._shim_exited(att))
        self._watch(att)
        return True

    def _supervisor_died(self, att):
        tail = attemptdir.shim_log_tail(att.path)
        return "attempt lost: its supervisor died" + (" (%s)" % tail if tail else "")

    def _declare_lost(self, att, message, announce):
        """Kill what is left of a lost attempt and record its loss as its result."""
        logger.warning("%s: %s", att.name, message)
        self._kill_remains(att)
        att.result = AttemptResult(exit_status=None, signal=None, timed_out=False,
                                   error=message, ended=time.time())
        try:
            attemptdir.write_result(att.path, att.result)
        except OSError as err:
            logger.error("%s: cannot record its loss: %s", att.name, err)
        if announce:
            self._emit(("ended", att.key[0], att.key[1], att.result, self._output_size(att)))

    def _kill_remains(self, att):
        """SIGKILL whatever is left of an attempt whose shim is gone."""
        cgroup = att.spec.get("cgroup")
        if cgroup:
            containment.kill_leaf(cgroup)
        for name in (attemptdir.PID, attemptdir.HOOK_PID):
            pid = attemptdir.read_pid(att.path, name)
            if pid and attemptdir.group_is_ours(pid[0], pid[1], att.spec.get("boot_id"),
                                                self._boot_id):
                try:  # the command (or a hook), or the orphans it left in its group
                    os.killpg(pid[0], signal.SIGKILL)
                except OSError:
                    pass
        self._clean_cgroup(att)

    def _clean_cgroup(self, att):
        """Remove the leaf of an ended attempt, now or (if it is still emptying) soon."""
        cgroup = att.spec.get("cgroup")
        if cgroup and os.path.isdir(cgroup) and not containment.remove_leaf(cgroup):
            self._doomed_leaves.add(cgroup)
            self._schedule_poll(self._reactor.seconds() + POLL_FAST)

    def _remove_doomed_leaves(self):
        """Kill and remove the leaves of ended attempts; whether any is still there."""
        for leaf in list(self._doomed_leaves):
            containment.kill_leaf(leaf)
            if containment.remove_leaf(leaf):
                self._doomed_leaves.discard(leaf)
        return bool(self._doomed_leaves)

    # ---- watching ----

    def _watch(self, att):
        self._reactor.addReader(att.watch)
        att.next_poll = self._reactor.seconds() + POLL_FAST
        if self._timer is None or not self._timer.active() or \
                self._timer.getTime() > att.next_poll:
            self._schedule_poll(att.next_poll)

    def _unwatch(self, att):
        if att.watch is not None:
            self._reactor.removeReader(att.watch)
            os.close(att.watch.fd)
            att.watch = None

    def _shim_exited(self, att):
        """The shim's pidfd is readable: read the result and tell the listeners."""
        if att.watch is None:
            return
        self._unwatch(att)
        self._reap(att.spec.get("shim_pid"))
        self._read_end(att)

    def _read_end(self, att):
        """Read an ended attempt's last output size and its result; tell the listeners.

        A read that fails (no descriptor left: EMFILE) is tried again a second later: the
        shim's pidfd, which said it ended, is closed already, so nothing else would."""
        if (self._lock_fd is None or self._attempts.get(att.key) is not att
                or att.result is not None):
            return  # stopped, or forgotten, meanwhile
        try:
            self._poll_one(att, self._reactor.seconds(), final=True)
            result = attemptdir.read_result(att.path)
            if result is None:
                self._declare_lost(att, self._supervisor_died(att), announce=True)
                return
        except OSError as err:
            logger.warning("job %d attempt %d ended, but its end cannot be read yet (%s); "
                           "trying again in %gs", att.key[0], att.key[1], err, POLL_SLOW)
            self._reactor.callLater(POLL_SLOW, self._read_end, att)
            return
        att.result = result = _oom_named(result, att.spec)
        self._emit(("ended", att.key[0], att.key[1], result, att.output_size))

    def _reap(self, pid, block=False):
        """Reap a shim if this process spawned it (a re-adopted shim is not our child)."""
        if pid in _OWN_SHIMS:
            try:
                os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                pass
            _OWN_SHIMS.discard(pid)

    def _schedule_poll(self, when=None):
        """Arm the output timer for the earliest attempt due (or for when, if earlier)."""
        due = [att.next_poll for att in self._attempts.values() if att.watch is not None]
        if when is not None:
            due.append(when)
        if not due:
            return
        when = min(due)
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= when:
                return
            self._timer.cancel()
        delay = max(0.0, when - self._reactor.seconds())
        self._timer = self._reactor.callLater(delay, self._poll)

    def _poll(self):
        self._timer = None
        now = self._reactor.seconds()
        failed = None
        for att in list(self._attempts.values()):
            if att.watch is not None and att.next_poll <= now:
                try:
                    self._poll_one(att, now)
                except OSError as err:  # no descriptor left (EMFILE): next time
                    att.next_poll, failed = now + POLL_SLOW, err
        if failed is not None:
            self._poll_failures.count(failed, POLL_SLOW)
        self._remove_doomed_leaves()
        self._schedule_poll(now + POLL_SLOW if self._doomed_leaves else None)

    def _poll_one(self, att, now, final=False):
        """Look for the command's pid and for new output; adapt the interval.

        Output is reported only once the pid is (so "started" comes first), or at the end.
        """
        att.next_poll = now + att.interval
        if att.pid is None:
            pid = attemptdir.read_pid(att.path)
            if pid is not None:
                att.pid = pid[0]
                self._emit(("started", self._info(att)))
            elif not final:
                return
        if not final and att.pid is not None:
            if att.next_usage is None:
                att.next_usage = now + USAGE_FIRST
            elif now >= att.next_usage:
                self._look_at_usage(att, now)
        size = attemptdir.output_size(att.output)
        if size > att.output_size:
            att.output_size = size
            att.interval = POLL_FAST
            self._emit(("output", att.key[0], att.key[1], size))
        else:
            att.interval = min(att.interval * 2, POLL_SLOW)
        att.next_poll = now + att.interval

    def _look_at_usage(self, att, now):
        """What the attempt's processes hold now: a "usage" event if it changed."""
        att.next_usage = now + USAGE_POLL
        rss = job_rss(att.spec.get("cgroup"), att.spec.get("shim_pid"))
        if att.rss is None or abs(rss - att.rss) >= USAGE_STEP:
            att.rss = rss
            self._emit(("usage", att.key[0], att.key[1], rss))

    def _emit(self, event):
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("a listener of the executor failed on %r", event[:3])

    # ---- control ----

    def signal(self, job, attempt, signum):
        """Send signal signum (1..31) to every process of the job; (sent, message)."""
        att = self._running(job, attempt)
        if att is None:
            return False, "job %d attempt %d is not running" % (job, attempt)
        if isinstance(signum, bool) or signum not in SENDABLE_SIGNALS:
            return False, "signal %r cannot be sent to a job (only 1 to 31)" % (signum,)
        return self._tell_shim(att, att.spec.get("rt_base", RT_BASE) + signum - 1,
                               "%s sent to job %d attempt %d" % (signal_name(signum), job,
                                                                 attempt))

    def terminate(self, job, attempt):
        """SIGTERM to every process of the job, SIGKILL after its kill_grace."""
        att = self._running(job, attempt)
        if att is None:
            return False, "job %d attempt %d is not running" % (job, attempt)
        return self._tell_shim(att, signal.SIGTERM, "terminating job %d attempt %d: SIGTERM, "
                               "SIGKILL after %g s" % (job, attempt, att.spec["kill_grace"]))

    def kill(self, job, attempt):
        """SIGKILL to every process of the job, now."""
        att = self._running(job, attempt)
        if att is None:
            return False, "job %d attempt %d is not running" % (job, attempt)
        return self._tell_shim(att, signal.SIGUSR1, "killing job %d attempt %d" % (job, attempt))

    def _running(self, job, attempt):
        self._require_started()
        att = self._attempts.get((job, attempt))
        if att is None or att.watch is None or attemptdir.has_result(att.path):
            return None
        return att

    def _tell_shim(self, att, sig, message):
        try:
            signal.pidfd_send_signal(att.watch.fd, sig)
        except ProcessLookupError:
            return False, "%s is not running" % att.name
        return True, message

    # ---- reading, listing, forgetting ----

    def read(self, job, attempt, offset, max_bytes):
        """Up to max_bytes of the attempt's output from byte offset."""
        att = self._known(job, attempt)
        if offset < 0 or max_bytes < 0:
            raise errors.ParameterError("offset and max_bytes must be >= 0, not %r and %r"
                                        % (offset, max_bytes))
        return attemptdir.read_output(att.output, offset, max_bytes)

    def release(self, job, attempt, start, end):
        """The master needs no more of the attempt's output from byte start to end (past
        its log's cap, or out of a service's log): free their disk blocks here, so that a
        command printing for ever does not fill this disk. Nothing if unknown. Done in a
        pool thread: freeing what a command wrote at disk speed takes the kernel about as
        long as writing it did, time the reactor owes to everything else."""
        att = self._attempts.get((job, attempt))
        if att is not None:
            self._reactor.callInThread(_release, att.name, att.output, start, end)

    def attempts(self, job=None):
        """Every attempt not forgotten (of one job, if given), running or ended, by job
        and attempt."""
        self._require_started()
        return [self._info(self._attempts[key]) for key in sorted(self._attempts)
                if job is None or key[0] == job]

    def info(self, job, attempt):
        """The AttemptInfo of one attempt (CommandError if unknown)."""
        return self._info(self._known(job, attempt))

    def forget(self, job, attempt):
        """Remove an ended attempt's directory (nothing if unknown; refused while running)."""
        self._require_started()
        att = self._attempts.get((job, attempt))
        if att is None:
            return
        if att.running:
            raise errors.CommandError("job %d attempt %d is still running: only an ended "
                                      "attempt can be forgotten" % (job, attempt))
        cgroup = att.spec.get("cgroup")
        if cgroup and os.path.isdir(cgroup):
            containment.kill_leaf(cgroup)
            containment.remove_leaf(cgroup)
        trash = attemptdir.discard(att.path)
        if trash is not None:
            outside = att.output if os.path.dirname(att.output) != att.path else None
            if att.output_size <= SPARE_HERE_BYTES:
                self._keep_as_spare(trash, outside)
            else:  # freeing its output takes about as long as writing it did
                self._reactor.callInThread(self._keep_as_spare, trash, outside)
        del self._attempts[(job, attempt)]

    def _keep_as_spare(self, trash, outside):
        """A forgotten attempt's output goes, then its directory becomes a spare or goes
        too (here or in a pool thread: see SPARE_HERE_BYTES)."""
        _remove_output(trash, outside)
        spare = None
        if len(self._spares) < SPARES_MAX:
            try:
                spare = attemptdir.make_spare(trash)
            except OSError as err:
                logger.debug("cannot keep %s as a spare: %s", trash, err)
        if spare is None:
            attemptdir.remove(trash)
        else:
            self._spares.append(spare)

    def _known(self, job, attempt):
        self._require_started()
        att = self._attempts.get((job, attempt))
        if att is None:
            raise errors.CommandError("job %d attempt %d is not known on this node"
                                      % (job, attempt))
        return att

    def _info(self, att):
        spec = att.spec
        return AttemptInfo(
            job=att.key[0], attempt=att.key[1], pid=att.pid, pgid=att.pid,
            cgroup=spec.get("cgroup"), started=spec.get("started"),
            deadline=spec.get("deadline"), argv=list(spec.get("argv") or []),
            dir=spec.get("dir") or "", run_as=spec.get("run_as"),
            output_size=self._output_size(att), result=att.result)

    @staticmethod
    def _output_size(att):
        """The attempt's output size: what was polled, or the file's if it grew since."""
        return max(att.output_size, attemptdir.output_size(att.output))

    # ---- the state directory's lock ----

    def _require_started(self):
        if self._lock_fd is None:
            raise errors.ProgrammerError("the executor is not started")

    def _lock(self):
        """Lock the state directory and the run directory; find (and lock) the earlier run
        directories that may hold attempts: the state directory's own attempts/ and those
        exec/run-dirs names (one another executor holds now is left to it)."""
        self._lock_fd = _flock(os.path.join(self.state_dir, "exec"), self.state_dir)
        if self._separate_outputs:
            try:
                self._run_lock_fd = _flock(self.run_dir, self.run_dir)
            except BaseException:
                self._unlock()
                raise
        former = [] if not self._separate_outputs else [self.state_dir]
        self._recorded_run_dirs = self._read_run_dirs()
        for place in self._recorded_run_dirs:
            if place in (self.run_dir, self.state_dir) or not os.path.isdir(place):
                continue
            try:
                self._former_lock_fds.append(_flock(place, place, create=False))
            except (errors.CommandError, OSError) as err:
                logger.error("attempts in %s are not followed: %s", place,
                             getattr(err, "strerror", None) or err)
                continue
            former.append(place)
        self._former_run_dirs = former

    def _unlock(self):
        for fd in [self._lock_fd, self._run_lock_fd] + self._former_lock_fds:
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._run_lock_fd = None
        self._former_lock_fds, self._former_run_dirs = [], []


def _oom_named(result, spec):
    """result with its oom_kills set if a SIGKILL its node did not send ended the command
    (not its timeout, not its memory_max) while the kernel's OOM killer killed processes
    on this machine (more than when its spec was written); else result as it is."""
    if (result is None or result.signal != signal.SIGKILL or result.timed_out
            or result.memory_exceeded or result.error or spec.get("oom_kills") is None):
        return result
    now = machine.oom_kills()
    if now is None or now <= spec["oom_kills"]:
        return result
    return attrs.evolve(result, oom_kills=now - spec["oom_kills"])


def _release(name, output, start, end):
    if not holes.punch(output, start, end):
        logger.debug("%s: cannot free its output from %d to %d", name, start, end)


def _flock(directory, what, create=True):
    """An exclusive lock on directory/lock (created with it); CommandError if taken."""
    if create:
        os.makedirs(directory, mode=0o750, exist_ok=True)
    fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise errors.CommandError("another executor uses %s" % what) from None
        raise
    return fd


def _is_within(path, directory):
    """Whether path is an attempt directory of the run directory `directory`."""
    return os.path.dirname(path) == attemptdir.attempts_dir(directory)


def complete_environment(env, env_base, run_as, environ, own=None):
    """A command's complete environment: env over env_base (None: env is complete; see
    AttemptSpec), HOME and USER from this machine's passwd entry of run_as (own: that
    entry, (home, name), already read), "inherit" starting from environ."""
    if env_base is None:
        return dict(env)
    if env_base == ENV_BASE_INHERIT:
        complete = dict(environ)
    else:
        home, name = own or user_home(run_as)
        complete = {"PATH": BASE_PATH, "HOME": home, "USER": name, "LANG": "C.UTF-8"}
    complete.update(env)
    return complete


def user_home(user=None):
    """(home, name) from this machine's passwd entry of user (None: this process's
    effective user); ("/", user) if it has none."""
    try:
        entry = pwd.getpwnam(user) if user else pwd.getpwuid(os.geteuid())
    except KeyError:
        return "/", user or ""
    return entry.pw_dir or "/", entry.pw_name


def _attempt_error(spec, err):
    """A CommandError (CommandResourceError if err is one) about spec's attempt: err's
    message after the job and attempt."""
    cls = type(err) if isinstance(err, errors.CommandError) else errors.CommandError
    return cls("job %d attempt %d: %s" % (spec.job, spec.attempt, errors.error_message(err)))


def _remove_attempt(path, output):
    """Remove an attempt's output (if outside its directory), then its directory: a
    directory that is gone never leaves an output behind (see _adopt_all)."""
    _remove_output(path, output)
    attemptdir.remove(path)


def _remove_output(path, output):
    """Remove an attempt's output if it is outside the attempt's directory path."""
    if output and os.path.dirname(output) != path:
        try:
            os.unlink(output)
        except FileNotFoundError:
            pass


def _placeholder_spec(key, path):
    """What is known of an attempt directory without spec.json (a launch that crashed)."""
    try:
        started = os.stat(path).st_mtime
    except OSError:
        started = 0.0
    return {"job": key[0], "attempt": key[1], "argv": [], "dir": "", "run_as": None,
            "started": started, "deadline": None, "cgroup": None, "kill_grace": 0}


def _pipe_above_stdio():
    """A close-on-exec pipe whose ends are not 0, 1 or 2 (a daemon may have closed them)."""
    read_end, write_end = os.pipe()
    ends = []
    for fd in (read_end, write_end):
        if fd <= 2:
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(fd)
            fd = moved
        ends.append(fd)
    return ends[0], ends[1]


def _send_env(fd, env):
    """Write the command's environment and the end mark to the shim, then close."""
    data = b"".join(("%s=%s" % item).encode("utf-8", "surrogateescape") + b"\0"
                    for item in env.items()) + b"\0"
    try:
        if len(data) > 60000 and hasattr(fcntl, "F_SETPIPE_SZ"):
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(len(data) + 4096, 1 << 20))
            except OSError:
                pass  # then the write waits for the shim to read
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        pass  # the shim died: its pidfd tells the rest
    finally:
        os.close(fd)


def _oom_score_adj():
    """This process's oom_score_adj (0 if unknown). The unit files give the daemons
    OOMScoreAdjust=-500, which their commands must not inherit: a command starts at 0
    whatever the daemon's (the shim keeps the daemon's, so that it outlives the command
    whose end it records)."""
    try:
        with open(OOM_SCORE_ADJ, "rb") as stream:
            return int(stream.read())
    except (OSError, ValueError):
        return 0


def _raise_nofile():
    """Raise the soft RLIMIT_NOFILE (a pidfd per running attempt); commands get the old one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if not _ORIGINAL_NOFILE:
        _ORIGINAL_NOFILE.append(soft)
    wanted = NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(hard, NOFILE_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        logger.info("raised the open files limit from %d to %d", soft, wanted)
