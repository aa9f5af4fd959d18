"""jq-shim in Python: the fallback when the C shim (shim.c) cannot be compiled.

Same command line, protocol and behaviour as shim.c, whose comment explains them; run as
``python -I -S shim.py ARGS...`` so that it imports only the standard library and reads
no PYTHON* variable. It imports as little as it can (no json: 9 ms; ctypes, 4 ms, only for
the subreaper's prctl), and still starts commands about 20 ms later than the C shim.
This file is a script: it imports nothing of jqueue.
"""

import ctypes
import errno
import os
import resource
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
EXIT_NOT_STARTED = 3
FORWARDABLE = 31
POLL_MIN = 0.01
POLL_MAX = 0.5
MAX_WAIT = 1e6  # longest single wait (s); longer timeouts take several
MAX_WALK = 4096  # processes a signal's walk over the descendants visits at most
MEMORY_POLL = 0.25  # seconds between samples of the job's memory (--memory-max)
MEMORY_POLL_NEAR = 0.05  # the same once it holds half its limit or more
PAGE_SIZE = os.sysconf("SC_PAGESIZE")
COMMAND, PROLOG, EPILOG = "command", "prolog", "epilog"  # what runs (see shim.c's hooks)


class Usage(Exception):
    """The command line is wrong."""


class CannotRun(Exception):
    """The command child cannot run the command (sent to the shim through the pipe)."""


def parse_args(args):
    """The options (a dict) and the command's argv."""
    opts = {"timeout": 0.0, "grace": 0.0, "cgroup": None, "user": None, "groups": None,
            "nofile": -1, "oom_score_adj": None, "rt_base": -1, "attempt_dir": None,
            "dir": None, "output": None, "memory_max": 0, "prolog": None, "epilog": None,
            "hook_timeout": 0.0}
    i = 0
    while i < len(args) and args[i] != "--":
        name = args[i]
        if i + 1 >= len(args):
            raise Usage("option without a value")
        if name == "--user" and i + 3 < len(args):
            opts["user"] = (args[i + 1], _number(args[i + 2], int), _number(args[i + 3], int))
            i += 4
            continue
        key = name[2:].replace("-", "_")
        if not name.startswith("--") or key not in opts or key == "user":
            raise Usage("unknown option %s" % name)
        value = args[i + 1]
        if key in ("timeout", "grace", "hook_timeout"):
            value = _number(value, float)
        elif key in ("nofile", "rt_base", "memory_max"):
            value = _number(value, int)
        elif key == "oom_score_adj":
            value = _number(value, int)
            if not -1000 <= value <= 1000:
                raise Usage("bad --oom-score-adj")
        elif key == "groups":
            value = [_number(g, int) for g in value.split(",")] if value else []
        opts[key] = value
        i += 2
    if i + 1 >= len(args):
        raise Usage("no command after --")
    if not opts["attempt_dir"] or not opts["dir"]:
        raise Usage("--attempt-dir and --dir are required")
    if (opts["user"] is None) != (opts["groups"] is None):
        raise Usage("--user and --groups go together")
    if opts["rt_base"] < signal.SIGRTMIN or opts["rt_base"] + FORWARDABLE - 1 > signal.SIGRTMAX:
        raise Usage("--rt-base out of the real-time signal range")
    return opts, args[i + 1:]


