"""Mount lifecycle, state and the report tool through the command line (issue 2, section 4).

Everything goes through ``python -m tdxfs …`` in child processes: daemon mode
(``tdxfs mount MNT --log FILE``), foreground mode (``Mounted``: ``tdxfs mount -f``),
``tdxfs umount`` and ``tdxfs report decode``. Every test leaves no mount and no daemon
behind, even when it fails (``cli`` fixture / ``Mounted``).
"""

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from tdxfs.server import mountinfo
from tests.fsclient import slurp, put
from tests.mounting import COMMAND_TIMEOUT, Mounted, force_unmount, fstype_at, sh, tdxfs_cmd

REPORT_SIZE = 1024
REPORTDATA_AT = 128
MAC_AT = 224
RTMR3_AT = 864

EXT = bytes(range(0x90, 0xC0))  # 48 bytes
EXT2 = hashlib.sha384(b"second event").digest()
RD = bytes(range(0x40, 0x80))  # 64 bytes


# -- helpers ----------------------------------------------------------------------------------


def hexval(path) -> bytes:
    text = slurp(path)
    assert text.endswith(b"\n")
    return bytes.fromhex(text[:-1].decode())


def extended(old: bytes, data: bytes) -> bytes:
    return hashlib.sha384(old + data).digest()


def daemon_pids(mountpoint) -> list:
    """Processes running ``… -m tdxfs mount … MOUNTPOINT`` (ours: we started them)."""
    want = str(mountpoint)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "tdxfs" in args and "mount" in args and want in args:
            pids.append(int(entry))
    return pids


def exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_exited(pid: int, timeout: float = COMMAND_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not exited(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Cli:
    """Daemon-mode mounts via the CLI; ``cleanup`` kills what is left and clears every mount."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.mountpoints = []

    def mountpoint(self, name="mnt", create=True):
        path = self.tmp / name
        if create:
            path.mkdir(exist_ok=True)
        self.mountpoints.append(path)
        return path

    def log_path(self, mountpoint):
        return str(mountpoint) + ".log"

    def mount(self, mountpoint, *args):
        if mountpoint not in self.mountpoints:
            self.mountpoints.append(mountpoint)
        return tdxfs_cmd("mount", str(mountpoint), "--log", self.log_path(mountpoint), *args)

    def log(self, mountpoint) -> str:
        try:
            with open(self.log_path(mountpoint)) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def daemon(self, mountpoint) -> int:
        pids = daemon_pids(mountpoint)
        assert len(pids) == 1, pids
        return pids[0]

    def kill9(self, mountpoint) -> None:
        pid = self.daemon(mountpoint)
        os.kill(pid, signal.SIGKILL)
        assert wait_exited(pid)

    def cleanup(self):
        """Kill every daemon of ours, then clear every mount point; a step that fails does
        not stop the others (issue 8, defect 12: a failing test must not leak)."""
        errors = []
        for mp in self.mountpoints:
            for pid in daemon_pids(mp):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if not wait_exited(pid):
                    errors.append(f"daemon {pid} of {mp} did not exit after SIGKILL")
        for mp in self.mountpoints:
            try:
                force_unmount(str(mp))
            except Exception as exc:  # noqa: BLE001 - reported below, after the others
                errors.append(f"{mp}: {exc!r}")
        errors += [f"{mp} is still mounted" for mp in self.mountpoints if fstype_at(str(mp)) is not None]
        assert not errors, errors


@pytest.fixture
def cli(tmp_path):
    c = Cli(tmp_path)
    try:
        yield c
    finally:
        c.cleanup()


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done


def refused(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode != 0, done
    assert done.stderr.startswith("tdxfs: "), done.stderr
    assert done.stderr.count("\n") == 1, f"one clear line, not a traceback: {done.stderr}"
    for word in words:
        assert word in done.stderr, (word, done.stderr)


# -- daemon mode: ready on return, umount -------------------------------------------------------


def test_daemon_mount_is_ready_when_it_returns(cli):
    mp = cli.mountpoint()
    for _ in range(3):
        ok(cli.mount(mp))
        # the very next command works: no polling
        done = sh(f"cat {mp}/rtmr3")
        assert done.returncode == 0 and done.stdout == b"0" * 96 + b"\n", done
        assert fstype_at(str(mp)) == "fuse.tdxfs"
        pid = cli.daemon(mp)
        assert pid != os.getpid()
        ok(tdxfs_cmd("umount", str(mp)))
        assert fstype_at(str(mp)) is None
        assert wait_exited(pid), "the daemon exits after umount"
        assert os.listdir(mp) == []
    log = cli.log(mp)
    assert log.count("serving on") == 3 and log.count(f"unmounted {mp}") == 3, log
    assert "Traceback" not in log


def test_daemon_logs_rejections_to_its_log_file(cli):
    mp = cli.mountpoint()
    ok(cli.mount(mp))
    pid = cli.daemon(mp)
    done = sh(f"echo 0011 > {mp}/rtmr3")
    assert done.returncode != 0
    lines = [line for line in cli.log(mp).splitlines() if " rejected " in line]
    assert len(lines) == 1, cli.log(mp)
    assert f"tdxfs[{pid}] {mp}: rejected write /rtmr3: EINVAL (" in lines[0]
    ok(tdxfs_cmd("umount", str(mp)))


# -- signals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_foreground_daemon_unmounts(tmp_path, sig):
    m = Mounted(tmp_path / "mnt")
    try:
        m.start()
        put(m.path("rtmr3"), EXT)
        m.proc.send_signal(sig)
        assert m.proc.wait(timeout=COMMAND_TIMEOUT) == 0, m.log()
        assert fstype_at(m.mountpoint) is None
        assert f"unmounted {m.mountpoint}" in m.log()
        assert "Traceback" not in m.log() and "KeyboardInterrupt" not in m.log(), m.log()
    finally:
        m.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_background_daemon_unmounts(cli, sig):
    mp = cli.mountpoint()
    ok(cli.mount(mp))
    pid = cli.daemon(mp)
    os.kill(pid, sig)
    assert wait_exited(pid)
    assert fstype_at(str(mp)) is None
    assert f"unmounted {mp}" in cli.log(mp)
    assert "Traceback" not in cli.log(mp)


# -- dead mounts ----------------------------------------------------------------------------------------


def test_umount_clears_a_dead_mount(cli):
    mp = cli.mountpoint()
    ok(cli.mount(mp))
    cli.kill9(mp)
    done = sh(f"cat {mp}/rtmr3")
    assert done.returncode != 0 and b"Transport endpoint is not connected" in done.stderr, done
    assert fstype_at(str(mp)) == "fuse.tdxfs"
    # a dead mount is still a mount: mounting over it is refused
    refused(cli.mount(mp), "already a mount point")
    ok(tdxfs_cmd("umount", str(mp)))
    assert fstype_at(str(mp)) is None
    # and the mount point is usable again
    ok(cli.mount(mp))
    assert sh(f"cat {mp}/rtmr3").stdout == b"0" * 96 + b"\n"
    ok(tdxfs_cmd("umount", str(mp)))


# -- refused mounts and umounts -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["daemon", "foreground"])
def test_mount_onto_missing_path(cli, mode):
    mp = cli.mountpoint("missing", create=False)
    args = ["-f"] if mode == "foreground" else []
    refused(cli.mount(mp, *args), "does not exist", str(mp))
    assert not os.path.exists(mp)
    assert fstype_at(str(mp)) is None


@pytest.mark.parametrize("mode", ["daemon", "foreground"])
def test_mount_onto_regular_file(cli, mode):
    mp = cli.mountpoint("afile", create=False)
    mp.write_text("keep me\n")
    args = ["-f"] if mode == "foreground" else []
    refused(cli.mount(mp, *args), "not a directory", str(mp))
    assert mp.read_text() == "keep me\n"
    assert fstype_at(str(mp)) is None


@pytest.mark.parametrize("mode", ["daemon", "foreground"])
def test_mount_onto_existing_mount(cli, mode):
    mp = cli.mountpoint()
    ok(cli.mount(mp))
    put(mp / "rtmr3", EXT)
    pid = cli.daemon(mp)
    args = ["-f"] if mode == "foreground" else []
    refused(cli.mount(mp, *args), "already a mount point", str(mp))
    # the first mount is untouched and still served by the same daemon
    assert hexval(mp / "rtmr3") == extended(bytes(48), EXT)
    assert daemon_pids(mp) == [pid]
    assert len(mountinfo.mounts_at(mp)) == 1
    ok(tdxfs_cmd("umount", str(mp)))


def test_umount_refuses_other_filesystems(cli, tmp_path):
    other = tmp_path / "tmpfs"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tdxfs-test", str(other)], check=True,
                   timeout=COMMAND_TIMEOUT)
    try:
        (other / "f").write_text("x")
        refused(tdxfs_cmd("umount", str(other)), "tmpfs", "not tdxfs")
        assert fstype_at(str(other)) == "tmpfs"
        assert (other / "f").read_text() == "x"
    finally:
        subprocess.run(["umount", str(other)], timeout=COMMAND_TIMEOUT)
    plain = tmp_path / "plain"
    plain.mkdir()
    refused(tdxfs_cmd("umount", str(plain)), "not mounted")
    refused(tdxfs_cmd("umount", str(tmp_path / "nothere")), "not mounted")


# -- state: durable, resumable, refused when corrupt -------------------------------------------------


def state_files(d) -> dict:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name != "lock"}


def test_state_survives_kill9(cli, tmp_path):
    st = tmp_path / "state"
    mp = cli.mountpoint()
    ok(cli.mount(mp, "--state", str(st)))
    # state directory 0700, files 0600
    assert stat.S_IMODE(os.stat(st).st_mode) == 0o700
    for p in st.iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p

    put(mp / "rtmr3", EXT)
    # the first daemon's report for (RTMRs now, REPORTDATA = RD), made on a one-fd transaction
    fd = os.open(mp / "tdreport", os.O_RDWR)
    try:
        os.write(fd, RD)
        first_report = os.pread(fd, 4096, 0)
    finally:
        os.close(fd)
    assert first_report[REPORTDATA_AT : REPORTDATA_AT + 64] == RD
    # the last acknowledged write, then kill -9 at once
    assert put(mp / "reportdata", RD.hex().encode() + b"\n") == 129
    cli.kill9(mp)
    assert sh(f"cat {mp}/rtmr3").returncode != 0
    ok(tdxfs_cmd("umount", str(mp)))

    ok(cli.mount(mp, "--state", str(st)))
    assert hexval(mp / "rtmr3") == extended(bytes(48), EXT)
    assert hexval(mp / "reportdata") == RD
    second_report = slurp(mp / "tdreport")
    # same inputs, same platform: byte-identical, MAC included
    assert second_report == first_report
    assert second_report[MAC_AT : MAC_AT + 32] == first_report[MAC_AT : MAC_AT + 32]

    # an extend as the last write before kill -9 survives too
    put(mp / "rtmr3", EXT2)
    cli.kill9(mp)
    ok(tdxfs_cmd("umount", str(mp)))
    ok(cli.mount(mp, "--state", str(st)))
    assert hexval(mp / "rtmr3") == extended(extended(bytes(48), EXT), EXT2)
    assert hexval(mp / "reportdata") == RD
    ok(tdxfs_cmd("umount", str(mp)))


def test_other_state_dir_is_another_platform(tmp_path):
    """Same inputs on two state directories: identical reports except the MAC."""
    reports = []
    for name in ("a", "b"):
        with Mounted(tmp_path / f"mnt-{name}", "--state", str(tmp_path / f"state-{name}")) as m:
            put(m.path("rtmr3"), EXT)
            put(m.path("reportdata"), RD)
            reports.append(slurp(m.path("tdreport")))
    a, b = reports
    assert a[:MAC_AT] == b[:MAC_AT] and a[MAC_AT + 32 :] == b[MAC_AT + 32 :]
    assert a[MAC_AT : MAC_AT + 32] != b[MAC_AT : MAC_AT + 32]


# What a state directory holds besides its lock (tdxfs/model/state.py).
STATE_FILES = ["event-log", "platform-pki.json", "platform-secret", "td-state.json"]
LOG_HEADER = b"tdxfs event log v1\n"


@pytest.fixture(scope="module")
def seed_state(tmp_path_factory):
    """A state directory a real mount wrote (RTMR3 extended, REPORTDATA set), made once:
    each test that damages a state directory damages a copy of it."""
    base = tmp_path_factory.mktemp("seed")
    st = base / "state"
    with Mounted(base / "mnt", "--state", str(st)) as m:
        put(m.path("rtmr3"), EXT)
        put(m.path("reportdata"), RD)
    assert sorted(state_files(st)) == STATE_FILES
    return st


def _make_state(tmp_path, seed):
    """This test's own state directory: a copy of ``seed`` (bytes and modes)."""
    st = tmp_path / "state"
    shutil.copytree(seed, st)
    assert sorted(state_files(st)) == STATE_FILES
    return st


def _flip_reportdata_digit(raw: bytes) -> bytes:
    """A well-formed td-state.json whose checksum no longer matches (RTMRs now live in
    event-log, so REPORTDATA is the value to change)."""
    doc = json.loads(raw)
    digit = doc["reportdata"][0]
    doc["reportdata"] = ("1" if digit != "1" else "2") + doc["reportdata"][1:]
    return json.dumps(doc).encode()


CORRUPTIONS = {
    "td-state-garbage": ("td-state.json", lambda raw: b"\x00garbage{"),
    "td-state-empty": ("td-state.json", lambda raw: b""),
    "td-state-truncated": ("td-state.json", lambda raw: raw[: len(raw) // 2]),
    "td-state-checksum": ("td-state.json", _flip_reportdata_digit),
    "secret-short": ("platform-secret", lambda raw: raw[:31]),
    "secret-missing": ("platform-secret", None),
    "pki-garbage": ("platform-pki.json", lambda raw: b"\x00garbage{"),
    "pki-truncated": ("platform-pki.json", lambda raw: raw[: len(raw) // 2]),
    # the event log, the source of truth for RTMR0-3: a torn last record is dropped (below),
    # anything else that does not check refuses the start
    "event-log-missing": ("event-log", None),
    "event-log-empty": ("event-log", lambda raw: b""),
    "event-log-garbage": ("event-log", lambda raw: b"\x00garbage{"),
    "event-log-header-only": ("event-log", lambda raw: raw[: len(LOG_HEADER)]),  # no boot events
    "event-log-truncated": ("event-log", lambda raw: raw[: len(raw) // 2]),  # inside the boot events
    "event-log-bad-record": ("event-log", lambda raw: _flip_byte(raw, len(LOG_HEADER) + 20)),  # more follows
    "event-log-wrong-header": ("event-log", lambda raw: b"tdxfs event log v9\n" + raw[len(LOG_HEADER):]),
}


def _flip_byte(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]


@pytest.mark.parametrize("mode", ["daemon", "foreground"])
@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_state_refuses_the_mount(cli, tmp_path, seed_state, case, mode):
    st = _make_state(tmp_path, seed_state)
    name, corrupt = CORRUPTIONS[case]
    if corrupt is None:
        (st / name).unlink()
    else:
        (st / name).write_bytes(corrupt((st / name).read_bytes()))
    before = state_files(st)
    mp = cli.mountpoint()
    args = ["-f"] if mode == "foreground" else []
    done = cli.mount(mp, "--state", str(st), *args)
    refused(done, name, "refusing to start", "--reset")
    assert fstype_at(str(mp)) is None
    assert daemon_pids(mp) == []
    assert state_files(st) == before, "a refused start never rewrites the state"

    # --reset starts a fresh TD on purpose
    ok(cli.mount(mp, "--state", str(st), "--reset"))
    assert slurp(mp / "rtmr3") == b"0" * 96 + b"\n"
    assert slurp(mp / "reportdata") == b"0" * 128 + b"\n"
    ok(tdxfs_cmd("umount", str(mp)))
    assert sorted(state_files(st)) == STATE_FILES
    assert len((st / "platform-secret").read_bytes()) == 32


def test_torn_event_log_tail_is_dropped_with_a_notice(cli, tmp_path, seed_state):
    """A last record cut short (a crash mid-append: never acknowledged) is the one damage
    the start repairs, and it says so in the log; the records before it stand."""
    st = _make_state(tmp_path, seed_state)
    raw = (st / "event-log").read_bytes()
    (st / "event-log").write_bytes(raw + raw[len(LOG_HEADER) : len(LOG_HEADER) + 30])  # half a record
    mp = cli.mountpoint()
    ok(cli.mount(mp, "--state", str(st)))
    assert hexval(mp / "rtmr3") == extended(bytes(48), EXT)
    ok(tdxfs_cmd("umount", str(mp)))
    assert (st / "event-log").read_bytes() == raw
    notices = [line for line in cli.log(mp).splitlines() if "event-log" in line and "dropped 30 bytes" in line]
    assert len(notices) == 1, cli.log(mp)


def test_reset_starts_a_new_td_on_a_new_platform(cli, tmp_path):
    st = tmp_path / "state"
    mp = cli.mountpoint()
    ok(cli.mount(mp, "--state", str(st)))
    initial = slurp(mp / "tdreport")  # RTMR3 0, REPORTDATA 0
    put(mp / "rtmr3", EXT)
    ok(tdxfs_cmd("umount", str(mp)))

    ok(cli.mount(mp, "--state", str(st)))  # without --reset: resumed
    assert hexval(mp / "rtmr3") == extended(bytes(48), EXT)
    ok(tdxfs_cmd("umount", str(mp)))

    ok(cli.mount(mp, "--state", str(st), "--reset"))
    assert slurp(mp / "rtmr3") == b"0" * 96 + b"\n"
    fresh = slurp(mp / "tdreport")
    ok(tdxfs_cmd("umount", str(mp)))
    # same inputs as the first report, but a new platform secret: only the MAC differs
    assert fresh[:MAC_AT] == initial[:MAC_AT] and fresh[MAC_AT + 32 :] == initial[MAC_AT + 32 :]
    assert fresh[MAC_AT : MAC_AT + 32] != initial[MAC_AT : MAC_AT + 32]


def test_reset_needs_a_state_dir(cli):
    mp = cli.mountpoint()
    refused(cli.mount(mp, "--reset"), "--reset", "--state")
    assert fstype_at(str(mp)) is None


def test_second_daemon_on_one_state_dir_refused(cli, tmp_path):
    st = tmp_path / "state"
    one, two = cli.mountpoint("one"), cli.mountpoint("two")
    ok(cli.mount(one, "--state", str(st)))
    put(one / "rtmr3", EXT)
    before = state_files(st)
    for args in ([], ["-f"]):
        refused(cli.mount(two, "--state", str(st), *args), "in use", str(st))
        assert fstype_at(str(two)) is None
    assert state_files(st) == before
    assert hexval(one / "rtmr3") == extended(bytes(48), EXT)
    ok(tdxfs_cmd("umount", str(one)))
    # the lock goes with the daemon: now the other mount point may serve this TD
    ok(cli.mount(two, "--state", str(st)))
    assert hexval(two / "rtmr3") == extended(bytes(48), EXT)
    ok(tdxfs_cmd("umount", str(two)))


# -- profiles ------------------------------------------------------------------------------------------

BAD_PROFILES = {
    "unknown-field": ('colour = "00"\n', "colour"),
    "unknown-nested-field": ('[tee_tcb_info]\nmrsigner = "00"\n', "tee_tcb_info.mrsigner"),
    "bad-hex": (f'mrtd = "{"zz" * 48}"\n', "mrtd"),
    "wrong-length": ('mrowner = "0011"\n', "mrowner"),
    "wrong-length-rtmr": (f'rtmr3 = "{"00" * 47}"\n', "rtmr3"),
    "wrong-length-nested": ('[tee_tcb_info]\nmrseam = "00"\n', "tee_tcb_info.mrseam"),
    "integer-for-bytes": ("mrconfigid = 5\n", "mrconfigid"),
}


@pytest.mark.parametrize("mode", ["daemon", "foreground"])
@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_bad_profile_refused_naming_the_field(cli, tmp_path, case, mode):
    text, field = BAD_PROFILES[case]
    profile = tmp_path / "profile.toml"
    profile.write_text(text)
    mp = cli.mountpoint()
    args = ["-f"] if mode == "foreground" else []
    refused(cli.mount(mp, "--profile", str(profile), *args), f"'{field}'")
    assert fstype_at(str(mp)) is None
    assert daemon_pids(mp) == []


def test_profile_overrides_fields(cli, tmp_path):
    owner = hashlib.sha384(b"owner").digest()
    rtmr3 = hashlib.sha384(b"boot rtmr3").digest()
    profile = tmp_path / "profile.toml"
    profile.write_text(f'mrowner = "{owner.hex()}"\nrtmr3 = "{rtmr3.hex()}"\nattributes = 0x10000001\n')
    mp = cli.mountpoint()
    ok(cli.mount(mp, "--profile", str(profile)))
    assert hexval(mp / "mrowner") == owner
    assert hexval(mp / "rtmr3") == rtmr3
    rep = slurp(mp / "tdreport")
    assert rep[624:672] == owner
    assert rep[RTMR3_AT : RTMR3_AT + 48] == rtmr3
    assert rep[512:520] == (0x10000001).to_bytes(8, "little")
    ok(tdxfs_cmd("umount", str(mp)))


# -- tdxfs report decode ---------------------------------------------------------------------------------

# name -> (offset, size) from tdx-abi.md; the integer fields are little-endian u8/u64.
REFERENCE_FIELDS = {
    "reporttype.type": (0, 1),
    "cpusvn": (16, 16),
    "tee_tcb_info_hash": (32, 48),
    "tee_info_hash": (80, 48),
    "reportdata": (128, 64),
    "mac": (224, 32),
    "tee_tcb_info.valid": (256, 8),
    "tee_tcb_info.tee_tcb_svn": (264, 16),
    "tee_tcb_info.mrseam": (280, 48),
    "tee_tcb_info.mrsignerseam": (328, 48),
    "tee_tcb_info.attributes": (376, 8),
    "tee_tcb_info.tee_tcb_svn2": (384, 16),
    "tdinfo.attributes": (512, 8),
    "tdinfo.xfam": (520, 8),
    "tdinfo.mrtd": (528, 48),
    "tdinfo.mrconfigid": (576, 48),
    "tdinfo.mrowner": (624, 48),
    "tdinfo.mrownerconfig": (672, 48),
    "tdinfo.rtmr0": (720, 48),
    "tdinfo.rtmr1": (768, 48),
    "tdinfo.rtmr2": (816, 48),
    "tdinfo.rtmr3": (864, 48),
    "tdinfo.servtd_hash": (912, 48),
}
INTEGER = {"reporttype.type", "tee_tcb_info.valid", "tee_tcb_info.attributes", "tdinfo.attributes", "tdinfo.xfam"}


@pytest.fixture
def report_file(mnt, tmp_path):
    put(mnt.path("reportdata"), RD)
    put(mnt.path("rtmr3"), EXT)
    path = tmp_path / "report.bin"
    assert sh(f"cat {mnt.path('tdreport')} > {path}").returncode == 0
    data = path.read_bytes()
    assert len(data) == REPORT_SIZE
    return path, data


def _expected(data: bytes, name: str):
    off, size = REFERENCE_FIELDS[name]
    raw = data[off : off + size]
    return int.from_bytes(raw, "little") if name in INTEGER else raw.hex()


def test_report_decode_json(report_file):
    path, data = report_file
    fields = json.loads(ok(tdxfs_cmd("report", "decode", str(path), "--json")).stdout)
    for name in REFERENCE_FIELDS:
        assert fields[name] == _expected(data, name), name
    assert fields["reportdata"] == RD.hex()
    assert fields["tdinfo.rtmr3"] == extended(bytes(48), EXT).hex()
    assert fields["reporttype.type"] == 0x81


def test_report_decode_text(report_file):
    path, data = report_file
    out = ok(tdxfs_cmd("report", "decode", str(path))).stdout
    lines = {line.split()[0]: line for line in out.splitlines()}
    for name in REFERENCE_FIELDS:
        assert name in lines, name
        want = _expected(data, name)
        shown = f"{want:#x}" if isinstance(want, int) else want
        assert lines[name].split()[-1] == shown, lines[name]
        assert f"@{REFERENCE_FIELDS[name][0]}" in lines[name].split()
    assert RD.hex() in lines["reportdata"]
    assert extended(bytes(48), EXT).hex() in lines["tdinfo.rtmr3"]


def test_report_decode_stdin(mnt):
    put(mnt.path("reportdata"), RD)
    done = sh(f"cat {mnt.path('tdreport')} | {sys.executable} -m tdxfs report decode - --json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reportdata"] == RD.hex()


@pytest.mark.parametrize("size", [0, 1023, 1025])
def test_report_decode_refuses_wrong_size(tmp_path, size):
    path = tmp_path / "short.bin"
    path.write_bytes(bytes(size))
    refused(tdxfs_cmd("report", "decode", str(path)), "1024")
