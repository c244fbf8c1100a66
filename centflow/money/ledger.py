"""The double-entry ledger: balanced postings for every settled batch.

Amounts are signed micro-units: a debit is positive, a credit negative, so the
postings of every batch sum to exactly zero per currency (checked with
`invariant` where they are made, and again by the ``recon_ledger_balance``
view over what was written).

Accounts (``kind:owner``), for the first ledger:

==========================  ==================================================
``rail_clearing:<rail>``    money collected from payers through a rail (asset)
``payee_payable:<payee>``   what centflow owes a payee until it pays out (liability)
``payee_payout:<payee>``    the batch's payout instruction to the payee's bank
``payee_carry:<payee>``     sub-minor-unit remainders carried to the next batch
``payee_receivable:<payee>`` what a payee owes after a batch that netted negative
                            (fees or reversals beyond its payments), carried
                            into its next batch: never a negative payout
``fee_revenue:<rail>``      fees charged to payees (`centflow.money.fees`)
``rail_cost:<rail>``        what the rail charges for moving the payments
``platform_margin:<rail>``  fee revenue less rail cost, closed into it per batch
``party_payable:<party>``   a revenue-split party's share until it is paid out
``party_payout:<party>``    the batch's payout instruction to a split party
``party_carry:<party>``     a split party's own sub-minor-unit remainder
==========================  ==================================================

A payment debits the rail and credits the payee; a refund or chargeback does
the opposite. The payout is rounded to the currency's minor unit once per
batch (`centflow.money.amounts.round_to_minor_unit`): the batch's payout debits the
payee's payable and credits the payout account, and the remainder below one
minor unit moves from the payable to the carry account (``carry_out``) and
back into the next batch of the same payee and currency (``carry_in``), so no
fraction of a cent is ever dropped and the payable nets to zero in every
batch. Fees post their own entries (`post_fees`: kinds ``fee``,
``rail_cost``, ``margin``) between a batch's events and its payout. A revenue
split (`centflow.money.payouts`) moves each other party's share from the
payee's payable to the party's own (kind ``split``), and the party's carry,
payout and remainder post like the payee's (`post_party_lines`), after the
payee's own.

The two postings of every event are made a column at a time (`post_events`)
from the window's sorted events, and so are each batch's own postings (payout
and carries, `post_batches`), its fees', its FX's and its split parties'.
Every builder describes its postings as legs (`Leg`: one kind of posting for
some of the items posted) and one function (`post_legs`) makes the table.
Entry ids are the batch id and a sequence number: events first, in the
batch's order, then the batch's own postings, so the same input gives the same
ids in every run.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import invariant
from centflow.money.payouts import PartyLines

#: A posting as a row of ``ledger_entries`` (see `centflow.recon.tables`):
#: (entry_id, batch_id, event_id, kind, account, currency, amount_micros, posted_us).
LedgerRow = tuple[str, str, str | None, str, str, str, int, int]

LEDGER_SCHEMA = pa.schema(
    [
        ("entry_id", pa.string()),
        ("batch_id", pa.string()),
        ("event_id", pa.string()),
        ("kind", pa.string()),
        ("account", pa.string()),
        ("currency", pa.string()),
        ("amount_micros", pa.int64()),
        ("posted_us", pa.int64()),
    ]
)
"""Postings in flight: the columns of ``ledger_entries`` with money and time as int64."""

#: Entry numbers below this have a suffix of one width (``:`` and six digits).
_SUFFIX_FIXED_LIMIT = 10**6
_SUFFIX_WIDTH = 7
_SUFFIXES: list[pa.Array] = [pa.array([], pa.string())]


def _suffix_array(size: int) -> pa.Array:
    """``[":000000", ..., f":{size - 1:06d}"]``, the fixed-width part made with NumPy."""
    fixed = min(size, _SUFFIX_FIXED_LIMIT)
    powers = 10 ** np.arange(_SUFFIX_WIDTH - 2, -1, -1, dtype=np.int64)
    characters = np.empty((fixed, _SUFFIX_WIDTH), np.uint8)
    characters[:, 0] = ord(":")
    characters[:, 1:] = np.arange(fixed, dtype=np.int64)[:, None] // powers % 10 + ord("0")
    offsets = np.arange(0, (fixed + 1) * _SUFFIX_WIDTH, _SUFFIX_WIDTH, dtype=np.int32)
    head = pa.StringArray.from_buffers(fixed, pa.py_buffer(offsets), pa.py_buffer(characters))
    if size == fixed:
        return head
    tail = pa.array([f":{number:06d}" for number in range(fixed, size)], pa.string())
    return pa.concat_arrays([head, tail])


def entry_suffixes(count: int) -> pa.Array:
    """``[":000000", ":000001", ...]``, at least `count` long (grown on demand, kept).

    >>> entry_suffixes(3)[:3].to_pylist()
    [':000000', ':000001', ':000002']
    """
    if len(_SUFFIXES[0]) < count:
        size = max(count, 2 * len(_SUFFIXES[0]), 4096)
        _SUFFIXES[0] = _suffix_array(size)
        invariant(
            _SUFFIXES[0][size - 1].as_py() == f":{size - 1:06d}", "entry suffixes misnumbered"
        )
    return _SUFFIXES[0]


def _fixed_width(values: pa.Array) -> np.ndarray | None:
    """The strings of `values` as a NumPy array of raw ``V<width>`` items, when every one
    has the same width (none null, none empty); None otherwise."""
    count = len(values)
    if not count or values.null_count or not pa.types.is_string(values.type):
        return None
    offsets = np.frombuffer(values.buffers()[1], np.int32, count + 1, 4 * values.offset)
    width = int(offsets[1] - offsets[0])
    if not width or int(offsets[-1] - offsets[0]) != width * count:
        return None
    if not np.all(np.diff(offsets) == width):
        return None
    return np.frombuffer(values.buffers()[2], f"V{width}", count, int(offsets[0]))


def entry_ids(
    batch_ids: pa.Array, batch_rows: np.ndarray, sequence: np.ndarray
) -> tuple[pa.Array, pa.Array]:
    """(entry ids, batch ids) of postings: ``batch_ids[batch_rows[i]] +
    entry_suffixes(...)[sequence[i]]`` and ``batch_ids[batch_rows[i]]`` for every i.

    Batch ids of one width (as `centflow.money.settlement` makes them) and entry
    numbers below a million are gathered and joined as raw bytes in NumPy; others by
    Arrow.
    """
    count = len(batch_rows)
    invariant(count == len(sequence), "entry ids misaligned with their sequence numbers")
    invariant(int(sequence.min(initial=0)) >= 0, "a negative entry number")
    last = int(sequence.max()) if count else 0
    suffixes = entry_suffixes(last + 1)
    batch_ids = _whole(batch_ids)
    fixed = _fixed_width(batch_ids) if last < _SUFFIX_FIXED_LIMIT else None
    if fixed is not None and count * (fixed.itemsize + _SUFFIX_WIDTH) < 2**31:
        picked = fixed[batch_rows]
        suffix_bytes = np.frombuffer(suffixes.buffers()[2], f"V{_SUFFIX_WIDTH}", last + 1)
        joined = np.empty(count, np.dtype([("batch", fixed.dtype), ("suffix", suffix_bytes.dtype)]))
        joined["batch"] = picked
        joined["suffix"] = suffix_bytes[sequence]
        return _fixed_strings(joined), _fixed_strings(picked)
    ids = batch_ids.take(pa.array(batch_rows, pa.int64()))
    entries = pc.binary_join_element_wise(ids, suffixes.take(pa.array(sequence, pa.int64())), "")
    return entries, ids


def _fixed_strings(items: np.ndarray) -> pa.Array:
    """A string array over the bytes of `items`, one string per item."""
    width = items.dtype.itemsize
    offsets = np.arange(0, (len(items) + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(len(items), pa.py_buffer(offsets), pa.py_buffer(items))


class Leg(NamedTuple):
    """One kind of posting, for some of the items being posted (events, batches, fee
    groups, party lines): every column aligned with `items`."""

    items: np.ndarray  # which items post it
    sequence: np.ndarray  # each one's entry number in its batch
    kind: str | pa.Array
    account: pa.Array
    currency: pa.Array
    amount_micros: np.ndarray
    event_id: pa.Array | None = None


def account_of(prefix: str | pa.Array, owners: pa.Array, items: np.ndarray) -> pa.Array:
    """``prefix + owners[i]`` for every i in `items` (`prefix`: one, or one per item); on
    the dictionary when `owners` is dictionary-encoded (a rail: a few names, many rows)."""
    picked = pa.array(items, pa.int64())
    if isinstance(owners, pa.DictionaryArray):
        invariant(isinstance(prefix, str), "one prefix for the accounts of a dictionary")
        names = pc.binary_join_element_wise(prefix, owners.dictionary, "")
        return names.take(owners.indices.take(picked))
    return pc.binary_join_element_wise(prefix, _whole(owners).take(picked), "")


def post_legs(
    batch_ids: pa.Array, batch_of_item: np.ndarray, legs: list[Leg], posted_us: int
) -> pa.Table:
    """The postings of `legs`, in order, as one `LEDGER_SCHEMA` table: item ``i`` is in
    the batch ``batch_ids[batch_of_item[i]]``."""
    legs = [leg for leg in legs if len(leg.items)]
    if not legs:
        return LEDGER_SCHEMA.empty_table()
    for leg in legs:
        invariant(
            len(leg.sequence)
            == len(leg.account)
            == len(leg.currency)
            == len(leg.amount_micros)
            == len(leg.items),
            "a %s leg's columns are misaligned",
            leg.kind if isinstance(leg.kind, str) else "posting",
        )
        invariant(
            isinstance(leg.kind, str) or len(leg.kind) == len(leg.items),
            "a leg's kinds are misaligned",
        )
    batch_rows = batch_of_item[np.concatenate([leg.items for leg in legs])]
    count = len(batch_rows)
    in_range = int(batch_rows.min()) >= 0 and int(batch_rows.max()) < len(batch_ids)
    invariant(in_range, "a posting of no batch")
    sequence = np.concatenate([leg.sequence for leg in legs])
    kinds = [
        pa.repeat(pa.scalar(leg.kind, pa.string()), len(leg.items))
        if isinstance(leg.kind, str)
        else _whole(leg.kind)
        for leg in legs
    ]
    event_ids = [
        pa.nulls(len(leg.items), pa.string()) if leg.event_id is None else _whole(leg.event_id)
        for leg in legs
    ]
    entry_id_column, batch_id_column = entry_ids(batch_ids, batch_rows, sequence)
    return pa.table(
        [
            entry_id_column,
            batch_id_column,
            _joined(event_ids),
            _joined(kinds),
            _joined([_whole(leg.account) for leg in legs]),
            _joined([_whole(leg.currency) for leg in legs]),
            pa.array(np.concatenate([leg.amount_micros for leg in legs]), pa.int64()),
            pa.array(np.full(count, posted_us, dtype=np.int64)),
        ],
        schema=LEDGER_SCHEMA,
    )


def _joined(arrays: list[pa.Array]) -> pa.Array:
    return arrays[0] if len(arrays) == 1 else pa.concat_arrays(arrays)


def _whole(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (a table's column comes in chunks)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def post_events(
    events: pa.Table,
    is_payment: np.ndarray,
    batch_ids: pa.Array,
    batch_of: np.ndarray,
    positions: np.ndarray,
    payees: pa.Array,
    posted_us: int,
    rails: pa.DictionaryArray | None = None,
) -> pa.Table:
    """The two postings of every event, a column at a time.

    `events` are a window's sorted events (payments, refunds, chargebacks),
    `batch_of` the batch of each (``batch_ids``, ``payees``: one per batch, the
    batch's payee that of its events) and `positions` its place in that batch. A
    payment debits its rail's clearing account and credits the payee's
    payable; a refund or chargeback does the opposite. The event at position
    ``i`` posts entries ``2i`` (the debit) and ``2i + 1`` (the credit). `rails` is
    ``events["rail"]`` dictionary-encoded, when the caller has it.
    """
    count = events.num_rows
    invariant(
        len(batch_of) == count == len(positions) == len(is_payment),
        "postings misaligned with their events",
    )
    if not count:
        return LEDGER_SCHEMA.empty_table()
    if rails is None:
        rails = pc.dictionary_encode(_whole(events["rail"]))
    invariant(len(rails) == count, "rail codes misaligned with their events")
    # accounts: [clearing of each rail..., payable of each batch...]
    accounts = pa.concat_arrays(
        [
            pc.binary_join_element_wise("rail_clearing:", rails.dictionary, ""),
            pc.binary_join_element_wise("payee_payable:", _whole(payees), ""),
        ]
    )
    clearing = rails.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    payable = len(rails.dictionary) + batch_of
    debit = np.where(is_payment, clearing, payable)
    credit = np.where(is_payment, payable, clearing)
    amounts = events["amount_micros"].to_numpy()
    rows = np.arange(count)
    kinds, event_ids, currency = (_whole(events[name]) for name in ("type", "event_id", "currency"))
    legs = [
        Leg(rows, sequence, kinds, accounts.take(pa.array(side)), currency, amounts, event_ids)
        for sequence, side, amounts in ((2 * positions, debit, amounts), (2 * positions + 1, credit, -amounts))
    ]  # fmt: skip
    return post_legs(batch_ids, batch_of, legs, posted_us)


_CARRY_PREFIXES = pa.array(["payee_carry:", "payee_receivable:"])


def _carry_prefixes(carry_micros: np.ndarray) -> pa.Array:
    """The account of each carry: a negative one is a receivable."""
    return _CARRY_PREFIXES.take(pa.array((carry_micros < 0).astype(np.int64)))


def post_batches(
    batch_ids: pa.Array,
    payees: pa.Array,
    currencies: pa.Array,
    first_sequence: np.ndarray,
    payout_micros: np.ndarray,
    carry_in_micros: np.ndarray,
    carry_out_micros: np.ndarray,
    posted_us: int,
) -> pa.Table:
    """Each batch's own postings, numbered from its `first_sequence` (after its events').

    In each batch, in this order: the carry in (if any) moves the previous
    remainder from the carry account back to the payable; the payout empties
    the payable into the payout account; the carry out (if any) moves the new
    remainder below one minor unit to the carry account. With the events'
    postings, the payable nets to zero (`centflow.money.settlement` checks
    ``payout + carry_out == net + carry_in`` for every batch).
    """
    count = len(batch_ids)
    if not count:
        return LEDGER_SCHEMA.empty_table()
    ins = np.flatnonzero(carry_in_micros != 0)
    outs = np.flatnonzero(carry_out_micros != 0)
    every = np.arange(count)
    payout_sequence = first_sequence + 2 * (carry_in_micros != 0)
    payees, currencies = _whole(payees), _whole(currencies)

    def pick(values: pa.Array, items: np.ndarray) -> pa.Array:
        return values if len(items) == count else values.take(pa.array(items))

    carry_in, carry_out = carry_in_micros[ins], carry_out_micros[outs]
    payable = pc.binary_join_element_wise("payee_payable:", payees, "")  # used by four legs
    in_account = pc.binary_join_element_wise(_carry_prefixes(carry_in), pick(payees, ins), "")
    out_account = pc.binary_join_element_wise(_carry_prefixes(carry_out), pick(payees, outs), "")
    # (kind, batches, sequence, account, amount), in entry order
    postings = (
        ("carry_in", ins, first_sequence[ins], in_account, carry_in),
        ("carry_in", ins, first_sequence[ins] + 1, pick(payable, ins), -carry_in),
        ("payout", every, payout_sequence, payable, payout_micros),
        ("payout", every, payout_sequence + 1, account_of("payee_payout:", payees, every), -payout_micros),
        ("carry_out", outs, payout_sequence[outs] + 2, pick(payable, outs), carry_out),
        ("carry_out", outs, payout_sequence[outs] + 3, out_account, -carry_out),
    )  # fmt: skip
    legs = [
        Leg(items, sequence, kind, account, pick(currencies, items), amounts)
        for kind, items, sequence, account, amounts in postings
    ]
    return post_legs(batch_ids, every, legs, posted_us)


def _nonzero_leg(
    kind: str,
    prefix: str,
    owners: pa.Array,
    currencies: pa.Array,
    sequence: np.ndarray,
    amounts: np.ndarray,
) -> Leg:
    """The postings of one kind for the items whose amount is not zero (owners,
    currencies, sequence and amounts: one per item)."""
    items = np.flatnonzero(amounts != 0)
    picked = pa.array(items, pa.int64())
    return Leg(
        items,
        sequence[items],
        kind,
        account_of(prefix, owners, items),
        _whole(currencies).take(picked),
        amounts[items],
    )


def _balanced(entries: pa.Table, what: str) -> pa.Table:
    """`entries`, checked to sum to zero in every currency."""
    sums = entries.group_by("currency").aggregate([("amount_micros", "sum")])
    invariant(not any(sums["amount_micros_sum"].to_pylist()), "%s do not balance", what)
    return entries


#: The postings of one (batch, rail) group's fees, in entry order: (kind, account
#: prefix, owner column, amount column, sign). Owners: 0 the payee, 1 the rail.
#: Amounts: 0 what the payee is charged, 1 the rail's cost, 2 the margin.
_FEE_POSTINGS = (
    ("fee", "payee_payable:", 0, 0, 1),
    ("fee", "fee_revenue:", 1, 0, -1),
    ("rail_cost", "rail_cost:", 1, 1, 1),
    ("rail_cost", "rail_clearing:", 1, 1, -1),
    ("margin", "fee_revenue:", 1, 0, 1),
    ("margin", "rail_cost:", 1, 1, -1),
    ("margin", "platform_margin:", 1, 2, -1),
)
FEE_POSTINGS_PER_GROUP = len(_FEE_POSTINGS)


def post_fees(
    batch_ids: pa.Array,
    batch_of_group: np.ndarray,
    payees: pa.Array,
    rails: pa.Array,
    currencies: pa.Array,
    first_sequence: np.ndarray,
    charged_micros: np.ndarray,
    cost_micros: np.ndarray,
    posted_us: int,
) -> pa.Table:
    """The fee postings of (batch, rail) groups: `rails`, `first_sequence` and the
    amounts have one row per group, group ``g`` in batch ``batch_of_group[g]``
    (`batch_ids`, `payees`, `currencies`: one row per batch).

    The payee's payable pays the fee into ``fee_revenue:<rail>``; the rail keeps
    its cost out of what it collected (``rail_cost:<rail>`` against
    ``rail_clearing:<rail>``); then revenue and cost close into
    ``platform_margin:<rail>``, so fee revenue and rail cost net to zero in every
    batch and the margin account holds what the platform earned. Group ``g``
    numbers its postings from ``first_sequence[g]``, `FEE_POSTINGS_PER_GROUP`
    of them, leaving out those of amount zero (ids stay the same either way).
    """
    count = len(batch_of_group)
    invariant(len(rails) == count == len(first_sequence), "fee groups misaligned")
    if not count:
        return LEDGER_SCHEMA.empty_table()
    amounts = (charged_micros, cost_micros, charged_micros - cost_micros)
    picked = pa.array(batch_of_group, pa.int64())
    owners = (_whole(payees).take(picked), pc.dictionary_encode(_whole(rails)))
    group_currencies = _whole(currencies).take(picked)
    legs = [
        _nonzero_leg(
            kind,
            prefix,
            owners[owner],
            group_currencies,
            first_sequence + slot,
            sign * amounts[amount],
        )
        for slot, (kind, prefix, owner, amount, sign) in enumerate(_FEE_POSTINGS)
    ]
    postings = post_legs(batch_ids, batch_of_group, legs, posted_us)
    invariant(
        int(pc.sum(postings["amount_micros"]).as_py() or 0) == 0, "fee postings do not balance"
    )
    return postings


#: The postings of one split party's line, in entry order: (kind, debit account
#: prefix, credit account prefix, amount attribute). The split's debit is the payee's.
_PARTY_POSTINGS = (
    ("split", "payee_payable:", "party_payable:", "share"),
    ("carry_in", "party_carry:", "party_payable:", "carry_in"),
    ("payout", "party_payable:", "party_payout:", "payout"),
    ("carry_out", "party_payable:", "party_carry:", "carry_out"),
)
#: Entry numbers a party line reserves (two per posting, even when one is left out).
PARTY_POSTINGS_PER_LINE = 2 * len(_PARTY_POSTINGS)


def post_party_lines(
    lines: PartyLines,
    batch_ids: pa.Array,
    payees: pa.Array,
    currencies: pa.Array,
    first_sequence: np.ndarray,
    posted_us: int,
) -> pa.Table:
    """The postings of split parties' lines (`centflow.money.payouts.PartyLines`),
    a column at a time.

    Line ``r`` of a batch (its parties in party_id order) numbers its postings
    from ``first_sequence[batch] + PARTY_POSTINGS_PER_LINE * r``; postings of
    amount zero are left out (ids stay the same either way). Each line's
    postings balance on their own, so the batch still sums to zero.
    """
    count = len(lines)
    if not count:
        return LEDGER_SCHEMA.empty_table()
    batch = np.array(lines.batch, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], batch[1:] != batch[:-1])))
    rank = np.arange(count) - np.repeat(starts, np.diff(np.append(starts, count)))
    base = first_sequence[batch] + PARTY_POSTINGS_PER_LINE * rank
    picked = pa.array(batch)
    owners = {"payee": _whole(payees).take(picked), "party": pa.array(lines.party, pa.string())}
    line_currencies = _whole(currencies).take(picked)
    legs = []
    for slot, (kind, debit, credit, attribute) in enumerate(_PARTY_POSTINGS):
        values = np.array(getattr(lines, attribute), dtype=np.int64)
        for side, (prefix, sign) in enumerate(((debit, 1), (credit, -1))):
            owner = owners["payee" if prefix == "payee_payable:" else "party"]
            sequence = base + 2 * slot + side
            legs.append(_nonzero_leg(kind, prefix, owner, line_currencies, sequence, sign * values))
    postings = post_legs(batch_ids, batch, legs, posted_us)
    invariant(
        int(pc.sum(postings["amount_micros"]).as_py() or 0) == 0, "split postings do not balance"
    )
    return postings


#: Entry numbers a converted batch's FX postings reserve (before its payout's).
FX_POSTINGS = 6


def post_fx(
    batch_ids: pa.Array,
    payees: pa.Array,
    currencies: pa.Array,
    settlement_currencies: pa.Array,
    first_sequence: np.ndarray,
    net_micros: np.ndarray,
    converted_micros: np.ndarray,
    spread_micros: np.ndarray,
    posted_us: int,
) -> pa.Table:
    """The FX postings of converted batches (one row per batch in every argument).

    In the batch's currency, its net leaves the payee's payable for
    ``fx_clearing:<currency>``; in the settlement currency,
    ``fx_clearing:<settlement currency>`` pays in what it converted to, the payee's
    payable is credited that less the spread, and the spread goes to
    ``fx_spread_revenue:<settlement currency>``. So each currency balances on its
    own, and the clearing accounts hold the platform's position per currency.
    """
    count = len(batch_ids)
    if not count:
        return LEDGER_SCHEMA.empty_table()
    payee, base, target = _whole(payees), _whole(currencies), _whole(settlement_currencies)
    # (kind, account prefix, owner column, currency column, amount), in entry order
    postings = (
        ("fx", "payee_payable:", payee, base, net_micros),
        ("fx", "fx_clearing:", base, base, -net_micros),
        ("fx", "fx_clearing:", target, target, converted_micros),
        ("fx", "payee_payable:", payee, target, spread_micros - converted_micros),
        ("fx_spread", "fx_spread_revenue:", target, target, -spread_micros),
    )
    legs = [
        _nonzero_leg(kind, prefix, owner, currency, first_sequence + slot, amounts)
        for slot, (kind, prefix, owner, currency, amounts) in enumerate(postings)
    ]
    return _balanced(post_legs(batch_ids, np.arange(count), legs, posted_us), "FX postings")
