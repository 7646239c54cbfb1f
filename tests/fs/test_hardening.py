"""Issue 8, section 1: hardening of the FUSE front end, through real mounts.

- Defect 3: ``umask=``, ``uid=``, ``gid=`` never widen a file's mode. libfuse's high-level
  API would set every file's permission bits to ``0777 & ~umask`` itself (lib/fuse.c,
  ``set_stat``); tdxfs applies the options in its own getattr, where ``umask`` only
  removes bits. Checked with ``stat`` and with a real unprivileged user (``setpriv``).
- Defects 6 and 7: every path and reason in a log line is escaped, so one refused request
  is one line: a configfs instance named ``x\\nFAKE`` cannot forge a line, and a name that
  is not UTF-8 logs its line instead of a "--- Logging error ---" traceback.
- Defect 10: ``mknod`` in ``tsm/`` answers as Linux does (a regular file is a create:
  EACCES; a FIFO, socket or device node: EPERM), with configfs's own reason.
- Defect 11: ``utimensat``/``touch`` set the times, as sysfs and configfs do for root;
  extended attributes answer as sysfs (ENODATA, an empty list) and configfs (EOPNOTSUPP)
  do, and refusals are logged; a zero-length write is answered 0 by the kernel.

The expected modes below are the documented table (README, "Mounting"), written out here
rather than taken from the code under test.
"""

import errno
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from tests.fsclient import Rejections, put, slurp
from tests.mounting import Mounted, sh

# -- the documented mode table (README "Mounting"), by path relative to the mount ------------

