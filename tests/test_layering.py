"""The package layering holds: nothing below imports anything above it.

Layers, lowest first (README "What is here"): the vocabulary; the job model; store/,
run/ and exec/ (peers that never import each other); the JobQueue facade; luxi/; cluster/
and http/; daemon/ and cli/. A module may import its own layer group and any lower one.
"""

import ast
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGE = os.path.join(ROOT, "jqueue")

#: (group, rank): a module may import a lower rank, or its own group.
GROUPS = {
    "vocabulary": 0, "model": 1, "store": 2, "run": 2, "exec": 2, "queue": 3,
    "luxi": 4, "cluster": 5, "http": 5, "daemon": 6, "cli": 6,
}
TOP_LEVEL = {
    "constants": "vocabulary", "errors": "vocabulary", "serializer": "vocabulary",
    "ptypes": "vocabulary", "userregex": "vocabulary", "connlimit": "vocabulary",
    "ratelog": "vocabulary", "holes": "vocabulary", "fileread": "vocabulary",
    "text": "vocabulary", "threadname": "vocabulary", "job": "model",
    "opcodes": "model",
    "qlang": "model",
    "query": "model", "commandjob": "model", "jobindex": "model", "service": "model",
    "groupjob": "model", "grouptree": "model", "joboptions": "model", "fanout": "model",
    "queue": "queue", "embedded": "queue", "groupkeeper": "queue", "jobcontrol": "queue",
    "retention": "queue", "notify": "queue", "client": "luxi",
}


def group_of(module):
    """The layer group of a dotted jqueue module name (``jqueue`` itself: the facade)."""
    parts = module.split(".")
    if parts == ["jqueue"]:
        return "queue"
    name = parts[1]
    if name in GROUPS:
        return name
    return TOP_LEVEL[name]


def modules():
    """(dotted name, path) of every module of the package."""
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield rel[:-len(".__init__")] if rel.endswith(".__init__") else rel, path


def imported(path, module):
    """The jqueue modules a file imports (``from jqueue import x`` names the module x)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "jqueue")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "jqueue":
                found.update("jqueue." + a.name for a in node.names)
            elif node.module.startswith("jqueue."):
                found.add(node.module)
    return found


def violations():
    """["importer -> imported (group rank -> group rank)", ...] for upward imports."""
    bad = []
    for module, path in modules():
        if module == "jqueue":
            continue  # the package's public names re-export the facade
        mine = group_of(module)
        for target in sorted(imported(path, module)):
            theirs = group_of(target)
            if theirs != mine and GROUPS[theirs] >= GROUPS[mine]:
                bad.append("%s -> %s (%s %d -> %s %d)" % (
                    module, target, mine, GROUPS[mine], theirs, GROUPS[theirs]))
    return bad


def test_no_module_imports_a_layer_above_or_beside_its_own():
    """Every import of a jqueue module points to its own group or a lower layer."""
    assert violations() == []


def test_every_module_belongs_to_a_layer():
    """A new top-level module or package must be given a layer here (KeyError otherwise)."""
    for module, _ in modules():
        assert group_of(module) in GROUPS


@pytest.mark.parametrize("package", sorted(
    name for name in os.listdir(PACKAGE)
    if os.path.isfile(os.path.join(PACKAGE, name, "__init__.py"))))
def test_each_package_says_what_it_owns_and_may_import(package):
    """Each subpackage's __init__ has a docstring saying what it may import."""
    path = os.path.join(PACKAGE, package, "__init__.py")
    doc = ast.get_docstring(ast.parse(open(path, encoding="utf-8").read()))
    assert doc and "import" in doc, "jqueue/%s/__init__.py needs a docstring" % package


def test_the_check_catches_an_upward_import(tmp_path):
    """The checker itself flags an import from a lower layer to a higher one."""
    path = tmp_path / "journal.py"
    path.write_text("from jqueue import queue\nfrom jqueue.cluster import replica\n")
    targets = imported(str(path), "jqueue.store.journal")
    assert {group_of(t) for t in targets} == {"queue", "cluster"}
    assert all(GROUPS[group_of(t)] > GROUPS["store"] for t in targets)
