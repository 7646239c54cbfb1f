"""The benchmark's methods: one row each, set up in the client process that runs it.

A method's ``open(mount)`` returns an ``Op``: ``run(nonce)`` performs one operation and
returns the TDREPORT it got (or None where there is none to check), ``close()`` releases
what it holds. Report methods are checked by the caller: the nonce must be the REPORTDATA
(``reportdata_at``: where the ABI tables put it in a TDREPORT, or in a quote's body).
Adding a row (a later interface) is adding a ``Method`` to ``METHODS``.

``syscalls`` is what the method's own code path issues per operation; the benchmark also
counts it with ``strace -c`` where strace is installed.
"""

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from tdxfs import linuxabi
from tdxfs.client import files
from tdxfs.client.ioctl import TdxGuest, ioctl_errno
from tdxfs.model import abi
from tdxfs.model.quote import QUOTE_FIELDS

REPORTDATA_AT = abi.TDREPORT_FIELDS["reportdata"].span  # in a TDREPORT
QUOTE_REPORTDATA_AT = QUOTE_FIELDS["body.reportdata"].span  # in a v4 quote
EXTEND_DATA = bytes(range(abi.MEASUREMENT_SIZE))


@dataclass
class Op:
    run: Callable[[bytes], Optional[bytes]]
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    group: str  # "report" or "extend"
    open: Callable[[str], Op]
    syscalls: int
    needs_mount: bool = True
    checks_nonce: bool = True
    reportdata_at: slice = field(default_factory=lambda: REPORTDATA_AT)  # slices are unhashable before 3.12


def _fd(mount: str, name: str, flags: int) -> int:
    return os.open(os.path.join(mount, name), flags)


# -- report methods -----------------------------------------------------------------------


def _in_memory_td():
    """The in-process methods' TD, assembled as every front end assembles it."""
    from tdxfs.model.machine import in_memory_td
    from tdxfs.model.profile import default_profile

    return in_memory_td(default_profile())


def _model(mount: str) -> Op:
    return Op(_in_memory_td().report)


def _floor(mount: str) -> Op:
    fd = _fd(mount, "rtmr0", os.O_RDONLY)
    return Op(lambda nonce: os.pread(fd, 1, 0) and None, lambda: os.close(fd))


def _ioctl_floor(mount: str) -> Op:
    """An ioctl round trip with no model behind it: TCGETS, answered ENOTTY."""
    import ctypes

    dev = TdxGuest(os.path.join(mount, "tdx_guest"))
    buf = ctypes.create_string_buffer(64)  # room for a struct termios, were it a terminal

    def run(nonce: bytes) -> None:
        ioctl_errno(dev.fd, linuxabi.TCGETS, buf)  # ENOTTY, every time

    return Op(run, dev.close)


def _ioctl_kept(mount: str) -> Op:
    dev = TdxGuest(os.path.join(mount, "tdx_guest"))
    return Op(dev.get_report0, dev.close)


def _ioctl_open(mount: str) -> Op:
    path = os.path.join(mount, "tdx_guest")

    def run(nonce: bytes) -> bytes:
        with TdxGuest(path) as dev:
            return dev.get_report0(nonce)

    return Op(run)


def _shell(mount: str) -> Op:
    return Op(lambda nonce: files.shared_pair(mount, nonce))


def _kept_pair(mount: str) -> Op:
    wfd = _fd(mount, "reportdata", os.O_WRONLY)
    rfd = _fd(mount, "tdreport", os.O_RDONLY)

    def run(nonce: bytes) -> bytes:
        os.pwrite(wfd, nonce, 0)
        return os.pread(rfd, abi.TDREPORT_SIZE, 0)

    return Op(run, lambda: (os.close(wfd), os.close(rfd)))


def _transaction(mount: str) -> Op:
    fd = _fd(mount, "tdreport", os.O_RDWR)

    def run(nonce: bytes) -> bytes:
        os.pwrite(fd, nonce, 0)
        return os.pread(fd, abi.TDREPORT_SIZE, 0)

    return Op(run, lambda: os.close(fd))


