"""Risk state: compact enough for a million payers, and the same after a snapshot.

The payer book and the spending pack each key's integers in one array, and the
held feature rows live in chunks (`centflow.risk.packed`, `centflow.risk.held`).
These tests hold the layouts to what they replace: the same answers, a restore
that changes nothing, and a bound on the bytes a payer costs."""

from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from centflow.risk.features import PAYER_FEATURES, PayerBook
from centflow.risk.held import HeldPayments
from centflow.risk.tiers import DAY_US, Spending
from tests.factories import SECOND_US

START_US = 1_700_000_000 * SECOND_US

# one payment: (µs since the previous one, payer, amount, payee, device, ip, country)
_payments = st.lists(
    st.tuples(
        st.sampled_from([1, SECOND_US, 45 * SECOND_US, 20 * 60 * SECOND_US, 2 * DAY_US]),
        st.integers(0, 3),
        st.integers(1, 10**10),
        st.integers(0, 5),
        st.sampled_from([None, "d1", "d2", "d3"]),
        st.sampled_from([None, "10.0.0.1", "10.0.0.2"]),
        st.sampled_from(["DE", "US"]),
    ),
    max_size=120,
)


def _replay(book: PayerBook, payments, restore_at: int | None = None) -> list[list[float]]:
    """Each payment's features as of its second, then its commit; the book is
    restored from its own snapshot before payment `restore_at`."""
    rows, now_us = [], START_US
    for index, (gap_us, payer, amount, payee, device, ip, country) in enumerate(payments):
        if index == restore_at:
            book = PayerBook.restore(book.state())
        now_us += gap_us
        as_of = now_us - now_us % SECOND_US
        args = (amount, f"m{payee}", device, ip, country)
        rows.append(book.features(f"p{payer}", as_of, *args, False))
        book.commit(f"p{payer}", now_us, *args)
    return rows


@settings(max_examples=60, deadline=None)
@given(_payments, st.integers(0, 120))
def test_a_payer_book_restored_from_its_snapshot_answers_as_if_never_stopped(payments, at):
    assert _replay(PayerBook(), payments, restore_at=at) == _replay(PayerBook(), payments)


def test_a_busy_payer_keeps_its_bounds_and_its_firsts():
    book = PayerBook()
    for second in range(600):  # 600 payments, each to a new payee, device and ip
        now_us = START_US + second * SECOND_US
        book.commit("p1", now_us, 1_000_000, f"m{second}", f"d{second}", f"ip{second}", "DE")
    as_of = START_US + 600 * SECOND_US
    row = dict(
        zip(PAYER_FEATURES, book.features("p1", as_of, 1, "m0", "d0", "x", "DE", 0), strict=True)
    )
    assert row["payer_history"] == np.log1p(600)  # every payment counts in the moments
    assert row["payer_payments_1h"] == 256  # the recent payments stop at their bound
    assert row["payer_payments_10m"] == 256
    assert row["new_payee"] == 0  # 64 firsts kept: the book cannot tell new from forgotten
    assert row["payer_payees_10m"] == 256  # distinct payees among the payments kept
    # the first payment filled four firsts, each later one three (payee, device, ip):
    # the 64 were full after 21 payments, each to a new payee
    assert row["payer_new_payees_10m"] == 21


def test_a_payer_seen_once_costs_a_few_hundred_bytes():
    payers = 20_000
    ids = [f"payer-{number}" for number in range(payers)]
    book, spending = PayerBook(), Spending()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for number, payer in enumerate(ids):
            now_us = START_US + number * 1000
            book.commit(payer, now_us, 5_000_000, f"m{number % 50}", f"d{number}", "10.1.1.1", "DE")
            spending.add(payer, now_us, "EUR", 5_000_000)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # only what the risk books allocated: other threads of the test session allocate too
    books = [tracemalloc.Filter(True, "*centflow/risk/*")]
    used = sum(
        stat.size_diff
        for stat in after.filter_traces(books).compare_to(before.filter_traces(books), "filename")
    )
    # lists of int objects and a dict of key strings cost 1.7 KB a payer
    # 0.43 KB run alone, 0.58 inside the suite (likely the interned strings' table, grown by
    # earlier tests, is resized in this loop)
    assert used / payers < 650


