"""Tests of jqueue.luxi.server: the LUXI protocol over StringTransport, with a fake clock."""

import gc
import logging
import re

import pytest
from conftest import delay, jqop, run_jobs
from fakes_luxi import FakeBackend, FakeReactor, FakeThreadPool
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from jqueue import constants, errors, serializer
from jqueue.luxi import methods
from jqueue.luxi import server as server_mod
from jqueue.luxi.server import LuxiServerFactory, ServerLimits

EOM = b"\x03"
CONFIG = {"master_node": "node1", "cluster_name": "cluster"}


class Conn:
    """A LuxiProtocol on a StringTransport, with helpers to send and read LUXI messages."""

    def __init__(self, factory):
        self.factory = factory
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self._read = 0

    def send(self, method, args, **extra):
        """Send one request (as Ganeti's clients do: with a version and a newline)."""
        request = dict({"method": method, "args": args, "version": 2100000}, **extra)
        self.send_raw(serializer.dumps_bytes(request) + b"\n" + EOM)

    def send_raw(self, data):
        self.proto.dataReceived(data)

    def answers(self):
        """New answers since the last call, as (success, result), after pending callbacks."""
        self.factory.reactor.advance(0)  # the end of the reactor's pass: submissions commit
        wait_durable = getattr(self.factory.backend, "wait_durable", None)
        if wait_durable is not None:
            wait_durable(5)  # submissions are answered from the journal's thread
        self.factory.reactor.run_from_threads()
        data = self.transport.value()[self._read:]
        assert data == b"" or data.endswith(EOM), data
        self._read += len(data)
        return [_parse_response(m) for m in data.split(EOM)[:-1]]

    def call(self, method, args):
        """Send a request and return its one answer."""
        self.send(method, args)
        answers = self.answers()
        assert len(answers) == 1, answers
        return answers[0]

    def lose(self):
        self.proto.connectionLost(Failure(ConnectionDone()))

    @property
    def closed(self):
        return self.transport.disconnecting


def _parse_response(message):
    response = serializer.loads(message)
    assert set(response) == {"success", "result"}, response
    return response["success"], response["result"]


def _watch_timers(reactor):
    """The pending request timeouts (WaitForJobChange's among them) of the fake reactor."""
    return [c for c in reactor.getDelayedCalls()
            if getattr(c.func, "__self__", None).__class__.__name__ == "_LazyTimer"
            and c.func.__self__._expired.__name__ == "_request_due"]


@pytest.fixture
def reactor():
    return FakeReactor()


@pytest.fixture
def pool():
    return FakeThreadPool()


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def make_factory(reactor, pool):
    """Build a factory over a backend with the given limits, fake reactor and pool."""
    def make(backend, **limits):
        return LuxiServerFactory(backend, CONFIG, reactor, limits=ServerLimits(**limits),
                                 threadpool=pool)
    return make


@pytest.fixture
def fake_conn(make_factory, backend):
    return Conn(make_factory(backend))


@pytest.fixture
def queue(open_queue):
    return open_queue()


@pytest.fixture
def conn(make_factory, queue):
    return Conn(make_factory(queue))


# Requests and answers


def test_submit_job_is_answered_with_an_int_id(conn, queue):
    """SubmitJob over the wire creates a job and answers its id as an int."""
    success, job_id = conn.call("SubmitJob", [[delay()]])
    assert success is True and isinstance(job_id, int)
    assert queue.query_jobs([job_id], ["status"]) == [["queued"]]


def test_a_submission_is_answered_before_the_queue_s_bookkeeping_of_it(conn, queue):
    """The reactor's own commit sends the answer as soon as the job is durable; the queue
    then makes it visible and schedules it, before the connection's next request (here
    pipelined with the submission) runs: that request sees the job."""
    listener = queue._journal._on_durable
    sent_before = []

    def on_durable(tags):
        sent_before.append(conn.transport.value().count(EOM))
        listener(tags)

    queue._journal._on_durable = on_durable
    conn.send_raw(b"".join(serializer.dumps_bytes({"method": method, "args": args}) + EOM
                           for method, args in (("SubmitJob", [[delay()]]),
                                                ("QueryJobs", [[], ["id", "status"]]))))
    assert conn.answers() == [(True, 1), (True, [[1, "queued"]])]
    assert sent_before == [1]


