"""The state directory (tdxfs.model.state): durable RTMRs (from the event log), REPORTDATA
and platform secret.

Nothing is mounted; the TD is driven through the model API only. The event-log file and
the v1 td-state.json are built here from their documented layouts, not by the code under
test.
"""

import contextlib
import errno
import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import textwrap

import pytest

from tdxfs.errors import ConfigError, StateError
from tdxfs.model import eventlog as ev
from tdxfs.model import state as state_mod
from tdxfs.model.profile import default_profile, profile_from_mapping
from tdxfs.model.state import StateDir, encode_td_state
from tests.model import reference as ref

SECRET_FILE = "platform-secret"
TD_FILE = "td-state.json"
LOCK = "lock"
LOG_FILE = "event-log"
DATA = bytes([0x99]) * 48


@contextlib.contextmanager
def opened(path, reset=False):
    state = StateDir(str(path), reset=reset)
    try:
        yield state
    finally:
        state.close()


def make_td(path, profile=None, **kw):
    """Create a state directory holding a TD with two extends and a REPORTDATA; return the TD."""
    with opened(path, **kw) as st:
        td = st.open_td(profile or default_profile())
        td.extend(3, DATA)
        td.extend(2, DATA)
        td.set_reportdata(bytes(range(64)))
        return td


def refused(path, profile=None, reset=False) -> str:
    """Opening the TD in path fails with ConfigError; return the message."""
    with opened(path, reset=reset) as st:
        with pytest.raises(ConfigError) as exc:
            st.open_td(profile or default_profile())
    return str(exc.value)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- creation and resumption ------------------------------------------------------------


def test_fresh_directory_is_0700_with_0600_files_whatever_the_umask(tmp_path):
    path = tmp_path / "state"
    old = os.umask(0)
    try:
        with opened(path) as st:
            td = st.open_td(default_profile())
            td.extend(3, DATA)
    finally:
        os.umask(old)
    assert mode(path) == 0o700
    names = sorted(os.listdir(path))
    assert {SECRET_FILE, TD_FILE} <= set(names)
    for name in names:
        assert mode(path / name) == 0o600, name
    assert len((path / SECRET_FILE).read_bytes()) == 32


def test_existing_directory_is_tightened_to_0700(tmp_path):
    path = tmp_path / "state"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    with opened(path) as st:
        st.open_td(default_profile())
    assert mode(path) == 0o700


def test_fresh_td_starts_at_the_profile_boot_values(tmp_path):
    with opened(tmp_path / "state") as st:
        td = st.open_td(default_profile())
        assert td.rtmrs() == default_profile().boot_rtmrs()
        assert td.reportdata == bytes(64)


def test_reopened_td_resumes_registers_and_platform(tmp_path):
    """RTMRs, REPORTDATA and the platform secret survive; reports verify across the two."""
    path = tmp_path / "state"
    first = make_td(path)
    boot = default_profile().boot_rtmrs()
    assert first.rtmr(3) == ref.extended(boot[3], DATA)

    with opened(path) as st:
        second = st.open_td(default_profile())
        assert second.rtmrs() == first.rtmrs()
        assert second.reportdata == bytes(range(64))
        assert second.platform.secret == first.platform.secret
        assert second.report() == first.report()
        assert first.verify_report(second.report()).ok
        assert second.verify_report(first.report()).ok
        # and it keeps going from there
        second.extend(3, DATA)
        assert second.rtmr(3) == ref.extended(first.rtmr(3), DATA)


def test_every_extend_is_on_disk_before_extend_returns(tmp_path):
    """Read the files after each call (no close in between): they already hold the value."""
    path = tmp_path / "state"
    with opened(path) as st:
        td = st.open_td(default_profile())
        for i in range(4):
            td.extend(i, DATA, ev.EV_EVENT_TAG, b"step %d" % i)
            events = state_mod.decode_log((path / LOG_FILE).read_bytes(), "test").events
            assert events == list(td.event_log.events())
            replayed = ev.replay(events)
            assert tuple(replayed[f"rtmr{k}"] for k in range(4)) == td.rtmrs()


def test_custom_profile_resumes(tmp_path):
    profile = profile_from_mapping({"mrowner": "ab" * 48})
    path = tmp_path / "state"
    first = make_td(path, profile)
    with opened(path) as st:
        assert st.open_td(profile).rtmrs() == first.rtmrs()


# -- locking ----------------------------------------------------------------------------


def test_second_statedir_on_a_locked_directory_is_refused(tmp_path):
    path = tmp_path / "state"
    with opened(path):
        with pytest.raises(ConfigError) as exc:
            StateDir(str(path))
        assert "in use" in str(exc.value)
    with opened(path) as st:  # released on close
        st.open_td(default_profile())


