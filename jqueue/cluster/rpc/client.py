"""The blocking node RPC client (standard library only: socket and ssl).

An RpcClient keeps one HTTPS connection to one node alive across calls (a new TLS
connection costs ten times a call on a kept one) and makes one call at a time. The
server's certificate must name the node called (SNI and hostname check against the node
name, whatever the address).

Failures are never hidden. A kept connection found closed before a request is sent is
replaced once, transparently; once a request is sent, any failure closes the connection
and raises RemoteError naming the node, the address, the method and the cause (RPC calls
are idempotent by design, but retrying is the caller's decision). Errors the server
answers are raised as the jqueue exceptions they name.

Calls may be pipelined (RpcClient.send_pipelined, then receive_pipelined for each, in
order): HTTP/1.1 pipelining on the kept connection, the node answering them in the order
they came, so that it works on the next while this side reads the last (a command's
output: jqueue.cluster.commandlink). A failure loses every call sent and not received.

A stream (RpcClient.stream, over a stream method of jqueue.cluster.rpc.server) is kept on
a connection of its own: its opening call once, then one message and its answer per call,
with the same timeouts and errors. A node that does not serve the method (an older
jq-noded) answers its opening call with 404: StreamUnsupported, for the caller to fall
back to plain calls.

call_many calls several nodes in parallel and reports every node's outcome.
"""

import concurrent.futures
import logging
import re
import select
import socket
import ssl
import struct
import threading
import time

from jqueue import constants, errors, serializer
from jqueue.cluster import tls

logger = logging.getLogger(__name__)

_METHOD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: Exceptions of a transport failure (ssl.SSLError and socket.timeout are OSErrors).
_TRANSPORT_ERRORS = (OSError, ValueError)
#: Longest answer head accepted, and the size of each read.
_MAX_HEAD = 65536
_RECV_SIZE = 65536
_OCTETS = b"application/octet-stream"
#: As in jqueue.cluster.rpc.server (not imported: this module needs no Twisted).
_MESSAGE_LENGTHS = struct.Struct(">II")
_ANSWER_LENGTH = struct.Struct(">I")
#: Data of a stream message up to this size goes out in one write with its head.
_JOINED_WRITE = 65536
#: OpenSSL's reasons for the alerts of a peer that refused our certificate.
_CERTIFICATE_ALERTS = frozenset((
    "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_UNKNOWN_CA"))


def parse_address(address):
    """(host, port) from "host:port" or "[v6 address]:port"; ParameterError otherwise."""
    host, sep, port = str(address).rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.ParameterError("invalid node address %r: expected host:port" % (address,))
    return host, int(port)


def _check_method(method):
    if not isinstance(method, str) or not _METHOD_RE.fullmatch(method):
        raise errors.ParameterError("invalid RPC method name %r" % (method,))


def encode_body(method, body):
    """The JSON bytes of a call's body (a dict); ParameterError if it cannot be sent."""
    _check_method(method)
    if not isinstance(body, dict):
        raise errors.ParameterError("the body of RPC %s must be a dict, not %s" % (
            method, type(body).__name__))
    try:
        return serializer.dumps_bytes(body)
    except (TypeError, ValueError, RecursionError) as err:
        raise errors.ParameterError("cannot encode the body of RPC %s: %s" % (
            method, err)) from None


