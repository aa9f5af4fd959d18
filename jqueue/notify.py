"""Notifications: a job's final state told to the webhook or the address its submitter named.

A job submitted with ``notify`` (row 24 of other-systems.md; Coalition mails, Slurm's
``--mail-type``; checked by jqueue.joboptions.check_notify) is told about once it is final
and that state is durable, for each final state its ``on`` names (success, error,
canceled); a group with ``after`` N is also told once, when N jobs of its tree have
finished, whichever way (its ``finished`` field; Coalition's ``notifyafter``: its first N
children done, to look at the first frames of a render, say). Each telling is a
JSON object (``payload``, its ``event`` "end" or "after") and an idempotency key, the
same for every try of it (the job id and its end time, or the group and N): a receiver
that keeps them sees each once although a master that dies between a try and its
record tries again.

Told two ways:

- a webhook (``url``): one HTTP POST with the key as ``Idempotency-Key``. Any 2xx answer
  delivers it; a refusal (4xx but 408 and 429) ends the tries at once; anything else (no
  connection, a timeout, 5xx, a redirect) is tried again. With a secret (jq-masterd's
  notify_secret_file), each POST is signed as GitHub signs its webhooks:
  ``X-Jqueue-Signature: sha256=`` and the HMAC-SHA256 of the body, in hex.
- an address (``to``), given to the operator's command (jq-masterd's notify_command, as
  Slurm's MailProg: the job gives only data, never the program): the command runs with
  the address as its last argument, the payload on its standard input and JQ_NOTIFY_TO,
  JQ_NOTIFY_EVENT, JQ_NOTIFY_KEY, JQ_JOB_ID and JQ_JOB_STATUS in the daemon's
  environment, in a session of its own, in ``/``. Exit status 0 delivers it; 75
  (EX_TEMPFAIL, as sendmail says "try later"), a signal, no exit within TIMEOUT seconds
  (its process group is killed) or no command to run is tried again; any other status ends
  the tries (the command said it cannot be delivered).

A try that is not the last waits DELAY seconds doubling up to DELAY_MAX, TRIES times in
all. Either way the outcome is journaled with the job (``notified``, ``notified_after``:
delivered or not, the answer, when), with an event (NOTIFIED, NOTIFY_FAILED) in the
stream and the action log, and it is never tried again: after a restart or a failover
the master tells only what no record says was delivered or given up. A job reset or
retried may end again: that end is told again (the ``after`` of a group is told once).

One thread keeps the times; the tries go through a few threads of their own (SENDERS),
so that a receiver that does not answer holds one of them for TIMEOUT seconds, not every
notification. The JobQueue calls ``due`` (under its lock: it only takes note) and answers
``notification`` and ``record_notified``.
"""

import hashlib
import heapq
import hmac
import logging
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures

import jqueue
from jqueue import errors, serializer

logger = logging.getLogger(__name__)

TIMEOUT = 10.0   # seconds a POST may take
DELAY = 5.0      # seconds before the second try, doubling
DELAY_MAX = 300.0
TRIES = 10       # in all: about 20 minutes from the first to the last
SENDERS = 4      # tries at once
EX_TEMPFAIL = 75  # sysexits.h: a notify command's "try again later"
OUTPUT_MAX = 300  # characters of a failed notify command's output kept in its record
#: What is told: a job's final state, a group's N jobs done (see the docstring).
END, AFTER = "end", "after"
USER_AGENT = "jqueue/%s" % jqueue.version()
SIGNATURE_HEADER = "X-Jqueue-Signature"


def signature(secret, body):
    """The value of SIGNATURE_HEADER for body (bytes) signed with secret (bytes)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def read_secret(path):
    """The secret in a file (its text, without the ending newline) as bytes;
    ConfigurationError if it cannot be read or is empty."""
    try:
        with open(path, "rb") as stream:
            secret = stream.read().rstrip(b"\r\n")
        mode = os.stat(path).st_mode
    except OSError as err:
        raise errors.ConfigurationError("notify secret file %s: %s" % (
            path, err.strerror or err)) from None
    if not secret:
        raise errors.ConfigurationError("notify secret file %s is empty" % path)
    if mode & 0o077:
        logger.warning("notify secret file %s is readable by others than its owner (mode %o)",
                       path, mode & 0o777)
    return secret


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer like any other (not followed: a POST must not become a GET
    elsewhere)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(url, body, headers, timeout=TIMEOUT):
    """POST body (bytes) to url; its HTTP status, or OSError if none came."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            answer.read(65536)
            return answer.status
    except urllib.error.HTTPError as err:
        err.close()
        return err.code


