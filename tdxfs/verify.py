"""Quote verification by the field's own verifier: dcap-qvl (Phala's Rust DCAP quote
verification library, via its Python bindings). Nothing here re-implements a check.

dcap-qvl verifies: the PCK chain, TCB info chain and QE identity chain to the trusted root
with both CRLs; the QE report signature by the PCK key; the attestation key binding; the
quote signature; the QE identity (MRSIGNER, ISVPRODID, masked MISCSELECT and ATTRIBUTES,
ISVSVN); the TCB level for the PCK certificate's CPUSVN/PCESVN/FMSPC and the body's
TEE_TCB_SVN; TD attributes (no DEBUG, SEPT_VE_DISABLE set, no reserved bits); the
collateral's issue and next-update dates. It accepts with a TCB status and refuses a
Revoked one.
"""

import datetime
import json
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from tdxfs.errors import TdxfsError


class VerifierMissing(TdxfsError):
    """dcap-qvl is not installed."""


@dataclass(frozen=True)
class Verdict:
    """An accepted quote: the TCB status and what the verifier vouches for."""

    status: str
    advisory_ids: List[str]
    td: Dict[str, str]  # the TD quote body fields, as dcap-qvl reports them (hex)
    raw: dict  # dcap-qvl's whole verified report


class Rejected(Exception):
    """The verifier refused the quote; the message is its reason."""


def _dcap_qvl():
    try:
        import dcap_qvl
    except ImportError:
        raise VerifierMissing("quote verification needs dcap-qvl: pip install 'dcap-qvl>=0.7'") from None
    return dcap_qvl


def root_der(data: bytes) -> bytes:
    """A root certificate file, PEM or DER, as DER."""
    if data.lstrip().startswith(b"-----BEGIN"):
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
        except ValueError as exc:
            raise TdxfsError(f"root certificate is not valid PEM: {exc}") from None
    return data


def parse_time(text: Optional[str]) -> int:
    """Seconds since the epoch, or an ISO 8601 time (``2030-01-01T00:00:00Z``); None is now."""
    if text is None:
        return int(time.time())
    try:
        return int(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise TdxfsError(f"--now {text!r}: not seconds since the epoch nor an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp())


def verify(quote: bytes, collateral_json: str, root: Optional[bytes], now: int) -> Verdict:
    """Verify with dcap-qvl. ``root`` is the DER root to trust; None trusts Intel's real
    SGX Root CA (built into dcap-qvl), which no tdxfs quote chains to."""
    dcap_qvl = _dcap_qvl()
    try:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    except ValueError as exc:
        raise TdxfsError(f"collateral is not a QuoteCollateralV3 bundle: {exc}") from None
    try:
        if root is None:
            report = dcap_qvl.verify(quote, collateral, now)
        else:
            report = dcap_qvl.verify_with_root_ca(quote, collateral, root, now)
    except ValueError as exc:
        reason = str(exc).removeprefix("Verification failed: ")
        raise Rejected(" ".join(reason.split())) from None
    raw = json.loads(report.to_json())
    body = raw.get("report", {})
    td = body.get("TD10") or body.get("TD15", {}).get("base") or {}
    return Verdict(status=report.status, advisory_ids=list(report.advisory_ids), td=td, raw=raw)
