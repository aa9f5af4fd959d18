"""Test doubles for jqueue components."""

import heapq
import itertools
import logging

from jqueue import errors

logger = logging.getLogger(__name__)

_DEAD = object()


class SyncPool:
    """A synchronous stand-in for WorkerPool for unit tests."""

    def __init__(self, name, num_workers, task_fn):
        """Keep task_fn; tasks run only when the test calls run_next() or run_all()."""
        self._check_size(num_workers)
        self.name = name
        self._num_workers = num_workers
        self._task_fn = task_fn
        self._heap = []  # entries [priority, seq, task_id, args], as in WorkerPool
        self._waiting = {}
        self._dead = 0
        self._seq = itertools.count()
        self._running = 0
        self._paused = False
        self._terminated = False
        self.errors = []  # exceptions raised by tasks (logged and swallowed, like WorkerPool)

    @staticmethod
    def _check_size(num_workers):
        if not isinstance(num_workers, int) or num_workers < 0:
            raise errors.ProgrammerError(f"invalid number of workers: {num_workers!r}")

    @property
    def num_workers(self):
        """The size last given (0 once terminated); no thread exists."""
        return self._num_workers

    def stats(self):
        """Return the same keys as WorkerPool.stats()."""
        return {"workers": self._num_workers, "waiting": len(self._heap) - self._dead,
                "running": self._running, "paused": self._paused}

    def add_task(self, args, priority=0, task_id=None):
        """Queue task_fn(*args) at priority; task_id must not name another waiting task."""
        self.add_many_tasks([(args, priority, task_id)])

    def add_many_tasks(self, tasks):
        """Queue a list of (args, priority, task_id) atomically: all of them or none."""
        tasks = list(tasks)
        if self._terminated:
            raise errors.ProgrammerError(f"worker pool {self.name} is terminated")
        seen = set()
        for args, priority, task_id in tasks:
            if not isinstance(args, tuple) or not isinstance(priority, (int, float)):
                raise errors.ProgrammerError(f"bad task: {(args, priority, task_id)!r}")
            if task_id is not None and (task_id in self._waiting or task_id in seen):
                raise errors.ProgrammerError(f"task {task_id!r} already waits in {self.name}")
            seen.add(task_id)
        for args, priority, task_id in tasks:
            self._push(args, priority, task_id)

    def change_task_priority(self, task_id, priority):
        """Move a waiting task to priority, behind its new equals; False if none waits."""
        if not isinstance(priority, (int, float)):
            raise errors.ProgrammerError(f"invalid task priority: {priority!r}")
        entry = self._waiting.get(task_id)
        if entry is None:
            return False
        args, entry[3] = entry[3], _DEAD
        self._dead += 1
        self._push(args, priority, task_id)
        return True

    def has_waiting_task(self, task_id):
        """Tell whether a task with this id waits."""
        return task_id in self._waiting

    def pause(self):
        """Make run_next() run nothing until resume()."""
        self._paused = True

    def resume(self):
        """Let run_next() run tasks again."""
        self._paused = False

    def resize(self, num_workers):
        """Record the new size (it changes nothing else)."""
        self._check_size(num_workers)
        if self._terminated:
            raise errors.ProgrammerError(f"worker pool {self.name} is terminated")
        self._num_workers = num_workers

    def wait_idle(self, timeout=None):
        """Return at once whether no task waits and none runs; never runs or blocks."""
        if self._running:
            raise errors.ProgrammerError(f"wait_idle called by a task of {self.name}")
        return len(self._heap) == self._dead

    def terminate(self, timeout=None):
        """Drop waiting tasks and refuse new ones; return True."""
        self._terminated = True
        self._num_workers = 0
        self._heap.clear()
        self._waiting.clear()
        self._dead = 0
        return True

    def run_next(self):
        """Run the first waiting task in the calling thread; False if none (or paused)."""
        if self._paused or len(self._heap) == self._dead:
            return False
        entry = heapq.heappop(self._heap)
        while entry[3] is _DEAD:
            self._dead -= 1
            entry = heapq.heappop(self._heap)
        self._waiting.pop(entry[2], None)
        self._running += 1
        try:
            self._task_fn(*entry[3])
        except Exception as err:
            logger.exception("SyncPool %s: task %r failed", self.name, entry[2])
            self.errors.append(err)
        finally:
            self._running -= 1
        return True

    def run_all(self, limit=100000):
        """Run tasks until none waits (or limit tasks ran); return how many ran."""
        count = 0
        while count < limit and self.run_next():
            count += 1
        return count

    def _push(self, args, priority, task_id):
        entry = [priority, next(self._seq), task_id, args]
        heapq.heappush(self._heap, entry)
        if task_id is not None:
            self._waiting[task_id] = entry
