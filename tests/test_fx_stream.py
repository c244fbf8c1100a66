"""FX rates from a stream: a batch whose rate is missing waits for it, is marked
``awaiting_rate`` once its wait is over, and settles when a rate completing it is
ingested; the result does not depend on how the rates and events were grouped or
on a snapshot in between; bad rate messages are dead letters with a reason."""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from decimal import ROUND_DOWN, Decimal

import duckdb
import msgspec
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer
from hypothesis import given, settings
from hypothesis import strategies as st

from centflow.limits import WATERMARK_END_US
from centflow.money.batches import Settled
from centflow.money.fees import RailFee, schedule_terms
from centflow.money.fx import (
    RATE_SCALE,
    FxBook,
    PayeeUpdate,
    RateBook,
    RateEnvelope,
    RateUpdate,
    decode_payee_messages,
    decode_rate_messages,
    parse_rate,
)
from centflow.money.settlement import SettlementShard
from centflow.ops.kafka import client_config
from tests.factories import SECOND_US, centflow, envelope, payment

WINDOW_US = 10 * SECOND_US
WAIT_US = 5 * SECOND_US
SCHEDULE = schedule_terms(
    (RailFee("card", "EUR", fixed="0.25", bps=250), RailFee("card", "JPY", fixed="40", bps=250))
)
DIRECTORY = {"m1": "USD", "m2": "JPY"}  # m3 settles in its events' currency
ORIGINS = ["a", "fx/0", "fx/1"]


def _shard(state=None, horizon_us: int | None = None) -> SettlementShard:
    book = FxBook(RateBook({}), dict(DIRECTORY), 25)
    return SettlementShard(ORIGINS, WINDOW_US, 0, state, SCHEDULE, book, WAIT_US, horizon_us)


def _rate(ingest_s: float, base: str, quote: str, as_of_s: float, rate: str) -> RateUpdate:
    return RateUpdate(
        int(ingest_s * SECOND_US), base, quote, int(as_of_s * SECOND_US), parse_rate(rate)
    )


def _add(total: Settled, step: Settled) -> None:
    for name in Settled.__slots__:
        getattr(total, name).extend(getattr(step, name))


def _rows_by_batch(out: Settled) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = defaultdict(list)
    for row in out.batch_table().to_pylist():
        rows[row["batch_id"]].append(row)
    return rows


