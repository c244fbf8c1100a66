-- report_break_items: the oldest and largest breaks, for the HTML report's list.
-- Reads: recon_breaks.
-- Parameters: the number of rows to return.
-- Returns: (item_id, class, batch_id, statement_id, entry_id, currency, expected,
--   actual, difference, age_days, age_bucket), oldest first, then the largest
--   absolute difference, then item_id.
-- Empty result: no breaks.
SELECT item_id, class, batch_id, statement_id, entry_id, currency, expected, actual,
       difference, age_days, age_bucket
FROM recon_breaks
ORDER BY age_days DESC, abs(difference) DESC, item_id
LIMIT ?;
