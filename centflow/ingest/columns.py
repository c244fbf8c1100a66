"""Payments in flight as Arrow record batches: the columnar form of `Payment`.

From decoding to the sinks, events travel in blocks of a few thousand, and the
work on them (window assignment, netting, ledger postings, table rows) is done
a column at a time by Arrow and NumPy rather than an event at a time in
Python. That is what makes the pipeline fast: per-event Python is confined to
decoding and the keyed state of admission. `Payment` remains the record of one
event, for the slow paths and for tests; `to_batch` and `to_payments` convert
between the two forms exactly.

Times are int64 µs since the epoch, amounts int64 micro-units (so no float ever
holds money); a column is null where the `Payment` field is None. ``reasons``
is the decision's reasons joined with ``;`` (null when there are none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from centflow.ingest.events import DeadLetter, Payment, Split

SPLIT_TYPE = pa.list_(pa.struct([("party_id", pa.string()), ("bps", pa.int64())]))
SIGNALS_TYPE = pa.map_(pa.string(), pa.float64())

PAYMENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("type", pa.string()),
        ("occurred_us", pa.int64()),
        ("ingest_us", pa.int64()),
        ("payer_id", pa.string()),
        ("payee_id", pa.string()),
        ("amount_micros", pa.int64()),
        ("currency", pa.string()),
        ("rail", pa.string()),
        ("country", pa.string()),
        ("source", pa.string()),
        ("raw", pa.binary()),
        ("ref_event_id", pa.string()),
        ("splits", SPLIT_TYPE),
        ("device_id", pa.string()),
        ("ip", pa.string()),
        ("risk_signals", SIGNALS_TYPE),
        ("decision", pa.string()),
        ("risk_score", pa.float64()),
        ("model_version", pa.string()),
        ("reasons", pa.string()),
        ("late", pa.bool_()),
    ]
)
"""The columns of a block of payments, in `Payment`'s field order."""

COLUMNS = tuple(PAYMENT_SCHEMA.names)


class Decoded:
    """A block of input after decoding: payments (a record batch), dead letters, and
    the input partition's watermark. Made by the decode step, or by a replay source
    itself (which decodes as it reads, see `centflow.ingest.replay.decode_log_block`)."""

    __slots__ = ("dead", "partition", "payments", "watermark_us")

    def __init__(
        self, partition: str, payments: pa.RecordBatch, dead: list[DeadLetter], watermark_us: int
    ) -> None:
        self.partition = partition
        self.payments = payments
        self.dead = dead
        self.watermark_us = watermark_us


def empty_batch() -> pa.RecordBatch:
    """A block with no payments."""
    return pa.RecordBatch.from_pylist([], schema=PAYMENT_SCHEMA)


def source_positions(prefix: str, numbers: pa.Array) -> pa.StringArray:
    """Source positions ``<prefix><number>`` of a column of integers (line numbers,
    Kafka offsets), built by Arrow rather than a string per message in Python.

    >>> source_positions("log:", pa.array([1, 22])).to_pylist()
    ['log:1', 'log:22']
    """
    return pc.binary_join_element_wise(prefix, pc.cast(numbers, pa.string()), "")


def concat(batches: Sequence[pa.RecordBatch]) -> pa.RecordBatch:
    """One block from several (a copy; no per-event work)."""
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return empty_batch()
    return (
        pa.Table.from_batches(batches, schema=PAYMENT_SCHEMA).combine_chunks().to_batches()[0]
        if sum(batch.num_rows for batch in batches)
        else empty_batch()
    )


def to_batch(events: Sequence[Payment]) -> pa.RecordBatch:
    """The columnar form of `events` (same order).

    >>> batch = to_batch([Payment("e1", "payment", 1, 2, "p", "m", 100, "USD", "card", "US", "f:1")])
    >>> batch.num_rows, batch.column("amount_micros").to_pylist()
    (1, [100])
    """
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for event in events:
        for name in COLUMNS:
            columns[name].append(getattr(event, name))
    columns["splits"] = [
        None if splits is None else [(split.party_id, split.bps) for split in splits]
        for splits in columns["splits"]
    ]
    columns["risk_signals"] = [
        None if signals is None else list(signals.items()) for signals in columns["risk_signals"]
    ]
    columns["reasons"] = [";".join(reasons) or None for reasons in columns["reasons"]]
    arrays = [pa.array(columns[field.name], type=field.type) for field in PAYMENT_SCHEMA]
    return pa.RecordBatch.from_arrays(arrays, schema=PAYMENT_SCHEMA)


def to_payments(batch: pa.RecordBatch) -> list[Payment]:
    """The `Payment` records of a block (same order)."""
    columns = {name: batch.column(name).to_pylist() for name in COLUMNS}
    events = []
    for index in range(batch.num_rows):
        values = {name: columns[name][index] for name in COLUMNS}
        splits = values["splits"]
        signals = values["risk_signals"]
        reasons = values["reasons"]
        values["splits"] = (
            None
            if splits is None
            else tuple(Split(split["party_id"], split["bps"]) for split in splits)
        )
        values["risk_signals"] = None if signals is None else dict(signals)
        values["reasons"] = tuple(reasons.split(";")) if reasons else ()
        values["late"] = bool(values["late"])
        values["raw"] = values["raw"] or b""  # admission drops the raw bytes of what it admits
        events.append(Payment(**values))
    return events
