"""The decision seam: every event gets a decision before it can settle.

Until the risk models land, `decide` approves every valid event with no score
and model version ``none``. The risk stage replaces this function's body (or
the step that calls it): it must set ``decision`` to ``approve``, ``review``
or ``decline``, ``risk_score`` in [0, 1], ``model_version`` and ``reasons``.
Settlement only ever settles ``approve``.
"""

from __future__ import annotations

import msgspec

from centflow.events import Payment

DECISIONS = ("approve", "review", "decline")
MODEL_VERSION_NONE = "none"


def decide(events: list[Payment]) -> list[Payment]:
    """Fill the decision fields of each event (approve-all until risk scoring exists)."""
    for event in events:
        event.decision = "approve"
        event.risk_score = None
        event.model_version = MODEL_VERSION_NONE
        event.reasons = ("no_risk_model",)
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


def decision_messages(events: list[Payment]) -> list[tuple[bytes, bytes]]:
    """(key, value) Kafka messages of the decisions of `events`."""
    return [
        (
            event.event_id.encode(),
            _encoder.encode(
                DecisionMessage(
                    event.event_id,
                    event.decision or "",
                    event.risk_score,
                    event.model_version,
                    event.reasons,
                    event.ingest_us,
                )
            ),
        )
        for event in events
    ]
