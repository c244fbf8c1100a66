"""The Prometheus endpoint of ``centflow run --metrics-port``: scraped while a replay of
two worker processes runs, its counters agree at the end with the run's own tables."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from centflow.generate.logs import write_log
from centflow.ingest.events import DeadLetter
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.ops.broker import free_loopback_port
from centflow.ops.kafka import client_config
from centflow.ops.metrics import (
    LATENCY_BUCKETS_S,
    SCORE_BUCKETS,
    KafkaLag,
    RunCollector,
    WorkerCounts,
    WorkerMetrics,
    read_counts,
    replay_lag,
)
from tests.test_pipeline import WINDOW

EVENTS = 60_000
RUN_WAIT_S = 180.0
SCRAPE_TIMEOUT_S = 2.0
SCRAPE_PAUSE_S = 0.2

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _by(samples: Samples, name: str, label: str) -> dict[str, int]:
    return {
        dict(labels)[label]: int(value)
        for (sample, labels), value in samples.items()
        if sample == name and value
    }


def _scrape(port: int) -> Samples | None:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S
        ) as response:
            return _parse(response.read().decode())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None  # not listening yet, or already closed


def _final(out: Path, lines_total: int) -> Samples:
    """The last counts the workers wrote, exposed by the endpoint's own collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(out, replay_lag(out, lines_total)))
    return _parse(generate_latest(registry).decode())


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("metrics") / "log.jsonl.gz"
    write_log(
        path,
        EVENTS,
        seed=31,
        start_us=parse_rfc3339_us("2026-11-02T09:00:00Z"),
        duration_s=4 * 3600,
    )
    return path


def test_the_endpoint_is_scraped_during_a_run_and_its_counters_match_the_tables(log, tmp_path):
    port = free_loopback_port()
    out = tmp_path / "out"
    command = [sys.executable, "-m", "centflow", "run", "--replay", str(log), "--out", str(out)]
    runner = subprocess.Popen(
        [*command, "--workers", "2", "--metrics-port", str(port), *WINDOW],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    scrapes: list[Samples] = []
    try:
        deadline = time.monotonic() + RUN_WAIT_S
        while runner.poll() is None and time.monotonic() < deadline:
            samples = _scrape(port)
            if samples is not None:
                scrapes.append(samples)
            time.sleep(SCRAPE_PAUSE_S)
        _, stderr = runner.communicate(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGKILL)
            runner.wait(10)
    assert runner.returncode == 0, stderr[-3000:]
    live = [samples for samples in scrapes if _by(samples, "centflow_events_in_total", "source")]
    assert live, f"no scrape saw events while the run lasted ({len(scrapes)} scrapes)"
    assert _scrape(port) is None, "the endpoint outlived the run"

    final = _final(out, EVENTS)
    events_in = _by(final, "centflow_events_in_total", "source")
    assert set(events_in) == {"replay/0", "replay/1"}  # both worker processes counted
    dead_by_reason = _by(final, "centflow_dead_letters_total", "reason")
    decisions = _by(final, "centflow_decisions_total", "decision")
    database = duckdb.connect(str(out / "centflow.duckdb"), read_only=True)
    try:

        def grouped(sql: str) -> dict[str, int]:
            return {str(key): int(count) for key, count in database.execute(sql).fetchall()}

        def one(sql: str) -> int:
            return int(database.execute(sql).fetchall()[0][0])

        payments = one("SELECT count(*) FROM payments")
        assert sum(events_in.values()) == payments + one("SELECT count(*) FROM dead_letters")
        assert sum(events_in.values()) == EVENTS
        assert dead_by_reason == grouped("SELECT reason, count(*) FROM dead_letters GROUP BY 1")
        assert decisions == grouped("SELECT decision, count(*) FROM payments GROUP BY 1")
        assert set(decisions) <= {"approve", "review", "decline"}
        batches = one("SELECT count(*) FROM settlement_batches")
        assert batches > 0
        assert final[("centflow_batches_closed_total", ())] == batches
        late = one("SELECT count(*) FROM payments WHERE late")
        assert final[("centflow_late_adjustments_total", ())] == late
        scored = one("SELECT count(*) FROM payments WHERE risk_score IS NOT NULL")
        assert final[("centflow_risk_score_count", ())] == scored
        assert final[("centflow_risk_score_bucket", (("le", "1.0"),))] == scored
        score_sum = database.execute("SELECT sum(risk_score) FROM payments").fetchall()[0][0]
        assert final[("centflow_risk_score_sum", ())] == pytest.approx(score_sum, rel=1e-6)
    finally:
        database.close()
    assert final[("centflow_decision_latency_seconds_count", ())] == 0  # a replay's clock
    assert final[("centflow_consumer_lag_messages", (("partition", "replay"),))] == 0

    for samples in live:  # what was scraped during the run never exceeds the end's counts
        for key, value in samples.items():
            if key[0].endswith(("_total", "_count", "_bucket")) and key in final:
                assert value <= final[key], key


def test_a_metrics_port_in_use_is_one_line_error(tmp_path):
    log = tmp_path / "log.jsonl"
    write_log(log, 50, seed=3, start_us=parse_rfc3339_us("2026-11-02T09:00:00Z"), duration_s=60)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "centflow", "run", "--replay", str(log), "--out",
             str(tmp_path / "out"), "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def _decided(
    decisions: list[str], scores: list[float | None], ingest_us: list[int]
) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "decision": pa.array(decisions, pa.string()),
            "risk_score": pa.array(scores, pa.float64()),
            "ingest_us": pa.array(ingest_us, pa.int64()),
        }
    )


