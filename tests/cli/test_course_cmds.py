"""Tests of jqctl's hold, release, reset, retry, purge, group, tree, list --parent and the
submit options --parent, --in and --not-before, against a fake LUXI client."""

import datetime

import pytest
from cli_helpers import Cli

from jqueue import constants, serializer
from jqueue.cli import exitcodes


@pytest.fixture
def cli():
    return Cli()


def group_job(cli, title, parent=None):
    job_id = cli.fake.submit_job([{"OP_ID": constants.OP_GROUP, "title": title}],
                                 parent=parent)
    return job_id


def test_hold_release_reset_retry_print_the_daemons_messages(cli):
    """Each command calls its method per job and prints the answer."""
    queued = cli.fake.add_job()
    failed = cli.fake.add_job(status="error", result=["OpExecError", ["boom"]])
    assert cli("hold", queued) == (0, "Job %d held\n" % queued, "")
    assert cli.fake.jobs[queued].held
    assert cli("release", queued).out == "Job %d released\n" % queued
    assert cli("retry", failed).out == "Job %d queued for one more attempt\n" % failed
    assert cli.fake.jobs[failed].calc_status() == "queued"
    cli.fake.set_status(queued, "success")
    assert cli("reset", queued).out == "Job %d reset\n" % queued
    assert [name for name, _ in cli.fake.calls if name.endswith("_job")] == [
        "hold_job", "release_job", "retry_job", "reset_job"]


def test_course_refusals_and_unknown_jobs_set_the_exit_status(cli):
    """A refusal is 6 with the daemon's message on stderr; an unknown job is 4."""
    done = cli.fake.add_job(status="success")
    result = cli("hold", done)
    assert result.code == exitcodes.EXIT_REFUSED
    assert "already finished" in result.err
    result = cli("retry", 99)
    assert result.code == exitcodes.EXIT_NOT_FOUND and "job 99 not found" in result.err
    assert cli("reset", "x").code == exitcodes.EXIT_NOT_FOUND  # no group of that title
    assert cli("reset", "|").code == exitcodes.EXIT_USAGE


def test_course_commands_take_group_titles_and_paths(cli):
    """hold shot1 holds the group that title names (its id goes to the daemon; the fake
    knows no paths: the end-to-end tests hold render|shot2)."""
    render = group_job(cli, "render")
    shot1 = group_job(cli, "shot1", parent=render)
    result = cli("hold", "shot1")
    assert result.code == 0, result.err
    assert cli.fake.jobs[shot1].held and not cli.fake.jobs[render].held
    assert cli("release", "shot1").code == 0
    assert not cli.fake.jobs[shot1].held


def test_cancel_and_wait_take_group_titles_and_paths_too(cli):
    """cancel shot1 and wait shot1 act on the group that title names (as hold does); an
    unknown title is "not found" (4), before anything is canceled."""
    render = group_job(cli, "render")
    shot1 = group_job(cli, "shot1", parent=render)
    cli.fake.script(shot1, ("success", []))
    assert cli("wait", "shot1") == (0, "Job %d finished: success\n" % shot1, "")
    assert cli("cancel", "nosuch", "render").code == exitcodes.EXIT_NOT_FOUND
    assert cli.fake.calls_of("cancel_job") == []
    result = cli("cancel", "render")
    assert result.code == 0, result.err
    assert [args[0] for args in cli.fake.calls_of("cancel_job")] == [render]


def test_submit_and_run_pass_the_parent_and_the_start_time(cli):
    """--parent (id, title or path), --in and --not-before reach the daemon's options."""
    group = group_job(cli, "render")
    assert cli("submit", "--parent", "render", "--in", "30m", "--op", "OP_TEST_DELAY",
               "duration=0").code == 0
    ops, token, options = cli.fake.calls_of("submit_job")[-1]
    assert options == {"parent": "render", "start_in": 1800}
    assert cli.fake.jobs[2].parent == group
    assert cli("run", "--parent", str(group), "--not-before", "2030-01-02T03:04:05+00:00",
               "--", "true").code == 0
    options = cli.fake.calls_of("submit_job")[-1][2]
    expected = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert options == {"parent": group, "not_before": expected.timestamp()}
    text = '[[{"OP_ID": "OP_TEST_DELAY", "duration": 0}], [{"OP_ID": "OP_TEST_DELAY", ' \
           '"duration": 1}]]'
    assert cli("submit", "--not-before", "1900000000", "-", stdin=text).code == 0
    assert cli.fake.calls_of("submit_many_jobs")[-1][2] == [{"not_before": 1900000000}] * 2


