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


def _mount_config(args, mountpoint: str, foreground: bool = False, debug: bool = False):
    from tdxfs.server.daemon import MountConfig, parse_fuse_options

    return MountConfig(
        mountpoint=mountpoint, state=args.state, profile=args.profile, reset=args.reset,
        foreground=foreground, debug=debug, log=args.log, threads=args.threads,
        options=parse_fuse_options(",".join(args.o or [])),
    )


def reportdata_arg(text: str) -> bytes:
    """--reportdata: 128 hex chars (64 bytes), the one parser every command uses."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 64:
        raise TdxfsError("--reportdata takes 128 hex chars (64 bytes)")
    return value


def cmd_mount(args) -> int:
    from tdxfs.server.daemon import mount

    return mount(_mount_config(args, args.mountpoint, args.foreground, args.debug))


def cmd_umount(args) -> int:
    from tdxfs.server.daemon import umount

    return umount(args.mountpoint, lazy=args.lazy)


def cmd_run(args) -> int:
    import os

    from tdxfs.server.run import run

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.shell:
        command = [os.environ.get("SHELL") or "/bin/sh"]
    own = [name for name in ("state", "profile", "reset", "o", "log", "threads") if getattr(args, name)]
    try:
        if args.mount and own:
            flag = "-o" if own[0] == "o" else f"--{own[0]}"
            raise TdxfsError(f"--mount uses a running mount; {flag} is for tdxfs run's own mount")
        cfg = None if args.mount else _mount_config(args, "")
        if args.verbose:
            import logging

            logging.basicConfig(format="tdxfs: %(message)s", level=logging.DEBUG)
        return run(command, cfg, args.mount)
    except TdxfsError as exc:  # 125 for tdxfs run's own refusals, as env(1) and timeout(1) have it
        print(f"tdxfs: {exc.reason}", file=sys.stderr)
        return getattr(exc, "exit_status", 125)


def cmd_report_decode(args) -> int:
    from tdxfs.model import abi

    data = _read_input(args.file)
    if len(data) != abi.TDREPORT_SIZE:
        raise TdxfsError(f"{args.file}: a TDREPORT is {abi.TDREPORT_SIZE} bytes, got {len(data)}")
    return _print_report(data, args.json)


def _print_report(data: bytes, as_json: bool) -> int:
    from tdxfs.model import abi

    fields = abi.as_json(data)
    if as_json:
        json.dump(fields, sys.stdout, indent=2)
        print()
        return 0
    width = max(map(len, fields))
    for name, value in fields.items():
        field = abi.TDREPORT_FIELDS[name]
        shown = f"{value:#x}" if field.integer else value
        print(f"{name:<{width}}  @{field.offset:<4} {shown}")
    return 0


def cmd_report_get(args) -> int:
    import os

    from tdxfs.client import files, ioctl

    reportdata = reportdata_arg(args.reportdata) if args.reportdata else os.urandom(64)
    if args.via == "ioctl":
        device = args.device or (os.path.join(args.mount, "tdx_guest") if args.mount else "/dev/tdx_guest")
        call = lambda: ioctl.get_report0(device, reportdata)  # noqa: E731
    else:
        if not args.mount:
            raise TdxfsError(f"--via {args.via} needs --mount DIR (a tdxfs mount)")
        fn = files.shared_pair if args.via == "files" else files.transaction
        call = lambda: fn(args.mount, reportdata)  # noqa: E731
    try:
        report = call()
    except OSError as exc:
        raise TdxfsError(f"report via {args.via}: {exc.strerror or exc}") from None
    if args.output:
        with open(args.output, "wb") as f:
            f.write(report)
        return 0
    return _print_report(report, args.json)


def cmd_quote_get(args) -> int:
    import os

    from tdxfs.client import configfs

    if args.reportdata:
        reportdata = reportdata_arg(args.reportdata)
    else:  # --nonce, and the default: a fresh random nonce, printed so it can be checked
        reportdata = os.urandom(64)
        print(f"nonce {reportdata.hex()}", file=sys.stderr)
    report_dir = os.path.join(args.mount, "tsm", "report") if args.mount else configfs.DEFAULT_REPORT_DIR
    try:
        quote = configfs.get_quote(report_dir, reportdata)
    except OSError as exc:
        raise TdxfsError(f"quote via {report_dir}: {exc.strerror or exc}") from None
    if args.output:
        with open(args.output, "wb") as f:
            f.write(quote)
        print(f"wrote {len(quote)}-byte quote to {args.output}", file=sys.stderr)
        return 0
    if sys.stdout.isatty():
        raise TdxfsError("a quote is binary: use -o FILE or redirect stdout")
    sys.stdout.buffer.write(quote)
    return 0


def cmd_pki_export(args) -> int:
    import os

    from tdxfs.model import collateral

    quote = None
    if args.state:
        if args.profile:
            raise TdxfsError("--profile is for the in-memory platform; a --state DIR keeps its own")
        from tdxfs.model.state import read_pki

        pki = read_pki(args.state)
    else:
        from tdxfs.model.machine import in_memory_td
        from tdxfs.model.profile import default_profile, load_profile

        td = in_memory_td(load_profile(args.profile) if args.profile else default_profile())
        pki = td.qe.pki
        quote = td.quote(bytes(64))
        print("tdxfs: no --state: this is a fresh in-memory platform that no mount serves; its root\n"
              "verifies only quotes made in this process, such as the sample quote.bin written\n"
              "with it. For a mount's quotes use: tdxfs pki export DIR --state STATE", file=sys.stderr)
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
        for name, data in files.items():
            with open(os.path.join(args.dir, name), "wb") as f:
                f.write(data)
    except OSError as exc:
        raise TdxfsError(f"{args.dir}: {exc.strerror or exc}") from None
    print(f"SIMULATED PKI (not Intel's): root SHA-256 {pki.fingerprint()}")
    print(f"wrote {', '.join(files)} to {args.dir}")
    return 0


def _read_file(path: str, what: str) -> bytes:
    try:
        return _read_input(path)
    except OSError as exc:
        raise TdxfsError(f"{what} {path}: {exc.strerror or exc}") from None


def cmd_quote_decode(args) -> int:
    from tdxfs.model import quote as q

    data = _read_file(args.file, "quote")
    try:
        fields = q.as_json(data)
    except ValueError as exc:
        raise TdxfsError(f"{args.file}: {exc}") from None
    if args.json:
        json.dump(fields, sys.stdout, indent=2)
        print()
        return 0
    width = max(map(len, fields))
    for name, value in fields.items():
        field = q.QUOTE_FIELDS.get(name)
        where = f"@{field.offset:<4}" if field else "     "
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
    if not args.collateral:
        raise TdxfsError("--collateral FILE is needed (tdxfs pki export DIR writes DIR/collateral.json)")
    collateral_json = _read_file(args.collateral, "collateral").decode("utf-8", "replace")
    root = verify.root_der(_read_file(args.root, "root certificate")) if args.root else None
    try:
        verdict = verify.verify(quote, collateral_json, root, verify.parse_time(args.now))
    except verify.Rejected as exc:
        print(f"REJECTED: {exc}")
        return 1
    if args.json:
        json.dump(verdict.raw, sys.stdout, indent=2)
        print()
        return 0
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
        s.clients = tuple(int(c) for c in args.clients.split(","))
    if args.no_strace:
        s.strace = False
    methods = args.methods.split(",") if args.methods else None
    return run(args.output, args.mount, s, methods)


def cmd_stress(args) -> int:
    from tdxfs.stress.run import Options, run

    own = [name for name in ("profile", "reset", "o", "log", "threads") if getattr(args, name)]
    if args.mount and own:
        flag = "-o" if own[0] == "o" else f"--{own[0]}"
        raise TdxfsError(f"--mount stresses a running mount; {flag} is for tdxfs stress's own mount")
    return run(Options(clients=args.clients, seconds=args.seconds, mount=args.mount, state=args.state,
                       profile=args.profile, reset=args.reset, fuse_options=args.o or [], log=args.log,
                       threads=args.threads, json_path=args.json,
                       command=" ".join(["tdxfs", *sys.argv[1:]]) if sys.argv[1:] else "tdxfs stress"))


def cmd_profile_show(args) -> int:
    from tdxfs.model.profile import default_profile, load_profile

    profile = load_profile(args.profile) if args.profile else default_profile()
    sys.stdout.write(profile.as_toml())
    return 0


def cmd_extend(args) -> int:
    from tdxfs.client import eventlog as client
    from tdxfs.model.eventlog import RUNTIME_EVENT_TYPE, parse_event_type

    mount = client.mount_dir(args.mount)
    event_type = parse_event_type(args.type) if args.type else RUNTIME_EVENT_TYPE
    if args.digest is not None:
        record = client.record_for(args.rtmr, event_type, digest_hex=args.digest)
    else:
        data = _read_file(args.data, "--data") if args.data is not None else args.text.encode("utf-8")
        record = client.record_for(args.rtmr, event_type, data=data)
    client.write_record(mount, record)
    print(f"rtmr{record.rtmr} extended with {record.digest.hex()}")
    return 0


def cmd_eventlog_replay(args) -> int:
    import os

    from tdxfs.client import eventlog as client

    if args.ccel:
        log_path = args.ccel
    elif args.mount:
        log_path = os.path.join(args.mount, "acpi", "data", "CCEL")
    else:
        log_path = client.DEFAULT_CCEL_DATA
    reported = None
    if args.report:
        reported = client.report_rtmrs(client.read_file(args.report, "report"), args.report)
    elif args.mount:
        path = os.path.join(args.mount, "tdreport")
        reported = client.report_rtmrs(client.read_file(path, "report"), path)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdxfs", description="A software TDX guest attestation interface as files.")
    sub = parser.add_subparsers(dest="command", required=True)

    def mount_options(p, log_help):
        p.add_argument("--state", metavar="DIR", help="keep the platform secret and RTMRs in DIR (durable)")
        p.add_argument("--profile", metavar="FILE", help="TOML profile overriding the embedded default TD")
        p.add_argument("--reset", action="store_true", help="start a fresh TD in --state DIR on purpose")
        p.add_argument("-o", action="append", metavar="OPTS", help="FUSE options: allow_other, uid=, gid=, umask=, ro")
        p.add_argument("--log", metavar="FILE", help=log_help)
        p.add_argument("--threads", action="store_true",
                       help="serve with libfuse's thread pool (default: single-threaded, faster per request)")

    p = sub.add_parser("mount", help="mount a simulated TD's attestation files")
    p.add_argument("mountpoint")
    mount_options(p, "log file (daemon default /var/log/tdxfs.log; -f: stderr)")
    p.add_argument("-f", dest="foreground", action="store_true", help="stay in the foreground, log to stderr")
    p.add_argument("-d", dest="debug", action="store_true", help="FUSE debug output (implies -f)")
    p.set_defaults(func=cmd_mount)

    for name in ("run", "shell"):
        is_shell = name == "shell"
        p = sub.add_parser(name, help="a shell ($SHELL or /bin/sh) where a TDX guest's paths are tdxfs's" if is_shell
                           else "run COMMAND where /dev/tdx_guest, /sys/kernel/config/tsm/report, ... are tdxfs's",
                           description="In a private mount namespace: /dev/tdx_guest, /sys/kernel/config/tsm/report, "
                           "/sys/devices/virtual/misc/tdx_guest/measurements (and /sys/class/misc/tdx_guest), "
                           "/sys/firmware/acpi/tables/CCEL and .../data/CCEL served by tdxfs; the host sees nothing. "
                           "Exit status: COMMAND's (128+N for signal N); 125 when tdxfs run itself refuses; "
                           "126/127 when COMMAND cannot be run.")
        mount_options(p, "log file of the mount's daemon (default /var/log/tdxfs.log)")
        p.add_argument("--mount", metavar="DIR", help="use this running tdxfs mount instead of starting one")
        p.add_argument("-v", "--verbose", action="store_true", help="say what is placed where, on stderr")
        if is_shell:
            p.set_defaults(func=cmd_run, shell=True, command=[])
        else:
            p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
            p.set_defaults(func=cmd_run, shell=False)

    p = sub.add_parser("umount", help="unmount (also a dead mount left by a killed daemon)")
    p.add_argument("mountpoint")
    p.add_argument("--lazy", "-z", action="store_true", help="detach now even if busy")
    p.set_defaults(func=cmd_umount)

    report = sub.add_parser("report", help="TDREPORT tools").add_subparsers(dest="report_command", required=True)
    p = report.add_parser("decode", help="print every field of a TDREPORT by name")
    p.add_argument("file", nargs="?", default="-", help="a 1024-byte TDREPORT file, or - for stdin")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report_decode)
    p = report.add_parser("get", help="get a TDREPORT through ioctl, the shared files, or a one-fd transaction")
    p.add_argument("--reportdata", metavar="HEX", help="128 hex chars (default: a random nonce)")
    p.add_argument("--via", choices=("ioctl", "files", "transaction"), default="ioctl")
    p.add_argument("--mount", metavar="DIR", help="a tdxfs mount (for --via files/transaction; ioctl uses DIR/tdx_guest)")
    p.add_argument("--device", metavar="PATH", help="ioctl node (default /dev/tdx_guest, or DIR/tdx_guest with --mount)")
    p.add_argument("-o", "--output", metavar="FILE", help="save the raw 1024 bytes instead of printing fields")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report_get)

    quote = sub.add_parser("quote", help="TDX quotes").add_subparsers(dest="quote_command", required=True)
    p = quote.add_parser("get", help="get a quote through a configfs-tsm report instance")
    nonce = p.add_mutually_exclusive_group()
    nonce.add_argument("--reportdata", metavar="HEX", help="128 hex chars")
    nonce.add_argument("--nonce", action="store_true", help="a random 64-byte nonce, printed on stderr (the default)")
    p.add_argument("--mount", metavar="DIR", help="a tdxfs mount (default: /sys/kernel/config/tsm/report)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the quote here (default: stdout, not a terminal)")
    p.set_defaults(func=cmd_quote_get)
    p = quote.add_parser("decode", help="print every field of a v4 TD quote by name")
    p.add_argument("file", nargs="?", default="-", help="a quote file, or - for stdin")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quote_decode)
    p = quote.add_parser("verify", help="verify a quote with dcap-qvl (exit 0 when accepted, whatever its TCB status)")
    p.add_argument("file", nargs="?", default="-", help="a quote file, or - for stdin")
    p.add_argument("--collateral", metavar="FILE", help="collateral bundle JSON (tdxfs pki export writes one)")
    p.add_argument("--root", metavar="FILE", help="root CA certificate to trust, PEM or DER "
                   "(default: Intel's real root, which no tdxfs quote chains to)")
    p.add_argument("--now", metavar="TIME", help="verify as of TIME: epoch seconds or ISO 8601 (default: now)")
    p.add_argument("--json", action="store_true", help="print dcap-qvl's verified report as JSON")
    p.set_defaults(func=cmd_quote_verify)

    pki = sub.add_parser("pki", help="the simulated platform PKI").add_subparsers(dest="pki_command", required=True)
    p = pki.add_parser("export", help="write the SIMULATED root certificate and collateral for relying parties")
    p.add_argument("dir", help="output directory")
    p.add_argument("--state", metavar="DIR", help="the state directory of the mount whose quotes will be verified "
                   "(default: a fresh in-memory platform, with a sample quote.bin)")
    p.add_argument("--profile", metavar="FILE", help="TD profile of the in-memory platform's sample quote")
    p.add_argument("--revoke-pck", action="store_true", help="issue a PCK CRL that revokes this platform's PCK")
    p.set_defaults(func=cmd_pki_export)

    p = sub.add_parser("bench", help="measure the ioctl and the file designs side by side")
    p.add_argument("--quick", action="store_true", help="a smoke run (under 30 s on 2 cores)")
    p.add_argument("--output", metavar="DIR", default="bench-out", help="where bench.json/.png/.svg go")
    p.add_argument("--mount", metavar="DIR", help="measure this tdxfs mount (default: mount our own)")
    p.add_argument("--methods", metavar="A,B", help="a subset of the methods")
    p.add_argument("--rounds", type=int, help="interleaved latency rounds")
    p.add_argument("--batch", type=int, help="operations per method per round")
    p.add_argument("--seconds", type=float, help="duration of each scaling point")
    p.add_argument("--clients", metavar="1,2,4,8", help="client process counts for scaling")
    p.add_argument("--no-strace", action="store_true", help="use the methods' own syscall counts")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("stress", help="N clients mix every operation on one mount, then the invariants are checked "
                       "(exit 1 when one fails)",
                       description="N client processes mix reports (ioctl, one-fd transaction, shell pattern), "
                       "extends (rtmrN, measurements/, ioctl, eventlog), configfs quotes and event-log reads for S "
                       "seconds, then check the invariants and print them as a table. Without --mount it mounts its "
                       "own TD (a temporary --state unless given) in a daemon process and always unmounts it. With "
                       "--mount, --state DIR names that mount's state directory, whose PKI verifies the quotes "
                       "(without it they are not verified). Exit 0 when every invariant holds, 1 otherwise.")
    p.add_argument("--clients", type=int, default=4, metavar="N", help="client processes (default 4)")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S", help="duration (default 10)")
    p.add_argument("--mount", metavar="DIR", help="stress this running tdxfs mount (default: mount our own)")
    p.add_argument("--json", metavar="FILE", help="write the figures and the invariants as JSON")
    mount_options(p, "log file of its own mount's daemon (default: a temporary file)")
    p.set_defaults(func=cmd_stress)

    profile = sub.add_parser("profile", help="TD profile tools").add_subparsers(dest="profile_command", required=True)
    p = profile.add_parser("show", help="print the effective profile as TOML")
    p.add_argument("--profile", metavar="FILE")
    p.set_defaults(func=cmd_profile_show)

    p = sub.add_parser("extend", help="extend an RTMR and log the event (through MOUNT/eventlog)")
    p.add_argument("--rtmr", type=int, choices=range(4), required=True, metavar="N", help="RTMR index 0..3")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--digest", metavar="HEX", help="extend this SHA-384 digest (96 hex digits), no event data")
    what.add_argument("--data", metavar="FILE", help="extend SHA-384 of FILE (- for stdin), logged with its contents")
    what.add_argument("--text", metavar="STRING", help="extend SHA-384 of STRING (UTF-8), logged with it")
    p.add_argument("--type", metavar="T", help="TCG event type: a name (EV_IPL, EV_EVENT_TAG) or a number "
                   "(default EV_IPL)")
    p.add_argument("--mount", metavar="DIR", help="the tdxfs mount (default: $TDXFS_MOUNT, which tdxfs run sets)")
    p.set_defaults(func=cmd_extend)

    eventlog = sub.add_parser("eventlog", help="event log tools").add_subparsers(dest="eventlog_command",
                                                                               required=True)
    p = eventlog.add_parser("replay", help="replay a CCEL event log, print RTMR0-3, compare with a report "
                            "(exit 1 on a mismatch)")
    p.add_argument("--ccel", metavar="FILE", help="a CCEL log area (default: MOUNT/acpi/data/CCEL with --mount, "
                   "else /sys/firmware/acpi/tables/data/CCEL)")
    p.add_argument("--mount", metavar="DIR", help="a tdxfs mount: its log, and a fresh report from DIR/tdreport")
    p.add_argument("--report", metavar="FILE", help="a 1024-byte TDREPORT to compare with")
    p.set_defaults(func=cmd_eventlog_replay)
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
