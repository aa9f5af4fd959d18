"""Child process of test_readoption: a daemon stand-in hosting an Executor in the real reactor.

Usage: exec_host_child.py STATE_DIR SHIM MARKER COMMAND. Starts an Executor on STATE_DIR
(shim "c" or "python"), launches job 1 attempt 1 running COMMAND with /bin/sh -c, prints
"started PID" once the command exec'd and "output N" as its output grows, then runs until
killed (the test SIGKILLs it while the command still runs).
"""

import sys

from twisted.internet import reactor

from jqueue.exec import AttemptSpec, Executor


def main(state_dir, shim, marker, command):
    executor = Executor(state_dir, reactor, shim=shim)

    def listen(event):
        if event[0] == "started":
            print("started", event[1].pid, flush=True)
        elif event[0] == "output":
            print("output", event[3], flush=True)

    def begin():
        executor.start()
        executor.subscribe(listen)
        executor.launch(AttemptSpec(
            job=1, attempt=1, argv=["/bin/sh", "-c", command], dir="/",
            env={"PATH": "/usr/bin:/bin", "JQ_JOB_ID": marker}))

    reactor.callWhenRunning(begin)
    reactor.run()


if __name__ == "__main__":
    main(*sys.argv[1:])
