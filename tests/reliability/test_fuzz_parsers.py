"""The parsers, fuzzed without a mount (issue 8, section 2).

Every parser that reads bytes a user, a file or a state directory hands to tdxfs is fed
random input and mutations of valid encodings, and may only refuse with the exception its
documentation names, never anything else (a traceback is a crash of the daemon or the CLI):

| parser | documented refusal |
|---|---|
| ``tdxfs.model.abi.decode`` / ``as_json`` (``tdxfs report decode``) | ValueError |
| ``tdxfs.model.quote.decode`` / ``as_json`` (``tdxfs quote decode``) | ValueError |
| ``tdxfs.model.eventlog.decode_ccel_table`` / ``decode_ccel_data`` / ``decode_text`` / ``parse_event_type`` | InvalidInput |
| ``tdxfs.files.eventlog.parse_record`` (a write to ``eventlog``) | InvalidInput |
| ``tdxfs.model.profile.profile_from_mapping`` / ``load_profile`` (``--profile``) | ConfigError |
| ``tdxfs.model.state.decode_td_state`` / ``decode_log`` / ``decode_pki`` (``--state``) | ConfigError |
| the CLI: ``report decode``, ``quote decode [--json]``, ``eventlog replay --ccel --report``, ``profile show --profile`` | exit 0 or 1 with one ``tdxfs: …`` line, no traceback |

Inputs: random bytes, and mutations (bit flips, overwrites with boundary integers at the
structures' own size and offset fields, insertions, deletions, duplications, truncation)
of valid encodings made by the model itself: a TDREPORT, a quote, a CCEL table and log
area, a text log, an eventlog record, a profile TOML, td-state.json (v1 and v2), an event-log
file and platform-pki.json. For the JSON state files a second strategy rewrites the
document (any JSON value in any field) and recomputes its checksum, so the fuzzing gets
past the checksum to the field checks. Round trips (encode then decode) are checked too.

Every call of a parser is counted (tests/reliability/fuzzcount.py): the counts are printed
at the end of the session. ``TDXFS_FUZZ_EXAMPLES=N`` runs N times the examples.
"""

import contextlib
import datetime
import functools
import hashlib
import io
import json
import math
import sys
import tomllib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tdxfs import cli
from tdxfs.errors import ConfigError, InvalidInput
from tdxfs.files.eventlog import Record, parse_record
from tdxfs.model import abi, profile as prof, quote as q, state
from tdxfs.model import eventlog as ev
from tdxfs.model.eventlog import Event, EventLog
from tdxfs.model.machine import in_memory_td
from tdxfs.model.pki import PlatformPki
from tests.reliability import fuzzcount
from tests.reliability.fuzzcount import examples

GROUP = "parsers"


