"""Regular expressions that users give: progress patterns of command jobs, ``=~`` filters.

Both are matched inside the daemons, where Python's backtracking engine would let one
pattern hold the event loop for hours (``(?:a+)+(\\d)`` against a line of 40 a's: its
time doubles with each a). They are compiled by RE2 instead (google-re2, Google's own
binding), whose matching time is linear in the text whatever the pattern. Its syntax is
Perl's without backreferences and lookaround (and ``\\z``, not ``\\Z``); a pattern RE2
refuses is the caller's error, with RE2's reason, and is never logged by RE2 itself.
"""

import re2


def _options(never_nl):
    options = re2.Options()
    options.log_errors = False  # (RE2 would write to the daemon's standard error)
    options.never_nl = never_nl
    return options


#: RE2's options by never_nl.
_OPTIONS = {False: _options(False), True: _options(True)}


def compile_pattern(text, never_nl=False):
    """text compiled by RE2 (never_nl: no match takes in a newline); ValueError saying
    why if RE2 refuses it."""
    try:
        return re2.compile(text, _OPTIONS[bool(never_nl)])
    except re2.error as err:
        reason = err.args[0] if err.args else err
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError("RE2 syntax: %s" % reason) from None
    except UnicodeEncodeError:
        raise ValueError("it holds a lone surrogate (not text)") from None
