"""The TD profile: the embedded default and profiles loaded from TOML, boot events."""

import hashlib
import tomllib

import pytest

from tdxfs.errors import ConfigError
from tdxfs.model import eventlog as ev
from tdxfs.model.eventlog import Event
from tdxfs.model.profile import default_profile, load_profile, profile_from_mapping
from tdxfs.model.td import Platform, TrustDomain
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


# -- boot events ---------------------------------------------------------------------------

def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def chain(*digests: bytes) -> bytes:
    reg = bytes(48)
    for d in digests:
        reg = ref.extended(reg, d)
    return reg


CUSTOM = f"""
[[boot_event]]
register = "mrtd"
type = "EV_EFI_PLATFORM_FIRMWARE_BLOB2"
data = "my firmware"

[[boot_event]]
register = 0
type = 0x80000003
data_hex = "00ff10"

[[boot_event]]
register = "rtmr2"
type = "0xd"
digest = "{'ab' * 48}"
data = "described, not hashed"

[[boot_event]]
register = 2
digest = "{'cd' * 48}"
"""


def test_custom_boot_events_define_the_registers(tmp_path):
    profile = load_profile(write(tmp_path, CUSTOM))
    assert profile.boot_events == (
        Event(0, 0x8000000A, sha384(b"my firmware"), b"my firmware"),
        Event(1, 0x80000003, sha384(b"\x00\xff\x10"), b"\x00\xff\x10"),
        Event(3, 0xD, bytes([0xAB]) * 48, b"described, not hashed"),
        Event(3, ev.RUNTIME_EVENT_TYPE, bytes([0xCD]) * 48, b""),
    )
    assert profile["mrtd"] == chain(sha384(b"my firmware"))
    assert profile["rtmr0"] == chain(sha384(b"\x00\xff\x10"))
    assert profile["rtmr1"] == bytes(48)  # no events: zero, the default events are gone
    assert profile["rtmr2"] == chain(bytes([0xAB]) * 48, bytes([0xCD]) * 48)
    assert profile["rtmr3"] == bytes(48)
    assert profile.unreproducible() == [] and profile.notices() == []
    assert profile.digest() != default_profile().digest()


def test_td_of_a_custom_profile_logs_its_boot_events_first(tmp_path):
    profile = load_profile(write(tmp_path, CUSTOM))
    td = TrustDomain(Platform(bytes(32)), profile)
    assert td.event_log.events() == profile.boot_events
    td.extend(3, bytes([1]) * 48)
    regs = ev.replay(ev.decode_text(td.event_log.text()))
    assert regs["mrtd"] == profile["mrtd"]
    assert tuple(regs[f"rtmr{i}"] for i in range(4)) == td.rtmrs()
    assert b"my firmware" not in td.event_log.ccel_data()  # MRTD events: text view only
    assert b" mrtd " in td.event_log.text().split(b"\n")[0]


def test_explicit_value_that_agrees_with_the_events_is_a_check(tmp_path):
    value = chain(sha384(b"my firmware"))
    profile = load_profile(write(tmp_path, f'mrtd = "{value.hex()}"\n' + CUSTOM))
    assert profile["mrtd"] == value and profile.unreproducible() == []


