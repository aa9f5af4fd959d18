"""Tests of jqueue.luxi.methods: the dispatch table, argument checks and the handlers."""

import inspect

import pytest
from conftest import delay, jqop, run_jobs
from fakes_luxi import FakeBackend

from jqueue import constants, errors, query
from jqueue.luxi import methods
from jqueue.queue import JobQueue

GANETI_METHODS = {
    "SubmitJob", "SubmitJobToDrainedQueue", "SubmitManyJobs", "WaitForJobChange",
    "CancelJob", "ChangeJobPriority", "ArchiveJob", "AutoArchiveJobs", "QueryJobs",
    "QueryConfigValues", "SetDrainFlag", "Query", "QueryFields",
}
CLUSTER_METHODS = {
    "ClusterInfo", "ListNodes", "AddNode", "RemoveNode", "ModifyNode", "VerifyCluster",
    "StepDown",
}
COMMAND_METHODS = {"ReadJobLog", "SignalJob", "QueryRunning", "WaitForEvents"}
SERVICE_METHODS = {"AddServices", "ModifyService", "RemoveService", "StartService",
                   "StopService", "RestartService", "QueryServices", "ReadServiceLog"}
COURSE_METHODS = {"HoldJob", "ReleaseJob", "ResetJob", "RetryJob", "ResolveJob", "PurgeJobs"}


@pytest.fixture
def fake():
    return FakeBackend()


@pytest.fixture
def dispatcher(fake):
    return methods.Dispatcher(fake, {"master_node": "node1", "cluster_name": "cluster"})


# The fake stays honest


def test_fake_backend_has_the_signatures_of_jobqueue():
    """Every method of FakeBackend has the signature of the JobQueue method it stands for."""
    for name, member in vars(FakeBackend).items():
        if name.startswith("_") or isinstance(member, property):
            continue
        assert inspect.signature(member) == inspect.signature(getattr(JobQueue, name)), name
    assert isinstance(JobQueue.drain_flag, property)


# The table


def test_table_holds_exactly_the_ganeti_methods():
    """The dispatcher accepts the methods of the contract (and our cluster, command and
    service ones), no other."""
    assert set(methods.METHODS) == (GANETI_METHODS | CLUSTER_METHODS | COMMAND_METHODS
                                    | SERVICE_METHODS | COURSE_METHODS | {"QueryOpcodes"})


def test_every_handler_named_in_the_table_exists():
    """Each table entry names a Dispatcher method whose parameters match its arguments."""
    for spec in methods.METHODS.values():
        handler = getattr(methods.Dispatcher, spec.handler)
        params = list(inspect.signature(handler).parameters)[1:]
        assert params == [name for name, _ in spec.params], spec.name


@pytest.mark.parametrize("method", ["Nope", "submitjob", "__init__", "submit_job", "run", ""])
def test_unknown_methods_are_refused_by_name(dispatcher, fake, method):
    """A name not in the table (handler names and dunders included) is a RequestError."""
    with pytest.raises(errors.RequestError, match="unknown method '%s'" % method):
        dispatcher.call(method, [])
    assert fake.calls == []


@pytest.mark.parametrize("method, args, problem", [
    ("SubmitJob", [], r"SubmitJob takes 1 to 2 arguments \[ops, options\], got 0"),
    ("SubmitJob", [[], {}, []], "got 3"),
    ("CancelJob", [], r"CancelJob takes 1 to 2 arguments \[job_id, kill\], got 0"),
    ("CancelJob", [1, True, 3], "got 3"),
    ("WaitForJobChange", [1, ["id"], None, None], "takes 5 arguments"),
    ("QueryJobs", [[1]], "takes 2 arguments"),
    ("Query", ["job", ["id"]], "takes 3 arguments"),
    ("QueryFields", ["job"], "takes 2 arguments"),
    ("SetDrainFlag", [], "takes 1 argument"),
])
def test_argument_count_is_checked_before_calling(dispatcher, fake, method, args, problem):
    """A wrong number of arguments is a RequestError naming the method; nothing is called."""
    with pytest.raises(errors.RequestError, match=problem):
        dispatcher.call(method, args)
    assert fake.calls == []


