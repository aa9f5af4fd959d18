"""What every jqueue daemon needs: logging, file limits, systemd notification, stop signals.

Daemons run in the foreground and log to standard error through the standard library's
logging; Twisted's own log events are bridged into it once. Under systemd (journald
reading our standard error) each line carries its syslog priority instead of a timestamp.
"""

import argparse
import ctypes
import gc
import logging
import os
import resource
import signal
import socket
import sys
import threading
import traceback

from twisted.application import service
from twisted.internet import defer, task

import jqueue
from jqueue import errors
from jqueue.daemon import config as configmod
from jqueue.exec.attempt import Hooks
from jqueue.run.commands import monotonic_timers
from jqueue.store import faults

logger = logging.getLogger(__name__)

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
#: sd-daemon(3) priority prefixes understood by journald.
_JOURNAL_PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))

_twisted_bridged = False


class StartupError(errors.GenericError):
    """The daemon cannot start: a directory, the socket or an opcode module is unusable."""


class _JournalFormatter(logging.Formatter):
    """Prefixes each line with its syslog priority (``<4>``) for journald."""

    def format(self, record):
        priority = next((p for level, p in _JOURNAL_PRIORITIES if record.levelno >= level), 7)
        return "<%d>%s" % (priority, super().format(record))


def _stderr_is_journal(stream):
    """Whether stream is the journald stream systemd gave us ($JOURNAL_STREAM)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(stream.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (ValueError, OSError, AttributeError):
        return False


def setup_logging(level="info", stream=None, bridge_twisted=True):
    """Log to stream (standard error) at level, and bridge Twisted's logging (once)."""
    global _twisted_bridged
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    if _stderr_is_journal(stream):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    logging.captureWarnings(True)
    if bridge_twisted and not _twisted_bridged:
        from twisted.logger import STDLibLogObserver, globalLogBeginner
        globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")],
                                         redirectStandardIO=False)
        _twisted_bridged = True


def raise_nofile_limit():
    """Raise the soft limit of open files to the hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _nr_open()
    if soft != resource.RLIM_INFINITY and soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as err:
        logger.warning("cannot raise the open files limit from %d to %d: %s", soft, target, err)
        return soft
    return target


def _nr_open():
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as stream:
            return int(stream.read())
    except (OSError, ValueError):
        return 1024 * 1024


#: The options of a node's prolog and epilog (command_hooks).
HOOK_OPTIONS = ("prolog", "epilog", "hook_timeout")


def command_hooks(config):
    """The prolog and epilog config says this node runs around its command attempts."""
    return Hooks(prolog=config.prolog, epilog=config.epilog, timeout=config.hook_timeout)


def sd_notify(message, environ=None):
    """Send a state line ("READY=1") to systemd's $NOTIFY_SOCKET; False if there is none.

    An address starting with "@" is in the abstract namespace. Failures are logged, never
    raised: a daemon must not die because its supervisor went away.
    """
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as err:
        logger.warning("cannot notify systemd (%s): %s", message, err)
        return False
    return True


class StopSignals:
    """Calls stop() once on the first SIGTERM or SIGINT; later ones are only logged.
    SIGHUP calls reload() (from the reactor's thread) and never stops the daemon: by
    default it would end it at once, without its shutdown, when an operator asks for a
    reload (``systemctl reload``, logrotate's postrotate) or the terminal it was started
    in closes.

    install() may be called before the reactor runs (a signal then stops the reactor as
    soon as it runs); reinstall_when_running(reactor) puts the handlers back after Twisted
    installed its own ones, keeping Twisted's wakeup file descriptor.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, reactor, stop, describe=None, reload=None):
        self._reactor = reactor
        self._stop = stop
        self._describe = describe or (lambda: "")
        self._reload = reload
        self._fired = False
        self.received = None

    def install(self):
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)
        signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, signum, frame):
        if self._reload is None or not self._reactor.running or self.received is not None:
            logger.info("received SIGHUP: ignored (%s)", "stopping" if self.received
                        is not None else "starting")
            return
        self._reactor.callFromThread(self._reload)

    def reinstall_when_running(self):
        def running():
            self.install()
            if self.received is not None:
                self._fire()
        self._reactor.callWhenRunning(running)

    def _fire(self):
        if not self._fired:
            self._fired = True
            self._stop()

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received is not None:
            logger.warning("received %s again; already stopping%s", name, self._describe())
            return
        self.received = signum
        logger.info("received %s, stopping%s", name, self._describe())
        if self._reactor.running:
            self._reactor.callFromThread(self._fire)


