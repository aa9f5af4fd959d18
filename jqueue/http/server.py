"""The HTTP server: Twisted Web in the daemon's reactor, bounded, answering in JSON.

No thread per connection: requests are parsed and answered in the reactor thread;
handlers that may block (a cancel waits for its record to be durable) run in a small
pool; submissions are recorded in the reactor thread and answered once durable, as LUXI
does; long polls and the event stream cost no thread (the queue calls back).

Bounds (``HttpLimits``): the request line and headers (count and bytes: 431), the body
(413, checked from Content-Length before it is read, and while a chunked body comes),
the time to send a whole request (408) and idle keep-alive connections, the number of
connections. A refused request gets a 4xx with a JSON error and changes nothing; the
daemon goes on.

Every error is ``{"error": {"class": ..., "message": ...}}`` with its status (see
``status_of``); Coalition's endpoints answer in their own shape (jqueue.http.coalition).
"""

import collections
import logging
import os
import re
import threading
import time
import urllib.parse

import attrs
from twisted.internet import defer, threads
from twisted.python import failure as tw_failure
from twisted.web import http, resource, server

from jqueue import connlimit, constants, errors, serializer
from jqueue.http import auth

logger = logging.getLogger(__name__)

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_STATIC_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]*\.(?:html|js|css|svg|png)\Z")
_CONTENT_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
                  "css": "text/css; charset=utf-8", "svg": "image/svg+xml",
                  "png": "image/png"}
JSON_TYPE = b"application/json"

_positive = attrs.validators.gt(0)


@attrs.frozen
class HttpLimits:
    """Bounds on what one HTTP client (or all of them) may cost the daemon."""

    #: Largest request body in bytes (413 beyond).
    max_body: int = attrs.field(default=1024 * 1024, validator=_positive)
    #: Most header lines in a request (431 beyond).
    max_headers: int = attrs.field(default=64, validator=_positive)
    #: Most bytes of the request line and headers together (431 beyond).
    max_header_bytes: int = attrs.field(default=16384, validator=_positive)
    #: Seconds a client may take to send a whole request (408 after).
    request_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Seconds an idle keep-alive connection is kept.
    idle_timeout: float = attrs.field(default=120.0, validator=_positive)
    #: Open connections; more are closed at once.
    max_connections: int = attrs.field(default=1024, validator=_positive)
    #: Threads running the handlers that may block.
    threads: int = attrs.field(default=8, validator=_positive)
    #: Longest wait of a long poll (log tail), in seconds.
    max_wait: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))


class HttpError(errors.GenericError):
    """A request refused by the HTTP layer: args are (status, class name, message)."""

    def __init__(self, status, cls, message):
        super().__init__(status, cls, message)
        self.status, self.cls, self.message = status, cls, message


def error_body(cls, message):
    return serializer.dumps_answer({"error": {"class": cls, "message": message}})


_NOENT = {constants.ECODE_NOENT}
_CONFLICT = {constants.ECODE_EXISTS, constants.ECODE_STATE}


def status_of(err):
    """(HTTP status, class name, message) of an error raised by a handler."""
    if isinstance(err, HttpError):
        return err.status, err.cls, err.message
    if isinstance(err, auth.AuthError):
        return 401, "AuthError", errors.error_message(err)
    if isinstance(err, auth.Forbidden):
        return 403, "Forbidden", errors.error_message(err)
    name = err.__class__.__name__
    message = errors.error_message(err)
    if isinstance(err, errors.JobLost):
        return 404, name, message
    if isinstance(err, errors.OpPrereqError):
        code = err.args[1] if len(err.args) > 1 else None
        if code in _NOENT:
            return 404, name, message
        if code in _CONFLICT:
            return 409, name, message
        return 400, name, message
    if isinstance(err, (errors.ParameterError, errors.ParseError, errors.RequestError)):
        return 400, name, message
    if isinstance(err, (errors.JobQueueDrainError, errors.JobQueueFull,
                        errors.ReplicationError, errors.NotMasterError)):
        return 503, name, message
    if isinstance(err, errors.JobQueueError):
        return 503, name, message
    if isinstance(err, errors.GenericError):
        return 500, name, message
    return 500, "ProgrammerError", "internal error: %s: %s" % (name, err)


