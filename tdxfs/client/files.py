"""The file patterns, with plain os calls (what a shell script does, without the forks)."""

import os


def _read_all(fd: int) -> bytes:
    return os.pread(fd, 131072, 0)


def read_to_eof(path: str) -> bytes:
    """A whole file as ``cat`` reads it: large reads until one returns nothing."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            part = os.read(fd, 1 << 17)
            if not part:
                return b"".join(parts)
            parts.append(part)
    finally:
        os.close(fd)


def shared_pair(mount: str, reportdata: bytes) -> bytes:
    """The shell pattern: write the shared ``reportdata``, then read ``tdreport``.
    Two clients doing this at once can get each other's REPORTDATA (the seed's
    "multiple file descriptors" problem)."""
    fd = os.open(os.path.join(mount, "reportdata"), os.O_WRONLY)
    try:
        os.write(fd, reportdata)
    finally:
        os.close(fd)
    fd = os.open(os.path.join(mount, "tdreport"), os.O_RDONLY)
    try:
        return _read_all(fd)
    finally:
        os.close(fd)


def transaction(mount: str, reportdata: bytes) -> bytes:
    """The one-fd transaction: REPORTDATA for this fd only, then its report."""
    fd = os.open(os.path.join(mount, "tdreport"), os.O_RDWR)
    try:
        os.pwrite(fd, reportdata, 0)
        return _read_all(fd)
    finally:
        os.close(fd)
