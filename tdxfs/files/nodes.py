"""What the tree is made of: directories, file rows, and the per-open-file handles.

A file is a row, data only: a name, its permission bits, its size, and the model calls
behind it — ``show`` (what a read returns), ``store`` (what a write does with the bytes
written), ``ioctl`` (a device's commands) — and the handle class that serves each open
file. The generic handles here serve every row; adding a file is adding a row. Nothing
here imports FUSE or the model: the rows are built over the model elsewhere (``rows``,
``measurements``, ``acpi``, ``eventlog``, ``configfs``) and the tree (``tree``) puts
them together.

Every directory checks its table when it is built (``check_table``, as the kernel's
``tsm_mr_create_attribute_group`` checks its registers): a mistake in a table is a
``TableError`` at start-up, never a file that answers wrongly.

Read semantics (``SnapshotHandle``, sysfs-like): a read at offset 0, or the first read of
an open file, takes a fresh snapshot; reads at other offsets continue that snapshot, so
``cat`` and ``dd`` of one fd never see a report torn by a concurrent extend, and a
kept-open fd that rewinds (``pread(fd, n, 0)``) sees the current values.

Write semantics: one whole value per write, at offset 0. A short, long, non-hex or offset
write fails with EINVAL and changes nothing; there is never a partial extend. Variants:
``BinaryAttributeHandle`` (sysfs binary attributes), ``TransactionHandle`` (a value for
one fd only), ``AppendHandle`` (records, ``>>`` too), ``DeviceHandle`` (ioctl only).
"""

import os
import stat
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, Optional, Union

from tdxfs import linuxabi
from tdxfs.errors import AccessDenied, FileTooBig, InvalidInput, NoSuchEntry, NotATty, NotPermitted

NAME_MAX = 255
READ_BITS = 0o444
WRITE_BITS = 0o222


class TableError(ValueError):
    """A table of files that cannot be served as written (a bug, found when the tree is built)."""


# -- handles: the per-open-file state -----------------------------------------------------


