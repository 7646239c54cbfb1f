"""configfs-tsm report instances at the files layer, without a mount.

Each test drives ``Tree`` the way the FUSE adapter does (mkdir, open, read, write,
release, truncate, refuse) and checks the answer configfs gives: the expected errnos are
written out here from the kernel's behaviour, never taken from the code under test.
"""

import errno
import os
import stat

import pytest

from tdxfs.errors import DeviceError, TdxfsError
from tdxfs.files import configfs
from tdxfs.files.nodes import TableError
from tdxfs.files.tree import Tree
from tdxfs.model.profile import default_profile
from tdxfs.model.td import Platform, TrustDomain
from tests.files.client import (REPORT, REPORTDATA_IN_FAKE_QUOTE, generation, inst, outblob, read_all,
                                read_handle, write_inblob)

NONCE = bytes(range(64))
OTHER = bytes(range(64, 128))
TCGETS = 0x5401


def refused(fn, *args) -> int:
    with pytest.raises(TdxfsError) as exc:
        fn(*args)
    return exc.value.errno


@pytest.fixture
def x(tree):
    """A fresh instance named x."""
    tree.mkdir(inst("x"))
    return "x"


# -- the tree ------------------------------------------------------------------------------------


def test_tsm_holds_only_report(tree):
    assert "tsm" in list(tree.listdir("/"))
    assert list(tree.listdir("/tsm")) == ["report"]
    assert list(tree.listdir(REPORT)) == []
    # clients that find tsm/rtmrs switch to an unmerged design
    assert refused(tree.attrs, "/tsm/rtmrs") == errno.ENOENT


@pytest.mark.parametrize("path", ["/tsm", REPORT])
def test_configfs_directories(tree, path):
    a = tree.attrs(path)
    assert a["st_mode"] == stat.S_IFDIR | 0o755
    assert a["st_nlink"] == 2 + (path == "/tsm")


def test_root_counts_tsm_as_a_subdirectory(tree):
    subdirs = [n for n in tree.listdir("/") if stat.S_ISDIR(tree.attrs(f"/{n}")["st_mode"])]
    assert "tsm" in subdirs
    assert tree.attrs("/")["st_nlink"] == 2 + len(subdirs)


