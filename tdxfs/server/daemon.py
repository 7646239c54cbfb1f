"""Mount lifecycle: build the TD, mount, serve, daemonize, unmount.

Daemon mode forks once, before any thread exists: the parent waits on a pipe until the
child's FUSE ``init`` says the mount is live, then exits 0 (or non-zero with the child's
reason). Until then the child keeps the caller's stderr, so libfuse's own refusals reach
the terminal; from ``init`` on, its stdout/stderr go to the log file.

Logs: foreground (-f/-d) logs to stderr; a daemon logs to ``--log FILE``
(default /var/log/tdxfs.log), one line per rejected request, each tagged with the
mountpoint and pid.
"""

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from tdxfs.errors import ConfigError
from tdxfs.files.table import Tree
from tdxfs.model import machine
from tdxfs.model.profile import default_profile, load_profile
from tdxfs.model.td import TrustDomain

DEFAULT_LOG = "/var/log/tdxfs.log"
READY_TIMEOUT = 30.0

# FUSE options this filesystem always sets (fuse-notes: direct_io against stale page
# cache reads; default_permissions so the kernel enforces the modes).
FIXED_OPTIONS = {"fsname": "tdxfs", "subtype": "tdxfs", "default_permissions": True, "direct_io": True}
# Options a user may pass with -o, as in other FUSE filesystems.
USER_OPTIONS = {"allow_other", "allow_root", "uid", "gid", "umask", "ro", "rw", "auto_unmount"}


@dataclass
class MountConfig:
    mountpoint: str
    state: Optional[str] = None
    profile: Optional[str] = None
    reset: bool = False
    foreground: bool = False
    debug: bool = False
    log: Optional[str] = None
    threads: bool = False
    options: Dict[str, object] = field(default_factory=dict)


def parse_fuse_options(text: str) -> Dict[str, object]:
    """``-o a,b=c`` as sshfs does it; unknown names are refused here, with the name."""
    options: Dict[str, object] = {}
    for item in filter(None, (text or "").split(",")):
        name, eq, value = item.partition("=")
        if name not in USER_OPTIONS:
            raise ConfigError(f"unknown mount option '{name}' (known: {', '.join(sorted(USER_OPTIONS))})")
        if eq and name not in ("uid", "gid", "umask"):
            raise ConfigError(f"mount option '{name}' takes no value")
        if name == "rw":
            continue
        if name in ("uid", "gid") and not value.isdigit():
            raise ConfigError(f"mount option '{name}' takes a number")
        if name == "umask":
            try:
                if not value.isdigit() or int(value, 8) > 0o777:
                    raise ValueError(value)
            except ValueError:
                raise ConfigError("mount option 'umask' takes an octal number") from None
        options[name] = value if eq else True
    return options


