"""Payouts: from a batch's net to what each party is paid, and what is carried.

A batch's net (payments less refunds, chargebacks and fees, in micro-units)
becomes payouts rounded to the currency's minor unit once per batch, never per
event. What is below one minor unit is carried, never dropped.

Carries, per payee and currency (`carry_micros`, keyed ``(payee, currency)``):
the payee's signed carry. Positive, it is a remainder below one minor unit of
the payee's own share; negative, a **receivable**: a batch whose total was zero
or less (fees or reversals beyond its payments) pays nothing, and what the
payee owes is paid back first by its next batch in that currency.

Revenue splits. A payment may carry ``splits`` (``party_id``, basis points
summing to 10000). A batch's parties are the payee (for payments without
splits) and every split party; each party's weight is the sum over the batch's
payments of ``amount × bps`` (a payment without splits gives the payee 10000
bps). So refunds, chargebacks, fees and a receivable reduce every party's part
in proportion to its share of the batch's payments. The total ``T`` (net plus
a receivable carried in) is divided among the parties by largest remainder
(`allocate_largest_remainder`, parties in party_id order, ties to the smaller
id): the parts sum to ``T`` exactly and each is within one micro-unit of its
exact share. Each party's part, plus its own remainder carried from before, is
then rounded down to the minor unit; its new remainder is carried for that
party alone (``carry_micros[(payee, currency, party)]``), so no party's
fraction of a cent ever moves to another party. A batch whose total is zero or
less pays no party: parties' remainders wait for the next batch that pays.

A batch therefore pays one line per party (`settlement_payouts`), and its
``carry_in`` / ``carry_out`` are the sums of what its parties took in and left:
``payout + carry_out = net + carry_in`` for every batch, checked here.

The common case (no splits, one batch per payee and currency in a window) is
done a column at a time; batches with splits, or a window split into parts
(rare), are done one batch at a time in Python integers.
"""

from __future__ import annotations

from itertools import compress, repeat

import numpy as np
import pyarrow as pa

from centflow.errors import invariant
from centflow.limits import AMOUNT_MICROS_MAX, BATCH_MICROS_MAX
from centflow.money.amounts import (
    allocate_largest_remainder,
    minor_unit_step,
)

#: Basis points of a whole.
BPS_WHOLE = 10_000

#: Carry keys: ``(payee, currency)`` for the payee's own signed carry,
#: ``(payee, currency, party)`` for a split party's remainder.
CarryKey = tuple[str, ...]


class PartyLines:
    """Split parties' lines (every party of a split batch but the payee itself), as
    columns: the batch's row in its window, the party, its share of the batch's
    total, and its carry in, payout and carry out, all in micro-units."""

    __slots__ = ("batch", "carry_in", "carry_out", "party", "payout", "share")

    def __init__(self) -> None:
        self.batch: list[int] = []
        self.party: list[str] = []
        self.share: list[int] = []
        self.carry_in: list[int] = []
        self.payout: list[int] = []
        self.carry_out: list[int] = []

    def __len__(self) -> int:
        return len(self.batch)

    def add(self, batch: int, party: str, share: int, carry_in: int, payout: int, carry_out: int) -> None:  # fmt: skip
        """One more line."""
        self.batch.append(batch)
        self.party.append(party)
        self.share.append(share)
        self.carry_in.append(carry_in)
        self.payout.append(payout)
        self.carry_out.append(carry_out)


class Payouts:
    """What a window's batches pay. Per batch (arrays, one row per batch): the
    batch's totals (``carry_in``, ``payout``, ``carry_out``, summed over its parties)
    and the payee's own part of them (``payee_*``); plus `PartyLines` for every
    split party other than the payee."""

    __slots__ = (
        "carry_in",
        "carry_out",
        "lines",
        "payee_carry_in",
        "payee_carry_out",
        "payee_payout",
        "payout",
    )

    def __init__(self, size: int) -> None:
        zeros = np.zeros(size, dtype=np.int64)
        self.carry_in, self.payout, self.carry_out = zeros.copy(), zeros.copy(), zeros.copy()
        self.payee_carry_in = zeros.copy()
        self.payee_payout = zeros.copy()
        self.payee_carry_out = zeros.copy()
        self.lines = PartyLines()


