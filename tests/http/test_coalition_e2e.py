"""End to end: Coalition's clients against a real jq-masterd. A faithful Python 3 port of
Coalition v3's control.py (tests/http/coalition_control.py) adds, lists and removes jobs,
and builds groups (folder jobs) and lists them; curl adds one by GET; a POST form gives
every attribute of Coalition's documentation; pausejobs, startjobs, resetjobs and
reseterrorjobs change jobs as jq-masterd(8) says."""

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
                  "cmd=&affinity=a%20b", "cmd=&priority=high"):
        answer = client.get("/json/addjob?" + query)
        assert 400 <= answer.status < 600 and answer.body == b"-1", (query, answer)
        assert answer.headers["content-type"].startswith("text/plain")
    assert client.get("/api/v1/info").json()["counts"] == before
    assert client.get("/json/getlog?id=abc").body == b"-1"


def test_a_groups_affinity_is_added_to_its_jobs(served):
    """addjob without a command but with an affinity: the jobs added into the group need
    its tags too (they show in their Affinity column)."""
    _, client = served
    group = int(client.get("/json/addjob?cmd=&title=tagged&affinity=LINUX").text)
    job = int(client.get("/json/addjob?cmd=true&parent=%d&affinity=24GB" % group).text)
    data = eval(client.get("/json/getjobs?id=%d" % group).text,  # noqa: S307 - as control.py
                {"__builtins__": {}}, {})
    row = dict(zip(data["Vars"], [r for r in data["Jobs"] if r[0] == job][0]))
    assert row["Affinity"] == "24GB,LINUX"


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
    # its machine: the load spread over its CPUs, memory free and total in MB
    assert len(workers[0]["Load"]) == os.cpu_count()
    assert all(isinstance(n, int) and 0 <= n <= 100 for n in workers[0]["Load"])
    assert 0 < workers[0]["FreeMemory"] < workers[0]["TotalMemory"]
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


def _listed(out):
    """control.py list's output: (breadcrumb line, {id: row as a dict}); it prints each
    row once per Var (its loop bug)."""
    lines = out.splitlines()
    names = ast.literal_eval(lines[0])
    rows = [ast.literal_eval(line) for line in lines[2:]]
    assert len(rows) % len(names) == 0, out
    return lines[1], {row[0]: dict(zip(names, row)) for row in rows}


def _getjobs(client, query=""):
    """getjobs read as control.py reads it (eval: no null, true or false may appear)."""
    data = eval(client.get("/json/getjobs" + query).text,  # noqa: S307 - as control.py
                {"__builtins__": {}}, {})
    return data["Parents"], {row[0]: dict(zip(data["Vars"], row)) for row in data["Jobs"]}


