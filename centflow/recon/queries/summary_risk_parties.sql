-- summary_risk_parties: the payers and payees with the most payments flagged (sent
--   to review or declined).
-- Reads: payments (rows of type 'payment' only).
-- Parameters: how many parties to return per role.
-- Returns: (role, party_id, payments, approved, reviewed, declined, max_score,
--   reasons, flagged_amounts), at most the parameter's count of rows per role
--   ('payer' rows first, then 'payee'), each role's rows by flagged payments
--   (reviewed + declined) descending, then party_id, so ties always rank the
--   same way; parties with no flagged payment are left out. payments counts
--   all the party's payments, max_score is the highest score of its flagged
--   ones (NULL if none was scored); reasons is a list of up to 3 structs
--   {reason, payments}: the reasons (`;`-separated in risk_reasons, each
--   counted once per payment) its flagged payments carry most often, by count
--   descending then name; flagged_amounts is a list of structs {currency,
--   amount}, the summed DECIMAL amounts of its flagged payments per currency,
--   by currency (currencies are never added together).
-- Empty result: no payment was flagged.
WITH flagged AS (
    SELECT
        payer_id,
        payee_id,
        currency,
        amount,
        decision,
        risk_score,
        decision IN ('review', 'decline') AS is_flagged,
        list_distinct(
            list_filter(string_split(coalesce(risk_reasons, ''), ';'), lambda reason: reason <> '')
        ) AS reasons
    FROM payments
    WHERE type = 'payment'
), sides AS (
    SELECT 'payer' AS role, payer_id AS party_id, currency, amount, decision, risk_score,
           is_flagged, reasons
    FROM flagged
    UNION ALL
    SELECT 'payee', payee_id, currency, amount, decision, risk_score, is_flagged, reasons
    FROM flagged
), parties AS (
    SELECT
        role,
        party_id,
        count(*) AS payments,
        count(*) FILTER (WHERE decision = 'approve') AS approved,
        count(*) FILTER (WHERE decision = 'review') AS reviewed,
        count(*) FILTER (WHERE decision = 'decline') AS declined,
        max(risk_score) FILTER (WHERE is_flagged) AS max_score,
        row_number() OVER (
            PARTITION BY role
            ORDER BY count(*) FILTER (WHERE is_flagged) DESC, party_id
        ) AS rank
    FROM sides
    GROUP BY role, party_id
    HAVING count(*) FILTER (WHERE is_flagged) > 0
), top AS (
    SELECT * FROM parties WHERE rank <= ?
), amounts AS (
    SELECT role, party_id, list({'currency': currency, 'amount': amount} ORDER BY currency)
        AS flagged_amounts
    FROM (
        SELECT s.role, s.party_id, s.currency, sum(s.amount) AS amount
        FROM sides AS s
        JOIN top AS t USING (role, party_id)
        WHERE s.is_flagged
        GROUP BY ALL
    )
    GROUP BY ALL
), reason_counts AS (
    SELECT role, party_id, reason, count(*) AS payments
    FROM (
        SELECT s.role, s.party_id, unnest(s.reasons) AS reason
        FROM sides AS s
        JOIN top AS t USING (role, party_id)
        WHERE s.is_flagged
    )
    GROUP BY ALL
), reasons AS (
    SELECT role, party_id,
           list({'reason': reason, 'payments': payments} ORDER BY payments DESC, reason)[1:3]
               AS reasons
    FROM reason_counts
    GROUP BY role, party_id
)
SELECT
    t.role,
    t.party_id,
    t.payments,
    t.approved,
    t.reviewed,
    t.declined,
    t.max_score,
    coalesce(r.reasons, []) AS reasons,
    a.flagged_amounts
FROM top AS t
JOIN amounts AS a USING (role, party_id)
LEFT JOIN reasons AS r USING (role, party_id)
ORDER BY t.role = 'payee', t.rank;
