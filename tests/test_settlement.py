"""Settlement windows: lateness from the event itself, closes by frontier, same batches in any order."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import example, given, settings
from hypothesis import strategies as st

from centflow.ingest.columns import to_batch
from centflow.ingest.events import Payment
from centflow.limits import AMOUNT_MICROS_MAX, WATERMARK_END_US
from centflow.money.batches import Settled, close_time_us
from centflow.money.netting import net_window
from centflow.money.settlement import SettlementShard, assign_window, assign_windows
from tests.factories import SECOND_US, envelope, payment

WINDOW_US = 10 * SECOND_US
LATENESS_US = 3 * SECOND_US


@given(
    occurred_us=st.integers(0, 10**15),
    delay_us=st.integers(0, 10**12),
    window_us=st.integers(1, 10**11),
    lateness_us=st.integers(0, 10**11),
)
@example(occurred_us=5, delay_us=7, window_us=10, lateness_us=3)  # ingest 12 < 13: on time
@example(occurred_us=5, delay_us=8, window_us=10, lateness_us=3)  # ingest 13: late, next window
def test_assigned_window_is_open_at_ingestion(occurred_us, delay_us, window_us, lateness_us):
    ingest_us = occurred_us + delay_us
    index, late = assign_window(occurred_us, ingest_us, window_us, lateness_us)
    assert ingest_us < close_time_us(index, window_us, lateness_us)
    own = occurred_us // window_us
    if late:
        assert index > own
        assert ingest_us >= close_time_us(own, window_us, lateness_us)
        # the earliest window still open at ingestion time
        assert index == own + 1 or ingest_us >= close_time_us(index - 1, window_us, lateness_us)
    else:
        assert index == own


partition_events = st.lists(
    st.tuples(
        st.sampled_from(["m1", "m2", "m3"]),
        st.sampled_from(["USD", "JPY"]),
        st.integers(0, 40 * SECOND_US),  # event time jitter behind the partition clock
        st.integers(0, 4 * SECOND_US),  # clock advance
        st.integers(1, 10**9),
    ),
    max_size=25,
)


def _partitions(raw: list[list[tuple]]) -> dict[str, list[Payment]]:
    partitions = {}
    serial = 0
    for number, events in enumerate(raw):
        clock_us = 1_000 * SECOND_US
        built = []
        for payee, currency, behind_us, advance_us, amount in events:
            clock_us += advance_us
            built.append(
                payment(
                    f"e{serial}",
                    occurred_us=max(clock_us - behind_us, 0),
                    ingest_us=clock_us,
                    payee_id=payee,
                    currency=currency,
                    amount_micros=amount,
                )
            )
            serial += 1
        partitions[f"p{number}"] = built
    return partitions


def _settle_interleaved(
    partitions: dict[str, list[Payment]], seed: int, chunk: int
) -> dict[str, tuple]:
    """Feed the partitions' events to one shard in a random interleaving; return batches by id."""
    shard = SettlementShard(list(partitions), WINDOW_US, LATENESS_US)
    cursors = {name: 0 for name in partitions}
    rng = random.Random(seed)
    results = []
    live = [name for name in partitions]
    while live:
        name = rng.choice(live)
        start = cursors[name]
        events = [
            payment(
                e.event_id,
                occurred_us=e.occurred_us,
                ingest_us=e.ingest_us,
                payee_id=e.payee_id,
                currency=e.currency,
                amount_micros=e.amount_micros,
            )
            for e in partitions[name][start : start + chunk]
        ]
        cursors[name] = start + len(events)
        ended = cursors[name] >= len(partitions[name])
        watermark = WATERMARK_END_US if ended else events[-1].ingest_us
        results.append(shard.settle([envelope(name, watermark, events)]))
        if ended:
            live.remove(name)
    batches = {}
    for settled in results:
        members = defaultdict(list)
        for row in settled.event_table().to_pylist():
            members[row["batch_id"]].append((row["event_id"], row["late"]))
        for batch in settled.batch_records():
            assert batch.batch_id not in batches, "a batch was emitted twice"
            batches[batch.batch_id] = (batch, tuple(sorted(members[batch.batch_id])))
    assert not shard.open_windows
    return batches


def _events(settled: Settled) -> list[tuple[str, str | None, bool]]:
    """(event_id, batch_id, late) of every event a step emitted."""
    return [
        (row["event_id"], row["batch_id"], row["late"]) for row in settled.event_table().to_pylist()
    ]


def _net(events: list[Payment], carry_in: int = 0) -> tuple[Settled, int]:
    """Close one window holding `events` (one payee and currency); return it and the carry."""
    key = (events[0].payee_id, events[0].currency)
    carry = {key: carry_in} if carry_in else {}
    settled = Settled()
    net_window([to_batch(events)], 0, WINDOW_US, LATENESS_US, carry, settled)
    return settled, carry.get(key, 0)


