"""Mount lifecycle: build the TD, mount, serve, daemonize, unmount.

Daemon mode forks once, before any thread exists: the parent waits on a pipe until the
child's FUSE ``init`` says the mount is live, then exits 0 (or non-zero with the child's
reason). Until then the child keeps the caller's stderr, so libfuse's own refusals reach
the terminal; from ``init`` on, its stdout/stderr go to the log file.

Transports (``MountConfig.transport``, :func:`resolve_transport`): ``kernel``, the default,
is tdxfs's own FUSE protocol server (``tdxfs.server.kernel``: no libfuse, no binding
imported); ``libfuse`` is the mfusepy/fusepy adapter (``tdxfs.server.adapter``), the only
one with a thread pool (``--threads`` implies it). The readiness pipe fires from either
one's "INIT answered" callback.

Logs: foreground (-f/-d) logs to stderr (or ``--log FILE``); a daemon logs to ``--log FILE``
(default /var/log/tdxfs.log), one line per rejected request, each tagged with the
mountpoint and pid. The log is opened by :func:`open_log` only, so a symlink, a file of
another user or a non-file at that path is refused instead of written through.
"""

import errno
import fcntl
import logging
import os
import stat
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from tdxfs.errors import ConfigError, TdxfsError, printable  # one escaping for every message and log line
from tdxfs.files.tree import Tree
from tdxfs.model import machine
from tdxfs.model.profile import profile_or_default
from tdxfs.model.td import TrustDomain
from tdxfs.server import mountinfo

DEFAULT_LOG = "/var/log/tdxfs.log"
LOG_MODE = 0o600  # a new log file's mode
# O_NOFOLLOW: a symlink as the last component is refused (ELOOP), never written through;
# O_NONBLOCK: opening a FIFO cannot hang the daemon (cleared once the file is checked).
_LOG_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
              | os.O_CLOEXEC)
READY_TIMEOUT = 30.0

# FUSE options this filesystem always sets (fuse-notes: direct_io against stale page
# cache reads; default_permissions so the kernel enforces the modes).
FIXED_OPTIONS = {"fsname": "tdxfs", "subtype": "tdxfs", "default_permissions": True, "direct_io": True}
# Options a user may pass with -o, as in other FUSE filesystems.
USER_OPTIONS = {"allow_other", "allow_root", "uid", "gid", "umask", "ro", "rw", "auto_unmount"}
# What serves a mount: tdxfs's own FUSE protocol server (the default) or libfuse through
# the mfusepy/fusepy binding. TDXFS_TRANSPORT sets the default (the test suite's switch).
TRANSPORTS = ("kernel", "libfuse")
DEFAULT_TRANSPORT = "kernel"
TRANSPORT_ENV = "TDXFS_TRANSPORT"


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
    transport: Optional[str] = None  # None: see resolve_transport


def resolve_transport(transport: Optional[str] = None, threads: bool = False) -> str:
    """The transport a mount is served by: the one asked for; else libfuse when ``threads``
    (libfuse's thread pool; the kernel transport is single-threaded); else $TDXFS_TRANSPORT;
    else the kernel transport. ``--transport kernel`` with ``--threads`` is refused."""
    if transport is not None:
        if transport not in TRANSPORTS:
            raise ConfigError(f"unknown transport '{printable(transport)}' (known: {', '.join(TRANSPORTS)})")
        if threads and transport == "kernel":
            raise ConfigError("--threads is libfuse's thread pool; the kernel transport is single-threaded "
                              "(use --transport libfuse, or leave out --threads)")
        return transport
    if threads:
        return "libfuse"
    env = os.environ.get(TRANSPORT_ENV) or DEFAULT_TRANSPORT
    if env not in TRANSPORTS:
        raise ConfigError(f"{TRANSPORT_ENV}={printable(env)}: not a transport (known: {', '.join(TRANSPORTS)})")
    return env


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
    """The filesystem type mounted exactly at ``path`` (works on dead FUSE mounts too);
    mountinfo read as bytes, so any mount point anywhere is read right (docs/reliability.md, defects 4 and 5)."""
    return mountinfo.fstype_at(path)


def check_mountpoint(path: str) -> str:
    shown = printable(path)
    # autofs is the trigger of x-systemd.automount (or automount(8)): mounting over it is the point
    if mounted_fstype(path) not in (None, "autofs"):
        raise ConfigError(f"{shown} is already a mount point (unmount it first: tdxfs umount {shown})")
    if not os.path.exists(path):
        raise ConfigError(f"mount point {shown} does not exist")
    if not os.path.isdir(path):
        raise ConfigError(f"mount point {shown} is not a directory")
    return os.path.abspath(path)


