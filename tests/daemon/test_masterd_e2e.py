"""End-to-end tests of jq-masterd: real daemon processes driven by jqctl and raw LUXI.

Covers the LUXI methods over the socket, kill -9 and restart under load, the graceful stop
on SIGTERM (grace long and short), refusing a second daemon on the same queue or socket,
systemd notification, configuration errors and application opcode modules.
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
from daemon_helpers import (
    Daemon,
    RawLuxi,
    closed_by_peer,
    delay,
    jqop,
    masterd_command,
    wait_all_final,
    wait_for_status,
    write_config,
)

from jqueue import constants, errors
from jqueue.luxi.client import Client
from jqueue.queue import JobQueue

pytestmark = pytest.mark.timeout(90)

UNCLEAN = [["OpExecError", [constants.MSG_UNCLEAN_SHUTDOWN]]]
FAST = {"checkpoint_interval": 0.2, "read_timeout": 1, "idle_timeout": 5}



@pytest.fixture
def config(tmp_path):
    """Write a config file with fast settings plus the given options; its path."""
    def make(**options):
        return write_config(tmp_path / "jq.toml", **dict(FAST, **options))
    return make


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One daemon (2 workers) shared by the protocol tests of this module."""
    tmp = tmp_path_factory.mktemp("served")
    path = write_config(tmp / "jq.toml", workers=2, cluster_name="e2e-cluster",
                        master_node="node-e2e", **FAST)
    daemon = Daemon(tmp / "state", config=path).start()
    yield daemon
    assert daemon.stop() == 0, daemon.stderr()


def _block_workers(raw, socket_path, count=2):
    """Submit count long jobs and wait until they run (so later jobs stay queued)."""
    ids = [raw.ok("SubmitJob", [[delay(60, priority=-20)]]) for _ in range(count)]
    with Client(socket_path) as client:
        for job_id in ids:
            wait_for_status(client, job_id, {"running"})
    return ids


# jqctl


def test_jqctl_processes_submit_wait_list_info_watch(served):
    """jqctl run as a process submits, waits, lists, describes and watches jobs."""
    done = served.jqctl_process("submit", "--wait", "--op", "OP_TEST_JQUEUE",
                                'log_messages=["hello e2e"]')
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout.split()[0])
    assert "Job %d finished: success" % job_id in done.stdout
    listed = served.jqctl_process("list", "--no-headers", "--separator", ":", "-o",
                                  "id,status", str(job_id))
    assert listed.returncode == 0 and listed.stdout.strip() == "%d:success" % job_id
    info = served.jqctl_process("info", str(job_id))
    assert info.returncode == 0 and "OP_TEST_JQUEUE" in info.stdout
    watched = served.jqctl_process("watch", str(job_id))
    assert watched.returncode == 0 and "hello e2e" in watched.stdout
    queue = served.jqctl_process("queue", "info", "--json")
    assert json.loads(queue.stdout)["cluster_name"] == "e2e-cluster"


def test_jqctl_in_a_locale_that_cannot_write_a_title_escapes_it(served):
    """A title in letters an ASCII (or Latin-1) terminal cannot show ended jqctl with a
    UnicodeEncodeError; they are written as escapes."""
    titled = served.jqctl_process("run", "--title", "日本 ü", "--", "true")
    assert titled.returncode == 0, titled.stderr
    job_id = int(titled.stdout.split()[0])
    info = served.jqctl_process("info", str(job_id), env={"PYTHONIOENCODING": "ascii"})
    assert info.returncode == 0 and "Traceback" not in info.stderr, info.stderr
    assert "  Title: \\u65e5\\u672c \\xfc\n" in info.stdout
    listed = served.jqctl_process("list", "-o", "title", "--no-headers", str(job_id),
                                  env={"PYTHONIOENCODING": "ascii"})
    assert listed.returncode == 0 and listed.stdout == "\\u65e5\\u672c \\xfc\n", listed