def _number(text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise Usage("bad number %r" % text) from None
    if not value >= 0:
        raise Usage("bad number %r" % text)
    return value


def read_env():
    """The environment sent on stdin, or None if it did not end with the end mark."""
    chunks = []
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data.endswith(b"\0") or (len(data) > 1 and not data.endswith(b"\0\0")):
        return None
    env = {}
    for entry in data[:-1].split(b"\0")[:-1]:
        key, _, value = entry.partition(b"=")
        env[key] = value
    return env


def write_atomic(attempt_dir, name, data):
    """Replace attempt_dir/name by data: a temp file (written over, not emptied first:
    the executor keeps room for the result there), then rename."""
    path = os.path.join(attempt_dir, name)
    tmp = os.path.join(attempt_dir, ".%s.tmp" % name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    os.rename(tmp, path)


def start_time(pid):
    """Field 22 of /proc/PID/stat (clock ticks since boot), 0 if unreadable."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 else 0


class Shim:
    """One attempt's supervisor; see shim.c for the behaviour."""

    def __init__(self, opts, argv):
        self.opts = opts
        self.argv = argv
        self.self_pid = os.getpid()
        self.stop_requested = False  # a stop request came during the prolog
        self.usage = (None, None)  # the command's (max_rss, cpu_time), once it ended
        self.cpu_before = 0.0  # CPU seconds of the children waited for before the command
        rt = opts["rt_base"]
        self.events = {signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR1}
        self.events.update(range(rt, rt + FORWARDABLE))
        self.begin_phase(COMMAND)

    def begin_phase(self, phase):
        """Forget the last process run (the command's state is copied before a hook)."""
        self.phase = phase
        self.main_pid = 0
        self.main_done = False
        self.status = 0
        self.pgid_alive = False
        self.timed_out = False
        self.memory_exceeded = False
        self.max_rss = 0  # the largest sum of resident sets sampled (bytes)
        self.next_sample = 0.0  # monotonic; 0: no sampling
        self.terminating = False
        self.killing = False
        self.exec_error = None  # why the exec failed, as the child reported it
        self.deadline = 0.0
        self.grace_end = 0.0
        self.poll = POLL_MIN

    # ---- the command child ----

    def run_command(self, argv, env, report, go):
        """In the forked child: prepare, wait for the go, exec the command; never returns."""
        try:
            self.prepare_child()
        except CannotRun as err:
            os.write(report, str(err).encode("utf-8", "surrogateescape"))
            os._exit(125)
        os.write(report, b"\0")
        if os.read(go, 1) != b"g":
            os._exit(125)  # the shim died before recording this process: never run
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as err:
            message = ("cannot execute %s: %s" % (argv[0][:300], err.strerror)).encode(
                "utf-8", "surrogateescape")
            os.write(2, b"jq-shim: %s\n" % message)
            os.write(report, message)
            os._exit(127 if err.errno == errno.ENOENT else 126)
        os._exit(127)

    def prepare_child(self):
        opts = self.opts
        os.setsid()
        if opts["cgroup"]:
            _step("cannot join cgroup %s" % opts["cgroup"], _write_file,
                  os.path.join(opts["cgroup"], "cgroup.procs"), b"%d\n" % os.getpid())
        if opts["oom_score_adj"] is not None:
            _step("cannot set the oom_score_adj to %d" % opts["oom_score_adj"], _write_file,
                  "/proc/self/oom_score_adj", b"%d\n" % opts["oom_score_adj"])
        path = opts["output"] or os.path.join(opts["attempt_dir"], "output")
        out = _step("cannot open the output file %s" % path, os.open,
                    path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        null = _step("cannot open /dev/null", os.open, "/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        if opts["user"]:
            name, uid, gid = opts["user"]
            _step("cannot switch to user %s: setgroups" % name, os.setgroups, opts["groups"])
            _step("cannot switch to user %s: setgid %d" % (name, gid), os.setgid, gid)
            _step("cannot switch to user %s: setuid %d" % (name, uid), os.setuid, uid)
        _step("cannot change to directory %s" % opts["dir"], os.chdir, opts["dir"])
        if opts["nofile"] >= 0:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if hard == resource.RLIM_INFINITY or opts["nofile"] <= hard:
                resource.setrlimit(resource.RLIMIT_NOFILE, (opts["nofile"], hard))
        for sig in range(1, signal.NSIG):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])

    def start_process(self, argv, env):
        """Fork argv (the command, or a hook); None once it exec'd (or failed to exec),
        else the error.

        After the go, the pipe ends at the exec (close-on-exec), or says why the exec
        failed: the command's failure (127 or 126, as in sh), which the result names."""
        read_end, write_end = os.pipe()
        go_read, go_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.close(go_write)
            self.run_command(argv, env, write_end, go_read)
        os.close(write_end)
        os.close(go_read)
        self.main_pid = pid
        chunks, failed = [], None
        while True:  # a NUL byte once the child is prepared, or why it cannot run
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            if failed is None and not chunks and chunk[:1] == b"\0":
                self.record_pid(pid)
                try:
                    os.write(go_write, b"g")
                except OSError:
                    pass
                failed, chunk = [], chunk[1:]
            (chunks if failed is None else failed).append(chunk)
        os.close(read_end)
        os.close(go_write)
        failed = b"".join(failed or ())
        if failed:
            self.exec_error = failed[:511].decode("utf-8", "replace")
        error = b"".join(chunks)
        return error.decode("utf-8", "replace") if error else None

    def record_pid(self, pid):
        """A/pid for the command, A/hook-pid for a hook."""
        name = "pid" if self.phase == COMMAND else "hook-pid"
        text = "%d %d\n" % (pid, start_time(pid))
        try:
            write_atomic(self.opts["attempt_dir"], name, text.encode())
        except OSError as err:
            _complain("cannot write the %s file: %s" % (name, err.strerror))

    # ---- every process of the job ----

    def cgroup_populated(self):
        if not self.opts["cgroup"]:
            return False
        try:
            with open(os.path.join(self.opts["cgroup"], "cgroup.events")) as f:
                return "populated 1" in f.read()
        except OSError:
            return False

    def signal_one(self, pid, sig, with_group):
        """Signal pid once: through its own process group if it has one not signalled
        yet in this round (then pid is reached as a member), else directly."""
        group = -1
        if with_group:
            try:
                group = os.getpgid(pid)
            except OSError:
                pass
        if group > 0 and group != os.getpgrp():
            if group not in self.signalled:
                self.signalled.add(group)
                _quietly(os.killpg, group, sig)
            return
        _quietly(os.kill, pid, sig)

    def signal_cgroup(self, sig):
        """Signal the cgroup's members; True if that reached every process of the job."""
        cgroup = self.opts["cgroup"]
        if not cgroup:
            return False
        if sig == signal.SIGKILL:
            try:
                _write_file(os.path.join(cgroup, "cgroup.kill"), b"1")
                return False  # KILL again through groups and children: harmless
            except OSError:
                pass
        procs = os.path.join(cgroup, "cgroup.procs")
        if not os.access(procs, os.R_OK):
            return False
        for pid in listed(procs, self.self_pid):
            self.signal_one(pid, sig, False)
        return sig != signal.SIGKILL

    def signal_children(self, sig):
        path = "/proc/%d/task/%d/children" % (self.self_pid, self.self_pid)
        if os.access(path, os.R_OK):
            self.signal_descendants(sig)
            return
        for name in os.listdir("/proc"):
            if name.isdigit() and _parent(int(name)) == self.self_pid:
                self.signal_one(int(name), sig, True)

    def signal_descendants(self, sig):
        """Every descendant, each through its own group (see shim.c's signal_descendants)."""
        for pid in descendants(self.self_pid):
            self.signal_one(pid, sig, True)

    # ---- the job's memory ----

    def sample_memory(self, now):
        rss = job_rss(self.opts["cgroup"], self.self_pid)
        self.max_rss = max(self.max_rss, rss)
        near = rss >= self.opts["memory_max"] // 2
        self.next_sample = now + (MEMORY_POLL_NEAR if near else MEMORY_POLL)
        if rss > self.opts["memory_max"]:
            self.memory_exceeded = True
            self.next_sample = 0.0
            self.begin_kill()

    def signal_job(self, sig):
        """Every process of the job, once (see shim.c's signal_job)."""
        self.signalled = set()
        if self.signal_cgroup(sig):
            return
        if self.pgid_alive:
            try:
                os.killpg(self.main_pid, sig)
                self.signalled.add(self.main_pid)
            except ProcessLookupError:
                self.pgid_alive = False
            except OSError:
                pass
        self.signal_children(sig)

    # ---- the life of the attempt ----

    def begin_terminate(self):
        if self.terminating or self.killing:
            return
        self.terminating = True
        self.grace_end = time.monotonic() + self.opts["grace"]
        self.signal_job(signal.SIGTERM)
        self.signal_job(signal.SIGCONT)
        self.poll = POLL_MIN

    def begin_kill(self):
        self.terminating = False
        self.killing = True
        self.signal_job(signal.SIGKILL)
        self.poll = POLL_MIN

    def reap(self):
        """Reap every child that ended; True if no child is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return False
            if pid == self.main_pid:
                self.main_done = True
                self.status = status

    def on_signal(self, sig):
        rt = self.opts["rt_base"]
        if self.phase == EPILOG:
            return  # the command is over: nothing of it is left to stop or signal
        if self.phase == PROLOG:
            if sig not in (signal.SIGTERM, signal.SIGUSR1):
                return  # a forwarded signal is the command's
            self.stop_requested = True
        if sig == signal.SIGTERM:
            self.begin_terminate()
        elif sig == signal.SIGUSR1:
            self.begin_kill()
        elif rt <= sig < rt + FORWARDABLE:
            self.signal_job(sig - rt + 1)

    def next_wait(self, now):
        wait = None
        if not self.main_done and self.deadline and not self.timed_out:
            wait = self.deadline - now
        if self.terminating and (wait is None or self.grace_end - now < wait):
            wait = self.grace_end - now
        if (self.terminating or self.killing) and (wait is None or self.poll < wait):
            wait = self.poll
        if self.next_sample and not self.killing and (
                wait is None or self.next_sample - now < wait):
            wait = self.next_sample - now
        return None if wait is None else min(max(wait, 0.001), MAX_WAIT)

    def wait_event(self, now):
        wait = self.next_wait(now)
        if wait is None:
            info = signal.sigwaitinfo(self.events)
        else:
            info = signal.sigtimedwait(self.events, wait)
            if self.terminating or self.killing:
                self.poll = min(self.poll * 2, POLL_MAX)
        if info is not None:
            self.on_signal(info.si_signo)

    def supervise(self):
        while True:
            no_child = self.reap()
            now = time.monotonic()
            if not self.main_done and self.deadline and now >= self.deadline \
                    and not self.timed_out:
                self.timed_out = True
                self.begin_terminate()
            if self.next_sample and now >= self.next_sample and not self.killing:
                self.sample_memory(now)
            if self.terminating and now >= self.grace_end:
                self.begin_kill()
            elif self.killing:
                self.signal_job(signal.SIGKILL)
            populated = self.cgroup_populated()
            if self.main_done:
                if no_child and not populated:
                    return
                self.begin_terminate()
            self.wait_event(now)

    # ---- the result ----

    def note_usage(self):
        """The command's use of the machine (see shim.c's note_usage)."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime - self.cpu_before
        self.usage = (max(usage.ru_maxrss * 1024, self.max_rss), max(cpu, 0.0))

    def write_result(self, error, prolog_failed=False, epilog_error=None):
        status = sig = None
        if error is None and self.main_done:
            if os.WIFEXITED(self.status):
                status = os.WEXITSTATUS(self.status)
            elif os.WIFSIGNALED(self.status):
                sig = os.WTERMSIG(self.status)
        exec_error = self.exec_error if error is None else None
        max_rss, cpu_time = self.usage if error is None else (None, None)
        text = ('{"exit_status":%s,"signal":%s,"timed_out":%s,"error":%s,"ended":%.6f,'
                '"exec_error":%s,"max_rss":%s,"cpu_time":%s,"memory_exceeded":%s,'
                '"prolog_failed":%s,"epilog_error":%s}\n') % (
            _json_int(status), _json_int(sig), "true" if self.timed_out else "false",
            "null" if error is None else json_string(error), time.time(),
            "null" if exec_error is None else json_string(exec_error), _json_int(max_rss),
            "null" if cpu_time is None else "%.3f" % cpu_time,
            "true" if self.memory_exceeded else "false", "true" if prolog_failed else "false",
            "null" if epilog_error is None else json_string(epilog_error))
        write_atomic(self.opts["attempt_dir"], "result", text.encode("ascii"))

    def remove_cgroup(self):
        if self.opts["cgroup"]:
            try:
                os.rmdir(self.opts["cgroup"])
            except FileNotFoundError:
                pass
            except OSError as err:
                _complain("cannot remove %s: %s" % (self.opts["cgroup"], err.strerror))

    def setup_self(self):
        try:
            os.setsid()
        except OSError:
            if os.getsid(0) != self.self_pid:
                _complain("setsid failed")
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            _complain("cannot become a subreaper: %s" % os.strerror(ctypes.get_errno()))
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, self.events)

    def main(self):
        self.setup_self()
        env = read_env()
        null = os.open("/dev/null", os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0)
            os.close(null)
        if env is None:
            self.remove_cgroup()
            self.write_result("attempt lost: the daemon died while starting it")
            return EXIT_NOT_STARTED
        error, prolog_failed, ran = None, False, False
        if self.opts["prolog"]:
            hook, why = self.run_hook(PROLOG, self.opts["prolog"], env)
            ran = hook >= 0
            prolog_failed = ran and (hook > 0 or self.stop_requested)
            if hook < 0:
                error = why
            elif self.stop_requested:
                error = "stopped by request during the prolog: the command never ran"
            elif hook > 0:
                error = "prolog %s: the command never ran" % why
        self.begin_phase(COMMAND)
        if error is None:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.cpu_before = usage.ru_utime + usage.ru_stime
            error = self.run_process(self.argv, env, self.opts["timeout"], sample=True)
            ran = ran or error is None
            if error is None:
                self.note_usage()
        epilog_error = None
        if self.opts["epilog"] and ran:
            command = dict(vars(self))
            hook, why = self.run_hook(EPILOG, self.opts["epilog"], self.epilog_env(env))
            epilog_error = why if hook else None
            vars(self).update(command)
        self.remove_cgroup()
        self.write_result(error, prolog_failed, epilog_error)
        return 0

    def run_process(self, argv, env, timeout, sample=False):
        """Start argv (the command, or a hook) and supervise it until none of its processes
        remains (see shim.c's run_process); None if it started, else why not."""
        error = self.start_process(argv, env)
        self.pgid_alive = error is None
        if error is None and timeout > 0:
            self.deadline = time.monotonic() + timeout
        if error is None and sample and self.opts["memory_max"] > 0:
            self.next_sample = time.monotonic() + MEMORY_POLL
        self.supervise()
        return error

    def run_hook(self, phase, script, env):
        """Run a hook (/bin/sh -c script) until none of its processes remains: (0, None)
        if it succeeded, (1, how it ended) if not, (-1, why) if it could not start."""
        self.begin_phase(phase)
        error = self.run_process(["/bin/sh", "-c", script], env, self.opts["hook_timeout"])
        if error is not None:
            return -1, error
        if self.exec_error:
            return 1, self.exec_error
        if self.timed_out:
            return 1, "timed out after %gs" % self.opts["hook_timeout"]
        if os.WIFSIGNALED(self.status):
            return 1, "killed by signal %d" % os.WTERMSIG(self.status)
        if os.WEXITSTATUS(self.status):
            return 1, "exited with status %d" % os.WEXITSTATUS(self.status)
        return 0, None

    def epilog_env(self, env):
        """The command's environment and how it ended, for the epilog."""
        status = sig = b""
        if self.main_done and os.WIFEXITED(self.status):
            status = b"%d" % os.WEXITSTATUS(self.status)
        if self.main_done and os.WIFSIGNALED(self.status):
            sig = b"%d" % os.WTERMSIG(self.status)
        return {**env, b"JQ_EXIT_STATUS": status, b"JQ_SIGNAL": sig}


