"""Node RPC: JSON calls between cluster nodes over HTTPS with mutual TLS.

``server`` is the Twisted side (jq-noded serves it); ``client`` is the blocking side
(standard library only) that the master uses to call its candidates, one kept-alive
connection per peer.

May import the vocabulary and cluster.tls; nothing else of the cluster.
"""
