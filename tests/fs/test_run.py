"""``tdxfs run`` and ``tdxfs shell`` (issue 7, section 3), through the command line.

Every case runs real commands inside ``python -m tdxfs run … -- sh -c '…'`` in a child
process with a timeout (subprocess kills ``tdxfs run`` on expiry, and its daemon and
COMMAND die with it). The ``host`` fixture checks after every test that the host is as
it was: no mount of ours in this process's /proc/self/mountinfo, the same entries in
/dev and the /sys directories the run adds to, no /dev/tdx_guest, no
/sys/kernel/config/tsm.
"""

import hashlib
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tdxfs.server import mountinfo
from tests import fsclient
from tests.fsclient import slurp
from tests.mounting import COMMAND_TIMEOUT, Mounted

RTMR3_AT = 864
# The directories tdxfs run adds entries to, and what each gains inside.
ADDED = {
    "/dev": {"tdx_guest", "tdxfs"},
    "/sys/kernel": {"config"},
    "/sys/devices/virtual/misc": {"tdx_guest"},
    "/sys/class/misc": {"tdx_guest"},
    "/sys/firmware/acpi/tables": {"CCEL"},
    "/sys/firmware/acpi/tables/data": {"CCEL"},
}
GUEST_PATHS = ["/dev/tdx_guest", "/dev/tdxfs", "/sys/kernel/config/tsm", "/sys/class/misc/tdx_guest",
               "/sys/devices/virtual/misc/tdx_guest", "/sys/firmware/acpi/tables/CCEL",
               "/sys/firmware/acpi/tables/data/CCEL"]


# -- helpers ------------------------------------------------------------------------------------


def mounts():
    """(mount point, type, source) of every mount here; read as bytes (issue 8, defect 4)."""
    return [(os.fsdecode(m.mount_point), m.fstype, os.fsdecode(m.source)) for m in mountinfo.mounts()]


def listing(path):
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return None


def host_state():
    return {d: listing(d) for d in ADDED}, {p: os.path.lexists(p) for p in GUEST_PATHS}


@pytest.fixture(autouse=True)
def host():
    """The host before the test; after it, nothing of tdxfs run's may be left on it."""
    before = host_state()
    assert not any(before[1].values()), f"this machine already has guest paths: {before[1]}"
    yield before
    leaked = [m for m in mounts() if m[2] == "tdxfs-run" or m[0] in GUEST_PATHS
              or any(m[0].startswith(p + "/") for p in GUEST_PATHS) or m[0] == "/dev/tdxfs"]
    assert leaked == [], f"mounts left on the host: {leaked}"
    assert host_state() == before


def tdxfs_run(tmp_path, *args, script=None, cmd="run", **kw) -> subprocess.CompletedProcess:
    """``tdxfs run --log LOG ARGS [-- sh -c SCRIPT]``; output as text."""
    argv = [sys.executable, "-m", "tdxfs", cmd, *args]
    if "--mount" not in args:
        argv[4:4] = ["--log", str(tmp_path / "daemon.log")]
    if script is not None:
        argv += ["--", "sh", "-c", script]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, **kw)
    log = tmp_path / "daemon.log"
    if log.exists():
        assert "Traceback" not in log.read_text(), log.read_text()
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done


def refused(done, status, *words):
    assert done.returncode == status, done
    assert done.stderr.startswith("tdxfs: ") and done.stderr.count("\n") == 1, f"one line: {done.stderr!r}"
    for word in words:
        assert word in done.stderr, (word, done.stderr)


