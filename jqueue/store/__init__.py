"""The queue directory and its write-ahead journal: everything that touches the disk.

Owns the on-disk contract (jqueue-queue(5)): the Ganeti-compatible job files, serial,
version, drain flag, lock and archive (``queuedir``), the journal with group commit
(``journal``), its record formats (``records``), reopening a queue after a crash
(``recovery``), durable file helpers (``fsutil``), the replication hook the journal
hands its group commits to (``replicator``: the interface and the local-only one),
command jobs' logs (``joblogs``), the event ring and the action log (``events``), the
service table (``services``), retention's deletions (``purge``) and the failpoints the
tests inject disk errors with (``faults``).

May import the vocabulary (constants, errors, serializer, ptypes) and the job model
(job, groupjob); nothing of the queue facade, the runner, the cluster, the protocols or programs.
"""
