"""``tdxfs stress``: the orchestration.

1. The mount: ``--mount DIR`` (a live tdxfs mount), or its own: ``tdxfs mount`` in daemon
   mode on a temporary mountpoint, with a temporary ``--state`` (so the PKI can be
   exported for quote verification) and log, unless given. Its own mount is always
   unmounted, and its daemon reaped, in a ``finally`` (SIGTERM to ``tdxfs stress`` too).
2. A warm-up client runs each operation once (first-use allocations are not drift), then
   the daemon's descriptors and RSS are read (``/proc/PID``; the pid from ``/.stats``).
3. N client processes (``python -m tdxfs.stress.client``) start together and mix every
   operation for S seconds; a progress bar on stderr shows time and FUSE requests served.
   A client still running 60 s after the end is killed and counts as not finished.
4. After them: the daemon alive, its descriptors and RSS again, a fresh TDREPORT, both
   views of the event log; the PKI exported (``tdxfs pki export --state``) and the sampled
   quotes verified with dcap-qvl.
5. ``check.evaluate`` turns that into the invariants; the table goes to stdout, the figures
   to ``--json FILE``. Exit 0 when every invariant holds, 1 otherwise.

Nothing here serves the mount or imports a FUSE binding: the daemon is its own process.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tdxfs.client.files import read_to_eof
from tdxfs.errors import TdxfsError
from tdxfs.stress import check
from tdxfs.stress.ops import KINDS, RACE_FREE, RACY, report_ioctl

MOUNT_TIMEOUT = 60.0
READY_TIMEOUT = 60.0  # clients importing on a busy 2-core machine
GRACE = 60.0  # after the end, for a client's last operation
PROBE_TIMEOUT = 60.0  # for the final reads; a daemon that does not answer by then is hung
QUOTES_TO_VERIFY = 64  # spread over the clients; at least check.MIN_VERIFIED when made


@dataclass
class Options:
    clients: int = 4
    seconds: float = 10.0
    mount: Optional[str] = None  # a running tdxfs mount; None: our own
    state: Optional[str] = None  # own mount: its --state; with --mount: that mount's, for the PKI
    profile: Optional[str] = None
    reset: bool = False
    fuse_options: Sequence[str] = ()
    log: Optional[str] = None
    threads: bool = False
    transport: Optional[str] = None  # own mount: --transport (None: tdxfs mount's default)
    json_path: Optional[str] = None
    command: str = "tdxfs stress"


class Progress:
    """A bar on a terminal; a line per tenth of the run otherwise (CI logs)."""

    def __init__(self, seconds: float, stream=sys.stderr):
        self.seconds, self.stream = seconds, stream
        self.tty = stream.isatty()
        self.shown = -1

    def update(self, elapsed: float, requests: Optional[int], running: int) -> None:
        frac = min(max(elapsed / self.seconds, 0.0), 1.0) if self.seconds > 0 else 1.0
        served = f"{requests} FUSE requests" if requests is not None else "daemon not answering"
        text = f"{min(elapsed, self.seconds):5.1f}/{self.seconds:g} s  {served}  {running} clients running"
        if self.tty:
            width = 30
            filled = int(width * frac)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text:<60}")
            self.stream.flush()
        elif int(frac * 10) > self.shown:
            self.shown = int(frac * 10)
            print(f"stress: {text}", file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# -- the daemon, seen from outside -------------------------------------------------------------


def read_stats(mount: str) -> Dict[str, object]:
    return json.loads(read_to_eof(os.path.join(mount, ".stats")))


def daemon_pid(mount: str) -> int:
    try:
        return int(read_stats(mount)["server"]["pid"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TdxfsError(f"stress: {mount}/.stats does not name the daemon's pid: {exc}") from None


def process_alive(pid: Optional[int]) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next((line.split()[1] for line in f if line.startswith("State:")), "?")
    except OSError:
        return False
    return state not in ("Z", "X")


def fd_count(pid: int) -> Optional[int]:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def rss_kib(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), None)
    except (OSError, ValueError):
        return None


def with_timeout(fn: Callable[[], object], timeout: float):
    """``fn()`` in a thread; (True, value) or (False, why). A hung FUSE read cannot be
    interrupted from here, so a daemon that stopped answering must not hang the run."""
    box: Dict[str, object] = {}

    def target():
        try:
            box["value"] = fn()
        except Exception as exc:
            box["error"] = f"{type(exc).__name__}: {exc}"

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return False, f"no answer in {timeout:g} s"
    if "error" in box:
        return False, box["error"]
    return True, box["value"]


# -- our own mount ------------------------------------------------------------------------------


class OwnMount:
    """``tdxfs mount`` in daemon mode on a temporary mountpoint; always unmounted."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.dir = tempfile.mkdtemp(prefix="tdxfs-stress.")
        self.mount = os.path.join(self.dir, "mnt")
        os.mkdir(self.mount)
        self.state = opts.state or os.path.join(self.dir, "state")
        self.log = opts.log or os.path.join(self.dir, "daemon.log")
        self.pid: Optional[int] = None
        self.keep = False  # keep the temporary directory (its log) after a failed run

    def start(self) -> str:
        o = self.opts
        args = [sys.executable, "-m", "tdxfs", "mount", self.mount, "--state", self.state, "--log", self.log]
        args += ["--profile", o.profile] if o.profile else []
        args += ["--reset"] if o.reset else []
        args += ["--threads"] if o.threads else []
        args += ["--transport", o.transport] if o.transport else []
        for opt in o.fuse_options:
            args += ["-o", opt]
        done = subprocess.run(args, capture_output=True, text=True, timeout=MOUNT_TIMEOUT)
        if done.returncode:
            # A refused mount says why on stderr; its log is worth keeping only if the daemon
            # wrote to it, and one the user named is where they asked for it anyway.
            self.keep = not o.log and os.path.exists(self.log) and os.path.getsize(self.log) > 0
            where = f" (log: {self.log})" if self.keep or o.log else ""
            said = "; ".join(line.removeprefix("tdxfs: ") for line in (done.stderr or done.stdout).strip().splitlines())
            raise TdxfsError(f"stress: cannot mount: {said}{where}")
        self.pid = daemon_pid(self.mount)
        return self.mount

    def tracebacks(self) -> Optional[int]:
        try:
            with open(self.log, errors="replace") as f:
                return sum(1 for line in f if "Traceback" in line or "Logging error" in line)
        except OSError:
            return None

    def stop(self) -> None:
        from tdxfs.server.daemon import mounted_fstype  # mountinfo, read in the one place that does it

        tdxfs = [sys.executable, "-m", "tdxfs", "umount", self.mount]
        for cmd in (tdxfs, tdxfs + ["--lazy"]):
            if mounted_fstype(self.mount) is None:
                break
            subprocess.run(cmd, capture_output=True, timeout=MOUNT_TIMEOUT)
        self._reap()
        if mounted_fstype(self.mount) is not None:
            print(f"tdxfs stress: {self.mount} is still mounted; leaving {self.dir} in place", file=sys.stderr)
            return
        if self.keep:
            print(f"tdxfs stress: the daemon's log is kept at {self.log}", file=sys.stderr)
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def _reap(self) -> None:
        """The daemon exits once unmounted; one that does not is ours to stop."""
        if self.pid is None:
            return
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and process_alive(self.pid) and self._is_ours():
                os.kill(self.pid, sig)
            deadline = time.monotonic() + 10
            while process_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not process_alive(self.pid):
                return

    def _is_ours(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                return self.mount.encode() in f.read().split(b"\0")
        except OSError:
            return False


# -- the clients --------------------------------------------------------------------------------


def _client_cmd(mount: str, out: str, quote_sample: int, once: bool = False) -> List[str]:
    cmd = [sys.executable, "-m", "tdxfs.stress.client", "--mount", mount, "--out", out,
           "--quote-sample", str(quote_sample)]
    return cmd + (["--once"] if once else [])


def _load(path: str) -> Optional[Dict[str, object]]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def warm_up(mount: str, workdir: str, n: int) -> List[Dict[str, object]]:
    """N clients at once, each running every operation once: first-use allocations (and,
    with --threads, libfuse's worker threads) are made before the daemon is measured."""
    outs = [os.path.join(workdir, f"warm-up-{i}.json") for i in range(n)]
    procs = [subprocess.Popen(_client_cmd(mount, out, 1, once=True), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for out in outs]
    results = []
    for p, out in zip(procs, outs):
        try:
            _, err = p.communicate(timeout=READY_TIMEOUT + GRACE)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        result = _load(out)
        if p.returncode or result is None:
            for q in procs:
                if q.poll() is None:
                    q.kill()
                    q.wait()
            raise TdxfsError(f"stress: a warm-up client failed ({p.returncode}): "
                             f"{err.decode(errors='replace').strip()[-500:]}")
        results.append(result)
    return results


def run_clients(mount: str, workdir: str, n: int, seconds: float, progress: Progress,
                timeline: List[Tuple[float, int]]) -> List[Optional[dict]]:
    """N clients, started together; their results (None for one that did not finish).
    ``timeline`` gets (seconds since the start, FUSE requests served) samples."""
    sample = max(math.ceil(QUOTES_TO_VERIFY / n), 1)
    outs = [os.path.join(workdir, f"client-{i}.json") for i in range(n)]
    procs: List[subprocess.Popen] = []
    try:
        for i in range(n):
            err = open(os.path.join(workdir, f"client-{i}.stderr"), "wb")
            procs.append(subprocess.Popen(_client_cmd(mount, outs[i], sample), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=err))
            err.close()
        deadline = time.monotonic() + READY_TIMEOUT
        for p in procs:  # each prints "ready" once imported
            ok, _ = with_timeout(p.stdout.readline, max(deadline - time.monotonic(), 0.1))
            if not ok:
                break
        start = time.time()
        until = start + seconds
        for p in procs:
            try:
                p.stdin.write(f"go {until!r}\n".encode())
                p.stdin.close()
            except OSError:  # a client that already died: it counts as not finished
                pass
        end = time.monotonic() + seconds + GRACE
        while time.monotonic() < end:
            running = sum(p.poll() is None for p in procs)
            ok, stats = with_timeout(lambda: read_stats(mount), 5.0)
            requests = stats["requests"]["total"] if ok else None
            progress.update(time.time() - start, requests, running)
            if requests is not None:
                timeline.append((round(time.time() - start, 2), requests))
            if not running:
                break
            time.sleep(0.5)
    finally:
        for p in procs:  # a client still running now is hung: ours to kill
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            p.stdout.close()
        progress.finish()
    return [(_load(out) if p.returncode == 0 else None) for p, out in zip(procs, outs)]


# -- the final reads and quote verification --------------------------------------------------------


@dataclass
class FinalReads:
    report: bytes = b""
    nonce: bytes = b""
    text: bytes = b""
    ccel: bytes = b""
    error: Optional[str] = None


def final_reads(mount: str) -> FinalReads:
    def reads():
        got = report_ioctl(mount, None)
        return FinalReads(got.report, got.nonce, read_to_eof(os.path.join(mount, "eventlog")),
                          read_to_eof(os.path.join(mount, "acpi", "data", "CCEL")))

    ok, value = with_timeout(reads, PROBE_TIMEOUT)
    return value if ok else FinalReads(error=value)


def verify_quotes(samples: List[Tuple[bytes, bytes]], made: int, state: Optional[str], workdir: str) -> check.QuoteCheck:
    if not state:
        return check.QuoteCheck(made, len(samples), 0, skipped="--mount without --state: no PKI to verify against")
    from tdxfs import verify

    pki = os.path.join(workdir, "pki")
    done = subprocess.run([sys.executable, "-m", "tdxfs", "pki", "export", pki, "--state", state],
                          capture_output=True, text=True, timeout=MOUNT_TIMEOUT)
    if done.returncode:
        qc = check.QuoteCheck(made, len(samples), 0)
        qc.rejected.append(f"tdxfs pki export --state {state} failed: {done.stderr.strip()}")
        return qc
    with open(os.path.join(pki, "collateral.json")) as f:
        collateral = f.read()
    with open(os.path.join(pki, "root-ca.der"), "rb") as f:
        root = f.read()
    now = int(time.time())
    return check.check_quotes(samples, made, lambda quote: verify.verify(quote, collateral, root, now).status)


# -- the run ------------------------------------------------------------------------------------------


def _count_lines(mount: str) -> int:
    return read_to_eof(os.path.join(mount, "eventlog")).count(b"\n")


def run(opts: Options) -> int:
    if opts.clients < 1:
        raise TdxfsError("stress: --clients takes a number >= 1")
    if opts.seconds <= 0:
        raise TdxfsError("stress: --seconds takes a positive number")
    own = None
    previous = signal.signal(signal.SIGTERM, _terminate)
    workdir = tempfile.mkdtemp(prefix="tdxfs-stress-clients.")
    try:
        if opts.mount:
            from tdxfs.server.daemon import mounted_fstype

            if mounted_fstype(opts.mount) != "fuse.tdxfs":
                raise TdxfsError(f"stress: {opts.mount} is not a tdxfs mount")
            mount, pid, state = opts.mount, daemon_pid(opts.mount), opts.state
        else:
            own = OwnMount(opts)
            mount = own.start()
            pid, state = own.pid, own.state
        outcome, figures = _stress(opts, mount, pid, state, workdir, own)
        if own is not None and not outcome.ok:
            own.keep = True
    except BaseException:
        if own is not None and own.pid is not None:  # a refused start decided for itself
            own.keep = True
        raise
    finally:
        if own is not None:
            own.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    print_table(figures, outcome)
    if opts.json_path:
        with open(opts.json_path, "w") as f:
            json.dump(figures, f, indent=1)
    return 0 if outcome.ok else 1


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # through the finally clauses: unmount, reap


def _stress(opts: Options, mount: str, pid: int, state: Optional[str], workdir: str, own: Optional[OwnMount]):
    from tdxfs.bench.run import machine

    tally = check.Tally()
    acknowledged: List[Tuple[int, bytes]] = []
    quotes: List[Tuple[bytes, bytes]] = []
    quotes_made = 0

    def take(result: Dict[str, object]) -> None:
        nonlocal quotes_made
        tally.merge(result)
        acknowledged.extend((rtmr, bytes.fromhex(d)) for rtmr, d in result["extends"])
        quotes.extend((bytes.fromhex(i), bytes.fromhex(q)) for i, q in result["quotes"])
        quotes_made += result["quotes_made"]

    for result in warm_up(mount, workdir, opts.clients):
        take(result)
    warm_ops = sum(tally.ops.values())
    fds_before, rss_before = fd_count(pid), rss_kib(pid)
    events_before = _count_lines(mount)
    progress = Progress(opts.seconds)
    print(f"tdxfs stress: {opts.clients} clients for {opts.seconds:g} s on {mount} (daemon pid {pid})",
          file=sys.stderr, flush=True)
    timeline: List[Tuple[float, int]] = []
    results = run_clients(mount, workdir, opts.clients, opts.seconds, progress, timeline)
    phase = check.Tally()
    for result in filter(None, results):
        take(result)
        phase.merge(result)
    wall = max((r["seconds"] for r in results if r), default=opts.seconds)

    alive = process_alive(pid)
    reads = final_reads(mount)
    alive = alive and reads.error is None and process_alive(pid)
    fds_after, rss_after = fd_count(pid), rss_kib(pid)
    qc = verify_quotes(quotes, quotes_made, state, workdir)
    evidence = check.Evidence(
        clients=opts.clients, clients_finished=sum(r is not None for r in results), tally=tally,
        acknowledged=acknowledged, daemon_pid=pid, daemon_alive=alive, final_report=reads.report,
        final_nonce=reads.nonce, log_text=reads.text, log_ccel=reads.ccel, events_before=events_before,
        quotes=qc, race_free=RACE_FREE, racy=RACY, fds=(fds_before, fds_after), rss_kib=(rss_before, rss_after),
        log_tracebacks=own.tracebacks() if own else None)
    outcome = check.evaluate(evidence)
    ops = {k.name: {"label": k.label, "ops": phase.ops[k.name], "ops_per_s": phase.ops[k.name] / wall,
                    "failed": phase.failed[k.name], "foreign_nonce": phase.foreign[k.name]} for k in KINDS}
    total = sum(phase.ops.values())
    figures = {
        "command": opts.command, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(), "clients": opts.clients, "seconds": opts.seconds, "wall_seconds": wall,
        "mount": mount, "own_mount": own is not None, "threads": opts.threads,
        "ops": ops, "total": {"ops": total, "ops_per_s": total / wall, "failed": sum(phase.failed.values())},
        "fuse_requests_timeline": timeline, "warm_up_ops": warm_ops, "errors": tally.errors, "final_reads_error": reads.error,
        "invariants": [{"name": i.name, "value": i.value, "ok": i.ok} for i in outcome.invariants],
        "ok": outcome.ok, **outcome.figures,
    }
    return outcome, figures


def print_table(figures: Dict[str, object], outcome: check.Outcome, stream=sys.stdout) -> None:
    ops = figures["ops"]
    w = max(len(r["label"]) for r in ops.values()) + 2
    print(f"{'operation':<{w}}{'ops':>9}{'ops/s':>9}{'failed':>8}{'foreign nonce':>15}", file=stream)
    for name, r in ops.items():
        print(f"{r['label']:<{w}}{r['ops']:>9}{r['ops_per_s']:>9.1f}{r['failed']:>8}{r['foreign_nonce']:>15}",
              file=stream)
    t = figures["total"]
    print(f"{'total':<{w}}{t['ops']:>9}{t['ops_per_s']:>9.1f}{t['failed']:>8}", file=stream)
    print(f"({figures['clients']} clients, {figures['wall_seconds']:.1f} s)\n", file=stream)
    iw = max(len(i.name) for i in outcome.invariants) + 2
    print(f"{'invariant':<{iw}}{'result':<8}value", file=stream)
    for inv in outcome.invariants:
        print(f"{inv.name:<{iw}}{inv.verdict:<8}{inv.value}", file=stream)
    failed = [i.name for i in outcome.invariants if i.ok is False]
    print("\nevery invariant holds" if not failed else f"\n{len(failed)} invariant(s) FAILED: {'; '.join(failed)}",
          file=stream)
    for error in figures.get("errors") or []:
        print(f"  error: {error}", file=stream)
