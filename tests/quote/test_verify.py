"""End to end: quotes judged by dcap-qvl with the exported root and collateral.

Accepted when - and only when - dcap-qvl is told to trust this platform's simulated root;
every tampered part, a revoked PCK, expired collateral and a DEBUG TD refused.
"""

import datetime
import json
import time

import dcap_qvl
import pytest

from tdxfs.model import collateral as coll
from tdxfs.model import quote as q
from tests.quote import reference as ref
from tests.quote.conftest import NONCE, make_td, rejection, verify


def test_quote_verifies_with_the_simulated_root(quote, pki):
    report = verify(quote, pki)
    assert report.status == "UpToDate"
    assert report.advisory_ids == []
    td = json.loads(report.to_json())["report"]["TD10"]
    assert td["report_data"] == NONCE.hex()
    assert bytes.fromhex(td["mr_td"]) == ref.get(quote, ref.BODY["mrtd"][0])
    assert report.ppid == pki.ppid


def test_exported_bundle_file_verifies(quote, pki, tmp_path):
    """The bundle as written to disk loads with dcap-qvl's own loader."""
    path = tmp_path / "collateral.json"
    path.write_text(coll.issue(pki).bundle_json())
    bundle = dcap_qvl.QuoteCollateralV3.from_json(path.read_text())
    assert dcap_qvl.verify_with_root_ca(quote, bundle, pki.root_der(), int(time.time())).status == "UpToDate"


def test_rtmr_extends_show_in_verified_quotes():
    td = make_td()
    td.extend(3, bytes([0x42]) * 48)
    report = verify(td.quote(NONCE), td.qe.pki)
    assert json.loads(report.to_json())["report"]["TD10"]["rt_mr3"] == td.rtmr(3).hex()


def test_rejected_when_told_to_trust_another_root(quote, pki):
    other = make_td().qe.pki
    rejection(quote, pki, root=other.root_der())
    # nor with the other platform's root *and* collateral
    rejection(quote, pki, root=other.root_der(), collateral=coll.issue(other))


def test_rejected_against_intels_real_root(quote, pki):
    """Nothing makes a simulated quote verify against Intel's root (dcap-qvl's default)."""
    bundle = dcap_qvl.QuoteCollateralV3.from_json(coll.issue(pki).bundle_json())
    with pytest.raises(ValueError):
        dcap_qvl.verify(quote, bundle, int(time.time()))


def _flip(quote: bytes, offset: int) -> bytes:
    out = bytearray(quote)
    out[offset] ^= 0x01
    return bytes(out)


def _chain_offsets(quote: bytes):
    """Absolute offsets of the three PEM certificates' starts in the quote."""
    chain = q.decode(quote)["pck_cert_chain"]
    base = len(quote) - len(chain)
    starts, pos = [], 0
    while (pos := chain.find(b"-----BEGIN CERTIFICATE-----", pos)) >= 0:
        starts.append(base + pos)
        pos += 1
    return starts


def _swap_base64(quote: bytes, offset: int) -> bytes:
    """Change one base64 character of the PEM into another valid one (a real DER change)."""
    out = bytearray(quote)
    out[offset] = ord("A") if out[offset] != ord("A") else ord("B")
    return bytes(out)


HEADER = ref.USER_DATA[0]
BODY = ref.BODY["mrtd"][0][0]
REPORTDATA = ref.BODY["reportdata"][0][0]
TAMPERS = {
    "header user data": lambda qt: _flip(qt, HEADER),
    "header QE SVN": lambda qt: _flip(qt, ref.QE_SVN[0]),
    "header QE vendor ID": lambda qt: _flip(qt, ref.QE_VENDOR_ID[0]),
    "body MRTD": lambda qt: _flip(qt, BODY),
    "body REPORTDATA": lambda qt: _flip(qt, REPORTDATA + 63),
    "body TD attributes": lambda qt: _flip(qt, ref.BODY["tdattributes"][0][0] + 1),
    "quote signature r": lambda qt: _flip(qt, ref.SIGNATURE[0]),
    "quote signature s": lambda qt: _flip(qt, ref.SIGNATURE[0] + 63),
    "attestation key": lambda qt: _flip(qt, ref.ATTESTATION_KEY[0] + 10),
    "QE report MRSIGNER": lambda qt: _flip(qt, ref.QE_REPORT[0] + ref.SGX_MRSIGNER[0]),
    "QE report REPORTDATA": lambda qt: _flip(qt, ref.QE_REPORT[0] + ref.SGX_REPORTDATA[0]),
    "QE report reserved byte": lambda qt: _flip(qt, ref.QE_REPORT[0] + 200),
    "QE report signature": lambda qt: _flip(qt, ref.QE_REPORT_SIGNATURE[0] + 5),
    "QE auth data": lambda qt: _flip(qt, ref.QE_AUTH_DATA_START + 7),
    "PCK leaf certificate (TBS)": lambda qt: _swap_base64(qt, _chain_offsets(qt)[0] + 400),
    "PCK leaf certificate (SGX extension)": lambda qt: _swap_base64(qt, _chain_offsets(qt)[0] + 1000),
    "PCK leaf certificate (signature)": lambda qt: _swap_base64(qt, _chain_offsets(qt)[1] - 60),
    "PCK Platform CA certificate": lambda qt: _swap_base64(qt, _chain_offsets(qt)[1] + 500),
    "PCK chain truncated to the leaf": lambda qt: qt[: _chain_offsets(qt)[1]],
}


