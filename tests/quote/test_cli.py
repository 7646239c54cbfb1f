"""tdxfs pki export, quote decode, quote verify: the relying party's side, end to end."""

import json
import subprocess
import sys

import pytest

from tdxfs.cli import main
from tdxfs.model.machine import build_td
from tdxfs.model.profile import default_profile
from tests.quote.conftest import NONCE


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An in-memory platform's export: root, collateral and a sample quote."""
    out = tmp_path_factory.mktemp("export")
    assert main(["pki", "export", str(out)]) == 0
    return out


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_writes_root_collateral_and_a_sample_quote(exported):
    names = {p.name for p in exported.iterdir()}
    assert {"root-ca.pem", "root-ca.der", "collateral.json", "tcb-info.json", "qe-identity.json",
            "root-ca-crl.der", "pck-platform-ca-crl.der", "quote.bin"} <= names
    assert (exported / "root-ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert set(json.loads((exported / "collateral.json").read_text())) >= {"tcb_info", "qe_identity", "pck_crl"}
    # nothing secret leaves the platform
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in exported.iterdir())


def test_export_without_state_says_what_it_is(tmp_path, capsys):
    code, out, err = run(capsys, "pki", "export", tmp_path / "x")
    assert code == 0
    assert "SIMULATED" in out and "in-memory" in err and "--state" in err


@pytest.mark.parametrize("root", ["root-ca.pem", "root-ca.der"])
def test_verify_accepts_with_the_exported_root(exported, capsys, root):
    code, out, _ = run(capsys, "quote", "verify", exported / "quote.bin",
                       "--collateral", exported / "collateral.json", "--root", exported / root)
    assert code == 0
    assert "tcb_status  UpToDate" in out
    assert f"report_data     {bytes(64).hex()}" in out


def test_verify_json_is_dcap_qvls_report(exported, capsys):
    code, out, _ = run(capsys, "quote", "verify", exported / "quote.bin", "--collateral",
                       exported / "collateral.json", "--root", exported / "root-ca.der", "--json")
    assert code == 0 and json.loads(out)["status"] == "UpToDate"


def test_verify_rejects_without_the_simulated_root(exported, capsys, tmp_path):
    code, out, _ = run(capsys, "quote", "verify", exported / "quote.bin", "--collateral", exported / "collateral.json")
    assert code == 1 and out.startswith("REJECTED")  # Intel's real root
    other = tmp_path / "other"
    assert run(capsys, "pki", "export", other)[0] == 0
    code, out, _ = run(capsys, "quote", "verify", exported / "quote.bin", "--collateral",
                       exported / "collateral.json", "--root", other / "root-ca.der")
    assert code == 1 and out.startswith("REJECTED")


@pytest.mark.parametrize("when", ["2099-01-01T00:00:00Z", "4070908800"])
def test_verify_rejects_expired_collateral(exported, capsys, when):
    code, out, _ = run(capsys, "quote", "verify", exported / "quote.bin", "--collateral",
                       exported / "collateral.json", "--root", exported / "root-ca.der", "--now", when)
    assert code == 1 and "expired" in out.lower()


def test_verify_rejects_a_tampered_quote(exported, capsys, tmp_path):
    data = bytearray((exported / "quote.bin").read_bytes())
    data[200] ^= 1
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    code, out, _ = run(capsys, "quote", "verify", tmp_path / "bad.bin", "--collateral",
                       exported / "collateral.json", "--root", exported / "root-ca.der")
    assert code == 1 and "signature" in out


def test_verify_needs_collateral(exported, capsys):
    code, _, err = run(capsys, "quote", "verify", exported / "quote.bin")
    assert code == 2 and "--collateral" in err  # a usage error


def test_out_of_date_profile_is_accepted_with_its_status(tmp_path, capsys):
    profile = tmp_path / "old.toml"
    profile.write_text("pcesvn = 12\n")
    out_dir = tmp_path / "out"
    assert main(["pki", "export", str(out_dir), "--profile", str(profile)]) == 0
    code, out, _ = run(capsys, "quote", "verify", out_dir / "quote.bin", "--collateral",
                       out_dir / "collateral.json", "--root", out_dir / "root-ca.der")
    assert code == 0
    assert "tcb_status  OutOfDate" in out and "TDXFS-SIM-SA-00003" in out and "policy" in out


def test_revoked_pck_export_makes_the_quote_rejected(tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main(["pki", "export", str(out_dir), "--revoke-pck"]) == 0
    code, out, _ = run(capsys, "quote", "verify", out_dir / "quote.bin", "--collateral",
                       out_dir / "collateral.json", "--root", out_dir / "root-ca.der")
    assert code == 1 and "Revoked" in out


def test_export_from_a_state_directory_verifies_its_tds_quotes(tmp_path, capsys):
    state = tmp_path / "state"
    td, close = build_td(default_profile(), str(state))
    try:
        (tmp_path / "q.bin").write_bytes(td.quote(NONCE))
        code, _, _ = run(capsys, "pki", "export", tmp_path / "out", "--state", state)  # while locked
        assert code == 0
    finally:
        close()
    assert not (tmp_path / "out" / "quote.bin").exists()
    code, out, _ = run(capsys, "quote", "verify", tmp_path / "q.bin", "--collateral",
                       tmp_path / "out" / "collateral.json", "--root", tmp_path / "out" / "root-ca.pem")
    assert code == 0 and "UpToDate" in out and NONCE.hex() in out


def test_export_from_a_directory_without_pki_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "pki", "export", tmp_path / "out", "--state", tmp_path / "empty")
    assert code == 1 and "platform-pki.json" in err


def test_decode_text_and_json(exported, capsys):
    code, out, _ = run(capsys, "quote", "decode", exported / "quote.bin")
    assert code == 0
    assert "header.version" in out and "@0" in out and "0x81" in out
    assert "CN=Intel SGX PCK Certificate" in out and "SIMULATED PKI" in out and "-----BEGIN" not in out
    code, out, _ = run(capsys, "quote", "decode", exported / "quote.bin", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["header.version"] == 4 and doc["cert_data.type"] == 6


def test_decode_refuses_a_truncated_quote(exported, capsys, tmp_path):
    (tmp_path / "short.bin").write_bytes((exported / "quote.bin").read_bytes()[:700])
    code, _, err = run(capsys, "quote", "decode", tmp_path / "short.bin")
    assert code == 1 and "short.bin" in err


def test_exit_codes_through_the_real_command(exported):
    base = [sys.executable, "-m", "tdxfs", "quote", "verify", str(exported / "quote.bin"),
            "--collateral", str(exported / "collateral.json")]
    ok = subprocess.run(base + ["--root", str(exported / "root-ca.der")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(base, capture_output=True, text=True)
    assert refused.returncode == 1 and "REJECTED" in refused.stdout
