"""End-to-end: a node's prolog and epilog (jq-masterd's options on one machine) around
its command jobs, as an operator configures them in the configuration file.

Row 25 of other-systems.md: a prolog that fails means the command never runs (INTERR,
retried while attempts remain); the epilog runs after every attempt with the command's
status, and its failure marks the node degraded without changing the job's result.
"""

import os
import shlex
import signal

from daemon_helpers import wait_all_final, write_config
from test_commands_e2e import command, log_of, run_to_end, wait_until

from jqueue import constants


def hooks_config(path, record, prolog=True):
    """A config whose prolog refuses jobs with JQ_TEST_MARK=fail and whose epilog
    appends "JOB STATUS SIGNAL" to record, failing for JQ_TEST_MARK=badepilog."""
    options = {"epilog": 'echo "$JQ_JOB_ID $JQ_EXIT_STATUS $JQ_SIGNAL" >> %s; '
                         '[ "$JQ_TEST_MARK" != badepilog ] || exit 2' % shlex.quote(str(record))}
    if prolog:
        options["prolog"] = ('[ "$JQ_TEST_MARK" != fail ] || { echo prolog refuses '
                             '$JQ_JOB_ID; exit 1; }')
    return write_config(path, **options)


def epilog_lines(record):
    return record.read_text().splitlines() if record.exists() else []


def test_the_prolog_gates_each_attempt_and_the_epilog_reports_each_end(daemons, tmp_path):
    record = tmp_path / "epilog.txt"
    daemon = daemons(config=hooks_config(tmp_path / "jq.toml", record))
    # a command that runs: the epilog writes the job's status, as the job records it
    ran = tmp_path / "ran"
    job_id, values = run_to_end(daemon, command("touch %s; exit 3" % ran))
    assert values["exit_status"] == 3 and ran.exists()
    assert epilog_lines(record) == ["%d 3 " % job_id]
    # the prolog refuses: the command never runs, INTERR, tried again as attempts allow
    refused = tmp_path / "refused"
    job_id, values = run_to_end(daemon, command(
        "touch %s" % refused, env={"JQ_TEST_MARK": "fail"}, max_attempts=2,
        retry_delay=0.1))
    assert not refused.exists()
    assert (values["status"], values["reason"], values["attempt"], values["exit_status"]) \
        == ("error", constants.REASON_INTERR, 2, None)
    log = log_of(daemon, job_id)
    assert log.count("prolog refuses %d\n" % job_id) == 2, log
    assert "* INTERR : prolog exited with status 1: the command never ran" in log
    assert "* RETRY : attempt 2 of 2" in log
    code, out, _ = daemon.jqctl("wait", str(job_id))
    assert code == 125, out  # failed without an exit status of the command's
    assert epilog_lines(record)[-2:] == ["%d  " % job_id] * 2  # after each prolog


def test_a_failing_epilog_degrades_the_node_until_one_succeeds(daemons, tmp_path):
    record = tmp_path / "epilog.txt"
    daemon = daemons(config=hooks_config(tmp_path / "jq.toml", record, prolog=False))
    job_id, values = run_to_end(daemon, command("true", env={"JQ_TEST_MARK": "badepilog"}))
    assert (values["status"], values["exit_status"]) == ("success", 0)
    assert "* EPILOG : exited with status 2 (the outcome stands)" in log_of(daemon, job_id)
    with daemon.client() as client:
        [node] = client.list_nodes()
    why = "the epilog of job %d attempt 1 exited with status 2" % job_id
    assert node["degraded"] == why
    code, out, err = daemon.jqctl("node", "list")
    assert code == 0, err
    assert out.splitlines()[1].split()[7] == "degraded"
    assert "%s: degraded: %s\n" % (node["name"], why) in out
    actions = open(os.path.join(daemon.state_dir, "actions.log")).read()
    assert " %s 0 DEGRADED %s\n" % (node["name"], why) in actions
    # the next attempt there whose epilog succeeds: the node is no longer degraded
    run_to_end(daemon, command("true"))
    with daemon.client() as client:
        assert client.list_nodes()[0]["degraded"] is None
    actions = open(os.path.join(daemon.state_dir, "actions.log")).read()
    assert " %s 0 RECOVERED the epilog of job %d attempt 1 succeeded\n" % (
        node["name"], job_id + 1) in actions


def test_sighup_changes_the_hooks_of_the_attempts_that_start_next(daemons, tmp_path):
    record = tmp_path / "epilog.txt"
    path = tmp_path / "jq.toml"
    daemon = daemons(config=hooks_config(path, record))
    with daemon.client() as client:
        sleeper = client.submit_job([command("sleep 30", env={"JQ_TEST_MARK": "x"})])
        wait_until(lambda: client.query_jobs([sleeper], ["status"])[0] == ["running"],
                   what="the sleeper running")
        write_config(path)  # no hooks any more
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: epilog changed" in daemon.stderr(), what="the reload")
        assert "SIGHUP: prolog changed" in daemon.stderr()
        job_id, values = run_to_end(daemon, command("true", env={"JQ_TEST_MARK": "fail"}))
        assert values["status"] == "success"
        assert epilog_lines(record) == []
        client.cancel_job(sleeper, True)  # it started with the epilog: it runs at its end
        wait_all_final(client, [sleeper], 30)
        assert epilog_lines(record) == ["%d  9" % sleeper]
