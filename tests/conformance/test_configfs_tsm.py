"""configfs-tsm report instances: /sys/kernel/config/tsm/report (Linux 6.7,
Documentation/ABI/testing/configfs-tsm-report) with the TDX provider."""

import errno
import os
import uuid

import pytest

from tests.conformance.guest import (TSM_REPORT, TSM_RTMRS, errno_of, get_report0, parse_quote, read_all, registers,
                                     write_file)


@pytest.fixture
def instance():
    path = os.path.join(TSM_REPORT, f"conformance-{uuid.uuid4().hex[:12]}")
    os.mkdir(path)
    try:
        yield path
    finally:
        os.rmdir(path)


def test_an_instance_has_the_tdx_attributes(instance):
    assert {"inblob", "outblob", "provider", "generation"} <= set(os.listdir(instance))
    assert read_all(os.path.join(instance, "provider")) == b"tdx_guest\n"
    assert read_all(os.path.join(instance, "generation")) == b"0\n"


def test_rtmrs_group_is_absent():
    assert not os.path.exists(TSM_RTMRS)


def test_a_quote_carries_the_inblob_and_the_registers(instance):
    nonce = os.urandom(64)
    write_file(os.path.join(instance, "inblob"), nonce)
    assert read_all(os.path.join(instance, "generation")) == b"1\n"
    quote = parse_quote(read_all(os.path.join(instance, "outblob")))
    assert (quote.version, quote.key_type, quote.tee_type) == (4, 2, 0x81)
    assert quote.body["reportdata"] == nonce
    report = registers(get_report0(bytes(64)))
    for name in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "mrconfigid"):
        assert quote.body[name] == report[name], name


def test_outblob_without_inblob_is_einval(instance):
    assert errno_of(lambda: read_all(os.path.join(instance, "outblob"))) == errno.EINVAL


def test_inblob_past_64_bytes_is_efbig(instance):
    assert errno_of(lambda: write_file(os.path.join(instance, "inblob"), bytes(65))) == errno.EFBIG


def test_each_commit_raises_generation_by_one(instance):
    for expected in (1, 2, 3):
        write_file(os.path.join(instance, "inblob"), bytes(64))
        assert read_all(os.path.join(instance, "generation")) == b"%d\n" % expected


def test_a_taken_name_is_eexist(instance):
    assert errno_of(lambda: os.mkdir(instance)) == errno.EEXIST


@pytest.mark.simulator_only
def test_the_quote_verifies_against_the_simulated_root(instance, state_dir, tmp_path):
    """dcap-qvl, through tdxfs's own CLI, trusting only the exported simulated root."""
    import subprocess
    import sys

    write_file(os.path.join(instance, "inblob"), os.urandom(64))
    quote = tmp_path / "quote.bin"
    quote.write_bytes(read_all(os.path.join(instance, "outblob")))
    tdxfs = [sys.executable, "-m", "tdxfs"]
    subprocess.run([*tdxfs, "pki", "export", str(tmp_path / "pki"), "--state", state_dir], check=True,
                   capture_output=True, timeout=60)
    done = subprocess.run([*tdxfs, "quote", "verify", str(quote), "--collateral", str(tmp_path / "pki/collateral.json"),
                           "--root", str(tmp_path / "pki/root-ca.pem")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "UpToDate" in done.stdout
