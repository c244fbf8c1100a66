"""Statement matching (`centflow.recon.matching`) and the simulator (`centflow.recon.simulate`).

* A pinned scenario names the class, rule, figures and age of every item, one
  case per rule and class, so the SQL and its twin cannot be wrong together.
* Differential tests: `reconcile` on real DuckDB files against `twin`, a short
  pure-Python statement of the documented rules, on hypothesis-generated
  payouts and statement entries. The pools are small on purpose, so that
  references collide (batches paid twice, combined references that overlap),
  amounts repeat (rounds of nearest pairs, group sums) and dates sit on the
  edges of the window and the grace period. Every view is compared:
  ``recon_statement``, ``recon_breaks``, ``recon_aging``, ``recon_item_batches``
  and ``recon_item_entries``.
* The simulator: every injected break found, none invented, on
  hypothesis-generated payouts, in both formats, through the real import.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from centflow.errors import ConfigError
from centflow.recon.matching import ROUNDS_MAX, reconcile
from centflow.recon.simulate import KINDS, simulate_statement
from centflow.recon.statements import ensure_statement_tables, import_statement
from sinks.duckdb import create_schema

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def moment(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def day_of(micros: int) -> date:
    return date(1970, 1, 1) + timedelta(days=micros // DAY_US)


def dec(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6)


@dataclass(frozen=True)
class Line:
    batch_id: str
    party_id: str
    currency: str
    amount: int  # micro-units


@dataclass(frozen=True)
class Entry:
    statement_id: str
    entry_id: str
    booked_us: int
    value_date: date
    currency: str
    amount: int
    reference: str | None


# --------------------------------------------------------------------------- databases


def make_database(
    path: Path,
    closes: dict[str, int],
    lines: list[Line],
    entries: list[Entry],
    payouts_table: bool = True,
) -> Path:
    """A DuckDB file with the pipeline's tables, these batches, payout lines and entries.

    With `payouts_table` false there is no ``settlement_payouts`` and each batch
    pays its one line through the stand-in (so `lines` must hold one per batch).
    """
    connection = duckdb.connect(str(path))
    connection.execute("SET TimeZone = 'UTC'")
    create_schema(connection)
    ensure_statement_tables(connection)
    connection.execute("DROP TABLE IF EXISTS settlement_payouts")
    if payouts_table:
        connection.execute(
            "CREATE TABLE settlement_payouts (batch_id VARCHAR NOT NULL, party_id VARCHAR NOT NULL, "
            "currency VARCHAR NOT NULL, amount DECIMAL(18,6) NOT NULL)"
        )
    if payouts_table and lines:
        connection.executemany(
            "INSERT INTO settlement_payouts VALUES (?, ?, ?, ?)",
            [(line.batch_id, line.party_id, line.currency, dec(line.amount)) for line in lines],
        )
    by_batch = defaultdict(list)
    for line in lines:
        by_batch[line.batch_id].append(line)
    rows = []
    for batch_id, close_us in closes.items():
        first = by_batch[batch_id][0]
        payout = dec(sum(line.amount for line in by_batch[batch_id]))
        rows.append(
            (batch_id, first.party_id, first.currency, moment(close_us - HOUR_US), moment(close_us),
             0, 1, 0, payout, 0, 0, payout, first.currency, 1, payout, 0, 0, moment(close_us))
        )  # fmt: skip
    if rows:
        connection.executemany(
            "INSERT INTO settlement_batches (batch_id, payee_id, currency, window_start, window_end, "
            "part, event_count, late_count, gross, refunds, fees, net, settlement_currency, fx_rate, "
            "payout, carry_in, carry_out, closed_at) VALUES (" + ", ".join("?" * 18) + ")",
            rows,
        )
    if entries:
        connection.executemany(
            "INSERT INTO statement_entries VALUES (?, ?, ?, ?, ?, ?, ?, 'test')",
            [
                (e.statement_id, e.entry_id, moment(e.booked_us), e.value_date, e.currency,
                 dec(e.amount), e.reference)
                for e in entries
            ],
        )  # fmt: skip
    connection.close()
    return path


ITEM_COLUMNS = (
    "item_id, class, match_rule, batch_id, party_id, statement_id, entry_id, batches, lines, "
    "entries, currency, expected, actual, difference, age_days, age_bucket"
)


def query(path: Path, sql: str, parameters: list[object] | None = None) -> list[tuple]:
    connection = duckdb.connect(str(path), read_only=True)
    try:
        return connection.execute(sql, parameters or []).fetchall()
    finally:
        connection.close()


def items(path: Path) -> list[tuple]:
    return query(path, f"SELECT {ITEM_COLUMNS} FROM recon_statement ORDER BY item_id")


# --------------------------------------------------------------------------- the twin


def item_id(identity: str) -> str:
    return "r-" + hashlib.md5(identity.encode()).hexdigest()[:20]


def bucket(age_days: int) -> str:
    return (
        "0-1d"
        if age_days <= 1
        else "2-7d"
        if age_days <= 7
        else "8-30d"
        if age_days <= 30
        else ">30d"
    )


def twin(
    closes: dict[str, int],
    lines: list[Line],
    entries: list[Entry],
    as_of_us: int,
    grace_days: int,
    window_days: int,
    tolerance: int,
) -> tuple[list[tuple], list[tuple[str, str]], list[tuple[str, str, str]]]:
    """The documented rules in Python: (items as ITEM_COLUMNS, item-batch pairs, item-entry pairs)."""
    by_batch: dict[str, list[Line]] = defaultdict(list)
    for line in lines:
        by_batch[line.batch_id].append(line)
    currency = {batch: group[0].currency for batch, group in by_batch.items()}

    def line_key(line: Line) -> str:
        return (
            line.batch_id
            if len(by_batch[line.batch_id]) == 1
            else f"{line.batch_id}|{line.party_id}"
        )

    # 1. by reference
    resolved: dict[Entry, tuple[str, ...]] = {}
    for entry in entries:
        if entry.reference is None:
            continue
        parts = [part.strip(" ") for part in entry.reference.split("+")]
        if len(set(parts)) == len(parts) and all(currency.get(p) == entry.currency for p in parts):
            resolved[entry] = tuple(sorted(parts))
    singles = {key[0] for key in resolved.values() if len(key) == 1}
    combined = {key for key in resolved.values() if len(key) > 1}
    named = Counter(batch for key in combined for batch in key)
    contested = {k for k in combined if any(named[b] > 1 or b in singles for b in k)}
    keys = {key for key in resolved.values() if key not in contested}
    rows: list[tuple] = []
    item_batches: list[tuple[str, str]] = []
    item_entries: list[tuple[str, str, str]] = []

    def add(identity, rule, batch_lines, paid, cls_if_any=None):
        expected = sum(line.amount for line in batch_lines)
        actual = sum(entry.amount for entry in paid)
        batches = sorted({line.batch_id for line in batch_lines})
        times = [closes[b] for b in batches] or [min(entry.booked_us for entry in paid)]
        age = max(0, as_of_us - min(times)) // DAY_US
        if rule in ("reference", "combined_reference"):
            cls = "matched" if abs(actual - expected) <= tolerance else "amount_mismatch"
        elif rule is not None:
            cls = "matched"
        elif not paid:
            cls = (
                "timing" if as_of_us - min(times) <= grace_days * DAY_US else "missing_in_statement"
            )
        else:
            cls = "unexpected_in_statement"
        parties = {line.party_id for line in batch_lines}
        party = parties.pop() if len(parties) == 1 and len(batch_lines) == 1 else None
        if rule == "amount_group":
            party = batch_lines[0].party_id
        statements = sorted({entry.statement_id for entry in paid})
        the_id = item_id(identity)
        rows.append(
            (the_id, cls, rule, "+".join(batches) or None, party, "+".join(statements) or None,
             "+".join(sorted(entry.entry_id for entry in paid)) or None, len(batches),
             len(batch_lines), len(paid), (batch_lines or paid)[0].currency, dec(expected),
             dec(actual), dec(actual - expected), age, bucket(age))
        )  # fmt: skip
        item_batches.extend((the_id, batch) for batch in batches)
        item_entries.extend((the_id, entry.statement_id, entry.entry_id) for entry in paid)

    for key in keys:
        batch_lines = [line for batch in key for line in by_batch[batch]]
        paid = [entry for entry, k in resolved.items() if k == key]
        add("payout:" + "+".join(key), "reference" if len(key) == 1 else "combined_reference",
            batch_lines, paid)  # fmt: skip
    referenced = {batch for key in keys for batch in key}
    open_lines = [l for l in lines if l.batch_id not in referenced and l.amount != 0]  # noqa: E741
    open_entries = [e for e in entries if resolved.get(e) not in keys]

    # 2. by amount and date: rounds of mutually nearest pairs
    def distance(line: Line, entry: Entry) -> int:
        return abs((entry.value_date - day_of(closes[line.batch_id])).days)

    candidates = {
        (line, entry)
        for line in open_lines
        for entry in open_entries
        if line.currency == entry.currency
        and line.amount == entry.amount
        and distance(line, entry) <= window_days
    }
    pairs: list[tuple[Line, Entry]] = []
    for _ in range(ROUNDS_MAX):
        best_entry = {}
        best_line = {}
        for line, entry in sorted(
            candidates, key=lambda c: (distance(*c), c[1].statement_id, c[1].entry_id)
        ):
            best_entry.setdefault(line, entry)
        for line, entry in sorted(candidates, key=lambda c: (distance(*c), line_key(c[0]))):
            best_line.setdefault(entry, line)
        new = [(line, entry) for line, entry in best_entry.items() if best_line[entry] == line]
        if not new:
            break
        pairs.extend(new)
        done_lines = {line for line, _ in new}
        done_entries = {entry for _, entry in new}
        candidates = {c for c in candidates if c[0] not in done_lines and c[1] not in done_entries}
    for line, entry in pairs:
        add("payout:" + line_key(line), "amount_date", [line], [entry])
    paired_lines = {line for line, _ in pairs}
    paired_entries = {entry for _, entry in pairs}

    # 3. a party's day in one sum
    groups: dict[tuple[str, str, date], list[Line]] = defaultdict(list)
    for line in open_lines:
        if line not in paired_lines:
            groups[(line.party_id, line.currency, day_of(closes[line.batch_id]))].append(line)
    left_entries = [entry for entry in open_entries if entry not in paired_entries]
    group_candidates = [
        (key, entry)
        for key, group in groups.items()
        if len(group) >= 2
        for entry in left_entries
        if entry.currency == key[1]
        and entry.amount == sum(line.amount for line in group)
        and abs((entry.value_date - key[2]).days) <= window_days
    ]
    per_group = Counter(key for key, _ in group_candidates)
    per_entry = Counter(entry for _, entry in group_candidates)
    grouped_lines, grouped_entries = set(), set()
    for key, entry in group_candidates:
        if per_group[key] == 1 and per_entry[entry] == 1:
            group = groups[key]
            identity = "payout:" + "+".join(sorted(line_key(line) for line in group))
            add(identity, "amount_group", group, [entry])
            grouped_lines.update(group)
            grouped_entries.add(entry)

    # 4. what is left
    for line in open_lines:
        if line not in paired_lines and line not in grouped_lines:
            add("payout:" + line_key(line), None, [line], [])
    for entry in left_entries:
        if entry not in grouped_entries:
            add(f"entry:{entry.statement_id}/{entry.entry_id}", None, [], [entry])
    return sorted(rows), sorted(item_batches), sorted(item_entries)


# --------------------------------------------------------------------------- generated data

BATCH_POOL = ("b-0", "b-1", "b-2", "b-3", "b-4", "b-5")
PARTIES = ("p-1", "p-2")
CURRENCIES = ("USD", "JPY")
UNITS = (0, 1, 2, 3, 5, -1)


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    batch_ids = draw(st.lists(st.sampled_from(BATCH_POOL), unique=True, max_size=6))
    closes, lines = {}, []
    for batch_id in batch_ids:
        closes[batch_id] = (
            BASE_US + draw(st.integers(0, 5)) * DAY_US + draw(st.integers(0, 23)) * HOUR_US
        )
        currency = draw(st.sampled_from(CURRENCIES))
        parties = draw(st.lists(st.sampled_from(PARTIES), unique=True, min_size=1, max_size=2))
        for party in parties:
            lines.append(Line(batch_id, party, currency, draw(st.sampled_from(UNITS)) * 1_000_000))
    references = st.one_of(
        st.none(),
        st.sampled_from(BATCH_POOL),
        st.sampled_from(BATCH_POOL).map(lambda b: f" {b} "),
        st.lists(st.sampled_from(BATCH_POOL), min_size=2, max_size=3).map("+".join),
        st.just("b-9"),
        st.just("b-1+"),
    )
    entries = []
    for number in range(draw(st.integers(0, 9))):
        entries.append(
            Entry(
                draw(st.sampled_from(("s-1", "s-2"))),
                f"e-{number}",
                BASE_US + draw(st.integers(0, 9)) * DAY_US + draw(st.integers(0, 23)) * HOUR_US,
                day_of(BASE_US) + timedelta(days=draw(st.integers(0, 9))),
                draw(st.sampled_from(CURRENCIES)),
                draw(st.sampled_from((*UNITS, 4, 6))) * 1_000_000,
                draw(references),
            )
        )
    return {
        "closes": closes,
        "lines": lines,
        "entries": entries,
        "as_of_us": BASE_US
        + draw(st.integers(0, 40)) * DAY_US
        + draw(st.integers(0, 23)) * HOUR_US,
        "grace_days": draw(st.integers(0, 3)),
        "window_days": draw(st.integers(0, 3)),
        "tolerance": draw(st.sampled_from((0, 0, 1_000_000))),
    }


@pytest.fixture
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def fresh(folder: Path) -> Path:
    """A new directory under `folder`: hypothesis runs many examples in one test's folder."""
    return Path(tempfile.mkdtemp(dir=folder))


