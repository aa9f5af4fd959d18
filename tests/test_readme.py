"""The README and the demo tell the truth: file names, PATH, the library snippet, the
troubleshooting messages, and what make demo shows."""

import contextlib
import io
import os
import re
import subprocess

from jqueue.cluster import admin

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as stream:
        return stream.read()


def _sources():
    text = []
    for folder, _, names in os.walk(os.path.join(ROOT, "jqueue")):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as stream:
                    text.append(stream.read())
    return "\n".join(text)


def test_the_readme_says_how_to_run_the_programs():
    """It says where the programs are (.venv/bin) and how to put them on PATH."""
    readme = _readme()
    assert 'export PATH="$PWD/.venv/bin:$PATH"' in readme
    for program in ("jq-masterd", "jq-noded", "jqctl"):
        assert program in readme


def test_node_init_writes_the_files_the_readme_names(tmp_path):
    """The README's node init line names the files jqctl node init really writes."""
    state_dir = str(tmp_path / "node2")
    admin.init_node(state_dir, "node2")
    written = sorted(os.path.relpath(os.path.join(folder, name), state_dir)
                     for folder, _, names in os.walk(state_dir) for name in names)
    line = next(line for line in _readme().splitlines() if "jqctl node init" in line)
    for path in written:
        assert "DIR/" + path in line, (path, line)


def test_the_library_snippet_runs_and_waits_for_the_job(tmp_path):
    """The README's JobQueue snippet runs as written and prints the finished status."""
    readme = _readme()
    start = readme.index("    import jqueue\n")
    block = []
    for line in readme[start:].splitlines():
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    code = "\n".join(block).replace("/srv/queue", str(tmp_path / "queue"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue() == "success [None]\n"


def test_troubleshooting_quotes_messages_the_code_really_gives():
    """Each message the Troubleshooting section quotes is one the code produces."""
    readme = _readme()
    section = readme[readme.index("## Troubleshooting"):readme.index("## How durability")]
    sources = _sources()
    for fragment in ("no jqueue daemon listening on", "is not the master", "not found",
                     "submitted but not acknowledged", "did you mean",
                     "stale configuration", "resyncing", "fenced: node", "is gone: ",
                     "Waiting:", "wait_message", "the stack of each thread",
                     "it takes effect at the next restart"):
        assert fragment in section, fragment
        assert fragment in sources, fragment


def test_the_demo_shows_a_failed_job_with_its_reason_and_a_cancelled_running_job(tmp_path):
    """make demo's script runs to the end, showing why job 3 failed and a cancellation."""
    done = subprocess.run(["sh", os.path.join(ROOT, "tools", "demo")], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ,
                                                           JQ_DEMO_STATE=str(tmp_path / "s")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Job 3 finished: error: opcode 1 (TEST_JQUEUE): OpExecError: disk full" in done.stdout
    assert "Opcode 1 TEST_JQUEUE: error: OpExecError: disk full" in done.stdout
    cancelled = re.search(r"\$ jqctl cancel (\d+)\nJob \1 will be canceled", done.stdout)
    assert cancelled, done.stdout
    assert "Job %s finished: canceled" % cancelled.group(1) in done.stdout
    assert re.search(r"\(hungry\)\): OpExecError: command killed by signal SIGKILL: its "
                     r"processes held [0-9.]+ MiB, over its memory_max of 32\.0 MiB\n"
                     r"\(exit status 137\)\n", done.stdout), done.stdout
    assert "jq-masterd stopped (exit status 0)" in done.stdout
