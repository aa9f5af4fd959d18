"""Tests of jqueue.run.workerpool.WorkerPool (and of its synchronous fake, tests.fakes.SyncPool)."""

import collections
import inspect
import itertools
import random
import threading

import pytest
from fakes import SyncPool

from jqueue import errors
from jqueue.run.workerpool import WorkerPool

CAP = 5  # seconds: safety cap for waits that are expected to succeed at once

_pool_names = itertools.count()


@pytest.fixture
def make_pool():
    """Return a factory of WorkerPools with unique names; terminate them all afterwards."""
    pools = []

    def make(num_workers, task_fn=lambda fn: fn(), name=None):
        pool = WorkerPool(name or _unique_name(), num_workers, task_fn)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate(timeout=CAP)


def _unique_name():
    """Return a pool name no other test uses, so its threads can be told apart."""
    return f"wp{next(_pool_names)}"


def _threads_named(prefix):
    """Return the live threads whose name starts with prefix + "-"."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix + "-")]


class Blocker:
    """A task (args: (blocker,)) that signals when it starts and runs until released."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def __call__(self):
        self.started.set()
        if self.release.wait(CAP):
            self.finished.set()


# --- ordering ------------------------------------------------------------------------------


def test_lower_priority_value_first_and_fifo_within_priority(make_pool):
    """With one worker, tasks run by ascending priority value, in insertion order among equals."""
    order = []
    pool = make_pool(1, order.append)
    pool.pause()
    for name, prio in [("a", 5), ("b", 1), ("c", 5), ("d", -3), ("e", 1), ("f", 0)]:
        pool.add_task((name,), priority=prio)
    pool.add_task(("g",))
    pool.resume()
    assert pool.wait_idle(CAP)
    assert order == ["d", "f", "g", "b", "e", "a", "c"]


def test_add_many_tasks_orders_like_add_task(make_pool):
    """Tasks added in one batch are ordered by priority, then batch order."""
    order = []
    pool = make_pool(1, order.append)
    pool.pause()
    pool.add_task(("first",), 1)
    pool.add_many_tasks([(("x",), 2, None), (("y",), 1, "y"), (("z",), 0, "z")])
    pool.resume()
    assert pool.wait_idle(CAP)
    assert order == ["z", "first", "y", "x"]


def test_change_task_priority_moves_waiting_task_ahead(make_pool):
    """change_task_priority makes a waiting task run before tasks it used to follow."""
    order = []
    pool = make_pool(1, order.append)
    pool.pause()
    for name, prio in [("a", 0), ("b", 0), ("c", 5)]:
        pool.add_task((name,), prio, task_id=name)
    assert pool.change_task_priority("c", -1) is True
    assert pool.has_waiting_task("c")
    assert pool.stats()["waiting"] == 3
    pool.resume()
    assert pool.wait_idle(CAP)
    assert order == ["c", "a", "b"]


def test_changed_task_goes_behind_its_new_equals(make_pool):
    """A task given a new priority runs after the tasks already waiting at that priority."""
    order = []
    pool = make_pool(1, order.append)
    pool.pause()
    pool.add_task(("a",), 0, task_id="a")
    pool.add_task(("b",), 0)
    pool.add_task(("c",), 1)
    pool.add_task(("d",), 2, task_id="d")
    assert pool.change_task_priority("a", 0)
    assert pool.change_task_priority("d", 1)
    pool.resume()
    assert pool.wait_idle(CAP)
    assert order == ["b", "a", "c", "d"]


def test_change_task_priority_false_for_unknown_or_running_id(make_pool):
    """change_task_priority returns False for an id that is unknown or whose task runs."""
    pool = make_pool(1)
    blocker = Blocker()
    pool.add_task((blocker,), task_id="r")
    assert blocker.started.wait(CAP)
    assert pool.change_task_priority("r", 3) is False
    assert pool.change_task_priority("nope", 3) is False
    assert pool.change_task_priority(None, 3) is False
    assert not pool.has_waiting_task("r")
    blocker.release.set()
    assert pool.wait_idle(CAP)


def test_many_priority_changes_keep_order(make_pool):
    """Repeated priority changes (which purge dead heap entries) keep every task, in order."""
    order = []
    pool = make_pool(1, order.append)
    pool.pause()
    for i in range(100):
        pool.add_task((i,), 0, task_id=i)
    for _ in range(5):
        for i in range(100):
            assert pool.change_task_priority(i, 100 - i)
    assert pool.stats()["waiting"] == 100
    pool.resume()
    assert pool.wait_idle(CAP)
    assert order == list(range(99, -1, -1))


# --- task ids --------------------------------------------------------------------------------


