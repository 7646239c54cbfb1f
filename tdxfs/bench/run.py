"""``tdxfs bench``: run every method, print the summary, write JSON and the plots.

Phases: interleaved latency rounds (single client), FUSE requests per operation (from the
daemon's /.stats), syscalls per operation (strace -c in the full run; the methods' own
counts with --quick), then 1..8 concurrent client processes per method, whose
wrong-nonce counts are the race study. Then, where gcc and libfuse3-dev are installed,
the physical limit (``tdxfs.bench.native``): one C client times tdxfs and a C low-level
libfuse3 server in interleaved rounds (also pinned to one CPU with ``--pin``) and from
several processes, and each method's ratio to that reference is reported.
"""

import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

from tdxfs.bench import measure, native
from tdxfs.bench.methods import BASELINE, FLOOR, METHODS
from tdxfs.errors import TdxfsError
from tdxfs.server import mountinfo

TRANSPORTS = ("kernel", "libfuse")


@dataclass
class Settings:
    rounds: int
    batch: int
    seconds: float
    clients: Sequence[int]
    count_ops: int
    strace: bool
    pin_cpu: Optional[int] = None  # --pin: the C client's rounds also with server and client on this CPU

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


def load() -> str:
    """The machine's load now, as uptime(1) says it."""
    try:
        done = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            return " ".join(done.stdout.split())
    except OSError:
        pass
    return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


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
    """A mount of the embedded default TD in a temporary directory, served by its own
    daemon: ``python -m tdxfs.server.kernel`` (the kernel transport, in a process of its
    own) or ``tdxfs mount`` (the libfuse daemon)."""

    def __init__(self, transport: str = "kernel"):
        if transport not in TRANSPORTS:
            raise TdxfsError(f"bench: unknown transport {transport!r} (kernel or libfuse)")
        self.transport = transport
        self.dir = tempfile.mkdtemp(prefix="tdxfs-bench.")
        self.mount = os.path.join(self.dir, "mnt")
        self.log = os.path.join(self.dir, "daemon.log")
        self.proc: Optional[subprocess.Popen] = None
        os.mkdir(self.mount)

    def __enter__(self) -> str:
        try:
            if self.transport == "kernel":
                self._start_kernel()
            else:
                self._start_libfuse()
            served = measure.read_stats(self.mount).get("server", {})
            if server_transport(served) != self.transport:
                raise TdxfsError(f"bench: asked for the {self.transport} transport, got {server_transport(served)}")
        except BaseException:
            self.__exit__()
            raise
        return self.mount

    def _start_kernel(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tdxfs.server.kernel", self.mount, "--log", self.log],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while mountinfo.fstype_at(self.mount) != "fuse.tdxfs":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise TdxfsError(f"bench: cannot mount over the kernel transport: {self._log_tail()}")
            time.sleep(0.02)

    def _start_libfuse(self) -> None:
        cmd = [sys.executable, "-m", "tdxfs", "mount", self.mount, "--log", self.log]
        if _mount_takes_transport(self.mount):
            cmd += ["--transport", "libfuse"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise TdxfsError(f"bench: cannot mount: {done.stderr.strip()}")

    def _log_tail(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return " / ".join(f.read().strip().splitlines()[-3:]) or "no message"
        except OSError:
            return "no message"

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # it unmounts, then exits
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if mountinfo.fstype_at(self.mount) is not None:
            subprocess.run([sys.executable, "-m", "tdxfs", "umount", "--lazy", self.mount], capture_output=True,
                           timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def _mount_takes_transport(mountpoint: str) -> bool:
    """Whether ``tdxfs mount`` has a --transport switch (then the libfuse daemon is asked for by name)."""
    import io

    from tdxfs.cli import build_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(["mount", mountpoint, "--transport", "libfuse"])
    except SystemExit:
        return False
    return True


def server_transport(server: Dict[str, object]) -> str:
    """Which transport serves a mount, from its /.stats "server" record."""
    return str(server.get("transport") or ("kernel" if server.get("binding") == "tdxfs.server.kernel" else "libfuse"))


def measure_all(mount: str, s: Settings, names: Sequence[str],
                native_targets: Optional[Dict[str, native.Target]] = None,
                tools: Optional[native.Tools] = None) -> Dict[str, object]:
    """Every phase on ``mount``; with ``tools``, also the C client's rounds and scaling on
    ``native_targets`` ({"tdxfs": ..., "reference": ...})."""
    mounted = [n for n in names if METHODS[n].needs_mount]
    scaled = [n for n in names if METHODS[n].group == "report"]
    c_methods = [n for n in names if n in native.C_METHODS] if tools else []
    c_scaled = [n for n in c_methods if n in native.C_SCALED]
    steps = s.rounds + 2 * len(mounted) + len(s.clients) * len(scaled)
    if c_methods:
        steps += s.rounds + len(s.clients) * len(c_scaled)
    progress = Progress(steps)
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
    reference = None
    if c_methods:
        rounds = native.latency_rounds(tools, native_targets, c_methods, s.rounds, s.batch, s.pin_cpu,
                                       lambda label: progress.step(f"reference: {label}"))
        c_scaling = native.scaling(tools, native_targets, c_scaled, s.clients, s.seconds,
                                   lambda label: progress.step(f"reference: {label}"))
        reference = native.summarize(rounds, c_scaling)
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
            # the same C client on tdxfs and on the C reference, in this run's rounds
            "ratio_to_reference": (reference["methods"].get(name, {}).get("unpinned", {}).get("ratio")
                                   if reference else None),
        }
    return {"methods": methods, "scaling": scaling, "native": reference, "seconds": time.monotonic() - t0}


def targets(result: Dict[str, object]) -> List[Dict[str, object]]:
    m, sc = result["methods"], result["scaling"]

    def med(name):
        return m[name]["median_us"] if name in m else None

    def ratio(a, b):
        return med(a) / med(b) if med(a) and med(b) else None

    def agg(name, clients):
        return next((p["ops_per_s"] for p in sc.get(name, []) if p["clients"] == clients), None)

    ref = result.get("reference") or {}

    def x_ref(name):
        return m[name]["ratio_to_reference"] if name in m else None

    def c_agg(name, server, clients):
        points = ref.get("scaling", {}).get(name, {}).get(server, [])
        return next((p["ops_per_s"] for p in points if p["clients"] == clients), None)

    def quotient(a, b):
        return a / b if a is not None and b else None

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
        # against the C low-level libfuse3 server, the same C client, one run
        ("READ floor <= 1.3x the C reference", x_ref(FLOOR), 1.3, "le"),
        ("ioctl GET_REPORT0 <= 1.5x the C reference", x_ref(BASELINE), 1.5, "le"),
        ("one-fd transaction <= 1.6x the C reference", x_ref("transaction"), 1.6, "le"),
        ("shell pattern <= 1.6x the C reference", x_ref("shell"), 1.6, "le"),
        ("ioctl, 4 C clients: aggregate >= 0.8x the C reference's",
         quotient(c_agg(BASELINE, "tdxfs", 4), c_agg(BASELINE, "reference", 4)), 0.8, "ge"),
        ("one-fd transaction, 4 C clients: aggregate >= 2x one C client's",
         quotient(c_agg("transaction", "tdxfs", 4), c_agg("transaction", "tdxfs", 1)), 2.0, "ge"),
    ]
    out = []
    for label, value, bound, how in rows:
        met = None if value is None else {"le": value <= bound, "ge": value >= bound, "eq": value == bound}[how]
        out.append({"target": label, "value": value, "bound": bound, "met": met})
    return out


def print_summary(result: Dict[str, object], stream=sys.stdout) -> None:
    m = result["methods"]
    w = max(len(n) for n in m) + 2
    print(f"\n{'method':<{w}}{'median us':>10}{'p99 us':>10}{'ops/s':>9}{'syscalls':>9}{'FUSE req':>9}{'x ioctl':>8}"
          f"{'x ref':>7}", file=stream)
    for name, r in m.items():
        sys_ = round(r["syscalls_per_op"]["per_op"], 2) if r["syscalls_per_op"] else 0
        req = round(r["fuse_requests_per_op"]["total"], 2) if r["fuse_requests_per_op"] else 0
        ratio = f"{r['ratio_to_ioctl']:.2f}" if r["ratio_to_ioctl"] else "-"
        x_ref = f"{r['ratio_to_reference']:.2f}" if r.get("ratio_to_reference") else "-"
        print(f"{name:<{w}}{r['median_us']:>10.1f}{r['p99_us']:>10.1f}{r['ops_per_s']:>9.0f}"
              f"{sys_:>9g}{req:>9g}{ratio:>8}{x_ref:>7}", file=stream)
    print("(x ref: the C client's median on tdxfs over its median on the C low-level libfuse3 reference, "
          "below)" if any(r.get("ratio_to_reference") for r in m.values()) else
          "(x ref: no C reference in this run)", file=stream)
    sc = result["scaling"]
    if sc:
        counts = [p["clients"] for p in next(iter(sc.values()))]
        print(f"\n{'aggregate ops/s':<{w}}" + "".join(f"{c:>9} cl" for c in counts)
              + "   wrong-nonce reports (race study)", file=stream)
        for name, points in sc.items():
            wrong = ", ".join(f"{p['wrong_nonce']}/{p['ops']}" for p in points)
            print(f"{name:<{w}}" + "".join(f"{p['ops_per_s']:>12.0f}" for p in points) + f"   {wrong}", file=stream)
    print_reference(result, stream)
    print("\ntargets:", file=stream)
    for t in result["targets"]:
        mark = {True: "met ", False: "MISS", None: "n/a "}[t["met"]]
        value = "-" if t["value"] is None else (f"{t['value']:.3g}" if isinstance(t["value"], float) else t["value"])
        print(f"  [{mark}] {t['target']}: {value}", file=stream)


def print_reference(result: Dict[str, object], stream=sys.stdout) -> None:
    """tdxfs against the C reference: the same C client, medians from this run's rounds."""
    ref = result.get("reference") or {}
    if not ref.get("methods"):
        return
    pinned = ref.get("pin_cpu") is not None
    w = max(len(n) for n in ref["methods"]) + 2
    print(f"\nthe same C client on tdxfs ({result.get('transport')} transport) and on the C low-level libfuse3 "
          f"server (libfuse {ref['libfuse']}), interleaved rounds, median us", file=stream)
    head = f"{'method':<{w}}{'tdxfs':>9}{'ref':>9}{'x ref':>7}{'p99 tdxfs':>11}{'p99 ref':>9}"
    if pinned:
        head += f"   | one CPU ({ref['pin_cpu']}):{'tdxfs':>7}{'ref':>9}{'x ref':>7}"
    print(head, file=stream)
    for name, row in ref["methods"].items():
        u = row["unpinned"]
        line = (f"{name:<{w}}{u['tdxfs']['median_us']:>9.1f}{u['reference']['median_us']:>9.1f}{u['ratio']:>7.2f}"
                f"{u['tdxfs']['p99_us']:>11.1f}{u['reference']['p99_us']:>9.1f}")
        if pinned:
            p = row["pinned"]
            line += (f"   | {'':>11}{p['tdxfs']['median_us']:>7.1f}{p['reference']['median_us']:>9.1f}"
                     f"{p['ratio']:>7.2f}")
        print(line, file=stream)
    if ref.get("scaling"):
        counts = [p["clients"] for p in next(iter(ref["scaling"].values()))["tdxfs"]]
        print(f"\n{'C clients, aggregate ops/s':<28}" + "".join(f"{c:>9} cl" for c in counts), file=stream)
        for name, by_server in ref["scaling"].items():
            for server in ("tdxfs", "reference"):
                print(f"{name + ' ' + server:<28}" + "".join(f"{p['ops_per_s']:>12.0f}" for p in by_server[server]),
                      file=stream)
            print(f"{name + ' x ref':<28}" + "".join(f"{x:>12.2f}" for x in by_server["ratio"]), file=stream)
    pdw = ref.get("parallel_direct_writes", {})
    print(f"\ntransaction rows: parallel direct writes tdxfs {'on' if pdw.get('tdxfs') else 'off'}, "
          f"reference {'on' if pdw.get('reference') else 'off'}. {pdw.get('note', '')}", file=stream)


# The plots are optional: matplotlib is the [bench] extra, not a dependency of the filesystem.
NO_PLOTS = ("tdxfs: no plots: matplotlib is not installed (pip install 'tdxfs[bench]', or matplotlib, "
            "then run tdxfs bench again); the figures are in bench.json")


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def save(result: Dict[str, object], output: str) -> List[str]:
    """bench.json, and the plots where matplotlib is installed (else one line on stderr
    says how to get them). Returns the paths written."""
    path = os.path.join(output, "bench.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    if not have_matplotlib():
        print(NO_PLOTS, file=sys.stderr)
        return [path]
    return [path, *plot(result, os.path.join(output, "bench"))]


def plot(result: Dict[str, object], path_base: str) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

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
    plain = matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}")  # 2, 5, 10, 20 ... not 2x10^0
    left.xaxis.set_major_formatter(plain)
    left.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2, 5)))
    left.xaxis.set_minor_formatter(plain)
    left.set_xlabel("latency per operation, µs (bar: median, tick: p99; log scale)", labelpad=2)
    if FLOOR in m:
        left.axvline(m[FLOOR]["median_us"], color="red", linestyle="--",
                     label="transport floor (1 FUSE round trip, Python client)")
    ref = (result.get("reference") or {}).get("methods") or {}
    if ref:
        rows = [i for i, n in enumerate(names) if n in ref]
        left.plot([ref[names[i]]["unpinned"]["tdxfs"]["median_us"] for i in rows], rows, "x", color="#ff7f0e",
                  label="tdxfs, C client")
        left.plot([ref[names[i]]["unpinned"]["reference"]["median_us"] for i in rows], rows, "o", color="black",
                  fillstyle="none", label="C libfuse3 low-level server, C client")
        if FLOOR in ref:
            left.axvline(ref[FLOOR]["unpinned"]["reference"]["median_us"], color="black", linestyle=":",
                         label="the floor: C server's 1-byte READ")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    left.set_title("one client: reports (blue) and RTMR extends (grey)")
    color = {}
    for name, points in result["scaling"].items():
        line, = right.plot([p["clients"] for p in points], [p["ops_per_s"] for p in points], marker="o", label=name)
        color[name] = line.get_color()
    for name, by_server in ((result.get("reference") or {}).get("scaling") or {}).items():
        for server, style in (("tdxfs", "-"), ("reference", ":")):
            points = by_server[server]
            right.plot([p["clients"] for p in points], [p["ops_per_s"] for p in points], marker="x", linestyle=style,
                       color=color.get(name), label=f"{name}, C client, {'tdxfs' if server == 'tdxfs' else 'C server'}")
    right.set_xscale("log", base=2)
    right.set_xticks(list(result["scaling"] and [p["clients"] for p in next(iter(result["scaling"].values()))]),
                     [str(p["clients"]) for p in next(iter(result["scaling"].values()))] if result["scaling"] else [])
    right.set_yscale("log")
    right.set_xlabel("concurrent client processes")
    right.set_ylabel("aggregate reports per second (log)")
    right.set_title("scaling")
    right.legend(fontsize=7)
    mach = result["machine"]
    fig.suptitle(f"tdxfs bench — {mach['cores']} cores, {mach['kernel']}, {result.get('transport', '?')} transport "
                 f"({result['server'].get('binding', '?')}, libfuse {result['server'].get('libfuse', '?')})",
                 fontsize=10)
    fig.tight_layout()
    paths = [f"{path_base}.png", f"{path_base}.svg"]
    for p in paths:
        fig.savefig(p, dpi=110)
    plt.close(fig)
    return paths


