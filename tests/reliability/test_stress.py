"""``tdxfs stress`` (issue 8, section 2): a bounded run holds every invariant, and the
invariant checker fails when it should.

The bounded run is ``tdxfs stress --clients 4 --seconds 5`` as a subprocess with TMPDIR
inside pytest's tmp_path: its own mount lives there, and the finalizer clears any mount
left under it (a failed run), so nothing outlives the test. Nothing asserted depends on
speed: only that every operation ran, and the invariants.

The checker tests need no mount: an in-memory TD makes a real event log, real reports and
real quotes, and each test breaks one thing (an acknowledged extend missing from the log,
logged twice, a foreign nonce, a quote that does not verify, a descriptor leak) and sees
the matching invariant, and the run, fail.
"""

import json
import os
import random
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from tdxfs.model.eventlog import EV_IPL, Event, EventLog
from tdxfs.model.machine import in_memory_td
from tdxfs.model.profile import default_profile
from tdxfs.stress import check, client, ops
from tests.mounting import force_unmount, fstype_at

STRESS_TIMEOUT = 170  # 5 s of load; mounting, warm-up, quote verification and unmounting around it
INVARIANTS = [
    "clients finished",
    "daemon alive after the run",
    "failed operations",
    "foreign-nonce results, race-free paths",
    "foreign-nonce results, shell pattern (racy by design)",
    "acknowledged extends in the log exactly once (text and CCEL)",
    "replay(CCEL) = RTMR0-3 of a fresh TDREPORT",
    "replay(text log) = MRTD, RTMR0-3 of it",
    "quotes verify (dcap-qvl)",
    "daemon fds before/after",
    "daemon RSS before/after",
    "daemon log: no tracebacks",
]
INFORMATIONAL = {"foreign-nonce results, shell pattern (racy by design)"}


def _clear_mounts(tmp: str) -> None:
    for root, dirs, _ in os.walk(tmp):
        for d in dirs:
            path = os.path.join(root, d)
            if fstype_at(path) is not None:
                force_unmount(path)
        dirs[:] = [d for d in dirs if fstype_at(os.path.join(root, d)) is None]


@pytest.fixture(scope="module")
def bounded_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("stress")
    tmp, out = base / "tmp", base / "stress.json"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    try:
        done = subprocess.run([sys.executable, "-m", "tdxfs", "stress", "--clients", "4", "--seconds", "5",
                               "--json", str(out)], capture_output=True, text=True, timeout=STRESS_TIMEOUT, env=env)
    finally:  # whatever happened, no mount of the run's own is left behind
        _clear_mounts(str(tmp))
    leftovers = os.listdir(tmp)
    with open(out) as f:
        figures = json.load(f)
    return {"done": done, "json": figures, "leftovers": leftovers}


def test_bounded_run_exits_0_and_cleans_up(bounded_run):
    done = bounded_run["done"]
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "every invariant holds" in done.stdout
    assert bounded_run["leftovers"] == [], "the run left its temporary mount directory behind"


def test_every_operation_ran_in_every_kind(bounded_run):
    figures = bounded_run["json"]
    assert figures["clients"] == 4 and figures["own_mount"] is True
    assert set(figures["ops"]) == {k.name for k in ops.KINDS}
    for name, row in figures["ops"].items():
        assert row["ops"] > 0, name
        assert row["failed"] == 0, (name, figures["errors"])
        assert row["ops_per_s"] > 0, name
    assert figures["total"]["ops"] == sum(r["ops"] for r in figures["ops"].values())


def test_the_table_shows_every_invariant_holding(bounded_run):
    lines = bounded_run["done"].stdout.splitlines()
    for name in INVARIANTS:
        line = next((l for l in lines if l.startswith(name + " ")), None)
        assert line is not None, f"no row {name!r} in:\n{bounded_run['done'].stdout}"
        verdict = line[len(name):].split()[0]
        assert verdict == ("-" if name in INFORMATIONAL else "ok"), line
    # operations and progress: the table on stdout, the progress on stderr
    assert lines[0].split()[:3] == ["operation", "ops", "ops/s"]
    assert "FUSE requests" in bounded_run["done"].stderr


def test_the_figures_hold_the_invariants(bounded_run):
    f = bounded_run["json"]
    assert f["ok"] is True
    assert [i["name"] for i in f["invariants"]] == INVARIANTS
    assert all(i["ok"] is not False for i in f["invariants"])
    assert all(n == 0 for n in f["foreign_nonce"]["race_free"].values()) and f["foreign_nonce"]["quote_samples"] == 0
    log = f["log"]
    assert log["acknowledged"] > 0
    for view in log["views"]:
        assert (view["once"], view["missing"], view["duplicated"]) == (log["acknowledged"], 0, 0), view
    assert log["events_after"] >= log["events_before"] + log["acknowledged"] - f["warm_up_ops"]
    q = f["quotes"]
    assert q["skipped"] is None and q["rejected"] == []
    assert q["verified"] == q["sampled"] >= min(check.MIN_VERIFIED, q["made"]) and q["made"] > 0
    d = f["daemon"]
    assert d["alive"] and d["fds_before"] == d["fds_after"]
    assert d["rss_kib_after"] - d["rss_kib_before"] <= d["rss_bound_kib"]
    assert f["machine"]["cores"] == os.cpu_count()


