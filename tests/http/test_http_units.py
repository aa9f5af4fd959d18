"""Unit tests of jqueue.http without a network: the tokens file, who a request is, CSRF,
Coalition's attribute mapping, job objects, and the documentation of every route."""

import os
import re

import pytest
from twisted.internet import defer

from jqueue import errors
from jqueue.daemon import config
from jqueue.http import api, app, auth, coalition, jobs, server

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class FakeRequest:
    """What Authenticator reads of a twisted.web request."""

    def __init__(self, headers=None, cookies=None, method=b"GET"):
        self.headers = {k.lower().encode(): v.encode() for k, v in (headers or {}).items()}
        self.received_cookies = {k.encode(): v.encode() for k, v in (cookies or {}).items()}
        self.method = method
        self.channel = None

    def getHeader(self, name):  # noqa: N802 - twisted's name
        return self.headers.get(name.lower())


def test_tokens_file_parses_names_and_refuses_malformed_lines(tmp_path):
    """NAME TOKEN lines with comments; short tokens, bad names and duplicates refused."""
    path = tmp_path / "tokens"
    path.write_text("# ops\nalice  abcdefghijklmnop01  # laptop\n\nbob 0123456789abcdefXYZ\n")
    assert auth.read_tokens(str(path)) == {"abcdefghijklmnop01": "alice",
                                           "0123456789abcdefXYZ": "bob"}
    for bad in ("alice short\n", "al ice abcdefghijklmnop01\n", "a:b abcdefghijklmnop01\n",
                "x abcdefghijklmnop01\ny abcdefghijklmnop01\n", "# nothing\n"):
        path.write_text(bad)
        with pytest.raises(errors.ConfigurationError):
            auth.read_tokens(str(path))
    with pytest.raises(errors.ConfigurationError):
        auth.read_tokens(str(tmp_path / "missing"))


def test_identify_tokens_loopback_and_foreign_hosts():
    """A token names its owner; none on loopback is anonymous; a foreign Host is refused;
    without loopback access a token is required."""
    open_auth = auth.Authenticator({"t" * 20: "alice"}, loopback_open=True)
    assert open_auth.identify(FakeRequest({"Authorization": "Bearer " + "t" * 20})) == (
        True, "alice")
    assert open_auth.identify(FakeRequest({"Host": "127.0.0.1:19211"})) == (False, None)
    assert open_auth.identify(FakeRequest({"Host": "[::1]:1"})) == (False, None)
    assert open_auth.identify(FakeRequest({"Host": "localhost"})) == (False, None)
    with pytest.raises(auth.Forbidden):
        open_auth.identify(FakeRequest({"Host": "attacker.example:19211"}))
    with pytest.raises(auth.AuthError):
        open_auth.identify(FakeRequest({"Authorization": "Basic xyz"}))
    closed = auth.Authenticator({"t" * 20: "alice"}, loopback_open=False)
    with pytest.raises(auth.AuthError):
        closed.identify(FakeRequest({"Host": "127.0.0.1"}))
    with pytest.raises(auth.AuthError):
        closed.identify(FakeRequest(), query_token="u" * 20)
    assert closed.identify(FakeRequest(), query_token="t" * 20) == (True, "alice")
    assert closed.identify(FakeRequest(cookies={"jq_token": "t" * 20})) == (True, "alice")


def test_csrf_applies_to_browsers_changes_only():
    """Scripts pass; a browser's POST needs the token; another site is refused."""
    a = auth.Authenticator(secret=b"k" * 32)
    a.check_browser(FakeRequest(method=b"POST"), True)
    a.check_browser(FakeRequest({"Origin": "http://x"}, method=b"GET"), False)
    with pytest.raises(auth.Forbidden):
        a.check_browser(FakeRequest({"Origin": "http://h:1", "Host": "h:1"}, method=b"POST"),
                        True)
    a.check_browser(FakeRequest({"Origin": "http://h:1", "Host": "h:1",
                                 "X-CSRF-Token": a.csrf_token}, method=b"POST"), True)
    with pytest.raises(auth.Forbidden):
        a.check_browser(FakeRequest({"Sec-Fetch-Site": "cross-site"}), True)
    a.check_browser(FakeRequest({"Sec-Fetch-Site": "none"}), True)
    assert auth.Authenticator(secret=b"k" * 32).csrf_token == a.csrf_token
    assert auth.Authenticator().csrf_token != a.csrf_token


