"""End to end: Coalition's clients against a real jq-masterd. A faithful Python 3 port of
Coalition v3's control.py (tests/http/coalition_control.py) adds, lists and removes jobs;
curl adds one by GET; a POST form gives every attribute of Coalition's documentation."""

import ast
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse

import pytest
from daemon_helpers import daemon_factory
from http_helpers import start_http_daemon

from jqueue.http import coalition

CONTROL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "coalition_control.py")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    factory = daemon_factory(tmp_path_factory.mktemp("coalition"))
    make = next(factory)
    daemon, client = start_http_daemon(make, "--slots", "2", "--tags", "LINUX,24GB")
    yield daemon, client
    client.close()
    next(factory, None)


def control(client, action, *options):
    """Run the control.py port as its usage says, OPTIONS SERVER_URL ACTION: (exit status,
    stdout)."""
    proc = subprocess.run([sys.executable, CONTROL, *options,
                           "http://127.0.0.1:%d/" % client.port, action], capture_output=True,
                          text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_control_py_adds_lists_and_removes_jobs(served):
    """control.py add prints the bare id (int() reads it), list eval()s getjobs and prints
    the breadcrumb and rows, remove clears the job."""
    _, client = served
    code, out = control(client, "add", "-c", "echo from control.py", "-t", "ctl job", "-p",
                        "1500", "-r", "2", "-a", "LINUX")
    assert code == 0, out
    job_id = int(out)
    job = client.wait_job(job_id)
    assert job["status"] == "success" and job["title"] == "ctl job"
    detail = client.get("/api/v1/jobs/%d" % job_id).json()
    assert job["max_attempts"] == 2 and detail["ops"][0]["priority"] == -9
    log = client.get("/api/v1/jobs/%d/log" % job_id).json()["data"]
    assert "\nfrom control.py\n" in log
    code, out = control(client, "list")
    assert code == 0, out
    lines = out.splitlines()
    assert ast.literal_eval(lines[0]) == coalition.VARS
    assert lines[1] == "0 Root > "
    rows = [ast.literal_eval(line) for line in lines[2:]]
    assert any(row[0] == job_id and row[1] == "ctl job" and row[4] == "FINISHED" and
               row[2] == "echo from control.py" for row in rows)
    code, out = control(client, "remove", "-i", str(job_id))
    assert code == 0, out
    detail = client.get("/api/v1/jobs/%d" % job_id).json()
    assert detail["archived"] is True
    code, out = control(client, "list")
    assert all(ast.literal_eval(line)[0] != job_id for line in out.splitlines()[2:])


def test_curl_addjob_returns_an_id_that_runs(served):
    """curl '.../json/addjob?cmd=echo%20hi': a bare decimal id, and the job succeeds."""
    _, client = served
    curl = shutil.which("curl")
    assert curl, "curl is needed (Debian's curl package)"
    proc = subprocess.run([curl, "-s", "-i", "http://127.0.0.1:%d/json/addjob?cmd=echo%%20hi"
                           % client.port], capture_output=True, timeout=30, check=True)
    head, _, body = proc.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and re.fullmatch(rb"[0-9]+", body), proc.stdout
    job = client.wait_job(int(body))
    assert job["status"] == "success"
    assert "\nhi\n" in client.get("/api/v1/jobs/%d/log" % int(body)).json()["data"]


def test_every_documented_attribute_by_post_form(served):
    """POST form with cmd, title, dir, env (literal backslash-n), priority, dependencies,
    timeout, retry, affinity, url, user, localprogress, globalprogress."""
    _, client = served
    first = int(client.get("/json/addjob?cmd=true").text)
    client.wait_job(first)
    form = {"cmd": "echo $A-$B; echo P:40; echo G:0.5; pwd", "title": "all attributes",
            "dir": "$(WORK)/", "env": "A=1\\nB=two\\nWORK=/tmp", "priority": "900",
            "dependencies": "%d" % first, "timeout": "30", "retry": "3",
            "affinity": "LINUX,24GB", "url": "http://example.invalid/shot", "user": "carol",
            "localprogress": "P:%percent", "globalprogress": "G:%one", "parent": "0",
            "unknown": "ignored"}
    answer = client.post("/xmlrpc/addjob", urllib.parse.urlencode(form).encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status == 200, answer
    job_id = int(answer.text)
    job = client.wait_job(job_id)
    assert job["status"] == "success" and job["owner"] == "carol"
    assert job["progress"] == 1.0 and job["global_progress"] == 0.5
    detail = client.get("/api/v1/jobs/%d" % job_id).json()
    op = detail["ops"][0]
    assert job["max_attempts"] == 3 and op["priority"] == 7
    assert op["env"] == {"A": "1", "B": "two", "WORK": "/tmp"} and op["dir"] == "/tmp/"
    assert op["timeout"] == 30 and op["affinity"] == ["LINUX", "24GB"]
    assert op["url"] == "http://example.invalid/shot"
    assert op["progress_pattern"] == "P:%percent"
    assert op["global_progress_pattern"] == "G:%one"
    assert op["depends"] == [[first, ["success"]]]
    log = client.get("/api/v1/jobs/%d/log" % job_id).json()["data"]
    assert "\n1-two\n" in log and "\n/tmp\n" in log
    rows = client.get("/json/getjobs?filter=FINISHED").text
    # control.py eval()s it: a null, true or false would be an unknown name (NameError).
    data = eval(rows, {"__builtins__": {}}, {})  # noqa: S307 - what control.py does
    row = dict(zip(data["Vars"], [r for r in data["Jobs"] if r[0] == job_id][0]))
    assert row["Priority"] == coalition.priority_of(7) < 1000
    assert row["User"] == "carol" and row["Retry"] == 3
    assert row["URL"] == "http://example.invalid/shot" and row["Affinity"] == "LINUX,24GB"
    assert row["Dependencies"] == [first] and row["LocalProgress"] == 1.0
    assert row["GlobalProgress"] == 0.5 and row["State"] == "FINISHED" and row["Try"] == 1
    log_literal = client.get("/json/getlog?id=%d" % job_id).text
    assert ast.literal_eval(log_literal) == log


def test_refusals_answer_minus_one_with_a_4xx(served):
    """A refused addjob is -1 with a 4xx, never an HTML page; nothing is created."""
    _, client = served
    before = client.get("/api/v1/info").json()["counts"]
    for query in ("cmd=%20", "cmd=true&dir=relative", "cmd=true&env=NOEQUALS",
                  "cmd=true&priority=high", "cmd=true&timeout=-1", "cmd=true&parent=title",
                  "cmd=true&localprogress=no-token", "cmd=true&affinity=a%20b",
                  # groups: titles the queue refuses, and what a group cannot have
                  "title=a%7Cb", "cmd=&title=123", "cmd=&dependencies=1",
                  "cmd=&affinity=LINUX", "cmd=&priority=high"):
        answer = client.get("/json/addjob?" + query)
        assert 400 <= answer.status < 600 and answer.body == b"-1", (query, answer)
        assert answer.headers["content-type"].startswith("text/plain")
    assert client.get("/api/v1/info").json()["counts"] == before
    assert client.get("/json/getlog?id=abc").body == b"-1"


def test_getworkers_lists_nodes_as_workers_and_running_jobs(served):
    """getworkers: this machine as a worker with its tags; WORKING while a job runs."""
    _, client = served
    job_id = int(client.get("/json/addjob?cmd=sleep%2030").text)
    client.wait_job(job_id, ("running",))
    data = eval(client.get("/json/getworkers").text,  # noqa: S307 - as Coalition's UI
                {"__builtins__": {}}, {})
    workers = [dict(zip(data["Vars"], row)) for row in data["Workers"]]
    assert len(workers) == 1 and workers[0]["Affinity"] == "24GB,LINUX"  # sorted
    assert workers[0]["State"] == "WORKING" and workers[0]["LastJob"] == job_id
    assert workers[0]["Active"] == 1
    started = time.monotonic()
    assert client.get("/json/clearjobs?id=%d" % job_id).text == "1"
    assert time.monotonic() - started < 20
    assert client.get("/api/v1/jobs/%d" % job_id).json()["archived"] is True


def test_priorities_map_by_order():
    """Coalition's priorities (higher first, 1000 normal) keep their order in ours."""
    values = [0, 1, 500, 999, 1000, 1001, 1003, 1500, 2000, 10 ** 6]
    ours = [coalition.coalition_priority(v) for v in values]
    assert ours == sorted(ours, reverse=True)
    assert coalition.coalition_priority(1000) == 0 and ours[0] == 10 and ours[-1] == -20
    assert all(coalition.coalition_priority(coalition.priority_of(p)) == p
               for p in range(-20, 11))
