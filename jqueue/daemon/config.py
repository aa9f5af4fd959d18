"""The daemons' options: one table serving the config file, the command line and the man page.

Every option is an ``Option`` of ``OPTIONS``. The config file is TOML with one table per
program (``[masterd]``, later ``[noded]`` and ``[cluster]``): an option of program P is set
as ``name = value`` in the ``[P]`` table and as ``--name-with-dashes VALUE`` on P's command
line. A value given on the command line wins over the config file, which wins over the
table's default. ``load`` refuses unknown keys, values of the wrong type and values out of
range with a ConfigurationError naming the option and the file.
"""

import argparse
import copy
import math
import os
import re
import shlex
import socket
import tomllib

import attrs

from jqueue import connlimit, constants, errors, ptypes, retention
from jqueue.store import events

#: Tables a config file may hold, one per program (section = program).
SECTIONS = ("masterd", "noded", "cluster")

#: Default of an option that must be given (on the command line or in the file).
REQUIRED = object()


class MissingOptionError(errors.ConfigurationError):
    """A required option was given neither on the command line nor in the config file."""


# Value types: desc (for messages), check(value) for config file values (returns the value
# normalized, or raises ValueError), parse(text) for command-line values.

class _Type:
    desc = "a value"

    def check(self, value):
        return value

    def parse(self, text):
        return self.check(text)

    def _fail(self, value):
        raise ValueError("must be %s, got %s" % (self.desc, _short(value)))


class Text(_Type):
    """A non-empty string without NUL characters."""

    desc = "a non-empty string"

    def check(self, value):
        if not isinstance(value, str) or not value or "\0" in value:
            self._fail(value)
        return value


class Command(Text):
    """A program and its arguments, split as a shell splits words (no shell runs it)."""

    desc = "a program and its arguments (words as a shell splits them)"

    def check(self, value):
        value = super().check(value)
        try:
            if shlex.split(value):
                return value
        except ValueError:
            pass
        self._fail(value)


class Choice(_Type):
    """One of a few words."""

    def __init__(self, *words):
        self.words = words
        self.desc = "one of %s" % ", ".join(words)

    def check(self, value):
        if value not in self.words:
            self._fail(value)
        return value


class Integer(_Type):
    """An integer >= low."""

    def __init__(self, low):
        self.low = low
        self.desc = "an integer >= %d" % low

    def check(self, value):
        if not isinstance(value, int) or isinstance(value, bool) or value < self.low:
            self._fail(value)
        return value

    def parse(self, text):
        try:
            value = ptypes.parse_int(text)
        except ValueError:
            self._fail(text)
        return self.check(value)


class Size(_Type):
    """A size in bytes: an integer, or a number with K, M, G or T (units of 1024)."""

    desc = "a size (bytes, or a number with K, M, G or T)"

    def check(self, value):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        try:
            return ptypes.parse_size(value)
        except ValueError:
            self._fail(value)


class Number(_Type):
    """A finite number (integer or decimal) >= low, or > low if strict."""

    def __init__(self, low, strict=False):
        self.low, self.strict = low, strict
        self.desc = "a number %s %g" % (">" if strict else ">=", low)

    def check(self, value):
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value)
                or (value <= self.low if self.strict else value < self.low)):
            self._fail(value)
        return value

    def parse(self, text):
        try:
            value = ptypes.parse_number(text)
        except ValueError:
            self._fail(text)
        return self.check(value)


class Duration(_Type):
    """Seconds >= 0 (or > 0 if strict): a number, or text such as 30m, 6h, 21d, 2w."""

    def __init__(self, strict=False):
        self.strict = strict
        self.desc = "a duration %s 0 (seconds, or 30m, 6h, 21d, 2w)" % (">" if strict
                                                                        else ">=")

    def check(self, value):
        if isinstance(value, str):
            try:
                value = ptypes.parse_duration(value)
            except ValueError:
                self._fail(value)
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value) or value < 0 or (self.strict and value == 0)):
            self._fail(value)
        return value


