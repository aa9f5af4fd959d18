"""The node RPC server: ``POST /rpc/<method>`` with a JSON object body, over mutual TLS.

Every answer is JSON: ``{"success": true, "result": ...}`` or ``{"success": false,
"result": ["ErrorClass", [args]]}``, except a handler's ``Bytes`` result (a piece of a
command's output) to a client that accepts ``application/octet-stream``: that is
answered as the bytes themselves, with that content type (no base64, no JSON; to other
clients it is ``{"data": base64}``). HTTP status 200 carries handler results (handler
errors included); a request refused before any handler runs gets 400 (not a JSON object,
or not application/json), 403 (the peer's certificate names no node of the cluster), 404
(unknown method), 405 (not POST) or 413 (body over max_body).

Authentication is the TLS handshake (jqueue.cluster.tls.Credentials.server_options: a client
certificate chained to the cluster CA); authorization is here: the certificate must name
a node for which ``allowed_peers(name)`` is true, asked on every request since the
cluster's membership changes at run time.

A stream method (StreamHandler) turns its connection into a stream once its opening call
is answered: the caller then sends messages, each ``>II`` (the lengths of its head and of
its data, big-endian), its head (a JSON object) and its data (bytes), and gets one answer
per message, in order, each ``>I`` (its length) and the JSON answer above. Replication
uses it: one message per group commit, its journal frames as they are, instead of a
request of its own with the frames in base64 (twisted.web's handling of a request cost a
candidate more than applying the records it carried).

Connections are bounded before anyone is authenticated: one whose TLS handshake has not
completed handshake_timeout seconds after it was accepted is dropped, and at
max_connections a new connection takes the place of the oldest one still in its handshake
(or, when every one is authenticated, is closed at once): silent peers can neither hold
the node's file descriptors (jqueue.connlimit) nor keep the master out. Both are logged
once a minute.

Bodies are bounded while they arrive: a Content-Length over the limit, or a chunked body
growing past it, is answered with 413 at once and the connection is closed, reading and
dropping whatever the client still sends (for at most abortTimeout seconds).
"""

import base64
import collections
import io
import logging
import re
import struct

import attrs
from OpenSSL import SSL
from twisted.internet import defer, endpoints, interfaces, protocol, threads
from twisted.protocols import tls as twisted_tls
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from zope.interface import implementer

from jqueue import connlimit, constants, errors, ratelog, serializer
from jqueue.cluster import tls

logger = logging.getLogger(__name__)

_METHOD_RE = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{0,127}")
_PREFIX = constants.RPC_PATH_PREFIX.encode("ascii")
_JSON = b"application/json"
_OCTETS = b"application/octet-stream"


@attrs.frozen
class Handler:
    """An RPC method: ``func(peer_name, body_dict)`` returns a JSON-able result.

    A blocking handler runs in the thread pool; a non-blocking one runs in the reactor
    and may return a Deferred.
    """

    func = attrs.field(validator=attrs.validators.is_callable())
    blocking: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


@attrs.frozen
class StreamHandler:
    """A stream method: ``open(peer_name, body_dict)`` checks the opening call (raising
    to refuse it) and returns ``on_message(head_dict, data)``, which the event loop calls
    for each message of the stream and which returns a JSON-able result or a Deferred of
    one (see the module docstring)."""

    open = attrs.field(validator=attrs.validators.is_callable())


#: A stream message's lengths (head, data) and an answer's length.
MESSAGE_LENGTHS = struct.Struct(">II")
ANSWER_LENGTH = struct.Struct(">I")
#: The longest head of a stream message.
MAX_MESSAGE_HEAD = 65536
#: What a stream method answers to its opening call.
STREAM_OPENED = {"stream": 1}


@attrs.frozen
class Bytes:
    """A handler's result that is bytes (see the module docstring)."""

    data: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))


class _Refusal(Exception):
    """A request refused before any handler ran: the HTTP status and the error answered."""

    def __init__(self, status, error, headers=()):
        super().__init__(status, error)
        self.status = status
        self.error = error
        self.headers = headers