class Response:
    """What a handler answers: status, body (bytes), content type and extra headers."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status, body, content_type=JSON_TYPE, headers=None):
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = headers or {}


def json_response(value, status=200, headers=None):
    return Response(status, serializer.dumps_answer(value), JSON_TYPE, headers)


class Streaming:
    """A handler's answer that writes itself over time (Server-Sent Events).

    start(request) is called once the headers are out; stop() when the connection goes.
    """

    def start(self, request):
        raise NotImplementedError

    def stop(self):
        pass


class Route:
    """One endpoint: method, path pattern (groups are handler arguments), handler,
    whether it changes state (CSRF checks) and what its errors look like."""

    __slots__ = ("method", "pattern", "handler", "mutating", "errors", "page")

    def __init__(self, method, pattern, handler, mutating=False, errors="json", page=False):
        self.method, self.pattern = method, re.compile(r"\A" + pattern + r"\Z")
        self.handler, self.mutating, self.errors, self.page = handler, mutating, errors, page


class Call:
    """One request as handlers see it: its query arguments, body, caller and server."""

    def __init__(self, request, site, authenticated, name):
        self.request = request
        self.site = site
        self.authenticated = authenticated
        #: The caller's name (token name or certificate CN), None if unauthenticated.
        self.name = name
        self.args = {key.decode("utf-8", "replace"): [v.decode("utf-8", "replace")
                                                       for v in values]
                     for key, values in request.args.items()}

    @property
    def backend(self):
        return self.site.backend

    def arg(self, name, default=None):
        values = self.args.get(name)
        return values[-1] if values else default

    def body(self):
        content = self.request.content
        if content is None:
            return b""
        content.seek(0)
        return content.read()

    def json_body(self):
        data = self.body()
        if not data.strip():
            return None
        try:
            return serializer.loads(data, unique_keys=True)
        except errors.ParseError as err:
            raise HttpError(400, "ParseError", "the body is not valid JSON: %s" %
                            errors.error_message(err)) from None

    def blocking(self, fn, *args, **kwargs):
        """Run fn in the server's pool; a Deferred of its result."""
        return threads.deferToThreadPool(self.site.reactor, self.site.pool, fn, *args,
                                         **kwargs)

    def owner(self, given=None):
        """Who submits: the authenticated name, else what the client said (or None)."""
        return self.name if self.authenticated else (given or None)


_TOKEN_IN_QUERY = re.compile(rb"([?&]token=)[^&#]*", re.IGNORECASE)


class AccessLog:
    """jq-masterd's ``http_access_log``: a line per answered request, appended to a file:

        TIME CLIENT CALLER "METHOD TARGET VERSION" STATUS BYTES MS

    (UTC, ISO 8601 with milliseconds; the client's address; the caller's token name or
    certificate CN, ``-`` if unauthenticated; the request line with every ``token=`` value
    shown as ``*`` and other bytes outside printable ASCII %-escaped; the status; the
    bytes of the answer's body; the milliseconds from the request's arrival to its end).
    An event stream is logged when it ends. ``reopen()`` after a rotation (SIGHUP).
    """

    def __init__(self, path):
        self.path = path
        self._file = None
        self._failing = False
        self.reopen()

    def reopen(self):
        """Open the file anew (append; created 0640 if missing): OSError if it cannot
        be, and the file in use (if any) stays in use."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        stream = os.fdopen(fd, "a", encoding="ascii", buffering=1)  # a write per line
        old, self._file, self._failing = self._file, stream, False
        if old is not None:
            old.close()

    def write(self, request):
        started = getattr(request, "jq_started", None)
        millis = (time.monotonic() - started) * 1000 if started is not None else 0.0
        address = request.getClientAddress()
        now = time.time()
        line = '%s.%03dZ %s %s "%s %s %s" %d %d %.1f\n' % (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)), int(now * 1000) % 1000,
            getattr(address, "host", "-"),
            _log_text(getattr(request, "jq_caller", None) or "-"), _log_text(request.method),
            _log_text(_TOKEN_IN_QUERY.sub(rb"\1*", request.uri)),
            _log_text(request.clientproto), request.code, request.sentLength, millis)
        try:
            self._file.write(line)
            self._failing = False
        except OSError as err:
            if not self._failing:  # once per run of failures, not once per request
                logger.error("cannot write the HTTP access log %s: %s", self.path, err)
            self._failing = True

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def _log_text(value):
    """value (text, or bytes as a client sent them) with spaces, double quotes and bytes
    outside printable ASCII %-escaped: one field of one line, whatever a client sent."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return "".join(chr(byte) if 0x21 <= byte <= 0x7E and byte != 0x22 else "%%%02X" % byte
                   for byte in value)


