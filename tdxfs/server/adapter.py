"""The thin FUSE adapter: callbacks mapped onto the file tree, errors onto errnos.

Each callback is a line or two over :class:`tdxfs.files.tree.Tree`. A refused request
arrives as a ``TdxfsError`` that already carries its errno; ``_served`` logs one line
(operation, path, errno, reason) and hands the errno to FUSE. Anything else escaping is
a bug: the binding returns EINVAL and logs a traceback.

FLUSH only where close() must act: every open sets FOPEN_NOFLUSH except for files whose
handle commits on close (configfs inblob), so other files close without a round trip.
Where the binding cannot set FOPEN_NOFLUSH (libfuse2), there is no flush callback at all
and such commits happen at the (asynchronous) RELEASE instead.

Log lines: the path and the reason are passed through ``printable`` (tdxfs/errors.py), so a
name with a newline, or one that is not UTF-8, is one escaped line like any other.

Mount options ``uid=``, ``gid=``, ``umask=`` are applied here, not by libfuse (see
``_mount_options``): libfuse's high-level API would replace the permission bits of every
getattr reply with ``0777 & ~umask`` (lib/fuse.c, ``set_stat``), which widens ``tdx_guest``
from 0600 to 0755 with ``umask=022``. Here ``umask`` only ever removes bits.

Answers the kernel's own filesystems give where FUSE lets a server give them too:
- utimensat/touch: the times are stored per path and shown by getattr, as kernfs and
  configfs store them (``kernfs_iop_setattr``, ``configfs_setattr``); the kernel has
  checked the caller may set them (owner or CAP_FOWNER; write permission for "now").
- extended attributes: none is ever stored. listxattr: empty. getxattr: ENODATA on the
  sysfs-like files (kernfs has xattr handlers, these files hold no attribute), EOPNOTSUPP
  in configfs (no handlers); a miss is an answer, logged at debug level like a lookup miss.
  setxattr: EOPNOTSUPP (logged); removexattr: ENODATA, or EOPNOTSUPP in configfs (logged).
- O_TRUNC: an OPEN then a SETATTR (size 0, a no-op) whose reply carries the real size, with
  libfuse3 as with libfuse2 (``FlushingOperations.init_with_config``), so the size a
  sendfile/splice reader is told is the size a read returns.
What FUSE cannot imitate is listed in the README ("What FUSE cannot imitate").
"""

import ctypes
import errno
import functools
import itertools
import logging
import os
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from tdxfs import linuxabi
from tdxfs.errors import NoAttribute, NotATty, NotSupported, TdxfsError, printable
from tdxfs.files.nodes import Handle
from tdxfs.files.tree import Tree
from tdxfs.server.binding import HAS_NOFLUSH, FuseOSError

log = logging.getLogger("tdxfs")


