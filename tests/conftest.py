"""Shared fixtures: one local Kafka-protocol broker per session, and fresh topics on it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from centflow.ops.broker import LocalBroker
from centflow.ops.kafka import client_config, ensure_topics


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap of a memory-only Tansu broker on a free loopback port, for the whole session.

    Its log is kept in the session's temporary directory (``broker/tansu.log``).
    """
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=log_path) as broker:
        yield broker.bootstrap


@pytest.fixture
def fresh_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """A factory: ``fresh_topic(partitions=3)`` creates a uniquely named topic and returns its name.

    The broker is shared by the session, so every test gets topics no other test touched.
    """

    def create(partitions: int = 3, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        ensure_topics(client_config(kafka_bootstrap), {name: partitions})
        return name

    return create
