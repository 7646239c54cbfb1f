"""Quotes built in-process (no mount) and judged by dcap-qvl, the field's own verifier."""

import time

import dcap_qvl
import pytest

from tdxfs.model import collateral as coll
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
