"""``tdxfs``: mount, umount, and report tools."""

import argparse
import json
import sys
from typing import List, Optional

from tdxfs.errors import TdxfsError


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def cmd_mount(args) -> int:
    from tdxfs.server.daemon import MountConfig, mount, parse_fuse_options

    cfg = MountConfig(
        mountpoint=args.mountpoint, state=args.state, profile=args.profile, reset=args.reset,
        foreground=args.foreground, debug=args.debug, log=args.log,
        options=parse_fuse_options(",".join(args.o or [])),
    )
    return mount(cfg)


def cmd_umount(args) -> int:
    from tdxfs.server.daemon import umount

    return umount(args.mountpoint, lazy=args.lazy)


def cmd_report_decode(args) -> int:
    from tdxfs.model import abi

    data = _read_input(args.file)
    try:
        fields = abi.as_json(data)
    except ValueError as exc:
        raise TdxfsError(f"{args.file}: {exc}") from None
    if args.json:
        json.dump(fields, sys.stdout, indent=2)
        print()
        return 0
    width = max(map(len, fields))
    for name, value in fields.items():
        field = abi.TDREPORT_FIELDS[name]
        shown = f"{value:#x}" if field.integer else value
        print(f"{name:<{width}}  @{field.offset:<4} {shown}")
    return 0


def cmd_profile_show(args) -> int:
    from tdxfs.model.profile import default_profile, load_profile

    profile = load_profile(args.profile) if args.profile else default_profile()
    sys.stdout.write(profile.as_toml())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdxfs", description="A software TDX guest attestation interface as files.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("mount", help="mount a simulated TD's attestation files")
    p.add_argument("mountpoint")
    p.add_argument("--state", metavar="DIR", help="keep the platform secret and RTMRs in DIR (durable)")
    p.add_argument("--profile", metavar="FILE", help="TOML profile overriding the embedded default TD")
    p.add_argument("--reset", action="store_true", help="start a fresh TD in --state DIR on purpose")
    p.add_argument("-f", dest="foreground", action="store_true", help="stay in the foreground, log to stderr")
    p.add_argument("-d", dest="debug", action="store_true", help="FUSE debug output (implies -f)")
    p.add_argument("-o", action="append", metavar="OPTS", help="FUSE options: allow_other, uid=, gid=, umask=, ro")
    p.add_argument("--log", metavar="FILE", help="log file (daemon default /var/log/tdxfs.log; -f: stderr)")
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("umount", help="unmount (also a dead mount left by a killed daemon)")
    p.add_argument("mountpoint")
    p.add_argument("--lazy", "-z", action="store_true", help="detach now even if busy")
    p.set_defaults(func=cmd_umount)

    report = sub.add_parser("report", help="TDREPORT tools").add_subparsers(dest="report_command", required=True)
    p = report.add_parser("decode", help="print every field of a TDREPORT by name")
    p.add_argument("file", nargs="?", default="-", help="a 1024-byte TDREPORT file, or - for stdin")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report_decode)

    profile = sub.add_parser("profile", help="TD profile tools").add_subparsers(dest="profile_command", required=True)
    p = profile.add_parser("show", help="print the effective profile as TOML")
    p.add_argument("--profile", metavar="FILE")
    p.set_defaults(func=cmd_profile_show)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TdxfsError as exc:
        print(f"tdxfs: {exc.reason}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `tdxfs report decode | head`
        sys.stderr.close()
        return 0
