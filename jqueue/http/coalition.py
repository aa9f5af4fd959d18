"""Coalition v3's HTTP API (``/json/*``, ``/xmlrpc/addjob``): its clients work unchanged.

Parameters come as a query string or a POST form (Twisted reads both into request.args);
multi-id calls repeat ``id``. Answers are Coalition's: ``addjob`` the bare decimal id (or
``-1`` with a 4xx on refusal, never an HTML page); ``getjobs`` the Vars/Jobs/Parents
object, with no ``null``, ``true`` or ``false`` anywhere so that Python's ``eval`` reads
it (control.py does); ``getlog`` the log as a JSON string (also a Python literal); the
others ``1`` (pausejobs, startjobs, resetjobs and reseterrorjobs: -1 with a 4xx when an
id is unknown or refused, see control).

How Coalition's attributes map onto a command job (OP_COMMAND_RUN):

    cmd (or command)   cmd, run by /bin/sh -c (empty or absent: a group, see below)
    title              title (default "New job")
    dir                dir; "." or empty: "/"; "$(NAME)" expanded from env; else absolute
    env                env: NAME=value entries separated by the two characters \\n
    parent             the group: a job id, a group title or a path a|b (0: the root),
                       resolved by the queue (a job that is no group is refused)
    priority           priority by order: 1000 (the default) is normal (0); p > 1000 runs
                       first, p < 1000 later: -ceil(log2(|p - 1000| + 1)) signed,
                       clamped to -20..19 (2000: -10, 0: 10)
    dependencies       depends on each id (digits found in the text) ending in success
    timeout            timeout (seconds, 0: none)
    retry              max_attempts = max(retry, 1) (default 10, as Coalition)
    affinity           affinity (comma-separated tags)
    url                url
    user               owner (an authenticated caller's name wins)
    localprogress      progress_pattern ("None" or empty: the default PROGRESS:%percent)
    globalprogress     global_progress_pattern ("None" or empty: none)

A job without a command is Coalition's folder: a group job (OP_GROUP) with the title, the
parent, the priority and the owner; see group_opcode.

States: WAITING queued, PENDING waiting, WORKING running or canceling, FINISHED success,
ERROR error or canceled, PAUSED held (see state_of). A group's is derived from its jobs
(jqueue.groupjob.shown_status: Coalition's order).
"""

import json
import logging
import math
import re
import time

from jqueue import commandjob, constants, errors, groupjob, ptypes
from jqueue.http import api
from jqueue.http.server import HttpError, Response, Route
from jqueue.luxi import methods

logger = logging.getLogger(__name__)

TEXT = b"text/plain; charset=utf-8"
VARS = ["ID", "Title", "Command", "Dir", "State", "Worker", "StartTime", "Duration", "Try",
        "Retry", "TimeOut", "Priority", "Affinity", "User", "Finished", "Errors", "Working",
        "Total", "TotalFinished", "TotalErrors", "TotalWorking", "Dependencies", "URL",
        "LocalProgress", "GlobalProgress"]
WORKER_VARS = ["Name", "IP", "Affinity", "State", "Finished", "Error", "LastJob", "Load",
               "FreeMemory", "TotalMemory", "Active"]
STATES = {constants.JOB_STATUS_QUEUED: "WAITING", constants.JOB_STATUS_WAITING: "PENDING",
          constants.JOB_STATUS_RUNNING: "WORKING", constants.JOB_STATUS_CANCELING: "WORKING",
          constants.JOB_STATUS_SUCCESS: "FINISHED", constants.JOB_STATUS_ERROR: "ERROR",
          constants.JOB_STATUS_CANCELED: "ERROR"}
_FIELDS = ["id", "status", "title", "ops", "node", "start_ts", "end_ts", "attempt",
           "max_attempts", "priority", "owner", "progress", "global_progress", "held",
           "total", "finished", "errors", "working"]
#: Statuses a listing asks the queue for, by filter state: every status a job showing
#: that state may have (the rows are then kept by their State; None: every job). ERROR
#: takes queued too: the queue's index files a group whose jobs failed but not all
#: ended under its recorded status, queued, until every job of it ends. PAUSED: held
#: jobs and groups are in any status.
PREFILTER = {"WAITING": [constants.JOB_STATUS_QUEUED],
             "PENDING": [constants.JOB_STATUS_WAITING],
             "WORKING": [constants.JOB_STATUS_RUNNING, constants.JOB_STATUS_CANCELING],
             "FINISHED": [constants.JOB_STATUS_SUCCESS],
             "ERROR": [constants.JOB_STATUS_ERROR, constants.JOB_STATUS_CANCELED,
                       constants.JOB_STATUS_QUEUED],
             "PAUSED": None}