def test_answers_carry_no_version_key_and_requests_may_omit_it(conn):
    """A request without version (or without the newline) is answered; answers lack version."""
    conn.send_raw(b'{"method": "QueryConfigValues", "args": [["master_node"]]}' + EOM)
    assert conn.answers() == [(True, ["node1"])]
    assert b"version" not in conn.transport.value()


def test_string_ids_are_answered_as_ints(conn):
    """Ids sent as decimal strings come back as ints."""
    conn.call("SubmitJob", [[delay()]])
    assert conn.call("QueryJobs", [["1"], ["id"]]) == (True, [[1]])


def test_query_answers_ganeti_query_response(conn, queue):
    """Query over the wire answers {"fields": [...], "data": [[[0, value]...]...]}."""
    conn.call("SubmitJob", [[jqop()]])
    conn.call("SubmitJob", [[jqop(fail=True)]])
    run_jobs(queue)
    success, result = conn.call("Query", ["job", ["id", "status"], ["=", "status", "error"]])
    assert success and result["data"] == [[[0, 2], [0, "error"]]]
    assert [f["name"] for f in result["fields"]] == ["id", "status"]


def test_pipelined_requests_run_one_at_a_time_and_are_answered_in_order(fake_conn, pool):
    """Requests sent together are handled strictly in order, one in flight at a time."""
    pool.hold = True
    fake_conn.send_raw(b"".join(serializer.dumps_bytes({"method": "ArchiveJob", "args": [n]})
                                + EOM for n in (1, 2, 3)))
    assert len(pool.held) == 1
    for expected in (1, 2, 3):
        assert fake_conn.answers() == []
        pool.run_held(1)
        assert fake_conn.answers() == [(True, True)]
        assert fake_conn.factory.backend.calls[-1] == ("archive_job", expected)


def test_errors_and_results_of_pipelined_requests_keep_their_order(fake_conn, pool):
    """An immediate error answer waits behind the request in flight before it."""
    pool.hold = True
    fake_conn.send("ArchiveJob", [1])
    fake_conn.send("Nope", [])
    fake_conn.send("ArchiveJob", [2])
    pool.run_held(1)
    answers = fake_conn.answers()
    assert answers[0] == (True, True)
    assert answers[1][1][0] == "RequestError"
    pool.run_held()
    assert answers[2:] + fake_conn.answers() == [(True, True)]


def test_too_many_pipelined_requests_get_an_error_and_close(make_factory, backend, pool):
    """Beyond max_pipelined waiting requests, the next is refused and the connection closes."""
    conn = Conn(make_factory(backend, max_pipelined=2))
    pool.hold = True
    for n in range(5):
        conn.send("ArchiveJob", [n])
    assert len(pool.held) == 1 and not conn.closed
    answers = []
    while pool.run_held():
        answers.extend(conn.answers())
    assert answers[:3] == [(True, True)] * 3
    assert answers[3] == (False, ["ProtocolError", ["more than 2 pipelined requests"]])
    assert len(answers) == 4 and conn.closed
    assert [c[1] for c in backend.calls] == [0, 1, 2]


# Hostile input


def test_oversized_message_gets_an_error_then_the_connection_closes(make_factory, backend):
    """A message growing beyond max_message_bytes is answered with ProtocolError, then closed."""
    conn = Conn(make_factory(backend, max_message_bytes=64))
    conn.send_raw(b'{"method": "ArchiveJob", "args": [')
    conn.send_raw(b"1," * 20)
    assert conn.answers() == [(False, ["ProtocolError", ["message exceeds 64 bytes"]])]
    assert conn.closed and backend.calls == []


def test_oversized_message_is_not_buffered_past_the_limit(make_factory, backend):
    """After an overflow, further data is dropped unread and never answered."""
    conn = Conn(make_factory(backend, max_message_bytes=64))
    conn.send_raw(b"x" * 65)
    assert conn.proto._buffer.buffered == 0
    conn.send_raw(b"y" * 10000 + EOM + b'{"method":"ArchiveJob","args":[1]}' + EOM)
    assert conn.proto._buffer.buffered == 0
    assert len(conn.answers()) == 1 and backend.calls == []


def test_oversized_message_is_refused_only_after_the_answer_in_flight(make_factory, backend,
                                                                       pool):
    """A request in flight before an oversized message is answered first."""
    conn = Conn(make_factory(backend, max_message_bytes=64))
    pool.hold = True
    conn.send("ArchiveJob", [1])
    conn.send_raw(b"z" * 100)
    assert conn.answers() == [] and not conn.closed
    pool.run_held()
    assert conn.answers() == [(True, True),
                              (False, ["ProtocolError", ["message exceeds 64 bytes"]])]
    assert conn.closed


