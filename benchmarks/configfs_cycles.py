"""Drift over many configfs-tsm cycles: the daemon's RSS and open descriptors while a
client makes, uses and removes report instances (issue 8, "RSS and fd drift").

One cycle is what a well-behaved client does per quote: mkdir an instance, write 64
bytes to its inblob (committed at close), read its outblob (the quote), rmdir it. The
server runs in its own process (``python -m tdxfs mount -f``); its VmRSS and the number of
entries in /proc/PID/fd are sampled after a warm-up and then every tenth of the run.

Usage: .venv/bin/python benchmarks/configfs_cycles.py [--cycles 100000] [--json FILE]
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from configfs_instances import REPO, REPORT, Mount, machine, status_kib  # noqa: E402

WARM_UP = 1000


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cycle(m: Mount, name: str) -> None:
    path = m.path(REPORT, name)
    os.mkdir(path)
    fd = os.open(os.path.join(path, "inblob"), os.O_WRONLY)
    os.write(fd, os.urandom(64))
    os.close(fd)
    fd = os.open(os.path.join(path, "outblob"), os.O_RDONLY)
    quote = os.read(fd, 131072)
    os.close(fd)
    if len(quote) < 1024:
        raise RuntimeError(f"short quote ({len(quote)} bytes)")
    os.rmdir(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    samples = []
    with tempfile.TemporaryDirectory(prefix="tdxfs-cycles-") as base:
        with Mount(os.path.join(base, "mnt"), os.path.join(base, "daemon.log")) as m:
            pid = m.proc.pid
            for i in range(WARM_UP):
                cycle(m, f"warm{i}")
            t0 = time.perf_counter()
            step = max(1, args.cycles // 10)
            for i in range(args.cycles):
                if i % step == 0:
                    samples.append((i, status_kib(pid, "VmRSS"), fd_count(pid)))
                cycle(m, f"entry{i:010d}")
            seconds = time.perf_counter() - t0
            samples.append((args.cycles, status_kib(pid, "VmRSS"), fd_count(pid)))
            left = os.listdir(m.path(REPORT))
    first, last = samples[0], samples[-1]
    results = {
        "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]), "machine": machine(),
        "cycles": args.cycles, "warm_up": WARM_UP, "seconds": seconds, "cycles_per_second": args.cycles / seconds,
        "samples": [{"cycle": c, "rss_kib": r, "fds": f} for c, r, f in samples],
        "rss_drift_kib": last[1] - first[1], "fd_drift": last[2] - first[2], "instances_left": len(left),
    }
    print(f"configfs cycles ({', '.join(f'{k} {v}' for k, v in results['machine'].items())})")
    print(f"  {args.cycles:,} cycles (mkdir, inblob, outblob, rmdir) in {seconds:.1f} s "
          f"({results['cycles_per_second']:,.0f}/s) after {WARM_UP} warm-up cycles")
    print("  cycle        VmRSS KiB   fds")
    for c, r, f in samples:
        print(f"  {c:>9,}  {r:>11,}  {f:>4}")
    print(f"  drift: RSS {results['rss_drift_kib']:+,} KiB, fds {results['fd_drift']:+}; instances left {len(left)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