def test_lock_held_by_another_process_is_refused(tmp_path):
    path = tmp_path / "state"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from tdxfs.model.state import StateDir
            st = StateDir(sys.argv[1])
            print("locked", flush=True)
            sys.stdin.read()
        """), str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError):
            StateDir(str(path))
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with opened(path):
        pass


# -- refusals: never a silent reset -----------------------------------------------------


def _checksum_mismatch(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["reportdata"] = "00" * 64
    return json.dumps(doc).encode()


def _wrong(reportdata=None, digest=None):
    def make(raw: bytes) -> bytes:
        stored = state_mod.decode_td_state(raw, "test")
        return encode_td_state(stored.profile_digest if digest is None else digest,
                               stored.reportdata if reportdata is None else reportdata)
    return make


def v1_document(digest: str, rtmrs, reportdata: bytes, **changes) -> bytes:
    """A td-state.json as the previous version wrote it (format tdxfs-state-v1)."""
    body = {"format": "tdxfs-state-v1", "profile_digest": digest, "rtmrs": [r.hex() for r in rtmrs],
            "reportdata": reportdata.hex(), **changes}
    checksum = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return (json.dumps({**body, "checksum": checksum}, indent=1) + "\n").encode()


def _v1(rtmrs=None, reportdata=None):
    def make(raw: bytes) -> bytes:
        stored = state_mod.decode_td_state(raw, "test")
        return v1_document(stored.profile_digest, default_profile().boot_rtmrs() if rtmrs is None else rtmrs,
                           stored.reportdata if reportdata is None else reportdata)
    return make


CORRUPTIONS = {
    "empty": lambda raw: b"",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "garbage": lambda raw: b"\x00\xff\xfe not json at all",
    "json-not-object": lambda raw: b"[1, 2, 3]",
    "checksum-mismatch": _checksum_mismatch,
    "no-checksum": lambda raw: json.dumps({k: v for k, v in json.loads(raw).items()
                                           if k != "checksum"}).encode(),
    "unknown-format": lambda raw: raw.replace(b"tdxfs-state-v2", b"tdxfs-state-v9"),
    "reportdata-63-bytes": _wrong(reportdata=bytes(63)),
    "v1-rtmr-47-bytes": _v1(rtmrs=[bytes(48)] * 3 + [bytes(47)]),
    "v1-rtmr-49-bytes": _v1(rtmrs=[bytes(49)] + [bytes(48)] * 3),
    "v1-three-rtmrs": _v1(rtmrs=[bytes(48)] * 3),
    "v1-five-rtmrs": _v1(rtmrs=[bytes(48)] * 5),
    "v1-reportdata-63-bytes": _v1(reportdata=bytes(63)),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_td_state_is_refused_and_left_alone(tmp_path, kind):
    path = tmp_path / "state"
    make_td(path)
    bad = CORRUPTIONS[kind]((path / TD_FILE).read_bytes())
    (path / TD_FILE).write_bytes(bad)
    message = refused(path)
    assert TD_FILE in message and "--reset" in message
    assert (path / TD_FILE).read_bytes() == bad  # not rewritten behind the user's back


def test_unreadable_td_state_is_refused(tmp_path):
    """A td-state.json that cannot be read (here: a directory) is refused, naming it."""
    path = tmp_path / "state"
    make_td(path)
    os.unlink(path / TD_FILE)
    os.mkdir(path / TD_FILE)
    assert TD_FILE in refused(path)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_platform_secret_of_wrong_size_is_refused(tmp_path, size):
    path = tmp_path / "state"
    make_td(path)
    (path / SECRET_FILE).write_bytes(bytes(size))
    message = refused(path)
    assert SECRET_FILE in message
    assert len((path / SECRET_FILE).read_bytes()) == size


def test_missing_secret_with_existing_td_state_is_refused(tmp_path):
    path = tmp_path / "state"
    make_td(path)
    os.unlink(path / SECRET_FILE)
    assert SECRET_FILE in refused(path)
    assert not (path / SECRET_FILE).exists()


def test_missing_td_state_with_existing_secret_is_refused(tmp_path):
    """Losing td-state.json must not quietly restart the RTMRs at boot values on the same platform."""
    path = tmp_path / "state"
    make_td(path)
    os.unlink(path / TD_FILE)
    assert TD_FILE in refused(path)
    assert not (path / TD_FILE).exists()


def test_different_profile_is_refused(tmp_path):
    path = tmp_path / "state"
    make_td(path)
    other = profile_from_mapping({"mrconfigid": "01" * 48})
    assert "profile" in refused(path, other)
    with opened(path) as st:  # the stored TD is still intact
        assert st.open_td(default_profile()).rtmr(3) == ref.extended(default_profile()["rtmr3"], DATA)


def test_state_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "state"
    path.write_text("not a directory")
    with pytest.raises(ConfigError):
        StateDir(str(path))


def test_unusable_lock_file_is_refused(tmp_path):
    """A lock that cannot be opened is a clear ConfigError, not a traceback."""
    path = tmp_path / "state"
    path.mkdir()
    (path / "lock").mkdir()
    with pytest.raises(ConfigError) as exc:
        StateDir(str(path))
    assert str(path) in str(exc.value)


def test_secret_that_cannot_be_written_is_refused(tmp_path):
    """A fresh directory where the platform secret cannot be stored refuses with ConfigError."""
    path = tmp_path / "state"
    path.mkdir()
    (path / f".{SECRET_FILE}.tmp").mkdir()
    assert SECRET_FILE in refused(path)
    assert not (path / TD_FILE).exists()


# -- reset ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["none", "corrupt", "other-profile"])
def test_reset_starts_a_fresh_td_on_purpose(tmp_path, damage):
    path = tmp_path / "state"
    old = make_td(path)
    profile = default_profile()
    if damage == "corrupt":
        (path / TD_FILE).write_bytes(b"garbage")
    elif damage == "other-profile":
        profile = profile_from_mapping({"mrconfigid": "01" * 48})
    with opened(path, reset=True) as st:
        td = st.open_td(profile)
        assert td.rtmrs() == profile.boot_rtmrs()
        assert td.reportdata == bytes(64)
        assert td.platform.secret != old.platform.secret
        assert not old.verify_report(td.report()).ok
    with opened(path) as st:  # and the fresh TD is what is stored now
        assert st.open_td(profile).platform.secret == td.platform.secret


# -- persist failures -------------------------------------------------------------------


def test_failed_save_raises_state_error_and_changes_nothing(tmp_path, monkeypatch):
    """An append the filesystem refuses (half a record written, then EIO) and a REPORTDATA
    save it refuses (the temp file's name is taken by a directory) leave the in-memory
    RTMRs, log and REPORTDATA and the stored state as they were."""
    path = tmp_path / "state"
    with opened(path) as st:
        td = st.open_td(default_profile())
        td.extend(3, DATA)
        before_rtmrs, before_rd, before_log = td.rtmrs(), td.reportdata, td.event_log.events()
        stored = (path / LOG_FILE).read_bytes()
        real_write_all = state_mod._write_all

        def half_then_eio(fd, data, offset):
            real_write_all(fd, data[: len(data) // 2], offset)
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(state_mod, "_write_all", half_then_eio)
        with pytest.raises(StateError) as exc:
            td.extend(3, DATA, ev.EV_IPL, b"lost")
        assert exc.value.errno == errno.EIO
        assert (path / LOG_FILE).read_bytes() == stored  # the half record was cut off again
        monkeypatch.setattr(state_mod, "_write_all", real_write_all)
        os.mkdir(path / f".{TD_FILE}.tmp")
        with pytest.raises(StateError):
            td.set_reportdata(bytes([1]) * 64)
        assert td.rtmrs() == before_rtmrs
        assert td.reportdata == before_rd
        assert td.event_log.events() == before_log
        assert td.verify_report(td.report()).ok
        os.rmdir(path / f".{TD_FILE}.tmp")
        td.extend(3, DATA)  # works again once the filesystem does
        td.set_reportdata(bytes([1]) * 64)
        expected = ref.extended(before_rtmrs[3], DATA)
        assert td.rtmr(3) == expected
    with opened(path) as st:
        again = st.open_td(default_profile())
        assert again.rtmr(3) == expected
        assert again.reportdata == bytes([1]) * 64
        assert again.event_log.events() == td.event_log.events()


def test_disk_full_during_save_is_state_error(tmp_path, monkeypatch):
    path = tmp_path / "state"
    with opened(path) as st:
        td = st.open_td(default_profile())
        before, log = td.rtmrs(), td.event_log.events()

        def no_space(*args):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(state_mod, "_write_all", no_space)
        with pytest.raises(StateError) as exc:
            td.extend(0, DATA)
        assert os.strerror(errno.ENOSPC) in str(exc.value)
        assert exc.value.errno == errno.ENOSPC
        assert td.rtmrs() == before
        assert td.event_log.events() == log

        stored = (path / TD_FILE).read_bytes()
        with pytest.raises(StateError) as exc:  # the temporary file fails the same way
            td.set_reportdata(bytes([2]) * 64)
        assert os.strerror(errno.ENOSPC) in str(exc.value)
        assert exc.value.errno == errno.ENOSPC
        assert td.reportdata == bytes(64)
        assert (path / TD_FILE).read_bytes() == stored
        assert sorted(os.listdir(path)) == sorted([LOCK, SECRET_FILE, "platform-pki.json", TD_FILE, LOG_FILE]), \
            "the temporary file is removed"


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EIO], ids=errno.errorcode.get)
@pytest.mark.parametrize("step", ["write", "fsync", "rename"])
def test_a_failed_save_removes_its_temporary_file(tmp_path, monkeypatch, step, err):
    """Whichever step of write-temp/fsync/rename fails: no temporary file is left behind,
    td-state.json and REPORTDATA are unchanged, and the errno says why (ENOSPC for a full
    disk or a quota, EIO for anything else)."""
    path = tmp_path / "state"
    with opened(path) as st:
        td = st.open_td(default_profile())
        td.set_reportdata(bytes([1]) * 64)
        stored = (path / TD_FILE).read_bytes()
        names = sorted(os.listdir(path))

        def fail(*args, **kw):
            raise OSError(err, os.strerror(err))

        target = {"write": (state_mod, "_write_all"), "fsync": (state_mod.os, "fsync"),
                  "rename": (state_mod.os, "rename")}[step]
        with monkeypatch.context() as patch:
            patch.setattr(*target, fail)
            with pytest.raises(StateError) as exc:
                td.set_reportdata(bytes([2]) * 64)
        assert exc.value.errno == (errno.ENOSPC if err != errno.EIO else errno.EIO)
        assert sorted(os.listdir(path)) == names
        assert (path / TD_FILE).read_bytes() == stored
        assert td.reportdata == bytes([1]) * 64
        td.set_reportdata(bytes([3]) * 64)  # and the next save works
    with opened(path) as st:
        assert st.open_td(default_profile()).reportdata == bytes([3]) * 64


def test_extend_after_close_fails_and_writes_nowhere(tmp_path, monkeypatch):
    """Once the StateDir is closed an extend cannot be made durable: StateError, no change,
    and no state file appears in the current directory."""
    path = tmp_path / "state"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with opened(path) as st:
        td = st.open_td(default_profile())
    before = td.rtmrs()
    with pytest.raises(StateError):
        td.extend(3, DATA)
    assert td.rtmrs() == before
    assert os.listdir(cwd) == []


# -- kill -9 ----------------------------------------------------------------------------

KILLED_DAEMON = textwrap.dedent("""
    import os, sys
    from tdxfs.model.profile import default_profile
    from tdxfs.model.state import StateDir
    td = StateDir(sys.argv[1]).open_td(default_profile())
    td.extend(3, bytes([0x99]) * 48)
    td.set_reportdata(bytes([0x55]) * 64)
    print("done", td.rtmr(3).hex(), td.report().hex(), flush=True)
    os.kill(os.getpid(), 9)
    print("still alive", flush=True)
""")


def test_acknowledged_extend_survives_kill_9(tmp_path):
    path = tmp_path / "state"
    proc = subprocess.run([sys.executable, "-c", KILLED_DAEMON, str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    word, rtmr3, report = proc.stdout.split()
    assert word == "done"
    expected = ref.extended(default_profile()["rtmr3"], DATA)
    assert bytes.fromhex(rtmr3) == expected

    with opened(path) as st:  # the kernel dropped the dead process's lock
        td = st.open_td(default_profile())
        assert td.rtmr(3) == expected
        assert td.reportdata == bytes([0x55]) * 64
        assert td.report().hex() == report
        assert td.verify_report(bytes.fromhex(report)).ok


# -- the event log file: the source of truth for RTMR0-3 ---------------------------------------

LOG_HEADER = b"tdxfs event log v1\n"  # the layout documented in tdxfs/model/state.py


def log_records(raw: bytes):
    """Split an event-log file into (start, end) of each record, checking the chain on the way:
    "tdxR", u32 L, payload[L], SHA-256(previous chain || "tdxR" || L || payload)."""
    assert raw.startswith(LOG_HEADER)
    pos, chain, spans = len(LOG_HEADER), hashlib.sha256(LOG_HEADER).digest(), []
    while pos < len(raw):
        assert raw[pos:pos + 4] == b"tdxR"
        (length,) = struct.unpack_from("<I", raw, pos + 4)
        end = pos + 8 + length
        assert raw[end:end + 32] == hashlib.sha256(chain + raw[pos:end]).digest()
        chain = raw[end:end + 32]
        spans.append((pos, end + 32))
        pos = end + 32
    return spans, chain


def record(chain: bytes, mr: int, etype: int, digest: bytes, data: bytes) -> bytes:
    payload = struct.pack("<II", mr, etype) + digest + data
    head = b"tdxR" + struct.pack("<I", len(payload))
    return head + payload + hashlib.sha256(chain + head + payload).digest()


def test_log_file_layout_known_answer(tmp_path):
    """A fresh directory's log is the boot events, each record packed as documented."""
    path = tmp_path / "state"
    with opened(path) as st:
        st.open_td(default_profile())
    raw = (path / LOG_FILE).read_bytes()
    expected, chain = LOG_HEADER, hashlib.sha256(LOG_HEADER).digest()
    types = [0x8000000A, 0x8000000B, 0x8000000B, 0x8000000A, 4, 0x80000003, 4, 0xD, 0x6]
    for (name, text), etype in zip(ref.BOOT_EVENTS, types):
        mr = 0 if name == "mrtd" else int(name[4:]) + 1
        rec = record(chain, mr, etype, ref.sha384(text.encode()), text.encode())
        expected, chain = expected + rec, rec[-32:]
    assert raw == expected
    assert mode(path / LOG_FILE) == 0o600


def test_log_replays_to_rtmrs_across_restarts(tmp_path):
    path = tmp_path / "state"
    with opened(path) as st:
        td = st.open_td(default_profile())
        td.extend(3, DATA, ev.EV_EVENT_TAG, b"first \x00 app")
        td.extend(1, bytes([7]) * 48)
        events = td.event_log.events()
    with opened(path) as st:
        again = st.open_td(default_profile())
        assert again.event_log.events() == events
        assert again.rtmrs() == td.rtmrs()
        assert again.notices == ()
        replayed = ev.replay(ev.decode_ccel_data(again.event_log.ccel_data()))
        assert tuple(replayed[f"rtmr{i}"] for i in range(4)) == again.rtmrs()
    assert state_mod.read_event_log(str(path)) == list(events)


@pytest.mark.parametrize("cut", ["header-part", "payload-part", "chain-part", "bad-chain", "zero-fill"])
def test_torn_last_record_is_dropped(tmp_path, cut):
    """What a crash in the middle of an unacknowledged append can leave at the end of the file."""
    path = tmp_path / "state"
    make_td(path)
    raw = (path / LOG_FILE).read_bytes()
    _, chain = log_records(raw)
    rec = record(chain, 4, 0xD, bytes([0x42]) * 48, b"never acknowledged")
    tail = {"header-part": rec[:5], "payload-part": rec[:40], "chain-part": rec[:-10],
            "bad-chain": rec[:-1] + bytes([rec[-1] ^ 1]), "zero-fill": bytes(len(rec))}[cut]
    (path / LOG_FILE).write_bytes(raw + tail)
    with opened(path) as st:
        td = st.open_td(default_profile())
        assert td.rtmr(3) == ref.extended(default_profile()["rtmr3"], DATA)
        assert any("dropped" in n and LOG_FILE in n for n in td.notices)
        assert (path / LOG_FILE).read_bytes() == raw  # cut back to the last good record
        td.extend(3, DATA)  # and appends continue cleanly after it
    with opened(path) as st:
        again = st.open_td(default_profile())
        assert again.rtmr(3) == ref.extended(ref.extended(default_profile()["rtmr3"], DATA), DATA)
        assert again.notices == ()


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1:]


