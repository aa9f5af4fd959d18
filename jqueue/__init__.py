"""jqueue: a replicated, durable job queue.

    import jqueue
    q = jqueue.JobQueue("/srv/queue", workers=8)
    job_id = q.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0.1}])

    outcome = q.wait_for_job(job_id, timeout=60)     # JobOutcome: status, results

The contracts are in jqueue.queue.JobQueue (the library API), jqueue.errors (the error
classes), jqueue.constants (statuses, priorities, fields) and jqueue.opcodes (defining
opcodes). jqueue.Client (jqueue.client) talks to a running jq-masterd with JobQueue's
method names; the raw LUXI client is jqueue.luxi.Client. Command jobs (OP_COMMAND_RUN)
run on this machine with ``JobQueue(path, commands=jqueue.local_commands(state_dir))``.
"""

def version():
    """The installed jqueue version, or "unknown" when running from a bare checkout."""
    import importlib.metadata  # not at import: it costs clients' start-up a lot

    try:
        return importlib.metadata.version("jqueue")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


from jqueue import constants, errors  # noqa: E402 - version() first: modules below use it
from jqueue.client import Client  # noqa: E402
from jqueue.job import JobOutcome  # noqa: E402

__all__ = ["Client", "JobOutcome", "JobQueue", "constants", "errors", "local_commands",
           "version"]


def __getattr__(name):
    # JobQueue (the store, the runner) and local_commands (Twisted, the executor) are
    # imported when first asked for: clients (jqctl, jqueue.Client) need neither, and
    # start faster without them.
    if name == "JobQueue":
        from jqueue.queue import JobQueue
        return JobQueue
    if name == "local_commands":
        from jqueue.embedded import local_commands
        return local_commands
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
