"""Tests of jqueue.cluster.replication and jqueue.cluster.replica with in-process candidates."""

import contextlib
import errno
import json
import os
import threading
import time

import pytest
from conftest import delay, jqop, run_jobs
from fakes import SyncPool
from fakes_cluster import Cluster, LoopbackClient, NodeState, StreamingLoopbackClient

from jqueue import constants, errors
from jqueue.cluster import replication
from jqueue.cluster.replica import Replica, ReplicaRpc
from jqueue.queue import EXTENT_MIN, JobQueue
from jqueue.store import faults, journal, records
from jqueue.store.events import action_line
from jqueue.store.records import job_digest

FIELDS = ["id", "status", "opstatus", "oplog", "archived"]


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(**kwargs):
        kwargs.setdefault("pool_factory", SyncPool)
        made.append(Cluster(tmp_path / ("cluster%d" % len(made)), **kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in %ss" % timeout
        time.sleep(0.01)


def _in_sync(cl):
    report = cl.replicator.verify()
    return all(not any(v for k, v in r.items() if k != "position") for r in report.values())


def _replica_jobs(replica):
    return {job_id: job_digest(job) for job_id, job in replica.queue._jobs.items()}


def _master_jobs(queue):
    return {job_id: job_digest(job) for job_id, job in queue._jobs.items()}


def test_acknowledged_jobs_are_on_the_candidates(cluster):
    """Every acknowledged change is already on min_acks candidates when the call returns."""
    cl = cluster(candidates=2, min_acks=2)
    ids = [cl.queue.submit_job([jqop(log_messages=["a", "b"])]) for _ in range(5)]
    for name in cl.names:
        assert set(ids) <= set(cl.replicas[name].queue._jobs)
    run_jobs(cl.queue)
    for name in cl.names:
        assert _replica_jobs(cl.replicas[name]) == _master_jobs(cl.queue)
    assert _in_sync(cl)


def test_each_candidates_sender_thread_carries_its_name_in_the_kernel(cluster):
    """top -H and ps -L show which candidate's sender spends the CPU (jq-repl-<node>)."""
    cluster(candidates=2)

    def names():
        found = set()
        for tid in os.listdir("/proc/self/task"):
            try:
                with open("/proc/self/task/%s/comm" % tid) as f:
                    found.add(f.read().strip())
            except FileNotFoundError:  # a thread that just ended
                pass
        return found
    _wait_for(lambda: {"jq-repl-c1", "jq-repl-c2"} <= names())


@pytest.mark.parametrize("streams", [True, False])
def test_batches_go_on_a_stream_or_in_calls_to_a_node_without_one(cluster, streams):
    """A candidate with a replication stream gets each batch as a message of raw frames;
    one without (an older jq-noded: StreamUnsupported) gets replicate calls from then on.
    Either way every acknowledged job is on the candidates."""
    cl = cluster(candidates=2, min_acks=2, client_class=StreamingLoopbackClient)
    for client in cl.clients.values():
        client.unsupported = not streams
    ids = [cl.queue.submit_job([jqop()]) for _ in range(5)]
    for name in cl.names:
        assert set(ids) <= set(cl.replicas[name].queue._jobs)
        calls = cl.clients[name].calls
        assert (calls["replicate_stream message"] > 0) == streams
        assert (calls["replicate"] > 0) == (not streams)
    run_jobs(cl.queue)
    for name in cl.names:
        assert _replica_jobs(cl.replicas[name]) == _master_jobs(cl.queue)
    assert _in_sync(cl)


def test_a_node_back_from_an_outage_is_asked_for_its_stream_again(cluster):
    """A candidate served by calls (it had no stream) that becomes unreachable and comes
    back (upgraded, say) is asked for its stream again, and gets its batches on it."""
    cl = cluster(candidates=1, min_acks=1, client_class=StreamingLoopbackClient)
    client = cl.clients["c1"]
    client.unsupported = True
    for _ in range(2):  # the first may reach it by the sender's first resync
        cl.queue.submit_job([jqop()])
    assert client.calls["replicate"] > 0 and client.calls["replicate_stream message"] == 0
    client.down = True
    cl.replicator.set_min_acks(0)
    cl.queue.submit_job([jqop()])
    _wait_for(lambda: cl.replicator.status()["peers"][0]["reachable"] is False)
    client.unsupported = client.down = False
    cl.replicator.set_min_acks(1)
    job_id = cl.queue.submit_job([jqop()])
    assert client.calls["replicate_stream message"] > 0
    assert job_id in cl.replicas["c1"].queue._jobs


def test_default_policy_is_a_majority(cluster):
    """With 2 candidates one copy besides the master is enough; with 4, two."""
    assert cluster(candidates=2).replicator.min_acks == 1
    assert cluster(candidates=4).replicator.min_acks == 2


def test_one_candidate_down_is_tolerated(cluster):
    """With the majority policy, a submit is acknowledged while one of two candidates is down."""
    cl = cluster(candidates=2)
    cl.stop_replica("c2")
    job_id = cl.queue.submit_job([delay()])
    assert job_id in cl.replicas["c1"].queue._jobs


def test_no_acknowledgement_without_enough_copies(cluster):
    """With every candidate down, submits fail saying how many copies exist; nothing runs."""
    cl = cluster(candidates=2, ack_timeout=0.3)
    cl.stop_replica("c1")
    cl.stop_replica("c2")
    with pytest.raises(errors.ReplicationError, match="0 of 2 candidates .1 required"):
        cl.queue.submit_job([delay()])
    assert cl.queue.query_jobs([], ["id"]) == []  # at once: the job is not acknowledged
    assert cl.queue._pool.stats()["waiting"] == 0
    cl.start_replica("c1")
    _wait_for(lambda: cl.queue._jobs and cl.queue._jobs[1].visible)
    run_jobs(cl.queue)
    assert cl.queue.query_jobs([1], ["status"]) == [["success"]]


def test_a_checkpoint_and_a_shutdown_do_not_wait_for_candidates_that_are_down(cluster):
    """With every candidate down, a checkpoint still rotates and materializes the journal
    (its rotation needs the local disk, not the candidates), and shutdown ends instead of
    waiting for acknowledgements that cannot come (a master stuck in a checkpoint could
    not be stopped)."""
    cl = cluster(candidates=2, ack_timeout=0.3)
    cl.stop_replica("c1")
    cl.stop_replica("c2")
    with pytest.raises(errors.ReplicationError):
        cl.queue.submit_job([delay()])
    checkpoint = threading.Thread(target=cl.queue.checkpoint, daemon=True)
    checkpoint.start()
    checkpoint.join(10)
    assert not checkpoint.is_alive(), "the checkpoint waits for the candidates"
    master_dir = os.path.join(cl.root, "master")
    assert not os.path.exists(os.path.join(master_dir, "journal.old"))
    assert os.path.exists(os.path.join(master_dir, "job-1"))
    cl.queue.shutdown(timeout=5)  # returns (the fixture's close finds it closed)


class FrozenClient(StreamingLoopbackClient):
    """Once ``frozen``, a call hangs as one to a stopped (SIGSTOP) jq-noded does, until the
    RPC timeout (60 s here), unless close() aborts it (as RpcClient.close does a call in
    another thread)."""

    frozen = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.closed = threading.Event()

    def _hang(self):
        if self.frozen:
            self.closed.wait(60)
            raise errors.RemoteError("RPC to node %s failed: %s" % (
                self.node_name, "connection closed" if self.closed.is_set() else "timed out"))

    def call(self, method, body):
        self._hang()
        return super().call(method, body)

    def stream(self, method, opening, head, data):
        self._hang()
        return super().stream(method, opening, head, data)

    def close(self):
        self.closed.set()


def test_a_shutdown_aborts_the_calls_waiting_for_frozen_candidates(cluster):
    """Both candidates frozen while a change waits for them: the shutdown ends at once,
    the calls in flight aborted (a stopping jq-masterd waited for the RPC timeout); the
    change stays on the master's disk and the next master's resync brings it."""
    cl = cluster(candidates=2, ack_timeout=0.3, client_class=FrozenClient)
    first = cl.queue.submit_job([delay()])
    for client in cl.clients.values():
        client.frozen = True
    with pytest.raises(errors.ReplicationError):
        cl.queue.submit_job([delay()])
    stopper = threading.Thread(target=cl.queue.shutdown, kwargs={"timeout": 5}, daemon=True)
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive(), "the shutdown waits for the frozen candidates"
    assert all(client.closed.is_set() for client in cl.clients.values())
    reopened = JobQueue(os.path.join(cl.root, "master"), checkpoint_interval=None)
    try:
        assert reopened.query_jobs([first, first + 1], ["id"]) == [[first], [first + 1]]
    finally:
        reopened.shutdown(timeout=5)


def _start_unacknowledged(cl):
    """A job logging "hello" submitted, then c1 stopped and the job started in a worker
    thread: its opcode waits for the start to be acknowledged. (job id, the live job,
    the worker thread)."""
    job_id = cl.queue.submit_job([jqop(log_messages=["hello"])])
    cl.stop_replica("c1")
    worker = threading.Thread(target=cl.queue._pool.run_all)
    worker.start()
    live = cl.queue._jobs[job_id]
    _wait_for(lambda: live.calc_status() == "running")
    return job_id, live, worker


def test_reads_answer_at_once_with_the_acknowledged_state(cluster):
    """With the candidates down, queries and waiters answer at once, showing each job as
    its acknowledged changes leave it: no unacknowledged status, log entry or job."""
    cl = cluster(candidates=1, ack_timeout=30)
    job_id, live, worker = _start_unacknowledged(cl)
    assert live.unacked_state
    # Waiting for an acknowledgement would raise ReplicationError after ack_timeout.
    assert cl.queue.query_jobs([job_id], ["status", "oplog"]) == [["queued", [[]]]]
    assert cl.queue.query_jobs([], ["id", "status"]) == [[job_id, "queued"]]
    answer = cl.queue.wait_for_job_changes(job_id, ["status"], None, None, timeout=30)
    assert answer == (["queued"], [])
    assert cl.queue.wait_for_job_changes(job_id, ["status"], ["queued"], 0,
                                         timeout=0.1) == constants.JOB_NOTCHANGED
    cl.start_replica("c1")
    worker.join(30)
    _wait_for(lambda: cl.queue.query_jobs([job_id], ["status"]) == [["success"]])
    assert cl.queue.query_jobs([job_id], ["oplog"])[0][0][0][0][3] == "hello"


def test_a_start_unacknowledged_at_shutdown_is_taken_back(cluster):
    """With the candidates down an opcode waits for its start to be acknowledged; a
    shutdown meanwhile takes the start back: the opcode never ran, the job is queued,
    and so it is when the master's directory is opened again."""
    cl = cluster(candidates=1, ack_timeout=1)
    job_id, live, worker = _start_unacknowledged(cl)
    cl.queue.shutdown(timeout=5)
    worker.join(10)
    assert not worker.is_alive()
    assert live.calc_status() == "queued"
    reopened = JobQueue(os.path.join(cl.root, "master"), pool_factory=SyncPool,
                        checkpoint_interval=None)
    try:
        assert reopened.query_jobs([job_id], ["status", "oplog"]) == [["queued", [[]]]]
    finally:
        reopened.shutdown(timeout=5)


def test_tokens_are_replicated_and_known_after_a_takeover(cluster):
    """A token travels in the job's records: the candidate's copy has it, and a queue
    opened on the candidate's directory (a takeover) answers the retry with the same id."""
    cl = cluster(candidates=1)
    job_id = cl.queue.submit_job([delay()], token="once")
    assert cl.replicas["c1"].queue._jobs[job_id].token == "once"
    cl.queue.shutdown(timeout=5)
    directory = cl.replicas["c1"].queue.path
    cl.stop_replica("c1")
    taken_over = JobQueue(directory, pool_factory=SyncPool, checkpoint_interval=None)
    try:
        assert taken_over.submit_job([delay()], token="once") == job_id
        assert taken_over.submit_job([delay()], token="twice") == job_id + 1
    finally:
        taken_over.shutdown(timeout=5)


def test_an_unacknowledged_submission_names_its_jobs_and_their_fate(cluster):
    """A submission not acknowledged in time raises SubmissionNotAcknowledged with its ids;
    a retry with its token after the candidates return gets the same job."""
    cl = cluster(candidates=1, ack_timeout=0.3)
    cl.stop_replica("c1")
    with pytest.raises(errors.SubmissionNotAcknowledged) as caught:
        cl.queue.submit_many_jobs([[delay()], [delay()]], tokens=["a", "b"])
    assert caught.value.job_ids == [1, 2]
    assert errors.error_message(caught.value).startswith(
        "jobs 1, 2 submitted but not acknowledged: change not acknowledged within 0.3s")
    cl.start_replica("c1")
    _wait_for(lambda: all(job.visible for job in cl.queue._jobs.values()))
    assert cl.queue.submit_job([delay()], token="b") == 2
    assert sorted(cl.queue._jobs) == [1, 2]


def test_candidate_that_was_down_resyncs_to_identical_state(cluster):
    """A candidate missing changes is resynced to the master's exact state."""
    cl = cluster(candidates=2)
    first = [cl.queue.submit_job([jqop(log_messages=["x"])]) for _ in range(3)]
    run_jobs(cl.queue)
    cl.stop_replica("c2")
    cl.queue.archive_job(first[0])
    later = [cl.queue.submit_job([delay()]) for _ in range(4)]
    run_jobs(cl.queue)
    cl.queue.cancel_job(cl.queue.submit_job([delay()]))
    cl.start_replica("c2")
    cl.queue.submit_job([delay()])
    _wait_for(lambda: _replica_jobs(cl.replicas["c2"]) == _master_jobs(cl.queue))
    assert first[0] in cl.replicas["c2"].queue._archiving
    assert set(later) <= set(cl.replicas["c2"].queue._jobs)
    _wait_for(lambda: _in_sync(cl))


def test_resync_removes_what_the_master_does_not_have(cluster, tmp_path):
    """Jobs a candidate has but the master does not (never acknowledged) are removed."""
    cl = cluster(candidates=1)
    cl.queue.submit_job([delay()])
    cl.stop_replica("c1")
    stray = JobQueue(os.path.join(cl.root, "c1"), pool_factory=SyncPool,
                     checkpoint_interval=None)
    stray.submit_job([delay()])
    stray.submit_job([delay()])
    stray.shutdown()
    cl.start_replica("c1")
    cl.queue.submit_job([delay()])
    _wait_for(lambda: _replica_jobs(cl.replicas["c1"]) == _master_jobs(cl.queue))


def test_replayed_and_reordered_batches_change_nothing(cluster):
    """A replayed batch is acknowledged without effect; a gap asks for a resync."""
    cl = cluster(candidates=1)
    cl.queue.submit_job([delay()])
    replica = cl.replicas["c1"]
    position = replica.position
    before = _replica_jobs(replica)
    assert replica.apply_batch(position[0], position[1], 1, position[2], ["garbage"]) == position
    assert _replica_jobs(replica) == before
    with pytest.raises(errors.ResyncNeeded, match="up to"):
        replica.apply_batch(position[0], position[1], position[2] + 5, position[2] + 6, [])
    with pytest.raises(errors.ResyncNeeded):
        replica.apply_batch(position[0], position[1] + 1, 1, 1, [])
    assert _replica_jobs(replica) == before and replica.position == position


def test_old_epoch_and_wrong_master_are_fenced(cluster):
    """Updates from an older epoch or from a node that is not the master are refused."""
    cl = cluster(candidates=1)
    cl.queue.submit_job([delay()])
    rpc = cl.clients["c1"].rpc
    body = {"epoch": 0, "session": 1, "seq_from": 9, "seq_to": 9, "records": []}
    with pytest.raises(errors.FencedError, match="epoch 0 refused"):
        rpc.replicate("master", body)
    with pytest.raises(errors.FencedError, match="not the master"):
        rpc.replicate("intruder", dict(body, epoch=1))


def test_an_epoch_ahead_of_configuration_and_votes_is_refused(cluster):
    """An update whose epoch is ahead of the node's configuration and of any vote it gave
    (10^30) is refused and not adopted: the real master goes on replicating."""
    cl = cluster(candidates=1)
    cl.queue.submit_job([delay()])
    rpc = cl.clients["c1"].rpc
    body = {"epoch": 10 ** 30, "session": 1, "seq_from": 1, "seq_to": 1, "records": []}
    with pytest.raises(errors.FencedError, match="knows no configuration of that epoch"):
        rpc.replicate("c1", body)
    assert cl.states["c1"].epoch == 1 and cl.states["c1"].master == "master"
    assert isinstance(cl.queue.submit_job([delay()]), int)
    cl.states["c1"].config_epoch = 2  # the failover pushed epoch 2's configuration
    with pytest.raises(errors.ResyncNeeded):
        rpc.replicate("c1", dict(body, epoch=2))
    assert cl.states["c1"].epoch == 2 and cl.states["c1"].master == "c1"


def test_deposed_master_stops_acknowledging(cluster):
    """Once candidates know a newer epoch, the old master's changes all fail as fenced."""
    cl = cluster(candidates=2, ack_timeout=2.0)
    cl.queue.submit_job([delay()])
    for name in cl.names:
        cl.states[name].observe(2, "c1")
    with pytest.raises(errors.FencedError, match="no longer the master"):
        cl.queue.submit_job([delay()])
    deadline = time.monotonic() + 5  # on_fenced runs just after the waiters are failed
    while not cl.fenced and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cl.fenced and isinstance(cl.fenced[0], errors.FencedError)
    with pytest.raises(errors.FencedError):
        cl.queue.submit_job([delay()])


def test_candidate_takes_over_with_every_acknowledged_job(cluster):
    """Opening a candidate's replica as a queue shows every acknowledged job."""
    cl = cluster(candidates=2, min_acks=2)
    done = cl.queue.submit_job([jqop(log_messages=["kept"])])
    run_jobs(cl.queue)
    waiting = cl.queue.submit_job([delay()])
    cl.queue.wait_durable(5)
    expected = cl.queue.query_jobs([done, waiting], FIELDS)
    path = cl.replicas["c1"].queue.path
    cl.stop_replica("c1")
    taken = JobQueue(path, pool_factory=SyncPool, checkpoint_interval=None)
    try:
        assert taken.query_jobs([done, waiting], FIELDS) == expected
        assert taken.submit_job([delay()]) > waiting
    finally:
        taken.shutdown()


def test_best_effort_acknowledges_alone_and_says_degraded(cluster):
    """min_acks 0 acknowledges with every candidate down, and the status says degraded."""
    cl = cluster(candidates=2, min_acks=0)
    cl.stop_replica("c1")
    cl.stop_replica("c2")
    assert cl.queue.submit_job([delay()]) == 1
    assert "degraded" in cl.replicator.status()["mode"]


def test_drain_flag_reaches_candidates(cluster):
    """Setting the drain flag sets it on the candidates too."""
    cl = cluster(candidates=2)
    cl.queue.set_drain_flag(True)
    assert all(cl.replicas[n].queue.drain_flag for n in cl.names)


def test_replica_refuses_client_changes(cluster):
    """Clients cannot submit to, cancel on or archive in a replica."""
    cl = cluster(candidates=1)
    replica = cl.replicas["c1"].queue
    with pytest.raises(errors.NotMasterError):
        replica.submit_job([delay()])
    with pytest.raises(errors.NotMasterError):
        replica.cancel_job(1)


def test_replica_restart_keeps_its_position(cluster):
    """A replica reopened from disk resumes the stream where it stood."""
    cl = cluster(candidates=1)
    for _ in range(3):
        cl.queue.submit_job([delay()])
    position = cl.replicas["c1"].position
    cl.stop_replica("c1")
    cl.start_replica("c1")
    assert cl.replicas["c1"].position == position
    calls = cl.clients["c1"].calls["resync_digests"]
    cl.queue.submit_job([delay()])
    assert cl.clients["c1"].calls["resync_digests"] == calls


def test_candidates_added_and_removed_at_run_time(cluster, tmp_path):
    """A new candidate is resynced and then counts; a removed one stops receiving."""
    cl = cluster(candidates=1)
    cl.queue.submit_job([jqop(log_messages=["before"])])
    run_jobs(cl.queue)

    state = NodeState(1, "master")
    late = Replica(str(tmp_path / "late"), known_epoch=1, checkpoint_interval=None)
    client = LoopbackClient("master", ReplicaRpc(lambda: late, state), "late")
    try:
        cl.replicator.add_peer("late", client)
        cl.replicator.set_min_acks(2)
        # Once resynced, the next batch reaches it in a replicate call (a batch committed
        # during the resync may be in the resync's snapshot instead).
        _wait_for(lambda: {p["name"]: p["in_sync"] for p in cl.replicator.status()["peers"]}
                  .get("late"))
        cl.queue.submit_job([delay()])
        assert _replica_jobs(late) == _master_jobs(cl.queue)
        cl.replicator.remove_peer("late")
        cl.replicator.set_min_acks(None)
        cl.queue.submit_job([delay()])
        assert len(late.queue._jobs) == 2 and client.calls["replicate"] >= 1
    finally:
        late.close()


def test_damaged_frames_are_refused_and_change_nothing(cluster):
    """A replicate call whose frames fail their CRC is refused before anything applies."""
    import base64

    from jqueue.store import journal
    cl = cluster(candidates=1)
    cl.queue.submit_job([delay()])
    replica = cl.replicas["c1"]
    position = replica.position
    data = bytearray(journal.frame(b'{"t":"arch","id":1}'))
    data[-2] ^= 0x40
    body = {"epoch": 1, "master": "master", "session": position[1],
            "seq_from": position[2] + 1, "seq_to": position[2] + 1,
            "frames": base64.b64encode(bytes(data)).decode("ascii")}
    with pytest.raises(errors.ParameterError, match="damaged"):
        cl.clients["c1"].rpc.replicate("master", body)
    assert replica.position == position


# Command logs


def _append_log(queue, job_id, data):
    """Append data to a job's command log as the command runner does (a journal record)."""
    with queue._lock:
        batch = queue._record_chunk_unlocked(queue._jobs[job_id], 0, 0, 0, data)
    batch.wait(10)


def _log_bytes(queue, job_id):
    return queue._logs.read(job_id, 0, 1 << 20)


def test_command_logs_travel_with_the_queue(cluster):
    """Log pieces are journal records: the candidates' logs are the master's, byte for byte."""
    cl = cluster(candidates=2, min_acks=2)
    job_id = cl.queue.submit_job([delay()])
    for piece in (b"first line\n", b"\xff binary \x00 bytes\n", b"last"):
        _append_log(cl.queue, job_id, piece)
    expected = b"first line\n\xff binary \x00 bytes\nlast"
    assert _log_bytes(cl.queue, job_id) == expected
    for name in cl.names:
        replica = cl.replicas[name].queue
        assert _log_bytes(replica, job_id) == expected
        assert replica._jobs[job_id].log_bytes == len(expected)


def test_a_masters_extents_reach_the_candidates_as_bytes(cluster):
    """A big piece is an extent in the master's own journal (its bytes only in its log);
    the candidates get the bytes, journaled, and their logs equal the master's."""
    cl = cluster(candidates=2, min_acks=2)
    job_id = cl.queue.submit_job([delay()])
    big = bytes(range(256)) * (EXTENT_MIN // 256 + 1)
    _append_log(cl.queue, job_id, b"small\n")
    _append_log(cl.queue, job_id, big)
    payloads = journal.read_records(os.path.join(cl.queue._dir.path, "journal"))[0]
    assert any(records.is_log_extent(p) for p in payloads)
    for name in cl.names:
        replica = cl.replicas[name].queue
        assert _log_bytes(replica, job_id) == b"small\n" + big
        assert replica._jobs[job_id].log_bytes == len(big) + 6
        theirs = journal.read_records(os.path.join(replica._dir.path, "journal"))[0]
        assert not any(records.is_log_extent(p) for p in theirs)
        assert any(records.is_log_chunk(p) and records.parse_log_chunk(p).data == big
                   for p in theirs)


def test_a_new_candidate_is_resynced_with_the_logs(cluster, tmp_path):
    """A candidate added later gets the jobs by a digest resync, and their logs with them."""
    cl = cluster(candidates=1)
    job_id = cl.queue.submit_job([delay()])
    for number in range(50):
        _append_log(cl.queue, job_id, b"line %d\n" % number)
    late = Replica(str(tmp_path / "late"), known_epoch=1, checkpoint_interval=None)
    client = LoopbackClient("master", ReplicaRpc(lambda: late, NodeState(1, "master")), "late")
    try:
        cl.replicator.add_peer("late", client)
        cl.replicator.set_min_acks(2)
        _append_log(cl.queue, job_id, b"after\n")
        assert client.calls["resync_digests"] >= 1
        assert _log_bytes(late.queue, job_id) == _log_bytes(cl.queue, job_id)
        assert _log_bytes(late.queue, job_id).endswith(b"line 49\nafter\n")
    finally:
        cl.replicator.remove_peer("late")
        late.close()


def test_a_resync_cut_short_after_a_jobs_records_brings_its_log_at_the_next(cluster,
                                                                             tmp_path):
    """A master died during a candidate's resync after the job's records reached it,
    before its log's pieces did: the candidate's record counts bytes its log file lacks.
    The next master's resync asks what the file holds, not the record, and sends the rest
    (it sent none: after two failovers a master found its log "gone", kill -9 hunts of
    tests/cluster/test_commands_crash_cluster_e2e.py)."""
    cl = cluster(candidates=1)
    queue = cl.queue
    job_id = queue.submit_job([delay()])
    for number in range(50):
        _append_log(queue, job_id, b"line %d\n" % number)
    with queue._lock:
        batch = queue._record_service_unlocked("web", {"id": 1, "name": "web", "log_bytes": 0})
        queue._record_service_chunk_unlocked("web", 0, 0, b"service line\n")
    batch.wait(10)
    late = Replica(str(tmp_path / "late"), known_epoch=1, checkpoint_interval=None)
    late.resync_apply(1, replication._job_records(queue, job_id)
                      + replication.resync_services(queue, {}), [])
    assert late.queue._jobs[job_id].log_bytes == queue._jobs[job_id].log_bytes
    assert _log_bytes(late.queue, job_id) == b""
    client = LoopbackClient("master", ReplicaRpc(lambda: late, NodeState(1, "master")), "late")
    try:
        cl.replicator.add_peer("late", client)
        cl.replicator.set_min_acks(2)
        _append_log(queue, job_id, b"after\n")
        assert client.calls["resync_digests"] >= 1
        assert _log_bytes(late.queue, job_id) == _log_bytes(queue, job_id)
        assert _log_bytes(late.queue, job_id).startswith(b"line 0\nline 1\n")
        assert late.queue._service_logs.read(1, 0, 4096) == b"service line\n"
    finally:
        cl.replicator.remove_peer("late")
        late.close()


def test_a_failed_masters_own_log_bytes_are_replaced_when_it_comes_back_a_candidate(
        cluster, tmp_path):
    """A master that failed had written log bytes no candidate acknowledged (a banner of
    its own); the new master wrote others at those offsets. Back as a candidate (its state
    came from no master's stream: position [0, 0, 0]), the job's digest differs from the
    master's, and its log is sent whole: sent from where its copy ended, the copy kept the
    failed master's bytes under the new master's."""
    cl = cluster(candidates=1)
    queue = cl.queue
    job_id = queue.submit_job([delay()])
    for number in range(50):
        _append_log(queue, job_id, b"line %d\n" % number)
    length = queue._jobs[job_id].log_bytes
    late = Replica(str(tmp_path / "late"), known_epoch=1, checkpoint_interval=None)
    late.resync_apply(1, replication._job_records(queue, job_id), [],
                      logs=[[job_id, 0, queue._logs.read(job_id, 0, length)]])
    late.resync_apply(1, [], [], logs=[[job_id, length, b"* FAILED MASTER'S OWN\n"]])
    assert late.position == [0, 0, 0]
    _append_log(queue, job_id, b"after\n")  # the new master's, at the same offset
    client = LoopbackClient("master", ReplicaRpc(lambda: late, NodeState(1, "master")), "late")
    try:
        cl.replicator.add_peer("late", client)
        cl.replicator.set_min_acks(2)
        _append_log(queue, job_id, b"later\n")
        ours = queue._jobs[job_id].log_bytes
        assert late.queue._jobs[job_id].log_bytes == ours
        assert late.queue._logs.read(job_id, 0, ours) == queue._logs.read(job_id, 0, ours)
    finally:
        cl.replicator.remove_peer("late")
        late.close()


def _event_lines(log):
    """(events file, action log) of a jqueue.store.events log, as lists of lines."""
    found = []
    for name in ("events.jsonl", "actions.log"):
        with open(os.path.join(log.directory, name), encoding="utf-8") as stream:
            found.append(stream.read().splitlines())
    return found


def test_a_candidate_whose_events_part_from_the_masters_takes_the_masters(cluster, tmp_path):
    """A failed master's last events that no candidate acknowledged (its journal held
    them, replayed when it came back as a candidate) are not the cluster's: the new
    master's events under the same serials are. The resync finds where the candidate's
    part from the master's and replaces them from there, in its ring and its files (it
    kept its own and missed the master's for good, which it served once master again:
    kill -9 hunts of tests/cluster/test_commands_crash_cluster_e2e.py)."""
    cl = cluster(candidates=1)
    queue = cl.queue
    for number in range(3):
        queue.record_event("UP", node="n%d" % number, kind="node").wait(10)
    ours = queue.read_events(0, limit=None)["events"]
    ghosts = [dict(ours[-1], serial=ours[-1]["serial"] + number, status="GHOST",
                   message="never acknowledged %d" % number) for number in (1, 2)]
    late = Replica(str(tmp_path / "late"), known_epoch=1, checkpoint_interval=None)
    late.resync_apply(1, [records.event_record(e).decode("utf-8") for e in ours + ghosts],
                      [])
    queue.record_event("REAL", node="n9", kind="node").wait(10)  # the first ghost's serial
    client = LoopbackClient("master", ReplicaRpc(lambda: late, NodeState(1, "master")), "late")
    try:
        cl.replicator.add_peer("late", client)
        cl.replicator.set_min_acks(2)
        queue.record_event("AFTER", node="n9", kind="node").wait(10)
        assert client.calls["resync_digests"] >= 1
        theirs = late.queue.read_events(0, limit=None)["events"]
        assert theirs == queue.read_events(0, limit=None)["events"]
        assert [e["status"] for e in theirs] == ["UP", "UP", "UP", "REAL", "AFTER"]
        jsonl, actions = _event_lines(late.queue._events)
        assert [json.loads(line) for line in jsonl] == theirs
        assert actions == [action_line(event) for event in theirs]
        late.close()
        late = Replica(str(tmp_path / "late"), known_epoch=1, checkpoint_interval=None)
        assert late.queue.read_events(0, limit=None)["events"] == theirs  # and reopened
    finally:
        cl.replicator.remove_peer("late")
        late.close()


def test_a_new_candidate_gets_a_service_log_from_where_it_starts(cluster, tmp_path):
    """A service's log whose start moved on (it keeps its end only): a candidate added
    later is sent its bytes from that start, not the dropped ones before it; after a
    checkpoint both copies hold only those on the disk."""
    cl = cluster(candidates=1)
    queue = cl.queue
    with queue._lock:
        queue._record_service_unlocked("web", {"id": 1, "name": "web", "log_bytes": 0})
        for number in range(2000):
            queue._record_service_chunk_unlocked("web", 0, 0, b"line %05d\n" % number)
        record = queue._services.get("web")
        batch = queue._record_service_unlocked("web", dict(record, log_start=16500))
    batch.wait(10)
    late = Replica(str(tmp_path / "late"), known_epoch=1, checkpoint_interval=None)
    client = LoopbackClient("master", ReplicaRpc(lambda: late, NodeState(1, "master")), "late")
    try:
        cl.replicator.add_peer("late", client)
        cl.replicator.set_min_acks(2)
        with queue._lock:
            batch = queue._record_service_chunk_unlocked("web", 0, 0, b"after\n")
        batch.wait(10)
        assert client.calls["resync_digests"] >= 1
        kept = queue._service_logs.read(1, 16500, 1 << 20)
        assert kept.startswith(b"line 01500\n") and kept.endswith(b"line 01999\nafter\n")
        copy = late.queue._service_logs
        assert copy.size(1) == 22006 and copy.read(1, 16500, 1 << 20) == kept
        assert copy.read(1, 0, 4096) == bytes(4096)  # never sent
        queue.checkpoint()
        late.queue.checkpoint()
        for logs in (queue._service_logs, copy):
            assert os.stat(logs.file_path(1)).st_blocks * 512 <= 8192
            assert logs.read(1, 16500, 1 << 20) == kept
    finally:
        cl.replicator.remove_peer("late")
        late.close()


@contextlib.contextmanager
def _resynced_while_awaiting_acks(cl, tmp_path, change):
    """change() made in a thread while c1 acknowledges nothing (until the block ends), its
    batch awaiting its acknowledgement when a new candidate's resync starts; the block
    gets that candidate's replica once its resync acknowledged the change."""
    c1, gate = cl.clients["c1"], threading.Event()
    forward = c1.call

    def held(method, body):  # c1 acknowledges nothing until the gate opens
        if method == "replicate":
            gate.wait(10)
        return forward(method, body)

    c1.call = held
    sequenced = cl.replicator._seq
    changing = threading.Thread(target=change)
    changing.start()
    late = Replica(str(tmp_path / "late"), known_epoch=1, checkpoint_interval=None)
    client = LoopbackClient("master", ReplicaRpc(lambda: late, NodeState(1, "master")), "late")
    try:
        _wait_for(lambda: cl.replicator._seq > sequenced)
        cl.replicator.add_peer("late", client)
        changing.join(10)  # acknowledged by the late candidate's resync
        assert not changing.is_alive()
        yield late
    finally:
        gate.set()
        changing.join(10)
        cl.replicator.remove_peer("late")
        late.close()


def test_a_candidate_resynced_while_a_log_piece_awaits_its_acks_gets_the_piece(
        cluster, tmp_path):
    """A log piece journaled, not acknowledged yet, when a new candidate's resync starts:
    the resync's position covers it (and acknowledges it), so the resync must carry its
    bytes. It carried the acknowledged length only: the candidate missed the piece for
    good, although its batch counted the candidate's acknowledgement."""
    cl = cluster(candidates=1, min_acks=1)
    job_id = cl.queue.submit_job([delay()])
    _append_log(cl.queue, job_id, b"before\n")
    with _resynced_while_awaiting_acks(
            cl, tmp_path, lambda: _append_log(cl.queue, job_id, b"after\n")) as late:
        _wait_for(lambda: _log_bytes(late.queue, job_id) == b"before\nafter\n")


def test_a_candidate_resynced_while_an_event_awaits_its_acks_gets_the_event(cluster,
                                                                           tmp_path):
    """The same with an event: journaled, not acknowledged yet (so not in the master's
    ring of durable events) when a new candidate's resync starts, it is acknowledged by
    the resync, which must carry it (it sent the ring's events only)."""
    cl = cluster(candidates=1, min_acks=1)
    queue = cl.queue
    queue.record_event("UP", node="n1", kind="node").wait(10)
    with _resynced_while_awaiting_acks(cl, tmp_path, lambda: queue.record_event(
            "PENDING", node="n1", kind="node").wait(10)) as late:
        assert [e["status"] for e in late.queue.read_events(0, limit=None)["events"]] == [
            "UP", "PENDING"]


def test_a_batch_the_replicas_disk_refuses_is_not_acknowledged_later(tmp_path):
    """If a candidate's disk refuses a batch, its position stays where it was: the
    master's retry is applied and made durable, not acknowledged as already there."""
    replica = Replica(str(tmp_path / "r"), known_epoch=1, checkpoint_interval=None,
                      retry_interval=0.01)
    record = '{"t":"job","job":{"id":1,"ops":[{"input":{"OP_ID":"OP_TEST_JQUEUE"},' \
             '"status":"queued"}]}}'
    try:
        replica.resync_apply(1, [], [], position=[1, 1, 0])
        faults.inject("journal.write", errno.ENOSPC)
        with pytest.raises(errors.JobQueueError, match="No space"):
            replica.apply_batch(1, 1, 1, 1, [record])
        assert replica.position == [1, 1, 0]
        deadline = time.monotonic() + 10
        while replica.queue.status()["writes"] != "accepted":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert replica.apply_batch(1, 1, 1, 1, [record]) == [1, 1, 1]
    finally:
        faults.clear()
        replica.close()
    reopened = Replica(str(tmp_path / "r"), known_epoch=1, checkpoint_interval=None)
    try:
        assert reopened.position == [1, 1, 1] and list(reopened.queue._jobs) == [1]
    finally:
        reopened.close()
