"""``MOUNT/measurements/``: the kernel's tsm-mr files through a real mount (issue 7, section 1).

The server runs in its own process (``Mounted``); this process is only a client, driving the
files with the shell tools the kernel's ABI document shows (``xxd -p -c 48``, ``hexdump``,
``dd bs=48 count=1``, ``echo -n``) and with os calls. Expected values come from the
reference facts (kernel-files.md, tdx-abi.md offsets) and hashlib, never from tdxfs.
Every refusal checks its errno, one 'rejected' line in the daemon's log, and that nothing
a client can observe changed.
"""

import errno
import hashlib
import os
import stat

import pytest

from tdxfs.client.ioctl import TdxGuest
from tests.fsclient import Rejections, put, refused, slurp
from tests.mounting import Mounted, sh

# -- reference facts (kernel-files.md, tdx-abi.md) ----------------------------------------------

RTMR_AT = [720, 768, 816, 864]
STATIC_AT = {"mrtd": 528, "mrconfigid": 576, "mrowner": 624, "mrownerconfig": 672}
# file -> (mode, offset of its value in a TDREPORT)
FILES = {
    "mrtd:sha384": (0o444, STATIC_AT["mrtd"]),
    **{f"rtmr{i}:sha384": (0o644, RTMR_AT[i]) for i in range(4)},
    "mrconfigid": (0o444, STATIC_AT["mrconfigid"]),
    "mrowner": (0o444, STATIC_AT["mrowner"]),
    "mrownerconfig": (0o444, STATIC_AT["mrownerconfig"]),
}
RTMR_FILES = [f"rtmr{i}:sha384" for i in range(4)]
READ_ONLY = [name for name, (mode, _) in FILES.items() if mode == 0o444]

DIGEST = hashlib.sha384(b"tdxfs tsm-mr test event").digest()


def mpath(m: Mounted, name: str) -> str:
    return m.path(os.path.join("measurements", name))


def extended(old: bytes, data: bytes) -> bytes:
    return hashlib.sha384(old + data).digest()


def report(m: Mounted) -> bytes:
    data = slurp(m.path("tdreport"))
    assert len(data) == 1024
    return data


def hexfile(m: Mounted, name: str) -> bytes:
    text = slurp(m.path(name))
    assert len(text) == 97 and text.endswith(b"\n"), text
    return bytes.fromhex(text[:-1].decode())


def observed(m: Mounted) -> dict:
    """Everything a client can see of the registers: tsm-mr files, root files, a report."""
    return {**{name: slurp(mpath(m, name)) for name in FILES},
            **{f"rtmr{i}": slurp(m.path(f"rtmr{i}")) for i in range(4)},
            "tdreport": report(m)}


def refused_sh(m: Mounted, err: int, op: str, name: str, cmd: str) -> None:
    before = observed(m)
    log = Rejections(m)
    done = sh(f"cd {m.path('measurements')} && {cmd}")
    assert done.returncode != 0, done
    log.expect_one(op, f"/measurements/{name}", err)
    assert observed(m) == before


# -- the directory ------------------------------------------------------------------------------------


@pytest.mark.shared_mount
def test_listing_modes_and_sizes(mnt):
    assert sorted(os.listdir(mnt.path("measurements"))) == sorted(FILES)
    st = os.stat(mnt.path("measurements"))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
    for name, (mode, _) in FILES.items():
        st = os.stat(mpath(mnt, name))
        assert stat.S_ISREG(st.st_mode), name
        assert stat.S_IMODE(st.st_mode) == mode, (name, oct(st.st_mode))
        assert st.st_size == 48, name
    out = sh(f"ls -l {mnt.path('measurements')}", check=True).stdout.decode()
    assert "-rw-r--r-- 1 root root 48" in out and "-r--r--r-- 1 root root 48" in out, out


# -- reads ----------------------------------------------------------------------------------------------


def test_each_file_is_48_raw_bytes_of_the_report(mnt):
    put(mnt.path("rtmr3"), DIGEST)  # RTMR3 away from zero
    rep = report(mnt)
    for name, (_, at) in FILES.items():
        raw = slurp(mpath(mnt, name))
        assert raw == rep[at : at + 48], name
        model_name = name.split(":")[0]
        assert raw == hexfile(mnt, model_name), name


