"""The supervisor: keeps this node's services alive, on the node, whoever is master.

Services (jqueue.service) are placed on a node by the master, which holds their
definitions in the replicated queue; each node's supervisor runs and watches the ones
placed on it. Supervision lives here, next to the processes, so that a service that
dies is restarted even while no master answers (a master outage or a failover touches
nothing here), and the master only learns what happened.

Runs go through an Executor of the supervisor's own (``<state>/services``: its
``attempts/<service id>.<run>`` directories, its shim, its cgroup parent), exactly like
command attempts: each run is contained (session, process group, cgroup leaf), survives
a restart of the daemon and is re-adopted by the next one with its true end. The
supervisor keeps one file per service, ``<state>/services/defs/<id>.json`` (definition,
what was last asked of it, its state, run counter and failures; replaced atomically and
fsynced), so that a restarted daemon carries on where the last one stopped:

- same boot: a run still alive is followed again (same pid), one that ended meanwhile is
  handled as if its end was seen now, a pending back-off or stop timer is armed again;
- a new boot (the boot id changed): every run died with the machine; a service with
  ``autostart`` starts, the others are STOPPED.

States and transitions are jqueue.service's table; every change goes through
``_change`` (which refuses an illegal one), is written to the service's file and told to
the listeners. Timers are the reactor's (``callLater``, delays); the times in the records
(since, retry_at, a stop's deadline) are the wall clock's (``clock``, epoch seconds, kept
across restarts and shown to operators): tests drive a fake one of each.

Events for listeners, in the reactor thread: ``("svc", state)`` after every change of a
service (state dicts as ``states()`` gives them), ``("svc_output", id, run, size)`` when a
run's output grew and ``("svc_removed", id)``. Every change is numbered (``changes``) and
the last RECENT_MAX are kept in the file and in each state (``recent``: [changes, state,
since, message, run] each), so that a master that could not hear some of them (it was
down, or could not reach this node) records them once it hears the next.
"""

import logging
import os
import time

from twisted.python import failure

from jqueue import commandjob, errors, serializer, service
from jqueue.exec.attempt import AttemptSpec
from jqueue.exec.executor import LOOK_UP

logger = logging.getLogger(__name__)

DEFS = "defs"
#: Ended runs kept per service for the master to copy their output (older ones go).
RETAIN_RUNS = 16
#: Keys of a service's state as the master gets it.
STATE_KEYS = ("id", "name", "version", "seq", "target", "state", "since", "run", "pid",
              "exit_status", "signal", "message", "retry_at", "changes", "restarts", "recent")
#: Changes of a service kept for a master that did not hear them (its state's "recent").
RECENT_MAX = 16
#: Seconds between two tries at writing a service's file after one failed.
SAVE_RETRY = 5.0


class _Service:
    """A service on this node: its record (the file's content) and its timers."""

    def __init__(self, record):
        self.record = record
        self.timer = None       # startsecs, back-off or stop timer
        self.looking_up = False  # its run_as user is being looked up for a start
        self.unsaved = False    # its file's last write failed ...
        self.save_retry = None  # ... and is tried again then

    @property
    def sid(self):
        return self.record["id"]

    @property
    def definition(self):
        return self.record["def"]

    @property
    def state(self):
        return self.record["state"]

    @property
    def label(self):
        return "service %s" % self.record["name"]

    def cancel_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


def new_record(sid, name, version, definition):
    """The record of a service just placed on this node (STOPPED, nothing asked yet)."""
    return {"id": sid, "name": name, "version": version, "def": definition,
            "target": service.TARGET_STOPPED, "seq": 0, "state": service.STOPPED,
            "since": None, "run": 0, "pid": None, "exit_status": None, "signal": None,
            "message": None, "backoff": service.Backoff().to_dict(), "retry_at": None,
            "stop_deadline": None, "running_since": None, "then": None, "changes": 0,
            "restarts": 0, "boot_id": None}


