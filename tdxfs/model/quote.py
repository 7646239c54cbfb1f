"""TDX quote version 4: named offsets and the bytes <-> fields conversion, both ways.

Layout (tdx-abi.md section 4; Intel DCAP ``sgx_quote_4.h``, QVL ``QuoteStructures.h``).
Integers are little-endian; the ECDSA signatures and public keys are big-endian r||s and
x||y. Everything up to the QE auth data sits at a fixed offset when the certification data
is type 6 (QE report certification data), which is what every TD quote carries; from the
QE auth data on, sizes are read from the quote itself.

    0    header (48)               48   TD quote body (584)       632  signature data length
    636  quote signature (64)      700  attestation public key    764  cert data type (6), size
    770  QE report (384)           1154 QE report signature (64)  1218 QE auth data size
    1220 QE auth data ...          then cert data type (5), size, PEM chain

Like ``tdxfs.model.abi``, nothing here signs or verifies: it only names bytes.
"""

from typing import Dict, Mapping

from tdxfs.model.abi import Field, check_tiling, field_table

QUOTE_VERSION = 4
ATTESTATION_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")  # verifiers require it
CERT_DATA_QE_REPORT = 6  # QE report certification data (wraps the type-5 chain)
CERT_DATA_PCK_CHAIN = 5  # concatenated PEM: PCK leaf, PCK CA, root

HEADER_SIZE = 48
TD_BODY_SIZE = 584
SGX_REPORT_SIZE = 384
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 64


# Every byte before the QE auth data belongs to exactly one row (checked below at import).
QUOTE_FIELDS: Dict[str, Field] = field_table(
    # header
    ("header.version", 0, 2, True),
    ("header.attestation_key_type", 2, 2, True),
    ("header.tee_type", 4, 4, True),
    ("header.qe_svn", 8, 2, True),
    ("header.pce_svn", 10, 2, True),
    ("header.qe_vendor_id", 12, 16),
    ("header.user_data", 28, 20),
    # TD quote body (TDX 1.0, 584 bytes)
    ("body.tee_tcb_svn", 48, 16),
    ("body.mrseam", 64, 48),
    ("body.mrsignerseam", 112, 48),
    ("body.seamattributes", 160, 8, True),
    ("body.tdattributes", 168, 8, True),
    ("body.xfam", 176, 8, True),
    ("body.mrtd", 184, 48),
    ("body.mrconfigid", 232, 48),
    ("body.mrowner", 280, 48),
    ("body.mrownerconfig", 328, 48),
    ("body.rtmr0", 376, 48),
    ("body.rtmr1", 424, 48),
    ("body.rtmr2", 472, 48),
    ("body.rtmr3", 520, 48),
    ("body.reportdata", 568, 64),
    # signature data
    ("signature_data_size", 632, 4, True),
    ("signature", 636, 64),
    ("attestation_key", 700, 64),
    ("cert_data.type", 764, 2, True),
    ("cert_data.size", 766, 4, True),
    # QE report certification data: the QE's SGX REPORT body ...
    ("qe_report.cpusvn", 770, 16),
    ("qe_report.miscselect", 786, 4, True),
    ("qe_report.reserved1", 790, 28),
    ("qe_report.attributes", 818, 16),
    ("qe_report.mrenclave", 834, 32),
    ("qe_report.reserved2", 866, 32),
    ("qe_report.mrsigner", 898, 32),
    ("qe_report.reserved3", 930, 96),
    ("qe_report.isvprodid", 1026, 2, True),
    ("qe_report.isvsvn", 1028, 2, True),
    ("qe_report.reserved4", 1030, 60),
    ("qe_report.reportdata", 1090, 64),
    # ... its signature by the PCK key, and the size of the QE auth data that follows
    ("qe_report_signature", 1154, 64),
    ("qe_auth_data.size", 1218, 2, True),
)

FIXED_SIZE = 1220  # bytes at fixed offsets; the QE auth data starts here
HEADER = slice(0, HEADER_SIZE)
TD_BODY = slice(HEADER_SIZE, HEADER_SIZE + TD_BODY_SIZE)
SIGNED = slice(0, HEADER_SIZE + TD_BODY_SIZE)  # what the attestation key signs: [0, 632)
QE_REPORT = slice(770, 770 + SGX_REPORT_SIZE)  # what the PCK key signs
CERT_DATA_BODY_START = 770

# The variable tail, in order after the fixed part (names as decode() returns them).
VARIABLE_FIELDS = ("qe_auth_data", "pck_cert_data.type", "pck_cert_data.size", "pck_cert_chain")
VARIABLE_INTEGERS = {"pck_cert_data.type", "pck_cert_data.size"}

