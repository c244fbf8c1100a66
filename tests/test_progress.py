"""Shard routing keys spread evenly over Bytewax workers, checked against Bytewax itself."""

from __future__ import annotations

import threading
from collections import Counter

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, cluster_main

from centflow.limits import SHARD_COUNT
from centflow.progress import SHARD_KEYS, shard_index, shard_key


class _Record(op.StatefulBatchLogic):
    """Records which worker thread handled each key."""

    seen: dict[str, int] = {}  # noqa: RUF012 - a test's shared record

    def __init__(self, _resume: None) -> None:
        pass

    def on_batch(self, values: list[str]) -> tuple[list[str], bool]:
        for key in values:
            _Record.seen[key] = threading.get_ident()
        return [], op.StatefulBatchLogic.DISCARD

    def snapshot(self) -> None:
        return None


def test_shard_keys_are_distinct_and_invertible():
    assert len(set(SHARD_KEYS)) == SHARD_COUNT
    assert [shard_index(shard_key(shard)) for shard in range(SHARD_COUNT)] == list(
        range(SHARD_COUNT)
    )


def _split(keys: list[str], workers: int) -> list[int]:
    """How many of `keys` each of `workers` Bytewax worker threads handles, fewest first."""
    _Record.seen = {}
    flow = Dataflow("routing")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(keys)), lambda key: key)
    op.inspect("out", op.stateful_batch("record", keyed, _Record))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert set(_Record.seen) == set(keys)
    return sorted(Counter(_Record.seen.values()).values())


@pytest.mark.parametrize("workers", range(2, SHARD_COUNT + 1))
def test_no_worker_gets_more_than_its_share_of_shards(workers):
    assert max(_split(list(SHARD_KEYS), workers)) == -(-SHARD_COUNT // workers)


def test_the_plain_names_would_not_spread_evenly():
    plain = [f"s{shard:02d}" for shard in range(SHARD_COUNT)]
    assert _split(plain, 3) == [1, 1, 6]  # the keys were chosen on purpose
