"""End to end: the REST API of a real jq-masterd (--http on loopback), checked against
openapi.json: submissions, pages and filters, a job's detail and log, actions, nodes, the
event stream and metrics."""

import base64
import json
import socket
import time

import pytest
from daemon_helpers import Receiver, daemon_factory
from http_helpers import check_schema, start_http_daemon
from prometheus_client.parser import text_string_to_metric_families

JOBS = "/api/v1/jobs"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One daemon (2 workers, 2 command slots) for the module; (daemon, client)."""
    factory = daemon_factory(tmp_path_factory.mktemp("api"))
    make = next(factory)
    daemon, client = start_http_daemon(make, "--slots", "2", "--tags", "LINUX")
    yield daemon, client
    client.close()
    next(factory, None)


def submit(client, body, status=201):
    answer = client.post(JOBS, body)
    assert answer.status == status, answer
    return check_schema(answer, JOBS, "POST").json()


def test_a_command_job_runs_and_its_detail_and_log_match_the_document(served):
    """POST a command job: 201 {"id"}; its detail and log are as documented."""
    _, client = served
    job_id = submit(client, {"cmd": "echo hello from http", "title": "greeting",
                             "owner": "alice"})["id"]
    job = client.wait_job(job_id)
    detail = check_schema(client.get("%s/%d" % (JOBS, job_id)), JOBS + "/{id}", "GET").json()
    assert detail["status"] == "success" and detail["title"] == "greeting"
    assert detail["owner"] == "alice" and detail["exit_status"] == 0 and detail["node"]
    assert job["started"] >= job["received"] and job["ended"] >= job["started"]
    log = check_schema(client.get("%s/%d/log" % (JOBS, job_id)), JOBS + "/{id}/log",
                       "GET").json()
    assert "\nhello from http\n" in log["data"] and log["eof"]
    tail = client.get("%s/%d/log?offset=%d" % (JOBS, job_id, log["offset"] - 10)).json()
    assert tail["data"] == log["data"][-10:]


def test_a_log_of_bytes_that_are_not_text_comes_exactly_in_base64(served):
    """encoding=base64: the log's bytes exactly (text replaces invalid UTF-8); another
    encoding is the caller's error, 400."""
    _, client = served
    job_id = submit(client, {"cmd": "printf 'bin \\377\\000\\n'"})["id"]
    client.wait_job(job_id)
    path = "%s/%d/log" % (JOBS, job_id)
    exact = check_schema(client.get(path + "?encoding=base64"), JOBS + "/{id}/log",
                         "GET").json()
    assert b"\nbin \xff\x00\n* EXIT : 0\n" in base64.b64decode(exact["data"])
    assert "\nbin \ufffd\x00\n" in client.get(path + "?encoding=text").json()["data"]
    waited = client.get(path + "?encoding=base64&wait=5&offset=%d" % (exact["offset"] - 4))
    assert base64.b64decode(waited.json()["data"]) == b"***\n"
    refused = client.get(path + "?encoding=hex")
    assert refused.status == 400 and "encoding" in refused.json()["error"]["message"]


def test_opcode_jobs_page_by_id_and_filter_by_status_and_owner(served):
    """GET /jobs pages with limit/after (next cursor), filters status and owner."""
    _, client = served
    ids = [submit(client, {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}],
                           "owner": "pager"})["id"] for _ in range(12)]
    for job_id in ids:
        client.wait_job(job_id)
    seen, after = [], ids[0] - 1
    while True:
        answer = check_schema(client.get("%s?owner=pager&limit=5&after=%d" % (JOBS, after)),
                              JOBS, "GET").json()
        seen += [job["id"] for job in answer["jobs"]]
        if answer["next"] is None:
            break
        after = answer["next"]
    assert seen == ids
    newest = client.get("%s?owner=pager&before=%d&limit=3" % (JOBS, ids[-1] + 1)).json()
    assert [j["id"] for j in newest["jobs"]] == ids[-1:-4:-1] and newest["order"] == "desc"
    success = client.get("%s?owner=pager&status=success,error&limit=1000" % JOBS).json()
    assert [j["id"] for j in success["jobs"]] == ids
    assert client.get("%s?owner=pager&status=queued" % JOBS).json()["jobs"] == []
    since = client.get("%s/%d" % (JOBS, ids[5])).json()["received"]
    recent = client.get("%s?owner=pager&since=%r" % (JOBS, since)).json()
    assert [j["id"] for j in recent["jobs"]] == ids[5:]