class _Connection:
    """A kept TLS connection speaking the HTTP/1.1 that node RPC needs, and no more.

    A request is one write (head and body together: one TLS record for small calls);
    an answer must carry Content-Length (jqueue.cluster.rpc.server always sends it). This costs
    a third of http.client's CPU per call, which matters on the replication hot path.
    """

    def __init__(self, host, port, node_name, context, timeout):
        self.host, self.port = host, port
        self.node_name = node_name
        self._context = context
        self._timeout = timeout
        self._buffer = bytearray()  # grows in place: a long answer is copied once, not per read
        self.sock = None

    def connect(self):
        raw = socket.create_connection((self.host, self.port), self._timeout)
        try:
            self.sock = self._context.wrap_socket(raw, server_hostname=self.node_name)
        except BaseException:
            raw.close()
            raise

    def post(self, path, body):
        """Send a POST of body (bytes) to path."""
        head = (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                b"Accept: application/json, application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % (
                    path.encode("ascii"), self.node_name.encode("idna"), len(body)))
        self.sock.sendall(head + body)

    def response(self, limit):
        """(status, reason, content type, body, close) of the next answer; ValueError if
        malformed."""
        head = self._read_head()
        status_line, _, rest = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ValueError("malformed status line %r" % status_line[:80])
        headers = {}
        for line in rest.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = headers.get(b"content-length", b"")
        if not length.isdigit():
            raise ValueError("answer without a valid Content-Length")
        if int(length) > limit:
            raise ValueError("answer longer than %d bytes" % limit)
        body = self._read_exactly(int(length))
        close = (headers.get(b"connection", b"").lower() == b"close"
                 or parts[0] == b"HTTP/1.0")
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        return int(parts[1]), reason, content_type, body, close

    def _read_head(self):
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self._buffer[:end])
                del self._buffer[:end + 4]
                return head
            if len(self._buffer) > _MAX_HEAD:
                raise ValueError("answer head longer than %d bytes" % _MAX_HEAD)
            self._fill()

    def _read_exactly(self, count):
        if len(self._buffer) >= count:
            with memoryview(self._buffer) as buffered:  # released before the del below
                body = bytes(buffered[:count])
            del self._buffer[:count]
            return body
        # The rest is read straight into the answer: a piece of output (960 KiB) is not
        # copied through the buffer, nor grown into it.
        body = bytearray(count)
        view = memoryview(body)
        have = len(self._buffer)
        view[:have] = self._buffer
        self._buffer.clear()
        while have < count:
            read = self.sock.recv_into(view[have:])
            if not read:
                raise ConnectionResetError("the node closed the connection")
            have += read
        return bytes(body)

    def _fill(self):
        data = self.sock.recv(_RECV_SIZE)
        if not data:
            raise ConnectionResetError("the node closed the connection")
        self._buffer += data

    def send_message(self, head, data):
        """Send one stream message: head (JSON bytes) and data (bytes)."""
        prefix = _MESSAGE_LENGTHS.pack(len(head), len(data)) + head
        if len(data) <= _JOINED_WRITE:
            self.sock.sendall(prefix + data)
        else:  # no copy of a big commit's frames
            self.sock.sendall(prefix)
            self.sock.sendall(data)

    def answer(self, limit):
        """The next stream answer (bytes); ValueError if over limit."""
        (length,) = _ANSWER_LENGTH.unpack(self._read_exactly(_ANSWER_LENGTH.size))
        if length > limit:
            raise ValueError("answer longer than %d bytes" % limit)
        return self._read_exactly(length)

    def usable(self):
        """Whether the kept connection is open, with nothing unread (no close, no alert)."""
        if self.sock is None or self._buffer:
            return False
        try:
            if self.sock.pending():
                return False
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self):
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class StreamUnsupported(errors.RemoteError):
    """The node does not serve the stream method (an older jq-noded)."""


class _Failure(Exception):
    """A transport failure inside RpcClient; turned into RemoteError by call."""

    def __init__(self, cause):
        super().__init__(cause)
        self.cause = cause


