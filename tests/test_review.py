"""The review queue: payments held for review settle only once released, through the
command line, real replays, the Parquet dataset and DuckDB; and the settlement shard
applies resolutions the same way whichever arrives first, the event or its resolution."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from centflow.errors import ConfigError, InvariantViolation, TerminalError
from centflow.limits import WATERMARK_END_US
from centflow.money.settlement import SettlementShard
from centflow.ops.kafka import client_config
from centflow.risk.review import (
    Resolution,
    ReviewEnvelope,
    append_resolutions,
    read_resolutions,
    release_window,
    resolutions_path,
)
from sinks.arrow import rows_to_table
from sinks.duckdb import materialize
from tests.factories import SECOND_US, envelope, payment

WINDOW = ["--window-s", "60", "--lateness-s", "30"]
# One tier: a payment over 10 units is held for review (reason tier_limit) whatever the
# models say, so the log below has reviews it knows in advance.
CONFIG = """
[[risk.tiers]]
name = "basic"
payment_max_units = 10
day_max_units = 100000
"""
REVIEWED = {"r1", "r2", "r3", "r4"}


def _event(event_id: str, second: int, payer: str, payee: str, amount: str, **extra: str) -> dict:
    return {
        "event_id": event_id,
        "type": "payment",
        "occurred_at": f"2026-11-02T10:{second // 60:02d}:{second % 60:02d}Z",
        "payer_id": payer,
        "payee_id": payee,
        "amount": amount,
        "currency": "USD",
        "rail": "card",
        "country": "DE",
        **extra,
    }


def _log() -> list[dict]:
    return [
        _event("a1", 1, "p0", "m1", "5.00"),
        _event("a2", 2, "p9", "m2", "3.00"),
        _event("r1", 5, "p1", "m1", "50.00"),  # released
        _event("r2", 6, "p2", "m2", "20.00"),  # declined, with its refund f2
        _event("r3", 7, "p3", "m1", "30.00"),  # left in review
        _event("r4", 8, "p4", "m2", "40.00"),  # released, with its refund f4
        _event("f4", 20, "p4", "m2", "10.00", type="refund", ref_event_id="r4"),
        _event("f2", 21, "p2", "m2", "5.00", type="refund", ref_event_id="r2"),
        _event("a3", 130, "p0", "m1", "2.00"),
        _event("a4", 400, "p9", "m2", "1.00"),
    ]


def centflow(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "centflow", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("review-inputs")
    log = directory / "reviews.jsonl"
    log.write_text("".join(json.dumps(event) + "\n" for event in _log()))
    config = directory / "reviews.toml"
    config.write_text(CONFIG)
    return log, config


def run(inputs: tuple[Path, Path], out: Path, *extra: str) -> None:
    log, config = inputs
    centflow("run", "--replay", str(log), "--out", str(out), "--config", str(config), *WINDOW, *extra)  # fmt: skip


def query(out: Path, sql: str, *parameters: object) -> list[tuple]:
    with duckdb.connect(str(out / "centflow.duckdb"), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()


def tables(out: Path) -> dict[str, list[tuple]]:
    names = ("payments", "settlement_batches", "settlement_payouts", "ledger_entries")
    return {
        name: query(out, f"SELECT * EXCLUDE (source) FROM {name} ORDER BY ALL")
        if name == "payments"
        else query(out, f"SELECT * FROM {name} ORDER BY ALL")
        for name in names
    }


@pytest.fixture(scope="module")
def resolved(inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A replay, the queue listed, two releases and a decline, and the replay run again."""
    out = tmp_path_factory.mktemp("review-out")
    run(inputs, out)
    listed = json.loads(centflow("review", "list", "--out", str(out), "--json").stdout)
    before = {
        row[0]: row[1:]
        for row in query(out, "SELECT event_id, decision, review_outcome, batch_id FROM payments")
    }
    released = centflow("review", "release", "r1", "r4", "--out", str(out), "--note", "KYC done")
    declined = centflow("review", "decline", "r2", "--out", str(out))
    again = centflow("review", "release", "r1", "--out", str(out))
    run(inputs, out)
    return {
        "out": out,
        "listed": listed,
        "before": before,
        "released": released.stdout,
        "declined": declined.stdout,
        "again": again.stdout,
        "tables": tables(out),
    }


