"""Nodes, certificates, replication and failover: everything that spans machines.

``membership`` (the cluster configuration, node state and election rules), ``tls`` (the
cluster CA and node certificates), ``rpc`` (node RPC over mutual TLS: client and server),
``replication`` (the master's side: a replicator the queue's journal hands group commits
to), ``replica`` (a candidate's copy of the queue), ``noderpc`` (jq-noded's RPC methods as
plain methods), ``admin`` (cluster init, node join by CSR bundle, master failover),
``pusher`` (the configuration pushed again to nodes that missed it), ``nodeexec`` (a
node's command attempts and services, served to the master) and ``commandlink`` (the
master's link to them).

May import everything below it: the vocabulary, the job model, store/, run/, exec/, the
queue facade and, of luxi/, only its client (a node tells its local jq-masterd to step
down). Nothing of daemon/, cli/ or http/ is imported from here.
"""