@pytest.mark.parametrize("method, args, problem", [
    ("SubmitJob", [{"OP_ID": "OP_TEST_DELAY"}], r"SubmitJob: argument 1 \(ops\) must be a list"),
    ("SubmitManyJobs", [[{"OP_ID": "X"}]], r"argument 1 \(jobs\) item 0 must be a list"),
    ("SubmitManyJobs", ["x"], "must be a list"),
    ("CancelJob", [1, "yes"], r"CancelJob: argument 2 \(kill\) must be a boolean"),
    ("CancelJob", [1, 1], "must be a boolean"),
    ("ChangeJobPriority", [1, "high"], r"argument 2 \(priority\) must be an integer"),
    ("ChangeJobPriority", [1, 1.5], "must be an integer"),
    ("AutoArchiveJobs", ["1d", 10], r"argument 1 \(age\) must be a number"),
    ("AutoArchiveJobs", [-1, None], r"argument 2 \(timeout\) must be a number"),
    ("QueryJobs", [None, "id"], r"argument 2 \(fields\) must be a list"),
    ("QueryJobs", [None, ["id", 3]], "item 1 must be a string"),
    ("QueryJobs", ["1", ["id"]], r"argument 1 \(job_ids\) must be null or a list"),
    ("QueryConfigValues", ["drain_flag"], "must be a list"),
    ("SetDrainFlag", ["true"], r"SetDrainFlag: argument 1 \(flag\) must be a boolean"),
    ("SetDrainFlag", [0], "must be a boolean"),
    ("Query", [5, ["id"], None], r"argument 1 \(what\) must be a string"),
    ("Query", ["job", ["id"], "id"], r"argument 3 \(qfilter\) must be null or a list"),
    ("QueryFields", ["job", "id"], r"argument 2 \(fields\) must be null or a list"),
    ("WaitForJobChange", [1, ["id"], {}, None, 10], r"argument 3 \(prev_job_info\)"),
    ("WaitForJobChange", [1, ["id"], None, "3", 10], r"argument 4 \(prev_log_serial\)"),
    ("WaitForJobChange", [1, ["id"], None, None, -1], r"argument 5 \(timeout\) must be a non-n"),
    ("WaitForJobChange", [1, ["id"], None, None, "10"], r"argument 5 \(timeout\)"),
])
def test_argument_types_are_checked_before_calling(dispatcher, fake, method, args, problem):
    """An argument of the wrong type is a RequestError naming method and argument."""
    with pytest.raises(errors.RequestError, match=problem):
        dispatcher.call(method, args)
    assert fake.calls == []


@pytest.mark.parametrize("bad_id", ["../1", -1, 1.5, "1 ", 10 ** 30, "", "0x1", True, None,
                                    [1], "1/../2", "+1"])
@pytest.mark.parametrize("method, extra", [("CancelJob", []), ("ArchiveJob", []),
                                           ("ChangeJobPriority", [0]),
                                           ("WaitForJobChange", [["id"], None, None, 1])])
def test_hostile_job_ids_are_refused_before_calling(dispatcher, fake, method, extra, bad_id):
    """Ids that are not ints or strict decimal strings are refused, naming the argument."""
    with pytest.raises(errors.RequestError, match=r"argument 1 \(job_id\) must be a job id"):
        dispatcher.call(method, [bad_id] + extra)
    assert fake.calls == []


def test_hostile_id_in_query_jobs_names_its_position(dispatcher, fake):
    """A bad id in the QueryJobs list is refused with its index."""
    with pytest.raises(errors.RequestError, match="item 1 must be a job id"):
        dispatcher.call("QueryJobs", [[1, "../2"], ["id"]])
    assert fake.calls == []


def test_decimal_string_ids_are_passed_on_as_ints(dispatcher, fake):
    """"42" reaches the backend as 42, in every method taking ids."""
    dispatcher.call("ArchiveJob", ["42"])
    dispatcher.call("CancelJob", ["7", True])
    dispatcher.call("QueryJobs", [["1", 2], ["id"]])
    assert fake.calls == [("archive_job", 42), ("cancel_job", 7, True),
                          ("query_jobs", [1, 2], ["id"])]


