-- report_spans: the time spans the HTML report's charts cover.
-- Reads: settlement_batches, payments.
-- Returns: one row: first and last window_start (µs since the epoch), the shortest
--   window length (µs), first and last occurred_at of payments (µs).
-- Empty result: never (nulls when a table is empty).
SELECT
    (SELECT epoch_us(min(window_start)) FROM settlement_batches) AS windows_first_us,
    (SELECT epoch_us(max(window_start)) FROM settlement_batches) AS windows_last_us,
    (SELECT min(epoch_us(window_end) - epoch_us(window_start)) FROM settlement_batches)
        AS window_length_us,
    (SELECT epoch_us(min(occurred_at)) FROM payments) AS events_first_us,
    (SELECT epoch_us(max(occurred_at)) FROM payments) AS events_last_us;
