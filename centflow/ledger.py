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
==========================  ==================================================

A payment debits the rail and credits the payee; a refund or chargeback does
the opposite. The payout is rounded to the currency's minor unit once per
batch (`centflow.money.round_to_minor_unit`): the batch's payout debits the
payee's payable and credits the payout account, and the remainder below one
minor unit moves from the payable to the carry account (``carry_out``) and
back into the next batch of the same payee and currency (``carry_in``), so no
fraction of a cent is ever dropped and the payable nets to zero in every
batch. Fees, revenue splits and FX conversion post their own entries in the
same way (each its own `kind`), so they slot in without changing these.

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

#: A posting as a row of ``ledger_entries`` (see `centflow.tables`):
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
    suffixes = entry_suffixes(2 * int(positions.max()) + 2 if count else 0)
    is_payment = pc.equal(events["type"], "payment")
    clearing = pc.binary_join_element_wise("rail_clearing:", events["rail"], "")
    payable = pc.binary_join_element_wise("payee_payable:", events["payee_id"], "")
    amount = events["amount_micros"]
    posted = pa.array(np.full(count, posted_us, dtype=np.int64))
    halves = []
    for offset, account, signed in (
        (0, pc.if_else(is_payment, clearing, payable), amount),
        (1, pc.if_else(is_payment, payable, clearing), pc.negate(amount)),
    ):
        sequence = suffixes.take(pa.array(2 * positions + offset))
        halves.append(
            pa.table(
                [
                    pc.binary_join_element_wise(batch_ids, sequence, ""),
                    batch_ids,
                    events["event_id"],
                    events["type"],
                    account,
                    events["currency"],
                    signed,
                    posted,
                ],
                schema=LEDGER_SCHEMA,
            )
        )
    return pa.concat_tables(halves)


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
    postings, the payable nets to zero (`centflow.settlement` checks
    ``payout + carry_out == net + carry_in`` for every batch).
    """
    has_in = carry_in_micros != 0
    has_out = carry_out_micros != 0
    payout_sequence = first_sequence + 2 * has_in
    suffixes = entry_suffixes(int(payout_sequence.max()) + 4 if len(batch_ids) else 0)
    payable = pc.binary_join_element_wise("payee_payable:", payees, "")
    carry = pc.binary_join_element_wise("payee_carry:", payees, "")
    payout = pc.binary_join_element_wise("payee_payout:", payees, "")
    postings = (
        # (kind, rows, sequence, account, amount)
        ("carry_in", has_in, first_sequence, carry, carry_in_micros),
        ("carry_in", has_in, first_sequence + 1, payable, -carry_in_micros),
        ("payout", None, payout_sequence, payable, payout_micros),
        ("payout", None, payout_sequence + 1, payout, -payout_micros),
        ("carry_out", has_out, payout_sequence + 2, payable, carry_out_micros),
        ("carry_out", has_out, payout_sequence + 3, carry, -carry_out_micros),
    )
    tables = []
    for kind, rows, sequence, account, amount in postings:
        table = pa.table(
            [
                pc.binary_join_element_wise(batch_ids, suffixes.take(pa.array(sequence)), ""),
                batch_ids,
                pa.nulls(len(batch_ids), pa.string()),
                pa.repeat(pa.scalar(kind), len(batch_ids)),
                account,
                currencies,
                pa.array(amount, pa.int64()),
                pa.array(np.full(len(batch_ids), posted_us, dtype=np.int64)),
            ],
            schema=LEDGER_SCHEMA,
        )
        tables.append(table if rows is None else table.filter(pa.array(rows)))
    return pa.concat_tables(tables)
