-- summary_repeats: how many event ids are in payments more than once.
-- Reads: recon_event_repeats.
-- Returns: one row, one column: the count (0 in the normal case).
-- Empty result: never.
SELECT count(*) AS repeated_event_ids FROM recon_event_repeats;