class Weights:
    """Every split batch's party weights, a row per (batch, party), sorted by batch and
    then party_id: ``batch`` (the batch's row in its window), ``party``, ``weight``
    (``amount × bps`` summed over the batch's payments, exact Python ints) and
    ``is_payee`` (the party is the batch's payee itself)."""

    __slots__ = ("batch", "is_payee", "party", "weight")

    def __init__(
        self, batch: np.ndarray, party: pa.Array, weight: list[int], is_payee: np.ndarray
    ) -> None:
        self.batch = batch
        self.party = party
        self.weight = weight
        self.is_payee = is_payee

    def of(self, batch: int) -> dict[str, int]:
        """The weights of one batch, by party."""
        first, last = np.searchsorted(self.batch, [batch, batch + 1]).tolist()
        names = self.party[first:last].to_pylist()
        return dict(zip(names, self.weight[first:last], strict=True))

    @classmethod
    def from_dicts(cls, weights: list[dict[str, int] | None], payees: list[str]) -> Weights:
        """From `party_weights` of each batch (None: a batch without splits)."""
        batch, party, weight = [], [], []
        for index, by_party in enumerate(weights):
            for name in sorted(by_party or ()):
                batch.append(index)
                party.append(name)
                weight.append(by_party[name])  # type: ignore[index]
        is_payee = np.array([payees[b] == name for b, name in zip(batch, party, strict=True)], bool)  # fmt: skip
        return cls(np.array(batch, dtype=np.int64), pa.array(party, pa.string()), weight, is_payee)


def party_weights(
    payee: str, types: list[str], amounts: list[int], splits: list[list[dict] | None]
) -> dict[str, int] | None:
    """Each party's weight in a batch (``amount × bps`` over its payments), or None
    when no payment of it has splits (the payee takes the whole).

    >>> party_weights("m", ["payment", "payment"], [100, 300],
    ...               [None, [{"party_id": "m", "bps": 5000}, {"party_id": "p", "bps": 5000}]])
    {'m': 2500000, 'p': 1500000}
    """
    if all(split is None for split in splits):
        return None
    weights: dict[str, int] = {}
    for kind, amount, split in zip(types, amounts, splits, strict=True):
        if kind != "payment":
            continue
        for party, bps in (
            ((payee, BPS_WHOLE),) if split is None else ((s["party_id"], s["bps"]) for s in split)
        ):
            weights[party] = weights.get(party, 0) + amount * bps
    return weights


def settle_payouts(
    payees: list[str],
    currencies: list[str],
    parts: np.ndarray,
    net: np.ndarray,
    carry_micros: dict[CarryKey, int],
    weights: Weights,
    settlement_currencies: list[str] | None = None,
    held: np.ndarray | None = None,
) -> Payouts:
    """The payouts of a window's batches (one row per batch in every argument), and
    `carry_micros` moved on. `weights` holds the party weights of the batches with
    splits. `net` is in each batch's settlement currency (`settlement_currencies`,
    by default its own), whose minor unit the payouts round to; carries stay keyed
    by the batch's own currency. A `held` batch (awaiting a rate) pays nothing and
    touches no carry."""
    size = len(payees)
    steps = _steps(settlement_currencies or currencies)
    held_rows = set(np.flatnonzero(held).tolist()) if held is not None else set()
    split = np.array([b for b in np.unique(weights.batch).tolist() if b not in held_rows], np.int64)
    if parts.any():
        result = Payouts(size)
        split_set = set(split.tolist())
        for index in range(size):
            if index in held_rows:
                continue
            _one_batch(
                index, payees[index], currencies[index], int(steps[index]), int(net[index]),
                weights.of(index) if index in split_set else None, carry_micros, result,
            )  # fmt: skip
        return result
    result = _unsplit(payees, currencies, steps, net, carry_micros, [*split.tolist(), *held_rows])
    if not len(split):
        return result
    _split_columns(split, payees, currencies, steps, net, carry_micros, weights, result)
    return result


