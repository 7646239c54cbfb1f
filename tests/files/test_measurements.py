"""The kernel-path rows without a mount: tsm-mr ``measurements/``, ``acpi/CCEL``,
``acpi/data/CCEL`` and ``eventlog``, over a TD from ``in_memory_td(default_profile())``.

Expected values come from hashlib and the reference facts (kernel-files.md: modes, sizes,
sysfs binary-attribute write rules; the CCEL header layout), not from the code under test.
Each refusal is checked for its errno and for leaving the registers and the log unchanged.
"""

import errno
import hashlib
import os
import stat
import struct

import pytest

from tdxfs import linuxabi
from tdxfs.errors import TdxfsError
from tdxfs.files import device
from tdxfs.files.tree import Tree
from tdxfs.model.machine import in_memory_td
from tdxfs.model.profile import default_profile
from tests.files.client import extended, read_all, write

FILES = {  # name -> mode (kernel-files.md)
    "mrtd:sha384": 0o444,
    **{f"rtmr{i}:sha384": 0o644 for i in range(4)},
    "mrconfigid": 0o444,
    "mrowner": 0o444,
    "mrownerconfig": 0o444,
}
DIGEST = hashlib.sha384(b"tdxfs files-layer test").digest()
M = "/measurements"


@pytest.fixture(scope="module")
def profile():
    return default_profile()


@pytest.fixture
def td(profile):
    return in_memory_td(profile)


@pytest.fixture
def tree(td):
    return Tree.for_td(td)


def observed(tree: Tree, td) -> tuple:
    return td.rtmrs(), td.event_log.events(), read_all(tree, "/eventlog"), read_all(tree, "/acpi/data/CCEL")


def refused(tree: Tree, td, err: int, fn) -> str:
    before = observed(tree, td)
    with pytest.raises(TdxfsError) as exc:
        fn()
    assert exc.value.errno == err, exc.value
    assert "\n" not in exc.value.reason and exc.value.reason
    assert observed(tree, td) == before
    return exc.value.reason


# -- measurements/ ----------------------------------------------------------------------------------------


def test_the_rows(tree):
    assert sorted(tree.listdir(M)) == sorted(FILES)
    for name, mode in FILES.items():
        attrs = tree.attrs(f"{M}/{name}")
        assert stat.S_ISREG(attrs["st_mode"]) and stat.S_IMODE(attrs["st_mode"]) == mode, name
        assert attrs["st_size"] == 48


def test_values_are_raw_registers(tree, td, profile):
    td.extend(3, DIGEST)
    for name in FILES:
        reg = name.split(":")[0]
        value = td.rtmr(int(reg[4])) if reg.startswith("rtmr") else profile[reg]
        assert read_all(tree, f"{M}/{name}") == value, name
        assert read_all(tree, f"{M}/{name}", chunk=5) == value, name


def test_a_48_byte_write_extends_and_logs_a_bare_digest(tree, td):
    before, n = td.rtmr(3), len(td.event_log)
    assert write(tree, f"{M}/rtmr3:sha384", DIGEST) == 48
    assert td.rtmr(3) == extended(before, DIGEST)
    assert len(td.event_log) == n + 1
    event = td.event_log.events()[-1]
    assert (event.mr, event.digest, event.data) == (4, DIGEST, b"")
    assert event.event_type == 0xD  # EV_IPL, the runtime default
    assert read_all(tree, "/rtmr3") == extended(before, DIGEST).hex().encode() + b"\n"


def test_longer_write_is_clamped(tree, td):
    before = td.rtmr(2)
    h = tree.open(f"{M}/rtmr2:sha384", os.O_WRONLY)
    try:
        assert h.write(DIGEST + b"\n", 0) == 48
        with pytest.raises(TdxfsError) as exc:
            h.write(b"\n", 48)
        assert exc.value.errno == errno.EFBIG
    finally:
        h.release()
    assert td.rtmr(2) == extended(before, DIGEST)


@pytest.mark.parametrize("data,offset,err", [
    (DIGEST[:47], 0, errno.EINVAL),
    (DIGEST[:1], 0, errno.EINVAL),
    (DIGEST, 1, errno.EINVAL),
    (DIGEST, 47, errno.EINVAL),
    (DIGEST, 48, errno.EFBIG),
    (DIGEST, 4096, errno.EFBIG),
    (b"", 0, errno.EINVAL),
])
def test_refused_writes(tree, td, data, offset, err):
    refused(tree, td, err, lambda: write(tree, f"{M}/rtmr3:sha384", data, offset))


