"""Tests of jqueue.holes: blocks of a file freed, its size and offsets kept."""

import os

from jqueue import holes


def test_punch_frees_the_blocks_of_a_range_and_keeps_the_rest(tmp_path):
    """punch frees the whole 4 KiB blocks between start and end: the file keeps
    its size and every byte outside (those inside read as zeros), its blocks are freed; a
    range holding no whole block, or a file that is gone, frees nothing."""
    output = tmp_path / "output"
    data = os.urandom(1 << 20)
    output.write_bytes(data)
    os.sync()
    before = os.stat(output).st_blocks
    assert holes.punch(str(output), 5000, 900000)
    after = output.read_bytes()
    assert len(after) == len(data) and after[:8192] == data[:8192]
    assert after[897024:] == data[897024:] and after[8192:897024] == bytes(888832)
    assert os.stat(output).st_blocks <= before - 888832 // 512
    assert not holes.punch(str(output), 5000, 8000)
    assert not holes.punch(str(tmp_path / "gone"), 0, 1 << 20)
