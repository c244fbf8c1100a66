"""Payments whose features wait for their label: what the supervised model learns from.

A payment's feature row is held from its decision until its label is due: a
chargeback labels it fraud when it arrives; one that reaches the label age
without one is learned as legitimate (a sample of the approved ones), and its
row is kept a while longer in case a chargeback comes late. Rows are held in the
order they were decided, as one FIFO with two marks: entries before `matured`
have passed the label age, entries before `head` are gone.

**Columns, not an object a payment.** The payments held in one epoch of learning
(a minute of ingestion time) are one chunk: their rows as one matrix, their
ingestion times and approvals as arrays, their event ids as one list. A tuple, an
array view and an int a payment cost some 250 bytes on top of the row itself, and
so would a chunk a group (groups of a few payments are common). Until the epoch
ends (`seal`) its payments wait as lists, one row block a group. A snapshot
pickles each chunk's arrays as they are (the ids as one MessagePack bytes object),
with no copy of the rows into one matrix first.

Rows are held as 32-bit floats, half the memory of the 64-bit rows the payment
was scored with: seven significant digits, finer than any feature means (counts,
logarithms, shares, z-scores); NaN (a signal not sent) stays NaN.

A payment labelled, or held again under the same event id, is no longer live:
`by_id` maps a live event id to its position, and an entry whose id maps
elsewhere is skipped.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from centflow.risk.packed import ENCODER, decoder

#: A learning example: (ingestion µs it counts from, event id, feature row).
Matured = tuple[int, str, np.ndarray]
_IDS = decoder(list[str])
HELD_DTYPE = np.float32


class _Chunk:
    """One group's held payments, from position `first` on."""

    __slots__ = ("approved", "event_ids", "first", "ingest_us", "rows")

    def __init__(
        self,
        first: int,
        ingest_us: np.ndarray,
        event_ids: list[str],
        rows: np.ndarray,
        approved: np.ndarray,
    ) -> None:
        self.first = first
        self.ingest_us = ingest_us
        self.event_ids = event_ids
        self.rows = rows
        self.approved = approved

    @property
    def end(self) -> int:
        return self.first + len(self.event_ids)


class _Open:
    """The payments held since the last seal, as lists (one row block a group)."""

    __slots__ = ("approved", "block_firsts", "blocks", "event_ids", "first", "ingest_us", "width")

    def __init__(self, first: int, width: int) -> None:
        self.first = first
        self.width = width
        self.ingest_us: list[int] = []
        self.event_ids: list[str] = []
        self.approved: list[bool] = []
        self.blocks: list[np.ndarray] = []
        self.block_firsts: list[int] = []