def _log_corruptions(raw: bytes):
    spans, _ = log_records(raw)
    (s1, e1), (s_last, e_last) = spans[1], spans[-1]
    other = default_profile().boot_events[0]
    return {
        "empty": b"",
        "half-header": raw[:10],
        "wrong-header": b"tdxfs event log v9\n" + raw[len(LOG_HEADER):],
        "digest-bit-in-a-middle-record": _flip(raw, s1 + 20),
        "chain-bit-in-a-middle-record": _flip(raw, e1 - 1),
        "marker-of-a-middle-record": raw[:s1] + b"XdxR" + raw[s1 + 4:],
        "length-of-a-middle-record": raw[:s1 + 4] + struct.pack("<I", 10 ** 9) + raw[s1 + 8:],
        "record-removed": raw[:s1] + raw[e1:],
        "records-swapped": raw[:spans[-2][0]] + raw[s_last:e_last] + raw[spans[-2][0]:s_last],
        "garbage-after-the-end": raw + b"\x01" * 300000,
        # well-formed, but not this profile's boot events
        "not-the-boot-events": LOG_HEADER + record(hashlib.sha256(LOG_HEADER).digest(), 1, other.event_type,
                                                   other.digest, other.data),
    }


@pytest.mark.parametrize("kind", [
    "empty", "half-header", "wrong-header", "digest-bit-in-a-middle-record", "chain-bit-in-a-middle-record",
    "marker-of-a-middle-record", "length-of-a-middle-record", "record-removed", "records-swapped",
    "garbage-after-the-end", "not-the-boot-events"])