INSTANCE = "tsm/report/x"
MODES = {
    "": 0o755, "tsm": 0o755, "tsm/report": 0o755, INSTANCE: 0o755,
    "measurements": 0o755, "acpi": 0o755, "acpi/data": 0o755,
    "tdx_guest": 0o600,
    "reportdata": 0o644, "tdreport": 0o644, "eventlog": 0o644,
    **{f"rtmr{i}": 0o644 for i in range(4)},
    **{name: 0o444 for name in ("mrtd", "mrconfigid", "mrowner", "mrownerconfig", ".stats")},
    **{f"measurements/rtmr{i}:sha384": 0o644 for i in range(4)},
    **{f"measurements/{name}": 0o444 for name in ("mrtd:sha384", "mrconfigid", "mrowner", "mrownerconfig")},
    "acpi/CCEL": 0o400, "acpi/data/CCEL": 0o400,
    f"{INSTANCE}/inblob": 0o200, f"{INSTANCE}/outblob": 0o444,
    f"{INSTANCE}/provider": 0o444, f"{INSTANCE}/generation": 0o444,
}
EXT = bytes(range(48))
NOBODY = 65534
OTHER = 65533  # a second unprivileged user
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by every user (the venv's may not be)


@pytest.fixture
def public_mount():
    """Mounts under a world-searchable directory (pytest's tmp_path is 0700), with a
    configfs instance made, so other users can reach every file."""
    base = tempfile.mkdtemp(prefix="tdxfs-hardening-", dir="/tmp")
    os.chmod(base, 0o755)
    started = []

    def start(*args):
        m = Mounted(os.path.join(base, f"mnt{len(started)}"), *args).start()
        started.append(m)
        os.mkdir(m.path(INSTANCE))
        return m

    try:
        yield start
    finally:
        for m in started:
            m.stop()
        shutil.rmtree(base)


PROBE = """
import errno, os, sys
path, how = sys.argv[1], sys.argv[2]
flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[how]
try:
    fd = os.open(path, flags)
except OSError as exc:
    print(errno.errorcode[exc.errno])
else:
    if how != "r":
        try:
            os.write(fd, sys.argv[3].encode() if len(sys.argv) > 3 else b"")
        except OSError as exc:
            print("write", errno.errorcode[exc.errno])
            raise SystemExit
    os.close(fd)
    print("ok")
"""


def open_as(uid: int, gid: int, path: str, how: str, data: str = "") -> str:
    """What an unprivileged process gets opening ``path`` ("r", "w", "rw"): "ok" or the errno name."""
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", SYSTEM_PYTHON, "-c", PROBE, path, how]
    done = subprocess.run(cmd + ([data] if data else []), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done
    return done.stdout.strip()


def rtmr3(m: Mounted) -> bytes:
    return slurp(m.path("rtmr3"))


# -- defect 3: mount options never widen a mode ---------------------------------------------------


@pytest.mark.parametrize("umask", ["000", "022", "027", "0077"])
def test_umask_only_narrows_the_table(public_mount, umask):
    m = public_mount("-o", f"allow_other,umask={umask}")
    mask = int(umask, 8)
    shown = {rel: stat.S_IMODE(os.stat(m.path(rel) if rel else m.mountpoint).st_mode) for rel in MODES}
    assert shown == {rel: mode & ~mask for rel, mode in MODES.items()}
    assert stat.S_ISREG(os.stat(m.path("tdx_guest")).st_mode)


@pytest.mark.parametrize("umask", ["000", "022"])
def test_umask_gives_other_users_nothing(public_mount, umask):
    """An unprivileged user of an allow_other,umask= mount gets only what the table gives
    every user: reading the world-readable files, nothing more."""
    m = public_mount("-o", f"allow_other,umask={umask}")
    before = rtmr3(m)
    for how in ("r", "w", "rw"):
        assert open_as(NOBODY, NOBODY, m.path("tdx_guest"), how) == "EACCES", how
    assert open_as(NOBODY, NOBODY, m.path("rtmr3"), "w", EXT.hex()) == "EACCES"
    assert open_as(NOBODY, NOBODY, m.path("measurements/rtmr3:sha384"), "w") == "EACCES"
    assert open_as(NOBODY, NOBODY, m.path("reportdata"), "w", "00" * 64) == "EACCES"
    assert open_as(NOBODY, NOBODY, m.path("eventlog"), "w") == "EACCES"
    assert open_as(NOBODY, NOBODY, m.path("acpi/CCEL"), "r") == "EACCES"
    assert open_as(NOBODY, NOBODY, m.path(f"{INSTANCE}/inblob"), "w") == "EACCES"
    assert open_as(NOBODY, NOBODY, m.path("mrtd"), "w") == "EACCES"
    # what the table does give others: reading 0644/0444 files
    assert open_as(NOBODY, NOBODY, m.path("rtmr3"), "r") == "ok"
    assert open_as(NOBODY, NOBODY, m.path("mrtd"), "r") == "ok"
    assert rtmr3(m) == before
    assert m.rejections() == []  # all refused by the kernel's permission check


def test_uid_gid_change_the_owner_never_the_mode(public_mount):
    m = public_mount("-o", f"allow_other,uid={NOBODY},gid={NOBODY},umask=000")
    for rel, mode in MODES.items():
        st = os.stat(m.path(rel) if rel else m.mountpoint)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, NOBODY, NOBODY), rel
    before = rtmr3(m)
    # a member of the group gets the group bits only: none on tdx_guest, no write anywhere
    for how in ("r", "w", "rw"):
        assert open_as(OTHER, NOBODY, m.path("tdx_guest"), how) == "EACCES", how
    assert open_as(OTHER, NOBODY, m.path("rtmr3"), "w", EXT.hex()) == "EACCES"
    assert open_as(OTHER, NOBODY, m.path("acpi/CCEL"), "r") == "EACCES"
    assert open_as(OTHER, NOBODY, m.path("rtmr3"), "r") == "ok"
    # the owner gets the owner's bits (as a chown of /dev/tdx_guest would), read-only stays read-only
    assert open_as(NOBODY, NOBODY, m.path("tdx_guest"), "rw") == "ok"
    for rel in ("mrtd", "mrowner", ".stats", "measurements/mrtd:sha384", "acpi/CCEL",
                f"{INSTANCE}/outblob", f"{INSTANCE}/generation"):
        assert open_as(NOBODY, NOBODY, m.path(rel), "w") == "EACCES", rel
    assert rtmr3(m) == before


# -- defects 6 and 7: one request, one line ------------------------------------------------------------


@pytest.fixture
def logged(tmp_path):
    """A mount logging to a file (the daemon's --log: a strict-encoding file handler)."""
    log = tmp_path / "daemon.log"
    with Mounted(tmp_path / "mnt", "--log", str(log)) as m:
        yield m, log


def log_lines(log) -> list:
    with open(log, "rb") as f:
        return f.read().split(b"\n")[:-1]


def new_lines(log, before: list) -> list:
    return log_lines(log)[len(before):]


FORGED = "x\nFAKE tdxfs[1] mnt: rejected write rtmr3: EINVAL (forged)"  # no "/": one name


def test_a_newline_in_a_name_cannot_forge_a_log_line(logged):
    m, log = logged
    os.mkdir(m.path(f"tsm/report/{FORGED}"))  # a legal configfs name
    before = log_lines(log)
    with pytest.raises(OSError) as exc:
        os.mkdir(m.path(f"tsm/report/{FORGED}/sub"))
    assert exc.value.errno == errno.EPERM
    new = new_lines(log, before)
    assert len(new) == 1, new
    assert b"rejected mkdir /tsm/report/x\\x0aFAKE tdxfs[1] mnt: rejected write rtmr3: EINVAL (forged)/sub: EPERM (" \
        in new[0], new


def test_a_newline_in_a_reason_cannot_forge_a_log_line(logged):
    """rename's reason names the new path: the reason is escaped too."""
    m, log = logged
    before = log_lines(log)
    with pytest.raises(OSError) as exc:
        os.rename(m.path("rtmr3"), m.path(FORGED))
    assert exc.value.errno == errno.EPERM
    new = new_lines(log, before)
    assert len(new) == 1, new
    assert new[0].count(b"rejected") == 2 and b"\\x0aFAKE" in new[0], new
    assert os.path.exists(m.path("rtmr3"))


def test_a_backslash_in_a_name_is_escaped_too(logged):
    """A literal backslash is doubled, so a name spelling "\\x0a" is never taken for an
    escaped newline."""
    m, log = logged
    before = log_lines(log)
    with pytest.raises(OSError):
        os.mkdir(m.path("a\\x0ab"))
    new = new_lines(log, before)
    assert len(new) == 1 and b"rejected mkdir /a\\\\x0ab: EPERM (" in new[0], new


def test_a_refusal_on_a_non_utf8_name_logs_its_one_line(logged):
    m, log = logged
    before = log_lines(log)
    target = os.fsencode(m.path("tsm/report")) + b"/\xff"
    done = subprocess.run([b"touch", target], capture_output=True, timeout=30)
    assert done.returncode != 0 and b"Permission denied" in done.stderr, done
    with pytest.raises(OSError) as exc:
        os.mkdir(os.fsencode(m.mountpoint) + b"/\xfe\xff")
    assert exc.value.errno == errno.EPERM
    new = new_lines(log, before)
    assert len(new) == 2, new
    assert b"rejected create /tsm/report/\\xff: EACCES (" in new[0], new
    assert b"rejected mkdir /\\xfe\\xff: EPERM (" in new[1], new
    assert "Logging error" not in m.log() and "Traceback" not in m.log(), m.log()


def test_printable_non_ascii_names_are_logged_as_they_are(logged):
    """Printable text stays readable (UTF-8 in the log); only bytes that are not UTF-8 and
    non-printable characters are escaped."""
    m, log = logged
    before = log_lines(log)
    with pytest.raises(OSError):
        os.mkdir(m.path("café\u2028x"))  # U+2028, a line separator to some log viewers
    new = new_lines(log, before)
    assert len(new) == 1 and "rejected mkdir /café\\u2028x: EPERM (".encode() in new[0], new


def test_a_non_utf8_configfs_instance_works_and_logs(logged):
    m, log = logged
    inst = os.fsencode(m.path("tsm/report")) + b"/\xff\n"
    os.mkdir(inst)
    put(inst + b"/inblob", bytes(64))
    assert slurp(inst + b"/generation") == b"1\n"
    before = log_lines(log)
    with pytest.raises(OSError) as exc:
        os.open(inst + b"/inblob", os.O_RDONLY)
    assert exc.value.errno == errno.EACCES
    new = new_lines(log, before)
    assert len(new) == 1 and b"rejected open /tsm/report/\\xff\\x0a/inblob: EACCES (" in new[0], new
    os.rmdir(inst)


# -- defect 10: mknod in configfs ----------------------------------------------------------------------


def test_mknod_in_configfs_answers_as_linux(mnt):
    """Linux routes mknod(S_IFREG) to vfs_create (fs/namei.c do_mknodat), which a directory
    without ->create (configfs) answers EACCES, as it answers open(O_CREAT); other node types
    go to vfs_mknod, answered EPERM without ->mknod. (libfuse's high-level API turns the
    regular-file MKNOD into a create too.)"""
    inst = mnt.path(INSTANCE)
    os.mkdir(inst)
    log = Rejections(mnt)
    for mode, err in ((stat.S_IFREG | 0o644, errno.EACCES), (0o644, errno.EACCES),
                      (stat.S_IFIFO | 0o644, errno.EPERM), (stat.S_IFSOCK | 0o644, errno.EPERM)):
        with pytest.raises(OSError) as exc:
            os.mknod(os.path.join(inst, "node"), mode)
        assert exc.value.errno == err, oct(mode)
    new = log.new()
    assert len(new) == 4, new
    assert all("(configfs" in line for line in new), new  # configfs's reasons, not the root's
    assert [line.split(" rejected ")[1].split(":")[0] for line in new] == [
        f"create /{INSTANCE}/node", f"create /{INSTANCE}/node", f"mknod /{INSTANCE}/node", f"mknod /{INSTANCE}/node"]
    assert sorted(os.listdir(inst)) == ["generation", "inblob", "outblob", "provider"]


def test_namespace_refusals_carry_configfs_reasons(mnt):
    inst = mnt.path(INSTANCE)
    os.mkdir(inst)
    log = Rejections(mnt)
    calls = [lambda: os.unlink(os.path.join(inst, "inblob")),
             lambda: os.rename(os.path.join(inst, "inblob"), os.path.join(inst, "x")),
             lambda: os.symlink("inblob", os.path.join(inst, "s")),
             lambda: os.link(os.path.join(inst, "inblob"), os.path.join(inst, "h")),
             lambda: os.chmod(os.path.join(inst, "inblob"), 0o600),
             lambda: os.chown(os.path.join(inst, "inblob"), 1, 1)]
    for call in calls:
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == errno.EPERM
    new = log.new()
    assert len(new) == len(calls) and all("EPERM (configfs" in line for line in new), new


# -- defect 11: times, xattrs, zero-length writes ---------------------------------------------------------

A_TIME, M_TIME = 1_600_000_000_123_456_789, 1_700_000_000_987_654_321


def test_utimensat_sets_the_times_as_sysfs_does(mnt):
    """kernfs and configfs store the times a setattr gives them (root, or the owner, may
    set them): so does tdxfs, per path, in memory."""
    before = slurp(mnt.path("rtmr3"))
    other = os.stat(mnt.path("rtmr2"))
    log = Rejections(mnt)
    for rel in ("rtmr3", "mrtd", "tdx_guest", "acpi/CCEL", ""):
        os.utime(mnt.path(rel) if rel else mnt.mountpoint, ns=(A_TIME, M_TIME))
        st = os.stat(mnt.path(rel) if rel else mnt.mountpoint)
        assert (st.st_atime_ns, st.st_mtime_ns) == (A_TIME, M_TIME), rel
    # touch: open O_WRONLY|O_CREAT, then futimens(fd, NULL): both times become now
    done = sh(f"touch {mnt.path('rtmr3')} {mnt.path('tdx_guest')} {mnt.mountpoint}")
    assert done.returncode == 0, done
    for p in (mnt.path("rtmr3"), mnt.path("tdx_guest"), mnt.mountpoint):
        st = os.stat(p)
        assert st.st_mtime_ns not in (M_TIME, other.st_mtime_ns) and st.st_atime_ns != A_TIME, p
    # touch -a: the atime only (UTIME_OMIT for the mtime)
    os.utime(mnt.path("rtmr3"), ns=(A_TIME, M_TIME))
    done = sh(f"touch -a -d @1500000000 {mnt.path('rtmr3')}")
    assert done.returncode == 0, done
    st = os.stat(mnt.path("rtmr3"))
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_500_000_000 * 10**9, M_TIME)
    assert slurp(mnt.path("rtmr3")) == before
    st = os.stat(mnt.path("rtmr2"))
    assert (st.st_atime_ns, st.st_mtime_ns) == (other.st_atime_ns, other.st_mtime_ns)
    assert log.new() == []


