"""The replication hook: what the queue tells a replicator, and the local-only one.

The queue hands every durable change to one replicator object: the journal records of
each group commit (``replicate_records``, which returns None or a ticket the journal
waits on, see jqueue.store.journal) and the files written outside the journal. A
single-node queue uses LocalReplicator; a cluster's master uses
jqueue.cluster.replication.ClusterReplicator, which implements the same methods.
"""


class LocalReplicator:
    """A single-node queue: every change is acknowledged once it is on the local disk."""

    mode = "local"
    ack_timeout = None

    def replicate_records(self, payloads):
        """Ship one group commit's records; None: nothing to wait for."""
        return None

    def update_file(self, name, text):
        """A queue file (by name relative to the queue directory) now holds text."""

    def rename_files(self, pairs):
        """Queue files were renamed: [[old, new], ...] relative to the queue directory."""

    def set_drain_flag(self, flag):
        """The drain flag was set or cleared."""

    def purge(self):
        """The queue was emptied."""

    def status(self):
        """What an operator sees: mode and peers."""
        return {"mode": self.mode, "min_acks": 0, "peers": []}

    def stop(self):
        """Stop replicating."""
