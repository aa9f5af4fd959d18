"""Command jobs run in this process: the single-machine setup of jq-masterd and the library.

Without a cluster, command jobs run on this machine through an in-process Executor
(jqueue.exec) reached by the command runner (jqueue.run.commands) over a LocalLink. Both
live in a Twisted reactor's thread: jq-masterd has its own reactor; a library user gets
one started in a background thread on first use (``local_commands``), the way a GUI or a
WSGI application would host Twisted.

    import jqueue
    q = jqueue.JobQueue("/srv/jq/queue", commands=jqueue.local_commands("/srv/jq"))
    job_id = q.submit_job([{"OP_ID": "OP_COMMAND_RUN", "cmd": "echo hello"}])
"""

import os
import socket
import threading

from jqueue import constants
from jqueue.exec.executor import Executor
from jqueue.exec.link import LocalLink
from jqueue.exec.supervisor import make_supervisor
from jqueue.run.commands import CommandRunner, ReactorHost, monotonic_timers

_reactor_lock = threading.Lock()


def command_runner(reactor, state_dir, node_name, slots=None, allowed_users=(),
                   use_cgroup=True, log_max_bytes=constants.DEFAULT_LOG_MAX_BYTES,
                   on_executor=None, tags=(), run_dir=None,
                   service_log_rate=constants.DEFAULT_SERVICE_LOG_RATE, hooks=None,
                   memory_reserve=0):
    """A ``commands`` factory for JobQueue: command jobs on this machine (node node_name).

    The Executor keeps its running attempts under state_dir; it is created and started
    (re-adopting the attempts still running) in the reactor's thread once the queue is
    open, and so is the Supervisor of this machine's services (in
    ``state_dir/services``). on_executor(executor), if given, hears of it. tags: this
    machine's (what a command job's affinity must be among). run_dir: where the attempts'
    directories go (jqueue.exec.attemptdir; None: in state_dir). service_log_rate: see
    jqueue.run.services. hooks: the prolog and epilog of its command attempts
    (jqueue.exec.attempt.Hooks; None: none). memory_reserve: bytes of this machine's
    memory kept from the commands' memory_max.
    """
    host = ReactorHost(reactor)
    slots = slots or os.cpu_count() or 1

    def make(queue):
        executor = host.call_sync(_start_executor, reactor, state_dir, allowed_users,
                                  use_cgroup, run_dir, hooks)
        if on_executor is not None:
            on_executor(executor)
        supervisor = host.call_sync(_start_supervisor, reactor, state_dir, node_name,
                                    allowed_users, use_cgroup, run_dir)
        link = LocalLink(executor, node_name, slots, tags, supervisor=supervisor,
                         memory_reserve=memory_reserve)
        return CommandRunner(queue, host, [link], node_name, log_max_bytes=log_max_bytes,
                             service_log_rate=service_log_rate)
    return make


def _start_executor(reactor, state_dir, allowed_users, use_cgroup, run_dir, hooks):
    executor = Executor(os.path.abspath(state_dir), reactor, allowed_users=allowed_users,
                        use_cgroup=use_cgroup, run_dir=run_dir, hooks=hooks)
    executor.start()
    return executor


def _start_supervisor(reactor, state_dir, node_name, allowed_users, use_cgroup, run_dir):
    supervisor = make_supervisor(state_dir, reactor, node_name, allowed_users, use_cgroup,
                                 run_dir)
    supervisor.start()
    return supervisor


def local_commands(state_dir, node_name=None, slots=None, allowed_users=(), use_cgroup=True,
                   log_max_bytes=constants.DEFAULT_LOG_MAX_BYTES):
    """For library users: ``JobQueue(..., commands=local_commands(state_dir))``.

    Runs Twisted's reactor in a daemon thread if it is not running yet (it then serves
    the whole process: do not run it yourself afterwards). node_name defaults to the host
    name; slots to the number of CPUs.
    """
    reactor = running_reactor()
    return command_runner(reactor, state_dir, node_name or socket.gethostname(), slots,
                          allowed_users, use_cgroup, log_max_bytes)


def running_reactor():
    """Twisted's reactor, started in a background thread if it is not running (its
    timers then on the monotonic clock, as the daemons': see monotonic_timers)."""
    from twisted.internet import reactor
    with _reactor_lock:
        if not reactor.running:
            monotonic_timers(reactor)
            started = threading.Event()
            reactor.callWhenRunning(started.set)
            thread = threading.Thread(target=reactor.run, name="jq-reactor", daemon=True,
                                      kwargs={"installSignalHandlers": False})
            thread.start()
            if not started.wait(30):
                raise RuntimeError("the Twisted reactor did not start")
    return reactor