def test_corrupt_log_is_refused_and_left_alone(tmp_path, kind):
    path = tmp_path / "state"
    make_td(path)
    with opened(path) as st:  # one more runtime record, so a middle record is a runtime one too
        st.open_td(default_profile()).extend(1, DATA)
    good = (path / LOG_FILE).read_bytes()
    bad = _log_corruptions(good)[kind]
    assert bad != good
    (path / LOG_FILE).write_bytes(bad)
    message = refused(path)
    assert f"{path}/{LOG_FILE}" in message and "--reset" in message, message
    assert (path / LOG_FILE).read_bytes() == bad


def test_missing_log_with_td_state_is_refused(tmp_path):
    path = tmp_path / "state"
    make_td(path)
    os.unlink(path / LOG_FILE)
    assert LOG_FILE in refused(path)
    assert not (path / LOG_FILE).exists()


def test_log_that_is_a_symlink_is_refused(tmp_path):
    path = tmp_path / "state"
    make_td(path)
    os.rename(path / LOG_FILE, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", path / LOG_FILE)
    assert LOG_FILE in refused(path)


def test_reset_removes_the_log(tmp_path):
    path = tmp_path / "state"
    make_td(path)
    with opened(path, reset=True) as st:
        td = st.open_td(default_profile())
        assert td.event_log.events() == default_profile().boot_events
    assert len(log_records((path / LOG_FILE).read_bytes())[0]) == len(ref.BOOT_EVENTS)


# -- a state directory from the previous version (tdxfs-state-v1, no log) ------------------------


def write_v1(path, rtmrs, reportdata=bytes(range(64)), profile=None):
    """What the previous tdxfs left: secret, td-state.json v1 (RTMRs inside), no event-log."""
    make_td(path, profile)
    os.unlink(path / LOG_FILE)
    digest = (profile or default_profile()).digest()
    (path / TD_FILE).write_bytes(v1_document(digest, rtmrs, reportdata))


def test_v1_state_at_boot_values_is_migrated(tmp_path):
    path = tmp_path / "state"
    write_v1(path, default_profile().boot_rtmrs())
    secret = (path / SECRET_FILE).read_bytes()
    with opened(path) as st:
        td = st.open_td(default_profile())
        assert td.rtmrs() == default_profile().boot_rtmrs()
        assert td.reportdata == bytes(range(64))
        assert td.platform.secret == secret
        assert td.event_log.events() == default_profile().boot_events
        assert any("migrated" in n for n in td.notices)
        td.extend(3, DATA)
    assert json.loads((path / TD_FILE).read_bytes())["format"] == "tdxfs-state-v2"
    with opened(path) as st:
        again = st.open_td(default_profile())
        assert again.rtmr(3) == ref.extended(default_profile()["rtmr3"], DATA)
        assert again.reportdata == bytes(range(64))


def test_interrupted_migration_is_redone(tmp_path):
    """A crash after the log was written but before td-state.json became v2."""
    path = tmp_path / "state"
    write_v1(path, default_profile().boot_rtmrs())
    v1 = (path / TD_FILE).read_bytes()
    with opened(path) as st:
        st.open_td(default_profile())
    (path / TD_FILE).write_bytes(v1)
    with opened(path) as st:
        td = st.open_td(default_profile())
        assert td.event_log.events() == default_profile().boot_events
        assert td.rtmrs() == default_profile().boot_rtmrs()


def test_v1_state_with_extended_rtmrs_is_refused_with_how_to_proceed(tmp_path):
    path = tmp_path / "state"
    rtmrs = list(default_profile().boot_rtmrs())
    rtmrs[3] = ref.extended(rtmrs[3], DATA)
    write_v1(path, rtmrs)
    before = {name: (path / name).read_bytes() for name in (TD_FILE, SECRET_FILE)}
    message = refused(path)
    assert TD_FILE in message and "tdxfs-state-v1" in message
    assert "--reset" in message and "earlier tdxfs" in message
    assert not (path / LOG_FILE).exists()  # nothing written
    assert {name: (path / name).read_bytes() for name in before} == before


def test_v1_state_of_another_profile_is_refused_as_before(tmp_path):
    path = tmp_path / "state"
    write_v1(path, default_profile().boot_rtmrs())
    assert "another profile" in refused(path, profile_from_mapping({"mrconfigid": "01" * 48}))
    assert not (path / LOG_FILE).exists()


# -- kill -9 in the middle of a stream of extends --------------------------------------------

EXTENDING_DAEMON = textwrap.dedent("""
    import sys
    from tdxfs.model.profile import default_profile
    from tdxfs.model.state import StateDir
    td = StateDir(sys.argv[1]).open_td(default_profile())
    n = 0
    while True:
        td.extend(n % 4, bytes([n % 251]) * 48, 0xD, b"n=%d" % n)
        print(n, td.rtmrs()[n % 4].hex(), flush=True)
        n += 1
""")


def test_kill_9_during_extends_leaves_a_log_that_replays_to_the_rtmrs(tmp_path):
    """Killed at an arbitrary point: every acknowledged extend is there, and the RTMRs are
    exactly the replay of the log (at most the one unacknowledged extend more)."""
    path = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-c", EXTENDING_DAEMON, str(path)],
                            stdout=subprocess.PIPE, text=True)
    acknowledged = []
    for line in proc.stdout:
        acknowledged.append(line.split())
        if len(acknowledged) == 150:
            break
    proc.kill()
    proc.wait(timeout=60)
    proc.stdout.close()
    with opened(path) as st:
        td = st.open_td(default_profile())
        events = td.event_log.events()
        runtime = events[len(ref.BOOT_EVENTS):]
        assert len(acknowledged) <= len(runtime) <= len(acknowledged) + 1
        for n, (count, value) in enumerate(acknowledged):
            assert runtime[n].data == b"n=%d" % n
        regs = ev.replay(events)
        assert tuple(regs[f"rtmr{i}"] for i in range(4)) == td.rtmrs()
        n, value = int(acknowledged[-1][0]), acknowledged[-1][1]
        if len(runtime) == len(acknowledged):
            assert td.rtmrs()[n % 4].hex() == value


