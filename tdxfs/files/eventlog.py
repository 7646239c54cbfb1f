"""``eventlog``: the TD's event log as text, and the way to extend an RTMR with an event.

Read: one line per event, in the order applied, boot events (MRTD's too) first::

    INDEX REGISTER DIGEST96HEX TYPENAME [DATA]

(``tdxfs.model.eventlog.text_line``: DATA is the event data with bytes outside printable
ASCII, and the backslash, written ``\\xNN``; no DATA for a bare digest.) Reads are
snapshots like every other file's; st_size is the text's current length.

Write: one record per ``write()``, at offset 0 (or appended: ``>>`` works too), a single
line ending in a newline::

    RTMR TYPE DIGESTHEX [DATAHEX]\\n

- RTMR: ``0``..``3`` (``rtmr0``..``rtmr3`` also accepted);
- TYPE: a TCG event type name (``EV_IPL``, ``EV_EVENT_TAG``, …) or a number (``13``,
  ``0xd``); the model refuses EV_NO_ACTION (such an event is never extended, so logging
  it as an extend would break replay);
- DIGESTHEX: the 48-byte digest to extend, 96 hex digits;
- DATAHEX: optional event data, hex (an even number of digits; empty when absent).

Fields are separated by spaces or tabs. The record becomes ``td.extend(rtmr, digest,
type, data)``: RTMR[rtmr] = SHA-384(RTMR[rtmr] || digest), and the event is logged with
it. Anything malformed is EINVAL with a one-line reason in the daemon's log, and nothing
changes. The newline is required so that a write the kernel splits into several requests
(beyond FUSE's max_write) can never be taken for a shorter, valid record.

    echo "3 EV_IPL $(sha384sum < app.bin | cut -d' ' -f1)" > MOUNT/eventlog
"""

import string
from dataclasses import dataclass
from functools import partial

from tdxfs.errors import InvalidInput
from tdxfs.files.nodes import AppendHandle, File
from tdxfs.model import abi
from tdxfs.model.eventlog import event_type_name, parse_event_type
from tdxfs.model.td import TrustDomain

RECORD_FORMAT = "RTMR TYPE DIGESTHEX [DATAHEX]"
_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True)
class Record:
    rtmr: int
    event_type: int
    digest: bytes
    data: bytes = b""

    def line(self) -> bytes:
        """The record as written to ``eventlog`` (what ``tdxfs extend`` sends)."""
        fields = [str(self.rtmr), event_type_name(self.event_type), self.digest.hex()]
        if self.data:
            fields.append(self.data.hex())
        return (" ".join(fields) + "\n").encode("ascii")


def _hex_field(text: str, what: str) -> bytes:
    if not _HEX.issuperset(text) or len(text) % 2:
        raise InvalidInput(f"eventlog record: {what} is not hex (an even number of hex digits)")
    return bytes.fromhex(text)


def parse_rtmr(text: str) -> int:
    word = text[4:] if text.lower().startswith("rtmr") else text
    if len(word) != 1 or not word.isdigit() or not 0 <= int(word) < abi.RTMR_COUNT:
        raise InvalidInput(f"eventlog record: RTMR {text!r} is not 0..{abi.RTMR_COUNT - 1}")
    return int(word)


def parse_record(data: bytes) -> Record:
    """One written record -> Record; InvalidInput (one line) when malformed."""
    data = bytes(data)
    if not data.endswith(b"\n"):
        raise InvalidInput(f"eventlog takes one record per write, a line ending in a newline: {RECORD_FORMAT}")
    lines = data.count(b"\n")
    if lines > 1:
        raise InvalidInput(f"eventlog takes one record per write, got {lines} lines")
    try:
        text = data[:-1].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput("eventlog record: not ASCII text") from None
    fields = text.split()
    if len(fields) not in (3, 4):
        raise InvalidInput(f"eventlog record: {len(fields)} fields, expected {RECORD_FORMAT}")
    rtmr = parse_rtmr(fields[0])
    try:
        event_type = parse_event_type(fields[1])
    except InvalidInput as exc:
        raise InvalidInput(f"eventlog record: {exc.reason}") from None
    digest_text = fields[2]
    if len(digest_text) != 2 * abi.MEASUREMENT_SIZE:
        raise InvalidInput(f"eventlog record: the digest is {2 * abi.MEASUREMENT_SIZE} hex digits, "
                           f"got {len(digest_text)}")
    digest = _hex_field(digest_text, "the digest")
    event_data = _hex_field(fields[3], "the event data") if len(fields) == 4 else b""
    return Record(rtmr, event_type, digest, event_data)


def extend_with_record(td: TrustDomain, data: bytes) -> None:
    """A write to ``eventlog``: one record, extended and logged together."""
    r = parse_record(data)
    td.extend(r.rtmr, r.digest, r.event_type, r.data)


def eventlog_row(td: TrustDomain) -> File:
    text = td.event_log.text
    return File("eventlog", 0o644, lambda: len(text()), show=text, store=partial(extend_with_record, td),
                handle=AppendHandle)
