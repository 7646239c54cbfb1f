"""The event log (tdxfs.model.eventlog): CCEL table, TCG crypto-agile log, text view,
replay, and the TD's extend appending to it.

Expected bytes are packed here with struct from the spec facts (ACPI CCEL header, TCG PC
Client TCG_PCR_EVENT / TCG_EfiSpecIDEventStruct / TCG_PCR_EVENT2), not by calling the
encoder under test.
"""

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdxfs.errors import InvalidInput
from tdxfs.model import eventlog as ev
from tdxfs.model.eventlog import Event, EventLog
from tdxfs.model.profile import default_profile
from tdxfs.model.td import TrustDomain
from tests.model import reference as ref

SHA384 = 0x000C
EV_NO_ACTION = 3
EV_IPL = 0xD


def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


# -- the spec facts, packed by hand ----------------------------------------------------------


def spec_header() -> bytes:
    """TCG_PCR_EVENT: pcrIndex 0, EV_NO_ACTION, digest[20] = 0, eventSize, then
    TCG_EfiSpecIDEventStruct: "Spec ID Event03\\0", platformClass u32, specVersionMinor u8,
    specVersionMajor u8, specErrata u8, uintnSize u8, numberOfAlgorithms u32,
    {algorithmId u16, digestSize u16}, vendorInfoSize u8."""
    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 1) + struct.pack("<HH", 0x000C, 48) + b"\x00"
    assert len(spec) == 33
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec


def event2(mr: int, etype: int, digest: bytes, data: bytes) -> bytes:
    """TCG_PCR_EVENT2: pcrIndex, eventType, TPML_DIGEST_VALUES {count, {hashAlg, digest}},
    eventSize, event."""
    return struct.pack("<IIIH", mr, etype, 1, SHA384) + digest + struct.pack("<I", len(data)) + data


def ccel_table(laml: int, lasa: int) -> bytes:
    """ACPI header (signature, length, revision, checksum, OEMID[6], OEM table ID[8], OEM
    revision, creator ID[4], creator revision), CC type, subtype, reserved u16, LAML, LASA."""
    body = bytearray(struct.pack("<4sIBB6s8sI4sI", b"CCEL", 56, 1, 0, b"TDXFS ", b"TDXFSSIM", 1, b"TDXF", 1)
                     + struct.pack("<BBHQQ", 2, 0, 0, laml, lasa))
    body[9] = (256 - sum(body) % 256) % 256
    return bytes(body)


def as_in_ccel(event: Event) -> Event:
    """The CCEL view writes an event without data with a one-byte event field."""
    return Event(event.mr, event.event_type, event.digest, event.data or b"\0")


D1, D2, D3 = sha384(b"one"), sha384(b"two"), sha384(b"three")


def sample_events():
    return [
        Event(0, 0x8000000A, D1, b"firmware"),  # MRTD: text view only
        Event(1, EV_IPL, D2, b""),
        Event(4, 0x6, D3, b"app \x00\n\\ \xff done"),
    ]


# -- known answers ----------------------------------------------------------------------------


def test_spec_header_is_65_bytes_as_packed_from_the_spec():
    assert ev.spec_id_event() == spec_header()
    assert len(spec_header()) == 65


def test_ccel_data_known_answer():
    log = EventLog(sample_events())
    # An event without data is written with a one-byte event field (parsers fail on size 0).
    body = spec_header() + event2(1, EV_IPL, D2, b"\0") + event2(4, 0x6, D3, b"app \x00\n\\ \xff done")
    expected = body + b"\xff" * (65536 - len(body))
    assert log.ccel_data() == expected


def test_ccel_table_known_answer_and_checksum():
    log = EventLog(sample_events())
    table = log.ccel_table()
    assert table == ccel_table(65536, ev.CCEL_LASA)
    assert len(table) == 56
    assert sum(table) % 256 == 0
    assert table[:4] == b"CCEL" and struct.unpack_from("<I", table, 4)[0] == 56
    assert table[36] == 2  # TDX
    laml, lasa = struct.unpack_from("<QQ", table, 40)
    assert laml == len(log.ccel_data())


def test_mrtd_events_are_in_the_text_view_but_not_in_ccel():
    log = EventLog(sample_events())
    assert ev.decode_ccel_data(log.ccel_data()) == [as_in_ccel(e) for e in sample_events()[1:]]
    assert ev.decode_text(log.text()) == sample_events()