def test_concurrent_extends_with_a_state_directory_replay_after_restart(tmp_path):
    from tests.model.test_threads import run_threads

    path = tmp_path / "state"
    with opened(path) as st:
        td = st.open_td(default_profile())
        run_threads(lambda k: [td.extend(k % 4, bytes([k, n]) + bytes(46), 0xD, b"%d" % k) for n in range(40)])
        final = td.rtmrs()
    with opened(path) as st:
        again = st.open_td(default_profile())
        assert again.rtmrs() == final
        regs = ev.replay(again.event_log.events())
        assert tuple(regs[f"rtmr{i}"] for i in range(4)) == final
        assert len(again.event_log) == len(ref.BOOT_EVENTS) + 8 * 40


def test_custom_boot_events_are_the_start_of_the_stored_log(tmp_path):
    tables = [{"register": "mrtd", "type": "EV_EFI_PLATFORM_FIRMWARE_BLOB2", "data": "fw"},
              {"register": 1, "type": "EV_EFI_BOOT_SERVICES_APPLICATION", "data": "kernel"}]
    profile = profile_from_mapping({"boot_event": tables})
    path = tmp_path / "state"
    with opened(path) as st:
        st.open_td(profile).extend(1, DATA)
    spans, _ = log_records((path / LOG_FILE).read_bytes())
    assert len(spans) == 3
    with opened(path) as st:
        td = st.open_td(profile)
        assert td.rtmr(1) == ref.extended(ref.extended(bytes(48), ref.sha384(b"kernel")), DATA)
        assert td.rtmr(0) == bytes(48)
    other = profile_from_mapping({"boot_event": [tables[0], {**tables[1], "data": "another kernel"}]})
    assert "another profile" in refused(path, other)