def test_actions_cancel_priority_signal_hold_release_retry_archive(served):
    """cancel, priority, signal, retry, hold, release and DELETE (archive) answer as
    documented."""
    _, client = served
    sleeper = submit(client, {"cmd": ["sleep", "60"], "kill_grace": 1})["id"]
    queued = submit(client, {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 30}]})["id"]
    client.wait_job(sleeper, ("running",))
    path = JOBS + "/{id}/"
    answer = client.post("%s/%d/priority" % (JOBS, queued), {"priority": -5})
    assert check_schema(answer, path + "priority", "POST").json()["ok"]
    assert client.get("%s/%d" % (JOBS, queued)).json()["priority"] in (-5, 0)
    assert client.post("%s/%d/priority" % (JOBS, queued), {"priority": 99}).status == 400
    answer = client.post("%s/%d/signal" % (JOBS, sleeper), {"signal": "TERM"})
    assert check_schema(answer, path + "signal", "POST").status == 200
    assert client.wait_job(sleeper)["status"] == "error"
    answer = client.post("%s/%d/cancel" % (JOBS, queued), {})
    assert check_schema(answer, path + "cancel", "POST").status == 200
    assert client.wait_job(queued)["status"] == "canceled"
    again = client.post("%s/%d/cancel" % (JOBS, queued))
    assert check_schema(again, path + "cancel", "POST").status == 409
    missing = client.post("%s/99999/cancel" % JOBS)
    assert check_schema(missing, path + "cancel", "POST").status == 404
    for action in ("hold", "retry"):  # a canceled job: neither can be
        answer = client.post("%s/%d/%s" % (JOBS, queued, action))
        assert check_schema(answer, path + action, "POST").status == 409
    answer = client.post("%s/%d/retry" % (JOBS, sleeper))  # it failed: one more attempt
    assert check_schema(answer, path + "retry", "POST").json()["ok"]
    client.wait_job(sleeper, ("running",))
    answer = client.post("%s/%d/hold" % (JOBS, sleeper))  # stops it, queued and held
    assert check_schema(answer, path + "hold", "POST").json()["ok"]
    assert client.get("%s/%d" % (JOBS, sleeper)).json()["held"] is True
    answer = client.post("%s/%d/release" % (JOBS, sleeper))
    assert check_schema(answer, path + "release", "POST").json()["ok"]
    assert client.post("%s/%d/cancel" % (JOBS, sleeper), {"kill": True}).status == 200
    assert client.wait_job(sleeper)["status"] == "canceled"  # (it would outlive the daemon)
    deleted = client.request("DELETE", "%s/%d" % (JOBS, queued))
    assert check_schema(deleted, JOBS + "/{id}", "DELETE").json() == {"id": queued,
                                                                       "archived": True}
    assert client.get("%s/%d" % (JOBS, queued)).json()["archived"] is True
    listed = client.get("%s?after=%d" % (JOBS, queued - 1)).json()["jobs"]
    assert queued not in [job["id"] for job in listed]
    running = submit(client, {"cmd": "sleep 30"})["id"]
    client.wait_job(running, ("running",))
    refused = client.request("DELETE", "%s/%d" % (JOBS, running))
    assert check_schema(refused, JOBS + "/{id}", "DELETE").status == 409
    assert client.post("%s/%d/cancel" % (JOBS, running), {"kill": True}).status == 200
    assert client.wait_job(running)["status"] == "canceled"