def test_laml_grows_in_64k_steps_keeping_eight_ff_bytes_after_the_last_record():
    data = bytes(1000)
    log = EventLog()
    seen = set()
    for n in range(200):
        log.append(Event(4, EV_IPL, D1, data))
        used = 65 + (n + 1) * (66 + len(data))
        blob = log.ccel_data()
        laml = struct.unpack_from("<Q", log.ccel_table(), 40)[0]
        assert laml == len(blob) and laml % 65536 == 0 and laml >= 65536
        assert laml - used >= 8
        assert laml - 65536 < used + 8  # the smallest step that fits
        assert blob[used:] == b"\xff" * (laml - used)
        assert sum(log.ccel_table()) % 256 == 0
        seen.add(laml)
    assert len(seen) > 1  # it did grow


@pytest.mark.parametrize("spare", range(0, 12))
def test_laml_boundary_keeps_at_least_eight_ff_bytes(spare):
    """One record ending `spare` bytes before 64 KiB: with fewer than 8 spare bytes the
    area takes the next 64 KiB step."""
    size = 65536 - spare - 65 - 66
    log = EventLog([Event(4, EV_IPL, D1, bytes(size))])
    blob = log.ccel_data()
    assert len(blob) == (65536 if spare >= 8 else 131072)
    assert blob[65536 - spare:] == b"\xff" * (len(blob) - 65536 + spare)
    assert struct.unpack_from("<Q", log.ccel_table(), 40)[0] == len(blob)


def test_text_view_one_line_per_event_with_escapes():
    log = EventLog(sample_events())
    lines = log.text().decode("ascii").split("\n")
    assert lines[-1] == ""
    assert lines[:-1] == [
        f"0 mrtd {D1.hex()} EV_EFI_PLATFORM_FIRMWARE_BLOB2 firmware",
        f"1 rtmr0 {D2.hex()} EV_IPL",
        f"2 rtmr3 {D3.hex()} EV_EVENT_TAG app \\x00\\x0a\\x5c \\xff done",
    ]


def test_unknown_type_is_shown_as_hex_and_parsed_back():
    log = EventLog([Event(2, 0x1234ABCD, D1, b"x")])
    assert b" 0x1234abcd x\n" in log.text()
    assert ev.decode_text(log.text())[0].event_type == 0x1234ABCD


@pytest.mark.parametrize("text, value", [
    ("EV_IPL", 13), ("ev_ipl", 13), ("0xd", 13), ("0XD", 13), ("13", 13), (" 13 ", 13),
    ("EV_NO_ACTION", 3), ("EV_EFI_PLATFORM_FIRMWARE_BLOB2", 0x8000000A),
    ("EV_EFI_BOOT_SERVICES_APPLICATION", 0x80000003), ("0xffffffff", 0xFFFFFFFF), ("4294967295", 0xFFFFFFFF),
])
def test_parse_event_type(text, value):
    assert ev.parse_event_type(text) == value


@pytest.mark.parametrize("text", ["", "EV_NOPE", "0x", "0x1_0", "1_0", "-1", "+1", "4294967296", "0x100000000",
                                  "1.5", "0xg", "１３"])
def test_parse_event_type_refuses(text):
    with pytest.raises(InvalidInput):
        ev.parse_event_type(text)


def test_event_type_names():
    assert ev.event_type_name(13) == "EV_IPL"
    assert ev.event_type_name(0x80000003) == "EV_EFI_BOOT_SERVICES_APPLICATION"
    assert ev.event_type_name(0x7777) == "0x7777"
    assert ev.EV_SEPARATOR == 4 and ev.EV_EVENT_TAG == 6 and ev.EV_PLATFORM_CONFIG_FLAGS == 0xA
    assert ev.RUNTIME_EVENT_TYPE == ev.EV_IPL and ev.MRTD_INDEX == 0


# -- decoding -------------------------------------------------------------------------------


