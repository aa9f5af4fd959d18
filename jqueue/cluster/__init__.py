"""Nodes, certificates, replication and failover: everything that spans machines.

``membership`` (the cluster configuration, node state and election rules), ``tls`` (the
cluster CA and node certificates), ``rpc`` (node RPC over mutual TLS: client and server),
``replication`` (the master's side: a replicator the queue's journal hands group commits
to), ``replica`` (a candidate's copy of the queue), ``noderpc`` (jq-noded's RPC methods as
plain methods) and ``admin`` (cluster init, node join by CSR bundle, master failover).

May import everything below it: the vocabulary, the job model, store/, run/, the queue
facade and the LUXI client (a node tells its local jq-masterd to step down). Nothing in
luxi/, daemon/ or cli/ is imported from here.
"""
