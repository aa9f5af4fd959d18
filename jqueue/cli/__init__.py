"""jqctl, the operator's command-line tool for jqueue (see man/jqctl.8.rst).

``main(argv=None, client_factory=None)`` runs it and returns the exit status;
``build_parser()`` returns its argparse parser (the man page test walks it).

A program at the top: it talks to jq-masterd through the LUXI client and may import any
package, but no daemon module (jqctl must run where no daemon is installed).
"""

from jqueue.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