def test_list_items_carry_a_groups_counts_and_holds(served):
    """GET /jobs items say which job is a group (children: its jobs by status, null for
    the others) and which is held, as the document's Job says; a group's page (parent=)
    lists its jobs, and its detail has the same counts."""
    _, client = served
    group = submit(client, {"ops": [{"OP_ID": "OP_GROUP", "title": "api-counts"}]})["id"]
    ok = submit(client, {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}],
                         "parent": group})["id"]
    bad = submit(client, {"cmd": "exit 3", "parent": "api-counts"})["id"]  # by its title
    stuck = submit(client, {"cmd": "true", "affinity": ["NOWHERE"], "parent": group})["id"]
    plain = submit(client, {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]})["id"]
    assert client.wait_job(ok)["status"] == "success"
    assert client.wait_job(bad)["status"] == "error"
    client.wait_job(plain)
    assert client.post("%s/%d/hold" % (JOBS, stuck)).json()["ok"]
    try:
        root = check_schema(client.get("%s?after=%d&limit=1000" % (JOBS, group - 1)),
                            JOBS, "GET").json()["jobs"]
        by_id = {job["id"]: job for job in root}
        assert by_id[group]["children"] == {"success": 1, "error": 1, "queued": 1}
        assert by_id[group]["held"] is False and by_id[group]["title"] == "api-counts"
        assert by_id[group]["status"] == "error"  # a job failed: shown as error
        for status, listed in (("error", [group, bad]), ("queued", [stuck])):  # as shown
            page = client.get("%s?status=%s&after=%d" % (JOBS, status, group - 1)).json()
            assert [job["id"] for job in page["jobs"]] == listed, (status, page)
        assert by_id[plain]["children"] is None and by_id[plain]["held"] is False
        assert by_id[stuck]["children"] is None and by_id[stuck]["held"] is True
        inside = check_schema(client.get("%s?parent=%d" % (JOBS, group)), JOBS,
                              "GET").json()["jobs"]
        assert [job["id"] for job in inside] == [ok, bad, stuck]
        assert [job["held"] for job in inside] == [False, False, True]
        assert all(job["parent"] == group and job["children"] is None for job in inside)
        top = client.get("%s?parent=root&after=%d" % (JOBS, group - 1)).json()["jobs"]
        assert [job["id"] for job in top] == [group, plain]
        detail = check_schema(client.get("%s/%d" % (JOBS, group)), JOBS + "/{id}",
                              "GET").json()
        assert detail["children"] == by_id[group]["children"] and detail["held"] is False
        empty = submit(client, {"ops": [{"OP_ID": "OP_GROUP", "title": "api-empty"}]})["id"]
        item = check_schema(client.get("%s?after=%d&limit=1" % (JOBS, empty - 1)), JOBS,
                            "GET").json()["jobs"][0]
        assert item["id"] == empty and item["children"] == {}
    finally:
        client.post("%s/%d/cancel" % (JOBS, stuck))
    assert client.wait_job(stuck)["status"] == "canceled"
    after = client.get("%s?after=%d&limit=1" % (JOBS, group - 1)).json()["jobs"][0]
    assert after["children"] == {"success": 1, "error": 1, "canceled": 1}


