"""Tests of jqueue.groupjob: the OP_GROUP opcode and how a group's statuses derive."""

import pytest

from jqueue import errors, groupjob, opcodes
from jqueue.groupjob import Counts

Q, W, R, K, S, E, C = ("queued", "waiting", "running", "canceling", "success", "error",
                       "canceled")


@pytest.mark.parametrize("leaves, shown, recorded, complete", [
    ({}, Q, Q, False),                     # an empty group waits for jobs
    ({Q: 2}, Q, Q, False),
    ({R: 1, E: 1, Q: 1}, R, R, False),     # running wins
    ({K: 1, S: 1}, R, R, False),           # being canceled still runs
    ({E: 1, Q: 2}, E, Q, False),           # Coalition shows error; not final until the end
    ({E: 1, S: 2}, E, E, True),
    ({S: 3}, S, S, True),
    ({S: 2, C: 1}, C, C, True),            # all ended, one canceled, none failed
    ({W: 1, S: 1}, Q, Q, False),
])
def test_statuses_derive_from_the_leaves(leaves, shown, recorded, complete):
    """Shown: running, else error, else success, else canceled, else queued; recorded is
    final only once every leaf ended."""
    counts = Counts(leaves)
    assert groupjob.shown_status(counts, Q) == shown
    assert groupjob.recorded_status(counts, Q) == recorded
    assert groupjob.complete(counts, Q) is complete


def test_an_empty_canceled_group_is_complete():
    """A group without jobs ends only when canceled."""
    assert groupjob.complete(Counts(), C) and groupjob.recorded_status(Counts(), C) == C
    assert groupjob.shown_status(Counts(), S) == Q  # emptied by archival: waits again


def test_counts_progress_and_results():
    """Progress is finished over all leaves; an error result names the failures."""
    counts = Counts({S: 2, E: 1, R: 1})
    assert (counts.total, counts.finished, counts.errors, counts.working) == (4, 3, 1, 1)
    assert groupjob.progress(counts) == 0.75 and groupjob.progress(Counts()) is None
    assert groupjob.result(E, counts, 7) == ["OpExecError",
                                             ["1 of the 4 jobs of group 7 failed"]]
    assert groupjob.result(S, Counts({S: 2}), 7) == {"total": 2}


@pytest.mark.parametrize("title", ["", "  ", "a|b", "42", "x" * 201, "tab\there", 7, None])
def test_bad_group_titles_are_refused(title):
    """A title must be printable, without '|', not a number, at most 200 characters."""
    with pytest.raises(errors.OpPrereqError, match="title"):
        opcodes.REGISTRY.build({"OP_ID": "OP_GROUP", "title": title})


def test_a_group_job_is_one_group_opcode_without_dependencies():
    """Mixed with other opcodes, or given dependencies, a group is refused."""
    group = opcodes.REGISTRY.build({"OP_ID": "OP_GROUP", "title": "g"}).to_dict()
    delay = opcodes.REGISTRY.build({"OP_ID": "OP_TEST_DELAY", "duration": 0}).to_dict()
    groupjob.check_job([group])
    groupjob.check_job([delay, delay])
    with pytest.raises(errors.OpPrereqError, match="nothing else"):
        groupjob.check_job([group, delay])
    with pytest.raises(errors.OpPrereqError, match="no dependencies of its own"):
        groupjob.check_job([dict(group, depends=[[1, []]])])


def test_inherited_parameters_are_a_hook(monkeypatch):
    """A parameter registered in INHERITED takes the merge of the job's and its groups'
    values (nearest first); jobs without the parameter are left alone."""
    monkeypatch.setitem(groupjob.INHERITED, "tags",
                        lambda own, above: sorted(set(own).union(*above)))
    job = {"OP_ID": "X", "tags": ["a"]}
    groupjob.inherit(job, [{"tags": ["b"]}, {"tags": None}, {"tags": ["c", "a"]}])
    assert job["tags"] == ["a", "b", "c"]
    other = {"OP_ID": "Y"}
    groupjob.inherit(other, [{"tags": ["b"]}])
    assert other == {"OP_ID": "Y"}
