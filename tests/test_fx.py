"""FX at event time: rates as given and derived, conversion at full precision rounded
once per batch, the stored rates recomputing what was posted, per-currency balance,
batches awaiting a rate, and bad rates or directory lines refused in one line."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from centflow.errors import ConfigError
from centflow.limits import WATERMARK_END_US
from centflow.money.amounts import minor_unit_step
from centflow.money.batches import Settled
from centflow.money.fees import RailFee, schedule_terms
from centflow.money.fx import RATE_SCALE, FxBook, RateBook, Series, parse_rate, read_payee_directory
from centflow.money.settlement import SettlementShard
from tests.factories import SECOND_US, envelope, payment

WINDOW_US = 10 * SECOND_US
SCHEDULE = schedule_terms(
    (RailFee("card", "EUR", fixed="0.25", bps=250), RailFee("card", "JPY", fixed="40", bps=250))
)
# USD -> EUR and USD -> JPY from t = 5 s, changing at 15 s and 25 s
GIVEN = {
    ("USD", "EUR"): Series([5 * SECOND_US, 15 * SECOND_US, 25 * SECOND_US],
                           [parse_rate("0.921234567891"), parse_rate("0.93"), parse_rate("0.9105")]),
    ("USD", "JPY"): Series([5 * SECOND_US, 25 * SECOND_US],
                           [parse_rate("151.123456789012"), parse_rate("149.5")]),
}  # fmt: skip


def test_rates_are_positive_decimals_of_at_most_12_places():
    assert parse_rate("1") == RATE_SCALE
    assert parse_rate("0.000000000001") == 1
    for bad in (
        "0",
        "0.000000000000",
        "-1.5",
        "1e3",
        "abc",
        "",
        "1.0000000000001",
        "1000000",
        " 1",
    ):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_a_pair_not_given_is_the_inverse_or_a_cross_rate_rounded_to_12_places():
    book = RateBook(GIVEN)
    eur_usd = book.series("EUR", "USD")
    assert eur_usd is not None and eur_usd.rates[1] == 1_075_268_817_204  # 1 / 0.93
    eur_jpy = book.series("EUR", "JPY")
    assert eur_jpy is not None
    # in force at 20 s: USD->JPY 151.123456789012 (from 5 s), USD->EUR 0.93 (from 15 s)
    rates, as_of = eur_jpy.at(np.array([20 * SECOND_US, 4 * SECOND_US]))
    assert rates.tolist() == [162_498_340_633_346, 0]  # 151.123456789012 / 0.93, half-even
    assert as_of.tolist() == [15 * SECOND_US, 0]
    assert book.series("EUR", "BHD") is None


def _run(windows: list[list[tuple]], spread_bps: int = 25) -> tuple[Settled, SettlementShard]:
    """Settle windows of (payee, currency, type, amount, offset_s) events; payee m1
    settles in USD, m2 in JPY, m3 in its events' currency."""
    book = FxBook(RateBook(GIVEN), {"m1": "USD", "m2": "JPY"}, spread_bps)
    shard = SettlementShard(["a"], WINDOW_US, 0, fees=SCHEDULE, fx=book)
    out = Settled()
    number = 0
    paid: dict[tuple[str, str], str] = {}
    for window, specs in enumerate(windows):
        events = []
        for payee, currency, kind, amount, offset_s in specs:
            number += 1
            reference = paid.get((payee, currency)) if kind != "payment" else None
            kind = kind if reference else "payment"
            occurred_us = window * WINDOW_US + offset_s * SECOND_US + number
            event = payment(f"e{number}", occurred_us=occurred_us, payee_id=payee, currency=currency,
                            type=kind, ref_event_id=reference, amount_micros=amount)  # fmt: skip
            paid.setdefault((payee, currency), event.event_id)
            events.append(event)
        step = shard.settle([envelope("a", (window + 1) * WINDOW_US, events)])
        for name in Settled.__slots__:
            getattr(out, name).extend(getattr(step, name))
    final = shard.settle([envelope("a", WATERMARK_END_US, [])])
    for name in Settled.__slots__:
        getattr(out, name).extend(getattr(final, name))
    return out, shard


