"""The session's leak net (tests/leakcheck.py, issue 8 defect 12) catches what a test leaves.

A small pytest session is run in a child process with the net loaded (``-p tests.leakcheck``)
on test files that mount and never unmount — a foreground ``Mounted`` that is never stopped,
a daemonized ``tdxfs mount``, a tmpfs — one failing, one passing. The net must name each
of them, fail the session even though a test passed, and leave nothing behind.
"""

import os
import subprocess
import sys
import textwrap

from tests import leakcheck
from tests.leakcheck import clean, find_leaks
from tests.mounting import COMMAND_TIMEOUT, fstype_at

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LEAKY = textwrap.dedent('''
    import subprocess, sys
    from tests.mounting import Mounted

    def test_fails_after_mounting(tmp_path):
        Mounted(tmp_path / "fg").start()  # never stopped
        assert False, "deliberately failing"

    def test_passes_but_leaves_a_daemon_and_a_tmpfs(tmp_path):
        (tmp_path / "bg").mkdir()
        (tmp_path / "tmpfs").mkdir()
        done = subprocess.run([sys.executable, "-m", "tdxfs", "mount", str(tmp_path / "bg"),
                               "--log", str(tmp_path / "bg.log")], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "leak", str(tmp_path / "tmpfs")], check=True)
''')

CLEAN = textwrap.dedent('''
    from tests.mounting import Mounted

    def test_unmounts(tmp_path):
        with Mounted(tmp_path / "fine") as m:
            assert (tmp_path / "fine" / "tdx_guest").exists()
''')


def inner_session(tmp_path, source: str) -> subprocess.CompletedProcess:
    tests = tmp_path / "inner"
    tests.mkdir()
    (tests / "test_inner.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.leakcheck", "-p", "no:cacheprovider", "-q",
         f"--basetemp={tmp_path / 'base'}", "--rootdir", str(tests), str(tests / "test_inner.py")],
        cwd=REPO, capture_output=True, text=True, timeout=5 * COMMAND_TIMEOUT)


def test_the_net_reports_cleans_and_fails_the_session(tmp_path):
    try:
        done = inner_session(tmp_path, LEAKY)
        out = done.stdout + done.stderr
        assert done.returncode == 1, out
        assert "1 failed, 1 passed" in out, out
        assert "tdxfs leak check" in out, out
        base = tmp_path / "base"
        for name in ("fg", "bg", "tmpfs"):
            assert any(f"left mounted: '{base}" in line and f"/{name}'" in line for line in out.splitlines()), \
                (name, out)
        running = [line for line in out.splitlines() if "left running: pid" in line]
        assert any(" mount -f " in line and "/fg" in line for line in running), out
        assert any(" mount " in line and "/bg --log" in line for line in running), out
        assert "still there" not in out and "could not" not in out, out
        # the net cleaned up: nothing mounted, no daemon naming the inner session's paths
        mounts, procs = find_leaks([os.fsencode(base)], (set(), set()))
        assert mounts == [] and procs == [], (mounts, procs)
    finally:
        clean(*find_leaks([os.fsencode(tmp_path)], (set(), set())))


def test_a_clean_session_passes(tmp_path):
    done = inner_session(tmp_path, CLEAN)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "tdxfs leak check" not in out, out


def test_only_what_the_session_made_under_its_roots_counts(tmp_path):
    """Mounts that were there at the start, or outside the session's directories, are not
    this session's (other sessions may run at once)."""
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    (inside / "m").mkdir(parents=True)
    outside.mkdir()
    roots = [os.fsencode(inside)]
    empty = (set(), set())
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "leak-test", str(inside / "m")], check=True,
                   timeout=COMMAND_TIMEOUT)
    try:
        assert [m.mount_point for m in find_leaks(roots, empty)[0]] == [os.fsencode(inside / "m")]
        assert find_leaks(roots, leakcheck.snapshot()) == ([], []), "it was there at the start"
        assert find_leaks([os.fsencode(outside)], empty) == ([], [])
        # a sibling whose name only starts like the root is not under it
        assert find_leaks([os.fsencode(tmp_path / "insid")], empty) == ([], [])
    finally:
        subprocess.run(["umount", str(inside / "m")], timeout=COMMAND_TIMEOUT)
    assert fstype_at(inside / "m") is None


# -- the finalizers themselves -----------------------------------------------------------------------


def test_mounted_start_failing_half_way_leaves_nothing(tmp_path, monkeypatch):
    """An error while ``start`` waits (as the UnicodeDecodeError of issue 8 defect 4 was) must
    not leave the server it already started: ``with`` gives no ``__exit__`` when ``__enter__``
    raises."""
    from tests import mounting

    real, calls = mounting.fstype_at, []

    def failing_once(path):
        calls.append(path)
        if len(calls) == 1:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return real(path)

    monkeypatch.setattr(mounting, "fstype_at", failing_once)
    m = mounting.Mounted(tmp_path / "mnt")
    try:
        try:
            with m:
                raise AssertionError("start should have failed")
        except UnicodeDecodeError:
            pass
        assert m.proc is not None and m.proc.poll() is not None, "the server was stopped and reaped"
        assert find_leaks([os.fsencode(tmp_path)], (set(), set())) == ([], [])
    finally:
        clean(*find_leaks([os.fsencode(tmp_path)], (set(), set())))


def test_stop_all_stops_every_mount_when_one_fails(tmp_path):
    from tests.mounting import Mounted, stop_all

    ms = [Mounted(tmp_path / f"m{i}") for i in range(3)]
    try:
        for m in ms:
            m.start()
        with open(ms[0].log_path, "a") as f:  # the first one's finalizer will fail its check
            f.write("Traceback (most recent call last):\n")
        try:
            stop_all(ms)
            raise AssertionError("stop_all should have reported the first mount's failure")
        except AssertionError as exc:
            assert "the daemon logged a bug" in str(exc)
        assert all(m.proc.poll() is not None for m in ms)
        assert find_leaks([os.fsencode(tmp_path)], (set(), set())) == ([], [])
    finally:
        clean(*find_leaks([os.fsencode(tmp_path)], (set(), set())))
