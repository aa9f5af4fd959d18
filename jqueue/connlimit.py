"""Connection caps of the daemons' servers (LUXI, HTTP, node RPC).

Every connection holds a file descriptor, and so do the journal, the job files a checkpoint
writes, the logs of running commands and their attempts. Clients that open connections up
to the open files limit would leave none for those: the next journal rotation fails
(EMFILE) and jq-masterd exits for a restart, commands cannot start. So the caps of all a
daemon's servers together fit in a share of the limit (fit_caps), whatever was configured,
and a connection past its server's cap is closed at once, its refusal logged at most once a
minute (jqueue.ratelog).
"""

import logging
import resource

from jqueue.ratelog import CountedWarning

logger = logging.getLogger(__name__)

#: Share of the open files limit that the connections of all a daemon's servers may hold
#: together; the rest is left to the queue, its logs, commands and services.
SHARE = 0.5


def open_files_limit():
    """The soft RLIMIT_NOFILE (None: unlimited)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def fit_caps(caps, limit=None):
    """caps ({server: most connections}, 0 for a server that is off) lowered in proportion,
    each to at least 1, so that together they hold at most SHARE of limit (default: the
    open files limit now); a warning says so when they had to be."""
    limit = open_files_limit() if limit is None else limit
    wanted = sum(caps.values())
    room = None if limit is None else max(1, int(limit * SHARE))
    if room is None or wanted <= room:
        return dict(caps)
    fitted = {name: max(1, cap * room // wanted) if cap else 0 for name, cap in caps.items()}
    logger.warning("the open files limit (%d) leaves room for %s connections, not %s: "
                   "raise it (LimitNOFILE=) for more", limit, _describe(fitted),
                   _describe(caps))
    return fitted


def _describe(caps):
    return " and ".join("%d %s" % (cap, name) for name, cap in caps.items() if cap)


def refusal_warning(server, clock):
    """The CountedWarning of a server's refused connections: count(open, cap)."""
    return CountedWarning(clock, "refused %%d %s connection(s): %%d open, limit %%d" % server,
                          logger)
