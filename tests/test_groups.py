"""Tests of groups in a JobQueue (jqueue.groupkeeper): parents at submit, statuses derived
from the tree, dependencies on groups, changes applied to a tree, reopening, archival."""

import re

import pytest
from conftest import delay, jqop, run_jobs

from jqueue import errors
from jqueue.job import DONE_FIELDS, is_done

FIELDS = ["status", "opstatus", "total", "finished", "errors", "working"]


def group(title):
    return {"OP_ID": "OP_GROUP", "title": title}


def rows(queue, ids, fields=FIELDS):
    queue.wait_durable(10)
    return {i: row for i, row in zip(ids, queue.query_jobs(ids, fields))}


def three_levels(queue):
    """render > {shot1 > {ok, failing}, shot2 > {late (held)}, top-level ok}."""
    render = queue.submit_job([group("render")])
    shot1 = queue.submit_job([group("shot1")], parent="render")
    shot2 = queue.submit_job([group("shot2")], parent="render")
    ok = queue.submit_job([jqop()], parent="render|shot1")
    failing = queue.submit_job([jqop(fail=True, fail_message="frame 7 broke")], parent=shot1)
    late = queue.submit_job([jqop()], parent="shot2")
    queue.hold_job(late)
    top = queue.submit_job([jqop()], parent=render)
    return render, shot1, shot2, ok, failing, late, top


def test_a_three_level_tree_with_a_failing_leaf(open_queue):
    """Group statuses derive from the leaves: error shows at once, but a group is final
    (its opcode, end_ts) only once every job of its tree ended."""
    queue = open_queue()
    render, shot1, shot2, ok, failing, late, top = three_levels(queue)
    assert rows(queue, [render, shot1])[render] == ["queued", ["queued"], 4, 0, 0, 0]
    run_jobs(queue)
    got = rows(queue, [render, shot1, shot2, failing])
    assert got[shot1] == ["error", ["error"], 2, 2, 1, 0]
    assert got[shot2] == ["queued", ["queued"], 1, 0, 0, 0]
    assert got[render] == ["error", ["queued"], 4, 3, 1, 0]  # shown error, not final
    assert queue.query_jobs([render, shot1], ["end_ts"]) == [[None], [[1800000000, 0]]]
    assert queue.query_jobs([render], ["progress", "children", "parent"]) == [
        [0.75, [shot1, shot2, top], None]]
    queue.release_job(late)
    run_jobs(queue)
    got = rows(queue, [render, shot2])
    assert got[render] == ["error", ["error"], 4, 4, 1, 0]
    assert got[shot2] == ["success", ["success"], 1, 1, 0, 0]
    outcome = queue.wait_for_job(render, timeout=1)
    assert errors.error_message(outcome.error) == "1 of the 4 jobs of group %d failed" % render


def test_reset_of_a_group_requeues_its_finished_jobs_and_runs_them_again(open_queue):
    """Reset of a group applies to the finished jobs of its tree; statuses follow."""
    queue = open_queue()
    render, shot1, _, ok, failing, late, top = three_levels(queue)
    queue.release_job(late)
    run_jobs(queue)
    ok_, message = queue.reset_job(render)
    assert ok_ and message == "Group %d: 4 job(s) reset" % render
    got = rows(queue, [render, shot1, ok, failing, top])
    assert got[render] == ["queued", ["queued"], 4, 0, 0, 0]
    assert got[failing][:2] == ["queued", ["queued"]]
    assert queue.query_jobs([render], ["end_ts"]) == [[None]]
    run_jobs(queue)
    assert rows(queue, [render])[render][:2] == ["error", ["error"]]


