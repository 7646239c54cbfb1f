"""The TDX quote, version 4, as tables (Intel DCAP ``sgx_quote_4.h``, QVL
``QuoteStructures.h``; shared/reference/tdx-abi.md section 4).

Integers are little-endian; the ECDSA signatures and public keys are big-endian r||s and
x||y. With certification data of type 6 (QE report certification data, what every TD
quote carries) everything up to the QE auth data sits at a fixed offset; the auth data
and the type-5 PEM chain after it are sized by the quote itself:

    QUOTE_V4_FIXED (1220): HEADER | TD_QUOTE_BODY | signature data length |
                           ECDSA_SIG_DATA (signature, attestation key, cert data type 6, size) |
                           QE_REPORT_CERT_DATA (QE report, its signature, auth data size)
    then: QE auth data | CERT_DATA_HEADER (type 5, size) | PEM chain        = QUOTE_V4

Row names are those ``tdxfs quote decode`` shows.
"""

from tdxfs.model.abi.layout import U16, U32, U64, Layout, Record, Var
from tdxfs.model.abi.tdreport import MEASUREMENT_SIZE

SIGNATURE_SIZE = 64  # ECDSA P-256 r || s
PUBLIC_KEY_SIZE = 64  # P-256 x || y

HEADER = Layout(
    "quote header", 48,
    ("version", 0, U16),  # 4
    ("attestation_key_type", 2, U16),  # 2: ECDSA-256-with-P-256
    ("tee_type", 4, U32),  # 0x81: TDX
    ("qe_svn", 8, U16),  # QVL's and dcap-qvl's order (go-tdx-guest reads these two swapped)
    ("pce_svn", 10, U16),
    ("qe_vendor_id", 12, 16),
    ("user_data", 28, 20),  # Intel's QE: its QE ID (16 bytes), then zeros
)

# TDX 1.0: every row is copied from the TDREPORT (tdxfs.model.quote.BODY_FROM_TDREPORT).
TD_QUOTE_BODY = Layout(
    "TD quote body", 584,
    ("tee_tcb_svn", 0, 16),
    ("mrseam", 16, MEASUREMENT_SIZE),
    ("mrsignerseam", 64, MEASUREMENT_SIZE),
    ("seamattributes", 112, U64),
    ("tdattributes", 120, U64),
    ("xfam", 128, U64),
    ("mrtd", 136, MEASUREMENT_SIZE),
    ("mrconfigid", 184, MEASUREMENT_SIZE),
    ("mrowner", 232, MEASUREMENT_SIZE),
    ("mrownerconfig", 280, MEASUREMENT_SIZE),
    ("rtmr0", 328, MEASUREMENT_SIZE),
    ("rtmr1", 376, MEASUREMENT_SIZE),
    ("rtmr2", 424, MEASUREMENT_SIZE),
    ("rtmr3", 472, MEASUREMENT_SIZE),
    ("reportdata", 520, 64),
)

# The QE's SGX REPORT body (sgx_report_body_t), which the PCK key signs.
SGX_REPORT_BODY = Layout(
    "SGX REPORT body", 384,
    ("cpusvn", 0, 16),
    ("miscselect", 16, U32),
    ("reserved1", 20, 28),
    ("attributes", 48, 16),
    ("mrenclave", 64, 32),
    ("reserved2", 96, 32),
    ("mrsigner", 128, 32),
    ("reserved3", 160, 96),
    ("isvprodid", 256, U16),
    ("isvsvn", 258, U16),
    ("reserved4", 260, 60),
    ("reportdata", 320, 64),  # SHA-256(attestation key || QE auth data), then zeros
)

# sgx_ql_certification_data_t without its data: the type (6 or 5) and the data's size.
CERT_DATA_HEADER = Layout(
    "certification data header", 6,
    ("type", 0, U16),
    ("size", 2, U32),
)

# sgx_ecdsa_sig_data_v4_t up to its certification data's own data.
ECDSA_SIG_DATA = Layout(
    "ECDSA signature data", 134,
    ("signature", 0, SIGNATURE_SIZE),  # over the header and the TD quote body, by the attestation key
    ("attestation_key", 64, PUBLIC_KEY_SIZE),
    ("cert_data", 128, CERT_DATA_HEADER),
)

# sgx_qe_report_certification_data_t up to the QE auth data itself.
QE_REPORT_CERT_DATA = Layout(
    "QE report certification data", 450,
    ("qe_report", 0, SGX_REPORT_BODY),
    ("qe_report_signature", 384, SIGNATURE_SIZE),  # over the QE report, by the PCK key
    ("qe_auth_data.size", 448, U16),
)

QUOTE_V4_FIXED = Layout(
    "TD quote v4 (fixed part)", 1220,
    ("header", 0, HEADER),
    ("body", 48, TD_QUOTE_BODY),
    ("signature_data_size", 632, U32),  # the bytes after it, to the end of the quote
    ("", 636, ECDSA_SIG_DATA),
    ("", 770, QE_REPORT_CERT_DATA),
)

QUOTE_V4 = Record(
    "TD quote v4",
    QUOTE_V4_FIXED,
    Var("qe_auth_data", size="qe_auth_data.size"),
    ("pck_cert_data", CERT_DATA_HEADER),
    Var("pck_cert_chain", size="pck_cert_data.size"),
    rest=("signature_data_size", "cert_data.size"),
)
