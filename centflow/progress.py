"""Shards, envelopes and frontiers: how keyed state and watermarks travel.

Keyed state lives in a fixed number of logical shards (`SHARD_COUNT`), not in
one state per key and not per worker: a stage's items are *batches* of events
(one Bytewax item carries hundreds of events, which is what makes the pipeline
fast), routed to the shard that owns their key. Because the shard count is
fixed, the same key lands in the same shard whatever the number of workers,
and recovery state keeps its meaning when a run is resumed with more or fewer
workers.

An `Envelope` carries a shard's events plus the sender's **watermark**: a
promise that every event the sender forwards later has an ingestion time at
least that large. Each shard keeps a `Frontier`: the minimum watermark over
every origin that feeds it (all input partitions for the first stage, all
upstream shards after that). A window closes only once the frontier has
passed it, which is what "close a window only when every input partition has
moved past it" means, whatever order the partitions were read in.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import invariant
from centflow.ingest.columns import PAYMENT_SCHEMA
from centflow.limits import SHARD_COUNT, WATERMARK_END_US

#: Before an origin has said anything, it holds the frontier back.
WATERMARK_NONE_US = -(2**62)


def shard_of(key: str) -> int:
    """The shard that owns `key`: stable across processes and runs (CRC-32).

    >>> shard_of("merchant-1") == shard_of("merchant-1"), 0 <= shard_of("x") < SHARD_COUNT
    (True, True)
    """
    shard = _SHARDS.get(key)
    if shard is None:
        if len(_SHARDS) >= SHARD_CACHE_MAX:
            _SHARDS.clear()
        shard = _SHARDS[key] = zlib.crc32(key.encode()) % SHARD_COUNT
    return shard


def shards_of(keys: pa.Array) -> np.ndarray:
    """`shard_of` for a column of keys: once per distinct key, then a NumPy take."""
    encoded = pc.dictionary_encode(keys)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    distinct = np.array([shard_of(key) for key in encoded.dictionary.to_pylist()], np.int64)
    return distinct[encoded.indices.to_numpy(zero_copy_only=False)]


SHARD_CACHE_MAX = 50_000  # keys (payees, payers) whose shard is remembered; cleared when full
_SHARDS: dict[str, int] = {}


#: The Bytewax routing key of each shard. Bytewax sends a key to worker
#: ``SipHash-1-3(key) % workers``; these keys are chosen so that no worker holds
#: more than its even share of the 8 shards, for 2 to 8 workers (4/4, 3/3/2,
#: 2/2/2/2, ... one each), where the plain names ``s00``..``s07`` put 6 on one of
#: three workers. tests/test_progress.py checks the split against Bytewax itself.
SHARD_KEYS = ("s00-1", "s01-1", "s02-1", "s03-2", "s04-1", "s05-1", "s06-8", "s07-36")
_SHARD_INDEX = {key: index for index, key in enumerate(SHARD_KEYS)}


def shard_key(shard: int) -> str:
    """The Bytewax routing key of a shard.

    >>> shard_key(3)
    's03-2'
    """
    return SHARD_KEYS[shard]


def shard_index(key: str) -> int:
    """Inverse of `shard_key`.

    >>> shard_index(shard_key(6))
    6
    """
    return _SHARD_INDEX[key]


def shard_name(shard: int) -> str:
    """The shard's name in file and status names.

    >>> shard_name(3)
    's03'
    """
    return f"s{shard:02d}"


class Envelope:
    """Events for one shard (a record batch of `centflow.ingest.columns.PAYMENT_SCHEMA`),
    with the sender's watermark (µs of ingestion time), and optionally one row of
    context features per event (float64, `centflow.risk.shard`)."""

    __slots__ = ("context", "events", "origin", "shard", "watermark_us")

    def __init__(
        self,
        origin: str,
        shard: int,
        watermark_us: int,
        events: pa.RecordBatch,
        context: np.ndarray | None = None,
    ) -> None:
        self.origin = origin
        self.shard = shard
        self.watermark_us = watermark_us
        self.events = events
        self.context = context

    def __reduce__(self) -> tuple[object, tuple[str, int, int, bytes, np.ndarray | None]]:
        """Pickle the events as one Arrow IPC message (no per-event work)."""
        return (
            _envelope_from_ipc,
            (
                self.origin,
                self.shard,
                self.watermark_us,
                self.events.serialize().to_pybytes(),
                self.context,
            ),
        )

    def __repr__(self) -> str:
        return (
            f"Envelope({self.origin!r}, {self.shard}, {self.watermark_us}, "
            f"<{self.events.num_rows} events>)"
        )


def _envelope_from_ipc(
    origin: str, shard: int, watermark_us: int, data: bytes, context: np.ndarray | None = None
) -> Envelope:
    events = pa.ipc.read_record_batch(data, PAYMENT_SCHEMA)
    return Envelope(origin, shard, watermark_us, events, context)


class Frontier:
    """The minimum watermark over a fixed set of origins.

    An origin's watermark is the last one it sent (it may move back only when
    a stopped input is resumed, see `centflow.money.settlement`). `value` may be
    `WATERMARK_END_US` once every origin has ended; `value_live` ignores
    ended origins' END, for work that must not treat an end of input as the
    end of time (de-duplication horizons).

    >>> frontier = Frontier(["a", "b"])
    >>> frontier.update("a", 10); frontier.value
    -4611686018427387904
    >>> frontier.update("b", 7); frontier.value
    7
    """

    __slots__ = ("_live", "_watermarks")

    def __init__(self, origins: Iterable[str]) -> None:
        self._watermarks = dict.fromkeys(origins, WATERMARK_NONE_US)
        self._live = dict.fromkeys(self._watermarks, WATERMARK_NONE_US)
        invariant(len(self._watermarks) > 0, "a frontier needs at least one origin")

    def update(self, origin: str, watermark_us: int) -> None:
        """Record the latest watermark of `origin`."""
        invariant(origin in self._watermarks, "unexpected origin %r", origin)
        self._watermarks[origin] = watermark_us
        if watermark_us != WATERMARK_END_US:
            self._live[origin] = max(self._live[origin], watermark_us)

    @property
    def value(self) -> int:
        """Every event still to come has an ingestion time at least this large."""
        return min(self._watermarks.values())

    @property
    def value_live(self) -> int:
        """Like `value`, but an ended origin counts with its last real watermark."""
        return min(self._live.values())

    def state(self) -> tuple[dict[str, int], dict[str, int]]:
        """Picklable copy for a recovery snapshot."""
        return dict(self._watermarks), dict(self._live)

    @classmethod
    def restore(cls, state: tuple[dict[str, int], dict[str, int]]) -> Frontier:
        """Rebuild from `state`."""
        frontier = cls(state[0])
        frontier._watermarks.update(state[0])
        frontier._live.update(state[1])
        return frontier


class Router:
    """Splits events by downstream shard and decides which shards need an envelope.

    A downstream shard gets an envelope when there are events for it, or when
    the watermark moved since it last heard from this origin (so frontiers keep
    moving even where no events go).
    """

    __slots__ = ("_origin", "_sent_us")

    def __init__(self, origin: str, sent_us: dict[int, int] | None = None) -> None:
        self._origin = origin
        self._sent_us = dict(sent_us or {})

    def route(
        self,
        events: pa.RecordBatch,
        watermark_us: int,
        key: str = "payee_id",
        context: np.ndarray | None = None,
    ) -> list[tuple[str, Envelope]]:
        """Envelopes ``(shard key, Envelope)`` for the events (and their context rows)
        and watermark of one step; each shard's events keep their order."""
        shards = shards_of(events[key]) if events.num_rows else np.zeros(0, np.int64)
        order = np.argsort(shards, kind="stable")
        ordered = events.take(pa.array(order)) if events.num_rows else events
        ordered_context = None if context is None else context[order]
        counts = np.bincount(shards, minlength=SHARD_COUNT).tolist()
        out = []
        start = 0
        for shard in range(SHARD_COUNT):
            size = counts[shard]
            if size or self._sent_us.get(shard) != watermark_us:
                self._sent_us[shard] = watermark_us
                envelope = Envelope(
                    self._origin,
                    shard,
                    watermark_us,
                    ordered.slice(start, size),
                    None if ordered_context is None else ordered_context[start : start + size],
                )
                out.append((shard_key(shard), envelope))
            start += size
        return out

    def state(self) -> dict[int, int]:
        """Picklable copy for a recovery snapshot."""
        return dict(self._sent_us)