def test_decode_encode_round_trip():
    events = [Event(1 + i % 4, [EV_IPL, 4, 6, 0x80000003, 0x99][i % 5], sha384(bytes([i])), bytes(range(i)))
              for i in range(40)]
    log = EventLog(events)
    assert ev.decode_ccel_data(log.ccel_data()) == [as_in_ccel(e) for e in events]
    assert ev.decode_text(log.text()) == events
    table = ev.decode_ccel_table(log.ccel_table())
    assert (table.signature, table.length, table.revision, table.cc_type, table.cc_subtype) == (b"CCEL", 56, 1, 2, 0)
    assert (table.oem_id, table.oem_table_id, table.creator_id) == (b"TDXFS ", b"TDXFSSIM", b"TDXF")
    assert table.laml == len(log.ccel_data()) and table.lasa == ev.CCEL_LASA


def test_decode_stops_at_the_end_marker_or_the_end():
    body = spec_header() + event2(2, EV_IPL, D1, b"a")
    assert ev.decode_ccel_data(body) == [Event(2, EV_IPL, D1, b"a")]  # no padding at all
    assert ev.decode_ccel_data(body + b"\xff\xff") == [Event(2, EV_IPL, D1, b"a")]
    assert ev.decode_ccel_data(body + b"\xff" * 4 + b"junk after the marker") == [Event(2, EV_IPL, D1, b"a")]


def test_decode_reads_multi_digest_records_and_mrtd_records():
    """A firmware log naming SHA-256 and SHA-384, with both digests per record."""
    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 2) + struct.pack("<HHHH", 0xB, 32, 0xC, 48) + b"\x02ab"
    header = struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec
    rec = (struct.pack("<III", 0, 0x8000000A, 2) + struct.pack("<H", 0xB) + bytes(32) + struct.pack("<H", 0xC) + D1
           + struct.pack("<I", 3) + b"bfv")
    assert ev.decode_ccel_data(header + rec + b"\xff" * 8) == [Event(0, 0x8000000A, D1, b"bfv")]


def good_log() -> bytes:
    return spec_header() + event2(1, EV_IPL, D1, b"abc") + event2(3, 6, D2, b"") + b"\xff" * 16


MALFORMED = {
    "empty": b"",
    "truncated-header": spec_header()[:40],
    "first-not-no-action": struct.pack("<II", 0, EV_IPL) + spec_header()[8:],
    "wrong-signature": spec_header().replace(b"Spec ID Event03", b"Spec ID Event02"),
    "no-sha384": spec_header().replace(struct.pack("<HH", 0xC, 48), struct.pack("<HH", 0xB, 32)),
    "sha384-wrong-size": spec_header().replace(struct.pack("<HH", 0xC, 48), struct.pack("<HH", 0xC, 32)),
    "spec-size-too-big": spec_header()[:28] + struct.pack("<I", 10 ** 6) + spec_header()[32:],
    "record-truncated-digest": spec_header() + event2(1, EV_IPL, D1, b"abc")[:30],
    "record-size-past-end": spec_header() + event2(1, EV_IPL, D1, b"abc")[:-3] + struct.pack("<I", 9999) + b"abc",
    "record-unknown-alg": spec_header() + struct.pack("<IIIH", 1, EV_IPL, 1, 0xB) + D1 + struct.pack("<I", 0),
    "record-no-digest": spec_header() + struct.pack("<IIII", 1, EV_IPL, 0, 0),
    "record-mr-5": spec_header() + event2(5, EV_IPL, D1, b""),
    "trailing-garbage": spec_header() + event2(1, EV_IPL, D1, b"") + b"\x01\x02",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_logs_are_refused(name):
    with pytest.raises(InvalidInput):
        ev.decode_ccel_data(MALFORMED[name])


def test_truncating_a_good_log_anywhere_never_crashes():
    raw = good_log()
    for cut in range(len(raw)):
        try:
            ev.decode_ccel_data(raw[:cut])
        except InvalidInput:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 200))
def test_fuzzed_logs_only_ever_raise_invalid_input(noise, where):
    raw = bytearray(good_log())
    raw[where:where + len(noise)] = noise
    try:
        events = ev.decode_ccel_data(bytes(raw))
    except InvalidInput:
        return
    assert all(isinstance(e, Event) for e in events)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzzed_text_and_tables_only_ever_raise_invalid_input(noise):
    for decode in (ev.decode_text, ev.decode_ccel_table):
        try:
            decode(noise)
        except InvalidInput:
            pass


