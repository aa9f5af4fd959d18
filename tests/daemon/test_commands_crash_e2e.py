"""Crash test of command jobs on one machine: kill -9 (or SIGTERM) of jq-masterd at random
moments, many times, while command jobs start, print, fail and retry, burst, time out and
are cancelled (the workload and its checks: tests/crash_commands.py)."""

import os
import random

from crash_commands import Workload
from daemon_helpers import restart_at_random

#: Rounds of jobs and kills, and the seed of their choices (change them to hunt).
ROUNDS = int(os.environ.get("JQ_COMMAND_CRASH_ROUNDS", "5"))
SEED = int(os.environ.get("JQ_COMMAND_CRASH_SEED", "0"))


def test_restarts_at_random_moments_lose_no_attempt_output_or_outcome(daemons, tmp_path):
    """After each round's jobs are submitted (and a job or two cancelled or killed),
    jq-masterd is killed -9 (or, one time in four, stopped by SIGTERM) at a random moment
    and started again; at the end every attempt that ran is recorded once, its output
    whole in the log once (as far as it went, cancelled), its end once among its events
    and in the action log, and every job ends as its command decided (success, exit
    status, timeout, the attempts it took), or canceled if its cancel was acknowledged."""
    rng = random.Random(20261207 + SEED)
    work = Workload(rng, tmp_path / "started")
    daemon = daemons(args=["--slots", "6"])
    ids = []
    for _ in range(ROUNDS):
        work.round(daemon, ids)
        restart_at_random(rng, [daemon])
    ids, problems = work.outcome(daemon, ids)
    assert not problems, "\n".join(problems)
    assert sum(len(work.started(job_id)) for job_id in ids) > len(ids)  # retries ran
    assert work.canceled
