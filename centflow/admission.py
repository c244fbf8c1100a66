"""Admission: de-duplication and reference checks, one shard at a time.

Events are routed by **payee**, like settlement, so admission, the decision
and settlement of a payee all run in one shard of one worker and an event
crosses between worker processes at most once. Within a payee, a payment and
every reversal of it meet: the shard checks that the reference exists for that
payee, that the currency matches, and that reversals never exceed the payment.
A reversal naming a payment of *another* payee finds nothing and is
``unknown_reference``; one in another currency is ``reference_mismatch``.

De-duplication horizon. An event seen again, the same event_id for the same
payee, within `dedupe_horizon_us` of ingestion time after its first sighting
is a duplicate: it goes to the dead letters with reason ``duplicate`` (its raw
bytes kept) and has no other effect. (A message reusing an event_id for
another payee is a different event: its content conflicts, so it is no retry.) Entries older than the horizon are forgotten once the frontier has
passed them, and only then, so whether an event is a duplicate never depends
on when state was evicted. **Beyond the horizon nothing is guaranteed**: a
repeat arriving later than that is treated as a new event, and a refund whose
payment is older than the horizon is dead-lettered as ``unknown_reference``.
Which copy wins is the first to arrive, the same in every run when both copies
are in one input partition (`centflow produce` keys by payer_id, so a
producer's retries are).
"""

from __future__ import annotations

from collections import deque

import msgspec

from centflow.errors import invariant
from centflow.events import DeadLetter, Payment
from centflow.progress import Envelope, Frontier


class PaymentMemory(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What a shard remembers of a payment to check its reversals."""

    payee_id: str
    currency: str
    amount_micros: int
    reversed_micros: int


class AdmissionState(msgspec.Struct, array_like=True):
    """Picklable state of one admission shard."""

    frontier: tuple[dict[str, int], dict[str, int]]
    first_seen_us: dict[str, int]
    payments: dict[str, PaymentMemory]
    expiry_queue: list[tuple[int, str]]

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        """Snapshots pickle through msgpack (much cheaper for large state)."""
        return (_state_from_msgpack, (_encoder.encode(self),))


_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(AdmissionState)


def _state_from_msgpack(data: bytes) -> AdmissionState:
    return _state_decoder.decode(data)


class AdmissionShard:
    """De-duplicates and checks references for the events of one shard."""

    def __init__(
        self, origins: list[str], dedupe_horizon_us: int, state: AdmissionState | None = None
    ):
        invariant(dedupe_horizon_us > 0, "the de-duplication horizon must be positive")
        self.dedupe_horizon_us = dedupe_horizon_us
        if state is None:
            self.frontier = Frontier(origins)
            self.first_seen_us: dict[str, int] = {}
            self.payments: dict[str, PaymentMemory] = {}
            self.expiry_queue: deque[tuple[int, str]] = deque()
        else:
            self.frontier = Frontier.restore(state.frontier)
            self.first_seen_us = dict(state.first_seen_us)
            self.payments = dict(state.payments)
            self.expiry_queue = deque(state.expiry_queue)

    def admit(self, envelopes: list[Envelope]) -> tuple[list[Payment], list[DeadLetter]]:
        """Admitted events in arrival order, and the dead letters of the rest."""
        admitted: list[Payment] = []
        dead: list[DeadLetter] = []
        for envelope in envelopes:
            for event in envelope.events:
                letter = self._admit_one(event)
                if letter is None:
                    event.raw = b""  # the raw bytes were only kept for a dead letter
                    admitted.append(event)
                else:
                    dead.append(letter)
            self.frontier.update(envelope.origin, envelope.watermark_us)
        self._forget_expired()
        invariant(
            len(admitted) + len(dead) == sum(len(envelope.events) for envelope in envelopes),
            "admission lost or invented an event",
        )
        return admitted, dead

    def _admit_one(self, event: Payment) -> DeadLetter | None:
        identity = f"{event.payee_id}\x1f{event.event_id}"
        first_us = self.first_seen_us.get(identity)
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
            self.payments[identity] = PaymentMemory(
                event.payee_id, event.currency, event.amount_micros, 0
            )
        self.first_seen_us[identity] = event.ingest_us
        self.expiry_queue.append((event.ingest_us, identity))
        return None

    def _check_reference(self, event: Payment) -> DeadLetter | None:
        reference = event.ref_event_id
        invariant(reference is not None, "a reversal without a reference reached admission")
        key = f"{event.payee_id}\x1f{reference}"
        memory = self.payments.get(key)
        if memory is None:
            return _letter(
                event,
                "unknown_reference",
                f"{event.type} references payment {reference!r}, unseen for payee {event.payee_id!r}",
            )
        if memory.payee_id != event.payee_id or memory.currency != event.currency:
            return _letter(
                event,
                "reference_mismatch",
                f"{event.type} is for {event.payee_id}/{event.currency} but payment {reference!r} "
                f"was for {memory.payee_id}/{memory.currency}",
            )
        if memory.reversed_micros + event.amount_micros > memory.amount_micros:
            return _letter(
                event,
                "refund_exceeds_payment",
                f"reversals of {reference!r} would reach {memory.reversed_micros + event.amount_micros} "
                f"micro-units of {memory.amount_micros}",
            )
        self.payments[key] = PaymentMemory(
            memory.payee_id,
            memory.currency,
            memory.amount_micros,
            memory.reversed_micros + event.amount_micros,
        )
        return None

    def _forget_expired(self) -> None:
        """Drop ids the horizon has passed for every input (see the module docstring)."""
        cutoff_us = self.frontier.value_live - self.dedupe_horizon_us
        queue = self.expiry_queue  # arrival order: roughly ingestion order, never evicts early
        while queue and queue[0][0] < cutoff_us:
            ingest_us, identity = queue.popleft()
            if self.first_seen_us.get(identity) == ingest_us:
                del self.first_seen_us[identity]
                self.payments.pop(identity, None)

    def snapshot(self) -> AdmissionState:
        """A copy of the state for recovery."""
        return AdmissionState(
            self.frontier.state(),
            dict(self.first_seen_us),
            dict(self.payments),
            list(self.expiry_queue),
        )


def _letter(event: Payment, reason: str, detail: str) -> DeadLetter:
    """A dead letter for an event that decoded but was not admitted, with its raw bytes."""
    return DeadLetter(event.source, reason, detail, event.raw, event.ingest_us)