def _answer_bytes(success, result):
    """The JSON answer; an unencodable result becomes a ProgrammerError answer."""
    try:
        return serializer.dumps_bytes({constants.RPC_KEY_SUCCESS: success,
                                       constants.RPC_KEY_RESULT: result})
    except (TypeError, ValueError, RecursionError) as err:
        logger.error("cannot encode an RPC answer: %s", err)
        return serializer.dumps_bytes({
            constants.RPC_KEY_SUCCESS: False,
            constants.RPC_KEY_RESULT: ["ProgrammerError",
                                       ["internal error: cannot encode the answer: %s" % err]]})


def _result_answer(result, octets):
    """(content type, body) of a handler's successful result."""
    if isinstance(result, Bytes):
        if octets:
            return _OCTETS, result.data
        result = {"data": base64.b64encode(result.data).decode("ascii")}
    return _JSON, _answer_bytes(True, result)


def _accepts_octets(request):
    accept = request.getHeader(b"accept") or b""
    return any(part.split(b";", 1)[0].strip().lower() == _OCTETS
               for part in accept.split(b","))


def _error_bytes(error):
    return _answer_bytes(False, errors.encode_exception(error))


def _raw_response(status, error):
    """A complete HTTP response that closes the connection (written past twisted.web)."""
    body = _error_bytes(error)
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, http.RESPONSES[status], _JSON, len(body)))
    return head + body


class RpcRequest(server.Request):
    """A request whose body is held in memory up to the site's max_body, and no further."""

    #: True once the connection was lost: a late answer is dropped.
    gone = False
    _received = 0
    _refused = False

    def gotLength(self, length):
        self.content = io.BytesIO()
        limit = self.channel.site.max_body
        if length is not None and length > limit:
            self._refuse_body("a body of %d bytes is over the limit of %d bytes" % (
                length, limit))

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        limit = self.channel.site.max_body
        if self._received > limit:
            self._refuse_body("the body grew past the limit of %d bytes" % limit)
            return
        self.content.write(data)

    def _refuse_body(self, reason):
        self._refused = True
        self.content = io.BytesIO()
        logger.warning("refusing an RPC request from %s: %s", self.channel.peer_description,
                       reason)
        self.channel.refuse(413, errors.RequestError("request body too large: %s" % reason))

    def requestReceived(self, command, path, version):
        if not self._refused:
            super().requestReceived(command, path, version)

    def connectionLost(self, reason):
        self.gone = True
        super().connectionLost(reason)


@implementer(interfaces.IHandshakeListener)
class RpcChannel(http.HTTPChannel):
    """An HTTP/1.1 connection (kept alive) that can refuse a request and drop the rest."""

    _refusing = False
    _refusal_abort = None
    _peer = None
    _stream = None
    _handshake_deadline = None

    @property
    def peer_description(self):
        try:
            peer = self.transport.getPeer()
            return "%s:%s" % (peer.host, peer.port)
        except Exception:  # noqa: BLE001 - only for log messages
            return "an unknown peer"

    def connectionMade(self):
        super().connectionMade()
        self.site.connection_made(self)
        self._handshake_deadline = self.callLater(self.site.handshake_timeout,
                                                  self._handshake_late)

    def handshakeCompleted(self):
        """The TLS handshake is done (IHandshakeListener): the peer may stay."""
        if self._handshake_deadline is not None and self._handshake_deadline.active():
            self._handshake_deadline.cancel()
        self._handshake_deadline = None
        self.site.handshake_done(self)

    def _handshake_late(self):
        self._handshake_deadline = None
        self.site.handshake_done(self)  # no longer in its handshake: closing
        self.site.late_handshakes.count(self.site.handshake_timeout, self.peer_description)
        self.transport.abortConnection()

    def peer_node_name(self):
        """The node the peer's certificate names (or _Refusal), found once per connection."""
        if self._peer is None:
            try:
                self._peer = (_peer_node_name(self.transport), None)
            except _Refusal as refusal:
                self._peer = (None, refusal)
        name, refusal = self._peer
        if refusal is not None:
            raise refusal
        return name

    def dataReceived(self, data):
        if self._stream is not None:
            self.resetTimeout()
            self._stream.feed(data)
        elif not self._refusing:
            super().dataReceived(data)

    def start_stream(self, peer, on_message):
        """From now on the connection carries a stream (its opening call is answered)."""
        self._stream = _MessageStream(self, peer, on_message)

    def refuse(self, status, error):
        """Answer status with error now, ignore all further data, and close."""
        if self._refusing:
            return
        self._refusing = True
        self.transport.write(_raw_response(status, error))
        self.loseConnection()
        self._refusal_abort = self.callLater(self.abortTimeout, self.transport.abortConnection)

    def connectionLost(self, reason):
        if self._stream is not None:
            self._stream.closed = True
        for call in (self._refusal_abort, self._handshake_deadline):
            if call is not None and call.active():
                call.cancel()
        self._refusal_abort = self._handshake_deadline = None
        self.site.connection_lost(self)
        if not self.requests and _is_tls_failure(reason):
            refusal = getattr(self.transport, "jq_refusal", None)
            self.site.failed_handshakes.count(self.peer_description, "%s%s" % (
                reason.value, ": " + refusal if refusal else ""))
        super().connectionLost(reason)


