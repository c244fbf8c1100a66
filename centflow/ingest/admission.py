"""Admission: de-duplication and reference checks, one shard at a time.

Events are routed by **payee**, like settlement, so admission and settlement
of a payee run in one shard. Within a payee, a payment and every reversal of
it meet: the shard checks that the reference exists for that payee, that the
currency and the payer match, and that reversals never exceed the payment. A
reversal naming a payment of *another* payee finds nothing and is
``unknown_reference``; one in another currency, or for another payer (money
goes back to whoever paid it), is ``reference_mismatch``. So a reversal meets its
payment's decision in the payer's risk shard (`centflow.risk.scoring`).

De-duplication horizon. An event seen again, the same event_id for the same
payee, within `dedupe_horizon_us` of ingestion time after its first sighting
is a duplicate: it goes to the dead letters with reason ``duplicate`` (its raw
bytes kept) and has no other effect. (A message reusing an event_id for
another payee is another identity, possibly in another shard: it settles
too, and the ``recon_event_repeats`` view lists such ids.) Entries older than
the horizon are forgotten once the frontier has passed them, and only then,
so whether an event is a duplicate never depends on when state was evicted.
**Beyond the horizon nothing is guaranteed**: a repeat arriving later than
that is treated as a new event, and a refund whose payment is older than the
horizon is dead-lettered as ``unknown_reference``.

Reversals wait for every input. Producers key their messages as they like, or
not at all, so a refund can sit in another partition than its payment, and
two refunds of one payment in two partitions can be read in either order. A
refund or chargeback is therefore never judged on arrival: it is held until
the frontier (every input partition) has moved past its ingestion time. By
then every payment ingested at or before it has been seen, whatever order the
partitions were read in. Held reversals are then judged in a canonical order,
(ingestion time, event_id, payee, bytes), never arrival order, so "which of
two racing refunds fits under the payment" has one answer. A payment ingested
*after* its reversal is no reference (``unknown_reference``), equal ingestion
times count as before. While reversals are held, the watermark this stage
passes on is the oldest held one's ingestion time, so nothing downstream
moves past them. The price is latency for reversals only: a refund is judged
once the slowest partition has moved past it (at the latest when the input
ends); payments are admitted on arrival.

Copies of one *payment* in two partitions are told apart by arrival: the first
copy read is admitted, and if the copies carry different ingestion times
which one that is can depend on read order (a producer's own retries stay in
one partition, so this needs two copies sent on purpose to two partitions).

Columnar where it can be. Most events in a block are new payments that no
other event of the block touches; those are admitted with a few bulk
dictionary updates. Repeated ids go one at a time, in arrival order, and
reversals join the held ones; the sets share no key, so the order between
them changes nothing.
"""

from __future__ import annotations

from collections import deque
from sys import intern

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import invariant
from centflow.ingest.columns import PAYMENT_SCHEMA, concat
from centflow.ingest.events import DeadLetter
from centflow.progress import Envelope, Frontier

#: Ids to forget once the horizon has passed them, one entry per block admitted:
#: (newest ingestion µs in the block, identities, their ingestion µs).
ExpiryBlock = tuple[int, list[str], list[int]]
#: What a shard remembers of an id: (first ingestion µs, amount in micro-units,
#: currency, payer). Amount, currency and payer are those of a payment (for
#: checking its reversals); an id never seen as a payment has (…, 0, None, "").
Seen = tuple[int, int, str | None, str]
#: A payment whose id was used again beyond the horizon, kept while a reversal
#: ingested before the reuse may still arrive: [reused at µs, its `Seen`, the
#: micro-units reversed so far].
Superseded = list
#: Ids per expiry block when a snapshot is restored (see `AdmissionShard.snapshot`).
RESTORED_EXPIRY_BLOCK = 4096

