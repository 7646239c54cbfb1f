"""``mount.fuse.tdxfs``: the mount(8) helper for tdxfs.

mount(8) runs ``/sbin/mount.fuse.tdxfs SOURCE MOUNTPOINT [-s] [-f] [-n] [-v] [-o OPTS]
[-N NAMESPACE]`` for ``mount -t fuse.tdxfs`` and for fstab lines of type ``fuse.tdxfs``, with
an empty PATH. So this helper never runs a program by name and never uses a shell: it calls
tdxfs's Python API (:class:`MountConfig` + :func:`mount`, daemon mode) in its own process,
and returns once the mount is ready. SOURCE is ignored (write ``tdxfs``).

Options (``-o``, comma separated; ``name="a,b"`` quotes a value holding commas):

* tdxfs settings: ``state=DIR``, ``profile=FILE``, ``reset``, ``log=FILE``, ``threads``,
  ``transport=kernel|libfuse`` (the ``tdxfs mount`` options of the same names; relative paths
  are taken from the current directory; ``threads`` implies ``transport=libfuse``);
* FUSE options, as in other FUSE filesystems: ``allow_other``, ``uid=N``, ``gid=N``,
  ``umask=OOO``, ``ro``, ``auto_unmount`` (and the others ``tdxfs mount -o`` takes);
* options of mount(8) and systemd are tolerated and dropped: ``rw``, ``defaults``, ``auto``,
  ``noauto``, ``nofail``, ``_netdev``, ``user``/``users``/``nouser``/``owner``/``group``,
  ``[no]dev``, ``[no]suid``, ``[no]exec``, atime and sync flags, ``comment=``, ``x-*``
  (``x-systemd.*``), ``X-*``. A FUSE mount is always nosuid,nodev and no file is executable,
  so dropping the flags grants nothing;
* anything else is refused (exit 1, the reason on stderr), unless ``-s`` (sloppy) is given:
  then it is ignored with a warning, as mount(8) documents for ``-s``.

Flags: ``-f`` (fake: check everything, mount nothing), ``-v`` (say what is mounted), ``-n``
(no mtab: ignored), ``-N NS`` (enter that mount namespace first), ``-t TYPE`` (checked).

Exit status follows mount(8): 0 mounted, 1 bad invocation or option, 32 mount failure.
"""

import ctypes
import os
import sys
from typing import Dict, List, Optional, Tuple

PROG = "mount.fuse.tdxfs"
EXIT_USAGE = 1
EXIT_FAILURE = 32

USAGE = f"usage: {PROG} SOURCE MOUNTPOINT [-o OPTIONS] [-s] [-f] [-n] [-v] [-N NAMESPACE]"

# tdxfs settings: option name -> MountConfig field; True if it takes a value (a path, but
# for ``transport``: a name, in NAMED).
SETTINGS = {"state": True, "profile": True, "log": True, "reset": False, "threads": False, "transport": True}
NAMED = {"transport": ("kernel", "libfuse")}
# Options of mount(8) (filesystem-independent and userspace ones) and of systemd: dropped.
DROPPED = frozenset("""
    rw defaults auto noauto nofail _netdev user users nouser owner group
    dev nodev suid nosuid exec noexec
    atime noatime diratime nodiratime relatime norelatime strictatime nostrictatime
    lazytime nolazytime sync async dirsync mand nomand iversion noiversion silent loud
    nosymfollow symfollow
""".split())
DROPPED_WITH_VALUE = ("comment", "user")  # user=NAME: mount(8) names the mounting user
DROPPED_PREFIXES = ("x-", "X-")
TYPES = ("fuse.tdxfs", "tdxfs")


class UsageError(Exception):
    """Bad invocation or option: exit 1 with the reason."""


def split_options(text: str) -> List[str]:
    """``a,b=c,d="e,f"`` -> ``['a', 'b=c', 'd=e,f']``; quotes (libmount's) are removed."""
    items, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise UsageError(f"unbalanced quote in mount options: {text}")
    items.append("".join(current))
    return [item for item in items if item]


def _dropped(name: str, has_value: bool) -> bool:
    if name.startswith(DROPPED_PREFIXES):
        return True
    return name in DROPPED_WITH_VALUE if has_value else name in DROPPED


