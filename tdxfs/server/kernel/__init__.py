"""tdxfs's own FUSE transport: the kernel's protocol spoken directly, no libfuse.

The way Go's go-fuse and Rust's fuser work: requests are read from ``/dev/fuse`` and
answered by this package, which dispatches them by node id and file handle straight into
``tdxfs.files`` (which stays FUSE-free).

- ``protocol``: opcodes, flags and the wire structs of ``include/uapi/linux/fuse.h`` as rows
- ``dispatch``: the opcode table, node ids and lookup counts, file handles, the answers
- ``session``: the single-threaded read/answer loop and ``serve_kernel``
- ``mount``: mount(2) as root, fusermount3's fd passing otherwise (and for auto_unmount)
- ``python -m tdxfs.server.kernel MOUNTPOINT``: a foreground runner (tests, benchmarks)

The libfuse adapter (``tdxfs.server.adapter``) serves the same tree with the same answers.
"""

from tdxfs.server.kernel.session import serve_kernel

__all__ = ["serve_kernel"]
