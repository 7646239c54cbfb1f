"""The state directory: the platform secret, its PKI and the TD's live registers, durable.

Layout of DIR (0700, files 0600):
  lock               flock'ed by the one daemon serving this state
  platform-secret    32 raw bytes: the platform's MAC key seed
  platform-pki.json  the simulated PKI (keys and certificates, PEM) and the QE's attestation
                     key (tdxfs.model.pki), with a checksum
  td-state.json      RTMR0-3, REPORTDATA, the digest of the profile they belong to, a checksum

Every save is write-temp, fsync, rename, fsync(DIR), so once ``save`` returns the new
values survive ``kill -9`` and power loss. A missing, truncated, unparsable or
checksum-failing file refuses the start with a message naming the file; nothing is ever
reset silently (``reset=True`` does it on purpose). The one file created for an existing
directory is platform-pki.json, for a directory made before tdxfs produced quotes.
"""

import fcntl
import hashlib
import json
import os
from typing import Optional, Sequence, Tuple

from tdxfs.errors import ConfigError, StateError
from tdxfs.model import abi
from tdxfs.model.pki import PckTcb, PlatformPki
from tdxfs.model.profile import TdProfile
from tdxfs.model.qe import QuotingEnclave
from tdxfs.model.td import PLATFORM_SECRET_SIZE, Platform, TrustDomain

FORMAT = "tdxfs-state-v1"
PKI_FORMAT = "tdxfs-pki-state-v1"
SECRET_FILE = "platform-secret"
PKI_FILE = "platform-pki.json"
TD_FILE = "td-state.json"
LOCK_FILE = "lock"


def _write_durable(dirfd: int, name: str, data: bytes) -> None:
    tmp = f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=dirfd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    os.fsync(dirfd)


def _checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def encode_td_state(profile_digest: str, rtmrs: Sequence[bytes], reportdata: bytes) -> bytes:
    body = {
        "format": FORMAT,
        "profile_digest": profile_digest,
        "rtmrs": [r.hex() for r in rtmrs],
        "reportdata": reportdata.hex(),
    }
    return (json.dumps({**body, "checksum": _checksum(body)}, indent=1) + "\n").encode()


