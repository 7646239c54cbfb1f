"""The kernel's FUSE protocol as data: opcodes, flags and the wire structs.

Facts from ``include/uapi/linux/fuse.h`` (protocol 7.38, the layout this transport speaks;
the kernel negotiates down to it). Every struct is one row: its C name and its fields, in
order, with the C types; ``Wire`` turns a row into a ``struct.Struct`` (native byte order,
as the kernel writes them; every struct there is padded to 8 bytes, so no implicit padding)
that also knows its field names. ``SIZES`` are the ``sizeof`` values the header implies,
checked against the real header by the tests.
"""

import struct
import sys
from enum import IntEnum
from typing import Tuple

KERNEL_VERSION = 7  # FUSE_KERNEL_VERSION: the major this transport speaks
KERNEL_MINOR_VERSION = 38  # the newest minor whose structs are below
OLDEST_MINOR = 28  # Linux 4.20 (max_pages); an older kernel is refused at INIT (EPROTO, logged)
ROOT_ID = 1  # FUSE_ROOT_ID
MIN_READ_BUFFER = 8192  # FUSE_MIN_READ_BUFFER


class Opcode(IntEnum):
    LOOKUP = 1
    FORGET = 2  # no reply
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36  # no reply needed
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42  # no reply
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SETUPMAPPING = 48
    REMOVEMAPPING = 49
    SYNCFS = 50
    TMPFILE = 51


# INIT flags (fuse_init_in.flags / fuse_init_out.flags; bits 32.. travel in flags2)
FUSE_ASYNC_READ = 1 << 0
FUSE_POSIX_LOCKS = 1 << 1
FUSE_ATOMIC_O_TRUNC = 1 << 3
FUSE_EXPORT_SUPPORT = 1 << 4
FUSE_BIG_WRITES = 1 << 5
FUSE_DONT_MASK = 1 << 6
FUSE_SPLICE_WRITE = 1 << 7
FUSE_SPLICE_MOVE = 1 << 8
FUSE_SPLICE_READ = 1 << 9
FUSE_FLOCK_LOCKS = 1 << 10
FUSE_HAS_IOCTL_DIR = 1 << 11
FUSE_AUTO_INVAL_DATA = 1 << 12
FUSE_DO_READDIRPLUS = 1 << 13
FUSE_READDIRPLUS_AUTO = 1 << 14
FUSE_ASYNC_DIO = 1 << 15
FUSE_WRITEBACK_CACHE = 1 << 16
FUSE_NO_OPEN_SUPPORT = 1 << 17
FUSE_PARALLEL_DIROPS = 1 << 18
FUSE_HANDLE_KILLPRIV = 1 << 19
FUSE_POSIX_ACL = 1 << 20
FUSE_ABORT_ERROR = 1 << 21
FUSE_MAX_PAGES = 1 << 22
FUSE_CACHE_SYMLINKS = 1 << 23
FUSE_NO_OPENDIR_SUPPORT = 1 << 24
FUSE_EXPLICIT_INVAL_DATA = 1 << 25
FUSE_MAP_ALIGNMENT = 1 << 26
FUSE_SUBMOUNTS = 1 << 27
FUSE_HANDLE_KILLPRIV_V2 = 1 << 28
FUSE_SETXATTR_EXT = 1 << 29
FUSE_INIT_EXT = 1 << 30

# fuse_open_out.open_flags
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_CACHE_DIR = 1 << 3
FOPEN_STREAM = 1 << 4
FOPEN_NOFLUSH = 1 << 5
FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6

# fuse_setattr_in.valid
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8
FATTR_LOCKOWNER = 1 << 9
FATTR_CTIME = 1 << 10

# fuse_ioctl_in.flags
FUSE_IOCTL_COMPAT = 1 << 0
FUSE_IOCTL_UNRESTRICTED = 1 << 1
FUSE_IOCTL_RETRY = 1 << 2
FUSE_IOCTL_32BIT = 1 << 3
FUSE_IOCTL_DIR = 1 << 4

# fuse_getattr_in.getattr_flags
FUSE_GETATTR_FH = 1 << 0

# The kernel marks the unique of an INTERRUPT request with this bit.
FUSE_INT_REQ_BIT = 1 << 0

_TYPES = {"u8": "B", "u16": "H", "u32": "I", "i32": "i", "u64": "Q", "i64": "q"}
_ORDER = "<" if sys.byteorder == "little" else ">"