# Quote body field <- TDREPORT field (tdxfs.model.abi names): the QE copies these.
BODY_FROM_TDREPORT = {
    "body.tee_tcb_svn": "tee_tcb_info.tee_tcb_svn",
    "body.mrseam": "tee_tcb_info.mrseam",
    "body.mrsignerseam": "tee_tcb_info.mrsignerseam",
    "body.seamattributes": "tee_tcb_info.attributes",
    "body.tdattributes": "tdinfo.attributes",
    "body.xfam": "tdinfo.xfam",
    "body.mrtd": "tdinfo.mrtd",
    "body.mrconfigid": "tdinfo.mrconfigid",
    "body.mrowner": "tdinfo.mrowner",
    "body.mrownerconfig": "tdinfo.mrownerconfig",
    "body.rtmr0": "tdinfo.rtmr0",
    "body.rtmr1": "tdinfo.rtmr1",
    "body.rtmr2": "tdinfo.rtmr2",
    "body.rtmr3": "tdinfo.rtmr3",
    "body.reportdata": "reportdata",
}


def _check_table() -> None:
    check_tiling(QUOTE_FIELDS, FIXED_SIZE, "quote")
    body = [QUOTE_FIELDS[name] for name in QUOTE_FIELDS if name.startswith("body.")]
    if sum(f.size for f in body) != TD_BODY_SIZE or set(BODY_FROM_TDREPORT) != {f.name for f in body}:
        raise AssertionError("TD quote body rows do not add up to 584 bytes")


_check_table()


def _u(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def decode(quote: bytes) -> Dict[str, bytes]:
    """Split a v4 TD quote into named fields: the fixed rows, then the variable tail."""
    if len(quote) < FIXED_SIZE:
        raise ValueError(f"a TD quote with QE report certification data is at least {FIXED_SIZE} bytes, "
                         f"got {len(quote)}")
    out = {name: field.get(quote) for name, field in QUOTE_FIELDS.items()}
    pos = FIXED_SIZE
    auth_size = _u(out["qe_auth_data.size"])
    out["qe_auth_data"] = bytes(quote[pos : pos + auth_size])
    pos += auth_size
    if len(quote) < pos + 6:
        raise ValueError("quote ends inside the QE auth data or the PCK certification data header")
    out["pck_cert_data.type"] = bytes(quote[pos : pos + 2])
    out["pck_cert_data.size"] = bytes(quote[pos + 2 : pos + 6])
    pos += 6
    chain_size = _u(out["pck_cert_data.size"])
    if len(quote) < pos + chain_size:
        raise ValueError(f"quote ends inside the PCK certificate chain ({chain_size} bytes announced)")
    out["pck_cert_chain"] = bytes(quote[pos : pos + chain_size])
    return out


def encode(fields: Mapping[str, bytes]) -> bytes:
    """The inverse of :func:`decode`: every fixed row and the variable tail, as given.

    Sizes are written as given too (a decoder's view of a quote, tampered or not, encodes
    back to the same bytes); :func:`assemble` computes them for a well-formed quote.
    """
    out = bytearray(FIXED_SIZE)
    for name, field in QUOTE_FIELDS.items():
        value = fields[name]
        if len(value) != field.size:
            raise ValueError(f"{name} is {field.size} bytes, got {len(value)}")
        out[field.offset : field.end] = value
    for name in VARIABLE_FIELDS:
        out += fields[name]
    return bytes(out)


def cert_data_tail(qe_report: bytes, qe_report_signature: bytes, qe_auth_data: bytes, pck_chain: bytes) -> bytes:
    """Certification data type 6, from its type field on: everything after the attestation key."""
    inner = len(pck_chain).to_bytes(4, "little")
    body = (qe_report + qe_report_signature + len(qe_auth_data).to_bytes(2, "little") + qe_auth_data
            + CERT_DATA_PCK_CHAIN.to_bytes(2, "little") + inner + pck_chain)
    return CERT_DATA_QE_REPORT.to_bytes(2, "little") + len(body).to_bytes(4, "little") + body


def signature_data_size(tail: bytes) -> bytes:
    """The u32 at 632: signature, attestation key and the certification data after them."""
    return (SIGNATURE_SIZE + PUBLIC_KEY_SIZE + len(tail)).to_bytes(4, "little")


def assemble(signed: bytes, signature: bytes, attestation_key: bytes, tail: bytes) -> bytes:
    """A whole quote: the signed 632 bytes, then the signature data."""
    if len(signed) != SIGNED.stop or len(signature) != SIGNATURE_SIZE or len(attestation_key) != PUBLIC_KEY_SIZE:
        raise ValueError("signed part, signature or attestation key of the wrong size")
    return signed + signature_data_size(tail) + signature + attestation_key + tail


def as_json(quote: bytes) -> Dict[str, object]:
    """Fields as hex strings, integer fields also as numbers, the PEM chain as text."""
    out: Dict[str, object] = {}
    for name, value in decode(quote).items():
        field = QUOTE_FIELDS.get(name)
        if (field is not None and field.integer) or name in VARIABLE_INTEGERS:
            out[name] = _u(value)
        elif name == "pck_cert_chain":
            out[name] = value.decode("ascii", "replace")
        else:
            out[name] = value.hex()
    return out
