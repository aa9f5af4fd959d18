"""Tests of jqueue.qlang: query filter checking, compilation and evaluation."""

import pytest
from conftest import python_child
from hypothesis import given, settings
from hypothesis import strategies as st

from jqueue import constants, errors, qlang

ROWS = [
    {"id": 1, "status": "success", "priority": 0, "archived": False,
     "summary": ["TEST_DELAY(0)"], "opstatus": ["success"], "ops": [{"OP_ID": "OP_TEST_DELAY"}],
     "received_ts": [100, 500000], "start_ts": [101, 0], "end_ts": [102, 0]},
    {"id": 2, "status": "running", "priority": -10, "archived": False,
     "summary": ["TEST_JQUEUE", "TEST_DELAY(5)"], "opstatus": ["success", "running"],
     "ops": [], "received_ts": [200, 0], "start_ts": [201, 0], "end_ts": None},
    {"id": 3, "status": "queued", "priority": 10, "archived": True,
     "summary": [], "opstatus": [], "ops": [], "received_ts": [300, 0], "start_ts": None,
     "end_ts": None},
]


def matching(qfilter):
    """Ids of the sample rows the filter matches."""
    compiled = qlang.compile_filter(qfilter)
    return [row["id"] for row in ROWS if compiled(row)]


# Operators


@pytest.mark.parametrize("qfilter, ids", [
    (None, [1, 2, 3]),
    (["=", "status", "running"], [2]),
    (["==", "status", "running"], [2]),
    (["!=", "status", "running"], [1, 3]),
    (["=", "id", 3], [3]),
    (["=", "id", "3"], [3]),
    (["<", "priority", 0], [2]),
    (["<=", "priority", 0], [1, 2]),
    ([">", "priority", 0], [3]),
    ([">=", "priority", 0], [1, 3]),
    ([">", "id", 1], [2, 3]),
    (["<", "status", "s"], [2, 3]),
    (["=~", "status", "^(run|que)"], [2, 3]),
    (["=~", "summary", "DELAY\\(5"], [2]),
    (["=[]", "opstatus", "running"], [2]),
    (["=[]", "summary", "TEST_DELAY(0)"], [1]),
    (["?", "archived"], [3]),
    (["?", "summary"], [1, 2]),
    (["!", ["?", "archived"]], [1, 2]),
    (["=", "archived", True], [3]),
    (["|", ["=", "id", 1], ["=", "status", "queued"]], [1, 3]),
    (["&", ["=", "archived", False], [">", "priority", -5]], [1]),
    (["|"], []),
    (["&"], [1, 2, 3]),
    (["|", ["&", ["!", ["=", "id", 1]], ["=[]", "opstatus", "success"]], ["=", "id", 3]], [2, 3]),
])
def test_operators_select_the_expected_rows(qfilter, ids):
    """Each operator (and the '==' alias) selects the rows Ganeti's qlang would."""
    assert matching(qfilter) == ids


@pytest.mark.parametrize("qfilter, ids", [
    ([">", "received_ts", 150], [2, 3]),
    (["<", "received_ts", 100.6], [1]),
    ([">=", "received_ts", [200, 0]], [2, 3]),
    (["=", "end_ts", None], [2, 3]),
    (["!=", "end_ts", None], [1]),
    (["<", "end_ts", 1000], [1]),
    (["?", "start_ts"], [1, 2]),
])
def test_split_timestamps_compare_as_seconds(qfilter, ids):
    """[sec, usec] timestamps compare with numbers; a missing one matches only null."""
    assert matching(qfilter) == ids


def test_filter_reports_the_fields_it_reads():
    """A compiled filter lists its fields, so the caller can fetch them."""
    compiled = qlang.compile_filter(["|", ["=", "id", 1], ["!", ["?", "archived"]]])
    assert compiled.fields == {"id", "archived"}
    assert qlang.compile_filter(None).fields == frozenset()