def fuzz_settings(base: int):
    return settings(max_examples=examples(base), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.fixture(scope="module", autouse=True)
def _counts(request):
    fuzzcount.register(request.config)
    yield
    print("\n" + "\n".join(fuzzcount.lines(GROUP)))


def call(name, fn, *args, allowed=()):
    """Run one parser on one input: its documented refusal is an answer; anything else
    propagates (and fails the test, with hypothesis's shrunk input)."""
    fuzzcount.count(GROUP, name)
    try:
        return fn(*args)
    except allowed:
        return None


# -- valid encodings to start from (made once) -------------------------------------------------


def _event(mr, etype, data=b"", digest=None):
    return Event(mr, etype, digest if digest is not None else hashlib.sha384(data).digest(), data)


RUNTIME_EVENTS = (
    _event(4, ev.EV_IPL, b"app v1"),
    _event(3, ev.EV_EVENT_TAG, bytes(range(256))),
    _event(4, 0x12345678, digest=bytes(range(48))),
    _event(1, ev.EV_IPL, b"\\x\n\t\xff"),
)


@functools.lru_cache(maxsize=None)
def seeds():
    profile = prof.default_profile()
    td = in_memory_td(profile)
    for e in RUNTIME_EVENTS:
        td.extend(e.mr - 1, e.digest, e.event_type, e.data)
    report = td.report(bytes(range(64)))
    quote = td.quote(bytes(range(64, 128)))
    log = td.event_log
    pki = PlatformPki.generate(state.pck_tcb(profile))
    events = log.events()
    v1 = {"format": state.FORMAT_V1, "profile_digest": profile.digest(), "reportdata": bytes(64).hex(),
          "rtmrs": [r.hex() for r in profile.boot_rtmrs()]}
    custom = prof.profile_from_mapping({"pcesvn": 7, "boot_event": [
        {"register": "mrtd", "type": "EV_EFI_PLATFORM_FIRMWARE_BLOB2", "data": "fw"},
        {"register": 3, "type": 0x80000003, "data_hex": "00ff10"},
        {"register": "rtmr1", "digest": "11" * 48}]})
    return {
        "report": report,
        "quote": quote,
        "ccel_table": log.ccel_table(),
        "ccel_data": log.ccel_data(),
        "ccel_used": log.ccel_data().rstrip(b"\xff"),
        "text": log.text(),
        "record": Record(3, ev.EV_EVENT_TAG, bytes(range(48)), b"data").line(),
        "toml": profile.as_toml().encode(),
        "toml_custom": custom.as_toml().encode(),
        "td_state": state.encode_td_state(profile.digest(), bytes(range(64))),
        "td_state_v1": (json.dumps({**v1, "checksum": state._checksum(v1)}) + "\n").encode(),
        "log": state.encode_log(events)[0],
        "pki": state.encode_pki(pki),
        "events": events,
    }


# -- mutations ---------------------------------------------------------------------------------------

BOUNDARY_INTS = (0, 1, 2, 5, 6, 47, 48, 49, 55, 56, 57, 63, 64, 65, 255, 256, 1023, 1024, 1220, 0x7FFF, 0x8000,
                 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
# Offsets where the formats keep sizes, counts and types: a mutation there reaches the
# length checks rather than only the bytes they guard.
STRUCTURE_OFFSETS = sorted({f.offset for f in q.QUOTE_FIELDS.values()}
                           | {f.offset for f in abi.TDREPORT_FIELDS.values()}
                           | {0, 4, 8, 9, 10, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 68, 72, 76, 80, 84, 88, 92,
                              96, 100, 104, 19, 23})

_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("int"), st.sampled_from(STRUCTURE_OFFSETS) | st.integers(0, 1 << 20),
              st.sampled_from(BOUNDARY_INTS), st.sampled_from((1, 2, 4, 8))),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 64)),
    st.tuples(st.just("dup"), st.integers(0, 1 << 20), st.integers(1, 256)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
)


