"""``tdxfs``: mount, umount, and report tools.

The command line is one table, ``COMMANDS``: a row per subcommand with its handler and its
arguments. An argument's ``kind`` decides its metavar, how its value is parsed and, for a
path the command writes, the check made before the command starts.

A user's mistake is one line on stderr, starting ``tdxfs: ``, and an exit status, never a
traceback: 2 for a usage error (a malformed value, an unknown or missing option, options
that do not go together), 1 for a failure (a missing file, a directory where a file
belongs, something that is not a tdxfs mount), as argparse and coreutils have it.
``tdxfs run`` and ``tdxfs shell`` fail with 125 as env(1) does (126/127 for COMMAND).
"""

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from tdxfs.errors import TdxfsError, UsageError, printable

# -- reading the user's files ---------------------------------------------------------------------


def _read_file(path: str, what: str) -> bytes:
    """The bytes of the file a user named (``-``: stdin); a failure names it."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TdxfsError(f"{what} {path}: {exc.strerror or exc}") from None


def _read_text(path: str, what: str) -> str:
    data = _read_file(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TdxfsError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None


def _write_file(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise TdxfsError(f"{path}: {exc.strerror or exc}") from None


# -- argument values: one parser per kind ---------------------------------------------------------


def _hex_bytes(text: str, size: int) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != size:
        raise argparse.ArgumentTypeError(f"takes {2 * size} hex chars ({size} bytes)")
    return value


def reportdata_arg(text: str) -> bytes:
    """--reportdata: 128 hex chars (64 bytes), the one parser every command uses."""
    from tdxfs import linuxabi

    return _hex_bytes(text, linuxabi.REPORTDATA_LEN)


def digest_arg(text: str) -> bytes:
    """--digest: a SHA-384 digest, 96 hex chars."""
    from tdxfs.model import abi

    return _hex_bytes(text.strip(), abi.MEASUREMENT_SIZE)


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number >= 1, not {text!r}")
    return value


def counts_arg(text: str) -> Tuple[int, ...]:
    """``1,2,4,8``: whole numbers >= 1."""
    try:
        return tuple(count_arg(item) for item in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"takes whole numbers >= 1 separated by commas, not {text!r}") from None


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"takes a positive number of seconds, not {text!r}")
    return value


def cpu_arg(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"takes a CPU number, not {text!r}")
    return int(text)


def rtmr_arg(text: str) -> int:
    from tdxfs.model import abi

    if text not in {str(i) for i in range(abi.RTMR_COUNT)}:
        raise argparse.ArgumentTypeError(f"takes an RTMR index 0..{abi.RTMR_COUNT - 1}, not {text!r}")
    return int(text)


def event_type_arg(text: str) -> int:
    from tdxfs.model.eventlog import EV_NO_ACTION, parse_event_type

    try:
        value = parse_event_type(text)
    except TdxfsError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    if value == EV_NO_ACTION:  # the TD refuses it too; say so before anything is written
        raise argparse.ArgumentTypeError("EV_NO_ACTION events are never extended; use another event type")
    return value


def time_arg(text: str) -> int:
    from tdxfs.verify import parse_time

    try:
        return parse_time(text)
    except TdxfsError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither seconds since the epoch nor an ISO 8601 time") from None


def fuse_options_arg(text: str) -> str:
    """-o a,b=c: checked here (unknown names, values), kept as text."""
    from tdxfs.server.daemon import parse_fuse_options

    try:
        parse_fuse_options(text)
    except TdxfsError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    return text


def methods_arg(text: str) -> List[str]:
    from tdxfs.bench.methods import METHODS

    names = text.split(",")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(unknown)} (known: {', '.join(METHODS)})")
    return names


@dataclass(frozen=True)
class Kind:
    """What an argument's value is: its metavar, its parser, and whether the command writes
    it (``"file"`` or ``"dir"``: checked before the command starts)."""

    metavar: Optional[str]
    parse: Optional[Callable[[str], object]] = None
    writes: Optional[str] = None


KINDS: Dict[str, Kind] = {
    "file": Kind("FILE"),                        # read as bytes (- for stdin where the help says so)
    "text-file": Kind("FILE"),                   # read as UTF-8 text: TOML, JSON
    "device": Kind("PATH"),                      # the tdx_guest node
    "log": Kind("FILE"),                         # a daemon's log, opened with its own checks
    "out": Kind("FILE", writes="file"),
    "out-dir": Kind("DIR", writes="dir"),
    "mountpoint": Kind("MOUNTPOINT"),            # an existing directory
    "mount": Kind("DIR"),                        # a running tdxfs mount
    "state": Kind("DIR"),                        # a state directory (made if missing)
    "reportdata": Kind("HEX", reportdata_arg),
    "digest": Kind("HEX", digest_arg),
    "count": Kind("N", count_arg),
    "counts": Kind("1,2,4,8", counts_arg),
    "seconds": Kind("S", seconds_arg),
    "cpu": Kind("CPU", cpu_arg),
    "rtmr": Kind("N", rtmr_arg),
    "event-type": Kind("T", event_type_arg),
    "time": Kind("TIME", time_arg),
    "fuse-options": Kind("OPTS", fuse_options_arg),
    "methods": Kind("A,B", methods_arg),
    "text": Kind("STRING"),
    "choice": Kind(None),                        # one of the row's choices
    "command": Kind("-- COMMAND [ARGS...]"),
}


@dataclass(frozen=True)
class Arg:
    """One argument: its flags (or positional name), its kind (None: a switch), its help,
    the mutually exclusive group it belongs to (a name; ``!name`` for a group one of whose
    members is required), and argparse's other keywords."""

    flags: Tuple[str, ...]
    kind: Optional[str] = None
    help: Optional[str] = None
    group: Optional[str] = None
    options: Mapping[str, object] = field(default_factory=dict)


