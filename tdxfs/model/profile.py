"""The TD profile: everything that identifies a simulated TD and its platform.

A profile is a flat mapping of named byte strings. The embedded default needs no
configuration; ``--profile FILE`` (TOML) overrides any field. Every field is given as hex
of its exact length in report byte order; the 8-byte fields (attributes, xfam, valid)
and ``pcesvn`` also accept a TOML integer, meaning the little-endian value.

``pcesvn`` is not in the TDREPORT: it is the platform's PCE SVN, which the simulated PCK
certificate and the quote header carry. Together with ``cpusvn`` and
``tee_tcb_info.tee_tcb_svn`` it selects the TCB status a verifier reports for a quote
(the table is in ``tdxfs/model/collateral.py``).

The default MRTD and RTMR0-2 come from a synthetic boot (``BOOT_EVENTS``): each event's
SHA-384 digest is extended, in order, into a register that starts at zero, exactly as
TDG.MR.RTMR.EXTEND would do it. RTMR3 starts at zero (left for the OS and applications).
Each boot event has a TCG event type and its text as event data; they are the first
entries of the TD's event log (``tdxfs.model.eventlog``), MRTD's included.

Boot events of a profile. A profile TOML may carry its own list, which then replaces the
default list entirely::

    [[boot_event]]
    register = "mrtd"                 # "mrtd", "rtmr0".."rtmr3", or an RTMR index 0..3
    type = "EV_EFI_PLATFORM_FIRMWARE_BLOB2"   # a TCG name or a number; default EV_IPL
    data = "firmware volume"          # event data as text, or data_hex = "..." for bytes
    digest = "<96 hex chars>"         # optional; default SHA-384 of the data

The registers are then computed from the events (from zero; a register without events is
zero). Rules where values and events meet, for each of mrtd and rtmr0..3:

* A register set explicitly *and* by boot events must agree with their replay (the value
  is then a check); a different value is refused, naming the field.
* A register set explicitly with no events for it keeps its value, but the event log
  cannot reproduce it (no digest extends zero to a chosen value): ``unreproducible()``
  names such registers and the mount log says so. Replaying the log then gives the
  register only relative to that start value.
* Without a ``[[boot_event]]`` list, the default events of a register are kept when the
  register is not set or set to exactly what they give (so the output of ``profile show``
  loads back unchanged); a register set to another value drops them (previous behaviour:
  the explicit value wins).
* EV_NO_ACTION is refused as a boot event type: such an event is logged but never
  extended, and tools take it for the log's header.

The profile digest that binds a state directory covers the boot events only when they
differ from the default ones, so a state directory made before event logs existed still
opens with the same profile.
"""

import hashlib
import json
import struct
import tomllib
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from tdxfs.errors import ConfigError, InvalidInput, printable
from tdxfs.model import eventlog as ev
from tdxfs.model.abi import MEASUREMENT_SIZE, RTMR_COUNT

ZERO48 = bytes(MEASUREMENT_SIZE)

SEPT_VE_DISABLE = 1 << 28
DEBUG = 1 << 0

# (register, TCG event type, event text). Register "mrtd" or an RTMR index. The
# conventions follow TDVF/edk2: firmware volumes into MRTD, firmware configuration into
# RTMR0, the kernel into RTMR1, command line and initrd into RTMR2. Each event's digest is
# SHA-384 of its text, which is also its event data.
BOOT_EVENTS: Tuple[Tuple[object, int, str], ...] = (
    ("mrtd", ev.EV_EFI_PLATFORM_FIRMWARE_BLOB2, "tdxfs synthetic boot: TDVF boot firmware volume (BFV)"),
    ("mrtd", ev.EV_EFI_HANDOFF_TABLES2, "tdxfs synthetic boot: TDVF TD HOB and TEMP_MEM pages"),
    (0, ev.EV_EFI_HANDOFF_TABLES2, "tdxfs synthetic boot: TD HOB"),
    (0, ev.EV_EFI_PLATFORM_FIRMWARE_BLOB2, "tdxfs synthetic boot: configuration firmware volume (CFV)"),
    (0, ev.EV_SEPARATOR, "tdxfs synthetic boot: EV_SEPARATOR"),
    (1, ev.EV_EFI_BOOT_SERVICES_APPLICATION, "tdxfs synthetic boot: EFI boot services application (vmlinuz)"),
    (1, ev.EV_SEPARATOR, "tdxfs synthetic boot: EV_SEPARATOR"),
    (2, ev.EV_IPL, "tdxfs synthetic boot: kernel command line console=hvc0 root=/dev/vda1 ro"),
    (2, ev.EV_EVENT_TAG, "tdxfs synthetic boot: initrd"),
)
REGISTERS = ("mrtd",) + tuple(f"rtmr{i}" for i in range(RTMR_COUNT))


