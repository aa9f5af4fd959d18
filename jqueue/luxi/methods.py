"""LUXI methods: the dispatch table, argument checks and the handlers over a JobQueue.

Only the methods of the table are accepted. A request's argument count, types and ranges
are checked before its handler is called, so that an error inside a handler (a TypeError
included) surfaces as itself and is never mistaken for bad arguments. A wrong count or
type is a RequestError; a value out of its range (AutoArchiveJobs [-1, -1], a priority of
99) is the caller's OpPrereqError; both name the method and the argument.
"""

import base64
import operator
import signal as _signal

from jqueue import commandjob, constants, errors, ptypes, qlang, query


class _Instance(ptypes.PType):
    """A value of the given Python type(s), unchecked inside."""

    def __init__(self, types, desc):
        self.types, self.desc = types, desc

    def check(self, value):
        if not isinstance(value, self.types):
            self._fail(value)
        return value


class _Maybe(ptypes.Maybe):
    """None or a value of the inner type; a wrong type is named as "null or ..."."""

    def check(self, value):
        try:
            return super().check(value)
        except ValueError as err:
            if str(err).startswith("must be "):
                self._fail(value)
            raise


class _Signal(ptypes.PType):
    """A standard signal: its number, or its name with or without SIG (TERM, usr1)."""

    desc = "a signal number (1-31) or name (TERM, SIGKILL, ...)"

    def check(self, value):
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 31:
            return value
        if isinstance(value, str) and value.isascii():
            name = value.upper()
            name = name if name.startswith("SIG") else "SIG" + name
            number = getattr(_signal.Signals, name, None) if name.isidentifier() else None
            if number is not None and 1 <= number <= 31:
                return int(number)
        self._fail(value)