_RAW = PAYMENT_SCHEMA.get_field_index("raw")
#: The order held reversals are judged in: nothing that depends on read order.
_CANONICAL = [
    ("ingest_us", "ascending"),
    ("event_id", "ascending"),
    ("payee_id", "ascending"),
    ("raw", "ascending"),
]


class AdmissionState(msgspec.Struct, array_like=True):
    """Picklable state of one admission shard: what it remembers of each id, as two
    parallel lists (ids, and `Seen` tuples), and the running reversal totals.

    The expiry queue is not kept: it is rebuilt from the first-seen times on
    restore. Snapshot size is what a snapshot costs (Bytewax copies, ships and
    stores every byte), and one id costs ~45 bytes this way, against ~120 with
    a dictionary per fact and the queue.
    """

    frontier: tuple[dict[str, int], dict[str, int]]
    identities: list[str]
    seen: list[Seen]
    reversed_micros: dict[str, int]
    held: bytes = b""  # reversals not judged yet, one Arrow IPC message (raw bytes kept)
    superseded: dict[str, list[Superseded]] = msgspec.field(default_factory=dict)

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        """Snapshots pickle through msgpack (much cheaper for large state)."""
        return (_state_from_msgpack, (_encoder.encode(self),))


_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(AdmissionState)


def _state_from_msgpack(data: bytes) -> AdmissionState:
    return _state_decoder.decode(data)


class _Row(msgspec.Struct, gc=False):
    """The fields of one event that the one-at-a-time path reads."""

    identity: str
    event_id: str
    type: str
    payee_id: str
    payer_id: str
    currency: str
    amount_micros: int
    ingest_us: int
    ref_event_id: str | None
    source: str
    raw: bytes


