"""Run metrics: what the workers count, and the Prometheus endpoint that sums them.

The workers are separate processes, so each counts in its own memory
(`WorkerCounts`, a block at a time: Arrow and NumPy over a block's columns,
never Python per event) and writes the counts to its own file,
``DIR/status/metrics/worker-<n>.json``, atomically and at most every
`METRICS_WRITE_INTERVAL_S` (and once more as the process exits). ``centflow
run --metrics-port PORT`` serves ``/metrics`` from the runner process: a
`RunCollector` reads those files at each scrape and reports their sums.

Counters count this execution only. The runner clears the metrics files as it
starts the workers, so a resumed run counts from zero, and what it redoes after
the last snapshot is counted again (the sinks absorb those rows; the counters
do not). Prometheus sees a counter reset, as for any restarted process. The
files are informational, like the status files: nothing in the pipeline reads
them back.

Consumer lag: Kafka, each partition's high watermark (asked of the broker at a
scrape, at most every `LAG_REFRESH_S`) less the next offset the pipeline will
read (known once it has read a message of the partition in this execution);
a replay, the lines of the log not yet read, all partitions together
(``partition="replay"``).

Latency runs from an event's ingestion time to its decision. Under Kafka the
ingestion time is the message timestamp, a wall clock; a replay's is the log's
own clock, so a replay observes no latency.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import ConfigError, invariant
from centflow.limits import MICROS_PER_SECOND
from centflow.ops.status import STATUS_DIR_NAME, read_status

if TYPE_CHECKING:
    from centflow.config import PipelineConfig
    from centflow.ingest.events import DeadLetter

METRICS_FILE_ENV = "CENTFLOW_METRICS_FILE"  # set by the runner for each worker process
METRICS_DIR_NAME = "metrics"  # under DIR/status
METRICS_WRITE_INTERVAL_S = 0.5
METRICS_HOST_DEFAULT = "127.0.0.1"
LAG_REFRESH_S = 1.0
LAG_TIMEOUT_S = 1.0
LABEL_VALUES_MAX = 1024  # distinct sources or reasons kept per worker; the rest count as "other"
#: Upper bounds (inclusive, as Prometheus's ``le``) of the latency buckets, seconds.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LATENCY_BOUNDS_S = np.array(LATENCY_BUCKETS_S)
#: Upper bounds of the risk-score buckets (scores lie in [0, 1]).
SCORE_BUCKETS = tuple(round(0.05 * step, 2) for step in range(1, 21))
_SCORE_BOUNDS = np.array(SCORE_BUCKETS)


def metrics_dir(out_dir: Path) -> Path:
    """Where the workers of a run write their counts."""
    return out_dir / STATUS_DIR_NAME / METRICS_DIR_NAME


class WorkerCounts(msgspec.Struct):
    """What one worker process counted in this execution.

    Histograms hold a count per bucket (not cumulative), the last one above
    every bound; ``positions`` is the next Kafka offset to read per partition.
    """

    events_in: dict[str, int] = msgspec.field(default_factory=dict)
    dead_letters: dict[str, int] = msgspec.field(default_factory=dict)
    decisions: dict[str, int] = msgspec.field(default_factory=dict)
    batches_closed: int = 0
    late_adjustments: int = 0
    latency_buckets: list[int] = msgspec.field(
        default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1)
    )
    latency_sum_s: float = 0.0
    score_buckets: list[int] = msgspec.field(default_factory=lambda: [0] * (len(SCORE_BUCKETS) + 1))
    score_sum: float = 0.0
    positions: dict[str, int] = msgspec.field(default_factory=dict)

    def merge(self, other: WorkerCounts) -> WorkerCounts:
        """The counts of two workers together (positions: the furthest of each partition)."""
        invariant(
            len(self.latency_buckets) == len(other.latency_buckets)
            and len(self.score_buckets) == len(other.score_buckets),
            "metrics files of another bucket layout",
        )
        return WorkerCounts(
            _summed(self.events_in, other.events_in),
            _summed(self.dead_letters, other.dead_letters),
            _summed(self.decisions, other.decisions),
            self.batches_closed + other.batches_closed,
            self.late_adjustments + other.late_adjustments,
            [a + b for a, b in zip(self.latency_buckets, other.latency_buckets, strict=True)],
            self.latency_sum_s + other.latency_sum_s,
            [a + b for a, b in zip(self.score_buckets, other.score_buckets, strict=True)],
            self.score_sum + other.score_sum,
            {
                name: max(self.positions.get(name, 0), other.positions.get(name, 0))
                for name in {*self.positions, *other.positions}
            },
        )


def _summed(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    return {name: left.get(name, 0) + right.get(name, 0) for name in {*left, *right}}


def _bump(counts: dict[str, int], name: str, amount: int) -> None:
    if name not in counts and len(counts) >= LABEL_VALUES_MAX:
        name = "other"
    counts[name] = counts.get(name, 0) + amount


def bucket_counts(values: np.ndarray, bounds: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """How many `values` fall in each bucket (value ≤ bound), the last bucket above all.

    >>> bucket_counts(np.array([0.0, 0.05, 0.051, 2.0]), (0.05, 1.0)).tolist()
    [2, 1, 1]
    """
    index = np.searchsorted(bounds, values, side="left")
    counts = np.bincount(index, minlength=len(bounds) + 1)
    invariant(int(counts.sum()) == len(values), "every value lands in one bucket")
    return counts


class WorkerMetrics:
    """One worker process's counts, written to `path` (None: counted, never written).

    The pipeline's steps call it once per block; it may not change what flows.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._counts = WorkerCounts()  # histograms aside: kept in the arrays below
        self._latency_buckets = np.zeros(len(LATENCY_BUCKETS_S) + 1, np.int64)
        self._score_buckets = np.zeros(len(SCORE_BUCKETS) + 1, np.int64)
        self._lock = threading.Lock()  # worker threads of one process share the counts
        self._written_s = 0.0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def counts(self) -> WorkerCounts:
        """A copy of the counts so far."""
        with self._lock:
            counts = msgspec.structs.replace(
                self._counts,
                events_in=dict(self._counts.events_in),
                dead_letters=dict(self._counts.dead_letters),
                decisions=dict(self._counts.decisions),
                positions=dict(self._counts.positions),
                latency_buckets=self._latency_buckets.tolist(),
                score_buckets=self._score_buckets.tolist(),
            )
        return counts

    def events_in(self, partition: str, count: int, last_offset: int | None = None) -> None:
        """`count` messages read from `partition`; `last_offset`, a Kafka block's last."""
        with self._lock:
            _bump(self._counts.events_in, partition, count)
            if last_offset is not None:
                positions = self._counts.positions
                positions[partition] = max(positions.get(partition, 0), last_offset + 1)
        self._maybe_write()

    def dead_letters(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        with self._lock:
            for letter in letters:  # dead letters, not events: few, and already objects
                _bump(self._counts.dead_letters, letter.reason, 1)
        self._maybe_write()

    def decided(self, events: pa.RecordBatch, now_us: int | None) -> None:
        """A block of decided events; `now_us` (the wall clock) also times their latency."""
        if not events.num_rows:
            return
        decisions = pc.value_counts(events.column("decision")).to_pylist()
        scores = events.column("risk_score").drop_null().to_numpy(zero_copy_only=False)
        score_counts = bucket_counts(scores, _SCORE_BOUNDS)
        latency_s = None
        if now_us is not None:
            ingest_us = events.column("ingest_us").to_numpy(zero_copy_only=False)
            latency_s = np.maximum(now_us - ingest_us, 0) / MICROS_PER_SECOND
            latency_counts = bucket_counts(latency_s, _LATENCY_BOUNDS_S)
        with self._lock:
            counts = self._counts
            for entry in decisions:
                if entry["values"] is not None:
                    _bump(counts.decisions, entry["values"], int(entry["counts"]))
            self._score_buckets += score_counts
            counts.score_sum += float(scores.sum())
            if latency_s is not None:
                self._latency_buckets += latency_counts
                counts.latency_sum_s += float(latency_s.sum())
        self._maybe_write()

    def settled(self, batches: list[pa.Table], events: list[pa.RecordBatch]) -> None:
        """Batches closed, and the late events among the events settled (adjustments)."""
        if not batches and not events:
            return
        closed = sum(table.num_rows for table in batches)
        late = sum(block.column("late").true_count for block in events)
        with self._lock:
            self._counts.batches_closed += closed
            self._counts.late_adjustments += late
        self._maybe_write()

    def _maybe_write(self) -> None:
        if (
            self._path is not None
            and time.monotonic() - self._written_s >= METRICS_WRITE_INTERVAL_S
        ):
            self.write()

    def write(self) -> None:
        """Write the counts now (atomically: a reader sees the old file or the new one)."""
        if self._path is None:
            return
        self._written_s = time.monotonic()
        encoded = msgspec.json.encode(self.counts)
        temporary = self._path.with_suffix(f".tmp{threading.get_ident()}")
        temporary.write_bytes(encoded)
        os.replace(temporary, self._path)


_worker: WorkerMetrics | None = None
_worker_lock = threading.Lock()


def worker_metrics() -> WorkerMetrics:
    """This process's counts: written to ``$CENTFLOW_METRICS_FILE`` when the runner
    set it (and once more at exit), kept in memory only otherwise (tests, benchmarks)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            path = os.environ.get(METRICS_FILE_ENV)
            _worker = WorkerMetrics(Path(path) if path else None)
            if path:
                atexit.register(_worker.write)
        return _worker


def read_counts(out_dir: Path) -> WorkerCounts:
    """The sum of every worker's latest counts (a file being replaced is skipped)."""
    total = WorkerCounts()
    for path in sorted(metrics_dir(out_dir).glob("*.json")):
        try:
            total = total.merge(msgspec.json.decode(path.read_bytes(), type=WorkerCounts))
        except (OSError, msgspec.DecodeError):
            continue
    return total


def clear_counts(out_dir: Path, only: str | None = None) -> Path:
    """Remove the previous execution's counts (each execution counts from zero); `only`:
    just that file (a cluster's process clears its own, the others' are live)."""
    directory = metrics_dir(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if only is None or path.name == only:
            path.unlink()
    return directory


LagReader = Callable[[WorkerCounts], dict[str, int]]


def replay_lag(out_dir: Path, lines_total: int) -> LagReader:
    """Lines of a replay log not yet read, all partitions together."""

    def lag(_counts: WorkerCounts) -> dict[str, int]:
        inputs = [status for status in read_status(out_dir) if status.kind == "input"]
        if inputs and all(status.ended for status in inputs):
            return {"replay": 0}
        read = sum(status.messages for status in inputs)
        return {"replay": max(lines_total - read, 0)}

    return lag


class KafkaLag:
    """Each partition's high watermark less the next offset to read; the broker is
    asked at most every `LAG_REFRESH_S`, each partition within `LAG_TIMEOUT_S`."""

    def __init__(self, client: dict[str, str], partitions: tuple[str, ...]) -> None:
        self._client = client
        self._partitions = partitions
        self._consumer: Any = None
        self._highs: dict[str, int] = {}
        self._asked_s = -LAG_REFRESH_S
        self._lock = threading.Lock()

    def __call__(self, counts: WorkerCounts) -> dict[str, int]:
        with self._lock:
            if time.monotonic() - self._asked_s >= LAG_REFRESH_S:
                self._asked_s = time.monotonic()
                self._highs = self._high_watermarks()
            highs = dict(self._highs)
        return {
            name: max(high - counts.positions[name], 0)
            for name, high in highs.items()
            if name in counts.positions
        }

    def _high_watermarks(self) -> dict[str, int]:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        highs: dict[str, int] = {}
        try:
            if self._consumer is None:
                self._consumer = Consumer(
                    {
                        "group.id": "centflow-metrics-unused",
                        "enable.auto.commit": False,
                        **self._client,
                    }
                )
            for name in self._partitions:
                topic, _, number = name.rpartition("/")
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, int(number)), timeout=LAG_TIMEOUT_S, cached=False
                )
                highs[name] = int(high)
        except KafkaException:
            pass  # the broker did not answer in time: lag is left out of this scrape
        return highs

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


