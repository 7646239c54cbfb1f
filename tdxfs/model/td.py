"""The TDX module model: one platform (its secret MAC key) and one trust domain on it.

Three front ends (the register files, the ioctl node, the configfs tree) all call
:meth:`TrustDomain.report`, :meth:`TrustDomain.extend` and :meth:`Platform.verify_report`.

Locking: one lock per TD guards its mutable registers (RTMRs, the shared REPORTDATA) and
its event log. A mutation holds it while the new value is made durable (so the registers,
the log and the state directory never disagree and a failed write changes nothing);
building a report only copies the registers under the lock and does the hashing and MAC
outside it.

The event log (``td.event_log``, :mod:`tdxfs.model.eventlog`): the profile's boot events
first, then one event per extend, appended under the same lock as the register change.
Replaying it from zero gives RTMR0-3 (and MRTD), except for a register the profile sets
explicitly without events (``td.notices`` says which).

The MAC: the real TDX module's MAC algorithm is unpublished. tdxfs uses
HMAC-SHA-256 over TDREPORT bytes 0..223 (REPORTMACSTRUCT up to the MAC), keyed with
HMAC-SHA-256(platform secret, "tdxfs REPORTMACSTRUCT MAC key v1"). The MAC covers
TEE_TCB_INFO_HASH and TEE_INFO_HASH, hence the whole report.
"""

import hashlib
import hmac
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

from tdxfs.errors import DeviceError, InvalidInput
from tdxfs.model import abi
from tdxfs.model.abi.tdreport import REPORTMACSTRUCT
from tdxfs.model.eventlog import EV_NO_ACTION, MAX_EVENT_DATA, RUNTIME_EVENT_TYPE, Event, EventLog
from tdxfs.model.profile import TdProfile, extend_digest

PLATFORM_SECRET_SIZE = 32
_MAC_KEY_LABEL = b"tdxfs REPORTMACSTRUCT MAC key v1"

# Persist callback: (rtmrs, reportdata) -> None, raises StateError when it cannot.
Persist = Callable[[Tuple[bytes, ...], bytes], None]
# A quoting enclave: TDREPORT -> quote; raises DeviceError (EIO) for a report it refuses.
QuoteFn = Callable[[bytes], bytes]

_REPORTTYPE, _MAC = REPORTMACSTRUCT.fields["reporttype.type"], REPORTMACSTRUCT.fields["mac"]
# TrustDomain.report() joins static runs and live fields in the table's offset order:
#   head | TEE_INFO_HASH | REPORTDATA | reserved | MAC | TEE_TCB_INFO, reserved | TDINFO head | RTMR0-3 | TDINFO tail
_TEE_INFO_HASH, _REPORTDATA = abi.TDREPORT_FIELDS["tee_info_hash"], abi.TDREPORT_FIELDS["reportdata"]
if not (abi.MAC_INPUT.start == 0 and _TEE_INFO_HASH.end == _REPORTDATA.offset
        and _REPORTDATA.end <= abi.MAC_INPUT.stop == abi.REPORTMACSTRUCT.stop - _MAC.size
        and abi.TDINFO.stop == abi.TDREPORT_SIZE):
    raise AssertionError("TrustDomain.report() joins the TDREPORT in an order its table no longer has")


class TdStore(Protocol):
    """Where a TD keeps its state durably (tdxfs.model.state). Each call returns only once
    the change is durable, and raises StateError (changing nothing) when it cannot."""

    def append_event(self, event: Event) -> None: ...

    def save_reportdata(self, reportdata: bytes) -> None: ...