def run(folder: Path, scenario: dict, payouts_table: bool = True) -> Path:
    path = make_database(
        fresh(folder) / "recon.duckdb",
        scenario["closes"],
        scenario["lines"],
        scenario["entries"],
        payouts_table,
    )
    reconcile(
        path,
        moment(scenario["as_of_us"]),
        scenario["grace_days"],
        scenario["window_days"],
        dec(scenario["tolerance"]),
    )
    return path


# A batch paid twice and named in a combined reference; a group sum beside a pair.
PINNED_EDGE = {
    "closes": {"b-0": BASE_US, "b-1": BASE_US + HOUR_US, "b-2": BASE_US + 2 * HOUR_US},
    "lines": [
        Line("b-0", "p-1", "USD", 1_000_000),
        Line("b-1", "p-1", "USD", 2_000_000),
        Line("b-2", "p-1", "USD", 2_000_000),
    ],
    "entries": [
        Entry("s-1", "e-0", BASE_US, day_of(BASE_US), "USD", 1_000_000, "b-0"),
        Entry("s-1", "e-1", BASE_US, day_of(BASE_US), "USD", 3_000_000, "b-0+b-1"),
        Entry("s-1", "e-2", BASE_US, day_of(BASE_US), "USD", 2_000_000, None),
    ],
    "as_of_us": BASE_US + 3 * DAY_US,
    "grace_days": 1,
    "window_days": 0,
    "tolerance": 0,
}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario=scenarios())
@example(scenario=PINNED_EDGE)
def test_recon_views_against_the_twin(folder: Path, scenario: dict) -> None:
    """recon_statement, recon_breaks, recon_aging and the item views equal the twin's."""
    path = run(folder, scenario)
    rows, item_batches, item_entries = twin(
        scenario["closes"],
        scenario["lines"],
        scenario["entries"],
        scenario["as_of_us"],
        scenario["grace_days"],
        scenario["window_days"],
        scenario["tolerance"],
    )
    assert items(path) == rows
    breaks = query(path, f"SELECT {ITEM_COLUMNS} FROM recon_breaks ORDER BY item_id")
    assert breaks == [row for row in rows if row[1] != "matched"]
    aging: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0), Decimal(0), 0])
    for row in rows:
        if row[1] != "matched":
            figures = aging[(row[1], row[15], row[10])]
            figures[0] += 1
            figures[1] += row[13]
            figures[2] += abs(row[13])
            figures[3] = max(figures[3], row[14])
    assert query(
        path,
        "SELECT class, age_bucket, currency, items, net, gross, oldest_days FROM recon_aging ORDER BY ALL",
    ) == sorted((*key, *figures) for key, figures in aging.items())
    assert query(path, "SELECT * FROM recon_item_batches ORDER BY ALL") == item_batches
    assert query(path, "SELECT * FROM recon_item_entries ORDER BY ALL") == item_entries


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario=scenarios())
def test_stand_in_payouts_give_the_same_items(folder: Path, scenario: dict) -> None:
    """Without settlement_payouts, the stand-in from settlement_batches pays each batch's payee."""
    first_lines: dict[str, Line] = {}
    for line in scenario["lines"]:
        first_lines.setdefault(line.batch_id, line)
    one_line = {**scenario, "lines": list(first_lines.values())}
    assert items(run(folder, one_line, payouts_table=False)) == items(run(folder, one_line))