def test_a_worker_counts_blocks_and_writes_them_where_the_collector_reads(tmp_path):
    out = tmp_path
    metrics = WorkerMetrics(out / "status" / "metrics" / "worker-0.json")
    metrics.events_in("payments/1", 3, last_offset=41)
    metrics.events_in("payments/1", 2, last_offset=43)
    metrics.dead_letters([DeadLetter("payments/1/40", "invalid_json", "", b"{", 0)])
    now_us = 10_000_000
    metrics.decided(
        _decided(["approve", "review", "approve"], [0.0, 0.5, None], [now_us - 2_000, now_us, 0]),
        now_us,
    )
    metrics.write()
    other = WorkerMetrics(out / "status" / "metrics" / "worker-1.json")
    other.decided(_decided(["decline"], [1.0], [0]), None)
    other.write()

    counts = read_counts(out)
    assert counts.events_in == {"payments/1": 5}
    assert counts.positions == {"payments/1": 44}  # the next offset to read
    assert counts.dead_letters == {"invalid_json": 1}
    assert counts.decisions == {"approve": 2, "review": 1, "decline": 1}
    assert sum(counts.score_buckets) == 3 and counts.score_sum == 1.5  # nulls are not scores
    assert counts.score_buckets[SCORE_BUCKETS.index(0.5)] == 1  # a bound is inclusive
    assert counts.score_buckets[-1] == 0
    assert sum(counts.latency_buckets) == 3  # only the worker given a wall clock
    assert counts.latency_buckets[-1] == 0 and counts.latency_sum_s == pytest.approx(10.002)
    assert counts.latency_buckets[list(LATENCY_BUCKETS_S).index(10.0)] == 1


def test_counts_of_two_workers_merge_field_by_field():
    left = WorkerCounts(events_in={"a": 1}, decisions={"approve": 2}, batches_closed=3)
    left.positions = {"t/0": 5}
    right = WorkerCounts(events_in={"a": 2, "b": 1}, late_adjustments=4)
    right.positions = {"t/0": 7, "t/1": 1}
    right.score_buckets = list(np.arange(len(SCORE_BUCKETS) + 1))
    merged = left.merge(right)
    assert merged.events_in == {"a": 3, "b": 1}
    assert (merged.batches_closed, merged.late_adjustments) == (3, 4)
    assert merged.positions == {"t/0": 7, "t/1": 1}
    assert merged.score_buckets == right.score_buckets
    assert left.merge(WorkerCounts()) == left


@pytest.mark.kafka
def test_kafka_lag_is_the_high_watermark_less_the_next_offset_to_read(kafka_bootstrap, fresh_topic):
    topic = fresh_topic(partitions=2)
    producer = Producer(client_config(kafka_bootstrap))
    # One message per request: the bundled broker reports a high watermark of one past
    # the first offset of the last batch it stored, so batched messages would hide lag.
    for index in range(5):
        producer.produce(topic, value=b"{}", partition=0, key=str(index).encode())
        assert producer.flush(10.0) == 0
    producer.produce(topic, value=b"{}", partition=1)
    assert producer.flush(10.0) == 0
    lag = KafkaLag(client_config(kafka_bootstrap), (f"{topic}/0", f"{topic}/1"))
    try:
        counts = WorkerCounts()
        counts.positions = {f"{topic}/0": 2}  # partition 1: nothing read yet, lag unknown
        assert lag(counts) == {f"{topic}/0": 3}
    finally:
        lag.close()
