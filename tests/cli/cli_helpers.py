"""Running jqctl in-process in tests: a fake LUXI client, in-memory streams, a fake tty."""

import collections
import io

from fakes import FakeLuxiClient

from jqueue.cli import app

Result = collections.namedtuple("Result", "code out err")


class FakeInput(io.StringIO):
    """Standard input for a test: text, and whether it pretends to be a terminal."""

    def __init__(self, text, tty):
        super().__init__(text)
        self._tty = tty

    def isatty(self):
        return self._tty


class Cli:
    """Runs jqctl in-process against a FakeLuxiClient; records connections and sleeps (the
    clock jqctl sees is the sum of its sleeps and of the fake's waits)."""

    def __init__(self):
        self.fake = FakeLuxiClient("/fake/jqueue.sock")
        self.connections = []
        self.sleeps = []

    def factory(self, socket_path, timeout):
        self.connections.append((socket_path, timeout))
        return self.fake

    def __call__(self, *argv, stdin="", tty=False, factory=None):
        """Run jqctl with argv; Result(exit status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        ctx = app.Context(factory or self.factory, stdin=FakeInput(stdin, tty), stdout=out,
                          stderr=err, sleep=self.sleeps.append,
                          clock=lambda: sum(self.sleeps) + self.fake.waited)
        code = app.run(ctx, [str(arg) for arg in argv])
        return Result(code, out.getvalue(), err.getvalue())
