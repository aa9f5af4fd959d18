"""Query filters (Ganeti's qlang): checked and compiled once into predicates over rows.

A filter is a JSON list ``[operator, operands...]``:

    ["|", f1, f2, ...] / ["&", f1, f2, ...]   any / all of the filters (any number)
    ["!", f]                                  not f
    ["?", field]                              the field's value is true
    ["=", field, value] (alias "==")          equal; also "!=", "<", ">", "<=", ">="
    ["=~", field, regex]                      RE2's search on a text value (or any text item)
    ["=[]", field, value]                     the field's list (or text) contains value

Fields are named by strings and must exist; a value must fit its field (a number for
``priority``, a string for ``status``, a job id, as an int or decimal string, for ``id``,
seconds for the split timestamps ``received_ts``/``start_ts``/``end_ts``). Anything else is a
QueryFilterParseError naming the problem. A compiled filter never raises on a row: a value of
an unexpected type simply does not match.
"""

import operator

from jqueue import constants, errors, ptypes, query, userregex

OP_OR = "|"
OP_AND = "&"
OP_NOT = "!"
OP_TRUE = "?"
OP_EQUAL = "="
OP_EQUAL_LEGACY = "=="
OP_NOT_EQUAL = "!="
OP_LT = "<"
OP_LE = "<="
OP_GT = ">"
OP_GE = ">="
OP_REGEXP = "=~"
OP_CONTAINS = "=[]"

# Kinds of field values, as far as filters are concerned.
KIND_TEXT = "text"
KIND_NUMBER = "number"
KIND_BOOL = "bool"
KIND_JOB_ID = "job_id"
KIND_TIMESTAMP = "timestamp"
KIND_OTHER = "other"

_KIND_OF_QFT = {
    query.QFT_TEXT: KIND_TEXT, query.QFT_NUMBER: KIND_NUMBER, query.QFT_BOOL: KIND_BOOL,
    query.QFT_TIMESTAMP: KIND_TIMESTAMP,
}
#: Job fields holding Ganeti's split timestamps ([seconds, microseconds]).
_SPLIT_TIMESTAMP_FIELDS = frozenset(["received_ts", "start_ts", "end_ts"])
_ORDERED = frozenset([KIND_TEXT, KIND_NUMBER, KIND_JOB_ID, KIND_TIMESTAMP])
_NULLABLE = frozenset([KIND_TIMESTAMP, KIND_OTHER])
_SEARCHABLE = frozenset([KIND_TEXT, KIND_OTHER])
_COMPARE = {OP_LT: operator.lt, OP_LE: operator.le, OP_GT: operator.gt, OP_GE: operator.ge}


def job_field_kinds():
    """Map each job field name (jqueue.query.FIELDS) to its kind for filters."""
    kinds = {f.name: _KIND_OF_QFT.get(f.kind, KIND_OTHER) for f in query.FIELDS}
    kinds["id"] = KIND_JOB_ID
    for name in _SPLIT_TIMESTAMP_FIELDS & set(kinds):
        kinds[name] = KIND_TIMESTAMP
    return kinds


class Filter:
    """A compiled filter: the field names it reads and a predicate over {field: value}."""

    __slots__ = ("fields", "_predicate")

    def __init__(self, predicate, fields):
        self._predicate = predicate
        self.fields = frozenset(fields)

    def __call__(self, row):
        """Tell whether row (a dict holding at least self.fields) matches."""
        return bool(self._predicate(row))


def compile_filter(qfilter, kinds=None):
    """Check qfilter and compile it; None matches every row.

    kinds maps field names to KIND_* (default: the job fields). Raises
    QueryFilterParseError naming the problem.
    """
    if qfilter is None:
        return Filter(lambda row: True, ())
    compiler = _Compiler(job_field_kinds() if kinds is None else kinds)
    predicate = compiler.compile(qfilter, 1)
    return Filter(predicate, compiler.used)


def requested_ids(qfilter):
    """The set of job ids a filter names, if it is ``id`` equality or an ``|`` of such.

    Returns None for any other filter (including one with an invalid id).
    """
    if _is_id_equality(qfilter):
        operands = [qfilter]
    elif isinstance(qfilter, list) and len(qfilter) > 1 and qfilter[0] == OP_OR:
        operands = qfilter[1:]
    else:
        return None
    ids = set()
    for node in operands:
        if not _is_id_equality(node):
            return None
        try:
            ids.add(ptypes.parse_job_id(node[2]))
        except ValueError:
            return None
    return ids


def _is_id_equality(node):
    return (isinstance(node, list) and len(node) == 3 and node[1] == "id"
            and node[0] in (OP_EQUAL, OP_EQUAL_LEGACY))


def simple_filter(names, field="id"):
    """``["|", ["=", field, name], ...]`` for the CLI's name arguments; None if no names."""
    if not names:
        return None
    return [OP_OR] + [[OP_EQUAL, field, name] for name in names]


def _error(message, *args):
    return errors.QueryFilterParseError(message % args)


def _short(value):
    return ptypes._short(value)


