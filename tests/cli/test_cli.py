"""Tests of jqctl (jqueue.cli) against tests.fakes.FakeLuxiClient: parsing, output, exit codes."""

import argparse
import inspect
import io
import os
import subprocess
import sys
import time

import pytest
from cli_helpers import Cli
from fakes import FakeLuxiClient

from jqueue import constants, errors, opcodes, serializer
from jqueue.cli import app, exitcodes, info, jobs, listing, main, output, parsing, watching

T0 = 1795000000.0  # 2026-11-18 11:06:40 UTC
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLIENT_API = (
    "__init__", "submit_job", "submit_job_to_drained_queue", "submit_many_jobs", "cancel_job",
    "change_job_priority", "archive_job", "auto_archive_jobs", "query_jobs", "query",
    "query_fields", "query_config_values", "set_drain_flag", "wait_for_job_change_once",
    "wait_for_job_change", "close",
)

@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Format local times in UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def cli():
    return Cli()


def assert_one_line_error(result, code, text=None):
    """The run failed with code and printed exactly one "jqctl: ..." line on stderr."""
    assert result.code == code, result
    assert result.err.startswith("jqctl: ") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    if text is not None:
        assert text in result.err


def parse(*argv):
    return app.build_parser().parse_args(list(argv))


# Parsing

@pytest.mark.parametrize("argv, func, expected", [
    (["submit", "jobs.json"], jobs.cmd_submit, {"words": ["jobs.json"], "priority": None}),
    (["submit", "--op", "OP_X", "a=1", "--priority", "low", "--wait"], jobs.cmd_submit,
     {"op": "OP_X", "words": ["a=1"], "priority": 10, "wait": True, "watch": False}),
    (["submit", "--watch", "--depends", "4:success", "--depends", "5", "--op", "OP_X"],
     jobs.cmd_submit, {"watch": True, "depends": [[4, ["success"]], [5, []]]}),
    (["cancel", "1", "2", "--kill"], jobs.cmd_cancel, {"ids": [1, 2], "kill": True}),
    (["cancel", "--pending", "--force"], jobs.cmd_cancel, {"ids": [], "force": True}),
    (["archive", "7"], jobs.cmd_archive, {"ids": [7]}),
    (["autoarchive", "6h"], jobs.cmd_autoarchive, {"age": 21600}),
    (["change-priority", "--priority", "high", "3"], jobs.cmd_change_priority,
     {"priority": -10, "ids": [3]}),
    (["list", "-o", "+priority", "--no-headers", "--separator", ";", "--running", "1"],
     listing.cmd_list, {"output": "+priority", "no_headers": True, "separator": ";",
                        "ids": [1], "archived": False}),
    (["query", "--json", "--archived", "2"], listing.cmd_list, {"json": True, "archived": True}),
    (["list-fields", "id", "status"], listing.cmd_list_fields, {"fields": ["id", "status"]}),
    (["info", "1", "2"], info.cmd_info, {"ids": [1, 2]}),
    (["watch", "9"], watching.cmd_watch, {"id": 9}),
    (["wait", "9", "10"], watching.cmd_wait, {"ids": [9, 10]}),
    (["queue", "drain"], app.queue_cmds.cmd_drain, {}),
    (["queue", "undrain"], app.queue_cmds.cmd_undrain, {}),
    (["queue", "info", "--json"], app.queue_cmds.cmd_queue_info, {"json": True}),
    (["--socket", "/s", "--timeout", "2.5", "wait", "1"], watching.cmd_wait,
     {"socket": "/s", "timeout": 2.5}),
])
def test_every_command_parses_to_its_function_and_values(argv, func, expected):
    """Each command line selects its command function and carries the parsed values."""
    args = parse(*argv)
    assert args.func is func
    for name, value in expected.items():
        assert getattr(args, name) == value, name


def test_selectors_accumulate_statuses():
    """Status selectors combine with "or" into one set of statuses."""
    from jqueue.cli import selection
    args = parse("list", "--running", "--error")
    assert selection.selected_statuses(args) == {"running", "error"}
    assert selection.selected_statuses(parse("list")) == frozenset()


@pytest.mark.parametrize("argv, text", [
    ([], "COMMAND"),
    (["bogus"], "invalid choice"),
    (["submit", "--priority", "urgent", "f"], "invalid priority"),
    (["submit", "--priority", "20", "f"], "invalid priority"),
    (["submit", "--priority", " 5", "f"], "invalid priority"),
    (["submit", "--priority", "1_0", "f"], "invalid priority"),
    (["submit", "--priority", "\u0663", "f"], "invalid priority"),
    (["change-priority", "--priority", "1_0", "1"], "invalid priority"),
    (["submit", "--wait", "--watch", "f"], "not allowed with"),
    (["cancel", "| |"], "invalid job id or group path"),
    (["info", "-3"], "invalid job id"),
    (["autoarchive", "5x"], "invalid age"),
    (["change-priority", "4"], "--priority"),
    (["--timeout", "0", "list"], "invalid timeout"),
    (["queue"], "ACTION"),
    (["run", "--timeout", " 5", "--", "true"], "invalid duration"),
    (["run", "--kill-grace", "1_0", "--", "true"], "invalid duration"),
    (["run", "--retry-delay", "\u0663", "--", "true"], "invalid duration"),
    (["run", "--timeout", "inf", "--", "true"], "invalid duration"),
    (["service", "add", "s", "--startsecs", "1_0", "--", "true"], "invalid duration"),
    (["service", "add", "s", "--stop-timeout", " 5", "--", "true"], "invalid duration"),
    (["listen", "1_0"], "invalid number"),
    (["listen", "\u0663"], "invalid number"),
    (["listen", "--since", " 5"], "invalid number"),
    (["listen", "--since", "-1"], "invalid number"),
])
def test_usage_errors_exit_2_with_one_line(cli, argv, text):
    """argparse's usage errors exit 2 with one "jqctl: ..." line naming the problem."""
    assert_one_line_error(cli(*argv), exitcodes.EXIT_USAGE, text)
    assert cli.connections == []


@pytest.mark.parametrize("text, value", [
    ("2", 2), ("2.5", 2.5), ("true", True), ("null", None), ('["a","b"]', ["a", "b"]),
    ('{"k": 1}', {"k": 1}), ("abc", "abc"), ("", ""), ("a b", "a b"), ('"2"', "2"),
])
def test_param_values_are_json_when_they_parse(text, value):
    """KEY=VALUE values are JSON when they parse as JSON, else the text itself."""
    assert parsing.param_value(text) == value


def test_params_split_on_the_first_equals_sign():
    """KEY=VALUE splits on the first "=", so values may contain "="."""
    assert parsing.params(["a=1", "expr=x=y", "e="]) == {"a": 1, "expr": "x=y", "e": ""}


