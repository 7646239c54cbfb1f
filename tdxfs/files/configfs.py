"""configfs-tsm report instances: ``tsm/report/$name/``, served as Linux serves them.

The kernel's behaviour is imitated from its sources (not its code): ``fs/configfs/dir.c``
(mkdir/rmdir, lookup), ``fs/configfs/file.c`` (attribute buffers), ``fs/configfs/inode.c``
(setattr), ``drivers/virt/coco/guest/report.c`` (report state, generation, outblob cache),
``drivers/virt/coco/tdx-guest/tdx-guest.c`` (the TDX provider) and
``Documentation/ABI/testing/configfs-tsm-report``.

The tree: ``tsm/`` (the subsystem) holds only ``report/`` (its default group); ``mkdir
tsm/report/NAME`` makes a report instance holding the four attributes the TDX provider
shows. ``tsm/rtmrs`` does not exist (that design was never merged; clients that find it
switch to it).

  attribute   mode  kind    st_size  semantics
  inblob      0200  binary  0        up to 64 bytes, buffered per fd, committed at close
  outblob     0444  binary  0        the quote for the committed inblob, made on first read
  provider    0444  text    4096     ``tdx_guest\\n``
  generation  0444  text    4096     ``%lu\\n``: commits so far

Directories (mode 0755 each): ``mkdir`` of a taken name is EEXIST; a name over 255 bytes
is ENAMETOOLONG; ``mkdir`` anywhere but ``tsm/report`` is EPERM (an instance is an item,
not a group); ``rmdir`` removes an instance with its files and is EPERM for ``tsm`` and
``tsm/report``; creating a file (``touch``, ``O_CREAT``, and ``mknod`` of a regular file,
which Linux's ``do_mknodat`` turns into a create) is EACCES (``vfs_create``: no ->create);
``mknod`` of a FIFO, socket or device (``mkfifo``), links, renames and unlinks are EPERM.
As in the kernel, there is no cap on instances: some clients leave one behind per quote,
so a long-running agent accumulates hundreds of thousands. ``mkdir`` is refused only when
memory runs out (ENOMEM, the table unchanged). Listings show the newest entry first, as
configfs does.

An idle instance is small (``benchmarks/configfs_instances.py`` measures it): one
``ReportInstance`` with ``__slots__`` and no lock of its own, held in the group's name
table. The instance directory and its four attribute files are views made on lookup (the
libfuse front end is path-based and keeps no node of ours; the kernel transport keeps a
view only while the kernel holds its node id), and the attribute table is shared.

Opening (checked for root too, as configfs does): an fd that may write needs a write mode
bit and a store method, one that may read needs a read bit and a show method, otherwise
EACCES. The attribute table is checked when ``tsm/`` is built (``check_attributes``): the
mode bits match the methods, a text attribute is read-only and a binary one is either
read or written, never both (every TDX attribute is so). An fd therefore only ever reads
or only ever writes, and configfs's ETXTBSY for an fd that switches has no case here.

Binary attribute fds (one buffer per open file, guarded by its own lock):
  - read: the first read takes the blob (an error is the read's errno and the next read
    retries); from then on every read of this fd, at any offset, is served from that
    snapshot. A blob over the attribute's maximum (32 KiB for outblob) is EFBIG.
  - write: the data lands in the fd's buffer at the write's offset; a gap is zero-filled;
    a write ending past the maximum (64 for inblob) is EFBIG and leaves the buffer as it
    was.
  - close: if the fd ever attempted a write (even one refused with EFBIG), the buffer is
    committed, whatever its length, zero included; an fd that never wrote (an O_TRUNC open
    alone) commits nothing. ``release()`` commits (the last close, as configfs does);
    ``flush()`` is the same commit for a front end that sees every close (a later close
    commits again only if the shared fd wrote again). A commit's error (EBUSY, the only
    one) is logged either way; where the commit runs at FLUSH (libfuse3, the kernel
    transport) it is also close()'s error — the fd is closed all the same — while at
    RELEASE (libfuse2, which has no FLUSH here) close() has already returned 0, as it
    always does on configfs, whose release ignores the commit's error.
Text attribute fds: the first read fills the fd's buffer; later reads (a rewind too) are
served from it, so a kept-open ``generation`` fd shows the value it first read.
Truncation (``O_TRUNC``, ``truncate``, ``ftruncate``; ``dd`` without ``conv=notrunc``) of any
attribute succeeds and changes nothing (configfs keeps only the inode size).

A report instance (``report.c``):
  - a commit increments ``generation`` even for unchanged data, stores the bytes, and does
    not touch the cached outblob (a generation mismatch makes it stale). When the write
    count is about to wrap onto the read count without an interim read, the commit is
    refused (EBUSY) — after 2**64 commits.
  - outblob: no inblob (never written, or an empty commit) → EINVAL; a cached quote whose
    read generation matches the write generation is returned; otherwise the quote is made
    from the inblob: TDX needs exactly 64 bytes (EINVAL otherwise); a provider failure is
    the read's errno (DeviceError: EIO); on success it is cached with the generation it
    was made for. The cache is kept compressed against the group's first quote (see
    ``ReportGroup.pack``: ~240 bytes instead of ~5.6 KB) and read back byte for byte.
  - after ``rmdir``, fds still open on the instance's files: a read that needs to fill its
    buffer is ENOENT, a read of an already filled buffer still works, and a close commits
    nothing.

Locking: the report group's lock covers only its name table (mkdir, rmdir, lookups). An
instance's fields are guarded by one lock of a small striped pool (``STATE_LOCKS``, chosen
by the instance's identity), held only to copy or set them, never across quote generation
and never together with another lock. While an instance's quote is being made it holds a
generation lock made for that generation alone (``_generating``; None when idle): a second
reader of the same instance waits on it and then finds the quote cached, so one instance's
quote generation never blocks another's reads, commits or mkdir/rmdir. (The kernel holds
one global rwsem for writing across ``report_new``; reviewers objected to exactly that, so
this model does not.) A commit may land while a quote is being made: the quote is cached
for the generation it was made for, hence is stale at once, as if the commit had come
right after it.

Known differences, all from serving through FUSE: ``lseek`` on a binary attribute succeeds
here (configfs: ESPIPE; ``pread``/``pwrite`` at offsets work on both, so ``dd seek=N``
works here but fails on configfs); a zero-length ``write()`` is answered 0 by the FUSE
kernel module without reaching the server (configfs: EFAULT, and the fd then commits an
empty inblob at close); ``chmod``/``chown`` are EPERM (configfs stores them); ``truncate``
does not change ``st_size``; ``sendfile``/``splice`` (EINVAL on configfs, which has no
splice) go through the kernel's page cache, sized by ``st_size``: 0 bytes from ``outblob``.
Extended attributes answer as configfs's (EOPNOTSUPP; ``listxattr`` empty, as with no LSM),
``utimensat`` sets the times (kept by the front end, as configfs keeps them on the inode).
And the commit's timing: configfs commits inside close(). FUSE's FLUSH is sent from inside
close(), and the front ends that have it (libfuse3, the kernel transport) commit there, so
the commit is done when close() returns, and its error is close()'s (see above). libfuse2
has no FOPEN_NOFLUSH, so there the commit waits for RELEASE, which FUSE sends after close()
has returned, without waiting for it: a single-threaded server still handles it before the
client's next request as long as fewer than ``max_background`` (12 by default) such
background requests are in flight; with more concurrent clients, or a multithreaded
server, a client may read generation or outblob before its own commit.
"""