@pytest.mark.parametrize("data, problem", [
    (b'{"method": "ArchiveJob", "args": [1', "not valid JSON"),
    (b'{"method": "ArchiveJob", "args": ["\xff\xfe"]}', "not valid UTF-8"),
    (b'[1, 2]', "must be a JSON object"),
    (b'{"method": "Shutdown", "args": []}', "unknown method 'Shutdown'"),
    (b'{"method": "ArchiveJob", "args": [1, 2]}', "ArchiveJob takes 1 argument"),
    (b'{"method": "ArchiveJob"}', "no 'args'"),
    (b'{"method": "SetDrainFlag", "args": ["yes"]}', "argument 1 \\(flag\\) must be a boolean"),
    (b'{"method": "ArchiveJob", "args": ["../1"]}', "must be a job id .* got '../1'"),
    (b'{"method": "ArchiveJob", "args": [-1]}', "must be a job id .* got -1"),
    (b'{"method": "ArchiveJob", "args": [1.5]}', "must be a job id .* got 1.5"),
    (b'{"method": "ArchiveJob", "args": ["1 "]}', "must be a job id .* got '1 '"),
    (b'{"method": "ArchiveJob", "args": [1000000000000000000000000000000]}',
     "must be a job id .* got 1000000000000000000000000000000"),
    (b'{"method": "CancelJob", "args": ["1/../../etc/passwd"]}', "must be a job id"),
    (b'{"method": "Query", "args": ["job", ["id"], ["~", "id", 1]]}', "unknown operator"),
])
def test_bad_requests_get_an_error_and_the_connection_keeps_working(conn, queue, data,
                                                                    problem):
    """Malformed or hostile requests are answered with an error naming the problem."""
    conn.send_raw(data + b"\n" + EOM)
    [(success, result)] = conn.answers()
    assert success is False
    assert result[0] in ("RequestError", "QueryFilterParseError")
    assert re.search(problem, result[1][0]), result
    assert not conn.closed
    assert conn.call("SubmitJob", [[delay()]]) == (True, 1)


def test_hostile_input_changes_no_state(conn, queue, tmp_path):
    """Refused requests create, cancel and archive nothing."""
    conn.call("SubmitJob", [[delay()]])
    for bad in ("../1", -1, 1.5, "1 ", 10 ** 30):
        assert conn.call("CancelJob", [bad])[0] is False
        assert conn.call("ArchiveJob", [bad])[0] is False
    assert queue.query_jobs([1], ["status"]) == [["queued"]]
    assert conn.call("SubmitJob", [[delay()]]) == (True, 2)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([
    EOM, b'{"method":"ArchiveJob","args":[1]}', b'{"method":"WaitForJobChange","args":',
    b'[1,["id"],null,null,5]}', b'"\xff"', b"\n", b"[]", b"{}"])), max_size=12))
def test_random_bytes_never_crash_and_every_answer_is_a_response(chunks):
    """Whatever bytes arrive, the server answers well-formed responses or closes."""
    backend = FakeBackend()
    reactor = FakeReactor()
    factory = LuxiServerFactory(backend, CONFIG, reactor,
                                limits=ServerLimits(max_message_bytes=100, max_pipelined=3),
                                threadpool=FakeThreadPool())
    conn = Conn(factory)
    for chunk in chunks:
        conn.send_raw(chunk)
        conn.answers()
    reactor.advance(1000)
    conn.answers()
    for watch in backend.watches:
        assert watch.canceled


# Timeouts


def test_half_sent_message_is_closed_after_the_read_timeout(make_factory, backend, reactor):
    """A message left unfinished for read_timeout seconds closes the connection."""
    conn = Conn(make_factory(backend, read_timeout=30, idle_timeout=600))
    conn.send_raw(b'{"method": "ArchiveJob"')
    reactor.advance(29)
    assert not conn.closed
    reactor.advance(1)
    assert conn.closed and conn.answers() == []


