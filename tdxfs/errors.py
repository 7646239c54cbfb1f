"""The one place where an errno is decided.

The model and the file tables raise these; front ends (FUSE adapter, CLI) translate
``exc.errno`` without deciding anything themselves. The message is the one-line reason
that goes to the daemon's log.
"""

import errno


class TdxfsError(Exception):
    """Base class: a refused request. ``errno`` is what the caller's syscall returns."""

    errno = errno.EIO

    def __init__(self, reason: str, probe: bool = False):
        super().__init__(reason)
        self.reason = reason
        # A probe is an expected question with a negative answer (a lookup of a missing
        # name, Python's TCGETS on open): logged at debug level, not as a refusal.
        self.probe = probe


class InvalidInput(TdxfsError):
    """Malformed data: wrong length, not hex, offset not 0, index out of range."""

    errno = errno.EINVAL


class NotPermitted(TdxfsError):
    """The operation is not part of this interface (create, rename, unlink, chmod...)."""

    errno = errno.EPERM


class AccessDenied(TdxfsError):
    """Writing a read-only register or report file, even as root."""

    errno = errno.EACCES


class NoSuchEntry(TdxfsError):
    errno = errno.ENOENT


class IsADirectory(TdxfsError):
    errno = errno.EISDIR


class NotATty(TdxfsError):
    """An ioctl command this node does not serve (the misc-device answer to unknown commands)."""

    errno = errno.ENOTTY


class DeviceError(TdxfsError):
    """The simulated TDCALL failed (e.g. VERIFYREPORT on a REPORTMACSTRUCT from elsewhere)."""

    errno = errno.EIO


class StateError(TdxfsError):
    """The state directory could not be read or written; nothing was changed."""

    errno = errno.EIO


class StateNoSpace(StateError):
    """The state directory's filesystem is full (ENOSPC, or EDQUOT for a quota): the save
    was undone, nothing was changed, and the same request succeeds once space is freed."""

    errno = errno.ENOSPC


class ConfigError(TdxfsError):
    """A profile, option or state directory refused at start-up (never at request time)."""

    errno = errno.EINVAL


class UsageError(ConfigError):
    """A command line that does not hold together (an option that needs another, two that
    exclude each other): the CLI exits 2, as for argparse's own usage errors."""

    exit_status = 2


# -- tdxfs run: refusals before COMMAND starts; exit_status is tdxfs run's, as shells have it


class NotPrivileged(TdxfsError):
    """No CAP_SYS_ADMIN: no mount namespace can be made."""

    errno = errno.EPERM


class CommandNotFound(TdxfsError):
    """COMMAND is not on PATH, or its path does not exist."""

    errno = errno.ENOENT
    exit_status = 127


class CommandNotExecutable(TdxfsError):
    """COMMAND exists but cannot be executed (no x bit, a directory)."""

    errno = errno.EACCES
    exit_status = 126


# -- configfs (tsm/report) answers --------------------------------------------------------


class AlreadyExists(TdxfsError):
    """mkdir of a report instance name that is already taken."""

    errno = errno.EEXIST


class NameTooLong(TdxfsError):
    """A name longer than NAME_MAX (255 bytes), as configfs's lookup answers."""

    errno = errno.ENAMETOOLONG


class FileTooBig(TdxfsError):
    """A binary attribute past its maximum: inblob beyond 64 bytes, an outblob beyond 32 KiB."""

    errno = errno.EFBIG


class Busy(TdxfsError):
    """The write generation would wrap onto the read generation without an interim read."""

    errno = errno.EBUSY


class OutOfMemory(TdxfsError):
    """mkdir of a report instance when the daemon's memory is exhausted (the kernel's ENOMEM)."""

    errno = errno.ENOMEM


# -- extended attributes ------------------------------------------------------------------


class NoAttribute(TdxfsError):
    """getxattr/removexattr of a name the file does not have: sysfs's answer (kernfs keeps
    xattrs, and these files have none)."""

    errno = errno.ENODATA


class NotSupported(TdxfsError):
    """An extended attribute call the file system does not serve: setxattr anywhere (no
    attribute is ever stored), any xattr call in configfs (which has no xattr handlers)."""

    errno = errno.EOPNOTSUPP


# -- log lines ------------------------------------------------------------------------------


def printable(text: str, backslash: bool = True) -> str:
    """``text`` (a path, a name, a reason) for one line of the daemon's log: a byte that is not
    UTF-8 (a surrogate escape, as FUSE bindings decode names) as ``\\xNN``, any other
    non-printable character (newline, tab, U+2028 ...) as ``\\xNN`` or ``\\uNNNN``, and, with
    ``backslash``, a backslash doubled so that no name can spell an escape. Printable text,
    non-ASCII included, is kept. One request is one line, whatever a client names things.
    Used for every refused request's path and reason (the FUSE adapter) and for mountpoints
    and messages (daemon, ``tdxfs run``)."""
    if text.isprintable() and (not backslash or "\\" not in text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\" and backslash:
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
