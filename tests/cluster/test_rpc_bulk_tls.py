"""Tests of the node RPC server's TLS layer (jqueue.cluster.rpc.server._BulkTLSFactory).

Mostly no sockets: the server's TLS protocol writes into a transport that records each
write, and the client is the RPC client's own ssl context over memory BIOs, so what is
counted is exactly what the server hands its socket; one test puts Twisted's TCP transport
on a socket pair, to count the turns an answer takes to leave.
"""

import os
import socket
import ssl

import pytest
from twisted.internet import protocol, tcp
from twisted.internet.testing import MemoryReactor, StringTransport

from jqueue.cluster import tls
from jqueue.cluster.rpc import server

ANSWER = os.urandom(960 * 1024)  # a piece of a command's output (jqueue.run.commands)


class _CountingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)


class _Answerer(protocol.Protocol):
    """Answers each b"go" with ANSWER, in one write (as twisted.web writes a body)."""

    def dataReceived(self, data):
        for _ in range(data.count(b"go")):
            self.transport.write(ANSWER)


def _write_tls_dir(path, ca_cert, key, cert):
    os.makedirs(path)
    tls.write_pem(os.path.join(path, "ca.crt"), tls.cert_to_pem(ca_cert), False)
    tls.write_pem(os.path.join(path, "node.crt"), tls.cert_to_pem(cert), False)
    tls.write_pem(os.path.join(path, "node.key"), tls.key_to_pem(key), True)
    return tls.Credentials.from_dir(path)


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("pki"))
    ca = tls.create_ca("cluster")
    return {name: _write_tls_dir(os.path.join(base, name), ca[1],
                                 *tls.issue_node_cert(*ca, name))
            for name in ("node1", "node2")}


def _answering_server(credentials):
    """The node RPC server's TLS protocol (node1's) around an _Answerer, unconnected."""
    factory = server._BulkTLSFactory(credentials["node1"].server_options(), False,
                                     protocol.Factory.forProtocol(_Answerer))
    return factory.buildProtocol(None)


def _handshake(client, step):
    """Drive client's TLS handshake, calling step() (the server's turn) while it waits."""
    for _ in range(50):
        try:
            client.do_handshake()
            return
        except ssl.SSLWantReadError:
            step()
    raise AssertionError("no TLS handshake")


class _Pair:
    """The server's TLS protocol (node1) and a client (node2) joined by memory."""

    def __init__(self, credentials):
        self.server = _answering_server(credentials)
        self.transport = _CountingTransport()
        self.server.makeConnection(self.transport)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = credentials["node2"].client_context().wrap_bio(
            self.incoming, self.outgoing, server_hostname="node1")
        _handshake(self.client, self.pump)
        self.pump()

    def pump(self):
        """Move what each side wrote to the other."""
        sent = self.outgoing.read()
        if sent:
            self.server.dataReceived(sent)
        answered = self.transport.value()
        self.transport.clear()
        if answered:
            self.incoming.write(answered)

    def received(self, size):
        data = bytearray()
        while len(data) < size:
            try:
                data += self.client.read(size - len(data))
            except ssl.SSLWantReadError:
                self.pump()
                if not self.incoming.pending:
                    break
        return bytes(data)


def test_a_large_answer_goes_out_in_a_few_writes_and_arrives_whole(credentials):
    """A 960 KiB answer reaches the socket in a handful of writes of whole TLS records
    (Twisted's own layer makes one write per 16 KiB record: 60 here), and the client
    decrypts it byte for byte; the connection then carries the next answer."""
    pair = _Pair(credentials)
    for _ in range(2):
        pair.transport.writes = 0
        pair.client.write(b"go")
        pair.pump()
        assert 1 <= pair.transport.writes <= 8
        assert pair.received(len(ANSWER)) == ANSWER



class _OfferedSocket:
    """A socket that records how many bytes each send was offered."""

    def __init__(self, sock):
        self._sock = sock
        self.offered = []

    def send(self, data, *flags):
        self.offered.append(len(data))
        return self._sock.send(data, *flags)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _SocketPair:
    """The server's TLS protocol on a real socket (Twisted's TCP transport over one end
    of a socket pair, driven by hand: no reactor runs) and the RPC client's ssl context
    on the other end."""

    def __init__(self, credentials):
        ours, theirs = socket.socketpair()
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.setblocking(False)
        self.server = _answering_server(credentials)
        self.socket = _OfferedSocket(ours)
        self.transport = tcp.Connection(self.socket, self.server, MemoryReactor())
        self.transport.connected = True
        self.server.makeConnection(self.transport)
        self.client = credentials["node2"].client_context().wrap_socket(
            theirs, server_hostname="node1", do_handshake_on_connect=False)
        self.turns = 0
        _handshake(self.client, self.turn)

    def turn(self):
        """One reactor turn of the server: read what came, then write if it has to."""
        self.transport.doRead()
        if self.transport.dataBuffer[self.transport.offset:] or self.transport._tempDataLen:
            self.turns += 1
            self.transport.doWrite()

    def received(self, size):
        data = bytearray()
        for _ in range(1000):
            try:
                data += self.client.recv(size - len(data))
            except ssl.SSLWantReadError:
                self.turn()
            if len(data) == size:
                return bytes(data)
        raise AssertionError("%d bytes of %d received" % (len(data), size))


def test_a_large_answer_is_offered_to_the_socket_whole(credentials):
    """A 960 KiB answer is offered to the socket at once (Twisted offers 128 KiB a turn
    of the reactor: eight turns), and arrives whole, twice over one connection; where
    the socket's buffer has room for it (raised to 4 MiB here, as the kernel allows), it
    leaves in one turn."""
    pair = _SocketPair(credentials)
    room = pair.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    for _ in range(2):
        pair.client.sendall(b"go")
        pair.turns, pair.socket.offered = 0, []
        assert pair.received(len(ANSWER)) == ANSWER
        assert pair.socket.offered[0] > len(ANSWER)  # the answer and its TLS records
        if room >= 2 * len(ANSWER):
            assert pair.turns == 1
