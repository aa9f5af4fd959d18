"""``python -m jqueue.cli``: run jqctl (see jqueue.cli)."""

import sys

from jqueue.cli import main

sys.exit(main())