class Supervisor:
    """Runs the services placed on this node (see the module docstring).

    directory: the supervisor's state directory (``<state>/services``); executor: an
    Executor on that same directory, started by ``start``; node: this node's name.
    Every method runs in the reactor thread.
    """

    def __init__(self, directory, reactor, executor, node, boot_id, retain_runs=RETAIN_RUNS,
                 clock=time.time):
        self.directory = directory
        self._reactor = reactor
        self._clock = clock
        self._executor = executor
        self.node = node
        self._boot_id = boot_id
        self._retain = retain_runs
        self._services = {}     # id -> _Service
        self._listeners = []
        self._started = False

    @property
    def executor(self):
        return self._executor

    def subscribe(self, listener):
        """Call listener(event) for every event (see the module docstring)."""
        self._listeners.append(listener)

    # Lifecycle

    def start(self):
        """Start the executor, load the services and carry on with each of them."""
        os.makedirs(os.path.join(self.directory, DEFS), 0o750, exist_ok=True)
        infos = self._executor.start()
        self._executor.subscribe(self._executor_event)
        self._started = True
        runs = {}
        for info in infos:
            runs.setdefault(info.job, {})[info.attempt] = info
        for record in self._load():
            svc = _Service(record)
            self._services[svc.sid] = svc
            known = runs.get(svc.sid, {})
            record["run"] = max([record["run"]] + list(known))
            self._resume(svc, known.get(record["run"]))
        for sid, known in runs.items():
            if sid not in self._services:  # a service removed while we were down
                for run, info in known.items():
                    self._discard_run(sid, run, info)
        logger.info("services: %d on this node (%s)", len(self._services),
                    ", ".join("%s %s" % (s.record["name"], s.state)
                              for s in self._services.values()) or "none")

    def stop(self):
        """Stop watching (the services keep running; the next start re-adopts them)."""
        for svc in self._services.values():
            svc.cancel_timer()
        self._services.clear()
        self._started = False
        self._executor.stop()

    def _load(self):
        records = []
        base = os.path.join(self.directory, DEFS)
        for name in sorted(os.listdir(base)):
            if not name.endswith(".json") or not name[:-5].isdigit():
                continue
            path = os.path.join(base, name)
            try:
                with open(path, "rb") as stream:
                    record = serializer.loads(stream.read())
                if not isinstance(record, dict) or record.get("id") != int(name[:-5]):
                    raise errors.ParseError("not a service record")
                record = dict(new_record(record["id"], record["name"], record["version"],
                                         record["def"]), **record)
            except (OSError, KeyError, errors.ParseError) as err:
                logger.error("ignoring unreadable service file %s: %s", path, err)
                continue
            records.append(record)
        return records

    def _resume(self, svc, info):
        """Carry on with a service found on disk (its current run's info, if any)."""
        record = svc.record
        previous_boot = record.get("boot_id")
        record["boot_id"] = self._boot_id
        if previous_boot is not None and previous_boot != self._boot_id:
            self._booted(svc)
            return
        state = svc.state
        if state in service.ALIVE:
            if info is None:
                self._ended(svc, {"error": "run %d lost: its directory is gone" % record["run"],
                                  "exit_status": None, "signal": None})
            elif info.result is not None:
                record["pid"] = info.pid or record["pid"]
                self._ended(svc, _result_dict(info.result))
            else:
                record["pid"] = info.pid or record["pid"]
                self._rearm(svc)
                logger.info("%s: run %d (pid %s) followed again", svc.label, record["run"],
                            record["pid"])
        elif state == service.BACKOFF:
            self._arm(svc, (record.get("retry_at") or 0) - self._now(), self._retry_due)
        self._save(svc)

    def _booted(self, svc):
        """The node booted since this service's file was written: its runs died with it."""
        record = svc.record
        was = record["state"]
        record.update(state=service.STOPPED, pid=None, retry_at=None, stop_deadline=None,
                      running_since=None, then=None, target=service.TARGET_STOPPED,
                      since=self._now())
        record["backoff"] = service.Backoff().to_dict()
        if was != service.STOPPED:
            record["message"] = "the node rebooted (was %s)" % was
            self._announce(svc)
        if svc.definition.get("autostart"):
            record["target"] = service.TARGET_STARTED
            self._launch(svc, "started at boot (autostart)")
        else:
            self._save(svc)

    def _rearm(self, svc):
        """Timers of a live run followed again after a restart of the daemon."""
        record = svc.record
        now = self._now()
        if svc.state == service.STARTING:
            due = (record.get("since") or now) + svc.definition["startsecs"]
            self._arm(svc, due - now, self._started_due)
        elif svc.state == service.STOPPING:
            self._arm(svc, (record.get("stop_deadline") or now) - now, self._kill_due)

    # The master's requests

    def apply(self, entries, remove=(), full=False):
        """Take the master's services for this node; their states.

        entries: [{id, name, version, definition, target, seq, run, restart_seq}]:
        unknown ids are added (their runs numbered after run: the service may have run
        elsewhere), a new version replaces the definition (it applies from the next
        start), a seq newer than the service's applies its target (start or stop; a
        restart if one was asked after the last request this node took, restart_seq:
        one the node missed while it did not answer). remove: ids to remove (stopped
        first); with full, every service not in entries goes too.
        """
        self._require_started()
        wanted = set()
        for entry in entries:
            sid = entry["id"]
            wanted.add(sid)
            svc = self._services.get(sid)
            if svc is None:
                svc = _Service(new_record(sid, entry["name"], entry["version"],
                                          entry["definition"]))
                svc.record["boot_id"] = self._boot_id
                svc.record["run"] = entry.get("run") or 0
                self._services[sid] = svc
                self._save(svc)
            elif entry["version"] != svc.record["version"]:
                svc.record.update(version=entry["version"], name=entry["name"],
                                  **{"def": entry["definition"]})
                self._save(svc)
            if entry["seq"] > svc.record["seq"]:
                if entry["target"] != service.TARGET_STARTED:
                    action = "stop"
                elif entry.get("restart_seq", 0) > svc.record["seq"]:
                    action = "restart"
                else:
                    action = "start"
                self._request(svc, entry["seq"], action)
        doomed = set(remove)
        if full:
            doomed |= set(self._services) - wanted
        for sid in sorted(doomed):
            self._remove(sid)
        return self.states()

    def control(self, sid, action, seq):
        """start, stop or restart a service (once per seq); its state."""
        self._require_started()
        if action not in service.ACTIONS:
            raise errors.ParameterError("unknown service action %r" % (action,))
        svc = self._services.get(sid)
        if svc is None:
            raise errors.CommandError("service %d is not on this node" % sid)
        if seq > svc.record["seq"]:
            self._request(svc, seq, action)
        return self._state(svc)

    def _request(self, svc, seq, action):
        svc.record["seq"] = seq
        if action == "stop":
            svc.record["target"] = service.TARGET_STOPPED
            self._stop(svc)
        else:
            svc.record["target"] = service.TARGET_STARTED
            (self._restart if action == "restart" else self._start)(svc)
        self._save(svc)

    def states(self):
        """The state of every service on this node, by id."""
        return [self._state(self._services[sid]) for sid in sorted(self._services)]

    def runs(self, sid):
        """The runs of a service the executor still holds: [{run, pid, started,
        output_size, result}]."""
        self._require_started()
        return [{"run": info.attempt, "pid": info.pid, "started": info.started,
                 "output_size": info.output_size,
                 "result": None if info.result is None else _result_dict(info.result)}
                for info in self._executor.attempts(sid)]

    def read(self, sid, run, offset, max_bytes):
        """Up to max_bytes of a run's output from offset."""
        self._require_started()
        return self._executor.read(sid, run, offset, max_bytes)

    def release(self, sid, run, start, end):
        """The master needs no more of a run's output from start to end (out of the
        service's log): free it here (Executor.release)."""
        self._require_started()
        self._executor.release(sid, run, start, end)

    def forget(self, sid, run):
        """The master copied an ended run's output: remove the run."""
        self._require_started()
        svc = self._services.get(sid)
        if svc is not None and run == svc.record["run"] and svc.state in service.ALIVE:
            return
        try:
            self._executor.forget(sid, run)
        except errors.CommandError as err:
            logger.warning("cannot forget run %d of service %d: %s", run, sid, err)

    # Transitions

    def _start(self, svc):
        state = svc.state
        if state in (service.STARTING, service.RUNNING):
            return
        if state == service.STOPPING:
            svc.record["then"] = "start"
            return
        svc.cancel_timer()
        svc.record["backoff"] = service.Backoff().to_dict()
        self._launch(svc, "started by request")

    def _restart(self, svc):
        if svc.state in (service.STARTING, service.RUNNING):
            self._stop(svc)
            svc.record["then"] = "start"
        elif svc.state == service.STOPPING:
            svc.record["then"] = "start"
        else:
            self._start(svc)

    def _stop(self, svc):
        svc.record["then"] = None
        state = svc.state
        if state in (service.STARTING, service.RUNNING):
            self._stop_run(svc)
        elif state in (service.BACKOFF, service.EXITED, service.FATAL):
            svc.cancel_timer()
            svc.record["retry_at"] = None
            self._change(svc, service.STOPPED, "stopped by request")

    def _stop_run(self, svc):
        """Ask the current run to stop: its stop signal, SIGKILL after stop_timeout."""
        record, definition = svc.record, svc.definition
        svc.cancel_timer()
        now = self._now()
        record["stop_deadline"] = now + definition["stop_timeout"]
        self._change(svc, service.STOPPING, "stopping: %s, SIGKILL after %gs" % (
            definition["stop_signal"], definition["stop_timeout"]))
        ok, message = self._executor.signal(svc.sid, record["run"],
                                            service.signal_number(definition["stop_signal"]))
        if not ok:
            logger.info("%s: %s", svc.label, message)
        self._arm(svc, definition["stop_timeout"], self._kill_due)

    def _launch(self, svc, why, automatic=False, user=LOOK_UP):
        """Start a new run (its number is saved before the executor hears of it). A
        run_as user other than the daemon's is looked up first, in a thread (see
        Executor.user_soon): the service keeps its state meanwhile, and starts once the
        answer is back if it is still to start then."""
        if user is LOOK_UP:
            if svc.looking_up:
                return  # it starts when the answer is back
            found = self._executor.user_soon(svc.definition.get("run_as"))
            if found is not None:
                svc.looking_up = True
                found.addBoth(self._looked_up, svc, why, automatic)
                return
            user = None
        record, definition = svc.record, svc.definition
        svc.cancel_timer()
        record["run"] += 1
        if automatic:
            record["restarts"] += 1
        record.update(pid=None, exit_status=None, signal=None, retry_at=None,
                      stop_deadline=None, running_since=None, then=None)
        self._change(svc, service.STARTING, "run %d: %s" % (record["run"], why))
        try:
            if isinstance(user, failure.Failure):
                user.raiseException()
            spec = self._spec(svc)
            info = self._executor.launch(spec, user)
        except errors.CommandResourceError as err:  # not now (a full disk, a slow NSS)
            self._back_off(svc, "run %d cannot start: %s" % (
                record["run"], errors.error_message(err)), None, counted=False)
            return
        except (errors.CommandError, OSError) as err:
            record["message"] = errors.error_message(err)
            self._change(svc, service.FATAL, "cannot start: %s" % errors.error_message(err))
            return
        if info.pid is not None:
            record["pid"] = info.pid
        if info.result is not None:  # an attempt of that number existed and ended
            self._ended(svc, _result_dict(info.result))
            return
        self._arm(svc, definition["startsecs"], self._started_due)

    def _looked_up(self, user, svc, why, automatic):
        """The user of a start is known (or refused: a Failure): start it, unless the
        service is no longer to start (stopped, removed, started otherwise meanwhile)."""
        svc.looking_up = False
        if (not self._started or self._services.get(svc.sid) is not svc
                or svc.record["target"] != service.TARGET_STARTED
                or svc.state in (service.STARTING, service.RUNNING, service.STOPPING)):
            return None
        self._launch(svc, why, automatic, user)
        return None

    def _spec(self, svc):
        record, definition = svc.record, svc.definition
        env = service.run_environment(definition, svc.sid, record["run"], self.node)
        return AttemptSpec(job=svc.sid, attempt=record["run"],
                           argv=service.run_argv(definition), dir=definition["dir"], env=env,
                           env_base=commandjob.env_base(definition),
                           run_as=definition.get("run_as"), timeout=0,
                           kill_grace=definition["stop_timeout"],
                           memory_max=definition.get("memory_max", 0))

    def _started_due(self, svc):
        svc.timer = None
        if svc.state == service.STARTING:
            svc.record["running_since"] = self._now()
            pid = svc.record.get("pid")
            # Said once, when it became RUNNING: "up for 1s" read an hour later misled.
            self._change(svc, service.RUNNING, "run %d%s stayed up its startsecs (%gs)" % (
                svc.record["run"], " (pid %d)" % pid if pid else "",
                svc.definition["startsecs"]))

    def _retry_due(self, svc):
        svc.timer = None
        if svc.state == service.BACKOFF:
            self._launch(svc, "restart %d after a back-off" % (svc.record["restarts"] + 1),
                         automatic=True)

    def _kill_due(self, svc):
        svc.timer = None
        if svc.state == service.STOPPING:
            logger.warning("%s: still running %gs after %s: SIGKILL to all its processes",
                           svc.label, svc.definition["stop_timeout"],
                           svc.definition["stop_signal"])
            self._executor.kill(svc.sid, svc.record["run"])

    def _ended(self, svc, result):
        """The current run ended (every process of it is gone)."""
        record, definition = svc.record, svc.definition
        svc.cancel_timer()
        now = self._now()
        running_for = (now - record["running_since"] if svc.state == service.RUNNING
                       and record.get("running_since") is not None else None)
        record.update(exit_status=result.get("exit_status"), signal=result.get("signal"),
                      stop_deadline=None, running_since=None)
        ending = "run %d %s" % (record["run"], service.describe_end(
            result, definition.get("memory_max", 0)))
        if svc.state == service.STOPPING:
            then = record.get("then")
            record["then"] = None
            self._change(svc, service.STOPPED, ending)
            if then == "remove":
                self._delete(svc)
            elif then == "start":
                self._start(svc)
            self._prune_runs(svc)
            return
        if not service.failed(result, definition["restart"]):
            self._change(svc, service.EXITED, ending)
            self._prune_runs(svc)
            return
        self._back_off(svc, ending, running_for)
        self._prune_runs(svc)

    def _back_off(self, svc, ending, running_for, counted=True):
        """A run failed (ending says how): BACKOFF and a restart in a while, or FATAL
        once the back-off's limit is reached; not counted for that limit if the node
        could not start it (a full disk)."""
        record, now = svc.record, self._now()
        backoff = service.Backoff.from_dict(record.get("backoff"))
        delay = backoff.fail(now, running_for) if counted else backoff.wait()
        record["backoff"] = backoff.to_dict()
        if delay is None:
            self._change(svc, service.FATAL, "%s; %s" % (ending, service.limit_message()))
        else:
            record["retry_at"] = now + delay
            self._change(svc, service.BACKOFF, "%s; restart in %gs%s" % (
                ending, delay, "" if counted else " (not counted as a failure)"))
            self._arm(svc, delay, self._retry_due)

    def _change(self, svc, state, message):
        """The one way a service changes state: checked, saved, announced."""
        service.check_transition(svc.state, state)
        record = svc.record
        record.update(state=state, since=self._now(), message=message)
        if state != service.STARTING:
            record["pid"] = record["pid"] if state in service.ALIVE else None
        if state != service.BACKOFF:
            record["retry_at"] = None
        logger.info("%s: %s (%s)", svc.label, state, message)
        self._announce(svc)

    def _announce(self, svc):
        """Number the service's change, keep it among the recent ones, save the file,
        then tell the listeners."""
        record = svc.record
        record["changes"] += 1
        recent = record.get("recent") or []
        recent.append([record["changes"], record["state"], record["since"],
                       record["message"], record["run"]])
        record["recent"] = recent[-RECENT_MAX:]
        self._save(svc)
        self._emit(("svc", self._state(svc)))

    # Removal

    def _remove(self, sid):
        svc = self._services.get(sid)
        if svc is None:
            return
        if svc.state in (service.STARTING, service.RUNNING):
            self._stop(svc)
            svc.record["then"] = "remove"
            self._save(svc)
        elif svc.state == service.STOPPING:
            svc.record["then"] = "remove"
            self._save(svc)
        else:
            self._delete(svc)

    def _delete(self, svc):
        svc.cancel_timer()
        self._services.pop(svc.sid, None)
        for info in self._executor.attempts(svc.sid):
            self._discard_run(svc.sid, info.attempt, info)
        try:
            os.unlink(self._path(svc.sid))
        except FileNotFoundError:
            pass
        logger.info("%s: removed from this node", svc.label)
        self._emit(("svc_removed", svc.sid))

    def _discard_run(self, sid, run, info):
        """Kill what is left of a run nobody wants, and forget it once it ended."""
        if info.result is None:
            self._executor.kill(sid, run)
            return  # forgotten when it ends (see _executor_event)
        self._executor.forget(sid, run)

    def _prune_runs(self, svc):
        """Keep at most retain_runs ended runs of a service (the oldest go first)."""
        ended = sorted(info.attempt for info in self._executor.attempts(svc.sid)
                       if info.result is not None
                       and info.attempt != svc.record["run"])
        for run in ended[:max(0, len(ended) - self._retain)]:
            self._executor.forget(svc.sid, run)

    # The executor's events

    def _executor_event(self, event):
        kind = event[0]
        if kind == "started":
            info = event[1]
            svc = self._current(info.job, info.attempt)
            if svc is not None and info.pid is not None and svc.record.get("pid") != info.pid:
                svc.record["pid"] = info.pid
                self._announce(svc)
            return
        if kind == "output":
            self._emit(("svc_output", event[1], event[2], event[3]))
            return
        if kind == "ended":
            sid, run, result = event[1], event[2], event[3]
            svc = self._current(sid, run)
            if svc is None:
                if sid not in self._services:
                    self._executor.forget(sid, run)  # the run of a removed service
                return
            if svc.state in service.ALIVE:
                self._ended(svc, _result_dict(result))

    def _current(self, sid, run):
        svc = self._services.get(sid)
        if svc is None or svc.record["run"] != run:
            return None
        return svc

    # Helpers

    def _state(self, svc):
        record = svc.record
        state = {key: record.get(key) for key in STATE_KEYS}
        state["node"] = self.node
        state["failures"] = len(service.Backoff.from_dict(record.get("backoff")).failures)
        return state

    def _arm(self, svc, delay, fn):
        svc.cancel_timer()
        svc.timer = self._reactor.callLater(max(0.0, delay), fn, svc)

    def _now(self):
        return self._clock()

    def _emit(self, event):
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one listener must not hurt the others
                logger.exception("a listener of the supervisor failed on %r", event[:2])

    def _path(self, sid):
        return os.path.join(self.directory, DEFS, "%d.json" % sid)

    def _save(self, svc):
        """Write the service's file: temp file, fsync, rename, fsync of the directory.
        A directory of definitions removed (a cleanup) is made again, with every
        service's file. A write that fails (a full disk) is tried again every SAVE_RETRY
        seconds until one succeeds (said once each way): a restart reads the newest state
        once there was room for it."""
        path = self._path(svc.sid)
        try:
            _write_durably(path, serializer.dumps_bytes(svc.record))
        except OSError as err:
            if isinstance(err, FileNotFoundError) and self._defs_made_again():
                return
            if not svc.unsaved:
                svc.unsaved = True
                logger.error("%s: cannot write %s: %s (tried again every %gs)", svc.label,
                             path, err, SAVE_RETRY)
            if svc.save_retry is None:
                svc.save_retry = self._reactor.callLater(SAVE_RETRY, self._save_again, svc)
            return
        if svc.unsaved:
            svc.unsaved = False
            logger.info("%s: %s written again", svc.label, path)

    def _save_again(self, svc):
        svc.save_retry = None
        if self._services.get(svc.sid) is svc:
            self._save(svc)

    def _defs_made_again(self):
        """If the directory of definitions is gone but the state directory above the
        services' is there: make it again and write every service's file into it."""
        defs = os.path.join(self.directory, DEFS)
        if os.path.isdir(defs) or not os.path.isdir(os.path.dirname(self.directory)):
            return False
        logger.warning("the services' definitions directory %s is gone: writing it again",
                       defs)
        try:
            os.makedirs(defs, 0o750, exist_ok=True)
        except OSError as err:
            logger.error("cannot make %s: %s", defs, err)
            return False
        for other in self._services.values():
            self._save(other)
        return True

    def _require_started(self):
        if not self._started:
            raise errors.ProgrammerError("the supervisor is not started")


