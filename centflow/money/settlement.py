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

FX rates from a topic (`centflow.money.fx`) come in on origins of their own,
part of the frontier too: each window converts with the rates ingested before
its close, and a rate ingested at ``R`` settles, at ``R``, the batches that
awaited it (closes and rates are taken in time order, `_close_through`).

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

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import invariant
from centflow.limits import WATERMARK_END_US
from centflow.money.batches import (
    EMPTY_WINDOW,
    LATE_COLUMN,
    WINDOW_COLUMNS,
    WINDOW_SCHEMA,
    Settled,
    close_time_us,
    window_columns,
)
from centflow.money.fees import FeeTerms
from centflow.money.fx import FxBook, FxUpdate, PayeeUpdate, RateEnvelope, RateUpdate, update_order
from centflow.money.netting import Awaiting, announce_awaiting, net_window, settle_awaiting
from centflow.money.payouts import CarryKey
from centflow.progress import Envelope, Frontier
from centflow.risk.review import (
    ReviewBook,
    ReviewEnvelope,
    ReviewState,
    mark_pending,
    mark_resolved,
    release_window,
)


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


class SettlementState(msgspec.Struct, array_like=True):
    """Picklable state of one settlement shard (open windows as Arrow IPC streams)."""

    frontier: tuple[dict[str, int], dict[str, int]]
    open_windows: list[tuple[int, bytes]]
    sealed_index: int
    forced: bool
    carry_micros: list[tuple[tuple[str, ...], int]]
    reviews: ReviewState
    awaiting: list[Awaiting] = []
    rates_pending: list[FxUpdate] = []  # read, not yet in force: ingested at or past the frontier
    rates_applied: list[RateUpdate] = []  # from the rates topic, in the book
    payees_applied: list[tuple[str, str]] = []  # from the payee directory topic

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
    present = [block.select(WINDOW_COLUMNS) for block in blocks if block.num_rows]
    if len(present) <= 1:
        return present[0] if present else EMPTY_WINDOW
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
        rate_wait_us: int = 0,
        rate_horizon_us: int | None = None,
    ):
        invariant(
            window_us > 0 and lateness_us >= 0,
            f"bad window {window_us} µs / lateness {lateness_us} µs",
        )
        self.window_us = window_us
        self.lateness_us = lateness_us
        self.fees = fees or {}
        self.fx = fx
        self.rate_wait_us = rate_wait_us
        self.rate_horizon_us = rate_horizon_us
        self.awaiting: list[Awaiting] = []
        self.rates_pending: list[FxUpdate] = []
        self.rates_applied: list[RateUpdate] = []
        self.payees_applied: dict[str, str] = {}
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
            self.awaiting = list(state.awaiting)
            self.rates_pending = list(state.rates_pending)
            for update in state.rates_applied:
                self._apply(update)
            self.payees_applied = dict(state.payees_applied)
            if self.fx is not None:
                self.fx.payees.update(self.payees_applied)
        # each open window's chunks as IPC messages, as far as the last snapshot took them
        self._ipc_messages: dict[int, list[bytes]] = {}

    def settle(self, envelopes: list[Envelope | ReviewEnvelope | RateEnvelope]) -> Settled:
        """Take in envelopes of decided events, of review resolutions and of FX rates;
        return what closed (or settled on a rate that came) because the frontier moved."""
        out = Settled()
        # All the envelopes' events at once (a call's Arrow work is per call, not per
        # envelope): nothing closes before the end of the call, so adding them together
        # and then moving the frontier is what adding them one envelope at a time does;
        # a resolution finds its event held whether it came before or after it.
        self._take(
            _joined_events(
                [
                    window_columns(envelope.events)
                    for envelope in envelopes
                    if isinstance(envelope, Envelope)
                ]
            ),
            out,
        )
        for envelope in envelopes:
            if isinstance(envelope, RateEnvelope):
                self.rates_pending.extend(envelope.rates)
            elif isinstance(envelope, ReviewEnvelope):
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
        events = events.set_column(LATE_COLUMN, "late", pa.array([late]))
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
        events = events.set_column(LATE_COLUMN, "late", pa.array(late))
        first, last = int(index.min()), int(index.max())
        indexes = [first] if first == last else np.unique(index).tolist()  # mostly one window
        for window in indexes:
            chunk = events if len(indexes) == 1 else events.filter(pa.array(index == window))
            self.open_windows.setdefault(window, []).append(chunk)

    def _close_through(self, frontier_us: int, out: Settled) -> None:
        """Close every window the frontier has passed, and put in force every rate
        ingested before it, in time order: a window closing at ``C`` converts with
        the rates ingested before ``C``; a rate ingested at ``R`` settles, at ``R``,
        the awaiting batches it completes (oldest first), with the payee's carry as
        it is then. The frontier covers the rates topic, so which rates a batch
        sees does not depend on the order the inputs were read in."""
        if self.rates_pending:
            self.rates_pending.sort(key=update_order)
        while True:
            window = min(self.open_windows, default=None)
            close_us = (
                None if window is None else close_time_us(window, self.window_us, self.lateness_us)
            )
            if close_us is not None and close_us > frontier_us:
                close_us = None
            rate_us = self.rates_pending[0].ingest_us if self.rates_pending else None
            if rate_us is not None and rate_us >= frontier_us:
                rate_us = None
            if rate_us is not None and (close_us is None or rate_us < close_us):
                self._rates_at(rate_us, out)
            elif window is not None and close_us is not None:
                self._announce_before(close_us, out)
                self._close(window, out)
            else:
                break
        self._announce_before(frontier_us, out)
        if frontier_us == WATERMARK_END_US:
            self.forced = True

    def _close(self, index: int, out: Settled) -> None:
        self.sealed_index = max(self.sealed_index, index + 1)
        self._ipc_messages.pop(index, None)
        self.awaiting.extend(
            net_window(
                self.open_windows.pop(index),
                index,
                self.window_us,
                self.lateness_us,
                self.carry_micros,
                out,
                self.fees,
                self.fx,
                self.rate_wait_us,
            )
        )

    def _rates_at(self, at_us: int, out: Settled) -> None:
        """Put in force the rates ingested at `at_us`, then settle what they complete."""
        self._announce_before(at_us, out)
        taken = 0
        while taken < len(self.rates_pending) and self.rates_pending[taken].ingest_us == at_us:
            taken += 1
        updates, self.rates_pending = self.rates_pending[:taken], self.rates_pending[taken:]
        if self.fx is None:
            return
        for update in updates:
            if isinstance(update, PayeeUpdate):
                self.fx.payees[update.payee_id] = update.settlement_currency
                self.payees_applied[update.payee_id] = update.settlement_currency
            else:
                self._apply(update)
                self.rates_applied.append(update)
        if self.rate_horizon_us is not None:
            self.fx.rates.prune_before(at_us - self.rate_horizon_us)
            self.rates_applied = [u for u in self.rates_applied if self.fx.rates.keeps(u)]
        waiting = []
        for batch in self.awaiting:
            settled = batch.may_settle(self.fx) and settle_awaiting(
                batch, self.window_us, self.lateness_us, at_us, self.carry_micros, out,
                self.fees, self.fx,
            )  # fmt: skip
            if not settled:
                waiting.append(batch)
        self.awaiting = waiting

    def _announce_before(self, at_us: int, out: Settled) -> None:
        """Write the ``awaiting_rate`` row of each batch whose wait ended before `at_us`."""
        for place, batch in enumerate(self.awaiting):
            if not batch.announced and batch.closed_us + self.rate_wait_us < at_us:
                announce_awaiting(batch, self.window_us, self.lateness_us, out, self.fees, self.fx)
                self.awaiting[place] = msgspec.structs.replace(batch, announced=True)

    def _apply(self, update: RateUpdate) -> None:
        if self.fx is not None:
            self.fx.rates.add(update)

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
            list(self.awaiting),
            sorted(self.rates_pending, key=update_order),
            list(self.rates_applied),
            sorted(self.payees_applied.items()),
        )
