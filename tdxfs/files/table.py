"""Files over the model: the tree, its rows, and the generic handlers that serve them.

Every file is a row: a name, a mode derived from what it can do, and the model calls
behind it. One read handler and one write handler (``SnapshotHandle``) serve every row;
adding a register is adding a row. Nothing here imports FUSE: the adapter maps a path
and an operation onto :class:`Tree` and turns a raised ``TdxfsError`` into its errno.

Read semantics (sysfs-like): a read at offset 0, or the first read of an open file,
takes a fresh snapshot; reads at other offsets continue that snapshot, so ``cat`` and
``dd`` of one fd never see a report torn by a concurrent extend, and a kept-open fd
that rewinds (``pread(fd, n, 0)``) sees the current values.

Write semantics: one whole value per write, at offset 0. A short, long, non-hex or
offset write fails with EINVAL and changes nothing; there is never a partial extend.

Binary rows (``BinaryFile``: the tsm-mr measurement files, the ACPI CCEL views) serve raw
bytes and follow sysfs binary attributes (``fs/sysfs/file.c``): a write at or past the
attribute's size is EFBIG, a longer write is clamped to the size (``write()`` returns the
clamped count), and then the value must be whole at offset 0 (EINVAL otherwise).
"""

import os
import stat
import string
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Iterator, Optional, Tuple

from tdxfs import linuxabi
from tdxfs.errors import (AccessDenied, FileTooBig, InvalidInput, IsADirectory, NoSuchEntry, NotATty, NotPermitted,
                          TdxfsError)
from tdxfs.files import device
from tdxfs.files.stats import RequestCounter
from tdxfs.model import abi
from tdxfs.model.td import TrustDomain

_HEX = frozenset(string.hexdigits.encode())


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


# -- handles: the per-open-file state -----------------------------------------------


