"""The kernel's TDX guest paths and ABI, written from the kernel's documentation alone.

Nothing here imports tdxfs: these helpers are what any attestation client would write, so
the conformance tests behave the same against tdxfs (under ``tdxfs run``) and against a
real TDX guest (``pytest tests/conformance --real-guest``).
"""

import errno
import fcntl
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Tuple

DEVICE = "/dev/tdx_guest"
TSM_REPORT = "/sys/kernel/config/tsm/report"
TSM_RTMRS = "/sys/kernel/config/tsm/rtmrs"
MEASUREMENTS = "/sys/devices/virtual/misc/tdx_guest/measurements"
MEASUREMENTS_VIA_CLASS = "/sys/class/misc/tdx_guest/measurements"
CCEL_TABLE = "/sys/firmware/acpi/tables/CCEL"
CCEL_DATA = "/sys/firmware/acpi/tables/data/CCEL"

# include/uapi/linux/tdx-guest.h: _IOWR('T', 1, struct tdx_report_req), 64 + 1024 bytes
TDX_CMD_GET_REPORT0 = 3 << 30 | 1088 << 16 | ord("T") << 8 | 1
TCGETS = 0x5401

# TDREPORT_STRUCT offsets (Intel TDX module ABI)
REPORTDATA = slice(128, 192)
MAC = slice(224, 256)
TEE_TCB_INFO = slice(256, 495)
TDINFO = slice(512, 1024)
TEE_TCB_INFO_HASH = slice(32, 80)
TEE_INFO_HASH = slice(80, 128)
REPORT_FIELDS = {
    "mrtd": slice(528, 576),
    "mrconfigid": slice(576, 624),
    "mrowner": slice(624, 672),
    "mrownerconfig": slice(672, 720),
    "rtmr0": slice(720, 768),
    "rtmr1": slice(768, 816),
    "rtmr2": slice(816, 864),
    "rtmr3": slice(864, 912),
}
# tsm-mr file name -> the TDREPORT field it shows
MEASUREMENT_FILES = {
    "mrtd:sha384": "mrtd",
    "rtmr0:sha384": "rtmr0",
    "rtmr1:sha384": "rtmr1",
    "rtmr2:sha384": "rtmr2",
    "rtmr3:sha384": "rtmr3",
    "mrconfigid": "mrconfigid",
    "mrowner": "mrowner",
    "mrownerconfig": "mrownerconfig",
}


def get_report0(reportdata: bytes) -> bytes:
    """TDX_CMD_GET_REPORT0 on /dev/tdx_guest, as go-tdx-guest and Intel's library call it."""
    req = bytearray(reportdata.ljust(64, b"\0") + bytes(1024))
    fd = os.open(DEVICE, os.O_RDWR)
    try:
        fcntl.ioctl(fd, TDX_CMD_GET_REPORT0, req, True)
    finally:
        os.close(fd)
    return bytes(req[64:])


def registers(report: bytes) -> Dict[str, bytes]:
    return {name: report[where] for name, where in REPORT_FIELDS.items()}


def read_all(path: str) -> bytes:
    with open(path, "rb", buffering=0) as f:
        parts = []
        while True:
            part = f.read(131072)
            if not part:
                return b"".join(parts)
            parts.append(part)


def extend_digest(register: bytes, data: bytes) -> bytes:
    return hashlib.sha384(register + data).digest()


def errno_of(call) -> int:
    try:
        call()
    except OSError as exc:
        return exc.errno
    return 0


# -- configfs-tsm (Documentation/ABI/testing/configfs-tsm-report) --------------------------

def write_file(path: str, data: bytes, flags: int = os.O_WRONLY) -> int:
    fd = os.open(path, flags)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


# -- TDX quote v4 (Intel DCAP sgx_quote_4.h) ---------------------------------------------------

@dataclass
class Quote:
    version: int
    key_type: int
    tee_type: int
    body: Dict[str, bytes]


QUOTE_BODY = {
    "mrtd": (184, 48), "rtmr0": (376, 48), "rtmr1": (424, 48), "rtmr2": (472, 48),
    "rtmr3": (520, 48), "reportdata": (568, 64), "mrconfigid": (232, 48),
}


def parse_quote(blob: bytes) -> Quote:
    version, key_type, tee_type = struct.unpack_from("<HHI", blob, 0)
    body = {name: blob[off:off + size] for name, (off, size) in QUOTE_BODY.items()}
    return Quote(version, key_type, tee_type, body)


# -- ACPI CCEL and the TCG crypto-agile event log -------------------------------------------

@dataclass
class CcelTable:
    signature: bytes
    length: int
    checksum_ok: bool
    cc_type: int
    laml: int
    lasa: int


def parse_ccel_table(table: bytes) -> CcelTable:
    signature, length = struct.unpack_from("<4sI", table, 0)
    cc_type = table[36]
    laml, lasa = struct.unpack_from("<QQ", table, 40)
    return CcelTable(signature, length, sum(table) % 256 == 0, cc_type, laml, lasa)


@dataclass
class Record:
    mr_index: int
    event_type: int
    digests: Dict[int, bytes]
    data: bytes


TPM_ALG_SHA384 = 0x000C
EV_NO_ACTION = 3


def parse_event_log(log: bytes) -> Tuple[Dict[int, int], List[Record]]:
    """The Spec ID header's algorithm sizes and the TCG_PCR_EVENT2 records that follow."""
    # TCG_PCR_EVENT: pcrIndex, eventType, digest[20], eventSize, event (TCG_EfiSpecIDEventStruct)
    mr, etype = struct.unpack_from("<II", log, 0)
    assert etype == EV_NO_ACTION, f"first event type {etype:#x}, not EV_NO_ACTION"
    (size,) = struct.unpack_from("<I", log, 28)
    spec = log[32:32 + size]
    assert spec[:16] == b"Spec ID Event03\0", spec[:16]
    (count,) = struct.unpack_from("<I", spec, 24)
    sizes = {}
    for i in range(count):
        alg, digest_size = struct.unpack_from("<HH", spec, 28 + 4 * i)
        sizes[alg] = digest_size
    pos = 32 + size
    records = []
    while pos + 8 <= len(log):
        mr, etype = struct.unpack_from("<II", log, pos)
        if mr == 0xFFFFFFFF:
            break
        (ndigests,) = struct.unpack_from("<I", log, pos + 8)
        pos += 12
        digests = {}
        for _ in range(ndigests):
            (alg,) = struct.unpack_from("<H", log, pos)
            digests[alg] = log[pos + 2:pos + 2 + sizes[alg]]
            pos += 2 + sizes[alg]
        (event_size,) = struct.unpack_from("<I", log, pos)
        data = log[pos + 4:pos + 4 + event_size]
        pos += 4 + event_size
        records.append(Record(mr, etype, digests, data))
    return sizes, records


def replay(records: List[Record]) -> Dict[str, bytes]:
    """RTMR0..3 from zero; CC MR index k is RTMR k-1 (0 would be MRTD)."""
    regs = {f"rtmr{i}": bytes(48) for i in range(4)}
    for r in records:
        if r.event_type == EV_NO_ACTION or not 1 <= r.mr_index <= 4:
            continue
        name = f"rtmr{r.mr_index - 1}"
        regs[name] = extend_digest(regs[name], r.digests[TPM_ALG_SHA384])
    return regs


__all__ = [name for name in dir() if not name.startswith("_")] + ["errno"]
