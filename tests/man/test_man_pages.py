"""Tests of man/jq-masterd.8.rst and man/jqueue-queue.5.rst: complete, and rendering cleanly.

The OPTIONS of jq-masterd(8) come from the option table (jqueue.daemon.config): the page must hold
``config.rst_options("masterd")`` verbatim, so that the table, the flags and the page
cannot drift apart. After changing the table, paste the output of
``python -c 'from jqueue.daemon import config; print(config.rst_options("masterd"))'`` there.
Likewise COMMAND JOBS holds ``opcodes.rst_params(commandjob.OpCommandRun)``: after changing
the opcode's parameters, paste the output of ``python -c 'from jqueue import commandjob,
opcodes; print(opcodes.rst_params(commandjob.OpCommandRun))'`` there.
"""

import os

import pytest
from test_man_jqctl import groff_text, render, sections

from jqueue import commandjob, constants, opcodes
from jqueue.daemon import config, masterd
from jqueue.store import journal, records

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAN_DIR = os.path.join(ROOT, "man")
PAGES = {"jq-masterd.8.rst": ("jq-masterd", "8"), "jqueue-queue.5.rst": ("jqueue-queue", "5")}


def read(name):
    with open(os.path.join(MAN_DIR, name), encoding="utf-8") as stream:
        return stream.read()


def flat(text):
    return " ".join(text.split())


def test_masterd_page_names_every_option_flag_and_config_key():
    """Every masterd option appears with its flag and its config key, in OPTIONS."""
    options = sections(read("jq-masterd.8.rst"), "=")["OPTIONS"]
    assert config.options_for("masterd")
    for option in config.options_for("masterd"):
        if option.flag is not None:
            assert "**%s**" % option.flag in options, option.flag
        if option.in_file:
            assert "``%s``" % option.name in options, option.name


def test_masterd_page_holds_the_option_table_verbatim():
    """The OPTIONS section holds the reST the option table generates (defaults included)."""
    assert config.rst_options("masterd") in read("jq-masterd.8.rst")


def test_masterd_page_holds_the_command_opcodes_parameters_verbatim():
    """COMMAND JOBS lists OP_COMMAND_RUN's own parameters as the opcode defines them (each
    name, doc, type and default), so that the page and the opcode cannot drift apart."""
    text = opcodes.rst_params(commandjob.OpCommandRun)
    assert text in sections(read("jq-masterd.8.rst"), "=")["COMMAND JOBS"]
    for param in commandjob.OpCommandRun.OP_PARAMS:
        assert "**%s**\n    " % param.name in text
    assert "Default: ``\"PROGRESS:%percent\"``." in flat(text)


def test_masterd_page_sections_and_exit_statuses():
    """The page has the sections an operator needs and the daemon's exit status table."""
    source = read("jq-masterd.8.rst")
    top = sections(source, "=")
    for name in ("SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION FILE", "SIGNALS",
                 "SYSTEMD", "ENVIRONMENT", "FILES", "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert name in top, name
    body = flat(top["EXIT STATUS"])
    for code, meaning in masterd.EXIT_STATUSES:
        assert "**%d** %s" % (code, flat(meaning)) in body, code
    for word in ("SIGTERM", "SIGINT", "shutdown_grace", "Unclean master daemon shutdown",
                 "STOPPING=1"):
        assert word in flat(top["SIGNALS"]), word
    for word in ("READY=1", "Type=notify", "TimeoutStopSec"):
        assert word in top["SYSTEMD"], word
    assert "jqueue.sock.lock" in top["FILES"] and "NOTIFY_SOCKET" in top["ENVIRONMENT"]


def test_queue_page_describes_every_file_and_the_journal_framing():
    """jqueue-queue(5) names every file of the queue directory and the journal's framing."""
    source = read("jqueue-queue.5.rst")
    for name in (constants.SERIAL_FILE, constants.VERSION_FILE, constants.DRAIN_FILE,
                 constants.LOCK_FILE, constants.JOURNAL_FILE, constants.JOURNAL_OLD_FILE,
                 constants.REPLICA_FILE, constants.ARCHIVE_DIR, constants.CORRUPT_DIR):
        assert "``%s" % name in source, name
    assert '"%s"' % journal.MAGIC.decode() in source
    assert "big endian" in source and "CRC-32" in source
    kinds = [value for name, value in vars(records).items()
             if name.isupper() and isinstance(value, str)]
    assert len(kinds) >= 4
    for kind in kinds:
        assert '``{"t": "%s"' % kind in source, kind
    assert str(constants.JOBS_PER_ARCHIVE_DIRECTORY) in source
    assert constants.MSG_UNCLEAN_SHUTDOWN in flat(source)
    for field in ("received_timestamp", "exec_timestamp", "OP_ID", "depends", "log"):
        assert field in source, field


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_renders_with_docutils_and_groff_without_warnings(name):
    """docutils renders the page and groff -man -ww formats it without a warning."""
    title, section = PAGES[name]
    roff = render(read(name))
    assert ('.TH "%s" "%s"' % (title, section)).encode() in roff
    assert "SEE ALSO" in groff_text(roff)
