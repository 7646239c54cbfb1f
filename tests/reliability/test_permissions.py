"""Issue 8, section 2: who may do what, with a real unprivileged user.

For each mount kind (no options; ``allow_other``; ``allow_other,uid=65534,gid=65534``;
``allow_other,umask=022``; ``allow_other,umask=000``; ``allow_other,ro``) and each user (root,
and ``nobody`` through ``setpriv --reuid=65534 --regid=65534 --clear-groups``), a client
process tries every action on every kind of file and records what it got: the mode ``stat``
shows, ``ok``, or the errno. The outcome must equal :data:`EXPECTED`, the table published in
docs/reliability.md ("Who may do what"); a test checks the two are the same table.

The expected cells follow the documented rule (README, "Mount options never widen a mode"):
options only narrow a mode, ``tdx_guest`` stays 0600 and a read-only file stays read-only
whatever ``umask=``, ``uid=``, ``gid=`` say. They are written out here, not taken from the
code under test.

The client is a stdlib-only script run by the system Python (the venv's interpreter lives
under /root, which ``nobody`` cannot reach), passed with ``-c``, so nothing it runs needs to
be readable by ``nobody``. The mounts live under a 0755 directory in /tmp (pytest's
``tmp_path`` is 0700), registered with the session's leak net, and every mount is stopped
in a finalizer. The server always runs in its own process (``Mounted``).
"""

import errno
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tests import leakcheck
from tests.mounting import COMMAND_TIMEOUT, Mounted, stop_all

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # readable and executable by every user
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
INST = "tsm/report/inst"  # a configfs instance root makes before each client runs

# -- what each row is: the paths it covers and the actions tried on it -------------------------

FILE_ACTIONS = ("stat", "read", "write")
DEVICE_ACTIONS = ("stat", "read", "write", "open O_RDWR", "GET_REPORT0 (O_RDWR fd)", "EXTEND_RTMR (O_RDWR fd)",
                  "open O_RDONLY", "GET_REPORT0 (O_RDONLY fd)", "EXTEND_RTMR (O_RDONLY fd)")

ROWS: Dict[str, Tuple[List[str], Tuple[str, ...]]] = {
    "/": ([""], ("stat",)),
    "reportdata": (["reportdata"], FILE_ACTIONS),
    "tdreport": (["tdreport"], FILE_ACTIONS),
    "rtmr0-3": ([f"rtmr{i}" for i in range(4)], FILE_ACTIONS),
    "mrtd,mrconfigid,mrowner,mrownerconfig": (["mrtd", "mrconfigid", "mrowner", "mrownerconfig"], FILE_ACTIONS),
    "tdx_guest": (["tdx_guest"], DEVICE_ACTIONS),
    ".stats": ([".stats"], FILE_ACTIONS),
    "eventlog": (["eventlog"], FILE_ACTIONS),
    "measurements/rtmr0-3:sha384": ([f"measurements/rtmr{i}:sha384" for i in range(4)], FILE_ACTIONS),
    "measurements/mrtd:sha384,mrconfigid,mrowner,mrownerconfig":
        ([f"measurements/{n}" for n in ("mrtd:sha384", "mrconfigid", "mrowner", "mrownerconfig")], FILE_ACTIONS),
    "acpi/CCEL": (["acpi/CCEL"], FILE_ACTIONS),
    "acpi/data/CCEL": (["acpi/data/CCEL"], FILE_ACTIONS),
    "INST/inblob": ([f"{INST}/inblob"], FILE_ACTIONS),
    "INST/outblob": ([f"{INST}/outblob"], FILE_ACTIONS),
    "INST/provider": ([f"{INST}/provider"], FILE_ACTIONS),
    "INST/generation": ([f"{INST}/generation"], FILE_ACTIONS),
    # mkdir: a new instance; rmdir: root's instance INST (tried last, after its files)
    "tsm/report": (["tsm/report"], ("stat", "mkdir", "rmdir")),
}

# The well-formed value each write carries (hex here; a refusal must not be for a bad value).
DIGEST = bytes(range(48))
WRITES = {
    "reportdata": (b"ab" * 64 + b"\n").hex(),
    "tdreport": bytes(range(64)).hex(),  # on an O_RDWR fd: the one-fd transaction
    "eventlog": f"3 EV_IPL {DIGEST.hex()}\n".encode().hex(),
    "INST/inblob": bytes(range(64)).hex(),
}
for _i in range(4):
    WRITES[f"rtmr{_i}"] = DIGEST.hex()
    WRITES[f"measurements/rtmr{_i}:sha384"] = DIGEST.hex()
