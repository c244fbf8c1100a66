"""Broker faults: a Kafka run whose broker is paused (SIGSTOP) for 10 s waits, carries on
and ends with the tables of an uninterrupted run; a broker silent past
``--broker-timeout-s`` ends the run with status 2 and one line, and the same command,
once the broker is back, completes the work.

The pipeline reads a topic far faster than it processes it, so a run is at the head
of its topic within a second: the broker is paused there, with the run waiting for
more, and the second half of the input is produced once the broker is back, as a
live stream's would be. Each topic ends up holding the same messages (two generated
logs, one after the other), so every run's tables must equal those of one
uninterrupted run.

The broker is a memory-only Tansu started by this module (pausing the session's
broker would stall other tests), so "back" means the same process resumed (SIGCONT):
a new broker on the same port would start empty.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Producer

from centflow.generate.logs import write_log
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.limits import WATERMARK_END_US
from centflow.ops.broker import LocalBroker
from centflow.ops.kafka import client_config, ensure_topics, produce_log
from centflow.ops.status import read_status
from tests.test_lifecycle import _gone
from tests.test_pipeline import WINDOW, _snapshots, centflow, tables

pytestmark = pytest.mark.kafka

EVENTS_PER_LOG = 8_000
PARTITIONS = 4
PAUSE_S = 10.0
BROKER_TIMEOUT_S = 5
# Long enough that a run at the head of its topic is still waiting when the broker is
# paused, and when the second log arrives after it is back.
IDLE_S = 8.0
WAIT_S = 90.0  # for a run to get going, or to end


def _pid(broker: LocalBroker) -> int:
    process = broker._process  # the test pauses the broker's own process
    assert process is not None, "the broker is not running"
    return process.pid


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    log_path = tmp_path_factory.mktemp("paused-broker") / "tansu.log"
    with LocalBroker(log_path=log_path) as started:
        yield started
        os.kill(_pid(started), signal.SIGCONT)  # never leave it stopped, whatever failed


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two generated logs, the second's hour after the first's."""
    folder = tmp_path_factory.mktemp("faults")
    paths = (folder / "first.jsonl.gz", folder / "second.jsonl.gz")
    for path, seed, start in zip(
        paths, (29, 31), ("2026-11-03T09:00:00Z", "2026-11-03T10:00:00Z"), strict=True
    ):
        write_log(
            path, EVENTS_PER_LOG, seed=seed, start_us=parse_rfc3339_us(start), duration_s=3600
        )
    return paths


def _topic(broker: LocalBroker) -> str:
    name = f"faults-{uuid.uuid4().hex[:12]}"
    ensure_topics(client_config(broker.bootstrap), {name: PARTITIONS})
    return name


def _produce(broker: LocalBroker, log: Path, topic: str) -> None:
    assert produce_log(log, client_config(broker.bootstrap), topic).messages == EVENTS_PER_LOG


def _args(broker: LocalBroker, topic: str, idle_s: float = IDLE_S) -> list[str]:
    return [
        "run",
        "--kafka",
        broker.bootstrap,
        "--topic",
        topic,
        "--dlq-topic",
        f"{topic}.dlq",
        "--decisions-topic",
        f"{topic}.decisions",
        "--until-idle",
        "--idle-s",
        str(idle_s),
        "--workers",
        "2",
        "--snapshot-s",
        "1",
        *WINDOW,
    ]


@pytest.fixture(scope="module")
def clean_tables(
    broker: LocalBroker, logs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[tuple]]:
    """The tables of an uninterrupted run of a topic holding both logs."""
    topic = _topic(broker)
    for log in logs:
        _produce(broker, log, topic)
    out = tmp_path_factory.mktemp("clean")
    centflow(*_args(broker, topic, idle_s=2.0), "--out", str(out))
    found = _tables(out)
    assert len(found["payments"]) > EVENTS_PER_LOG
    return found


