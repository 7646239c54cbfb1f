"""What the filesystem tests do as a client of a mount: plain os calls, and the daemon's
log of refusals. Never imports tdxfs: a test's expectations stay independent of it."""

import errno
import multiprocessing
import os
import time

from tests.mounting import COMMAND_TIMEOUT, Mounted


def slurp(path: str, chunk: int = 131072) -> bytes:
    """Read to EOF the way cat does (large reads until one returns nothing)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            part = os.read(fd, chunk)
            if not part:
                return b"".join(parts)
            parts.append(part)
    finally:
        os.close(fd)


def put(path: str, data: bytes, flags: int = os.O_WRONLY) -> int:
    """open, one write, close (for a configfs inblob the close is the commit)."""
    fd = os.open(path, flags)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


# files a snapshot does not read: the ioctl node (no read), the request counters (they move
# with every request), and configfs's binary attributes (inblob cannot be read; a read of
# outblob makes a quote, or is refused and logged)
UNOBSERVED = {"tdx_guest", ".stats", "inblob", "outblob"}


def observable(m: Mounted) -> dict:
    """Everything a client can observe of a mount's TD, for "nothing changed" checks: the
    names in every directory and the bytes of every readable file (registers, a report,
    the event log and its CCEL views, each configfs instance's generation)."""
    seen = {}
    for top, dirs, files in os.walk(m.mountpoint):
        rel = os.path.relpath(top, m.mountpoint)
        dirs.sort()
        seen[f"{rel}/"] = sorted(dirs + files)
        for name in sorted(files):
            if name not in UNOBSERVED:
                seen[os.path.normpath(os.path.join(rel, name))] = slurp(os.path.join(top, name))
    return seen


class Rejections:
    """The daemon's 'rejected' log lines written since this object was made."""

    def __init__(self, m: Mounted):
        self.m = m
        self.start = len(m.rejections())

    def new(self):
        return self.m.rejections()[self.start :]

    def expect(self, *expected) -> None:
        """Exactly these (op, mount-relative path, errno) rejections, in order."""
        new = self.new()
        assert len(new) == len(expected), f"expected {expected!r}, got {new!r}"
        for line, (op, path, err) in zip(new, expected):
            assert f"rejected {op} /{path}: {errno.errorcode[err]} (" in line, line

    def expect_one(self, op: str, path: str, err: int) -> str:
        new = self.new()
        assert len(new) == 1, f"expected one rejected line, got {new!r}\nlog:\n{self.m.log()}"
        assert f"rejected {op} {path}: {errno.errorcode[err]} (" in new[0], new[0]
        return new[0]


def wait_until(predicate, what: str, timeout: float = COMMAND_TIMEOUT):
    """Poll ``predicate`` until it returns something true, and return that. The deadline only
    bounds a hang (then the test fails, naming ``what``): never a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout:.0f} s: {what}")
        time.sleep(0.01)


def run_clients(target, args_of, count: int, timeout: float = 120) -> list:
    """``count`` forked client processes, started together: ``target(*args_of(i),
    barrier, results)`` puts one outcome each on ``results``. Returns the outcomes, and
    always reaps every child (terminating one that hangs)."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(i), barrier, results), daemon=True) for i in range(count)]
    for p in procs:
        p.start()
    try:
        return [results.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():  # our own child, by its handle
                p.terminate()
                p.join(timeout=10)


def refused(m: Mounted, snapshot, err: int, op: str, path: str, fn) -> str:
    """``fn`` fails with ``err``, the daemon logs exactly one rejected line for it, and
    ``snapshot(m)`` (what a client can observe) is unchanged. Returns the log line."""
    import pytest

    before = snapshot(m)
    log = Rejections(m)
    with pytest.raises(OSError) as exc:
        fn()
    assert exc.value.errno == err, exc.value
    line = log.expect_one(op, path, err)
    assert snapshot(m) == before
    return line


def nobody_runs_this_python(cwd: str = None) -> bool:
    """User nobody runs this very Python environment and imports tdxfs from this checkout
    (not when the checkout sits in a directory nobody cannot enter, or another Python is
    what its path leads to), and can build a TD with it."""
    import subprocess
    import sys

    probe = ("import sys, tdxfs.server.kernel\n"
             "from tdxfs.model.machine import in_memory_td\n"
             "from tdxfs.model.profile import default_profile\n"
             "in_memory_td(default_profile())\n"
             "print(sys.prefix)")
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", probe],
                          capture_output=True, text=True, timeout=60, cwd=cwd)
    return done.returncode == 0 and done.stdout.strip() == sys.prefix
