"""Bytewax adapters around the domain's shard classes, and the small mapping steps.

Each stateful step holds one domain object per shard key (`AdmissionShard`,
`SettlementShard`) and only translates between Bytewax's calls and the
domain's methods. All logic lives in `centflow`.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
from bytewax.operators import StatefulBatchLogic

from centflow.config import PipelineConfig
from centflow.errors import invariant
from centflow.ingest.admission import AdmissionShard, AdmissionState
from centflow.ingest.columns import Decoded
from centflow.ingest.decode import decode_block
from centflow.ingest.events import DeadLetter, SourceBatch
from centflow.limits import (
    MICROS_PER_SECOND,
    SETTLE_DELAY_S,
    SETTLE_ROWS_MAX,
    SHARD_COUNT,
    WATERMARK_END_US,
)
from centflow.money.batches import Settled
from centflow.money.fees import schedule_terms
from centflow.money.fx import RateBlock, RateEnvelope, fx_book
from centflow.money.settlement import SettlementShard, SettlementState
from centflow.ops.metrics import worker_metrics
from centflow.ops.status import StatusWriter
from centflow.progress import Envelope, Router, shard_key, shard_name, shard_of
from centflow.recon.tables import dead_letter_row, payments_table
from centflow.risk.decision import decision_messages, resolution_messages
from centflow.risk.review import Resolution, ReviewBlock, ReviewEnvelope
from centflow.risk.scoring import RiskShard, decided_events
from centflow.risk.shard import Group, PayeeContextShard, PayerFeatureShard, described_events
from centflow.risk.tiers import TierLimits
from dataflows.recovery import Packed, packed, unpacked
from sinks.kafka import KafkaPublisher
from sinks.parquet import ShardTableWriter, TableRows, WriterState, writer_key

KeyedEnvelope = tuple[str, Envelope]
Tagged = tuple[str, Any]  # ("route", KeyedEnvelope) or ("dead", list[DeadLetter])


def decoder(config: PipelineConfig) -> Callable[[SourceBatch | Decoded], Decoded]:
    """The decode step: every message becomes one payment or one dead letter."""
    future_skew_us = config.future_skew_us
    metrics = worker_metrics()
    kafka = config.replay_path is None

    def decode_batch(batch: SourceBatch | Decoded) -> Decoded:
        if not isinstance(batch, Decoded):  # the replay and Kafka sources decode as they read
            payments, dead = decode_block(batch.messages, future_skew_us)
            batch = Decoded(batch.partition, payments, dead, batch.watermark_us)
        count = batch.payments.num_rows + len(batch.dead)
        if count:
            last_offset = last_kafka_offset(batch) if kafka else None
            metrics.events_in(batch.partition, count, last_offset)
        return batch

    return decode_batch


def last_kafka_offset(decoded: Decoded) -> int | None:
    """The largest offset in a Kafka block, from the last source position of its
    payments and of its dead letters (``<topic>/<partition>/<offset>``, each in offset
    order); None for positions of another form (a test's source)."""
    positions = [letter.source for letter in decoded.dead[-1:]]
    if decoded.payments.num_rows:
        positions.append(decoded.payments.column("source")[-1].as_py())
    offsets = [position.rpartition("/")[2] for position in positions]
    return max((int(offset) for offset in offsets if offset.isdigit()), default=None)


def route_to_shards(decoded: Decoded) -> list[KeyedEnvelope]:
    """Fan a decoded batch out to every shard (events by payee, the watermark to all):
    admission, decision and settlement all route by payee."""
    return Router(decoded.partition).route(decoded.payments, decoded.watermark_us, "payee_id")


def decoded_dead_letters(decoded: Decoded) -> list[DeadLetter]:
    """The dead letters of a decoded batch."""
    worker_metrics().dead_letters(decoded.dead)
    return decoded.dead


ADMISSION_ORIGIN = "admit"


def admission_origins() -> list[str]:
    """The origin a payee-context shard hears from: the admission step of the same shard."""
    return [ADMISSION_ORIGIN]


class AdmissionLogic(StatefulBatchLogic[Envelope, Tagged, Packed]):
    """One admission shard: de-duplicate, check references, pass on to the same shard's
    decision and settlement (same key, same worker: no exchange)."""

    def __init__(self, config: PipelineConfig, resume: tuple[int, AdmissionState] | None) -> None:
        self._index = resume[0] if resume else -1
        self._shard = AdmissionShard(
            list(config.partitions), config.dedupe_horizon_us, resume[1] if resume else None
        )
        self._sent_us: int | None = None

    def on_batch(self, values: list[Envelope]) -> tuple[list[Tagged], bool]:
        self._index = values[0].shard
        admitted, dead = self._shard.admit(values)
        out: list[Tagged] = []
        watermark_us = self._shard.watermark_us
        if admitted.num_rows or watermark_us != self._sent_us:
            self._sent_us = watermark_us
            envelope = Envelope(ADMISSION_ORIGIN, self._index, watermark_us, admitted)
            out.append(("route", (shard_key(self._index), envelope)))
        if dead:
            out.append(("dead", dead))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> Packed:
        return packed((self._index, self._shard.snapshot()))


def admission_builder(
    config: PipelineConfig,
) -> Callable[[Packed | None], AdmissionLogic]:
    """Builds (or resumes) the logic of one admission shard."""
    return lambda resume: AdmissionLogic(config, unpacked(resume))


def routed_envelopes(tagged: tuple[str, Tagged]) -> list[KeyedEnvelope]:
    """The envelopes an admission shard sent on."""
    _, (tag, payload) = tagged
    return [payload] if tag == "route" else []


def admission_dead_letters(tagged: tuple[str, Tagged]) -> list[DeadLetter]:
    """The dead letters an admission shard produced."""
    _, (tag, payload) = tagged
    if tag != "dead":
        return []
    worker_metrics().dead_letters(payload)
    return payload


PAYEE_CONTEXT_ORIGIN = "payee/"
PAYER_FEATURES_ORIGIN = "payer/"
RISK_ORIGIN = "risk"
#: The one key of the decision step: one model for all payers learns every label
RISK_KEY = "risk"


def payee_context_origins() -> list[str]:
    """The origins a payer shard's features step hears from: every payee shard's
    context step."""
    return [f"{PAYEE_CONTEXT_ORIGIN}{shard}" for shard in range(SHARD_COUNT)]


def payer_features_origins() -> list[str]:
    """The origins the decision step hears from: every payer shard's features step."""
    return [f"{PAYER_FEATURES_ORIGIN}{shard}" for shard in range(SHARD_COUNT)]


REVIEW_ORIGIN = "reviews"


def risk_origins(rate_partitions: tuple[str, ...] = ()) -> list[str]:
    """The origins a settlement shard hears from: the decision step, the review
    resolutions (`centflow.risk.review`) and each partition of the FX rates topic,
    if rates come from one (`centflow.money.fx`)."""
    return [RISK_ORIGIN, REVIEW_ORIGIN, *rate_partitions]


def route_rates(block: RateBlock) -> list[tuple[str, RateEnvelope]]:
    """Every settlement shard gets every rate (and the partition's watermark): each
    converts its own payees' batches."""
    return [
        (shard_key(shard), RateEnvelope(block.partition, shard, block.watermark_us, block.rates))
        for shard in range(SHARD_COUNT)
    ]


def rate_dead_letters(block: RateBlock) -> list[DeadLetter]:
    """The messages of the rates topic that were not usable rates."""
    return block.dead


def route_reviews(block: ReviewBlock) -> list[tuple[str, ReviewEnvelope]]:
    """A block of resolutions to every settlement shard (each its payees' resolutions
    and the watermark): the review input is read rarely, so every shard hears of it."""
    by_shard: dict[int, list[Resolution]] = {shard: [] for shard in range(SHARD_COUNT)}
    for resolution in block.resolutions:
        by_shard[shard_of(resolution.payee_id)].append(resolution)
    return [
        (shard_key(shard), ReviewEnvelope(REVIEW_ORIGIN, shard, block.watermark_us, resolutions))
        for shard, resolutions in by_shard.items()
    ]


def rekeyed(item: tuple[str, KeyedEnvelope]) -> KeyedEnvelope:
    """An envelope a keyed step addressed to another shard, under that shard's key."""
    return item[1]


class PayeeContextLogic(StatefulBatchLogic[Envelope, KeyedEnvelope, Packed]):
    """One payee shard's risk context: attaches the payee features to its admitted
    events (same key as admission: no exchange) and sends them on by payer."""

    def __init__(self, resume: tuple[Any, ...] | None) -> None:
        self._shard = PayeeContextShard(admission_origins(), resume and resume[1])
        self._router: Router | None = None
        self._index = resume[0] if resume else -1

    def on_batch(self, values: list[Envelope]) -> tuple[list[KeyedEnvelope], bool]:
        if self._router is None:
            self._index = values[0].shard
            self._router = Router(f"{PAYEE_CONTEXT_ORIGIN}{self._index}")
        events, context = described_events(self._shard.push(values))
        watermark_us = self._shard.frontier.value
        return self._router.route(
            events, watermark_us, "payer_id", context
        ), StatefulBatchLogic.RETAIN

    def snapshot(self) -> Packed:
        return packed((self._index, self._shard.snapshot()))


class PayerFeaturesLogic(StatefulBatchLogic[Envelope, KeyedEnvelope, Packed]):
    """One payer shard's features (`centflow.risk.shard.PayerFeatureShard`): adds the
    payer features to the payee context of its events and sends them, with its
    watermark, to the decision step."""

    def __init__(self, resume: tuple[Any, ...] | None) -> None:
        self._shard = PayerFeatureShard(payee_context_origins(), resume and resume[1])
        self._index = resume[0] if resume else -1
        self._sent_us: int | None = None

    def on_batch(self, values: list[Envelope]) -> tuple[list[KeyedEnvelope], bool]:
        self._index = values[0].shard
        events, context = described_events(self._shard.push(values))
        watermark_us = self._shard.frontier.value
        if not events.num_rows and watermark_us == self._sent_us:
            return [], StatefulBatchLogic.RETAIN
        self._sent_us = watermark_us
        origin = f"{PAYER_FEATURES_ORIGIN}{self._index}"
        envelope = Envelope(origin, 0, watermark_us, events, context)
        return [(RISK_KEY, envelope)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> Packed:
        return packed((self._index, self._shard.snapshot()))


class RiskLogic(StatefulBatchLogic[Envelope, KeyedEnvelope, Packed]):
    """The decision step, one for all payers: score and decide every event
    (`centflow.risk.scoring`) with one model that learns from every label, publish
    each decision to ``payments.decisions`` (at-least-once: flushed at every snapshot
    and at the end), and send the events on to their payee's settlement shard.

    Decisions go out as soon as they are made: before the shard learns (as an epoch
    starts, it first publishes what it decided in that call) and before it commits
    what the frontier passed, which only prepares its state for later events."""

    def __init__(
        self,
        config: PipelineConfig,
        tiers: TierLimits,
        publisher: Callable[[], KafkaPublisher] | None,
        resume: tuple[Any, ...] | None,
    ) -> None:
        self._shard = RiskShard(
            payer_features_origins(),
            config.risk,
            tiers,
            resume and resume[1],
            reference_keep_us=config.dedupe_horizon_us,
        )
        self._publisher = publisher() if publisher is not None else None
        self._router = Router(RISK_ORIGIN)
        self._metrics = worker_metrics()
        self._wall_clock_ingestion = config.replay_path is None  # Kafka timestamps: latency
        self._published = 0  # groups of this call whose decisions are out
        self._shard.before_learning = self._publish

    def on_batch(self, values: list[Envelope]) -> tuple[list[KeyedEnvelope], bool]:
        self._published = 0
        groups = self._shard.describe(values)  # may publish what it decided before learning
        invariant(self._published <= len(groups), "published more groups than described")
        events = decided_events(groups)
        if self._published:
            self._produce(decided_events(groups[self._published :]))
        else:
            self._produce(events)
        self._shard.commit_passed()  # after publishing: it only prepares later groups
        now_us = time.time_ns() // 1000 if self._wall_clock_ingestion else None
        self._metrics.decided(events, now_us)
        watermark_us = self._shard.frontier.value
        return self._router.route(events, watermark_us, "payee_id"), StatefulBatchLogic.RETAIN

    def _publish(self, groups: list[Group]) -> None:
        """Publish the decisions of groups decided before the shard learns."""
        self._published += len(groups)
        self._produce(decided_events(groups))

    def _produce(self, events: pa.RecordBatch) -> None:
        if self._publisher is not None and events.num_rows:
            self._publisher.produce(decision_messages(events))

    def on_eof(self) -> tuple[list[KeyedEnvelope], bool]:
        if self._publisher is not None:
            self._publisher.flush()
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> Packed:
        if self._publisher is not None:
            self._publisher.flush()
        return packed((RISK_KEY, self._shard.snapshot()))


def payee_context_builder() -> Callable[[Packed | None], PayeeContextLogic]:
    """Builds (or resumes) the payee-context logic of one payee shard."""
    return lambda resume: PayeeContextLogic(unpacked(resume))


def payer_features_builder() -> Callable[[Packed | None], PayerFeaturesLogic]:
    """Builds (or resumes) the features step of one payer shard."""
    return lambda resume: PayerFeaturesLogic(unpacked(resume))


def risk_builder(
    config: PipelineConfig, client: dict[str, str] | None
) -> Callable[[Packed | None], RiskLogic]:
    """Builds (or resumes) the decision step; it publishes decisions only when a
    Kafka client is given."""
    topic = config.topics.decisions
    publisher = None if client is None else (lambda: KafkaPublisher.get(client, topic))
    if publisher is not None:
        publisher().warm_up()  # as the worker starts, not when its first payment arrives
    tiers = TierLimits.from_config(config.risk)  # read once per worker process
    return lambda resume: RiskLogic(config, tiers, publisher, unpacked(resume))


#: The shard's state, its writer's, and the envelopes it holds not yet settled.
SettleInput = Envelope | ReviewEnvelope | RateEnvelope
SettlementResume = tuple[SettlementState, WriterState, list[SettleInput]]


def _rows(envelope: SettleInput) -> int:
    """What an envelope brings a settlement shard: its events, resolutions or rates."""
    if isinstance(envelope, ReviewEnvelope):
        return len(envelope.resolutions)
    if isinstance(envelope, RateEnvelope):
        return len(envelope.rates)
    return envelope.events.num_rows


class SettlementLogic(StatefulBatchLogic[SettleInput, int, Packed]):
    """One settlement shard: window, close and net the payees it owns, and write
    the rows of what closed (see `sinks.parquet.ShardTableWriter` for why here);
    publish the decisions of reviews resolved (at-least-once, like the risk step's).

    Settling is not on any payment's way to its decision, but it shares the worker
    with that way: so the shard holds what arrives and settles it in one call once
    `SETTLE_DELAY_S` has passed since the first envelope it holds (or at
    `SETTLE_ROWS_MAX` events, or an input's end), not a call per small block. The
    tables are the same however the envelopes are grouped (`SettlementShard.settle`);
    the held envelopes are part of the snapshot.

    Emits the number of events that settled, for progress and tests.
    """

    def __init__(
        self,
        config: PipelineConfig,
        publisher: Callable[[], KafkaPublisher] | None,
        resume: SettlementResume | None,
    ) -> None:
        self._publisher = publisher() if publisher is not None else None
        self._shard = SettlementShard(
            risk_origins(config.rate_partitions + config.payee_partitions),
            config.window_us,
            config.lateness_us,
            resume and resume[0],
            schedule_terms(config.fees),
            fx_book(config.fx),
            config.fx.rate_wait_s * MICROS_PER_SECOND,
            config.fx.rate_horizon_s * MICROS_PER_SECOND if config.rate_partitions else None,
        )
        self._writer = ShardTableWriter(config.parquet_dir, resume and resume[1])
        self._out_dir = Path(config.out_dir)
        self._status: StatusWriter | None = None
        self._settled = 0
        self._held: list[SettleInput] = list(resume[2]) if resume and len(resume) > 2 else []
        self._held_rows = sum(_rows(envelope) for envelope in self._held)
        self._held_since_s: float | None = time.monotonic() if self._held else None

    def on_batch(self, values: list[SettleInput]) -> tuple[list[int], bool]:
        if self._held_since_s is None:
            self._held_since_s = time.monotonic()
        self._held.extend(values)
        self._held_rows += sum(_rows(envelope) for envelope in values)
        ended = any(envelope.watermark_us >= WATERMARK_END_US for envelope in values)
        if ended or self._held_rows >= SETTLE_ROWS_MAX or self._settle_due():
            return self._settle(), StatefulBatchLogic.RETAIN
        return [], StatefulBatchLogic.RETAIN

    def _settle_due(self) -> bool:
        since_s = self._held_since_s
        return since_s is not None and time.monotonic() - since_s >= SETTLE_DELAY_S

    def _settle(self) -> list[int]:
        """Settle every envelope held; the count of events that settled, if any."""
        if not self._held:
            return []
        held, self._held, self._held_rows, self._held_since_s = self._held, [], 0, None
        name = shard_name(held[0].shard)
        invariant(all(envelope.shard == held[0].shard for envelope in held), "mixed shards")
        self._writer.start(name)
        settled = self._shard.settle(held)
        if self._publisher is not None and settled.resolved:
            for events in settled.resolved:
                self._publisher.produce(resolution_messages(events))
        for table, rows in settled_tables(settled):
            self._writer.add(table, rows)
        worker_metrics().settled(settled.batches, settled.events)
        if self._status is None:
            self._status = StatusWriter(self._out_dir, f"settled-{name}", kind="settled")
        count = settled.event_count
        self._settled += count  # this execution's count: progress display only
        self._status.update(self._settled, self._shard.frontier.value)
        return [count] if count else []

    def on_notify(self) -> tuple[list[int], bool]:
        out = self._settle() if self._settle_due() else []
        if self._writer.due():
            self._writer.flush()
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[int], bool]:
        out = self._settle()
        if self._publisher is not None:
            self._publisher.flush()
        if self._writer.name:  # the last files: the flow's "files_written" output waits for them
            self._writer.flush()
        if self._status is not None:
            self._status.update(self._settled, self._shard.frontier.value, ended=True)
        worker_metrics().write()
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        due_s = [
            at_s
            for at_s in (
                self._writer.flush_at(),
                None if self._held_since_s is None else self._held_since_s + SETTLE_DELAY_S,
            )
            if at_s is not None
        ]
        if not due_s:
            return None
        return datetime.now(UTC) + timedelta(seconds=max(min(due_s) - time.monotonic(), 0.0))

    def snapshot(self) -> Packed:
        if self._publisher is not None:
            self._publisher.flush()
        state = (self._shard.snapshot(), self._writer.state(), list(self._held))
        return packed(state, compress=False)  # see `packed`


def settlement_builder(
    config: PipelineConfig, client: dict[str, str] | None = None
) -> Callable[[Packed | None], SettlementLogic]:
    """Builds (or resumes) the logic of one settlement shard; it publishes the decisions
    of resolved reviews to ``payments.decisions`` only when a Kafka client is given."""
    topic = config.topics.decisions
    publisher = None if client is None else (lambda: KafkaPublisher.get(client, topic))
    return lambda resume: SettlementLogic(config, publisher, unpacked(resume))


def settled_tables(settled: Settled) -> list[tuple[str, pa.Table]]:
    """The analyst tables of what a settlement step closed (in the domain's types)."""
    out: list[tuple[str, pa.Table]] = []
    if settled.batches:
        out.append(("settlement_batches", settled.batch_table()))
        out.append(("settlement_fees", settled.fee_table()))
        out.append(("settlement_payouts", settled.payout_table()))
        out.append(("settlement_fx", settled.fx_table()))
        out.append(("ledger_entries", settled.entry_table()))
    if settled.events:
        out.append(("payments", payments_table(settled.event_table())))
    return out


def dead_letter_rows(letters: list[DeadLetter]) -> list[tuple[str, TableRows]]:
    """Dead-letter rows, spread over writers by their source position."""
    if not letters:
        return []
    writer = writer_key(zlib.crc32(letters[0].source.encode()))
    return [(writer, ("dead_letters", [dead_letter_row(letter) for letter in letters]))]


def dead_letter_messages(letters: list[DeadLetter]) -> list[tuple[str, tuple[bytes | None, bytes]]]:
    """Kafka messages for ``payments.dlq``, keyed by source position."""
    if not letters:
        return []
    writer = writer_key(zlib.crc32(letters[0].source.encode()))
    return [
        (
            writer,
            (
                letter.source.encode(),
                _dlq_encoder.encode(
                    _DeadLetterMessage(
                        letter.source, letter.reason, letter.detail, letter.raw, letter.received_us
                    )
                ),
            ),
        )
        for letter in letters
    ]


class _DeadLetterMessage(msgspec.Struct):
    source: str
    reason: str
    detail: str
    raw: bytes
    received_us: int


_dlq_encoder = msgspec.json.Encoder()