class TextList(_Type):
    """A list of non-empty strings (on the command line: separated by commas)."""

    desc = "a list of non-empty strings"

    def check(self, value):
        if not isinstance(value, list):
            self._fail(value)
        for item in value:
            if not isinstance(item, str) or not item:
                self._fail(value)
        return list(value)

    def parse(self, text):
        return self.check([item.strip() for item in text.split(",") if item.strip()])


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hostname():
    return socket.gethostname()


@attrs.frozen
class Option:
    """One option: name (config key), type, default, help, flag and where it applies.

    flag is the command-line flag (None: config file only); in_file False means command
    line only; default may be REQUIRED, or a callable giving it at load time, and
    default_doc says in words what a default that is not a plain value means.
    """

    name: str
    type: _Type
    default: object
    help: str
    flag: str | None = None
    programs: tuple = ("masterd",)
    metavar: str | None = None
    choices: tuple | None = None
    in_file: bool = True
    default_doc: str | None = None

    def check(self, value):
        """Return value checked and normalized; ValueError saying what is wrong."""
        value = self.type.check(value)
        if self.choices is not None and value not in self.choices:
            raise ValueError("must be one of %s, got %s" % (", ".join(self.choices),
                                                            _short(value)))
        return value

    def default_value(self):
        """The default (a fresh copy; a callable default is called)."""
        return self.default() if callable(self.default) else copy.deepcopy(self.default)

    def default_text(self):
        """The default as the man page and --help show it (None if there is none)."""
        if self.default_doc is not None:
            return self.default_doc
        if self.default is REQUIRED or self.default is None:
            return None
        if isinstance(self.default, float):
            return "%g" % self.default
        if isinstance(self.default, list):
            return "[%s]" % ", ".join('"%s"' % v for v in self.default)
        return str(self.default)


def _cpus():
    return os.cpu_count() or 1


def command_options(program):
    """Options of a daemon that runs command jobs (jq-masterd on one machine, jq-noded)."""
    return (
        Option("slots", Integer(1), _cpus,
               "Command attempts this node runs at once; the next one starts by priority, "
               "then job id.", flag="--slots", metavar="N", programs=(program,),
               default_doc="the number of CPUs"),
        Option("allowed_users", TextList(), [],
               "Users other than the daemon's own that command jobs may run as (run_as); "
               "the daemon must run as root to switch users. Another user is refused (at "
               "submit where jq-masterd runs the commands itself, else as the attempt "
               "starts: INTERR); a user of the list is looked up (its passwd entry and "
               "groups, through NSS) in a thread as each attempt or service run starts, and "
               "one that does not exist fails it the same way; a lookup that has not "
               "answered within 30 s makes that start wait and try again (NOXFER; a "
               "service backs off).", flag="--allowed-users",
               metavar="USER,...", programs=(program,), default_doc="none"),
        Option("containment", Text(), "auto",
               "How a command attempt's processes are held together: auto (a cgroup v2 "
               "leaf per attempt where a writable hierarchy exists, else the process group) "
               "or process-group.", flag="--containment", metavar="MODE",
               choices=("auto", "process-group"), programs=(program,)),
        Option("run_dir", Text(), None,
               "Directory for the running attempts' own small files (spec, pid, result), "
               "best on tmpfs (/run under systemd): they live no longer than the boot, and "
               "creating and deleting them there costs no disk metadata. The commands' "
               "output stays in DIR/outputs. Created (mode 0750) if missing. It may "
               "change between two runs: attempts already running are followed where "
               "they are.",
               flag="--run-dir", metavar="RUNDIR", programs=(program,),
               default_doc="DIR (the state directory: DIR/attempts)"),
        Option("prolog", Text(), None,
               "Shell command (/bin/sh -c) this node runs before every command attempt, "
               "as the command runs: same user, directory, environment (JQ_JOB_ID, "
               "JQ_ATTEMPT, JQ_NODE...), cgroup and log. Unless it exits 0 the command does "
               "not run and the attempt fails (INTERR, retried like a failure while "
               "attempts remain; the log and the job's error say how the prolog ended). "
               "Not for services.",
               flag="--prolog", metavar="SCRIPT", programs=(program,), default_doc="none"),
        Option("epilog", Text(), None,
               "Shell command this node runs after every command attempt whose prolog or "
               "command ran (after a timeout or a kill too), as the prolog, with "
               "JQ_EXIT_STATUS and JQ_SIGNAL (the command's, empty if none) added; the "
               "attempt ends when it has. Its failure changes nothing of the job's outcome: "
               "it is noted in the log and the action log, and the node is marked degraded "
               "(jqctl node list) until an attempt there ends without an epilog failure.",
               flag="--epilog", metavar="SCRIPT", programs=(program,), default_doc="none"),
        Option("memory_reserve", Size(), 0,
               "Memory of this machine kept from the commands, for the system and the "
               "daemons (as Slurm's MemSpecLimit): a command's memory_max is weighed "
               "against MemTotal less this (jqctl node list --json: mem_reserved). SIGHUP "
               "changes it; the master hears of it at the next heartbeat.",
               flag="--memory-reserve", metavar="SIZE", programs=(program,),
               default_doc="0"),
        Option("hook_timeout", Duration(), 60.0,
               "Seconds the prolog, and the epilog, may each run (0: no limit); then "
               "SIGTERM to every process of it and SIGKILL after the job's kill_grace (a "
               "prolog over it fails the attempt, an epilog is a failed epilog).",
               flag="--hook-timeout", metavar="SECONDS", programs=(program,)),
    )