import os
import stat
import threading
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional

from tdxfs import linuxabi
from tdxfs.errors import (AccessDenied, AlreadyExists, Busy, FileTooBig, InvalidInput, NameTooLong, NoSuchEntry,
                          NotATty, NotPermitted, OutOfMemory)
from tdxfs.files.nodes import NAME_MAX, READ_BITS, WRITE_BITS, Directory, Handle, Node, TableError, is_file_name
from tdxfs.model import abi

PROVIDER = b"tdx_guest"
INBLOB_MAX = 64  # TSM_REPORT_INBLOB_MAX
OUTBLOB_MAX = 32 * 1024  # TSM_REPORT_OUTBLOB_MAX (SZ_32K)
TEXT_ST_SIZE = 4096  # configfs gives text attributes PAGE_SIZE, binary ones 0
_ULONG = 1 << 64  # the generation counters are unsigned long
_RAW_DEFLATE = -15  # zlib wbits: no header or checksum (the cached quote never leaves the process)

QuoteFn = Callable[[bytes], bytes]  # REPORTDATA (64 bytes) -> quote; TrustDomain.quote


STATE_LOCKS = tuple(threading.Lock() for _ in range(64))  # striped: instances share them


class ReportInstance:
    """One report item's state: inblob, the two generations, the cached outblob.

    Compact on purpose (a leaked instance costs only this object and its name): slots, no
    lock of its own (its fields are guarded by a lock of ``STATE_LOCKS``), and a generation
    lock that exists only while a quote is being made."""

    __slots__ = ("name", "_group", "_inblob", "_write_generation", "_read_generation", "_outblob",
                 "_generating", "_removed")

    def __init__(self, name: str, group: "ReportGroup"):
        self.name = name
        self._group = group  # makes quotes, and packs the cached one
        # empty: nothing to quote (never written, or an empty commit); None: quoted, and the
        # cached outblob (which carries it as REPORTDATA) stands for it until the next commit
        self._inblob: Optional[bytes] = b""
        self._write_generation = 0
        self._read_generation = 0
        self._outblob: Optional[bytes] = None  # the cached quote, packed (ReportGroup.pack)
        self._generating: Optional[threading.Lock] = None  # held while this instance's quote is made
        self._removed = False

    @property
    def _state(self) -> threading.Lock:
        """The striped lock for this instance's fields; never held across quote generation."""
        return STATE_LOCKS[(id(self) >> 4) % len(STATE_LOCKS)]

    def _check_live(self) -> None:
        if self._removed:
            raise NoSuchEntry(f"report instance {self.name!r} was removed (rmdir)")

    def remove(self) -> None:
        with self._state:
            self._removed = True

    # -- attributes' show and store -------------------------------------------------------

    def generation(self) -> bytes:
        with self._state:
            self._check_live()
            return b"%d\n" % self._write_generation

    def provider(self) -> bytes:
        with self._state:
            self._check_live()
        return PROVIDER + b"\n"

    def commit_inblob(self, data: bytes) -> None:
        """An inblob fd's buffer at close. After rmdir nothing is committed (and nothing said)."""
        with self._state:
            if self._removed:
                return
            if self._write_generation == (self._read_generation - 1) % _ULONG:
                raise Busy(f"{self.name}: 2**64 - 1 commits without reading outblob; read it first")
            self._write_generation = (self._write_generation + 1) % _ULONG
            self._inblob = bytes(data)

    def outblob(self) -> bytes:
        state = self._state
        while True:
            with state:
                packed, busy = self._cached_outblob(), self._generating
                if packed is None and busy is None:  # ours to make: take its lock before letting go
                    busy = self._generating = threading.Lock()
                    busy.acquire()
                    inblob, generation = self._inblob, self._write_generation
                    self._outblob = None
                    break
            if packed is not None:
                return self._group.unpack(packed)  # outside the lock: packed bytes never change
            with busy:  # another reader is making it: wait, then look at the cache again
                pass
        try:
            if len(inblob) != abi.REPORTDATA_SIZE:
                raise InvalidInput(f"{self.name}: the TDX provider needs a {abi.REPORTDATA_SIZE}-byte inblob, "
                                   f"the committed one is {len(inblob)} bytes")
            quote = self._group.quote(inblob)  # the slow part: only this instance's generation lock is held
            packed = self._group.pack(quote)
            with state:
                self._outblob, self._read_generation = packed, generation
                if generation == self._write_generation:
                    self._inblob = None  # only a commit can make the cache stale, and it brings its own
            return quote
        finally:
            with state:
                self._generating = None
            busy.release()

    def _cached_outblob(self) -> Optional[bytes]:
        """With the state lock held: the cached quote (packed) if current, None to make one."""
        self._check_live()
        if self._outblob is not None and self._read_generation == self._write_generation:
            return self._outblob
        if not self._inblob:
            raise InvalidInput(f"{self.name}: no inblob committed (write 64 bytes to inblob and close it)")
        return None


