-- report_conservation: the conservation check per currency, for the HTML report.
-- Reads: recon_payee_conservation.
-- Returns: (currency, payees, payees_unbalanced, accrued, fees, paid_out, carried):
--   per batch currency, the payees and the sums over them; accrued = paid_out +
--   fees + carried holds for each payee when payees_unbalanced is 0.
-- Empty result: nothing has settled.
SELECT
    currency,
    count(*) AS payees,
    count(*) FILTER (WHERE NOT balanced) AS payees_unbalanced,
    sum(accrued) AS accrued,
    sum(fees) AS fees,
    sum(paid_out) AS paid_out,
    sum(carried) AS carried
FROM recon_payee_conservation
GROUP BY currency
ORDER BY currency;