def _held(count: int, first_us: int = START_US, approved: bool = True) -> tuple:
    ingest = [first_us + offset * SECOND_US for offset in range(count)]
    ids = [f"e{first_us}-{offset}" for offset in range(count)]
    rows = np.arange(count * 3, dtype=np.float64).reshape(count, 3)
    return ingest, ids, rows, [approved] * count


def _sampled(event_ids, sample: int = 2) -> set[str]:
    return {event_id for event_id in event_ids if zlib.crc32(event_id.encode()) % sample == 1}


def test_held_payments_mature_once_and_go_after_the_keep():
    held = HeldPayments()
    ingest, ids, rows, approved = _held(100)
    held.add(ingest, ids, rows, approved)
    held.add(*_held(100, START_US + 100 * SECOND_US, approved=False))
    assert len(held) == 200
    row = held.take(ids[7])  # labelled: never learned as legitimate
    assert row is not None and row.tolist() == [21.0, 22.0, 23.0]
    assert held.take(ids[7]) is None  # at most once
    age_us, keep_us = 30 * SECOND_US, 120 * SECOND_US
    first = held.mature(START_US + 60 * SECOND_US, age_us, keep_us, sample=2)
    # ingested before 30 s (the label age before 60 s), approved, sampled, not labelled
    expected = _sampled(ids[:30]) - {ids[7]}
    assert {event_id for _, event_id, _ in first} == expected and len(expected) > 5
    assert all(ts == ingest[ids.index(e)] + age_us for ts, e, _ in first)
    assert [r.tolist() for _, e, r in first] == [rows[ids.index(e)].tolist() for _, e, _ in first]
    assert held.mature(START_US + 60 * SECOND_US, age_us, keep_us, sample=2) == []  # once
    late = held.mature(START_US + 1000 * SECOND_US, age_us, keep_us, sample=2)
    # the rest of the approved group; the unapproved group never becomes an example
    assert {event_id for _, event_id, _ in late} == _sampled(ids[30:])
    assert len(held) == 0 and not held.chunks  # everything went after the keep


def test_held_payments_restored_from_a_snapshot_are_the_same():
    held = HeldPayments()
    held.add(*_held(50))
    held.add(*_held(50, START_US + 50 * SECOND_US))
    held.take(f"e{START_US}-3")
    held.mature(START_US + 40 * SECOND_US, 10 * SECOND_US, 1000 * SECOND_US, sample=1)
    restored = HeldPayments.restore(held.state())
    assert restored.by_id == held.by_id
    assert (restored.head, restored.matured, restored.tail) == (held.head, held.matured, held.tail)
    as_of = START_US + 500 * SECOND_US
    first = held.mature(as_of, 10 * SECOND_US, 1000 * SECOND_US, sample=2)
    second = restored.mature(as_of, 10 * SECOND_US, 1000 * SECOND_US, sample=2)
    assert first  # something to compare
    assert [(t, e, r.tolist()) for t, e, r in first] == [(t, e, r.tolist()) for t, e, r in second]


def test_held_payments_beyond_the_bound_go_oldest_first():
    held = HeldPayments()
    held.add(*_held(10))
    held.add(*_held(10, START_US + 10 * SECOND_US))
    held.release_to(5)
    assert len(held) == 5
    assert sorted(held.by_id.values()) == [15, 16, 17, 18, 19]
    assert held.take(f"e{START_US}-0") is None


def test_held_rows_keep_their_width_when_the_layout_grows():
    held = HeldPayments()
    held.add(*_held(3))
    wider = np.full((2, 5), 7.0)
    held.add([START_US + 3 * SECOND_US] * 2, ["w0", "w1"], wider, [True, True])
    assert held.take("w1").tolist() == [7.0] * 5  # still in the open part
    examples = held.mature(START_US + 100 * SECOND_US, SECOND_US, 1000 * SECOND_US, sample=2)
    widths = {event_id: len(row) for _, event_id, row in examples}
    assert widths == {event_id: 3 for event_id in _sampled(_held(3)[1])} | (
        {"w0": 5} if _sampled(["w0"]) else {}
    )
    assert len(held.chunks) == 2  # a chunk for each width