@pytest.mark.parametrize("argv", [
    ["--in", "soon"], ["--in", "-5"], ["--not-before", "tomorrow"],
    ["--in", "1h", "--not-before", "1900000000"],
])
def test_bad_start_times_are_usage_errors(cli, argv):
    result = cli("submit", *argv, "--op", "OP_TEST_DELAY", "duration=0")
    assert result.code == exitcodes.EXIT_USAGE and result.err.startswith("jqctl: ")
    assert not cli.fake.calls_of("submit_job")


def test_group_makes_a_group_job_and_prints_its_id(cli):
    """jqctl group TITLE submits one OP_GROUP opcode, inside --parent if given."""
    assert cli("group", "render") == (0, "1\n", "")
    assert cli("group", "--parent", "render", "shot1").out == "2\n"
    assert cli.fake.calls_of("submit_job")[-1] == (
        [{"OP_ID": "OP_GROUP", "title": "shot1"}], None, {"parent": "render"})


def test_group_notify_gives_the_group_a_webhook_and_run_and_submit_take_it_too(cli):
    """--notify (with --notify-on) reaches the submit's options; --notify-on alone is a
    usage error, a URL that is not http(s) the queue's refusal."""
    assert cli("group", "render", "--notify", "https://ci.example/h", "--notify-on",
               "error").out == "1\n"
    assert cli.fake.calls_of("submit_job")[-1][2] == {
        "notify": {"url": "https://ci.example/h", "on": "error"}}
    assert cli.fake.jobs[1].notify == {"url": "https://ci.example/h", "on": ["error"]}
    assert cli("run", "--notify", "http://h/x", "true").code == 0
    assert cli.fake.calls_of("submit_job")[-1][2] == {"notify": "http://h/x"}
    result = cli("group", "shot", "--notify-on", "error")
    assert result.code == exitcodes.EXIT_USAGE and "--notify-on goes with --notify" in result.err
    result = cli("submit", "--notify", "ftp://h", "--op", "OP_TEST_DELAY", "duration=0")
    assert result.code == exitcodes.EXIT_REFUSED and "notify's url must be" in result.err


def test_list_parent_lists_the_jobs_directly_in_a_group(cli):
    """--parent resolves the reference and filters on the parent field (and statuses)."""
    render = group_job(cli, "render")
    first = cli.fake.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}], parent=render)
    second = cli.fake.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}], parent=render)
    cli.fake.add_job()
    cli.fake.set_status(second, "success")
    result = cli("list", "--parent", "render", "--no-headers", "-o", "id")
    assert result.out.split() == [str(first), str(second)]
    result = cli("list", "--parent", str(render), "--finished", "--no-headers", "-o", "id")
    assert result.out.split() == [str(second)]
    assert cli.fake.calls_of("query")[-1][2] == [
        "&", ["|", ["=", "status", "success"], ["=", "status", "error"],
              ["=", "status", "canceled"]], ["=", "parent", render]]
    assert cli("list", "--parent", "nope").code == exitcodes.EXIT_NOT_FOUND
    assert cli("list", "--parent", "render", "1").code == exitcodes.EXIT_USAGE


def test_tree_prints_groups_with_their_jobs_indented(cli):
    """Every root group, its jobs under it; --json nests them; a root may be named."""
    render = group_job(cli, "render")
    shot = group_job(cli, "shot1", parent=render)
    leaf = cli.fake.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}], parent=shot)
    cli.fake.add_job()  # in no group: not shown
    cli.fake.jobs[leaf].held = True
    lines = cli("tree").out.splitlines()
    assert lines[0].split() == ["ID", "Status", "Done", "Title"]
    assert [line.split() for line in lines[1:]] == [
        [str(render), "queued", "render"], [str(shot), "queued", "shot1"],
        [str(leaf), "queued*", "TEST_DELAY(0)"]]
    assert lines[3].endswith("    TEST_DELAY(0)")
    nested = serializer.loads(cli("tree", "--json", "shot1").out)
    assert [n["id"] for n in nested] == [shot]
    assert [c["id"] for c in nested[0]["children"]] == [leaf]


def test_purge_calls_until_done_and_reports_what_was_freed(cli):
    """purge --older-than AGE loops PurgeJobs until done; --json gives the totals."""
    for _ in range(5):
        job_id = cli.fake.add_job(status="success")
        cli.fake.jobs[job_id].archived = True
    cli.fake.now += 10 * 86400
    cli.fake.purge_chunk = 2
    result = cli("purge", "--older-than", "1d")
    assert result == (0, "Purged 5 jobs, 20.0 KiB freed\n", "")
    assert [args[0] for args in cli.fake.calls_of("purge_jobs")] == [86400] * 3
    assert serializer.loads(cli("purge", "--older-than", "7d", "--json").out) == {
        "purged": 0, "bytes_freed": 0}
    assert cli("purge").code == exitcodes.EXIT_USAGE
