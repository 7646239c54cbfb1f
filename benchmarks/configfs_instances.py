"""Memory and time of leaked configfs-tsm report instances (issue 7, section 4).

A long-running agent that asks for one quote a minute and never removes its instance has
525,600 of them after a year. This script measures what they cost the daemon:

  (a) in process (no mount): Python heap bytes per instance, with tracemalloc, for COUNT
      idle instances (mkdir only) and for USED instances that each made one quote (mkdir,
      64-byte inblob, outblob read, then left alone: the cached quote stays);
  (b) through a real mount, the server in its own process (``python -m tdxfs mount -f``):
      the daemon's VmRSS (/proc/PID/status) before and after COUNT ``os.mkdir`` calls, the
      bytes per instance, the time taken, a full listing of tsm/report, and the same for
      USED instances on a fresh mount. This is the whole daemon: Python objects, libfuse's
      node per path the kernel has looked up (high-level API), allocator overhead. The
      kernel's own memory for those dentries and inodes is not the daemon's; the change of
      the kernel's slab (/proc/meminfo Slab) is shown beside it.

Usage:
  .venv/bin/python benchmarks/configfs_instances.py [--count N] [--used-count M]
        [--no-mount] [--no-inprocess] [--json FILE]
Defaults: --count 600000, --used-count 10000. Needs root (FUSE) for (b).
"""

import argparse
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Dict, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

REPORT = "tsm/report"
MOUNT_TIMEOUT = 30.0


def name_of(i: int) -> str:
    return f"entry{i:010d}"  # as a real client names its instances (15 bytes)


# -- (a) in process -------------------------------------------------------------------------------------


def in_process(count: int, used: int) -> Dict[str, float]:
    from tdxfs.files.tree import Tree
    from tdxfs.model.machine import in_memory_td
    from tdxfs.model.profile import default_profile

    def fresh_tree():
        tree = Tree.for_td(in_memory_td(default_profile()))
        quote_once(tree, "warm-up")  # the first quote's one-time costs (imports, shared dictionary)
        tree.rmdir(f"/{REPORT}/warm-up")
        return tree

    def quote_once(tree, name):
        tree.mkdir(f"/{REPORT}/{name}")
        h = tree.open(f"/{REPORT}/{name}/inblob", os.O_WRONLY)
        h.write(os.urandom(64), 0)
        h.release()
        h = tree.open(f"/{REPORT}/{name}/outblob", os.O_RDONLY)
        assert len(h.read(131072, 0)) > 1024
        h.release()

    def measure(n, make):
        tree = fresh_tree()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        for i in range(n):
            make(tree, name_of(i))
        seconds = time.perf_counter() - t0
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert sum(1 for _ in tree.listdir(f"/{REPORT}")) == n
        return (after - before) / n, seconds

    idle, idle_s = measure(count, lambda tree, name: tree.mkdir(f"/{REPORT}/{name}"))
    out = {"inprocess_idle_count": count, "inprocess_idle_bytes_per_instance": idle,
           "inprocess_idle_seconds_traced": idle_s}
    if used:
        per, used_s = measure(used, quote_once)
        out.update({"inprocess_used_count": used, "inprocess_used_bytes_per_instance": per,
                    "inprocess_used_seconds_traced": used_s})
    return out


# -- (b) through a real mount ---------------------------------------------------------------------------


def fstype_at(path: str) -> Optional[str]:
    """mountinfo read as bytes: a non-UTF-8 mount elsewhere must not break it (issue 8, defect 4)."""
    from tdxfs.server import mountinfo

    return mountinfo.fstype_at(path)


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def slab_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return 0


class Mount:
    """``python -m tdxfs mount -f MNT`` in its own process; always unmounted on exit."""

    def __init__(self, mountpoint: str, log: str):
        self.mountpoint, self.log = mountpoint, log
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "Mount":
        os.makedirs(self.mountpoint, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tdxfs", "mount", "-f", self.mountpoint],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while fstype_at(self.mountpoint) != "fuse.tdxfs":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"tdxfs mount did not come up; see {self.log}")
            time.sleep(0.05)
        return self

    def path(self, *parts: str) -> str:
        return os.path.join(self.mountpoint, *parts)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=600)  # unmounting forgets every inode: can take a while
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if fstype_at(self.mountpoint) is not None:
            subprocess.run(["fusermount3", "-uz", self.mountpoint], capture_output=True)
            if fstype_at(self.mountpoint) is not None:
                subprocess.run(["umount", "-l", self.mountpoint], capture_output=True)


