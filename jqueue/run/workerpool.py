"""A priority thread pool that runs ``task_fn(*args)`` in worker threads and knows nothing of jobs.

Tasks wait in a heap ordered by (priority, insertion order): a lower priority value runs
first and equal priorities run first in, first out. A task may carry a ``task_id``; at most
one *waiting* task may have a given id, so that callers can find it again to change its
priority. Changing a priority marks the old heap entry dead and pushes a new one (lazy
deletion); dead entries are skipped when popped and purged once they outnumber live ones.

One condition variable guards all state. Idle workers, ``wait_idle`` and ``terminate`` block
on it; nothing polls.
"""

import heapq
import itertools
import logging
import threading
import time

from jqueue import errors, threadname

logger = logging.getLogger(__name__)

# A heap entry is [priority, seq, task_id, args]; seq is unique, so entries never compare
# beyond it. A dead entry has _DEAD in its args field.
_PRIO, _SEQ, _ID, _ARGS = range(4)
_DEAD = object()

# Purge dead entries when there are more than this many and more dead than live entries.
_MIN_PURGE = 64


def _check_size(num_workers):
    """Raise ProgrammerError unless num_workers is a non-negative int."""
    if not isinstance(num_workers, int) or num_workers < 0:
        raise errors.ProgrammerError(f"invalid number of workers: {num_workers!r}")


def _check_priority(priority):
    """Raise ProgrammerError unless priority is a number (heap entries must compare)."""
    if not isinstance(priority, (int, float)):
        raise errors.ProgrammerError(f"invalid task priority: {priority!r}")