def test_coalition_attributes_make_a_command_opcode():
    """addjob's attributes map as jq-masterd(8) says."""
    op = coalition.job_opcode({"cmd": "render", "env": "A=1\\nB=x=y", "dir": "/s",
                               "priority": "2000", "retry": "0", "dependencies": "1, 3 5",
                               "localprogress": "None", "globalprogress": "",
                               "affinity": "LINUX", "url": "u", "timeout": "7"})
    assert op["env"] == {"A": "1", "B": "x=y"}
    assert op["priority"] == -10 and op["max_attempts"] == 1 and op["timeout"] == 7
    assert op["depends"] == [[1, ["success"]], [3, ["success"]], [5, ["success"]]]
    assert "progress_pattern" not in op and "global_progress_pattern" not in op
    assert coalition.job_opcode({"cmd": "x", "env": "R=/srv", "dir": "$(R)/a"})["dir"] == (
        "/srv/a")
    assert coalition.job_opcode({"cmd": "x", "dir": "."})["dir"] == "/"
    for bad in ({"cmd": "x", "dir": "rel"}, {"cmd": "x", "env": "=1"},
                {"cmd": "x", "priority": "hi"}):
        with pytest.raises(errors.OpPrereqError):
            coalition.job_opcode(bad)
    assert coalition.job_opcode({"cmd": " "})["OP_ID"] == "OP_COMMAND_RUN"


def test_coalition_job_without_a_command_is_a_group():
    """An empty or absent cmd is Coalition's folder: OP_GROUP with the title and the
    priority if given (else the queue gives it its group's); what only runs matters not
    (dir, env, retry, ...); dependencies and an affinity are passed on for the queue to
    judge."""
    assert coalition.job_opcode({"cmd": "", "title": "shots", "priority": "2000",
                                 "dir": "relative", "env": "=bad", "retry": "x",
                                 "timeout": "y", "localprogress": "None", "url": "u"}) == {
        "OP_ID": "OP_GROUP", "title": "shots", "priority": -10}
    assert coalition.job_opcode({}) == {"OP_ID": "OP_GROUP", "title": "New job"}
    assert coalition.job_opcode({"priority": ""}) == {"OP_ID": "OP_GROUP",
                                                      "title": "New job"}  # its group's
    assert coalition.job_opcode({"command": "", "affinity": "LINUX",
                                 "dependencies": "4 5"}) == {
        "OP_ID": "OP_GROUP", "title": "New job", "affinity": "LINUX",
        "depends": [[4, ["success"]], [5, ["success"]]]}
    with pytest.raises(errors.OpPrereqError):
        coalition.job_opcode({"cmd": "", "priority": "high"})


def test_job_objects_convert_timestamps_and_fall_back_to_the_summary_for_a_title():
    """[sec, usec] become seconds; a job without a title shows its summary."""
    row = [None] * len(jobs.LIST_FIELDS)
    values = dict(zip(jobs.LIST_FIELDS, row), id=4, status="queued", summary=["TEST_DELAY(0)"],
                  received_ts=[10, 500000])
    job = jobs.job_object(list(values), list(values.values()))
    assert job["received"] == 10.5 and job["title"] == "TEST_DELAY(0)" and job["parent"] is None


