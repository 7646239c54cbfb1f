"""``tdxfs mount --transport kernel|libfuse`` (issue 10, section 1): the kernel transport is
the default, libfuse the selectable fallback; ``--threads`` implies libfuse; and what only
the kernel transport can do (per-file attribute timeouts)."""

import json
import os
import subprocess

import pytest

from tests.fsclient import slurp
from tests.mounting import COMMAND_TIMEOUT, fstype_at, tdxfs_cmd


def served_by(m) -> str:
    return json.loads(slurp(m.path(".stats")))["server"]["transport"]


@pytest.mark.parametrize("transport", ["kernel", "libfuse"])
def test_the_transport_asked_for_serves(mount_factory, transport):
    m = mount_factory("--transport", transport)
    assert served_by(m) == transport
    assert len(slurp(m.path("tdreport"))) == 1024


def test_the_default_is_the_kernel_transport(tmp_path):
    """Without --transport and without TDXFS_TRANSPORT: the kernel transport (a daemon mount)."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TDXFS_TRANSPORT"}
    done = tdxfs_cmd("mount", str(mp), "--log", str(tmp_path / "log"), env=env)
    try:
        assert done.returncode == 0, done.stderr
        assert json.loads(slurp(os.path.join(mp, ".stats")))["server"]["transport"] == "kernel"
    finally:
        assert tdxfs_cmd("umount", str(mp)).returncode == 0


def test_threads_imply_libfuse(mount_factory):
    assert served_by(mount_factory("--threads")) == "libfuse"


def test_threads_with_the_kernel_transport_is_one_line(tmp_path):
    (tmp_path / "mnt").mkdir()
    done = tdxfs_cmd("mount", str(tmp_path / "mnt"), "--transport", "kernel", "--threads")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "single-threaded" in done.stderr, done.stderr


def test_an_unknown_transport_in_the_environment_is_one_line(tmp_path):
    (tmp_path / "mnt").mkdir()
    done = tdxfs_cmd("mount", str(tmp_path / "mnt"), env={**os.environ, "TDXFS_TRANSPORT": "nosuch"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "TDXFS_TRANSPORT=nosuch" in done.stderr, done.stderr


def test_volatile_files_are_never_cached(mnt):
    """Kernel transport only: eventlog and the ACPI files have attr_valid 0, so a stat after
    an extend made through another file (rtmr3) shows the log's new size at once, and so
    does the size a sendfile is cut to (fuzzing defect 3 in docs/reliability.md)."""
    before = os.stat(mnt.path("eventlog")).st_size  # the kernel has its attributes now
    with open(mnt.path("rtmr3"), "wb", buffering=0) as f:
        f.write(os.urandom(48))
    size = os.stat(mnt.path("eventlog")).st_size  # before any read (a read past the size updates it)
    fd = os.open(mnt.path("eventlog"), os.O_RDONLY)
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        sent = os.sendfile(sink, fd, 0, 1 << 20)
    finally:
        os.close(fd)
        os.close(sink)
    text = slurp(mnt.path("eventlog"))
    assert len(text) > before
    assert (size, sent) == (len(text), len(text))
    assert os.stat(mnt.path("acpi/data/CCEL")).st_size == len(slurp(mnt.path("acpi/data/CCEL")))


def test_the_mount_helper_takes_a_transport():
    import mount_helper.main as helper

    assert helper.parse_options("transport=libfuse,state=/x")[0] == {"transport": "libfuse", "state": "/x"}
    assert helper.parse_options("threads")[0] == {"threads": True}  # mount() makes it libfuse
    for bad, said in (("transport=nosuch", "takes kernel or libfuse"), ("transport", "needs a value"),
                      ("threads,transport=kernel", "single-threaded")):
        with pytest.raises(helper.UsageError, match=said):
            helper.parse_options(bad)


@pytest.mark.parametrize("transport", ["kernel", "libfuse"])
def test_the_mount_helper_mounts_on_either_transport(tmp_path, transport):
    """mount.fuse.tdxfs as mount(8) runs it (an empty environment), transport=...: a daemon
    mount served by that transport, unmounted by tdxfs umount."""
    import sys

    helper = os.path.join(os.path.dirname(sys.executable), "mount.fuse.tdxfs")
    if not os.path.exists(helper):
        pytest.skip(f"{helper} not installed (pip install -e .)")
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = {k: v for k, v in os.environ.items() if k in ("TDXFS_FUSE_BINDING", "PYTHONPATH")}
    done = subprocess.run([helper, "tdxfs", str(mp), "-o", f"transport={transport},log={tmp_path / 'log'}"],
                          env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    try:
        assert done.returncode == 0, done.stderr
        assert json.loads(slurp(os.path.join(mp, ".stats")))["server"]["transport"] == transport
    finally:
        if fstype_at(mp) is not None:
            assert tdxfs_cmd("umount", str(mp)).returncode == 0
