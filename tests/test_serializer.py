"""Tests of jqueue.serializer: compact output, strict input."""

import gc

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


def test_a_byte_order_mark_is_ignored_and_duplicate_keys_refused_when_asked():
    """A leading BOM (an editor's) is skipped, in text and bytes; unique_keys refuses an
    object naming a key twice, at any depth."""
    assert serializer.loads("\ufeff{\"a\": 1}") == {"a": 1}
    assert serializer.loads(b"\xef\xbb\xbf[1]") == [1]
    assert serializer.loads(b'{"a": 1, "a": 2}') == {"a": 2}
    with pytest.raises(errors.ParseError, match="duplicate key"):
        serializer.loads(b'{"b": {"a": 1, "a": 2}}', unique_keys=True)


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


def test_a_big_text_is_parsed_without_the_cyclic_collector_which_resumes_after(monkeypatch):
    """A listing of 10^5 rows is parsed without collections (they more than doubled the
    parse), a small text with them; the collector runs again afterwards, after a
    malformed text too."""
    seen = []
    real = serializer._DECODER

    class Spy:
        def decode(self, text):
            seen.append((len(text) >= serializer.BIG_TEXT, gc.isenabled()))
            return real.decode(text)
    monkeypatch.setattr(serializer, "_DECODER", Spy())
    text = serializer.dumps_bytes([[[0, i], [0, "queued"]] for i in range(20000)])
    assert len(serializer.loads(text)) == 20000 and gc.isenabled()
    with pytest.raises(errors.ParseError):
        serializer.loads(text[:-1])
    assert gc.isenabled()
    assert serializer.loads(b"[1]") == [1]
    assert seen == [(True, False), (True, False), (False, True)]
