"""Tests of jqueue.serializer: compact output, strict input."""

import pytest

from jqueue import errors, serializer


def test_output_is_compact_utf8_json():
    """dumps writes compact JSON; dumps_bytes its UTF-8 bytes."""
    assert serializer.dumps({"a": [1, None, "é"]}) == '{"a":[1,null,"\\u00e9"]}'
    assert serializer.loads(serializer.dumps_bytes({"a": "é"})) == {"a": "é"}


@pytest.mark.parametrize("data", [
    b'{"a": NaN}', b"[Infinity]", b"[-Infinity]", b'{"a": 1e999}', b"[-1e400]",
    b"\xff\xfe", b'{"a": 1', b"", b"[" * 100000 + b"]" * 100000, b'{"a" 1}',
])
def test_malformed_or_out_of_range_input_is_a_parse_error(data):
    """Bad JSON, bad UTF-8, non-finite numbers and absurd nesting raise ParseError."""
    with pytest.raises(errors.ParseError):
        serializer.loads(data)


def test_big_integers_stay_exact():
    """Integers beyond 64 bits parse exactly (ids are checked elsewhere)."""
    assert serializer.loads(b"[123456789012345678901234567890]") == [
        123456789012345678901234567890]


@pytest.mark.parametrize("value, ok", [
    ({"a": [1, 2.5, None, True, "x"]}, True), (float("inf"), False), (float("nan"), False),
    ({1, 2}, False), ({1: "x"}, False), (object(), False), (b"bytes", False),
    ((1, 2), False), ([[[]]], True), ([[]] * 3, True),
])
def test_is_json_data(value, ok):
    """Only plain, finite JSON data counts as JSON data."""
    assert serializer.is_json_data(value) is ok


def test_is_json_data_bounds_nesting():
    """Data nested deeper than MAX_DEPTH is not accepted as JSON data."""
    deep = []
    for _ in range(serializer.MAX_DEPTH + 5):
        deep = [deep]
    assert serializer.is_json_data(deep) is False