ROOT = {"ID": 0, "Title": "Root"}
_STATE = VARS.index("State")
_ENV_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
_EXPAND = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
DEFAULT_PRIORITY = 1000
#: Jobs read from the queue at a time for getjobs.
PAGE = 1000
#: Most groups above a job that getjobs' breadcrumb follows (a guard against a loop).
MAX_DEPTH = 1000
#: Most log bytes getlog answers (the end of a longer log).
MAX_LOG = 16 * 1024 * 1024
#: Log bytes read from the queue at a time.
LOG_CHUNK = 1024 * 1024


def routes():
    r = []
    for prefix in ("/json/addjob", "/xmlrpc/addjob"):
        r.append(Route("GET", prefix, addjob, mutating=True, errors="coalition"))
        r.append(Route("POST", prefix, addjob, mutating=True, errors="coalition"))
    for name, handler, mutating in (
            ("getjobs", getjobs, False), ("getlog", getlog, False),
            ("getworkers", getworkers, False), ("clearjobs", clearjobs, True),
            ("resetjobs", resetjobs, True), ("reseterrorjobs", reseterrorjobs, True),
            ("startjobs", startjobs, True), ("pausejobs", pausejobs, True)):
        for method in ("GET", "POST"):
            r.append(Route(method, "/json/" + name, handler, mutating=mutating,
                           errors="coalition"))
    return r


def text(body, status=200):
    return Response(status, body.encode("utf-8") if isinstance(body, str) else body, TEXT)


def literal(value):
    """JSON that is also a Python literal: no null/true/false (the caller sees to it) and
    only ASCII (\\uXXXX escapes read the same in both)."""
    return json.dumps(value, ensure_ascii=True, separators=(", ", ":"))


# addjob

def coalition_priority(value):
    """Our priority for Coalition's (higher first, default 1000), by order."""
    delta = value - DEFAULT_PRIORITY
    if delta == 0:
        return 0
    step = math.ceil(math.log2(abs(delta) + 1))
    ours = -step if delta > 0 else step
    low, high = sorted((ptypes.Priority.low, ptypes.Priority.high))
    return max(low, min(high, ours))


def priority_of(ours):
    """Coalition's priority for ours (the inverse of coalition_priority: the order is kept,
    the value exact for 1000 and for 1000 plus or minus a power of two)."""
    if ours == 0:
        return DEFAULT_PRIORITY
    delta = 2 ** (abs(ours) - 1)
    return DEFAULT_PRIORITY + (delta if ours < 0 else -delta)


def _int(value, name, default):
    if value is None or value == "":
        return default
    try:
        return ptypes.parse_int(value.strip())
    except ValueError:
        raise errors.OpPrereqError("%s must be an integer, got %s" % (
            name, ptypes._short(value))) from None


def parse_env(value):
    """Coalition's env text: NAME=value entries separated by backslash-n (the two
    characters; a real newline too)."""
    env = {}
    if not value:
        return env
    for entry in re.split(r"\\n|\n", value):
        if not entry.strip():
            continue
        name, sep, text_value = entry.partition("=")
        if not sep or not _ENV_NAME.match(name.strip()):
            raise errors.OpPrereqError("env entry %s is not NAME=value" % ptypes._short(entry))
        env[name.strip()] = text_value
    return env


def _dir(value, env):
    if value in (None, "", "."):
        return "/"
    value = _EXPAND.sub(lambda m: env.get(m.group(1), m.group(0)), value).replace("\\", "/")
    if not value.startswith("/"):
        raise errors.OpPrereqError("dir %s is not an absolute path (the node runs the "
                                   "command there)" % ptypes._short(value))
    return value


def _pattern(value):
    return None if value in (None, "", "None") else value


def _dependencies(args):
    deps = [int(d) for d in re.findall(r"\d+", args.get("dependencies") or "")]
    return [[d, [constants.JOB_STATUS_SUCCESS]] for d in deps]


def group_opcode(args):
    """The OP_GROUP opcode of an addjob without a command (Coalition's folder job).

    A group runs nothing: dir, env, timeout, retry, url and the progress patterns are
    ignored. Its priority is mapped as a command's; its affinity is added to the jobs
    submitted into it (Coalition's rule); dependencies are passed on for the queue to
    judge (it refuses them on a group)."""
    op = {"OP_ID": constants.OP_GROUP, "title": args.get("title") or "New job"}
    _set_priority(op, args)
    if args.get("affinity"):
        op["affinity"] = args["affinity"]
    deps = _dependencies(args)
    if deps:
        op["depends"] = deps
    return op


