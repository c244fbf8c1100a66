-- summary_fees: fees and what netting saved, per currency (all rails together).
-- Reads: recon_unit_economics.
-- Returns: (currency, payments, fees_if_alone, fees_netted, saving, margin,
--   share_unpayable_alone), one row per currency with settled payments.
SELECT
    currency,
    sum(payments)::BIGINT,
    sum(fees_if_alone),
    sum(fees_netted),
    sum(saving),
    sum(margin),
    CAST(round(sum(share_unpayable_alone * payments) / sum(payments), 4) AS DECIMAL(18,4))
FROM recon_unit_economics
GROUP BY currency
ORDER BY currency;
