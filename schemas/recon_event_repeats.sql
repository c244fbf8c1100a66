-- recon_event_repeats: event ids that are in payments more than once.
-- Reads: payments.
-- Returns: one row per such event_id: how many rows hold it, its payees
--   (distinct, comma-separated, sorted), the first and last ingestion times,
--   the source positions of its rows (in ingestion order), and why it got in
--   again: 'other_payee' (the id was reused for another payee) or
--   'beyond_horizon' (the same payee's event came again after the
--   de-duplication horizon). Either way each copy was settled: a possible
--   double payment for someone to look at.
-- Empty result: every event id is in payments once (the normal case).
CREATE OR REPLACE VIEW recon_event_repeats AS
WITH repeated AS (  -- counted first: the aggregates below then run for these ids only
    SELECT event_id FROM payments GROUP BY event_id HAVING count(*) > 1
)
SELECT
    event_id,
    count(*) AS copies,
    string_agg(DISTINCT payee_id, ',' ORDER BY payee_id) AS payees,
    min(ingested_at) AS first_ingested_at,
    max(ingested_at) AS last_ingested_at,
    string_agg(source, ',' ORDER BY ingested_at, source) AS sources,
    CASE WHEN count(DISTINCT payee_id) > 1 THEN 'other_payee' ELSE 'beyond_horizon' END AS reason
FROM payments SEMI JOIN repeated USING (event_id)
GROUP BY event_id;