OPTIONS = (
    Option("state_dir", Text(), REQUIRED,
           "Directory of the daemon's state: the queue in DIR/queue and, unless "
           "socket is set, the LUXI socket in DIR/run. Created (mode 0750) if missing.",
           flag="--state-dir", metavar="DIR"),
    Option("socket", Text(), None,
           "Path of the LUXI socket (mode 0660) that clients such as jqctl connect to.",
           flag="--socket", metavar="PATH", default_doc="DIR/run/jqueue.sock"),
    Option("config", Text(), None,
           "TOML configuration file to read (see CONFIGURATION FILE).",
           flag="--config", metavar="FILE", in_file=False, default_doc="none"),
    Option("workers", Integer(0), constants.DEFAULT_WORKERS,
           "Worker threads running opcodes: how many jobs run at the same time (0: jobs "
           "are accepted and kept queued, e.g. during maintenance).",
           flag="--workers", metavar="N"),
    Option("log_level", Text(), "info",
           "Least severe messages logged on standard error.",
           flag="--log-level", metavar="LEVEL", choices=("debug", "info", "warning", "error")),
    Option("max_jobs", Integer(1), constants.DEFAULT_MAX_JOBS,
           "Most live (not archived) jobs; further submissions are refused (JobQueueFull).",
           flag="--max-jobs", metavar="N"),
    Option("checkpoint_interval", Number(0, strict=True), constants.DEFAULT_CHECKPOINT_INTERVAL,
           "Seconds between two checkpoints (job files rewritten, journal emptied).",
           flag="--checkpoint-interval", metavar="SECONDS"),
    Option("shutdown_grace", Number(0), 30.0,
           "Seconds that running opcodes get to finish after SIGTERM or SIGINT; opcodes "
           "still running then end as \"Unclean master daemon shutdown\" at the next start.",
           flag="--shutdown-grace", metavar="SECONDS"),
    Option("cluster_name", Text(), "jqueue",
           "Name of the cluster, answered to QueryConfigValues.",
           flag="--cluster-name", metavar="NAME"),
    Option("master_node", Text(), _hostname,
           "Name of the master node, answered to QueryConfigValues.",
           flag="--master-node", metavar="NAME", default_doc="the host name"),
    Option("opcode_modules", TextList(), [],
           "Python modules whose opcodes are loaded, besides those of the jqueue.opcodes "
           "entry point group.", metavar="MODULES", default_doc="none"),
    Option("max_message_bytes", Integer(1), constants.LUXI_MAX_MESSAGE_BYTES,
           "Longest LUXI request in bytes; a longer one is answered with an error and its "
           "connection closed.", flag="--max-message-bytes", metavar="BYTES",
           default_doc="%d (16 MiB)" % constants.LUXI_MAX_MESSAGE_BYTES),
    Option("read_timeout", Number(0, strict=True), constants.LUXI_READ_TIMEOUT,
           "Seconds a client may take to finish sending a request before its connection "
           "is closed.", flag="--read-timeout", metavar="SECONDS"),
    Option("idle_timeout", Number(0, strict=True), constants.LUXI_IDLE_TIMEOUT,
           "Seconds a connection may stay idle (no request in flight) before it is closed.",
           flag="--idle-timeout", metavar="SECONDS"),
    Option("max_connections", Integer(1), constants.LUXI_MAX_CONNECTIONS,
           "Most open LUXI connections; further ones are closed at once. With "
           "http_max_connections, at most half the open files limit: both are lowered in "
           "proportion to fit it (a warning says so).",
           flag="--max-connections", metavar="N"),
    Option("max_wait_timeout", Number(0), constants.LUXI_MAX_WAIT_TIMEOUT,
           "Longest timeout in seconds of one WaitForJobChange call (longer ones are cut).",
           flag="--max-wait-timeout", metavar="SECONDS"),
    Option("max_pipelined", Integer(1), constants.LUXI_MAX_PIPELINED,
           "Requests a connection may send ahead of the answers; more close it.",
           flag="--max-pipelined", metavar="N"),
    Option("luxi_threads", Integer(1), constants.LUXI_THREADS,
           "Threads serving blocking LUXI requests (waiting for a job costs none).",
           flag="--luxi-threads", metavar="N"),
    Option("tags", TextList(), [],
           "Tags of this machine for command jobs' affinity, without a cluster (in a "
           "cluster each node's tags are in the cluster configuration: jqctl node modify "
           "--tags).", flag="--tags", metavar="TAG,...", default_doc="none"),
    Option("ping_interval", Number(0, strict=True), 2.0,
           "In a cluster: seconds between two heartbeats of a node (its answers to the "
           "command runner's polls).", flag="--ping-interval", metavar="SECONDS"),
    Option("ping_misses", Integer(1), 3,
           "In a cluster: heartbeats a node may miss before it is unreachable (NOPING): "
           "jobs pinned to it wait, jobs with an affinity go elsewhere.",
           flag="--ping-misses", metavar="N"),
    Option("lost_grace", Number(0), 300.0,
           "Seconds the attempts of an unreachable node stay running; after that they end "
           "NODE_LOST and may run elsewhere (the node kills them when it comes back). A node "
           "that cannot be reached when the master starts (after a restart or a failover: "
           "its jq-noded restarting) is asked about its attempts every ping_interval for "
           "as long. A launch or a service request that a node's jq-noded takes after standing "
           "still (stopped, paused) for longer than this is refused there as stale, and "
           "asked again.",
           flag="--lost-grace", metavar="SECONDS"),
    Option("epilog_failure", Text(), "mark",
           "What a node's failed epilog does to the node: mark (it is listed degraded, "
           "with why, until an attempt there ends without an epilog failure) or drain (in a "
           "cluster, also drained, as Slurm drains it: nothing new starts there until "
           "jqctl node modify --drain no; its running commands go on). On one machine "
           "drain is as mark.", flag="--epilog-failure", metavar="ACTION",
           choices=("mark", "drain")),
    Option("event_buffer", Integer(1), 10000,
           "Events kept in memory for WaitForEvents and jqctl listen; older ones answer "
           "\"gap\".", flag="--event-buffer", metavar="N"),
    Option("action_log_max_bytes", Integer(4096), events.DEFAULT_ROTATE_BYTES,
           "Size at which actions.log and events.jsonl are rotated (to .1, replacing the "
           "previous one).", flag="--action-log-max-bytes", metavar="BYTES",
           default_doc="%d (64 MiB)" % events.DEFAULT_ROTATE_BYTES),
    Option("action_log_time", Choice("utc", "local"), "utc",
           "Time zone of the action log's lines: utc, or local (the daemon's TZ).",
           flag="--action-log-time", metavar="ZONE"),
    Option("archive_after", Duration(), retention.DEFAULT_ARCHIVE_AFTER,
           "How long a finished job stays live before it is archived (a group: with its "
           "whole tree, once all of it ended); 0: never.", flag="--archive-after",
           metavar="DURATION", default_doc="6h (Ganeti's watcher)"),
    Option("keep_archived", Duration(), retention.DEFAULT_KEEP_ARCHIVED,
           "How long an archived job is kept before it and its command log are purged "
           "(their files removed); 0: forever.", flag="--keep-archived",
           metavar="DURATION", default_doc="21d (Ganeti's cleaner)"),
    Option("retention_interval", Duration(strict=True), retention.DEFAULT_INTERVAL,
           "Time between two retention passes (each archives and purges a bounded number "
           "of jobs and goes on at the next).", flag="--retention-interval",
           metavar="DURATION", default_doc="60s"),
    Option("notify_prefixes", TextList(), [],
           "What a job's notify URL must begin with (one of them: http://ci.example/, "
           "https://hooks.example/); another is refused at submit. The master POSTs each "
           "job's end from its own machine, so that anyone who may submit may make it "
           "POST to any http(s) address it reaches (an internal one too) unless this "
           "restricts them.", flag="--notify-prefixes", metavar="URL,...",
           default_doc="any http:// or https:// URL"),
    Option("notify_secret_file", Text(), None,
           "File holding a secret (its text, without the ending newline) that signs every "
           "notification POST: header X-Jqueue-Signature: sha256= and the HMAC-SHA256 of the "
           "body in hex (as GitHub signs its webhooks), so that a receiver can tell the "
           "master's POSTs from anyone else's. Read at start; should be readable by the "
           "daemon's user only.", flag="--notify-secret-file", metavar="FILE",
           default_doc="none (unsigned)"),
    Option("notify_command", Command(), None,
           "Program (and its first arguments) that tells a job's end to the address its "
           "notify names (notify: {to: ADDRESS}, jqctl --notify-to), as Slurm's MailProg: "
           "the master runs it as its own user with the address as its last argument, the "
           "notification's JSON object on its standard input and JQ_NOTIFY_TO, "
           "JQ_NOTIFY_EVENT (end, after), JQ_NOTIFY_KEY, JQ_JOB_ID and JQ_JOB_STATUS in its "
           "environment. Exit 0: delivered; 75 (EX_TEMPFAIL), a signal or no exit within "
           "10 s: tried again (5 s doubling, 10 tries); any other status: given up. No "
           "shell runs it. Without one, a notify to an address is refused at submit.",
           flag="--notify-command", metavar="PROGRAM", default_doc="none"),
    Option("log_max_bytes", Integer(1024), constants.DEFAULT_LOG_MAX_BYTES,
           "Longest log of a command job in bytes; later output is dropped after a marker "
           "line. Past it only the last piece of the output is read (its progress is still "
           "followed) and the rest is freed on its node's disk as it is passed. A service's "
           "log keeps its end instead: once it holds a quarter more, its start (log_start) "
           "moves on to keep the last BYTES from the start of a line, and the bytes before "
           "are freed on the disk (offsets never change: reading from before the start "
           "reads from it). Output waiting on the node beyond what the log keeps (a service "
           "printing faster than its log is written, or while no master was there) is "
           "skipped after a line \"* SKIPPED: N bytes of output of run R\", and a run's "
           "output more than BYTES behind is freed on its node's disk.",
           flag="--log-max-bytes", metavar="BYTES",
           default_doc="%d (64 MiB)" % constants.DEFAULT_LOG_MAX_BYTES),
    Option("service_log_rate", Integer(1024), constants.DEFAULT_SERVICE_LOG_RATE,
           "Bytes per second of a service's output that its log takes at most, on average "
           "(8 seconds' worth at once): a service printing more has the rest skipped, after a "
           "line saying so, so that one service printing without pause costs the master, "
           "its disk and its candidates a bounded share, and every other request is served "
           "meanwhile.", flag="--service-log-rate", metavar="BYTES",
           default_doc="%d (1 MiB/s)" % constants.DEFAULT_SERVICE_LOG_RATE),
) + command_options("masterd") + (
    Option("http", Text(), None,
           "Serve HTTP on this address: the web page, the REST API (/api/v1), Coalition's "
           "API (/json, /xmlrpc/addjob) and /metrics (Coalition's port is 19211; IPv6 as "
           "[ADDR]:PORT). Without http_tokens or http_tls only a loopback address is "
           "accepted, and its requests need no authentication.",
           flag="--http", metavar="HOST:PORT", default_doc="off"),
    Option("http_tokens", Text(), None,
           "File of the HTTP API's tokens, one NAME TOKEN per line (# comments; a token "
           "of 16 characters at least): a client sends Authorization: Bearer TOKEN or "
           "?token=TOKEN, and the jobs it submits are owned by NAME. With tokens, every "
           "request must be authenticated, on loopback too. SIGHUP reads the file again.",
           flag="--http-tokens", metavar="FILE", default_doc="none"),
    Option("http_tls", Text(), "off",
           "HTTPS: off, or cluster (this node's certificate and key in DIR/tls; a client "
           "certificate signed by the cluster's CA authenticates its caller, named by its "
           "CN).", flag="--http-tls", metavar="MODE", choices=("off", "cluster")),
    Option("http_max_body", Integer(1024), 1024 * 1024,
           "Largest HTTP request body in bytes (413 beyond).", flag="--http-max-body",
           metavar="BYTES", default_doc="1048576 (1 MiB)"),
    Option("http_max_headers", Integer(8), 64,
           "Most header lines of an HTTP request (431 beyond; its request line and headers "
           "may hold 16 KiB at most).", flag="--http-max-headers", metavar="N"),
    Option("http_request_timeout", Number(0, strict=True), 30.0,
           "Seconds an HTTP client may take to send a whole request (408 after).",
           flag="--http-request-timeout", metavar="SECONDS"),
    Option("http_idle_timeout", Number(0, strict=True), 120.0,
           "Seconds an idle HTTP keep-alive connection is kept open.",
           flag="--http-idle-timeout", metavar="SECONDS"),
    Option("http_max_connections", Integer(1), 1024,
           "Most open HTTP connections; further ones are closed at once (fitted with "
           "max_connections to the open files limit).",
           flag="--http-max-connections", metavar="N"),
    Option("http_threads", Integer(1), 8,
           "Threads serving HTTP requests that may block (an event stream or a long poll "
           "costs none).", flag="--http-threads", metavar="N"),
    Option("http_access_log", Text(), None,
           "File to append a line to for every HTTP request answered: UTC time, client "
           "address, caller (token name or certificate CN, - if none), the request line "
           "with every token value hidden, status, body bytes, milliseconds. SIGHUP reopens "
           "it (after logrotate moved it).", flag="--http-access-log", metavar="FILE",
           default_doc="none"),
)

