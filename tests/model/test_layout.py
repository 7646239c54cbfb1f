"""The one table-driven encoder/decoder (tdxfs.model.abi.layout): a bad table is refused
when it is made, and both views (by position, by name) agree with struct packed by hand."""

import struct

import pytest
from hypothesis import given, strategies as st

from tdxfs import linuxabi as L
from tdxfs.model import abi
from tdxfs.model.abi import ccel, quote as quote_tables, tdreport
from tdxfs.model.abi.layout import U8, U16, U32, Layout, LayoutError, Record, Var

INNER = Layout("inner", 6, ("kind", 0, U16), ("size", 2, U32))
OUTER = Layout("outer", 16, ("magic", 0, 4), ("", 4, Layout("flat", 2, ("flag", 0, U8), ("pad", 1, 1))),
               ("head", 6, INNER), ("tail", 12, U32))
RECORD = Record("record", OUTER, Var("blob", size="head.size"), ("more", INNER), Var("rest", size="more.size"),
                rest=("tail",))


# -- a bad table is refused when it is made ----------------------------------------------------


@pytest.mark.parametrize("rows,size,message", [
    ((("a", 0, 4), ("b", 2, 4)), 6, "'b' at 2 overlaps"),
    ((("a", 0, 4), ("b", 6, 2)), 8, "leaves bytes 4..5 unnamed"),
    ((("a", 0, 4), ("b", 4, 4)), 12, "rows end at 8"),
    ((("a", 0, 4), ("b", 4, 4)), 6, "rows end at 8, the structure is 6"),  # the last row runs past the end
    ((("a", 0, 4), ("a", 4, 4)), 8, "two rows named 'a'"),
    ((("a", 0, 3), ("b", 3, 0)), 3, "size 0"),
])
def test_a_table_that_does_not_tile_is_refused(rows, size, message):
    with pytest.raises(LayoutError, match=message):
        Layout("bad", size, *rows)


def test_a_row_of_another_kind_is_refused():
    with pytest.raises(LayoutError, match="neither a size"):
        Layout("bad", 4, ("a", 0, "4"))
    with pytest.raises(LayoutError, match="neither a size"):
        Layout("bad", 1, ("a", 0, True))


def test_an_embedded_structure_cannot_repeat_a_name():
    with pytest.raises(LayoutError, match="two rows named 'kind'"):
        Layout("bad", 8, ("", 0, INNER), ("kind", 6, U16))


def test_a_record_sizes_a_var_only_by_an_integer_row_before_it():
    with pytest.raises(LayoutError, match="sized by 'magic'"):
        Record("bad", OUTER, Var("blob", size="magic"))
    with pytest.raises(LayoutError, match="sized by 'more.size'"):
        Record("bad", OUTER, Var("blob", size="more.size"), ("more", INNER))


def test_a_record_sizes_rest_only_by_an_integer_at_a_fixed_offset():
    with pytest.raises(LayoutError):
        Record("bad", OUTER, rest=("magic",))
    with pytest.raises(LayoutError):
        Record("bad", OUTER, Var("blob", size="head.size"), ("more", INNER), rest=("more.size",))


# -- by position, as struct.Struct --------------------------------------------------------------


def test_pack_and_unpack_follow_the_rows_in_offset_order():
    packed = OUTER.pack(b"ABCD", 7, b"\0", 0x0102, 0x03040506, 0xA0B0C0D0)
    assert packed == b"ABCD" + struct.pack("<Bs", 7, b"\0") + struct.pack("<HI", 0x0102, 0x03040506) \
        + struct.pack("<I", 0xA0B0C0D0)
    assert OUTER.unpack(packed) == (b"ABCD", 7, b"\0", 0x0102, 0x03040506, 0xA0B0C0D0)
    assert OUTER.unpack_from(b"xx" + packed, 2) == OUTER.unpack(packed)
    assert OUTER.size == 16 and list(OUTER.fields) == ["magic", "flag", "pad", "head.kind", "head.size", "tail"]


def test_linux_request_layouts_are_struct_compatible():
    """The kernel's request structures use the same tables; their packing is struct's."""
    assert L.VERIFY_REQ.pack(bytes(256), 9) == struct.pack("<256sQ", bytes(256), 9)
    assert L.EXTEND_REQ.pack(bytes(48), 3) == struct.pack("<48sB", bytes(48), 3)
    assert L.REPORT_REQ.unpack(bytes(range(64)) + bytes(1024)) == (bytes(range(64)), bytes(1024))


# -- by name -----------------------------------------------------------------------------------


def test_spans_of_rows_and_embedded_structures():
    assert OUTER.span("head") == slice(6, 12)
    assert OUTER.span("head.size") == slice(8, 12)
    assert OUTER.span(INNER) == slice(6, 12)
    assert abi.TDREPORT.span(tdreport.TDINFO_STRUCT) == abi.TDINFO == slice(512, 1024)
    assert abi.RTMRS == slice(720, 912)
    with pytest.raises(KeyError):
        Layout("twice", 12, ("a", 0, INNER), ("b", 6, INNER)).span(INNER)


