"""Integration tests of centflow.ops.kafka and centflow.ops.broker against a real local broker."""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from centflow.errors import ConfigError, TerminalError
from centflow.ingest.replay import iter_log
from centflow.ops.broker import LocalBroker, free_loopback_port
from centflow.ops.kafka import (
    HEADER_ORIGIN,
    LOCAL_FRAME_RECORDS,
    TIMESTAMP_MS_MIN,
    _LogReader,
    _pacer,
    check_reachable,
    client_config,
    ensure_topics,
    load_client_settings,
    produce_log,
    quiet_client_config,
    topic_partition_count,
)

pytestmark = pytest.mark.kafka

# Caught up = no new message for this long (the broker's high watermark can trail).
QUIET_S = 2.0
CONSUME_DEADLINE_S = 30.0
PAYERS = ["payer-a", "payer-b", "payer-c", "pä-unicode", "payer-e", "payer-f", "payer-g"]


def _event(index: int, occurred_at: str) -> bytes:
    event = {
        "event_id": f"evt-{index:05d}",
        "type": "payment",
        "occurred_at": occurred_at,
        "payer_id": PAYERS[index % len(PAYERS)],
        "payee_id": f"merchant-{index % 3}",
        "amount": "0.10",
        "currency": "USD",
        "rail": "card",
        "country": "US",
    }
    return json.dumps(event, ensure_ascii=False).encode()


def _log_lines(count: int = 240) -> list[bytes]:
    """Events out of event-time order, plus the lines a producer must still carry."""
    lines = [b"not json before any event time"]  # log clock 0: the minimum timestamp
    for index in range(count):
        # Mostly forward, every fifth event 2 s behind: the log clock is a running max.
        at_us = 10_000_000 + index * 500_123 - (2_000_000 if index % 5 == 0 else 0)
        seconds, micros = divmod(at_us, 1_000_000)
        occurred_at = f"2025-03-01T12:{seconds // 60:02d}:{seconds % 60:02d}.{micros:06d}+00:00"
        lines.append(_event(index, occurred_at))
    lines[50:50] = [
        b"",  # blank: skipped but counted in line numbers
        b'["an", "array"]',
        b'{"payer_id": 42, "occurred_at": "2025-03-01T12:00:00Z"}',
        b'{"event_id": "no-payer"}',
        b'{"payer_id": "", "event_id": "empty-payer"}',
        b"\xff\xfe not utf-8",
    ]
    return lines


def _write_log(directory: Path, gzipped: bool) -> Path:
    data = b"\n".join(_log_lines()) + b"\n"
    if gzipped:
        path = directory / "log.jsonl.gz"
        path.write_bytes(gzip.compress(data))
    else:
        path = directory / "log.jsonl"
        path.write_bytes(data)
    return path


def _expected_key(raw: bytes) -> bytes | None:
    """The key, computed independently of centflow: the payer_id of a JSON object."""
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    payer_id = event.get("payer_id") if isinstance(event, dict) else None
    return payer_id.encode() if isinstance(payer_id, str) and payer_id else None