def test_nodes_info_and_metrics(served):
    """GET /nodes lists this machine with its tags and slots; /metrics is Prometheus text
    with the documented families."""
    _, client = served
    client.wait_job(submit(client, {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]})["id"])
    nodes = check_schema(client.get("/api/v1/nodes"), "/api/v1/nodes", "GET").json()["nodes"]
    assert len(nodes) == 1 and nodes[0]["tags"] == ["LINUX"] and nodes[0]["slots"] == 2
    assert nodes[0]["reachable"] is True
    info = check_schema(client.get("/api/v1/info"), "/api/v1/info", "GET").json()
    assert info["authenticated"] is False and sum(info["counts"].values()) >= 1
    answer = client.get("/metrics")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    for name in ("jqueue_jobs", "jqueue_jobs_submitted", "jqueue_ack_latency_seconds",
                 "jqueue_journal_syncs", "jqueue_journal_records",
                 "jqueue_journal_records_per_sync", "jqueue_waiters",
                 "jqueue_replication_lag_batches", "jqueue_node_running_commands",
                 "jqueue_node_reachable"):
        assert name in families, name
    reach = {s.labels["node"]: s.value for s in families["jqueue_node_reachable"].samples}
    assert reach == {nodes[0]["name"]: 1.0}
    memory = {name: {s.labels["node"]: s.value for s in families[name].samples}
              for name in ("jqueue_node_memory_total_bytes",
                           "jqueue_node_memory_available_bytes", "jqueue_node_load1")}
    total, available, load = (family[nodes[0]["name"]] for family in memory.values())
    assert 0 < available < total and load >= 0
    count = [s.value for s in families["jqueue_ack_latency_seconds"].samples
             if s.name.endswith("_count")][0]
    assert count > 0


def test_retention_is_in_the_metrics(served):
    """A purge's jobs and bytes show in the jqueue_retention_* counters."""
    daemon, client = served
    job_id = submit(client, {"cmd": "echo to be purged"})["id"]
    client.wait_job(job_id)
    assert client.request("DELETE", "%s/%d" % (JOBS, job_id)).status == 200

    def counters():
        families = text_string_to_metric_families(client.get("/metrics").text)
        return {s.name: s.value for f in families for s in f.samples
                if s.name.startswith("jqueue_retention_")}
    before = counters()
    assert set(before) == {"jqueue_retention_passes_total", "jqueue_retention_archived_total",
                           "jqueue_retention_purged_total",
                           "jqueue_retention_freed_bytes_total"}
    with daemon.client() as luxi:
        answer = luxi.purge_jobs(0, 10)
    assert answer["purged"] >= 1 and answer["bytes_freed"] > 0
    after = counters()
    assert after["jqueue_retention_purged_total"] - before["jqueue_retention_purged_total"] \
        == answer["purged"]
    assert after["jqueue_retention_freed_bytes_total"] - before[
        "jqueue_retention_freed_bytes_total"] == answer["bytes_freed"]
    assert client.get("%s/%d" % (JOBS, job_id)).status == 404


def read_events(sock, want, timeout=20):
    """Read SSE frames from sock until want(events) is true; [(id, data)]."""
    sock.settimeout(timeout)
    buffer, events = b"", []
    deadline = time.monotonic() + timeout
    while not want(events):
        assert time.monotonic() < deadline, events
        data = sock.recv(65536)
        assert data, "stream closed"
        buffer += data
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(b": ", 1) for line in frame.split(b"\n")
                          if b": " in line and not line.startswith(b":"))
            if b"data" in fields:
                events.append((fields.get(b"id"), json.loads(fields[b"data"]),
                               fields.get(b"event")))
    return events


def open_stream(port, query, headers=""):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(("GET /api/v1/events?%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (
        query, headers)).encode())
    return sock


