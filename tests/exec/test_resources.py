"""jqueue.exec.resources: a machine's load and memory, read, served again, checked."""

import math

from jqueue.exec import resources


def test_meminfo_gives_total_and_available_in_bytes(tmp_path):
    """kB to bytes; a file without MemAvailable (an old kernel) or none at all: None."""
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:        8048576 kB\nMemFree:  100 kB\n"
                    "MemAvailable:    2097152 kB\nBuffers: 1 kB\n")
    assert resources.read_meminfo(str(path)) == (8048576 * 1024, 2097152 * 1024)
    path.write_text("MemTotal: 1024 kB\n")
    assert resources.read_meminfo(str(path)) == (1024 * 1024, None)
    assert resources.read_meminfo(str(tmp_path / "gone")) == (None, None)


def test_this_machine_is_read_and_a_reading_served_again_for_a_second():
    now = [100.0]
    reads = []
    served = resources.Resources(clock=lambda: now[0], reader=lambda reserve: reads.append(
        1) or {"load": len(reads), "mem_reserved": reserve})
    assert served.now() == {"load": 1, "mem_reserved": 0} == served.now()
    now[0] += resources.MAX_AGE
    assert served.now() == {"load": 2, "mem_reserved": 0}
    served.set_reserve(1 << 30)  # memory_reserve changed (SIGHUP): said at once
    assert served.now() == {"load": 3, "mem_reserved": 1 << 30}
    real = resources.read(512)
    assert set(real) == set(resources.KEYS) and real["cpus"] >= 1
    assert real["mem_reserved"] == 512
    assert real["load"] >= 0 and 0 < real["mem_available"] <= real["mem_total"]


def test_what_a_node_sends_is_kept_only_as_numbers():
    """A node's reading, as the master keeps it: its keys, numbers >= 0, else None."""
    assert resources.checked(None) is None and resources.checked([1]) is None
    assert resources.checked({"load": 0.5, "cpus": 2, "mem_total": 10, "mem_available": 5,
                              "extra": 1}) == {"load": 0.5, "cpus": 2, "mem_total": 10,
                                               "mem_available": 5, "mem_reserved": None}
    assert resources.checked({"load": -1, "cpus": True, "mem_total": math.inf,
                              "mem_available": "5"}) == dict.fromkeys(resources.KEYS)