def test_trickling_data_does_not_extend_the_read_timeout(make_factory, backend, reactor):
    """The read timeout counts from the start of the message, not from the last byte."""
    conn = Conn(make_factory(backend, read_timeout=30))
    for _ in range(29):
        conn.send_raw(b" ")
        reactor.advance(1)
    assert not conn.closed
    conn.send_raw(b" ")
    reactor.advance(1)
    assert conn.closed


def test_completed_message_stops_the_read_timer(make_factory, backend, reactor):
    """Finishing the message in time cancels the read timeout."""
    conn = Conn(make_factory(backend, read_timeout=30, idle_timeout=600))
    conn.send_raw(b'{"method": "ArchiveJob", ')
    reactor.advance(20)
    conn.send_raw(b'"args": [1]}' + EOM)
    reactor.advance(20)
    assert conn.answers() == [(True, True)] and not conn.closed


def test_read_timeout_answers_the_request_in_flight_before_closing(make_factory, backend,
                                                                    reactor, pool):
    """A well-formed request in flight is answered even if the next message times out."""
    conn = Conn(make_factory(backend, read_timeout=30))
    pool.hold = True
    conn.send("ArchiveJob", [1])
    conn.send_raw(b'{"method"')
    reactor.advance(30)
    assert not conn.closed
    pool.run_held()
    assert conn.answers() == [(True, True)]
    assert conn.closed


def test_idle_connection_is_closed_after_the_idle_timeout(make_factory, backend, reactor):
    """A connection with nothing in flight and nothing buffered closes after idle_timeout."""
    conn = Conn(make_factory(backend, idle_timeout=600))
    reactor.advance(599)
    assert not conn.closed
    reactor.advance(1)
    assert conn.closed


def test_each_request_restarts_the_idle_timer(make_factory, backend, reactor):
    """The idle timeout counts from the last answer."""
    conn = Conn(make_factory(backend, idle_timeout=600))
    reactor.advance(500)
    assert conn.call("ArchiveJob", [1]) == (True, True)
    reactor.advance(500)
    assert not conn.closed
    reactor.advance(100)
    assert conn.closed


def test_a_pending_wait_is_not_idle(make_factory, backend, reactor):
    """A connection whose WaitForJobChange is pending is not closed as idle."""
    conn = Conn(make_factory(backend, idle_timeout=10, max_wait_timeout=60))
    conn.send("WaitForJobChange", [1, ["status"], None, None, 60])
    reactor.advance(59)
    assert not conn.closed and conn.answers() == []
    reactor.advance(1)
    assert conn.answers() == [(True, "nochange")] and not conn.closed
    reactor.advance(9.9)  # idle from the answer on: the whole timeout again
    assert not conn.closed
    reactor.advance(0.1)
    assert conn.closed


def test_a_connection_idle_busy_and_idle_again_gets_the_whole_timeout(make_factory, backend,
                                                                    reactor):
    """The idle timer started first does not close a connection that was busy since."""
    conn = Conn(make_factory(backend, idle_timeout=10, max_wait_timeout=60))
    reactor.advance(6)
    conn.send("WaitForJobChange", [1, ["status"], None, None, 2])
    reactor.advance(2)  # answered at 8: idle since then
    assert conn.answers() == [(True, "nochange")]
    reactor.advance(9.9)
    assert not conn.closed
    reactor.advance(0.1)
    assert conn.closed


# WaitForJobChange


def test_wait_is_answered_when_the_job_changes(conn, queue, reactor):
    """A waiter is answered, through the reactor, once the job's change is durable."""
    job_id = conn.call("SubmitJob", [[jqop(log_messages=["hello"])]])[1]
    conn.send("WaitForJobChange", [job_id, ["status"], ["queued"], None, 30])
    assert conn.answers() == [] and queue.stats()["waiters"] == 1
    assert len(_watch_timers(reactor)) == 1
    run_jobs(queue)
    [(success, (job_info, log))] = conn.answers()
    assert success and job_info != ["queued"] and queue.stats()["waiters"] == 0
    reactor.advance(30)  # the lazy timer fires, finds nothing to time out, and is gone
    assert conn.answers() == [] and _watch_timers(reactor) == []


def test_wait_answers_nochange_after_its_timeout_capped(make_factory, queue, reactor):
    """With no change, "nochange" comes after min(timeout, max_wait_timeout); waiter removed."""
    conn = Conn(make_factory(queue, max_wait_timeout=5))
    job_id = conn.call("SubmitJob", [[delay()]])[1]
    conn.send("WaitForJobChange", [job_id, ["status"], ["queued"], None, 100])
    reactor.advance(4.9)
    assert conn.answers() == []
    reactor.advance(0.1)
    assert conn.answers() == [(True, "nochange")]
    assert queue.stats()["waiters"] == 0