class SnapshotHandle:
    """One open file: renders a snapshot for reads, applies whole values on writes."""

    # Whether close() must act before it returns (configfs commits an inblob at close):
    # such a file is flushed synchronously; every other file closes without a round trip.
    commits_on_close = False

    def __init__(self, node: "File"):
        self.node = node
        self._snapshot: Optional[bytes] = None

    def render(self) -> bytes:
        return self.node.render()

    def accept(self, data: bytes) -> None:
        self.node.accept(data)

    def read(self, size: int, offset: int) -> bytes:
        if offset == 0 or self._snapshot is None:
            self._snapshot = self.render()
        return self._snapshot[offset : offset + size]

    def write(self, data: bytes, offset: int) -> int:
        if offset != 0:
            raise InvalidInput(f"write at offset {offset}: a value is written whole, at offset 0")
        self.accept(data)
        self._snapshot = None
        return len(data)

    def release(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def ioctl(self, cmd: int, request: bytes) -> bytes:
        raise NotATty(f"{self.node.name} takes no ioctl (only tdx_guest does)", probe=cmd == linuxabi.TCGETS)


class ReportHandle(SnapshotHandle):
    """``tdreport``: reads build a TDREPORT; on an O_RDWR fd, a write sets REPORTDATA for
    this fd only, so write-then-read on one fd is a transaction no other client can mix."""

    def __init__(self, node: "ReportFile", td: TrustDomain):
        super().__init__(node)
        self._td = td
        self._reportdata: Optional[bytes] = None  # None: use the shared REPORTDATA

    def render(self) -> bytes:
        return self._td.report(self._reportdata)

    def accept(self, data: bytes) -> None:
        self._reportdata = parse_value(data, abi.REPORTDATA_SIZE, "tdreport (per-fd REPORTDATA)")


class BinaryHandle(SnapshotHandle):
    """A sysfs binary attribute (``sysfs_kf_bin_write`` then tsm-mr's ``tm_digest_write``):
    at or past the size EFBIG; the count is clamped to what fits; the clamped value must
    then be the whole size at offset 0, else EINVAL. Returns the clamped count, so a
    49-byte ``echo`` extends with the first 48 and fails on its 49th byte with EFBIG."""

    def write(self, data: bytes, offset: int) -> int:
        node = self.node
        size = node.size
        if offset >= size:
            raise FileTooBig(f"{node.name} is {size} bytes: a write at offset {offset} is past its end")
        count = min(len(data), size - offset)
        if offset != 0 or count != size:
            raise InvalidInput(f"{node.name} takes {size} raw bytes at offset 0 (no partial writes), "
                               f"got {count} at offset {offset}")
        node.write(bytes(data[:size]))
        self._snapshot = None
        return count


class DeviceHandle(SnapshotHandle):
    """``tdx_guest``: a misc device with ioctl only; read() and write() are EINVAL."""

    def __init__(self, node: "DeviceFile"):
        super().__init__(node)

    def read(self, size: int, offset: int) -> bytes:
        raise InvalidInput("tdx_guest has no read(): use ioctl (TDX_CMD_GET_REPORT0)")

    def write(self, data: bytes, offset: int) -> int:
        raise InvalidInput("tdx_guest has no write(): use ioctl (TDX_CMD_EXTEND_RTMR)")

    def ioctl(self, cmd: int, request: bytes) -> bytes:
        return device.serve(self.node.td, cmd, request)


# -- nodes -----------------------------------------------------------------------------


class Node:
    mode = 0
    kind = "dir"  # the class of path a request is counted under in /.stats

    def attrs(self) -> Dict[str, int]:
        raise NotImplementedError


@dataclass
class File(Node):
    """A row. ``read``: current raw value; ``write``: applies a parsed raw value."""

    name: str
    size: int  # st_size: what a whole read returns
    read: Optional[Callable[[], bytes]] = None
    write: Optional[Callable[[bytes], object]] = None
    raw_size: int = 0  # the raw value's size; writes accept raw or hex of it

    @property
    def kind(self) -> str:
        return self.name.rstrip("0123456789")

    @property
    def writable(self) -> bool:
        return self.write is not None

    @property
    def mode(self) -> int:
        perm = (0o444 if self.read else 0) | (0o200 if self.writable else 0)
        return stat.S_IFREG | perm

    def render(self) -> bytes:
        return hex_line(self.read())

    def new_handle(self) -> SnapshotHandle:
        return SnapshotHandle(self)

    def accept(self, data: bytes) -> None:
        self.write(parse_value(data, self.raw_size, self.name))

    def open(self, flags: int) -> SnapshotHandle:
        accmode = flags & os.O_ACCMODE
        if accmode in (os.O_WRONLY, os.O_RDWR) and not self.writable:
            raise AccessDenied(f"{self.name} is read-only")
        if accmode in (os.O_RDONLY, os.O_RDWR) and not self.read:
            raise AccessDenied(f"{self.name} is write-only")
        if accmode != os.O_RDONLY and flags & os.O_APPEND:
            raise InvalidInput("O_APPEND: a value is written whole, at offset 0")
        return self.new_handle()

    def truncate(self, length: int) -> None:
        # libfuse2 turns `echo > file` (O_TRUNC) into open + truncate(0): a no-op here.
        if not self.writable:
            raise AccessDenied(f"{self.name} is read-only")
        if length != 0:
            raise InvalidInput(f"truncate to {length}: only truncate to 0 (a shell redirect) is accepted")

    def attrs(self) -> Dict[str, int]:
        return {"st_mode": self.mode, "st_nlink": 1, "st_size": self.size}


@dataclass
class BinaryFile(File):
    """A sysfs binary attribute: raw bytes (no hex, no newline); writes as ``BinaryHandle``.

    ``perm`` fixes the permission bits where the kernel's differ from what the row can do
    (ACPI tables are 0400); ``size_of`` gives st_size for a value whose size changes (the
    event log area grows), else ``size`` is fixed. ``kind`` names the row's class in /.stats."""

    perm: Optional[int] = None
    size_of: Optional[Callable[[], int]] = None
    group: str = ""

    @property
    def kind(self) -> str:
        return self.group or super().kind

    @property
    def mode(self) -> int:
        return super().mode if self.perm is None else stat.S_IFREG | self.perm

    def render(self) -> bytes:
        return self.read()

    def new_handle(self) -> SnapshotHandle:
        return BinaryHandle(self)

    def attrs(self) -> Dict[str, int]:
        attrs = super().attrs()
        if self.size_of is not None:
            attrs["st_size"] = self.size_of()
        return attrs


@dataclass
class ReportFile(File):
    """The binary TDREPORT; writable only as the per-fd transaction (see ReportHandle)."""

    td: Optional[TrustDomain] = None

    @property
    def writable(self) -> bool:
        return True

    def open(self, flags: int) -> SnapshotHandle:
        # A write-only fd could set a REPORTDATA nobody ever reads: say so instead.
        if flags & os.O_ACCMODE == os.O_WRONLY:
            raise InvalidInput("tdreport takes REPORTDATA only on an O_RDWR fd (a one-fd transaction); "
                               "write the shared value to reportdata")
        return super().open(flags)

    def new_handle(self) -> SnapshotHandle:
        return ReportHandle(self, self.td)


@dataclass
class DeviceFile(File):
    """The ioctl node; a regular file to the kernel (clients do not check), mode 0600 as
    udev gives /dev/tdx_guest. Opening it never checks more than the kernel's modes."""

    td: Optional[TrustDomain] = None

    @property
    def mode(self) -> int:
        return stat.S_IFREG | 0o600

    def open(self, flags: int) -> SnapshotHandle:
        return DeviceHandle(self)

    def truncate(self, length: int) -> None:
        raise InvalidInput("tdx_guest is a device node")


class Directory(Node):
    mode = stat.S_IFDIR | 0o755

    def __init__(self, entries: Dict[str, Node]):
        self.entries = entries

    def child(self, name: str) -> Node:
        try:
            return self.entries[name]
        except KeyError:
            raise NoSuchEntry(f"no entry {name!r}", probe=True) from None

    def names(self) -> Iterator[str]:
        return iter(self.entries)

    def attrs(self) -> Dict[str, int]:
        subdirs = sum(isinstance(n, Directory) for n in self.entries.values())
        return {"st_mode": self.mode, "st_nlink": 2 + subdirs, "st_size": 0}

    # A static directory: the set of entries is fixed.
    def make_dir(self, name: str) -> None:
        raise NotPermitted("entries cannot be created here")

    def remove_dir(self, name: str) -> None:
        raise NotPermitted("entries cannot be removed here")

    def refuse(self, what: str) -> None:
        raise NotPermitted(f"{what} is not supported: the set of files is fixed")


# -- the root table ---------------------------------------------------------------------

STATIC_MEASUREMENTS = ("mrtd", "mrconfigid", "mrowner", "mrownerconfig")
HEX48_SIZE = 2 * abi.MEASUREMENT_SIZE + 1


def root_rows(td: TrustDomain) -> Tuple[File, ...]:
    """The design card's files: sysfs text convention (newline-terminated hex), report binary."""
    return (
        File("reportdata", 2 * abi.REPORTDATA_SIZE + 1, read=lambda: td.reportdata,
             write=td.set_reportdata, raw_size=abi.REPORTDATA_SIZE),
        ReportFile("tdreport", abi.TDREPORT_SIZE, read=td.report, td=td),
        *(File(f"rtmr{i}", HEX48_SIZE, read=partial(td.rtmr, i), write=partial(td.extend, i),
               raw_size=abi.MEASUREMENT_SIZE) for i in range(abi.RTMR_COUNT)),
        *(File(name, HEX48_SIZE, read=partial(td.measurement, name)) for name in STATIC_MEASUREMENTS),
        DeviceFile("tdx_guest", 0, td=td),
    )


class StatsFile(File):
    """``.stats``: request counters as JSON (size 4096 as sysfs reports, the content varies)."""

    def render(self) -> bytes:
        return self.read()


class Tree:
    """Path lookup and the operations a front end maps onto; every refusal is a TdxfsError."""

    def __init__(self, root: Directory, requests: Optional[RequestCounter] = None):
        self.root = root
        self.requests = requests or RequestCounter()

    @classmethod
    def for_td(cls, td: TrustDomain, server: Optional[Dict[str, str]] = None) -> "Tree":
        from tdxfs.files import acpi, configfs, eventlog, measurements  # they build on this module's nodes

        requests = RequestCounter(server)
        rows = (*root_rows(td), eventlog.eventlog_file(td), StatsFile(".stats", 4096, read=requests.render))
        entries: Dict[str, Node] = {row.name: row for row in rows}
        entries["tsm"] = configfs.tsm_tree(td.quote)
        entries["measurements"] = measurements.measurements_dir(td)
        entries["acpi"] = acpi.acpi_dir(td.event_log)
        return cls(Directory(entries), requests)

    def kind(self, path: Optional[str]) -> str:
        """What /.stats counts a request for ``path`` under: the node's kind, else what its
        directory calls an absent name ("missing" unless it says otherwise)."""
        try:
            return self.lookup(path).kind
        except TdxfsError:
            pass
        try:
            parent, _ = self._parent(path)
        except TdxfsError:
            return "missing"
        return getattr(parent, "absent_kind", "missing")

    def lookup(self, path: Optional[str]) -> Node:
        if path is None:  # libfuse's answer for an open file whose directory was removed
            raise NoSuchEntry("the file's directory was removed")
        node: Node = self.root
        for part in filter(None, path.split("/")):
            if not isinstance(node, Directory):
                raise NoSuchEntry(f"{path}: not a directory on the way")
            node = node.child(part)
        return node

    def _parent(self, path: Optional[str]) -> Tuple[Directory, str]:
        if path is None:
            raise NoSuchEntry("the file's directory was removed")
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self.lookup(head)
        if not isinstance(parent, Directory):
            raise NoSuchEntry(f"{head}: not a directory")
        return parent, name

    def _file(self, path: str) -> File:
        node = self.lookup(path)
        if isinstance(node, Directory):
            raise IsADirectory(f"{path} is a directory")
        return node

    def attrs(self, path: str) -> Dict[str, int]:
        return self.lookup(path).attrs()

    def listdir(self, path: str) -> Iterator[str]:
        node = self.lookup(path)
        if not isinstance(node, Directory):
            raise NoSuchEntry(f"{path} is not a directory")
        return node.names()

    def open(self, path: str, flags: int) -> SnapshotHandle:
        return self._file(path).open(flags)

    def truncate(self, path: str, length: int) -> None:
        self._file(path).truncate(length)

    def mkdir(self, path: str) -> None:
        parent, name = self._parent(path)
        parent.make_dir(name)

    def rmdir(self, path: str) -> None:
        parent, name = self._parent(path)
        parent.remove_dir(name)

    def refuse(self, what: str, path: Optional[str] = None) -> None:
        """Creating, removing, renaming, linking, chmod: not part of this interface. The
        directory ``path`` is in answers (configfs answers a create with EACCES)."""
        try:
            parent, _ = self._parent(path)
        except TdxfsError:
            parent = self.root
        parent.refuse(what)
