"""FUSE requests onto the file tree: node ids, file handles, one handler per opcode.

``Dispatcher.handle(request)`` takes one request as the kernel wrote it (a memoryview of
the read buffer) and returns the reply as a list of buffers for one ``writev`` (or None
where the protocol wants no reply). It speaks to ``tdxfs.files`` directly, by object:

- **Node ids** are decided at LOOKUP (and MKDIR, READDIRPLUS): each id names one ``Entry``
  (the node, its parent entry and name, the kind /.stats counts it under, its lookup
  count). LOOKUP adds one to the count, FORGET/BATCH_FORGET take them away, and the entry
  is dropped at zero, never before: a configfs instance removed by RMDIR keeps its id (and
  its open files keep working as configfs lets them) until the kernel forgets it. Ids are
  never reused. A second LOOKUP of a name gives the same id while the node is the same one:
  the same object, or, for the views configfs makes on lookup, one of the same class with
  the same fields (the same instance, the same attribute); a new instance under an old
  name gets a new id.
- **File handles** are decided at OPEN: the handle from ``node.open(flags)``, with its
  entry. READ, WRITE, FLUSH, RELEASE and IOCTL go straight to that handle. Nothing walks
  a path per request; a path is rebuilt from the name chain only for a log line.
- **Answers** are the libfuse adapter's (``tdxfs.server.adapter``): the same handlers of
  the tree, the same refusals, one log line per refused request ("rejected OP PATH: ERRNO
  (reason)", escaped by ``printable``), a probe (a lookup miss) at debug level, the same
  /.stats operation names (LOOKUP is counted as ``getattr`` as there; SETATTR as
  ``chmod``/``chown``/``truncate``/``utimens``; a regular-file MKNOD as ``create``).
  Differences, all from speaking the protocol ourselves: OPENDIR/RELEASEDIR are counted
  (libfuse answered them itself); a SETATTR is not followed by an extra ``getattr`` count
  (libfuse's high-level API asks for the attributes again); TCGETS (isatty, which Python's
  ``open()`` sends) is answered ENOTTY without asking the handle, raising or logging: no
  file here is a terminal.

Open flags: FOPEN_DIRECT_IO on every file (fuse-notes: no stale page cache, exact request
sizes); FOPEN_NOFLUSH except where the handle commits on close (configfs inblob), so only
those files get a FLUSH; FOPEN_PARALLEL_DIRECT_WRITES on every file: each write is one
whole value applied under the model's own lock, writes never change a file's size, and
the loop serves one request at a time, so the kernel's inode lock would only serialise
what is serialised here anyway (it made 4-client one-fd transactions wait on each other).
"""

import errno
import inspect
import logging
import os
import stat
import time
from itertools import count
from typing import Dict, List, Optional, Tuple

from tdxfs import linuxabi
from tdxfs.errors import (AccessDenied, IsADirectory, NoAttribute, NoSuchEntry, NotATty, NotPermitted, NotSupported,
                          TdxfsError, printable)
from tdxfs.files.nodes import Directory
from tdxfs.files.tree import Tree
from tdxfs.server.kernel import protocol as P
from tdxfs.server.kernel.protocol import Opcode

log = logging.getLogger("tdxfs")

TIMEOUT = 1  # s: entry and attribute validity, libfuse's default that the adapter keeps
# ... except for a file whose size changes without a write to it (a row whose size is a
# function: eventlog, acpi/CCEL, acpi/data/CCEL grow with every extend, whatever front end
# made it): its attributes are never cached, so the kernel asks before it sizes a
# sendfile/splice or a stat (docs/reliability.md, fuzzing defect 3). Its name stays cached
# (entry_valid 1 s). .stats keeps 1 s: its st_size is a constant (4096, as sysfs).
VOLATILE_TIMEOUT = 0


def attr_timeout(node) -> int:
    """attr_valid (seconds) for ``node``'s LOOKUP/GETATTR/SETATTR replies."""
    return VOLATILE_TIMEOUT if callable(getattr(node, "size", None)) else TIMEOUT

MAX_WRITE = 128 * 1024  # the largest WRITE (and, as max_pages, READ) the kernel sends us
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MAX_PAGES = MAX_WRITE // PAGE_SIZE
# What INIT asks for, when the kernel offers it: big writes and max_pages (the sizes above);
# lookups and readdir of one directory in parallel (the loop serialises anyway); READDIRPLUS
# when the kernel thinks it pays (the first listing, or after lookups in the directory).
# Not asked: FUSE_ASYNC_READ, FUSE_ATOMIC_O_TRUNC (see the adapter's init_with_config: the
# kernel then sends SETATTR(size 0) and keeps the real size), locks (the kernel's local
# locks serve flock/fcntl), writeback cache, splice, export, posix ACLs.
WANTED_FLAGS = (P.FUSE_BIG_WRITES | P.FUSE_MAX_PAGES | P.FUSE_PARALLEL_DIROPS | P.FUSE_DO_READDIRPLUS
                | P.FUSE_READDIRPLUS_AUTO)
