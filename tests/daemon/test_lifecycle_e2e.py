"""End-to-end tests of a job's whole life with a real jq-masterd running real commands:
groups, hold and release, reset, retry, start times across a restart, retention."""

import os
import signal
import time

import pytest
from daemon_helpers import processes_with, wait_all_final
from test_commands_e2e import marked, wait_until

import jqueue
from jqueue import constants, serializer
from jqueue.cli import exitcodes
from jqueue.job import ts_to_float


def command(cmd, **params):
    return dict({"OP_ID": constants.OP_COMMAND_RUN, "cmd": cmd}, **params)


def fields(client, job_id, names):
    return dict(zip(names, client.query_jobs([job_id], names)[0]))


@pytest.fixture
def daemon(daemons):
    return daemons()


def test_a_three_level_tree_with_a_failing_leaf(daemon, tmp_path):
    """render > shot1 > {ok, fails}, render > shot2 > {ok}: statuses follow the leaves, a
    dependency on the group waits for all of it, reset runs the tree again, and jqctl
    tree and list --parent show it."""
    flag, go = tmp_path / "fix", tmp_path / "go"
    assert daemon.jqctl("group", "render")[1] == "1\n"
    assert daemon.jqctl("group", "--parent", "render", "shot1")[1] == "2\n"
    assert daemon.jqctl("group", "--parent", "1", "shot2")[1] == "3\n"
    code, out, err = daemon.jqctl("run", "--parent", "render|shot1", "--", "true")
    assert (code, out) == (0, "4\n"), err
    # Fails until the flag file exists.
    assert daemon.jqctl("run", "--parent", "shot1", "-c", "test -e %s" % flag)[1] == "5\n"
    # Runs until held, so that the group has work left; succeeds once "go" exists.
    assert daemon.jqctl("run", "--parent", "shot2", "--kill-grace", "1", "-c",
                        "test -e %s || sleep 1000" % go)[1] == "6\n"
    with daemon.client() as client:
        wait_until(lambda: fields(client, 6, ["pid"])["pid"], 20, "job 6 to run")
        assert daemon.jqctl("hold", "6")[0] == 0
        wait_until(lambda: fields(client, 6, ["status"])["status"] == "queued", 20,
                   "job 6 to be stopped by its hold")
    with daemon.client() as client:
        after = client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0,
                                    "depends": [[1, []]]}])
        wait_all_final(client, [4, 5], 30)
        # A group follows its jobs once their changes are durable: one commit later.
        wait_until(lambda: fields(client, 2, ["opstatus"])["opstatus"] == ["error"], 10,
                   "shot1 to end")
        got = fields(client, 1, ["status", "opstatus", "total", "finished", "errors"])
        assert got == {"status": "error", "opstatus": ["queued"], "total": 3, "finished": 2,
                       "errors": 1}
        assert fields(client, 2, ["status", "opstatus"]) == {"status": "error",
                                                             "opstatus": ["error"]}
        # queued until a worker takes it up, then waiting for the group: never further.
        wait_until(lambda: fields(client, after, ["status"])["status"] == "waiting", 10,
                   "the job depending on the group to wait")
    code, out, _ = daemon.jqctl("tree")
    lines = [line.split() for line in out.splitlines()]
    assert [line[:3] for line in lines[1:]] == [
        ["1", "error", "2/3"], ["2", "error", "2/2"], ["4", "success", "COMMAND_RUN(true)"],
        ["5", "error", "COMMAND_RUN(test"], ["3", "queued", "0/1"], ["6", "queued*",
                                                                  "COMMAND_RUN(test"]]
    assert out.splitlines()[3].endswith("    COMMAND_RUN(true)")  # two levels down
    code, out, _ = daemon.jqctl("list", "--parent", "render|shot1", "--no-headers", "-o",
                                "id,status")
    assert out.split() == ["4", "success", "5", "error"]
    go.write_text("")
    assert daemon.jqctl("release", "6")[0] == 0
    assert daemon.jqctl("wait", "render|shot2") == (0, "Job 3 finished: success\n", "")
    with daemon.client() as client:
        wait_all_final(client, [after], 30)  # the group ended first: it depends on it
        assert fields(client, 1, ["status", "opstatus", "finished"]) == {
            "status": "error", "opstatus": ["error"], "finished": 3}
        with jqueue.Client(daemon.socket) as library:
            assert library.wait_for_job(1, timeout=5).status == "error"
            flag.write_text("")
            assert library.reset_job(1) == (True, "Group 1: 3 job(s) reset")
        wait_until(lambda: client.query_jobs([1], ["status"])[0] == ["success"], 30,
                   "the group to succeed after its reset")
        assert "* RESET : by request" in "".join(client.follow_job_log(5))


