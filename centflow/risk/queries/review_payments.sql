-- review_payments: what the Parquet dataset of a run says of payments, one row per
-- (event_id, source), for `centflow review` (centflow/risk/review.py).
-- Reads: ? = the list of OUT/parquet/payments/*.parquet files; ? = event ids to
--   look up, or NULL for every payment still pending review.
-- Returns: (event_id, source, type, payer_id, payee_id, amount, currency, risk_score,
--   risk_reasons, decision, review_outcome, resolved_at, batch_id, occurred_at) per
--   row: the resolved row of a held event if it has one, else its only row.
--   Empty: no such ids (or, with NULL, no payment waiting for review).
WITH rows AS (
    SELECT * FROM read_parquet(?, union_by_name = true)
),
latest AS (
    SELECT * FROM rows
    QUALIFY row_number() OVER (
        PARTITION BY event_id, source ORDER BY resolved_at DESC NULLS LAST
    ) = 1
)
SELECT event_id, source, type, payer_id, payee_id, amount, currency, risk_score,
    risk_reasons, decision, review_outcome, resolved_at, batch_id, occurred_at
FROM latest, (SELECT ?::VARCHAR[] AS wanted)
WHERE CASE
    WHEN wanted IS NULL THEN type = 'payment' AND review_outcome = 'pending'
    ELSE list_contains(wanted, event_id)
END
ORDER BY occurred_at, event_id, source
