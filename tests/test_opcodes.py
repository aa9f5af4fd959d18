"""Tests of jqueue.opcodes: validation, defaults, summaries, the registry."""

import pytest

from jqueue import constants, errors, opcodes, ptypes


def test_defaults_are_filled_and_values_normalized():
    """A valid opcode gets every parameter, defaults included."""
    op = opcodes.REGISTRY.build({"OP_ID": "OP_TEST_DELAY", "duration": 2,
                                 "depends": [["5", ["success"]]]})
    data = op.to_dict()
    assert data["duration"] == 2 and data["repeat"] == 0 and data["on_master"] is True
    assert data["priority"] == 0 and data["depends"] == [[5, ["success"]]]
    assert data["on_nodes"] == [] and data["comment"] is None


@pytest.mark.parametrize("op, words", [
    ({"OP_ID": "OP_NO_SUCH"}, ["unknown opcode", "OP_NO_SUCH"]),
    ({"duration": 1}, ["unknown opcode"]),
    ({"OP_ID": "OP_TEST_DELAY"}, ["OP_TEST_DELAY", "'duration'", "required"]),
    ({"OP_ID": "OP_TEST_DELAY", "duration": -1}, ["OP_TEST_DELAY", "'duration'", "-1"]),
    ({"OP_ID": "OP_TEST_DELAY", "duration": "1"}, ["'duration'", "number"]),
    ({"OP_ID": "OP_TEST_DELAY", "duration": 1, "bogus": 1}, ["unknown parameter", "bogus"]),
    ({"OP_ID": "OP_TEST_DELAY", "duration": 1, "priority": 99}, ["'priority'"]),
    ({"OP_ID": "OP_TEST_JQUEUE", "log_messages": "x"}, ["OP_TEST_JQUEUE", "log_messages"]),
    ("OP_TEST_DELAY", ["object with OP_ID"]),
])
def test_bad_opcodes_are_refused_naming_opcode_and_parameter(op, words):
    """Validation errors are OpPrereqError whose message names what is wrong."""
    with pytest.raises(errors.OpPrereqError) as info:
        opcodes.REGISTRY.build(op)
    message = errors.error_message(info.value)
    for word in words:
        assert word in message


def test_defaults_are_not_shared_between_opcodes():
    """Mutable defaults are copied: changing one opcode's list leaves others alone."""
    first = opcodes.OpTestDelay(duration=0)
    first.on_nodes.append("node1")
    assert opcodes.OpTestDelay(duration=0).on_nodes == []
    for default in ([], {}, [1, [2]], {"a": [1]}):  # empty ones made anew, others copied
        param = opcodes.Param("p", ptypes.Any, default)
        value = param.default_value()
        assert value == default and value is not default and type(value) is type(default)
        if default:
            inner = next(iter(value.values())) if isinstance(value, dict) else value[1]
            assert inner is not (next(iter(default.values())) if isinstance(default, dict)
                                 else default[1])


def test_summary_uses_the_descriptive_parameter():
    """Summaries are OP_ID without OP_ plus the descriptive parameter."""
    assert opcodes.OpTestDelay(duration=0.1).summary() == "TEST_DELAY(0.1)"
    assert opcodes.REGISTRY.summary({"OP_ID": "OP_TEST_JQUEUE"}) == "TEST_JQUEUE"
    assert opcodes.REGISTRY.summary({"OP_ID": "OP_FROM_ELSEWHERE", "x": 1}) == \
        "FROM_ELSEWHERE"


@pytest.mark.parametrize("op", [
    {"OP_ID": "OP_TEST_DELAY", "duration": 2, "depends": [["5", ["success"]]]},
    {"OP_ID": "OP_TEST_DELAY", "duration": 0, "priority": None, "comment": "c"},
    {"OP_ID": "OP_COMMAND_RUN", "cmd": ["true"], "env": {"A": "1"}, "title": "t"},
    {"OP_ID": "OP_GROUP", "title": "render"},
])
def test_an_inputs_fields_are_those_of_the_built_opcode_in_order(op):
    """input_of(op), made without the opcode object, is build(op).to_dict(), key order
    included (it is what a job file holds); the caller's dict is left as it was."""
    given = dict(op)
    made = opcodes.REGISTRY.input_of(op)
    built = opcodes.REGISTRY.build(op).to_dict()
    assert made == built and list(made) == list(built) and op == given
    assert opcodes.REGISTRY.input_of(opcodes.REGISTRY.build(op)) == built