def test_every_route_and_http_option_is_in_the_man_page():
    """jq-masterd(8) names every HTTP path and every http_* option."""
    with open(os.path.join(ROOT, "man", "jq-masterd.8.rst"), encoding="utf-8") as stream:
        page = stream.read()
    section = page.split("\nHTTP API\n")[1].split("\nOPTIONS\n")[0]
    for route in app.routes():
        path = route.pattern.pattern[2:-2]
        if path.startswith("/static/"):
            expected = ["**/static/**"]
        elif "(cancel|" in path:
            expected = ["/api/v1/jobs/**\\ *ID*\\ **/cancel**"] + [
                "**%s**" % action for action in ("signal", "priority", "retry", "reset",
                                                 "hold", "release")]
        elif "(start|" in path:
            expected = ["/api/v1/services/**\\ *NAME*\\ **/start**", "**stop**",
                        "**restart**"]
        else:
            expected = [path.replace("/([^/]+)", "/**\\ *%s*\\ **" % (
                "NAME" if "/services/" in path else "ID"))]
        for text in expected:
            assert text in section, (route.pattern.pattern, text)
    for option in config.options_for("masterd"):
        if option.name.startswith("http"):
            assert option.flag in page
    assert api.PREFIX in section


def _documented_paths(section):
    """(method or None, sample path) for every path jq-masterd(8)'s HTTP API section shows
    in bold: "**GET /api/v1/jobs/**\\ *ID*" becomes ("GET", "/api/v1/jobs/7")."""
    text = section.replace("**\\ *ID*\\ **", "7").replace("**\\ *ID*", "7**")
    text = text.replace("**\\ *NAME*\\ **", "web").replace("**\\ *NAME*", "web**")
    found = []
    for match in re.finditer(r"\*\*(?:(GET|POST|PATCH|DELETE) )?(/[^*\s]*)\*\*", text):
        method, path = match.groups()
        if path != "/" and path.endswith("/"):  # a directory: /static/ serves its files
            path += "index.html"
        found.append((method, path))
    for line in text.splitlines():  # cancel | signal | ...; start | stop | restart
        base = "/api/v1/services/web/" if "/api/v1/services/" in line else "/api/v1/jobs/7/"
        for extra in re.findall(r"\| \*\*([a-z]+)\*\*", line):
            found.append(("POST", base + extra))
    return found


def test_every_path_in_the_man_page_is_a_route():
    """Every path jq-masterd(8) documents is served, with the method it names."""
    with open(os.path.join(ROOT, "man", "jq-masterd.8.rst"), encoding="utf-8") as stream:
        page = stream.read()
    section = page.split("\nHTTP API\n")[1].split("\nOPTIONS\n")[0]
    documented = _documented_paths(section)
    paths = {path for _, path in documented}
    assert {"/", "/metrics", "/api/v1/jobs", "/api/v1/jobs/7/log", "/api/v1/jobs/7/hold",
            "/json/addjob", "/xmlrpc/addjob", "/json/pausejobs", "/api/v1/services/web",
            "/api/v1/services/web/restart", "/api/v1/services/web/log"} <= paths
    served = app.routes()
    for method, path in documented:
        assert any(route.pattern.match(path) and method in (None, route.method)
                   for route in served), (method, path)


_OP = {"OP_ID": "OP_COMMAND_RUN", "cmd": "true", "dir": "/", "priority": 0}


def _job(job_id, parent=0, status="queued", held=False, group=None, **fields):
    """A row of _PagedBackend: a command job, or a group (counts: total, finished,
    errors, working) titled group."""
    row = dict(id=job_id, parent=parent, status=status, title="t%d" % job_id, ops=[_OP],
               node=None, start_ts=None, end_ts=None, attempt=None, max_attempts=1,
               priority=0, owner=None, progress=None, global_progress=None, held=held,
               total=None, finished=None, errors=None, working=None, archived=False)
    if group is not None:
        row.update(title=group, ops=[{"OP_ID": "OP_GROUP", "title": group, "priority": 0}],
                   max_attempts=None, total=0, finished=0, errors=0, working=0)
    row.update(fields)
    return row


