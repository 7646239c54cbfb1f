"""The Linux tdx_guest ioctl ABI: command numbers and request layouts.

Kept apart from the TDX module model (``tdxfs.model``): this is the kernel's interface
(``include/uapi/linux/tdx-guest.h`` and the intel/tdx downstream driver), shared by the
ioctl node that serves it and the client that calls it.
"""

from tdxfs.model.abi.layout import U8, U64, Layout

_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | ord(kind) << 8 | nr


def ioc_dir(cmd: int) -> int:
    return (cmd >> 30) & 3


def ioc_size(cmd: int) -> int:
    return (cmd >> 16) & 0x3FFF


def ioc_reads(cmd: int) -> bool:
    """The kernel copies the buffer back to the caller (``_IOR``/``_IOWR``)."""
    return bool(ioc_dir(cmd) & _IOC_READ)


def ioc_writes(cmd: int) -> bool:
    """The kernel copies the caller's buffer in (``_IOW``/``_IOWR``)."""
    return bool(ioc_dir(cmd) & _IOC_WRITE)


REPORTDATA_LEN = 64
TDREPORT_LEN = 1024
REPORTMACSTRUCT_LEN = 256
EXTEND_DATA_LEN = 48

# The request structures, as tables of the same mechanism as the TDX ABI's
# (tdxfs.model.abi.layout): pack/unpack/size as struct.Struct, and fields by name.
REPORT_REQ = Layout(
    "struct tdx_report_req", REPORTDATA_LEN + TDREPORT_LEN,
    ("reportdata", 0, REPORTDATA_LEN),
    ("tdreport", REPORTDATA_LEN, TDREPORT_LEN),
)
REPORT_REQ_SIZE = REPORT_REQ.size
VERIFY_REQ = Layout(
    "struct tdx_verify_report_req", REPORTMACSTRUCT_LEN + 8,
    ("reportmac", 0, REPORTMACSTRUCT_LEN),
    ("err_code", REPORTMACSTRUCT_LEN, U64),
)
EXTEND_REQ = Layout(
    "struct tdx_extend_rtmr_req", EXTEND_DATA_LEN + 1,
    ("data", 0, EXTEND_DATA_LEN),
    ("index", EXTEND_DATA_LEN, U8),
)

TDX_CMD_GET_REPORT0 = _ioc(_IOC_READ | _IOC_WRITE, "T", 1, REPORT_REQ_SIZE)
TDX_CMD_VERIFY_REPORT = _ioc(_IOC_READ | _IOC_WRITE, "T", 2, VERIFY_REQ.size)
TDX_CMD_EXTEND_RTMR = _ioc(_IOC_WRITE, "T", 3, EXTEND_REQ.size)

# Known commands a FUSE file cannot serve (they need CUSE or a real driver): an _IOR
# command brings no input bytes through FUSE, a pointer-carrying one needs the caller's memory.
DCAP_EXTEND_RTMR = _ioc(_IOC_READ, "T", 3, EXTEND_REQ.size)
UNMERGED_GET_QUOTE = _ioc(_IOC_READ, "T", 2, 16)  # {u64 buf; u64 len;}: a user pointer

TCGETS = 0x5401  # sent by Python's open() (isatty) on every file

assert TDX_CMD_GET_REPORT0 == 0xC4405401
assert TDX_CMD_VERIFY_REPORT == 0xC1085402
assert TDX_CMD_EXTEND_RTMR == 0x40315403
assert DCAP_EXTEND_RTMR == 0x80315403
assert UNMERGED_GET_QUOTE == 0x80105402
