"""Run the jqueue benchmarks in one process and print figures with their ratios.

Usage: python bench/run.py [--quick] [--dir DIR] [--only core,...]
The working directory (default: a temporary one under the current directory, i.e. on the
same disk as the checkout) is removed afterwards.
"""

import argparse
import importlib
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SUITES = ["core", "luxi", "peers", "replication", "commands", "pool", "httpapi",
          "services", "lifecycle", "cluster"]
RATIO_TEXT = {
    "core": "to (a), one fsync'd file per change",
    "luxi": "cost of the socket path: in-process figure / socket figure (latency: inverse)",
    "peers": "jqueue / Huey, same clients, jobs and workers (RQ's and Celery's rows: their "
             "figure, and jqueue / it)",
    "replication": "to the local-only rate measured first",
    "commands": "to (a) the machine's own spawn rate; (d) to the idle daemon; (e) to cmd > file",
    "pool": "(a) 100 nodes to one; (b) loaded to empty; (c) RSS to the idle daemon",
    "httpapi": "to (a), LUXI's durable submits in the same run (target: at least 0.5)",
    "services": "(a) to a command job's submit -> first instruction; (b) to the 1 s back-off; "
                "(d) to the idle daemons; (e) to the same submits with nothing beside",
    "lifecycle": "submits to (a), the idle rate; (d) to the idle daemon; freed to the du drop",
    "cluster": "(a) candidates frozen to the same read with them running (median to median, "
               "max to max)",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument("--dir", default=os.getcwd(), help="where to create the work dir")
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="jq-bench-", dir=args.dir)
    results = {}  # figures a later suite compares with (in-process rates for the socket)
    try:
        for name in args.only.split(","):
            module = importlib.import_module(name)
            print("== %s: %s" % (name, module.__doc__.splitlines()[0]))
            print("   ratio: %s" % RATIO_TEXT.get(name, ""))
            work = os.path.join(root, name)
            os.makedirs(work)
            for label, value, unit, ratio in module.run(work, args.quick, results):
                ratio_text = "" if ratio is None else "  x%.2f" % ratio
                print("  %-62s %12.2f %-9s%s" % (label, value, unit, ratio_text), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
