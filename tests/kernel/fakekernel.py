"""Playing the kernel's side of the FUSE protocol against a dispatcher, with no mount.

Requests are built here from the layouts of ``include/uapi/linux/fuse.h`` written out
again (not taken from ``tdxfs.server.kernel.protocol``), and replies are parsed the same
way, so a wrong row in the code under test shows up as a wrong answer here.
"""

import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen padding
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
ATTR_NAMES = ("ino", "size", "blocks", "atime", "mtime", "ctime", "atimensec", "mtimensec", "ctimensec", "mode",
              "nlink", "uid", "gid", "rdev", "blksize", "flags")
ENTRY_HEAD = struct.Struct("<QQQQII")  # nodeid generation entry_valid attr_valid entry_valid_nsec attr_valid_nsec
ATTR_OUT_HEAD = struct.Struct("<QII")
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
OPEN_OUT = struct.Struct("<QII")
READ_IN = struct.Struct("<QQIIQII")
IOCTL_IN = struct.Struct("<QIIQII")
IOCTL_OUT = struct.Struct("<iIII")
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
DIRENT = struct.Struct("<QQII")

# opcodes (enum fuse_opcode)
LOOKUP, FORGET, GETATTR, SETATTR, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE, STATFS, \
    RELEASE = 1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18
FSYNC, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR = \
    20, 21, 22, 23, 24, 25, 26, 27, 28, 29
CREATE, INTERRUPT, DESTROY, IOCTL, BATCH_FORGET, READDIRPLUS, RENAME2, LSEEK = 35, 36, 38, 39, 42, 44, 45, 46

FOPEN_DIRECT_IO, FOPEN_NOFLUSH, FOPEN_PARALLEL_DIRECT_WRITES = 1 << 0, 1 << 5, 1 << 6
FUSE_IOCTL_UNRESTRICTED, FUSE_IOCTL_DIR = 1 << 1, 1 << 4
FATTR_MODE, FATTR_SIZE, FATTR_ATIME, FATTR_MTIME = 1 << 0, 1 << 3, 1 << 4, 1 << 5


@dataclass
class Reply:
    error: int  # 0 or a negative errno
    payload: bytes
    buffers: int  # how many buffers the writev would carry


def attr_of(data: bytes, at: int = 0) -> Dict[str, int]:
    return dict(zip(ATTR_NAMES, ATTR.unpack_from(data, at)))


