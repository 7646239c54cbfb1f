"""The ``tdx_guest`` ioctl node through a real mount (issue 3, section 1).

The server always runs in its own process (``Mounted``); this process is only a client.
That is what makes the raw ``fcntl.ioctl(fd, cmd, bytearray(1088))`` calls below safe:
``fcntl.ioctl`` keeps the GIL during a >1024-byte ioctl, which would deadlock a process
that also served the mount (fuse-notes.md). Every request goes through the kernel twice
here: once with tdxfs's own client (ctypes ``libc.ioctl``) and once with plain ``fcntl``,
so the kernel ABI is exercised independently of the client under test.

Expected values come from tdx-abi.md (offsets and ioctl numbers written out below) and
hashlib, never from tdxfs. Every refusal checks the errno, that nothing observable
changed, and exactly one 'rejected' line in the daemon's log.
"""

import errno
import fcntl
import hashlib
import json
import os
import stat

import pytest

from tdxfs.client.ioctl import TdxGuest
from tests.fsclient import refused as refused_with, slurp, put, Rejections
from tests.mounting import Mounted, sh, tdxfs_cmd

# -- reference facts (tdx-abi.md), not taken from the code under test -----------------------

GET_REPORT0 = 0xC4405401  # _IOWR('T', 1, struct tdx_report_req), 1088 bytes
VERIFY_REPORT = 0xC1085402  # _IOWR('T', 2, {u8 reportmac[256]; u64 err_code;}), 264 bytes
EXTEND_RTMR = 0x40315403  # _IOW('T', 3, {u8 data[48]; u8 index;}), 49 bytes
DCAP_EXTEND_RTMR = 0x80315403  # _IOR: no input bytes reach a FUSE server
GET_QUOTE = 0x80105402  # never merged, carries a user pointer
TCGETS = 0x5401

REPORT_SIZE = 1024
REPORTDATA_AT = 128
RTMR_AT = [720, 768, 816, 864]
STATIC_AT = {"mrtd": 528, "mrconfigid": 576, "mrowner": 624, "mrownerconfig": 672}
TEE_TCB_INFO = slice(256, 495)
TDINFO = slice(512, 1024)
MAC_AT = 224

RTMRS = [f"rtmr{i}" for i in range(4)]
TEXT_FILES = ["reportdata", *RTMRS, *STATIC_AT]

NONCE = hashlib.sha512(b"tdxfs ioctl test nonce").digest()
EXT = hashlib.sha384(b"tdxfs ioctl test event").digest()


# -- client helpers ------------------------------------------------------------------------------


def value(m: Mounted, name: str) -> bytes:
    text = slurp(m.path(name))
    assert text.endswith(b"\n"), text
    return bytes.fromhex(text[:-1].decode())


def field(rep: bytes, at: int, size: int = 48) -> bytes:
    return rep[at : at + size]


def extended(old: bytes, data: bytes) -> bytes:
    return hashlib.sha384(old + data).digest()


def transaction(m: Mounted, nonce: bytes) -> bytes:
    """The one-fd transaction on tdreport: O_RDWR, pwrite the nonce at 0, pread 1024 at 0."""
    fd = os.open(m.path("tdreport"), os.O_RDWR)
    try:
        assert os.pwrite(fd, nonce, 0) == 64
        return os.pread(fd, REPORT_SIZE, 0)
    finally:
        os.close(fd)


def raw_report(m: Mounted, nonce: bytes) -> bytes:
    """GET_REPORT0 with plain fcntl: a mutable 1088-byte buffer, filled in place."""
    buf = bytearray(64 + REPORT_SIZE)
    buf[:64] = nonce
    buf[64:] = b"\xee" * REPORT_SIZE  # the reply must overwrite all of it
    fd = os.open(m.path("tdx_guest"), os.O_RDWR)
    try:
        assert fcntl.ioctl(fd, GET_REPORT0, buf) == 0
    finally:
        os.close(fd)
    assert buf[:64] == nonce, "the driver copies struct tdx_report_req back whole"
    return bytes(buf[64:])


def client_report(m: Mounted, nonce: bytes) -> bytes:
    with TdxGuest(m.path("tdx_guest")) as dev:
        return dev.get_report0(nonce)


GETTERS = {"client": client_report, "fcntl": raw_report}