OPEN_FLAGS = P.FOPEN_DIRECT_IO | P.FOPEN_PARALLEL_DIRECT_WRITES
UNKNOWN_INO = 0xFFFFFFFF  # a dirent of a name never looked up (libfuse's FUSE_UNKNOWN_INO)
BLOCK_SIZE = 4096
NAME_MAX = 255
# isatty(): Python's open() asks on every file it opens. No file here is a terminal.
TERMINAL_PROBES = frozenset({linuxabi.TCGETS})
# -o allow_root: what libfuse lets through for anyone (requests on handles already opened)
FOR_ANYONE = frozenset({Opcode.INIT, Opcode.READ, Opcode.WRITE, Opcode.FSYNC, Opcode.RELEASE, Opcode.READDIR,
                        Opcode.FSYNCDIR, Opcode.RELEASEDIR, Opcode.NOTIFY_REPLY, Opcode.READDIRPLUS,
                        Opcode.FORGET, Opcode.BATCH_FORGET, Opcode.INTERRUPT, Opcode.DESTROY})

_HEAD = P.Wire("fuse_in_header (first fields)", "u32 len, u32 opcode, u64 unique, u64 nodeid")
_HEADER = P.IN_HEADER.size
_OUT = P.OUT_HEADER
_OUT_SIZE = _OUT.size
_IO = P.Wire("fuse_read_in/fuse_write_in (first fields)", "u64 fh, u64 offset, u32 size")
_FH = P.Wire("fuse_release_in/fuse_flush_in (first field)", "u64 fh")
_ZERO_ENTRY = bytes(P.ENTRY_OUT.size)
_IOCTL_IN = P.IOCTL_IN
_IOCTL_IN_SIZE = P.IOCTL_IN.size
_IOCTL_DONE = P.IOCTL_OUT.pack(0, 0, 0, 0)  # result 0, no retry, no iovecs


class Entry:
    """One node id: what LOOKUP decided, kept until the kernel forgets it."""

    __slots__ = ("nodeid", "node", "parent", "name", "kind", "nlookup", "attr_valid")

    def __init__(self, nodeid: int, node, parent: Optional["Entry"], name: str, nlookup: int):
        self.nodeid = nodeid
        self.node = node
        self.parent = parent  # the entry, not its id: a name chain outlives a forgotten parent
        self.name = name
        self.kind = node.kind  # the class /.stats counts this node's requests under
        self.nlookup = nlookup
        self.attr_valid = attr_timeout(node)  # decided once, at LOOKUP


class DirHandle:
    """An open directory: the listing, taken at the first READDIR (or one at offset 0)."""

    __slots__ = ("entry", "names")

    def __init__(self, entry: Entry):
        self.entry = entry
        self.names: Optional[List[str]] = None


def same_node(a, b) -> bool:
    """Whether two lookups found one node: the same object, or two views made on lookup
    (configfs instance directories and attributes) of one class with equal fields."""
    if a is b:
        return True
    return type(a) is type(b) and hasattr(a, "__dict__") and vars(a) == vars(b)


class Times:
    """atime, mtime, ctime (ns) by path: the mount's start until a utimensat sets them
    (kept in memory, as kernfs and configfs keep them on the inode); forgotten with the
    directory that held them (RMDIR), so a new instance of the same name starts afresh.
    The same semantics as the adapter's ``Times``, which lives with the libfuse binding."""

    def __init__(self, start: int):
        self.start = (start, start, start)
        self.by_path: Dict[str, Tuple[int, int, int]] = {}

    def of(self, path: str) -> Tuple[int, int, int]:
        return self.by_path.get(path, self.start)

    def update(self, path: str, atime: Optional[int], mtime: Optional[int], now: int) -> None:
        """``None`` leaves a time as it was (UTIME_OMIT)."""
        old_a, old_m, _ = self.of(path)
        self.by_path[path] = (old_a if atime is None else atime, old_m if mtime is None else mtime, now)

    def forget(self, path: str) -> None:
        inside = path.rstrip("/") + "/"
        for name in [p for p in self.by_path if p == path or p.startswith(inside)]:
            del self.by_path[name]


