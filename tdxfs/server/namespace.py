"""Mount-namespace plumbing for ``tdxfs run``: a TDX guest's paths, placed privately.

After :func:`unshare_mounts` the process has its own mount namespace with every mount
private, so nothing done here propagates back to the host. :class:`Placer` then adds
entries to directories it cannot (or must not) write — sysfs, the host's devtmpfs —
without hiding what is already there: it opens the directory ``O_PATH``, mounts a tmpfs
over it and recreates every original entry on the tmpfs (directories: a recursive bind
from ``/proc/self/fd/N/name``, so submounts such as ``/dev/pts`` come along; files and
device nodes: an empty placeholder with the original bind-mounted onto it; symlinks: the
same target). Directories it creates on its own tmpfs need no shadowing.

The guest's paths are one table (:data:`GUEST_FILES`): where a TDX guest has the file,
and which file of a tdxfs mount serves it. Everything is mount(2) through ctypes: no
``mount`` or ``unshare`` binaries, no subprocess.
"""

import ctypes
import logging
import os
import stat
from dataclasses import dataclass
from typing import List, Set, Tuple

from tdxfs.errors import TdxfsError

log = logging.getLogger("tdxfs")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)

# <linux/sched.h>, <linux/mount.h>, <linux/prctl.h>, <linux/capability.h>
CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
CAP_SYS_ADMIN = 21

SHADOW_FSNAME = "tdxfs-run"  # the source name of our tmpfs mounts in mountinfo


@dataclass(frozen=True)
class GuestFile:
    path: str    # where a TDX guest's kernel has it
    source: str  # the file of a tdxfs mount that serves it, relative to the mount


GUEST_FILES = (
    GuestFile("/dev/tdx_guest", "tdx_guest"),
    GuestFile("/sys/kernel/config/tsm/report", "tsm/report"),
    GuestFile("/sys/devices/virtual/misc/tdx_guest/measurements", "measurements"),
    GuestFile("/sys/firmware/acpi/tables/CCEL", "acpi/CCEL"),
    GuestFile("/sys/firmware/acpi/tables/data/CCEL", "acpi/data/CCEL"),
)
# (link, target): the class link the driver core makes for every misc device.
GUEST_LINKS = (("/sys/class/misc/tdx_guest", "../../devices/virtual/misc/tdx_guest"),)
# Our tmpfs directories under these trees are made read-only once placed, as sysfs is.
SEALED_TREES = ("/sys",)


def _check(ret: int, what: str) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags: int, data=None) -> None:
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def effective_capability(cap: int) -> bool:
    """Whether the calling process has ``cap`` in its effective set (/proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def unshare_mounts() -> None:
    """A mount namespace of our own, every mount in it private: nothing propagates out."""
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as exc:
        raise TdxfsError(f"cannot create a private mount namespace: {os.strerror(exc.errno)}") from None


def die_with_parent(parent_pid: int, signo: int) -> None:
    """``signo`` when the parent dies (also by SIGKILL); exit now if it already has."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signo, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent_pid:
        os._exit(128 + signo)


def set_process_name(name: str) -> None:
    """The name ps and /proc/PID/comm show (15 bytes at most)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _libc.prctl(PR_SET_NAME, ctypes.addressof(buf), 0, 0, 0)


class Placer:
    """Adds entries to this namespace's tree without hiding the entries already there."""

    def __init__(self) -> None:
        self.ours: Set[str] = set()      # directories on a tmpfs of ours: entries can be added
        self.shadows: List[str] = []     # tmpfs mounted over an existing directory
        self.placed: List[Tuple[str, str]] = []

    def directory(self, path: str) -> None:
        """Make ``path`` a directory that entries can be added to."""
        if path in self.ours:
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.directory(os.path.dirname(path))
            os.mkdir(path, 0o755)
            self.ours.add(path)
            return
        if not stat.S_ISDIR(st.st_mode):
            raise TdxfsError(f"cannot place entries in {path}: it is not a directory")
        self._shadow(path, st)

    def _shadow(self, path: str, st: os.stat_result) -> None:
        entries = []
        with os.scandir(path) as it:
            for e in it:
                if e.is_symlink():
                    entries.append((e.name, "link", os.readlink(e.path)))
                else:
                    entries.append((e.name, "dir" if e.is_dir(follow_symlinks=False) else "file", None))
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            mode = f"mode={stat.S_IMODE(st.st_mode):o},uid={st.st_uid},gid={st.st_gid}"
            mount(SHADOW_FSNAME, path, "tmpfs", MS_NOSUID, mode)
            self.shadows.append(path)
            self.ours.add(path)
            for name, kind, target in entries:
                dst = os.path.join(path, name)
                if kind == "link":
                    os.symlink(target, dst)
                    continue
                if kind == "dir":
                    os.mkdir(dst, 0o755)
                else:
                    os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
                try:
                    mount(f"/proc/self/fd/{fd}/{name}", dst, None, MS_BIND | MS_REC)
                except FileNotFoundError:  # gone since the listing (a removed device node)
                    (os.rmdir if kind == "dir" else os.unlink)(dst)
        finally:
            os.close(fd)
        log.debug("shadowed %s (%d entries kept)", path, len(entries))

    def bind(self, source: str, target: str) -> None:
        """Bind-mount ``source`` at ``target``, creating the mount point if there is none."""
        source_is_dir = stat.S_ISDIR(os.stat(source).st_mode)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is None:
            self.directory(os.path.dirname(target))
            if source_is_dir:
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        elif stat.S_ISDIR(st.st_mode) != source_is_dir:
            kind = "a directory" if source_is_dir else "a file"
            raise TdxfsError(f"cannot place {source} at {target}: {target} exists and {source} is {kind}")
        mount(source, target, None, MS_BIND)
        self.placed.append((target, source))
        log.debug("placed %s <- %s", target, source)

    def symlink(self, target: str, link: str) -> None:
        self.directory(os.path.dirname(link))
        os.symlink(target, link)
        self.placed.append((link, target))
        log.debug("placed %s -> %s", link, target)

    def seal(self, trees=SEALED_TREES) -> None:
        """Our tmpfs directories under ``trees`` read-only, as the sysfs they stand in for."""
        for path in self.shadows:
            if any(path == t or path.startswith(t + "/") for t in trees):
                mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def place_guest(placer: Placer, mount_dir: str) -> None:
    """Every path of :data:`GUEST_FILES` that ``mount_dir`` serves, and the class link."""
    for entry in GUEST_FILES:
        source = os.path.join(mount_dir, entry.source)
        if not os.path.lexists(source):
            log.debug("skipped %s: %s is not in this mount", entry.path, source)
            continue
        try:
            placer.bind(source, entry.path)
        except OSError as exc:
            raise TdxfsError(f"cannot place {entry.path}: {exc.strerror or exc}") from None
    for link, target in GUEST_LINKS:
        if os.path.isdir(os.path.join(os.path.dirname(link), target)) and not os.path.lexists(link):
            placer.symlink(target, link)
    try:
        placer.seal()
    except OSError as exc:
        raise TdxfsError(f"cannot make the placed sysfs directories read-only: {exc.strerror}") from None