def test_duplicate_waiting_task_id_raises(make_pool):
    """Adding a second waiting task with an id raises ProgrammerError and adds nothing."""
    pool = make_pool(1)
    pool.pause()
    pool.add_task((print,), task_id="t")
    with pytest.raises(errors.ProgrammerError):
        pool.add_task((print,), task_id="t")
    with pytest.raises(errors.ProgrammerError):
        pool.add_many_tasks([((print,), 0, "u"), ((print,), 0, "t")])
    with pytest.raises(errors.ProgrammerError):
        pool.add_many_tasks([((print,), 0, "v"), ((print,), 0, "v")])
    assert not pool.has_waiting_task("u") and not pool.has_waiting_task("v")
    assert pool.stats()["waiting"] == 1


def test_bad_task_arguments_raise(make_pool):
    """Non-tuple args, a non-numeric priority or a malformed batch entry raise ProgrammerError."""
    pool = make_pool(1)
    pool.pause()
    with pytest.raises(errors.ProgrammerError):
        pool.add_task([print])
    with pytest.raises(errors.ProgrammerError):
        pool.add_task((print,), priority=None)
    with pytest.raises(errors.ProgrammerError):
        pool.add_many_tasks([((print,), 0)])
    with pytest.raises(errors.ProgrammerError):
        pool.change_task_priority("x", "high")
    assert pool.stats()["waiting"] == 0


def test_readding_id_of_running_task_works(make_pool):
    """While a task runs, a new task with its id may be added and waits."""
    ran = []
    pool = make_pool(1, lambda fn, tag: (fn(), ran.append(tag)))
    blocker = Blocker()
    pool.add_task((blocker, "first"), task_id="t")
    assert blocker.started.wait(CAP)
    pool.add_task((print, "second"), task_id="t")
    assert pool.has_waiting_task("t")
    blocker.release.set()
    assert pool.wait_idle(CAP)
    assert ran == ["first", "second"]


def test_task_can_readd_its_own_id_from_inside(make_pool):
    """A task may add a task with its own id from inside task_fn (in the worker thread)."""
    ran = []

    def task(n):
        ran.append(n)
        if n < 3:
            pool.add_task((n + 1,), task_id="same")

    pool = make_pool(1, task)
    pool.add_task((0,), task_id="same")
    assert pool.wait_idle(CAP)
    assert ran == [0, 1, 2, 3]


# --- pause, resize ---------------------------------------------------------------------------


def test_pause_lets_running_task_finish_and_starts_no_new_one(make_pool):
    """After pause, the running task completes but a waiting task starts only after resume."""
    pool = make_pool(1)
    first, second = Blocker(), Blocker()
    second.release.set()
    pool.add_task((first,))
    assert first.started.wait(CAP)
    pool.pause()
    pool.add_task((second,))
    first.release.set()
    assert first.finished.wait(CAP)
    assert not second.started.wait(0.3)  # short negative check: it must not start
    assert pool.stats()["waiting"] == 1 and pool.stats()["paused"]
    pool.resume()
    assert second.finished.wait(CAP)
    assert pool.wait_idle(CAP)
    assert pool.stats()["paused"] is False


def test_resize_up_adds_concurrency(make_pool):
    """Three tasks meeting at a three-party barrier all pass only after growing to 3 workers."""
    barrier = threading.Barrier(3, timeout=CAP)
    passed = []
    pool = make_pool(1, lambda: passed.append(barrier.wait()))
    pool.pause()
    for _ in range(3):
        pool.add_task(())
    pool.resize(3)
    pool.resume()
    assert pool.wait_idle(CAP * 2)
    assert sorted(passed) == [0, 1, 2]
    assert pool.num_workers == 3
    assert pool.stats()["workers"] == 3


def test_resize_down_retires_workers_after_their_task(make_pool):
    """Shrinking does not interrupt running tasks; surplus workers leave once they finish."""
    pool = make_pool(3)
    blockers = [Blocker() for _ in range(3)]
    for blocker in blockers:
        pool.add_task((blocker,))
    assert all(b.started.wait(CAP) for b in blockers)
    pool.resize(1)
    assert pool.num_workers == 1
    assert pool.stats() == {"workers": 3, "waiting": 0, "running": 3, "paused": False}
    for blocker in blockers:
        blocker.release.set()
    assert pool.wait_idle(CAP)
    assert all(b.finished.is_set() for b in blockers)
    assert pool.stats() == {"workers": 1, "waiting": 0, "running": 0, "paused": False}


