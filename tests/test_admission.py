"""Admission: duplicates within the horizon, references, and eviction that never changes a result."""

from __future__ import annotations

import pickle

from hypothesis import example, given, settings
from hypothesis import strategies as st

from centflow.ingest.admission import AdmissionShard
from centflow.ingest.columns import to_payments
from centflow.limits import WATERMARK_END_US
from tests.factories import SECOND_US, envelope, payment

HORIZON_US = 60 * SECOND_US


def admit(shard: AdmissionShard, *events, watermark_us=None):
    watermark = events[-1].ingest_us + 1 if watermark_us is None else watermark_us
    admitted, dead = shard.admit([envelope("p0", watermark, list(events))])
    return to_payments(admitted), dead


def test_a_repeat_within_the_horizon_is_a_duplicate_dead_letter_with_its_raw_bytes():
    shard = AdmissionShard(["p0"], HORIZON_US)
    first = payment("e1", occurred_us=SECOND_US)
    again = payment("e1", occurred_us=SECOND_US, ingest_us=30 * SECOND_US)
    admitted, dead = admit(shard, first, again)
    assert [event.event_id for event in admitted] == ["e1"]
    assert [(letter.reason, letter.raw) for letter in dead] == [("duplicate", again.raw)]
    assert admitted[0].raw == b""  # admitted events drop their raw bytes


def test_a_repeat_beyond_the_horizon_is_a_new_event():
    shard = AdmissionShard(["p0"], HORIZON_US)
    admit(shard, payment("e1", occurred_us=SECOND_US))
    admitted, dead = admit(
        shard, payment("e1", occurred_us=SECOND_US, ingest_us=SECOND_US + HORIZON_US + 1)
    )
    assert len(admitted) == 1 and not dead


def test_references_must_exist_match_and_not_exceed_the_payment():
    shard = AdmissionShard(["p0"], HORIZON_US)
    original = payment("pay", occurred_us=1, amount_micros=1_000)
    unknown = payment("r0", occurred_us=2, type="refund", ref_event_id="nope", amount_micros=1)
    mismatch = payment(
        "r1", occurred_us=3, type="refund", ref_event_id="pay", currency="EUR", amount_micros=1
    )
    partial = payment("r2", occurred_us=4, type="refund", ref_event_id="pay", amount_micros=600)
    too_much = payment(
        "r3", occurred_us=5, type="chargeback", ref_event_id="pay", amount_micros=401
    )
    rest = payment("r4", occurred_us=6, type="chargeback", ref_event_id="pay", amount_micros=400)
    admitted, dead = admit(shard, original, unknown, mismatch, partial, too_much, rest)
    assert [event.event_id for event in admitted] == ["pay", "r2", "r4"]
    assert [letter.reason for letter in dead] == [
        "unknown_reference",
        "reference_mismatch",
        "refund_exceeds_payment",
    ]


@settings(max_examples=50, deadline=None)
@given(
    gaps_s=st.lists(st.integers(0, 90), min_size=1, max_size=30),
    ids=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=30),
    step=st.integers(1, 6),
)
def test_eviction_never_changes_which_events_are_duplicates(gaps_s, ids, step):
    """Feeding in small steps (frequent eviction) or all at once (none) gives the same verdicts."""
    clock_us = 0
    events = []
    for number, (gap_s, event_id) in enumerate(zip(gaps_s, ids, strict=False)):
        clock_us += gap_s * SECOND_US
        events.append((event_id, clock_us, number))

    def verdicts(chunk: int) -> list[tuple[str, int]]:
        """The (event_id, ingestion time) of every admitted event."""
        shard = AdmissionShard(["p0"], HORIZON_US)
        out = []
        for start in range(0, len(events), chunk):
            batch = [
                payment(event_id, occurred_us=at, ingest_us=at)
                for event_id, at, _ in events[start : start + chunk]
            ]
            admitted, dead = admit(shard, *batch)
            out += [(event.event_id, event.ingest_us) for event in admitted]
            assert len(admitted) + len(dead) == len(batch)
        return out

    assert verdicts(step) == verdicts(len(events))
    # and the reference model: a duplicate iff seen within the horizon before
    first_seen: dict[str, int] = {}
    expected = []
    for event_id, at, _ in events:
        if not (event_id in first_seen and at - first_seen[event_id] <= HORIZON_US):
            first_seen[event_id] = at
            expected.append((event_id, at))
    assert verdicts(step) == expected