def raw_extend(m: Mounted, index: int, data: bytes) -> None:
    fd = os.open(m.path("tdx_guest"), os.O_RDWR)
    try:
        # an immutable argument: fcntl returns the (unchanged, _IOW) buffer
        assert fcntl.ioctl(fd, EXTEND_RTMR, data + bytes([index])) == data + bytes([index])
    finally:
        os.close(fd)


def client_extend(m: Mounted, index: int, data: bytes) -> None:
    with TdxGuest(m.path("tdx_guest")) as dev:
        dev.extend_rtmr(index, data)


EXTENDERS = {"client": client_extend, "fcntl": raw_extend}


def raw_verify(m: Mounted, reportmac: bytes) -> int:
    buf = bytearray(reportmac + b"\xff" * 8)  # err_code in: garbage, the driver writes it
    fd = os.open(m.path("tdx_guest"), os.O_RDWR)
    try:
        assert fcntl.ioctl(fd, VERIFY_REPORT, buf) == 0
    finally:
        os.close(fd)
    assert buf[:256] == reportmac
    return int.from_bytes(buf[256:264], "little")


def client_verify(m: Mounted, reportmac: bytes) -> int:
    with TdxGuest(m.path("tdx_guest")) as dev:
        return dev.verify_report(reportmac)


VERIFIERS = {"client": client_verify, "fcntl": raw_verify}


def raw_ioctl(path: str, cmd: int, arg=None, flags: int = os.O_RDWR):
    """One ioctl on a fresh fd; the buffer is sized from the command (at least 64 bytes)."""
    fd = os.open(path, flags)
    try:
        return fcntl.ioctl(fd, cmd, bytearray(max(64, (cmd >> 16) & 0x3FFF)) if arg is None else arg)
    finally:
        os.close(fd)


def state(m: Mounted) -> dict:
    """Everything a client can observe (reports are deterministic for one state)."""
    return {**{name: slurp(m.path(name)) for name in TEXT_FILES}, "tdreport": slurp(m.path("tdreport")),
            "names": sorted(os.listdir(m.mountpoint))}


def prime(m: Mounted) -> dict:
    """Move away from the all-default state, so "unchanged" means something. The module's
    shared mount is primed once, when it is made (``shared_mount`` below); a test on it
    (``shared_mount`` mark) must leave it as it is, so there only its state is returned."""
    if not m.shared:
        put(m.path("reportdata"), bytes(range(64)))
        put(m.path("rtmr3"), b"\x5a" * 48)
        put(m.path("rtmr2"), b"\xa5" * 48)
    return state(m)


@pytest.fixture(scope="module")
def shared_mount(shared_mount):
    """The mount this module's ``shared_mount`` tests take turns on, primed once."""
    prime(shared_mount)
    return shared_mount


def refused(m: Mounted, err: int, op: str, path: str, fn) -> str:
    return refused_with(m, state, err, op, path, fn)


# -- the node -------------------------------------------------------------------------------------


