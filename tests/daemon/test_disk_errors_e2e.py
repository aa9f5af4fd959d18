"""jq-masterd on a failing disk: refuse changes and recover, or stop cleanly.

A real daemon on a small tmpfs that fills up refuses changes with the cause and the
directory, goes on answering queries and waiters, accepts changes again once space is
back (no restart), and after a restart holds exactly the jobs it acknowledged. A daemon
whose journal sync fails (a failpoint armed through JQ_FAILPOINTS) exits with status 1
and its restart replays the journal. A command job whose log's disk fills keeps running
until its output can be logged again, and then ends once with all of it.
"""

import errno
import os
import subprocess
import time

import pytest
from daemon_helpers import RawLuxi, delay, wait_all_final, write_config

from jqueue import constants
from jqueue.store import journal


def _small_fs(mount):
    """A 4 MiB tmpfs mounted at mount (this needs root, as the test machines run)."""
    mount.mkdir(parents=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0750", "tmpfs",
                             str(mount)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail("cannot mount a 4 MiB tmpfs for the full-disk test (it needs root): %s"
                    % (result.stderr.strip() or result.returncode))
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs as tmp_path/state/queue, the daemon's queue directory; the daemon's
    log and socket stay outside."""
    yield from _small_fs(tmp_path / "state" / "queue")


@pytest.fixture
def small_logs_fs(tmp_path):
    """A 4 MiB tmpfs as tmp_path/state/logs, where the daemon keeps command jobs' logs."""
    yield from _small_fs(tmp_path / "state" / "logs")


def _fill(directory):
    """Fill the filesystem of directory with one file; return its path."""
    path = os.path.join(directory, "filler")
    chunk = b"\0" * 65536
    with open(path, "wb") as stream:
        try:
            while True:
                stream.write(chunk)
                stream.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
    return path


#: A comment that makes each job's record 1/8 of what the journal writes ahead of its
#: records (PREALLOCATE): a full disk refuses changes after at most 8 more.
_BULK = "x" * (journal.PREALLOCATE // 8)


def _submit(raw):
    return raw.request("SubmitJob", [[delay(comment=_BULK)]])


def test_full_disk_refuses_changes_serves_reads_and_recovers(daemons, small_fs, tmp_path):
    """ENOSPC: changes refused naming cause and directory, reads and waiters served, queue
    info shows it; space back: accepted again without a restart; refused jobs never
    appear, acknowledged ones all do."""
    config = write_config(tmp_path / "jq.toml", checkpoint_interval=3600, workers=2)
    daemon = daemons(tmp_path / "state", config=config)
    acknowledged = []
    with RawLuxi(daemon.socket) as raw:
        for _ in range(3):
            success, job_id = _submit(raw)
            assert success, job_id
            acknowledged.append(job_id)
        with daemon.client() as client:
            for job_id in acknowledged:
                assert client.wait_for_job_change_once(job_id, ["status"], None, None, 10)
        filler = _fill(str(small_fs))
        # A few may still fit in what the journal wrote ahead; then they are refused.
        answers = [_submit(raw) for _ in range(30)]
        acknowledged += [result for success, result in answers if success]
        refused = [result for success, result in answers if not success]
        assert len(refused) > 10, answers
        for error in refused:
            assert error[0] == "JobQueueError", error
            assert "No space left on device" in error[1][0] and daemon.queue_dir in error[1][0]
        rows = raw.ok("QueryJobs", [acknowledged, ["id"]])
        assert rows == [[job_id] for job_id in acknowledged]
        assert raw.ok("WaitForJobChange", [acknowledged[0], ["status"], None, None, 5])
        success, error = raw.request("CancelJob", [acknowledged[0]])
        assert not success and "No space left" in error[1][0]
        code, out, _ = daemon.jqctl("queue", "info")
        assert code == 0 and "Changes: changes refused" in out and "No space" in out, out
        os.unlink(filler)
        deadline = time.monotonic() + 15
        while True:
            success, result = _submit(raw)
            if success:
                acknowledged.append(result)
                break
            assert time.monotonic() < deadline, result
            time.sleep(0.2)
    code, out, _ = daemon.jqctl("queue", "info")
    assert "Changes: accepted" in out, out
    assert daemon.stop() == 0, daemon.stderr()
    daemon.start()
    with daemon.client() as client:
        rows = client.query_jobs([], ["id"])
    assert sorted(row[0] for row in rows) == sorted(acknowledged)
    assert daemon.stop() == 0, daemon.stderr()  # before the tmpfs goes


@pytest.fixture
def small_state_fs(tmp_path):
    """A 4 MiB tmpfs as the daemon's whole state directory (queue, events, logs)."""
    yield from _small_fs(tmp_path / "state")


def test_events_a_full_disk_refuses_are_kept_and_written_once_there_is_room(
        daemons, small_state_fs, tmp_path):
    """The state directory full while the journal still has room it wrote ahead: the
    events of the jobs acknowledged then cannot be appended to events.jsonl and
    actions.log; they are kept, written once there is room, and after a restart every
    acknowledged job has its NEW event and its action log line (no traceback)."""
    config = write_config(tmp_path / "jq.toml", checkpoint_interval=3600, workers=0)
    daemon = daemons(small_state_fs, socket_path=str(tmp_path / "jq.sock"), config=config)
    acknowledged = []
    with RawLuxi(daemon.socket) as raw:
        def submit():  # small: its record goes into the zeros the journal wrote ahead
            return raw.request("SubmitJob", [[delay(comment="x" * 1000)]])
        assert submit()[0]
        filler = _fill(str(small_state_fs))
        for _ in range(200):
            success, result = submit()
            if success:
                acknowledged.append(result)
        os.unlink(filler)
        deadline = time.monotonic() + 15
        while not submit()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert acknowledged, "nothing fitted in what the journal wrote ahead"
    assert daemon.stop() == 0, daemon.stderr()
    assert "Traceback" not in daemon.stderr(), daemon.stderr()
    daemon.start()
    with daemon.client() as client:
        ids = [row[0] for row in client.query_jobs([], ["id"])]
        new = [e["job"] for e in client.wait_for_events(0, {"status": ["NEW"]}, 0)["events"]]
    assert sorted(new) == sorted(ids) and set(acknowledged) <= set(ids)
    actions = (small_state_fs / "actions.log").read_text().splitlines()
    assert sorted(int(line.split()[3]) for line in actions if " NEW " in line) == sorted(ids)
    assert daemon.stop() == 0, daemon.stderr()  # before the tmpfs goes


def test_failed_journal_sync_exits_1_and_the_restart_replays(daemons, tmp_path):
    """A failed fdatasync is not retried: the daemon exits 1 at once; restarted, it holds
    every acknowledged job (replayed from the journal)."""
    config = write_config(tmp_path / "jq.toml", checkpoint_interval=3600, workers=0)
    daemon = daemons(tmp_path / "state", config=config,
                     env={"JQ_FAILPOINTS": "journal.sync:EIO:4"})
    acknowledged = []
    with RawLuxi(daemon.socket) as raw:
        for _ in range(3):
            acknowledged.append(raw.ok("SubmitJob", [[delay()]]))
        try:
            success, _ = _submit(raw)
            assert not success
        except (ConnectionError, OSError):
            pass  # the daemon exits without answering: clients resend
    assert daemon.wait() == 1
    assert "a sync of the queue failed" in daemon.stderr()
    daemon.env = {}
    daemon.start()
    with daemon.client() as client:
        rows = client.query_jobs(acknowledged, ["id", "status"])
    assert rows == [[job_id, constants.JOB_STATUS_QUEUED] for job_id in acknowledged]


def test_a_command_running_while_its_logs_disk_fills_loses_no_output_and_ends_once(
        daemons, small_logs_fs, tmp_path):
    """The logs' disk fills while a command job prints: its output and its end wait (the
    job stays running, nothing is lost or written twice); once space is back its log
    holds every line once, its exit status is recorded once, and a restart agrees."""
    config = write_config(tmp_path / "jq.toml", checkpoint_interval=3600, workers=2)
    daemon = daemons(tmp_path / "state", config=config)
    go = tmp_path / "go"
    # 500 lines of 1 KB, then (once told to go) 2,500 more, then the end.
    script = ("i=0; while [ $i -lt 3000 ]; do echo n$i $PAD; i=$((i+1)); "
              "[ $i -eq 500 ] && while [ ! -e %s ]; do sleep 0.05; done; done; exit 3" % go)
    pad = "x" * 1000
    with daemon.client() as client:
        job_id = client.submit_job([{"OP_ID": constants.OP_COMMAND_RUN, "cmd": script,
                                     "env": {"PAD": pad}}])
        deadline = time.monotonic() + 20
        while "n499 " not in client.read_job_log(job_id, 0, 1 << 22, 1)["data"]:
            assert time.monotonic() < deadline, "the first lines never came"
        filler = _fill(str(small_logs_fs))
        go.touch()  # the other lines and the end, on a full disk
        time.sleep(3)
        status = client.query_jobs([job_id], ["status"])[0][0]
        assert status == "running", status
        assert "n2999" not in client.read_job_log(job_id, 0, 1 << 22, 0)["data"]
        assert "cannot log the output of job %d now" % job_id in daemon.stderr()
        assert "No space left on device" in daemon.stderr()
        os.unlink(filler)
        wait_all_final(client, [job_id], 30)
        ended = client.query_jobs([job_id], ["status", "exit_status", "reason"])[0]
        log = "".join(client.follow_job_log(job_id))
    assert ended == ["error", 3, "FAILED"], ended
    assert [line for line in log.splitlines() if line.startswith("n")] == [
        "n%d %s" % (i, pad) for i in range(3000)]
    assert log.count("* EXIT : 3") == 1, log
    assert daemon.stop() == 0, daemon.stderr()
    daemon.start()
    with daemon.client() as client:
        assert client.query_jobs([job_id], ["status", "exit_status", "reason"])[0] == ended
        assert "".join(client.follow_job_log(job_id)) == log
    assert daemon.stop() == 0, daemon.stderr()  # before the tmpfs goes


@pytest.fixture
def small_attempts_fs(tmp_path):
    """A 4 MiB tmpfs as tmp_path/state/attempts, where the daemon keeps its running
    attempts and their output (a command that fills the disk fills this one)."""
    yield from _small_fs(tmp_path / "state" / "attempts")


def test_a_command_that_fills_the_attempts_disk_has_its_true_end_recorded(
        daemons, small_attempts_fs, tmp_path):
    """A command fills the disk of the attempts and exits 3: its result had room kept
    from its start, so the job ends FAILED with status 3, run once (no NODE_LOST, no
    retry of an attempt that ran). A job submitted while the disk is full waits (NOXFER,
    uncounted) and runs, once, when there is room again."""
    daemon = daemons(tmp_path / "state")
    fill = small_attempts_fs / "fill"
    command = {"OP_ID": constants.OP_COMMAND_RUN, "max_attempts": 2,
               "cmd": "echo ran; dd if=/dev/zero of=%s bs=64k 2>/dev/null; exit 3" % fill}
    with daemon.client() as client:
        filler = client.submit_job([command])
        wait_all_final(client, [filler], 30)
        ended = client.query_jobs([filler], ["status", "exit_status", "reason", "attempt"])
        assert ended == [["error", 3, "FAILED", 2]]  # both attempts ran: each filled it
        log = "".join(client.follow_job_log(filler))
        assert log.splitlines().count("ran") == 2 and "NODE_LOST" not in log, log
        _fill(str(small_attempts_fs))  # what the spares freed
        waiting = client.submit_job([{"OP_ID": constants.OP_COMMAND_RUN, "cmd": "echo late"}])
        deadline = time.monotonic() + 20
        while client.query_jobs([waiting], ["reason"])[0][0] != "NOXFER":
            assert time.monotonic() < deadline, "the job never waited"
            time.sleep(0.1)
        assert client.query_jobs([waiting], ["status", "attempt"])[0] == ["waiting", 0]
        assert "No space left on device" in client.read_job_log(waiting, 0, 1 << 20, 0)["data"]
        os.unlink(fill)
        os.unlink(os.path.join(small_attempts_fs, "filler"))
        wait_all_final(client, [waiting], 30)
        assert client.query_jobs([waiting], ["status", "attempt"])[0] == ["success", 1]
        assert "".join(client.follow_job_log(waiting)).splitlines().count("late") == 1
    assert daemon.stop() == 0, daemon.stderr()  # before the tmpfs goes
