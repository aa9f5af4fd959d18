"""jqueue: a replicated, durable job queue (see jqueue.queue.JobQueue)."""

import importlib.metadata


def version():
    """The installed jqueue version, or "unknown" when running from a bare checkout."""
    try:
        return importlib.metadata.version("jqueue")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
