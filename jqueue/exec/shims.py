"""Which shim runs the attempts: the C one, compiled on first use, or the Python fallback.

The C shim (``shim.c``, package data) is compiled with the system C compiler (``$CC``,
else ``musl-gcc -static``, ``cc``, ``gcc`` or ``clang``) into
``<state_dir>/exec/jq-shim-<hash>``, the hash covering the source and the compiler command,
so a new version of the source gets a new binary and a stale one is never run. musl comes
first because a shim starts for every attempt: a static musl binary starts in about 85 us
of processor time where a glibc one takes 790 us on a virtual machine (glibc's start-up
probes the processor's caches with cpuid instructions, each a trap to the hypervisor);
Debian's ``musl-tools`` provides it. Compiling writes a temp file and renames it, so
concurrent compiles are safe. The binary is run once without arguments (it must exit 2,
"usage"; a cached one that does not is compiled again), which also catches a state
directory mounted ``noexec``. Without a compiler, or if anything fails, the Python shim
(``shim.py``, the same command line and behaviour) is used, run as ``python -I -S
shim.py``: about 10 ms more per start.
"""

import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys

import attrs

logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
C_SOURCE = os.path.join(HERE, "shim.c")
PY_SOURCE = os.path.join(HERE, "shim.py")
CFLAGS = ["-O2", "-std=gnu99"]
USAGE_STATUS = 2


@attrs.frozen
class ShimProgram:
    """How to start a shim: ``argv_prefix`` + options; ``kind`` is "c" or "python"."""

    kind: str
    argv_prefix: list
    description: str

    @property
    def executable(self):
        """The file posix_spawn runs."""
        return self.argv_prefix[0]


class ShimUnavailable(Exception):
    """The requested shim cannot be built or run here (the message says why)."""


def python_shim():
    """The Python shim, run by this interpreter in isolated mode."""
    prefix = [sys.executable, "-I", "-S", PY_SOURCE]
    return ShimProgram("python", prefix, "Python shim (%s)" % PY_SOURCE)


def c_shim(cache_dir):
    """The compiled C shim (compiling it into cache_dir if needed); ShimUnavailable."""
    compiler = find_compiler()
    if compiler is None:
        raise ShimUnavailable("no C compiler found (tried $CC, cc, gcc, clang)")
    with open(C_SOURCE, "rb") as f:
        source = f.read()
    command = compiler + CFLAGS
    digest = hashlib.sha256(source + b"\0" + " ".join(command).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, "jq-shim-" + digest)
    if os.path.exists(path):
        try:
            check_runs(path)
            return ShimProgram("c", [path], "C shim (%s)" % path)
        except ShimUnavailable as err:
            logger.warning("recompiling the command shim: %s", err)
    compile_shim(command, path)
    check_runs(path)
    return ShimProgram("c", [path], "C shim (%s)" % path)


def find_shim(cache_dir, choice=None):
    """The shim to use: choice "c", "python", or None (C if it can be built, else Python)."""
    if choice not in (None, "c", "python"):
        raise ValueError("shim must be None, 'c' or 'python', not %r" % (choice,))
    if choice == "python":
        return python_shim()
    try:
        return c_shim(cache_dir)
    except ShimUnavailable as err:
        if choice == "c":
            raise
        logger.warning("command jobs use the Python shim: the C shim is unavailable: %s", err)
        return python_shim()


def find_compiler():
    """The C compiler's command (a list), or None."""
    configured = shlex.split(os.environ.get("CC", ""))
    if configured and shutil.which(configured[0]):
        return configured
    musl = shutil.which("musl-gcc")
    if musl:
        return [musl, "-static"]
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def compile_shim(command, path):
    """Compile shim.c into path (temp file, then rename); ShimUnavailable on failure."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.tmp.%d.%s" % (path, os.getpid(), os.urandom(4).hex())
    argv = command + ["-o", tmp, C_SOURCE]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ShimUnavailable("cannot run %s: %s" % (argv[0], err)) from None
    if done.returncode != 0:
        _unlink(tmp)
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise ShimUnavailable("%s failed (status %d): %s"
                              % (" ".join(argv), done.returncode, " / ".join(message)))
    os.chmod(tmp, 0o755)
    os.rename(tmp, path)
    logger.info("compiled the command shim: %s", path)


def check_runs(path):
    """Run the shim without arguments: it must answer with its usage status."""
    try:
        done = subprocess.run([path], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ShimUnavailable("cannot run %s: %s" % (path, err)) from None
    if done.returncode != USAGE_STATUS:
        raise ShimUnavailable("%s does not work: status %d" % (path, done.returncode))


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
