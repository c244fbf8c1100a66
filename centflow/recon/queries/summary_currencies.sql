-- summary_currencies: settled money per currency.
-- Reads: settlement_batches, recon_ledger_balance.
-- Returns: one row per batch currency: batches, events, late adjustments, gross,
--   refunds, fees, net, payout, and whether the ledger balances in it.
-- Empty result: no batch has settled.
SELECT
    b.currency,
    count(*) AS batches,
    sum(b.event_count) AS events,
    sum(b.late_count) AS late,
    sum(b.gross) AS gross,
    sum(b.refunds) AS refunds,
    sum(b.fees) AS fees,
    sum(b.net) AS net,
    sum(b.payout) AS payout,
    coalesce(any_value(l.balanced), false) AS ledger_balanced,
    coalesce(any_value(l.balance), 0) AS ledger_balance
FROM settlement_batches AS b
LEFT JOIN recon_ledger_balance AS l ON l.currency = b.currency
GROUP BY b.currency
ORDER BY b.currency;