def test_mkdir_makes_exactly_the_tdx_attributes(tree, x):
    assert sorted(tree.listdir(inst(x))) == ["generation", "inblob", "outblob", "provider"]
    assert tree.attrs(inst(x)) == {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_size": 0}
    expected = {  # mode, st_size: binary attributes show 0, text ones PAGE_SIZE
        "inblob": (0o200, 0), "outblob": (0o444, 0), "provider": (0o444, 4096), "generation": (0o444, 4096),
    }
    for name, (mode, size) in expected.items():
        assert tree.attrs(f"{inst(x)}/{name}") == {"st_mode": stat.S_IFREG | mode, "st_nlink": 1, "st_size": size}
    assert tree.attrs(REPORT)["st_nlink"] == 3


def test_listing_is_newest_first_as_configfs(tree, x):
    assert list(tree.listdir(inst(x))) == ["outblob", "inblob", "provider", "generation"]
    for name in ("b", "a", "c"):
        tree.mkdir(inst(name))
    assert list(tree.listdir(REPORT)) == ["c", "a", "b", "x"]


def test_fresh_instance_reads(tree, x):
    assert read_all(tree, f"{inst(x)}/provider") == b"tdx_guest\n"
    assert read_all(tree, f"{inst(x)}/generation") == b"0\n"


NAMES = ["entry0123456789", ".tmpAbC123", "report_x", "report0", "com.intel.dcap",
         "3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea", "a" * 255, "with space", "ü-name"]


@pytest.mark.parametrize("name", NAMES, ids=lambda n: n[:20])
def test_names_real_clients_choose(tree, name):
    tree.mkdir(inst(name))
    assert name in list(tree.listdir(REPORT))
    write_inblob(tree, name, NONCE)
    assert generation(tree, name) == 1
    assert outblob(tree, name)[REPORTDATA_IN_FAKE_QUOTE] == NONCE
    tree.rmdir(inst(name))
    assert list(tree.listdir(REPORT)) == []


def test_name_longer_than_name_max(tree):
    assert refused(tree.mkdir, inst("a" * 256)) == errno.ENAMETOOLONG
    assert refused(tree.attrs, inst("a" * 256)) == errno.ENAMETOOLONG
    assert refused(tree.mkdir, inst("é" * 128)) == errno.ENAMETOOLONG  # 256 bytes in UTF-8


def test_taken_name_is_eexist(tree, x):
    write_inblob(tree, x, NONCE)
    assert refused(tree.mkdir, inst(x)) == errno.EEXIST
    assert generation(tree, x) == 1  # the existing instance is untouched


def test_rmdir_removes_the_instance_with_its_files(tree, x):
    write_inblob(tree, x, NONCE)
    tree.rmdir(inst(x))
    assert list(tree.listdir(REPORT)) == []
    assert refused(tree.attrs, f"{inst(x)}/inblob") == errno.ENOENT
    assert tree.attrs(REPORT)["st_nlink"] == 2
    # the name is free again, and the new instance starts fresh
    tree.mkdir(inst(x))
    assert generation(tree, x) == 0
    assert refused(outblob, tree, x) == errno.EINVAL


def test_rmdir_of_a_missing_instance(tree):
    assert refused(tree.rmdir, inst("nope")) == errno.ENOENT


@pytest.mark.parametrize("path", [REPORT, "/tsm"])
def test_rmdir_of_the_subsystem_and_its_group_is_eperm(tree, path):
    assert refused(tree.rmdir, path) == errno.EPERM


@pytest.mark.parametrize("path", ["/tsm/rtmrs", "/tsm/other", f"{REPORT}/x/sub", "/newdir"])
def test_mkdir_elsewhere_is_eperm(tree, x, path):
    assert refused(tree.mkdir, path) == errno.EPERM
    assert sorted(tree.listdir(inst(x))) == ["generation", "inblob", "outblob", "provider"]


@pytest.mark.parametrize("what,where,err", [
    ("create", "x/newfile", errno.EACCES),  # configfs directories have no create: EACCES
    ("create", "newfile", errno.EACCES),
    ("create", "x/inblob", errno.EACCES),
    ("mknod", "x/fifo", errno.EPERM),  # no mknod: EPERM
    ("symlink", "x/link", errno.EPERM),  # no allow_link for report items
    ("link", "x/hard", errno.EPERM),
    ("rename", "x/inblob", errno.EPERM),
    ("unlink", "x/inblob", errno.EPERM),  # attributes are not links
    ("chmod", "x/inblob", errno.EPERM),  # deviation: configfs stores a mode (documented)
])
def test_namespace_changes_in_the_tree(tree, x, what, where, err):
    assert refused(tree.refuse, what, f"{REPORT}/{where}") == err
    assert sorted(tree.listdir(inst(x))) == ["generation", "inblob", "outblob", "provider"]


def test_refusals_outside_configfs_unchanged(tree):
    assert refused(tree.refuse, "create", "/newfile") == errno.EPERM
    assert refused(tree.refuse, "create") == errno.EPERM
    assert refused(tree.refuse, "create", None) == errno.EPERM


def test_no_cap_below_the_kernels(tree):
    """The kernel sets no limit on report instances (only ENOMEM): 5000 leaked instances,
    past the 4096 an earlier version allowed, all listed newest first, all working."""
    count = 5000
    for i in range(count):
        tree.mkdir(inst(f"entry{i:010d}"))
    names = list(tree.listdir(REPORT))
    assert names == [f"entry{i:010d}" for i in reversed(range(count))]
    assert tree.attrs(REPORT)["st_nlink"] == 2 + count
    assert refused(tree.mkdir, inst("entry0000000000")) == errno.EEXIST  # a taken name is still EEXIST
    for name in ("entry0000000000", "entry0000004999"):
        write_inblob(tree, name, NONCE)
        assert generation(tree, name) == 1
        assert outblob(tree, name)[REPORTDATA_IN_FAKE_QUOTE] == NONCE
    tree.rmdir(inst("entry0000000007"))
    assert tree.attrs(REPORT)["st_nlink"] == 2 + count - 1
    assert generation(tree, "entry0000000008") == 0


def _group(tree):
    return tree.lookup(REPORT)


def test_memory_exhaustion_at_mkdir_is_enomem_and_changes_nothing(tree, x, monkeypatch):
    write_inblob(tree, x, NONCE)
    before = list(tree.listdir(REPORT))

    def no_memory(*args, **kw):
        raise MemoryError()

    monkeypatch.setattr(configfs, "ReportInstance", no_memory)
    assert refused(tree.mkdir, inst("entry0000000001")) == errno.ENOMEM
    assert refused(tree.mkdir, inst(x)) == errno.EEXIST  # a taken name is EEXIST before any allocation
    monkeypatch.undo()
    assert list(tree.listdir(REPORT)) == before
    assert tree.attrs(REPORT)["st_nlink"] == 2 + len(before)
    assert refused(tree.attrs, inst("entry0000000001")) == errno.ENOENT
    assert generation(tree, x) == 1  # the existing instance is untouched
    tree.mkdir(inst("entry0000000001"))  # memory back: the name is free
    assert generation(tree, "entry0000000001") == 0


def test_memory_exhaustion_while_growing_the_name_table_is_enomem(tree, x):
    """The table itself failing to grow (a dict resize) is ENOMEM too, with nothing added."""

    class Full(dict):
        def __setitem__(self, key, value):
            raise MemoryError()

    group = _group(tree)
    group.entries = Full(group.entries)
    assert refused(tree.mkdir, inst("y")) == errno.ENOMEM
    assert list(tree.listdir(REPORT)) == [x]
    assert refused(tree.attrs, inst("y")) == errno.ENOENT


def test_an_idle_instance_is_compact(tree, x):
    """No per-instance dict, no lock of its own, no attribute nodes kept: the name table
    holds only ``ReportInstance`` objects, with slots."""
    instance = _group(tree).entries[x]
    assert isinstance(instance, configfs.ReportInstance)
    assert not hasattr(instance, "__dict__")
    held = {slot: getattr(instance, slot) for slot in configfs.ReportInstance.__slots__}
    assert held.pop("_group") is _group(tree)  # shared by every instance
    assert not any(isinstance(v, (type(configfs.STATE_LOCKS[0]), dict, configfs.Node)) for v in held.values())
    # lookups make views: two lookups are two objects over the same instance
    assert tree.lookup(inst(x)) is not tree.lookup(inst(x))
    assert tree.lookup(f"{inst(x)}/inblob").instance is instance
    assert refused(tree.attrs, f"{inst(x)}/auxblob") == errno.ENOENT  # other providers' attributes


def test_kinds_for_stats(tree, x):
    assert tree.kind("/tsm") == "tsm-dir"
    assert tree.kind(REPORT) == "tsm-dir"
    assert tree.kind(inst(x)) == "tsm-dir"
    assert tree.kind(inst("not-yet")) == "tsm-dir"  # the lookup before a mkdir
    for name in ("inblob", "outblob", "provider", "generation"):
        assert tree.kind(f"{inst(x)}/{name}") == name
    assert tree.kind(f"{inst(x)}/nothing") == "missing"
    assert tree.kind(f"{inst('gone')}/inblob") == "missing"
    assert tree.kind(inst("a" * 300)) == "tsm-dir"  # ENAMETOOLONG on lookup, counted without raising
    assert tree.kind(None) == "missing"  # libfuse: a file whose directory was removed
    assert tree.kind("/rtmr3") == "rtmr"  # the other rows keep theirs


# -- open: configfs checks the mode bits and methods, for root too -------------------------------


@pytest.mark.parametrize("name,flags", [
    ("inblob", os.O_RDONLY), ("inblob", os.O_RDWR),
    ("outblob", os.O_WRONLY), ("outblob", os.O_RDWR), ("outblob", os.O_WRONLY | os.O_TRUNC),
    ("provider", os.O_WRONLY), ("provider", os.O_RDWR),
    ("generation", os.O_WRONLY), ("generation", os.O_RDWR),
])
def test_open_without_the_mode_bit_is_eacces(tree, x, name, flags):
    assert refused(tree.open, f"{inst(x)}/{name}", flags) == errno.EACCES


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_WRONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND,
                                   os.O_WRONLY | os.O_CREAT, os.O_WRONLY | os.O_SYNC])