def test_jqctl_covers_cancel_priority_archive_drain(served, tmp_path):
    """In-process jqctl: file submit with dependencies, cancel, change-priority, archive,
    autoarchive and drain/undrain, each with the documented exit status."""
    job_file = tmp_path / "jobs.json"
    job_file.write_text(json.dumps([[delay(0)], [delay(0, depends=[[-1, ["success"]]])]]))
    code, out, err = served.jqctl("submit", "--wait", str(job_file))
    assert code == 0, err
    first, second = (int(word) for word in out.split()[:2])
    assert second == first + 1
    with RawLuxi(served.socket) as raw:
        blockers = _block_workers(raw, served.socket)
        code, out, _ = served.jqctl("submit", "--op", "OP_TEST_DELAY", "duration=0")
        queued = int(out)
        assert served.jqctl("change-priority", "--priority", "high", str(queued))[0] == 0
        code, out, _ = served.jqctl("list", "--no-headers", "-o", "priority", str(queued))
        assert out.strip() == "-10"
        assert served.jqctl("cancel", str(queued))[0] == 0
        assert served.jqctl("cancel", *map(str, blockers))[0] == 0
        assert served.jqctl("wait", str(queued), *map(str, blockers))[0] == 3
    assert served.jqctl("archive", str(first))[0] == 0
    code, out, err = served.jqctl("list", "--no-headers", "-o", "id", str(first))
    assert code == 4 and "archived" in err
    code, out, _ = served.jqctl("autoarchive", "all")
    assert code == 0 and out.startswith("Archived ")
    assert served.jqctl("queue", "drain")[0] == 0
    code, _, err = served.jqctl("submit", "--op", "OP_TEST_DELAY", "duration=0")
    assert code == 6 and "drained" in err
    assert served.jqctl("queue", "undrain")[0] == 0
    assert served.jqctl("submit", "--wait", "--op", "OP_TEST_DELAY", "duration=0")[0] == 0


def test_jqctl_queue_info_shows_the_job_files_lag(daemons, config):
    """queue info shows how far the job files are behind; a checkpoint catches them up."""
    daemon = daemons(config=config(checkpoint_interval=3600))
    ids = [int(daemon.jqctl("submit", "--op", "OP_TEST_DELAY", "duration=0")[1])
           for _ in range(3)]
    with daemon.client() as client:
        wait_all_final(client, ids)
    code, out, _ = daemon.jqctl("queue", "info")
    assert code == 0
    assert "3 job(s) behind (checkpoint every 3600s)" in out, out
    assert "Changes: accepted" in out, out
    code, out, _ = daemon.jqctl("queue", "info", "--json")
    status = json.loads(out)["queue_status"]
    assert status["view_lag"] == 3 and status["view_age"] >= 0


# Raw LUXI clients (written from the wire format)


def test_raw_submit_and_wait_for_changes_with_string_ids(served):
    """A raw client submits, then follows a job by its id as a numeric string; ids are ints."""
    with RawLuxi(served.socket) as raw:
        job_id = raw.ok("SubmitJob", [[jqop(log_messages=["one", "two"])]])
        assert isinstance(job_id, int)
        info, serial, logs = None, None, []
        while info is None or info[1] not in constants.JOBS_FINALIZED:
            result = raw.ok("WaitForJobChange", [str(job_id), ["id", "status"], info, serial,
                                                 5])
            if result == "nochange":
                continue
            info, entries = result
            logs += [entry[3] for entry in entries]
            serial = max([serial or 0] + [entry[0] for entry in entries])
        assert info == [job_id, "success"]
        assert logs == ["one", "two"]
        assert raw.ok("WaitForJobChange", [str(job_id), ["status"], ["success"], serial, 5]) \
            == [["success"], []]


def test_raw_submit_many_with_relative_dependencies(served):
    """SubmitManyJobs resolves relative dependencies to the ids of the same request."""
    with RawLuxi(served.socket) as raw:
        results = raw.ok("SubmitManyJobs", [[
            [delay(0.1)],
            [delay(0, depends=[[-1, ["success"]]])],
            [jqop(depends=[[-2, ["success"]], [-1, ["success"]]])],
        ]])
        assert [ok for ok, _ in results] == [True, True, True]
        ids = [job_id for _, job_id in results]
        assert ids == list(range(ids[0], ids[0] + 3))
        with Client(served.socket) as client:
            finals = wait_all_final(client, ids)
        assert {status for status, _ in finals.values()} == {"success"}
        rows = raw.ok("QueryJobs", [[str(i) for i in ids], ["ops", "start_ts"]])
        assert rows[1][0][0]["depends"] == [[ids[0], ["success"]]]
        assert rows[2][0][0]["depends"] == [[ids[0], ["success"]], [ids[1], ["success"]]]
        assert rows[0][1] <= rows[1][1] <= rows[2][1]


