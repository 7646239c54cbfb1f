"""The conformance suite (tests/conformance) run as its users run it: under ``tdxfs run``,
which places a fresh simulated guest at the kernel's own paths in a private namespace."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_conformance_suite_passes_under_tdxfs_run(tmp_path):
    state = tmp_path / "state"
    host_before = [os.path.exists(p) for p in ("/dev/tdx_guest", "/sys/kernel/config/tsm")]
    env = {**os.environ, "TDXFS_CONFORMANCE_STATE": str(state)}
    done = subprocess.run(
        [sys.executable, "-m", "tdxfs", "run", "--state", str(state), "--log", str(tmp_path / "daemon.log"), "--",
         sys.executable, "-m", "pytest", "tests/conformance", "-q", "-p", "no:cacheprovider", "-rs"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert " passed" in output and " skipped" not in output, output
    assert [os.path.exists(p) for p in ("/dev/tdx_guest", "/sys/kernel/config/tsm")] == host_before
