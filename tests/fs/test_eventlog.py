"""The event log through a real mount (issue 7, section 2): ``eventlog`` (text, and records
written to extend), ``acpi/CCEL`` and ``acpi/data/CCEL``, ``tdxfs extend`` and
``tdxfs eventlog replay``.

The server runs in its own process (``Mounted``); this process is only a client: shell
tools, os calls, the ioctl client, the ``tdxfs`` CLI as a subprocess. The CCEL table and
the TCG crypto-agile log are decoded here from the published layouts (ACPI CCEL; TCG PC
Client Platform Firmware Profile: TCG_PCR_EVENT, Spec ID Event03, TCG_PCR_EVENT2) and
replayed with hashlib, never with tdxfs's own decoder.
"""

import errno
import hashlib
import os
import stat
import struct

import pytest

from tdxfs.client.ioctl import TdxGuest
from tests.fsclient import Rejections, put, refused, slurp
from tests.mounting import Mounted, sh, tdxfs_cmd

# -- reference facts --------------------------------------------------------------------------------

RTMR_AT = [720, 768, 816, 864]
MRTD_AT = 528
TPM_ALG_SHA384 = 0x000C
EV_NO_ACTION, EV_IPL, EV_EVENT_TAG = 0x3, 0xD, 0x6
TYPE_NAMES = {EV_IPL: "EV_IPL", EV_EVENT_TAG: "EV_EVENT_TAG"}
DIGEST = hashlib.sha384(b"tdxfs event-log test").digest()


def extended(old: bytes, data: bytes) -> bytes:
    return hashlib.sha384(old + data).digest()


def parse_ccel_table(table: bytes) -> dict:
    signature, length = struct.unpack_from("<4sI", table, 0)
    cc_type, cc_subtype, _, laml, lasa = struct.unpack_from("<BBHQQ", table, 36)
    return {"signature": signature, "length": length, "checksum_ok": sum(table) % 256 == 0,
            "cc_type": cc_type, "laml": laml, "lasa": lasa}


def parse_ccel_data(data: bytes) -> list:
    """[(mr_index, type, sha384 digest, event data)] after the Spec ID header."""
    pcr, etype = struct.unpack_from("<II", data, 0)
    assert (pcr, etype) == (0, EV_NO_ACTION)
    (size,) = struct.unpack_from("<I", data, 28)
    spec = data[32 : 32 + size]
    assert spec[:16] == b"Spec ID Event03\0"
    (count,) = struct.unpack_from("<I", spec, 24)
    sizes = dict(struct.unpack_from("<HH", spec, 28 + 4 * i) for i in range(count))
    assert sizes[TPM_ALG_SHA384] == 48
    pos, events = 32 + size, []
    while pos + 4 <= len(data):
        (mr,) = struct.unpack_from("<I", data, pos)
        if mr == 0xFFFFFFFF:
            break
        etype, ndig = struct.unpack_from("<II", data, pos + 4)
        pos += 12
        digest = None
        for _ in range(ndig):
            (alg,) = struct.unpack_from("<H", data, pos)
            if alg == TPM_ALG_SHA384:
                digest = data[pos + 2 : pos + 2 + 48]
            pos += 2 + sizes[alg]
        (esize,) = struct.unpack_from("<I", data, pos)
        events.append((mr, etype, digest, data[pos + 4 : pos + 4 + esize]))
        pos += 4 + esize
    assert set(data[pos:]) <= {0xFF}, "the rest of the log area is 0xFF"
    return events


def replay(events) -> dict:
    regs = {}
    for mr, etype, digest, _ in events:
        if etype != EV_NO_ACTION:
            regs[mr] = extended(regs.get(mr, bytes(48)), digest)
    return regs


def text_events(m: Mounted) -> list:
    """The text view's lines as (index, register, digest, type name, data text)."""
    out = []
    for line in slurp(m.path("eventlog")).decode("ascii").splitlines():
        parts = line.split(" ", 4)
        out.append((int(parts[0]), parts[1], bytes.fromhex(parts[2]), parts[3], parts[4] if len(parts) == 5 else ""))
    return out


def report(m: Mounted) -> bytes:
    data = slurp(m.path("tdreport"))
    assert len(data) == 1024
    return data


