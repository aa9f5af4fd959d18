"""Running command attempts on this machine: the node side of command jobs.

``executor`` starts each attempt under a small supervisor process, the shim (``shim.c``,
compiled on first use by ``shims``; ``shim.py`` is its Python fallback), watches the
shims from the reactor without a thread each, signals them and re-adopts them after the
daemon restarts; ``containment`` gives each attempt a cgroup v2 leaf where the machine
allows it; ``attemptdir`` is the on-disk record of every attempt not yet forgotten;
``attempt`` holds the records (AttemptSpec, AttemptResult, AttemptInfo). ``supervisor``
keeps a node's supervised services alive over an Executor of its own. jq-masterd
(one machine) and jq-noded (cluster nodes) both use them in-process.

May import the vocabulary (constants, errors, serializer, ptypes), the service model
(jqueue.service and what it builds on), the standard library and Twisted; nothing else
of jqueue (it sits beside store/ and run/).
"""

from jqueue.exec.attempt import AttemptInfo, AttemptResult, AttemptSpec, Hooks
from jqueue.exec.executor import Executor

__all__ = ["AttemptInfo", "AttemptResult", "AttemptSpec", "Executor", "Hooks"]
