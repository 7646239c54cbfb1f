"""The invariants of a stress run, as pure functions over what the clients and the final
reads brought back. No mount and no FUSE here: a test feeds them a log with an
acknowledged extend missing, or a report with a foreign nonce, and sees them fail.

The invariants (``evaluate``):

- every client finished and the daemon is alive (and still answers) after the run;
- 0 failed operations (a refusal or an error on any path);
- 0 foreign-nonce results on the race-free paths: ioctl, one-fd transaction, configfs
  quotes (a quote's REPORTDATA must be its inblob). The shell pattern (shared
  ``reportdata`` + ``tdreport``) is racy by design: its foreign nonces are counted apart
  and never fail the run;
- every acknowledged extend is in the log exactly once, in the text view (``eventlog``)
  and in the CCEL view (``acpi/data/CCEL``), in the register it was sent to;
- replaying the CCEL log gives RTMR0-3 of a fresh TDREPORT, and replaying the text log
  gives MRTD and RTMR0-3 of it;
- every sampled quote verifies (dcap-qvl, trusting the mount's exported simulated root),
  and at least ``MIN_VERIFIED`` were sampled when that many were made;
- the daemon's descriptor count is the same after the run as before, and its RSS grew by
  no more than ``RSS_SLACK_KIB`` plus ``RSS_PER_EVENT_KIB`` per event the run added to the
  log (the model keeps the whole event log, and its cached views, in memory by design).
"""

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tdxfs.errors import TdxfsError
from tdxfs.model import abi
from tdxfs.model import quote as q
from tdxfs.model.eventlog import Event, decode_ccel_data, decode_text, replay

REPORTDATA = abi.TDREPORT_FIELDS["reportdata"]
QUOTE_REPORTDATA = q.QUOTE_FIELDS["body.reportdata"]
RTMRS = tuple(f"rtmr{i}" for i in range(abi.RTMR_COUNT))
MIN_VERIFIED = 20
RSS_SLACK_KIB = 8 * 1024  # allocator and first-use slack
RSS_PER_EVENT_KIB = 1  # an event costs the model about 0.65 KiB (itself, its text line, its CCEL record)
SHOWN = 5  # examples kept of each kind of discrepancy


def report_nonce(report: bytes) -> bytes:
    return REPORTDATA.get(report)


def quote_nonce(quote: bytes) -> bytes:
    return QUOTE_REPORTDATA.get(quote)


def report_registers(report: bytes) -> Dict[str, bytes]:
    """MRTD and RTMR0-3 of a TDREPORT, named as ``replay`` names them."""
    regs = {"mrtd": abi.TDREPORT_FIELDS["tdinfo.mrtd"].get(report)}
    regs.update((name, abi.rtmr_field(i).get(report)) for i, name in enumerate(RTMRS))
    return regs


@dataclass
class LogCheck:
    """Acknowledged extends against one view of the log."""

    view: str
    acknowledged: int
    once: int
    missing: int
    duplicated: int
    examples: List[str] = field(default_factory=list)
    error: Optional[str] = None  # the view did not decode

    @property
    def ok(self) -> bool:
        return self.error is None and self.once == self.acknowledged


def check_log(view: str, acknowledged: Sequence[Tuple[int, bytes]], events: Sequence[Event]) -> LogCheck:
    """Each acknowledged (rtmr, digest) is logged exactly once, for that RTMR."""
    counts = Counter((e.mr, e.digest) for e in events)
    once = missing = duplicated = 0
    examples: List[str] = []
    for rtmr, digest in acknowledged:
        n = counts[rtmr + 1, digest]  # CC MR index: RTMRn is n + 1
        if n == 1:
            once += 1
            continue
        if n == 0:
            missing += 1
        else:
            duplicated += 1
        if len(examples) < SHOWN:
            examples.append(f"rtmr{rtmr} {digest.hex()[:16]}… logged {n} times")
    return LogCheck(view, len(acknowledged), once, missing, duplicated, examples)


def decode_view(view: str, data: bytes) -> Tuple[Optional[List[Event]], Optional[str]]:
    try:
        return (decode_text(data) if view == "text" else decode_ccel_data(data)), None
    except TdxfsError as exc:
        return None, f"{view} log does not decode: {exc.reason}"


def replay_mismatches(events: Sequence[Event], report: bytes, names: Iterable[str]) -> List[str]:
    """The registers among ``names`` whose replay from zero differs from the report's."""
    replayed = replay(events)
    reported = report_registers(report)
    return [name for name in names if replayed[name] != reported[name]]