class _PagedBackend:
    """list_jobs and query_jobs over the given rows (count: that many command jobs in
    the root), filtering as JobQueue.list_jobs does (its index files a group under its
    recorded status, which may differ from the status shown), recording the pages asked
    for."""

    def __init__(self, count=0, rows=()):
        self.jobs = {row["id"]: row for row in rows}
        self.jobs.update((i, _job(i)) for i in range(1, count + 1))
        self.calls = []

    def list_jobs(self, fields, limit=100, after=None, filters=None, **kwargs):
        self.calls.append((limit, after, filters))
        filters = filters or {}
        def passes(row):
            return all(row.get("recorded", row["status"]) in accepted if key == "status"
                       else row[key] in accepted for key, accepted in filters.items())
        ids = [i for i in sorted(self.jobs) if (after is None or i > after)
               and passes(self.jobs[i]) and self.jobs[i]["status"] in filters.get(
                   "status", [self.jobs[i]["status"]])]
        rows = [self.jobs[i] for i in ids[:limit]]
        return {"rows": [[row[f] for f in fields] for row in rows], "more": len(ids) > limit}

    def query_jobs(self, ids, fields):
        return [[self.jobs[i][f] for f in fields] if i in self.jobs else None for i in ids]


class _Call:
    def __init__(self, backend, args, dispatcher=None):
        from twisted.internet import task
        self.backend, self.args = backend, args
        self.site = type("Site", (), {"reactor": task.Clock(),
                                      "context": {"dispatcher": dispatcher}})()

    def arg(self, name, default=None):
        return (self.args.get(name) or [default])[-1]

    def blocking(self, fn, *args):
        return defer.maybeDeferred(fn, *args)


def _getjobs(backend, **args):
    """getjobs' answer as control.py reads it (eval), checking it has no null/true/false."""
    answers = []
    coalition.getjobs(_Call(backend, {k: [v] for k, v in args.items()})).addBoth(
        answers.append)
    return eval(answers[0].body.decode(), {"__builtins__": {}}, {})  # noqa: S307


def test_getjobs_reads_every_job_a_page_at_a_time(monkeypatch):
    """getjobs lists every job of the root, holding the queue for one page at a time and
    encoding the answer a page at a time."""
    monkeypatch.setattr(coalition, "PAGE", 3)
    backend = _PagedBackend(7)
    answers = []
    coalition.getjobs(_Call(backend, {})).addCallback(answers.append)
    data = eval(answers[0].body.decode(), {"__builtins__": {}}, {})  # noqa: S307
    assert [row[0] for row in data["Jobs"]] == list(range(1, 8))
    assert answers[0].body.decode() == coalition.literal(data)  # as encoded in one piece
    assert list(data) == ["Vars", "Jobs", "Parents"] and data["Vars"] == coalition.VARS
    root = {"parent": [0]}
    assert backend.calls == [(3, None, root), (3, 3, root), (3, 6, root)]


def test_getjobs_with_no_job_or_an_unknown_state_is_an_empty_list():
    """No job, a state no job can be in, or PAUSED with none held: Jobs is [] (still
    Python's eval's)."""
    for args, count in (({}, 0), ({"filter": "NOSUCHSTATE"}, 3), ({"filter": "PAUSED"}, 3)):
        data = _getjobs(_PagedBackend(count), **args)
        assert data["Jobs"] == [] and data["Parents"] == [{"ID": 0, "Title": "Root"}]


def _tree():
    """Root: job 1, group 2 "render" (held group 6 "later" in it, jobs 3 and 4, group 5
    "shot" with job 7), held job 8, group 9 "retake" (a job failed, one queued: its
    recorded status is queued until both end)."""
    return _PagedBackend(rows=[
        _job(1, status="success"),
        _job(2, group="render", status="running", total=4, finished=2, errors=1, working=1),
        _job(3, parent=2, status="error"), _job(4, parent=2, status="running"),
        _job(5, parent=2, group="shot", status="success", total=1, finished=1),
        _job(6, parent=2, group="later", held=True, status="queued"),
        _job(7, parent=5, status="success"), _job(8, status="queued", held=True),
        _job(9, group="retake", status="error", recorded="queued", total=2, finished=1,
             errors=1), _job(10, parent=9, status="error"), _job(11, parent=9)])