@pytest.mark.shared_mount
def test_node_listed_0600_regular_file(mnt):
    assert "tdx_guest" in os.listdir(mnt.mountpoint)
    assert "tdx_guest" in sh(f"ls {mnt.mountpoint}", check=True).stdout.decode().split()
    st = os.stat(mnt.path("tdx_guest"))
    assert stat.S_ISREG(st.st_mode), oct(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (0, 0)


@pytest.mark.shared_mount
@pytest.mark.parametrize("flags", ["O_RDWR", "O_RDONLY", "O_WRONLY"])
def test_open_works(mnt, flags):
    before = state(mnt)
    fd = os.open(mnt.path("tdx_guest"), getattr(os, flags))
    os.close(fd)
    # Python's own open() sends TCGETS (isatty): answered ENOTTY, the open still works
    with open(mnt.path("tdx_guest"), "r+b", buffering=0) as f:
        assert not f.isatty()
    assert state(mnt) == before
    assert mnt.rejections() == []


@pytest.mark.shared_mount
def test_read_refused(mnt):
    prime(mnt)
    fd = os.open(mnt.path("tdx_guest"), os.O_RDWR)
    try:
        refused(mnt, errno.EINVAL, "read", "/tdx_guest", lambda: os.read(fd, 4096))
        refused(mnt, errno.EINVAL, "read", "/tdx_guest", lambda: os.pread(fd, 1088, 0))
    finally:
        os.close(fd)
    before = state(mnt)
    log = Rejections(mnt)
    done = sh(f"cat {mnt.path('tdx_guest')}")
    assert done.returncode != 0 and b"Invalid argument" in done.stderr, done
    log.expect_one("read", "/tdx_guest", errno.EINVAL)
    assert state(mnt) == before


@pytest.mark.shared_mount
@pytest.mark.parametrize("data", [NONCE, EXT + b"\x03", b"x"], ids=["64-bytes", "extend-request", "1-byte"])
def test_write_refused(mnt, data):
    prime(mnt)
    fd = os.open(mnt.path("tdx_guest"), os.O_RDWR)
    try:
        refused(mnt, errno.EINVAL, "write", "/tdx_guest", lambda: os.write(fd, data))
        refused(mnt, errno.EINVAL, "write", "/tdx_guest", lambda: os.pwrite(fd, data, 0))
    finally:
        os.close(fd)


# -- TDX_CMD_GET_REPORT0 ------------------------------------------------------------------------------


@pytest.mark.shared_mount
@pytest.mark.parametrize("via", sorted(GETTERS))
def test_get_report0_known_answers(mnt, via):
    before = prime(mnt)
    rep = GETTERS[via](mnt, NONCE)
    assert len(rep) == REPORT_SIZE
    assert rep[0:4] == bytes([0x81, 0, 0, 0])  # REPORTTYPE: TDX, subtype 0, version 0, reserved
    assert rep[4:16] == bytes(12)
    assert field(rep, REPORTDATA_AT, 64) == NONCE
    assert rep[192:224] == bytes(32)
    for i in range(4):
        assert field(rep, RTMR_AT[i]) == value(mnt, f"rtmr{i}"), f"RTMR{i}"
    for name, at in STATIC_AT.items():
        assert field(rep, at) == value(mnt, name), name
    assert rep[32:80] == hashlib.sha384(rep[TEE_TCB_INFO]).digest()
    assert rep[80:128] == hashlib.sha384(rep[TDINFO]).digest()
    assert rep[495:512] == bytes(17)
    # the same TD, the same platform key, a deterministic MAC: byte-identical to the
    # one-fd transaction on tdreport for the same nonce
    assert rep == transaction(mnt, NONCE)
    # and the ioctl touched no shared state (the shared reportdata is not the nonce)
    assert state(mnt) == before
    assert mnt.rejections() == []


@pytest.mark.shared_mount
def test_client_and_fcntl_agree(mnt):
    prime(mnt)
    other = hashlib.sha512(b"another nonce").digest()
    assert client_report(mnt, NONCE) == raw_report(mnt, NONCE)
    a, b = client_report(mnt, other), raw_report(mnt, NONCE)
    diff = {i for i in range(REPORT_SIZE) if a[i] != b[i]}
    assert diff and diff <= set(range(REPORTDATA_AT, REPORTDATA_AT + 64)) | set(range(MAC_AT, MAC_AT + 32))


def test_get_report0_on_kept_fd_is_fresh(mnt):
    """One fd, many ioctls: each report is built now (an extend in between shows up)."""
    prime(mnt)
    with TdxGuest(mnt.path("tdx_guest")) as dev:
        first = dev.get_report0(NONCE)
        old = value(mnt, "rtmr3")
        put(mnt.path("rtmr3"), EXT)
        second = dev.get_report0(NONCE)
        third = dev.get_report0(b"\x00" * 64)
    assert field(first, RTMR_AT[3]) == old
    assert field(second, RTMR_AT[3]) == extended(old, EXT) == value(mnt, "rtmr3")
    assert second == transaction(mnt, NONCE)
    assert field(third, REPORTDATA_AT, 64) == bytes(64)


@pytest.mark.shared_mount
def test_get_report0_in_every_open_mode(mnt):
    """The kernel gates ioctl by nothing but the open: O_RDONLY works as for /dev/tdx_guest."""
    prime(mnt)
    expected = transaction(mnt, NONCE)
    for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR):
        buf = bytearray(NONCE + bytes(REPORT_SIZE))
        raw_ioctl(mnt.path("tdx_guest"), GET_REPORT0, buf, flags)
        assert bytes(buf[64:]) == expected


# -- TDX_CMD_EXTEND_RTMR ----------------------------------------------------------------------------------


