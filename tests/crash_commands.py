"""A workload for crash tests of command jobs (tests/daemon/test_commands_crash_e2e.py,
tests/cluster/test_commands_crash_cluster_e2e.py): command jobs that print, fail and
retry, burst and time out, and the checks of what the queue recorded of them once the
daemons were killed -9 at random moments in between.

Each command first appends its start to a file of its job's (its JQ_ATTEMPT, one line),
so that what really ran is known whatever the daemons recorded: every attempt that ran
must have been recorded once (its number, its whole output once in the job's log, one
outcome among its events and in the action log), and each job must end as its command
decided, or canceled if a cancel of it was acknowledged (its last attempt's output then
logged as far as it went).
"""

import collections
import os
import time

from daemon_helpers import wait_all_final

from jqueue import constants, errors

FIELDS = ["status", "exit_status", "timed_out", "reason", "attempt"]
#: What the action log says of an attempt's end (one each).
OUTCOMES = frozenset(["OK", "FAILED", "TIMEOUT", "KILLED", "INTERR", "NOXFER", "NODE_LOST"])

#: kind: what the command does; fails: the attempts that fail (exit 3) before one
#: succeeds; lines: how many it prints.
Spec = collections.namedtuple("Spec", "kind fails max_attempts lines")


class Workload:
    """Command jobs of every kind, chosen by rng; marks: a directory of start files."""

    def __init__(self, rng, marks, nodes=(None,)):
        self.rng = rng
        self.marks = str(marks)
        os.makedirs(self.marks, exist_ok=True)
        self.nodes = list(nodes)
        self.specs = {}
        self.canceled = set()  # jobs whose cancel was acknowledged
        self.unacknowledged = set()  # jobs submitted, not acknowledged in time

    def submit(self, client, count):
        """Submit count jobs; their ids. Jobs the master could not get acknowledged in time
        (its candidates resyncing after a failover) are theirs too, in unacknowledged: a
        failover before they are may lose them."""
        made = [self._job() for _ in range(count)]
        try:
            results = client.submit_many_jobs([[op] for op, _ in made])
        except errors.SubmissionNotAcknowledged as err:
            results = [(True, job_id) for job_id in err.job_ids]
            self.unacknowledged.update(err.job_ids)
        ids = []
        for (ok, job_id), (_, spec) in zip(results, made):
            assert ok, job_id
            self.specs[job_id] = spec
            ids.append(job_id)
        return ids

    def kept(self, client, ids):
        """ids without the unacknowledged jobs a failover lost."""
        rows = client.query_jobs(ids, ["id"])
        return [job_id for job_id, row in zip(ids, rows)
                if row is not None or job_id not in self.unacknowledged]

    def round(self, daemon, ids):
        """One round before a kill: jobs submitted to daemon's master (added to ids), a
        job or two of them cancelled, then a random wait."""
        with daemon.client() as client:
            ids += self.submit(client, self.rng.randint(4, 10))
            time.sleep(self.rng.uniform(0, 0.5))
            self.cancel_some(client, ids)
        time.sleep(self.rng.uniform(0.05, 1.0))

    def outcome(self, daemon, ids, action_log=True):
        """Once every job of ids that is kept (see kept) ended on daemon's master: (those
        ids, what is wrong with them: see problems; its action log read if action_log)."""
        with daemon.client(timeout=60) as client:
            ids = self.kept(client, ids)
            wait_all_final(client, ids, 120)
            return ids, self.problems(client, ids, os.path.join(
                daemon.state_dir, "actions.log") if action_log else None)

    def cancel_some(self, client, ids):
        """Cancel (or kill) a job or two of ids, chosen at random; those acknowledged must
        end canceled."""
        recent = ids[-10:]  # likely still running
        for job_id in self.rng.sample(recent, min(len(recent), self.rng.randint(1, 2))):
            ok, _ = client.cancel_job(job_id, self.rng.random() < 0.5)
            if ok:
                self.canceled.add(job_id)

    def _job(self):
        rng = self.rng
        kind = rng.choice(["lines", "burst", "timeout", "quick"])
        spec = Spec(kind, rng.randint(0, 2), rng.randint(1, 3),
                    {"lines": rng.randint(50, 400), "burst": rng.randint(20000, 120000),
                     "timeout": 30, "quick": 3}[kind])
        line = "J${JQ_JOB_ID}A${JQ_ATTEMPT}L"
        if kind == "burst":  # pieces of over 64 KiB: one machine journals them as extents
            body = 'seq -f "%s%%.0f" 0 %d; sleep 0.2' % (line, spec.lines - 1)
        else:
            body = ('i=0; while [ $i -lt %d ]; do echo %s$i; i=$((i+1)); '
                    '[ $((i %% 50)) -eq 0 ] && sleep 0.05; done' % (spec.lines, line))
        if kind == "timeout":
            body += "; sleep 30"
        started = "%s/$JQ_JOB_ID" % self.marks
        op = {"OP_ID": constants.OP_COMMAND_RUN, "max_attempts": spec.max_attempts,
              "retry_delay": 0.1, "retry_delay_max": 0.2,
              "cmd": "echo $JQ_ATTEMPT >> %s; %s; [ $(wc -l < %s) -gt %d ]" % (
                  started, body, started, spec.fails)}
        if kind == "timeout":
            op.update(timeout=rng.uniform(0.3, 1.5), kill_grace=1)
        node = rng.choice(self.nodes)
        if node is not None:
            op["node"] = node
        return op, spec

    def started(self, job_id):
        """The start numbers of the job's attempts that ran, in the order they ran."""
        try:
            with open(os.path.join(self.marks, str(job_id)), encoding="ascii") as stream:
                return [int(word) for word in stream.read().split()]
        except FileNotFoundError:
            return []

    def problems(self, client, ids, action_log=None):
        """What is wrong with the final jobs ids of the master client talks to (a list of
        descriptions: empty if nothing): their events as it answers them, and as its
        action_log file has them (a path; None: not read, after a failover)."""
        rows = dict(zip(ids, client.query_jobs(ids, FIELDS)))
        logged = collections.defaultdict(list)
        if action_log is not None:
            with open(action_log, encoding="utf-8") as stream:
                for line in stream:  # DATE TIME NODE JOB STATUS MESSAGE
                    parts = line.split(" ", 5)
                    if len(parts) > 4 and parts[3].isdigit():
                        logged[int(parts[3])].append(parts[4].strip())
        found = []
        for job_id in ids:
            events = client.wait_for_events(0, {"job": job_id}, 0)
            assert not events["gap"], "events of job %d dropped" % job_id
            told = [event["status"] for event in events["events"]]
            log = "".join(client.follow_job_log(job_id))
            what = list(self._job_problems(job_id, rows[job_id], log, told))
            if action_log is not None and logged[job_id] != told:
                what.append("action log %s, events %s" % (logged[job_id], told))
            found += ["job %d (%s, %s): %s" % (job_id, self.specs[job_id], rows[job_id], w)
                      for w in what]
        return found

    def _job_problems(self, job_id, row, log, actions):
        spec = self.specs[job_id]
        status, exit_status, timed_out, reason, attempt = row
        ran = self.started(job_id)
        if ran != sorted(set(ran)):
            yield "attempts ran more than once: %s" % ran
        # A cancel may stop the last attempt before its command's first line
        killed = (attempt or 0) - len(ran) if job_id in self.canceled else 0
        if (attempt or 0) != len(ran) + killed or killed not in (0, 1):
            yield "%s attempts recorded, %d ran (starts %s)" % (attempt, len(ran), ran)
        banners = [line for line in log.split("\n") if line.startswith("* JOB : ")]
        # Starts that never ran their command: lost as they began, or refused by the
        # node (NOXFER: sent again later, under the same number)
        unstarted = (log.count("* RETRY : the command never started")
                     + log.count("* NOXFER : ") + killed)
        if len(banners) != len(ran) + unstarted:
            yield "%d start banners for %d attempts run, %d never started" % (
                len(banners), len(ran), unstarted)
        for number in ran:
            if not any(b.endswith("(start %d)" % number)
                       or ("(start " not in b and "ATTEMPT : %d/" % number in b)
                       for b in banners):
                yield "start %d has no banner: %s" % (number, banners)
            prefix = "J%dA%dL" % (job_id, number)
            printed = [line for line in log.split("\n") if line.startswith(prefix)]
            whole = [prefix + str(i) for i in range(spec.lines)]
            if job_id in self.canceled:  # as far as it went: killed mid-line, the last
                whole = whole[:len(printed)]  # is the start of one (J4A2L7250 of ...L72503)
                if whole and printed[-1] != whole[-1] and whole[-1].startswith(printed[-1]):
                    whole[-1] = printed[-1]
            if printed != whole:
                yield "start %d: %d lines logged of %d, %d of them again" % (
                    number, len(printed), spec.lines, len(printed) - len(set(printed)))
        ends = sum(status in OUTCOMES for status in actions)
        if actions.count("DONE") != 1 or ends != len(ran) + unstarted:
            yield "events %s for %d attempts run, %d never started" % (
                actions, len(ran), unstarted)
        if job_id in self.canceled:
            if status != "canceled":
                yield "its cancel was acknowledged"
        elif spec.kind == "timeout":
            expected = ("error", "TIMEOUT", True, spec.max_attempts)
            if (status, reason, timed_out, attempt) != expected:
                yield "not timed out at attempt %d" % spec.max_attempts
        elif spec.fails < spec.max_attempts:
            if (status, exit_status, reason, attempt) != ("success", 0, "OK", spec.fails + 1):
                yield "no success at attempt %d" % (spec.fails + 1)
        elif (status, exit_status, reason, attempt) != ("error", 1, "FAILED",
                                                        spec.max_attempts):
            yield "no failure (exit 1) at attempt %d" % spec.max_attempts