def test_type_error_inside_a_handler_is_not_mistaken_for_bad_arguments(dispatcher, fake):
    """A TypeError raised by the backend surfaces as itself, not as a RequestError."""
    fake.failures["archive_job"] = TypeError("bug inside the queue")
    with pytest.raises(TypeError, match="bug inside the queue"):
        dispatcher.call("ArchiveJob", [1])


def test_backend_errors_surface_as_themselves(dispatcher, fake):
    """A jqueue error of the backend is raised unchanged."""
    fake.failures["submit_job"] = errors.JobQueueDrainError("job queue is drained")
    with pytest.raises(errors.JobQueueDrainError):
        dispatcher.call("SubmitJob", [[delay()]])


# Handlers with a fake backend


def test_cancel_job_passes_kill_only_when_given(dispatcher, fake):
    """CancelJob [id] cancels without kill; [id, true] asks for kill; answers are lists."""
    assert dispatcher.call("CancelJob", [3]) == [True, "Job 3 canceled"]
    dispatcher.call("CancelJob", [3, True])
    assert fake.calls == [("cancel_job", 3, False), ("cancel_job", 3, True)]


def test_tuples_from_the_backend_are_answered_as_lists(dispatcher, fake):
    """SubmitManyJobs, ChangeJobPriority and AutoArchiveJobs answer lists, not tuples."""
    assert dispatcher.call("SubmitManyJobs", [[[delay()], [delay()]]]) == [[True, 1], [True, 2]]
    assert dispatcher.call("ChangeJobPriority", [1, -10]) == [True, "changed"]
    fake.results["auto_archive_jobs"] = (3, 1)
    assert dispatcher.call("AutoArchiveJobs", [-1, 10]) == [3, 1]


def test_query_jobs_with_null_or_empty_ids_lists_all(dispatcher, fake):
    """QueryJobs [null, fields] and [[], fields] both ask the backend for every job."""
    dispatcher.call("QueryJobs", [None, ["id"]])
    dispatcher.call("QueryJobs", [[], ["id"]])
    assert fake.calls == [("query_jobs", [], ["id"]), ("query_jobs", [], ["id"])]


def test_query_config_values_answers_in_order(dispatcher, fake):
    """Known names are answered in the order asked; drain_flag defaults to the queue's."""
    fake.drained = True
    assert dispatcher.call("QueryConfigValues", [["cluster_name", "drain_flag",
                                                  "master_node"]]) == ["cluster", True, "node1"]


def test_query_config_values_calls_callables_for_fresh_values(fake):
    """A callable config mapping, or a callable value, is called on every request."""
    counter = iter(range(10))
    dispatcher = methods.Dispatcher(fake, lambda: {"master_node": lambda: next(counter)})
    assert dispatcher.call("QueryConfigValues", [["master_node"]]) == [0]
    assert dispatcher.call("QueryConfigValues", [["master_node"]]) == [1]


def test_query_config_values_refuses_unknown_names(dispatcher):
    """An unknown configuration name is an OpPrereqError naming it."""
    with pytest.raises(errors.OpPrereqError, match="unknown configuration value 'nope'"):
        dispatcher.call("QueryConfigValues", [["master_node", "nope"]])


@pytest.mark.parametrize("method, args", [("Query", ["node", ["id"], None]),
                                          ("QueryFields", ["instance", None])])
def test_query_supports_only_jobs(dispatcher, method, args):
    """Query and QueryFields on another resource are an OpPrereqError naming it."""
    with pytest.raises(errors.OpPrereqError, match="resource '.*' is not supported"):
        dispatcher.call(method, args)


def test_query_fields_describes_named_or_all_fields(dispatcher):
    """QueryFields answers the definitions of the named fields, or of all if null."""
    assert dispatcher.call("QueryFields", ["job", ["id", "status"]]) == {"fields": [
        {"name": "id", "title": "ID", "kind": "number", "doc": "Job ID"},
        {"name": "status", "title": "Status", "kind": "text", "doc": "Job status"}]}
    everything = dispatcher.call("QueryFields", ["job", None])["fields"]
    assert [f["name"] for f in everything] == [f.name for f in query.FIELDS]
    with pytest.raises(errors.OpPrereqError, match="unknown job field"):
        dispatcher.call("QueryFields", ["job", ["id", "nope"]])


