"""The TD's event log: every measurement extended into MRTD and RTMR0-3, in order, and
the views a TDX guest gives of it.

An :class:`Event` is one measurement: the CC measurement-register index (0 = MRTD,
1..4 = RTMR0..3, as in the TCG logs of a TDX guest), a TCG event type, the 48-byte
SHA-384 digest that was extended, and the event data (what was measured, or a
description; empty for a bare digest). Replaying the events from zero
(``reg = SHA-384(reg || digest)``, EV_NO_ACTION skipped) gives the registers.

Views (all built here, byte for byte, from the facts below):

* ``ccel_table()`` - the ACPI CCEL table firmware leaves at
  ``/sys/firmware/acpi/tables/CCEL``: the 36-byte ACPI header (signature ``CCEL``,
  length 56, revision 1, a checksum byte that makes all 56 bytes sum to 0 mod 256, OEM
  ID ``TDXFS``, OEM table ID ``TDXFSSIM``, OEM revision 1, creator ``TDXF`` revision 1),
  then CC type u8 = 2 (TDX), CC subtype u8 = 0, reserved u16, LAML u64 (log area minimum
  length) and LASA u64 (log area start address, a fixed guest-physical address
  ``CCEL_LASA``; nothing maps it). All integers little-endian.
* ``ccel_data()`` - the log area, ``/sys/firmware/acpi/tables/data/CCEL``, LAML bytes in
  the TCG PC Client crypto-agile format: first a TCG_PCR_EVENT (MR index 0, EV_NO_ACTION,
  20 zero digest bytes, event size, then the TCG_EfiSpecIDEventStruct "Spec ID Event03":
  platform class 0, spec version 2.0 errata 0, uintn size 2, one algorithm SHA-384
  (0x000C, 48 bytes), no vendor info), then one TCG_PCR_EVENT2 per event (MR index, type,
  digest count 1, algorithm 0x000C, the 48-byte digest, event size, event data; an event
  without data carries the one byte ``EMPTY_EVENT_FIELD``). The rest
  of the area is 0xFF. LAML is at least 64 KiB and grows in 64 KiB steps so that at
  least 8 bytes of 0xFF always follow the last record (parsers read an MR index and a
  type before they look for the 0xFFFFFFFF end marker).

  This view holds the RTMR events only (MR index 1..4): a real guest's CCEL never
  carries MRTD records (the host builds MRTD, not the firmware), and widely used parsers
  map MR index k to RTMR k-1 and fail on index 0. Replaying it reproduces RTMR0-3.
* ``text()`` - one line per event, MRTD events included, for people and shell scripts::

      INDEX REGISTER DIGEST96HEX TYPENAME DATA

  INDEX counts from 0 over the whole log; REGISTER is ``mrtd`` or ``rtmr0``..``rtmr3``;
  TYPENAME is the TCG name (``EV_IPL``) or ``0x...`` for a type without one; DATA is the
  event data with every byte outside printable ASCII, and the backslash, written as
  ``\\xNN`` - so an event is always exactly one line, and :func:`decode_text` gets the
  bytes back. With empty data the line ends after TYPENAME.

Encoded CCEL records and text lines are kept (each event is encoded once, at the first
view after its append), and the assembled views are cached until the next append, so a
read of a long log costs no re-encoding.

Decoding (:func:`decode_ccel_data`, :func:`decode_ccel_table`, :func:`decode_text`)
refuses malformed input with :class:`~tdxfs.errors.InvalidInput` and never raises
anything else. :func:`decode_ccel_data` reads real firmware logs too: several digests per
record (those named in the Spec ID header), further EV_NO_ACTION records, MRTD records;
it stops at an MR index of 0xFFFFFFFF or at the end of the data.
"""

import hashlib
import threading
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from tdxfs.errors import InvalidInput
from tdxfs.model.abi.ccel import (ALGORITHM_SIZE, CCEL_TABLE, DIGEST_ALGORITHM, EVENT_SIZE, SPEC_ID_EVENT,
                                  TCG_PCR_EVENT, TCG_PCR_EVENT2, TCG_PCR_EVENT2_ONE_DIGEST, VENDOR_INFO_SIZE)
from tdxfs.model.abi.layout import Field, Layout

DIGEST_SIZE = 48  # SHA-384
MRTD_INDEX = 0  # CC measurement-register index; RTMRn is n + 1
RTMR_COUNT = 4
MAX_MR_INDEX = RTMR_COUNT  # 4 = RTMR3
MAX_EVENT_DATA = 64 * 1024  # the largest event data the TD accepts for an extend

