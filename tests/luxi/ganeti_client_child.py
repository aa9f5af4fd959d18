"""Drives jq-masterd with Ganeti 3.0.2's own Python client library; prints what it saw.

Run by tests/luxi/test_ganeti_client_e2e.py with Ganeti's unpacked tree on sys.path and a
virtual cluster root in GANETI_ROOTDIR/GANETI_HOSTNAME, so that ``luxi.Client()`` and
``cli.GetClient()`` find the daemon's socket where Ganeti's pathutils put it. Nothing here
imports jqueue: this is Ganeti's code talking to ours over the wire. The answers are
printed as one JSON object on the last line of stdout (JobExecutor prints its progress
before it) for the test to check.
"""

import json
import sys

from ganeti import cli, errors, luxi, opcodes  # noqa: I001 - Ganeti's tree, not ours


def _error_name(func):
    """Call func; the name of the Ganeti error class it raised (None if it returned)."""
    try:
        func()
    except errors.GenericError as err:
        return err.__class__.__name__
    return None


def scenario(cl):
    """Every client call the compatibility test checks, in one run; a dict of answers."""
    out = {}
    feedback = []
    job_id = cl.SubmitJob([opcodes.OpTestDelay(duration=0, repeat=2)])
    out["submit_job_id"] = job_id
    out["poll_job"] = cli.PollJob(job_id, cl=cl, feedback_fn=feedback.append)
    out["feedback"] = [message for _, _, message in feedback]
    out["submit_opcode"] = cli.SubmitOpCode(opcodes.OpTestDelay(duration=0.01), cl=cl,
                                            feedback_fn=lambda msg: None)
    executor = cli.JobExecutor(cl=cl, feedback_fn=lambda msg: None)
    for index in range(3):
        executor.QueueJob("delay%d" % index, opcodes.OpTestDelay(duration=0))
    out["executor"] = executor.GetResults()
    out["query_jobs"] = cl.QueryJobs([job_id], ["id", "status", "opstatus", "summary"])
    response = cl.Query("job", ["id", "status"], ["=", "id", job_id])
    out["query"] = [[list(cell) for cell in row] for row in response.data]
    out["query_fields"] = sorted(f.name for f in cl.QueryFields("job", None).fields)

    slow = cl.SubmitJob([opcodes.OpTestDelay(duration=60)])
    out["change_priority"] = list(cl.ChangeJobPriority(slow, 10))
    out["cancel"] = list(cl.CancelJob(slow))
    out["cancel_result"] = _error_name(lambda: cli.PollJob(slow, cl=cl,
                                                           feedback_fn=lambda msg: None))
    out["archive"] = cl.ArchiveJob(job_id)
    out["archived_wait"] = _error_name(
        lambda: cl.WaitForJobChangeOnce(job_id, ["status"], None, None, 0))
    out["archived_query_jobs"] = cl.QueryJobs([job_id], ["id", "status", "archived"])
    out["auto_archive"] = list(cl.AutoArchiveJobs(0))

    out["drain"] = cl.SetQueueDrainFlag(True)
    out["drained_values"] = cl.QueryConfigValues(["drain_flag"])
    out["drained_submit"] = _error_name(
        lambda: cl.SubmitJob([opcodes.OpTestDelay(duration=0)]))
    out["undrain"] = cl.SetQueueDrainFlag(False)
    out["config_values"] = cl.QueryConfigValues(["drain_flag", "cluster_name",
                                                 "master_node"])
    out["unknown_job_wait"] = _error_name(
        lambda: cl.WaitForJobChangeOnce(999999, ["status"], None, None, 0))
    return out


def main():
    cl = luxi.Client()
    try:
        answers = scenario(cl)
        sys.stdout.write("\n" + json.dumps(answers) + "\n")
    finally:
        cl.Close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
