"""Tests of jqueue.store.events: the ring, the files, gaps, waiters, the action log's line."""

import errno
import json
import os
import re

import pytest

from jqueue import errors
from jqueue.store import events

ACTION_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \d+ [A-Z_]+( .*)?$")


def event(serial, status="OK", job=1, node="n1", kind="attempt", message="fine"):
    return {"serial": serial, "time": 1_800_000_000.0 + serial, "kind": kind, "job": job,
            "node": node, "status": status, "message": message}


def test_action_lines_have_bexs_shape(tmp_path):
    """YYYY-MM-DD HH:MM:SS node job STATUS message, UTC; "-" without a node."""
    assert events.action_line(event(1)) == "2027-01-15 08:00:01 n1 1 OK fine"
    line = events.action_line(event(2, "NEW", node=None, message="TEST_DELAY(0)\nx"))
    assert line == "2027-01-15 08:00:02 - 1 NEW TEST_DELAY(0) x"
    assert ACTION_LINE.match(line)
    # a title or command someone chose moves no cursor of a terminal that tails the log
    line = events.action_line(event(3, "NEW", message="COMMAND_RUN(t\x1b]0;x\x07\x9b)"))
    assert line == "2027-01-15 08:00:03 n1 1 NEW COMMAND_RUN(t\\x1b]0;x\\x07\\x9b)"
    log = events.EventLog(str(tmp_path))
    log.add([event(1), event(2, "DONE", message="")])
    lines = (tmp_path / events.ACTIONS_FILE).read_text().splitlines()
    assert lines == ["2027-01-15 08:00:01 n1 1 OK fine", "2027-01-15 08:00:02 n1 1 DONE"]
    assert all(ACTION_LINE.match(line) for line in lines)


def test_read_gives_events_after_a_serial_with_filters(tmp_path):
    """Events after since, filtered by job, node, kind or status; last is the newest."""
    log = events.EventLog(str(tmp_path))
    log.add([event(1, job=1), event(2, job=2, node="n2"), event(3, "FAILED", job=1)])
    assert [e["serial"] for e in log.read(0)["events"]] == [1, 2, 3]
    assert [e["serial"] for e in log.read(1, {"job": 1})["events"]] == [3]
    assert [e["serial"] for e in log.read(0, {"node": "n2"})["events"]] == [2]
    assert [e["serial"] for e in log.read(0, {"status": ["FAILED"]})["events"]] == [3]
    answer = log.read(3)
    assert answer == {"events": [], "last": 3, "gap": False}


def test_a_replayed_event_is_kept_once(tmp_path):
    """add skips events at or below the newest serial: a replay writes nothing twice."""
    log = events.EventLog(str(tmp_path))
    log.add([event(1), event(2)])
    log.add([event(2), event(1), event(3)])
    assert [e["serial"] for e in log.read(0)["events"]] == [1, 2, 3]
    assert len((tmp_path / events.EVENTS_FILE).read_text().splitlines()) == 3


def test_a_since_older_than_the_ring_is_a_gap(tmp_path):
    """With a ring of 3, asking after serial 1 of 10 says gap and gives what is kept."""
    log = events.EventLog(str(tmp_path), buffer=3)
    log.add([event(n) for n in range(1, 11)])
    answer = log.read(1)
    assert answer["gap"] and [e["serial"] for e in answer["events"]] == [8, 9, 10]
    assert not log.read(7)["gap"]


def test_the_ring_is_refilled_from_the_files_when_opened(tmp_path):
    """A reopened log has the last events and their serials (rotation included)."""
    log = events.EventLog(str(tmp_path), buffer=5, rotate_bytes=400)
    for serial in range(1, 9):
        log.add([event(serial)])
    log.close()
    assert (tmp_path / (events.EVENTS_FILE + ".1")).exists()
    again = events.EventLog(str(tmp_path), buffer=5)
    assert again.last_serial == 8
    assert [e["serial"] for e in again.read(0)["events"]] == [4, 5, 6, 7, 8]