def report_rtmrs(rep: bytes) -> dict:
    return {i + 1: rep[at : at + 48] for i, at in enumerate(RTMR_AT)}


def observed(m: Mounted) -> dict:
    return {"eventlog": slurp(m.path("eventlog")), "ccel": slurp(m.path("acpi/data/CCEL")),
            "table": slurp(m.path("acpi/CCEL")), "tdreport": report(m)}


# -- the tree --------------------------------------------------------------------------------------------


@pytest.mark.shared_mount
def test_the_new_entries(mnt):
    names = os.listdir(mnt.mountpoint)
    assert {"eventlog", "acpi", "measurements"} <= set(names)
    assert sorted(os.listdir(mnt.path("acpi"))) == ["CCEL", "data"]
    assert os.listdir(mnt.path("acpi/data")) == ["CCEL"]
    for path, mode in (("eventlog", 0o644), ("acpi/CCEL", 0o400), ("acpi/data/CCEL", 0o400)):
        st = os.stat(mnt.path(path))
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode, path
        assert st.st_size == len(slurp(mnt.path(path))), path
    for path in ("acpi", "acpi/data"):
        assert stat.S_ISDIR(os.stat(mnt.path(path)).st_mode)


@pytest.mark.shared_mount
def test_ccel_table_and_log_area(mnt):
    table = slurp(mnt.path("acpi/CCEL"))
    data = slurp(mnt.path("acpi/data/CCEL"))
    t = parse_ccel_table(table)
    assert t["signature"] == b"CCEL" and t["length"] == len(table) and t["checksum_ok"]
    assert t["cc_type"] == 2 and t["laml"] == len(data)
    events = parse_ccel_data(data)
    assert events and all(1 <= mr <= 4 for mr, *_ in events)
    assert replay(events) == {k: v for k, v in report_rtmrs(report(mnt)).items() if k in replay(events)}
    assert {1, 2, 3} <= set(replay(events))  # the boot events of RTMR0-2
    # shell tools read them as a guest's sysfs: the signature, and the same bytes in pieces
    assert sh(f"head -c 4 {mnt.path('acpi/CCEL')}", check=True).stdout == b"CCEL"
    assert sh(f"dd if={mnt.path('acpi/data/CCEL')} bs=1000 status=none", check=True).stdout == data
    out = sh(f"xxd -p -c 56 {mnt.path('acpi/CCEL')}", check=True).stdout
    assert out == table.hex().encode() + b"\n"


@pytest.mark.shared_mount
def test_text_view_replays_to_mrtd_and_the_rtmrs(mnt):
    rep = report(mnt)
    regs = {}
    for n, (index, reg, digest, _, _) in enumerate(text_events(mnt)):
        assert index == n
        regs[reg] = extended(regs.get(reg, bytes(48)), digest)
    assert regs["mrtd"] == rep[MRTD_AT : MRTD_AT + 48]
    for i, at in enumerate(RTMR_AT[:3]):
        assert regs[f"rtmr{i}"] == rep[at : at + 48]
    assert text_events(mnt)[0][1] == "mrtd", "boot events, MRTD's first"


# -- writing records --------------------------------------------------------------------------------------


def test_echo_a_record(mnt):
    before = slurp(mnt.path("measurements/rtmr3:sha384"))
    sh(f"echo '3 EV_EVENT_TAG {DIGEST.hex()} {b'app v1'.hex()}' > {mnt.path('eventlog')}", check=True)
    assert slurp(mnt.path("measurements/rtmr3:sha384")) == extended(before, DIGEST)
    last = text_events(mnt)[-1]
    assert last[1:] == ("rtmr3", DIGEST, "EV_EVENT_TAG", "app v1")
    assert parse_ccel_data(slurp(mnt.path("acpi/data/CCEL")))[-1] == (4, EV_EVENT_TAG, DIGEST, b"app v1")
    sh(f"printf '2 13 {DIGEST.hex()}\\n' >> {mnt.path('eventlog')}", check=True)  # appending works too
    assert text_events(mnt)[-1][1:] == ("rtmr2", DIGEST, "EV_IPL", "")
    assert mnt.rejections() == []


