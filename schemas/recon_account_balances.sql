-- recon_account_balances: every ledger account's balance after each batch that moved it.
-- Reads: ledger_entries.
-- Returns: one row per (account, currency, batch) in posting order: posted_at
--   (the batch's close, in event time), the batch's net movement on the account
--   (movement, debits positive) and the account's balance after it (running
--   sum over its earlier batches, ties in time by batch_id). An account is
--   "kind:owner" (centflow.money.ledger lists the kinds).
-- The balance at any time T: the last row per account with posted_at <= T,
--   e.g. SELECT account, currency, arg_max(balance, (posted_at, batch_id))
--   FROM recon_account_balances WHERE posted_at <= T GROUP BY ALL.
-- Empty result: no batch has been posted yet.
CREATE OR REPLACE VIEW recon_account_balances AS
WITH moves AS (
    SELECT account, currency, batch_id, min(posted_at) AS posted_at, sum(amount) AS movement
    FROM ledger_entries
    GROUP BY account, currency, batch_id
)
SELECT
    account,
    currency,
    batch_id,
    posted_at,
    movement,
    sum(movement) OVER (
        PARTITION BY account, currency ORDER BY posted_at, batch_id
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS balance
FROM moves;