def test_a_hold_stops_the_running_command_and_release_runs_it_again(daemon, tmp_path):
    """hold: no process of the job is left, it is queued and held; release: it runs
    again from the start, its attempts counted from 1."""
    env, mark = marked()
    runs = tmp_path / "runs"
    with daemon.client() as client:
        job_id = client.submit_job([command(
            "echo run >> %s; sleep 1000" % runs, env=env, kill_grace=1, max_attempts=1)])
        wait_until(lambda: processes_with(mark), 20, "the command to run")
        assert client.hold_job(job_id) == [True, "Job %d held" % job_id]
        wait_until(lambda: fields(client, job_id, ["status"])["status"] == "queued", 20,
                   "the held job to go back to queued")
        assert processes_with(mark) == []
        assert fields(client, job_id, ["held", "attempt", "reason"]) == {
            "held": True, "attempt": 0, "reason": "KILLED"}
        assert runs.read_text() == "run\n"
        assert client.release_job(job_id)[0]
        wait_until(lambda: runs.read_text() == "run\nrun\n", 20, "the second run")
        assert fields(client, job_id, ["status", "attempt"]) == {"status": "running",
                                                                 "attempt": 1}
        client.cancel_job(job_id, kill=True)
        wait_all_final(client, [job_id], 30)
    assert processes_with(mark) == []
    log = "".join(daemon.client().follow_job_log(job_id))
    assert log.count("* START") == 2 and "* HOLD : stopped by a hold" in log


def test_a_group_is_canceled_and_waited_for_by_its_title(daemon):
    """jqctl cancel batch cancels its running job (as hold batch would hold it); jqctl
    wait batch waits for the tree and says how it ended."""
    assert daemon.jqctl("group", "batch")[0] == 0
    code, out, err = daemon.jqctl("run", "--parent", "batch", "--kill-grace", "1", "--",
                                  "sleep", "300")
    assert code == 0, err
    with daemon.client() as client:
        wait_until(lambda: fields(client, int(out), ["pid"])["pid"], 20, "the sleep to run")
    code, out, err = daemon.jqctl("cancel", "batch")
    assert code == 0 and "canceled" in out, err
    code, out, _ = daemon.jqctl("wait", "batch")
    assert code == exitcodes.EXIT_CANCELED and out == "Job 1 finished: canceled\n"


def test_retry_gives_a_failed_command_one_more_attempt(daemon, tmp_path):
    """retry of a failed job: it runs once more, attempt 2 of 2 (one more in all)."""
    flag = tmp_path / "ok"
    with daemon.client() as client:
        job_id = client.submit_job([command("test -e %s" % flag)])
        wait_all_final(client, [job_id], 30)
        flag.write_text("")
    code, out, _ = daemon.jqctl("retry", str(job_id))
    assert code == 0 and "one more attempt" in out
    with jqueue.Client(daemon.socket) as client:
        assert client.wait_for_job(job_id, timeout=30).status == "success"
        assert fields(client, job_id, ["attempt", "max_attempts"]) == {
            "attempt": 2, "max_attempts": 2}
    assert "Command: attempt 2 of 2 on " in daemon.jqctl("info", str(job_id))[1]
    assert "ATTEMPT : 2/2\n" in daemon.jqctl("log", str(job_id))[1]


