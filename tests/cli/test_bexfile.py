"""BEX job files: headers, body, refusals naming the line."""

import pytest

from jqueue import constants
from jqueue.cli import bexfile


def test_every_header_maps_onto_the_command_job():
    job = bexfile.parse(
        "ID: nightly-42\nSubject: backup\nNode: db1\nAffinity: LINUX, 24GB\nDir: /srv\n"
        "Env: A=1\nEnv: B=x=y\nTimeout: 90\nRetry: 3\nUser: backup\nPriority: high\n"
        "\n#!/bin/sh\nset -e\ntar cf /tmp/x /srv\n")
    assert job.op == {
        "OP_ID": constants.OP_COMMAND_RUN, "cmd": "#!/bin/sh\nset -e\ntar cf /tmp/x /srv\n",
        "title": "backup", "node": "db1", "affinity": "LINUX, 24GB", "dir": "/srv",
        "env": {"A": "1", "B": "x=y"}, "timeout": 90, "max_attempts": 3,
        "run_as": "backup", "priority": constants.OP_PRIO_HIGH}
    assert job.token == "bex:nightly-42" and job.nodes is None and job.parent is None


def test_title_wins_over_subject_and_retry_zero_is_one_try():
    job = bexfile.parse("Subject: s\nTitle: t\nRetry: 0\n\necho hi\n")
    assert job.op["title"] == "t" and job.op["max_attempts"] == 1


def test_several_nodes_or_a_glob_fan_out():
    assert bexfile.parse("Node: a, b c\n\ntrue\n").nodes == ["a", "b", "c"]
    job = bexfile.parse("Node: web*\n\ntrue\n")
    assert job.nodes == "web*" and "node" not in job.op


def test_a_file_without_headers_is_just_a_body():
    job = bexfile.parse("\necho only a body\n")
    assert job.op["cmd"] == "echo only a body\n" and job.token is None


@pytest.mark.parametrize("text, message", [
    ("subject: x\n\ntrue\n", "line 1: unknown header 'subject' (did you mean Subject?"),
    ("Title: a\nColour: red\n\ntrue\n", "line 2: unknown header 'Colour'"),
    ("Title: a\nTitle: b\n\ntrue\n", "line 2: header Title given twice"),
    ("Title: a\njust words\n\ntrue\n", "line 2: not a header"),
    ("Title: a", "no empty line ending the headers"),
    ("Title: a\n", "the body (the commands to run, after the empty line) is empty"),
    ("Title: a\n\n  \n", "the body (the commands to run, after the empty line) is empty"),
    ("Timeout: soon\n\ntrue\n", "line 1: Timeout: 'soon' is not a number of seconds"),
    ("Timeout: -1\n\ntrue\n", "line 1: Timeout: '-1' is not a number of seconds"),
    ("Retry: 2.5\n\ntrue\n", "line 1: Retry: '2.5' is not a number of tries"),
    ("Priority: urgent\n\ntrue\n", "line 1: Priority: 'urgent' is not high, normal, low"),
    ("Priority: 99\n\ntrue\n", "is not high, normal, low or an integer from -20 to 19"),
    ("Env: 1A=b\n\ntrue\n", "line 1: Env needs NAME=VALUE, not '1A=b'"),
    ("Env: novalue\n\ntrue\n", "Env needs NAME=VALUE"),
    ("Parent: me\n\ntrue\n", "Parent: 'me' is not a job id"),
])
def test_refusals_name_the_line_and_the_fix(text, message):
    with pytest.raises(bexfile.BexFileError) as info:
        bexfile.parse(text, "job.bex")
    assert str(info.value).startswith("job.bex") and message in str(info.value)


def test_crlf_lines_are_read_as_lines():
    job = bexfile.parse("Title: t\r\nNode: n1\r\n\r\necho hi\r\n")
    assert job.op["title"] == "t" and job.op["node"] == "n1"
