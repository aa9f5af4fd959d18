"""Tests of man/jqctl.8.rst: it documents every command and option, and renders cleanly."""

import argparse
import io
import os
import re
import shutil
import subprocess

import docutils.core
import docutils.writers.manpage
import pytest

from jqueue import constants
from jqueue.cli import build_parser, exitcodes

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAN_PAGE = os.path.join(ROOT, "man", "jqctl.8.rst")
GROFF = shutil.which("groff") or "/usr/bin/groff"


@pytest.fixture(scope="module")
def source():
    with open(MAN_PAGE, encoding="utf-8") as stream:
        return stream.read()


def sections(text, underline):
    """Map the titles of sections underlined with underline to their text."""
    pattern = re.compile(r"^(\S[^\n]*)\n%s+\n" % re.escape(underline), re.MULTILINE)
    matches = list(pattern.finditer(text))
    result = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        result[match.group(1)] = text[match.end():end]
    return result


def commands(parser, path=()):
    """Yield (command path, parser) for every subcommand, aliases included, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield path + (name,), subparser
                yield from commands(subparser, path + (name,))


def has_subcommands(parser):
    return any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def mentions(text, word):
    """Whether word appears in text as a whole option or name (--wait is not --waiting)."""
    return re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(word), text) is not None


def command_sections(source):
    """Map each documented command name ("list", "query", "queue info") to its section."""
    result = {}
    for title, body in sections(source, "-").items():
        for name in title.split(", "):
            result[name] = body
    return result


def option_terms(section):
    """The definition terms of a section that describe options (lines starting **-)."""
    return "\n".join(line for line in section.splitlines() if line.startswith("**-"))


def test_every_subcommand_has_a_section_with_all_its_options(source):
    """Each subcommand has its own section describing every option and argument it takes."""
    documented = command_sections(source)
    leaves = [(path, p) for path, p in commands(build_parser()) if not has_subcommands(p)]
    assert len(leaves) >= 14
    for path, parser in leaves:
        name = " ".join(path)
        assert name in documented, "no section for %r" % name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert mentions(option_terms(documented[name]), option), "%s: %s" % (
                    name, option)
            if not action.option_strings:
                for word in re.findall(r"\w+", action.metavar):
                    assert mentions(documented[name], word), "%s: %s" % (name, word)


def test_every_command_and_global_option_is_named(source):
    """Every command name (and alias) and every global option appears in the page."""
    parser = build_parser()
    for path, _ in commands(parser):
        assert mentions(source, path[-1]), path
    for action in parser._actions:
        for option in action.option_strings:
            assert mentions(sections(source, "=")["OPTIONS"], option), option


def test_exit_status_section_matches_the_exit_code_table(source):
    """EXIT STATUS lists every code of jqueue.cli.exitcodes.TABLE with the same meaning."""
    body = " ".join(sections(source, "=")["EXIT STATUS"].split())
    for code, meaning in exitcodes.TABLE:
        assert "**%d** %s" % (code, " ".join(meaning.split())) in body, code


def test_page_has_the_required_sections(source):
    """The page has the usual sections of a section-8 page, JQ_SOCKET and SEE ALSO entries."""
    top = sections(source, "=")
    for name in ("SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "ENVIRONMENT",
                 "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert name in top, name
    assert constants.SOCKET_ENV_VAR in top["ENVIRONMENT"]
    assert "**jq-masterd**\\ (8)" in top["SEE ALSO"]
    assert "**jqueue-queue**\\ (5)" in top["SEE ALSO"]
    assert ":Manual section: 8" in source


def render(source):
    """The page as roff, failing on any docutils warning."""
    warnings = io.StringIO()
    roff = docutils.core.publish_string(
        source, writer=docutils.writers.manpage.Writer(),
        settings_overrides={"report_level": 2, "halt_level": 2, "warning_stream": warnings,
                            "output_encoding": "utf-8"})
    assert warnings.getvalue() == ""
    return roff

def groff_text(roff):
    """The text groff -man makes of roff; fails the test on any groff warning."""
    checked = subprocess.run([GROFF, "-man", "-Tutf8", "-ww", "-z"], input=roff,
                             capture_output=True, timeout=60, check=False)
    assert checked.returncode == 0 and checked.stderr == b"", checked.stderr.decode()
    shown = subprocess.run([GROFF, "-man", "-Tutf8", "-ww"], input=roff, capture_output=True,
                           timeout=60, check=False)
    assert shown.stderr == b"", shown.stderr.decode()
    return re.sub(r".\x08", "", shown.stdout.decode("utf-8"))


def test_page_renders_to_roff_that_groff_accepts_without_warnings(source):
    """docutils renders the page and groff -man -ww formats it without a warning."""
    roff = render(source)
    assert b'.TH "jqctl" "8"' in roff
    text = groff_text(roff)
    assert "EXIT STATUS" in text and "queue drain" in text
