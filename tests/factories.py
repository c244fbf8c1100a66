"""Small builders for domain records in tests."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import msgspec

from centflow.config import RiskConfig
from centflow.ingest.columns import to_batch
from centflow.ingest.events import Payment, Split
from centflow.progress import Envelope
from centflow.risk.scoring import RiskShard
from centflow.risk.shard import Group, PayerFeatureShard, described_events
from centflow.risk.tiers import TierLimits

SECOND_US = 1_000_000


def payment(
    event_id: str,
    *,
    occurred_us: int,
    ingest_us: int | None = None,
    payee_id: str = "m1",
    payer_id: str = "p1",
    amount_micros: int = 100_000,
    currency: str = "USD",
    type: str = "payment",
    ref_event_id: str | None = None,
    rail: str = "card",
    decision: str | None = "approve",
    splits: tuple[tuple[str, int], ...] | None = None,
) -> Payment:
    """A decided Payment with sensible defaults."""
    return Payment(
        event_id=event_id,
        type=type,
        occurred_us=occurred_us,
        ingest_us=occurred_us if ingest_us is None else ingest_us,
        payer_id=payer_id,
        payee_id=payee_id,
        amount_micros=amount_micros,
        currency=currency,
        rail=rail,
        country="US",
        source=f"test:{event_id}",
        raw=msgspec.json.encode({"event_id": event_id}),
        ref_event_id=ref_event_id,
        decision=decision,
        splits=None if splits is None else tuple(Split(party, bps) for party, bps in splits),
    )


def envelope(origin: str, watermark_us: int, events: list[Payment], shard: int = 0) -> Envelope:
    """An envelope of `events` (as a record batch) from `origin`."""
    return Envelope(origin, shard, watermark_us, to_batch(events))


class PayerRisk:
    """A payer shard's features step and the decision step, chained as the dataflow
    chains them (`dataflows.pipeline`): what one payer shard's events get."""

    ORIGIN = "payer/0"

    def __init__(
        self,
        origins: list[str],
        config: RiskConfig,
        tiers: TierLimits,
        state: tuple[Any, ...] | None = None,
    ) -> None:
        self.features = PayerFeatureShard(origins, state and state[0])
        self.decisions = RiskShard([self.ORIGIN], config, tiers, state and state[1])

    def push(self, envelopes: list[Envelope]) -> list[Group]:
        block, context = described_events(self.features.push(envelopes))
        watermark_us = self.features.frontier.value
        return self.decisions.push([Envelope(self.ORIGIN, 0, watermark_us, block, context)])

    def snapshot(self) -> tuple[Any, ...]:
        return self.features.snapshot(), self.decisions.snapshot()


def centflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m centflow ARGS` in a child, with no ``CENTFLOW_*`` variable but `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CENTFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "centflow", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**clean, **(env or {})},
    )