def parse_options(text: str, sloppy: bool = False, warn=None) -> Tuple[Dict[str, object], Dict[str, object]]:
    """Split ``-o`` text into (tdxfs settings, FUSE options).

    Settings are keyword arguments of MountConfig; FUSE options are checked by tdxfs's own
    ``parse_fuse_options``. Raises UsageError naming the offending option. A later
    occurrence of an option overrides an earlier one (fstab options, then the command line).
    """
    from tdxfs.errors import ConfigError
    from tdxfs.server.daemon import USER_OPTIONS, parse_fuse_options

    settings: Dict[str, object] = {}
    fuse: Dict[str, str] = {}  # name -> item, so the last occurrence wins
    for item in split_options(text or ""):
        name, eq, value = item.partition("=")
        if name in SETTINGS:
            if SETTINGS[name] and not value:
                what = "|".join(NAMED[name]) if name in NAMED else "PATH"
                raise UsageError(f"mount option '{name}' needs a value ({name}={what})")
            if not SETTINGS[name] and eq:
                raise UsageError(f"mount option '{name}' takes no value")
            if name in NAMED:
                if value not in NAMED[name]:
                    raise UsageError(f"mount option '{name}' takes {' or '.join(NAMED[name])}, not '{value}'")
                settings[name] = value
            else:
                settings[name] = os.path.abspath(value) if SETTINGS[name] else True
        elif _dropped(name, bool(eq)):
            continue
        elif name in USER_OPTIONS:
            fuse[name] = item
        elif sloppy:
            if warn:
                warn(f"ignoring unknown mount option '{item}' (-s)")
        else:
            known = sorted(set(SETTINGS) | USER_OPTIONS - {"rw"})
            raise UsageError(f"unknown mount option '{name}' (tdxfs takes: {', '.join(known)}; "
                             "and tolerates mount(8)/systemd options such as noauto, nofail, x-*)")
    if settings.get("reset") and "state" not in settings:
        raise UsageError("mount option 'reset' needs state=DIR (without it every mount starts fresh)")
    if settings.get("threads") and settings.get("transport") == "kernel":
        raise UsageError("mount option 'threads' is libfuse's thread pool; transport=kernel is single-threaded")
    try:
        options = parse_fuse_options(",".join(fuse.values()))
    except ConfigError as exc:
        raise UsageError(exc.reason) from None
    return settings, options


def parse_args(argv: List[str]) -> dict:
    """mount(8)'s helper calling convention; options may come before or after the operands."""
    args = {"operands": [], "options": [], "sloppy": False, "fake": False, "verbose": False,
            "namespace": None, "type": None}
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            args["help"] = True
        elif arg == "--":
            args["operands"].extend(it)
        elif arg.startswith("-") and len(arg) > 1:
            flags = arg[1:]
            while flags:
                flag, flags = flags[0], flags[1:]
                if flag in "otN":
                    value = flags or next(it, None)
                    if value is None:
                        raise UsageError(f"option -{flag} needs an argument")
                    flags = ""
                    if flag == "o":
                        args["options"].append(value)
                    else:
                        args["namespace" if flag == "N" else "type"] = value
                elif flag in "sfvnr":  # -r (read-only) is mount(8)'s old spelling of -o ro
                    key = {"s": "sloppy", "f": "fake", "v": "verbose", "n": "nomtab", "r": "ro"}[flag]
                    args[key] = True
                else:
                    raise UsageError(f"unknown flag -{flag}")
        else:
            args["operands"].append(arg)
    if args.get("help"):
        return args
    if len(args["operands"]) != 2:
        raise UsageError("expected SOURCE and MOUNTPOINT")
    if args["type"] is not None and args["type"] not in TYPES:
        raise UsageError(f"type {args['type']} is not fuse.tdxfs")
    if args.get("ro"):
        args["options"].append("ro")
    return args


def enter_namespace(path: str) -> None:
    """``-N``: mount in the mount namespace ``path`` (what mount(8) passes is an fd path)."""
    CLONE_NEWNS = 0x00020000
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"namespace {path}: {exc.strerror}") from None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise UsageError(f"cannot enter mount namespace {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def build_config(args: dict, warn=None):
    from tdxfs.server.daemon import MountConfig

    settings, options = parse_options(",".join(args["options"]), sloppy=args["sloppy"], warn=warn)
    return MountConfig(mountpoint=args["operands"][1], options=options, **settings)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def say(message: str) -> None:
        print(f"{PROG}: {message}", file=sys.stderr)

    try:
        args = parse_args(argv)
        if args.get("help"):
            print(USAGE)
            print(__doc__.split("\n\n", 2)[2].strip().replace("``", ""))
            return 0
        cfg = build_config(args, warn=say)  # relative paths: from this cwd, before -N moves it
        if args["namespace"]:
            enter_namespace(args["namespace"])
    except UsageError as exc:
        say(str(exc))
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE

    from tdxfs.errors import TdxfsError, printable
    from tdxfs.model.machine import build_td
    from tdxfs.model.profile import load_profile, profile_or_default
    from tdxfs.server.daemon import check_mountpoint, mount

    if args["verbose"]:
        shown = ", ".join(f"{k}={v}" for k, v in vars(cfg).items() if v not in (None, False, {}))
        print(f"{PROG}: mounting tdxfs: {shown}")
    try:
        if args["fake"]:  # the checks mount() makes first, without touching the state DIR
            check_mountpoint(cfg.mountpoint)
            if cfg.state is None:
                build_td(profile_or_default(cfg.profile), None, cfg.reset)
            elif cfg.profile:
                load_profile(cfg.profile)
            return 0
        code = mount(cfg)
    except TdxfsError as exc:
        say(exc.reason)
        return EXIT_FAILURE
    except OSError as exc:
        say(f"{printable(cfg.mountpoint)}: {printable(str(exc), backslash=False)}")
        return EXIT_FAILURE
    return EXIT_FAILURE if code else 0


if __name__ == "__main__":
    sys.exit(main())
