"""configfs-tsm report instances: the quote flow real clients run.

``get_quote(report_dir, reportdata)``: mkdir an instance, check the provider, write
``inblob`` (committed at close), read ``outblob``, check that ``generation`` rose by
exactly one around our write (another writer on the same instance would show), rmdir.
"""

import fcntl
import os
import secrets
from typing import Optional

DEFAULT_REPORT_DIR = "/sys/kernel/config/tsm/report"
PROVIDER = b"tdx_guest\n"


class GenerationConflict(OSError):
    """Someone else wrote the instance's inblob between our write and our read."""


def _read_all(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            part = os.read(fd, 131072)
            if not part:
                return b"".join(parts)
            parts.append(part)
    finally:
        os.close(fd)


def generation(instance: str) -> int:
    return int(_read_all(os.path.join(instance, "generation")))


def quote_from_instance(instance: str, reportdata: bytes) -> bytes:
    """One request on an existing instance, as Intel's library does it: flock inblob,
    write, close (the commit), read outblob, and check generation rose by exactly one."""
    before = generation(instance)
    fd = os.open(os.path.join(instance, "inblob"), os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, reportdata)
    finally:
        os.close(fd)  # the commit; the lock goes with the fd
    quote = _read_all(os.path.join(instance, "outblob"))
    after = generation(instance)
    if after != before + 1:
        raise GenerationConflict(f"{instance}: generation went {before} -> {after} around one write")
    return quote


def get_quote(report_dir: str, reportdata: bytes, name: Optional[str] = None) -> bytes:
    """A private instance per request (configfs's answer to the shared-file race)."""
    instance = os.path.join(report_dir, name or f"tdxfs-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(instance)
    try:
        provider = _read_all(os.path.join(instance, "provider"))
        if provider != PROVIDER:
            raise OSError(f"{instance}: provider is {provider!r}, not {PROVIDER!r}")
        return quote_from_instance(instance, reportdata)
    finally:
        os.rmdir(instance)
