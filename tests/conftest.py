"""Options shared by every test directory, and the session's leak net (tests/leakcheck.py:
no mount and no tdxfs daemon a test made may outlive the session)."""

from tests.leakcheck import (  # noqa: F401 - hooks and a fixture, registered by being here
    _tdxfs_leak_net_roots, pytest_sessionfinish, pytest_sessionstart, pytest_terminal_summary)


def pytest_addoption(parser):
    parser.addoption("--real-guest", action="store_true", default=False,
                     help="run tests/conformance against this machine's own TDX guest paths "
                          "(a real TDX guest); skips the checks that need the simulator")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "shared_mount: the test only reads or refuses, so it takes a turn on its module's shared "
                   "mount (tests/mounting.py SharedMount checks that it leaves the mount as it found it)")
