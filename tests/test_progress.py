"""Shard routing keys spread evenly over Bytewax workers, checked against Bytewax itself."""

from __future__ import annotations

import threading
from collections import Counter

import bytewax.operators as op
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


def test_two_workers_get_eight_shards_each():
    _Record.seen = {}
    flow = Dataflow("routing")
    keys = op.key_on("key", op.input("in", flow, TestingSource(list(SHARD_KEYS))), lambda key: key)
    op.inspect("out", op.stateful_batch("record", keys, _Record))
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    assert sorted(Counter(_Record.seen.values()).values()) == [8, 8]
    # and the plain names would not have been even: the keys were chosen on purpose
    _Record.seen = {}
    flow = Dataflow("routing_plain")
    plain = [f"s{shard:02d}" for shard in range(SHARD_COUNT)]
    keys = op.key_on("key", op.input("in", flow, TestingSource(plain)), lambda key: key)
    op.inspect("out", op.stateful_batch("record", keys, _Record))
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    assert sorted(Counter(_Record.seen.values()).values()) == [7, 9]
