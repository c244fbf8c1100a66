-- summary_checks: the reconciliation checks, one row each.
-- Reads: recon_batch_totals, recon_ledger_balance, recon_payee_conservation.
-- Returns: (check, failures): batches whose totals differ from their events,
--   and currencies whose ledger does not sum to zero.
-- Empty result: never (both rows are always returned; failures 0 means pass).
SELECT 'batches equal their events' AS check_name, count(*) FILTER (WHERE status <> 'ok') AS failures
FROM recon_batch_totals
UNION ALL
SELECT 'ledger sums to zero per currency', count(*) FILTER (WHERE NOT balanced)
FROM recon_ledger_balance
UNION ALL
SELECT 'accrued = paid out + fees + carried, per payee', count(*) FILTER (WHERE NOT balanced)
FROM recon_payee_conservation;
