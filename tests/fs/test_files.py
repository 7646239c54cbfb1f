"""The file table through a real mount (issue 2, section 3).

The server always runs in its own process (``Mounted``); this process is only a client,
driving the mount with real shell commands (``sh -c 'echo … > …'``, ``cat``, ``dd``,
``xxd``, ``printf``, ``mv``…) and with os calls. Expected values are computed here from
the reference offsets (tdx-abi.md) and hashlib, never from tdxfs itself.
"""

import errno
import hashlib
import os
import shutil
import stat
import tempfile

import pytest

from tests.fsclient import refused, slurp, put, Rejections
from tdxfs.server import mountinfo
from tests import leakcheck
from tests.mounting import Mounted, sh, stop_all

# -- reference facts (tdx-abi.md), not taken from the code under test -----------------

REPORT_SIZE = 1024
REPORTDATA_AT = 128
MAC_AT = 224
RTMR_AT = [720, 768, 816, 864]
STATIC_AT = {"mrtd": 528, "mrconfigid": 576, "mrowner": 624, "mrownerconfig": 672}
TEE_TCB_INFO = slice(256, 495)
TDINFO = slice(512, 1024)

RTMRS = [f"rtmr{i}" for i in range(4)]
STATIC = list(STATIC_AT)
# name -> (mode bits, st_size)
TABLE = {
    "reportdata": (0o644, 129),
    "tdreport": (0o644, 1024),
    **{name: (0o644, 97) for name in RTMRS},
    **{name: (0o444, 97) for name in STATIC},
    "tdx_guest": (0o600, 0),  # the ioctl node (issue 3)
    ".stats": (0o444, 4096),  # request counters (issue 3), sized as sysfs reports
}
TEXT_FILES = ["reportdata", *RTMRS, *STATIC]

NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups"


# -- client helpers ----------------------------------------------------------------------


def value(m: Mounted, name: str) -> bytes:
    """A register file's value, checked for the sysfs text format on the way."""
    text = slurp(m.path(name))
    size = 64 if name == "reportdata" else 48
    assert len(text) == 2 * size + 1 and text.endswith(b"\n"), text
    return bytes.fromhex(text[:-1].decode())


def report(m: Mounted) -> bytes:
    data = slurp(m.path("tdreport"))
    assert len(data) == REPORT_SIZE
    return data


def rtmr_in(rep: bytes, i: int) -> bytes:
    return rep[RTMR_AT[i] : RTMR_AT[i] + 48]


def extended(old: bytes, data: bytes) -> bytes:
    return hashlib.sha384(old + data).digest()


def state(m: Mounted) -> dict:
    """Everything a client can observe; reports are deterministic for one state."""
    return {**{name: slurp(m.path(name)) for name in TEXT_FILES}, "tdreport": report(m),
            "names": sorted(os.listdir(m.mountpoint))}


def prime(m: Mounted) -> dict:
    """Move away from the all-default state, so "unchanged" means something. The module's
    shared mount is primed once, when it is made (``shared_mount`` below); a test on it
    (``shared_mount`` mark) must leave it as it is, so there only its state is returned."""
    if not m.shared:
        put(m.path("reportdata"), bytes(range(64)))
        put(m.path("rtmr3"), b"\x5a" * 48)
    return state(m)


@pytest.fixture(scope="module")
def shared_mount(shared_mount):
    """The mount this module's ``shared_mount`` tests take turns on, primed once."""
    prime(shared_mount)
    return shared_mount


def refused_os(m: Mounted, err: int, op: str, path: str, fn) -> None:
    refused(m, state, err, op, path, fn)


def refused_sh(m: Mounted, err: int, op: str, path: str, cmd: str) -> None:
    before = state(m)
    log = Rejections(m)
    done = sh(f"cd {m.mountpoint} && {cmd}")
    assert done.returncode != 0, done
    if op == "write" and cmd.split()[0] in ("echo", "printf"):
        # dash's builtins report any failed write as "I/O error"; the errno is in the log
        assert b"I/O error" in done.stderr, done.stderr
    else:
        assert os.strerror(err).encode() in done.stderr, done.stderr
    log.expect_one(op, path, err)
    assert state(m) == before


# -- the tree ------------------------------------------------------------------------------


DIRECTORIES = ["tsm",  # configfs-tsm report instances (issue 4; tests/fs/test_configfs.py)
               "measurements", "acpi"]  # tsm-mr files, the CCEL views (issue 7; test_measurements.py)
GROWING = ["eventlog"]  # the text event log, its size grows (issue 7; tests/fs/test_eventlog.py)