def test_a_dependency_on_a_group_waits_for_its_whole_tree(open_queue):
    """A job depending on a group runs once every job of the tree ended, not when the
    group first shows error."""
    queue = open_queue()
    render, shot1, _, _, _, late, _ = three_levels(queue)
    after = queue.submit_job([jqop(depends=[[render, ["error"]]])])
    run_jobs(queue)
    assert rows(queue, [render, after], ["status"]) == {render: ["error"], after: ["waiting"]}
    queue.release_job(late)
    run_jobs(queue)
    assert rows(queue, [after], ["status"])[after] == ["success"]


def test_waiting_for_a_group_ends_only_with_its_tree(open_queue):
    """wait_for_job on a group showing error while jobs of it are held times out; the
    fields waiters read (status, opstatus) say it is not done."""
    queue = open_queue()
    render, *_, late, _ = three_levels(queue)
    run_jobs(queue)
    info = queue.query_jobs([render], DONE_FIELDS)[0]
    assert info == ["error", ["queued"]] and not is_done(info)
    with pytest.raises(errors.WaitTimeout):
        queue.wait_for_job(render, timeout=0.2)


def test_parents_by_id_title_path_and_relative_in_one_request(open_queue):
    """A parent may be an id, a decimal string, a title, a path, or in SubmitManyJobs a
    relative id or the title of a group submitted earlier in the request."""
    queue = open_queue()
    results = queue.submit_many_jobs(
        [[group("a")], [group("b")], [delay()], [delay()], [delay()]],
        options=[None, {"parent": -1}, {"parent": "a|b"}, {"parent": "b"}, {"parent": -4}])
    a, b, j1, j2, j3 = [job_id for _, job_id in results]
    j4 = queue.submit_job([delay()], parent=str(b))
    assert queue.query_jobs([b, j1, j2, j3, j4], ["parent"]) == [[a], [b], [b], [a], [b]]
    assert queue.query_jobs([a], ["children"]) == [[[b, j3]]]
    assert queue.resolve_job("a|b") == b and queue.resolve_job(str(j1)) == j1
    with pytest.raises(errors.OpPrereqError) as info:
        queue.resolve_job("x" * 5000)  # (jqctl cancel, wait, hold: not a "parent")
    assert re.fullmatch(r"invalid job or group 'xxx.*\.\.\.: a job id, a group title or a "
                        r"path of titles \(a\|b\)", errors.error_message(info.value))


@pytest.mark.parametrize("parent, message", [
    ("nope", "parent: no live group titled 'nope'"),
    ("x|nope", r"parent: no live group at path 'x\|nope'"),
    ("dup", "parent: ambiguous group titled 'dup': jobs 2, 3 match; give the job id"),
    (1, "parent: job 1 is not a group"),
    (99, "parent: job 99 is not a live job"),
])
def test_parents_that_name_no_group_or_several_are_refused(open_queue, parent, message):
    """The caller's error names the reference; nothing is created."""
    queue = open_queue()
    plain = queue.submit_job([delay()])
    queue.submit_job([group("dup")])
    queue.submit_job([group("dup")])
    queue.submit_job([group("x")])
    with pytest.raises(errors.OpPrereqError, match=message):
        queue.submit_job([delay()], parent=parent)
    with pytest.raises(errors.OpPrereqError, match="job 1: " + message):
        queue.submit_many_jobs([[delay()], [delay()]], options=[None, {"parent": parent}])
    assert len(queue.query_jobs([], ["id"])) == 4 and plain == 1


@pytest.mark.parametrize("options, message", [
    ({"parent": True}, "invalid parent"),
    ({"parent": -1}, "invalid job reference -1"),
    ({"parent": "a\0b"}, "invalid parent"),
    ({"parent": "x" * 5000}, "invalid parent"),
    ({"parent": ["a"]}, "invalid parent"),
    ({"not_before": "soon"}, "not_before must be a non-negative number"),
    ({"start_in": -5}, "start_in must be a non-negative number"),
    ({"start_in": float("nan")}, "start_in must be"),
    ({"not_before": 1, "start_in": 1}, "not both"),
    ({"color": "red"}, "options must be an object with the keys"),
])
def test_hostile_job_options_are_refused_before_anything_is_recorded(open_queue, options,
                                                                     message):
    queue = open_queue()
    with pytest.raises(errors.OpPrereqError, match=message):
        queue.submit_job_nowait([delay()], options=options)
    assert queue.query_jobs([], ["id"]) == []
    assert queue.submit_job([delay()]) == 1