def test_query_refuses_a_malformed_filter_before_querying(dispatcher, fake):
    """A bad qfilter is a QueryFilterParseError and the backend is not asked."""
    with pytest.raises(errors.QueryFilterParseError, match="unknown operator"):
        dispatcher.call("Query", ["job", ["id"], ["~", "id", 1]])
    assert fake.calls == []


def test_wait_for_job_change_called_directly_blocks_on_the_backend(dispatcher, fake):
    """Dispatcher.call runs WaitForJobChange through the blocking queue method."""
    assert dispatcher.call("WaitForJobChange", [1, ["status"], None, None, 0]) == "nochange"
    fake.results["wait_for_job_changes"] = (["success"], [(1, [0, 0], "message", "hi")])
    assert dispatcher.call("WaitForJobChange", [1, ["status"], None, None, 0]) == [
        ["success"], [[1, [0, 0], "message", "hi"]]]


def test_watch_passes_the_checked_arguments(dispatcher, fake):
    """Dispatcher.watch hands job id, fields and previous state to watch_job."""
    spec, args = methods.check_request("WaitForJobChange", ["5", ["status"], ["queued"], 2, 9])
    handle = dispatcher.watch(args, lambda result: None)
    assert spec.watch and handle is fake.watches[0]
    assert handle.args == (5, ["status"], ["queued"], 2)


# Handlers over a real queue


@pytest.fixture
def real(open_queue):
    queue = open_queue()
    return queue, methods.Dispatcher(queue, {"master_node": "n1", "cluster_name": "c"})


def test_submit_and_query_jobs_over_a_real_queue(real):
    """SubmitJob answers an int id; QueryJobs finds the job and answers None for unknown."""
    queue, dispatcher = real
    job_id = dispatcher.call("SubmitJob", [[delay()]])
    assert isinstance(job_id, int)
    assert dispatcher.call("QueryJobs", [[str(job_id), 99], ["id", "status"]]) == [
        [job_id, "queued"], None]


def test_submit_many_jobs_over_a_real_queue_answers_lists(real):
    """SubmitManyJobs answers [[true, id], [false, message]] with relative dependencies."""
    _queue, dispatcher = real
    results = dispatcher.call("SubmitManyJobs", [[[delay()], [delay(depends=[[-1, []]])],
                                                  [delay(depends=[[-9, []]])]]])
    assert results[:2] == [[True, 1], [True, 2]]
    assert results[2][0] is False and isinstance(results[2][1], str)


def test_invalid_opcode_is_an_op_prereq_error(real):
    """The queue's opcode validation errors come through unchanged."""
    _queue, dispatcher = real
    with pytest.raises(errors.OpPrereqError, match="duration"):
        dispatcher.call("SubmitJob", [[delay(-1)]])


def test_query_answers_ganeti_query_response_sorted_by_id(real):
    """Query answers {"fields", "data"} with [status, value] pairs, rows by id."""
    queue, dispatcher = real
    for _ in range(3):
        dispatcher.call("SubmitJob", [[delay()]])
    result = dispatcher.call("Query", ["job", ["id", "status"], None])
    assert result["fields"] == [query.FIELDS_BY_NAME["id"].definition(),
                                query.FIELDS_BY_NAME["status"].definition()]
    assert result["data"] == [[[constants.RS_NORMAL, n], [constants.RS_NORMAL, "queued"]]
                              for n in (1, 2, 3)]


def test_query_filters_on_fields_not_requested(real):
    """A filter may read fields absent from the answer; rows keep only the requested ones."""
    queue, dispatcher = real
    dispatcher.call("SubmitJob", [[jqop()]])
    dispatcher.call("SubmitJob", [[jqop(fail=True)]])
    run_jobs(queue)
    result = dispatcher.call("Query", ["job", ["id"], ["=", "status", "error"]])
    assert result["data"] == [[[0, 2]]]


