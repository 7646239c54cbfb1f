"""/dev/tdx_guest: TDX_CMD_GET_REPORT0, the only ioctl mainline Linux has."""

import errno
import fcntl
import hashlib
import hmac
import os

import pytest

from tests.conformance.guest import (DEVICE, MAC, REPORTDATA, TDINFO, TEE_INFO_HASH, TEE_TCB_INFO,
                                     TEE_TCB_INFO_HASH, TCGETS, errno_of, get_report0)


def test_get_report0_carries_the_callers_reportdata():
    nonce = os.urandom(64)
    report = get_report0(nonce)
    assert len(report) == 1024
    assert report[REPORTDATA] == nonce
    assert report[0] == 0x81  # REPORTTYPE.TYPE: TDX


def test_report_hashes_cover_tee_tcb_info_and_tdinfo():
    report = get_report0(bytes(64))
    assert report[TEE_TCB_INFO_HASH] == hashlib.sha384(report[TEE_TCB_INFO]).digest()
    assert report[TEE_INFO_HASH] == hashlib.sha384(report[TDINFO]).digest()


def test_two_reports_differ_only_in_reportdata_and_mac():
    a, b = get_report0(b"\x01" * 64), get_report0(b"\x02" * 64)
    diff = {i for i in range(1024) if a[i] != b[i]}
    allowed = set(range(REPORTDATA.start, REPORTDATA.stop)) | set(range(MAC.start, MAC.stop))
    assert diff and diff <= allowed


def test_unknown_command_is_enotty():
    fd = os.open(DEVICE, os.O_RDWR)
    try:
        assert errno_of(lambda: fcntl.ioctl(fd, TCGETS, bytearray(64), True)) == errno.ENOTTY
    finally:
        os.close(fd)


def test_read_and_write_are_einval():
    fd = os.open(DEVICE, os.O_RDWR)
    try:
        assert errno_of(lambda: os.read(fd, 1024)) == errno.EINVAL
        assert errno_of(lambda: os.write(fd, b"x")) == errno.EINVAL
    finally:
        os.close(fd)


@pytest.mark.simulator_only
def test_mac_is_the_platforms(state_dir):
    """tdxfs's documented MAC: HMAC-SHA-256 over bytes 0..223, keyed with
    HMAC-SHA-256(platform secret, "tdxfs REPORTMACSTRUCT MAC key v1")."""
    with open(os.path.join(state_dir, "platform-secret"), "rb") as f:
        secret = f.read()
    key = hmac.digest(secret, b"tdxfs REPORTMACSTRUCT MAC key v1", "sha256")
    report = get_report0(os.urandom(64))
    assert report[MAC] == hmac.digest(key, report[:224], "sha256")
