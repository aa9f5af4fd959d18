"""Child process of test_rpc: node RPC servers with test handlers on loopback ports.

Usage: rpc_server_child.py MAX_BODY ALLOWED_PEERS NAME=TLS_DIR[=IDLE_TIMEOUT] ... One
listener per NAME (its credentials from TLS_DIR), on a free port, all sharing one record
of handler calls; "PORTS {"name": port, ...}" is printed once all listen. The process
exits when its stdin is closed.

Handlers: echo (the body and the caller), size (length of body["data"]), octets (a Bytes
result: bytes 0..255, body["times"] times), sleep
(body["seconds"][own name] seconds, blocking), later (non-blocking, answers from a
timer), fail (OpPrereqError), bug (ZeroDivisionError), calls (the recorded calls; not
itself recorded) and stats (connections accepted per listener; not recorded). A stream
method, stream: its opening is refused if the body says "refuse"; each message answers
{"seq": head["seq"], "size": len(data), "opening": the opening body, "peer": peer} at
once, or after head["delay"] seconds, or fails (OpPrereqError) if head["fail"]. allow
(non-blocking) adds body["name"] to the nodes allowed to call, or removes it.
"""

import logging
import os
import sys
import threading
import time
import traceback

from twisted.internet import defer, reactor, task

from jqueue import errors, serializer
from jqueue.cluster import tls
from jqueue.cluster.rpc import server

CALLS = []
SITES = {}
#: The nodes allowed to call (the "allow" handler changes it, as membership changes do).
ALLOWED = set()


def recorded(own_name, method, func):
    """func, recording (own name, method, peer) of every call before running it."""

    def handler(peer, body):
        CALLS.append([own_name, method, peer])
        return func(peer, body)

    return handler


def make_handlers(own_name):
    def sleep(peer, body):
        time.sleep(body["seconds"][own_name])
        return own_name

    def later(peer, body):
        return task.deferLater(reactor, 0.01, lambda: {"from": own_name, "peer": peer})

    def fail(peer, body):
        raise errors.OpPrereqError("refused on purpose", "wrong_input")

    def bug(peer, body):
        return 1 / 0

    functions = {
        "echo": lambda peer, body: {"peer": peer, "body": body, "server": own_name},
        "size": lambda peer, body: len(body["data"]),
        "octets": lambda peer, body: server.Bytes(bytes(range(256)) * body["times"]),
        "sleep": sleep, "fail": fail, "bug": bug,
    }
    handlers = {name: server.Handler(recorded(own_name, name, func))
                for name, func in functions.items()}
    handlers["later"] = server.Handler(recorded(own_name, "later", later), blocking=False)
    handlers["stream"] = server.StreamHandler(recorded(own_name, "stream", open_stream))
    handlers["allow"] = server.Handler(allow, blocking=False)
    handlers["calls"] = server.Handler(lambda peer, body: list(CALLS), blocking=False)
    handlers["stats"] = server.Handler(lambda peer, body: {
        name: site.connections_made for name, site in SITES.items()}, blocking=False)
    return handlers


def allow(peer, body):
    """Allow (body["allowed"] true) or stop allowing body["name"] to call."""
    (ALLOWED.add if body["allowed"] else ALLOWED.discard)(body["name"])
    return sorted(ALLOWED)


def open_stream(peer, opening):
    if opening.get("refuse"):
        raise errors.OpPrereqError("stream refused on purpose", "wrong_input")

    def on_message(head, data):
        if head.get("fail"):
            raise errors.OpPrereqError("message refused on purpose", "wrong_input")
        answer = {"seq": head.get("seq"), "size": len(data), "opening": opening, "peer": peer}
        if head.get("delay"):
            return task.deferLater(reactor, head["delay"], lambda: answer)
        return answer

    return on_message


@defer.inlineCallbacks
def start(max_body, listeners):
    try:
        ports = yield listen_all(max_body, listeners)
    except Exception:  # noqa: BLE001 - the parent sees the traceback and no PORTS line
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.write("PORTS %s\n" % serializer.dumps(ports))
    sys.stdout.flush()


@defer.inlineCallbacks
def listen_all(max_body, listeners):
    ports = {}
    for name, tls_dir, *options in listeners:
        # options: idle timeout, most connections, handshake timeout (each optional)
        limits = {key: kind(value) for (key, kind), value in zip(
            [("timeout", float), ("max_connections", int), ("handshake_timeout", float)],
            options)}
        site = server.make_site(make_handlers(name), ALLOWED.__contains__, max_body=max_body,
                                reactor=reactor, **dict({"timeout": 60}, **limits))
        SITES[name] = site
        port = yield server.listen(reactor, site, tls.Credentials.from_dir(tls_dir),
                                   "127.0.0.1", 0)
        ports[name] = port.getHost().port
    return ports


def wait_for_stdin_eof():
    sys.stdin.read()
    reactor.callFromThread(reactor.stop)


def main(argv):
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="child %(levelname)s %(name)s: %(message)s")
    max_body = int(argv[1])
    ALLOWED.update(argv[2].split(","))
    listeners = [arg.split("=") for arg in argv[3:]]
    reactor.getThreadPool().adjustPoolsize(4, 16)
    threading.Thread(target=wait_for_stdin_eof, daemon=True).start()
    reactor.callWhenRunning(start, max_body, listeners)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main(sys.argv)
