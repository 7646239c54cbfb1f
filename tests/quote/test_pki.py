"""The simulated PKI: unmistakably simulated, shaped as verifiers parse Intel's."""

import datetime

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from tdxfs.errors import ConfigError
from tdxfs.model.pki import FMSPC, SGX_EXTENSION_OID, SIMULATION_OID, PckTcb, PlatformPki, is_simulated

from tests.quote.conftest import old_pki_blobs

TCB = PckTcb(bytes.fromhex("04040218ff0300000000000000000000"), 13)


@pytest.fixture(scope="module")
def pki():
    return PlatformPki.generate(TCB)


def _certs(pki):
    return {"root": pki.root_cert, "pck_ca": pki.pck_ca_cert, "pck": pki.pck_cert, "tcb": pki.tcb_cert}


# Intel's names, written out here (Intel SGX PCK Certificate and CRL Profile), not taken from the code.
INTEL_CN = {"root": "Intel SGX Root CA", "pck_ca": "Intel SGX PCK Platform CA",
            "pck": "Intel SGX PCK Certificate", "tcb": "Intel SGX TCB Signing"}
ISSUER = {"root": "root", "pck_ca": "root", "pck": "pck_ca", "tcb": "root"}


def _one(dn, oid) -> str:
    values = dn.get_attributes_for_oid(oid)
    assert len(values) == 1, dn
    return values[0].value


def test_common_names_are_intels_exactly(pki):
    for name, cert in _certs(pki).items():
        assert _one(cert.subject, NameOID.COMMON_NAME) == INTEL_CN[name]
        assert _one(cert.issuer, NameOID.COMMON_NAME) == INTEL_CN[ISSUER[name]]
        assert cert.issuer == _certs(pki)[ISSUER[name]].subject


def test_everything_but_the_common_name_says_simulated(pki):
    for name, cert in _certs(pki).items():
        for dn in (cert.subject, cert.issuer):
            org = _one(dn, NameOID.ORGANIZATION_NAME)
            unit = _one(dn, NameOID.ORGANIZATIONAL_UNIT_NAME)
            assert "SIMULATED" in org and "not Intel" in org, name
            assert "SIMULATED" in unit and "not issued by Intel" in unit, name
        # the serial number starts with "tdxfsSIM" and fills the 20 bytes RFC 5280 allows
        assert cert.serial_number.to_bytes(20, "big")[:8] == b"tdxfsSIM", name
        assert cert.serial_number.bit_length() > 19 * 8, name
        # the marker extension: non-critical, a UTF8String notice
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SIMULATION_OID))
        assert not ext.critical
        notice = ext.value.value
        assert notice[0] == 0x0C and b"SIMULATED" in notice and b"not issued by Intel" in notice  # UTF8String
        assert is_simulated(cert), name
    # the CRL distribution points lead nowhere real
    for cert in _certs(pki).values():
        points = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
        assert all(".invalid/" in n.value for p in points for n in p.full_name)


def test_is_simulated_refuses_a_certificate_without_the_marks(pki):
    """The mark check can fail: a certificate with Intel's CN and no tdxfs marks is not ours."""
    from cryptography.hazmat.primitives import hashes

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intel SGX Root CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation")])
    plain = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(datetime.datetime(2020, 1, 1)).not_valid_after(datetime.datetime(2030, 1, 1))
             .sign(key, hashes.SHA256()))
    assert not is_simulated(plain)


def test_chain_shape_as_intel_pcs(pki):
    root, pck_ca, pck, tcb = pki.root_cert, pki.pck_ca_cert, pki.pck_cert, pki.tcb_cert
    assert root.issuer == root.subject
    assert pck_ca.issuer == root.subject and tcb.issuer == root.subject and pck.issuer == pck_ca.subject
    expected = {"root": (True, 1), "pck_ca": (True, 0), "pck": (False, None), "tcb": (False, None)}
    for name, cert in _certs(pki).items():
        bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
        ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
        assert bc.critical and ku.critical, name
        assert (bc.value.ca, bc.value.path_length) == expected[name], name
        assert ku.value.key_cert_sign == ku.value.crl_sign == bc.value.ca, name
        assert ku.value.digital_signature == (not bc.value.ca), name
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"
        assert cert.signature_hash_algorithm.name == "sha256"
        # webpki-based verifiers want serverAuth in an EKU if there is one: there is none
        assert ExtensionOID.EXTENDED_KEY_USAGE not in [e.oid for e in cert.extensions], name
    years = {name: (c.not_valid_after_utc - c.not_valid_before_utc).days / 365.25 for name, c in _certs(pki).items()}
    assert round(years["pck_ca"]) == 15 and round(years["pck"]) == 7 and round(years["tcb"]) == 7
    assert root.not_valid_after_utc == datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)


def test_sgx_extension_as_dcap_qvl_parses_it(pki):
    ext = pki.pck_cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    assert not ext.critical  # a critical unknown extension would fail every other verifier
    parsed = dcap_qvl.parse_pck_extension_from_pem(pki.pck_chain_pem().encode())
    assert parsed.ppid == pki.ppid
    assert parsed.cpu_svn == TCB.cpusvn
    assert parsed.pce_svn == TCB.pcesvn
    assert parsed.pce_id == bytes(2)
    assert parsed.fmspc == FMSPC
    assert parsed.sgx_type == 1
    assert parsed.platform_instance_id == pki.platform_instance_id
    # the 16 CPUSVN components, one INTEGER each, equal the CPUSVN bytes (DER INTEGER content)
    for i, svn in enumerate(TCB.cpusvn):
        value = parsed.get_value(f"{SGX_EXTENSION_OID}.2.{i + 1}")
        assert int.from_bytes(value, "big") == svn, i


