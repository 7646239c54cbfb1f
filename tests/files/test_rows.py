"""The root files without a mount: ``reportdata``, ``tdreport``, ``rtmr0``..``rtmr3``, the
static registers, ``tdx_guest`` and ``.stats``, driven through ``Tree`` as the front ends
drive it (open, read, write, truncate, ioctl, release).

Expected values come from hashlib, the TDREPORT layout and the ioctl numbers of the
reference facts (tdx-abi.md), and the README's table of files, not from the code under
test. Every refusal is checked for its errno, a one-line reason, and a TD left as it was.
"""

import errno
import hashlib
import json
import os
import stat
import struct

import pytest

from tdxfs.errors import TdxfsError
from tdxfs.files import device
from tdxfs.files.tree import Tree
from tdxfs.model.profile import default_profile
from tdxfs.model.td import Platform, TrustDomain
from tests.files.client import extended, opened, read_all, read_handle, write

NONCE = bytes(range(0x40, 0x80))
OTHER = bytes(range(0x80, 0xC0))
DIGEST = hashlib.sha384(b"tdxfs root rows").digest()
REPORTDATA_AT = slice(128, 192)  # TDREPORT: REPORTMACSTRUCT's REPORTDATA
MAC_AT = slice(224, 256)


def rtmr_at(index: int) -> slice:  # TDINFO_STRUCT: RTMR0..3 at 720, 768, 816, 864
    return slice(720 + 48 * index, 768 + 48 * index)


GET_REPORT0 = 0xC4405401
VERIFY_REPORT = 0xC1085402
EXTEND_RTMR = 0x40315403
DCAP_EXTEND_RTMR = 0x80315403
UNMERGED_GET_QUOTE = 0x80105402
TCGETS = 0x5401

MODES = {  # README, "The files"
    "reportdata": 0o644, "tdreport": 0o644, **{f"rtmr{i}": 0o644 for i in range(4)},
    "mrtd": 0o444, "mrconfigid": 0o444, "mrowner": 0o444, "mrownerconfig": 0o444,
    "tdx_guest": 0o600, ".stats": 0o444, "eventlog": 0o644,
}
SIZES = {"reportdata": 129, "tdreport": 1024, **{f"rtmr{i}": 97 for i in range(4)},
         "mrtd": 97, "mrconfigid": 97, "mrowner": 97, "mrownerconfig": 97, "tdx_guest": 0, ".stats": 4096}
STATIC = ("mrtd", "mrconfigid", "mrowner", "mrownerconfig")


def line(value: bytes) -> bytes:
    return value.hex().encode() + b"\n"


def state(td) -> tuple:
    return td.reportdata, td.rtmrs(), td.event_log.events()


def refused(td, err: int, fn, *args) -> TdxfsError:
    before = state(td)
    with pytest.raises(TdxfsError) as exc:
        fn(*args)
    assert exc.value.errno == err, exc.value
    assert exc.value.reason and "\n" not in exc.value.reason
    assert state(td) == before
    return exc.value


# -- the rows -------------------------------------------------------------------------------------


def test_the_root_holds_the_readme_files(tree):
    names = list(tree.listdir("/"))
    assert set(MODES) <= set(names)
    assert {"tsm", "measurements", "acpi"} <= set(names)
    assert len(names) == len(set(names))
    for name, mode in MODES.items():
        attrs = tree.attrs(f"/{name}")
        assert stat.S_ISREG(attrs["st_mode"]) and stat.S_IMODE(attrs["st_mode"]) == mode, name
        assert attrs["st_nlink"] == 1
    for name, size in SIZES.items():
        assert tree.attrs(f"/{name}")["st_size"] == size, name


def test_every_value_file_reads_what_its_size_says(tree):
    for name, size in SIZES.items():
        if name not in ("tdx_guest", ".stats"):  # no read; a varying text sized as sysfs does
            assert len(read_all(tree, f"/{name}")) == size, name


# -- format: hex lines of the model's values --------------------------------------------------------


def test_registers_read_as_lowercase_hex_lines(tree, td):
    td.extend(2, DIGEST)
    profile = default_profile()
    for i in range(4):
        assert read_all(tree, f"/rtmr{i}") == line(td.rtmr(i))
    assert td.rtmr(2) != bytes(48)
    for name in STATIC:
        assert read_all(tree, f"/{name}") == line(profile[name])
    assert read_all(tree, "/reportdata") == line(bytes(64))


# -- parse: raw bytes or hex, one whole value --------------------------------------------------------


