"""The state directory: the platform secret, its PKI, the TD's event log and REPORTDATA, durable.

Layout of DIR (0700, files 0600):
  lock               flock'ed by the one daemon serving this state
  platform-secret    32 raw bytes: the platform's MAC key seed
  platform-pki.json  the simulated PKI (keys and certificates, PEM) and the QE's attestation
                     key (tdxfs.model.pki), with a checksum
  td-state.json      REPORTDATA, the digest of the profile the TD belongs to, a checksum
                     (format tdxfs-state-v2)
  event-log          the TD's event log, the source of truth for RTMR0-3 (below)

td-state.json and the other JSON files are saved write-temp, fsync, rename, fsync(DIR),
so once a save returns the new values survive ``kill -9`` and power loss. A save that
fails (a full disk: ENOSPC, see StateNoSpace) removes its temporary file and changes
nothing; so does a failed append to event-log (it is cut back).

Trust (the daemon runs as root; docs/reliability.md, defect 1): DIR is opened once, O_DIRECTORY |
O_NOFOLLOW (made 0700 first if missing), and every file is opened relative to that
descriptor with O_NOFOLLOW; temporary files are made O_CREAT|O_EXCL after a stale one
(a crash's, or anything planted under its name) is unlinked. DIR and every file in it
must belong to the daemon's user and must not be writable by group or others - anyone
else who could write them could plant a symlink or rewrite a file (the checksums are no
MAC) - otherwise the start is refused with a message naming it, changing nothing. A
state file that is merely readable by others (0644, or any mode other than 0600) is put
back to 0600, and a DIR of another mode to 0700, with a notice in the TD's ``notices``.
A symlinked DIR is refused, not followed (give the real path). Readers that take no
lock (read_pki, read_event_log) apply the same checks and change nothing.

event-log: the header ``tdxfs event log v1\n``, then one self-checking record per event,
the profile's boot events first::

    "tdxR"  u32 L  payload[L]  chain[32]
    payload = u32 MR index, u32 event type, digest[48], event data (L - 56 bytes)
    chain   = SHA-256(previous chain || "tdxR" || L || payload); the first previous
              chain is SHA-256(header)

An extend appends its record at the end, then fdatasync: the extend is acknowledged only
when the record (and so the register, which is computed from the log) is durable. A
failed append is cut off again before the error is returned. At start the RTMRs are the
profile's boot values extended by the records after the boot events, so replaying the log
always gives the RTMRs. A record interrupted by a crash can only be the last thing in the
file and was never acknowledged: an incomplete record, a last record whose chain does not
check, or a zero-filled tail shorter than a record is dropped at start (the file is
truncated to the last good record, and the TD's ``notices`` say so). Anything else that
does not check - a bad record followed by more data, a wrong header, a log that does not
begin with the profile's boot events - refuses the start with a message naming the file.

A missing, truncated, unparsable or checksum-failing file refuses the start with a
message naming the file; nothing is ever reset silently (``reset=True`` does it on
purpose). Files created for an existing directory: platform-pki.json, for a directory
made before tdxfs produced quotes (and rewritten once, re-issued with Intel's subject
names, for one made before the certificates carried them); event-log (and td-state.json rewritten as v2) for a
directory made before event logs (format tdxfs-state-v1, RTMRs kept in td-state.json):
such a directory is migrated when its RTMRs are still the profile's boot values (its log
is then exactly the boot events); if RTMRs were extended after boot, the extends were
never logged and cannot be replayed, so the start is refused with a message saying how
to proceed (keep using the earlier tdxfs for that TD, or --reset).
"""

import errno
import fcntl
import hashlib
import json
import os
import stat
import struct
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

from tdxfs.errors import ConfigError, InvalidInput, StateError, StateNoSpace
from tdxfs.model import abi
from tdxfs.model.eventlog import MAX_EVENT_DATA, Event, EventLog
from tdxfs.model.pki import PckTcb, PlatformPki
from tdxfs.model.profile import TdProfile
from tdxfs.model.qe import QuotingEnclave
from tdxfs.model.td import PLATFORM_SECRET_SIZE, Platform, TrustDomain, registers_from_log

