"""A Kafka sink for ``(key, value)`` byte messages: dead letters and decisions.

At-least-once, and never fewer: messages are produced asynchronously as they
come, and every recovery snapshot first flushes the producer, so nothing
produced before a snapshot can be lost by a crash after it. Output after the
last snapshot is produced again on resume, so consumers of ``payments.dlq``
and ``payments.decisions`` must be idempotent (both are keyed: dead letters
by source position, decisions by event_id).

One producer per process and topic serves all of that process's sink
partitions (librdkafka producers are thread-safe and batch internally).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import ClassVar

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, KafkaException, Producer

from centflow.errors import TerminalError
from centflow.limits import WRITER_PARTITION_COUNT
from sinks.parquet import writer_key

FLUSH_TIMEOUT_S = 60.0
BUFFER_FULL_POLL_S = 0.05
WARM_UP_TIMEOUT_S = 5.0
Message = tuple[bytes | None, bytes]


class KafkaPublisher:
    """One idempotent producer per (process, topic), with its delivery errors.

    Used by `KafkaMessageSink`, and directly by steps that publish what they
    decide and flush at their own snapshots (the decision step), so that their
    messages need not cross to another worker first.
    """

    _lock = threading.Lock()
    _instances: ClassVar[dict[tuple[str, str], KafkaPublisher]] = {}

    def __init__(self, client: dict[str, str], topic: str) -> None:
        self.topic = topic
        self.errors: list[str] = []
        settings = {
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.size": 1_000_000,
            # Only failures call back into Python: a callback per delivered message
            # costs as much as producing it. `flush` still waits for every delivery.
            "delivery.report.only.error": True,
            **client,
        }
        settings["on_delivery"] = self._delivered
        self.producer = Producer(settings)

    @classmethod
    def get(cls, client: dict[str, str], topic: str) -> KafkaPublisher:
        key = (client.get("bootstrap.servers", ""), topic)
        with cls._lock:
            if key not in cls._instances:
                cls._instances[key] = cls(client, topic)
            return cls._instances[key]

    def warm_up(self, timeout_s: float = WARM_UP_TIMEOUT_S) -> None:
        """Connect and learn the topic's partitions now, before the first message:
        otherwise the first messages wait for the connection, the metadata and the
        idempotent producer's id (about half a second on a local broker). A broker
        that does not answer is not an error here; producing will report it."""
        try:
            self.producer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException:
            pass

    def _delivered(self, error: KafkaError | None, _message: object) -> None:
        if error is not None:
            self.errors.append(error.str())

    def produce(
        self, messages: Sequence[tuple[bytes | None, bytes]] | Sequence[tuple[bytes, bytes]]
    ) -> None:
        produce = self.producer.produce
        topic = self.topic
        for key, value in messages:
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    self.producer.poll(BUFFER_FULL_POLL_S)
                except KafkaException as error:
                    raise TerminalError(f"cannot produce to {topic}: {error}") from None
        self.producer.poll(0)
        self._raise_errors()

    def flush(self) -> None:
        remaining = self.producer.flush(FLUSH_TIMEOUT_S)
        if remaining:
            raise TerminalError(
                f"{remaining} messages to {self.topic} undelivered after {FLUSH_TIMEOUT_S:g} s"
            )
        self._raise_errors()

    def _raise_errors(self) -> None:
        if self.errors:
            raise TerminalError(f"delivery to {self.topic} failed: {self.errors[:3]}")


class _ProducerPartition(StatefulSinkPartition[Message, None]):
    def __init__(self, shared: KafkaPublisher) -> None:
        self._shared = shared

    def write_batch(self, values: list[Message]) -> None:
        self._shared.produce(values)

    def snapshot(self) -> None:
        self._shared.flush()

    def close(self) -> None:
        self._shared.flush()


class KafkaMessageSink(FixedPartitionedSink[Message, None]):
    """Produces ``(writer key, (key, value))`` items to `topic`; flushed at every snapshot."""

    def __init__(self, client: dict[str, str], topic: str) -> None:
        self._client = client
        self._topic = topic

    def list_parts(self) -> list[str]:
        return [writer_key(index) for index in range(WRITER_PARTITION_COUNT)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key[1:])

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ProducerPartition:
        return _ProducerPartition(KafkaPublisher.get(self._client, self._topic))