def _trunc(value: int) -> int:
    return value // RATE_SCALE if value >= 0 else -((-value) // RATE_SCALE)


event_specs = st.tuples(
    st.sampled_from(["m1", "m2", "m3"]),
    st.sampled_from(["EUR", "JPY", "USD"]),
    st.sampled_from(["payment", "payment", "payment", "refund"]),
    st.one_of(st.integers(1, 5_000_000), st.integers(1, 10**11)),
    st.integers(0, 9),
)


@settings(max_examples=80, deadline=None)
@given(windows=st.lists(st.lists(event_specs, max_size=6), min_size=1, max_size=4))
def test_fx_recomputes_from_the_stored_rates_and_every_currency_balances(windows):
    """Over random batch sequences, events before the first rate among them: each
    converted batch's fx_converted is trunc(sum(amount x rate) - fees x fx_rate) from
    its settlement_fx rows; the spread is floor(converted x bps); each currency's
    postings sum to zero in every batch; payouts are in the settlement currency, on
    its minor unit; a batch awaiting a rate pays nothing and converts nothing; and
    per payee what was credited is what was paid out and carried."""
    out, _ = _run(windows)
    batches = out.batch_table().to_pylist()
    fx_rows: dict[str, list[dict]] = defaultdict(list)
    for row in out.fx_table().to_pylist():
        fx_rows[row["batch_id"]].append(row)
    postings: dict[tuple[str, str], int] = defaultdict(int)
    fx_postings: set[str] = set()
    for entry in out.entry_table().to_pylist():
        postings[(entry["batch_id"], entry["currency"])] += entry["amount_micros"]
        if entry["kind"].startswith("fx"):
            fx_postings.add(entry["batch_id"])
    assert set(postings.values()) <= {0}
    lines = defaultdict(int)
    for line in out.payout_table().to_pylist():
        lines[line["batch_id"]] += line["amount_micros"]
        assert line["amount_micros"] % minor_unit_step(line["currency"]) == 0
    credited: dict[tuple[str, str], int] = defaultdict(int)
    for batch in batches:
        target = {"m1": "USD", "m2": "JPY"}.get(batch["payee_id"], batch["currency"])
        assert batch["settlement_currency"] == target
        assert lines.get(batch["batch_id"], 0) == batch["payout_micros"]
        key = (batch["payee_id"], batch["currency"])
        if batch["status"] == "awaiting_rate":
            assert target != batch["currency"]
            assert batch["payout_micros"] == batch["carry_in_micros"] == batch["carry_out_micros"] == 0  # fmt: skip
            assert batch["fx_rate_e12"] is None and batch["batch_id"] not in fx_postings
            continue
        assert batch["status"] == "settled"
        if target == batch["currency"]:
            assert batch["fx_converted_micros"] is None and batch["fx_rate_e12"] == RATE_SCALE
            credited[key] += batch["net_micros"]
        else:
            rows = fx_rows[batch["batch_id"]]
            assert sum(row["events"] for row in rows) == batch["event_count"]
            exact = sum(row["amount_micros"] * row["rate_e12"] for row in rows)
            converted = _trunc(exact - batch["fees_micros"] * batch["fx_rate_e12"])
            assert batch["fx_converted_micros"] == converted
            spread = converted * 25 // 10_000 if converted > 0 else 0
            assert batch["fx_spread_micros"] == spread
            credited[key] += converted - spread
        credited[key] -= (
            batch["payout_micros"] + batch["carry_out_micros"] - batch["carry_in_micros"]
        )
    assert set(credited.values()) <= {0}  # credited = paid out + carried, per payee


