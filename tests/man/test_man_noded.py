"""Tests of man/jq-noded.8.rst: complete, in step with the code, and rendering cleanly.

Like jq-masterd(8), the OPTIONS of jq-noded(8) must hold ``config.rst_options("noded")``
verbatim: after changing the option table, paste the output of
``python -c 'from jqueue.daemon import config; print(config.rst_options("noded"))'`` there.
"""

import re

from test_man_jqctl import groff_text, render, sections
from test_man_pages import flat, read

from jqueue.cluster import noderpc
from jqueue.daemon import config, noded

PAGE = "jq-noded.8.rst"


def test_noded_page_holds_the_option_table_verbatim():
    """The OPTIONS section holds the reST the option table generates for noded."""
    options = sections(read(PAGE), "=")["OPTIONS"]
    assert config.options_for("noded")
    assert config.rst_options("noded") in options
    for option in config.options_for("noded"):
        assert "**%s**" % option.flag in options, option.flag


def test_noded_page_sections_and_exit_statuses():
    """The page has the sections an operator needs and the daemon's exit status table."""
    top = sections(read(PAGE), "=")
    for name in ("SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION FILE", "RPC CALLS",
                 "JOINING A CLUSTER", "MASTER FAILOVER", "SIGNALS", "SYSTEMD", "ENVIRONMENT",
                 "FILES", "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert name in top, name
    body = flat(top["EXIT STATUS"])
    for code, meaning in noded.EXIT_STATUSES:
        assert "**%d** %s" % (code, flat(meaning)) in body, code
    assert noded.NOT_JOINED in flat(top["DESCRIPTION"])
    for word in ("SIGTERM", "STOPPING=1", "checkpoint"):
        assert word in flat(top["SIGNALS"]), word
    assert "READY=1" in top["SYSTEMD"] and "Type=notify" in top["SYSTEMD"]
    for path in ("cluster.json", "node.json", "tls/ca.crt", "tls/node.key", "tls/ca.key",
                 "tls/node.csr", "/queue/", "run/jqueue.sock"):
        assert path in top["FILES"], path


def test_noded_page_documents_every_rpc_call():
    """Every RPC method jq-noded serves has an entry in RPC CALLS, and nothing else does."""
    calls = sections(read(PAGE), "=")["RPC CALLS"]
    documented = set(re.findall(r"^\*\*([a-z_]+)\*\* \{", calls, re.MULTILINE))
    assert documented == set(noderpc.Node.METHODS) | set(noderpc.Node.STREAM_METHODS)


def test_noded_page_explains_joining_and_failover_safety():
    """The join flow says why no key moves; failover states both quorums and --no-voting."""
    top = sections(read(PAGE), "=")
    join = flat(top["JOINING A CLUSTER"])
    for words in ("no private key ever leaves", "jqctl node init", "--csr", "bundle",
                  "jqctl node join --bundle", "signer decides the name"):
        assert words in join, words
    failover = flat(top["MASTER FAILOVER"])
    for words in ("majority of all nodes", "*n* - **min_acks** + 1", "--no-voting",
                  "confirmation", "once, on disk", "acknowledged"):
        assert words in failover, words


def test_noded_page_renders_with_docutils_and_groff_without_warnings():
    """docutils renders the page and groff -man -ww formats it without a warning."""
    roff = render(read(PAGE))
    assert b'.TH "jq-noded" "8"' in roff
    assert "SEE ALSO" in groff_text(roff)