# -- the attribute table -------------------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    """One configfs attribute: its name, mode, kind and the instance methods behind it."""

    name: str
    perm: int
    binary: bool
    show: Optional[Callable[[ReportInstance], bytes]] = None
    store: Optional[Callable[[ReportInstance, bytes], None]] = None
    max_size: int = 0  # binary attributes: the buffer limit (0: none)


# In the order configfs lists them (its newest entry first: text attributes are created
# before binary ones, each in table order).
TDX_ATTRIBUTES = (
    Attribute("outblob", 0o444, True, show=ReportInstance.outblob, max_size=OUTBLOB_MAX),
    Attribute("inblob", 0o200, True, store=ReportInstance.commit_inblob, max_size=INBLOB_MAX),
    Attribute("provider", 0o444, False, show=ReportInstance.provider),
    Attribute("generation", 0o444, False, show=ReportInstance.generation),
)


def check_attributes(attributes: Iterable[Attribute]) -> Dict[str, Attribute]:
    """The attribute table by name, or a TableError naming the first mistake: a name taken
    twice or not a file name; mode bits that do not match the methods (a store exactly
    where a write bit is, a show exactly where a read bit is); a text attribute that
    takes writes, or a binary one both read and written (neither is served here); a
    binary attribute without a maximum size."""
    table: Dict[str, Attribute] = {}
    for a in attributes:
        def bad(reason: str) -> TableError:
            return TableError(f"configfs attribute {a.name!r} (mode {a.perm:04o}): {reason}")

        if not is_file_name(a.name):
            raise bad("not a file name")
        if a.name in table:
            raise bad("two attributes of that name")
        if a.perm & ~0o777:
            raise bad("the permission bits are not 0..0777")
        if bool(a.perm & WRITE_BITS) != (a.store is not None):
            raise bad("a write bit needs a store method, and a store method a write bit")
        if bool(a.perm & READ_BITS) != (a.show is not None):
            raise bad("a read bit needs a show method, and a show method a read bit")
        if not a.binary and a.store is not None:
            raise bad("a text attribute that takes writes is not served (text fds only read)")
        if a.binary and a.show is not None and a.store is not None:
            raise bad("a binary attribute both read and written is not served (an fd reads or writes)")
        if a.binary and a.max_size <= 0:
            raise bad("a binary attribute needs its maximum size")
        table[a.name] = a
    return table