@settings(max_examples=60, deadline=None)
@given(
    raw=st.lists(partition_events, min_size=1, max_size=4),
    seed_a=st.integers(),
    seed_b=st.integers(),
    chunk_a=st.integers(1, 5),
    chunk_b=st.integers(1, 5),
)
def test_batches_do_not_depend_on_interleaving(raw, seed_a, seed_b, chunk_a, chunk_b):
    partitions = _partitions(raw)
    first = _settle_interleaved(partitions, seed_a, chunk_a)
    second = _settle_interleaved(partitions, seed_b, chunk_b)
    assert first == second
    # every event lands in exactly one batch, and the batch is its own (payee, currency, window)
    events = {event.event_id: event for events in partitions.values() for event in events}
    placed = [event_id for _, members in first.values() for event_id, _ in members]
    assert sorted(placed) == sorted(events)
    for batch, members in first.values():
        for event_id, late in members:
            event = events[event_id]
            index, expected_late = assign_window(
                event.occurred_us, event.ingest_us, WINDOW_US, LATENESS_US
            )
            assert (batch.payee_id, batch.currency, batch.window_start_us) == (
                event.payee_id,
                event.currency,
                index * WINDOW_US,
            )
            assert late == expected_late
        gross = sum(events[event_id].amount_micros for event_id, _ in members)
        assert batch.gross_micros == gross and batch.event_count == len(members)


def test_a_window_closes_only_when_every_partition_has_passed_it():
    shard = SettlementShard(["a", "b"], WINDOW_US, LATENESS_US)
    event = payment("e1", occurred_us=1 * SECOND_US)
    closes_at = close_time_us(0, WINDOW_US, LATENESS_US)
    assert not shard.settle([envelope("a", closes_at + 10 * SECOND_US, [event])]).batches
    assert not shard.settle([envelope("b", closes_at - 1, [])]).batches  # b still behind
    settled = shard.settle([envelope("b", closes_at, [])])
    assert [batch.event_count for batch in settled.batch_records()] == [1]


def test_a_very_late_event_joins_the_next_open_batch_marked_late():
    shard = SettlementShard(["a"], WINDOW_US, LATENESS_US)
    on_time = payment("on-time", occurred_us=95 * SECOND_US, ingest_us=100 * SECOND_US)
    late = payment("late", occurred_us=5 * SECOND_US, ingest_us=100 * SECOND_US)
    settled = shard.settle([envelope("a", WATERMARK_END_US, [on_time, late])])
    [batch] = settled.batch_records()
    assert batch.late_count == 1
    assert {event_id: late for event_id, _, late in _events(settled)} == {
        "on-time": False,
        "late": True,
    }


def test_events_after_an_end_of_input_join_the_batch_after_the_closed_windows():
    shard = SettlementShard(["a"], WINDOW_US, LATENESS_US)
    shard.settle([envelope("a", WATERMARK_END_US, [payment("e1", occurred_us=1 * SECOND_US)])])
    # the input resumes (a later run) with an event for the window already force-closed
    again = payment("e2", occurred_us=2 * SECOND_US, ingest_us=3 * SECOND_US)
    settled = shard.settle([envelope("a", WATERMARK_END_US, [again])])
    assert settled.batch_records()[0].window_start_us == WINDOW_US
    assert _events(settled)[0][2] is True


def test_refunds_reduce_the_batch_they_fall_into_and_the_ledger_balances():
    events = [
        payment("p1", occurred_us=1, amount_micros=500_000),
        payment("p2", occurred_us=2, amount_micros=250_000, rail="sepa"),
        payment("r1", occurred_us=3, amount_micros=100_000, type="refund", ref_event_id="p1"),
    ]
    settled, _carry = _net(events)
    [batch] = settled.batch_records()
    entries = settled.entry_table().to_pylist()
    assert (batch.gross_micros, batch.refunds_micros, batch.net_micros, batch.payout_micros) == (
        750_000,
        100_000,
        650_000,
        650_000,
    )
    assert sum(entry["amount_micros"] for entry in entries) == 0
    assert len(entries) == 2 * len(events) + 2
    assert len({entry["entry_id"] for entry in entries}) == len(entries)


def test_a_window_whose_total_overflows_decimal_18_6_is_split_into_parts():
    huge = AMOUNT_MICROS_MAX // 2 + 1
    events = [payment(f"e{number}", occurred_us=number, amount_micros=huge) for number in range(3)]
    settled, _carry = _net(events)
    parts = settled.batch_records()
    assert [batch.part for batch in parts] == [0, 1, 2]
    assert len({batch.batch_id for batch in parts}) == 3
    assert sum(batch.gross_micros for batch in parts) == 3 * huge
    assert all(batch.gross_micros <= AMOUNT_MICROS_MAX for batch in parts)


def test_unapproved_events_settle_in_no_batch():
    shard = SettlementShard(["a"], WINDOW_US, LATENESS_US)
    declined = payment("d1", occurred_us=1, decision="decline")
    settled = shard.settle([envelope("a", WATERMARK_END_US, [declined])])
    assert settled.batches == [] and _events(settled) == [("d1", None, False)]


