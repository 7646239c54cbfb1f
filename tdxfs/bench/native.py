"""The physical limit: a C low-level libfuse3 server and a C client, built on demand.

``benchmarks/refserver.c`` serves the shapes of tdxfs's files on libfuse3's low-level API
(single-threaded, direct_io, noflush), the practical floor for a FUSE server;
``benchmarks/client.c`` runs one access pattern in a timed loop. The same client times the
reference and tdxfs, in interleaved rounds, so each method's ratio to the reference comes
from one run's figures on one machine.

They are compiled with gcc against libfuse3-dev (``pkg-config fuse3``) into a cache
directory keyed by the sources, the compiler and libfuse's version (never into the tree);
where either is missing, ``build`` raises ``Unavailable`` with the reason, and the bench
says so in one line and measures without them.
"""

import hashlib
import os
import select
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from tdxfs.errors import TdxfsError
from tdxfs.server import mountinfo

# The methods the C client knows (tdxfs.bench.methods' names for the same patterns), and
# those it also runs from several processes at once.
C_METHODS = ("floor", "ioctl-floor", "ioctl", "ioctl-open", "shell", "kept-pair", "transaction")
C_SCALED = ("ioctl", "transaction")
SERVERS = ("tdxfs", "reference")
SOURCES = {"client": "client.c", "refserver": "refserver.c"}
CFLAGS = ["-O2", "-Wall", "-Wextra"]
WARM = 16  # untimed operations per method and client process: cold lookups, first requests
START_DELAY = 0.2  # s: every scaling client is set up before the clock starts
READY_TIMEOUT = 30.0  # s: the reference server mounts well within this
REFERENCE_FSTYPE = "fuse.tdxfs-ref"
PDW_NOTE = ("FOPEN_PARALLEL_DIRECT_WRITES: tdxfs's kernel transport sets it on every file; the C reference "
            "on libfuse {libfuse} cannot (fuse_file_info has no such bit before libfuse 3.15), so its writes "
            "to one file wait on the inode lock")


class Unavailable(Exception):
    """The C tools cannot be built here; ``reason`` is one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Tools:
    client: str
    refserver: str
    build_dir: str
    libfuse: str  # the libfuse3 the reference is built against (pkg-config --modversion fuse3)
    compiler: str  # gcc --version, first line
    warnings: str  # what gcc said while compiling (empty when it said nothing)


def source_dir() -> Path:
    """benchmarks/ of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "benchmarks"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tdxfs" / "bench-build"


