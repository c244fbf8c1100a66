"""What the HTML report shows (`centflow.recon.html`), read from a run's DuckDB file.

`gather` opens the file read-only, runs ``centflow/recon/queries/report_*.sql``
(and, through `centflow.recon.report.summarize`, the terminal report's
queries) and returns plain data: amounts stay ``Decimal``, times stay µs since
the epoch, and every query is sorted, so the same data gives equal values.
It writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb

from centflow.errors import invariant
from centflow.limits import MICROS_PER_SECOND
from centflow.recon.report import Summary, query, summarize

#: Bucket lengths a time axis may use (seconds), shortest first; the first that
#: is at least the axis's floor and needs at most BUCKETS_MAX buckets is taken.
BUCKET_STEPS_S = (60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400)
BUCKETS_MAX = 96
BREAK_ITEMS_MAX = 50  # breaks listed one by one (one more is read, to tell there are more)


@dataclass(frozen=True, slots=True)
class StatementData:
    """What matching left (`centflow.recon.matching`), for the break charts and tables."""

    as_of_us: int
    grace_days: int
    date_window_days: int
    tolerance: Decimal
    items: tuple[tuple[str, str, int], ...]  # (class, age_bucket, items)
    aging: tuple[tuple, ...]
    break_items: tuple[tuple, ...]
    entries: tuple[tuple, ...]


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows, read in one read-only connection (and `summarize`)."""

    summary: Summary
    volume_step_us: int
    volume: tuple[tuple[str, int, int, Decimal], ...]  # (currency, bucket_us, batches, gross)
    decision_step_us: int
    decisions: tuple[tuple[int, str, int], ...]  # (bucket_us, decision, events)
    ledger: tuple[tuple, ...]
    conservation: tuple[tuple, ...]
    economics: tuple[tuple, ...]
    statement: StatementData | None


def bucket_us(first_us: int, last_us: int, floor_us: int) -> int:
    """The bucket length for a time axis from `first_us` to `last_us`: the shortest of
    `BUCKET_STEPS_S` (or `floor_us` itself) at least `floor_us` long that needs at most
    `BUCKETS_MAX` buckets; beyond them, whole days.

    >>> hour = 3600 * 1_000_000
    >>> bucket_us(0, 2 * hour, hour) // 1_000_000, bucket_us(0, hour, 60_000_000) // 1_000_000
    (3600, 60)
    >>> bucket_us(0, 2 * hour, 60_000_000) // 1_000_000  # 121 minutes are too many
    300
    >>> bucket_us(0, 200 * hour, 60_000_000) // hour
    6
    """
    invariant(last_us >= first_us and floor_us > 0, "bucket of %s..%s", first_us, last_us)
    steps = sorted(
        {
            floor_us,
            *(s * MICROS_PER_SECOND for s in BUCKET_STEPS_S if s * MICROS_PER_SECOND >= floor_us),
        }
    )
    for step in steps:
        if last_us // step - first_us // step + 1 <= BUCKETS_MAX:
            return step
    day = 86_400 * MICROS_PER_SECOND
    return day * -(-(last_us - first_us) // (day * (BUCKETS_MAX - 1)))


def gather(database: Path) -> ReportData:
    """Read what the page shows from `database` (read-only)."""
    summary = summarize(database)  # refuses a missing database in one line
    connection = duckdb.connect(str(database), read_only=True)
    try:
        connection.execute("SET TimeZone = 'UTC'")
        spans = connection.execute(query("report_spans")).fetchall()[0]
        windows_first, windows_last, window_length, events_first, events_last = spans
        volume_step = bucket_us(
            windows_first or 0, windows_last or 0, window_length or 3_600_000_000
        )
        decision_step = bucket_us(events_first or 0, events_last or 0, 3_600 * MICROS_PER_SECOND)

        def rows(name: str, *parameters: object) -> tuple[tuple, ...]:
            return tuple(connection.execute(query(name), list(parameters)).fetchall())

        return ReportData(
            summary,
            volume_step,
            rows("report_volume", volume_step, volume_step),
            decision_step,
            rows("report_decisions", decision_step, decision_step),
            rows("report_ledger"),
            rows("report_conservation"),
            rows("report_economics"),
            _statement(rows) if rows("report_statement")[0][0] == 2 else None,
        )
    finally:
        connection.close()


def _statement(rows: Callable[..., tuple[tuple, ...]]) -> StatementData:
    settings = rows("report_settings")
    invariant(len(settings) == 1, "recon_statement_settings holds %s rows", len(settings))
    as_of_us, grace_days, window_days, tolerance = settings[0]
    return StatementData(
        int(as_of_us),
        int(grace_days),
        int(window_days),
        tolerance,
        tuple(
            (str(name), str(bucket), int(count)) for name, bucket, count in rows("report_breaks")
        ),
        rows("report_aging"),
        rows("report_break_items", BREAK_ITEMS_MAX + 1),
        rows("report_statement_entries"),
    )
