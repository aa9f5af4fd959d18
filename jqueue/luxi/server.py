"""The LUXI server: one Twisted protocol per Unix-socket connection, and their factory.

Requests on a connection are answered strictly in order: while one is in flight, the
next complete messages wait in a short per-connection queue. Blocking queue calls run
in the factory's thread pool; WaitForJobChange costs no thread (the queue calls back
when the job changed, from any thread, and a reactor timer answers "nochange").

Hostile or broken clients get an error answer or a closed connection, never a crash:
oversized messages, half-sent messages (read timeout), idle connections, too many
pipelined requests and too many connections are all bounded by ServerLimits. A
well-formed request is never dropped unanswered, since Ganeti's clients resend those.
"""

import collections
import functools
import logging
import threading
import traceback

import attrs
from twisted.internet import interfaces, protocol, threads
from twisted.python import threadpool as twisted_threadpool
from zope.interface import implementer

from jqueue import connlimit, constants, errors, serializer
from jqueue.luxi import framing, methods

logger = logging.getLogger(__name__)

_positive = attrs.validators.gt(0)


@attrs.frozen
class ServerLimits:
    """Bounds on what one client (or all of them) may cost the daemon."""

    #: Longest request message in bytes; a longer one is answered with an error and closed.
    max_message_bytes: int = attrs.field(default=constants.LUXI_MAX_MESSAGE_BYTES,
                                         validator=_positive)
    #: Seconds a half-received message may take before the connection is closed.
    read_timeout: float = attrs.field(default=constants.LUXI_READ_TIMEOUT, validator=_positive)
    #: Seconds a connection may sit with no request in flight and nothing buffered.
    idle_timeout: float = attrs.field(default=constants.LUXI_IDLE_TIMEOUT, validator=_positive)
    #: Open connections; more are closed at once.
    max_connections: int = attrs.field(default=constants.LUXI_MAX_CONNECTIONS,
                                       validator=_positive)
    #: Cap on the timeout of one WaitForJobChange call, in seconds.
    max_wait_timeout: float = attrs.field(default=constants.LUXI_MAX_WAIT_TIMEOUT,
                                          validator=attrs.validators.ge(0))
    #: Requests waiting per connection behind the one in flight.
    max_pipelined: int = attrs.field(default=constants.LUXI_MAX_PIPELINED, validator=_positive)
    #: Threads of the pool the factory creates for blocking queue calls.
    threads: int = attrs.field(default=constants.LUXI_THREADS, validator=_positive)


class _Fatal:
    """A queue entry: answer this error, then close the connection."""

    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


class _Request:
    """The request in flight on a connection (its identity guards late answers)."""

    __slots__ = ("method", "handle", "deadline", "expire", "watch", "args")

    def __init__(self):
        self.method = None
        self.handle = None
        self.deadline = None    # reactor time at which expire(request) is called
        self.expire = None
        self.watch = None   # a long poll: the Method.watch kind (see jqueue.luxi.methods)
        self.args = None