def _split_columns(
    split: np.ndarray,
    payees: list[str],
    currencies: list[str],
    all_steps: np.ndarray,
    net: np.ndarray,
    carry_micros: dict[CarryKey, int],
    weights: Weights,
    result: Payouts,
) -> None:
    """`_one_batch` for every batch in `split` at once: the same rules, the same results.

    A total times a weight can pass int64 (up to 10^40), so the exact shares are
    computed in Python ints held in NumPy object arrays (still one pass, no
    per-line Python loop), and the remainders ranked exactly as two int64 halves.
    """
    split_keys = [(payees[i], currencies[i]) for i in split.tolist()]
    held = np.fromiter(map(carry_micros.pop, split_keys, repeat(0)), np.int64, len(split_keys))
    no_room = np.abs(net[split] + held) > BATCH_MICROS_MAX
    waiting = np.where(no_room, held, 0)
    held = np.where(no_room, 0, held)
    receivable = np.minimum(held, 0)
    total = net[split] + receivable
    paying = total > 0
    steps = all_steps[split]
    # batches that pay nothing: the payee's carry, whatever its sign, joins the total
    whole = net[split] + held
    result.payee_carry_in[split] = result.carry_in[split] = held
    result.payee_carry_out[split] = result.carry_out[split] = np.where(paying, 0, whole)
    # the lines of the batches that pay
    line_of = np.searchsorted(split, weights.batch)  # the batch's place in `split`
    keep = paying[line_of]
    line_of = line_of[keep]
    weight = np.array(weights.weight, dtype=object)[keep]
    kept = np.flatnonzero(keep)
    parties = weights.party.take(pa.array(kept))
    count = len(line_of)
    starts = np.flatnonzero(np.concatenate(([True], line_of[1:] != line_of[:-1])))[: max(count, 0)]
    sizes = np.diff(np.append(starts, count))
    exact = total[line_of].astype(object) * weight
    weight_sum = np.repeat(np.add.reduceat(weight, starts), sizes) if count else weight
    whole_part = exact // weight_sum
    remainder = exact - whole_part * weight_sum  # < weight_sum <= 10^22: two int64 halves
    share = whole_part.astype(np.int64)
    # largest-remainder: the units left over go to the largest remainders, ties by party
    leftover = total[line_of[starts]] - np.add.reduceat(share, starts) if count else share
    rank = np.arange(count) - np.repeat(starts, sizes)
    high = (remainder >> 40).astype(np.int64)
    low = (remainder & (2**40 - 1)).astype(np.int64)
    order = np.lexsort((rank, -low, -high, line_of))
    place = np.empty(count, dtype=np.int64)
    place[order] = rank  # each line's place in its batch's remainder order
    share = share + (place < np.repeat(leftover, sizes))
    batch_rows = split[line_of]
    is_payee = weights.is_payee[kept]
    others = np.flatnonzero(~is_payee)
    other_parties = parties.take(pa.array(others)).to_pylist()
    other_rows = batch_rows[others].tolist()
    other_keys = [
        (payees[row], currencies[row], party)
        for row, party in zip(other_rows, other_parties, strict=True)
    ]
    carried = np.where(is_payee, np.maximum(held[line_of], 0), 0)
    carried[others] = np.fromiter(
        map(carry_micros.pop, other_keys, repeat(0)), dtype=np.int64, count=len(other_keys)
    )
    line_sum = share + carried
    line_steps = steps[line_of]
    payout = line_sum // line_steps * line_steps
    carry_out = line_sum - payout
    invariant(
        bool(np.all((share >= 0) & (carry_out >= 0) & (payout <= AMOUNT_MICROS_MAX))),
        "a split payout overflows",
    )
    other_out = carry_out[others]
    carries = other_out != 0
    carried_out = zip(
        compress(other_keys, carries.tolist()), other_out[carries].tolist(), strict=True
    )
    carry_micros.update(carried_out)
    # the payee's own carry: its line's remainder; or, in a batch that pays the payee
    # nothing, its remainder waits; and whatever had no room waits too
    payee_line = np.full(len(split), -1, dtype=np.int64)
    payee_line[line_of[is_payee]] = np.flatnonzero(is_payee)
    has_payee = payee_line >= 0
    payee_out = np.append(carry_out, 0)[payee_line]  # -1 (no payee line) takes the 0
    payee_next = (
        np.where(paying, payee_out + np.where(has_payee, 0, np.maximum(held, 0)), whole) + waiting
    )
    carrying = np.flatnonzero(payee_next)
    carry_micros.update(
        zip(
            [(payees[row], currencies[row]) for row in split[carrying].tolist()],
            payee_next[carrying].tolist(),
            strict=True,
        )
    )
    sums = np.zeros((3, len(split)), dtype=np.int64)
    np.add.at(sums[0], line_of, carried)
    np.add.at(sums[1], line_of, payout)
    np.add.at(sums[2], line_of, carry_out)
    paid_rows = split[paying]
    result.carry_in[paid_rows] = (receivable + sums[0])[paying]
    result.payout[paid_rows] = sums[1][paying]
    result.carry_out[paid_rows] = sums[2][paying]
    result.payee_carry_in[paid_rows] = np.where(has_payee, held, receivable)[paying]
    result.payee_payout[paid_rows] = np.append(payout, 0)[payee_line][paying]
    result.payee_carry_out[paid_rows] = payee_out[paying]
    invariant(
        bool(np.all(result.payout[split] + result.carry_out[split] == net[split] + result.carry_in[split])),
        "a split batch loses money",
    )  # fmt: skip
    lines = result.lines
    lines.batch.extend(batch_rows[others].tolist())
    lines.party.extend(other_parties)
    lines.share.extend(share[others].tolist())
    lines.carry_in.extend(carried[others].tolist())
    lines.payout.extend(payout[others].tolist())
    lines.carry_out.extend(carry_out[others].tolist())