def test_explicit_value_that_disagrees_with_the_events_is_refused(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_profile(write(tmp_path, f'rtmr2 = "{"00" * 47}01"\n' + CUSTOM))
    assert "'rtmr2'" in str(exc.value) and "boot events" in str(exc.value)


def test_explicit_value_without_events_is_kept_and_reported(tmp_path):
    profile = load_profile(write(tmp_path, f'rtmr1 = "{"11" * 48}"\n' + CUSTOM))
    assert profile["rtmr1"] == bytes([0x11]) * 48
    assert profile.unreproducible() == ["rtmr1"]
    (notice,) = profile.notices()
    assert "rtmr1" in notice and "cannot" in notice
    td = TrustDomain(Platform(bytes(32)), profile)
    assert td.notices == (notice,)
    assert td.rtmr(1) == bytes([0x11]) * 48


def test_without_a_list_an_explicit_register_drops_only_its_default_events():
    profile = profile_from_mapping({"rtmr1": "22" * 48})
    default = default_profile()
    assert [e.register for e in profile.boot_events] == [e.register for e in default.boot_events
                                                         if e.register != "rtmr1"]
    assert profile.unreproducible() == ["rtmr1"]
    assert profile.boot_rtmrs()[0] == default.boot_rtmrs()[0]


def test_without_a_list_an_explicit_register_equal_to_the_default_keeps_its_events():
    """The registers printed by an earlier `profile show` load back to the default profile."""
    boot = ref.boot_registers()
    profile = profile_from_mapping({name: boot[name].hex() for name in boot})
    assert profile == default_profile()
    assert profile.digest() == default_profile().digest()


def test_default_profile_digest_is_unchanged_by_the_event_log():
    """State directories made before event logs existed are bound to this digest: it is
    computed here as the previous version did (name=value; over the fields, pcesvn left
    out at its default value)."""
    h = hashlib.sha256()
    for name, value in default_profile().fields.items():
        if name == "pcesvn":
            continue
        h.update(name.encode() + b"=" + value + b";")
    assert default_profile().digest() == h.hexdigest()


def test_different_event_data_with_the_same_registers_changes_the_digest(tmp_path):
    a = load_profile(write(tmp_path, CUSTOM))
    b = load_profile(write(tmp_path, CUSTOM.replace("described, not hashed", "another description")))
    assert a.fields == b.fields
    assert a.digest() != b.digest()


def test_as_toml_round_trips_boot_events(tmp_path):
    profile = load_profile(write(tmp_path, f'rtmr1 = "{"11" * 48}"\n' + CUSTOM))
    text = profile.as_toml()
    assert "[[boot_event]]" in text
    assert profile_from_mapping(tomllib.loads(text)) == profile


@pytest.mark.parametrize("table, words", [
    ('register = "mrtd"\ntype = "EV_NO_ACTION"\ndata = "x"', ["EV_NO_ACTION"]),
    ('register = "mrtd"\ntype = 3\ndata = "x"', ["EV_NO_ACTION"]),
    ('register = "mrtd"\ndata = "x"\ncolour = "red"', ["colour"]),
    ('register = 4\ndata = "x"', ["register"]),
    ('register = "rtmr4"\ndata = "x"', ["register"]),
    ('register = true\ndata = "x"', ["register"]),
    ('data = "x"', ["register"]),
    ('register = 1\ndata = "x"\ndata_hex = "00"', ["data_hex"]),
    ('register = 1', ["digest"]),
    ('register = 1\ndigest = "00"', ["digest", "48"]),
    ('register = 1\ndigest = "zz"', ["digest", "hex"]),
    ('register = 1\ndata_hex = "0"', ["data_hex"]),
    ('register = 1\ndata = 5', ["data"]),
    ('register = 1\ntype = "EV_WHATEVER"\ndata = "x"', ["type"]),
    ('register = 1\ntype = true\ndata = "x"', ["type"]),
    ('register = 1\ntype = -1\ndata = "x"', ["type"]),
    (f'register = 1\ndata_hex = "{"00" * (64 * 1024 + 1)}"', ["data"]),
])
def test_bad_boot_events_are_refused(tmp_path, table, words):
    with pytest.raises(ConfigError) as exc:
        load_profile(write(tmp_path, "[[boot_event]]\n" + table + "\n"))
    message = str(exc.value)
    assert "boot_event 1" in message
    for word in words:
        assert word in message, message


def test_boot_event_that_is_not_a_table_list_is_refused():
    with pytest.raises(ConfigError):
        profile_from_mapping({"boot_event": "mrtd"})
    with pytest.raises(ConfigError):
        profile_from_mapping({"boot_event": ["mrtd"]})