# ---- the processes of a job (the executor uses these too, for what a job holds now) ----


def listed(path, own):
    """The pids listed in path (cgroup.procs, a /proc children list), but own."""
    try:
        with open(path) as f:
            pids = [int(word) for word in f.read().split()]
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if pid > 0 and pid != own]


def descendants(root):
    """Every descendant of root, through each process's threads' children lists (see
    shim.c's visit_descendants); at most MAX_WALK processes."""
    stack, visited = [root], 0
    while stack and visited < MAX_WALK:
        pid = stack.pop()
        visited += 1
        task_dir = "/proc/%d/task" % pid
        try:
            tasks = os.listdir(task_dir)
        except OSError:
            continue
        for task in tasks:
            pids = listed(os.path.join(task_dir, task, "children"), root)
            yield from pids
            stack.extend(pids)


def job_rss(cgroup, shim_pid):
    """The sum of the resident sets (bytes) of every process of a job: its cgroup's members
    if the cgroup can be read, else the descendants of its shim (see shim.c's job_rss)."""
    procs = os.path.join(cgroup, "cgroup.procs") if cgroup else None
    pids = (listed(procs, shim_pid) if procs and os.access(procs, os.R_OK)
            else descendants(shim_pid))
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/statm" % pid, "rb") as f:
                total += int(f.read().split()[1]) * PAGE_SIZE
        except (OSError, ValueError, IndexError):
            pass
    return total


