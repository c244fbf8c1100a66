-- report_aging: the breaks' aging per class, age bucket and currency.
-- Reads: recon_aging.
-- Returns: (class, age_bucket, currency, items, net, gross, oldest_days).
-- Empty result: no breaks.
SELECT class, age_bucket, currency, items, net, gross, oldest_days
FROM recon_aging
ORDER BY ALL;
