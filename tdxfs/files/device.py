"""The ``tdx_guest`` node: the kernel's ioctl ABI served on the same model functions.

Command table: number -> handler(td, request bytes) -> reply bytes. The request is the
``_IOC_SIZE(cmd)`` bytes the kernel copied in (zeros for an _IOR command, which brings
none): both front ends hand over exactly that many, as FUSE's restricted ioctls give
them. The reply is copied back for _IOR/_IOWR commands. Errors follow the drivers: an
unknown command is ENOTTY, EXTEND_RTMR of RTMR0/1 is EPERM (intel/tdx downstream
policy), an index past RTMR3 is EINVAL, a REPORTMACSTRUCT that does not verify is EIO.
"""

from typing import Callable, Dict

from tdxfs import linuxabi as L
from tdxfs.errors import DeviceError, NotATty, NotPermitted
from tdxfs.model.td import TrustDomain


def get_report0(td: TrustDomain, req: bytes) -> bytes:
    """TDX_CMD_GET_REPORT0: struct tdx_report_req, REPORTDATA in, TDREPORT out."""
    reportdata, _ = L.REPORT_REQ.unpack(req)
    return L.REPORT_REQ.pack(reportdata, td.report(reportdata))


def verify_report(td: TrustDomain, req: bytes) -> bytes:
    """TDX_CMD_VERIFY_REPORT (downstream): REPORTMACSTRUCT in, TDCALL error code out.

    The driver returns -EIO *and* copies err_code out; a FUSE reply carries no data with an
    error, so a failure here is EIO alone (the err_code field is not delivered)."""
    reportmac, _ = L.VERIFY_REQ.unpack(req)
    result = td.platform.verify_reportmac(reportmac)
    if not result.ok:
        raise DeviceError(f"VERIFY_REPORT: {result}")
    return L.VERIFY_REQ.pack(reportmac, 0)


def extend_rtmr(td: TrustDomain, req: bytes) -> bytes:
    """TDX_CMD_EXTEND_RTMR (downstream): {u8 data[48]; u8 index;}, nothing out."""
    data, index = L.EXTEND_REQ.unpack(req)
    if index < 2:
        raise NotPermitted(f"EXTEND_RTMR of RTMR{index}: RTMR0 and RTMR1 belong to firmware and kernel")
    td.extend(index, data)
    return b""


COMMANDS: Dict[int, Callable[[TrustDomain, bytes], bytes]] = {
    L.TDX_CMD_GET_REPORT0: get_report0,
    L.TDX_CMD_VERIFY_REPORT: verify_report,
    L.TDX_CMD_EXTEND_RTMR: extend_rtmr,
}

# Commands real clients send that a FUSE file cannot carry: say why in the log.
UNSERVABLE = {
    L.DCAP_EXTEND_RTMR: "DCAP's _IOR EXTEND_RTMR (0x80315403) carries no input bytes through FUSE; "
                        "use TDX_CMD_EXTEND_RTMR (0x40315403) or the rtmrN files",
    L.UNMERGED_GET_QUOTE: "GET_QUOTE (0x80105402, never merged) passes a user pointer, which FUSE cannot follow; "
                          "use tsm/report or a quote tool",
}


def serve(td: TrustDomain, cmd: int, req: bytes) -> bytes:
    handler = COMMANDS.get(cmd)
    if handler is None:
        reason = UNSERVABLE.get(cmd, f"ioctl {cmd:#010x} is not a tdx_guest command")
        raise NotATty(reason, probe=cmd == L.TCGETS)
    return handler(td, req)
