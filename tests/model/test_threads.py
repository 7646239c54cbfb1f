"""Concurrent use of one TD: every outcome equals some sequential order of the same calls."""

import threading
import time

from tdxfs.model.td import TrustDomain
from tests.model import reference as ref

THREADS = 8
PER_THREAD = 100


def run_threads(target, count=THREADS):
    barrier = threading.Barrier(count)

    def start(k):
        barrier.wait()
        target(k)

    threads = [threading.Thread(target=start, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()


def test_same_data_from_many_threads_equals_as_many_sequential_extends(td):
    """K threads x N extends of the same data leave RTMR3 at N*K sequential extends."""
    data = bytes([0x33]) * 48
    expected = td.rtmr(3)
    for _ in range(THREADS * PER_THREAD):
        expected = ref.extended(expected, data)

    run_threads(lambda k: [td.extend(3, data) for _ in range(PER_THREAD)])
    assert td.rtmr(3) == expected


def test_distinct_data_from_many_threads_forms_one_chain(td):
    """With different data per call, the returned values link into a single sequential chain
    from the starting value to the final RTMR, using every call exactly once (no lost update).
    The TD persists slowly (as with a state directory), which widens any race."""
    persisted = []

    def slow_persist(rtmrs, reportdata):
        time.sleep(0.0002)
        persisted.append(rtmrs[2])

    td = TrustDomain(td.platform, td.profile, persist=slow_persist)
    start = td.rtmr(2)
    results = [[] for _ in range(THREADS)]

    def work(k):
        for n in range(PER_THREAD // 4):
            data = bytes([k, n]) + bytes(46)
            results[k].append((data, td.extend(2, data)))

    run_threads(work)
    by_result = {new: data for thread in results for data, new in thread}
    assert len(by_result) == THREADS * (PER_THREAD // 4)

    # Walk the chain back from the final value: each link must be SHA-384(prev || data).
    remaining = dict(by_result)
    predecessors = {ref.extended(prev, data): prev
                    for prev in [start, *by_result] for data in by_result.values()}
    current = td.rtmr(2)
    while current != start:
        data = remaining.pop(current)
        prev = predecessors[current]
        assert ref.extended(prev, data) == current
        current = prev
    assert remaining == {}
    assert persisted[-1] == td.rtmr(2)  # the last value persisted is the one in memory


def test_reports_taken_during_extends_are_consistent(td):
    """A report taken while others extend verifies and shows an RTMR3 value the chain passed."""
    data = bytes([0x77]) * 48
    chain = [td.rtmr(3)]
    for _ in range(THREADS // 2 * PER_THREAD):
        chain.append(ref.extended(chain[-1], data))
    seen = []

    def work(k):
        if k % 2:
            for _ in range(PER_THREAD):
                td.extend(3, data)
        else:
            for _ in range(PER_THREAD // 2):
                seen.append(td.report())

    run_threads(work)
    assert td.rtmr(3) == chain[-1]
    allowed = set(chain)
    for report in seen:
        assert td.verify_report(report).ok
        assert report[864:912] in allowed


def test_set_reportdata_and_extend_concurrently(td):
    """set_reportdata and extend from different threads do not undo each other."""
    data = bytes([0x11]) * 48

    def work(k):
        for n in range(PER_THREAD):
            if k % 2:
                td.extend(1, data)
            else:
                td.set_reportdata(bytes([k]) * 64)

    before = td.rtmr(1)
    run_threads(work)
    expected = before
    for _ in range(THREADS // 2 * PER_THREAD):
        expected = ref.extended(expected, data)
    assert td.rtmr(1) == expected
    assert td.reportdata in {bytes([k]) * 64 for k in range(0, THREADS, 2)}
