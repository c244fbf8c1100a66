"""The analyst tables: their columns, and records turned into rows.

This module and ``schemas/tables.sql`` describe the same tables; a test checks
that they agree column for column. Rows are plain tuples in column order
(cheap to build, and `sinks.parquet` turns lists of them into Arrow columns);
the big tables, ``payments`` and ``ledger_entries``, are made a column at a
time as Arrow tables (`payments_table`, `centflow.money.ledger`). In both forms,
money is ``int`` micro-units and time is ``int`` µs since the epoch; the sinks
turn them into DECIMAL(18,6) and TIMESTAMPTZ.
"""

from __future__ import annotations

import pyarrow as pa

from centflow.ingest.events import DeadLetter

# Logical column types: text, money (DECIMAL(18,6)), rate (DECIMAL(18,12)),
# timestamp (µs, UTC), integer, boolean, double (never money), bytes.
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "payments": (
        ("event_id", "text"),
        ("type", "text"),
        ("occurred_at", "timestamp"),
        ("ingested_at", "timestamp"),
        ("payer_id", "text"),
        ("payee_id", "text"),
        ("amount", "money"),
        ("currency", "text"),
        ("rail", "text"),
        ("country", "text"),
        ("ref_event_id", "text"),
        ("risk_score", "double"),
        ("decision", "text"),
        ("model_version", "text"),
        ("risk_reasons", "text"),
        ("batch_id", "text"),
        ("late", "boolean"),
        ("device_id", "text"),
        ("ip", "text"),
        ("source", "text"),
        ("review_outcome", "text"),
        ("resolved_at", "timestamp"),
        ("review_note", "text"),
    ),
    "settlement_batches": (
        ("batch_id", "text"),
        ("payee_id", "text"),
        ("currency", "text"),
        ("window_start", "timestamp"),
        ("window_end", "timestamp"),
        ("part", "integer"),
        ("event_count", "integer"),
        ("late_count", "integer"),
        ("gross", "money"),
        ("refunds", "money"),
        ("fees", "money"),
        ("net", "money"),
        ("settlement_currency", "text"),
        ("fx_rate", "rate"),
        ("payout", "money"),
        ("carry_in", "money"),
        ("carry_out", "money"),
        ("closed_at", "timestamp"),
        ("status", "text"),
        ("fx_converted", "money"),
        ("fx_spread", "money"),
        ("settled_at", "timestamp"),
    ),
    "settlement_fx": (
        ("batch_id", "text"),
        ("base", "text"),
        ("quote", "text"),
        ("rate", "rate"),
        ("as_of", "timestamp"),
        ("events", "integer"),
        ("amount", "money"),
    ),
    "settlement_fees": (
        ("batch_id", "text"),
        ("rail", "text"),
        ("currency", "text"),
        ("payments", "integer"),
        ("gross", "money"),
        ("fee", "money"),
        ("chargebacks", "integer"),
        ("chargeback_fees", "money"),
        ("rail_cost", "money"),
        ("margin", "money"),
        ("fees_if_alone", "money"),
        ("unpayable_alone", "integer"),
    ),
    "settlement_payouts": (
        ("batch_id", "text"),
        ("party_id", "text"),
        ("currency", "text"),
        ("amount", "money"),
    ),
    "ledger_entries": (
        ("entry_id", "text"),
        ("batch_id", "text"),
        ("event_id", "text"),
        ("kind", "text"),
        ("account", "text"),
        ("currency", "text"),
        ("amount", "money"),
        ("posted_at", "timestamp"),
    ),
    "dead_letters": (
        ("source", "text"),
        ("reason", "text"),
        ("detail", "text"),
        ("raw", "bytes"),
        ("received_at", "timestamp"),
    ),
}

#: The column(s) that identify a row: idempotent loads keep one row per key.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "payments": ("event_id", "source"),  # an id repeats only as `recon_event_repeats` shows
    "settlement_batches": ("batch_id",),
    "settlement_fees": ("batch_id", "rail"),
    "settlement_payouts": ("batch_id", "party_id"),
    "settlement_fx": ("batch_id", "as_of"),
    "ledger_entries": ("entry_id",),
    "dead_letters": ("source",),
}


_PAYMENT_COLUMNS = (
    "event_id", "type", "occurred_us", "ingest_us", "payer_id", "payee_id", "amount_micros",
    "currency", "rail", "country", "ref_event_id", "risk_score", "decision", "model_version",
    "reasons", "batch_id", "late", "device_id", "ip", "source", "review_outcome", "resolved_us",
    "review_note",
)  # fmt: skip


def payments_table(events: pa.Table | pa.RecordBatch) -> pa.Table:
    """``payments`` rows from settled events (`centflow.money.batches.SETTLED_SCHEMA`),
    a column at a time: the table's columns in order, money and time still int64."""
    return pa.table(
        [events[name] for name in _PAYMENT_COLUMNS],
        names=[name for name, _ in TABLES["payments"]],
    )


def dead_letter_row(letter: DeadLetter) -> tuple:
    """A `dead_letters` row."""
    return (letter.source, letter.reason, letter.detail, letter.raw, letter.received_us)
