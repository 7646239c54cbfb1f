"""Mounts served by the kernel transport, for this test package.

``KernelMounted`` is ``tests.mounting.Mounted`` (stop, unmount, log, rejections, the
check for tracebacks at exit) with another server command:
``python -m tdxfs.server.kernel MOUNTPOINT ARGS`` in its own process, whatever
``TDXFS_TRANSPORT`` says (``tests/mounting.py``'s ``Mounted`` follows that variable).
"""

import os
import subprocess
import sys
import time
from typing import List

from tests.mounting import MOUNT_TIMEOUT, Mounted, fstype_at


class KernelMounted(Mounted):
    """A tdxfs mount served by ``python -m tdxfs.server.kernel`` in a separate process."""

    prefix: List[str] = []  # a command that runs the server, e.g. setpriv as another user

    def command(self) -> List[str]:
        return [*self.prefix, sys.executable, "-m", "tdxfs.server.kernel", self.mountpoint, *self.args]

    def start(self) -> "KernelMounted":
        """Mount and wait until mountinfo shows it; on any failure the server is stopped
        and the mount cleared before the error propagates (as ``Mounted.start``)."""
        try:
            os.makedirs(self.mountpoint, exist_ok=True)
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             env=self.env)
            deadline = time.monotonic() + MOUNT_TIMEOUT
            while fstype_at(self.mountpoint) != "fuse.tdxfs":
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the kernel transport exited with {self.proc.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the kernel transport not mounted after {MOUNT_TIMEOUT}s:\n{self.log()}")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        return self