@pytest.mark.parametrize("table", [
    b"", ccel_table(65536, 1)[:55], b"XCEL" + ccel_table(65536, 1)[4:],
    ccel_table(65536, 1)[:9] + bytes([(ccel_table(65536, 1)[9] + 1) % 256]) + ccel_table(65536, 1)[10:],
    ccel_table(65536, 1) + b"\x00",  # length field no longer matches
])
def test_malformed_tables_are_refused(table):
    with pytest.raises(InvalidInput):
        ev.decode_ccel_table(table)


@pytest.mark.parametrize("text", [
    b"0 rtmr0 zz EV_IPL\n", b"1 rtmr0 " + D1.hex().encode() + b" EV_IPL\n", b"0 rtmr9 " + D1.hex().encode() + b" EV_IPL\n",
    b"0 rtmr0 " + D1.hex().encode() + b" EV_NOPE\n", b"0 rtmr0 " + D1.hex().encode() + b" EV_IPL a\\xZZ\n",
    b"0 rtmr0 " + D1.hex()[:-2].encode() + b" EV_IPL\n", b"0 rtmr0\n", "0 rtmr0 x EV_IPL \xe9\n".encode("latin-1"),
])
def test_malformed_text_is_refused(text):
    with pytest.raises(InvalidInput):
        ev.decode_text(text)


@pytest.mark.parametrize("kwargs", [
    {"mr": 5}, {"mr": -1}, {"mr": True}, {"event_type": -1}, {"event_type": 1 << 32},
    {"digest": bytes(47)}, {"digest": "00" * 48}, {"data": "text"},
])
def test_events_are_validated(kwargs):
    args = {"mr": 1, "event_type": EV_IPL, "digest": D1, "data": b"", **kwargs}
    with pytest.raises(InvalidInput):
        Event(**args)


# -- replay and the TD ------------------------------------------------------------------------


def test_replay_known_answer():
    regs = ev.replay(sample_events() + [Event(4, EV_NO_ACTION, D2, b"skipped")])
    assert regs["mrtd"] == ref.extended(bytes(48), D1)
    assert regs["rtmr0"] == ref.extended(bytes(48), D2)
    assert regs["rtmr3"] == ref.extended(bytes(48), D3)
    assert regs["rtmr1"] == regs["rtmr2"] == bytes(48)


def test_default_td_log_replays_to_its_registers(td):
    """The boot events come first (MRTD's too), each with its text as data and SHA-384 of
    the text as digest; replaying gives MRTD and RTMR0-3."""
    events = td.event_log.events()
    assert [(e.register, e.data.decode()) for e in events] == [(name, text) for name, text in ref.BOOT_EVENTS]
    for e in events:
        assert e.digest == sha384(e.data)
    assert [e.event_type for e in events] == [0x8000000A, 0x8000000B, 0x8000000B, 0x8000000A, 4,
                                              0x80000003, 4, 0xD, 0x6]
    regs = ev.replay(events)
    assert regs["mrtd"] == td.profile["mrtd"]
    assert tuple(regs[f"rtmr{i}"] for i in range(4)) == td.rtmrs()


def test_extends_are_logged_and_replay_equals_registers(td):
    td.extend(3, D1)
    td.extend(2, D2, ev.EV_EVENT_TAG, b"app v1")
    td.extend(0, D3, 0x80000003, bytearray(b"\x00\x01"))
    events = td.event_log.events()
    assert events[-3:] == (Event(4, EV_IPL, D1, b""), Event(3, 6, D2, b"app v1"), Event(1, 0x80000003, D3, b"\x00\x01"))
    regs = ev.replay(ev.decode_ccel_data(td.event_log.ccel_data()))
    assert tuple(regs[f"rtmr{i}"] for i in range(4)) == td.rtmrs()
    regs = ev.replay(ev.decode_text(td.event_log.text()))
    assert regs["mrtd"] == td.profile["mrtd"]
    assert tuple(regs[f"rtmr{i}"] for i in range(4)) == td.rtmrs()
    events, rtmrs = td.log_snapshot()
    assert tuple(ev.replay(events)[f"rtmr{i}"] for i in range(4)) == rtmrs


