"""Benchmark of statement matching: N payouts against ~N statement entries.

``python -m centflow.ops.bench_recon --payouts 1000000`` builds a DuckDB file
with N settlement batches (one payout line each in ``settlement_payouts``, or
through its stand-in view where the schema has no such table yet) and a statement of about N entries, made in SQL
straight in DuckDB (no statement file: this measures matching, not import),
with breaks of every kind spread through them:

=====  ==========================================================
i % 100  what the entry of batch i is
=====  ==========================================================
1      none (dropped: ``missing_in_statement`` or ``timing``)
2      the payout plus 0.01 (``amount_mismatch``)
3      no reference (matched by amount and date)
4      two identical entries (duplicated: ``amount_mismatch``)
5      two entries, 1 and the payout - 1 (split: matched)
6      one entry for batches i and i + 4 (same currency), reference ``bi+bi+4``
10     (batch i - 4's combined entry covers it)
=====  ==========================================================

plus N / 100 unexpected entries (no batch). Then it times `reconcile` from a
fresh connection (wall time of the matching SQL, the connection's opening
included) against the goal of 10 s for a million, and prints the class
counts so a wrong result cannot pass as a fast one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from centflow.recon.matching import reconcile
from centflow.recon.statements import ensure_statement_tables
from sinks.duckdb import create_schema

GOAL_S = 10.0
GOAL_PAYOUTS = 1_000_000

BATCHES_SQL = """
INSERT INTO settlement_batches
SELECT 'b-' || lpad(CAST(i AS VARCHAR), 12, '0'), 'payee-' || (i % 50000), currency,
       start_at, start_at + INTERVAL 1 HOUR, 0, 10, 0, payout, 0, 0, payout, currency, 1, payout, 0, 0,
       start_at + INTERVAL 65 MINUTE, 'settled', NULL, NULL, start_at + INTERVAL 65 MINUTE
FROM (
    SELECT i, ['USD', 'EUR', 'GBP', 'JPY'][1 + i % 4] AS currency,
           TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_hours(CAST(i // 2000 AS BIGINT)) AS start_at,
           CASE WHEN i % 4 = 3 THEN CAST(1 + hash(i) % 500000 AS DECIMAL(18,6))
                ELSE CAST(CAST(1 + hash(i) % 50000000 AS DECIMAL(18,6)) * 0.01 AS DECIMAL(18,6))
           END AS payout
    FROM range(?) AS t(i)
)
"""

ENTRIES_SQL = """
INSERT INTO statement_entries
WITH b AS (
    SELECT batch_id, CAST(substr(batch_id, 3) AS BIGINT) AS i, currency, payout AS amount,
           CAST(closed_at AS DATE) AS day, closed_at
    FROM settlement_batches
),
lines AS (
    SELECT i, 0 AS part, batch_id AS reference, currency, amount, day, closed_at FROM b
    WHERE i % 100 NOT IN (1, 2, 3, 4, 5, 6, 10)
    UNION ALL SELECT i, 0, batch_id, currency, amount + 0.01, day, closed_at FROM b WHERE i % 100 = 2
    UNION ALL SELECT i, 0, NULL, currency, amount, day, closed_at FROM b WHERE i % 100 = 3
    UNION ALL SELECT i, k, batch_id, currency, amount, day, closed_at
              FROM b, range(2) AS r(k) WHERE i % 100 = 4
    UNION ALL SELECT i, 0, batch_id, currency, amount - 1, day, closed_at FROM b WHERE i % 100 = 5
    UNION ALL SELECT i, 1, batch_id, currency, 1, day, closed_at FROM b WHERE i % 100 = 5
    UNION ALL SELECT b.i, 0, b.batch_id || '+' || c.batch_id, b.currency, b.amount + c.amount, b.day,
              b.closed_at
              FROM b JOIN b AS c ON c.i = b.i + 4 WHERE b.i % 100 = 6
    UNION ALL SELECT i, 0, batch_id, currency, amount, day, closed_at
              FROM b WHERE i % 100 = 6 AND i + 4 NOT IN (SELECT i FROM b)
    UNION ALL SELECT i, 9, 'interest-' || i, currency, CAST(0.37 AS DECIMAL(18,6)), day, closed_at
              FROM b WHERE i % 100 = 50
)
SELECT 'bench-' || currency || '-' || CAST(day AS VARCHAR), 'e' || i || '.' || part,
       closed_at + INTERVAL 1 HOUR, day + CAST(i % 2 AS INTEGER), currency, amount, reference, 'bench'
FROM lines
"""


def build(database: Path, payouts: int) -> int:
    """Make the benchmark database; return the number of statement entries."""
    connection = duckdb.connect(str(database))
    try:
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute("SET enable_progress_bar = false")
        create_schema(connection)
        ensure_statement_tables(connection)
        connection.execute(BATCHES_SQL, [payouts])
        has_payouts = connection.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'settlement_payouts'"
        ).fetchall()[0][0]
        if has_payouts:  # the pipeline's table: one line per batch, for its payee
            connection.execute(
                "INSERT INTO settlement_payouts (batch_id, party_id, currency, amount) "
                "SELECT batch_id, payee_id, settlement_currency, payout FROM settlement_batches"
            )
        connection.execute(ENTRIES_SQL)
        return int(connection.execute("SELECT count(*) FROM statement_entries").fetchall()[0][0])
    finally:
        connection.close()


def measure(payouts: int = GOAL_PAYOUTS, directory: Path | None = None) -> dict[str, Any]:
    """Build the database in a temporary directory (under `directory`), time matching;
    return the figures: payouts, entries, built_s, matched_s, goal_s, rounds, classes."""
    with tempfile.TemporaryDirectory(dir=directory) as folder:
        database = Path(folder) / "bench_recon.duckdb"
        started = time.perf_counter()
        entries = build(database, payouts)
        built_s = time.perf_counter() - started
        started = time.perf_counter()
        summary = reconcile(database, as_of=datetime(2026, 2, 1, tzinfo=UTC))
        matched_s = time.perf_counter() - started
    return {
        "payouts": payouts,
        "entries": entries,
        "built_s": built_s,
        "matched_s": matched_s,
        "goal_s": GOAL_S * payouts / GOAL_PAYOUTS,
        "rounds": summary.rounds,
        "classes": dict(sorted(summary.classes.items())),
    }


def verdict(figures: dict[str, Any]) -> str:
    """One line: the matching time against its goal."""
    met = "met" if figures["matched_s"] <= figures["goal_s"] else "NOT met"
    return (
        f"matching: {figures['matched_s']:.2f} s for {figures['payouts']:,} payouts against "
        f"{figures['entries']:,} entries (goal <= {figures['goal_s']:g} s: {met}); "
        f"{figures['rounds']} amount round(s)"
    )


def main(argv: list[str] | None = None) -> None:
    """Build, time, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payouts", type=int, default=GOAL_PAYOUTS)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the database goes (a temp dir)"
    )
    args = parser.parse_args(argv)
    figures = measure(args.payouts, args.dir)
    print(
        f"built {figures['payouts']:,} payouts and {figures['entries']:,} statement entries "
        f"in {figures['built_s']:.1f} s"
    )
    print(verdict(figures))
    for name, count in figures["classes"].items():
        print(f"  {name:<24} {count:>10,}")


if __name__ == "__main__":
    main()