def test_raw_cancel_queued_and_running_and_change_priority(served):
    """A queued job is reprioritized and canceled at once; a running one at its next
    cancellation point; a finished one cannot be canceled."""
    with RawLuxi(served.socket) as raw:
        blockers = _block_workers(raw, served.socket)
        queued = raw.ok("SubmitJob", [[delay(0)]])
        ok, _ = raw.ok("ChangeJobPriority", [str(queued), -5])
        assert ok and raw.ok("QueryJobs", [[queued], ["priority", "status"]]) == [
            [-5, "queued"]]
        ok, message = raw.ok("CancelJob", [str(queued)])
        assert ok and "canceled" in message
        assert raw.ok("QueryJobs", [[queued], ["status"]]) == [["canceled"]]
        started = time.monotonic()
        for job_id in blockers:
            ok, message = raw.ok("CancelJob", [str(job_id)])
            assert ok and "cancellation point" in message
        with Client(served.socket) as client:
            finals = wait_all_final(client, blockers, timeout=10)
        assert time.monotonic() - started < 5
        assert {status for status, _ in finals.values()} == {"canceled"}
        ok, message = raw.ok("CancelJob", [blockers[0]])
        assert not ok and "finished" in message
        assert raw.ok("ChangeJobPriority", [blockers[0], 0])[0] is False


