"""The thin FUSE adapter: callbacks mapped onto the file tree, errors onto errnos.

Each callback is a line or two over :class:`tdxfs.files.table.Tree`. A refused request
arrives as a ``TdxfsError`` that already carries its errno; ``_served`` logs one line
(operation, path, errno, reason) and hands the errno to FUSE. Anything else escaping is
a bug: the binding returns EINVAL and logs a traceback.

FLUSH only where close() must act: every open sets FOPEN_NOFLUSH except for files whose
handle commits on close (configfs inblob), so other files close without a round trip.
Where the binding cannot set FOPEN_NOFLUSH (libfuse2), there is no flush callback at all
and such commits happen at the (asynchronous) RELEASE instead.
"""

import ctypes
import errno
import functools
import itertools
import logging
import os
import time
from typing import Callable, Dict, Optional

from tdxfs import linuxabi
from tdxfs.errors import NotATty, TdxfsError
from tdxfs.files.table import SnapshotHandle, Tree
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
                log.log(level, "rejected %s %s: %s (%s)", op, path, errno.errorcode.get(exc.errno, exc.errno), exc.reason)
                raise FuseOSError(exc.errno) from exc

        return call

    return wrap


class TdxfsOperations:
    use_ns = True  # times in nanoseconds (mfusepy/fusepy setting, not a callback)

    def __init__(self, tree: Tree, on_ready: Optional[Callable[[], None]] = None):
        self._tree = tree
        self._on_ready = on_ready
        self._handles: Dict[int, SnapshotHandle] = {}
        self._fhs = itertools.count(1)  # next() is atomic under the GIL: safe with --threads
        self._times = time.time_ns()
        self._owner = (os.getuid(), os.getgid())
        self.is_ready = False

    def _handle(self, fi) -> SnapshotHandle:
        return self._handles[fi.fh]  # raw_fi: callbacks get fuse_file_info, our handle is fi.fh

    @_served("init")
    def init(self, path):
        self.is_ready = True
        if self._on_ready:
            self._on_ready()

    @_served("getattr")
    def getattr(self, path, fh=None):
        attrs = self._tree.attrs(path)
        t = self._times
        return {**attrs, "st_uid": self._owner[0], "st_gid": self._owner[1],
                "st_atime": t, "st_mtime": t, "st_ctime": t}

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

    @_served("create")
    def create(self, path, mode, fi=None):
        self._tree.refuse("create", path)

    @_served("mknod")
    def mknod(self, path, mode, dev):
        self._tree.refuse("mknod")

    @_served("unlink")
    def unlink(self, path):
        self._tree.refuse("unlink")

    @_served("rename")
    def rename(self, old, new):
        self._tree.refuse(f"rename to {new}")

    @_served("symlink")
    def symlink(self, target, source):
        self._tree.refuse("symlink")

    @_served("link")
    def link(self, target, source):
        self._tree.refuse("link")

    @_served("chmod")
    def chmod(self, path, mode):
        self._tree.refuse("chmod")

    @_served("chown")
    def chown(self, path, uid, gid):
        self._tree.refuse("chown")

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


class FlushingOperations(TdxfsOperations):
    """With FOPEN_NOFLUSH available: FLUSH reaches only the files that asked for it."""

    @_served("flush")
    def flush(self, path, fi):
        self._handle(fi).flush()


def operations(tree: Tree, on_ready: Optional[Callable[[], None]] = None) -> TdxfsOperations:
    return (FlushingOperations if HAS_NOFLUSH else TdxfsOperations)(tree, on_ready)