#: jq-noded's options (man/jq-noded.8.rst), kept apart from masterd's.
NODED_OPTIONS = (
    Option("state_dir", Text(), REQUIRED,
           "The node's state directory: cluster.json, node.json, tls/ (CA certificate, node "
           "certificate and key) and, on a master candidate, the replica in DIR/queue. "
           "Made by jqctl cluster init or jqctl node init and join.",
           flag="--state-dir", metavar="DIR", programs=("noded",)),
    Option("listen", Text(), None,
           "Address and port of the mutual-TLS RPC listener, as HOST:PORT ([V6ADDR]:PORT "
           "for IPv6).",
           flag="--listen", metavar="HOST:PORT", programs=("noded",),
           default_doc="this node's address in DIR/cluster.json"),
    Option("config", Text(), None,
           "TOML configuration file to read (see CONFIGURATION FILE).",
           flag="--config", metavar="FILE", in_file=False, default_doc="none",
           programs=("noded",)),
    Option("log_level", Text(), "info",
           "Least severe messages logged on standard error.",
           flag="--log-level", metavar="LEVEL", choices=("debug", "info", "warning", "error"),
           programs=("noded",)),
    Option("checkpoint_interval", Number(0, strict=True), constants.DEFAULT_CHECKPOINT_INTERVAL,
           "Seconds between two checkpoints of the replica (job files rewritten, journal "
           "emptied).", flag="--checkpoint-interval", metavar="SECONDS", programs=("noded",)),
    Option("rpc_max_body", Integer(1), constants.RPC_MAX_BODY_BYTES,
           "Largest RPC request body in bytes; a larger one is answered with HTTP 413 and "
           "its connection closed.", flag="--rpc-max-body", metavar="BYTES",
           programs=("noded",),
           default_doc="%d (64 MiB)" % constants.RPC_MAX_BODY_BYTES),
    Option("rpc_threads", Integer(1), 16,
           "Threads running RPC calls (replication, votes, configuration updates).",
           flag="--rpc-threads", metavar="N", programs=("noded",)),
) + command_options("noded")
OPTIONS = OPTIONS + NODED_OPTIONS