class RpcClient:
    """Calls one node: node_name (checked against its certificate) at address "host:port".

    ssl_context is usually jqueue.cluster.tls.Credentials.client_context(). timeout bounds each
    call (connecting, sending and the answer), in seconds. Thread-safe: calls from
    several threads wait for each other.
    """

    def __init__(self, node_name, address, ssl_context, timeout=constants.RPC_TIMEOUT):
        self.node_name = node_name
        self.address = address
        self.timeout = timeout
        self._host, self._port = parse_address(address)
        self._context = ssl_context
        self._lock = threading.Lock()
        self._conn = None
        self._pipelined = 0  # calls sent on _conn whose answers are not read yet
        self._stream = None  # (method, opening body, _Connection) of the kept stream

    def __repr__(self):
        return "<RpcClient %s at %s>" % (self.node_name, self.address)

    def call(self, method, body):
        """Call method with body (a dict); return its result or raise its error."""
        return self.call_encoded(method, encode_body(method, body))

    def call_encoded(self, method, data):
        """Call method with a body already encoded by encode_body (for fan-out)."""
        _check_method(method)
        deadline = time.monotonic() + self.timeout
        with self._lock:
            if self._pipelined:
                raise errors.ProgrammerError("RPC %s to node %s: %d pipelined calls not "
                                             "received" % (method, self.node_name,
                                                           self._pipelined))
            try:
                answer = self._exchange(method, data, deadline)
            except _Failure as failure:
                self._close_unlocked()
                raise self._remote_error(method, failure.cause) from None
        return self._answer(method, *answer)

    @property
    def pipelined(self):
        """How many calls were sent by send_pipelined and not received yet."""
        return self._pipelined

    def send_pipelined(self, method, body):
        """Send a call of method with body (a dict) whose answer receive_pipelined reads
        later, after those of the calls sent before it (see the module docstring).
        RemoteError if it cannot be sent: the connection is closed, and the calls sent
        before it are lost (pipelined is 0)."""
        data = encode_body(method, body)
        deadline = time.monotonic() + self.timeout
        with self._lock:
            try:
                if self._pipelined:  # on the connection of those before it, or not at all
                    self._send(method, data, deadline)
                else:
                    self._send_kept(method, data, deadline)
            except _Failure as failure:
                self._close_unlocked()
                raise self._remote_error(method, failure.cause) from None
            self._pipelined += 1

    def receive_pipelined(self, method):
        """The result of the oldest call sent by send_pipelined (method: its method, for
        the errors), or the error it was answered. RemoteError if the connection fails
        (or the node closed it after an answer): the calls still unread are lost."""
        deadline = time.monotonic() + self.timeout
        with self._lock:
            if not self._pipelined:
                raise self._remote_error(method, "the connection closed before the answer")
            try:
                self._conn.sock.settimeout(_remaining(deadline))
                answer = self._receive(deadline)
            except _Failure as failure:
                self._close_unlocked()
                raise self._remote_error(method, failure.cause) from None
            except (OSError, ValueError) as err:  # the socket's timeout could not be set
                self._close_unlocked()
                raise self._remote_error(method, err) from None
            if self._conn is not None:  # (a close answered leaves none: pipelined is 0)
                self._pipelined -= 1
        return self._answer(method, *answer)

    def stream(self, method, opening, head, data):
        """Send one message (head: a dict, data: bytes) on the kept stream of method
        opened with the body opening (a dict; opened again if it changed or the stream
        broke); return its answer's result or raise its error. StreamUnsupported if the
        node does not serve method."""
        head = encode_body(method, head)
        deadline = time.monotonic() + self.timeout
        with self._lock:
            try:
                payload = self._stream_exchange(method, opening, head, data, deadline)
            except _Failure as failure:
                self._close_stream_unlocked()
                raise self._remote_error(method, failure.cause) from None
        return self._result(method, 200, "OK", payload)

    def close(self):
        """Close the kept connections; a call in progress in another thread fails at once."""
        if self._lock.acquire(blocking=False):
            try:
                self._close_unlocked()
                self._close_stream_unlocked()
            finally:
                self._lock.release()
            return
        for conn in (self._conn, self._stream and self._stream[2]):
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # The exchange (under the lock)

    def _stream_exchange(self, method, opening, head, data, deadline):
        kept = self._stream
        reused = (kept is not None and kept[:2] == (method, opening) and kept[2].usable())

        def reopen():
            self._close_stream_unlocked()
            self._open_stream(method, opening, deadline)

        _send_on(reused, reopen, lambda: self._stream_send(head, data, deadline))
        try:
            return self._stream[2].answer(constants.RPC_MAX_RESPONSE_BYTES)
        except _TRANSPORT_ERRORS as err:
            raise _Failure(err) from None

    def _open_stream(self, method, opening, deadline):
        """Open a stream: its own connection, its opening call answered."""
        conn = self._new_connection(deadline)
        try:
            conn.post(constants.RPC_PATH_PREFIX + method, encode_body(method, opening))
            status, reason, _type, payload, _close = conn.response(
                constants.RPC_MAX_RESPONSE_BYTES)
        except _TRANSPORT_ERRORS as err:
            conn.close()
            raise _Failure(err) from None
        except BaseException:
            conn.close()
            raise
        if status == 404:
            conn.close()
            raise StreamUnsupported("node %s (%s) serves no stream %s" % (
                self.node_name, self.address, method))
        try:
            self._result(method, status, reason, payload)
        except BaseException:
            conn.close()
            raise
        self._stream = (method, opening, conn)

    def _stream_send(self, head, data, deadline):
        try:
            conn = self._stream[2]
            conn.sock.settimeout(_remaining(deadline))
            conn.send_message(head, data)
        except _TRANSPORT_ERRORS as err:
            raise _Failure(err) from None

    def _close_stream_unlocked(self):
        kept, self._stream = self._stream, None
        if kept is not None:
            kept[2].close()

    def _exchange(self, method, data, deadline):
        self._send_kept(method, data, deadline)
        return self._receive(deadline)

    def _send_kept(self, method, data, deadline):
        """Send a call on the kept connection, or on a new one (see _send_on)."""
        reused = self._conn is not None and self._conn.usable()

        def reconnect():
            self._close_unlocked()
            self._connect(deadline)

        _send_on(reused, reconnect, lambda: self._send(method, data, deadline))

    def _connect(self, deadline):
        self._conn = self._new_connection(deadline)

    def _new_connection(self, deadline):
        conn = _Connection(self._host, self._port, self.node_name, self._context,
                           _remaining(deadline))
        try:
            conn.connect()
        except _TRANSPORT_ERRORS as err:
            conn.close()
            raise _Failure(err) from None
        return conn

    def _send(self, method, data, deadline):
        try:
            self._conn.sock.settimeout(_remaining(deadline))
            self._conn.post(constants.RPC_PATH_PREFIX + method, data)
        except _TRANSPORT_ERRORS as err:
            raise _Failure(err) from None

    def _receive(self, deadline):
        """(status, reason, content type, body) of the answer; the connection is closed if
        it must be."""
        try:
            status, reason, content_type, payload, close = self._conn.response(
                constants.RPC_MAX_RESPONSE_BYTES)
        except _TRANSPORT_ERRORS as err:
            raise _Failure(err) from None
        if close:
            self._close_unlocked()
        return status, reason, content_type, payload

    def _close_unlocked(self):
        conn, self._conn = self._conn, None
        self._pipelined = 0
        if conn is not None:
            conn.close()

    # Answers and errors

    def _answer(self, method, status, reason, content_type, payload):
        if status == 200 and content_type == _OCTETS:
            return payload  # a result that is bytes (jqueue.cluster.rpc.server.Bytes)
        return self._result(method, status, reason, payload)

    def _result(self, method, status, reason, payload):
        try:
            answer = serializer.loads(payload)
        except errors.ParseError:
            answer = None
        if (not isinstance(answer, dict)
                or not isinstance(answer.get(constants.RPC_KEY_SUCCESS), bool)
                or constants.RPC_KEY_RESULT not in answer):
            raise self._remote_error(method, "answer HTTP %d %s without a valid JSON body" % (
                status, reason))
        result = answer[constants.RPC_KEY_RESULT]
        if not answer[constants.RPC_KEY_SUCCESS]:
            raise errors.decode_exception(result)
        if status != 200:
            raise self._remote_error(method, "answer HTTP %d %s" % (status, reason))
        return result

    def _remote_error(self, method, cause):
        return errors.RemoteError("RPC %s to node %s (%s) failed: %s" % (
            method, self.node_name, self.address, _describe(cause, self.timeout)))