BAD = {
    "no newline": f"printf '3 EV_IPL {DIGEST.hex()}' > eventlog",
    "rtmr 4": f"echo '4 EV_IPL {DIGEST.hex()}' > eventlog",
    "unknown type": f"echo '3 EV_WHATEVER {DIGEST.hex()}' > eventlog",
    "short digest": f"echo '3 EV_IPL {DIGEST.hex()[:-2]}' > eventlog",
    "odd data": f"echo '3 EV_IPL {DIGEST.hex()} abc' > eventlog",
    "EV_NO_ACTION": f"echo '3 EV_NO_ACTION {DIGEST.hex()}' > eventlog",
    "two records": f"printf '3 EV_IPL {DIGEST.hex()}\\n3 EV_IPL {DIGEST.hex()}\\n' > eventlog",
}


@pytest.mark.shared_mount
@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_records_are_einval(mnt, case):
    before = observed(mnt)
    log = Rejections(mnt)
    done = sh(f"cd {mnt.mountpoint} && {BAD[case]}")
    assert done.returncode != 0, done
    line = log.expect_one("write", "/eventlog", errno.EINVAL)
    assert line.rstrip().endswith(")") and len(line.splitlines()) == 1
    assert observed(mnt) == before


@pytest.mark.shared_mount
def test_read_only_views_refuse_writes(mnt):
    for path in ("acpi/CCEL", "acpi/data/CCEL"):
        refused(mnt, observed, errno.EACCES, "open", f"/{path}", lambda: put(mnt.path(path), b"x"))


# -- every interface, one log -------------------------------------------------------------------------------


def test_every_interface_logs_in_order_and_replay_matches(mnt, tmp_path):
    n = len(text_events(mnt))
    ccel_n = len(parse_ccel_data(slurp(mnt.path("acpi/data/CCEL"))))
    d = [hashlib.sha384(f"extend {i}".encode()).digest() for i in range(4)]
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"measured file\x00\x01")
    early = tmp_path / "early-report.bin"
    early.write_bytes(report(mnt))

    sh(f"echo {d[0].hex()} > {mnt.path('rtmr3')}", check=True)  # root file, hex
    (tmp_path / "d1.bin").write_bytes(d[1])
    sh(f"dd if={tmp_path / 'd1.bin'} of={mnt.path('measurements/rtmr3:sha384')} bs=48 count=1 status=none",
       check=True)  # tsm-mr file
    with TdxGuest(mnt.path("tdx_guest")) as dev:  # ioctl
        dev.extend_rtmr(2, d[2])
    sh(f"echo '3 EV_EVENT_TAG {d[3].hex()} 6869' > {mnt.path('eventlog')}", check=True)  # eventlog
    done = tdxfs_cmd("extend", "--rtmr", "3", "--text", "hello world", "--mount", mnt.mountpoint)
    assert done.returncode == 0, done.stderr
    done = tdxfs_cmd("extend", "--rtmr", "2", "--data", str(payload), "--type", "EV_EVENT_TAG",
                     env={**os.environ, "TDXFS_MOUNT": mnt.mountpoint})
    assert done.returncode == 0, done.stderr
    hello, measured = hashlib.sha384(b"hello world").digest(), hashlib.sha384(payload.read_bytes()).digest()

    want = [("rtmr3", d[0], "EV_IPL", ""), ("rtmr3", d[1], "EV_IPL", ""), ("rtmr2", d[2], "EV_IPL", ""),
            ("rtmr3", d[3], "EV_EVENT_TAG", "hi"), ("rtmr3", hello, "EV_IPL", "hello world"),
            ("rtmr2", measured, "EV_EVENT_TAG", "measured file\\x00\\x01")]
    assert [e[1:] for e in text_events(mnt)[n:]] == want
    ccel = parse_ccel_data(slurp(mnt.path("acpi/data/CCEL")))
    # an event without data has a one-byte event field in CCEL (parsers fail on size 0)
    assert ccel[ccel_n:] == [(4, EV_IPL, d[0], b"\0"), (4, EV_IPL, d[1], b"\0"), (3, EV_IPL, d[2], b"\0"),
                             (4, EV_EVENT_TAG, d[3], b"hi"), (4, EV_IPL, hello, b"hello world"),
                             (3, EV_EVENT_TAG, measured, payload.read_bytes())]
    assert replay(ccel) == report_rtmrs(report(mnt))
    t = parse_ccel_table(slurp(mnt.path("acpi/CCEL")))
    assert t["laml"] == len(slurp(mnt.path("acpi/data/CCEL"))) and t["checksum_ok"]

    done = tdxfs_cmd("eventlog", "replay", "--mount", mnt.mountpoint)
    assert done.returncode == 0, done.stderr
    rows = dict(line.split()[:2] for line in done.stdout.splitlines())
    assert rows == {f"rtmr{i - 1}": v.hex() for i, v in report_rtmrs(report(mnt)).items()}
    assert all(line.endswith("match") for line in done.stdout.splitlines())

    done = tdxfs_cmd("eventlog", "replay", "--mount", mnt.mountpoint, "--report", str(early))
    assert done.returncode == 1, done
    bad = [line.split()[0] for line in done.stdout.splitlines() if "MISMATCH" in line]
    assert bad == ["rtmr2", "rtmr3"], done.stdout
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert mnt.rejections() == []