@implementer(interfaces.IPushProducer)
class LuxiProtocol(protocol.Protocol):
    """One LUXI connection: framing, in-order dispatch, timeouts and flow control.

    It registers itself as the producer of its transport's writes: when a client does
    not read its answers, no further request is started and reading stops.
    """

    def __init__(self, factory):
        self.factory = factory
        self._limits = factory.limits
        self._reactor = factory.reactor
        self._buffer = framing.MessageBuffer(self._limits.max_message_bytes)
        self._pending = collections.deque()
        self._current = None
        self._processing = False
        self._closing = False
        self._closed = False
        self._lost = False
        self._write_paused = False
        self._read_timer = None
        self._idle_since = None     # when the connection last became idle (or paused)
        self._idle_timer = _LazyTimer(self._reactor, self._idle_deadline, self._idle_timed_out)
        self._request_timer = _LazyTimer(self._reactor, self._request_deadline,
                                         self._request_due)

    # Connection events

    def connectionMade(self):
        self.transport.registerProducer(self, True)
        self.factory.connection_made(self)
        self._update_timers()

    def dataReceived(self, data):
        if self._closing or self._closed or self._lost:
            return
        completed = False
        try:
            for message in self._buffer.feed(data):
                completed = True
                if not self._enqueue(message):
                    break
        except errors.ProtocolError as err:
            self._fail(err)
        if completed:
            self._cancel_read_timer()
        self._process()

    def connectionLost(self, reason=protocol.connectionDone):
        self._lost = True
        self._cancel_timers()
        request, self._current = self._current, None
        if request is not None:
            self._end_watch(request)
        self._pending.clear()
        self.factory.connection_lost(self)

    # Flow control (IPushProducer, called by the transport)

    def pauseProducing(self):
        """The transport holds too much unsent data: start nothing, read nothing."""
        self._write_paused = True
        self.transport.pauseProducing()
        self._update_timers()

    def resumeProducing(self):
        """The client read its answers: go on."""
        self._write_paused = False
        if not self._closing:
            self.transport.resumeProducing()
        self._process()

    def stopProducing(self):
        """The connection is going away; connectionLost does the cleaning."""

    # Queueing and dispatch

    def _enqueue(self, message):
        if self._closed:
            return False
        if len(self._pending) >= self._limits.max_pipelined:
            self._fail(errors.ProtocolError("more than %d pipelined requests" %
                                            self._limits.max_pipelined))
            return False
        self._pending.append(message)
        self._process()
        return True

    def _fail(self, error):
        """Read nothing more; answer what came before, then error, then close."""
        logger.warning("closing a LUXI connection: %s", error)
        self._closing = True
        self._buffer = framing.MessageBuffer(0)
        self._cancel_read_timer()
        self._pending.append(_Fatal(error))
        self.transport.pauseProducing()

    def _process(self):
        if self._processing:
            return
        self._processing = True
        try:
            while (self._current is None and self._pending and not self._write_paused
                   and not self._lost and not self._closed):
                try:
                    self._start(self._pending.popleft())
                except Exception as err:  # noqa: BLE001 - a bug must not strand the request
                    self._internal_error(self._current, err)
        finally:
            self._processing = False
        self._update_timers()

    def _start(self, item):
        if isinstance(item, _Fatal):
            self._write_response(False, errors.encode_exception(item.error))
            self._close()
            return
        request = self._current = _Request()
        message, item = item, None  # once parsed, the raw bytes are freed at once
        try:
            method, args = framing.parse_request(message)
            message = None
            request.method = method
            spec, checked = methods.check_request(method, args)
        except errors.GenericError as err:
            logger.debug("refused LUXI request: %s", err)
            self._finish(request, False, errors.encode_exception(err))
            return
        if spec.name in constants.LUXI_REQ_SUBMISSIONS and not self.factory.accepting:
            self._finish(request, False, errors.encode_exception(
                errors.JobQueueError("daemon is shutting down")))
        elif spec.name in _SUBMITTERS:
            self._start_submit(request, spec, checked)
        elif spec.watch:
            self._start_watch(request, spec, checked)
        else:
            self._start_call(request, spec, checked)

    def _start_call(self, request, spec, args):
        # The pool thread also encodes the answer: a listing of 10^5 jobs is megabytes of
        # JSON, which must not hold up every other client in the reactor.
        deferred = threads.deferToThreadPool(self._reactor, self.factory.threadpool,
                                             _run_encoded, self.factory.dispatcher, spec,
                                             args)
        deferred.addCallbacks(lambda data: self._finish_encoded(request, data),
                              lambda failure: self._finish_failure(request, failure))
        deferred.addErrback(lambda failure: self._internal_error(request, failure.value))

    def _start_submit(self, request, spec, args):
        """Record a submission in this thread; answer once it is durable (no pool thread).

        The queue never holds its lock across I/O, so recording is quick. The records of
        one pass over the sockets are committed at its end (commit_soon): by this thread
        when the journal is idle, else by the journal's committer. The answer comes once
        the batch is acknowledged (from this thread after its own commit, else from the
        journal's), or as the batch's ReplicationError when the acknowledgement timeout
        passes first. A submission of
        more than INLINE_SUBMIT_OPCODES opcodes is validated in the pool instead, so that
        one big request cannot stall every other client.
        """
        submit = _SUBMITTERS[spec.name]
        if _opcode_count(spec, args) > INLINE_SUBMIT_OPCODES:
            # A big request validates in the pool: it must not stall the other clients.
            deferred = threads.deferToThreadPool(self._reactor, self.factory.threadpool,
                                                 submit, self.factory.backend, args)
            deferred.addCallbacks(lambda done: self._submitted(request, *done),
                                  lambda failure: self._finish_failure(request, failure))
            deferred.addErrback(lambda failure: self._internal_error(request, failure.value))
            return
        defer = self.factory.defer_commit
        try:
            answer, batch = submit(self.factory.backend, args, **defer)
        except Exception as err:  # noqa: BLE001 - encoded like any backend error
            self._finish(request, False, _encode_error(request.method, err, _traceback_text))
            return
        if defer and batch is not None:
            self.factory.commit_soon()
        self._submitted(request, answer, batch)

    def _submitted(self, request, answer, batch):
        """A submission is recorded: answer now, or once its batch is acknowledged."""
        if request is not self._current:
            return
        if batch is None:
            self._finish(request, True, answer)
            return
        timeout = self.factory.backend.ack_timeout
        if timeout is not None:
            self._expire_at(request, timeout,
                            lambda request: self._submit_timed_out(request, batch, answer))
        batch.add_done_callback(lambda done: self.factory.deliver(
            self._submit_done, request, done, answer))
        self.factory.answer_early(batch, self, request, answer)

    def answer_durable(self, request, answer):
        """The factory's commit made request's batch durable: answer now, but start the
        connection's next request only once the commit has ended (resume)."""
        if request is not self._current:
            return False
        self._end_watch(request)
        self._current = None
        self._write_response(True, answer)
        return True

    def resume(self):
        """Go on with the requests that came after an answer sent by answer_durable."""
        self._process()

    def _submit_done(self, request, batch, answer):
        if request is not self._current:
            return
        self._end_watch(request)
        if batch.error is not None:
            self._finish(request, False, errors.encode_exception(
                _fate(batch.error, answer)))
        else:
            self._finish(request, True, answer)

    def _submit_timed_out(self, request, batch, answer):
        if request is self._current:
            error = batch.ticket.timeout_error() if batch.ticket is not None else (
                errors.JobQueueError("submission not durable within the timeout"))
            self._finish(request, False, errors.encode_exception(_fate(error, answer)))

    def _finish_failure(self, request, failure):
        self._finish(request, False, _encode_error(request.method, failure.value,
                                                   failure.getTraceback))

    def _internal_error(self, request, err):
        """A bug in this module: log it, and answer the request if it is still unanswered."""
        logger.error("LUXI server error while handling %s: %s", getattr(request, "method", None),
                     err, exc_info=err if isinstance(err, BaseException) else None)
        if request is not None:
            self._finish(request, False, ["ProgrammerError", ["internal error: %s: %s" % (
                err.__class__.__name__, err)]])

    def _finish(self, request, success, result):
        """Answer the request in flight (a late answer to a request gone is dropped)."""
        if request is not self._current:
            return
        self._current = None
        self._write_response(success, result)
        self._process()

    def _finish_encoded(self, request, data):
        """Answer the request in flight with an answer already encoded."""
        if request is not self._current:
            return
        self._current = None
        _send(self.transport, data)
        self._process()

    def _write_response(self, success, result):
        _send(self.transport, _encode_answer(success, result))

    # Long polls: WaitForJobChange, ReadJobLog

    def _start_watch(self, request, spec, args):
        timeout = min(spec.timeout_of(args), self._limits.max_wait_timeout)
        if self.factory.stopping:
            timeout = 0
        request.watch, request.args = spec.watch, args
        dispatcher = self.factory.dispatcher

        def callback(result):  # any thread
            self.factory.deliver(self._watch_answered, request, result)

        callback.in_reactor = functools.partial(self._watch_answered, request)  # hand_over

        try:
            request.handle = getattr(dispatcher, "watch_" + spec.watch)(args, callback)
        except Exception as err:  # noqa: BLE001 - encoded like any backend error
            self._finish(request, False, _encode_error(request.method, err, _traceback_text))
            return
        if request.handle is not None:
            self._expire_at(request, timeout, self._watch_timed_out)

    def _watch_answered(self, request, result):
        """Send a long poll's answer now; the rest waits for the end of the delivery run
        (factory.after_deliveries), so that thousands of waiters answered at once hear
        it after as few instructions as can be: the last one is not kept waiting behind
        every other connection's bookkeeping."""
        if request is not self._current:
            return
        try:
            data = self.factory.encoded_answer(request.watch, result)
        except Exception as err:  # noqa: BLE001 - a bad callback value is a bug, not a crash
            self._end_watch(request)
            self._finish(request, False, _encode_error(request.method, err, _traceback_text))
            return
        self._current = None  # answered: a late second answer is dropped
        _send(self.transport, data)
        self.factory.after_deliveries(self._watch_sent, request)

    def _watch_sent(self, request):
        self._end_watch(request)
        self._process()

    def _watch_timed_out(self, request):
        if request is not self._current:
            return
        self._end_watch(request)
        self._finish(request, True, getattr(self.factory.dispatcher,
                                            "nochange_" + request.watch)(request.args))

    def _end_watch(self, request):
        """Drop the request's deadline and withdraw its waiter, if any."""
        request.deadline = request.expire = None
        handle, request.handle = request.handle, None
        if handle is not None:
            try:
                handle.cancel()
            except Exception:  # noqa: BLE001 - the connection goes on
                logger.exception("canceling a job watch failed")

    def answer_waiter(self):
        """Answer a pending WaitForJobChange with "nochange" now (graceful shutdown)."""
        request = self._current
        if request is not None and request.watch is not None and (
                request.deadline is not None or request.handle is not None):
            self._watch_timed_out(request)
        else:
            self._update_timers()

    # Timers and closing

    def _expire_at(self, request, seconds, expire):
        """Call expire(request) in seconds, unless the request ends first (a request that
        ends only drops its deadline: see _LazyTimer)."""
        request.deadline = self._reactor.seconds() + seconds
        request.expire = expire
        self._request_timer.arm(request.deadline)

    def _request_deadline(self):
        request = self._current
        return None if request is None else request.deadline

    def _request_due(self):
        request = self._current
        expire = request.expire
        request.deadline = request.expire = None
        expire(request)

    def _update_timers(self):
        if self._lost or self._closed:
            return
        answered = self._current is None and not self._pending
        idle = answered and not self._buffer.buffered
        if (self._closing and answered) or (idle and self.factory.stopping):
            self._close()
            return
        if self._buffer.buffered and self._read_timer is None:
            self._read_timer = self._reactor.callLater(self._limits.read_timeout,
                                                       self._read_timed_out)
        # A busy connection only forgets when it became idle (see _LazyTimer).
        if idle or self._write_paused:
            if self._idle_since is None:
                self._idle_since = self._reactor.seconds()
            self._idle_timer.arm(self._idle_deadline())
        else:
            self._idle_since = None

    def _read_timed_out(self):
        self._read_timer = None
        logger.info("LUXI client left a message unfinished for %ss; closing",
                    self._limits.read_timeout)
        self._closing = True
        self._buffer = framing.MessageBuffer(0)
        self.transport.pauseProducing()
        self._update_timers()

    def _idle_deadline(self):
        since = self._idle_since
        return None if since is None else since + self._limits.idle_timeout

    def _idle_timed_out(self):
        if self._write_paused:
            logger.warning("LUXI client read no answer for %ss; aborting its connection",
                           self._limits.idle_timeout)
            self._closed = True
            self._cancel_timers()
            self.transport.abortConnection()
            return
        logger.debug("closing LUXI connection idle for %ss", self._limits.idle_timeout)
        self._close()

    def _close(self):
        if self._closed:
            return
        self._closed = True
        self._cancel_timers()
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _cancel_read_timer(self):
        timer, self._read_timer = self._read_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _cancel_timers(self):
        self._cancel_read_timer()
        self._idle_timer.cancel()
        self._request_timer.cancel()


