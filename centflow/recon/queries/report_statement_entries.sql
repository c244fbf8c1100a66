-- report_statement_entries: what the imported statements hold, per currency.
-- Reads: statement_entries.
-- Returns: (currency, entries, credits, debits): the entries and the sums of
--   their positive and negative amounts.
-- Empty result: no statement imported.
SELECT currency, count(*) AS entries,
       coalesce(sum(amount) FILTER (WHERE amount > 0), 0) AS credits,
       coalesce(sum(amount) FILTER (WHERE amount < 0), 0) AS debits
FROM statement_entries
GROUP BY currency
ORDER BY currency;