def test_utimensat_on_configfs_is_forgotten_with_the_instance(mnt):
    inst = mnt.path(INSTANCE)
    os.mkdir(inst)
    os.utime(os.path.join(inst, "generation"), ns=(A_TIME, M_TIME))
    os.utime(inst, ns=(A_TIME, M_TIME))
    assert os.stat(os.path.join(inst, "generation")).st_mtime_ns == M_TIME
    assert os.stat(inst).st_mtime_ns == M_TIME
    os.rmdir(inst)
    os.mkdir(inst)
    assert os.stat(os.path.join(inst, "generation")).st_mtime_ns != M_TIME
    assert os.stat(inst).st_mtime_ns != M_TIME


@pytest.mark.shared_mount
def test_xattrs_answer_as_sysfs(mnt):
    p = mnt.path("rtmr3")
    before = slurp(p)
    log = Rejections(mnt)
    assert os.listxattr(p) == [] and os.listxattr(mnt.mountpoint) == []
    for name in ("user.test", "security.capability", "trusted.x"):
        with pytest.raises(OSError) as exc:
            os.getxattr(p, name)
        assert exc.value.errno == errno.ENODATA, name
    assert log.new() == []  # a missing attribute is an answer (debug level), like a lookup miss
    with pytest.raises(OSError) as exc:
        os.setxattr(p, "user.test", b"v")
    assert exc.value.errno == errno.EOPNOTSUPP
    log.expect_one("setxattr", "/rtmr3", errno.EOPNOTSUPP)
    log = Rejections(mnt)
    with pytest.raises(OSError) as exc:
        os.removexattr(p, "user.test")
    assert exc.value.errno == errno.ENODATA
    log.expect_one("removexattr", "/rtmr3", errno.ENODATA)
    assert slurp(p) == before