def test_wait_on_a_finalized_job_is_answered_at_once(conn, queue):
    """A finished job answers at once even if nothing changed since prev_job_info."""
    job_id = conn.call("SubmitJob", [[delay()]])[1]
    run_jobs(queue)
    assert conn.call("WaitForJobChange", [job_id, ["status"], ["success"], None, 30]) == (
        True, [["success"], []])


def test_wait_for_an_unknown_job_is_job_lost(conn):
    """WaitForJobChange on a job that does not exist answers the JobLost error."""
    success, result = conn.call("WaitForJobChange", [42, ["status"], None, None, 30])
    assert success is False and result[0] == "JobLost" and "42" in result[1][0]
    assert conn.call("QueryJobs", [[42], ["id"]]) == (True, [None])


def test_immediate_watch_answer_leaves_no_timer(fake_conn, backend, reactor):
    """A watch answered synchronously is answered once and sets no timeout."""
    backend.immediate_watch = (["success"], [])
    assert fake_conn.call("WaitForJobChange", [1, ["status"], None, None, 30]) == (
        True, [["success"], []])
    assert _watch_timers(reactor) == []


def test_late_change_after_the_timeout_is_not_answered_twice(fake_conn, backend, reactor):
    """A change reported after "nochange" was sent is dropped, not written to the wire."""
    fake_conn.send("WaitForJobChange", [1, ["status"], None, None, 5])
    reactor.advance(5)
    assert fake_conn.answers() == [(True, "nochange")]
    watch = backend.watches[0]
    assert watch.canceled
    watch.callback((["success"], []))
    assert fake_conn.answers() == []


def test_change_from_another_thread_goes_through_call_from_thread(fake_conn, backend):
    """The watch callback only queues work for the reactor; the answer is written there."""
    fake_conn.send("WaitForJobChange", [1, ["status"], None, None, 5])
    backend.watches[0].callback((["running"], [[1, [0, 0], "message", "x"]]))
    assert fake_conn.transport.value() == b""
    assert fake_conn.answers() == [(True, [["running"], [[1, [0, 0], "message", "x"]]])]


def test_answers_handed_over_wake_the_reactor_once_and_go_out_from_there(make_factory,
                                                                        backend, reactor):
    """The callbacks a durable batch releases (the queue's answer_handoff) reach the
    reactor as one delivery: one wake-up, and there each long poll of this server is
    answered at once (no second trip through the delivery queue); other callbacks are
    called as they are, and one that fails does not keep the others from theirs."""
    factory = make_factory(backend)
    conns = [Conn(factory) for _ in range(3)]
    for conn in conns:
        conn.send("WaitForJobChange", [1, ["status"], None, None, 30])
    others = []

    def failing(result):
        raise RuntimeError("a bad callback")

    ready = [(watch.callback, (["success"], [])) for watch in backend.watches]
    factory.hand_over([ready[0], (others.append, "event"), (failing, None)] + ready[1:])
    assert [conn.transport.value() for conn in conns] == [b""] * 3
    assert reactor.run_from_threads() == 1
    assert reactor.run_from_threads() == 0  # nothing was queued a second time
    assert [conn.answers() for conn in conns] == [[(True, [["success"], []])]] * 3
    assert others == ["event"]
    assert all(watch.canceled for watch in backend.watches)


def test_a_burst_of_answers_is_sent_before_the_collector_runs_again(make_factory, backend,
                                                                    reactor):
    """From the hand-over of a burst of answers (BULK_DELIVERIES or more) to the end of
    the reactor's run that sends them, the cyclic collector is paused; a few answers do
    not pause it."""
    factory = make_factory(backend)
    for count, paused in ((server_mod.BULK_DELIVERIES, True), (3, False)):
        conns = [Conn(factory) for _ in range(count)]
        for conn in conns:
            conn.send("WaitForJobChange", [1, ["status"], None, None, 30])
        enabled = []
        last = conns[-1].transport
        last.write = lambda data, write=last.write, enabled=enabled: (
            enabled.append(gc.isenabled()), write(data))
        factory.hand_over([(watch.callback, (["success"], [])) for watch in backend.watches])
        backend.watches.clear()
        assert gc.isenabled() is not paused
        assert reactor.run_from_threads() == 1
        assert enabled == [not paused]  # the last answer is sent with the collector off
        assert gc.isenabled()
        assert [conn.answers() for conn in conns] == [[(True, [["success"], []])]] * count


