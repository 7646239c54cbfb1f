"""TDX quote version 4: its constants, and decode/encode by name over the table.

The layout is ``tdxfs.model.abi.quote.QUOTE_V4``: the header, the TD quote body, the
signature data with certification data type 6 (the QE report, its signature, the QE auth
data) wrapping type 5 (the PEM chain: PCK leaf, PCK CA, root). Like ``tdxfs.model.abi``,
nothing here signs or verifies: it only names bytes. :func:`decode` reads that layout
whatever the version and type fields say (judging them is the verifier's work,
``tdxfs.verify``), so ``tdxfs quote decode`` shows a tampered quote as it is.
"""

from typing import Dict, Mapping

from tdxfs.model import abi
from tdxfs.model.abi.layout import Field, Value
from tdxfs.model.abi.quote import QUOTE_V4, QUOTE_V4_FIXED, TD_QUOTE_BODY

QUOTE_VERSION = 4
ATTESTATION_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")  # verifiers require it
CERT_DATA_QE_REPORT = 6  # QE report certification data (wraps the type-5 chain)
CERT_DATA_PCK_CHAIN = 5  # concatenated PEM: PCK leaf, PCK CA, root

# The rows at fixed offsets (everything before the QE auth data), by name.
QUOTE_FIELDS: Dict[str, Field] = QUOTE_V4.fields
FIXED_SIZE = QUOTE_V4.fixed_size  # the QE auth data starts here
HEADER = QUOTE_V4_FIXED.span("header")
TD_BODY = QUOTE_V4_FIXED.span("body")
SIGNED = slice(HEADER.start, TD_BODY.stop)  # what the attestation key signs: header and body
QE_REPORT = QUOTE_V4_FIXED.span("qe_report")  # what the PCK key signs

# TD quote body row <- TDREPORT row (tdxfs.model.abi names): the QE copies these.
BODY_FROM_TDREPORT = {
    "tee_tcb_svn": "tee_tcb_info.tee_tcb_svn",
    "mrseam": "tee_tcb_info.mrseam",
    "mrsignerseam": "tee_tcb_info.mrsignerseam",
    "seamattributes": "tee_tcb_info.attributes",
    "tdattributes": "tdinfo.attributes",
    "xfam": "tdinfo.xfam",
    "mrtd": "tdinfo.mrtd",
    "mrconfigid": "tdinfo.mrconfigid",
    "mrowner": "tdinfo.mrowner",
    "mrownerconfig": "tdinfo.mrownerconfig",
    "rtmr0": "tdinfo.rtmr0",
    "rtmr1": "tdinfo.rtmr1",
    "rtmr2": "tdinfo.rtmr2",
    "rtmr3": "tdinfo.rtmr3",
    "reportdata": "reportdata",
}

# TDREPORT bytes -> the 584-byte TD quote body (every body row mapped: checked at import).
body_from_tdreport = TD_QUOTE_BODY.copier(abi.TDREPORT, BODY_FROM_TDREPORT)


def decode(quote: bytes) -> Dict[str, bytes]:
    """Split a v4 TD quote into named fields: the fixed rows, then ``qe_auth_data``,
    ``pck_cert_data.type``/``.size`` and ``pck_cert_chain``. Bytes after the chain are
    not part of the quote. ValueError when the quote ends early."""
    return QUOTE_V4.decode(quote)


def encode(fields: Mapping[str, Value]) -> bytes:
    """The inverse of :func:`decode`. Rows not given are zero; the size rows not given
    (signature data length, both certification data sizes, the QE auth data size) are
    computed, and those given are written as given, so a decoded quote, tampered or not,
    encodes back to the same bytes. A whole part may be given by its row name
    (``header``, ``body``, ``qe_report``). KeyError for an unknown name."""
    return QUOTE_V4.encode(fields)


def as_json(quote: bytes) -> Dict[str, object]:
    """Fields as hex strings, integer fields as numbers, the PEM chain as text.
    ValueError when the quote ends early."""
    out: Dict[str, object] = {}
    for name, value in decode(quote).items():
        if name in QUOTE_V4.integers:
            out[name] = int.from_bytes(value, "little")
        elif name == "pck_cert_chain":
            out[name] = value.decode("ascii", "replace")
        else:
            out[name] = value.hex()
    return out