# opcode -> (handler, the operation counted and logged, where the entry name a refusal
# names starts in the body: the path logged is the parent's path plus that name)
OPS = {
    Opcode.INIT: ("_init", "init", None),
    Opcode.DESTROY: ("_destroy", "destroy", None),
    Opcode.LOOKUP: ("_lookup", "getattr", 0),
    Opcode.FORGET: ("_forget", "forget", None),
    Opcode.BATCH_FORGET: ("_batch_forget", "forget", None),
    Opcode.INTERRUPT: ("_interrupt", "interrupt", None),
    Opcode.GETATTR: ("_getattr", "getattr", None),
    Opcode.SETATTR: ("_setattr", "getattr", None),  # the handler names chmod/chown/truncate/utimens
    Opcode.OPEN: ("_open", "open", None),
    Opcode.READ: ("_read", "read", None),
    Opcode.WRITE: ("_write", "write", None),
    Opcode.FLUSH: ("_flush", "flush", None),
    Opcode.RELEASE: ("_release", "release", None),
    Opcode.IOCTL: ("_ioctl", "ioctl", None),
    Opcode.OPENDIR: ("_opendir", "opendir", None),
    Opcode.READDIR: ("_readdir", "readdir", None),
    Opcode.READDIRPLUS: ("_readdirplus", "readdir", None),
    Opcode.RELEASEDIR: ("_releasedir", "releasedir", None),
    Opcode.MKDIR: ("_mkdir", "mkdir", P.MKDIR_IN.size),
    Opcode.RMDIR: ("_rmdir", "rmdir", 0),
    Opcode.CREATE: ("_create", "create", P.CREATE_IN.size),
    Opcode.MKNOD: ("_mknod", "mknod", P.MKNOD_IN.size),  # "create" for a regular file
    Opcode.UNLINK: ("_unlink", "unlink", 0),
    Opcode.SYMLINK: ("_symlink", "symlink", 0),
    Opcode.LINK: ("_hardlink", "link", P.LINK_IN.size),
    Opcode.RENAME: ("_rename", "rename", P.RENAME_IN.size),
    Opcode.RENAME2: ("_rename2", "rename", P.RENAME2_IN.size),
    Opcode.STATFS: ("_statfs", "statfs", None),
    Opcode.GETXATTR: ("_getxattr", "getxattr", None),
    Opcode.LISTXATTR: ("_listxattr", "listxattr", None),
    Opcode.SETXATTR: ("_setxattr", "setxattr", None),
    Opcode.REMOVEXATTR: ("_removexattr", "removexattr", None),
}