def test_pinned_scenario(folder: Path) -> None:
    """One item of each rule and class, with its figures and age, named."""
    closes = {
        "b-ref": BASE_US,  # paid exactly
        "b-fee": BASE_US,  # paid 0.30 short: an unbooked fee is a break
        "b-twice": BASE_US,  # one batch paid in two entries
        "b-dup": BASE_US,  # paid twice over
        "b-m1": BASE_US,  # with b-m2: one entry, combined reference
        "b-m2": BASE_US,
        "b-amt": BASE_US,  # no reference: by amount and date
        "b-g1": BASE_US + HOUR_US,  # with b-g2: a party's day in one entry
        "b-g2": BASE_US + 2 * HOUR_US,
        "b-old": BASE_US - 20 * DAY_US,  # never paid, long ago
        "b-new": BASE_US + 3 * DAY_US,  # not paid yet, within grace
        "b-split": BASE_US,  # two parties, both paid under the batch id
    }
    lines = [
        Line("b-ref", "p-a", "USD", 100_000_000),
        Line("b-fee", "p-a", "USD", 50_000_000),
        Line("b-twice", "p-a", "EUR", 80_000_000),
        Line("b-dup", "p-a", "USD", 10_000_000),
        Line("b-m1", "p-b", "JPY", 1_000_000_000),
        Line("b-m2", "p-c", "JPY", 2_000_000_000),
        Line("b-amt", "p-d", "USD", 77_770_000),
        Line("b-g1", "p-e", "USD", 11_000_000),
        Line("b-g2", "p-e", "USD", 22_000_000),
        Line("b-old", "p-a", "USD", 5_000_000),
        Line("b-new", "p-a", "USD", 6_000_000),
        Line("b-split", "p-a", "USD", 7_000_000),
        Line("b-split", "p-z", "USD", 3_000_000),
    ]
    day = day_of(BASE_US)
    entries = [
        Entry("s", "1", BASE_US, day, "USD", 100_000_000, "b-ref"),
        Entry("s", "2", BASE_US, day, "USD", 49_700_000, "b-fee"),
        Entry("s", "3", BASE_US, day, "EUR", 30_000_000, "b-twice"),
        Entry("s", "4", BASE_US + DAY_US, day, "EUR", 50_000_000, "b-twice"),
        Entry("s", "5", BASE_US, day, "USD", 10_000_000, "b-dup"),
        Entry("s", "6", BASE_US, day, "USD", 10_000_000, "b-dup"),
        Entry("s", "7", BASE_US, day, "JPY", 3_000_000_000, "b-m2+b-m1"),
        Entry("s", "8", BASE_US, day + timedelta(days=1), "USD", 77_770_000, None),
        Entry("s", "9", BASE_US, day, "USD", 33_000_000, ""),
        Entry("s", "10", BASE_US, day, "USD", 1_000_000, "interest"),
        Entry("s", "11", BASE_US, day, "USD", 7_000_000, "b-split"),
        Entry("s", "12", BASE_US, day, "USD", 3_000_000, "b-split"),
    ]
    path = make_database(folder / "pinned.duckdb", closes, lines, entries)
    summary = reconcile(path, moment(BASE_US + 4 * DAY_US), grace_days=2)
    got = {
        row[0]: row[1:]
        for row in query(
            path,
            "SELECT coalesce(batch_id, entry_id), class, match_rule, expected, actual, difference, "
            "age_bucket, party_id FROM recon_statement",
        )
    }
    assert got == {
        "b-ref": ("matched", "reference", dec(100_000_000), dec(100_000_000), dec(0), "2-7d", "p-a"),
        "b-fee": ("amount_mismatch", "reference", dec(50_000_000), dec(49_700_000), dec(-300_000), "2-7d", "p-a"),
        "b-twice": ("matched", "reference", dec(80_000_000), dec(80_000_000), dec(0), "2-7d", "p-a"),
        "b-dup": ("amount_mismatch", "reference", dec(10_000_000), dec(20_000_000), dec(10_000_000), "2-7d", "p-a"),
        "b-m1+b-m2": ("matched", "combined_reference", dec(3_000_000_000), dec(3_000_000_000), dec(0), "2-7d", None),
        "b-amt": ("matched", "amount_date", dec(77_770_000), dec(77_770_000), dec(0), "2-7d", "p-d"),
        "b-g1+b-g2": ("matched", "amount_group", dec(33_000_000), dec(33_000_000), dec(0), "2-7d", "p-e"),
        "b-old": ("missing_in_statement", None, dec(5_000_000), dec(0), dec(-5_000_000), "8-30d", "p-a"),
        "b-new": ("timing", None, dec(6_000_000), dec(0), dec(-6_000_000), "0-1d", "p-a"),
        "b-split": ("matched", "reference", dec(10_000_000), dec(10_000_000), dec(0), "2-7d", None),
        "10": ("unexpected_in_statement", None, dec(0), dec(1_000_000), dec(1_000_000), "2-7d", None),
    }  # fmt: skip
    assert summary.count("matched") == 6 and summary.breaks == 5
    assert {(row.class_, row.currency): (row.net, row.gross) for row in summary.aging} == {
        ("amount_mismatch", "USD"): (dec(9_700_000), dec(10_300_000)),  # net beside gross
        ("missing_in_statement", "USD"): (dec(-5_000_000), dec(5_000_000)),
        ("timing", "USD"): (dec(-6_000_000), dec(6_000_000)),
        ("unexpected_in_statement", "USD"): (dec(1_000_000), dec(1_000_000)),
    }
    assert query(
        path, "SELECT entry_id, entries FROM recon_statement WHERE batch_id = 'b-twice'"
    ) == [("3+4", 2)]
    # a break's id is the hash of what it reconciles: the same when it ages, and when it clears
    old_id = query(path, "SELECT item_id FROM recon_statement WHERE batch_id = 'b-new'")[0][0]
    assert old_id == item_id("payout:b-new")
    reconcile(path, moment(BASE_US + 40 * DAY_US), grace_days=2)
    assert query(
        path, "SELECT item_id, class, age_bucket FROM recon_statement WHERE batch_id = 'b-new'"
    ) == [(old_id, "missing_in_statement", ">30d")]