def test_fmspc_is_not_an_intel_part():
    assert FMSPC == b"tdxfs\0"


def test_reissued_pck_keeps_the_key_and_carries_the_new_tcb(pki):
    lower = PckTcb(TCB.cpusvn, 5)
    again = pki.reissue_pck(lower)
    assert again.tcb == lower and again.pck_key is pki.pck_key
    assert again.pck_cert.serial_number != pki.pck_cert.serial_number
    assert dcap_qvl.parse_pck_extension_from_pem(again.pck_chain_pem().encode()).pce_svn == 5


def test_crls_name_their_issuer_and_revoke_on_request(pki):
    root_crl = x509.load_der_x509_crl(pki.root_ca_crl())
    pck_crl = x509.load_der_x509_crl(pki.pck_crl())
    revoked = x509.load_der_x509_crl(pki.pck_crl(revoke_pck=True))
    assert root_crl.issuer == pki.root_cert.subject and root_crl.is_signature_valid(pki.root_key.public_key())
    assert pck_crl.issuer == pki.pck_ca_cert.subject and pck_crl.is_signature_valid(pki.pck_ca_key.public_key())
    assert len(root_crl) == 0 and len(pck_crl) == 0
    assert revoked.get_revoked_certificate_by_serial_number(pki.pck_cert.serial_number) is not None
    assert (pck_crl.next_update_utc - pck_crl.last_update_utc).days == 30
    assert (root_crl.next_update_utc - root_crl.last_update_utc).days == 365


def test_blobs_round_trip(pki):
    blobs = pki.to_blobs()
    assert all(isinstance(v, str) for v in blobs.values())
    again = PlatformPki.from_blobs(blobs)
    assert again.to_blobs() == blobs
    assert again.root_der() == pki.root_der()
    assert again.attestation_key.private_numbers() == pki.attestation_key.private_numbers()


@pytest.mark.parametrize("damage", ["format", "missing key", "bad pem", "swapped key", "short ppid", "not a dict"])
def test_damaged_blobs_are_config_errors(pki, damage):
    blobs = dict(pki.to_blobs())
    other = PlatformPki.generate(TCB).to_blobs()
    if damage == "format":
        blobs["format"] = "something-else"
    elif damage == "missing key":
        del blobs["pck.key"]
    elif damage == "bad pem":
        blobs["root_ca.crt"] = blobs["root_ca.crt"].replace("M", "N", 5)
    elif damage == "swapped key":
        blobs["pck.key"] = other["pck.key"]
    elif damage == "short ppid":
        blobs["ppid"] = "00" * 8
    else:
        blobs = ["not", "a", "dict"]
    with pytest.raises(ConfigError):
        PlatformPki.from_blobs(blobs, "test PKI")


def test_platforms_get_their_own_keys(pki):
    other = PlatformPki.generate(TCB)
    assert other.root_der() != pki.root_der()
    assert other.ppid != pki.ppid
    assert other.attestation_key.private_numbers() != pki.attestation_key.private_numbers()


# -- a PKI kept by an older version (CNs "tdxfs SIMULATED Intel SGX ... - not Intel") ----------------

def test_an_older_pki_loads_reissued_with_the_current_names(monkeypatch):
    blobs = old_pki_blobs(monkeypatch, TCB)
    old = {name: x509.load_pem_x509_certificate(blobs[f"{name}.crt"].encode())
           for name in ("root_ca", "pck_ca", "pck", "tcb_signing")}
    pki = PlatformPki.from_blobs(blobs)
    assert pki.renamed and pki.has_current_names()
    for name, cert in _certs(pki).items():
        assert _one(cert.subject, NameOID.COMMON_NAME) == INTEL_CN[name]
        assert _one(cert.issuer, NameOID.COMMON_NAME) == INTEL_CN[ISSUER[name]]
        assert is_simulated(cert), name
    # the same keys and validity: only names, serials and the marker changed
    for role, cert in zip(("root_ca", "pck_ca", "pck", "tcb_signing"),
                          (pki.root_cert, pki.pck_ca_cert, pki.pck_cert, pki.tcb_cert)):
        assert cert.public_key().public_numbers() == old[role].public_key().public_numbers()
        assert cert.not_valid_before_utc == old[role].not_valid_before_utc
        assert cert.not_valid_after_utc == old[role].not_valid_after_utc
    assert dcap_qvl.parse_pck_extension_from_pem(pki.pck_chain_pem().encode()).ppid == pki.ppid
    # deterministic: a second load (a `tdxfs pki export` beside the daemon) is byte-identical
    again = PlatformPki.from_blobs(blobs)
    assert again.to_blobs() == pki.to_blobs()
    # saved, it loads as current without another re-issue
    saved = PlatformPki.from_blobs(pki.to_blobs())
    assert not saved.renamed and saved.to_blobs() == pki.to_blobs()


def test_a_current_pki_is_not_reissued_on_load(pki):
    again = PlatformPki.from_blobs(pki.to_blobs())
    assert not again.renamed and again.pck_cert == pki.pck_cert and again.root_der() == pki.root_der()