def parallel_direct_writes(transport: str) -> bool:
    """Whether tdxfs opens its files with FOPEN_PARALLEL_DIRECT_WRITES on this transport
    (the kernel transport's own open flags; libfuse 3.14 has no way to ask for it)."""
    if transport != "kernel":
        return False
    from tdxfs.server.kernel import protocol
    from tdxfs.server.kernel.dispatch import OPEN_FLAGS

    return bool(OPEN_FLAGS & protocol.FOPEN_PARALLEL_DIRECT_WRITES)


def reference_block(tools: Optional[native.Tools], reason: Optional[str], measured: Optional[Dict[str, object]],
                    transport: str, ref_pdw: Optional[bool], pin_cpu: Optional[int]) -> Dict[str, object]:
    """What bench.json says about the C reference: how it was built, or why it was not."""
    if tools is None:
        return {"available": False, "reason": reason}
    tdxfs_pdw = parallel_direct_writes(transport)
    if ref_pdw:
        note = f"FOPEN_PARALLEL_DIRECT_WRITES: the C reference sets it too (libfuse {tools.libfuse} has the bit)"
    elif tdxfs_pdw:
        note = native.PDW_NOTE.format(libfuse=tools.libfuse)
    else:
        note = (f"FOPEN_PARALLEL_DIRECT_WRITES: neither sets it (tdxfs's {transport} transport and the C reference "
                f"on libfuse {tools.libfuse} cannot)")
    return {"available": True, "reason": None,
            "server": "benchmarks/refserver.c: libfuse3 low-level API, single-threaded (fuse_session_loop), "
                      "direct_io, noflush, 1 s entry/attr timeouts",
            "client": "benchmarks/client.c", "libfuse": tools.libfuse, "compiler": tools.compiler,
            "build_dir": tools.build_dir, "pin_cpu": pin_cpu,
            "parallel_direct_writes": {"tdxfs": tdxfs_pdw, "reference": bool(ref_pdw), "note": note},
            **(measured or {"methods": {}, "scaling": {}})}


