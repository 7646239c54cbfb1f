"""TDREPORT_STRUCT layout: named offsets and the bytes <-> fields conversion, both ways.

Offsets are absolute in the 1024-byte TDREPORT (Intel TDX module ABI; Linux
``include/uapi/linux/tdx-guest.h`` carries the 1024-byte blob). Nothing here hashes,
signs or knows about the model: it only names bytes.
"""

from dataclasses import dataclass
from typing import Dict, Mapping

TDREPORT_SIZE = 1024
REPORTDATA_SIZE = 64
MEASUREMENT_SIZE = 48  # SHA-384
RTMR_COUNT = 4

REPORTTYPE_TDX = 0x81  # REPORTTYPE.TYPE for a TD (0x00 is SGX)


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    integer: bool = False  # shown as a little-endian integer as well as bytes

    @property
    def end(self) -> int:
        return self.offset + self.size

    def get(self, report: bytes) -> bytes:
        return bytes(report[self.offset : self.end])


def field_table(*rows) -> Dict[str, Field]:
    """Rows of (name, offset, size[, integer]) as a name -> Field table."""
    return {field.name: field for field in (Field(*row) for row in rows)}


def check_tiling(table: Dict[str, Field], size: int, what: str) -> None:
    """Every byte of the first ``size`` belongs to exactly one row (run at import)."""
    covered = bytearray(size)
    for field in table.values():
        for i in range(field.offset, field.end):
            if covered[i]:
                raise AssertionError(f"{what} byte {i} is in two fields")
            covered[i] = 1
    if not all(covered):
        raise AssertionError(f"{what} table leaves bytes unnamed")


# Every byte of the TDREPORT belongs to exactly one row (checked below at import).
TDREPORT_FIELDS: Dict[str, Field] = field_table(
    # REPORTMACSTRUCT (0..255)
    ("reporttype.type", 0, 1, True),
    ("reporttype.subtype", 1, 1, True),
    ("reporttype.version", 2, 1, True),
    ("reporttype.reserved", 3, 1, True),
    ("reportmac.reserved1", 4, 12),
    ("cpusvn", 16, 16),
    ("tee_tcb_info_hash", 32, 48),
    ("tee_info_hash", 80, 48),
    ("reportdata", 128, 64),
    ("reportmac.reserved2", 192, 32),
    ("mac", 224, 32),
    # TEE_TCB_INFO (256..494)
    ("tee_tcb_info.valid", 256, 8, True),
    ("tee_tcb_info.tee_tcb_svn", 264, 16),
    ("tee_tcb_info.mrseam", 280, 48),
    ("tee_tcb_info.mrsignerseam", 328, 48),
    ("tee_tcb_info.attributes", 376, 8, True),
    ("tee_tcb_info.tee_tcb_svn2", 384, 16),
    ("tee_tcb_info.reserved", 400, 95),
    ("reserved", 495, 17),
    # TDINFO_STRUCT (512..1023)
    ("tdinfo.attributes", 512, 8, True),
    ("tdinfo.xfam", 520, 8, True),
    ("tdinfo.mrtd", 528, 48),
    ("tdinfo.mrconfigid", 576, 48),
    ("tdinfo.mrowner", 624, 48),
    ("tdinfo.mrownerconfig", 672, 48),
    ("tdinfo.rtmr0", 720, 48),
    ("tdinfo.rtmr1", 768, 48),
    ("tdinfo.rtmr2", 816, 48),
    ("tdinfo.rtmr3", 864, 48),
    ("tdinfo.servtd_hash", 912, 48),
    ("tdinfo.reserved", 960, 64),
)

# Regions the MAC and the two hashes cover.
REPORTMACSTRUCT = slice(0, 256)
MAC_INPUT = slice(0, 224)  # everything in REPORTMACSTRUCT before the MAC itself
TEE_TCB_INFO = slice(256, 495)  # 239 bytes
TDINFO = slice(512, 1024)

TEE_TCB_INFO_SIZE = TEE_TCB_INFO.stop - TEE_TCB_INFO.start
TDINFO_SIZE = TDINFO.stop - TDINFO.start


def rtmr_field(index: int) -> Field:
    return TDREPORT_FIELDS[f"tdinfo.rtmr{index}"]


check_tiling(TDREPORT_FIELDS, TDREPORT_SIZE, "TDREPORT")


def decode(report: bytes) -> Dict[str, bytes]:
    """Split a TDREPORT into its named fields (all of them, reserved included)."""
    if len(report) != TDREPORT_SIZE:
        raise ValueError(f"a TDREPORT is {TDREPORT_SIZE} bytes, got {len(report)}")
    return {name: field.get(report) for name, field in TDREPORT_FIELDS.items()}


def encode(fields: Mapping[str, bytes], base: bytes = bytes(TDREPORT_SIZE)) -> bytes:
    """The inverse of :func:`decode`: place named fields over ``base`` (zeros by default)."""
    out = bytearray(base)
    for name, value in fields.items():
        field = TDREPORT_FIELDS[name]
        if len(value) != field.size:
            raise ValueError(f"{name} is {field.size} bytes, got {len(value)}")
        out[field.offset : field.end] = value
    return bytes(out)


def region(fields: Mapping[str, bytes], part: slice) -> bytes:
    """Encode only the fields inside one region (e.g. TEE_TCB_INFO or TDINFO) as its own bytes."""
    return encode(fields)[part]


def as_json(report: bytes) -> Dict[str, object]:
    """Fields as hex strings, with integer fields also as numbers (for ``report decode --json``)."""
    out: Dict[str, object] = {}
    for name, value in decode(report).items():
        field = TDREPORT_FIELDS[name]
        out[name] = int.from_bytes(value, "little") if field.integer else value.hex()
    return out
