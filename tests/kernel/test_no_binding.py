"""The kernel transport needs no FUSE binding: ``tdxfs mount -f --transport kernel`` serves
and unmounts cleanly in a process where importing mfusepy or fusepy fails (the tox
``nofuse`` env runs this with mfusepy uninstalled as well). One real mount."""

import json
import sys
from typing import List

from tests.fsclient import slurp
from tests.kernel.mounting import KernelMounted

# Run the CLI with every FUSE binding made unimportable (None in sys.modules: ImportError).
NO_BINDING = ("import sys; sys.modules.update(mfusepy=None, fuse=None, fuse3=None, pyfuse3=None); "
              "from tdxfs.cli import main; sys.exit(main(sys.argv[1:]))")


class NoBindingMounted(KernelMounted):
    def command(self) -> List[str]:
        return [sys.executable, "-c", NO_BINDING, "mount", "-f", "--transport", "kernel", self.mountpoint,
                *self.args]


def test_the_kernel_transport_mounts_without_a_binding(tmp_path):
    with NoBindingMounted(tmp_path / "mnt") as m:
        server = json.loads(slurp(m.path(".stats")))["server"]
        assert (server["transport"], server["binding"], server["libfuse"]) == ("kernel", "tdxfs.server.kernel", "none")
        assert len(slurp(m.path("tdreport"))) == 1024
        assert len(slurp(m.path("rtmr0"))) == 97  # 96 hex digits and a newline
    log = m.log()
    assert "via the kernel transport" in log and "unmounted" in log, log
    assert "mount failed" not in log, log


def test_the_libfuse_transport_needs_one(tmp_path):
    """The boundary holds the other way: asking for libfuse there is the binding's ImportError,
    at serve time, not at start-up of the CLI (which imported fine above)."""
    m = NoBindingMounted(tmp_path / "mnt")
    m.command = lambda: [sys.executable, "-c", NO_BINDING, "mount", "-f", "--transport", "libfuse", m.mountpoint]
    try:
        try:
            m.start()
        except RuntimeError as exc:
            assert "mfusepy" in str(exc) or "fuse" in str(exc)
        else:
            raise AssertionError("the libfuse transport mounted with no binding importable")
    finally:
        m.stop()
