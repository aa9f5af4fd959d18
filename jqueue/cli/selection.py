"""Selecting jobs by status: the selector options, their qlang filters and the lookups.

``list`` and ``cancel`` share the option style: each selector adds a set of statuses
and selectors combine with "or".
"""

from jqueue import constants

#: list/query selectors: option, statuses, help.
LIST_SELECTORS = (
    ("--pending", constants.JOBS_PENDING, "jobs not started yet (queued, waiting, canceling)"),
    ("--running", frozenset([constants.JOB_STATUS_RUNNING]), "running jobs"),
    ("--finished", constants.JOBS_FINALIZED, "finished jobs (success, error, canceled)"),
    ("--error", frozenset([constants.JOB_STATUS_ERROR]), "failed jobs"),
)

#: cancel selectors: option, statuses, help (canceling jobs are being canceled already).
CANCEL_SELECTORS = (
    ("--pending", frozenset([constants.JOB_STATUS_QUEUED, constants.JOB_STATUS_WAITING]),
     "every queued or waiting job"),
    ("--queued", frozenset([constants.JOB_STATUS_QUEUED]), "every queued job"),
    ("--waiting", frozenset([constants.JOB_STATUS_WAITING]),
     "every job waiting for its dependencies"),
)

#: Every status in lifecycle order (for filters and counts).
STATUS_ORDER = (
    constants.JOB_STATUS_QUEUED, constants.JOB_STATUS_WAITING, constants.JOB_STATUS_CANCELING,
    constants.JOB_STATUS_RUNNING, constants.JOB_STATUS_SUCCESS, constants.JOB_STATUS_ERROR,
    constants.JOB_STATUS_CANCELED,
)


def add_selector_options(parser, selectors):
    """Add the selector options; their statuses accumulate in args.statuses."""
    for option, statuses, help_text in selectors:
        parser.add_argument(option, dest="statuses", action="append_const",
                            const=statuses, help="select %s" % help_text)


def selected_statuses(args):
    """The union of the statuses chosen by selector options (empty set: no selector)."""
    return frozenset().union(*(args.statuses or ()))


def status_filter(statuses):
    """A qlang filter matching jobs whose status is one of statuses."""
    terms = [["=", "status", s] for s in STATUS_ORDER if s in statuses]
    return terms[0] if len(terms) == 1 else ["|"] + terms


def job_ids_with_status(client, statuses):
    """Ids of the live jobs whose status is one of statuses, through the generic Query."""
    result = client.query("job", ["id"], status_filter(statuses))
    return [row[0][1] for row in result["data"] if row[0][0] == constants.RS_NORMAL]