class _LazyTimer:
    """A timer for a deadline that moves all the time, costing the reactor one call.

    deadline() says the deadline as things stand (None: none now); arm(when) makes sure
    the call comes by then. When the call comes it asks deadline() again: none, nothing
    is done; later, it waits the rest; reached, expired() is called. So a deadline that
    is dropped or moved later needs no cancel and no new call: thousands of long polls
    answered at once for one event, and asked again, make and cancel no timer.
    """

    __slots__ = ("_reactor", "_deadline", "_expired", "_call")

    def __init__(self, reactor, deadline, expired):
        self._reactor, self._deadline, self._expired = reactor, deadline, expired
        self._call = None

    def arm(self, when):
        call = self._call
        if call is None:
            self._call = self._reactor.callLater(max(0.0, when - self._reactor.seconds()),
                                                 self._fire)
        elif call.getTime() > when:
            call.reset(max(0.0, when - self._reactor.seconds()))

    def cancel(self):
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _fire(self):
        self._call = None
        when = self._deadline()
        if when is None:
            return
        rest = when - self._reactor.seconds()
        if rest > 0:
            self._call = self._reactor.callLater(rest, self._fire)
            return
        self._expired()


class LuxiServerFactory(protocol.Factory):
    """Builds LuxiProtocols over one backend (a jqueue.queue.JobQueue) and thread pool.

    config_values answers QueryConfigValues and cluster serves the cluster methods (see
    methods.Dispatcher). The factory owns a pool of limits.threads threads, started and
    stopped with the factory, unless one is given (then its owner starts and stops it).
    """

    protocol = LuxiProtocol
    noisy = False

    def __init__(self, backend, config_values, reactor, limits=None, threadpool=None,
                 cluster=None):
        self.backend = backend
        self.reactor = reactor
        self.limits = limits if limits is not None else ServerLimits()
        self.dispatcher = methods.Dispatcher(backend, config_values, cluster)
        self._own_pool = threadpool is None
        self.threadpool = threadpool if threadpool is not None else (
            twisted_threadpool.ThreadPool(0, self.limits.threads, name="luxi"))
        self.protocols = set()
        self.accepting = True
        self.stopping = False
        self._refusals = connlimit.refusal_warning("LUXI", reactor.seconds)
        self._deliveries = collections.deque()
        self._wake_pending = False
        if hasattr(backend, "answer_handoff"):
            backend.answer_handoff = self.hand_over
        # Submissions recorded in the reactor are committed once per pass over the
        # sockets, by commit_soon (if the backend can: JobQueue.commit_pending).
        self._commit_pending = getattr(backend, "commit_pending", None)
        self.defer_commit = {"defer_commit": True} if self._commit_pending else {}
        self._commit_scheduled = False
        self._committing_thread = None
        #: id(batch) -> [(batch, protocol, request, answer)]: the submissions of the commit
        #: scheduled, answered as soon as it makes their batch durable (_durable_here).
        self._early = {}
        self._encoded = None  # id(result) -> (result, kind, bytes) during a delivery run
        self._after = None    # what a delivery run does once its answers are sent

    def commit_soon(self):
        """Commit the submissions recorded in this pass over the sockets at its end.

        callLater(0) runs before the reactor polls again: every submission read in this
        pass shares the commit, which the reactor does itself when the journal is idle
        (JobQueue.commit_pending); the answers are then delivered from here too.
        """
        if not self._commit_scheduled:
            self._commit_scheduled = True
            self.reactor.callLater(0, self._commit)

    def answer_early(self, batch, conn, request, answer):
        """Answer a submission from the commit scheduled, once it has made batch durable
        (if this thread commits it: see _durable_here)."""
        if self._commit_scheduled:
            self._early.setdefault(id(batch), []).append((batch, conn, request, answer))

    def _commit(self):
        self._commit_scheduled = False
        # Answers the commit releases in this thread are run right after it (see
        # deliver), not through a wake-up of this very thread.
        self._committing_thread = threading.get_ident()
        answered = []
        try:
            self._commit_pending(functools.partial(self._durable_here, answered))
        except Exception:  # noqa: BLE001 - the batches' waiters hear of errors themselves
            logger.exception("committing the submissions failed")
        finally:
            self._committing_thread = None
            self._early.clear()  # batches the committer took: answered by their callbacks
        if self._deliveries:
            self._run_deliveries()
        for conn in answered:
            conn.resume()

    def _durable_here(self, answered, batches):
        """The reactor's commit made batches durable: answer their submissions at once,
        before the queue's bookkeeping of them (jqueue.store.journal.Journal.commit_here:
        it still comes before anything the clients send next). The connections go on
        to their next requests once the commit has ended; the batches' own callbacks
        then find their requests answered."""
        for batch in batches:
            for mine, conn, request, answer in self._early.pop(id(batch), ()):
                if mine is batch and conn.answer_durable(request, answer):
                    answered.append(conn)

    def deliver(self, func, *args):
        """Run func(*args) in the reactor thread; callable from any thread.

        Answers come from the journal's threads in bursts (every submission of a group
        commit; every waiter of a job at once comes as one, see hand_over): one wake-up
        of the reactor per burst, not one per answer. From the reactor's own commit
        (_commit) they wait for its end and need no wake-up at all.
        """
        # No lock: deque.append and popleft are atomic, and the flag is only a hint
        # whose races cost at most one spare wake-up (it is cleared before the queue is
        # drained, so an answer queued after a drain always finds it clear or sees a
        # wake-up already on its way).
        self._deliveries.append((func, args))
        if self._committing_thread == threading.get_ident():
            return  # the reactor itself, in _commit: it runs them when the commit returns
        self._wake()

    def _wake(self):
        if not self._wake_pending:
            self._wake_pending = True
            self.reactor.callFromThread(self._run_deliveries)

    def hand_over(self, ready):
        """Run the callbacks a durable batch released, [(callback, result), ...], in the
        reactor (the backend's answer_handoff); callable from any thread.

        One delivery for them all: the journal's thread does not queue thousands of
        answers one by one while the reactor, woken by the first, takes the GIL from it
        at every send. In the reactor, a callback of this server's long polls is called
        through its ``in_reactor``, which sends the answer at once. From BULK_DELIVERIES
        callbacks on, the cyclic collector stays paused until they are all sent (a pass
        in the middle would delay every answer after it).
        """
        paused = len(ready) >= BULK_DELIVERIES
        if paused:
            serializer.pause_collection()
        self.deliver(self._run_callbacks, ready, paused)

    def _run_callbacks(self, ready, paused):
        try:
            for callback, result in ready:
                try:
                    getattr(callback, "in_reactor", callback)(result)
                except Exception:  # noqa: BLE001 - one waiter must not hurt the others
                    logger.exception("answering a waiter failed")
        finally:
            if paused:
                serializer.resume_collection()

    def _run_deliveries(self):
        self._wake_pending = False
        pending = self._deliveries
        self._encoded = {}
        after = self._after = collections.deque()
        try:
            for queue in (pending, after):
                while queue:
                    func, args = queue.popleft()
                    try:
                        func(*args)
                    except Exception:  # noqa: BLE001 - one answer's bug must not drop others
                        logger.exception("delivering a LUXI answer failed")
        finally:
            self._encoded = self._after = None

    def after_deliveries(self, func, *args):
        """Run func(*args) once this delivery run has sent its answers (at once outside one)."""
        if self._after is None:
            func(*args)
        else:
            self._after.append((func, args))

    def encoded_answer(self, watch, result):
        """The answer bytes of a long poll's result, encoded once per result object.

        The queue hands every waiter of one job that asked the same thing the same
        result object (jqueue.run.waiting), and they are delivered in one run: 5,000
        waiters then cost one encoding, not 5,000. The cache holds the result itself,
        so that its id is not reused while the run lasts, and is emptied after it.
        """
        cache = self._encoded
        cached = cache.get(id(result)) if cache is not None else None
        if cached is not None and cached[0] is result and cached[1] == watch:
            return cached[2]
        data = framing.encode_response(
            True, getattr(self.dispatcher, "answer_" + watch)(result))
        if cache is not None:
            cache[id(result)] = (result, watch, data)
        return data

    def startFactory(self):
        if self._own_pool:
            self.threadpool.start()

    def stopFactory(self):
        if self._own_pool:
            self.threadpool.stop()

    def buildProtocol(self, addr):
        if len(self.protocols) >= self.limits.max_connections:
            self._refusals.count(len(self.protocols), self.limits.max_connections)
            return None
        return self.protocol(self)

    def connection_made(self, proto):
        self.protocols.add(proto)

    def connection_lost(self, proto):
        self.protocols.discard(proto)

    def stop_accepting_submissions(self):
        """Answer new submissions with JobQueueError "daemon is shutting down"."""
        self.accepting = False

    def answer_waiters_and_close(self):
        """Answer every pending WaitForJobChange with "nochange"; close idle connections.

        From now on a connection is closed as soon as it has nothing left to answer, and
        new WaitForJobChange calls that cannot be answered at once get "nochange".
        """
        self.stopping = True
        for proto in list(self.protocols):
            proto.answer_waiter()