def test_the_queue_lists_the_payments_in_review_with_their_risk(resolved: dict) -> None:
    waiting = {row["event_id"]: row for row in resolved["listed"]["waiting"]}
    assert set(waiting) >= REVIEWED  # refunds follow their payment: never listed
    assert "f4" not in waiting and "f2" not in waiting
    row = waiting["r1"]
    assert (row["payer_id"], row["payee_id"], row["amount"], row["currency"]) == (
        "p1",
        "m1",
        "50",
        "USD",
    )
    assert "tier_limit" in row["reasons"] and 0 <= row["risk_score"] <= 1
    for event_id in REVIEWED | {"f2", "f4"}:  # held: decided review, pending, no batch
        assert resolved["before"][event_id] == ("review", "pending", None)
    assert resolved["before"]["a1"][0] == "approve" and resolved["before"]["a1"][1] is None


def test_release_and_decline_say_what_they_did_in_one_line_each(resolved: dict) -> None:
    released = resolved["released"].splitlines()
    assert len(released) == 2
    assert released[0].startswith("r1: released at ") and "next batch" in released[0]
    assert resolved["declined"].startswith("r2: declined at ")
    assert resolved["again"].startswith("r1: already released at ")
    assert resolved["again"].rstrip().endswith("nothing changed")


def test_released_payments_settle_in_a_batch_and_the_ledger(resolved: dict) -> None:
    out = resolved["out"]
    rows = {
        row[0]: row[1:]
        for row in query(
            out,
            "SELECT event_id, decision, review_outcome, batch_id, late, resolved_at, review_note "
            "FROM payments WHERE event_id IN ('r1', 'r4', 'f4')",
        )
    }
    assert set(rows) == {"r1", "r4", "f4"}
    for event_id, (decision, outcome, batch_id, late, resolved_at, note) in rows.items():
        assert (decision, outcome, late, note) == ("review", "released", True, "KYC done"), event_id
        assert batch_id is not None and resolved_at is not None
    assert rows["r4"][2] == rows["f4"][2]  # the refund settles with its payment
    [(event_count, late_count, gross, refunds, net, window_start)] = query(
        out,
        "SELECT event_count, late_count, gross, refunds, net, window_start "
        "FROM settlement_batches WHERE batch_id = ?",
        rows["r4"][2],
    )
    assert (event_count, late_count, gross, refunds) == (2, 2, Decimal("40"), Decimal("10"))
    assert net < gross - refunds  # the batch's fees
    resolved_us = int(rows["r4"][4].timestamp() * 1_000_000)
    start_us = release_window(resolved_us, 60 * SECOND_US, 30 * SECOND_US) * 60 * SECOND_US
    # the payee's next open batch at the release, not the payment's own window (2026-11-02)
    assert int(window_start.timestamp()) * SECOND_US == start_us
    entries = query(
        out,
        "SELECT event_id, sum(amount) FILTER (WHERE amount > 0) FROM ledger_entries "
        "WHERE event_id IN ('r1', 'r4', 'f4') GROUP BY ALL ORDER BY ALL",
    )
    assert entries == [("f4", Decimal("10")), ("r1", Decimal("50")), ("r4", Decimal("40"))]
    assert query(out, "SELECT * FROM recon_ledger_balance WHERE NOT balanced") == []
    assert query(out, "SELECT * FROM recon_batch_totals WHERE status <> 'ok'") == []
    assert query(out, "SELECT * FROM recon_payee_conservation WHERE NOT balanced") == []


def test_declined_and_unreleased_payments_never_settle(resolved: dict) -> None:
    out = resolved["out"]
    outcomes = {
        row[0]: row[1:]
        for row in query(
            out,
            "SELECT event_id, review_outcome, batch_id FROM payments "
            "WHERE event_id IN ('r2', 'f2', 'r3')",
        )
    }
    assert outcomes == {"r2": ("declined", None), "f2": ("declined", None), "r3": ("pending", None)}
    assert query(out, "SELECT * FROM ledger_entries WHERE event_id IN ('r2', 'f2', 'r3')") == []
    waiting = json.loads(centflow("review", "list", "--out", str(out), "--json").stdout)
    assert {row["event_id"] for row in waiting["waiting"]} == REVIEWED - {"r1", "r2", "r4"}
    assert waiting["resolved_not_settled"] == []


def test_a_second_run_changes_nothing(resolved: dict, inputs: tuple[Path, Path]) -> None:
    out = resolved["out"]
    again = centflow("review", "release", "r1", "r4", "--out", str(out))
    assert [line.split(":")[1].split(" at ")[0] for line in again.stdout.splitlines()] == [
        " already released",
        " already released",
    ]
    run(inputs, out)
    assert tables(out) == resolved["tables"]


