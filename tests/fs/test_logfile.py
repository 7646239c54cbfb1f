"""``--log FILE`` cannot be turned against the host (issue 8, defect 2).

The daemon runs as root and appends to its log: a symlink planted at the log's path, a
hard link to another file, a file of another user, a FIFO or a directory are refused with
one line, in every mode that opens a log (``tdxfs mount`` daemonized and in the foreground,
``tdxfs run``), before anything is mounted or any state touched. A new log is 0600.
Directories on the way to the log are resolved as usual (a symlinked /var/log works).
"""

import os
import stat
import subprocess
import sys

import pytest

from tests.leakcheck import clean, find_leaks
from tests.mounting import COMMAND_TIMEOUT, Mounted, fstype_at, tdxfs_cmd

NOBODY = 65534
VICTIM_TEXT = b"a file the daemon must never write\n"


@pytest.fixture
def area(tmp_path):
    """tmp_path, and at the end: every daemon naming a path in it killed, every mount cleared
    (the checks below expect refusals; a daemon that starts anyway must not outlive the test)."""
    yield tmp_path
    clean(*find_leaks([os.fsencode(tmp_path)], (set(), set())))


def one_line_refusal(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode != 0, f"not refused:\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.stderr.startswith("tdxfs: ") and done.stderr.count("\n") == 1, f"one line: {done.stderr!r}"
    for word in words:
        assert word in done.stderr, (word, done.stderr)


def victim(tmp_path):
    path = tmp_path / "victim"
    path.write_bytes(VICTIM_TEXT)
    os.chmod(path, 0o644)
    return path


def plant(kind: str, log, tmp_path):
    """Make ``log`` the hostile thing ``kind``; return what must stay untouched."""
    if kind == "symlink":
        target = victim(tmp_path)
        os.symlink(target, log)
        return target
    if kind == "dangling-symlink":  # O_CREAT through it would create the target
        target = tmp_path / "created-through-the-link"
        os.symlink(target, log)
        return target
    if kind == "hard-link":
        target = victim(tmp_path)
        os.link(target, log)
        return target
    if kind == "other-user":
        log.write_bytes(VICTIM_TEXT)
        os.chown(log, NOBODY, NOBODY)
        return log
    if kind == "fifo":  # opening it for writing would block the daemon until a reader came
        os.mkfifo(log, 0o600)
        return log
    if kind == "directory":
        log.mkdir()
        return log
    raise AssertionError(kind)


REFUSALS = {
    "symlink": "symbolic link",
    "dangling-symlink": "symbolic link",
    "hard-link": "hard links",
    "other-user": f"owned by uid {NOBODY}",
    "fifo": "not a regular file",
    "directory": "not a regular file",
}


def untouched(kind: str, target) -> bool:
    if kind == "dangling-symlink":
        return not os.path.lexists(target)
    if kind in ("fifo", "directory"):
        return not stat.S_ISREG(os.lstat(target).st_mode)
    return target.read_bytes() == VICTIM_TEXT


def tdxfs_run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tdxfs", "run", *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT)


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_daemon_refuses_a_hostile_log(area, kind):
    mp, log, state = area / "mnt", area / "tdxfs.log", area / "state"
    mp.mkdir()
    target = plant(kind, log, area)
    done = tdxfs_cmd("mount", str(mp), "--log", str(log), "--state", str(state))
    one_line_refusal(done, "log file", str(log), REFUSALS[kind])
    assert fstype_at(mp) is None
    assert untouched(kind, target)
    assert not state.exists(), "the log is refused before the state directory is touched"


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_foreground_refuses_a_hostile_log(area, kind):
    log = area / "tdxfs.log"
    target = plant(kind, log, area)
    m = Mounted(area / "mnt", "--log", str(log))
    try:
        with pytest.raises(RuntimeError) as exc:
            m.start()
    finally:
        m.stop()
    assert "log file" in str(exc.value) and REFUSALS[kind] in str(exc.value), exc.value
    assert "Traceback" not in str(exc.value)
    assert fstype_at(m.mountpoint) is None
    assert untouched(kind, target)


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_run_refuses_a_hostile_log(area, kind):
    log = area / "tdxfs.log"
    target = plant(kind, log, area)
    done = tdxfs_run("--log", str(log), "--", "true")
    assert done.returncode == 125, done
    one_line_refusal(done, "log file", str(log), REFUSALS[kind])
    assert untouched(kind, target)


def test_a_new_log_is_0600_and_an_existing_one_is_appended(area):
    mp = area / "mnt"
    mp.mkdir()
    new, old = area / "new.log", area / "old.log"
    old.write_bytes(b"earlier line\n")
    os.chmod(old, 0o640)
    for log in (new, old):
        done = subprocess.run([sys.executable, "-m", "tdxfs", "mount", str(mp), "--log", str(log)],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT, preexec_fn=lambda: os.umask(0))
        assert done.returncode == 0, done
        assert tdxfs_cmd("umount", str(mp)).returncode == 0
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o600, oct(os.stat(new).st_mode)
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o640, "an existing log keeps its mode"
    assert old.read_bytes().startswith(b"earlier line\n") and b"serving on" in old.read_bytes()


def test_foreground_log_file_is_0600_and_gets_the_lines(area):
    log = area / "fg.log"
    with Mounted(area / "mnt", "--log", str(log)) as m:
        with pytest.raises(OSError):
            with open(m.path("rtmr3"), "wb") as f:
                f.write(b"not hex\n")
    text = log.read_text()
    assert "serving on" in text and "rejected " in text and "unmounted" in text, text
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600


def test_run_log_is_0600(area):
    log = area / "run.log"
    done = subprocess.run([sys.executable, "-m", "tdxfs", "run", "--log", str(log), "--", "true"],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT, preexec_fn=lambda: os.umask(0))
    assert done.returncode == 0, done
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert "serving on" in log.read_text()


def test_a_symlinked_directory_on_the_way_is_fine(area):
    """Only the last component is the log's own: /var/log may be a symlink on some systems."""
    real = area / "real"
    real.mkdir()
    os.symlink(real, area / "linked")
    mp = area / "mnt"
    mp.mkdir()
    done = tdxfs_cmd("mount", str(mp), "--log", str(area / "linked" / "t.log"))
    assert done.returncode == 0, done
    assert tdxfs_cmd("umount", str(mp)).returncode == 0
    assert "serving on" in (real / "t.log").read_text()


@pytest.mark.parametrize("kind", ["symlink", "other-user"])
def test_mount_helper_log_option_is_refused_the_same_way(area, kind):
    """``mount -t fuse.tdxfs … -o log=FILE`` goes through the same open (exit 32, mount(8)'s
    "mount failure")."""
    mp = area / "mnt"
    mp.mkdir()
    log = area / "tdxfs.log"
    target = plant(kind, log, area)
    done = subprocess.run([sys.executable, "-m", "mount_helper.main", "tdxfs", str(mp), "-o", f"log={log}"],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 32, done
    assert done.stderr.startswith("mount.fuse.tdxfs: log file") and done.stderr.count("\n") == 1, done.stderr
    assert REFUSALS[kind] in done.stderr
    assert fstype_at(mp) is None
    assert untouched(kind, target)