def test_the_events_file_holds_one_json_object_a_line_whatever_the_text(tmp_path):
    """Lines are compact JSON in UTF-8 (text as it is, a service's name only when there is
    one), read back the same by a reopened log."""
    log = events.EventLog(str(tmp_path))
    first = event(1, message="rendu \u00e9t\u00e9 \u2713 \"quoted\" \\ and\ttab")
    second = dict(event(2, kind="service"), service="web", job=0)
    log.add([first, second])
    log.close()
    lines = (tmp_path / events.EVENTS_FILE).read_bytes().decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [first, second]
    assert "\u00e9t\u00e9 \u2713" in lines[0] and " " not in lines[1]
    assert events.EventLog(str(tmp_path)).read(0)["events"] == [first, second]


def test_reopening_reads_the_newest_events_and_all_lines_only_when_out_of_order(tmp_path):
    """The ring is refilled from the files' end; lines out of serial order (edited by
    hand) are read in order as written, an event no newer than one before it dropped."""
    log = events.EventLog(str(tmp_path), buffer=5)
    log.add([event(n) for n in range(1, 31)])
    log.close()
    again = events.EventLog(str(tmp_path), buffer=5)
    assert [e["serial"] for e in again.read(0)["events"]] == [26, 27, 28, 29, 30]
    assert again.last_serial == 30
    path = tmp_path / events.EVENTS_FILE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:10] + ["not json\n", lines[3]] + lines[10:12]))
    again = events.EventLog(str(tmp_path), buffer=5)
    assert [e["serial"] for e in again.read(0)["events"]] == [8, 9, 10, 11, 12]
    assert again.last_serial == 12


def test_a_torn_last_line_is_ignored(tmp_path):
    """A crash while appending leaves a half line: it is skipped when reopening."""
    log = events.EventLog(str(tmp_path))
    log.add([event(1), event(2)])
    log.close()
    with open(tmp_path / events.EVENTS_FILE, "a") as stream:
        stream.write('{"serial": 3, "ti')
    assert events.EventLog(str(tmp_path)).last_serial == 2


def test_watchers_are_answered_by_new_events_and_withdrawn_by_cancel(tmp_path):
    """A watch waits (no thread) until a matching event; a canceled one hears nothing."""
    log = events.EventLog(str(tmp_path))
    got, other = [], []
    handle = log.watch(0, {"job": 2}, got.append)
    withdrawn = log.watch(0, None, other.append)
    assert handle is not None and log.waiter_count() == 2
    withdrawn.cancel()
    ready = log.add([event(1, job=1)])
    assert ready == []
    ready = log.add([event(2, job=2)])
    for callback, answer in ready:
        callback(answer)
    assert [e["serial"] for e in got[0]["events"]] == [2] and other == []
    answered = []
    assert log.watch(0, None, answered.append) is None and len(answered[0]["events"]) == 2


def test_the_ring_keeps_its_window_as_it_grows_and_answers_by_serial(tmp_path):
    """Added one by one past twice the buffer, with holes in the serials: read finds the
    events after any since, and gap only before the window."""
    log = events.EventLog(str(tmp_path), buffer=4)
    serials = [s for s in range(1, 40) if s % 5]  # 5, 10, ... are holes (refused changes)
    for serial in serials:
        log.add([event(serial)])
    window = serials[-4:]
    assert [e["serial"] for e in log.read(0)["events"]] == window
    assert log.read(window[0] - 1) == {"events": [event(s) for s in window], "last": 39,
                                       "gap": False}
    assert log.read(window[0] - 2)["gap"]
    assert [e["serial"] for e in log.read(36)["events"]] == [37, 38, 39]
    assert [e["serial"] for e in log.read(35)["events"]] == [36, 37, 38, 39]
    assert log.read(39)["events"] == [] and log.read(100)["events"] == []


def test_waiters_of_the_same_since_share_one_answer_and_leave_in_any_order(tmp_path):
    """Listeners that keep up ask the same thing: one answer object for all (encoded once
    by the server); a withdrawn waiter is not called; the others are, once."""
    log = events.EventLog(str(tmp_path))
    log.add([event(1)])
    got = []
    handles = [log.watch(1, None, lambda answer, i=i: got.append((i, answer)))
               for i in range(5)]
    other = log.watch(1, {"job": 2}, lambda answer: got.append(("job 2", answer)))
    handles[2].cancel()
    handles[2].cancel()  # twice is harmless
    assert log.waiter_count() == 5
    for callback, answer in log.add([event(2)]):
        callback(answer)
    assert sorted(i for i, _ in got) == [0, 1, 3, 4]
    assert len({id(answer) for _, answer in got}) == 1
    assert got[0][1]["events"] == [event(2)] and log.waiter_count() == 1
    other.cancel()
    assert log.waiter_count() == 0