def test_hex_is_not_accepted_but_clamped_as_raw(tree, td):
    """96 hex chars are 96 raw bytes to a binary attribute: the first 48 are extended."""
    text = DIGEST.hex().encode()
    before = td.rtmr(3)
    assert write(tree, f"{M}/rtmr3:sha384", text) == 48
    assert td.rtmr(3) == extended(before, text[:48])


@pytest.mark.parametrize("name", [n for n, mode in FILES.items() if mode == 0o444])
def test_read_only_rows(tree, td, name):
    refused(tree, td, errno.EACCES, lambda: tree.open(f"{M}/{name}", os.O_WRONLY))
    refused(tree, td, errno.EACCES, lambda: tree.truncate(f"{M}/{name}", 0))


def test_truncate_to_zero_is_no_write(tree, td):
    before = observed(tree, td)
    tree.truncate(f"{M}/rtmr3:sha384", 0)
    write_h = tree.open(f"{M}/rtmr3:sha384", os.O_WRONLY | os.O_TRUNC)
    write_h.release()
    assert observed(tree, td) == before


# -- acpi/ --------------------------------------------------------------------------------------------------


def test_acpi_rows(tree, td):
    table = read_all(tree, "/acpi/CCEL")
    data = read_all(tree, "/acpi/data/CCEL")
    for path, content in (("/acpi/CCEL", table), ("/acpi/data/CCEL", data)):
        attrs = tree.attrs(path)
        assert stat.S_IMODE(attrs["st_mode"]) == 0o400, path
        assert attrs["st_size"] == len(content), path
    # ACPI header (36 bytes) then CC type, subtype, reserved, LAML, LASA
    assert table[:4] == b"CCEL" and struct.unpack_from("<I", table, 4)[0] == len(table) == 56
    assert sum(table) % 256 == 0
    cc_type, _, _, laml, _ = struct.unpack_from("<BBHQQ", table, 36)
    assert cc_type == 2 and laml == len(data)
    assert data.endswith(b"\xff" * 8)
    refused(tree, td, errno.EACCES, lambda: tree.open("/acpi/CCEL", os.O_WRONLY))
    refused(tree, td, errno.EACCES, lambda: tree.open("/acpi/data/CCEL", os.O_RDWR))


def test_acpi_data_grows_with_extends_and_reads_are_snapshots(tree, td):
    h = tree.open("/acpi/data/CCEL", os.O_RDONLY)
    try:
        first = h.read(100, 0)
        before = read_all(tree, "/acpi/data/CCEL")
        td.extend(3, DIGEST, 0x6, b"x" * 65536)  # fills the 64 KiB area: LAML grows
        rest = h.read(1 << 20, 100)
        assert first + rest == before  # continued from the snapshot taken at offset 0
        after = h.read(1 << 20, 0)  # a read at offset 0 takes a new one
    finally:
        h.release()
    assert len(after) > len(before) and DIGEST in after and DIGEST not in before
    assert tree.attrs("/acpi/data/CCEL")["st_size"] == len(after)
    table = read_all(tree, "/acpi/CCEL")
    assert struct.unpack_from("<Q", table, 40)[0] == len(after) and sum(table) % 256 == 0


# -- eventlog -------------------------------------------------------------------------------------------------


def record(rtmr="3", etype="EV_EVENT_TAG", digest=DIGEST.hex(), data=None) -> bytes:
    fields = [rtmr, etype, digest] + ([data] if data is not None else [])
    return (" ".join(fields) + "\n").encode()


def test_eventlog_row(tree, td):
    attrs = tree.attrs("/eventlog")
    assert stat.S_IMODE(attrs["st_mode"]) == 0o644
    text = read_all(tree, "/eventlog")
    assert attrs["st_size"] == len(text)
    lines = text.decode().splitlines()
    assert len(lines) == len(td.event_log)
    assert lines[0].split()[:2] == ["0", "mrtd"]


