"""Start times: jobs that may not start before a given time, woken by one timer.

A job submitted with ``not_before`` stays queued until then. The queue asks whether a job
may start before it hands it to the workers; one that is early is added here, and when
its time comes ``on_due(job_ids)`` is called and the queue schedules it again. Scheduled
jobs cost a heap entry each and share one waiting thread (started with the first entry),
never a thread or a timer per job.

Time is the queue's clock (epoch seconds, injectable): the thread sleeps until the
earliest start time by that clock and looks again whenever an earlier one is added or
``poke`` is called; tests move a fake clock and call ``fire_due`` themselves.
"""

import heapq
import logging
import threading

logger = logging.getLogger(__name__)

#: Longest sleep of the waiting thread between two looks at the clock (seconds).
MAX_SLEEP = 60.0


class StartSchedule:
    """Jobs waiting for their start time; thread-safe."""

    def __init__(self, clock, on_due, thread=True):
        self._clock = clock
        self._on_due = on_due
        self._cond = threading.Condition(threading.Lock())
        self._firing = threading.Lock()
        self._heap = []        # (not_before, job id)
        self._times = {}       # job id -> not_before (the heap may hold stale entries)
        self._use_thread = thread
        self._thread = None
        self._stopped = False

    def __len__(self):
        return len(self._times)

    def add(self, job_id, not_before):
        """Wake job_id at not_before (a later add of the same job replaces the time)."""
        with self._cond:
            if self._stopped or self._times.get(job_id) == not_before:
                return
            earliest = self._heap[0][0] if self._heap else None
            self._times[job_id] = not_before
            heapq.heappush(self._heap, (not_before, job_id))
            if self._use_thread and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jq-start-times",
                                                daemon=True)
                self._thread.start()
            elif earliest is None or not_before < earliest:
                self._cond.notify()

    def discard(self, job_id):
        """Forget job_id's start time (its heap entry is dropped when it comes up)."""
        with self._cond:
            self._times.pop(job_id, None)

    def next_time(self):
        """The earliest start time waited for, or None."""
        with self._cond:
            self._drop_stale_unlocked()
            return self._heap[0][0] if self._heap else None

    def take_due(self, now):
        """Remove and return the ids whose start time is at or before now."""
        due = []
        with self._cond:
            while self._heap and self._heap[0][0] <= now:
                when, job_id = heapq.heappop(self._heap)
                if self._times.get(job_id) == when:
                    del self._times[job_id]
                    due.append(job_id)
        return due

    def fire_due(self):
        """Call on_due with the jobs whose time has come (by the clock); how many.

        Firings do not overlap: when this returns, every job due before it was called has
        been handed to on_due (by this call or the waiting thread's).
        """
        with self._firing:
            due = self.take_due(self._clock())
            if due:
                try:
                    self._on_due(due)
                except Exception:  # noqa: BLE001 - the timer must go on for the other jobs
                    logger.exception("starting scheduled jobs %s failed", due[:10])
            return len(due)

    def poke(self):
        """Make the waiting thread look at the clock again (e.g. a fake one moved)."""
        with self._cond:
            self._cond.notify()

    def stop(self):
        """Stop the waiting thread (the queue is closing); no more wake-ups."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _drop_stale_unlocked(self):
        while self._heap and self._times.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)

    def _run(self):
        while True:
            with self._cond:
                if self._stopped:
                    return
                self._drop_stale_unlocked()
                wait = MAX_SLEEP
                if self._heap:
                    wait = min(MAX_SLEEP, max(0.0, self._heap[0][0] - self._clock()))
                if wait > 0:
                    self._cond.wait(wait)
                    continue
            self.fire_due()