@pytest.mark.parametrize("form", ["raw", "hex", "HEX", "hex-newline", "hex-spaces", "hex-crlf-tabs"])
def test_reportdata_takes_raw_or_hex(tree, td, form):
    data = {
        "raw": NONCE,
        "hex": NONCE.hex().encode(),
        "HEX": NONCE.hex().upper().encode(),
        "hex-newline": NONCE.hex().encode() + b"\n",
        "hex-spaces": b"   " + NONCE.hex().encode() + b"  ",
        "hex-crlf-tabs": b"\t" + NONCE.hex().encode() + b"\r\n",
    }[form]
    assert write(tree, "/reportdata", data) == len(data)
    assert td.reportdata == NONCE
    assert read_all(tree, "/reportdata") == line(NONCE)


def test_a_raw_length_write_is_raw_even_when_it_looks_like_hex(tree, td):
    """64 bytes are the raw value: 64 hex digits are not half a value."""
    looks_hex = NONCE.hex()[:64].encode()
    write(tree, "/reportdata", looks_hex)
    assert td.reportdata == looks_hex
    before = td.rtmr(1)
    write(tree, "/rtmr1", DIGEST.hex()[:48].encode())
    assert td.rtmr(1) == extended(before, DIGEST.hex()[:48].encode())


def test_a_raw_value_is_kept_byte_for_byte_whitespace_included(tree, td):
    raw = b"\n" + bytes(range(0x20, 0x5D)) + b" \t"
    assert len(raw) == 64
    write(tree, "/reportdata", raw)
    assert td.reportdata == raw


@pytest.mark.parametrize("form", ["raw", "hex", "hex-newline"])
def test_rtmr_write_extends(tree, td, form):
    data = {"raw": DIGEST, "hex": DIGEST.hex().encode(), "hex-newline": line(DIGEST)}[form]
    before = td.rtmr(3)
    n = len(td.event_log)
    assert write(tree, "/rtmr3", data) == len(data)
    assert td.rtmr(3) == extended(before, DIGEST)
    assert len(td.event_log) == n + 1 and td.event_log.events()[-1].digest == DIGEST
    assert read_all(tree, "/rtmr3") == line(td.rtmr(3))