def test_a_rate_ingested_within_the_wait_settles_the_batch_with_one_row():
    shard = _shard()
    out = Settled()
    pay = payment("e1", occurred_us=2 * SECOND_US, payee_id="m1", currency="EUR", amount_micros=10_000_000)  # fmt: skip
    _add(out, shard.settle([envelope("a", 11 * SECOND_US, [pay]),
                            RateEnvelope("fx/0", 0, 11 * SECOND_US, []),
                            RateEnvelope("fx/1", 0, 11 * SECOND_US, [])]))  # fmt: skip
    assert out.batch_table().num_rows == 0 and len(shard.awaiting) == 1  # closed, waiting
    assert {e["kind"] for e in out.entry_table().to_pylist()} >= {"payment"}  # events posted
    rate = _rate(13, "EUR", "USD", 0, "1.085")
    _add(out, shard.settle([RateEnvelope("fx/0", 0, 14 * SECOND_US, [rate]),
                            RateEnvelope("fx/1", 0, 14 * SECOND_US, []),
                            envelope("a", 14 * SECOND_US, [])]))  # fmt: skip
    (batch,) = out.batch_table().to_pylist()
    assert batch["status"] == "settled" and not shard.awaiting
    assert batch["closed_us"] == 10 * SECOND_US and batch["settled_us"] == 13 * SECOND_US
    assert batch["fx_rate_e12"] == parse_rate("1.085") and batch["settlement_currency"] == "USD"
    converted = (10_000_000 - batch["fees_micros"]) * parse_rate("1.085") // RATE_SCALE
    assert batch["fx_converted_micros"] == converted
    assert batch["payout_micros"] == (converted - converted * 25 // 10_000) // 10_000 * 10_000
    entries = out.entry_table().to_pylist()
    late = [e for e in entries if e["kind"].startswith("fx") or e["kind"] == "payout"]
    assert late and {e["posted_us"] for e in late} == {13 * SECOND_US}
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        sums[(entry["batch_id"], entry["currency"])] += entry["amount_micros"]
    assert set(sums.values()) == {0}
    assert len({e["entry_id"] for e in entries}) == len(entries)


def test_past_its_wait_a_batch_shows_awaiting_rate_then_settles_when_the_rate_comes():
    shard = _shard()
    out = Settled()
    pay = payment("e1", occurred_us=2 * SECOND_US, payee_id="m2", currency="EUR", amount_micros=3_000_000)  # fmt: skip
    _add(out, shard.settle([envelope("a", 30 * SECOND_US, [pay]),
                            RateEnvelope("fx/0", 0, 30 * SECOND_US, []),
                            RateEnvelope("fx/1", 0, 30 * SECOND_US, [])]))  # fmt: skip
    (waiting,) = out.batch_table().to_pylist()
    assert waiting["status"] == "awaiting_rate" and waiting["settled_us"] is None
    assert waiting["payout_micros"] == 0 and out.payout_table().num_rows == 0
    # a rate that does not cover the event (as of after it) settles nothing
    too_new = _rate(31, "EUR", "JPY", 3, "160.5")
    _add(out, shard.settle([RateEnvelope("fx/1", 0, 32 * SECOND_US, [too_new]),
                            RateEnvelope("fx/0", 0, 32 * SECOND_US, []),
                            envelope("a", 32 * SECOND_US, [])]))  # fmt: skip
    assert len(shard.awaiting) == 1 and out.batch_table().num_rows == 1
    covering = _rate(40, "EUR", "JPY", 1, "161")
    _add(out, shard.settle([RateEnvelope("fx/1", 0, 41 * SECOND_US, [covering]),
                            RateEnvelope("fx/0", 0, 41 * SECOND_US, []),
                            envelope("a", 41 * SECOND_US, [])]))  # fmt: skip
    first, settled = out.batch_table().to_pylist()
    assert first == waiting and not shard.awaiting
    assert settled["batch_id"] == waiting["batch_id"] and settled["status"] == "settled"
    assert settled["settled_us"] == 40 * SECOND_US and settled["fx_rate_e12"] == parse_rate("161")
    assert settled["payout_micros"] % 1_000_000 == 0  # JPY: whole yen
    assert sum(line["amount_micros"] for line in out.payout_table().to_pylist()) == settled["payout_micros"]  # fmt: skip


def test_a_rate_read_before_the_frontier_passes_it_waits_its_turn():
    """A rate ingested after a window's close is not used for that window, even when
    its partition was read first: the window closes at 10 s, the rate came at 12 s."""
    shard = _shard()
    out = Settled()
    rate = _rate(12, "EUR", "USD", 0, "1.1")
    _add(out, shard.settle([RateEnvelope("fx/0", 0, 20 * SECOND_US, [rate]),
                            RateEnvelope("fx/1", 0, 20 * SECOND_US, [])]))  # fmt: skip
    pay = payment("e1", occurred_us=2 * SECOND_US, payee_id="m1", currency="EUR", amount_micros=5_000_000)  # fmt: skip
    _add(out, shard.settle([envelope("a", 20 * SECOND_US, [pay])]))
    (batch,) = out.batch_table().to_pylist()
    assert batch["status"] == "settled" and batch["settled_us"] == 12 * SECOND_US
    assert batch["closed_us"] == 10 * SECOND_US


# -- the same inputs, grouped and snapshotted differently, settle the same ---------------------

event_specs = st.tuples(
    st.sampled_from(["m1", "m2", "m3"]),
    st.sampled_from(["EUR", "USD", "JPY"]),
    st.integers(1, 50_000_000),
    st.integers(0, 59),  # occurred, s
)
rate_specs = st.tuples(
    st.sampled_from(["fx/0", "fx/1"]),
    st.integers(0, 90),  # ingested, s
    st.sampled_from([("EUR", "USD"), ("USD", "JPY"), ("EUR", "JPY")]),
    st.integers(0, 60),  # as of, s
    st.sampled_from(["1.085", "0.9", "151.25", "160.123456789012"]),
)


def _settle_all(
    events,
    rates,
    step_s: int,
    snapshot_at: int | None,
    ahead_s: int = 0,
    horizon_us=None,
    directory=(),
) -> Settled:
    """Feed events (ingested at their event time) and rates in steps of `step_s`
    seconds of watermark, each rate origin read `ahead_s` seconds ahead of the
    events; optionally snapshot and restore the shard after step `snapshot_at`."""
    shard = _shard(horizon_us=horizon_us)
    out = Settled()
    by_origin = defaultdict(list)
    for origin, ingest_s, (base, quote), as_of_s, text in rates:
        by_origin[origin].append(_rate(ingest_s, base, quote, as_of_s, text))
    for ingest_s, payee, currency in directory:
        by_origin["fx/1"].append(PayeeUpdate(ingest_s * SECOND_US, payee, currency))
    for updates in by_origin.values():
        updates.sort(key=lambda update: update.ingest_us)
    pays = sorted(
        (payment(f"e{number}", occurred_us=occurred_s * SECOND_US + number, payee_id=payee,
                 currency=currency, amount_micros=amount)
         for number, (payee, currency, amount, occurred_s) in enumerate(events))
        , key=lambda event: event.occurred_us)  # fmt: skip
    for step, end_s in enumerate(range(step_s, 100 + step_s, step_s)):
        end_us = end_s * SECOND_US
        start_us = end_us - step_s * SECOND_US
        envelopes = [envelope("a", end_us, [p for p in pays if start_us <= p.occurred_us < end_us])]
        for origin in ("fx/0", "fx/1"):
            low_us, high_us = (start_us + ahead_s * SECOND_US, end_us + ahead_s * SECOND_US)
            sent = [u for u in by_origin[origin] if low_us <= u.ingest_us < high_us]
            if step == 0:
                sent = [u for u in by_origin[origin] if u.ingest_us < high_us]
            envelopes.append(RateEnvelope(origin, 0, high_us, sent))
        _add(out, shard.settle(envelopes[::-1] if step % 2 else envelopes))
        if snapshot_at == step:
            shard = _shard(pickle.loads(pickle.dumps(shard.snapshot())), horizon_us)
    final = [envelope("a", WATERMARK_END_US, [])] + [
        RateEnvelope(origin, 0, WATERMARK_END_US, []) for origin in ("fx/0", "fx/1")
    ]
    _add(out, shard.settle(final))
    return out


def _outcome(out: Settled) -> tuple:
    batches = {}
    for batch_id, rows in _rows_by_batch(out).items():
        batches[batch_id] = rows[-1]  # the settled row of a batch that awaited
    return (
        batches,
        sorted(msgspec.json.encode(e).decode() for e in out.entry_table().to_pylist()),
        sorted(msgspec.json.encode(p).decode() for p in out.payout_table().to_pylist()),
        sorted(msgspec.json.encode(f).decode() for f in out.fx_table().to_pylist()),
    )


@settings(max_examples=40, deadline=None)
@given(
    events=st.lists(event_specs, min_size=1, max_size=12),
    rates=st.lists(rate_specs, max_size=8),
    step_s=st.sampled_from([1, 3, 7, 20]),
    snapshot_at=st.one_of(st.none(), st.integers(0, 6)),
    ahead_s=st.sampled_from([0, 4, 15]),
    horizon_s=st.sampled_from([None, 20]),
    directory=st.lists(
        st.tuples(
            st.integers(0, 90),
            st.sampled_from(["m1", "m3"]),
            st.sampled_from(["USD", "JPY", "EUR"]),
        ),
        max_size=3,
    ),
)
def test_batches_settle_the_same_however_rates_and_events_are_grouped(
    events, rates, step_s, snapshot_at, ahead_s, horizon_s, directory
):
    """One step a second against coarser steps (a rate partition read ahead of the
    events), with the shard snapshotted and restored in between: the same batches,
    postings, payouts and FX rows. And every batch balances per currency, settles at
    most once, never before its close, and pays only once settled."""
    horizon_us = None if horizon_s is None else horizon_s * SECOND_US
    reference = _outcome(_settle_all(events, rates, 1, None, 0, horizon_us, directory))
    again = _settle_all(events, rates, step_s, snapshot_at, ahead_s, horizon_us, directory)
    assert _outcome(again) == reference
    batches, entries, payouts, _ = reference
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for text in entries:
        entry = msgspec.json.decode(text)
        sums[(entry["batch_id"], entry["currency"])] += entry["amount_micros"]
    assert set(sums.values()) <= {0}
    paid: dict[str, int] = defaultdict(int)
    for text in payouts:
        line = msgspec.json.decode(text)
        paid[line["batch_id"]] += line["amount_micros"]
    for batch in batches.values():
        if batch["status"] == "awaiting_rate":
            assert batch["settled_us"] is None and paid[batch["batch_id"]] == 0
        else:
            assert batch["settled_us"] >= batch["closed_us"]
            assert paid[batch["batch_id"]] == batch["payout_micros"]


def test_rates_past_the_horizon_are_forgotten_and_an_event_before_them_awaits_a_rate():
    shard = _shard(horizon_us=20 * SECOND_US)
    out = Settled()
    rates = [_rate(second, "EUR", "USD", second, f"1.0{second:02d}") for second in range(0, 60, 5)]
    _add(out, shard.settle([RateEnvelope("fx/0", 0, 60 * SECOND_US, rates),
                            RateEnvelope("fx/1", 0, 60 * SECOND_US, []),
                            envelope("a", 0, [])]))  # fmt: skip
    _add(out, shard.settle([envelope("a", 60 * SECOND_US, [])]))
    series = shard.fx.rates.series("EUR", "USD")
    # at 55 s the cut is 35 s: the rate in force then (as of 35 s) and those after it
    assert series.as_of_us == [35 * SECOND_US, 40 * SECOND_US, 45 * SECOND_US, 50 * SECOND_US, 55 * SECOND_US]  # fmt: skip
    assert [u.as_of_us for u in shard.rates_applied] == series.as_of_us
    old = payment("old", occurred_us=12 * SECOND_US, ingest_us=61 * SECOND_US, payee_id="m1", currency="EUR")  # fmt: skip
    new = payment("new", occurred_us=36 * SECOND_US, ingest_us=81 * SECOND_US, payee_id="m1", currency="EUR")  # fmt: skip
    _add(out, shard.settle([envelope("a", 80 * SECOND_US, [old]), RateEnvelope("fx/0", 0, 80 * SECOND_US, []),
                            RateEnvelope("fx/1", 0, 80 * SECOND_US, [])]))  # fmt: skip
    (waiting,) = out.batch_table().to_pylist()
    assert waiting["status"] == "awaiting_rate"  # never the later rate of 35 s
    _add(out, shard.settle([envelope("a", 100 * SECOND_US, [new]), RateEnvelope("fx/0", 0, 100 * SECOND_US, []),
                            RateEnvelope("fx/1", 0, 100 * SECOND_US, [])]))  # fmt: skip
    converted = [b for b in out.batch_table().to_pylist() if b["status"] == "settled"]
    assert [b["fx_rate_e12"] for b in converted] == [parse_rate("1.035")]


def test_a_directory_entry_from_the_topic_holds_from_its_ingestion_on():
    """m3 settles in its events' currency until an entry ingested at 15 s makes it USD:
    its window closing at 10 s stays EUR, the one closing at 20 s converts; a batch
    awaiting its rate converts into the currency of its close, not a later one."""
    shard = _shard()
    out = Settled()
    first = payment("e1", occurred_us=2 * SECOND_US, payee_id="m3", currency="EUR", amount_micros=4_000_000)  # fmt: skip
    second = payment("e2", occurred_us=12 * SECOND_US, payee_id="m3", currency="EUR", amount_micros=4_000_000)  # fmt: skip
    waits = payment("e3", occurred_us=13 * SECOND_US, payee_id="m1", currency="JPY", amount_micros=900_000_000)  # fmt: skip
    updates = [
        PayeeUpdate(15 * SECOND_US, "m3", "USD"),
        _rate(15, "EUR", "USD", 0, "1.1"),
        PayeeUpdate(25 * SECOND_US, "m1", "EUR"),  # after m1's batch closed in USD
        _rate(30, "USD", "JPY", 0, "150"),
    ]
    _add(out, shard.settle([envelope("a", 40 * SECOND_US, [first, second, waits]),
                            RateEnvelope("fx/0", 0, 40 * SECOND_US, updates),
                            RateEnvelope("fx/1", 0, 40 * SECOND_US, [])]))  # fmt: skip
    rows = {(b["payee_id"], b["window_start_us"]): b for b in out.batch_table().to_pylist()}
    assert rows[("m3", 0)]["settlement_currency"] == "EUR" and rows[("m3", 0)]["fx_converted_micros"] is None  # fmt: skip
    assert rows[("m3", WINDOW_US)]["settlement_currency"] == "USD"
    assert rows[("m3", WINDOW_US)]["fx_rate_e12"] == parse_rate("1.1")
    late = rows[("m1", WINDOW_US)]
    assert late["settlement_currency"] == "USD" and late["settled_us"] == 30 * SECOND_US
    assert late["fx_rate_e12"] == 6_666_666_667  # 1 / 150, half-even, 12 places
    assert shard.fx.payees == {**DIRECTORY, "m3": "USD", "m1": "EUR"}


def test_bad_directory_messages_are_dead_letters_with_a_reason():
    values = [
        b'{"payee_id": "m9", "settlement_currency": "GBP"}',
        b'{"payee_id": "m9", "settlement_currency": "XYZ"}',
        b'{"payee_id": "", "settlement_currency": "GBP"}',
        b'{"payee_id": "m9"}',
        b"[",
    ]
    entries, dead = decode_payee_messages([f"payees/0/{n}" for n in range(5)], [7] * 5, values)
    assert entries == [PayeeUpdate(7, "m9", "GBP")]
    assert [(d.source, d.reason) for d in dead] == [
        ("payees/0/1", "unknown_currency"),
        ("payees/0/2", "invalid_field"),
        ("payees/0/3", "missing_field"),
        ("payees/0/4", "invalid_json"),
    ]


def test_bad_rate_messages_are_dead_letters_with_a_reason_and_their_bytes():
    good = b'{"base":"EUR","quote":"USD","rate":"1.08","as_of":"2026-01-01T00:00:00Z"}'
    bad = {
        b'{"base":"EUR","quote":"USD","rate":"0","as_of":"2026-01-01T00:00:00Z"}': "invalid_rate",
        b'{"base":"EUR","quote":"USD","rate":"-1.2","as_of":"2026-01-01T00:00:00Z"}': "invalid_rate",
        b'{"base":"EUR","quote":"USD","rate":1.2,"as_of":"2026-01-01T00:00:00Z"}': "invalid_field",
        b'{"base":"EUR","quote":"XYZ","rate":"1","as_of":"2026-01-01T00:00:00Z"}': "unknown_currency",
        b'{"base":"EUR","quote":"USD","rate":"1","as_of":"yesterday"}': "invalid_timestamp",
        b'{"base":"EUR","quote":"USD","rate":"1"}': "missing_field",
        b"not json": "invalid_json",
        b" " * (64 * 1024 + 1): "oversize",
    }
    values = [good, *bad]
    rates, dead = decode_rate_messages(
        [f"fx-rates/0/{n}" for n in range(len(values))], list(range(len(values))), values
    )
    assert rates == [RateUpdate(0, "EUR", "USD", 1_767_225_600_000_000, parse_rate("1.08"))]
    assert [(d.source, d.reason, d.raw) for d in dead] == [
        (f"fx-rates/0/{n}", reason, raw) for n, (raw, reason) in enumerate(bad.items(), 1)
    ]


# -- end to end: a run from Kafka reads the rates topic ----------------------------------------

T0_MS = 1_793_613_600_000  # 2026-11-02T10:00:00Z


def _at(second: int) -> str:
    return f"2026-11-02T10:{second // 60:02d}:{second % 60:02d}Z"


def _pay(event_id: str, second: int, payee: str, currency: str, amount: str) -> bytes:
    return json.dumps(
        {"event_id": event_id, "type": "payment", "occurred_at": _at(second), "payer_id": f"p-{event_id}",
         "payee_id": payee, "amount": amount, "currency": currency, "rail": "wallet", "country": "DE"}
    ).encode()  # fmt: skip


@pytest.mark.kafka
def test_a_kafka_run_converts_with_rates_from_the_topic_and_settles_a_batch_when_its_rate_comes(
    kafka_bootstrap, fresh_topic, tmp_path
):
    """10-second windows, a 5-second rate wait. m1 settles in USD: its EUR batch of
    10:00:00-10:00:10 closes at 10 s with no rate, shows awaiting_rate past 15 s, and
    settles when the EUR/USD rate (as of 10:00:00) is ingested at 25 s. m3 settles in
    USD until a directory entry on the payees topic, ingested at 30 s, makes it EUR.
    Bad rate and directory messages are dead letters; the loaded table keeps the
    settled row."""
    topic = fresh_topic(partitions=1)
    rates_topic = fresh_topic(partitions=1, prefix="rates")
    payees_topic = fresh_topic(partitions=2, prefix="payees")
    producer = Producer(client_config(kafka_bootstrap))
    for second, value in [
        (2, _pay("x1", 2, "m1", "EUR", "10.00")),
        (3, _pay("x2", 3, "m3", "USD", "5.00")),
        (40, _pay("x3", 40, "m3", "USD", "1.00")),
    ]:
        producer.produce(topic, value, timestamp=T0_MS + second * 1000)
    for second, rate in [(1, "-1"), (25, "1.085"), (45, "1.09")]:
        line = {"base": "EUR", "quote": "USD", "rate": rate, "as_of": _at(0 if second < 45 else 44)}
        producer.produce(rates_topic, json.dumps(line).encode(), timestamp=T0_MS + second * 1000)
    for second, entry, partition in [
        (5, {"payee_id": "m3", "settlement_currency": "???"}, 0),
        (30, {"payee_id": "m3", "settlement_currency": "EUR"}, 1),
    ]:
        producer.produce(payees_topic, json.dumps(entry).encode(), partition=partition,
                         timestamp=T0_MS + second * 1000)  # fmt: skip
    producer.flush(10)
    payees = tmp_path / "payees.jsonl"
    payees.write_text('{"payee_id": "m1", "settlement_currency": "USD"}\n')
    config = tmp_path / "centflow.toml"
    config.write_text("[fx]\nrate_wait_s = 5\n")
    out = tmp_path / "out"
    run = centflow(
        "run", "--kafka", kafka_bootstrap, "--topic", topic, "--dlq-topic", f"{topic}.dlq",
        "--decisions-topic", f"{topic}.decisions", "--fx-rates-topic", rates_topic,
        "--payee-directory", str(payees), "--payee-directory-topic", payees_topic,
        "--config", str(config), "--out", str(out),
        "--window-s", "10", "--lateness-s", "0", "--until-idle", "--idle-s", "1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    with duckdb.connect(str(out / "centflow.duckdb"), read_only=True) as db:
        [(status, net, rate, converted, closed, settled, payout)] = db.execute(
            "SELECT status, net, fx_rate, fx_converted, epoch(closed_at), epoch(settled_at), payout"
            " FROM settlement_batches WHERE payee_id = 'm1'"
        ).fetchall()
        assert status == "settled" and rate == Decimal("1.085")
        assert converted == (net * Decimal("1.085")).quantize(Decimal("0.000001"), ROUND_DOWN)
        assert (closed, settled) == (T0_MS / 1000 + 10, T0_MS / 1000 + 25)
        assert payout > 0
        assert db.execute(
            "SELECT reason, source FROM dead_letters WHERE source NOT LIKE ? ORDER BY source",
            [f"{topic}/%"],
        ).fetchall() == [
            ("unknown_currency", f"{payees_topic}/0/0"),
            ("invalid_rate", f"{rates_topic}/0/0"),
        ]
        assert db.execute(
            "SELECT epoch(window_start) - ?, settlement_currency, fx_rate FROM settlement_batches"
            " WHERE payee_id = 'm3' ORDER BY window_start",
            [T0_MS / 1000],
        ).fetchall() == [
            (0, "USD", Decimal(1)),
            (40, "EUR", Decimal("0.921658986175")),
        ]  # 1 / 1.085
        assert db.execute("SELECT count(*) FROM recon_ledger_balance WHERE NOT balanced").fetchall() == [(0,)]  # fmt: skip
    rows = pq.read_table(out / "parquet" / "settlement_batches").to_pylist()
    assert sorted(row["status"] for row in rows if row["payee_id"] == "m1") == ["awaiting_rate", "settled"]  # fmt: skip