def arg(*flags: str, kind: Optional[str] = None, help: Optional[str] = None, group: Optional[str] = None,
        **options) -> Arg:
    return Arg(flags, kind, help, group, options)


@dataclass(frozen=True)
class Command:
    """One subcommand: its words (``("report", "get")``), handler, help and arguments.
    ``failure``: the exit status of a failure (``tdxfs run``: 125, as env(1))."""

    words: Tuple[str, ...]
    func: Callable
    help: str
    args: Tuple[Arg, ...] = ()
    description: Optional[str] = None
    failure: int = 1
    defaults: Mapping[str, object] = field(default_factory=dict)


# -- the commands ---------------------------------------------------------------------------------


def _transport(args) -> str:
    """--transport, or what --threads and $TDXFS_TRANSPORT imply (daemon.resolve_transport);
    --transport kernel with --threads is a usage error."""
    from tdxfs.errors import ConfigError
    from tdxfs.server.daemon import resolve_transport

    try:
        return resolve_transport(args.transport, args.threads)
    except ConfigError as exc:
        raise UsageError(exc.reason) from None


def _mount_config(args, mountpoint: str, foreground: bool = False, debug: bool = False):
    from tdxfs.server.daemon import MountConfig, parse_fuse_options

    return MountConfig(
        mountpoint=mountpoint, state=args.state, profile=args.profile, reset=args.reset,
        foreground=foreground, debug=debug, log=args.log, threads=args.threads,
        options=parse_fuse_options(",".join(args.o or [])), transport=_transport(args),
    )


def _own_mount_option(args, names: Tuple[str, ...]) -> Optional[str]:
    """The first of ``names`` given, as typed (``-o``, ``--state``): options only a command's
    own mount takes."""
    given = [name for name in names if getattr(args, name)]
    if not given:
        return None
    return "-o" if given[0] == "o" else f"--{given[0]}"


OWN_MOUNT_OPTIONS = ("state", "profile", "reset", "o", "log", "threads", "transport")


def cmd_mount(args) -> int:
    from tdxfs.server.daemon import mount

    return mount(_mount_config(args, args.mountpoint, args.foreground, args.debug))


def cmd_umount(args) -> int:
    from tdxfs.server.daemon import umount

    return umount(args.mountpoint, lazy=args.lazy)


def cmd_run(args) -> int:
    from tdxfs.server.run import run

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.shell:
        command = [os.environ.get("SHELL") or "/bin/sh"]
    flag = _own_mount_option(args, OWN_MOUNT_OPTIONS)
    if args.mount and flag:
        raise TdxfsError(f"--mount uses a running mount; {flag} is for tdxfs run's own mount")
    cfg = None if args.mount else _mount_config(args, "")
    if args.verbose:
        import logging

        logging.basicConfig(format="tdxfs: %(message)s", level=logging.DEBUG)
    return run(command, cfg, args.mount)


