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
==========================  ==================================================

A payment debits the rail and credits the payee; a refund or chargeback does
the opposite; the batch's payout debits the payee's payable by the net and
credits the payout account. Fees, revenue splits, FX conversion and the
carry-forward of sub-minor remainders post their own entries in the same way
(each its own `kind`), so they slot in without changing these.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from centflow.errors import invariant
from centflow.events import Payment


class LedgerEntry(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """One posting: a signed amount on one account, in the batch currency."""

    entry_id: str
    batch_id: str
    event_id: str | None
    kind: str
    account: str
    currency: str
    amount_micros: int
    posted_us: int


def post_batch(
    batch_id: str,
    payee_id: str,
    currency: str,
    events: Sequence[Payment],
    payout_micros: int,
    posted_us: int,
) -> list[LedgerEntry]:
    """The balanced postings of one batch: two per event, two for the payout."""
    entries: list[LedgerEntry] = []
    payable = f"payee_payable:{payee_id}"

    def post(event_id: str | None, kind: str, debit: str, credit: str, amount_micros: int) -> None:
        sequence = len(entries)
        entries.append(LedgerEntry(f"{batch_id}:{sequence:06d}", batch_id, event_id, kind, debit, currency, amount_micros, posted_us))
        entries.append(LedgerEntry(f"{batch_id}:{sequence + 1:06d}", batch_id, event_id, kind, credit, currency, -amount_micros, posted_us))

    for event in events:
        invariant(event.currency == currency, f"event {event.event_id} in {event.currency} posted to a {currency} batch")
        clearing = f"rail_clearing:{event.rail}"
        if event.type == "payment":
            post(event.event_id, "payment", clearing, payable, event.amount_micros)
        else:
            post(event.event_id, event.type, payable, clearing, event.amount_micros)
    post(None, "payout", payable, f"payee_payout:{payee_id}", payout_micros)
    invariant(sum(entry.amount_micros for entry in entries) == 0, f"batch {batch_id} postings do not balance")
    payable_balance = sum(entry.amount_micros for entry in entries if entry.account == payable)
    invariant(payable_balance == 0, f"batch {batch_id} leaves {payable_balance} on the payee's payable")
    return entries
