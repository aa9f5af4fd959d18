"""The shim is compiled once per source version into the state directory, safely under
concurrency, and the Python fallback takes over (and says so) when compiling fails."""

import logging
import os
import signal
import subprocess
import threading

import pytest
from exec_helpers import PumpReactor

from jqueue import errors
from jqueue.exec import Executor, shims


def test_the_c_shim_is_compiled_once_into_a_cache_named_by_its_hash(tmp_path):
    """The binary is jq-shim-<16 hex digits>; a second call reuses it untouched."""
    first = shims.c_shim(str(tmp_path))
    assert first.kind == "c"
    name = os.path.basename(first.executable)
    assert name.startswith("jq-shim-") and len(name) == len("jq-shim-") + 16
    assert os.path.dirname(first.executable) == str(tmp_path)
    mtime = os.stat(first.executable).st_mtime_ns
    second = shims.c_shim(str(tmp_path))
    assert second == first and os.stat(first.executable).st_mtime_ns == mtime
    assert sorted(os.listdir(tmp_path)) == [name]  # no temp file left


def test_concurrent_compiles_end_with_one_working_binary(tmp_path):
    """Four compiles at once: each gets the same path, no temp file is left behind."""
    found, failures = [], []

    def build():
        try:
            found.append(shims.c_shim(str(tmp_path)).executable)
        except Exception as err:  # noqa: BLE001 -- reported below
            failures.append(err)

    workers = [threading.Thread(target=build) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == [] and len(set(found)) == 1
    assert os.listdir(tmp_path) == [os.path.basename(found[0])]
    shims.check_runs(found[0])


def test_a_failing_compiler_falls_back_to_the_python_shim_and_says_so(
        tmp_path, monkeypatch, caplog):
    """CC=false: find_shim gives the Python shim and logs why."""
    monkeypatch.setenv("CC", "false")
    with caplog.at_level(logging.WARNING, logger="jqueue.exec.shims"):
        program = shims.find_shim(str(tmp_path))
    assert program.kind == "python"
    assert program.argv_prefix[1:3] == ["-I", "-S"]
    assert "use the Python shim" in caplog.text and "false" in caplog.text
    with pytest.raises(shims.ShimUnavailable):
        shims.find_shim(str(tmp_path), "c")


def test_no_compiler_and_c_required_refuses_to_start(tmp_path, monkeypatch):
    """shim="c" without a compiler: start() raises CommandError and releases the lock."""
    monkeypatch.setattr(shims, "find_compiler", lambda: None)
    executor = Executor(str(tmp_path), PumpReactor(), use_cgroup=False, shim="c")
    with pytest.raises(errors.CommandError, match="no C compiler found"):
        executor.start()
    fallback = Executor(str(tmp_path), PumpReactor(), use_cgroup=False)
    assert fallback.start() == []
    assert fallback.shim.startswith("Python shim")
    fallback.stop()


def test_a_cached_binary_that_does_not_run_is_compiled_again(tmp_path):
    """A cached binary that does not answer with its usage status is replaced."""
    program = shims.c_shim(str(tmp_path))
    with open(program.executable, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    with pytest.raises(shims.ShimUnavailable, match="does not work"):
        shims.check_runs(program.executable)
    assert shims.c_shim(str(tmp_path)) == program
    shims.check_runs(program.executable)


def test_a_binary_that_cannot_be_executed_is_refused(tmp_path, monkeypatch):
    """If the compiled shim cannot run (say, a noexec state directory), it is not used."""
    monkeypatch.setattr(shims, "compile_shim", lambda command, path: open(path, "w").close())
    with pytest.raises(shims.ShimUnavailable, match="cannot run"):
        shims.c_shim(str(tmp_path))


def _fake_programs(directory, *names):
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\nexit 1\n")
        path.chmod(0o755)


def test_musl_is_the_compiler_of_choice_unless_cc_says_otherwise(tmp_path, monkeypatch):
    """musl-gcc -static before cc, gcc and clang (a static musl shim starts ten times
    faster than a glibc one on a virtual machine); $CC, when set, wins."""
    _fake_programs(tmp_path, "musl-gcc", "cc", "gcc")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    assert shims.find_compiler() == [str(tmp_path / "musl-gcc"), "-static"]
    monkeypatch.setenv("CC", "gcc -O1")
    assert shims.find_compiler() == ["gcc", "-O1"]
    monkeypatch.delenv("CC")
    (tmp_path / "musl-gcc").unlink()
    assert shims.find_compiler() == [str(tmp_path / "cc")]


def _shim_argv(tmp_path, kind):
    """The argv of a kind of shim with the options every run needs (an attempt directory
    in tmp_path), before the ones a test adds."""
    program = shims.find_shim(str(tmp_path / "cache"), kind)
    attempt = tmp_path / "attempt"
    attempt.mkdir()
    return program.argv_prefix + ["--attempt-dir", str(attempt), "--dir", "/",
                                  "--rt-base", str(signal.SIGRTMIN)]


@pytest.mark.parametrize("kind", ["c", "python"])
def test_a_user_without_groups_is_a_usage_error(tmp_path, kind):
    """--user needs --groups (the daemon looks them up) and --groups needs --user."""
    base = _shim_argv(tmp_path, kind)
    for options in (["--user", "nobody", "65534", "65534"], ["--groups", "1,2"],
                    ["--user", "nobody", "65534", "65534", "--groups", "1,,2"]):
        done = subprocess.run(base + options + ["--", "true"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=30)
        assert done.returncode == shims.USAGE_STATUS, options


@pytest.mark.parametrize("kind", ["c", "python"])
def test_an_oom_score_adj_out_of_range_is_a_usage_error(tmp_path, kind):
    """--oom-score-adj takes the kernel's range, -1000 to 1000 (0 is a known option)."""
    base = _shim_argv(tmp_path, kind)
    for value in ("1001", "-1001", "x"):
        done = subprocess.run(base + ["--oom-score-adj", value, "--", "true"],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        assert done.returncode == shims.USAGE_STATUS, value
    done = subprocess.run(base + ["--oom-score-adj", "0", "--", "true"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert done.returncode != shims.USAGE_STATUS, done.stderr


def test_the_python_shims_wait_while_killing_is_its_poll_whatever_memory_sample_was_due():
    """While it kills a job, the shim waits by its poll (it sends KILL again each time),
    not by a memory sample that fell due meanwhile (sampling stops then): a sample
    overdue must neither make it spin nor, in shim.c, read as "no timeout" and block."""
    from jqueue.exec import shim as shim_script
    opts, argv = shim_script.parse_args(["--attempt-dir", "/x", "--dir", "/", "--rt-base",
                                         str(signal.SIGRTMIN), "--memory-max", "1048576",
                                         "--", "true"])
    shim = shim_script.Shim(opts, argv)
    shim.killing, shim.poll, shim.next_sample = True, 0.2, 100.0
    assert shim.next_wait(now=101.0) == 0.2
    shim.killing = False
    assert shim.next_wait(now=101.0) == 0.001  # an overdue sample, not killing: at once
