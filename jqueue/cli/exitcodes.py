"""Exit statuses of jqctl: the documented table and how outcomes and errors map onto it.

The man page (man/jqctl.8.rst, section EXIT STATUS) lists the same table; a test keeps
them in step.
"""

from jqueue import constants, errors

EXIT_SUCCESS = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CANCELED = 3
EXIT_NOT_FOUND = 4
EXIT_UNREACHABLE = 5
EXIT_REFUSED = 6
EXIT_NOT_ACKNOWLEDGED = 7
#: jqctl wait --timeout: a job not finished in time (other-systems.md, row 17, says 3;
#: a canceled command job exits 125 in wait, so only an opcode job's cancel shares it).
EXIT_STILL_RUNNING = EXIT_CANCELED
EXIT_INTERRUPTED = 130

#: (status, meaning), in the order the man page lists them.
TABLE = (
    (EXIT_SUCCESS, "success; for submit --wait, watch and wait: every job succeeded"),
    (EXIT_FAILURE, "a job failed (status error); cluster verify: a candidate's queue differs "
                   "from the master's"),
    (EXIT_USAGE, "usage error: bad command line, unreadable or malformed job file, "
                 "confirmation needed but no terminal"),
    (EXIT_CANCELED, "a job was canceled; wait --timeout: a job had not finished when the "
                    "time was up (it goes on)"),
    (EXIT_NOT_FOUND, "a job or a field was not found"),
    (EXIT_UNREACHABLE, "the daemon is unreachable, closed the connection or did not answer "
                       "in time; cluster verify: a candidate is unreachable"),
    (EXIT_REFUSED, "the daemon refused the request (invalid opcode, queue drained or full, "
                   "job already finished, ...)"),
    (EXIT_NOT_ACKNOWLEDGED, "submit: the jobs (their ids are printed) were recorded but not "
                            "acknowledged in time by enough master candidates: they are kept "
                            "and run once the candidates catch up, but a failover before that "
                            "may lose them; submitting again with the same --token is safe"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C), or a confirmation was declined"),
)

#: Job outcomes from best to worst; several jobs exit with the worst one.
_SEVERITY = (EXIT_SUCCESS, EXIT_CANCELED, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_REFUSED,
             EXIT_NOT_ACKNOWLEDGED, EXIT_UNREACHABLE, EXIT_USAGE, EXIT_INTERRUPTED)

_STATUS_CODES = {
    constants.JOB_STATUS_SUCCESS: EXIT_SUCCESS,
    constants.JOB_STATUS_ERROR: EXIT_FAILURE,
    constants.JOB_STATUS_CANCELED: EXIT_CANCELED,
}

_UNREACHABLE = (errors.NoMasterError, errors.AccessDeniedError, errors.ConnectionClosedError,
                errors.RequestTimeoutError)


class CommandError(errors.GenericError):
    """A user error found by jqctl itself; args are (message, exit status)."""

    def __init__(self, message, exit_code=EXIT_USAGE):
        super().__init__(message, exit_code)

    @property
    def exit_code(self):
        return self.args[1]


def for_status(status):
    """Exit status for a finalized job status."""
    try:
        return _STATUS_CODES[status]
    except KeyError:
        raise errors.ProgrammerError("job status %r is not final" % (status,)) from None


def for_exception(err):
    """Exit status for an error raised by jqctl or by the LUXI client."""
    if isinstance(err, CommandError):
        return err.exit_code
    if isinstance(err, errors.SubmissionNotAcknowledged):
        return EXIT_NOT_ACKNOWLEDGED
    if isinstance(err, errors.JobLost):
        return EXIT_NOT_FOUND
    if isinstance(err, errors.OpPrereqError) and err.args[1:2] == (constants.ECODE_NOENT,):
        return EXIT_NOT_FOUND
    if isinstance(err, errors.RequestError):
        return EXIT_REFUSED
    if isinstance(err, _UNREACHABLE + (errors.ProtocolError,)):
        return EXIT_UNREACHABLE
    return EXIT_REFUSED


def worst(codes, default=EXIT_SUCCESS):
    """The most severe of several exit statuses (default if there are none).

    A command job's own status (jqctl wait: the command's exit status, 124, 128+N, 125)
    ranks as a failed job, just above the plain failure.
    """
    codes = list(codes)
    return max(codes, key=_severity) if codes else default


def _severity(code):
    if code in _SEVERITY:
        return _SEVERITY.index(code)
    return _SEVERITY.index(EXIT_FAILURE) + 0.5
