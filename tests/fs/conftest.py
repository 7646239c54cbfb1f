import pytest

from tests.fsclient import observable
from tests.mounting import Mounted, mount_for_test, stop_all
from tests.transport import skip_other_transports


def pytest_collection_modifyitems(config, items):
    """Tests for one transport only are skipped on the other, with the reason (tests/transport.py)."""
    skip_other_transports(items)


@pytest.fixture
def mnt(request, tmp_path):
    """A fresh in-memory TD (the embedded default profile) mounted at tmp_path/mnt; for a
    test marked ``shared_mount`` (it only reads or refuses), its turn on ``shared_mount``."""
    yield from mount_for_test(request, lambda: Mounted(tmp_path / "mnt"), observable)


@pytest.fixture(scope="module")
def shared_mount(tmp_path_factory):
    """The one mount of a module that its ``shared_mount`` tests take turns on: a fresh
    in-memory TD, as ``mnt``'s. A module may prepare it once by overriding this fixture."""
    with Mounted(tmp_path_factory.mktemp("shared") / "mnt") as m:
        yield m


@pytest.fixture
def mount_factory(tmp_path):
    """Start mounts with arguments; every one is stopped at the end of the test."""
    started = []

    def start(*args, name="mnt", **kw):
        m = Mounted(tmp_path / name, *args, **kw).start()
        started.append(m)
        return m

    yield start
    stop_all(started)