def _encode_answer(success, result):
    """The bytes of an answer; an internal error's if result cannot be encoded."""
    try:
        return framing.encode_response(success, result)
    except (TypeError, ValueError, RecursionError) as err:
        logger.error("cannot encode the answer to a LUXI request: %s", err)
        return framing.encode_response(False, [
            "ProgrammerError", ["internal error: cannot encode the answer: %s" % err]])


def _run_encoded(dispatcher, spec, args):
    """Run a method in a pool thread; its successful answer, encoded."""
    if not spec.bulk:
        return _encode_answer(True, dispatcher.run(spec, args))
    with serializer.paused_collection():
        result = dispatcher.run(spec, args)
        data = _encode_answer(True, result)
        del result  # freed by its references before the collector resumes (no pass over it)
    return data


def _send(transport, data):
    """Write data to a connection: at once if nothing is queued before it.

    Twisted's write() only queues the data and registers the socket for writing: an
    epoll_ctl, a loop iteration, the send, and another epoll_ctl, for every answer.
    When the connection has nothing queued (the usual case: one answer in flight per
    connection), sending right away on its socket is equivalent and costs one system
    call; what the socket does not take goes through write() as before, in order, and
    so does everything when the send fails (Twisted then meets the error as usual).
    Transports that are not Twisted sockets (tests' fakes) always use write().
    """
    sock = getattr(transport, "socket", None)
    if (sock is None or not getattr(transport, "connected", False)
            or transport.disconnecting or transport._tempDataLen
            or transport.offset != len(transport.dataBuffer)
            or getattr(transport, "_sendmsgQueue", None)):  # file descriptors to pass
        transport.write(data)
        return
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        transport.write(data)  # let Twisted meet the error as it would have
        return
    if sent < len(data):
        transport.write(data[sent:])