@dataclass
class Tally:
    """What clients did, merged: per operation kind."""

    ops: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    foreign: Counter = field(default_factory=Counter)
    errors: List[str] = field(default_factory=list)

    def merge(self, other: Dict[str, object]) -> None:
        self.ops.update(other.get("ops", {}))
        self.failed.update(other.get("failed", {}))
        self.foreign.update(other.get("foreign", {}))
        room = max(SHOWN - len(self.errors), 0)
        self.errors.extend(other.get("errors", [])[:room])


@dataclass
class QuoteCheck:
    made: int
    sampled: int
    verified: int
    rejected: List[str] = field(default_factory=list)  # reasons, one per rejected quote
    foreign: int = 0  # sampled quotes whose REPORTDATA is not their inblob
    statuses: Dict[str, int] = field(default_factory=dict)
    skipped: Optional[str] = None  # why nothing was verified (no PKI)


def check_quotes(samples: Sequence[Tuple[bytes, bytes]], made: int, verify_one) -> QuoteCheck:
    """``verify_one(quote)`` returns a TCB status or raises with the verifier's reason."""
    out = QuoteCheck(made=made, sampled=len(samples), verified=0)
    for inblob, quote in samples:
        if quote_nonce(quote) != inblob:
            out.foreign += 1
        try:
            status = verify_one(quote)
        except Exception as exc:  # the verifier's refusal, whatever its class
            out.rejected.append(str(exc) or type(exc).__name__)
            continue
        out.verified += 1
        out.statuses[status] = out.statuses.get(status, 0) + 1
    return out


@dataclass
class Evidence:
    """Everything a run brings back for the checks."""

    clients: int
    clients_finished: int
    tally: Tally
    acknowledged: List[Tuple[int, bytes]]
    daemon_pid: Optional[int]
    daemon_alive: bool
    final_report: bytes  # a fresh TDREPORT taken after the clients ended
    final_nonce: bytes  # the REPORTDATA it was asked with
    log_text: bytes  # MOUNT/eventlog, read after the clients ended
    log_ccel: bytes  # MOUNT/acpi/data/CCEL, the same
    events_before: int  # text-log events when the clients started
    quotes: QuoteCheck
    race_free: Sequence[str]  # operation kinds whose nonce must never be foreign
    racy: Sequence[str]  # report kinds racy by design (the shell pattern): counted, never a failure
    fds: Tuple[Optional[int], Optional[int]] = (None, None)  # before, after
    rss_kib: Tuple[Optional[int], Optional[int]] = (None, None)
    log_tracebacks: Optional[int] = None  # in the daemon's log (own mount only)


@dataclass
class Invariant:
    name: str
    value: str
    ok: Optional[bool]  # None: not checked, or informational

    @property
    def verdict(self) -> str:
        return {True: "ok", False: "FAIL", None: "-"}[self.ok]


@dataclass
class Outcome:
    invariants: List[Invariant]
    figures: Dict[str, object]

    @property
    def ok(self) -> bool:
        return all(inv.ok is not False for inv in self.invariants)


