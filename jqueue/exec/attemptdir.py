"""The running-attempt directory: what a node knows of its attempts, on disk.

``<state_dir>/attempts/<job>.<attempt>/`` holds, for each attempt not yet forgotten:

``spec.json``
    written by the executor once the shim exists, before the command may start: job,
    attempt, argv, dir, run_as, timeout, kill_grace, started (epoch), deadline (epoch or
    null), boot_id, shim_pid, shim_start and shim_start_max (clock ticks since boot, the
    unit of field 22 of ``/proc/<pid>/stat``: the shim started between the two, read
    before and after its spawn; one from before them has shim_start alone, its exact
    start), cgroup (path or null), shim ("c" or "python"), rt_base (where the shim's
    forwarding signals start), memory_max (bytes, 0 for none). Not the environment: it
    may hold secrets (it reaches the shim on a pipe).
``output``
    the command's stdout and stderr, appended by the command itself (created by the
    shim's child just before the exec; a missing file reads as empty). With a *run
    directory* (below) it is ``<state_dir>/outputs/<job>.<attempt>`` instead, and
    spec.json names it (``output``).
``pid``
    ``PID STARTTIME``, written by the shim before it lets the prepared command exec.
``hook-pid``
    the same, of the node's prolog or epilog while one runs (jqueue.exec.attempt.Hooks).
``result``
    written by the shim when no process of the job is left (JSON: exit_status, signal,
    timed_out, error, ended, exec_error, max_rss, cpu_time, memory_exceeded,
    prolog_failed, epilog_error), or by the executor when it finds the attempt lost.
``shim.log``
    the shim's own complaints, if it had any; quoted when a shim dies without a result.

Every file is replaced atomically (temp file and rename), but for spec.json, which is
written once, into the directory the executor has just made or a spare: its first byte
last, so that a crash in the middle leaves a file that starts with a NUL (or nothing),
which does not parse and reads as no spec.json. None is fsynced: after a reboot, the
boot id says every attempt of the previous boot is lost anyway. These directories can
therefore live in a *run directory* on tmpfs (``/run``), where creating and deleting
files costs no disk metadata:
``<run_dir>/attempts/<job>.<attempt>/``; the output stays on disk in
``<state_dir>/outputs/`` (a command's output must not fill memory), and an output whose
directory is gone (the tmpfs was emptied by a reboot) is taken up again as a lost
attempt, so that the master can still copy it; attempts started before the run directory
changed stay where they are and are followed there (``exec/run-dirs``, see
jqueue.exec.executor). A process is the one recorded only if its pid exists and its
start time and the boot id match, so a recycled pid is never mistaken for it. A
directory leaves only when the master has recorded the final state and calls ``forget``.

A forgotten directory is kept as a *spare* (``.spare-<job>.<attempt>``, never an attempt's
name) for the next launch, each file under the name its next writer opens it by
(spec.json, output, and ``.pid.tmp`` and ``.result.tmp``, the shim's temp files): an
attempt then creates no file and deletes none. A spare frees no disk block either (on a
disk mounted with ``discard``, each block freed waits for the device: three a `true`
job, 0.3-0.6 ms of the reactor's time): its spec.json keeps its bytes behind a NUL that
makes it unparsable (a launch that dies before writing its own is lost, never taken for
the old one), the temp files keep theirs (their writers write over and trim them, and
nothing reads them), only a non-empty output is emptied. On ext4 without a journal (the
disks jqueue is measured on) every new inode costs a scan past the inodes deleted in the
last minute or more (``recently_deleted``), and a node running hundreds of short commands
a second spent two thirds of its processor time there (perf, 1,000 `true` jobs).
"""

import errno
import os
import shutil
import time

from jqueue import errors, fileread, serializer
from jqueue.exec.attempt import AttemptResult

ATTEMPTS = "attempts"
OUTPUTS = "outputs"
SPEC = "spec.json"
OUTPUT = "output"
PID = "pid"
HOOK_PID = "hook-pid"
RESULT = "result"
SHIM_LOG = "shim.log"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
#: Nanoseconds in a clock tick of /proc (USER_HZ, as the kernel shows start times).
_NS_PER_TICK = 10 ** 9 // os.sysconf("SC_CLK_TCK")


def attempts_dir(state_dir):
    """The directory of every attempt of a node."""
    return os.path.join(state_dir, ATTEMPTS)


def attempt_path(state_dir, job, attempt):
    """The directory of one attempt."""
    return os.path.join(attempts_dir(state_dir), "%d.%d" % (job, attempt))


def outputs_dir(state_dir):
    """Where the outputs of attempts go when their directories are in a run directory."""
    return os.path.join(state_dir, OUTPUTS)


def output_path(state_dir, job, attempt):
    """The output file of one attempt whose directory is in a run directory."""
    return os.path.join(outputs_dir(state_dir), "%d.%d" % (job, attempt))


def output_in(path):
    """The output file inside an attempt directory (without a run directory)."""
    return os.path.join(path, OUTPUT)


