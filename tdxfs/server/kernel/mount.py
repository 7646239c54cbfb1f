"""Getting a ``/dev/fuse`` connection mounted, and unmounting it.

Two ways, as libfuse has them:

- **mount(2)**, as root: open ``/dev/fuse`` and mount ``fuse.tdxfs`` with the kernel's own
  options ``fd=N,rootmode=40000,user_id=UID,group_id=GID`` plus ``default_permissions``
  (always: the kernel enforces the modes) and ``allow_other`` when asked; flags
  ``MS_NOSUID|MS_NODEV`` (libfuse's defaults) and ``MS_RDONLY`` for ``ro``.
- **fusermount3**, for everyone else and for ``auto_unmount`` (which only fusermount3
  offers): its documented fd-passing protocol. A socketpair's one end is passed to
  ``fusermount3 -o OPTIONS -- MOUNTPOINT`` and named in ``$_FUSE_COMMFD``; fusermount3
  (setuid root) opens ``/dev/fuse``, mounts, and sends the fd back as SCM_RIGHTS with one
  byte. With ``auto_unmount`` it stays, waiting for our end of the socket to close (our
  process ending, however it ends), and then unmounts.

Unmounting follows libfuse's ``fuse_kern_unmount``: if the connection already reports
POLLERR (unmounted elsewhere, or aborted) there is nothing left to do; otherwise the fd is
closed first (a synchronous unmount could otherwise recurse into the server) and the mount
detached (``umount2(MNT_DETACH)`` as root, ``fusermount3 -u -q -z`` otherwise).
"""

import ctypes
import errno
import os
import select
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from typing import Optional

from tdxfs.errors import ConfigError, printable

FSNAME = "tdxfs"
FSTYPE = "fuse.tdxfs"  # subtype tdxfs: /proc/mounts and findmnt -t fuse.tdxfs show it
DEVICE = "/dev/fuse"
COMMFD = "_FUSE_COMMFD"
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


@dataclass
class Connection:
    """A mounted ``/dev/fuse`` connection: the fd the session reads, and how it was made."""

    fd: int
    mountpoint: str
    via: str  # "mount(2)" or "fusermount3"
    keeper: Optional[socket.socket] = None  # auto_unmount: fusermount3 waits for it to close
    helper: Optional[subprocess.Popen] = None

    def unmount(self) -> None:
        """Close the connection and detach the mount (once; safe to call again)."""
        if self.fd < 0:
            return
        poll = select.poll()
        poll.register(self.fd, 0)
        dead = any(revents & select.POLLERR for _, revents in poll.poll(0))
        os.close(self.fd)
        self.fd = -1
        if not dead:
            if os.geteuid() == 0:
                if _libc.umount2(os.fsencode(self.mountpoint), MNT_DETACH) != 0:
                    code = ctypes.get_errno()
                    if code not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
                        raise OSError(code, f"umount2 {printable(self.mountpoint)}: {os.strerror(code)}")
            else:
                subprocess.run([_fusermount(), "-u", "-q", "-z", "--", self.mountpoint],
                               stdin=subprocess.DEVNULL, check=False)
        if self.keeper is not None:
            self.keeper.close()  # auto_unmount: fusermount3 sees it and exits
            self.keeper = None
        if self.helper is not None:
            try:
                self.helper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass  # it unmounts and exits on its own; not ours to kill
            self.helper = None


def kernel_options(allow_other: bool = False) -> str:
    """The options both ways pass on: permissions checked by the kernel."""
    return "default_permissions" + (",allow_other" if allow_other else "")


def mount(mountpoint: str, allow_other: bool = False, read_only: bool = False, auto_unmount: bool = False,
          via: Optional[str] = None) -> Connection:
    """Mount a new FUSE connection at ``mountpoint``. ``via`` forces "mount(2)" or
    "fusermount3"; by default root uses mount(2) unless ``auto_unmount`` is asked for."""
    if via is None:
        via = "mount(2)" if os.geteuid() == 0 and not auto_unmount else "fusermount3"
    if via == "mount(2)":
        if auto_unmount:
            raise ConfigError("auto_unmount needs fusermount3 (mount(2) has no such option)")
        return _mount_syscall(mountpoint, allow_other, read_only)
    if via == "fusermount3":
        return _mount_fusermount(mountpoint, allow_other, read_only, auto_unmount)
    raise ConfigError(f"unknown way to mount: {via!r} (mount(2) or fusermount3)")


def _mount_syscall(mountpoint: str, allow_other: bool, read_only: bool) -> Connection:
    rootmode = stat.S_IFMT(os.stat(mountpoint).st_mode)
    fd = os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC)
    data = f"fd={fd},rootmode={rootmode:o},user_id={os.geteuid()},group_id={os.getegid()}," + \
        kernel_options(allow_other)
    flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
    if _libc.mount(FSNAME.encode(), os.fsencode(mountpoint), FSTYPE.encode(), flags, data.encode()) != 0:
        code = ctypes.get_errno()
        os.close(fd)
        raise ConfigError(f"mount {printable(mountpoint)}: {os.strerror(code)}")
    return Connection(fd, mountpoint, "mount(2)")


def _fusermount() -> str:
    path = shutil.which("fusermount3") or ("/usr/bin/fusermount3" if os.path.exists("/usr/bin/fusermount3") else None)
    if path is None:
        raise ConfigError("fusermount3 not found (install the fuse3 package), and not root for mount(2)")
    return path


def _mount_fusermount(mountpoint: str, allow_other: bool, read_only: bool, auto_unmount: bool) -> Connection:
    options = f"fsname={FSNAME},subtype={FSTYPE.split('.', 1)[1]},{kernel_options(allow_other)}" + \
        (",ro" if read_only else "") + (",auto_unmount" if auto_unmount else "")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = {**os.environ, COMMFD: str(theirs.fileno())}
        helper = subprocess.Popen([_fusermount(), "-o", options, "--", mountpoint], env=env,
                                  pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        _, fds, _, _ = socket.recv_fds(ours, 1, 1, socket.MSG_CMSG_CLOEXEC)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if not fds:
        ours.close()
        code = helper.wait()
        raise ConfigError(f"fusermount3 could not mount {printable(mountpoint)} (exit status {code}; "
                          "its message is above)")
    if auto_unmount:  # fusermount3 stays until this socket closes
        return Connection(fds[0], mountpoint, "fusermount3", keeper=ours, helper=helper)
    ours.close()
    helper.wait()
    return Connection(fds[0], mountpoint, "fusermount3")
