"""Unit tests of jqueue.cli.output's table formatting (the CLI tests cover its use)."""

import pytest

from jqueue.cli import output


@pytest.mark.parametrize("name, values", [
    ("id", [1, 22, 333]),
    ("status", ["queued", "success"]),
    ("summary", [["TEST_DELAY(0)"], ["A", "B"], []]),
    ("opstart", [[[1, 0], None], []]),
    ("received_ts", [[1700000000, 5], None]),
    ("archived", [True, False, None]),
    ("priority", [0, -10, output.Unavailable(2)]),
    ("opresult", [[None, {"a": 1}], ["x", 3]]),
    ("ops", [[{"OP_ID": "OP_TEST_DELAY"}]]),
    ("max_rss", [72708096, 1 << 30, 512]),
])
def test_a_column_reads_as_each_of_its_values_does(name, values):
    """Whole columns of the common kinds are formatted at once, as value by value."""
    assert output.format_column(name, values) == [output.format_value(name, v)
                                                  for v in values]


def test_tables_align_columns_numbers_right_without_trailing_blanks():
    lines = output.table_lines(["ID", "Status", "Note"],
                               [["1", "queued", ""], ["100", "success", "x "]], numeric={0})
    assert lines == [" ID Status  Note", "  1 queued", "100 success x"]
    assert output.table_lines(None, [["a", "b"]], separator="|") == ["a|b"]
    assert output.table_lines(["A"], []) == ["A"] and output.table_lines(None, []) == []
