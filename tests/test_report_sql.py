"""Differential tests of the HTML report's queries (``centflow/recon/queries/report_*.sql``).

Each query runs in an in-memory DuckDB loaded as in `tests.test_recon_sql`
(same `scenarios()`, same `load()`), and must return exactly the rows, in its
ORDER BY order, that a short Python twin below computes from the same rows:
money as exact Decimals, counts as ints, times as µs since the epoch.

The scenarios here add what the report needs beyond the summary checks:

* times spread over days (events' ``occurred_at``, batch windows of several
  lengths), so bucketing by the report's steps and the spans mean something;
* imported ``statement_entries`` (credits, debits and zero amounts);
* when a statement was matched: ``recon_statement`` rows written directly
  (every class, age bucket and sign of difference, ties in age and size) with
  ``recon_statement_settings`` and the production views over them
  (`centflow.recon.matching.VIEWS_SQL`, so ``recon_breaks`` and ``recon_aging``
  are the real ones). Matching itself has its own twin in
  tests/test_recon_matching.py; the report only reads what it wrote;
* the parameters `centflow.recon.report_data.gather` passes (a bucket length,
  a row limit), drawn.
"""

from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from centflow.limits import AMOUNT_MICROS_MAX
from centflow.recon.matching import (
    AGE_BUCKETS,
    CLASSES,
    PAYOUTS_SOURCE,
    RULES,
    SETTINGS_SQL,
    VIEWS_SQL,
    reconcile,
)
from centflow.recon.report import QUERIES_DIR, query
from centflow.recon.report_data import BREAK_ITEMS_MAX, BUCKET_STEPS_S
from centflow.recon.statements import ensure_statement_tables
from centflow.recon.tables import TABLES
from sinks.duckdb import create_schema
from tests.test_recon_sql import (
    BATCH_IDS,
    CURRENCIES,
    EPOCH,
    MINUTE_US,
    Tables,
    dec,
    load,
    scenarios,
    twin_ledger_balance,
    twin_payee_conservation,
    twin_unit_economics,
)

HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
#: Column positions in the `Tables` rows (the order of `centflow.recon.tables.TABLES`).
BATCH = {name: index for index, (name, _) in enumerate(TABLES["settlement_batches"])}
PAYMENT = {name: index for index, (name, _) in enumerate(TABLES["payments"])}
#: The queries that read what matching wrote; gather runs them only once it has.
STATEMENT_QUERIES = {"report_aging", "report_break_items", "report_breaks", "report_settings"}


@dataclass
class Report:
    """The loaded tables, the statement side, and the queries' parameters.

    ``entries``: statement_entries rows (statement_id, entry_id, booked_us,
    value_date, currency, amount micros, reference). ``items``: recon_statement
    rows in its column order (money as int micros, times as µs), or None when
    no statement was matched (then the recon_statement tables do not exist).
    ``matching``: (as_of µs, grace_days, date_window_days, tolerance micros).
    """

    tables: Tables
    entries: list[tuple]
    items: list[tuple] | None
    matching: tuple[int, int, int, int]
    step_us: int
    limit: int


def moment(micros: int | None) -> datetime | None:
    return None if micros is None else EPOCH + timedelta(microseconds=micros)


def age_bucket(age_days: int) -> str:
    """As the matching SQL names it (a twin of its CASE, not a call into it)."""
    return AGE_BUCKETS[(age_days > 1) + (age_days > 7) + (age_days > 30)]


# Strategy ---------------------------------------------------------------------

times = st.one_of(
    st.integers(0, 3 * DAY_US), st.sampled_from([0, HOUR_US - 1, HOUR_US, DAY_US, 2 * DAY_US])
)
signed_money = st.one_of(
    st.integers(-AMOUNT_MICROS_MAX, AMOUNT_MICROS_MAX),
    st.sampled_from([0, 1, -1, 1_000_000, -1_000_000, AMOUNT_MICROS_MAX, -AMOUNT_MICROS_MAX]),
)
payout_money = st.one_of(  # few values, so differences tie (and tie with opposite signs)
    st.integers(0, AMOUNT_MICROS_MAX), st.sampled_from([0, 1_000_000, 2_000_000])
)
ages = st.one_of(st.integers(0, 45), st.sampled_from([0, 1, 2, 7, 8, 30, 31]))
maybe_time = st.none() | times.map(lambda offset: BASE_US + offset)