def _consume_all(bootstrap: str, topic: str, partitions: int) -> list:
    """Every message of `topic`, read until the broker has been quiet for QUIET_S."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tests-unused",  # assign() joins no group
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 100,
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0) for partition in range(partitions)])
    messages: list = []
    deadline = time.monotonic() + CONSUME_DEADLINE_S
    last_seen = time.monotonic()
    try:
        while time.monotonic() - last_seen < QUIET_S and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                assert message.error() is None, message.error()
                messages.append(message)
                last_seen = time.monotonic()
    finally:
        consumer.close()
    return messages


def _topic_names(bootstrap: str) -> set[str]:
    admin = AdminClient(quiet_client_config(client_config(bootstrap)))
    return set(admin.list_topics(timeout=10).topics)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_produce_log_round_trip(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], tmp_path: Path, gzipped: bool
) -> None:
    path = _write_log(tmp_path, gzipped)
    expected = {position: (raw, ingest_us) for position, raw, ingest_us in iter_log(path)}
    topic = fresh_topic(partitions=3)
    reports: list[int] = []

    stats = produce_log(path, client_config(kafka_bootstrap), topic, progress=reports.append)

    assert stats.messages == len(expected) == len(_log_lines()) - 1  # the blank line
    assert stats.bytes == sum(len(raw) for raw, _ in expected.values())
    assert stats.rate > 0 and reports == [stats.messages]
    messages = _consume_all(kafka_bootstrap, topic, 3)
    origins = [dict(message.headers())[HEADER_ORIGIN].decode() for message in messages]
    assert Counter(origins) == Counter(expected.keys()), "every line exactly once"
    partition_of_key: dict[bytes | None, set[int]] = {}
    for origin, message in zip(origins, messages, strict=True):
        raw, ingest_us = expected[origin]
        assert message.value() == raw
        assert message.key() == _expected_key(raw)
        assert message.timestamp() == (
            TIMESTAMP_CREATE_TIME,
            max(ingest_us // 1000, TIMESTAMP_MS_MIN),
        )
        partition_of_key.setdefault(message.key(), set()).add(message.partition())
    assert all(len(parts) == 1 for key, parts in partition_of_key.items() if key is not None)
    assert len({part for parts in partition_of_key.values() for part in parts}) > 1
    for partition in range(3):
        lines = [
            int(origin.rsplit(":", 1)[1])
            for origin, message in zip(origins, messages, strict=True)
            if message.partition() == partition
        ]
        assert lines == sorted(lines), f"partition {partition} out of log order"
    # The log clock really moves (else the timestamp check above proves little).
    assert len({ingest_us for _, ingest_us in expected.values()}) > 150


def test_pacer_schedules_by_rate_and_by_log_clock() -> None:
    by_rate = _pacer(rate_per_s=100.0, speed=None)
    assert by_rate is not None
    assert by_rate(0, 5_000_000) == pytest.approx(0.0, abs=0.01)  # time starts at the first
    assert by_rate(50, 5_000_000) == pytest.approx(0.5, abs=0.01)
    by_speed = _pacer(rate_per_s=None, speed=4.0)
    assert by_speed is not None
    assert by_speed(0, 0) == 0.0  # before the first event time: at once, and no origin
    assert by_speed(1, 10_000_000) == pytest.approx(0.0, abs=0.01)
    assert by_speed(2, 18_000_000) == pytest.approx(2.0, abs=0.01)  # 8 s of log at 4x
    assert _pacer(None, None) is None


def test_produce_log_paces_by_rate_and_by_speed(
    fresh_topic: Callable[..., str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    path = tmp_path / "paced.jsonl"
    # 31 events 0.1 s of event time apart: 3 s of log clock.
    path.write_bytes(
        b"\n".join(_event(i, f"2025-03-01T12:00:{i // 10:02d}.{i % 10}00Z") for i in range(31))
    )
    config, topic = client_config(kafka_bootstrap), fresh_topic(partitions=1)

    by_rate = produce_log(path, config, topic, rate_per_s=15.0)
    by_speed = produce_log(path, config, topic, speed=1.5)

    # Without pacing a small log takes well under a second (child start, producer id).
    assert 1.9 <= by_rate.seconds < 6.0  # 30 gaps of 1/15 s
    assert 1.9 <= by_speed.seconds < 6.0  # 3 s of log clock at 1.5x
    assert by_rate.messages == by_speed.messages == 31


def test_produce_log_rejects_bad_pacing_and_missing_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path = _write_log(tmp_path, gzipped=False)
    config = client_config(kafka_bootstrap)
    with pytest.raises(ConfigError, match="not both"):
        produce_log(path, config, "any", rate_per_s=10.0, speed=2.0)
    with pytest.raises(ConfigError, match="positive"):
        produce_log(path, config, "any", rate_per_s=0.0)
    with pytest.raises(TerminalError, match="'never-created' does not exist"):
        produce_log(path, config, "never-created")
    assert "never-created" not in _topic_names(kafka_bootstrap)


def test_produce_log_reports_unreadable_logs(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], tmp_path: Path
) -> None:
    config, topic = client_config(kafka_bootstrap), fresh_topic(partitions=1)
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"definitely not deflate" * 10)
    with pytest.raises(ConfigError, match="cannot read replay log"):
        produce_log(corrupt, config, topic)
    with pytest.raises(ConfigError, match="does not exist"):
        produce_log(tmp_path / "missing.jsonl", config, topic)


def _long_log(directory: Path, count: int) -> Path:
    """A gzipped log of `count` events plus the odd lines, long enough to hand over."""
    path = directory / "long.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(_log_lines(count)) + b"\n"))
    return path


@pytest.mark.parametrize("hand_over_after_lines", [1, 3 * LOCAL_FRAME_RECORDS])
def test_log_reader_child_carries_on_where_the_parent_stopped(
    tmp_path: Path, hand_over_after_lines: int
) -> None:
    path = _long_log(tmp_path, 2000)
    expected = [
        (position, raw, ingest_us, _expected_key(raw))
        for position, raw, ingest_us in iter_log(path)
    ]
    reader = _LogReader(path, hand_over_after_lines=hand_over_after_lines)
    with reader as frames:
        records = [record for frame in frames for record in zip(*frame, strict=True)]

    assert records == expected
    # The parent parsed whole frames up to the hand-over line, the child the rest.
    line_numbers = [int(position.rsplit(":", 1)[1]) for position, *_ in expected]
    assert reader.handed_over_at in line_numbers[:-1]
    parsed_by_parent = line_numbers.index(reader.handed_over_at) + 1
    assert parsed_by_parent % LOCAL_FRAME_RECORDS == 0
    assert reader.handed_over_at >= hand_over_after_lines


def test_log_reader_reports_a_log_its_child_cannot_read(tmp_path: Path) -> None:
    data = gzip.compress(b"\n".join(_log_lines(8000)) + b"\n")
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(data[: len(data) * 3 // 4])  # readable at first, cut off later
    reader = _LogReader(truncated, hand_over_after_lines=1)
    with pytest.raises(ConfigError, match=r"cannot read replay log .*reader exit status"), reader:
        for _ in reader:
            pass
    assert reader.handed_over_at is not None


def test_check_reachable_fails_fast_on_a_closed_port(kafka_bootstrap: str) -> None:
    check_reachable(client_config(kafka_bootstrap), timeout_s=5.0)
    closed = f"127.0.0.1:{free_loopback_port()}"
    started = time.monotonic()
    with pytest.raises(TerminalError) as raised:
        check_reachable(client_config(closed), timeout_s=1.5)
    assert time.monotonic() - started < 4.0
    message = str(raised.value)
    assert closed in message and "is the broker running?" in message
    assert "\n" not in message


def test_topics_are_created_once_and_missing_ones_are_not_created(
    kafka_bootstrap: str, fresh_topic: Callable[..., str]
) -> None:
    config = client_config(kafka_bootstrap)
    topic = fresh_topic(partitions=5)
    assert topic_partition_count(config, topic) == 5
    ensure_topics(config, {topic: 2})  # exists: kept as it is
    assert topic_partition_count(config, topic) == 5
    with pytest.raises(TerminalError, match="'missing-topic' does not exist"):
        topic_partition_count(config, "missing-topic")
    # The broker creates a topic that a metadata request merely names: we never name it.
    assert "missing-topic" not in _topic_names(kafka_bootstrap)
    with pytest.raises(ConfigError, match="partitions"):
        ensure_topics(config, {"zero-partitions": 0})


def test_local_broker_lifecycle_and_a_taken_port(kafka_bootstrap: str, tmp_path: Path) -> None:
    taken_port = int(kafka_bootstrap.rsplit(":", 1)[1])
    with pytest.raises(TerminalError, match="another broker running"):
        LocalBroker(port=taken_port).start()
    broker = LocalBroker(log_path=tmp_path / "tansu.log")
    with broker:
        check_reachable(client_config(broker.bootstrap), timeout_s=5.0)
    broker.stop()  # idempotent
    with pytest.raises(TerminalError, match="not running"):
        _ = broker.bootstrap
    assert "listening on" in (tmp_path / "tansu.log").read_text()


def test_load_client_settings(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text(
        "# SASL over TLS\n"
        "! also a comment\n"
        "\n"
        "security.protocol = SASL_SSL\n"
        "sasl.mechanism=PLAIN\n"
        "sasl.username: alice\n"
        "sasl.password=s3cr=t:x\n"
        "ssl.ca.location=/etc/ssl/certs/\\\n"
        "    ca.pem\n",
        encoding="utf-8",
    )
    settings = load_client_settings(path, ["sasl.mechanism=SCRAM-SHA-512", "linger.ms=5"])
    assert settings == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "s3cr=t:x",
        "ssl.ca.location": "/etc/ssl/certs/ca.pem",
        "linger.ms": "5",
    }
    assert load_client_settings(None, []) == {}
    config = client_config("127.0.0.1:9092", settings)
    assert config["bootstrap.servers"] == "127.0.0.1:9092"
    assert config["sasl.username"] == "alice"


def test_load_client_settings_rejects_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.properties"
    path.write_text("security.protocol=SSL\njust-a-word\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.properties:2: expected key=value"):
        load_client_settings(path, [])
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        load_client_settings(None, ["linger.ms"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_client_settings(None, ["=value"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_client_settings(tmp_path / "absent.properties", [])


def _read_partition(source, name: str, resume=None, want: int = 3, timeout_s: float = 20.0):
    """Messages from one partition of a `KafkaBatchSource` until `want` came (as dead
    letters: they are not events), with the partition's position."""
    partition = source.build_part("read", name, resume)
    messages, deadline = [], time.monotonic() + timeout_s
    try:
        while len(messages) < want and time.monotonic() < deadline:
            for batch in partition.next_batch():
                assert batch.payments.num_rows == 0
                messages.extend(batch.dead)
            time.sleep(0.01)
        return messages, partition.snapshot()
    finally:
        partition.close()