@pytest.mark.shared_mount
def test_listing_is_the_table(mnt):
    assert sorted(os.listdir(mnt.mountpoint)) == sorted([*TABLE, *DIRECTORIES, *GROWING])
    out = sh(f"ls -A {mnt.mountpoint}", check=True).stdout.split()
    assert sorted(out) == sorted(n.encode() for n in [*TABLE, *DIRECTORIES, *GROWING])


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", sorted(TABLE))
def test_mode_and_real_size(mnt, name):
    st = os.stat(mnt.path(name))
    mode, size = TABLE[name]
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == mode
    assert st.st_size == size
    assert (st.st_uid, st.st_gid) == (0, 0)
    # the size is what a read returns (the node has no read; .stats varies, sized as sysfs does)
    if name not in ("tdx_guest", ".stats"):
        assert len(slurp(mnt.path(name))) == size


@pytest.mark.shared_mount
def test_root_directory(mnt):
    st = os.stat(mnt.mountpoint)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755


@pytest.mark.shared_mount
def test_proc_mounts_names_tdxfs(mnt):
    target = os.path.realpath(mnt.mountpoint)
    here = mountinfo.mounts_at(target)  # /proc/mounts' fields, read as bytes (issue 8, defect 4)
    assert len(here) == 1
    source, fstype, options = here[0].source, here[0].fstype, (here[0].options + b"," + here[0].super_options).decode()
    assert (source, fstype) == (b"tdxfs", "fuse.tdxfs")
    assert "default_permissions" in options.split(",")
    assert "allow_other" not in options.split(",")
    out = sh("findmnt -n -t fuse.tdxfs -o TARGET,SOURCE,FSTYPE", check=True).stdout.decode()
    assert any(line.split() == [target, "tdxfs", "fuse.tdxfs"] for line in out.splitlines()), out


# -- reads -----------------------------------------------------------------------------------


def test_default_values(mnt):
    assert slurp(mnt.path("reportdata")) == b"0" * 128 + b"\n"
    assert slurp(mnt.path("rtmr3")) == b"0" * 96 + b"\n"
    for name in ["rtmr0", "rtmr1", "rtmr2", "mrtd"]:
        assert value(mnt, name) != bytes(48), f"{name} comes from the synthetic boot"


@pytest.mark.shared_mount
def test_report_layout_matches_the_files(mnt):
    prime(mnt)
    rep = report(mnt)
    assert rep[0:3] == bytes([0x81, 0, 0])
    assert rep[REPORTDATA_AT : REPORTDATA_AT + 64] == value(mnt, "reportdata") == bytes(range(64))
    for i in range(4):
        assert rtmr_in(rep, i) == value(mnt, f"rtmr{i}")
    for name, at in STATIC_AT.items():
        assert rep[at : at + 48] == value(mnt, name)
    assert rep[32:80] == hashlib.sha384(rep[TEE_TCB_INFO]).digest()
    assert rep[80:128] == hashlib.sha384(rep[TDINFO]).digest()
    assert rep[495:512] == bytes(17)
    assert rep[192:224] == bytes(32)


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", STATIC)
def test_static_measurement_files(mnt, name):
    text = sh(f"cat {mnt.path(name)}", check=True).stdout
    assert len(text) == 97 and text.endswith(b"\n")
    at = STATIC_AT[name]
    assert bytes.fromhex(text[:-1].decode()) == report(mnt)[at : at + 48]


@pytest.mark.shared_mount
def test_big_reads_are_served_whole(mnt):
    """direct_io: the handler sees the caller's size (cat asks 131072)."""
    rep = report(mnt)
    fd = os.open(mnt.path("tdreport"), os.O_RDONLY)
    try:
        assert os.read(fd, 131072) == rep
        assert os.read(fd, 131072) == b""
    finally:
        os.close(fd)
    out = sh(f"dd if={mnt.path('tdreport')} bs=131072 count=1 status=none", check=True).stdout
    assert out == rep
    assert sh(f"cat {mnt.path('tdreport')}", check=True).stdout == rep
    assert sh(f"cat {mnt.path('rtmr0')}", check=True).stdout == slurp(mnt.path("rtmr0"))


@pytest.mark.shared_mount
def test_xxd_dumps_the_report(mnt):
    assert shutil.which("xxd"), "xxd is part of the cookbook"
    rep = report(mnt)
    out = sh(f"xxd -p -c 1024 {mnt.path('tdreport')}", check=True).stdout
    assert out == rep.hex().encode() + b"\n"
    out = sh(f"od -An -v -tx1 {mnt.path('tdreport')}", check=True).stdout
    assert bytes.fromhex(out.decode().replace(" ", "").replace("\n", "")) == rep


@pytest.mark.shared_mount
def test_reads_in_small_pieces_see_one_snapshot(mnt):
    rep = report(mnt)
    assert slurp(mnt.path("tdreport"), chunk=7) == rep
    assert slurp(mnt.path("rtmr2"), chunk=5) == slurp(mnt.path("rtmr2"))
    out = sh(f"dd if={mnt.path('tdreport')} bs=100 status=none", check=True).stdout
    assert out == rep


