"""The core figures of issue 2, measured in one script on one machine.

  mount-ready time      wall time of `tdxfs mount MNT` (daemon mode: returns when ready)
  shell, one command    `sh -c 'echo HEX > rtmr3; cat tdreport > /dev/null'` per run
  shell, in a loop      the same two commands inside one shell loop, per iteration
  os calls              open/write/close rtmr3 + open/read/close tdreport from Python

Every figure is the median of several runs. The server always runs in its own process.
Usage: .venv/bin/python benchmarks/core_figures.py [--runs N] [--json FILE]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HEX48 = "ab" * 48


def tdxfs(*args):
    return subprocess.run([sys.executable, "-m", "tdxfs", *args], check=True, capture_output=True, text=True)


def mount_ready(runs: int, base: str):
    times = []
    for i in range(runs):
        mnt = os.path.join(base, f"ready{i}")
        os.mkdir(mnt)
        t0 = time.perf_counter()
        tdxfs("mount", mnt, "--log", os.path.join(base, "ready.log"))
        times.append(time.perf_counter() - t0)
        with open(os.path.join(mnt, "rtmr3")) as f:  # it really is ready
            assert len(f.read()) == 97
        tdxfs("umount", mnt)
    return times


def shell_one(mnt: str, runs: int):
    cmd = f"echo {HEX48} > {mnt}/rtmr3; cat {mnt}/tdreport > /dev/null"
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["sh", "-c", cmd], check=True)
        times.append(time.perf_counter() - t0)
    return times


def shell_loop(mnt: str, runs: int, iterations: int = 200):
    script = (f"i=0; while [ $i -lt {iterations} ]; do echo {HEX48} > {mnt}/rtmr3; "
              f"cat {mnt}/tdreport > /dev/null; i=$((i+1)); done")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["sh", "-c", script], check=True)
        times.append((time.perf_counter() - t0) / iterations)
    return times


def os_calls(mnt: str, runs: int, iterations: int = 500):
    data = HEX48.encode() + b"\n"
    rtmr3, tdreport = f"{mnt}/rtmr3", f"{mnt}/tdreport"
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(iterations):
            fd = os.open(rtmr3, os.O_WRONLY)
            os.write(fd, data)
            os.close(fd)
            fd = os.open(tdreport, os.O_RDONLY)
            report = os.read(fd, 131072)
            os.close(fd)
        times.append((time.perf_counter() - t0) / iterations)
        assert len(report) == 1024
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory(prefix="tdxfs-figures.") as base:
        results["mount_ready_s"] = mount_ready(args.runs, base)
        mnt = os.path.join(base, "mnt")
        os.mkdir(mnt)
        tdxfs("mount", mnt, "--log", os.path.join(base, "mnt.log"))
        try:
            results["shell_one_command_s"] = shell_one(mnt, args.runs * 5)
            results["shell_loop_per_iteration_s"] = shell_loop(mnt, args.runs)
            results["os_calls_per_iteration_s"] = os_calls(mnt, args.runs)
        finally:
            tdxfs("umount", mnt)

    from tdxfs.server.binding import NAME, libfuse_version

    summary = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                    "binding": NAME, "libfuse": libfuse_version()},
        "runs": args.runs,
        "median": {k: statistics.median(v) for k, v in results.items()},
        "all": results,
    }
    print(f"{'figure':<34} {'median':>12}   (runs)")
    for name, values in results.items():
        med = statistics.median(values)
        shown = f"{med * 1e3:9.2f} ms" if med >= 1e-3 else f"{med * 1e6:9.1f} us"
        print(f"{name:<34} {shown:>12}   ({len(values)})")
    print(f"machine: {summary['machine']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