def extend_digest(register: bytes, data48: bytes) -> bytes:
    """SHA-384(register || data): the TDG.MR.RTMR.EXTEND rule."""
    return hashlib.sha384(register + data48).digest()


def _mr_of(target) -> int:
    return ev.MRTD_INDEX if target == "mrtd" else int(target) + 1


def default_boot_events() -> Tuple[ev.Event, ...]:
    return tuple(ev.Event(_mr_of(target), etype, hashlib.sha384(text.encode()).digest(), text.encode())
                 for target, etype, text in BOOT_EVENTS)


_DEFAULT_EVENTS = default_boot_events()


def synthetic_boot() -> Dict[str, bytes]:
    return ev.replay(_DEFAULT_EVENTS)


_DEFAULT_CHAINS = synthetic_boot()


def derived_default_events(fields: Mapping[str, bytes]) -> Tuple[ev.Event, ...]:
    """The default boot events of every register whose value is what they give."""
    keep = {name for name in REGISTERS if fields[name] == _DEFAULT_CHAINS[name]}
    return tuple(e for e in _DEFAULT_EVENTS if e.register in keep)


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


# name -> byte length; order is the order of ``profile show``.
FIELD_SIZES: Dict[str, int] = {
    "attributes": 8,
    "xfam": 8,
    "mrtd": 48,
    "mrconfigid": 48,
    "mrowner": 48,
    "mrownerconfig": 48,
    "cpusvn": 16,
    "tee_tcb_info.valid": 8,
    "tee_tcb_info.tee_tcb_svn": 16,
    "tee_tcb_info.mrseam": 48,
    "tee_tcb_info.mrsignerseam": 48,
    "tee_tcb_info.attributes": 8,
    "tee_tcb_info.tee_tcb_svn2": 16,
    "rtmr0": 48,
    "rtmr1": 48,
    "rtmr2": 48,
    "rtmr3": 48,
    "pcesvn": 2,  # little-endian u16, as in the quote header
}
INTEGER_FIELDS = {"attributes", "xfam", "tee_tcb_info.valid", "tee_tcb_info.attributes", "pcesvn"}

# Fields added after state directories were first written: they enter the digest only when
# they differ from their default, so a state directory made before they existed still opens.
DEFAULT_PCESVN = 13  # the PCE SVN of current Intel platforms; the default TCB level wants it
_LATER_FIELD_DEFAULTS = {"pcesvn": DEFAULT_PCESVN.to_bytes(2, "little")}


def _default_fields() -> Dict[str, bytes]:
    boot = synthetic_boot()
    return {
        "attributes": _u64(SEPT_VE_DISABLE),  # DEBUG clear
        "xfam": _u64(0x00000000000602E7),  # x87 SSE AVX MPX AVX-512 PKRU AMX... a common Linux TD
        "mrtd": boot["mrtd"],
        "mrconfigid": ZERO48,
        "mrowner": ZERO48,
        "mrownerconfig": ZERO48,
        "cpusvn": bytes.fromhex("04040218ff0300000000000000000000"),
        "tee_tcb_info.valid": bytes.fromhex("ff01030000000000"),
        "tee_tcb_info.tee_tcb_svn": bytes.fromhex("05010300000000000000000000000000"),
        # Synthetic: no real TDX module has this measurement.
        "tee_tcb_info.mrseam": hashlib.sha384(b"tdxfs simulated TDX module 1.5.05").digest(),
        "tee_tcb_info.mrsignerseam": ZERO48,  # zero for Intel's own module
        "tee_tcb_info.attributes": bytes(8),
        "tee_tcb_info.tee_tcb_svn2": bytes.fromhex("05010300000000000000000000000000"),
        "rtmr0": boot["rtmr0"],
        "rtmr1": boot["rtmr1"],
        "rtmr2": boot["rtmr2"],
        "rtmr3": boot["rtmr3"],
        "pcesvn": _LATER_FIELD_DEFAULTS["pcesvn"],
    }