def options_for(program):
    """The options of a program, in table order."""
    return [option for option in OPTIONS if program in option.programs]


# Command line

def add_arguments(parser, program):
    """Add the flags of program's options to an argparse parser (their defaults are None)."""
    for option in options_for(program):
        if option.flag is None:
            continue
        parser.add_argument(option.flag, dest=option.name, metavar=option.metavar,
                            default=None, type=_argument_type(option),
                            help=_flag_help(option))


def _argument_type(option):
    def convert(text):
        try:
            return option.check(option.type.parse(text))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    convert.__name__ = option.name
    return convert


def _flag_help(option):
    text = option.help
    if option.choices:
        text += " One of %s." % ", ".join(option.choices)
    default = option.default_text()
    if default is not None:
        text += " Default: %s." % default
    return text.replace("%", "%%")


# Loading

class Config:
    """The option values of one program, as attributes named like the options (read-only)."""

    def __init__(self, program, values, path=None, given=()):
        object.__setattr__(self, "program", program)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "_values", dict(values))
        #: The options set on the command line (a reload of the file keeps them).
        object.__setattr__(self, "given", frozenset(given))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError("no option %r for %s" % (name, self.program)) from None

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only")

    def as_dict(self):
        return dict(self._values)

    def with_values(self, values):
        """This configuration with some options' values replaced."""
        return Config(self.program, dict(self._values, **values), self.path, self.given)

    def __repr__(self):
        return "Config(%r, %r, path=%r)" % (self.program, self._values, self.path)


