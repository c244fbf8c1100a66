"""Bytewax sources that emit *batches*: a `SourceBatch` per read, not a message per item.

Per-item overhead dominates a Bytewax flow of small items; a source that hands
downstream one block of up to `batch_messages_max` messages per item lets every
later step work a column at a time (see BENCHMARKS.md for the rates).

Each partition also reports its watermark (largest ingestion time so far, or
`WATERMARK_END_US` once it has ended) with every batch; see
`centflow.progress`. Both sources resume exactly from their recovery state.

- `ReplaySource`: partitions ``replay/<n>`` over a log file or directory; the
  ingestion time of a line is the log clock (`centflow.ingest.replay`), and the
  source decodes as it reads (it emits `Decoded` blocks, not messages).
- `KafkaBatchSource`: one partition per Kafka partition, ``<topic>/<n>``, each
  read by its own assigned consumer and decoded as it is read (it emits
  `Decoded` blocks too). No consumer group: offsets live in the recovery
  state, as with Bytewax's own Kafka source. The ingestion time is
  the message timestamp, made monotonic per partition by a running maximum.
  With ``until_idle`` a partition ends after `idle_s` seconds without a new
  message (at least `FIRST_MESSAGE_GRACE_S` before its first one) *while its
  broker kept answering*: idle means the broker said "nothing new", not that
  it could not be reached. The local broker's reported high watermark can
  trail the true end, so "idle" is judged by silence, not by offsets; whether
  the broker answers is judged by librdkafka's statistics (`BrokerAnswers`).
  A broker that stops answering (paused, overloaded, a network cut) makes the
  partition wait, however long; ``centflow run`` bounds that wait
  (``--broker-timeout-s``, `centflow.ops.kafka.BrokerWatch`).

- `ReviewSource`: the partition ``reviews``, the resolutions of payments held for
  review (`centflow.risk.review`), read from the output directory.

All end early, without the end-of-input watermark, when the run is asked to
stop (`centflow.ops.lifecycle`): the dataflow ends and snapshots, nothing
closes, and the next run reads on from the snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from centflow.errors import TerminalError, invariant
from centflow.ingest.columns import Decoded, empty_batch, source_positions
from centflow.ingest.decode import decode_columns
from centflow.ingest.replay import CLOCK_START_US, LineBatches, LogClock, decode_log_block
from centflow.limits import (
    FUTURE_SKEW_S_DEFAULT,
    MICROS_PER_MILLISECOND,
    MICROS_PER_SECOND,
    WATERMARK_END_US,
)
from centflow.money.fx import RateBlock, decode_payee_messages, decode_rate_messages
from centflow.ops.kafka import quiet_client_config
from centflow.ops.lifecycle import StopWatch
from centflow.ops.status import StatusWriter
from centflow.progress import WATERMARK_NONE_US
from centflow.risk import review
from centflow.risk.review import ReviewBlock

REPLAY_PARTITION_PREFIX = "replay/"
REPLAY_SCAN_FACTOR = 4  # lines scanned per batch, at most, per message emitted
# A partition that had nothing is asked again this much later (a message arriving
# meanwhile waits for it); one that had something is asked again at once.
POLL_PAUSE = timedelta(milliseconds=2)
# The broker answers a fetch with nothing after this long: how long a message can sit
# at the broker unseen (the local broker waits it out; 20 ms added ~4 ms at the median).
FETCH_WAIT_MS = 5
METADATA_TIMEOUT_S = 2.0
# Before a partition's first message, wait at least this long for one: a consumer's
# first fetch can be slow (connecting, leader lookup) and must not look like idleness.
FIRST_MESSAGE_GRACE_S = 10.0
# How often librdkafka reports, among its statistics, how long ago each broker last
# sent anything; a consumer's fetch is answered every `FETCH_WAIT_MS`.
ANSWER_STATS_INTERVAL_MS = 250
# A broker whose last answer is older than this is not answering (a pause, a cut).
ANSWER_GAP_S = 1.0


def replay_partitions(count: int) -> tuple[str, ...]:
    """The names of a replay's partitions.

    >>> replay_partitions(2)
    ('replay/0', 'replay/1')
    """
    return tuple(f"{REPLAY_PARTITION_PREFIX}{index}" for index in range(count))


class ReplayPosition(msgspec.Struct, array_like=True, frozen=True):
    """Where a replay partition resumes: last line scanned, log clock, lines emitted, ended."""

    line: int
    clock_us: int
    emitted: int
    ended: bool


class _ReplayPartition(StatefulSourcePartition[Decoded, ReplayPosition]):
    """One of `count` partitions of a log: every partition scans every line (the log
    clock needs them all) and emits the lines of its payers (`replay_partition`),
    already decoded (`centflow.ingest.replay.decode_log_block`)."""

    def __init__(
        self,
        path: Path,
        name: str,
        count: int,
        batch_messages_max: int,
        future_skew_us: int,
        position: ReplayPosition | None,
        status: StatusWriter,
        stop: StopWatch | None = None,
    ) -> None:
        position = position or ReplayPosition(0, CLOCK_START_US, 0, False)
        self._name = name
        self._index = int(name.rpartition("/")[2])
        self._count = count
        self._status = status
        self._line = position.line
        self._emitted = position.emitted
        self._clock = LogClock(position.clock_us)
        self._ended = position.ended
        self._scan_lines = batch_messages_max * min(count, REPLAY_SCAN_FACTOR)
        self._future_skew_us = future_skew_us
        self._lines = LineBatches(path, start_line=position.line)
        self._stop = stop or StopWatch(None)

    def next_batch(self) -> list[Decoded]:
        if self._ended or self._stop.requested():
            raise StopIteration  # a stop: ended here for the dataflow, not in its snapshot
        lines = self._lines.take_columns(self._scan_lines)
        if not lines:
            self._ended = True
            self._status.update(self._emitted, self._clock.now_us, ended=True)
            return [Decoded(self._name, empty_batch(), [], WATERMARK_END_US)]
        self._line = int(lines[-1].numbers[-1])
        payments, dead = decode_log_block(
            lines, self._clock, self._future_skew_us, self._index, self._count
        )
        self._emitted += payments.num_rows + len(dead)
        self._status.update(self._emitted, self._clock.now_us)
        return [Decoded(self._name, payments, dead, self._clock.now_us)]

    def snapshot(self) -> ReplayPosition:
        return ReplayPosition(self._line, self._clock.now_us, self._emitted, self._ended)


class ReplaySource(FixedPartitionedSource[Decoded, ReplayPosition]):
    """A replay log as `partition_count` input partitions (one per worker is the norm)."""

    def __init__(
        self,
        path: Path,
        batch_messages_max: int,
        partitions: tuple[str, ...],
        status_dir: Path | None = None,
        future_skew_us: int = FUTURE_SKEW_S_DEFAULT * MICROS_PER_SECOND,
    ) -> None:
        self._path = path
        self._batch_messages_max = batch_messages_max
        self._partitions = partitions
        self._status_dir = status_dir
        self._future_skew_us = future_skew_us

    def list_parts(self) -> list[str]:
        return list(self._partitions)

    def build_part(
        self, step_id: str, for_part: str, resume_state: ReplayPosition | None
    ) -> _ReplayPartition:
        status = StatusWriter(self._status_dir, for_part)
        return _ReplayPartition(
            self._path,
            for_part,
            len(self._partitions),
            self._batch_messages_max,
            self._future_skew_us,
            resume_state,
            status,
            StopWatch(self._status_dir),
        )


class KafkaPosition(msgspec.Struct, array_like=True, frozen=True):
    """Where a Kafka partition resumes: next offset and the watermark so far."""

    offset: int
    watermark_us: int


class _BrokerStats(msgspec.Struct):
    source: str = ""
    state: str = ""
    rxidle: int = -1  # microseconds since the last receive from it; -1: none yet
    toppars: dict[str, msgspec.Raw] = {}


class _ClientStats(msgspec.Struct):
    ts: int = 0  # when librdkafka took them, µs on its own monotonic clock; 0: unknown
    brokers: dict[str, _BrokerStats] = {}


_decode_stats = msgspec.json.Decoder(_ClientStats).decode


class BrokerAnswers:
    """Whether the broker leading one partition is answering, from a consumer's
    statistics (its ``stats_cb``): when it last sent anything, and since when it has
    answered without a gap of `ANSWER_GAP_S`. Owns no client; `clock` is injectable.

    Statistics wait in the consumer's queue until the worker next polls, and a worker
    can be held for as long as the broker is away (a snapshot flushes the decisions
    producer). Served late, a statistic taken in the middle of a pause would look like
    a fresh answer, and the pause would count as quiet time. So each one is dated by
    librdkafka's own clock (``ts``), mapped onto `clock` by the smallest delay seen
    between taking and serving: a pause shows as the gap it was, whenever it is read.

    >>> answers = BrokerAnswers("t-0", clock=lambda: 100.0)
    >>> answers.answering_since_s(), answers.answered_within(ANSWER_GAP_S)
    (None, False)
    >>> answers('{"brokers": {"b/1": {"source": "learned", "state": "UP", '
    ...         '"rxidle": 20000, "toppars": {"t-0": {}}}}}')
    >>> answers.answering_since_s(), answers.answered_s()
    (100.0, 99.98)
    """

    def __init__(self, toppar: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._toppar = toppar
        self._clock = clock
        self._answered_s: float | None = None
        self._since_s: float | None = None
        self._offset_s: float | None = None  # `clock` minus librdkafka's, at the least delay

    def __call__(self, text: str) -> None:
        stats = _decode_stats(text)
        now_s = self._taken_s(stats.ts)
        brokers = [
            broker
            for broker in stats.brokers.values()
            if broker.source not in ("internal", "logical") and broker.state == "UP"
        ]
        leaders = [broker for broker in brokers if self._toppar in broker.toppars] or brokers
        idle_us = [broker.rxidle for broker in leaders if broker.rxidle >= 0]
        if not idle_us:
            self._since_s = None
            return
        answered_s = now_s - min(idle_us) / MICROS_PER_SECOND
        invariant(answered_s <= now_s, "a broker answered in the future")
        self._answered_s = max(answered_s, self._answered_s or answered_s)
        if now_s - self._answered_s > ANSWER_GAP_S:
            self._since_s = None  # a gap: a streak of answers starts again
        elif self._since_s is None:
            self._since_s = now_s

    def _taken_s(self, ts_us: int) -> float:
        """When (`clock` seconds) statistics stamped `ts_us` were taken."""
        served_s = self._clock()
        if ts_us <= 0:
            return served_s
        offset_s = served_s - ts_us / MICROS_PER_SECOND
        if self._offset_s is None or offset_s < self._offset_s:
            self._offset_s = offset_s  # the promptest serve yet: the best mapping
        return ts_us / MICROS_PER_SECOND + self._offset_s

    def answered_within(self, seconds: float) -> bool:
        """Whether the broker sent anything in the last `seconds`."""
        return self._answered_s is not None and self._clock() - self._answered_s <= seconds

    def answering_since_s(self) -> float | None:
        """Since when (`clock` seconds) it has answered without a gap; None: not now."""
        return self._since_s if self.answered_within(ANSWER_GAP_S) else None

    def answered_s(self) -> float | None:
        """When (`clock` seconds) it last sent anything; None: never yet."""
        return self._answered_s


#: How a Kafka partition turns what it read into its item: (partition, positions,
#: ingestion times, values, watermark); no values and `WATERMARK_END_US`: its end.
BlockDecoder = Callable[[str, pa.StringArray, list[int], list[bytes], int], Any]


def payment_blocks(future_skew_us: int) -> BlockDecoder:
    """Messages of the payments topic as `Decoded` blocks."""

    def decode(
        name: str, sources: pa.StringArray, ingest_us: list[int], values: list[bytes], mark: int
    ) -> Decoded:
        if not values:
            return Decoded(name, empty_batch(), [], mark)
        payments, dead = decode_columns(sources, ingest_us, values, future_skew_us)
        return Decoded(name, payments, dead, mark)

    return decode


def fx_blocks(payee_partitions: frozenset[str]) -> BlockDecoder:
    """Messages of the ``fx-rates`` topic, or of the payee directory topic (its
    partitions `payee_partitions`), as `RateBlock` items (`centflow.money.fx`)."""

    def decode(
        name: str, sources: pa.StringArray, ingest_us: list[int], values: list[bytes], mark: int
    ) -> RateBlock:
        decoder = decode_payee_messages if name in payee_partitions else decode_rate_messages
        updates, dead = decoder(sources.to_pylist(), ingest_us, values)
        return RateBlock(name, list(updates), dead, mark)

    return decode


class _KafkaPartition(StatefulSourcePartition[Any, KafkaPosition]):
    def __init__(
        self,
        client: dict[str, str],
        name: str,
        batch_messages_max: int,
        idle_s: float | None,
        position: KafkaPosition | None,
        status: StatusWriter,
        future_skew_us: int,
        stop: StopWatch | None = None,
        decode: BlockDecoder | None = None,
    ) -> None:
        self._decode = decode or payment_blocks(future_skew_us)
        self._status = status
        self._future_skew_us = future_skew_us
        self._messages = 0
        topic, _, number = name.rpartition("/")
        self._name = name
        self._topic = topic
        self._batch_messages_max = batch_messages_max
        self._idle_s = idle_s
        self._offset = position.offset if position else OFFSET_BEGINNING
        self._watermark_us = position.watermark_us if position else WATERMARK_NONE_US
        self._ended = False
        self._quiet = False
        self._last_message_s = time.monotonic()
        self._seen_message = position is not None and position.offset > 0  # resumed after messages
        self._answers = BrokerAnswers(f"{topic}-{number}")
        settings: dict[str, Any] = {
            "group.id": "centflow-unused",  # required by librdkafka; no group is joined (assign only)
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.queue.backoff.ms": 100,
            "fetch.wait.max.ms": FETCH_WAIT_MS,
            **client,
        }
        if idle_s is not None:  # idleness needs to know that the broker is answering
            settings["statistics.interval.ms"] = ANSWER_STATS_INTERVAL_MS
            settings["stats_cb"] = self._answers
        # librdkafka's lines go to logging, not every few ms to the log while a broker is away
        self._consumer = Consumer(quiet_client_config(settings))
        self._learn_leader(topic)
        self._consumer.assign([TopicPartition(topic, int(number), self._offset)])
        self._stop = stop or StopWatch(None)

    def _learn_leader(self, topic: str) -> None:
        """Ask for the topic's metadata before assigning: librdkafka assigned a partition
        whose leader it does not know yet waits a fixed half second before it looks up
        the starting offset (every run started that late). A failure here is no error:
        the assignment then simply takes the slow way, and a real problem shows there."""
        try:
            self._consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
        except KafkaException:
            pass

    def next_batch(self) -> list[Any]:
        if self._ended or self._stop.requested():
            raise StopIteration  # a stop: the snapshot keeps the offset to read on from
        records = self._consumer.consume(self._batch_messages_max, 0.0)
        if any(record.error() is not None for record in records):
            records = self._without_errors(records)
        watermark_us = self._watermark_us
        self._quiet = not records
        if records:
            # Column at a time: a message's ingestion time is the running maximum of
            # the timestamps so far (a missing or negative one moves nothing), its
            # source position ``<topic>/<partition>/<offset>``.
            stamps_us = [
                stamp * MICROS_PER_MILLISECOND if stamp is not None and stamp >= 0 else -1
                for stamp in (record.timestamp()[1] for record in records)
            ]
            ingest_us = list(accumulate(stamps_us, max, initial=max(watermark_us, 0)))[1:]
            offsets = pa.array([record.offset() or 0 for record in records], pa.int64())
            sources = source_positions(f"{self._name}/", offsets)
            values = [record.value() or b"" for record in records]
            if (newest_us := max(stamps_us)) >= 0:
                watermark_us = max(watermark_us, newest_us)
            self._offset = offsets[-1].as_py() + 1
            self._watermark_us = watermark_us
            self._messages += len(records)
            self._status.update(self._messages, watermark_us)
            self._last_message_s = time.monotonic()
            self._seen_message = True
            return [self._decode(self._name, sources, ingest_us, values, max(watermark_us, 0))]
        if self._idle_s is not None and self._idle(self._idle_s):
            self._ended = True
            self._status.update(self._messages, watermark_us, ended=True)
            return [self._decode(self._name, _NO_POSITIONS, [], [], WATERMARK_END_US)]
        return []

    def _idle(self, idle_s: float) -> bool:
        """Whether the broker has answered "nothing new" for `idle_s` (longer before the
        first message): silence while it does not answer (paused, unreachable) is
        waiting, never idleness, and the quiet time counts again from when it answers."""
        invariant(idle_s > 0, f"idle time must be positive, got {idle_s}")
        answering_since_s = self._answers.answering_since_s()
        answered_s = self._answers.answered_s()
        if answering_since_s is None or answered_s is None:
            return False
        # Quiet as far as the broker's last answer, not until now: it may have just stopped.
        quiet_s = answered_s - max(self._last_message_s, answering_since_s)
        return quiet_s >= (idle_s if self._seen_message else max(idle_s, FIRST_MESSAGE_GRACE_S))

    def _without_errors(self, records: list[Message]) -> list[Message]:
        """The messages among `records`; a fatal or lasting error ends the run, a
        passing one (or the end of a partition) is skipped."""
        messages = []
        for record in records:
            error = record.error()
            if error is None:
                messages.append(record)
            elif error.code() != KafkaError._PARTITION_EOF and (
                error.fatal() or not error.retriable()
            ):
                raise TerminalError(f"reading {self._name}: {error.str()}")
        return messages

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + POLL_PAUSE if self._quiet else None

    def snapshot(self) -> KafkaPosition:
        return KafkaPosition(self._offset, self._watermark_us)

    def close(self) -> None:
        self._consumer.close()


_NO_POSITIONS = pa.array([], pa.string())


class KafkaBatchSource(FixedPartitionedSource[Any, KafkaPosition]):
    """Partitions ``<topic>/<n>`` of a Kafka topic, read and decoded in batches: into
    `Decoded` payments, or by `decode` (`fx_blocks` for the FX topics)."""

    def __init__(
        self,
        client: dict[str, str],
        partitions: list[str],
        batch_messages_max: int,
        idle_s: float | None,
        status_dir: Path | None = None,
        future_skew_us: int = FUTURE_SKEW_S_DEFAULT * MICROS_PER_SECOND,
        decode: BlockDecoder | None = None,
    ) -> None:
        self._decode = decode
        self._future_skew_us = future_skew_us
        self._status_dir = status_dir
        self._client = client
        self._partitions = partitions
        self._batch_messages_max = batch_messages_max
        self._idle_s = idle_s

    def list_parts(self) -> list[str]:
        return list(self._partitions)

    def build_part(
        self, step_id: str, for_part: str, resume_state: KafkaPosition | None
    ) -> _KafkaPartition:
        status = StatusWriter(self._status_dir, for_part)
        return _KafkaPartition(
            self._client,
            for_part,
            self._batch_messages_max,
            self._idle_s,
            resume_state,
            status,
            self._future_skew_us,
            StopWatch(self._status_dir),
            self._decode,
        )


REVIEWS_PARTITION = "reviews"


class ReviewPosition(msgspec.Struct, array_like=True, frozen=True):
    """Where the review input resumes: resolutions read, and the watermark it promised."""

    read: int
    watermark_us: int


class _ReviewPartition(StatefulSourcePartition[ReviewBlock, ReviewPosition]):
    """The resolution file (`centflow.risk.review`) as one input partition.

    Each execution reads the resolutions appended since the last one it read. With
    ``follow`` (a run that follows a topic) it reads again every `review.POLL_S`,
    promising the time of each read as its watermark; otherwise it reads once and
    ends (a replay, ``--until-idle``)."""

    def __init__(
        self, out_dir: Path, follow: bool, position: ReviewPosition | None, stop: StopWatch
    ) -> None:
        position = position or ReviewPosition(0, WATERMARK_NONE_US)
        self._out_dir = out_dir
        self._follow = follow
        self._read = position.read
        self._watermark_us = position.watermark_us
        self._stop = stop
        self._done = False
        self._next_read_s = 0.0

    def next_batch(self) -> list[ReviewBlock]:
        if self._done or self._stop.requested():
            raise StopIteration  # a stop: ended here for the dataflow, not in its snapshot
        if time.monotonic() < self._next_read_s:
            return []
        resolutions, read_us = review.read_since(self._out_dir, self._read)
        self._read += len(resolutions)
        if not self._follow:
            self._done = True
            if not resolutions and self._watermark_us == WATERMARK_END_US:
                raise StopIteration  # ended before, nothing new: nothing to say
            self._watermark_us = WATERMARK_END_US
            return [ReviewBlock(resolutions, WATERMARK_END_US)]
        self._next_read_s = time.monotonic() + review.POLL_S
        if self._watermark_us == WATERMARK_END_US:  # following again after --until-idle
            self._watermark_us = read_us  # moves back, as the topic's partitions do
        self._watermark_us = max(self._watermark_us, read_us)
        return [ReviewBlock(resolutions, self._watermark_us)]

    def next_awake(self) -> datetime | None:
        if not self._follow:
            return None
        wait_s = max(self._next_read_s - time.monotonic(), 0.0)
        return datetime.now(UTC) + timedelta(seconds=wait_s)

    def snapshot(self) -> ReviewPosition:
        return ReviewPosition(self._read, self._watermark_us)


class ReviewSource(FixedPartitionedSource[ReviewBlock, ReviewPosition]):
    """The resolutions of payments in review, ``OUT/reviews/resolutions.jsonl``, as the
    input partition ``reviews`` (`centflow.risk.review` says how they settle)."""

    def __init__(self, out_dir: Path, follow: bool) -> None:
        self._out_dir = out_dir
        self._follow = follow

    def list_parts(self) -> list[str]:
        return [REVIEWS_PARTITION]

    def build_part(
        self, step_id: str, for_part: str, resume_state: ReviewPosition | None
    ) -> _ReviewPartition:
        return _ReviewPartition(self._out_dir, self._follow, resume_state, StopWatch(self._out_dir))
