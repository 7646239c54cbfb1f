import os

from tests.mounting import sh


def test_cat_rtmr3_of_default_td(mnt):
    out = sh(f"cat {mnt.path('rtmr3')}", check=True).stdout
    assert out == b"0" * 96 + b"\n"


def test_served_by_the_requested_binding(mnt):
    """tox -e fusepy sets TDXFS_FUSE_BINDING=fusepy: the daemon must really use it."""
    wanted = os.environ.get("TDXFS_FUSE_BINDING") or "mfusepy"
    libfuse = "libfuse 2" if wanted == "fusepy" else "libfuse 3"
    line = next(l for l in mnt.log().splitlines() if "serving on" in l)
    assert f"via {wanted}, {libfuse}" in line