def load(program, args):
    """Return the Config of program from parsed arguments and the file args.config names.

    Raises ConfigurationError naming the option (and the file) for a bad value, an
    unknown key or an unreadable file; MissingOptionError for a required option not given.
    """
    path = getattr(args, "config", None)
    from_file = read_file(path, program) if path else {}
    values, on_command_line = {}, set()
    for option in options_for(program):
        given = getattr(args, option.name, None) if option.flag else None
        if given is not None:
            try:
                values[option.name] = option.check(given)
            except ValueError as err:
                raise errors.ConfigurationError("%s: %s" % (option.flag, err)) from None
            on_command_line.add(option.name)
        elif option.name in from_file:
            values[option.name] = from_file[option.name]
        elif option.default is REQUIRED:
            raise MissingOptionError("%s is required (or %s in the [%s] table of the config "
                                     "file)" % (option.flag, option.name, program))
        else:
            values[option.name] = option.default_value()
    return Config(program, values, path, on_command_line)


def reread(config):
    """config with its file read again (a reload): what the command line set stays, an
    option the file no longer sets goes back to its default. Raises as load does."""
    if config.path is None:
        return config
    from_file = read_file(config.path, config.program)
    values = {}
    for option in options_for(config.program):
        if option.name in config.given or not option.in_file:
            values[option.name] = getattr(config, option.name)
        elif option.name in from_file:
            values[option.name] = from_file[option.name]
        elif option.default is REQUIRED:
            raise MissingOptionError("%s is required (or %s in the [%s] table of the config "
                                     "file)" % (option.flag, option.name, config.program))
        else:
            values[option.name] = option.default_value()
    return Config(config.program, values, config.path, config.given)


