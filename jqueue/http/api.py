"""The REST API, ``/api/v1``: jobs, their logs and actions, nodes, the event stream.

Every operation goes through the LUXI method table (jqueue.luxi.methods): the same
argument checks and the same backend calls as jqctl's, so the two never disagree.
Submissions are recorded in the reactor thread and answered once durable (201 and
``{"id": n}``); listings are pages from the queue's index (JobQueue.list_jobs).
openapi.json describes each endpoint; the tests check the answers against it.
"""

import logging
import os
import re
import time

from twisted.internet import defer, task

from jqueue import constants, errors, ptypes, serializer
from jqueue.http import jobs
from jqueue.http.server import (
    HttpError,
    Response,
    Route,
    Streaming,
    json_response,
)
from jqueue.luxi import methods

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
OPENAPI_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")
#: Most jobs on one page.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
#: Submissions with more opcodes than this are validated in the pool, not the reactor.
INLINE_SUBMIT_OPCODES = 64
#: Seconds between two keep-alive comments of an event stream.
KEEPALIVE = 15.0
#: Keys of a job submission besides a command's parameters or the opcodes.
_META_KEYS = ("token", "owner", "parent", "not_before", "start_in", "notify")
_FILTER_KEYS = ("status", "node", "owner", "parent")
_ID = r"([^/]+)"


def routes():
    """The API's routes (see jqueue.http.server.Route)."""
    p = PREFIX
    return [
        Route("POST", p + "/jobs", post_jobs, mutating=True),
        Route("GET", p + "/jobs", get_jobs),
        Route("GET", p + "/jobs/" + _ID, get_job),
        Route("DELETE", p + "/jobs/" + _ID, delete_job, mutating=True),
        Route("GET", p + "/jobs/" + _ID + "/log", get_log),
        Route("POST", p + "/jobs/" + _ID + "/(cancel|signal|priority|retry|reset|hold|release)",
              post_action, mutating=True),
        Route("GET", p + "/nodes", get_nodes),
        Route("GET", p + "/events", get_events),
        Route("GET", p + "/info", get_info),
        Route("GET", p + "/openapi.json", get_openapi),
    ]


# Helpers

def job_id_of(text):
    try:
        return ptypes.parse_job_id(text)
    except ValueError as err:
        raise HttpError(400, "ParameterError", "invalid job id: %s" % err) from None


def luxi(call, method, args):
    """Check a LUXI request as LUXI would and run it in the pool; a Deferred."""
    spec, checked = methods.check_request(method, args)
    return call.blocking(call.site.context["dispatcher"].run, spec, checked)


def int_arg(call, name, default, low, high):
    text = call.arg(name)
    if text is None or text == "":
        return default
    try:
        value = ptypes.parse_int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise HttpError(400, "ParameterError", "%s must be an integer from %d to %d, got %s"
                        % (name, low, high, ptypes._short(text)))
    return value


def number_arg(call, name):
    text = call.arg(name)
    if text is None or text == "":
        return None
    try:
        return ptypes.parse_number(text)
    except ValueError:
        pass
    try:
        from datetime import datetime
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HttpError(400, "ParameterError", "%s must be epoch seconds or an ISO 8601 "
                        "time, got %s" % (name, ptypes._short(text))) from None
    return moment.timestamp()


def list_arg(call, name):
    values = [word.strip() for value in call.args.get(name, ()) for word in value.split(",")]
    values = [word for word in values if word]
    return values or None


def body_object(call, required=True):
    body = call.json_body()
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise HttpError(400, "ParameterError", "the body must be a JSON object")
    return body


# Jobs