# -- quote methods (configfs-tsm) ---------------------------------------------------------


def _configfs_kept(mount: str) -> Op:
    from tdxfs.client import configfs

    instance = os.path.join(mount, "tsm", "report", f"bench-{os.getpid()}")
    os.mkdir(instance)
    return Op(lambda nonce: configfs.quote_from_instance(instance, nonce), lambda: os.rmdir(instance))


def _configfs_mkdir(mount: str) -> Op:
    from tdxfs.client import configfs

    report_dir = os.path.join(mount, "tsm", "report")
    return Op(lambda nonce: configfs.get_quote(report_dir, nonce))


def _quote_model(mount: str) -> Op:
    return Op(_in_memory_td().quote)


# -- extend methods -----------------------------------------------------------------------


def _extend_model(mount: str) -> Op:
    td = _in_memory_td()
    return Op(lambda nonce: td.extend(3, EXTEND_DATA) and None)


def _extend_file(payload: bytes) -> Callable[[str], Op]:
    def open_(mount: str) -> Op:
        path = os.path.join(mount, "rtmr3")

        def run(nonce: bytes) -> None:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)

        return Op(run)

    return open_


def _extend_ioctl(mount: str) -> Op:
    dev = TdxGuest(os.path.join(mount, "tdx_guest"))
    return Op(lambda nonce: dev.extend_rtmr(3, EXTEND_DATA), dev.close)


METHODS: Dict[str, Method] = {m.name: m for m in (
    Method("model", "in-process model call", "report", _model, 0, needs_mount=False),
    Method("floor", "transport floor: 1-byte pread, kept fd", "report", _floor, 1, checks_nonce=False),
    Method("ioctl-floor", "ioctl transport floor: TCGETS -> ENOTTY, kept fd", "report", _ioctl_floor, 1,
           checks_nonce=False),
    Method("ioctl", "ioctl GET_REPORT0, kept fd", "report", _ioctl_kept, 1),
    Method("ioctl-open", "ioctl GET_REPORT0, open/close each", "report", _ioctl_open, 3),
    Method("shell", "shell pattern: open/write/close + open/read/close", "report", _shell, 6),
    Method("kept-pair", "reportdata pwrite + tdreport pread, kept fds", "report", _kept_pair, 2),
    Method("transaction", "one-fd transaction on tdreport (O_RDWR)", "report", _transaction, 2),
    # quote-model: OpenSSL's RNG takes one getrandom() per ECDSA signature.
    Method("quote-model", "in-process quote: TDREPORT + QE signature", "quote", _quote_model, 1,
           needs_mount=False, reportdata_at=QUOTE_REPORTDATA_AT),
    Method("configfs", "configfs kept instance: inblob write/close, outblob read, generation x2", "quote",
           _configfs_kept, 16, reportdata_at=QUOTE_REPORTDATA_AT),
    Method("configfs-mkdir", "configfs: mkdir, provider, inblob, outblob, generation x2, rmdir", "quote",
           _configfs_mkdir, 24, reportdata_at=QUOTE_REPORTDATA_AT),  # 22 + getpid + getrandom (the name)
    Method("extend-model", "in-process model extend", "extend", _extend_model, 0, needs_mount=False,
           checks_nonce=False),
    Method("extend-raw", "rtmr3: open/write 48 raw bytes/close", "extend", _extend_file(EXTEND_DATA), 3,
           checks_nonce=False),
    Method("extend-hex", "rtmr3: open/write 96 hex + newline/close", "extend",
           _extend_file(EXTEND_DATA.hex().encode() + b"\n"), 3, checks_nonce=False),
    Method("extend-ioctl", "ioctl EXTEND_RTMR, kept fd", "extend", _extend_ioctl, 1, checks_nonce=False),
)}

BASELINE = "ioctl"  # ratios are to this method
FLOOR = "floor"
