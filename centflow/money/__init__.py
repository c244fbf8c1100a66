"""Money: exact amounts, settlement batches and the double-entry ledger.

`amounts` (integer micro-units, ISO 4217 minor units, rounding), `settlement`
(event-time windows netted into batches, carry-forward) and `ledger`
(balanced postings).
"""
