"""The CC event log as tables: the ACPI CCEL table and the TCG records of its log area
(ACPI 6.5 section 5.2.6 and the CCEL table; TCG PC Client Platform Firmware Profile,
section 10: TCG_PCR_EVENT, TCG_EfiSpecIDEventStruct, TCG_PCR_EVENT2). Integers are
little-endian. What the values mean, and the records' order, is ``tdxfs.model.eventlog``.

A record's variable parts (a digest list, event data, vendor info) follow its fixed head;
each head table ends with the integer that sizes or counts what follows it.
"""

from tdxfs.model.abi.layout import U8, U16, U32, U64, Layout

ACPI_TABLE_HEADER = Layout(
    "ACPI table header", 36,
    ("signature", 0, 4),
    ("length", 4, U32),
    ("revision", 8, U8),
    ("checksum", 9, U8),  # all bytes of the table sum to 0 mod 256
    ("oem_id", 10, 6),
    ("oem_table_id", 16, 8),
    ("oem_revision", 24, U32),
    ("creator_id", 28, 4),
    ("creator_revision", 32, U32),
)

CCEL_TABLE = Layout(
    "CCEL table", 56,
    ("", 0, ACPI_TABLE_HEADER),
    ("cc_type", 36, U8),  # 2: TDX
    ("cc_subtype", 37, U8),
    ("reserved", 38, U16),
    ("laml", 40, U64),  # log area minimum length
    ("lasa", 48, U64),  # log area start address
)

# TCG_PCR_EVENT (the SHA-1 format): the first record of a crypto-agile log, whose event
# data is the Spec ID event. Followed by event_size bytes of event data.
TCG_PCR_EVENT = Layout(
    "TCG_PCR_EVENT", 32,
    ("pcr_index", 0, U32),
    ("event_type", 4, U32),
    ("digest", 8, 20),
    ("event_size", 28, U32),
)

# TCG_EfiSpecIDEventStruct up to its algorithm list: number_of_algorithms
# ALGORITHM_SIZE entries follow, then VENDOR_INFO_SIZE and that many bytes.
SPEC_ID_EVENT = Layout(
    "TCG_EfiSpecIDEventStruct", 28,
    ("signature", 0, 16),  # "Spec ID Event03\0"
    ("platform_class", 16, U32),
    ("spec_version_minor", 20, U8),
    ("spec_version_major", 21, U8),
    ("spec_errata", 22, U8),
    ("uintn_size", 23, U8),  # 2: UINTN is 64 bits
    ("number_of_algorithms", 24, U32),
)

ALGORITHM_SIZE = Layout(
    "TCG_EfiSpecIdEventAlgorithmSize", 4,
    ("algorithm_id", 0, U16),
    ("digest_size", 2, U16),
)

VENDOR_INFO_SIZE = Layout("vendorInfoSize", 1, ("vendor_info_size", 0, U8))

# TCG_PCR_EVENT2 up to its digest list: digest_count times (DIGEST_ALGORITHM, then the
# digest, its size from the Spec ID event), then EVENT_SIZE and the event data.
TCG_PCR_EVENT2 = Layout(
    "TCG_PCR_EVENT2", 12,
    ("pcr_index", 0, U32),  # the CC measurement-register index
    ("event_type", 4, U32),
    ("digest_count", 8, U32),
)

DIGEST_ALGORITHM = Layout("TPMT_HA hashAlg", 2, ("hash_alg", 0, U16))

# How tdxfs writes a record (one digest): the head and the digest's algorithm in one pack.
TCG_PCR_EVENT2_ONE_DIGEST = Layout(
    "TCG_PCR_EVENT2 with one digest", 14,
    ("", 0, TCG_PCR_EVENT2),
    ("", 12, DIGEST_ALGORITHM),
)

EVENT_SIZE = Layout("event size", 4, ("event_size", 0, U32))
