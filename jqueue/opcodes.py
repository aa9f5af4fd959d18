"""Opcodes: the base class, typed parameters, the registry and the built-in opcodes.

An application defines an opcode by subclassing OpCode, naming it (``OP_ID``), listing its
parameters (``OP_PARAMS``) and writing ``run(ctx)``; ``@register`` adds it to the default
registry. ``ctx`` (see jqueue.run.processor.OpContext) offers ``feedback(message)``,
``check_cancel()``, ``sleep(seconds)`` (a cancellation point) and ``job_id``.

Submitting validates every opcode before a job id is allocated: an unknown ``OP_ID``, an
unknown parameter, a missing one or one of the wrong type is an OpPrereqError naming the
opcode and the parameter. As in Ganeti, an optional parameter given as ``null`` takes its
default: Ganeti's clients send an opcode's whole state, with ``null`` for what is unset.
"""

import copy
import difflib
import importlib
import importlib.metadata
import logging
import textwrap

from jqueue import constants, errors, ptypes, serializer

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "jqueue.opcodes"
_REQUIRED = object()


class Param:
    """One opcode parameter: name, type, default (absent: required) and documentation."""

    __slots__ = ("name", "ptype", "default", "doc", "_shared", "_empty")

    def __init__(self, name, ptype, default=_REQUIRED, doc=""):
        self.name = name
        self.ptype = ptype
        self.default = default
        self.doc = doc
        # An immutable default may be handed out as it is: deepcopy costs microseconds
        # per parameter, and every submission takes a dozen defaults; an empty list or
        # dict (most mutable ones, such as reason's) is made anew instead of copied.
        self._shared = default is None or isinstance(default, (bool, int, float, str))
        self._empty = type(default) if type(default) in (list, dict) and not default else None

    @property
    def required(self):
        return self.default is _REQUIRED

    def default_value(self):
        """A fresh copy of the default (lists and dicts are never shared)."""
        if self._shared:
            return self.default
        return self._empty() if self._empty is not None else copy.deepcopy(self.default)


#: Parameters every opcode accepts (Ganeti's generic opcode parameters).
COMMON_PARAMS = (
    Param("priority", ptypes.Priority, constants.OP_PRIO_DEFAULT,
          "priority from -20 (highest) to 19 (lowest)"),
    Param("depends", ptypes.Dependencies, None,
          "jobs this opcode waits for: [[job id, [final statuses]], ...]"),
    Param("comment", ptypes.Maybe(ptypes.String), None, "free-form comment"),
    Param("dry_run", ptypes.Bool, False, "check only, change nothing"),
    Param("debug_level", ptypes.NonNegativeInt, 0, "verbosity of the opcode's feedback"),
    Param("reason", ptypes.ListOf(ptypes.Any), [], "reason trail"),
)


class OpCode:
    """Base class of opcodes; instances hold validated parameter values as attributes."""

    OP_ID = None
    #: Parameter whose value describes the opcode in summaries, e.g. TEST_DELAY(0.1).
    OP_DSC_FIELD = None
    OP_PARAMS = ()

    def __init__(self, **params):
        self.__dict__.update(self.validate(params))

    @classmethod
    def all_params(cls):
        """Common parameters followed by the opcode's own."""
        return COMMON_PARAMS + tuple(cls.OP_PARAMS)

    @classmethod
    def _params_by_name(cls):
        """{name: Param} of all_params(), built once per class (validate runs per submit).

        Kept in the class's own __dict__, so that a subclass never sees its parent's."""
        known = cls.__dict__.get("_jq_params_by_name")
        if known is None or known[0] is not cls.OP_PARAMS:
            known = (cls.OP_PARAMS, {p.name: p for p in cls.all_params()})
            cls._jq_params_by_name = known
        return known[1]

    @classmethod
    def validate(cls, params):
        """Return params checked, normalized and completed with defaults.

        Raises OpPrereqError naming the opcode and the offending parameter.
        """
        known = cls._params_by_name()
        unknown = [name for name in params if name not in known and name != "OP_ID"]
        if unknown:
            unknown.sort(key=str)
            raise errors.OpPrereqError("opcode %s: unknown parameter(s) %s%s" % (
                cls.OP_ID, ", ".join(repr(u) for u in unknown), near_miss(unknown, known)),
                constants.ECODE_INVAL)
        values = {}
        for name, param in known.items():
            if params.get(name) is None and not param.required:
                values[name] = param.default_value()  # absent, or null: the default
                continue
            if name not in params:
                raise errors.OpPrereqError("opcode %s: parameter '%s' is required" % (
                    cls.OP_ID, name), constants.ECODE_INVAL)
            try:
                values[name] = param.ptype.check(params[name])
            except ValueError as err:
                raise errors.OpPrereqError("opcode %s: parameter '%s' %s" % (
                    cls.OP_ID, name, err), constants.ECODE_INVAL) from None
        return values

    def to_dict(self):
        """The opcode as a job file ``input`` object."""
        data = {"OP_ID": self.OP_ID}
        for param in self.all_params():
            data[param.name] = getattr(self, param.name)
        return data

    def summary(self):
        """OP_ID without ``OP_`` plus the descriptive parameter: ``TEST_DELAY(0.1)``."""
        return summarize(self.OP_ID, self.OP_DSC_FIELD, self.to_dict())

    def run(self, ctx):
        """Execute the opcode; return a JSON-serializable result or raise OpExecError."""
        raise NotImplementedError("opcode %s has no run()" % self.OP_ID)


