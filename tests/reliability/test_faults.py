"""Faults (issue 8, section 2): crashes, a full disk, hostile state directories, and clients
killed mid-request.

- ``kill -9`` of the daemon during multi-writer extend storms with ``--state``, repeated:
  separate client processes extend RTMR3 through ``rtmr3`` (open/write/close each time),
  ``measurements/rtmr3:sha384`` (a kept fd) and ioctl EXTEND_RTMR, and one sets REPORTDATA;
  each records what was acknowledged (the ``write()``/ioctl returned). After each kill the
  same ``--state`` is mounted again: every acknowledged extend is in the log exactly once
  (CCEL and text views), nothing else is (beyond the one request each writer had in
  flight), replaying the CCEL gives the RTMRs of a fresh TDREPORT, and REPORTDATA is the
  last acknowledged value (or the one in flight). A second daemon on the state directory
  is refused while the storm runs. ``TDXFS_FAULT_KILLS`` (default 3) sets the number of
  kills: ``TDXFS_FAULT_KILLS=20`` is the larger run in docs/reliability.md ("Faults").
- The state on a tiny filesystem (a 64 KiB tmpfs mounted under the test's tmp_path,
  unmounted in a finalizer) that fills: extends by every front end and REPORTDATA writes
  fail with ENOSPC, no temporary file is left, nothing acknowledged is lost, and once space
  is freed the mount works again (issue 8, defect 9).
- Hostile state directories through ``tdxfs mount`` (issue 8, defect 1): the issue's
  reproductions (a temp-file symlink in a directory chowned to nobody, a symlinked
  directory, a ``lock`` symlink) and the ownership/mode rules; the victim is a file in the
  test's tmp_path, never a system file. The corrupt-state matrix is in
  tests/fs/test_lifecycle.py.
- Clients SIGKILLed mid-transaction (``tdreport`` fds holding per-fd REPORTDATA),
  mid-inblob (written, not closed) and mid-``tdxfs run`` (its own mount with ``--state``,
  and ``--mount`` of a running one): the daemon lives on where it should, the state is
  consistent, no mount or process is left.

The server always runs in its own process (``Mounted``, ``tdxfs mount``, ``tdxfs run``);
every mount is cleared in a finalizer. The CCEL is decoded with the test suite's own
decoder (tests/fs/test_eventlog.py), not tdxfs's.
"""

import collections
import errno
import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from tdxfs.model.profile import default_profile
from tdxfs.server import mountinfo
from tests.fs.test_eventlog import RTMR_AT, parse_ccel_data, replay
from tests import fsclient
from tests.fsclient import put, slurp
from tests.mounting import COMMAND_TIMEOUT, Mounted, force_unmount, fstype_at, stop_all, tdxfs_cmd

KILLS = int(os.environ.get("TDXFS_FAULT_KILLS", "3"))
MIN_ACKS = int(os.environ.get("TDXFS_FAULT_MIN_ACKS", "10"))  # per writer before each kill
WRITERS = ("rtmr3", "rtmr3", "tsm-mr", "tsm-mr", "ioctl", "ioctl")  # one process each
REPORTDATA_AT = 128
QUOTE_REPORTDATA_AT = 48 + 520  # quote v4: header, then the TD report body
DEAD = (errno.ENOTCONN, errno.ECONNABORTED)  # what a client of a killed daemon gets
NOBODY = 65534
# RTMR3 digests the default profile's boot events put in every log
BOOT_RTMR3 = collections.Counter(e.digest for e in default_profile().boot_events if e.mr == 4)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mounts)")


def digest_of(tag: str, n: int) -> bytes:
    return hashlib.sha384(f"{tag}-{n}".encode()).digest()


def reportdata_of(tag: str, n: int) -> bytes:
    return hashlib.sha512(f"{tag}-{n}".encode()).digest()