@pytest.mark.parametrize("via", sorted(EXTENDERS))
@pytest.mark.parametrize("index", [2, 3])
def test_extend_rtmr(mnt, index, via):
    prime(mnt)
    olds = [value(mnt, f"rtmr{i}") for i in range(4)]
    EXTENDERS[via](mnt, index, EXT)
    new = extended(olds[index], EXT)
    assert slurp(mnt.path(f"rtmr{index}")) == new.hex().encode() + b"\n"
    rep = raw_report(mnt, NONCE)
    for i in range(4):
        expect = new if i == index else olds[i]
        assert value(mnt, f"rtmr{i}") == expect and field(rep, RTMR_AT[i]) == expect, f"RTMR{i}"
    assert rep[80:128] == hashlib.sha384(rep[TDINFO]).digest()
    # a second extend chains
    EXTENDERS[via](mnt, index, NONCE[:48])
    assert value(mnt, f"rtmr{index}") == extended(new, NONCE[:48])
    assert mnt.rejections() == []


@pytest.mark.shared_mount
@pytest.mark.parametrize("via", sorted(EXTENDERS))
@pytest.mark.parametrize("index,err", [(0, errno.EPERM), (1, errno.EPERM), (4, errno.EINVAL), (255, errno.EINVAL)])
def test_extend_rtmr_refused(mnt, index, err, via):
    before = prime(mnt)
    refused(mnt, err, "ioctl", "/tdx_guest", lambda: EXTENDERS[via](mnt, index, EXT))
    assert [value(mnt, f"rtmr{i}") for i in range(4)] == [bytes.fromhex(before[f"rtmr{i}"][:-1].decode())
                                                         for i in range(4)]


# -- TDX_CMD_VERIFY_REPORT -----------------------------------------------------------------------------------


@pytest.mark.shared_mount
@pytest.mark.parametrize("via", sorted(VERIFIERS))
def test_verify_report_from_this_mount(mnt, via):
    prime(mnt)
    for rep in (raw_report(mnt, NONCE), slurp(mnt.path("tdreport")), transaction(mnt, bytes(64))):
        assert VERIFIERS[via](mnt, rep[:256]) == 0
    assert mnt.rejections() == []


# every part of REPORTMACSTRUCT: type, subtype, version, reserved, CPUSVN, both hashes,
# REPORTDATA, reserved, MAC
FLIPS = [0, 1, 2, 3, 4, 15, 16, 31, 32, 79, 80, 127, 128, 191, 192, 223, 224, 240, 255]


@pytest.mark.shared_mount
@pytest.mark.parametrize("via", sorted(VERIFIERS))
@pytest.mark.parametrize("at", FLIPS)
def test_verify_report_flipped_byte(mnt, at, via):
    prime(mnt)
    mac = bytearray(raw_report(mnt, NONCE)[:256])
    mac[at] ^= 0x01
    refused(mnt, errno.EIO, "ioctl", "/tdx_guest", lambda: VERIFIERS[via](mnt, bytes(mac)))


@pytest.mark.parametrize("via", sorted(VERIFIERS))
def test_verify_report_from_another_platform(mount_factory, via):
    here = mount_factory(name="here")
    there = mount_factory(name="there")  # another in-memory TD: another platform secret
    prime(here)
    theirs = raw_report(there, NONCE)
    ours = raw_report(here, NONCE)
    # the same default profile: the reports differ only where the platform key enters
    assert theirs[256:] == raw_report(there, NONCE)[256:]
    assert VERIFIERS[via](there, theirs[:256]) == 0
    refused(here, errno.EIO, "ioctl", "/tdx_guest", lambda: VERIFIERS[via](here, theirs[:256]))
    assert VERIFIERS[via](here, ours[:256]) == 0
    refused(there, errno.EIO, "ioctl", "/tdx_guest", lambda: VERIFIERS[via](there, ours[:256]))


# -- commands that are not served ----------------------------------------------------------------------------


