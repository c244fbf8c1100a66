"""Matching settled payouts against statement entries, in DuckDB SQL.

`reconcile` reads the payouts the pipeline settled (``settlement_payouts``,
dated by when their batch paid out, ``settlement_batches.settled_at``) and the entries of the
imported statements (``statement_entries``, see `centflow.recon.statements`),
and writes, in one transaction:

``recon_statement``         one row per item (below): item_id, class, match_rule,
                            batch_id, party_id, statement_id, entry_id, batches,
                            lines, entries, currency, expected, actual, difference,
                            expected_at, booked_at, value_date, age_days, age_bucket
``recon_statement_members`` the batches and entries of the items that have
                            several of either (an item of one batch and at most
                            one entry names them in its own row)
``recon_statement_settings`` the one row of settings the items were made with
``recon_payouts`` (view)    the payout lines, one per (batch, party), with their
                            batch's close as expected_at and their line_key
``recon_breaks`` (view)     the items that are not matched
``recon_aging`` (view)      per class, age bucket and currency: items, net
                            (sum of differences), gross (sum of their absolute
                            values: +1,000 and -1,000 net to 0 but gross 2,000)
                            and the oldest age; currencies are never added up
``recon_item_batches``, ``recon_item_entries`` (views)  every (item, batch) and
                            (item, entry) pair
``recon_payout_lineage`` (view)  from a payout to its batch, events (with their
                            risk decisions), ledger entries, statement entries
                            and reconciliation item, one row per node

When several batches or entries share an item, ``batch_id``, ``statement_id`` and
``entry_id`` of its row hold their sorted ids joined with ``+``; the views
above list them one per row.

Every payout line and every statement entry ends in exactly one item, and
every item in exactly one class (checked with `invariant` after the tables are
written). The rules, in order; each stage sees only what earlier ones left:

1. **By reference.** An entry's reference is one batch id, or several joined
   with ``+`` (``b-1+b-2``: one entry paying several batches). It *resolves*
   when every part (trimmed, none repeated) is a batch of the entry's
   currency; an entry in another currency than the batch it names does not
   pay it. All resolving entries with the same set of batch ids, and those
   batches, form one item (so one batch paid in two entries is summed, a
   duplicated entry shows as paid twice, and an entry for several batches is
   one item). The item is ``matched`` when its entries sum to its batches'
   payouts (to within `tolerance`, zero by default: an unbooked fee is a
   break), else ``amount_mismatch``. A combined reference is honoured only if
   none of its batches is named by another reference (by itself or in another
   combination); otherwise its entries are taken as unreferenced, so no batch
   is ever in two items.
2. **By amount and date, one to one.** The payout lines of batches no entry
   resolved to (other than zero amounts, which expect no entry) are paired
   with the entries left over, by equal currency and exact amount (the amount
   is then the only evidence, so `tolerance` does not apply), when the entry's
   value date is within `date_window_days` of the UTC date its batch closed.
   Among several candidates the nearest date wins, then the smaller ids:
   rounds of mutually-nearest pairs (a line's best entry whose best line it
   is) until none is left, at most `ROUNDS_MAX` rounds. Each round is one SQL
   statement over all candidates, so the work is set-based.
3. **By amount and date, many to one.** Still-open lines of one party in one
   currency whose batches closed on the same UTC day (at least two lines) form
   a group; an open entry equal to the group's sum, within the window of that
   day, pays it when it is the only such entry for the group and the group the
   only such group for the entry (a rail crediting a payee's day in one sum).
4. **What is left.** An open payout line is ``timing`` while ``as_of`` is within
   `grace_days` of its batch's close (it may be in the next statement), and
   ``missing_in_statement`` after. An open entry is ``unexpected_in_statement``.

An item's identity is what it reconciles: its batch ids (``+``-joined, sorted)
for an item by reference; a payout line's key (the batch id, or
``batch|party`` when the batch pays several parties) or the sorted keys of a
group for the other payout items; ``statement_id/entry_id`` for an unexpected
entry. ``item_id`` is ``r-`` and 20 hex digits of the MD5 of it, so the same
break has the same id in every run, and keeps it as it ages; a missing batch
that is paid later by reference keeps its id as it turns ``matched``.

Age: whole days from the item's date (its batches' earliest close; an
unexpected entry's booking time) to ``as_of``, at least 0, in the buckets
``0-1d``, ``2-7d``, ``8-30d``, ``>30d`` (which also sort in that order).
``difference`` is actual - expected; a side with nothing is 0.

Payouts: ``settlement_payouts`` (batch_id, party_id, currency, amount) is
read when the database has it. Until the pipeline writes it, a *temporary*
view of that name (this connection only) stands in, from
``settlement_batches``: one line per batch, for its payee, in its settlement
currency, of its payout. Temporary, so that it never blocks the loader from
creating the real table later (DuckDB refuses to drop a view as a table).

The SQL of each step is below, each statement with a header saying what it
reads and writes. Values are passed as parameters into a one-row settings
table, never formatted into the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb

from centflow.errors import ConfigError, invariant
from centflow.limits import MICROS_PER_SECOND
from centflow.recon.statements import ensure_statement_tables

GRACE_DAYS_DEFAULT = 2
GRACE_DAYS_MAX = 366
DATE_WINDOW_DAYS_DEFAULT = 3
DATE_WINDOW_DAYS_MAX = 31
#: Rounds of mutually-nearest pairing (rule 2); each one pairs at least one
#: candidate, and in practice one or two rounds pair them all.
ROUNDS_MAX = 64
MICROS_PER_DAY = 86_400 * MICROS_PER_SECOND

CLASSES = (
    "matched",
    "amount_mismatch",
    "missing_in_statement",
    "unexpected_in_statement",
    "timing",
)
AGE_BUCKETS = ("0-1d", "2-7d", "8-30d", ">30d")
RULES = ("reference", "combined_reference", "amount_date", "amount_group")

# The fallback for a database without settlement_payouts (see the module docstring).
PAYOUTS_FALLBACK_SQL = """
CREATE OR REPLACE TEMP VIEW settlement_payouts AS
SELECT batch_id, payee_id AS party_id, settlement_currency AS currency, payout AS amount
FROM settlement_batches
"""

SETTINGS_SQL = """
CREATE OR REPLACE TABLE recon_statement_settings (
    as_of             TIMESTAMPTZ NOT NULL,
    grace_days        INTEGER NOT NULL,
    date_window_days  INTEGER NOT NULL,
    tolerance         DECIMAL(18,6) NOT NULL
);
INSERT INTO recon_statement_settings VALUES (?, ?, ?, ?);
"""

# Each entry is one statement; run in order inside one transaction.
STEPS: tuple[tuple[str, str], ...] = (
    (
        "batches",
        """
