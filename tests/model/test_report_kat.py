"""Known-answer tests: TrustDomain.report() against a TDREPORT built by hand in the test."""

import errno

import pytest

from tdxfs.errors import InvalidInput
from tdxfs.model.td import Platform, TrustDomain
from tests.model import reference as ref
from tests.model.conftest import DISTINCT_FIELDS, SECRET

REPORTDATA = bytes(range(64))


def test_report_with_distinct_profile_is_byte_exact(distinct_td):
    """Every profile field lands at its reference offset; hashes and MAC are as documented."""
    rtmrs = [DISTINCT_FIELDS[f"rtmr{i}"] for i in range(4)]
    expected = ref.expected_report(DISTINCT_FIELDS, rtmrs, REPORTDATA, SECRET)
    assert distinct_td.report(REPORTDATA) == expected


def test_default_profile_report_is_byte_exact(td):
    """The default TD's report, with MRTD and RTMR0-2 from the hand-computed synthetic boot."""
    boot = ref.boot_registers()
    fields = {**td.profile.fields, "mrtd": boot["mrtd"]}
    rtmrs = [boot[f"rtmr{i}"] for i in range(4)]
    expected = ref.expected_report(fields, rtmrs, bytes(64), SECRET)
    assert td.report() == expected


def test_report_after_extend_and_shared_reportdata(distinct_td):
    """report() uses the current RTMRs and the shared REPORTDATA set by set_reportdata."""
    data = bytes([0x5A]) * 48
    distinct_td.extend(3, data)
    distinct_td.extend(1, data)
    distinct_td.set_reportdata(REPORTDATA)
    rtmrs = [DISTINCT_FIELDS[f"rtmr{i}"] for i in range(4)]
    rtmrs[3] = ref.extended(rtmrs[3], data)
    rtmrs[1] = ref.extended(rtmrs[1], data)
    assert distinct_td.report() == ref.expected_report(DISTINCT_FIELDS, rtmrs, REPORTDATA, SECRET)


def test_per_call_reportdata_does_not_change_shared(distinct_td):
    """report(data) puts data in that report only; the shared REPORTDATA stays as it was."""
    distinct_td.set_reportdata(bytes([7]) * 64)
    report = distinct_td.report(REPORTDATA)
    assert ref.get(report, ref.REPORTDATA) == REPORTDATA
    assert distinct_td.reportdata == bytes([7]) * 64
    assert ref.get(distinct_td.report(), ref.REPORTDATA) == bytes([7]) * 64


def test_other_platform_changes_only_the_mac(distinct_td):
    """The same TD on another platform secret differs in the 32 MAC bytes and nowhere else."""
    other = TrustDomain(Platform(bytes(32)), distinct_td.profile)
    a, b = distinct_td.report(REPORTDATA), other.report(REPORTDATA)
    differing = {i for i in range(1024) if a[i] != b[i]}
    assert differing and differing <= set(range(224, 256))


@pytest.mark.parametrize("length", [0, 63, 65, 128])
def test_reportdata_of_wrong_length_is_refused(distinct_td, length):
    """REPORTDATA must be exactly 64 bytes, for report() and for set_reportdata()."""
    with pytest.raises(InvalidInput) as exc:
        distinct_td.report(bytes(length))
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(InvalidInput):
        distinct_td.set_reportdata(bytes(length))
    assert distinct_td.reportdata == bytes(64)


def test_platform_secret_must_be_32_bytes():
    with pytest.raises(ValueError):
        Platform(bytes(31))


def test_fresh_platforms_get_different_secrets():
    """Without a given secret each Platform draws its own, so their MACs differ."""
    assert Platform().secret != Platform().secret
