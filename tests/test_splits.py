"""Revenue splits: parts sum to the whole, each within one micro-unit of exact, every
party's remainder its own, and money conserved over random batch sequences."""

from __future__ import annotations

import itertools
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from centflow.limits import WATERMARK_END_US
from centflow.money.amounts import minor_unit_step
from centflow.money.batches import Settled
from centflow.money.fees import RailFee, schedule_terms
from centflow.money.payouts import PartyLines, Weights, party_weights, settle_payouts
from centflow.money.settlement import SettlementShard
from tests.factories import SECOND_US, envelope, payment

WINDOW_US = 10 * SECOND_US
SCHEDULE = schedule_terms(
    (
        RailFee("card", "USD", fixed="0.30", bps=290, chargeback="15"),
        RailFee("card", "JPY", fixed="45", bps=290),
        RailFee("card", "BHD", fixed="0.120", bps=290),
    )
)
PARTIES = ("m1", "p-ann", "p-bob", "platform")


def _splits(draw_bps: list[int], parties: list[str]) -> tuple[tuple[str, int], ...]:
    """Basis points summing to 10000 over distinct `parties` (cut points from the draw)."""
    cuts = sorted({0, 10_000, *(bps for bps in draw_bps if 0 < bps < 10_000)})
    shares = [b - a for a, b in itertools.pairwise(cuts)]
    return tuple(zip(parties, shares, strict=False))[: len(shares)]


split_specs = st.one_of(
    st.none(),
    st.tuples(
        st.lists(st.integers(1, 9_999), min_size=0, max_size=3),
        st.permutations(PARTIES),
    ).map(lambda drawn: _splits(drawn[0], list(drawn[1]))),
)
event_specs = st.tuples(
    st.sampled_from(["USD", "JPY", "BHD"]),
    st.sampled_from(["payment", "payment", "payment", "refund", "chargeback"]),
    st.one_of(st.integers(1, 3_000_000), st.integers(1, 10**12)),
    split_specs,
)


def _run(windows: list[list[tuple]]) -> tuple[Settled, SettlementShard]:
    """Settle windows of (currency, type, amount, splits) events of payee m1."""
    shard = SettlementShard(["a"], WINDOW_US, 0, fees=SCHEDULE)
    out = Settled()
    number = 0
    paid: dict[str, str] = {}
    for window, specs in enumerate(windows):
        events = []
        for currency, kind, amount, splits in specs:
            number += 1
            reference = paid.get(currency) if kind != "payment" else None
            kind = kind if reference else "payment"
            event = payment(
                f"e{number}",
                occurred_us=window * WINDOW_US + number,
                currency=currency,
                type=kind,
                ref_event_id=reference,
                amount_micros=amount,
                splits=splits if kind == "payment" else None,
            )
            paid.setdefault(currency, event.event_id)
            events.append(event)
        step = shard.settle([envelope("a", (window + 1) * WINDOW_US, events)])
        for name in ("batches", "entries", "fees", "payouts", "events"):
            getattr(out, name).extend(getattr(step, name))
    final = shard.settle([envelope("a", WATERMARK_END_US, [])])
    for name in ("batches", "entries", "fees", "payouts", "events"):
        getattr(out, name).extend(getattr(final, name))
    return out, shard