def test_a_payment_converts_at_the_rate_of_its_own_event_time():
    # m1 settles EUR in USD: 10.00 EUR at 6 s (USD->EUR 0.921234567891) and 20.00 EUR at
    # 16 s (0.93), fee 0.25 + 2.5 % of 30.00 = 1.00 EUR at the latest event's rate
    out, _ = _run([[("m1", "EUR", "payment", 10_000_000, 6)], [("m1", "EUR", "payment", 20_000_000, 6)]])  # fmt: skip
    first, second = out.batch_table().to_pylist()
    rate_6s = _divide(RATE_SCALE**2, parse_rate("0.921234567891"))
    assert first["fx_rate_e12"] == rate_6s
    converted = _trunc(10_000_000 * rate_6s - first["fees_micros"] * rate_6s)
    assert first["fx_converted_micros"] == converted
    assert first["payout_micros"] == (converted - converted * 25 // 10_000) // 10_000 * 10_000
    rate_16s = _divide(RATE_SCALE**2, parse_rate("0.93"))
    assert second["fx_rate_e12"] == rate_16s
    accounts = {(e["account"], e["currency"]) for e in out.entry_table().to_pylist()}
    assert {("fx_clearing:EUR", "EUR"), ("fx_clearing:USD", "USD"), ("fx_spread_revenue:USD", "USD")} <= accounts  # fmt: skip


def test_a_batch_with_no_rate_in_force_waits_and_is_never_converted_at_a_guess():
    out, shard = _run([[("m1", "EUR", "payment", 10_000_000, 1)]])  # at 1 s: no rate yet
    (batch,) = out.batch_table().to_pylist()
    assert batch["status"] == "awaiting_rate" and batch["payout_micros"] == 0
    assert out.payout_table().num_rows == 0 and out.fx_table().num_rows == 0
    payable = [e for e in out.entry_table().to_pylist() if e["account"] == "payee_payable:m1"]
    assert sum(e["amount_micros"] for e in payable) == -batch["net_micros"]  # still owed, in EUR
    assert not shard.carry_micros


def _divide(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (2 * remainder > denominator or (2 * remainder == denominator and quotient % 2))  # fmt: skip


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"base":"USD","quote":"EUR","rate":"0","as_of":"2026-01-01T00:00:00Z"}', "must be > 0"),
        (
            '{"base":"USD","quote":"EUR","rate":"-1.2","as_of":"2026-01-01T00:00:00Z"}',
            "plain positive",
        ),
        (
            '{"base":"USD","quote":"EUR","rate":1.2,"as_of":"2026-01-01T00:00:00Z"}',
            "Expected `str`",
        ),
        ('{"base":"USD","quote":"USD","rate":"1","as_of":"2026-01-01T00:00:00Z"}', "both USD"),
        ('{"base":"USD","quote":"XYZ","rate":"1","as_of":"2026-01-01T00:00:00Z"}', "ISO 4217"),
        ('{"base":"USD","quote":"EUR","rate":"1","as_of":"yesterday"}', "not a usable FX rate"),
    ],
)
def test_a_bad_rate_is_one_line_naming_the_file_and_line(tmp_path: Path, line: str, message: str):
    path = tmp_path / "rates.jsonl"
    path.write_text('{"base":"USD","quote":"EUR","rate":"0.9","as_of":"2026-01-01T00:00:00Z"}\n' + line + "\n")  # fmt: skip
    with pytest.raises(ConfigError, match=message) as error:
        RateBook.read(path)
    assert f"{path}:2:" in str(error.value) and "\n" not in str(error.value)


def test_a_bad_payee_directory_line_is_one_line(tmp_path: Path):
    path = tmp_path / "payees.jsonl"
    path.write_text(json.dumps({"payee_id": "m1", "settlement_currency": "usd"}) + "\n")
    with pytest.raises(ConfigError, match=r"payees.jsonl:1: .*ISO 4217"):
        read_payee_directory(path)
