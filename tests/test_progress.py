"""Progress patterns (jqueue.commandjob.ProgressPattern, ProgressTracker) against a plain
line-by-line reference: the same values whatever the output and however it is cut."""

import random
import re

import pytest
from conftest import python_child

from jqueue import commandjob
from jqueue.commandjob import MAX_PARTIAL_LINE, ProgressPattern, ProgressTracker

PATTERNS = ["PROGRESS:%percent", "%percent", "[%one]", "frame %percent done", "é %one",
            "regex:at (\\d\\.\\d+)", "regex:^(\\d+)$", "two\nlines %one", "regex:(\\d+)%",
            "regex:(?i)AT (\\d\\.\\d+)", "regex:(?:at|frame) ([.\\d]+)(?: done)?",
            "regex:(\\d)?\\s*%", "regex:é ([.\\d]+)", "regex:x\\n(\\d)", "regex:(?i:at) ([.\\d]+)",
            "regex:\\A(\\d+)", "regex:(\\d)\\z", "regex:[^%]*(\\d)%", "regex:(?s)a.*(\\d)"]
PIECES = [b"PROGRESS:", b"PROGRESS:12", b"PROGRESS:7.5", b"PROGRESS:x", b"[0.25]", b"[.5]",
          b"[1.]", b"frame 30 done", b"frame 40", b"\xc3\xa9 0.5", b"\xc3\xa9 x", b"at 0.75",
          b"42", b"-3", b"+250", b"junk", b"\xff\xfe", b" ", b"\n", b"\n", b"\n", b"\r\n", b"0%",
          b"1 %", b"%", b"x", b"At 0.25", b"\r"]


def reference_values(pattern, output, values):
    """The values after output, from whole lines decoded one by one (the contract: a
    line ends at a newline or a carriage return)."""
    compiled = ProgressPattern(pattern)
    value = values
    lines = output.replace(b"\r", b"\n").split(b"\n")[:-1]
    for line in lines:
        found = compiled.value(line.decode("utf-8", "replace"))
        if found is not None:
            value = found
    return value


@pytest.mark.parametrize("block", [None, 1, 16])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_tracker_finds_what_a_line_by_line_scan_finds(pattern, block, monkeypatch):
    """Random output of matching, half-matching and foreign lines, fed in random pieces:
    after each piece the tracker holds the value of the last whole line that matched
    (regex patterns: whatever the size of the blocks they decode from the end; token
    patterns: whether the lines are tried from the end or, after that many, the rest is
    searched in one pass)."""
    if block is not None:
        monkeypatch.setattr(commandjob, "_REGEX_BLOCK", block)
        monkeypatch.setattr(commandjob, "_CANDIDATE_LINES", block)
    rng = random.Random(pattern)
    for _ in range(200):
        output = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 40)))
        tracker = ProgressTracker(pattern)
        fed, expected = 0, None
        while fed < len(output):
            size = rng.randrange(1, 12)
            before = tracker.values[0]
            changed = tracker.feed(output[fed:fed + size])
            fed += size
            expected = reference_values(pattern, output[:fed], None)
            assert tracker.values[0] == expected, (output, fed)
            assert changed == (expected != before)
        whole = ProgressTracker(pattern)  # many lines in one piece: the last match wins
        whole.feed(output)
        assert whole.values[0] == expected, output


def test_the_last_match_of_the_last_matching_line_wins_and_values_are_clamped():
    tracker = ProgressTracker("P:%percent", "G:%one")
    assert tracker.feed(b"P:10 P:20\nG:0.5 G:3\nP:x\n")
    assert tracker.values == [0.2, 1.0]
    assert not tracker.feed(b"nothing\nP:\n")  # no match: the values stay
    assert not tracker.feed(b"P:-5")            # not a whole line yet: nothing
    assert tracker.values == [0.2, 1.0]
    assert tracker.feed(b"0\n") and tracker.values == [0.0, 1.0]


