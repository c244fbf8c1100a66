"""Netting: a closed window's events into batches, with their fees, FX, payouts and postings.

`centflow.money.settlement` decides when a window closes; `net_window` turns
its events into one batch per (payee, currency) (more parts for a total that
would overflow DECIMAL(18,6)). A window's events are sorted by (event time,
event id) before anything is numbered. Columnar: the events are sorted once,
each group's rows found, the groups summed with NumPy and the events' ledger
entries posted a column at a time. Python runs once per batch (carry,
rounding, batch id), never once per event.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import invariant
from centflow.limits import AMOUNT_MICROS_MAX, BATCH_MICROS_MAX
from centflow.money.batches import (
    BATCH_SCHEMA,
    PAYOUT_SCHEMA,
    WINDOW_COLUMNS,
    WINDOW_SCHEMA,
    Settled,
    batch_ids_for,
    close_time_us,
    window_columns,
)
from centflow.money.fees import FeeTerms, batch_fees
from centflow.money.fx import AWAITING_RATE, Conversion, FxBook, convert
from centflow.money.ledger import (
    FEE_POSTINGS_PER_GROUP,
    FX_POSTINGS,
    post_batches,
    post_events,
    post_fees,
    post_fx,
    post_party_lines,
)
from centflow.money.payouts import BPS_WHOLE, CarryKey, Payouts, Weights, settle_payouts

_ORDER = [("_group", "ascending"), ("occurred_us", "ascending"), ("event_id", "ascending"), ("type", "ascending")]  # fmt: skip
_ORDER_COLUMNS = ["occurred_us", "event_id", "type"]
#: The columns netting reads from a window's sorted events (the rest are only emitted,
#: in the order they came).
_NETTED_COLUMNS = ["event_id", "type", "occurred_us", "payee_id", "amount_micros", "currency", "rail", "splits", "late"]  # fmt: skip


def _group_codes(events: pa.Table) -> np.ndarray:
    """One int64 per row, equal for rows of the same (payee, currency)."""
    payees = pc.dictionary_encode(_whole(events["payee_id"]))
    currencies = pc.dictionary_encode(_whole(events["currency"]))
    return payees.indices.to_numpy().astype(np.int64) * len(
        currencies.dictionary
    ) + currencies.indices.to_numpy().astype(np.int64)


def _sorted_order(events: pa.Table) -> tuple[pa.Array, np.ndarray]:
    """The order of a window's events, by (group, event time, event id, type), and each
    sorted row's group code. Sorted in NumPy by (group, event time) alone when no two
    events of a group share a microsecond (then the ids never decide), by Arrow
    over all four keys otherwise: the same order either way."""
    codes = _group_codes(events)
    occurred = events["occurred_us"].to_numpy()
    order = np.lexsort((occurred, codes))
    groups = codes[order]
    times = occurred[order]
    tied = np.flatnonzero((groups[1:] == groups[:-1]) & (times[1:] == times[:-1]))
    if len(tied) > max(len(order) // 64, 8):  # many ties: let Arrow sort by all four keys
        grouped = events.select(_ORDER_COLUMNS).append_column("_group", pa.array(codes))
        ordered = pc.sort_indices(grouped, sort_keys=_ORDER)
        return ordered, codes[ordered.to_numpy()]
    if len(tied):  # a few runs of one group and microsecond: order each by (id, type)
        ids = _whole(events["event_id"])
        kinds = _whole(events["type"])
        starts = tied[np.concatenate(([True], tied[1:] != tied[:-1] + 1))]
        ends = np.append(tied[np.flatnonzero(tied[1:] != tied[:-1] + 1)], tied[-1]) + 2
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            rows = order[start:end].tolist()
            order[start:end] = sorted(rows, key=lambda row: (ids[row].as_py(), kinds[row].as_py()))
    return pa.array(order), groups


def _parts(types: list[str], amounts: list[int]) -> list[int]:
    """Where a group's sorted events split so no part's gross or refunds overflow
    DECIMAL(18,6): the offsets at which parts after the first start."""
    starts: list[int] = []
    gross = refunds = 0
    for offset, (kind, amount) in enumerate(zip(types, amounts, strict=True)):
        if kind == "payment":
            gross += amount
        else:
            refunds += amount
        if (gross > BATCH_MICROS_MAX or refunds > BATCH_MICROS_MAX) and offset > (
            starts[-1] if starts else 0
        ):
            starts.append(offset)
            gross = amount if kind == "payment" else 0
            refunds = 0 if kind == "payment" else amount
    return starts


def _batch_bounds(
    events: pa.Table, group_starts: np.ndarray, amounts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(first row, part number) of every batch: one per group, more for a group whose
    total might overflow DECIMAL(18,6). A group is split (exactly, in Python ints)
    only if its count times its largest amount could pass the limit: a screen in
    int64 that cannot overflow itself, where a sum could."""
    counts = np.diff(np.append(group_starts, len(amounts)))
    largest = np.maximum.reduceat(amounts, group_starts)
    suspects = np.flatnonzero(largest > BATCH_MICROS_MAX // counts)
    if not len(suspects):
        return group_starts, np.zeros(len(group_starts), dtype=np.int64)
    ends = group_starts + counts
    starts: list[int] = []
    parts: list[int] = []
    suspect = set(suspects.tolist())
    for group, (start, end) in enumerate(zip(group_starts.tolist(), ends.tolist(), strict=True)):
        starts.append(start)
        parts.append(0)
        if group in suspect:
            rows = events.slice(start, end - start)
            for part, offset in enumerate(
                _parts(rows["type"].to_pylist(), rows["amount_micros"].to_pylist()), 1
            ):
                starts.append(start + offset)
                parts.append(part)
    return np.array(starts, dtype=np.int64), np.array(parts, dtype=np.int64)


#: Entry numbers a batch's own postings reserve (carry in, payout, carry out: two each).
BATCH_POSTINGS = 6


def _split_weights(
    events: pa.Table, is_payment: np.ndarray, starts: np.ndarray, batch_of: np.ndarray
) -> Weights:
    """The party weights of every batch one of whose payments carries splits, a column
    at a time (see `centflow.money.payouts`): per (batch, party), the sum of
    ``amount × bps`` over the batch's payments, a payment without splits giving its
    payee 10000 bps."""
    has_splits = pc.is_valid(events["splits"]).to_numpy(zero_copy_only=False) & is_payment
    if not has_splits.any():
        return Weights(
            np.zeros(0, dtype=np.int64), pa.array([], pa.string()), [], np.zeros(0, bool)
        )
    split_batch = np.add.reduceat(has_splits.astype(np.int64), starts) > 0
    in_split = split_batch[batch_of] & is_payment
    split_rows = np.flatnonzero(has_splits)
    splits = events["splits"].take(pa.array(split_rows)).combine_chunks()
    flat = pc.list_flatten(splits)
    plain_rows = np.flatnonzero(in_split & ~has_splits)
    rows = np.concatenate([split_rows[pc.list_parent_indices(splits).to_numpy()], plain_rows])
    parties = pa.concat_arrays(
        [flat.field("party_id"), _whole(events["payee_id"]).take(pa.array(plain_rows))]
    )
    bps = np.concatenate(
        [flat.field("bps").to_numpy(), np.full(len(plain_rows), BPS_WHOLE, dtype=np.int64)]
    )
    amounts = events["amount_micros"].to_numpy()[rows]
    encoded = pc.dictionary_encode(parties)
    names = encoded.dictionary
    by_name = pc.sort_indices(names).to_numpy()
    rank_of_code = np.empty(len(names), dtype=np.int64)
    rank_of_code[by_name] = np.arange(len(names))
    key = batch_of[rows] * len(names) + rank_of_code[encoded.indices.to_numpy()]
    order = np.argsort(key, kind="stable")
    key = key[order]
    firsts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    sizes = np.diff(np.append(firsts, len(key)))
    magnitudes = np.abs(amounts[order])
    bps_max = max(int(np.abs(bps).max()), 1)
    # int64 is exact when no group's sum of |amount| × the largest bps can pass it
    exact_in_int64 = int(magnitudes.max()) * int(sizes.max()) < 2**62 and (
        int(np.add.reduceat(magnitudes, firsts).max()) * bps_max < 2**62
    )
    # past int64, the sums are made in exact Python ints
    products = amounts * bps if exact_in_int64 else amounts.astype(object) * bps
    weights = np.add.reduceat(products[order], firsts).tolist()
    unique = key[firsts]
    row_payees = _whole(events["payee_id"]).take(pa.array(rows))
    is_payee = pc.equal(parties, row_payees).to_numpy(zero_copy_only=False)[order]
    return Weights(
        unique // len(names),
        encoded.dictionary.take(pa.array(by_name[unique % len(names)])),
        weights,
        np.logical_or.reduceat(is_payee, firsts),
    )


def _whole(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


class Awaiting(msgspec.Struct, array_like=True):
    """A batch whose FX rate was missing when its window closed (``awaiting_rate``):
    its events and fees are posted, its payout waits for the rate. It keeps its
    window, part and rows (sorted, as an Arrow IPC stream of `WINDOW_SCHEMA`), so
    netting it again gives the same batch id, fees and entry numbers.
    ``announced``: its ``awaiting_rate`` row has been written."""

    index: int
    part: int
    batch_id: str
    closed_us: int
    events: bytes
    announced: bool
    currency: str = ""
    settlement_currency: str = ""
    first_us: int = 0  #: its earliest event time: no rate in force then, no use trying

    def may_settle(self, book: FxBook) -> bool:
        """Whether `book` has a rate in force at its earliest event (and so, rates
        coming in time order, maybe at all its events): worth netting it again."""
        series = book.rates.series(self.currency, self.settlement_currency)
        return series is not None and bool(series.as_of_us) and series.as_of_us[0] <= self.first_us

    def rows(self) -> pa.RecordBatch:
        """Its events, as they were when its window closed."""
        return pa.ipc.open_stream(self.events).read_all().combine_chunks().to_batches()[0]


def _ipc(rows: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, WINDOW_SCHEMA) as writer:
        writer.write_table(rows)
    return sink.getvalue().to_pybytes()


_CLOSE, _RETRY, _ANNOUNCE = "close", "retry", "announce"


def settle_awaiting(
    awaiting: Awaiting,
    window_us: int,
    lateness_us: int,
    at_us: int,
    carry_micros: dict[CarryKey, int],
    out: Settled,
    fee_terms: dict[tuple[str, str], FeeTerms] | None,
    fx_book: FxBook | None,
) -> bool:
    """Net an awaiting batch again with the rates known now; if every rate it needs is
    in force, post its FX and payout at `at_us` (the payee's carry as it is then),
    emit its ``settled`` row and return True; else emit nothing and return False."""
    rows = awaiting.rows()
    if fx_book is not None:  # it converts into the currency the directory gave at its close
        payee = rows["payee_id"][0].as_py()
        fx_book = FxBook(fx_book.rates, {payee: awaiting.settlement_currency}, fx_book.spread_bps)
    return _net(
        [rows], awaiting.index, window_us, lateness_us, carry_micros, out,
        fee_terms, fx_book, 0, _RETRY, awaiting.part, at_us,
    ) == []  # fmt: skip


def announce_awaiting(
    awaiting: Awaiting,
    window_us: int,
    lateness_us: int,
    out: Settled,
    fee_terms: dict[tuple[str, str], FeeTerms] | None,
    fx_book: FxBook | None,
) -> None:
    """Emit an awaiting batch's ``awaiting_rate`` row (its wait for the rate is over)."""
    rows = awaiting.rows()
    if fx_book is not None:
        payee = rows["payee_id"][0].as_py()
        fx_book = FxBook(fx_book.rates, {payee: awaiting.settlement_currency}, fx_book.spread_bps)
    _net(
        [rows], awaiting.index, window_us, lateness_us, {}, out,
        fee_terms, fx_book, 0, _ANNOUNCE, awaiting.part, awaiting.closed_us,
    )  # fmt: skip


def net_window(
    chunks: list[pa.RecordBatch],
    index: int,
    window_us: int,
    lateness_us: int,
    carry_micros: dict[CarryKey, int],
    out: Settled,
    fee_terms: dict[tuple[str, str], FeeTerms] | None = None,
    fx_book: FxBook | None = None,
    rate_wait_us: int = 0,
) -> list[Awaiting]:
    """Net the closed window `index` of every payee into batches, with their postings;
    return the batches that await an FX rate (`centflow.money.fx`). Their rows
    are emitted at once (``awaiting_rate``) when `rate_wait_us` is 0, else when
    the wait is over (`announce_awaiting`), unless the rate came first.

    Fees (`centflow.money.fees`, from `fee_terms`) are charged once per batch and
    rail. A batch that nets negative (fees or reversals beyond its payments)
    pays out nothing: what the payee owes is a receivable carried into its next
    batch in that currency, like a sub-minor remainder.

    `carry_micros` holds each (payee, currency)'s sub-minor remainder from its
    previous batch; it is taken in and replaced by the remainder this window
    leaves, and split parties' remainders under ``(payee, currency, party)``
    (`centflow.money.payouts`, which also says how splits are paid).
    """
    return _net(
        chunks, index, window_us, lateness_us, carry_micros, out, fee_terms, fx_book,
        rate_wait_us, _CLOSE, 0, close_time_us(index, window_us, lateness_us),
    )  # fmt: skip


def _net(
    chunks: list[pa.RecordBatch],
    index: int,
    window_us: int,
    lateness_us: int,
    carry_micros: dict[CarryKey, int],
    out: Settled,
    fee_terms: dict[tuple[str, str], FeeTerms] | None,
    fx_book: FxBook | None,
    rate_wait_us: int,
    mode: str,
    part: int,
    posted_us: int,
) -> list[Awaiting]:
    """`net_window` (mode ``close``), or `settle_awaiting` / `announce_awaiting` of one
    batch (``retry`` / ``announce``: its events and fees were posted at close, so
    only what its rate decides is emitted; its `part` is the one it had)."""
    closing = mode == _CLOSE
    events = pa.Table.from_batches(
        [
            chunk.select(WINDOW_COLUMNS)
            if chunk.schema.get_field_index("review_outcome") >= 0
            else window_columns(chunk)  # a block of PAYMENT_SCHEMA
            for chunk in chunks
        ],
        schema=WINDOW_SCHEMA,
    )  # in chunks: the sort and the take below read them as they are
    count = events.num_rows
    invariant(count > 0, "window %s closed with no events", index)
    order, groups = _sorted_order(events)
    window_events, events = events, events.select(_NETTED_COLUMNS).take(order)
    group_starts = np.concatenate(([0], np.flatnonzero(groups[1:] != groups[:-1]) + 1))
    amounts = events["amount_micros"].to_numpy()
    starts, parts = _batch_bounds(events, group_starts, amounts)
    if not closing:
        invariant(
            len(starts) == 1, "an awaiting batch of window %s netted as %d", index, len(starts)
        )
        parts = np.array([part], dtype=np.int64)
    # A batch is one (payee, currency): the postings and fees below take both from it.
    invariant(
        bool(np.isin(group_starts, starts, assume_unique=True).all()),
        "a batch of window %s spans payees or currencies",
        index,
    )
    counts = np.diff(np.append(starts, count))
    invariant(
        bool(np.all(counts > 0)) and int(counts.sum()) == count, "window %s lost events", index
    )
    is_payment = pc.equal(events["type"], "payment").to_numpy(zero_copy_only=False)
    gross = np.add.reduceat(np.where(is_payment, amounts, 0), starts)
    refunds = np.add.reduceat(np.where(is_payment, 0, amounts), starts)
    late_counts = np.add.reduceat(
        events["late"].to_numpy(zero_copy_only=False).astype(np.int64), starts
    )
    invariant(
        bool(np.all((gross >= 0) & (gross <= AMOUNT_MICROS_MAX) & (refunds >= 0)))
        and bool(np.all(refunds <= AMOUNT_MICROS_MAX)),
        "a batch of window %s overflows DECIMAL(18,6)",
        index,
    )
    first_rows = pa.array(starts)
    payees = events["payee_id"].take(first_rows)
    currencies = events["currency"].take(first_rows)
    window_start_us = index * window_us
    closed_us = close_time_us(index, window_us, lateness_us)
    batch_ids = batch_ids_for(payees, currencies, window_start_us, window_us, parts)
    size = len(starts)
    batch_of = np.repeat(np.arange(size), counts)
    rails = pc.dictionary_encode(_whole(events["rail"]))
    fees = batch_fees(fee_terms or {}, events, batch_of, batch_ids, size, rails)
    net = gross - refunds - fees.per_batch
    payee_list, currency_list = payees.to_pylist(), currencies.to_pylist()
    fx = convert(fx_book, events, starts, counts, is_payment, batch_ids, payee_list, currency_list, fees.per_batch, net)  # fmt: skip
    held, converted = fx.held, fx.fx
    awaiting = fx.status == AWAITING_RATE
    if mode == _RETRY and awaiting.any():
        return [Awaiting(index, part, batch_ids[0].as_py(), closed_us, b"", True)]  # still waits
    targets = pa.array(fx.settlement_currency, pa.string())
    if mode == _ANNOUNCE:
        carry_micros = {}  # an awaiting batch touches no carry
    paid = settle_payouts(
        payee_list,
        currency_list,
        parts,
        fx.credited,
        carry_micros,
        _split_weights(events, is_payment, starts, batch_of),
        fx.settlement_currency,
        held,
    )
    payout, carry_in, carry_out = paid.payout, paid.carry_in, paid.carry_out
    rows_now = ~awaiting | (rate_wait_us == 0) if closing else np.ones(size, dtype=bool)
    batch_rows = pa.table(
        [
            batch_ids,
            payees,
            currencies,
            np.full(size, window_start_us, dtype=np.int64),
            np.full(size, window_start_us + window_us, dtype=np.int64),
            parts,
            counts,
            late_counts,
            gross,
            refunds,
            fees.per_batch,
            net,
            targets,
            pa.array(fx.rate, mask=held),
            payout,
            carry_in,
            carry_out,
            np.full(size, closed_us, dtype=np.int64),
            fx.status_names(),
            pa.array(fx.converted, mask=~converted),
            pa.array(fx.spread, mask=~converted),
            pa.array(np.full(size, posted_us, dtype=np.int64), mask=held),
        ],
        schema=BATCH_SCHEMA,
    )
    out.batches.append(batch_rows if rows_now.all() else batch_rows.filter(pa.array(rows_now)))
    if mode == _ANNOUNCE:
        return []
    if not closing:
        _post_paid(out, fx, paid, batch_ids, payees, currencies, targets, net, posted_us,
                   2 * counts + FEE_POSTINGS_PER_GROUP * fees.groups_per_batch)  # fmt: skip
        return []
    positions = np.arange(count) - np.repeat(starts, counts)
    out.entries.append(
        post_events(events, is_payment, batch_ids, batch_of, positions, payees, closed_us, rails)
    )
    group_rank = np.arange(len(fees.batch_of_group)) - np.repeat(
        np.cumsum(fees.groups_per_batch) - fees.groups_per_batch, fees.groups_per_batch
    )
    out.entries.append(
        post_fees(
            batch_ids,
            fees.batch_of_group,
            payees,
            fees.rails,
            currencies,
            2 * counts[fees.batch_of_group] + FEE_POSTINGS_PER_GROUP * group_rank,
            fees.charged,
            fees.rail_cost,
            closed_us,
        )
    )
    _post_paid(out, fx, paid, batch_ids, payees, currencies, targets, net, closed_us,
               2 * counts + FEE_POSTINGS_PER_GROUP * fees.groups_per_batch)  # fmt: skip
    out.fees.append(fees.rows)
    # the window's events as they came, each with its batch: no need to reorder them all
    arrival = np.empty(count, dtype=np.int64)
    arrival[order.to_numpy()] = np.arange(count)
    arrived_batch_ids = batch_ids.take(pa.array(batch_of[arrival]))
    out.events.extend(window_events.append_column("batch_id", arrived_batch_ids).to_batches())
    return [
        Awaiting(
            index,
            int(parts[batch]),
            batch_ids[batch].as_py(),
            closed_us,
            _ipc(window_events.take(order.slice(int(starts[batch]), int(counts[batch])))),
            rate_wait_us == 0,
            currency_list[batch],
            fx.settlement_currency[batch],
            int(events["occurred_us"][int(starts[batch])].as_py()),
        )
        for batch in np.flatnonzero(awaiting).tolist()
    ]


def _post_paid(
    out: Settled,
    fx: Conversion,
    paid: Payouts,
    batch_ids: pa.Array,
    payees: pa.Array,
    currencies: pa.Array,
    targets: pa.Array,
    net: np.ndarray,
    posted_us: int,
    first_batch_sequence: np.ndarray,
) -> None:
    """What a batch's rate decides: its FX postings and rows, its payout and carry
    postings, its party lines and payout rows (none for a batch still held)."""
    held, converted = fx.held, fx.fx
    if converted.any():
        rows = np.flatnonzero(converted)
        picked = pa.array(rows)
        out.entries.append(
            post_fx(
                batch_ids.take(picked),
                payees.take(picked),
                currencies.take(picked),
                targets.take(picked),
                first_batch_sequence[rows],
                net[rows],
                fx.converted[rows],
                fx.spread[rows],
                posted_us,
            )
        )
        first_batch_sequence = first_batch_sequence + FX_POSTINGS * converted
    paying_batches = pa.array(np.flatnonzero(~held))  # a batch awaiting its rate posts no payout
    out.entries.append(
        post_batches(
            batch_ids.take(paying_batches),
            payees.take(paying_batches),
            targets.take(paying_batches),
            first_batch_sequence[~held],
            paid.payee_payout[~held],
            paid.payee_carry_in[~held],
            paid.payee_carry_out[~held],
            posted_us,
        )
    )
    if len(paid.lines):
        out.entries.append(
            post_party_lines(
                paid.lines,
                batch_ids,
                payees,
                targets,
                first_batch_sequence + BATCH_POSTINGS,
                posted_us,
            )
        )
    out.fx.append(fx.rows)
    paying = pa.array(np.flatnonzero(paid.payee_payout != 0))
    out.payouts.append(
        pa.table(
            [
                batch_ids.take(paying),
                payees.take(paying),
                targets.take(paying),
                pa.array(paid.payee_payout, pa.int64()).take(paying),
            ],
            schema=PAYOUT_SCHEMA,
        )
    )
    lines = paid.lines
    if len(lines):
        line_payout = np.array(lines.payout, dtype=np.int64)
        paying_lines = np.flatnonzero(line_payout)
        line_batch = pa.array(np.array(lines.batch, dtype=np.int64)[paying_lines])
        out.payouts.append(
            pa.table(
                [
                    batch_ids.take(line_batch),
                    pa.array(lines.party, pa.string()).take(pa.array(paying_lines)),
                    targets.take(line_batch),
                    pa.array(line_payout[paying_lines]),
                ],
                schema=PAYOUT_SCHEMA,
            )
        )