def wait_until(what: str, predicate, timeout: float = 60.0):
    return fsclient.wait_until(predicate, what, timeout)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children(pid: int) -> list:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def our_mounts(tmp_path) -> list:
    """Mounts on the host under this test's directory or at a guest path tdxfs run uses
    (other sessions may mount elsewhere at the same time)."""
    base = os.fsencode(os.path.realpath(tmp_path)) + b"/"
    return [(m.mount_point, m.fstype) for m in mountinfo.mounts()
            if m.mount_point.startswith(base) or m.mount_point in (b"/dev/tdxfs", b"/dev/tdx_guest")]


# -- what a mount shows: the log, the registers, REPORTDATA ------------------------------------


def report(m: Mounted) -> bytes:
    data = slurp(m.path("tdreport"))
    assert len(data) == 1024
    return data


def observed(m: Mounted) -> dict:
    """Everything a client can see of the TD's state (the log in both views, a fresh report)."""
    return {"ccel": slurp(m.path("acpi/data/CCEL")), "eventlog": slurp(m.path("eventlog")),
            "reportdata": slurp(m.path("reportdata")), "tdreport": report(m)}


def check_log(m: Mounted, acknowledged, in_flight=()) -> collections.Counter:
    """Every acknowledged RTMR3 digest in the log exactly once (CCEL and text), every other
    RTMR3 digest a boot event's or one that was in flight (at most once), and replay(CCEL)
    = RTMR0-3 of a fresh report. Returns the RTMR3 digests of the log, counted."""
    events = parse_ccel_data(slurp(m.path("acpi/data/CCEL")))
    rep = report(m)
    regs = replay(events)
    for i, at in enumerate(RTMR_AT):
        assert regs.get(i + 1, bytes(48)) == rep[at : at + 48], f"replay(CCEL) != RTMR{i} of a fresh report"
    counted = collections.Counter(d for mr, _, d, _ in events if mr == 4)
    text = collections.Counter(bytes.fromhex(line.split()[2].decode()) for line in slurp(m.path("eventlog")).splitlines())
    acknowledged, in_flight = set(acknowledged), set(in_flight)
    lost = [d.hex() for d in acknowledged if counted[d] != 1 or text[d] != 1]
    assert not lost, f"{len(lost)} acknowledged extends not in the log exactly once: {lost[:3]}"
    strange = [d.hex() for d, n in counted.items()
               if d not in acknowledged and n - BOOT_RTMR3[d] not in ((0, 1) if d in in_flight else (0,))]
    assert not strange, f"log entries nobody acknowledged or had in flight: {strange[:3]}"
    return counted


# -- kill -9 during multi-writer extend storms ------------------------------------------------

WRITER = textwrap.dedent("""
    import errno, hashlib, os, sys
    mount, kind, tag, ack_path = sys.argv[1:5]
    ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    n = int(sys.argv[5])
    try:
        if kind == "ioctl":
            from tdxfs.client.ioctl import TdxGuest
            dev = TdxGuest(mount + "/tdx_guest")
        elif kind == "tsm-mr":
            kept = os.open(mount + "/measurements/rtmr3:sha384", os.O_WRONLY)
        while True:
            if kind == "reportdata":
                value = hashlib.sha512(f"{tag}-{n}".encode()).digest()
                fd = os.open(mount + "/reportdata", os.O_WRONLY)
                try:
                    os.write(fd, value)
                finally:
                    os.close(fd)
            else:
                value = hashlib.sha384(f"{tag}-{n}".encode()).digest()
                if kind == "rtmr3":
                    fd = os.open(mount + "/rtmr3", os.O_WRONLY)
                    try:
                        assert os.write(fd, value) == 48
                    finally:
                        os.close(fd)
                elif kind == "tsm-mr":
                    assert os.pwrite(kept, value, 0) == 48
                else:
                    dev.extend_rtmr(3, value)
            os.write(ack, b"%d\\n" % n)  # acknowledged: the write or ioctl returned
            n += 1
    except OSError as exc:
        os.write(ack, b"stop %d\\n" % exc.errno)
""")