def parse_name(name):
    """(job, attempt) from a directory name ``<job>.<attempt>``, else None."""
    job, dot, attempt = name.partition(".")
    if dot and job.isdigit() and attempt.isdigit() and job.isascii() and attempt.isascii():
        return int(job), int(attempt)
    return None


def boot_id(path=BOOT_ID_FILE):
    """This boot's id (changes at every reboot)."""
    with open(path) as f:
        return f.read().strip()


def proc_start_time(pid):
    """A process's start time (clock ticks since boot), or None if it does not exist.

    Any other failure (no descriptor left: EMFILE) raises: read as "gone", it made a
    running attempt lost, and its command killed."""
    try:
        stat = fileread.read_file("/proc/%d/stat" % pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def boot_ticks():
    """Clock ticks since boot now: the clock and unit of a process's start time in
    ``/proc/<pid>/stat`` (its CLOCK_BOOTTIME at its fork, rounded down)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _NS_PER_TICK


def started_within(pid, earliest, latest):
    """Whether process pid exists and started between ticks earliest and latest (both
    included); what proc_start_time raises, raised."""
    start = proc_start_time(pid)
    return start is not None and earliest <= start <= latest


def group_is_ours(pid, start_time, recorded_boot_id, current_boot_id):
    """Whether process group pid, made by the process recorded as (pid, start_time) in
    that boot, holds none but its processes (if it still exists).

    A group's id is not given to another process while any member lives, so once its
    leader is gone the group is ours as long as no process has taken that id over (one
    that has may have made a group of its own). Signalling it while the leader lives (or
    is a zombie) reaches it as well. The one case this cannot tell: the id taken over,
    the taker's own group made, and the taker gone before this check, leaving members.
    """
    if recorded_boot_id != current_boot_id or not pid or pid <= 0 or start_time is None:
        return False
    now = proc_start_time(pid)
    return now is None or now == start_time


def write_atomic(path, data, mode=0o640):
    """Replace path by data (bytes): temp file in the same directory, then rename. The
    temp file is written over, not emptied first, so that room kept in it serves
    (reserve_result)."""
    dirname, basename = os.path.split(path)
    tmp = os.path.join(dirname, ".%s.tmp" % basename)
    _write_new(tmp, data, 0, mode, remove_on_error=True, trim=True)
    os.rename(tmp, path)


#: Bytes an attempt's result temp file holds from its launch on: the shim (or the
#: executor, for a lost attempt) writes the result over them, so that a command that
#: filled the disk still has its true result recorded.
RESULT_ROOM = 4096


def check_room(path):
    """OSError (ENOSPC) if path's filesystem is full: less than RESULT_ROOM bytes free
    (for an unprivileged writer). A launch into a new directory would fail to keep its
    result's room then; one into a spare, which keeps its files' blocks, would not fail
    by itself, and starting a command on a full disk helps nobody: it waits (NOXFER).
    A path that does not exist is not checked (its maker will say), nor one on a
    filesystem that reports no size (a tmpfs mounted with size=0 has no limit)."""
    try:
        fs = os.statvfs(path)
    except FileNotFoundError:
        return
    if fs.f_blocks and fs.f_bavail * fs.f_frsize < RESULT_ROOM:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def reserve_result(path):
    """Give an attempt about to start (in directory path) the room of its result now;
    OSError (ENOSPC) if the disk has not got it."""
    fd = os.open(os.path.join(path, ".%s.tmp" % RESULT),
                 os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        if os.pwrite(fd, bytes(RESULT_ROOM), 0) < RESULT_ROOM:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    finally:
        os.close(fd)


def _write_new(path, data, flags, mode=0o640, remove_on_error=False, trim=False):
    """Create path (with flags) and write data to it (with trim, cut what was beyond)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | flags, mode)
    try:
        fileread.write_all(fd, data)
        if trim:
            os.ftruncate(fd, len(data))
    except BaseException:
        os.close(fd)
        if remove_on_error:
            os.unlink(path)
        raise
    os.close(fd)


def _read(path):
    try:
        return fileread.read_file(path)
    except FileNotFoundError:
        return None


