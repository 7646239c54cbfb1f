"""Real mounts for tests: the server always runs in its own process.

``Mounted`` starts ``python -m tdxfs mount -f`` in a child process, waits (with a timeout)
until /proc/self/mountinfo shows the fuse.tdxfs mount, and always unmounts in ``stop``:
SIGTERM first, then SIGKILL, a lazy unmount, and as a last resort an abort through
/sys/fs/fuse/connections so no test can leave a hung mount behind.

A mount costs a test most of its time (starting a Python daemon), so tests that only read
or only refuse share one mount per module: they are marked ``@pytest.mark.shared_mount``,
and the ``mnt`` fixture (:func:`mount_for_test`) gives them a :class:`SharedMount`, a turn
on the module's ``shared_mount`` that checks the test left it as it found it. Every other
test gets a fresh mount.
"""

import os
import signal
import subprocess
import sys
import time
from typing import Callable, Iterator, List, Optional

from tdxfs.server import mountinfo

MOUNT_TIMEOUT = 20.0
COMMAND_TIMEOUT = 30.0


def fstype_at(path) -> Optional[str]:
    """The type of the mount on top at ``path`` (mountinfo read as bytes: any path works)."""
    return mountinfo.fstype_at(path)


def sh(cmd: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """A real shell command, with a timeout; output as bytes."""
    return subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=COMMAND_TIMEOUT, check=check, **kw)


def tdxfs_cmd(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tdxfs", *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT, **kw)


def _connection_id(path) -> Optional[str]:
    """The FUSE connection (/sys/fs/fuse/connections/N) of the mount on top at ``path``."""
    top = mountinfo.top_at(path)
    if top is None or not (top.fstype == "fuse" or top.fstype.startswith("fuse.")) or top.major != 0:
        return None
    return str(top.minor)


def force_unmount(path: str) -> None:
    """Leave no mount behind, even a dead or hung one (or several stacked at ``path``)."""
    for _ in range(5):
        if fstype_at(path) is None:
            return
        conn = _connection_id(path)
        if conn and os.path.exists(f"/sys/fs/fuse/connections/{conn}/abort"):
            with open(f"/sys/fs/fuse/connections/{conn}/abort", "w") as f:
                f.write("1")
        subprocess.run(["fusermount3", "-uz", path], capture_output=True, timeout=COMMAND_TIMEOUT)
        if fstype_at(path) is not None:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=COMMAND_TIMEOUT)


def stop_all(mounts: List["Mounted"]) -> None:
    """Stop every mount, even when stopping one of them fails; then report the first failure
    (a test's finalizer: a failing ``__exit__`` must not leave the others running)."""
    failures = []
    for m in mounts:
        try:
            m.__exit__(None, None, None)
        except BaseException as exc:  # noqa: B902 - re-raised below, after the others are stopped
            failures.append(exc)
    if failures:
        raise failures[0]