def mutate(seed: bytes, ops) -> bytes:
    data = bytearray(seed)
    for op in ops:
        kind, pos = op[0], op[1] % (len(data) + 1)
        if kind == "flip" and pos < len(data):
            data[pos] ^= op[2]
        elif kind == "set":
            data[pos : pos + len(op[2])] = op[2]
        elif kind == "int":
            value, size = op[2], op[3]
            data[pos : pos + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif kind == "insert":
            data[pos:pos] = op[2]
        elif kind == "delete":
            del data[pos : pos + op[2]]
        elif kind == "dup":
            data[pos:pos] = data[pos : pos + op[2]]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


def mutated(name: str):
    return st.lists(_op, min_size=1, max_size=6).map(lambda ops: mutate(seeds()[name], ops))


def bytes_or_mutated(*names: str, max_size: int = 4096):
    return st.one_of(st.binary(max_size=max_size), *(mutated(n) for n in names))


# -- the CLI, in this process ----------------------------------------------------------------------


def run_cli(args, stdin: bytes):
    """``tdxfs ARGS`` with ``stdin`` as standard input: (exit status, stdout, stderr).
    An exception escaping main() (a traceback for the user) fails the test."""
    out, err = io.StringIO(), io.StringIO()
    stdin_file = io.TextIOWrapper(io.BytesIO(stdin))
    saved = sys.stdin
    sys.stdin = stdin_file
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(list(args))
    finally:
        sys.stdin = saved
    return status, out.getvalue(), err.getvalue()


def check_refusal_line(status, err):
    assert status in (0, 1), status
    if status == 1:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("tdxfs: "), err
    assert "Traceback" not in err


# == TDREPORT =========================================================================================


@fuzz_settings(400)
@given(data=bytes_or_mutated("report", max_size=2048))
def test_report_decode_refuses_only_with_value_error(data):
    fields = call("abi.decode", abi.decode, data, allowed=ValueError)
    assert (fields is None) == (len(data) != abi.TDREPORT_SIZE)
    if fields is not None:
        assert abi.encode(fields) == data  # every byte is in exactly one field
        shown = call("abi.as_json", abi.as_json, data, allowed=ValueError)
        assert set(shown) == set(abi.TDREPORT_FIELDS)


@fuzz_settings(150)
@given(data=bytes_or_mutated("report", max_size=2048), as_json=st.booleans())
def test_cli_report_decode_never_tracebacks(data, as_json):
    fuzzcount.count(GROUP, "cli report decode")
    status, out, err = run_cli(["report", "decode", "-", *(["--json"] if as_json else [])], data)
    check_refusal_line(status, err)
    assert (status == 0) == (len(data) == abi.TDREPORT_SIZE)
    if status == 0 and as_json:
        assert json.loads(out)["reportdata"] == data[128:192].hex()


# == quotes ===========================================================================================


@fuzz_settings(400)
@given(data=bytes_or_mutated("quote", max_size=8192))
def test_quote_decode_refuses_only_with_value_error(data):
    fields = call("quote.decode", q.decode, data, allowed=ValueError)
    if fields is not None:
        # What decode returns encodes back to a prefix of the input (trailing bytes are
        # not part of the quote), and as_json accepts whatever decode accepts.
        assert data.startswith(q.encode(fields))
        assert call("quote.as_json", q.as_json, data, allowed=ValueError) is not None


@fuzz_settings(150)
@given(data=bytes_or_mutated("quote", max_size=8192), as_json=st.booleans())
def test_cli_quote_decode_never_tracebacks(data, as_json):
    fuzzcount.count(GROUP, "cli quote decode")
    status, out, err = run_cli(["quote", "decode", "-", *(["--json"] if as_json else [])], data)
    check_refusal_line(status, err)


def test_quote_round_trip_of_the_seed():
    quote = seeds()["quote"]
    assert q.encode(q.decode(quote)) == quote


# == CCEL and the text log ======================================================================================


@fuzz_settings(400)
@given(data=bytes_or_mutated("ccel_table", max_size=128))
def test_ccel_table_decoder_refuses_only_with_invalid_input(data):
    table = call("eventlog.decode_ccel_table", ev.decode_ccel_table, data, allowed=InvalidInput)
    if table is not None:
        assert table.signature == b"CCEL" and table.length == len(data) and sum(data) % 256 == 0


@fuzz_settings(600)
@given(data=bytes_or_mutated("ccel_data", "ccel_used", max_size=4096))
def test_ccel_data_decoder_refuses_only_with_invalid_input(data):
    events = call("eventlog.decode_ccel_data", ev.decode_ccel_data, data, allowed=InvalidInput)
    if events is not None:
        assert all(isinstance(e, Event) and 0 <= e.mr <= ev.MAX_MR_INDEX for e in events)


@fuzz_settings(400)
@given(data=bytes_or_mutated("text", max_size=4096) | st.text(max_size=400).map(str.encode))
def test_text_log_decoder_refuses_only_with_invalid_input(data):
    events = call("eventlog.decode_text", ev.decode_text, data, allowed=InvalidInput)
    if events is not None:  # what decodes, decodes again the same from its own rendering
        assert ev.decode_text(EventLog(events).text()) == events


@fuzz_settings(300)
@given(text=st.text(max_size=24) | st.sampled_from(sorted(ev.EVENT_TYPE_NAMES.values())).map(lambda s: s.lower()))
def test_event_type_parser_refuses_only_with_invalid_input(text):
    value = call("eventlog.parse_event_type", ev.parse_event_type, text, allowed=InvalidInput)
    if value is not None:
        assert 0 <= value <= 0xFFFFFFFF


events_st = st.builds(Event, mr=st.integers(0, ev.MAX_MR_INDEX), event_type=st.integers(0, 0xFFFFFFFF),
                      digest=st.binary(min_size=48, max_size=48), data=st.binary(max_size=300))


@fuzz_settings(200)
@given(events=st.lists(events_st, max_size=12))
def test_ccel_and_text_round_trip(events):
    log = EventLog(events)
    fuzzcount.count(GROUP, "eventlog round trips (CCEL, text)")
    decoded = ev.decode_ccel_data(log.ccel_data())
    rtmr_events = [e for e in events if e.mr != ev.MRTD_INDEX]
    assert [(e.mr, e.event_type, e.digest, e.data or ev.EMPTY_EVENT_FIELD) for e in rtmr_events] == \
        [(e.mr, e.event_type, e.digest, e.data) for e in decoded]
    assert ev.decode_ccel_table(log.ccel_table()).laml == len(log.ccel_data())
    assert ev.decode_text(log.text()) == list(events)


# == eventlog records ================================================================================

record_st = st.builds(Record, rtmr=st.integers(0, 3),
                      event_type=st.integers(0, 0xFFFFFFFF).filter(lambda t: t != ev.EV_NO_ACTION),
                      digest=st.binary(min_size=48, max_size=48), data=st.binary(max_size=200))


@fuzz_settings(600)
@given(data=bytes_or_mutated("record", max_size=512) | record_st.map(Record.line))
def test_record_parser_refuses_only_with_invalid_input(data):
    record = call("files.eventlog.parse_record", parse_record, data, allowed=InvalidInput)
    if record is not None:
        assert 0 <= record.rtmr <= 3 and len(record.digest) == 48 and data.endswith(b"\n")


@fuzz_settings(200)
@given(record=record_st)
def test_record_round_trip(record):
    fuzzcount.count(GROUP, "files.eventlog.parse_record")
    assert parse_record(record.line()) == record


# == profiles ========================================================================================

HEX_SIZES = sorted(set(prof.FIELD_SIZES.values()))
field_values = st.one_of(
    st.sampled_from(HEX_SIZES).flatmap(lambda n: st.binary(min_size=n, max_size=n).map(bytes.hex)),
    st.sampled_from(HEX_SIZES).flatmap(
        lambda n: st.binary(min_size=n, max_size=n).map(lambda b: "0x" + b.hex().upper())),
    st.text(max_size=20),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(0, 300), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.datetimes(),
)
event_tables = st.dictionaries(
    st.sampled_from(prof._EVENT_KEYS) | st.text(max_size=6),
    st.one_of(st.sampled_from(["mrtd", "rtmr0", "RTMR3 ", "rtmr4", "EV_IPL", "ev_event_tag", "EV_NO_ACTION", "0x3"]),
              st.integers(-2, 5), st.integers(min_value=-(1 << 40), max_value=1 << 40), field_values,
              st.binary(max_size=60).map(bytes.hex)),
    max_size=5)
documents = st.dictionaries(
    st.sampled_from(sorted(prof.FIELD_SIZES)) | st.text(max_size=12),
    field_values, max_size=6,
).flatmap(lambda doc: st.one_of(
    st.just(doc),
    st.lists(event_tables, max_size=4).map(lambda ev_tables: {**doc, "boot_event": ev_tables}),
    field_values.map(lambda v: {**doc, "boot_event": v}),
    st.dictionaries(st.sampled_from(["valid", "tee_tcb_svn", "mrseam", "x"]), field_values, max_size=3)
      .map(lambda t: {**doc, "tee_tcb_info": t}),
))


def _unflatten(doc):
    """Dotted keys (``tee_tcb_info.valid``) as the nested tables TOML gives."""
    out = {}
    for key, value in doc.items():
        head, dot, tail = key.partition(".")
        if dot and isinstance(out.setdefault(head, {}), dict):
            out[head][tail] = value
        else:
            out[key] = value
    return out


@fuzz_settings(600)
@given(doc=documents)
def test_profile_mapping_refuses_only_with_config_error(doc):
    profile = call("profile.profile_from_mapping", prof.profile_from_mapping, _unflatten(doc), allowed=ConfigError)
    if profile is not None:  # a profile that loads, round-trips through its TOML
        again = prof.profile_from_mapping(tomllib.loads(profile.as_toml()))
        assert again == profile


@pytest.fixture(scope="module")
def toml_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("profiles")


@fuzz_settings(500)
@given(data=bytes_or_mutated("toml", "toml_custom", max_size=2048))
@example(data=b'mrtd = "\xff"\n')  # not UTF-8 (was a UnicodeDecodeError traceback)
@example(data=b"a = " + b"[" * 4000 + b"]" * 4000 + b"\n")  # nesting (was a RecursionError traceback)
@example(data=b"a = " + b"{b = " * 2000 + b"1" + b"}" * 2000 + b"\n")
@example(data=b".".join([b"a"] * 5000) + b" = 1\n")
def test_profile_file_refuses_only_with_config_error(toml_dir, data):
    path = toml_dir / "profile.toml"
    path.write_bytes(data)
    call("profile.load_profile", prof.load_profile, str(path), allowed=ConfigError)


@pytest.mark.parametrize("data, why", [
    (b'mrtd = "\xff"\n', "not UTF-8"),
    (b"a = " + b"[" * 4000 + b"]" * 4000 + b"\n", "nested"),
    (b"a = " + b"{b = " * 2000 + b"1" + b"}" * 2000 + b"\n", "nested"),
    (b".".join([b"a"] * 5000) + b" = 1\n", "unknown field"),  # tomllib nests dotted keys without recursion
    (b'"x\\nFAKE" = 1\n', "unknown field"),  # a key with a newline: still one line
])
def test_a_bad_profile_file_is_one_line_not_a_traceback(tmp_path, data, why):
    """Regression (found by this fuzzing): load_profile let UnicodeDecodeError (a file that is
    not UTF-8) and RecursionError (deeply nested arrays or inline tables in tomllib, deeply
    dotted keys in the profile's own flattening) escape, so ``tdxfs profile show --profile F``
    and ``tdxfs mount --profile F`` died with a traceback. A key is shown escaped and cut short."""
    path = tmp_path / "bad.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as exc:
        prof.load_profile(str(path))
    assert why in exc.value.reason and "\n" not in exc.value.reason and len(exc.value.reason) < 400
    status, out, err = run_cli(["profile", "show", "--profile", str(path)], b"")
    assert status == 1 and err.startswith("tdxfs: profile ") and len(err.splitlines()) == 1, err


# == state files =======================================================================================

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 80), max_value=1 << 80)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
    | st.binary(min_size=0, max_size=70).map(bytes.hex),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def resealed(doc: dict) -> bytes:
    """A state JSON document with a checksum that matches whatever it now holds."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return (json.dumps({**body, "checksum": state._checksum(body)}) + "\n").encode()


def rewritten(name: str, keys):
    """The seed document with some fields (or the whole ``pki`` table's fields) replaced by
    arbitrary JSON values, or deleted, then resealed."""
    def apply(changes):
        doc = json.loads(seeds()[name])
        doc.pop("checksum")
        for key, value in changes:
            target = doc["pki"] if key.startswith("pki.") and isinstance(doc.get("pki"), dict) else doc
            field = key.removeprefix("pki.")
            if value is _DELETE:
                target.pop(field, None)
            else:
                target[field] = value
        return resealed(doc)
    return st.lists(st.tuples(st.sampled_from(keys), json_values | st.just(_DELETE)), min_size=1, max_size=3).map(apply)


_DELETE = object()
TD_KEYS = ["format", "profile_digest", "reportdata", "rtmrs", "extra"]


@fuzz_settings(500)
@given(raw=bytes_or_mutated("td_state", "td_state_v1", max_size=1024)
       | rewritten("td_state", TD_KEYS) | rewritten("td_state_v1", TD_KEYS))
def test_td_state_decoder_refuses_only_with_config_error(raw):
    decoded = call("state.decode_td_state", state.decode_td_state, raw, "td-state.json", allowed=ConfigError)
    if decoded is not None:
        assert len(decoded.reportdata) == abi.REPORTDATA_SIZE and isinstance(decoded.profile_digest, str)


@fuzz_settings(500)
@given(raw=bytes_or_mutated("log", max_size=4096))
def test_state_log_decoder_refuses_only_with_config_error(raw):
    decoded = call("state.decode_log", state.decode_log, raw, "event-log", allowed=ConfigError)
    if decoded is not None:
        assert decoded.length + decoded.torn == len(raw)
        assert state.encode_log(decoded.events)[0] == raw[: decoded.length]


@fuzz_settings(100)
@given(events=st.lists(events_st, max_size=8), cut=st.integers(0, 1 << 16))
def test_state_log_round_trip_and_torn_tail(events, cut):
    """A whole log decodes to its events; a log cut anywhere in its last record decodes to
    the events before it (a torn tail, dropped), never to an error."""
    fuzzcount.count(GROUP, "state.decode_log")
    raw, _ = state.encode_log(events)
    assert state.decode_log(raw, "x").events == events
    if events:
        last = len(state.encode_log(events[:-1])[0])
        torn = raw[: last + cut % (len(raw) - last)]
        fuzzcount.count(GROUP, "state.decode_log")
        decoded = state.decode_log(torn, "x")
        assert decoded.events == events[:-1] and decoded.length == last


PKI_KEYS = ["format", "pki", "pki.format", "pki.ppid", "pki.platform_instance_id", "pki.pck_tcb.cpusvn",
            "pki.pck_tcb.pcesvn", "pki.root_ca.key", "pki.root_ca.crt", "pki.pck.crt", "pki.attestation.key"]


@functools.lru_cache(maxsize=None)
def foreign_pems():
    """PEM blobs a state file could hold instead of the right ones: other key types and
    certificates for them (Ed25519, RSA, P-384), and a P-256 key and certificate of another
    platform."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    out = []
    for key, algorithm in ((ed25519.Ed25519PrivateKey.generate(), None),
                           (rsa.generate_private_key(65537, 1024), hashes.SHA256()),
                           (ec.generate_private_key(ec.SECP384R1()), hashes.SHA256()),
                           (ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())):
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                .sign(key, algorithm))
        out.append(cert.public_bytes(serialization.Encoding.PEM).decode())
        out.append(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode())
    return tuple(out)


