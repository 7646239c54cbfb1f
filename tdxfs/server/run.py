"""``tdxfs run`` and ``tdxfs shell``: COMMAND where a TDX guest's paths are tdxfs's.

One process, three roles after :func:`run` has unshared the mount namespace:

- ``tdxfs run`` itself (in the new namespace): places the guest's paths, starts
  COMMAND, forwards signals to it, and on its exit stops the daemon and returns its
  status (a death by signal N as 128+N, as shells report it);
- the daemon (its own mount only): a forked child that serves the FUSE mount at
  :data:`OWN_MOUNT` inside the namespace — a FUSE server must live where it is mounted —
  in its own session (a terminal's ^C is not for it) and with PR_SET_PDEATHSIG, so a
  ``kill -9`` of ``tdxfs run`` takes it along;
- COMMAND, exec'd in a forked child with TDXFS_MOUNT set, also killed by
  PR_SET_PDEATHSIG if ``tdxfs run`` is.

The namespace is private from the first mount on, so the host never sees any of it, and
it ends with its last process: no mount can be left behind.
"""

import logging
import os
import select
import signal
import stat
import sys
from typing import List, Optional, Tuple

from tdxfs.errors import CommandNotExecutable, CommandNotFound, ConfigError, NotPrivileged, TdxfsError, printable
from tdxfs.server import namespace as ns

OWN_MOUNT = "/dev/tdxfs"  # where tdxfs run's own mount is, inside its namespace
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# Sent on to COMMAND. A terminal's ^C/^\ reach COMMAND directly (same process group):
# those are not sent a second time.
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
SI_KERNEL = 0x80  # si_code of a signal the kernel sent (a terminal's ^C)

log = logging.getLogger("tdxfs")


def resolve_command(name: str, path_env: Optional[str]) -> str:
    """COMMAND's executable, searched as a shell does; 127 when missing, 126 when not executable."""
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name) for d in (path_env or os.defpath).split(":")]
    unusable = None
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        if unusable is None and os.path.exists(path):
            unusable = path
    if unusable is not None:
        why = "is a directory" if os.path.isdir(unusable) else "permission denied (not executable)"
        raise CommandNotExecutable(f"{name}: {why}")
    raise CommandNotFound(f"{name}: {'No such file or directory' if '/' in name else 'command not found'}")


def check_privileges(own_mount: bool) -> None:
    if not ns.effective_capability(ns.CAP_SYS_ADMIN):
        raise NotPrivileged("tdxfs run needs root (CAP_SYS_ADMIN) to make a mount namespace")
    if own_mount and not (os.path.exists("/dev/fuse") and stat.S_ISCHR(os.stat("/dev/fuse").st_mode)):
        raise ConfigError("no /dev/fuse: load the fuse module (modprobe fuse), or pass --mount DIR of a running mount")


def check_running_mount(path: str) -> str:
    from tdxfs.server.daemon import mounted_fstype

    fstype = mounted_fstype(path)
    shown = printable(path)
    if fstype != "fuse.tdxfs":
        what = "not a mount point" if fstype is None else f"a {printable(fstype)} mount"
        raise ConfigError(f"--mount {shown}: not a tdxfs mount ({what})")
    try:
        os.stat(os.path.join(path, "tdx_guest"))
    except OSError as exc:
        raise ConfigError(f"--mount {shown}: {exc.strerror} (a dead mount? tdxfs umount {shown})") from None
    return os.path.realpath(path)


