"""Tests of jqueue.luxi.framing: message buffer, request parsing, response encoding."""

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jqueue import errors, serializer
from jqueue.luxi import framing

EOM = b"\x03"


# MessageBuffer


def test_buffer_yields_messages_split_across_chunks():
    """A message arriving in pieces is yielded once, when its terminator arrives."""
    buffer = framing.MessageBuffer(100)
    assert list(buffer.feed(b'{"a":')) == []
    assert buffer.buffered == 5
    assert list(buffer.feed(b"1}")) == []
    assert list(buffer.feed(b"\x03")) == [b'{"a":1}']
    assert buffer.buffered == 0


def test_buffer_yields_several_messages_of_one_chunk_in_order():
    """Several terminated messages in one chunk come out in order; the rest is kept."""
    buffer = framing.MessageBuffer(100)
    assert list(buffer.feed(b"one\x03two\x03\x03thr")) == [b"one", b"two", b""]
    assert list(buffer.feed(b"ee\x03")) == [b"three"]


def test_buffer_accepts_a_message_of_exactly_max_size():
    """max_size bytes (terminator not counted) is still a valid message."""
    buffer = framing.MessageBuffer(10)
    assert list(buffer.feed(b"x" * 10 + EOM)) == [b"x" * 10]


def test_buffer_refuses_unterminated_data_beyond_max_size_at_once():
    """The chunk that makes the unfinished message too long raises ProtocolError."""
    buffer = framing.MessageBuffer(10)
    assert list(buffer.feed(b"x" * 6)) == []
    with pytest.raises(errors.ProtocolError, match="message exceeds 10 bytes"):
        list(buffer.feed(b"x" * 5))


def test_buffer_refuses_a_terminated_message_longer_than_max_size():
    """A too long message is refused even when its terminator is in the same chunk."""
    buffer = framing.MessageBuffer(10)
    with pytest.raises(errors.ProtocolError, match="exceeds 10"):
        list(buffer.feed(b"x" * 11 + EOM))


def test_buffer_drops_its_data_and_refuses_more_after_an_overflow():
    """After an overflow nothing stays buffered and any further data is refused."""
    buffer = framing.MessageBuffer(10)
    with pytest.raises(errors.ProtocolError):
        list(buffer.feed(b"x" * 50))
    assert buffer.buffered == 0 and buffer.failed
    with pytest.raises(errors.ProtocolError):
        list(buffer.feed(b"ok\x03"))


def test_buffer_yields_messages_before_the_one_that_overflows():
    """Messages completed before the overflow in the same chunk are still yielded."""
    buffer = framing.MessageBuffer(4)
    seen = []
    with pytest.raises(errors.ProtocolError):
        for message in buffer.feed(b"ab\x03toolong"):
            seen.append(message)
    assert seen == [b"ab"]


@given(st.lists(st.binary(max_size=20).filter(lambda b: EOM not in b), max_size=8),
       st.data())
def test_buffer_reassembles_any_split_of_a_stream(messages, data):
    """However a stream of messages is cut into chunks, the same messages come out."""
    stream = b"".join(m + EOM for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    buffer = framing.MessageBuffer(20)
    out, start = [], 0
    for cut in cuts + [len(stream)]:
        out.extend(buffer.feed(stream[start:cut]))
        start = cut
    assert out == messages


# Requests


def test_parse_request_accepts_ganeti_clients_version_and_newline():
    """Real clients send "version" and a newline before the terminator: both accepted."""
    data = b'{"method": "QueryJobs", "args": [[1], ["id"]], "version": 2100000}\n'
    assert framing.parse_request(data) == ("QueryJobs", [[1], ["id"]])


def test_parse_request_ignores_unknown_keys():
    """Keys other than method and args do not matter."""
    assert framing.parse_request(b'{"method":"X","args":[],"extra":{"a":1}}') == ("X", [])


@pytest.mark.parametrize("data, problem", [
    (b'{"method": "X", "args": ["\xff"]}', "not valid UTF-8"),
    (b'{"method": "X", "args": [', "not valid JSON"),
    (b"", "not valid JSON"),
    (b'{"method": "X", "args": [NaN]}', "not valid JSON"),
    (b'["X", []]', "must be a JSON object, got a list"),
    (b'"SubmitJob"', "must be a JSON object, got a string"),
    (b'{"args": []}', "request has no 'method'"),
    (b'{"method": 3, "args": []}', "'method' must be a string, got a number"),
    (b'{"method": null, "args": []}', "'method' must be a string, got null"),
    (b'{"method": "X"}', "request has no 'args'"),
    (b'{"method": "X", "args": {"a": 1}}', "'args' must be a list, got an object"),
    (b'{"method": "X", "args": "1"}', "'args' must be a list, got a string"),
])
def test_parse_request_names_the_problem(data, problem):
    """Each kind of malformed request is a RequestError saying what is wrong."""
    with pytest.raises(errors.RequestError, match=problem):
        framing.parse_request(data)


def test_parse_request_refuses_absurd_nesting():
    """A deeply nested request is a RequestError, not a RecursionError."""
    depth = sys.getrecursionlimit() * 2
    data = b'{"method": "X", "args": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(errors.RequestError, match="not valid JSON"):
        framing.parse_request(data)


def test_encode_request_round_trips_through_parse_request():
    """A request the client encodes is what the server parses."""
    data = framing.encode_request("SubmitJob", [[{"OP_ID": "OP_TEST_DELAY"}]])
    assert data.endswith(EOM) and data.count(EOM) == 1
    assert framing.parse_request(data[:-1]) == ("SubmitJob", [[{"OP_ID": "OP_TEST_DELAY"}]])


# Responses


def test_encode_response_has_success_and_result_and_no_version():
    """Answers carry exactly success and result, as Ganeti's clients expect."""
    data = framing.encode_response(True, [1, "two"])
    assert data.endswith(EOM)
    assert serializer.loads(data[:-1]) == {"success": True, "result": [1, "two"]}


@given(st.text())
def test_encoded_messages_never_contain_a_raw_terminator(text):
    """Any text, even holding \\x03, is escaped so the terminator appears once, at the end."""
    data = framing.encode_response(False, ["OpExecError", [text]])
    assert data.index(EOM) == len(data) - 1
    assert framing.parse_response(data[:-1]) == (False, ["OpExecError", [text]])


def test_encode_message_refuses_values_json_cannot_hold():
    """NaN and non-JSON objects raise instead of producing an invalid message."""
    with pytest.raises(ValueError):
        framing.encode_message({"x": float("nan")})
    with pytest.raises(TypeError):
        framing.encode_message({"x": object()})


@pytest.mark.parametrize("data", [
    b"nope", b"[]", b'{"success": true}', b'{"success": 1, "result": 2}', b'{"result": 1}',
])
def test_parse_response_refuses_malformed_answers(data):
    """An answer that is not {"success": bool, "result": ...} is a ProtocolError."""
    with pytest.raises(errors.ProtocolError):
        framing.parse_response(data)
