"""jqctl's entry point: the parser, the command context, dispatch and error handling.

Each command module registers its subcommands on the parser with ``register(commands)``
and sets ``func(ctx, args) -> exit status``. Every error a user can cause ends as one line
``jqctl: <message>`` on stderr and an exit status from jqueue.cli.exitcodes.

The seam for tests: ``main(argv, client_factory=...)``, where ``client_factory(socket_path,
timeout)`` returns an object with the LUXI client's methods (socket_path as located by
``locate_socket``); or ``run(Context(...), argv)`` to replace the streams and the sleep
function too.

The daemon's socket, first found wins: --socket, $JQ_SOCKET, --state-dir DIR
(DIR/run/jqueue.sock), $JQ_STATE_DIR (the same), the default /var/lib/jqueue/run/jqueue.sock.
"""

import argparse
import contextlib
import os
import sys
import time

import jqueue
from jqueue import constants, errors, ptypes, text
from jqueue.cli import (
    catalogue,
    cluster_cmds,
    command_cmds,
    completion,
    course_cmds,
    exitcodes,
    group_cmds,
    info,
    jobs,
    listening,
    listing,
    outcome,
    queue_cmds,
    service_cmds,
    watching,
)
from jqueue.luxi import client as luxi_client

PROG = "jqctl"
DEFAULT_TIMEOUT = constants.LUXI_TIMEOUT
COMMAND_MODULES = (jobs, course_cmds, group_cmds, command_cmds, listening, listing, info,
                   watching, outcome, catalogue, queue_cmds, cluster_cmds, service_cmds,
                   completion)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``jqctl: <message> (see ...)``."""

    def error(self, message):
        self.exit(exitcodes.EXIT_USAGE, "%s: %s (see '%s --help')\n" % (
            PROG, message, self.prog))


#: The environment variable naming a node's state directory (as --state-dir does).
STATE_DIR_ENV_VAR = cluster_cmds.STATE_DIR_ENV_VAR
SOCKET_IN_STATE_DIR = os.path.join("run", "jqueue.sock")


def locate_socket(socket=None, state_dir=None, environ=None):
    """(socket path, where it came from) by precedence: --socket, $JQ_SOCKET, --state-dir,
    $JQ_STATE_DIR, the default."""
    environ = os.environ if environ is None else environ
    if socket:
        return socket, "--socket"
    if environ.get(constants.SOCKET_ENV_VAR):
        return environ[constants.SOCKET_ENV_VAR], "$%s" % constants.SOCKET_ENV_VAR
    if state_dir:
        return os.path.join(state_dir, SOCKET_IN_STATE_DIR), "--state-dir"
    if environ.get(STATE_DIR_ENV_VAR):
        return (os.path.join(environ[STATE_DIR_ENV_VAR], SOCKET_IN_STATE_DIR),
                "$%s" % STATE_DIR_ENV_VAR)
    return constants.DEFAULT_SOCKET, "the default"


def no_daemon_hint(socket_path, source):
    """How to fix "no jqueue daemon listening": where the path came from, what to do."""
    run_dir = os.path.dirname(socket_path)
    start = ("jq-masterd --state-dir %s" % os.path.dirname(run_dir)
             if os.path.basename(run_dir) == "run" else
             "jq-masterd --state-dir DIR --socket %s" % socket_path)
    return ("(socket from %s): start %s, or point jqctl at the daemon's socket (--socket "
            "PATH or $%s) or at its state directory (--state-dir DIR or $%s)" % (
                source, start, constants.SOCKET_ENV_VAR, STATE_DIR_ENV_VAR))


#: Errors after which a command that only reads (follows a log, waits for jobs, listens)
#: connects again: the daemon went away (a restart, a failover) or answers no more.
RECONNECT_ERRORS = (errors.NoMasterError, errors.ConnectionClosedError,
                    errors.RequestTimeoutError, errors.NotMasterError)
#: Seconds between two connection attempts, and how long a command that waits for an end
#: (log -f, wait, watch, run --wait or --follow) goes on trying before it gives up.
RECONNECT_DELAY = 1.0
RECONNECT_WINDOW = 120.0
#: Seconds between two looks, while the daemon is lost, at whether the cluster's master is
#: now another node (cluster_cmds.master_elsewhere: it asks the nodes).
MASTER_CHECK_INTERVAL = 10.0


class Context:
    """What a command works with: the client (connected on first use), streams, sleep."""

    def __init__(self, client_factory, stdin=None, stdout=None, stderr=None, sleep=time.sleep,
                 clock=time.monotonic):
        self._client_factory = client_factory
        self._client = None
        self.socket_path = None
        self.socket_source = None
        self.state_dir = None  # jqctl --state-dir
        self.timeout = DEFAULT_TIMEOUT
        self.stdin = sys.stdin if stdin is None else stdin
        self.stdout = sys.stdout if stdout is None else stdout
        self.stderr = sys.stderr if stderr is None else stderr
        self.sleep = sleep
        self.clock = clock

    @property
    def client(self):
        """The LUXI client; created by the factory the first time a command needs it."""
        if self._client is None:
            self._client = self._client_factory(self.socket_path, self.timeout)
        return self._client

    def again(self, read, *args, window=RECONNECT_WINDOW):
        """The client's answer to read(*args) (read: the name of one of its methods, or a
        function of the client and args), connecting again whenever the daemon is lost
        (one of RECONNECT_ERRORS), for up to window seconds from the first loss (None: for
        ever), said on stderr when it is lost and when it answers again. The call must be
        safe to repeat: it only reads, from where the command got to.

        On a cluster node whose master is (or becomes, by a failover) another node, it
        gives up at once with a message naming that master (exit status 5): this node's
        socket never reaches it. That is looked at on the first loss and every
        MASTER_CHECK_INTERVAL seconds after."""
        lost_at = checked_at = None
        while True:
            try:
                if isinstance(read, str):
                    answer = getattr(self.client, read)(*args)
                else:
                    answer = read(self.client, *args)
            except RECONNECT_ERRORS as err:
                now = self.clock()
                if checked_at is None or now - checked_at >= MASTER_CHECK_INTERVAL:
                    checked_at = now
                    elsewhere = cluster_cmds.master_elsewhere(self.socket_path, self.state_dir)
                    if elsewhere is not None:
                        raise exitcodes.CommandError(elsewhere,
                                                     exitcodes.EXIT_UNREACHABLE) from None
                if lost_at is None:
                    lost_at = now
                    self.warn("%s; connecting again" % errors.error_message(err))
                elif window is not None and now - lost_at >= window:
                    self.warn("gave up after %gs" % window)
                    raise
                self.close()
                self.sleep(RECONNECT_DELAY)
                continue
            if lost_at is not None:
                self.warn("connected again")
            return answer

    def out(self, line="", flush=False, raw=False):
        """Print a line (or lines) on stdout, terminal controls escaped unless raw (a
        command's own output, shown to whoever ran it, as jqctl log shows it)."""
        if not raw:
            line = text.printable(line, text.TERMINAL_CONTROLS)
        print(line, file=self.stdout, flush=flush)

    def warn(self, message):
        """Print ``jqctl: message`` as one line on stderr."""
        line = " ".join(str(message).splitlines())
        print("%s: %s" % (PROG, text.printable(line)), file=self.stderr)

    def interactive(self):
        """Whether stdin is a terminal a question can be asked on."""
        isatty = getattr(self.stdin, "isatty", None)
        return bool(isatty and isatty())

    def ask(self, question):
        """Ask a yes/no question on the terminal; True only for an explicit yes."""
        self.stderr.write("%s [y/N] " % question)
        self.stderr.flush()
        return self.stdin.readline().strip().lower() in ("y", "yes")

    def close(self):
        """Close the client if one was opened."""
        if self._client is not None:
            self._client.close()
            self._client = None


def connect(socket_path, timeout):
    """A LUXI client for jq-masterd (socket_path None: $JQ_SOCKET, else the default)."""
    return luxi_client.Client(socket_path or luxi_client.default_socket_path(),
                              connect_timeout=min(timeout, constants.LUXI_CONNECT_TIMEOUT),
                              timeout=timeout)


def _positive_number(given):
    try:
        value = ptypes.parse_number(given)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("invalid timeout %r: use a positive number" % given)
    return value


def build_parser():
    """The argparse parser of jqctl, with every subcommand."""
    parser = Parser(prog=PROG, description="Control the jqueue job queue through jq-masterd.")
    parser.add_argument("--socket", metavar="PATH",
                        help="LUXI socket of jq-masterd (default: $JQ_SOCKET, else "
                             "DIR/run/jqueue.sock of --state-dir or $JQ_STATE_DIR, else %s)"
                             % constants.DEFAULT_SOCKET)
    parser.add_argument("--state-dir", dest="global_state_dir", metavar="DIR",
                        help="the node's state directory: its daemon's socket is "
                             "DIR/run/jqueue.sock, and the cluster commands work on it "
                             "(default: $JQ_STATE_DIR, else %s)" % constants.DEFAULT_STATE_DIR)
    parser.add_argument("--timeout", metavar="SECONDS", type=_positive_number,
                        default=DEFAULT_TIMEOUT,
                        help="how long to wait for each answer of the daemon "
                             "(default: %(default)g)")
    parser.add_argument("--version", action="version", version="%(prog)s " + jqueue.version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     title="commands")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def run(ctx, argv):
    """Parse argv and run the command with ctx; return the exit status."""
    try:
        with contextlib.redirect_stdout(ctx.stdout), contextlib.redirect_stderr(ctx.stderr):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else exitcodes.EXIT_USAGE
    ctx.socket_path, ctx.socket_source = locate_socket(args.socket, args.global_state_dir)
    ctx.timeout = args.timeout
    ctx.state_dir = args.global_state_dir
    try:
        return _execute(ctx, args)
    finally:
        _close_quietly(ctx)


def _execute(ctx, args):
    try:
        code = args.func(ctx, args)
        ctx.stdout.flush()
        return code
    except errors.NoMasterError as err:
        ctx.warn(cluster_cmds.not_master_message(ctx.socket_path, err, args.global_state_dir)
                 or "%s %s" % (errors.error_message(err),
                               no_daemon_hint(ctx.socket_path, ctx.socket_source)))
        return exitcodes.for_exception(err)
    except errors.GenericError as err:
        ctx.warn(errors.error_message(err))
        return exitcodes.for_exception(err)
    except KeyboardInterrupt:
        ctx.warn("interrupted")
        return exitcodes.EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence(ctx.stdout)
        return exitcodes.EXIT_SUCCESS


def _close_quietly(ctx):
    try:
        ctx.close()
    except (errors.GenericError, OSError):
        pass


def _silence(stream):
    """Point a broken stdout at /dev/null, so that flushing it at exit complains no more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None, client_factory=None):
    """Run jqctl with argv (default sys.argv[1:]); return the exit status."""
    for stream in (sys.stdout, sys.stderr):
        # A title the terminal's encoding cannot write (a Latin-1 or ASCII locale) is
        # shown as \u65e5 rather than ending jqctl with a traceback.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    ctx = Context(client_factory or connect)
    return run(ctx, sys.argv[1:] if argv is None else argv)