def test_state_survives_a_snapshot_round_trip():
    import pickle

    shard = SettlementShard(["a", "b"], WINDOW_US, LATENESS_US)
    shard.settle([envelope("a", 50 * SECOND_US, [payment("e1", occurred_us=SECOND_US)])])
    restored = SettlementShard(
        ["a", "b"], WINDOW_US, LATENESS_US, pickle.loads(pickle.dumps(shard.snapshot()))
    )
    settled = restored.settle([envelope("b", WATERMARK_END_US, [])])
    assert [event_id for event_id, _, _ in _events(settled)] == ["e1"]


@given(
    amounts=st.lists(st.integers(1, 10**18 - 1), min_size=1, max_size=6),
    currency=st.sampled_from(["USD", "JPY", "BHD", "CLF"]),
    carry_in=st.integers(0, 999_999),
)
@example(amounts=[10**18 - 1, 10**18 - 1], currency="USD", carry_in=9_999)
@example(amounts=[10**18 - 1], currency="JPY", carry_in=999_999)
def test_payouts_and_carries_never_lose_money_or_overflow(amounts, currency, carry_in):
    """Across a window's parts: payouts plus the final carry equal the events plus the carry in,
    every figure fits DECIMAL(18,6), and the ledger balances per batch."""
    from centflow.money.amounts import minor_unit_exponent

    carry_in = carry_in % 10 ** (6 - minor_unit_exponent(currency))  # below one minor unit
    events = [
        payment(f"e{n}", occurred_us=n, amount_micros=a, currency=currency)
        for n, a in enumerate(amounts)
    ]
    settled, carry_next = _net(events, carry_in)
    batches = settled.batch_records()
    assert sum(batch.payout_micros for batch in batches) + carry_next == sum(amounts) + carry_in
    step = 10 ** (6 - minor_unit_exponent(currency))
    assert all(batch.event_count > 0 for batch in batches)
    entries = settled.entry_table().to_pylist()
    for batch in batches:
        assert batch.payout_micros % step == 0
        assert all(
            abs(value) <= AMOUNT_MICROS_MAX
            for value in (
                batch.gross_micros,
                batch.net_micros,
                batch.payout_micros,
                batch.carry_out_micros,
            )
        )
        postings = [
            entry["amount_micros"] for entry in entries if entry["batch_id"] == batch.batch_id
        ]
        assert sum(postings) == 0


@given(
    occurred=st.lists(st.integers(0, 10**15), min_size=1, max_size=20),
    delays=st.lists(st.integers(0, 10**12), min_size=20, max_size=20),
    window_us=st.integers(1, 10**11),
    lateness_us=st.integers(0, 10**11),
)
def test_column_window_assignment_agrees_with_the_one_event_rule(
    occurred, delays, window_us, lateness_us
):
    ingest = [value + delay for value, delay in zip(occurred, delays, strict=False)]
    indexes, lates = assign_windows(np.array(occurred), np.array(ingest), window_us, lateness_us)
    assert list(zip(indexes.tolist(), lates.tolist(), strict=True)) == [
        assign_window(value, at, window_us, lateness_us)
        for value, at in zip(occurred, ingest, strict=False)
    ]


@st.composite
def _window_rows(draw):
    spread = draw(st.sampled_from([3, 2_000, 10**9]))  # many ties, a few, none
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["m1", "m2", "m3"]),
                st.sampled_from(["USD", "EUR"]),
                st.integers(0, spread),
                st.text("aé", min_size=1, max_size=2),
                st.sampled_from(["payment", "refund", "chargeback"]),
            ),
            max_size=300,
        )
    )


@settings(max_examples=80, deadline=None)
@given(rows=_window_rows())
@example(rows=[("m1", "USD", 5, "a", "refund"), ("m2", "USD", 5, "a", "payment"), ("m1", "USD", 5, "a", "payment")])  # fmt: skip
def test_a_window_is_ordered_by_group_time_id_and_type_however_it_is_sorted(rows):
    """The NumPy order of a window's events (with its tie-break of equal times) is
    the order of Arrow's sort by all four keys."""
    from centflow.money.netting import _ORDER, _group_codes, _sorted_order

    events = pa.table(
        {
            "payee_id": pa.array([r[0] for r in rows], pa.string()),
            "currency": pa.array([r[1] for r in rows], pa.string()),
            "occurred_us": pa.array([r[2] for r in rows], pa.int64()),
            "event_id": pa.array([r[3] for r in rows], pa.string()),
            "type": pa.array([r[4] for r in rows], pa.string()),
        }
    )
    codes = _group_codes(events)
    expected = pc.sort_indices(
        events.append_column("_group", pa.array(codes)), sort_keys=_ORDER
    ).to_pylist()
    key = [(int(codes[i]), r[2], r[3], r[4]) for i, r in enumerate(rows)]
    order, groups = _sorted_order(events)
    assert [key[i] for i in order.to_pylist()] == [key[i] for i in expected]
    assert groups.tolist() == [key[i][0] for i in order.to_pylist()]
