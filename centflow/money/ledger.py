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
from the window's sorted events; the few postings of each batch (payout and
carries) are made as rows (`post_batch`). Entry ids are the batch id and a
sequence number: events first, in the batch's order, then the batch's own
postings, so the same input gives the same ids in every run.
"""

from __future__ import annotations

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

_SUFFIXES: list[pa.Array] = [pa.array([], pa.string())]


def entry_suffixes(count: int) -> pa.Array:
    """``[":000000", ":000001", ...]``, at least `count` long (grown on demand, kept).

    >>> entry_suffixes(3)[:3].to_pylist()
    [':000000', ':000001', ':000002']
    """
    if len(_SUFFIXES[0]) < count:
        size = max(count, 2 * len(_SUFFIXES[0]), 4096)
        _SUFFIXES[0] = pa.array([f":{number:06d}" for number in range(size)], pa.string())
    return _SUFFIXES[0]


def post_events(
    events: pa.Table, batch_ids: pa.Array, positions: np.ndarray, posted_us: int
) -> pa.Table:
    """The two postings of every event, a column at a time.

    `events` are a window's sorted events (payments, refunds, chargebacks),
    `batch_ids` the batch of each and `positions` its place in that batch. A
    payment debits its rail's clearing account and credits the payee's
    payable; a refund or chargeback does the opposite. The event at position
    ``i`` posts entries ``2i`` (the debit) and ``2i + 1`` (the credit).
    """
    count = events.num_rows
    invariant(len(batch_ids) == count == len(positions), "postings misaligned with their events")
    if not count:
        return LEDGER_SCHEMA.empty_table()
    suffixes = entry_suffixes(2 * int(positions.max()) + 2)
    is_payment = pc.equal(events["type"], "payment").to_numpy(zero_copy_only=False)
    rows = np.arange(count)
    both = np.concatenate([rows, rows])  # the debits, then the credits
    # accounts: [clearing of each event..., payable of each event...]
    accounts = pa.concat_arrays(
        [
            pc.binary_join_element_wise("rail_clearing:", events["rail"], "").combine_chunks(),
            pc.binary_join_element_wise("payee_payable:", events["payee_id"], "").combine_chunks(),
        ]
    )
    debit = np.where(is_payment, rows, rows + count)
    credit = np.where(is_payment, rows + count, rows)
    amounts = events["amount_micros"].to_numpy()
    take = pa.array(both)
    ids = batch_ids.take(take)
    return pa.table(
        [
            pc.binary_join_element_wise(
                ids, suffixes.take(pa.array(np.concatenate([2 * positions, 2 * positions + 1]))), ""
            ),
            ids,
            events["event_id"].take(take),
            events["type"].take(take),
            accounts.take(pa.array(np.concatenate([debit, credit]))),
            events["currency"].take(take),
            pa.array(np.concatenate([amounts, -amounts])),
            pa.array(np.full(2 * count, posted_us, dtype=np.int64)),
        ],
        schema=LEDGER_SCHEMA,
    )


_KINDS = pa.array(["carry_in", "payout", "carry_out"])
_OWNER_ACCOUNTS = pa.array(["payee_carry:", "payee_payable:", "payee_payout:", "payee_receivable:"])
CARRY, PAYABLE, PAYOUT, RECEIVABLE = 0, 1, 2, 3


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
    # (rows, sequence, kind, account, amount) of each of the six kinds of posting
    carry_in_account = np.where(carry_in_micros[ins] < 0, RECEIVABLE, CARRY)
    carry_out_account = np.where(carry_out_micros[outs] < 0, RECEIVABLE, CARRY)
    postings = (
        (ins, first_sequence[ins], 0, carry_in_account, carry_in_micros[ins]),
        (ins, first_sequence[ins] + 1, 0, PAYABLE, -carry_in_micros[ins]),
        (every, payout_sequence, 1, PAYABLE, payout_micros),
        (every, payout_sequence + 1, 1, PAYOUT, -payout_micros),
        (outs, payout_sequence[outs] + 2, 2, PAYABLE, carry_out_micros[outs]),
        (outs, payout_sequence[outs] + 3, 2, carry_out_account, -carry_out_micros[outs]),
    )
    rows = pa.array(np.concatenate([posting[0] for posting in postings]))
    sequence = np.concatenate([posting[1] for posting in postings])
    kinds = np.concatenate([np.full(len(p[0]), p[2], dtype=np.int64) for p in postings])
    owners = np.concatenate(
        [np.broadcast_to(np.asarray(p[3], np.int64), len(p[0])) for p in postings]
    )
    ids = batch_ids.take(rows)
    suffixes = entry_suffixes(int(sequence.max()) + 1)
    return pa.table(
        [
            pc.binary_join_element_wise(ids, suffixes.take(pa.array(sequence)), ""),
            ids,
            pa.nulls(len(rows), pa.string()),
            _KINDS.take(pa.array(kinds)),
            pc.binary_join_element_wise(
                _OWNER_ACCOUNTS.take(pa.array(owners)), payees.take(rows), ""
            ),
            currencies.take(rows),
            pa.array(np.concatenate([posting[4] for posting in postings]), pa.int64()),
            pa.array(np.full(len(rows), posted_us, dtype=np.int64)),
        ],
        schema=LEDGER_SCHEMA,
    )


def _whole(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (a table's column comes in chunks)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


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
    payees: pa.Array,
    rails: pa.Array,
    currencies: pa.Array,
    first_sequence: np.ndarray,
    charged_micros: np.ndarray,
    cost_micros: np.ndarray,
    posted_us: int,
) -> pa.Table:
    """The fee postings of (batch, rail) groups (one row per group in every argument).

    The payee's payable pays the fee into ``fee_revenue:<rail>``; the rail keeps
    its cost out of what it collected (``rail_cost:<rail>`` against
    ``rail_clearing:<rail>``); then revenue and cost close into
    ``platform_margin:<rail>``, so fee revenue and rail cost net to zero in every
    batch and the margin account holds what the platform earned. Group ``g``
    numbers its postings from ``first_sequence[g]``, `FEE_POSTINGS_PER_GROUP`
    of them, leaving out those of amount zero (ids stay the same either way).
    """
    count = len(batch_ids)
    if not count:
        return LEDGER_SCHEMA.empty_table()
    amounts = (charged_micros, cost_micros, charged_micros - cost_micros)
    owners = (_whole(payees), _whole(rails))
    columns: dict[str, list] = {name: [] for name in ("rows", "sequence", "kind", "account", "amount")}  # fmt: skip
    for slot, (kind, prefix, owner, amount, sign) in enumerate(_FEE_POSTINGS):
        values = sign * amounts[amount]
        rows = np.flatnonzero(values != 0)
        if not len(rows):
            continue
        picked = pa.array(rows)
        columns["rows"].append(rows)
        columns["sequence"].append(first_sequence[rows] + slot)
        columns["kind"].append(pa.repeat(pa.scalar(kind), len(rows)))
        columns["account"].append(
            pc.binary_join_element_wise(prefix, owners[owner].take(picked), "")
        )
        columns["amount"].append(values[rows])
    if not columns["rows"]:
        return LEDGER_SCHEMA.empty_table()
    rows = pa.array(np.concatenate(columns["rows"]))
    sequence = np.concatenate(columns["sequence"])
    ids = batch_ids.take(rows)
    suffixes = entry_suffixes(int(sequence.max()) + 1)
    postings = pa.table(
        [
            pc.binary_join_element_wise(ids, suffixes.take(pa.array(sequence)), ""),
            ids,
            pa.nulls(len(rows), pa.string()),
            pa.concat_arrays(columns["kind"]),
            pa.concat_arrays(columns["account"]),
            currencies.take(rows),
            pa.array(np.concatenate(columns["amount"]), pa.int64()),
            pa.array(np.full(len(rows), posted_us, dtype=np.int64)),
        ],
        schema=LEDGER_SCHEMA,
    )
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
    parties = pa.array(lines.party, pa.string())
    owners = {"payee": _whole(payees).take(pa.array(batch)), "party": parties}
    columns: dict[str, list] = {name: [] for name in ("rows", "sequence", "kind", "account", "amount")}  # fmt: skip
    for slot, (kind, debit, credit, attribute) in enumerate(_PARTY_POSTINGS):
        values = np.array(getattr(lines, attribute), dtype=np.int64)
        rows = np.flatnonzero(values != 0)
        if not len(rows):
            continue
        picked = pa.array(rows)
        for side, (prefix, sign) in enumerate(((debit, 1), (credit, -1))):
            owner = owners["payee" if prefix == "payee_payable:" else "party"]
            columns["rows"].append(rows)
            columns["sequence"].append(base[rows] + 2 * slot + side)
            columns["kind"].append(pa.repeat(pa.scalar(kind), len(rows)))
            columns["account"].append(pc.binary_join_element_wise(prefix, owner.take(picked), ""))
            columns["amount"].append(sign * values[rows])
    if not columns["rows"]:
        return LEDGER_SCHEMA.empty_table()
    rows = pa.array(batch[np.concatenate(columns["rows"])])
    sequence = np.concatenate(columns["sequence"])
    ids = batch_ids.take(rows)
    suffixes = entry_suffixes(int(sequence.max()) + 1)
    postings = pa.table(
        [
            pc.binary_join_element_wise(ids, suffixes.take(pa.array(sequence)), ""),
            ids,
            pa.nulls(len(rows), pa.string()),
            pa.concat_arrays(columns["kind"]),
            pa.concat_arrays(columns["account"]),
            currencies.take(rows),
            pa.array(np.concatenate(columns["amount"]), pa.int64()),
            pa.array(np.full(len(rows), posted_us, dtype=np.int64)),
        ],
        schema=LEDGER_SCHEMA,
    )
    invariant(
        int(pc.sum(postings["amount_micros"]).as_py() or 0) == 0, "split postings do not balance"
    )
    return postings


#: Entry numbers a converted batch's FX postings reserve (before its payout's).
FX_POSTINGS = 6


def post_fx(
    batch_ids: pa.Array,
    payees: list[str],
    currencies: list[str],
    settlement_currencies: list[str],
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
    payee_array = pa.array(payees, pa.string())
    base_currency = pa.array(currencies, pa.string())
    target = pa.array(settlement_currencies, pa.string())
    # (kind, account prefix, owner column, currency column, amount), in entry order
    postings = (
        ("fx", "payee_payable:", payee_array, base_currency, net_micros),
        ("fx", "fx_clearing:", base_currency, base_currency, -net_micros),
        ("fx", "fx_clearing:", target, target, converted_micros),
        ("fx", "payee_payable:", payee_array, target, spread_micros - converted_micros),
        ("fx_spread", "fx_spread_revenue:", target, target, -spread_micros),
    )
    columns: dict[str, list] = {name: [] for name in ("rows", "sequence", "kind", "account", "currency", "amount")}  # fmt: skip
    for slot, (kind, prefix, owner, currency, amounts) in enumerate(postings):
        rows = np.flatnonzero(amounts != 0)
        if not len(rows):
            continue
        picked = pa.array(rows)
        columns["rows"].append(rows)
        columns["sequence"].append(first_sequence[rows] + slot)
        columns["kind"].append(pa.repeat(pa.scalar(kind), len(rows)))
        columns["account"].append(pc.binary_join_element_wise(prefix, owner.take(picked), ""))
        columns["currency"].append(currency.take(picked))
        columns["amount"].append(amounts[rows])
    if not columns["rows"]:
        return LEDGER_SCHEMA.empty_table()
    rows = pa.array(np.concatenate(columns["rows"]))
    sequence = np.concatenate(columns["sequence"])
    ids = batch_ids.take(rows)
    entries = pa.table(
        [
            pc.binary_join_element_wise(
                ids, entry_suffixes(int(sequence.max()) + 1).take(pa.array(sequence)), ""
            ),
            ids,
            pa.nulls(len(rows), pa.string()),
            pa.concat_arrays(columns["kind"]),
            pa.concat_arrays(columns["account"]),
            pa.concat_arrays(columns["currency"]),
            pa.array(np.concatenate(columns["amount"]), pa.int64()),
            pa.array(np.full(len(rows), posted_us, dtype=np.int64)),
        ],
        schema=LEDGER_SCHEMA,
    )
    sums = entries.group_by("currency").aggregate([("amount_micros", "sum")])
    invariant(
        not any(sums["amount_micros_sum"].to_pylist()), "FX postings do not balance per currency"
    )
    return entries