def test_lineage_from_a_payout_to_its_events_decisions_ledger_and_statement(folder: Path) -> None:
    closes = {"b-1": BASE_US}
    path = make_database(
        folder / "lineage.duckdb",
        closes,
        [Line("b-1", "p-1", "USD", 9_000_000)],
        [Entry("s", "1", BASE_US, day_of(BASE_US), "USD", 9_000_000, "b-1")],
    )
    connection = duckdb.connect(str(path))
    connection.execute(
        "INSERT INTO payments (event_id, type, occurred_at, ingested_at, payer_id, payee_id, amount, "
        "currency, rail, country, risk_score, decision, batch_id, late, source) VALUES "
        "('ev-1', 'payment', ?, ?, 'payer', 'p-1', 9, 'USD', 'card', 'US', 0.25, 'approve', 'b-1', false, 'log:1')",
        [moment(BASE_US - HOUR_US)] * 2,
    )
    connection.execute(
        "INSERT INTO ledger_entries (entry_id, batch_id, event_id, kind, account, currency, amount, "
        "posted_at) VALUES ('b-1:0', 'b-1', 'ev-1', 'payment', 'rail_clearing:card', "
        "'USD', 9, ?), ('b-1:1', 'b-1', 'ev-1', 'payment', 'payee_payable:p-1', 'USD', -9, ?)",
        [moment(BASE_US)] * 2,
    )
    connection.close()
    reconcile(path, moment(BASE_US + DAY_US))
    nodes = query(
        path,
        "SELECT step, node, node_id, decision, amount FROM recon_payout_lineage WHERE batch_id = ? "
        "ORDER BY step, node_time, node_id",
        ["b-1"],
    )
    assert [node[:3] for node in nodes] == [
        (1, "payout", "b-1"),
        (2, "batch", "b-1"),
        (3, "event", "ev-1"),
        (4, "ledger_entry", "b-1:0"),
        (4, "ledger_entry", "b-1:1"),
        (5, "statement_entry", "s/1"),
        (6, "recon_item", item_id("payout:b-1")),
    ]
    assert nodes[2][3] == "approve"