# -- TCG event types (TCG PC Client Platform Firmware Profile, section 10.4.1) ------------
EV_PREBOOT_CERT = 0x0
EV_POST_CODE = 0x1
EV_UNUSED = 0x2
EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_ACTION = 0x5
EV_EVENT_TAG = 0x6
EV_S_CRTM_CONTENTS = 0x7
EV_S_CRTM_VERSION = 0x8
EV_CPU_MICROCODE = 0x9
EV_PLATFORM_CONFIG_FLAGS = 0xA
EV_TABLE_OF_DEVICES = 0xB
EV_COMPACT_HASH = 0xC
EV_IPL = 0xD
EV_IPL_PARTITION_DATA = 0xE
EV_NONHOST_CODE = 0xF
EV_NONHOST_CONFIG = 0x10
EV_NONHOST_INFO = 0x11
EV_OMIT_BOOT_DEVICE_EVENTS = 0x12
EV_EFI_EVENT_BASE = 0x80000000
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
EV_EFI_GPT_EVENT = 0x80000006
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
EV_EFI_HANDOFF_TABLES = 0x80000009
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_HANDOFF_TABLES2 = 0x8000000B
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
EV_EFI_GPT_EVENT2 = 0x8000000D
EV_EFI_HCRTM_EVENT = 0x80000010
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2

RUNTIME_EVENT_TYPE = EV_IPL  # the type of a runtime extend that names none

EVENT_TYPE_NAMES: Dict[int, str] = {
    value: name for name, value in sorted(globals().items())
    if name.startswith("EV_") and isinstance(value, int)
}
_EVENT_TYPES_BY_NAME: Dict[str, int] = {name: value for value, name in EVENT_TYPE_NAMES.items()}

TPM_ALG_SHA384 = 0x000C
SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
END_OF_LOG = 0xFFFFFFFF

# -- CCEL ACPI table ----------------------------------------------------------------------
CCEL_SIGNATURE = b"CCEL"
CCEL_REVISION = 1
CC_TYPE_TDX = 2
CCEL_OEM_ID = b"TDXFS "  # 6 bytes
CCEL_OEM_TABLE_ID = b"TDXFSSIM"  # 8 bytes
CCEL_OEM_REVISION = 1
CCEL_CREATOR_ID = b"TDXF"
CCEL_CREATOR_REVISION = 1
CCEL_LASA = 0x7F000000  # a guest-physical address below 2 GiB, as TDVF reserves one
LAML_STEP = 64 * 1024
MIN_FREE_TAIL = 8  # 0xFF bytes that always follow the last record


def register_name(mr: int) -> str:
    """CC MR index -> ``mrtd`` / ``rtmr0``..``rtmr3``."""
    return "mrtd" if mr == MRTD_INDEX else f"rtmr{mr - 1}"


def event_type_name(value: int) -> str:
    """13 -> ``EV_IPL``; a type without a TCG name -> ``0x...``."""
    return EVENT_TYPE_NAMES.get(value, f"{value:#x}")


def parse_event_type(text: str) -> int:
    """``EV_IPL``, ``0xd`` or ``13`` -> 13. InvalidInput for anything else."""
    if not isinstance(text, str):
        raise InvalidInput("event type must be a name (EV_IPL) or a number")
    word = text.strip()
    if word.upper() in _EVENT_TYPES_BY_NAME:
        return _EVENT_TYPES_BY_NAME[word.upper()]
    hexdigits = word[2:] if word[:2].lower() == "0x" else None
    if hexdigits and len(hexdigits) <= 8 and all(c in "0123456789abcdefABCDEF" for c in hexdigits):
        value = int(hexdigits, 16)
    elif hexdigits is None and word and len(word) <= 10 and all(c in "0123456789" for c in word):
        value = int(word, 10)
    else:
        raise InvalidInput(f"unknown event type {word!r} (a TCG name such as EV_IPL, or a number)")
    if not 0 <= value <= 0xFFFFFFFF:
        raise InvalidInput(f"event type {word} out of range (32 bits)")
    return value


