"""Issue 8, section 2: secrets stay secret, and the symlink attacks of defects 1-2 are refused.

The secrets are what a ``--state`` directory keeps: the 32-byte platform secret (and the
MAC key derived from it), and the private keys in ``platform-pki.json`` (root CA, PCK
Platform CA, PCK, TCB signing, and the QE's attestation key). None of them may appear, in
any of the forms below, in

- any file of a mount (every file read whole, a configfs instance's outblob, the CCEL views,
  the ioctl node's GET_REPORT0 and VERIFY_REPORT answers), nor in what ``tdxfs pki export``
  writes for relying parties;
- any line of a daemon's log, after refusals of every kind were provoked (at info level
  through the daemonized ``tdxfs mount --log``, and with ``-d``: debug lines and libfuse's
  own trace);
- any message a tdxfs command prints when given bad arguments (each subcommand, and
  ``mount.fuse.tdxfs``), including ones pointed at the state files themselves and at
  corrupt copies of them;
- ``/proc/PID/cmdline`` and ``/proc/PID/environ`` of a daemon, and of ``tdxfs run`` and
  every process under it (its daemon, the command).

Forms, derived from the state files with ``cryptography``: the raw bytes (the private
scalar of a key, 32 bytes big-endian), and each half of them; hex, lower and upper case;
base64 and base64url at the three byte alignments a longer stream may put them in; Python's
``repr`` and ``\\xNN`` escapes (what a log line or an error message would show of raw bytes);
the scalar in decimal; PKCS#8 and SEC1 (``EC PRIVATE KEY``) as PEM and DER, the DER in hex
and unwrapped base64, and each PEM line that carries bits of the scalar.

Then one end-to-end test per symlink attack of defects 1 and 2, through the CLI, as an
unprivileged user would prepare it (``chown -Rh 65534``): the mount is refused and the
victim file in tmp is unchanged.
"""

import base64
import contextlib
import ctypes
import errno
import hmac
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.mounting import COMMAND_TIMEOUT, Mounted, force_unmount, fstype_at

NOBODY = 65534
KEY_NAMES = ("root_ca", "pck_ca", "pck", "tcb_signing", "attestation")
MAC_KEY_LABEL = b"tdxfs REPORTMACSTRUCT MAC key v1"  # README, "The MAC"
GET_REPORT0, VERIFY_REPORT, EXTEND_RTMR = 0xC4405401, 0xC1085402, 0x40315403
DCAP_EXTEND_RTMR, UNMERGED_GET_QUOTE = 0x80315403, 0x80105402
VENV_BIN = Path(sys.executable).parent


# -- the forms of a secret ------------------------------------------------------------------