def command_argv(text):
    """A notify command's argv from its configured text (words as a shell splits them;
    None for none)."""
    return shlex.split(text) if text else None


def run_command(argv, body, env, timeout=None):
    """Run a notify command (argv) with body (bytes) on its standard input and env as its
    environment, in a session of its own; (exit status, its output's end) once it exited,
    or (None, why) if it could not run, was killed by a signal or did not exit within
    timeout seconds (default TIMEOUT; its process group is killed then)."""
    timeout = TIMEOUT if timeout is None else timeout
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=output,
                                       stderr=subprocess.STDOUT, env=env, cwd="/",
                                       start_new_session=True)
        except OSError as err:
            return None, "cannot run %s: %s" % (argv[0], err.strerror or err)
        try:
            process.communicate(body, timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
            process.wait()
            return None, "%s did not exit within %gs: killed" % (argv[0], timeout)
        if process.returncode < 0:
            return None, "%s was killed by signal %d" % (argv[0], -process.returncode)
        output.seek(max(0, os.fstat(output.fileno()).st_size - OUTPUT_MAX))
        said = " ".join(output.read().decode("utf-8", "replace").split())
    return process.returncode, said


class Notifier:
    """Tells the notifications of a JobQueue (see the module docstring).

    queue answers ``notification(job_id, what)`` ((target, payload, key) or None if
    nothing is due any more; target {"url"} or {"to"}) and ``record_notified(job_id, what,
    key, outcome)``; what is END or AFTER. poster is ``post``; secret (bytes, or None)
    signs each POST; command (an argv, or None) is the notify command, run by runner
    (``run_command``) with the daemon's environment (environ).
    """

    def __init__(self, queue, poster=post, secret=None, command=None, runner=run_command,
                 environ=os.environ, clock=time.monotonic, wall=time.time):
        self._queue, self._post, self._clock, self._wall = queue, poster, clock, wall
        self._secret = secret
        self._command, self._run, self._environ = command, runner, environ
        self._cond = threading.Condition()
        self._heap = []        # (when, job id, what)
        self._tries = {}       # (job id, what) -> tries so far (each is due here once)
        self._thread = None
        self._senders = None
        self._stopped = False

    def set_command(self, command):
        """The notify command from now on (an argv, or None)."""
        self._command = command

    def due(self, job_id, what=END):
        """What of job job_id (END, AFTER) is due and not told yet: tell it (any thread)."""
        with self._cond:
            if self._stopped or (job_id, what) in self._tries:
                return
            self._tries[job_id, what] = 0
            heapq.heappush(self._heap, (self._clock(), job_id, what))
            if self._thread is None:
                self._senders = futures.ThreadPoolExecutor(SENDERS, "jq-notify-send")
                self._thread = threading.Thread(target=self._loop, name="jq-notify",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self, timeout=TIMEOUT):
        """Tell nothing more (what is not told yet is at the next start); wait for the
        tries under way."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread, senders = self._thread, self._senders
        if thread is not None:
            thread.join(timeout)
        if senders is not None:
            senders.shutdown(wait=True, cancel_futures=True)

    def _loop(self):
        while True:
            with self._cond:
                while not self._stopped and (
                        not self._heap or self._heap[0][0] > self._clock()):
                    self._cond.wait(self._heap[0][0] - self._clock() if self._heap else None)
                if self._stopped:
                    return
                _, job_id, what = heapq.heappop(self._heap)
            try:
                self._senders.submit(self._send_logged, job_id, what)
            except RuntimeError:  # shut down meanwhile
                return

    def _send_logged(self, job_id, what):
        try:
            self._send(job_id, what)
        except Exception:  # noqa: BLE001 - a closed queue, a bug: the next start tells it
            logger.exception("job %d: its notification failed", job_id)
            self._forget(job_id, what)

    def _send(self, job_id, what):
        found = self._queue.notification(job_id, what)
        if found is None:
            self._forget(job_id, what)
            return
        target, payload, key = found
        body = serializer.dumps(payload).encode("utf-8")
        if "url" in target:
            status, error, delivered, final = self._post_to(target["url"], body, key)
        else:
            status, error, delivered, final = self._run_for(target["to"], body, key,
                                                            payload)
        with self._cond:
            tries = self._tries[job_id, what] = self._tries.get((job_id, what), 0) + 1
        if delivered or final or tries >= TRIES:
            outcome = dict(target, delivered=delivered, status=status,
                           error=None if delivered else error, tries=tries, at=self._wall())
            self._record(job_id, what, key, outcome)
            return
        delay = min(DELAY * 2 ** (tries - 1), DELAY_MAX)
        logger.info("job %d: notification to %s not delivered (%s): try %d of %d in %gs",
                    job_id, target.get("url") or target.get("to"), error, tries + 1, TRIES,
                    delay)
        with self._cond:
            if not self._stopped:
                heapq.heappush(self._heap, (self._clock() + delay, job_id, what))
                self._cond.notify()

    def _post_to(self, url, body, key):
        """POST body; (status, error, delivered, final: no other try)."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": key,
                   "User-Agent": USER_AGENT}
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, body)
        try:
            status = self._post(url, body, headers)
        except (OSError, ValueError) as err:  # no answer (refused, timed out, bad host)
            return None, str(getattr(err, "reason", None) or err), False, False
        return (status, "HTTP %d" % status, 200 <= status < 300,
                400 <= status < 500 and status not in (408, 429))

    def _run_for(self, to, body, key, payload):
        """Run the notify command for address to; (status, error, delivered, final)."""
        command = self._command
        if not command:
            return None, "this master has no notify_command", False, False
        env = dict(self._environ, JQ_NOTIFY_TO=to, JQ_NOTIFY_EVENT=payload["event"],
                   JQ_NOTIFY_KEY=key, JQ_JOB_ID=str(payload["job"]),
                   JQ_JOB_STATUS=str(payload["status"]))
        status, said = self._run(list(command) + [to], body, env)
        if status is None:
            return None, said, False, False
        error = "exit status %d%s" % (status, ": " + said if said else "")
        return status, error, status == 0, status not in (0, EX_TEMPFAIL)

    def _record(self, job_id, what, key, outcome):
        try:
            self._queue.record_notified(job_id, what, key, outcome)
        except Exception:  # noqa: BLE001 - not recorded: the next start tells it again
            logger.exception("job %d: its notification's outcome cannot be recorded", job_id)
        self._forget(job_id, what)

    def _forget(self, job_id, what):
        with self._cond:
            self._tries.pop((job_id, what), None)


