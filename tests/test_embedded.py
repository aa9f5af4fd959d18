"""Tests of jqueue.embedded: the library runs command jobs in its own process.

The script runs in a child process: local_commands starts Twisted's reactor in a thread,
which must not leak into the test process.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, time
    import jqueue
    state = sys.argv[1]
    queue = jqueue.JobQueue(state + "/queue", workers=2,
                            commands=jqueue.local_commands(state, node_name="here", slots=2))
    ids = [queue.submit_job([{"OP_ID": "OP_COMMAND_RUN", "cmd": cmd}])
           for cmd in ("echo out $JQ_NODE; echo err >&2; exit 4", ["true"])]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = queue.query_jobs(ids, ["status", "exit_status", "reason", "node"])
        if all(row[0] in ("success", "error") for row in rows):
            break
        time.sleep(0.02)
    print(rows)
    print(queue.read_job_log(ids[0], 0, 1 << 16)["data"].decode())
    queue.shutdown()
""")


def test_a_library_queue_runs_command_jobs_with_local_commands(tmp_path):
    """JobQueue(commands=local_commands(...)): command jobs run, with their fields and log."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows, _, log = done.stdout.partition("\n")
    assert rows == "[['error', 4, 'FAILED', 'here'], ['success', 0, 'OK', 'here']]"
    assert "\nout here\nerr\n* EXIT : 4\n" in log