def through_mount(base: str, count: int, used: int) -> Dict[str, float]:
    out: Dict[str, float] = {}
    with Mount(os.path.join(base, "idle"), os.path.join(base, "idle.log")) as m:
        pid = m.proc.pid
        stats = json.loads(open(m.path(".stats"), "rb").read())
        assert str(pid) == str(stats.get("server", {}).get("pid", pid)), "measuring the wrong process"
        os.mkdir(m.path(REPORT, "warm-up"))  # first-use costs of the mkdir path
        os.rmdir(m.path(REPORT, "warm-up"))
        gc.collect()
        rss0, slab0 = status_kib(pid, "VmRSS"), slab_kib()
        t0 = time.perf_counter()
        for i in range(count):
            os.mkdir(m.path(REPORT, name_of(i)))
        seconds = time.perf_counter() - t0
        rss1, slab1 = status_kib(pid, "VmRSS"), slab_kib()
        t1 = time.perf_counter()
        listed = os.listdir(m.path(REPORT))
        list_seconds = time.perf_counter() - t1
        assert len(listed) == count and listed[0] == name_of(count - 1), "listing incomplete"
        del listed
        rss2 = status_kib(pid, "VmRSS")
        out.update({
            "mount_idle_count": count,
            "mount_rss_before_kib": rss0, "mount_rss_after_kib": rss1,
            "mount_idle_bytes_per_instance": (rss1 - rss0) * 1024 / count,
            "mount_mkdir_seconds": seconds, "mount_mkdir_per_second": count / seconds,
            "mount_listdir_seconds": list_seconds, "mount_rss_after_listing_kib": rss2,
            "mount_vmhwm_kib": status_kib(pid, "VmHWM"),
            "kernel_slab_delta_kib": slab1 - slab0,
        })
        t2 = time.perf_counter()
    out["mount_unmount_seconds"] = time.perf_counter() - t2
    if used:
        with Mount(os.path.join(base, "used"), os.path.join(base, "used.log")) as m:
            pid = m.proc.pid

            def quote_once(name: str) -> None:
                os.mkdir(m.path(REPORT, name))
                fd = os.open(m.path(REPORT, name, "inblob"), os.O_WRONLY)
                os.write(fd, os.urandom(64))
                os.close(fd)  # the commit (FLUSH)
                fd = os.open(m.path(REPORT, name, "outblob"), os.O_RDONLY)
                assert len(os.read(fd, 131072)) > 1024
                os.close(fd)

            quote_once("warm-up")
            os.rmdir(m.path(REPORT, "warm-up"))
            rss0 = status_kib(pid, "VmRSS")
            t0 = time.perf_counter()
            for i in range(used):
                quote_once(name_of(i))
            seconds = time.perf_counter() - t0
            rss1 = status_kib(pid, "VmRSS")
            out.update({
                "mount_used_count": used, "mount_used_rss_before_kib": rss0, "mount_used_rss_after_kib": rss1,
                "mount_used_bytes_per_instance": (rss1 - rss0) * 1024 / used,
                "mount_used_seconds": seconds, "mount_used_per_second": used / seconds,
            })
    return out


# -- report ---------------------------------------------------------------------------------------------


ROWS = [
    ("in process, idle: bytes per instance (tracemalloc)", "inprocess_idle_bytes_per_instance", "{:.0f} B",
     "inprocess_idle_count"),
    ("in process, used (one quote cached): bytes per instance", "inprocess_used_bytes_per_instance", "{:.0f} B",
     "inprocess_used_count"),
    ("mount: daemon VmRSS before the mkdirs", "mount_rss_before_kib", "{:,.0f} KiB", None),
    ("mount: daemon VmRSS after the mkdirs", "mount_rss_after_kib", "{:,.0f} KiB", "mount_idle_count"),
    ("mount, idle: daemon bytes per instance (VmRSS delta / N)", "mount_idle_bytes_per_instance", "{:.0f} B",
     "mount_idle_count"),
    ("mount: time for the mkdirs", "mount_mkdir_seconds", "{:.1f} s", "mount_idle_count"),
    ("mount: mkdir rate", "mount_mkdir_per_second", "{:,.0f} /s", None),
    ("mount: os.listdir of tsm/report (all N)", "mount_listdir_seconds", "{:.2f} s", None),
    ("mount: daemon VmRSS after the listing", "mount_rss_after_listing_kib", "{:,.0f} KiB", None),
    ("mount: daemon VmHWM (peak RSS)", "mount_vmhwm_kib", "{:,.0f} KiB", None),
    ("kernel slab growth (dentries, FUSE inodes: not the daemon's)", "kernel_slab_delta_kib", "{:,.0f} KiB", None),
    ("mount: unmount with N instances", "mount_unmount_seconds", "{:.1f} s", None),
    ("mount, used (one quote cached): daemon bytes per instance", "mount_used_bytes_per_instance", "{:.0f} B",
     "mount_used_count"),
    ("mount, used: time (mkdir, inblob, outblob, per instance)", "mount_used_seconds", "{:.1f} s",
     "mount_used_count"),
]


def machine() -> Dict[str, str]:
    from tdxfs.server.binding import NAME, libfuse_version

    return {"python": platform.python_version(), "kernel": platform.release(), "cpus": str(os.cpu_count()),
            "binding": NAME, "libfuse": libfuse_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=600_000, help="idle instances (default 600000)")
    parser.add_argument("--used-count", type=int, default=10_000,
                        help="instances that each make one quote (default 10000; 0: skip)")
    parser.add_argument("--no-mount", action="store_true", help="skip (b), the real mount")
    parser.add_argument("--no-inprocess", action="store_true", help="skip (a), the in-process measurement")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = parser.parse_args()
    if args.count < 1 or args.used_count < 0:
        parser.error("--count must be at least 1 and --used-count at least 0")

    results: Dict[str, object] = {"command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
                                  "machine": machine()}
    if not args.no_inprocess:
        results.update(in_process(args.count, args.used_count))
    if not args.no_mount:
        with tempfile.TemporaryDirectory(prefix="tdxfs-instances-") as base:
            results.update(through_mount(base, args.count, args.used_count))

    print(f"configfs-tsm report instances ({', '.join(f'{k} {v}' for k, v in results['machine'].items())})")
    width = max(len(label) for label, *_ in ROWS)
    for label, key, fmt, count_key in ROWS:
        if key in results:
            n = f"  (N = {results[count_key]:,})" if count_key else ""
            print(f"  {label:<{width}}  {fmt.format(results[key]):>14}{n}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
