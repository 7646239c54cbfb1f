"""Counting what the property tests and the parser fuzzers tried (issue 8, section 2).

Every executed case (a hypothesis example, shrinking and replays included) and every call
of a fuzzed parser is counted here under a group ("properties", "parsers") and a key (an
interface, a parser). At the end of the session the counts are printed as a "tdxfs fuzz
counts" section of the terminal summary (and, with ``-s``, as each module ends), and
written as JSON to ``$TDXFS_FUZZ_REPORT`` when that is set, so the figures in
docs/reliability.md can be cited from a run.

``TDXFS_FUZZ_EXAMPLES`` multiplies every test's example count (default 1: the bounded CI
run; ``TDXFS_FUZZ_EXAMPLES=20`` for the large run).
"""

import json
import os
import time
from collections import Counter, defaultdict
from typing import Dict

import pytest

COUNTS: Dict[str, Counter] = defaultdict(Counter)
NOTES: Dict[str, Counter] = defaultdict(Counter)  # observed answers worth a line in the report
_STARTED = time.monotonic()
_PLUGIN = "tdxfs-fuzz-counts"


def scale() -> int:
    """The example-count multiplier from ``TDXFS_FUZZ_EXAMPLES`` (a positive integer)."""
    raw = os.environ.get("TDXFS_FUZZ_EXAMPLES", "1")
    try:
        value = int(raw)
    except ValueError:
        raise pytest.UsageError(f"TDXFS_FUZZ_EXAMPLES must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise pytest.UsageError(f"TDXFS_FUZZ_EXAMPLES must be a positive integer, got {raw!r}")
    return value


def examples(base: int) -> int:
    return base * scale()


def count(group: str, key: str, n: int = 1) -> None:
    COUNTS[group][key] += n


def note(group: str, key: str) -> None:
    NOTES[group][key] += 1


def lines(group: str):
    counts = COUNTS.get(group, Counter())
    out = [f"{key:<52} {value:>10,}" for key, value in sorted(counts.items())]
    out.append(f"{'total (' + group + ')':<52} {sum(counts.values()):>10,}")
    for key, value in sorted(NOTES.get(group, Counter()).items()):
        out.append(f"  observed: {key} ({value}x)")
    return out


class _Reporter:
    def pytest_terminal_summary(self, terminalreporter):
        if not COUNTS:
            return
        terminalreporter.section("tdxfs fuzz counts")
        terminalreporter.line(f"TDXFS_FUZZ_EXAMPLES={scale()}, {time.monotonic() - _STARTED:.0f} s since the first "
                              "fuzz module started")
        for group in sorted(COUNTS):
            terminalreporter.line(f"[{group}]")
            for line in lines(group):
                terminalreporter.line("  " + line)

    def pytest_sessionfinish(self, session, exitstatus):
        path = os.environ.get("TDXFS_FUZZ_REPORT")
        if path and COUNTS:
            with open(path, "w") as f:
                json.dump({"TDXFS_FUZZ_EXAMPLES": scale(),
                           "counts": {g: dict(c) for g, c in COUNTS.items()},
                           "observed": {g: dict(c) for g, c in NOTES.items()}}, f, indent=1, sort_keys=True)


def register(config) -> None:
    """Make the session print (and write) the counts; called by each fuzz module's fixture."""
    global _STARTED
    if not config.pluginmanager.has_plugin(_PLUGIN):
        _STARTED = time.monotonic()
        config.pluginmanager.register(_Reporter(), _PLUGIN)