@pytest.mark.parametrize("part", list(TAMPERS))
def test_every_tampered_part_is_rejected(quote, pki, part):
    tampered = TAMPERS[part](quote)
    assert tampered != quote
    rejection(tampered, pki)


def test_the_root_copy_in_the_quote_is_not_what_is_trusted(quote, pki):
    """dcap-qvl anchors the chain on the root the relying party gives it; the root copy at
    the end of the quote's PEM chain is not used, so a damaged copy changes nothing (and a
    quote cannot bring its own root)."""
    damaged = _swap_base64(quote, _chain_offsets(quote)[2] + 300)
    assert verify(damaged, pki).status == "UpToDate"
    rejection(damaged, pki, root=make_td().qe.pki.root_der())


def test_revoked_pck_is_rejected(quote, pki):
    reason = rejection(quote, pki, collateral=coll.issue(pki, revoke_pck=True))
    assert "Revoked" in reason


def _next_update(collateral) -> int:
    text = json.loads(collateral.tcb_info)["nextUpdate"]
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def test_expired_collateral_is_rejected(quote, pki):
    collateral = coll.issue(pki)
    deadline = _next_update(collateral)
    assert verify(quote, pki, collateral=collateral, now=deadline - 60).status == "UpToDate"
    reason = rejection(quote, pki, collateral=collateral, now=deadline + 1)
    assert "expired" in reason.lower()


def test_collateral_from_the_future_is_rejected(quote, pki):
    issued = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)
    rejection(quote, pki, collateral=coll.issue(pki, issued=issued))


def test_debug_td_is_rejected():
    """TD attributes with DEBUG (bit 0): dcap-qvl refuses the quote outright."""
    td = make_td({"attributes": ref.SEPT_VE_DISABLE | ref.DEBUG})
    assert "Debug" in rejection(td.quote(NONCE), td.qe.pki)


def test_td_without_sept_ve_disable_is_rejected():
    td = make_td({"attributes": 0})
    assert "SEPT_VE_DISABLE" in rejection(td.quote(NONCE), td.qe.pki)


TCB_CASES = [
    ({}, "UpToDate", []),
    ({"tee_tcb_info": {"tee_tcb_svn": "050102" + "00" * 13}}, "SWHardeningNeeded", ["TDXFS-SIM-SA-00001"]),
    ({"cpusvn": "03040218ff03" + "00" * 10}, "ConfigurationNeeded", ["TDXFS-SIM-SA-00002"]),
    ({"cpusvn": "03040218ff03" + "00" * 10, "tee_tcb_info": {"tee_tcb_svn": "050102" + "00" * 13}},
     "ConfigurationAndSWHardeningNeeded", ["TDXFS-SIM-SA-00001", "TDXFS-SIM-SA-00002"]),
    ({"pcesvn": 12}, "OutOfDate", ["TDXFS-SIM-SA-00003"]),
    ({"pcesvn": 5}, "OutOfDate", ["TDXFS-SIM-SA-00003"]),
    ({"tee_tcb_info": {"tee_tcb_svn": "040103" + "00" * 13}}, "OutOfDate", ["TDXFS-SIM-SA-00003"]),
    ({"cpusvn": "04030218ff03" + "00" * 10}, "OutOfDate", ["TDXFS-SIM-SA-00003"]),
    ({"cpusvn": "01020202030100" + "00" * 9}, "OutOfDateConfigurationNeeded",
     ["TDXFS-SIM-SA-00002", "TDXFS-SIM-SA-00003"]),
    # above every level: still UpToDate (TEE_TCB_SVN[1], the module's major version, stays 1)
    ({"pcesvn": 200, "cpusvn": "ff" * 16, "tee_tcb_info": {"tee_tcb_svn": "ff01" + "ff" * 14}}, "UpToDate", []),
]


@pytest.mark.parametrize("mapping, status, advisories", TCB_CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(TCB_CASES)])
def test_profile_selects_the_tcb_status(mapping, status, advisories):
    td = make_td(mapping)
    report = verify(td.quote(NONCE), td.qe.pki)
    assert report.status == status
    assert sorted(report.advisory_ids) == advisories


def test_revoked_tcb_level_is_rejected():
    """PCE SVN below every level but the floor: the level says Revoked, and dcap-qvl
    refuses the quote rather than accept it with that status."""
    td = make_td({"pcesvn": 4})
    assert "Revoked" in rejection(td.quote(NONCE), td.qe.pki)


@pytest.mark.parametrize("mapping, reason", [
    # TEE_TCB_SVN[1] is the TDX module's major version: TCB info names only "TDX_01"
    ({"tee_tcb_info": {"tee_tcb_svn": "0502" + "03" + "00" * 13}}, "TDX_02"),
    # tdxModule expects Intel's module: MRSIGNERSEAM zero, SEAM attributes zero
    ({"tee_tcb_info": {"mrsignerseam": "11" * 48}}, "MRSIGNER"),
    ({"tee_tcb_info": {"attributes": 1}}, "SEAMATTRIBUTES"),
])
def test_tdx_module_identity_is_checked(mapping, reason):
    td = make_td(mapping)
    assert reason in rejection(td.quote(NONCE), td.qe.pki)