def _output(cmd: List[str]) -> Optional[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def build(cache: Optional[Path] = None) -> Tools:
    """The client and the reference server, compiled now or found compiled in ``cache``."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise Unavailable("gcc not found")
    pkg_config = shutil.which("pkg-config")
    if pkg_config is None:
        raise Unavailable("pkg-config not found (it locates libfuse3-dev)")
    fuse_flags = _output([pkg_config, "--cflags", "--libs", "fuse3"])
    libfuse = _output([pkg_config, "--modversion", "fuse3"])
    if fuse_flags is None or libfuse is None:
        raise Unavailable("libfuse3-dev not found (pkg-config fuse3 fails)")
    compiler = (_output([gcc, "--version"]) or "gcc").splitlines()[0]
    sources = {name: source_dir() / file for name, file in SOURCES.items()}
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise Unavailable(f"C sources not found: {', '.join(missing)}")
    key = hashlib.sha256("\0".join([compiler, libfuse, fuse_flags, *CFLAGS]).encode())
    for name in sorted(sources):
        key.update(sources[name].read_bytes())
    base = cache or cache_dir()
    out = base / key.hexdigest()[:16]
    tools = {name: str(out / name) for name in sources}
    if all(os.access(p, os.X_OK) for p in tools.values()):
        warnings = (out / "warnings.txt").read_text() if (out / "warnings.txt").exists() else ""
        return Tools(build_dir=str(out), libfuse=libfuse, compiler=compiler, warnings=warnings, **tools)
    try:
        base.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build.", dir=base))
    except OSError as exc:
        raise Unavailable(f"cannot write the build directory {base}: {exc.strerror}") from None
    try:
        said = []
        for name, src in sorted(sources.items()):
            libs = fuse_flags.split() if name == "refserver" else []
            done = subprocess.run([gcc, *CFLAGS, "-o", str(work / name), str(src), *libs], capture_output=True,
                                  text=True, timeout=300)
            if done.returncode:
                first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip())
                raise Unavailable(f"gcc failed on {src.name}: {first.strip()[:200]}")
            said.append(done.stderr)
        (work / "warnings.txt").write_text("".join(said))
        try:
            os.rename(work, out)
        except OSError:  # another bench built the same meanwhile: theirs is as good
            if not all(os.access(p, os.X_OK) for p in tools.values()):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Tools(build_dir=str(out), libfuse=libfuse, compiler=compiler, warnings="".join(said), **tools)


def unavailable_line(reason: str) -> str:
    """The one line the bench prints when the C tools cannot be built."""
    return (f"bench: no C reference: {reason} (it needs gcc and libfuse3-dev, which scripts/setup.sh installs); "
            "measuring tdxfs alone")


# -- the reference server's mount -------------------------------------------------------------------


def _detach(path: str) -> None:
    """Clear a mount the reference left (it was killed before it could unmount)."""
    if mountinfo.fstype_at(path) is None:
        return
    for cmd in (["fusermount3", "-u", "-z", path], ["umount", "-l", path]):
        try:
            if subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0:
                return
        except OSError:
            continue


class ReferenceMount:
    """The C reference server mounted in a temporary directory, in its own process; always
    unmounted on exit (it also unmounts by itself if this process dies)."""

    def __init__(self, tools: Tools):
        self.tools = tools
        self.dir = tempfile.mkdtemp(prefix="tdxfs-bench-ref.")
        self.mount = os.path.join(self.dir, "mnt")
        self.proc: Optional[subprocess.Popen] = None
        self.parallel_direct_writes = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __enter__(self) -> "ReferenceMount":
        os.mkdir(self.mount)
        log = open(os.path.join(self.dir, "server.log"), "wb")
        try:
            self.proc = subprocess.Popen([self.tools.refserver, self.mount], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=log)
        finally:
            log.close()
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        if not line.startswith("ready"):
            self.__exit__()
            raise TdxfsError(f"bench: the C reference server did not mount: {line.strip() or 'no answer'}")
        self.parallel_direct_writes = "parallel_direct_writes=1" in line
        return self

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc.stdout.close()
        _detach(self.mount)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- pinning -----------------------------------------------------------------------------------------


def default_cpu() -> int:
    """The CPU ``--pin`` uses unless told: the last one this process may run on."""
    return max(os.sched_getaffinity(0))


@contextmanager
def pinned(pid: Optional[int], cpu: Optional[int]) -> Iterator[None]:
    """Every thread of process ``pid`` on ``cpu`` for the block, as it was after (a thread
    gone meanwhile is skipped). Nothing when either is None."""
    if pid is None or cpu is None:
        yield
        return
    before: Dict[int, set] = {}
    for tid in (int(t) for t in os.listdir(f"/proc/{pid}/task")):
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {cpu})
        except ProcessLookupError:
            pass
    try:
        yield
    finally:
        for tid, cpus in before.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:
                pass


# -- the C client ---------------------------------------------------------------------------------------

Samples = Dict[str, Tuple[List[int], int]]  # method -> (latencies in ns, wrong-nonce answers)


def run_latency(tools: Tools, mount: str, methods: Sequence[str], batch: int, cpu: Optional[int] = None) -> Samples:
    """One client process: each method WARM times, then ``batch`` timed operations."""
    cmd = [tools.client, "latency", mount, str(batch), str(WARM), ",".join(methods)]
    if cpu is not None:
        cmd.append(str(cpu))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise TdxfsError(f"bench: the C client failed on {mount}: {done.stderr.strip() or done.returncode}")
    out: Samples = {}
    for line in done.stdout.splitlines():
        name, wrong, *ns = line.split()
        out[name] = ([int(x) for x in ns], int(wrong))
    return out


def run_throughput(tools: Tools, mount: str, method: str, clients: int, seconds: float) -> Dict[str, float]:
    """``clients`` client processes run ``method`` at once for ``seconds``: aggregate ops/s."""
    start = time.monotonic_ns() + int(START_DELAY * 1e9)  # CLOCK_MONOTONIC, as the client's
    procs = [subprocess.Popen([tools.client, "throughput", mount, method, str(start), str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(clients)]
    ops = wrong = 0
    failed = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=seconds + 120)
        if p.returncode:
            failed.append(stderr.strip() or str(p.returncode))
            continue
        n, w = stdout.split()
        ops, wrong = ops + int(n), wrong + int(w)
    if failed:
        raise TdxfsError(f"bench: the C client failed on {mount}: {failed[0]}")
    return {"clients": clients, "ops": ops, "ops_per_s": ops / seconds, "wrong_nonce": wrong}


# -- the phases and their figures -------------------------------------------------------------------------


@dataclass
class Target:
    """A server the C client times: where it is mounted and its server's pid (for pinning)."""

    mount: str
    pid: Optional[int]


def latency_rounds(tools: Tools, targets: Dict[str, Target], methods: Sequence[str], rounds: int, batch: int,
                   pin_cpu: Optional[int], progress: Callable[[str], None]) -> Dict[str, Dict[str, Samples]]:
    """Interleaved rounds: in each, every server (and, with ``pin_cpu``, every server with
    it and its client on that one CPU) is timed by one client process; which goes first
    alternates, and the methods' order rotates, so drift falls on all alike.
    Returns {variant: {server: {method: (ns, wrong)}}}, variant "unpinned" or "pinned"."""
    variants = ["unpinned"] + (["pinned"] if pin_cpu is not None else [])
    out: Dict[str, Dict[str, Samples]] = {v: {s: {m: ([], 0) for m in methods} for s in targets} for v in variants}
    servers = list(targets)
    for r in range(rounds):
        order = list(methods[r % len(methods):]) + list(methods[: r % len(methods)])
        for variant in (variants if r % 2 == 0 else variants[::-1]):
            for server in (servers if r % 2 == 0 else servers[::-1]):
                target = targets[server]
                cpu = pin_cpu if variant == "pinned" else None
                with pinned(target.pid, cpu):
                    got = run_latency(tools, target.mount, order, batch, cpu)
                for name, (ns, wrong) in got.items():
                    kept = out[variant][server][name]
                    kept[0].extend(ns)
                    out[variant][server][name] = (kept[0], kept[1] + wrong)
        progress(f"C client, latency round {r + 1}/{rounds}")
    return out


def scaling(tools: Tools, targets: Dict[str, Target], methods: Sequence[str], clients: Sequence[int],
            seconds: float, progress: Callable[[str], None]) -> Dict[str, Dict[str, List[Dict[str, float]]]]:
    """{method: {server: [points]}}, the servers taking turns point by point."""
    out = {name: {server: [] for server in targets} for name in methods}
    for n in clients:
        for name in methods:
            for server, target in targets.items():
                out[name][server].append(run_throughput(tools, target.mount, name, n, seconds))
            progress(f"C client, scaling: {name} x{n}")
    return out


def _pct(values: List[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(ns: List[int], wrong: int) -> Dict[str, float]:
    return {"median_us": statistics.median(ns) / 1e3, "p99_us": _pct(ns, 0.99) / 1e3,
            "mean_us": statistics.fmean(ns) / 1e3, "samples": len(ns), "wrong_nonce": wrong}


def summarize(rounds: Dict[str, Dict[str, Samples]],
              scaled: Dict[str, Dict[str, List[Dict[str, float]]]]) -> Dict[str, object]:
    """Per method and variant: each server's figures and tdxfs's ratio to the reference
    (median over median, both from these rounds); per scaled method: both servers'
    aggregates and their ratio at each client count."""
    methods: Dict[str, Dict[str, object]] = {}
    for variant, by_server in rounds.items():
        for name in by_server["tdxfs"]:
            row = {server: figures(*by_server[server][name]) for server in by_server}
            if "reference" in row:
                row["ratio"] = row["tdxfs"]["median_us"] / row["reference"]["median_us"]
            methods.setdefault(name, {})[variant] = row
    scaling_out = {}
    for name, by_server in scaled.items():
        entry: Dict[str, object] = dict(by_server)
        if "reference" in by_server:
            entry["ratio"] = [t["ops_per_s"] / r["ops_per_s"] if r["ops_per_s"] else None
                              for t, r in zip(by_server["tdxfs"], by_server["reference"])]
        scaling_out[name] = entry
    return {"methods": methods, "scaling": scaling_out}
