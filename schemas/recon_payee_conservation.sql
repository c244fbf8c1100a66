-- recon_payee_conservation: no micro-unit created or lost, per payee and currency.
-- Reads: settlement_batches.
-- Returns: one row per (payee, currency) with accrued (payments less
--   reversals), fees, paid_out and carried (what its last batch carried on: a
--   remainder below one minor unit, or a receivable when negative), and
--   balanced; then settlement_currency, awaiting (net of batches still
--   awaiting a rate, held in currency) and converted (what FX credited the
--   payee in settlement_currency, after the spread). Same currency:
--   accrued = paid_out + fees + carried + awaiting exactly. Converted payee:
--   accrued = fees + (net converted away) + awaiting in currency, and
--   converted = paid_out + carried in settlement_currency (paid_out and
--   carried are in the settlement currency, like the batches'). Carries chain
--   from batch to batch, so over all of a payee's batches the carries in and
--   out cancel but the last.
-- Empty result: nothing has settled yet. A row with balanced = false is a bug.
CREATE OR REPLACE VIEW recon_payee_conservation AS
WITH sums AS (
    SELECT
        payee_id,
        currency,
        settlement_currency,
        sum(gross - refunds) AS accrued,
        sum(fees) AS fees,
        sum(payout) AS paid_out,
        sum(carry_out) - sum(carry_in) AS carried,
        coalesce(sum(net) FILTER (WHERE status <> 'settled'), 0) AS awaiting,
        coalesce(sum(net) FILTER (WHERE fx_converted IS NOT NULL), 0) AS converted_away,
        coalesce(sum(fx_converted - fx_spread), 0) AS converted
    FROM settlement_batches
    GROUP BY payee_id, currency, settlement_currency
)
SELECT
    payee_id,
    currency,
    accrued,
    fees,
    paid_out,
    carried,
    accrued - fees - awaiting - converted_away = paid_out + carried - converted AS balanced,
    settlement_currency,
    awaiting,
    converted
FROM sums;
