"""The simulated TD Quoting Enclave: TDREPORT in, version-4 quote out.

What Intel's TD QE does, with the simulated PKI's keys (``tdxfs.model.pki``):

1. Check the TDREPORT with the platform (the MAC and both hashes). A report the platform
   did not make fails the request like a failed GetQuote: DeviceError, EIO.
2. Header: version 4, key type 2 (ECDSA P-256), TEE type 0x81, the QE's ISVSVN and the
   platform's PCE SVN (QVL's order), Intel's QE vendor ID, and in the user data the QE ID
   (16 bytes identifying this platform's QE, as Intel's QE puts there) plus 4 zero bytes.
3. TD quote body: the 584 bytes copied field by field from the TDREPORT.
4. ECDSA-P256-SHA256 signature over the header and the body by the platform's attestation key.
5. Certification data type 6: the QE's own SGX REPORT, whose REPORTDATA[0:32] is
   SHA-256(attestation public key || QE auth data) and the rest zero, signed by the PCK
   key; the QE auth data; and the type-5 PEM chain (PCK leaf, PCK Platform CA, root).

Everything but the body and the quote signature is the same for every quote of a
platform, so it is encoded once (``tdxfs.model.quote.encode``, which also computes the
sizes); a quote then costs a report check, a copy of that template with the body in it
and one ECDSA signature. Every byte is placed by the tables in ``tdxfs.model.abi.quote``.
The QE report is signed deterministically (RFC 6979) where OpenSSL can, so a platform
kept in a state directory produces the same certification data after every restart.

The QE's identity (MRSIGNER, MRENCLAVE, ISVPRODID, ISVSVN, ATTRIBUTES) is synthetic: the
QE identity collateral (``tdxfs.model.collateral``) names these values, not Intel's.
"""

import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tdxfs.errors import DeviceError, TdxfsError
from tdxfs.model import quote as q
from tdxfs.model.abi.quote import HEADER, SGX_REPORT_BODY
from tdxfs.model.pki import PlatformPki, raw_public_key
from tdxfs.model.td import Platform

# The simulated QE's identity. ISVPRODID 2 is the TD QE's product ID; the rest is ours.
QE_MRSIGNER = hashlib.sha256(b"tdxfs SIMULATED TD quoting enclave signer").digest()
QE_MRENCLAVE = hashlib.sha256(b"tdxfs SIMULATED TD quoting enclave v1").digest()
QE_ISVPRODID = 2
QE_ISVSVN = 4
QE_MISCSELECT = 0
# INIT | MODE64BIT | PROVISIONKEY, XFRM x87|SSE|AVX|...: the flags a production QE runs with
# (DEBUG, bit 1, clear: verifiers refuse a debug QE).
QE_ATTRIBUTES = bytes.fromhex("1500000000000000e700000000000000")
# Intel's QE library fills its 32-byte auth data with 0x00..0x1f; verifiers expect 32 bytes.
QE_AUTH_DATA = bytes(range(32))

_ECDSA = ec.ECDSA(hashes.SHA256())

_SIGNATURE = q.QUOTE_FIELDS["signature"].span


def _raw_signature(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _sign_deterministic(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """RFC 6979 where OpenSSL has it (3.2+), so the QE report signature is the same after
    every restart of a platform kept in a state directory; a random nonce otherwise."""
    try:
        return _raw_signature(key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
    except UnsupportedAlgorithm:
        return _raw_signature(key.sign(data, _ECDSA))


def qe_id(pki: PlatformPki) -> bytes:
    """16 bytes naming this platform's QE (Intel's QE puts such an ID in the user data)."""
    return hashlib.sha256(b"tdxfs QE ID" + pki.ppid).digest()[:16]


def qe_report(pki: PlatformPki) -> bytes:
    """The QE's 384-byte SGX REPORT body, binding the attestation key and the QE auth data."""
    binding = hashlib.sha256(raw_public_key(pki.attestation_key) + QE_AUTH_DATA).digest()
    return SGX_REPORT_BODY.encode({
        "cpusvn": pki.tcb.cpusvn,
        "miscselect": QE_MISCSELECT,
        "attributes": QE_ATTRIBUTES,
        "mrenclave": QE_MRENCLAVE,
        "mrsigner": QE_MRSIGNER,
        "isvprodid": QE_ISVPRODID,
        "isvsvn": QE_ISVSVN,
        "reportdata": binding.ljust(SGX_REPORT_BODY.fields["reportdata"].size, b"\0"),
    })


def header(pki: PlatformPki) -> bytes:
    return HEADER.encode({
        "version": q.QUOTE_VERSION,
        "attestation_key_type": q.ATTESTATION_KEY_TYPE_ECDSA_P256,
        "tee_type": q.TEE_TYPE_TDX,
        "qe_svn": QE_ISVSVN,
        "pce_svn": pki.tcb.pcesvn,
        "qe_vendor_id": q.INTEL_QE_VENDOR_ID,
        "user_data": qe_id(pki).ljust(HEADER.fields["user_data"].size, b"\0"),
    })


class QuotingEnclave:
    """``qe(tdreport) -> quote`` for one platform; the ``qe`` hook of a TrustDomain.

    Thread-safe: it holds no mutable state (the signing key is used read-only).
    """

    def __init__(self, platform: Platform, pki: PlatformPki):
        self.platform = platform
        self.pki = pki
        self._key = pki.attestation_key
        report = qe_report(pki)
        # Everything but the body and its signature is the same for every quote: the QE
        # report and its PCK signature are signed once, and each quote starts from this.
        self._template = q.encode({
            "header": header(pki),
            "attestation_key": raw_public_key(self._key),
            "cert_data.type": q.CERT_DATA_QE_REPORT,
            "qe_report": report,
            "qe_report_signature": _sign_deterministic(pki.pck_key, report),
            "qe_auth_data": QE_AUTH_DATA,
            "pck_cert_data.type": q.CERT_DATA_PCK_CHAIN,
            "pck_cert_chain": pki.pck_chain_pem().encode(),
        })

    def __call__(self, tdreport: bytes) -> bytes:
        try:
            result = self.platform.verify_report(tdreport)
        except TdxfsError as exc:  # wrong size: the QE refuses it like any bad report
            raise DeviceError(f"quote refused: {exc.reason}") from None
        if not result.ok:
            raise DeviceError(f"quote refused: the TDREPORT does not verify on this platform ({result})")
        quote = bytearray(self._template)
        quote[q.TD_BODY] = q.body_from_tdreport(tdreport)
        quote[_SIGNATURE] = _raw_signature(self._key.sign(bytes(quote[q.SIGNED]), _ECDSA))
        return bytes(quote)
