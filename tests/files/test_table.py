"""The table check: a directory refuses, when the tree is built, a table it could not serve
as written. Each check is shown with the mistake it catches, next to the real rows (the
kernel's tsm_mr_create_attribute_group checks its register table the same way).
"""

import errno
import os

import pytest

from tdxfs.errors import TdxfsError
from tdxfs.files import measurements
from tdxfs.files.measurements import Register, measurements_dir
from tdxfs.files.nodes import DeviceHandle, Directory, File, TableError, check_table
from tdxfs.files.rows import hex_row, root_rows
from tdxfs.files.tree import Tree


def value() -> bytes:
    return bytes(48)


def take(data: bytes) -> None:
    pass


def ioctl(cmd: int, request: bytes) -> bytes:
    return b""


def test_the_real_tree_passes(td):
    tree = Tree.for_td(td)
    assert list(tree.listdir("/")) == ["reportdata", "tdreport", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrtd",
                                       "mrconfigid", "mrowner", "mrownerconfig", "tdx_guest", "eventlog", ".stats",
                                       "tsm", "measurements", "acpi"]


BAD_ROWS = {  # the mistake -> the row that makes it, what the check says
    "a writer without a write bit": (File("x", 0o444, 97, show=value, store=take), "no write bit"),
    "a write bit on a read-only value": (File("x", 0o644, 97, show=value), "read-only value with a write bit"),
    "a value nobody may read": (File("x", 0o200, 97, show=value, store=take), "no read bit"),
    "a read bit with nothing to show": (File("x", 0o644, 97, store=take), "read bit without a value"),
    "a device that also shows a value": (File("x", 0o600, 0, show=value, ioctl=ioctl, handle=DeviceHandle),
                                         "ioctls only"),
    "a device that also takes values": (File("x", 0o600, 0, store=take, ioctl=ioctl, handle=DeviceHandle),
                                        "ioctls only"),
    "a device without a write bit": (File("x", 0o400, 0, ioctl=ioctl, handle=DeviceHandle), "no write bit"),
    "no size": (File("x", 0o444, None, show=value), "no size"),
    "a negative size": (File("x", 0o444, -1, show=value), "no size"),
    "a size that is text": (File("x", 0o444, "97", show=value), "no size"),
    "a size that is a bool": (File("x", 0o444, True, show=value), "no size"),
    "set-user-id bits": (File("x", 0o4644, 97, show=value, store=take), "permission bits"),
    "a mode that is text": (File("x", "0644", 97, show=value, store=take), "permission bits"),
}


@pytest.mark.parametrize("mistake", sorted(BAD_ROWS))
def test_a_bad_row_is_refused(td, mistake):
    row, says = BAD_ROWS[mistake]
    with pytest.raises(TableError, match=says):
        Directory("", [row])
    with pytest.raises(TableError, match=says):  # and next to the real rows, where it would be served
        Directory("", [*root_rows(td), row])


def test_a_duplicate_name_is_refused_not_silently_replaced(td):
    """A dict built from the rows would keep the last ``rtmr0`` and serve it for both."""
    shadow = hex_row("rtmr0", 48, value)  # read-only, reading zeros: it would hide the real RTMR0
    with pytest.raises(TableError, match="two entries named 'rtmr0'"):
        Directory("", [*root_rows(td), shadow])


def test_a_file_and_a_directory_of_one_name_are_refused():
    with pytest.raises(TableError, match="two entries named 'acpi'"):
        Directory("", [File("acpi", 0o444, 1, show=value), Directory("acpi")])


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b", "x" * 256])
def test_a_name_that_is_no_path_component_is_refused(name):
    with pytest.raises(TableError, match="not a file name"):
        Directory("", [File(name, 0o444, 1, show=value)])
    with pytest.raises(TableError, match="not a file name"):
        check_table("", [Directory(name)])


def test_the_longest_name_is_fine():
    assert list(Directory("", [File("x" * 255, 0o444, 1, show=value)]).names()) == ["x" * 255]


def test_subdirectories_are_checked_too():
    with pytest.raises(TableError, match="two entries named 'CCEL'"):
        Directory("acpi", [Directory("data", [File("CCEL", 0o400, 1, show=value)] * 2)])


def test_a_checked_row_is_served_as_its_mode_says():
    """What the check guarantees, seen from open(): the mode decides, for root too."""
    d = Directory("", [File("ro", 0o444, 48, show=value), File("rw", 0o644, 48, show=value, store=take)])
    for flags in (os.O_WRONLY, os.O_RDWR):
        with pytest.raises(TdxfsError) as exc:
            d.child("ro").open(flags)
        assert exc.value.errno == errno.EACCES
    d.child("rw").open(os.O_RDWR).release()


# -- the register table of measurements/ ------------------------------------------------------------


def test_the_register_table_passes(td):
    assert len(list(measurements_dir(td).names())) == len(measurements.REGISTERS) == 8


BAD_REGISTERS = {
    "an RTMR index past RTMR3": (Register("rtmr4", rtmr=4), "out of range"),
    "a negative RTMR index": (Register("rtmrx", rtmr=-1), "out of range"),
    "an extendable register without a hash": (Register("rtmr9", hash=None, rtmr=3), "needs a hash"),
    "a digest of the wrong size": (Register("mrfoo", size=32), "not a sha384 digest"),
    "a hash nobody knows": (Register("mrfoo", hash="sha1", size=20), "not a sha1 digest"),
    "a register named twice": (Register("mrtd"), "two entries named 'mrtd:sha384'"),
    "a NOHASH name clashing with a hashed one": (Register("mrtd:sha384", hash=None), "two entries"),
}


@pytest.mark.parametrize("mistake", sorted(BAD_REGISTERS))
def test_a_bad_register_table_is_refused(td, mistake):
    reg, says = BAD_REGISTERS[mistake]
    with pytest.raises(TableError, match=says):
        measurements_dir(td, (*measurements.REGISTERS, reg))