def evaluate(ev: Evidence) -> Outcome:
    rows: List[Invariant] = []
    figures: Dict[str, object] = {}

    def row(name: str, value: str, ok: Optional[bool]) -> None:
        rows.append(Invariant(name, value, ok))

    row("clients finished", f"{ev.clients_finished}/{ev.clients}", ev.clients_finished == ev.clients)
    row("daemon alive after the run", f"pid {ev.daemon_pid}" + ("" if ev.daemon_alive else " gone or not answering"),
        ev.daemon_alive)
    failed = sum(ev.tally.failed.values())
    row("failed operations", str(failed) + (f" ({'; '.join(ev.tally.errors[:2])})" if failed else ""), failed == 0)

    foreign = {kind: ev.tally.foreign[kind] for kind in ev.race_free}
    final_foreign = len(ev.final_report) != abi.TDREPORT_SIZE or report_nonce(ev.final_report) != ev.final_nonce
    n_foreign = sum(foreign.values()) + ev.quotes.foreign + final_foreign
    row("foreign-nonce results, race-free paths", f"{n_foreign} of {sum(ev.tally.ops[k] for k in ev.race_free)}",
        n_foreign == 0)
    racy = {kind: ev.tally.foreign[kind] for kind in ev.racy}
    row("foreign-nonce results, shell pattern (racy by design)",
        f"{sum(racy.values())} of {sum(ev.tally.ops[k] for k in ev.racy)}", None)
    figures["foreign_nonce"] = {"race_free": foreign, "quote_samples": ev.quotes.foreign, "racy": racy}

    text_events, text_error = decode_view("text", ev.log_text)
    ccel_events, ccel_error = decode_view("ccel", ev.log_ccel)
    checks = []
    for view, events, error in (("text", text_events, text_error), ("ccel", ccel_events, ccel_error)):
        check = check_log(view, ev.acknowledged, events) if events is not None else \
            LogCheck(view, len(ev.acknowledged), 0, 0, 0, error=error)
        checks.append(check)
    value = f"{min(c.once for c in checks)} of {len(ev.acknowledged)}"
    bad = [c for c in checks if not c.ok]
    if bad:
        value += " (" + "; ".join(c.error or f"{c.view}: {c.missing} missing, {c.duplicated} duplicated"
                                   + (f", e.g. {c.examples[0]}" if c.examples else "") for c in bad) + ")"
    row("acknowledged extends in the log exactly once (text and CCEL)", value, not bad)
    figures["log"] = {"acknowledged": len(ev.acknowledged), "views": [asdict(c) for c in checks],
                      "events_before": ev.events_before,
                      "events_after": len(text_events) if text_events is not None else None}

    report_ok = len(ev.final_report) == abi.TDREPORT_SIZE
    if ccel_events is None or not report_ok:
        row("replay(CCEL) = RTMR0-3 of a fresh TDREPORT", ccel_error or "no report", False)
    else:
        diff = replay_mismatches(ccel_events, ev.final_report, RTMRS)
        row("replay(CCEL) = RTMR0-3 of a fresh TDREPORT", "match" if not diff else f"differs in {', '.join(diff)}",
            not diff)
    if text_events is None or not report_ok:
        row("replay(text log) = MRTD, RTMR0-3 of it", text_error or "no report", False)
    else:
        diff = replay_mismatches(text_events, ev.final_report, ("mrtd", *RTMRS))
        row("replay(text log) = MRTD, RTMR0-3 of it", "match" if not diff else f"differs in {', '.join(diff)}",
            not diff)

    qc = ev.quotes
    if qc.skipped:
        row("quotes verify (dcap-qvl)", f"not checked: {qc.skipped}", None)
    else:
        enough = qc.sampled >= min(MIN_VERIFIED, qc.made)
        value = f"{qc.verified} of {qc.sampled} sampled ({qc.made} made)"
        if qc.statuses:
            value += ", " + ", ".join(f"{s} {n}" for s, n in sorted(qc.statuses.items()))
        if qc.rejected:
            value += f"; rejected: {qc.rejected[0]}"
        if not enough:
            value += f"; fewer than {MIN_VERIFIED} sampled"
        row("quotes verify (dcap-qvl)", value, enough and qc.verified == qc.sampled and qc.made > 0)
    figures["quotes"] = asdict(qc)

    fds_before, fds_after = ev.fds
    if fds_before is None or fds_after is None:
        row("daemon fds before/after", "not readable", None)
    else:
        row("daemon fds before/after", f"{fds_before} / {fds_after}", fds_after == fds_before)
    rss_before, rss_after = ev.rss_kib
    added = (len(text_events) - ev.events_before) if text_events is not None else len(ev.acknowledged)
    bound = RSS_SLACK_KIB + RSS_PER_EVENT_KIB * max(added, 0)
    if rss_before is None or rss_after is None:
        row("daemon RSS before/after", "not readable", None)
    else:
        growth = rss_after - rss_before
        row("daemon RSS before/after", f"{rss_before / 1024:.1f} / {rss_after / 1024:.1f} MiB "
            f"(+{growth / 1024:.1f}, bound {bound / 1024:.1f} for {added} events)", growth <= bound)
    figures["daemon"] = {"pid": ev.daemon_pid, "alive": ev.daemon_alive, "fds_before": fds_before,
                         "fds_after": fds_after, "rss_kib_before": rss_before, "rss_kib_after": rss_after,
                         "rss_bound_kib": bound, "events_added": added}
    if ev.log_tracebacks is not None:
        row("daemon log: no tracebacks", str(ev.log_tracebacks), ev.log_tracebacks == 0)
    return Outcome(rows, figures)