def lines_of(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, timeout: float = COMMAND_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def children(pid: int):
    """{child pid: comm} of ``pid``."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = [int(p) for p in f.read().split()]
    out = {}
    for kid in kids:
        try:
            with open(f"/proc/{kid}/comm") as f:
                out[kid] = f.read().strip()
        except FileNotFoundError:
            pass
    return out


def default_sigint() -> None:
    """SIGINT back to its default in a child, as a shell starts a job from a terminal. A test
    run that ignores SIGINT (under nohup, or a runner's background job) passes the ignore on,
    and a shell cannot trap a signal that was ignored when it started: the tests of ^C and
    SIGINT would wait for an interrupt that can never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Started:
    """A ``tdxfs run`` in the background; ``stop`` kills what is left of it."""

    def __init__(self, tmp_path, script, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tdxfs", "run", "--log", str(tmp_path / "daemon.log"), *args,
             "--", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=default_sigint)
        self.pids = []

    def wait_line(self, want: str) -> str:
        line = self.proc.stdout.readline()  # the script prints its first line when ready
        assert line.strip() == want, (line, self.proc.poll())
        self.pids = list(children(self.proc.pid))
        return line

    def stop(self):
        for pid in [self.proc.pid, *self.pids]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=COMMAND_TIMEOUT)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()
        outlived = [pid for pid in self.pids if not wait_gone(pid)]
        for pid in outlived:  # killed too, so the assertion below leaks nothing
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not outlived, f"pids {outlived} outlived tdxfs run"


@pytest.fixture
def started(tmp_path):
    runs = []

    def start(script, *args):
        runs.append(Started(tmp_path, script, *args))
        return runs[-1]

    yield start
    failures = []
    for r in runs:  # every run stopped, even when stopping one fails (issue 8, defect 12)
        try:
            r.stop()
        except BaseException as exc:  # noqa: B902 - re-raised once all are stopped
            failures.append(exc)
    if failures:
        raise failures[0]


# -- the guest's paths -----------------------------------------------------------------------------

IOCTL_CLIENT = (
    "from tdxfs.client.ioctl import get_report0; import sys; "
    "r = get_report0('/dev/tdx_guest', bytes(range(64))); "
    "sys.stdout.write(f'len={len(r)}\\nreportdata={r[128:192].hex()}\\nrtmr3={r[864:912].hex()}\\n')"
)


def test_ioctl_on_dev_tdx_guest(tmp_path):
    ext = hashlib.sha384(b"run").digest()
    script = (f"printf '{ext.hex()}' > $TDXFS_MOUNT/rtmr3 && "
              f"{shlex.quote(sys.executable)} -c {shlex.quote(IOCTL_CLIENT)} && echo mount=$TDXFS_MOUNT")
    out = lines_of(ok(tdxfs_run(tmp_path, script=script)).stdout)
    assert out["len"] == "1024"
    assert out["reportdata"] == bytes(range(64)).hex()
    assert out["rtmr3"] == hashlib.sha384(bytes(48) + ext).hexdigest()
    assert out["mount"] == "/dev/tdxfs"


def test_configfs_tsm_report(tmp_path):
    r = "/sys/kernel/config/tsm/report"
    script = (f"mkdir {r}/q0 && head -c 64 /dev/zero > {r}/q0/inblob && "
              f"echo provider=$(cat {r}/q0/provider) && echo generation=$(cat {r}/q0/generation) && "
              f"echo outblob=$(cat {r}/q0/outblob | wc -c) && rmdir {r}/q0 && echo left=$(ls {r} | wc -l) && "
              "echo tsm=$(ls /sys/kernel/config/tsm) && "
              "if [ -e /sys/kernel/config/tsm/rtmrs ]; then echo rtmrs=present; else echo rtmrs=absent; fi")
    out = lines_of(ok(tdxfs_run(tmp_path, script=script)).stdout)
    assert out["provider"] == "tdx_guest"
    assert out["generation"] == "1"
    assert int(out["outblob"]) > 1000  # a quote
    assert out["left"] == "0"
    assert out["tsm"] == "report"
    assert out["rtmrs"] == "absent"


def test_measurements_and_class_link(tmp_path):
    ext = hashlib.sha384(b"tsm-mr").digest()
    m = "/sys/devices/virtual/misc/tdx_guest/measurements"
    script = (f"printf {ext.hex()} | xxd -r -p | dd of='{m}/rtmr3:sha384' bs=48 count=1 status=none && "
              f"echo via_dev=$(xxd -p -c 48 '{m}/rtmr3:sha384') && "
              "echo via_class=$(xxd -p -c 48 '/sys/class/misc/tdx_guest/measurements/rtmr3:sha384') && "
              "echo link=$(readlink /sys/class/misc/tdx_guest) && echo root=$(cat $TDXFS_MOUNT/rtmr3)")
    out = lines_of(ok(tdxfs_run(tmp_path, script=script)).stdout)
    want = hashlib.sha384(bytes(48) + ext).hexdigest()
    assert out["via_dev"] == out["via_class"] == out["root"] == want
    assert out["link"] == "../../devices/virtual/misc/tdx_guest"


def test_ccel_tables(tmp_path):
    t = "/sys/firmware/acpi/tables"
    script = (f"echo sig=$(head -c 4 {t}/CCEL) && "
              f"cmp {t}/CCEL $TDXFS_MOUNT/acpi/CCEL && cmp {t}/data/CCEL $TDXFS_MOUNT/acpi/data/CCEL && echo same=1")
    out = lines_of(ok(tdxfs_run(tmp_path, script=script)).stdout)
    assert out["sig"] == "CCEL" and out["same"] == "1"


def test_siblings_stay_visible(tmp_path, host):
    dirs = list(ADDED) + ["/sys/kernel/mm", "/sys/firmware", "/dev/pts", "/dev/shm"]
    script = "; ".join(f"echo {d}=$(ls -A {d} | tr '\\n' ' ')" for d in dirs)
    script += ("; echo null=$(echo x > /dev/null && echo ok); echo shm=$(echo y > /dev/shm/tdxfs-run-test && "
               "cat /dev/shm/tdxfs-run-test && rm /dev/shm/tdxfs-run-test)"
               "; echo pts=$(stat -f -c %T /dev/pts); echo fuse=$(cat /sys/class/misc/fuse/dev)"
               "; echo apic=$(od -An -tx1 /sys/firmware/acpi/tables/APIC | tr -d ' \\n')"
               "; echo sysw=$(touch /sys/kernel/newfile 2>/dev/null && echo yes || echo no)")
    out = lines_of(ok(tdxfs_run(tmp_path, script=script)).stdout)
    for d in dirs:
        inside = set(out[d].split())
        outside = listing(d)
        if d == "/dev/pts":  # the pty entries come and go with terminals
            assert {"ptmx"} <= inside, inside
            continue
        assert outside <= inside, (d, outside - inside)
        assert inside - outside == ADDED.get(d, set()), (d, inside - outside)
    assert out["null"] == "ok" and out["shm"] == "y"
    assert out["pts"] == "devpts"
    assert out["fuse"] == slurp("/sys/class/misc/fuse/dev").decode().strip()
    assert out["apic"] == slurp("/sys/firmware/acpi/tables/APIC").hex()
    assert out["sysw"] == "no", "the placed sysfs directories are read-only, as sysfs is"


def test_with_configfs_present(tmp_path):
    """A kernel with configfs: /sys/kernel/config exists, with other subsystems in it.
    Simulated in a private namespace of the test with tmpfs (this kernel has no configfs)."""
    run = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "tdxfs", "run", "--log", str(tmp_path / "d.log")])
    r = "/sys/kernel/config/tsm/report"
    inner = (f"mkdir {r}/q && head -c 64 /dev/zero > {r}/q/inblob && echo outblob=$(cat {r}/q/outblob | wc -c); "
             "echo config=$(ls /sys/kernel/config | tr '\\n' ' '); echo tsm=$(ls /sys/kernel/config/tsm); "
             "echo mm=$(ls /sys/kernel | tr '\\n' ' ')")
    outer = ("mount -t tmpfs sim /sys/kernel && mkdir /sys/kernel/config /sys/kernel/mm && "
             "mount -t tmpfs configfs-sim /sys/kernel/config && mkdir /sys/kernel/config/usb_gadget && "
             f"{run} -- sh -c {shlex.quote(inner)} && echo after=$(ls /sys/kernel/config | tr '\\n' ' ') && "
             "echo mounts_after=$(grep -c -e tdxfs-run -e ' /dev/tdx' /proc/self/mountinfo)")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", outer],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    out = lines_of(ok(done).stdout)
    assert int(out["outblob"]) > 1000
    assert set(out["config"].split()) == {"usb_gadget", "tsm"}
    assert out["tsm"] == "report"
    assert set(out["mm"].split()) == {"config", "mm"}
    assert out["after"].split() == ["usb_gadget"], "the test's own namespace is untouched"
    assert out["mounts_after"] == "0"