@settings(max_examples=80, deadline=None)
@given(windows=st.lists(st.lists(event_specs, max_size=6), min_size=1, max_size=6))
def test_splits_conserve_every_micro_unit_per_party_and_the_ledger_balances(windows):
    """Over random batch sequences with splits, refunds, chargebacks and fees: every
    batch's postings sum to zero, and so does every payable in every batch; a batch's
    payout lines sum to its payout, each on the minor unit; per party, what its split
    postings gave it is what it was paid plus what it still carries; per currency, what
    accrued is paid out + fees + carried."""
    out, shard = _run(windows)
    entries = out.entry_table().to_pylist()
    by_batch: dict[str, int] = defaultdict(int)
    payables: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        by_batch[entry["batch_id"]] += entry["amount_micros"]
        if "_payable:" in entry["account"]:
            payables[(entry["batch_id"], entry["account"])] += entry["amount_micros"]
    assert set(by_batch.values()) <= {0}
    assert set(payables.values()) <= {0}
    lines: dict[str, int] = defaultdict(int)
    for line in out.payout_table().to_pylist():
        assert line["amount_micros"] > 0
        assert line["amount_micros"] % minor_unit_step(line["currency"]) == 0
        lines[line["batch_id"]] += line["amount_micros"]
    batches = out.batch_table().to_pylist()
    accrued: dict[str, int] = defaultdict(int)
    accounted: dict[str, int] = defaultdict(int)
    for batch in batches:
        assert lines.get(batch["batch_id"], 0) == batch["payout_micros"]
        accrued[batch["currency"]] += batch["gross_micros"] - batch["refunds_micros"]
        accounted[batch["currency"]] += (
            batch["payout_micros"]
            + batch["fees_micros"]
            + batch["carry_out_micros"]
            - batch["carry_in_micros"]
        )
    assert accrued == accounted
    carried: dict[str, int] = defaultdict(int)
    for key, value in shard.carry_micros.items():
        carried[key[1]] += value
    assert {c: accrued[c] - accounted[c] + carried[c] for c in accrued} == {
        c: carried[c] for c in accrued
    }
    for currency in accrued:  # what is outstanding is exactly what the batches carried on
        assert carried[currency] == sum(
            b["carry_out_micros"] - b["carry_in_micros"]
            for b in batches
            if b["currency"] == currency
        )
    party_in: dict[tuple[str, str], int] = defaultdict(int)
    party_out: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        kind, _, owner = entry["account"].partition(":")
        key = (owner, entry["currency"])
        if kind == "party_payable" and entry["kind"] == "split":
            party_in[key] -= entry["amount_micros"]
        elif kind == "party_payout":
            party_out[key] -= entry["amount_micros"]
    for (party, currency), given_to in party_in.items():
        assert given_to == party_out[(party, currency)] + shard.carry_micros.get(
            ("m1", currency, party), 0
        )


batch_specs = st.tuples(
    st.integers(-(10**9), 10**13),
    st.integers(-(10**7), 9_999),
    st.dictionaries(
        st.sampled_from(PARTIES), st.integers(0, 10**15), min_size=1, max_size=4
    ).filter(lambda w: sum(w.values()) > 0),
    st.dictionaries(st.sampled_from(PARTIES[1:]), st.integers(1, 9_999), max_size=3),
)


def _batches(specs: list[tuple]) -> tuple[list[str], np.ndarray, dict, list[dict]]:
    payees = [f"m{n}" for n in range(len(specs))]
    carry: dict[tuple[str, ...], int] = {}
    weights = []
    for payee, (_, held, by_party, carries) in zip(payees, specs, strict=True):
        renamed = {payee if party == "m1" else party: w for party, w in by_party.items()}
        weights.append(renamed)
        carry.update({(payee, "USD", party): value for party, value in carries.items()})
        if held:
            carry[(payee, "USD")] = held
    return payees, np.array([spec[0] for spec in specs], np.int64), carry, weights


@settings(max_examples=200, deadline=None)
@given(specs=st.lists(batch_specs, min_size=1, max_size=4))
def test_each_part_is_within_one_micro_unit_of_its_exact_share(specs):
    """Column-at-a-time splits against one batch at a time in Python ints (the same
    results), and each party's part within one micro-unit of its exact share."""
    payees, net, carry, weights = _batches(specs)
    before = sum(carry.values())
    held = {payee: carry.get((payee, "USD"), 0) for payee in payees}
    python_carry = dict(carry)
    zeros = np.zeros(len(payees), np.int64)
    paid = settle_payouts(
        payees, ["USD"] * len(payees), zeros, net, carry, Weights.from_dicts(weights, payees)
    )
    parts = np.ones(len(payees), np.int64)  # a window in parts is done one batch at a time
    python = settle_payouts(payees, ["USD"] * len(payees), parts, net, python_carry, Weights.from_dicts(weights, payees))  # fmt: skip
    assert carry == python_carry
    for name in ("carry_in", "payout", "carry_out", "payee_carry_in", "payee_payout", "payee_carry_out"):  # fmt: skip
        assert getattr(paid, name).tolist() == getattr(python, name).tolist(), name
    for name in PartyLines.__slots__:
        assert getattr(paid.lines, name) == getattr(python.lines, name), name
    for row, payee in enumerate(payees):
        total = int(net[row]) + min(held[payee], 0)
        shares = {
            party: share
            for batch, party, share in zip(paid.lines.batch, paid.lines.party, paid.lines.share, strict=True)
            if batch == row
        }  # fmt: skip
        if total <= 0:
            assert not shares and paid.payout[row] == 0
            continue
        payee_share = total - sum(shares.values())
        if payee in weights[row]:
            shares[payee] = payee_share
        else:
            assert payee_share == 0
        whole = sum(weights[row].values())
        for party, share in shares.items():
            assert abs(Fraction(share) - Fraction(total * weights[row][party], whole)) < 1
    # nothing created or lost: paid out + carried now = net + carried before
    assert int(paid.payout.sum()) + sum(carry.values()) == int(net.sum()) + before
    assert (paid.payout + paid.carry_out == net + paid.carry_in).all()
    assert all(0 <= value < 10_000 for key, value in carry.items() if len(key) == 3)