class _MessageStream:
    """The messages of a stream (see the module docstring): parsed as they arrive, each
    handed to on_message, their answers written in order as they are ready."""

    def __init__(self, channel, peer, on_message):
        self.closed = False
        self._channel = channel
        self._peer = peer
        self._on_message = on_message
        self._buffer = bytearray()
        self._answers = collections.deque()  # [answer bytes, or None until ready]

    def feed(self, data):
        self._buffer += data
        size = MESSAGE_LENGTHS.size
        while not self.closed and len(self._buffer) >= size:
            head_len, data_len = MESSAGE_LENGTHS.unpack_from(self._buffer)
            if head_len > MAX_MESSAGE_HEAD or data_len > self._channel.site.max_body:
                self._end(errors.RequestError(
                    "stream message too large: a head of %d bytes (at most %d) and %d bytes "
                    "of data (at most %d)" % (head_len, MAX_MESSAGE_HEAD, data_len,
                                              self._channel.site.max_body)))
                return
            end = size + head_len + data_len
            if len(self._buffer) < end:
                return
            head = bytes(self._buffer[size:size + head_len])
            payload = bytes(self._buffer[size + head_len:end])
            del self._buffer[:end]
            self._message(head, payload)

    def _message(self, head, payload):
        try:
            head = serializer.loads(head)
        except errors.ParseError as err:
            self._end(errors.RequestError("bad stream message head: %s" %
                                          errors.error_message(err)))
            return
        if not isinstance(head, dict):
            self._end(errors.RequestError("a stream message's head must be a JSON object, "
                                          "not %s" % type(head).__name__))
            return
        if not self._channel.site.resource.allows(self._peer):
            self._end(_not_a_member(self._peer))
            return
        slot = [None]
        self._answers.append(slot)
        deferred = defer.maybeDeferred(self._on_message, head, payload)
        deferred.addCallback(lambda result: _answer_bytes(True, result))
        deferred.addErrback(lambda failure: _encode_failure(failure, "stream", self._peer)[1])
        deferred.addCallback(self._ready, slot)
        deferred.addErrback(lambda failure: logger.error(
            "answering a stream message from %s failed:\n%s", self._peer,
            failure.getTraceback()))

    def _ready(self, answer, slot):
        slot[0] = answer
        out = []
        while self._answers and self._answers[0][0] is not None:
            answer = self._answers.popleft()[0]
            out.append(ANSWER_LENGTH.pack(len(answer)) + answer)
        if out and not self.closed:
            self._channel.transport.write(b"".join(out))

    def _end(self, error):
        """Answer a message that breaks the stream with error, then close: the answer
        goes after those ready before it; if one is still to come (a Deferred), neither
        is written (the caller sees the connection closed)."""
        logger.warning("closing the stream from %s: %s", self._peer, errors.error_message(error))
        slot = [None]
        self._answers.append(slot)
        self._ready(_error_bytes(error), slot)
        self.closed = True
        self._buffer = bytearray()
        self._channel.loseConnection()


def _not_a_member(name):
    return errors.TlsError("node %s is not a node of this cluster" % name)


def _is_tls_failure(reason):
    return reason.check(SSL.Error) is not None


