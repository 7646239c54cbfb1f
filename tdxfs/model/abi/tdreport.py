"""TDREPORT_STRUCT and its parts, as tables (Intel TDX module ABI, ``tdx_api_defs.h``;
the layout in shared/reference/tdx-abi.md section 2).

Offsets are relative to each structure; the TDREPORT places REPORTMACSTRUCT at 0,
TEE_TCB_INFO at 256 and TDINFO_STRUCT at 512. Row names are those ``tdxfs report decode``
shows.
"""

from tdxfs.model.abi.layout import U8, U64, Layout

MEASUREMENT_SIZE = 48  # SHA-384

REPORTTYPE = Layout(
    "REPORTTYPE", 4,
    ("type", 0, U8),  # 0x81: TDX (0x00 is SGX)
    ("subtype", 1, U8),
    ("version", 2, U8),  # 0, or 1 when SERVTD_HASH is used
    ("reserved", 3, U8),
)

REPORTMACSTRUCT = Layout(
    "REPORTMACSTRUCT", 256,
    ("reporttype", 0, REPORTTYPE),
    ("reportmac.reserved1", 4, 12),
    ("cpusvn", 16, 16),
    ("tee_tcb_info_hash", 32, MEASUREMENT_SIZE),  # SHA-384 of the 239-byte TEE_TCB_INFO
    ("tee_info_hash", 80, MEASUREMENT_SIZE),  # SHA-384 of the 512-byte TDINFO_STRUCT
    ("reportdata", 128, 64),
    ("reportmac.reserved2", 192, 32),
    ("mac", 224, 32),  # over every byte before it
)

TEE_TCB_INFO = Layout(
    "TEE_TCB_INFO", 239,
    ("valid", 0, U64),
    ("tee_tcb_svn", 8, 16),
    ("mrseam", 24, MEASUREMENT_SIZE),
    ("mrsignerseam", 72, MEASUREMENT_SIZE),
    ("attributes", 120, U64),
    ("tee_tcb_svn2", 128, 16),  # TDX 1.5
    ("reserved", 144, 95),
)

RTMR_ARRAY = Layout(
    "RTMR[4]", 4 * MEASUREMENT_SIZE,
    *((f"rtmr{i}", i * MEASUREMENT_SIZE, MEASUREMENT_SIZE) for i in range(4)),
)

TDINFO_STRUCT = Layout(
    "TDINFO_STRUCT", 512,
    ("attributes", 0, U64),  # bit 0 DEBUG, bit 28 SEPT_VE_DISABLE, ...
    ("xfam", 8, U64),
    ("mrtd", 16, MEASUREMENT_SIZE),
    ("mrconfigid", 64, MEASUREMENT_SIZE),
    ("mrowner", 112, MEASUREMENT_SIZE),
    ("mrownerconfig", 160, MEASUREMENT_SIZE),
    ("", 208, RTMR_ARRAY),  # rows keep their names: tdinfo.rtmr0 .. tdinfo.rtmr3
    ("servtd_hash", 400, MEASUREMENT_SIZE),  # TDX 1.5
    ("reserved", 448, 64),
)

TDREPORT_STRUCT = Layout(
    "TDREPORT", 1024,
    ("", 0, REPORTMACSTRUCT),  # rows keep their names: reportdata, mac, ...
    ("tee_tcb_info", 256, TEE_TCB_INFO),
    ("reserved", 495, 17),
    ("tdinfo", 512, TDINFO_STRUCT),
)
