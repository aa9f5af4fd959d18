"""Test doubles for jqueue components."""

import heapq
import itertools
import logging
import threading
import time

from jqueue import constants, errors, joboptions, opcodes, qlang, query, service
from jqueue import job as job_module
from jqueue.run import dependencies, waiting

logger = logging.getLogger(__name__)

_DEAD = object()


class SyncPool:
    """A synchronous stand-in for WorkerPool for unit tests."""

    def __init__(self, name, num_workers, task_fn):
        """Keep task_fn; tasks run only when the test calls run_next() or run_all()."""
        self._check_size(num_workers)
        self.name = name
        self._num_workers = num_workers
        self._task_fn = task_fn
        self._heap = []  # entries [priority, seq, task_id, args], as in WorkerPool
        self._waiting = {}
        self._dead = 0
        self._seq = itertools.count()
        self._running = 0
        self._paused = False
        self._terminated = False
        self.errors = []  # exceptions raised by tasks (logged and swallowed, like WorkerPool)
        # The queue adds tasks from its journal thread too: guard the heap.
        self._lock = threading.RLock()

    @staticmethod
    def _check_size(num_workers):
        if not isinstance(num_workers, int) or num_workers < 0:
            raise errors.ProgrammerError(f"invalid number of workers: {num_workers!r}")

    @property
    def num_workers(self):
        """The size last given (0 once terminated); no thread exists."""
        return self._num_workers

    def stats(self):
        """Return the same keys as WorkerPool.stats()."""
        return {"workers": self._num_workers, "waiting": len(self._heap) - self._dead,
                "running": self._running, "paused": self._paused}

    def add_task(self, args, priority=0, task_id=None):
        """Queue task_fn(*args) at priority; task_id must not name another waiting task."""
        self.add_many_tasks([(args, priority, task_id)])

    def add_many_tasks(self, tasks):
        """Queue a list of (args, priority, task_id) atomically: all of them or none."""
        with self._lock:
            self._add_many_tasks(list(tasks))

    def _add_many_tasks(self, tasks):
        if self._terminated:
            raise errors.ProgrammerError(f"worker pool {self.name} is terminated")
        seen = set()
        for args, priority, task_id in tasks:
            if not isinstance(args, tuple) or not isinstance(priority, (int, float)):
                raise errors.ProgrammerError(f"bad task: {(args, priority, task_id)!r}")
            if task_id is not None and (task_id in self._waiting or task_id in seen):
                raise errors.ProgrammerError(f"task {task_id!r} already waits in {self.name}")
            seen.add(task_id)
        for args, priority, task_id in tasks:
            self._push(args, priority, task_id)

    def change_task_priority(self, task_id, priority):
        """Move a waiting task to priority, behind its new equals; False if none waits."""
        if not isinstance(priority, (int, float)):
            raise errors.ProgrammerError(f"invalid task priority: {priority!r}")
        with self._lock:
            entry = self._waiting.get(task_id)
            if entry is None:
                return False
            args, entry[3] = entry[3], _DEAD
            self._dead += 1
            self._push(args, priority, task_id)
            return True

    def has_waiting_task(self, task_id):
        """Tell whether a task with this id waits."""
        return task_id in self._waiting

    def pause(self):
        """Make run_next() run nothing until resume()."""
        self._paused = True

    def resume(self):
        """Let run_next() run tasks again."""
        self._paused = False

    def resize(self, num_workers):
        """Record the new size (it changes nothing else)."""
        self._check_size(num_workers)
        if self._terminated:
            raise errors.ProgrammerError(f"worker pool {self.name} is terminated")
        self._num_workers = num_workers

    def wait_idle(self, timeout=None):
        """Return at once whether no task waits and none runs; never runs or blocks."""
        if self._running:
            raise errors.ProgrammerError(f"wait_idle called by a task of {self.name}")
        return len(self._heap) == self._dead

    def terminate(self, timeout=None):
        """Drop waiting tasks and refuse new ones; return True."""
        self._terminated = True
        self._num_workers = 0
        self._heap.clear()
        self._waiting.clear()
        self._dead = 0
        return True

    def run_next(self):
        """Run the first waiting task in the calling thread; False if none (or paused)."""
        with self._lock:
            if self._paused or len(self._heap) == self._dead:
                return False
            entry = heapq.heappop(self._heap)
            while entry[3] is _DEAD:
                self._dead -= 1
                entry = heapq.heappop(self._heap)
            self._waiting.pop(entry[2], None)
            self._running += 1
        try:
            self._task_fn(*entry[3])
        except Exception as err:
            logger.exception("SyncPool %s: task %r failed", self.name, entry[2])
            self.errors.append(err)
        finally:
            self._running -= 1
        return True

    def run_all(self, limit=100000):
        """Run tasks until none waits (or limit tasks ran); return how many ran."""
        count = 0
        while count < limit and self.run_next():
            count += 1
        return count

    def _push(self, args, priority, task_id):
        entry = [priority, next(self._seq), task_id, args]
        heapq.heappush(self._heap, entry)
        if task_id is not None:
            self._waiting[task_id] = entry