for _n in ("mrtd", "mrconfigid", "mrowner", "mrownerconfig"):
    WRITES[_n] = (DIGEST.hex() + "\n").encode().hex()
for _n in ("mrtd:sha384", "mrconfigid", "mrowner", "mrownerconfig"):
    WRITES[f"measurements/{_n}"] = DIGEST.hex()

MOUNTS = {
    "default": [],
    "allow_other": ["-o", "allow_other"],
    "uid=gid=65534": ["-o", "allow_other,uid=65534,gid=65534"],
    "umask=022": ["-o", "allow_other,umask=022"],
    "umask=000": ["-o", "allow_other,umask=000"],
    "ro": ["-o", "allow_other,ro"],
}
USERS = ("root", "nobody")
COLUMNS = [(mount, user) for mount in MOUNTS for user in USERS]
OWNER = {"uid=gid=65534": f"{NOBODY}:{NOBODY}"}  # every file's owner; else root's "0:0"

# -- the expected table: one line per (row, action), one cell per (mount, user) in COLUMNS -----
# Cells: a mode (stat), "ok", or the errno's name. "default": without allow_other, FUSE lets
# no other user in at all. "ro": the kernel refuses every write with EROFS, before any mode
# check (so for nobody too). No instance can be made on a ro mount, so INST is ENOENT there.
# The tdx_guest ioctls are tried on an fd of their own, opened O_RDWR as the kernel's clients
# do and O_RDONLY: the driver (and tdxfs) checks no open mode for an ioctl, so on a ro mount
# root can still extend RTMR3 through an O_RDONLY fd, as on a real guest whose /dev is ro.