class _Request(server.Request):
    """A request whose body is bounded while it arrives, dispatched by the site's routes.

    Twisted's resource traversal is skipped (one resource serves every path), and so is
    its parsing of POST bodies unless they are forms (Coalition's addjob by POST): JSON
    bodies are read by the handlers.
    """

    def requestReceived(self, command, path, version):
        self.jq_started, self.jq_caller = time.monotonic(), None  # for the access log
        ctype = self.requestHeaders.getRawHeaders(b"content-type")
        self._parsePOSTFormSubmission = bool(ctype) and ctype[0].split(b";", 1)[0].strip(
            ).lower() == b"application/x-www-form-urlencoded"
        super().requestReceived(command, path, version)

    def process(self):
        """What server.Request.process does for us, without traversal: dispatch."""
        self.site = self.channel.site
        self.setHeader(b"Date", _date())
        self.prepath, self.postpath = [], []
        self._inFakeHead = False
        self._encoder = None
        try:
            self.site.dispatch(self)
        except BaseException:  # noqa: BLE001 - answered as a 500, as Twisted does
            self.processingFailed(tw_failure.Failure())

    def gotLength(self, length):
        limit = self.channel.site.limits.max_body
        if length is not None and length > limit:
            self.channel.refuse(413, "RequestTooLarge", "request body of %d bytes; the limit "
                                "is %d" % (length, limit))
            return
        self._body_bytes = 0
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self.channel.refused:
            return
        self._body_bytes = getattr(self, "_body_bytes", 0) + len(data)
        limit = self.channel.site.limits.max_body
        if self._body_bytes > limit:
            self.channel.refuse(413, "RequestTooLarge", "request body over %d bytes" % limit)
            return
        super().handleContentChunk(data)


class _Channel(http.HTTPChannel):
    """A connection: header and time limits answered with JSON errors."""

    refused = False
    _request_timer = None

    def connectionMade(self):
        limits = self.site.limits
        self.maxHeaders = limits.max_headers
        self.totalHeadersSize = limits.max_header_bytes
        self.MAX_LENGTH = limits.max_header_bytes
        super().connectionMade()
        self.site.connection_made(self)

    def connectionLost(self, reason):
        self._cancel_request_timer()
        self.site.connection_lost(self)
        super().connectionLost(reason)

    def dataReceived(self, data):
        if self.refused:
            return
        super().dataReceived(data)

    def lineReceived(self, line):
        if self.refused:
            return
        if self._request_timer is None:
            self._request_timer = self.site.reactor.callLater(
                self.site.limits.request_timeout, self._request_timed_out)
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(431, "HeadersTooLarge", "request line and headers over %d bytes" %
                        self.totalHeadersSize)
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line):
        self.refuse(431, "HeadersTooLarge", "a request line or header over %d bytes" %
                    self.MAX_LENGTH)

    def headerReceived(self, line):
        if self._receivedHeaderCount >= self.maxHeaders:
            self.refuse(431, "HeadersTooLarge", "more than %d header lines" % self.maxHeaders)
            return False
        return super().headerReceived(line)

    def allContentReceived(self):
        self._cancel_request_timer()
        if self.refused:
            return
        super().allContentReceived()

    def _request_timed_out(self):
        self._request_timer = None
        self.refuse(408, "RequestTimeout", "the request was not received within %gs" %
                    self.site.limits.request_timeout)

    def _cancel_request_timer(self):
        timer, self._request_timer = self._request_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _respondToBadRequestAndDisconnect(self):
        self.refuse(400, "BadRequest", "malformed HTTP request")

    def refuse(self, status, cls, message):
        """Answer an error at once, read nothing more, close."""
        if self.refused:
            return
        self.refused = True
        self._cancel_request_timer()
        logger.info("refused an HTTP request from %s: %d %s", _peer(self), status, message)
        body = error_body(cls, message)
        reason = http.RESPONSES.get(status, b"Error")
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (
                                 status, reason, len(body)) + body)
        self.loseConnection()


_DATE = [0, b""]


