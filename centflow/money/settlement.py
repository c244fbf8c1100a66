"""Settlement: event-time tumbling windows per (payee, currency), netted into batches.

Which window an event joins, and whether it is late, is decided from the
event alone: its event time against its ingestion time (see
`centflow.ingest.events`). With window length ``L`` and allowed lateness ``A``,
window ``k`` covers event times ``[kL, (k+1)L)`` and accepts events ingested
before ``(k+1)L + A``. An event ingested later than that is **late**: it is
never dropped, but joins the payee's next open batch, the window
``floor((ingest - A) / L)`` (the earliest window still open at its ingestion
time), marked ``late``.

A window closes once the shard's frontier (the minimum watermark over every
input partition, `centflow.progress`) reaches ``(k+1)L + A``: by then every
event that can join it has arrived, in whatever order the partitions were
read. So replay mode, Kafka mode, any number of workers and a crash followed
by a resume all give the same batches. When every input ends (``--until-idle``)
the frontier reaches the end and every open window closes; if more input
arrives in a later run, an event for a window closed that way joins the
payee's next batch after it, marked late.

Events in review. Only approved events are windowed. An event decided
``review`` is emitted at once with no batch (``review_outcome`` pending) and
held (`centflow.risk.review.ReviewBook`) until its payment's resolution comes
in on the ``reviews`` origin, which is part of the frontier: a released event
then joins window ``max(own window, release_window(resolved_at))``, marked
late unless that is its own; a declined one is emitted again with its outcome
and no batch. Either may arrive first; the result is the same.

Why not Bytewax's ``EventClock`` windows: its watermark mixes in wall-clock
time, and it forgets a key's clock once its windows close, so a late event for
an idle key re-opens a window already emitted. Neither is acceptable for money.

Batch ids are a hash of (payee, currency, window start, window length, part),
so sinks can be idempotent. A window's events are sorted by (event time,
event id) before anything is numbered. A window whose total would overflow
DECIMAL(18,6) (with room for a carried remainder) is split into parts (rare:
trillions in one window).

Columnar. Events arrive as Arrow record batches (`centflow.ingest.columns`) and
wait in their window as such; windows are kept by index, not by payee, since
every window of an index closes at the same frontier. Closing an index sorts
its events once, finds each (payee, currency) group's rows, sums the groups
with NumPy and posts the events' ledger entries a column at a time. Python
runs once per batch (carry, rounding, batch id), never once per event.
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
from centflow.limits import AMOUNT_MICROS_MAX, BATCH_MICROS_MAX, WATERMARK_END_US
from centflow.money.fees import FEES_SCHEMA, FeeTerms, batch_fees
from centflow.money.fx import FX_SCHEMA, RATE_SCALE, FxBook, convert
from centflow.money.ledger import (
    FEE_POSTINGS_PER_GROUP,
    FX_POSTINGS,
    LEDGER_SCHEMA,
    post_batches,
    post_events,
    post_fees,
    post_fx,
    post_party_lines,
)
from centflow.money.payouts import BPS_WHOLE, CarryKey, Weights, settle_payouts
from centflow.progress import Envelope, Frontier
from centflow.risk.review import (
    ReviewBook,
    ReviewEnvelope,
    ReviewState,
    mark_pending,
    mark_resolved,
    release_window,
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
_WINDOW_COLUMNS = WINDOW_SCHEMA.names
_LATE = WINDOW_SCHEMA.get_field_index("late")
_EMPTY_WINDOW = pa.RecordBatch.from_pylist([], schema=WINDOW_SCHEMA)
_ORDER = [("_group", "ascending"), ("occurred_us", "ascending"), ("event_id", "ascending"), ("type", "ascending")]  # fmt: skip

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


def assign_window(
    occurred_us: int, ingest_us: int, window_us: int, lateness_us: int
) -> tuple[int, bool]:
    """(window index, late) for an event, from its own two times.

    >>> assign_window(occurred_us=5, ingest_us=12, window_us=10, lateness_us=3)
    (0, False)
    >>> assign_window(occurred_us=5, ingest_us=13, window_us=10, lateness_us=3)
    (1, True)
    """
    index = occurred_us // window_us
    if ingest_us < (index + 1) * window_us + lateness_us:
        return index, False
    late_index = (ingest_us - lateness_us) // window_us
    invariant(late_index > index, "a late event must move to a later window")
    return late_index, True


def assign_windows(
    occurred_us: np.ndarray, ingest_us: np.ndarray, window_us: int, lateness_us: int
) -> tuple[np.ndarray, np.ndarray]:
    """`assign_window` for whole columns: (window indexes, late flags)."""
    index = occurred_us // window_us
    late = ingest_us >= (index + 1) * window_us + lateness_us
    if late.any():
        late_index = (ingest_us - lateness_us) // window_us
        invariant(
            bool(np.all(late_index[late] > index[late])), "a late event must move to a later window"
        )
        index = np.where(late, late_index, index)
    return index, late


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


class SettlementState(msgspec.Struct, array_like=True):
    """Picklable state of one settlement shard (open windows as Arrow IPC streams)."""

    frontier: tuple[dict[str, int], dict[str, int]]
    open_windows: list[tuple[int, bytes]]
    sealed_index: int
    forced: bool
    carry_micros: list[tuple[tuple[str, ...], int]]
    reviews: ReviewState

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        """Snapshots pickle through msgpack."""
        return (_state_from_msgpack, (_encoder.encode(self),))


_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(SettlementState)


def _state_from_msgpack(data: bytes) -> SettlementState:
    return _state_decoder.decode(data)


_IPC_SCHEMA = WINDOW_SCHEMA.serialize().to_pybytes()
_IPC_END = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # end-of-stream marker


def _to_ipc(batches: list[pa.RecordBatch], cached: list[bytes] | None = None) -> bytes:
    """An Arrow IPC stream of `batches`, byte for byte what an IPC stream writer makes
    (the schema, each batch's message, the end marker). `cached` holds the messages of
    the first batches from an earlier call and is extended: a window's chunks only ever
    grow at the end, so a snapshot serializes only what arrived since the last one."""
    messages = [] if cached is None else cached
    invariant(len(messages) <= len(batches), "more cached messages than batches")
    for batch in batches[len(messages) :]:
        invariant(batch.schema.equals(WINDOW_SCHEMA), "a window chunk of another schema")
        messages.append(batch.serialize().to_pybytes())
    return b"".join([_IPC_SCHEMA, *messages, _IPC_END])


def _joined_events(blocks: list[pa.RecordBatch]) -> pa.RecordBatch:
    """The window columns of several blocks of events, as one block (in order)."""
    present = [block.select(_WINDOW_COLUMNS) for block in blocks if block.num_rows]
    if len(present) <= 1:
        return present[0] if present else _EMPTY_WINDOW
    joined = pa.Table.from_batches(present, schema=WINDOW_SCHEMA).combine_chunks().to_batches()
    invariant(len(joined) == 1, "joined events span %d blocks", len(joined))
    invariant(
        joined[0].num_rows == sum(block.num_rows for block in present), "events lost in a join"
    )
    return joined[0]


def _from_ipc(data: bytes) -> list[pa.RecordBatch]:
    return pa.ipc.open_stream(data).read_all().to_batches()


class SettlementShard:
    """Windows, closes and nets the events of the payees one shard owns."""

    def __init__(
        self,
        origins: list[str],
        window_us: int,
        lateness_us: int,
        state: SettlementState | None = None,
        fees: dict[tuple[str, str], FeeTerms] | None = None,
        fx: FxBook | None = None,
    ):
        invariant(
            window_us > 0 and lateness_us >= 0,
            f"bad window {window_us} µs / lateness {lateness_us} µs",
        )
        self.window_us = window_us
        self.lateness_us = lateness_us
        self.fees = fees or {}
        self.fx = fx
        if state is None:
            self.frontier = Frontier(origins)
            self.open_windows: dict[int, list[pa.RecordBatch]] = {}
            self.sealed_index = -(2**62)
            self.forced = False
            self.carry_micros: dict[CarryKey, int] = {}
            self.reviews = ReviewBook(WINDOW_SCHEMA)
        else:
            self.frontier = Frontier.restore(state.frontier)
            self.open_windows = {index: _from_ipc(data) for index, data in state.open_windows}
            self.sealed_index = state.sealed_index
            self.forced = state.forced
            self.carry_micros = {tuple(key): value for key, value in state.carry_micros}
            self.reviews = ReviewBook(WINDOW_SCHEMA, state.reviews)
        # each open window's chunks as IPC messages, as far as the last snapshot took them
        self._ipc_messages: dict[int, list[bytes]] = {}

    def settle(self, envelopes: list[Envelope | ReviewEnvelope]) -> Settled:
        """Take in envelopes of decided events and of review resolutions; return what
        closed because the frontier moved."""
        out = Settled()
        # All the envelopes' events at once (a call's Arrow work is per call, not per
        # envelope): nothing closes before the end of the call, so adding them together
        # and then moving the frontier is what adding them one envelope at a time does;
        # a resolution finds its event held whether it came before or after it.
        self._take(
            _joined_events(
                [
                    _window_columns(envelope.events)
                    for envelope in envelopes
                    if isinstance(envelope, Envelope)
                ]
            ),
            out,
        )
        for envelope in envelopes:
            if isinstance(envelope, ReviewEnvelope):
                for resolution in envelope.resolutions:
                    for events in self.reviews.resolve(resolution):
                        self._resolve(mark_resolved(events, resolution), out)
            self.frontier.update(envelope.origin, envelope.watermark_us)
        self._close_through(self.frontier.value, out)
        return out

    def _take(self, events: pa.RecordBatch, out: Settled) -> None:
        """Window the approved events; emit the others (no batch), holding those in review."""
        if not events.num_rows:
            return
        approved = pc.fill_null(pc.equal(events["decision"], "approve"), False)
        if pc.all(approved).as_py():
            self._add(events)
            return
        unsettled = events.filter(pc.invert(approved))
        in_review = pc.fill_null(pc.equal(unsettled["decision"], "review"), False)
        held = mark_pending(unsettled.filter(in_review))
        declined = unsettled.filter(pc.invert(in_review))
        for emitted in (declined, held):
            if emitted.num_rows:
                out.events.append(
                    emitted.append_column("batch_id", pa.nulls(emitted.num_rows, pa.string()))
                )
        if held.num_rows:
            for event, resolution in self.reviews.hold(held):
                self._resolve(mark_resolved(event, resolution), out)
        self._add(events.filter(approved))

    def _resolve(self, events: pa.RecordBatch, out: Settled) -> None:
        """A resolved event: a released one joins its target window (`centflow.risk.review`),
        a declined one is emitted with no batch."""
        invariant(events.num_rows == 1, "events are resolved one at a time")
        out.resolved.append(events)
        if events["review_outcome"][0].as_py() != "released":
            out.events.append(events.append_column("batch_id", pa.nulls(1, pa.string())))
            return
        own, late = assign_window(
            events["occurred_us"][0].as_py(),
            events["ingest_us"][0].as_py(),
            self.window_us,
            self.lateness_us,
        )
        released_us = events["resolved_us"][0].as_py()
        target = max(own, release_window(released_us, self.window_us, self.lateness_us))
        target = max(target, self.sealed_index)  # windows after a stop: the earliest open
        late = late or target != own
        events = events.set_column(_LATE, "late", pa.array([late]))
        self.open_windows.setdefault(target, []).append(events)

    def _add(self, events: pa.RecordBatch) -> None:
        if not events.num_rows:
            return
        index, late = assign_windows(
            events["occurred_us"].to_numpy(),
            events["ingest_us"].to_numpy(),
            self.window_us,
            self.lateness_us,
        )
        closed = index < self.sealed_index
        if closed.any():
            invariant(
                self.forced,
                "event %s arrived for window %s, already closed by the frontier",
                events["event_id"][int(np.argmax(closed))],
                index[closed].min(),
            )
            index = np.where(closed, self.sealed_index, index)
            late = late | closed
        events = events.set_column(_LATE, "late", pa.array(late))
        first, last = int(index.min()), int(index.max())
        indexes = [first] if first == last else np.unique(index).tolist()  # mostly one window
        for window in indexes:
            chunk = events if len(indexes) == 1 else events.filter(pa.array(index == window))
            self.open_windows.setdefault(window, []).append(chunk)

    def _close_through(self, frontier_us: int, out: Settled) -> None:
        for index in sorted(self.open_windows):
            if close_time_us(index, self.window_us, self.lateness_us) > frontier_us:
                break
            self.sealed_index = max(self.sealed_index, index + 1)
            self._ipc_messages.pop(index, None)
            net_window(
                self.open_windows.pop(index),
                index,
                self.window_us,
                self.lateness_us,
                self.carry_micros,
                out,
                self.fees,
                self.fx,
            )
        if frontier_us == WATERMARK_END_US:
            self.forced = True

    def snapshot(self) -> SettlementState:
        """A copy of the state for recovery."""
        return SettlementState(
            self.frontier.state(),
            [
                (index, _to_ipc(chunks, self._ipc_messages.setdefault(index, [])))
                for index, chunks in sorted(self.open_windows.items())
            ],
            self.sealed_index,
            self.forced,
            sorted(self.carry_micros.items()),
            self.reviews.state(),
        )


def _window_columns(events: pa.RecordBatch) -> pa.RecordBatch:
    """A decided block in `WINDOW_SCHEMA`: no raw bytes or signals, review columns null."""
    count = events.num_rows
    return pa.RecordBatch.from_arrays(
        [
            *(events.column(name) for name in _INPUT_COLUMNS),
            *(pa.nulls(count, field.type) for field in REVIEW_FIELDS),
        ],
        schema=WINDOW_SCHEMA,
    )


def _group_codes(events: pa.Table) -> np.ndarray:
    """One int64 per row, equal for rows of the same (payee, currency)."""
    payees = pc.dictionary_encode(_whole(events["payee_id"]))
    currencies = pc.dictionary_encode(_whole(events["currency"]))
    return payees.indices.to_numpy().astype(np.int64) * len(
        currencies.dictionary
    ) + currencies.indices.to_numpy().astype(np.int64)


def _parts(types: list[str], amounts: list[int]) -> list[int]:
    """Where a group's sorted events split so no part's gross or refunds overflow
    DECIMAL(18,6): the offsets at which parts after the first start."""
    starts: list[int] = []
    gross = refunds = 0
    for offset, (kind, amount) in enumerate(zip(types, amounts, strict=True)):
        if kind == "payment":
            gross += amount
        else:
            refunds += amount
        if (gross > BATCH_MICROS_MAX or refunds > BATCH_MICROS_MAX) and offset > (
            starts[-1] if starts else 0
        ):
            starts.append(offset)
            gross = amount if kind == "payment" else 0
            refunds = 0 if kind == "payment" else amount
    return starts


def _batch_bounds(
    events: pa.Table, group_starts: np.ndarray, amounts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(first row, part number) of every batch: one per group, more for a group whose
    total might overflow DECIMAL(18,6). A group is split (exactly, in Python ints)
    only if its count times its largest amount could pass the limit: a screen in
    int64 that cannot overflow itself, where a sum could."""
    counts = np.diff(np.append(group_starts, len(amounts)))
    largest = np.maximum.reduceat(amounts, group_starts)
    suspects = np.flatnonzero(largest > BATCH_MICROS_MAX // counts)
    if not len(suspects):
        return group_starts, np.zeros(len(group_starts), dtype=np.int64)
    ends = group_starts + counts
    starts: list[int] = []
    parts: list[int] = []
    suspect = set(suspects.tolist())
    for group, (start, end) in enumerate(zip(group_starts.tolist(), ends.tolist(), strict=True)):
        starts.append(start)
        parts.append(0)
        if group in suspect:
            rows = events.slice(start, end - start)
            for part, offset in enumerate(
                _parts(rows["type"].to_pylist(), rows["amount_micros"].to_pylist()), 1
            ):
                starts.append(start + offset)
                parts.append(part)
    return np.array(starts, dtype=np.int64), np.array(parts, dtype=np.int64)


#: Entry numbers a batch's own postings reserve (carry in, payout, carry out: two each).
BATCH_POSTINGS = 6


def _split_weights(
    events: pa.Table, is_payment: np.ndarray, starts: np.ndarray, batch_of: np.ndarray
) -> Weights:
    """The party weights of every batch one of whose payments carries splits, a column
    at a time (see `centflow.money.payouts`): per (batch, party), the sum of
    ``amount × bps`` over the batch's payments, a payment without splits giving its
    payee 10000 bps."""
    has_splits = pc.is_valid(events["splits"]).to_numpy(zero_copy_only=False) & is_payment
    if not has_splits.any():
        return Weights(
            np.zeros(0, dtype=np.int64), pa.array([], pa.string()), [], np.zeros(0, bool)
        )
    split_batch = np.add.reduceat(has_splits.astype(np.int64), starts) > 0
    in_split = split_batch[batch_of] & is_payment
    split_rows = np.flatnonzero(has_splits)
    splits = events["splits"].take(pa.array(split_rows)).combine_chunks()
    flat = pc.list_flatten(splits)
    plain_rows = np.flatnonzero(in_split & ~has_splits)
    rows = np.concatenate([split_rows[pc.list_parent_indices(splits).to_numpy()], plain_rows])
    parties = pa.concat_arrays(
        [flat.field("party_id"), _whole(events["payee_id"]).take(pa.array(plain_rows))]
    )
    bps = np.concatenate(
        [flat.field("bps").to_numpy(), np.full(len(plain_rows), BPS_WHOLE, dtype=np.int64)]
    )
    amounts = events["amount_micros"].to_numpy()[rows]
    encoded = pc.dictionary_encode(parties)
    names = encoded.dictionary
    by_name = pc.sort_indices(names).to_numpy()
    rank_of_code = np.empty(len(names), dtype=np.int64)
    rank_of_code[by_name] = np.arange(len(names))
    key = batch_of[rows] * len(names) + rank_of_code[encoded.indices.to_numpy()]
    order = np.argsort(key, kind="stable")
    key = key[order]
    firsts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    sizes = np.diff(np.append(firsts, len(key)))
    magnitudes = np.abs(amounts[order])
    bps_max = max(int(np.abs(bps).max()), 1)
    # int64 is exact when no group's sum of |amount| × the largest bps can pass it
    exact_in_int64 = int(magnitudes.max()) * int(sizes.max()) < 2**62 and (
        int(np.add.reduceat(magnitudes, firsts).max()) * bps_max < 2**62
    )
    # past int64, the sums are made in exact Python ints
    products = amounts * bps if exact_in_int64 else amounts.astype(object) * bps
    weights = np.add.reduceat(products[order], firsts).tolist()
    unique = key[firsts]
    row_payees = _whole(events["payee_id"]).take(pa.array(rows))
    is_payee = pc.equal(parties, row_payees).to_numpy(zero_copy_only=False)[order]
    return Weights(
        unique // len(names),
        encoded.dictionary.take(pa.array(by_name[unique % len(names)])),
        weights,
        np.logical_or.reduceat(is_payee, firsts),
    )


def _whole(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def net_window(
    chunks: list[pa.RecordBatch],
    index: int,
    window_us: int,
    lateness_us: int,
    carry_micros: dict[CarryKey, int],
    out: Settled,
    fee_terms: dict[tuple[str, str], FeeTerms] | None = None,
    fx_book: FxBook | None = None,
) -> None:
    """Net the closed window `index` of every payee into batches, with their postings.

    Fees (`centflow.money.fees`, from `fee_terms`) are charged once per batch and
    rail. A batch that nets negative (fees or reversals beyond its payments)
    pays out nothing: what the payee owes is a receivable carried into its next
    batch in that currency, like a sub-minor remainder.

    `carry_micros` holds each (payee, currency)'s sub-minor remainder from its
    previous batch; it is taken in and replaced by the remainder this window
    leaves, and split parties' remainders under ``(payee, currency, party)``
    (`centflow.money.payouts`, which also says how splits are paid).
    """
    events = pa.Table.from_batches(
        [
            chunk.select(_WINDOW_COLUMNS)
            if chunk.schema.get_field_index("review_outcome") >= 0
            else _window_columns(chunk)  # a block of PAYMENT_SCHEMA
            for chunk in chunks
        ],
        schema=WINDOW_SCHEMA,
    )  # in chunks: the sort and the take below read them as they are
    count = events.num_rows
    invariant(count > 0, "window %s closed with no events", index)
    grouped = events.append_column("_group", pa.array(_group_codes(events)))
    order = pc.sort_indices(grouped, sort_keys=_ORDER)
    groups = grouped["_group"].take(order).to_numpy()
    events = events.take(order)
    group_starts = np.concatenate(([0], np.flatnonzero(groups[1:] != groups[:-1]) + 1))
    amounts = events["amount_micros"].to_numpy()
    starts, parts = _batch_bounds(events, group_starts, amounts)
    # A batch is one (payee, currency): the postings and fees below take both from it.
    invariant(
        bool(np.isin(group_starts, starts, assume_unique=True).all()),
        "a batch of window %s spans payees or currencies",
        index,
    )
    counts = np.diff(np.append(starts, count))
    invariant(
        bool(np.all(counts > 0)) and int(counts.sum()) == count, "window %s lost events", index
    )
    is_payment = pc.equal(events["type"], "payment").to_numpy(zero_copy_only=False)
    gross = np.add.reduceat(np.where(is_payment, amounts, 0), starts)
    refunds = np.add.reduceat(np.where(is_payment, 0, amounts), starts)
    late_counts = np.add.reduceat(
        events["late"].to_numpy(zero_copy_only=False).astype(np.int64), starts
    )
    invariant(
        bool(np.all((gross >= 0) & (gross <= AMOUNT_MICROS_MAX) & (refunds >= 0)))
        and bool(np.all(refunds <= AMOUNT_MICROS_MAX)),
        "a batch of window %s overflows DECIMAL(18,6)",
        index,
    )
    first_rows = pa.array(starts)
    payees = events["payee_id"].take(first_rows)
    currencies = events["currency"].take(first_rows)
    window_start_us = index * window_us
    closed_us = close_time_us(index, window_us, lateness_us)
    batch_ids = batch_ids_for(payees, currencies, window_start_us, window_us, parts)
    size = len(starts)
    batch_of = np.repeat(np.arange(size), counts)
    rails = pc.dictionary_encode(_whole(events["rail"]))
    fees = batch_fees(fee_terms or {}, events, batch_of, batch_ids, size, rails)
    net = gross - refunds - fees.per_batch
    payee_list, currency_list = payees.to_pylist(), currencies.to_pylist()
    fx = convert(fx_book, events, starts, counts, is_payment, batch_ids, payee_list, currency_list, fees.per_batch, net)  # fmt: skip
    held, converted = fx.held, fx.fx
    targets = pa.array(fx.settlement_currency, pa.string())
    paid = settle_payouts(
        payee_list,
        currency_list,
        parts,
        fx.credited,
        carry_micros,
        _split_weights(events, is_payment, starts, batch_of),
        fx.settlement_currency,
        held,
    )
    payout, carry_in, carry_out = paid.payout, paid.carry_in, paid.carry_out
    out.batches.append(
        pa.table(
            [
                batch_ids,
                payees,
                currencies,
                np.full(size, window_start_us, dtype=np.int64),
                np.full(size, window_start_us + window_us, dtype=np.int64),
                parts,
                counts,
                late_counts,
                gross,
                refunds,
                fees.per_batch,
                net,
                targets,
                pa.array(fx.rate, mask=held),
                payout,
                carry_in,
                carry_out,
                np.full(size, closed_us, dtype=np.int64),
                fx.status_names(),
                pa.array(fx.converted, mask=~converted),
                pa.array(fx.spread, mask=~converted),
            ],
            schema=BATCH_SCHEMA,
        )
    )
    batch_of_row = pa.array(batch_of)
    positions = np.arange(count) - np.repeat(starts, counts)
    event_batch_ids = batch_ids.take(batch_of_row)
    out.entries.append(
        post_events(events, is_payment, batch_ids, batch_of, positions, payees, closed_us, rails)
    )
    group_rank = np.arange(len(fees.batch_of_group)) - np.repeat(
        np.cumsum(fees.groups_per_batch) - fees.groups_per_batch, fees.groups_per_batch
    )
    out.entries.append(
        post_fees(
            batch_ids,
            fees.batch_of_group,
            payees,
            fees.rails,
            currencies,
            2 * counts[fees.batch_of_group] + FEE_POSTINGS_PER_GROUP * group_rank,
            fees.charged,
            fees.rail_cost,
            closed_us,
        )
    )
    first_batch_sequence = 2 * counts + FEE_POSTINGS_PER_GROUP * fees.groups_per_batch
    if converted.any():
        rows = np.flatnonzero(converted)
        picked = pa.array(rows)
        out.entries.append(
            post_fx(
                batch_ids.take(picked),
                payees.take(picked),
                currencies.take(picked),
                targets.take(picked),
                first_batch_sequence[rows],
                net[rows],
                fx.converted[rows],
                fx.spread[rows],
                closed_us,
            )
        )
        first_batch_sequence = first_batch_sequence + FX_POSTINGS * converted
    paying_batches = pa.array(np.flatnonzero(~held))  # a batch awaiting its rate posts no payout
    out.entries.append(
        post_batches(
            batch_ids.take(paying_batches),
            payees.take(paying_batches),
            targets.take(paying_batches),
            first_batch_sequence[~held],
            paid.payee_payout[~held],
            paid.payee_carry_in[~held],
            paid.payee_carry_out[~held],
            closed_us,
        )
    )
    if len(paid.lines):
        out.entries.append(
            post_party_lines(
                paid.lines,
                batch_ids,
                payees,
                targets,
                first_batch_sequence + BATCH_POSTINGS,
                closed_us,
            )
        )
    out.fx.append(fx.rows)
    out.fees.append(fees.rows)
    paying = pa.array(np.flatnonzero(paid.payee_payout != 0))
    out.payouts.append(
        pa.table(
            [
                batch_ids.take(paying),
                payees.take(paying),
                targets.take(paying),
                pa.array(paid.payee_payout, pa.int64()).take(paying),
            ],
            schema=PAYOUT_SCHEMA,
        )
    )
    lines = paid.lines
    if len(lines):
        line_payout = np.array(lines.payout, dtype=np.int64)
        paying_lines = np.flatnonzero(line_payout)
        line_batch = pa.array(np.array(lines.batch, dtype=np.int64)[paying_lines])
        out.payouts.append(
            pa.table(
                [
                    batch_ids.take(line_batch),
                    pa.array(lines.party, pa.string()).take(pa.array(paying_lines)),
                    targets.take(line_batch),
                    pa.array(line_payout[paying_lines]),
                ],
                schema=PAYOUT_SCHEMA,
            )
        )
    out.events.extend(events.append_column("batch_id", event_batch_ids).to_batches())