def test_kafka_source_ingestion_time_is_the_running_maximum_of_timestamps(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    from dataflows.sources import KafkaBatchSource, KafkaPosition

    config = client_config(kafka_bootstrap)
    topic = fresh_topic(partitions=1)
    producer = Producer(config)
    for value, stamp_ms in ((b"a", 5_000), (b"b", 3_000), (b"c", 7_000)):
        producer.produce(topic, value, partition=0, timestamp=stamp_ms)
    assert producer.flush(10) == 0
    source = KafkaBatchSource(config, [f"{topic}/0"], 100, None, tmp_path)

    messages, position = _read_partition(source, f"{topic}/0")
    assert [(m.source, m.received_us, m.raw) for m in messages] == [
        (f"{topic}/0/0", 5_000_000, b"a"),
        (f"{topic}/0/1", 5_000_000, b"b"),  # an earlier timestamp: the clock stays
        (f"{topic}/0/2", 7_000_000, b"c"),
    ]
    assert position == KafkaPosition(3, 7_000_000)

    resumed, position = _read_partition(source, f"{topic}/0", KafkaPosition(1, 5_000_000), 2)
    assert [(m.source, m.received_us) for m in resumed] == [
        (f"{topic}/0/1", 5_000_000),
        (f"{topic}/0/2", 7_000_000),
    ]
    assert position == KafkaPosition(3, 7_000_000)


def test_a_publisher_warms_up_before_its_first_message_and_tolerates_no_broker(
    kafka_bootstrap: str, fresh_topic: Callable[..., str]
) -> None:
    from sinks.kafka import KafkaPublisher

    topic = fresh_topic(partitions=2)
    publisher = KafkaPublisher(client_config(kafka_bootstrap), topic)
    started_s = time.monotonic()
    publisher.warm_up()
    assert topic in publisher.producer.list_topics(topic, timeout=1).topics
    assert time.monotonic() - started_s < 5
    nobody = KafkaPublisher({"bootstrap.servers": f"127.0.0.1:{free_loopback_port()}"}, topic)
    started_s = time.monotonic()
    nobody.warm_up(timeout_s=0.5)  # no broker: not an error yet
    assert time.monotonic() - started_s < 3
