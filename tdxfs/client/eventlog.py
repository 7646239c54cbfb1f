"""The event log from a client's side: extend through ``MOUNT/eventlog``, read a CCEL log,
replay it and compare the result with a TDREPORT's RTMRs (what ``tdxfs extend`` and
``tdxfs eventlog replay`` run). Plain os calls on the files a guest has."""

import hashlib
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from tdxfs.errors import TdxfsError, UsageError
from tdxfs.files.eventlog import Record
from tdxfs.model import abi
from tdxfs.model.eventlog import EV_NO_ACTION, MAX_EVENT_DATA, decode_ccel_data, replay

# Where a TDX guest's kernel shows the firmware's log (and `tdxfs run` places tdxfs's).
DEFAULT_CCEL_DATA = "/sys/firmware/acpi/tables/data/CCEL"
MOUNT_ENV = "TDXFS_MOUNT"  # set by `tdxfs run` for its command: the mount to use by default
RTMRS = tuple(f"rtmr{i}" for i in range(abi.RTMR_COUNT))


def mount_dir(mount: Optional[str]) -> str:
    """--mount DIR, else $TDXFS_MOUNT; a one-line refusal when neither is given."""
    mount = mount or os.environ.get(MOUNT_ENV)
    if not mount:
        raise UsageError(f"--mount DIR is needed (or set {MOUNT_ENV}; `tdxfs run` sets it for its command)")
    return mount


def record_for(rtmr: int, event_type: int, digest_hex: Optional[str] = None, data: Optional[bytes] = None) -> Record:
    """A bare digest (``digest_hex``), or ``data`` measured: its SHA-384, logged with it."""
    if event_type == EV_NO_ACTION:  # the TD refuses it too; say so before writing
        raise TdxfsError("EV_NO_ACTION events are never extended; use another event type")
    if digest_hex is not None:
        text = digest_hex.strip()
        try:
            digest = bytes.fromhex(text)
        except ValueError:
            digest = b""
        if len(digest) != abi.MEASUREMENT_SIZE or len(text) != 2 * abi.MEASUREMENT_SIZE:
            raise TdxfsError(f"--digest takes {2 * abi.MEASUREMENT_SIZE} hex digits (a SHA-384 digest)")
        return Record(rtmr, event_type, digest)
    if len(data) > MAX_EVENT_DATA:
        raise TdxfsError(f"event data is limited to {MAX_EVENT_DATA} bytes, got {len(data)}: "
                         "extend its SHA-384 with --digest instead")
    return Record(rtmr, event_type, hashlib.sha384(data).digest(), data)


def write_record(mount: str, record: Record) -> None:
    """One record, one write() to MOUNT/eventlog; the daemon's log has a refusal's reason."""
    path = os.path.join(mount, "eventlog")
    line = record.line()
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        raise TdxfsError(f"{path}: {exc.strerror or exc}") from None
    try:
        written = os.write(fd, line)
    except OSError as exc:
        raise TdxfsError(f"{path}: {exc.strerror or exc} (the tdxfs daemon's log says why)") from None
    finally:
        os.close(fd)
    if written != len(line):
        raise TdxfsError(f"{path}: short write ({written} of {len(line)} bytes)")


def read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TdxfsError(f"{what} {path}: {exc.strerror or exc}") from None


def replay_ccel(path: str) -> Dict[str, bytes]:
    """RTMR0-3 replayed from zero from the CCEL log area at ``path``."""
    data = read_file(path, "event log")
    try:
        events = decode_ccel_data(data)
    except TdxfsError as exc:
        raise TdxfsError(f"{path}: {exc.reason}") from None
    regs = replay(events)
    return {name: regs[name] for name in RTMRS}


def report_rtmrs(report: bytes, where: str) -> Dict[str, bytes]:
    if len(report) != abi.TDREPORT_SIZE:
        raise TdxfsError(f"{where}: a TDREPORT is {abi.TDREPORT_SIZE} bytes, got {len(report)}")
    return {name: abi.rtmr_field(i).get(report) for i, name in enumerate(RTMRS)}


@dataclass(frozen=True)
class Comparison:
    name: str
    replayed: bytes
    reported: Optional[bytes]

    @property
    def matches(self) -> bool:
        return self.reported == self.replayed


def compare(replayed: Dict[str, bytes], reported: Optional[Dict[str, bytes]]) -> List[Comparison]:
    return [Comparison(name, replayed[name], reported[name] if reported else None) for name in RTMRS]