def test_explicit_register_without_events_resumes_relative_to_its_value(tmp_path):
    """The distinct profile sets every RTMR explicitly: the log cannot reproduce them; the
    TD says so, and the runtime events still extend from the profile's values."""
    profile = profile_from_mapping({"rtmr2": "c1" * 48})
    path = tmp_path / "state"
    with opened(path) as st:
        td = st.open_td(profile)
        assert any("rtmr2" in n for n in td.notices)
        td.extend(2, DATA)
    with opened(path) as st:
        td = st.open_td(profile)
        assert td.rtmr(2) == ref.extended(bytes([0xC1]) * 48, DATA)
        assert td.event_log.events()[-1] == ev.Event(3, ev.EV_IPL, DATA, b"")


# -- a hostile state directory (issue 8, defect 1) -------------------------------------------
#
# The daemon runs as root: nothing in DIR may make it write, chmod or create anything
# outside DIR. The "victim" is always a file in the test's own tmp_path.

TEMP_FILES = [f".{SECRET_FILE}.tmp", ".platform-pki.json.tmp", f".{TD_FILE}.tmp", f".{LOG_FILE}.tmp"]
STATE_FILES = [SECRET_FILE, "platform-pki.json", TD_FILE, LOG_FILE]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
NOBODY = 65534


