"""The named-offset ABI module: its table matches the reference, and decode/encode invert."""

import json

import pytest
from hypothesis import given, strategies as st

from tdxfs.model import abi
from tests.model import reference as ref

# (offset, size) of every named field, copied from shared/reference/tdx-abi.md.
REFERENCE_LAYOUT = {
    "reporttype.type": (0, 1),
    "cpusvn": ref.CPUSVN,
    "tee_tcb_info_hash": ref.TEE_TCB_INFO_HASH,
    "tee_info_hash": ref.TEE_INFO_HASH,
    "reportdata": ref.REPORTDATA,
    "mac": ref.MAC,
    **ref.TEE_TCB_INFO,
    **{f"tdinfo.{name}": where for name, where in ref.TDINFO.items()},
    **{f"tdinfo.rtmr{i}": where for i, where in enumerate(ref.RTMR)},
    "tdinfo.servtd_hash": ref.SERVTD_HASH,
}

report_bytes = st.binary(min_size=1024, max_size=1024)


def test_named_fields_sit_at_the_reference_offsets():
    for name, (offset, size) in REFERENCE_LAYOUT.items():
        field = abi.TDREPORT_FIELDS[name]
        assert (field.offset, field.size) == (offset, size), name


def test_fields_tile_the_report_exactly():
    """Sorted by offset the fields are contiguous from 0 to 1024: every byte in one field."""
    position = 0
    for field in sorted(abi.TDREPORT_FIELDS.values(), key=lambda f: f.offset):
        assert field.offset == position, field.name
        assert field.size > 0
        position = field.end
    assert position == 1024


def test_regions_match_the_reference():
    assert (abi.TEE_TCB_INFO.start, abi.TEE_TCB_INFO.stop - abi.TEE_TCB_INFO.start) == ref.TEE_TCB_INFO_REGION
    assert (abi.TDINFO.start, abi.TDINFO.stop - abi.TDINFO.start) == ref.TDINFO_REGION
    assert (abi.MAC_INPUT.start, abi.MAC_INPUT.stop) == (0, 224)


@given(report_bytes)
def test_decode_then_encode_round_trips(report):
    assert abi.encode(abi.decode(report)) == report


@given(st.data())
def test_encode_then_decode_round_trips(data):
    """Any subset of fields encoded over zeros decodes to the same values, zeros elsewhere."""
    names = data.draw(st.sets(st.sampled_from(sorted(abi.TDREPORT_FIELDS))))
    fields = {n: data.draw(st.binary(min_size=abi.TDREPORT_FIELDS[n].size,
                                     max_size=abi.TDREPORT_FIELDS[n].size)) for n in names}
    decoded = abi.decode(abi.encode(fields))
    for name, value in decoded.items():
        assert value == fields.get(name, bytes(len(value)))


@given(report_bytes)
def test_every_byte_belongs_to_exactly_one_field(report):
    """Each nonzero byte of a random report shows up in exactly one decoded field:
    none is dropped and none is counted twice."""
    decoded = abi.decode(report)
    changed_bytes = sum(1 for b in report if b)
    changed_in_fields = sum(sum(1 for b in value if b) for value in decoded.values())
    assert changed_bytes == changed_in_fields
    assert set(decoded) == set(abi.TDREPORT_FIELDS)


def test_decode_of_a_real_report(distinct_td):
    data = bytes(range(64))
    distinct_td.extend(3, bytes(48))
    report = distinct_td.report(data)
    fields = abi.decode(report)
    assert fields["reportdata"] == data
    assert fields["tdinfo.rtmr3"] == distinct_td.rtmr(3)
    assert fields["tdinfo.mrtd"] == distinct_td.profile["mrtd"]
    assert fields["reporttype.type"] == b"\x81"
    assert fields["mac"] == report[224:256]


@pytest.mark.parametrize("length", [0, 1023, 1025])
def test_decode_refuses_wrong_length(length):
    with pytest.raises(ValueError):
        abi.decode(bytes(length))


def test_encode_refuses_wrong_size_and_unknown_name():
    with pytest.raises(ValueError):
        abi.encode({"tdinfo.mrtd": bytes(47)})
    with pytest.raises(KeyError):
        abi.encode({"tdinfo.mrsigner": bytes(48)})


def test_as_json_names_every_field(td):
    """Every field by name; the u64/u8 integer fields as little-endian numbers, others hex."""
    report = td.report(bytes(range(64)))
    doc = json.loads(json.dumps(abi.as_json(report)))
    assert set(doc) == set(abi.TDREPORT_FIELDS)
    assert doc["reporttype.type"] == 0x81
    assert doc["tdinfo.attributes"] == int.from_bytes(report[512:520], "little")
    assert doc["tee_tcb_info.valid"] == int.from_bytes(report[256:264], "little")
    assert doc["reportdata"] == bytes(range(64)).hex()
    assert doc["tdinfo.rtmr0"] == report[720:768].hex()
    assert doc["mac"] == report[224:256].hex()


@given(report_bytes)
def test_as_json_loses_nothing(report):
    """The JSON form converts back to the same 1024 bytes."""
    doc = abi.as_json(report)
    fields = {}
    for name, value in doc.items():
        size = abi.TDREPORT_FIELDS[name].size
        fields[name] = value.to_bytes(size, "little") if isinstance(value, int) else bytes.fromhex(value)
    assert abi.encode(fields) == report
