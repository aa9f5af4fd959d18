"""jqueue.Client: the library's face for a running jq-masterd, over LUXI.

    import jqueue
    with jqueue.Client() as client:          # $JQ_SOCKET, $JQ_STATE_DIR, or the default
        job_id = client.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": 1}])
        outcome = client.wait_for_job(job_id, timeout=60)
        print(outcome.status, outcome.results)

Its methods have the names, arguments and answers of jqueue.JobQueue's where they
overlap (submit_job, submit_many_jobs, cancel_job, change_job_priority, hold_job,
release_job, reset_job, retry_job, resolve_job, purge_jobs, archive_job, auto_archive_jobs,
query_jobs, wait_for_job_changes, set_drain_flag, drain_flag, wait_for_job), so code
written for one works with the other. Errors the daemon answers are raised as the
jqueue.errors classes they name. Built on jqueue.luxi.client.Client (standard
library sockets only: no Twisted); one request at a time, so share a Client between
threads only under a lock of your own.
"""

import os
import time

from jqueue import constants, errors
from jqueue.job import OUTCOME_FIELDS, JobOutcome, wait_until_final
from jqueue.luxi import client as luxi_client

#: Seconds the daemon may spend in one PurgeJobs call.
PURGE_CALL = 10.0
#: The environment variable naming a node's state directory (as jqctl --state-dir).
STATE_DIR_ENV_VAR = "JQ_STATE_DIR"


def default_socket():
    """$JQ_SOCKET, else $JQ_STATE_DIR/run/jqueue.sock, else the daemon's default socket."""
    if os.environ.get(constants.SOCKET_ENV_VAR):
        return os.environ[constants.SOCKET_ENV_VAR]
    if os.environ.get(STATE_DIR_ENV_VAR):
        return os.path.join(os.environ[STATE_DIR_ENV_VAR], "run", "jqueue.sock")
    return constants.DEFAULT_SOCKET


class Client:
    """A client of a running jq-masterd on socket (default: see default_socket)."""

    def __init__(self, socket=None, timeout=constants.LUXI_TIMEOUT):
        self.socket = socket or default_socket()
        self._luxi = luxi_client.Client(self.socket, timeout=timeout)

    def close(self):
        self._luxi.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def luxi(self):
        """The underlying jqueue.luxi.client.Client (every LUXI method, wire shapes)."""
        return self._luxi

    def submit_job(self, ops, drained_ok=False, token=None, owner=None, parent=None,
                   not_before=None, start_in=None, notify=None):
        """Submit one job; its id (see JobQueue.submit_job)."""
        submit = (self._luxi.submit_job_to_drained_queue if drained_ok
                  else self._luxi.submit_job)
        return submit(ops, token=token, owner=owner, parent=parent, not_before=not_before,
                      start_in=start_in, notify=notify)

    def submit_many_jobs(self, jobs, drained_ok=False, tokens=None, owner=None, options=None):
        """Submit several jobs; [(True, id) | (False, message)] in order."""
        if drained_ok:
            raise errors.OpPrereqError("LUXI has no SubmitManyJobs to a drained queue: "
                                       "submit each job with drained_ok=True")
        return [tuple(result) for result in self._luxi.submit_many_jobs(
            jobs, tokens=tokens, owner=owner, options=options)]

    def cancel_job(self, job_id, kill=False):
        """(success, message)."""
        return tuple(self._luxi.cancel_job(job_id, kill=kill))

    def change_job_priority(self, job_id, priority):
        """(success, message)."""
        return tuple(self._luxi.change_job_priority(job_id, priority))

    def hold_job(self, job_id):
        """(success, message); see JobQueue.hold_job."""
        return tuple(self._luxi.hold_job(job_id))

    def release_job(self, job_id):
        """(success, message); see JobQueue.release_job."""
        return tuple(self._luxi.release_job(job_id))

    def reset_job(self, job_id):
        """(success, message); see JobQueue.reset_job."""
        return tuple(self._luxi.reset_job(job_id))

    def retry_job(self, job_id):
        """(success, message); see JobQueue.retry_job."""
        return tuple(self._luxi.retry_job(job_id))

    def purge_jobs(self, age, timeout=None):
        """{"purged", "bytes_freed", "done"}; see JobQueue.purge_jobs (calls of at most
        PURGE_CALL seconds each, until done or timeout)."""
        total = {"purged": 0, "bytes_freed": 0, "done": False}
        deadline = None if timeout is None else time.monotonic() + timeout
        while not total["done"]:
            step = PURGE_CALL if deadline is None else max(
                0.0, min(PURGE_CALL, deadline - time.monotonic()))
            answer = self._luxi.purge_jobs(age, step)
            total = {"purged": total["purged"] + answer["purged"],
                     "bytes_freed": total["bytes_freed"] + answer["bytes_freed"],
                     "done": answer["done"]}
            if deadline is not None and time.monotonic() >= deadline:
                break
        return total

    def resolve_job(self, reference):
        """The id of the live job a reference names; see JobQueue.resolve_job."""
        return self._luxi.resolve_job(reference)

    def archive_job(self, job_id):
        return self._luxi.archive_job(job_id)

    def auto_archive_jobs(self, age, timeout):
        """(archived, left_unchecked)."""
        return tuple(self._luxi.auto_archive_jobs(age, timeout))

    def query_jobs(self, job_ids, fields):
        return self._luxi.query_jobs(job_ids or [], fields)

    def wait_for_job_changes(self, job_id, fields, prev_job_info, prev_log_serial, timeout):
        """(job_info, log_entries), or constants.JOB_NOTCHANGED after timeout seconds."""
        answer = self._luxi.wait_for_job_change(job_id, fields, prev_job_info,
                                                prev_log_serial, timeout)
        if answer == constants.JOB_NOTCHANGED:
            return answer
        return answer[0], answer[1]

    def wait_for_job(self, job_id, timeout=None):
        """Wait until the job is finished; its JobOutcome (WaitTimeout, JobLost)."""
        wait_until_final(self.wait_for_job_changes, job_id, timeout)
        row = self.query_jobs([job_id], OUTCOME_FIELDS)[0]
        if row is None:
            raise errors.JobLost("job %s not found" % job_id)
        return JobOutcome.from_row(row)

    def set_drain_flag(self, flag):
        return self._luxi.set_drain_flag(flag)

    # Supervised services (JobQueue's names)

    def add_services(self, definitions, start=False):
        return self._luxi.add_services(definitions, start)

    def modify_service(self, name, changes):
        return self._luxi.modify_service(name, changes)

    def remove_service(self, name):
        return self._luxi.remove_service(name)

    def control_service(self, name, action):
        return tuple(self._luxi.control_service(name, action))

    def query_services(self, names=None):
        return self._luxi.query_services(names)

    def read_service_log(self, name, offset, max_bytes):
        return self._luxi.read_service_log(name, offset, max_bytes, exact=True)

    @property
    def drain_flag(self):
        return self._luxi.query_config_values([constants.CONFIG_DRAIN_FLAG])[0]
