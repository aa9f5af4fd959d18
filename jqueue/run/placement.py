"""Placement: which node a command job with an affinity runs on.

A job's ``affinity`` (Coalition's) is a set of tags that must all be among a node's tags:
exact, case-sensitive, spaces trimmed. The index maps each tag to the nodes holding it,
so the nodes matching an affinity are the intersection of its tags' lists, smallest
first: choosing a node costs O(matching nodes), whatever the size of the cluster. Among
the matching nodes that are available (reachable, neither drained nor offline), the least
loaded one (attempts running and queued there, per slot) gets the job, which then waits
in that node's queue (BEX's per-host queues: by priority, then job id).
"""


class NoMatchingNode(Exception):
    """No node has every tag of an affinity (the job waits: NO_MATCHING_NODE)."""


class Placement:
    """The nodes' tags, indexed by tag."""

    def __init__(self):
        self._tags = {}     # node -> frozenset of tags
        self._index = {}    # tag -> set of nodes

    def set_tags(self, node, tags):
        """Node holds exactly tags from now on."""
        for tag in self._tags.get(node, ()):
            self._index[tag].discard(node)
            if not self._index[tag]:
                del self._index[tag]
        self._tags[node] = frozenset(tags)
        for tag in self._tags[node]:
            self._index.setdefault(tag, set()).add(node)

    def remove(self, node):
        """Node is no longer one to place on."""
        self.set_tags(node, ())
        del self._tags[node]

    def tags(self, node):
        return self._tags.get(node, frozenset())

    def holds(self, node, affinity):
        """Whether node has every tag of affinity."""
        return set(affinity) <= self._tags.get(node, frozenset())

    def matching(self, affinity):
        """The nodes holding every tag of affinity (every node if it is empty)."""
        if not affinity:
            return set(self._tags)
        lists = sorted((self._index.get(tag, set()) for tag in set(affinity)), key=len)
        if not lists[0]:
            return set()
        found = set(lists[0])
        for nodes in lists[1:]:
            found &= nodes
            if not found:
                break
        return found

    def choose(self, affinity, available, load):
        """The least loaded available node holding affinity, or None if every matching
        node is unavailable now; NoMatchingNode if no node holds it at all."""
        matching = self.matching(affinity)
        if not matching:
            raise NoMatchingNode("no node has the tags %s" % ",".join(sorted(affinity)))
        candidates = [node for node in matching if available(node)]
        if not candidates:
            return None
        return min(candidates, key=lambda node: (load(node), node))