@st.composite
def reports(draw: st.DrawFn) -> Report:
    tables = draw(scenarios())
    base = draw(st.sampled_from([0, BASE_US]))
    # Events over days, batch windows of several lengths (the summary scenarios
    # put everything in the first minutes, with one window length).
    occurred = PAYMENT["occurred_at"]
    tables.payments = [
        (*row[:occurred], base + draw(times), *row[occurred + 1 :]) for row in tables.payments
    ]
    retimed = []
    for row in tables.settlement_batches:
        start = base + draw(times)
        end = start + draw(st.sampled_from([1, MINUTE_US, 15 * MINUTE_US, HOUR_US, DAY_US]))
        columns = list(row)
        columns[BATCH["window_start"]], columns[BATCH["window_end"]] = start, end
        columns[BATCH["closed_at"]] = end
        retimed.append(tuple(columns))
    tables.settlement_batches = retimed
    entries = draw(
        st.lists(
            st.tuples(
                st.sampled_from(("st-1", "st-2")),
                st.sampled_from(("e1", "e2", "e3", "e4")),
                times.map(lambda offset: BASE_US + offset),
                st.dates(date(2025, 12, 25), date(2026, 1, 10)),
                st.sampled_from(CURRENCIES),
                signed_money,
                st.none() | st.sampled_from(BATCH_IDS),
            ),
            max_size=6,
            unique_by=lambda entry: entry[:2],
        )
    )
    items = None
    if draw(st.integers(0, 3)):  # most scenarios were matched
        specs = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(CLASSES),
                    st.none() | st.sampled_from(RULES),
                    st.none() | st.sampled_from(BATCH_IDS),
                    st.none() | st.just("payee-1"),
                    st.none() | st.sampled_from(("st-1", "st-2")),
                    st.none() | st.sampled_from(("e1", "e2")),
                    st.integers(0, 2),
                    st.integers(0, 2),
                    st.integers(0, 2),
                    st.sampled_from(CURRENCIES),
                    payout_money,
                    payout_money,
                    maybe_time,
                    maybe_time,
                    st.none() | st.dates(date(2025, 12, 25), date(2026, 1, 10)),
                    ages,
                ),
                max_size=8,
            )
        )
        ids = draw(
            st.lists(
                st.integers(0, 16**20 - 1), min_size=len(specs), max_size=len(specs), unique=True
            )
        )
        items = [
            (f"r-{number:020x}", *spec[:12], spec[11] - spec[10], *spec[12:], age_bucket(spec[15]))
            for number, spec in zip(ids, specs, strict=True)
        ]
    matching = (
        BASE_US + draw(times),
        draw(st.integers(0, 366)),
        draw(st.integers(0, 31)),
        draw(st.integers(0, AMOUNT_MICROS_MAX)),
    )
    step = draw(
        st.one_of(
            st.sampled_from([s * 1_000_000 for s in BUCKET_STEPS_S]), st.integers(1, 2 * DAY_US)
        )
    )
    limit = draw(st.integers(0, 9) | st.just(BREAK_ITEMS_MAX + 1))
    return Report(tables, entries, items, matching, step, limit)


# Python twins -----------------------------------------------------------------


