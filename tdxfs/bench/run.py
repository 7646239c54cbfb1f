"""``tdxfs bench``: run every method, print the summary, write JSON and the plots.

Phases: interleaved latency rounds (single client), FUSE requests per operation (from the
daemon's /.stats), syscalls per operation (strace -c in the full run; the methods' own
counts with --quick), then 1..8 concurrent client processes per method, whose
wrong-nonce counts are the race study.
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

from tdxfs.bench import measure
from tdxfs.bench.methods import BASELINE, FLOOR, METHODS
from tdxfs.errors import TdxfsError


@dataclass
class Settings:
    rounds: int
    batch: int
    seconds: float
    clients: Sequence[int]
    count_ops: int
    strace: bool

    @classmethod
    def quick(cls) -> "Settings":
        return cls(rounds=5, batch=150, seconds=0.25, clients=(1, 2, 4, 8), count_ops=200, strace=False)

    @classmethod
    def full(cls) -> "Settings":
        return cls(rounds=15, batch=1000, seconds=3.0, clients=(1, 2, 4, 8), count_ops=2000, strace=True)


class Progress:
    """A live bar on a terminal; plain phase lines otherwise (CI logs)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()
        self.phase = ""

    def step(self, label: str) -> None:
        self.done += 1
        if self.tty:
            width = 30
            filled = int(width * self.done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label:<48}")
            self.stream.flush()
        else:
            phase = label.split(":")[0]
            if phase != self.phase:
                self.phase = phase
                print(f"bench: {phase}", file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")


def machine() -> Dict[str, object]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "os": _os_release()}


def _os_release() -> str:
    try:
        with open("/etc/os-release") as f:
            return next((l.split("=", 1)[1].strip().strip('"') for l in f if l.startswith("PRETTY_NAME=")), "")
    except OSError:
        return ""


