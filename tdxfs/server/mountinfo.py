"""``/proc/self/mountinfo``, read exactly: bytes in, bytes out.

A mount point is any byte string the kernel accepts as a path, and unprivileged users can
make mounts anywhere they own (``fusermount``), so the table cannot be read as text: one
mount point that is not valid UTF-8, anywhere on the system, would break every reader
(docs/reliability.md, defects 4 and 5). The kernel writes each line as space-separated fields and
escapes the bytes that would break that layout — space, tab, newline and backslash
(``\\040 \\011 \\012 \\134``) — as a backslash and three octal digits (``seq_escape``,
proc(5)); no other backslash can occur, so decoding every ``\\ooo`` gives the path's
bytes back exactly. Paths are compared as bytes: ``os.fsencode(os.path.realpath(p))``.

Every reader of the mount table in tdxfs, its mount helper and its tests goes through
:func:`mounts`.
"""

import os
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Union

MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(rb"\\([0-7]{3})")

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo (proc(5)); the path fields as the kernel's bytes."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: bytes
    mount_point: bytes
    options: bytes
    fstype: str         # "fuse.tdxfs", "tmpfs" ... (os.fsdecode of the field)
    source: bytes
    super_options: bytes


def unescape(field: bytes) -> bytes:
    """A mountinfo field with its ``\\ooo`` escapes decoded."""
    return _ESCAPE.sub(lambda m: bytes((int(m.group(1), 8) & 0xFF,)), field)


def parse_line(line: bytes) -> Mount:
    """``36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue``."""
    parts = line.rstrip(b"\n").split(b" ")
    sep = parts.index(b"-", 6)  # optional fields (shared:N, master:N ...) come before it
    major, _, minor = parts[2].partition(b":")
    tail = parts[sep + 1:] + [b"", b"", b""]
    return Mount(mount_id=int(parts[0]), parent_id=int(parts[1]), major=int(major), minor=int(minor),
                 root=unescape(parts[3]), mount_point=unescape(parts[4]), options=parts[5],
                 fstype=os.fsdecode(unescape(tail[0])), source=unescape(tail[1]), super_options=tail[2])


def parse(data: bytes) -> List[Mount]:
    return [parse_line(line) for line in data.split(b"\n") if line]


def mounts(path: str = MOUNTINFO) -> List[Mount]:
    """This process's mount table, in the kernel's order."""
    with open(path, "rb") as f:
        return parse(f.read())


def target(path: PathLike) -> bytes:
    """The bytes mountinfo shows for ``path``: its resolved, absolute form."""
    return os.fsencode(os.path.realpath(os.fspath(path)))


def mounts_at(path: PathLike, table: Optional[Iterable[Mount]] = None) -> List[Mount]:
    """Every mount stacked exactly at ``path``, in the table's order."""
    want = target(path)
    return [m for m in (mounts() if table is None else table) if m.mount_point == want]


def top_at(path: PathLike, table: Optional[Iterable[Mount]] = None) -> Optional[Mount]:
    """The mount on top at ``path`` (the one no other mount there is stacked on), or None."""
    stack = mounts_at(path, table)
    covered = {m.parent_id for m in stack}
    tops = [m for m in stack if m.mount_id not in covered]
    return (tops or stack or [None])[-1]


def fstype_at(path: PathLike, table: Optional[Iterable[Mount]] = None) -> Optional[str]:
    """The type of the mount on top at ``path`` (dead FUSE mounts included), or None."""
    top = top_at(path, table)
    return top.fstype if top else None


def under(root: PathLike, table: Optional[Iterable[Mount]] = None) -> List[Mount]:
    """Mounts at ``root`` or anywhere below it."""
    base = target(root)
    prefix = base.rstrip(b"/") + b"/"
    return [m for m in (mounts() if table is None else table)
            if m.mount_point == base or m.mount_point.startswith(prefix)]
