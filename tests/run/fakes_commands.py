"""Fakes for the command runner: a host with a fake clock, and a node link driven by tests.

FakeHost runs the calls it is given only when a test drains it (the runner hops threads
through it, so running a call at once would take the queue lock twice). FakeLink is a node
whose attempts the test starts, feeds output to and ends; it records what the runner asked.
"""

import heapq
import itertools

from jqueue import errors


class FakeHost:
    """The runner's host: queued calls, timers on a fake clock (see jqueue.run.commands)."""

    def __init__(self, clock):
        self.clock = clock          # shared with the queue: an object with a settable now
        self._calls = []
        self._timers = []
        self._seq = itertools.count()

    def call(self, fn, *args):
        self._calls.append((fn, args))

    def call_later(self, delay, fn, *args):
        timer = _Timer(self.now + delay, fn, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_sync(self, fn, *args):
        return fn(*args)

    @property
    def now(self):
        return self.clock.now

    @now.setter
    def now(self, value):
        self.clock.now = value

    def seconds(self):
        return self.now

    def drain(self):
        """Run queued calls (and the calls they queue); True if any ran."""
        ran = False
        while self._calls:
            fn, args = self._calls.pop(0)
            fn(*args)
            ran = True
        return ran

    def run_turn(self):
        """Run the calls queued now, not those they queue meanwhile: one turn of a
        reactor's loop (Twisted runs its thread calls so); True if any ran."""
        calls, self._calls = self._calls, []
        for fn, args in calls:
            fn(*args)
        return bool(calls)

    def advance(self, seconds):
        """Move the clock, firing due timers in order."""
        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.fn(*timer.args)
            self.drain()
        self.now = target

    def pending_timers(self):
        return sorted(t.when - self.now for _, _, t in self._timers if not t.cancelled)


class _Timer:
    def __init__(self, when, fn, args):
        self.when, self.fn, self.args = when, fn, args
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class FakeLink:
    """A node: launches are recorded; the test produces output and ends attempts."""

    containment = "fake"

    def __init__(self, name="node1", slots=4, tags=(), heartbeats=False):
        self.name = name
        self.slots = slots
        self.tags = frozenset(tags)
        self.drained = self.offline = False
        self.reachable = True
        self.heartbeats = heartbeats    # health applies: the test moves last_heard
        self.last_heard = None
        self.launched = []          # specs, in order
        self.controls = []          # (job, attempt, action, signum)
        self.forgotten = []
        self.released = []          # (job, attempt, start, end): output it may free
        self.fetches = []           # (job, attempt, offset)
        self.known = {}             # (job, attempt) -> info dict
        self.output = {}            # (job, attempt) -> bytes
        self.refuse = None          # an exception launch answers, if set
        self.refuse_control = None  # an exception control answers, if set
        self.lookup_error = None    # an exception lookup answers, if set (node unreachable)
        self.held_launches = None   # a list: launches wait there, (spec, done), unanswered
        self._listener = None

    def subscribe(self, listener):
        self._listener = listener
        self.last_heard = listener.host.seconds()

    def launch(self, spec, done):
        if self.held_launches is not None:
            self.held_launches.append((spec, done))
            return
        if self.refuse is not None:
            done(self.refuse)
            return
        key = (spec["job"], spec["attempt"])
        self.launched.append(spec)
        info = self.known.setdefault(key, {
            "job": key[0], "attempt": key[1], "pid": 1000 + len(self.launched), "pgid": None,
            "cgroup": None, "started": 1.0, "deadline": None, "output_size": 0,
            "result": None})
        self.output.setdefault(key, b"")
        done(dict(info))

    def fetch(self, job, attempt, offset, max_bytes, done):
        self.fetches.append((job, attempt, offset))
        data = self.output.get((job, attempt), b"")
        done(data[offset:offset + max_bytes])

    def control(self, job, attempt, action, signum, done):
        self.controls.append((job, attempt, action, signum))
        if self.refuse_control is not None:
            done(self.refuse_control)
            return
        done((True, "%s sent" % action))

    def lookup(self, job, attempt, done):
        if self.lookup_error is not None:
            done(self.lookup_error)
            return
        info = self.known.get((job, attempt))
        done(dict(info) if info is not None else None)

    def attempts(self, done):
        done([dict(i) for i in self.known.values()])

    def forget(self, job, attempt):
        self.forgotten.append((job, attempt))
        self.known.pop((job, attempt), None)

    def release(self, job, attempt, start, end):
        self.released.append((job, attempt, start, end))

    # Test controls

    def heard(self, host):
        """The node answered a heartbeat now."""
        self.last_heard = host.seconds()

    def write(self, job, attempt, data):
        """The command of (job, attempt) writes data."""
        key = (job, attempt)
        self.output[key] = self.output.get(key, b"") + data
        self.known[key]["output_size"] = len(self.output[key])
        self._listener.link_event(self.name, ("output", job, attempt, len(self.output[key])))

    def answers_again(self):
        """The node answered again (its node_info, after an outage)."""
        self._listener.link_event(self.name, ("node", {}))

    def run_unannounced(self, job, attempt):
        """The node runs (job, attempt) although its launch's answer never came back: it
        holds it, and says so as after a restart (a "started" event)."""
        info = {"job": job, "attempt": attempt, "pid": 4242, "pgid": None, "cgroup": None,
                "started": 1.0, "deadline": None, "output_size": 0, "result": None}
        self.known[(job, attempt)] = info
        self.output.setdefault((job, attempt), b"")
        self._listener.link_event(self.name, ("started", dict(info)))

    def end(self, job, attempt, exit_status=0, signal=None, timed_out=False, error=None,
            **usage):
        """The command of (job, attempt) ends; usage: max_rss, cpu_time, memory_exceeded."""
        key = (job, attempt)
        result = {"exit_status": exit_status, "signal": signal, "timed_out": timed_out,
                  "error": error, "ended": 2.0, "output_size": len(self.output.get(key, b"")),
                  **usage}
        if key in self.known:
            self.known[key]["result"] = result
        self._listener.link_event(self.name, ("ended", job, attempt, result))


def unreachable(name):
    """The error a link answers when its node cannot be reached."""
    return errors.RemoteError("node %s unreachable" % name)
