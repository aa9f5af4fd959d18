"""JSON (de)serialization: the only module that imports simplejson or orjson.

Output is compact UTF-8 JSON. Input is parsed strictly: NaN, Infinity and numbers out
of a float's range are refused, and every failure (bad UTF-8, bad JSON, absurd numbers,
absurd nesting) is a ParseError.

simplejson writes records and files (strict about every float); orjson writes answers
(dumps_answer) and events, which hold only what the queue made (their journal records
and their lines in events.jsonl). orjson parses what it reads exactly as the standard
library's decoder would (most texts: job files, journal records, answers), in a third of
the time on a job file: parsing is most of what reopening a queue spends. Any text
orjson refuses, or that may hold an integer beyond 64 bits (which orjson would read as a
float), and every request whose keys must be unique, is parsed by the standard library's
decoder, whose rules (the ones above) decide.
"""

import contextlib
import gc
import json
import math
import threading

import orjson
import simplejson

from jqueue import errors


def _refuse_constant(name):
    raise ValueError("JSON constant %s is not allowed" % name)


def _finite_float(text):
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError("number %s is out of range" % text[:40])
    return value


_INF = float("inf")


def _unique_keys(pairs):
    """An object's pairs as a dict; ValueError if a key appears twice."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError("duplicate key %r in a JSON object" % key[:40])
            seen.add(key)
    return result


# Only plain data is encoded (no Decimal, no namedtuple): without simplejson's checks for
# those on every value, its C encoder takes a half of the time on a job record and a
# quarter on a 100,000-row Query answer (measured; the bytes are the same). Nor does it
# hold cycles (it is a job's record or an answer built from records): without the check
# for them, which files every list and dict in a table while encoding it, a 100,000-row
# Query answer takes a half of the time again. A cycle still cannot hang or crash the
# encoder: it raises RecursionError, as too deep a structure does.
_PLAIN = {"allow_nan": False, "use_decimal": False, "namedtuple_as_object": False,
          "check_circular": False}
_ENCODER = simplejson.JSONEncoder(separators=(",", ":"), **_PLAIN)
_PRETTY_ENCODER = simplejson.JSONEncoder(indent=2, sort_keys=True, **_PLAIN)
#: A run of 19 digits may be an integer orjson cannot hold (beyond 64 bits, signed or
#: not: it reads those as floats, silently); a text with one goes to _DECODER. Found as a
#: run of NUL bytes in the text with its digits made NULs (a NUL never stands in JSON):
#: ten times faster than a regular expression, a fifteenth of orjson's own time.
_DIGITS_TO_NUL = bytes.maketrans(b"0123456789", b"\0" * 10)
_LONG_RUN = b"\0" * 19
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float,
                                   object_pairs_hook=_unique_keys)


def dumps(obj):
    """Serialize obj to compact JSON text."""
    return _ENCODER.encode(obj)


def dumps_bytes(obj):
    """Serialize obj to compact UTF-8 JSON bytes."""
    return _ENCODER.encode(obj).encode("utf-8")


#: orjson refuses what simplejson is asked to refuse here (see dumps_answer).
_ANSWER_OPTIONS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                   | orjson.OPT_PASSTHROUGH_SUBCLASS)


def dumps_answer(obj):
    """Serialize an answer to compact UTF-8 JSON bytes: a LUXI response, and every JSON body
    of the HTTP API (answers, errors, the event stream's events, which events.jsonl keeps
    as they are answered). Calls between nodes keep dumps_bytes: they carry records.

    orjson writes it, in a sixth of simplejson's time (a 100,000-row Query answer: 76 ->
    13 ms), with two choices of its own that an answer, never stored, may keep: text as
    UTF-8 rather than \\u escapes, and a non-finite float as null. What orjson cannot
    write (an integer beyond 64 bits, a key that is no string, nesting deeper than 255,
    other types, subclasses) goes to simplejson, whose rules decide. Records and files
    are simplejson's (dumps_bytes), strict about every float, but for events (see the
    module's docstring).
    """
    try:
        return orjson.dumps(obj, option=_ANSWER_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError
        return dumps_bytes(obj)


def dumps_pretty(obj):
    """Serialize obj to indented JSON text with sorted keys (for people)."""
    return _PRETTY_ENCODER.encode(obj)


MAX_DEPTH = 100


def is_json_data(value, _depth=0):
    """Whether value is plain JSON data: what loads(dumps(value)) gives back unchanged.

    Dicts with string keys, lists, strings, integers, finite floats, booleans and None,
    nested at most MAX_DEPTH deep (no tuples, sets, bytes or other objects).
    """
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if _depth >= MAX_DEPTH:
        return False
    if type(value) is list:
        return all(is_json_data(item, _depth + 1) for item in value)
    if type(value) is dict:
        return all(isinstance(key, str) and is_json_data(item, _depth + 1)
                   for key, item in value.items())
    return False


_pause_lock = threading.Lock()
_pauses = [0, False]  # threads inside paused_collection(); whether gc was enabled before


@contextlib.contextmanager
def paused_collection():
    """Run a block without the cyclic garbage collector (which nests across threads).

    Listing 10^5 jobs, or parsing such a listing, builds several hundred thousand small
    lists, none in a cycle; each few hundred allocations start a collection, and the full
    ones walk every object not yet frozen (see jqueue.queue._freeze_long_lived): two to
    three times the work itself. Reference counting still frees everything; the collector
    resumes at the end of the last block running.
    """
    pause_collection()
    try:
        yield
    finally:
        resume_collection()


def pause_collection():
    """Stop the cyclic collector until the matching resume_collection, which may come
    from another thread (a burst of answers handed from the journal to the reactor)."""
    with _pause_lock:
        if _pauses[0] == 0:
            _pauses[1] = gc.isenabled()
            gc.disable()
        _pauses[0] += 1


def resume_collection():
    """End one pause_collection; the collector runs again after the last one."""
    with _pause_lock:
        _pauses[0] -= 1
        if _pauses[0] == 0 and _pauses[1]:
            gc.enable()


#: Texts from this size on are parsed without the cyclic collector (see paused_collection).
BIG_TEXT = 1 << 16


def loads(data, unique_keys=False):
    """Parse JSON text or UTF-8 bytes; raise ParseError on any malformed input.

    With unique_keys, an object that names a key twice is malformed too (what a client
    sends: ``{"method": "QueryJobs", "method": "SetDrainFlag"}`` must not mean either).
    """
    if not unique_keys:
        quick = _fast_loads(data)
        if quick is not _REFUSED:
            return quick
    decoder = _STRICT_DECODER if unique_keys else _DECODER
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode("utf-8")
        if data[:1] == "\ufeff":
            data = data[1:]  # a byte order mark is ignored, as simplejson's decoder did
        if len(data) < BIG_TEXT:
            return decoder.decode(data)
        with paused_collection():
            return decoder.decode(data)
    except (ValueError, RecursionError) as err:
        # UnicodeDecodeError and json.JSONDecodeError are ValueErrors.
        raise errors.ParseError("invalid JSON: %s" % err) from None


_REFUSED = object()


def _fast_loads(data):
    """data parsed by orjson, or _REFUSED: a text it refuses, or one with a long digit run."""
    try:
        if isinstance(data, str):
            data = data.encode("utf-8")  # the digit scan below reads bytes
        elif isinstance(data, memoryview):
            data = bytes(data)
        elif not isinstance(data, (bytes, bytearray)):
            return _REFUSED  # the standard path says what is wrong with it
    except UnicodeEncodeError:
        return _REFUSED  # a lone surrogate: the standard decoder decides
    if data.translate(_DIGITS_TO_NUL).find(_LONG_RUN) >= 0:
        return _REFUSED
    try:
        if len(data) < BIG_TEXT:
            return orjson.loads(data)
        with paused_collection():
            return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _REFUSED
