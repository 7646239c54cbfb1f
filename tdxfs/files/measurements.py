"""``measurements/``: the kernel's tsm-mr files for TDX, one row per measurement register.

The ABI (Linux ``Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest``,
``drivers/virt/coco/guest/tsm-mr.c``) as a table, in the kernel's own shape: each register
is a name, a hash (none for the ``NOHASH`` registers) and whether it is writable; the file
name is ``NAME:HASH`` (or ``NAME``), the mode is 0444 plus 0200 when writable, the size is
the digest size. Every file is a ``BinaryFile`` (48 raw bytes, no hex, no newline), served
by the generic binary handlers in ``table.py``:

- a read returns the register's current value (an RTMR read after an extend through any
  interface sees the new value: there is one register, in the model);
- a write of exactly 48 bytes at offset 0 extends the RTMR through ``td.extend`` (so it is
  logged as a bare-digest event of the runtime type, empty event data); shorter → EINVAL;
  longer at offset 0 → clamped to 48 and it succeeds (``write()`` returns 48); offset ≥ 48
  → EFBIG; 0 < offset < 48 → EINVAL; an O_TRUNC open alone writes nothing.

Adding a register is adding a row to ``REGISTERS``; the table is checked at import.
"""

from dataclasses import dataclass
from functools import partial
from typing import Dict, Optional, Tuple

from tdxfs.files.table import BinaryFile, Directory, Node
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


# The TDX guest driver's table (drivers/virt/coco/tdx-guest/tdx-guest.c), in its order.
REGISTERS: Tuple[Register, ...] = (
    Register("mrtd"),
    *(Register(f"rtmr{i}", rtmr=i) for i in range(abi.RTMR_COUNT)),
    Register("mrconfigid", hash=None),
    Register("mrowner", hash=None),
    Register("mrownerconfig", hash=None),
)


def check_table(registers: Tuple[Register, ...]) -> None:
    """What tsm_mr_create_attribute_group refuses: a duplicate name, a bad RTMR index."""
    names = [r.filename for r in registers]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate measurement register names in {names}")
    for r in registers:
        if r.rtmr is not None and not 0 <= r.rtmr < abi.RTMR_COUNT:
            raise ValueError(f"{r.filename}: RTMR index {r.rtmr} out of range")


check_table(REGISTERS)


def measurement_file(td: TrustDomain, reg: Register) -> BinaryFile:
    write = partial(td.extend, reg.rtmr) if reg.rtmr is not None else None
    return BinaryFile(reg.filename, reg.size, read=partial(td.measurement, reg.name), write=write,
                      group="measurements")


def measurements_dir(td: TrustDomain) -> Directory:
    entries: Dict[str, Node] = {reg.filename: measurement_file(td, reg) for reg in REGISTERS}
    return Directory(entries)
