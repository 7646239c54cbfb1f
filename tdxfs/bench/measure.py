"""The measurements: interleaved latency rounds, FUSE request and syscall counts, scaling
with several client processes (which is also the race study).

Every client runs in a process other than the daemon's: latency rounds in this process
(the daemon was started by ``tdxfs mount`` in its own), scaling clients in forked children.
"""

import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tdxfs.bench.methods import METHODS

Progress = Callable[[str, float], None]


def _nonces(count: int, tag: int) -> List[bytes]:
    """Nonces unique to this client (the tag is in every one), made without syscalls."""
    rng = random.Random(tag)
    prefix = tag.to_bytes(8, "little")
    return [prefix + rng.randbytes(56) for _ in range(count)]


def latency_rounds(mount: str, names: Sequence[str], rounds: int, batch: int,
                   progress: Progress) -> Tuple[Dict[str, List[int]], Dict[str, int]]:
    """Per-operation latencies in ns. Methods take turns batch by batch, in a rotating
    order, so machine drift falls on all of them alike."""
    ops = {name: METHODS[name].open(mount) for name in names}
    samples: Dict[str, List[int]] = {name: [] for name in names}
    wrong: Dict[str, int] = {name: 0 for name in names}
    nonces = _nonces(1024, os.getpid())
    clock = time.perf_counter_ns
    try:
        for r in range(rounds):
            order = list(names[r % len(names):]) + list(names[: r % len(names)])
            for name in order:
                run, check = ops[name].run, METHODS[name].checks_nonce
                at = METHODS[name].reportdata_at
                out = samples[name]
                for i in range(batch):
                    nonce = nonces[i & 1023]
                    t0 = clock()
                    report = run(nonce)
                    out.append(clock() - t0)
                    if check and report[at] != nonce:
                        wrong[name] += 1
            progress(f"latency round {r + 1}/{rounds}", (r + 1) / rounds)
    finally:
        for op in ops.values():
            op.close()
    return samples, wrong


def read_stats(mount: str) -> Dict[str, object]:
    with open(os.path.join(mount, ".stats"), "rb") as f:
        return json.loads(f.read())


def fuse_requests(mount: str, name: str, count: int) -> Dict[str, float]:
    """FUSE requests per operation, by operation, from the daemon's counters (the reads of
    .stats itself are left out). Deterministic: no timing involved."""
    op = METHODS[name].open(mount)
    nonces = _nonces(64, os.getpid())
    for nonce in nonces[:8]:  # warm: the first FLUSH/GETXATTR, cold lookups
        op.run(nonce)
    # .stats on a kept fd (pread at 0 is a fresh snapshot): reading it walks no path, so
    # it adds no LOOKUP/GETATTR of the root. A run that crosses the end of the kernel's
    # 1 s lookup/attribute cache gets one extra LOOKUP/GETATTR per cached path: the
    # lowest of three runs is the steady-state figure.
    stats_fd = os.open(os.path.join(mount, ".stats"), os.O_RDONLY)
    best: Optional[Dict[str, float]] = None
    try:
        for _ in range(3):
            before = json.loads(os.pread(stats_fd, 1 << 20, 0))["requests"]["by_op_and_kind"]
            for i in range(count):
                op.run(nonces[i & 63])
            after = json.loads(os.pread(stats_fd, 1 << 20, 0))["requests"]["by_op_and_kind"]
            per_op: Dict[str, float] = defaultdict(float)
            for key, n in after.items():
                req, kind = key.split(" ", 1)
                if kind != ".stats":
                    delta = n - before.get(key, 0)
                    if delta:
                        per_op[req] += delta / count
            if best is None or sum(per_op.values()) < sum(best.values()):
                best = per_op
    finally:
        os.close(stats_fd)
        op.close()
    total = sum(best.values())
    return {"total": round(total, 3), **{k: round(v, 3) for k, v in sorted(best.items())}}


_STRACE_TOTAL = re.compile(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)\s+(?:\d+\s+)?total\s*$", re.M)


def _strace_calls(mount: str, name: str, count: int) -> int:
    with tempfile.NamedTemporaryFile(prefix="tdxfs-strace.") as out:
        subprocess.run(["strace", "-f", "-c", "-o", out.name, sys.executable, "-m", "tdxfs.bench.worker",
                        name, mount, str(count)], check=True, capture_output=True, timeout=120)
        text = open(out.name).read()
    match = _STRACE_TOTAL.search(text)
    if not match:
        raise RuntimeError(f"cannot read strace -c output:\n{text}")
    return int(match.group(1))


def syscalls(mount: str, name: str, count: int) -> Optional[float]:
    """Syscalls per operation counted by ``strace -c``: (calls(N) - calls(0)) / N."""
    if shutil.which("strace") is None:
        return None
    return round((_strace_calls(mount, name, count) - _strace_calls(mount, name, 0)) / count, 2)


def _client(name: str, mount: str, start_at: float, seconds: float, results) -> None:
    op = METHODS[name].open(mount)
    check, at = METHODS[name].checks_nonce, METHODS[name].reportdata_at
    nonces = _nonces(1024, os.getpid())
    done = wrong = 0
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    while time.time() < end:
        for i in range(32):
            nonce = nonces[(done + i) & 1023]
            report = op.run(nonce)
            if check and report[at] != nonce:
                wrong += 1
        done += 32
    op.close()
    results.put((done, wrong))


def concurrent(mount: str, name: str, clients: int, seconds: float) -> Dict[str, float]:
    """``clients`` processes run the method at once for ``seconds``; aggregate ops/s, and
    how many reports carried a nonce that was not the asking client's."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.time() + 0.2  # every client set up before the clock starts
    procs = [ctx.Process(target=_client, args=(name, mount, start_at, seconds, results)) for _ in range(clients)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    ops = sum(o[0] for o in outcomes)
    return {"clients": clients, "ops": ops, "ops_per_s": ops / seconds, "wrong_nonce": sum(o[1] for o in outcomes)}
