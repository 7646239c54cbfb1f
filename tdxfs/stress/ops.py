"""The operations a stress client mixes, one row each.

A row's ``run(mount, rng)`` performs one operation on the mount and returns what the
client must check or remember: a report with the nonce it asked for, an acknowledged
extend (RTMR, digest), a quote with its inblob, or the events of a log read. A failure
is any exception. Nonces and digests come from ``os.urandom``, so every digest a run
extends is unique and can be looked for in the log.

Adding an operation (a later interface) is adding a row to ``KINDS``.
"""

import os
import random
import subprocess
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from tdxfs.client import configfs, files
from tdxfs.client import eventlog as eventlog_client
from tdxfs.client.files import read_to_eof
from tdxfs.client.ioctl import TdxGuest
from tdxfs.files.eventlog import Record
from tdxfs.model import abi
from tdxfs.model.eventlog import EV_EVENT_TAG, EV_IPL, Event, decode_ccel_data, decode_text

DIGEST = abi.MEASUREMENT_SIZE
NONCE = abi.REPORTDATA_SIZE
IOCTL_RTMRS = (2, 3)  # the downstream driver refuses EXTEND_RTMR of RTMR0 and RTMR1 (EPERM)
SHELL_TIMEOUT = 60.0
# The shell pattern, as a script runs it: the shared reportdata, then tdreport.
SHELL_PATTERN = 'printf %s "$2" > "$1/reportdata" && cat "$1/tdreport"'


@dataclass(frozen=True)
class Report:
    nonce: bytes
    report: bytes


@dataclass(frozen=True)
class Extend:
    rtmr: int
    digest: bytes


@dataclass(frozen=True)
class Quote:
    inblob: bytes
    quote: bytes


@dataclass(frozen=True)
class LogRead:
    events: List[Event]


Result = Union[Report, Extend, Quote, LogRead]


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    run: Callable[[str, random.Random], Result]
    race_free: Optional[bool] = None  # reports and quotes: whether a foreign nonce is a failure
    weight: int = 2


def _write_once(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(f"{path}: short write ({written} of {len(data)} bytes)")


# -- reports ----------------------------------------------------------------------------------


def report_ioctl(mount: str, rng: random.Random) -> Report:
    nonce = os.urandom(NONCE)
    with TdxGuest(os.path.join(mount, "tdx_guest")) as dev:
        return Report(nonce, dev.get_report0(nonce))


def report_transaction(mount: str, rng: random.Random) -> Report:
    nonce = os.urandom(NONCE)
    return Report(nonce, files.transaction(mount, nonce))


def report_shell(mount: str, rng: random.Random) -> Report:
    nonce = os.urandom(NONCE)
    done = subprocess.run(["sh", "-c", SHELL_PATTERN, "sh", mount, nonce.hex()], capture_output=True,
                          timeout=SHELL_TIMEOUT)
    if done.returncode:
        raise OSError(f"shell pattern exited {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
    return Report(nonce, done.stdout)


# -- extends: every front end, each with a fresh random digest --------------------------------


def extend_rtmr_file(mount: str, rng: random.Random) -> Extend:
    """Root ``rtmrN``: 48 raw bytes or 96 hex chars (with a newline, as echo writes it)."""
    rtmr, digest = rng.randrange(abi.RTMR_COUNT), os.urandom(DIGEST)
    data = digest if rng.random() < 0.5 else digest.hex().encode() + b"\n"
    _write_once(os.path.join(mount, f"rtmr{rtmr}"), data)
    return Extend(rtmr, digest)


def extend_tsm_mr(mount: str, rng: random.Random) -> Extend:
    """tsm-mr ``measurements/rtmrN:sha384``: exactly 48 raw bytes at offset 0."""
    rtmr, digest = rng.randrange(abi.RTMR_COUNT), os.urandom(DIGEST)
    _write_once(os.path.join(mount, "measurements", f"rtmr{rtmr}:sha384"), digest)
    return Extend(rtmr, digest)


def extend_ioctl(mount: str, rng: random.Random) -> Extend:
    rtmr, digest = rng.choice(IOCTL_RTMRS), os.urandom(DIGEST)
    with TdxGuest(os.path.join(mount, "tdx_guest")) as dev:
        dev.extend_rtmr(rtmr, digest)
    return Extend(rtmr, digest)


def extend_eventlog(mount: str, rng: random.Random) -> Extend:
    """One record written to ``eventlog``, sometimes with event data."""
    rtmr, digest = rng.randrange(abi.RTMR_COUNT), os.urandom(DIGEST)
    data = os.urandom(rng.randrange(1, 64)) if rng.random() < 0.5 else b""
    eventlog_client.write_record(mount, Record(rtmr, rng.choice((EV_IPL, EV_EVENT_TAG)), digest, data))
    return Extend(rtmr, digest)


# -- quotes and log reads ---------------------------------------------------------------------


def quote_configfs(mount: str, rng: random.Random) -> Quote:
    """mkdir an instance, write inblob, read outblob (generation checked), rmdir."""
    inblob = os.urandom(NONCE)
    name = f"stress-{os.getpid()}-{os.urandom(4).hex()}"
    return Quote(inblob, configfs.get_quote(os.path.join(mount, "tsm", "report"), inblob, name))


def read_eventlog(mount: str, rng: random.Random) -> LogRead:
    return LogRead(decode_text(read_to_eof(os.path.join(mount, "eventlog"))))


def read_ccel(mount: str, rng: random.Random) -> LogRead:
    return LogRead(decode_ccel_data(read_to_eof(os.path.join(mount, "acpi", "data", "CCEL"))))


KINDS: Tuple[Kind, ...] = (
    Kind("report-ioctl", "report, ioctl GET_REPORT0", report_ioctl, race_free=True),
    Kind("report-transaction", "report, one-fd transaction", report_transaction, race_free=True),
    Kind("report-shell", "report, shell pattern (racy)", report_shell, race_free=False),
    Kind("extend-rtmr", "extend, rtmrN file", extend_rtmr_file),
    Kind("extend-tsm-mr", "extend, measurements/rtmrN:sha384", extend_tsm_mr),
    Kind("extend-ioctl", "extend, ioctl EXTEND_RTMR", extend_ioctl),
    Kind("extend-eventlog", "extend, eventlog record", extend_eventlog),
    Kind("quote-configfs", "quote, configfs instance", quote_configfs, race_free=True),
    # whole-log reads grow with the log (O(events) for the daemon and the decoder): rarer
    Kind("read-eventlog", "read, eventlog (text)", read_eventlog, weight=1),
    Kind("read-ccel", "read, acpi/data/CCEL", read_ccel, weight=1),
)
BY_NAME: Dict[str, Kind] = {kind.name: kind for kind in KINDS}
RACE_FREE: Sequence[str] = tuple(k.name for k in KINDS if k.race_free)
RACY: Sequence[str] = tuple(k.name for k in KINDS if k.race_free is False)
