"""Fan-out: one command on many nodes, as a group of one pinned job per node.

A command opcode whose ``nodes`` parameter is set (a list of node names, or a glob of
them) is expanded at submit, before anything is recorded, into:

* a group job (``OP_GROUP``, jqueue.groupjob) that takes the submitted job's place: its
  id is the submission's answer, its token and its own options (parent, start time) are
  the submitted job's, and a dependency on the submitted job (relative or by id) is a
  dependency on the group, which ends once every node's job ended;
* one job per node, in the group: the same opcode with ``node`` set and ``nodes``
  unset, the same dependencies and start time; a token ``<token>:<node>`` when the
  submission has one, so that a resubmission finds every job again.

The request stays one journal batch: the group and its jobs are durable, or refused,
together. Relative references of the other jobs of a SubmitManyJobs request (negative
dependencies and parents) are renumbered to the expanded request. This module has no I/O;
which nodes a set names is the command runner's to say (CommandRunner.fan_out).
"""

from jqueue import commandjob, constants, errors

#: Longest group title a fan-out makes (jqueue.groupjob.MAX_TITLE bounds it too).
_TITLE_MAX = 120


def is_fan_out(op_input):
    """Whether a validated opcode input runs a command on a set of nodes."""
    return commandjob.is_command(op_input) and op_input.get("nodes") is not None


def wants_fan_out(validated):
    """Whether any job of a validated request fans out."""
    return any(is_fan_out(op_input) for inputs in validated for op_input in inputs)


def title(op_input):
    """The group's title: the command's title, or its text, and where it runs."""
    nodes = op_input["nodes"]
    where = nodes if isinstance(nodes, str) else (
        ",".join(nodes) if len(nodes) <= 3 else "%d nodes" % len(nodes))
    what = op_input.get("title") or commandjob.command_text(op_input["cmd"])
    text = "".join(c if c.isprintable() and c != "|" else " " for c in what).strip()
    if len(text) > _TITLE_MAX:
        text = text[:_TITLE_MAX - 3] + "..."
    return "%s on %s" % (text or "command", where)


def expand(validated, tokens, options, single, choose, group_input):
    """The request with every fan-out job expanded.

    validated holds each job's validated opcode inputs, tokens and options one entry
    per job (as JobQueue.submit_nowait has them). choose(op_input) answers the node
    names a fan-out runs on (OpPrereqError refuses the request); group_input(title)
    answers a validated OP_GROUP input. Returns (validated, tokens, options, heads):
    heads[i] is where the submitted job i is in the expanded request (its group, for a
    fan-out), so that the answer for job i is the expanded answer at heads[i].
    """
    jobs, new_tokens, new_options, heads, origin = [], [], [], [], []
    for index, inputs in enumerate(validated):
        label = "" if single else "job %d: " % index
        heads.append(len(jobs))
        fanning = [op_input for op_input in inputs if is_fan_out(op_input)]
        if not fanning:
            jobs.append(inputs)
            new_tokens.append(tokens[index])
            new_options.append(options[index])
            origin.append(index)
            continue
        if len(inputs) != 1:
            raise errors.OpPrereqError(
                "%sa command on several nodes (nodes) must be its job's only opcode; "
                "submit its other opcodes as jobs that depend on it" % label,
                constants.ECODE_INVAL)
        op_input = inputs[0]
        if op_input.get("node"):
            raise errors.OpPrereqError("%sopcode %s: give node or nodes, not both" % (
                label, constants.OP_COMMAND_RUN), constants.ECODE_INVAL)
        try:
            names = choose(op_input)
        except errors.OpPrereqError as err:
            code = err.args[1] if len(err.args) > 1 else constants.ECODE_INVAL
            raise errors.OpPrereqError(label + errors.error_message(err), code) from None
        token, option = tokens[index], options[index]
        jobs.append([group_input(title(op_input))])
        new_tokens.append(token)
        new_options.append(option)
        origin.append(index)
        start = {key: option[key] for key in ("not_before", "start_in") if key in option}
        for position, name in enumerate(names, 1):
            child = dict(op_input, node=name, nodes=None)
            jobs.append([child])
            new_tokens.append(None if token is None else "%s:%s" % (token, name))
            new_options.append(dict(start, parent=-position))
            origin.append(index)
    for new_index, inputs in enumerate(jobs):
        old_index = origin[new_index]
        for op_input in inputs:
            if op_input.get("depends"):
                op_input["depends"] = [
                    [_renumber(dep[0], old_index, new_index, heads)] + list(dep[1:])
                    if isinstance(dep, (list, tuple)) and dep else dep
                    for dep in op_input["depends"]]
        option = new_options[new_index]
        if heads[old_index] == new_index and isinstance(option.get("parent"), int):
            new_options[new_index] = dict(
                option, parent=_renumber(option["parent"], old_index, new_index, heads))
    return jobs, new_tokens, new_options, heads


def _renumber(reference, old_index, new_index, heads):
    """A relative job reference of the job at old_index (now at new_index), renumbered
    to the expanded request; absolute ones and those before the request stay."""
    if isinstance(reference, bool) or not isinstance(reference, int) or reference >= 0:
        return reference
    target = old_index + reference
    if target < 0:
        return reference - (new_index - old_index)  # before the request: still refused
    return heads[target] - new_index


def answers(results, heads):
    """The answer of each submitted job from the expanded request's answers."""
    if heads is None:
        return results
    return [results[head] for head in heads]
