"""Child process of test_readoption: a daemon stand-in hosting an Executor in the real reactor.

Usage: exec_host_child.py STATE_DIR SHIM MARKER COMMAND [until-end]. Starts an Executor on
STATE_DIR (shim "c" or "python"), launches job 1 attempt 1 running COMMAND with /bin/sh -c,
prints "nofile SOFT" (its open files limit once the executor started), "started PID" once
its pid is recorded (just before the exec) and "output N" as its output grows, then runs
until killed (the test SIGKILLs it while the command still runs); with "until-end", prints
"ended EXIT_STATUS SIGNAL" when the attempt ends and exits. The reactor is Twisted's own,
with its signal handlers (SIGCHLD included) installed.
"""

import resource
import sys

from twisted.internet import reactor

from jqueue.exec import AttemptSpec, Executor


def main(state_dir, shim, marker, command, until_end=None):
    executor = Executor(state_dir, reactor, shim=shim)

    def listen(event):
        if event[0] == "started":
            print("started", event[1].pid, flush=True)
        elif event[0] == "output":
            print("output", event[3], flush=True)
        elif event[0] == "ended" and until_end:
            print("ended", event[3].exit_status, event[3].signal, flush=True)
            executor.stop()
            reactor.stop()

    def begin():
        executor.start()
        print("nofile", resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)
        executor.subscribe(listen)
        executor.launch(AttemptSpec(
            job=1, attempt=1, argv=["/bin/sh", "-c", command], dir="/",
            env={"PATH": "/usr/bin:/bin", "JQ_JOB_ID": marker}))

    reactor.callWhenRunning(begin)
    reactor.run()


if __name__ == "__main__":
    main(*sys.argv[1:])
