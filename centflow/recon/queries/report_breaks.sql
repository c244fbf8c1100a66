-- report_breaks: the statement items behind the HTML report's break charts.
-- Reads: recon_statement (present once a statement was matched).
-- Returns: (class, age_bucket, items): items per class and age bucket, matched
--   ones included.
-- Empty result: no payout and no statement entry.
SELECT class, age_bucket, count(*) AS items
FROM recon_statement
GROUP BY ALL
ORDER BY ALL;