@dataclass(frozen=True)
class TdProfile:
    fields: Mapping[str, bytes]
    boot_events: Tuple[ev.Event, ...] = ()

    def __getitem__(self, name: str) -> bytes:
        return self.fields[name]

    def boot_rtmrs(self) -> Tuple[bytes, ...]:
        return tuple(self.fields[f"rtmr{i}"] for i in range(RTMR_COUNT))

    def unreproducible(self) -> List[str]:
        """Registers whose profile value the boot events do not give (set explicitly)."""
        chains = ev.replay(self.boot_events)
        return [name for name in REGISTERS if self.fields[name] != chains[name]]

    def notices(self) -> List[str]:
        """What the mount log should say about this profile (one line each)."""
        return [f"profile sets {name} without boot events that produce it: the event log cannot "
                f"reproduce {name} (replaying the log gives it only relative to its profile value)"
                for name in self.unreproducible()]

    @property
    def pcesvn(self) -> int:
        return int.from_bytes(self.fields["pcesvn"], "little")

    def digest(self) -> str:
        """Identifies the TD a state directory belongs to."""
        h = hashlib.sha256()
        for name in FIELD_SIZES:
            if _LATER_FIELD_DEFAULTS.get(name) == self.fields[name]:
                continue
            h.update(name.encode() + b"=" + self.fields[name] + b";")
        if tuple(self.boot_events) != derived_default_events(self.fields):
            h.update(b"boot_events=")
            for e in self.boot_events:
                h.update(struct.pack("<III", e.mr, e.event_type, len(e.data)) + e.digest + e.data)
            h.update(b";")
        return h.hexdigest()

    def as_toml(self) -> str:
        top = [f'{n} = "{v.hex()}"' for n, v in self.fields.items() if "." not in n and n != "pcesvn"]
        top.append(f"pcesvn = {self.pcesvn}")  # an SVN reads better as a number
        tcb = [f'{n.split(".", 1)[1]} = "{v.hex()}"' for n, v in self.fields.items() if "." in n]
        events: List[str] = []
        for e in self.boot_events:
            events += ["", "[[boot_event]]", f'register = "{e.register}"',
                       f'type = "{ev.event_type_name(e.event_type)}"']
            if e.data and all(0x20 <= b < 0x7F for b in e.data):
                events.append(f"data = {json.dumps(e.data.decode('ascii'))}")
            elif e.data:
                events.append(f'data_hex = "{e.data.hex()}"')
            if not e.data or e.digest != hashlib.sha384(e.data).digest():
                events.append(f'digest = "{e.digest.hex()}"')
        return "\n".join(top + ["", "[tee_tcb_info]"] + tcb + events) + "\n"


def default_profile() -> TdProfile:
    return TdProfile(_default_fields(), _DEFAULT_EVENTS)


def profile_or_default(path: Optional[str]) -> TdProfile:
    """``--profile FILE`` as every front end reads it: the profile in FILE, or the embedded
    default when none is given."""
    return load_profile(path) if path else default_profile()


def _parse_value(name: str, value) -> bytes:
    size = FIELD_SIZES[name]
    if isinstance(value, bool):
        raise ConfigError(f"profile field '{name}': expected hex of {size} bytes, got a boolean")
    if isinstance(value, int):
        if name not in INTEGER_FIELDS:
            raise ConfigError(f"profile field '{name}': expected hex of {size} bytes, got an integer")
        if not 0 <= value < 1 << (8 * size):
            raise ConfigError(f"profile field '{name}': integer out of range for {size} bytes")
        return value.to_bytes(size, "little")
    if not isinstance(value, str):
        raise ConfigError(f"profile field '{name}': expected a hex string")
    text = value.strip().lower().removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"profile field '{name}': not valid hex") from None
    if len(raw) != size:
        raise ConfigError(f"profile field '{name}': expected {size} bytes ({2 * size} hex chars), got {len(raw)}")
    return raw


def _flatten(doc: Mapping) -> Dict[str, object]:
    """Nested tables as dotted names, depth first in document order. Iterative: TOML's dotted
    keys (``a.a.a… = 1``) nest a document thousands deep without any recursion in tomllib."""
    flat: Dict[str, object] = {}
    stack = [("", iter(doc.items()))]
    while stack:
        prefix, items = stack[-1]
        for key, value in items:
            name = prefix + key
            if isinstance(value, dict):
                stack.append((name + ".", iter(value.items())))
                break
            flat[name] = value
        else:
            stack.pop()
    return flat


def _shown(name: str, limit: int = 64) -> str:
    """A user's key for a one-line message: escaped (newlines, non-printables) and cut short."""
    text = printable(name)
    return text if len(text) <= limit else text[:limit] + "…"