class Wire(struct.Struct):
    """One C struct of fuse.h: ``Wire("fuse_open_out", "u64 fh, u32 open_flags, u32 padding")``.
    An array field is ``u32 unused[7]``; ``fields`` names each value ``unpack`` returns, as C
    spells it (``unused[0]``, ``attr.ino`` for a field of a nested struct)."""

    def __init__(self, name: str, spec: str):
        codes, names = [], []
        for field in filter(None, (f.strip() for f in spec.split(","))):
            ctype, fname = field.split()
            count = 1
            if fname.endswith("]"):
                fname, _, n = fname[:-1].partition("[")
                count = int(n)
            codes.append(f"{count if count > 1 else ''}{_TYPES[ctype]}")
            names.extend([fname] if count == 1 else [f"{fname}[{i}]" for i in range(count)])
        super().__init__(_ORDER + "".join(codes))
        self.name = name
        self.fields: Tuple[str, ...] = tuple(names)

    def __repr__(self) -> str:
        return f"Wire({self.name}, {self.size} bytes)"


_ATTR = ("u64 ino, u64 size, u64 blocks, u64 atime, u64 mtime, u64 ctime, u32 atimensec, u32 mtimensec, "
         "u32 ctimensec, u32 mode, u32 nlink, u32 uid, u32 gid, u32 rdev, u32 blksize, u32 flags")

IN_HEADER = Wire("fuse_in_header", "u32 len, u32 opcode, u64 unique, u64 nodeid, u32 uid, u32 gid, u32 pid, "
                                   "u16 total_extlen, u16 padding")
OUT_HEADER = Wire("fuse_out_header", "u32 len, i32 error, u64 unique")
ATTR = Wire("fuse_attr", _ATTR)
_NESTED_ATTR = ", ".join(f"{f.split()[0]} attr.{f.split()[1]}" for f in _ATTR.split(", "))  # struct fuse_attr attr
ENTRY_OUT = Wire("fuse_entry_out", "u64 nodeid, u64 generation, u64 entry_valid, u64 attr_valid, "
                                   "u32 entry_valid_nsec, u32 attr_valid_nsec, " + _NESTED_ATTR)
ATTR_OUT = Wire("fuse_attr_out", "u64 attr_valid, u32 attr_valid_nsec, u32 dummy, " + _NESTED_ATTR)
INIT_IN = Wire("fuse_init_in", "u32 major, u32 minor, u32 max_readahead, u32 flags, u32 flags2, u32 unused[11]")
INIT_IN_COMPAT = Wire("fuse_init_in (before 7.36)", "u32 major, u32 minor, u32 max_readahead, u32 flags")
INIT_OUT = Wire("fuse_init_out", "u32 major, u32 minor, u32 max_readahead, u32 flags, u16 max_background, "
                                 "u16 congestion_threshold, u32 max_write, u32 time_gran, u16 max_pages, "
                                 "u16 map_alignment, u32 flags2, u32 unused[7]")
FORGET_IN = Wire("fuse_forget_in", "u64 nlookup")
FORGET_ONE = Wire("fuse_forget_one", "u64 nodeid, u64 nlookup")
BATCH_FORGET_IN = Wire("fuse_batch_forget_in", "u32 count, u32 dummy")
GETATTR_IN = Wire("fuse_getattr_in", "u32 getattr_flags, u32 dummy, u64 fh")
SETATTR_IN = Wire("fuse_setattr_in", "u32 valid, u32 padding, u64 fh, u64 size, u64 lock_owner, u64 atime, "
                                     "u64 mtime, u64 ctime, u32 atimensec, u32 mtimensec, u32 ctimensec, u32 mode, "
                                     "u32 unused4, u32 uid, u32 gid, u32 unused5")
MKNOD_IN = Wire("fuse_mknod_in", "u32 mode, u32 rdev, u32 umask, u32 padding")
MKDIR_IN = Wire("fuse_mkdir_in", "u32 mode, u32 umask")
RENAME_IN = Wire("fuse_rename_in", "u64 newdir")
RENAME2_IN = Wire("fuse_rename2_in", "u64 newdir, u32 flags, u32 padding")
LINK_IN = Wire("fuse_link_in", "u64 oldnodeid")
OPEN_IN = Wire("fuse_open_in", "u32 flags, u32 open_flags")
CREATE_IN = Wire("fuse_create_in", "u32 flags, u32 mode, u32 umask, u32 open_flags")
OPEN_OUT = Wire("fuse_open_out", "u64 fh, u32 open_flags, u32 padding")
RELEASE_IN = Wire("fuse_release_in", "u64 fh, u32 flags, u32 release_flags, u64 lock_owner")
FLUSH_IN = Wire("fuse_flush_in", "u64 fh, u32 unused, u32 padding, u64 lock_owner")
READ_IN = Wire("fuse_read_in", "u64 fh, u64 offset, u32 size, u32 read_flags, u64 lock_owner, u32 flags, "
                               "u32 padding")