# -- reportdata -------------------------------------------------------------------------------

RD = bytes(range(0x40, 0x80))  # 64 raw bytes, none of them whitespace


@pytest.mark.parametrize("form", ["raw", "hex", "hex-newline", "HEX-upper", "whitespace-around"])
def test_reportdata_write_forms(mnt, form):
    data = {
        "raw": RD,
        "hex": RD.hex().encode(),
        "hex-newline": RD.hex().encode() + b"\n",
        "HEX-upper": RD.hex().upper().encode(),
        "whitespace-around": b" \t" + RD.hex().encode() + b"  \n",
    }[form]
    before = prime(mnt)
    assert put(mnt.path("reportdata"), data) == len(data)
    assert slurp(mnt.path("reportdata")) == RD.hex().encode() + b"\n"
    rep = report(mnt)
    assert rep[REPORTDATA_AT : REPORTDATA_AT + 64] == RD
    assert rtmr_in(rep, 3) == rtmr_in(before["tdreport"], 3)


@pytest.mark.parametrize("cmd", [
    "echo {hex} > reportdata",
    "printf %s {hex} > reportdata",
    "printf '%s\\n' {hex} > reportdata",
    "dd if={raw} of=reportdata bs=64 count=1 status=none",
    "dd if={raw} of=reportdata bs=64 count=1 conv=notrunc status=none",
    "printf %s {hex} | xxd -r -p > reportdata",
])
def test_reportdata_by_shell(mnt, tmp_path, cmd):
    raw = tmp_path / "rd.bin"
    raw.write_bytes(RD)
    done = sh("cd {} && ".format(mnt.mountpoint) + cmd.format(hex=RD.hex(), raw=raw))
    assert done.returncode == 0, done.stderr
    assert sh(f"cat {mnt.path('reportdata')}", check=True).stdout == RD.hex().encode() + b"\n"
    assert report(mnt)[REPORTDATA_AT : REPORTDATA_AT + 64] == RD
    assert mnt.rejections() == []


BAD_REPORTDATA = {
    "raw-63": RD[:63],
    "raw-65": RD + b"A",
    "hex-127": RD.hex()[:127].encode(),
    "hex-129": RD.hex().encode() + b"a",
    "non-hex-128": b"g" * 128,
    "hex-with-inner-space": RD.hex()[:64].encode() + b" " + RD.hex()[64:].encode(),
    "0x-prefix": b"0x" + RD.hex().encode(),
    "empty-line": b"\n",
    "long": b"a" * 5000,
}


@pytest.mark.shared_mount
@pytest.mark.parametrize("bad", sorted(BAD_REPORTDATA))
def test_reportdata_malformed(mnt, bad):
    prime(mnt)
    refused_os(mnt, errno.EINVAL, "write", "/reportdata", lambda: put(mnt.path("reportdata"), BAD_REPORTDATA[bad]))


@pytest.mark.shared_mount
def test_reportdata_bad_echo(mnt):
    prime(mnt)
    refused_sh(mnt, errno.EINVAL, "write", "/reportdata", "echo 00112233 > reportdata")


# -- rtmr extends ------------------------------------------------------------------------------

EXT = bytes(range(0x90, 0xC0))  # 48 raw bytes, none of them whitespace


@pytest.mark.parametrize("i", range(4))
@pytest.mark.parametrize("form", ["raw", "hex", "hex-newline"])
def test_extend_each_rtmr(mnt, i, form):
    data = {"raw": EXT, "hex": EXT.hex().encode(), "hex-newline": EXT.hex().encode() + b"\n"}[form]
    name = f"rtmr{i}"
    others = {j: value(mnt, f"rtmr{j}") for j in range(4) if j != i}
    old = value(mnt, name)
    assert put(mnt.path(name), data) == len(data)
    new = extended(old, EXT)
    assert slurp(mnt.path(name)) == new.hex().encode() + b"\n"
    rep = report(mnt)
    assert rtmr_in(rep, i) == new
    for j, v in others.items():
        assert value(mnt, f"rtmr{j}") == v and rtmr_in(rep, j) == v
    assert rep[80:128] == hashlib.sha384(rep[TDINFO]).digest()


@pytest.mark.parametrize("cmd", [
    "echo {hex} > rtmr3",
    "printf %s {hex} > rtmr3",
    "printf '%s\\n' {hex} > rtmr3",
    "dd if={raw} of=rtmr3 bs=48 count=1 status=none",
    "dd if={raw} of=rtmr3 bs=48 count=1 conv=notrunc status=none",
    "printf %s {hex} | xxd -r -p > rtmr3",
    "printf %s {hex} | tee rtmr3 > /dev/null",
])
def test_extend_by_shell(mnt, tmp_path, cmd):
    raw = tmp_path / "ext.bin"
    raw.write_bytes(EXT)
    old = value(mnt, "rtmr3")
    done = sh("cd {} && ".format(mnt.mountpoint) + cmd.format(hex=EXT.hex(), raw=raw))
    assert done.returncode == 0, done.stderr
    new = extended(old, EXT)
    assert sh(f"cat {mnt.path('rtmr3')}", check=True).stdout == new.hex().encode() + b"\n"
    assert rtmr_in(report(mnt), 3) == new
    assert mnt.rejections() == []