# -- exit status and signals ----------------------------------------------------------------------


@pytest.mark.parametrize("script,status", [("true", 0), ("exit 3", 3), ("kill -TERM $$", 128 + 15),
                                           ("kill -KILL $$", 128 + 9)],
                         ids=["0", "3", "SIGTERM", "SIGKILL"])
def test_exit_status(tmp_path, script, status):
    # COMMAND says which processes share its parent: the daemon must be gone afterwards.
    report = "for p in $(cat /proc/$PPID/task/$PPID/children); do echo $p=$(cat /proc/$p/comm); done; "
    done = tdxfs_run(tmp_path, script=report + script)
    assert done.returncode == status, done
    daemons = [int(pid) for pid, comm in lines_of(done.stdout).items() if comm == "tdxfs-daemon"]
    assert len(daemons) == 1, done.stdout
    assert not alive(daemons[0]), "the daemon is gone when tdxfs run returns"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_reach_command(tmp_path, started, sig):
    run = started(f"trap 'echo got {sig.name}; exit 7' {sig.name[3:]}; echo ready; "
                  "while :; do sleep 0.05; done")
    run.wait_line("ready")
    run.proc.send_signal(sig)
    assert run.proc.wait(timeout=COMMAND_TIMEOUT) == 7
    assert run.proc.stdout.read().strip() == f"got {sig.name}"
    for pid in run.pids:
        assert wait_gone(pid)


