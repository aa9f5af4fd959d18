"""The opcode catalogue: list-opcodes, from the daemon's registry (QueryOpcodes)."""

from jqueue import serializer
from jqueue.cli import output
from jqueue.cli.exitcodes import EXIT_SUCCESS

_INDENT = " " * 4


def register(commands):
    """Add list-opcodes to the subparsers."""
    parser = commands.add_parser(
        "list-opcodes", help="list the opcodes the daemon knows, or describe some",
        description="List the opcodes the daemon knows (from its registry, application "
                    "opcodes included), or describe the named ones: each parameter with "
                    "its type, default and documentation.")
    parser.add_argument("names", nargs="*", metavar="OP_ID", help="opcode to describe")
    parser.add_argument("--json", action="store_true",
                        help="print the catalogue as JSON (see QueryOpcodes in jq-masterd(8))")
    parser.set_defaults(func=cmd_list_opcodes)


def cmd_list_opcodes(ctx, args):
    """Print the catalogue: a table of opcodes, or the named opcodes' parameters."""
    catalogue = ctx.client.query_opcodes(args.names or None)
    if args.json:
        ctx.out(serializer.dumps(catalogue))
    elif not args.names:
        for line in output.table_lines(["Opcode", "Description"],
                                       [[op["id"], op["doc"]] for op in catalogue]):
            ctx.out(line)
    else:
        for index, opcode in enumerate(catalogue):
            if index:
                ctx.out()
            for line in opcode_lines(opcode):
                ctx.out(line)
    return EXIT_SUCCESS


def opcode_lines(opcode):
    """The lines describing one opcode and its parameters."""
    own = [p for p in opcode["params"] if not p.get("common")]
    common = [p for p in opcode["params"] if p.get("common")]
    lines = ["%s: %s" % (opcode["id"], opcode["doc"]), "  Parameters:"]
    lines += [_INDENT + line for line in _param_table(own)] if own else [_INDENT + "none"]
    if common:
        lines.append("  Parameters every opcode takes:")
        lines += [_INDENT + line for line in _param_table(common)]
    return lines


def _param_table(params):
    rows = [[p["name"], p["type"], "required" if p["required"] else
             "default %s" % serializer.dumps(p["default"]), p["doc"]] for p in params]
    return output.table_lines(None, rows)