def test_the_same_resolutions_give_the_same_tables_from_scratch(
    resolved: dict, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Fresh replays, with the resolution file there from the start, one and two worker
    processes: the releases join the same batches as when they came after the replay."""
    for workers in ("1", "2"):
        out = tmp_path / f"workers-{workers}"
        (out / "reviews").mkdir(parents=True)
        shutil.copy(resolved["out"] / "reviews" / "resolutions.jsonl", out / "reviews")
        run(inputs, out, "--workers", workers)
        assert tables(out) == resolved["tables"], workers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["release", "nope"], "nope: no such payment in"),
        (["release", "a1"], "a1: not in review (decision approve, settled in batch b-"),
        (["release", "f4"], "f4 is a refund, not a payment"),
        (["release", "r2"], "r2 was declined at "),
        (["decline", "r1"], "r1 was released at "),
        (["release", "r3", "--note", "x" * 501], "--note must be one line"),
    ],
)
def test_bad_resolutions_are_one_line_errors_and_write_nothing(
    resolved: dict, args: list[str], message: str
) -> None:
    out = resolved["out"]
    path = out / "reviews" / "resolutions.jsonl"
    before = path.read_bytes()
    result = centflow("review", *args, "--out", str(out), ok=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("centflow: error: ") and message in result.stderr
    assert path.read_bytes() == before


def test_review_of_a_directory_without_a_run_is_one_line(tmp_path: Path) -> None:
    result = centflow("review", "list", "--out", str(tmp_path), ok=False)
    assert result.returncode == 2 and "holds no payments" in result.stderr


# -- the settlement shard: order does not matter

WINDOW_US = 10 * SECOND_US
LATENESS_US = 3 * SECOND_US
ORIGINS = ["risk/0", "reviews"]


def _shard_outputs(resolution_first: bool) -> list[tuple]:
    held = [
        payment("h1", occurred_us=1 * SECOND_US, amount_micros=7_000_000, decision="review"),
        payment(
            "h1-refund",
            occurred_us=2 * SECOND_US,
            amount_micros=1_000_000,
            type="refund",
            ref_event_id="h1",
            decision="review",
        ),
        payment("h2", occurred_us=3 * SECOND_US, amount_micros=5_000_000, decision="review"),
    ]
    resolutions = ReviewEnvelope(
        "reviews",
        0,
        40 * SECOND_US,
        [
            Resolution(1, "m1", "h1", "release", 25 * SECOND_US, "ok"),
            Resolution(2, "m1", "h2", "decline", 26 * SECOND_US, None),
        ],
    )
    events = envelope("risk/0", 4 * SECOND_US, held)
    shard = SettlementShard(ORIGINS, WINDOW_US, LATENESS_US)
    first, second = (resolutions, events) if resolution_first else (events, resolutions)
    outputs = [shard.settle([first]), shard.settle([second])]
    outputs.append(shard.settle([envelope("risk/0", WATERMARK_END_US, [])]))
    outputs.append(
        shard.settle([ReviewEnvelope("reviews", 0, WATERMARK_END_US, [])])  # the end
    )
    rows = []
    for settled in outputs:
        for row in settled.event_table().to_pylist():
            if row["review_outcome"] != "pending":
                rows.append((row["event_id"], row["review_outcome"], row["batch_id"], row["late"]))
        for batch in settled.batch_records():
            rows.append((batch.batch_id, batch.window_start_us, batch.gross_micros, batch.refunds_micros))  # fmt: skip
    return sorted(rows, key=repr)


def test_a_resolution_applies_the_same_before_or_after_its_event() -> None:
    assert _shard_outputs(resolution_first=True) == _shard_outputs(resolution_first=False)
    rows = _shard_outputs(resolution_first=True)
    window = release_window(25 * SECOND_US, WINDOW_US, LATENESS_US)
    assert window == 2  # the window open at 25 s: [20 s, 30 s)
    batches = [row for row in rows if isinstance(row[1], int)]
    assert [(start, gross, refunds) for _, start, gross, refunds in batches] == [
        (window * WINDOW_US, 7_000_000, 1_000_000)
    ]
    outcomes = {row[0]: row[1:] for row in rows if not str(row[0]).startswith("b-")}
    assert outcomes["h1"][0] == outcomes["h1-refund"][0] == "released"
    assert outcomes["h1"][2] is True and outcomes["h1"][1] == batches[0][0]
    assert outcomes["h2"] == ("declined", None, False)


def test_held_events_survive_a_snapshot() -> None:
    shard = SettlementShard(ORIGINS, WINDOW_US, LATENESS_US)
    held = [
        payment("h1", occurred_us=SECOND_US, decision="review"),
        payment("h2", occurred_us=SECOND_US, decision="review", payer_id="p2"),
        payment("h1-r", occurred_us=2 * SECOND_US, amount_micros=40_000, type="refund", ref_event_id="h1", decision="review"),
    ]  # fmt: skip
    shard.settle([envelope("risk/0", 4 * SECOND_US, held)])
    restored = SettlementShard(ORIGINS, WINDOW_US, LATENESS_US, shard.snapshot())
    assert restored.reviews.held_count == 3
    release = Resolution(1, "m1", "h1", "release", 0)
    assert (
        restored.settle([ReviewEnvelope("reviews", 0, WATERMARK_END_US, [release])]).batches == []
    )
    assert restored.reviews.held_count == 1  # h2 waits
    settled = restored.settle([envelope("risk/0", WATERMARK_END_US, [])])
    assert [(b.gross_micros, b.refunds_micros) for b in settled.batch_records()] == [
        (100_000, 40_000)
    ]
    [row] = [row for row in settled.event_table().to_pylist() if row["event_id"] == "h1"]
    assert (row["review_outcome"], row["late"]) == ("released", False)  # its own window


# -- a run following a topic picks a resolution up while it runs


def _parquet(out: Path, where: str) -> list[tuple]:
    """The event ids and batches of the Parquet rows of ``payments`` that match `where`."""
    files = sorted(str(path) for path in (out / "parquet" / "payments").glob("*.parquet"))
    if not files:
        return []
    with duckdb.connect() as connection:
        return connection.execute(
            f"SELECT event_id, batch_id FROM read_parquet(?) WHERE {where}", [files]
        ).fetchall()


def _wait_for(process: subprocess.Popen[str], what: Callable[[], bool], label: str) -> None:
    deadline = time.monotonic() + FOLLOW_WAIT_S
    while time.monotonic() < deadline and process.poll() is None:
        if what():
            return
        time.sleep(0.2)
    raise AssertionError(f"{label}: not seen (exit {process.poll()})")


FOLLOW_WAIT_S = 60


@pytest.mark.kafka
def test_a_run_following_a_topic_settles_a_release_made_while_it_runs(
    kafka_bootstrap, fresh_topic, tmp_path, inputs
):
    """Messages stamped with the clock, 2-second windows: the held payment is listed while
    the run follows the topic, released, and settles in a batch once the topic moves on;
    the run is stopped with SIGTERM (state kept)."""
    _, config = inputs
    topic = fresh_topic(partitions=1)
    producer = Producer(client_config(kafka_bootstrap))

    def send(event_id: str, amount: str, payer: str = "p1") -> None:
        now_ms = time.time_ns() // 1_000_000
        moment = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {**_event(event_id, 0, payer, "m1", amount), "occurred_at": moment}
        producer.produce(topic, json.dumps(event).encode(), timestamp=now_ms)
        producer.flush(10)

    out = tmp_path / "follow"
    runner = subprocess.Popen(
        [
            sys.executable, "-m", "centflow", "run", "--kafka", kafka_bootstrap,
            "--topic", topic, "--dlq-topic", f"{topic}.dlq", "--decisions-topic", f"{topic}.decisions",
            "--out", str(out), "--config", str(config), "--window-s", "2", "--lateness-s", "1",
            "--snapshot-s", "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        send("k1", "1.00")
        send("k2", "50.00", payer="p2")  # over the tier limit: held for review
        held = "review_outcome = 'pending'"
        _wait_for(runner, lambda: _parquet(out, held) == [("k2", None)], "k2 held for review")
        listed = json.loads(centflow("review", "list", "--out", str(out), "--json").stdout)
        assert [row["event_id"] for row in listed["waiting"]] == ["k2"]
        centflow("review", "release", "k2", "--out", str(out))
        settled = "event_id = 'k2' AND batch_id IS NOT NULL"

        def released_and_settled() -> bool:
            send("tick", "0.01", payer="p3")  # the topic moves on: windows close
            return bool(_parquet(out, settled))

        _wait_for(runner, released_and_settled, "k2 settled")
    finally:
        if runner.poll() is None:
            os.kill(runner.pid, signal.SIGTERM)
        try:
            _, stderr = runner.communicate(timeout=120)
        finally:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait(10)
    assert runner.returncode == 0, stderr[-3000:]
    [(batch_id,)] = query(out, "SELECT batch_id FROM payments WHERE event_id = 'k2'")
    [(gross, late_count)] = query(
        out, "SELECT gross, late_count FROM settlement_batches WHERE batch_id = ?", batch_id
    )
    assert gross >= Decimal("50") and late_count >= 1
    assert query(out, "SELECT * FROM recon_ledger_balance WHERE NOT balanced") == []
    decisions = [
        json.loads(value)
        for key, value in _messages(kafka_bootstrap, f"{topic}.decisions")
        if key == b"k2"
    ]
    assert [(m["decision"], m["reasons"][0]) for m in decisions] == [
        ("review", "tier_limit"),
        ("approve", "review_released"),  # the latest message per key: the final decision
    ]
    assert decisions[1]["resolved_at_us"] > decisions[1]["ingested_at_us"]


def _messages(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    """Every message of a one-partition `topic`, in order."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "tests-unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[tuple[bytes, bytes]] = []
    quiet_until = time.monotonic() + 3
    try:
        while time.monotonic() < quiet_until:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                assert message.error() is None, message.error()
                out.append((message.key(), message.value()))
                quiet_until = time.monotonic() + 3
    finally:
        consumer.close()
    return out


# -- the resolution file


def test_resolutions_are_appended_in_order_stamped_later_each_time(tmp_path: Path) -> None:
    first = append_resolutions(tmp_path, [("m1", "e1", "release")], "ok", now_us=5_000_000)
    # the clock went back: the next resolution is still stamped after the last
    second = append_resolutions(
        tmp_path, [("m1", "e2", "decline"), ("m1", "e1", "release")], None, now_us=1_000_000
    )
    assert [(r.sequence, r.event_id, r.resolved_us, new) for r, new in first + second] == [
        (1, "e1", 5_000_000, True),
        (2, "e2", 5_000_001, True),
        (1, "e1", 5_000_000, False),  # the same resolution again: nothing written
    ]
    assert read_resolutions(resolutions_path(tmp_path)) == [first[0][0], second[0][0]]
    with pytest.raises(ConfigError, match=r"e2 was declined at .*; a resolution is final"):
        append_resolutions(tmp_path, [("m1", "e3", "release"), ("m1", "e2", "release")], None)
    assert len(read_resolutions(resolutions_path(tmp_path))) == 2  # all or nothing


def test_a_damaged_resolution_file_is_named_not_guessed(tmp_path: Path) -> None:
    append_resolutions(tmp_path, [("m1", "e1", "release")], None)
    path = resolutions_path(tmp_path)
    path.write_bytes(path.read_bytes() + b'{"sequence": 7}\n')
    with pytest.raises(TerminalError, match=r"resolutions.jsonl:2: not a resolution"):
        read_resolutions(path)


def _payment_row(batch_id: str | None, outcome: str | None, resolved_us: int | None) -> tuple:
    return (
        "e1", "payment", 1_000_000, 2_000_000, "p1", "m1", 50_000_000, "USD", "card", "DE",
        None, 0.3, "review", "m1", "tier_limit", batch_id, batch_id is not None, None, None,
        "log:1", outcome, resolved_us, None,
    )  # fmt: skip


def test_the_load_keeps_the_resolved_row_of_a_held_payment(tmp_path: Path) -> None:
    directory = tmp_path / "parquet" / "payments"
    directory.mkdir(parents=True)
    rows = [_payment_row(None, "pending", None), _payment_row("b-1", "released", 9_000_000)]
    for index, row in enumerate(rows):
        pq.write_table(rows_to_table("payments", [row]), directory / f"part-{index}.parquet")
    with duckdb.connect(str(materialize(tmp_path)), read_only=True) as connection:
        loaded = connection.execute(
            "SELECT batch_id, late, review_outcome FROM payments"
        ).fetchall()
    assert loaded == [("b-1", True, "released")]
    other = _payment_row("b-2", "released", 9_000_001)  # a second resolution: a bug
    pq.write_table(rows_to_table("payments", [other]), directory / "part-2.parquet")
    with pytest.raises(InvariantViolation, match="payments"):
        materialize(tmp_path)