def _date():
    """The Date header's value, computed once a second."""
    now = int(time.time())
    if now != _DATE[0]:
        _DATE[0], _DATE[1] = now, http.datetimeToString(now)
    return _DATE[1]


def _peer(channel):
    try:
        peer = channel.transport.getPeer()
        return "%s:%s" % (peer.host, peer.port)
    except Exception:  # noqa: BLE001 - for a log line only
        return "?"


class _Root(resource.Resource):
    """One resource for every path: the site's routes decide."""

    isLeaf = True

    def __init__(self, site):
        super().__init__()
        self._site = site

    def render(self, request):
        return self._site.dispatch(request)


class HttpSite(server.Site):
    """The site over a backend: routes (see add_routes), limits, authentication, pool.

    backend: a JobQueue (or a stand-in); reactor; limits: HttpLimits; authenticator:
    auth.Authenticator; pool: a started Twisted ThreadPool for blocking handlers;
    context: extra objects handlers use (config values, the cluster, metrics).
    """

    requestFactory = _Request
    protocol = _Channel
    noisy = False

    def __init__(self, backend, reactor, limits, authenticator, pool, context=None,
                 access_log=None):
        super().__init__(_Root(self), timeout=limits.idle_timeout, reactor=reactor)
        self.access_log = access_log
        self.backend = backend
        self.reactor = reactor
        self.limits = limits
        self.authenticator = authenticator
        self.pool = pool
        self.context = context or {}
        self.routes = []
        self.connections = set()
        self._refusals = connlimit.refusal_warning("HTTP", reactor.seconds)
        self.accepting = True
        self.streams = {}  # open event streams: stream -> its request
        self.static = _static_files()
        self.displayTracebacks = False
        self.noisy = False
        self._deliveries = collections.deque()
        self._deliveries_lock = threading.Lock()

    def deliver(self, func, *args):
        """Run func(*args) in the reactor thread; callable from any thread. Answers come
        from the journal's thread in bursts: one wake-up of the reactor per burst."""
        with self._deliveries_lock:
            self._deliveries.append((func, args))
            wake = len(self._deliveries) == 1
        if wake:
            self.reactor.callFromThread(self._run_deliveries)

    def _run_deliveries(self):
        with self._deliveries_lock:
            pending, self._deliveries = self._deliveries, collections.deque()
        for func, args in pending:
            try:
                func(*args)
            except Exception:  # noqa: BLE001 - one answer's bug must not drop the others
                logger.exception("delivering an HTTP answer failed")

    def log(self, request):
        """A line in the access log, if there is one (see AccessLog)."""
        if self.access_log is not None:
            self.access_log.write(request)

    def add_routes(self, routes):
        self.routes.extend(routes)

    def buildProtocol(self, addr):
        if len(self.connections) >= self.limits.max_connections:
            self._refusals.count(len(self.connections), self.limits.max_connections)
            return None
        return super().buildProtocol(addr)

    def connection_made(self, channel):
        self.connections.add(channel)

    def connection_lost(self, channel):
        self.connections.discard(channel)

    # Dispatch

    def dispatch(self, request):
        path = request.path.decode("utf-8", "replace")
        route, params, allowed = self._route(request.method.decode("ascii", "replace"), path)
        if route is None:
            if allowed:
                return self._write_error(request, HttpError(
                    405, "MethodNotAllowed", "%s is not allowed on %s (allowed: %s)" % (
                        request.method.decode("ascii", "replace"), path,
                        ", ".join(sorted(allowed)))), "json",
                    {b"Allow": ", ".join(sorted(allowed)).encode("ascii")})
            return self._write_error(request, HttpError(404, "NotFound", "no such resource: %s"
                                                        % path[:200]), "json")
        try:
            authenticated, name = self.authenticator.identify(
                request, _query_token(request))
            request.jq_caller = name
            self.authenticator.check_browser(request, route.mutating)
            call = Call(request, self, authenticated, name)
            if route.page and authenticated and _query_token(request):
                request.addCookie(auth.TOKEN_COOKIE, _query_token(request).encode("utf-8"),
                                  path=b"/", httpOnly=True, sameSite="strict",
                                  secure=request.isSecure())
            result = route.handler(call, *params)
        except Exception as err:  # noqa: BLE001 - every error is answered
            return self._write_error(request, err, route.errors)
        if isinstance(result, defer.Deferred):
            finished = request.notifyFinish()
            finished.addErrback(lambda _: None)
            result.addCallbacks(lambda answer: self._write(request, answer),
                                lambda fail: self._write_error(request, fail.value,
                                                               route.errors))
            result.addErrback(self._late_error, request)
            return server.NOT_DONE_YET
        return self._write(request, result)

    def _route(self, method, path):
        allowed = set()
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, match.groups(), None
            allowed.add(route.method)
        return None, (), allowed

    def _write(self, request, answer):
        if request.finished or request._disconnected:
            if isinstance(answer, Streaming):
                answer.stop()
            return server.NOT_DONE_YET
        if isinstance(answer, Streaming):
            self._start_stream(request, answer)
            return server.NOT_DONE_YET
        request.setResponseCode(answer.status)
        request.setHeader(b"Content-Type", answer.content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        for key, value in answer.headers.items():
            request.setHeader(key, value)
        request.setHeader(b"Content-Length", b"%d" % len(answer.body))
        if request.method != b"HEAD":
            request.write(answer.body)
        request.finish()
        return server.NOT_DONE_YET

    def _write_error(self, request, err, style, headers=None):
        status, cls, message = status_of(err)
        if status >= 500:
            logger.error("HTTP %s %s failed: %s: %s", request.method.decode("ascii", "replace"),
                         request.path[:200].decode("utf-8", "replace"), cls, message,
                         exc_info=err if status == 500 and isinstance(err, BaseException)
                         else None)
        if style == "coalition":
            answer = Response(status, b"-1", b"text/plain; charset=utf-8", headers)
        else:
            answer = Response(status, error_body(cls, message), JSON_TYPE, headers)
            if status == 401:
                answer.headers[b"WWW-Authenticate"] = b'Bearer realm="jqueue"'
        return self._write(request, answer)

    def _late_error(self, fail, request):
        logger.error("HTTP answer failed: %s", fail.getTraceback())
        if not request.finished and not request._disconnected:
            try:
                request.setResponseCode(500)
                request.finish()
            except Exception:  # noqa: BLE001 - the connection is gone
                pass

    # Streams (Server-Sent Events)

    def _start_stream(self, request, stream):
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        self.streams[stream] = request

        def gone(_):
            self.streams.pop(stream, None)
            stream.stop()
        request.notifyFinish().addBoth(gone)
        stream.start(request)

    def stop_streams(self):
        """Close every event stream (the daemon stops)."""
        for stream in list(self.streams):
            stream.stop()
            stream.close()
        self.streams.clear()

    def recheck_streams(self):
        """Close the event streams whose caller would be refused now (its token was
        revoked by a reload of the tokens); their number."""
        closed = 0
        for stream, request in list(self.streams.items()):
            try:
                self.authenticator.identify(request, _query_token(request))
            except (auth.AuthError, auth.Forbidden):
                self.streams.pop(stream, None)
                channel = request.channel
                stream.stop()
                stream.close()
                if channel is not None:  # not kept alive for more of that caller's requests
                    channel.loseConnection()
                closed += 1
        return closed

    # Static files

    def static_response(self, name):
        """The page's file name as a Response; 404 unless it is one we ship."""
        if name not in self.static:
            raise HttpError(404, "NotFound", "no such file: %s" % name[:100])
        data = self.static[name]
        return Response(200, data, _CONTENT_TYPES[name.rsplit(".", 1)[1]].encode("ascii"))


def _static_files():
    """{name: bytes} of the files shipped in static/ (read once: nothing else is served)."""
    files = {}
    try:
        names = os.listdir(STATIC_DIR)
    except OSError:
        return files
    for name in names:
        if _STATIC_NAME.match(name):
            with open(os.path.join(STATIC_DIR, name), "rb") as stream:
                files[name] = stream.read()
    return files


def _query_token(request):
    values = request.args.get(b"token")
    return values[-1].decode("utf-8", "replace") if values else None


def run_blocking(call, fn, *args):
    """A Deferred of fn(*args) in the pool (shortcut for handlers)."""
    return call.blocking(fn, *args)


def failure_value(value):
    """The exception of a Failure (or the value itself)."""
    return value.value if isinstance(value, tw_failure.Failure) else value


def quote(text):
    return urllib.parse.quote(text, safe="")
