"""LUXI, the client protocol (wire compatible with Ganeti's): framing, methods, client, server.

``Client`` needs only the standard library; ``LuxiServerFactory`` (Twisted) is imported
on first use, so that clients never import Twisted.

May import the vocabulary and the job model (the methods check job fields and filters);
it serves any JobQueue-like backend handed to it, so it imports no store, runner,
cluster or queue module.
"""

from jqueue.luxi.client import Client, default_socket_path

__all__ = ["Client", "LuxiServerFactory", "ServerLimits", "default_socket_path"]

_SERVER_NAMES = frozenset(["LuxiServerFactory", "ServerLimits"])


def __getattr__(name):
    if name in _SERVER_NAMES:
        from jqueue.luxi import server
        return getattr(server, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
