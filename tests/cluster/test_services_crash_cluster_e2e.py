"""Crash test of supervised services in a cluster: jq-masterd, a node's jq-noded, or the
master's node whole (followed by a failover to another node) killed -9 at random moments,
many times, while services run on every node, some of them ending every few seconds to
be restarted.

Each run first appends its number and node to a file of its service's, then execs its
command (so that one process carries the service's marker): what really ran is known
whatever the daemons recorded. A watcher counts each service's processes all along. The
checks: never two runs of a service at once; no run number given twice; each service
ends up running once, where and as the last master says (its pid, its run); a run's line
is in the service's log at most once.
"""

import collections
import os
import random
import threading
import time

from daemon_helpers import restart_at_random
from test_cluster_e2e import start_cluster
from test_failover_e2e import fail_over_at_random
from test_services_cluster_e2e import processes_with, view

from jqueue import service

#: Rounds of kills, and the seed of their choices (change them to hunt).
ROUNDS = int(os.environ.get("JQ_SERVICE_CRASH_ROUNDS", "4"))
SEED = int(os.environ.get("JQ_SERVICE_CRASH_SEED", "0"))


class _Watcher(threading.Thread):
    """Counts the processes of each marker every few ms; a count above one seen twice in a
    row is kept (a service's run is one process: its command execs)."""

    def __init__(self, marks):
        super().__init__(daemon=True)
        self.marks = marks
        self.stopped = threading.Event()
        self.doubles = []

    def run(self):
        last = {}
        while not self.stopped.wait(0.02):
            for name, mark in self.marks.items():
                pids = processes_with(mark)
                if len(pids) > 1 and len(last.get(name, ())) > 1:
                    self.doubles.append((name, pids, time.time()))
                last[name] = pids


def _services(runs, marks, make_mark, names):
    """A long-running service pinned to each node, and one ending after 2-4 s (restarted
    always, until its start limit makes it FATAL) on each node."""
    definitions = []
    for index, node in enumerate(names):
        for kind, ending in (("steady", "exec sleep 600"),
                             ("brief", "echo line of run $JQ_RUN; exec sleep %d" % (2 + index))):
            name = "%s-%s" % (kind, node)
            marks[name] = make_mark()
            definitions.append({
                "name": name, "node": node, "restart": "always",
                "env": {"JQ_TEST_MARK": marks[name]},
                "command": 'echo "$JQ_RUN $JQ_NODE" >> %s; %s' % (runs / name, ending)})
    return definitions


def _runs(runs, name):
    try:
        with open(runs / name, encoding="utf-8") as stream:
            return [line.split() for line in stream.read().splitlines()]
    except FileNotFoundError:
        return []


def test_kills_and_failovers_never_run_a_service_twice_nor_lose_it(tmp_path, marks, nodeds,
                                                                   daemons):
    """Six services on three nodes; rounds of kills -9 (or, one time in four, SIGTERM) of
    jq-masterd, a jq-noded, or both, or of the master's node followed by a failover; then
    the checks of the module's docstring. (marks first: its check of what survived the
    test comes once the supervisors, the jq-noded, are stopped.)"""
    rng = random.Random(20261210 + SEED)
    test_cluster, started, master = start_cluster(tmp_path, nodeds, daemons, 3)
    runs = tmp_path / "runs"
    runs.mkdir()
    mark_of = {}
    definitions = _services(runs, mark_of, marks, test_cluster.names)
    with master.client() as client:
        client.add_services(definitions, start=True)
    watcher = _Watcher(mark_of)
    watcher.start()
    current = test_cluster.master
    try:
        for _ in range(ROUNDS):
            time.sleep(rng.uniform(0.3, 3))
            action = rng.choice(["master", "noded", "both", "failover"])
            if action == "failover":
                current, master = fail_over_at_random(rng, test_cluster, started, current,
                                                      master, daemons, nodeds)
                continue
            node = started[rng.choice(test_cluster.names)]
            restart_at_random(rng, {"master": [master], "noded": [node],
                                    "both": [master, node]}[action], pauses=(0, 0.2, 1))

        last = {}

        def settled():
            last.update((name, (view(master, name), processes_with(mark)))
                        for name, mark in mark_of.items())
            return all(v["reachable"] and (
                v["state"] == service.RUNNING and pids == [v["pid"]]
                or name.startswith("brief") and v["state"] in (
                    service.BACKOFF, service.STARTING, service.FATAL) and not pids)
                for name, (v, pids) in last.items())
        deadline = time.monotonic() + 90
        while not settled():
            assert not watcher.doubles, "ran twice at once: %s" % watcher.doubles[:3]
            assert time.monotonic() < deadline, "not settled: %s" % "\n".join(
                "%s: %s" % (name, (v["state"], v["node"], v["pid"], v["run"], v["reachable"],
                                   v["message"], pids, _runs(runs, name)[-3:]))
                for name, (v, pids) in last.items())
            time.sleep(0.1)
        time.sleep(1)
    finally:
        watcher.stopped.set()
        watcher.join()
    problems = ["%s ran twice at once: %s" % (name, pids) for name, pids, _ in watcher.doubles]
    with master.client() as client:
        for name in mark_of:
            numbers = [int(number) for number, _ in _runs(runs, name)]
            twice = [n for n, count in collections.Counter(numbers).items() if count > 1]
            if twice:
                problems.append("%s: runs %s started twice: %s" % (name, twice,
                                                                    _runs(runs, name)))
            now = view(master, name)
            if numbers and now["run"] < max(numbers):
                problems.append("%s: the master says run %d, run %d started" % (
                    name, now["run"], max(numbers)))
            if name.startswith("steady") and now["state"] == service.RUNNING:
                if [str(now["run"]), now["node"]] != _runs(runs, name)[-1]:
                    problems.append("%s: the master says run %d on %s, the last start was %s"
                                    % (name, now["run"], now["node"], _runs(runs, name)[-1]))
            if name.startswith("brief"):
                data = client.read_service_log(name, 0, 1 << 20)["data"]
                lines = collections.Counter(line for line in data.splitlines()
                                            if line.startswith("line of run"))
                problems.extend("%s: %r %d times in its log" % (name, line, count)
                                for line, count in lines.items() if count > 1)
        for name in mark_of:
            client.control_service(name, "stop")
    assert not problems, "\n".join(problems)
    deadline = time.monotonic() + 30
    while any(processes_with(mark) for mark in mark_of.values()):
        assert time.monotonic() < deadline, "services not stopped"
        time.sleep(0.1)
