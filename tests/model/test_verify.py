"""verify_report, the local VERIFYREPORT analogue: checks the MAC and both hashes, names the part."""

import errno

import pytest

from tdxfs.errors import InvalidInput
from tdxfs.model.td import Platform, TrustDomain
from tests.model import reference as ref

REPORTDATA = bytes(range(64))


def flipped(report: bytes, offset: int) -> bytes:
    out = bytearray(report)
    out[offset] ^= 0x01
    return bytes(out)


def test_fresh_report_verifies(td):
    result = td.verify_report(td.report(REPORTDATA))
    assert result.ok and result.failures == [] and str(result) == "OK"


def test_report_after_extend_verifies(td):
    td.extend(3, bytes(48))
    assert td.verify_report(td.report()).ok


MAC = "MAC does not match"
TCB = "TEE_TCB_INFO_HASH is not SHA-384 of TEE_TCB_INFO"
TDINFO = "TEE_INFO_HASH is not SHA-384 of TDINFO"


@pytest.mark.parametrize(
    "offset, parts",
    [
        (1, [MAC]),  # REPORTTYPE.SUBTYPE
        (16, [MAC]),  # CPUSVN
        (32, [MAC, TCB]),  # TEE_TCB_INFO_HASH: the MAC and the hash no longer agree
        (100, [MAC, TDINFO]),  # TEE_INFO_HASH
        (150, [MAC]),  # REPORTDATA
        (200, [MAC]),  # reserved in REPORTMACSTRUCT
        (224, [MAC]),  # the MAC itself
        (255, [MAC]),
        (256, [TCB]),  # VALID
        (300, [TCB]),  # MRSEAM
        (494, [TCB]),  # last byte of TEE_TCB_INFO
        (512, [TDINFO]),  # TD ATTRIBUTES
        (530, [TDINFO]),  # MRTD
        (870, [TDINFO]),  # RTMR3
        (1023, [TDINFO]),  # reserved end of TDINFO
    ],
)
def test_one_flipped_byte_fails_naming_the_part(td, offset, parts):
    result = td.verify_report(flipped(td.report(REPORTDATA), offset))
    assert not result.ok
    assert len(result.failures) == len(parts)
    for part in parts:
        assert any(f.startswith(part) for f in result.failures), (part, result.failures)
        assert part in str(result)


def test_wrong_reporttype_is_named(td):
    result = td.verify_report(flipped(td.report(REPORTDATA), 0))
    assert any("REPORTTYPE" in f for f in result.failures)
    assert any("MAC" in f for f in result.failures)


def test_forged_tdinfo_with_matching_hash_still_fails_the_mac(td):
    """Rewriting RTMR3 and recomputing TEE_INFO_HASH is caught: the MAC covers the hash."""
    forged = bytearray(td.report(REPORTDATA))
    forged[864:912] = bytes([0x42]) * 48
    forged[80:128] = ref.sha384(bytes(forged[512:1024]))
    result = td.verify_report(bytes(forged))
    assert len(result.failures) == 1 and result.failures[0].startswith(MAC)


def test_report_from_another_platform_fails_the_mac(td):
    """Same TD, different platform secret: only the MAC check fails."""
    other = TrustDomain(Platform(bytes(32)), td.profile)
    result = td.verify_report(other.report(REPORTDATA))
    assert len(result.failures) == 1 and result.failures[0].startswith(MAC)
    assert other.verify_report(other.report(REPORTDATA)).ok


@pytest.mark.parametrize("length", [0, 256, 1023, 1025, 1088])
def test_wrong_length_is_einval(td, length):
    with pytest.raises(InvalidInput) as exc:
        td.verify_report(bytes(length))
    assert exc.value.errno == errno.EINVAL


def test_verify_reportmac_checks_the_256_byte_struct(td, platform):
    """The VERIFYREPORT proper takes REPORTMACSTRUCT alone (what the downstream ioctl passes)."""
    report = td.report(REPORTDATA)
    assert platform.verify_reportmac(report[:256]).ok
    assert not platform.verify_reportmac(flipped(report, 130)[:256]).ok
    with pytest.raises(InvalidInput):
        platform.verify_reportmac(report)