def test_unexpected_row_values_never_raise():
    """A value of an unexpected type (a hand-edited job) just does not match."""
    odd = {"id": "x", "status": 5, "priority": None, "summary": 7, "received_ts": "now"}
    for qfilter in (["<", "status", "a"], [">", "priority", 1], ["=~", "summary", "a"],
                    ["=[]", "summary", "a"], ["<", "received_ts", 1], [">", "id", 0],
                    ["=[]", "status", "a"]):
        assert qlang.compile_filter(qfilter)(odd) is False


def test_a_regex_filter_takes_linear_time_whatever_the_pattern():
    """(?:a+)+$ against a summary of 40 a's and a '!' took Python's backtracking engine
    hours, in the daemon's event loop; RE2 answers at once. In a child process, so that a
    backtracking engine fails the test (after 60 s) instead of hanging it."""
    script = ("from jqueue import qlang\n"
              "f = qlang.compile_filter(['=~', 'summary', '(?:a+)+$'])\n"
              "print(f({'summary': 'a' * 40 + '!'}), f({'summary': 'a' * 40}))\n")
    assert python_child(script) == [b"False", b"True"]


def test_filter_is_compiled_once_and_reused():
    """The same compiled filter evaluates many rows independently."""
    compiled = qlang.compile_filter(["=~", "status", "ing$"])
    assert [compiled(row) for row in ROWS * 2] == [False, True, False] * 2


# Malformed filters


@pytest.mark.parametrize("qfilter, problem", [
    ([], "non-empty list"),
    ("status", "non-empty list"),
    ({"op": "="}, "non-empty list"),
    ([5, "id", 1], "operator must be a string"),
    (["~", "id", 1], "unknown operator '~'"),
    (["=", "id"], "takes a field name and a value, got 1"),
    (["=", "id", 1, 2], "got 3"),
    (["!"], "takes one filter, got 0"),
    (["!", ["?", "id"], ["?", "id"]], "got 2"),
    (["?"], "takes one field name"),
    (["=", "nope", 1], "unknown field 'nope'"),
    (["?", "nope"], "unknown field 'nope'"),
    (["=", 1, 1], "needs a field name"),
    (["=", ["id"], 1], "needs a field name"),
    (["|", ["=", "id", 1], "x"], "non-empty list"),
    (["=", "status", 5], "field 'status' .* must be a string"),
    (["=", "priority", "high"], "field 'priority' .* must be a number"),
    (["=", "priority", True], "must be a number"),
    (["=", "archived", 1], "must be a boolean"),
    (["=", "id", "../1"], "field 'id' .* job id"),
    (["=", "id", -1], "job id"),
    (["=", "id", 1.5], "job id"),
    (["=", "id", "1 "], "job id"),
    (["=", "status", None], "must be a string"),
    (["<", "received_ts", "yesterday"], "seconds"),
    (["<", "ops", 1], "cannot order field 'ops'"),
    (["<", "archived", True], "cannot order field 'archived'"),
    (["=~", "status", "("], "invalid regular expression"),
    (["=~", "status", "(a)\\1"], r"invalid regular expression.*RE2 syntax: invalid escape"),
    (["=~", "status", "(?<=a)b"], r"RE2 syntax: invalid perl operator"),
    (["=~", "status", "\ud800"], "lone surrogate"),
    (["=~", "status", 5], "needs a regular expression"),
    (["=~", "id", "1"], "needs a text or list field"),
    (["=[]", "priority", 1], "needs a text or list field"),
])
def test_malformed_filters_raise_a_parse_error_naming_the_problem(qfilter, problem):
    """Every malformed filter is a QueryFilterParseError whose message names the problem."""
    with pytest.raises(errors.QueryFilterParseError, match=problem):
        qlang.compile_filter(qfilter)


def test_nesting_beyond_the_limit_is_refused():
    """A filter nested deeper than QLANG_MAX_DEPTH is refused; one at the limit is fine."""
    def nested(levels):
        qfilter = ["?", "archived"]
        for _ in range(levels - 1):
            qfilter = ["!", qfilter]
        return qfilter

    assert qlang.compile_filter(nested(constants.QLANG_MAX_DEPTH))
    with pytest.raises(errors.QueryFilterParseError, match="nested deeper than"):
        qlang.compile_filter(nested(constants.QLANG_MAX_DEPTH + 1))


