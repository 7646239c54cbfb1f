"""Options shared by every test directory."""


def pytest_addoption(parser):
    parser.addoption("--real-guest", action="store_true", default=False,
                     help="run tests/conformance against this machine's own TDX guest paths "
                          "(a real TDX guest); skips the checks that need the simulator")