def test_reconcile_twice_gives_the_same_tables(folder: Path) -> None:
    path = run(folder, PINNED_EDGE)
    first = items(path)
    reconcile(path, moment(PINNED_EDGE["as_of_us"]), 1, 0)
    assert items(path) == first


def test_settings_are_checked(folder: Path) -> None:
    path = run(folder, PINNED_EDGE)
    for arguments in (
        {"as_of": datetime(2026, 1, 1)},
        {"as_of": moment(BASE_US), "grace_days": -1},
        {"as_of": moment(BASE_US), "date_window_days": 99},
        {"as_of": moment(BASE_US), "tolerance": 0.01},
    ):
        with pytest.raises(ConfigError):
            reconcile(path, **arguments)  # type: ignore[arg-type]


def test_a_payout_of_an_unknown_batch_is_refused_and_nothing_changes(folder: Path) -> None:
    path = run(folder, PINNED_EDGE)
    before = items(path)
    connection = duckdb.connect(str(path))
    connection.execute("INSERT INTO settlement_payouts VALUES ('b-ghost', 'p', 'USD', 1)")
    connection.close()
    with pytest.raises(ConfigError, match="missing from settlement_batches"):
        reconcile(path, moment(BASE_US))
    assert items(path) == before


# --------------------------------------------------------------------------- the simulator