def test_inblob_opens_for_writing(tree, x, flags):
    write_inblob(tree, x, NONCE, flags=flags)
    assert generation(tree, x) == 1


def test_attribute_fds_take_no_ioctl(tree, x):
    h = tree.open(f"{inst(x)}/outblob", os.O_RDONLY)
    with pytest.raises(TdxfsError) as exc:
        h.ioctl(TCGETS, b"")
    assert exc.value.errno == errno.ENOTTY and exc.value.probe
    h.release()


def test_directory_is_not_opened_as_a_file(tree, x):
    assert refused(tree.open, inst(x), os.O_RDONLY) == errno.EISDIR


# -- inblob and generation ------------------------------------------------------------------------


def test_each_commit_bumps_generation_even_unchanged(tree, x):
    for n in range(1, 4):
        write_inblob(tree, x, NONCE)
        assert generation(tree, x) == n


def test_commit_happens_at_close_not_at_write(tree, x):
    h = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    assert h.write(NONCE, 0) == 64
    assert generation(tree, x) == 0
    assert refused(outblob, tree, x) == errno.EINVAL  # nothing committed yet
    h.release()
    assert generation(tree, x) == 1
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == NONCE


def test_o_trunc_open_alone_is_no_write(tree, x, qe):
    write_inblob(tree, x, NONCE)
    quote = outblob(tree, x)
    write_inblob(tree, x, flags=os.O_WRONLY | os.O_TRUNC)  # `: > inblob`
    tree.truncate(f"{inst(x)}/inblob", 0)  # libfuse2's form of the same redirect
    tree.truncate(f"{inst(x)}/inblob", 64)  # dd without conv=notrunc; configfs accepts any size
    assert generation(tree, x) == 1
    assert outblob(tree, x) == quote and len(qe.calls) == 1


