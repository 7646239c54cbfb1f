"""Quote v4 facts copied by hand from shared/reference/tdx-abi.md section 4.

Nothing here imports tdxfs: a wrong offset in ``tdxfs.model.quote`` cannot also make its
own expectation. (offset, size) pairs, offsets absolute in the quote.
"""

import hashlib

# Header (48)
VERSION = (0, 2)
ATTESTATION_KEY_TYPE = (2, 2)
TEE_TYPE = (4, 4)
QE_SVN = (8, 2)
PCE_SVN = (10, 2)
QE_VENDOR_ID = (12, 16)
USER_DATA = (28, 20)
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")

# TD quote body (584 bytes at 48..631), with the TDREPORT field each one comes from
# (TDREPORT offsets from section 2).
BODY = {
    "tee_tcb_svn": ((48, 16), (264, 16)),
    "mrseam": ((64, 48), (280, 48)),
    "mrsignerseam": ((112, 48), (328, 48)),
    "seamattributes": ((160, 8), (376, 8)),
    "tdattributes": ((168, 8), (512, 8)),
    "xfam": ((176, 8), (520, 8)),
    "mrtd": ((184, 48), (528, 48)),
    "mrconfigid": ((232, 48), (576, 48)),
    "mrowner": ((280, 48), (624, 48)),
    "mrownerconfig": ((328, 48), (672, 48)),
    "rtmr0": ((376, 48), (720, 48)),
    "rtmr1": ((424, 48), (768, 48)),
    "rtmr2": ((472, 48), (816, 48)),
    "rtmr3": ((520, 48), (864, 48)),
    "reportdata": ((568, 64), (128, 64)),
}
SIGNED = (0, 632)

# Signature data
SIGNATURE_DATA_LEN = (632, 4)
SIGNATURE = (636, 64)
ATTESTATION_KEY = (700, 64)
CERT_DATA_TYPE = (764, 2)
CERT_DATA_SIZE = (766, 4)
QE_REPORT = (770, 384)
QE_REPORT_SIGNATURE = (770 + 384, 64)
QE_AUTH_DATA_SIZE = (770 + 384 + 64, 2)
QE_AUTH_DATA_START = 770 + 384 + 64 + 2

# SGX REPORT body offsets, relative to the QE report
SGX_CPUSVN = (0, 16)
SGX_MISCSELECT = (16, 4)
SGX_ATTRIBUTES = (48, 16)
SGX_MRENCLAVE = (64, 32)
SGX_MRSIGNER = (128, 32)
SGX_ISVPRODID = (256, 2)
SGX_ISVSVN = (258, 2)
SGX_REPORTDATA = (320, 64)

SEPT_VE_DISABLE = 1 << 28
DEBUG = 1 << 0


def get(data: bytes, where) -> bytes:
    offset, size = where
    return bytes(data[offset : offset + size])


def u(data: bytes, where) -> int:
    return int.from_bytes(get(data, where), "little")


def sub(data: bytes, base, where) -> bytes:
    return get(get(data, base), where)


def qe_binding(attestation_key: bytes, auth_data: bytes) -> bytes:
    """The binding rule: REPORTDATA = SHA-256(attestation key || QE auth data) || 32 zeros."""
    return hashlib.sha256(attestation_key + auth_data).digest() + bytes(32)


def tail(quote: bytes):
    """(QE auth data, inner cert data type, inner size, PEM chain) walked by the reference."""
    size = u(quote, QE_AUTH_DATA_SIZE)
    pos = QE_AUTH_DATA_START
    auth = quote[pos : pos + size]
    pos += size
    kind = int.from_bytes(quote[pos : pos + 2], "little")
    length = int.from_bytes(quote[pos + 2 : pos + 6], "little")
    chain = quote[pos + 6 : pos + 6 + length]
    return auth, kind, length, chain
