-- summary_risk_decisions: the risk decisions of payments, per decision and currency.
-- Reads: payments (rows of type 'payment' only: refunds and chargebacks follow
--   their payment's decision and are not scored).
-- Returns: (decision, currency, payments, amount, model_errors): the payments
--   given that decision in that currency, their summed amount (DECIMAL, in the
--   currency's major unit) and how many of them carry the reason `model_error`
--   (their features failed, so they went to review unscored); ordered approve,
--   review, decline (any other decision after them, by name), then currency.
-- Empty result: no payment was read.
SELECT
    decision,
    currency,
    count(*) AS payments,
    sum(amount) AS amount,
    count(*) FILTER (
        WHERE list_contains(string_split(coalesce(risk_reasons, ''), ';'), 'model_error')
    ) AS model_errors
FROM payments
WHERE type = 'payment'
GROUP BY decision, currency
ORDER BY
    CASE decision WHEN 'approve' THEN 0 WHEN 'review' THEN 1 WHEN 'decline' THEN 2 ELSE 3 END,
    decision,
    currency;