class _Reference(ptypes.PType):
    """A job id, or a group title or path (checked in full by the queue)."""

    desc = "a job id, a group title or a path of titles"

    def check(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            self._fail(value)
        return value


class _OutOfRange(ValueError):
    """A value of the right type outside its range: the caller's error (OpPrereqError)."""


class _InRange(ptypes.PType):
    """A value of type inner (else a RequestError) that range_check accepts (else an
    OpPrereqError naming the argument)."""

    def __init__(self, inner, range_check, desc):
        self.inner, self._range_check, self.desc = inner, range_check, desc

    def check(self, value):
        value = self.inner.check(value)
        if not self._range_check(value):
            raise _OutOfRange("must be %s, got %s" % (self.desc, ptypes._short(value)))
        return value


class _Options(ptypes.PType):
    """Our optional last argument of a submission: an object of known keys (checked)."""

    def __init__(self, keys):
        self.keys = keys
        self.desc = "an object with the keys %s" % ", ".join(sorted(keys))

    def check(self, value):
        if not isinstance(value, dict) or set(value) - set(self.keys):
            self._fail(value)
        return {key: self.keys[key].check(value[key]) for key in value}


class _EventFilter(ptypes.PType):
    """A WaitForEvents filter: null, or an object of job, node, kind, status."""

    desc = ("null or an object with any of job (an id), node and service (names), kind "
            "and status (a word or a list of words)")
    _WORDS = ptypes.ListOf(ptypes.NonEmptyString)

    def check(self, value):
        if value is None:
            return None
        if not isinstance(value, dict) or set(value) - {"job", "node", "service", "kind",
                                                        "status"}:
            self._fail(value)
        checked = {}
        try:
            if value.get("job") is not None:
                checked["job"] = ptypes.JobId.check(value["job"])
            for key in ("node", "service"):
                if value.get(key) is not None:
                    checked[key] = ptypes.NonEmptyString.check(value[key])
            for key in ("kind", "status"):
                words = value.get(key)
                if words is not None:
                    checked[key] = self._WORDS.check([words] if isinstance(words, str)
                                                     else words)
        except ValueError:
            self._fail(value)
        return checked


class _NodeChanges(ptypes.PType):
    """ModifyNode's optional changes: an object of tags (a list or a comma text), drained
    and offline (booleans)."""

    desc = "an object with any of tags, drained, offline"

    def check(self, value):
        if not isinstance(value, dict) or set(value) - {"tags", "drained", "offline"}:
            self._fail(value)
        checked = {}
        for key in ("drained", "offline"):
            if key in value:
                checked[key] = ptypes.Bool.check(value[key])
        if "tags" in value:
            checked["tags"] = commandjob.parse_tags(value["tags"])
        return checked


_LIST = _Instance(list, "a list")
_OPS = _Instance(list, "a list of opcodes")
_JOBS = ptypes.ListOf(_Instance(list, "a list of opcodes"))
_FIELDS = ptypes.ListOf(ptypes.String)
#: SubmitJob [ops, {"token": T}] and SubmitManyJobs [jobs, {"tokens": [T|null, ...]}]:
#: idempotency tokens (our addition; Ganeti's clients send [ops] and [jobs]).
_TOKEN = _Maybe(ptypes.String)
#: ... and "owner": who submits (the jobs' owner field; HTTP clients' names).
#: A job's own options (our addition): its group, its start time and its webhook, see
#: JobQueue.submit_job (notify is checked there: jqueue.joboptions.check_notify).
_JOB_OPTIONS = {"parent": _Maybe(_Reference()), "not_before": _Maybe(ptypes.NumberRange()),
                "start_in": _Maybe(ptypes.NumberRange()),
                "notify": _Maybe(_Instance((str, dict),
                                           "a URL or an object {url or to, on, after}"))}
_SUBMIT_OPTIONS = _Maybe(_Options(dict(_JOB_OPTIONS, token=_TOKEN, owner=_TOKEN)))
_SUBMIT_MANY_OPTIONS = _Maybe(_Options({
    "tokens": _Maybe(ptypes.ListOf(_TOKEN)), "owner": _TOKEN,
    "options": _Maybe(ptypes.ListOf(_Maybe(_Options(_JOB_OPTIONS))))}))
_NUMBER = ptypes.NumberRange()
_SERVICE = ptypes.NonEmptyString
_LOG_TEXT, _LOG_BASE64 = constants.LOG_ENCODING_TEXT, constants.LOG_ENCODING_BASE64
_LOG_ENCODING = ptypes.OneOf([_LOG_TEXT, _LOG_BASE64])
_DEFINITIONS = ptypes.ListOf(_Instance(dict, "a service definition (an object)"))
_ADD_OPTIONS = _Maybe(_Options({"start": ptypes.Bool}))
_AGE = _InRange(_NUMBER, lambda age: age == -1 or age >= 0,
                "-1 (every finalized job) or a non-negative number of seconds")
_TIMEOUT = _InRange(_NUMBER, lambda timeout: timeout >= 0, "a non-negative number of seconds")
_PRIORITY = _InRange(ptypes.Int, lambda prio: ptypes.Priority.low <= prio <= ptypes.Priority.high,
                     ptypes.Priority.desc)


class Method:
    """A LUXI method: wire name, handler name, [(argument name, type)], least arguments.

    A watch method is a long poll that costs no thread: ``watch`` names the dispatcher's
    pair ``watch_<watch>(args, callback)`` (returns None if it answered at once, else a
    handle with cancel()) and ``nochange_<watch>(args)`` (the answer once the timeout, its
    argument named "timeout" (``timeout_of``), passed); ``answer_<watch>(result)`` encodes
    what the callback got.
    A bulk method is a read whose answer may hold 10^5 rows: it is run and encoded
    without the cyclic collector (see jqueue.serializer.paused_collection).
    """

    __slots__ = ("name", "handler", "params", "min_args", "watch", "bulk", "_timeout_at")

    def __init__(self, name, handler, params, min_args=None, watch=None, bulk=False):
        self.name = name
        self.handler = handler
        self.params = params
        self.min_args = len(params) if min_args is None else min_args
        self.watch = watch
        self.bulk = bulk
        names = [param for param, _ in params]
        self._timeout_at = names.index("timeout") if watch else None

    def check_args(self, args):
        """Return args checked and normalized; RequestError naming method and argument."""
        if not isinstance(args, list):
            raise errors.RequestError("%s: arguments must be a list" % self.name)
        if not self.min_args <= len(args) <= len(self.params):
            raise errors.RequestError("%s takes %s, got %d" % (
                self.name, self._arity_text(), len(args)))
        checked = []
        for index, (value, (name, ptype)) in enumerate(zip(args, self.params)):
            try:
                checked.append(ptype.check(value))
            except _OutOfRange as err:
                raise errors.OpPrereqError("%s: argument %d (%s) %s" % (
                    self.name, index + 1, name, err), constants.ECODE_INVAL) from None
            except ValueError as err:
                raise errors.RequestError("%s: argument %d (%s) %s" % (
                    self.name, index + 1, name, err)) from None
        return checked

    def timeout_of(self, args):
        """A watch method's timeout among its checked args."""
        return args[self._timeout_at]

    def _arity_text(self):
        names = ", ".join(name for name, _ in self.params)
        if self.min_args == len(self.params):
            count = "%d argument%s" % (self.min_args, "" if self.min_args == 1 else "s")
        else:
            count = "%d to %d arguments" % (self.min_args, len(self.params))
        return "%s [%s]" % (count, names)


_C = constants
METHODS = {m.name: m for m in [
    Method(_C.LUXI_REQ_SUBMIT_JOB, "submit_job", [("ops", _OPS), ("options", _SUBMIT_OPTIONS)],
           min_args=1),
    Method(_C.LUXI_REQ_SUBMIT_JOB_TO_DRAINED_QUEUE, "submit_job_to_drained_queue",
           [("ops", _OPS), ("options", _SUBMIT_OPTIONS)], min_args=1),
    Method(_C.LUXI_REQ_SUBMIT_MANY_JOBS, "submit_many_jobs",
           [("jobs", _JOBS), ("options", _SUBMIT_MANY_OPTIONS)], min_args=1),
    Method(_C.LUXI_REQ_WAIT_FOR_JOB_CHANGE, "wait_for_job_change", [
        ("job_id", ptypes.JobId), ("fields", _FIELDS), ("prev_job_info", _Maybe(_LIST)),
        ("prev_log_serial", _Maybe(ptypes.Int)), ("timeout", ptypes.NonNegativeNumber),
    ], watch="job"),
    Method(_C.LUXI_REQ_CANCEL_JOB, "cancel_job", [("job_id", ptypes.JobId),
                                                   ("kill", ptypes.Bool)], min_args=1),
    Method(_C.LUXI_REQ_CHANGE_JOB_PRIORITY, "change_job_priority",
           [("job_id", ptypes.JobId), ("priority", _PRIORITY)]),
    Method(_C.LUXI_REQ_ARCHIVE_JOB, "archive_job", [("job_id", ptypes.JobId)]),
    Method(_C.LUXI_REQ_AUTO_ARCHIVE_JOBS, "auto_archive_jobs",
           [("age", _AGE), ("timeout", _TIMEOUT)]),
    Method(_C.LUXI_REQ_QUERY_JOBS, "query_jobs",
           [("job_ids", _Maybe(ptypes.ListOf(ptypes.JobId))), ("fields", _FIELDS)], bulk=True),
    Method(_C.LUXI_REQ_QUERY_CONFIG_VALUES, "query_config_values", [("names", _FIELDS)]),
    Method(_C.LUXI_REQ_SET_DRAIN_FLAG, "set_drain_flag", [("flag", ptypes.Bool)]),
    Method(_C.LUXI_REQ_QUERY, "query", [("what", ptypes.String), ("fields", _FIELDS),
                                        ("qfilter", _Maybe(_LIST))], bulk=True),
    Method(_C.LUXI_REQ_QUERY_FIELDS, "query_fields",
           [("what", ptypes.String), ("fields", _Maybe(_FIELDS))]),
    # Our additions: the cluster (see jqueue.daemon.clustermaster).
    Method(_C.LUXI_REQ_CLUSTER_INFO, "cluster_info", []),
    Method(_C.LUXI_REQ_LIST_NODES, "list_nodes", []),
    Method(_C.LUXI_REQ_ADD_NODE, "add_node", [
        ("name", ptypes.NonEmptyString), ("address", ptypes.NonEmptyString),
        ("candidate", ptypes.Bool), ("csr_pem", ptypes.NonEmptyString)]),
    Method(_C.LUXI_REQ_REMOVE_NODE, "remove_node", [("name", ptypes.NonEmptyString)]),
    Method(_C.LUXI_REQ_MODIFY_NODE, "modify_node", [
        ("name", ptypes.NonEmptyString), ("candidate", _Maybe(ptypes.Bool)),
        ("changes", _NodeChanges())], min_args=2),
    Method(_C.LUXI_REQ_VERIFY_CLUSTER, "verify_cluster", []),
    Method(_C.LUXI_REQ_STEP_DOWN, "step_down", [("epoch", ptypes.NonNegativeInt),
                                                ("master", ptypes.NonEmptyString)]),
    # Our additions: command jobs (see jqueue.run.commands).
    Method(_C.LUXI_REQ_READ_JOB_LOG, "read_job_log", [
        ("job_id", ptypes.JobId), ("offset", ptypes.NonNegativeInt),
        ("max_bytes", ptypes.IntRange(1, _C.LUXI_MAX_LOG_READ)),
        ("timeout", ptypes.NonNegativeNumber), ("encoding", _LOG_ENCODING)], min_args=4,
        watch="log"),
    Method(_C.LUXI_REQ_SIGNAL_JOB, "signal_job", [("job_id", ptypes.JobId),
                                                  ("signal", _Signal())]),
    Method(_C.LUXI_REQ_QUERY_RUNNING, "query_running", [("node", _Maybe(ptypes.String))]),
    # Our addition: the event stream (jqueue.store.events).
    Method(_C.LUXI_REQ_WAIT_FOR_EVENTS, "wait_for_events", [
        ("since", ptypes.NonNegativeInt), ("filter", _EventFilter()),
        ("timeout", ptypes.NonNegativeNumber)], watch="events"),
    # Our additions: a job's course (see jqueue.jobcontrol) and its groups.
    Method(_C.LUXI_REQ_HOLD_JOB, "hold_job", [("job_id", ptypes.JobId)]),
    Method(_C.LUXI_REQ_RELEASE_JOB, "release_job", [("job_id", ptypes.JobId)]),
    Method(_C.LUXI_REQ_RESET_JOB, "reset_job", [("job_id", ptypes.JobId)]),
    Method(_C.LUXI_REQ_RETRY_JOB, "retry_job", [("job_id", ptypes.JobId)]),
    Method(_C.LUXI_REQ_RESOLVE_JOB, "resolve_job", [("reference", _Reference())]),
    # Our addition: retention (see jqueue.retention).
    Method(_C.LUXI_REQ_PURGE_JOBS, "purge_jobs", [("age", _InRange(
        _NUMBER, lambda age: age >= 0, "a non-negative number of seconds")),
        ("timeout", _TIMEOUT)]),
    # Our addition: the opcode catalogue (see jqueue.opcodes.Registry.describe).
    Method(_C.LUXI_REQ_QUERY_OPCODES, "query_opcodes", [("names", _Maybe(_FIELDS))],
           min_args=0),
    # Our additions: supervised services (see jqueue.run.services).
    Method(_C.LUXI_REQ_ADD_SERVICES, "add_services",
           [("definitions", _DEFINITIONS), ("options", _ADD_OPTIONS)], min_args=1),
    Method(_C.LUXI_REQ_MODIFY_SERVICE, "modify_service",
           [("name", _SERVICE), ("changes", _Instance(dict, "an object of parameters"))]),
    Method(_C.LUXI_REQ_REMOVE_SERVICE, "remove_service", [("name", _SERVICE)]),
    Method(_C.LUXI_REQ_START_SERVICE, "start_service", [("name", _SERVICE)]),
    Method(_C.LUXI_REQ_STOP_SERVICE, "stop_service", [("name", _SERVICE)]),
    Method(_C.LUXI_REQ_RESTART_SERVICE, "restart_service", [("name", _SERVICE)]),
    Method(_C.LUXI_REQ_QUERY_SERVICES, "query_services",
           [("names", _Maybe(ptypes.ListOf(_SERVICE)))], min_args=0),
    Method(_C.LUXI_REQ_READ_SERVICE_LOG, "read_service_log", [
        ("name", _SERVICE), ("offset", ptypes.NonNegativeInt),
        ("max_bytes", ptypes.IntRange(1, _C.LUXI_MAX_LOG_READ)),
        ("timeout", ptypes.NonNegativeNumber), ("encoding", _LOG_ENCODING)], min_args=4,
        watch="svclog"),
]}


def check_request(method, args):
    """Look method up and check args; return (Method, checked args) or raise RequestError."""
    spec = METHODS.get(method) if isinstance(method, str) else None
    if spec is None:
        raise errors.RequestError("unknown method %s" % ptypes._short(method))
    return spec, spec.check_args(args)


class Dispatcher:
    """Runs checked LUXI requests against a JobQueue-like backend.

    config_values answers QueryConfigValues: a mapping (or a callable returning one) of
    name to value, where a callable value is called for a fresh answer; ``drain_flag``
    defaults to the backend's. cluster serves the cluster methods (a
    jqueue.daemon.clustermaster.ClusterMaster); without one they are refused.
    """

    def __init__(self, backend, config_values=None, cluster=None):
        self._backend = backend
        self._config_values = config_values if config_values is not None else {}
        self._cluster = cluster

    def call(self, method, args):
        """Check and run one request, blocking (WaitForJobChange included)."""
        spec, checked = check_request(method, args)
        return self.run(spec, checked)

    def run(self, spec, args):
        """Run a checked request; blocking."""
        return getattr(self, spec.handler)(*args)

    def watch(self, args, callback):
        """Start a checked WaitForJobChange without blocking (see JobQueue.watch_job).

        Returns None if callback was already called, else a handle with cancel().
        """
        return self.watch_job(args, callback)

    def watch_job(self, args, callback):
        job_id, fields, prev_job_info, prev_log_serial, _timeout = args
        return self._backend.watch_job(job_id, fields, prev_job_info, prev_log_serial,
                                       callback)

    @staticmethod
    def answer_job(result):
        return wait_answer(result)

    @staticmethod
    def nochange_job(args):
        return constants.JOB_NOTCHANGED

    def watch_log(self, args, callback):
        """Start a checked ReadJobLog: answered once the log grows past the offset."""
        job_id, offset, max_bytes = args[:3]
        return self._backend.watch_job_log(job_id, offset, max_bytes,
                                           _encoding_callback(callback, args[4:]))

    @staticmethod
    def answer_log(result):
        return log_answer(result)

    @staticmethod
    def nochange_log(args):
        return {"data": "", "offset": args[1], "eof": False}

    def read_job_log(self, job_id, offset, max_bytes, timeout, encoding=_LOG_TEXT):
        """ReadJobLog, blocking (the server uses watch_log instead)."""
        return log_answer(self._backend.read_job_log(job_id, offset, max_bytes), encoding)

    def watch_events(self, args, callback):
        """Start a checked WaitForEvents: answered once an event after since passes."""
        since, flt, _timeout = args
        return self._backend.watch_events(since, flt, callback)

    @staticmethod
    def answer_events(result):
        return result

    def nochange_events(self, args):
        """The timeout passed with nothing new: the answer as things stand (its last
        serial is the newest event's, so that a client may start from now)."""
        return self._backend.read_events(args[0], args[1])

    def wait_for_events(self, since, filter, timeout):
        """WaitForEvents, not waiting (the server uses watch_events instead)."""
        return self._backend.read_events(since, filter)

    def signal_job(self, job_id, signal):
        return list(self._backend.signal_job(job_id, signal))

    # Supervised services

    def add_services(self, definitions, options=None):
        return self._backend.add_services(definitions, start=bool((options or {}).get("start")))

    def modify_service(self, name, changes):
        return self._backend.modify_service(name, changes)

    def remove_service(self, name):
        return self._backend.remove_service(name)

    def start_service(self, name):
        return list(self._backend.control_service(name, "start"))

    def stop_service(self, name):
        return list(self._backend.control_service(name, "stop"))

    def restart_service(self, name):
        return list(self._backend.control_service(name, "restart"))

    def query_services(self, names=None):
        return self._backend.query_services(names)

    def watch_svclog(self, args, callback):
        """Start a checked ReadServiceLog: answered once the log grows past the offset."""
        name, offset, max_bytes = args[:3]
        return self._backend.watch_service_log(name, offset, max_bytes,
                                               _encoding_callback(callback, args[4:]))

    answer_svclog, nochange_svclog = answer_log, nochange_log  # a log is a log

    def read_service_log(self, name, offset, max_bytes, timeout, encoding=_LOG_TEXT):
        """ReadServiceLog, blocking (the server uses watch_svclog instead)."""
        return log_answer(self._backend.read_service_log(name, offset, max_bytes), encoding)

    def query_running(self, node):
        return self._backend.query_running(node)

    # Handlers: one per method, arguments already checked.

    def submit_job(self, ops, options=None):
        return self._backend.submit_job(ops, **submit_arguments(options))

    def submit_job_to_drained_queue(self, ops, options=None):
        return self._backend.submit_job_to_drained_queue(ops, **submit_arguments(options))

    def submit_many_jobs(self, jobs, options=None):
        return [list(result) for result in self._backend.submit_many_jobs(
            jobs, **submit_arguments(options))]

    def wait_for_job_change(self, job_id, fields, prev_job_info, prev_log_serial, timeout):
        result = self._backend.wait_for_job_changes(job_id, fields, prev_job_info,
                                                    prev_log_serial, timeout)
        return wait_answer(result)

    def cancel_job(self, job_id, kill=False):
        return list(self._backend.cancel_job(job_id, kill=kill))

    def change_job_priority(self, job_id, priority):
        return list(self._backend.change_job_priority(job_id, priority))

    def hold_job(self, job_id):
        return list(self._backend.hold_job(job_id))

    def release_job(self, job_id):
        return list(self._backend.release_job(job_id))

    def reset_job(self, job_id):
        return list(self._backend.reset_job(job_id))

    def retry_job(self, job_id):
        return list(self._backend.retry_job(job_id))

    def resolve_job(self, reference):
        return self._backend.resolve_job(reference)

    def purge_jobs(self, age, timeout):
        return self._backend.purge_jobs(age, timeout)

    def archive_job(self, job_id):
        return self._backend.archive_job(job_id)

    def auto_archive_jobs(self, age, timeout):
        return list(self._backend.auto_archive_jobs(age, timeout))

    def query_jobs(self, job_ids, fields):
        return self._backend.query_jobs(job_ids or [], fields)

    def set_drain_flag(self, flag):
        return self._backend.set_drain_flag(flag)

    def query_config_values(self, names):
        values = self._config_values
        if callable(values):
            values = values()
        return [self._config_value(values, name) for name in names]

    def _config_value(self, values, name):
        if name not in values:
            if name == constants.CONFIG_DRAIN_FLAG:
                return self._backend.drain_flag
            raise errors.OpPrereqError("unknown configuration value '%s'" % name,
                                       constants.ECODE_NOENT)
        value = values[name]
        return value() if callable(value) else value

    def query(self, what, fields, qfilter):
        """Query ["job", fields, qfilter], as Ganeti answers it.

        A filter naming ids exactly (``id`` equalities, or an ``|`` of them) finds
        archived jobs too, and answers an unknown id as Ganeti does: the id, every other
        field unavailable (RS_UNAVAIL), which ``gnt-job info`` prints as not found.
        Without such a filter the live jobs are listed, and the archived ones too when the
        ``archived`` field is asked for (Ganeti's ``gnt-job list --archived``).
        """
        _check_resource(what)
        definitions = query.check_fields(fields)
        compiled = qlang.compile_filter(qfilter)
        names = list(fields) + sorted(compiled.fields.union(["id"]).difference(fields))
        ids = sorted(qlang.requested_ids(qfilter) or ()) or None
        rows = self._backend.query_jobs(ids or [], names)
        if ids is None and "archived" in fields:
            archived = self._backend.archived_job_ids()
            if archived:
                rows = rows + [row for row in self._backend.query_jobs(archived, names)
                               if row is not None]
        id_index = names.index("id")
        if ids is None and qfilter is None:
            # Listing every live job (jqctl list, gnt-job list): the common big answer.
            # No filter to evaluate, and no row is missing; 100,000 jobs must not cost a
            # dict and a sort key call each.
            rows.sort(key=operator.itemgetter(id_index))
            data = _normal_rows(rows, len(fields))
            return {"fields": [f.definition() for f in definitions], "data": data}
        data = []
        pairs = zip(ids, rows) if ids else ((values[id_index], values) for values in rows)
        for job_id, values in sorted(pairs, key=operator.itemgetter(0)):
            if values is None:
                data.append([[constants.RS_NORMAL, job_id] if name == "id" else
                             [constants.RS_UNAVAIL, None] for name in fields])
            elif compiled(dict(zip(names, values))):
                data.append([[constants.RS_NORMAL, v] for v in values[:len(fields)]])
        return {"fields": [f.definition() for f in definitions], "data": data}

    def query_opcodes(self, names=None):
        return self._backend.registry.describe(names or None)

    def query_fields(self, what, fields):
        _check_resource(what)
        definitions = query.FIELDS if fields is None else query.check_fields(fields)
        return {"fields": [f.definition() for f in definitions]}

    # The cluster methods

    def _cluster_backend(self):
        if self._cluster is None:
            raise errors.OpPrereqError("not a cluster (no cluster.json)", constants.ECODE_STATE)
        return self._cluster

    def cluster_info(self):
        return self._cluster_backend().info()

    def list_nodes(self):
        if self._cluster is None:  # one machine: its own node, which runs its commands
            return self._backend.list_nodes()
        return self._cluster.list_nodes()

    def add_node(self, name, address, candidate, csr_pem):
        return self._cluster_backend().add_node(name, address, candidate, csr_pem)

    def remove_node(self, name):
        return self._cluster_backend().remove_node(name)

    def modify_node(self, name, candidate, changes=None):
        return self._cluster_backend().modify_node(name, candidate, changes)

    def verify_cluster(self):
        return self._cluster_backend().verify()

    def step_down(self, epoch, master):
        return self._cluster_backend().step_down(epoch, master)


def submit_arguments(options):
    """The keyword arguments of a submission for the options a client gave (only those
    given: a backend without them still takes a plain submission).

    SubmitJob's options are {"token", "owner", "parent", "not_before", "start_in",
    "notify"}, SubmitManyJobs' {"tokens", "owner", "options": [{"parent", "not_before",
    "start_in", "notify"} or null per job]}.
    """
    return {key: value for key, value in (options or {}).items() if value is not None}


def nowait_arguments(options, many=False):
    """submit_arguments for JobQueue.submit_job_nowait (token, owner, options) or, with
    many, submit_nowait (tokens, owner, options)."""
    given = submit_arguments(options)
    if many:
        return given
    arguments = {key: given.pop(key) for key in ("token", "owner") if key in given}
    if given:
        arguments["options"] = given
    return arguments


def _normal_rows(rows, width):
    """Rows of values as Query rows: [[RS_NORMAL, value], ...] of their first width values.

    Unrolled for the usual widths (jqctl list asks 3 fields): a third faster than the
    general comprehension over 10^5 rows.
    """
    normal = constants.RS_NORMAL
    if width == 1:
        return [[[normal, row[0]]] for row in rows]
    if width == 2:
        return [[[normal, row[0]], [normal, row[1]]] for row in rows]
    if width == 3:
        return [[[normal, row[0]], [normal, row[1]], [normal, row[2]]] for row in rows]
    return [[[normal, value] for value in row[:width]] for row in rows]


def _check_resource(what):
    if what != constants.QR_JOB:
        raise errors.OpPrereqError("resource '%s' is not supported" % ptypes._short(what),
                                   constants.ECODE_INVAL)


def log_answer(result, encoding=_LOG_TEXT):
    """ReadJobLog's (ReadServiceLog's) answer on the wire: the bytes as text (invalid UTF-8
    replaced), or with base64 (also when result, from _encoding_callback, says so)
    exactly, in base64."""
    data = result["data"]
    if result.get("encoding", encoding) == _LOG_BASE64:
        data = base64.b64encode(data).decode("ascii")
    else:
        data = data.decode("utf-8", "replace")
    return {"data": data, "offset": result["offset"], "eof": result["eof"]}


def _encoding_callback(callback, encoding):
    """callback of a log's long poll, for the encoding asked ([] or [name]): its answer
    says which (log_answer), on both of the server's paths (callback.in_reactor)."""
    if encoding in ([], [_LOG_TEXT]):
        return callback

    def encoded(result):
        callback(dict(result, encoding=encoding[0]))
    in_reactor = getattr(callback, "in_reactor", None)
    if in_reactor is not None:
        encoded.in_reactor = lambda result: in_reactor(dict(result, encoding=encoding[0]))
    return encoded


def wait_answer(result):
    """WaitForJobChange's answer on the wire: [job_info, log_entries] or "nochange"."""
    if result == constants.JOB_NOTCHANGED:
        return result
    job_info, log_entries = result
    return [job_info, [list(entry) for entry in log_entries]]
