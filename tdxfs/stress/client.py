"""One stress client process: ``python -m tdxfs.stress.client --mount DIR --out FILE``.

It imports everything, prints ``ready``, waits for ``go UNTIL`` (epoch seconds) on stdin,
then runs operations picked at random (by weight) from ``ops.KINDS`` until UNTIL, and
writes its tally as JSON to FILE (through a temporary file and a rename, so a FILE that
exists is whole). ``--once`` runs each kind once, in order, with no handshake (the warm-up).

What it checks itself, per operation: a report's or quote's REPORTDATA is the nonce it
asked with (else a foreign nonce, counted per kind), a log read holds every extend this
client had acknowledged before the read (else the read failed). What it keeps for the
parent: every acknowledged (RTMR, digest), and a reservoir sample of its quotes with
their inblobs, for verification.
"""

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from typing import Dict, List, Optional, Set, Tuple

from tdxfs.model import abi
from tdxfs.stress import check
from tdxfs.stress.ops import KINDS, Extend, Kind, LogRead, Quote, Report, Result

MAX_ERRORS = 5


class Tally:
    def __init__(self, rng: random.Random, quote_sample: int):
        self.rng = rng
        self.quote_sample = quote_sample
        self.ops: Counter = Counter()
        self.failed: Counter = Counter()
        self.foreign: Counter = Counter()
        self.errors: List[str] = []
        self.extends: List[Tuple[int, bytes]] = []
        self._acked: Set[Tuple[int, bytes]] = set()  # as the log has them: (CC MR index, digest)
        self.quotes_made = 0
        self.quotes: List[Tuple[bytes, bytes]] = []

    def fail(self, kind: Kind, reason: str) -> None:
        self.failed[kind.name] += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{kind.name}: {reason}")

    def record(self, kind: Kind, result: Result) -> None:
        if isinstance(result, Report):
            if len(result.report) != abi.TDREPORT_SIZE:
                return self.fail(kind, f"a report of {len(result.report)} bytes")
            if check.report_nonce(result.report) != result.nonce:
                self.foreign[kind.name] += 1
        elif isinstance(result, Extend):
            self.extends.append((result.rtmr, result.digest))
            self._acked.add((result.rtmr + 1, result.digest))
        elif isinstance(result, Quote):
            if check.quote_nonce(result.quote) != result.inblob:
                self.foreign[kind.name] += 1
            self.quotes_made += 1
            self._sample((result.inblob, result.quote))
        elif isinstance(result, LogRead):
            missing = len(self._acked - {(e.mr, e.digest) for e in result.events})
            if missing:
                return self.fail(kind, f"the log read lacks {missing} extends this client had acknowledged")
        self.ops[kind.name] += 1

    def _sample(self, item: Tuple[bytes, bytes]) -> None:
        """Reservoir sampling: each quote made has the same chance of being kept."""
        if len(self.quotes) < self.quote_sample:
            self.quotes.append(item)
            return
        slot = self.rng.randrange(self.quotes_made)
        if slot < self.quote_sample:
            self.quotes[slot] = item

    def as_json(self, elapsed: float) -> Dict[str, object]:
        return {"pid": os.getpid(), "seconds": elapsed, "ops": dict(self.ops), "failed": dict(self.failed),
                "foreign": dict(self.foreign), "errors": self.errors,
                "extends": [[rtmr, digest.hex()] for rtmr, digest in self.extends],
                "quotes_made": self.quotes_made,
                "quotes": [[inblob.hex(), quote.hex()] for inblob, quote in self.quotes]}


def run_one(kind: Kind, mount: str, tally: Tally) -> None:
    try:
        result = kind.run(mount, tally.rng)
    except Exception as exc:  # any failure of the operation is counted, and the client goes on
        tally.fail(kind, f"{type(exc).__name__}: {exc}")
        return
    tally.record(kind, result)


def run(mount: str, until: Optional[float], tally: Tally) -> float:
    """Random kinds until ``until``; each kind once when ``until`` is None. Seconds spent."""
    start = time.monotonic()
    if until is None:
        for kind in KINDS:
            run_one(kind, mount, tally)
        return time.monotonic() - start
    weights = [kind.weight for kind in KINDS]
    while time.time() < until:
        run_one(tally.rng.choices(KINDS, weights)[0], mount, tally)
    return time.monotonic() - start


def write_json(path: str, data: Dict[str, object]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.rename(tmp, path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tdxfs.stress.client")
    p.add_argument("--mount", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quote-sample", type=int, default=8)
    p.add_argument("--once", action="store_true")
    args = p.parse_args(argv)
    tally = Tally(random.Random(os.urandom(16)), args.quote_sample)
    until = None
    if not args.once:
        print("ready", flush=True)
        line = sys.stdin.readline().split()
        if line[:1] != ["go"]:
            return 2  # the parent gave up before the start
        until = float(line[1])
    elapsed = run(args.mount, until, tally)
    write_json(args.out, tally.as_json(elapsed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