@st.composite
def payout_sets(draw: st.DrawFn) -> tuple[dict[str, int], list[Line]]:
    closes, lines = {}, []
    steps = {"USD": 10_000, "JPY": 1_000_000, "BHD": 1_000}
    for number in range(draw(st.integers(1, 40))):
        batch_id = f"b-{number:04x}"
        closes[batch_id] = BASE_US + draw(st.integers(0, 40 * 24)) * HOUR_US
        currency = draw(st.sampled_from(sorted(steps)))
        parties = draw(
            st.lists(st.sampled_from(("m-1", "m-2", "m-3")), unique=True, min_size=1, max_size=2)
        )
        for party in parties:
            units = draw(st.integers(-20, 5_000) | st.sampled_from((0, 100, 100)))
            lines.append(Line(batch_id, party, currency, units * steps[currency]))
    return closes, lines


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payouts=payout_sets(),
    seed=st.integers(0, 2**32),
    share=st.sampled_from((0.2, 0.5, 1.0)),
    format=st.sampled_from(("csv", "camt.053")),
    grace_days=st.integers(0, 5),
)
def test_simulated_breaks_are_found_and_none_invented(
    folder: Path, payouts: tuple, seed: int, share: float, format: str, grace_days: int
) -> None:
    closes, lines = payouts
    folder = fresh(folder)
    path = make_database(folder / "sim.duckdb", closes, lines, [])
    if not any(line.amount for line in lines):
        with pytest.raises(ConfigError, match="no payout"):
            simulate_statement(path, folder / "s", seed=seed)
        return
    statement = folder / ("statement.csv" if format == "csv" else "statement.xml")
    simulation = simulate_statement(
        path, statement, seed=seed, break_share=share, format=format, grace_days=grace_days
    )
    import_statement(statement, path)
    summary = reconcile(path, simulation.as_of, grace_days)
    found = {
        (cls, tuple(sorted(batches.split("+"))) if batches else (statement_id, entry_id))
        for cls, batches, statement_id, entry_id in query(
            path, "SELECT class, batch_id, statement_id, entry_id FROM recon_breaks"
        )
    }
    injected = {
        (event.expected_class, event.batch_ids or (event.statement_id, event.entry_ids[0]))
        for event in simulation.injected
        if event.expected_class != "matched"
    }
    assert found == injected
    for event in simulation.injected:
        if event.expected_class == "matched":
            for batch_id in event.batch_ids:
                assert query(
                    path,
                    "SELECT r.class FROM recon_statement AS r JOIN recon_item_batches USING (item_id) "
                    "WHERE recon_item_batches.batch_id = ?",
                    [batch_id],
                ) == [("matched",)], event
    assert summary.breaks == len(injected)