class FakeKernel:
    """Sends requests to ``dispatcher.handle`` as the kernel would write them."""

    def __init__(self, dispatcher, uid: int = 0, gid: int = 0, pid: int = 4242):
        self.d = dispatcher
        self.unique = 0
        self.uid, self.gid, self.pid = uid, gid, pid
        self.attr_valid: Dict[int, int] = {}  # node id -> attr_valid (s) of its last LOOKUP/GETATTR reply

    def send(self, opcode: int, nodeid: int = 0, body: bytes = b"", uid: Optional[int] = None) -> Optional[Reply]:
        self.unique += 2
        raw = bytearray(IN_HEADER.pack(IN_HEADER.size + len(body), opcode, self.unique, nodeid,
                                       self.uid if uid is None else uid, self.gid, self.pid, 0, 0) + body)
        raw += b"\xee" * 64  # the read buffer is larger than the request: the dispatcher must not read on
        buffers = self.d.handle(memoryview(raw)[: IN_HEADER.size + len(body)])
        raw[:] = b"\xdd" * len(raw)  # the next read overwrites the buffer: nothing may keep a view of it
        if buffers is None:
            return None
        data = b"".join(bytes(b) for b in buffers)
        length, error, unique = OUT_HEADER.unpack_from(data)
        assert length == len(data), (length, len(data))
        assert unique == self.unique
        assert error <= 0 and (error == 0 or length == OUT_HEADER.size), "an error reply carries no data"
        return Reply(error, data[OUT_HEADER.size :], len(buffers))

    def ok(self, opcode: int, nodeid: int = 0, body: bytes = b"", **kw) -> bytes:
        reply = self.send(opcode, nodeid, body, **kw)
        assert reply is not None and reply.error == 0, (opcode, reply and os.strerror(-reply.error))
        return reply.payload

    def error(self, opcode: int, nodeid: int = 0, body: bytes = b"", **kw) -> int:
        reply = self.send(opcode, nodeid, body, **kw)
        assert reply is not None and reply.error < 0, (opcode, reply)
        return -reply.error

    # -- the requests, spelled out -----------------------------------------------------------

    def init(self, minor: int = 45, flags: int = 0x73FFFFFB, flags2: int = 0x5FD) -> bytes:
        body = struct.pack("<IIIII44x", 7, minor, 131072, flags, flags2)
        return self.ok(INIT, 0, body)

    def lookup(self, parent: int, name: str) -> Tuple[int, Dict[str, int]]:
        data = self.ok(LOOKUP, parent, os.fsencode(name) + b"\0")
        nodeid, generation, entry_valid, attr_valid, _, _ = ENTRY_HEAD.unpack_from(data)
        assert len(data) == ENTRY_HEAD.size + ATTR.size
        assert entry_valid == 1 and attr_valid in (0, 1)  # 0: a file whose size changes on its own
        self.attr_valid[nodeid] = attr_valid
        return nodeid, attr_of(data, ENTRY_HEAD.size)

    def walk(self, path: str) -> int:
        nodeid = 1
        for part in filter(None, path.split("/")):
            nodeid, _ = self.lookup(nodeid, part)
        return nodeid

    def getattr(self, nodeid: int) -> Dict[str, int]:
        data = self.ok(GETATTR, nodeid, struct.pack("<IIQ", 0, 0, 0))
        assert len(data) == ATTR_OUT_HEAD.size + ATTR.size
        self.attr_valid[nodeid] = ATTR_OUT_HEAD.unpack_from(data)[0]
        return attr_of(data, ATTR_OUT_HEAD.size)

    def forget(self, nodeid: int, n: int) -> None:
        assert self.send(FORGET, nodeid, struct.pack("<Q", n)) is None

    def batch_forget(self, pairs: List[Tuple[int, int]]) -> None:
        body = struct.pack("<II", len(pairs), 0) + b"".join(struct.pack("<QQ", a, b) for a, b in pairs)
        assert self.send(BATCH_FORGET, 0, body) is None

    def open(self, nodeid: int, flags: int = os.O_RDONLY) -> Tuple[int, int]:
        fh, open_flags, _ = OPEN_OUT.unpack(self.ok(OPEN, nodeid, struct.pack("<II", flags, 0)))
        return fh, open_flags

    def read(self, nodeid: int, fh: int, size: int, offset: int = 0) -> bytes:
        return self.ok(READ, nodeid, READ_IN.pack(fh, offset, size, 0, 0, 0, 0))

    def write(self, nodeid: int, fh: int, data: bytes, offset: int = 0) -> int:
        out = self.ok(WRITE, nodeid, READ_IN.pack(fh, offset, len(data), 0, 0, 0, 0) + data)
        assert len(out) == 8
        return struct.unpack_from("<I", out)[0]

    def release(self, nodeid: int, fh: int) -> None:
        assert self.ok(RELEASE, nodeid, struct.pack("<QIIQ", fh, 0, 0, 0)) == b""

    def flush(self, nodeid: int, fh: int) -> None:
        assert self.ok(FLUSH, nodeid, struct.pack("<QIIQ", fh, 0, 0, 0)) == b""

    def ioctl_body(self, fh: int, cmd: int, data: bytes = b"", out_size: int = 0, flags: int = 0) -> bytes:
        return IOCTL_IN.pack(fh, flags, cmd, 0x7FFD1234, len(data), out_size) + data

    def mkdir(self, parent: int, name: str) -> int:
        data = self.ok(MKDIR, parent, struct.pack("<II", 0o755, 0o022) + os.fsencode(name) + b"\0")
        return ENTRY_HEAD.unpack_from(data)[0]

    def opendir(self, nodeid: int) -> int:
        return OPEN_OUT.unpack(self.ok(OPENDIR, nodeid, struct.pack("<II", os.O_RDONLY | os.O_DIRECTORY, 0)))[0]

    def readdir(self, nodeid: int, fh: int, offset: int = 0, size: int = 4096, plus: bool = False) -> list:
        """[(name, ino, next offset, type, entry nodeid or None)]"""
        data = self.ok(READDIRPLUS if plus else READDIR, nodeid, READ_IN.pack(fh, offset, size, 0, 0, 0, 0))
        assert len(data) <= size
        out, at = [], 0
        while at < len(data):
            entry = None
            if plus:
                entry = ENTRY_HEAD.unpack_from(data, at)[0]
                at += ENTRY_HEAD.size + ATTR.size
            ino, off, namelen, dtype = DIRENT.unpack_from(data, at)
            name = data[at + DIRENT.size : at + DIRENT.size + namelen].decode()
            out.append((name, ino, off, dtype, entry))
            at += (DIRENT.size + namelen + 7) & ~7
        return out

    def setattr(self, nodeid: int, valid: int, size: int = 0, mode: int = 0, atime: int = 0, mtime: int = 0) -> Reply:
        body = SETATTR_IN.pack(valid, 0, 0, size, 0, atime, mtime, 0, 0, 0, 0, mode, 0, 0, 0, 0)
        return self.send(SETATTR, nodeid, body)