def test_regrow_while_surplus_workers_busy_starts_no_thread(make_pool):
    """Growing back before surplus workers retired keeps them instead of starting new threads."""
    name = _unique_name()
    pool = make_pool(2, name=name)
    blockers = [Blocker() for _ in range(2)]
    for blocker in blockers:
        pool.add_task((blocker,))
    assert all(b.started.wait(CAP) for b in blockers)
    pool.resize(1)
    pool.resize(2)
    for blocker in blockers:
        blocker.release.set()
    assert pool.wait_idle(CAP)
    assert pool.stats()["workers"] == 2
    assert len(_threads_named(name)) == 2


def test_resize_rejects_negative_size(make_pool):
    """resize(-1) raises ProgrammerError and keeps the size."""
    pool = make_pool(2)
    with pytest.raises(errors.ProgrammerError):
        pool.resize(-1)
    assert pool.num_workers == 2


def test_threads_are_named_after_pool(make_pool):
    """Worker threads are daemon threads named "<name>-<i>"."""
    name = _unique_name()
    make_pool(2, name=name)
    threads = _threads_named(name)
    assert sorted(t.name for t in threads) == [f"{name}-0", f"{name}-1"]
    assert all(t.daemon for t in threads)


# --- failures, wait_idle ---------------------------------------------------------------------


def test_exception_in_task_does_not_kill_worker(make_pool, caplog):
    """A task that raises is logged with its traceback and the worker runs the next task."""
    ran = []

    def task(tag):
        if tag == "boom":
            raise RuntimeError("boom")
        ran.append(tag)

    pool = make_pool(1, task)
    pool.add_task(("boom",), task_id="bad")
    pool.add_task(("after",))
    assert pool.wait_idle(CAP)
    assert ran == ["after"]
    assert pool.stats()["workers"] == 1
    failures = [r for r in caplog.records if r.name == "jqueue.run.workerpool" and r.exc_info]
    assert len(failures) == 1 and "'bad'" in failures[0].getMessage()


def test_wait_idle_true_when_done_false_on_timeout(make_pool):
    """wait_idle times out (False) while a task runs and returns True once it is done."""
    pool = make_pool(1)
    assert pool.wait_idle(0) is True
    blocker = Blocker()
    pool.add_task((blocker,))
    assert blocker.started.wait(CAP)
    assert pool.wait_idle(timeout=0.05) is False
    blocker.release.set()
    assert pool.wait_idle(CAP) is True


def test_wait_idle_counts_waiting_tasks_while_paused(make_pool):
    """A task waiting in a paused pool keeps wait_idle from returning True."""
    pool = make_pool(1)
    pool.pause()
    pool.add_task((print,))
    assert pool.wait_idle(timeout=0.05) is False


def test_wait_idle_from_worker_raises(make_pool):
    """Calling wait_idle inside a task (it would wait for itself) raises ProgrammerError."""
    caught = []
    pool = make_pool(1)

    def task():
        try:
            pool.wait_idle()
        except errors.ProgrammerError as err:
            caught.append(err)

    pool.add_task((task,))
    assert pool.wait_idle(CAP)
    assert len(caught) == 1


# --- terminate -------------------------------------------------------------------------------


def test_terminate_waits_for_running_and_drops_waiting(make_pool):
    """terminate waits for the running task, drops waiting ones, joins threads, is idempotent."""
    name = _unique_name()
    pool = make_pool(1, name=name)
    running, dropped = Blocker(), Blocker()
    dropped.release.set()
    pool.add_task((running,))
    assert running.started.wait(CAP)
    pool.add_task((dropped,), task_id="w")
    assert pool.terminate(timeout=0.1) is False  # the task still runs
    assert not pool.has_waiting_task("w") and pool.stats()["waiting"] == 0
    running.release.set()
    assert pool.terminate(timeout=CAP) is True
    assert running.finished.is_set()
    assert not dropped.started.is_set()
    assert _threads_named(name) == []
    assert pool.terminate() is True
    assert pool.num_workers == 0
    assert pool.stats() == {"workers": 0, "waiting": 0, "running": 0, "paused": False}


def test_terminated_pool_refuses_tasks(make_pool):
    """add_task, add_many_tasks and resize raise ProgrammerError after terminate."""
    pool = make_pool(1)
    assert pool.terminate(CAP)
    with pytest.raises(errors.ProgrammerError):
        pool.add_task((print,))
    with pytest.raises(errors.ProgrammerError):
        pool.add_many_tasks([((print,), 0, None)])
    with pytest.raises(errors.ProgrammerError):
        pool.resize(2)
    assert pool.change_task_priority("x", 1) is False


def test_terminate_from_inside_task_does_not_deadlock(make_pool):
    """A task calling terminate gets True once the other (idle) worker exits; the pool stops."""
    results, done = [], threading.Event()
    name = _unique_name()
    pool = make_pool(2, name=name)

    def task():
        results.append(pool.terminate())
        done.set()

    pool.add_task((task,))
    assert done.wait(CAP)
    assert pool.terminate(CAP) is True
    assert results == [True]
    assert _threads_named(name) == []


