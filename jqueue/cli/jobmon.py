"""JobMon's configuration as service definitions (``jqctl service import``).

JobMon (other-systems.md, section 4.2) reads a *master* file ``{"supervisor": {...},
"jobs": {...}}`` whose ``include-dirs`` globs name *job files* (a map of jobs; the
top-level ``jobs`` may be omitted). This module reads either kind of file the way JobMon
does and turns each job into a service definition (jqueue.service):

==============  ==================================================================
JobMon          service
==============  ==================================================================
name (key)      ``name``
command         ``command`` (run by /bin/sh -c)
stdin/stdout/   the same files (stdout and stderr appended); not given: stdin is
stderr          /dev/null and the output goes to the service's log (JobMon: /dev/null)
env             ``env`` (over the minimal base environment, not the daemon's)
working-dir     ``dir``; default: the supervisor's working-dir
signal          ``stop_signal``
autostart       ``autostart``
restart         ``restart``: true is ``always``, false ``no``
==============  ==================================================================

As in JobMon, ``$NAME`` is expanded from the environment (``$$`` is a ``$``) in the
supervisor's ``working-dir`` and ``include-dirs`` and in each job's stdin, stdout,
stderr and working-dir; relative paths are taken from the current directory (the
supervisor's working-dir, from where JobMon would have started). Unlike JobMon, which
logs and skips what it cannot use, anything wrong refuses the whole file with a message
naming the file, the job and the key: no job at all, a job without a command, a
duplicate name, a value of the wrong type, an unknown key, a variable that is not set
(``$DEVNULL``, which JobMon's own example uses, means /dev/null when unset). A job may
also carry service parameters of ours (``node``, ``affinity``, ``stop_timeout``,
``startsecs``, ...). The supervisor's keys other than working-dir and include-dirs
(ports, ``control-dir``, log file and level) are about JobMon's daemon: read, ignored.
"""

import glob
import json
import os
import string

from jqueue import service
from jqueue.cli.exitcodes import CommandError

#: JobMon's keys of a job, and the service parameter each becomes.
JOB_KEYS = {"command": "command", "stdin": "stdin", "stdout": "stdout", "stderr": "stderr",
            "env": "env", "working-dir": "dir", "signal": "stop_signal",
            "autostart": "autostart", "restart": "restart"}
#: The supervisor's keys (control-dir: JobMon's 2014 Unix sockets, before the ports); all
#: but working-dir and include-dirs are about JobMon's own daemon and are ignored.
SUPERVISOR_KEYS = ("working-dir", "control-dir", "control-port", "event-port", "include-dirs",
                   "log-file", "log-level")
_EXPANDED = ("stdin", "stdout", "stderr", "working-dir")
_PATHS = ("stdin", "stdout", "stderr")


def load(path, environ=None, cwd=None):
    """The service definitions of a JobMon master or job file, in file order (a list of
    dicts, not checked further than JobMon's rules); CommandError (a usage error)
    saying what is wrong."""
    environ = dict(os.environ if environ is None else environ)
    cwd = os.path.abspath(cwd or os.getcwd())
    data = _read_json(path)
    jobs = []
    if _is_master(data):
        supervisor = data.get("supervisor") or {}
        if not isinstance(supervisor, dict):
            raise CommandError("%s: 'supervisor' must be an object" % path)
        unknown = sorted(set(supervisor) - set(SUPERVISOR_KEYS))
        if unknown:
            raise CommandError("%s: unknown supervisor key(s) %s (JobMon knows %s)" % (
                path, ", ".join(unknown), ", ".join(SUPERVISOR_KEYS)))
        base = os.path.join(cwd, _expand(path, "supervisor", "working-dir",
                                         _text(path, "supervisor", "working-dir",
                                               supervisor.get("working-dir", ".")), environ))
        base = os.path.normpath(base)
        jobs.extend(_jobs_of(path, data.get("jobs") or {}))
        includes = supervisor.get("include-dirs", [])
        if not isinstance(includes, list) or not all(isinstance(g, str) for g in includes):
            raise CommandError("%s: 'include-dirs' must be a list of globs" % path)
        for pattern in includes:
            pattern = os.path.join(cwd, _expand(path, "supervisor", "include-dirs", pattern,
                                                environ))
            for name in sorted(glob.glob(pattern)):
                included = _read_json(name)
                if not isinstance(included, dict):
                    raise CommandError("%s: a job file is an object of jobs" % name)
                if set(included) == {"jobs"} and isinstance(included["jobs"], dict):
                    included = included["jobs"]
                jobs.extend(_jobs_of(name, included))
    else:
        base = cwd
        jobs.extend(_jobs_of(path, data))
    if not jobs:
        raise CommandError("%s: no jobs (as JobMon, which refuses to start without one)" % path)
    seen = {}
    for source, name, _ in jobs:
        if name in seen:
            raise CommandError("%s: job %s is already defined in %s (names are global)" % (
                source, name, seen[name]))
        seen[name] = source
    return [_definition(source, name, job, base, environ) for source, name, job in jobs]


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except OSError as err:
        raise CommandError("cannot read %s: %s" % (path, err.strerror or err)) from None
    except ValueError as err:
        raise CommandError("%s is not JSON: %s" % (path, err)) from None


def _is_master(data):
    return isinstance(data, dict) and bool(data) and set(data) <= {"supervisor", "jobs"}


def _jobs_of(source, jobs):
    if not isinstance(jobs, dict):
        raise CommandError("%s: the jobs must be an object (name: job)" % source)
    found = []
    for name, job in jobs.items():
        if not isinstance(job, dict):
            raise CommandError("%s: job %s must be an object" % (source, name))
        found.append((source, name, job))
    return found


def _definition(source, name, job, base, environ):
    label = "%s: job %s" % (source, name)
    ours = set(service.PARAM_NAMES) - {"name"} - set(JOB_KEYS.values())
    unknown = sorted(set(job) - set(JOB_KEYS) - ours)
    if unknown:
        raise CommandError("%s: unknown key(s) %s (JobMon's: %s)" % (
            label, ", ".join(repr(k) for k in unknown), ", ".join(JOB_KEYS)))
    if "command" not in job:
        raise CommandError("%s: no command" % label)
    definition = {"name": name}
    for key, value in job.items():
        if key in _EXPANDED:
            value = _expand(source, name, key, _text(source, name, key, value), environ)
            if key in _PATHS and value == "":
                raise CommandError("%s: %s is empty" % (label, key))
            value = os.path.normpath(os.path.join(base, value))
        if key in ("autostart", "restart") and not isinstance(value, bool):
            raise CommandError("%s: %s must be true or false, not %s" % (
                label, key, json.dumps(value)))
        definition[JOB_KEYS.get(key, key)] = value
    definition.setdefault("dir", base)
    definition.setdefault("restart", False)  # JobMon's default: no restarts
    definition.setdefault("autostart", False)
    return definition


def _text(source, name, key, value):
    if not isinstance(value, str):
        raise CommandError("%s: job %s: %s must be a string, not %s" % (
            source, name, key, json.dumps(value)))
    return value


def _expand(source, name, key, text, environ):
    """$NAME expansion as JobMon does it (string.Template, safe), but an unset variable
    is an error (except $DEVNULL: /dev/null)."""
    template = string.Template(text)
    values = dict(environ)
    missing = [v for v in template.get_identifiers() if v not in values]
    for variable in missing:
        if variable == "DEVNULL":
            values["DEVNULL"] = os.devnull
        else:
            raise CommandError("%s: %s: %s: $%s is not set in the environment" % (
                source, name, key, variable))
    return template.safe_substitute(values)
