"""End-to-end: a job's final state POSTed to a real HTTP receiver by a real jq-masterd
(jqctl run --notify, the HTTP API's notify), once, and after a kill -9 of the master
while the receiver was down, once more and no more; an address told through the
operator's notify_command, a group's first N jobs done (--notify-after).
"""

import hashlib
import hmac
import shlex
import signal
import time

import pytest
from daemon_helpers import Receiver, notify_recorder, wait_all_final, wait_told
from daemon_helpers import wait_notified as notified

from jqueue import constants


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


def test_run_notify_posts_the_jobs_end_once(daemons, receiver, tmp_path):
    """jqctl run --notify: one POST with the job's id, status and exit status, signed with
    the daemon's --notify-secret-file; jqctl info says it was delivered; a job whose state
    --notify-on leaves out is not told."""
    secret = tmp_path / "notify.secret"
    secret.write_text("shared secret\n")
    secret.chmod(0o600)
    daemon = daemons(args=["--notify-secret-file", str(secret)])
    code, out, err = daemon.jqctl("run", "--wait", "--notify", receiver.url(), "--", "sh",
                                  "-c", "exit 3")
    assert code == 3, (out, err)
    job_id = int(err.split("job ")[1].split()[0])
    [(path, body, headers)] = receiver.wait(1)
    assert path == "/hook"
    assert (body["job"], body["status"], body["exit_status"], body["reason"]) == (
        job_id, "error", 3, "FAILED")
    assert headers["Idempotency-Key"].startswith("job-%d-" % job_id)
    assert headers["X-Jqueue-Signature"] == "sha256=" + hmac.new(
        b"shared secret", receiver.raw[0], hashlib.sha256).hexdigest()
    with daemon.client() as client:
        assert notified(client, job_id)["delivered"]
    code, out, _ = daemon.jqctl("info", str(job_id))
    assert "Notify: POST %s: delivered (HTTP 204) " % receiver.url() in out, out
    code, out, err = daemon.jqctl("run", "--wait", "--notify", receiver.url("/other"),
                                  "--notify-on", "error", "--", "true")
    assert code == 0, err
    quiet = int(err.split("job ")[1].split()[0])
    with daemon.client() as client:
        wait_all_final(client, [quiet], 10)
    time.sleep(0.5)
    assert [body["job"] for _, body, _ in receiver.received] == [job_id]
    code, out, err = daemon.jqctl("run", "--notify", "ftp://h/x", "true")
    assert code == 6 and "notify's url must be an http:// or https:// URL" in err, err


def test_an_end_the_killed_master_could_not_tell_is_told_after_its_restart(daemons):
    """The receiver is down when the job ends: the first try fails; jq-masterd is killed
    (-9) before the next; with the receiver up, the restarted master tells it, once."""
    daemon = daemons()
    down = Receiver()
    port = down.port
    down.close()  # nothing listens there now: the POST is refused
    with daemon.client() as client:
        job_id = client.submit_job([{"OP_ID": constants.OP_COMMAND_RUN, "cmd": "true"}],
                                   notify="http://127.0.0.1:%d/late" % port)
        wait_all_final(client, [job_id], 20)
    deadline = time.monotonic() + 20
    while "notification to http://127.0.0.1:%d/late not delivered" % port not in \
            daemon.stderr():
        assert time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.05)
    daemon.kill()
    up = Receiver(port)
    try:
        daemon.start()
        [(path, body, _)] = up.wait(1)
        assert (path, body["job"], body["status"]) == ("/late", job_id, "success")
        with daemon.client() as client:
            assert notified(client, job_id)["delivered"]
        daemon.stop()
        daemon.start()
        time.sleep(0.5)
        assert len(up.received) == 1
    finally:
        up.close()


def test_an_address_and_a_groups_first_jobs_go_through_the_notify_command(daemons,
                                                                         tmp_path):
    """Without a notify_command, --notify-to is refused; once SIGHUP gave one, jqctl run
    --notify-to has it run with the address and the job; a group with --notify-after 2
    --notify-on none is told once, when its second job ended, and never of its end; an
    after on a job that is no group is the caller's error."""
    path = tmp_path / "masterd.toml"
    path.write_text("[masterd]\n")
    daemon = daemons(args=["--config", str(path)])
    code, out, err = daemon.jqctl("run", "--notify-to", "ops@example.com", "--", "true")
    assert code == 6 and "this master has no notify_command" in err, err
    command = " ".join(shlex.quote(word) for word in notify_recorder(tmp_path))
    path.write_text("[masterd]\nnotify_command = %s\n" % _toml(command))
    daemon.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "SIGHUP: notify_command changed" not in daemon.stderr():
        assert time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.05)
    code, out, err = daemon.jqctl("run", "--wait", "--notify-to", "ops@example.com", "--",
                                  "sh", "-c", "exit 3")
    assert code == 3, (out, err)
    job_id = int(err.split("job ")[1].split()[0])
    [call] = wait_told(tmp_path)
    assert call["argv"] == ["--from", "jqueue@example.com", "ops@example.com"]
    assert [call["input"][key] for key in ("event", "job", "status", "exit_status")] == [
        "end", job_id, "error", 3]
    assert call["env"]["JQ_JOB_ID"] == str(job_id)
    with daemon.client() as client:
        assert notified(client, job_id)["delivered"]
    code, out, _ = daemon.jqctl("info", str(job_id))
    assert "Notify: to ops@example.com: delivered " in out, out

    code, out, err = daemon.jqctl("group", "--notify-to", "render@example.com",
                                  "--notify-after", "2", "--notify-on", "none", "render")
    assert code == 0, err
    group_id = int(out)
    jobs = []
    for _ in range(3):
        code, out, err = daemon.jqctl("run", "--parent", "render", "--", "true")
        assert code == 0, err
        jobs.append(int(out))
    with daemon.client() as client:
        wait_all_final(client, jobs + [group_id], 30)
        outcome = notified(client, group_id, field="notified_after")
        assert outcome["delivered"] and outcome["to"] == "render@example.com"
    first, after = wait_told(tmp_path, 2)
    assert [after["input"][key] for key in ("event", "job", "after", "errors")] == [
        "after", group_id, 2, 0]
    assert after["input"]["finished"] >= 2
    assert after["env"]["JQ_NOTIFY_KEY"] == "job-%d-after-2" % group_id
    code, out, _ = daemon.jqctl("info", str(group_id))
    assert "Notify: to render@example.com: not of its end" in out, out
    assert "Notify after: to render@example.com once 2 of its jobs finished: delivered " \
        in out, out
    time.sleep(0.5)
    assert len(wait_told(tmp_path, 2)) == 2  # its end is not told: on none
    code, out, err = daemon.jqctl("run", "--notify-to", "a@example.com",
                                  "--notify-after", "2", "--", "true")
    assert code == 6 and "only a group" in err, err
    code, out, err = daemon.jqctl("run", "--notify-after", "2", "--", "true")
    assert code == 2 and "--notify-after goes with --notify or --notify-to" in err, err


def _toml(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')