# -- per-open-file buffers ---------------------------------------------------------------------


class _AttributeHandle(Handle):
    def __init__(self, node: "AttributeFile"):
        super().__init__(node)
        self.attr = node.attr
        self.instance = node.instance
        self._lock = threading.Lock()  # an fd can be shared by threads; the kernel locks per buffer

    def ioctl(self, cmd: int, request: bytes) -> bytes:
        raise NotATty(f"{self.attr.name}: configfs attributes take no ioctl", probe=cmd == linuxabi.TCGETS)

    def flush(self) -> None:
        pass  # only a binary attribute's writes are committed


class TextHandle(_AttributeHandle):
    """A text attribute fd: filled on its first read, then served from that buffer."""

    def __init__(self, node: "AttributeFile"):
        super().__init__(node)
        self._text: Optional[bytes] = None

    def read(self, size: int, offset: int) -> bytes:
        with self._lock:
            if self._text is None:
                self._text = self.attr.show(self.instance)
            return self._text[offset : offset + size]


class BinaryHandle(_AttributeHandle):
    """A binary attribute fd: one buffer, for reading (``show``) or for writing (``store``)."""

    def __init__(self, node: "AttributeFile"):
        super().__init__(node)
        # An inblob commit must be done when close() returns, as in configfs (where
        # release runs before close() returns); FUSE's RELEASE is asynchronous, FLUSH is not.
        self.commits_on_close = node.attr.store is not None
        self._buffer = bytearray()
        self._filled = False
        self._writes = 0  # write attempts so far (refused ones too: configfs marks the fd first)
        self._committed = 0  # ... of which a commit has covered this many

    def read(self, size: int, offset: int) -> bytes:
        with self._lock:
            if not self._filled:
                blob = self.attr.show(self.instance)
                if not blob:
                    return b""
                if self.attr.max_size and len(blob) > self.attr.max_size:
                    raise FileTooBig(f"{self.attr.name}: {len(blob)} bytes, more than {self.attr.max_size}")
                self._buffer[:] = blob
                self._filled = True
            return bytes(self._buffer[offset : offset + size])

    def write(self, data: bytes, offset: int) -> int:
        with self._lock:
            self._writes += 1
            end = offset + len(data)
            if end > len(self._buffer):
                if self.attr.max_size and end > self.attr.max_size:
                    raise FileTooBig(f"{self.attr.name} takes at most {self.attr.max_size} bytes; "
                                     f"a write of {len(data)} at offset {offset} ends at {end}")
                self._buffer.extend(bytes(end - len(self._buffer)))
            self._buffer[offset:end] = data
            return len(data)

    def release(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Commit the buffer if it has writes no commit covered. configfs commits once, at
        the last close (release); a front end that sees each close (FUSE FLUSH, which the
        kernel waits for, unlike RELEASE) may call this there too: the first close commits,
        later ones only if the shared fd wrote again."""
        with self._lock:
            if self._writes != self._committed:
                self._committed = self._writes
                self.attr.store(self.instance, bytes(self._buffer))


# -- nodes -------------------------------------------------------------------------------------------


class AttributeFile(Node):
    """One attribute of one instance: a view made on lookup, kept by nothing but its fds."""

    xattr_handlers = False  # configfs registers none: every xattr call is EOPNOTSUPP

    def __init__(self, attr: Attribute, instance: ReportInstance):
        self.attr = attr
        self.instance = instance
        self.name = attr.name

    @property
    def kind(self) -> str:
        return self.attr.name

    @property
    def mode(self) -> int:
        return stat.S_IFREG | self.attr.perm

    def attrs(self) -> Dict[str, int]:
        return {"st_mode": self.mode, "st_nlink": 1, "st_size": 0 if self.attr.binary else TEXT_ST_SIZE}

    def open(self, flags: int) -> Handle:
        accmode = flags & os.O_ACCMODE
        if accmode in (os.O_WRONLY, os.O_RDWR) and not self.attr.perm & WRITE_BITS:
            raise AccessDenied(f"{self.name} cannot be opened for writing (mode {self.attr.perm:04o})")
        if accmode in (os.O_RDONLY, os.O_RDWR) and not self.attr.perm & READ_BITS:
            raise AccessDenied(f"{self.name} cannot be opened for reading (mode {self.attr.perm:04o})")
        return BinaryHandle(self) if self.attr.binary else TextHandle(self)

    def truncate(self, length: int) -> None:
        pass  # configfs keeps the new size on the inode only; the attribute is untouched


def _check_name(name: str) -> None:
    if len(os.fsencode(name)) > NAME_MAX:
        raise NameTooLong(f"a configfs name is at most {NAME_MAX} bytes")


class _ConfigfsDirectory(Directory):
    kind = "tsm-dir"
    xattr_handlers = False  # configfs registers none: every xattr call is EOPNOTSUPP
    absent_kind = "missing"  # what /.stats counts a request for a name not (yet) here under

    def child(self, name: str) -> Node:
        return self._find(self.entries, name, "entry")

    @staticmethod
    def _find(table: Dict[str, object], name: str, what: str):
        """``table[name]``, after configfs's check of the name (ENAMETOOLONG), else ENOENT."""
        _check_name(name)
        found = table.get(name)
        if found is None:
            raise NoSuchEntry(f"no {what} {name!r}", probe=True)
        return found

    def make_dir(self, name: str) -> None:
        _check_name(name)
        raise NotPermitted("configfs: mkdir is only possible in tsm/report")

    def remove_dir(self, name: str) -> None:
        raise NotPermitted("configfs: only report instances (tsm/report/NAME) can be removed")

    def refuse(self, what: str) -> None:
        if what == "create":
            raise AccessDenied("configfs directories have no create: an instance's files come with its mkdir")
        raise NotPermitted(f"configfs: {what} is not supported (instances are made and removed with mkdir/rmdir)")


class InstanceDirectory(_ConfigfsDirectory):
    """``tsm/report/NAME``: a view of one instance, made on lookup. Its attribute files are
    made on lookup too, from the group's attribute table, so an idle instance holds neither."""

    def __init__(self, instance: ReportInstance, attributes: Dict[str, Attribute]):
        super().__init__(instance.name)  # no table of its own: the entries are the group's attributes
        self.instance = instance
        self.attributes = attributes

    def child(self, name: str) -> Node:
        return AttributeFile(self._find(self.attributes, name, "entry"), self.instance)

    def names(self) -> Iterator[str]:
        return iter(self.attributes)

    def attrs(self) -> Dict[str, int]:
        return {"st_mode": self.mode, "st_nlink": 2, "st_size": 0}


class ReportGroup(_ConfigfsDirectory):
    """``tsm/report``: mkdir makes an instance, rmdir removes one; nothing else lives here.
    ``entries`` maps each name to its ``ReportInstance`` (not to a node: see
    :class:`InstanceDirectory`), in creation order."""

    absent_kind = "tsm-dir"  # a lookup of a new name precedes every mkdir

    def __init__(self, quote: QuoteFn, attributes: Iterable[Attribute] = TDX_ATTRIBUTES):
        super().__init__("report")
        self.attributes = check_attributes(attributes)  # what each instance holds
        self.quote = quote
        self._lock = threading.Lock()  # the name table (and setting _zdict once): never held across a quote
        self._zdict: Optional[bytes] = None

    # A cached outblob is kept zlib-compressed against this group's first quote as a preset
    # dictionary: quotes of one platform share all but a few hundred bytes (header, most of
    # the TD body, the attestation key, QE report and certificate chain), so a leaked
    # instance keeps ~240 bytes instead of ~5.6 KB (only REPORTDATA and the signature differ
    # between two quotes of one TD), and a cached read gives the same bytes.

    def pack(self, quote: bytes) -> bytes:
        if self._zdict is None:
            with self._lock:
                if self._zdict is None:
                    self._zdict = bytes(quote)
        packer = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, _RAW_DEFLATE, zdict=self._zdict)
        return packer.compress(quote) + packer.flush()

    def unpack(self, packed: bytes) -> bytes:
        unpacker = zlib.decompressobj(_RAW_DEFLATE, zdict=self._zdict)
        return unpacker.decompress(packed) + unpacker.flush()

    def child(self, name: str) -> Node:
        return InstanceDirectory(self._find(self.entries, name, "report instance"), self.attributes)

    def names(self) -> Iterator[str]:
        with self._lock:
            newest_first: List[str] = list(self.entries)[::-1]
        return iter(newest_first)

    def attrs(self) -> Dict[str, int]:
        with self._lock:
            count = len(self.entries)
        return {"st_mode": self.mode, "st_nlink": 2 + count, "st_size": 0}

    def make_dir(self, name: str) -> None:
        _check_name(name)
        with self._lock:
            if name in self.entries:
                raise AlreadyExists(f"report instance {name!r} exists")
            try:
                self.entries[name] = ReportInstance(name, self)
            except MemoryError:
                # A failed insertion leaves a dict as it was; a failed construction never reached it.
                raise OutOfMemory(f"no memory for report instance {name!r} "
                                  f"({len(self.entries)} instances exist)") from None

    def remove_dir(self, name: str) -> None:
        with self._lock:
            instance = self.entries.pop(name, None)
        if instance is None:
            raise NoSuchEntry(f"no report instance {name!r}")
        instance.remove()


def tsm_tree(quote: QuoteFn) -> Directory:
    """``tsm/``, holding ``report/``."""
    return _ConfigfsDirectory("tsm", [ReportGroup(quote)])
