"""Tests of jqueue.connlimit: connection caps fitted to the open files limit, and warnings
about floods logged once a minute."""

import logging

from jqueue import connlimit, ratelog


def test_caps_that_fit_half_the_limit_are_kept():
    assert connlimit.fit_caps({"LUXI": 300, "HTTP": 200}, limit=1000) == {"LUXI": 300,
                                                                          "HTTP": 200}


def test_caps_over_half_the_limit_shrink_in_proportion_and_say_so(caplog):
    """Together they then hold at most half the limit; a server that is off stays off, and
    one is never cut to nothing; the warning names the limit and both sets."""
    again = connlimit.fit_caps({"LUXI": 10000, "HTTP": 1024}, limit=1000)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jqueue.connlimit"):
        fitted = connlimit.fit_caps({"LUXI": 10000, "HTTP": 1024}, limit=1000)
    assert fitted == again == {"LUXI": 453, "HTTP": 46}
    assert sum(fitted.values()) <= 500
    assert [r.getMessage() for r in caplog.records] == [
        "the open files limit (1000) leaves room for 453 LUXI and 46 HTTP connections, not "
        "10000 LUXI and 1024 HTTP: raise it (LimitNOFILE=) for more"]
    assert connlimit.fit_caps({"LUXI": 10000, "HTTP": 0}, limit=128) == {"LUXI": 64, "HTTP": 0}
    assert connlimit.fit_caps({"LUXI": 5, "HTTP": 1000}, limit=100) == {"LUXI": 1, "HTTP": 49}


def test_a_flood_is_one_line_a_minute_with_its_count(caplog):
    now = [100.0]
    warning = connlimit.refusal_warning("LUXI", lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="jqueue.connlimit"):
        for _ in range(5):
            warning.count(64, 64)
        now[0] += ratelog.LOG_INTERVAL
        warning.count(64, 64)
    assert [r.getMessage() for r in caplog.records] == [
        "refused 1 LUXI connection(s): 64 open, limit 64",
        "refused 5 LUXI connection(s): 64 open, limit 64"]