class RpcSite(server.Site):
    """The connection factory of node RPC: RpcChannels, RpcRequests, no access log."""

    noisy = False

    def __init__(self, root, max_body, reactor, timeout,
                 max_connections=constants.RPC_MAX_CONNECTIONS,
                 handshake_timeout=constants.RPC_HANDSHAKE_TIMEOUT):
        super().__init__(root, requestFactory=RpcRequest, parsePOSTFormSubmission=False,
                         timeout=timeout, reactor=reactor)
        self.max_body = max_body
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        #: Connections accepted since the start, and open now.
        self.connections_made = 0
        self.open_connections = 0
        self._refusals = connlimit.refusal_warning("RPC", reactor.seconds)
        #: Channels still in their TLS handshake, oldest first; those aborted to make room
        #: and not closed yet (each still holds its descriptor until the next turn).
        self._handshaking = {}
        self._evicted = set()
        self._evictions = ratelog.CountedWarning(
            reactor.seconds, "closed %d RPC connection(s) still in their TLS handshake to make "
            "room for new ones (limit %d)", logger)
        #: A peer refused, as a node whose clock is wrong refuses every other one: said
        #: once, then once a minute.
        self.failed_handshakes = ratelog.CountedWarning(
            reactor.seconds, "%d TLS connection(s) failed since the last line; the last, "
            "from %s: %s", logger)
        self.late_handshakes = ratelog.CountedWarning(
            reactor.seconds, "dropped %d RPC connection(s) without a TLS handshake within "
            "%gs (the last from %s)", logger)

    def buildProtocol(self, addr):
        if self.open_connections - len(self._evicted) >= self.max_connections:
            if not self._handshaking or len(self._evicted) >= EVICTING_MAX:
                # The TLS layer wraps whatever is returned: a protocol that closes at once.
                self._refusals.count(self.open_connections, self.max_connections)
                return _Refused()
            oldest = next(iter(self._handshaking))
            del self._handshaking[oldest]
            self._evicted.add(oldest)
            self._evictions.count(self.max_connections)
            oldest.transport.abortConnection()
        channel = RpcChannel()
        channel.factory = self
        channel.site = self
        channel.requestFactory = self.requestFactory
        channel.callLater = self.reactor.callLater
        channel.timeOut = self.timeOut
        return channel

    def connection_made(self, channel):
        self.connections_made += 1
        self.open_connections += 1
        self._handshaking[channel] = None

    def handshake_done(self, channel):
        """channel left its handshake (done, or given up): it keeps its slot."""
        self._handshaking.pop(channel, None)

    def connection_lost(self, channel):
        self.open_connections -= 1
        self._handshaking.pop(channel, None)
        self._evicted.discard(channel)

    def log(self, request):
        logger.debug("RPC %s %s from %s: %d", request.method, request.path,
                     request.channel.peer_description, request.code)


#: Connections aborted to make room whose descriptors are not closed yet, at most: beyond,
#: new ones are refused (a flood cannot push the descriptors held past the cap by more).
EVICTING_MAX = 16


class _Refused(protocol.Protocol):
    """A connection past the cap: closed as soon as it is made."""

    def connectionMade(self):
        self.transport.abortConnection()


