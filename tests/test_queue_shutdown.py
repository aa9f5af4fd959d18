"""Tests of JobQueue once shut down: job changes are refused before anything is touched.

jq-masterd keeps serving LUXI while JobQueue.shutdown writes the queue's state in another
thread, so a change arriving then must be refused cleanly (and must not alter the jobs
the final checkpoint is writing).
"""

import pytest
from conftest import delay, run_jobs

from jqueue import errors


def test_changes_after_shutdown_are_refused_and_change_nothing(open_queue, tmp_path):
    """cancel, change-priority, archive and auto-archive after shutdown raise JobQueueError
    ("shut down") and leave every job as it was."""
    queue = open_queue()
    done = queue.submit_job([delay(0)])
    run_jobs(queue)
    pending = queue.submit_job([delay(0)])
    queue.shutdown(timeout=1)
    calls = [lambda: queue.cancel_job(pending), lambda: queue.change_job_priority(pending, 5),
             lambda: queue.archive_job(done), lambda: queue.auto_archive_jobs(-1, 10)]
    for call in calls:
        with pytest.raises(errors.JobQueueError, match="shut down"):
            call()
    reopened = open_queue()
    assert reopened.query_jobs([done, pending], ["status", "archived", "priority"]) == [
        ["success", False, 0], ["queued", False, 0]]
