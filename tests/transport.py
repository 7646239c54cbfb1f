"""Which transport the suite's mounts are served by, and the tests that apply to one only.

``TDXFS_TRANSPORT`` (kernel or libfuse; unset: the CLI's default, the kernel transport)
picks it for the whole run: ``tests/mounting.py``'s ``Mounted`` passes it on as
``tdxfs mount --transport``, and every ``tdxfs`` a test runs (``tdxfs run``, ``tdxfs
stress``, the mount helper) reads the same variable as its default. tox runs tests/fs on
both (``py3``: kernel; ``libfuse``: mfusepy/libfuse3; ``fusepy``: fusepy/libfuse2).

A test that applies to one transport only is shown as skipped with the reason, not left
out (``skip_other_transports``, a ``pytest_collection_modifyitems`` body).
"""

import os

import pytest

TRANSPORT = os.environ.get("TDXFS_TRANSPORT") or "kernel"

# test id (FILE::NAME, as tests/fs names them) -> why it is for libfuse only; the kernel
# transport's own check is named where there is one.
LIBFUSE_ONLY = {
    "test_smoke.py::test_served_by_the_requested_binding":
        "checks the libfuse binding named in the log (tests/kernel/test_mount.py::test_mounted_as_fuse_tdxfs)",
    "test_stats.py::test_stats_is_valid_json":
        "checks the libfuse binding in /.stats (the rest: tests/kernel/test_mount.py::test_mounted_as_fuse_tdxfs)",
    "test_stats.py::test_counters_match_the_kernels_view":
        "reads libfuse's debug output (tests/kernel/test_mount.py::test_counters_match_the_requests_received)",
}
# test id -> why it is for the kernel transport only
KERNEL_ONLY = {
    "test_transports.py::test_volatile_files_are_never_cached":
        "per-file attribute timeouts: libfuse's high-level API has one timeout for every file",
}


def skip_other_transports(items) -> None:
    """Mark the tests that do not apply to this run's transport as skipped, with the reason."""
    other = KERNEL_ONLY if TRANSPORT != "kernel" else LIBFUSE_ONLY
    only = "kernel" if TRANSPORT != "kernel" else "libfuse"
    for item in items:
        reason = other.get(f"{item.path.name}::{item.name}")
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"{only} transport only: {reason}"))
