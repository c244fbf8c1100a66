"""End to end through the command line: replay mode, Kafka mode (a real local broker), two
worker processes, and a run killed with SIGKILL then rerun all give identical tables."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from centflow.generate.logs import write_log
from centflow.ingest.replay import LogClock, iter_lines
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.limits import IDLE_S_DEFAULT
from centflow.ops.kafka import client_config, produce_log
from centflow.ops.status import read_status

SAMPLE = Path(__file__).resolve().parent.parent / "replay_data" / "sample.jsonl.gz"
# make run's FX inputs too (rates, payee directory), so every comparison covers FX and splits
WINDOW = [
    "--window-s",
    "60",
    "--lateness-s",
    "30",
    "--config",
    str(SAMPLE.with_name("sample.toml")),
]
KEYS = {
    "payments": "event_id",
    "settlement_batches": "batch_id",
    "settlement_payouts": "batch_id, party_id",
    "settlement_fx": "batch_id, as_of",
    "ledger_entries": "entry_id",
    "dead_letters": "reason, raw, detail",
}


def centflow(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "centflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def tables(out: Path) -> dict[str, list[tuple]]:
    """Every analyst table, fully sorted, without the input-position columns."""
    connection = duckdb.connect(str(out / "centflow.duckdb"), read_only=True)
    try:
        return {
            table: connection.execute(
                f"SELECT * EXCLUDE (source) FROM {table} ORDER BY ALL"
            ).fetchall()
            if table in ("payments", "dead_letters")
            else connection.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            for table in KEYS
        }
    finally:
        connection.close()


@pytest.fixture(scope="module")
def replay_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay")
    centflow("run", "--replay", str(SAMPLE), "--out", str(out), *WINDOW)
    return out


@pytest.fixture(scope="module")
def replay_tables(replay_out: Path) -> dict[str, list[tuple]]:
    return tables(replay_out)


def test_replay_tables_reconcile_the_way_an_analyst_checks_them(replay_out, replay_tables):
    assert len(replay_tables["payments"]) > 4_000
    db = duckdb.connect(str(replay_out / "centflow.duckdb"), read_only=True)
    assert db.execute(
        "SELECT count(*) FROM recon_batch_totals WHERE status <> 'ok'"
    ).fetchall() == [(0,)]
    assert db.execute("SELECT bool_and(balanced) FROM recon_ledger_balance").fetchall() == [(True,)]
    # every approved payment is in exactly one batch, no other payment is in any,
    # and the sums agree per currency
    assert db.execute(
        "SELECT count(*) FROM payments WHERE decision = 'approve' AND batch_id IS NULL"
    ).fetchall() == [(0,)]
    assert db.execute(
        "SELECT count(*) FROM payments WHERE decision <> 'approve' AND batch_id IS NOT NULL"
    ).fetchall() == [(0,)]
    assert db.execute(
        "SELECT count(DISTINCT decision) FROM payments WHERE type = 'payment'"
    ).fetchall() == [(3,)]
    per_currency = db.execute(
        """SELECT p.currency,
                  sum(p.amount) FILTER (WHERE p.type = 'payment' AND p.decision = 'approve'),
                  any_value(b.gross)
           FROM payments p JOIN (SELECT currency, sum(gross) AS gross FROM settlement_batches GROUP BY 1) b USING (currency)
           GROUP BY p.currency"""
    ).fetchall()
    assert per_currency and all(events == batches for _, events, batches in per_currency)
    # FX: converted batches recompute exactly from the rates they stored, in SQL
    converted, recomputed = db.execute(
        """SELECT count(*), count(*) FILTER (WHERE again = b.fx_converted) FROM settlement_batches b
           JOIN (SELECT batch_id, sum(amount * rate) AS exact FROM settlement_fx GROUP BY 1) f USING (batch_id),
           LATERAL (SELECT trunc(f.exact - b.fees * b.fx_rate, 6) AS again)"""
    ).fetchone()
    assert converted > 50 and recomputed == converted
    assert db.execute("SELECT count(*) FROM recon_payee_conservation WHERE NOT balanced").fetchone() == (0,)  # fmt: skip
    reasons = {
        reason for (reason,) in db.execute("SELECT DISTINCT reason FROM dead_letters").fetchall()
    }
    assert {
        "duplicate",
        "invalid_json",
        "invalid_amount",
        "unknown_currency",
        "oversize",
        "not_utf8",
        "unknown_reference",
    } <= reasons
    assert db.execute("SELECT count(*) FROM payments WHERE late").fetchall()[0][0] > 0
    zero_decimal = db.execute(
        "SELECT count(*) FROM settlement_batches WHERE currency = 'JPY'"
    ).fetchall()[0][0]
    assert zero_decimal > 0
    db.close()


def _publish_as_a_plain_producer(bootstrap: str, topic: str, keying: str) -> None:
    """Every line of the sample, as any producer might send it: with no key, each
    message to a random partition of the 4, or with a random key. Timestamps are
    the log clock, as `centflow produce` stamps them, so the run sees the
    replay's ingestion times; only the partitioning differs. A line sent twice
    (the log's duplicates) is a retry and keeps its first partition or key, as a
    client's retries do (copies sent to two partitions on purpose are the limit
    `centflow.ingest.admission` documents)."""
    randomness = random.Random(20261207)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    clock = LogClock()
    placement: dict[bytes, int] = {}
    for _file, _line, raw in iter_lines(SAMPLE):
        chosen = placement.setdefault(raw, randomness.randrange(2**32))
        options = (
            {"partition": chosen % 4} if keying == "unkeyed" else {"key": chosen.to_bytes(4, "big")}
        )
        stamp_ms = clock.advance(raw) // 1000
        while True:
            try:
                producer.produce(topic, raw, timestamp=stamp_ms, **options)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0


@pytest.mark.kafka
@pytest.mark.parametrize("keying", ["unkeyed", "random-key"])
def test_tables_do_not_depend_on_how_producers_key_their_messages(
    replay_tables, kafka_bootstrap, fresh_topic, tmp_path, keying
):
    """A refund or chargeback in another partition than its payment, or two racing
    refunds read in either order: the tables are still exactly the replay's."""
    topic = fresh_topic(partitions=4)
    _publish_as_a_plain_producer(kafka_bootstrap, topic, keying)
    kafka = ["--kafka", kafka_bootstrap, "--topic", topic, "--until-idle", "--idle-s", "2"]
    centflow("run", *kafka, "--out", str(tmp_path), *WINDOW)
    assert tables(tmp_path) == replay_tables


