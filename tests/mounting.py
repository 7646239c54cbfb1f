"""Real mounts for tests: the server always runs in its own process.

``Mounted`` starts ``python -m tdxfs mount -f`` in a child process, waits (with a timeout)
until /proc/self/mountinfo shows the fuse.tdxfs mount, and always unmounts in ``stop``:
SIGTERM first, then SIGKILL, a lazy unmount, and as a last resort an abort through
/sys/fs/fuse/connections so no test can leave a hung mount behind.
"""

import os
import signal
import subprocess
import sys
import time
from typing import List, Optional

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
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "tdxfs", "mount", "-f", self.mountpoint, *self.args],
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
