"""Fixtures for the kernel transport's own tests: the same names as tests/fs/conftest.py
(``mnt``, ``shared_mount``, ``mount_factory``), always served by ``python -m
tdxfs.server.kernel`` whatever ``TDXFS_TRANSPORT`` says. (tests/fs itself runs on the
kernel transport by default, and on libfuse with ``TDXFS_TRANSPORT=libfuse``.)"""

import pytest

from tests.fsclient import observable
from tests.kernel.mounting import KernelMounted
from tests.mounting import mount_for_test, stop_all


@pytest.fixture
def mnt(request, tmp_path):
    """A fresh in-memory TD mounted at tmp_path/mnt by the kernel transport; for a test
    marked ``shared_mount`` (it only reads or refuses), its turn on ``shared_mount``."""
    yield from mount_for_test(request, lambda: KernelMounted(tmp_path / "mnt"), observable)


@pytest.fixture(scope="module")
def shared_mount(tmp_path_factory):
    """The one kernel-transport mount of a module that its ``shared_mount`` tests take
    turns on (a module of tests/fs may prepare it by overriding this fixture)."""
    with KernelMounted(tmp_path_factory.mktemp("shared") / "mnt") as m:
        yield m


@pytest.fixture
def mount_factory(tmp_path):
    """Start kernel-transport mounts with arguments; every one is stopped at the end."""
    started = []

    def start(*args, name="mnt", **kw):
        m = KernelMounted(tmp_path / name, *args, **kw).start()
        started.append(m)
        return m

    yield start
    stop_all(started)
