"""Exceptions of jqueue: one root class, families under it, encoded by class name.

An error crosses the wire as ``["ClassName", [args...]]`` (Ganeti's encoding) and is
rebuilt on the other side by looking the name up among the classes of this module.
"""

import errno

from jqueue import constants


class GenericError(Exception):
    """Root of every error jqueue raises on purpose."""


class ProgrammerError(GenericError):
    """A bug: an internal contract was broken."""


class ConfigurationError(GenericError):
    """A configuration file or option has an invalid value."""


class ParameterError(GenericError):
    """A parameter has a wrong type or value (outside opcodes)."""


class ParseError(GenericError):
    """Input could not be parsed."""


class QueryFilterParseError(ParseError):
    """A query filter (qlang) is malformed or names an unknown field."""


class OpPrereqError(GenericError):
    """An opcode or request is refused before anything runs; args are (message, code)."""

    def __init__(self, msg, ecode=constants.ECODE_INVAL, *rest):
        super().__init__(msg, ecode, *rest)


class OpExecError(GenericError):
    """An opcode failed while executing."""


class CommandError(OpExecError):
    """A command attempt cannot be started on this node (or is unknown to it)."""


class CommandResourceError(CommandError):
    """A command attempt cannot be started on this node for now: its disk is full, or it
    is out of file descriptors, processes or memory. The master starts it again later, as
    when the node could not be reached (NOXFER)."""


#: errno values of a node out of a resource (CommandResourceError), not misconfigured.
RESOURCE_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE,
                             errno.EAGAIN, errno.ENOMEM, errno.ENOBUFS))


def command_start_error(message, err):
    """A CommandError of message and err (an OSError): a CommandResourceError when err
    says the node is out of a resource."""
    resource = getattr(err, "errno", None) in RESOURCE_ERRNOS
    return (CommandResourceError if resource else CommandError)(
        "%s: %s" % (message, getattr(err, "strerror", None) or err))


class JobCanceled(GenericError):
    """Raised at a cancellation point of an opcode whose job is being canceled."""


class JobLost(GenericError):
    """The job does not exist (any more): not live and not archived."""


class JobFileCorrupted(GenericError):
    """A job file cannot be parsed or does not hold a valid job."""


class JobQueueError(GenericError):
    """The job queue cannot do what was asked (locked, closed, wrong version, ...)."""


class DiskSyncError(JobQueueError):
    """A sync (fsync, syncfs) of the queue failed: not retried, the daemon must restart."""


class JobQueueDrainError(JobQueueError):
    """The queue is drained and refuses new jobs."""


class JobQueueFull(JobQueueError):
    """The queue holds its maximum number of live jobs."""


class WaitTimeout(JobQueueError):
    """A wait for a job ended (its timeout) before the job finished."""


class ReplicationError(JobQueueError):
    """A change did not reach the number of copies the acknowledgement policy requires."""


class SubmissionNotAcknowledged(ReplicationError):
    """Jobs were recorded but not acknowledged in time; args are (message, [job ids])."""

    def __init__(self, msg, job_ids=(), *rest):
        super().__init__(msg, list(job_ids), *rest)

    @property
    def job_ids(self):
        return list(self.args[1]) if len(self.args) > 1 and isinstance(
            self.args[1], (list, tuple)) else []


def not_acknowledged(job_ids, cause):
    """The SubmissionNotAcknowledged telling what happened to job_ids (cause: the error of
    the acknowledgement that did not come): they are kept and run once enough candidates
    catch up, but a failover before that may lose them."""
    ids = ", ".join(str(i) for i in job_ids)
    return SubmissionNotAcknowledged("%s %s submitted but not acknowledged: %s" % (
        "job" if len(job_ids) == 1 else "jobs", ids, error_message(cause)), job_ids)


class ResyncNeeded(ReplicationError):
    """A replica cannot apply an update in order (gap, other session, unknown job)."""


class FencedError(JobQueueError):
    """An update came from an old epoch, or this node is not (any more) the master."""


class NotMasterError(JobQueueError):
    """This node does not own the queue; the message names the master if known."""


class RemoteError(GenericError):
    """A remote procedure call to another node failed."""


class NodeStalledError(RemoteError):
    """A node refused a request to start something: it may be stale (the node did not run
    for longer than the master waits before it gives the node's work to others)."""


class TlsError(GenericError):
    """A certificate or TLS setting is missing, invalid, or refused."""


class ProtocolError(GenericError):
    """The client protocol (LUXI) was violated, by either side."""


class ConnectionClosedError(ProtocolError):
    """The other side closed the connection before answering."""


class RequestTimeoutError(ProtocolError):
    """No (complete) answer arrived within the timeout."""


class RequestError(ProtocolError):
    """The request was malformed or named an unknown method."""


class NoMasterError(ProtocolError):
    """No daemon listens on the socket."""


class AccessDeniedError(ProtocolError):
    """The socket exists but we may not connect to it."""


def _error_classes():
    """Map class name to class for every error defined in this module."""
    return {
        name: obj for name, obj in globals().items()
        if isinstance(obj, type) and issubclass(obj, GenericError)
    }


_CLASSES = _error_classes()


def _json_safe(value):
    """Return value if it is plain JSON data, else its text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_safe(v) for k, v in value.items()}
    return str(value)


def encode_exception(err):
    """Encode an exception as ``[class name, [args]]``.

    Exceptions that are not ours are encoded as OpExecError with their text, so that a
    client never receives a class it cannot rebuild.
    """
    if isinstance(err, GenericError):
        return [err.__class__.__name__, [_json_safe(a) for a in err.args]]
    return ["OpExecError", ["%s: %s" % (err.__class__.__name__, err)]]


def decode_exception(data):
    """Rebuild an exception from ``[class name, [args]]``; unknown names give GenericError."""
    if (isinstance(data, (list, tuple)) and len(data) == 2 and isinstance(data[0], str)
            and isinstance(data[1], (list, tuple))):
        cls = _CLASSES.get(data[0])
        if cls is not None:
            try:
                return cls(*data[1])
            except TypeError:
                return cls(*[str(a) for a in data[1]][:1])
        return GenericError("%s: %s" % (data[0], " ".join(str(a) for a in data[1])))
    return GenericError("malformed error: %r" % (data,))


def maybe_raise(result):
    """Raise the error encoded in result if it is one of ours; return otherwise."""
    if (isinstance(result, (list, tuple)) and len(result) == 2
            and isinstance(result[0], str) and result[0] in _CLASSES
            and isinstance(result[1], (list, tuple))):
        raise decode_exception(result)


def error_message(err):
    """Return the human message of an error: its first argument, or its text."""
    if isinstance(err, GenericError) and err.args:
        return str(err.args[0])
    return str(err) or err.__class__.__name__
