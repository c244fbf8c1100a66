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
    -- the payment-weighted share, rounded half up to 4 places in integers (a DECIMAL
    -- division would go through a double and round 0.83335 down)
    CAST(
        ((CAST(sum(share_unpayable_alone * payments) * 10000 AS HUGEINT) * 2 + sum(payments))
            // (2 * sum(payments)))::DECIMAL(18,0) * 0.0001
        AS DECIMAL(18,4)
    )
FROM recon_unit_economics
GROUP BY currency
ORDER BY currency;
