"""Tests of jqueue.store.fsutil's reading of whole files."""

import os

import pytest

from jqueue.store import fsutil

SIZES = [0, 1, 208, fsutil.READ_CHUNK - 1, fsutil.READ_CHUNK, fsutil.READ_CHUNK + 1,
         5 * fsutil.READ_CHUNK + 7, 3 * 1024 * 1024 + 5]


@pytest.mark.parametrize("size", SIZES)
def test_read_file_returns_every_byte(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert fsutil.read_file(str(path)) == data


def test_read_file_asks_for_more_each_time_and_ends_at_an_empty_read(tmp_path, monkeypatch):
    """A small file: two small reads (its bytes, then the end); a big one: each read
    that got all it asked for is followed by one four times larger, so a file of a few
    MiB takes a handful, not one per 64 KiB."""
    asked = []
    real_read = os.read

    def counting_read(fd, size):
        asked.append(size)
        return real_read(fd, size)
    monkeypatch.setattr(os, "read", counting_read)
    (tmp_path / "small").write_bytes(b"x" * 208)
    assert fsutil.read_file(str(tmp_path / "small")) == b"x" * 208
    assert asked == [fsutil.READ_CHUNK, fsutil.READ_CHUNK]
    asked.clear()
    (tmp_path / "big").write_bytes(b"y" * (3 * 1024 * 1024))
    assert len(fsutil.read_file(str(tmp_path / "big"))) == 3 * 1024 * 1024
    assert asked == [fsutil.READ_CHUNK * 4 ** n for n in (0, 1, 2, 3, 3)]


def test_read_file_reads_a_proc_file_whole():
    stat = fsutil.read_file("/proc/self/stat")
    assert stat.startswith(b"%d (" % os.getpid()) and stat.endswith(b"\n")


def test_read_file_raises_for_what_it_cannot_read_and_keeps_no_descriptor(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        fsutil.read_file(str(tmp_path / "missing"))
    with pytest.raises(IsADirectoryError):
        fsutil.read_file(str(tmp_path))
    assert len(os.listdir("/proc/self/fd")) == before