def test_cancel_and_priority_of_a_group_apply_to_its_tree(open_queue):
    """Canceling a group cancels its unfinished jobs; a priority change reaches them."""
    queue = open_queue()
    render, shot1, shot2, ok, failing, late, top = three_levels(queue)
    ok_, message = queue.change_job_priority(render, -10)
    assert ok_ and "group %d" % render in message
    assert queue.query_jobs([ok, late], ["priority"]) == [[-10], [-10]]
    assert queue.cancel_job(render) == (True, "Group %d: 4 job(s) canceled or being "
                                              "canceled" % render)
    got = rows(queue, [render, shot1, late])
    assert got[render] == ["canceled", ["canceled"], 4, 4, 0, 0]
    assert got[late][:2] == ["canceled", ["canceled"]]
    assert queue.cancel_job(render)[0] is False  # nothing left to cancel


def test_a_job_given_no_priority_takes_its_groups_current_one(open_queue):
    """Priority inherits at submit (Coalition's rule): a job none of whose opcodes names
    a priority gets the nearest group's current one (after a change of the group's too),
    through nested groups and inside one request; a job given one keeps it."""
    queue = open_queue()
    render = queue.submit_job([dict(group("render"), priority=-10)])
    shot = queue.submit_job([group("shot")], parent=render)
    plain = queue.submit_job([jqop(), jqop()], parent="render|shot")
    own = queue.submit_job([jqop(priority=5), jqop()], parent=shot)
    explicit_none = queue.submit_job([dict(jqop(), priority=None)], parent=shot)
    outside = queue.submit_job([jqop()])
    assert queue.query_jobs([shot, plain, own, explicit_none, outside],
                            ["priority", "oppriority"]) == [
        [-10, [-10]], [-10, [-10, -10]], [0, [5, 0]], [-10, [-10]], [0, [0]]]
    assert queue.change_job_priority(shot, 3)[0]
    later = queue.submit_job([jqop()], parent=shot)
    (ok1, batch_group), (ok2, batch_job) = queue.submit_many_jobs(
        [[dict(group("batch"), priority=-2)], [jqop()]],
        options=[{"parent": render}, {"parent": -1}])
    assert ok1 and ok2
    assert queue.query_jobs([later, batch_group, batch_job], ["priority"]) == [
        [3], [-2], [-2]]


def test_an_empty_group_waits_until_canceled_and_a_new_job_reopens_it(open_queue):
    """A group without jobs is queued; canceled it ends; a job added later reopens it."""
    queue = open_queue()
    empty = queue.submit_job([group("empty")])
    assert queue.cancel_job(empty) == (True, "Job %d canceled" % empty)
    assert rows(queue, [empty])[empty][:2] == ["canceled", ["canceled"]]
    child = queue.submit_job([jqop()], parent=empty)
    assert rows(queue, [empty])[empty][:2] == ["queued", ["queued"]]
    run_jobs(queue)
    assert rows(queue, [empty, child], ["status"]) == {empty: ["success"],
                                                        child: ["success"]}


def test_group_statuses_are_derived_again_when_the_queue_opens(open_queue, tmp_path):
    """After a restart the groups follow their jobs (the crash rules skip groups)."""
    queue = open_queue()
    render, shot1, shot2, ok, failing, late, top = three_levels(queue)
    run_jobs(queue)
    queue.shutdown()
    queue = open_queue()
    got = rows(queue, [render, shot1, shot2])
    assert got[render] == ["error", ["queued"], 4, 3, 1, 0]
    assert got[shot2] == ["queued", ["queued"], 1, 0, 0, 0]
    assert queue.query_jobs([late], ["held"]) == [[True]]
    queue.release_job(late)
    run_jobs(queue)
    assert rows(queue, [render])[render][:2] == ["error", ["error"]]


