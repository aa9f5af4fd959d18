"""JSON (de)serialization: the only module that imports simplejson.

Output is compact UTF-8 JSON. Input is parsed strictly: NaN and Infinity are refused
and every failure (bad UTF-8, bad JSON, absurd numbers) is a ParseError.
"""

import simplejson

from jqueue import errors


def _refuse_constant(name):
    raise ValueError("JSON constant %s is not allowed" % name)


_ENCODER = simplejson.JSONEncoder(separators=(",", ":"), allow_nan=False)
_PRETTY_ENCODER = simplejson.JSONEncoder(indent=2, sort_keys=True, allow_nan=False)
_DECODER = simplejson.JSONDecoder(parse_constant=_refuse_constant)


def dumps(obj):
    """Serialize obj to compact JSON text."""
    return _ENCODER.encode(obj)


def dumps_bytes(obj):
    """Serialize obj to compact UTF-8 JSON bytes."""
    return _ENCODER.encode(obj).encode("utf-8")


def dumps_pretty(obj):
    """Serialize obj to indented JSON text with sorted keys (for people)."""
    return _PRETTY_ENCODER.encode(obj)


def loads(data):
    """Parse JSON text or UTF-8 bytes; raise ParseError on any malformed input."""
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode("utf-8")
        return _DECODER.decode(data)
    except (ValueError, RecursionError) as err:
        # UnicodeDecodeError and simplejson.JSONDecodeError are ValueErrors.
        raise errors.ParseError("invalid JSON: %s" % err) from None