EXPECTED_TABLE = """
row                                                       action                    | default        | allow_other    | uid=gid=65534  | umask=022      | umask=000      | ro
/                                                         stat                      | 0755   EACCES  | 0755   0755    | 0755   0755    | 0755   0755    | 0755   0755    | 0755   0755
reportdata                                                stat                      | 0644   EACCES  | 0644   0644    | 0644   0644    | 0644   0644    | 0644   0644    | 0644   0644
reportdata                                                read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ok     ok
reportdata                                                write                     | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | EROFS  EROFS
tdreport                                                  stat                      | 0644   EACCES  | 0644   0644    | 0644   0644    | 0644   0644    | 0644   0644    | 0644   0644
tdreport                                                  read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ok     ok
tdreport                                                  write                     | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | EROFS  EROFS
rtmr0-3                                                   stat                      | 0644   EACCES  | 0644   0644    | 0644   0644    | 0644   0644    | 0644   0644    | 0644   0644
rtmr0-3                                                   read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ok     ok
rtmr0-3                                                   write                     | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | EROFS  EROFS
mrtd,mrconfigid,mrowner,mrownerconfig                     stat                      | 0444   EACCES  | 0444   0444    | 0444   0444    | 0444   0444    | 0444   0444    | 0444   0444
mrtd,mrconfigid,mrowner,mrownerconfig                     read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ok     ok
mrtd,mrconfigid,mrowner,mrownerconfig                     write                     | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EROFS  EROFS
tdx_guest                                                 stat                      | 0600   EACCES  | 0600   0600    | 0600   0600    | 0600   0600    | 0600   0600    | 0600   0600
tdx_guest                                                 read                      | EINVAL EACCES  | EINVAL EACCES  | EINVAL EINVAL  | EINVAL EACCES  | EINVAL EACCES  | EINVAL EACCES
tdx_guest                                                 write                     | EINVAL EACCES  | EINVAL EACCES  | EINVAL EINVAL  | EINVAL EACCES  | EINVAL EACCES  | EROFS  EROFS
tdx_guest                                                 open O_RDWR               | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | EROFS  EROFS
tdx_guest                                                 GET_REPORT0 (O_RDWR fd)   | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | EROFS  EROFS
tdx_guest                                                 EXTEND_RTMR (O_RDWR fd)   | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | EROFS  EROFS
tdx_guest                                                 open O_RDONLY             | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | ok     EACCES
tdx_guest                                                 GET_REPORT0 (O_RDONLY fd) | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | ok     EACCES
tdx_guest                                                 EXTEND_RTMR (O_RDONLY fd) | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | ok     EACCES
.stats                                                    stat                      | 0444   EACCES  | 0444   0444    | 0444   0444    | 0444   0444    | 0444   0444    | 0444   0444
.stats                                                    read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ok     ok
.stats                                                    write                     | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EROFS  EROFS
eventlog                                                  stat                      | 0644   EACCES  | 0644   0644    | 0644   0644    | 0644   0644    | 0644   0644    | 0644   0644
eventlog                                                  read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ok     ok
eventlog                                                  write                     | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | EROFS  EROFS
measurements/rtmr0-3:sha384                               stat                      | 0644   EACCES  | 0644   0644    | 0644   0644    | 0644   0644    | 0644   0644    | 0644   0644
measurements/rtmr0-3:sha384                               read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ok     ok
measurements/rtmr0-3:sha384                               write                     | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | EROFS  EROFS
measurements/mrtd:sha384,mrconfigid,mrowner,mrownerconfig stat                      | 0444   EACCES  | 0444   0444    | 0444   0444    | 0444   0444    | 0444   0444    | 0444   0444
measurements/mrtd:sha384,mrconfigid,mrowner,mrownerconfig read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ok     ok
measurements/mrtd:sha384,mrconfigid,mrowner,mrownerconfig write                     | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EROFS  EROFS
acpi/CCEL                                                 stat                      | 0400   EACCES  | 0400   0400    | 0400   0400    | 0400   0400    | 0400   0400    | 0400   0400
acpi/CCEL                                                 read                      | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | ok     EACCES
acpi/CCEL                                                 write                     | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EROFS  EROFS
acpi/data/CCEL                                            stat                      | 0400   EACCES  | 0400   0400    | 0400   0400    | 0400   0400    | 0400   0400    | 0400   0400
acpi/data/CCEL                                            read                      | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | ok     EACCES
acpi/data/CCEL                                            write                     | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EROFS  EROFS
INST/inblob                                               stat                      | 0200   EACCES  | 0200   0200    | 0200   0200    | 0200   0200    | 0200   0200    | ENOENT ENOENT
INST/inblob                                               read                      | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | ENOENT ENOENT
INST/inblob                                               write                     | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | ENOENT ENOENT
INST/outblob                                              stat                      | 0444   EACCES  | 0444   0444    | 0444   0444    | 0444   0444    | 0444   0444    | ENOENT ENOENT
INST/outblob                                              read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ENOENT ENOENT
INST/outblob                                              write                     | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | ENOENT ENOENT
INST/provider                                             stat                      | 0444   EACCES  | 0444   0444    | 0444   0444    | 0444   0444    | 0444   0444    | ENOENT ENOENT
INST/provider                                             read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ENOENT ENOENT
INST/provider                                             write                     | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | ENOENT ENOENT
INST/generation                                           stat                      | 0444   EACCES  | 0444   0444    | 0444   0444    | 0444   0444    | 0444   0444    | ENOENT ENOENT
INST/generation                                           read                      | ok     EACCES  | ok     ok      | ok     ok      | ok     ok      | ok     ok      | ENOENT ENOENT
INST/generation                                           write                     | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | EACCES EACCES  | ENOENT ENOENT
tsm/report                                                stat                      | 0755   EACCES  | 0755   0755    | 0755   0755    | 0755   0755    | 0755   0755    | 0755   0755
tsm/report                                                mkdir                     | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | EROFS  EROFS
tsm/report                                                rmdir                     | ok     EACCES  | ok     EACCES  | ok     ok      | ok     EACCES  | ok     EACCES  | EROFS  EROFS
"""


def parse_expected(text: str) -> Dict[Tuple[str, str], Dict[Tuple[str, str], str]]:
    """``{(row, action): {(mount, user): cell}}`` from the table above."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    mounts = [m.strip() for m in lines[0].split("|")[1:]]
    assert mounts == list(MOUNTS), f"table columns {mounts} are not the mounts {list(MOUNTS)}"
    table = {}
    for line in lines[1:]:
        head, *groups = line.split("|")
        row, action = re.match(r"(\S+)\s+(.+?)\s*$", head).groups()
        cells = {}
        for mount, group in zip(mounts, groups):
            values = group.split()
            assert len(values) == len(USERS), f"{row} {action} {mount}: {values}"
            cells.update({(mount, user): value for user, value in zip(USERS, values)})
        assert (row, action) not in table, f"{row} {action} twice"
        table[row, action] = cells
    return table


EXPECTED = parse_expected(EXPECTED_TABLE)

# -- the client: stdlib only, one process per user and mount ------------------------------------

CLIENT = r"""
import ctypes, errno, json, os, stat, sys

