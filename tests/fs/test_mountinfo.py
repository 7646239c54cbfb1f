"""Mount points are bytes (issue 8, defects 4 and 5).

Any user can make a mount whose path is not UTF-8 (``fusermount`` on a directory they
own), so one such mount anywhere must not break ``tdxfs mount``/``umount``/``run --mount``
or the mount helper; and a tdxfs mount point with a name the kernel escapes in
/proc/self/mountinfo (space, tab, newline, backslash) or that is not ASCII must be found
there: ``tdxfs umount`` finds it, a second ``tdxfs mount`` on it is refused instead of
stacked. Each odd directory lives in the test's tmp_path and every mount made here is
cleared in a finalizer, failing or not.
"""

import os
import subprocess
import sys
from contextlib import contextmanager

import pytest

import mount_helper.main as helper
from tdxfs.server import mountinfo
from tests.leakcheck import clean, find_leaks
from tests.mounting import COMMAND_TIMEOUT, Mounted, force_unmount, fstype_at, tdxfs_cmd

ODD_NAMES = {
    "non-ascii": "café",
    "space": "with space",
    "tab": "tab\there",
    "newline": "new\nline",
    "backslash": "back\\slash",
    "escape-lookalike": "lit\\040eral\\134",  # backslash-digits in the name itself
    "not-utf8": os.fsdecode(b"bad\xff\xfename"),
    "dash": "-",  # the field separator of mountinfo, as a whole name
}


@pytest.fixture
def area(tmp_path):
    """tmp_path; afterwards every tdxfs daemon naming a path in it is killed and every mount
    in it cleared, whatever the test did."""
    yield tmp_path
    clean(*find_leaks([os.fsencode(tmp_path)], (set(), set())))


@contextmanager
def tmpfs(path):
    """A small tmpfs at ``path`` (any bytes) for the length of the block."""
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tdxfs-test", os.fsencode(path)], check=True,
                   timeout=COMMAND_TIMEOUT)
    try:
        yield path
    finally:
        done = subprocess.run(["umount", os.fsencode(path)], capture_output=True, timeout=COMMAND_TIMEOUT)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", os.fsencode(path)], capture_output=True, timeout=COMMAND_TIMEOUT)


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done


def refused(done, *words):
    assert done.returncode != 0, done
    assert done.stderr.startswith("tdxfs: ") and done.stderr.count("\n") == 1, f"one line: {done.stderr!r}"
    for word in words:
        assert word in done.stderr, (word, done.stderr)


def daemons_naming(path: str):
    want = os.fsencode(path)
    return [p for p in find_leaks([os.fsencode(os.path.dirname(path))], (set(), set()))[1] if want in p.argv]


# -- the parser ----------------------------------------------------------------------------------


def test_unescape_is_exact():
    assert mountinfo.unescape(rb"a\040b\011c\012d\134e") == b"a b\tc\nd\\e"
    # an escaped backslash followed by digits stays those digits
    assert mountinfo.unescape(rb"\134040") == b"\\040"
    assert mountinfo.unescape(b"caf\xc3\xa9\xff") == b"caf\xc3\xa9\xff"


def test_parse_line_with_optional_fields_and_odd_bytes():
    line = (b"36 35 98:0 /r\\040oot /mnt/caf\xc3\xa9\\011\xff rw,noatime shared:1 master:2 - "
            b"fuse.tdxfs tdxfs rw,user_id=0\n")
    m = mountinfo.parse_line(line)
    assert (m.mount_id, m.parent_id, m.major, m.minor) == (36, 35, 98, 0)
    assert m.root == b"/r oot" and m.mount_point == b"/mnt/caf\xc3\xa9\t\xff"
    assert (m.fstype, m.source, m.super_options) == ("fuse.tdxfs", b"tdxfs", b"rw,user_id=0")


def test_the_top_of_a_stack_is_the_mount_no_other_covers():
    table = mountinfo.parse(b"10 1 0:1 / /m rw - tmpfs a rw\n"
                            b"12 11 0:3 / /m rw - autofs c rw\n"   # listed before the one it covers
                            b"11 10 0:2 / /m rw - fuse.tdxfs b rw\n")
    assert mountinfo.fstype_at("/m", table) == "autofs"
    assert [m.fstype for m in mountinfo.mounts_at("/m", table)] == ["tmpfs", "autofs", "fuse.tdxfs"]


