"""Parameter types: small checkers that validate and normalize JSON values.

Each type has ``desc`` (for error messages: "a non-negative number") and
``check(value)`` returning the normalized value or raising ValueError. Types compose:
``ListOf(String)``, ``Maybe(Int)``.
"""

import re

from jqueue import constants

_DECIMAL = re.compile(r"\A[0-9]{1,19}\Z")
_INTEGER_TEXT = re.compile(r"\A-?[0-9]{1,19}\Z")
_NUMBER_TEXT = re.compile(r"\A-?[0-9]{1,19}(?:\.[0-9]{1,19})?(?:[eE][-+]?[0-9]{1,3})?\Z")
MAX_JOB_ID = 2 ** 63 - 1


def parse_int(text):
    """An integer from text written plainly: ASCII digits and an optional leading minus.

    Python's int() also takes " 5", "1_0" and other scripts' digits ("\u0663"); a
    command line or a config file must not. ValueError naming the text otherwise.
    """
    if not isinstance(text, str) or not _INTEGER_TEXT.match(text):
        raise ValueError("%s is not an integer" % _short(text))
    return int(text)


def parse_number(text):
    """A finite number from text written plainly (ASCII digits, point, exponent); an int
    if it has no fraction. ValueError naming the text otherwise (no inf, nan, spaces)."""
    if not isinstance(text, str) or not _NUMBER_TEXT.match(text):
        raise ValueError("%s is not a number" % _short(text))
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("%s is not a finite number" % _short(text))
    return int(value) if value.is_integer() and _INTEGER_TEXT.match(text) else value


_DURATION_TEXT = re.compile(r"\A([0-9]+(?:\.[0-9]+)?)([smhdw]?)\Z")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text):
    """Seconds from a duration written as plain seconds or a number with a unit: 30s, 30m,
    6h, 1.5d, 2w. ValueError naming the text otherwise."""
    match = _DURATION_TEXT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("%s is not a duration (seconds, or a number with s, m, h, d or w)"
                         % _short(text))
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return int(seconds) if seconds.is_integer() else seconds


_SIZE_TEXT = re.compile(r"\A([0-9]{1,19}(?:\.[0-9]{1,9})?)(?:([KMGTkmgt])(?:i?B)?|B)?\Z")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text):
    """Bytes from a size written as plain bytes or a number with a unit of 1024 (as
    systemd's MemoryMax= reads them): 1048576, 512M, 1.5G, 2GiB, 1T. ValueError naming
    the text otherwise."""
    match = _SIZE_TEXT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("%s is not a size (bytes, or a number with K, M, G or T)"
                         % _short(text))
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()])


def human_bytes(count, compact=False):
    """1536 -> "1.5 KiB" (compact: "1.5K"); plain bytes under 1 KiB."""
    value, unit = float(count), None
    for unit_name in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, unit_name
    if unit is None:
        return ("%dB" if compact else "%d bytes") % count
    return "%.1f%s" % (value, unit[0]) if compact else "%.1f %s" % (value, unit)


class PType:
    """A parameter type: a description and a check."""

    desc = "a value"

    def check(self, value):
        return value

    def _fail(self, value):
        raise ValueError("must be %s, got %s" % (self.desc, _short(value)))


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _Any(PType):
    desc = "any JSON value"

    def check(self, value):
        # Imported here: ptypes sits below the serializer only for this one check.
        from jqueue import serializer
        if not serializer.is_json_data(value):
            raise ValueError("must be JSON data (objects with string keys, lists, strings, "
                             "finite numbers, booleans, null), got %s" % _short(value))
        return value


class _Bool(PType):
    desc = "a boolean"

    def check(self, value):
        if not isinstance(value, bool):
            self._fail(value)
        return value


class _String(PType):
    desc = "a string"

    def check(self, value):
        if not isinstance(value, str):
            self._fail(value)
        return value


class _NonEmptyString(PType):
    desc = "a non-empty string"

    def check(self, value):
        if not isinstance(value, str) or not value:
            self._fail(value)
        return value


class IntRange(PType):
    """An integer within [low, high]."""

    def __init__(self, low=None, high=None):
        self.low, self.high = low, high
        if low is not None and high is not None:
            self.desc = "an integer from %d to %d" % (low, high)
        elif low is not None:
            self.desc = "an integer >= %d" % low
        else:
            self.desc = "an integer"

    def check(self, value):
        if not _is_int(value):
            self._fail(value)
        if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high):
            self._fail(value)
        return value