def test_kill9_leaves_no_mount_and_no_daemon(tmp_path, started):
    run = started("echo ready; exec sleep 60")
    run.wait_line("ready")
    comms = children(run.proc.pid)
    assert len(comms) == 2 and "tdxfs-daemon" in comms.values(), comms  # the daemon and COMMAND
    os.kill(run.proc.pid, signal.SIGKILL)
    assert run.proc.wait(timeout=COMMAND_TIMEOUT) == -signal.SIGKILL
    for pid in comms:
        assert wait_gone(pid), f"{comms[pid]} ({pid}) outlived tdxfs run"


# -- refusals ------------------------------------------------------------------------------------


def test_command_not_found(tmp_path):
    refused(tdxfs_run(tmp_path, "--", "tdxfs-no-such-command"), 127, "tdxfs-no-such-command", "not found")
    refused(tdxfs_run(tmp_path, "--", str(tmp_path / "nothere")), 127, "No such file")


def test_command_not_executable(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    refused(tdxfs_run(tmp_path, "--", str(script)), 126, str(script), "not executable")
    refused(tdxfs_run(tmp_path, "--", str(tmp_path)), 126, "directory")


def test_no_command(tmp_path):
    refused(tdxfs_run(tmp_path), 125, "COMMAND")


PRIVILEGES = {
    "nobody": ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"],
    "root-without-cap-sys-admin": ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"],
}


@pytest.mark.parametrize("who", sorted(PRIVILEGES))
def test_refused_without_cap_sys_admin(tmp_path, who):
    if who == "nobody" and not fsclient.nobody_runs_this_python(os.getcwd()):
        pytest.skip("user nobody cannot run this Python environment from this checkout")
    done = subprocess.run([*PRIVILEGES[who], sys.executable, "-m", "tdxfs", "run", "--", "true"],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT, cwd=os.getcwd())
    refused(done, 125, "CAP_SYS_ADMIN")


def test_refused_without_dev_fuse(tmp_path):
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "tdxfs", "run", "--", "true"])
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f"mount -t tmpfs nofuse /dev && exec {cmd}"],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    refused(done, 125, "/dev/fuse")