def run(command: List[str], cfg=None, mount_dir: Optional[str] = None) -> int:
    """Run COMMAND with the guest's paths from ``mount_dir``, or from a mount of our own
    made with ``cfg`` (a daemon MountConfig). Returns COMMAND's exit status."""
    if not command:
        raise ConfigError("no COMMAND: tdxfs run [options] -- COMMAND [ARGS...] (tdxfs shell for a shell)")
    check_privileges(own_mount=mount_dir is None)
    if mount_dir is not None:
        mount_dir = check_running_mount(mount_dir)
    executable = resolve_command(command[0], os.environ.get("PATH"))
    # From here on a ^C before COMMAND starts ends tdxfs run quietly; the daemon follows it.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    daemon = _Daemon(cfg) if mount_dir is None else None  # builds the TD: refusals come before the namespace
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    ns.unshare_mounts()
    placer = ns.Placer()
    try:
        if daemon is not None:
            try:
                placer.directory(os.path.dirname(OWN_MOUNT))
                if not os.path.lexists(OWN_MOUNT):  # it does inside another tdxfs run: mount over it
                    os.mkdir(OWN_MOUNT, 0o755)
            except OSError as exc:
                raise TdxfsError(f"cannot make {OWN_MOUNT}: {exc.strerror}") from None
            daemon.start()
            mount_dir = OWN_MOUNT
        ns.place_guest(placer, mount_dir)
        env = {**os.environ, "TDXFS_MOUNT": mount_dir}
        return _run_command(executable, command, env, daemon)
    finally:
        if daemon is not None:
            daemon.stop()
        # Signals that came after COMMAND's end are tdxfs run's own, delivered now.
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class _Daemon:
    """The FUSE server of tdxfs run's own mount, a child process in the namespace."""

    def __init__(self, cfg):
        from tdxfs.model import machine
        from tdxfs.model.profile import profile_or_default
        from tdxfs.server import daemon

        self.cfg = cfg
        self.log_path = cfg.log or daemon.DEFAULT_LOG
        self.log_fd = daemon.open_log(self.log_path)  # O_NOFOLLOW, ours, a regular file (reliability defect 2)
        try:
            self.td, self.close = machine.build_td(profile_or_default(cfg.profile), cfg.state, cfg.reset)
        except BaseException:
            os.close(self.log_fd)
            raise
        self.pid = 0

    def start(self) -> None:
        ready_r, ready_w = os.pipe()
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(ready_r)
            self._serve(parent, ready_w)  # never returns
        self.close()  # the state directory's lock is the daemon's alone (its flock stays)
        os.close(ready_w)
        os.close(self.log_fd)
        got = _read_all(ready_r, READY_TIMEOUT)
        if got == b"R":
            return
        if got is None:
            raise TdxfsError(f"the mount was not ready after {READY_TIMEOUT:.0f} s (see {printable(self.log_path)})")
        reason = printable(got[1:].decode(errors="replace"), backslash=False) or \
            f"the daemon exited (see {printable(self.log_path)})"
        raise TdxfsError(f"mount failed: {reason}")

    def _serve(self, parent: int, ready_w: int) -> None:
        from tdxfs.server import daemon

        code = 1
        try:
            ns.die_with_parent(parent, signal.SIGKILL)
            ns.set_process_name("tdxfs-daemon")
            os.setsid()  # a terminal's signals are for COMMAND, not for the daemon
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(self.log_fd, 1)  # stderr stays the caller's until ready: libfuse's refusals
            daemon.setup_logging(OWN_MOUNT, stream=daemon.log_stream(os.dup(self.log_fd)))

            def ready():
                os.dup2(self.log_fd, 2)
                os.write(ready_w, b"R")

            daemon.serve_mount(self.cfg, OWN_MOUNT, self.td, on_ready=ready)
            code = 0
        except BaseException as exc:  # tell tdxfs run why, then exit non-zero
            logging.getLogger("tdxfs").error("mount failed: %s", printable(str(exc), backslash=False))
            try:
                os.write(ready_w, b"E" + str(getattr(exc, "reason", exc)).encode()[:4000])
            except OSError:
                pass
        finally:
            self.close()
        os._exit(code)

    def stop(self) -> None:
        """SIGTERM (the daemon unmounts and exits), SIGKILL if it has not after STOP_TIMEOUT."""
        self.close()  # if start() was never reached (closing twice is a no-op)
        if not self.pid:
            return
        if _reap(self.pid, 0) is None:
            os.kill(self.pid, signal.SIGTERM)
            if _reap(self.pid, STOP_TIMEOUT) is None:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        self.pid = 0


def _read_all(fd: int, timeout: float) -> Optional[bytes]:
    """The daemon's answer: b"R", b"E<reason>", or b"" when it died; None on timeout."""
    data = b""
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            data += chunk
            if not chunk or data == b"R":
                return data
    finally:
        os.close(fd)


def _reap(pid: int, timeout: float) -> Optional[int]:
    """Wait up to ``timeout`` seconds for child ``pid``; its wait status, or None."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        return status
    if timeout <= 0:
        return None
    pidfd = os.pidfd_open(pid)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            return None
    finally:
        os.close(pidfd)
    return os.waitpid(pid, 0)[1]


def exit_status(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _run_command(executable: str, argv: List[str], env: dict, daemon: Optional[_Daemon]) -> int:
    """Start COMMAND and wait for it, forwarding signals; leaves them blocked (run() restores)."""
    waited = set(FORWARDED) | {signal.SIGCHLD}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _exec_command(parent, executable, argv, env, old_mask)
    daemon_pid = daemon.pid if daemon else 0
    while True:
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            _forward(pid, info)
            continue
        for child, status in _reaped():
            if child == pid:
                return exit_status(status)
            if child == daemon_pid:
                daemon.pid = daemon_pid = 0
                print(f"tdxfs: the mount's daemon exited ({_describe(status)}); see {printable(daemon.log_path)}",
                      file=sys.stderr)


def _reaped() -> List[Tuple[int, int]]:
    out = []
    while True:
        try:
            child, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if not child:
            return out
        out.append((child, status))


def _forward(pid: int, info) -> None:
    if info.si_code == SI_KERNEL:  # from the terminal: COMMAND has it too if it shares our group
        try:
            if os.getpgid(pid) == os.getpgrp():
                return
        except ProcessLookupError:
            return
    try:
        os.kill(pid, info.si_signo)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"status {code}"


def _exec_command(parent: int, executable: str, argv: List[str], env: dict, mask) -> None:
    """In the forked child: COMMAND as the caller would have started it, or 126/127."""
    try:
        ns.die_with_parent(parent, signal.SIGKILL)
        # Python ignores these; an exec'd program expects the defaults.
        for signo in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signo, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.execve(executable, argv, env)
    except OSError as exc:
        os.write(2, f"tdxfs: {argv[0]}: {exc.strerror}\n".encode())
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)
    except BaseException:
        os._exit(126)
