"""Settlement: event-time tumbling windows per (payee, currency), netted into batches.

Which window an event joins, and whether it is late, is decided from the
event alone: its event time against its ingestion time (see
`centflow.events`). With window length ``L`` and allowed lateness ``A``,
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

Why not Bytewax's ``EventClock`` windows: its watermark mixes in wall-clock
time, and it forgets a key's clock once its windows close, so a late event for
an idle key re-opens a window already emitted. Neither is acceptable for money.

Batch ids are a hash of (payee, currency, window start, window length, part),
so sinks can be idempotent. A window's events are sorted by (event time,
event id) before anything is numbered. A window whose total would overflow
DECIMAL(18,6) (with room for a carried remainder) is split into parts (rare:
trillions in one window).
"""

from __future__ import annotations

import hashlib
import heapq
from decimal import Decimal
from operator import attrgetter

import msgspec

from centflow.errors import invariant
from centflow.events import Payment
from centflow.ledger import LedgerRow, post_batch
from centflow.limits import AMOUNT_MICROS_MAX, BATCH_MICROS_MAX, WATERMARK_END_US
from centflow.money import round_to_minor_unit
from centflow.progress import Envelope, Frontier

WindowKey = tuple[str, str, int]  # (payee_id, currency, window index)
_ORDER = attrgetter("occurred_us", "event_id", "type")
_RATE_ONE = Decimal(1)  # no FX conversion yet: settlement currency = event currency


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
    fx_rate: Decimal
    payout_micros: int
    carry_in_micros: int
    carry_out_micros: int
    closed_us: int


class Settled(msgspec.Struct, array_like=True, gc=False):
    """What one settlement step emits: closed batches, their events and postings,
    and events that settle in no batch (not approved)."""

    batches: list[Batch]
    events: list[tuple[Payment, str | None]]
    entries: list[LedgerRow]


class SettlementState(msgspec.Struct, array_like=True):
    """Picklable state of one settlement shard."""

    frontier: tuple[dict[str, int], dict[str, int]]
    open_windows: dict[WindowKey, list[Payment]]
    close_heap: list[tuple[int, WindowKey]]
    sealed_index: int
    forced: bool
    carry_micros: dict[tuple[str, str], int]

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        """Snapshots pickle through msgpack (much cheaper for windows full of events)."""
        wire = _SettlementWire(
            self.frontier,
            list(self.open_windows.items()),
            self.close_heap,
            self.sealed_index,
            self.forced,
            list(self.carry_micros.items()),
        )
        return (_state_from_msgpack, (_encoder.encode(wire),))


class _SettlementWire(msgspec.Struct, array_like=True):
    frontier: tuple[dict[str, int], dict[str, int]]
    open_windows: list[tuple[tuple[str, str, int], list[Payment]]]
    close_heap: list[tuple[int, tuple[str, str, int]]]
    sealed_index: int
    forced: bool
    carry_micros: list[tuple[tuple[str, str], int]]


_encoder = msgspec.msgpack.Encoder()
_wire_decoder = msgspec.msgpack.Decoder(_SettlementWire)


def _state_from_msgpack(data: bytes) -> SettlementState:
    wire = _wire_decoder.decode(data)
    return SettlementState(
        wire.frontier,
        dict(wire.open_windows),
        wire.close_heap,
        wire.sealed_index,
        wire.forced,
        dict(wire.carry_micros),
    )


class SettlementShard:
    """Windows, closes and nets the events of the payees one shard owns."""

    def __init__(
        self,
        origins: list[str],
        window_us: int,
        lateness_us: int,
        state: SettlementState | None = None,
    ):
        invariant(
            window_us > 0 and lateness_us >= 0,
            f"bad window {window_us} µs / lateness {lateness_us} µs",
        )
        self.window_us = window_us
        self.lateness_us = lateness_us
        if state is None:
            self.frontier = Frontier(origins)
            self.open_windows: dict[WindowKey, list[Payment]] = {}
            self.close_heap: list[tuple[int, WindowKey]] = []
            self.sealed_index = -(2**62)
            self.forced = False
            self.carry_micros: dict[tuple[str, str], int] = {}
        else:
            self.frontier = Frontier.restore(state.frontier)
            self.open_windows = {key: list(events) for key, events in state.open_windows.items()}
            self.close_heap = list(state.close_heap)
            self.sealed_index = state.sealed_index
            self.forced = state.forced
            self.carry_micros = dict(state.carry_micros)

    def settle(self, envelopes: list[Envelope]) -> Settled:
        """Take in envelopes; return what closed because the frontier moved."""
        out = Settled([], [], [])
        for envelope in envelopes:
            for event in envelope.events:
                if event.decision == "approve":
                    self._add(event)
                else:
                    out.events.append((event, None))
            self.frontier.update(envelope.origin, envelope.watermark_us)
        self._close_through(self.frontier.value, out)
        return out

    def _add(self, event: Payment) -> None:
        window_us, lateness_us = self.window_us, self.lateness_us
        index = event.occurred_us // window_us  # `assign_window`, inlined: this runs per event
        late = event.ingest_us >= (index + 1) * window_us + lateness_us
        if late:
            index, late = assign_window(event.occurred_us, event.ingest_us, window_us, lateness_us)
        if index < self.sealed_index:
            invariant(
                self.forced,
                "event %s arrived for window %s, already closed by the frontier",
                event.event_id,
                index,
            )
            index, late = self.sealed_index, True
        event.late = late
        key = (event.payee_id, event.currency, index)
        events = self.open_windows.get(key)
        if events is None:
            self.open_windows[key] = events = []
            heapq.heappush(
                self.close_heap, (close_time_us(index, self.window_us, self.lateness_us), key)
            )
        events.append(event)

    def _close_through(self, frontier_us: int, out: Settled) -> None:
        heap = self.close_heap
        while heap and heap[0][0] <= frontier_us:
            _, key = heapq.heappop(heap)
            self.sealed_index = max(self.sealed_index, key[2] + 1)
            events = self.open_windows.pop(key)
            payee = (key[0], key[1])
            carry_in = self.carry_micros.pop(payee, 0)
            batches, carry_next = build_batches(
                key, events, self.window_us, self.lateness_us, carry_in
            )
            if carry_next:
                self.carry_micros[payee] = carry_next
            for batch, batch_events, entries in batches:
                out.batches.append(batch)
                out.events.extend((event, batch.batch_id) for event in batch_events)
                out.entries.extend(entries)
        if frontier_us == WATERMARK_END_US:
            self.forced = True
        invariant(len(heap) == len(self.open_windows), "close heap and open windows disagree")

    def snapshot(self) -> SettlementState:
        """A copy of the state for recovery (lists are copied; events are not mutated once windowed)."""
        return SettlementState(
            self.frontier.state(),
            {key: list(events) for key, events in self.open_windows.items()},
            list(self.close_heap),
            self.sealed_index,
            self.forced,
            dict(self.carry_micros),
        )