-- Reads settlement_payouts, settlement_batches. Writes m_batches: per batch its
-- currency (smallest and largest, which must agree), number of payout lines, their
-- sum (expected), its close (expected_at) and, for a batch of one line, its party.
CREATE OR REPLACE TEMP TABLE m_batches AS
WITH lines AS (
    SELECT batch_id, min(currency) AS currency, max(currency) AS currency_max, count(*) AS lines,
           CAST(sum(amount) AS DECIMAL(18,6)) AS expected, any_value(party_id) AS party_id
    FROM settlement_payouts GROUP BY batch_id
)
SELECT l.batch_id, l.currency, l.currency_max, l.lines, l.expected, coalesce(b.settled_at, b.closed_at) AS expected_at,
       CASE WHEN l.lines = 1 THEN l.party_id END AS party_id
FROM lines AS l LEFT JOIN settlement_batches AS b USING (batch_id);
""",
    ),
    (
        "references",
        """
-- Reads statement_entries, m_batches. Writes m_resolved: each entry whose reference
-- resolves (every '+'-part a distinct batch of the entry's currency) with the
-- canonical key of its batches (sorted, '+'-joined) and their number (size); an
-- entry of one batch also carries that batch's figures, so most items need no
-- further join. Only combined references are split into parts.
CREATE OR REPLACE TEMP TABLE m_resolved AS
SELECT e.statement_id, e.entry_id, b.batch_id AS group_key, 1 AS size, e.currency, e.amount,
       e.booked_at, e.value_date, b.lines, b.expected, b.expected_at, b.party_id
FROM statement_entries AS e
JOIN m_batches AS b ON b.batch_id = trim(e.reference) AND b.currency = e.currency
WHERE NOT contains(e.reference, '+')
UNION ALL
SELECT statement_id, entry_id, array_to_string(list_sort(list(token)), '+'), count(*),
       any_value(t.currency), any_value(amount), any_value(booked_at), any_value(value_date),
       NULL, NULL, NULL, NULL
FROM (
    SELECT e.statement_id, e.entry_id, e.currency, e.amount, e.booked_at, e.value_date,
           trim(unnest(string_split(e.reference, '+'))) AS token,
           len(string_split(e.reference, '+')) AS parts
    FROM statement_entries AS e WHERE contains(e.reference, '+')
) AS t
JOIN m_batches AS b ON b.batch_id = t.token AND b.currency = t.currency
GROUP BY statement_id, entry_id, parts
HAVING count(*) = parts AND count(DISTINCT token) = parts;
""",
    ),
    (
        "reference groups",
        """
-- Reads m_resolved. Writes m_combined (the batches of each honoured combined key: a
-- combined key is honoured only when none of its batches is named by another key)
-- and m_contested (the others, whose entries count as unreferenced); m_ref_batches
-- (every batch some honoured key names); m_several (the honoured keys of one batch
-- paid by several entries).
CREATE OR REPLACE TEMP TABLE m_combined AS
SELECT group_key, any_value(size) AS size, unnest(string_split(group_key, '+')) AS batch_id
FROM m_resolved WHERE size > 1 GROUP BY group_key;
CREATE OR REPLACE TEMP TABLE m_contested AS
SELECT DISTINCT c.group_key
FROM m_combined AS c
JOIN (SELECT batch_id, count(*) AS keys FROM m_combined GROUP BY batch_id) AS n USING (batch_id)
WHERE n.keys > 1 OR c.batch_id IN (SELECT group_key FROM m_resolved WHERE size = 1);
DELETE FROM m_combined WHERE group_key IN (SELECT group_key FROM m_contested);
CREATE OR REPLACE TEMP TABLE m_ref_batches AS
SELECT DISTINCT group_key AS batch_id FROM m_resolved WHERE size = 1
UNION ALL
SELECT batch_id FROM m_combined;
CREATE OR REPLACE TEMP TABLE m_several AS
SELECT group_key FROM m_resolved WHERE size = 1 GROUP BY group_key HAVING count(*) > 1;
""",
    ),
    (
        "open lines and entries",
        """
-- Reads m_batches, m_ref_batches, settlement_payouts, statement_entries, m_resolved,
-- m_contested. Writes m_open_lines (the non-zero payout lines of batches no honoured
-- key names, with the UTC day their batch closed; line_key is the batch id, or
-- batch|party for a batch of several lines) and m_open_entries (entries in no
-- honoured key).
CREATE OR REPLACE TEMP TABLE m_open_lines AS
WITH open AS (SELECT * FROM m_batches ANTI JOIN m_ref_batches USING (batch_id))
SELECT batch_id AS line_key, batch_id, party_id, currency, expected AS amount, expected_at,
       CAST(expected_at AS DATE) AS expected_date
FROM open WHERE lines = 1 AND expected <> 0
UNION ALL
SELECT o.batch_id || '|' || p.party_id, o.batch_id, p.party_id, p.currency,
       CAST(p.amount AS DECIMAL(18,6)), o.expected_at, CAST(o.expected_at AS DATE)
FROM open AS o JOIN settlement_payouts AS p USING (batch_id)
WHERE o.lines > 1 AND p.amount <> 0;
CREATE OR REPLACE TEMP TABLE m_open_entries AS
SELECT e.statement_id, e.entry_id, e.currency, e.amount, e.booked_at, e.value_date
FROM statement_entries AS e
ANTI JOIN (SELECT statement_id, entry_id FROM m_resolved ANTI JOIN m_contested USING (group_key))
     USING (statement_id, entry_id);
""",
    ),
    (
        "amount candidates",
        """
-- Reads m_open_lines, m_open_entries, recon_statement_settings. Writes m_candidates:
-- every (line, entry) of equal currency and amount within the date window, with
-- the distance in days; and m_pairs, empty, for the rounds.
CREATE OR REPLACE TEMP TABLE m_candidates AS
SELECT l.line_key, e.statement_id, e.entry_id, abs(e.value_date - l.expected_date) AS distance
FROM m_open_lines AS l
JOIN m_open_entries AS e ON e.currency = l.currency AND e.amount = l.amount
WHERE abs(e.value_date - l.expected_date) <= (SELECT date_window_days FROM recon_statement_settings);
CREATE OR REPLACE TEMP TABLE m_pairs (line_key VARCHAR, statement_id VARCHAR, entry_id VARCHAR);
""",
    ),
)

# One round of rule 2; run until it pairs nothing (at most ROUNDS_MAX times).
ROUND_SQL = """
-- Reads m_candidates. Adds to m_pairs the mutually-nearest (line, entry) pairs and
-- removes every candidate of a line or entry just paired.
INSERT INTO m_pairs
SELECT line_key, statement_id, entry_id FROM (
    SELECT line_key, statement_id, entry_id,
           row_number() OVER (PARTITION BY line_key ORDER BY distance, statement_id, entry_id) AS line_rank,
           row_number() OVER (PARTITION BY statement_id, entry_id ORDER BY distance, line_key) AS entry_rank
    FROM m_candidates
) WHERE line_rank = 1 AND entry_rank = 1;
DELETE FROM m_candidates AS c
WHERE c.line_key IN (SELECT line_key FROM m_pairs)
   OR (c.statement_id, c.entry_id) IN (SELECT statement_id, entry_id FROM m_pairs);
"""

FINISH_STEPS: tuple[tuple[str, str], ...] = (
    (
        "amount groups",
        """
-- Reads m_open_lines, m_open_entries, m_pairs, recon_statement_settings. Writes
-- m_groups (a party's still-open lines of one currency and close day, two or more),
-- m_group_pairs (group identity, entry) where an open entry equals a group's sum
-- within the window, uniquely both ways, and m_group_lines (the lines of those).
CREATE OR REPLACE TEMP TABLE m_groups AS
SELECT party_id, currency, expected_date, sum(amount) AS total,
       'payout:' || array_to_string(list_sort(list(line_key)), '+') AS identity,
       list(line_key) AS line_keys
FROM m_open_lines ANTI JOIN m_pairs USING (line_key)
GROUP BY party_id, currency, expected_date
HAVING count(*) >= 2;
CREATE OR REPLACE TEMP TABLE m_group_pairs AS
WITH candidates AS (
    SELECT g.identity, e.statement_id, e.entry_id
    FROM m_groups AS g
    JOIN (SELECT * FROM m_open_entries ANTI JOIN m_pairs USING (statement_id, entry_id)) AS e
      ON e.currency = g.currency AND e.amount = g.total
    WHERE abs(e.value_date - g.expected_date) <= (SELECT date_window_days FROM recon_statement_settings)
)
SELECT identity, statement_id, entry_id FROM candidates
QUALIFY count(*) OVER (PARTITION BY identity) = 1
    AND count(*) OVER (PARTITION BY statement_id, entry_id) = 1;
CREATE OR REPLACE TEMP TABLE m_group_lines AS
SELECT g.identity, unnest(g.line_keys) AS line_key FROM m_groups AS g SEMI JOIN m_group_pairs USING (identity);
""",
    ),
    (
        "recon tables",
        """
-- Reads every m_ table, recon_statement_settings, statement_entries. Writes
-- recon_statement (one row per item: by reference, by amount and date, by amount
-- group, and what no rule matched; classed and aged) and recon_statement_members
-- (the batches and entries of each item of several batches or several entries; an
-- item of at most one of each names them in its own row).
CREATE OR REPLACE TABLE recon_statement AS
WITH settings AS (SELECT * FROM recon_statement_settings),
simple AS (  -- one batch, one entry: the entry's row carries the batch's figures
    SELECT * FROM m_resolved ANTI JOIN m_several USING (group_key) WHERE size = 1
),
grouped AS (  -- a batch in several entries, or a combined key
    SELECT * FROM m_resolved SEMI JOIN m_several USING (group_key) WHERE size = 1
    UNION ALL
    SELECT * FROM m_resolved SEMI JOIN (SELECT DISTINCT group_key FROM m_combined) USING (group_key)
),
grouped_batches AS (
    SELECT group_key, group_key AS batch_id FROM m_several
    UNION ALL SELECT group_key, batch_id FROM m_combined
),
grouped_items AS (
    SELECT e.group_key, e.size, e.currency, e.entries, e.actual, e.booked_at, e.value_date,
           e.statement_id, e.entry_id, b.lines, b.expected, b.expected_at, b.party_id
    FROM (SELECT group_key, any_value(size) AS size, any_value(currency) AS currency,
                 count(*) AS entries, sum(amount) AS actual, min(booked_at) AS booked_at,
                 min(value_date) AS value_date,
                 array_to_string(list_sort(list_distinct(list(statement_id))), '+') AS statement_id,
                 array_to_string(list_sort(list(entry_id)), '+') AS entry_id
          FROM grouped GROUP BY group_key) AS e
    JOIN (SELECT k.group_key, sum(b.lines) AS lines, sum(b.expected) AS expected,
                 min(b.expected_at) AS expected_at,
                 CASE WHEN count(*) = 1 THEN any_value(b.party_id) END AS party_id
          FROM grouped_batches AS k JOIN m_batches AS b USING (batch_id) GROUP BY k.group_key) AS b
      USING (group_key)
),
open_lines AS (
    SELECT * FROM m_open_lines
    ANTI JOIN (SELECT line_key FROM m_pairs UNION ALL SELECT line_key FROM m_group_lines) USING (line_key)
),
open_entries AS (
    SELECT * FROM m_open_entries
    ANTI JOIN (SELECT statement_id, entry_id FROM m_pairs
               UNION ALL SELECT statement_id, entry_id FROM m_group_pairs) USING (statement_id, entry_id)
),
items AS (
    SELECT 'payout:' || group_key AS identity, 'reference' AS rule, group_key AS batch_id, party_id,
           statement_id, entry_id, 1 AS batches, lines, 1 AS entries, currency, expected,
           amount AS actual, expected_at, booked_at, value_date
    FROM simple
    UNION ALL
    SELECT 'payout:' || group_key, CASE WHEN size = 1 THEN 'reference' ELSE 'combined_reference' END,
           group_key, party_id, statement_id, entry_id, size, lines, entries, currency, expected,
           actual, expected_at, booked_at, value_date
    FROM grouped_items
    UNION ALL
    SELECT 'payout:' || x.line_key, 'amount_date', l.batch_id, l.party_id, e.statement_id, e.entry_id,
           1, 1, 1, l.currency, l.amount, e.amount, l.expected_at, e.booked_at, e.value_date
    FROM m_pairs AS x
    JOIN m_open_lines AS l USING (line_key)
    JOIN m_open_entries AS e USING (statement_id, entry_id)
    UNION ALL
    SELECT g.identity, 'amount_group', array_to_string(list_sort(list_distinct(list(l.batch_id))), '+'),
           CASE WHEN min(l.party_id) = max(l.party_id) THEN min(l.party_id) END, any_value(e.statement_id),
           any_value(e.entry_id), count(DISTINCT l.batch_id), count(*), 1, any_value(l.currency),
           sum(l.amount), any_value(e.amount), min(l.expected_at), any_value(e.booked_at),
           any_value(e.value_date)
    FROM m_group_pairs AS g
    JOIN m_group_lines AS k USING (identity)
    JOIN m_open_lines AS l USING (line_key)
    JOIN m_open_entries AS e ON e.statement_id = g.statement_id AND e.entry_id = g.entry_id
    GROUP BY g.identity
    UNION ALL
    SELECT 'payout:' || line_key, NULL, batch_id, party_id, NULL, NULL, 1, 1, 0, currency, amount, 0,
           expected_at, NULL, NULL
    FROM open_lines
    UNION ALL
    SELECT 'entry:' || statement_id || '/' || entry_id, NULL, NULL, NULL, statement_id, entry_id, 0, 0, 1,
           currency, 0, amount, NULL, booked_at, value_date
    FROM open_entries
),
classed AS (
    SELECT i.*,
        CASE
            WHEN i.rule IN ('reference', 'combined_reference') THEN
                CASE WHEN abs(i.actual - i.expected) <= s.tolerance THEN 'matched' ELSE 'amount_mismatch' END
            WHEN i.rule IS NOT NULL THEN 'matched'
            WHEN i.entries = 0 THEN
                CASE WHEN epoch_us(s.as_of) - epoch_us(i.expected_at) <= s.grace_days::BIGINT * 86400000000
                     THEN 'timing' ELSE 'missing_in_statement' END
            ELSE 'unexpected_in_statement'
        END AS class,
        greatest(0, epoch_us(s.as_of) - epoch_us(coalesce(i.expected_at, i.booked_at))) // 86400000000
            AS age_days
    FROM items AS i CROSS JOIN settings AS s
)
SELECT 'r-' || left(md5(identity), 20) AS item_id, class, rule AS match_rule, batch_id, party_id,
       statement_id, entry_id, batches, lines, entries, currency,
       CAST(expected AS DECIMAL(18,6)) AS expected, CAST(actual AS DECIMAL(18,6)) AS actual,
       CAST(actual - expected AS DECIMAL(18,6)) AS difference, expected_at, booked_at, value_date,
       age_days,
       CASE WHEN age_days <= 1 THEN '0-1d' WHEN age_days <= 7 THEN '2-7d'
            WHEN age_days <= 30 THEN '8-30d' ELSE '>30d' END AS age_bucket
FROM classed;
CREATE OR REPLACE TABLE recon_statement_members AS
WITH several_keys AS (
    SELECT group_key FROM m_several UNION ALL SELECT DISTINCT group_key FROM m_combined
),
members AS (
    SELECT 'payout:' || group_key AS identity, group_key AS batch_id, NULL::VARCHAR AS statement_id,
           NULL::VARCHAR AS entry_id
    FROM m_several
    UNION ALL
    SELECT 'payout:' || group_key, batch_id, NULL, NULL FROM m_combined
    UNION ALL
    SELECT 'payout:' || group_key, NULL, statement_id, entry_id
    FROM m_resolved SEMI JOIN several_keys USING (group_key)
    UNION ALL
    SELECT DISTINCT k.identity, l.batch_id, NULL, NULL
    FROM m_group_lines AS k JOIN m_open_lines AS l USING (line_key)
    UNION ALL
    SELECT identity, NULL, statement_id, entry_id FROM m_group_pairs
)
SELECT 'r-' || left(md5(identity), 20) AS item_id, batch_id, statement_id, entry_id FROM members;
""",
    ),
)

# The source of the payout lines in the persistent view recon_payouts: the table
# when the pipeline writes it, else the same stand-in as PAYOUTS_FALLBACK_SQL.
PAYOUTS_SOURCE = "settlement_payouts"
PAYOUTS_SOURCE_FALLBACK = (
    "(SELECT batch_id, payee_id AS party_id, settlement_currency AS currency, payout AS amount "
    "FROM settlement_batches)"
)

VIEWS_SQL = """
-- recon_payouts: the payout lines reconciled, one per (batch, party).
-- Reads: settlement_payouts (or, until the pipeline writes it, settlement_batches),
--   settlement_batches. Returns batch_id, party_id, currency, amount, expected_at
--   (the batch's close) and line_key (the batch id, or batch|party when the batch
--   pays several parties).
-- Empty result: nothing has settled.
CREATE OR REPLACE VIEW recon_payouts AS
SELECT p.batch_id, p.party_id, p.currency, CAST(p.amount AS DECIMAL(18,6)) AS amount,
       coalesce(b.settled_at, b.closed_at) AS expected_at,
       CASE WHEN count(*) OVER (PARTITION BY p.batch_id) = 1 THEN p.batch_id
            ELSE p.batch_id || '|' || p.party_id END AS line_key
FROM {payouts} AS p LEFT JOIN settlement_batches AS b USING (batch_id);

-- recon_breaks: the items that are not matched.
-- Reads: recon_statement. Returns its rows whose class is not 'matched'.
-- Empty result: the statements agree with the payouts.
CREATE OR REPLACE VIEW recon_breaks AS
SELECT * FROM recon_statement WHERE class <> 'matched';

-- recon_aging: breaks per class, age bucket and currency.
-- Reads: recon_breaks. Returns items, net (sum of differences), gross (sum of
--   absolute differences) and the oldest age in days. Currencies are never added up.
-- Empty result: no breaks.
CREATE OR REPLACE VIEW recon_aging AS
SELECT class, age_bucket, currency, count(*) AS items, sum(difference) AS net,
       sum(abs(difference)) AS gross, max(age_days) AS oldest_days
FROM recon_breaks
GROUP BY class, age_bucket, currency;

-- recon_item_batches, recon_item_entries: every (item, batch) and (item, entry) pair,
-- from the item's own row or, for an item of several, from recon_statement_members.
-- Reads: recon_statement, recon_statement_members.
CREATE OR REPLACE VIEW recon_item_batches AS
SELECT item_id, batch_id FROM recon_statement
WHERE batch_id IS NOT NULL AND batches = 1 AND entries <= 1
UNION ALL
SELECT item_id, batch_id FROM recon_statement_members WHERE batch_id IS NOT NULL;
CREATE OR REPLACE VIEW recon_item_entries AS
SELECT item_id, statement_id, entry_id FROM recon_statement
WHERE entries = 1 AND batches <= 1
UNION ALL
SELECT item_id, statement_id, entry_id FROM recon_statement_members WHERE entry_id IS NOT NULL;

-- recon_payout_lineage: everything behind a payout, one row per node, in one query:
--   SELECT * FROM recon_payout_lineage WHERE batch_id = ? ORDER BY step, node_time, node_id
-- Reads: recon_payouts, settlement_batches, payments, ledger_entries, recon_statement,
--   recon_item_batches, recon_item_entries, statement_entries.
-- Returns: batch_id, party_id, step (1 payout line, 2 batch, 3 event with its risk
--   decision and score, 4 ledger entry, 5 statement entry, 6 reconciliation item),
--   node, node_id, node_time, currency, amount, decision, risk_score, detail.
-- Empty result for a batch id: no such batch.
CREATE OR REPLACE VIEW recon_payout_lineage AS
SELECT batch_id, party_id, 1 AS step, 'payout' AS node, line_key AS node_id, expected_at AS node_time,
       currency, amount, NULL::VARCHAR AS decision, NULL::DOUBLE AS risk_score,
       NULL::VARCHAR AS detail
FROM recon_payouts
UNION ALL
SELECT batch_id, payee_id, 2, 'batch', batch_id, coalesce(settled_at, closed_at), settlement_currency, payout, NULL, NULL,
       'window ' || strftime(window_start AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') || ' to '
       || strftime(window_end AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') || ', ' || event_count || ' events, net '
       || net || ' ' || currency
FROM settlement_batches
UNION ALL
SELECT batch_id, payee_id, 3, 'event', event_id, occurred_at, currency, amount, decision, risk_score,
       type || CASE WHEN late THEN ', late' ELSE '' END
FROM payments WHERE batch_id IS NOT NULL
UNION ALL
SELECT batch_id, NULL, 4, 'ledger_entry', entry_id, posted_at, currency, amount, NULL, NULL,
       kind || ' ' || account
FROM ledger_entries
UNION ALL
SELECT b.batch_id, NULL, 5, 'statement_entry', e.statement_id || '/' || e.entry_id, e.booked_at,
       e.currency, e.amount, NULL, NULL, coalesce('reference ' || e.reference, 'no reference')
FROM recon_item_batches AS b
JOIN recon_item_entries AS i USING (item_id)
JOIN statement_entries AS e USING (statement_id, entry_id)
UNION ALL
SELECT b.batch_id, NULL, 6, 'recon_item', r.item_id, r.expected_at, r.currency, r.difference, NULL,
       NULL, r.class || coalesce(' by ' || r.match_rule, '') || ', age ' || r.age_bucket
FROM recon_item_batches AS b JOIN recon_statement AS r USING (item_id);
"""

CHECK_SQL = """
-- Reads the m_ tables, settlement_payouts, statement_entries, recon_statement and
-- recon_statement_members. Returns one row of counts, each of which must be zero:
-- the input is sound (every line's batch exists, one currency per batch), and every
-- payout line and entry is in exactly one item (counted and summed), each item
-- under its own id.
SELECT
    (SELECT count(*) FROM m_batches WHERE expected_at IS NULL) AS batches_not_in_settlement_batches,
    (SELECT count(*) FROM m_batches WHERE currency <> currency_max) AS batches_in_two_currencies,
    (SELECT count(*) FROM (SELECT batch_id, party_id FROM settlement_payouts
                           SEMI JOIN (SELECT batch_id FROM m_batches WHERE lines > 1) USING (batch_id)
                           GROUP BY ALL HAVING count(*) > 1)) AS party_lines_repeated,
    (SELECT count(*) FROM (SELECT batch_id FROM m_ref_batches GROUP BY batch_id HAVING count(*) > 1))
        AS batches_in_two_keys,
    (SELECT count(*) FROM (SELECT line_key FROM m_pairs GROUP BY ALL HAVING count(*) > 1))
        + (SELECT count(*) FROM (SELECT statement_id, entry_id FROM m_pairs GROUP BY ALL
                                 HAVING count(*) > 1)) AS pairs_repeated,
    (SELECT count(*) FROM (SELECT line_key FROM m_group_lines GROUP BY ALL HAVING count(*) > 1))
        AS group_lines_repeated,
    (SELECT count(*) FROM statement_entries)
        - (SELECT coalesce(sum(entries), 0) FROM recon_statement) AS entries_not_in_one_item,
    CASE WHEN (SELECT coalesce(sum(amount), 0) FROM statement_entries)
              = (SELECT coalesce(sum(actual), 0) FROM recon_statement) THEN 0 ELSE 1 END
        AS entry_amounts_differ,
    (SELECT coalesce(sum(lines), 0) FROM m_batches SEMI JOIN m_ref_batches USING (batch_id))
        + (SELECT count(*) FROM m_open_lines)
        - (SELECT coalesce(sum(lines), 0) FROM recon_statement) AS lines_not_in_one_item,
    CASE WHEN (SELECT coalesce(sum(amount), 0) FROM settlement_payouts)
              = (SELECT coalesce(sum(expected), 0) FROM recon_statement) THEN 0 ELSE 1 END
        AS line_amounts_differ,
    (SELECT count(*) - count(DISTINCT item_id) FROM recon_statement) AS item_id_collisions,
    (SELECT count(*) FROM recon_statement_members ANTI JOIN recon_statement USING (item_id))
        AS members_without_item
"""


@dataclass(frozen=True, slots=True)
class AgingRow:
    """One row of ``recon_aging``: breaks of one class, age bucket and currency."""

    class_: str
    age_bucket: str
    currency: str
    items: int
    net: Decimal
    gross: Decimal


@dataclass(frozen=True, slots=True)
class MatchSummary:
    """What `reconcile` found: item counts per class and the aging of the breaks."""

    database: str
    as_of: datetime
    grace_days: int
    date_window_days: int
    tolerance: Decimal
    payout_lines: int
    statement_entries: int
    classes: dict[str, int] = field(default_factory=dict)
    aging: tuple[AgingRow, ...] = ()
    rounds: int = 0  # rounds of rule 2 that paired something

    def count(self, class_: str) -> int:
        """Items of one class (0 if none)."""
        return self.classes.get(class_, 0)

    @property
    def breaks(self) -> int:
        """Items that are not matched."""
        return sum(count for name, count in self.classes.items() if name != "matched")


def ensure_payouts(connection: duckdb.DuckDBPyConnection) -> bool:
    """Make ``settlement_payouts`` readable; True if it is the stand-in from the batches."""
    found = connection.execute(
        """SELECT (SELECT count(*) FROM duckdb_tables() WHERE table_name = 'settlement_payouts')
                + (SELECT count(*) FROM duckdb_views() WHERE view_name = 'settlement_payouts')"""
    ).fetchall()[0][0]
    if found:
        return False
    has_batches = connection.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'settlement_batches'"
    ).fetchall()[0][0]
    if not has_batches:
        raise ConfigError(
            "the database has neither settlement_payouts nor settlement_batches: "
            "run `centflow run --out DIR` first"
        )
    connection.execute(PAYOUTS_FALLBACK_SQL)
    return True


def reconcile(
    db_path: Path | str,
    as_of: datetime,
    grace_days: int = GRACE_DAYS_DEFAULT,
    date_window_days: int = DATE_WINDOW_DAYS_DEFAULT,
    tolerance: Decimal = Decimal(0),
) -> MatchSummary:
    """Match the payouts of `db_path` against its statement entries; (re)write the recon tables.

    `as_of` (timezone-aware) is the moment ages and the grace period are measured
    from; it is a parameter, not the clock, so the same data and `as_of` give the
    same tables.
    """
    _check_settings(as_of, grace_days, date_window_days, tolerance)
    connection = duckdb.connect(str(db_path))
    try:
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute("SET enable_progress_bar = false")
        connection.execute("BEGIN TRANSACTION")
        try:
            rounds = _match(connection, as_of, grace_days, date_window_days, tolerance)
            summary = _summary(connection, str(db_path), rounds)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return summary
    finally:
        connection.close()


def _check_settings(
    as_of: datetime, grace_days: int, date_window_days: int, tolerance: Decimal
) -> None:
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ConfigError(f"as_of {as_of.isoformat()} has no time zone: give an aware datetime")
    if not 0 <= grace_days <= GRACE_DAYS_MAX:
        raise ConfigError(f"grace_days {grace_days} is out of range 0..{GRACE_DAYS_MAX}")
    if not 0 <= date_window_days <= DATE_WINDOW_DAYS_MAX:
        raise ConfigError(
            f"date_window_days {date_window_days} is out of range 0..{DATE_WINDOW_DAYS_MAX}"
        )
    if not isinstance(tolerance, Decimal) or not tolerance.is_finite() or tolerance < 0:
        raise ConfigError(f"tolerance {tolerance!r} must be a Decimal >= 0 (never a float)")


def _match(
    connection: duckdb.DuckDBPyConnection,
    as_of: datetime,
    grace_days: int,
    date_window_days: int,
    tolerance: Decimal,
) -> int:
    """Inside the transaction: every step, the rounds, the checks; return the rounds used."""
    ensure_statement_tables(connection)
    stand_in = ensure_payouts(connection)
    connection.execute(SETTINGS_SQL, [as_of, grace_days, date_window_days, tolerance])
    for _, sql in STEPS:
        connection.execute(sql)
    rounds = 0
    while rounds < ROUNDS_MAX:
        before = connection.execute("SELECT count(*) FROM m_pairs").fetchall()[0][0]
        connection.execute(ROUND_SQL)
        after = connection.execute("SELECT count(*) FROM m_pairs").fetchall()[0][0]
        if after == before:
            break
        rounds += 1
    for _, sql in FINISH_STEPS:
        connection.execute(sql)
    _check(connection)
    # A table name chosen here, never a value: the persistent view cannot read the
    # temporary stand-in, so it reads what the stand-in reads.
    connection.execute(
        VIEWS_SQL.format(payouts=PAYOUTS_SOURCE_FALLBACK if stand_in else PAYOUTS_SOURCE)
    )
    return rounds


def _check(connection: duckdb.DuckDBPyConnection) -> None:
    """What was written: every line and entry in exactly one item, one currency each."""
    cursor = connection.execute(CHECK_SQL)
    names = [column[0] for column in cursor.description]
    counts = cursor.fetchall()[0]
    for name, count in zip(names, counts, strict=True):
        if name == "batches_not_in_settlement_batches" and count:
            raise ConfigError(
                f"{count} settlement_payouts line(s) name a batch missing from settlement_batches"
            )
        invariant(count == 0, "reconciliation: %s = %s", name, count)


def _summary(connection: duckdb.DuckDBPyConnection, database: str, rounds: int) -> MatchSummary:
    """Read the figures back from the tables just written."""
    as_of, grace_days, window_days, tolerance = connection.execute(
        "SELECT * FROM recon_statement_settings"
    ).fetchall()[0]
    classes = dict(
        connection.execute(
            "SELECT class, count(*) FROM recon_statement GROUP BY class ORDER BY class"
        ).fetchall()
    )
    aging = tuple(
        AgingRow(*row)
        for row in connection.execute(
            "SELECT class, age_bucket, currency, items, net, gross FROM recon_aging ORDER BY ALL"
        ).fetchall()
    )
    lines, entries = connection.execute(
        "SELECT (SELECT coalesce(sum(lines), 0) FROM m_batches), (SELECT count(*) FROM statement_entries)"
    ).fetchall()[0]
    invariant(set(classes) <= set(CLASSES), "unknown reconciliation class in %s", sorted(classes))
    return MatchSummary(
        database,
        as_of,
        int(grace_days),
        int(window_days),
        tolerance,
        int(lines),
        int(entries),
        {name: int(count) for name, count in classes.items()},
        aging,
        rounds,
    )
