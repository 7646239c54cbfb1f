"""``acpi/``: the boot event log where firmware leaves it, as a TDX guest's sysfs shows it.

- ``acpi/CCEL``: the ACPI CCEL table (``/sys/firmware/acpi/tables/CCEL``): header with
  signature ``CCEL``, length, checksum, CC type TDX, log area minimum length (LAML) and
  start address. Its LAML grows as runtime extends are logged.
- ``acpi/data/CCEL``: the log area itself (``/sys/firmware/acpi/tables/data/CCEL``), LAML
  bytes in the TCG crypto-agile format: the Spec ID header, one TCG_PCR_EVENT2 per RTMR
  event (MR index = RTMR index + 1), 0xFF to the end of the area.

Both are rows of raw bytes, mode 0400 as the kernel makes them, over ``td.event_log``;
st_size is what a whole read returns at that moment. Reads are snapshots
(``SnapshotHandle``): a read at offset 0, or the first read of an open file, takes one;
later offsets continue it, so a reader in pieces never sees a log torn by a concurrent
extend.
"""

from typing import Callable

from tdxfs.files.nodes import Directory, File
from tdxfs.model.eventlog import EventLog

ACPI_TABLE_MODE = 0o400  # drivers/acpi/sysfs.c: tables and their data are root-readable only


def acpi_row(name: str, content: Callable[[], bytes]) -> File:
    return File(name, ACPI_TABLE_MODE, lambda: len(content()), show=content, kind="acpi")


def acpi_dir(log: EventLog) -> Directory:
    return Directory("acpi", [acpi_row("CCEL", log.ccel_table), Directory("data", [acpi_row("CCEL", log.ccel_data)])])
