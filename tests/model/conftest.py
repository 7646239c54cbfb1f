import pytest

from tdxfs.model.profile import default_profile, profile_from_mapping
from tdxfs.model.td import Platform, TrustDomain

SECRET = bytes(range(0xA0, 0xC0))  # a fixed 32-byte platform secret

# A profile where every field has its own recognisable bytes, so a field written to the
# wrong offset (or swapped with another) shows up in a byte-exact comparison.
DISTINCT_FIELDS = {
    "attributes": bytes.fromhex("0100001000000080"),
    "xfam": bytes.fromhex("e702060000000000"),
    "mrtd": bytes([0x11]) * 47 + b"\x12",
    "mrconfigid": bytes([0x21]) * 47 + b"\x22",
    "mrowner": bytes([0x31]) * 47 + b"\x32",
    "mrownerconfig": bytes([0x41]) * 47 + b"\x42",
    "cpusvn": bytes(range(1, 17)),
    "tee_tcb_info.valid": bytes.fromhex("ff01030000000000"),
    "tee_tcb_info.tee_tcb_svn": bytes(range(0x51, 0x61)),
    "tee_tcb_info.mrseam": bytes([0x61]) * 47 + b"\x62",
    "tee_tcb_info.mrsignerseam": bytes([0x71]) * 47 + b"\x72",
    "tee_tcb_info.attributes": bytes.fromhex("0807060504030201"),
    "tee_tcb_info.tee_tcb_svn2": bytes(range(0x81, 0x91)),
    "rtmr0": bytes([0xA1]) * 48,
    "rtmr1": bytes([0xB1]) * 48,
    "rtmr2": bytes([0xC1]) * 48,
    "rtmr3": bytes([0xD1]) * 48,
    "pcesvn": bytes.fromhex("e1e2"),
}


def distinct_mapping():
    """DISTINCT_FIELDS as a TOML-like mapping of hex strings."""
    top = {k: v.hex() for k, v in DISTINCT_FIELDS.items() if "." not in k}
    tcb = {k.split(".", 1)[1]: v.hex() for k, v in DISTINCT_FIELDS.items() if "." in k}
    return {**top, "tee_tcb_info": tcb}


@pytest.fixture
def platform():
    return Platform(SECRET)


@pytest.fixture
def td(platform):
    """The embedded default TD on the fixed-secret platform."""
    return TrustDomain(platform, default_profile())


@pytest.fixture
def distinct_td(platform):
    return TrustDomain(platform, profile_from_mapping(distinct_mapping()))