FORMAT = "tdxfs-state-v2"
FORMAT_V1 = "tdxfs-state-v1"  # RTMRs in td-state.json, no event log (before the event log existed)
PKI_FORMAT = "tdxfs-pki-state-v1"
SECRET_FILE = "platform-secret"
PKI_FILE = "platform-pki.json"
TD_FILE = "td-state.json"
LOG_FILE = "event-log"
LOCK_FILE = "lock"

LOG_HEADER = b"tdxfs event log v1\n"
RECORD_MAGIC = b"tdxR"
_RECORD_HEAD = struct.Struct("<4sI")
_PAYLOAD_HEAD = struct.Struct("<II")
CHAIN_SIZE = 32
MIN_PAYLOAD = _PAYLOAD_HEAD.size + abi.MEASUREMENT_SIZE
MAX_PAYLOAD = MIN_PAYLOAD + MAX_EVENT_DATA
MAX_RECORD = _RECORD_HEAD.size + MAX_PAYLOAD + CHAIN_SIZE
DIR_MODE = 0o700
FILE_MODE = 0o600
_NEW_FILE = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Every state file is opened relative to DIR's descriptor with these: never through a
# symlink, never as a controlling tty, and a FIFO planted under a state file's name cannot
# block the open (it is then refused as not a regular file).
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


# -- DIR and its files, opened without following symlinks and checked (reliability defect 1) --