def test_custom_field_kinds_can_be_given():
    """compile_filter checks against the kinds it is given instead of the job fields."""
    compiled = qlang.compile_filter(["=", "name", "a"], kinds={"name": qlang.KIND_TEXT})
    assert compiled({"name": "a"}) and not compiled({"name": "b"})
    with pytest.raises(errors.QueryFilterParseError, match="unknown field 'status'"):
        qlang.compile_filter(["=", "status", "a"], kinds={"name": qlang.KIND_TEXT})


# requested_ids and simple_filter


@pytest.mark.parametrize("qfilter, ids", [
    (["=", "id", 4], {4}),
    (["==", "id", "4"], {4}),
    (["|", ["=", "id", 4], ["=", "id", "7"], ["==", "id", 4]], {4, 7}),
    (None, None),
    (["|"], None),
    (["|", ["=", "id", 4], ["=", "status", "running"]], None),
    (["&", ["=", "id", 4]], None),
    (["!=", "id", 4], None),
    (["=", "id", "../4"], None),
    (["|", ["=", "id", 4], ["|", ["=", "id", 5]]], None),
    (["=", "status", 4], None),
])
def test_requested_ids_recognizes_only_id_equalities(qfilter, ids):
    """Only an id equality or an '|' of id equalities names ids; anything else is None."""
    assert qlang.requested_ids(qfilter) == ids


def test_simple_filter_builds_an_or_of_equalities():
    """simple_filter is Ganeti's MakeSimpleFilter: an '|' of '=' on the field."""
    assert qlang.simple_filter([1, "2"]) == ["|", ["=", "id", 1], ["=", "id", "2"]]
    assert qlang.simple_filter(["running"], field="status") == [
        "|", ["=", "status", "running"]]
    assert qlang.simple_filter([]) is None
    assert qlang.requested_ids(qlang.simple_filter(["5", 6])) == {5, 6}


# Random filters

_FIELD_NAMES = st.sampled_from(sorted(qlang.job_field_kinds()) + ["nope", ""])
_OPERATORS = st.sampled_from(["|", "&", "!", "?", "=", "==", "!=", "<", ">", "<=", ">=",
                              "=~", "=[]", "~", ""])
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                    st.sampled_from(["running", "1", "(", ".*", "[a-"]),
                    st.lists(st.integers(), max_size=2))
_NOISE = st.recursive(
    st.one_of(st.tuples(_OPERATORS, _FIELD_NAMES, _VALUES).map(list),
              st.tuples(_OPERATORS, _FIELD_NAMES).map(list), _VALUES),
    lambda inner: st.one_of(
        st.tuples(_OPERATORS).map(list).flatmap(
            lambda op: st.lists(inner, max_size=3).map(lambda rest: op + rest)),
        st.lists(inner, max_size=3)),
    max_leaves=12)
_KNOWN_FIELDS = st.sampled_from(sorted(qlang.job_field_kinds()))
_PLAUSIBLE_VALUES = st.one_of(st.integers(-20, 20), st.sampled_from(
    ["running", "success", "1", "^r", "TEST_DELAY(0)", True, False, None, 1.5, [100, 0]]))
_PLAUSIBLE = st.recursive(
    st.one_of(
        st.tuples(st.sampled_from(["=", "==", "!=", "<", ">", "<=", ">=", "=~", "=[]"]),
                  _KNOWN_FIELDS, _PLAUSIBLE_VALUES).map(list),
        st.tuples(st.just("?"), _KNOWN_FIELDS).map(list)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda rest: ["|"] + rest),
        st.lists(inner, max_size=3).map(lambda rest: ["&"] + rest),
        inner.map(lambda f: ["!", f])),
    max_leaves=8)
_FILTERS = st.one_of(_PLAUSIBLE, _NOISE)


@settings(max_examples=400)
@given(_FILTERS)
def test_random_filters_compile_or_raise_a_parse_error(qfilter):
    """Any JSON-like filter either compiles (and evaluates rows to booleans) or is refused."""
    try:
        compiled = qlang.compile_filter(qfilter)
    except errors.QueryFilterParseError:
        return
    for row in ROWS:
        assert compiled(row) in (True, False)
    qlang.requested_ids(qfilter)