def test_xxd_and_hexdump_read_it(mnt):
    put(mnt.path("rtmr3"), DIGEST)
    value = hexfile(mnt, "rtmr3")
    path = mpath(mnt, "rtmr3:sha384")
    assert sh(f"xxd -p -c 48 {path}", check=True).stdout == value.hex().encode() + b"\n"
    out = sh(f"hexdump -v -e '48/1 \"%02x\" \"\\n\"' {path}", check=True).stdout
    assert out == value.hex().encode() + b"\n"
    out = sh(f"hexdump -C {mpath(mnt, 'mrtd:sha384')}", check=True).stdout.decode()
    assert out.splitlines()[-1] == "00000030", out  # 48 bytes, no newline
    assert sh(f"cat {path}", check=True).stdout == value
    assert sh(f"dd if={path} bs=4096 count=1 status=none", check=True).stdout == value
    assert sh(f"dd if={path} bs=7 status=none", check=True).stdout == value


@pytest.mark.shared_mount
def test_read_past_the_end_is_empty(mnt):
    fd = os.open(mpath(mnt, "rtmr2:sha384"), os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 48) == b""
        assert os.pread(fd, 100, 40) == hexfile(mnt, "rtmr2")[40:]
    finally:
        os.close(fd)


# -- extends --------------------------------------------------------------------------------------------


def test_dd_extends_and_every_interface_sees_it(mnt, tmp_path):
    digest = tmp_path / "digest.bin"
    digest.write_bytes(DIGEST)
    before = slurp(mpath(mnt, "rtmr3:sha384"))
    sh(f"dd if={digest} of={mpath(mnt, 'rtmr3:sha384')} bs=48 count=1 status=none", check=True)
    want = extended(before, DIGEST)
    assert slurp(mpath(mnt, "rtmr3:sha384")) == want
    assert hexfile(mnt, "rtmr3") == want
    assert report(mnt)[RTMR_AT[3] : RTMR_AT[3] + 48] == want
    with TdxGuest(mnt.path("tdx_guest")) as dev:
        assert dev.get_report0(bytes(64))[RTMR_AT[3] : RTMR_AT[3] + 48] == want
    assert mnt.rejections() == []


def test_echo_n_of_48_bytes_extends(mnt):
    text = b"tdxfs-measurement-register-48-bytes-of-ascii-ok_"
    assert len(text) == 48
    before = slurp(mpath(mnt, "rtmr2:sha384"))
    sh(f"echo -n {text.decode()} > {mpath(mnt, 'rtmr2:sha384')}", check=True)
    assert slurp(mpath(mnt, "rtmr2:sha384")) == extended(before, text)
    assert mnt.rejections() == []


@pytest.mark.parametrize("i", range(4))
def test_every_rtmr_is_extendable(mnt, i):
    name = f"rtmr{i}:sha384"
    before = slurp(mpath(mnt, name))
    assert put(mpath(mnt, name), DIGEST) == 48
    assert slurp(mpath(mnt, name)) == extended(before, DIGEST)
    assert hexfile(mnt, f"rtmr{i}") == extended(before, DIGEST)


def test_extends_from_other_interfaces_are_read_here(mnt):
    before = slurp(mpath(mnt, "rtmr3:sha384"))
    put(mnt.path("rtmr3"), DIGEST.hex().encode() + b"\n")
    after_file = extended(before, DIGEST)
    assert slurp(mpath(mnt, "rtmr3:sha384")) == after_file
    with TdxGuest(mnt.path("tdx_guest")) as dev:
        dev.extend_rtmr(3, DIGEST)
    assert slurp(mpath(mnt, "rtmr3:sha384")) == extended(after_file, DIGEST)


def test_kept_open_fd_rereads_at_offset_0(mnt):
    fd = os.open(mpath(mnt, "rtmr3:sha384"), os.O_RDWR)
    try:
        before = os.pread(fd, 48, 0)
        assert os.pwrite(fd, DIGEST, 0) == 48
        assert os.pread(fd, 48, 0) == extended(before, DIGEST)
    finally:
        os.close(fd)