class RpcResource(resource.Resource):
    """Checks a request (peer, method, body) and runs its handler."""

    isLeaf = True

    def __init__(self, handlers, allowed_peers, threadpool, reactor):
        super().__init__()
        for name, handler in handlers.items():
            if (not isinstance(name, str) or not _METHOD_RE.fullmatch(name.encode())
                    or not isinstance(handler, (Handler, StreamHandler))):
                raise errors.ProgrammerError("bad RPC handler %r: %r" % (name, handler))
        self._handlers = dict(handlers)
        self._allowed_peers = allowed_peers
        self._threadpool = threadpool
        self._reactor = reactor

    def render(self, request):
        try:
            peer = self._authorize(request)
            name, handler = self._lookup(request)
            body = _parse_body(request)
        except _Refusal as refusal:
            _refuse(request, refusal)
            return server.NOT_DONE_YET
        except Exception as err:  # noqa: BLE001 - a bug here must not leave an HTML 500
            logger.exception("checking an RPC request failed")
            _answer(request, 500, (_JSON, _answer_bytes(False, ["ProgrammerError", [
                "internal error: %s: %s" % (err.__class__.__name__, err)]])))
            return server.NOT_DONE_YET
        if isinstance(handler, StreamHandler):
            self._open_stream(request, peer, name, handler, body)
        else:
            self._dispatch(request, peer, name, handler, body)
        return server.NOT_DONE_YET

    def allows(self, name):
        """Whether node name may call (asked on every request and stream message)."""
        try:
            return bool(self._allowed_peers(name))
        except Exception:  # noqa: BLE001 - refuse, and keep serving
            logger.exception("cannot tell whether node %s may call", name)
            return False

    def _authorize(self, request):
        """The name of the calling node, if it is allowed to call; else _Refusal 403."""
        name = request.channel.peer_node_name()
        if not self.allows(name):
            raise _Refusal(403, _not_a_member(name))
        return name

    def _open_stream(self, request, peer, name, handler, body):
        """Answer a stream's opening call; on success the connection carries the stream."""
        try:
            on_message = handler.open(peer, body)
        except Exception:  # noqa: BLE001 - answered as any handler's failure is
            _answer(request, 200, _encode_failure(Failure(), name, peer))
            return
        channel = request.channel  # (the request lets go of it once finished)
        _answer(request, 200, _result_answer(STREAM_OPENED, False))
        channel.start_stream(peer, on_message)

    def _lookup(self, request):
        path = request.path
        name = path[len(_PREFIX):] if path.startswith(_PREFIX) else None
        handler = None
        if name is not None and _METHOD_RE.fullmatch(name):
            name = name.decode("ascii")
            handler = self._handlers.get(name)
        if handler is None:
            shown = path[:200].decode("ascii", "replace")
            raise _Refusal(404, errors.RequestError("unknown RPC method: %s" % shown))
        if request.method != b"POST":
            raise _Refusal(405, errors.RequestError("RPC %s: method %s not allowed, use POST" % (
                name, request.method[:20].decode("ascii", "replace"))), [(b"Allow", b"POST")])
        return name, handler

    def _dispatch(self, request, peer, name, handler, body):
        octets = _accepts_octets(request)
        if handler.blocking:
            deferred = threads.deferToThreadPool(self._reactor, self._threadpool,
                                                 _run_and_encode, handler.func, peer, body,
                                                 octets)
        else:
            deferred = defer.maybeDeferred(handler.func, peer, body)
            deferred.addCallback(_result_answer, octets)
        deferred.addErrback(_encode_failure, name, peer)
        deferred.addCallback(lambda data: _deliver(request, name, peer, data))
        deferred.addErrback(lambda failure: logger.error(
            "answering RPC %s from %s failed:\n%s", name, peer, failure.getTraceback()))


def _peer_node_name(transport):
    """The node named by the peer's certificate, verified by the handshake; else _Refusal.

    Verification is the TLS layer's (listen uses Credentials.server_options, which
    requires a certificate chained to the CA); pyOpenSSL offers no reliable way to ask
    for the verification result afterwards.
    """
    get_cert = getattr(transport, "getPeerCertificate", None)
    cert = get_cert() if get_cert is not None else None
    if cert is None:
        raise _Refusal(403, errors.TlsError("no client certificate"))
    cert = cert.to_cryptography()
    name = tls.node_name_of(cert)
    if name is None or tls.is_ca(cert):
        raise _Refusal(403, errors.TlsError("the client certificate names no node"))
    return name


def _refuse(request, refusal):
    log = logger.warning if refusal.status == 403 else logger.info
    log("refused an RPC request from %s: %s", request.channel.peer_description,
        errors.error_message(refusal.error))
    for header, value in refusal.headers:
        request.setHeader(header, value)
    _answer(request, refusal.status, (_JSON, _error_bytes(refusal.error)))


def _parse_body(request):
    content_type = request.getHeader(b"content-type") or b""
    if content_type.split(b";", 1)[0].strip().lower() != _JSON:
        raise _Refusal(400, errors.RequestError("the body must be application/json, not %s" % (
            content_type[:100].decode("ascii", "replace") or "unspecified")))
    try:
        body = serializer.loads(request.content.getvalue())
    except errors.ParseError as err:
        raise _Refusal(400, errors.RequestError("bad RPC body: %s" %
                                                errors.error_message(err))) from None
    if not isinstance(body, dict):
        raise _Refusal(400, errors.RequestError("the RPC body must be a JSON object, not %s" %
                                                type(body).__name__))
    return body


def _run_and_encode(func, peer, body, octets):
    """Run a blocking handler and encode its answer (both in the pool's thread)."""
    return _result_answer(func(peer, body), octets)


def _encode_failure(failure, name, peer):
    err = failure.value
    if isinstance(err, errors.GenericError):
        logger.debug("RPC %s from %s failed: %s", name, peer, err)
        return _JSON, _error_bytes(err)
    logger.error("RPC %s from %s failed:\n%s", name, peer, failure.getTraceback())
    return _JSON, _answer_bytes(False, ["ProgrammerError", ["internal error: %s: %s" % (
        err.__class__.__name__, err)]])


