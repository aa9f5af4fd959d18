"""Blocking LUXI client for library users and jqctl (standard library sockets only).

One request at a time over a kept Unix-socket connection. A kept connection found
closed before a request is sent is replaced once; a request whose sending has begun is
never sent again (it may not be idempotent): losing the connection then raises
ConnectionClosedError. Errors answered by the daemon are raised as the jqueue exception
classes they name.
"""

import base64
import errno
import logging
import os
import select
import socket
import time

from jqueue import constants, errors
from jqueue.luxi import framing

logger = logging.getLogger(__name__)

_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)
_RECV_SIZE = 65536
_NO_DAEMON_ERRNOS = frozenset([errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR])
_DENIED_ERRNOS = frozenset([errno.EACCES, errno.EPERM])


def default_socket_path():
    """The daemon's socket: $JQ_SOCKET if set, else constants.DEFAULT_SOCKET."""
    return os.environ.get(constants.SOCKET_ENV_VAR) or constants.DEFAULT_SOCKET


class Client:
    """A LUXI connection to jq-masterd (or to any Ganeti-compatible LUXI server).

    address is the socket path (default: default_socket_path()); connect_timeout and
    timeout (seconds) bound connecting and each request. clock (seconds, monotonic) only
    paces wait_for_job_change. One request at a time: share a Client between threads
    only under a lock of your own.
    """

    def __init__(self, address=None, connect_timeout=constants.LUXI_CONNECT_TIMEOUT,
                 timeout=constants.LUXI_TIMEOUT, clock=time.monotonic):
        self.address = address if address is not None else default_socket_path()
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._clock = clock
        self._sock = None

    def close(self):
        """Close the connection (the next call opens a new one)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # The generic call

    def call(self, method, args):
        """Send one request; return its result or raise the error the daemon answered."""
        data = _encode_request(method, args)
        self._send_request(data)
        try:
            success, result = framing.parse_response(self._receive())
        except errors.ProtocolError:
            self.close()
            raise
        if success:
            return result
        raise errors.decode_exception(result)

    # Connecting and sending

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(self.address)
        except OSError as err:
            sock.close()
            raise self._connect_error(err) from None
        self._sock = sock

    def _connect_error(self, err):
        if isinstance(err, TimeoutError):
            return errors.RequestTimeoutError("connecting to %s timed out after %ss" % (
                self.address, self.connect_timeout))
        if err.errno in _NO_DAEMON_ERRNOS:
            return errors.NoMasterError("no jqueue daemon listening on %s (%s)" % (
                self.address, err.strerror))
        if err.errno in _DENIED_ERRNOS:
            return errors.AccessDeniedError("permission denied connecting to %s" %
                                            self.address)
        if err.errno == errno.EAGAIN:
            return errors.RequestTimeoutError("daemon on %s is busy (its connection backlog "
                                              "is full)" % self.address)
        return errors.NoMasterError("cannot connect to %s: %s" % (self.address, err))

    def _send_request(self, data):
        reused = self._sock is not None
        if reused and self._peer_closed():
            self.close()
            reused = False
        if self._sock is None:
            self._connect()
        sent, err = self._send_all(data)
        if err is not None and not sent and reused and not isinstance(err, TimeoutError):
            self.close()
            self._connect()
            sent, err = self._send_all(data)
        if err is not None:
            self._raise_send_error(sent, err)

    def _peer_closed(self):
        """Tell whether the kept connection was closed (or holds stray data)."""
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        return bool(poller.poll(0))

    def _send_all(self, data):
        """Send data; return (bytes sent, None) or (bytes sent, the OSError)."""
        view, sent = memoryview(data), 0
        deadline = time.monotonic() + self.timeout
        try:
            while sent < len(view):
                self._sock.settimeout(max(0.0, deadline - time.monotonic()))
                sent += self._sock.send(view[sent:], _SEND_FLAGS)
        except OSError as err:
            return sent, err
        return sent, None

    def _raise_send_error(self, sent, err):
        if isinstance(err, TimeoutError):
            self.close()
            raise errors.RequestTimeoutError("sending a request to %s timed out after %ss" % (
                self.address, self.timeout))
        answer = self._read_available()
        self.close()
        if answer is not None:
            success, result = framing.parse_response(answer)
            if not success:
                raise errors.decode_exception(result)
        raise errors.ConnectionClosedError("%s closed the connection while the request was "
                                           "sent (%d bytes sent: %s)" % (self.address, sent, err))

    def _read_available(self):
        """A complete message the daemon sent before closing (such as its refusal), if any."""
        buffer = framing.MessageBuffer(constants.LUXI_MAX_RESPONSE_BYTES)
        self._sock.settimeout(0)
        try:
            while True:
                data = self._sock.recv(_RECV_SIZE)
                if not data:
                    return None
                for message in buffer.feed(data):
                    return message
        except (OSError, errors.ProtocolError):
            return None

    # Receiving

    def _receive(self):
        """Read one answer (bytes without terminator) within the timeout."""
        buffer = framing.MessageBuffer(constants.LUXI_MAX_RESPONSE_BYTES)
        deadline = time.monotonic() + self.timeout
        while True:
            data = self._recv_some(deadline)
            try:
                messages = list(buffer.feed(data))
            except errors.ProtocolError as err:
                self.close()
                raise errors.ProtocolError("answer from %s: %s" % (self.address, err)) from None
            if messages:
                if len(messages) > 1 or buffer.buffered:
                    logger.warning("%s sent more than one answer; reconnecting", self.address)
                    self.close()
                return messages[0]

    def _recv_some(self, deadline):
        try:
            self._sock.settimeout(max(0.0, deadline - time.monotonic()))
            data = self._sock.recv(_RECV_SIZE)
        except TimeoutError:
            self.close()
            raise errors.RequestTimeoutError("no answer from %s within %ss" % (
                self.address, self.timeout)) from None
        except OSError as err:
            self.close()
            raise errors.ConnectionClosedError("connection to %s failed before the answer: "
                                               "%s" % (self.address, err)) from None
        if not data:
            self.close()
            raise errors.ConnectionClosedError("%s closed the connection before answering" %
                                               self.address)
        return data

    # LUXI methods

    def submit_job(self, ops, token=None, owner=None, parent=None, not_before=None,
                   start_in=None, notify=None):
        """Submit one job (a list of opcodes, dicts or OpCode objects); return its id.

        With a token, a job an earlier submission with the same token created (and still
        live) is returned instead of a new one: retrying after a timeout is safe. owner
        names who submits (the job's owner field). parent puts it in a group (an id, a
        title or a path ``a|b``); not_before (epoch seconds) or start_in (seconds) keep it
        queued until then; notify (a URL, or {"url" or "to", "on", "after"}) has its final
        state told there.
        """
        return self.call(constants.LUXI_REQ_SUBMIT_JOB, _with_options(
            [_opcodes(ops)], token=token, owner=owner, parent=parent, not_before=not_before,
            start_in=start_in, notify=notify))

    def submit_job_to_drained_queue(self, ops, token=None, owner=None, parent=None,
                                    not_before=None, start_in=None, notify=None):
        """Submit one job even if the queue is drained; return its id."""
        return self.call(constants.LUXI_REQ_SUBMIT_JOB_TO_DRAINED_QUEUE, _with_options(
            [_opcodes(ops)], token=token, owner=owner, parent=parent, not_before=not_before,
            start_in=start_in, notify=notify))

    def submit_many_jobs(self, jobs, tokens=None, owner=None, options=None):
        """Submit several jobs; return [[True, id] | [False, message], ...].

        tokens: a token (or None) per job, as for submit_job; options: an object (or None)
        per job with submit_job's parent, not_before and start_in (a negative parent is
        relative: -1 is the job just before in this request).
        """
        return self.call(constants.LUXI_REQ_SUBMIT_MANY_JOBS, _with_options(
            [[_opcodes(o) for o in jobs]], tokens=tokens, owner=owner, options=options))

    def cancel_job(self, job_id, kill=False):
        """Cancel a job; return [success, message]."""
        args = [job_id, True] if kill else [job_id]
        return self.call(constants.LUXI_REQ_CANCEL_JOB, args)

    def change_job_priority(self, job_id, priority):
        """Change a job's priority; return [success, message]."""
        return self.call(constants.LUXI_REQ_CHANGE_JOB_PRIORITY, [job_id, priority])

    def hold_job(self, job_id):
        """Hold a job (a group: its tree); return [success, message]."""
        return self.call(constants.LUXI_REQ_HOLD_JOB, [job_id])

    def release_job(self, job_id):
        """Release a held job (a group: its tree); return [success, message]."""
        return self.call(constants.LUXI_REQ_RELEASE_JOB, [job_id])

    def reset_job(self, job_id):
        """A finished job (a group: its finished jobs) back to queued; [success, message]."""
        return self.call(constants.LUXI_REQ_RESET_JOB, [job_id])

    def retry_job(self, job_id):
        """One more attempt for a failed job (a group: its failed jobs); [success, message]."""
        return self.call(constants.LUXI_REQ_RETRY_JOB, [job_id])

    def purge_jobs(self, age, timeout):
        """Purge archived jobs (and their logs) older than age seconds, for at most timeout
        seconds: {"purged", "bytes_freed", "done"} (not done: call again)."""
        return self.call(constants.LUXI_REQ_PURGE_JOBS, [age, timeout])

    def resolve_job(self, reference):
        """The id of the live job a reference (id, group title, path ``a|b``) names."""
        return self.call(constants.LUXI_REQ_RESOLVE_JOB, [reference])

    def archive_job(self, job_id):
        """Archive a finalized job; return whether it was archived."""
        return self.call(constants.LUXI_REQ_ARCHIVE_JOB, [job_id])

    def auto_archive_jobs(self, age, timeout):
        """Archive finalized jobs older than age seconds (-1: all); [archived, unchecked]."""
        return self.call(constants.LUXI_REQ_AUTO_ARCHIVE_JOBS, [age, timeout])

    def query_jobs(self, job_ids, fields):
        """[[value, ...] or None per job] for job_ids (all live jobs if empty or None)."""
        return self.call(constants.LUXI_REQ_QUERY_JOBS, [job_ids, fields])

    def query(self, what, fields, qfilter=None):
        """Generic query: {"fields": [definition...], "data": [[[status, value]...]...]}."""
        return self.call(constants.LUXI_REQ_QUERY, [what, fields, qfilter])

    def query_fields(self, what, fields=None):
        """Field definitions: {"fields": [...]} for fields (all if None)."""
        return self.call(constants.LUXI_REQ_QUERY_FIELDS, [what, fields])

    def query_config_values(self, names):
        """The values of the named settings (drain_flag, master_node, cluster_name, ...)."""
        return self.call(constants.LUXI_REQ_QUERY_CONFIG_VALUES, [names])

    def set_drain_flag(self, flag):
        """Set or clear the queue's drain flag."""
        return self.call(constants.LUXI_REQ_SET_DRAIN_FLAG, [flag])

    def query_opcodes(self, names=None):
        """The opcode catalogue: [{"id", "doc", "params": [...]}] (all, or the named)."""
        return self.call(constants.LUXI_REQ_QUERY_OPCODES, [names])

    # The cluster methods (our additions; see jqueue.daemon.clustermaster)

    def cluster_info(self):
        """The cluster: name, master, epoch, session, policy, nodes and their roles."""
        return self.call(constants.LUXI_REQ_CLUSTER_INFO, [])

    def list_nodes(self):
        """Every node: name, address, role, reachable, in_sync, position, last_error."""
        return self.call(constants.LUXI_REQ_LIST_NODES, [])

    def add_node(self, name, address, candidate, csr_pem):
        """Add a node (signing its CSR); return the bundle it joins with."""
        return self.call(constants.LUXI_REQ_ADD_NODE, [name, address, candidate, csr_pem])

    def remove_node(self, name):
        """Remove a node from the cluster; {"version", "unreachable"}."""
        return self.call(constants.LUXI_REQ_REMOVE_NODE, [name])

    def modify_node(self, name, candidate, changes=None):
        """Make a node a master candidate or not (None: unchanged) and change its tags,
        drained or offline flags ({"tags": [...], "drained": bool, "offline": bool});
        {"version", "unreachable", "changed"}."""
        args = [name, candidate] + ([changes] if changes else [])
        return self.call(constants.LUXI_REQ_MODIFY_NODE, args)

    def verify_cluster(self):
        """Compare every candidate's queue with the master's: {node: differences}."""
        return self.call(constants.LUXI_REQ_VERIFY_CLUSTER, [])

    def step_down(self, epoch, master):
        """Tell the master that master was elected in epoch: it stops serving (True)."""
        return self.call(constants.LUXI_REQ_STEP_DOWN, [epoch, master])

    # Command jobs

    def read_job_log(self, job_id, offset=0, max_bytes=65536, timeout=0, exact=False):
        """{"data", "offset", "eof"} of a job's log from offset, waiting up to timeout
        seconds for new output when there is none yet (capped below the socket timeout).
        data is text (invalid UTF-8 replaced), or with exact the log's bytes as they are."""
        timeout = max(0, min(timeout, self._wait_cap()))
        return self._read_log(constants.LUXI_REQ_READ_JOB_LOG,
                              [job_id, offset, max_bytes, timeout], exact)

    def _read_log(self, method, args, exact):
        if not exact:
            return self.call(method, args)
        answer = self.call(method, args + [constants.LOG_ENCODING_BASE64])
        return dict(answer, data=base64.b64decode(answer["data"]))

    def follow_job_log(self, job_id, offset=0, max_bytes=65536):
        """Yield a job's log as text pieces until the job ended and all of it was read."""
        while True:
            answer = self.read_job_log(job_id, offset, max_bytes, self._wait_cap())
            if answer["data"]:
                yield answer["data"]
            offset = answer["offset"]
            if answer["eof"]:
                return

    # The event stream

    def wait_for_events(self, since=0, flt=None, timeout=0):
        """{"events", "last", "gap"}: events after serial since (passing flt), waiting up
        to timeout seconds for one (capped below the socket timeout)."""
        timeout = max(0, min(timeout, self._wait_cap()))
        return self.call(constants.LUXI_REQ_WAIT_FOR_EVENTS, [since, flt, timeout])

    def signal_job(self, job_id, signal):
        """Send signal (a number or a name such as "TERM") to a command job: [ok, message]."""
        return self.call(constants.LUXI_REQ_SIGNAL_JOB, [job_id, signal])

    def query_running(self, node=None):
        """Running command attempts (of one node, or all): a list of objects."""
        return self.call(constants.LUXI_REQ_QUERY_RUNNING, [node])

    # Supervised services

    def add_services(self, definitions, start=False):
        """Add services (all or none; objects of jqueue.service.PARAMS): their views."""
        args = [definitions] + ([{"start": True}] if start else [])
        return self.call(constants.LUXI_REQ_ADD_SERVICES, args)

    def modify_service(self, name, changes):
        """Change parameters of a service (from its next start): its view."""
        return self.call(constants.LUXI_REQ_MODIFY_SERVICE, [name, changes])

    def remove_service(self, name):
        """Remove a service (its node stops it first): a message."""
        return self.call(constants.LUXI_REQ_REMOVE_SERVICE, [name])

    def control_service(self, name, action):
        """start, stop or restart a service: [ok, message]."""
        method = {"start": constants.LUXI_REQ_START_SERVICE,
                  "stop": constants.LUXI_REQ_STOP_SERVICE,
                  "restart": constants.LUXI_REQ_RESTART_SERVICE}.get(action)
        if method is None:
            raise errors.ParameterError("unknown service action %r (start, stop, restart)"
                                        % (action,))
        return self.call(method, [name])

    def query_services(self, names=None):
        """Views of the services named (None: every one), by name."""
        return self.call(constants.LUXI_REQ_QUERY_SERVICES, [names])

    def read_service_log(self, name, offset=0, max_bytes=65536, timeout=0, exact=False):
        """{"data", "offset", "eof"} of a service's log from offset, waiting up to timeout
        seconds for more (capped below the socket timeout); eof once it is removed. data
        as read_job_log's."""
        timeout = max(0, min(timeout, self._wait_cap()))
        return self._read_log(constants.LUXI_REQ_READ_SERVICE_LOG,
                              [name, offset, max_bytes, timeout], exact)

    def wait_for_job_change_once(self, job_id, fields, prev_job_info, prev_log_serial,
                                 timeout):
        """One WaitForJobChange call, its timeout capped below the socket timeout.

        Returns [job_info, log_entries] or constants.JOB_NOTCHANGED.
        """
        timeout = max(0, min(timeout, self._wait_cap()))
        return self.call(constants.LUXI_REQ_WAIT_FOR_JOB_CHANGE,
                         [job_id, fields, prev_job_info, prev_log_serial, timeout])

    def wait_for_job_change(self, job_id, fields, prev_job_info, prev_log_serial,
                            timeout=None):
        """Wait until the job changes, over as many calls as needed.

        Returns [job_info, log_entries], or constants.JOB_NOTCHANGED once timeout seconds
        passed (None: wait for ever).
        """
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            step = self._wait_cap()
            if deadline is not None:
                step = min(step, max(0, deadline - self._clock()))
            result = self.wait_for_job_change_once(job_id, fields, prev_job_info,
                                                   prev_log_serial, step)
            if result != constants.JOB_NOTCHANGED:
                return result
            if deadline is not None and self._clock() >= deadline:
                return constants.JOB_NOTCHANGED

    def _wait_cap(self):
        return max(1, self.timeout / 2 - 1)


def _encode_request(method, args):
    try:
        return framing.encode_request(method, args)
    except (TypeError, ValueError, RecursionError) as err:
        raise errors.ParameterError("cannot encode request %s: %s" % (method, err)) from None


def _with_options(args, **options):
    """Ganeti's arguments, with our options object of the options set appended (if any)."""
    given = {key: value for key, value in options.items() if value is not None}
    return args + [given] if given else args


def _opcodes(ops):
    """Opcodes as JSON objects (OpCode objects are turned into their dicts)."""
    if not isinstance(ops, (list, tuple)):
        return ops
    return [op.to_dict() if hasattr(op, "to_dict") else op for op in ops]