class Handle:
    """One open file. Front ends call ``read``, ``write``, ``ioctl``, ``flush`` (at each
    close, where ``commits_on_close``) and ``release`` (at the last close)."""

    # Whether close() must act before it returns (configfs commits an inblob at close):
    # such a file is flushed synchronously; every other file closes without a round trip.
    commits_on_close = False

    def __init__(self, node: "Node"):
        self.node = node

    def read(self, size: int, offset: int) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes, offset: int) -> int:
        raise NotImplementedError

    def release(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def ioctl(self, cmd: int, request: bytes) -> bytes:
        raise NotATty(f"{self.node.name} takes no ioctl (only tdx_guest does)", probe=cmd == linuxabi.TCGETS)


class SnapshotHandle(Handle):
    """A value file: reads are snapshots of ``row.show()``, a write is one whole value for
    ``row.store`` at offset 0. ``O_APPEND`` on a writing fd is refused (a value is whole)."""

    def __init__(self, row: "File", flags: int = os.O_RDONLY):
        if flags & os.O_ACCMODE != os.O_RDONLY and flags & os.O_APPEND:
            raise InvalidInput("O_APPEND: a value is written whole, at offset 0")
        super().__init__(row)
        self._snapshot: Optional[bytes] = None

    def snapshot(self) -> bytes:
        return self.node.show()

    def apply(self, data: bytes) -> None:
        self.node.store(data)

    def read(self, size: int, offset: int) -> bytes:
        if offset == 0 or self._snapshot is None:
            self._snapshot = self.snapshot()
        return self._snapshot[offset : offset + size]

    def write(self, data: bytes, offset: int) -> int:
        if offset != 0:
            raise InvalidInput(f"write at offset {offset}: a value is written whole, at offset 0")
        self.apply(data)
        self._snapshot = None
        return len(data)


class TransactionHandle(SnapshotHandle):
    """A value for this fd only (``tdreport``): on an O_RDWR fd a write goes through
    ``row.store``, which parses it and returns the fd's own argument to ``row.show``;
    nothing shared changes, so write-then-read on one fd is a transaction no other client
    can mix. A write-only fd would set a value nobody reads: refused."""

    def __init__(self, row: "File", flags: int):
        if flags & os.O_ACCMODE == os.O_WRONLY:
            raise InvalidInput(f"{row.name} takes a value only on an O_RDWR fd (a one-fd transaction), "
                               "for that fd's own reads")
        super().__init__(row, flags)
        self._argument: Optional[bytes] = None  # None: show() of the shared state

    def snapshot(self) -> bytes:
        return self.node.show() if self._argument is None else self.node.show(self._argument)

    def apply(self, data: bytes) -> None:
        self._argument = self.node.store(data)


class AppendHandle(SnapshotHandle):
    """Records (``eventlog``): one per write, at offset 0, or at any offset on an O_APPEND
    fd (``>>``), where the kernel passes the file's end."""

    def __init__(self, row: "File", flags: int):
        super().__init__(row, flags & ~os.O_APPEND)
        self._append = bool(flags & os.O_APPEND)

    def write(self, data: bytes, offset: int) -> int:
        return super().write(data, 0 if self._append else offset)


class BinaryAttributeHandle(SnapshotHandle):
    """A sysfs binary attribute (``sysfs_kf_bin_write`` then tsm-mr's ``tm_digest_write``):
    at or past the size EFBIG; the count is clamped to what fits; the clamped value must
    then be the whole size at offset 0, else EINVAL. Returns the clamped count, so a
    49-byte ``echo`` extends with the first 48 and fails on its 49th byte with EFBIG."""

    def write(self, data: bytes, offset: int) -> int:
        row = self.node
        size = row.size
        if offset >= size:
            raise FileTooBig(f"{row.name} is {size} bytes: a write at offset {offset} is past its end")
        count = min(len(data), size - offset)
        if offset != 0 or count != size:
            raise InvalidInput(f"{row.name} takes {size} raw bytes at offset 0 (no partial writes), "
                               f"got {count} at offset {offset}")
        row.store(bytes(data[:size]))
        self._snapshot = None
        return count


class DeviceHandle(Handle):
    """A misc device (``tdx_guest``): ioctl only, through ``row.ioctl``; read() and write()
    are EINVAL, as on a device without read/write operations."""

    def __init__(self, row: "File", flags: int):
        super().__init__(row)

    def read(self, size: int, offset: int) -> bytes:
        raise InvalidInput(f"{self.node.name} has no read(): use ioctl (TDX_CMD_GET_REPORT0)")

    def write(self, data: bytes, offset: int) -> int:
        raise InvalidInput(f"{self.node.name} has no write(): use ioctl (TDX_CMD_EXTEND_RTMR)")

    def ioctl(self, cmd: int, request: bytes) -> bytes:
        return self.node.ioctl(cmd, request)


# -- nodes -------------------------------------------------------------------------------------


class Node:
    name: str
    mode = 0
    kind = "dir"  # the class of path a request is counted under in /.stats

    def attrs(self) -> Dict[str, int]:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class File(Node):
    """A row. ``show()``: what a read returns (a snapshot is taken of it); ``store(data)``:
    what a write does with the bytes written (parse, then a model call); ``ioctl(cmd,
    request)``: a device's commands; ``handle(row, flags)``: the open file's handle.
    ``perm``: the permission bits (the table check holds them to what the row can do).
    ``size``: st_size, what a whole read returns — a number, or a function for a value
    whose size changes. ``kind``: what /.stats counts the row's requests under (by default
    its name without trailing digits: ``rtmr0``..``rtmr3`` are all ``rtmr``)."""

    name: str
    perm: int
    size: Union[int, Callable[[], int]]
    show: Optional[Callable[..., bytes]] = None
    store: Optional[Callable[[bytes], object]] = None
    ioctl: Optional[Callable[[int, bytes], bytes]] = None
    handle: Callable[["File", int], Handle] = SnapshotHandle
    kind: str = ""

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", self.name.rstrip("0123456789"))

    @property
    def mode(self) -> int:
        return stat.S_IFREG | self.perm

    def open(self, flags: int) -> Handle:
        """The mode decides, for root too; then the handle (which may refuse the flags)."""
        accmode = flags & os.O_ACCMODE
        if accmode in (os.O_WRONLY, os.O_RDWR) and not self.perm & WRITE_BITS:
            raise AccessDenied(f"{self.name} is read-only")
        if accmode in (os.O_RDONLY, os.O_RDWR) and not self.perm & READ_BITS:
            raise AccessDenied(f"{self.name} is write-only")
        return self.handle(self, flags)

    def truncate(self, length: int) -> None:
        # libfuse2 turns `echo > file` (O_TRUNC) into open + truncate(0): a no-op here.
        if not self.perm & WRITE_BITS:
            raise AccessDenied(f"{self.name} is read-only")
        if self.store is None:
            raise InvalidInput(f"{self.name} is a device node: it takes ioctls, not data")
        if length != 0:
            raise InvalidInput(f"truncate to {length}: only truncate to 0 (a shell redirect) is accepted")

    def attrs(self) -> Dict[str, int]:
        size = self.size() if callable(self.size) else self.size
        return {"st_mode": self.mode, "st_nlink": 1, "st_size": size}


class Directory(Node):
    """A directory whose set of entries is fixed: its table is checked when it is built."""

    mode = stat.S_IFDIR | 0o755

    def __init__(self, name: str, children: Iterable[Node] = ()):
        self.name = name
        self.entries: Dict[str, Node] = check_table(name, children)

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

    def make_dir(self, name: str) -> None:
        raise NotPermitted("entries cannot be created here")

    def remove_dir(self, name: str) -> None:
        raise NotPermitted("entries cannot be removed here")

    def refuse(self, what: str) -> None:
        raise NotPermitted(f"{what} is not supported: the set of files is fixed")


# -- the table check -----------------------------------------------------------------------------


def check_table(where: str, children: Iterable[Node]) -> Dict[str, Node]:
    """One directory's entries by name, or a TableError naming the first mistake: a name
    that is no single path component, a name taken twice, and for each file row what
    ``check_row`` refuses."""
    entries: Dict[str, Node] = {}
    for node in children:
        name = node.name
        if not is_file_name(name):
            raise TableError(f"{where or '/'}: {name!r} is not a file name")
        if name in entries:
            raise TableError(f"{where or '/'}: two entries named {name!r}")
        if isinstance(node, File):
            check_row(node)
        entries[name] = node
    return entries


def is_file_name(name: str) -> bool:
    """One path component: not empty, not ``.`` or ``..``, no ``/`` or NUL, at most NAME_MAX bytes."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name \
        and len(os.fsencode(name)) <= NAME_MAX


def check_row(row: File) -> None:
    """A row's mode must say what it does: write bits exactly where a write does something
    (``store``, or a device's ``ioctl``), read bits exactly where a read shows something;
    a device has neither ``show`` nor ``store``; every file has a size."""
    def bad(reason: str) -> TableError:
        mode = f"{row.perm:04o}" if isinstance(row.perm, int) else repr(row.perm)
        return TableError(f"{row.name} (mode {mode}): {reason}")

    if not isinstance(row.perm, int) or row.perm & ~0o777:
        raise bad("the permission bits are not 0..0777")
    if row.ioctl is not None and (row.show is not None or row.store is not None):
        raise bad("a device takes ioctls only: no show, no store")
    writes = row.store is not None or row.ioctl is not None
    reads = row.show is not None or row.ioctl is not None
    if writes and not row.perm & WRITE_BITS:
        raise bad("it takes writes, but no write bit lets anyone open it for writing")
    if row.perm & WRITE_BITS and not writes:
        raise bad("a read-only value with a write bit: a writer would open it and fail")
    if reads and not row.perm & READ_BITS:
        raise bad("it has a value to read, but no read bit lets anyone open it for reading")
    if row.perm & READ_BITS and not reads:
        raise bad("a read bit without a value to show")
    size = row.size
    if not (callable(size) or (isinstance(size, int) and not isinstance(size, bool) and size >= 0)):
        raise bad(f"no size: {size!r} is neither a number of bytes nor a function giving one")