def victim(tmp_path, content=b"victim: keep me\n"):
    target = tmp_path / "victim"
    target.write_bytes(content)
    os.chmod(target, 0o644)
    return target


def untouched(target, content=b"victim: keep me\n") -> bool:
    return target.read_bytes() == content and mode(target) == 0o644


@pytest.mark.parametrize("name", TEMP_FILES)
def test_a_planted_temp_symlink_is_removed_never_followed(tmp_path, name):
    """A stale temporary file (here a symlink to a victim) is unlinked, relative to DIR,
    before the temporary file is made with O_EXCL|O_NOFOLLOW: the victim is never written."""
    target = victim(tmp_path)
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    os.symlink(target, path / name)
    with opened(path) as st:
        td = st.open_td(default_profile())
        td.set_reportdata(bytes([7]) * 64)
        # planted again while the TD runs (as only DIR's owner could): still not followed
        os.symlink(target, path / f".{TD_FILE}.tmp")
        td.set_reportdata(bytes([8]) * 64)
        td.extend(3, DATA)
    assert untouched(target)
    assert not any(n.endswith(".tmp") for n in os.listdir(path))
    with opened(path) as st:
        assert st.open_td(default_profile()).reportdata == bytes([8]) * 64


def test_a_symlinked_state_directory_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    link = tmp_path / "state"
    os.symlink(target, link)
    with pytest.raises(ConfigError) as exc:
        StateDir(str(link))
    assert str(link) in str(exc.value) and "symbolic link" in str(exc.value)
    assert mode(target) == 0o755, "never chmod'ed through the link"
    assert os.listdir(target) == []
    # a dangling one: nothing is created at its target either
    dangling = tmp_path / "state2"
    os.symlink(tmp_path / "nowhere", dangling)
    with pytest.raises(ConfigError) as exc:
        StateDir(str(dangling))
    assert str(dangling) in str(exc.value)
    assert not (tmp_path / "nowhere").exists()


def test_a_lock_symlink_is_refused_and_its_target_never_created(tmp_path):
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    os.symlink(tmp_path / "created-by-the-daemon", path / "lock")
    with pytest.raises(ConfigError) as exc:
        StateDir(str(path))
    assert f"{path}/lock" in str(exc.value)
    assert not (tmp_path / "created-by-the-daemon").exists()
    target = victim(tmp_path)  # an existing target is not opened (nor truncated) either
    os.unlink(path / "lock")
    os.symlink(target, path / "lock")
    with pytest.raises(ConfigError):
        StateDir(str(path))
    assert untouched(target)


@pytest.mark.parametrize("name", STATE_FILES)
def test_a_state_file_that_is_a_symlink_is_refused(tmp_path, name):
    path = tmp_path / "state"
    make_td(path)
    real = tmp_path / f"real-{name}"
    os.rename(path / name, real)
    os.symlink(real, path / name)
    before = real.read_bytes()
    message = refused(path)
    assert f"{path}/{name}" in message and "symbolic link" in message
    assert real.read_bytes() == before and mode(real) == 0o600


@pytest.mark.parametrize("name", STATE_FILES)
def test_a_state_file_that_is_not_a_regular_file_is_refused(tmp_path, name):
    """A FIFO in place of a state file is refused at once (never blocks the start)."""
    path = tmp_path / "state"
    make_td(path)
    os.unlink(path / name)
    os.mkfifo(path / name, 0o600)
    message = refused(path)
    assert f"{path}/{name}" in message and "regular file" in message