def test_xattrs_answer_as_configfs(mnt):
    inst = mnt.path(INSTANCE)
    os.mkdir(inst)
    p = os.path.join(inst, "inblob")
    log = Rejections(mnt)
    assert os.listxattr(p) == [] and os.listxattr(inst) == []
    with pytest.raises(OSError) as exc:
        os.getxattr(p, "user.test")
    assert exc.value.errno == errno.EOPNOTSUPP
    assert log.new() == []
    with pytest.raises(OSError) as exc:
        os.setxattr(p, "user.test", b"v")
    assert exc.value.errno == errno.EOPNOTSUPP
    log.expect_one("setxattr", f"/{INSTANCE}/inblob", errno.EOPNOTSUPP)


@pytest.mark.shared_mount
def test_a_zero_length_write_is_answered_by_the_kernel(mnt):
    """sysfs answers 0 too (sysfs_kf_write: no count, nothing stored); through FUSE the
    request never reaches the daemon, so it is neither refused nor logged."""
    before = slurp(mnt.path("rtmr3"))
    log = Rejections(mnt)
    for name in ("rtmr3", "reportdata", "measurements/rtmr3:sha384"):
        fd = os.open(mnt.path(name), os.O_WRONLY)
        try:
            assert os.write(fd, b"") == 0
        finally:
            os.close(fd)
    assert slurp(mnt.path("rtmr3")) == before
    assert log.new() == []