def test_an_input_is_refused_as_the_opcode_is():
    for op, words in [({"OP_ID": "OP_NO_SUCH"}, ["unknown opcode"]),
                      ({"OP_ID": "OP_TEST_DELAY", "duration": -1}, ["'duration'", "-1"]),
                      ({"OP_ID": "OP_TEST_DELAY", "bogus": 1}, ["unknown parameter"]),
                      ("OP_TEST_DELAY", ["object with OP_ID"])]:
        with pytest.raises(errors.OpPrereqError) as info:
            opcodes.REGISTRY.input_of(op)
        assert all(word in errors.error_message(info.value) for word in words)


def test_an_opcode_class_with_its_own_construction_makes_its_input_itself():
    """An application's opcode that checks more in __init__ or writes its own to_dict
    is built: input_of gives what the object says, and refuses what it refuses."""
    registry = opcodes.Registry()

    @registry.register
    class OpChecked(opcodes.OpCode):
        OP_ID = "OP_CHECKED"
        OP_PARAMS = (opcodes.Param("low", ptypes.NonNegativeInt, 0),
                     opcodes.Param("high", ptypes.NonNegativeInt, 10))

        def __init__(self, **params):
            super().__init__(**params)
            if self.low > self.high:
                raise errors.OpPrereqError("low above high", constants.ECODE_INVAL)

    @registry.register
    class OpOwnDict(opcodes.OpCode):
        OP_ID = "OP_OWN_DICT"
        OP_PARAMS = (opcodes.Param("name", ptypes.String, "x"),)

        def to_dict(self):
            return dict(super().to_dict(), name=self.name.upper())

    with pytest.raises(errors.OpPrereqError, match="low above high"):
        registry.input_of({"OP_ID": "OP_CHECKED", "low": 5, "high": 1})
    assert registry.input_of({"OP_ID": "OP_OWN_DICT", "name": "abc"})["name"] == "ABC"


def test_applications_register_their_own_opcodes():
    """A new registry accepts an application's opcode and refuses a clashing OP_ID."""
    registry = opcodes.Registry()

    class OpHello(opcodes.OpCode):
        OP_ID = "OP_HELLO"
        OP_DSC_FIELD = "name"
        OP_PARAMS = (opcodes.Param("name", ptypes.NonEmptyString),)

        def run(self, ctx):
            return "hello " + self.name

    registry.register(OpHello)
    assert registry.build({"OP_ID": "OP_HELLO", "name": "x"}).summary() == "HELLO(x)"

    class OpOther(opcodes.OpCode):
        OP_ID = "OP_HELLO"

    with pytest.raises(errors.ProgrammerError, match="twice"):
        registry.register(OpOther)
    with pytest.raises(errors.OpPrereqError):
        opcodes.REGISTRY.get("OP_HELLO")


def test_builtin_entry_point_registers_builtins():
    """The jqueue.opcodes entry point group loads the built-in opcodes into a registry."""
    registry = opcodes.Registry()
    registry.load_entry_points()
    assert {"OP_TEST_DELAY", "OP_TEST_JQUEUE"} <= set(registry.known())