class Writer:
    """One client process; ``acks`` are the sequence numbers it saw acknowledged."""

    def __init__(self, tmp_path, mount: str, kind: str, tag: str, start: int):
        self.kind, self.tag = kind, tag
        self.ack_path = tmp_path / f"ack-{tag}"
        self.ack_path.write_bytes(b"")
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, mount, kind, tag, str(self.ack_path), str(start)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def lines(self):
        return self.ack_path.read_bytes().splitlines()

    def count(self) -> int:
        return sum(1 for line in self.lines() if not line.startswith(b"stop"))

    def finish(self):
        """(acknowledged sequence numbers, the errno that stopped it)."""
        try:
            self.proc.wait(timeout=COMMAND_TIMEOUT)
        finally:
            if self.proc.poll() is None:  # our own child, by its handle
                self.proc.kill()
                self.proc.wait(timeout=COMMAND_TIMEOUT)
            err = self.proc.stderr.read().decode(errors="replace")
            self.proc.stderr.close()
        assert self.proc.returncode == 0, f"{self.tag} exited {self.proc.returncode}: {err}"
        lines = self.lines()
        assert lines and lines[-1].startswith(b"stop "), f"{self.tag}: {lines[-3:]} {err}"
        return [int(line) for line in lines[:-1]], int(lines[-1].split()[1])


def second_daemon_refused(tmp_path, state) -> None:
    """A second ``tdxfs mount`` on the served state directory is refused (daemon and
    foreground mode); nothing is mounted."""
    other = tmp_path / "second"
    other.mkdir(exist_ok=True)
    try:
        for extra in ([], ["-f"]):
            done = tdxfs_cmd("mount", str(other), "--state", str(state), "--log", str(tmp_path / "second.log"), *extra)
            assert done.returncode != 0 and "in use" in done.stderr and str(state) in done.stderr, done
            assert fstype_at(str(other)) is None
    finally:
        if fstype_at(str(other)) is not None:
            tdxfs_cmd("umount", str(other))
            force_unmount(str(other))


def test_kill_9_during_extend_storms_loses_no_acknowledged_extend(tmp_path):
    state, mp = tmp_path / "state", tmp_path / "mnt"
    rng = random.Random(os.environ.get("TDXFS_FAULT_SEED", "faults"))
    acknowledged, in_flight = set(), set()
    last_rd, rd_in_flight = "0" * 128, None
    next_seq = collections.defaultdict(int)
    figures = {"kills": 0, "acknowledged_extends": 0, "torn_records_dropped": 0, "in_flight_kept": 0,
               "in_flight_lost": 0, "reportdata_writes": 0}
    mounts = []
    try:
        m = Mounted(mp, "--state", str(state)).start()
        mounts.append(m)
        for kill in range(KILLS):
            writers = [Writer(tmp_path, m.mountpoint, kind, f"w{i}", next_seq[f"w{i}"]) for i, kind in enumerate(WRITERS)]
            writers.append(Writer(tmp_path, m.mountpoint, "reportdata", "rd", next_seq["rd"]))
            try:
                wait_until(f"{MIN_ACKS} acknowledged requests from every writer",
                           lambda: all(w.count() >= MIN_ACKS or w.proc.poll() is not None for w in writers))
                if kill == 0:
                    second_daemon_refused(tmp_path, state)
                time.sleep(rng.uniform(0, 0.05))  # land anywhere in a request
                m.kill9()
                figures["kills"] += 1
                results = {w.tag: (w, *w.finish()) for w in writers}
            finally:
                for w in writers:
                    if w.proc.poll() is None:
                        w.proc.kill()
                        w.proc.wait(timeout=COMMAND_TIMEOUT)
            m.stop()  # clears the dead mount
            for tag, (w, seqs, err) in results.items():
                assert err in DEAD, f"{tag} ({w.kind}) stopped by {errno.errorcode.get(err, err)}, not the kill"
                assert seqs == list(range(next_seq[tag], next_seq[tag] + len(seqs)))
                if w.kind == "reportdata":
                    if seqs:
                        last_rd = reportdata_of(tag, seqs[-1]).hex()
                    rd_in_flight = reportdata_of(tag, next_seq[tag] + len(seqs)).hex()
                    figures["reportdata_writes"] += len(seqs)
                else:
                    acknowledged.update(digest_of(tag, s) for s in seqs)
                    in_flight.add(digest_of(tag, next_seq[tag] + len(seqs)))
                next_seq[tag] += len(seqs) + 1  # the one in flight is never reused

            m = Mounted(mp, "--state", str(state)).start()  # the same TD again
            mounts.append(m)
            counted = check_log(m, acknowledged, in_flight)
            stored_rd = slurp(m.path("reportdata")).decode().strip()
            assert stored_rd in (last_rd, rd_in_flight), "REPORTDATA is neither the last acknowledged nor the one in flight"
            if stored_rd == rd_in_flight:
                last_rd = rd_in_flight
            figures["torn_records_dropped"] = m.log().count("never acknowledged record")  # all mounts' log
            assert not [n for n in os.listdir(state) if n.endswith(".tmp")], "a crash's temporary file is removed"
        figures["acknowledged_extends"] = len(acknowledged)
        figures["in_flight_kept"] = sum(1 for d in in_flight if counted[d])
        figures["in_flight_lost"] = len(in_flight) - figures["in_flight_kept"]
        m.stop()
        m = Mounted(mp, "--state", str(state)).start()  # a clean stop and start keeps it all too
        mounts.append(m)
        check_log(m, acknowledged, in_flight)
        assert m.proc.poll() is None
    finally:
        stop_all(mounts)
    print("\nfaults kill-9:", json.dumps(figures))
    assert figures["kills"] == KILLS and figures["acknowledged_extends"] >= KILLS * MIN_ACKS * len(WRITERS)