def dump_stacks_on_request(signum=signal.SIGUSR1):
    """SIGUSR1 writes every thread's stack to stderr (the log) and changes nothing else:
    where a daemon that stopped answering waits (a lock, a name lookup, a disk).

    Python's own handler, keeping no C state for the interpreter's finalization to free
    (faulthandler's did; with it a daemon aborted once at its exit, most likely from a
    node link's thread left in a TLS read, which RemoteLink.stop now ends). The main
    thread runs this one (the reactor's wakeup descriptor wakes it), reading the other
    threads' frames; it writes to the descriptor, not through sys.stderr, whose buffer
    the interrupted code may hold."""
    signal.signal(signum, _dump_stacks)


def _dump_stacks(signum, frame):
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = ["%s: the stack of each thread of pid %d (most recent call last)\n" % (
        signal.Signals(signum).name, os.getpid())]
    for ident, stack in sys._current_frames().items():
        if ident == threading.get_ident():
            stack = frame  # where the signal found this thread, not this handler
        parts.append("Thread %s (%d):\n" % (names.get(ident, "?"), ident))
        parts.extend(traceback.format_stack(stack))
    parts.append("%s: end of the stacks\n" % signal.Signals(signum).name)
    data = "".join(parts).encode("utf-8", "replace")
    try:
        while data:
            data = data[os.write(2, data):]
    except OSError:
        pass


#: What SIGHUP says of an option changed in the file that the running daemon cannot take.
AT_RESTART = "it takes effect at the next restart"


def toggle_debug(current):
    """SIGUSR2: log at debug level, or (at debug already) at the configured log_level
    again; said. current: as for reload_daemon (a reload sets the configured level)."""
    root = logging.getLogger()
    configured = current[0].log_level
    if root.level != logging.DEBUG:
        root.setLevel(logging.DEBUG)
        logger.warning("SIGUSR2: logging at debug level (SIGUSR2 again: back to %s)",
                       configured)
    elif configured != "debug":
        logger.warning("SIGUSR2: logging at %s level again", configured)
        root.setLevel(LEVELS[configured])
    else:
        logger.warning("SIGUSR2: log_level is debug already")


def reload_daemon(current, top):
    """SIGHUP: read the configuration file again and apply what changed that the running
    daemon can take (log_level here, the rest by the reconfigure(new, changes) of the
    services of the tree top, each returning the option names it applied); say each
    change, and that the others take effect at the next restart. Then call each
    service's reload() (files it reads again: it returns whether there was one).

    current is a one-item list holding the running Config: it gets the changes applied
    (the others are said again at the next SIGHUP, as they still wait for a restart). A
    file that does not read or check changes nothing: the error is logged.
    """
    config = current[0]
    changed, failed = {}, False
    if config.path is not None:
        try:
            changed = configmod.changes(config, configmod.reread(config))
        except errors.ConfigurationError as err:
            logger.error("SIGHUP: %s; the running configuration stays", one_line(err))
            failed = True
        applied = _reconfigure(top, config.with_values(
            {name: new for name, (_, new) in changed.items()}), changed)
        for name, (old, new) in sorted(changed.items()):
            if name in applied:
                logger.info("SIGHUP: %s changed from %s to %s", name, _shown(old), _shown(new))
            else:
                logger.warning("SIGHUP: %s changed in %s (from %s to %s): %s", name,
                               config.path, _shown(old), _shown(new), AT_RESTART)
        current[0] = config.with_values({name: changed[name][1] for name in applied})
    reloaded = 0
    for svc in _service_tree(top):
        reload = getattr(svc, "reload", None)
        if callable(reload):
            try:
                reloaded += bool(reload())
            except Exception:  # noqa: BLE001 - a failed reload must not stop the daemon
                logger.exception("SIGHUP: reloading %s failed", svc)
    if config.path is None and not reloaded:
        logger.info("received SIGHUP: nothing to read again (no configuration file; the "
                    "options of the command line are read at start: restart to change "
                    "them)")
    elif config.path is not None and not changed and not failed:
        logger.info("received SIGHUP: %s read again, no option changed", config.path)


