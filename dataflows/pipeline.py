"""The centflow dataflow: read → decode → admit → risk → settle → sinks.

Run it as ``python -m bytewax.run dataflows.pipeline:flow`` with the
configuration in the environment (``centflow run`` does that for you), or
build it with `build_flow`, handing in sources and sinks (tests pass
``TestingSink``).

Items are blocks: a source item carries up to `SOURCE_BATCH_MESSAGES_MAX`
messages (the replay and Kafka sources decode them as they read), events
travel as Arrow record batches (`centflow.ingest.columns`), and each keyed step moves
one `Envelope` of events per shard (see `centflow.progress`). Admission, the
payee's risk context and settlement are keyed by the payee's shard; payer
features by the payer's, since they need the payer's whole history; the
decision step (models, rules, limits) has one key, so that one model learns
from every label (a model per payer shard would learn from an eighth of
them, and a dataflow has no cycle to share what each learned). So an event
crosses between worker processes at most four times (to its payee shard, to
its payer shard, to the decision step, back); the decision step publishes its
decisions and the
settlement step writes its tables itself, each flushed at every snapshot, so
the biggest outputs never cross a process. Review resolutions
(`centflow.risk.review`) are a second input, read from the output directory and
routed to settlement by payee. Every stream ends in an
output: dead letters in the ``dead_letters`` table (and ``payments.dlq``).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import bytewax.operators as op
import pyarrow as pa
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from centflow.config import CONFIG_ENV, PipelineConfig, from_environment
from centflow.money.fx import RateEnvelope
from centflow.ops.cluster import wait_for_peers
from centflow.ops.lifecycle import install_stop_handlers
from centflow.progress import Envelope
from centflow.risk.review import ReviewEnvelope
from dataflows import steps
from dataflows.sources import KafkaBatchSource, ReplaySource, ReviewSource, fx_blocks
from sinks.kafka import KafkaMessageSink
from sinks.parquet import ParquetSink, WritesDoneSink

GC_YOUNG_THRESHOLD = 100_000


def build_flow(
    config: PipelineConfig,
    source: Source,
    table_sink: Sink,
    dead_letter_sink: Sink | None = None,
    decisions_client: dict[str, str] | None = None,
    settled_sink: Sink | None = None,
    review_source: Source | None = None,
    rate_source: Source | None = None,
) -> Dataflow:
    """Wire the pipeline between the given sources and sinks (the review resolutions
    of ``config.out_dir`` unless `review_source` is given; FX rates from `rate_source`,
    the ``fx-rates`` topic's partitions ``config.rate_partitions``, if given)."""
    if review_source is None:
        follow = config.replay_path is None and not config.until_idle
        review_source = ReviewSource(Path(config.out_dir), follow)
    flow = Dataflow("centflow")
    batches = op.input("read", flow, source)
    # Decoded blocks from the replay and Kafka sources; a SourceBatch(partition,
    # messages=[RawMessage(...), ...], watermark_us) from others (tests), decoded here
    decoded = op.map("decode", batches, steps.decoder(config))
    # Decoded(partition, payments=<RecordBatch of PAYMENT_SCHEMA>, dead=[DeadLetter(...)], watermark_us)
    to_shards = op.flat_map("route_by_payee", decoded, steps.route_to_shards)
    # ("s07", Envelope(origin="payments/0", shard=7, watermark_us, events=<RecordBatch>))
    admission = op.stateful_batch("admit", to_shards, steps.admission_builder(config))
    # ("s07", ("route", ("s07", Envelope(...))) | ("dead", [DeadLetter(...)]))
    admitted = op.flat_map("admitted", admission, steps.routed_envelopes)
    # ("s07", Envelope(origin="admit", shard=7, watermark_us, events=<RecordBatch>)): same key,
    # so admission and the payee's risk context of a shard run on one worker with no exchange
    with_context = op.stateful_batch("payee_context", admitted, steps.payee_context_builder())
    by_payer = op.map("route_by_payer", with_context, steps.rekeyed)
    # ("s03", Envelope(origin="payee/7", shard=3, events, context=<payee features per event>)):
    # routed by payer, since payer features need the payer's whole history
    features = op.stateful_batch("payer_features", by_payer, steps.payer_features_builder())
    to_decide = op.map("to_decide", features, steps.rekeyed)
    # ("risk", Envelope(origin="payer/3", events, context=<payee and payer features>)): one
    # decision step for all payers, so that one model learns from every label
    risk = op.stateful_batch("risk", to_decide, steps.risk_builder(config, decisions_client))
    decided = op.map("route_back_by_payee", risk, steps.rekeyed)
    # ("s07", Envelope(origin="risk", events=<RecordBatch, decision columns filled>)): back
    # to the payee's shard for settlement; each decision published to payments.decisions
    resolutions = op.input("read_reviews", flow, review_source)
    # ReviewBlock(resolutions=[Resolution(sequence, payee_id, event_id, "release", ...)], watermark_us)
    review_envelopes = op.flat_map("route_reviews", resolutions, steps.route_reviews)
    # ("s07", ReviewEnvelope(origin="reviews", shard=7, watermark_us, resolutions=[...]))
    to_settle: KeyedStream[Envelope | ReviewEnvelope | RateEnvelope] = op.merge(
        "decided_and_reviews", decided, review_envelopes
    )
    rate_dead = None
    if rate_source is not None:
        rates = op.input("read_rates", flow, rate_source)
        # RateBlock(partition="fx-rates/0", rates=[RateUpdate(ingest_us, "EUR", "USD", ...)], dead, watermark_us)
        rate_envelopes = op.flat_map("route_rates", rates, steps.route_rates)
        # ("s07", RateEnvelope(origin="fx-rates/0", shard=7, watermark_us, rates=[...])): every shard
        to_settle = op.merge("with_rates", to_settle, rate_envelopes)
        rate_dead = op.map("rate_dead_letters", rates, steps.rate_dead_letters)
    settled = op.stateful_batch(
        "settle", to_settle, steps.settlement_builder(config, decisions_client)
    )
    # ("s07", 412): events settled; the step itself writes payments, settlement_batches and
    # ledger_entries (sinks.parquet.ShardTableWriter), so those rows never cross a process
    if settled_sink is not None:  # tests count what settled; production reads status files
        op.output("settled_counts", settled, settled_sink)
    op.output("files_written", settled, WritesDoneSink())
    # closes when every shard of its worker has ended, once the process's files are written

    decode_dead = op.map("decode_dead_letters", decoded, steps.decoded_dead_letters)
    admission_dead = op.map("admission_dead_letters", admission, steps.admission_dead_letters)
    dead = op.merge(
        "dead_letters", decode_dead, admission_dead, *([rate_dead] if rate_dead else [])
    )
    # [DeadLetter(source, reason, detail, raw, received_us), ...]
    dead_rows = op.flat_map("dead_letter_rows", dead, steps.dead_letter_rows)
    # ("w05", ("dead_letters", [row, ...]))
    op.output("dead_letter_table", dead_rows, table_sink)

    if dead_letter_sink is not None:
        dead_messages = op.flat_map("dead_letter_messages", dead, steps.dead_letter_messages)
        # (b"payments/0/17", b'{"source": ..., "reason": "invalid_json", ...}')
        op.output("dead_letter_topic", dead_messages, dead_letter_sink)
    return flow


def flow_for(config: PipelineConfig) -> Dataflow:
    """The production flow for `config`: replay file or Kafka in, Parquet (+ Kafka) out."""
    table_sink = ParquetSink(config.parquet_dir)
    if config.replay_path is not None:
        source: Source = ReplaySource(
            Path(config.replay_path),
            config.batch_messages_max,
            config.partitions,
            Path(config.out_dir),
            config.future_skew_us,
        )
        return build_flow(config, source, table_sink)
    client = dict(config.kafka or {})
    idle_s = config.idle_s if config.until_idle else None
    source = KafkaBatchSource(
        client,
        list(config.partitions),
        config.batch_messages_max,
        idle_s,
        Path(config.out_dir),
        config.future_skew_us,
    )
    rate_source = None
    if config.rate_partitions or config.payee_partitions:
        rate_source = KafkaBatchSource(
            client, [*config.rate_partitions, *config.payee_partitions],
            config.batch_messages_max, idle_s, Path(config.out_dir), config.future_skew_us,
            fx_blocks(frozenset(config.payee_partitions)),
        )  # fmt: skip
    return build_flow(
        config,
        source,
        table_sink,
        KafkaMessageSink(client, config.topics.dead_letters),
        client,
        rate_source=rate_source,
    )


def _flow_from_environment() -> Dataflow | None:
    """The flow of a worker process started by ``centflow run`` (None when imported otherwise)."""
    if not os.environ.get(CONFIG_ENV):
        return None
    install_stop_handlers()  # SIGINT/SIGTERM: end at an epoch, snapshot, exit 0
    tune_garbage_collector()
    use_jemalloc()
    flow = flow_for(from_environment())
    wait_for_peers()
    return flow


def use_jemalloc() -> None:
    """Allocate Arrow memory with jemalloc where pyarrow has it (its Linux builds do),
    unless ``ARROW_DEFAULT_MEMORY_POOL`` chooses: every block allocates and frees
    hundreds of buffers, and with jemalloc a worker ran about 8% faster in less
    memory than with the default mimalloc (BENCHMARKS.md)."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a build without jemalloc: keep the default
        pass


def tune_garbage_collector() -> None:
    """Collect young objects less often: a worker makes millions of short-lived
    tuples, and each default collection rescans the large, long-lived window state."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)


flow = _flow_from_environment()