@pytest.mark.parametrize("case", sorted(ODD_NAMES))
def test_the_kernels_escapes_read_back_exactly(area, case):
    path = os.path.join(str(area), ODD_NAMES[case])
    with tmpfs(path):
        here = mountinfo.mounts_at(path)
        assert [(m.mount_point, m.fstype, m.source) for m in here] == \
            [(os.fsencode(path), "tmpfs", b"tdxfs-test")]
        assert fstype_at(path) == "tmpfs"
        # and every line of the table parses
        with open("/proc/self/mountinfo", "rb") as f:
            assert len(mountinfo.mounts()) == f.read().count(b"\n")
    assert fstype_at(path) is None


# -- tdxfs with a non-UTF-8 mount elsewhere on the system ------------------------------------------


def test_mount_and_umount_work_while_a_non_utf8_mount_exists(area):
    odd = os.path.join(str(area), os.fsdecode(b"\xff"))
    mp = area / "mnt"
    mp.mkdir()
    with tmpfs(odd):
        ok(tdxfs_cmd("mount", str(mp), "--log", str(area / "d.log")))
        try:
            with open(mp / "rtmr3", "rb") as f:
                assert f.read() == b"0" * 96 + b"\n"
        finally:
            ok(tdxfs_cmd("umount", str(mp)))
        assert fstype_at(mp) is None
        with Mounted(area / "fg") as m:  # the foreground daemon too
            assert os.path.exists(m.path("tdx_guest"))
        # the odd mount is named in a refusal, escaped, on one line
        refused(tdxfs_cmd("umount", odd), "\\xff", "tmpfs mount, not tdxfs")
        assert fstype_at(odd) == "tmpfs"
        # tdxfs run --mount checks its mount through mountinfo too
        refused(subprocess.run([sys.executable, "-m", "tdxfs", "run", "--mount", str(mp), "--", "true"],
                               capture_output=True, text=True, timeout=COMMAND_TIMEOUT), "not a tdxfs mount")
        # the mount helper's checks (fake mode: nothing is mounted)
        assert helper.main(["tdxfs", str(mp), "-f"]) == 0


# -- tdxfs mounts at odd mount points --------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(ODD_NAMES))
def test_odd_mountpoint_is_found_unmounted_and_never_stacked(area, case):
    mp = os.path.join(str(area), ODD_NAMES[case])
    os.mkdir(mp)
    log = area / "d.log"
    ok(tdxfs_cmd("mount", mp, "--log", str(log)))
    with open(os.path.join(mp, "rtmr3"), "rb") as f:
        assert f.read() == b"0" * 96 + b"\n"
    assert fstype_at(mp) == "fuse.tdxfs"
    assert len(daemons_naming(mp)) == 1
    # a second mount, daemonized or in the foreground, is refused: no stack
    for args in ([], ["-f"]):
        refused(tdxfs_cmd("mount", mp, "--log", str(log), *args), "already a mount point")
    assert len(mountinfo.mounts_at(mp)) == 1
    assert len(daemons_naming(mp)) == 1
    # tdxfs run --mount finds it
    done = subprocess.run([sys.executable, "-m", "tdxfs", "run", "--mount", mp, "--",
                           "sh", "-c", 'cat "$TDXFS_MOUNT/rtmr3"'], capture_output=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0 and done.stdout == b"0" * 96 + b"\n", done
    ok(tdxfs_cmd("umount", mp))
    assert fstype_at(mp) is None
    refused(tdxfs_cmd("umount", mp), "not mounted")
    # the log: one line per message, the mount point escaped in each
    text = log.read_bytes().decode()
    lines = text.splitlines()
    assert all(line[:4].isdigit() and " tdxfs[" in line for line in lines), text
    assert sum("serving on" in line for line in lines) == 1 and sum("unmounted" in line for line in lines) == 1
    assert "Logging error" not in text and "Traceback" not in text, text


def test_the_tests_own_force_unmount_handles_odd_names(area):
    mp = os.path.join(str(area), ODD_NAMES["not-utf8"] + ODD_NAMES["newline"])
    m = Mounted(mp)
    try:
        m.start()
        m.kill9()  # a dead mount at an odd path
        assert fstype_at(mp) == "fuse.tdxfs"
    finally:
        m.stop()
    assert fstype_at(mp) is None
    force_unmount(mp)  # nothing there: a no-op