def test_a_queue_hands_its_answers_over_in_one_delivery(make_factory, queue, reactor):
    """The factory makes itself the queue's answer_handoff: every waiter of a job ending
    is answered from one wake-up of the reactor."""
    factory = make_factory(queue)
    assert queue.answer_handoff == factory.hand_over
    conns = [Conn(factory) for _ in range(4)]
    job_id = conns[0].call("SubmitJob", [[delay()]])[1]
    for conn in conns:
        conn.send("WaitForJobChange", [job_id, ["status"], ["queued"], None, 30])
    run_jobs(queue)
    queue.wait_durable(5)
    assert reactor.run_from_threads() == 1
    assert all(len(conn.answers()) == 1 for conn in conns)


def test_lost_connection_cancels_a_pending_wait(fake_conn, backend, reactor):
    """A client leaving while it waits withdraws the waiter and its timer."""
    fake_conn.send("WaitForJobChange", [1, ["status"], None, None, 30])
    fake_conn.lose()
    assert backend.watches[0].canceled
    assert reactor.getDelayedCalls() == []
    backend.watches[0].callback((["success"], []))
    reactor.run_from_threads()
    assert fake_conn.transport.value() == b""


def test_lost_connection_removes_the_waiter_from_a_real_queue(conn, queue):
    """The queue forgets the waiter of a client that disconnected."""
    job_id = conn.call("SubmitJob", [[delay()]])[1]
    conn.send("WaitForJobChange", [job_id, ["status"], ["queued"], None, 30])
    assert queue.stats()["waiters"] == 1
    conn.lose()
    assert queue.stats()["waiters"] == 0


def test_lost_connection_mid_request_drops_the_late_answer(fake_conn, pool, backend):
    """A blocking call finishing after its client left writes nothing and raises nothing."""
    pool.hold = True
    fake_conn.send("ArchiveJob", [1])
    fake_conn.send("ArchiveJob", [2])
    fake_conn.lose()
    pool.run_held()
    assert fake_conn.answers() == []
    assert [c[1] for c in backend.calls] == [1]


# Backend errors


def test_jqueue_errors_are_answered_as_themselves(fake_conn, backend):
    """A GenericError subclass from the backend crosses the wire by class name."""
    backend.failures["submit_job"] = errors.JobQueueFull("job queue is full")
    assert fake_conn.call("SubmitJob", [[delay()]]) == (
        False, ["JobQueueFull", ["job queue is full"]])


def test_other_exceptions_are_logged_and_answered_as_internal_errors(fake_conn, backend,
                                                                      caplog):
    """A bug in the backend is logged with its traceback and answered, never dropped."""
    backend.failures["archive_job"] = KeyError("boom")
    with caplog.at_level(logging.ERROR, logger="jqueue.luxi.server"):
        assert fake_conn.call("ArchiveJob", [1]) == (
            False, ["ProgrammerError", ["internal error: KeyError: 'boom'"]])
    assert "Traceback" in caplog.text and "ArchiveJob" in caplog.text
    assert fake_conn.call("ArchiveJob", [2]) == (False, ["ProgrammerError",
                                                         ["internal error: KeyError: 'boom'"]])


def test_bug_in_watch_job_is_an_internal_error(fake_conn, backend, caplog):
    """An unexpected exception from watch_job is answered as an internal error."""
    backend.failures["watch_job"] = RuntimeError("oops")
    with caplog.at_level(logging.ERROR, logger="jqueue.luxi.server"):
        assert fake_conn.call("WaitForJobChange", [1, ["id"], None, None, 1]) == (
            False, ["ProgrammerError", ["internal error: RuntimeError: oops"]])
    assert "Traceback" in caplog.text


def test_bug_in_the_dispatcher_is_answered_not_stranded(fake_conn, monkeypatch, caplog):
    """An unexpected exception while starting a request still answers it, and goes on."""
    def broken(method, args):
        raise RuntimeError("dispatcher bug")

    monkeypatch.setattr(server_mod.methods, "check_request", broken)
    with caplog.at_level(logging.ERROR, logger="jqueue.luxi.server"):
        assert fake_conn.call("ArchiveJob", [1]) == (
            False, ["ProgrammerError", ["internal error: RuntimeError: dispatcher bug"]])
    assert "dispatcher bug" in caplog.text
    monkeypatch.undo()
    assert fake_conn.call("ArchiveJob", [1]) == (True, True)


