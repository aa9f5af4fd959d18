"""JSON (de)serialization: the only module that imports simplejson.

Output is compact UTF-8 JSON. Input is parsed strictly: NaN, Infinity and numbers out
of a float's range are refused, and every failure (bad UTF-8, bad JSON, absurd numbers,
absurd nesting) is a ParseError.

simplejson encodes; the standard library's decoder parses, with the same rules: it
parses a job file in a fifth less time than simplejson's, a request in a quarter less,
a 100,000-row answer in a third less (measured on this project's texts), and parsing is
what reopening a queue and reading a listing spend most on.
"""

import contextlib
import gc
import json
import math
import threading

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
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float,
                                   object_pairs_hook=_unique_keys)


def dumps(obj):
    """Serialize obj to compact JSON text."""
    return _ENCODER.encode(obj)


def dumps_bytes(obj):
    """Serialize obj to compact UTF-8 JSON bytes."""
    return _ENCODER.encode(obj).encode("utf-8")


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
