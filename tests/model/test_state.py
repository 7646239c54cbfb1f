"""The state directory (tdxfs.model.state): durable RTMRs, REPORTDATA and platform secret.

Nothing is mounted; the TD is driven through the model API only.
"""

import contextlib
import errno
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from tdxfs.errors import ConfigError, StateError
from tdxfs.model import state as state_mod
from tdxfs.model.profile import default_profile, profile_from_mapping
from tdxfs.model.state import StateDir, encode_td_state
from tests.model import reference as ref

SECRET_FILE = "platform-secret"
TD_FILE = "td-state.json"
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
        for i in range(3):
            td.extend(i, DATA)
            _, rtmrs, _ = state_mod.decode_td_state((path / TD_FILE).read_bytes(), "test")
            assert rtmrs == td.rtmrs()


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
    doc["rtmrs"][3] = "00" * 48
    return json.dumps(doc).encode()


def _wrong(rtmrs=None, reportdata=None):
    def make(raw: bytes) -> bytes:
        digest, good_rtmrs, good_rd = state_mod.decode_td_state(raw, "test")
        return encode_td_state(digest, good_rtmrs if rtmrs is None else rtmrs,
                               good_rd if reportdata is None else reportdata)
    return make


CORRUPTIONS = {
    "empty": lambda raw: b"",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "garbage": lambda raw: b"\x00\xff\xfe not json at all",
    "json-not-object": lambda raw: b"[1, 2, 3]",
    "checksum-mismatch": _checksum_mismatch,
    "no-checksum": lambda raw: json.dumps({k: v for k, v in json.loads(raw).items()
                                           if k != "checksum"}).encode(),
    "rtmr-47-bytes": _wrong(rtmrs=[bytes(48)] * 3 + [bytes(47)]),
    "rtmr-49-bytes": _wrong(rtmrs=[bytes(49)] + [bytes(48)] * 3),
    "three-rtmrs": _wrong(rtmrs=[bytes(48)] * 3),
    "five-rtmrs": _wrong(rtmrs=[bytes(48)] * 5),
    "reportdata-63-bytes": _wrong(reportdata=bytes(63)),
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


def test_failed_save_raises_state_error_and_changes_nothing(tmp_path):
    """A save the filesystem refuses (the temp file's name is taken by a directory) leaves
    the in-memory RTMR and REPORTDATA and the stored state as they were."""
    path = tmp_path / "state"
    with opened(path) as st:
        td = st.open_td(default_profile())
        td.extend(3, DATA)
        before_rtmrs, before_rd = td.rtmrs(), td.reportdata
        os.mkdir(path / f".{TD_FILE}.tmp")
        with pytest.raises(StateError) as exc:
            td.extend(3, DATA)
        assert exc.value.errno == errno.EIO
        with pytest.raises(StateError):
            td.set_reportdata(bytes([1]) * 64)
        assert td.rtmrs() == before_rtmrs
        assert td.reportdata == before_rd
        assert td.verify_report(td.report()).ok
        os.rmdir(path / f".{TD_FILE}.tmp")
        td.extend(3, DATA)  # works again once the filesystem does
        expected = ref.extended(before_rtmrs[3], DATA)
        assert td.rtmr(3) == expected
    with opened(path) as st:
        assert st.open_td(default_profile()).rtmr(3) == expected


def test_disk_full_during_save_is_state_error(tmp_path, monkeypatch):
    path = tmp_path / "state"
    with opened(path) as st:
        td = st.open_td(default_profile())
        before = td.rtmrs()

        def no_space(*args):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(state_mod, "_write_durable", no_space)
        with pytest.raises(StateError) as exc:
            td.extend(0, DATA)
        assert os.strerror(errno.ENOSPC) in str(exc.value)
        assert td.rtmrs() == before


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