def stats_ioctls(m: Mounted, name: str) -> int:
    """ioctl requests the daemon counted for a file (counted by class: rtmr3 as "rtmr")."""
    with open(m.path(".stats"), "rb") as f:
        return json.load(f)["requests"]["by_op_and_kind"].get(f"ioctl {name.rstrip('0123456789')}", 0)


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", ["tdx_guest", "rtmr3", "tdreport"])
def test_tcgets_is_an_unlogged_probe(mnt, name):
    """TCGETS (isatty, sent by every Python open()) reaches the server, gets ENOTTY, and is
    not logged as a refusal."""
    before = prime(mnt)
    n = stats_ioctls(mnt, name)
    with pytest.raises(OSError) as exc:
        raw_ioctl(mnt.path(name), TCGETS, bytearray(64), os.O_RDONLY)
    assert exc.value.errno == errno.ENOTTY
    fd = os.open(mnt.path(name), os.O_RDONLY)
    try:
        assert not os.isatty(fd)  # libc isatty() is TCGETS
    finally:
        os.close(fd)
    assert stats_ioctls(mnt, name) == n + 2, "both TCGETS reached the server"
    assert state(mnt) == before
    assert mnt.rejections() == []


@pytest.mark.shared_mount
@pytest.mark.parametrize("cmd,names", [
    (DCAP_EXTEND_RTMR, ["0x80315403", "DCAP"]),
    (GET_QUOTE, ["0x80105402", "GET_QUOTE"]),
], ids=["dcap-extend-IOR", "unmerged-get-quote"])
def test_unservable_commands_named(mnt, cmd, names):
    prime(mnt)
    line = refused(mnt, errno.ENOTTY, "ioctl", "/tdx_guest", lambda: raw_ioctl(mnt.path("tdx_guest"), cmd))
    for word in names:
        assert word in line, line


ARBITRARY = {
    "_IO('T',9)": 0x5409,
    "GET_REPORT0-nr-9": 0xC4405409,
    "GET_REPORT0-size-64": 0xC0405401,
    "_IOW('T',1,1088)": 0x44405401,
    "_IOR('T',1,1088)": 0x84405401,
    "VERIFY-as-IOW": 0x41085402,
    "EXTEND-as-IOWR": 0xC0315403,
    "other-type-'X'": 0xC4405801,
    "TIOCGWINSZ": 0x5413,
}


@pytest.mark.shared_mount
@pytest.mark.parametrize("case", sorted(ARBITRARY))
def test_unknown_commands(mnt, case):
    prime(mnt)
    cmd = ARBITRARY[case]
    line = refused(mnt, errno.ENOTTY, "ioctl", "/tdx_guest", lambda: raw_ioctl(mnt.path("tdx_guest"), cmd))
    assert f"{cmd:#010x}" in line, line


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", ["rtmr3", "tdreport", "reportdata", "mrtd", ".stats"])
@pytest.mark.parametrize("cmd", [GET_REPORT0, EXTEND_RTMR, VERIFY_REPORT], ids=["get", "extend", "verify"])
def test_ioctl_on_other_files(mnt, name, cmd):
    prime(mnt)
    arg = bytearray(NONCE + bytes(1024)) if cmd == GET_REPORT0 else (
        EXT + b"\x03" if cmd == EXTEND_RTMR else bytearray(264))
    refused(mnt, errno.ENOTTY, "ioctl", f"/{name}", lambda: raw_ioctl(mnt.path(name), cmd, arg, os.O_RDONLY))
    if cmd == GET_REPORT0:
        assert arg[64:] == bytes(1024), "nothing copied back on an error"


@pytest.mark.shared_mount
def test_ioctl_on_the_directory(mnt):
    """The mount root is not the device either. libfuse3 passes directory ioctls to the
    server, with no file handle of ours (libfuse answers OPENDIR itself); libfuse2 answers
    them ENOTTY itself (FUSE_CAP_IOCTL_DIR not wanted), so the server never sees them."""
    prime(mnt)
    with open(mnt.path(".stats"), "rb") as f:
        served = not json.load(f)["server"]["libfuse"].startswith("2")

    def dir_ioctl(cmd, arg):
        fd = os.open(mnt.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, cmd, arg)
        finally:
            os.close(fd)

    for cmd, arg in ((GET_REPORT0, bytearray(NONCE + bytes(1024))), (EXTEND_RTMR, EXT + b"\x03"),
                     (TCGETS, bytearray(64))):
        before = state(mnt)
        log = Rejections(mnt)
        n = stats_ioctls(mnt, "dir")
        with pytest.raises(OSError) as exc:
            dir_ioctl(cmd, arg)
        assert exc.value.errno == errno.ENOTTY
        assert state(mnt) == before
        assert stats_ioctls(mnt, "dir") == n + served
        if served and cmd != TCGETS:
            log.expect_one("ioctl", "/", errno.ENOTTY)
        else:  # TCGETS is a probe, not a refusal; libfuse2 never asked the server
            assert log.new() == []