def json_string(text):
    """text as a JSON string of ASCII characters (the json module costs 9 ms to import)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if 0x20 <= code < 0x7f and char not in '"\\':
            out.append(char)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)))
        else:
            out.append("\\u%04x" % code)
    out.append('"')
    return "".join(out)


def _json_int(value):
    return "null" if value is None else "%d" % value


def _step(what, func, *args):
    """func(*args), or CannotRun("what: reason") if it fails."""
    try:
        return func(*args)
    except OSError as err:
        raise CannotRun("%s: %s" % (what, err.strerror or err)) from None


def _write_file(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _parent(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _quietly(func, *args):
    try:
        func(*args)
    except OSError:
        pass


_LOG_DIR = []  # the attempt directory, once known: complaints go to its shim.log


def _complain(message):
    """Note a problem in A/shim.log (created only then; the shim's stderr is /dev/null)."""
    line = "jq-shim: %s\n" % message
    sys.stderr.write(line)
    sys.stderr.flush()
    if _LOG_DIR:
        try:
            fd = os.open(os.path.join(_LOG_DIR[0], "shim.log"),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError:
            pass


def main(argv):
    if "--attempt-dir" in argv[:-1]:
        _LOG_DIR.append(argv[argv.index("--attempt-dir") + 1])
    try:
        opts, command = parse_args(argv)
    except Usage as err:
        _complain(str(err))
        return 2
    try:
        return Shim(opts, command).main()
    except BaseException:
        import traceback
        _complain(traceback.format_exc().strip().replace("\n", " | "))
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