# -- the checker, without a mount ------------------------------------------------------------------


@pytest.fixture(scope="module")
def td():
    return in_memory_td(default_profile())


def healthy(td, extends: int = 12, **changes) -> check.Evidence:
    """Evidence as a run that went right brings it back: every extend acknowledged and
    logged, a fresh report with its own nonce, quotes whose REPORTDATA is their inblob."""
    rng = random.Random()  # unseeded: digests unique across the tests sharing the TD
    before = len(td.event_log)
    acked = []
    for _ in range(extends):
        rtmr, digest = rng.randrange(4), rng.randbytes(48)
        td.extend(rtmr, digest)
        acked.append((rtmr, digest))
    nonce = rng.randbytes(64)
    tally = check.Tally()
    tally.ops.update({"report-ioctl": 3, "report-transaction": 3, "quote-configfs": 2, "report-shell": 3})
    tally.foreign.update({"report-shell": 2})  # racy by design: never a failure
    samples = [(n, td.quote(n)) for n in (rng.randbytes(64), rng.randbytes(64))]
    fields = dict(
        clients=2, clients_finished=2, tally=tally, acknowledged=acked, daemon_pid=1, daemon_alive=True,
        final_report=td.report(nonce), final_nonce=nonce, log_text=td.event_log.text(),
        log_ccel=td.event_log.ccel_data(), events_before=before,
        quotes=check.check_quotes(samples, made=2, verify_one=lambda quote: "UpToDate"),
        race_free=ops.RACE_FREE, racy=ops.RACY, fds=(10, 10), rss_kib=(30000, 30100), log_tracebacks=0)
    fields.update(changes)
    return check.Evidence(**fields)


def verdicts(ev: check.Evidence):
    out = check.evaluate(ev)
    return out, {i.name: i.ok for i in out.invariants}


def test_a_healthy_run_passes(td):
    out, v = verdicts(healthy(td))
    assert out.ok, [(i.name, i.value) for i in out.invariants if i.ok is False]
    assert [i.name for i in out.invariants] == INVARIANTS
    assert v["foreign-nonce results, shell pattern (racy by design)"] is None


def test_an_acknowledged_extend_missing_from_the_log_fails(td):
    ev = healthy(td)
    ev.acknowledged.append((3, bytes(range(48))))  # acknowledged to a client, never logged
    out, v = verdicts(ev)
    assert not out.ok
    assert v["acknowledged extends in the log exactly once (text and CCEL)"] is False
    views = out.figures["log"]["views"]
    assert [(c["view"], c["missing"]) for c in views] == [("text", 1), ("ccel", 1)]


def test_a_log_that_lost_an_event_fails_both_ways(td):
    ev = healthy(td)
    lost = ev.acknowledged[5]
    events, _ = check.decode_view("text", ev.log_text)
    shorter = EventLog(e for e in events if (e.mr, e.digest) != (lost[0] + 1, lost[1]))
    ev.log_text, ev.log_ccel = shorter.text(), shorter.ccel_data()
    out, v = verdicts(ev)
    assert v["acknowledged extends in the log exactly once (text and CCEL)"] is False
    assert v["replay(CCEL) = RTMR0-3 of a fresh TDREPORT"] is False
    assert v["replay(text log) = MRTD, RTMR0-3 of it"] is False
    assert not out.ok


def test_an_extend_logged_twice_fails(td):
    ev = healthy(td)
    rtmr, digest = ev.acknowledged[0]
    events, _ = check.decode_view("text", ev.log_text)
    doubled = EventLog([*events, Event(rtmr + 1, EV_IPL, digest)])
    ev.log_text, ev.log_ccel = doubled.text(), doubled.ccel_data()
    out, v = verdicts(ev)
    assert v["acknowledged extends in the log exactly once (text and CCEL)"] is False
    assert all(c["duplicated"] == 1 for c in out.figures["log"]["views"])


def test_a_digest_logged_for_another_rtmr_is_missing(td):
    ev = healthy(td)
    rtmr, digest = ev.acknowledged[-1]
    ev.acknowledged[-1] = ((rtmr + 1) % 4, digest)
    assert verdicts(ev)[1]["acknowledged extends in the log exactly once (text and CCEL)"] is False


def test_a_malformed_log_fails(td):
    ev = healthy(td)
    ev.log_ccel = ev.log_ccel[:100]
    out, v = verdicts(ev)
    assert v["replay(CCEL) = RTMR0-3 of a fresh TDREPORT"] is False
    assert "does not decode" in out.figures["log"]["views"][1]["error"]


