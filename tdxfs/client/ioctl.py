"""``/dev/tdx_guest`` (or a tdxfs mount's ``tdx_guest``) through ioctl.

ctypes' ``libc.ioctl`` releases the GIL for the syscall. ``fcntl.ioctl`` with a mutable
buffer over 1024 bytes keeps it, which deadlocks a process that also serves the mount
(fuse-notes); this client is safe to use anywhere.
"""

import ctypes
import os

from tdxfs import linuxabi as L

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.ioctl.restype = ctypes.c_int


def ioctl_errno(fd: int, cmd: int, buf) -> int:
    """One ioctl with ``buf`` (a ctypes buffer) as its argument: 0, or the errno it failed
    with. No exception, for a caller that expects the failure (a probe, a benchmark floor)."""
    if _libc.ioctl(fd, cmd, ctypes.addressof(buf)) < 0:
        return ctypes.get_errno()
    return 0


def ioctl(fd: int, cmd: int, buf) -> None:
    err = ioctl_errno(fd, cmd, buf)
    if err:
        raise OSError(err, f"ioctl {cmd:#010x}: {os.strerror(err)}")


class TdxGuest:
    """An open tdx_guest node. ``with TdxGuest(path) as dev: dev.get_report0(nonce)``."""

    def __init__(self, path: str = "/dev/tdx_guest"):
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        self._report_req = ctypes.create_string_buffer(L.REPORT_REQ_SIZE)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "TdxGuest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_report0(self, reportdata: bytes) -> bytes:
        if len(reportdata) != L.REPORTDATA_LEN:
            raise ValueError(f"REPORTDATA is {L.REPORTDATA_LEN} bytes")
        req = self._report_req
        ctypes.memmove(req, reportdata, L.REPORTDATA_LEN)
        ioctl(self.fd, L.TDX_CMD_GET_REPORT0, req)
        _, report = L.REPORT_REQ.unpack(req.raw)
        return report

    def extend_rtmr(self, index: int, data48: bytes) -> None:
        buf = ctypes.create_string_buffer(L.EXTEND_REQ.pack(data48, index), L.EXTEND_REQ.size)
        ioctl(self.fd, L.TDX_CMD_EXTEND_RTMR, buf)

    def verify_report(self, reportmac: bytes) -> int:
        """0 when the REPORTMACSTRUCT was made on this platform; OSError(EIO) otherwise."""
        buf = ctypes.create_string_buffer(L.VERIFY_REQ.pack(reportmac[: L.REPORTMACSTRUCT_LEN], 0), L.VERIFY_REQ.size)
        ioctl(self.fd, L.TDX_CMD_VERIFY_REPORT, buf)
        return L.VERIFY_REQ.unpack(buf.raw)[1]


def get_report0(path: str, reportdata: bytes) -> bytes:
    """open, ioctl, close."""
    with TdxGuest(path) as dev:
        return dev.get_report0(reportdata)
