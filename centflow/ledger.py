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
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

from centflow.errors import invariant
from centflow.events import RAILS, Payment

#: A posting as a row of ``ledger_entries`` (see `centflow.tables`):
#: (entry_id, batch_id, event_id, kind, account, currency, amount_micros, posted_us).
LedgerRow = tuple[str, str, str | None, str, str, str, int, int]

AMOUNT = 6  # index of amount_micros in a LedgerRow
ACCOUNT = 4
_amount = itemgetter(AMOUNT)
_CLEARING = {rail: f"rail_clearing:{rail}" for rail in RAILS}
_SUFFIXES: list[str] = []


def _entry_suffixes(count: int) -> list[str]:
    """``[":000000", ":000001", ...]``, at least `count` long (grown on demand, kept)."""
    while len(_SUFFIXES) < count:
        _SUFFIXES.extend(
            f":{number:06d}"
            for number in range(len(_SUFFIXES), max(count, 2 * len(_SUFFIXES), 1024))
        )
    return _SUFFIXES


def post_batch(
    batch_id: str,
    payee_id: str,
    currency: str,
    events: Sequence[Payment],
    payout_micros: int,
    posted_us: int,
    carry_in_micros: int = 0,
    carry_out_micros: int = 0,
) -> list[LedgerRow]:
    """The balanced postings of one batch: two per event, two for the payout, two per carry.

    Entry ids are the batch id and a sequence number, in the order of
    `events` (which settlement sorts), so they are the same in every run.
    """
    payable = f"payee_payable:{payee_id}"
    rows: list[LedgerRow] = []
    append = rows.append
    sequence = 0
    suffixes = _entry_suffixes(2 * len(events) + 6)
    for event in events:
        if event.currency != currency:  # checked inline: this loop runs for every event
            invariant(
                False,
                "event %s in %s posted to a %s batch",
                event.event_id,
                event.currency,
                currency,
            )
        clearing = _CLEARING[event.rail]
        debit, credit = (clearing, payable) if event.type == "payment" else (payable, clearing)
        amount = event.amount_micros
        append(
            (
                batch_id + suffixes[sequence],
                batch_id,
                event.event_id,
                event.type,
                debit,
                currency,
                amount,
                posted_us,
            )
        )
        append(
            (
                batch_id + suffixes[sequence + 1],
                batch_id,
                event.event_id,
                event.type,
                credit,
                currency,
                -amount,
                posted_us,
            )
        )
        sequence += 2
    carry = f"payee_carry:{payee_id}"
    if carry_in_micros:
        append(
            (
                f"{batch_id}:{sequence:06d}",
                batch_id,
                None,
                "carry_in",
                carry,
                currency,
                carry_in_micros,
                posted_us,
            )
        )
        append(
            (
                f"{batch_id}:{sequence + 1:06d}",
                batch_id,
                None,
                "carry_in",
                payable,
                currency,
                -carry_in_micros,
                posted_us,
            )
        )
        sequence += 2
    payout = f"payee_payout:{payee_id}"
    append(
        (
            f"{batch_id}:{sequence:06d}",
            batch_id,
            None,
            "payout",
            payable,
            currency,
            payout_micros,
            posted_us,
        )
    )
    append(
        (
            f"{batch_id}:{sequence + 1:06d}",
            batch_id,
            None,
            "payout",
            payout,
            currency,
            -payout_micros,
            posted_us,
        )
    )
    sequence += 2
    if carry_out_micros:
        append(
            (
                f"{batch_id}:{sequence:06d}",
                batch_id,
                None,
                "carry_out",
                payable,
                currency,
                carry_out_micros,
                posted_us,
            )
        )
        append(
            (
                f"{batch_id}:{sequence + 1:06d}",
                batch_id,
                None,
                "carry_out",
                carry,
                currency,
                -carry_out_micros,
                posted_us,
            )
        )
    invariant(sum(map(_amount, rows)) == 0, "batch %s postings do not balance", batch_id)
    payable_balance = sum(map(_amount, filter(lambda row: row[ACCOUNT] == payable, rows)))
    invariant(
        payable_balance == 0, "batch %s leaves %s on the payee's payable", batch_id, payable_balance
    )
    return rows