def test_query_by_ids_finds_archived_jobs_and_marks_unknown_unavailable(real):
    """An id filter queries those ids exactly, archived ones included; an unknown id is
    answered as Ganeti 3.0 does: the id, and every other field unavailable."""
    queue, dispatcher = real
    first = dispatcher.call("SubmitJob", [[delay()]])
    second = dispatcher.call("SubmitJob", [[delay()]])
    run_jobs(queue)
    assert dispatcher.call("ArchiveJob", [first]) is True
    everything = dispatcher.call("Query", ["job", ["id"], None])
    assert everything["data"] == [[[0, second]]]
    by_id = dispatcher.call("Query", ["job", ["id", "archived"],
                                      ["|", ["=", "id", second], ["=", "id", str(first)],
                                       ["=", "id", 77]]])
    assert by_id["data"] == [[[0, first], [0, True]], [[0, second], [0, False]],
                             [[0, 77], [3, None]]]


def test_query_lists_archived_jobs_when_the_archived_field_is_asked(real):
    """As gnt-job list --archived: asking for the archived field lists the archive too."""
    queue, dispatcher = real
    first = dispatcher.call("SubmitJob", [[delay()]])
    second = dispatcher.call("SubmitJob", [[delay()]])
    run_jobs(queue)
    assert dispatcher.call("ArchiveJob", [first]) is True
    listed = dispatcher.call("Query", ["job", ["id", "archived"], None])
    assert listed["data"] == [[[0, first], [0, True]], [[0, second], [0, False]]]
    assert dispatcher.call("Query", ["job", ["id"], None])["data"] == [[[0, second]]]


def test_set_drain_flag_is_seen_by_query_config_values(real):
    """SetDrainFlag changes what QueryConfigValues answers for drain_flag."""
    queue, dispatcher = real
    assert dispatcher.call("SetDrainFlag", [True]) is True
    assert dispatcher.call("QueryConfigValues", [["drain_flag"]]) == [True]
    with pytest.raises(errors.JobQueueDrainError):
        dispatcher.call("SubmitJob", [[delay()]])
    assert isinstance(dispatcher.call("SubmitJobToDrainedQueue", [[delay()]]), int)


# Command jobs


@pytest.mark.parametrize("value, number", [
    (15, 15), ("TERM", 15), ("SIGKILL", 9), ("usr1", 10), ("hup", 1)])
def test_signal_job_takes_a_signal_by_number_or_name(dispatcher, fake, value, number):
    """SignalJob [id, signal]: names with or without SIG, any case, or numbers."""
    assert dispatcher.call("SignalJob", [7, value]) == [True, "signaled"]
    assert fake.calls[-1] == ("signal_job", 7, number)


@pytest.mark.parametrize("value", [0, 32, 65, -9, "NOPE", "SIG", "", True, 9.0, None,
                                   "__class__", "SIGRTMIN"])
def test_signal_job_refuses_what_is_not_a_signal(dispatcher, fake, value):
    """A bad signal is the caller's error, named, and nothing is called."""
    with pytest.raises(errors.RequestError, match="argument 2 .signal."):
        dispatcher.call("SignalJob", [7, value])
    assert fake.calls == []


def test_read_job_log_checks_its_arguments_and_decodes_the_data(dispatcher, fake):
    """ReadJobLog [id, offset, max_bytes, timeout] answers text (invalid UTF-8 replaced)."""
    fake.results["read_job_log"] = {"data": b"ok \xff\n", "offset": 9, "eof": False}
    assert dispatcher.call("ReadJobLog", [3, 4, 100, 0]) == {
        "data": "ok \ufffd\n", "offset": 9, "eof": False}
    for args in ([3, -1, 10, 0], [3, 0, 0, 0], [3, 0, constants.LUXI_MAX_LOG_READ + 1, 0],
                 ["x", 0, 10, 0], [3, 0, 10, -1], [3, 0, 10], [3, 0, 10, 0, "hex"],
                 [3, 0, 10, 0, None], [3, 0, 10, 0, "base64", 1]):
        with pytest.raises(errors.RequestError):
            dispatcher.call("ReadJobLog", args)


