"""Retention: finished jobs are archived after a while, and archived jobs and their command
logs purged after another while, so that a busy queue does not fill its disk.

A pass (every ``interval`` seconds, or ``jqctl purge`` now) does two bounded things:

1. archives the finished jobs that ended more than ``archive_after`` seconds ago (a group
   with its whole tree, once all of it ended and was told to whom its notify names; see
   jqueue.groupkeeper), at most ``pass_jobs``
   of them, chunk by chunk as AutoArchiveJobs does; their files move at the next
   checkpoint;
2. purges the archived jobs whose archive file is older than ``keep_archived`` seconds:
   each slice is a journal record first (replicas purge the same jobs when they apply
   it; a crash replays it), then their files, command logs and the archive directories
   left empty are removed. It examines at most ``pass_scan`` archive files from where
   the previous pass stopped, and purges at most ``pass_jobs``: passes are bounded, but
   every file is looked at again within a few of them.

A pass is paced: after each chunk of work it rests (1 / ``duty`` - 1) times the processor
time the chunk took (its own thread's: waiting for the disk or a lock is no work), so that
retention of a big backlog takes at most about ``duty`` of the daemon's interpreter while
submissions go on; ``jqctl purge`` (the operator asks for it now) is not paced.

Each pass reports what it archived, purged and freed (bytes, as ``du`` counts) in the
daemon's log and ``status()`` (``jqctl queue info``). Zero for ``archive_after`` or
``keep_archived`` means never. Purged ids are never reused: the serial keeps counting.
"""

import logging
import threading
import time

from jqueue import errors
from jqueue.store import purge

logger = logging.getLogger(__name__)

#: Ganeti's watcher archives after 6 hours and its cleaner removes after 21 days.
DEFAULT_ARCHIVE_AFTER = 6 * 3600.0
DEFAULT_KEEP_ARCHIVED = 21 * 86400.0
DEFAULT_INTERVAL = 60.0
#: Most jobs one pass archives, and purges.
PASS_JOBS = 10000
#: Most archive files one pass examines.
PASS_SCAN = 50000
#: Archived jobs purged per journal record.
PURGE_SLICE = 1000
#: Share of the time a pass works while it has work (it rests the rest).
DEFAULT_DUTY = 0.25


class Policy:
    """When jobs are archived and purged (seconds; 0: never) and how often passes run
    (None: only when asked)."""

    def __init__(self, archive_after=0, keep_archived=0, interval=None, pass_jobs=PASS_JOBS,
                 pass_scan=PASS_SCAN, duty=DEFAULT_DUTY):
        if not 0 < duty <= 1:
            raise ValueError("duty must be in (0, 1], got %r" % (duty,))
        self.archive_after = archive_after
        self.keep_archived = keep_archived
        self.interval = interval
        self.pass_jobs = pass_jobs
        self.pass_scan = pass_scan
        self.duty = duty


