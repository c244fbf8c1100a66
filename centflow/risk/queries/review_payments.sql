-- review_payments: what the Parquet dataset of a run says of payments, one row per
-- (event_id, source), for `centflow review` (centflow/risk/review.py).
-- Reads: $1 = event ids to look up, or NULL for every payment still pending review;
--   $2 = the list of OUT/parquet/payments/*.parquet files.
-- Returns: (event_id, source, type, payer_id, payee_id, amount, currency, risk_score,
--   risk_reasons, decision, review_outcome, resolved_at, batch_id, occurred_at) per
--   row: the resolved row of a held event if it has one, else its only row.
--   Empty: no such ids (or, with NULL, no payment waiting for review).
WITH wanted AS (
    SELECT $1::VARCHAR[] AS ids
),
rows AS (
    SELECT p.* FROM read_parquet($2, union_by_name = true) AS p, wanted
    WHERE CASE
        WHEN wanted.ids IS NULL THEN p.type = 'payment' AND p.decision = 'review'
        ELSE list_contains(wanted.ids, p.event_id)
    END
),
latest AS (
    SELECT * FROM rows
    QUALIFY row_number() OVER (
        PARTITION BY event_id, source ORDER BY resolved_at DESC NULLS LAST
    ) = 1
)
SELECT latest.event_id, latest.source, latest.type, latest.payer_id, latest.payee_id,
    latest.amount, latest.currency, latest.risk_score, latest.risk_reasons, latest.decision,
    latest.review_outcome, latest.resolved_at, latest.batch_id, latest.occurred_at
FROM latest, wanted
WHERE wanted.ids IS NOT NULL OR latest.review_outcome = 'pending'
ORDER BY latest.occurred_at, latest.event_id, latest.source
