"""The dataflow itself, in process on TestingSource: every input lands in exactly one output,
bad input never changes a total, and results do not depend on how partitions interleave."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pyarrow.parquet as pq
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from centflow.config import PipelineConfig
from centflow.ingest.events import RawMessage, SourceBatch
from centflow.limits import WATERMARK_END_US
from dataflows.pipeline import build_flow
from tests.factories import SECOND_US

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BAD_MESSAGES = [b"{not json", b"[1, 2]", b'{"event_id": "x"}', b"\xff\xfe", b'{"amount": 1}']


def _event(
    event_id: str,
    occurred_us: int,
    payee: str,
    amount: str,
    currency: str,
    kind: str = "payment",
    ref: str | None = None,
) -> bytes:
    from centflow.ingest.timeparse import format_us

    body = {
        "event_id": event_id,
        "type": kind,
        "occurred_at": format_us(occurred_us),
        "payer_id": "payer-1",
        "payee_id": payee,
        "amount": amount,
        "currency": currency,
        "rail": "card",
        "country": "DE",
    }
    if ref:
        body["ref_event_id"] = ref
    return msgspec.json.encode(body)


def _run(partitions: dict[str, list[tuple[int, bytes]]], order_seed: int, chunk: int) -> list:
    """Run the flow over partitions interleaved by `order_seed`; return every output row
    as ``(writer, (table, rows))``: the dead letters from the sink, the settled tables
    from the Parquet files the settlement step wrote."""
    batches = []
    cursors = dict.fromkeys(partitions, 0)
    rng = random.Random(order_seed)
    live = list(partitions)
    while live:
        name = rng.choice(live)
        part = partitions[name][cursors[name] : cursors[name] + chunk]
        cursors[name] += len(part)
        messages = [
            RawMessage(f"{name}/{cursors[name] - len(part) + index}", at, raw)
            for index, (at, raw) in enumerate(part)
        ]
        watermark = max((at for at, _ in part), default=0)
        batches.append(SourceBatch(name, messages, watermark))
        if cursors[name] >= len(partitions[name]):
            batches.append(SourceBatch(name, [], WATERMARK_END_US))
            live.remove(name)
    with tempfile.TemporaryDirectory() as out_dir:
        config = PipelineConfig(
            out_dir=out_dir,
            partitions=tuple(partitions),
            replay_path="unused",
            window_length_s=10,
            lateness_s=2,
        )
        out: list = []
        run_main(build_flow(config, TestingSource(batches), TestingSink(out)))
        for table in ("payments", "settlement_batches", "ledger_entries"):
            for path in sorted((config.parquet_dir / table).glob("*.parquet")):
                out.append(
                    ("file", (table, [_micros_row(row) for row in pq.read_table(path).to_pylist()]))
                )
    return out


def _micros_row(row: dict) -> tuple:
    """A Parquet row back in the row convention: money as micro-units, time as µs."""
    values = []
    for value in row.values():
        if isinstance(value, Decimal) and value.as_tuple().exponent == -6:
            value = int(value.scaleb(6))
        elif isinstance(value, datetime):
            value = (value - EPOCH) // timedelta(microseconds=1)
        values.append(value)
    return tuple(values)


def _tables(rows: list) -> dict[str, Counter]:
    tables: dict[str, Counter] = {}
    for _, (table, table_rows) in rows:
        for row in table_rows:
            if table == "payments":
                row = row[:-1]  # drop the source position
            if table == "dead_letters":
                row = row[1:]
            tables.setdefault(table, Counter())[row] += 1
    return tables


partition_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 30),
        st.sampled_from(["m1", "m2"]),
        st.sampled_from(["USD", "JPY"]),
        st.integers(1, 999),
    ),
    min_size=1,
    max_size=12,
)


def _build(raw_partitions, with_bad: bool, rng_seed: int) -> dict[str, list[tuple[int, bytes]]]:
    rng = random.Random(rng_seed)
    partitions = {}
    serial = 0
    for number, events in enumerate(raw_partitions):
        clock_s = 100
        messages = []
        for advance_s, behind_s, payee, currency, amount in events:
            clock_s += advance_s
            occurred_us = max(clock_s - behind_s, 1) * SECOND_US
            messages.append(
                (
                    clock_s * SECOND_US,
                    _event(f"e{serial}", occurred_us, payee, str(amount), currency),
                )
            )
            if with_bad and rng.random() < 0.5:
                messages.append((clock_s * SECOND_US, rng.choice(BAD_MESSAGES)))
            if rng.random() < 0.3:  # a producer retry: the same bytes again
                messages.append((clock_s * SECOND_US, messages[-1][1]))
            serial += 1
        partitions[f"topic/{number}"] = messages
    return partitions


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.lists(partition_strategy, min_size=1, max_size=3),
    seed=st.integers(0, 10**6),
    chunk=st.integers(1, 4),
)
def test_bad_input_and_interleaving_change_no_total(raw, seed, chunk):
    clean = _tables(_run(_build(raw, with_bad=False, rng_seed=seed), order_seed=0, chunk=100))
    noisy_partitions = _build(raw, with_bad=True, rng_seed=seed)
    noisy = _tables(_run(noisy_partitions, order_seed=seed, chunk=chunk))
    for table in ("settlement_batches", "ledger_entries"):
        assert noisy.get(table) == clean.get(table), table
    # every input message lands in exactly one output: a payment row or a dead letter
    inputs = sum(len(messages) for messages in noisy_partitions.values())
    outputs = sum(noisy.get("payments", Counter()).values()) + sum(
        noisy.get("dead_letters", Counter()).values()
    )
    assert outputs == inputs
    # the ledger balances per currency, and batches equal their events
    balance: Counter = Counter()
    for row, count in noisy.get("ledger_entries", Counter()).items():
        balance[row[5]] += row[6] * count
    assert all(total == 0 for total in balance.values())
    gross_by_batch: Counter = Counter()
    for row, count in noisy.get("payments", Counter()).items():
        gross_by_batch[row[15]] += row[6] * count
    for row in noisy.get("settlement_batches", Counter()):
        assert row[8] == gross_by_batch[row[0]]


def test_refund_nets_against_its_payment_and_unknown_reference_is_dead_lettered():
    partitions = {
        "topic/0": [
            (1 * SECOND_US, _event("pay", 1 * SECOND_US, "m1", "10.00", "EUR")),
            (
                2 * SECOND_US,
                _event("ref", 2 * SECOND_US, "m1", "2.50", "EUR", kind="refund", ref="pay"),
            ),
            (
                3 * SECOND_US,
                _event(
                    "orphan",
                    3 * SECOND_US,
                    "m1",
                    "1.00",
                    "EUR",
                    kind="chargeback",
                    ref="never-seen",
                ),
            ),
        ]
    }
    tables = _tables(_run(partitions, order_seed=0, chunk=10))
    [batch] = tables["settlement_batches"]
    # gross, refunds, fees (the card schedule once for the batch: 0.30 + 2.9 % of
    # the 10.00 gross; the refund pays none), net
    assert (batch[8], batch[9], batch[10], batch[11]) == (
        10_000_000,
        2_500_000,
        590_000,
        6_910_000,
    )
    assert [row[0] for row in tables["dead_letters"]] == ["unknown_reference"]