class NumberRange(PType):
    """A finite number (int or float) >= low."""

    def __init__(self, low=None):
        self.low = low
        self.desc = "a number" if low is None else (
            "a non-negative number" if low == 0 else "a number >= %s" % low)

    def check(self, value):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            self._fail(value)
        if value != value or value in (float("inf"), float("-inf")):
            self._fail(value)
        if self.low is not None and value < self.low:
            self._fail(value)
        return value


class ListOf(PType):
    """A list whose every item has the given type."""

    def __init__(self, item):
        self.item = item
        self.desc = "a list (each item %s)" % item.desc

    def check(self, value):
        if not isinstance(value, list):
            self._fail(value)
        result = []
        for index, item in enumerate(value):
            try:
                result.append(self.item.check(item))
            except ValueError as err:
                raise ValueError("item %d %s" % (index, err)) from None
        return result


class Maybe(PType):
    """None or a value of the given type."""

    def __init__(self, inner):
        self.inner = inner
        self.desc = "null or %s" % inner.desc

    def check(self, value):
        return None if value is None else self.inner.check(value)


class OneOf(PType):
    """One of a fixed set of values."""

    def __init__(self, values):
        self.values = frozenset(values)
        self.desc = "one of %s" % ", ".join(sorted(repr(v) for v in self.values))

    def check(self, value):
        if not isinstance(value, (str, int)) or value not in self.values:
            self._fail(value)
        return value


class _Dict(PType):
    desc = "an object"

    def check(self, value):
        if not isinstance(value, dict):
            self._fail(value)
        return value


class _JobId(PType):
    desc = "a job id (a non-negative integer)"

    def check(self, value):
        return parse_job_id(value, self)


class _RelativeJobId(PType):
    desc = "a job id or a negative relative job id"

    def check(self, value):
        if _is_int(value) and value < 0:
            return value
        return parse_job_id(value, self)


def parse_job_id(value, ptype=None):
    """Return value as a job id (int); accept ints and strict decimal strings only.

    Refuses signs, spaces, paths, floats, booleans and numbers above 2**63-1 with a
    ValueError naming the value.
    """
    if _is_int(value) and 0 <= value <= MAX_JOB_ID:
        return value
    if isinstance(value, str) and _DECIMAL.match(value) and int(value) <= MAX_JOB_ID:
        return int(value)
    raise ValueError("must be %s, got %s" % ((ptype or JobId).desc, _short(value)))


class _Dependencies(PType):
    desc = "a list of [job id, [final statuses]] pairs"

    def check(self, value):
        if value is None:
            return None
        if not isinstance(value, list):
            self._fail(value)
        result = []
        for index, dep in enumerate(value):
            if not isinstance(dep, list) or len(dep) != 2:
                raise ValueError("dependency %d must be [job id, [statuses]], got %s" % (
                    index, _short(dep)))
            job_id = RelativeJobId.check(dep[0])
            statuses = ListOf(OneOf(constants.JOBS_FINALIZED)).check(dep[1])
            result.append([job_id, statuses])
        return result


Any = _Any()
Bool = _Bool()
String = _String()
NonEmptyString = _NonEmptyString()
Int = IntRange()
NonNegativeInt = IntRange(0)
NonNegativeNumber = NumberRange(0)
Dict = _Dict()
JobId = _JobId()
RelativeJobId = _RelativeJobId()
Priority = IntRange(constants.OP_PRIO_HIGHEST, constants.OP_PRIO_LOWEST)
Dependencies = _Dependencies()


# Node tags (command jobs' and services' affinity, groups')

_TAG = re.compile(r"\A[A-Za-z0-9_.:+=@/-]{1,64}\Z")


def parse_tags(value):
    """Tags from a list or a comma-separated text: trimmed, empty ones dropped, in order
    of first appearance; ValueError naming a malformed one."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("must be a list of tags or a comma-separated text")
    tags = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError("has a tag that is not text: %s" % _short(item))
        item = item.strip()
        if not item:
            continue
        if not _TAG.match(item):
            raise ValueError("has a malformed tag %s (letters, digits and _.:+=@/- only)"
                             % _short(item))
        if item not in tags:
            tags.append(item)
    return tags


class _Tags(PType):
    desc = "tags: a list, or a comma-separated text (LINUX,24GB)"

    def check(self, value):
        try:
            return parse_tags(value)
        except ValueError as err:
            raise ValueError("%s" % err) from None


Tags = _Tags()
