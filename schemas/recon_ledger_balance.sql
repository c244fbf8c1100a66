-- recon_ledger_balance: the ledger's balance per currency.
-- Reads: ledger_entries.
-- Returns: one row per currency with the number of entries and batches, total
--   debits, total credits, the balance (debits + credits, credits being
--   negative) and balanced = (balance = 0).
-- Empty result: no batch has been posted yet. A row with balanced = false is a bug.
CREATE OR REPLACE VIEW recon_ledger_balance AS
SELECT
    currency,
    count(*) AS entries,
    count(DISTINCT batch_id) AS batches,
    coalesce(sum(amount) FILTER (WHERE amount > 0), 0) AS debits,
    coalesce(sum(amount) FILTER (WHERE amount < 0), 0) AS credits,
    sum(amount) AS balance,
    sum(amount) = 0 AS balanced
FROM ledger_entries
GROUP BY currency;
