-- summary_currencies: settled money per currency.
-- Reads: settlement_batches, recon_ledger_balance.
-- Returns: one row per currency that batches settled in or paid out in:
--   batches, events, late adjustments, gross, refunds, fees and net of the
--   batches in that currency; payout, what was paid out in it (as settlement
--   currency: with FX, a batch's events are in one currency and its payout in
--   another); and whether the ledger balances in it.
-- Empty result: no batch has settled.
WITH settled AS (
    SELECT
        currency,
        count(*) AS batches,
        sum(event_count) AS events,
        sum(late_count) AS late,
        sum(gross) AS gross,
        sum(refunds) AS refunds,
        sum(fees) AS fees,
        sum(net) AS net
    FROM settlement_batches
    GROUP BY currency
), paid AS (
    SELECT settlement_currency AS currency, sum(payout) AS payout
    FROM settlement_batches
    GROUP BY settlement_currency
)
SELECT
    coalesce(s.currency, p.currency) AS currency,
    coalesce(s.batches, 0) AS batches,
    coalesce(s.events, 0) AS events,
    coalesce(s.late, 0) AS late,
    coalesce(s.gross, 0) AS gross,
    coalesce(s.refunds, 0) AS refunds,
    coalesce(s.fees, 0) AS fees,
    coalesce(s.net, 0) AS net,
    coalesce(p.payout, 0) AS payout,
    coalesce(l.balanced, false) AS ledger_balanced,
    coalesce(l.balance, 0) AS ledger_balance
FROM settled AS s
FULL JOIN paid AS p USING (currency)
LEFT JOIN recon_ledger_balance AS l ON l.currency = coalesce(s.currency, p.currency)
ORDER BY 1;