def run(output: str, mount: Optional[str], settings: Settings, names: Optional[Sequence[str]] = None,
        transport: str = "kernel") -> int:
    """``transport``: what serves the bench's own mount (ignored with ``mount``, a running one)."""
    names = list(names or METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise TdxfsError(f"bench: unknown method(s) {', '.join(unknown)} (known: {', '.join(METHODS)})")
    if transport not in TRANSPORTS:
        raise TdxfsError(f"bench: unknown transport {transport!r} (kernel or libfuse)")
    os.makedirs(output, exist_ok=True)
    tools: Optional[native.Tools] = None
    reason = None
    try:
        tools = native.build()
    except native.Unavailable as exc:
        reason = exc.reason
        print(native.unavailable_line(reason), file=sys.stderr, flush=True)
    load_at_start = load()
    with contextlib.ExitStack() as stack:
        where = mount or stack.enter_context(OwnMount(transport))
        server = measure.read_stats(where).get("server", {})
        targets_, ref_pdw = None, None
        if tools is not None:
            ref = stack.enter_context(native.ReferenceMount(tools))
            pid = int(server["pid"]) if str(server.get("pid", "")).isdigit() else None
            if settings.pin_cpu is not None and pid is None:
                raise TdxfsError("bench: --pin needs the server's pid, which this mount's /.stats does not give")
            targets_ = {"tdxfs": native.Target(where, pid), "reference": native.Target(ref.mount, ref.pid)}
            ref_pdw = ref.parallel_direct_writes
        result = measure_all(where, settings, names, targets_, tools)
        server = measure.read_stats(where).get("server", {})
    served_by = server_transport(server)
    result["reference"] = reference_block(tools, reason, result.pop("native"), served_by, ref_pdw, settings.pin_cpu)
    result.update({"machine": machine(), "server": server, "transport": served_by,
                   "libfuse": {"tdxfs": server.get("libfuse"), "reference": tools.libfuse if tools else None},
                   "load": {"start": load_at_start, "end": load()}, "settings": asdict(settings),
                   "command": " ".join(["tdxfs", *sys.argv[1:]]) if sys.argv else "tdxfs bench",
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    result["targets"] = targets(result)
    print_summary(result)
    print(f"\nmachine: {result['machine']['cpu']}, {result['machine']['cores']} cores, {result['machine']['kernel']}; "
          f"load at start: {load_at_start}", file=sys.stdout)
    written = save(result, output)
    print(f"\nwrote {', '.join(written)} ({result['seconds']:.1f} s measuring)")
    return 0
