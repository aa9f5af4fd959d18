"""Shell completion for jqctl, generated from its own argparse parser.

The script comes from shtab (a dependency for this alone: it turns an argparse parser,
nested subcommands and choices included, into bash, zsh and tcsh completion, so the
completion can never disagree with the commands). It is imported only by this command.
"""

from jqueue.cli.exitcodes import EXIT_SUCCESS

SHELLS = ("bash", "zsh", "tcsh")


def register(commands):
    """Add completion to the subparsers."""
    parser = commands.add_parser(
        "completion", help="print a shell completion script for jqctl",
        description="Print a completion script for jqctl, generated from its commands and "
                    "options. bash: eval \"$(jqctl completion bash)\", or save it as "
                    "/etc/bash_completion.d/jqctl; zsh: save it as _jqctl in a directory "
                    "of $fpath.")
    parser.add_argument("shell", metavar="SHELL", choices=SHELLS,
                        help="the shell: %s" % ", ".join(SHELLS))
    parser.set_defaults(func=cmd_completion)


def cmd_completion(ctx, args):
    """Print the completion script for args.shell."""
    import shtab

    from jqueue.cli import app
    ctx.out(shtab.complete(app.build_parser(), shell=args.shell).rstrip("\n"))
    return EXIT_SUCCESS
