"""The files layer without a mount: a Tree over a TD whose quoting enclave is a fake, and
what a client process does with open/write/read/close.

The fake QE (``FakeQE``) returns ``b"QUOTE" + tdreport`` and counts its calls, so a test
can tell when a quote was made and which REPORTDATA it was made for (the TDREPORT's
REPORTDATA sits at offset 128, so at 5 + 128 in a fake quote). That is a unit test of the
files layer; quotes from the real enclave are tested through a mount (tests/fs).
"""

import hashlib
import os
import threading
from contextlib import contextmanager
from typing import Iterator, List, Optional

from tdxfs.files.nodes import Handle
from tdxfs.files.tree import Tree

REPORTDATA_IN_FAKE_QUOTE = slice(5 + 128, 5 + 128 + 64)
REPORT = "/tsm/report"


class FakeQE:
    def __init__(self):
        self.calls: List[bytes] = []  # the TDREPORTs it was given
        self.fail: Optional[Exception] = None
        self.gate: Optional[threading.Event] = None  # set: a quote waits for it
        self.entered = threading.Event()
        self.extra = b""
        self._lock = threading.Lock()

    def __call__(self, report: bytes) -> bytes:
        with self._lock:
            self.calls.append(report)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        if self.fail is not None:
            raise self.fail
        return b"QUOTE" + report + self.extra


# -- client-side helpers: what a process does with open/write/read/close ---------------------


def inst(name: str) -> str:
    return f"{REPORT}/{name}"


def write_inblob(tree: Tree, name: str, *chunks: bytes, flags: int = os.O_WRONLY) -> None:
    """open, write each chunk at the running offset, close (the commit)."""
    h = tree.open(f"{inst(name)}/inblob", flags)
    offset = 0
    try:
        for chunk in chunks:
            offset += h.write(chunk, offset)
    finally:
        h.release()


@contextmanager
def opened(tree: Tree, path: str, flags: int = os.O_RDONLY) -> Iterator[Handle]:
    """open ... close, as a with block: the handle is released however the block ends."""
    h = tree.open(path, flags)
    try:
        yield h
    finally:
        h.release()


def write(tree: Tree, path: str, data: bytes, offset: int = 0, flags: int = os.O_WRONLY) -> int:
    """open, one write, close: what ``write()`` returned."""
    with opened(tree, path, flags) as h:
        return h.write(data, offset)


def extended(old: bytes, data: bytes) -> bytes:
    """An RTMR after an extend with ``data`` (tdx-abi.md: SHA-384(RTMR || data))."""
    return hashlib.sha384(old + data).digest()


def read_all(tree: Tree, path: str, chunk: int = 131072) -> bytes:
    with opened(tree, path) as h:
        return read_handle(h, chunk)


def read_handle(h, chunk: int = 131072, offset: int = 0) -> bytes:
    parts = []
    while True:
        part = h.read(chunk, offset)
        if not part:
            return b"".join(parts)
        parts.append(part)
        offset += len(part)


def generation(tree: Tree, name: str) -> int:
    text = read_all(tree, f"{inst(name)}/generation")
    assert text.endswith(b"\n") and text[:-1].isdigit(), text
    return int(text)


def outblob(tree: Tree, name: str) -> bytes:
    return read_all(tree, f"{inst(name)}/outblob")