@pytest.mark.parametrize("name", ["outblob", "generation", "provider"])
def test_truncating_read_only_attributes_changes_nothing(tree, x, name):
    write_inblob(tree, x, NONCE)
    before = read_all(tree, f"{inst(x)}/{name}")
    tree.truncate(f"{inst(x)}/{name}", 0)  # root passes the VFS check; configfs keeps only i_size
    assert read_all(tree, f"{inst(x)}/{name}") == before


def test_writes_of_one_fd_are_buffered_into_one_commit(tree, x):
    write_inblob(tree, x, NONCE[:10], NONCE[10:40], NONCE[40:])
    assert generation(tree, x) == 1
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == NONCE


def test_write_at_an_offset_zero_fills_the_gap(tree, x):
    h = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    assert h.write(b"\xff" * 32, 32) == 32  # pwrite(fd, data, 32) / dd seek=1 bs=32
    h.release()
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == bytes(32) + b"\xff" * 32


def test_rewrite_inside_the_buffer(tree, x):
    h = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    h.write(NONCE, 0)
    h.write(b"\xee\xee", 10)
    h.release()
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == NONCE[:10] + b"\xee\xee" + NONCE[12:]


@pytest.mark.parametrize("data,offset", [(bytes(65), 0), (b"\x01", 64), (bytes(40), 30), (bytes(4096), 0)])
def test_write_past_64_bytes_is_efbig(tree, x, data, offset):
    h = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    with pytest.raises(TdxfsError) as exc:
        h.write(data, offset)
    assert exc.value.errno == errno.EFBIG
    h.release()


