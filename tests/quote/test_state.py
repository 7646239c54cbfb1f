"""The state directory keeps the PKI and the attestation key; build_td wires the QE."""

import errno
import json
import os
import stat

import pytest

from tdxfs.errors import ConfigError
from tdxfs.model import collateral as coll
from tdxfs.model.machine import build_td
from tdxfs.model.profile import default_profile, profile_from_mapping
from tdxfs.model.state import PKI_FILE, SECRET_FILE, TD_FILE, StateDir, read_pki
from tests.quote.conftest import NONCE, old_pki_blobs, rejection, verify


def open_td(path, profile=None, reset=False):
    td, close = build_td(profile or default_profile(), str(path), reset=reset)
    close()  # the TD stays usable in memory; only the lock is released
    return td


def test_pki_is_kept_0600_and_reused_across_restarts(tmp_path):
    path = tmp_path / "state"
    first = open_td(path)
    assert stat.S_IMODE(os.stat(path / PKI_FILE).st_mode) == 0o600
    raw = (path / PKI_FILE).read_bytes()
    second = open_td(path)
    assert (path / PKI_FILE).read_bytes() == raw  # not rewritten
    assert second.qe.pki.root_der() == first.qe.pki.root_der()
    assert second.qe.pki.to_blobs() == first.qe.pki.to_blobs()
    # the attestation key, QE report and chain are the same: quotes differ only in body and signature
    a, b = first.quote(NONCE), second.quote(NONCE)
    assert a[700:] == b[700:]


def test_collateral_exported_before_a_restart_verifies_quotes_after_it(tmp_path):
    """What a relying party does: export once (without the daemon's lock), verify later."""
    path = tmp_path / "state"
    open_td(path)
    exported = read_pki(str(path))
    collateral = coll.issue(exported)
    td, close = build_td(default_profile(), str(path))
    try:
        assert read_pki(str(path)).root_der() == exported.root_der()  # readable while locked
        assert verify(td.quote(NONCE), exported, collateral=collateral).status == "UpToDate"
    finally:
        close()


def test_reset_regenerates_the_pki(tmp_path):
    path = tmp_path / "state"
    old = open_td(path)
    new = open_td(path, reset=True)
    assert new.qe.pki.root_der() != old.qe.pki.root_der()
    rejection(new.quote(NONCE), old.qe.pki)  # the old root no longer vouches for this platform
    assert verify(new.quote(NONCE), new.qe.pki).status == "UpToDate"