def _set_priority(op, args):
    """The opcode's priority if addjob gave one (else it takes its group's, or normal)."""
    if args.get("priority") not in (None, ""):
        op["priority"] = coalition_priority(_int(args["priority"], "priority",
                                                 DEFAULT_PRIORITY))


def job_opcode(args):
    """The opcode of addjob's arguments ({name: text}): OP_COMMAND_RUN, or OP_GROUP for
    an empty (or absent) command."""
    cmd = args.get("cmd") if args.get("cmd") is not None else args.get("command")
    if cmd is None or cmd == "":
        return group_opcode(args)
    env = parse_env(args.get("env"))
    op = {"OP_ID": constants.OP_COMMAND_RUN, "cmd": cmd,
          "title": args.get("title") or "New job", "dir": _dir(args.get("dir"), env),
          "env": env, "timeout": _int(args.get("timeout"), "timeout", 0),
          "max_attempts": max(1, _int(args.get("retry"), "retry", 10))}
    _set_priority(op, args)
    if args.get("affinity"):
        op["affinity"] = args["affinity"]
    if args.get("url"):
        op["url"] = args["url"]
    local, global_ = _pattern(args.get("localprogress")), _pattern(args.get("globalprogress"))
    if local is not None:
        op["progress_pattern"] = local
    if global_ is not None:
        op["global_progress_pattern"] = global_
    deps = _dependencies(args)
    if deps:
        op["depends"] = deps
    return op


def addjob(call):
    from jqueue.http import api
    args = {key: values[-1] for key, values in call.args.items()}
    op = job_opcode(args)
    parent = (args.get("parent") or "0").strip()
    created = api.submit(call, [op], owner=call.owner(args.get("user")),
                         parent=None if parent in ("0", "") else (
                             int(parent) if parent.isdigit() else parent))
    return created.addCallback(lambda job_id: text("%d" % job_id))


# getjobs, getlog, getworkers

def _ids(call):
    try:
        return [ptypes.parse_job_id(v.strip()) for v in call.args.get("id", ()) if v.strip()]
    except ValueError as err:
        raise errors.OpPrereqError("invalid job id: %s" % err) from None


def getjobs(call):
    """The jobs directly in job id (0 or none: the root; an id that is no live job lists
    the root, as Coalition does), those in state filter if given, and the breadcrumb."""
    text_id = (call.arg("id") or "").strip() or "0"
    try:
        wanted = ptypes.parse_int(text_id)
    except ValueError:
        raise errors.OpPrereqError("invalid job id: %s" % ptypes._short(text_id)) from None
    state = (call.arg("filter") or "").strip().upper()
    backend = call.backend

    def pages(parent):
        """The rows of the jobs in parent, a page at a time (the queue's lock is held for
        one page only), filtered in the queue by the statuses state may come from."""
        if state and state not in PREFILTER:
            return  # an unknown state lists nothing
        filters = {"parent": [parent]}
        if PREFILTER.get(state) is not None:
            filters["status"] = PREFILTER[state]
        after = None
        while True:
            page = backend.list_jobs(_FIELDS, limit=PAGE, after=after, filters=filters)
            if page["rows"]:
                yield page["rows"]
            if not page["more"] or not page["rows"]:
                return
            after = page["rows"][-1][0]

    def answer():
        """The whole answer, built in the pool and encoded a page at a time: on a big
        queue it takes seconds that the event loop must not spend (nor wait for the GIL
        through one long encoding)."""
        parents = breadcrumb(backend, wanted)
        parent = parents[-1]["ID"]
        encoded = []
        for rows in pages(parent):
            values = [job_row(dict(zip(_FIELDS, row)), now) for row in rows]
            if state:
                values = [v for v in values if v[_STATE] == state]
            if values:
                encoded.append(literal(values)[1:-1])
        return text('{"Vars":%s, "Jobs":[%s], "Parents":%s}' % (
            literal(VARS), ", ".join(encoded), literal(parents)))
    now = time.time()
    return call.blocking(answer)


