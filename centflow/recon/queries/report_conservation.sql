-- report_conservation: the conservation check per currency, for the HTML report.
-- Reads: recon_payee_conservation.
-- Returns: (currency, settlement_currency, payees, payees_unbalanced, accrued,
--   fees, paid_out, carried): per batch currency and the currency it is paid
--   in (they differ for payees FX converts), the payees and the sums over them
--   (accrued and fees in currency; paid_out and carried in
--   settlement_currency); every payee balances when payees_unbalanced is 0.
-- Empty result: nothing has settled.
SELECT
    currency,
    settlement_currency,
    count(*) AS payees,
    count(*) FILTER (WHERE NOT balanced) AS payees_unbalanced,
    sum(accrued) AS accrued,
    sum(fees) AS fees,
    sum(paid_out) AS paid_out,
    sum(carried) AS carried
FROM recon_payee_conservation
GROUP BY currency, settlement_currency
ORDER BY currency, settlement_currency;