BAD_VALUES = {  # (file, data, what the reason names)
    "reportdata-63-raw": ("reportdata", NONCE[:63], "64 raw bytes or 128 hex chars"),
    "reportdata-65-raw": ("reportdata", NONCE + b"\0", "64 raw bytes or 128 hex chars"),
    "reportdata-127-hex": ("reportdata", NONCE.hex()[:127].encode(), "64 raw bytes or 128 hex chars"),
    "reportdata-130-hex": ("reportdata", NONCE.hex().encode() + b"00", "64 raw bytes or 128 hex chars"),
    "reportdata-empty": ("reportdata", b"", "got 0 bytes"),
    "reportdata-not-hex": ("reportdata", b"g" * 128, "not all hex digits"),
    "reportdata-0x-prefix": ("reportdata", b"0x" + NONCE.hex().encode()[2:], "not all hex digits"),
    "reportdata-inner-space": ("reportdata", NONCE.hex().encode()[:64] + b" " + NONCE.hex().encode()[64:],
                               "64 raw bytes or 128 hex chars"),
    "rtmr-47-raw": ("rtmr2", DIGEST[:47], "48 raw bytes or 96 hex chars"),
    "rtmr-49-raw": ("rtmr2", DIGEST + b"\0", "48 raw bytes or 96 hex chars"),
    "rtmr-95-hex": ("rtmr2", DIGEST.hex()[:95].encode(), "48 raw bytes or 96 hex chars"),
    "rtmr-not-hex": ("rtmr2", b"z" * 96, "not all hex digits"),
    "rtmr-two-values": ("rtmr2", line(DIGEST) * 2, "48 raw bytes or 96 hex chars"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_a_malformed_value_is_einval_and_changes_nothing(tree, td, case):
    name, data, says = BAD_VALUES[case]
    exc = refused(td, errno.EINVAL, write, tree, f"/{name}", data)
    assert says in exc.reason and name in exc.reason


def test_an_rtmr_index_the_driver_does_not_have_is_not_a_file(tree):
    with pytest.raises(TdxfsError) as exc:
        tree.attrs("/rtmr4")
    assert exc.value.errno == errno.ENOENT


def test_a_value_is_written_whole_at_offset_0(tree, td):
    exc = refused(td, errno.EINVAL, write, tree, "/rtmr3", DIGEST, 48)
    assert "offset 48" in exc.reason
    with opened(tree, "/rtmr3", os.O_WRONLY) as h:
        h.write(DIGEST, 0)
        after = td.rtmr(3)
        refused(td, errno.EINVAL, h.write, DIGEST, 48)  # a second write continuing on the fd
        assert td.rtmr(3) == after


@pytest.mark.parametrize("name", ["reportdata", "rtmr0", "tdreport"])
def test_o_append_on_a_value_is_einval(tree, td, name):
    refused(td, errno.EINVAL, tree.open, f"/{name}", os.O_RDWR | os.O_APPEND)
    tree.open(f"/{name}", os.O_RDONLY | os.O_APPEND).release()  # reading: nothing to append


@pytest.mark.parametrize("name", [*STATIC, ".stats"])
def test_read_only_files_refuse_writers_even_root(tree, td, name):
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        exc = refused(td, errno.EACCES, tree.open, f"/{name}", flags)
        assert exc.reason == f"{name} is read-only"
    refused(td, errno.EACCES, tree.truncate, f"/{name}", 0)


@pytest.mark.parametrize("name", ["reportdata", "rtmr1", "tdreport", "eventlog"])
def test_truncate_to_zero_is_a_no_op_and_to_more_is_einval(tree, td, name):
    before = state(td)
    tree.truncate(f"/{name}", 0)
    tree.open(f"/{name}", os.O_RDWR | os.O_TRUNC).release()
    assert state(td) == before
    exc = refused(td, errno.EINVAL, tree.truncate, f"/{name}", 5)
    assert "truncate to 5" in exc.reason


# -- the snapshot rule ---------------------------------------------------------------------------------


def test_offset_0_takes_a_snapshot_and_later_offsets_continue_it(tree, td):
    with opened(tree, "/rtmr3", os.O_RDONLY) as h:
        old = line(td.rtmr(3))
        assert h.read(10, 0) == old[:10]
        td.extend(3, DIGEST)
        assert h.read(4096, 10) == old[10:]  # the snapshot taken at offset 0
        new = line(td.rtmr(3))
        assert new != old
        assert h.read(4096, 0) == new  # a rewind sees the current value


def test_the_first_read_takes_the_snapshot_at_any_offset(tree, td):
    with opened(tree, "/rtmr0", os.O_RDONLY) as h:
        old = line(td.rtmr(0))
        assert h.read(10, 50) == old[50:60]
        td.extend(0, DIGEST)
        assert h.read(4096, 60) == old[60:]


def test_a_report_read_in_pieces_is_one_report(tree, td):
    """An extend between the pieces of one read loop never tears the report."""
    with opened(tree, "/tdreport", os.O_RDONLY) as h:
        pieces = [h.read(100, 0)]
        td.extend(3, DIGEST)
        offset = 100
        while piece := h.read(100, offset):
            pieces.append(piece)
            offset += len(piece)
    report = b"".join(pieces)
    assert len(report) == 1024
    assert report[rtmr_at(3)] != td.rtmr(3)  # all from before the extend
    assert td.verify_report(report).ok
    assert read_all(tree, "/tdreport")[rtmr_at(3)] == td.rtmr(3)


def test_a_write_drops_the_fds_snapshot(tree, td):
    with opened(tree, "/reportdata", os.O_RDWR) as h:
        assert h.read(4096, 0) == line(bytes(64))
        h.write(NONCE, 0)
        assert h.read(4096, 5) == line(NONCE)[5:]  # no snapshot after a write: a new one


def test_each_fd_has_its_own_snapshot(tree, td):
    with opened(tree, "/rtmr2", os.O_RDONLY) as a, opened(tree, "/rtmr2", os.O_RDONLY) as b:
        old = line(td.rtmr(2))
        a.read(1, 0)
        td.extend(2, DIGEST)
        b.read(1, 0)
        assert a.read(4096, 1) == old[1:]
        assert b.read(4096, 1) == line(td.rtmr(2))[1:]


# -- tdreport: the per-fd transaction ----------------------------------------------------------------


def test_tdreport_reads_the_shared_reportdata(tree, td):
    write(tree, "/reportdata", NONCE)
    report = read_all(tree, "/tdreport")
    assert len(report) == 1024 and report[REPORTDATA_AT] == NONCE
    assert report[rtmr_at(3)] == td.rtmr(3)
    assert td.verify_report(report).ok


@pytest.mark.parametrize("form", ["raw", "hex-newline"])
def test_a_write_on_an_o_rdwr_fd_is_for_that_fd_only(tree, td, form):
    write(tree, "/reportdata", OTHER)
    data = NONCE if form == "raw" else line(NONCE)
    with opened(tree, "/tdreport", os.O_RDWR) as mine:
        assert mine.read(1024, 0)[REPORTDATA_AT] == OTHER  # before a write: the shared value
        assert mine.write(data, 0) == len(data)
        report = read_handle(mine, 300)
        assert report[REPORTDATA_AT] == NONCE and td.verify_report(report).ok
        assert td.reportdata == OTHER  # nothing shared changed
        assert read_all(tree, "/tdreport")[REPORTDATA_AT] == OTHER  # another fd: the shared value
        td.extend(3, DIGEST)
        again = mine.read(1024, 0)  # a fresh snapshot keeps this fd's REPORTDATA
        assert again[REPORTDATA_AT] == NONCE and again[rtmr_at(3)] == td.rtmr(3)


def test_two_transactions_never_mix(tree, td):
    with opened(tree, "/tdreport", os.O_RDWR) as a, opened(tree, "/tdreport", os.O_RDWR) as b:
        a.write(NONCE, 0)
        b.write(OTHER, 0)
        assert a.read(1024, 0)[REPORTDATA_AT] == NONCE
        assert b.read(1024, 0)[REPORTDATA_AT] == OTHER
        a.write(OTHER.hex().encode(), 0)  # a later write replaces this fd's value
        assert a.read(1024, 0)[REPORTDATA_AT] == OTHER


def test_tdreport_write_only_is_refused(tree, td):
    exc = refused(td, errno.EINVAL, tree.open, "/tdreport", os.O_WRONLY)
    assert "O_RDWR" in exc.reason


def test_tdreport_bad_values_are_einval_and_keep_the_fds_value(tree, td):
    with opened(tree, "/tdreport", os.O_RDWR) as h:
        h.write(NONCE, 0)
        for bad in (NONCE[:63], b"x" * 128, b""):
            exc = refused(td, errno.EINVAL, h.write, bad, 0)
            assert "tdreport" in exc.reason
        refused(td, errno.EINVAL, h.write, OTHER, 1)
        assert h.read(1024, 0)[REPORTDATA_AT] == NONCE


# -- tdx_guest: the ioctl command table ----------------------------------------------------------------


@pytest.fixture
def dev(tree):
    with opened(tree, "/tdx_guest", os.O_RDWR) as h:
        yield h


def test_the_command_table_is_the_drivers(td):
    assert set(device.COMMANDS) == {GET_REPORT0, VERIFY_REPORT, EXTEND_RTMR}


def test_get_report0(tree, td, dev):
    reply = dev.ioctl(GET_REPORT0, NONCE + bytes(1024))
    assert len(reply) == 1088 and reply[:64] == NONCE
    report = reply[64:]
    assert report[REPORTDATA_AT] == NONCE and report[rtmr_at(2)] == td.rtmr(2)
    assert td.verify_report(report).ok
    # the same model call as the files: the one-fd transaction gives the same report
    with opened(tree, "/tdreport", os.O_RDWR) as h:
        h.write(NONCE, 0)
        assert h.read(1024, 0) == report


@pytest.mark.parametrize("index", [2, 3])
def test_extend_rtmr_2_and_3(td, dev, index):
    before = td.rtmr(index)
    assert dev.ioctl(EXTEND_RTMR, DIGEST + bytes([index])) == b""
    assert td.rtmr(index) == extended(before, DIGEST)
    assert td.event_log.events()[-1].digest == DIGEST and td.event_log.events()[-1].mr == index + 1


@pytest.mark.parametrize("index,err", [(0, errno.EPERM), (1, errno.EPERM), (4, errno.EINVAL), (255, errno.EINVAL)])
def test_extend_rtmr_policy(td, dev, index, err):
    refused(td, err, dev.ioctl, EXTEND_RTMR, DIGEST + bytes([index]))


def test_verify_report(td, dev):
    report = td.report(NONCE)
    reportmac = report[:256]
    reply = dev.ioctl(VERIFY_REPORT, reportmac + bytes(8))
    assert reply == reportmac + struct.pack("<Q", 0)
    tampered = bytearray(reportmac)
    tampered[REPORTDATA_AT.start] ^= 1  # the MAC covers REPORTDATA
    refused(td, errno.EIO, dev.ioctl, VERIFY_REPORT, bytes(tampered) + bytes(8))
    bad_mac = bytearray(reportmac)
    bad_mac[MAC_AT.start] ^= 1
    refused(td, errno.EIO, dev.ioctl, VERIFY_REPORT, bytes(bad_mac) + bytes(8))


def test_verify_report_of_another_platform_is_eio(td, dev):
    elsewhere = TrustDomain(Platform(bytes(range(1, 33))), default_profile())
    refused(td, errno.EIO, dev.ioctl, VERIFY_REPORT, elsewhere.report(NONCE)[:256] + bytes(8))


@pytest.mark.parametrize("cmd", [0xC0105499, 0x5402, 0x40045401, 0])
def test_an_unknown_command_is_enotty(td, dev, cmd):
    exc = refused(td, errno.ENOTTY, dev.ioctl, cmd, bytes((cmd >> 16) & 0x3FFF))
    assert f"{cmd:#010x}" in exc.reason and not exc.probe


def test_tcgets_is_an_unlogged_probe(td, dev):
    exc = refused(td, errno.ENOTTY, dev.ioctl, TCGETS, b"")
    assert exc.probe


@pytest.mark.parametrize("cmd,named", [(DCAP_EXTEND_RTMR, "0x80315403"), (UNMERGED_GET_QUOTE, "0x80105402")])
def test_unservable_commands_are_named(td, dev, cmd, named):
    exc = refused(td, errno.ENOTTY, dev.ioctl, cmd, bytes((cmd >> 16) & 0x3FFF))
    assert named in exc.reason and "use " in exc.reason and not exc.probe
    assert set(device.UNSERVABLE) == {DCAP_EXTEND_RTMR, UNMERGED_GET_QUOTE}


def test_tdx_guest_has_no_read_or_write(tree, td, dev):
    assert "ioctl" in refused(td, errno.EINVAL, dev.read, 4096, 0).reason
    assert "ioctl" in refused(td, errno.EINVAL, dev.write, DIGEST, 0).reason
    refused(td, errno.EINVAL, tree.truncate, "/tdx_guest", 0)
    for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR | os.O_APPEND):  # the mode is all opening checks
        tree.open("/tdx_guest", flags).release()


@pytest.mark.parametrize("name", ["rtmr0", "reportdata", "tdreport", ".stats", "eventlog"])
def test_other_files_take_no_ioctl(tree, td, name):
    with opened(tree, f"/{name}", os.O_RDONLY) as h:
        assert not refused(td, errno.ENOTTY, h.ioctl, GET_REPORT0, NONCE + bytes(1024)).probe
        assert refused(td, errno.ENOTTY, h.ioctl, TCGETS, b"").probe


# -- .stats ----------------------------------------------------------------------------------------------


def stats(tree) -> dict:
    return json.loads(read_all(tree, "/.stats"))


def test_stats_shows_the_server_and_the_counters(td):
    tree = Tree.for_td(td, {"binding": "test", "libfuse": "none"})
    assert stats(tree) == {"server": {"binding": "test", "libfuse": "none"},
                           "requests": {"total": 0, "by_op": {}, "by_kind": {}, "by_op_and_kind": {}}}
    for op, path in [("getattr", "/rtmr0"), ("read", "/rtmr3"), ("read", "/rtmr3"), ("open", "/.stats"),
                     ("getattr", "/nope"), ("mkdir", "/tsm/report/new"), ("ioctl", "/tdx_guest"),
                     ("read", "/measurements/rtmr0:sha384"), ("read", "/acpi/data/CCEL"), ("getattr", "/")]:
        tree.requests.count(op, tree.kind(path))
    req = stats(tree)["requests"]
    assert req["total"] == 10
    assert req["by_op"] == {"getattr": 3, "ioctl": 1, "mkdir": 1, "open": 1, "read": 4}
    assert req["by_kind"] == {".stats": 1, "acpi": 1, "dir": 1, "measurements": 1, "missing": 1, "rtmr": 3,
                              "tdx_guest": 1, "tsm-dir": 1}
    assert req["by_op_and_kind"]["read rtmr"] == 2 and req["by_op_and_kind"]["mkdir tsm-dir"] == 1


def test_stats_reads_are_snapshots(tree):
    with opened(tree, "/.stats", os.O_RDONLY) as h:
        first = h.read(20, 0)
        tree.requests.count("read", "rtmr")
        old_rest = h.read(1 << 16, 20)
        assert json.loads(first + old_rest)["requests"]["total"] == 0
        assert json.loads(h.read(1 << 16, 0))["requests"]["total"] == 1


def test_kinds_of_the_root_rows(tree):
    kinds = {name: tree.kind(f"/{name}") for name in MODES}
    assert kinds == {"reportdata": "reportdata", "tdreport": "tdreport", **{f"rtmr{i}": "rtmr" for i in range(4)},
                     "mrtd": "mrtd", "mrconfigid": "mrconfigid", "mrowner": "mrowner",
                     "mrownerconfig": "mrownerconfig", "tdx_guest": "tdx_guest", ".stats": ".stats",
                     "eventlog": "eventlog"}