def test_getjobs_lists_the_jobs_of_a_group_under_its_breadcrumb():
    """id=N lists the jobs whose parent is N (asked of the queue by parent), with the
    breadcrumb from Root down to N; an id that is no live job lists the root."""
    backend = _tree()
    data = _getjobs(backend, id="5")
    assert data["Parents"] == [{"ID": 0, "Title": "Root"}, {"ID": 2, "Title": "render"},
                               {"ID": 5, "Title": "shot"}]
    assert [row[0] for row in data["Jobs"]] == [7]
    assert backend.calls[-1][2] == {"parent": [5]}
    data = _getjobs(backend, id="2")
    assert [row[0] for row in data["Jobs"]] == [3, 4, 5, 6]
    assert data["Parents"][-1] == {"ID": 2, "Title": "render"} and len(data["Parents"]) == 2
    for unknown in ("99", "0", "", "-3"):
        data = _getjobs(backend, id=unknown)
        assert data["Parents"] == [{"ID": 0, "Title": "Root"}]
        assert [row[0] for row in data["Jobs"]] == [1, 2, 8, 9], unknown
    backend.jobs[5]["archived"] = True  # archived: no longer a folder to list
    assert _getjobs(backend, id="5")["Parents"] == [{"ID": 0, "Title": "Root"}]
    data = _getjobs(backend, id="3")  # a job that is no group: nothing in it
    assert data["Jobs"] == [] and data["Parents"][-1] == {"ID": 3, "Title": "t3"}
    answers = []
    defer.maybeDeferred(coalition.getjobs, _Call(backend, {"id": ["x"]})).addErrback(
        answers.append)
    assert answers and answers[0].check(errors.OpPrereqError)


def test_getjobs_shows_groups_with_their_counters_and_held_jobs_paused():
    """A group's row: no command, its derived state, its counters from its leaves'
    counts; a held job or group is PAUSED, and filter=PAUSED lists just those."""
    backend = _tree()
    data = _getjobs(backend)
    rows = {row[0]: dict(zip(data["Vars"], row)) for row in data["Jobs"]}
    render = rows[2]
    assert render["Command"] == "" and render["Title"] == "render"
    assert render["State"] == "WORKING" and render["Retry"] == 0 and render["Try"] == 0
    assert (render["Total"], render["TotalFinished"], render["TotalErrors"],
            render["TotalWorking"]) == (4, 1, 1, 1)
    assert (render["Finished"], render["Errors"], render["Working"]) == (1, 1, 1)
    assert render["LocalProgress"] == render["GlobalProgress"] == 0.25
    assert rows[1]["Total"] == 0 and rows[1]["Command"] == "true"
    assert rows[1]["State"] == "FINISHED" and rows[8]["State"] == "PAUSED"
    rows = {row[0]: dict(zip(data["Vars"], row)) for row in _getjobs(backend, id="2")["Jobs"]}
    assert rows[5]["State"] == "FINISHED" and rows[5]["TotalFinished"] == 1
    assert rows[6]["State"] == "PAUSED" and rows[3]["State"] == "ERROR"
    assert [row[0] for row in _getjobs(backend, filter="PAUSED")["Jobs"]] == [8]
    assert [row[0] for row in _getjobs(backend, id="2", filter="paused")["Jobs"]] == [6]
    assert backend.calls[-1][2] == {"parent": [2]}  # held jobs have any status
    assert [row[0] for row in _getjobs(backend, filter="WAITING")["Jobs"]] == []  # 8 held
    assert backend.calls[-1][2] == {"parent": [0], "status": ["queued"]}
    assert [row[0] for row in _getjobs(backend, id="2", filter="ERROR")["Jobs"]] == [3]
    assert [row[0] for row in _getjobs(backend, filter="WORKING")["Jobs"]] == [2]
    assert [row[0] for row in _getjobs(backend, filter="ERROR")["Jobs"]] == [9]
    assert [row[0] for row in _getjobs(backend, filter="FINISHED")["Jobs"]] == [1]


def test_coalition_state_of_a_job_and_of_a_group():
    """State: the status mapped as Coalition names it (a group's status is derived as
    Coalition derives a parent's); held: PAUSED, but a job that ended shows how."""
    assert [coalition.state_of(s, False, False) for s in (
        "queued", "waiting", "running", "canceling", "success", "error", "canceled")] == [
        "WAITING", "PENDING", "WORKING", "WORKING", "FINISHED", "ERROR", "ERROR"]
    for status in ("queued", "waiting", "running"):
        assert coalition.state_of(status, True, False) == "PAUSED"
    assert coalition.state_of("success", True, False) == "FINISHED"
    for status in ("queued", "running", "success", "error"):
        assert coalition.state_of(status, True, True) == "PAUSED"


