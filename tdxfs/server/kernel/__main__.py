"""``python -m tdxfs.server.kernel MOUNTPOINT [-o OPTIONS] [--state DIR] ...``: serve a TD
in the foreground over the kernel transport until unmounted or signalled (SIGTERM, ^C).

``tdxfs mount -f --transport kernel`` (the default) does the same through the CLI; this
runner stays for the kernel transport's own tests and ``tdxfs bench``. Logs to stderr
(or ``--log FILE``) in the daemon's format; ``-d`` adds one line per request and reply.
A refusal at start is one line on stderr and exit status 1.
"""

import argparse
import os
import sys

from tdxfs.errors import TdxfsError, printable


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tdxfs.server.kernel",
                                description="serve a TD over tdxfs's own FUSE transport, in the foreground")
    p.add_argument("mountpoint")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="allow_other, allow_root, uid=N, gid=N, umask=NNN, ro, auto_unmount")
    p.add_argument("--state", metavar="DIR", help="keep the TD in this directory")
    p.add_argument("--profile", metavar="FILE", help="TD profile (TOML)")
    p.add_argument("--reset", action="store_true", help="start the state directory afresh")
    p.add_argument("--log", metavar="FILE", help="log here instead of stderr")
    p.add_argument("-d", "--debug", action="store_true", help="log every request and reply")
    p.add_argument("--via", choices=("mount(2)", "fusermount3"),
                   help="how to mount (default: mount(2) as root unless auto_unmount)")
    args = p.parse_args(argv)

    # Imported here so that --help works anywhere.
    from tdxfs.files.tree import Tree
    from tdxfs.model.machine import build_td
    from tdxfs.model.profile import profile_or_default
    from tdxfs.server.daemon import check_mountpoint, parse_fuse_options, setup_logging
    from tdxfs.server.kernel.session import serve_kernel

    try:
        mountpoint = check_mountpoint(args.mountpoint)
        options = {}
        for text in args.options:
            options.update(parse_fuse_options(text))
        setup_logging(mountpoint, path=args.log, debug=args.debug)
        td, close = build_td(profile_or_default(args.profile), args.state, args.reset)
    except TdxfsError as exc:
        print(f"tdxfs: {printable(exc.reason, backslash=False)}", file=sys.stderr)
        return 1
    server = {"binding": "tdxfs.server.kernel", "libfuse": "none", "transport": "kernel", "pid": str(os.getpid())}
    try:
        serve_kernel(Tree.for_td(td, server), mountpoint, options, debug=args.debug, via=args.via)
    except TdxfsError as exc:
        print(f"tdxfs: {printable(exc.reason, backslash=False)}", file=sys.stderr)
        return 1
    finally:
        close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