WRITE_IN = Wire("fuse_write_in", "u64 fh, u64 offset, u32 size, u32 write_flags, u64 lock_owner, u32 flags, "
                                 "u32 padding")
WRITE_OUT = Wire("fuse_write_out", "u32 size, u32 padding")
KSTATFS = Wire("fuse_kstatfs", "u64 blocks, u64 bfree, u64 bavail, u64 files, u64 ffree, u32 bsize, u32 namelen, "
                               "u32 frsize, u32 padding, u32 spare[6]")
# without FUSE_SETXATTR_EXT (not negotiated) the kernel sends FUSE_COMPAT_SETXATTR_IN_SIZE bytes
SETXATTR_IN = Wire("fuse_setxattr_in (compat)", "u32 size, u32 flags")
GETXATTR_IN = Wire("fuse_getxattr_in", "u32 size, u32 padding")
GETXATTR_OUT = Wire("fuse_getxattr_out", "u32 size, u32 padding")
INTERRUPT_IN = Wire("fuse_interrupt_in", "u64 unique")
IOCTL_IN = Wire("fuse_ioctl_in", "u64 fh, u32 flags, u32 cmd, u64 arg, u32 in_size, u32 out_size")
IOCTL_OUT = Wire("fuse_ioctl_out", "i32 result, u32 flags, u32 in_iovs, u32 out_iovs")
DIRENT = Wire("fuse_dirent", "u64 ino, u64 off, u32 namelen, u32 type")  # then the name, padded to 8

# sizeof(...) in include/uapi/linux/fuse.h (7.38): what the tests hold the rows to.
SIZES = {
    "fuse_in_header": 40, "fuse_out_header": 16, "fuse_attr": 88, "fuse_entry_out": 128, "fuse_attr_out": 104,
    "fuse_init_in": 64, "fuse_init_out": 64, "fuse_forget_in": 8, "fuse_forget_one": 16,
    "fuse_batch_forget_in": 8, "fuse_getattr_in": 16, "fuse_setattr_in": 88, "fuse_mknod_in": 16,
    "fuse_mkdir_in": 8, "fuse_rename_in": 8, "fuse_rename2_in": 16, "fuse_link_in": 8, "fuse_open_in": 8,
    "fuse_create_in": 16, "fuse_open_out": 16, "fuse_release_in": 24, "fuse_flush_in": 24, "fuse_read_in": 40,
    "fuse_write_in": 40, "fuse_write_out": 8, "fuse_kstatfs": 80, "fuse_getxattr_in": 8, "fuse_getxattr_out": 8,
    "fuse_interrupt_in": 8, "fuse_ioctl_in": 32, "fuse_ioctl_out": 16, "fuse_dirent": 24,
}
WIRES = (IN_HEADER, OUT_HEADER, ATTR, ENTRY_OUT, ATTR_OUT, INIT_IN, INIT_OUT, FORGET_IN, FORGET_ONE,
         BATCH_FORGET_IN, GETATTR_IN, SETATTR_IN, MKNOD_IN, MKDIR_IN, RENAME_IN, RENAME2_IN, LINK_IN, OPEN_IN,
         CREATE_IN, OPEN_OUT, RELEASE_IN, FLUSH_IN, READ_IN, WRITE_IN, WRITE_OUT, KSTATFS, GETXATTR_IN,
         GETXATTR_OUT, INTERRUPT_IN, IOCTL_IN, IOCTL_OUT, DIRENT)


def dirent_size(namelen: int, plus: bool = False) -> int:
    """FUSE_DIRENT_SIZE / FUSE_DIRENTPLUS_SIZE: the record padded to 8 bytes."""
    n = (ENTRY_OUT.size if plus else 0) + DIRENT.size + namelen
    return (n + 7) & ~7


def name_at(body, offset: int) -> bytes:
    """The NUL-terminated name at ``offset`` of a request body (a memoryview), as bytes."""
    raw = body[offset:].tobytes()
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def names_at(body, offset: int, count: int) -> Tuple[bytes, ...]:
    """``count`` consecutive NUL-terminated names from ``offset`` (SYMLINK, RENAME)."""
    parts = body[offset:].tobytes().split(b"\0", count)
    return tuple(parts[:count]) + (b"",) * (count - len(parts))