def test_a_scheduled_job_waits_for_its_time_across_a_restart(daemons):
    """--in: queued until then, also after the daemon restarts; then it runs, not before."""
    daemon = daemons()
    code, out, err = daemon.jqctl("submit", "--in", "4s", "--op", "OP_TEST_DELAY",
                                  "duration=0")
    assert code == 0, err
    job_id = int(out)
    with daemon.client() as client:
        not_before = fields(client, job_id, ["not_before"])["not_before"]
    assert daemon.stop() == 0
    daemon.start()
    with jqueue.Client(daemon.socket) as client:
        status = fields(client, job_id, ["status", "not_before"])
        if time.time() < not_before:
            assert status == {"status": "queued", "not_before": not_before}
        assert client.wait_for_job(job_id, timeout=30).status == "success"
        started = ts_to_float(fields(client, job_id, ["start_ts"])["start_ts"])
    assert started >= not_before


def test_retention_archives_and_purges_by_itself_and_purge_does_it_now(daemons):
    """With short retention times the daemon archives, then purges jobs and their logs,
    and queue info reports it; jqctl purge purges at once."""
    daemon = daemons(args=["--archive-after", "1", "--keep-archived", "2",
                           "--retention-interval", "0.5"])
    code, out, err = daemon.jqctl("run", "--wait", "--", "echo", "hello")
    assert code == 0, err
    job_id = int(out.split("Job ")[1].split()[0])
    log = os.path.join(daemon.state_dir, "logs", "%d.log" % job_id)
    assert os.path.exists(log)
    directory = os.path.join(daemon.queue_dir, "archive", "0")
    with daemon.client() as client:
        # The job's file goes first, then its log, then the directory left empty: the
        # job is gone from queries a moment before the purge has done all of it.
        wait_until(lambda: client.query_jobs([job_id], ["id"]) == [None]
                   and not os.path.exists(directory), 60, "the job to be archived and purged")
    assert not os.path.exists(log)
    info = serializer.loads(daemon.jqctl("queue", "info", "--json")[1])["retention"]
    assert info["totals"]["archived"] >= 1 and info["totals"]["purged"] >= 1
    assert info["totals"]["bytes_freed"] > 0
    assert "retention: archived" in daemon.stderr()

    other = daemons(args=["--archive-after", "0", "--keep-archived", "0"])
    with other.client() as client:
        ids = [client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}])
               for _ in range(3)]
        wait_all_final(client, ids, 30)
    assert other.jqctl("autoarchive", "all")[1] == "Archived 3 jobs\n"
    code, out, _ = other.jqctl("purge", "--older-than", "0")
    assert code == 0 and out.startswith("Purged 3 jobs, ")
    with other.client() as client:
        assert client.query_jobs(ids, ["id"]) == [None] * 3
        assert client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}]) == 4