def listed(queue, status):
    """Ids of a listing page filtered by status (the queue's index, as GET /jobs)."""
    return [row[0] for row in queue.list_jobs(["id"], filters={"status": [status]})["rows"]]


def test_listings_filter_groups_by_their_shown_status_also_after_a_restart(open_queue):
    """A group is listed by the status it shows (error as soon as a job of it failed,
    though it is recorded queued until its tree ended), as its status field says; an
    empty group canceled is listed canceled."""
    queue = open_queue()
    render, shot1, shot2, ok, failing, late, top = three_levels(queue)
    empty = queue.submit_job([group("empty")])
    queue.cancel_job(empty)
    run_jobs(queue)
    queue.wait_durable(10)
    for _ in range(2):
        assert listed(queue, "error") == [render, shot1, failing]
        assert listed(queue, "queued") == [shot2, late]
        assert listed(queue, "canceled") == [empty]
        assert queue.count_jobs("status") == {"error": 3, "queued": 2, "canceled": 1,
                                              "success": 2}
        queue.shutdown()
        queue = open_queue()


def test_autoarchive_takes_whole_trees_and_a_child_alone_leaves_its_group(open_queue, clock):
    """A group's tree is archived with the group once all of it ended; a finished job in
    an unfinished group stays; a job archived alone no longer counts for its group; an
    archived group keeps the counts of its tree (also once reopened)."""
    queue = open_queue()
    render, shot1, shot2, ok, failing, late, top = three_levels(queue)
    alone = queue.submit_job([delay()])
    run_jobs(queue)
    clock.advance(100)
    assert queue.auto_archive_jobs(10, 60) == (1, 0)  # only the job outside the tree
    assert queue.archive_job(ok)
    assert rows(queue, [shot1])[shot1] == ["error", ["error"], 1, 1, 1, 0]
    queue.release_job(late)
    run_jobs(queue)
    clock.advance(100)
    assert queue.auto_archive_jobs(10, 60) == (6, 0)
    assert queue.query_jobs([render, late, alone], ["archived"]) == [[True]] * 3
    # Archived groups show their tree as it ended (the leaves' counts they recorded).
    fields = FIELDS + ["progress", "counts", "parent", "children"]
    expected = {render: ["error", ["error"], 3, 3, 1, 0, 1.0,
                         {"error": 1, "success": 2}, None, None],
                shot1: ["error", ["error"], 1, 1, 1, 0, 1.0, {"error": 1}, render, None]}
    assert rows(queue, [render, shot1], fields) == expected
    queue.shutdown()
    assert rows(open_queue(), [render, shot1], fields) == expected


def test_a_job_in_a_held_group_shows_held_and_its_release_names_the_group(open_queue):
    """A job added to a held group is held through it: ``held`` says so, releasing the
    job alone is refused naming the group, releasing the group lets it run."""
    queue = open_queue()
    outer = queue.submit_job([group("outer")])
    inner = queue.submit_job([group("inner")], parent=outer)
    assert queue.hold_job(outer)[0]
    late = queue.submit_job([jqop()], parent=inner)
    run_jobs(queue)
    assert queue.query_jobs([outer, inner, late], ["held"]) == [[True], [True], [True]]
    ok, message = queue.release_job(late)
    assert not ok and message == ("Job %d is not held itself: group %d above it is (release "
                                  "the group)" % (late, inner))  # held with its tree
    assert queue.query_jobs([late], ["held", "status"]) == [[True, "queued"]]
    assert queue.release_job(outer)[0]
    run_jobs(queue)
    assert queue.query_jobs([late], ["held", "status"]) == [[False, "success"]]
