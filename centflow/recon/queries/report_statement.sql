-- report_statement: whether a statement was matched, and with which settings.
-- Reads: duckdb_tables(), recon_statement_settings (when it exists).
-- Returns: one row: the number of the tables recon_statement and
--   recon_statement_settings present (2 once `centflow recon match` has run).
-- Empty result: never.
SELECT count(*) AS tables
FROM duckdb_tables()
WHERE table_name IN ('recon_statement', 'recon_statement_settings');
