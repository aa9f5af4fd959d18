"""End-to-end: a job's final state POSTed to a real HTTP receiver by a real jq-masterd
(jqctl run --notify, the HTTP API's notify), once, and after a kill -9 of the master
while the receiver was down, once more and no more.
"""

import hashlib
import hmac
import time

import pytest
from daemon_helpers import Receiver, wait_all_final
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
