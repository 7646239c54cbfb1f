"""The loop: read one request from ``/dev/fuse``, answer it, repeat. Single-threaded.

Each request is read with one ``readv`` into one preallocated buffer (large enough for the
biggest WRITE the INIT reply allows plus its headers, as the kernel requires) and handed
to the dispatcher as a memoryview slice of it, never copied; each reply is one ``writev``
(header and payload as separate buffers). The loop ends when the kernel says the
connection is gone (ENODEV: unmounted, or aborted) or on SIGTERM/SIGINT/SIGHUP, which
interrupt the wait for the next request (a request being served is answered first).

Read errors that are not the end: ENOENT (the request was interrupted before we read
it), EINTR, EAGAIN. A reply refused with ENOENT belongs to a request the kernel dropped
meanwhile (interrupted); the lookups it carried are taken back.
"""

import errno
import logging
import os
import signal
from typing import Callable, Dict, Optional

from tdxfs.errors import ConfigError, printable
from tdxfs.files.tree import Tree
from tdxfs.server.kernel import mount as mounting
from tdxfs.server.kernel import protocol as P
from tdxfs.server.kernel.dispatch import MAX_WRITE, Dispatcher, opcode_name

log = logging.getLogger("tdxfs")

# The kernel refuses a read buffer smaller than its header, a fuse_write_in and max_write
# (fuse_dev_do_read); no request is larger (an xattr value is at most 64 KiB, an ioctl 16 KiB).
BUFFER_SIZE = max(P.MIN_READ_BUFFER, P.IN_HEADER.size + P.WRITE_IN.size + MAX_WRITE)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_RETRY = frozenset({errno.ENOENT, errno.EINTR, errno.EAGAIN})
_GONE = frozenset({errno.ENODEV, errno.ECONNABORTED})
# -o options the transport serves; the kernel or fusermount3 sees only some of them
OPTIONS = frozenset({"allow_other", "allow_root", "uid", "gid", "umask", "ro", "auto_unmount"})


class _Stop(Exception):
    """A stop signal arrived while the loop waited for a request."""


class Session:
    def __init__(self, fd: int, dispatcher: Dispatcher, on_ready: Optional[Callable[[], None]] = None,
                 trace: bool = False):
        self.fd = fd
        self.dispatcher = dispatcher
        self.on_ready = on_ready
        self.trace = trace  # one debug line per request and reply (-d)
        self.stopping = False
        self.waiting = False

    def stop(self, signum=None, frame=None) -> None:
        """Signal handler: end the loop; at once if it is waiting for a request."""
        self.stopping = True
        if self.waiting:
            raise _Stop()

    def run(self) -> None:
        fd = self.fd
        buf = bytearray(BUFFER_SIZE)
        view = memoryview(buf)
        bufs = [buf]
        readv, writev = os.readv, os.writev
        handle = self.dispatcher.handle
        pending_ready = self.on_ready
        try:
            while not self.stopping:
                self.waiting = True
                try:
                    n = readv(fd, bufs)
                except OSError as exc:
                    if exc.errno in _RETRY:
                        continue
                    if exc.errno in _GONE:
                        return
                    raise
                finally:
                    self.waiting = False
                if n == 0:  # not from /dev/fuse; a closed test socket
                    return
                request = view[:n]
                if self.trace:
                    self._trace_request(request)
                reply = handle(request)
                if reply is not None:
                    if self.trace:
                        self._trace_reply(reply)
                    try:
                        writev(fd, reply)
                    except OSError as exc:
                        if exc.errno == errno.ENOENT:
                            self.dispatcher.reply_lost()
                        elif exc.errno in _GONE:
                            return
                        else:
                            raise
                if pending_ready is not None and self.dispatcher.initialized:
                    pending_ready()
                    pending_ready = None
        except _Stop:
            return

    def _trace_request(self, request) -> None:
        length, opcode, unique, nodeid, uid, gid, pid, _, _ = P.IN_HEADER.unpack_from(request)
        log.debug("request %d: %s node %d, %d bytes, uid %d pid %d", unique, opcode_name(opcode), nodeid,
                  length, uid, pid)

    def _trace_reply(self, reply) -> None:
        length, error, unique = P.OUT_HEADER.unpack_from(reply[0])
        log.debug("reply %d: %s, %d bytes", unique, errno.errorcode.get(-error, error) if error else "ok", length)


def split_options(options: Dict[str, object]) -> Dict[str, Dict[str, object]]:
    """-o options by who applies them: the dispatcher (uid, gid, umask, allow_root) or the
    mount (allow_other, ro, auto_unmount). Unknown ones are refused by name."""
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ConfigError(f"unknown mount option '{unknown[0]}' for the kernel transport "
                          f"(known: {', '.join(sorted(OPTIONS))})")
    dispatch: Dict[str, object] = {}
    if "uid" in options:
        dispatch["uid"] = int(options["uid"])
    if "gid" in options:
        dispatch["gid"] = int(options["gid"])
    if "umask" in options:
        dispatch["umask"] = int(str(options["umask"]), 8) & 0o777
    if options.get("allow_root"):
        dispatch["allow_root"] = True
    # allow_root: the kernel lets others in (allow_other) and the dispatcher keeps them out,
    # as libfuse implements it
    kernel = {"allow_other": bool(options.get("allow_other") or options.get("allow_root")),
              "read_only": bool(options.get("ro")), "auto_unmount": bool(options.get("auto_unmount"))}
    return {"dispatch": dispatch, "mount": kernel}


def serve_kernel(tree: Tree, mountpoint: str, options: Optional[Dict[str, object]] = None,
                 on_ready: Optional[Callable[[], None]] = None, debug: bool = False,
                 via: Optional[str] = None) -> None:
    """Mount ``tree`` at ``mountpoint`` over the kernel's FUSE protocol and serve it until
    unmounted or stopped by a signal; always unmounts before returning. ``options``: the
    parsed -o options (``tdxfs.server.daemon.parse_fuse_options``); ``on_ready`` is called
    once INIT is answered; ``via`` forces "mount(2)" or "fusermount3"."""
    parts = split_options(dict(options or {}))
    dispatcher = Dispatcher(tree, **parts["dispatch"])
    connection = mounting.mount(mountpoint, via=via, **parts["mount"])
    session = Session(connection.fd, dispatcher, on_ready, trace=debug)
    previous = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, session.stop)
        log.info("serving on %s via the kernel transport (%s, FUSE %d.%d offered)", printable(mountpoint),
                 connection.via, P.KERNEL_VERSION, P.KERNEL_MINOR_VERSION)
        session.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        connection.unmount()
    log.info("unmounted %s", printable(mountpoint))