class AdmissionShard:
    """De-duplicates and checks references for the events of one shard."""

    def __init__(
        self, origins: list[str], dedupe_horizon_us: int, state: AdmissionState | None = None
    ):
        invariant(dedupe_horizon_us > 0, "the de-duplication horizon must be positive")
        self.dedupe_horizon_us = dedupe_horizon_us
        if state is None:
            self.frontier = Frontier(origins)
            self.seen: dict[str, Seen] = {}
            self.reversed_micros: dict[str, int] = {}  # only payments with reversals
            self.expiry_queue: deque[ExpiryBlock] = deque()
            self.held: list[pa.RecordBatch] = []
            self.superseded: dict[str, list[Superseded]] = {}
        else:
            self.frontier = Frontier.restore(state.frontier)
            self.seen = dict(zip(state.identities, state.seen, strict=True))
            self.reversed_micros = dict(state.reversed_micros)
            self.expiry_queue = _expiry_queue(state.identities, state.seen)
            self.held = [pa.ipc.read_record_batch(state.held, PAYMENT_SCHEMA)] if state.held else []
            self.superseded = {key: list(map(list, old)) for key, old in state.superseded.items()}
        self._held_oldest_us = _oldest(self.held)

    @property
    def watermark_us(self) -> int:
        """What this shard promises downstream: its frontier, held back by the
        oldest reversal it still holds."""
        value = self.frontier.value
        return value if self._held_oldest_us is None else min(value, self._held_oldest_us)

    def admit(self, envelopes: list[Envelope]) -> tuple[pa.RecordBatch, list[DeadLetter]]:
        """Admitted events in arrival order (raw bytes dropped), and the dead letters of the rest."""
        admitted: list[pa.RecordBatch] = []
        dead: list[DeadLetter] = []
        held_before = sum(batch.num_rows for batch in self.held)
        for envelope in envelopes:
            events = envelope.events
            if events.num_rows:
                keep = self._admit_block(events, dead)
                if keep is not None and not keep.all():
                    events = events.filter(pa.array(keep))
                admitted.append(_without_raw(events))
            self.frontier.update(envelope.origin, envelope.watermark_us)
        released = self._release_held(dead)
        if released is not None:
            admitted.append(released)
        self._forget_expired()
        invariant(
            sum(batch.num_rows for batch in admitted)
            + len(dead)
            + sum(batch.num_rows for batch in self.held)
            == sum(envelope.events.num_rows for envelope in envelopes) + held_before,
            "admission lost or invented an event",
        )
        return concat(admitted), dead

    def _release_held(self, dead: list[DeadLetter]) -> pa.RecordBatch | None:
        """Judge the held reversals the frontier has passed, in canonical order; return
        the admitted ones (raw bytes dropped), None if none was due."""
        frontier_us = self.frontier.value
        if self._held_oldest_us is None or self._held_oldest_us >= frontier_us:
            return None
        held = concat(self.held)
        due_mask = pc.less(held["ingest_us"], frontier_us)
        due = held.filter(due_mask)
        rest = held.filter(pc.invert(due_mask))
        self.held = [rest] if rest.num_rows else []
        self._held_oldest_us = _oldest(self.held)
        due = due.take(pc.sort_indices(pa.Table.from_batches([due]), sort_keys=_CANONICAL))
        identities = pc.binary_join_element_wise(
            due["payee_id"], due["event_id"], "\x1f"
        ).to_pylist()
        keep = np.zeros(due.num_rows, bool)
        admitted_ids: list[str] = []
        admitted_ingest: list[int] = []
        for row, event in enumerate(_rows(due, np.arange(due.num_rows), identities)):
            letter = self._admit_one(event)
            if letter is None:
                keep[row] = True
                admitted_ids.append(event.identity)
                admitted_ingest.append(event.ingest_us)
            else:
                dead.append(letter)
        self._expire_later(admitted_ids, admitted_ingest)
        return _without_raw(due.filter(pa.array(keep)))

    def _hold(self, events: pa.RecordBatch, rows: np.ndarray) -> None:
        """Keep reversals (with their raw bytes) until the frontier has passed them."""
        picked = events.take(pa.array(rows))
        self.held.append(picked)
        oldest = pc.min(picked["ingest_us"]).as_py()
        if self._held_oldest_us is None or oldest < self._held_oldest_us:
            self._held_oldest_us = oldest

    def _admit_block(self, events: pa.RecordBatch, dead: list[DeadLetter]) -> np.ndarray | None:
        """Admit a block's payments and hold its reversals; return which rows were
        admitted now (None: all of them)."""
        count = events.num_rows
        keys = pc.binary_join_element_wise(events["payee_id"], events["event_id"], "\x1f")
        identities = keys.to_pylist()
        distinct = set(identities)
        references = events["ref_event_id"]
        special = self.seen.keys() & distinct  # ids seen before
        if len(distinct) == count and references.null_count == count and not special:
            self._admit_new_payments(events, None, identities)
            return None
        if len(distinct) != count:  # ids repeated within the block
            counts = pc.value_counts(keys)
            repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
            special |= set(repeated.to_pylist())
        reversal = references.is_valid().to_numpy(zero_copy_only=False)
        involved = (
            pc.is_in(keys, value_set=pa.array(list(special), pa.string())).to_numpy(
                zero_copy_only=False
            )
            & ~reversal
        )
        quiet = np.flatnonzero(~involved & ~reversal)
        if len(quiet):
            self._admit_new_payments(
                events, pa.array(quiet), [identities[row] for row in quiet.tolist()]
            )
        if reversal.any():
            self._hold(events, np.flatnonzero(reversal))
        keep = ~involved & ~reversal
        rows = np.flatnonzero(involved)
        admitted_ids: list[str] = []
        admitted_ingest: list[int] = []
        for row, event in zip(rows.tolist(), _rows(events, rows, identities), strict=True):
            letter = self._admit_one(event)
            if letter is None:
                keep[row] = True
                admitted_ids.append(event.identity)
                admitted_ingest.append(event.ingest_us)
            else:
                dead.append(letter)
        self._expire_later(admitted_ids, admitted_ingest)
        return keep

    def _admit_new_payments(
        self, events: pa.RecordBatch, rows: pa.Array | None, identities: list[str]
    ) -> None:
        """Admit the given rows (None: all), which are new payments named by no reversal
        in their block."""

        def column(name: str) -> list:
            values = events[name]
            return (values if rows is None else values.take(rows)).to_pylist()

        ingest = column("ingest_us")
        self.seen.update(
            zip(
                identities,
                zip(
                    ingest,
                    column("amount_micros"),
                    map(intern, column("currency")),  # one string each, not one an event
                    map(intern, column("payer_id")),  # shared with the risk state's keys
                    strict=True,
                ),
                strict=True,
            )
        )
        self._expire_later(identities, ingest)

    def _expire_later(self, identities: list[str], ingest: list[int]) -> None:
        if identities:
            self.expiry_queue.append((max(ingest), identities, ingest))

    def _admit_one(self, event: _Row) -> DeadLetter | None:
        """Admit one event: a payment whose id was seen before or repeats in its block
        (in arrival order), or a held reversal (in canonical order)."""
        identity = event.identity
        seen = self.seen.get(identity)
        first_us = seen[0] if seen is not None else None
        if first_us is not None and event.ingest_us - first_us <= self.dedupe_horizon_us:
            return _letter(
                event,
                "duplicate",
                f"event_id {event.event_id!r} first seen at ingestion µs {first_us}",
            )
        if event.ref_event_id is not None:
            letter = self._check_reference(event)
            if letter is not None:
                return letter
        elif event.type == "payment":
            if seen is not None and seen[2] is not None:  # a payment's id used again
                self.superseded.setdefault(identity, []).append(
                    [event.ingest_us, seen, self.reversed_micros.get(identity, 0)]
                )
            self.seen[identity] = (
                event.ingest_us,
                event.amount_micros,
                event.currency,
                event.payer_id,
            )
            self.reversed_micros.pop(identity, None)  # a new event beyond the horizon
            return None
        # seen again beyond the horizon, now as a reversal: a payment's facts stay
        self.seen[identity] = (
            (event.ingest_us, *seen[1:]) if seen else (event.ingest_us, 0, None, "")
        )
        return None

    def _check_reference(self, event: _Row) -> DeadLetter | None:
        reference = event.ref_event_id
        key = f"{event.payee_id}\x1f{reference}"
        seen = self.seen.get(key) or (0, 0, None, "")
        superseded = None
        if seen[0] > event.ingest_us and key in self.superseded:  # used again since?
            superseded = next(
                (old for old in reversed(self.superseded[key]) if old[1][0] <= event.ingest_us),
                None,
            )
            if superseded is not None:
                seen = superseded[1]
        seen_us, amount_micros, currency, payer_id = seen
        if (
            currency is None  # unseen, or not a payment
            or seen_us > event.ingest_us  # ingested after the reversal
            or event.ingest_us - seen_us > self.dedupe_horizon_us
        ):  # beyond the horizon counts as forgotten, whether or not it was evicted yet
            return _letter(
                event,
                "unknown_reference",
                f"{event.type} references payment {reference!r}, unseen for payee {event.payee_id!r}",
            )
        if currency != event.currency:
            return _letter(
                event,
                "reference_mismatch",
                f"{event.type} is for {event.payee_id}/{event.currency} but payment {reference!r} "
                f"was for {event.payee_id}/{currency}",
            )
        if payer_id != event.payer_id:
            return _letter(
                event,
                "reference_mismatch",
                f"{event.type} is for payer {event.payer_id!r} but payment {reference!r} "
                f"was paid by {payer_id!r}",
            )
        reversed_micros = (
            superseded[2] if superseded is not None else self.reversed_micros.get(key, 0)
        ) + event.amount_micros
        if reversed_micros > amount_micros:
            return _letter(
                event,
                "refund_exceeds_payment",
                f"reversals of {reference!r} would reach {reversed_micros} "
                f"micro-units of {amount_micros}",
            )
        if superseded is not None:
            superseded[2] = reversed_micros
        else:
            self.reversed_micros[key] = reversed_micros
        return None

    def _forget_expired(self) -> None:
        """Drop ids the horizon has passed for every input (see the module docstring).

        Blocks leave the queue in arrival order, and only once their newest id is
        past the horizon: an id is never forgotten early, and the checks compare
        ingestion times themselves, so when it is forgotten changes no verdict."""
        live_us = self.frontier.value_live
        if self._held_oldest_us is not None:  # a held reversal may still need its payment
            live_us = min(live_us, self._held_oldest_us)
        if self.superseded:  # no reversal still to come was ingested before the reuse
            self.superseded = {
                key: kept
                for key, old in self.superseded.items()
                if (kept := [entry for entry in old if entry[0] > live_us])
            }
        cutoff_us = live_us - self.dedupe_horizon_us
        queue = self.expiry_queue
        while queue and queue[0][0] < cutoff_us:
            _, identities, ingest = queue.popleft()
            for identity, ingest_us in zip(identities, ingest, strict=True):
                seen = self.seen.get(identity)
                if seen is not None and seen[0] == ingest_us:
                    del self.seen[identity]
                    self.reversed_micros.pop(identity, None)

    def snapshot(self) -> AdmissionState:
        """A copy of the state for recovery (without the expiry queue: `_expiry_queue`)."""
        return AdmissionState(
            self.frontier.state(),
            list(self.seen),
            list(self.seen.values()),
            dict(self.reversed_micros),
            concat(self.held).serialize().to_pybytes() if self.held else b"",
            {key: [list(entry) for entry in old] for key, old in self.superseded.items()},
        )