def test_efbig_first_write_still_commits_an_empty_inblob(tree, x):
    """configfs marks the fd as writing before the size check, so close commits the
    (empty) buffer: generation rises and outblob has nothing to quote."""
    write_inblob(tree, x, NONCE)
    outblob(tree, x)
    h = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    assert refused(h.write, NONCE + b"\n", 0) == errno.EFBIG  # `echo` adds a newline: 65 bytes
    h.release()
    assert generation(tree, x) == 2
    assert refused(outblob, tree, x) == errno.EINVAL


def test_efbig_after_a_good_write_commits_what_was_buffered(tree, x):
    h = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    assert h.write(NONCE[:60], 0) == 60
    assert refused(h.write, NONCE[:10], 60) == errno.EFBIG
    assert h.write(NONCE[60:], 60) == 4  # the fd goes on working
    h.release()
    assert generation(tree, x) == 1
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == NONCE


def test_each_fd_has_its_own_buffer_and_the_last_close_wins(tree, x):
    a = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    b = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    a.write(NONCE[:32], 0)
    b.write(OTHER, 0)
    a.write(NONCE[32:], 32)
    b.release()
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == OTHER
    a.release()
    assert generation(tree, x) == 2
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == NONCE


def test_instances_are_independent(tree, x):
    tree.mkdir(inst("y"))
    write_inblob(tree, x, NONCE)
    write_inblob(tree, "y", OTHER)
    write_inblob(tree, "y", OTHER)
    assert (generation(tree, x), generation(tree, "y")) == (1, 2)
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == NONCE
    assert outblob(tree, "y")[REPORTDATA_IN_FAKE_QUOTE] == OTHER


def test_instances_do_not_touch_the_shared_reportdata(tree, td, x):
    write_inblob(tree, x, NONCE)
    outblob(tree, x)
    assert td.reportdata == bytes(64)


def test_generation_fd_is_a_snapshot(tree, x):
    """configfs fills a text attribute's buffer once per fd: a rewind shows the old value."""
    h = tree.open(f"{inst(x)}/generation", os.O_RDONLY)
    assert h.read(4096, 0) == b"0\n"
    write_inblob(tree, x, NONCE)
    assert h.read(4096, 0) == b"0\n"
    assert h.read(4096, 2) == b""
    h.release()
    assert generation(tree, x) == 1


def test_generation_wraps_and_refuses_to_overtake_the_reader(tree, x):
    """report.c: unsigned long counters; a commit that would make the write count equal
    the read count minus one (2**64 - 1 commits without a read) is EBUSY."""
    instance = tree.lookup(inst(x)).instance
    instance._write_generation = (1 << 64) - 2  # as after 2**64 - 2 commits and no read
    write_inblob(tree, x, NONCE)
    assert generation(tree, x) == (1 << 64) - 1
    h = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    h.write(OTHER, 0)
    assert refused(h.release) == errno.EBUSY  # logged by the adapter; close() itself succeeds
    assert generation(tree, x) == (1 << 64) - 1
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == NONCE  # the read catches up ...
    write_inblob(tree, x, OTHER)  # ... and the count wraps to 0
    assert generation(tree, x) == 0
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == OTHER


# -- outblob ---------------------------------------------------------------------------------------------


def test_outblob_without_inblob_is_einval(tree, x, qe):
    assert refused(outblob, tree, x) == errno.EINVAL
    assert qe.calls == []


@pytest.mark.parametrize("size", [1, 32, 63])
def test_outblob_of_a_short_inblob_is_einval(tree, x, qe, size):
    write_inblob(tree, x, NONCE[:size])
    assert generation(tree, x) == 1
    assert refused(outblob, tree, x) == errno.EINVAL
    assert qe.calls == []


