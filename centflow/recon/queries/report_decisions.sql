-- report_decisions: risk decisions over time, for the HTML report.
-- Reads: payments.
-- Parameters: the bucket length in µs, twice (buckets start at multiples of it
--   since the epoch, UTC).
-- Returns: (bucket_us, decision, events): rows of payments (payments, refunds and
--   chargebacks) per bucket of occurred_at and decision.
-- Empty result: nothing was read.
SELECT
    (epoch_us(occurred_at) // ?) * ? AS bucket_us,
    decision,
    count(*) AS events
FROM payments
GROUP BY ALL
ORDER BY ALL;