def test_bad_profile_refused(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text('mrowner = "0011"\n')
    refused(tdxfs_run(tmp_path, "--profile", str(profile), script="echo ran"), 125, "mrowner")


# -- --mount DIR ----------------------------------------------------------------------------------


def test_with_a_running_mount(tmp_path):
    ext = hashlib.sha384(b"shared").digest()
    with Mounted(tmp_path / "mnt") as m:
        script = (f"echo mount=$TDXFS_MOUNT; printf '{ext.hex()}' > $TDXFS_MOUNT/rtmr3 && "
                  f"{shlex.quote(sys.executable)} -c {shlex.quote(IOCTL_CLIENT)}; "
                  "echo tsm=$(ls /sys/kernel/config/tsm); ls /dev/tdxfs 2>/dev/null || echo owndir=absent")
        out = lines_of(ok(tdxfs_run(tmp_path, "--mount", m.mountpoint, script=script)).stdout)
        assert out["mount"] == m.mountpoint
        assert out["rtmr3"] == hashlib.sha384(bytes(48) + ext).hexdigest()
        assert out["tsm"] == "report" and out["owndir"] == "absent"
        # the same TD: the extend made inside is the mount's
        assert slurp(m.path("rtmr3")).strip().decode() == out["rtmr3"]
        refused(tdxfs_run(tmp_path, "--mount", m.mountpoint, "--state", str(tmp_path / "st"), script="true"),
                125, "--state")
        assert m.proc.poll() is None, "the running mount's daemon is left alone"


def test_mount_dir_must_be_tdxfs(tmp_path):
    refused(tdxfs_run(tmp_path, "--mount", str(tmp_path), script="true"), 125, str(tmp_path), "not a tdxfs mount")


# -- own mount options, tdxfs shell ---------------------------------------------------------------


def test_state_is_kept_across_runs(tmp_path):
    st = str(tmp_path / "state")
    ext = hashlib.sha384(b"durable").digest()
    ok(tdxfs_run(tmp_path, "--state", st, script=f"printf '{ext.hex()}' > $TDXFS_MOUNT/rtmr3"))
    out = lines_of(ok(tdxfs_run(tmp_path, "--state", st, script="echo rtmr3=$(cat $TDXFS_MOUNT/rtmr3)")).stdout)
    assert out["rtmr3"] == hashlib.sha384(bytes(48) + ext).hexdigest()


def test_shell(tmp_path):
    script = "echo mount=$TDXFS_MOUNT; test -e /dev/tdx_guest && echo dev=1; exit 5\n"
    done = tdxfs_run(tmp_path, cmd="shell", input=script, env={**os.environ, "SHELL": "/bin/sh"})
    assert done.returncode == 5, done
    out = lines_of(done.stdout)
    assert out["mount"] == "/dev/tdxfs" and out["dev"] == "1"


def _read_until(fd: int, marker: bytes, seen: bytearray) -> None:
    import select

    deadline = time.monotonic() + COMMAND_TIMEOUT
    while marker not in seen:
        assert time.monotonic() < deadline, f"no {marker!r} in {bytes(seen)!r}"
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the terminal's other side is gone
                chunk = b""
            assert chunk, f"EOF before {marker!r} in {bytes(seen)!r}"
            seen += chunk


def _pid_with_comm(parent: int, comm: str) -> bool:
    return any(name == comm or _pid_with_comm(kid, comm) for kid, name in children(parent).items())


def test_shell_on_a_terminal_survives_ctrl_c(tmp_path):
    """^C on the terminal interrupts the shell's job, not the shell and not the mount."""
    import pty

    env = {**os.environ, "SHELL": "/bin/sh", "PS1": "tdxfs-test$ ", "ENV": ""}
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child execs at once
        default_sigint()
        os.execve(sys.executable, [sys.executable, "-m", "tdxfs", "shell", "--log", str(tmp_path / "daemon.log")], env)
    try:
        seen = bytearray()
        _read_until(fd, b"tdxfs-test$ ", seen)
        os.write(fd, b"sleep 60\n")
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while not _pid_with_comm(pid, "sleep"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        del seen[:]
        os.write(fd, b"\x03")
        _read_until(fd, b"tdxfs-test$ ", seen)
        os.write(fd, b"echo alive=$(cat $TDXFS_MOUNT/rtmr3 | wc -c); exit 4\n")
        _read_until(fd, b"alive=97", seen)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 4
    finally:
        os.close(fd)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_nested_run(tmp_path):
    """tdxfs run inside tdxfs run: the inner one's own mount at the same path, over the outer's."""
    inner = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "tdxfs", "run", "--log", str(tmp_path / "i.log")])
    script = (f"printf %096d 1 > /dev/tdxfs/rtmr3; {inner} -- sh -c 'echo inner=$(cat $TDXFS_MOUNT/rtmr3)'; "
              "echo outer=$(cat $TDXFS_MOUNT/rtmr3)")
    out = lines_of(ok(tdxfs_run(tmp_path, script=script)).stdout)
    assert out["inner"] == "0" * 96, "the inner run has a fresh TD"
    assert out["outer"] == hashlib.sha384(bytes(48) + bytes.fromhex("%096d" % 1)).hexdigest()
