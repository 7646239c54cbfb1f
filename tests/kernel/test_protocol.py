"""The kernel transport's protocol layer, driven with recorded and constructed request
bytes and no mount (issue 10, section 1)."""

import errno
import logging
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import threading

import pytest

from tdxfs.files.nodes import Handle
from tdxfs.files.tree import Tree
from tdxfs.model.profile import default_profile
from tdxfs.model.td import Platform, TrustDomain
from tdxfs.server.kernel import protocol as P
from tdxfs.server.kernel.dispatch import Dispatcher
from tdxfs.server.kernel.session import BUFFER_SIZE, Session, split_options
from tests.files.client import FakeQE
from tests.kernel import fakekernel as K
from tests.kernel.fakekernel import FakeKernel

GET_REPORT0 = 0xC4405401  # _IOWR('T', 1, 1088)
EXTEND_RTMR = 0x40315403  # _IOW('T', 3, 49)
DCAP_EXTEND_RTMR = 0x80315403  # _IOR: no input bytes through FUSE
TCGETS = 0x5401
NONCE = bytes(range(0x40, 0x80))
HEADER_FILE = "/usr/include/linux/fuse.h"

# Recorded on this machine kind (kernel 6.18, FUSE 7.45): the kernel's INIT, then what
# Python's open(MNT/rtmr0).read(5) and close() sent (GETATTR of the root, LOOKUP rtmr0,
# OPEN, the TCGETS of isatty, READ of 4096 bytes, RELEASE).
RECORDED = [bytes.fromhex(line) for line in """
680000001a0000000200000000000000000000000000000000000000000000000000000000000000070000002d00000000000200fbffff73fd0500000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
3800000003000000040000000000000001000000000000000000000000000000665200000000000000000000000000000000000000000000
2e00000001000000060000000000000001000000000000000000000000000000665200000000000072746d723000
300000000e00000008000000000000000200000000000000000000000000000066520000000000000080000000000000
48000000270000000a0000000000000002000000000000000000000000000000665200000000000001000000000000000000000001540000d09f1673fd7f00000000000000000000
500000000f0000000c00000000000000020000000000000000000000000000006652000000000000010000000000000000000000000000000010000002000000faf8ec8b7b87d1b60080000000000000
40000000120000000e00000000000000020000000000000000000000000000000000000000000000010000000000000000800000000000000000000000000000
""".split()]


@pytest.fixture
def tree():
    return Tree.for_td(TrustDomain(Platform(bytes(range(32))), default_profile(), qe=FakeQE()))


@pytest.fixture
def kernel(tree):
    k = FakeKernel(Dispatcher(tree, owner=(0, 0)))
    k.init()
    return k


def counts(tree) -> dict:
    return tree.requests.snapshot()["by_op_and_kind"]