def test_the_tree_holds_schedule_and_archive_survive_kill_9_of_the_master(daemon, tmp_path):
    """kill -9 of jq-masterd at three points: the tree and its statuses, a held group (its
    running command stopped, a job added to it later kept from starting), a dependency on a group,
    a failed job, a start time, a release just acknowledged, and jobs archived by retention
    are all as they were after the restart; retry, release and the schedule then work."""
    env, mark = marked()
    flag, go, runs = tmp_path / "fix", tmp_path / "go", tmp_path / "runs"
    assert daemon.jqctl("group", "render")[1] == "1\n"
    assert daemon.jqctl("group", "--parent", "render", "shot1")[1] == "2\n"
    assert daemon.jqctl("group", "--parent", "render", "shot2")[1] == "3\n"
    with daemon.client() as client:
        assert client.submit_job([command("true")], parent="render|shot1") == 4
        assert client.submit_job([command("test -e %s" % flag)], parent=2) == 5
        assert client.submit_job([command("echo run >> %s; test -e %s || sleep 1000" % (
            runs, go), env=env, kill_grace=1, max_attempts=2)], parent="shot2") == 6
        wait_until(lambda: processes_with(mark), 20, "job 6's command to run")
        # The group, by its path: its running job is stopped.
        assert daemon.jqctl("hold", "render|shot2")[0] == 0
        wait_until(lambda: fields(client, 6, ["status"])["status"] == "queued", 20,
                   "job 6 to be stopped by its group's hold")
        assert client.submit_job([command("true", max_attempts=2)],
                                 parent="render|shot2") == 7
        after = client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0,
                                    "depends": [[1, []]]}])
        scheduled = client.submit_job([command("true")], start_in=8)
        not_before = fields(client, scheduled, ["not_before"])["not_before"]
        wait_all_final(client, [4, 5], 30)
        wait_until(lambda: fields(client, 2, ["opstatus"])["opstatus"] == ["error"], 10,
                   "shot1 to end")
        wait_until(lambda: fields(client, after, ["status"])["status"] == "waiting", 10,
                   "the job depending on the group to wait")
    assert processes_with(mark) == []
    names = ["status", "held", "parent", "children", "total", "finished", "errors"]
    with daemon.client() as client:
        before = {job_id: fields(client, job_id, names) for job_id in range(1, after + 1)}
    assert before[1]["status"] == "error" and before[1]["children"] == [2, 3]
    assert before[1]["total"] == 4 and before[1]["finished"] == 2
    # Added to a held group: held through it (it does not start while its group is held).
    assert before[6]["held"] and before[7]["held"] and before[7]["status"] == "queued"
    assert before[after]["status"] == "waiting"

    assert daemon.kill() == -signal.SIGKILL
    daemon.start()
    with daemon.client() as client:
        # The crash rules put a waiting job back in the queue; a worker finds again that
        # it waits (its dependency): wait for that before comparing.
        wait_until(lambda: fields(client, after, ["status"])["status"] == "waiting", 20,
                   "the job depending on the group to wait again")
        got = {job_id: fields(client, job_id, names) for job_id in range(1, after + 1)}
        assert got == before
        status = fields(client, scheduled, ["status", "not_before"])
        assert status["not_before"] == not_before
        if time.time() < not_before:
            assert status["status"] == "queued"
    flag.write_text("")
    code, out, err = daemon.jqctl("retry", "5")
    assert code == 0, err
    go.write_text("")
    code, out, err = daemon.jqctl("release", "3")
    assert code == 0, err
    # At once: the release was acknowledged. Jobs 6 and 7 may have started meanwhile: an
    # attempt that dies with the daemon ends NODE_LOST, hence their second attempt.
    assert daemon.kill() == -signal.SIGKILL
    daemon.start()
    with jqueue.Client(daemon.socket) as client:
        assert [fields(client, job_id, ["held"])["held"] for job_id in (3, 6, 7)] == [
            False] * 3
        assert client.wait_for_job(1, timeout=60).status == "success"
        assert client.wait_for_job(after, timeout=30).status == "success"
        assert client.wait_for_job(scheduled, timeout=30).status == "success"
        assert ts_to_float(fields(client, scheduled, ["start_ts"])["start_ts"]) >= not_before
        assert fields(client, 5, ["attempt"]) == {"attempt": 2}
    assert runs.read_text().startswith("run\nrun\n")  # stopped by the hold, then again

    assert daemon.stop() == 0
    daemon.args = ["--archive-after", "1", "--retention-interval", "0.5"]
    daemon.start()
    ids = list(range(1, scheduled + 1))
    with daemon.client() as client:
        wait_until(lambda: all(row[0] for row in client.query_jobs(ids, ["archived"])), 30,
                   "retention to archive every job")
    assert daemon.kill() == -signal.SIGKILL
    daemon.start()
    with daemon.client() as client:
        assert client.query_jobs(ids, ["archived"]) == [[True]] * len(ids)
        # An archived job keeps its status and parent; the counts are of live trees only.
        assert client.query_jobs([1, 4, 6], ["status", "parent"]) == [
            ["success", None], ["success", 2], ["success", 3]]
        assert client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}]) == len(ids) + 1
    assert daemon.stop() == 0  # a checkpoint: the files are where the journal says
    archive = os.path.join(daemon.queue_dir, "archive", "0")
    assert sorted(os.listdir(archive)) == sorted("job-%d" % i for i in ids)
    live = [name for name in os.listdir(daemon.queue_dir) if name.startswith("job-")]
    assert live == ["job-%d" % (len(ids) + 1)]
