"""``measurements/``: the kernel's tsm-mr files for TDX, one row per measurement register.

The ABI (Linux ``Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest``,
``drivers/virt/coco/guest/tsm-mr.c``) as a table, in the kernel's own shape: each register
is a name, a hash (none for the ``NOHASH`` registers) and whether it is writable; the file
name is ``NAME:HASH`` (or ``NAME``), the mode is 0444 plus 0200 when writable, the size is
the digest size. Every file is a row of 48 raw bytes (no hex, no newline), served by the
generic ``BinaryAttributeHandle`` (``nodes.py``):

- a read returns the register's current value (an RTMR read after an extend through any
  interface sees the new value: there is one register, in the model);
- a write of exactly 48 bytes at offset 0 extends the RTMR through ``td.extend`` (so it is
  logged as a bare-digest event of the runtime type, empty event data); shorter → EINVAL;
  longer at offset 0 → clamped to 48 and it succeeds (``write()`` returns 48); offset ≥ 48
  → EFBIG; 0 < offset < 48 → EINVAL; an O_TRUNC open alone writes nothing.

Adding a register is adding a row to ``REGISTERS``; the table is checked when the
directory is built (``check_registers``, then the directory's own check of its rows).
"""

from dataclasses import dataclass
from functools import partial
from typing import Optional, Tuple

from tdxfs.files.nodes import BinaryAttributeHandle, Directory, File, TableError
from tdxfs.model import abi
from tdxfs.model.td import TrustDomain


@dataclass(frozen=True)
class Register:
    name: str  # the model's name (TrustDomain.measurement)
    hash: Optional[str] = "sha384"  # None: TSM_MR_F_NOHASH, the file is named NAME
    rtmr: Optional[int] = None  # writable: extends RTMR[rtmr]
    size: int = abi.MEASUREMENT_SIZE

    @property
    def filename(self) -> str:
        return f"{self.name}:{self.hash}" if self.hash else self.name


DIGEST_SIZES = {"sha384": abi.MEASUREMENT_SIZE}

# The TDX guest driver's table (drivers/virt/coco/tdx-guest/tdx-guest.c), in its order.
REGISTERS: Tuple[Register, ...] = (
    Register("mrtd"),
    *(Register(f"rtmr{i}", rtmr=i) for i in range(abi.RTMR_COUNT)),
    Register("mrconfigid", hash=None),
    Register("mrowner", hash=None),
    Register("mrownerconfig", hash=None),
)


def check_registers(registers: Tuple[Register, ...]) -> None:
    """The register table's own checks (as tsm_mr_create_attribute_group checks its table),
    beyond what every directory checks of its rows (unique names, modes): an RTMR index
    out of range, an extendable register without a hash (an extend is a hash), a size
    that is not the hash's digest size."""
    for r in registers:
        if r.rtmr is not None and not 0 <= r.rtmr < abi.RTMR_COUNT:
            raise TableError(f"{r.filename}: RTMR index {r.rtmr} out of range")
        if r.rtmr is not None and r.hash is None:
            raise TableError(f"{r.filename}: an extendable register needs a hash")
        if r.hash is not None and r.size != DIGEST_SIZES.get(r.hash):
            raise TableError(f"{r.filename}: {r.size} bytes is not a {r.hash} digest")


def measurement_row(td: TrustDomain, reg: Register) -> File:
    writable = reg.rtmr is not None
    return File(reg.filename, 0o644 if writable else 0o444, reg.size, show=partial(td.measurement, reg.name),
                store=partial(td.extend, reg.rtmr) if writable else None, handle=BinaryAttributeHandle,
                kind="measurements")


def measurements_dir(td: TrustDomain, registers: Tuple[Register, ...] = REGISTERS) -> Directory:
    check_registers(registers)
    return Directory("measurements", [measurement_row(td, reg) for reg in registers])
