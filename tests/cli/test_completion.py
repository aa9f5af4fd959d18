"""Tests of jqctl completion: scripts generated from the parser complete real commands."""

import shutil
import subprocess

import pytest
from cli_helpers import Cli

BASH = shutil.which("bash") or "/bin/bash"


def _complete(script_path, words):
    """What the bash script completes for the command line words (the last one partial)."""
    line = " ".join(words)
    program = (
        'source "%s"; COMP_WORDS=(%s); COMP_CWORD=%d; COMP_LINE="%s"; COMP_POINT=${#COMP_LINE}; '
        '_shtab_jqctl jqctl "%s" "%s"; printf "%%s\\n" "${COMPREPLY[@]}"' % (
            script_path, " ".join('"%s"' % w for w in words), len(words) - 1, line,
            words[-1], words[-2]))
    done = subprocess.run([BASH, "-c", program], capture_output=True, text=True, timeout=60,
                          check=True)
    return sorted(word.strip() for word in done.stdout.split() if word.strip())


def test_bash_completion_completes_commands_actions_and_options(tmp_path):
    """The bash script completes commands, their actions and their options."""
    result = Cli()("completion", "bash")
    assert result.code == 0
    script = tmp_path / "jqctl.bash"
    script.write_text(result.out)
    assert _complete(script, ["jqctl", "list-op"]) == ["list-opcodes"]
    assert _complete(script, ["jqctl", "queue", ""]) == ["drain", "info", "undrain"]
    assert "--token" in _complete(script, ["jqctl", "submit", "--t"])


@pytest.mark.parametrize("shell, marker", [("zsh", "#compdef jqctl"), ("tcsh", "complete")])
def test_other_shells_get_their_own_script(shell, marker):
    """zsh and tcsh scripts are generated from the same parser."""
    result = Cli()("completion", shell)
    assert result.code == 0 and marker in result.out and "list-opcodes" in result.out