# -- a state directory on a tiny filesystem that fills (defect 9) -----------------------------


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs at tmp_path/tiny, unmounted at the end whatever happens."""
    path = tmp_path / "tiny"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tdxfs-test-tiny", str(path)],
                   check=True, timeout=COMMAND_TIMEOUT)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=COMMAND_TIMEOUT).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=COMMAND_TIMEOUT)
        assert fstype_at(str(path)) is None


def fill(path) -> int:
    """Fill the filesystem at ``path`` with one file until a 1-byte write gets ENOSPC."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    size = 0
    try:
        for chunk in (4096, 1):
            while True:
                try:
                    size += os.write(fd, bytes(chunk))
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return size


def extend_by(m: Mounted, how: str, digest: bytes) -> None:
    if how == "rtmr3":
        assert put(m.path("rtmr3"), digest) == 48
    elif how == "rtmr3-hex":
        assert put(m.path("rtmr3"), digest.hex().encode() + b"\n") == 97
    elif how == "tsm-mr":
        assert put(m.path("measurements/rtmr3:sha384"), digest) == 48
    elif how == "eventlog":
        record = f"3 EV_EVENT_TAG {digest.hex()} {b'full disk'.hex()}\n".encode()
        assert put(m.path("eventlog"), record) == len(record)
    else:
        from tdxfs.client.ioctl import TdxGuest

        with TdxGuest(m.path("tdx_guest")) as dev:
            dev.extend_rtmr(3, digest)


EXTENDS = ("rtmr3", "rtmr3-hex", "tsm-mr", "eventlog", "ioctl")