def test_simulation_is_deterministic_and_writes_its_breaks(folder: Path) -> None:
    closes = {f"b-{n}": BASE_US + n * 7 * HOUR_US for n in range(60)}
    lines = [Line(b, f"m-{n % 3}", "USD", (n + 1) * 1_230_000) for n, b in enumerate(closes)]
    path = make_database(folder / "det.duckdb", closes, lines, [])
    outputs = []
    for name in ("a", "b"):
        simulation = simulate_statement(
            path, folder / f"{name}.xml", seed=7, break_share=0.5, format="camt.053",
            breaks_path=folder / f"{name}.json",
        )  # fmt: skip
        outputs.append(
            ((folder / f"{name}.xml").read_bytes(), (folder / f"{name}.json").read_text())
        )
    assert outputs[0][0] == outputs[1][0]
    document = json.loads(outputs[0][1])
    assert len(document["injected"]) == len(simulation.injected) > 0
    assert {event["kind"] for event in document["injected"]} <= set(KINDS)
    other = simulate_statement(path, folder / "c.xml", seed=8, break_share=0.5, format="camt.053")
    assert (folder / "c.xml").read_bytes() != outputs[0][
        0
    ] and other.injected != simulation.injected


def test_the_matching_bench_builds_its_database_on_todays_tables(tmp_path):
    """`make bench`'s statement-matching part writes its batches into the tables of
    `schemas/tables.sql`: a column added there must be added to it too."""
    from centflow.ops.bench_recon import measure

    figures = measure(2_000, tmp_path)
    classes = figures["classes"]
    assert figures["entries"] > figures["payouts"] == 2_000
    assert classes["matched"] >= 1_800
    assert {"amount_mismatch", "missing_in_statement", "unexpected_in_statement"} <= set(classes)
