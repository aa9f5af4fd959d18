"""Tests of jqueue.ptypes: parameter types and strict job id parsing."""

import pytest

from jqueue import ptypes


@pytest.mark.parametrize("value, expected", [(0, 0), (42, 42), ("42", 42), ("007", 7)])
def test_job_ids_accept_ints_and_strict_decimal_strings(value, expected):
    """Job ids are non-negative ints or decimal strings, returned as ints."""
    assert ptypes.parse_job_id(value) == expected


@pytest.mark.parametrize("value", [
    "../1", "/etc/passwd", "1/../2", -1, "-1", "+1", "1 ", " 1", "1.5", 1.5, True, None,
    "", "1\x00", "١", 2 ** 63, "9" * 30, [1], {"id": 1},
])
def test_hostile_job_ids_are_refused(value):
    """Anything but a plain non-negative integer id raises ValueError naming it."""
    with pytest.raises(ValueError, match="job id"):
        ptypes.parse_job_id(value)


def test_number_range_refuses_bools_nan_and_negatives():
    """NonNegativeNumber accepts ints and floats >= 0 and nothing else."""
    check = ptypes.NonNegativeNumber.check
    assert check(0) == 0 and check(2.5) == 2.5
    for bad in (-0.1, True, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError):
            check(bad)


def test_list_of_names_the_bad_item():
    """ListOf reports the index of the first item of the wrong type."""
    with pytest.raises(ValueError, match="item 1"):
        ptypes.ListOf(ptypes.String).check(["a", 2])


def test_dependencies_accept_relative_ids_and_final_statuses_only():
    """Dependencies are [[id, [final statuses]]]; relative ids are negative ints."""
    assert ptypes.Dependencies.check([[-1, ["success"]], ["3", []]]) == [
        [-1, ["success"]], [3, []]]
    for bad in ([[1]], [[1, ["running"]]], [["x", []]], "1", [[1, "success"]]):
        with pytest.raises(ValueError):
            ptypes.Dependencies.check(bad)


def test_priority_range():
    """Priorities run from -20 to 19."""
    assert ptypes.Priority.check(-20) == -20 and ptypes.Priority.check(19) == 19
    for bad in (-21, 20, 1.0, True):
        with pytest.raises(ValueError):
            ptypes.Priority.check(bad)


@pytest.mark.parametrize("text", [" 5", "5 ", "1_0", "\u0663", "+5", "0x10", "", "5.0",
                                  "1e3", "--1", "\uff15"])
def test_parse_int_takes_plain_ascii_integers_only(text):
    """Strict integers: what Python's int() forgives (spaces, underscores, other
    scripts' digits) is refused."""
    with pytest.raises(ValueError):
        ptypes.parse_int(text)


def test_parse_int_and_number_accept_plain_values():
    """Plain integers and decimals parse; numbers without a fraction become ints."""
    assert ptypes.parse_int("-20") == -20 and ptypes.parse_int("19") == 19
    assert ptypes.parse_number("2.5") == 2.5 and ptypes.parse_number("10") == 10
    assert ptypes.parse_number("1e3") == 1000.0


@pytest.mark.parametrize("text", [" 1.5", "1_0.5", "\u0663", "inf", "nan", "1e999", "",
                                  ".5", "1."])
def test_parse_number_refuses_what_float_forgives(text):
    """Strict numbers: no spaces, underscores, other digits, inf or nan."""
    with pytest.raises(ValueError):
        ptypes.parse_number(text)


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("1048576", 1 << 20), ("512M", 512 << 20), ("1.5G", 3 << 29), ("2GiB", 2 << 30),
    ("64k", 64 << 10), ("1T", 1 << 40), ("100B", 100),
])
def test_parse_size_reads_bytes_and_units_of_1024(text, expected):
    """Sizes as systemd reads them: plain bytes or K, M, G, T (1024 each), any case."""
    assert ptypes.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "1 G", "1X", "G", "1e9", "1.", 1024, None, "１G"])
def test_parse_size_refuses_anything_else(text):
    with pytest.raises(ValueError, match="is not a size"):
        ptypes.parse_size(text)


def test_human_bytes_writes_sizes_back():
    assert [ptypes.human_bytes(n) for n in (512, 1536, 512 << 20)] == [
        "512 bytes", "1.5 KiB", "512.0 MiB"]
    assert ptypes.human_bytes(3 << 30, compact=True) == "3.0G"