def test_load_module_registers_opcode_classes_of_that_module(tmp_path, monkeypatch):
    """load_module imports an application module and registers the opcodes it defines."""
    (tmp_path / "myops.py").write_text(
        "from jqueue import opcodes, ptypes\n"
        "class OpEcho(opcodes.OpCode):\n"
        "    OP_ID = 'OP_ECHO'\n"
        "    OP_PARAMS = (opcodes.Param('text', ptypes.String),)\n"
        "    def run(self, ctx):\n"
        "        return self.text\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = opcodes.Registry()
    registry.load_module("myops")
    assert registry.build({"OP_ID": "OP_ECHO", "text": "hi"}).to_dict()["text"] == "hi"


#: OP_TEST_DELAY as Ganeti 3.0.2's client sends it (OpTestDelay(duration=1).__getstate__()).
GANETI_TEST_DELAY = {
    "duration": 1, "on_master": True, "on_nodes": [], "on_node_uuids": None, "repeat": 0,
    "interruptible": False, "no_locks": True, "dry_run": None, "debug_level": None,
    "priority": 0, "depends": None, "comment": None, "reason": [], "OP_ID": "OP_TEST_DELAY"}


def test_ganeti_clients_full_opcode_state_is_accepted():
    """Ganeti 3.0's whole OP_TEST_DELAY parameter set, nulls included, validates."""
    data = opcodes.REGISTRY.build(dict(GANETI_TEST_DELAY)).to_dict()
    assert data["dry_run"] is False and data["debug_level"] == 0
    assert data["interruptible"] is False and data["no_locks"] is True
    assert data["on_node_uuids"] is None


@pytest.mark.parametrize("name", ["dry_run", "debug_level", "priority", "reason", "repeat",
                                  "on_master", "on_nodes", "interruptible", "no_locks"])
def test_null_for_an_optional_parameter_means_its_default(name):
    """An optional parameter given as null takes its default."""
    default = {p.name: p.default for p in opcodes.OpTestDelay.all_params()}[name]
    data = opcodes.REGISTRY.build({"OP_ID": "OP_TEST_DELAY", "duration": 0, name: None})
    assert data.to_dict()[name] == default


def test_null_for_a_required_parameter_is_refused():
    """null is no value for a required parameter: the refusal names it."""
    with pytest.raises(errors.OpPrereqError) as info:
        opcodes.REGISTRY.build({"OP_ID": "OP_TEST_DELAY", "duration": None})
    assert "'duration'" in errors.error_message(info.value)


def test_unknown_parameters_are_still_refused_beside_ganetis_set():
    """Accepting Ganeti's set does not open the door to anything: unknown ones are named."""
    with pytest.raises(errors.OpPrereqError) as info:
        opcodes.REGISTRY.build(dict(GANETI_TEST_DELAY, wait_for_sync=True))
    assert "'wait_for_sync'" in errors.error_message(info.value)


def test_a_near_miss_names_the_opcode_or_parameter_meant():
    """An unknown OP_ID or parameter close to a known one says "did you mean ...?"."""
    with pytest.raises(errors.OpPrereqError, match=r"unknown opcode 'OP_TEST_DELYA'; did you "
                                                   r"mean OP_TEST_DELAY\?"):
        opcodes.REGISTRY.build({"OP_ID": "OP_TEST_DELYA", "duration": 1})
    with pytest.raises(errors.OpPrereqError, match="did you mean OP_TEST_DELAY"):
        opcodes.REGISTRY.build({"OP_ID": "op_test_delay", "duration": 1})
    with pytest.raises(errors.OpPrereqError, match=r"'durration'; did you mean duration\?"):
        opcodes.REGISTRY.build({"OP_ID": "OP_TEST_DELAY", "durration": 1})
    with pytest.raises(errors.OpPrereqError) as caught:
        opcodes.REGISTRY.build({"OP_ID": "OP_SOMETHING_ELSE"})
    assert "did you mean" not in errors.error_message(caught.value)


def test_the_catalogue_describes_every_parameter_from_the_registry():
    """describe() gives each opcode's one-line doc and its parameters' type, default, doc."""
    catalogue = {op["id"]: op for op in opcodes.REGISTRY.describe()}
    assert sorted(catalogue) == opcodes.REGISTRY.known()
    delay = catalogue["OP_TEST_DELAY"]
    assert delay["doc"].startswith("Sleep for a while")
    params = {p["name"]: p for p in delay["params"]}
    assert params["duration"] == {"name": "duration", "type": "a non-negative number",
                                  "required": True, "default": None,
                                  "doc": "seconds to sleep (>= 0)", "common": False}
    assert params["repeat"]["default"] == 0 and params["priority"]["common"] is True
    with pytest.raises(errors.OpPrereqError) as caught:
        opcodes.REGISTRY.describe(["OP_TEST_DELYA"])
    assert caught.value.args[1] == constants.ECODE_NOENT
