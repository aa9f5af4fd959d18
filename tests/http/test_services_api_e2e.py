"""End to end: /api/v1/services of a real jq-masterd (--http on loopback, services run on
this machine), checked against openapi.json: add, read, log, stop, start, restart,
modify, remove; refusals change nothing; the event stream's service filter."""

import os
import time
import urllib.parse

import pytest
from daemon_helpers import daemon_factory
from http_helpers import check_schema, start_http_daemon

SERVICES = "/api/v1/services"
ONE = SERVICES + "/{name}"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One daemon running services on this machine; (daemon, client)."""
    factory = daemon_factory(tmp_path_factory.mktemp("svcapi"))
    make = next(factory)
    daemon, client = start_http_daemon(make, "--slots", "2")
    yield daemon, client
    # Services outlive a stopped daemon (a restarted one adopts them): remove them first,
    # or their processes would be left running after the tests.
    for view in client.get(SERVICES).json()["services"]:
        client.request("DELETE", url(view["name"]))
    deadline = time.monotonic() + 30
    while client.get(SERVICES).json()["services"] and time.monotonic() < deadline:
        time.sleep(0.1)
    client.close()
    next(factory, None)


def url(name, tail=""):
    return "%s/%s%s" % (SERVICES, urllib.parse.quote(name, safe=""), tail)


def wait_state(client, name, states, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(url(name)).json()
        if view["state"] in states:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.05)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_service_added_started_read_and_logged(served):
    """POST adds and starts (201, Location); GET one and the list match the document;
    its log long-polls for its output."""
    _, client = served
    answer = client.post(SERVICES, {"name": "ticker one", "command":
                                    "echo started; while :; do sleep 0.2; done",
                                    "start": True})
    assert answer.status == 201, answer
    views = check_schema(answer, SERVICES, "POST").json()["services"]
    assert [v["name"] for v in views] == ["ticker one"]
    assert answer.headers["location"] == "/api/v1/services/ticker%20one"
    running = wait_state(client, "ticker one", ("RUNNING",))
    check_schema(client.get(url("ticker one")), ONE, "GET")
    assert running["pid"] and alive(running["pid"]) and running["node"]
    assert running["definition"]["command"].startswith("echo started")
    listing = check_schema(client.get(SERVICES), SERVICES, "GET").json()["services"]
    assert "ticker one" in [v["name"] for v in listing]
    named = client.get(SERVICES + "?name=" + urllib.parse.quote("ticker one")).json()
    assert [v["name"] for v in named["services"]] == ["ticker one"]
    log = check_schema(client.get(url("ticker one", "/log?wait=10")), ONE + "/log",
                       "GET").json()
    assert "started" in log["data"] and log["eof"] is False and log["offset"] > 0


def test_stop_start_restart_modify_and_remove(served):
    """The actions answer {"name", "ok", "message"}; stop ends the process, start and
    restart run it again (a new pid), PATCH changes the definition, DELETE removes it."""
    _, client = served
    assert client.post(SERVICES, {"name": "worker", "command": ["sleep", "300"]}).status == 201
    assert client.get(url("worker")).json()["state"] == "STOPPED"
    started = client.post(url("worker", "/start"))
    assert check_schema(started, ONE + "/start", "POST").json()["ok"] is True
    first = wait_state(client, "worker", ("RUNNING",))["pid"]
    stopped = check_schema(client.post(url("worker", "/stop")), ONE + "/stop", "POST").json()
    assert stopped == {"name": "worker", "ok": True, "message": stopped["message"]}
    wait_state(client, "worker", ("STOPPED",))
    deadline = time.monotonic() + 10
    while alive(first):
        assert time.monotonic() < deadline, "the stopped service's process lives on"
        time.sleep(0.05)
    changed = client.request("PATCH", url("worker"), {"stop_timeout": 3})
    assert changed.status == 200, changed
    assert check_schema(changed, ONE, "PATCH").json()["definition"]["stop_timeout"] == 3
    client.post(url("worker", "/start"))
    second = wait_state(client, "worker", ("RUNNING",))["pid"]
    restarted = client.post(url("worker", "/restart"))
    check_schema(restarted, ONE + "/restart", "POST")
    deadline = time.monotonic() + 20
    while True:
        view = client.get(url("worker")).json()
        if view["state"] == "RUNNING" and view["pid"] not in (None, second):
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    third = view["pid"]
    removed = client.request("DELETE", url("worker"))
    assert check_schema(removed, ONE, "DELETE").json()["ok"] is True
    assert client.get(url("worker")).status == 404
    deadline = time.monotonic() + 15
    while alive(third):
        assert time.monotonic() < deadline, "the removed service's process lives on"
        time.sleep(0.05)


def test_refusals_are_the_callers_errors_and_change_nothing(served):
    """Bad definitions (400), a duplicate name (409), unknown services (404), bad bodies
    and an unknown node: each a JSON error, and the table is as it was."""
    _, client = served
    assert client.post(SERVICES, {"name": "kept", "command": "sleep 1"}).status == 201
    before = client.get(SERVICES).json()
    refused = [
        (client.post(SERVICES, {"name": "kept", "command": "true"}), 409),
        (client.post(SERVICES, {"name": "bad/name", "command": "true"}), 400),
        (client.post(SERVICES, {"name": "x", "command": "true", "restart": "sometimes"}), 400),
        (client.post(SERVICES, {"name": "y", "command": "true", "bogus": 1}), 400),
        (client.post(SERVICES, {"name": "z", "command": "true", "node": "nowhere"}), 404),
        (client.post(SERVICES, {"services": [{"name": "a", "command": "true"},
                                             {"name": "a", "command": "true"}]}), 400),
        (client.post(SERVICES, {"services": []}), 400),
        (client.post(SERVICES, {"name": "w", "command": "true", "start": "yes"}), 400),
        (client.post(SERVICES, [1, 2]), 400),
        (client.post(SERVICES, b"{not json", headers={"Content-Type": "application/json"}),
         400),
        (client.request("PATCH", url("kept"), {"restart": 7}), 400),
        (client.request("PATCH", url("kept"), {}), 400),
        (client.request("PATCH", url("missing"), {"stop_timeout": 2}), 404),
        (client.post(url("missing", "/start")), 404),
        (client.post(url("kept", "/start"), {"now": True}), 400),
        (client.request("DELETE", url("missing")), 404),
        (client.get(url("missing")), 404),
        (client.get(url("missing", "/log")), 404),
        (client.get(url("kept", "/log?offset=-1")), 400),
        (client.get(SERVICES + "/%ff"), 400),
        (client.request("PUT", url("kept"), {}), 405),
    ]
    for answer, status in refused:
        assert answer.status == status, answer
        assert set(answer.json()["error"]) == {"class", "message"}, answer
        assert "internal error" not in answer.json()["error"]["message"], answer
    assert client.get(SERVICES).json() == before
    assert client.get("/api/v1/info").status == 200


def test_the_event_stream_filters_by_service(served):
    """GET /api/v1/events?service=NAME&format=json: that service's events only."""
    _, client = served
    since = client.get("/api/v1/events?format=json").json()["last"]
    client.post(SERVICES, {"name": "evented", "command": "sleep 30", "start": True})
    client.post(SERVICES, {"name": "other", "command": "sleep 30", "start": True})
    wait_state(client, "evented", ("RUNNING",))
    wait_state(client, "other", ("RUNNING",))
    events = client.get("/api/v1/events?format=json&since=%d&service=evented" % since).json()
    statuses = [e["status"] for e in events["events"]]
    assert {e["service"] for e in events["events"]} == {"evented"}
    assert "RUNNING" in statuses and {e["kind"] for e in events["events"]} == {"service"}
    for name in ("evented", "other"):
        client.request("DELETE", url(name))
