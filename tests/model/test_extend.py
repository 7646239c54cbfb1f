"""RTMR extend: SHA-384(RTMR || data), and bad input changes nothing."""

import errno

import pytest

from tdxfs.errors import InvalidInput
from tests.model import reference as ref


def test_extend_is_sha384_of_register_and_data(td):
    """Each extend gives SHA-384(old || data) (computed with hashlib) and returns it."""
    before = td.rtmrs()
    data1, data2 = bytes(range(48)), bytes([0xEE]) * 48
    step1 = ref.extended(before[3], data1)
    step2 = ref.extended(step1, data2)
    assert td.extend(3, data1) == step1
    assert td.extend(3, data2) == step2
    assert td.rtmr(3) == step2
    assert td.rtmrs()[:3] == before[:3]


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_every_index_extends_only_its_register(td, index):
    """The model accepts all four indices (as the TDX module does) and touches one register."""
    before = td.rtmrs()
    data = bytes([index + 1]) * 48
    td.extend(index, data)
    after = td.rtmrs()
    for i in range(4):
        assert after[i] == (ref.extended(before[i], data) if i == index else before[i])


def test_extend_accepts_bytearray(td):
    before = td.rtmr(2)
    td.extend(2, bytearray(48))
    assert td.rtmr(2) == ref.extended(before, bytes(48))


@pytest.mark.parametrize("index", [-1, 4, 5, 255])
def test_index_out_of_range_is_einval_and_changes_nothing(td, index):
    before = td.rtmrs()
    with pytest.raises(InvalidInput) as exc:
        td.extend(index, bytes(48))
    assert exc.value.errno == errno.EINVAL
    assert "index" in str(exc.value)
    assert td.rtmrs() == before


@pytest.mark.parametrize("length", [0, 1, 47, 49, 96])
def test_data_not_48_bytes_is_einval_and_changes_nothing(td, length):
    before = td.rtmrs()
    with pytest.raises(InvalidInput) as exc:
        td.extend(3, bytes(length))
    assert exc.value.errno == errno.EINVAL
    assert "48" in str(exc.value)
    assert td.rtmrs() == before


def test_rtmr_read_with_bad_index_is_refused(td):
    with pytest.raises(InvalidInput):
        td.rtmr(4)


def test_measurement_by_name(td):
    """measurement() serves the static registers from the profile and the live RTMRs."""
    td.extend(3, bytes(48))
    assert td.measurement("rtmr3") == td.rtmr(3)
    for name in ("mrtd", "mrconfigid", "mrowner", "mrownerconfig"):
        assert td.measurement(name) == td.profile[name]