def test_outblob_is_the_quote_of_a_report_for_the_inblob(tree, td, x, qe):
    write_inblob(tree, x, NONCE)
    quote = outblob(tree, x)
    assert quote == b"QUOTE" + td.report(NONCE)
    assert qe.calls == [td.report(NONCE)]


def test_outblob_is_made_lazily_and_cached_until_the_next_commit(tree, x, qe):
    write_inblob(tree, x, NONCE)
    assert qe.calls == []  # a commit makes no quote
    first = outblob(tree, x)
    assert outblob(tree, x) == first and len(qe.calls) == 1
    write_inblob(tree, x, NONCE)  # unchanged data, still a new generation
    assert len(qe.calls) == 1
    assert outblob(tree, x) == first and len(qe.calls) == 2
    write_inblob(tree, x, OTHER)
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == OTHER and len(qe.calls) == 3


def test_outblob_fd_is_a_snapshot(tree, x):
    write_inblob(tree, x, NONCE)
    h = tree.open(f"{inst(x)}/outblob", os.O_RDONLY)
    head = h.read(100, 0)
    write_inblob(tree, x, OTHER)
    rest = read_handle(h, 100, 100)
    again = h.read(131072, 0)  # a rewind: still the same snapshot
    h.release()
    assert (head + rest)[REPORTDATA_IN_FAKE_QUOTE] == NONCE
    assert again == head + rest
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == OTHER


def test_outblob_first_read_at_an_offset_fills_the_snapshot(tree, x):
    write_inblob(tree, x, NONCE)
    whole = outblob(tree, x)
    h = tree.open(f"{inst(x)}/outblob", os.O_RDONLY)
    assert h.read(64, REPORTDATA_IN_FAKE_QUOTE.start) == NONCE  # pread without a read at 0
    assert h.read(10, len(whole)) == b""
    assert h.read(10, len(whole) + 1000) == b""
    h.release()


def test_provider_failure_is_the_reads_errno_and_is_retried(tree, x, qe):
    write_inblob(tree, x, NONCE)
    qe.fail = DeviceError("GetQuote failed")
    h = tree.open(f"{inst(x)}/outblob", os.O_RDONLY)
    assert refused(h.read, 4096, 0) == errno.EIO
    qe.fail = None
    assert h.read(4096, 0)[REPORTDATA_IN_FAKE_QUOTE] == NONCE  # the same fd retries the fill
    h.release()
    assert len(qe.calls) == 2


def test_no_quoting_enclave_is_eio(x):
    tree = Tree.for_td(TrustDomain(Platform(), default_profile()))
    tree.mkdir(inst(x))
    write_inblob(tree, x, NONCE)
    assert refused(outblob, tree, x) == errno.EIO
    assert generation(tree, x) == 1


def test_outblob_over_32k_is_efbig(tree, x, qe):
    write_inblob(tree, x, NONCE)
    qe.extra = bytes(32 * 1024 - len(b"QUOTE") - 1024 + 1)
    assert refused(outblob, tree, x) == errno.EFBIG
    write_inblob(tree, x, NONCE)
    qe.extra = qe.extra[:-1]
    assert len(outblob(tree, x)) == 32 * 1024


def test_the_tdx_table_passes_its_check():
    assert list(configfs.check_attributes(configfs.TDX_ATTRIBUTES)) == ["outblob", "inblob", "provider", "generation"]


def _show(instance):
    return b"shown"


def _store(instance, data):
    pass


