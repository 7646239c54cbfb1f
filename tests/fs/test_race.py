"""The race study in small form (issue 3, section 3).

Four client processes (forked from this test process, which is itself only a client: the
server runs in its own process) start together on a barrier and each asks for ~150
reports for nonces of its own. A report "mixes clients" when its REPORTDATA is not the
nonce its asker sent.

- ioctl on a kept fd and the one-fd transaction on ``tdreport`` keep the nonce with the
  request or the fd: zero mixed reports, asserted.
- the shared ``reportdata`` + ``tdreport`` pair (the shell pattern) lets another client's
  write land between a client's write and its read: mixing is expected but not guaranteed
  on any one run, so the count is printed and only its consistency is asserted.

Every nonce is unique (client number and sequence number hashed), so a wrong REPORTDATA
can be traced to the client that wrote it.
"""

import hashlib
import os
import time

import pytest

from tdxfs.client.ioctl import TdxGuest
from tests.fsclient import run_clients
from tests.mounting import Mounted

CLIENTS = 4
REPORTS = 150
REPORTDATA = slice(128, 192)  # tdx-abi.md: REPORTDATA at 128, 64 bytes
TDINFO = slice(512, 1024)


def nonce(client: int, i: int) -> bytes:
    return hashlib.sha512(b"tdxfs race client %d report %d" % (client, i)).digest()


# -- the three ways to ask, each opened once per client process --------------------------------


def ioctl_kept(mount: str):
    dev = TdxGuest(os.path.join(mount, "tdx_guest"))
    return dev.get_report0, dev.close


def transaction(mount: str):
    fd = os.open(os.path.join(mount, "tdreport"), os.O_RDWR)

    def run(n: bytes) -> bytes:
        os.pwrite(fd, n, 0)
        return os.pread(fd, 1024, 0)

    return run, lambda: os.close(fd)


def shared_pair(mount: str):
    def run(n: bytes) -> bytes:
        fd = os.open(os.path.join(mount, "reportdata"), os.O_WRONLY)
        try:
            os.write(fd, n)
        finally:
            os.close(fd)
        fd = os.open(os.path.join(mount, "tdreport"), os.O_RDONLY)
        try:
            return os.pread(fd, 131072, 0)
        finally:
            os.close(fd)

    return run, lambda: None


METHODS = {"ioctl": ioctl_kept, "transaction": transaction, "shared-pair": shared_pair}


def client(method: str, mount: str, me: int, barrier, results) -> None:
    """One client process: REPORTS reports, the REPORTDATA of each sent back."""
    try:
        run, close = METHODS[method](mount)
        barrier.wait(timeout=60)
        got = []
        for i in range(REPORTS):
            rep = run(nonce(me, i))
            if len(rep) != 1024 or rep[80:128] != hashlib.sha384(rep[TDINFO]).digest():
                raise AssertionError(f"client {me}: report {i} is not a TDREPORT ({len(rep)} bytes)")
            got.append(rep[REPORTDATA])
        close()
        results.put((me, got, None))
    except BaseException as exc:  # report it to the parent instead of dying silently
        results.put((me, None, repr(exc)))


def race(m: Mounted, method: str) -> dict:
    t0 = time.monotonic()
    outcomes = run_clients(client, lambda me: (method, m.mountpoint, me), CLIENTS)
    seconds = time.monotonic() - t0
    errors = [err for _, _, err in outcomes if err]
    assert not errors, errors
    asked = {me: [nonce(me, i) for i in range(REPORTS)] for me in range(CLIENTS)}
    owner = {n: me for me, ns in asked.items() for n in ns}
    own = others = unknown = 0
    for me, got, _ in outcomes:
        for i, rd in enumerate(got):
            if rd == asked[me][i]:
                own += 1
            elif owner.get(rd, me) != me:
                others += 1  # another client's nonce: the clients mixed
            else:
                unknown += 1  # neither: an older nonce of my own, or not a nonce at all
    total = CLIENTS * REPORTS
    print(f"\n{method}: {CLIENTS} clients x {REPORTS} reports in {seconds:.2f} s: "
          f"{others} carry another client's nonce ({100 * others / total:.1f}%), {unknown} neither")
    return {"own": own, "others": others, "unknown": unknown, "total": total}


@pytest.mark.parametrize("method", ["ioctl", "transaction"])
def test_race_free_methods_never_mix(mnt, method):
    r = race(mnt, method)
    assert r["others"] == 0 and r["unknown"] == 0, r
    assert r["own"] == r["total"] == CLIENTS * REPORTS
    assert mnt.rejections() == []


def test_shared_pair_mixing_is_measured(mnt):
    r = race(mnt, "shared-pair")
    assert r["own"] + r["others"] == r["total"] == CLIENTS * REPORTS
    # A client's read returns what some client wrote last: its own latest nonce or another
    # client's; never one of its own older nonces (the server applies writes in order) and
    # never anything else. Mixing itself is expected but not guaranteed on one run: printed,
    # not asserted.
    assert r["unknown"] == 0, r
    assert mnt.rejections() == []