def test_longer_write_is_clamped_and_echo_newline_meets_efbig(mnt):
    """sysfs clamps a write at offset 0 to the size and it succeeds; the rest of the
    buffer is then a write at offset 48: EFBIG (what `echo` without -n meets)."""
    name = "rtmr3:sha384"
    before = slurp(mpath(mnt, name))
    log = Rejections(mnt)
    fd = os.open(mpath(mnt, name), os.O_WRONLY)
    try:
        assert os.write(fd, DIGEST + b"\n") == 48
        with pytest.raises(OSError) as exc:
            os.write(fd, b"\n")
        assert exc.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    log.expect_one("write", f"/measurements/{name}", errno.EFBIG)
    assert slurp(mpath(mnt, name)) == extended(before, DIGEST)


def test_shell_echo_without_n_extends_48_then_fails(mnt):
    text = b"tdxfs-measurement-register-48-bytes-of-ascii-ok_"
    name = "rtmr3:sha384"
    before = slurp(mpath(mnt, name))
    log = Rejections(mnt)
    done = sh(f"echo {text.decode()} > {mpath(mnt, name)}")
    assert done.returncode != 0, done
    log.expect_one("write", f"/measurements/{name}", errno.EFBIG)
    assert slurp(mpath(mnt, name)) == extended(before, text)  # the first 48 bytes went in


@pytest.mark.shared_mount
def test_o_trunc_alone_is_no_write(mnt):
    before = observed(mnt)
    sh(f": > {mpath(mnt, 'rtmr3:sha384')}", check=True)
    os.close(os.open(mpath(mnt, "rtmr3:sha384"), os.O_WRONLY | os.O_TRUNC))
    assert observed(mnt) == before
    assert mnt.rejections() == []


# -- refusals -------------------------------------------------------------------------------------------


@pytest.mark.shared_mount
@pytest.mark.parametrize("size", [1, 47])
def test_shorter_write_is_einval(mnt, size):
    name = "rtmr3:sha384"
    refused(mnt, observed, errno.EINVAL, "write", f"/measurements/{name}",
            lambda: put(mpath(mnt, name), DIGEST[:size]))


@pytest.mark.shared_mount
def test_short_write_by_shell_is_einval(mnt):
    refused_sh(mnt, errno.EINVAL, "write", "rtmr3:sha384", "printf abc > rtmr3:sha384")


@pytest.mark.shared_mount
@pytest.mark.parametrize("offset,err", [(48, errno.EFBIG), (100, errno.EFBIG), (1, errno.EINVAL),
                                        (47, errno.EINVAL)])
def test_write_at_an_offset(mnt, offset, err):
    name = "rtmr3:sha384"

    def write_at():
        fd = os.open(mpath(mnt, name), os.O_WRONLY)
        try:
            os.pwrite(fd, DIGEST, offset)
        finally:
            os.close(fd)

    refused(mnt, observed, err, "write", f"/measurements/{name}", write_at)


@pytest.mark.shared_mount
def test_dd_seek_past_the_end_is_efbig(mnt, tmp_path):
    digest = tmp_path / "digest.bin"
    digest.write_bytes(DIGEST)
    refused_sh(mnt, errno.EFBIG, "write", "rtmr3:sha384",
               f"dd if={digest} of=rtmr3:sha384 bs=48 count=1 seek=1 conv=notrunc status=none")


@pytest.mark.shared_mount
@pytest.mark.parametrize("name", READ_ONLY)
def test_read_only_registers_refuse_writes(mnt, name):
    refused(mnt, observed, errno.EACCES, "open", f"/measurements/{name}",
            lambda: put(mpath(mnt, name), DIGEST))


@pytest.mark.shared_mount
def test_no_create_or_remove(mnt):
    refused(mnt, observed, errno.EPERM, "unlink", "/measurements/rtmr3:sha384",
            lambda: os.unlink(mpath(mnt, "rtmr3:sha384")))
    with pytest.raises(OSError) as exc:
        os.stat(mpath(mnt, "rtmr4:sha384"))
    assert exc.value.errno == errno.ENOENT