@pytest.mark.parametrize("kind", ops.RACE_FREE)
def test_a_foreign_nonce_on_a_race_free_path_fails(td, kind):
    ev = healthy(td)
    ev.tally.foreign[kind] += 1
    out, v = verdicts(ev)
    assert v["foreign-nonce results, race-free paths"] is False and not out.ok


def test_a_final_report_with_a_foreign_nonce_fails(td):
    ev = healthy(td)
    ev.final_report = td.report(bytes(64))  # someone else's REPORTDATA
    assert verdicts(ev)[1]["foreign-nonce results, race-free paths"] is False


def test_a_quote_whose_reportdata_is_not_its_inblob_fails(td):
    quote = td.quote(b"\x01" * 64)
    qc = check.check_quotes([(b"\x02" * 64, quote)], made=1, verify_one=lambda q: "UpToDate")
    assert qc.foreign == 1
    assert verdicts(healthy(td, quotes=qc))[1]["foreign-nonce results, race-free paths"] is False


def test_a_quote_the_verifier_rejects_fails(td):
    def verify_one(quote):
        raise ValueError("signature mismatch")

    qc = check.check_quotes([(n, td.quote(n)) for n in (b"\x03" * 64,)], made=1, verify_one=verify_one)
    out, v = verdicts(healthy(td, quotes=qc))
    assert v["quotes verify (dcap-qvl)"] is False and "signature mismatch" in qc.rejected[0]


def test_too_few_quotes_sampled_fails(td):
    samples = [(n, td.quote(n)) for n in (b"\x04" * 64, b"\x05" * 64)]
    qc = check.check_quotes(samples, made=500, verify_one=lambda q: "UpToDate")
    assert verdicts(healthy(td, quotes=qc))[1]["quotes verify (dcap-qvl)"] is False


def test_dead_daemon_lost_clients_failed_ops_and_drift_fail(td):
    assert verdicts(healthy(td, daemon_alive=False))[1]["daemon alive after the run"] is False
    assert verdicts(healthy(td, clients_finished=1))[1]["clients finished"] is False
    ev = healthy(td)
    ev.tally.failed["extend-ioctl"] += 1
    assert verdicts(ev)[1]["failed operations"] is False
    assert verdicts(healthy(td, fds=(10, 11)))[1]["daemon fds before/after"] is False
    big = check.RSS_SLACK_KIB + 100 * check.RSS_PER_EVENT_KIB
    assert verdicts(healthy(td, rss_kib=(30000, 30000 + big)))[1]["daemon RSS before/after"] is False
    assert verdicts(healthy(td, log_tracebacks=1))[1]["daemon log: no tracebacks"] is False


# -- the client's own checks ---------------------------------------------------------------------


def test_client_tally_counts_foreign_nonces_and_stale_log_reads(td):
    tally = client.Tally(random.Random(1), quote_sample=2)
    kinds = ops.BY_NAME
    tally.record(kinds["report-ioctl"], ops.Report(b"\x01" * 64, td.report(b"\x01" * 64)))
    tally.record(kinds["report-ioctl"], ops.Report(b"\x01" * 64, td.report(b"\x02" * 64)))
    tally.record(kinds["report-transaction"], ops.Report(b"\x01" * 64, b"short"))
    assert (tally.ops["report-ioctl"], tally.foreign["report-ioctl"]) == (2, 1)
    assert tally.failed["report-transaction"] == 1
    digest = bytes(range(48))
    tally.record(kinds["extend-tsm-mr"], ops.Extend(3, digest))
    tally.record(kinds["read-ccel"], ops.LogRead([Event(4, EV_IPL, digest)]))
    assert tally.failed["read-ccel"] == 0
    tally.record(kinds["read-ccel"], ops.LogRead([Event(3, EV_IPL, digest)]))  # RTMR2, not RTMR3
    assert tally.failed["read-ccel"] == 1 and "lacks 1" in tally.errors[-1]
    for i in range(10):
        n = bytes([i]) * 64
        tally.record(kinds["quote-configfs"], ops.Quote(n, td.quote(n)))
    assert tally.quotes_made == 10 and len(tally.quotes) == 2
    assert Counter(check.quote_nonce(q) == n for n, q in tally.quotes) == Counter({True: 2})


def test_stress_clients_import_no_fuse_binding():
    child = textwrap.dedent("""
        import importlib, sys
        BLOCKED = ("fuse", "mfusepy", "fusepy", "refuse", "llfuse", "pyfuse3")

        class NoFuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"FUSE binding {name} is blocked by the test")
                return None

        sys.meta_path.insert(0, NoFuse())
        for name in ("tdxfs.stress.client", "tdxfs.stress.ops", "tdxfs.stress.check", "tdxfs.stress.run"):
            importlib.import_module(name)
        print(" ".join(sorted(m for m in sys.modules if "fuse" in m.lower())) or "none")
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