def test_read_job_log_and_read_service_log_send_bytes_exactly_in_base64(dispatcher, fake):
    """A 5th argument "base64" answers the log's bytes as they are (our addition); "text"
    is the default's answer; the long poll says which its answer is."""
    fake.results["read_job_log"] = {"data": b"ok \xff\n", "offset": 9, "eof": True}
    fake.results["read_service_log"] = {"data": b"\x00\xfe", "offset": 2, "eof": False}
    assert dispatcher.call("ReadJobLog", [3, 4, 100, 0, "base64"]) == {
        "data": "b2sg/wo=", "offset": 9, "eof": True}
    assert dispatcher.call("ReadJobLog", [3, 4, 100, 0, "text"])["data"] == "ok \ufffd\n"
    assert dispatcher.call("ReadServiceLog", ["web", 0, 100, 0, "base64"])["data"] == "AP4="
    spec = methods.METHODS["ReadJobLog"]
    answers = []

    def callback(result):
        answers.append(dispatcher.answer_log(result))
    callback.in_reactor = callback
    dispatcher.watch_log(spec.check_args([3, 50, 10, 5.0, "base64"]), callback)
    assert fake.calls[-1] == ("watch_job_log", 3, 50, 10)
    wrapped = fake.watches[-1].callback
    wrapped({"data": b"\xff", "offset": 51, "eof": False})
    wrapped.in_reactor({"data": b"\xfe", "offset": 52, "eof": False})
    assert [a["data"] for a in answers] == ["/w==", "/g=="]
    assert spec.timeout_of([3, 50, 10, 5.0, "base64"]) == 5.0


def test_read_job_log_is_a_long_poll_with_its_own_no_change_answer(dispatcher, fake):
    """The server's watch hooks for ReadJobLog: start, encode, and the timeout answer."""
    spec = methods.METHODS["ReadJobLog"]
    assert spec.watch == "log"
    handle = dispatcher.watch_log([3, 50, 10, 5.0], lambda result: None)
    assert handle is fake.watches[-1] and fake.calls[-1] == ("watch_job_log", 3, 50, 10)
    assert dispatcher.nochange_log([3, 50, 10, 5.0]) == {"data": "", "offset": 50,
                                                         "eof": False}


def test_query_running_passes_the_node(dispatcher, fake):
    """QueryRunning [node or null] lists running attempts."""
    fake.results["query_running"] = [{"job": 1}]
    assert dispatcher.call("QueryRunning", [None]) == [{"job": 1}]
    assert dispatcher.call("QueryRunning", ["node2"]) == [{"job": 1}]
    assert fake.calls[-1] == ("query_running", "node2")
    with pytest.raises(errors.RequestError):
        dispatcher.call("QueryRunning", [5])


def test_submission_tokens_ride_on_an_optional_options_argument(dispatcher, fake):
    """SubmitJob [ops, {"token": T}] and SubmitManyJobs [jobs, {"tokens": [...]}] hand the
    tokens to the backend; Ganeti's [ops] form is unchanged; other keys are refused."""
    ops = [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]
    dispatcher.call("SubmitJob", [ops])
    dispatcher.call("SubmitJob", [ops, {"token": "t"}])
    dispatcher.call("SubmitManyJobs", [[ops], {"tokens": ["u"]}])
    assert fake.calls == [("submit_job", ops, False), ("submit_job", ops, False, "t"),
                          ("submit_many_jobs", [ops], False, ["u"])]
    for args in ([ops, {"tok": "t"}], [ops, {"token": 5}], [ops, "t"]):
        with pytest.raises(errors.RequestError, match="argument 2 .options."):
            dispatcher.call("SubmitJob", args)


def test_an_owner_rides_on_the_options_of_both_submissions(dispatcher, fake):
    """SubmitJob [ops, {"owner": O}] (with or without a token) and SubmitManyJobs [jobs,
    {"owner": O}] name the jobs' owner; a non-string owner is refused."""
    ops = [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]
    dispatcher.call("SubmitJob", [ops, {"owner": "alice"}])
    dispatcher.call("SubmitJob", [ops, {"token": "t", "owner": "bob"}])
    assert fake.calls == [("submit_job", ops, False, None, "alice"),
                          ("submit_job", ops, False, "t", "bob")]
    with pytest.raises(errors.RequestError, match="argument 2 .options."):
        dispatcher.call("SubmitJob", [ops, {"owner": 7}])


