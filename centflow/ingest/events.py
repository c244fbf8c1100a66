"""The records that flow through centflow, and the stable reason codes.

Everything here is a `msgspec.Struct`: fast to build, compact, and picklable
(recovery snapshots and the exchange between worker processes pickle them).
Times are ``int`` microseconds since the Unix epoch (UTC); amounts are ``int``
micro-units (see `centflow.money.amounts`).

Two clocks per event, and why: ``occurred_us`` is the event time the producer
claims; ``ingest_us`` is when the event entered the log (the Kafka message
timestamp, or for a replay file the log clock of `centflow.ingest.replay`). Ingestion
time is monotonic per input partition, so comparing the two decides lateness
from the event itself, whatever order the partitions are interleaved in.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Reason(StrEnum):
    """Stable dead-letter reason codes: analysts and alerts key on these strings."""

    OVERSIZE = "oversize"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    INVALID_TYPE = "invalid_type"
    INVALID_TIMESTAMP = "invalid_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    INVALID_AMOUNT = "invalid_amount"
    UNKNOWN_CURRENCY = "unknown_currency"
    INVALID_RAIL = "invalid_rail"
    INVALID_COUNTRY = "invalid_country"
    INVALID_SPLITS = "invalid_splits"
    INVALID_RISK_SIGNALS = "invalid_risk_signals"
    PAN_IN_ID = "pan_in_id"
    DUPLICATE = "duplicate"
    UNKNOWN_REFERENCE = "unknown_reference"
    REFERENCE_MISMATCH = "reference_mismatch"
    REFUND_EXCEEDS_PAYMENT = "refund_exceeds_payment"


EVENT_TYPES = frozenset({"payment", "refund", "chargeback"})
REVERSAL_TYPES = frozenset({"refund", "chargeback"})
RAILS = frozenset({"card", "ach", "sepa", "swift", "lightning", "wallet"})


class Split(msgspec.Struct, frozen=True, array_like=True):
    """One party's share of the payee's net, in basis points."""

    party_id: str
    bps: int


class Payment(msgspec.Struct, array_like=True, gc=False):
    """A validated payment, refund or chargeback.

    Mutable only in the decision fields, which the decision stage fills, and
    `late`, which settlement sets.
    """

    event_id: str
    type: str
    occurred_us: int
    ingest_us: int
    payer_id: str
    payee_id: str
    amount_micros: int
    currency: str
    rail: str
    country: str
    source: str
    raw: bytes = b""
    ref_event_id: str | None = None
    splits: tuple[Split, ...] | None = None
    device_id: str | None = None
    ip: str | None = None
    risk_signals: dict[str, float] | None = None
    decision: str | None = None
    risk_score: float | None = None
    model_version: str | None = None
    reasons: tuple[str, ...] = ()
    late: bool = False

    @property
    def is_reversal(self) -> bool:
        """Refunds and chargebacks reverse an earlier payment."""
        return self.type != "payment"


class DeadLetter(msgspec.Struct, array_like=True, gc=False):
    """A message that could not become a payment, with everything to replay it."""

    source: str
    reason: str
    detail: str
    raw: bytes
    received_us: int


class RawMessage(msgspec.Struct, array_like=True, gc=False):
    """One input message as read: its position, ingestion time and bytes."""

    source: str
    ingest_us: int
    value: bytes


class SourceBatch(msgspec.Struct, array_like=True, gc=False):
    """What a source partition emits: messages plus how far the partition has got.

    `watermark_us` is the partition's largest ingestion time so far (every
    later message has an ingestion time at least that large), or
    `centflow.limits.WATERMARK_END_US` when the partition has ended.
    """

    partition: str
    messages: list[RawMessage]
    watermark_us: int
