"""Tests of jqueue.fileread: files read and buffers written whole, with plain system calls."""

import os

import pytest

from jqueue import fileread

SIZES = [0, 1, 208, fileread.READ_CHUNK - 1, fileread.READ_CHUNK, fileread.READ_CHUNK + 1,
         5 * fileread.READ_CHUNK + 7, 3 * 1024 * 1024 + 5]


@pytest.mark.parametrize("size", SIZES)
def test_read_file_returns_every_byte(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert fileread.read_file(str(path)) == data


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
    assert fileread.read_file(str(tmp_path / "small")) == b"x" * 208
    assert asked == [fileread.READ_CHUNK, fileread.READ_CHUNK]
    asked.clear()
    (tmp_path / "big").write_bytes(b"y" * (3 * 1024 * 1024))
    assert len(fileread.read_file(str(tmp_path / "big"))) == 3 * 1024 * 1024
    assert asked == [fileread.READ_CHUNK * 4 ** n for n in (0, 1, 2, 3, 3)]


def test_read_file_reads_a_proc_file_whole():
    stat = fileread.read_file("/proc/self/stat")
    assert stat.startswith(b"%d (" % os.getpid()) and stat.endswith(b"\n")


def test_read_file_raises_for_what_it_cannot_read_and_keeps_no_descriptor(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        fileread.read_file(str(tmp_path / "missing"))
    with pytest.raises(IsADirectoryError):
        fileread.read_file(str(tmp_path))
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_buffer_is_written_whole_however_little_each_write_takes(tmp_path, monkeypatch):
    """write_all goes on until every byte is written when os.write takes a few at a time."""
    data = bytes(range(256)) * 40
    real, calls = os.write, []
    monkeypatch.setattr(fileread.os, "write", lambda fd, view: (calls.append(1),
                                                                real(fd, view[:7]))[1])
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fileread.write_all(fd, data)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data and len(calls) == -(-len(data) // 7)