def _reconfigure(top, new, changed):
    """The names of the changed options applied, by this module and the services."""
    applied = set()
    if "log_level" in changed:
        logging.getLogger().setLevel(LEVELS[new.log_level])
        applied.add("log_level")
    for svc in _service_tree(top):
        reconfigure = getattr(svc, "reconfigure", None)
        if callable(reconfigure) and changed:
            try:
                applied.update(reconfigure(new, changed) or ())
            except Exception:  # noqa: BLE001 - as a failed reload above
                logger.exception("SIGHUP: reconfiguring %s failed", svc)
    return applied


def _service_tree(top):
    stack = [top]
    while stack:
        svc = stack.pop()
        yield svc
        if isinstance(svc, service.MultiService):
            stack.extend(svc)


def _shown(value):
    """An option's value as the log says it."""
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(map(str, value))
    return "none" if value is None else str(value)


EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad command line (exit status 2), raised by a load_config check."""


def build_parser(prog, program, description):
    """The argument parser of a daemon: the option table's flags for program, --version."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    configmod.add_arguments(parser, program)
    parser.add_argument("--version", action="version",
                        version="%(prog)s " + jqueue.version())
    return parser


def load_config(parser, prog, program, argv, check=None):
    """Parse argv and load program's configuration; None (one line on stderr) if invalid.

    A missing required option is a usage error (exit 2 from argparse). check(config,
    args), if given, validates more: a UsageError it raises is a usage error too, a
    ConfigurationError a failure (exit 1).
    """
    args = parser.parse_args(argv)
    try:
        config = configmod.load(program, args)
        if check is not None:
            check(config, args)
        return config
    except (configmod.MissingOptionError, UsageError) as err:
        parser.error(str(err) if isinstance(err, UsageError) else errors.error_message(err))
    except errors.ConfigurationError as err:
        print("%s: %s" % (prog, errors.error_message(err)), file=sys.stderr)
    return None


def one_line(err):
    """The message of an error on one line."""
    text = errors.error_message(err) if isinstance(err, errors.GenericError) else str(err)
    return " ".join(text.split())


def log_stop_failure(what):
    """Log the exception being handled while stopping: one line for a disk's or the
    queue's refusal (the operator's to act on), a traceback for anything else (a bug)."""
    err = sys.exc_info()[1]
    if isinstance(err, (errors.GenericError, OSError)):
        logger.error("%s: %s", what, one_line(err))
    else:
        logger.exception(what)


@defer.inlineCallbacks
def close_server(reactor, port, connections, pool, timeout, first=None):
    """Close a server: first() (telling its clients), stop listening on port, give the
    open connections (a set the server keeps up) timeout seconds to end, abort the rest;
    the pool's threads are stopped whatever failed before (a thread left would keep the
    process alive)."""
    try:
        if first is not None:
            first()
        yield port.stopListening()
        deadline = reactor.seconds() + timeout
        while connections and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.05, lambda: None)
        for connection in list(connections):
            connection.transport.abortConnection()
    finally:
        pool.stop()


def stop_reactor(reactor):
    """Stop the reactor unless it is already stopping."""
    from twisted.internet import error
    try:
        reactor.stop()
    except error.ReactorNotRunning:
        pass


#: glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
#: Allocations from this size up get their own mapping, returned to the system when freed.
MMAP_THRESHOLD = 1024 * 1024
#: Free memory at the top of the heap kept for the next allocations, at most (beyond, it
#: is given back). glibc's default once the mmap threshold is fixed: 128 KiB.
TRIM_THRESHOLD = 8 * 1024 * 1024
#: malloc arenas: one per thread by default (8 per core); a few suffice here.
ARENA_MAX = 2
#: gc.set_threshold of the daemons (see tune_gc); Python's default is (700, 10, 10).
GC_THRESHOLDS = (10000, 10, 10)