def test_a_split_pays_each_party_its_rounded_share_and_keeps_its_remainder():
    # 10.00 card payment, fee 0.30 + 2.9 % = 0.59: 9.41 split 33.34 / 33.33 / 33.33 % is
    # 3.137294 / 3.136353 / 3.136353 (summing to 9.41): 3.13 paid to each, and each party
    # carries its own remainder (0.007294, 0.006353, 0.006353)
    thirds = (("m1", 3334), ("p-ann", 3333), ("p-bob", 3333))
    out, shard = _run([[("USD", "payment", 10_000_000, thirds)]])
    (batch,) = out.batch_table().to_pylist()
    lines = {row["party_id"]: row["amount_micros"] for row in out.payout_table().to_pylist()}
    assert lines == {"m1": 3_130_000, "p-ann": 3_130_000, "p-bob": 3_130_000}
    assert batch["payout_micros"] == 9_390_000 and batch["carry_out_micros"] == 20_000
    assert shard.carry_micros[("m1", "USD")] == 3_137_294 - 3_130_000
    assert shard.carry_micros[("m1", "USD", "p-ann")] + shard.carry_micros[
        ("m1", "USD", "p-bob")
    ] == 20_000 - (3_137_294 - 3_130_000)
    accounts = {e["account"] for e in out.entry_table().to_pylist()}
    assert {"party_payable:p-ann", "party_payout:p-bob", "party_carry:p-ann"} <= accounts


def test_a_partys_remainder_is_paid_to_that_party_alone():
    half = (("p-ann", 5000), ("p-bob", 5000))
    only_bob = (("p-bob", 10000),)
    # a sub-yen amount: each half of the first batch leaves a remainder below one yen
    out, shard = _run(
        [
            [("JPY", "payment", 1_000_999_999, half)],
            [("JPY", "payment", 2_000_000_000, only_bob)],
        ]
    )
    ann = [e for e in out.entry_table().to_pylist() if e["account"] == "party_carry:p-ann"]
    # Ann's remainder from the first batch is still hers: not moved in the second batch
    assert sum(-e["amount_micros"] for e in ann) == shard.carry_micros[("m1", "JPY", "p-ann")]
    assert len(ann) == 1


def test_party_weights_count_payments_only_and_unsplit_payments_go_to_the_payee():
    weights = party_weights(
        "m1",
        ["payment", "refund", "payment"],
        [100, 50, 300],
        [[{"party_id": "p", "bps": 10_000}], None, None],
    )
    assert weights == {"p": 1_000_000, "m1": 3_000_000}
    assert party_weights("m1", ["payment"], [5], [None]) is None


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from(["payment", "payment", "refund"]),
            st.integers(1, 10**17),
            split_specs,
        ),
        min_size=1,
        max_size=12,
    )
)
def test_split_weights_a_column_at_a_time_equal_the_python_rule(rows):
    """`_split_weights` (columns) against `party_weights` (one batch in Python)."""
    from centflow.ingest.columns import to_batch
    from centflow.money.netting import _split_weights

    rows = sorted(rows, key=lambda row: row[0])
    events = [
        payment(
            f"e{n}",
            occurred_us=n,
            payee_id=f"m{batch}",
            type=kind,
            amount_micros=amount,
            splits=splits if kind == "payment" else None,
            ref_event_id=None if kind == "payment" else "x",
        )
        for n, (batch, kind, amount, splits) in enumerate(rows)
    ]
    table = pa.Table.from_batches([to_batch(events)])
    batch_of = np.array([row[0] for row in rows], np.int64)
    _, starts = np.unique(batch_of, return_index=True)
    batch_of = np.searchsorted(np.unique(batch_of), batch_of)
    is_payment = np.array([row[1] == "payment" for row in rows])
    weights = _split_weights(table, is_payment, starts, batch_of)
    expected = []
    for batch in range(len(starts)):
        mine = [
            (event, row)
            for event, row in zip(events, rows, strict=True)
            if batch_of[events.index(event)] == batch
        ]
        expected.append(
            party_weights(
                mine[0][0].payee_id,
                [event.type for event, _ in mine],
                [event.amount_micros for event, _ in mine],
                [None if event.splits is None else [{"party_id": s.party_id, "bps": s.bps} for s in event.splits] for event, _ in mine],
            )
        )  # fmt: skip
    got = [weights.of(batch) or None for batch in range(len(starts))]
    assert got == expected