@dataclass(frozen=True)
class Event:
    """One measurement. ``mr``: CC MR index, 0 = MRTD, 1..4 = RTMR0..3."""

    mr: int
    event_type: int
    digest: bytes
    data: bytes = b""

    def __post_init__(self):
        if isinstance(self.mr, bool) or not isinstance(self.mr, int) or not 0 <= self.mr <= MAX_MR_INDEX:
            raise InvalidInput(f"MR index {self.mr!r} out of range 0..{MAX_MR_INDEX}")
        if isinstance(self.event_type, bool) or not isinstance(self.event_type, int) \
                or not 0 <= self.event_type <= 0xFFFFFFFF:
            raise InvalidInput(f"event type {self.event_type!r} is not a 32-bit number")
        if not isinstance(self.digest, (bytes, bytearray, memoryview)) or len(self.digest) != DIGEST_SIZE:
            raise InvalidInput(f"event digest must be {DIGEST_SIZE} bytes")
        if not isinstance(self.data, (bytes, bytearray, memoryview)):
            raise InvalidInput("event data must be bytes")
        object.__setattr__(self, "digest", bytes(self.digest))
        object.__setattr__(self, "data", bytes(self.data))

    @property
    def register(self) -> str:
        return register_name(self.mr)


def extend_digest(register: bytes, digest: bytes) -> bytes:
    return hashlib.sha384(register + digest).digest()


def replay(events: Iterable[Event]) -> Dict[str, bytes]:
    """{"mrtd", "rtmr0".."rtmr3"} from zero, EV_NO_ACTION events skipped."""
    regs = {register_name(mr): bytes(DIGEST_SIZE) for mr in range(MAX_MR_INDEX + 1)}
    for event in events:
        if event.event_type == EV_NO_ACTION:
            continue
        name = register_name(event.mr)
        regs[name] = extend_digest(regs[name], event.digest)
    return regs


# -- encoding -------------------------------------------------------------------------------


def spec_id_event() -> bytes:
    """The first record of the log: TCG_PCR_EVENT carrying TCG_EfiSpecIDEventStruct."""
    spec = (SPEC_ID_EVENT.encode({"signature": SPEC_ID_SIGNATURE, "platform_class": 0, "spec_version_major": 2,
                                  "uintn_size": 2, "number_of_algorithms": 1})
            + ALGORITHM_SIZE.pack(TPM_ALG_SHA384, DIGEST_SIZE)
            + VENDOR_INFO_SIZE.pack(0))
    head = TCG_PCR_EVENT.encode({"pcr_index": MRTD_INDEX, "event_type": EV_NO_ACTION, "event_size": len(spec)})
    return head + spec  # its SHA-1 digest is zero


_SPEC_ID_EVENT = spec_id_event()


# What a record of an event without data carries in the CCEL view: firmware never logs an
# empty event, and the parsers in the field (pytdxmeasure, cctrusted) fail on event size 0.
EMPTY_EVENT_FIELD = b"\0"


def encode_event2(event: Event) -> bytes:
    """One TCG_PCR_EVENT2 with the SHA-384 digest only."""
    data = event.data or EMPTY_EVENT_FIELD
    head = TCG_PCR_EVENT2_ONE_DIGEST.pack(event.mr, event.event_type, 1, TPM_ALG_SHA384)
    return head + event.digest + EVENT_SIZE.pack(len(data)) + data