def cmd_report_decode(args) -> int:
    from tdxfs.model import abi

    data = _read_file(args.file, "report")
    if len(data) != abi.TDREPORT_SIZE:
        raise TdxfsError(f"{args.file}: a TDREPORT is {abi.TDREPORT_SIZE} bytes, got {len(data)}")
    return _print_report(data, args.json)


def _print_json(doc) -> int:
    import json

    json.dump(doc, sys.stdout, indent=2)
    print()
    return 0


def _print_report(data: bytes, as_json: bool) -> int:
    from tdxfs.model import abi

    fields = abi.as_json(data)
    if as_json:
        return _print_json(fields)
    width = max(map(len, fields))
    for name, value in fields.items():
        field_ = abi.TDREPORT_FIELDS[name]
        shown = f"{value:#x}" if field_.integer else value
        print(f"{name:<{width}}  @{field_.offset:<4} {shown}")
    return 0


def cmd_report_get(args) -> int:
    from tdxfs.client import files, ioctl

    reportdata = args.reportdata if args.reportdata is not None else os.urandom(64)
    if args.via == "ioctl":
        where = args.device or (os.path.join(args.mount, "tdx_guest") if args.mount else "/dev/tdx_guest")
        call = lambda: ioctl.get_report0(where, reportdata)  # noqa: E731
    else:
        if not args.mount:
            raise UsageError(f"--via {args.via} needs --mount DIR (a tdxfs mount)")
        where = args.mount
        fn = files.shared_pair if args.via == "files" else files.transaction
        call = lambda: fn(where, reportdata)  # noqa: E731
    try:
        report = call()
    except OSError as exc:
        raise TdxfsError(f"report via {args.via}: {exc.filename or where}: {exc.strerror or exc}") from None
    if args.output:
        _write_file(args.output, report)
        return 0
    return _print_report(report, args.json)


def cmd_quote_get(args) -> int:
    from tdxfs.client import configfs

    nonce = args.reportdata is None  # --nonce, and the default: a fresh random nonce, printed
    reportdata = os.urandom(64) if nonce else args.reportdata
    if args.output is None and sys.stdout.isatty():
        raise UsageError("a quote is binary: use -o FILE or redirect stdout")
    report_dir = os.path.join(args.mount, "tsm", "report") if args.mount else configfs.DEFAULT_REPORT_DIR
    try:
        quote = configfs.get_quote(report_dir, reportdata)
    except OSError as exc:
        raise TdxfsError(f"quote via {report_dir}: {exc.strerror or exc}") from None
    if nonce:
        print(f"nonce {reportdata.hex()}", file=sys.stderr)
    if args.output:
        _write_file(args.output, quote)
        print(f"wrote {len(quote)}-byte quote to {args.output}", file=sys.stderr)
        return 0
    sys.stdout.buffer.write(quote)
    return 0


def cmd_pki_export(args) -> int:
    from tdxfs.model import collateral
    from tdxfs.model.machine import in_memory_td
    from tdxfs.model.profile import profile_or_default
    from tdxfs.model.state import read_pki

    quote = None
    if args.state:
        if args.profile:
            raise UsageError("--profile is for the in-memory platform; a --state DIR keeps its own")
        pki = read_pki(args.state)
    else:
        td = in_memory_td(profile_or_default(args.profile))
        pki = td.qe.pki
        quote = td.quote(bytes(64))
    col = collateral.issue(pki, revoke_pck=args.revoke_pck)
    files = {
        "root-ca.pem": pki.root_cert_pem().encode(),
        "root-ca.der": pki.root_der(),
        "collateral.json": col.bundle_json().encode(),
        "tcb-info.json": col.tcb_info_document().encode(),
        "qe-identity.json": col.qe_identity_document().encode(),
        "root-ca-crl.der": col.root_ca_crl,
        "pck-platform-ca-crl.der": col.pck_crl,
        "pck-crl-issuer-chain.pem": col.pck_crl_issuer_chain.encode(),
        "tcb-signing-chain.pem": col.tcb_info_issuer_chain.encode(),
    }
    if quote is not None:
        files["quote.bin"] = quote
    try:
        os.makedirs(args.dir, exist_ok=True)
    except OSError as exc:
        raise TdxfsError(f"{args.dir}: {exc.strerror or exc}") from None
    for name, data in files.items():
        _write_file(os.path.join(args.dir, name), data)
    if quote is not None:
        print("tdxfs: no --state: this is a fresh in-memory platform that no mount serves; its root\n"
              "verifies only quotes made in this process, such as the sample quote.bin written\n"
              "with it. For a mount's quotes use: tdxfs pki export DIR --state STATE", file=sys.stderr)
    print(f"SIMULATED PKI (not Intel's): root SHA-256 {pki.fingerprint()}")
    print(f"wrote {', '.join(files)} to {args.dir}")
    return 0


