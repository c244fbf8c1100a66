"""Scoring in ingestion time: the sequencing that makes risk deterministic.

Events reach a shard in whatever order partitions and workers deliver them. A
shard therefore never lets arrival order touch its state: it scores each event
*as of* the start of its ingestion second (`centflow.risk.features.as_of_us`),
and grows its state only by whole seconds, in ingestion order, once every input
has moved past them. One call of `AsOfShard.push`:

1. buffers the arriving events and moves the frontier (the minimum watermark of
   every origin, `centflow.progress.Frontier`);
2. takes the events whose second has started below the frontier (every event
   ingested before their second has arrived), sorts them canonically (ingestion
   time, payee, event id: never the source position, which differs between a
   replay and Kafka) and groups them by second;
3. for each group, oldest first: commits every earlier group to the state
   (`_commit`), then describes the group against that state (`_describe`);
4. commits every group whose second the frontier has passed, the parts a
   second was described in merged back into canonical order (`_commit_before`).

Per-group work is plain Python over lists: the columns a shard reads are taken
out of Arrow once per ready block (`COLUMNS`), and each group holds slices of
them (`Group.rows`). A group is often one or two events (a second of one
shard's traffic), so an Arrow or NumPy call per group would cost more than the
events themselves.

An event waits only while some input is still short of the event's own second.
When every input has ended, everything is described and committed.

`PayeeContextShard` (payee shards) attaches the payee features,
`PayerFeatureShard` (payer shards) the payer features; `RiskShard`
(`centflow.risk.scoring`, one for all payers) scores and decides. Each keeps
its whole state in `snapshot`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import invariant
from centflow.ingest.columns import concat, empty_batch
from centflow.limits import WATERMARK_END_US
from centflow.progress import WATERMARK_NONE_US, Envelope, Frontier
from centflow.risk.features import (
    AS_OF_STEP_US,
    PAYEE_FEATURES,
    PAYER_FEATURES,
    PayeeBook,
    PayerBook,
    is_tiny,
)

LOG = logging.getLogger(__name__)
#: The feature rows a shard sends on: the payee features, then the payer features.
FIXED_FEATURES = (*PAYEE_FEATURES, *PAYER_FEATURES)
#: The first payer column: NaN there marks a payment whose features failed.
FAILED_COLUMN = len(PAYEE_FEATURES)

_CANONICAL = [("ingest_us", "ascending"), ("payee_id", "ascending"), ("event_id", "ascending"), ("type", "ascending")]  # fmt: skip


class Group:
    """The events of one ingestion second, canonically ordered, with what the shard
    made of them (`context`: payee features from upstream; `payload`: the shard's own).

    A group is rows `start` to `stop` of a ready block (`block`), whose `COLUMNS` are
    Python lists in `columns` (shared by its sibling groups: nothing is copied per
    group, which is often one or two events); `events` and `rows` are its own slices.
    """

    __slots__ = ("as_of_us", "block", "columns", "context", "payload", "start", "stop")

    def __init__(
        self,
        as_of_us: int,
        block: pa.RecordBatch,
        context: np.ndarray | None,
        columns: dict[str, list[Any]],
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        self.as_of_us = as_of_us
        self.block = block
        self.context = context
        self.columns = columns
        self.start = start
        self.stop = block.num_rows if stop is None else stop
        self.payload: Any = None

    @property
    def events(self) -> pa.RecordBatch:
        return self.block.slice(self.start, self.stop - self.start)

    @property
    def rows(self) -> dict[str, list[Any]]:
        return {name: values[self.start : self.stop] for name, values in self.columns.items()}

    def zipped(self, names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        """The group's rows of the named columns, one tuple a row."""
        span = slice(self.start, self.stop)
        return zip(*(self.columns[name][span] for name in names), strict=True)

    def __getstate__(self) -> tuple[Any, ...]:
        """Pickled as its own slices, not its siblings'."""
        return (self.as_of_us, self.events, self.context, self.rows, self.payload)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.as_of_us, self.block, self.context, self.columns, self.payload = state
        self.start, self.stop = 0, self.block.num_rows

    def __len__(self) -> int:
        return self.stop - self.start


class AsOfShard:
    """The sequencing of the module docstring; subclasses keep state and describe."""

    #: The columns a shard's `_describe` and `_commit` read, as lists in `Group.rows`.
    COLUMNS: tuple[str, ...] = ()

    def __init__(self, origins: list[str]) -> None:
        self.frontier = Frontier(origins)
        self.pending: list[tuple[pa.RecordBatch, np.ndarray | None]] = []
        self.uncommitted: deque[Group] = deque()
        #: groups before this (µs) may be committed: the frontier has passed their second
        self.passed_us = WATERMARK_NONE_US

    def push(self, envelopes: list[Envelope]) -> list[Group]:
        """Described groups, oldest first (each event exactly once, over all calls)."""
        described = self.describe(envelopes)
        self.commit_passed()
        return described

    def describe(self, envelopes: list[Envelope]) -> list[Group]:
        """Steps 1 to 3 of `push`: the described groups, with step 4 left for
        `commit_passed`, so that a caller can send what was described first (the
        commits only prepare the state for later groups: the next `describe` makes
        them first if `commit_passed` was not called)."""
        for envelope in envelopes:
            if envelope.events.num_rows:
                self.pending.append((envelope.events, envelope.context))
            self.frontier.update(envelope.origin, envelope.watermark_us)
        frontier_us = self.frontier.value
        ended = frontier_us >= WATERMARK_END_US
        second_us = frontier_us - frontier_us % AS_OF_STEP_US
        described = self._ready(None if ended else second_us + AS_OF_STEP_US)
        if described:
            self._describe_groups(described)
        self.passed_us = WATERMARK_END_US if ended else second_us
        return described

    def commit_passed(self) -> None:
        """Step 4 of `push`: commit every group whose second the frontier has passed."""
        self._commit_before(self.passed_us)

    def _describe_groups(self, groups: list[Group]) -> None:
        """Steps 3 for the groups of one ready block (a subclass may take them together,
        as long as each group sees the state of exactly the groups before it)."""
        for group in groups:
            self._commit_before(group.as_of_us)
            self._describe(group)
            self.uncommitted.append(group)

    def _ready(self, before_us: int | None) -> list[Group]:
        """Take the pending events ingested before `before_us` (None: all), in groups."""
        if not self.pending:
            return []
        events = concat([events for events, _ in self.pending])
        context = _joined([context for _, context in self.pending])
        ingest = events["ingest_us"].to_numpy()
        ready = np.ones(len(ingest), np.bool_) if before_us is None else ingest < before_us
        if not ready.any():
            return []
        waiting = np.flatnonzero(~ready)
        self.pending = (
            [(events.take(pa.array(waiting)), None if context is None else context[waiting])]
            if len(waiting)
            else []
        )
        rows = np.flatnonzero(ready)
        picked = events.take(pa.array(rows))
        order = pc.sort_indices(picked, sort_keys=_CANONICAL).to_numpy()
        picked = picked.take(pa.array(order))
        picked_context = None if context is None else context[rows][order]
        seconds = picked["ingest_us"].to_numpy() // AS_OF_STEP_US
        starts = np.flatnonzero(np.r_[True, seconds[1:] != seconds[:-1]])
        ends = [*starts[1:].tolist(), len(seconds)]
        columns = {name: picked[name].to_pylist() for name in self.COLUMNS}
        groups = []
        for start, end in zip(starts.tolist(), ends, strict=True):
            groups.append(
                Group(
                    int(seconds[start]) * AS_OF_STEP_US,
                    picked,
                    None if picked_context is None else picked_context[start:end],
                    columns,
                    start,
                    end,
                )
            )
        return groups

    def _commit_before(self, as_of_us: int) -> None:
        """Commit every group of a second before `as_of_us`, a whole second at a time.

        A second is often described in parts: the events of the frontier's own second
        that had arrived, then the rest once they do, and which part an event falls in
        depends on how partitions interleaved. Its parts are committed as one group in
        canonical order, so state that depends on order (a payer's recent payments,
        its running sums, first sightings, caps) grows the same way whatever the
        arrival order or the number of workers.
        """
        uncommitted = self.uncommitted
        while uncommitted and uncommitted[0].as_of_us < as_of_us:
            group = uncommitted.popleft()
            if uncommitted and uncommitted[0].as_of_us == group.as_of_us:
                parts = [group]
                while uncommitted and uncommitted[0].as_of_us == group.as_of_us:
                    parts.append(uncommitted.popleft())
                group = self._whole_second(parts)
            self._commit(group)

    def _whole_second(self, parts: list[Group]) -> Group:
        """The parts of one second as one canonically ordered group (for `_commit`)."""
        events = concat([part.events for part in parts])
        block = events.take(pc.sort_indices(events, sort_keys=_CANONICAL))
        columns = {name: block[name].to_pylist() for name in self.COLUMNS}
        return Group(parts[0].as_of_us, block, None, columns)

    def waiting_count(self) -> int:
        """Events buffered and not yet described."""
        return sum(events.num_rows for events, _ in self.pending)

    def _describe(self, group: Group) -> None:
        raise NotImplementedError

    def _commit(self, group: Group) -> None:
        raise NotImplementedError

    def sequencer_state(self) -> tuple[Any, ...]:
        return (self.frontier.state(), self.pending, list(self.uncommitted))

    def restore_sequencer(self, state: tuple[Any, ...]) -> None:
        frontier, self.pending, uncommitted = state
        self.frontier = Frontier.restore(frontier)
        self.uncommitted = deque(uncommitted)


Book = TypeVar("Book", PayeeBook, PayerBook)


class _BookShard(AsOfShard, Generic[Book]):
    """An as-of shard whose state is one book of features (and its sequencer)."""

    def __init__(self, origins: list[str], book: type[Book], state: tuple[Any, ...] | None) -> None:
        super().__init__(origins)
        self.book: Book = book() if state is None else book.restore(state[1])
        if state is not None:
            self.restore_sequencer(state[0])

    def snapshot(self) -> tuple[Any, ...]:
        return (self.sequencer_state(), self.book.state())


class PayeeContextShard(_BookShard[PayeeBook]):
    """Attaches `PAYEE_FEATURES` to the events of one payee shard."""

    COLUMNS = ("payee_id", "payer_id", "type", "currency", "amount_micros")

    def __init__(self, origins: list[str], state: tuple[Any, ...] | None = None) -> None:
        super().__init__(origins, PayeeBook, state)

    def _describe_groups(self, groups: list[Group]) -> None:
        """Every group's features in one list, then one array for the block."""
        features = self.book.features
        rows: list[tuple[float, ...]] = []
        for group in groups:
            self._commit_before(group.as_of_us)
            as_of_s = group.as_of_us // AS_OF_STEP_US
            cache: dict[str, tuple[float, ...]] = {}
            for payee_id in group.columns["payee_id"][group.start : group.stop]:
                row = cache.get(payee_id)
                if row is None:
                    row = cache[payee_id] = features(payee_id, as_of_s)
                rows.append(row)
            self.uncommitted.append(group)
        block = np.array(rows, np.float64).reshape(len(rows), len(PAYEE_FEATURES))
        start = 0
        for group in groups:
            group.context = block[start : start + len(group)]
            start += len(group)

    def _commit(self, group: Group) -> None:
        rows = group.columns
        span = slice(group.start, group.stop)
        second = group.as_of_us // AS_OF_STEP_US
        self.book.commit(
            second,
            [
                (payee_id, payer_id, is_tiny(amount, currency), kind == "refund")
                for kind, payee_id, payer_id, amount, currency in zip(
                    rows["type"][span],
                    rows["payee_id"][span],
                    rows["payer_id"][span],
                    rows["amount_micros"][span],
                    rows["currency"][span],
                    strict=True,
                )
                if kind != "chargeback"
            ],
        )


class PayerFeatureShard(_BookShard[PayerBook]):
    """Adds `PAYER_FEATURES` to the events of one payer shard: its context rows
    become the whole fixed feature row (`FIXED_FEATURES`), which the decision step
    (`centflow.risk.scoring.RiskShard`) scores.

    Reversals get zeros (they follow their payment; they are not scored). A payment
    whose features fail gets NaN in `FAILED_COLUMN` and is logged: the decision step
    sends it to review as a model error, and the rest of its block goes on."""

    COLUMNS = (
        "type",
        "payer_id",
        "ingest_us",
        "amount_micros",
        "payee_id",
        "device_id",
        "ip",
        "country",
        "currency",
    )

    _FEATURE_COLUMNS = tuple(name for name in COLUMNS if name != "ingest_us")

    def __init__(self, origins: list[str], state: tuple[Any, ...] | None = None) -> None:
        super().__init__(origins, PayerBook, state)

    def _describe_groups(self, groups: list[Group]) -> None:
        rows: list[list[float]] = []
        for group in groups:
            self._commit_before(group.as_of_us)
            self._payer_features(group, rows)
            self.uncommitted.append(group)
        payer = np.array(rows, np.float64).reshape(len(rows), len(PAYER_FEATURES))
        start = 0
        for group in groups:
            size = len(group)
            payee = group.context
            if payee is None:  # no payee context upstream (a test's input): zeros
                payee = np.zeros((size, len(PAYEE_FEATURES)))
            group.context = np.hstack([payee, payer[start : start + size]])
            start += size

    def _payer_features(self, group: Group, out: list[list[float]]) -> None:
        features = self.book.features
        as_of_us = group.as_of_us
        blank = [0.0] * len(PAYER_FEATURES)
        failed = [math.nan, *blank[1:]]
        for kind, payer, amount, payee_id, device, ip, country, currency in group.zipped(
            self._FEATURE_COLUMNS
        ):
            if kind != "payment":
                out.append(blank)
                continue
            try:
                tiny = is_tiny(amount, currency)
                out.append(features(payer, as_of_us, amount, payee_id, device, ip, country, tiny))
            except Exception:  # one event's features: that event goes to review
                LOG.exception("risk features failed for a payment of payer %r", payer)
                out.append(failed)

    def _commit(self, group: Group) -> None:
        commit = self.book.commit
        committed = self.COLUMNS[:-1]  # all but the currency
        for kind, payer, ingest, amount, payee, device, ip, country in group.zipped(committed):
            if kind == "payment":
                commit(payer, ingest, amount, payee, device, ip, country)


def described_events(groups: list[Group]) -> tuple[pa.RecordBatch, np.ndarray | None]:
    """The events of described groups as one block, with their context rows."""
    if not groups:
        return empty_batch(), None
    return whole_block(groups), _joined([g.context for g in groups])


def whole_block(groups: list[Group]) -> pa.RecordBatch:
    """The events of the groups one push described, as one block: the ready block
    they were cut from when they are all of it (no copy), else a concatenation."""
    block = groups[0].block
    if (
        all(group.block is block for group in groups)
        and sum(len(group) for group in groups) == block.num_rows
    ):
        return block
    return concat([group.events for group in groups])


def _joined(contexts: list[np.ndarray | None]) -> np.ndarray | None:
    """Context rows of several blocks in one (None: the blocks carry none)."""
    present = [context for context in contexts if context is not None]
    invariant(
        len(present) in (0, len(contexts)), "a shard's inputs all carry context, or none does"
    )
    return np.concatenate(present) if present else None