@pytest.mark.parametrize("args", [
    (4, D1), (-1, D1), (3, bytes(47)), (3, bytes(49)), (3, "x" * 48),
    (3, D1, EV_NO_ACTION), (3, D1, -1), (3, D1, 1 << 32), (3, D1, "EV_IPL"),
    (3, D1, EV_IPL, "text"), (3, D1, EV_IPL, bytes(ev.MAX_EVENT_DATA + 1)),
])
def test_refused_extends_change_neither_register_nor_log(td, args):
    before, log, ccel = td.rtmrs(), td.event_log.events(), td.event_log.ccel_data()
    with pytest.raises(InvalidInput):
        td.extend(*args)
    assert td.rtmrs() == before
    assert td.event_log.events() == log
    assert td.event_log.ccel_data() == ccel


def test_views_are_cached_between_appends(td):
    """A long log: the views are the same objects until the next append."""
    for n in range(2000):
        td.extend(n % 4, sha384(bytes([n % 256])), EV_IPL, b"n=%d" % n)
    data, table, text = td.event_log.ccel_data(), td.event_log.ccel_table(), td.event_log.text()
    assert td.event_log.ccel_data() is data and td.event_log.text() is text and td.event_log.ccel_table() is table
    assert len(td.event_log) == 9 + 2000
    td.extend(3, D1)
    assert td.event_log.ccel_data() is not data
    assert ev.decode_ccel_data(td.event_log.ccel_data())[-1] == Event(4, EV_IPL, D1, b"\0")


def test_custom_persist_hook_failure_leaves_the_log_alone(platform):
    def refuse(rtmrs, reportdata):
        from tdxfs.errors import StateError
        raise StateError("no")

    td = TrustDomain(platform, default_profile(), persist=refuse)
    before = td.event_log.events()
    with pytest.raises(Exception):
        td.extend(3, D1)
    assert td.event_log.events() == before


# -- real parsers accept it -------------------------------------------------------------------


def _logged_td(td):
    td.extend(3, D1, EV_IPL, b"runtime one")
    td.extend(2, D2, ev.EV_EVENT_TAG, b"runtime two")
    return td


def test_pytdxmeasure_replays_the_ccel_to_the_rtmrs(td):
    ccel_mod = pytest.importorskip("pytdxmeasure.ccel")
    actor_mod = pytest.importorskip("pytdxmeasure.actor")
    td = _logged_td(td)
    table = ccel_mod.CCEL(td.event_log.ccel_table())
    assert table.is_valid() and table.cc_type == 2
    data = td.event_log.ccel_data()
    actor = actor_mod.TDEventLogActor(table.log_area_start_address, table.log_area_minimum_length)

    def read(ccel_file=None):
        actor._data = data
        return data

    actor._read = read
    actor.replay()
    for i in range(4):
        assert bytes(actor.get_rtmr_by_index(i).data) == td.rtmr(i)


def test_cctrusted_base_replays_the_ccel_to_the_rtmrs(td):
    eventlog_mod = pytest.importorskip("cctrusted_base.eventlog")
    ccel_mod = pytest.importorskip("cctrusted_base.ccel")
    td = _logged_td(td)
    assert ccel_mod.CCEL(td.event_log.ccel_table()).is_valid()
    logs = eventlog_mod.EventLogs(td.event_log.ccel_data(), None, eventlog_mod.TcgEventLog.TCG_FORMAT_PCCLIENT)
    logs.select(None, None)
    assert logs.count == len(td.event_log) - 2 + 1  # the header, no MRTD events
    replayed = eventlog_mod.EventLogs.replay(logs.event_logs)
    for i in range(4):
        assert bytes(replayed[i][SHA384]) == td.rtmr(i)


def test_concurrent_extends_keep_log_and_registers_in_step(td):
    """Threads extending all four RTMRs while others take snapshots: every snapshot's log
    replays to its registers, and so does the final log."""
    from tests.model.test_threads import run_threads

    bad = []

    def work(k):
        for n in range(150):
            if k % 3 == 2:
                events, rtmrs = td.log_snapshot()
                regs = ev.replay(events)
                if tuple(regs[f"rtmr{i}"] for i in range(4)) != rtmrs:
                    bad.append(n)
            else:
                td.extend((k + n) % 4, sha384(bytes([k, n % 256])), EV_IPL, b"%d/%d" % (k, n))

    run_threads(work)
    assert bad == []
    regs = ev.replay(ev.decode_ccel_data(td.event_log.ccel_data()))
    assert tuple(regs[f"rtmr{i}"] for i in range(4)) == td.rtmrs()
    assert len(td.event_log) == 9 + 150 * len([k for k in range(8) if k % 3 != 2])