def breadcrumb(backend, job_id):
    """Coalition's Parents of a listing of job_id: [{"ID": 0, "Title": "Root"}, ...,
    {"ID": job_id, "Title": its title}]; just the root if job_id is no live job."""
    chain = []
    current = job_id
    while current and len(chain) < MAX_DEPTH:
        row = backend.query_jobs([current], ["parent", "title", "archived"])[0]
        if row is None or row[2]:
            break
        chain.append({"ID": current, "Title": row[1] or ""})
        current = row[0]
    return [dict(ROOT)] + chain[::-1]


def _seconds(ts):
    return ts[0] + ts[1] / 1e6 if ts else None


def state_of(status, held, group):
    """Coalition's State of a job of that status (a group's: the status the queue derives
    from its jobs, as Coalition derives a parent's). A held job is PAUSED, unless it is
    a job that has ended already; a held group is PAUSED whatever its jobs do (Coalition's
    paused folder)."""
    if held and (group or status not in constants.JOBS_FINALIZED):
        return "PAUSED"
    return STATES.get(status, "WAITING")


def group_counters(total, finished, errors, working):
    """Coalition's counters of a group from the queue's counts of its leaves (the jobs of
    its whole tree that have no jobs of their own; finished: those that ended, failed
    or not). The queue does not count a group's direct jobs apart: Finished, Errors and
    Working are the whole tree's too (the same when the group's jobs are all leaves)."""
    total, finished, errors, working = (int(v or 0) for v in (total, finished, errors,
                                                               working))
    done = max(0, finished - errors)  # ended without failing
    return {"Total": total, "TotalFinished": done, "TotalErrors": errors,
            "TotalWorking": working, "Finished": done, "Errors": errors,
            "Working": working}


def job_row(row, now):
    """A job's values in VARS order, with no None anywhere."""
    group = bool(row["ops"]) and groupjob.is_group_input(row["ops"][0])
    op = next((o for o in row["ops"] if commandjob.is_command(o)), row["ops"][0])
    cmd = op.get("cmd")
    start, end = _seconds(row["start_ts"]), _seconds(row["end_ts"])
    duration = (end if end is not None else now) - start if start is not None else 0
    status = row["status"]
    progress = row["progress"]
    if status == constants.JOB_STATUS_SUCCESS:
        progress = 1.0
    priority = row["priority"] if status not in constants.JOBS_FINALIZED else (
        op.get("priority") or 0)  # a finished job's current priority is the default
    deps = [dep[0] for dep in op.get("depends") or [] if isinstance(dep, list) and dep]
    values = {
        "ID": row["id"], "Title": row["title"] or "", "Command": (
            "" if group else commandjob.command_text(cmd) if cmd else op.get("OP_ID", "")),
        "Dir": op.get("dir") or "", "State": state_of(status, row["held"], group),
        "Worker": row["node"] or "", "StartTime": int(start or 0),
        "Duration": int(max(0, duration)), "Try": row["attempt"] or 0,
        "Retry": row["max_attempts"] or 0, "TimeOut": int(op.get("timeout") or 0),
        "Priority": priority_of(priority), "Affinity": ",".join(op.get("affinity") or []),
        "User": row["owner"] or "", "Finished": 0, "Errors": 0, "Working": 0, "Total": 0,
        "TotalFinished": 0, "TotalErrors": 0, "TotalWorking": 0, "Dependencies": deps,
        "URL": op.get("url") or "", "LocalProgress": float(progress or 0.0),
        "GlobalProgress": float(row["global_progress"] or 0.0)}
    if group:
        counters = group_counters(row["total"], row["finished"], row["errors"],
                                  row["working"])
        values.update(counters)
        share = counters["TotalFinished"] / counters["Total"] if counters["Total"] else 0.0
        values["LocalProgress"] = values["GlobalProgress"] = float(share)
    return [values[name] for name in VARS]


def getlog(call):
    job_id = _ids(call)
    if len(job_id) != 1:
        raise errors.OpPrereqError("getlog takes one id")
    backend = call.backend

    def read():
        """The log's last MAX_LOG bytes (all of a shorter one)."""
        row = backend.query_jobs([job_id[0]], ["log_bytes"])[0]
        offset = max(0, (row[0] or 0) - MAX_LOG) if row is not None else 0
        chunks, size = [], 0
        while size < MAX_LOG:
            part = backend.read_job_log(job_id[0], offset, min(LOG_CHUNK, MAX_LOG - size))
            if not part["data"]:
                break
            chunks.append(part["data"])
            size += len(part["data"])
            offset = part["offset"]
        return b"".join(chunks).decode("utf-8", "replace")
    return call.blocking(read).addCallback(lambda log: text(literal(log)))