def _expiry_queue(identities: list[str], seen: list[Seen]) -> deque[ExpiryBlock]:
    """An expiry queue for restored ids: by first-seen time, in blocks.

    It forgets an id later than the queue it replaces might have (a block goes
    when its newest id is past the horizon), never earlier, and when an id is
    forgotten changes no verdict (see `AdmissionShard._forget_expired`).
    """
    first_us = np.fromiter((entry[0] for entry in seen), np.int64, len(seen))
    order = np.argsort(first_us, kind="stable")
    queue: deque[ExpiryBlock] = deque()
    for start in range(0, len(order), RESTORED_EXPIRY_BLOCK):
        rows = order[start : start + RESTORED_EXPIRY_BLOCK]
        ingest = first_us[rows].tolist()
        queue.append((ingest[-1], [identities[row] for row in rows.tolist()], ingest))
    return queue


def _oldest(batches: list[pa.RecordBatch]) -> int | None:
    """The smallest ingestion time in `batches` (None when they hold no row)."""
    values = [pc.min(batch["ingest_us"]).as_py() for batch in batches if batch.num_rows]
    return min(values) if values else None


def _without_raw(events: pa.RecordBatch) -> pa.RecordBatch:
    """`events` with the raw bytes dropped (only dead letters keep them)."""
    return events.set_column(_RAW, "raw", pa.nulls(events.num_rows, pa.binary()))


def _rows(events: pa.RecordBatch, rows: np.ndarray, identities: list[str]) -> list[_Row]:
    """The one-at-a-time fields of the given rows."""
    if not len(rows):
        return []
    picked = pa.array(rows)
    columns = [
        events[name].take(picked).to_pylist()
        for name in (
            "event_id",
            "type",
            "payee_id",
            "payer_id",
            "currency",
            "amount_micros",
            "ingest_us",
            "ref_event_id",
            "source",
            "raw",
        )
    ]
    return [
        _Row(identities[row], *values)
        for row, values in zip(rows.tolist(), zip(*columns, strict=True), strict=True)
    ]


def _letter(event: _Row, reason: str, detail: str) -> DeadLetter:
    """A dead letter for an event that decoded but was not admitted, with its raw bytes."""
    return DeadLetter(event.source, reason, detail, event.raw, event.ingest_us)