def outcome_text(outcome, after=None):
    """An outcome as its event says it: "POST http://h/x: HTTP 200 after 1 try",
    "command to ops@x (10 of its jobs finished): exit status 3: ... after 10 tries"."""
    tries = outcome["tries"]
    if outcome["delivered"]:
        how = "HTTP %d" % outcome["status"] if "url" in outcome else "delivered"
    else:
        how = outcome["error"]
    return "%s%s: %s after %d tr%s" % (
        "POST %s" % outcome["url"] if "url" in outcome else "command to %s" % outcome["to"],
        "" if after is None else " (%d of its jobs finished)" % after, how, tries,
        "y" if tries == 1 else "ies")


def payload(row, what=END, after=None):
    """The JSON object a notification tells, from a job's row of PAYLOAD_FIELDS: event
    (what: "end" or "after"), job (its id), status, title, summary, owner, parent, node,
    attempt, reason, exit_status, signal, received, started and ended (epoch seconds or
    null), and for AFTER ``after`` (N), ``finished`` and ``errors`` (the jobs of its tree
    that ended so far, those that failed)."""
    fields = dict(zip(PAYLOAD_FIELDS, row))
    body = {"event": what, "job": fields.pop("id")}
    for name, key in (("received_ts", "received"), ("start_ts", "started"),
                      ("end_ts", "ended")):
        stamp = fields.pop(name)
        body[key] = stamp[0] + stamp[1] / 1e6 if stamp else None
    if what != AFTER:
        fields.pop("finished")
        fields.pop("errors")
    else:
        body["after"] = after
    body.update(fields)
    return body


#: The query fields a notification says of its job.
PAYLOAD_FIELDS = ["id", "status", "title", "summary", "owner", "parent", "node", "attempt",
                  "reason", "exit_status", "signal", "received_ts", "start_ts", "end_ts",
                  "finished", "errors"]


def key_of(job, what=END):
    """The idempotency key of a job's final state (its id and its end time), or of a
    group's AFTER (its id and N)."""
    if what == AFTER:
        return "job-%d-after-%d" % (job.id, job.notify["after"])
    end = job.end_timestamp or (0, 0)
    return "job-%d-%d.%06d" % (job.id, end[0], end[1])