def test_extends_chain(mnt):
    expected = bytes(48)  # RTMR3 starts at zero
    for k in range(5):
        data = hashlib.sha384(b"event %d" % k).digest()
        if k % 2:
            assert sh(f"echo {data.hex()} > {mnt.path('rtmr3')}").returncode == 0
        else:
            put(mnt.path("rtmr3"), data)
        expected = extended(expected, data)
    assert value(mnt, "rtmr3") == expected
    assert rtmr_in(report(mnt), 3) == expected


BAD_EXTEND = {
    "raw-47": EXT[:47],
    "raw-49": EXT + b"A",
    "raw-1": b"A",
    "hex-95": EXT.hex()[:95].encode(),
    "hex-97": EXT.hex().encode() + b"a",
    "non-hex-96": b"z" * 96,
    "hex-with-inner-space": EXT.hex()[:48].encode() + b" " + EXT.hex()[48:].encode(),
    "two-values": EXT.hex().encode() + b"\n" + EXT.hex().encode() + b"\n",
    "reportdata-sized": RD,
    "long": b"a" * 5000,
}


@pytest.mark.shared_mount
@pytest.mark.parametrize("bad", sorted(BAD_EXTEND))
def test_extend_malformed(mnt, bad):
    prime(mnt)
    refused_os(mnt, errno.EINVAL, "write", "/rtmr3", lambda: put(mnt.path("rtmr3"), BAD_EXTEND[bad]))


@pytest.mark.shared_mount
@pytest.mark.parametrize("cmd", ["echo 0011 > rtmr1", "printf zz > rtmr1", "echo {} > rtmr1".format("x" * 96),
                                 "/bin/echo 0011 > rtmr1", "env printf 0011 > rtmr1"])
def test_extend_malformed_by_shell(mnt, cmd):
    prime(mnt)
    refused_sh(mnt, errno.EINVAL, "write", "/rtmr1", cmd)


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", ["rtmr3", "reportdata"])
def test_write_at_nonzero_offset(mnt, name):
    prime(mnt)
    data = EXT if name == "rtmr3" else RD

    def pwrite_at_1():
        fd = os.open(mnt.path(name), os.O_WRONLY)
        try:
            os.pwrite(fd, data, 1)
        finally:
            os.close(fd)

    refused_os(mnt, errno.EINVAL, "write", f"/{name}", pwrite_at_1)


@pytest.mark.parametrize("name", ["rtmr3", "reportdata"])
def test_second_write_on_one_fd(mnt, name):
    """A second write continues at offset 48/64: refused, only the first took effect."""
    prime(mnt)
    data = EXT if name == "rtmr3" else RD
    old = value(mnt, name)
    fd = os.open(mnt.path(name), os.O_WRONLY)
    try:
        assert os.write(fd, data) == len(data)
        after_first = state(mnt)
        log = Rejections(mnt)
        with pytest.raises(OSError) as exc:
            os.write(fd, data)
        assert exc.value.errno == errno.EINVAL
        log.expect_one("write", f"/{name}", errno.EINVAL)
    finally:
        os.close(fd)
    assert state(mnt) == after_first
    assert value(mnt, name) == (extended(old, EXT) if name == "rtmr3" else RD)


@pytest.mark.shared_mount
def test_hex_split_over_two_writes_extends_nothing(mnt):
    prime(mnt)
    before = state(mnt)
    log = Rejections(mnt)
    text = EXT.hex().encode()
    fd = os.open(mnt.path("rtmr3"), os.O_WRONLY)
    try:
        for piece in (text[:50], text[50:]):
            with pytest.raises(OSError) as exc:
                os.write(fd, piece)
            assert exc.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    assert state(mnt) == before
    assert len(log.new()) == 2


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", ["rtmr3", "reportdata"])
def test_o_append_refused(mnt, name):
    prime(mnt)
    refused_os(mnt, errno.EINVAL, "open", f"/{name}",
               lambda: put(mnt.path(name), EXT, os.O_WRONLY | os.O_APPEND))


@pytest.mark.shared_mount
def test_append_redirect_refused(mnt):
    prime(mnt)
    refused_sh(mnt, errno.EINVAL, "open", "/rtmr3", f"echo {EXT.hex()} >> rtmr3")


# -- read-only files, even for root ------------------------------------------------------------