def cmd_quote_decode(args) -> int:
    from tdxfs.model import quote as q

    data = _read_file(args.file, "quote")
    try:
        fields = q.as_json(data)
    except ValueError as exc:
        raise TdxfsError(f"{args.file}: {exc}") from None
    if args.json:
        return _print_json(fields)
    width = max(map(len, fields))
    for name, value in fields.items():
        field_ = q.QUOTE_FIELDS.get(name)
        where = f"@{field_.offset:<4}" if field_ else "     "
        if name == "pck_cert_chain":
            value = "; ".join(_chain_subjects(value)) or "(no certificates)"
        elif isinstance(value, int):
            value = f"{value:#x}"
        print(f"{name:<{width}}  {where} {value}")
    return 0


def _chain_subjects(pem: str) -> List[str]:
    from cryptography import x509

    try:
        return [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(pem.encode())]
    except ValueError:
        return ["(not a PEM certificate chain)"]


def cmd_quote_verify(args) -> int:
    from tdxfs import verify

    quote = _read_file(args.file, "quote")
    collateral_json = _read_text(args.collateral, "--collateral")
    root = None
    if args.root:
        try:
            root = verify.root_der(_read_file(args.root, "--root"))
        except TdxfsError as exc:
            raise TdxfsError(f"--root {args.root}: {exc.reason}") from None
    now = args.now if args.now is not None else verify.parse_time(None)
    try:
        verdict = verify.verify(quote, collateral_json, root, now)
    except verify.Rejected as exc:
        print(f"REJECTED: {exc}")
        return 1
    if args.json:
        return _print_json(verdict.raw)
    trusted = args.root or "Intel SGX Root CA (built into dcap-qvl)"
    print(f"verified by dcap-qvl, trusting {trusted}")
    print(f"tcb_status  {verdict.status}")
    if verdict.advisory_ids:
        print(f"advisories  {', '.join(verdict.advisory_ids)}")
    if verdict.status != "UpToDate":
        print(f"note        accepted with TCB status {verdict.status}: whether that is good enough is "
              "the relying party's policy")
    for name, value in verdict.td.items():
        print(f"{name:<16}{value}")
    return 0


def cmd_bench(args) -> int:
    from tdxfs.bench.run import Settings, run

    if args.mount and args.transport:
        raise UsageError("--mount measures a running mount; --transport is for tdxfs bench's own mount")
    if args.mount:
        from tdxfs.server.daemon import mounted_fstype

        if mounted_fstype(args.mount) != "fuse.tdxfs":
            raise TdxfsError(f"--mount {args.mount}: not a tdxfs mount")

    s = Settings.quick() if args.quick else Settings.full()
    if args.rounds:
        s.rounds = args.rounds
    if args.batch:
        s.batch = args.batch
    if args.seconds:
        s.seconds = args.seconds
    if args.clients:
        s.clients = args.clients
    if args.no_strace:
        s.strace = False
    if args.pin is not None:
        from tdxfs.bench.native import default_cpu

        s.pin_cpu = default_cpu() if args.pin < 0 else args.pin
        if s.pin_cpu not in os.sched_getaffinity(0):
            raise TdxfsError(f"--pin {s.pin_cpu}: not a CPU this process may run on")
    if not args.mount:
        from tdxfs.errors import ConfigError
        from tdxfs.server.daemon import resolve_transport

        try:
            transport = resolve_transport(args.transport)  # default: $TDXFS_TRANSPORT, else kernel
        except ConfigError as exc:
            raise UsageError(exc.reason) from None
    else:
        transport = "kernel"  # unused: --mount measures a running mount
    return run(args.output, args.mount, s, args.methods, transport=transport)