def _checked_document(raw: bytes, where: str, fmt: str) -> dict:
    """A state file's JSON with its format and checksum checked; ConfigError otherwise."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _corrupt(where, "not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise _corrupt(where, f"format is not {fmt}")
    checksum = doc.pop("checksum", None)
    if checksum != _checksum(doc):
        raise _corrupt(where, "checksum mismatch")
    return doc


def _corrupt(where: str, why: str) -> ConfigError:
    return ConfigError(f"state file {where} is corrupt ({why}); refusing to start. "
                       "Use --reset to start a fresh TD on purpose")


def decode_td_state(raw: bytes, where: str) -> Tuple[str, Tuple[bytes, ...], bytes]:
    doc = _checked_document(raw, where, FORMAT)
    try:
        rtmrs = tuple(bytes.fromhex(r) for r in doc["rtmrs"])
        reportdata = bytes.fromhex(doc["reportdata"])
        digest = str(doc["profile_digest"])
    except (KeyError, TypeError, ValueError):
        raise _corrupt(where, "fields missing or not hex") from None
    if len(rtmrs) != abi.RTMR_COUNT or any(len(r) != abi.MEASUREMENT_SIZE for r in rtmrs):
        raise _corrupt(where, "RTMR values of the wrong count or length")
    if len(reportdata) != abi.REPORTDATA_SIZE:
        raise _corrupt(where, "REPORTDATA of the wrong length")
    return digest, rtmrs, reportdata


def encode_pki(pki: PlatformPki) -> bytes:
    body = {"format": PKI_FORMAT, "pki": pki.to_blobs()}
    return (json.dumps({**body, "checksum": _checksum(body)}, indent=1) + "\n").encode()


def decode_pki(raw: bytes, where: str) -> PlatformPki:
    doc = _checked_document(raw, where, PKI_FORMAT)
    return PlatformPki.from_blobs(doc.get("pki"), f"state file {where}")


def pck_tcb(profile: TdProfile) -> PckTcb:
    """The TCB the platform's PCK certificate is issued for: the profile's CPUSVN and PCE SVN."""
    return PckTcb(profile["cpusvn"], profile.pcesvn)


def read_pki(path: str) -> PlatformPki:
    """The PKI kept in state directory ``path``, read without taking its lock (the file is
    only ever replaced by rename), so it works while a daemon serves the directory."""
    where = os.path.join(os.path.abspath(path), PKI_FILE)
    try:
        with open(where, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist: the PKI is made when a TD first starts in "
                          f"{path} (tdxfs mount --state {path})") from None
    except OSError as exc:
        raise ConfigError(f"state file {where} is unreadable: {exc.strerror}") from None
    return decode_pki(raw, where)


class StateDir:
    """An opened, locked state directory."""

    def __init__(self, path: str, reset: bool = False):
        self.path = os.path.abspath(path)
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            os.chmod(self.path, 0o700)
            self._dirfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            self._lockfd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600, dir_fd=self._dirfd)
        except OSError as exc:
            self.close()
            raise ConfigError(f"state directory {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise ConfigError(f"state directory {self.path} is in use by another tdxfs daemon") from None
        if reset:
            for name in (SECRET_FILE, PKI_FILE, TD_FILE):
                try:
                    os.unlink(name, dir_fd=self._dirfd)
                except FileNotFoundError:
                    pass
            os.fsync(self._dirfd)

    def close(self) -> None:
        for fd in (getattr(self, "_lockfd", None), getattr(self, "_dirfd", None)):
            if fd is not None:
                os.close(fd)
        self._lockfd = self._dirfd = None

    def _read(self, name: str) -> Optional[bytes]:
        try:
            fd = os.open(name, os.O_RDONLY, dir_fd=self._dirfd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"state file {self.path}/{name} is unreadable: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ConfigError(f"state file {self.path}/{name} is unreadable: {exc.strerror}") from None

    def open_td(self, profile: TdProfile) -> TrustDomain:
        """Resume the TD kept here, or create it (fresh secret, PKI, boot-time RTMRs) if DIR
        is new. The TD's ``qe`` is the platform's quoting enclave."""
        secret = self._read(SECRET_FILE)
        pki_raw = self._read(PKI_FILE)
        td_raw = self._read(TD_FILE)
        where = f"{self.path}/{SECRET_FILE}"
        if secret is None and pki_raw is not None:
            raise ConfigError(f"state file {where} is missing but {PKI_FILE} exists; refusing to start. "
                              "Use --reset to start a fresh TD on purpose")
        if secret is None and td_raw is not None:
            raise ConfigError(f"state file {where} is missing but {TD_FILE} exists; refusing to start. "
                              "Use --reset to start a fresh TD on purpose")
        if secret is not None and td_raw is None:
            raise ConfigError(f"state file {self.path}/{TD_FILE} is missing but {SECRET_FILE} exists; refusing "
                              "to start. Use --reset to start a fresh TD on purpose")
        if secret is not None and len(secret) != PLATFORM_SECRET_SIZE:
            raise ConfigError(f"state file {where} is corrupt ({len(secret)} bytes, expected "
                              f"{PLATFORM_SECRET_SIZE}); refusing to start. Use --reset to start a fresh TD on purpose")
        if secret is None:
            platform = Platform()
            try:
                _write_durable(self._dirfd, SECRET_FILE, platform.secret)
            except OSError as exc:
                raise ConfigError(f"cannot write state file {where}: {exc.strerror}") from None
        else:
            platform = Platform(secret)

        digest = profile.digest()
        if td_raw is None:
            rtmrs, reportdata = profile.boot_rtmrs(), bytes(abi.REPORTDATA_SIZE)
            self.save(digest, rtmrs, reportdata)
        else:
            stored_digest, rtmrs, reportdata = decode_td_state(td_raw, f"{self.path}/{TD_FILE}")
            if stored_digest != digest:
                raise ConfigError(f"state directory {self.path} belongs to a TD with another profile; "
                                  "use the same --profile, or --reset to start a fresh TD")
        pki = self._open_pki(pki_raw, profile)  # after the profile check: a refusal changes nothing

        def persist(new_rtmrs, new_reportdata):
            self.save(digest, new_rtmrs, new_reportdata)

        return TrustDomain(platform, profile, rtmrs=rtmrs, reportdata=reportdata, persist=persist,
                           qe=QuotingEnclave(platform, pki))

    def _open_pki(self, raw: Optional[bytes], profile: TdProfile) -> PlatformPki:
        """The stored PKI, or a new one (a new platform, or a directory from before quotes).
        A PCK certificate for another TCB than the profile's is re-issued, as PCS would."""
        tcb = pck_tcb(profile)
        if raw is None:
            pki = PlatformPki.generate(tcb)
        else:
            pki = decode_pki(raw, f"{self.path}/{PKI_FILE}")
            if pki.tcb == tcb:
                return pki
            pki = pki.reissue_pck(tcb)
        try:
            _write_durable(self._dirfd, PKI_FILE, encode_pki(pki))
        except OSError as exc:
            raise ConfigError(f"cannot write state file {self.path}/{PKI_FILE}: {exc.strerror}") from None
        return pki

    def save(self, profile_digest: str, rtmrs: Sequence[bytes], reportdata: bytes) -> None:
        if self._dirfd is None:
            raise StateError(f"cannot save state in {self.path}: the state directory is closed")
        try:
            _write_durable(self._dirfd, TD_FILE, encode_td_state(profile_digest, rtmrs, reportdata))
        except OSError as exc:
            raise StateError(f"cannot save state in {self.path}: {exc.strerror}") from None