@pytest.mark.parametrize("items", [["novalue"], ["=1"], ["a=1", "a=2"], ["OP_ID=OP_X"]])
def test_bad_params_are_usage_errors(items):
    """A word without KEY=, a repeated key or OP_ID is a usage error."""
    with pytest.raises(exitcodes.CommandError) as info_:
        parsing.params(items)
    assert info_.value.exit_code == exitcodes.EXIT_USAGE


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("30m", 1800), ("6h", 21600), ("1d", 86400), ("2w", 1209600), ("45", 45),
    ("1.5h", 5400), ("0.5", 0.5), ("all", -1),
])
def test_ages_convert_to_seconds(text, seconds):
    """AGE takes s, m, h, d, w suffixes or plain seconds; "all" is -1."""
    assert parsing.age(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-3", "h", "1e3", "1 h", "ALL", "1.h"])
def test_bad_ages_are_refused(text):
    """Anything else as AGE is refused with a message."""
    with pytest.raises(argparse.ArgumentTypeError):
        parsing.age(text)


@pytest.mark.parametrize("text, prio", [
    ("high", -10), ("normal", 0), ("low", 10), ("-20", -20), ("19", 19), ("5", 5)])
def test_priorities_accept_names_and_the_integer_range(text, prio):
    """--priority takes high, normal, low or an integer from -20 to 19."""
    assert parsing.priority(text) == prio


@pytest.mark.parametrize("text", ["20", "-21", "urgent", "1.5", ""])
def test_priorities_outside_the_range_are_refused(text):
    """--priority refuses other names, fractions and integers outside -20..19."""
    with pytest.raises(argparse.ArgumentTypeError):
        parsing.priority(text)


@pytest.mark.parametrize("text, dep", [
    ("5", [5, []]), ("5:success", [5, ["success"]]), ("5:error,canceled", [5, ["error",
                                                                               "canceled"]])])
def test_dependencies_parse_to_id_and_statuses(text, dep):
    """--depends ID[:STATUS,...] becomes [id, [statuses]] (empty: any final status)."""
    assert parsing.dependency(text) == dep


@pytest.mark.parametrize("text", ["x", "-1", "5:done", "5:running", ":success"])
def test_bad_dependencies_are_refused(text):
    """A dependency needs a job id and final statuses only."""
    with pytest.raises(argparse.ArgumentTypeError):
        parsing.dependency(text)


# submit

def test_submit_op_builds_one_opcode_with_typed_parameters(cli):
    """submit --op sends one opcode with JSON-typed params, priority and depends; prints the id."""
    other = cli.fake.add_job(status="success")
    result = cli("submit", "--priority", "high", "--depends", "%d:success" % other,
                 "--op", "OP_TEST_DELAY", "duration=2", "on_master=true", 'on_nodes=["a"]')
    assert result == (0, "2\n", "")
    [(ops,)] = cli.fake.calls_of("submit_job")
    assert ops == [{"OP_ID": "OP_TEST_DELAY", "duration": 2, "on_master": True,
                    "on_nodes": ["a"], "priority": -10, "depends": [[other, ["success"]]]}]


def test_submit_file_of_one_job_uses_submit_job(cli, tmp_path):
    """A file holding a list of opcodes is one job, submitted with SubmitJob."""
    path = tmp_path / "job.json"
    path.write_text('[{"OP_ID": "OP_TEST_DELAY", "duration": 0}]')
    assert cli("submit", "--priority", "7", path) == (0, "1\n", "")
    [(ops,)] = cli.fake.calls_of("submit_job")
    assert ops[0]["priority"] == 7


def test_submit_file_of_several_jobs_uses_one_submit_many_jobs(cli, tmp_path):
    """A list of opcode lists is submitted in one SubmitManyJobs; relative depends work."""
    path = tmp_path / "jobs.json"
    path.write_text(serializer.dumps([
        [{"OP_ID": "OP_TEST_DELAY", "duration": 0}],
        [{"OP_ID": "OP_TEST_DELAY", "duration": 1, "depends": [[-1, ["success"]]]}]]))
    assert cli("submit", path) == (0, "1\n2\n", "")
    assert len(cli.fake.calls_of("submit_many_jobs")) == 1
    assert cli.fake.jobs[2].ops[0].input["depends"] == [[1, ["success"]]]


def test_submit_reads_standard_input_for_dash(cli):
    """submit - reads the job file from standard input."""
    result = cli("submit", "-", stdin='[{"OP_ID": "OP_TEST_DELAY", "duration": 0}]')
    assert result == (0, "1\n", "")


def test_submit_many_reports_a_refused_job_and_exits_refused(cli):
    """A job refused within SubmitManyJobs prints its message on stderr; the others their ids."""
    text = serializer.dumps([[{"OP_ID": "OP_TEST_DELAY", "duration": 0}],
                             [{"OP_ID": "OP_TEST_DELAY", "duration": 0,
                               "depends": [[-5, []]]}]])
    result = cli("submit", "-", stdin=text)
    assert result.out == "1\n"
    assert_one_line_error(result, exitcodes.EXIT_REFUSED, "job 2 of 2 refused: relative")


@pytest.mark.parametrize("stdin, text", [
    ("{not json", "standard input: invalid JSON"),
    ("[]", "expected a non-empty list"),
    ('{"OP_ID": "OP_TEST_DELAY"}', "expected a non-empty list"),
    ('[[{"OP_ID": "OP_TEST_DELAY"}], {"OP_ID": "OP_TEST_DELAY"}]', "expected"),
])
def test_submit_refuses_malformed_job_files_as_usage_errors(cli, stdin, text):
    """A job file that is not JSON, or not a list of opcodes (lists), is a usage error."""
    assert_one_line_error(cli("submit", "-", stdin=stdin), exitcodes.EXIT_USAGE, text)
    assert cli.connections == []


@pytest.mark.parametrize("argv, text", [
    (["submit", "/nonexistent/jobs.json"], "cannot read /nonexistent/jobs.json"),
    (["submit"], "needs one job file"),
    (["submit", "a.json", "b.json"], "needs one job file"),
    (["submit", "--depends", "1", "a.json"], "--depends needs --op"),
    (["submit", "--op", "OP_TEST_DELAY", "duration"], "expected KEY=VALUE"),
])
def test_submit_usage_problems_exit_2(cli, argv, text):
    """Missing or unreadable files and misplaced options are one-line usage errors."""
    assert_one_line_error(cli(*argv), exitcodes.EXIT_USAGE, text)


def test_submit_refused_by_the_daemon_exits_6(cli):
    """An opcode the daemon refuses (unknown OP_ID, drained queue) exits 6 with its message."""
    assert_one_line_error(cli("submit", "--op", "OP_NOPE"), exitcodes.EXIT_REFUSED,
                          "unknown opcode")
    cli.fake.drained = True
    assert_one_line_error(cli("submit", "--op", "OP_TEST_DELAY", "duration=0"),
                          exitcodes.EXIT_REFUSED, "drained")


@pytest.mark.parametrize("status, code", [
    ("success", exitcodes.EXIT_SUCCESS), ("error", exitcodes.EXIT_FAILURE),
    ("canceled", exitcodes.EXIT_CANCELED)])
def test_submit_wait_exits_with_the_job_outcome(cli, status, code):
    """submit --wait prints the id, then the job's outcome, and exits with it."""
    cli.fake.script(1, ("running", []), (status, []))
    result = cli("submit", "--wait", "--op", "OP_TEST_DELAY", "duration=1")
    reason = ": opcode 1 (TEST_DELAY(1)) failed" if status == "error" else ""
    assert result == (code, "1\nJob 1 finished: %s%s\n" % (status, reason), "")


def test_submit_watch_streams_the_log_then_the_outcome(cli):
    """submit --watch prints the id, the job's log lines, then its outcome."""
    cli.fake.script(1, ("running", ["hello"]), ("success", ["bye"]))
    result = cli("submit", "--watch", "--op", "OP_TEST_DELAY", "duration=1")
    assert result.code == 0
    assert result.out.splitlines() == [
        "1", "2026-11-18 11:06:40.000000 hello", "2026-11-18 11:06:40.000000 bye",
        "Job 1 finished: success"]


def test_submit_many_wait_exits_with_the_worst_outcome(cli):
    """submit --wait of several jobs exits with the worst of their outcomes."""
    cli.fake.script(1, ("success", []))
    cli.fake.script(2, ("error", []))
    text = serializer.dumps([[{"OP_ID": "OP_TEST_DELAY", "duration": 0}]] * 2)
    result = cli("submit", "--wait", "-", stdin=text)
    assert result.code == exitcodes.EXIT_FAILURE
    assert result.out.splitlines()[-2:] == [
        "Job 1 finished: success", "Job 2 finished: error: opcode 1 (TEST_DELAY(0)) failed"]


# cancel

def test_cancel_prints_each_message_and_passes_kill(cli):
    """cancel prints the daemon's message per job and forwards --kill."""
    queued, running = cli.fake.add_job(), cli.fake.add_job(status="running")
    result = cli("cancel", "--kill", queued, running)
    assert result.code == 0
    assert result.out.splitlines() == [
        "Job 1 canceled", "Job 2 will be canceled at its next cancellation point"]
    assert cli.fake.calls_of("cancel_job") == [(1, True), (2, True)]


def test_cancel_refused_message_goes_to_stderr_and_exits_6(cli):
    """A cancel the daemon refuses is printed on stderr and makes the exit status 6."""
    done = cli.fake.add_job(status="success")
    assert_one_line_error(cli("cancel", done), exitcodes.EXIT_REFUSED, "already finished")


def test_cancel_selection_without_terminal_or_force_is_refused(cli):
    """Selecting several jobs by status without --force and without a terminal cancels none."""
    cli.fake.add_job()
    cli.fake.add_job()
    result = cli("cancel", "--queued")
    assert_one_line_error(result, exitcodes.EXIT_USAGE, "use --force")
    assert cli.fake.calls_of("cancel_job") == []


def test_cancel_pending_with_force_cancels_queued_and_waiting_only(cli):
    """cancel --pending --force cancels queued and waiting jobs, not running ones."""
    queued, running, waiting_ = (cli.fake.add_job(), cli.fake.add_job(status="running"),
                                 cli.fake.add_job(status="waiting"))
    result = cli("cancel", "--pending", "--force")
    assert result.code == 0
    assert [args[0] for args in cli.fake.calls_of("cancel_job")] == [queued, waiting_]
    assert cli.fake.calls_of("query")[0][2] == [
        "|", ["=", "status", "queued"], ["=", "status", "waiting"]]
    assert cli.fake.jobs[running].calc_status() == "running"


@pytest.mark.parametrize("answer, code, canceled", [
    ("y\n", 0, 2), ("yes\n", 0, 2), ("n\n", exitcodes.EXIT_INTERRUPTED, 0),
    ("", exitcodes.EXIT_INTERRUPTED, 0)])
def test_cancel_selection_asks_on_a_terminal(cli, answer, code, canceled):
    """On a terminal, several selected jobs are canceled only after an explicit yes."""
    cli.fake.add_job()
    cli.fake.add_job()
    result = cli("cancel", "--queued", stdin=answer, tty=True)
    assert result.code == code
    assert result.err.startswith("Cancel 2 jobs (1, 2)? [y/N] ")
    assert len(cli.fake.calls_of("cancel_job")) == canceled


def test_cancel_selection_of_one_job_needs_no_confirmation(cli):
    """A selector that matches a single job cancels it without asking."""
    cli.fake.add_job()
    cli.fake.add_job(status="running")
    assert cli("cancel", "--queued") == (0, "Job 1 canceled\n", "")


def test_cancel_selection_of_no_job_says_so(cli):
    """A selector that matches nothing prints a note and succeeds."""
    assert cli("cancel", "--waiting") == (0, "No jobs to cancel\n", "")


@pytest.mark.parametrize("argv", [["cancel"], ["cancel", "1", "--pending"]])
def test_cancel_needs_ids_or_one_kind_of_selection(cli, argv):
    """cancel needs job IDs or a selector, not both."""
    assert_one_line_error(cli(*argv), exitcodes.EXIT_USAGE)


# archive, autoarchive, change-priority

def test_archive_archives_finished_jobs_and_reports_others(cli):
    """archive is silent for archived jobs and reports the others with exit 6."""
    done, running = cli.fake.add_job(status="success"), cli.fake.add_job(status="running")
    assert cli("archive", done) == (0, "", "")
    assert cli.fake.jobs[done].archived
    assert_one_line_error(cli("archive", running), exitcodes.EXIT_REFUSED,
                          "job 2 not archived: it is not finished (status running)")
    assert_one_line_error(cli("archive", done), exitcodes.EXIT_REFUSED,
                          "job 1 is already archived")


def test_autoarchive_calls_until_nothing_is_left_unchecked(cli):
    """autoarchive repeats AutoArchiveJobs until left_unchecked is 0 and prints the total."""
    for _ in range(5):
        cli.fake.add_job(status="success")
    cli.fake.archive_chunk = 2
    assert cli("autoarchive", "all") == (0, "Archived 5 jobs\n", "")
    assert cli.fake.calls_of("auto_archive_jobs") == [(-1, 10.0)] * 3


def test_autoarchive_gives_more_time_then_gives_up_without_progress(cli):
    """Calls that archive nothing double their timeout up to half of --timeout, then stop."""
    cli.fake.add_job(status="running")
    cli.fake.add_job(status="success")
    cli.fake.archive_chunk = 1
    result = cli("--timeout", "60", "autoarchive", "1d")
    assert_one_line_error(result, exitcodes.EXIT_REFUSED, "1 jobs were left unchecked")
    assert [t for _, t in cli.fake.calls_of("auto_archive_jobs")] == [10.0, 20.0, 30.0]


def test_autoarchive_passes_the_age_in_seconds(cli):
    """autoarchive archives only jobs that ended longer ago than AGE."""
    old = cli.fake.add_job(status="success")
    cli.fake.now += 7200
    young = cli.fake.add_job(status="success")
    assert cli("autoarchive", "1h") == (0, "Archived 1 jobs\n", "")
    assert cli.fake.jobs[old].archived and not cli.fake.jobs[young].archived


def test_change_priority_prints_messages_and_refusals(cli):
    """change-priority prints the daemon's message; a refusal exits 6."""
    job_id = cli.fake.add_job()
    result = cli("change-priority", "--priority", "low", job_id)
    assert result.code == 0 and "changed to 10" in result.out
    assert cli.fake.jobs[job_id].calc_priority() == 10
    assert_one_line_error(cli("change-priority", "--priority", "1", 99),
                          exitcodes.EXIT_NOT_FOUND, "job 99 not found")


@pytest.mark.parametrize("argv", [
    ["info", "999"], ["cancel", "999"], ["cancel", "--kill", "999"], ["archive", "999"],
    ["change-priority", "--priority", "high", "999"], ["wait", "999"], ["watch", "999"],
    ["list", "999"], ["result", "999"]])
def test_not_found_is_one_status_and_one_wording_for_every_command(cli, argv):
    """Every command naming a job that does not exist says "job 999 not found", exit 4."""
    result = cli(*argv)
    assert (result.code, result.err) == (exitcodes.EXIT_NOT_FOUND, "jqctl: job 999 not found\n")


# list / query

@pytest.fixture
def three_jobs(cli):
    """Jobs 1 (queued), 2 (running, two opcodes), 3 (error) in the fake."""
    cli.fake.add_job()
    cli.fake.add_job([{"OP_ID": "OP_TEST_JQUEUE"}, {"OP_ID": "OP_TEST_DELAY", "duration": 2.5}],
                     status="running")
    cli.fake.add_job(status="error", result=["OpExecError", ["boom"]])
    return cli


def test_list_prints_an_aligned_table_with_numbers_to_the_right(three_jobs):
    """list shows id, status, summary in aligned columns; numeric columns right-aligned."""
    for _ in range(8):
        three_jobs.fake.add_job(status="success")
    lines = three_jobs("list").out.splitlines()
    assert lines[:4] == [
        "ID Status  Summary",
        " 1 queued  TEST_DELAY(0)",
        " 2 running TEST_JQUEUE,TEST_DELAY(2.5)",
        " 3 error   TEST_DELAY(0)"]
    assert lines[-1] == "11 success TEST_DELAY(0)"
    assert three_jobs("query").out.splitlines() == lines


def test_list_no_headers_and_separator(three_jobs):
    """--no-headers drops the header line; --separator joins fields without alignment."""
    assert three_jobs("list", "--no-headers").out.splitlines()[0] == "1 queued  TEST_DELAY(0)"
    assert three_jobs("list", "--separator", "|").out.splitlines()[:3] == [
        "ID|Status|Summary", "1|queued|TEST_DELAY(0)", "2|running|TEST_JQUEUE,TEST_DELAY(2.5)"]


def test_list_json_prints_raw_values(three_jobs):
    """--json prints a list of {field: raw value} objects (timestamps stay [sec, usec])."""
    result = three_jobs("list", "--json", "-o", "id,start_ts,summary,archived")
    records = serializer.loads(result.out)
    assert records[1] == {"id": 2, "start_ts": [int(T0), 0],
                          "summary": ["TEST_JQUEUE", "TEST_DELAY(2.5)"], "archived": False}
    assert list(records[0]) == ["id", "start_ts", "summary", "archived"]


def test_list_output_fields_replace_or_extend_the_defaults(three_jobs):
    """-o f1,f2 replaces the default fields; -o +f1 appends to them."""
    assert three_jobs("list", "-o", "status,id").out.splitlines()[1] == "queued   1"
    lines = three_jobs("list", "-o", "+priority,start_ts,archived,opstatus").out.splitlines()
    assert lines[0].split() == ["ID", "Status", "Summary", "Prio", "Start", "Archived",
                                "OpCode_status"]
    assert lines[1].endswith("0 -                   N        queued")
    assert lines[2].endswith("0 2026-11-18 11:06:40 N        running,queued")


def test_list_formats_timestamp_lists_as_local_time(three_jobs):
    """Per-opcode timestamps are shown as local ISO times joined by commas."""
    line = three_jobs("list", "--no-headers", "-o", "opstart", "2").out
    assert line == "2026-11-18 11:06:40,-\n"


@pytest.mark.parametrize("spec, code, text", [
    ("bogus", exitcodes.EXIT_NOT_FOUND, "unknown field(s) bogus"),
    ("+id,nope", exitcodes.EXIT_NOT_FOUND, "nope"),
    ("id,,status", exitcodes.EXIT_USAGE, "empty field name"),
])
def test_list_refuses_unknown_or_empty_field_names(three_jobs, spec, code, text):
    """An unknown field exits 4 ("not found"), an empty name is a usage error."""
    assert_one_line_error(three_jobs("list", "-o", spec), code, text)


@pytest.mark.parametrize("argv, qfilter, ids", [
    (["--running"], ["=", "status", "running"], [2]),
    (["--error", "--running"], ["|", ["=", "status", "running"], ["=", "status", "error"]],
     [2, 3]),
    (["--pending"], ["|", ["=", "status", "queued"], ["=", "status", "waiting"],
                     ["=", "status", "canceling"]], [1]),
    (["--finished"], ["|", ["=", "status", "success"], ["=", "status", "error"],
                      ["=", "status", "canceled"]], [3]),
])
def test_list_selectors_filter_through_query(three_jobs, argv, qfilter, ids):
    """Status selectors send a qlang filter with Query and show only matching jobs."""
    result = three_jobs("list", "--json", "-o", "id", *argv)
    assert [r["id"] for r in serializer.loads(result.out)] == ids
    assert three_jobs.fake.calls_of("query") == [("job", ["id"], qfilter)]


def test_list_ids_use_query_jobs_and_report_missing_ones(three_jobs):
    """Explicit ids go through QueryJobs; an unknown one is reported and exits 4."""
    result = three_jobs("list", "3", "42", "1")
    assert result.out.splitlines() == ["ID Status Summary", " 3 error  TEST_DELAY(0)",
                                       " 1 queued TEST_DELAY(0)"]
    assert_one_line_error(result, exitcodes.EXIT_NOT_FOUND, "job 42 not found")
    assert three_jobs.fake.calls_of("query") == []


def test_list_ids_filter_by_selector_locally(three_jobs):
    """With ids and a selector, only the named jobs in those statuses are shown."""
    assert three_jobs("list", "--no-headers", "-o", "id", "--error", "1", "3").out == "3\n"


def test_list_archived_jobs_need_the_archived_option(three_jobs):
    """An archived job named by id is shown only with --archived; else it is reported."""
    three_jobs.fake.set_status(1, "canceled")
    three_jobs.fake.archive_job(1)
    assert_one_line_error(three_jobs("list", "1"), exitcodes.EXIT_NOT_FOUND, "--archived")
    result = three_jobs("list", "--archived", "-o", "id,archived", "1")
    assert result == (0, "ID Archived\n 1 Y\n", "")


def test_a_listing_of_every_live_job_reads_as_a_filtered_one_does(three_jobs):
    """Without a filter the live jobs come through QueryJobs (no per-cell wrappers), in
    id order, as the same table Query gives for a status selector that picks them all."""
    fake = three_jobs.fake
    fake.add_job(status="success")
    in_id_order = fake.query_jobs
    # The daemon answers in its own order (its dict of jobs): the listing sorts by id.
    fake.query_jobs = lambda job_ids, fields: in_id_order(job_ids, fields)[::-1]
    fake.calls.clear()
    every = three_jobs("list", "-o", "status,summary,priority")
    assert [method for method, _ in fake.calls] == ["query_jobs"]
    picked = three_jobs("list", "-o", "status,summary,priority", "--pending", "--running",
                        "--finished")
    assert "query" in [method for method, _ in fake.calls]
    assert every == picked and every.code == 0 and len(every.out.splitlines()) == 5
    assert three_jobs("list", "--json").out == three_jobs("list", "--json", "--pending",
                                                          "--running", "--finished").out


def test_list_archived_without_ids_is_a_usage_error(three_jobs):
    """--archived without ids is refused: the archive is looked up by id only."""
    assert_one_line_error(three_jobs("list", "--archived"), exitcodes.EXIT_USAGE, "needs job IDs")


def test_query_cells_without_value_show_a_label_and_json_null():
    """A Query cell with a status other than RS_NORMAL shows a label in tables, null in JSON."""

    class Client:
        def query(self, what, fields, qfilter):
            return {"fields": [{"name": "id", "title": "ID", "kind": "number", "doc": ""}],
                    "data": [[[constants.RS_NODATA, None]], [[constants.RS_NORMAL, 4]]]}

    columns, rows = listing.rows_by_query(Client(), ["id"], frozenset())
    assert output.format_value("id", rows[0][0]) == "(nodata)"
    assert serializer.loads(output.json_records(["id"], rows)) == [{"id": None}, {"id": 4}]


@pytest.mark.parametrize("name, value, text", [
    ("received_ts", None, "-"), ("received_ts", [int(T0), 5], "2026-11-18 11:06:40"),
    ("archived", True, "Y"), ("summary", ["A(1)", "B"], "A(1),B"), ("ops", [{"a": 1}],
                                                                   '{"a":1}'),
    ("priority", -10, "-10"), ("opresult", [None, "x"], "-,x"),
    ("max_rss", 72708096, "69.3M"), ("memory_max", 0, "0B"), ("max_rss", None, "-"),
])
def test_values_are_formatted_for_people(name, value, text):
    """Nulls, timestamps, booleans, lists and objects have a human form."""
    assert output.format_value(name, value) == text


def test_log_lines_have_microsecond_local_times():
    """A log entry prints as its precise local time and its message."""
    assert output.log_line([3, [int(T0), 123456], "message", "hi"]) == \
        "2026-11-18 11:06:40.123456 hi"
    assert output.log_line([4, [int(T0), 0], "jqueue-test", {"k": 1}]).endswith('{"k":1}')


# list-fields

def test_list_fields_describes_fields(cli):
    """list-fields prints name, title, kind and description of every field or the named ones."""
    lines = cli("list-fields").out.splitlines()
    assert lines[0].split() == ["Name", "Title", "Kind", "Description"]
    assert len(lines) == 1 + len(constants.JOB_FIELDS)
    assert cli("list-fields", "--separator", ":", "--no-headers", "id").out == \
        "id:ID:number:Job ID\n"
    records = serializer.loads(cli("list-fields", "--json", "status").out)
    assert records == [{"name": "status", "title": "Status", "kind": "text",
                        "doc": "Job status"}]


def test_list_fields_unknown_field_exits_4(cli):
    """list-fields with an unknown field name exits 4 with one line."""
    assert_one_line_error(cli("list-fields", "bogus"), exitcodes.EXIT_NOT_FOUND, "bogus")


# info

def test_info_shows_times_durations_opcodes_results_and_logs(cli):
    """info shows the job's times with durations, and each opcode's input, result and log."""
    fake = cli.fake
    job_id = fake.add_job([{"OP_ID": "OP_TEST_JQUEUE", "log_messages": ["hi"]},
                           {"OP_ID": "OP_TEST_DELAY", "duration": 2}])
    fake.now = T0 + 0.12
    fake.set_status(job_id, "running")
    fake.add_log(job_id, "working")
    fake.now = T0 + 2.13
    fake.set_status(job_id, "error", ["OpExecError", ["boom"]])
    out = cli("info", job_id).out
    assert "  Started:  2026-11-18 11:06:40 (queued for 0.12s)\n" in out
    assert "  Ended:    2026-11-18 11:06:42 (ran for 2.01s)\n" in out
    assert "    Opcode 1: TEST_JQUEUE\n      Status: error\n" in out
    assert '      Input:\n        {\n          "OP_ID": "OP_TEST_JQUEUE",\n' in out
    assert "      Result: OpExecError: boom\n" in out
    assert "      Result: Preceding opcode failed\n" in out
    assert "      Log:\n        2026-11-18 11:06:40.120000 working\n" in out
    assert "    Opcode 2: TEST_DELAY(2)\n" in out and "      Log: none\n" in out


def test_info_pretty_prints_results_and_marks_unstarted_jobs(cli):
    """A success result is pretty JSON; a job canceled before starting never started."""
    done = cli.fake.add_job([{"OP_ID": "OP_TEST_JQUEUE"}], status="success",
                            result={"b": [1], "a": True})
    canceled = cli.fake.add_job(status="canceled")
    out = cli("info", done, canceled).out
    assert '      Result:\n        {\n          "a": true,\n          "b": [\n' in out
    assert "Started:  never\n" in out and "(after 0.00s in the queue)" in out
    assert "      Result: Job canceled by request\n" in out


def test_info_reports_unknown_jobs_and_shows_archived_ones(cli):
    """info finds archived jobs; a job not found is one stderr line and exit 4."""
    job_id = cli.fake.add_job(status="success")
    cli.fake.archive_job(job_id)
    result = cli("info", 77, job_id)
    assert "Job 1\n" in result.out and "  Archived: yes\n" in result.out
    assert_one_line_error(result, exitcodes.EXIT_NOT_FOUND, "job 77 not found")


# watch / wait

@pytest.mark.parametrize("status, code", [
    ("success", 0), ("error", exitcodes.EXIT_FAILURE), ("canceled", exitcodes.EXIT_CANCELED)])
def test_watch_prints_log_lines_and_the_final_status(cli, status, code):
    """watch prints each log entry once, then "Job N finished: STATUS", and exits with it."""
    job_id = cli.fake.add_job()
    cli.fake.add_log(job_id, "queued note")
    cli.fake.script(job_id, ("running", ["one"]), (None, ["two"]), (status, []))
    result = cli("watch", job_id)
    assert result.code == code
    assert result.out.splitlines() == [
        "2026-11-18 11:06:40.000000 queued note", "2026-11-18 11:06:40.000000 one",
        "2026-11-18 11:06:40.000000 two", "Job 1 finished: %s%s" % (
            status, ": opcode 1 (TEST_DELAY(0)) failed" if status == "error" else "")]
    serials = [args[3] for args in cli.fake.calls_of("wait_for_job_change")]
    assert serials == [None, 1, 2, 3]
    assert all(args[1] == ["status", "opstatus"]
               for args in cli.fake.calls_of("wait_for_job_change"))


def test_watch_of_an_unknown_job_exits_4(cli):
    """watch of a job the daemon does not know exits 4 with one line."""
    assert_one_line_error(cli("watch", 9), exitcodes.EXIT_NOT_FOUND, "job 9 not found")


def test_watch_of_a_canceling_job_polls_with_a_pause(cli):
    """A canceling job is answered at once by the daemon, so watch sleeps between looks."""
    job_id = cli.fake.add_job(status="running")
    cli.fake.set_status(job_id, "canceling")
    cli.fake.script(job_id, (None, []), ("canceled", []))
    result = cli("watch", job_id)
    assert result == (exitcodes.EXIT_CANCELED, "Job 1 finished: canceled\n", "")
    assert cli.sleeps == [watching.CANCELING_POLL_INTERVAL]


def test_wait_prints_one_line_per_job_and_exits_with_the_worst(cli):
    """wait prints no log, one line per job, and exits with the worst outcome."""
    ok, failed, canceled = (cli.fake.add_job(), cli.fake.add_job(), cli.fake.add_job())
    cli.fake.add_log(ok, "not shown")
    cli.fake.script(ok, ("success", []))
    cli.fake.script(failed, ("error", []))
    cli.fake.script(canceled, ("canceled", []))
    result = cli("wait", ok, failed, canceled)
    assert result == (exitcodes.EXIT_FAILURE, "Job 1 finished: success\n"
                      "Job 2 finished: error: opcode 1 (TEST_DELAY(0)) failed\n"
                      "Job 3 finished: canceled\n", "")
    assert_one_line_error(cli("wait", ok, 99), exitcodes.EXIT_NOT_FOUND, "job 99 not found")


def test_wait_timeout_gives_up_on_jobs_still_running(cli):
    """wait --timeout S: the jobs that finished in time say so, the others "still STATUS"
    (--json: their records as they are); exit 3 (other-systems row 17), worse than a
    failure or a job not found; the jobs go on."""
    done, slow = cli.fake.add_job(), cli.fake.add_job(status="running")
    cli.fake.script(done, ("error", []))
    result = cli("wait", "--timeout", "10m", done, slow, 99)
    assert result == (3, "Job 1 finished: error: opcode 1 "
                      "(TEST_DELAY(0)) failed\nJob 2 still running\n", "jqctl: job 99 not found\n")
    assert cli.fake.waited == 600
    result = cli("--timeout", "5", "wait", "--json", "--timeout", "1", slow)
    assert result.code == 3
    assert [r["status"] for r in serializer.loads(result.out)] == ["running"]
    assert cli.fake.waited == 601 and cli.fake.jobs[slow].calc_status() == "running"
    cli.fake.fail("wait_for_job_change", errors.NoMasterError("no jqueue daemon listening"))
    result = cli("wait", "--timeout", "5", slow)  # a lost daemon: tried until the deadline
    assert result.code == exitcodes.EXIT_UNREACHABLE and "gave up after 5s" in result.err
    assert sum(cli.sleeps) <= 6


def _failed_job(cli):
    """A job of two opcodes whose first failed with "disk full"."""
    job_id = cli.fake.add_job([{"OP_ID": "OP_TEST_JQUEUE", "result": 5},
                               {"OP_ID": "OP_TEST_DELAY", "duration": 1}])
    cli.fake.set_status(job_id, "error", ["OpExecError", ["disk full"]])
    return job_id


def test_wait_and_submit_wait_say_why_a_job_failed(cli):
    """The failing opcode's error is on the "finished" line of wait and submit --wait."""
    job_id = _failed_job(cli)
    assert cli("wait", job_id).out == (
        "Job 1 finished: error: opcode 1 (TEST_JQUEUE): OpExecError: disk full\n")
    cli.fake.script(2, ("error", []))
    assert cli("submit", "--wait", "--op", "OP_TEST_DELAY", "duration=1").code == 1


def test_result_prints_each_opcodes_result_or_error(cli):
    """result prints one line per opcode: its status and its result or error."""
    ok = cli.fake.add_job([{"OP_ID": "OP_TEST_JQUEUE", "result": {"rows": 3}}],
                          status="success", result={"rows": 3})
    failed = _failed_job(cli)
    result = cli("result", ok, failed)
    assert result.code == 0
    assert result.out.splitlines() == [
        "Job 1: success", '    Opcode 1 TEST_JQUEUE: success: {"rows":3}',
        "Job 2: error", "    Opcode 1 TEST_JQUEUE: error: OpExecError: disk full",
        "    Opcode 2 TEST_DELAY(1): error: Preceding opcode failed"]


def test_result_and_wait_json_give_one_outcome_record_per_job(cli):
    """result --json and wait --json print the documented outcome records."""
    failed = _failed_job(cli)
    expected = [{"id": failed, "status": "error",
                 "error": "opcode 1 (TEST_JQUEUE): OpExecError: disk full",
                 "ops": [{"summary": "TEST_JQUEUE", "status": "error",
                          "result": ["OpExecError", ["disk full"]],
                          "error": "OpExecError: disk full"},
                         {"summary": "TEST_DELAY(1)", "status": "error",
                          "result": "Preceding opcode failed",
                          "error": "Preceding opcode failed"}]}]
    assert serializer.loads(cli("result", "--json", failed).out) == expected
    result = cli("wait", "--json", failed)
    assert result.code == 1 and serializer.loads(result.out) == expected


def test_worst_orders_outcomes():
    """Several outcomes give the worst: not found > error > canceled > success."""
    assert exitcodes.worst([0, 3, 0]) == 3
    assert exitcodes.worst([3, 1, 0]) == 1
    assert exitcodes.worst([1, 4]) == 4
    assert exitcodes.worst([]) == 0
    assert exitcodes.for_status("canceled") == 3
    with pytest.raises(errors.ProgrammerError):
        exitcodes.for_status("running")


# queue

def test_queue_drain_undrain_and_info(cli):
    """queue drain/undrain set the flag; queue info shows it, the master and job counts."""
    cli.fake.add_job()
    cli.fake.add_job(status="success")
    assert cli("queue", "drain") == (0, "", "")
    assert cli.fake.drained is True
    lines = cli("queue", "info").out.splitlines()
    assert lines[:4] == ["Drained: yes", "Master node: node1.example.com",
                         "Cluster name: cluster.example.com", "Jobs: 2"]
    assert "  queued: 1" in lines and "  success: 1" in lines and "  error: 0" in lines
    assert lines[-3:] == ["Changes: accepted", "Job files: 1.5s since the last checkpoint, "
                          "2 job(s) behind (checkpoint every 5s)",
                          "Retention: archive after 6h, purge after 3w (a pass every 1m)"]
    assert cli("queue", "undrain").code == 0 and cli.fake.drained is False
    data = serializer.loads(cli("queue", "info", "--json").out)
    assert data["drain_flag"] is False and data["jobs"]["queued"] == 1
    assert data["queue_status"]["view_lag"] == 2
    assert data["retention"]["keep_archived"] == 21 * 86400


def test_queue_info_shows_the_last_retention_pass_and_the_totals(cli):
    """What the last pass archived, purged and freed, and the totals since the start."""
    cli.fake.config["retention"].update(
        keep_archived=0, last={"archived": 3, "purged": 2, "bytes_freed": 8192, "more": True,
                               "at": cli.fake.now, "seconds": 0.1},
        totals={"passes": 4, "archived": 30, "purged": 20, "bytes_freed": 81920})
    lines = cli("queue", "info").out.splitlines()
    assert lines[-3] == "Retention: archive after 6h, purge never (a pass every 1m)"
    assert lines[-2].endswith(": archived 3, purged 2, 8192 bytes freed; more at the next")
    assert lines[-1] == "  Since the start: 4 passes, archived 30, purged 20, 81920 bytes " \
                        "freed"


# errors, seams, launcher

@pytest.mark.parametrize("error, code", [
    (errors.NoMasterError("cannot connect to /fake/jqueue.sock: no such file"),
     exitcodes.EXIT_UNREACHABLE),
    (errors.AccessDeniedError("permission denied on /fake/jqueue.sock"),
     exitcodes.EXIT_UNREACHABLE),
    (errors.ConnectionClosedError("connection closed"), exitcodes.EXIT_UNREACHABLE),
    (errors.RequestTimeoutError("no answer within 60s"), exitcodes.EXIT_UNREACHABLE),
    (errors.ProtocolError("answer is not JSON"), exitcodes.EXIT_UNREACHABLE),
    (errors.RequestError("unknown method Query"), exitcodes.EXIT_REFUSED),
    (errors.JobLost("job 5 not found"), exitcodes.EXIT_NOT_FOUND),
    (errors.OpPrereqError("bad input"), exitcodes.EXIT_REFUSED),
    (errors.OpPrereqError("no such thing", constants.ECODE_NOENT), exitcodes.EXIT_NOT_FOUND),
    (errors.ParameterError("bad parameter"), exitcodes.EXIT_REFUSED),
    (errors.JobQueueDrainError("drained"), exitcodes.EXIT_REFUSED),
    (errors.JobQueueFull("full"), exitcodes.EXIT_REFUSED),
    (errors.JobQueueError("shutting down"), exitcodes.EXIT_REFUSED),
    (errors.QueryFilterParseError("bad filter"), exitcodes.EXIT_REFUSED),
    (errors.GenericError("SomethingNew: odd"), exitcodes.EXIT_REFUSED),
])
def test_client_errors_become_one_line_and_their_exit_status(cli, error, code):
    """Each client error class prints "jqctl: <message>" once and exits with its status."""
    cli.fake.fail("query_jobs", error)
    result = cli("list")
    assert_one_line_error(result, code)
    if isinstance(error, errors.NoMasterError):
        assert result.err.startswith("jqctl: %s (socket from " % errors.error_message(error))
    else:
        assert result.err == "jqctl: %s\n" % errors.error_message(error)


def test_multi_line_messages_are_joined_on_one_line(cli):
    """A message with newlines is still printed as a single line."""
    cli.fake.fail("set_drain_flag", errors.JobQueueError("first\nsecond"))
    assert cli("queue", "drain").err == "jqctl: first second\n"


def test_unreachable_daemon_at_connect_exits_5(cli):
    """A factory that cannot connect makes every daemon command exit 5 with one line."""

    def unreachable(socket_path, timeout):
        raise errors.NoMasterError("cannot connect to %s" % socket_path)

    ctx = app.Context(unreachable, stdout=io.StringIO(), stderr=io.StringIO())
    assert app.run(ctx, ["--socket", "/nope", "list"]) == exitcodes.EXIT_UNREACHABLE
    assert ctx.stderr.getvalue() == (
        "jqctl: cannot connect to /nope (socket from --socket): start jq-masterd --state-dir "
        "DIR --socket /nope, or point jqctl at the daemon's socket (--socket PATH or "
        "$JQ_SOCKET) or at its state directory (--state-dir DIR or $JQ_STATE_DIR)\n")


@pytest.mark.parametrize("argv, env, expected", [
    (["--socket", "/s/x.sock", "--state-dir", "/d"], {"JQ_SOCKET": "/e/y.sock",
                                                      "JQ_STATE_DIR": "/f"}, "/s/x.sock"),
    (["--state-dir", "/d"], {"JQ_SOCKET": "/e/y.sock", "JQ_STATE_DIR": "/f"}, "/e/y.sock"),
    (["--state-dir", "/d"], {"JQ_STATE_DIR": "/f"}, "/d/run/jqueue.sock"),
    ([], {"JQ_STATE_DIR": "/f"}, "/f/run/jqueue.sock"),
    ([], {}, "/var/lib/jqueue/run/jqueue.sock"),
])
def test_the_socket_follows_the_documented_precedence(cli, monkeypatch, argv, env, expected):
    """--socket > JQ_SOCKET > --state-dir > JQ_STATE_DIR > the default."""
    monkeypatch.delenv("JQ_SOCKET", raising=False)
    monkeypatch.delenv("JQ_STATE_DIR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli(*argv, "queue", "drain").code == 0
    assert cli.connections == [(expected, app.DEFAULT_TIMEOUT)]


def test_no_daemon_says_where_the_socket_came_from_and_how_to_fix_it(cli, monkeypatch, tmp_path):
    """JQ_STATE_DIR pointing at a directory without a daemon: the message names the socket,
    its source and the fixes."""
    monkeypatch.delenv("JQ_SOCKET", raising=False)
    monkeypatch.setenv("JQ_STATE_DIR", str(tmp_path))
    ctx = app.Context(app.connect, stdout=io.StringIO(), stderr=io.StringIO())
    assert app.run(ctx, ["queue", "info"]) == exitcodes.EXIT_UNREACHABLE
    message = ctx.stderr.getvalue()
    assert message.startswith("jqctl: no jqueue daemon listening on %s/run/jqueue.sock" %
                              tmp_path)
    assert "(socket from $JQ_STATE_DIR): start jq-masterd --state-dir %s," % tmp_path in message


def test_ctrl_c_exits_130(cli):
    """Ctrl-C (KeyboardInterrupt) exits 130 with one line and no traceback."""
    cli.fake.fail("wait_for_job_change", KeyboardInterrupt())
    assert_one_line_error(cli("watch", cli.fake.add_job()), exitcodes.EXIT_INTERRUPTED,
                          "interrupted")


def test_broken_pipe_on_stdout_exits_quietly(cli):
    """A reader that went away (jqctl list | head) ends jqctl quietly."""

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    cli.fake.add_job()
    err = io.StringIO()
    ctx = app.Context(cli.factory, stdout=ClosedPipe(), stderr=err)
    assert app.run(ctx, ["list"]) == exitcodes.EXIT_SUCCESS
    assert err.getvalue() == ""


def test_main_hands_socket_and_timeout_to_the_factory_and_closes(cli, capsys):
    """main(argv, client_factory) connects with --socket/--timeout and closes the client."""
    assert main(["--socket", "/run/x.sock", "--timeout", "7", "queue", "drain"],
                client_factory=cli.factory) == 0
    assert cli.connections == [("/run/x.sock", 7.0)] and cli.fake.closed
    assert main(["queue", "undrain"], client_factory=cli.factory) == 0
    assert cli.connections[-1] == (app.locate_socket()[0], app.DEFAULT_TIMEOUT)
    assert capsys.readouterr() == ("", "")


def test_commands_that_fail_before_talking_connect_to_nothing(cli):
    """A usage error found by jqctl itself never opens a connection."""
    cli("submit", "-", stdin="[]")
    cli("list", "-o", "nope")
    assert cli.connections == []


def test_version_prints_the_package_version(capsys):
    """--version prints "jqctl VERSION" and exits 0."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("jqctl ")


def test_launcher_runs_the_cli(tmp_path):
    """tools/jqctl is an executable launcher over jqueue.cli.main."""
    launcher = os.path.join(ROOT, "tools", "jqctl")
    assert os.access(launcher, os.X_OK)
    done = subprocess.run([sys.executable, launcher, "bogus"], capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=60, check=False)
    assert done.returncode == exitcodes.EXIT_USAGE
    assert done.stderr.startswith("jqctl: argument COMMAND: invalid choice")


def test_exit_code_table_is_complete_and_distinct():
    """The documented table lists every exit status once."""
    codes = [code for code, _ in exitcodes.TABLE]
    assert codes == sorted(set(codes)) == [0, 1, 2, 3, 4, 5, 6, 7, 130]


def _public_methods(cls):
    return sorted(name for name, value in vars(cls).items()
                  if callable(value) and (not name.startswith("_") or name == "__init__"))


def test_fake_luxi_client_matches_the_real_client():
    """FakeLuxiClient has every public method of jqueue.luxi.client.Client, same signature."""
    from jqueue.luxi import client as luxi_client

    real = _public_methods(luxi_client.Client)
    assert set(CLIENT_API) <= set(real)
    for name in real:
        expected = inspect.signature(getattr(luxi_client.Client, name))
        assert inspect.signature(getattr(FakeLuxiClient, name)) == expected, name
    assert callable(luxi_client.default_socket_path)


def test_submit_token_returns_the_first_job_and_files_get_numbered_tokens(cli):
    """--token makes a retried submit print the first job's id; job i of a file gets
    TOKEN:i."""
    first = cli("submit", "--token", "t1", "--op", "OP_TEST_DELAY", "duration=0")
    again = cli("submit", "--token", "t1", "--op", "OP_TEST_DELAY", "duration=0")
    assert first.code == again.code == 0 and first.out == again.out == "1\n"
    text = '[[{"OP_ID": "OP_TEST_DELAY", "duration": 0}], [{"OP_ID": "OP_TEST_DELAY", ' \
           '"duration": 1}]]'
    assert cli("submit", "--token", "f", "-", stdin=text).out == "2\n3\n"
    assert cli.fake.calls_of("submit_many_jobs")[-1][1] == ["f:1", "f:2"]
    assert cli("submit", "--token", "", "--op", "OP_TEST_DELAY").code == exitcodes.EXIT_USAGE


def test_submit_not_acknowledged_prints_the_ids_and_exits_7(cli):
    """A submission recorded but not acknowledged prints its ids, the fate, and exits 7."""
    cli.fake.fail("submit_job", errors.not_acknowledged(
        [7], errors.ReplicationError("change not acknowledged within 1s")))
    result = cli("submit", "--wait", "--op", "OP_TEST_DELAY", "duration=0")
    assert result.code == exitcodes.EXIT_NOT_ACKNOWLEDGED and result.out == "7\n"
    assert result.err == ("jqctl: job 7 submitted but not acknowledged: change not "
                          "acknowledged within 1s\n")


def test_list_shows_results_logs_and_priority_for_people_and_raw_in_json(cli):
    """list renders errors as "Class: message", logs as their messages and a finished job's
    priority as the one it ran at (as info does); --json keeps the raw values."""
    ok = cli.fake.add_job([{"OP_ID": "OP_TEST_JQUEUE", "priority": -10}], status="success",
                          result=True)
    failed = _failed_job(cli)
    cli.fake.add_log(failed, "fetching")
    result = cli("list", "-o", "id,priority,opresult,oplog", "--separator", "|")
    assert result.out.splitlines() == [
        "ID|Prio|OpCode_result|OpCode_log", "%d|-10|true|-" % ok,
        "%d|0|OpExecError: disk full,Preceding opcode failed|fetching,-" % failed]
    info = cli("info", ok).out
    assert "  Priority: -10 (high)" in info and "      Priority: -10 (high)" in info
    raw = serializer.loads(cli("list", "-o", "id,priority,opresult", "--json").out)
    assert raw[0] == {"id": ok, "priority": 0, "opresult": [True]}
    assert raw[1]["opresult"][0] == ["OpExecError", ["disk full"]]


def test_info_json_prints_the_raw_fields_of_each_job(cli):
    """info --json prints one object per job with the documented fields."""
    job_id = cli.fake.add_job()
    record = serializer.loads(cli("info", "--json", job_id).out)[0]
    assert set(record) == set(info.INFO_FIELDS) and record["id"] == job_id


def test_submit_json_prints_one_record_per_job(cli):
    """submit --json prints [{"id", "error"}] per job; with --wait, outcome records."""
    result = cli("submit", "--json", "--op", "OP_TEST_DELAY", "duration=0")
    assert result.code == 0 and serializer.loads(result.out) == [{"id": 1, "error": None}]
    cli.fake.script(2, ("success", []))
    result = cli("submit", "--json", "--wait", "--op", "OP_TEST_DELAY", "duration=0")
    record = serializer.loads(result.out)[0]
    assert result.code == 0 and (record["id"], record["status"], record["error"]) == (
        2, "success", None)
    assert cli("submit", "--json", "--watch", "--op", "OP_TEST_DELAY").code == 2


def test_list_opcodes_lists_and_describes_the_daemons_opcodes(cli):
    """list-opcodes prints a table of opcodes; with names, each parameter; --json raw."""
    lines = cli("list-opcodes").out.splitlines()
    assert lines[0].split() == ["Opcode", "Description"]
    assert [line.split()[0] for line in lines[1:]] == opcodes.REGISTRY.known()
    assert "OP_TEST_DELAY" in opcodes.REGISTRY.known()
    described = cli("list-opcodes", "OP_TEST_DELAY").out.splitlines()
    assert described[0].startswith("OP_TEST_DELAY: Sleep for a while")
    assert described[2].split()[:2] == ["duration", "a"] and "required" in described[2]
    assert any(line.split()[0] == "priority" for line in described[3:])
    raw = serializer.loads(cli("list-opcodes", "--json", "OP_TEST_JQUEUE").out)
    assert [op["id"] for op in raw] == ["OP_TEST_JQUEUE"]
    result = cli("list-opcodes", "OP_TEST_DELYA")
    assert result.code == exitcodes.EXIT_NOT_FOUND and "did you mean OP_TEST_DELAY?" in result.err


@pytest.mark.parametrize("argv", [["log", "999"], ["signal", "999", "TERM"], ["term", "999"],
                                  ["kill", "999"]])
def test_the_command_job_commands_say_not_found_the_same_way(cli, argv):
    """log, signal, term and kill of a job that does not exist: "job 999 not found", 4."""
    result = cli(*argv)
    assert (result.code, result.err) == (exitcodes.EXIT_NOT_FOUND, "jqctl: job 999 not found\n")
