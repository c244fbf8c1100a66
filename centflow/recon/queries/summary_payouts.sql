-- summary_payouts: what was paid out, per settlement currency.
-- Reads: settlement_batches, settlement_payouts.
-- Returns: (currency, batches, lines, payout, to_split_parties, carried,
--   fx_in, fx_spread, awaiting_rate) per settlement currency: batches settled
--   in it, payout lines, the amount paid (to_split_parties of it paid to
--   revenue-split parties rather than the payee), what stays carried
--   (remainders, or receivables when negative), what FX converted into it
--   (after the spread) and the spread kept, and batches still awaiting a rate.
-- Empty result: no batch has settled.
WITH lines AS (
    SELECT
        p.currency,
        count(*) AS lines,
        coalesce(sum(p.amount) FILTER (WHERE p.party_id <> b.payee_id), 0) AS to_parties
    FROM settlement_payouts AS p
    JOIN settlement_batches AS b USING (batch_id)
    GROUP BY p.currency
)
SELECT
    b.settlement_currency AS currency,
    count(*) AS batches,
    coalesce(any_value(l.lines), 0) AS lines,
    sum(b.payout) AS payout,
    coalesce(any_value(l.to_parties), 0) AS to_split_parties,
    sum(b.carry_out) - sum(b.carry_in) AS carried,
    coalesce(sum(b.fx_converted - b.fx_spread), 0) AS fx_in,
    coalesce(sum(b.fx_spread), 0) AS fx_spread,
    count(*) FILTER (WHERE b.status = 'awaiting_rate') AS awaiting_rate
FROM settlement_batches AS b
LEFT JOIN lines AS l ON l.currency = b.settlement_currency
GROUP BY b.settlement_currency
ORDER BY b.settlement_currency;
