"""The tdx_guest ioctl numbers and request layouts (issue 3, section 1).

Every expected number is recomputed here from the _IOC formula of tdx-abi.md section 1
(``dir << 30 | size << 16 | type << 8 | nr``, READ = 2, WRITE = 1) and the struct sizes
written out by hand, then compared with tdxfs.linuxabi and with the literal numbers the
reference table gives. Nothing mounts; no FUSE binding needed.
"""

import struct

import pytest

from tdxfs import linuxabi as L

READ, WRITE, NONE = 2, 1, 0


def ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | ord(kind) << 8 | nr


# struct sizes from the C declarations (u8 arrays, one u64, no padding)
REPORT_REQ = 64 + 1024  # { u8 reportdata[64]; u8 tdreport[1024]; }
VERIFY_REQ = 256 + 8  # { u8 reportmac[256]; u64 err_code; }
EXTEND_REQ = 48 + 1  # { u8 data[48]; u8 index; }
GET_QUOTE_REQ = 8 + 8  # { u64 buf; u64 len; }

# name in linuxabi -> (formula value, the number printed in tdx-abi.md)
NUMBERS = {
    "TDX_CMD_GET_REPORT0": (ioc(READ | WRITE, "T", 1, REPORT_REQ), 0xC4405401),
    "TDX_CMD_VERIFY_REPORT": (ioc(READ | WRITE, "T", 2, VERIFY_REQ), 0xC1085402),
    "TDX_CMD_EXTEND_RTMR": (ioc(WRITE, "T", 3, EXTEND_REQ), 0x40315403),
    "DCAP_EXTEND_RTMR": (ioc(READ, "T", 3, EXTEND_REQ), 0x80315403),
    "UNMERGED_GET_QUOTE": (ioc(READ, "T", 2, GET_QUOTE_REQ), 0x80105402),
}


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_ioctl_numbers(name):
    formula, printed = NUMBERS[name]
    assert formula == printed, f"{name}: formula {formula:#010x} vs tdx-abi.md {printed:#010x}"
    assert getattr(L, name) == formula, f"{name}: linuxabi has {getattr(L, name):#010x}, want {formula:#010x}"


def test_tcgets():
    # TCGETS predates _IOC: a bare 'T' (0x54) << 8 | 1, direction and size 0
    assert L.TCGETS == 0x5401 == ord("T") << 8 | 1


def test_struct_sizes():
    assert L.REPORT_REQ_SIZE == REPORT_REQ == 1088
    assert L.VERIFY_REQ.size == VERIFY_REQ == 264
    assert L.EXTEND_REQ.size == EXTEND_REQ == 49
    assert (L.REPORTDATA_LEN, L.TDREPORT_LEN, L.REPORTMACSTRUCT_LEN, L.EXTEND_DATA_LEN) == (64, 1024, 256, 48)


def test_struct_layouts():
    """Field order and byte order of the packed requests, built by hand."""
    mac = bytes(range(256))
    assert L.VERIFY_REQ.pack(mac, 0x0102030405060708) == mac + bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert L.VERIFY_REQ.unpack(mac + struct.pack("<Q", 7)) == (mac, 7)
    data = bytes(range(100, 148))
    assert L.EXTEND_REQ.pack(data, 3) == data + b"\x03"
    assert L.EXTEND_REQ.unpack(data + b"\xff") == (data, 255)


@pytest.mark.parametrize("cmd,direction,size", [
    (0xC4405401, READ | WRITE, 1088),
    (0xC1085402, READ | WRITE, 264),
    (0x40315403, WRITE, 49),
    (0x80315403, READ, 49),
    (0x80105402, READ, 16),
    (0x5401, NONE, 0),
])
def test_decoding(cmd, direction, size):
    """What the adapter relies on: which way the kernel copies, and how much."""
    assert L.ioc_dir(cmd) == direction
    assert L.ioc_size(cmd) == size
    assert L.ioc_reads(cmd) == bool(direction & READ)
    assert L.ioc_writes(cmd) == bool(direction & WRITE)