# -- tdxfs report get --------------------------------------------------------------------------------------------

VIAS = ["ioctl", "files", "transaction"]
# "files" writes the shared reportdata (the shell pattern): that one needs a fresh mount
VIAS_MARKED = [via if via == "files" else pytest.param(via, marks=pytest.mark.shared_mount) for via in VIAS]


def report_field(out: str, name: str) -> str:
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return parts[-1]
    raise AssertionError(f"no {name} line in:\n{out}")


@pytest.mark.parametrize("via", VIAS_MARKED)
def test_report_get_prints_fields(mnt, via):
    prime(mnt)
    done = tdxfs_cmd("report", "get", "--via", via, "--mount", mnt.mountpoint, "--reportdata", NONCE.hex())
    assert done.returncode == 0, done.stderr
    assert report_field(done.stdout, "reportdata") == NONCE.hex()
    assert report_field(done.stdout, "tdinfo.rtmr3") == value(mnt, "rtmr3").hex()
    assert report_field(done.stdout, "tdinfo.mrtd") == value(mnt, "mrtd").hex()
    assert "@128" in next(l for l in done.stdout.splitlines() if l.startswith("reportdata"))


@pytest.mark.parametrize("via", VIAS_MARKED)
def test_report_get_output_file(mnt, tmp_path, via):
    before = prime(mnt)
    out = tmp_path / "report.bin"
    done = tdxfs_cmd("report", "get", "--via", via, "--mount", mnt.mountpoint, "--reportdata", NONCE.hex(),
                     "-o", str(out))
    assert done.returncode == 0, done.stderr
    rep = out.read_bytes()
    assert len(rep) == REPORT_SIZE
    assert field(rep, REPORTDATA_AT, 64) == NONCE
    assert rep == transaction(mnt, NONCE)
    if via == "files":
        # the shell pattern goes through the shared reportdata: it now holds the nonce
        assert value(mnt, "reportdata") == NONCE
    else:
        assert state(mnt) == before
    assert mnt.rejections() == []


@pytest.mark.parametrize("via", VIAS_MARKED)
def test_report_get_json(mnt, via):
    prime(mnt)
    done = tdxfs_cmd("report", "get", "--via", via, "--mount", mnt.mountpoint, "--reportdata", NONCE.hex(), "--json")
    assert done.returncode == 0, done.stderr
    fields = json.loads(done.stdout)
    assert fields["reportdata"] == NONCE.hex()
    assert fields["tdinfo.rtmr2"] == value(mnt, "rtmr2").hex()
    assert fields["mac"] == field(transaction(mnt, NONCE), MAC_AT, 32).hex()


@pytest.mark.shared_mount
def test_report_get_random_nonce(mnt, tmp_path):
    """Without --reportdata: a fresh random nonce each time (two reports differ)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert tdxfs_cmd("report", "get", "--mount", mnt.mountpoint, "-o", str(out)).returncode == 0
    ra, rb = a.read_bytes(), b.read_bytes()
    assert len(ra) == len(rb) == REPORT_SIZE
    assert field(ra, REPORTDATA_AT, 64) != field(rb, REPORTDATA_AT, 64)
    assert ra == transaction(mnt, field(ra, REPORTDATA_AT, 64))


@pytest.mark.parametrize("args,message", [
    (["--reportdata", "00" * 63], "128 hex"),
    (["--via", "files"], "--mount"),
])
def test_report_get_refusals(args, message):
    done = tdxfs_cmd("report", "get", "--device", "/nonexistent/tdx_guest", *args)
    assert done.returncode == 2  # usage errors, as argparse's
    assert message in done.stderr, done.stderr


@pytest.mark.shared_mount
def test_report_get_device_error(mnt):
    """A node that is not tdx_guest: the ioctl's errno, said plainly, exit 1."""
    done = tdxfs_cmd("report", "get", "--device", mnt.path("tdreport"), "--reportdata", NONCE.hex())
    assert done.returncode == 1
    assert "Inappropriate ioctl for device" in done.stderr, done.stderr