def test_unencodable_result_is_answered_as_an_internal_error(fake_conn, backend, caplog):
    """A result JSON cannot hold is replaced by an error answer instead of breaking."""
    backend.results["query_jobs"] = [[object()]]
    with caplog.at_level(logging.ERROR, logger="jqueue.luxi.server"):
        success, result = fake_conn.call("QueryJobs", [[1], ["id"]])
    assert success is False and result[0] == "ProgrammerError"
    assert "cannot encode" in result[1][0]


# Graceful shutdown


@pytest.mark.parametrize("method, args", [("SubmitJob", [[{"OP_ID": "OP_TEST_DELAY"}]]),
                                          ("SubmitJobToDrainedQueue", [[]]),
                                          ("SubmitManyJobs", [[[]]])])
def test_no_submissions_after_stop_accepting(fake_conn, backend, method, args):
    """After stop_accepting_submissions, submissions are refused; other calls still work."""
    fake_conn.factory.stop_accepting_submissions()
    assert fake_conn.call(method, args) == (False, ["JobQueueError", ["daemon is shutting down"]])
    assert backend.calls == []
    assert fake_conn.call("ArchiveJob", [1]) == (True, True)


def test_answer_waiters_and_close(make_factory, backend, pool):
    """Shutdown answers waiters with "nochange" and closes each connection once answered."""
    factory = make_factory(backend)
    waiting, idle, busy = Conn(factory), Conn(factory), Conn(factory)
    waiting.send("WaitForJobChange", [1, ["status"], None, None, 30])
    pool.hold = True
    busy.send("ArchiveJob", [1])
    factory.answer_waiters_and_close()
    assert waiting.answers() == [(True, "nochange")] and waiting.closed
    assert backend.watches[0].canceled
    assert idle.closed
    assert not busy.closed
    pool.run_held()
    assert busy.answers() == [(True, True)] and busy.closed
    late = Conn(factory)
    assert late.closed


class _PendingBatch:
    """A submission's batch, acknowledged when the test says so."""

    error = ticket = None

    def __init__(self):
        self.callbacks = []

    def add_done_callback(self, callback):
        self.callbacks.append(callback)

    def acknowledge(self):
        for callback in self.callbacks:
            callback(self)


class _AckingBackend(FakeBackend):
    """A backend whose submissions wait for an acknowledgement, with a timeout."""

    ack_timeout = 30

    def submit_job_nowait(self, ops, *args, **kwargs):
        self.batch = _PendingBatch()
        return super().submit_job_nowait(ops, *args, **kwargs)[0], self.batch


def test_shutdown_lets_a_submit_awaiting_its_ack_finish(make_factory, reactor):
    """A graceful stop does not take a submission waiting for its acknowledgement for a
    long poll: it is answered when acknowledged, then its connection closes."""
    backend = _AckingBackend()
    factory = make_factory(backend)
    conn = Conn(factory)
    conn.send("SubmitJob", [[jqop()]])
    assert conn.answers() == []
    factory.answer_waiters_and_close()
    assert conn.answers() == [] and not conn.closed
    backend.batch.acknowledge()
    assert conn.answers() == [(True, 1)] and conn.closed


def test_wait_during_shutdown_is_answered_at_once(make_factory, backend, reactor):
    """A WaitForJobChange already queued when shutdown began gets "nochange" promptly."""
    factory = make_factory(backend)
    conn = Conn(factory)
    factory.stopping = True
    conn.send("WaitForJobChange", [1, ["status"], None, None, 30])
    reactor.advance(0)
    assert conn.answers() == [(True, "nochange")]


# Limits on connections and flow control


def test_connections_beyond_max_connections_are_refused(make_factory, backend, reactor, caplog):
    """Past max_connections, buildProtocol refuses (closing the socket); the log is rate-limited."""
    factory = make_factory(backend, max_connections=2)
    first, _second = Conn(factory), Conn(factory)
    with caplog.at_level(logging.WARNING, logger="jqueue.luxi.server"):
        assert factory.buildProtocol(None) is None
        assert factory.buildProtocol(None) is None
        assert caplog.text.count("refused") == 1
        reactor.advance(60)
        assert factory.buildProtocol(None) is None
        assert caplog.text.count("refused") == 2
    first.lose()
    assert Conn(factory).call("ArchiveJob", [1]) == (True, True)