def test_coalition_group_state_follows_its_jobs_in_coalitions_order():
    """The group status the queue derives, shown as Coalition's State: WORKING if a job
    works, else ERROR if one failed, else FINISHED if all finished (one at least), else
    WAITING."""
    from jqueue import groupjob

    def state(*statuses):
        counts = groupjob.Counts(statuses)
        return coalition.state_of(groupjob.shown_status(counts, "queued"), False, True)
    assert state("running", "error", "success") == "WORKING"
    assert state("error", "queued", "success") == "ERROR"
    assert state("success", "success") == "FINISHED"
    assert state("success", "queued") == "WAITING"
    assert state() == "WAITING"


def test_coalition_group_counters():
    """From the leaves' counts (finished: ended, failed or not): TotalFinished is those
    that ended without failing; the direct counters repeat the tree's."""
    assert coalition.group_counters(10, 6, 2, 3) == {
        "Total": 10, "TotalFinished": 4, "TotalErrors": 2, "TotalWorking": 3,
        "Finished": 4, "Errors": 2, "Working": 3}
    assert coalition.group_counters(None, None, None, None)["Total"] == 0


class _Dispatcher:
    """Runs LUXI's job-control requests against answers given per (method, id)."""

    def __init__(self, answers):
        self.answers, self.ran = answers, []

    def run(self, spec, args):
        self.ran.append((spec.name, args[0]))
        return list(self.answers.get((spec.name, args[0]), (True, "done")))


def _control(name, ids, answers, backend=None):
    dispatcher = _Dispatcher(answers)
    results = []
    call = _Call(backend or _tree(), {"id": [str(i) for i in ids]}, dispatcher)
    getattr(coalition, name)(call).addBoth(results.append)
    return results[0], dispatcher.ran


def test_coalition_job_control_goes_through_luxi_and_refusals_are_not_silent():
    """Each id goes through its LUXI method, in order, every one tried; 1 when each was
    done or left as Coalition leaves it; -1 (404) for an unknown id; -1 (409) for a
    refusal where Coalition would have changed the job."""
    from jqueue.http import server
    for name, method in (("pausejobs", "HoldJob"), ("startjobs", "ReleaseJob"),
                         ("resetjobs", "ResetJob"), ("reseterrorjobs", "RetryJob")):
        answer, ran = _control(name, [3, 4], {})
        assert answer.body == b"1" and ran == [(method, 3), (method, 4)]
        answer, ran = _control(name, [99, 4], {(method, 99): (False, "Job 99 not found")})
        assert server.status_of(answer.value)[0] == 404 and ran == [(method, 99),
                                                                     (method, 4)]
    # Coalition pauses no FINISHED job: left as it is; an ERROR one it would pause.
    refused = {("HoldJob", 1): (False, "Job 1 is already finished (success)"),
               ("HoldJob", 3): (False, "Job 3 is already finished (error)")}
    assert _control("pausejobs", [1], refused)[0].body == b"1"
    answer, ran = _control("pausejobs", [3, 1], refused)
    assert server.status_of(answer.value)[:2] == (409, "ActionRefused") and len(ran) == 2
    # A reset leaves a waiting job WAITING; a running or a paused (held) one Coalition
    # would have reset.
    refused = {("ResetJob", 11): (False, "Job 11 is not finished (queued)"),
               ("ResetJob", 8): (False, "Job 8 is not finished (queued)"),
               ("ResetJob", 4): (False, "Job 4 is not finished (running)")}
    assert _control("resetjobs", [11], refused)[0].body == b"1"
    for job_id in (4, 8):
        answer = _control("resetjobs", [job_id], refused)[0]
        assert server.status_of(answer.value)[0] == 409
    # reseterrorjobs touches ERROR jobs only.
    refused = {("RetryJob", 1): (False, "Job 1 has not failed (success)")}
    assert _control("reseterrorjobs", [1], refused)[0].body == b"1"
    answers = []
    defer.maybeDeferred(coalition.pausejobs, _Call(_tree(), {"id": ["x"]}, _Dispatcher(
        {}))).addErrback(answers.append)
    assert answers and answers[0].check(errors.OpPrereqError)


