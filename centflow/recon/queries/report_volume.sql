-- report_volume: settled volume over time per currency, for the HTML report.
-- Reads: settlement_batches.
-- Parameters: the bucket length in µs, twice (buckets start at multiples of it
--   since the epoch, UTC).
-- Returns: (currency, bucket_us, batches, gross): batches and their gross, per
--   batch currency and bucket of window_start; currencies are never added up.
-- Empty result: nothing has settled.
SELECT
    currency,
    (epoch_us(window_start) // ?) * ? AS bucket_us,
    count(*) AS batches,
    sum(gross) AS gross
FROM settlement_batches
GROUP BY ALL
ORDER BY ALL;