def _b64_inner(raw: bytes, pad: int, alphabet: Optional[bytes] = None) -> bytes:
    """The base64 characters fixed by ``raw`` alone when ``pad`` other bytes precede it in a
    longer stream (the characters at either edge also depend on the neighbours)."""
    enc = base64.b64encode(bytes(pad) + raw, altchars=alphabet)
    first = -(-8 * pad // 6)
    last = 8 * (pad + len(raw)) // 6
    return enc[first:last]


def byte_forms(raw: bytes) -> Dict[str, bytes]:
    forms = {}
    for part, chunk in (("", raw), (" first half", raw[: len(raw) // 2]), (" second half", raw[len(raw) // 2 :])):
        forms[f"raw{part}"] = chunk
        forms[f"hex{part}"] = chunk.hex().encode()
        forms[f"HEX{part}"] = chunk.hex().upper().encode()
    for pad in range(3):
        forms[f"base64 (offset {pad})"] = _b64_inner(raw, pad)
        forms[f"base64url (offset {pad})"] = _b64_inner(raw, pad, b"-_")
    forms["repr"] = repr(raw)[2:-1].encode()
    forms["\\x escapes"] = "".join(f"\\x{b:02x}" for b in raw).encode()
    forms["\\X escapes"] = "".join(f"\\x{b:02X}" for b in raw).encode()
    return forms


def _pem_lines_with(pem: bytes, der: bytes, scalar: bytes) -> Dict[str, bytes]:
    """The PEM body lines that carry bits of the scalar (every other line may be public)."""
    at = der.find(scalar)
    assert at >= 0
    lines = [l for l in pem.splitlines() if not l.startswith(b"-----")]
    out, pos = {}, 0
    for i, line in enumerate(lines):
        start, end = pos * 6 // 8, ((pos + len(line)) * 6 + 7) // 8  # DER bytes this line covers
        if start < at + len(scalar) and end > at:
            out[f"PEM line {i + 1}"] = line
        pos += len(line)
    return out


def key_forms(key: ec.EllipticCurvePrivateKey) -> Dict[str, bytes]:
    value = key.private_numbers().private_value
    scalar = value.to_bytes((key.curve.key_size + 7) // 8, "big")
    forms = {f"scalar {k}": v for k, v in byte_forms(scalar).items()}
    forms["scalar decimal"] = str(value).encode()
    for fmt_name, fmt in (("PKCS#8", serialization.PrivateFormat.PKCS8),
                          ("SEC1", serialization.PrivateFormat.TraditionalOpenSSL)):
        pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        forms[f"{fmt_name} PEM"] = pem
        forms[f"{fmt_name} PEM body"] = b"".join(l for l in pem.splitlines() if not l.startswith(b"-----"))
        forms[f"{fmt_name} DER"] = der
        forms[f"{fmt_name} DER hex"] = der.hex().encode()
        forms[f"{fmt_name} DER HEX"] = der.hex().upper().encode()
        forms[f"{fmt_name} DER base64"] = base64.b64encode(der)
        forms.update({f"{fmt_name} {k}": v for k, v in _pem_lines_with(pem, der, scalar).items()})
    return forms


@dataclass
class Secrets:
    """Every form of every secret of some state directories: ``(secret, form) -> bytes``."""

    forms: Dict[Tuple[str, str], bytes] = field(default_factory=dict)

    def add_state(self, state: Path) -> None:
        tag = state.name
        secret = (state / "platform-secret").read_bytes()
        assert len(secret) == 32, f"{state}/platform-secret is {len(secret)} bytes"
        mac_key = hmac.digest(secret, MAC_KEY_LABEL, "sha256")
        for name, raw in ((f"{tag} platform secret", secret), (f"{tag} MAC key", mac_key)):
            self.forms.update({(name, form): v for form, v in byte_forms(raw).items()})
        blobs = json.loads((state / "platform-pki.json").read_text())["pki"]
        for name in KEY_NAMES:
            key = serialization.load_pem_private_key(blobs[f"{name}.key"].encode(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self.forms.update({(f"{tag} {name} key", form): v for form, v in key_forms(key).items()})

    def found_in(self, data: bytes) -> List[Tuple[str, str]]:
        return [what for what, form in self.forms.items() if form in data]

    def check(self, where: str, data: bytes, out: List[str]) -> None:
        out += [f"{where}: {secret}, as {form}" for secret, form in self.found_in(data)]


def test_the_forms_find_what_they_are_for(tmp_path):
    """The search can fail: each form is found when it is there, in a longer stream too."""
    key = ec.generate_private_key(ec.SECP256R1())
    state = tmp_path / "s"
    state.mkdir()
    (state / "platform-secret").write_bytes(os.urandom(32))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    (state / "platform-pki.json").write_text(json.dumps({"pki": {f"{n}.key": pem for n in KEY_NAMES}}))
    secrets = Secrets()
    secrets.add_state(state)
    raw = (state / "platform-secret").read_bytes()
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    for pad in range(3):
        stream = base64.b64encode(os.urandom(pad) + raw + os.urandom(5))
        assert ("s platform secret", f"base64 (offset {pad})") in secrets.found_in(b"x" + stream)
    assert ("s platform secret", "HEX") in secrets.found_in(b"err: " + raw.hex().upper().encode())
    assert ("s platform secret", "\\x escapes") in secrets.found_in(printable_escape(raw))
    assert ("s attestation key", "scalar raw") in secrets.found_in(b"\0" * 7 + scalar)
    assert ("s pck key", "PKCS#8 PEM line 1") in secrets.found_in(pem.encode().splitlines()[1] + b"...")
    sec1 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
    assert ("s root_ca key", "SEC1 DER") in secrets.found_in(b"junk" + sec1)
    # and nothing in public material: the certificate-free public key, random data
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert secrets.found_in(public + os.urandom(4096)) == []


def printable_escape(raw: bytes) -> bytes:
    return "".join(f"\\x{b:02x}" for b in raw).encode()


# -- processes and mounts -------------------------------------------------------------------

def cli(*args: str, cwd=None, env=None, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """A tdxfs command as a user types it (its output as bytes)."""
    return subprocess.run([str(VENV_BIN / "tdxfs"), *args], capture_output=True, timeout=COMMAND_TIMEOUT,
                          cwd=cwd, env=env, stdin=stdin)


def daemon_pid(mountpoint) -> int:
    with open(os.path.join(mountpoint, ".stats")) as f:
        return int(json.load(f)["server"]["pid"])


def reap(pid: Optional[int]) -> None:
    """Wait for a daemon (not our child) to go after its unmount; SIGKILL it if it stays."""
    if pid is None:
        return
    for _ in range(200):
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def clear_mount(mountpoint) -> None:
    """Whatever a command left at ``mountpoint``: unmounted, its daemon gone."""
    if fstype_at(mountpoint) is None:
        return
    pid = None
    with contextlib.suppress(OSError, ValueError, KeyError):
        pid = daemon_pid(mountpoint)
    cli("umount", str(mountpoint))
    force_unmount(str(mountpoint))
    reap(pid)


@contextlib.contextmanager
def cli_mount(mountpoint: Path, *args: str) -> Iterator[subprocess.CompletedProcess]:
    """``tdxfs mount MOUNTPOINT ARGS`` daemonized, as a user runs it; unmounted and its
    daemon gone at the end, whatever happened."""
    mountpoint.mkdir(exist_ok=True)
    try:
        yield cli("mount", str(mountpoint), *args)
    finally:
        clear_mount(mountpoint)


# -- what a mount shows: every file, read whole ---------------------------------------------

_libc = None


def _ioctl(fd: int, cmd: int, data: bytes) -> Tuple[int, bytes]:
    """(errno or 0, the buffer after the call)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
    buf = ctypes.create_string_buffer(data, len(data))
    rc = _libc.ioctl(fd, cmd, ctypes.addressof(buf))
    return (0 if rc >= 0 else ctypes.get_errno()), buf.raw


def read_everything(mount: str) -> Dict[str, bytes]:
    """Every file of the mount read whole (a configfs instance made first, with an inblob,
    so its outblob holds a quote), directory listings, and the ioctl node's answers."""
    inst = os.path.join(mount, "tsm/report/secrets")
    os.mkdir(inst)
    with open(os.path.join(inst, "inblob"), "wb", buffering=0) as f:
        f.write(os.urandom(64))
    seen: Dict[str, bytes] = {}
    for top, dirs, files in os.walk(mount):
        seen[f"listing of {top}"] = "\n".join(sorted(dirs + files)).encode()
        for name in files:
            path = os.path.join(top, name)
            if name in ("tdx_guest", "inblob"):
                continue  # no read(): EINVAL on the ioctl node (its answers below); inblob is write-only
            with open(path, "rb", buffering=0) as f:
                seen[path] = f.read()
    with open(os.path.join(mount, "tdx_guest"), "r+b", buffering=0) as dev:
        err, answer = _ioctl(dev.fileno(), GET_REPORT0, os.urandom(64) + bytes(1024))
        assert err == 0, os.strerror(err)
        seen["tdx_guest GET_REPORT0"] = answer
        err, verified = _ioctl(dev.fileno(), VERIFY_REPORT, answer[64:64 + 256] + bytes(8))
        assert err == 0, os.strerror(err)
        seen["tdx_guest VERIFY_REPORT"] = verified
    assert len(seen[os.path.join(inst, "outblob")]) > 1000, "no quote in the outblob"
    assert seen[os.path.join(mount, "acpi/data/CCEL")] and seen[os.path.join(mount, "acpi/CCEL")]
    os.rmdir(inst)
    return seen


# -- refusals of every kind -------------------------------------------------------------------

def provoke_refusals(mount: str) -> None:
    """One request of each kind the daemon refuses (and so logs), as root; each must fail."""
    p = lambda name: os.path.join(mount, name)  # noqa: E731
    inst = p("tsm/report/refusals")
    os.mkdir(inst)

    def refused(fn, *args, code=None):
        try:
            fn(*args)
        except OSError as exc:
            assert code is None or exc.errno == code, f"{fn.__name__}{args}: {exc}"
            return
        raise AssertionError(f"{fn.__name__}{args} was not refused")

    def write(name, data, flags=os.O_WRONLY, offset=None):
        fd = os.open(p(name), flags)
        try:
            if offset is None:
                os.write(fd, data)
            else:
                os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def read(name, flags=os.O_RDONLY):
        fd = os.open(p(name), flags)
        try:
            os.read(fd, 4096)
        finally:
            os.close(fd)

    def ioctl(cmd, data):
        fd = os.open(p("tdx_guest"), os.O_RDWR)
        try:
            err, _ = _ioctl(fd, cmd, data)
        finally:
            os.close(fd)
        if err:
            raise OSError(err, os.strerror(err))

    # bad values, lengths, offsets, flags: EINVAL / EFBIG
    refused(write, "reportdata", b"not hex at all", code=errno.EINVAL)
    refused(write, "rtmr3", b"short", code=errno.EINVAL)
    refused(write, "rtmr3", bytes(48), os.O_WRONLY | os.O_APPEND, code=errno.EINVAL)
    refused(write, "rtmr3", bytes(48), os.O_WRONLY, 1, code=errno.EINVAL)
    refused(write, "tdreport", bytes(64), code=errno.EINVAL)  # O_WRONLY
    refused(write, "eventlog", b"9 EV_BOGUS zz\n", code=errno.EINVAL)
    refused(write, "measurements/rtmr3:sha384", b"short", code=errno.EINVAL)
    refused(write, "measurements/rtmr3:sha384", bytes(48), os.O_WRONLY, 48, code=errno.EFBIG)
    refused(os.truncate, p("rtmr3"), 5, code=errno.EINVAL)
    # read-only and write-only files: EACCES
    for name in ("mrtd", ".stats", "acpi/CCEL", "acpi/data/CCEL", "measurements/mrtd:sha384",
                 "tsm/report/refusals/outblob", "tsm/report/refusals/provider"):
        refused(write, name, b"x", code=errno.EACCES)
    refused(read, "tsm/report/refusals/inblob", code=errno.EACCES)
    refused(os.truncate, p("mrtd"), 0, code=errno.EACCES)
    # the ioctl node: no read or write; commands
    refused(read, "tdx_guest", code=errno.EINVAL)
    refused(write, "tdx_guest", b"x", code=errno.EINVAL)
    refused(ioctl, EXTEND_RTMR, bytes(48) + b"\x00", code=errno.EPERM)
    refused(ioctl, EXTEND_RTMR, bytes(48) + b"\x09", code=errno.EINVAL)
    refused(ioctl, VERIFY_REPORT, os.urandom(256) + bytes(8), code=errno.EIO)
    refused(ioctl, DCAP_EXTEND_RTMR, bytes(49), code=errno.ENOTTY)
    refused(ioctl, UNMERGED_GET_QUOTE, bytes(16), code=errno.ENOTTY)
    refused(ioctl, 0xC0105499, bytes(16), code=errno.ENOTTY)
    # namespace changes
    refused(os.open, p("newfile"), os.O_CREAT | os.O_WRONLY, code=errno.EPERM)
    refused(os.open, p("tsm/report/refusals/newfile"), os.O_CREAT | os.O_WRONLY, code=errno.EACCES)
    refused(os.mkfifo, p("fifo"), code=errno.EPERM)
    refused(os.mkdir, p("newdir"), code=errno.EPERM)
    refused(os.rmdir, p("measurements"), code=errno.EPERM)
    refused(os.unlink, p("rtmr3"), code=errno.EPERM)
    refused(os.rename, p("rtmr3"), p("rtmr9"), code=errno.EPERM)
    refused(os.symlink, "rtmr3", p("link"), code=errno.EPERM)
    refused(os.link, p("rtmr3"), p("hardlink"), code=errno.EPERM)
    refused(os.chmod, p("rtmr3"), 0o666, code=errno.EPERM)
    refused(os.chown, p("rtmr3"), NOBODY, NOBODY, code=errno.EPERM)
    # configfs instances
    refused(os.mkdir, inst, code=errno.EEXIST)
    refused(os.mkdir, p("tsm/report/" + "n" * 256), code=errno.ENAMETOOLONG)
    os.mkdir(p("tsm/report/x\nFAKE line"))  # an odd name, in a refusal's path: one escaped line
    refused(write, "tsm/report/x\nFAKE line/outblob", b"x", code=errno.EACCES)
    os.rmdir(p("tsm/report/x\nFAKE line"))
    refused(os.open, os.fsencode(p("tsm/report/")) + b"\xff\xfe", os.O_CREAT | os.O_WRONLY)
    refused(read, "tsm/report/refusals/outblob", code=errno.EINVAL)  # no inblob yet
    refused(write, "tsm/report/refusals/inblob", bytes(65), code=errno.EFBIG)
    refused(os.rmdir, p("tsm/report/never-made"), code=errno.ENOENT)
    # extended attributes, lookup misses (debug level)
    refused(os.setxattr, p("rtmr3"), "user.x", b"v", code=errno.EOPNOTSUPP)
    refused(os.removexattr, p("rtmr3"), "user.x")
    refused(os.getxattr, p("rtmr3"), "user.x")
    refused(os.stat, p("no-such-file"), code=errno.ENOENT)
    os.rmdir(inst)


# -- the world of this module: state directories, mounts, logs --------------------------------

@dataclass
class World:
    base: Path
    states: Dict[str, Path]
    mount: Path                  # daemonized `tdxfs mount --state S1 --log LOG`
    log: Path
    pid: int
    debug: Mounted               # foreground -d mount on S2 (debug lines, libfuse's trace)
    secrets: Secrets


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("secrets")
    states = {name: base / name for name in ("s1", "s2", "s3")}
    mount, log = base / "mnt", base / "daemon.log"
    debug = Mounted(base / "dbg", "-d", "--state", str(states["s2"]))
    with cli_mount(mount, "--state", str(states["s1"]), "--log", str(log)) as done:
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        try:
            debug.start()
            secrets = Secrets()
            for name in ("s1", "s2"):
                secrets.add_state(states[name])
            yield World(base, states, mount, log, daemon_pid(mount), debug, secrets)
        finally:
            debug.stop()


def test_the_state_files_hold_what_is_searched_for(world):
    """A positive control on the real state: every key is found in platform-pki.json as PEM,
    and the platform secret in its own file."""
    for name in ("s1", "s2"):
        state = world.states[name]
        found = set(world.secrets.found_in((state / "platform-pki.json").read_bytes()))
        for key in KEY_NAMES:
            assert (f"{name} {key} key", "PKCS#8 PEM line 1") in found
        assert (f"{name} platform secret", "raw") in world.secrets.found_in((state / "platform-secret").read_bytes())


def test_every_mount_file_is_free_of_secrets(world):
    leaks: List[str] = []
    for mount in (str(world.mount), world.debug.mountpoint):
        for where, data in read_everything(mount).items():
            world.secrets.check(where, data, leaks)
    assert not leaks, "\n".join(leaks)


def test_what_pki_export_writes_is_free_of_secrets(world, tmp_path):
    done = cli("pki", "export", str(tmp_path / "out"), "--state", str(world.states["s1"]))
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    files = sorted((tmp_path / "out").iterdir())
    assert any(f.name == "root-ca.pem" for f in files)
    leaks: List[str] = []
    world.secrets.check("pki export output", done.stdout + done.stderr, leaks)
    for f in files:
        world.secrets.check(str(f), f.read_bytes(), leaks)
    assert not leaks, "\n".join(leaks)


def test_every_log_line_is_free_of_secrets(world):
    for mount in (str(world.mount), world.debug.mountpoint):
        provoke_refusals(mount)
    logs = {"daemon log": world.log.read_bytes(), "-d log": Path(world.debug.log_path).read_bytes()}
    assert b" rejected write /rtmr3: EINVAL" in logs["daemon log"], "the refusals were not logged"
    assert b" rejected ioctl /tdx_guest: EIO" in logs["daemon log"]
    assert b"rejected getattr /no-such-file: ENOENT" in logs["-d log"], "no debug-level lines"
    leaks: List[str] = []
    for name, text in logs.items():
        for n, line in enumerate(text.splitlines(), 1):
            world.secrets.check(f"{name} line {n}", line, leaks)
        world.secrets.check(f"{name} (whole)", text, leaks)
    assert not leaks, "\n".join(leaks)


def _proc(pid: int) -> Dict[str, bytes]:
    out = {}
    for what in ("cmdline", "environ"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            out[what] = Path(f"/proc/{pid}/{what}").read_bytes()
    return out


def _descendants(root: int) -> List[int]:
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def test_daemon_cmdline_and_environ_are_free_of_secrets(world):
    leaks: List[str] = []
    for pid in (world.pid, world.debug.proc.pid):
        seen = _proc(pid)
        assert set(seen) == {"cmdline", "environ"} and seen["environ"], f"pid {pid} not readable"
        for what, data in seen.items():
            world.secrets.check(f"daemon {pid} {what}", data, leaks)
    assert not leaks, "\n".join(leaks)


def test_tdxfs_run_and_its_children_are_free_of_secrets(world):
    """``tdxfs run`` with a state of its own: its cmdline and environ, its daemon's, its
    command's, read while the command runs (it says it is ready, then waits for a line)."""
    command = [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.readline()"]
    state, log = world.states["s3"], world.base / "run.log"
    proc = subprocess.Popen([str(VENV_BIN / "tdxfs"), "run", "--state", str(state), "--log", str(log), "--", *command],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read().decode(errors="replace")
        seen = {pid: _proc(pid) for pid in _descendants(proc.pid)}
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(b"\n")
            proc.stdin.close()
        proc.wait(timeout=COMMAND_TIMEOUT)
    assert proc.returncode == 0, proc.stderr.read().decode(errors="replace")
    assert len(seen) >= 3, f"expected tdxfs run, its daemon and the command: {seen}"
    assert any(b"TDXFS_MOUNT=" in s.get("environ", b"") for s in seen.values()), "environ not read"
    secrets = Secrets(dict(world.secrets.forms))
    secrets.add_state(state)
    leaks: List[str] = []
    for pid, files in seen.items():
        for what, data in files.items():
            secrets.check(f"pid {pid} {what}", data, leaks)
    secrets.check("tdxfs run's output", proc.stderr.read(), leaks)
    secrets.check("run.log", log.read_bytes(), leaks)
    assert not leaks, "\n".join(leaks)


# -- error messages: every subcommand, with bad arguments --------------------------------------

def corrupt_copies(state: Path, where: Path) -> Dict[str, Path]:
    """Copies of a state directory, each broken one way (and then refused at start)."""
    from tdxfs.model.state import _checksum  # the documented checksum: SHA-256 of the sorted JSON

    def copy(name: str) -> Path:
        dst = where / name
        shutil.copytree(state, dst, ignore=shutil.ignore_patterns("lock"))
        os.chmod(dst, 0o700)
        return dst

    def rewrite_pki(dst: Path, change, keep_checksum: bool) -> None:
        doc = json.loads((dst / "platform-pki.json").read_text())
        change(doc["pki"])
        if keep_checksum:
            body = {k: v for k, v in doc.items() if k != "checksum"}
            doc["checksum"] = _checksum(body)
        (dst / "platform-pki.json").write_text(json.dumps(doc))

    def damage_key(pki):  # one base64 character of the attestation key's scalar changed
        lines = pki["attestation.key"].split("\n")
        lines[1] = lines[1][:50] + ("A" if lines[1][50] != "A" else "B") + lines[1][51:]
        pki["attestation.key"] = "\n".join(lines)

    def cut_key(pki):  # a PEM that ends in the middle of the key
        pki["pck.key"] = pki["pck.key"][:120]

    def p384_key(pki):
        pki["pck_ca.key"] = ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()

    out = {}
    out["checksum mismatch"] = dst = copy("bad-checksum")
    rewrite_pki(dst, damage_key, keep_checksum=False)
    out["damaged key"] = dst = copy("bad-key")
    rewrite_pki(dst, damage_key, keep_checksum=True)
    out["cut key"] = dst = copy("cut-key")
    rewrite_pki(dst, cut_key, keep_checksum=True)
    out["P-384 key"] = dst = copy("p384-key")
    rewrite_pki(dst, p384_key, keep_checksum=True)
    out["pki not JSON"] = dst = copy("pki-not-json")
    raw = (dst / "platform-pki.json").read_bytes()
    (dst / "platform-pki.json").write_bytes(raw[: len(raw) // 2])
    out["short secret"] = dst = copy("short-secret")
    (dst / "platform-secret").write_bytes((state / "platform-secret").read_bytes()[:31])
    out["long secret"] = dst = copy("long-secret")
    (dst / "platform-secret").write_bytes((state / "platform-secret").read_bytes() + b"\n")
    return out


def bad_invocations(world: World, scratch: Path) -> List[List[str]]:
    s1 = world.states["s1"]
    secret, pki = str(s1 / "platform-secret"), str(s1 / "platform-pki.json")
    mnt, log, nope = str(scratch / "mnt"), str(scratch / "cli.log"), str(scratch / "no-such-dir")
    (scratch / "mnt").mkdir()
    bad = corrupt_copies(s1, scratch)
    cases = [
        [], ["bogus"], ["--bogus"],
        ["mount"], ["mount", nope, "--state", str(s1), "--log", log],
        ["mount", mnt, "--state", str(s1), "--log", log],                # busy: a daemon serves it
        ["mount", mnt, "--profile", pki, "--log", log],
        ["mount", mnt, "--profile", secret, "--log", log],
        ["mount", mnt, "-o", "bogus=1", "--log", log],
        ["mount", mnt, "-o", f"umask={secret}", "--log", log],
        ["mount", mnt, "--log", str(s1)],                                # a directory as the log
        *(["mount", mnt, "--state", str(d), "--log", log] for d in bad.values()),
        *(["pki", "export", str(scratch / "out"), "--state", str(d)]  # pki export reads only the PKI
          for why, d in bad.items() if "secret" not in why),
        ["run", "--state", str(s1), "--log", log, "--", "true"],
        ["run", "--profile", pki, "--log", log, "--", "true"],
        ["run", "--mount", str(s1), "--", "true"],
        ["run", "--mount", str(world.mount), "--state", str(s1), "--", "true"],
        ["run", "--log", log, "--", nope],
        ["run", "--state", str(bad["damaged key"]), "--log", log, "--", "true"],
        ["shell", "--profile", pki, "--log", log],
        ["umount", nope], ["umount", str(s1)],
        ["report", "decode", secret], ["report", "decode", "--json", pki],
        ["report", "get", "--device", secret], ["report", "get", "--via", "files", "--mount", str(s1)],
        ["report", "get", "--reportdata", "zz", "--mount", str(world.mount)],
        ["quote", "decode", secret], ["quote", "decode", "--json", pki],
        ["quote", "verify", secret, "--collateral", pki, "--root", pki],
        ["quote", "verify", pki, "--collateral", secret, "--root", secret],
        ["quote", "get", "--mount", str(s1), "-o", str(scratch / "q.bin")],
        ["pki", "export", str(scratch / "out2"), "--state", str(s1), "--profile", pki],
        ["pki", "export", str(scratch / "out3"), "--profile", pki],
        ["pki", "export", secret + "/out", "--state", str(s1)],
        ["bench", "--quick", "--mount", nope], ["bench", "--methods", "bogus", "--mount", nope],
        ["stress", "--mount", str(s1)], ["stress", "--clients", "0", "--mount", nope],
        ["profile", "show", "--profile", pki], ["profile", "show", "--profile", secret],
        ["extend", "--rtmr", "3", "--data", secret, "--mount", nope],
        ["extend", "--rtmr", "3", "--data", secret],                    # no mount named
        ["extend", "--rtmr", "9", "--text", "x", "--mount", str(world.mount)],
        ["eventlog", "replay", "--ccel", secret], ["eventlog", "replay", "--ccel", pki],
        ["eventlog", "replay", "--ccel", str(s1 / "event-log"), "--report", secret],
    ]
    return cases


@dataclass
class CliRun:
    shown: str
    returncode: int
    output: bytes  # stdout + stderr


@pytest.fixture(scope="module")
def cli_errors(world, tmp_path_factory) -> List[CliRun]:
    """Every bad invocation, run once (its mountpoint cleared whatever happened), and what
    it printed; the CLI's log file is the last entry."""
    scratch = tmp_path_factory.mktemp("cli")
    env = {k: v for k, v in os.environ.items() if k != "TDXFS_MOUNT"}
    runs: List[CliRun] = []
    helper = [str(VENV_BIN / "mount.fuse.tdxfs"), "tdxfs", str(scratch / "mnt"), "-o",
              f"state={world.states['s1']},bogus,log={scratch / 'cli.log'}"]
    try:
        for args in bad_invocations(world, scratch):
            done = cli(*args, cwd=scratch, env=env)
            runs.append(CliRun("tdxfs " + " ".join(args), done.returncode, done.stdout + done.stderr))
        done = subprocess.run(helper, capture_output=True, timeout=COMMAND_TIMEOUT, cwd=scratch, env=env)
        runs.append(CliRun(" ".join(helper), done.returncode, done.stdout + done.stderr))
    finally:
        clear_mount(scratch / "mnt")
    log = scratch / "cli.log"
    runs.append(CliRun("the log of the refused mounts", 1, log.read_bytes() if log.exists() else b""))
    return runs


def test_every_cli_error_message_is_free_of_secrets(world, cli_errors):
    leaks: List[str] = []
    for run in cli_errors:
        world.secrets.check(run.shown, run.output, leaks)
    assert not leaks, "\n".join(leaks)


def test_every_bad_invocation_is_refused_with_a_message(cli_errors):
    """So the search above had messages to search: each bad invocation exits non-zero and
    says why, in a message rather than a Python traceback (a traceback quotes the bytes it
    choked on: ``can't decode byte 0xb7 in position 2`` of a secret given as a profile)."""
    wrong = [f"{run.shown}: exit {run.returncode}" for run in cli_errors[:-1] if run.returncode == 0 or not run.output.strip()]
    wrong += [f"{run.shown}: a traceback: ...{run.output[-160:].decode(errors='replace')!r}"
              for run in cli_errors if b"Traceback (most recent call last)" in run.output]
    assert not wrong, "\n".join(wrong)


# -- defects 1 and 2: symlink attacks through the CLI, prepared by an unprivileged user --------

VICTIM_TEXT = b"the victim's own content\n"


def snapshot(path: Path):
    st = os.lstat(path)
    content = path.read_bytes() if stat.S_ISREG(st.st_mode) else sorted(os.listdir(path))
    return content, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, st.st_nlink


def attack_secret_tmp(work: Path, victim: Path) -> List[str]:
    """Defect 1: the state's temporary file is a symlink to the victim."""
    state = work / "state"
    state.mkdir()
    os.symlink(victim, state / ".platform-secret.tmp")
    return ["--state", str(state)]


def attack_state_symlink(work: Path, victim: Path) -> List[str]:
    """Defect 1: the state directory itself is a symlink to a directory holding the victim."""
    os.symlink(victim.parent, work / "state")
    return ["--state", str(work / "state")]


def attack_lock_symlink(work: Path, victim: Path) -> List[str]:
    """Defect 1: the lock is a symlink to the victim."""
    state = work / "state"
    state.mkdir()
    os.symlink(victim, state / "lock")
    return ["--state", str(state)]


def attack_pki_symlink(work: Path, victim: Path) -> List[str]:
    """Defect 1: platform-pki.json's temporary file is a symlink to the victim."""
    state = work / "state"
    state.mkdir()
    os.symlink(victim, state / ".platform-pki.json.tmp")
    return ["--state", str(state)]


def attack_log_symlink(work: Path, victim: Path) -> List[str]:
    """Defect 2: the log file is a symlink to the victim."""
    os.symlink(victim, work / "tdxfs.log")
    return []


ATTACKS = [attack_secret_tmp, attack_state_symlink, attack_lock_symlink, attack_pki_symlink, attack_log_symlink]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__[len("attack_"):])
def test_a_symlink_attack_is_refused_and_the_victim_unchanged(tmp_path, attack):
    """As nobody would leave it: a directory of nobody's (``chown -Rh 65534``) holding the
    trap; root runs ``tdxfs mount M --state …`` (or ``--log``) there. The mount is refused
    with a message, nothing is mounted, and the victim (a file of root's, 0644, in tmp,
    and the directory it is in) is exactly as it was."""
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir()
    os.chmod(victim_dir, 0o755)
    victim = victim_dir / "victim"
    victim.write_bytes(VICTIM_TEXT)
    os.chmod(victim, 0o644)
    work = tmp_path / "work"
    work.mkdir()
    args = attack(work, victim)
    log = work / "tdxfs.log"
    if attack is attack_state_symlink:
        subprocess.run(["chown", "-Rh", str(NOBODY), str(victim_dir.parent / "victim-dir")], check=True)
        victim_dir_owner = NOBODY
    else:
        victim_dir_owner = 0
    subprocess.run(["chown", "-Rh", str(NOBODY), str(work)], check=True)
    if attack is attack_state_symlink:  # nobody's directory, the victim file root's own
        os.chown(victim, 0, 0)
    before = snapshot(victim), snapshot(victim_dir)
    assert before[1][2] == victim_dir_owner
    mountpoint = tmp_path / "mnt"
    with cli_mount(mountpoint, *args, "--log", str(log)) as done:
        mounted = fstype_at(mountpoint)
    message = done.stderr.decode(errors="replace")
    assert done.returncode != 0 and mounted is None, f"the mount was not refused: {message}"
    assert message.strip(), "refused without a message"
    assert (snapshot(victim), snapshot(victim_dir)) == before, "the victim changed"
    assert not (victim_dir / "lock").exists()