@needs_root
def test_a_state_directory_owned_by_another_user_is_refused(tmp_path):
    """The issue's reproduction: mkdir S; ln -s VICTIM S/.platform-secret.tmp; chown -Rh nobody S."""
    target = victim(tmp_path)
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    os.symlink(target, path / f".{SECRET_FILE}.tmp")
    for p in (path, path / f".{SECRET_FILE}.tmp"):
        os.chown(p, NOBODY, NOBODY, follow_symlinks=False)
    with pytest.raises(ConfigError) as exc:
        StateDir(str(path))
    message = str(exc.value)
    assert str(path) in message and f"uid {NOBODY}" in message
    assert untouched(target)
    assert sorted(os.listdir(path)) == [f".{SECRET_FILE}.tmp"], "nothing created in it"
    assert mode(path) == 0o700 and os.stat(path).st_uid == NOBODY


@needs_root
@pytest.mark.parametrize("name", STATE_FILES + ["lock"])
def test_a_state_file_owned_by_another_user_is_refused(tmp_path, name):
    path = tmp_path / "state"
    make_td(path)
    os.chown(path / name, NOBODY, NOBODY)
    with pytest.raises(ConfigError) as exc:
        with opened(path) as st:
            st.open_td(default_profile())
    assert f"{path}/{name}" in str(exc.value) and f"uid {NOBODY}" in str(exc.value)
    assert os.stat(path / name).st_uid == NOBODY


@pytest.mark.parametrize("dmode", [0o770, 0o707, 0o777, 0o1777, 0o720], ids=lambda m: f"{m:04o}")
def test_a_state_directory_writable_by_others_is_refused_and_left_alone(tmp_path, dmode):
    path = tmp_path / "state"
    make_td(path)
    os.chmod(path, dmode)
    with pytest.raises(ConfigError) as exc:
        StateDir(str(path))
    assert str(path) in str(exc.value) and "writable by group or others" in str(exc.value)
    assert stat.S_IMODE(os.stat(path).st_mode) == dmode


@pytest.mark.parametrize("name", STATE_FILES + ["lock"])
@pytest.mark.parametrize("fmode", [0o620, 0o602, 0o666], ids=lambda m: f"{m:04o}")
def test_a_state_file_writable_by_others_is_refused_and_left_alone(tmp_path, name, fmode):
    """Another user could have rewritten it (a checksum is no MAC): refused, not repaired."""
    path = tmp_path / "state"
    make_td(path)
    os.chmod(path / name, fmode)
    with pytest.raises(ConfigError) as exc:
        with opened(path) as st:
            st.open_td(default_profile())
    assert f"{path}/{name}" in str(exc.value) and "writable by group or others" in str(exc.value)
    assert mode(path / name) == fmode


@pytest.mark.parametrize("name", STATE_FILES + ["lock"])
@pytest.mark.parametrize("fmode", [0o644, 0o604, 0o400, 0o700], ids=lambda m: f"{m:04o}")
def test_a_state_file_with_a_wider_mode_is_put_back_to_0600(tmp_path, name, fmode):
    """Readable by others (never writable): put back to 0600, and the TD's notices say so."""
    path = tmp_path / "state"
    first = make_td(path)
    os.chmod(path / name, fmode)
    with opened(path) as st:
        td = st.open_td(default_profile())
        assert td.rtmrs() == first.rtmrs()
        assert any(f"{path}/{name}" in n and "0600" in n for n in td.notices), td.notices
    assert mode(path / name) == 0o600


def test_read_pki_and_read_event_log_do_not_follow_symlinks(tmp_path):
    path = tmp_path / "state"
    make_td(path)
    assert state_mod.read_pki(str(path)) is not None
    link = tmp_path / "link"
    os.symlink(path, link)
    for reader in (state_mod.read_pki, state_mod.read_event_log):
        with pytest.raises(ConfigError) as exc:
            reader(str(link))
        assert str(link) in str(exc.value) and "symbolic link" in str(exc.value)
    for name, reader in (("platform-pki.json", state_mod.read_pki), (LOG_FILE, state_mod.read_event_log)):
        real = tmp_path / f"real-{name}"
        os.rename(path / name, real)
        os.symlink(real, path / name)
        with pytest.raises(ConfigError) as exc:
            reader(str(path))
        assert f"{path}/{name}" in str(exc.value) and "symbolic link" in str(exc.value)
        os.unlink(path / name)
        os.rename(real, path / name)
        os.chmod(path / name, 0o666)
        with pytest.raises(ConfigError) as exc:
            reader(str(path))
        assert "writable by group or others" in str(exc.value)
        assert mode(path / name) == 0o666, "a reader changes nothing"
        os.chmod(path / name, 0o600)
    os.chmod(path, 0o777)
    with pytest.raises(ConfigError):
        state_mod.read_pki(str(path))


def test_reset_unlinks_planted_symlinks_without_following_them(tmp_path):
    target = victim(tmp_path)
    path = tmp_path / "state"
    make_td(path)
    os.unlink(path / LOG_FILE)
    os.symlink(target, path / LOG_FILE)
    os.symlink(target, path / f".{LOG_FILE}.tmp")
    with opened(path, reset=True) as st:
        st.open_td(default_profile()).extend(3, DATA)
    assert untouched(target)
    assert not os.path.islink(path / LOG_FILE)