def _given(**options):
    """The options given (not None) as an object."""
    return {key: value for key, value in options.items() if value is not None}


class FakeLuxiClient:
    """An in-memory stand-in for jqueue.luxi.client.Client, for the CLI's unit tests.

    It models a small queue: ``jobs`` maps ids to jqueue.job.QueuedJob (archived ones stay,
    with ``archived`` set), ``drained`` and ``config`` answer QueryConfigValues, and ``now``
    is the fixed clock of every timestamp. Field values come from jqueue.query's getters,
    filters from jqueue.qlang and change checks from jqueue.run.waiting, so answers have the
    daemon's shapes. Every LUXI call is appended to ``calls`` as (method, args); ``fail()``
    makes a method raise. Tests set job states with ``set_status()``/``add_log()`` and script
    what watch and wait see with ``script()``: a wait that would block applies the next step.
    """

    #: LUXI wire name -> method, for call().
    WIRE_METHODS = {
        constants.LUXI_REQ_SUBMIT_JOB: "submit_job",
        constants.LUXI_REQ_SUBMIT_JOB_TO_DRAINED_QUEUE: "submit_job_to_drained_queue",
        constants.LUXI_REQ_SUBMIT_MANY_JOBS: "submit_many_jobs",
        constants.LUXI_REQ_WAIT_FOR_JOB_CHANGE: "wait_for_job_change_once",
        constants.LUXI_REQ_CANCEL_JOB: "cancel_job",
        constants.LUXI_REQ_CHANGE_JOB_PRIORITY: "change_job_priority",
        constants.LUXI_REQ_ARCHIVE_JOB: "archive_job",
        constants.LUXI_REQ_AUTO_ARCHIVE_JOBS: "auto_archive_jobs",
        constants.LUXI_REQ_QUERY_JOBS: "query_jobs",
        constants.LUXI_REQ_QUERY_CONFIG_VALUES: "query_config_values",
        constants.LUXI_REQ_SET_DRAIN_FLAG: "set_drain_flag",
        constants.LUXI_REQ_QUERY: "query",
        constants.LUXI_REQ_QUERY_FIELDS: "query_fields",
        constants.LUXI_REQ_CLUSTER_INFO: "cluster_info",
        constants.LUXI_REQ_LIST_NODES: "list_nodes",
        constants.LUXI_REQ_ADD_NODE: "add_node",
        constants.LUXI_REQ_REMOVE_NODE: "remove_node",
        constants.LUXI_REQ_MODIFY_NODE: "modify_node",
        constants.LUXI_REQ_VERIFY_CLUSTER: "verify_cluster",
        constants.LUXI_REQ_STEP_DOWN: "step_down",
        constants.LUXI_REQ_QUERY_OPCODES: "query_opcodes",
        constants.LUXI_REQ_READ_JOB_LOG: "read_job_log",
        constants.LUXI_REQ_SIGNAL_JOB: "signal_job",
        constants.LUXI_REQ_QUERY_RUNNING: "query_running",
        constants.LUXI_REQ_WAIT_FOR_EVENTS: "wait_for_events",
        constants.LUXI_REQ_ADD_SERVICES: "add_services",
        constants.LUXI_REQ_MODIFY_SERVICE: "modify_service",
        constants.LUXI_REQ_REMOVE_SERVICE: "remove_service",
        constants.LUXI_REQ_QUERY_SERVICES: "query_services",
        constants.LUXI_REQ_READ_SERVICE_LOG: "read_service_log",
        constants.LUXI_REQ_HOLD_JOB: "hold_job",
        constants.LUXI_REQ_RELEASE_JOB: "release_job",
        constants.LUXI_REQ_RESET_JOB: "reset_job",
        constants.LUXI_REQ_RETRY_JOB: "retry_job",
        constants.LUXI_REQ_RESOLVE_JOB: "resolve_job",
        constants.LUXI_REQ_PURGE_JOBS: "purge_jobs",
    }

    def __init__(self, address=None, connect_timeout=constants.LUXI_CONNECT_TIMEOUT,
                 timeout=constants.LUXI_TIMEOUT, clock=time.monotonic):
        self.address = address
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.clock = clock
        self.jobs = {}
        self.drained = False
        self.config = {"master_node": "node1.example.com", "cluster_name": "cluster.example.com",
                       "queue_status": {"writes": "accepted", "view_age": 1.5, "view_lag": 2,
                                        "checkpoint_interval": 5.0},
                       "retention": {"archive_after": 21600.0, "keep_archived": 1814400.0,
                                     "interval": 60.0, "last": None,
                                     "totals": {"passes": 0, "archived": 0, "purged": 0,
                                                "bytes_freed": 0}}}
        self.now = 1795000000.0
        self.archive_chunk = 1000  # live jobs one AutoArchiveJobs call examines
        self.purge_chunk = 1000  # archived jobs one PurgeJobs call purges
        self.calls = []
        self.closed = False
        self.logs = {}          # job id -> bytes of its command log
        self.running = []       # what QueryRunning answers
        self.events = []        # what WaitForEvents answers from (event dicts)
        self.tokens = {}  # idempotency token -> job id
        self.services = {}      # name -> the view QueryServices answers
        self.service_logs = {}  # name -> bytes of its log
        self.service_log_starts = {}  # name -> where what its log keeps begins
        self.wait_reasons = {}  # job id -> (wait_reason, wait_message) the queue would say
        self.rss = {}  # job id -> bytes its running command holds now (the field rss)
        self._failures = {}
        self._steps = {}
        self.waited = 0.0  # seconds calls with a timeout spent waiting for nothing
        self._serial = 0

    # Test helpers (not part of the client's API)

    def fail(self, method, error, times=None):
        """Make every later call of method raise error (only the next times calls if
        times is given)."""
        self._failures[method] = (error, times)

    def calls_of(self, method):
        """The argument tuples of the recorded calls of method."""
        return [args for name, args in self.calls if name == method]

    def add_job(self, ops=None, status=constants.JOB_STATUS_QUEUED, result=None):
        """Create a job (default: one OP_TEST_DELAY) in the given status; return its id."""
        job_id = self._create(self._validate(ops or [{"OP_ID": "OP_TEST_DELAY",
                                                      "duration": 0}]))
        if status != constants.JOB_STATUS_QUEUED:
            self.set_status(job_id, status, result)
        return job_id

    def set_status(self, job_id, status, result=None):
        """Move a job's unfinished opcodes on to status, as the daemon would."""
        job, stamp = self.jobs[job_id], job_module.timestamp(self.now)
        pending = [op for op in job.ops if op.status not in constants.OPS_FINALIZED]
        if status == constants.JOB_STATUS_RUNNING:
            job.start_timestamp = job.start_timestamp or stamp
            pending[0].status = status
            pending[0].start_timestamp = pending[0].exec_timestamp = stamp
            return
        for index, op in enumerate(pending):
            op.status, op.result = status, self._result(status, result, index)
            if status in constants.OPS_FINALIZED:
                op.end_timestamp = stamp
        if status in constants.JOBS_FINALIZED:
            job.finalize(self.now)

    @staticmethod
    def _result(status, result, index):
        if status == constants.JOB_STATUS_ERROR:
            return result if index == 0 else constants.MSG_PRECEDING_FAILED
        if status == constants.JOB_STATUS_CANCELED:
            return constants.MSG_CANCELED
        return result

    def add_log(self, job_id, message, op_index=0):
        """Append a log message to an opcode of a job; return the entry."""
        return self.jobs[job_id].add_log(op_index, constants.ELOG_MESSAGE, message, self.now)

    def script(self, job_id, *steps):
        """Queue (status or None, [messages]) steps applied while a client waits on job_id."""
        self._steps.setdefault(job_id, []).extend(steps)

    def _apply_step(self, job_id):
        status, messages = self._steps[job_id].pop(0)
        job = self.jobs[job_id]
        op_index = job.next_op_index()
        for message in messages:
            self.add_log(job_id, message, len(job.ops) - 1 if op_index is None else op_index)
        if status is not None:
            self.set_status(job_id, status)

    def _record(self, method, *args):
        self.calls.append((method, args))
        if method in self._failures:
            error, times = self._failures[method]
            if times is not None:
                if times <= 1:
                    del self._failures[method]
                else:
                    self._failures[method] = (error, times - 1)
            raise error

    def _validate(self, ops):
        if not isinstance(ops, list) or not ops:
            raise errors.OpPrereqError("a job must be a non-empty list of opcodes")
        return [opcodes.REGISTRY.build(op).to_dict() for op in ops]

    def _create(self, inputs, options=None):
        self._serial += 1
        ops = [job_module.QueuedOpCode(i, i["priority"]) for i in inputs]
        options = options or {}
        not_before = options.get("not_before")
        if options.get("start_in") is not None:
            not_before = self.now + options["start_in"]
        parent = options.get("parent")
        if parent is not None and not isinstance(parent, int):
            parent = self.resolve_job(parent)
        self.jobs[self._serial] = job_module.QueuedJob(
            self._serial, ops, job_module.timestamp(self.now), parent=parent,
            not_before=not_before, notify=options.get("notify"))
        return self._serial

    def _submit(self, jobs, drained_ok, tokens=None, options=None):
        if options is not None:  # the queue's checks of a job's options, its errors
            options = joboptions.check(options, len(jobs), len(jobs) == 1)
        validated = [self._validate(ops) for ops in jobs]
        tokens = tokens or [None] * len(jobs)
        known = [self.tokens.get(token) for token in tokens]
        if self.drained and not drained_ok:
            raise errors.JobQueueDrainError("job queue is drained, refusing new jobs")
        results = []
        options = options or [None] * len(jobs)
        for inputs, (job_id, problem), token, old, option in zip(
                validated, dependencies.resolve_request(validated, self._serial + 1, known),
                tokens, known, options):
            if old is not None:
                results.append([True, old])
            elif problem:
                results.append([False, problem])
            else:
                assert self._create(inputs, option) == job_id
                if token is not None:
                    self.tokens[token] = job_id
                results.append([True, job_id])
        return results

    def _live(self, job_id):
        job = self.jobs.get(job_id)
        return job if job is not None and not job.archived else None

    # The client's API

    def call(self, method, args):
        name = self.WIRE_METHODS.get(method)
        if name is None:
            self._record("call", method, args)
            raise errors.RequestError("unknown method %s" % method)
        return getattr(self, name)(*args)

    def submit_job(self, ops, token=None, owner=None, parent=None, not_before=None,
                   start_in=None, notify=None):
        options = _given(parent=parent, not_before=not_before, start_in=start_in,
                         notify=notify)
        self._record("submit_job", *([ops] if token is None and not options else
                                     [ops, token] + ([options] if options else [])))
        ok, value = self._submit([ops], drained_ok=False, tokens=[token], options=[options])[0]
        if not ok:
            raise errors.OpPrereqError(value, constants.ECODE_INVAL)
        return value

    def submit_job_to_drained_queue(self, ops, token=None, owner=None, parent=None,
                                    not_before=None, start_in=None, notify=None):
        options = _given(parent=parent, not_before=not_before, start_in=start_in,
                         notify=notify)
        self._record("submit_job_to_drained_queue", *(
            [ops] if token is None and not options else
            [ops, token] + ([options] if options else [])))
        ok, value = self._submit([ops], drained_ok=True, tokens=[token], options=[options])[0]
        if not ok:
            raise errors.OpPrereqError(value, constants.ECODE_INVAL)
        return value

    def submit_many_jobs(self, jobs, tokens=None, owner=None, options=None):
        self._record("submit_many_jobs", *([jobs] if tokens is None and options is None else
                                           [jobs, tokens] + ([options] if options else [])))
        return self._submit(jobs, drained_ok=False, tokens=tokens, options=options)

    def _course(self, method, job_id, change):
        """A hold, release, reset or retry of a live job (not of groups' trees)."""
        self._record(method, job_id)
        job = self._live(job_id)
        if job is None:
            return [False, "Job %s not found" % job_id]
        return change(job)

    def hold_job(self, job_id):
        def hold(job):
            if job.is_finalized():
                return [False, "Job %s is already finished (%s)" % (job.id, job.calc_status())]
            job.held = True
            return [True, "Job %s held" % job.id]
        return self._course("hold_job", job_id, hold)

    def release_job(self, job_id):
        def release(job):
            if not job.held:
                return [True, "Job %s is not held" % job.id]
            job.held = False
            return [True, "Job %s released" % job.id]
        return self._course("release_job", job_id, release)

    def reset_job(self, job_id):
        def reset(job):
            if not job.is_finalized():
                return [False, "Job %s is not finished (%s): only a finished job can be "
                               "reset" % (job.id, job.calc_status())]
            for op in job.ops:
                op.apply_state(op.pristine_state())
            job.start_timestamp = job.end_timestamp = None
            return [True, "Job %s reset" % job.id]
        return self._course("reset_job", job_id, reset)

    def retry_job(self, job_id):
        def retry(job):
            if job.calc_status() != constants.JOB_STATUS_ERROR:
                return [False, "Job %s has not failed (%s)" % (job.id, job.calc_status())]
            for op in job.ops:
                if op.status == constants.OP_STATUS_ERROR:
                    op.status, op.result, op.end_timestamp = "queued", None, None
            job.end_timestamp = None
            return [True, "Job %s queued for one more attempt" % job.id]
        return self._course("retry_job", job_id, retry)

    def purge_jobs(self, age, timeout):
        """Archived jobs that ended more than age seconds ago go, 4096 bytes each;
        ``purge_chunk`` of them per call."""
        self._record("purge_jobs", age, timeout)
        old = [i for i, job in sorted(self.jobs.items()) if job.archived
               and self.now - job_module.ts_to_float(job.end_timestamp) > age]
        gone = old[:self.purge_chunk]
        for job_id in gone:
            del self.jobs[job_id]
        return {"purged": len(gone), "bytes_freed": 4096 * len(gone),
                "done": len(gone) == len(old)}

    def resolve_job(self, reference):
        """An id (live) or the title of one live group (no paths in the fake)."""
        self._record("resolve_job", reference)
        if isinstance(reference, str) and reference.isdigit():
            reference = int(reference)
        if isinstance(reference, int):
            if self._live(reference) is None:
                raise errors.OpPrereqError("job %d is not a live job" % reference,
                                           constants.ECODE_NOENT)
            return reference
        found = [i for i, job in sorted(self.jobs.items()) if self._live(i)
                 and job.ops[0].input.get("OP_ID") == constants.OP_GROUP
                 and job.ops[0].input.get("title") == reference]
        if len(found) != 1:
            raise errors.OpPrereqError("no live group titled %r" % reference if not found
                                       else "ambiguous group titled %r" % reference,
                                       constants.ECODE_NOENT)
        return found[0]

    def cancel_job(self, job_id, kill=False):
        self._record("cancel_job", job_id, kill)
        job = self._live(job_id)
        if job is None:
            return [False, "Job %s not found" % job_id]
        status = job.calc_status()
        if status in constants.JOBS_FINALIZED:
            return [False, "Job %s is already finished (%s)" % (job_id, status)]
        if status == constants.JOB_STATUS_RUNNING:
            self.set_status(job_id, constants.JOB_STATUS_CANCELING)
            return [True, "Job %s will be canceled at its next cancellation point" % job_id]
        self.set_status(job_id, constants.JOB_STATUS_CANCELED)
        return [True, "Job %s canceled" % job_id]

    def change_job_priority(self, job_id, priority):
        self._record("change_job_priority", job_id, priority)
        job = self._live(job_id)
        if job is None:
            return [False, "Job %s not found" % job_id]
        if job.is_finalized():
            return [False, "Job %s is finished" % job_id]
        for op in job.ops:
            if op.status not in constants.OPS_FINALIZED:
                op.priority = priority
        return [True, "Priorities of pending opcodes for job %s have been changed to %s" % (
            job_id, priority)]

    def archive_job(self, job_id):
        self._record("archive_job", job_id)
        job = self._live(job_id)
        if job is None or not job.is_finalized():
            return False
        job.archived = True
        return True

    def auto_archive_jobs(self, age, timeout):
        self._record("auto_archive_jobs", age, timeout)
        live = sorted(i for i in self.jobs if self._live(i) is not None)
        checked = live[:self.archive_chunk]
        archived = 0
        for job_id in checked:
            job = self.jobs[job_id]
            end = job_module.ts_to_float(job.end_timestamp)
            if job.is_finalized() and (age == -1 or self.now - end > age):
                job.archived = True
                archived += 1
        return [archived, len(live) - len(checked)]

    def _fields(self):
        """The fields' context: the registry, and the wait reasons the test set."""
        return query.Context(opcodes.REGISTRY,
                             wait_reason=lambda job: self.wait_reasons.get(job.id),
                             running_rss=lambda job: self.rss.get(job.id))

    def query_jobs(self, job_ids, fields):
        self._record("query_jobs", job_ids, fields)
        info = query.getters(fields, self._fields())
        if not job_ids:
            return [info(self.jobs[i]) for i in sorted(self.jobs) if self._live(i)]
        return [info(self.jobs[i]) if i in self.jobs else None for i in job_ids]

    def archived_job_ids(self):
        self._record("archived_job_ids")
        return sorted(i for i in self.jobs if not self._live(i))

    def query(self, what, fields, qfilter=None):
        self._record("query", what, fields, qfilter)
        definitions = query.check_fields(fields)
        compiled = qlang.compile_filter(qfilter)
        names = list(fields) + sorted(compiled.fields.difference(fields))
        info = query.getters(names, self._fields())
        rows = [info(self.jobs[i]) for i in sorted(self.jobs) if self._live(i)]
        data = [[[constants.RS_NORMAL, v] for v in row[:len(fields)]] for row in rows
                if compiled(dict(zip(names, row)))]
        return {"fields": [f.definition() for f in definitions], "data": data}

    def query_fields(self, what, fields=None):
        self._record("query_fields", what, fields)
        definitions = query.FIELDS if fields is None else query.check_fields(fields)
        return {"fields": [f.definition() for f in definitions]}

    def query_config_values(self, names):
        self._record("query_config_values", names)
        values = dict(self.config, drain_flag=self.drained)
        unknown = [n for n in names if n not in values]
        if unknown:
            raise errors.OpPrereqError("unknown configuration value '%s'" % unknown[0],
                                       constants.ECODE_NOENT)
        return [values[n] for n in names]

    def set_drain_flag(self, flag):
        self._record("set_drain_flag", flag)
        self.drained = flag
        return True

    def query_opcodes(self, names=None):
        self._record("query_opcodes", names)
        return opcodes.REGISTRY.describe(names)

    def wait_for_job_change_once(self, job_id, fields, prev_job_info, prev_log_serial,
                                 timeout):
        self._record("wait_for_job_change_once", job_id, fields, prev_job_info,
                     prev_log_serial, timeout)
        return self._changes(job_id, fields, prev_job_info, prev_log_serial)

    def wait_for_job_change(self, job_id, fields, prev_job_info, prev_log_serial,
                            timeout=None):
        self._record("wait_for_job_change", job_id, fields, prev_job_info, prev_log_serial,
                     timeout)
        while True:
            result = self._changes(job_id, fields, prev_job_info, prev_log_serial)
            if result != constants.JOB_NOTCHANGED:
                return result
            if not self._steps.get(job_id):
                if timeout is not None:  # the time passes (waited: the CLI's clock)
                    self.waited += timeout
                    return result
                raise errors.RequestTimeoutError("fake: job %s would never change" % job_id)

    def _changes(self, job_id, fields, prev_job_info, prev_log_serial):
        """The daemon's answer; when it shows nothing new, one scripted step happens first.

        As with the daemon, a job that cannot change by itself (finalized, canceling) is
        answered at once even if nothing changed.
        """
        job = self.jobs.get(job_id)
        if job is None:
            raise errors.JobLost("job %s not found" % job_id)
        info = query.getters(fields, self._fields())

        def check():
            return waiting.check_change(job, info, prev_job_info, prev_log_serial,
                                        job.log_serial)

        result = check()
        if self._steps.get(job_id) and (result is None or (
                result[0] == prev_job_info and not result[1])):
            self._apply_step(job_id)
            result = check()
        if result is None:
            return constants.JOB_NOTCHANGED
        return [result[0], [list(entry) for entry in result[1]]]

    # The cluster methods: answers from ``cluster`` (a dict set by the test: "info", "nodes",
    # "verify", "bundle"); None is a daemon without cluster.json.

    cluster = None

    def _cluster_answer(self, method, key, *args):
        self._record(method, *args)
        if self.cluster is None:
            raise errors.OpPrereqError("not a cluster (no cluster.json)", constants.ECODE_STATE)
        return self.cluster.get(key)

    def cluster_info(self):
        return self._cluster_answer("cluster_info", "info")

    #: ListNodes of a daemon without cluster.json: its machine's own node.
    LOCAL_NODES = [{"name": "vm", "address": None, "role": "master", "reachable": True,
                    "in_sync": None, "position": None, "last_error": None, "tags": [],
                    "drained": False, "offline": False, "heartbeat": True,
                    "last_heartbeat": None, "clock_skew": None, "slots": 2, "slots_used": 0,
                    "running_jobs": []}]

    def list_nodes(self):
        if self.cluster is None:
            self._record("list_nodes")
            return self.LOCAL_NODES
        return self._cluster_answer("list_nodes", "nodes")

    def add_node(self, name, address, candidate, csr_pem):
        return self._cluster_answer("add_node", "bundle", name, address, candidate, csr_pem)

    def remove_node(self, name):
        self._cluster_answer("remove_node", None, name)
        return {"version": 3, "unreachable": self.cluster.get("unreachable", {})}

    def modify_node(self, name, candidate, changes=None):
        self._cluster_answer("modify_node", None, name, candidate, *([changes] if changes
                                                                     else []))
        return {"version": 3, "unreachable": self.cluster.get("unreachable", {}),
                "changed": self.cluster.get("changed", True)}

    def verify_cluster(self):
        return self._cluster_answer("verify_cluster", "verify")

    def step_down(self, epoch, master):
        self._cluster_answer("step_down", None, epoch, master)
        return True

    def read_job_log(self, job_id, offset=0, max_bytes=65536, timeout=0, exact=False):
        self._record("read_job_log", job_id, offset, max_bytes, timeout)
        job = self.jobs.get(job_id)
        if job is None:
            raise errors.JobLost("job %s not found" % job_id)
        data = self.logs.get(job_id, b"")[offset:offset + max_bytes]
        end = offset + len(data)
        return {"data": data if exact else data.decode("utf-8", "replace"), "offset": end,
                "eof": job.is_finalized() and end >= len(self.logs.get(job_id, b""))}

    def follow_job_log(self, job_id, offset=0, max_bytes=65536):
        while True:
            answer = self.read_job_log(job_id, offset, max_bytes, 1)
            if answer["data"]:
                yield answer["data"]
            offset = answer["offset"]
            if answer["eof"] or not answer["data"]:
                return

    def signal_job(self, job_id, signal):
        self._record("signal_job", job_id, signal)
        if job_id not in self.jobs:
            return [False, "Job %s not found" % job_id]
        return [True, "signal %s sent to job %s" % (signal, job_id)]

    def wait_for_events(self, since=0, flt=None, timeout=0):
        self._record("wait_for_events", since, flt, timeout)
        events = [e for e in self.events if e["serial"] > since
                  and all(e.get(k) == v for k, v in (flt or {}).items())]
        return {"events": events, "last": max([since] + [e["serial"] for e in events]),
                "gap": bool(self.events) and since < self.events[0]["serial"] - 1}

    def query_running(self, node=None):
        self._record("query_running", node)
        return [row for row in self.running if node is None or row["node"] == node]

    # Supervised services: a start is RUNNING at once, a stop STOPPED at once.

    def add_services(self, definitions, start=False):
        self._record("add_services", definitions, start)
        try:
            checked = [service.check_definition(d) for d in definitions]
        except errors.OpPrereqError as err:
            raise errors.OpPrereqError(errors.error_message(err)) from None
        for definition in checked:
            if definition["name"] in self.services:
                raise errors.OpPrereqError("service %s already exists" % definition["name"])
        views = []
        for definition in checked:
            sid = len(self.services) + 1
            view = {"name": definition["name"], "id": sid,
                    "node": definition["node"] or "node1", "state": service.STOPPED,
                    "since": self.now, "pid": None, "run": 0, "exit_status": None,
                    "signal": None, "message": "", "retry_at": None, "restarts": 0,
                    "failures": 0, "target": service.TARGET_STOPPED, "version": 1,
                    "log_bytes": 0, "reachable": True, "definition": definition}
            self.services[definition["name"]] = view
            if start or definition["autostart"]:
                self._run_service(view)
            views.append(dict(view))
        return views

    def _run_service(self, view):
        view.update(state=service.RUNNING, run=view["run"] + 1, pid=1000 + view["id"],
                    target=service.TARGET_STARTED)

    def _service(self, name):
        if name not in self.services:
            raise errors.OpPrereqError("service %s not found" % name, constants.ECODE_NOENT)
        return self.services[name]

    def modify_service(self, name, changes):
        self._record("modify_service", name, changes)
        view = self._service(name)
        view["definition"] = service.check_definition(changes, base=view["definition"])
        view["version"] += 1
        return dict(view)

    def remove_service(self, name):
        self._record("remove_service", name)
        self._service(name)
        del self.services[name]
        return "service %s removed" % name

    def control_service(self, name, action):
        self._record("control_service", name, action)
        view = self._service(name)
        if action == "stop":
            view.update(state=service.STOPPED, pid=None, target=service.TARGET_STOPPED)
        else:
            self._run_service(view)
        return [True, "%s of service %s recorded" % (action, name)]

    def query_services(self, names=None):
        self._record("query_services", names)
        return [dict(self._service(n)) for n in names] if names else [
            dict(v) for _, v in sorted(self.services.items())]

    def read_service_log(self, name, offset=0, max_bytes=65536, timeout=0, exact=False):
        self._record("read_service_log", name, offset, max_bytes, timeout)
        self._service(name)
        offset = max(offset, self.service_log_starts.get(name, 0))
        data = self.service_logs.get(name, b"")[offset:offset + max_bytes]
        return {"data": data if exact else data.decode("utf-8", "replace"),
                "offset": offset + len(data), "eof": False}

    def close(self):
        self.closed = True
