-- recon_payee_conservation: no micro-unit created or lost, per payee and currency.
-- Reads: settlement_batches.
-- Returns: one row per (payee, currency): accrued (payments less reversals),
--   fees, paid_out, carried (what its last batch carried on: a remainder below
--   one minor unit, or a receivable when negative), and balanced: accrued =
--   paid_out + fees + carried exactly. Carries chain from batch to batch (each
--   batch's carry_in is the previous one's carry_out), so over all of a payee's
--   batches the carries in and out cancel but the last.
-- Empty result: nothing has settled yet. A row with balanced = false is a bug.
CREATE OR REPLACE VIEW recon_payee_conservation AS
WITH ordered AS (
    SELECT *, row_number() OVER (
        PARTITION BY payee_id, currency ORDER BY window_start DESC, part DESC
    ) AS newest
    FROM settlement_batches
)
SELECT
    payee_id,
    currency,
    sum(gross - refunds) AS accrued,
    sum(fees) AS fees,
    sum(payout) AS paid_out,
    sum(carry_out) - sum(carry_in) AS carried,
    sum(gross - refunds) = sum(payout) + sum(fees) + sum(carry_out) - sum(carry_in) AS balanced
FROM ordered
GROUP BY payee_id, currency;