# -- defect 8: the size a reader is told is what a read returns -----------------------------------------

WRITABLE_SIZES = {"reportdata": 129, "tdreport": 1024, "rtmr3": 97, "measurements/rtmr3:sha384": 48}


def _spliced(path) -> dict:
    """What sendfile and splice copy from a fresh fd: the kernel sizes both by its own idea
    of st_size, without asking the daemon."""
    out = {}
    fd = os.open(path, os.O_RDONLY)
    sink = os.open(os.devnull, os.O_WRONLY)
    r, w = os.pipe()
    try:
        out["sendfile"] = os.sendfile(sink, fd, 0, 1 << 16)
        out["splice"] = os.splice(fd, w, 1 << 16, offset_src=0)
        out["read"] = len(os.pread(fd, 1 << 16, 0))
    finally:
        for f in (fd, sink, r, w):
            os.close(f)
    return out


@pytest.mark.parametrize("name", sorted(WRITABLE_SIZES))
def test_a_truncating_open_does_not_shrink_the_size_readers_see(mnt, name):
    """``: > FILE``, or a short write after O_TRUNC, must not leave the kernel believing the
    file is empty (or as long as the write): a splice/sendfile reader right after gets the
    whole value, as a read does."""
    size = WRITABLE_SIZES[name]
    p = mnt.path(name)
    if name == "tdreport":  # write-only opens of tdreport are refused: O_RDWR, as a transaction opens it
        os.close(os.open(p, os.O_RDWR | os.O_TRUNC))
    else:
        assert sh(f": > {p}").returncode == 0
    assert _spliced(p) == {"sendfile": size, "splice": size, "read": size}
    if name != "tdreport":  # tdreport takes a value only on an O_RDWR fd, for that fd
        data = {"reportdata": bytes(64), "rtmr3": EXT, "measurements/rtmr3:sha384": EXT}[name]
        assert put(p, data, os.O_WRONLY | os.O_TRUNC) == len(data)
        assert _spliced(p) == {"sendfile": size, "splice": size, "read": size}
    assert os.stat(p).st_size == size


