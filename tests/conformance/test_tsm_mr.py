"""tsm-mr: /sys/devices/virtual/misc/tdx_guest/measurements (Linux 6.16,
Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest)."""

import errno
import os
import stat

from tests.conformance.guest import (MEASUREMENT_FILES, MEASUREMENTS, MEASUREMENTS_VIA_CLASS, errno_of, extend_digest,
                                     get_report0, read_all, registers, write_file)

RTMR3 = os.path.join(MEASUREMENTS, "rtmr3:sha384")


def test_the_files_and_their_modes():
    names = set(os.listdir(MEASUREMENTS))
    assert set(MEASUREMENT_FILES) <= names
    for name in MEASUREMENT_FILES:
        mode = stat.S_IMODE(os.stat(os.path.join(MEASUREMENTS, name)).st_mode)
        writable = name.startswith("rtmr")
        assert mode == (0o644 if writable else 0o444), (name, oct(mode))


def test_class_misc_leads_to_the_same_files():
    assert sorted(os.listdir(MEASUREMENTS_VIA_CLASS)) == sorted(os.listdir(MEASUREMENTS))


def test_each_file_is_48_raw_bytes_equal_to_the_report():
    values = {name: read_all(os.path.join(MEASUREMENTS, name)) for name in MEASUREMENT_FILES}
    report = registers(get_report0(bytes(64)))
    for name, field in MEASUREMENT_FILES.items():
        assert len(values[name]) == 48, name
        assert values[name] == report[field], name


def test_a_48_byte_write_extends_and_every_interface_sees_it():
    before = read_all(RTMR3)
    data = os.urandom(48)
    assert write_file(RTMR3, data) == 48
    expected = extend_digest(before, data)
    assert read_all(RTMR3) == expected
    assert registers(get_report0(bytes(64)))["rtmr3"] == expected


def test_shorter_write_is_einval_and_changes_nothing():
    before = read_all(RTMR3)
    assert errno_of(lambda: write_file(RTMR3, b"\0" * 47)) == errno.EINVAL
    assert read_all(RTMR3) == before


def test_longer_write_at_offset_0_is_clamped_to_48():
    before = read_all(RTMR3)
    data = os.urandom(48)
    fd = os.open(RTMR3, os.O_WRONLY)
    try:
        assert os.write(fd, data + b"\n") == 48
        assert errno_of(lambda: os.write(fd, b"\n")) == errno.EFBIG  # what echo's newline then meets
    finally:
        os.close(fd)
    assert read_all(RTMR3) == extend_digest(before, data)


def test_write_at_offset_48_is_efbig():
    before = read_all(RTMR3)
    fd = os.open(RTMR3, os.O_WRONLY)
    try:
        assert errno_of(lambda: os.pwrite(fd, bytes(48), 48)) == errno.EFBIG
    finally:
        os.close(fd)
    assert read_all(RTMR3) == before


def test_o_trunc_alone_is_no_write():
    before = read_all(RTMR3)
    os.close(os.open(RTMR3, os.O_WRONLY | os.O_TRUNC))
    assert read_all(RTMR3) == before


def test_static_registers_refuse_writes():
    for name in ("mrtd:sha384", "mrconfigid", "mrowner", "mrownerconfig"):
        err = errno_of(lambda: write_file(os.path.join(MEASUREMENTS, name), bytes(48)))
        assert err == errno.EACCES, name