def test_wait_for_events_checks_its_filter(dispatcher, fake):
    """WaitForEvents [since, filter, timeout]: a filter of known keys, else refused."""
    assert dispatcher.call("WaitForEvents", [5, {"job": "7", "status": "OK"}, 0]) == {
        "events": [], "last": 5, "gap": False}
    assert fake.calls[-1] == ("read_events", 5, {"job": 7, "status": ["OK"]})
    for bad in ({"jobs": 1}, {"job": -1}, {"status": [""]}, "OK", [1]):
        with pytest.raises(errors.RequestError, match="argument 2 .filter."):
            dispatcher.call("WaitForEvents", [0, bad, 0])
    assert methods.METHODS["WaitForEvents"].watch == "events"
    fake.results["read_events"] = {"events": [], "last": 4, "gap": False}
    assert dispatcher.nochange_events([9, None, 1.0]) == {"events": [], "last": 4,
                                                          "gap": False}


# Supervised services


def test_service_methods_reach_the_backend_with_their_arguments(dispatcher, fake):
    """AddServices [definitions, {start}], ModifyService, RemoveService, Start/Stop/
    RestartService, QueryServices [names or null]: each calls its JobQueue method."""
    dispatcher.call("AddServices", [[{"name": "web", "command": "serve"}]])
    dispatcher.call("AddServices", [[{"name": "db"}], {"start": True}])
    dispatcher.call("ModifyService", ["web", {"restart": "always"}])
    dispatcher.call("RemoveService", ["web"])
    for method, action in (("StartService", "start"), ("StopService", "stop"),
                           ("RestartService", "restart")):
        assert dispatcher.call(method, ["web"]) == [True, action]
    dispatcher.call("QueryServices", [])
    dispatcher.call("QueryServices", [["web", "db"]])
    assert fake.calls == [
        ("add_services", [{"name": "web", "command": "serve"}], False),
        ("add_services", [{"name": "db"}], True),
        ("modify_service", "web", {"restart": "always"}), ("remove_service", "web"),
        ("control_service", "web", "start"), ("control_service", "web", "stop"),
        ("control_service", "web", "restart"), ("query_services", None),
        ("query_services", ["web", "db"])]


@pytest.mark.parametrize("method, args", [
    ("AddServices", [{"name": "web"}]), ("AddServices", [["web"]]),
    ("AddServices", [[], {"begin": True}]), ("AddServices", [[], {"start": "yes"}]),
    ("ModifyService", ["web", ["restart"]]), ("ModifyService", ["", {}]),
    ("RemoveService", [3]), ("RemoveService", []), ("StartService", [None]),
    ("StopService", ["web", "now"]), ("QueryServices", ["web"]), ("QueryServices", [[3]]),
    ("ReadServiceLog", ["web", -1, 10, 0]), ("ReadServiceLog", ["web", 0, 0, 0]),
    ("ReadServiceLog", ["web", 0, constants.LUXI_MAX_LOG_READ + 1, 0]),
    ("ReadServiceLog", ["web", 0, 10, -1]), ("ReadServiceLog", ["web", 0, 10]),
])
def test_service_methods_refuse_bad_arguments_before_calling(dispatcher, fake, method,
                                                              args):
    """Wrong types or counts are the caller's error, and nothing is called."""
    with pytest.raises(errors.RequestError):
        dispatcher.call(method, args)
    assert fake.calls == []


def test_read_service_log_decodes_the_data(dispatcher, fake):
    """ReadServiceLog [name, offset, max_bytes, timeout] answers text, as ReadJobLog."""
    fake.results["read_service_log"] = {"data": b"tick \xff\n", "offset": 9, "eof": False}
    assert dispatcher.call("ReadServiceLog", ["web", 0, 100, 0]) == {
        "data": "tick \ufffd\n", "offset": 9, "eof": False}
    assert methods.METHODS["ReadServiceLog"].watch == "svclog"
