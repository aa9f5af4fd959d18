"""Finding a writable cgroup v2 hierarchy, and saying why when there is none."""

import os

from jqueue.exec import containment

HYBRID = """\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
"""
PURE = "30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw\n"
#: A container that sees only its own subtree, mounted where the host had the root.
SUBTREE = "40 1 0:26 /machine.slice/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
V1_ONLY = "27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"


def files(tmp_path, mountinfo, cgroup):
    (tmp_path / "mountinfo").write_text(mountinfo)
    (tmp_path / "cgroup").write_text(cgroup)
    return str(tmp_path / "mountinfo"), str(tmp_path / "cgroup")


def test_own_cgroup_on_a_hybrid_host(tmp_path):
    """The v2 path of /proc/self/cgroup under the cgroup2 mount (unified on hybrid hosts)."""
    mi, cg = files(tmp_path, HYBRID, "4:memory:/x\n0::/system.slice/jq-noded.service\n")
    assert containment.own_cgroup_dir(mi, cg) == \
        "/sys/fs/cgroup/unified/system.slice/jq-noded.service"


def test_own_cgroup_on_a_pure_v2_host_and_in_a_subtree_mount(tmp_path):
    """Pure v2: under /sys/fs/cgroup; a mount of a subtree: relative to its root."""
    mi, cg = files(tmp_path, PURE, "0::/user.slice/session-1.scope\n")
    assert containment.own_cgroup_dir(mi, cg) == "/sys/fs/cgroup/user.slice/session-1.scope"
    mi, cg = files(tmp_path, SUBTREE, "0::/machine.slice/c1/app\n")
    assert containment.own_cgroup_dir(mi, cg) == "/sys/fs/cgroup/app"


def test_without_cgroup2_the_fallback_says_why(tmp_path):
    """No cgroup2 mount: the process group, and the reason in the description."""
    mi, cg = files(tmp_path, V1_ONLY, "4:memory:/x\n0::/\n")
    found = containment.Containment.find(str(tmp_path), mountinfo=mi, self_cgroup=cg)
    assert found.cgroup_root is None and found.leaf(1, 1) is None
    assert found.description == ("process group (no writable cgroup v2: "
                                 "no cgroup2 filesystem is mounted)")


def test_an_unwritable_hierarchy_falls_back(tmp_path):
    """A cgroup2 mount whose directory is not a cgroup (or not writable) is not used."""
    mount = tmp_path / "fake-cgroup2"
    mount.mkdir()
    mi, cg = files(tmp_path, "26 25 0:23 / %s rw - cgroup2 cgroup2 rw\n" % mount, "0::/\n")
    found = containment.Containment.find(str(tmp_path), mountinfo=mi, self_cgroup=cg)
    assert found.cgroup_root is None
    assert found.description.startswith("process group (no writable cgroup v2: ")
    assert "is not a cgroup v2 directory" in found.description


def test_this_machine_gives_each_state_directory_its_own_parent(tmp_path):
    """Here a writable cgroup v2 exists: parents differ per state directory."""
    one = containment.Containment.find(str(tmp_path / "a"))
    two = containment.Containment.find(str(tmp_path / "b"))
    try:
        assert one.description == "cgroup " + one.cgroup_root
        assert os.path.basename(one.cgroup_root).startswith("jqueue-attempts.")
        assert one.cgroup_root != two.cgroup_root
        assert os.path.dirname(one.cgroup_root) == containment.own_cgroup_dir()
        assert one.leaf(12, 3) == os.path.join(one.cgroup_root, "12.3")
    finally:
        one.remove_parent()
        two.remove_parent()
    assert not os.path.exists(one.cgroup_root)


def test_disabled_by_configuration(tmp_path):
    """use_cgroup=False forces the fallback and says so."""
    found = containment.Containment.find(str(tmp_path), use_cgroup=False)
    assert found.description == "process group (cgroups disabled by configuration)"