@settings(max_examples=50, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 90), st.sampled_from(["a", "b", "c"]), st.booleans()),
        min_size=1,
        max_size=30,
    ),
    chunk=st.integers(1, 6),
)
@example(
    steps=[(0, "a", True), (0, "a", False)], chunk=1
)  # a refund read before its payment, same time
def test_a_reversal_finds_its_payment_only_within_the_horizon_however_the_input_is_cut(
    steps, chunk
):
    """Refunds name payments; whether one is found depends on ingestion times alone,
    not on how the input was cut into blocks (so not on when ids were evicted)."""
    events = []
    clock_us = 0
    for number, (gap_s, name, is_refund) in enumerate(steps):
        clock_us += gap_s * SECOND_US
        if is_refund:
            events.append(
                payment(
                    f"r{number}",
                    occurred_us=clock_us,
                    type="refund",
                    ref_event_id=name,
                    amount_micros=1,
                )
            )
        else:
            events.append(payment(name, occurred_us=clock_us, amount_micros=1_000))
        events[-1].source = f"test:{number}"  # unique: dead letters are matched by source

    def verdicts(size: int) -> list[tuple[str, str | None]]:
        shard = AdmissionShard(["p0"], HORIZON_US)
        reasons: dict[str, str] = {}
        for start in range(0, len(events), size):
            block = events[start : start + size]
            # the partition's watermark is the largest ingestion time so far, as the
            # sources give it: a later message may still carry the same time
            _admitted, dead = admit(shard, *block, watermark_us=block[-1].ingest_us)
            reasons |= {letter.source: letter.reason for letter in dead}
        _admitted, dead = admit(shard, watermark_us=WATERMARK_END_US)
        reasons |= {letter.source: letter.reason for letter in dead}
        return [(event.event_id, reasons.get(event.source)) for event in events]

    # the reference model: a reversal finds a payment ingested at or before it (equal
    # ingestion times count as before, whatever the order they were read in)
    first_seen: dict[str, int] = {}
    verdict: dict[str, str | None] = {}
    for at in sorted({event.ingest_us for event in events}):
        group = [event for event in events if event.ingest_us == at]
        for event in (e for e in group if e.type == "payment"):
            fresh = not (
                event.event_id in first_seen
                and event.ingest_us - first_seen[event.event_id] <= HORIZON_US
            )
            if fresh:
                first_seen[event.event_id] = event.ingest_us
            verdict[event.source] = None if fresh else "duplicate"
        for event in (e for e in group if e.type != "payment"):
            seen_us = first_seen.get(event.ref_event_id or "")
            found = seen_us is not None and event.ingest_us - seen_us <= HORIZON_US
            verdict[event.source] = None if found else "unknown_reference"
    expected = [(event.event_id, verdict[event.source]) for event in events]
    assert verdicts(chunk) == verdicts(len(events)) == expected


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 15),
            st.sampled_from(["a", "b"]),
            st.sampled_from(["payment", "refund", "chargeback"]),
            st.sampled_from(["a", "b", "z"]),
            st.integers(200, 700),
        ),
        min_size=1,
        max_size=40,
    ),
    chunk=st.integers(1, 6),
)
@example(  # two refunds of one payment, cut apart by a restore: together they exceed it
    steps=[
        (0, "a", "payment", "a", 200),
        (1, "a", "refund", "a", 600),
        (1, "a", "refund", "a", 600),
    ],
    chunk=1,
)
def test_a_shard_restored_from_its_snapshot_gives_the_verdicts_of_one_never_stopped(steps, chunk):
    """Snapshot (through pickle, as Bytewax stores it) and restore after every block:
    the same events are admitted and the same dead letters given, with the same reasons."""
    events = []
    clock_us = 0
    for number, (gap_s, event_id, kind, reference, amount) in enumerate(steps):
        clock_us += gap_s * SECOND_US
        reversal = kind != "payment"
        events.append(
            payment(
                f"r{number}" if reversal else event_id,
                occurred_us=clock_us,
                type=kind,
                ref_event_id=reference if reversal else None,
                amount_micros=amount if reversal else 1_000,
            )
        )
        events[-1].source = f"test:{number}"

    def verdicts(restore: bool) -> list[tuple[str, int]]:
        shard = AdmissionShard(["p0"], HORIZON_US)
        out = []
        for start in range(0, len(events), chunk):
            admitted, dead = admit(shard, *events[start : start + chunk])
            out += [(event.source, "admitted") for event in admitted]
            out += [(letter.source, letter.reason) for letter in dead]
            if restore:
                state = pickle.loads(pickle.dumps(shard.snapshot()))
                shard = AdmissionShard(["p0"], HORIZON_US, state)
        return sorted(out)

    assert verdicts(restore=True) == verdicts(restore=False)