def test_event_stream_delivers_a_jobs_transitions_and_resumes_without_gaps(served):
    """SSE from the current serial: NEW, RUN and DONE of a job in order; reconnecting
    with Last-Event-ID gives what followed, nothing twice."""
    _, client = served
    last = client.get("/api/v1/events?format=json&since=0").json()["last"]
    sock = open_stream(client.port, "since=%d" % last)
    job_id = submit(client, {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0.2}]})["id"]
    events = read_events(sock, lambda e: any(ev["job"] == job_id and ev["status"] == "DONE"
                                             for _, ev, _ in e))
    sock.close()
    mine = [ev["status"] for _, ev, _ in events if ev["job"] == job_id]
    assert mine[0] == "NEW" and mine[-1] == "DONE" and "RUN" in mine
    serials = [int(i) for i, _, _ in events]
    assert serials == sorted(set(serials))
    middle = serials[len(serials) // 2]
    sock = open_stream(client.port, "job=%d" % job_id, "Last-Event-ID: %d\r\n" % middle)
    rest = read_events(sock, lambda e: any(ev["status"] == "DONE" for _, ev, _ in e))
    sock.close()
    assert [int(i) for i, _, _ in rest] == [s for s in serials if s > middle and
                                             events[serials.index(s)][1]["job"] == job_id]
    answer = client.get("/api/v1/events?format=json&since=%d&job=%d" % (last, job_id))
    check_schema(answer, "/api/v1/events", "GET")


def test_openapi_document_is_served_and_names_every_route(served):
    """/api/v1/openapi.json is the document the tests check against; each API route of the
    server is in it."""
    from jqueue.http import api
    _, client = served
    document = client.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item}
    for route in api.routes():
        template = route.pattern.pattern[2:-2].replace("([^/]+)", "{id}")
        if "(cancel|" in template:
            for action in ("cancel", "signal", "priority", "retry", "hold", "release"):
                assert (template.split("/(")[0] + "/" + action, route.method) in documented
        else:
            assert (template, route.method) in documented, template


def test_reset_and_a_start_time_at_submit(served):
    """POST .../reset runs a finished job again from its first attempt; start_in and
    not_before at submit keep a job queued until then (its detail says when)."""
    _, client = served
    job_id = submit(client, {"cmd": "exit 3", "max_attempts": 1})["id"]
    assert client.wait_job(job_id)["status"] == "error"
    answer = client.post("%s/%d/reset" % (JOBS, job_id))
    assert check_schema(answer, JOBS + "/{id}/reset", "POST").json()["ok"]
    again = client.wait_job(job_id)
    assert again["status"] == "error" and again["attempt"] == 1
    assert client.post("%s/99999/reset" % JOBS).status == 404
    before = time.time()
    later = submit(client, {"cmd": "true", "start_in": 3600})["id"]
    at = time.time() + 7200
    fixed = submit(client, {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}],
                            "not_before": at})["id"]
    soon = submit(client, {"cmd": "true", "start_in": 0.5})["id"]
    assert client.wait_job(soon)["status"] == "success"
    for job_id, low, high in ((later, before + 3600, time.time() + 3600), (fixed, at, at)):
        detail = client.get("%s/%d" % (JOBS, job_id)).json()
        assert detail["status"] == "queued" and low <= detail["not_before"] <= high + 1
        client.post("%s/%d/cancel" % (JOBS, job_id))
    for bad in ({"cmd": "true", "start_in": -1}, {"cmd": "true", "not_before": "soon"},
                {"cmd": "true", "start_in": 5, "not_before": at}):
        answer = client.post(JOBS, bad)
        assert answer.status == 400, (bad, answer)


def test_a_job_posted_with_notify_has_its_end_posted_there(served):
    """POST a command job with notify: its end reaches the webhook, once, and its detail
    says how that went (notify, notified)."""
    _, client = served
    receiver = Receiver()
    try:
        job_id = submit(client, {"cmd": "true", "notify": {"url": receiver.url("/done"),
                                                           "on": ["success"]}})["id"]
        [(path, body, _)] = receiver.wait(1)
        assert (path, body["job"], body["status"]) == ("/done", job_id, "success")
        deadline = time.monotonic() + 10
        while not client.get("%s/%d" % (JOBS, job_id)).json()["notified"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        detail = check_schema(client.get("%s/%d" % (JOBS, job_id)), JOBS + "/{id}",
                              "GET").json()
        assert detail["notify"] == {"url": receiver.url("/done"), "on": ["success"]}
        assert (detail["notified"]["delivered"], detail["notified"]["status"]) == (True, 204)
        answer = client.post(JOBS, {"cmd": "true", "notify": "gopher://h"})
        assert answer.status == 400 and "notify's url" in answer.json()["error"]["message"]
    finally:
        receiver.close()
