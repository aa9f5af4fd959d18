"""Tests of jqueue.job: status and priority rules, Ganeti file format, replay helpers."""

import pytest

from jqueue import constants as C
from jqueue import errors
from jqueue.job import PRISTINE, QueuedJob, QueuedOpCode, job_status, timestamp, ts_to_float


def _job(*statuses, priorities=None):
    ops = [QueuedOpCode({"OP_ID": "OP_TEST_DELAY", "duration": 0}) for _ in statuses]
    for op, status in zip(ops, statuses):
        op.status = status
    for op, prio in zip(ops, priorities or ()):
        op.priority = prio
    return QueuedJob(7, ops, [1, 0])


@pytest.mark.parametrize("statuses, expected", [
    (["queued", "queued"], "queued"),
    (["success", "success"], "success"),
    (["success", "queued"], "queued"),
    (["success", "waiting", "queued"], "waiting"),
    (["success", "running", "queued"], "running"),
    (["success", "error", "error"], "error"),
    (["canceling", "canceling"], "canceling"),
    (["success", "canceled"], "canceled"),
    (["error", "canceled"], "error"),
    (["running", "canceling"], "canceling"),
])
def test_status_follows_ganeti_rules(statuses, expected):
    """The job status derives from its opcodes exactly as Ganeti derives it."""
    assert _job(*statuses).calc_status() == expected


@pytest.mark.parametrize("status", sorted(C.OP_STATUS_ALL))
def test_a_single_opcode_job_has_the_status_ganeti_derives(status):
    """One opcode: its status is read as the job's (a shortcut), which must be the one
    Ganeti's rules derive, and the job status constant itself."""
    derived = _job(status).calc_status()
    assert derived == job_status([status]) and derived in C.JOB_STATUS_ALL


def test_priority_is_lowest_value_among_unfinished_ops():
    """Job priority is the minimum priority of unfinished opcodes, default when done."""
    job = _job("success", "queued", "queued", priorities=[-20, 5, -3])
    assert job.calc_priority() == -3
    assert _job("success", "error", priorities=[-5, -10]).calc_priority() == C.OP_PRIO_DEFAULT


def test_ganeti_job_file_round_trips():
    """A job file in the Ganeti 2.10 format reads and writes back unchanged."""
    data = {
        "id": 42, "received_timestamp": [1700000000, 1], "start_timestamp": [1700000001, 2],
        "end_timestamp": [1700000002, 3],
        "ops": [{"input": {"OP_ID": "OP_TEST_DELAY", "duration": 0.5, "priority": 0,
                           "depends": [[41, ["success"]]], "comment": None},
                 "status": "success", "result": None,
                 "log": [[1, [1700000001, 5], "message", "hello"]],
                 "start_timestamp": [1700000001, 2], "exec_timestamp": [1700000001, 3],
                 "end_timestamp": [1700000002, 3], "priority": 0}],
    }
    job = QueuedJob.from_dict(data)
    assert job.to_dict() == data
    assert job.log_serial == 1 and job.calc_status() == "success"


@pytest.mark.parametrize("data", [
    [], {"id": -1, "ops": [{"input": {}}]}, {"id": "4x", "ops": [{"input": {}}]},
    {"id": True, "ops": [{"input": {}}]}, {"id": 1, "ops": []}, {"id": 1, "ops": [{}]},
    {"id": 1, "ops": [{"input": {}, "status": "bogus"}]},
    {"id": 1, "ops": [{"input": {}, "log": [["x", 1, 2, 3]]}]},
    {"id": 1, "ops": [{"input": {}, "priority": "high"}]},
])
def test_malformed_job_data_is_refused(data):
    """Malformed job file content raises JobFileCorrupted rather than loading."""
    with pytest.raises(errors.JobFileCorrupted):
        QueuedJob.from_dict(data)


def test_log_entries_since_are_in_serial_order_across_ops():
    """log_entries_since returns only newer entries, ordered by serial over all opcodes."""
    job = _job("success", "running")
    job.add_log(0, "message", "one", 1.0)
    job.add_log(1, "message", "two", 2.0)
    job.add_log(0, "message", "three", 3.0)
    assert [e[3] for e in job.log_entries_since(1)] == ["two", "three"]
    assert [e[0] for e in job.log_entries_since(-1)] == [1, 2, 3]


def test_adding_log_entries_twice_is_idempotent():
    """Replaying the same log entries does not duplicate them."""
    job = _job("running")
    entries = [[0, [1, [0, 0], "message", "a"]], [0, [2, [0, 0], "message", "b"]]]
    job.add_log_entries(entries)
    job.add_log_entries(entries)
    assert [e[0] for e in job.ops[0].log] == [1, 2] and job.log_serial == 2


def test_state_dict_round_trip_and_shape_check():
    """apply_state sets what state_dict captured and refuses a different opcode count."""
    source = _job("success", "running")
    source.start_timestamp = [5, 6]
    target = _job("queued", "queued")
    target.apply_state(source.state_dict())
    assert target.calc_status() == "running" and target.start_timestamp == [5, 6]
    with pytest.raises(errors.JobFileCorrupted):
        _job("queued").apply_state(source.state_dict())


#: Every attribute a job's state is made of: the job's own (its state_dict()'s keys, and
#: held), and each opcode's slots but its input, log and cached summary; a new one is
#: covered without a change here.
JOB_STATE = sorted(set(_job("queued").state_dict()) - {"ops"} | {"held"})
OP_STATE = sorted(set(QueuedOpCode.__slots__) - {"input", "log", "summary"})


@pytest.mark.parametrize("target, name", [("job", name) for name in JOB_STATE]
                         + [("op", name) for name in OP_STATE])
def test_a_job_is_pristine_until_its_state_changes(target, name):
    """is_pristine: the state is what view(PRISTINE) shows, as submitted; any change of
    any part of the state (the second opcode's, or the job's) ends it."""
    job = _job("queued", "queued")
    assert job.is_pristine()
    assert job.view(PRISTINE, 0).state_dict() == job.state_dict()
    setattr(job if target == "job" else job.ops[1], name, True if name == "held" else [5, 6])
    assert not job.is_pristine()
    assert job.view(PRISTINE, 0).state_dict() != job.state_dict()


def test_timestamps_are_sec_usec_pairs():
    """timestamp() splits seconds into [sec, usec] and ts_to_float reverses it."""
    assert timestamp(12.5) == [12, 500000]
    assert ts_to_float([12, 500000]) == 12.5
    assert ts_to_float(None) is None