def _parts(events: list[Payment]) -> list[list[Payment]]:
    """Split a window's sorted events so no part's gross or refunds overflow DECIMAL(18,6)."""
    parts: list[list[Payment]] = [[]]
    gross = refunds = 0
    for event in events:
        if event.type == "payment":
            gross += event.amount_micros
        else:
            refunds += event.amount_micros
        if (gross > BATCH_MICROS_MAX or refunds > BATCH_MICROS_MAX) and parts[-1]:
            parts.append([])
            gross = event.amount_micros if event.type == "payment" else 0
            refunds = 0 if event.type == "payment" else event.amount_micros
        parts[-1].append(event)
    return parts


def build_batches(
    key: WindowKey, events: list[Payment], window_us: int, lateness_us: int, carry_in: int = 0
) -> tuple[list[tuple[Batch, list[Payment], list[LedgerRow]]], int]:
    """Net a closed window's events into batches with their ledger postings.

    `carry_in` is the payee's sub-minor remainder carried from its previous
    batch in this currency; returns the batches and the carry for the next
    one. A batch whose payout has no room left under DECIMAL(18,6) for the
    carry (amounts near a trillion) takes none: the carry waits in the carry
    account for the next batch, and that batch's ``carry_in`` shows it.
    """
    payee_id, currency, index = key
    invariant(len(events) > 0, "window %s closed with no events", key)
    ordered = sorted(events, key=_ORDER)
    window_start_us = index * window_us
    closed_us = close_time_us(index, window_us, lateness_us)
    out = []
    total = sum(event.amount_micros for event in ordered)
    parts = [ordered] if total <= BATCH_MICROS_MAX else _parts(ordered)
    for part, part_events in enumerate(parts):
        invariant(len(part_events) > 0, "window %s split into an empty part", key)
        gross = refunds = late_count = 0
        for event in part_events:
            if event.type == "payment":
                gross += event.amount_micros
            else:
                refunds += event.amount_micros
            late_count += event.late
        fees = 0
        net = gross - refunds - fees
        waiting = 0
        if abs(net + carry_in) > BATCH_MICROS_MAX:  # no room for the carry in this payout
            carry_in, waiting = 0, carry_in
        payout, carry_out = round_to_minor_unit(net + carry_in, currency)
        batch_id = batch_id_for(payee_id, currency, window_start_us, window_us, part)
        entries = post_batch(
            batch_id, payee_id, currency, part_events, payout, closed_us, carry_in, carry_out
        )
        batch = Batch(
            batch_id,
            payee_id,
            currency,
            window_start_us,
            window_start_us + window_us,
            part,
            len(part_events),
            late_count,
            gross,
            refunds,
            fees,
            net,
            currency,
            _RATE_ONE,
            payout,
            carry_in,
            carry_out,
            closed_us,
        )
        invariant(
            payout + carry_out == net + carry_in, "batch %s payout and carry lose money", batch_id
        )
        carry_in = carry_out + waiting
        invariant(
            0 <= gross <= AMOUNT_MICROS_MAX
            and 0 <= refunds <= AMOUNT_MICROS_MAX
            and abs(payout) <= AMOUNT_MICROS_MAX,
            "batch %s overflows DECIMAL(18,6)",
            batch_id,
        )
        out.append((batch, part_events, entries))
    invariant(
        sum(len(item[1]) for item in out) == len(events), "window %s lost events into parts", key
    )
    return out, carry_in