def _refuse_untrusted(st: os.stat_result, what: str) -> None:
    """ConfigError unless ``st`` (DIR or a file in it) belongs to this process's user and is
    not writable by group or others: anyone else who could write it could plant a symlink
    or rewrite a file (a checksum is no MAC), and the daemon runs as root."""
    euid = os.geteuid()
    if st.st_uid != euid:
        raise ConfigError(f"{what} is owned by uid {st.st_uid}, not by this daemon's user (uid {euid}); "
                          "refusing to use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                          "refusing to use it: another user may have changed it")


def open_state_dir(path: str, create: bool = False) -> int:
    """The descriptor of state directory ``path`` (absolute), opened O_DIRECTORY|O_NOFOLLOW
    and checked (:func:`_refuse_untrusted`); ConfigError naming it otherwise. With
    ``create`` a missing DIR is made 0700 first (mkdir, then the same checked open: a DIR
    swapped in between is refused, never followed)."""
    if create:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"state directory {path}: {exc.strerror}") from None
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        if os.path.islink(path):
            raise ConfigError(f"state directory {path} is a symbolic link; refusing to follow it") from None
        raise ConfigError(f"state directory {path}: {exc.strerror}") from None
    try:
        _refuse_untrusted(os.fstat(fd), f"state directory {path}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_state_file(dirfd: int, where: str, name: str, flags: int = os.O_RDONLY) -> Optional[int]:
    """``name`` opened relative to DIR's ``dirfd`` with O_NOFOLLOW (created 0600 if ``flags``
    has O_CREAT) and checked: a regular file of this user, not writable by group or
    others. None when it does not exist; ConfigError naming ``where`` otherwise."""
    try:
        fd = os.open(name, flags | _FILE_FLAGS, FILE_MODE, dir_fd=dirfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"state file {where} is a symbolic link; refusing to follow it") from None
        raise ConfigError(f"state file {where} is unreadable: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"state file {where} is not a regular file; refusing to use it")
        _refuse_untrusted(st, f"state file {where}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd(fd: int, where: str) -> bytes:
    """All of ``fd``'s bytes (then closed); ConfigError naming ``where`` when a read fails."""
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError as exc:
        raise ConfigError(f"state file {where} is unreadable: {exc.strerror}") from None
    finally:
        os.close(fd)


def _unlink(dirfd: int, name: str) -> None:
    """``name`` in DIR removed if it exists (a symlink is removed itself, never followed)."""
    try:
        os.unlink(name, dir_fd=dirfd)
    except FileNotFoundError:
        pass


def _discard(dirfd: int, name: str) -> None:
    """Best-effort removal of a temporary file after a failure (the next save unlinks a
    stale one first anyway)."""
    try:
        os.unlink(name, dir_fd=dirfd)
    except OSError:
        pass


def _write_durable(dirfd: int, name: str, data: bytes) -> None:
    """Replace ``name`` in DIR by ``data``: temporary file, fsync, rename, fsync(DIR). A
    stale temporary file (a crash's, or a symlink planted under its name) is unlinked
    first and the new one made O_CREAT|O_EXCL|O_NOFOLLOW, so nothing outside DIR is ever
    written; when anything fails (a full disk) the temporary file is removed again and
    ``name`` is as it was."""
    tmp = f".{name}.tmp"
    _unlink(dirfd, tmp)
    fd = os.open(tmp, os.O_WRONLY | _NEW_FILE, FILE_MODE, dir_fd=dirfd)
    try:
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the umask
            _write_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except BaseException:
        _discard(dirfd, tmp)
        raise
    os.fsync(dirfd)


def _checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def encode_td_state(profile_digest: str, reportdata: bytes) -> bytes:
    body = {
        "format": FORMAT,
        "profile_digest": profile_digest,
        "reportdata": reportdata.hex(),
    }
    return (json.dumps({**body, "checksum": _checksum(body)}, indent=1) + "\n").encode()


def _checked_document(raw: bytes, where: str, fmt: Union[str, Tuple[str, ...]]) -> dict:
    """A state file's JSON with its format and checksum checked; ConfigError otherwise."""
    formats = (fmt,) if isinstance(fmt, str) else fmt
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _corrupt(where, "not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") not in formats:
        raise _corrupt(where, f"format is not {' or '.join(formats)}")
    checksum = doc.pop("checksum", None)
    if checksum != _checksum(doc):
        raise _corrupt(where, "checksum mismatch")
    return doc


def _corrupt(where: str, why: str) -> ConfigError:
    return ConfigError(f"state file {where} is corrupt ({why}); refusing to start. "
                       "Use --reset to start a fresh TD on purpose")


class TdState(NamedTuple):
    format: str
    profile_digest: str
    reportdata: bytes
    rtmrs: Optional[Tuple[bytes, ...]]  # only in the v1 format


def decode_td_state(raw: bytes, where: str) -> TdState:
    """td-state.json, the current format or v1 (which also carries RTMR0-3)."""
    doc = _checked_document(raw, where, (FORMAT, FORMAT_V1))
    rtmrs = None
    try:
        if doc["format"] == FORMAT_V1:
            rtmrs = tuple(bytes.fromhex(r) for r in doc["rtmrs"])
        reportdata = bytes.fromhex(doc["reportdata"])
        digest = doc["profile_digest"]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _corrupt(where, "fields missing or not hex") from None
    if not isinstance(digest, str):
        raise _corrupt(where, "profile_digest is not a string")
    if rtmrs is not None and (len(rtmrs) != abi.RTMR_COUNT or any(len(r) != abi.MEASUREMENT_SIZE for r in rtmrs)):
        raise _corrupt(where, "RTMR values of the wrong count or length")
    if len(reportdata) != abi.REPORTDATA_SIZE:
        raise _corrupt(where, "REPORTDATA of the wrong length")
    return TdState(doc["format"], digest, reportdata, rtmrs)


# -- the event log file ---------------------------------------------------------------------

_FIRST_CHAIN = hashlib.sha256(LOG_HEADER).digest()


def encode_log_record(chain: bytes, event: Event) -> Tuple[bytes, bytes]:
    """(the record for ``event`` after a record whose chain is ``chain``, its chain)."""
    payload = _PAYLOAD_HEAD.pack(event.mr, event.event_type) + event.digest + event.data
    if len(payload) > MAX_PAYLOAD:
        raise InvalidInput(f"event data is limited to {MAX_EVENT_DATA} bytes")
    head = _RECORD_HEAD.pack(RECORD_MAGIC, len(payload))
    new_chain = hashlib.sha256(chain + head + payload).digest()
    return head + payload + new_chain, new_chain


def encode_log(events: Sequence[Event]) -> Tuple[bytes, bytes]:
    """(a whole event-log file for ``events``, the chain of its last record)."""
    parts, chain = [LOG_HEADER], _FIRST_CHAIN
    for event in events:
        record, chain = encode_log_record(chain, event)
        parts.append(record)
    return b"".join(parts), chain


@dataclass
class DecodedLog:
    events: List[Event]
    length: int  # bytes up to the end of the last good record
    chain: bytes  # the chain of the last good record
    torn: int  # bytes dropped after it (0: none)


def decode_log(raw: bytes, where: str) -> DecodedLog:
    """The records of an event-log file; a torn last record is reported, not refused.
    ConfigError for anything else that does not check."""
    if not raw.startswith(LOG_HEADER):
        if LOG_HEADER.startswith(raw) or not raw.strip(b"\0"):
            # Shorter than its header (or zero-filled): the file was never completed.
            raise _corrupt(where, "the file is empty or incomplete")
        raise _corrupt(where, "not a tdxfs event log (wrong header)")
    pos, chain, events = len(LOG_HEADER), _FIRST_CHAIN, []
    while pos < len(raw):
        rest = len(raw) - pos
        bad = _check_record(raw, pos, chain)
        if bad is None:
            _, length = _RECORD_HEAD.unpack_from(raw, pos)
            end = pos + _RECORD_HEAD.size + length
            payload = raw[pos + _RECORD_HEAD.size : end]
            chain = raw[end : end + CHAIN_SIZE]
            mr, etype = _PAYLOAD_HEAD.unpack_from(payload, 0)
            try:
                events.append(Event(mr, etype, payload[_PAYLOAD_HEAD.size : MIN_PAYLOAD], payload[MIN_PAYLOAD:]))
            except InvalidInput as exc:
                raise _corrupt(where, f"record {len(events)} at offset {pos}: {exc}") from None
            pos = end + CHAIN_SIZE
            continue
        why, at_tail = bad
        if at_tail or (rest <= MAX_RECORD and not raw[pos:].strip(b"\0")):
            return DecodedLog(events, pos, chain, rest)
        raise _corrupt(where, f"record {len(events)} at offset {pos}: {why}, and more data follows it")
    return DecodedLog(events, pos, chain, 0)


def _check_record(raw: bytes, pos: int, chain: bytes):
    """None when the record at ``pos`` checks; else (why, whether it is the file's last thing)."""
    rest = len(raw) - pos
    if rest < _RECORD_HEAD.size:
        return "incomplete record header", True
    magic, length = _RECORD_HEAD.unpack_from(raw, pos)
    if magic != RECORD_MAGIC:
        return "no record marker", False
    if not MIN_PAYLOAD <= length <= MAX_PAYLOAD:
        return f"record length {length} out of range", False
    end = pos + _RECORD_HEAD.size + length + CHAIN_SIZE
    if end > len(raw):
        return "incomplete record", True
    expected = hashlib.sha256(chain + raw[pos : end - CHAIN_SIZE]).digest()
    if raw[end - CHAIN_SIZE : end] != expected:
        return "checksum chain broken", end == len(raw)
    return None


def encode_pki(pki: PlatformPki) -> bytes:
    body = {"format": PKI_FORMAT, "pki": pki.to_blobs()}
    return (json.dumps({**body, "checksum": _checksum(body)}, indent=1) + "\n").encode()


def decode_pki(raw: bytes, where: str) -> PlatformPki:
    doc = _checked_document(raw, where, PKI_FORMAT)
    return PlatformPki.from_blobs(doc.get("pki"), f"state file {where}")


def pck_tcb(profile: TdProfile) -> PckTcb:
    """The TCB the platform's PCK certificate is issued for: the profile's CPUSVN and PCE SVN."""
    return PckTcb(profile["cpusvn"], profile.pcesvn)


def _read_unlocked(path: str, name: str) -> Tuple[Optional[bytes], str]:
    """(the bytes of ``name`` in state directory ``path`` or None when it is missing, its
    path) for a reader that takes no lock. DIR and the file are opened without following
    symlinks and checked as the daemon checks them; nothing is changed."""
    path = os.path.abspath(path)
    where = f"{path}/{name}"
    dirfd = open_state_dir(path)
    try:
        fd = open_state_file(dirfd, where, name)
    finally:
        os.close(dirfd)
    return (None if fd is None else _read_fd(fd, where)), where


def read_pki(path: str) -> PlatformPki:
    """The PKI kept in state directory ``path``, read without taking its lock (the file is
    only ever replaced by rename), so it works while a daemon serves the directory."""
    raw, where = _read_unlocked(path, PKI_FILE)
    if raw is None:
        raise ConfigError(f"{where} does not exist: the PKI is made when a TD first starts in "
                          f"{path} (tdxfs mount --state {path})")
    return decode_pki(raw, where)


class StateDir:
    """An opened, locked state directory; the TD's store (``append_event``,
    ``save_reportdata``) once :meth:`open_td` has run."""

    def __init__(self, path: str, reset: bool = False):
        self.path = os.path.abspath(path)
        self._dirfd: Optional[int] = None
        self._lockfd: Optional[int] = None
        self._logfd: Optional[int] = None
        self._log_size = 0
        self._log_chain = _FIRST_CHAIN
        self._log_broken: Optional[str] = None
        self._digest: Optional[str] = None
        self.notices: List[str] = []  # modes put back to 0600/0700, for the TD's notices
        try:
            self._dirfd = open_state_dir(self.path, create=True)
            self._tighten(self._dirfd, f"state directory {self.path}", DIR_MODE)
            self._lockfd = self._open(LOCK_FILE, os.O_RDWR | os.O_CREAT)
        except BaseException:
            self.close()
            raise
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise ConfigError(f"state directory {self.path} is in use by another tdxfs daemon") from None
        if reset:
            try:
                for name in (SECRET_FILE, PKI_FILE, TD_FILE, LOG_FILE):
                    _unlink(self._dirfd, name)
                    _unlink(self._dirfd, f".{name}.tmp")
                os.fsync(self._dirfd)
            except OSError as exc:
                self.close()
                raise ConfigError(f"state directory {self.path}: cannot reset: {exc.strerror}") from None

    def _tighten(self, fd: int, what: str, want: int) -> None:
        """Put any other mode back to ``want`` (a wider one is readable by others; a
        writable one was refused before this), and say so in the notices."""
        have = stat.S_IMODE(os.fstat(fd).st_mode)
        if have == want:
            return
        try:
            os.fchmod(fd, want)
        except OSError as exc:
            raise ConfigError(f"{what} has mode {have:04o} and cannot be put back to {want:04o}: "
                              f"{exc.strerror}") from None
        self.notices.append(f"{what} had mode {have:04o}; put back to {want:04o}")

    def _open(self, name: str, flags: int = os.O_RDONLY) -> Optional[int]:
        """A state file opened as :func:`open_state_file` does, its mode put back to 0600."""
        where = f"{self.path}/{name}"
        fd = open_state_file(self._dirfd, where, name, flags)
        if fd is not None:
            try:
                self._tighten(fd, f"state file {where}", FILE_MODE)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def close(self) -> None:
        for fd in (getattr(self, "_logfd", None), getattr(self, "_lockfd", None), getattr(self, "_dirfd", None)):
            if fd is not None:
                os.close(fd)
        self._logfd = self._lockfd = self._dirfd = None

    def _read(self, name: str) -> Optional[bytes]:
        fd = self._open(name)
        return None if fd is None else _read_fd(fd, f"{self.path}/{name}")

    def _open_log(self) -> Optional[bytes]:
        """Open event-log for appending (kept as self._logfd) and return its bytes; None
        when there is none."""
        fd = self._open(LOG_FILE, os.O_RDWR)
        if fd is None:
            return None
        self._logfd = os.dup(fd)  # _read_fd closes the one it reads
        try:
            return _read_fd(fd, f"{self.path}/{LOG_FILE}")
        except BaseException:
            os.close(self._logfd)
            self._logfd = None
            raise

    def open_td(self, profile: TdProfile) -> TrustDomain:
        """Resume the TD kept here, or create it (fresh secret, PKI, boot event log) if DIR
        is new. The TD's ``qe`` is the platform's quoting enclave."""
        secret = self._read(SECRET_FILE)
        pki_raw = self._read(PKI_FILE)
        td_raw = self._read(TD_FILE)
        log_raw = self._open_log()
        where = f"{self.path}/{SECRET_FILE}"
        td_where, log_where = f"{self.path}/{TD_FILE}", f"{self.path}/{LOG_FILE}"
        if secret is None and pki_raw is not None:
            raise ConfigError(f"state file {where} is missing but {PKI_FILE} exists; refusing to start. "
                              "Use --reset to start a fresh TD on purpose")
        if secret is None and td_raw is not None:
            raise ConfigError(f"state file {where} is missing but {TD_FILE} exists; refusing to start. "
                              "Use --reset to start a fresh TD on purpose")
        if secret is None and log_raw is not None:
            raise ConfigError(f"state file {where} is missing but {LOG_FILE} exists; refusing to start. "
                              "Use --reset to start a fresh TD on purpose")
        if secret is not None and td_raw is None:
            raise ConfigError(f"state file {td_where} is missing but {SECRET_FILE} exists; refusing "
                              "to start. Use --reset to start a fresh TD on purpose")
        if secret is not None and len(secret) != PLATFORM_SECRET_SIZE:
            raise ConfigError(f"state file {where} is corrupt ({len(secret)} bytes, expected "
                              f"{PLATFORM_SECRET_SIZE}); refusing to start. Use --reset to start a fresh TD on purpose")

        digest = profile.digest()
        notices: List[str] = []
        migrate = torn = False
        if td_raw is None:  # a new TD
            events: Sequence[Event] = tuple(profile.boot_events)
            reportdata = bytes(abi.REPORTDATA_SIZE)
        else:
            stored = decode_td_state(td_raw, td_where)
            if stored.profile_digest != digest:
                raise ConfigError(f"state directory {self.path} belongs to a TD with another profile; "
                                  "use the same --profile, or --reset to start a fresh TD")
            reportdata = stored.reportdata
            if stored.format == FORMAT_V1:
                if stored.rtmrs != profile.boot_rtmrs():
                    raise ConfigError(
                        f"state file {td_where} was written by an earlier tdxfs ({FORMAT_V1}, no event log) "
                        "and its RTMRs were extended after boot; those extends were never logged, so this "
                        "TD cannot be migrated to one whose event log replays to its RTMRs. Keep using the "
                        "earlier tdxfs for this TD, or start a fresh TD with --reset (new platform key: "
                        "its earlier reports and quotes no longer verify)")
                events, migrate = tuple(profile.boot_events), True
                notices.append(f"state directory {self.path}: migrated from {FORMAT_V1} (RTMRs at their boot "
                               f"values); wrote {LOG_FILE} with the profile's boot events")
            else:
                if log_raw is None:
                    raise ConfigError(f"state file {log_where} is missing but {TD_FILE} exists; refusing to "
                                      "start. Use --reset to start a fresh TD on purpose")
                decoded = decode_log(log_raw, log_where)
                events = decoded.events
                try:
                    registers_from_log(profile, events)
                except InvalidInput as exc:
                    raise _corrupt(log_where, str(exc)) from None
                if decoded.torn:
                    torn = True
                    notices.append(f"state file {log_where}: dropped {decoded.torn} bytes of an interrupted, "
                                   "never acknowledged record at its end")
        pki = self._open_pki(pki_raw, profile) if secret is not None else None  # refusals before writes
        self._remove_stale_temporaries()

        if secret is None:
            platform = Platform()
            try:
                _write_durable(self._dirfd, SECRET_FILE, platform.secret)
            except OSError as exc:
                raise ConfigError(f"cannot write state file {where}: {exc.strerror}") from None
        else:
            platform = Platform(secret)
        self._digest = digest
        try:
            if td_raw is None or migrate:
                self._create_log(events)
                _write_durable(self._dirfd, TD_FILE, encode_td_state(digest, reportdata))
            elif torn:
                os.ftruncate(self._logfd, decoded.length)
                os.fsync(self._logfd)
            if not (td_raw is None or migrate):
                self._log_size, self._log_chain = decoded.length, decoded.chain
        except OSError as exc:
            raise ConfigError(f"cannot write state in {self.path}: {exc.strerror}") from None
        except InvalidInput as exc:  # a boot event too large for a log record
            raise ConfigError(f"cannot write state in {self.path}: {exc}") from None
        if pki is None:
            pki = self._open_pki(pki_raw, profile)

        td = TrustDomain(platform, profile, reportdata=reportdata, event_log=EventLog(events),
                         store=self, qe=QuotingEnclave(platform, pki))
        td.notices = td.notices + tuple(self.notices) + tuple(notices)
        return td

    def _remove_stale_temporaries(self) -> None:
        """Temporary files a crash left (or anything under their names) are unlinked, never
        followed, once the start is known to go ahead; ConfigError naming one that cannot be."""
        for name in (SECRET_FILE, PKI_FILE, TD_FILE, LOG_FILE):
            try:
                _unlink(self._dirfd, f".{name}.tmp")
            except OSError as exc:
                raise ConfigError(f"cannot remove the stale temporary file {self.path}/.{name}.tmp: "
                                  f"{exc.strerror}") from None

    def _create_log(self, events: Sequence[Event]) -> None:
        """Write a whole new event-log (temp file, fsync, rename, fsync DIR) and keep it open."""
        data, chain = encode_log(events)
        tmp = f".{LOG_FILE}.tmp"
        _unlink(self._dirfd, tmp)  # left by a creation that was interrupted (never followed)
        fd = os.open(tmp, os.O_RDWR | _NEW_FILE, FILE_MODE, dir_fd=self._dirfd)
        try:
            os.fchmod(fd, FILE_MODE)
            _write_all(fd, data, 0)
            os.fsync(fd)
            os.rename(tmp, LOG_FILE, src_dir_fd=self._dirfd, dst_dir_fd=self._dirfd)
            os.fsync(self._dirfd)
        except BaseException:
            os.close(fd)
            _discard(self._dirfd, tmp)
            raise
        if self._logfd is not None:
            os.close(self._logfd)
        self._logfd, self._log_size, self._log_chain = fd, len(data), chain

    def _open_pki(self, raw: Optional[bytes], profile: TdProfile) -> PlatformPki:
        """The stored PKI, or a new one (a new platform, or a directory from before quotes).
        A PCK certificate for another TCB than the profile's is re-issued, as PCS would; a
        PKI from before the certificates carried Intel's subject names is saved re-issued."""
        tcb = pck_tcb(profile)
        if raw is None:
            pki = PlatformPki.generate(tcb)
        else:
            pki = decode_pki(raw, f"{self.path}/{PKI_FILE}")
            if pki.tcb == tcb and not pki.renamed:
                return pki
            if pki.tcb != tcb:
                pki = pki.reissue_pck(tcb)
        try:
            _write_durable(self._dirfd, PKI_FILE, encode_pki(pki))
        except OSError as exc:
            raise ConfigError(f"cannot write state file {self.path}/{PKI_FILE}: {exc.strerror}") from None
        return pki

    # -- the TD's store -----------------------------------------------------------------------

    def append_event(self, event: Event) -> None:
        """Append the event's record to event-log and make it durable; on failure cut it off
        again and raise StateError (the TD then changes nothing)."""
        if self._dirfd is None or self._logfd is None:
            raise StateError(f"cannot save state in {self.path}: the state directory is closed")
        if self._log_broken is not None:
            raise StateError(f"cannot save state in {self.path}: {self._log_broken}")
        try:
            record, chain = encode_log_record(self._log_chain, event)
        except InvalidInput as exc:
            raise StateError(f"cannot save state in {self.path}: {exc}") from None
        try:
            _write_all(self._logfd, record, self._log_size)
            os.fdatasync(self._logfd)
        except OSError as exc:
            self._cut_log_back()
            raise self._save_error(exc) from None
        self._log_size += len(record)
        self._log_chain = chain

    def _cut_log_back(self) -> None:
        try:
            os.ftruncate(self._logfd, self._log_size)
            os.fdatasync(self._logfd)
        except OSError as exc:
            # The file may now end in a partial record that a later append would bury:
            # refuse further extends; a restart drops the partial record as torn.
            self._log_broken = f"{LOG_FILE} could not be cut back after a failed append ({exc.strerror}); restart"

    def save_reportdata(self, reportdata: bytes) -> None:
        if self._dirfd is None or self._digest is None:
            raise StateError(f"cannot save state in {self.path}: the state directory is closed")
        try:
            _write_durable(self._dirfd, TD_FILE, encode_td_state(self._digest, reportdata))
        except OSError as exc:
            raise self._save_error(exc) from None

    def _save_error(self, exc: OSError) -> StateError:
        """A failed save as the request's answer: ENOSPC when the state's filesystem is full
        (or a quota is exceeded), so the writer knows it can succeed once space is freed;
        EIO for anything else."""
        cls = StateNoSpace if exc.errno in _NO_SPACE else StateError
        return cls(f"cannot save state in {self.path}: {exc.strerror}")


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def read_event_log(path: str) -> List[Event]:
    """The events kept in state directory ``path`` (read without its lock; a torn last
    record is left out). ConfigError when the log is missing or corrupt."""
    raw, where = _read_unlocked(path, LOG_FILE)
    if raw is None:
        raise ConfigError(f"state file {where} does not exist")
    return decode_log(raw, where).events