def twin_report_volume(report: Report) -> list[tuple]:
    """(currency, bucket_us, batches, gross) by batch currency and window_start bucket."""
    step = report.step_us
    sums: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    currency, start, gross = BATCH["currency"], BATCH["window_start"], BATCH["gross"]
    for row in report.tables.settlement_batches:
        figures = sums[(row[currency], row[start] // step * step)]
        figures[0] += 1
        figures[1] += row[gross]
    return sorted((*key, count, dec(gross)) for key, (count, gross) in sums.items())


def twin_report_decisions(report: Report) -> list[tuple]:
    """(bucket_us, decision, events) by occurred_at bucket and decision."""
    step = report.step_us
    occurred, decision = PAYMENT["occurred_at"], PAYMENT["decision"]
    counts = Counter(
        (row[occurred] // step * step, row[decision]) for row in report.tables.payments
    )
    return sorted((*key, count) for key, count in counts.items())


def twin_report_spans(report: Report) -> list[tuple]:
    batches, payments = report.tables.settlement_batches, report.tables.payments
    start, end = BATCH["window_start"], BATCH["window_end"]
    starts = [row[start] for row in batches]
    lengths = [row[end] - row[start] for row in batches]
    occurred = [row[PAYMENT["occurred_at"]] for row in payments]
    return [
        (
            min(starts, default=None),
            max(starts, default=None),
            min(lengths, default=None),
            min(occurred, default=None),
            max(occurred, default=None),
        )
    ]


def twin_report_ledger(report: Report) -> list[tuple]:
    return sorted((currency, *row) for currency, row in twin_ledger_balance(report.tables).items())


def twin_report_conservation(report: Report) -> list[tuple]:
    """(currency, settlement_currency, payees, payees_unbalanced, accrued, fees, paid_out,
    carried)."""
    by_pair: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for (_, currency), row in twin_payee_conservation(report.tables).items():
        by_pair[(currency, row[5])].append(row)
    return [
        (
            currency,
            target,
            len(rows),
            sum(not row[4] for row in rows),
            *(sum((row[column] for row in rows), Decimal(0)) for column in range(4)),
        )
        for (currency, target), rows in sorted(by_pair.items())
    ]


def twin_report_economics(report: Report) -> list[tuple]:
    """(currency, rail, payments, batches, fees_if_alone, fees_netted, saving, saving_share,
    margin, share_unpayable_alone), by currency then rail."""
    rows = []
    for (rail, currency), figures in twin_unit_economics(report.tables).items():
        payments, batches, _, alone, netted, saving, share, _, margin, unpayable = figures
        rows.append(
            (currency, rail, payments, batches, alone, netted, saving, share, margin, unpayable)
        )
    return sorted(rows, key=lambda row: row[:2])


def twin_report_statement(report: Report) -> list[tuple]:
    return [(0 if report.items is None else 2,)]


def twin_report_statement_entries(report: Report) -> list[tuple]:
    """(currency, entries, credits, debits): credits the positive amounts, debits the negative."""
    amounts: dict[str, list[int]] = defaultdict(list)
    for entry in report.entries:
        amounts[entry[4]].append(entry[5])
    return [
        (
            currency,
            len(values),
            dec(sum(a for a in values if a > 0)),
            dec(sum(a for a in values if a < 0)),
        )
        for currency, values in sorted(amounts.items())
    ]


def twin_report_settings(report: Report) -> list[tuple]:
    as_of_us, grace_days, window_days, tolerance = report.matching
    return [(as_of_us, grace_days, window_days, dec(tolerance))]


def twin_report_breaks(report: Report) -> list[tuple]:
    """(class, age_bucket, items) over every item, matched ones included."""
    assert report.items is not None
    counts = Counter((item[1], item[18]) for item in report.items)
    return sorted((*key, count) for key, count in counts.items())


def breaks(report: Report) -> list[tuple]:
    assert report.items is not None
    return [item for item in report.items if item[1] != "matched"]


def twin_report_aging(report: Report) -> list[tuple]:
    """(class, age_bucket, currency, items, net, gross, oldest_days) over the breaks."""
    groups: dict[tuple[str, str, str], list[tuple]] = defaultdict(list)
    for item in breaks(report):
        groups[(item[1], item[18], item[10])].append(item)
    return [
        (
            *key,
            len(rows),
            dec(sum(item[13] for item in rows)),
            dec(sum(abs(item[13]) for item in rows)),
            max(item[17] for item in rows),
        )
        for key, rows in sorted(groups.items())
    ]


def twin_report_break_items(report: Report) -> list[tuple]:
    """The breaks, oldest first, then the largest absolute difference, then item_id; at
    most `limit` of them."""
    ordered = sorted(breaks(report), key=lambda item: (-item[17], -abs(item[13]), item[0]))
    return [
        (*item[:2], item[3], *item[5:7], item[10], *map(dec, item[11:14]), item[17], item[18])
        for item in ordered[: report.limit]
    ]


TWINS: dict[str, Callable[[Report], list[tuple]]] = {
    name.removeprefix("twin_"): function
    for name, function in globals().items()
    if name.startswith("twin_report_")
}


def parameters(name: str, report: Report) -> list[object]:
    """What `centflow.recon.report_data.gather` passes to the query `name`."""
    if name in {"report_volume", "report_decisions"}:
        return [report.step_us, report.step_us]
    if name == "report_break_items":
        return [report.limit]
    return []


# Running the SQL --------------------------------------------------------------


def test_every_report_query_has_a_twin() -> None:
    """A new report query fails here until it gets its twin above."""
    assert {path.stem for path in QUERIES_DIR.glob("report_*.sql")} == set(TWINS)
    assert set(TWINS) >= STATEMENT_QUERIES


@cache
def matched_tables_sql() -> str:
    """CREATE TABLE statements for recon_statement and recon_statement_members, with the
    columns matching gives them (read once from a database where it ran)."""
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "matched.duckdb"
        with duckdb.connect(str(database)) as db:
            create_schema(db)
        reconcile(database, EPOCH + timedelta(microseconds=BASE_US))
        with duckdb.connect(str(database), read_only=True) as db:
            rows = db.execute(
                "SELECT sql FROM duckdb_tables() WHERE table_name IN "
                "('recon_statement', 'recon_statement_members') ORDER BY table_name"
            ).fetchall()
    assert len(rows) == 2
    return "\n".join(sql for (sql,) in rows)


def load_report(report: Report) -> duckdb.DuckDBPyConnection:
    db = load(report.tables)
    db.execute("SET TimeZone = 'UTC'")  # as gather reads
    ensure_statement_tables(db)
    if report.entries:
        db.executemany(
            "INSERT INTO statement_entries VALUES (?, ?, ?, ?, ?, ?, ?, 'test')",
            [(*e[:2], moment(e[2]), e[3], e[4], dec(e[5]), e[6]) for e in report.entries],
        )
    if report.items is not None:
        as_of_us, grace_days, window_days, tolerance = report.matching
        db.execute(SETTINGS_SQL, [moment(as_of_us), grace_days, window_days, dec(tolerance)])
        db.execute(matched_tables_sql())
        if report.items:
            db.executemany(
                f"INSERT INTO recon_statement VALUES ({', '.join('?' * 19)})",
                [
                    (*item[:11], *map(dec, item[11:14]), *map(moment, item[14:16]), *item[16:])
                    for item in report.items
                ],
            )
        db.execute(VIEWS_SQL.format(payouts=PAYOUTS_SOURCE))
    return db


def types(rows: list[tuple]) -> list[tuple]:
    return [tuple(type(value).__name__ for value in row) for row in rows]


def compare_report(report: Report) -> None:
    with load_report(report) as db:
        for name, twin in sorted(TWINS.items()):
            if name in STATEMENT_QUERIES and report.items is None:
                continue  # the tables it reads exist only once matching has run
            got = db.execute(query(name), parameters(name, report)).fetchall()
            want = twin(report)
            assert got == want, name
            assert types(got) == types(want), name  # Decimal money, int counts, never floats


@settings(max_examples=80, deadline=None)
@given(reports())
def test_report_sql_matches_twins(report: Report) -> None:
    compare_report(report)
