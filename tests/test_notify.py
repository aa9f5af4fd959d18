"""Tests of jqueue.notify with a real queue: a job's final state POSTed once to its webhook,
tried again after failures, recorded, and never sent twice across a restart.

The POSTs go to a fake poster (the end-to-end test posts to a real HTTP server).
"""

import os
import threading
import time

import pytest
from conftest import jqop, run_jobs
from daemon_helpers import notify_recorder as recorder
from daemon_helpers import wait_notified as notified
from daemon_helpers import wait_told as told

from jqueue import errors, joboptions, notify, serializer


class Poster:
    """Answers each POST with the next of answers (an HTTP status or an exception), then
    200; keeps (url, body, headers) of each."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.posts = []
        self.bodies = []  # as sent (bytes)
        self.cond = threading.Condition()

    def __call__(self, url, body, headers):
        with self.cond:
            self.posts.append((url, serializer.loads(body.decode()), headers))
            self.bodies.append(body)
            self.cond.notify_all()
            answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer

    def wait(self, count, timeout=10):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.posts) >= count, timeout), self.posts
        return self.posts


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(notify, "DELAY", 0.01)


def test_check_takes_a_url_or_an_object_and_refuses_the_rest():
    assert joboptions.check_notify("http://h/x") == {"url": "http://h/x",
                                          "on": ["success", "error", "canceled"]}
    assert joboptions.check_notify({"url": "https://h", "on": "canceled,error"}) == {
        "url": "https://h", "on": ["error", "canceled"]}
    for bad, said in [("ftp://h/x", "http:// or https://"), ("http:///x", "with a host"),
                      ("http://h/a b", "http:// or https://"), (7, "an http(s) URL"),
                      ({"url": "http://h", "on": ["done"]}, "final states"),
                      ({"url": "http://h", "when": "x"}, "url or to"),
                      ("http://h/" + "x" * 2048, "at most 2048")]:
        with pytest.raises(ValueError, match=said.replace("(", r"\(").replace(")", r"\)")):
            joboptions.check_notify(bad)


def test_a_final_state_is_posted_once_with_the_job_and_recorded(open_queue):
    poster = Poster()
    queue = open_queue(notify_post=poster)
    job_id = queue.submit_job([jqop(result=1)], notify="http://hooks.example/jq")
    run_jobs(queue)
    outcome = notified(queue, job_id)
    [(url, body, headers)] = poster.posts
    assert url == "http://hooks.example/jq"
    assert (body["job"], body["status"], body["summary"]) == (job_id, "success",
                                                            ["TEST_JQUEUE"])
    assert body["ended"] >= body["started"] >= body["received"] > 0
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"].startswith("job-%d-" % job_id)
    assert (outcome["delivered"], outcome["status"], outcome["tries"]) == (True, 200, 1)
    queue.wait_durable(10)  # the outcome is seen at once, its event once durable
    events = queue.read_events(0)["events"]
    assert [e["message"] for e in events if e["status"] == "NOTIFIED"] == [
        "POST http://hooks.example/jq: HTTP 200 after 1 try"]
    time.sleep(0.1)
    assert len(poster.posts) == 1


def test_only_the_final_states_on_names_are_told(open_queue):
    poster = Poster()
    queue = open_queue(notify_post=poster)
    ok = queue.submit_job([jqop()], notify={"url": "http://h/", "on": ["error"]})
    bad = queue.submit_job([jqop(fail=True)], notify={"url": "http://h/", "on": ["error"]})
    run_jobs(queue)
    assert notified(queue, bad)["delivered"]
    assert [body["job"] for _, body, _ in poster.posts] == [bad]
    assert queue.query_jobs([ok], ["notified"])[0] == [None]


def test_failures_are_tried_again_and_a_refusal_ends_the_tries(open_queue):
    """No connection, then a 503, then 200: three tries, one key; a 404 is not tried
    again: NOTIFY_FAILED, saying the answer."""
    poster = Poster(OSError("connection refused"), 503, 200, 404)
    queue = open_queue(notify_post=poster)
    first = queue.submit_job([jqop()], notify="http://h/a")
    run_jobs(queue)
    assert notified(queue, first)["tries"] == 3
    assert len({headers["Idempotency-Key"] for _, _, headers in poster.posts}) == 1
    second = queue.submit_job([jqop()], notify="http://h/b")
    run_jobs(queue)
    outcome = notified(queue, second)
    assert (outcome["delivered"], outcome["status"], outcome["error"], outcome["tries"]) == (
        False, 404, "HTTP 404", 1)
    queue.wait_durable(10)  # the outcome is seen at once, its event once durable
    events = queue.read_events(0)["events"]
    assert [e["message"] for e in events if e["status"] == "NOTIFY_FAILED"] == [
        "POST http://h/b: HTTP 404 after 1 try"]


def test_after_a_restart_what_was_not_told_is_told_and_what_was_is_not(open_queue,
                                                                       monkeypatch):
    """A master that stopped while its receiver was down tells it at the next start, once;
    a notification recorded is never sent again."""
    monkeypatch.setattr(notify, "DELAY", 60.0)
    down = Poster(OSError("no route to host"))
    queue = open_queue(notify_post=down)
    job_id = queue.submit_job([jqop()], notify="http://h/")
    run_jobs(queue)
    down.wait(1)
    queue.shutdown(timeout=5)
    up = Poster()
    queue = open_queue(notify_post=up)
    assert notified(queue, job_id)["delivered"]
    assert [key for _, _, key in [(u, b, h["Idempotency-Key"]) for u, b, h in up.posts]] == [
        down.posts[0][2]["Idempotency-Key"]]
    queue.shutdown(timeout=5)
    again = Poster()
    queue = open_queue(notify_post=again)
    time.sleep(0.2)
    assert again.posts == [] and queue.query_jobs([job_id], ["notified"])[0][0]["delivered"]


def test_a_reset_job_is_told_of_its_next_end_too(open_queue, clock):
    """Its second end has a key of its own (the job's id and end time)."""
    poster = Poster()
    queue = open_queue(notify_post=poster)
    job_id = queue.submit_job([jqop(fail=True)], notify="http://h/")
    run_jobs(queue)
    notified(queue, job_id)
    clock.now += 60
    assert queue.reset_job(job_id)[0]
    assert queue.query_jobs([job_id], ["notified"])[0] == [None]
    run_jobs(queue)
    notified(queue, job_id)
    keys = [headers["Idempotency-Key"] for _, _, headers in poster.posts]
    assert len(keys) == 2 and keys[0] != keys[1]


def test_a_malformed_notify_is_the_callers_error_and_leaves_no_job(open_queue):
    queue = open_queue(notify_post=Poster())
    before = queue.query_jobs([], ["id"])
    with pytest.raises(errors.OpPrereqError, match="notify's url must be an http"):
        queue.submit_job([jqop()], notify="file:///etc/passwd")
    assert queue.query_jobs([], ["id"]) == before


def test_notify_prefixes_restrict_where_the_master_may_post(open_queue):
    """A queue (jq-masterd's --notify-prefixes) takes only URLs beginning with one of its
    prefixes; another refuses the whole request before any job is made."""
    queue = open_queue(notify_post=Poster(), notify_prefixes=["https://hooks.example/"])
    queue.submit_job([jqop()], notify="https://hooks.example/ci")
    before = queue.query_jobs([], ["id"])
    with pytest.raises(errors.OpPrereqError, match=r"job 1: notify URL "
                       r"http://169\.254\.169\.254/ is not allowed here: it must begin with "
                       r"https://hooks\.example/"):
        queue.submit_many_jobs([[jqop()], [jqop()]], options=[
            {"notify": "https://hooks.example/a"}, {"notify": "http://169.254.169.254/"}])
    assert queue.query_jobs([], ["id"]) == before


def test_a_secret_signs_each_post_and_none_leaves_it_unsigned(open_queue, tmp_path):
    """With notify_secret, X-Jqueue-Signature is sha256= and the HMAC-SHA256 of the very
    bytes POSTed (a receiver checks it with the shared secret); without one, no header.
    read_secret takes a file's text without its newline and refuses an empty file."""
    import hashlib
    import hmac
    (tmp_path / "secret").write_bytes(b"s3cret\n")
    secret = notify.read_secret(str(tmp_path / "secret"))
    assert secret == b"s3cret"
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(errors.ConfigurationError, match="is empty"):
        notify.read_secret(str(tmp_path / "empty"))
    poster = Poster()
    queue = open_queue(notify_post=poster, notify_secret=secret)
    queue.submit_job([jqop()], notify="http://h/")
    run_jobs(queue)
    [(_, _, headers)] = poster.wait(1)
    expected = "sha256=" + hmac.new(b"s3cret", poster.bodies[0], hashlib.sha256).hexdigest()
    assert headers["X-Jqueue-Signature"] == expected
    queue.shutdown(timeout=5)
    plain = Poster()
    queue = open_queue(tmp_path / "other", notify_post=plain)
    queue.submit_job([jqop()], notify="http://h/")
    run_jobs(queue)
    [(_, _, headers)] = plain.wait(1)
    assert "X-Jqueue-Signature" not in headers


def test_an_address_or_an_after_is_checked_as_a_url_is():
    assert joboptions.check_notify({"to": "ops@example.com", "after": 3, "on": []}) == {
        "to": "ops@example.com", "on": [], "after": 3}
    assert joboptions.check_notify({"to": "#render", "after": 1}) == {
        "to": "#render", "on": ["success", "error", "canceled"], "after": 1}
    for bad, said in [({"to": "-oQ/tmp/x"}, "not beginning with -"),
                      ({"to": "a b@x"}, "no spaces"), ({"to": "a\x07"}, "printable"),
                      ({"to": "x" * 255}, "at most 254"), ({"to": 7}, "an address"),
                      ({"url": "http://h", "to": "a@x"}, "one of them"),
                      ({"on": ["error"]}, "one of them"),
                      ({"to": "a@x", "after": 0}, "1 or more"),
                      ({"to": "a@x", "after": True}, "1 or more"),
                      ({"to": "a@x", "after": "3"}, "1 or more"),
                      ({"to": "a@x", "on": []}, "none only with after")]:
        with pytest.raises(ValueError, match=said):
            joboptions.check_notify(bad)


def test_an_address_is_told_through_the_notify_command(open_queue, tmp_path):
    """The operator's command gets the address as its last argument, the payload on its
    input and JQ_NOTIFY_* in its environment; exit 0 delivers."""
    queue = open_queue(notify_command=recorder(tmp_path))
    job_id = queue.submit_job([jqop(fail=True)], notify={"to": "ops@example.com"})
    run_jobs(queue)
    outcome = notified(queue, job_id)
    [call] = told(tmp_path)
    assert call["argv"] == ["--from", "jqueue@example.com", "ops@example.com"]
    assert (call["input"]["event"], call["input"]["job"], call["input"]["status"]) == (
        "end", job_id, "error")
    assert call["env"]["JQ_NOTIFY_TO"] == "ops@example.com"
    assert (call["env"]["JQ_JOB_ID"], call["env"]["JQ_JOB_STATUS"],
            call["env"]["JQ_NOTIFY_EVENT"]) == (str(job_id), "error", "end")
    assert call["env"]["JQ_NOTIFY_KEY"].startswith("job-%d-" % job_id)
    assert {key: outcome[key] for key in ("to", "delivered", "status", "error", "tries")} == {
        "to": "ops@example.com", "delivered": True, "status": 0, "error": None, "tries": 1}
    queue.wait_durable(10)  # the outcome is seen at once, its event once durable
    events = queue.read_events(0)["events"]
    assert [e["message"] for e in events if e["status"] == "NOTIFIED"] == [
        "command to ops@example.com: delivered after 1 try"]


def test_the_commands_exit_status_says_try_again_or_give_up(open_queue, tmp_path,
                                                           monkeypatch):
    """75 (EX_TEMPFAIL) is tried again; another status gives up, keeping what the command
    said; a command that does not exit in time is killed with its whole group."""
    (tmp_path / "answers").write_text("75\n0\n3\n")
    command = recorder(tmp_path, 'code=$(head -n1 %s); sed -i 1d %s; echo "no such user" '
                       '>&2; exit "$code"' % ((tmp_path / "answers",) * 2))
    queue = open_queue(notify_command=command)
    first = queue.submit_job([jqop()], notify={"to": "a@x"})
    run_jobs(queue)
    outcome = notified(queue, first)
    assert (outcome["delivered"], outcome["tries"]) == (True, 2)
    assert len({call["env"]["JQ_NOTIFY_KEY"] for call in told(tmp_path, 2)}) == 1
    second = queue.submit_job([jqop()], notify={"to": "b@x"})
    run_jobs(queue)
    outcome = notified(queue, second)
    assert (outcome["delivered"], outcome["status"], outcome["error"], outcome["tries"]) == (
        False, 3, "exit status 3: no such user", 1)
    monkeypatch.setattr(notify, "TIMEOUT", 0.5)
    monkeypatch.setattr(notify, "TRIES", 1)
    pids = tmp_path / "pids"
    queue.set_notify_command(["/bin/sh", "-c", "sleep 60 & echo $! > %s; wait" % pids])
    third = queue.submit_job([jqop()], notify={"to": "c@x"})
    run_jobs(queue)
    outcome = notified(queue, third)
    assert not outcome["delivered"] and outcome["error"] == (
        "/bin/sh did not exit within 0.5s: killed")
    grandchild = int(pids.read_text())
    deadline = time.monotonic() + 5
    while os.path.exists("/proc/%d" % grandchild) and _state(grandchild) != "Z":
        assert time.monotonic() < deadline, "the command's child outlived it"
        time.sleep(0.02)


def _state(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_an_address_needs_a_notify_command_and_an_after_a_group(open_queue, tmp_path):
    """Refused at submit, leaving no job: an address where no command tells it, an after
    on a job that is no group."""
    queue = open_queue()
    with pytest.raises(errors.OpPrereqError, match="no notify_command"):
        queue.submit_job([jqop()], notify={"to": "ops@x"})
    queue.set_notify_command(recorder(tmp_path))
    with pytest.raises(errors.OpPrereqError, match="only a group"):
        queue.submit_job([jqop()], notify={"to": "ops@x", "after": 2})
    assert queue.query_jobs(None, ["id"]) == []
    assert queue.submit_job([{"OP_ID": "OP_GROUP", "title": "g"}],
                            notify={"to": "ops@x", "after": 2})


def test_a_group_is_told_once_n_of_its_jobs_finished(open_queue, clock):
    """after: N tells the group's receiver once, when the Nth job of its tree ended
    (whichever way); its ends are told as any job's (a group that gets a job after it
    ended ends again); a restart tells nothing again."""
    poster = Poster()
    queue = open_queue(notify_post=poster)
    render = queue.submit_job([{"OP_ID": "OP_GROUP", "title": "render"}],
                              notify={"url": "http://h/", "after": 3, "on": ["error"]})
    queue.submit_job([jqop(fail=True)], parent=render)
    queue.submit_job([jqop()], parent=render)
    run_jobs(queue)
    notified(queue, render)
    assert [body["event"] for _, body, _ in poster.posts] == ["end"]  # two of three
    clock.advance(1)
    shot = queue.submit_job([{"OP_ID": "OP_GROUP", "title": "shot"}], parent=render)
    queue.submit_job([jqop()], parent=shot)
    run_jobs(queue)
    outcome = notified(queue, render, field="notified_after")
    assert outcome["delivered"] and outcome["url"] == "http://h/"
    assert notified(queue, render)["delivered"]  # it ended in error again: told too
    after, first_end, end = sorted(poster.wait(3), key=lambda post: (post[1]["event"],
                                                                     post[1]["ended"]))
    assert [after[1][key] for key in ("event", "job", "after", "finished", "errors")] == [
        "after", render, 3, 3, 1]
    assert after[2]["Idempotency-Key"] == "job-%d-after-3" % render
    assert (end[1]["event"], end[1]["status"]) == ("end", "error")
    assert end[2]["Idempotency-Key"] != first_end[2]["Idempotency-Key"]
    assert "after" not in end[1] and "finished" not in end[1]
    queue.wait_durable(10)  # the outcome is seen at once, its event once durable
    events = queue.read_events(0)["events"]
    assert sorted(e["message"] for e in events if e["status"] == "NOTIFIED") == [
        "POST http://h/ (3 of its jobs finished): HTTP 200 after 1 try"] + [
        "POST http://h/: HTTP 200 after 1 try"] * 2
    queue.shutdown(timeout=5)
    again = Poster()
    queue = open_queue(notify_post=again)
    time.sleep(0.2)
    assert again.posts == []


def test_an_after_not_told_before_a_restart_is_told_at_the_next_start(open_queue,
                                                                      monkeypatch):
    monkeypatch.setattr(notify, "DELAY", 60.0)
    down = Poster(OSError("no route to host"))
    queue = open_queue(notify_post=down)
    group_id = queue.submit_job([{"OP_ID": "OP_GROUP", "title": "g"}],
                                notify={"url": "http://h/", "after": 1, "on": []})
    queue.submit_job([jqop()], parent=group_id)
    queue.submit_job([jqop()], parent=group_id)
    run_jobs(queue)
    down.wait(1)
    queue.shutdown(timeout=5)
    up = Poster()
    queue = open_queue(notify_post=up)
    assert notified(queue, group_id, field="notified_after")["delivered"]
    assert [body["event"] for _, body, _ in up.posts] == ["after"]
    assert queue.query_jobs([group_id], ["notified"]) == [[None]]  # on: none of its ends


def test_archiving_by_age_waits_until_the_end_was_told_or_given_up(open_queue, clock,
                                                                   monkeypatch):
    """AutoArchiveJobs (and retention, which archives the same way) leaves a job, or a
    group with a job of its tree, whose notification is still being tried; once its
    outcome is recorded, the job goes."""
    monkeypatch.setattr(notify, "DELAY", 60.0)
    down = Poster(OSError("connection refused"), OSError("connection refused"))
    queue = open_queue(notify_post=down)
    lonely = queue.submit_job([jqop()], notify="http://h/")
    group = queue.submit_job([{"OP_ID": "OP_GROUP", "title": "g"}])
    inner = queue.submit_job([jqop()], parent=group, notify="http://h/")
    plain = queue.submit_job([jqop()])
    run_jobs(queue)
    down.wait(2)
    clock.advance(3600)
    assert queue.auto_archive_jobs(60, 10) == (1, 0)  # only the job without a notify
    assert queue.query_jobs([plain, lonely, group, inner], ["archived"]) == [
        [True], [False], [False], [False]]
    for job_id in (lonely, inner):
        queue.record_notified(job_id, notify.END, queue.notification(job_id)[2],
                              {"url": "http://h/", "delivered": False, "status": None,
                               "error": "connection refused", "tries": 10, "at": 0})
    queue.wait_durable(10)
    assert queue.auto_archive_jobs(60, 10) == (3, 0)