@pytest.mark.kafka
@pytest.mark.parametrize("workers", [1, 2])
def test_kafka_mode_gives_the_replay_tables(
    replay_tables, kafka_bootstrap, fresh_topic, tmp_path, workers
):
    """Through a real broker, 4 partitions, one or two worker processes: the same tables;
    and every decision and dead letter is on its topic."""
    topic = fresh_topic(partitions=4)
    produce_log(SAMPLE, client_config(kafka_bootstrap), topic)
    kafka = [
        "--kafka",
        kafka_bootstrap,
        "--topic",
        topic,
        "--until-idle",
        "--idle-s",
        "2",
        "--workers",
        str(workers),
    ]
    topics = ["--dlq-topic", f"{topic}.dlq", "--decisions-topic", f"{topic}.decisions"]
    centflow("run", *kafka, *topics, "--out", str(tmp_path), *WINDOW)
    assert tables(tmp_path) == replay_tables
    client = client_config(kafka_bootstrap)
    decisions = {key for key, _ in _drain(client, f"{topic}.decisions")}
    assert decisions == {row[0].encode() for row in replay_tables["payments"]}
    dead = _drain(client, f"{topic}.dlq")
    assert len({key for key, _ in dead}) == len(replay_tables["dead_letters"])


@pytest.mark.kafka
def test_following_a_topic_until_ctrl_c_keeps_the_state_for_the_next_run(
    replay_tables, kafka_bootstrap, fresh_topic, tmp_path
):
    """`run --kafka` follows the topic by default: it keeps running once the topic is
    quiet; Ctrl-C stops it cleanly (exit 0) with a report and the state kept; the same
    command with --until-idle then resumes and ends with the replay's tables."""
    topic = fresh_topic(partitions=4)
    produce_log(SAMPLE, client_config(kafka_bootstrap), topic)
    lines = sum(1 for _ in iter_lines(SAMPLE))
    args = [
        "run",
        "--kafka",
        kafka_bootstrap,
        "--topic",
        topic,
        "--dlq-topic",
        f"{topic}.dlq",
        "--decisions-topic",
        f"{topic}.decisions",
        "--out",
        str(tmp_path),
        *WINDOW,
    ]
    follower = subprocess.Popen(
        [sys.executable, "-m", "centflow", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and follower.poll() is None:
        read = sum(status.messages for status in read_status(tmp_path) if status.kind == "input")
        if read >= lines:
            break
        time.sleep(0.1)
    time.sleep(IDLE_S_DEFAULT + 1.0)  # an --until-idle run would have stopped by now
    assert follower.poll() is None, "the run stopped although it was to follow the topic"
    os.killpg(follower.pid, signal.SIGINT)
    stdout, stderr = follower.communicate(timeout=120)
    assert follower.returncode == 0, stderr[-3000:]
    assert "the state is kept" in stderr and "stopped on SIGINT" in stderr
    assert "pass  batches equal their events" in stdout
    assert "pass  ledger sums to zero per currency" in stdout
    centflow(*args, "--until-idle", "--idle-s", "2")
    assert tables(tmp_path) == replay_tables


def _drain(client: dict[str, str], topic: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a topic, read until it has been quiet for 2 s."""
    consumer = Consumer({**client, "group.id": "test-drain", "enable.auto.commit": False})
    partitions = consumer.list_topics(timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, number, OFFSET_BEGINNING) for number in partitions])
    messages, quiet_since = [], time.monotonic()
    while time.monotonic() - quiet_since < 2.0:
        batch = consumer.consume(1000, 0.2)
        if batch:
            quiet_since = time.monotonic()
            messages += [
                (message.key(), message.value()) for message in batch if message.error() is None
            ]
    consumer.close()
    return messages


def test_two_worker_processes_give_the_same_tables(replay_tables, tmp_path):
    centflow("run", "--replay", str(SAMPLE), "--out", str(tmp_path), "--workers", "2", *WINDOW)
    assert tables(tmp_path) == replay_tables
    # worker 1 waited for worker 0 to listen, instead of a refused connection and a retry
    assert "retrying" not in (tmp_path / "logs" / "worker-1.log").read_text()


def _snapshots(recovery: Path) -> int:
    """How many state snapshots Bytewax's recovery partitions hold."""
    total = 0
    for part in recovery.glob("part-*.sqlite3"):
        try:
            with sqlite3.connect(part, timeout=1.0) as db:
                total += db.execute("SELECT count(*) FROM snaps").fetchall()[0][0]
        except sqlite3.OperationalError:  # being written right now: count it next time
            continue
    return total


def test_a_run_killed_with_sigkill_then_rerun_counts_nothing_twice(tmp_path):
    log = tmp_path / "log.jsonl.gz"
    write_log(
        log,
        60_000,
        seed=11,
        start_us=parse_rfc3339_us("2026-11-02T09:00:00Z"),
        duration_s=6 * 3600,
    )
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "centflow",
        "run",
        "--replay",
        str(log),
        "--out",
        str(killed),
        "--snapshot-s",
        "1",
        *WINDOW,
    ]
    victim = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        statuses = read_status(killed)
        if statuses and statuses[0].messages >= 20_000 and _snapshots(killed / "recovery") > 0:
            break
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # the runner and its worker, mid-stream
    victim.wait()
    statuses = read_status(killed)
    assert statuses and not statuses[0].ended, "the run finished before it could be killed"
    assert _snapshots(killed / "recovery") > 0, "no recovery snapshot was taken before the kill"
    centflow(*command[3:])  # the same command again: resumes from the recovery state
    centflow("run", "--replay", str(log), "--out", str(clean), *WINDOW)
    assert tables(killed) == tables(clean)
