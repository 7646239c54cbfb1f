"""Request accounting: how many FUSE requests reached the handlers, by operation and by
the kind of file they were for. Served read-only as JSON in ``/.stats``.

Counted: every request that reaches a handler, under the operation names of libfuse's
high-level API (LOOKUP and GETATTR both as ``getattr``; SETATTR as ``chmod``, ``chown``,
``truncate`` or ``utimens``), the xattr requests included. FLUSH is counted as ``flush``:
only files whose close commits (configfs ``inblob``) get one, the others are opened with
FOPEN_NOFLUSH — except under libfuse2, which has no FOPEN_NOFLUSH and no flush handler
here: it answers the first FLUSH ENOSYS by itself, and the kernel then stops sending it.
Not counted: FORGET, BATCH_FORGET, INTERRUPT and DESTROY (no handler answers them), and
under libfuse OPENDIR and RELEASEDIR, which libfuse answers itself; the kernel transport
(``tdxfs.server.kernel``) counts those two as ``opendir`` and ``releasedir``.
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