def _unsplit(
    payees: list[str],
    currencies: list[str],
    steps: np.ndarray,
    net: np.ndarray,
    carry_micros: dict[CarryKey, int],
    skip: list[int],
) -> Payouts:
    """Batches without splits, one per (payee, currency), a column at a time. Rows in
    `skip` (batches with splits) are left at zero and their carries untouched.

    A positive total (net + carry in) is paid rounded down to the minor unit; the
    rest is the carry out. A total of zero or less pays nothing and is carried
    whole: a receivable. A payout with no room left under DECIMAL(18,6) for the
    carry (amounts near a trillion) takes none: the carry waits for the next batch.
    """
    result = Payouts(len(payees))
    keys = list(zip(payees, currencies, strict=True))
    skipped = set(skip)
    carry_in = np.zeros(len(keys), dtype=np.int64)
    taking = np.ones(len(keys), dtype=bool)
    taking[list(skipped)] = False
    taken = np.flatnonzero(taking).tolist()
    carry_in[taken] = np.fromiter(
        map(carry_micros.pop, [keys[row] for row in taken], repeat(0)), np.int64, len(taken)
    )
    no_room = np.abs(net + carry_in) > BATCH_MICROS_MAX
    waiting = np.where(no_room, carry_in, 0)
    carry_in = np.where(no_room, 0, carry_in)
    total = net + carry_in
    payout = np.where(total > 0, total // steps * steps, 0)
    carry_out = total - payout
    kept = np.ones(len(keys), dtype=bool)
    if skipped:
        rows = np.array(sorted(skipped))
        kept[rows] = False
        payout[rows] = carry_out[rows] = carry_in[rows] = waiting[rows] = 0
    invariant(
        bool(np.all((payout + carry_out == net + carry_in) | ~kept))
        and bool(np.all((carry_out < steps) & ((carry_out >= 0) | (payout == 0))))
        and bool(np.all((payout >= 0) & (payout <= AMOUNT_MICROS_MAX))),
        "a payout or carry loses money or overflows",
    )
    carry_next = carry_out + waiting
    carrying = np.flatnonzero(carry_next)
    carry_micros.update(
        zip([keys[row] for row in carrying.tolist()], carry_next[carrying].tolist(), strict=True)
    )
    result.carry_in, result.payout, result.carry_out = carry_in, payout, carry_out
    result.payee_carry_in = carry_in.copy()
    result.payee_payout = payout.copy()
    result.payee_carry_out = carry_out.copy()
    return result


def _one_batch(
    index: int,
    payee: str,
    currency: str,
    step: int,
    net: int,
    weights: dict[str, int] | None,
    carry_micros: dict[CarryKey, int],
    result: Payouts,
) -> None:
    """One batch's payouts in Python integers (see the module's rules), into `result`."""
    key = (payee, currency)
    held = carry_micros.pop(key, 0)
    waiting = 0
    if abs(net + held) > BATCH_MICROS_MAX:  # no room for the carry in this payout
        held, waiting = 0, held
    parties = [payee] if weights is None else sorted(weights)
    receivable = min(held, 0)
    total = net + receivable
    if total <= 0 or weights is None:
        # no split to make: the payee's carry, whatever its sign, joins the total
        total = net + held
        payout, carry_out = _round(total, step) if total > 0 else (0, total)
        invariant(0 <= payout <= AMOUNT_MICROS_MAX, "a payout of %s overflows", key)
        if carry_out + waiting:
            carry_micros[key] = carry_out + waiting
        _put(result.payee_carry_in, result.payee_payout, result.payee_carry_out, index, held, payout, carry_out)  # fmt: skip
        _put(result.carry_in, result.payout, result.carry_out, index, held, payout, carry_out)
        return
    shares = allocate_largest_remainder(total, [weights[party] for party in parties])
    batch_in, batch_payout, batch_out = receivable, 0, 0
    payee_line = (receivable, 0, 0)
    if payee not in weights and held > 0:
        waiting += held  # the payee's own remainder waits for a batch that pays the payee
    for party, share in zip(parties, shares, strict=True):
        if party == payee:
            carried = max(held, 0)
            payout, carry_out = _round(share + carried, step)
            payee_line = (held, payout, carry_out)
            carry_next = carry_out + waiting
            if carry_next:
                carry_micros[key] = carry_next
            waiting = 0
            batch_in += carried
        else:
            party_key = (payee, currency, party)
            carried = carry_micros.pop(party_key, 0)
            payout, carry_out = _round(share + carried, step)
            if carry_out:
                carry_micros[party_key] = carry_out
            result.lines.add(index, party, share, carried, payout, carry_out)
            batch_in += carried
        invariant(
            0 <= payout <= AMOUNT_MICROS_MAX and carry_out >= 0,
            "a split payout of %s overflows",
            key,
        )
        batch_payout += payout
        batch_out += carry_out
    if waiting:
        carry_micros[key] = waiting
    invariant(
        batch_payout + batch_out == net + batch_in,
        "batch %s of %s loses money in its splits",
        index,
        key,
    )
    _put(result.payee_carry_in, result.payee_payout, result.payee_carry_out, index, *payee_line)
    _put(result.carry_in, result.payout, result.carry_out, index, batch_in, batch_payout, batch_out)


def _round(micros: int, step: int) -> tuple[int, int]:
    """(paid, remainder) of a non-negative amount rounded down to `step`."""
    paid = micros // step * step
    return paid, micros - paid


def _steps(currencies: list[str]) -> np.ndarray:
    """Each currency's minor unit in micro-units (looked up once per distinct code)."""
    step_of = {currency: minor_unit_step(currency) for currency in set(currencies)}
    return np.fromiter(map(step_of.__getitem__, currencies), np.int64, len(currencies))


def _put(
    carry_in: np.ndarray,
    payout: np.ndarray,
    carry_out: np.ndarray,
    index: int,
    value_in: int,
    value_payout: int,
    value_out: int,
) -> None:
    carry_in[index], payout[index], carry_out[index] = value_in, value_payout, value_out