class _Compiler:
    """Turns one filter into nested closures, recording the fields it reads."""

    def __init__(self, kinds):
        self._kinds = kinds
        self.used = set()

    def compile(self, node, depth):
        if depth > constants.QLANG_MAX_DEPTH:
            raise _error("filter is nested deeper than %d levels", constants.QLANG_MAX_DEPTH)
        if not isinstance(node, list) or not node:
            raise _error("a filter must be a non-empty list [operator, operands...], got %s",
                         _short(node))
        op = node[0]
        if not isinstance(op, str):
            raise _error("operator must be a string, got %s", _short(op))
        method = _OPERATORS.get(op)
        if method is None:
            raise _error("unknown operator %s", _short(op))
        return method(self, op, node[1:], depth)

    def _logic(self, op, operands, depth):
        predicates = [self.compile(operand, depth + 1) for operand in operands]
        if op == OP_OR:
            return lambda row: any(p(row) for p in predicates)
        return lambda row: all(p(row) for p in predicates)

    def _not(self, op, operands, depth):
        _check_arity(op, operands, 1, "one filter")
        predicate = self.compile(operands[0], depth + 1)
        return lambda row: not predicate(row)

    def _true(self, op, operands, depth):
        _check_arity(op, operands, 1, "one field name")
        name = self._field(op, operands[0])
        return lambda row: bool(row.get(name))

    def _binary(self, op, operands, depth):
        _check_arity(op, operands, 2, "a field name and a value")
        name = self._field(op, operands[0])
        test = _BINARY[op](op, name, self._kinds[name], operands[1])
        return lambda row: _safe(test, row.get(name))

    def _field(self, op, name):
        if not isinstance(name, str):
            raise _error("operator '%s' needs a field name (a string), got %s", op, _short(name))
        if name not in self._kinds:
            raise _error("unknown field %s in filter", _short(name))
        self.used.add(name)
        return name


def _check_arity(op, operands, count, what):
    if len(operands) != count:
        raise _error("operator '%s' takes %s, got %d operand(s)", op, what, len(operands))


def _safe(test, value):
    try:
        return bool(test(value))
    except (TypeError, ValueError):
        return False


# Binary operators: (op, field name, kind, literal) -> test(value) -> bool


def _equal(op, name, kind, value):
    literal = _literal(op, name, kind, value, nullable=True)
    if kind == KIND_TIMESTAMP:
        return lambda v: _seconds(v) == literal
    return lambda v: v == literal


def _not_equal(op, name, kind, value):
    test = _equal(op, name, kind, value)
    return lambda v: not test(v)


def _ordering(op, name, kind, value):
    if kind not in _ORDERED:
        raise _error("operator '%s' cannot order field '%s' (%s values)", op, name, kind)
    literal = _literal(op, name, kind, value)
    compare = _COMPARE[op]
    if kind == KIND_TIMESTAMP:
        return lambda v: _seconds(v) is not None and compare(_seconds(v), literal)
    return lambda v: v is not None and compare(v, literal)


def _regexp(op, name, kind, value):
    _check_searchable(op, name, kind)
    if not isinstance(value, str):
        raise _error("operator '=~' needs a regular expression (a string), got %s",
                     _short(value))
    try:
        regex = userregex.compile_pattern(value)
    except ValueError as err:
        raise _error("invalid regular expression %s (%s)", _short(value), err) from None
    return lambda v: _search(regex, v)


def _search(regex, value):
    if isinstance(value, str):
        return regex.search(value) is not None
    if isinstance(value, list):
        return any(isinstance(item, str) and regex.search(item) for item in value)
    return False


def _contains(op, name, kind, value):
    _check_searchable(op, name, kind)
    return lambda v: isinstance(v, (list, str)) and value in v


def _check_searchable(op, name, kind):
    if kind not in _SEARCHABLE:
        raise _error("operator '%s' needs a text or list field, '%s' holds %s values",
                     op, name, kind)


def _literal(op, name, kind, value, nullable=False):
    """Check (and normalize) a filter value against the kind of its field."""
    if value is None and nullable and kind in _NULLABLE:
        return None
    checker = _LITERALS[kind]
    try:
        return checker(value)
    except ValueError as err:
        raise _error("value for field '%s' (operator '%s') %s", name, op, err) from None


def _number(value):
    return ptypes.NumberRange().check(value)


def _timestamp(value):
    seconds = _seconds(value)
    if seconds is None:
        raise ValueError("must be seconds or [seconds, microseconds], got %s" % _short(value))
    return seconds


def _seconds(value):
    """Seconds of a number or of a split timestamp [sec, usec]; None for anything else."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        try:
            return _number(value[0]) + _number(value[1]) / 1e6
        except ValueError:
            return None
    try:
        return _number(value)
    except ValueError:
        return None


_LITERALS = {
    KIND_TEXT: ptypes.String.check,
    KIND_NUMBER: _number,
    KIND_BOOL: ptypes.Bool.check,
    KIND_JOB_ID: ptypes.parse_job_id,
    KIND_TIMESTAMP: _timestamp,
    KIND_OTHER: lambda value: value,
}

_BINARY = {
    OP_EQUAL: _equal, OP_EQUAL_LEGACY: _equal, OP_NOT_EQUAL: _not_equal,
    OP_LT: _ordering, OP_LE: _ordering, OP_GT: _ordering, OP_GE: _ordering,
    OP_REGEXP: _regexp, OP_CONTAINS: _contains,
}

_OPERATORS = {
    OP_OR: _Compiler._logic, OP_AND: _Compiler._logic, OP_NOT: _Compiler._not,
    OP_TRUE: _Compiler._true,
}
_OPERATORS.update({op: _Compiler._binary for op in _BINARY})