@needs_root
def test_a_full_state_disk_fails_with_enospc_and_loses_nothing(tmp_path, tiny_fs):
    state = tiny_fs / "state"
    acknowledged, n = [], 0
    with Mounted(tmp_path / "mnt", "--state", str(state)) as m:
        extend_by(m, "rtmr3", digest_of("tiny", n))
        acknowledged.append(digest_of("tiny", n))
        put(m.path("reportdata"), reportdata_of("tiny", 0))
        fill(tiny_fs)
        # the event log's last page still has room: extends go on until it is full
        while True:
            n += 1
            try:
                extend_by(m, EXTENDS[n % len(EXTENDS)], digest_of("tiny", n))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
            acknowledged.append(digest_of("tiny", n))
            assert n < 1000, "the state disk never filled"
        files = {name: (state / name).read_bytes() for name in os.listdir(state)}
        before = observed(m)
        rejected = len(m.rejections())
        for how in EXTENDS:  # every front end: ENOSPC, and nothing changed
            with pytest.raises(OSError) as exc:
                extend_by(m, how, digest_of("refused", EXTENDS.index(how)))
            assert exc.value.errno == errno.ENOSPC, (how, exc.value)
        for value in (reportdata_of("tiny", 1), reportdata_of("tiny", 1).hex().encode()):
            with pytest.raises(OSError) as exc:
                put(m.path("reportdata"), value)
            assert exc.value.errno == errno.ENOSPC, exc.value
        assert observed(m) == before
        assert {name: (state / name).read_bytes() for name in os.listdir(state)} == files, \
            "no temporary file left, the log cut back, td-state.json as it was"
        lines = m.rejections()[rejected:]
        assert len(lines) == len(EXTENDS) + 2 and all(": ENOSPC (cannot save state in " in l for l in lines), lines
        # a per-fd REPORTDATA is not stored: the one-fd transaction still works on a full disk
        fd = os.open(m.path("tdreport"), os.O_RDWR)
        try:
            os.write(fd, reportdata_of("fd", 0))
            assert os.pread(fd, 1024, 0)[REPORTDATA_AT : REPORTDATA_AT + 64] == reportdata_of("fd", 0)
        finally:
            os.close(fd)
        check_log(m, acknowledged)

        os.unlink(tiny_fs / "filler")  # space again: everything works
        for how in EXTENDS:
            n += 1
            extend_by(m, how, digest_of("tiny", n))
            acknowledged.append(digest_of("tiny", n))
        put(m.path("reportdata"), reportdata_of("tiny", 2))
        check_log(m, acknowledged)
    with Mounted(tmp_path / "mnt", "--state", str(state)) as m:  # and all of it was durable
        check_log(m, acknowledged)
        assert slurp(m.path("reportdata")) == reportdata_of("tiny", 2).hex().encode() + b"\n"
    assert not [name for name in os.listdir(state) if name.endswith(".tmp")]


# -- hostile state directories through tdxfs mount (defect 1) ---------------------------------


def refused_mount(tmp_path, state, *words) -> str:
    mp = tmp_path / "mnt"
    mp.mkdir(exist_ok=True)
    try:
        done = tdxfs_cmd("mount", str(mp), "--state", str(state), "--log", str(tmp_path / "mnt.log"))
        assert done.returncode != 0, done
        assert done.stderr.startswith("tdxfs: ") and done.stderr.count("\n") == 1, done.stderr
        for word in words:
            assert word in done.stderr, (word, done.stderr)
        assert fstype_at(str(mp)) is None
    finally:
        if fstype_at(str(mp)) is not None:
            tdxfs_cmd("umount", str(mp))
            force_unmount(str(mp))
    return done.stderr


def make_state(tmp_path):
    state = tmp_path / "state"
    with Mounted(tmp_path / "seed", "--state", str(state)) as m:
        put(m.path("rtmr3"), digest_of("seed", 0))
    return state


def victim(tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"victim: keep me\n")
    os.chmod(target, 0o644)
    return target


def intact(target) -> bool:
    return target.read_bytes() == b"victim: keep me\n" and stat.S_IMODE(os.stat(target).st_mode) == 0o644