def cmd_stress(args) -> int:
    from tdxfs.stress.run import Options, run

    flag = _own_mount_option(args, tuple(n for n in OWN_MOUNT_OPTIONS if n != "state"))
    if args.mount and flag:
        raise UsageError(f"--mount stresses a running mount; {flag} is for tdxfs stress's own mount")
    transport = None if args.mount else _transport(args)
    return run(Options(clients=args.clients, seconds=args.seconds, mount=args.mount, state=args.state,
                       profile=args.profile, reset=args.reset, fuse_options=args.o or [], log=args.log,
                       threads=args.threads, transport=transport, json_path=args.json,
                       command=" ".join(["tdxfs", *sys.argv[1:]]) if sys.argv[1:] else "tdxfs stress"))


def cmd_profile_show(args) -> int:
    from tdxfs.model.profile import profile_or_default

    sys.stdout.write(profile_or_default(args.profile).as_toml())
    return 0


def cmd_extend(args) -> int:
    from tdxfs.client import eventlog as client
    from tdxfs.model.eventlog import RUNTIME_EVENT_TYPE

    event_type = args.type if args.type is not None else RUNTIME_EVENT_TYPE
    if args.digest is not None:
        record = client.record_for(args.rtmr, event_type, digest_hex=args.digest.hex())
    else:
        # --text: the argument's bytes as given (UTF-8 from a UTF-8 terminal; any others too)
        data = _read_file(args.data, "--data") if args.data is not None else os.fsencode(args.text)
        record = client.record_for(args.rtmr, event_type, data=data)
    client.write_record(client.mount_dir(args.mount), record)
    print(f"rtmr{record.rtmr} extended with {record.digest.hex()}")
    return 0


def cmd_eventlog_replay(args) -> int:
    from tdxfs.client import eventlog as client

    if args.ccel:
        log_path = args.ccel
    elif args.mount:
        log_path = os.path.join(args.mount, "acpi", "data", "CCEL")
    else:
        log_path = client.DEFAULT_CCEL_DATA
    reported = None
    if args.report:
        reported = client.report_rtmrs(_read_file(args.report, "report"), args.report)
    elif args.mount:
        path = os.path.join(args.mount, "tdreport")
        reported = client.report_rtmrs(_read_file(path, "report"), path)
    replayed = client.replay_ccel(log_path)
    rows = client.compare(replayed, reported)
    for row in rows:
        verdict = "" if reported is None else ("  match" if row.matches else f"  MISMATCH (report: {row.reported.hex()})")
        print(f"{row.name} {row.replayed.hex()}{verdict}")
    if reported is None:
        return 0
    bad = [row.name for row in rows if not row.matches]
    print(f"the replayed log does not match the report in {', '.join(bad)}" if bad
          else "the replayed log matches the report", file=sys.stderr)
    return 1 if bad else 0


# -- the table ------------------------------------------------------------------------------------


def _mount_options(log_help: str) -> Tuple[Arg, ...]:
    """The options of a command that mounts its own TD."""
    return (
        arg("--state", kind="state", help="keep the platform secret and RTMRs in DIR (durable)"),
        arg("--profile", kind="text-file", help="TOML profile overriding the embedded default TD"),
        arg("--reset", help="start a fresh TD in --state DIR on purpose"),
        arg("-o", kind="fuse-options", action="append",
            help="FUSE options: allow_other, allow_root, uid=, gid=, umask=, ro, auto_unmount"),
        arg("--log", kind="log", help=log_help),
        arg("--transport", kind="choice", choices=("kernel", "libfuse"),
            help="what serves the mount: tdxfs's own FUSE protocol server (kernel, the default; "
                 "$TDXFS_TRANSPORT overrides the default) or libfuse through mfusepy/fusepy"),
        arg("--threads", help="serve with libfuse's thread pool (implies --transport libfuse; "
                              "default: single-threaded, faster per request)"),
    )