def test_we_are_root():
    assert os.geteuid() == 0, "these tests check that root is refused too"


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", STATIC)
@pytest.mark.parametrize("how", ["O_WRONLY", "O_RDWR", "O_WRONLY|O_TRUNC"])
def test_read_only_files_refuse_root(mnt, name, how):
    prime(mnt)
    flags = {"O_WRONLY": os.O_WRONLY, "O_RDWR": os.O_RDWR, "O_WRONLY|O_TRUNC": os.O_WRONLY | os.O_TRUNC}[how]
    refused_os(mnt, errno.EACCES, "open", f"/{name}", lambda: put(mnt.path(name), EXT, flags))


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", STATIC)
def test_read_only_files_refuse_shell_redirect(mnt, name):
    prime(mnt)
    refused_sh(mnt, errno.EACCES, "open", f"/{name}", f"echo {EXT.hex()} > {name}")


@pytest.mark.shared_mount
def test_read_only_file_refuses_truncate(mnt):
    prime(mnt)
    refused_os(mnt, errno.EACCES, "truncate", "/mrtd", lambda: os.truncate(mnt.path("mrtd"), 0))


# -- the set of entries is fixed -----------------------------------------------------------------

NAMESPACE_SHELL = [
    # (command, operation logged, path logged)
    ("touch newfile", "create", "/newfile"),
    ("echo 00 > newfile", "create", "/newfile"),
    ("mkdir newdir", "mkdir", "/newdir"),
    ("mknod fifo p", "mknod", "/fifo"),
    ("rm rtmr3", "unlink", "/rtmr3"),
    ("rm -f mrtd", "unlink", "/mrtd"),
    ("mv rtmr3 renamed", "rename", "/rtmr3"),
    ("mv rtmr3 rtmr2", "rename", "/rtmr3"),
    ("ln rtmr3 hardlink", "link", "/hardlink"),
    ("ln -s rtmr3 symlink", "symlink", "/symlink"),
    ("chmod 600 rtmr3", "chmod", "/rtmr3"),
    ("chmod 666 mrtd", "chmod", "/mrtd"),
    ("chown 1234:1234 rtmr3", "chown", "/rtmr3"),
]


@pytest.mark.shared_mount
@pytest.mark.parametrize("cmd,op,path", NAMESPACE_SHELL, ids=[c[0] for c in NAMESPACE_SHELL])
def test_namespace_changes_refused_by_shell(mnt, cmd, op, path):
    prime(mnt)
    refused_sh(mnt, errno.EPERM, op, path, cmd)
    assert os.stat(mnt.path("rtmr3")).st_mode == stat.S_IFREG | 0o644


