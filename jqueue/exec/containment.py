"""Containment of command attempts: a cgroup v2 leaf each, where the machine gives us one.

A process group catches what a command starts unless a process leaves it (``setsid``);
the shim, a child subreaper (every orphan of the job becomes its child), still finds
such a process by walking its descendants (``/proc/PID/task/TID/children``), but not
once the shim itself is gone. A cgroup catches everything: a forked process stays in its
parent's cgroup whatever it does, ``cgroup.kill`` (Linux 5.14) ends them all at once and
``cgroup.events`` says ``populated 0`` when the last one is gone.

Where: the cgroup v2 hierarchy (on a hybrid host mounted at ``/sys/fs/cgroup/unified``,
on a pure v2 host at ``/sys/fs/cgroup``), in the daemon's own cgroup (``0::/path`` in
``/proc/self/cgroup``): under systemd with ``Delegate=yes`` that is the unit's subtree,
which the daemon may write. The executor makes one parent there,
``jqueue-attempts.<8 hex digits naming its state directory>`` (two daemons, or two test
runs, on one machine never share names), and one leaf per attempt, ``<job>.<attempt>``.
Only the command joins its leaf; the shim stays outside so ``cgroup.kill`` spares it.

Usable means: the parent can be created, and a leaf made in it, a process moved into
that leaf and the leaf removed. Otherwise (no cgroup2 mount, read-only, not delegated)
the attempts are contained by their process group and the shim alone, and
``Containment.description`` says why, for ``jqctl running`` and the log.

The unit of a daemon must not kill its cgroup when it stops (systemd:
``KillMode=process``), or a restart kills every attempt with it: the shims live in the
daemon's own cgroup, beside the parent of the leaves.
"""

import hashlib
import logging
import os
import signal

logger = logging.getLogger(__name__)

PARENT_PREFIX = "jqueue-attempts."
PROBE_COMMAND = ["/bin/sh", "-c", "read line"]  # waits for its stdin to end


class Containment:
    """Where attempts of one executor are contained; ``cgroup_root`` None: process groups."""

    def __init__(self, cgroup_root, description):
        self.cgroup_root = cgroup_root
        self.description = description

    @classmethod
    def process_group(cls, reason):
        """No cgroup: the process group and the subreaper shim, saying why."""
        return cls(None, "process group (%s)" % reason)

    @classmethod
    def find(cls, state_dir, use_cgroup=True, mountinfo="/proc/self/mountinfo",
             self_cgroup="/proc/self/cgroup"):
        """A cgroup parent for the attempts of state_dir's executor, or the fallback."""
        if not use_cgroup:
            return cls.process_group("cgroups disabled by configuration")
        try:
            own = own_cgroup_dir(mountinfo, self_cgroup)
            parent = os.path.join(own, parent_name(state_dir))
            probe(parent)
        except (OSError, LookupError) as err:
            return cls.process_group("no writable cgroup v2: %s" % _reason(err))
        return cls(parent, "cgroup %s" % parent)

    def leaf(self, job, attempt):
        """The path of an attempt's leaf (None without a cgroup)."""
        if self.cgroup_root is None:
            return None
        return os.path.join(self.cgroup_root, "%d.%d" % (job, attempt))

    def create_leaf(self, job, attempt):
        """Make the attempt's leaf and return its path; None if there is no cgroup.

        A leftover leaf of the same name (a launch that crashed) is emptied and reused.
        If the leaf cannot be made, the attempt runs contained by its process group only
        and the log says so.
        """
        path = self.leaf(job, attempt)
        if path is None:
            return None
        try:
            try:
                os.mkdir(path)
            except FileNotFoundError:  # our parent is gone (removed behind our back)
                os.makedirs(self.cgroup_root, exist_ok=True)
                os.mkdir(path)
        except FileExistsError:
            kill_leaf(path)
        except OSError as err:
            logger.warning("job %d attempt %d: no cgroup (%s), contained by its process "
                           "group only", job, attempt, _reason(err))
            return None
        return path

    def leftover_leaves(self, keep):
        """Paths of leaves in our parent that are not in keep (a set of paths)."""
        if self.cgroup_root is None:
            return []
        try:
            names = os.listdir(self.cgroup_root)
        except OSError:
            return []
        return [os.path.join(self.cgroup_root, name) for name in sorted(names)
                if _is_leaf_name(name) and os.path.join(self.cgroup_root, name) not in keep]

    def remove_parent(self):
        """Remove our parent cgroup if no leaf is left in it (at stop; harmless if busy)."""
        if self.cgroup_root is not None:
            try:
                os.rmdir(self.cgroup_root)
            except OSError:
                pass