def _pct(values: List[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class OwnMount:
    """A mount of the embedded default TD in a temporary directory, served by its own daemon."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tdxfs-bench.")
        self.mount = os.path.join(self.dir, "mnt")
        os.mkdir(self.mount)

    def __enter__(self) -> str:
        done = subprocess.run([sys.executable, "-m", "tdxfs", "mount", self.mount, "--log",
                               os.path.join(self.dir, "daemon.log")], capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise TdxfsError(f"bench: cannot mount: {done.stderr.strip()}")
        return self.mount

    def __exit__(self, *exc) -> None:
        subprocess.run([sys.executable, "-m", "tdxfs", "umount", self.mount], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def measure_all(mount: str, s: Settings, names: Sequence[str]) -> Dict[str, object]:
    mounted = [n for n in names if METHODS[n].needs_mount]
    scaled = [n for n in names if METHODS[n].group == "report"]
    progress = Progress(s.rounds + 2 * len(mounted) + len(s.clients) * len(scaled))
    out: Dict[str, object] = {}

    t0 = time.monotonic()
    samples, wrong = measure.latency_rounds(mount, names, s.rounds, s.batch,
                                            lambda label, frac: progress.step(f"latency: {label}"))
    for name in mounted:
        out.setdefault("requests", {})[name] = measure.fuse_requests(mount, name, s.count_ops)
        progress.step(f"FUSE requests: {name}")
    for name in mounted:
        counted = measure.syscalls(mount, name, s.count_ops) if s.strace else None
        out.setdefault("syscalls", {})[name] = {"per_op": counted if counted is not None else METHODS[name].syscalls,
                                                "source": "strace -c" if counted is not None else "declared"}
        progress.step(f"syscalls: {name}")
    scaling: Dict[str, List[Dict[str, float]]] = {name: [] for name in scaled}
    for clients in s.clients:
        for name in scaled:
            scaling[name].append(measure.concurrent(mount, name, clients, s.seconds))
            progress.step(f"scaling: {name} x{clients}")
    progress.finish()

    base = statistics.median(samples[BASELINE]) if BASELINE in samples else None
    methods = {}
    for name in names:
        lat = samples[name]
        med = statistics.median(lat)
        methods[name] = {
            "label": METHODS[name].label, "group": METHODS[name].group, "samples": len(lat),
            "median_us": med / 1e3, "p99_us": _pct(lat, 0.99) / 1e3, "mean_us": statistics.fmean(lat) / 1e3,
            "ops_per_s": 1e9 / statistics.fmean(lat),
            "ratio_to_ioctl": med / base if base else None,
            "wrong_nonce_single_client": wrong[name],
            "fuse_requests_per_op": out.get("requests", {}).get(name),
            "syscalls_per_op": out.get("syscalls", {}).get(name),
        }
    return {"methods": methods, "scaling": scaling, "seconds": time.monotonic() - t0}


def targets(result: Dict[str, object]) -> List[Dict[str, object]]:
    m, sc = result["methods"], result["scaling"]

    def med(name):
        return m[name]["median_us"] if name in m else None

    def ratio(a, b):
        return med(a) / med(b) if med(a) and med(b) else None

    def agg(name, clients):
        return next((p["ops_per_s"] for p in sc.get(name, []) if p["clients"] == clients), None)

    rows = [
        ("ioctl <= 1.2x transport floor", ratio(BASELINE, FLOOR), 1.2, "le"),
        ("one-fd transaction <= 2.2x ioctl", ratio("transaction", BASELINE), 2.2, "le"),
        ("shell pattern <= 3.5x ioctl", ratio("shell", BASELINE), 3.5, "le"),
        ("shell pattern FUSE requests/op == 6 (the kernel's minimum)",
         round(m["shell"]["fuse_requests_per_op"]["total"], 2) if "shell" in m else None, 6, "eq"),
        ("ioctl: 4 clients >= 1.5x one client (aggregate ops/s)",
         agg(BASELINE, 4) / agg(BASELINE, 1) if agg(BASELINE, 4) and agg(BASELINE, 1) else None, 1.5, "ge"),
        ("in-process model report <= 10 us", med("model"), 10.0, "le"),
        ("in-process quote <= 2 ms median", med("quote-model") and med("quote-model") / 1e3, 2.0, "le"),
        ("configfs flow (kept instance) <= 3 ms median", med("configfs") and med("configfs") / 1e3, 3.0, "le"),
        ("wrong-nonce reports, ioctl and transaction, any clients",
         sum(p["wrong_nonce"] for n in (BASELINE, "transaction") for p in sc.get(n, [])), 0, "eq"),
    ]
    out = []
    for label, value, bound, how in rows:
        met = None if value is None else {"le": value <= bound, "ge": value >= bound, "eq": value == bound}[how]
        out.append({"target": label, "value": value, "bound": bound, "met": met})
    return out


def print_summary(result: Dict[str, object], stream=sys.stdout) -> None:
    m = result["methods"]
    w = max(len(n) for n in m) + 2
    print(f"\n{'method':<{w}}{'median us':>10}{'p99 us':>10}{'ops/s':>9}{'syscalls':>9}{'FUSE req':>9}{'x ioctl':>8}",
          file=stream)
    for name, r in m.items():
        sys_ = round(r["syscalls_per_op"]["per_op"], 2) if r["syscalls_per_op"] else 0
        req = round(r["fuse_requests_per_op"]["total"], 2) if r["fuse_requests_per_op"] else 0
        ratio = f"{r['ratio_to_ioctl']:.2f}" if r["ratio_to_ioctl"] else "-"
        print(f"{name:<{w}}{r['median_us']:>10.1f}{r['p99_us']:>10.1f}{r['ops_per_s']:>9.0f}"
              f"{sys_:>9g}{req:>9g}{ratio:>8}", file=stream)
    sc = result["scaling"]
    if sc:
        counts = [p["clients"] for p in next(iter(sc.values()))]
        print(f"\n{'aggregate ops/s':<{w}}" + "".join(f"{c:>9} cl" for c in counts)
              + "   wrong-nonce reports (race study)", file=stream)
        for name, points in sc.items():
            wrong = ", ".join(f"{p['wrong_nonce']}/{p['ops']}" for p in points)
            print(f"{name:<{w}}" + "".join(f"{p['ops_per_s']:>12.0f}" for p in points) + f"   {wrong}", file=stream)
    print("\ntargets:", file=stream)
    for t in result["targets"]:
        mark = {True: "met ", False: "MISS", None: "n/a "}[t["met"]]
        value = "-" if t["value"] is None else (f"{t['value']:.3g}" if isinstance(t["value"], float) else t["value"])
        print(f"  [{mark}] {t['target']}: {value}", file=stream)


def plot(result: Dict[str, object], path_base: str) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result["methods"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.3, 1]})
    names = list(m)
    meds = [m[n]["median_us"] for n in names]
    p99s = [m[n]["p99_us"] for n in names]
    ypos = range(len(names))
    colors = ["#7f7f7f" if m[n]["group"] == "extend" else "#1f77b4" for n in names]
    left.barh(ypos, meds, color=colors)
    left.errorbar(p99s, ypos, fmt="|", color="black", markersize=10, label="p99")
    left.set_yticks(list(ypos), names)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlabel("latency per operation, µs (bar: median, tick: p99; log scale)", labelpad=2)
    if FLOOR in m:
        left.axvline(m[FLOOR]["median_us"], color="red", linestyle="--", label="transport floor (1 FUSE round trip)")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    left.set_title("one client: reports (blue) and RTMR extends (grey)")
    for name, points in result["scaling"].items():
        right.plot([p["clients"] for p in points], [p["ops_per_s"] for p in points], marker="o", label=name)
    right.set_xscale("log", base=2)
    right.set_xticks(list(result["scaling"] and [p["clients"] for p in next(iter(result["scaling"].values()))]),
                     [str(p["clients"]) for p in next(iter(result["scaling"].values()))] if result["scaling"] else [])
    right.set_yscale("log")
    right.set_xlabel("concurrent client processes")
    right.set_ylabel("aggregate reports per second (log)")
    right.set_title("scaling")
    right.legend(fontsize=8)
    mach = result["machine"]
    fig.suptitle(f"tdxfs bench — {mach['cores']} cores, {mach['kernel']}, {result['server'].get('binding', '?')} "
                 f"on libfuse {result['server'].get('libfuse', '?')}", fontsize=10)
    fig.tight_layout()
    paths = [f"{path_base}.png", f"{path_base}.svg"]
    for p in paths:
        fig.savefig(p, dpi=110)
    plt.close(fig)
    return paths


def run(output: str, mount: Optional[str], settings: Settings, names: Optional[Sequence[str]] = None) -> int:
    names = list(names or METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise TdxfsError(f"bench: unknown method(s) {', '.join(unknown)} (known: {', '.join(METHODS)})")
    os.makedirs(output, exist_ok=True)
    if mount:
        result = measure_all(mount, settings, names)
        server = measure.read_stats(mount).get("server", {})
    else:
        with OwnMount() as own:
            result = measure_all(own, settings, names)
            server = measure.read_stats(own).get("server", {})
    result.update({"machine": machine(), "server": server, "settings": asdict(settings),
                   "command": " ".join(["tdxfs", *sys.argv[1:]]) if sys.argv else "tdxfs bench",
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    result["targets"] = targets(result)
    print_summary(result)
    with open(os.path.join(output, "bench.json"), "w") as f:
        json.dump(result, f, indent=1)
    paths = plot(result, os.path.join(output, "bench"))
    print(f"\nwrote {os.path.join(output, 'bench.json')}, {', '.join(paths)} ({result['seconds']:.1f} s measuring)")
    return 0