def test_encode_takes_bytes_ints_and_whole_parts():
    encoded = OUTER.encode({"magic": b"MAGC", "head": INNER.pack(1, 2), "tail": 5})
    assert OUTER.values(encoded) == {"magic": b"MAGC", "flag": 0, "pad": b"\0", "head.kind": 1, "head.size": 2,
                                     "tail": 5}
    assert OUTER.encode({"flag": 9}, encoded) == encoded[:4] + b"\x09" + encoded[5:]


@pytest.mark.parametrize("fields,error", [
    ({"nope": b""}, KeyError),
    ({"magic": b"abc"}, ValueError),
    ({"magic": 5}, ValueError),  # bytes row
    ({"flag": 256}, ValueError),
    ({"tail": -1}, ValueError),
    ({"tail": "5"}, ValueError),
    ({"head": bytes(5)}, ValueError),
])
def test_encode_refuses(fields, error):
    with pytest.raises(error):
        OUTER.encode(fields)


def test_encode_refuses_a_base_of_the_wrong_size():
    with pytest.raises(ValueError):
        OUTER.encode({}, bytes(15))


@given(st.binary(min_size=16, max_size=16))
def test_decode_encode_and_as_json_lose_nothing(data):
    assert OUTER.encode(OUTER.decode(data)) == data
    assert OUTER.encode(OUTER.values(data)) == data
    doc = OUTER.as_json(data)
    assert OUTER.encode({k: v if isinstance(v, int) else bytes.fromhex(v) for k, v in doc.items()}) == data


def test_decode_refuses_the_wrong_size():
    for size in (0, 15, 17):
        with pytest.raises(ValueError):
            OUTER.decode(bytes(size))
        with pytest.raises(ValueError):
            OUTER.as_json(bytes(size))


def test_copier_builds_a_structure_from_another_and_checks_the_mapping():
    copy = INNER.copier(OUTER, {"kind": "head.kind", "size": "tail"})
    source = OUTER.encode({"head.kind": 0x1234, "tail": 0xDEADBEEF})
    assert copy(source) == INNER.pack(0x1234, 0xDEADBEEF)
    with pytest.raises(LayoutError, match="unmapped"):
        INNER.copier(OUTER, {"kind": "head.kind"})
    with pytest.raises(LayoutError, match="4 bytes"):
        INNER.copier(OUTER, {"kind": "head.size", "size": "tail"})


# -- records of variable length ------------------------------------------------------------------


def test_record_encode_computes_the_sizes_it_is_not_given():
    data = RECORD.encode({"magic": b"RECD", "head.kind": 6, "blob": b"12345", "more.kind": 5, "rest": b"xy"})
    fields = RECORD.decode(data)
    assert fields["blob"] == b"12345" and fields["rest"] == b"xy"
    assert int.from_bytes(fields["head.size"], "little") == 5 and int.from_bytes(fields["more.size"], "little") == 2
    assert int.from_bytes(fields["tail"], "little") == len(data) - OUTER.fields["tail"].end
    assert RECORD.encode(fields) == data
    assert RECORD.fixed_size == OUTER.size and "more.size" in RECORD.integers


def test_record_writes_given_sizes_as_given_and_ignores_what_follows():
    data = RECORD.encode({"blob": b"abc", "rest": b"", "tail": 99})
    assert RECORD.decode(data + b"trailing") == RECORD.decode(data)
    assert int.from_bytes(RECORD.decode(data)["tail"], "little") == 99


def test_record_decode_refuses_data_that_ends_inside_it():
    data = RECORD.encode({"blob": b"abc", "rest": b"defg"})
    for cut in range(len(data)):
        with pytest.raises(ValueError, match="ends inside"):
            RECORD.decode(data[:cut])
    with pytest.raises(KeyError):
        RECORD.encode({"unknown": b""})
    with pytest.raises(ValueError):
        RECORD.encode({"blob": 5})


# -- the ABI tables themselves -----------------------------------------------------------------


def test_every_abi_table_is_a_layout_of_its_documented_size():
    sizes = {
        tdreport.REPORTMACSTRUCT: 256, tdreport.TEE_TCB_INFO: 239, tdreport.TDINFO_STRUCT: 512,
        tdreport.TDREPORT_STRUCT: 1024, quote_tables.HEADER: 48, quote_tables.TD_QUOTE_BODY: 584,
        quote_tables.SGX_REPORT_BODY: 384, quote_tables.QUOTE_V4_FIXED: 1220, ccel.CCEL_TABLE: 56,
        ccel.ACPI_TABLE_HEADER: 36, ccel.TCG_PCR_EVENT: 32, ccel.SPEC_ID_EVENT: 28, ccel.TCG_PCR_EVENT2: 12,
        L.REPORT_REQ: 1088, L.VERIFY_REQ: 264, L.EXTEND_REQ: 49,
    }
    for layout, size in sizes.items():
        assert layout.size == size, layout
    assert abi.TDREPORT.span(tdreport.TEE_TCB_INFO) == abi.TEE_TCB_INFO == slice(256, 495)
    assert quote_tables.QUOTE_V4_FIXED.span(quote_tables.SGX_REPORT_BODY) == slice(770, 1154)
    assert quote_tables.QUOTE_V4_FIXED.span("body") == slice(48, 632)
