"""The session's safety net: no mount and no tdxfs process may outlive the tests (issue 8, 12).

Every test that mounts unmounts in a finalizer of its own (``Mounted``, the ``cli`` and
``ns`` fixtures ...). This net catches what one of them missed: at the end of the session
it lists

- every mount (of any type, a fuse.tdxfs one above all) under this session's temporary
  directories — pytest's ``tmp_path_factory`` base, plus directories registered with
  :func:`watch` — that was not there when the session started, and
- every tdxfs process (``tdxfs …``, ``python -m tdxfs …``, ``mount.fuse.tdxfs``, a
  ``tdxfs-daemon``) that names a path under those directories and did not exist when the
  session started,

kills those processes (SIGTERM, then SIGKILL) and clears those mounts, prints them in a
"tdxfs leak check" section and makes the session fail. Several sessions may run at once
on one machine (each has its own base directory), and a session may run inside a
``tdxfs run`` (the conformance suite): only what this session's tests made is counted.

Used by tests/conftest.py; ``-p tests.leakcheck`` loads it into any other session (its
own test does that).
"""

import os
import signal
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set, Tuple

import pytest

from tdxfs.server import mountinfo

_roots: List[bytes] = []                      # this session's directories, as mountinfo shows them
_before: Optional[Tuple[Set[Tuple[int, bytes]], Set[int]]] = None
_found: List[str] = []
KILL_WAIT = 5.0


def watch(path) -> None:
    """Count mounts and processes under ``path`` too (a test's directory outside tmp_path)."""
    root = mountinfo.target(path)
    if root not in _roots:
        _roots.append(root)


def _under(path: bytes, roots: Iterable[bytes]) -> bool:
    return any(path == r or path.startswith(r.rstrip(b"/") + b"/") for r in roots)


def _names_under(arg: bytes, roots: Iterable[bytes]) -> bool:
    """An argument that is, or holds (``-o state=DIR,log=FILE``), a path under a root."""
    return any(r.rstrip(b"/") + b"/" in arg or arg == r or arg.endswith(b"=" + r) for r in roots)


@dataclass(frozen=True)
class Process:
    pid: int
    argv: Tuple[bytes, ...]
    comm: bytes
    zombie: bool

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.comm.decode(errors='replace')}): " + \
            " ".join(a.decode(errors="backslashreplace") for a in self.argv)


def is_tdxfs(argv: Tuple[bytes, ...], comm: bytes) -> bool:
    if comm == b"tdxfs-daemon":
        return True
    if any(os.path.basename(a) in (b"tdxfs", b"mount.fuse.tdxfs") for a in argv[:2]):
        return True
    return any(a == b"-m" and (b.split(b".")[0] in (b"tdxfs", b"mount_helper"))
               for a, b in zip(argv, argv[1:]))


def tdxfs_processes() -> Dict[int, Process]:
    """Every tdxfs process this one can see (not itself)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = tuple(f.read().split(b"\0")[:-1])
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")]
        if is_tdxfs(argv, comm):
            out[int(entry)] = Process(int(entry), argv, comm, stat[stat.rindex(b")") + 2 :][:1] == b"Z")
    return out


def snapshot() -> Tuple[Set[Tuple[int, bytes]], Set[int]]:
    """What exists now: (mounts as (id, mount point), tdxfs process ids)."""
    return {(m.mount_id, m.mount_point) for m in mountinfo.mounts()}, set(tdxfs_processes())


def find_leaks(roots: List[bytes], before) -> Tuple[List[mountinfo.Mount], List[Process]]:
    """Mounts under ``roots`` and live tdxfs processes naming a path under them, that are not
    in ``before`` (a :func:`snapshot`)."""
    mounts_before, pids_before = before
    mounts = [m for m in mountinfo.mounts()
              if _under(m.mount_point, roots) and (m.mount_id, m.mount_point) not in mounts_before]
    procs = [p for p in tdxfs_processes().values()
             if p.pid not in pids_before and not p.zombie and any(_names_under(a, roots) for a in p.argv)]
    return mounts, procs


def clean(mounts: List[mountinfo.Mount], procs: List[Process]) -> List[str]:
    """Kill the processes (by pid), then clear the mounts, deepest first; what failed."""
    from tests.mounting import force_unmount

    failed = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + KILL_WAIT
        while any(_alive(p.pid) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
    failed += [f"could not kill {p}" for p in procs if _alive(p.pid)]
    for m in sorted(mounts, key=lambda m: -len(m.mount_point)):
        path = os.fsdecode(m.mount_point)
        try:
            force_unmount(path)
        except Exception as exc:  # noqa: BLE001 - reported, and the next one is still tried
            failed.append(f"could not unmount {path!r}: {exc}")
    return failed


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    if stat[stat.rindex(b")") + 2 :][:1] != b"Z":
        return True
    try:  # a zombie child of ours (a Popen nobody waited for): reap it
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return False


def check(roots: List[bytes], before) -> List[str]:
    """The leaks as report lines (empty when there are none); everything found is cleaned."""
    mounts, procs = find_leaks(roots, before)
    if not mounts and not procs:
        return []
    lines = [f"left mounted: {os.fsdecode(m.mount_point)!r} ({m.fstype}, source "
             f"{m.source.decode(errors='backslashreplace')})" for m in mounts]
    lines += [f"left running: {p}" for p in procs]
    lines += clean(mounts, procs)
    left = find_leaks(roots, before)
    lines += [f"still there after the clean-up: {x}" for group in left for x in group]
    return lines


# -- pytest hooks ---------------------------------------------------------------------------------


def pytest_sessionstart(session):
    global _before
    _before = snapshot()


@pytest.fixture(scope="session", autouse=True)
def _tdxfs_leak_net_roots(tmp_path_factory):
    """Learns this session's base temporary directory (set up before any test's fixtures)."""
    watch(tmp_path_factory.getbasetemp())
    yield


def pytest_sessionfinish(session, exitstatus):
    if _before is None or not _roots:
        return
    _found[:] = check(list(_roots), _before)
    if _found and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _found:
        terminalreporter.section("tdxfs leak check", red=True, bold=True)
        terminalreporter.line("a test left these behind (now cleaned up); every test that mounts must "
                              "unmount and reap its daemon in a finalizer:")
        for line in _found:
            terminalreporter.line(f"  {line}")
