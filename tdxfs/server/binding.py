"""The one place that imports a FUSE binding.

mfusepy (the maintained fork, libfuse3) is preferred; the original fusepy (libfuse2) is
the fallback, or forced with TDXFS_FUSE_BINDING=fusepy. Both have the same API except
that fusepy dispatches callbacks through ``operations(name, *args)``.
"""

import codecs
import os
from ctypes.util import find_library

_wanted = os.environ.get("TDXFS_FUSE_BINDING", "")
if _wanted not in ("", "mfusepy", "fusepy"):
    raise ImportError(f"TDXFS_FUSE_BINDING={_wanted!r}: choose mfusepy or fusepy")

_fuse = None
if _wanted in ("", "mfusepy"):
    # mfusepy looks for libfuse2 first; prefer libfuse3 when it is there.
    if "FUSE_LIBRARY_NAME" not in os.environ and find_library("fuse3"):
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3"
    try:
        import mfusepy as _fuse
    except ImportError:
        if _wanted:
            raise
if _fuse is None:
    import fuse as _fuse  # fusepy

NAME = _fuse.__name__.replace("fuse", "fusepy") if _fuse.__name__ == "fuse" else _fuse.__name__
FUSE = _fuse.FUSE
FuseOSError = _fuse.FuseOSError
CALLBACKS = frozenset(n for n in dir(_fuse.Operations) if not n.startswith("_"))
# FOPEN_NOFLUSH (libfuse >= 3.11): a file opened with it gets no FLUSH on close(), so a
# flush handler costs a round trip only where it is asked for.
HAS_NOFLUSH = "noflush" in {f[0] for f in _fuse.fuse_file_info._fields_}


def libfuse_version() -> str:
    lib = getattr(_fuse, "_libfuse")
    major = getattr(_fuse, "fuse_version_major", None)
    if major is None:
        return "2.x"
    return f"{major}.{getattr(_fuse, 'fuse_version_minor', 0)} ({lib._name})"


def check_callbacks(operations) -> None:
    """Every public method of ``operations``, in its class and every base class, must be a
    callback of the binding's ``Operations``: a misspelled handler (``raedir``) is refused
    before mounting wherever it is defined, and an instance field may not carry a
    callback's name (the binding would take it for the handler)."""
    cls = type(operations)
    for owner in cls.__mro__:
        if owner is object or owner is _fuse.Operations:
            continue
        for name in vars(owner):
            if not name.startswith("_") and callable(getattr(cls, name)) and name not in CALLBACKS:
                raise TypeError(f"{owner.__name__}.{name} is not a FUSE callback ({NAME})")
    fields = sorted(name for name in getattr(operations, "__dict__", {}) if name in CALLBACKS)
    if fields:
        raise TypeError(f"{cls.__name__} has a field named like a FUSE callback: {fields[0]}")


class _Dispatching:
    """fusepy calls ``operations(op, *args)``; mfusepy calls methods directly."""

    def __init__(self, operations):
        self._ops = operations

    def __getattr__(self, name):
        return getattr(self._ops, name)

    def __call__(self, op, *args):
        return getattr(self._ops, op)(*args)


# Names are bytes to the kernel: one that is not UTF-8 must reach the handlers (and their
# refusals) like any other. mfusepy decodes paths with surrogateescape; fusepy has no errors
# argument and would fail such a request with an uncaught UnicodeDecodeError (EINVAL and a
# traceback), so it is given this codec as its encoding: UTF-8 with surrogateescape.
PATH_CODEC = "tdxfs_utf_8_surrogateescape"


def _find_codec(name: str):
    if name != PATH_CODEC:
        return None
    utf8 = codecs.lookup("utf-8")
    return codecs.CodecInfo(name=PATH_CODEC, encode=lambda text, errors="strict": utf8.encode(text, "surrogateescape"),
                            decode=lambda data, errors="strict": utf8.decode(data, "surrogateescape"))


codecs.register(_find_codec)


class MountFailed(Exception):
    """libfuse refused the mount (it printed why on stderr)."""


def serve(operations, mountpoint: str, *, mounted, **options) -> None:
    """Run the FUSE loop until unmounted. ``mounted()`` tells whether init was reached:
    a loop that ends after it (unmount, SIGTERM, SIGINT) is a clean stop."""
    check_callbacks(operations)
    # Options the operations apply themselves rather than libfuse (uid=, gid=, umask=: libfuse
    # would overwrite every file's mode with them; see TdxfsOperations._mount_options).
    own = getattr(operations, "_mount_options", None)
    if own is not None:
        options = own(options)
    ops = _Dispatching(operations) if NAME == "fusepy" else operations
    try:
        # raw_fi: open() sets per-file flags (noflush) in fuse_file_info itself.
        encoding = {"encoding": PATH_CODEC} if NAME == "fusepy" else {}  # mfusepy: surrogateescape already
        FUSE(ops, mountpoint, raw_fi=True, **encoding, **options)
    except RuntimeError as exc:
        # mfusepy on libfuse3 raises after a signal ends the loop: that is a clean stop.
        if not mounted():
            raise MountFailed(f"libfuse returned {exc}") from None
        return
    if not mounted():
        raise MountFailed("libfuse returned before the mount was ready")
