-- report_economics: unit economics per rail and currency, for the HTML report.
-- Reads: recon_unit_economics.
-- Returns: (currency, rail, payments, batches, fees_if_alone, fees_netted, saving,
--   saving_share, margin, share_unpayable_alone).
-- Empty result: nothing has settled (or the run wrote no settlement_fees).
SELECT currency, rail, payments, batches, fees_if_alone, fees_netted, saving, saving_share,
       margin, share_unpayable_alone
FROM recon_unit_economics
ORDER BY currency, rail;
