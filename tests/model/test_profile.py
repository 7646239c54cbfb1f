"""The TD profile: the embedded default and profiles loaded from TOML."""

import tomllib

import pytest

from tdxfs.errors import ConfigError
from tdxfs.model.profile import default_profile, load_profile, profile_from_mapping
from tests.model import reference as ref
from tests.model.conftest import DISTINCT_FIELDS, distinct_mapping


def u64(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def test_default_attributes_sept_ve_disable_set_debug_clear():
    attributes = u64(default_profile()["attributes"])
    assert attributes >> ref.SEPT_VE_DISABLE_BIT & 1 == 1
    assert attributes >> ref.DEBUG_BIT & 1 == 0


def test_default_measurements_come_from_the_documented_synthetic_boot():
    """MRTD and RTMR0-2 equal the event chain recomputed here; RTMR3 starts at zero."""
    boot = ref.boot_registers()
    profile = default_profile()
    assert profile["mrtd"] == boot["mrtd"]
    assert profile.boot_rtmrs()[:3] == (boot["rtmr0"], boot["rtmr1"], boot["rtmr2"])
    assert profile["rtmr3"] == bytes(48)
    assert len(set(profile.boot_rtmrs()[:3]) | {profile["mrtd"]}) == 4  # all distinct, none zero
    assert bytes(48) not in profile.boot_rtmrs()[:3]


def test_default_is_deterministic():
    assert default_profile() == default_profile()
    assert default_profile().digest() == default_profile().digest()


def write(tmp_path, text: str) -> str:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return str(path)


def test_toml_overrides_fields_and_keeps_the_rest(tmp_path):
    """Top-level fields and [tee_tcb_info] fields override the default; others keep it."""
    path = write(tmp_path, f"""
mrconfigid = "{'ab' * 48}"
cpusvn = "0x{'01' * 16}"

[tee_tcb_info]
mrseam = "{'CD' * 48}"
""")
    profile = load_profile(path)
    default = default_profile()
    assert profile["mrconfigid"] == bytes([0xAB]) * 48
    assert profile["cpusvn"] == bytes([1]) * 16
    assert profile["tee_tcb_info.mrseam"] == bytes([0xCD]) * 48
    changed = {"mrconfigid", "cpusvn", "tee_tcb_info.mrseam"}
    for name, value in default.fields.items():
        if name not in changed:
            assert profile[name] == value, name
    assert profile.digest() != default.digest()


def test_every_field_can_be_set():
    profile = profile_from_mapping(distinct_mapping())
    assert dict(profile.fields) == DISTINCT_FIELDS


def test_integers_accepted_for_u64_fields(tmp_path):
    """attributes, xfam, tee_tcb_info.valid and .attributes take a TOML integer (LE u64)."""
    path = write(tmp_path, """
attributes = 0x10000001
xfam = 743
[tee_tcb_info]
valid = 0x301ff
attributes = 0
""")
    profile = load_profile(path)
    assert profile["attributes"] == (0x10000001).to_bytes(8, "little")
    assert profile["xfam"] == (743).to_bytes(8, "little")
    assert profile["tee_tcb_info.valid"] == bytes.fromhex("ff01030000000000")
    assert profile["tee_tcb_info.attributes"] == bytes(8)


@pytest.mark.parametrize(
    "text, field",
    [
        ('mrsigner = "00"', "mrsigner"),  # unknown field
        ('[tee_tcb_info]\nmrsigner = "00"', "tee_tcb_info.mrsigner"),  # unknown in the table
        (f'mrtd = "{"00" * 47}"', "mrtd"),  # wrong length: 47 bytes
        (f'mrowner = "{"00" * 49}"', "mrowner"),  # wrong length: 49 bytes
        ('xfam = "e7020600000000"', "xfam"),  # 7 bytes
        (f'mrconfigid = "{"zz" * 48}"', "mrconfigid"),  # bad hex
        (f'cpusvn = "{"0" * 31}"', "cpusvn"),  # odd number of hex digits
        ("mrtd = 5", "mrtd"),  # integer for a non-u64 field
        ("attributes = -1", "attributes"),  # integer out of u64 range
        ("xfam = 18446744073709551616", "xfam"),  # 2**64
        ("attributes = true", "attributes"),  # boolean
        ("mrowner = [1, 2]", "mrowner"),  # not a string
    ],
)
def test_bad_fields_are_refused_naming_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as exc:
        load_profile(write(tmp_path, text))
    assert f"'{field}'" in str(exc.value)


def test_invalid_toml_is_refused(tmp_path):
    path = write(tmp_path, "mrtd = ")
    with pytest.raises(ConfigError) as exc:
        load_profile(path)
    assert path in str(exc.value)


def test_missing_profile_file_is_refused(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_profile(str(tmp_path / "nope.toml"))
    assert "nope.toml" in str(exc.value)


def test_as_toml_round_trips():
    """The TOML a profile prints (profile show) loads back to the same profile."""
    for profile in (default_profile(), profile_from_mapping(distinct_mapping())):
        assert profile_from_mapping(tomllib.loads(profile.as_toml())) == profile


def test_digest_tells_profiles_apart():
    """Changing any single field changes the digest a state directory is bound to."""
    base = default_profile()
    digests = {base.digest()}
    for name, value in base.fields.items():
        changed = profile_from_mapping(_override(name, bytes([value[0] ^ 1]) + value[1:]))
        digests.add(changed.digest())
    assert len(digests) == len(base.fields) + 1


def _override(name: str, value: bytes) -> dict:
    if "." in name:
        table, key = name.split(".", 1)
        return {table: {key: value.hex()}}
    return {name: value.hex()}
