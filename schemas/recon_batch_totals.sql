-- recon_batch_totals: every settlement batch against the payments that name it.
-- Reads: settlement_batches, payments.
-- Returns: one row per batch id found in either table, with the batch's own
--   event_count, gross and refunds beside the same figures recomputed from its
--   events, and status: 'ok', 'mismatch' (figures differ, or net is not
--   gross - refunds - fees), 'missing_batch' (events name a batch that does not
--   exist) or 'empty_batch' (a batch no event names).
-- Empty result: nothing has settled yet. Any status other than 'ok' is a bug.
CREATE OR REPLACE VIEW recon_batch_totals AS
WITH by_events AS (
    SELECT
        batch_id,
        count(*) AS event_count,
        coalesce(sum(amount) FILTER (WHERE type = 'payment'), 0) AS gross,
        coalesce(sum(amount) FILTER (WHERE type <> 'payment'), 0) AS refunds
    FROM payments
    WHERE batch_id IS NOT NULL
    GROUP BY batch_id
)
SELECT
    coalesce(b.batch_id, e.batch_id) AS batch_id,
    b.payee_id,
    b.currency,
    b.window_start,
    b.event_count,
    e.event_count AS events_counted,
    b.gross,
    e.gross AS events_gross,
    b.refunds,
    e.refunds AS events_refunds,
    b.net,
    CASE
        WHEN b.batch_id IS NULL THEN 'missing_batch'
        WHEN e.batch_id IS NULL THEN 'empty_batch'
        WHEN b.event_count = e.event_count
             AND b.gross = e.gross
             AND b.refunds = e.refunds
             AND b.net = b.gross - b.refunds - b.fees THEN 'ok'
        ELSE 'mismatch'
    END AS status
FROM settlement_batches AS b
FULL OUTER JOIN by_events AS e ON e.batch_id = b.batch_id;