_EVENT_KEYS = ("register", "type", "data", "data_hex", "digest")


def _parse_boot_event(number: int, table) -> ev.Event:
    where = f"profile boot_event {number}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table ([[boot_event]])")
    unknown = sorted(set(table) - set(_EVENT_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{_shown(unknown[0])}' (known: {', '.join(_EVENT_KEYS)})")
    reg = table.get("register")
    if isinstance(reg, int) and not isinstance(reg, bool) and 0 <= reg < RTMR_COUNT:
        mr = reg + 1
    elif isinstance(reg, str) and reg.strip().lower() in REGISTERS:
        mr = REGISTERS.index(reg.strip().lower())
    else:
        raise ConfigError(f"{where}: register must be \"mrtd\", \"rtmr0\"..\"rtmr3\" or 0..3, got {reg!r}")
    etype = table.get("type", ev.RUNTIME_EVENT_TYPE)
    try:
        if isinstance(etype, bool):
            raise InvalidInput("a boolean")
        etype = etype if isinstance(etype, int) else ev.parse_event_type(etype)
        if not 0 <= etype <= 0xFFFFFFFF:
            raise InvalidInput(f"{etype} out of range")
    except InvalidInput as exc:
        raise ConfigError(f"{where}: bad type: {exc}") from None
    if etype == ev.EV_NO_ACTION:
        raise ConfigError(f"{where}: EV_NO_ACTION events are never extended; not a boot measurement")
    if "data" in table and "data_hex" in table:
        raise ConfigError(f"{where}: give data or data_hex, not both")
    data = b""
    if "data" in table:
        if not isinstance(table["data"], str):
            raise ConfigError(f"{where}: data must be a string (use data_hex for bytes)")
        data = table["data"].encode()
    elif "data_hex" in table:
        data = _hex(table["data_hex"], f"{where}: data_hex")
    if len(data) > ev.MAX_EVENT_DATA:
        raise ConfigError(f"{where}: event data over {ev.MAX_EVENT_DATA} bytes")
    if "digest" in table:
        digest = _hex(table["digest"], f"{where}: digest")
        if len(digest) != MEASUREMENT_SIZE:
            raise ConfigError(f"{where}: digest must be {MEASUREMENT_SIZE} bytes ({2 * MEASUREMENT_SIZE} hex chars)")
    elif "data" in table or "data_hex" in table:
        digest = hashlib.sha384(data).digest()
    else:
        raise ConfigError(f"{where}: needs data, data_hex or digest")
    return ev.Event(mr, etype, digest, data)


def _hex(value, where: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a hex string")
    try:
        return bytes.fromhex(value.strip().lower().removeprefix("0x"))
    except ValueError:
        raise ConfigError(f"{where}: not valid hex") from None


def parse_boot_events(tables) -> Tuple[ev.Event, ...]:
    if not isinstance(tables, list):
        raise ConfigError("profile boot_event: expected an array of tables ([[boot_event]])")
    return tuple(_parse_boot_event(n + 1, t) for n, t in enumerate(tables))


def profile_from_mapping(doc: Mapping) -> TdProfile:
    fields = _default_fields()
    doc = dict(doc)
    tables = doc.pop("boot_event", None)
    explicit = set()
    for name, value in _flatten(doc).items():
        if name not in FIELD_SIZES:
            raise ConfigError(f"profile field '{_shown(name)}': unknown field (known: {', '.join(FIELD_SIZES)}, "
                              "and [[boot_event]] tables)")
        fields[name] = _parse_value(name, value)
        explicit.add(name)
    if tables is None:
        return TdProfile(fields, derived_default_events(fields))
    events = parse_boot_events(tables)
    chains = ev.replay(events)
    for name in REGISTERS:
        has_events = any(e.register == name for e in events)
        if name not in explicit:
            fields[name] = chains[name]
        elif has_events and fields[name] != chains[name]:
            raise ConfigError(f"profile field '{name}': set to {fields[name].hex()} but its boot events "
                              f"give {chains[name].hex()}; give the events or the value, or make them agree")
    return TdProfile(fields, events)


def load_profile(path: str) -> TdProfile:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"profile {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile {path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes the whole file first, outside its own errors
        raise ConfigError(f"profile {path}: not valid TOML: not UTF-8 (byte {exc.start})") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(f"profile {path}: not valid TOML for a profile: arrays or tables nested too deeply") from None
    return profile_from_mapping(doc)