class Mounted:
    """A tdxfs mount served by a separate process for the length of a ``with`` block."""

    shared = False  # a SharedMount: one test's turn on a mount its module shares

    def __init__(self, mountpoint: str, *args: str, env: Optional[dict] = None):
        self.mountpoint = str(mountpoint)
        self.args: List[str] = list(args)
        self.env = {**os.environ, **(env or {})}
        self.log_path = self.mountpoint.rstrip("/") + ".log"
        self.proc: Optional[subprocess.Popen] = None

    def path(self, name: str) -> str:
        return os.path.join(self.mountpoint, name)

    def start(self) -> "Mounted":
        """Mount and wait until it is live. Whatever goes wrong on the way (the server exits,
        a timeout, an error or ^C in this process), the server is stopped and reaped and
        the mount cleared before the error propagates: a ``with`` block whose ``__enter__``
        raises gets no ``__exit__``, so ``start`` cleans up after itself."""
        try:
            os.makedirs(self.mountpoint, exist_ok=True)
            # TDXFS_TRANSPORT picks the transport (tests/transport.py; unset: the CLI's default),
            # unless the test names one or asks for --threads (which implies libfuse)
            transport = self.env.get("TDXFS_TRANSPORT")
            chosen = [] if not transport or {"--transport", "--threads"} & set(self.args) else \
                ["--transport", transport]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "tdxfs", "mount", "-f", self.mountpoint, *chosen, *self.args],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env)
            deadline = time.monotonic() + MOUNT_TIMEOUT
            while fstype_at(self.mountpoint) != "fuse.tdxfs":
                if self.proc.poll() is not None:
                    raise RuntimeError(f"tdxfs mount exited with {self.proc.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tdxfs mount not ready after {MOUNT_TIMEOUT}s:\n{self.log()}")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def rejections(self) -> List[str]:
        return [line for line in self.log().splitlines() if " rejected " in line]

    def kill9(self) -> None:
        """Simulate a crash: SIGKILL, leaving a dead mount (cleared by ``stop``)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=COMMAND_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; the server reaped; the mount cleared even if it is dead."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=COMMAND_TIMEOUT)
        finally:
            force_unmount(self.mountpoint)

    def __enter__(self) -> "Mounted":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        bugs = [l for l in self.log().splitlines() if "Traceback" in l or "Uncaught" in l]
        assert not bugs, f"the daemon logged a bug:\n{self.log()}"


SHARED = "shared_mount"  # the marker of a test that only reads or refuses (tests/conftest.py)


class SharedMount(Mounted):
    """One test's turn on the mount its module shares (a test marked ``shared_mount``).

    The same mount point and daemon as the module's ``shared_mount``; ``log()`` (and so
    ``rejections()`` and ``fsclient.Rejections``) holds only what the daemon logged since
    this test began, so a test reads the same on a shared mount as on a fresh one. The test
    must leave the mount as it found it, which keeps the shared tests independent of their
    order: ``__exit__`` checks that the daemon still serves, that it logged no bug, and that
    ``observe(mount)`` (what a client can see of the TD) is unchanged. A shared mount is
    started and stopped by its module only."""

    shared = True

    def __init__(self, owner: Mounted, observe: Callable[[Mounted], dict]):
        self.owner, self.observe = owner, observe
        self.mountpoint, self.args, self.env = owner.mountpoint, owner.args, owner.env
        self.log_path, self.proc = owner.log_path, owner.proc
        self._log_start = 0
        self._before: dict = {}

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> "Mounted":
        raise RuntimeError("a shared mount is started and stopped by its module's shared_mount fixture")

    def stop(self) -> None:
        self.start()

    def kill9(self) -> None:
        self.start()

    def __enter__(self) -> "SharedMount":
        self._before = self.observe(self)
        self._log_start = os.path.getsize(self.log_path)
        return self

    def __exit__(self, *exc) -> None:
        assert self.proc.poll() is None, f"the shared mount's daemon exited ({self.proc.returncode}):\n{self.log()}"
        bugs = [l for l in self.log().splitlines() if "Traceback" in l or "Uncaught" in l]
        assert not bugs, f"the daemon logged a bug:\n{self.log()}"
        after = self.observe(self)
        changed = sorted(k for k in {*self._before, *after} if self._before.get(k) != after.get(k))
        assert not changed, (f"this test changed the shared mount ({', '.join(changed)}): a test that changes "
                             f"state needs a fresh mount (no shared_mount mark)")


def mount_for_test(request, fresh: Callable[[], Mounted], observe: Callable[[Mounted], dict]) -> Iterator[Mounted]:
    """The body of a ``mnt`` fixture (``yield from`` it): a fresh mount, ``fresh()`` (not yet
    started), stopped after the test; or, for a test marked ``shared_mount``, its turn on the
    module's ``shared_mount`` fixture (a :class:`SharedMount`)."""
    if request.node.get_closest_marker(SHARED) is None:
        with fresh() as m:
            yield m
    else:
        with SharedMount(request.getfixturevalue("shared_mount"), observe) as m:
            yield m