def changes(old, new):
    """{option name: (old value, new value)} of the options whose values differ."""
    return {name: (value, getattr(new, name)) for name, value in old.as_dict().items()
            if getattr(new, name) != value}


def read_file(path, program):
    """Return {name: checked value} of program's table in the TOML file at path."""
    try:
        with open(path, "rb") as stream:
            data = tomllib.load(stream)
    except OSError as err:
        raise errors.ConfigurationError("config file %s: %s" % (
            path, err.strerror or err)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise errors.ConfigurationError("config file %s: invalid TOML: %s" % (path, err)) from None
    _check_sections(path, data, program)
    table = data.get(program, {})
    known = {option.name: option for option in options_for(program) if option.in_file}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise errors.ConfigurationError("config file %s: unknown option(s) in [%s]: %s" % (
            path, program, ", ".join(unknown)))
    values = {}
    for name, value in table.items():
        try:
            values[name] = known[name].check(value)
        except ValueError as err:
            raise errors.ConfigurationError("config file %s: [%s] %s: %s" % (
                path, program, name, err)) from None
    return values


def _check_sections(path, data, program):
    for key, value in data.items():
        if not isinstance(value, dict):
            raise errors.ConfigurationError("config file %s: %s is outside any table; options "
                                            "must be in a table such as [%s]" % (
                                                path, key, program))
        if key not in SECTIONS:
            raise errors.ConfigurationError("config file %s: unknown section [%s] (known: %s)" % (
                path, key, ", ".join(SECTIONS)))


# Man page

def rst_options(program):
    """The OPTIONS of program as a reST definition list (the man page holds this text)."""
    blocks = []
    for option in options_for(program):
        blocks.append("%s\n%s\n" % (_rst_term(option), _rst_body(option)))
    return "\n".join(blocks)


def _rst_term(option):
    metavar = "*%s*" % option.metavar
    if option.flag is None:
        return "``%s`` = %s (config file only)" % (option.name, metavar)
    if not option.in_file:
        return "**%s** %s (command line only)" % (option.flag, metavar)
    return "**%s** %s, ``%s`` = %s" % (option.flag, metavar, option.name, metavar)


def _rst_body(option):
    text = option.help
    if option.choices:
        text += " One of %s." % ", ".join("**%s**" % c for c in option.choices)
    else:
        text += " %s%s." % (option.type.desc[0].upper(), option.type.desc[1:])
    if option.default is REQUIRED:
        text += " Required."
    elif option.default_text() is not None:
        text += " Default: %s." % option.default_text()
    return "\n".join("    " + line for line in _wrap(text, 92))


def _wrap(text, width):
    lines, line = [], ""
    for word in re.findall(r"(?:>=? )?\S+", text):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = "%s %s" % (line, word) if line else word
    lines.append(line)
    return lines


def socket_path(config):
    """The LUXI socket of a masterd config: socket, else DIR/run/jqueue.sock."""
    return os.path.abspath(config.socket or os.path.join(config.state_dir, "run",
                                                         "jqueue.sock"))


def connection_caps(config):
    """{"LUXI": n, "HTTP": n (0: off)}: jq-masterd's connection caps, fitted together to
    the open files limit (jqueue.connlimit)."""
    return connlimit.fit_caps({"LUXI": config.max_connections,
                               "HTTP": config.http_max_connections if config.http else 0})