def _served(op: str):
    """Count the request, run it, and turn a refusal into its errno with one log line."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(self, path, *args):
            self._tree.requests.count(op, self._tree.kind(path))
            try:
                return fn(self, path, *args)
            except TdxfsError as exc:
                # A probe (a lookup miss, Python's TCGETS) is an answer, not a refused request.
                level = logging.DEBUG if exc.probe else logging.WARNING
                log.log(level, "rejected %s %s: %s (%s)", op, printable(str(path)),
                        errno.errorcode.get(exc.errno, exc.errno), printable(exc.reason, backslash=False))
                raise FuseOSError(exc.errno) from exc

        return call

    return wrap


# utimensat's special values, as libfuse passes them (tv_sec 0): set to now, leave unchanged
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


class Times:
    """atime, mtime, ctime by path: the mount's start for every file until a utimensat sets
    them (kept in memory, as kernfs and configfs keep them on the inode); forgotten with
    the directory that held them (a configfs rmdir), so a new instance of the same name
    starts afresh."""

    def __init__(self, start: int):
        self._start = (start, start, start)
        self._set: Dict[str, Tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    def of(self, path: str) -> Tuple[int, int, int]:
        return self._set.get(path, self._start)

    def update(self, path: str, times: Optional[Tuple[int, int]]) -> None:
        now = time.time_ns()
        with self._lock:
            atime, mtime, _ = self._set.get(path, self._start)
            if times is None:
                atime = mtime = now
            else:
                atime, mtime = (now if t == UTIME_NOW else old if t == UTIME_OMIT else t
                                for t, old in zip(times, (atime, mtime)))
            self._set[path] = (atime, mtime, now)

    def forget(self, path: str) -> None:
        if not self._set:
            return
        inside = path.rstrip("/") + "/"
        with self._lock:
            for name in [p for p in self._set if p == path or p.startswith(inside)]:
                del self._set[name]


class TdxfsOperations:
    use_ns = True  # times in nanoseconds (mfusepy/fusepy setting, not a callback)
    # libfuse2: pass UTIME_NOW/UTIME_OMIT on, as libfuse3 always does; without it libfuse2
    # drops a setattr of one time only (touch -a) and reports success.
    flag_utime_omit_ok = 1

    def __init__(self, tree: Tree, on_ready: Optional[Callable[[], None]] = None):
        self._tree = tree
        self._on_ready = on_ready
        self._handles: Dict[int, Handle] = {}
        self._fhs = itertools.count(1)  # next() is atomic under the GIL: safe with --threads
        self._times = Times(time.time_ns())
        self._owner = (os.getuid(), os.getgid())
        self._umask = 0
        self.is_ready = False

    def _mount_options(self, options: Dict[str, object]) -> Dict[str, object]:
        """Take ``uid=``, ``gid=``, ``umask=`` out of the options meant for libfuse and apply
        them in getattr: uid/gid name the owner and group of every file, umask removes
        permission bits (``mode & ~umask``) and never adds one, so tdx_guest stays 0600
        and a read-only file stays read-only whatever the options say. Returns the rest."""
        rest = dict(options)
        uid, gid = self._owner
        if "uid" in rest:
            uid = int(rest.pop("uid"))
        if "gid" in rest:
            gid = int(rest.pop("gid"))
        if "umask" in rest:
            self._umask = int(str(rest.pop("umask")), 8) & 0o777
        self._owner = (uid, gid)
        return rest

    def _handle(self, fi) -> Handle:
        return self._handles[fi.fh]  # raw_fi: callbacks get fuse_file_info, our handle is fi.fh

    @_served("init")
    def init(self, path):
        self.is_ready = True
        if self._on_ready:
            self._on_ready()

    @_served("getattr")
    def getattr(self, path, fh=None):
        attrs = self._tree.attrs(path)
        atime, mtime, ctime = self._times.of(path)
        return {**attrs, "st_mode": attrs["st_mode"] & ~self._umask, "st_uid": self._owner[0],
                "st_gid": self._owner[1], "st_atime": atime, "st_mtime": mtime, "st_ctime": ctime}

    @_served("utimens")
    def utimens(self, path, times=None):
        self._tree.lookup(path)
        self._times.update(path, times)
        return 0

    # -- extended attributes: none stored; sysfs's answers, configfs's where it has none

    def _no_xattr(self, path, name, probe: bool) -> TdxfsError:
        if getattr(self._tree.lookup(path), "xattr_handlers", True):
            return NoAttribute(f"no extended attribute {name} (none is stored)", probe=probe)
        return NotSupported("configfs has no extended attributes", probe=probe)

    @_served("listxattr")
    def listxattr(self, path):
        self._tree.lookup(path)
        return []

    @_served("getxattr")
    def getxattr(self, path, name, position=0):
        raise self._no_xattr(path, name, probe=True)

    @_served("setxattr")
    def setxattr(self, path, name, value, options, position=0):
        self._tree.lookup(path)
        raise NotSupported(f"extended attributes are not stored (setxattr {name})")

    @_served("removexattr")
    def removexattr(self, path, name):
        raise self._no_xattr(path, name, probe=False)

    @_served("readdir")
    def readdir(self, path, fh):
        return [".", "..", *self._tree.listdir(path)]

    @_served("open")
    def open(self, path, fi):
        handle = self._tree.open(path, fi.flags)
        fh = next(self._fhs)
        self._handles[fh] = handle
        fi.fh = fh
        if HAS_NOFLUSH and not handle.commits_on_close:
            fi.noflush = 1
        return 0

    @_served("read")
    def read(self, path, size, offset, fi):
        return self._handle(fi).read(size, offset)

    @_served("write")
    def write(self, path, data, offset, fi):
        return self._handle(fi).write(data, offset)

    @_served("truncate")
    def truncate(self, path, length, fh=None):
        self._tree.truncate(path, length)

    @_served("release")
    def release(self, path, fi):
        self._handles.pop(fi.fh).release()

    @_served("mkdir")
    def mkdir(self, path, mode):
        self._tree.mkdir(path)

    @_served("rmdir")
    def rmdir(self, path):
        self._tree.rmdir(path)
        self._times.forget(path)

    # mknod(2) of a regular file is a create, to Linux (do_mknodat calls vfs_create, which a
    # directory without ->create answers EACCES) and to libfuse's high-level API (which
    # serves a regular-file MKNOD with this callback): both are answered here, as the
    # directory answers a create. FIFOs, sockets and devices come to mknod (EPERM).
    @_served("create")
    def create(self, path, mode, fi=None):
        self._tree.refuse("create", path)

    @_served("mknod")
    def mknod(self, path, mode, dev):
        self._tree.refuse("mknod", path)

    @_served("unlink")
    def unlink(self, path):
        self._tree.refuse("unlink", path)

    @_served("rename")
    def rename(self, old, new):
        self._tree.refuse(f"rename to {new}", old)

    @_served("symlink")
    def symlink(self, target, source):
        self._tree.refuse("symlink", target)  # target: the new link's path

    @_served("link")
    def link(self, target, source):
        self._tree.refuse("link", target)

    @_served("chmod")
    def chmod(self, path, mode):
        self._tree.refuse("chmod", path)

    @_served("chown")
    def chown(self, path, uid, gid):
        self._tree.refuse("chown", path)

    @_served("ioctl")
    def ioctl(self, path, cmd, arg, fi, flags, data):
        # ``data`` is libfuse's copy of the caller's buffer (_IOC_SIZE bytes); ``arg`` is
        # the caller's own address and is never touched.
        cmd &= 0xFFFFFFFF  # libfuse2 passes a signed int
        size = linuxabi.ioc_size(cmd)
        request = ctypes.string_at(data, size) if size and data and linuxabi.ioc_writes(cmd) else bytes(size)
        handle = self._handles.get(fi.fh)
        if handle is None:  # a directory: libfuse answers OPENDIR itself, so no handle of ours
            raise NotATty(f"{path} is a directory: no ioctl", probe=cmd == linuxabi.TCGETS)
        reply = handle.ioctl(cmd, request)
        if reply and data and linuxabi.ioc_reads(cmd):
            ctypes.memmove(data, reply, min(len(reply), size))
        return 0

    @_served("statfs")
    def statfs(self, path):
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}


# fuse_common.h: the kernel truncates at OPEN for O_TRUNC (libfuse3 asks for it by default)
FUSE_CAP_ATOMIC_O_TRUNC = 1 << 3


class FlushingOperations(TdxfsOperations):
    """libfuse3 (FOPEN_NOFLUSH available): FLUSH reaches only the files that asked for it,
    and O_TRUNC is not atomic (see ``init_with_config``)."""

    def init_with_config(self, conn, config):
        """Ask the kernel for OPEN + SETATTR(size 0) on O_TRUNC, as libfuse2 always does,
        instead of an atomic truncating OPEN: with the atomic one the kernel sets the file's
        size to 0 itself and keeps that until it fetches the attributes again, so a
        ``sendfile``/``splice`` reader after ``: > reportdata`` (or after a short write
        behind O_TRUNC) got 0 bytes, or the written length, for up to the 1 s attribute
        timeout. The SETATTR's reply carries the real size (truncation changes nothing
        here), and lookups and attributes stay cached for every other request."""
        if conn is not None:
            conn.want &= ~FUSE_CAP_ATOMIC_O_TRUNC
        self.init("/")

    @_served("flush")
    def flush(self, path, fi):
        self._handle(fi).flush()


def operations(tree: Tree, on_ready: Optional[Callable[[], None]] = None) -> TdxfsOperations:
    return (FlushingOperations if HAS_NOFLUSH else TdxfsOperations)(tree, on_ready)