def job_spec(body):
    """(opcodes, token, owner, parent) of a submission's JSON object (its start time:
    start_options)."""
    if not isinstance(body, dict):
        raise HttpError(400, "ParameterError", "the body must be a JSON object: "
                        '{"ops": [opcodes...]} or a command job\'s parameters ({"cmd": ...})')
    meta = {key: body.get(key) for key in _META_KEYS}
    for key in ("token", "owner"):
        if meta[key] is not None and not isinstance(meta[key], str):
            raise HttpError(400, "ParameterError", "%s must be a string" % key)
    if "ops" in body:
        extra = sorted(set(body) - set(_META_KEYS) - {"ops"})
        if extra:
            raise HttpError(400, "ParameterError", "unknown key(s) beside ops: %s" %
                            ", ".join(extra))
        ops = body["ops"]
        if not isinstance(ops, list) or not ops or not all(isinstance(o, dict) for o in ops):
            raise HttpError(400, "ParameterError", "ops must be a non-empty list of opcodes "
                            "(objects with OP_ID)")
    elif "cmd" in body:
        params = {key: value for key, value in body.items() if key not in _META_KEYS}
        if "OP_ID" in params:
            raise HttpError(400, "ParameterError", "a command job's parameters take no OP_ID")
        ops = [dict(params, OP_ID=constants.OP_COMMAND_RUN)]
    else:
        raise HttpError(400, "ParameterError", 'a job is {"ops": [opcodes...]} or a command '
                        'job\'s parameters ({"cmd": ...})')
    return ops, meta["token"], meta["owner"], meta["parent"]


def start_options(body):
    """The start time and webhook a submission's JSON object gives: {"not_before": epoch
    seconds} or {"start_in": seconds}, {"notify": a URL or {"url" or "to", "on", "after"}}
    (checked by the queue, as jqctl submit's --not-before, --in, --notify)."""
    return {key: body[key] for key in ("not_before", "start_in", "notify")
            if isinstance(body, dict) and body.get(key) is not None}


def check_parent(parent):
    """The group a job joins: None for the root (0 or nothing), else the reference (a
    job id, a group title or a path of titles) the queue resolves at submit."""
    if parent in (None, 0, "0", ""):
        return None
    if isinstance(parent, bool) or not isinstance(parent, (int, str)):
        raise HttpError(400, "ParameterError", "parent must be a job id, a group title or a "
                        "path of titles (a|b)")
    return parent


def submit(call, ops, token=None, owner=None, parent=None, start=None):
    """Record a job now (in the pool if it is big); a Deferred firing with its id once
    it is acknowledged, or with the error. start: start_options' answer."""
    backend = call.backend
    if not call.site.accepting:
        raise errors.JobQueueError("daemon is shutting down")
    kwargs = {key: value for key, value in (("token", token), ("owner", owner))
              if value is not None}
    options = dict(start or {})
    if parent is not None:
        options["parent"] = parent
    if options:
        kwargs["options"] = options
    if len(ops) > INLINE_SUBMIT_OPCODES:
        recorded = call.blocking(backend.submit_job_nowait, ops, **kwargs)
    else:
        recorded = defer.succeed(backend.submit_job_nowait(ops, **kwargs))
    return recorded.addCallback(lambda done: acknowledged(call, *done))


def acknowledged(call, job_id, batch):
    """A Deferred of job_id once batch is done (its error otherwise, or the acknowledgement
    timeout's)."""
    if batch is None:
        return defer.succeed(job_id)
    site = call.site
    result = defer.Deferred()
    timer = None

    def done(finished):  # the journal's thread
        site.deliver(fire, finished)

    def fire(finished):
        if timer is not None and timer.active():
            timer.cancel()
        if result.called:
            return
        if finished.error is not None:
            result.errback(_fate(finished.error, job_id))
        else:
            result.callback(job_id)

    def timed_out():
        if not result.called:
            error = batch.ticket.timeout_error() if batch.ticket is not None else (
                errors.JobQueueError("submission not durable within the timeout"))
            result.errback(_fate(error, job_id))

    timeout = call.backend.ack_timeout
    if timeout is not None:
        timer = site.reactor.callLater(timeout, timed_out)
    batch.add_done_callback(done)
    return result


def _fate(error, job_id):
    if isinstance(error, errors.ReplicationError) and not isinstance(
            error, errors.SubmissionNotAcknowledged):
        return errors.not_acknowledged([job_id], error)
    return error


def post_jobs(call):
    body = call.json_body()
    ops, token, owner, parent = job_spec(body)
    created = submit(call, ops, token, call.owner(owner), check_parent(parent),
                     start_options(body))
    return created.addCallback(lambda job_id: json_response(
        {"id": job_id}, 201, {b"Location": ("%s/jobs/%d" % (PREFIX, job_id)).encode()}))


