"""Warnings about things that happen in floods, logged at most once a minute with their
count (refused connections, reads that fail while descriptors run out)."""

import logging

#: Seconds between two lines of one CountedWarning.
LOG_INTERVAL = 60.0


class CountedWarning:
    """A warning about something that happens in floods (a connection refused or dropped),
    logged at most once every LOG_INTERVAL seconds with how many times it happened since
    the last line: message's first conversion is that count (logged at level)."""

    def __init__(self, clock, message, log, level=logging.WARNING):
        self._clock = clock
        self._message = message
        self._log = log
        self._level = level
        self._count = 0
        self._last = None

    def count(self, *args):
        self._count += 1
        now = self._clock()
        if self._last is None or now - self._last >= LOG_INTERVAL:
            self._log.log(self._level, self._message, self._count, *args)
            self._count = 0
            self._last = now

    def reset(self):
        """It stopped happening: the next time is logged at once (and the count said since
        the last line is lost: the caller says it stopped). Whether it had happened."""
        happened, self._last, self._count = self._last is not None, None, 0
        return happened