@pytest.mark.parametrize("etype,value", [("EV_EVENT_TAG", 6), ("ev_ipl", 0xD), ("13", 13), ("0x80000003", 0x80000003)])
def test_eventlog_write_extends_with_the_event(tree, td, etype, value):
    before = td.rtmr(3)
    line = record(etype=etype, data=b"hello\x00".hex())
    assert write(tree, "/eventlog", line) == len(line)
    assert td.rtmr(3) == extended(before, DIGEST)
    event = td.event_log.events()[-1]
    assert (event.mr, event.event_type, event.digest, event.data) == (4, value, DIGEST, b"hello\x00")
    last = read_all(tree, "/eventlog").decode().splitlines()[-1]
    assert last.split()[1:3] == ["rtmr3", DIGEST.hex()]
    assert last.endswith(" hello\\x00")


def test_eventlog_forms(tree, td):
    for line in (b"rtmr1\tEV_IPL\t" + DIGEST.hex().upper().encode() + b"\r\n",
                 b"  0 EV_IPL " + DIGEST.hex().encode() + b"  \n"):
        n = len(td.event_log)
        assert write(tree, "/eventlog", line) == len(line)
        assert len(td.event_log) == n + 1 and td.event_log.events()[-1].data == b""


def test_eventlog_append_fd(tree, td):
    h = tree.open("/eventlog", os.O_WRONLY | os.O_APPEND)
    try:
        n = len(td.event_log)
        h.write(record(), 1234)
        h.write(record(rtmr="2"), 5678)
    finally:
        h.release()
    assert [e.mr for e in td.event_log.events()[n:]] == [4, 3]


BAD_RECORDS = {
    "no-newline": record()[:-1],
    "two-lines": record() + record(),
    "two-fields": b"3 EV_IPL\n",
    "five-fields": record(data="00")[:-1] + b" 00\n",
    "rtmr-4": record(rtmr="4"),
    "rtmr-minus": record(rtmr="-1"),
    "rtmr-name": record(rtmr="mrtd"),
    "type-unknown": record(etype="EV_NOPE"),
    "type-no-action": record(etype="EV_NO_ACTION"),
    "digest-short": record(digest=DIGEST.hex()[:94]),
    "digest-long": record(digest=DIGEST.hex() + "00"),
    "digest-not-hex": record(digest="g" * 96),
    "data-odd": record(data="abc"),
    "data-not-hex": record(data="zz"),
    "not-ascii": record(data="\u00e9".encode().hex())[:-1] + "\u00e9\n".encode(),
    "empty-line": b"\n",
    "data-too-big": record(data="00" * (64 * 1024 + 1)),
}


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_eventlog_malformed_is_einval(tree, td, name):
    refused(tree, td, errno.EINVAL, lambda: write(tree, "/eventlog", BAD_RECORDS[name]))


def test_eventlog_second_write_on_one_fd_is_einval(tree, td):
    h = tree.open("/eventlog", os.O_WRONLY)
    try:
        line = record()
        assert h.write(line, 0) == len(line)
        refused(tree, td, errno.EINVAL, lambda: h.write(line, len(line)))
    finally:
        h.release()


# -- one log of every interface ------------------------------------------------------------------------------


def test_every_interface_logs_in_order(tree, td):
    n = len(td.event_log)
    digests = [hashlib.sha384(bytes([i])).digest() for i in range(4)]
    write(tree, "/rtmr3", digests[0].hex().encode() + b"\n")
    write(tree, f"{M}/rtmr3:sha384", digests[1])
    device.serve(td, linuxabi.TDX_CMD_EXTEND_RTMR, linuxabi.EXTEND_REQ.pack(digests[2], 3))
    write(tree, "/eventlog", record(digest=digests[3].hex(), data="6869"))
    new = td.event_log.events()[n:]
    assert [e.digest for e in new] == digests
    assert [e.data for e in new] == [b"", b"", b"", b"hi"]
    regs = {f"rtmr{i}": bytes(48) for i in range(4)}
    for e in td.event_log.events():
        if e.mr:
            regs[f"rtmr{e.mr - 1}"] = extended(regs[f"rtmr{e.mr - 1}"], e.digest)
    assert tuple(regs[f"rtmr{i}"] for i in range(4)) == td.rtmrs()