mount, probes, writes, tag = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
GET_REPORT0, EXTEND_RTMR = 0xC4405401, 0x40315403


def ioctl(fd, cmd, data):
    buf = ctypes.create_string_buffer(data, len(data))
    if libc.ioctl(fd, cmd, ctypes.addressof(buf)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def with_fd(path, flags, act):
    fd = os.open(path, flags)
    try:
        act(fd)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)  # a close that fails (an inblob commit) is the outcome too


def write_all(data):
    def act(fd):
        n = os.write(fd, data)
        if n != len(data):
            raise OSError(0, "short write")
    return act


def attempt(row, action, rel):
    path = os.path.join(mount, rel)
    if action == "stat":
        st = os.lstat(path)
        owners.add("%d:%d" % (st.st_uid, st.st_gid))
        return "%04o" % stat.S_IMODE(st.st_mode)
    if action == "read":
        with_fd(path, os.O_RDONLY, lambda fd: os.read(fd, 1 << 20))
    elif action == "write":
        flags = os.O_RDWR if rel == "tdreport" else os.O_WRONLY
        with_fd(path, flags, write_all(bytes.fromhex(writes.get(row, writes.get(rel, "78")))))
    elif action.startswith(("open", "GET_REPORT0", "EXTEND_RTMR")):
        flags = os.O_RDWR if "O_RDWR" in action else os.O_RDONLY
        if action.startswith("open"):
            with_fd(path, flags, lambda fd: None)
        elif action.startswith("GET_REPORT0"):
            with_fd(path, flags, lambda fd: ioctl(fd, GET_REPORT0, bytes(1088)))
        else:
            with_fd(path, flags, lambda fd: ioctl(fd, EXTEND_RTMR, bytes(range(48)) + bytes([3])))
    elif action == "mkdir":
        os.mkdir(os.path.join(path, "new-" + tag))
        os.rmdir(os.path.join(path, "new-" + tag))
    elif action == "rmdir":
        os.rmdir(os.path.join(path, "inst"))
    else:
        raise ValueError(action)
    return "ok"


owners = set()
out = []
for row, action, rel in probes:
    try:
        result = attempt(row, action, rel)
    except OSError as exc:
        result = errno.errorcode.get(exc.errno, "errno %s" % exc.errno)
    out.append([row, action, rel, result])
print(json.dumps({"uid": os.getuid(), "owners": sorted(owners), "results": out}))
"""


def probes() -> List[Tuple[str, str, str]]:
    """(row, action, path) in the order tried: rmdir of root's instance last."""
    out = [(row, action, path) for row, (paths, actions) in ROWS.items() for action in actions
           for path in paths if action != "rmdir"]
    return out + [(row, "rmdir", paths[0]) for row, (paths, actions) in ROWS.items() if "rmdir" in actions]


def run_client(mountpoint: str, user: str) -> dict:
    prefix = SETPRIV if user == "nobody" else []
    cmd = [*prefix, SYSTEM_PYTHON, "-c", CLIENT, mountpoint, json.dumps(probes()), json.dumps(WRITES), user]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, cwd="/")
    assert done.returncode == 0, f"the {user} client failed:\n{done.stderr}"
    result = json.loads(done.stdout)
    assert result["uid"] == (NOBODY if user == "nobody" else 0), result["uid"]
    return result


def prepare_instance(m: Mounted) -> None:
    """Root's configfs instance INST with a committed inblob (so its outblob can be read);
    a ro mount refuses the mkdir (EROFS), and then there is no instance."""
    try:
        os.mkdir(m.path(INST))
    except OSError as exc:
        assert exc.errno == errno.EROFS, exc
        return
    with open(m.path(f"{INST}/inblob"), "wb", buffering=0) as f:
        f.write(bytes(64))


def clean_instances(m: Mounted) -> None:
    report = m.path("tsm/report")
    for name in os.listdir(report):
        os.rmdir(os.path.join(report, name))


