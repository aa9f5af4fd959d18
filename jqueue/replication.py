"""Replication of the queue to peer nodes: the interface and the local-only replicator.

The queue hands every durable change to one replicator object: the journal records of
each group commit (``replicate_records``) and the files written outside the journal
(serial, version, drain flag, archive renames). The local-only replicator sends nothing;
the cluster replicator (peer fan-out over TLS RPC) implements the same methods.
"""


class LocalReplicator:
    """A single-node queue: every change is acknowledged once it is on the local disk."""

    mode = "local"

    def replicate_records(self, payloads):
        """Ship one group commit's records; return once the policy is met (here: at once)."""

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
        return {"mode": self.mode, "peers": []}