@needs_root
def test_the_issues_reproduction_writes_no_victim(tmp_path):
    """mkdir S; ln -s /victim S/.platform-secret.tmp; chown -Rh nobody S; tdxfs mount M --state S."""
    target = victim(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.symlink(target, state / ".platform-secret.tmp")
    assert subprocess.run(["chown", "-Rh", "nobody", str(state)], timeout=COMMAND_TIMEOUT).returncode == 0
    refused_mount(tmp_path, state, str(state), f"uid {NOBODY}", "refusing")
    assert intact(target)
    assert os.listdir(state) == [".platform-secret.tmp"]


def test_a_symlinked_state_directory_is_refused_not_chmoded(tmp_path):
    target = tmp_path / "keys-go-here"
    target.mkdir()
    os.chmod(target, 0o755)
    link = tmp_path / "state"
    os.symlink(target, link)
    refused_mount(tmp_path, link, str(link), "symbolic link")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755 and os.listdir(target) == []
    done = tdxfs_cmd("pki", "export", str(tmp_path / "out"), "--state", str(link))
    assert done.returncode != 0 and "symbolic link" in done.stderr, done
    assert not (tmp_path / "out" / "root-ca.pem").exists()


def test_a_lock_symlink_creates_nothing(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.symlink(tmp_path / "created", state / "lock")
    refused_mount(tmp_path, state, f"{state}/lock", "symbolic link")
    assert not os.path.lexists(tmp_path / "created")


def test_a_temp_file_symlink_in_ones_own_directory_is_removed_not_followed(tmp_path):
    target = victim(tmp_path)
    state = make_state(tmp_path)
    for name in (".td-state.json.tmp", ".platform-pki.json.tmp", ".event-log.tmp"):
        os.symlink(target, state / name)
    with Mounted(tmp_path / "mnt", "--state", str(state)) as m:
        put(m.path("reportdata"), reportdata_of("rd", 0))
        os.symlink(target, state / ".td-state.json.tmp")  # planted again while it runs
        put(m.path("reportdata"), reportdata_of("rd", 1))
    assert intact(target)
    assert not [n for n in os.listdir(state) if n.endswith(".tmp")]


HOSTILE = {
    "dir-0777": lambda st: os.chmod(st, 0o777),
    "dir-0770": lambda st: os.chmod(st, 0o770),
    "secret-0666": lambda st: os.chmod(st / "platform-secret", 0o666),
    "log-0620": lambda st: os.chmod(st / "event-log", 0o620),
    "td-state-symlink": lambda st: (os.rename(st / "td-state.json", st.parent / "elsewhere.json"),
                                    os.symlink(st.parent / "elsewhere.json", st / "td-state.json")),
    "pki-fifo": lambda st: (os.unlink(st / "platform-pki.json"), os.mkfifo(st / "platform-pki.json", 0o600)),
}
HOSTILE_ROOT = {
    "dir-owned-by-nobody": lambda st: os.chown(st, NOBODY, NOBODY),
    "td-state-owned-by-nobody": lambda st: os.chown(st / "td-state.json", NOBODY, NOBODY),
    "lock-owned-by-nobody": lambda st: os.chown(st / "lock", NOBODY, NOBODY),
}
NAMED = {"dir": "", "secret": "/platform-secret", "log": "/event-log", "td": "/td-state.json",
         "pki": "/platform-pki.json", "lock": "/lock"}  # by the case's first word


@pytest.mark.parametrize("case", sorted(HOSTILE) + sorted(HOSTILE_ROOT))
def test_a_hostile_state_directory_is_refused_naming_it(tmp_path, case):
    if case in HOSTILE_ROOT and os.geteuid() != 0:
        pytest.skip("chown needs root")
    state = make_state(tmp_path)
    (HOSTILE.get(case) or HOSTILE_ROOT[case])(state)
    before = {n: (state / n).read_bytes() for n in os.listdir(state) if (state / n).is_file()}
    message = refused_mount(tmp_path, state, f"{state}{NAMED[case.split('-')[0]]} ", "refusing")
    assert "Traceback" not in message
    assert {n: (state / n).read_bytes() for n in os.listdir(state) if (state / n).is_file()} == before


def test_a_state_file_readable_by_others_is_put_back_to_0600(tmp_path):
    state = make_state(tmp_path)
    os.chmod(state / "platform-secret", 0o644)
    with Mounted(tmp_path / "mnt", "--state", str(state)) as m:
        assert slurp(m.path("rtmr3")).strip() != b"0" * 96
        notices = [line for line in m.log().splitlines() if f"{state}/platform-secret had mode 0644" in line]
        assert len(notices) == 1, m.log()
    assert stat.S_IMODE(os.stat(state / "platform-secret").st_mode) == 0o600


# -- clients killed mid-request -----------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import os, sys
    mount, what, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fds = []
    if what == "transaction":
        for i in range(count):
            fd = os.open(mount + "/tdreport", os.O_RDWR)
            os.write(fd, bytes([i + 1]) * 64)  # this fd's REPORTDATA
            if i % 2:
                os.pread(fd, 100, 0)  # half a report read
            fds.append(fd)
    else:  # an inblob (the path given): argv[4] (hex) written, never closed
        fd = os.open(mount, os.O_WRONLY)
        if sys.argv[4]:
            os.write(fd, bytes.fromhex(sys.argv[4]))
        fds.append(fd)
    print("ready", flush=True)
    sys.stdin.read()
""")


def hold_and_kill(*args: str) -> None:
    """A client process that gets to a point mid-request, then SIGKILL."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line == b"ready\n", (line, proc.stderr.read())
    finally:
        proc.kill()
        proc.wait(timeout=COMMAND_TIMEOUT)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
    assert proc.returncode == -signal.SIGKILL


def open_handles(m: Mounted) -> int:
    """Files the daemon has open for clients, from its request counts (this read's own open
    included)."""
    ops = json.loads(slurp(m.path(".stats")))["requests"]["by_op"]
    return ops.get("open", 0) - ops.get("release", 0)


def test_clients_killed_mid_transaction(tmp_path):
    state = tmp_path / "state"
    with Mounted(tmp_path / "mnt", "--state", str(state)) as m:
        put(m.path("rtmr3"), digest_of("tx", 0))
        put(m.path("reportdata"), reportdata_of("shared", 0))
        before = observed(m)
        files = {n: (state / n).read_bytes() for n in os.listdir(state)}
        for _ in range(10):
            hold_and_kill(m.mountpoint, "transaction", "3")
        assert m.proc.poll() is None, "the daemon lives on"
        wait_until("every killed client's fds released", lambda: open_handles(m) == 1)
        assert observed(m) == before, "no per-fd REPORTDATA leaked into the shared state"
        assert {n: (state / n).read_bytes() for n in os.listdir(state)} == files
        fd = os.open(m.path("tdreport"), os.O_RDWR)
        try:
            os.write(fd, reportdata_of("after", 0))
            assert os.pread(fd, 1024, 0)[REPORTDATA_AT : REPORTDATA_AT + 64] == reportdata_of("after", 0)
        finally:
            os.close(fd)


def generation(m: Mounted, name: str) -> int:
    return int(slurp(m.path(f"tsm/report/{name}/generation")))


@pytest.mark.parametrize("written", ["64-bytes", "10-bytes", "nothing"])
def test_a_client_killed_mid_inblob(tmp_path, written):
    """Killed with an inblob written but not closed: the exit closes it, and as configfs
    (which commits at release, which process exit runs) that is a commit of what was
    written; an fd that never wrote commits nothing. The daemon lives on, the instance is
    usable and removable, the TD's state is unchanged."""
    data = {"64-bytes": reportdata_of("inblob", 0), "10-bytes": bytes(range(10)), "nothing": b""}[written]
    state = tmp_path / "state"
    with Mounted(tmp_path / "mnt", "--state", str(state)) as m:
        before = observed(m)
        os.mkdir(m.path("tsm/report/killed"))
        hold_and_kill(m.path("tsm/report/killed/inblob"), "inblob", "0", data.hex())
        assert m.proc.poll() is None
        wait_until("the killed client's fd released", lambda: open_handles(m) == 1)
        assert generation(m, "killed") == (1 if data else 0)
        if len(data) == 64:
            quote = slurp(m.path("tsm/report/killed/outblob"))
            assert quote[QUOTE_REPORTDATA_AT : QUOTE_REPORTDATA_AT + 64] == data
        else:
            with pytest.raises(OSError) as exc:
                slurp(m.path("tsm/report/killed/outblob"))
            assert exc.value.errno == errno.EINVAL
        put(m.path("tsm/report/killed/inblob"), reportdata_of("inblob", 1))  # usable
        quote = slurp(m.path("tsm/report/killed/outblob"))
        assert quote[QUOTE_REPORTDATA_AT : QUOTE_REPORTDATA_AT + 64] == reportdata_of("inblob", 1)
        os.rmdir(m.path("tsm/report/killed"))
        assert os.listdir(m.path("tsm/report")) == []
        assert observed(m) == before


RUN_COMMAND = textwrap.dedent("""
    import hashlib, os, sys
    from tdxfs.client.ioctl import TdxGuest
    ack = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    dev = TdxGuest("/dev/tdx_guest")
    paths = [os.environ["TDXFS_MOUNT"] + "/rtmr3", "/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384"]
    n = 0
    while True:
        value = hashlib.sha384(f"run-{n}".encode()).digest()
        if n % 3 == 2:
            dev.extend_rtmr(3, value)
        else:
            fd = os.open(paths[n % 3], os.O_WRONLY)
            os.write(fd, value)
            os.close(fd)
        os.write(ack, b"%d\\n" % n)
        n += 1
""")


@pytest.mark.parametrize("own", [True, False], ids=["own-mount", "running-mount"])
def test_tdxfs_run_killed_mid_storm(tmp_path, own):
    """SIGKILL of ``tdxfs run`` while COMMAND extends RTMR3 through /dev/tdx_guest and the
    files: COMMAND (and its own daemon) die with it, the host gains no mount, and the state
    holds every acknowledged extend; a ``--mount`` daemon lives on."""
    state, ack = tmp_path / "state", tmp_path / "ack"
    ack.write_bytes(b"")
    script = tmp_path / "extend.py"
    script.write_text(RUN_COMMAND)
    host_before = our_mounts(tmp_path)
    mounts = []
    try:
        if own:
            args = ["--state", str(state), "--log", str(tmp_path / "run.log")]
        else:
            mounts.append(Mounted(tmp_path / "mnt", "--state", str(state)).start())
            host_before = our_mounts(tmp_path)
            args = ["--mount", mounts[0].mountpoint]
        proc = subprocess.Popen([sys.executable, "-m", "tdxfs", "run", *args, "--", sys.executable, str(script), str(ack)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until("30 acknowledged extends", lambda: len(ack.read_bytes().splitlines()) >= 30 or proc.poll() is not None)
            assert proc.poll() is None, proc.stderr.read()
            kids = children(proc.pid)
            assert len(kids) == (2 if own else 1), kids  # (the daemon and) COMMAND
            proc.kill()
            assert proc.wait(timeout=COMMAND_TIMEOUT) == -signal.SIGKILL
            wait_until("COMMAND and the daemon gone", lambda: not any(alive(pid) for pid in kids), COMMAND_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=COMMAND_TIMEOUT)
            proc.stderr.close()
        assert our_mounts(tmp_path) == host_before, "no mount gained or lost on the host"
        acknowledged = [digest_of("run", int(n)) for n in ack.read_bytes().splitlines()]
        in_flight = [digest_of("run", len(acknowledged))]
        if own:
            mounts.append(Mounted(tmp_path / "mnt", "--state", str(state)).start())
        else:
            assert mounts[0].proc.poll() is None, "the --mount daemon lives on"
        check_log(mounts[-1], acknowledged, in_flight)
        put(mounts[-1].path("rtmr3"), digest_of("after", 0))
    finally:
        stop_all(mounts)