def _send_on(reused, connect, send):
    """send() on the kept connection if reused, else on a new one (connect()); a send
    failing on a kept one (closed by the node meanwhile: nothing of it was taken) is
    made once more on a new one."""
    if not reused:
        connect()
    try:
        send()
    except _Failure:
        if not reused:
            raise
        logger.debug("kept connection closed by the node; connecting again")
        connect()
        send()


def _remaining(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Failure(TimeoutError())
    return left


def _describe(cause, timeout):
    """A short text for a transport failure."""
    if isinstance(cause, str):
        return cause
    if isinstance(cause, (TimeoutError, socket.timeout)):
        return "timed out after %ss" % timeout
    if isinstance(cause, ssl.SSLCertVerificationError):
        return "server certificate refused: %s%s" % (
            cause.verify_message or cause,
            " (%s)" % tls.clock_note() if cause.verify_code in tls.DATE_ERRORS else "")
    if isinstance(cause, ssl.SSLEOFError):
        return ("the node closed the TLS connection (did it refuse this node's certificate? "
                "its log tells)")
    if isinstance(cause, ssl.SSLError):
        if cause.reason in _CERTIFICATE_ALERTS:
            return ("TLS error: %s: the node refused this node's certificate (its clock wrong, "
                    "or another cluster's CA there? its log tells)" % cause)
        return "TLS error: %s" % cause
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, (ConnectionResetError, BrokenPipeError)):
        return "connection closed by the node (%s)" % (cause.__class__.__name__)
    return "%s: %s" % (cause.__class__.__name__, cause)


