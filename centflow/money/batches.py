"""What settlement keeps and emits: a window's event columns, batch rows, payout
lines, batch ids, and `Settled`, the output of one settlement step.

`centflow.money.settlement` windows events and decides when a window closes;
`centflow.money.netting` nets a closed window into these rows. Batch ids are a
hash of (payee, currency, window start, window length, part), so sinks can be
idempotent.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
from decimal import Decimal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import invariant
from centflow.ingest.columns import PAYMENT_SCHEMA
from centflow.money.fees import FEES_SCHEMA
from centflow.money.fx import FX_SCHEMA, RATE_SCALE
from centflow.money.ledger import (
    LEDGER_SCHEMA,
)

#: The columns a window keeps: the raw bytes are gone after admission, and the
#: producer's risk signals after the decision.
#: A payment held for review carries its resolution (`centflow.risk.review`):
#: ``review_outcome`` (null unless decided ``review``), ``resolved_us``, ``review_note``.
REVIEW_FIELDS = [
    pa.field("review_outcome", pa.string()),
    pa.field("resolved_us", pa.int64()),
    pa.field("review_note", pa.string()),
]
_INPUT_COLUMNS = [name for name in PAYMENT_SCHEMA.names if name not in ("raw", "risk_signals")]
WINDOW_SCHEMA = pa.schema(
    [*(field for field in PAYMENT_SCHEMA if field.name in _INPUT_COLUMNS), *REVIEW_FIELDS]
)
WINDOW_COLUMNS = WINDOW_SCHEMA.names
LATE_COLUMN = WINDOW_SCHEMA.get_field_index("late")
EMPTY_WINDOW = pa.RecordBatch.from_pylist([], schema=WINDOW_SCHEMA)

#: ``settlement_payouts`` in flight: one line per party of a batch that pays out.
PAYOUT_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("party_id", pa.string()),
        ("currency", pa.string()),
        ("amount_micros", pa.int64()),
    ]
)

#: What settlement emits per event: the event's columns plus the batch it settled in.
SETTLED_SCHEMA = WINDOW_SCHEMA.append(pa.field("batch_id", pa.string()))
"""An event emitted by settlement: `WINDOW_SCHEMA` and its batch (null: no batch, yet)."""


def close_time_us(index: int, window_us: int, lateness_us: int) -> int:
    """The frontier at which window `index` closes."""
    return (index + 1) * window_us + lateness_us


def batch_id_for(
    payee_id: str, currency: str, window_start_us: int, window_us: int, part: int
) -> str:
    """Deterministic batch id: same window, same id, in every run.

    >>> batch_id_for("m1", "USD", 0, 60_000_000, 0)
    'b-4f9556c22ea547d8b8c4'
    """
    text = f"{payee_id}\x1f{currency}\x1f{window_start_us}\x1f{window_us}\x1f{part}"
    return "b-" + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


_BATCH_ID_DIGEST = functools.partial(hashlib.blake2b, digest_size=10)
_BATCH_ID_WIDTH = 22  # "b-" and 20 hex digits


def batch_ids_for(
    payees: pa.Array, currencies: pa.Array, window_start_us: int, window_us: int, parts: np.ndarray
) -> pa.Array:
    """`batch_id_for` of every batch of a window, as one string array: the hashed texts
    are joined by Arrow and the digests hexed in one call, so Python runs only the
    hash itself once per batch."""
    count = len(payees)
    invariant(len(currencies) == count == len(parts), "batch id columns misaligned")
    if not count:
        return pa.array([], pa.string())
    if parts.any():
        tails = pa.array([f"{window_start_us}\x1f{window_us}\x1f{part}" for part in parts.tolist()], pa.string())  # fmt: skip
    else:
        tails = pa.scalar(f"{window_start_us}\x1f{window_us}\x1f0")
    texts = pc.binary_join_element_wise(payees, currencies, tails, "\x1f").cast(pa.binary())
    digests = b"".join(map(hashlib.blake2b.digest, map(_BATCH_ID_DIGEST, texts.to_pylist())))
    characters = np.empty((count, _BATCH_ID_WIDTH), np.uint8)
    characters[:, :2] = np.frombuffer(b"b-", np.uint8)
    characters[:, 2:] = np.frombuffer(binascii.hexlify(digests), np.uint8).reshape(count, -1)
    offsets = np.arange(0, (count + 1) * _BATCH_ID_WIDTH, _BATCH_ID_WIDTH, dtype=np.int32)
    ids = pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(characters))
    first = batch_id_for(payees[0].as_py(), currencies[0].as_py(), window_start_us, window_us, int(parts[0]))  # fmt: skip
    invariant(ids[0].as_py() == first, "batch ids of a window differ from batch_id_for")
    return ids


class Batch(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """One settlement batch, the netted result of one window (or part of it)."""

    batch_id: str
    payee_id: str
    currency: str
    window_start_us: int
    window_end_us: int
    part: int
    event_count: int
    late_count: int
    gross_micros: int
    refunds_micros: int
    fees_micros: int
    net_micros: int
    settlement_currency: str
    fx_rate: Decimal | None
    payout_micros: int
    carry_in_micros: int
    carry_out_micros: int
    closed_us: int
    status: str = "settled"
    fx_converted_micros: int | None = None
    fx_spread_micros: int | None = None
    settled_us: int | None = None  #: when its payout posted (null: not yet)


BATCH_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("payee_id", pa.string()),
        ("currency", pa.string()),
        ("window_start_us", pa.int64()),
        ("window_end_us", pa.int64()),
        ("part", pa.int64()),
        ("event_count", pa.int64()),
        ("late_count", pa.int64()),
        ("gross_micros", pa.int64()),
        ("refunds_micros", pa.int64()),
        ("fees_micros", pa.int64()),
        ("net_micros", pa.int64()),
        ("settlement_currency", pa.string()),
        ("fx_rate_e12", pa.int64()),
        ("payout_micros", pa.int64()),
        ("carry_in_micros", pa.int64()),
        ("carry_out_micros", pa.int64()),
        ("closed_us", pa.int64()),
        ("status", pa.string()),
        ("fx_converted_micros", pa.int64()),
        ("fx_spread_micros", pa.int64()),
        ("settled_us", pa.int64()),
    ]
)
"""Batches in flight: the columns of ``settlement_batches``, money, rates (10⁻¹²) and time
as int64."""


class Settled:
    """What one settlement step emits: closed batches, every event that settled or
    will settle in no batch (`SETTLED_SCHEMA`, ``batch_id`` null for those), the
    ledger postings (`centflow.money.ledger.LEDGER_SCHEMA`), and the events whose
    review was resolved in the step (for ``payments.decisions``)."""

    __slots__ = ("batches", "entries", "events", "fees", "fx", "payouts", "resolved")

    def __init__(self) -> None:
        self.batches: list[pa.Table] = []
        self.events: list[pa.RecordBatch] = []
        self.resolved: list[pa.RecordBatch] = []  # WINDOW_SCHEMA: events resolved this step
        self.entries: list[pa.Table] = []
        self.fees: list[pa.Table] = []  # FEES_SCHEMA: per batch and rail
        self.payouts: list[pa.Table] = []  # PAYOUT_SCHEMA: per batch and party
        self.fx: list[pa.Table] = []  # FX_SCHEMA: per converted batch and rate used

    @property
    def event_count(self) -> int:
        """How many events this step emitted."""
        return sum(batch.num_rows for batch in self.events)

    def event_table(self) -> pa.Table:
        """Every emitted event as one table."""
        return pa.Table.from_batches(self.events, schema=SETTLED_SCHEMA)

    def batch_table(self) -> pa.Table:
        """Every closed batch as one table (`BATCH_SCHEMA`)."""
        return pa.concat_tables([BATCH_SCHEMA.empty_table(), *self.batches])

    def batch_records(self) -> list[Batch]:
        """The closed batches as records."""
        return [
            Batch(
                **{
                    **row,
                    "fx_rate": None
                    if row["fx_rate"] is None
                    else Decimal(row["fx_rate"]) / RATE_SCALE,
                }
            )
            for row in self.batch_table()
            .rename_columns([*BATCH_SCHEMA.names[:13], "fx_rate", *BATCH_SCHEMA.names[14:]])
            .to_pylist()
        ]

    def entry_table(self) -> pa.Table:
        """Every posting as one table."""
        return pa.concat_tables([LEDGER_SCHEMA.empty_table(), *self.entries])

    def fee_table(self) -> pa.Table:
        """Every (batch, rail) fee row as one table (`FEES_SCHEMA`)."""
        return pa.concat_tables([FEES_SCHEMA.empty_table(), *self.fees])

    def fx_table(self) -> pa.Table:
        """Every (batch, rate) FX row as one table (`centflow.money.fx.FX_SCHEMA`)."""
        return pa.concat_tables([FX_SCHEMA.empty_table(), *self.fx])

    def payout_table(self) -> pa.Table:
        """Every payout line as one table (`PAYOUT_SCHEMA`)."""
        return pa.concat_tables([PAYOUT_SCHEMA.empty_table(), *self.payouts])


def window_columns(events: pa.RecordBatch) -> pa.RecordBatch:
    """A decided block in `WINDOW_SCHEMA`: no raw bytes or signals, review columns null."""
    count = events.num_rows
    return pa.RecordBatch.from_arrays(
        [
            *(events.column(name) for name in _INPUT_COLUMNS),
            *(pa.nulls(count, field.type) for field in REVIEW_FIELDS),
        ],
        schema=WINDOW_SCHEMA,
    )
