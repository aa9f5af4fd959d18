"""JobMon configurations read as service definitions (jqueue.cli.jobmon): the files
JobMon's own README shows, files laid out as JobMon's test suite lays them out (the 2014
control-dir generation, relative include globs and commands), and the refusals."""

import json
import os

import pytest

from jqueue import service
from jqueue.cli import jobmon
from jqueue.cli.exitcodes import CommandError

#: The master configuration of JobMon's README, with its elided "jobs": { ... } empty.
README_MASTER = """
{ "supervisor": { "working-dir": ".", "control-port": 6666, "event-port": 6667,
  "include-dirs": [ "jobs/*.json" ], "log-file": "$TMP/supervisor.log",
  "log-level": "WARNING" }, "jobs": { } }
"""
#: The job file of JobMon's README; its two typos fixed (a comma after the last env
#: value, a missing quote in "restart"), which json.load refuses in JobMon too.
README_JOBS = """
{ "true-job": { "command": "/bin/true", "stdin": "$DEVNULL", "stdout": "$DEVNULL",
  "stderr": "$DEVNULL", "env": { "HOME": "/home/bob" }, "working-dir": "/home/bob",
  "signal": "SIGSTOP", "autostart": false, "restart": true } }
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if isinstance(text, str) else json.dumps(text, indent=4))
    return str(path)


def checked(definitions):
    """Every definition is one the queue takes."""
    return [service.check_definition(d) for d in definitions]


def test_the_readme_master_and_job_file_become_a_service(tmp_path):
    """JobMon's README example: include-dirs found from the working directory, $DEVNULL
    (unset) is /dev/null, restart true is always, SIGSTOP is the stop signal."""
    master = write(tmp_path / "master.json", README_MASTER)
    write(tmp_path / "jobs" / "true.json", README_JOBS)
    [job] = checked(jobmon.load(master, environ={}, cwd=str(tmp_path)))
    assert job["name"] == "true-job" and job["command"] == "/bin/true"
    assert (job["stdin"], job["stdout"], job["stderr"]) == (os.devnull,) * 3
    assert job["env"] == {"HOME": "/home/bob"} and job["dir"] == "/home/bob"
    assert (job["stop_signal"], job["autostart"], job["restart"]) == (
        "SIGSTOP", False, service.RESTART_ALWAYS)


def test_a_tree_laid_out_as_jobmons_test_suite(tmp_path):
    """A master with control-dir (JobMon 2014), a relative include glob, no jobs of its
    own; job files of one job each, with relative commands run from the working dir."""
    suite = tmp_path / "suite"
    master = write(suite / "jobfile.json", {"supervisor": {
        "working-dir": ".", "control-dir": "/tmp/supervisor",
        "include-dirs": ["test-jobs/*.json"], "log-file": "jobmon-test-output.log",
        "log-level": "INFO"}})
    write(suite / "test-jobs" / "env-values.json", {"env-values": {
        "command": "test-jobs/env-values", "stdout": "/tmp/env-test",
        "env": {"A": "a", "B": "b"}}})
    write(suite / "test-jobs" / "on-signal.json", {"on-signal": {
        "command": "test-jobs/on-signal", "stdout": "/tmp/signal-test",
        "signal": "SIGUSR1"}})
    write(suite / "test-jobs" / "to-stderr.json", {"to-stderr": {
        "command": "test-jobs/to-stderr", "stderr": "/tmp/stderr-test"}})
    jobs = {d["name"]: d for d in checked(jobmon.load(master, environ={}, cwd=str(suite)))}
    assert sorted(jobs) == ["env-values", "on-signal", "to-stderr"]
    for name, job in jobs.items():
        assert job["command"] == "test-jobs/" + name and job["dir"] == str(suite)
        assert job["restart"] == service.RESTART_NO and job["autostart"] is False
    assert jobs["env-values"]["env"] == {"A": "a", "B": "b"}
    assert jobs["on-signal"]["stop_signal"] == "SIGUSR1"
    assert jobs["to-stderr"]["stderr"] == "/tmp/stderr-test"
    assert jobs["to-stderr"]["stdout"] is None  # not given: the service's log


def test_variables_are_expanded_where_jobmon_expands_them(tmp_path):
    """$NAME and ${NAME} in working-dir, include-dirs and the stdio files and the job's
    working-dir, $$ is a $; the command and env are left as written."""
    environ = {"BASE": str(tmp_path), "LOGS": "/var/log/jm"}
    master = write(tmp_path / "m.json", {
        "supervisor": {"working-dir": "$BASE/run", "include-dirs": ["${BASE}/inc/*.json"]},
        "jobs": {"a": {"command": "echo $HOME", "stdout": "$LOGS/a.out",
                       "stderr": "$LOGS/a$$.err", "env": {"X": "$LOGS"},
                       "working-dir": "sub"}}})
    write(tmp_path / "inc" / "b.json", {"jobs": {"b": {"command": "true"}}})
    a, b = checked(jobmon.load(master, environ=environ, cwd="/"))
    assert a["command"] == "echo $HOME" and a["env"] == {"X": "$LOGS"}
    assert (a["stdout"], a["stderr"]) == ("/var/log/jm/a.out", "/var/log/jm/a$.err")
    assert a["dir"] == str(tmp_path / "run" / "sub")
    assert b["name"] == "b" and b["dir"] == str(tmp_path / "run")


def test_a_job_file_alone_and_our_own_parameters(tmp_path):
    """A job file given directly: jobs are relative to the current directory; keys of
    ours (node, stop_timeout, movable) pass through."""
    path = write(tmp_path / "jobs.json", {"web": {
        "command": "serve", "restart": True, "autostart": True, "node": "node2",
        "stop_timeout": 3, "movable": True}})
    [web] = checked(jobmon.load(path, environ={}, cwd=str(tmp_path)))
    assert (web["node"], web["stop_timeout"], web["movable"], web["dir"]) == (
        "node2", 3, True, str(tmp_path))


@pytest.mark.parametrize("jobs, message", [
    ({"a": {"comand": "true"}}, "job a: unknown key(s) 'comand'"),
    ({"a": {"stdout": "/x"}}, "job a: no command"),
    ({"a": {"command": "true", "restart": "yes"}}, "restart must be true or false"),
    ({"a": {"command": "true", "stdout": 3}}, "stdout must be a string"),
    ({"a": {"command": "true", "stdout": "$UNSET_HERE/x"}}, "$UNSET_HERE is not set"),
    ({"a": "true"}, "job a must be an object"),
])
def test_a_mistake_refuses_the_file_with_its_name_and_job(tmp_path, jobs, message):
    """JobMon would skip the job with a warning; we refuse and say where."""
    path = write(tmp_path / "jobs.json", jobs)
    with pytest.raises(CommandError) as raised:
        jobmon.load(path, environ={}, cwd=str(tmp_path))
    assert message in str(raised.value) and path in str(raised.value)


def test_a_name_defined_twice_across_files_is_refused(tmp_path):
    """Job names are global across the master and its job files, as in JobMon."""
    master = write(tmp_path / "m.json", {"supervisor": {"include-dirs": ["*.job"]},
                                         "jobs": {"a": {"command": "true"}}})
    other = write(tmp_path / "x.job", {"a": {"command": "false"}})
    with pytest.raises(CommandError) as raised:
        jobmon.load(master, environ={}, cwd=str(tmp_path))
    assert "job a is already defined in %s" % master in str(raised.value)
    assert other in str(raised.value)


def test_files_that_are_not_jobmon_configurations_are_refused(tmp_path):
    """Unreadable, not JSON, no jobs at all, an unknown supervisor key."""
    with pytest.raises(CommandError, match="cannot read"):
        jobmon.load(str(tmp_path / "missing.json"), environ={})
    bad = write(tmp_path / "bad.json", README_JOBS.replace('"/home/bob" }', '"/home/bob", }'))
    with pytest.raises(CommandError, match="is not JSON"):
        jobmon.load(bad, environ={})
    empty = write(tmp_path / "empty.json", README_MASTER)  # its include-dirs match nothing
    with pytest.raises(CommandError, match="no jobs"):
        jobmon.load(empty, environ={}, cwd=str(tmp_path))
    odd = write(tmp_path / "odd.json", {"supervisor": {"pid-file": "/run/x"}})
    with pytest.raises(CommandError, match="unknown supervisor key"):
        jobmon.load(odd, environ={})