RUN_DESCRIPTION = ("In a private mount namespace: /dev/tdx_guest, /sys/kernel/config/tsm/report, "
                   "/sys/devices/virtual/misc/tdx_guest/measurements (and /sys/class/misc/tdx_guest), "
                   "/sys/firmware/acpi/tables/CCEL and .../data/CCEL served by tdxfs; the host sees nothing. "
                   "Exit status: COMMAND's (128+N for signal N); 125 when tdxfs run itself refuses; "
                   "126/127 when COMMAND cannot be run.")
RUN_OPTIONS = (
    *_mount_options("log file of the mount's daemon (default /var/log/tdxfs.log)"),
    arg("--mount", kind="mount", help="use this running tdxfs mount instead of starting one"),
    arg("-v", "--verbose", help="say what is placed where, on stderr"),
)
STRESS_DESCRIPTION = ("N client processes mix reports (ioctl, one-fd transaction, shell pattern), extends (rtmrN, "
                      "measurements/, ioctl, eventlog), configfs quotes and event-log reads for S seconds, then "
                      "check the invariants and print them as a table. Without --mount it mounts its own TD (a "
                      "temporary --state unless given) in a daemon process and always unmounts it. With --mount, "
                      "--state DIR names that mount's state directory, whose PKI verifies the quotes (without it "
                      "they are not verified). Exit 0 when every invariant holds, 1 otherwise.")

GROUPS = {"report": "TDREPORT tools", "quote": "TDX quotes", "pki": "the simulated platform PKI",
          "profile": "TD profile tools", "eventlog": "event log tools"}