def test_replay_of_a_saved_log(mnt, tmp_path):
    saved = tmp_path / "ccel.bin"
    saved.write_bytes(slurp(mnt.path("acpi/data/CCEL")))
    rep = tmp_path / "report.bin"
    rep.write_bytes(report(mnt))
    done = tdxfs_cmd("eventlog", "replay", "--ccel", str(saved), "--report", str(rep))
    assert done.returncode == 0, done.stderr
    put(mnt.path("measurements/rtmr3:sha384"), DIGEST)
    rep.write_bytes(report(mnt))
    done = tdxfs_cmd("eventlog", "replay", "--ccel", str(saved), "--report", str(rep))
    assert done.returncode == 1 and "MISMATCH" in done.stdout
    done = tdxfs_cmd("eventlog", "replay", "--ccel", str(saved))  # no report: print only
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 4


# -- CLI mistakes: one line, no traceback ---------------------------------------------------------------------


def cli_mistakes(mount: str, tmp_path) -> dict:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an event log")
    return {
        "no mount": (["extend", "--rtmr", "3", "--text", "x"], "TDXFS_MOUNT"),
        "bad digest": (["extend", "--rtmr", "3", "--digest", "xyz", "--mount", mount], "96 hex"),
        "bad type": (["extend", "--rtmr", "3", "--text", "x", "--type", "EV_NOPE", "--mount", mount], "EV_NOPE"),
        "no action": (["extend", "--rtmr", "3", "--text", "x", "--type", "EV_NO_ACTION", "--mount", mount],
                      "EV_NO_ACTION"),
        "missing data": (["extend", "--rtmr", "3", "--data", str(tmp_path / "none"), "--mount", mount],
                         "No such file"),
        "not a mount": (["extend", "--rtmr", "3", "--text", "x", "--mount", str(tmp_path)], "eventlog"),
        "junk log": (["eventlog", "replay", "--ccel", str(junk)], str(junk)),
        "junk report": (["eventlog", "replay", "--mount", mount, "--report", str(junk)], "1024"),
        "missing log": (["eventlog", "replay", "--ccel", str(tmp_path / "none")], "No such file"),
    }


@pytest.mark.shared_mount
@pytest.mark.parametrize("case", ["no mount", "bad digest", "bad type", "no action", "missing data", "not a mount",
                                  "junk log", "junk report", "missing log"])
def test_cli_mistakes_are_one_line(mnt, tmp_path, case):
    args, needle = cli_mistakes(mnt.mountpoint, tmp_path)[case]
    before = observed(mnt)
    env = {k: v for k, v in os.environ.items() if k != "TDXFS_MOUNT"}
    done = tdxfs_cmd(*args, env=env)
    usage = case in ("no mount", "bad digest", "bad type", "no action")  # exit 2, as argparse's errors
    assert done.returncode == (2 if usage else 1), done
    assert done.stderr.startswith("tdxfs: ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert observed(mnt) == before
    assert mnt.rejections() == []