class _LogBackend:
    """A job whose log is the given bytes, read as JobQueue.read_job_log does."""

    def __init__(self, log):
        self.log = log

    def query_jobs(self, ids, fields):
        return [[len(self.log)]]

    def read_job_log(self, job_id, offset, max_bytes):
        data = self.log[offset:offset + max_bytes]
        return {"data": data, "offset": offset + len(data), "eof": True}


def test_getlog_answers_the_end_of_a_long_log(monkeypatch):
    """A log longer than MAX_LOG is answered by its last MAX_LOG bytes; a short one whole."""
    monkeypatch.setattr(coalition, "MAX_LOG", 10)
    monkeypatch.setattr(coalition, "LOG_CHUNK", 4)
    for log, expected in ((b"0123456789abcdefghij", "abcdefghij"), (b"short", "short"),
                          (b"", "")):
        answers = []
        coalition.getlog(_Call(_LogBackend(log), {"id": ["3"]})).addCallback(answers.append)
        assert eval(answers[0].body.decode(), {"__builtins__": {}}, {}) == expected  # noqa: S307


class _EventsBackend:
    """watch_events recording the since of each watch; answer() fires the last one."""

    def __init__(self):
        self.watches = []

    def watch_events(self, since, flt, callback):
        handle = type("Handle", (), {"cancel": lambda self: None})()
        self.watches.append((since, callback))
        return handle

    def answer(self, serials):
        since, callback = self.watches[-1]
        callback({"events": [{"serial": n, "kind": "job"} for n in serials],
                  "last": serials[-1], "gap": False})


class _StreamRequest:
    """What EventStream uses of a twisted.web request."""

    def __init__(self):
        self.written, self.producer, self.finished, self._disconnected = [], None, False, False

    def registerProducer(self, producer, streaming):  # noqa: N802 - twisted's name
        assert streaming and self.producer is None
        self.producer = producer

    def unregisterProducer(self):  # noqa: N802 - twisted's name
        self.producer = None

    def write(self, data):
        self.written.append(data)

    def finish(self):
        self.finished = True


def test_event_stream_takes_no_events_while_its_client_is_not_reading():
    """Paused (the send buffer is full) the stream writes the answer in hand but watches no
    further and sends no keepalive; resumed, it watches again from the last serial."""
    from twisted.internet import task
    clock = task.Clock()
    backend = _EventsBackend()
    site = type("Site", (), {"reactor": clock, "backend": backend,
                             "deliver": staticmethod(lambda fn, value: fn(value))})()
    stream = api.EventStream(site, 5, None)
    request = _StreamRequest()
    stream.start(request)
    assert request.producer is stream and [since for since, _ in backend.watches] == [5]
    stream.pauseProducing()
    backend.answer([6, 7])
    assert b"id: 7\n" in request.written[-1] and len(backend.watches) == 1
    before = len(request.written)
    clock.advance(api.KEEPALIVE * 3)
    assert len(request.written) == before
    stream.resumeProducing()
    assert [since for since, _ in backend.watches] == [5, 7]
    backend.answer([8])
    assert [since for since, _ in backend.watches] == [5, 7, 8]
    stream.stopProducing()
    stream.close()
    assert request.finished and request.producer is None


def test_access_log_fields_hold_whatever_a_client_sent_on_one_line():
    """Spaces, double quotes, control and non-ASCII bytes are %-escaped (as bytes); a
    token in the query never reaches the log."""
    assert server._log_text(b'/a "b"\n\xff%41') == "/a%20%22b%22%0A%FF%41"
    assert server._log_text("\u00e9ve") == "%C3%A9ve"
    assert server._TOKEN_IN_QUERY.sub(rb"\1*", b"/x?a=1&TOKEN=secret&b=2#token=s") == \
        b"/x?a=1&TOKEN=*&b=2#token=s"