COMMANDS: Tuple[Command, ...] = (
    Command(("mount",), cmd_mount, "mount a simulated TD's attestation files", (
        arg("mountpoint", kind="mountpoint"),
        *_mount_options("log file (daemon default /var/log/tdxfs.log; -f: stderr)"),
        arg("-f", dest="foreground", help="stay in the foreground, log to stderr"),
        arg("-d", dest="debug", help="FUSE debug output: a line per request and reply (implies -f)"),
    )),
    Command(("run",), cmd_run, "run COMMAND where /dev/tdx_guest, /sys/kernel/config/tsm/report, ... are tdxfs's",
            (*RUN_OPTIONS, arg("command", kind="command", nargs=argparse.REMAINDER)),
            description=RUN_DESCRIPTION, failure=125, defaults={"shell": False}),
    Command(("shell",), cmd_run, "a shell ($SHELL or /bin/sh) where a TDX guest's paths are tdxfs's", RUN_OPTIONS,
            description=RUN_DESCRIPTION, failure=125, defaults={"shell": True, "command": []}),
    Command(("umount",), cmd_umount, "unmount (also a dead mount left by a killed daemon)", (
        arg("mountpoint", kind="mountpoint"),
        arg("--lazy", "-z", help="detach now even if busy"),
    )),
    Command(("report", "decode"), cmd_report_decode, "print every field of a TDREPORT by name", (
        arg("file", kind="file", nargs="?", default="-", help="a 1024-byte TDREPORT file, or - for stdin"),
        arg("--json"),
    )),
    Command(("report", "get"), cmd_report_get,
            "get a TDREPORT through ioctl, the shared files, or a one-fd transaction", (
                arg("--reportdata", kind="reportdata", help="128 hex chars (default: a random nonce)"),
                arg("--via", kind="choice", choices=("ioctl", "files", "transaction"), default="ioctl"),
                arg("--mount", kind="mount",
                    help="a tdxfs mount (for --via files/transaction; ioctl uses DIR/tdx_guest)"),
                arg("--device", kind="device",
                    help="ioctl node (default /dev/tdx_guest, or DIR/tdx_guest with --mount)"),
                arg("-o", "--output", kind="out", help="save the raw 1024 bytes instead of printing fields"),
                arg("--json"),
            )),
    Command(("quote", "get"), cmd_quote_get, "get a quote through a configfs-tsm report instance", (
        arg("--reportdata", kind="reportdata", group="nonce", help="128 hex chars"),
        arg("--nonce", group="nonce", help="a random 64-byte nonce, printed on stderr (the default)"),
        arg("--mount", kind="mount", help="a tdxfs mount (default: /sys/kernel/config/tsm/report)"),
        arg("-o", "--output", kind="out", help="write the quote here (default: stdout, not a terminal)"),
    )),
    Command(("quote", "decode"), cmd_quote_decode, "print every field of a v4 TD quote by name", (
        arg("file", kind="file", nargs="?", default="-", help="a quote file, or - for stdin"),
        arg("--json"),
    )),
    Command(("quote", "verify"), cmd_quote_verify,
            "verify a quote with dcap-qvl (exit 0 when accepted, whatever its TCB status)", (
                arg("file", kind="file", nargs="?", default="-", help="a quote file, or - for stdin"),
                arg("--collateral", kind="text-file", required=True,
                    help="collateral bundle JSON (tdxfs pki export DIR writes DIR/collateral.json)"),
                arg("--root", kind="file", help="root CA certificate to trust, PEM or DER "
                    "(default: Intel's real root, which no tdxfs quote chains to)"),
                arg("--now", kind="time", help="verify as of TIME: epoch seconds or ISO 8601 (default: now)"),
                arg("--json", help="print dcap-qvl's verified report as JSON"),
            )),
    Command(("pki", "export"), cmd_pki_export,
            "write the SIMULATED root certificate and collateral for relying parties", (
                arg("dir", kind="out-dir", help="output directory"),
                arg("--state", kind="state", help="the state directory of the mount whose quotes will be verified "
                    "(default: a fresh in-memory platform, with a sample quote.bin)"),
                arg("--profile", kind="text-file", help="TD profile of the in-memory platform's sample quote"),
                arg("--revoke-pck", help="issue a PCK CRL that revokes this platform's PCK"),
            )),
    Command(("bench",), cmd_bench, "measure the ioctl and the file designs side by side", (
        arg("--quick", help="a smoke run (under 30 s on 2 cores)"),
        arg("--output", kind="out-dir", default="bench-out", help="where bench.json/.png/.svg go"),
        arg("--mount", kind="mount", help="measure this tdxfs mount (default: mount our own)"),
        arg("--methods", kind="methods", help="a subset of the methods"),
        arg("--rounds", kind="count", help="interleaved latency rounds"),
        arg("--batch", kind="count", help="operations per method per round"),
        arg("--seconds", kind="seconds", help="duration of each scaling point"),
        arg("--clients", kind="counts", help="client process counts for scaling"),
        arg("--no-strace", help="use the methods' own syscall counts"),
        arg("--transport", kind="choice", choices=("kernel", "libfuse"),
            help="what serves the bench's own mount: tdxfs's kernel transport (default) or the libfuse daemon"),
        arg("--pin", kind="cpu", nargs="?", const=-1,
            help="also time the C client's rounds with server and client on one CPU (default: the last)"),
    )),
    Command(("stress",), cmd_stress,
            "N clients mix every operation on one mount, then the invariants are checked (exit 1 when one fails)", (
                arg("--clients", kind="count", default=4, help="client processes (default 4)"),
                arg("--seconds", kind="seconds", default=10.0, help="duration (default 10)"),
                arg("--mount", kind="mount", help="stress this running tdxfs mount (default: mount our own)"),
                arg("--json", kind="out", help="write the figures and the invariants as JSON"),
                *_mount_options("log file of its own mount's daemon (default: a temporary file)"),
            ), description=STRESS_DESCRIPTION),
    Command(("profile", "show"), cmd_profile_show, "print the effective profile as TOML", (
        arg("--profile", kind="text-file"),
    )),
    Command(("extend",), cmd_extend, "extend an RTMR and log the event (through MOUNT/eventlog)", (
        arg("--rtmr", kind="rtmr", required=True, help="RTMR index 0..3"),
        arg("--digest", kind="digest", group="!what",
            help="extend this SHA-384 digest (96 hex digits), no event data"),
        arg("--data", kind="file", group="!what",
            help="extend SHA-384 of FILE (- for stdin), logged with its contents"),
        arg("--text", kind="text", group="!what", help="extend SHA-384 of STRING (UTF-8), logged with it"),
        arg("--type", kind="event-type",
            help="TCG event type: a name (EV_IPL, EV_EVENT_TAG) or a number (default EV_IPL)"),
        arg("--mount", kind="mount", help="the tdxfs mount (default: $TDXFS_MOUNT, which tdxfs run sets)"),
    )),
    Command(("eventlog", "replay"), cmd_eventlog_replay,
            "replay a CCEL event log, print RTMR0-3, compare with a report (exit 1 on a mismatch)", (
                arg("--ccel", kind="file", help="a CCEL log area (default: MOUNT/acpi/data/CCEL with --mount, "
                    "else /sys/firmware/acpi/tables/data/CCEL)"),
                arg("--mount", kind="mount", help="a tdxfs mount: its log, and a fresh report from DIR/tdreport"),
                arg("--report", kind="file", help="a 1024-byte TDREPORT to compare with"),
            )),
)


