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
"""

import hashlib
import tomllib
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

from tdxfs.errors import ConfigError
from tdxfs.model.abi import MEASUREMENT_SIZE, RTMR_COUNT

ZERO48 = bytes(MEASUREMENT_SIZE)

SEPT_VE_DISABLE = 1 << 28
DEBUG = 1 << 0

# (register, event description). Register "mrtd" or an RTMR index. The conventions follow
# TDVF/edk2: firmware volumes into MRTD, firmware configuration into RTMR0, the kernel
# into RTMR1, command line and initrd into RTMR2.
BOOT_EVENTS: Tuple[Tuple[object, str], ...] = (
    ("mrtd", "tdxfs synthetic boot: TDVF boot firmware volume (BFV)"),
    ("mrtd", "tdxfs synthetic boot: TDVF TD HOB and TEMP_MEM pages"),
    (0, "tdxfs synthetic boot: TD HOB"),
    (0, "tdxfs synthetic boot: configuration firmware volume (CFV)"),
    (0, "tdxfs synthetic boot: EV_SEPARATOR"),
    (1, "tdxfs synthetic boot: EFI boot services application (vmlinuz)"),
    (1, "tdxfs synthetic boot: EV_SEPARATOR"),
    (2, "tdxfs synthetic boot: kernel command line console=hvc0 root=/dev/vda1 ro"),
    (2, "tdxfs synthetic boot: initrd"),
)


def extend_digest(register: bytes, data48: bytes) -> bytes:
    """SHA-384(register || data): the TDG.MR.RTMR.EXTEND rule."""
    return hashlib.sha384(register + data48).digest()


def synthetic_boot() -> Dict[str, bytes]:
    regs = {"mrtd": ZERO48, **{f"rtmr{i}": ZERO48 for i in range(RTMR_COUNT)}}
    for target, event in BOOT_EVENTS:
        name = target if isinstance(target, str) else f"rtmr{target}"
        regs[name] = extend_digest(regs[name], hashlib.sha384(event.encode()).digest())
    return regs


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

    def __getitem__(self, name: str) -> bytes:
        return self.fields[name]

    def boot_rtmrs(self) -> Tuple[bytes, ...]:
        return tuple(self.fields[f"rtmr{i}"] for i in range(RTMR_COUNT))

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
        return h.hexdigest()

    def as_toml(self) -> str:
        top = [f'{n} = "{v.hex()}"' for n, v in self.fields.items() if "." not in n and n != "pcesvn"]
        top.append(f"pcesvn = {self.pcesvn}")  # an SVN reads better as a number
        tcb = [f'{n.split(".", 1)[1]} = "{v.hex()}"' for n, v in self.fields.items() if "." in n]
        return "\n".join(top + ["", "[tee_tcb_info]"] + tcb) + "\n"


def default_profile() -> TdProfile:
    return TdProfile(_default_fields())


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


def _flatten(doc: Mapping, prefix: str = "") -> Dict[str, object]:
    flat = {}
    for key, value in doc.items():
        name = prefix + key
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def profile_from_mapping(doc: Mapping) -> TdProfile:
    fields = _default_fields()
    for name, value in _flatten(doc).items():
        if name not in FIELD_SIZES:
            raise ConfigError(f"profile field '{name}': unknown field (known: {', '.join(FIELD_SIZES)})")
        fields[name] = _parse_value(name, value)
    return TdProfile(fields)


def load_profile(path: str) -> TdProfile:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"profile {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile {path}: not valid TOML: {exc}") from None
    return profile_from_mapping(doc)
