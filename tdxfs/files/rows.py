"""The root rows: the design card's files at the top of the mount, one row each.

Text registers follow the sysfs convention: a read is the value as lowercase hex and a
newline; a write is the raw value, or its hex with surrounding whitespace (``parse_value``).
``tdreport`` is binary, and takes REPORTDATA for one fd only (``TransactionHandle``);
``tdx_guest`` is the ioctl node over ``device.COMMANDS``; ``.stats`` is the request
counters as JSON.
"""

import string
from functools import partial
from typing import Callable, Optional, Tuple

from tdxfs.errors import InvalidInput
from tdxfs.files import device
from tdxfs.files.nodes import DeviceHandle, File, TransactionHandle
from tdxfs.files.stats import RequestCounter
from tdxfs.model import abi
from tdxfs.model.td import TrustDomain

_HEX = frozenset(string.hexdigits.encode())
STATIC_MEASUREMENTS = ("mrtd", "mrconfigid", "mrowner", "mrownerconfig")
DEVICE_MODE = 0o600  # as udev makes /dev/tdx_guest
STATS_SIZE = 4096  # sysfs's st_size for a text value: the content varies


def parse_value(data: bytes, raw_size: int, what: str) -> bytes:
    """``raw_size`` raw bytes, or ``2 * raw_size`` hex chars with surrounding whitespace."""
    if len(data) == raw_size:
        return bytes(data)
    text = bytes(data).strip()
    if len(text) != 2 * raw_size:
        raise InvalidInput(f"{what} takes {raw_size} raw bytes or {2 * raw_size} hex chars, got {len(data)} bytes")
    if not _HEX.issuperset(text):
        raise InvalidInput(f"{what}: {2 * raw_size} chars but not all hex digits")
    return bytes.fromhex(text.decode("ascii"))


def hex_line(value: bytes) -> bytes:
    return value.hex().encode() + b"\n"


def hex_row(name: str, raw_size: int, value: Callable[[], bytes],
            update: Optional[Callable[[bytes], object]] = None) -> File:
    """A text register: shows ``value()`` as a hex line; with ``update``, a write of
    ``raw_size`` bytes (raw or hex) is passed to it and the mode is 0644, else 0444."""
    store = None if update is None else (lambda data: update(parse_value(data, raw_size, name)))
    return File(name, 0o644 if update else 0o444, 2 * raw_size + 1, show=lambda: hex_line(value()), store=store)


def root_rows(td: TrustDomain) -> Tuple[File, ...]:
    return (
        hex_row("reportdata", abi.REPORTDATA_SIZE, lambda: td.reportdata, td.set_reportdata),
        File("tdreport", 0o644, abi.TDREPORT_SIZE, show=td.report, handle=TransactionHandle,
             store=partial(parse_value, raw_size=abi.REPORTDATA_SIZE, what="tdreport (per-fd REPORTDATA)")),
        *(hex_row(f"rtmr{i}", abi.MEASUREMENT_SIZE, partial(td.rtmr, i), partial(td.extend, i))
          for i in range(abi.RTMR_COUNT)),
        *(hex_row(name, abi.MEASUREMENT_SIZE, partial(td.measurement, name)) for name in STATIC_MEASUREMENTS),
        File("tdx_guest", DEVICE_MODE, 0, ioctl=partial(device.serve, td), handle=DeviceHandle),
    )


def stats_row(requests: RequestCounter) -> File:
    return File(".stats", 0o444, STATS_SIZE, show=requests.render)
