"""Quotes built in-process (no mount) and judged by dcap-qvl, the field's own verifier."""

import time

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tdxfs.model import collateral as coll
from tdxfs.model import pki as pki_module
from tdxfs.model.machine import in_memory_td
from tdxfs.model.profile import default_profile, profile_from_mapping

NONCE = bytes(range(64))


def make_td(mapping=None):
    """A fresh in-memory platform (secret, PKI, QE) and TD for a profile mapping."""
    return in_memory_td(profile_from_mapping(mapping) if mapping else default_profile())


def verify(quote: bytes, pki, collateral=None, root=None, now=None):
    """dcap-qvl's verdict trusting ``root`` (default: this PKI's root); raises ValueError."""
    collateral = collateral or coll.issue(pki)
    bundle = dcap_qvl.QuoteCollateralV3.from_json(collateral.bundle_json())
    return dcap_qvl.verify_with_root_ca(bytes(quote), bundle, root or pki.root_der(),
                                        int(time.time()) if now is None else now)


def rejection(quote: bytes, pki, **kw) -> str:
    """The reason dcap-qvl gives for refusing the quote (fails the test if it accepts)."""
    with pytest.raises(ValueError) as exc:
        verify(quote, pki, **kw)
    return " ".join(str(exc.value).split())


@pytest.fixture(scope="module")
def td():
    return make_td()


@pytest.fixture(scope="module")
def pki(td):
    return td.qe.pki


@pytest.fixture(scope="module")
def quote(td):
    return td.quote(NONCE)


# A PKI as the version before issue 7 kept it: CNs "tdxfs SIMULATED Intel SGX ... - not Intel",
# only an O, random serials, no marker extension (written out here, not taken from the code).
OLD_CN = {"root_ca": "tdxfs SIMULATED Intel SGX Root CA - not Intel",
          "pck_ca": "tdxfs SIMULATED Intel SGX PCK Platform CA - not Intel",
          "pck": "tdxfs SIMULATED Intel SGX PCK Certificate - not Intel",
          "tcb_signing": "tdxfs SIMULATED Intel SGX TCB Signing - not Intel"}


def old_pki_blobs(monkeypatch, tcb) -> dict:
    """``to_blobs()`` of a PKI made with the old names (the stored format did not change)."""

    def old_name(role):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OLD_CN[role]),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tdxfs SIMULATED PKI - not Intel Corporation")])

    with monkeypatch.context() as m:
        m.setattr(pki_module, "_name", old_name)
        m.setattr(pki_module, "_serial", lambda tail=None: x509.random_serial_number())
        m.setattr(pki_module, "_simulation_extension",
                  lambda: x509.SubjectAlternativeName([x509.DNSName("old.tdxfs.invalid")]))
        blobs = pki_module.PlatformPki.generate(tcb).to_blobs()
    root = x509.load_pem_x509_certificate(blobs["root_ca.crt"].encode())
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == OLD_CN["root_ca"]
    return blobs