def near_miss(names, known, upper=False):
    """"; did you mean X?" for the first of names close to one of known ("" if none)."""
    for name in names:
        if not isinstance(name, str):
            continue
        matches = difflib.get_close_matches(name.upper() if upper else name, list(known),
                                            n=1, cutoff=0.75)
        if matches:
            return "; did you mean %s?%s" % (matches[0], (" (jqctl list-opcodes lists them)"
                                                          if upper else ""))
    return ""


def describe_opcode(cls):
    """One opcode of the catalogue (see Registry.describe)."""
    doc = (cls.__doc__ or "").strip().splitlines()
    common = {p.name for p in COMMON_PARAMS}
    return {"id": cls.OP_ID, "doc": doc[0] if doc else "",
            "params": [{"name": p.name, "type": p.ptype.desc, "required": p.required,
                        "default": None if p.required else p.default_value(), "doc": p.doc,
                        "common": p.name in common}
                       for p in cls.OP_PARAMS + COMMON_PARAMS]}


def rst_params(cls):
    """An opcode's own parameters (not the common ones) as a reST definition list: the man
    page of jq-masterd holds this text for OP_COMMAND_RUN, so that it cannot drift."""
    blocks = []
    for param in cls.OP_PARAMS:
        text = "%s. %s." % (_sentence(param.doc), _sentence(param.ptype.desc))
        if param.required:
            text += " Required."
        else:
            text += " Default: ``%s``." % serializer.dumps(param.default_value())
        blocks.append("**%s**\n%s\n" % (param.name, textwrap.fill(
            text, 92, initial_indent="    ", subsequent_indent="    ",
            break_long_words=False, break_on_hyphens=False)))
    return "\n".join(blocks)


def _sentence(text):
    return text[:1].upper() + text[1:]


def summarize(op_id, dsc_field, op_input):
    """Summary text of an opcode input, as Ganeti writes it."""
    text = op_id[3:] if isinstance(op_id, str) and op_id.startswith("OP_") else str(op_id)
    if dsc_field:
        value = op_input.get(dsc_field)
        if value is not None:
            if isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            text += "(%s)" % value
    return text


class Registry:
    """Maps OP_ID to opcode class; applications add theirs with register()."""

    def __init__(self):
        self._classes = {}

    def register(self, cls):
        """Add an opcode class (usable as a class decorator)."""
        op_id = getattr(cls, "OP_ID", None)
        if not isinstance(op_id, str) or not op_id.startswith("OP_"):
            raise errors.ProgrammerError("opcode class %s has no valid OP_ID" % cls.__name__)
        existing = self._classes.get(op_id)
        if existing is not None and existing is not cls:
            raise errors.ProgrammerError("opcode %s registered twice (%s and %s)" % (
                op_id, existing.__name__, cls.__name__))
        self._classes[op_id] = cls
        return cls

    def get(self, op_id):
        """Return the class for op_id; raise OpPrereqError if unknown (naming near ones)."""
        cls = self._classes.get(op_id) if isinstance(op_id, str) else None
        if cls is None:
            raise errors.OpPrereqError("unknown opcode %s%s" % (
                ptypes._short(op_id), near_miss([op_id], self._classes, upper=True)),
                constants.ECODE_INVAL)
        return cls

    def describe(self, op_ids=None):
        """The catalogue: [{"id", "doc", "params": [...]}] of every opcode (or op_ids).

        Each parameter is {"name", "type", "required", "default", "doc", "common"}
        ("common": one of the parameters every opcode takes). OpPrereqError for an
        unknown OP_ID, naming near ones.
        """
        names = self.known() if op_ids is None else list(op_ids)
        try:
            return [describe_opcode(self.get(name)) for name in names]
        except errors.OpPrereqError as err:
            raise errors.OpPrereqError(errors.error_message(err), constants.ECODE_NOENT
                                       ) from None

    def known(self):
        """Sorted list of registered OP_IDs."""
        return sorted(self._classes)

    def build(self, data):
        """Return a validated OpCode from an OpCode or a dict with OP_ID."""
        if isinstance(data, OpCode):
            return self.get(data.OP_ID)(**{k: v for k, v in data.to_dict().items()
                                           if k != "OP_ID"})
        if not isinstance(data, dict):
            raise errors.OpPrereqError("an opcode must be an object with OP_ID, got %s" %
                                       ptypes._short(data), constants.ECODE_INVAL)
        cls = self.get(data.get("OP_ID"))
        return cls(**{k: v for k, v in data.items() if k != "OP_ID"})

    def input_of(self, data):
        """What build(data).to_dict() gives: the job file input of an opcode (a dict with
        OP_ID, or an OpCode), validated and completed with defaults. For a class that
        keeps OpCode's construction it is made from the checked values directly, without
        the object (a submission's opcodes pass here)."""
        if isinstance(data, dict):
            cls = self.get(data.get("OP_ID"))
            if cls.__init__ is OpCode.__init__ and cls.to_dict is OpCode.to_dict:
                return {"OP_ID": cls.OP_ID, **cls.validate(data)}
        return self.build(data).to_dict()

    def from_input(self, op_input):
        """Rebuild an opcode to run from a stored job file input."""
        return self.build(op_input)

    def summary(self, op_input):
        """Summary of a stored opcode input, even for an opcode this registry lacks."""
        op_id = op_input.get("OP_ID")
        cls = self._classes.get(op_id) if isinstance(op_id, str) else None
        describe = getattr(cls, "describe", None)
        if describe is not None:
            return "%s(%s)" % (op_id[3:], describe(op_input))
        return summarize(op_id, cls.OP_DSC_FIELD if cls else None, op_input)

    def load_entry_points(self, group=ENTRY_POINT_GROUP):
        """Register the opcodes of every entry point of group (see _add_from)."""
        for entry in importlib.metadata.entry_points(group=group):
            self._add_from(entry.load())

    def load_module(self, name):
        """Import a module by name and register its opcodes (see _add_from)."""
        self._add_from(importlib.import_module(name))

    def _add_from(self, target):
        """Register opcodes from a hook function, or a module.

        A module's ``register_opcodes(registry)`` is called if it has one; otherwise every
        OpCode subclass the module defines is registered.
        """
        if callable(target) and not isinstance(target, type):
            target(self)
            return
        hook = getattr(target, "register_opcodes", None)
        if hook is not None:
            hook(self)
            return
        for value in vars(target).values():
            if (isinstance(value, type) and issubclass(value, OpCode) and value.OP_ID
                    and value.__module__ == target.__name__
                    and value.OP_ID not in self._classes):
                self.register(value)
        logger.debug("loaded opcodes from %s", target.__name__)