def _deliver(request, name, peer, answer):
    if request.gone:
        logger.info("answer to RPC %s from %s dropped: the connection was closed", name, peer)
        return
    _answer(request, 200, answer)


def _answer(request, status, answer):
    """Answer (content type, body) with status."""
    content_type, data = answer
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Content-Length", b"%d" % len(data))
    request.write(data)
    request.finish()


def make_site(handlers, allowed_peers, threadpool=None, max_body=constants.RPC_MAX_BODY_BYTES,
              reactor=None, timeout=constants.RPC_IDLE_TIMEOUT,
              max_connections=constants.RPC_MAX_CONNECTIONS,
              handshake_timeout=constants.RPC_HANDSHAKE_TIMEOUT):
    """The site serving handlers ({method name: Handler}) to the peers allowed_peers admits.

    Blocking handlers run in threadpool (default: the reactor's); connections idle for
    timeout seconds are closed, so are those past max_connections at once, and those
    without a TLS handshake after handshake_timeout seconds.
    """
    if reactor is None:
        from twisted.internet import reactor
    if threadpool is None:
        threadpool = reactor.getThreadPool()
    root = RpcResource(handlers, allowed_peers, threadpool, reactor)
    return RpcSite(root, max_body, reactor, timeout, max_connections, handshake_timeout)


#: The slice of an answer handed to OpenSSL at once, and what one read of the encrypted
#: records takes out of its memory BIO (a slice and its records' overhead: 22 bytes for
#: each 16 KiB record, more under TLS 1.2).
BULK_WRITE = 256 * 1024
BULK_READ = BULK_WRITE + 64 * 1024
#: What the connection's socket is offered at once when it can be written to (Twisted
#: offers 128 KiB, one reactor turn each); the kernel takes what its buffer has room for.
BULK_SEND = 4 * 1024 * 1024


class _BulkTLSProtocol(twisted_tls.BufferingTLSTransport):
    """Twisted's TLS layer (small writes gathered until the reactor's next turn, as
    Twisted's own does), encrypting an answer up to BULK_WRITE bytes at a time.

    Twisted's own hands OpenSSL one 16 KiB record per Python step and moves it to the
    socket before the next: a piece of a command's output (960 KiB) took 60 such steps,
    each with a 32 KiB buffer of its own: a sixth of jq-noded's CPU in serving it. Here
    partial writes are off (Credentials.server_options), so one SSL_write encrypts a
    whole slice into the memory BIO, which is emptied in one read. The BIO takes every
    write and the connection never renegotiates, so after its handshake a slice is
    written whole; a write before it ends (WantReadError: nothing written) is kept, as
    Twisted keeps it, and written again from the same start once the handshake is done.
    The socket is offered up to BULK_SEND at once: at Twisted's 128 KiB a piece took
    eight reactor turns to leave (jq-noded's CPU for 200 MB of output, medians of six:
    0.52 -> 0.40 s).
    """

    def makeConnection(self, transport):
        transport.SEND_LIMIT = BULK_SEND
        super().makeConnection(transport)

    def _write(self, data):
        if self._lostTLSConnection:
            return
        view, done = memoryview(data), 0
        while done < len(view):
            try:
                done += self._tlsConnection.send(view[done:done + BULK_WRITE])
            except SSL.WantReadError:
                self._bufferedWrite(bytes(view[done:]))
                break
            except SSL.Error:
                self._tlsShutdownFinished(Failure())
                break
            self._flushSendBIO()

    def _flushSendBIO(self):
        while True:
            try:
                data = self._tlsConnection.bio_read(BULK_READ)
            except SSL.WantReadError:  # nothing (more) to send
                return
            self.transport.write(data)
            if len(data) < BULK_READ:
                return


class _BulkTLSFactory(twisted_tls.TLSMemoryBIOFactory):
    protocol = _BulkTLSProtocol


def listen(reactor, site, credentials, host, port):
    """Serve site with mutual TLS on host:port; a Deferred firing with the listening port."""
    endpoint = endpoints.TCP4ServerEndpoint(reactor, port, interface=host)
    return endpoint.listen(_BulkTLSFactory(credentials.server_options(), False, site))