def _load(machine):
    """Coalition's Load, one percentage per CPU: here the 1-minute load average spread
    over the CPUs (a node says no more); [] if unknown."""
    load, cpus = machine["load"], machine["cpus"]
    if load is None or not cpus:
        return []
    return [min(100, round(100 * load / cpus))] * int(cpus)


def _megabytes(size):
    return int(size // (1024 * 1024)) if size is not None else 0


def getworkers(call):
    def answer(rows):
        workers = []
        for row in rows:
            running = list(row.get("running") or [])
            reachable = row.get("reachable", True)
            active = not (row.get("drained") or row.get("offline"))
            state = "TIMEOUT" if not reachable else "WORKING" if running else "WAITING"
            machine = api.node_machine(row)
            workers.append([row.get("name") or "", (row.get("address") or "").rsplit(":", 1)[0],
                            ",".join(row.get("tags") or []), state, 0, 0,
                            running[-1] if running else -1, _load(machine),
                            _megabytes(machine["mem_available"]),
                            _megabytes(machine["mem_total"]), 1 if active else 0])
        return text(literal({"Vars": WORKER_VARS, "Workers": workers}))
    return api.node_rows(call).addCallback(answer)


# Changes of many jobs

def clearjobs(call):
    """Remove jobs: cancel (kill) the unfinished ones, then archive each once finished."""
    ids = _ids(call)
    backend = call.backend

    def clear():
        for job_id in ids:
            row = backend.query_jobs([job_id], ["status"])[0]
            if row is None:
                continue
            if row[0] not in constants.JOBS_FINALIZED:
                backend.cancel_job(job_id, kill=True)
                try:
                    backend.wait_for_job(job_id, timeout=30)
                except errors.GenericError:
                    continue
            backend.archive_job(job_id)
        return text("1")
    return call.blocking(clear)


#: Coalition's calls on many jobs: the LUXI method each id goes through, and when the
#: queue's refusal (status, held) is what Coalition does too: nothing. Coalition pauses
#: no FINISHED job; a reset leaves a waiting job WAITING (not a held one: Coalition's
#: reset ends a pause); reseterrorjobs touches only ERROR jobs. ReleaseJob refuses only
#: an unknown job (a job not held is no refusal).
_Q, _W = constants.JOB_STATUS_QUEUED, constants.JOB_STATUS_WAITING
CONTROLS = {
    "pausejobs": (constants.LUXI_REQ_HOLD_JOB,
                  lambda status, held: status == constants.JOB_STATUS_SUCCESS),
    "startjobs": (constants.LUXI_REQ_RELEASE_JOB, lambda status, held: False),
    "resetjobs": (constants.LUXI_REQ_RESET_JOB,
                  lambda status, held: status in (_Q, _W) and not held),
    "reseterrorjobs": (constants.LUXI_REQ_RETRY_JOB,
                       lambda status, held: status != constants.JOB_STATUS_ERROR),
}
_NOT_FOUND = re.compile(r"\bnot found\b")


def control(call, name):
    """Apply a CONTROLS call to each id, in order, each through its LUXI method (the
    checks of jqctl and of the REST API): ``1`` if each was done, or left as it was where
    Coalition leaves it too; else, once every id was tried, -1 with 404 if an id is no
    live job, or with 409 if the queue refused an id where Coalition would have changed
    it (the daemon's log says why, for each)."""
    method, noop = CONTROLS[name]
    dispatcher = call.site.context["dispatcher"]
    backend = call.backend
    checked = [methods.check_request(method, [job_id]) for job_id in _ids(call)]

    def run():
        unknown, refused = [], []
        for spec, args in checked:
            ok, message = dispatcher.run(spec, args)
            if ok:
                continue
            job_id = args[0]
            if _NOT_FOUND.search(message):
                unknown.append(message)
                continue
            row = backend.query_jobs([job_id], ["status", "held"])[0]
            if row is not None and noop(row[0], row[1]):
                logger.info("Coalition %s: job %s left as it is (%s), as Coalition "
                            "does", name, job_id, message)
                continue
            logger.warning("Coalition %s refused for job %s: %s", name, job_id, message)
            refused.append(message)
        if unknown:
            raise errors.JobLost("; ".join(unknown))
        if refused:
            raise HttpError(409, "ActionRefused", "; ".join(refused))
        return text("1")
    return call.blocking(run)


def resetjobs(call):
    return control(call, "resetjobs")


def reseterrorjobs(call):
    return control(call, "reseterrorjobs")


def startjobs(call):
    return control(call, "startjobs")


def pausejobs(call):
    return control(call, "pausejobs")