def laml_for(used: int) -> int:
    """The log area length for ``used`` bytes of records: 64 KiB steps, >= 8 bytes spare."""
    need = used + MIN_FREE_TAIL
    return max(LAML_STEP, -(-need // LAML_STEP) * LAML_STEP)


def encode_ccel_table(laml: int, lasa: int = CCEL_LASA) -> bytes:
    table = CCEL_TABLE.encode({
        "signature": CCEL_SIGNATURE, "length": CCEL_TABLE.size, "revision": CCEL_REVISION,
        "oem_id": CCEL_OEM_ID, "oem_table_id": CCEL_OEM_TABLE_ID, "oem_revision": CCEL_OEM_REVISION,
        "creator_id": CCEL_CREATOR_ID, "creator_revision": CCEL_CREATOR_REVISION,
        "cc_type": CC_TYPE_TDX, "laml": laml, "lasa": lasa,
    })
    return CCEL_TABLE.encode({"checksum": -sum(table) & 0xFF}, table)


_PRINTABLE = frozenset(range(0x20, 0x7F)) - {0x5C}
_ESCAPES = tuple(chr(b) if b in _PRINTABLE else f"\\x{b:02x}" for b in range(256))


def escape_data(data: bytes) -> str:
    return "".join(_ESCAPES[b] for b in data)


def text_line(index: int, event: Event) -> bytes:
    line = f"{index} {event.register} {event.digest.hex()} {event_type_name(event.event_type)}"
    if event.data:
        line += " " + escape_data(event.data)
    return (line + "\n").encode("ascii")


# -- the log ----------------------------------------------------------------------------------


class EventLog:
    """Append-only, thread-safe. Views are cached between appends."""

    def __init__(self, events: Iterable[Event] = ()):
        self._lock = threading.Lock()
        self._events: List[Event] = []
        self._records = bytearray(_SPEC_ID_EVENT)
        self._lines: List[bytes] = []
        self._snapshot: Optional[Tuple[Event, ...]] = ()
        self._data: Optional[bytes] = None
        self._table: Optional[bytes] = None
        self._text: Optional[bytes] = None
        for event in events:
            self.append(event)

    def append(self, event: Event) -> None:
        if not isinstance(event, Event):
            raise InvalidInput("an event log holds Event values")
        with self._lock:
            self._events.append(event)
            self._snapshot = self._data = self._table = self._text = None

    def _encode_new(self) -> None:
        """Encode the events appended since the last view (lock held)."""
        for n in range(len(self._lines), len(self._events)):
            event = self._events[n]
            self._lines.append(text_line(n, event))
            if event.mr != MRTD_INDEX:
                self._records += encode_event2(event)

    def events(self) -> Tuple[Event, ...]:
        with self._lock:
            if self._snapshot is None:
                self._snapshot = tuple(self._events)
            return self._snapshot

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def ccel_data(self) -> bytes:
        with self._lock:
            if self._data is None:
                self._encode_new()
                used = len(self._records)
                self._data = bytes(self._records) + b"\xff" * (laml_for(used) - used)
            return self._data

    def ccel_table(self) -> bytes:
        with self._lock:
            if self._table is None:
                self._encode_new()
                self._table = encode_ccel_table(laml_for(len(self._records)))
            return self._table

    def text(self) -> bytes:
        with self._lock:
            if self._text is None:
                self._encode_new()
                self._text = b"".join(self._lines)
            return self._text

    def replay(self) -> Dict[str, bytes]:
        return replay(self.events())


# -- decoding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CcelTable:
    signature: bytes
    length: int
    revision: int
    checksum: int
    oem_id: bytes
    oem_table_id: bytes
    oem_revision: int
    creator_id: bytes
    creator_revision: int
    cc_type: int
    cc_subtype: int
    reserved: int
    laml: int
    lasa: int


def decode_ccel_table(table: bytes) -> CcelTable:
    """Every field of an ACPI CCEL table; InvalidInput when it is not one."""
    if not isinstance(table, (bytes, bytearray, memoryview)):
        raise InvalidInput("a CCEL table is bytes")
    table = bytes(table)
    if len(table) < CCEL_TABLE.size:
        raise InvalidInput(f"CCEL table is {CCEL_TABLE.size} bytes, got {len(table)}")
    parsed = CcelTable(**CCEL_TABLE.values(table))
    if parsed.signature != CCEL_SIGNATURE:
        raise InvalidInput(f"not a CCEL table (signature {parsed.signature!r})")
    if parsed.length != len(table):
        raise InvalidInput(f"CCEL table length field says {parsed.length}, the table has {len(table)} bytes")
    if sum(table) & 0xFF:
        raise InvalidInput("CCEL table checksum is wrong (the bytes do not sum to 0 mod 256)")
    return parsed


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidInput(f"event log truncated in {what} at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def peek(self, field: Field) -> int:
        """An integer row of the structure that starts here, without moving on."""
        return int.from_bytes(self.data[self.pos + field.offset : self.pos + field.end], "little")

    def read(self, layout: Layout, what: str) -> tuple:
        """The next ``layout.size`` bytes, unpacked (its rows in order)."""
        return layout.unpack(self.take(layout.size, what))


def _decode_spec_header(r: _Reader) -> Dict[int, int]:
    """The TCG_PCR_EVENT with the Spec ID event -> {algorithm: digest size}."""
    mr, etype, _, size = r.read(TCG_PCR_EVENT, "the header event")
    if etype != EV_NO_ACTION:
        raise InvalidInput(f"the first event is type {etype:#x}, not EV_NO_ACTION (no Spec ID header)")
    if mr != MRTD_INDEX:
        raise InvalidInput(f"the header event has MR index {mr:#x}, not 0")
    spec = _Reader(r.take(size, "the Spec ID event"))
    head = SPEC_ID_EVENT.values(spec.take(SPEC_ID_EVENT.size, "the Spec ID event"))
    if head["signature"] != SPEC_ID_SIGNATURE:
        raise InvalidInput("the header event is not a Spec ID Event03 (crypto-agile) event")
    sizes: Dict[int, int] = {}
    for _ in range(head["number_of_algorithms"]):
        alg, digest_size = spec.read(ALGORITHM_SIZE, "the algorithm list")
        if alg in sizes:
            raise InvalidInput(f"the Spec ID event names algorithm {alg:#06x} twice")
        sizes[alg] = digest_size
    (vendor,) = spec.read(VENDOR_INFO_SIZE, "the vendor info size")
    spec.take(vendor, "the vendor info")
    if sizes.get(TPM_ALG_SHA384) != DIGEST_SIZE:
        raise InvalidInput("the Spec ID event does not name SHA-384 (0x000c) with 48-byte digests")
    return sizes


_PCR_INDEX = TCG_PCR_EVENT2.fields["pcr_index"]


def decode_ccel_data(data: bytes) -> List[Event]:
    """The events of a TCG crypto-agile log area (the Spec ID header is not an event).
    Each event carries its SHA-384 digest; InvalidInput when malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput("an event log is bytes")
    r = _Reader(bytes(data))
    if not r.data:
        raise InvalidInput("the event log is empty")
    sizes = _decode_spec_header(r)
    events: List[Event] = []
    while len(r.data) - r.pos >= _PCR_INDEX.size:
        start = r.pos
        if r.peek(_PCR_INDEX) == END_OF_LOG:
            return events
        mr, etype, count = r.read(TCG_PCR_EVENT2, f"event {len(events)}")
        if mr > MAX_MR_INDEX:
            raise InvalidInput(f"event {len(events)} at offset {start}: MR index {mr} out of range 0..{MAX_MR_INDEX}")
        if count == 0:
            raise InvalidInput(f"event {len(events)} at offset {start} has no digest")
        digest = None
        for _ in range(count):
            (alg,) = r.read(DIGEST_ALGORITHM, f"event {len(events)} digests")
            if alg not in sizes:
                raise InvalidInput(f"event {len(events)} at offset {start}: algorithm {alg:#06x} "
                                   "is not in the Spec ID header")
            value = r.take(sizes[alg], f"event {len(events)} digests")
            if alg == TPM_ALG_SHA384:
                digest = value
        if digest is None:
            raise InvalidInput(f"event {len(events)} at offset {start} has no SHA-384 digest")
        (size,) = r.read(EVENT_SIZE, f"event {len(events)} size")
        payload = r.take(size, f"event {len(events)} data")
        events.append(Event(mr, etype, digest, payload))
    rest = r.data[r.pos :]
    if rest != b"\xff" * len(rest):  # fewer than 4 bytes left: only end-marker bytes may remain
        raise InvalidInput(f"event log truncated at offset {r.pos}")
    return events


def decode_text(text: bytes) -> List[Event]:
    """The events of a :meth:`EventLog.text` view; InvalidInput when malformed."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidInput("the text event log is not ASCII") from None
    if not isinstance(text, str):
        raise InvalidInput("a text event log is bytes or str")
    events: List[Event] = []
    for number, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        parts = line.split(" ", 4)
        if len(parts) < 4:
            raise InvalidInput(f"text event log line {number + 1}: expected INDEX REGISTER DIGEST TYPE [DATA]")
        index, reg, digest_hex, type_name = parts[:4]
        if index != str(len(events)):
            raise InvalidInput(f"text event log line {number + 1}: index {index!r}, expected {len(events)}")
        mr = _REGISTERS.get(reg)
        if mr is None:
            raise InvalidInput(f"text event log line {number + 1}: unknown register {reg!r}")
        try:
            digest = bytes.fromhex(digest_hex)
        except ValueError:
            raise InvalidInput(f"text event log line {number + 1}: digest is not hex") from None
        if len(digest) != DIGEST_SIZE:
            raise InvalidInput(f"text event log line {number + 1}: digest is not 48 bytes")
        data = unescape_data(parts[4], number + 1) if len(parts) == 5 else b""
        events.append(Event(mr, parse_event_type(type_name), digest, data))
    return events


_REGISTERS = {register_name(mr): mr for mr in range(MAX_MR_INDEX + 1)}


def unescape_data(text: str, line: int = 0) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            code = text[i + 2 : i + 4]
            if text[i + 1 : i + 2] != "x" or len(code) != 2 or not all(c in "0123456789abcdefABCDEF" for c in code):
                raise InvalidInput(f"text event log line {line}: bad escape at column {i + 1}")
            out.append(int(code, 16))
            i += 4
        else:
            if not 0x20 <= ord(ch) < 0x7F:
                raise InvalidInput(f"text event log line {line}: unescaped byte at column {i + 1}")
            out.append(ord(ch))
            i += 1
    return bytes(out)
