"""The fan-out expansion (jqueue.fanout): pure, on validated inputs."""

import pytest

from jqueue import constants, errors, fanout


def command(**params):
    op = {"OP_ID": constants.OP_COMMAND_RUN, "cmd": "uptime", "node": None, "nodes": None,
          "affinity": [], "title": None, "depends": None}
    op.update(params)
    return op


def group(title):
    return {"OP_ID": constants.OP_GROUP, "title": title, "depends": None}


def choose_from(names):
    def choose(op_input):
        spec = op_input["nodes"]
        if isinstance(spec, list):
            return spec
        found = [name for name in names if name.startswith(spec.rstrip("*"))]
        if not found:
            raise errors.OpPrereqError("no node matches %s" % spec, constants.ECODE_NOENT)
        return found
    return choose


def expand(validated, tokens=None, options=None, single=False, names=("n1", "n2", "n3")):
    tokens = tokens or [None] * len(validated)
    options = options or [{}] * len(validated)
    return fanout.expand(validated, tokens, options, single, choose_from(list(names)), group)


def test_a_glob_becomes_a_group_and_one_pinned_job_per_node():
    jobs, tokens, options, heads = expand([[command(nodes="n*")]], tokens=["t"],
                                          options=[{"not_before": 5.0}], single=True)
    assert heads == [0]
    assert jobs[0] == [group("uptime on n*")]
    assert [job[0]["node"] for job in jobs[1:]] == ["n1", "n2", "n3"]
    assert all(job[0]["nodes"] is None for job in jobs[1:])
    assert tokens == ["t", "t:n1", "t:n2", "t:n3"]
    assert options == [{"not_before": 5.0}, {"not_before": 5.0, "parent": -1},
                       {"not_before": 5.0, "parent": -2}, {"not_before": 5.0, "parent": -3}]


def test_relative_references_are_renumbered_and_a_fan_out_is_its_group():
    # job 0 plain, job 1 fans out after job 0, job 2 depends on the fan-out, job 3 joins
    # the fan-out's group by a relative parent.
    before = command(cmd="make")
    fan = command(nodes=["n1", "n2"], depends=[[-1, ["success"]]])
    after = command(cmd="report", depends=[[-1, []], [-2, ["success"]]])
    last = command(cmd="x")
    jobs, _, options, heads = expand([[before], [fan], [after], [last]],
                                     options=[{}, {}, {}, {"parent": -2}])
    assert heads == [0, 1, 4, 5]
    # each node's job depends on job 0 (now 1 and 2 places before it)
    assert jobs[2][0]["depends"] == [[-2, ["success"]]]
    assert jobs[3][0]["depends"] == [[-3, ["success"]]]
    # "after" depends on the group (index 1) and on job 0
    assert jobs[4][0]["depends"] == [[-3, []], [-4, ["success"]]]
    # "last" joins the group at index 1
    assert options[5] == {"parent": -4}
    assert fanout.answers(["a", "b", "c", "d", "e", "f"], heads) == ["a", "b", "e", "f"]


def test_absolute_references_stay():
    fan = command(nodes="n*", depends=[[17, ["success"]]])
    jobs, _, options, _ = expand([[fan]], options=[{"parent": 12}])
    assert options[0] == {"parent": 12}
    assert all(job[0]["depends"] == [[17, ["success"]]] for job in jobs[1:])


def test_refusals_name_the_job():
    with pytest.raises(errors.OpPrereqError, match="job 1: a command on several nodes"):
        expand([[command()], [command(nodes="n*"), command()]])
    with pytest.raises(errors.OpPrereqError, match="give node or nodes, not both"):
        expand([[command(nodes="n*", node="n1")]], single=True)
    with pytest.raises(errors.OpPrereqError, match="job 0: no node matches x"):
        expand([[command(nodes="x*")]])


def test_titles_are_valid_group_titles():
    assert fanout.title(command(nodes=["a", "b"], title="deploy | now")) == "deploy   now on a,b"
    assert fanout.title(command(nodes=["a", "b", "c", "d"])) == "uptime on 4 nodes"
    long = fanout.title(command(cmd=["echo", "x" * 500], nodes="n*"))
    assert len(long) <= 200 and "|" not in long


def test_nothing_fans_out():
    jobs = [[command()]]
    assert not fanout.wants_fan_out(jobs)
    assert fanout.answers(["a"], None) == ["a"]
