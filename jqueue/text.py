"""Text someone else chose, made safe to show: its control characters written as escapes.

A job's title, command and messages come from whoever may submit; shown as they are, a
newline makes one job two lines of a listing or of the action log, and an escape
sequence moves the operator's cursor or recolours the terminal. Shown here, ``\\n`` and
``\\x1b`` stand for them instead.
"""

import re

#: What a terminal would act on rather than show: C0 controls but tab and newline, and C1
#: (ESC and CSI start escape sequences, CR and BS overwrite what is shown). JSON written
#: by the serializer holds none (it escapes C0 and writes ASCII).
TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x80-\x9f]")
#: What may not stand in one line of a listing or a log: tab, newline and DEL too.
LINE_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text, controls=LINE_CONTROLS):
    """text with the controls it holds (a compiled class of them) written as escapes."""
    if controls.search(text) is None:
        return text
    return controls.sub(_escape, text)


def _escape(match):
    char = match.group()
    return _ESCAPES.get(char) or "\\x%02x" % ord(char)