def warnings(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- the structs are the kernel's -------------------------------------------------------------


def _offsets(wire) -> list:
    """Each field's offset, from the struct format (no padding: native sizes, '<')."""
    out, at = [], 0
    for n, code in re.findall(r"(\d*)([a-zA-Z])", wire.format):
        size = struct.calcsize("<" + code)
        for _ in range(int(n or 1)):
            out.append(at)
            at += size
    return out


@pytest.mark.skipif(not (shutil.which("gcc") and os.path.exists(HEADER_FILE)),
                    reason="needs gcc and the kernel's uapi headers")
def test_rows_match_the_kernel_header(tmp_path):
    """sizeof and offsetof of every row, and the value of every opcode and flag, as the C
    compiler reads include/uapi/linux/fuse.h."""
    lines = []
    for wire in P.WIRES:
        cname = wire.name.split()[0]
        lines.append(f'printf("sizeof {wire.name} %zu\\n", sizeof(struct {cname}));')
        for field in wire.fields:
            lines.append(f'printf("offset {wire.name} {field} %zu\\n", offsetof(struct {cname}, {field}));')
    names = [n for n in dir(P) if re.match(r"^(FUSE_|FOPEN_|FATTR_)[A-Z0-9_]+$", n) and n not in ("FUSE_INT_REQ_BIT",)]
    for n in names:
        lines.append(f'printf("value {n} %llu\\n", (unsigned long long)({n}));')
    for op in P.Opcode:
        lines.append(f'printf("value FUSE_{op.name} %llu\\n", (unsigned long long)(FUSE_{op.name}));')
    src = tmp_path / "h.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <linux/fuse.h>\nint main(void){\n"
                   + "\n".join(lines) + "\nreturn 0;}\n")
    exe = tmp_path / "h"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True, capture_output=True, timeout=60)
    facts = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.rpartition(" ")
        facts[key] = int(value)
    for wire in P.WIRES:
        assert facts[f"sizeof {wire.name}"] == wire.size == P.SIZES[wire.name.split()[0]], wire
        for field, offset in zip(wire.fields, _offsets(wire)):
            assert facts[f"offset {wire.name} {field}"] == offset, (wire, field)
    for n in names:
        assert facts[f"value {n}"] == getattr(P, n), n
    for op in P.Opcode:
        assert facts[f"value FUSE_{op.name}"] == op, op
    header = open(HEADER_FILE).read()
    minor = int(re.search(r"#define FUSE_KERNEL_MINOR_VERSION (\d+)", header).group(1))
    assert minor >= P.KERNEL_MINOR_VERSION, "the structs here are newer than this machine's header"