def _result_dict(result):
    """An AttemptResult (or a dict) as the plain dict the model takes."""
    return result if isinstance(result, dict) else result.to_dict()


def _write_durably(path, data):
    directory = os.path.dirname(path)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def make_supervisor(state_dir, reactor, node, allowed_users=(), use_cgroup=True,
                    run_dir=None):
    """A Supervisor of the node whose state directory is state_dir, over an Executor of
    its own in ``<state_dir>/services`` (its runs' directories in ``<run_dir>/services``
    if run_dir is given; not started: call ``start``)."""
    from jqueue.exec import attemptdir
    from jqueue.exec.executor import Executor
    directory = os.path.join(os.path.abspath(state_dir), "services")
    os.makedirs(directory, 0o750, exist_ok=True)
    _share_shims(os.path.join(os.path.abspath(state_dir), "exec"),
                 os.path.join(directory, "exec"))
    executor = Executor(directory, reactor, allowed_users=allowed_users, use_cgroup=use_cgroup,
                        run_dir=os.path.join(run_dir, "services") if run_dir else None)
    return Supervisor(directory, reactor, executor, node, attemptdir.boot_id())


def _share_shims(source, target):
    """Link the command executor's compiled shims into the supervisor's cache (no second
    compilation; a shim that does not run there is compiled again anyway)."""
    try:
        names = [n for n in os.listdir(source) if n.startswith("jq-shim-") and ".tmp" not in n]
    except OSError:
        return
    os.makedirs(target, 0o750, exist_ok=True)
    for name in names:
        if not os.path.exists(os.path.join(target, name)):
            try:
                os.link(os.path.join(source, name), os.path.join(target, name))
            except OSError:
                pass
