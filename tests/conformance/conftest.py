"""Where the conformance tests run: under ``tdxfs run`` (which exports TDXFS_MOUNT) or on a
real TDX guest with ``--real-guest``. Anywhere else they are skipped: the paths they use are
the kernel's, which this machine does not have."""

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "simulator_only: needs tdxfs's simulator (skipped with --real-guest)")


def pytest_collection_modifyitems(config, items):
    real = config.getoption("--real-guest")
    inside = bool(os.environ.get("TDXFS_MOUNT"))
    for item in items:
        if "conformance" not in item.nodeid:
            continue
        if not (real or inside):
            item.add_marker(pytest.mark.skip(reason="kernel paths: run under `tdxfs run` "
                                             "(tests/fs/test_conformance.py does) or with --real-guest"))
        elif real and item.get_closest_marker("simulator_only"):
            item.add_marker(pytest.mark.skip(reason="needs the simulator"))


@pytest.fixture
def state_dir():
    """The state directory of the simulated platform (simulator_only tests)."""
    path = os.environ.get("TDXFS_CONFORMANCE_STATE")
    if not path:
        pytest.skip("TDXFS_CONFORMANCE_STATE is not set (the runner sets it with --state)")
    return path
