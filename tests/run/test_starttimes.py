"""Tests of jqueue.run.starttimes: start times in a heap, one waiting thread for all."""

import threading
import time

from conftest import FakeClock

from jqueue.run.starttimes import StartSchedule


def test_jobs_come_due_in_time_order_and_a_new_time_replaces_the_old():
    """take_due returns the jobs whose time came, earliest first; re-adding moves a job."""
    clock = FakeClock(1000.0)
    fired = []
    schedule = StartSchedule(clock, fired.extend, thread=False)
    schedule.add(1, 1030)
    schedule.add(2, 1010)
    schedule.add(3, 1020)
    schedule.add(3, 1050)  # moved later
    schedule.discard(2)
    assert len(schedule) == 2 and schedule.next_time() == 1030
    clock.advance(40)
    assert schedule.fire_due() == 1 and fired == [1]
    clock.advance(10)
    assert schedule.take_due(clock()) == [3]
    assert schedule.fire_due() == 0 and len(schedule) == 0 and schedule.next_time() is None


def test_the_waiting_thread_wakes_jobs_by_itself():
    """With the real clock, one thread sleeps until the earliest time and hands the jobs
    on; a thousand jobs still make one thread."""
    done = threading.Event()
    fired = []

    def on_due(job_ids):
        fired.extend(job_ids)
        if len(fired) == 1001:
            done.set()

    before = threading.active_count()
    schedule = StartSchedule(time.time, on_due)
    try:
        schedule.add(0, time.time() + 3600)
        for job_id in range(1, 1001):
            schedule.add(job_id, time.time() + 0.05)
        schedule.discard(0)
        schedule.add(1001, time.time())
        assert threading.active_count() == before + 1
        assert done.wait(30)
        assert sorted(fired) == list(range(1, 1002))
    finally:
        schedule.stop()
    assert threading.active_count() == before


def test_a_failing_callback_does_not_stop_the_schedule():
    """on_due raising is logged; later jobs still come due."""
    clock = FakeClock(0.0)
    calls = []

    def on_due(job_ids):
        calls.append(job_ids)
        if len(calls) == 1:
            raise RuntimeError("boom")

    schedule = StartSchedule(clock, on_due, thread=False)
    schedule.add(1, 1)
    schedule.add(2, 2)
    clock.advance(1)
    assert schedule.fire_due() == 1
    clock.advance(1)
    assert schedule.fire_due() == 1 and calls == [[1], [2]]
