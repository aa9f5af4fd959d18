"""Tests of jqueue.grouptree: who is in which group, leaf counts along the path, references."""

import pytest

from jqueue.grouptree import GroupReferenceError, GroupTree

Q, R, S, E, C = "queued", "running", "success", "error", "canceled"


@pytest.fixture
def tree():
    """render(1) > shot1(2) > {3, 4}; render(1) > 5; other(6) holds nothing."""
    t = GroupTree()
    t.add(1, None, Q, "render")
    t.add(2, 1, Q, "shot1")
    t.add(3, 2, Q)
    t.add(4, 2, Q)
    t.add(5, 1, Q)
    t.add(6, None, Q, "other")
    return t


def test_counts_follow_the_leaves_along_the_path_to_the_root(tree):
    """A leaf's status counts in every group above it, and only there."""
    assert dict(tree.counts(1)) == {Q: 3} and dict(tree.counts(2)) == {Q: 2}
    assert tree.set_status(3, E) == [2, 1]
    assert dict(tree.counts(1)) == {Q: 2, E: 1} and dict(tree.counts(2)) == {Q: 1, E: 1}
    assert tree.set_status(3, E) == []  # no change, nothing to derive
    assert dict(tree.counts(6)) == {}


def test_an_empty_group_is_a_leaf_until_it_gets_a_job(tree):
    """A group without jobs counts as a leaf of its own status (queued unless canceled)."""
    tree.add(7, 1, Q, "empty")
    assert dict(tree.counts(1)) == {Q: 4}
    tree.set_status(7, C)
    assert dict(tree.counts(1)) == {Q: 3, C: 1}
    assert tree.add(8, 7, S) == [7, 1]
    assert dict(tree.counts(1)) == {Q: 3, S: 1} and dict(tree.counts(7)) == {S: 1}
    assert tree.remove(8) == [7, 1]
    assert dict(tree.counts(1)) == {Q: 3, C: 1}  # empty again: its own status counts


def test_a_group_with_jobs_cannot_leave_before_them(tree):
    """Removing a group that still has jobs is refused; jobs first, then the group."""
    with pytest.raises(ValueError):
        tree.remove(2)
    tree.remove(3)
    tree.remove(4)
    tree.remove(2)
    assert 2 not in tree and tree.children(1) == [5]
    assert dict(tree.counts(1)) == {Q: 1}


def test_a_job_whose_group_is_gone_is_a_root():
    """A parent that is not a group of the tree (archived) makes the job a root."""
    tree = GroupTree()
    assert tree.add(9, 4, Q) == []
    assert tree.parent(9) is None and tree.ancestors(9) == [] and tree.root(9) == 9


def test_subtree_ancestors_and_root(tree):
    """subtree lists parents before their jobs; ancestors go nearest first."""
    assert tree.subtree(1) == [1, 2, 3, 4, 5]
    assert tree.subtree(3) == [3]
    assert tree.ancestors(4) == [2, 1] and tree.root(4) == 1
    assert tree.children(2) == [3, 4] and tree.children(3) == []


def test_references_by_title_and_path(tree):
    """A title names the one group with it anywhere; a path walks titles from the root."""
    assert tree.resolve("shot1") == 2
    assert tree.resolve("render|shot1") == 2
    assert tree.resolve("render") == 1


@pytest.mark.parametrize("reference, message", [
    ("nothing", "no live group titled 'nothing'"),
    ("shot1|render", "no live group at path"),
    ("other|shot1", "no live group at path"),
    ("render||shot1", "empty title"),
    ("|render", "empty title"),
])
def test_references_that_name_nothing_are_refused(tree, reference, message):
    with pytest.raises(GroupReferenceError, match=message.replace("|", r"\|")):
        tree.resolve(reference)


def test_ambiguous_titles_and_paths_are_refused_naming_the_candidates(tree):
    """Two groups with one title: the title is ambiguous (Coalition took the first)."""
    tree.add(7, 6, Q, "shot1")
    with pytest.raises(GroupReferenceError, match="ambiguous group titled 'shot1': jobs 2, 7"):
        tree.resolve("shot1")
    assert tree.resolve("other|shot1") == 7
    tree.add(8, None, Q, "render")
    assert tree.resolve("render|shot1") == 2  # the other render has no shot1: unique
    tree.add(9, 8, Q, "shot1")
    with pytest.raises(GroupReferenceError, match=r"ambiguous group at path 'render\|shot1'"):
        tree.resolve("render|shot1")


def test_pending_groups_of_the_same_request_resolve_too(tree):
    """Groups submitted earlier in the same request are found by title and path."""
    pending = {10: (None, "new"), 11: (10, "inner")}
    assert tree.resolve("new|inner", pending) == 11
    assert tree.resolve("inner", pending) == 11
