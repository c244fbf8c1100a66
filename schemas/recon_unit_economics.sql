-- recon_unit_economics: what netting into batches saves, per rail and currency.
-- Reads: settlement_fees.
-- Returns: one row per (rail, currency) that settled payments: payments, batches
--   (batch and rail groups, each charged once), gross, fees_if_alone (every
--   payment charged on its own by the same schedule), fees_netted (what the
--   batches were charged), saving (the difference) and saving_share of
--   fees_if_alone, rail_cost, margin, and share_unpayable_alone: the share of
--   payments whose own fee would have exceeded their amount (they could never
--   have been paid out alone). Chargeback fees are per chargeback either way and
--   are left out of the comparison (they are in margin).
-- Empty result: nothing has settled yet.
CREATE OR REPLACE VIEW recon_unit_economics AS
SELECT
    rail,
    currency,
    sum(payments) AS payments,
    count(*) FILTER (WHERE payments > 0) AS batches,
    sum(gross) AS gross,
    sum(fees_if_alone) AS fees_if_alone,
    sum(fee) AS fees_netted,
    sum(fees_if_alone) - sum(fee) AS saving,
    -- shares rounded half up to 4 places in integers (a DECIMAL division goes
    -- through a double, which rounds exact ties either way)
    CAST(
        (sign(sum(fees_if_alone) - sum(fee))
            * ((abs(CAST((sum(fees_if_alone) - sum(fee)) * 1000000 AS HUGEINT)) * 20000
                + CAST(sum(fees_if_alone) * 1000000 AS HUGEINT))
                // nullif(CAST(sum(fees_if_alone) * 1000000 AS HUGEINT) * 2, 0)))::DECIMAL(18,0)
            * 0.0001
        AS DECIMAL(18,4)
    ) AS saving_share,
    sum(rail_cost) AS rail_cost,
    sum(margin) AS margin,
    CAST(
        ((CAST(sum(unpayable_alone) AS HUGEINT) * 20000 + sum(payments))
            // nullif(2 * sum(payments), 0))::DECIMAL(18,0) * 0.0001
        AS DECIMAL(18,4)
    ) AS share_unpayable_alone
FROM settlement_fees
GROUP BY rail, currency
HAVING sum(payments) > 0;