# -- the pieces, without a mount -------------------------------------------------------------------------


def test_printable_escapes_what_would_break_a_line():
    from tdxfs.errors import printable

    assert printable("/tsm/report/x") == "/tsm/report/x"
    assert printable("x\nFAKE") == "x\\x0aFAKE"
    assert printable("/\udcff\udcfe") == "/\\xff\\xfe"  # bytes that are not UTF-8, as FUSE bindings decode them
    assert printable("a\\x0ab") == "a\\\\x0ab"
    assert printable("a\\b", backslash=False) == "a\\b"
    assert printable("café\t\u2028\x7f") == "café\\x09\\u2028\\x7f"
    assert "\n" not in printable("".join(map(chr, range(0x20))))


def test_mount_options_are_taken_from_libfuse():
    from tdxfs.server.adapter import TdxfsOperations

    class Counter:
        def count(self, op, kind):
            pass

    class FakeTree:
        requests = Counter()

        def kind(self, path):
            return "x"

        def attrs(self, path):
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 0}

    ops = TdxfsOperations(FakeTree())
    rest = ops._mount_options({"uid": "65534", "gid": "100", "umask": "000", "allow_other": True, "fsname": "tdxfs"})
    assert rest == {"allow_other": True, "fsname": "tdxfs"}  # libfuse never sees uid/gid/umask
    st = ops.getattr("/tdx_guest")
    assert (st["st_mode"], st["st_uid"], st["st_gid"]) == (stat.S_IFREG | 0o600, 65534, 100)
    ops._mount_options({"umask": "0177"})
    assert ops.getattr("/tdx_guest")["st_mode"] == stat.S_IFREG | 0o600
    ops._mount_options({"umask": "077"})
    assert ops.getattr("/tdx_guest")["st_mode"] == stat.S_IFREG | 0o600
    ops._mount_options({"umask": "0277"})
    assert ops.getattr("/tdx_guest")["st_mode"] == stat.S_IFREG | 0o400
