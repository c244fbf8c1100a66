"""The decision seam: every event gets a decision before it can settle.

Until the risk models land, `decide` approves every valid event with no score
and model version ``none``. The risk stage replaces this function's body (or
the step that calls it): it must set ``decision`` to ``approve``, ``review``
or ``decline``, ``risk_score`` in [0, 1], ``model_version`` and ``reasons``.
Settlement only ever settles ``approve``.
"""

from __future__ import annotations

import msgspec
import pyarrow as pa

from centflow.columns import PAYMENT_SCHEMA

DECISIONS = ("approve", "review", "decline")
MODEL_VERSION_NONE = "none"
REASON_NO_MODEL = "no_risk_model"
_DECISION_COLUMNS = ("decision", "risk_score", "model_version", "reasons")


def decide(events: pa.RecordBatch) -> pa.RecordBatch:
    """Fill the decision columns of a block (approve-all until risk scoring exists)."""
    count = events.num_rows
    values: dict[str, pa.Array] = {
        "decision": pa.repeat(pa.scalar("approve"), count),
        "risk_score": pa.nulls(count, pa.float64()),
        "model_version": pa.repeat(pa.scalar(MODEL_VERSION_NONE), count),
        "reasons": pa.repeat(pa.scalar(REASON_NO_MODEL), count),
    }
    for name in _DECISION_COLUMNS:
        events = events.set_column(PAYMENT_SCHEMA.get_field_index(name), name, values[name])
    return events


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
    """(key, value) Kafka messages of the decisions of a block."""
    columns = [
        events[name].to_pylist()
        for name in ("event_id", "decision", "risk_score", "model_version", "reasons", "ingest_us")
    ]
    encode = _encoder.encode
    return [
        (
            event_id.encode(),
            encode(
                DecisionMessage(
                    event_id,
                    decision or "",
                    score,
                    version,
                    tuple(reasons.split(";")) if reasons else (),
                    ingest_us,
                )
            ),
        )
        for event_id, decision, score, version, reasons, ingest_us in zip(*columns, strict=True)
    ]