#: Answers handed over at once from which the collector waits until they are sent.
BULK_DELIVERIES = 64

#: Submissions with more opcodes than this are validated in the pool, not the reactor.
INLINE_SUBMIT_OPCODES = 64


def _opcode_count(spec, args):
    if spec.name == constants.LUXI_REQ_SUBMIT_MANY_JOBS:
        return sum(len(ops) for ops in args[0])
    return len(args[0])


def _submit_job(backend, args, drained_ok=False, **defer):
    return backend.submit_job_nowait(args[0], drained_ok, **methods.nowait_arguments(
        args[1] if len(args) > 1 else None), **defer)


def _submit_many(backend, args, **defer):
    results, batch = backend.submit_nowait(args[0], **methods.nowait_arguments(
        args[1] if len(args) > 1 else None, many=True), **defer)
    return [list(result) for result in results], batch


def _fate(error, answer):
    """A submission's replication failure as SubmissionNotAcknowledged naming its jobs."""
    if not isinstance(error, errors.ReplicationError) or isinstance(
            error, errors.SubmissionNotAcknowledged):
        return error
    if isinstance(answer, list):
        job_ids = [value for ok, value in answer if ok]
    else:
        job_ids = [answer]
    return errors.not_acknowledged(job_ids, error)


#: Submissions answered without a pool thread: wire name -> f(backend, args) -> (answer,
#: batch).
_SUBMITTERS = {
    constants.LUXI_REQ_SUBMIT_JOB: _submit_job,
    constants.LUXI_REQ_SUBMIT_JOB_TO_DRAINED_QUEUE:
        lambda backend, args, **defer: _submit_job(backend, args, drained_ok=True, **defer),
    constants.LUXI_REQ_SUBMIT_MANY_JOBS: _submit_many,
}


def _encode_error(method, err, traceback_fn):
    """Encode a backend error: ours as themselves, anything else as an internal error."""
    if isinstance(err, errors.GenericError):
        return errors.encode_exception(err)
    logger.error("LUXI request %s failed:\n%s", method, traceback_fn())
    return ["ProgrammerError", ["internal error: %s: %s" % (err.__class__.__name__, err)]]


def _traceback_text():
    return traceback.format_exc()