class HeldPayments:
    """Held feature rows in decision order (see the module docstring)."""

    def __init__(self) -> None:
        self.chunks: deque[_Chunk] = deque()
        self.by_id: dict[str, int] = {}  # live event id -> position
        self.head = 0  # the first position still held
        self.matured = 0  # the first position not yet past the label age
        self.tail = 0  # the next position
        self._open: _Open | None = None

    def __len__(self) -> int:
        """Live held payments (labelled or replaced ones are not counted)."""
        return len(self.by_id)

    def add(
        self, ingest_us: list[int], event_ids: list[str], rows: np.ndarray, approved: list[bool]
    ) -> None:
        """Hold a group's payments: their ingestion µs, ids, feature rows and whether
        each was approved (only an approved payment is ever learned as legitimate)."""
        count = len(event_ids)
        if not count:
            return
        first = self.tail
        open_ = self._open
        if open_ is not None and open_.width != rows.shape[1]:  # the layout grew
            self.seal()
            open_ = None
        if open_ is None:
            open_ = self._open = _Open(first, rows.shape[1])
        open_.ingest_us.extend(ingest_us)
        open_.event_ids.extend(event_ids)
        open_.approved.extend(approved)
        open_.blocks.append(rows.astype(HELD_DTYPE, copy=False))
        open_.block_firsts.append(first)
        by_id = self.by_id
        for offset, event_id in enumerate(event_ids):
            by_id[event_id] = first + offset
        self.tail = first + count

    def take(self, event_id: str) -> np.ndarray | None:
        """The row of a live held payment, which is held no more (it got its label)."""
        position = self.by_id.pop(event_id, None)
        if position is None:
            return None
        open_ = self._open
        if open_ is not None and position >= open_.first:
            index = bisect_right(open_.block_firsts, position) - 1
            return open_.blocks[index][position - open_.block_firsts[index]]
        chunk = self._chunk_of(position)
        return chunk.rows[position - chunk.first]

    def seal(self) -> None:
        """Turn the payments held since the last seal into one chunk."""
        open_, self._open = self._open, None
        if open_ is None:
            return
        blocks = open_.blocks
        self.chunks.append(
            _Chunk(
                open_.first,
                np.array(open_.ingest_us, np.int64),
                open_.event_ids,
                blocks[0] if len(blocks) == 1 else np.concatenate(blocks),
                np.array(open_.approved, np.bool_),
            )
        )

    def mature(self, as_of_us: int, age_us: int, keep_us: int, sample: int) -> list[Matured]:
        """Mark the payments that reached the label age by `as_of_us` unlabelled; return
        the approved ones of the `sample` (one in `sample` by event id hash) to learn as
        legitimate, counting from their label age; let go of those older than `keep_us`."""
        self.seal()
        examples: list[Matured] = []
        by_id = self.by_id
        for chunk, start in self._from(self.matured):
            due = chunk.ingest_us[start:] + age_us < as_of_us
            stop = start + (len(due) if due.all() else int(np.argmin(due)))
            times = chunk.ingest_us[start:stop].tolist()
            approved = chunk.approved[start:stop].tolist()
            for offset, ingest_us, ok in zip(range(start, stop), times, approved, strict=True):
                event_id = chunk.event_ids[offset]
                if (
                    ok
                    and by_id.get(event_id) == chunk.first + offset
                    and zlib.crc32(event_id.encode()) % sample == 1
                ):
                    examples.append((ingest_us + age_us, event_id, chunk.rows[offset]))
            self.matured = chunk.first + stop
            if stop < len(chunk.event_ids):
                break
        self._release_while(lambda chunk, offset: chunk.ingest_us[offset] + keep_us < as_of_us)
        return examples

    def release_to(self, most: int) -> None:
        """Let go of the oldest held payments until at most `most` are live."""
        if len(self.by_id) <= most:
            return
        self.seal()
        self._release_while(lambda chunk, offset: len(self.by_id) > most, past_matured=True)

    def _release_while(
        self, condition: Callable[[_Chunk, int], bool], past_matured: bool = False
    ) -> None:
        """Let go of the oldest entries while `condition` holds for a live one (dead
        ones go unasked), up to `matured` unless `past_matured`."""
        by_id = self.by_id
        while self.chunks:
            chunk = self.chunks[0]
            offset = self.head - chunk.first
            if offset >= len(chunk.event_ids):
                self.chunks.popleft()
                continue
            if self.head >= self.matured and not past_matured:
                return
            event_id = chunk.event_ids[offset]
            live = by_id.get(event_id) == self.head
            if live and not condition(chunk, offset):
                return
            if live:
                del by_id[event_id]
            self.head += 1
            self.matured = max(self.matured, self.head)

    def _from(self, position: int) -> Iterator[tuple[_Chunk, int]]:
        """The chunks from the one holding `position` on, with the offset to start at."""
        for chunk in self.chunks:
            if chunk.end > position:
                yield chunk, max(position - chunk.first, 0)

    def _chunk_of(self, position: int) -> _Chunk:
        chunks = self.chunks
        index = bisect_right(chunks, position, key=lambda chunk: chunk.first) - 1
        return chunks[index]

    # -- snapshots

    def state(self) -> tuple[Any, ...]:
        """The held payments for a snapshot: each chunk's arrays, its ids as one bytes
        object, and which of its entries are live."""
        self.seal()
        by_id = self.by_id
        chunks = []
        for chunk in self.chunks:
            live = np.fromiter(
                (
                    by_id.get(event_id) == chunk.first + offset
                    for offset, event_id in enumerate(chunk.event_ids)
                ),
                np.bool_,
                len(chunk.event_ids),
            )
            ids = ENCODER.encode(chunk.event_ids)
            chunks.append((chunk.first, chunk.ingest_us, ids, chunk.rows, chunk.approved, live))
        return (self.head, self.matured, self.tail, chunks)

    @classmethod
    def restore(cls, state: tuple[Any, ...]) -> HeldPayments:
        held = cls()
        held.head, held.matured, held.tail, chunks = state
        for first, ingest_us, ids, rows, approved, live in chunks:
            event_ids = _IDS.decode(ids)
            held.chunks.append(_Chunk(first, ingest_us, event_ids, rows, approved))
            for offset in np.flatnonzero(live).tolist():
                held.by_id[event_ids[offset]] = first + offset
        return held