class RunCollector:
    """A prometheus_client collector of a run's counts, read from the workers' files."""

    def __init__(self, out_dir: Path, lag: LagReader | None = None) -> None:
        self._out_dir = out_dir
        self._lag = lag

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        counts = read_counts(self._out_dir)
        for name, documentation, label, values in (
            (
                "centflow_events_in",
                "Messages read, by input partition.",
                "source",
                counts.events_in,
            ),
            ("centflow_dead_letters", "Dead letters, by reason.", "reason", counts.dead_letters),
            ("centflow_decisions", "Risk decisions, by class.", "decision", counts.decisions),
        ):
            family = CounterMetricFamily(name, documentation, labels=[label])
            for value_label, value in sorted(values.items()):
                family.add_metric([value_label], value)
            yield family
        yield CounterMetricFamily(
            "centflow_batches_closed", "Settlement batches closed.", value=counts.batches_closed
        )
        yield CounterMetricFamily(
            "centflow_late_adjustments",
            "Late events settled into a later batch.",
            value=counts.late_adjustments,
        )
        yield _histogram(
            HistogramMetricFamily,
            "centflow_decision_latency_seconds",
            "From an event's ingestion time to its decision (Kafka input only).",
            LATENCY_BUCKETS_S,
            counts.latency_buckets,
            counts.latency_sum_s,
        )
        yield _histogram(
            HistogramMetricFamily,
            "centflow_risk_score",
            "Risk scores of decided events.",
            SCORE_BUCKETS,
            counts.score_buckets,
            counts.score_sum,
        )
        if self._lag is not None:
            lag = GaugeMetricFamily(
                "centflow_consumer_lag_messages",
                "Messages not yet read, by input partition.",
                labels=["partition"],
            )
            for partition, value in sorted(self._lag(counts).items()):
                lag.add_metric([partition], value)
            yield lag

    def describe(self) -> list[Any]:
        return []  # families are only known at a scrape


