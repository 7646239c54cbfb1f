"""The binary ABI of a TDX guest, as tables: one generic encoder/decoder and one module
of tables per structure family.

    abi.layout    Layout, Record, Var: the one mechanism (rows checked when a table is made)
    abi.tdreport  TDREPORT: REPORTMACSTRUCT, TEE_TCB_INFO, TDINFO_STRUCT
    abi.quote     the v4 quote: header, TD quote body, QE report (SGX REPORT body),
                  signature data and certification data (types 6 and 5)
    abi.ccel      the ACPI CCEL table and the TCG event-log records

Here, at the top, the TDREPORT (1024 bytes; Linux ``include/uapi/linux/tdx-guest.h``
carries it as a blob): its table, ``decode``/``encode``/``as_json``, and the spans that
the MAC and the two hashes cover. Nothing in this package hashes, signs or knows the
model: it only names bytes. A bare offset anywhere else is a table row that is missing.
"""

from typing import Dict, Mapping, Optional

from tdxfs.model.abi import tdreport
from tdxfs.model.abi.layout import Field, Value
from tdxfs.model.abi.tdreport import MEASUREMENT_SIZE  # noqa: F401 - part of this API

TDREPORT = tdreport.TDREPORT_STRUCT
TDREPORT_FIELDS: Dict[str, Field] = TDREPORT.fields
TDREPORT_SIZE = TDREPORT.size
REPORTDATA_SIZE = TDREPORT_FIELDS["reportdata"].size
RTMR_COUNT = len(tdreport.RTMR_ARRAY.fields)

REPORTTYPE_TDX = 0x81  # REPORTTYPE.TYPE for a TD (0x00 is SGX)

# Where the parts sit in a TDREPORT (slices, from the table).
REPORTMACSTRUCT = TDREPORT.span(tdreport.REPORTMACSTRUCT)
MAC_INPUT = slice(REPORTMACSTRUCT.start, TDREPORT_FIELDS["mac"].offset)  # REPORTMACSTRUCT before the MAC
TEE_TCB_INFO = TDREPORT.span("tee_tcb_info")  # what TEE_TCB_INFO_HASH covers
TDINFO = TDREPORT.span("tdinfo")  # what TEE_INFO_HASH covers
RTMRS = TDREPORT.span(tdreport.RTMR_ARRAY)  # RTMR0..3, one after the other


def rtmr_field(index: int) -> Field:
    return TDREPORT_FIELDS[f"tdinfo.rtmr{index}"]


def decode(report: bytes) -> Dict[str, bytes]:
    """Split a TDREPORT into its named fields (all of them, reserved included).
    ValueError when it is not 1024 bytes."""
    return TDREPORT.decode(report)


def encode(fields: Mapping[str, Value], base: Optional[bytes] = None) -> bytes:
    """The inverse of :func:`decode`: named fields placed over ``base`` (zeros by default).
    KeyError for an unknown name, ValueError for a value of the wrong size."""
    return TDREPORT.encode(fields, base)


def as_json(report: bytes) -> Dict[str, object]:
    """Fields as hex strings, integer fields as numbers (for ``report decode --json``).
    ValueError when it is not 1024 bytes."""
    return TDREPORT.as_json(report)
