"""Tests of jqueue.serializer: compact output, strict input."""

import gc

import pytest

from jqueue import errors, serializer


def test_output_is_compact_utf8_json():
    """dumps writes compact JSON; dumps_bytes its UTF-8 bytes."""
    assert serializer.dumps({"a": [1, None, "é"]}) == '{"a":[1,null,"\\u00e9"]}'
    assert serializer.loads(serializer.dumps_bytes({"a": "é"})) == {"a": "é"}


@pytest.mark.parametrize("value", [
    {"a": [1, None, True, False, -0.0, 1.5e16, 2 ** 63 - 1, -2 ** 63, "é😀\n\"\\"]},
    [[[0, i], [0, "queued"]] for i in range(100)], (1, [2, (3,)]), "", 0, [], {}])
def test_an_answer_is_the_json_of_its_value(value):
    """An answer (orjson's) reads back as the strict encoder's record of the same value;
    only its bytes may differ (text as UTF-8, not escaped)."""
    answer = serializer.dumps_answer(value)
    assert isinstance(answer, bytes)
    assert serializer.loads(answer) == serializer.loads(serializer.dumps_bytes(value))
    assert "é".encode() in serializer.dumps_answer(["é"])


def _nested(depth):
    value = [1]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value", [
    [2 ** 64], {"n": -2 ** 63 - 1}, {1: "x", "a": {2.5: None}}, b"bytes", _nested(300)])
def test_what_orjson_cannot_write_an_answer_has_as_simplejson_writes_it(value):
    """Integers beyond 64 bits, keys that are no strings, bytes, deep nesting: simplejson's
    bytes."""
    assert serializer.dumps_answer(value) == serializer.dumps_bytes(value)


def test_an_answer_refuses_what_simplejson_refuses_but_a_non_finite_float_is_null():
    """Sets and other objects are refused (TypeError, as for a record); a NaN in an
    answer, never stored, is written null (a record refuses it: ValueError)."""
    for value in ({1, 2}, object()):
        with pytest.raises(TypeError):
            serializer.dumps_answer([value])
    assert serializer.dumps_answer([float("nan"), float("inf")]) == b"[null,null]"
    with pytest.raises(ValueError):
        serializer.dumps_bytes([float("nan")])


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


@pytest.mark.parametrize("number", [
    123456789012345678901234567890, 2 ** 64, 2 ** 64 - 1, 2 ** 63, -2 ** 63 - 1, -2 ** 63,
    10 ** 18, -10 ** 18 - 7])
def test_big_integers_stay_exact(number):
    """Integers beyond 64 bits (signed or not) parse exactly, as integers: orjson, which
    reads them as floats, never sees them (ids are checked elsewhere)."""
    for data in (b"[%d]" % number, "{\"n\": %d}" % number):
        value = serializer.loads(data)
        value = value[0] if isinstance(value, list) else value["n"]
        assert type(value) is int and value == number


def _typed(value):
    """value with the type of every leaf spelled out (1 and 1.0, 0.0 and -0.0 differ)."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return (type(value).__name__, repr(value))


_SAMPLES = [
    b"0", b"-0", b"-0.0", b"0.0", b"1e5", b"1E+2", b"1.5e-3", b"-12.5E3", b"1e-400",
    b"1.7976931348623157e308", b"2.2250738585072014e-308", b"5e-324", b"0.1", b"123.456",
    b"9007199254740993", b"9007199254740993.0", b"999999999999999999", b"0.30000000000000004",
    b"1.000000000000000000001", b'"\\u00e9\\n\\t\\"\\\\/\\ud83d\\ude00"',
    '"é😀\u2028"'.encode(), b'"\\ud800"', b'"\\udc00x"', b"true", b"false", b"null",
    b' \t\r\n[1 , 2 ]\n', b'{"a":1,"a":2}', b'{"":{"":[]}}', b"[1,]", b"01", b"1.", b".5",
    b"+1", b"-", b"[1 2]", b'"a\x01"', b'"\\x"', b"nul", b"[" * 1200 + b"]" * 1200,
    b"{} x", b"1e400", b"-1e400", b"NaN", b"Infinity", b"\xef\xbb\xbf[1]", b"\xc3\x28",
]


@pytest.mark.parametrize("data", _SAMPLES)
def test_every_text_parses_as_the_standard_library_parses_it(data):
    """orjson's answer, where it is taken, is the standard decoder's, to the type of each
    number; where that decoder refuses a text, loads refuses it (bytes and text alike)."""
    def reference(text):
        try:
            text = text.decode("utf-8") if isinstance(text, bytes) else text
            return _typed(serializer._DECODER.decode(text.lstrip("\ufeff")))
        except (ValueError, RecursionError):
            return "refused"

    def ours(text):
        try:
            return _typed(serializer.loads(text))
        except errors.ParseError:
            return "refused"
    assert ours(data) == reference(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    assert ours(text) == reference(text)


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
    real, real_orjson = serializer._DECODER, serializer.orjson

    class Spy:
        JSONDecodeError = real_orjson.JSONDecodeError

        def decode(self, text):
            seen.append(("json", len(text) >= serializer.BIG_TEXT, gc.isenabled()))
            return real.decode(text)

        def loads(self, text):
            seen.append(("orjson", len(text) >= serializer.BIG_TEXT, gc.isenabled()))
            return real_orjson.loads(text)
    monkeypatch.setattr(serializer, "_DECODER", Spy())
    monkeypatch.setattr(serializer, "orjson", Spy())
    text = serializer.dumps_bytes([[[0, i], [0, "queued"]] for i in range(20000)])
    assert len(serializer.loads(text)) == 20000 and gc.isenabled()
    with pytest.raises(errors.ParseError):
        serializer.loads(text[:-1])
    assert gc.isenabled()
    assert serializer.loads(b"[1]") == [1]
    # The malformed text: orjson refuses it, the standard decoder says why.
    assert seen == [("orjson", True, False), ("orjson", True, False), ("json", True, False),
                    ("orjson", False, True)]
