"""Job dependencies: which jobs wait for which, and whether a dependency is met.

An opcode's ``depends`` is ``[[job_id, [final statuses]], ...]``. A dependency is met
when that job is finalized with one of the statuses (any final status if the list is
empty). The manager remembers who waits for whom, so that the queue can release the
dependents of a job the moment that job's final status is durable: no polling.
"""

import threading

from jqueue import constants

CONTINUE = "continue"
WAIT = "wait"
FAILED = "failed"


def resolve(depends, job_index, job_ids):
    """Turn relative dependencies (negative ids) into absolute ones for a SubmitManyJobs job.

    job_ids holds the id (or None if refused) of each earlier job of the same request.
    Returns (depends, None) or (None, error message). Refuses a dependency on the job
    itself or on a later one: with only earlier ids allowed, no cycle can form.
    """
    if not depends:
        return depends, None
    own_id = job_ids[job_index]
    result = []
    for dep_id, statuses in depends:
        if dep_id < 0:
            target = job_index + dep_id
            if target < 0:
                return None, "relative dependency %d points before the first job of the " \
                             "request" % dep_id
            dep_id = job_ids[target]
            if dep_id is None:
                return None, "job it depends on (relative %d) was not submitted" % (
                    target - job_index)
        elif dep_id >= own_id:
            return None, "a job cannot depend on itself or on a later job (%d)" % dep_id
        result.append([dep_id, statuses])
    return result, None


def resolve_request(jobs, next_id, known=None):
    """Resolve every job of a SubmitManyJobs request; the first accepted one gets next_id.

    jobs holds each job's opcode inputs, whose "depends" are made absolute in place.
    known, if given, holds for each job the id of the job an earlier submission with the
    same token created (None: a new job); such a job keeps that id and takes none.
    Returns [(job id, None) or (None, problem)] in order: accepted jobs take consecutive
    ids; a refused one takes none.
    """
    ids, results = [], []
    for index, inputs in enumerate(jobs):
        if known is not None and known[index] is not None:
            ids.append(known[index])
            results.append((known[index], None))
            continue
        ids.append(next_id)
        problem = None
        for op_input in inputs:
            op_input["depends"], problem = resolve(op_input.get("depends"), index, ids)
            if problem:
                break
        if problem:
            ids[-1] = None
            results.append((None, problem))
        else:
            results.append((next_id, None))
            next_id += 1
    return results


class DependencyManager:
    """Remembers which jobs wait for which; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waiting = {}  # dependency id -> set of dependent job ids

    def check(self, job_id, dep_id, statuses, dep_status):
        """Return (CONTINUE|WAIT|FAILED, message) for one dependency of job_id.

        dep_status is the dependency's current status, or None if it does not exist.
        WAIT registers job_id to be released when dep_id finalizes.
        """
        if dep_status is None:
            return FAILED, "dependency job %s not found" % dep_id
        if dep_status not in constants.JOBS_FINALIZED:
            with self._lock:
                self._waiting.setdefault(dep_id, set()).add(job_id)
            return WAIT, "waiting for job %s" % dep_id
        if not statuses or dep_status in statuses:
            return CONTINUE, None
        return FAILED, "dependency job %s finalized with status '%s', not one of %s" % (
            dep_id, dep_status, ", ".join(statuses))

    def release(self, dep_id):
        """Forget and return the jobs that waited for dep_id."""
        with self._lock:
            return self._waiting.pop(dep_id, set())

    def waiting_for(self, dep_id):
        with self._lock:
            return set(self._waiting.get(dep_id, ()))
