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

MOUNT_TIMEOUT = 20.0
COMMAND_TIMEOUT = 30.0


def fstype_at(path: str) -> Optional[str]:
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4].encode().decode("unicode_escape") == target:
                found = parts[parts.index("-") + 1]
    return found


def sh(cmd: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """A real shell command, with a timeout; output as bytes."""
    return subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=COMMAND_TIMEOUT, check=check, **kw)


def tdxfs_cmd(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tdxfs", *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT, **kw)


def _connection_id(path: str) -> Optional[str]:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4].encode().decode("unicode_escape") == target and "fuse" in line:
                major, minor = parts[2].split(":")
                return minor if major == "0" else None
    return None


def force_unmount(path: str) -> None:
    """Leave no mount behind, even a dead or hung one."""
    if fstype_at(path) is None:
        return
    conn = _connection_id(path)
    if conn and os.path.exists(f"/sys/fs/fuse/connections/{conn}/abort"):
        with open(f"/sys/fs/fuse/connections/{conn}/abort", "w") as f:
            f.write("1")
    subprocess.run(["fusermount3", "-uz", path], capture_output=True, timeout=COMMAND_TIMEOUT)
    if fstype_at(path) is not None:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=COMMAND_TIMEOUT)


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
        os.makedirs(self.mountpoint, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tdxfs", "mount", "-f", self.mountpoint, *self.args],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env)
        log.close()
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while fstype_at(self.mountpoint) != "fuse.tdxfs":
            if self.proc.poll() is not None:
                raise RuntimeError(f"tdxfs mount exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tdxfs mount not ready after {MOUNT_TIMEOUT}s:\n{self.log()}")
            time.sleep(0.02)
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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=COMMAND_TIMEOUT)
        force_unmount(self.mountpoint)

    def __enter__(self) -> "Mounted":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        bugs = [l for l in self.log().splitlines() if "Traceback" in l or "Uncaught" in l]
        assert not bugs, f"the daemon logged a bug:\n{self.log()}"