def registers_from_log(profile: TdProfile, events: Sequence[Event]) -> Tuple[bytes, ...]:
    """RTMR0-3 of a TD whose log is ``events``: the profile's boot values extended by the
    events after its boot events. InvalidInput when the log does not start with the
    profile's boot events or a later event cannot be a runtime extend."""
    boot = tuple(profile.boot_events)
    if tuple(events[: len(boot)]) != boot:
        raise InvalidInput("the event log does not start with the profile's boot events")
    rtmrs = list(profile.boot_rtmrs())
    for n, event in enumerate(events[len(boot):], start=len(boot)):
        if event.mr == 0 or event.event_type == EV_NO_ACTION:
            raise InvalidInput(f"event {n} ({event.register}, type {event.event_type:#x}) is not an RTMR extend")
        rtmrs[event.mr - 1] = extend_digest(rtmrs[event.mr - 1], event.digest)
    return tuple(rtmrs)


@dataclass(frozen=True)
class VerifyResult:
    """The VERIFYREPORT analogue's answer: ``ok`` or the list of parts that fail."""

    failures: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        return "OK" if self.ok else "; ".join(self.failures)


class Platform:
    """The machine: its secret MAC key. Reports from another Platform do not verify here."""

    def __init__(self, secret: Optional[bytes] = None):
        self.secret = secret if secret is not None else os.urandom(PLATFORM_SECRET_SIZE)
        if len(self.secret) != PLATFORM_SECRET_SIZE:
            raise ValueError(f"platform secret must be {PLATFORM_SECRET_SIZE} bytes")
        mac_key = hmac.digest(self.secret, _MAC_KEY_LABEL, "sha256")
        # HMAC-SHA-256 (RFC 2104) with the keyed inner and outer states computed once:
        # a report's MAC then costs two hash copies instead of a full HMAC set-up.
        block = mac_key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def mac(self, mac_input: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(mac_input)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def verify_reportmac(self, reportmac: bytes) -> VerifyResult:
        """The TDG.MR.VERIFYREPORT analogue, on REPORTMACSTRUCT alone (the 256 bytes the
        downstream ioctl passes): REPORTTYPE.TYPE is 0x81 and the MAC over the bytes before
        it was made with this platform's key. The two hashes it carries cannot be checked
        without TEE_TCB_INFO and TDINFO (:meth:`verify_report` does). InvalidInput when
        ``reportmac`` is not 256 bytes."""
        if len(reportmac) != REPORTMACSTRUCT.size:
            raise InvalidInput(f"REPORTMACSTRUCT is {REPORTMACSTRUCT.size} bytes, got {len(reportmac)}")
        failures = []
        report_type = _REPORTTYPE.value(reportmac)
        if report_type != abi.REPORTTYPE_TDX:
            failures.append(f"REPORTTYPE.TYPE is {report_type:#04x}, not {abi.REPORTTYPE_TDX:#04x}")
        expected = self.mac(reportmac[: _MAC.offset])
        if not hmac.compare_digest(expected, _MAC.get(reportmac)):
            failures.append("MAC does not match (not made on this platform, or REPORTMACSTRUCT altered)")
        return VerifyResult(failures)

    def verify_report(self, report: bytes) -> VerifyResult:
        """The MAC plus both hashes, each failure named."""
        if len(report) != abi.TDREPORT_SIZE:
            raise InvalidInput(f"TDREPORT is {abi.TDREPORT_SIZE} bytes, got {len(report)}")
        failures = list(self.verify_reportmac(report[abi.REPORTMACSTRUCT]).failures)
        f = abi.TDREPORT_FIELDS
        if hashlib.sha384(report[abi.TEE_TCB_INFO]).digest() != f["tee_tcb_info_hash"].get(report):
            failures.append("TEE_TCB_INFO_HASH is not SHA-384 of TEE_TCB_INFO")
        if hashlib.sha384(report[abi.TDINFO]).digest() != f["tee_info_hash"].get(report):
            failures.append("TEE_INFO_HASH is not SHA-384 of TDINFO")
        return VerifyResult(failures)


def check_reportdata(data: bytes) -> bytes:
    if len(data) != abi.REPORTDATA_SIZE:
        raise InvalidInput(f"REPORTDATA must be {abi.REPORTDATA_SIZE} bytes, got {len(data)}")
    return bytes(data)


class TrustDomain:
    """One TD: static measurements from the profile, live RTMRs and the shared REPORTDATA."""

    def __init__(
        self,
        platform: Platform,
        profile: TdProfile,
        rtmrs: Optional[Sequence[bytes]] = None,
        reportdata: bytes = bytes(abi.REPORTDATA_SIZE),
        persist: Optional[Persist] = None,
        qe: Optional[QuoteFn] = None,
        event_log: Optional[EventLog] = None,
        store: Optional[TdStore] = None,
    ):
        """``event_log``: the log so far (default: the profile's boot events); without
        ``rtmrs`` the registers are computed from it. ``store`` keeps events and REPORTDATA
        durably; ``persist`` (older hook) is called with all registers on every change."""
        self.platform = platform
        self.qe = qe
        self.profile = profile
        self._lock = threading.Lock()
        self.event_log = event_log if event_log is not None else EventLog(profile.boot_events)
        if rtmrs is None:
            rtmrs = registers_from_log(profile, self.event_log.events())
        self._rtmrs: Tuple[bytes, ...] = tuple(rtmrs)
        self._reportdata = check_reportdata(reportdata)
        self._persist = persist
        self._store = store
        self.notices: Tuple[str, ...] = tuple(profile.notices())
        self._build_static_parts()

    def _build_static_parts(self) -> None:
        """Everything in a report that no request changes, encoded once."""
        p = self.profile.fields
        base = abi.encode(
            {
                "reporttype.type": abi.REPORTTYPE_TDX,
                "cpusvn": p["cpusvn"],
                "tee_tcb_info.valid": p["tee_tcb_info.valid"],
                "tee_tcb_info.tee_tcb_svn": p["tee_tcb_info.tee_tcb_svn"],
                "tee_tcb_info.mrseam": p["tee_tcb_info.mrseam"],
                "tee_tcb_info.mrsignerseam": p["tee_tcb_info.mrsignerseam"],
                "tee_tcb_info.attributes": p["tee_tcb_info.attributes"],
                "tee_tcb_info.tee_tcb_svn2": p["tee_tcb_info.tee_tcb_svn2"],
                "tdinfo.attributes": p["attributes"],
                "tdinfo.xfam": p["xfam"],
                "tdinfo.mrtd": p["mrtd"],
                "tdinfo.mrconfigid": p["mrconfigid"],
                "tdinfo.mrowner": p["mrowner"],
                "tdinfo.mrownerconfig": p["mrownerconfig"],
            }
        )
        tee_tcb_info = base[abi.TEE_TCB_INFO]
        base = abi.encode({"tee_tcb_info_hash": hashlib.sha384(tee_tcb_info).digest()}, base)
        # The static runs between the live fields (the order is checked at import, above).
        self._head = base[: _TEE_INFO_HASH.offset]  # REPORTTYPE .. TEE_TCB_INFO_HASH
        self._tail_reserved = base[_REPORTDATA.end : abi.MAC_INPUT.stop]  # reserved, up to the MAC
        self._tcb_block = base[abi.REPORTMACSTRUCT.stop : abi.TDINFO.start]  # TEE_TCB_INFO + reserved
        self._tdinfo_head = base[abi.TDINFO.start : abi.RTMRS.start]
        self._tdinfo_tail = base[abi.RTMRS.stop : abi.TDINFO.stop]

    # -- registers ---------------------------------------------------------------

    @property
    def reportdata(self) -> bytes:
        return self._reportdata

    def rtmr(self, index: int) -> bytes:
        self._check_index(index)
        return self._rtmrs[index]

    def rtmrs(self) -> Tuple[bytes, ...]:
        return self._rtmrs

    def measurement(self, name: str) -> bytes:
        """mrtd, mrconfigid, mrowner, mrownerconfig, rtmr0..3 by name."""
        if name.startswith("rtmr"):
            return self.rtmr(int(name[4:]))
        return self.profile[name]

    @staticmethod
    def _check_index(index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < abi.RTMR_COUNT:
            raise InvalidInput(f"RTMR index {index!r} out of range 0..{abi.RTMR_COUNT - 1}")

    def extend(self, index: int, data48: bytes, event_type: int = RUNTIME_EVENT_TYPE,
               event_data: bytes = b"") -> bytes:
        """RTMR[index] = SHA-384(RTMR[index] || data48), and Event(index + 1, event_type,
        data48, event_data) appended to the event log, together under the TD's lock;
        durable before it returns. Invalid arguments change nothing (InvalidInput)."""
        self._check_index(index)
        if not isinstance(data48, (bytes, bytearray, memoryview)) or len(data48) != abi.MEASUREMENT_SIZE:
            size = len(data48) if isinstance(data48, (bytes, bytearray, memoryview)) else "no"
            raise InvalidInput(f"extend data must be {abi.MEASUREMENT_SIZE} bytes, got {size}")
        if not isinstance(event_data, (bytes, bytearray, memoryview)):
            raise InvalidInput("event data must be bytes")
        if len(event_data) > MAX_EVENT_DATA:
            raise InvalidInput(f"event data is limited to {MAX_EVENT_DATA} bytes, got {len(event_data)}")
        event = Event(index + 1, event_type, bytes(data48), bytes(event_data))  # validates the type
        if event.event_type == EV_NO_ACTION:
            raise InvalidInput("EV_NO_ACTION events are never extended; use another event type")
        with self._lock:
            rtmrs = list(self._rtmrs)
            rtmrs[index] = extend_digest(rtmrs[index], event.digest)
            # Durable first: if it raises, neither the registers nor the log changed.
            if self._store is not None:
                self._store.append_event(event)
            self._commit(tuple(rtmrs), self._reportdata)
            self.event_log.append(event)
            return rtmrs[index]

    def set_reportdata(self, data64: bytes) -> None:
        data = check_reportdata(data64)
        with self._lock:
            if self._store is not None:
                self._store.save_reportdata(data)
            self._commit(self._rtmrs, data)

    def log_snapshot(self) -> Tuple[Tuple[Event, ...], Tuple[bytes, ...]]:
        """The events and RTMR0-3 at one instant (no extend between the two)."""
        with self._lock:
            return self.event_log.events(), self._rtmrs

    def _commit(self, rtmrs: Tuple[bytes, ...], reportdata: bytes) -> None:
        # Persist first: if it raises, nothing in memory changed either.
        if self._persist is not None:
            self._persist(rtmrs, reportdata)
        self._rtmrs, self._reportdata = rtmrs, reportdata

    # -- reports -----------------------------------------------------------------

    def report(self, reportdata: Optional[bytes] = None) -> bytes:
        """TDG.MR.REPORT: the 1024-byte TDREPORT for ``reportdata`` (the shared one if None)."""
        if reportdata is not None:
            reportdata = check_reportdata(reportdata)
        with self._lock:
            rtmrs = self._rtmrs
            if reportdata is None:
                reportdata = self._reportdata
        tdinfo = self._tdinfo_head + b"".join(rtmrs) + self._tdinfo_tail
        mac_input = self._head + hashlib.sha384(tdinfo).digest() + reportdata + self._tail_reserved
        return mac_input + self.platform.mac(mac_input) + self._tcb_block + tdinfo

    def verify_report(self, report: bytes) -> VerifyResult:
        return self.platform.verify_report(report)

    def quote(self, reportdata: bytes) -> bytes:
        """TDREPORT for ``reportdata``, turned into a quote by the quoting enclave (the
        GetQuote path: configfs-tsm outblob). No lock is held while the QE signs."""
        if self.qe is None:
            raise DeviceError("no quoting enclave on this platform")
        return self.qe(self.report(reportdata))
