"""Notifications: a job's final state POSTed to the webhook its submitter named.

A job submitted with ``notify`` (row 24 of other-systems.md; Coalition mails, Slurm's
``--mail-type``; a webhook here, not SMTP; checked by jqueue.joboptions.check_notify) is
told about once it is final and that state
is durable: one HTTP POST of a JSON object (``payload``) to its URL, for each final state
its ``on`` names (success, error, canceled). The POST's ``Idempotency-Key`` header is the
same for every try of one final state (the job id and its end time): a receiver that keeps
them sees each final state once although a master that dies between the POST and its
record sends it again. Any 2xx answer delivers it; a refusal (4xx but 408 and 429) ends
the tries at once; anything else (no connection, a timeout, 5xx, a redirect) is tried
again after DELAY seconds doubling up to DELAY_MAX, TRIES times in all. Either way the
outcome is journaled with the job (its ``notified``: delivered or not, the answer, when),
with an event (NOTIFIED, NOTIFY_FAILED) in the stream and the action log, and it is never
tried again: after a restart or a failover the master sends only what no record says was
delivered or given up. A job reset or retried may end again: that end is told again.
With a secret (jq-masterd's notify_secret_file), each POST is signed as GitHub signs its
webhooks: ``X-Jqueue-Signature: sha256=`` and the HMAC-SHA256 of the body, in hex.

One thread keeps the times; the POSTs go through a few threads of their own (SENDERS), so
that a receiver that does not answer holds one of them for TIMEOUT seconds, not every
notification. The JobQueue calls ``due`` (under its lock: it only takes note) and answers
``notification`` and ``record_notified``.
"""

import hashlib
import heapq
import hmac
import logging
import os
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
SENDERS = 4      # POSTs at once
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


class Notifier:
    """Sends the notifications of a JobQueue (see the module docstring).

    queue answers ``notification(job_id)`` ((url, payload, key) or None if nothing is due
    any more) and ``record_notified(job_id, key, outcome)``; poster is ``post``; secret
    (bytes, or None) signs each POST.
    """

    def __init__(self, queue, poster=post, secret=None, clock=time.monotonic, wall=time.time):
        self._queue, self._post, self._clock, self._wall = queue, poster, clock, wall
        self._secret = secret
        self._cond = threading.Condition()
        self._heap = []        # (when, job id)
        self._tries = {}       # job id -> tries so far (a job is due here once)
        self._thread = None
        self._senders = None
        self._stopped = False

    def due(self, job_id):
        """Job job_id is final, durable and not told yet: tell it (any thread)."""
        with self._cond:
            if self._stopped or job_id in self._tries:
                return
            self._tries[job_id] = 0
            heapq.heappush(self._heap, (self._clock(), job_id))
            if self._thread is None:
                self._senders = futures.ThreadPoolExecutor(SENDERS, "jq-notify-post")
                self._thread = threading.Thread(target=self._run, name="jq-notify",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self, timeout=TIMEOUT):
        """Send nothing more (what is not told yet is at the next start); wait for the
        POSTs under way."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread, senders = self._thread, self._senders
        if thread is not None:
            thread.join(timeout)
        if senders is not None:
            senders.shutdown(wait=True, cancel_futures=True)

    def _run(self):
        while True:
            with self._cond:
                while not self._stopped and (
                        not self._heap or self._heap[0][0] > self._clock()):
                    self._cond.wait(self._heap[0][0] - self._clock() if self._heap else None)
                if self._stopped:
                    return
                _, job_id = heapq.heappop(self._heap)
            try:
                self._senders.submit(self._send_logged, job_id)
            except RuntimeError:  # shut down meanwhile
                return

    def _send_logged(self, job_id):
        try:
            self._send(job_id)
        except Exception:  # noqa: BLE001 - a closed queue, a bug: the next start sends it
            logger.exception("job %d: its notification failed", job_id)
            self._forget(job_id)

    def _send(self, job_id):
        found = self._queue.notification(job_id)
        if found is None:
            self._forget(job_id)
            return
        url, payload, key = found
        body = serializer.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Idempotency-Key": key,
                   "User-Agent": USER_AGENT}
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, body)
        try:
            status, error = self._post(url, body, headers), None
        except (OSError, ValueError) as err:  # no answer (refused, timed out, bad host)
            status, error = None, str(getattr(err, "reason", None) or err)
        with self._cond:
            tries = self._tries[job_id] = self._tries.get(job_id, 0) + 1
        delivered = status is not None and 200 <= status < 300
        refused = status is not None and 400 <= status < 500 and status not in (408, 429)
        if delivered or refused or tries >= TRIES:
            what = error or "HTTP %d" % status
            self._record(job_id, key, {"url": url, "delivered": delivered, "status": status,
                                       "error": None if delivered else what,
                                       "tries": tries, "at": self._wall()})
            return
        delay = min(DELAY * 2 ** (tries - 1), DELAY_MAX)
        logger.info("job %d: notification to %s not delivered (%s): try %d of %d in %gs",
                    job_id, url, error or "HTTP %d" % status, tries + 1, TRIES, delay)
        with self._cond:
            if not self._stopped:
                heapq.heappush(self._heap, (self._clock() + delay, job_id))
                self._cond.notify()

    def _record(self, job_id, key, outcome):
        try:
            self._queue.record_notified(job_id, key, outcome)
        except Exception:  # noqa: BLE001 - not recorded: the next start sends it again
            logger.exception("job %d: its notification's outcome cannot be recorded", job_id)
        self._forget(job_id)

    def _forget(self, job_id):
        with self._cond:
            self._tries.pop(job_id, None)


def payload(row):
    """The JSON object a notification POSTs, from a job's row of PAYLOAD_FIELDS: job (its
    id), status, title, summary, owner, parent, node, attempt, reason, exit_status, signal,
    and received, started and ended (epoch seconds or null)."""
    fields = dict(zip(PAYLOAD_FIELDS, row))
    body = {"job": fields.pop("id")}
    for name, key in (("received_ts", "received"), ("start_ts", "started"),
                      ("end_ts", "ended")):
        stamp = fields.pop(name)
        body[key] = stamp[0] + stamp[1] / 1e6 if stamp else None
    body.update(fields)
    return body


#: The query fields a notification says of its job.
PAYLOAD_FIELDS = ["id", "status", "title", "summary", "owner", "parent", "node", "attempt",
                  "reason", "exit_status", "signal", "received_ts", "start_ts", "end_ts"]


def key_of(job):
    """The idempotency key of a job's final state: its id and its end time."""
    end = job.end_timestamp or (0, 0)
    return "job-%d-%d.%06d" % (job.id, end[0], end[1])