class Retention:
    """The retention passes of a JobQueue (see the module docstring)."""

    def __init__(self, queue, policy, clock):
        self._queue = queue
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()  # one pass (or purge) at a time
        self._cursor = None            # where the next pass's archive scan starts
        self._worked_from = 0.0        # the pass thread's processor time at its last rest
        self._thread = None
        self._stopping = threading.Event()  # cuts a pass's rests short
        self.last = None               # the last pass's report
        self.totals = {"passes": 0, "archived": 0, "purged": 0, "bytes_freed": 0}

    def run_pass(self):
        """One bounded pass; its report {archived, purged, bytes_freed, more, at,
        seconds}: more is true when work was left for the next pass."""
        policy = self.policy
        with self._lock:
            started, now = time.monotonic(), self._clock()
            self._worked_from = time.thread_time()
            archived, more = [], False
            if policy.archive_after:
                archived, _ = self._queue.archive_finished(policy.archive_after,
                                                           limit=policy.pass_jobs,
                                                           pace=self._rest)
                more = len(archived) >= policy.pass_jobs
            purged = freed = 0
            if policy.keep_archived:
                scan = purge.scan_archive(self._queue._dir, now - policy.keep_archived,
                                          self._cursor, policy.pass_scan, policy.pass_jobs)
                self._cursor = scan.cursor
                purged, freed = self._purge(scan.ids, self._rest)
                more = more or not scan.wrapped
            return self._report(len(archived), purged, freed, more, now,
                                time.monotonic() - started)

    def purge(self, age, timeout=None):
        """Purge every archived job older than age seconds now (``jqctl purge``), until
        done or timeout seconds passed: {purged, bytes_freed, done}."""
        with self._lock:
            started, now = time.monotonic(), self._clock()
            cursor, purged, freed = None, 0, 0
            while True:
                scan = purge.scan_archive(self._queue._dir, now - age, cursor,
                                          max_ids=PURGE_SLICE)
                count, size = self._purge(scan.ids)
                purged, freed, cursor = purged + count, freed + size, scan.cursor
                if scan.wrapped:
                    break
                if timeout is not None and time.monotonic() - started > timeout:
                    break
            self._report(0, purged, freed, not scan.wrapped, now,
                         time.monotonic() - started)
            return {"purged": purged, "bytes_freed": freed, "done": scan.wrapped}

    def _purge(self, job_ids, pace=None):
        purged = freed = 0
        for offset in range(0, len(job_ids), PURGE_SLICE):
            if offset and pace is not None:
                pace()
            piece = job_ids[offset:offset + PURGE_SLICE]
            freed += self._queue.purge_archived(piece)
            purged += len(piece)
        return purged, freed

    def _rest(self):
        """After a chunk of a pass: rest so that the pass works about policy.duty of the
        time (not once the queue stops)."""
        worked = time.thread_time() - self._worked_from
        duty = self.policy.duty
        if duty < 1 and worked > 0:
            self._stopping.wait(worked * (1 / duty - 1))
        self._worked_from = time.thread_time()

    def _report(self, archived, purged, freed, more, now, seconds):
        report = {"archived": archived, "purged": purged, "bytes_freed": freed,
                  "more": more, "at": now, "seconds": round(seconds, 3)}
        self.last = report
        totals = self.totals
        totals["passes"] += 1
        totals["archived"] += archived
        totals["purged"] += purged
        totals["bytes_freed"] += freed
        if archived or purged:
            logger.info("retention: archived %d jobs, purged %d (%d bytes freed) in %.2fs%s",
                        archived, purged, freed, seconds, "; more next pass" if more else "")
        return report

    def status(self):
        """What jqctl queue info shows: the policy, the last pass and the totals."""
        return {"archive_after": self.policy.archive_after,
                "keep_archived": self.policy.keep_archived,
                "interval": self.policy.interval, "last": self.last,
                "totals": dict(self.totals)}

    # Passes every interval seconds

    def start(self):
        """Run passes every policy.interval seconds in a thread (if an interval is set)."""
        if self.policy.interval and self._thread is None:
            self._thread = _PassThread(self, self.policy.interval)
            self._thread.start()

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def change(self, archive_after, keep_archived, interval):
        """New ages and interval (a reload): the next pass goes by them, passes every
        interval seconds from now on. Waits for no pass: one running ends as it goes
        (the lock keeps a single pass at a time)."""
        policy = self.policy
        policy.archive_after, policy.keep_archived = archive_after, keep_archived
        if interval == policy.interval:
            return
        policy.interval = interval
        if self._thread is not None:
            self._thread.stop(wait=False)
            self._thread = None
        if not self._stopping.is_set():
            self.start()


class _PassThread(threading.Thread):
    def __init__(self, retention, interval):
        super().__init__(name="jq-retention", daemon=True)
        self._retention = retention
        self._interval = interval
        self._stopped = threading.Event()

    def run(self):
        while not self._stopped.wait(self._interval):
            try:
                self._retention.run_pass()
            except errors.GenericError as err:
                logger.warning("retention pass failed: %s", errors.error_message(err))
            except Exception:  # noqa: BLE001 - keep retention going; the next pass retries
                logger.exception("retention pass failed")

    def stop(self, wait=True):
        self._stopped.set()
        if wait:
            self.join()
