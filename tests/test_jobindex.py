"""The index of live jobs: pages by id, filters, time ranges, and the queue's use of it."""

import time

import pytest
from conftest import delay, run_jobs

from jqueue.jobindex import JobIndex


def filled(count=10):
    index = JobIndex()
    for job_id in range(1, count + 1):
        status = "success" if job_id % 2 else "queued"
        index.update(job_id, 1000.0 + job_id, (status, "n%d" % (job_id % 3), None, None))
    return index


def test_an_index_filled_at_once_is_the_one_updated_job_by_job():
    """fill() (a queue opening) gives the pages, counts and times update() gives, in any
    entry order; updates and removals go on from it; a full index refuses it."""
    entries = [(job_id, 1000.0 + job_id, ("success" if job_id % 2 else "queued",
                                          "n%d" % (job_id % 3), None, job_id % 4 or None))
               for job_id in range(10, 0, -1)]
    one_by_one, at_once = JobIndex(), JobIndex()
    for entry in entries:
        one_by_one.update(*entry)
    at_once.fill(entries)
    for index in (one_by_one, at_once):
        index.update(4, 1004.0, ("running", "n1", None, None))
        index.remove(7)
    for filters in (None, {"status": ["queued"]}, {"node": ["n1"], "status": ["running"]},
                    {"parent": [2, 3]}, {"owner": ["x"]}):
        assert list(at_once.select(filters)) == list(one_by_one.select(filters))
        assert list(at_once.select(filters, before=9, reverse=True, since=1003.0)) == list(
            one_by_one.select(filters, before=9, reverse=True, since=1003.0))
    for key in ("status", "node", "parent"):
        assert at_once.counts(key) == one_by_one.counts(key)
    assert len(at_once) == 9 and at_once.values(4) == ("running", "n1", None, None)
    with pytest.raises(ValueError):
        at_once.fill(entries)


def test_pages_walk_ids_in_order_from_a_cursor():
    """after/before are exclusive bounds; reverse gives newest first."""
    index = filled()
    assert list(index.select(after=7)) == [8, 9, 10]
    assert list(index.select(before=4, reverse=True)) == [3, 2, 1]


def test_filters_combine_and_a_moved_job_follows_its_status():
    """A status and a node filter together; an update moves the job between lists."""
    index = filled()
    assert list(index.select({"status": ["queued"], "node": ["n1"]})) == [4, 10]
    index.update(4, 1004.0, ("running", "n1", None, None))
    assert list(index.select({"status": ["queued"], "node": ["n1"]})) == [10]
    assert list(index.select({"status": ["running", "queued"]}, after=3)) == [4, 6, 8, 10]
    assert list(index.select({"status": ["canceled"]})) == []
    assert index.counts("status") == {"success": 5, "queued": 4, "running": 1}


def test_removed_jobs_leave_every_list():
    """remove() forgets the job in the id list and each key's list."""
    index = filled()
    index.remove(3)
    index.remove(99)
    assert 3 not in index and len(index) == 9
    assert list(index.select({"status": ["success"]})) == [1, 5, 7, 9]


def test_since_and_until_are_submission_times():
    """since/until (inclusive) translate into a range of ids by bisection."""
    index = filled()
    assert list(index.select(since=1004.0, until=1006.0)) == [4, 5, 6]
    assert list(index.select(since=1004.5)) == [5, 6, 7, 8, 9, 10]
    assert list(index.select(until=999.0)) == []


def test_queue_lists_pages_with_filters_and_owners(open_queue):
    """list_jobs pages by id, filters by status and owner, and stays current as jobs run."""
    queue = open_queue()
    ids = [queue.submit_job([delay()], owner="alice" if n % 2 else None) for n in range(6)]
    page = queue.list_jobs(["id", "status", "owner"], limit=4)
    assert [row[0] for row in page["rows"]] == ids[:4] and page["more"]
    page = queue.list_jobs(["id"], limit=4, after=ids[3])
    assert [row[0] for row in page["rows"]] == ids[4:] and not page["more"]
    alice = queue.list_jobs(["id", "owner"], filters={"owner": ["alice"]})
    assert [row for row in alice["rows"]] == [[i, "alice"] for i in ids[1::2]]
    run_jobs(queue)
    assert queue.list_jobs(["id"], filters={"status": ["queued"]})["rows"] == []
    assert len(queue.list_jobs(["id"], filters={"status": ["success"]})["rows"]) == 6
    queue.archive_job(ids[0])
    newest = queue.list_jobs(["id"], before=ids[2], limit=10)["rows"]
    assert newest == [[ids[1]]]
    assert queue.count_jobs("status") == {"success": 5}


def test_a_page_of_a_big_queue_costs_little(open_queue):
    """100 rows out of 20,000 jobs are served in milliseconds (not a scan of the queue)."""
    queue = open_queue(max_jobs=100000)
    queue.submit_many_jobs([[delay()] for _ in range(20000)])
    started = time.perf_counter()
    for _ in range(20):
        page = queue.list_jobs(["id", "status", "title"], limit=100, after=10000,
                               filters={"status": ["queued"]})
    assert len(page["rows"]) == 100
    assert (time.perf_counter() - started) / 20 < 0.02
