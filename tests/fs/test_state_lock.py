"""The state directory's lock belongs to the daemon alone: once ``mount()`` has forked the
daemon, the process that called it holds no descriptor in DIR, so a second mount of DIR is
refused by the daemon's lock and accepted as soon as that daemon is gone, whoever called
``mount()`` and however long it lives (mount(8)'s helper, a Python caller).

The caller is a child process (``CALLER``) that mounts in daemon mode through the Python
API, reports what it holds, and stays alive until told to exit; the daemon it forks serves
the mount. Every mount is cleared in the finalizer."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.mounting import COMMAND_TIMEOUT, force_unmount, fstype_at, tdxfs_cmd

CALLER = textwrap.dedent("""
    import json, sys
    from tdxfs.server.daemon import MountConfig, mount

    state, mountpoint, log = sys.argv[1:4]
    code = mount(MountConfig(mountpoint, state=state, log=log))
    print(json.dumps({"code": code}), flush=True)
    sys.stdin.readline()  # alive until the test is done with it
""")


def fds_in(pid: int, directory: str) -> list:
    inside = os.path.realpath(directory) + "/"
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == inside[:-1] or target.startswith(inside):
            out.append(target)
    return out


def daemon_pid(mountpoint) -> int:
    with open(os.path.join(mountpoint, ".stats")) as f:
        return int(json.load(f)["server"]["pid"])


@pytest.fixture
def mounts(tmp_path):
    """Mount points under tmp_path; every daemon on them is stopped and every mount cleared."""
    made = []

    def mountpoint(name):
        path = tmp_path / name
        path.mkdir()
        made.append(str(path))
        return str(path)

    yield mountpoint
    for path in made:
        if fstype_at(path) == "fuse.tdxfs":
            try:
                os.kill(daemon_pid(path), signal.SIGTERM)
            except (OSError, ValueError, KeyError):
                pass
        force_unmount(path)
    assert all(fstype_at(path) is None for path in made)


def test_the_caller_of_mount_holds_no_descriptor_on_the_state_directory(tmp_path, mounts):
    state = str(tmp_path / "state")
    one, two = mounts("one"), mounts("two")
    caller = subprocess.Popen([sys.executable, "-c", CALLER, state, one, str(tmp_path / "one.log")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        said = json.loads(caller.stdout.readline() or "{}")
        assert said.get("code") == 0, said
        # the caller, still alive, holds nothing in DIR (not the lock, not the event log)
        assert fds_in(caller.pid, state) == []
        daemon = daemon_pid(one)
        assert daemon != caller.pid
        assert os.path.join(os.path.realpath(state), "lock") in fds_in(daemon, state)

        # a second mount of DIR is refused: the daemon's lock is held
        second = tdxfs_cmd("mount", two, "--state", state, "--log", str(tmp_path / "two.log"))
        assert second.returncode == 1 and "in use" in second.stderr, second
        assert fstype_at(two) is None

        # the daemon gone (the caller still alive), DIR is free for another mount
        assert tdxfs_cmd("umount", one).returncode == 0
        assert _wait_gone(daemon), f"daemon {daemon} still running after umount"
        third = tdxfs_cmd("mount", two, "--state", state, "--log", str(tmp_path / "two.log"))
        assert third.returncode == 0, third
        assert tdxfs_cmd("umount", two).returncode == 0
    finally:
        caller.stdin.close()
        caller.wait(timeout=COMMAND_TIMEOUT)


def _wait_gone(pid: int) -> bool:
    """Poll (with a deadline) until ``pid`` has exited or is a zombie (the caller's child,
    not ours to reap)."""
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False