def _histogram(
    family: Any,
    name: str,
    documentation: str,
    bounds: tuple[float, ...],
    counts: list[int],
    total: float,
) -> Any:
    from prometheus_client.utils import floatToGoString

    cumulative = np.cumsum(counts).tolist()
    invariant(len(cumulative) == len(bounds) + 1, f"{name}: one count per bucket")
    buckets = [
        (floatToGoString(bound), count) for bound, count in zip(bounds, cumulative, strict=False)
    ]
    return family(
        name, documentation, buckets=[*buckets, ("+Inf", cumulative[-1])], sum_value=total
    )


def run_lag(config: PipelineConfig, lines_total: int | None) -> LagReader | None:
    """How a run's consumer lag is measured (None: it is not)."""
    if config.replay_path is not None:
        return None if lines_total is None else replay_lag(Path(config.out_dir), lines_total)
    return KafkaLag(dict(config.kafka or {}), config.partitions)


@contextmanager
def serve_metrics(
    config: PipelineConfig,
    port: int | None,
    host: str = METRICS_HOST_DEFAULT,
    lines_total: int | None = None,
) -> Iterator[None]:
    """Serve ``/metrics`` on `host`:`port` while the block runs (no port: nothing)."""
    if port is None:
        yield
        return
    if not 1 <= port <= 65535:
        raise ConfigError(f"--metrics-port {port} is out of range 1..65535")
    from prometheus_client import CollectorRegistry, start_http_server

    lag = run_lag(config, lines_total)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(Path(config.out_dir), lag))
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as error:
        raise ConfigError(
            f"--metrics-port {port}: cannot listen on {host}:{port}: {error.strerror or error}"
        ) from None
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=LAG_REFRESH_S + 5)
        if isinstance(lag, KafkaLag):
            lag.close()


__all__ = [
    "METRICS_FILE_ENV",
    "RunCollector",
    "WorkerCounts",
    "WorkerMetrics",
    "clear_counts",
    "metrics_dir",
    "read_counts",
    "serve_metrics",
    "worker_metrics",
]