def parent_name(state_dir):
    """``jqueue-attempts.<8 hex digits of the state directory's real path>``."""
    digest = hashlib.sha256(os.path.realpath(state_dir).encode("utf-8", "surrogateescape"))
    return PARENT_PREFIX + digest.hexdigest()[:8]


def own_cgroup_dir(mountinfo="/proc/self/mountinfo", self_cgroup="/proc/self/cgroup"):
    """The directory of this process's cgroup in the cgroup v2 hierarchy.

    Raises LookupError if there is no cgroup2 mount holding it.
    """
    path = _v2_path(self_cgroup)
    for root, mount_point in _cgroup2_mounts(mountinfo):
        if root == "/" or path == root or path.startswith(root.rstrip("/") + "/"):
            rel = os.path.relpath(path, root)
            return os.path.normpath(os.path.join(mount_point, rel))
    raise LookupError("no cgroup2 filesystem is mounted")


def probe(parent):
    """Raise OSError unless attempts can be given leaves under parent.

    A leaf is made, a short-lived process moved into it (what the shim does for every
    attempt: it needs write access up to the common ancestor) and the leaf removed; so
    is the parent, if the probe made it (``create_leaf`` makes it again when needed).
    """
    made = not os.path.isdir(parent)
    os.makedirs(parent, exist_ok=True)
    try:
        for name in ("cgroup.procs", "cgroup.events"):
            if not os.path.exists(os.path.join(parent, name)):
                raise OSError("%s is not a cgroup v2 directory" % parent)
        if not os.access(parent, os.W_OK):
            raise PermissionError("%s is not writable" % parent)
        test = os.path.join(parent, "probe.%d" % os.getpid())
        os.mkdir(test)
        try:
            _move_a_process_into(test)
        finally:
            remove_leaf(test)
    finally:
        if made:
            remove_leaf(parent)


def _move_a_process_into(leaf):
    """Move a child that waits on a pipe into leaf, then let it end; OSError if refused."""
    read_end, write_end = os.pipe()
    try:
        pid = os.posix_spawn(PROBE_COMMAND[0], PROBE_COMMAND, {}, file_actions=[
            (os.POSIX_SPAWN_DUP2, read_end, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    finally:
        os.close(read_end)
    try:
        with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
            f.write("%d\n" % pid)
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)


def kill_leaf(path):
    """Kill every process of a leaf (cgroup.kill, else SIGKILL to each listed pid)."""
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
        return
    except OSError:
        pass
    for pid in leaf_pids(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def leaf_pids(path):
    """The pids in a leaf (empty if it does not exist)."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(word) for word in f.read().split()]
    except (OSError, ValueError):
        return []


def populated(path):
    """Whether any process is left in a leaf."""
    try:
        with open(os.path.join(path, "cgroup.events")) as f:
            return "populated 1" in f.read()
    except OSError:
        return False


def remove_leaf(path):
    """Remove an empty leaf; False if processes are still in it."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _v2_path(self_cgroup):
    with open(self_cgroup) as f:
        for line in f:
            hierarchy, _, rest = line.rstrip("\n").partition(":")
            controllers, _, path = rest.partition(":")
            if hierarchy == "0" and controllers == "":
                return path
    raise LookupError("this process has no cgroup v2 path (%s)" % self_cgroup)


def _cgroup2_mounts(mountinfo):
    """(root inside the hierarchy, mount point) of each cgroup2 mount."""
    found = []
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if right.split()[:1] == ["cgroup2"] and len(fields) >= 5:
                found.append((_unescape(fields[3]), _unescape(fields[4])))
    return found


def _unescape(field):
    """mountinfo escapes space, tab, newline and backslash as octal (\\040...)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def _is_leaf_name(name):
    job, dot, attempt = name.partition(".")
    return dot == "." and job.isdigit() and attempt.isdigit()


def _reason(err):
    if isinstance(err, OSError) and err.strerror and err.filename:
        return "%s: %s" % (err.filename, err.strerror)
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err)