def test_a_failed_sync_is_a_disk_sync_error(tmp_path, monkeypatch):
    """A sync of the files that fails is DiskSyncError (the checkpoint's caller makes it
    fatal, as the journal's own: a later sync that succeeds proves nothing)."""
    log = events.EventLog(str(tmp_path))
    log.add([event(1)])

    def fail(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "fdatasync", fail)
    with pytest.raises(errors.DiskSyncError, match="cannot sync the events in .*Input/output"):
        log.sync()


def test_appends_the_disk_refuses_are_kept_whole_and_written_once_it_has_room(tmp_path,
                                                                              monkeypatch):
    """A full disk (ENOSPC half way through a write): the events reach the ring and the
    waiters at once; the files are cut back to whole lines; the checkpoint's sync fails
    (not DiskSyncError: it is tried again); once there is room, the next append writes
    the kept events first, in order, and a reopened log has them all."""
    from jqueue.store import fsutil
    log = events.EventLog(str(tmp_path))
    log.add([event(1), event(2)])
    answered = []
    log.watch(2, None, answered.append)
    real_write = fsutil.write_all

    def full(fd, data):
        real_write(fd, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(fsutil, "write_all", full)
    for callback, answer in log.add([event(3, "FAILED"), event(4)]):
        callback(answer)
    assert [e["serial"] for e in answered[0]["events"]] == [3, 4]
    assert [e["serial"] for e in log.read(0)["events"]] == [1, 2, 3, 4]
    assert len((tmp_path / events.EVENTS_FILE).read_text().splitlines()) == 2
    assert (tmp_path / events.ACTIONS_FILE).read_text().endswith(" OK fine\n")
    with pytest.raises(OSError, match="No space left") as refused:
        log.sync()
    assert not isinstance(refused.value, errors.DiskSyncError)
    monkeypatch.setattr(fsutil, "write_all", real_write)
    log.add([event(5)])
    log.sync()
    lines = (tmp_path / events.EVENTS_FILE).read_text().splitlines()
    assert [json.loads(line)["serial"] for line in lines] == [1, 2, 3, 4, 5]
    actions = (tmp_path / events.ACTIONS_FILE).read_text().splitlines()
    assert len(actions) == 5 and " FAILED " in actions[2]
    log.close()
    again = events.EventLog(str(tmp_path))
    assert [e["serial"] for e in again.read(0)["events"]] == [1, 2, 3, 4, 5]


def _lines(path):
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read().splitlines()
    except FileNotFoundError:
        return []


def test_events_cut_from_a_serial_leave_the_ring_and_both_files_even_across_a_rotation(
        tmp_path):
    """A candidate's events that its master's resync replaces (jqueue.cluster.replication):
    cut from a serial on, out of the ring and off both files (the events file into its
    previous generation: it rotated meanwhile); what follows is appended after what is
    kept, and a reopened log reads exactly that."""
    log = events.EventLog(str(tmp_path), buffer=50, rotate_bytes=600)
    for serial in range(1, 7):
        log.add([event(serial)])
    path = os.path.join(str(tmp_path), events.EVENTS_FILE)
    actions = os.path.join(str(tmp_path), events.ACTIONS_FILE)
    assert _lines(path + ".1")  # the events file rotated
    assert [json.loads(line)["serial"] for line in _lines(path)][0] > 4
    log.cut_from(4)
    assert [e["serial"] for e in log.read(0)["events"]] == [1, 2, 3]
    assert log.last_serial == 3
    kept = [json.loads(line)["serial"] for line in _lines(path + ".1") + _lines(path)]
    assert kept == [1, 2, 3]
    assert len(_lines(actions + ".1") + _lines(actions)) == 3
    log.add([event(serial, status="NEW%d" % serial) for serial in (4, 5)])
    log.close()
    again = events.EventLog(str(tmp_path), buffer=50)
    assert [(e["serial"], e["status"]) for e in again.read(0)["events"]] == [
        (1, "OK"), (2, "OK"), (3, "OK"), (4, "NEW4"), (5, "NEW5")]
    assert [line.split()[4] for line in _lines(actions + ".1") + _lines(actions)] == [
        "OK", "OK", "OK", "NEW4", "NEW5"]
    assert again.digests() == [[e["serial"], events.digest(e)] for e in again.read(0)["events"]]