def test_a_refund_read_before_its_payment_from_another_partition_waits_for_it():
    """The refund sits in partition p1 and is read first; its payment (ingested
    earlier) comes from p0 later. The refund is held, not dead-lettered, and the
    watermark passed on stays at it until every partition has moved past."""
    shard = AdmissionShard(["p0", "p1"], HORIZON_US)
    original = payment("pay", occurred_us=SECOND_US, amount_micros=1_000)
    refund = payment(
        "ref", occurred_us=2 * SECOND_US, type="refund", ref_event_id="pay", amount_micros=400
    )
    admitted, dead = shard.admit([envelope("p1", refund.ingest_us + 1, [refund])])
    assert admitted.num_rows == 0 and not dead
    assert shard.watermark_us < refund.ingest_us  # p0 has said nothing yet
    restored = AdmissionShard(
        ["p0", "p1"], HORIZON_US, pickle.loads(pickle.dumps(shard.snapshot()))
    )
    for each in (shard, restored):
        admitted, dead = each.admit([envelope("p0", original.ingest_us + 1, [original])])
        assert to_payments(admitted)[0].event_id == "pay" and not dead
        assert each.watermark_us == original.ingest_us + 1  # p0 is not past the refund yet
        admitted, dead = each.admit([envelope("p0", refund.ingest_us + 1, [])])
        assert [event.event_id for event in to_payments(admitted)] == ["ref"] and not dead
        assert each.watermark_us == refund.ingest_us + 1


def test_racing_refunds_in_two_partitions_are_judged_in_ingestion_order_not_read_order():
    """Two refunds that together exceed the payment: the one ingested first fits,
    the later one is refused, in whichever order the partitions are read."""
    original = payment("pay", occurred_us=SECOND_US, amount_micros=1_000)
    early = payment(
        "r-early", occurred_us=2 * SECOND_US, type="refund", ref_event_id="pay", amount_micros=700
    )
    late = payment(
        "r-late", occurred_us=3 * SECOND_US, type="refund", ref_event_id="pay", amount_micros=700
    )
    end_us = late.ingest_us + 1
    for first, second in (("p0", "p1"), ("p1", "p0")):
        shard = AdmissionShard(["p0", "p1"], HORIZON_US)
        blocks = {"p0": [original, late], "p1": [early]}
        out = []
        for origin in (first, second):
            admitted, dead = shard.admit([envelope(origin, end_us, blocks[origin])])
            out += [event.event_id for event in to_payments(admitted)]
            out += [(letter.reason, letter.source) for letter in dead]
        assert out == ["pay", "r-early", ("refund_exceeds_payment", late.source)]


def test_a_payment_ingested_after_its_refund_is_no_reference():
    shard = AdmissionShard(["p0", "p1"], HORIZON_US)
    refund = payment("ref", occurred_us=SECOND_US, type="refund", ref_event_id="pay")
    later = payment("pay", occurred_us=2 * SECOND_US)
    shard.admit([envelope("p1", later.ingest_us + 1, [refund])])
    admitted, dead = shard.admit([envelope("p0", later.ingest_us + 1, [later])])
    assert [event.event_id for event in to_payments(admitted)] == ["pay"]
    assert [letter.reason for letter in dead] == ["unknown_reference"]
