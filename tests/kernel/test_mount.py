"""The kernel transport end to end: real mounts served by ``python -m tdxfs.server.kernel``
in their own process, driven by shell commands and os calls from this one."""

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import pytest

from tdxfs.server import mountinfo
from tests import fsclient, leakcheck
from tests.fsclient import put, run_clients, slurp
from tests.kernel.mounting import KernelMounted
from tests.mounting import COMMAND_TIMEOUT, MOUNT_TIMEOUT, fstype_at, sh

NONCE = bytes(range(0x40, 0x80))
GET_REPORT0 = 0xC4405401
TCGETS = 0x5401
NOBODY = 65534


def wait_until(predicate, what: str, timeout: float = MOUNT_TIMEOUT) -> None:
    """Poll for an outcome (not a timing assertion: the deadline only bounds a hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout}s: {what}")
        time.sleep(0.02)


def test_mounted_as_fuse_tdxfs(mnt):
    here = mountinfo.mounts_at(os.path.realpath(mnt.mountpoint))
    assert len(here) == 1
    assert (here[0].source, here[0].fstype) == (b"tdxfs", "fuse.tdxfs")
    options = (here[0].options + b"," + here[0].super_options).decode().split(",")
    assert {"default_permissions", "nosuid", "nodev", "user_id=0", "group_id=0"} <= set(options)
    assert "allow_other" not in options
    server = json.loads(slurp(mnt.path(".stats")))["server"]
    assert server["transport"] == "kernel" and server["protocol"] == "7.38" and server["libfuse"] == "none"


def test_shell_clients(mnt):
    done = sh(f"echo {NONCE.hex()} > {mnt.path('reportdata')} && cat {mnt.path('tdreport')}")
    assert done.returncode == 0 and done.stdout[128:192] == NONCE, done.stderr
    assert sh(f"cat {mnt.path('rtmr3')}", check=True).stdout == b"0" * 96 + b"\n"
    with open(mnt.path("rtmr1"), "rb") as f:  # Python's open(): a TCGETS first
        assert len(f.read()) == 97
    assert mnt.rejections() == []


def test_ioctls(mnt):
    from tdxfs.client.ioctl import TdxGuest

    with TdxGuest(mnt.path("tdx_guest")) as dev:
        assert dev.get_report0(NONCE)[128:192] == NONCE
        with pytest.raises(OSError) as exc:
            fcntl.ioctl(dev.fd, TCGETS, bytearray(64))
        assert exc.value.errno == errno.ENOTTY
    assert mnt.rejections() == []


def test_big_reads_and_writes(mnt):
    assert len(slurp(mnt.path("eventlog"), chunk=1 << 20)) == os.stat(mnt.path("eventlog")).st_size
    fd = os.open(mnt.path("reportdata"), os.O_WRONLY)
    try:
        with pytest.raises(OSError) as exc:
            os.write(fd, b"x" * (1 << 20))  # split by the kernel into max_write pieces; the first is refused
        assert exc.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_a_write_of_80_kib_arrives_whole(mnt):
    """One WRITE up to max_write (128 KiB): an event log record with 40 KiB of event data."""
    data = bytes(range(256)) * 160
    digest = hashlib.sha384(data).digest()
    record = f"3 EV_IPL {digest.hex()} {data.hex()}\n".encode()
    assert len(record) > 80 * 1024
    old = bytes.fromhex(slurp(mnt.path("rtmr3")).decode())
    assert put(mnt.path("eventlog"), record) == len(record)
    assert bytes.fromhex(slurp(mnt.path("rtmr3")).decode()) == hashlib.sha384(old + digest).digest()
    assert mnt.rejections() == []


def test_sigterm_unmounts_cleanly(tmp_path):
    m = KernelMounted(tmp_path / "mnt").start()
    try:
        assert slurp(m.path("rtmr0"))
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=COMMAND_TIMEOUT) == 0
        assert fstype_at(m.mountpoint) is None
        assert "unmounted" in m.log()
    finally:
        m.__exit__(None, None, None)


def test_an_unmount_from_outside_ends_the_server(tmp_path):
    m = KernelMounted(tmp_path / "mnt").start()
    try:
        subprocess.run(["fusermount3", "-u", m.mountpoint], check=True, timeout=COMMAND_TIMEOUT)
        assert m.proc.wait(timeout=COMMAND_TIMEOUT) == 0
        assert fstype_at(m.mountpoint) is None
    finally:
        m.__exit__(None, None, None)


def test_mount_through_fusermount3(mount_factory):
    m = mount_factory("--via", "fusermount3")
    assert "via the kernel transport (fusermount3" in m.log()
    assert mountinfo.mounts_at(os.path.realpath(m.mountpoint))[0].source == b"tdxfs"
    put(m.path("reportdata"), NONCE)
    assert slurp(m.path("tdreport"))[128:192] == NONCE
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=COMMAND_TIMEOUT) == 0
    assert fstype_at(m.mountpoint) is None


def test_auto_unmount_after_a_crash(mount_factory):
    """fusermount3 (auto_unmount) unmounts when the server dies, even by SIGKILL."""
    m = mount_factory("-o", "auto_unmount")
    assert "via the kernel transport (fusermount3" in m.log()
    assert slurp(m.path("rtmr0"))
    m.kill9()
    wait_until(lambda: fstype_at(m.mountpoint) is None, "fusermount3 removes the dead mount")


def test_a_crash_without_auto_unmount_leaves_a_dead_mount(mount_factory):
    m = mount_factory()
    m.kill9()
    with pytest.raises(OSError) as exc:
        os.stat(m.path("rtmr0"))
    assert exc.value.errno == errno.ENOTCONN  # cleared by the fixture (fusermount3 -u)
    assert fstype_at(m.mountpoint) == "fuse.tdxfs"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_a_user_mounts_through_fusermount3():
    """Not root: /dev/fuse is 0600 here, so only fusermount3's fd passing can mount."""
    if not fsclient.nobody_runs_this_python():
        pytest.skip("user nobody cannot run this Python environment")
    base = tempfile.mkdtemp(prefix="tdxfs-kernel-user.")
    leakcheck.watch(base)
    os.chmod(base, 0o755)
    mountpoint = os.path.join(base, "mnt")
    os.mkdir(mountpoint)
    os.chown(mountpoint, NOBODY, NOBODY)
    m = KernelMounted(mountpoint)
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    m.prefix = as_nobody
    try:
        try:
            m.start()
        except RuntimeError:
            if "fusermount3: failed to open /dev/fuse: Permission denied" in m.log():
                pytest.skip("fusermount3 (setuid root) cannot open /dev/fuse for a user on this machine")
            raise
        top = mountinfo.top_at(mountpoint)
        assert f"user_id={NOBODY}" in (top.options + b"," + top.super_options).decode()
        with pytest.raises(PermissionError):
            os.stat(m.path("rtmr0"))  # no allow_other: not even root gets in
        done = subprocess.run([*as_nobody, "cat", m.path("rtmr0")], capture_output=True, timeout=COMMAND_TIMEOUT)
        assert done.returncode == 0 and len(done.stdout) == 97, done
        assert "via the kernel transport (fusermount3" in m.log()
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=COMMAND_TIMEOUT) == 0
        assert fstype_at(mountpoint) is None
    finally:
        m.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_refusals_at_start_are_one_line(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("")
    for target, message in ((afile, "is not a directory"), (tmp_path / "absent", "does not exist")):
        done = subprocess.run([sys.executable, "-m", "tdxfs.server.kernel", str(target)], capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT)
        assert done.returncode == 1 and message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    (tmp_path / "mnt").mkdir()
    done = subprocess.run([sys.executable, "-m", "tdxfs.server.kernel", str(tmp_path / "mnt"), "-o", "nosuchoption"],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 1 and "nosuchoption" in done.stderr and "Traceback" not in done.stderr
    assert fstype_at(tmp_path / "mnt") is None


def _transaction_client(mountpoint: str, seed: int, barrier, results) -> None:
    fd = os.open(os.path.join(mountpoint, "tdreport"), os.O_RDWR)
    wrong = 0
    barrier.wait()
    for i in range(300):
        nonce = bytes([seed, i & 0xFF]) * 32
        os.pwrite(fd, nonce, 0)
        if os.pread(fd, 1024, 0)[128:192] != nonce:
            wrong += 1
    os.close(fd)
    results.put(wrong)


def test_parallel_one_fd_transactions_never_mix(mnt):
    """FOPEN_PARALLEL_DIRECT_WRITES: four processes' transactions overlap, each reads its own."""
    assert run_clients(_transaction_client, lambda i: (mnt.mountpoint, i + 1), 4) == [0, 0, 0, 0]


OPCODE = re.compile(r" request \d+: ([A-Z_]+) node ")
COUNTED_AS = {"LOOKUP": "getattr", "GETATTR": "getattr", "OPEN": "open", "READ": "read", "WRITE": "write",
              "RELEASE": "release", "IOCTL": "ioctl", "SETATTR": "truncate", "GETXATTR": "getxattr"}
NOT_COUNTED = {"FORGET", "BATCH_FORGET", "INTERRUPT"}


def test_counters_match_the_requests_received(mount_factory):
    """With -d every request read is logged; /.stats counts each one the handlers saw."""
    m = mount_factory("-d")
    stats = os.open(m.path(".stats"), os.O_RDONLY)
    try:
        before = Counter(json.loads(os.pread(stats, 1 << 20, 0))["requests"]["by_op"])
        mark = len(m.log())
        for i in range(3):
            assert sh(f"echo {bytes([i]).hex() * 64} > {m.path('reportdata')} && cat {m.path('tdreport')} "
                      "> /dev/null").returncode == 0
        from tdxfs.client.ioctl import TdxGuest

        with TdxGuest(m.path("tdx_guest")) as dev:
            for _ in range(4):
                dev.get_report0(NONCE)
        after = Counter(json.loads(os.pread(stats, 1 << 20, 0))["requests"]["by_op"])
        received = Counter(OPCODE.findall(m.log()[mark:]))
    finally:
        os.close(stats)
    counted = after - before
    assert received and set(received) - set(COUNTED_AS) - NOT_COUNTED == set(), received
    expected = Counter()
    for opcode, n in received.items():
        if opcode in COUNTED_AS:
            expected[COUNTED_AS[opcode]] += n
    assert counted == expected, (counted, received)
    assert received["FLUSH"] == 0  # FOPEN_NOFLUSH on every one of these files
    assert counted["ioctl"] == 4 and counted["truncate"] == 3 and counted["open"] == 3 * 2 + 1