def _tables(out: Path) -> dict[str, list[tuple]]:
    """`tables`, with each payment's ``risk_reasons`` as a sorted list: the order of
    features whose contributions tie can follow the arrival of the input (risk
    scoring sorts contributions computed a block at a time), and a broker fault
    changes arrival, not what is read. Every other column is compared as written."""
    found = tables(out)
    with duckdb.connect(str(out / "centflow.duckdb"), read_only=True) as db:
        names = [row[0] for row in db.execute("DESCRIBE payments").fetchall()]
    at = [name for name in names if name != "source"].index("risk_reasons")
    found["payments"] = sorted(
        (
            (*row[:at], row[at] and ";".join(sorted(row[at].split(";"))), *row[at + 1 :])
            for row in found["payments"]
        ),
        key=repr,
    )
    return found


def _inputs(out: Path) -> list:
    return [status for status in read_status(out) if status.kind == "input"]


def _read(out: Path) -> int:
    return sum(status.messages for status in _inputs(out))


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "centflow", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, killed whole if the test fails
    )


def _wait_at_the_head(runner: subprocess.Popen[str], out: Path, messages: int) -> None:
    """Wait until the run has read all `messages` of its topic and taken a snapshot."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and runner.poll() is None:
        if _read(out) >= messages and _snapshots(out / "recovery") > 0:
            assert not any(status.ended for status in _inputs(out)), "the run ended early"
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not get going (exit {runner.poll()})")


def _end(runner: subprocess.Popen[str]) -> None:
    if runner.poll() is None:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(10)


def _stats(ts_s: float, rxidle_s: float) -> str:
    return json.dumps(
        {
            "ts": round(ts_s * 1e6),
            "brokers": {
                "b/1": {
                    "source": "learned",
                    "state": "UP",
                    "rxidle": round(rxidle_s * 1e6),
                    "toppars": {"t-0": {}},
                }
            },
        }
    )


def test_statistics_served_late_still_show_the_pause_they_were_taken_in():
    """A worker held through a pause (its snapshot flushes to the paused broker) reads
    the statistics queued meanwhile all at once, after the broker is back: they must
    date the pause by when they were taken, not by when they were read, or the pause
    counts as quiet time and the partition ends as idle on the spot."""
    from dataflows.sources import ANSWER_GAP_S, BrokerAnswers

    now = [100.0]
    answers = BrokerAnswers("t-0", clock=lambda: now[0])
    for step in range(8):  # answering, read promptly (librdkafka's clock is 5,000 s ahead)
        now[0] = 100.0 + step * 0.25
        answers(_stats(now[0] + 5_000, 0.01))
    assert answers.answering_since_s() == 100.0
    paused_s, resumed_s = now[0], now[0] + PAUSE_S
    now[0] = resumed_s + 0.5  # the worker polls again: a pause's statistics, then fresh ones
    taken = [paused_s + 0.25 * step for step in range(1, round(PAUSE_S / 0.25) + 3)]
    for taken_s in taken:
        rxidle_s = taken_s - paused_s if taken_s < resumed_s else 0.01
        answers(_stats(taken_s + 5_000, rxidle_s))
        assert answers.answered_s() == pytest.approx(taken_s - rxidle_s)
    since_s = answers.answering_since_s()
    assert since_s is not None and since_s >= resumed_s, "the pause was not seen as a gap"
    assert answers.answered_within(ANSWER_GAP_S)


def test_a_partition_is_not_idle_while_its_broker_is_paused(broker, tmp_path):
    """The source's own rule, in isolation: silence from a broker that does not answer is
    waiting, not idleness; once it answers again, "nothing new" for `idle_s` is."""
    from dataflows.sources import KafkaBatchSource

    config = client_config(broker.bootstrap)
    name = "idle-rule"
    ensure_topics(config, {name: 1})
    producer = Producer(config)
    producer.produce(name, b"{}", partition=0)
    assert producer.flush(10) == 0
    partition = KafkaBatchSource(config, [f"{name}/0"], 100, 1.0, tmp_path).build_part(
        "input", f"{name}/0", None
    )

    def read_for(seconds: float) -> tuple[int, bool]:
        read, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            for batch in partition.next_batch():
                read += batch.payments.num_rows + len(batch.dead)
                if batch.watermark_us == WATERMARK_END_US:
                    return read, True
            time.sleep(0.02)
        return read, False

    try:
        deadline = time.monotonic() + WAIT_S
        while (read := read_for(0.5)[0]) == 0 and time.monotonic() < deadline:
            pass
        assert read == 1
        os.kill(_pid(broker), signal.SIGSTOP)
        try:
            assert read_for(4.0) == (0, False), "a paused broker was taken for an idle one"
        finally:
            os.kill(_pid(broker), signal.SIGCONT)
        resumed_s = time.monotonic()
        assert read_for(10.0) == (0, True)
        assert time.monotonic() - resumed_s >= 1.0, "ended before an answered idle second"
    finally:
        partition.close()


def test_a_run_waits_out_a_paused_broker_and_loses_and_doubles_nothing(
    broker, logs, clean_tables, tmp_path
):
    first, second = logs
    topic = _topic(broker)
    _produce(broker, first, topic)
    runner = _start([*_args(broker, topic), "--out", str(tmp_path)])
    try:
        _wait_at_the_head(runner, tmp_path, EVENTS_PER_LOG)
        os.kill(_pid(broker), signal.SIGSTOP)
        try:
            time.sleep(PAUSE_S)
            alive = runner.poll() is None
            ended = [status.partition for status in _inputs(tmp_path) if status.ended]
        finally:
            os.kill(_pid(broker), signal.SIGCONT)
        _produce(broker, second, topic)  # the stream goes on once the broker is back
        stdout, stderr = runner.communicate(timeout=WAIT_S)
    finally:
        _end(runner)
    assert alive, f"the run exited while the broker was paused: {stderr[-2000:]}"
    assert not ended, f"{ended} ended as idle while the broker was paused"
    assert runner.returncode == 0, stderr[-3000:]
    assert "pipeline finished" in stderr and "Traceback" not in stderr
    assert "pass  ledger sums to zero per currency" in stdout
    assert _read(tmp_path) == 2 * EVENTS_PER_LOG
    assert _tables(tmp_path) == clean_tables


def test_a_broker_silent_past_the_limit_ends_the_run_with_status_2_and_a_rerun_completes(
    broker, logs, clean_tables, tmp_path
):
    first, second = logs
    topic = _topic(broker)
    _produce(broker, first, topic)
    args = [*_args(broker, topic), "--broker-timeout-s", str(BROKER_TIMEOUT_S), "--out", str(tmp_path)]  # fmt: skip
    runner = _start(args)
    try:
        _wait_at_the_head(runner, tmp_path, EVENTS_PER_LOG)
        os.kill(_pid(broker), signal.SIGSTOP)
        stopped_s = time.monotonic()
        try:
            _, stderr = runner.communicate(timeout=WAIT_S)
            waited_s = time.monotonic() - stopped_s
        finally:
            os.kill(_pid(broker), signal.SIGCONT)
    finally:
        _end(runner)
    said = " ".join(stderr.split())  # the console wraps long lines
    assert runner.returncode == 2, stderr[-3000:]
    assert f"centflow: error: Kafka at {broker.bootstrap} unreachable for" in said
    assert f"(--broker-timeout-s {BROKER_TIMEOUT_S}); the state is kept in {tmp_path}" in said
    assert "rerun the same command to resume" in said and "Traceback" not in stderr
    assert BROKER_TIMEOUT_S <= waited_s < BROKER_TIMEOUT_S + 30, f"exited after {waited_s:.1f} s"
    assert _gone(str(tmp_path)), "a worker of the run lives on"
    assert _snapshots(tmp_path / "recovery") > 0
    assert not any(status.ended for status in _inputs(tmp_path))
    _produce(broker, second, topic)  # the broker is back, and the stream goes on
    rerun = centflow(*args)  # the same command: resumes from the state kept
    assert "pipeline finished" in rerun.stderr
    assert _tables(tmp_path) == clean_tables


def test_a_broker_timeout_out_of_range_is_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "centflow",
            "run",
            "--kafka",
            "127.0.0.1:9",
            "--broker-timeout-s",
            "0",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "centflow: error: --broker-timeout-s 0 is out of range 1..86400 (seconds)"
    )
