"""Fees once per batch and rail, receivables, and money conserved: property tests over
random batch sequences, and the schedule's validation."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from centflow.config import FileConfig, load_file_config
from centflow.errors import ConfigError
from centflow.limits import WATERMARK_END_US
from centflow.money.amounts import minor_unit_step
from centflow.money.batches import Settled
from centflow.money.fees import (
    DEFAULT_SCHEDULE,
    RailFee,
    group_fees,
    schedule_terms,
    standalone_fees,
)
from centflow.money.settlement import SettlementShard
from tests.factories import SECOND_US, envelope, payment

WINDOW_US = 10 * SECOND_US
LATENESS_US = 2 * SECOND_US
SCHEDULE = schedule_terms(
    (
        RailFee("card", "USD", fixed="0.30", bps=290, cost_fixed="0.10", cost_bps=180, chargeback="15"),
        RailFee("sepa", "EUR", fixed="0.20", bps=50, cap="5.00", min="0.25", cost_bps=10),
        RailFee("card", "JPY", fixed="45", bps=290, chargeback="2250"),
        RailFee("card", "BHD", fixed="0.120", bps=290, cost_fixed="0.040"),
    )
)  # fmt: skip


def test_a_fee_is_fixed_plus_basis_points_within_min_and_cap_once_per_group():
    fees = group_fees(
        SCHEDULE,
        ["card", "sepa", "sepa", "card", "wallet"],
        ["USD", "EUR", "EUR", "USD", "USD"],
        np.array([10_000_000, 100_000, 5_000_000_000, 0, 9_000_000], np.int64),
        np.array([3, 1, 2, 0, 1], np.int64),
        np.array([0, 0, 0, 2, 0], np.int64),
    )
    # card: 0.30 + 2.9 % of 10.00 = 0.59; sepa: 0.20 + 0.0005 rounds to 0.2005, raised to
    # the 0.25 minimum; sepa on 5,000: 0.20 + 25.00, capped at 5.00; chargebacks only: no
    # payment fee, 2 x 15; wallet has no entry for USD here: nothing
    assert fees.fee.tolist() == [590_000, 250_000, 5_000_000, 0, 0]
    assert fees.chargeback_fee.tolist() == [0, 0, 0, 30_000_000, 0]
    assert fees.rail_cost.tolist() == [280_000, 100, 5_000_000, 0, 0]


def test_netting_charges_the_fixed_fee_once_where_alone_each_payment_pays_it():
    amounts = np.array([100_000, 100_000, 100_000], np.int64)  # three 0.10 payments
    alone = standalone_fees(SCHEDULE, ["card"] * 3, ["USD"] * 3, amounts)
    assert alone.tolist() == [302_900, 302_900, 302_900]  # more than each payment is worth
    together = group_fees(
        SCHEDULE, ["card"], ["USD"], np.array([300_000]), np.array([3]), np.array([0])
    )
    assert together.fee.tolist() == [308_700]  # 0.30 + 2.9 % of 0.30


def _run(events_by_window: list[list[tuple]]) -> Settled:
    """Settle windows of (payee, currency, rail, type, amount) events through a shard."""
    shard = SettlementShard(["a"], WINDOW_US, LATENESS_US, fees=SCHEDULE)
    out = Settled()
    number = 0
    paid: dict[tuple[str, str], list[str]] = defaultdict(list)
    for window, specs in enumerate(events_by_window):
        batch = []
        for payee, currency, rail, kind, amount in specs:
            number += 1
            occurred_us = window * WINDOW_US + number % WINDOW_US
            reference = None
            if kind != "payment":
                if not paid[(payee, currency)]:
                    kind = "payment"
                else:
                    reference = paid[(payee, currency)][0]
            event = payment(
                f"e{number}",
                occurred_us=occurred_us,
                payee_id=payee,
                currency=currency,
                rail=rail,
                type=kind,
                ref_event_id=reference,
                amount_micros=amount,
            )
            if kind == "payment":
                paid[(payee, currency)].append(event.event_id)
            batch.append(event)
        step = shard.settle([envelope("a", (window + 1) * WINDOW_US, batch)])
        out.batches += step.batches
        out.entries += step.entries
        out.fees += step.fees
        out.payouts += step.payouts
        out.events += step.events
    final = shard.settle([envelope("a", WATERMARK_END_US, [])])
    for name in ("batches", "entries", "fees", "payouts", "events"):
        getattr(out, name).extend(getattr(final, name))
    return out


event_specs = st.tuples(
    st.sampled_from(["m1", "m2"]),
    st.sampled_from(["USD", "EUR", "JPY", "BHD"]),
    st.sampled_from(["card", "sepa", "wallet"]),
    st.sampled_from(["payment", "payment", "payment", "refund", "chargeback"]),
    st.one_of(st.integers(1, 2_000_000), st.integers(1, 10**12)),
)


@settings(max_examples=60, deadline=None)
@given(windows=st.lists(st.lists(event_specs, max_size=8), min_size=1, max_size=6))
def test_fees_and_receivables_create_or_lose_no_micro_unit(windows):
    """Over random batch sequences: every batch's postings balance per currency; net is
    gross - refunds - fees; the fee rows add up to the batch's fees; no payout is
    negative or off the minor unit; per payee and currency, what accrued is what was
    paid out, charged in fees and carried (a remainder, or a receivable) at the end;
    fee revenue and rail cost close into the margin in every batch."""
    out = _run(windows)
    batches = out.batch_table().to_pylist()
    fees = out.fee_table().to_pylist()
    entries = out.entry_table().to_pylist()
    payouts = out.payout_table().to_pylist()
    fee_of: dict[str, int] = defaultdict(int)
    margin_of: dict[str, int] = defaultdict(int)
    for row in fees:
        fee_of[row["batch_id"]] += row["fee_micros"] + row["chargeback_fee_micros"]
        margin_of[row["batch_id"]] += row["margin_micros"]
        assert row["margin_micros"] == (
            row["fee_micros"] + row["chargeback_fee_micros"] - row["rail_cost_micros"]
        )
    postings: dict[tuple[str, str], int] = defaultdict(int)
    accounts: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        postings[(entry["batch_id"], entry["currency"])] += entry["amount_micros"]
        kind = entry["account"].split(":")[0]
        accounts[(entry["batch_id"], kind)] += entry["amount_micros"]
    assert all(total == 0 for total in postings.values())
    paid_lines: dict[str, int] = defaultdict(int)
    for line in payouts:
        paid_lines[line["batch_id"]] += line["amount_micros"]
        assert line["amount_micros"] > 0
    conserved: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for batch in batches:
        batch_id = batch["batch_id"]
        assert batch["fees_micros"] == fee_of.get(batch_id, 0)
        assert batch["net_micros"] == (
            batch["gross_micros"] - batch["refunds_micros"] - batch["fees_micros"]
        )
        assert batch["payout_micros"] >= 0
        assert batch["payout_micros"] % minor_unit_step(batch["currency"]) == 0
        assert paid_lines.get(batch_id, 0) == batch["payout_micros"]
        assert accounts.get((batch_id, "fee_revenue"), 0) == 0
        assert accounts.get((batch_id, "rail_cost"), 0) == 0
        assert -accounts.get((batch_id, "platform_margin"), 0) == margin_of.get(batch_id, 0)
        assert accounts.get((batch_id, "payee_payable"), 0) == 0
        key = (batch["payee_id"], batch["currency"])
        conserved[key][0] += batch["gross_micros"] - batch["refunds_micros"]
        conserved[key][1] += batch["payout_micros"] + batch["fees_micros"]
        conserved[key][1] += batch["carry_out_micros"] - batch["carry_in_micros"]
    for accrued, accounted in conserved.values():
        assert accrued == accounted


def test_a_batch_that_nets_negative_pays_nothing_and_carries_a_receivable():
    # window 0: one 0.10 card payment (fee 0.3029): owes 0.2029; window 1: 10.00 (fee 0.59)
    out = _run([[("m1", "USD", "card", "payment", 100_000)], [("m1", "USD", "card", "payment", 10_000_000)]])  # fmt: skip
    first, second = out.batch_table().to_pylist()
    assert (first["payout_micros"], first["carry_out_micros"]) == (0, -202_900)
    assert second["carry_in_micros"] == -202_900
    # 10.00 - 0.59 - 0.2029 = 9.2071: 9.20 paid out, 0.0071 carried on
    assert (second["payout_micros"], second["carry_out_micros"]) == (9_200_000, 7_100)
    receivable = [e for e in out.entry_table().to_pylist() if e["account"] == "payee_receivable:m1"]
    assert sum(entry["amount_micros"] for entry in receivable) == 0  # taken back in full


def test_the_shipped_schedule_is_valid_and_scaled_to_each_currencys_minor_unit():
    terms = schedule_terms(DEFAULT_SCHEDULE)
    assert terms[("card", "USD")].fixed == 300_000
    assert terms[("card", "JPY")].fixed == 45_000_000  # 45 yen, a whole number
    assert terms[("card", "BHD")].fixed == 120_000  # 0.120 dinar, three decimals
    assert ("sepa", "USD") not in terms


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (RailFee("card", "USD", fixed="-0.30"), "fixed '-0.30' must be a non-negative amount"),
        (RailFee("card", "USD", fixed="abc"), "fixed 'abc' is not a decimal number"),
        (RailFee("card", "USD", chargeback="0.0000001"), "more than 6 decimals"),
        (RailFee("card", "USD", bps=10_001), "bps 10001 is out of range"),
        (RailFee("card", "USD", min="2", cap="1"), "cap 1 is below min 2"),
        (RailFee("card", "XYZ"), "unknown currency"),
    ],
)
def test_a_bad_schedule_entry_is_one_clear_line(entry, message):
    with pytest.raises(ConfigError, match=message) as raised:
        schedule_terms((entry,))
    assert "\n" not in str(raised.value)


def test_fees_come_from_the_configuration_file(tmp_path):
    path = tmp_path / "centflow.toml"
    path.write_text(
        '[[fees]]\nrail = "card"\ncurrency = "USD"\nfixed = "0.25"\nbps = 100\n'
        '[[fees]]\nrail = "card"\ncurrency = "USD"\nfixed = "0.30"\n'
    )
    with pytest.raises(ConfigError, match="names card/USD twice"):
        load_file_config(path)
    path.write_text('[[fees]]\nrail = "card"\ncurrency = "USD"\nfixed = "0.25"\nbps = 100\n')
    loaded = load_file_config(path)
    assert isinstance(loaded, FileConfig) and loaded.fees is not None
    assert schedule_terms(loaded.fees)[("card", "USD")].fixed == 250_000
    path.write_text('[[fees]]\nrail = "card"\ncurrency = "USD"\nfixd = "0.25"\n')
    with pytest.raises(ConfigError, match="fixd"):
        load_file_config(path)


def test_a_batchs_fee_entries_do_not_depend_on_what_else_its_window_holds():
    """Entry ids number a batch's (rail) groups by rail name: the same batch posts
    the same entries whatever other payees share its window, and in what order."""
    schedule = schedule_terms(
        (
            RailFee("sepa", "EUR", fixed="0.20", bps=50, cost_fixed="0.02"),
            RailFee("wallet", "EUR", fixed="0.10", bps=150, cost_fixed="0.05"),
        )
    )

    def entries_of_m1(others: list[tuple[str, str]]) -> list[dict]:
        shard = SettlementShard(["a"], WINDOW_US, LATENESS_US, fees=schedule)
        events = [
            payment(f"o{n}", occurred_us=1 + n, payee_id=payee, currency="EUR", rail=rail)
            for n, (payee, rail) in enumerate(others)
        ]
        events += [
            payment("w", occurred_us=50, payee_id="m1", currency="EUR", rail="wallet"),
            payment("s", occurred_us=60, payee_id="m1", currency="EUR", rail="sepa"),
        ]
        out = shard.settle([envelope("a", WATERMARK_END_US, events)])
        return [e for e in out.entry_table().to_pylist() if e["batch_id"] in {
            b["batch_id"] for b in out.batch_table().to_pylist() if b["payee_id"] == "m1"
        }]  # fmt: skip

    alone = entries_of_m1([])
    assert any(entry["account"] == "fee_revenue:sepa" for entry in alone)
    assert entries_of_m1([("m2", "sepa")]) == alone
    assert entries_of_m1([("m0", "wallet"), ("m9", "sepa")]) == alone


def test_terms_looked_up_per_distinct_rail_and_currency_match_a_lookup_per_row():
    from centflow.money.fees import FeeTerms, _term_columns

    generator = np.random.default_rng(3)
    rails = generator.choice(["card", "sepa", "wallet", "swift"], 500).tolist()
    currencies = generator.choice(["USD", "EUR", "JPY", "BHD", "XAU"], 500).tolist()
    columns = _term_columns(
        SCHEDULE, pa.chunked_array([rails[:200], rails[200:]]), pa.array(currencies)
    )
    none = FeeTerms(0, 0, 0, 0, 0, 0, 0)
    for name in FeeTerms.__struct_fields__:
        expected = [
            getattr(SCHEDULE.get((rail, currency), none), name)
            for rail, currency in zip(rails, currencies, strict=True)
        ]
        if name == "cap":  # no entry: no cap
            expected = [value or columns["cap"].max() for value in expected]
        assert columns[name].tolist() == expected, name


def test_the_money_benchmark_settles_every_approved_event_with_and_without_fees():
    from pathlib import Path

    from centflow.ops.bench_money import approved_blocks, measure

    log = Path(__file__).resolve().parent.parent / "replay_data" / "sample.jsonl.gz"
    approved = sum(block.events.num_rows for block in approved_blocks(log))
    figures = measure(log, 3_600, 120, repeat=1)
    assert figures["money_events"] == figures["money_no_fees_events"] == approved > 4_000
    assert figures["money_batches"] == figures["money_no_fees_batches"] > 0
    assert figures["money_us_per_event"] > 0