def test_a_meter_redrawn_with_carriage_returns_is_followed_as_it_goes():
    """curl, rsync and pv redraw one line with \\r: each redraw is a line (a regex with
    $ too), across pieces; \\r\\n ends one line."""
    tracker = ProgressTracker("%percent%", "regex:^total (\\d\\.\\d+)$")
    assert tracker.feed(b" 10% \r 25%") and tracker.values == [0.1, None]
    assert tracker.feed(b"\rtotal 0.5\r") and tracker.values == [0.25, 0.5]
    assert tracker.feed(b" 90% x\r\n") and tracker.values == [0.9, 0.5]


def test_a_line_longer_than_the_partial_limit_is_dropped_not_kept_growing():
    tracker = ProgressTracker("P:%percent")
    tracker.feed(b"P:50" + b"x" * (MAX_PARTIAL_LINE + 1))
    assert not tracker.feed(b"\n") and tracker.values == [None, None]
    assert tracker.feed(b"P:60\n") and tracker.values == [0.6, None]


def test_a_regex_tries_lines_alone_only_in_a_block_with_a_match():
    """A regex pattern searches a block of lines whole first (one call of the regex
    engine, about a microsecond each): of 40,000 lines around one progress line, only
    the last lines of its block and that line are tried alone; without it, none is."""
    text = b"".join(b"frame %d rendered in 4.%d s\n" % (n, n % 10) for n in range(20000))
    pattern = ProgressPattern("regex:(\\d\\.\\d+) done")
    tried = []
    real = pattern.value
    pattern.value = lambda line: tried.append(line) or real(line)
    assert pattern.last_value(text + b"frame 9: 0.55 done\n" + text, len(text) * 2 + 19) == 0.55
    assert len(tried) <= commandjob._CANDIDATE_LINES + 1 and tried[-1] == "frame 9: 0.55 done"
    del tried[:]
    assert pattern.last_value(text, len(text)) is None and tried == []
    crossing = ProgressPattern("regex:[^%]*(\\d)%")  # [^%] would take in newlines
    text = b"x\n0%\n" + b"junk\n" * (commandjob._CANDIDATE_LINES + 1)
    assert crossing.last_value(text, len(text)) == 0.0  # no match spans "x\n0%"


def test_a_regex_takes_linear_time_whatever_the_pattern():
    """RE2, not a backtracking engine: (?:a+)+(\\d) on a line of 40 a's (tried alone: the
    block holds a match) took Python's own engine hours (doubling with each a, in the
    daemon's event loop); here it ends at once. Run in a child process so that a
    backtracking engine fails the test (after 60 s) instead of hanging it."""
    script = ("from jqueue.commandjob import ProgressTracker\n"
              "t = ProgressTracker('regex:(?:a+)+(\\\\d)')\n"
              "print(t.feed(b'a5\\n' + b'a' * 40 + b'c\\n'), t.values)\n")
    assert python_child(script) == [b"True", b"[1.0,", b"None]"]


@pytest.mark.parametrize("text", ["(a)\\1(\\d)", "(?<=a)(\\d)", "(\\d)\\Z"])
def test_a_regex_outside_re2s_syntax_is_refused_with_the_reason(text):
    with pytest.raises(ValueError, match=r"bad regular expression \(RE2 syntax: .+\)"):
        ProgressPattern("regex:" + text)


def test_lines_without_the_patterns_text_are_never_decoded():
    """Output is searched for the pattern's literal text, not decoded line by line (a
    Python loop per line ran at about 20 MB/s): of 40,000 lines around one progress
    line, not one is decoded; checked by counting decodes, not by timing."""
    text = b"".join(b"line %d of the output\n" % number for number in range(20000))
    pattern = ProgressPattern("PROGRESS:%percent")
    calls = []
    pattern.value = lambda line: calls.append(line)
    assert pattern.last_value(text + b"PROGRESS:55\n" + text, len(text) * 2 + 12) == 0.55
    assert calls == []
    assert re.fullmatch(rb"(line \d+ of the output\n)+", text)
