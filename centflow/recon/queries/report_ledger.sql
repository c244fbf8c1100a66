-- report_ledger: the ledger balance check per currency, for the HTML report.
-- Reads: recon_ledger_balance.
-- Returns: (currency, entries, batches, debits, credits, balance, balanced).
-- Empty result: no batch has been posted.
SELECT currency, entries, batches, debits, credits, balance, balanced
FROM recon_ledger_balance
ORDER BY currency;