# Fan-out


def _start_call(client, method, data):
    """Run client.call_encoded in a thread of its own; a Future of its outcome."""
    future = concurrent.futures.Future()

    def run():
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(client.call_encoded(method, data))
        except BaseException as err:  # noqa: BLE001 - every outcome goes to the caller
            future.set_exception(err)

    threading.Thread(target=run, name="rpc-%s" % client.node_name, daemon=True).start()
    return future


def clock_skew(info, sent, received):
    """How far a node's clock is off ours at least, from an answer carrying its time
    (node_info, exec_poll), said between our sent and received: 0 if it falls in that
    span; None if it did not say it (an older node)."""
    node_time = info.get("time") if isinstance(info, dict) else None
    if not isinstance(node_time, (int, float)) or isinstance(node_time, bool):
        return None
    return node_time - min(max(node_time, sent), received)


def call_many(clients, method, body, timeout=None):
    """Call method with body on every client in parallel: {node_name: result or exception}.

    Returns once every call finished or timeout seconds passed (None: each client's own
    timeout bounds its call); a call still running then maps to RemoteError "timed out"
    (it goes on in the background, holding its client until its own timeout). One node's
    failure never raises; a body that cannot be encoded raises ParameterError.
    """
    clients = list(clients)
    names = [client.node_name for client in clients]
    if len(set(names)) != len(names):
        raise errors.ParameterError("call_many: node names are not unique: %s" % names)
    data = encode_body(method, body)
    futures = {client.node_name: _start_call(client, method, data) for client in clients}
    done, _ = concurrent.futures.wait(futures.values(), timeout=timeout)
    results = {}
    for client in clients:
        future = futures[client.node_name]
        if future not in done:
            results[client.node_name] = errors.RemoteError(
                "RPC %s to node %s (%s) failed: timed out after %ss" % (
                    method, client.node_name, client.address, timeout))
        elif future.exception() is not None:
            results[client.node_name] = future.exception()
        else:
            results[client.node_name] = future.result()
    return results