def test_a_client_not_reading_its_answers_stops_the_connection_working(fake_conn, backend):
    """When the transport asks to pause, no new request starts until it resumes."""
    fake_conn.proto.pauseProducing()
    fake_conn.send("ArchiveJob", [1])
    assert backend.calls == [] and fake_conn.transport.producerState == "paused"
    fake_conn.proto.resumeProducing()
    assert fake_conn.answers() == [(True, True)]


def test_a_client_that_never_reads_is_aborted_after_the_idle_timeout(make_factory, backend,
                                                                     reactor):
    """A connection paused for idle_timeout (the client reads nothing) is aborted."""
    conn = Conn(make_factory(backend, idle_timeout=10))
    conn.send("ArchiveJob", [1])
    conn.proto.pauseProducing()
    conn.send("ArchiveJob", [2])
    reactor.advance(10)
    assert conn.transport.disconnecting


# Factory


def test_factory_starts_and_stops_the_pool_it_owns(reactor, backend):
    """Without an injected pool, the factory's own pool follows startFactory/stopFactory."""
    factory = LuxiServerFactory(backend, CONFIG, reactor)
    assert isinstance(factory.threadpool, ThreadPool)
    assert factory.threadpool.max == constants.LUXI_THREADS
    factory.doStart()
    assert factory.threadpool.started
    factory.doStop()
    assert not factory.threadpool.started


def test_factory_leaves_an_injected_pool_alone(reactor, backend, pool):
    """An injected pool is started and stopped by its owner, not by the factory."""
    factory = LuxiServerFactory(backend, CONFIG, reactor, threadpool=pool)
    factory.doStart()
    assert not pool.started


def test_server_limits_have_documented_defaults_and_refuse_nonsense():
    """ServerLimits defaults match the contract; zero or negative bounds are refused."""
    limits = ServerLimits()
    assert (limits.max_message_bytes, limits.read_timeout, limits.idle_timeout,
            limits.max_connections, limits.max_wait_timeout, limits.max_pipelined,
            limits.threads) == (16 * 1024 * 1024, 30, 600, 10000, 60, 64, 16)
    with pytest.raises(ValueError):
        ServerLimits(max_message_bytes=0)
    with pytest.raises(ValueError):
        ServerLimits(read_timeout=-1)


def test_big_submissions_are_validated_in_the_pool_small_ones_at_once(conn, pool, queue):
    """Up to INLINE_SUBMIT_OPCODES opcodes a submission needs no pool thread; above, it does."""
    pool.hold = True
    small = [[delay()] for _ in range(server_mod.INLINE_SUBMIT_OPCODES)]
    assert conn.call("SubmitManyJobs", [small])[0] is True
    assert len(pool.held) == 0
    big = [[delay()] for _ in range(server_mod.INLINE_SUBMIT_OPCODES + 1)]
    conn.send("SubmitManyJobs", [big])
    assert conn.answers() == [] and len(pool.held) == 1
    pool.run_held()
    (success, results), = conn.answers()
    assert success is True and len(results) == len(big)
    assert len(queue.query_jobs([], ["id"])) == len(small) + len(big)


def test_bulk_reads_run_and_encode_without_the_cyclic_collector(monkeypatch):
    """Query and QueryJobs (10^5 rows) are answered with the collector paused, which
    resumes after; other methods run with it as usual."""
    seen = []

    class Dispatcher:
        def run(self, spec, args):
            seen.append((spec.name, gc.isenabled()))
            return [[1, "queued"]]
    assert gc.isenabled()
    for name in (constants.LUXI_REQ_QUERY, constants.LUXI_REQ_QUERY_JOBS,
                 constants.LUXI_REQ_QUERY_CONFIG_VALUES):
        data = server_mod._run_encoded(Dispatcher(), methods.METHODS[name], [])
        assert serializer.loads(data[:-1]) == {"success": True, "result": [[1, "queued"]]}
        assert gc.isenabled()
    assert seen == [(constants.LUXI_REQ_QUERY, False), (constants.LUXI_REQ_QUERY_JOBS, False),
                    (constants.LUXI_REQ_QUERY_CONFIG_VALUES, True)]