def mounted_fstype(path: str) -> Optional[str]:
    """The filesystem type mounted exactly at ``path`` (works on dead FUSE mounts too)."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            point = parts[4].encode().decode("unicode_escape")
            if point == target:
                found = parts[parts.index("-") + 1]  # the last mount on top wins
    return found


def check_mountpoint(path: str) -> str:
    # autofs is the trigger of x-systemd.automount (or automount(8)): mounting over it is the point
    if mounted_fstype(path) not in (None, "autofs"):
        raise ConfigError(f"{path} is already a mount point (unmount it first: tdxfs umount {path})")
    if not os.path.exists(path):
        raise ConfigError(f"mount point {path} does not exist")
    if not os.path.isdir(path):
        raise ConfigError(f"mount point {path} is not a directory")
    return os.path.abspath(path)


def build_td(cfg: MountConfig):
    """The TD to serve (with its platform, PKI and quoting enclave) and its closer."""
    profile = load_profile(cfg.profile) if cfg.profile else default_profile()
    return machine.build_td(profile, cfg.state, cfg.reset)


def setup_logging(mountpoint: str, stream=None, path: Optional[str] = None, debug: bool = False) -> None:
    handler = logging.FileHandler(path) if path else logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s tdxfs[%(process)d] {mountpoint}: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def serve_mount(cfg: MountConfig, mountpoint: str, td: TrustDomain, on_ready=None) -> None:
    # Imported here: the model and the CLI's other commands need no FUSE binding.
    from tdxfs.server.adapter import operations
    from tdxfs.server.binding import NAME, libfuse_version, serve

    server = {"binding": NAME, "libfuse": libfuse_version(), "pid": str(os.getpid())}
    ops = operations(Tree.for_td(td, server), on_ready=on_ready)
    log = logging.getLogger("tdxfs")
    log.info("serving on %s via %s, libfuse %s", mountpoint, NAME, libfuse_version())
    for notice in td.notices:  # what the start-up has to tell the operator (tdxfs.model.machine)
        log.warning("%s", notice)
    # libfuse2 opens the mountpoint to check it is empty, which would trigger (and wait for)
    # the autofs mount we are replacing; libfuse3 no longer checks.
    over_autofs = {"nonempty": True} if libfuse_version().startswith("2") and \
        mounted_fstype(mountpoint) == "autofs" else {}
    # Single-threaded by default: the GIL serialises handlers anyway and libfuse's thread
    # pool costs ~2x per request. --threads lets a slow request (a quote) overlap others.
    # (libfuse 3.14 warns about its own default max_idle_threads (-1) unless one is given.)
    threading = {"max_idle_threads": 10} if cfg.threads and libfuse_version().startswith("3") else {}
    serve(ops, mountpoint, mounted=lambda: ops.is_ready, foreground=True, nothreads=not cfg.threads, **threading,
          debug=cfg.debug, **FIXED_OPTIONS, **cfg.options, **over_autofs)
    log.info("unmounted %s", mountpoint)


def mount(cfg: MountConfig) -> int:
    """``tdxfs mount``. Returns the exit code; raises ConfigError for refusals at start."""
    mountpoint = check_mountpoint(cfg.mountpoint)
    td, close = build_td(cfg)
    if cfg.foreground or cfg.debug:
        setup_logging(mountpoint, debug=cfg.debug, path=cfg.log)
        try:
            serve_mount(cfg, mountpoint, td)
        finally:
            close()
        return 0
    return _daemonize(cfg, mountpoint, td)


def _daemonize(cfg: MountConfig, mountpoint: str, td: TrustDomain) -> int:
    log_path = cfg.log or DEFAULT_LOG
    try:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError as exc:
        raise ConfigError(f"log file {log_path}: {exc.strerror}") from None
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(ready_r)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)  # stdout to the log now; stderr stays with the caller until ready
        setup_logging(mountpoint, stream=os.fdopen(os.dup(log_fd), "a", buffering=1))

        def ready():
            os.dup2(log_fd, 2)
            os.write(ready_w, b"R")
            os.close(ready_w)

        code = 0
        try:
            serve_mount(cfg, mountpoint, td, on_ready=ready)
        except BaseException as exc:  # report why, then exit non-zero
            logging.getLogger("tdxfs").error("mount failed: %s", exc)
            code = 1
        os._exit(code)

    os.close(ready_w)
    os.close(log_fd)
    got = _read_with_timeout(ready_r, READY_TIMEOUT)
    if got == b"R":
        return 0
    if got is None:  # still not ready: do not leave a half-started daemon behind
        os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    print(f"tdxfs: mount on {mountpoint} failed (see the messages above and {log_path})", file=sys.stderr)
    return 1


def _read_with_timeout(fd: int, timeout: float) -> Optional[bytes]:
    import select

    ready, _, _ = select.select([fd], [], [], timeout)
    data = os.read(fd, 1) if ready else None
    os.close(fd)
    return data


def umount(mountpoint: str, lazy: bool = False) -> int:
    """``tdxfs umount``: also clears a dead mount left by a killed daemon."""
    fstype = mounted_fstype(mountpoint)
    if fstype is None:
        raise ConfigError(f"{mountpoint} is not mounted")
    if fstype != "fuse.tdxfs":
        raise ConfigError(f"{mountpoint} is a {fstype} mount, not tdxfs: not touching it")
    target = os.path.realpath(mountpoint)
    reason = "no fusermount3, fusermount or umount found"
    for cmd in _umount_commands(target, lazy):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError:
            continue
        if done.returncode == 0:
            return 0
        reason = (done.stderr or done.stdout).strip()
        if "busy" in reason.lower() and not lazy:
            raise ConfigError(f"{mountpoint} is busy ({reason}); close the files or use --lazy")
    raise ConfigError(f"could not unmount {mountpoint}: {reason}")


def _umount_commands(target: str, lazy: bool) -> List[List[str]]:
    flag = "-uz" if lazy else "-u"
    return [["fusermount3", flag, target], ["fusermount", flag, target],
            ["umount", *(["-l"] if lazy else []), target]]
