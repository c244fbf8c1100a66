"""Admission: de-duplication and reference checks, one shard at a time.

Events are routed by **payee**, like settlement, so admission, the decision
and settlement of a payee all run in one shard of one worker and an event
crosses between worker processes at most once. Within a payee, a payment and
every reversal of it meet: the shard checks that the reference exists for that
payee, that the currency and the payer match, and that reversals never exceed
the payment. A reversal naming a payment of *another* payee finds nothing and is
``unknown_reference``; one in another currency, or for another payer (money goes
back to whoever paid it), is ``reference_mismatch``. So a reversal meets its
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
that is treated as a new event, and a refund whose
payment is older than the horizon is dead-lettered as ``unknown_reference``.
Which copy wins is the first to arrive, the same in every run when both copies
are in one input partition (`centflow produce` keys by payer_id, so a
producer's retries are).

Columnar where it can be. Most events in a block are new payments that no
other event of the block touches; those are admitted with a few bulk
dictionary updates. Only the rest (repeats, reversals, and the payments a
reversal of the same block names) go one at a time, in arrival order; the two
sets share no key, so the order between them changes nothing.
"""

from __future__ import annotations

from collections import deque

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
#: Ids per expiry block when a snapshot is restored (see `AdmissionShard.snapshot`).
RESTORED_EXPIRY_BLOCK = 4096

_RAW = PAYMENT_SCHEMA.get_field_index("raw")


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
        else:
            self.frontier = Frontier.restore(state.frontier)
            self.seen = dict(zip(state.identities, state.seen, strict=True))
            self.reversed_micros = dict(state.reversed_micros)
            self.expiry_queue = _expiry_queue(state.identities, state.seen)

    def admit(self, envelopes: list[Envelope]) -> tuple[pa.RecordBatch, list[DeadLetter]]:
        """Admitted events in arrival order (raw bytes dropped), and the dead letters of the rest."""
        admitted: list[pa.RecordBatch] = []
        dead: list[DeadLetter] = []
        for envelope in envelopes:
            events = envelope.events
            if events.num_rows:
                keep = self._admit_block(events, dead)
                kept = events.set_column(_RAW, "raw", pa.nulls(events.num_rows, pa.binary()))
                if keep is not None and not keep.all():
                    kept = kept.filter(pa.array(keep))
                admitted.append(kept)
            self.frontier.update(envelope.origin, envelope.watermark_us)
        self._forget_expired()
        invariant(
            sum(batch.num_rows for batch in admitted) + len(dead)
            == sum(envelope.events.num_rows for envelope in envelopes),
            "admission lost or invented an event",
        )
        return concat(admitted), dead

    def _admit_block(self, events: pa.RecordBatch, dead: list[DeadLetter]) -> np.ndarray | None:
        """Admit a block; return which rows were admitted (None: all of them)."""
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
        referenced = pc.binary_join_element_wise(events["payee_id"], references, "\x1f")
        special |= set(referenced.drop_null().to_pylist())
        involved = pc.or_(
            pc.is_in(keys, value_set=pa.array(list(special), pa.string())), references.is_valid()
        ).to_numpy(zero_copy_only=False)
        quiet = np.flatnonzero(~involved)
        if len(quiet):
            self._admit_new_payments(
                events, pa.array(quiet), [identities[row] for row in quiet.tolist()]
            )
        keep = ~involved
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
                    column("currency"),
                    column("payer_id"),
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
        """Admit one event of a block's involved rows (repeats, reversals, payments a
        reversal of the block names), in arrival order."""
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
        seen_us, amount_micros, currency, payer_id = self.seen.get(key) or (0, 0, None, "")
        if (
            currency is None  # unseen, or not a payment
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
        reversed_micros = self.reversed_micros.get(key, 0) + event.amount_micros
        if reversed_micros > amount_micros:
            return _letter(
                event,
                "refund_exceeds_payment",
                f"reversals of {reference!r} would reach {reversed_micros} "
                f"micro-units of {amount_micros}",
            )
        self.reversed_micros[key] = reversed_micros
        return None

    def _forget_expired(self) -> None:
        """Drop ids the horizon has passed for every input (see the module docstring).

        Blocks leave the queue in arrival order, and only once their newest id is
        past the horizon: an id is never forgotten early, and the checks compare
        ingestion times themselves, so when it is forgotten changes no verdict."""
        cutoff_us = self.frontier.value_live - self.dedupe_horizon_us
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
