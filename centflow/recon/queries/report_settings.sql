-- report_settings: the settings the statement items were matched with.
-- Reads: recon_statement_settings (present once a statement was matched).
-- Returns: one row: as_of (µs since the epoch), grace_days, date_window_days, tolerance.
-- Empty result: never once matching has run (it writes exactly one row).
SELECT epoch_us(as_of) AS as_of_us, grace_days, date_window_days, tolerance
FROM recon_statement_settings;
