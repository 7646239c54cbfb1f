"""Collateral in Intel PCS formats, signed by the simulated TCB signing key."""

import datetime
import json

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tdxfs.model import collateral as coll
from tdxfs.model import qe

ISSUED = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
BUNDLE_FIELDS = ["pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info",
                 "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature"]


def _verify_rs(cert_pem: str, signature: bytes, data: str) -> None:
    cert = x509.load_pem_x509_certificates(cert_pem.encode())[0]
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    cert.public_key().verify(der, data.encode(), ec.ECDSA(hashes.SHA256()))


def test_tcb_info_is_v3_tdx_for_the_platforms_fmspc(pki):
    c = coll.issue(pki, issued=ISSUED)
    info = json.loads(c.tcb_info)
    assert info["id"] == "TDX" and info["version"] == 3
    assert bytes.fromhex(info["fmspc"]) == b"tdxfs\0" and info["pceId"] == "0000"
    assert info["issueDate"] == "2030-01-02T03:04:05Z"
    assert info["nextUpdate"] == "2030-02-01T03:04:05Z"  # 30 days, as PCS
    assert info["tdxModule"]["mrsigner"] == "00" * 48
    assert [i["id"] for i in info["tdxModuleIdentities"]] == ["TDX_01"]
    statuses = [level["tcbStatus"] for level in info["tcbLevels"]]
    assert statuses == ["UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
                        "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked"]
    for level in info["tcbLevels"]:
        assert len(level["tcb"]["sgxtcbcomponents"]) == 16 and len(level["tcb"]["tdxtcbcomponents"]) == 16
        assert isinstance(level["tcb"]["pcesvn"], int)


def test_qe_identity_is_v2_td_qe_naming_the_simulated_qe(pki):
    ident = json.loads(coll.issue(pki, issued=ISSUED).qe_identity)
    assert ident["id"] == "TD_QE" and ident["version"] == 2
    assert bytes.fromhex(ident["mrsigner"]) == qe.QE_MRSIGNER
    assert ident["isvprodid"] == qe.QE_ISVPRODID
    assert ident["tcbLevels"][0]["tcb"]["isvsvn"] == qe.QE_ISVSVN
    assert ident["tcbLevels"][0]["tcbStatus"] == "UpToDate"


def test_signatures_are_rs_over_the_exact_body_bytes(pki):
    c = coll.issue(pki)
    _verify_rs(c.tcb_info_issuer_chain, c.tcb_info_signature, c.tcb_info)
    _verify_rs(c.qe_identity_issuer_chain, c.qe_identity_signature, c.qe_identity)
    assert len(c.tcb_info_signature) == 64 and len(c.qe_identity_signature) == 64


def test_pcs_documents_carry_the_signed_body_verbatim(pki):
    c = coll.issue(pki)
    doc = c.tcb_info_document()
    assert doc.startswith('{"tcbInfo":' + c.tcb_info + ',"signature":"')
    assert json.loads(doc)["signature"] == c.tcb_info_signature.hex()
    ident = c.qe_identity_document()
    assert ident.startswith('{"enclaveIdentity":' + c.qe_identity + ',')
    assert json.loads(ident)["signature"] == c.qe_identity_signature.hex()


def test_issuer_chains_end_at_the_root(pki):
    c = coll.issue(pki)
    for chain, leaf in [(c.tcb_info_issuer_chain, pki.tcb_cert), (c.qe_identity_issuer_chain, pki.tcb_cert),
                        (c.pck_crl_issuer_chain, pki.pck_ca_cert)]:
        certs = x509.load_pem_x509_certificates(chain.encode())
        assert certs == [leaf, pki.root_cert]


def test_bundle_is_dcap_qvls_layout(pki):
    c = coll.issue(pki)
    bundle = json.loads(c.bundle_json())
    assert list(bundle) == BUNDLE_FIELDS
    loaded = dcap_qvl.QuoteCollateralV3.from_json(c.bundle_json())
    assert loaded.tcb_info == c.tcb_info and loaded.qe_identity == c.qe_identity
    assert bytes(loaded.pck_crl) == c.pck_crl and bytes(loaded.root_ca_crl) == c.root_ca_crl
    assert bytes(loaded.tcb_info_signature) == c.tcb_info_signature
    # and dcap-qvl's own serialisation is the same layout
    assert json.loads(loaded.to_json()) == bundle


def test_default_issue_date_is_a_day_back(pki):
    info = json.loads(coll.issue(pki).tcb_info)
    issued = datetime.datetime.fromisoformat(info["issueDate"].replace("Z", "+00:00"))
    age = datetime.datetime.now(datetime.timezone.utc) - issued
    assert datetime.timedelta(hours=23) < age < datetime.timedelta(hours=25)