def _checksum_broken(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["pki"]["ppid"] = "00" * 16
    return json.dumps(doc).encode()


def _resealed(change):
    def make(raw: bytes) -> bytes:
        from tdxfs.model import state

        doc = json.loads(raw)
        change(doc["pki"])
        body = {"format": doc["format"], "pki": doc["pki"]}
        return json.dumps({**body, "checksum": state._checksum(body)}).encode()
    return make


CORRUPTIONS = {
    "empty": lambda raw: b"",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "garbage": lambda raw: b"\x00\xffnot json",
    "checksum-mismatch": _checksum_broken,
    "key-missing": _resealed(lambda pki: pki.pop("attestation.key")),
    "cert-not-pem": _resealed(lambda pki: pki.update({"pck.crt": "not a certificate"})),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_pki_refuses_start_and_is_left_alone(tmp_path, kind):
    path = tmp_path / "state"
    open_td(path)
    bad = CORRUPTIONS[kind]((path / PKI_FILE).read_bytes())
    (path / PKI_FILE).write_bytes(bad)
    with pytest.raises(ConfigError) as exc:
        open_td(path)
    assert PKI_FILE in str(exc.value) and "--reset" in str(exc.value)
    assert exc.value.errno == errno.EINVAL
    assert (path / PKI_FILE).read_bytes() == bad
    with pytest.raises(ConfigError):
        read_pki(str(path))


def test_pki_without_a_platform_secret_is_refused(tmp_path):
    path = tmp_path / "state"
    open_td(path)
    os.unlink(path / SECRET_FILE)
    os.unlink(path / TD_FILE)
    with pytest.raises(ConfigError) as exc:
        open_td(path)
    assert SECRET_FILE in str(exc.value)
    assert not (path / SECRET_FILE).exists()


def test_a_directory_from_before_quotes_gets_a_pki(tmp_path):
    """A state directory made before the PKI existed (secret + td-state only) keeps its TD
    and gains a PKI; nothing else is touched."""
    path = tmp_path / "state"
    first = open_td(path)
    first_extend = first.rtmrs()
    os.unlink(path / PKI_FILE)
    secret = (path / SECRET_FILE).read_bytes()
    td = open_td(path)
    assert (path / SECRET_FILE).read_bytes() == secret
    assert td.rtmrs() == first_extend
    assert (path / PKI_FILE).exists()
    assert verify(td.quote(NONCE), td.qe.pki).status == "UpToDate"


def test_profile_tcb_goes_into_the_pck_certificate(tmp_path):
    path = tmp_path / "state"
    profile = profile_from_mapping({"pcesvn": 12})
    td = open_td(path, profile)
    assert td.qe.pki.tcb.pcesvn == 12
    assert verify(td.quote(NONCE), td.qe.pki).status == "OutOfDate"
    # the same directory with another PCE SVN is another profile: refused, PKI untouched
    raw = (path / PKI_FILE).read_bytes()
    with pytest.raises(ConfigError):
        open_td(path, default_profile())
    assert (path / PKI_FILE).read_bytes() == raw


def test_stale_pck_certificate_is_reissued_for_the_profiles_tcb(tmp_path):
    """A PKI whose PCK certificate names another TCB (copied in from elsewhere) gets a
    PCK certificate for this profile's, with the same keys."""
    from tdxfs.model import state
    from tdxfs.model.pki import PckTcb

    path = tmp_path / "state"
    td = open_td(path)
    pki = td.qe.pki
    stale = pki.reissue_pck(PckTcb(pki.tcb.cpusvn, 7))
    (path / PKI_FILE).write_bytes(state.encode_pki(stale))
    again = open_td(path)
    assert again.qe.pki.tcb == pki.tcb
    assert again.qe.pki.root_der() == pki.root_der()
    assert verify(again.quote(NONCE), again.qe.pki).status == "UpToDate"


def test_build_td_in_memory_has_a_qe_and_refuses_reset():
    td, close = build_td(default_profile())
    close()
    assert verify(td.quote(NONCE), td.qe.pki).status == "UpToDate"
    with pytest.raises(ConfigError):
        build_td(default_profile(), None, reset=True)


def test_build_td_holds_the_state_lock_until_closed(tmp_path):
    path = tmp_path / "state"
    td, close = build_td(default_profile(), str(path))
    with pytest.raises(ConfigError):
        StateDir(str(path))
    close()
    StateDir(str(path)).close()


def test_reset_removes_the_pki_file_too(tmp_path):
    path = tmp_path / "state"
    open_td(path)
    StateDir(str(path), reset=True).close()
    assert not (path / PKI_FILE).exists()


def test_a_pki_from_the_previous_version_loads_with_intels_names(tmp_path, monkeypatch):
    """platform-pki.json written before the names changed: the mount starts, its quotes
    carry the re-issued chain (Intel's CNs, tdxfs's marks), and the root exported from the
    directory beside the daemon is the one they verify against."""
    from cryptography.x509.oid import NameOID

    from tdxfs.model import state
    from tdxfs.model.pki import is_simulated

    path = tmp_path / "state"
    open_td(path)
    body = {"format": state.PKI_FORMAT, "pki": old_pki_blobs(monkeypatch, state.pck_tcb(default_profile()))}
    (path / PKI_FILE).write_bytes(json.dumps({**body, "checksum": state._checksum(body)}).encode())

    td, close = build_td(default_profile(), str(path))
    try:
        pki = td.qe.pki
        cn = pki.root_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == "Intel SGX Root CA" and is_simulated(pki.root_cert) and is_simulated(pki.pck_cert)
        exported = read_pki(str(path))
        assert exported.root_der() == pki.root_der()
        assert not exported.renamed  # the file was saved re-issued, once
        quote = td.quote(NONCE)
        assert verify(quote, exported, collateral=coll.issue(exported)).status == "UpToDate"
        assert pki.pck_chain_pem().encode() in quote  # the re-issued chain, PEM
    finally:
        close()
