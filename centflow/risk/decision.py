"""What ``payments.decisions`` carries: one message per event, keyed by event_id.

The decisions themselves are made in `centflow.risk.scoring`; settlement only
ever settles ``approve``. A payment held for review gets a second message when
it is resolved (`centflow.risk.review`), published by settlement: decision
``approve`` (reason ``review_released``) or ``decline`` (``review_declined``),
with the time and note of the resolution, so a consumer keeping the latest
message per key sees each event's final decision. A reversal following its
payment's resolution gets one too.
"""

from __future__ import annotations

import msgspec
import pyarrow as pa

from centflow.errors import invariant

DECISIONS = ("approve", "review", "decline")
_DECISION_COLUMNS = ("decision", "risk_score", "model_version", "reasons")


class DecisionMessage(msgspec.Struct):
    """What ``payments.decisions`` carries, keyed by event_id."""

    event_id: str
    decision: str
    risk_score: float | None
    model_version: str | None
    reasons: tuple[str, ...]
    ingested_at_us: int


_encoder = msgspec.json.Encoder()


def decision_messages(events: pa.RecordBatch) -> list[tuple[bytes, bytes]]:
    """(key, value) Kafka messages of the decisions of a block.

    When every event of the block has the same decision, score, model and
    reasons (a block of reversals, or one the models all approve alike),
    only the event id and ingestion time differ: each message is then a
    template around those two, byte for byte what encoding the whole
    `DecisionMessage` gives, at under half the cost.
    """
    shared = [events[name].unique() for name in _DECISION_COLUMNS]
    if events.num_rows and all(len(values) == 1 for values in shared):
        decision, score, version, reasons = (values[0].as_py() for values in shared)
        return _templated(events, _message(".", decision, score, version, reasons, 0))
    return _one_by_one(events)


def _message(
    event_id: str,
    decision: str | None,
    score: float | None,
    version: str | None,
    reasons: str | None,
    ingest_us: int,
) -> DecisionMessage:
    return DecisionMessage(
        event_id,
        decision or "",
        score,
        version,
        tuple(reasons.split(";")) if reasons else (),
        ingest_us,
    )


def _one_by_one(events: pa.RecordBatch) -> list[tuple[bytes, bytes]]:
    columns = [
        events[name].to_pylist()
        for name in ("event_id", "decision", "risk_score", "model_version", "reasons", "ingest_us")
    ]
    encode = _encoder.encode
    return [
        (event_id.encode(), encode(_message(event_id, *row)))
        for event_id, *row in zip(*columns, strict=True)
    ]


_ID_HEAD = b'{"event_id":"."'
_INGEST_TAIL = b'"ingested_at_us":0}'


def _templated(events: pa.RecordBatch, sample: DecisionMessage) -> list[tuple[bytes, bytes]]:
    """Messages that differ only in event id and ingestion time from `sample`."""
    encoded = _encoder.encode(sample)
    invariant(
        encoded.startswith(_ID_HEAD) and encoded.endswith(_INGEST_TAIL),
        "unexpected decision message layout: %r",
        encoded,
    )
    middle = encoded[len(_ID_HEAD) : -len(b"0}")]  # ,"decision":...,"ingested_at_us":
    encode = _encoder.encode
    return [
        (event_id.encode(), b'{"event_id":%s%s%d}' % (encode(event_id), middle, ingest_us))
        for event_id, ingest_us in zip(
            events["event_id"].to_pylist(), events["ingest_us"].to_pylist(), strict=True
        )
    ]


#: The reason a resolution's message leads with, by ``review_outcome``.
RESOLUTION_DECISIONS = {
    "released": ("approve", "review_released"),
    "declined": ("decline", "review_declined"),
}


class ResolutionMessage(DecisionMessage):
    """A decision of ``payments.decisions`` made by a person: a review resolved."""

    resolved_at_us: int
    review_note: str | None


def resolution_messages(events: pa.RecordBatch) -> list[tuple[bytes, bytes]]:
    """(key, value) Kafka messages of resolved events (`review_outcome` released or
    declined), one each: few, made by people."""
    columns = [
        events[name].to_pylist()
        for name in (
            "event_id", "review_outcome", "risk_score", "model_version", "reasons",
            "ingest_us", "resolved_us", "review_note",
        )
    ]  # fmt: skip
    out = []
    for event_id, outcome, score, version, reasons, ingest_us, resolved_us, note in zip(
        *columns, strict=True
    ):
        invariant(outcome in RESOLUTION_DECISIONS, "event %s is not resolved", event_id)
        decision, reason = RESOLUTION_DECISIONS[outcome]
        earlier = tuple(reasons.split(";")) if reasons else ()
        message = ResolutionMessage(
            event_id, decision, score, version, (reason, *earlier), ingest_us, resolved_us, note
        )
        out.append((event_id.encode(), _encoder.encode(message)))
    return out