REGISTRY = Registry()
register = REGISTRY.register


@register
class OpTestDelay(OpCode):
    """Sleep for a while; zero is a no-op (a test opcode, handy for benchmarks)."""

    OP_ID = "OP_TEST_DELAY"
    OP_DSC_FIELD = "duration"
    OP_PARAMS = (
        Param("duration", ptypes.NonNegativeNumber, doc="seconds to sleep (>= 0)"),
        Param("repeat", ptypes.NonNegativeInt, 0, "repeat the delay this many times (0: once)"),
        Param("on_master", ptypes.Bool, True, "sleep on the master node"),
        Param("on_nodes", ptypes.ListOf(ptypes.NonEmptyString), [],
              "also sleep on these cluster nodes (through their jq-noded)"),
        Param("on_node_uuids", ptypes.Maybe(ptypes.ListOf(ptypes.NonEmptyString)), None,
              "Ganeti's node UUIDs; here node names, added to on_nodes"),
        Param("interruptible", ptypes.Bool, False,
              "accepted for Ganeti; every delay here stops at once when canceled"),
        Param("no_locks", ptypes.Bool, True, "accepted for Ganeti; jqueue takes no locks"),
    )

    def run(self, ctx):
        nodes = self.on_nodes + [n for n in self.on_node_uuids or () if n not in self.on_nodes]
        if nodes and getattr(ctx, "nodes", None) is None:
            raise errors.OpExecError("cannot delay on nodes %s: this queue runs on a single "
                                     "node (no cluster)" % ", ".join(nodes))
        rounds = max(1, self.repeat)
        for index in range(rounds):
            if self.repeat:
                ctx.feedback("Test delay iteration %d/%d" % (index, rounds - 1))
            if self.on_master:
                ctx.sleep(self.duration)
            if nodes:
                ctx.nodes.test_delay(nodes, self.duration)
        return None


@register
class OpTestJqueue(OpCode):
    """Log the given messages, then succeed with a result or fail on request (test opcode)."""

    OP_ID = "OP_TEST_JQUEUE"
    OP_PARAMS = (
        Param("log_messages", ptypes.ListOf(ptypes.String), [], "messages to log"),
        Param("fail", ptypes.Bool, False, "fail after logging"),
        Param("fail_message", ptypes.String, "Opcode failure was requested",
              "message of the failure"),
        Param("result", ptypes.Any, True, "result to return on success"),
    )

    def run(self, ctx):
        for message in self.log_messages:
            ctx.feedback(message)
        if self.fail:
            raise errors.OpExecError(self.fail_message)
        return self.result


def register_opcodes(registry):
    """Entry point of the built-in opcodes: add them to another registry."""
    for cls in (OpTestDelay, OpTestJqueue, commandjob.OpCommandRun, groupjob.OpGroup):
        if cls.OP_ID not in registry.known():
            registry.register(cls)


# The command and group opcodes live in their own modules, which register them with
# REGISTRY; they need OpCode, Param and register defined above.
from jqueue import commandjob, groupjob  # noqa: E402