@pytest.fixture
def public_mounts():
    """Mounts under a world-searchable directory (pytest's tmp_path is 0700): ``nobody``
    reaches the mountpoint and only the mount's own rules decide. All stopped at the end."""
    base = tempfile.mkdtemp(prefix="tdxfs-perm-", dir="/tmp")
    os.chmod(base, 0o755)
    leakcheck.watch(base)
    started: List[Mounted] = []

    def start(name: str, *args: str) -> Mounted:
        m = Mounted(os.path.join(base, name), *args)
        started.append(m)
        return m.start()

    try:
        yield start
    finally:
        try:
            stop_all(started)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def measure(m: Mounted, mount: str) -> Tuple[Dict[Tuple[str, str, str], str], List[str]]:
    """Every (row, action, path) as root and as nobody: the outcome per (row, action, path,
    user), and any file whose owner is not the mount's."""
    outcome: Dict[Tuple[str, str, str], Dict[str, str]] = {}
    wrong_owner = []
    for user in USERS:
        prepare_instance(m)
        try:
            result = run_client(m.mountpoint, user)
        finally:
            clean_instances(m)
        for row, action, path, got in result["results"]:
            outcome.setdefault((row, action, path), {})[user] = got
        expected_owner = OWNER.get(mount, "0:0")
        wrong_owner += [f"{user} saw owner {o}, documented {expected_owner}" for o in result["owners"]
                        if o != expected_owner]
    return outcome, wrong_owner


@pytest.mark.parametrize("mount", list(MOUNTS))
def test_who_may_do_what(public_mounts, mount):
    """Every cell of the table for one mount kind, for root and for nobody."""
    m = public_mounts("mnt", *MOUNTS[mount])
    outcome, wrong_owner = measure(m, mount)
    mismatches = []
    for (row, action, path), by_user in outcome.items():
        for user in USERS:
            want = EXPECTED[row, action][mount, user]
            if by_user[user] != want:
                mismatches.append(f"{mount} {user}: {action} {path or '/'}: got {by_user[user]}, documented {want}")
    assert not mismatches + wrong_owner, "\n".join(mismatches + wrong_owner)
    assert {(r, a) for r, a, _ in outcome} == set(EXPECTED), "a row of the table was not tried"


def test_a_refused_write_changes_nothing(public_mounts):
    """The refusals above are real: after nobody's tries on an allow_other,umask=000 mount
    (every write refused), the registers and REPORTDATA are what they were."""
    m = public_mounts("mnt", *MOUNTS["umask=000"])
    names = ["reportdata", *(f"rtmr{i}" for i in range(4)), "eventlog"]
    before = {n: Path(m.path(n)).read_bytes() for n in names}
    prepare_instance(m)
    try:
        run_client(m.mountpoint, "nobody")
    finally:
        clean_instances(m)
    assert {n: Path(m.path(n)).read_bytes() for n in names} == before


def test_the_client_tells_an_allowed_write_from_a_refused_one(public_mounts):
    """The probe can fail: with uid=65534 nobody's extend through rtmr3 lands (RTMR3 moves)."""
    m = public_mounts("mnt", *MOUNTS["uid=gid=65534"])
    before = Path(m.path("rtmr3")).read_bytes()
    prepare_instance(m)
    try:
        result = run_client(m.mountpoint, "nobody")
    finally:
        clean_instances(m)
    assert ["rtmr0-3", "write", "rtmr3", "ok"] in result["results"]
    assert Path(m.path("rtmr3")).read_bytes() != before


# -- the published table is this table ----------------------------------------------------------

def markdown_table() -> str:
    """The table as docs/reliability.md shows it."""
    head = "| file | action | " + " | ".join(f"{mount} {user}" for mount, user in COLUMNS) + " |"
    rule = "|" + "---|" * (2 + len(COLUMNS))
    lines = [head, rule]
    for (row, action), cells in EXPECTED.items():
        shown = row.replace("INST/", "instance ").replace(",", ", ")
        lines.append(f"| `{shown}` | {action} | " + " | ".join(cells[c] for c in COLUMNS) + " |")
    return "\n".join(lines)


def test_the_documented_table_is_the_tested_one():
    text = DOC.read_text()
    assert "## Who may do what" in text, f"{DOC} has no 'Who may do what' section"
    section = text.split("## Who may do what", 1)[1].split("\n## ", 1)[0]
    assert markdown_table() in section, \
        f"docs/reliability.md's matrix differs from the test's; it should read:\n{markdown_table()}"