def get_jobs(call):
    limit = int_arg(call, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after = int_arg(call, "after", None, 0, 2 ** 63 - 1)
    before = int_arg(call, "before", None, 0, 2 ** 63 - 1)
    if after is not None and before is not None:
        raise HttpError(400, "ParameterError", "give after or before, not both")
    filters = {}
    for key in _FILTER_KEYS:
        words = list_arg(call, key)
        if words is not None:
            filters[key] = words
    if "status" in filters:
        unknown = sorted(set(filters["status"]) - set(constants.JOB_STATUS_ALL))
        if unknown:
            raise HttpError(400, "ParameterError", "unknown status %s (statuses: %s)" % (
                ", ".join(unknown), ", ".join(sorted(constants.JOB_STATUS_ALL))))
    if "parent" in filters:
        parents = [_parent_value(word) for word in filters["parent"]]
        filters["parent"] = parents
    since, until = number_arg(call, "since"), number_arg(call, "until")
    page = call.backend.list_jobs(jobs.LIST_FIELDS, limit=limit, after=after, before=before,
                                  filters=filters, since=since, until=until)
    items = [jobs.job_object(jobs.LIST_FIELDS, row) for row in page["rows"]]
    cursor = None
    if page["more"] and items:
        cursor = items[-1]["id"]
    answer = {"jobs": items, "next": cursor, "order": "desc" if before is not None else "asc"}
    return json_response(answer)


def _parent_value(word):
    if word == "root":
        return 0
    return job_id_of(word)


def get_job(call, job_text):
    job_id = job_id_of(job_text)

    def found(rows):
        if not rows or rows[0] is None:
            raise errors.JobLost("job %d not found" % job_id)
        return json_response(jobs.job_object(jobs.DETAIL_FIELDS, rows[0]))
    return luxi(call, constants.LUXI_REQ_QUERY_JOBS, [[job_id], jobs.DETAIL_FIELDS]).addCallback(
        found)


def delete_job(call, job_text):
    """Archive a finished job (the queue keeps it in its archive, found by id)."""
    job_id = job_id_of(job_text)
    backend = call.backend

    def archive():
        row = backend.query_jobs([job_id], ["status", "archived"])[0]
        if row is None:
            raise errors.JobLost("job %d not found" % job_id)
        status, archived = row
        if archived:
            return {"id": job_id, "archived": True}
        if status not in constants.JOBS_FINALIZED:
            raise HttpError(409, "JobNotFinished", "job %d is %s: cancel it first, only "
                            "finished jobs are archived" % (job_id, status))
        if not backend.archive_job(job_id):
            raise HttpError(409, "JobNotFinished", "job %d cannot be archived now" % job_id)
        return {"id": job_id, "archived": True}
    return call.blocking(archive).addCallback(json_response)


def get_log(call, job_text):
    return read_log(call, constants.LUXI_REQ_READ_JOB_LOG, job_id_of(job_text),
                    "read_job_log", "log")


def read_log(call, method, key, read, kind):
    """GET .../log: method's answer (ReadJobLog, ReadServiceLog) for key from the query's
    offset, max_bytes and encoding (text or base64); with wait, a long poll through the
    dispatcher's watch_<kind>, else its read (a method name) in the pool."""
    offset = int_arg(call, "offset", 0, 0, 2 ** 62)
    max_bytes = int_arg(call, "max_bytes", 65536, 1, constants.LUXI_MAX_LOG_READ)
    wait = number_arg(call, "wait") or 0
    if wait < 0:
        raise HttpError(400, "ParameterError", "wait must be >= 0")
    wait = min(wait, call.site.limits.max_wait)
    encoding = call.arg("encoding")
    spec, args = methods.check_request(method, [key, offset, max_bytes, wait] + (
        [encoding] if encoding else []))
    dispatcher = call.site.context["dispatcher"]
    if not wait:
        return call.blocking(getattr(dispatcher, read), *args).addCallback(json_response)
    return _watch(call, dispatcher, kind, args, wait).addCallback(json_response)


def _watch(call, dispatcher, kind, args, timeout):
    """A long poll through the dispatcher's watch_<kind> (no thread waits); a Deferred of
    its answer (nochange_<kind> after timeout)."""
    site = call.site
    result = defer.Deferred()
    state = {"timer": None, "handle": None}

    def answered(value):  # any thread
        site.deliver(fire, value)

    def fire(value):
        if result.called:
            return
        timer = state["timer"]
        if timer is not None and timer.active():
            timer.cancel()
        try:
            result.callback(getattr(dispatcher, "answer_" + kind)(value))
        except Exception as err:  # noqa: BLE001 - answered as an error
            result.errback(err)

    def timed_out():
        if not result.called:
            handle = state["handle"]
            if handle is not None:
                handle.cancel()
            result.callback(getattr(dispatcher, "nochange_" + kind)(args))

    state["handle"] = getattr(dispatcher, "watch_" + kind)(args, answered)
    if state["handle"] is not None:
        state["timer"] = site.reactor.callLater(timeout, timed_out)

    def gone(_):
        if not result.called:
            timed_out()
    call.request.notifyFinish().addErrback(gone)
    return result


# Actions

_ACTIONS = {"hold": constants.LUXI_REQ_HOLD_JOB, "release": constants.LUXI_REQ_RELEASE_JOB,
            "retry": constants.LUXI_REQ_RETRY_JOB, "reset": constants.LUXI_REQ_RESET_JOB}


def post_action(call, job_text, action):
    job_id = job_id_of(job_text)
    body = body_object(call, required=False)
    if action == "cancel":
        kill = body.get("kill", False)
        only_keys(body, ("kill",))
        done = luxi(call, constants.LUXI_REQ_CANCEL_JOB, [job_id, kill])
    elif action == "signal":
        only_keys(body, ("signal",))
        if "signal" not in body:
            raise HttpError(400, "ParameterError", 'give {"signal": NAME or number}')
        done = luxi(call, constants.LUXI_REQ_SIGNAL_JOB, [job_id, body["signal"]])
    elif action == "priority":
        only_keys(body, ("priority",))
        if "priority" not in body:
            raise HttpError(400, "ParameterError", 'give {"priority": -20..19}')
        done = luxi(call, constants.LUXI_REQ_CHANGE_JOB_PRIORITY, [job_id, body["priority"]])
    else:
        only_keys(body, ())
        done = luxi(call, _ACTIONS[action], [job_id])
    return done.addCallback(lambda answer: _action_answer(job_id, action, answer))


def only_keys(body, keys):
    extra = sorted(set(body) - set(keys))
    if extra:
        raise HttpError(400, "ParameterError", "unknown key(s): %s" % ", ".join(extra))


def _action_answer(job_id, action, answer):
    ok, message = answer
    if ok:
        return json_response({"id": job_id, "ok": True, "message": message})
    if re.search(r"\bnot found\b", message):
        raise errors.JobLost(message)
    raise HttpError(409, "ActionRefused", message)


# Nodes, events, info

def get_nodes(call):
    return node_rows(call).addCallback(
        lambda rows: json_response({"nodes": [node_object(row) for row in rows]}))


def node_rows(call):
    """A Deferred of the nodes' rows, as node_status names what command jobs see of each
    (reachable, last_heard, used, queued, running, ...); on a cluster's master the rows
    of ListNodes over them (the reachability and last error are then the node RPC's)."""
    cluster = call.site.context.get("cluster")
    commands = call.backend.commands
    status = commands.node_status() if commands is not None else {}
    if cluster is None:
        return defer.succeed([dict(row, name=name) for name, row in sorted(status.items())])
    return call.blocking(cluster.list_nodes).addCallback(
        lambda rows: [dict(status.get(row["name"]) or {}, **row) for row in rows])


def node_machine(row):
    """{load, cpus, mem_total, mem_available, mem_reserved} of one of node_rows (None: not known, or
    the node does not answer): ListNodes' on a cluster's master, else the runner's (each
    leaves out the reading of a node that does not answer)."""
    machine = row if "mem_total" in row else row.get("resources") or {}
    return {key: machine.get(key) for key in constants.NODE_RESOURCES}


def node_object(row):
    """A node of the API from one of node_rows."""
    return {**node_machine(row), "name": row.get("name"), "address": row.get("address"),
            "role": row.get("role") or "master", "reachable": bool(row.get("reachable", True)),
            "tags": list(row.get("tags") or []), "slots": row.get("slots"),
            "used": row.get("used", 0), "queued": row.get("queued", 0),
            "running": list(row.get("running") or []), "drained": bool(row.get("drained")),
            "offline": bool(row.get("offline")), "degraded": row.get("degraded"),
            "mem_held": row.get("mem_held"), "last_heard": row.get("last_heard"),
            "clock_skew": row.get("clock_skew"), "last_error": row.get("last_error")}


def get_info(call):
    backend = call.site.backend
    values = call.site.context.get("config_values") or {}
    return json_response({
        "version": _value(values.get("version")),
        "cluster_name": _value(values.get(constants.CONFIG_CLUSTER_NAME)),
        "master_node": _value(values.get(constants.CONFIG_MASTER_NODE)),
        "drained": backend.drain_flag, "counts": backend.count_jobs("status"),
        "authenticated": call.authenticated, "name": call.name})


def _value(value):
    return value() if callable(value) else value


_OPENAPI = None


def get_openapi(call):
    global _OPENAPI
    if _OPENAPI is None:
        with open(OPENAPI_PATH, "rb") as stream:
            _OPENAPI = stream.read()
    return Response(200, _OPENAPI)


def get_events(call):
    """The event stream (Server-Sent Events) from since (or Last-Event-ID); format=json
    answers once, with what the ring holds after since."""
    last_id = call.request.getHeader(b"last-event-id")
    since = int_arg(call, "since", None, 0, 2 ** 63 - 1)
    if since is None and last_id is not None:
        try:
            since = ptypes.parse_int(last_id.decode("ascii", "replace"))
        except ValueError:
            raise HttpError(400, "ParameterError",
                            "Last-Event-ID must be an event serial") from None
    flt = {}
    job = call.arg("job")
    if job:
        flt["job"] = job_id_of(job)
    for key in ("node", "service"):
        if call.arg(key):
            flt[key] = call.arg(key)
    for key in ("kind", "status"):
        words = list_arg(call, key)
        if words:
            flt[key] = words
    backend = call.backend
    if since is None:  # from now on
        since = backend.read_events(2 ** 63 - 1, None, 0)["last"]
    if call.arg("format") == "json":
        return json_response(backend.read_events(since, flt or None))
    return EventStream(call.site, since, flt or None)


class EventStream(Streaming):
    """Server-Sent Events from the queue's event stream: ``id: serial`` and ``data:`` the
    event as JSON; ``event: gap`` when the ring no longer holds what followed since (the
    client re-reads state). A comment every KEEPALIVE seconds keeps proxies patient.

    A push producer of its connection: while the client reads slower than events come
    (the connection's send buffer is full) it takes no more events, so that a stalled
    client costs no memory; it goes on from where it was when the buffer drains (with
    ``event: gap`` if the ring no longer holds that far back)."""

    def __init__(self, site, since, flt):
        self._site, self._since, self._filter = site, since, flt
        self._request = None
        self._handle = None
        self._keepalive = None
        self._stopped = False
        self._paused = False

    def start(self, request):
        self._request = request
        request.registerProducer(self, True)
        request.write(b"retry: 2000\n: jqueue events from %d\n\n" % self._since)
        self._keepalive = task.LoopingCall(self._ping)
        self._keepalive.clock = self._site.reactor
        self._keepalive.start(KEEPALIVE, now=False)
        self._watch()

    def _watch(self):
        if self._stopped:
            return
        self._handle = self._site.backend.watch_events(
            self._since, self._filter, lambda answer: self._site.deliver(self._answered,
                                                                         answer))

    def _answered(self, answer):
        if self._stopped:
            return
        self._handle = None
        parts = []
        if answer.get("gap"):
            parts.append(b"event: gap\ndata: %s\n\n" % serializer.dumps_answer(
                {"since": self._since, "last": answer["last"]}))
        for event in answer["events"]:
            parts.append(b"id: %d\ndata: %s\n\n" % (event["serial"],
                                                    serializer.dumps_answer(event)))
        if parts:
            self._request.write(b"".join(parts))
        self._since = max(self._since, answer["last"])
        if not self._paused:
            self._watch()

    def _ping(self):
        if not self._stopped and not self._paused:
            self._request.write(b": keepalive %d\n\n" % int(time.time()))

    # IPushProducer: the connection's send buffer is full, or drained, or the connection
    # is gone.

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        if self._handle is None and self._request is not None:
            self._watch()

    def stopProducing(self):
        self.stop()

    def stop(self):
        self._stopped = True
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()

    def close(self):
        request = self._request
        if request is not None and not request.finished and not request._disconnected:
            if request.producer is not None:
                request.unregisterProducer()
            request.finish()
