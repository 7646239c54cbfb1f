"""Quotes from a real mount, verified end to end by dcap-qvl (issue 4).

The daemon runs in its own process; this process is a client with shell commands and the
``tdxfs`` CLI: quote through ``tsm/report`` (``mkdir``/``dd``/``cat``/``rmdir`` or
``tdxfs quote get``), export the simulated root and collateral from the state directory
(``tdxfs pki export --state``, while mounted), verify with ``tdxfs quote verify``
(dcap-qvl, trusting that root). Quote offsets are from tdx-abi.md §4.
"""

import hashlib
import os
import sys

import pytest

from tests.mounting import sh, tdxfs_cmd

REPORTDATA = slice(568, 632)
RTMR3 = slice(520, 568)
NONCE = hashlib.sha512(b"relying party nonce").digest()


def export(state, out) -> dict:
    done = tdxfs_cmd("pki", "export", str(out), "--state", str(state))
    assert done.returncode == 0, done.stderr
    return {"collateral": str(out / "collateral.json"), "root": str(out / "root-ca.pem")}


def verify(quote_file, pki: dict, *extra: str):
    return tdxfs_cmd("quote", "verify", str(quote_file), "--collateral", pki["collateral"], "--root", pki["root"],
                     *extra)


def shell_quote(mnt, name: str, reportdata: bytes, out) -> bytes:
    inst = mnt.path(f"tsm/report/{name}")
    hexdata = reportdata.hex()
    done = sh(f"mkdir {inst} && printf '%s' {hexdata} | xxd -r -p | dd of={inst}/inblob bs=64 status=none"
              f" && cat {inst}/outblob > {out} && cat {inst}/generation && rmdir {inst}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"1\n"
    return out.read_bytes()


@pytest.fixture
def stateful(mount_factory, tmp_path):
    state = tmp_path / "state"
    return mount_factory("--state", str(state)), state


def test_shell_quote_verifies_with_the_exported_root(stateful, tmp_path):
    mnt, state = stateful
    quote = shell_quote(mnt, "entry0000000001", NONCE, tmp_path / "q.bin")
    assert quote[:2] == b"\x04\x00" and quote[REPORTDATA] == NONCE
    pki = export(state, tmp_path / "pki")
    done = verify(tmp_path / "q.bin", pki)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "UpToDate" in done.stdout
    assert NONCE.hex() in done.stdout


def test_quote_get_cli(stateful, tmp_path):
    mnt, state = stateful
    out = tmp_path / "q.bin"
    done = tdxfs_cmd("quote", "get", "--mount", mnt.mountpoint, "--reportdata", NONCE.hex(), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[REPORTDATA] == NONCE
    assert verify(out, export(state, tmp_path / "pki")).returncode == 0
    # --nonce: a fresh one, said on stderr; the quote goes to stdout when it is not a terminal
    done = sh(f"{sys.executable} -m tdxfs quote get --mount {mnt.mountpoint} --nonce > {tmp_path / 'q2.bin'}")
    assert done.returncode == 0, done.stderr
    said = next(line.split()[1] for line in done.stderr.decode().splitlines() if line.startswith("nonce "))
    assert (tmp_path / "q2.bin").read_bytes()[REPORTDATA].hex() == said
    # the CLI's private instance is gone again
    assert os.listdir(mnt.path("tsm/report")) == []


def test_quote_carries_an_extend_made_through_the_files(stateful, tmp_path):
    mnt, state = stateful
    event = hashlib.sha384(b"my application v1.2").digest()
    before = bytes.fromhex(open(mnt.path("rtmr3")).read())
    with open(mnt.path("rtmr3"), "wb") as f:
        f.write(event)
    expected = hashlib.sha384(before + event).digest()
    quote = shell_quote(mnt, "report_x", NONCE, tmp_path / "q.bin")
    assert quote[RTMR3] == expected
    done = verify(tmp_path / "q.bin", export(state, tmp_path / "pki"))
    assert done.returncode == 0 and expected.hex() in done.stdout, done.stdout + done.stderr


def test_another_platforms_root_is_not_trusted(stateful, mount_factory, tmp_path):
    mnt, _ = stateful
    shell_quote(mnt, "entry0000000002", NONCE, tmp_path / "q.bin")
    other_state = tmp_path / "other-state"
    mount_factory("--state", str(other_state), name="other")
    done = verify(tmp_path / "q.bin", export(other_state, tmp_path / "other-pki"))
    assert done.returncode == 1
    assert "REJECTED" in done.stdout + done.stderr


def test_quote_survives_a_remount_with_the_same_state(mount_factory, tmp_path):
    """The platform (PKI, attestation key) is kept: a quote from before the remount still
    verifies with the collateral exported after it."""
    state = tmp_path / "state"
    first = mount_factory("--state", str(state), name="first")
    shell_quote(first, "entry0000000003", NONCE, tmp_path / "q.bin")
    first.stop()
    mount_factory("--state", str(state), name="second")
    assert verify(tmp_path / "q.bin", export(state, tmp_path / "pki")).returncode == 0


def test_profile_picks_the_tcb_status(mount_factory, tmp_path):
    profile = tmp_path / "sw-hardening.toml"
    profile.write_text('[tee_tcb_info]\ntee_tcb_svn = "05010200000000000000000000000000"\n')
    state = tmp_path / "state"
    mnt = mount_factory("--state", str(state), "--profile", str(profile))
    shell_quote(mnt, "entry0000000004", NONCE, tmp_path / "q.bin")
    done = verify(tmp_path / "q.bin", export(state, tmp_path / "pki"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SWHardeningNeeded" in done.stdout


def test_debug_td_quote_is_rejected(mount_factory, tmp_path):
    profile = tmp_path / "debug.toml"
    profile.write_text("attributes = 0x10000001\n")  # SEPT_VE_DISABLE and DEBUG
    state = tmp_path / "state"
    mnt = mount_factory("--state", str(state), "--profile", str(profile))
    shell_quote(mnt, "entry0000000005", NONCE, tmp_path / "q.bin")
    done = verify(tmp_path / "q.bin", export(state, tmp_path / "pki"))
    assert done.returncode == 1
    assert "REJECTED" in done.stdout + done.stderr