def test_raw_archive_and_autoarchive(served):
    """ArchiveJob moves a finished job out of the live list; AutoArchiveJobs the rest."""
    with RawLuxi(served.socket) as raw:
        ids = [raw.ok("SubmitJob", [[delay(0)]]) for _ in range(3)]
        with Client(served.socket) as client:
            wait_all_final(client, ids)
        assert raw.ok("ArchiveJob", [str(ids[0])]) is True
        live = [row[0] for row in raw.ok("QueryJobs", [[], ["id"]])]
        assert ids[0] not in live and ids[1] in live
        assert raw.ok("QueryJobs", [[ids[0]], ["id", "archived"]]) == [[ids[0], True]]
        archived, left = raw.ok("AutoArchiveJobs", [-1, 10])
        assert archived >= 2 and left == 0
        assert [row[0] for row in raw.ok("QueryJobs", [[], ["id", "status"]])
                if row[1] in constants.JOBS_FINALIZED] == []
        assert raw.ok("ArchiveJob", [ids[0]]) is False
        assert raw.ok("ArchiveJob", [10 ** 9]) is False
    deadline = time.monotonic() + 5
    path = os.path.join(served.queue_dir, "archive", str(ids[0] // 10000), "job-%d" % ids[0])
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "archived job file not written"
        time.sleep(0.05)


def test_raw_drain_refuses_submissions(served):
    """While drained, SubmitJob is refused with JobQueueDrainError; the flag is visible."""
    with RawLuxi(served.socket) as raw:
        assert raw.ok("SetDrainFlag", [True]) is True
        try:
            assert raw.ok("QueryConfigValues", [["drain_flag"]]) == [True]
            assert os.path.exists(os.path.join(served.queue_dir, "drain"))
            success, result = raw.request("SubmitJob", [[delay(0)]])
            assert not success and result[0] == "JobQueueDrainError"
            success, result = raw.request("SubmitManyJobs", [[[delay(0)]]])
            assert not success and result[0] == "JobQueueDrainError"
            job_id = raw.ok("SubmitJobToDrainedQueue", [[delay(0)]])
            assert isinstance(job_id, int)
        finally:
            raw.ok("SetDrainFlag", [False])
        assert raw.ok("QueryConfigValues", [["drain_flag"]]) == [False]
        assert isinstance(raw.ok("SubmitJob", [[delay(0)]]), int)


def test_raw_queries_fields_filters_and_config_values(served):
    """QueryJobs fields, Query with a qlang filter, QueryFields and QueryConfigValues."""
    with RawLuxi(served.socket) as raw:
        good = raw.ok("SubmitJob", [[delay(0)]])
        bad = raw.ok("SubmitJob", [[jqop(fail=True, fail_message="boom")]])
        with Client(served.socket) as client:
            wait_all_final(client, [good, bad])
        row = raw.ok("QueryJobs", [[str(good)], list(constants.JOB_FIELDS)])[0]
        values = dict(zip(constants.JOB_FIELDS, row))
        assert values["id"] == good and values["status"] == "success"
        assert values["summary"] == ["TEST_DELAY(0)"] and values["archived"] is False
        assert len(values["received_ts"]) == 2 and all(isinstance(v, int)
                                                      for v in values["received_ts"])
        assert raw.ok("QueryJobs", [[bad], ["opresult"]]) == [[[["OpExecError", ["boom"]]]]]
        answer = raw.ok("Query", ["job", ["id", "status"],
                                  ["|", ["=", "id", good], ["=", "id", bad]]])
        assert [f["name"] for f in answer["fields"]] == ["id", "status"]
        assert answer["data"] == [[[0, good], [0, "success"]], [[0, bad], [0, "error"]]]
        answer = raw.ok("Query", ["job", ["id"], ["&", ["=", "status", "error"],
                                                  ["=", "id", bad]]])
        assert answer["data"] == [[[0, bad]]]
        fields = raw.ok("QueryFields", ["job", None])["fields"]
        assert [f["name"] for f in fields] == list(constants.JOB_FIELDS)
        assert raw.ok("QueryFields", ["job", ["id"]])["fields"][0]["kind"] == "number"
        names = ["drain_flag", "master_node", "cluster_name", "queue_dir", "version"]
        drained, master, cluster, queue_dir, version = raw.ok("QueryConfigValues", [names])
        assert (drained, master, cluster) == (False, "node-e2e", "e2e-cluster")
        assert queue_dir == os.path.abspath(served.queue_dir) and version
        success, result = raw.request("QueryConfigValues", [["no_such_value"]])
        assert not success and result[0] == "OpPrereqError"


def test_socket_and_run_directory_modes(served):
    """The socket is mode 0660 in a run directory of mode 0750, locked by the daemon's PID."""
    assert stat.S_ISSOCK(os.stat(served.socket).st_mode)
    assert stat.S_IMODE(os.stat(served.socket).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(os.path.dirname(served.socket)).st_mode) == 0o750
    assert os.readlink(served.socket + ".lock") == str(served.pid)


# Crashes and stops


def _load(socket_path, acked, stop, failures):
    """Client thread: submit jobs (single and many) and wait for some, recording every
    acknowledged id, until stop is set or the daemon goes away."""
    client = Client(socket_path, connect_timeout=2, timeout=10)
    count = 0
    try:
        while not stop.is_set():
            count += 1
            if count % 3 == 0:
                results = client.submit_many_jobs([[jqop(log_messages=["a", "b"])],
                                                   [delay(0)]])
                acked.extend(job_id for ok, job_id in results if ok)
            else:
                acked.append(client.submit_job([delay(0), jqop()]))
            if count % 5 == 0:
                client.wait_for_job_change_once(acked[-1], ["status"], None, None, 0.2)
    except (errors.ProtocolError, OSError):
        pass
    except Exception as err:  # noqa: BLE001 - reported by the test
        failures.append(err)
    finally:
        client.close()


def test_kill9_under_load_loses_no_acknowledged_job(daemons, config):
    """After SIGKILL under load and a restart, every acknowledged job exists; the jobs that
    were running end as "Unclean master daemon shutdown"; the queued ones then succeed."""
    daemon = daemons(config=config(workers=2))
    acked, stop, failures = [], threading.Event(), []
    threads = [threading.Thread(target=_load, args=(daemon.socket, acked, stop, failures))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.7)
    with daemon.client() as client:
        long_ids = [client.submit_job([delay(60, priority=-20)]) for _ in range(2)]
        for job_id in long_ids:
            wait_for_status(client, job_id, {"running"})
        queued_ids = [client.submit_job([jqop(log_messages=["after"])]) for _ in range(5)]
    time.sleep(0.3)
    daemon.kill()
    stop.set()
    for thread in threads:
        thread.join(20)
    assert not failures, failures
    assert len(acked) > 20
    daemon.start()
    with daemon.client() as client:
        rows = client.query_jobs(long_ids, ["status", "opresult"])
        assert rows == [["error", UNCLEAN], ["error", UNCLEAN]]
        finals = wait_all_final(client, acked + queued_ids)
    assert all(status == "success" for status, _ in finals.values()), [
        (i, f) for i, f in finals.items() if f[0] != "success"][:5]
    assert set(finals) == set(acked) | set(queued_ids)


def test_sigterm_lets_running_job_finish_and_refuses_submissions(daemons, config):
    """On SIGTERM submissions are refused ("shutting down") while the running job finishes
    within the grace, its waiter hears of it, the daemon exits 0, and nothing is lost."""
    daemon = daemons(config=config(shutdown_grace=10))
    with daemon.client() as client:
        earlier = [client.submit_job([delay(0)]) for _ in range(3)]
        running = client.submit_job([delay(1.0)])
        wait_for_status(client, running, {"running"})
    outcome = []
    waiter = threading.Thread(target=lambda: outcome.append(
        wait_for_status(Client(daemon.socket, timeout=30), running, constants.JOBS_FINALIZED)))
    waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    accepted, refusal = [], None
    with RawLuxi(daemon.socket) as raw:
        while refusal is None and time.monotonic() - started < 0.9:
            success, result = raw.request("SubmitJob", [[delay(0)]])
            if success:
                accepted.append(result)
            else:
                refusal = result
        assert refusal is not None and refusal[0] == "JobQueueError"
        assert "shutting down" in refusal[1][0]
        assert raw.ok("QueryJobs", [[running], ["status"]]) == [["running"]]
    assert daemon.wait(15) == 0, daemon.stderr()
    assert time.monotonic() - started >= 0.5
    waiter.join(10)
    assert outcome == ["success"]
    daemon.start()
    with daemon.client() as client:
        finals = wait_all_final(client, earlier + [running] + accepted)
    assert {status for status, _ in finals.values()} == {"success"}


def test_sigterm_with_grace_shorter_than_job_exits_in_time(daemons, config):
    """With a 1 s grace and a 60 s job, SIGTERM exits 0 within about 3 s, and the restarted
    daemon ends the job as "Unclean master daemon shutdown"."""
    daemon = daemons(config=config(shutdown_grace=1))
    with daemon.client() as client:
        job_id = client.submit_job([delay(60)])
        wait_for_status(client, job_id, {"running"})
    started = time.monotonic()
    assert daemon.stop() == 0, daemon.stderr()
    assert time.monotonic() - started < 3.0
    daemon.start()
    with daemon.client() as client:
        assert client.query_jobs([job_id], ["status", "opresult"]) == [["error", UNCLEAN]]


def test_job_changes_racing_the_stop_are_refused_cleanly(daemons, config):
    """ArchiveJob calls hammering the daemon while it stops are each acknowledged (and then
    durable) or refused without effect; the daemon still exits 0."""
    daemon = daemons(config=config(checkpoint_interval=600, shutdown_grace=0.3))
    with daemon.client() as client:
        ids = [job_id for _, job_id in client.submit_many_jobs([[delay(0)]] * 1200)]
        wait_all_final(client, ids)
        for job_id in ids[:600]:
            assert client.archive_job(job_id)
    outcome = {}

    def hammer(part):
        with Client(daemon.socket, timeout=10) as client:
            for job_id in part:
                try:
                    outcome[job_id] = client.archive_job(job_id)
                except errors.JobQueueError as err:
                    outcome[job_id] = errors.error_message(err)
                except (errors.ProtocolError, OSError):
                    return

    rest = ids[600:]
    threads = [threading.Thread(target=hammer, args=(rest[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()
    for thread in threads:
        thread.join(10)
    refused = {i for i, result in outcome.items() if result is not True}
    assert refused and all("shut" in outcome[i] for i in refused), {
        outcome[i] for i in refused}
    acknowledged = set(ids[:600]) | {i for i, result in outcome.items() if result is True}
    daemon.start()
    with daemon.client() as client:
        archived = {job_id for job_id, row in zip(ids, client.query_jobs(ids, ["archived"]))
                    if row == [True]}
    assert archived == acknowledged


def test_second_signal_while_stopping_is_harmless(daemons, config):
    """A second SIGTERM and a SIGINT during the grace period change nothing: exit 0."""
    daemon = daemons(config=config(shutdown_grace=2))
    with daemon.client() as client:
        job_id = client.submit_job([delay(0.8)])
        wait_for_status(client, job_id, {"running"})
    daemon.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    daemon.send_signal(signal.SIGTERM)
    daemon.send_signal(signal.SIGINT)
    assert daemon.wait(15) == 0, daemon.stderr()
    assert "again; already stopping" in daemon.stderr()
    assert "Traceback" not in daemon.stderr()
    daemon.start()
    with daemon.client() as client:
        assert client.query_jobs([job_id], ["status"]) == [["success"]]


def test_sighup_neither_stops_the_daemon_nor_its_jobs(daemons, config):
    """SIGHUP (systemctl reload, a closed terminal) ended jq-masterd at once, without its
    shutdown; now it reads its configuration file again (logged: no option changed) and
    the daemon goes on: its running job succeeds, it takes new ones, SIGTERM still exits
    0."""
    daemon = daemons(config=config())
    with daemon.client() as client:
        job_id = client.submit_job([delay(0.5)])
        wait_for_status(client, job_id, {"running"})
        daemon.send_signal(signal.SIGHUP)
        wait_all_final(client, [job_id], 15)
        assert client.query_jobs([job_id], ["status"]) == [["success"]]
        daemon.send_signal(signal.SIGHUP)
        assert client.submit_job([delay()]) > job_id
        deadline = time.monotonic() + 10
        while daemon.stderr().count("read again, no option changed") < 2:
            assert time.monotonic() < deadline, daemon.stderr()
            time.sleep(0.05)
    assert daemon.alive()
    assert daemon.stop() == 0, daemon.stderr()


def test_sigusr1_writes_every_threads_stack_to_the_log_and_changes_nothing(daemons):
    """Where a daemon that stopped answering waits: SIGUSR1 writes the stack of each of
    its threads (the reactor's, the workers') to its log; it goes on serving."""
    daemon = daemons()
    daemon.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "SIGUSR1: end of the stacks" not in daemon.stderr():
        assert daemon.alive() and time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.05)
    log = daemon.stderr()
    assert "SIGUSR1: the stack of each thread of pid %d" % daemon.proc.pid in log, log
    assert "Thread MainThread (" in log and "twisted/internet" in log, log
    assert log.count("Thread ") > 2, log  # the reactor's and the pools' threads
    with daemon.client() as client:
        assert client.submit_job([delay()]) >= 1
    assert daemon.stop() == 0, daemon.stderr()


def test_second_daemon_on_the_same_state_dir_exits_1(daemons):
    """A second daemon on a locked queue exits 1 naming the holder; the first goes on."""
    first = daemons()
    inode = os.stat(first.socket).st_ino
    second = subprocess.run(masterd_command("--state-dir", first.state_dir),
                            capture_output=True, text=True, timeout=30, check=False)
    assert second.returncode == 1
    assert "locked by PID %d" % first.pid in second.stderr
    assert "Traceback" not in second.stderr
    assert os.stat(first.socket).st_ino == inode
    assert os.readlink(first.socket + ".lock") == str(first.pid)
    assert first.call("QueryConfigValues", [["drain_flag"]]) == [False]


def test_daemon_of_another_state_dir_does_not_take_the_socket_over(daemons, tmp_path):
    """A daemon of another state dir given the same --socket refuses it and exits 1."""
    first = daemons()
    inode = os.stat(first.socket).st_ino
    other = tmp_path / "other"
    second = subprocess.run(masterd_command("--state-dir", str(other), "--socket",
                                            first.socket),
                            capture_output=True, text=True, timeout=30, check=False)
    assert second.returncode == 1, second.stderr
    assert "in use by PID %d" % first.pid in second.stderr
    assert "Traceback" not in second.stderr
    assert os.stat(first.socket).st_ino == inode
    assert first.call("QueryConfigValues", [["drain_flag"]]) == [False]
    with JobQueue(str(other / "queue"), checkpoint_interval=None) as queue:
        assert queue.stats()["jobs"] == 0


def test_stale_socket_and_lock_of_a_reused_pid_are_cleared(daemons, tmp_path):
    """A socket lock naming a live process started after the lock was made (a reused PID)
    is stale: the daemon clears it and the leftover socket, and starts."""
    state = tmp_path / "stale"
    run = state / "run"
    run.mkdir(parents=True)
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(run / "jqueue.sock"))
    leftover.close()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.symlink(str(sleeper.pid), str(run / "jqueue.sock.lock"))
        old = time.time() - 3600
        os.utime(str(run / "jqueue.sock.lock"), (old, old), follow_symlinks=False)
        daemon = daemons(state_dir=state)
        assert os.readlink(daemon.socket + ".lock") == str(daemon.pid)
        assert "stale lock" in daemon.stderr()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_run_directory_cleaned_under_the_daemon_does_not_hang_its_stop(daemons):
    """The run directory removed while jq-masterd serves (an operator, tmpfiles): its stop
    used to fail closing the socket and hang for ever on a LUXI thread left; it stops,
    exit 0, saying the socket was gone."""
    daemon = daemons()
    with daemon.client() as client:  # a LUXI thread exists
        client.query_jobs([], ["id"])
    shutil.rmtree(os.path.dirname(daemon.socket))
    assert daemon.stop(timeout=30) == 0, daemon.stderr()
    log = daemon.stderr()
    assert "socket %s was removed or replaced" % daemon.socket in log, log
    assert "jq-masterd stopped" in log and "Traceback" not in log, log


def test_a_stopping_daemon_leaves_the_socket_another_daemon_bound_since(daemons):
    """Its run directory cleaned and the path bound again by another process (with its
    lock), the daemon's stop removes neither."""
    daemon = daemons()
    run = os.path.dirname(daemon.socket)
    shutil.rmtree(run)
    os.makedirs(run)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        other.bind(daemon.socket)
        os.symlink("1", daemon.socket + ".lock")
        assert daemon.stop(timeout=30) == 0, daemon.stderr()
        assert stat.S_ISSOCK(os.lstat(daemon.socket).st_mode)
        assert os.readlink(daemon.socket + ".lock") == "1"
    finally:
        other.close()


def test_ready_and_stopping_are_sent_to_notify_socket(daemons, tmp_path):
    """With $NOTIFY_SOCKET (abstract), READY=1 comes once the socket answers, STOPPING=1 at
    SIGTERM."""
    name = "jq-e2e-notify-%d-%d" % (os.getpid(), time.monotonic_ns())
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(15)
    try:
        daemon = daemons(start=False, env={"NOTIFY_SOCKET": "@" + name})
        daemon.start(wait=False)
        assert listener.recv(4096) == b"READY=1"
        with RawLuxi(daemon.socket) as raw:
            assert raw.ok("QueryConfigValues", [["drain_flag"]]) == [False]
        daemon.send_signal(signal.SIGTERM)
        assert listener.recv(4096) == b"STOPPING=1"
        assert daemon.wait() == 0
    finally:
        listener.close()


# Startup errors and configuration


@pytest.mark.parametrize("content, code, words", [
    ("[masterd]\nworkerz = 3\n", 1, ["unknown option", "workerz", "jq.toml"]),
    ("[masterd]\nworkers = -1\n", 1, ["workers", "integer >= 0", "jq.toml"]),
    ("[masterd]\nlog_level = 'loud'\n", 1, ["log_level", "one of"]),
    ("[masterd]\nshutdown_grace = 'soon'\n", 1, ["shutdown_grace", "number"]),
    ("[masterd]\nopcode_modules = 'x'\n", 1, ["opcode_modules", "list"]),
    ("[masterdd]\nworkers = 2\n", 1, ["unknown section", "masterdd"]),
    ("[masterd\n", 1, ["invalid TOML", "jq.toml"]),
])
def test_bad_config_files_exit_1_with_a_message(tmp_path, content, code, words):
    """A bad config file stops the daemon with status 1 and one line naming the problem."""
    path = tmp_path / "jq.toml"
    path.write_text(content)
    done = subprocess.run(masterd_command("--state-dir", str(tmp_path / "s"), "--config",
                                          str(path)),
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == code, done.stderr
    assert all(word in done.stderr for word in words), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "s")


@pytest.mark.parametrize("args, code, words", [
    ([], 2, ["--state-dir", "required"]),
    (["--state-dir", "{tmp}/s", "--workers", "-1"], 2, ["--workers", "integer >= 0"]),
    (["--state-dir", "{tmp}/s", "--log-level", "loud"], 2, ["--log-level"]),
    (["--state-dir", "{tmp}/s", "--bogus"], 2, ["--bogus"]),
    (["--state-dir", "{tmp}/s", "--config", "{tmp}/missing.toml"], 1, ["missing.toml"]),
    (["--state-dir", "{tmp}/file/s"], 1, ["cannot start", "cannot create"]),
    (["--state-dir", "{tmp}/s", "--socket", "{tmp}/nodir/x.sock"], 1, ["cannot start",
                                                                        "x.sock"]),
])
def test_usage_and_startup_errors(tmp_path, args, code, words):
    """Usage errors exit 2; unusable files or directories exit 1; never a traceback."""
    (tmp_path / "file").write_text("not a directory")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = subprocess.run(masterd_command(*argv), capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == code, done.stderr
    assert all(word in done.stderr for word in words), done.stderr
    assert "Traceback" not in done.stderr


HELLO_MODULE = '''
"""Opcodes of an application, loaded by jq-masterd from opcode_modules."""

from jqueue import opcodes, ptypes


class OpE2eHello(opcodes.OpCode):
    OP_ID = "OP_E2E_HELLO"
    OP_DSC_FIELD = "name"
    OP_PARAMS = (opcodes.Param("name", ptypes.String),)

    def run(self, ctx):
        ctx.feedback("greeting " + self.name)
        return "hello " + self.name
'''


def test_opcode_modules_are_loaded_from_the_config(daemons, config, tmp_path):
    """An opcode of a module named in opcode_modules can be submitted and runs."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "e2e_hello_ops.py").write_text(HELLO_MODULE)
    env = {"PYTHONPATH": str(modules)}
    daemon = daemons(config=config(opcode_modules=["e2e_hello_ops"]), env=env)
    with daemon.client() as client:
        job_id = client.submit_job([{"OP_ID": "OP_E2E_HELLO", "name": "world"}])
        finals = wait_all_final(client, [job_id])
        assert finals[job_id] == ("success", ["hello world"])
        assert client.query_jobs([job_id], ["summary"]) == [[["E2E_HELLO(world)"]]]
    bad = subprocess.run(masterd_command("--state-dir", str(tmp_path / "s2"), "--config",
                                         config(opcode_modules=["no_such_module_e2e"])),
                         capture_output=True, text=True, timeout=30, check=False,
                         env=dict(os.environ, **env))
    assert bad.returncode == 1 and "cannot load opcode module no_such_module_e2e" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_zero_workers_accept_jobs_and_keep_them_queued(daemons):
    """With --workers 0 the daemon acknowledges submissions and runs nothing."""
    daemon = daemons(args=["--workers", "0"])
    with daemon.client() as client:
        ids = [client.submit_job([delay(0)]) for _ in range(3)]
        assert client.query_jobs(ids, ["status"]) == [["queued"]] * 3


def test_query_opcodes_answers_the_daemons_catalogue(daemons):
    """QueryOpcodes answers the registry's catalogue over the socket (jqctl list-opcodes)."""
    daemon = daemons()
    catalogue = daemon.call("QueryOpcodes", [None])
    assert {"OP_TEST_DELAY", "OP_TEST_JQUEUE", "OP_COMMAND_RUN"} <= {op["id"] for op in catalogue}
    code, out, _ = daemon.jqctl("list-opcodes", "OP_TEST_JQUEUE")
    assert code == 0 and out.startswith("OP_TEST_JQUEUE: Log the given messages")
    code, _, err = daemon.jqctl("submit", "--op", "OP_TEST_DELY", "duration=0")
    assert code == 6 and "did you mean OP_TEST_DELAY?" in err


#: Runs the rest of its arguments with at most 128 open files (soft and hard limits).
_FEW_FILES = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))"
              "; os.execv(sys.argv[1], sys.argv[1:])")


class _FewFilesDaemon(Daemon):
    def command(self):
        return [sys.executable, "-c", _FEW_FILES, *super().command()]


def test_clients_holding_connections_leave_the_daemon_its_file_descriptors(tmp_path, config):
    """With 128 open files, clients holding 150 connections get at most 64 (half the limit:
    the others are closed at once) and the daemon keeps the descriptors it needs: jobs and
    command jobs run, checkpoints rotate the journal every 0.2 s. Before, the connections
    took every descriptor; the next rotation failed (EMFILE) and jq-masterd exited."""
    daemon = _FewFilesDaemon(tmp_path / "state", config=config(workers=2)).start()
    held = []
    try:
        with Client(daemon.socket, timeout=30) as client:
            client.submit_job([delay(0)])  # this connection is open from here on
            for _ in range(150):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(daemon.socket)
                held.append(sock)
            time.sleep(0.5)
            refused = [sock for sock in held if closed_by_peer(sock, 0.2)]
            assert len(held) - len(refused) <= 63 and refused
            ids = [client.submit_job([delay(0)]) for _ in range(10)]
            ids += [client.submit_job([{"OP_ID": constants.OP_COMMAND_RUN,
                                        "cmd": ["echo", "job %d" % i]}]) for i in range(4)]
            time.sleep(1.0)  # checkpoints, each opening a new journal
            finals = wait_all_final(client, ids)
        assert [status for status, _ in finals.values()] == ["success"] * len(ids)
        assert daemon.alive()
        assert "leaves room for 64 LUXI connections" in daemon.stderr()
    finally:
        for sock in held:
            sock.close()
        assert daemon.stop() == 0, daemon.stderr()