def test_the_transport_imports_no_fuse_binding():
    child = textwrap.dedent("""
        import sys
        class NoFuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("fuse", "mfusepy", "fusepy", "pyfuse3", "llfuse"):
                    raise ImportError(name)
        sys.meta_path.insert(0, NoFuse())
        import tdxfs.server.kernel, tdxfs.server.kernel.__main__
        print(" ".join(sorted(m for m in sys.modules if "fuse" in m.lower() and "kernel" not in m)) or "none")
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


# -- INIT -------------------------------------------------------------------------------------------


def init_reply(kernel_reply: bytes) -> dict:
    names = ("major", "minor", "max_readahead", "flags", "max_background", "congestion_threshold", "max_write",
             "time_gran", "max_pages", "map_alignment", "flags2")
    assert len(kernel_reply) == 64
    return dict(zip(names, K.INIT_OUT.unpack(kernel_reply)))


BIG_WRITES, MAX_PAGES, PARALLEL_DIROPS = 1 << 5, 1 << 22, 1 << 18
DO_READDIRPLUS, READDIRPLUS_AUTO, ASYNC_READ, ATOMIC_O_TRUNC, INIT_EXT = 1 << 13, 1 << 14, 1 << 0, 1 << 3, 1 << 30


def test_recorded_init_is_negotiated_down(tree):
    d = Dispatcher(tree, owner=(0, 0))
    out = d.handle(memoryview(RECORDED[0]))
    header, body = b"".join(map(bytes, out))[:16], b"".join(map(bytes, out))[16:]
    assert struct.unpack("<IiQ", header) == (16 + 64, 0, 2)
    r = init_reply(body)
    assert (r["major"], r["minor"]) == (7, 38)  # the kernel offered 7.45
    assert r["flags"] == BIG_WRITES | MAX_PAGES | PARALLEL_DIROPS | DO_READDIRPLUS | READDIRPLUS_AUTO
    assert not r["flags"] & (ASYNC_READ | ATOMIC_O_TRUNC | INIT_EXT) and r["flags2"] == 0
    assert r["max_write"] == 128 * 1024 and r["max_pages"] * os.sysconf("SC_PAGE_SIZE") == 128 * 1024
    assert r["max_readahead"] == 131072  # as offered
    assert d.initialized and d.minor == 38
    assert BUFFER_SIZE >= 40 + 40 + r["max_write"]  # the kernel refuses a smaller read buffer
    assert counts(tree) == {"init dir": 1}
    assert tree.requests.server["protocol"] == "7.38"


def test_init_grants_only_what_the_kernel_offers(tree):
    k = FakeKernel(Dispatcher(tree))
    r = init_reply(k.init(minor=31, flags=BIG_WRITES | ASYNC_READ | MAX_PAGES, flags2=0))
    assert r["minor"] == 31 and r["flags"] == BIG_WRITES | MAX_PAGES


def test_init_of_an_old_or_other_protocol(tree, caplog):
    k = FakeKernel(Dispatcher(tree))
    assert k.error(K.INIT, 0, struct.pack("<IIII", 7, 22, 0, 0)) == errno.EPROTO
    assert any("needs 7.28" in m for m in warnings(caplog))
    assert k.error(K.INIT, 0, struct.pack("<IIII", 6, 40, 0, 0)) == errno.EPROTO
    # a newer major: answer with ours and wait for the kernel's next INIT
    r = init_reply(k.ok(K.INIT, 0, struct.pack("<IIII", 8, 1, 0, 0)))
    assert (r["major"], r["minor"]) == (7, 38) and not k.d.initialized


# -- the recorded client session ----------------------------------------------------------------------


def test_recorded_python_open_read_close(tree, caplog, monkeypatch):
    d = Dispatcher(tree, owner=(0, 0))
    caplog.set_level(logging.DEBUG, "tdxfs")

    def no_handle_ioctl(self, cmd, request):
        raise AssertionError("TCGETS must be answered without asking the handle")

    monkeypatch.setattr(Handle, "ioctl", no_handle_ioctl)
    replies = []
    for raw in RECORDED:
        out = d.handle(memoryview(bytearray(raw)))
        replies.append(None if out is None else b"".join(map(bytes, out)))
    init, getattr_root, lookup, open_, tcgets, read, release = replies
    assert struct.unpack_from("<i", getattr_root, 4)[0] == 0
    assert stat.S_ISDIR(K.attr_of(getattr_root, 16 + 16)["mode"])
    nodeid = struct.unpack_from("<Q", lookup, 16)[0]
    assert nodeid == 2 and K.attr_of(lookup, 16 + 40)["size"] == 97
    fh, flags, _ = struct.unpack_from("<QII", open_, 16)
    assert fh == 1 and flags == K.FOPEN_DIRECT_IO | K.FOPEN_NOFLUSH | K.FOPEN_PARALLEL_DIRECT_WRITES
    assert struct.unpack("<IiQ", tcgets) == (16, -errno.ENOTTY, 10)
    assert struct.unpack_from("<IiQ", read) == (16 + 97, 0, 12)
    assert read[16:] == tree.root.child("rtmr0").show()
    assert struct.unpack("<IiQ", release) == (16, 0, 14)
    assert not [r for r in caplog.records if "ioctl" in r.getMessage() or r.levelno >= logging.WARNING]
    assert counts(tree) == {"init dir": 1, "getattr dir": 1, "getattr rtmr": 1, "open rtmr": 1, "ioctl rtmr": 1,
                            "read rtmr": 1, "release rtmr": 1}


def test_tcgets_on_the_device_node_is_an_unlogged_enotty(kernel, tree, caplog):
    caplog.set_level(logging.DEBUG, "tdxfs")
    node = kernel.walk("tdx_guest")
    fh, _ = kernel.open(node, os.O_RDWR)
    before = len(caplog.records)
    assert kernel.error(K.IOCTL, node, kernel.ioctl_body(fh, TCGETS)) == errno.ENOTTY
    assert caplog.records[before:] == []
    assert counts(tree)["ioctl tdx_guest"] == 1


# -- node ids and lookup counts --------------------------------------------------------------------


def test_lookup_counts_and_forget(kernel, tree):
    a, attrs = kernel.lookup(1, "rtmr3")
    assert attrs["ino"] == a and stat.S_IMODE(attrs["mode"]) == 0o644 and attrs["size"] == 97
    assert kernel.lookup(1, "rtmr3")[0] == a and kernel.lookup(1, "rtmr3")[0] == a  # three lookups, one id
    kernel.forget(a, 2)
    assert kernel.getattr(a)["ino"] == a  # one lookup left: still valid
    kernel.forget(a, 1)
    assert kernel.error(K.GETATTR, a, bytes(16)) == errno.ENOENT  # forgotten
    b, _ = kernel.lookup(1, "rtmr3")
    assert b > a  # ids are never reused
    c, _ = kernel.lookup(1, "measurements")
    m, _ = kernel.lookup(c, "rtmr3:sha384")
    kernel.batch_forget([(b, 1), (m, 1)])
    assert kernel.error(K.GETATTR, b, bytes(16)) == errno.ENOENT
    assert kernel.error(K.GETATTR, m, bytes(16)) == errno.ENOENT
    assert kernel.getattr(c)["ino"] == c
    assert kernel.getattr(1)["ino"] == 1
    kernel.forget(1, 5)
    assert kernel.getattr(1)["ino"] == 1  # the root is never dropped


def test_a_lookup_miss_is_a_debug_line(kernel, tree, caplog):
    assert kernel.error(K.LOOKUP, 1, b"nosuchfile\0") == errno.ENOENT
    assert warnings(caplog) == []
    assert counts(tree)["getattr missing"] == 1


def test_configfs_ids_outlive_their_instance_until_forgotten(kernel, tree):
    report = kernel.walk("tsm/report")
    x = kernel.mkdir(report, "x")
    assert kernel.lookup(report, "x")[0] == x  # the same instance: the same id (two lookups now)
    inblob, _ = kernel.lookup(x, "inblob")
    assert kernel.lookup(x, "inblob")[0] == inblob
    gen, _ = kernel.lookup(x, "generation")
    fh, flags = kernel.open(inblob, os.O_WRONLY)
    assert flags == K.FOPEN_DIRECT_IO | K.FOPEN_PARALLEL_DIRECT_WRITES  # no NOFLUSH: it commits at close
    assert kernel.write(inblob, fh, NONCE) == 64
    kernel.flush(inblob, fh)
    kernel.release(inblob, fh)
    gfh, gflags = kernel.open(gen, os.O_RDONLY)
    assert gflags & K.FOPEN_NOFLUSH
    assert kernel.read(gen, gfh, 4096) == b"1\n"
    kernel.release(gen, gfh)
    late, _ = kernel.open(gen, os.O_RDONLY)  # an fd kept across the rmdir
    assert kernel.ok(K.RMDIR, report, b"x\0") == b""
    assert kernel.getattr(x)["ino"] == x  # removed, not forgotten: the id still answers
    assert kernel.error(K.READ, gen, K.READ_IN.pack(late, 0, 4096, 0, 0, 0, 0)) == errno.ENOENT  # as configfs
    kernel.release(gen, late)
    assert kernel.error(K.LOOKUP, report, b"x\0") == errno.ENOENT
    x2 = kernel.mkdir(report, "x")
    assert x2 != x  # a new instance under the old name
    assert kernel.getattr(x)["ino"] == x
    kernel.forget(x, 2)
    assert kernel.error(K.GETATTR, x, bytes(16)) == errno.ENOENT
    assert kernel.getattr(x2)["ino"] == x2
    c = counts(tree)
    assert c["mkdir tsm-dir"] == 2 and c["rmdir tsm-dir"] == 1 and c["write inblob"] == 1 and c["flush inblob"] == 1


def test_a_lost_reply_takes_its_lookup_back(kernel):
    a, _ = kernel.lookup(1, "rtmr2")
    kernel.lookup(1, "rtmr2")
    kernel.d.reply_lost()  # the second LOOKUP's reply never reached the kernel
    kernel.forget(a, 1)
    assert kernel.error(K.GETATTR, a, bytes(16)) == errno.ENOENT


# -- files ----------------------------------------------------------------------------------------


def test_write_then_read_replies(kernel, tree):
    rd = kernel.walk("reportdata")
    fh, _ = kernel.open(rd, os.O_WRONLY)
    assert kernel.write(rd, fh, NONCE) == 64  # the request buffer is overwritten after: the value must hold
    kernel.release(rd, fh)
    tr = kernel.walk("tdreport")
    fh, _ = kernel.open(tr, os.O_RDONLY)
    report = kernel.read(tr, fh, 131072)
    assert len(report) == 1024 and report[128:192] == NONCE
    assert kernel.read(tr, fh, 100, offset=1000) == report[1000:]  # continues the snapshot
    kernel.release(tr, fh)
    # the one-fd transaction
    fh, _ = kernel.open(tr, os.O_RDWR)
    other = bytes(64)
    assert kernel.write(tr, fh, other.hex().encode()) == 128
    assert kernel.read(tr, fh, 1024)[128:192] == other
    kernel.release(tr, fh)
    assert tree.root.child("reportdata").show() == NONCE.hex().encode() + b"\n"


def test_a_refused_write_is_one_log_line(kernel, caplog):
    node = kernel.walk("rtmr3")
    fh, _ = kernel.open(node, os.O_WRONLY)
    assert kernel.error(K.WRITE, node, K.READ_IN.pack(fh, 0, 8, 0, 0, 0, 0) + b"deadbeef") == errno.EINVAL
    assert warnings(caplog) == ["rejected write /rtmr3: EINVAL (rtmr3 takes 48 raw bytes or 96 hex chars, got 8 bytes)"]
    kernel.release(node, fh)
    mrtd = kernel.walk("mrtd")
    assert kernel.error(K.OPEN, mrtd, struct.pack("<II", os.O_WRONLY, 0)) == errno.EACCES
    assert warnings(caplog)[-1] == "rejected open /mrtd: EACCES (mrtd is read-only)"


def test_unknown_opcodes_are_enosys(kernel, caplog):
    for opcode in (K.FSYNC, K.LSEEK, 5, 47, 50, 51, 4096, 999999):
        assert kernel.error(opcode, 1, bytes(32)) == errno.ENOSYS
    assert warnings(caplog) == []


def test_forget_and_interrupt_get_no_reply(kernel):
    assert kernel.send(K.INTERRUPT, 0, struct.pack("<Q", 7)) is None
    assert kernel.send(K.FORGET, 12345, struct.pack("<Q", 1)) is None  # an unknown id: ignored
    assert kernel.ok(K.DESTROY) == b"" and kernel.d.destroyed


# -- ioctl ---------------------------------------------------------------------------------------------


def test_ioctl_get_report0_and_extend(kernel, tree):
    node = kernel.walk("tdx_guest")
    fh, flags = kernel.open(node, os.O_RDWR)
    assert flags & K.FOPEN_NOFLUSH
    reply = kernel.send(K.IOCTL, node, kernel.ioctl_body(fh, GET_REPORT0, NONCE + bytes(1024), 1088))
    assert reply.error == 0 and len(reply.payload) == 16 + 1088
    assert K.IOCTL_OUT.unpack_from(reply.payload) == (0, 0, 0, 0)
    assert reply.payload[16:80] == NONCE and reply.payload[16 + 64 + 128 : 16 + 64 + 192] == NONCE
    before = tree.root.child("rtmr3").show()
    out = kernel.ok(K.IOCTL, node, kernel.ioctl_body(fh, EXTEND_RTMR, bytes(48) + b"\x03", 0))
    assert out == bytes(16)  # _IOW: nothing copied out
    assert tree.root.child("rtmr3").show() != before


def test_ioctls_a_fuse_file_cannot_serve(kernel, caplog):
    node = kernel.walk("tdx_guest")
    fh, _ = kernel.open(node, os.O_RDWR)
    assert kernel.error(K.IOCTL, node, kernel.ioctl_body(fh, DCAP_EXTEND_RTMR, b"", 49)) == errno.ENOTTY
    assert "rejected ioctl /tdx_guest: ENOTTY (DCAP's _IOR EXTEND_RTMR" in warnings(caplog)[-1]
    assert kernel.error(K.IOCTL, node, kernel.ioctl_body(fh, GET_REPORT0, bytes(1088), 1088,
                                                         flags=K.FUSE_IOCTL_UNRESTRICTED)) == errno.ENOTTY
    assert "unrestricted" in warnings(caplog)[-1]
    dfh = kernel.opendir(1)
    assert kernel.error(K.IOCTL, 1, kernel.ioctl_body(dfh, GET_REPORT0, bytes(1088), 1088,
                                                      flags=K.FUSE_IOCTL_DIR)) == errno.ENOTTY
    assert warnings(caplog)[-1].startswith("rejected ioctl /: ENOTTY (/ is a directory")
    rtmr = kernel.walk("rtmr0")
    rfh, _ = kernel.open(rtmr)
    assert kernel.error(K.IOCTL, rtmr, kernel.ioctl_body(rfh, GET_REPORT0, bytes(1088), 1088)) == errno.ENOTTY
    assert warnings(caplog)[-1].startswith("rejected ioctl /rtmr0: ENOTTY (rtmr0 takes no ioctl")


# -- directories ------------------------------------------------------------------------------------


def test_readdir_pages_through_the_listing(kernel, tree):
    fh = kernel.opendir(1)
    seen, offset = [], 0
    while True:
        page = kernel.readdir(1, fh, offset, size=200)  # a few entries per request
        if not page:
            break
        assert len(page) < 8
        seen += page
        offset = page[-1][2]
    names = [e[0] for e in seen]
    assert names == [".", "..", *tree.root.names()]
    assert [e[2] for e in seen] == list(range(1, len(seen) + 1))
    kinds = {e[0]: e[3] for e in seen}
    assert kinds["tsm"] == stat.S_IFDIR >> 12 and kinds["rtmr0"] == stat.S_IFREG >> 12
    assert kernel.ok(K.RELEASEDIR, 1, struct.pack("<QIIQ", fh, 0, 0, 0)) == b""


def test_readdirplus_counts_a_lookup_per_entry(kernel):
    acpi = kernel.walk("acpi")
    fh = kernel.opendir(acpi)
    page = kernel.readdir(acpi, fh, plus=True)
    assert [(e[0], e[4]) for e in page[:2]] == [(".", 0), ("..", 0)]  # the kernel skips them uncounted
    ids = {e[0]: e[4] for e in page[2:]}
    assert set(ids) == {"CCEL", "data"} and all(ids.values())
    assert all(e[1] == e[4] for e in page[2:])
    assert kernel.lookup(acpi, "CCEL")[0] == ids["CCEL"]  # two lookups now
    kernel.forget(ids["CCEL"], 1)
    assert kernel.getattr(ids["CCEL"])
    kernel.forget(ids["CCEL"], 1)
    assert kernel.error(K.GETATTR, ids["CCEL"], bytes(16)) == errno.ENOENT


def test_namespace_changes_are_refused_and_logged(kernel, caplog):
    assert kernel.error(K.MKDIR, 1, struct.pack("<II", 0o755, 0) + b"a\nb\0") == errno.EPERM
    assert warnings(caplog)[-1] == "rejected mkdir /a\\x0ab: EPERM (entries cannot be created here)"
    assert kernel.error(K.UNLINK, 1, b"rtmr0\0") == errno.EPERM
    assert warnings(caplog)[-1].startswith("rejected unlink /rtmr0: EPERM (unlink is not supported")
    meas = kernel.walk("measurements")
    assert kernel.error(K.RENAME, meas, struct.pack("<Q", 1) + b"rtmr0:sha384\0x\0") == errno.EPERM
    assert warnings(caplog)[-1].startswith("rejected rename /measurements/rtmr0:sha384: EPERM (rename to /x ")
    assert kernel.error(K.SYMLINK, 1, b"ln\0rtmr0\0") == errno.EPERM
    assert warnings(caplog)[-1].startswith("rejected symlink /ln: EPERM")
    assert kernel.error(K.LINK, 1, struct.pack("<Q", meas) + b"hard\0") == errno.EPERM
    assert warnings(caplog)[-1].startswith("rejected link /hard: EPERM")
    report = kernel.walk("tsm/report")
    assert kernel.error(K.CREATE, report, struct.pack("<IIII", os.O_WRONLY, 0o644, 0, 0) + b"f\0") == errno.EACCES
    assert warnings(caplog)[-1].startswith("rejected create /tsm/report/f: EACCES")
    assert kernel.error(K.MKNOD, report, struct.pack("<IIII", stat.S_IFREG | 0o644, 0, 0, 0) + b"f\0") == errno.EACCES
    assert warnings(caplog)[-1].startswith("rejected create /tsm/report/f: EACCES")
    assert kernel.error(K.MKNOD, report, struct.pack("<IIII", stat.S_IFIFO | 0o644, 0, 0, 0) + b"p\0") == errno.EPERM
    assert warnings(caplog)[-1].startswith("rejected mknod /tsm/report/p: EPERM")
    assert kernel.error(K.RMDIR, 1, b"tsm\0") == errno.EPERM


# -- attributes ---------------------------------------------------------------------------------------


def test_setattr_truncate_chmod_and_times(kernel, tree, caplog):
    rd = kernel.walk("reportdata")
    reply = kernel.setattr(rd, K.FATTR_SIZE, size=0)
    assert reply.error == 0 and K.attr_of(reply.payload, 16)["size"] == 129  # the real size stays
    assert kernel.setattr(rd, K.FATTR_SIZE, size=5).error == -errno.EINVAL
    assert warnings(caplog)[-1].startswith("rejected truncate /reportdata: EINVAL (truncate to 5")
    assert kernel.setattr(rd, K.FATTR_MODE, mode=0o600).error == -errno.EPERM
    assert warnings(caplog)[-1].startswith("rejected chmod /reportdata: EPERM")
    reply = kernel.setattr(rd, K.FATTR_ATIME | K.FATTR_MTIME, atime=1000, mtime=2000)
    assert reply.error == 0
    got = K.attr_of(reply.payload, 16)
    assert (got["atime"], got["mtime"]) == (1000, 2000)
    assert kernel.getattr(rd)["mtime"] == 2000 and kernel.getattr(kernel.walk("rtmr0"))["mtime"] != 2000
    c = counts(tree)
    assert c["truncate reportdata"] == 2 and c["chmod reportdata"] == 1 and c["utimens reportdata"] == 1


def test_owner_and_umask_options(tree):
    k = FakeKernel(Dispatcher(tree, owner=(0, 0), uid=1000, gid=100, umask=0o077))
    k.init()
    attrs = k.lookup(1, "rtmr0")[1]
    assert (attrs["uid"], attrs["gid"], stat.S_IMODE(attrs["mode"])) == (1000, 100, 0o600)
    assert stat.S_IMODE(k.lookup(1, "mrtd")[1]["mode"]) == 0o400  # only ever removes bits


def test_xattrs_as_the_adapter_answers(kernel, caplog):
    rtmr = kernel.walk("rtmr0")
    assert kernel.error(K.GETXATTR, rtmr, struct.pack("<II", 0, 0) + b"security.capability\0") == errno.ENODATA
    assert kernel.ok(K.LISTXATTR, rtmr, struct.pack("<II", 0, 0)) == bytes(8)
    assert kernel.ok(K.LISTXATTR, rtmr, struct.pack("<II", 4096, 0)) == b""
    assert warnings(caplog) == []  # a miss is an answer
    assert kernel.error(K.SETXATTR, rtmr, struct.pack("<II", 1, 0) + b"user.a\0x") == errno.EOPNOTSUPP
    assert warnings(caplog)[-1] == f"rejected setxattr /rtmr0: {errno.errorcode[errno.EOPNOTSUPP]} " \
                                   "(extended attributes are not stored (setxattr user.a))"
    inst = kernel.mkdir(kernel.walk("tsm/report"), "y")
    inblob, _ = kernel.lookup(inst, "inblob")
    assert kernel.error(K.GETXATTR, inblob, struct.pack("<II", 0, 0) + b"user.a\0") == errno.EOPNOTSUPP


def test_statfs(kernel):
    out = kernel.ok(K.STATFS, 1)
    blocks, bfree, bavail, files, ffree, bsize, namelen, frsize = struct.unpack_from("<QQQQQIII", out)
    assert len(out) == 80 and (bsize, namelen, frsize) == (4096, 255, 4096)


def test_allow_root_keeps_others_out(tree):
    k = FakeKernel(Dispatcher(tree, owner=(0, 0), allow_root=True))
    k.init()
    node, _ = k.lookup(1, "rtmr0")
    fh, _ = k.open(node)
    assert k.error(K.LOOKUP, 1, b"rtmr1\0", uid=1000) == errno.EACCES
    assert k.error(K.OPEN, node, struct.pack("<II", 0, 0), uid=1000) == errno.EACCES
    assert len(k.ok(K.READ, node, K.READ_IN.pack(fh, 0, 4096, 0, 0, 0, 0), uid=1000)) == 97  # an fd already open
    assert k.lookup(1, "rtmr1")[0]


def test_unknown_options_are_refused():
    from tdxfs.errors import ConfigError

    assert split_options({"uid": "5", "umask": "022", "allow_root": True}) == {
        "dispatch": {"uid": 5, "umask": 0o022, "allow_root": True},
        "mount": {"allow_other": True, "read_only": False, "auto_unmount": False}}
    with pytest.raises(ConfigError, match="max_read"):
        split_options({"max_read": "4096"})


# -- the loop: one read per request, one write per reply ----------------------------------------------


def test_session_reads_and_writes_whole_messages(tree):
    """A SOCK_SEQPACKET socketpair stands for /dev/fuse: each request is one message in,
    each reply must be one message out (one writev), no reply for FORGET."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    d = Dispatcher(tree, owner=(0, 0))
    ready = threading.Event()
    session = Session(theirs.fileno(), d, on_ready=ready.set)
    worker = threading.Thread(target=session.run, daemon=True)
    worker.start()
    try:
        ours.send(RECORDED[0])
        init = ours.recv(1 << 20)
        assert struct.unpack_from("<IiQ", init) == (80, 0, 2)
        assert ready.wait(30)
        for raw in RECORDED[1:4]:  # GETATTR, LOOKUP, OPEN
            ours.send(raw)
            assert struct.unpack_from("<i", ours.recv(1 << 20), 4)[0] == 0
        ours.send(K.IN_HEADER.pack(48, K.FORGET, 100, 2, 0, 0, 0, 0, 0) + struct.pack("<Q", 1))
        big = bytes(range(256)) * 512  # 128 KiB: the largest WRITE allowed
        ours.send(K.IN_HEADER.pack(40 + 40 + len(big), K.WRITE, 102, 2, 0, 0, 0, 0, 0)
                  + K.READ_IN.pack(1, 0, len(big), 0, 0, 0, 0) + big)
        reply = ours.recv(1 << 20)  # the FORGET had no reply: this is the WRITE's
        assert struct.unpack_from("<IiQ", reply) == (16, -errno.EINVAL, 102)  # not an RTMR value
    finally:
        ours.close()
        worker.join(30)
        theirs.close()
    assert not worker.is_alive()


def test_files_whose_size_changes_on_their_own_are_never_cached(kernel):
    """attr_valid per node (docs/reliability.md, fuzzing defect 3): 0 for the files whose size
    changes without a write to them (the event log's views), 1 s for every other node;
    entry_valid is 1 s for all (the fake kernel checks it on every LOOKUP)."""
    volatile = {"eventlog", "acpi/CCEL", "acpi/data/CCEL"}
    for path in ("eventlog", "acpi/CCEL", "acpi/data/CCEL", "rtmr0", "tdreport", "tdx_guest", ".stats",
                 "measurements/rtmr0:sha384", "acpi", "tsm/report"):
        nodeid = kernel.walk(path)
        assert kernel.attr_valid[nodeid] == (0 if path in volatile else 1), path
        kernel.getattr(nodeid)
        assert kernel.attr_valid[nodeid] == (0 if path in volatile else 1), path