BAD_ATTRIBUTES = {  # the mistake -> the attribute that makes it (next to the TDX table), what the check says
    "a name taken twice": (configfs.Attribute("inblob", 0o200, True, store=_store, max_size=64), "two attributes"),
    "a name with a slash": (configfs.Attribute("in/blob", 0o444, True, show=_show, max_size=64), "not a file name"),
    "an empty name": (configfs.Attribute("", 0o444, False, show=_show), "not a file name"),
    "a write bit without a store": (configfs.Attribute("blob", 0o644, True, show=_show, max_size=64), "write bit"),
    "a store without a write bit": (configfs.Attribute("blob", 0o444, True, show=_show, store=_store, max_size=64),
                                    "write bit"),
    "a read bit without a show": (configfs.Attribute("blob", 0o600, True, store=_store, max_size=64), "read bit"),
    "a show without a read bit": (configfs.Attribute("blob", 0o200, True, show=_show, store=_store, max_size=64),
                                  "read bit"),
    "a text attribute that takes writes": (configfs.Attribute("text", 0o644, False, show=_show, store=_store),
                                           "text attribute"),
    # configfs answers ETXTBSY when such an fd switches between reading and writing; not served here
    "a binary attribute read and written": (configfs.Attribute("blob", 0o644, True, show=_show, store=_store,
                                                               max_size=64), "both read and written"),
    "a binary attribute without a maximum": (configfs.Attribute("blob", 0o444, True, show=_show), "maximum size"),
    "a mode beyond 0777": (configfs.Attribute("blob", 0o4444, True, show=_show, max_size=64), "0..0777"),
}


@pytest.mark.parametrize("mistake", sorted(BAD_ATTRIBUTES))
def test_a_bad_attribute_table_is_refused_when_tsm_is_built(td, mistake):
    attribute, says = BAD_ATTRIBUTES[mistake]
    table = (*configfs.TDX_ATTRIBUTES, attribute)
    with pytest.raises(TableError, match=says):
        configfs.check_attributes(table)
    with pytest.raises(TableError, match=says):
        configfs.ReportGroup(td.quote, table)


# -- rmdir while fds are open -------------------------------------------------------------------------------


def test_open_fds_after_rmdir(tree, x, qe):
    write_inblob(tree, x, NONCE)
    filled = tree.open(f"{inst(x)}/outblob", os.O_RDONLY)
    head = filled.read(10, 0)
    unfilled = tree.open(f"{inst(x)}/outblob", os.O_RDONLY)
    gen = tree.open(f"{inst(x)}/generation", os.O_RDONLY)
    writer = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    writer.write(OTHER, 0)
    instance = tree.lookup(inst(x)).instance

    tree.rmdir(inst(x))
    assert filled.read(10, 0) == head  # served from the fd's buffer
    assert refused(unfilled.read, 4096, 0) == errno.ENOENT
    assert refused(gen.read, 4096, 0) == errno.ENOENT
    writer.release()  # commits nothing, says nothing
    assert instance._write_generation == 1
    for h in (filled, unfilled, gen):
        h.release()
    # a new instance of the same name is a different one
    tree.mkdir(inst(x))
    assert generation(tree, x) == 0


# -- a commit at each close, for a front end that sees closes (FUSE FLUSH) -------------------------------


def test_flush_commits_once_per_batch_of_writes(tree, x):
    """flush() is the commit a front end can make synchronous with close(): the first close
    of a shared fd commits, later closes only if the fd wrote again, release adds nothing."""
    h = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    h.flush()  # a close before any write (a forked child exiting): nothing to commit
    assert generation(tree, x) == 0
    h.write(NONCE, 0)
    h.flush()
    assert generation(tree, x) == 1
    h.flush()  # the dup's close
    assert generation(tree, x) == 1
    h.write(OTHER, 0)
    h.release()
    assert generation(tree, x) == 2
    assert outblob(tree, x)[REPORTDATA_IN_FAKE_QUOTE] == OTHER


def test_flush_after_a_refused_write_commits_the_empty_buffer(tree, x):
    h = tree.open(f"{inst(x)}/inblob", os.O_WRONLY)
    assert refused(h.write, bytes(65), 0) == errno.EFBIG
    h.flush()
    h.release()
    assert generation(tree, x) == 1
    assert refused(outblob, tree, x) == errno.EINVAL


def test_flush_of_a_reading_fd_commits_nothing(tree, x):
    write_inblob(tree, x, NONCE)
    h = tree.open(f"{inst(x)}/outblob", os.O_RDONLY)
    h.read(10, 0)
    h.flush()
    h.release()
    assert generation(tree, x) == 1
