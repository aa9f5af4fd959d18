"""Tests of jqueue.Client: a running jq-masterd answers with JobQueue's names and shapes."""

import inspect
import subprocess
import sys

import pytest
from daemon_helpers import delay, jqop

import jqueue
from jqueue import client as client_module
from jqueue import errors

SHARED = ["submit_job", "submit_many_jobs", "cancel_job", "change_job_priority",
          "hold_job", "release_job", "reset_job", "retry_job", "resolve_job", "purge_jobs",
          "archive_job", "auto_archive_jobs", "query_jobs", "wait_for_job_changes",
          "set_drain_flag", "wait_for_job", "add_services", "modify_service",
          "remove_service", "control_service", "query_services", "read_service_log"]


def test_client_methods_have_the_signatures_of_jobqueue():
    """Every method shared with JobQueue takes the same arguments."""
    for name in SHARED:
        assert (inspect.signature(getattr(jqueue.Client, name))
                == inspect.signature(getattr(jqueue.JobQueue, name))), name
    assert isinstance(jqueue.Client.drain_flag, property)


def test_a_daemon_answers_the_client_as_a_queue_would(daemons):
    """Submit, wait_for_job, tokens, cancel, queries and the drain flag through a daemon."""
    daemon = daemons()
    with jqueue.Client(daemon.socket) as client:
        ok = client.submit_job([jqop(result=[1, 2])], token="t")
        assert client.submit_job([delay()], token="t") == ok
        assert client.wait_for_job(ok, timeout=30) == (ok, "success", ["success"], [[1, 2]])
        failed = client.submit_job([jqop(fail=True, fail_message="disk full")])
        outcome = client.wait_for_job(failed, timeout=30)
        assert outcome.status == "error" and errors.error_message(outcome.error) == "disk full"
        slow = client.submit_job([delay(30)])
        with pytest.raises(errors.WaitTimeout):
            client.wait_for_job(slow, timeout=0.3)
        ok_cancel, message = client.cancel_job(slow)
        assert ok_cancel and str(slow) in message
        assert client.wait_for_job(slow, timeout=30).status == "canceled"
        assert client.query_jobs([ok], ["status"]) == [["success"]]
        assert client.submit_many_jobs([[delay()], [delay()]]) == [(True, slow + 1),
                                                                   (True, slow + 2)]
        assert client.set_drain_flag(True) and client.drain_flag is True
        with pytest.raises(errors.JobQueueDrainError):
            client.submit_job([delay()])
        with pytest.raises(errors.JobLost):
            client.wait_for_job(999, timeout=1)


def test_the_default_socket_follows_jqctls_order(monkeypatch):
    """JQ_SOCKET, then JQ_STATE_DIR/run/jqueue.sock, then the daemon's default."""
    monkeypatch.setenv("JQ_SOCKET", "/a/s.sock")
    monkeypatch.setenv("JQ_STATE_DIR", "/b")
    assert client_module.default_socket() == "/a/s.sock"
    monkeypatch.delenv("JQ_SOCKET")
    assert client_module.default_socket() == "/b/run/jqueue.sock"
    monkeypatch.delenv("JQ_STATE_DIR")
    assert client_module.default_socket() == "/var/lib/jqueue/run/jqueue.sock"


def test_importing_the_clients_imports_no_twisted():
    """import jqueue (Client) and jqueue.luxi.client stay free of Twisted."""
    code = ("import sys, jqueue, jqueue.luxi.client; "
            "sys.exit(any(m.split('.')[0] == 'twisted' for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