class WorkerPool:
    """A resizable pool of threads that run prioritized tasks with task_fn."""

    def __init__(self, name, num_workers, task_fn):
        """Start num_workers daemon threads named "<name>-<i>" that call task_fn(*args)."""
        _check_size(num_workers)
        self._name = name
        self._task_fn = task_fn
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self._waiting = {}  # task_id -> its live heap entry
        self._dead = 0  # dead entries still in the heap
        self._seq = itertools.count()
        self._thread_seq = itertools.count()
        self._target = num_workers
        self._workers = set()  # threads in service (not retired)
        self._threads = []  # threads started and not known to have exited
        self._terminators = set()  # workers currently inside terminate()
        self._running = 0
        self._paused = False
        self._terminated = False
        with self._cond:
            self._grow_locked()

    @property
    def num_workers(self):
        """The number of workers the pool aims for (the last size given; 0 once terminated)."""
        with self._cond:
            return self._target

    def stats(self):
        """Return workers in service, waiting and running tasks, and whether paused."""
        with self._cond:
            return {"workers": len(self._workers), "waiting": self._num_waiting(),
                    "running": self._running, "paused": self._paused}

    def add_task(self, args, priority=0, task_id=None):
        """Queue task_fn(*args) at priority; task_id must not name another waiting task."""
        self.add_many_tasks([(args, priority, task_id)])

    def add_many_tasks(self, tasks):
        """Queue a list of (args, priority, task_id) atomically: all of them or none."""
        tasks = list(tasks)
        with self._cond:
            self._check_new_tasks_locked(tasks)
            for args, priority, task_id in tasks:
                self._push_locked(args, priority, task_id)
            if tasks:
                self._cond.notify_all()

    def change_task_priority(self, task_id, priority):
        """Move a waiting task to priority, behind its new equals; False if none waits."""
        _check_priority(priority)
        with self._cond:
            entry = self._waiting.get(task_id)
            if entry is None:
                return False
            args = entry[_ARGS]
            self._kill_locked(entry)
            self._push_locked(args, priority, task_id)
            return True

    def has_waiting_task(self, task_id):
        """Tell whether a task with this id waits (queued and not started)."""
        with self._cond:
            return task_id in self._waiting

    def pause(self):
        """Let running tasks finish but start no new task until resume()."""
        with self._cond:
            self._paused = True

    def resume(self):
        """Start taking tasks again after pause()."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def resize(self, num_workers):
        """Grow by starting threads; shrink by retiring surplus workers after their task."""
        _check_size(num_workers)
        with self._cond:
            if self._terminated:
                raise errors.ProgrammerError(f"worker pool {self._name} is terminated")
            self._target = num_workers
            self._threads = [t for t in self._threads if t.is_alive()]
            self._grow_locked()
            self._cond.notify_all()
        logger.debug("Worker pool %s resized to %d workers", self._name, num_workers)

    def wait_idle(self, timeout=None):
        """Block until no task waits and none runs (True), or until timeout (False)."""
        with self._cond:
            if threading.current_thread() in self._workers:
                raise errors.ProgrammerError(f"wait_idle called by a worker of {self._name}")
            return self._cond.wait_for(self._is_idle_locked, timeout)

    def terminate(self, timeout=None):
        """Drop waiting tasks, wait for running ones and join the workers; True if all exited.

        Called from a worker thread (inside a task), the calling worker and any other worker
        inside terminate() are neither waited for nor joined: they exit when their task returns.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()
        with self._cond:
            self._stop_locked()
            skip = self._wait_workers_locked(me, timeout)
            threads = [t for t in self._threads if t not in skip]
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def _wait_workers_locked(self, me, timeout):
        """Wait for every worker to retire but those inside terminate(); return the latter."""
        if me not in self._workers:
            self._cond.wait_for(lambda: not self._workers, timeout)
            return set()
        self._terminators.add(me)
        self._cond.notify_all()
        try:
            self._cond.wait_for(lambda: self._workers <= self._terminators, timeout)
            return set(self._terminators)
        finally:
            self._terminators.discard(me)

    def _stop_locked(self):
        """Refuse new tasks, drop waiting ones and tell all workers to retire."""
        if self._terminated:
            return
        dropped = self._num_waiting()
        self._terminated = True
        self._target = 0
        self._heap.clear()
        self._waiting.clear()
        self._dead = 0
        self._cond.notify_all()
        logger.debug("Worker pool %s terminating, %d waiting tasks dropped", self._name, dropped)

    def _check_new_tasks_locked(self, tasks):
        """Raise ProgrammerError if any of these (args, priority, task_id) may not be added."""
        if self._terminated:
            raise errors.ProgrammerError(f"worker pool {self._name} is terminated")
        seen = set()
        for task in tasks:
            if not isinstance(task, (tuple, list)) or len(task) != 3:
                raise errors.ProgrammerError(f"not an (args, priority, task_id): {task!r}")
            args, priority, task_id = task
            if not isinstance(args, tuple):
                raise errors.ProgrammerError(f"task arguments must be a tuple: {args!r}")
            _check_priority(priority)
            if task_id is not None and (task_id in self._waiting or task_id in seen):
                raise errors.ProgrammerError(f"task {task_id!r} already waits in {self._name}")
            seen.add(task_id)

    def _push_locked(self, args, priority, task_id):
        """Put a task on the heap and register its id."""
        entry = [priority, next(self._seq), task_id, args]
        heapq.heappush(self._heap, entry)
        if task_id is not None:
            self._waiting[task_id] = entry

    def _kill_locked(self, entry):
        """Mark a heap entry dead; purge dead entries if they are the majority."""
        entry[_ARGS] = _DEAD
        self._dead += 1
        if self._dead > _MIN_PURGE and 2 * self._dead > len(self._heap):
            self._heap = [e for e in self._heap if e[_ARGS] is not _DEAD]
            heapq.heapify(self._heap)
            self._dead = 0

    def _pop_locked(self):
        """Take the first live task off the heap, count it running; return (task_id, args)."""
        entry = heapq.heappop(self._heap)
        while entry[_ARGS] is _DEAD:
            self._dead -= 1
            entry = heapq.heappop(self._heap)
        if entry[_ID] is not None:
            del self._waiting[entry[_ID]]
        self._running += 1
        return entry[_ID], entry[_ARGS]

    def _num_waiting(self):
        """Return the number of live waiting tasks."""
        return len(self._heap) - self._dead

    def _is_idle_locked(self):
        """Tell whether no task waits and none runs."""
        return self._running == 0 and self._num_waiting() == 0

    def _grow_locked(self):
        """Start worker threads until as many serve as the pool aims for."""
        while len(self._workers) < self._target:
            name = f"{self._name}-{next(self._thread_seq)}"
            thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._workers.add(thread)
            self._threads.append(thread)
            thread.start()

    def _work(self):
        """Body of a worker thread: run tasks until told to retire."""
        threadname.name_os_thread(threading.current_thread().name)
        task = self._next_task(finished=False)
        while task is not None:
            try:
                self._run_task(*task)
            except BaseException:
                self._abandon()
                raise
            task = self._next_task(finished=True)

    def _run_task(self, task_id, args):
        """Call task_fn(*args), logging any exception it raises."""
        try:
            self._task_fn(*args)
        except Exception:
            logger.exception("Worker pool %s: task %r failed", self._name, task_id)

    def _next_task(self, finished):
        """Account for a finished task, then wait for a task to run; None means retire."""
        me = threading.current_thread()
        with self._cond:
            if finished:
                self._running -= 1
                if self._is_idle_locked():
                    self._cond.notify_all()
            while not self._terminated and len(self._workers) <= self._target:
                if not self._paused and self._num_waiting():
                    return self._pop_locked()
                self._cond.wait()
            self._workers.discard(me)
            self._cond.notify_all()
            return None

    def _abandon(self):
        """Account for a worker killed by a BaseException from its task and replace it."""
        logger.error("Worker pool %s: worker %s killed by its task",
                     self._name, threading.current_thread().name)
        with self._cond:
            self._running -= 1
            self._workers.discard(threading.current_thread())
            self._grow_locked()
            self._cond.notify_all()
