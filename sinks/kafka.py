"""A Kafka sink for ``(key, value)`` byte messages: dead letters and decisions.

At-least-once: each batch is flushed before Bytewax moves on, and output after
the last recovery snapshot is produced again on resume, so consumers of
``payments.dlq`` and ``payments.decisions`` must be idempotent (both are keyed:
dead letters by source position, decisions by event_id).
"""

from __future__ import annotations

from confluent_kafka import KafkaException, Producer
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from centflow.errors import TerminalError

FLUSH_TIMEOUT_S = 30.0


class _ProducerPartition(StatelessSinkPartition[tuple[bytes | None, bytes]]):
    def __init__(self, client: dict[str, str], topic: str) -> None:
        self._topic = topic
        self._errors: list[str] = []
        self._producer = Producer({**client, "enable.idempotence": True, "linger.ms": 20})

    def _delivered(self, error: object, _message: object) -> None:
        if error is not None:
            self._errors.append(str(error))

    def write_batch(self, items: list[tuple[bytes | None, bytes]]) -> None:
        produce = self._producer.produce
        for key, value in items:
            while True:
                try:
                    produce(self._topic, value, key, on_delivery=self._delivered)
                    break
                except BufferError:
                    self._producer.poll(0.05)
                except KafkaException as error:
                    raise TerminalError(f"cannot produce to {self._topic}: {error}") from None
        remaining = self._producer.flush(FLUSH_TIMEOUT_S)
        if remaining or self._errors:
            raise TerminalError(f"{remaining} messages to {self._topic} undelivered: {self._errors[:3]}")

    def close(self) -> None:
        self._producer.flush(FLUSH_TIMEOUT_S)


class KafkaMessageSink(DynamicSink[tuple[bytes | None, bytes]]):
    """Produces ``(key, value)`` messages to `topic` with an idempotent producer per worker."""

    def __init__(self, client: dict[str, str], topic: str) -> None:
        self._client = client
        self._topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(self._client, self._topic)