NAMESPACE_OS = {
    "open-O_CREAT": ("create", "/new", lambda p: os.close(os.open(p("new"), os.O_WRONLY | os.O_CREAT, 0o644))),
    "open-O_CREAT|O_EXCL": ("create", "/new", lambda p: os.open(p("new"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)),
    "mkdir": ("mkdir", "/d", lambda p: os.mkdir(p("d"))),
    "mkfifo": ("mknod", "/f", lambda p: os.mkfifo(p("f"))),
    "unlink": ("unlink", "/reportdata", lambda p: os.unlink(p("reportdata"))),
    "rename": ("rename", "/tdreport", lambda p: os.rename(p("tdreport"), p("x"))),
    "replace": ("rename", "/rtmr0", lambda p: os.replace(p("rtmr0"), p("rtmr1"))),
    "link": ("link", "/l", lambda p: os.link(p("rtmr3"), p("l"))),
    "symlink": ("symlink", "/s", lambda p: os.symlink("rtmr3", p("s"))),
    "chmod": ("chmod", "/reportdata", lambda p: os.chmod(p("reportdata"), 0o600)),
    "chown": ("chown", "/tdreport", lambda p: os.chown(p("tdreport"), 1234, 1234)),
}


@pytest.mark.shared_mount
@pytest.mark.parametrize("case", sorted(NAMESPACE_OS))
def test_namespace_changes_refused_by_os_calls(mnt, case):
    prime(mnt)
    op, path, fn = NAMESPACE_OS[case]
    refused_os(mnt, errno.EPERM, op, path, lambda: fn(mnt.path))


@pytest.mark.shared_mount
def test_rmdir_cannot_remove_anything(mnt):
    """rmdir never reaches the server here (no subdirectories): the kernel answers."""
    before = prime(mnt)
    done = sh(f"rmdir {mnt.path('rtmr3')}")
    assert done.returncode != 0 and b"Not a directory" in done.stderr
    with pytest.raises(OSError) as exc:
        os.rmdir(mnt.path("nodir"))
    assert exc.value.errno == errno.ENOENT
    assert state(mnt) == before


@pytest.mark.shared_mount
@pytest.mark.parametrize("call", ["stat", "open", "open-write", "cat"])
def test_unknown_names(mnt, call):
    before = prime(mnt)
    p = mnt.path("rtmr4")
    if call == "cat":
        done = sh(f"cat {p}")
        assert done.returncode != 0 and b"No such file or directory" in done.stderr
    else:
        fn = {"stat": lambda: os.stat(p), "open": lambda: os.open(p, os.O_RDONLY),
              "open-write": lambda: os.open(p, os.O_WRONLY)}[call]
        with pytest.raises(OSError) as exc:
            fn()
        assert exc.value.errno == errno.ENOENT
    assert state(mnt) == before
    # A lookup miss is an answer, not a refused request (ls and shells probe names): not logged.
    assert mnt.rejections() == []


# -- truncation (shell redirection) ----------------------------------------------------------------


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", ["rtmr3", "reportdata"])
def test_truncate_to_zero_is_a_no_op(mnt, name):
    before = prime(mnt)
    os.truncate(mnt.path(name), 0)
    fd = os.open(mnt.path(name), os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    put(mnt.path(name), b"", os.O_WRONLY | os.O_TRUNC)
    assert sh(f": > {mnt.path(name)}").returncode == 0
    assert sh(f"truncate -s 0 {mnt.path(name)}").returncode == 0
    assert state(mnt) == before
    assert os.stat(mnt.path(name)).st_size == TABLE[name][1]
    assert mnt.rejections() == []


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", ["rtmr3", "reportdata"])
def test_truncate_to_nonzero_refused(mnt, name):
    prime(mnt)
    refused_os(mnt, errno.EINVAL, "truncate", f"/{name}", lambda: os.truncate(mnt.path(name), 5))


@pytest.mark.shared_mount
def test_truncate_to_nonzero_refused_by_shell(mnt):
    prime(mnt)
    refused_sh(mnt, errno.EINVAL, "truncate", "/rtmr2", "truncate -s 97 rtmr2")


# -- fds: snapshots and freshness -----------------------------------------------------------------


def test_kept_open_fd_is_never_stale(mnt):
    fd = os.open(mnt.path("rtmr3"), os.O_RDONLY)
    rd = os.open(mnt.path("reportdata"), os.O_RDONLY)
    try:
        old = os.pread(fd, 4096, 0)
        assert old == b"0" * 96 + b"\n"
        put(mnt.path("rtmr3"), EXT)
        assert os.pread(fd, 4096, 0) == extended(bytes(48), EXT).hex().encode() + b"\n"
        assert os.pread(rd, 4096, 0) == b"0" * 128 + b"\n"
        put(mnt.path("reportdata"), RD)
        assert os.pread(rd, 4096, 0) == RD.hex().encode() + b"\n"
        os.lseek(rd, 0, os.SEEK_SET)
        assert os.read(rd, 4096) == RD.hex().encode() + b"\n"
    finally:
        os.close(fd)
        os.close(rd)


def test_report_fd_reads_one_snapshot(mnt):
    prime(mnt)
    old_report = report(mnt)
    fd = os.open(mnt.path("tdreport"), os.O_RDONLY)
    try:
        head = os.read(fd, 100)
        old3 = value(mnt, "rtmr3")
        put(mnt.path("rtmr3"), EXT)  # from another fd
        new3 = extended(old3, EXT)
        assert value(mnt, "rtmr3") == new3
        rest = os.read(fd, 4096)
        assert head + rest == old_report
        assert rtmr_in(head + rest, 3) == old3
        # a read at offset 0 refreshes
        fresh = os.pread(fd, 4096, 0)
        assert len(fresh) == REPORT_SIZE and rtmr_in(fresh, 3) == new3
        assert fresh == report(mnt)
        # and the refreshed snapshot is kept for the rest of the fd
        put(mnt.path("rtmr3"), EXT)
        assert os.pread(fd, 4096, 500) == fresh[500:]
    finally:
        os.close(fd)


@pytest.mark.shared_mount
def test_dd_of_a_report_is_not_torn(mnt):
    """Small reads of one fd by dd: the whole report is one snapshot (no concurrent extend here,
    but the pieces must join up to a report whose hashes hold)."""
    rep = sh(f"dd if={mnt.path('tdreport')} bs=48 status=none", check=True).stdout
    assert len(rep) == REPORT_SIZE
    assert rep[80:128] == hashlib.sha384(rep[TDINFO]).digest()


@pytest.mark.parametrize("form", ["raw", "hex", "hex-newline"])
def test_report_fd_transaction(mnt, form):
    """On an O_RDWR fd, a write sets REPORTDATA for that fd only."""
    prime(mnt)
    shared = value(mnt, "reportdata")
    mine = hashlib.sha512(b"nonce for this fd").digest()
    data = {"raw": mine, "hex": mine.hex().encode(), "hex-newline": mine.hex().encode() + b"\n"}[form]
    other = os.open(mnt.path("tdreport"), os.O_RDONLY)
    fd = os.open(mnt.path("tdreport"), os.O_RDWR)
    try:
        other_before = os.pread(other, 4096, 0)
        assert os.write(fd, data) == len(data)
        rep = os.pread(fd, 4096, 0)
        assert len(rep) == REPORT_SIZE
        assert rep[REPORTDATA_AT : REPORTDATA_AT + 64] == mine
        assert rtmr_in(rep, 3) == value(mnt, "rtmr3")
        assert rep[80:128] == hashlib.sha384(rep[TDINFO]).digest()
        # nobody else sees it
        assert value(mnt, "reportdata") == shared
        assert os.pread(other, 4096, 0) == other_before
        assert report(mnt)[REPORTDATA_AT : REPORTDATA_AT + 64] == shared
        # same TD, same platform: the two reports differ exactly in REPORTDATA and the MAC
        diff = {i for i in range(REPORT_SIZE) if rep[i] != other_before[i]}
        assert diff and diff <= set(range(REPORTDATA_AT, REPORTDATA_AT + 64)) | set(range(MAC_AT, MAC_AT + 32))
        # the fd's REPORTDATA stays with the fd: an extend, then a refresh
        put(mnt.path("rtmr3"), EXT)
        again = os.pread(fd, 4096, 0)
        assert again[REPORTDATA_AT : REPORTDATA_AT + 64] == mine
        assert rtmr_in(again, 3) == value(mnt, "rtmr3") != rtmr_in(rep, 3)
    finally:
        os.close(fd)
        os.close(other)
    assert value(mnt, "reportdata") == shared
    assert report(mnt)[REPORTDATA_AT : REPORTDATA_AT + 64] == shared
    assert mnt.rejections() == []


@pytest.mark.shared_mount
def test_report_fd_transaction_read_after_write_continues(mnt):
    """A plain read after the write (fd offset 64) already returns the fd's fresh report."""
    prime(mnt)
    mine = b"\x07" * 64
    fd = os.open(mnt.path("tdreport"), os.O_RDWR)
    try:
        os.write(fd, mine)
        tail = os.read(fd, 4096)
        full = os.pread(fd, 4096, 0)
    finally:
        os.close(fd)
    assert full[REPORTDATA_AT : REPORTDATA_AT + 64] == mine
    assert tail == full[64:]


@pytest.mark.shared_mount
@pytest.mark.parametrize("bad", ["raw-63", "hex-127", "non-hex-128", "long"])
def test_report_fd_malformed_write(mnt, bad):
    prime(mnt)
    shared = value(mnt, "reportdata")
    fd = os.open(mnt.path("tdreport"), os.O_RDWR)
    try:
        refused_os(mnt, errno.EINVAL, "write", "/tdreport", lambda: os.write(fd, BAD_REPORTDATA[bad]))
        assert os.pread(fd, 4096, 0)[REPORTDATA_AT : REPORTDATA_AT + 64] == shared
    finally:
        os.close(fd)


@pytest.mark.shared_mount
def test_report_write_only_open_refused(mnt):
    """`echo NONCE > tdreport` would set a REPORTDATA no read ever sees: refused at open."""
    prime(mnt)
    refused_os(mnt, errno.EINVAL, "open", "/tdreport", lambda: os.open(mnt.path("tdreport"), os.O_WRONLY))
    refused_sh(mnt, errno.EINVAL, "open", "/tdreport", "/bin/echo " + "ab" * 64 + " > tdreport")


@pytest.mark.shared_mount
def test_report_fd_second_write_and_offset_refused(mnt):
    prime(mnt)
    shared = value(mnt, "reportdata")
    first, second = b"\x01" * 64, b"\x02" * 64
    fd = os.open(mnt.path("tdreport"), os.O_RDWR)
    try:
        os.write(fd, first)
        refused_os(mnt, errno.EINVAL, "write", "/tdreport", lambda: os.write(fd, second))
        refused_os(mnt, errno.EINVAL, "write", "/tdreport", lambda: os.pwrite(fd, second, 1))
        assert os.pread(fd, 4096, 0)[REPORTDATA_AT : REPORTDATA_AT + 64] == first
        # a whole value at offset 0 replaces the fd's REPORTDATA
        os.pwrite(fd, second, 0)
        assert os.pread(fd, 4096, 0)[REPORTDATA_AT : REPORTDATA_AT + 64] == second
    finally:
        os.close(fd)
    assert value(mnt, "reportdata") == shared


@pytest.mark.shared_mount
def test_report_o_append_refused(mnt):
    prime(mnt)
    refused_os(mnt, errno.EINVAL, "open", "/tdreport",
               lambda: os.open(mnt.path("tdreport"), os.O_RDWR | os.O_APPEND))


# -- mount options ---------------------------------------------------------------------------------


@pytest.fixture
def public_mount():
    """Mounts under a world-searchable directory, so other users can reach them
    (pytest's tmp_path is 0700)."""
    base = tempfile.mkdtemp(prefix="tdxfs-test-", dir="/tmp")
    os.chmod(base, 0o755)
    leakcheck.watch(base)  # outside tmp_path: the session's leak net looks here too
    started = []

    def start(*args):
        m = Mounted(os.path.join(base, f"mnt{len(started)}"), *args).start()
        started.append(m)
        return m

    try:
        yield start
    finally:
        try:
            stop_all(started)  # every mount stopped, even when one's check fails
        finally:
            shutil.rmtree(base)


def as_user(uid: int, cmd: str):
    return sh(f"setpriv --reuid={uid} --regid={uid} --clear-groups sh -c '{cmd}'")


def mount_options(m: Mounted):
    top = mountinfo.top_at(m.mountpoint)  # read as bytes (issue 8, defect 4)
    if top is None:
        raise AssertionError("not mounted")
    return (top.options + b"," + top.super_options).decode().split(",")


def test_other_users_refused_by_default(public_mount):
    m = public_mount()
    for cmd in (f"cat {m.path('rtmr3')}", f"stat {m.path('rtmr3')}", f"ls {m.mountpoint}"):
        done = as_user(65534, cmd)
        assert done.returncode != 0 and b"Permission denied" in done.stderr, (cmd, done)
    # root is fine
    assert sh(f"cat {m.path('rtmr3')}", check=True).stdout == b"0" * 96 + b"\n"


def test_allow_other(public_mount):
    m = public_mount("-o", "allow_other")
    assert "allow_other" in mount_options(m) and "default_permissions" in mount_options(m)
    done = as_user(65534, f"cat {m.path('rtmr3')}")
    assert done.returncode == 0 and done.stdout == b"0" * 96 + b"\n", done
    done = as_user(65534, f"cat {m.path('tdreport')}")
    assert done.returncode == 0 and len(done.stdout) == REPORT_SIZE
    # the modes are enforced by the kernel (default_permissions): 0644 root-owned
    done = as_user(65534, f"echo {EXT.hex()} > {m.path('rtmr3')}")
    assert done.returncode != 0 and b"Permission denied" in done.stderr
    assert value(m, "rtmr3") == bytes(48)
    assert m.rejections() == []  # refused by the kernel, never reached the server


def test_uid_gid(public_mount):
    m = public_mount("-o", "uid=1234,gid=1234,allow_other")
    for p in [m.mountpoint, *(m.path(n) for n in TABLE)]:
        st = os.stat(p)
        assert (st.st_uid, st.st_gid) == (1234, 1234), p
    assert stat.S_IMODE(os.stat(m.path("rtmr3")).st_mode) == 0o644
    # the owner may now extend; others still may not
    done = as_user(1234, f"echo {EXT.hex()} > {m.path('rtmr3')}")
    assert done.returncode == 0, done
    assert value(m, "rtmr3") == extended(bytes(48), EXT)
    done = as_user(65534, f"echo {EXT.hex()} > {m.path('rtmr3')}")
    assert done.returncode != 0 and b"Permission denied" in done.stderr
    assert value(m, "rtmr3") == extended(bytes(48), EXT)
    # read-only stays read-only for the owner
    done = as_user(1234, f"echo {EXT.hex()} > {m.path('mrtd')}")
    assert done.returncode != 0 and b"Permission denied" in done.stderr


def test_umask(public_mount):
    """umask=M only narrows (issue 8, defect 3): the permission bits become mode & ~M, not
    0777 & ~M as libfuse would set them (which widens tdx_guest and the read-only files)."""
    m = public_mount("-o", "umask=0077,allow_other")
    assert stat.S_IMODE(os.stat(m.mountpoint).st_mode) == 0o700
    for name, (mode, _) in TABLE.items():
        assert stat.S_IMODE(os.stat(m.path(name)).st_mode) == mode & ~0o077, name
    done = as_user(65534, f"cat {m.path('rtmr3')}")
    assert done.returncode != 0 and b"Permission denied" in done.stderr
    # still read-only where the table says so, whatever the mode bits show
    before = state(m)
    log = Rejections(m)
    with pytest.raises(OSError) as exc:
        put(m.path("mrtd"), EXT)
    assert exc.value.errno == errno.EACCES
    log.expect_one("open", "/mrtd", errno.EACCES)
    assert state(m) == before


def test_unknown_mount_option_refused(tmp_path):
    m = Mounted(tmp_path / "mnt", "-o", "nosuchoption")
    try:
        with pytest.raises(RuntimeError) as exc:
            m.start()
    finally:
        m.stop()
    assert "nosuchoption" in str(exc.value)