class Dispatcher:
    """The opcode table over one tree. ``owner``: the mount's uid/gid (user_id/group_id);
    ``uid``/``gid``/``umask``: the -o options, applied to attributes as the adapter does
    (the owner and group of every file; umask only removes permission bits);
    ``allow_root``: requests from anyone but the owner and root are EACCES."""

    def __init__(self, tree: Tree, owner: Optional[Tuple[int, int]] = None, uid: Optional[int] = None,
                 gid: Optional[int] = None, umask: int = 0, allow_root: bool = False):
        self.tree = tree
        self._count = tree.requests.count
        owner = owner or (os.geteuid(), os.getegid())
        self._owner_uid = owner[0]
        self._uid = owner[0] if uid is None else uid
        self._gid = owner[1] if gid is None else gid
        self._perm_mask = ~(umask & 0o777)
        self._allow_root = allow_root
        root = Entry(P.ROOT_ID, tree.root, None, "", 1)
        self._entries: Dict[int, Entry] = {P.ROOT_ID: root}
        self._dentries: Dict[Tuple[int, str], Entry] = {}  # (parent id, name) -> the entry a LOOKUP gave
        self._ids = count(P.ROOT_ID + 1)
        self._handles: Dict[int, tuple] = {}  # fh -> (handle, entry)
        self._dirs: Dict[int, DirHandle] = {}
        self._fhs = count(1)
        start = time.time_ns()
        self._times = Times(start)
        self._looked_up: List[Entry] = []  # lookups the current reply carries (undone if it is lost)
        self._op = ""
        self.minor: Optional[int] = None  # the negotiated protocol minor, once INIT is answered
        self.initialized = False
        self.destroyed = False
        table: List[Optional[tuple]] = [None] * (max(OPS) + 1)
        for opcode, (method, op, name_at) in OPS.items():
            table[opcode] = (getattr(self, method), op, name_at)
        self._table = table

    # -- the one entry point -------------------------------------------------------------

    def handle(self, req) -> Optional[list]:
        """One request (a memoryview holding exactly it) -> the reply's buffers, or None.
        A handler returns its payload (bytes-like, or a tuple of parts), None for no
        reply, or a negative errno for an error answered without an exception."""
        length, opcode, unique, nodeid = _HEAD.unpack_from(req)
        row = self._table[opcode] if opcode < len(self._table) else None
        if row is None:
            log.debug("opcode %d (%s) not implemented: ENOSYS", opcode, opcode_name(opcode))
            return [_OUT.pack(_OUT_SIZE, -errno.ENOSYS, unique)]
        if self._allow_root and opcode not in FOR_ANYONE:
            uid = P.IN_HEADER.unpack_from(req)[4]
            if uid != 0 and uid != self._owner_uid:
                return [_OUT.pack(_OUT_SIZE, -AccessDenied.errno, unique)]
        fn, self._op, name_at = row
        if self._looked_up:
            self._looked_up = []
        body = req[_HEADER:length]
        try:
            out = fn(nodeid, body)
        except TdxfsError as exc:
            self._log_refusal(exc, nodeid, body, name_at)
            return [_OUT.pack(_OUT_SIZE, -exc.errno, unique)]
        except Exception:  # a bug: say where, answer EIO, keep serving
            log.exception("bug: %s (%s) on node %d failed", self._op, opcode_name(opcode), nodeid)
            self._looked_up = []
            return [_OUT.pack(_OUT_SIZE, -errno.EIO, unique)]
        if out is None:
            return None
        cls = out.__class__
        if cls is int:  # an error answered without an exception (a probe)
            return [_OUT.pack(_OUT_SIZE, out, unique)]
        if cls is tuple:  # a payload in parts: one writev, no copy to join them
            return [_OUT.pack(_OUT_SIZE + sum(map(len, out)), 0, unique), *out]
        return [_OUT.pack(_OUT_SIZE + len(out), 0, unique), out]

    def reply_lost(self) -> None:
        """The kernel refused our reply (ENOENT: the request was interrupted and is gone):
        the lookups that reply carried never reached it, so they are taken back."""
        for entry in self._looked_up:
            self._unref(entry, 1)
        self._looked_up = []

    # -- entries ---------------------------------------------------------------------------

    def _entry(self, nodeid: int) -> Entry:
        try:
            return self._entries[nodeid]
        except KeyError:
            raise NoSuchEntry(f"node id {nodeid} is not known (forgotten or never looked up)") from None

    def _link(self, parent: Entry, name: str, node) -> Entry:
        """One more lookup of ``name`` in ``parent``: its entry, made or reused."""
        key = (parent.nodeid, name)
        entry = self._dentries.get(key)
        if entry is not None and same_node(entry.node, node):
            entry.nlookup += 1
        else:
            entry = Entry(next(self._ids), node, parent, name, 1)
            self._entries[entry.nodeid] = entry
            self._dentries[key] = entry
        self._looked_up.append(entry)
        return entry

    def _unref(self, entry: Entry, n: int) -> None:
        entry.nlookup -= n
        if entry.nlookup <= 0 and entry.nodeid != P.ROOT_ID:
            self._entries.pop(entry.nodeid, None)
            key = (entry.parent.nodeid, entry.name)
            if self._dentries.get(key) is entry:
                del self._dentries[key]

    def _path(self, entry: Optional[Entry], name: Optional[str] = None) -> str:
        parts = [] if name is None else [name]
        while entry is not None and entry.parent is not None:
            parts.append(entry.name)
            entry = entry.parent
        return "/" + "/".join(reversed(parts))

    def _kind_at(self, parent: Entry, name: str) -> str:
        """What /.stats counts a request for ``name`` in ``parent`` under: the node's kind,
        else what the directory calls an absent name (as ``Tree.kind`` decides)."""
        child = getattr(parent.node, "child", None)
        if child is not None:
            try:
                return child(name).kind
            except TdxfsError:
                pass
        return getattr(parent.node, "absent_kind", "missing")

    def _attr(self, entry: Entry) -> tuple:
        """fuse_attr's values for ``entry`` (st_ino is the node id, as libfuse gives it)."""
        attrs = entry.node.attrs()
        times = self._times
        atime, mtime, ctime = times.of(self._path(entry)) if times.by_path else times.start
        a_s, a_ns = divmod(atime, 1_000_000_000)
        m_s, m_ns = divmod(mtime, 1_000_000_000)
        c_s, c_ns = divmod(ctime, 1_000_000_000)
        return (entry.nodeid, attrs["st_size"], 0, a_s, m_s, c_s, a_ns, m_ns, c_ns,
                attrs["st_mode"] & self._perm_mask, attrs["st_nlink"], self._uid, self._gid, 0, 0, 0)

    def _entry_out(self, entry: Entry) -> bytes:
        return P.ENTRY_OUT.pack(entry.nodeid, 0, TIMEOUT, entry.attr_valid, 0, 0, *self._attr(entry))

    def _log_refusal(self, exc: TdxfsError, nodeid: int, body, name_at: Optional[int]) -> None:
        level = logging.DEBUG if exc.probe else logging.WARNING
        if not log.isEnabledFor(level):
            return
        entry = self._entries.get(nodeid)
        name = None if name_at is None else os.fsdecode(P.name_at(body, name_at))
        path = self._path(entry, name) if entry is not None else f"(node id {nodeid})"
        log.log(level, "rejected %s %s: %s (%s)", self._op, printable(path),
                errno.errorcode.get(exc.errno, exc.errno), printable(exc.reason, backslash=False))

    # -- session ---------------------------------------------------------------------------

    def _init(self, nodeid, body):
        major, minor, readahead, flags = P.INIT_IN_COMPAT.unpack_from(body)
        if major > P.KERNEL_VERSION:  # the kernel will send another INIT, for our major
            return P.INIT_OUT.pack(P.KERNEL_VERSION, P.KERNEL_MINOR_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, *(0,) * 7)
        if major < P.KERNEL_VERSION or minor < P.OLDEST_MINOR:
            log.error("the kernel speaks FUSE %d.%d; this transport needs %d.%d or later",
                      major, minor, P.KERNEL_VERSION, P.OLDEST_MINOR)
            return -errno.EPROTO
        if flags & P.FUSE_INIT_EXT and len(body) >= P.INIT_IN.size:
            flags |= P.INIT_IN.unpack_from(body)[4] << 32
        self.minor = min(minor, P.KERNEL_MINOR_VERSION)
        self._count("init", self.tree.root.kind)
        granted = WANTED_FLAGS & flags
        self.tree.requests.server["protocol"] = f"{P.KERNEL_VERSION}.{self.minor}"
        self.initialized = True
        log.debug("INIT: kernel %d.%d flags %#x; answered %d.%d flags %#x max_write %d", major, minor, flags,
                  P.KERNEL_VERSION, self.minor, granted, MAX_WRITE)
        return P.INIT_OUT.pack(P.KERNEL_VERSION, self.minor, readahead, granted, 0, 0, MAX_WRITE, 0, MAX_PAGES,
                               0, 0, *(0,) * 7)

    def _destroy(self, nodeid, body):
        self.destroyed = True
        return b""

    def _interrupt(self, nodeid, body):
        # One request at a time: by the time an INTERRUPT is read, the request it names has
        # been answered. The protocol lets a server ignore it (no reply).
        return None

    # -- names -------------------------------------------------------------------------------

    def _lookup(self, nodeid, body):
        parent = self._entry(nodeid)
        name = os.fsdecode(P.name_at(body, 0))
        child = getattr(parent.node, "child", None)
        if child is None:
            self._count("getattr", "missing")
            raise NoSuchEntry(f"{self._path(parent)} is not a directory")
        try:
            node = child(name)
        except TdxfsError:
            self._count("getattr", getattr(parent.node, "absent_kind", "missing"))
            self._dentries.pop((nodeid, name), None)
            raise
        entry = self._link(parent, name, node)
        self._count("getattr", entry.kind)
        return self._entry_out(entry)

    def _forget(self, nodeid, body):
        entry = self._entries.get(nodeid)
        if entry is not None:
            self._unref(entry, P.FORGET_IN.unpack_from(body)[0])
        return None

    def _batch_forget(self, nodeid, body):
        n = P.BATCH_FORGET_IN.unpack_from(body)[0]
        start = P.BATCH_FORGET_IN.size
        entries = self._entries
        for forgotten, nlookup in P.FORGET_ONE.iter_unpack(body[start : start + n * P.FORGET_ONE.size]):
            entry = entries.get(forgotten)
            if entry is not None:
                self._unref(entry, nlookup)
        return None

    # -- attributes ----------------------------------------------------------------------------

    def _getattr(self, nodeid, body):
        entry = self._entry(nodeid)
        self._count("getattr", entry.kind)
        return P.ATTR_OUT.pack(entry.attr_valid, 0, 0, *self._attr(entry))

    def _setattr(self, nodeid, body):
        """As libfuse's high-level API splits it: chmod, chown, truncate, utimens, in this
        order, the first refusal ending it; then the attributes."""
        (valid, _, _fh, size, _owner, atime, mtime, _ctime, atimensec, mtimensec, _ctimensec, _mode,
         _, _uid, _gid, _) = P.SETATTR_IN.unpack_from(body)
        entry = self._entry(nodeid)
        done = False
        if valid & P.FATTR_MODE:
            self._op = "chmod"
            self._count("chmod", entry.kind)
            self._refuse_in(entry.parent, "chmod")
        if valid & (P.FATTR_UID | P.FATTR_GID):
            self._op = "chown"
            self._count("chown", entry.kind)
            self._refuse_in(entry.parent, "chown")
        if valid & P.FATTR_SIZE:
            self._op = "truncate"
            self._count("truncate", entry.kind)
            if isinstance(entry.node, Directory):
                raise IsADirectory(f"{self._path(entry)} is a directory")
            entry.node.truncate(size)
            done = True
        if valid & (P.FATTR_ATIME | P.FATTR_MTIME):
            self._op = "utimens"
            self._count("utimens", entry.kind)
            now = time.time_ns()
            a = now if valid & P.FATTR_ATIME_NOW else atime * 1_000_000_000 + atimensec \
                if valid & P.FATTR_ATIME else None
            m = now if valid & P.FATTR_MTIME_NOW else mtime * 1_000_000_000 + mtimensec \
                if valid & P.FATTR_MTIME else None
            self._times.update(self._path(entry), a, m, now)
            done = True
        if not done:
            self._count("getattr", entry.kind)
        return P.ATTR_OUT.pack(entry.attr_valid, 0, 0, *self._attr(entry))

    # -- files ------------------------------------------------------------------------------------

    def _open(self, nodeid, body):
        flags = P.OPEN_IN.unpack_from(body)[0]
        entry = self._entry(nodeid)
        self._count("open", entry.kind)
        node = entry.node
        if isinstance(node, Directory):
            raise IsADirectory(f"{self._path(entry)} is a directory")
        handle = node.open(flags)
        fh = next(self._fhs)
        self._handles[fh] = (handle, entry)
        return P.OPEN_OUT.pack(fh, OPEN_FLAGS if handle.commits_on_close else OPEN_FLAGS | P.FOPEN_NOFLUSH, 0)

    def _read(self, nodeid, body):
        fh, offset, size = _IO.unpack_from(body)
        handle, entry = self._handles[fh]
        self._count("read", entry.kind)
        return handle.read(size, offset)

    def _write(self, nodeid, body):
        fh, offset, size = _IO.unpack_from(body)
        handle, entry = self._handles[fh]
        self._count("write", entry.kind)
        start = P.WRITE_IN.size
        return P.WRITE_OUT.pack(handle.write(body[start : start + size], offset), 0)

    def _flush(self, nodeid, body):
        handle, entry = self._handles[_FH.unpack_from(body)[0]]
        self._count("flush", entry.kind)
        handle.flush()
        return b""

    def _release(self, nodeid, body):
        handle, entry = self._handles.pop(_FH.unpack_from(body)[0])
        self._count("release", entry.kind)
        handle.release()
        return b""

    def _ioctl(self, nodeid, body):
        fh, flags, cmd, _arg, in_size, out_size = _IOCTL_IN.unpack_from(body)
        slot = None if flags & P.FUSE_IOCTL_DIR else self._handles.get(fh)
        entry = slot[1] if slot is not None else self._entry(nodeid)
        self._count("ioctl", entry.kind)
        if cmd in TERMINAL_PROBES:
            return -NotATty.errno
        if flags & P.FUSE_IOCTL_UNRESTRICTED:
            raise NotATty(f"ioctl {cmd:#010x}: unrestricted ioctls need CUSE, a FUSE file serves only "
                          "well-formed ones")
        if slot is None:
            raise NotATty(f"{self._path(entry)} is a directory: no ioctl")
        # The kernel copied _IOC_SIZE(cmd) bytes in for _IOC_WRITE (in_size); an _IOR command
        # brings none, and the handler sees zeros, as with libfuse.
        request = bytes(body[_IOCTL_IN_SIZE : _IOCTL_IN_SIZE + in_size]) if in_size else bytes(linuxabi.ioc_size(cmd))
        reply = slot[0].ioctl(cmd, request)
        if len(reply) != out_size:
            if len(reply) > out_size:
                reply = reply[:out_size]
            else:  # what the handler left unwritten is the caller's own bytes, as with libfuse
                reply = bytes(reply) + request[len(reply) : out_size]
                reply += bytes(out_size - len(reply))
        return (_IOCTL_DONE, reply) if reply else _IOCTL_DONE

    def _statfs(self, nodeid, body):
        self._count("statfs", self._entry(nodeid).kind)
        return P.KSTATFS.pack(0, 0, 0, 0, 0, BLOCK_SIZE, NAME_MAX, BLOCK_SIZE, 0, *(0,) * 6)

    # -- directories ----------------------------------------------------------------------------

    def _opendir(self, nodeid, body):
        entry = self._entry(nodeid)
        self._count("opendir", entry.kind)
        if not isinstance(entry.node, Directory):
            raise NoSuchEntry(f"{self._path(entry)} is not a directory")
        fh = next(self._fhs)
        self._dirs[fh] = DirHandle(entry)
        return P.OPEN_OUT.pack(fh, 0, 0)

    def _releasedir(self, nodeid, body):
        dh = self._dirs.pop(_FH.unpack_from(body)[0])
        self._count("releasedir", dh.entry.kind)
        return b""

    def _listing(self, body) -> Tuple[DirHandle, int, int]:
        fh, offset, size = _IO.unpack_from(body)
        dh = self._dirs[fh]
        self._count("readdir", dh.entry.kind)
        if dh.names is None or offset == 0:
            dh.names = [".", "..", *dh.entry.node.names()]
        return dh, offset, size

    def _readdir(self, nodeid, body):
        return self._dirents(body, plus=False)

    def _readdirplus(self, nodeid, body):
        """READDIR with each entry's fuse_entry_out: every entry with a node id counts as
        one lookup (the kernel links it, or forgets it at once); '.' and '..' carry node
        id 0, which the kernel skips without counting."""
        return self._dirents(body, plus=True)

    def _dirents(self, body, plus: bool) -> bytes:
        """One READDIR(PLUS) reply: as many whole records as fit, from the listing's offset."""
        dh, offset, size = self._listing(body)
        entry, names = dh.entry, dh.names
        describe = self._dirent_plus if plus else self._dirent
        head_size = P.ENTRY_OUT.size if plus else 0
        out = bytearray()
        for index in range(offset, len(names)):
            name = names[index]
            raw = os.fsencode(name)
            record = P.dirent_size(len(raw), plus=plus)
            if len(out) + record > size:
                break
            if index < 2:
                ino = entry.nodeid if index == 0 else (entry.parent or entry).nodeid
                head, dtype = _ZERO_ENTRY, stat.S_IFDIR >> 12
            else:
                head, ino, dtype = describe(entry, name)
            if plus:
                out += head
            out += P.DIRENT.pack(ino, index + 1, len(raw), dtype)
            out += raw
            out += bytes(record - head_size - P.DIRENT.size - len(raw))
        return bytes(out)

    def _dirent(self, entry: Entry, name: str) -> Tuple[bytes, int, int]:
        """A plain READDIR record's inode (if the kernel already has the node) and type."""
        known = self._dentries.get((entry.nodeid, name))
        ino = known.nodeid if known is not None else UNKNOWN_INO
        try:
            dtype = stat.S_IFMT(entry.node.child(name).mode) >> 12
        except TdxfsError:  # gone since the listing was taken
            dtype = 0
        return b"", ino, dtype

    def _dirent_plus(self, entry: Entry, name: str) -> Tuple[bytes, int, int]:
        """A READDIRPLUS record: the entry is looked up (and counted) as LOOKUP would."""
        try:
            found = self._link(entry, name, entry.node.child(name))
        except TdxfsError:  # gone since the listing was taken: a name only
            return _ZERO_ENTRY, UNKNOWN_INO, 0
        return self._entry_out(found), found.nodeid, stat.S_IFMT(found.node.mode) >> 12

    def _mkdir(self, nodeid, body):
        parent = self._entry(nodeid)
        name = os.fsdecode(P.name_at(body, P.MKDIR_IN.size))
        self._count("mkdir", self._kind_at(parent, name))
        node = parent.node
        if not isinstance(node, Directory):
            raise NoSuchEntry(f"{self._path(parent)} is not a directory")
        node.make_dir(name)
        return self._entry_out(self._link(parent, name, node.child(name)))

    def _rmdir(self, nodeid, body):
        parent = self._entry(nodeid)
        name = os.fsdecode(P.name_at(body, 0))
        self._count("rmdir", self._kind_at(parent, name))
        node = parent.node
        if not isinstance(node, Directory):
            raise NoSuchEntry(f"{self._path(parent)} is not a directory")
        node.remove_dir(name)
        self._dentries.pop((nodeid, name), None)  # its id lives on until the kernel forgets it
        if self._times.by_path:
            self._times.forget(self._path(parent, name))
        return b""

    # -- namespace changes this interface refuses (the directory decides the errno) ---------------

    def _refuse_in(self, parent: Optional[Entry], what: str) -> None:
        """``Tree.refuse``: the directory the name is in answers, else the root."""
        node = parent.node if parent is not None else self.tree.root
        refuse = getattr(node, "refuse", None) or self.tree.root.refuse
        refuse(what)
        raise NotPermitted(f"{what} is not supported")  # a directory's refuse always raises

    def _refused_name(self, op: str, what: str, nodeid, name: bytes) -> None:
        parent = self._entry(nodeid)
        self._count(op, self._kind_at(parent, os.fsdecode(name)))
        self._refuse_in(parent, what)

    def _create(self, nodeid, body):
        self._refused_name("create", "create", nodeid, P.name_at(body, P.CREATE_IN.size))

    def _mknod(self, nodeid, body):
        # A regular file is a create, to Linux and to libfuse's high-level API (see the adapter)
        if stat.S_ISREG(P.MKNOD_IN.unpack_from(body)[0]):
            self._op = "create"
        self._refused_name(self._op, self._op, nodeid, P.name_at(body, P.MKNOD_IN.size))

    def _unlink(self, nodeid, body):
        self._refused_name("unlink", "unlink", nodeid, P.name_at(body, 0))

    def _symlink(self, nodeid, body):
        self._refused_name("symlink", "symlink", nodeid, P.name_at(body, 0))

    def _hardlink(self, nodeid, body):
        self._refused_name("link", "link", nodeid, P.name_at(body, P.LINK_IN.size))

    def _rename(self, nodeid, body, head=P.RENAME_IN):
        newdir = head.unpack_from(body)[0]
        old, new = P.names_at(body, head.size, 2)
        target = self._entries.get(newdir)
        new_path = self._path(target, os.fsdecode(new)) if target is not None else os.fsdecode(new)
        self._refused_name("rename", f"rename to {new_path}", nodeid, old)

    def _rename2(self, nodeid, body):
        self._rename(nodeid, body, P.RENAME2_IN)

    # -- extended attributes: none stored (the adapter's answers) ----------------------------------

    def _no_xattr(self, entry: Entry, name: str, probe: bool) -> TdxfsError:
        if getattr(entry.node, "xattr_handlers", True):
            return NoAttribute(f"no extended attribute {name} (none is stored)", probe=probe)
        return NotSupported("configfs has no extended attributes", probe=probe)

    def _getxattr(self, nodeid, body):
        entry = self._entry(nodeid)
        self._count("getxattr", entry.kind)
        raise self._no_xattr(entry, os.fsdecode(P.name_at(body, P.GETXATTR_IN.size)), probe=True)

    def _listxattr(self, nodeid, body):
        entry = self._entry(nodeid)
        self._count("listxattr", entry.kind)
        if P.GETXATTR_IN.unpack_from(body)[0] == 0:  # a size query: the list is empty
            return P.GETXATTR_OUT.pack(0, 0)
        return b""

    def _setxattr(self, nodeid, body):
        entry = self._entry(nodeid)
        self._count("setxattr", entry.kind)
        name = os.fsdecode(P.name_at(body, P.SETXATTR_IN.size))
        raise NotSupported(f"extended attributes are not stored (setxattr {name})")

    def _removexattr(self, nodeid, body):
        entry = self._entry(nodeid)
        self._count("removexattr", entry.kind)
        raise self._no_xattr(entry, os.fsdecode(P.name_at(body, 0)), probe=False)


def opcode_name(opcode: int) -> str:
    try:
        return Opcode(opcode).name
    except ValueError:
        return str(opcode)


def check_table(cls, table) -> None:
    """The opcode table and the handlers agree, checked once when the module loads: every
    row is an ``Opcode`` naming a method of ``cls``, and every method shaped like a handler
    (``(self, nodeid, body, ...)``) is some row's, so a misspelled name on either side is an
    error at start-up, not an ENOSYS the first time the kernel sends that opcode."""
    named = set()
    for opcode, (method, _op, _name_at) in table.items():
        if not isinstance(opcode, Opcode):
            raise TypeError(f"opcode table: {opcode!r} is not an Opcode")
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"opcode table: {opcode.name} names {cls.__name__}.{method}, which does not exist")
        named.add(method)
    for name, fn in vars(cls).items():
        if inspect.isfunction(fn) and list(inspect.signature(fn).parameters)[1:3] == ["nodeid", "body"] \
                and name not in named:
            raise TypeError(f"{cls.__name__}.{name} looks like a handler but no opcode table row names it")


check_table(Dispatcher, OPS)