def pem_swapped():
    def apply(changes):
        doc = json.loads(seeds()["pki"])
        doc.pop("checksum")
        blobs = sorted(k for k in doc["pki"] if k.endswith((".key", ".crt")))
        for index, pem in changes:
            doc["pki"][blobs[index % len(blobs)]] = foreign_pems()[pem]
        return resealed(doc)
    return st.lists(st.tuples(st.integers(0, 99), st.integers(0, 7)), min_size=1, max_size=2).map(apply)


@fuzz_settings(60)
@given(raw=bytes_or_mutated("pki", max_size=512) | rewritten("pki", PKI_KEYS) | pem_swapped())
def test_pki_decoder_refuses_only_with_config_error(raw):
    call("state.decode_pki", state.decode_pki, raw, "platform-pki.json", allowed=ConfigError)


def _pki_with(field: str, value) -> bytes:
    doc = json.loads(seeds()["pki"])
    doc.pop("checksum")
    doc["pki"][field] = value
    return resealed(doc)


def test_pki_with_an_ed25519_certificate_is_refused_as_corrupt():
    with pytest.raises(ConfigError):
        state.decode_pki(_pki_with("root_ca.crt", foreign_pems()[0]), "platform-pki.json")


def test_pki_with_an_infinite_pcesvn_is_refused_as_corrupt():
    raw = _pki_with("pck_tcb.pcesvn", math.inf)
    assert b"Infinity" in raw  # what json.dumps writes, and json.loads reads back
    with pytest.raises(ConfigError):
        state.decode_pki(raw, "platform-pki.json")


# == eventlog replay (CLI) ===========================================================================


@fuzz_settings(150)
@given(ccel=bytes_or_mutated("ccel_used", max_size=2048), report=bytes_or_mutated("report", max_size=1100))
def test_cli_eventlog_replay_never_tracebacks(tmp_path_factory, ccel, report):
    base = tmp_path_factory.getbasetemp() / "replay"
    base.mkdir(exist_ok=True)
    (base / "ccel").write_bytes(ccel)
    (base / "report").write_bytes(report)
    fuzzcount.count(GROUP, "cli eventlog replay")
    status, out, err = run_cli(["eventlog", "replay", "--ccel", str(base / "ccel"), "--report", str(base / "report")],
                               b"")
    assert status in (0, 1) and "Traceback" not in err