def tune_malloc():
    """Keep big transient buffers from inflating the daemon's memory for good.

    A large request (a 15 MiB opcode, a 10,000-opcode job) passes through a few buffers
    of its size. glibc raises its mmap threshold after such a buffer is freed, so the next
    ones come from the heap, whose freed memory is seldom given back, and every thread
    gets an arena of its own: RSS grew by hundreds of MiB under a stream of them. A fixed
    threshold (allocations from 1 MiB up are mapped, and unmapped when freed) and two
    arenas keep the peak near what the largest requests need at once.

    Below that threshold, a few MiB freed at the top of the heap are kept for the next
    allocations (TRIM_THRESHOLD) instead of glibc's 128 KiB: a command's output crosses
    each daemon as pieces of up to 960 KiB in buffers of 16-320 KiB (TLS records, HTTP
    answers, reads), and memory given back costs a page fault per 4 KiB when it is taken
    again, more on a virtual machine whose host takes freed pages back. Kept, jq-noded
    served a 200 MB output with 0.64-0.73 s of CPU instead of 0.85-0.94 (bench/commands.py's
    (e) through jq-noded).
    No-op where the C library has no mallopt.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    mallopt(_M_ARENA_MAX, ARENA_MAX)


def tune_gc():
    """Collect cyclic garbage less often than Python's default (every 700 allocations).

    A daemon holding thousands of connections and jobs created since the last freeze
    (see jqueue.queue._freeze_long_lived) paid for a full collection every few hundred
    thousand allocations: 15-60 ms of the reactor's time, finding nothing, that landed in
    the middle of answering 5,000 waiters at once (measured with gc.callbacks). Young
    collections every 10,000 allocations keep the older generations' passes, and so the
    full ones, about 14 times rarer; garbage without cycles is freed at once as always.
    """
    gc.set_threshold(*GC_THRESHOLDS)


def set_process_name(name):
    """Name this process name (what ps -C, pgrep and top show), however it was started
    (python -m ...); False where the system does not allow it."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as stream:
            stream.write(name[:15])
        return True
    except OSError:
        return False


def run(prog, config, build, describe=None):
    """Run a daemon in the foreground until stopped; return its exit status.

    Names the process prog; sets umask 027, logging to stderr, the stacks' dump on
    SIGUSR1, debug logging on SIGUSR2, the open files limit and the stop and reload
    signals; starts
    the service tree build(config, reactor) (a failure is one logged line and exit 1);
    runs the reactor; returns the service's exit_status. describe(service), if given,
    is logged when a second stop signal arrives (e.g. the time left in a grace period).
    """
    set_process_name(prog)
    os.umask(0o027)
    setup_logging(config.log_level)
    dump_stacks_on_request()
    raise_nofile_limit()
    tune_malloc()
    tune_gc()
    from twisted.internet import reactor
    monotonic_timers(reactor)
    logger.info("%s %s starting (pid %d)", prog, jqueue.version(), os.getpid())
    started, current = [], [config]
    signals = StopSignals(reactor, lambda: stop_reactor(reactor),
                          lambda: describe(started[0]) if describe and started else "",
                          lambda: reload_daemon(current, started[0]) if started else None)
    signals.install()
    signal.signal(signal.SIGUSR2,
                  lambda signum, frame: reactor.callFromThread(toggle_debug, current))
    try:
        armed = faults.arm_from_environment()
    except ValueError as err:
        logger.error("cannot start: %s", err)
        return EXIT_FAILURE
    if armed:
        logger.warning("failpoints armed from %s (a test run)", faults.ENV_VAR)
    try:
        top = build(config, reactor)
        top.startService()
    except (errors.GenericError, OSError) as err:
        logger.error("cannot start: %s", one_line(err))
        return EXIT_FAILURE
    started.append(top)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    signals.reinstall_when_running()
    reactor.run()
    return top.exit_status
