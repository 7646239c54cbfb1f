import pytest

from tests.mounting import Mounted, stop_all


@pytest.fixture
def mnt(tmp_path):
    """A fresh in-memory TD (the embedded default profile) mounted at tmp_path/mnt."""
    with Mounted(tmp_path / "mnt") as m:
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
