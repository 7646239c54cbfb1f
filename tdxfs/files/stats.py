"""Request accounting: how many FUSE requests reached the handlers, by operation and by
the kind of file they were for. Served read-only as JSON in ``/.stats``.

Counted: every request that reaches a handler (LOOKUP and GETATTR both arrive as
``getattr``). Not seen: what libfuse answers by itself — FORGET, INTERRUPT, OPENDIR and
RELEASEDIR, and (libfuse2 only) the first FLUSH, answered ENOSYS, after which the kernel
stops sending it. GETXATTR and the other xattr requests are served (and counted) since
issue 8.
"""

import json
import threading
from collections import Counter
from typing import Dict, Optional


class RequestCounter:
    def __init__(self, server: Optional[Dict[str, str]] = None):
        self._counts: Counter = Counter()  # (op, kind) -> n
        self._lock = threading.Lock()
        self.server = dict(server or {})  # what serves the mount (binding, libfuse), shown as is

    def count(self, op: str, kind: str) -> None:
        with self._lock:
            self._counts[op, kind] += 1

    def snapshot(self) -> Dict[str, object]:
        with self._lock:
            counts = dict(self._counts)
        by_op: Counter = Counter()
        by_kind: Counter = Counter()
        for (op, kind), n in counts.items():
            by_op[op] += n
            by_kind[kind] += n
        return {
            "total": sum(counts.values()),
            "by_op": dict(sorted(by_op.items())),
            "by_kind": dict(sorted(by_kind.items())),
            "by_op_and_kind": {f"{op} {kind}": n for (op, kind), n in sorted(counts.items())},
        }

    def render(self) -> bytes:
        return json.dumps({"server": self.server, "requests": self.snapshot()}, indent=1).encode() + b"\n"