def test_two_tasks_terminating_at_once_do_not_deadlock(make_pool):
    """Two tasks calling terminate() concurrently (without timeout) both return."""
    barrier = threading.Barrier(2, timeout=CAP)
    results = []
    both = threading.Semaphore(0)
    pool = make_pool(2)

    def task():
        barrier.wait()
        results.append(pool.terminate())
        both.release()

    pool.add_task((task,))
    pool.add_task((task,))
    assert both.acquire(timeout=CAP) and both.acquire(timeout=CAP)
    assert results == [True, True]
    assert pool.terminate(CAP) is True


# --- stress ----------------------------------------------------------------------------------


def test_stress_each_task_runs_exactly_once(make_pool):
    """20,000 tasks added from 4 threads with random priorities (some changed) each run once."""
    executed = []
    pool = make_pool(4, executed.append)
    per_thread = 5000

    def producer(k):
        rng = random.Random(k)
        batch = []
        for i in range(per_thread):
            key, prio = (k, i), rng.randint(-20, 19)
            if i % 3 == 0:
                pool.add_task((key,), prio, task_id=key)
            elif i % 3 == 1:
                batch.append(((key,), prio, key))
                if len(batch) == 50:
                    pool.add_many_tasks(batch)
                    batch = []
            else:
                pool.add_task((key,), prio)
            if i % 7 == 0:
                pool.change_task_priority((k, i - 3), rng.randint(-20, 19))
        pool.add_many_tasks(batch)

    producers = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join(60)
    assert not any(t.is_alive() for t in producers)
    assert pool.wait_idle(60)
    counts = collections.Counter(executed)
    assert len(counts) == 4 * per_thread
    assert set(counts.values()) == {1}


# --- the synchronous fake --------------------------------------------------------------------


def _public_methods(cls):
    """Return the names of cls's public methods, __init__ included."""
    return sorted(name for name, value in vars(cls).items()
                  if callable(value) and (not name.startswith("_") or name == "__init__"))


def test_syncpool_signatures_match_workerpool():
    """SyncPool has every public method of WorkerPool, with the same signature."""
    names = _public_methods(WorkerPool)
    assert "add_task" in names and "__init__" in names
    for name in names:
        expected = inspect.signature(getattr(WorkerPool, name))
        assert inspect.signature(getattr(SyncPool, name)) == expected, name
    assert isinstance(inspect.getattr_static(SyncPool, "num_workers"), property)
    assert isinstance(inspect.getattr_static(WorkerPool, "num_workers"), property)


def test_syncpool_runs_in_priority_order_only_when_asked():
    """SyncPool runs nothing by itself, then tasks in WorkerPool's order via run_next/run_all."""
    order = []
    pool = SyncPool("sync", 2, order.append)
    for name, prio in [("a", 5), ("b", 1), ("c", 5), ("d", -3)]:
        pool.add_task((name,), prio, task_id=name)
    assert pool.change_task_priority("c", 1)
    assert order == [] and pool.wait_idle() is False
    assert pool.run_next() is True and order == ["d"]
    pool.pause()
    assert pool.run_next() is False
    pool.resume()
    assert pool.run_all() == 3
    assert order == ["d", "b", "c", "a"]
    assert pool.run_next() is False and pool.wait_idle() is True


def test_syncpool_mirrors_misuse_errors():
    """SyncPool raises ProgrammerError where WorkerPool does and swallows task errors."""
    pool = SyncPool("sync", 1, lambda: 1 / 0)
    pool.add_task((), task_id="t")
    with pytest.raises(errors.ProgrammerError):
        pool.add_task((), task_id="t")
    assert pool.run_all() == 1
    assert len(pool.errors) == 1 and isinstance(pool.errors[0], ZeroDivisionError)
    assert pool.terminate() is True
    with pytest.raises(errors.ProgrammerError):
        pool.add_task(())
    assert pool.stats() == {"workers": 0, "waiting": 0, "running": 0, "paused": False}


def test_workers_carry_their_names_in_the_kernel(make_pool):
    """top -H, ps -L and bench/ tell the workers apart from the daemon's other threads."""
    name = _unique_name()
    pool = make_pool(2, name=name)
    seen = []

    def kernel_name():
        with open("/proc/self/task/%d/comm" % threading.get_native_id()) as f:
            seen.append(f.read().strip())
    pool.add_task((kernel_name,))
    pool.add_task((kernel_name,))
    assert pool.wait_idle(CAP)
    assert len(seen) == 2 and set(seen) <= {name + "-0", name + "-1"}
