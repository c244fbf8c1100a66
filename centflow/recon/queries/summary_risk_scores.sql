-- summary_risk_scores: how the risk scores of payments are distributed, per decision.
-- Reads: payments (rows of type 'payment' only).
-- Returns: (bucket, decision, payments): bucket k in 0..9 holds the scores in
--   [k / 10, (k + 1) / 10), the last one [0.9, 1.0] (a score of 1.0, as a
--   model error gets, is in it); a score outside [0, 1] is counted in the
--   nearest end bucket; NULL is a payment without a score. Ordered by bucket
--   (NULL last), then approve, review, decline (any other decision after them).
-- Empty result: no payment was read.
SELECT
    -- greatest and least skip NULL, so an unscored payment is kept NULL explicitly
    CASE WHEN risk_score IS NOT NULL
        THEN CAST(least(greatest(floor(risk_score * 10), 0), 9) AS INTEGER)
    END AS bucket,
    decision,
    count(*) AS payments
FROM payments
WHERE type = 'payment'
GROUP BY 1, 2
ORDER BY
    bucket NULLS LAST,
    CASE decision WHEN 'approve' THEN 0 WHEN 'review' THEN 1 WHEN 'decline' THEN 2 ELSE 3 END,
    decision;
