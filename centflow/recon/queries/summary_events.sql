-- summary_events: how the input was disposed of.
-- Reads: payments, dead_letters.
-- Returns: one row per outcome (e.g. 'payment settled', 'refund settled',
--   'payment approve, unsettled', 'payment review pending, unsettled' (held for
--   review: pending, declined, or released and not yet in a closed batch),
--   'dead letter: invalid_json') with its count.
-- Empty result: nothing was read.
SELECT outcome, count FROM (
    SELECT
        type || CASE
            WHEN batch_id IS NOT NULL THEN ' settled'
            ELSE ' ' || decision || coalesce(' ' || review_outcome, '') || ', unsettled'
        END AS outcome,
        count(*) AS count,
        0 AS rank
    FROM payments
    GROUP BY 1
    UNION ALL
    SELECT 'dead letter: ' || reason, count(*), 1 FROM dead_letters GROUP BY reason
)
ORDER BY rank, outcome;
