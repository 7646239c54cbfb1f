"""The boot event log: the ACPI CCEL table and the TCG crypto-agile log it points to,
at /sys/firmware/acpi/tables/CCEL and /sys/firmware/acpi/tables/data/CCEL."""

import os

import pytest

from tests.conformance.guest import (CCEL_DATA, CCEL_TABLE, MEASUREMENTS, TPM_ALG_SHA384, get_report0,
                                     parse_ccel_table, parse_event_log, read_all, registers, replay, write_file)


def test_the_table_is_a_valid_ccel_for_tdx():
    table = parse_ccel_table(read_all(CCEL_TABLE))
    assert table.signature == b"CCEL"
    assert table.length == len(read_all(CCEL_TABLE))
    assert table.checksum_ok
    assert table.cc_type == 2  # TDX
    assert table.laml == len(read_all(CCEL_DATA))


def test_the_log_names_sha384_and_every_record_carries_it():
    sizes, records = parse_event_log(read_all(CCEL_DATA))
    assert sizes.get(TPM_ALG_SHA384) == 48
    assert records
    for r in records:
        assert len(r.digests[TPM_ALG_SHA384]) == 48
        assert 1 <= r.mr_index <= 4, "CC MR index 1..4 are RTMR0..3"


def test_replay_reproduces_the_boot_rtmrs():
    _, records = parse_event_log(read_all(CCEL_DATA))
    replayed = replay(records)
    report = registers(get_report0(bytes(64)))
    for name in ("rtmr0", "rtmr1", "rtmr2"):
        assert replayed[name] == report[name], name


@pytest.mark.simulator_only
def test_runtime_extends_are_logged_and_replay_to_rtmr3():
    """tdxfs logs every extend (a real guest's firmware log ends at boot, so RTMR3 extends
    made through tsm-mr do not appear in it)."""
    data = os.urandom(48)
    write_file(os.path.join(MEASUREMENTS, "rtmr3:sha384"), data)
    _, records = parse_event_log(read_all(CCEL_DATA))
    assert records[-1].mr_index == 4 and records[-1].digests[TPM_ALG_SHA384] == data
    assert replay(records)["rtmr3"] == registers(get_report0(bytes(64)))["rtmr3"]
