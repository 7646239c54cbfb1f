"""Attestation software nobody here wrote, installed unmodified from PyPI (the ``clients``
extra), run under ``tdxfs run`` and checked against the model's own values.

Each test runs one shell script inside a fresh ``tdxfs run`` namespace: the client's
commands, plus ``cat`` of the mount's root files (the model's values) for comparison.

- pytdxmeasure 0.0.9 (Intel's TDX measurement tool): ``tdx_tdreport`` (ioctl GET_REPORT0 on
  /dev/tdx_guest), ``tdx_eventlogs`` and ``tdx_verify_rtmr`` (ACPI CCEL table and data).
- cctrusted-vm 0.5.0 (the CC Trusted API SDK): measurements (ioctl), the quote
  (configfs-tsm), the event log (CCEL) and its replay.
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)  # where the clients' console scripts are installed
TIMEOUT = 180


def tdxfs_run(tmp_path, script: str) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "OUT": str(out)}
    done = subprocess.run(
        [sys.executable, "-m", "tdxfs", "run", "--state", str(tmp_path / "state"),
         "--log", str(tmp_path / "daemon.log"), "--", "sh", "-ec", script],
        env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


# The model's registers, as the mount's root files show them (96 hex chars each).
MODEL = 'for r in mrtd rtmr0 rtmr1 rtmr2 rtmr3; do printf "%s " $r; cat "$TDXFS_MOUNT/$r"; done > "$OUT/model.txt"\n'
# Extends through every interface, so RTMR3 and RTMR2 carry runtime events too.
EXTENDS = r'''
head -c 48 /dev/urandom > "$OUT/d1"; dd if="$OUT/d1" of="/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384" bs=48 count=1 status=none
sha384sum < /etc/os-release | cut -d' ' -f1 > "$TDXFS_MOUNT/rtmr3"
python3 -c 'import fcntl, os; fd = os.open("/dev/tdx_guest", os.O_RDWR); fcntl.ioctl(fd, 0x40315403, bytes(range(48)) + bytes([2])); os.close(fd)'
tdxfs extend --rtmr 3 --text "application started"
'''


def model_registers(tmp_path):
    regs = {}
    for line in (tmp_path / "out" / "model.txt").read_text().splitlines():
        name, value = line.split()
        regs[name] = bytes.fromhex(value)
    return regs


def hexdump_bytes(text: str, length: int) -> bytes:
    """The first ``length`` bytes of pytdxmeasure's hex dump ("OFFSET  XX XX ... ascii")."""
    data = bytearray()
    for line in text.splitlines():
        m = re.match(r"^([0-9A-F]{8})  ((?:[0-9A-F]{2} )+)", line)
        if not m:
            continue
        if int(m.group(1), 16) != len(data):
            if data:
                break
            continue
        data += bytes.fromhex(m.group(2))
        if len(data) >= length:
            return bytes(data[:length])
    raise AssertionError(f"no {length}-byte hex dump in:\n{text}")


def test_pytdxmeasure_tdx_tdreport_reads_the_models_report(tmp_path):
    tdxfs_run(tmp_path, MODEL + 'tdx_tdreport > "$OUT/tdreport.txt" 2>&1\n')
    text = (tmp_path / "out" / "tdreport.txt").read_text()
    report = hexdump_bytes(text, 1024)
    regs = model_registers(tmp_path)
    assert report[0] == 0x81
    assert report[528:576] == regs["mrtd"]
    for i in range(4):
        assert report[720 + 48 * i:768 + 48 * i] == regs[f"rtmr{i}"], i


def test_pytdxmeasure_tdx_eventlogs_replays_to_the_models_rtmrs(tmp_path):
    tdxfs_run(tmp_path, EXTENDS + MODEL + 'tdx_eventlogs > "$OUT/eventlogs.txt" 2>&1\n')
    text = (tmp_path / "out" / "eventlogs.txt").read_text()
    regs = model_registers(tmp_path)
    assert "Spec ID Event03" in text or "53 70 65 63 20 49 44 20" in text
    replayed = text.split("=> Replay Rolling Hash - RTMR", 1)[1]
    for i in range(4):
        section = replayed.split(f"==== RTMR[{i}] ====", 1)[1]
        assert hexdump_bytes(section, 48) == regs[f"rtmr{i}"], i


def test_pytdxmeasure_tdx_verify_rtmr_says_every_rtmr_matches(tmp_path):
    done = tdxfs_run(tmp_path, EXTENDS + 'tdx_verify_rtmr > "$OUT/verify.txt" 2>&1\n')
    text = (tmp_path / "out" / "verify.txt").read_text()
    for i in range(4):
        assert f"RTMR[{i}] passed the verification." in text, text + done.stderr
    assert "did not pass" not in text


CCTRUSTED = r'''
import base64, json, os, sys
from cctrusted_vm import CCTrustedVmSdk
from cctrusted_base.api import CCTrustedApi

sdk = CCTrustedVmSdk.inst()
nonce, data = base64.b64encode(b"tdxfs nonce"), base64.b64encode(b"tdxfs user data")
quote = sdk.get_cc_report(nonce, data)
events = sdk.get_cc_eventlog()
replayed = CCTrustedApi.replay_cc_eventlog(events)
out = os.environ["OUT"]
open(os.path.join(out, "quote.bin"), "wb").write(bytes(quote.data))
json.dump({
    "count": sdk.get_measurement_count(),
    "measurements": [sdk.get_cc_measurement([i, 12]).digest(12).hash.hex() for i in range(4)],
    "events": len(events),
    "replayed": {str(k): v[12].hex() for k, v in replayed.items()},
}, open(os.path.join(out, "cctrusted.json"), "w"))
'''


def test_cctrusted_vm_sdk_measurements_quote_and_event_log(tmp_path):
    (tmp_path / "cctrusted.py").write_text(CCTRUSTED)
    tdxfs_run(tmp_path, EXTENDS + MODEL + f'python3 "{tmp_path}/cctrusted.py"\n'
              f'tdxfs pki export "$OUT/pki" --state "{tmp_path}/state" > /dev/null\n')
    out = tmp_path / "out"
    got = json.loads((out / "cctrusted.json").read_text())
    regs = model_registers(tmp_path)
    assert got["count"] == 4
    assert [bytes.fromhex(m) for m in got["measurements"]] == [regs[f"rtmr{i}"] for i in range(4)]
    assert got["events"] > 4
    assert {int(k): bytes.fromhex(v) for k, v in got["replayed"].items()} == {i: regs[f"rtmr{i}"] for i in range(4)}
    quote = (out / "quote.bin").read_bytes()
    assert quote[568:632] == hashlib.sha512(b"tdxfs nonce" + b"tdxfs user data").digest()
    verify = subprocess.run([sys.executable, "-m", "tdxfs", "quote", "verify", str(out / "quote.bin"),
                             "--collateral", str(out / "pki" / "collateral.json"),
                             "--root", str(out / "pki" / "root-ca.pem")], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