def write_spec(path, spec):
    """Write an attempt's spec.json (a dict, see the module docstring), once, into a
    directory just made or taken from the spares, over the old one's bytes (no block
    freed): all but its first byte, cut to size, then the first byte over the spare's
    NUL (a new file's first byte reads as NUL until then). No temp file and rename (a
    rename costs as much as a file here): a spec.json cut short anywhere, new bytes
    before old ones included, starts with the NUL and does not parse."""
    data = serializer.dumps_bytes(spec)
    fd = os.open(os.path.join(path, SPEC), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        os.lseek(fd, 1, os.SEEK_SET)
        fileread.write_all(fd, data[1:])
        os.ftruncate(fd, len(data))
        os.pwrite(fd, data[:1], 0)  # one byte: written whole or not at all
    finally:
        os.close(fd)


def read_spec(path):
    """The spec.json of an attempt as a dict; None if missing or unreadable."""
    try:
        data = _read(os.path.join(path, SPEC))
        spec = None if data is None else serializer.loads(data)
    except (OSError, errors.ParseError):
        return None
    return spec if isinstance(spec, dict) else None


def read_pid(path, name=PID):
    """(pid, start_time) of the command (of a hook: HOOK_PID) as the shim wrote them, or
    None."""
    data = _read(os.path.join(path, name))
    try:
        pid, start = data.split()
        return int(pid), int(start)
    except (AttributeError, ValueError):
        return None


def read_result(path):
    """The attempt's AttemptResult, or None while there is none (or it is unreadable)."""
    data = _read(os.path.join(path, RESULT))
    if data is None:
        return None
    try:
        return AttemptResult.from_dict(serializer.loads(data.decode("utf-8", "replace")))
    except (errors.ParseError, ValueError):  # a torn or foreign file is no result
        return None


def has_result(path):
    """Whether the attempt's result file exists."""
    return os.path.exists(os.path.join(path, RESULT))


def write_result(path, result):
    """Record a result the executor decided (an attempt found lost)."""
    write_atomic(os.path.join(path, RESULT), serializer.dumps_bytes(result.to_dict()))


def output_size(output):
    """How many bytes of output the attempt has written (output: its output file)."""
    try:
        return os.stat(output).st_size
    except FileNotFoundError:
        return 0


def read_output(output, offset, max_bytes):
    """Up to max_bytes of output from offset (fewer at the end, b"" past it)."""
    try:
        fd = os.open(output, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        return os.pread(fd, max_bytes, offset)
    finally:
        os.close(fd)


def shim_log_tail(path, limit=300):
    """The last line(s) the shim wrote to its stderr (empty string if none)."""
    data = _read(os.path.join(path, SHIM_LOG)) or b""
    return data[-limit:].decode("utf-8", "replace").strip()


def remove(path):
    """Remove an attempt's directory and everything in it."""
    shutil.rmtree(path, ignore_errors=True)


#: Prefix of a forgotten attempt's directory waiting to be removed (never an attempt name).
TRASH_PREFIX = ".forgotten-"


def discard(path):
    """Take an attempt's directory out of the attempts at once (a rename); return where it
    went: the caller removes it later (remove), off its busy thread."""
    trash = os.path.join(os.path.dirname(path), TRASH_PREFIX + os.path.basename(path))
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return None
    except OSError:
        remove(path)
        return None
    return trash


#: Prefix of a spare directory (see the module docstring; never an attempt name).
SPARE_PREFIX = ".spare-"
#: What a spare keeps of an attempt's files: the name each goes under (others are removed).
_SPARE_NAMES = {SPEC: SPEC, OUTPUT: OUTPUT, PID: ".pid.tmp", RESULT: ".result.tmp",
                ".pid.tmp": ".pid.tmp", ".result.tmp": ".result.tmp", SHIM_LOG: None,
                HOOK_PID: None, ".hook-pid.tmp": None}


def make_spare(trash_path):
    """Turn a forgotten attempt's directory (discard's answer) into a spare: its files
    made unparsable, emptied or renamed as the module docstring says, the directory
    renamed last (a spare never holds a spec.json that parses, nor output); the spare's
    path, or None (then remove it) if it holds anything an attempt does not write."""
    names = os.listdir(trash_path)
    if not set(names) <= _SPARE_NAMES.keys():
        return None
    for name in names:
        path = os.path.join(trash_path, name)
        target = _SPARE_NAMES[name]
        if target is None:
            os.unlink(path)
            continue
        if name == SPEC:
            _unparsable(path)
        elif name == OUTPUT:
            _empty(path)
        if target != name:
            os.rename(path, os.path.join(trash_path, target))
    spare = os.path.join(os.path.dirname(trash_path),
                         SPARE_PREFIX + os.path.basename(trash_path)[len(TRASH_PREFIX):])
    os.rename(trash_path, spare)
    return spare


def _empty(path):
    """Truncate path to nothing if it holds anything, and close it after: ext4
    (auto_da_alloc) makes the first close after a truncation to zero flush the file,
    which a plain truncate would leave to the next writer's file, flushed then at every
    reader's close (each read of an attempt's output opens and closes it: 200 MB of
    output went 700 -> 480 MB/s)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _unparsable(path):
    """Make a spec.json unparsable in place: a NUL over its first byte (no JSON starts
    so), its blocks kept (see the module docstring)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, b"\0", 0)
    finally:
        os.close(fd)


def spares(state_dir):
    """The spare directories of a node's attempts."""
    return _prefixed(state_dir, SPARE_PREFIX)


def trash(state_dir):
    """Directories of forgotten attempts not removed yet (a daemon died meanwhile)."""
    return _prefixed(state_dir, TRASH_PREFIX)


def _prefixed(state_dir, prefix):
    """The paths in a node's attempts directory whose names start with prefix."""
    base = attempts_dir(state_dir)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return [os.path.join(base, n) for n in names if n.startswith(prefix)]