class Parser(argparse.ArgumentParser):
    """argparse whose usage error is one line: ``tdxfs: MESSAGE; see PROG --help``, exit 2."""

    def error(self, message: str):
        usage_error(self.prog, message)
        self.exit(2)


def usage_error(prog: str, message: str) -> None:
    print(f"tdxfs: {printable(message, backslash=False)}; see {prog} --help", file=sys.stderr)


def _add_argument(parser, groups: Dict[str, object], a: Arg):
    kind = KINDS[a.kind] if a.kind else None
    options = dict(a.options)
    if kind is None:
        options.setdefault("action", "store_true")
    else:
        if kind.metavar and "choices" not in options:
            options.setdefault("metavar", kind.metavar)
        if kind.parse:
            options.setdefault("type", kind.parse)
    target = parser
    if a.group:
        name = a.group.lstrip("!")
        if name not in groups:
            groups[name] = parser.add_mutually_exclusive_group(required=a.group.startswith("!"))
        target = groups[name]
    action = target.add_argument(*a.flags, help=a.help, **options)
    action.kind = a.kind  # read back by the output check and by the tests
    return action


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tdxfs", description="A software TDX guest attestation interface as files.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    nested: Dict[str, argparse._SubParsersAction] = {}
    for cmd in COMMANDS:
        where, name = sub, cmd.words[-1]
        if len(cmd.words) == 2:
            group = cmd.words[0]
            if group not in nested:
                nested[group] = sub.add_parser(group, help=GROUPS[group]).add_subparsers(
                    dest=f"{group}_command", metavar="COMMAND", required=True)
            where = nested[group]
        p = where.add_parser(name, help=cmd.help, description=cmd.description)
        groups: Dict[str, object] = {}
        writes = []  # (flag, dest, "file" or "dir") of each path the command writes
        for a in cmd.args:
            action = _add_argument(p, groups, a)
            if a.kind and KINDS[a.kind].writes:
                writes.append((a.flags[0], action.dest, KINDS[a.kind].writes))
        p.set_defaults(func=cmd.func, failure=cmd.failure, writes=writes, prog=p.prog, **cmd.defaults)
    return parser


def check_outputs(args) -> None:
    """The paths the command will write, checked before it starts: a benchmark or a stress
    run must not fail at its end over where its results go. A file needs an existing
    directory; a directory is made, so nothing on its way may be another kind of file."""
    for flag, dest, writes in args.writes:
        path = getattr(args, dest)
        if path is None or path == "-":
            continue
        shown = f"{flag} {path}" if flag.startswith("-") else path
        if writes == "dir":
            where = os.path.abspath(path)
            while not os.path.lexists(where):
                where = os.path.dirname(where)
            if not os.path.isdir(where):
                raise TdxfsError(f"{shown}: Not a directory")
        elif os.path.isdir(path):
            raise TdxfsError(f"{shown}: Is a directory")
        elif not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise TdxfsError(f"{shown}: No such file or directory")


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error already said in one line (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        check_outputs(args)
        return args.func(args)
    except TdxfsError as exc:
        if isinstance(exc, UsageError):
            usage_error(args.prog, exc.reason)
        else:
            print(f"tdxfs: {printable(exc.reason, backslash=False)}", file=sys.stderr)
        return getattr(exc, "exit_status", args.failure)
    except BrokenPipeError:  # `tdxfs report decode | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # a path the user gave, said as coreutils says it
        where = f"{printable(os.fsdecode(exc.filename), backslash=False)}: " if exc.filename else ""
        print(f"tdxfs: {where}{exc.strerror or exc}", file=sys.stderr)
        return args.failure
    except KeyboardInterrupt:
        return 130