def open_log(path: str) -> int:
    """The log file for appending, as an fd (docs/reliability.md, defect 2): a root daemon must not be
    pointed at another file through its log. Opened O_APPEND|O_CREAT (0600) with O_NOFOLLOW,
    then refused unless it is a regular file owned by this process's user with no other
    hard link (a hard link to a file elsewhere is the other way to point at it). Parent
    directories are resolved as usual: only the file itself is the log's to decide."""
    shown = printable(path)
    try:
        fd = os.open(path, _LOG_FLAGS, LOG_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise ConfigError(f"log file {shown} is a symbolic link; refusing to follow it "
                              "(give the path of the file itself)") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):  # a directory; a FIFO with no reader, a socket
            raise ConfigError(f"log file {shown} is not a regular file; refusing to log to it") from None
        raise ConfigError(f"log file {shown}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"log file {shown} is not a regular file; refusing to log to it")
        if st.st_uid != os.geteuid():
            raise ConfigError(f"log file {shown} is owned by uid {st.st_uid}, not by this daemon's user "
                              f"(uid {os.geteuid()}); refusing to log to it")
        if st.st_nlink != 1:
            raise ConfigError(f"log file {shown} has {st.st_nlink} hard links; refusing to log to it")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def log_stream(fd: int):
    """A line-buffered text stream on ``fd`` (which it owns) that never fails to encode."""
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace")


def setup_logging(mountpoint: str, stream=None, path: Optional[str] = None, debug: bool = False) -> None:
    """Log lines ``TIME tdxfs[PID] MOUNTPOINT: MESSAGE`` to ``stream``, or to the file
    ``path`` (through :func:`open_log`), or to stderr."""
    if path:
        stream = log_stream(open_log(path))
    handler = logging.StreamHandler(stream or sys.stderr)
    prefix = printable(mountpoint).replace("%", "%%")  # the format is %-style
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s tdxfs[%(process)d] {prefix}: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def serve_mount(cfg: MountConfig, mountpoint: str, td: TrustDomain, on_ready=None) -> None:
    """Serve ``td`` at ``mountpoint`` on the configured transport until unmounted or
    stopped by a signal; ``on_ready`` is called once the kernel's INIT is answered."""
    if resolve_transport(cfg.transport, cfg.threads) == "kernel":
        _serve_kernel(cfg, mountpoint, td, on_ready)
    else:
        _serve_libfuse(cfg, mountpoint, td, on_ready)


def _serve_kernel(cfg: MountConfig, mountpoint: str, td: TrustDomain, on_ready=None) -> None:
    # No FUSE binding is imported on this path (the nofuse tox env has none installed).
    from tdxfs.server.kernel.session import serve_kernel

    server = {"binding": "tdxfs.server.kernel", "libfuse": "none", "transport": "kernel", "pid": str(os.getpid())}
    log = logging.getLogger("tdxfs")
    for notice in td.notices:
        log.warning("%s", printable(notice, backslash=False))
    serve_kernel(Tree.for_td(td, server), mountpoint, cfg.options, on_ready=on_ready, debug=cfg.debug)


def _serve_libfuse(cfg: MountConfig, mountpoint: str, td: TrustDomain, on_ready=None) -> None:
    # Imported here: the model, the kernel transport and the CLI's other commands need no FUSE binding.
    from tdxfs.server.adapter import operations
    from tdxfs.server.binding import NAME, libfuse_version, serve

    server = {"binding": NAME, "libfuse": libfuse_version(), "transport": "libfuse", "pid": str(os.getpid())}
    ops = operations(Tree.for_td(td, server), on_ready=on_ready)
    log = logging.getLogger("tdxfs")
    log.info("serving on %s via %s, libfuse %s", printable(mountpoint), NAME, libfuse_version())
    for notice in td.notices:  # what the start-up has to tell the operator (tdxfs.model.machine)
        log.warning("%s", printable(notice, backslash=False))
    # libfuse2 refuses a mountpoint that is not empty, and opening it to check would trigger
    # (and wait for) an autofs mount we are replacing; mounting over a mount is the point
    # here (autofs, or tdxfs run's own mount inside another tdxfs run). libfuse3 never checks.
    over_mount = {"nonempty": True} if libfuse_version().startswith("2") and \
        mounted_fstype(mountpoint) is not None else {}
    # Single-threaded by default: the GIL serialises handlers anyway and libfuse's thread
    # pool costs ~2x per request. --threads lets a slow request (a quote) overlap others.
    # (libfuse 3.14 warns about its own default max_idle_threads (-1) unless one is given.)
    pool = {"max_idle_threads": 10} if cfg.threads and libfuse_version().startswith("3") else {}
    serve(ops, mountpoint, mounted=lambda: ops.is_ready, foreground=True, nothreads=not cfg.threads, **pool,
          debug=cfg.debug, **FIXED_OPTIONS, **cfg.options, **over_mount)
    log.info("unmounted %s", printable(mountpoint))


def mount(cfg: MountConfig) -> int:
    """``tdxfs mount``. Returns the exit code; raises ConfigError for refusals at start."""
    cfg.transport = resolve_transport(cfg.transport, cfg.threads)
    mountpoint = check_mountpoint(cfg.mountpoint)
    foreground = cfg.foreground or cfg.debug
    log_path = cfg.log if foreground else cfg.log or DEFAULT_LOG
    log_fd = open_log(log_path) if log_path else None  # refused before the state is touched
    try:
        td, close = machine.build_td(profile_or_default(cfg.profile), cfg.state, cfg.reset)
    except BaseException:
        if log_fd is not None:
            os.close(log_fd)
        raise
    if foreground:
        setup_logging(mountpoint, stream=log_stream(log_fd) if log_fd is not None else None, debug=cfg.debug)
        try:
            serve_mount(cfg, mountpoint, td)
        finally:
            close()
        return 0
    return _daemonize(cfg, mountpoint, td, close, log_fd, log_path)


def _daemonize(cfg: MountConfig, mountpoint: str, td: TrustDomain, close: machine.Closer, log_fd: int,
               log_path: str) -> int:
    """Fork the daemon; the parent waits until the mount is live. What holds the TD (the
    state directory's lock and files) is the daemon's from the fork on: the parent closes
    its copies at once, so a caller that lives on (mount(8)'s helper, a Python caller)
    holds no lock, and a second mount of the same state is refused by the daemon's lock."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(ready_r)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)  # stdout to the log now; stderr stays with the caller until ready
        setup_logging(mountpoint, stream=log_stream(os.dup(log_fd)))

        done = []

        def ready():
            os.dup2(log_fd, 2)
            os.write(ready_w, b"R")
            os.close(ready_w)
            done.append(True)

        code = 0
        try:
            serve_mount(cfg, mountpoint, td, on_ready=ready)
        except BaseException as exc:  # report why, then exit non-zero
            logging.getLogger("tdxfs").error("mount failed: %s", printable(str(exc), backslash=False))
            if isinstance(exc, TdxfsError) and not done:  # the kernel transport's refusal, to the caller
                # (libfuse prints its own; from ready on, stderr is the log)
                try:
                    os.write(2, f"tdxfs: {printable(exc.reason, backslash=False)}\n".encode(errors="replace"))
                except OSError:
                    pass
            code = 1
        os._exit(code)

    close()  # the child's flock stays: closing one copy of a descriptor does not unlock it
    os.close(ready_w)
    os.close(log_fd)
    got = _read_with_timeout(ready_r, READY_TIMEOUT)
    if got == b"R":
        return 0
    if got is None:  # still not ready: do not leave a half-started daemon behind
        os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    print(f"tdxfs: mount on {printable(mountpoint)} failed (see the messages above and {printable(log_path)})",
          file=sys.stderr)
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
    shown = printable(mountpoint)
    if fstype is None:
        raise ConfigError(f"{shown} is not mounted")
    if fstype != "fuse.tdxfs":
        raise ConfigError(f"{shown} is a {printable(fstype)} mount, not tdxfs: not touching it")
    target = os.path.realpath(mountpoint)
    reason = "no fusermount3, fusermount or umount found"
    for cmd in _umount_commands(target, lazy):
        try:
            done = subprocess.run(cmd, capture_output=True)
        except FileNotFoundError:
            continue
        if done.returncode == 0:
            return 0
        # the tool's message names the path, as bytes: one line, escaped
        reason = printable("; ".join(os.fsdecode(done.stderr or done.stdout).strip().splitlines()))
        if "busy" in reason.lower() and not lazy:
            raise ConfigError(f"{shown} is busy ({reason}); close the files or use --lazy")
    raise ConfigError(f"could not unmount {shown}: {reason}")


def _umount_commands(target: str, lazy: bool) -> List[List[str]]:
    flag = "-uz" if lazy else "-u"
    return [["fusermount3", flag, target], ["fusermount", flag, target],
            ["umount", *(["-l"] if lazy else []), target]]