def _eventually(check, timeout=30):
    """Poll check() until it returns a true value; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "not within %ss" % timeout
        time.sleep(0.05)


def test_control_py_builds_groups_and_lists_them_by_parent(served):
    """add without a command makes a group (control.py needs -c "" to send one); -P puts
    jobs in it, as do a path and a title; list -P shows a group's jobs under the
    breadcrumb, the root shows the group with its state and totals; a job that is no
    group takes no jobs (-1, as any refusal)."""
    _, client = served
    code, out = control(client, "add", "-c", "", "-t", "ctl-render")
    assert code == 0, out
    group = int(out)
    detail = client.get("/api/v1/jobs/%d" % group).json()
    assert detail["ops"][0]["OP_ID"] == "OP_GROUP" and detail["title"] == "ctl-render"
    sub = int(control(client, "add", "-c", "", "-t", "ctl-shot", "-P", str(group))[1])
    one = int(control(client, "add", "-c", "echo one", "-t", "one", "-P", str(group))[1])
    bad = int(control(client, "add", "-c", "exit 3", "-t", "bad", "-r", "1", "-P",
                      str(group))[1])
    by_path = int(client.get("/json/addjob?cmd=true&title=p&parent=ctl-render%7Cctl-shot"
                             ).text)
    by_title = int(client.get("/json/addjob?cmd=true&title=t&parent=ctl-shot").text)
    for job_id in (one, by_path, by_title):
        assert client.wait_job(job_id)["status"] == "success"
    assert client.wait_job(bad)["status"] == "error"
    assert client.get("/api/v1/jobs/%d" % by_path).json()["parent"] == sub
    assert client.get("/api/v1/jobs/%d" % by_title).json()["parent"] == sub

    code, out = control(client, "list", "-P", str(group))
    assert code == 0, out
    crumbs, rows = _listed(out)
    assert crumbs == "0 Root > %d ctl-render > " % group
    assert sorted(rows) == sorted([sub, one, bad])
    assert rows[sub]["Command"] == "" and rows[sub]["State"] == "FINISHED"
    assert (rows[sub]["Total"], rows[sub]["TotalFinished"]) == (2, 2)
    assert rows[one]["State"] == "FINISHED" and rows[one]["Command"] == "echo one"
    assert rows[bad]["State"] == "ERROR" and rows[bad]["Total"] == 0
    crumbs, rows = _listed(control(client, "list", "-P", str(sub))[1])
    assert crumbs == "0 Root > %d ctl-render > %d ctl-shot > " % (group, sub)
    assert sorted(rows) == [by_path, by_title]

    crumbs, rows = _listed(control(client, "list")[1])
    assert crumbs == "0 Root > "
    assert not {sub, one, bad, by_path, by_title} & set(rows)
    row = rows[group]
    assert row["Command"] == "" and row["Title"] == "ctl-render" and row["State"] == "ERROR"
    assert (row["Total"], row["TotalFinished"], row["TotalErrors"], row["TotalWorking"]) == (
        4, 3, 1, 0)
    crumbs, rows = _listed(control(client, "list", "-P", "987654321")[1])
    assert crumbs == "0 Root > " and group in rows  # an unknown id lists the root

    code, out = control(client, "add", "-c", "true", "-P", str(one))
    assert code == 0 and out.strip() == "-1", out
    answer = client.get("/json/addjob?cmd=true&parent=%d" % one)
    assert answer.status == 404 and answer.body == b"-1"
    assert _getjobs(client, "?id=%d" % one)[1] == {}

    code, out = control(client, "remove", "-i", str(group))
    assert code == 0, out
    for job_id in (group, sub, one, bad, by_path):
        assert client.get("/api/v1/jobs/%d" % job_id).json()["archived"] is True


def test_pausejobs_startjobs_resetjobs_change_states_as_documented(served):
    """pausejobs holds (a group: its jobs; a running command stops), shown PAUSED and
    listed by filter=PAUSED; startjobs releases; resetjobs runs a finished job again;
    reseterrorjobs retries a failed one; Coalition's no-ops answer 1, an unknown id or a
    refusal -1 with a 4xx."""
    _, client = served
    group = int(client.get("/json/addjob?title=ctl-farm").text)
    long = int(client.get("/json/addjob?cmd=sleep%%2060&title=long&parent=%d" % group).text)
    quick = int(client.get("/json/addjob?cmd=echo%%20quick&title=quick&parent=%d"
                           % group).text)
    failing = int(client.get("/json/addjob?cmd=echo%%20failing%%3Bexit%%203&retry=1&parent=%d"
                             % group).text)
    client.wait_job(quick)
    client.wait_job(failing)
    client.wait_job(long, ("running",))
    row = _eventually(lambda: (lambda r: r if r["State"] == "WORKING" else None)(
        _getjobs(client)[1][group]))
    assert (row["TotalWorking"], row["TotalFinished"], row["TotalErrors"]) == (1, 1, 1)

    assert client.get("/json/pausejobs?id=%d" % group).text == "1"
    assert client.wait_job(long, ("queued",))["held"] is True
    assert _getjobs(client)[1][group]["State"] == "PAUSED"
    assert list(_getjobs(client, "?filter=PAUSED")[1]) == [group]
    parents, rows = _getjobs(client, "?id=%d&filter=PAUSED" % group)
    assert list(rows) == [long] and parents[-1] == {"ID": group, "Title": "ctl-farm"}
    rows = _getjobs(client, "?id=%d" % group)[1]
    assert rows[quick]["State"] == "FINISHED" and rows[failing]["State"] == "ERROR"
    assert long not in _getjobs(client, "?id=%d&filter=WAITING" % group)[1]
    assert client.get("/json/pausejobs?id=%d" % quick).text == "1"  # Coalition's no-op
    answer = client.get("/json/pausejobs?id=987654321")
    assert answer.status == 404 and answer.body == b"-1"

    assert client.get("/json/startjobs?id=%d" % group).text == "1"
    assert client.wait_job(long, ("running",))["held"] is False
    assert _eventually(lambda: _getjobs(client)[1][group]["State"] == "WORKING")
    assert _getjobs(client, "?id=%d" % group)[1][long]["State"] == "WORKING"
    answer = client.get("/json/resetjobs?id=%d" % long)  # running: the queue refuses
    assert answer.status == 409 and answer.body == b"-1"

    assert client.get("/json/resetjobs?id=%d" % quick).text == "1"
    assert client.wait_job(quick)["status"] == "success"
    log = client.get("/api/v1/jobs/%d/log" % quick).json()["data"]
    assert log.count("\nquick\n") == 2 and "RESET" in log
    assert client.get("/json/reseterrorjobs?id=%d" % quick).text == "1"  # not failed
    assert client.get("/json/reseterrorjobs?id=%d" % failing).text == "1"
    assert client.wait_job(failing)["status"] == "error"
    log = client.get("/api/v1/jobs/%d/log" % failing).json()["data"]
    assert log.count("\nfailing\n") == 2 and "RETRY" in log
    assert client.get("/json/clearjobs?id=%d" % group).text == "1"
