"""The analyst tables: DDL, `centflow.recon.tables`, Arrow and Parquet agree, and money stays exact.

What these tests prove:

* ``schemas/tables.sql`` (created in DuckDB by `create_schema`) and
  `centflow.recon.tables.TABLES` list the same tables and the same columns in the
  same order, with the logical → DuckDB type mapping; each table's primary key
  is its `TABLE_KEYS` entry;
* `sinks.arrow.table_schema` agrees too, and a Parquet file written with it is
  read by DuckDB with exactly the DDL's types (no DOUBLE or HUGEINT sneaking in);
* no floating column holds money, in the tables, the reconciliation views or
  the report queries; the only DOUBLE is the allow-listed `risk_score`;
* rows → `rows_to_table` → Parquet → DuckDB ``read_parquet`` gives back the same
  values (money exact at ±999999999999.999999 and 0.000001, timestamps to the µs);
* `sinks.duckdb.materialize` keeps one row per key when a replay wrote rows
  twice, loading twice changes nothing, and a key with two contents is refused.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from centflow.errors import InvariantViolation
from centflow.limits import AMOUNT_MICROS_MAX
from centflow.recon.report import QUERIES_DIR
from centflow.recon.tables import TABLE_KEYS, TABLES
from sinks.arrow import rows_to_table, table_schema
from sinks.duckdb import DATABASE_NAME, create_schema, materialize

DUCKDB_TYPES = {
    "text": "VARCHAR",
    "money": "DECIMAL(18,6)",
    "rate": "DECIMAL(18,12)",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "integer": "BIGINT",
    "boolean": "BOOLEAN",
    "double": "DOUBLE",
    "bytes": "BLOB",
}
ARROW_TYPES = {
    "text": pa.string(),
    "money": pa.decimal128(18, 6),
    "rate": pa.decimal128(18, 12),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "double": pa.float64(),
    "bytes": pa.binary(),
}
#: Words that make a column name look like money (DESIGN.md's amounts).
MONEY_WORDS = {
    "amount", "gross", "refunds", "fees", "fee", "net", "payout", "carry_in", "carry_out",
    "cost", "margin", "converted", "spread",
}  # fmt: skip
#: The same, for computed columns of views and queries (sums of money).
AGGREGATE_MONEY_WORDS = MONEY_WORDS | {"debits", "credits", "balance"}
#: The only floating columns allowed anywhere: model outputs, never money.
FLOAT_ALLOWED = {("payments", "risk_score")}
FLOATING_DUCKDB = {"DOUBLE", "FLOAT", "REAL", "FLOAT4", "FLOAT8"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def money_named(column: str, words: set[str] = MONEY_WORDS) -> bool:
    """True if a column's name suggests money (`events_gross`, `carry_out`, ...)."""
    return any(re.search(rf"(^|_){word}($|_)", column) for word in words)


@pytest.fixture
def connection() -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    create_schema(db)
    yield db
    db.close()


def describe(db: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a table, view or parenthesised query."""
    return [
        (name, kind)
        for name, kind, *_ in db.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    ]


# (a) DDL against centflow.recon.tables --------------------------------------------


def test_money_name_detector() -> None:
    assert money_named("amount") and money_named("carry_out") and money_named("events_gross")
    assert (
        not money_named("network") and not money_named("payee_id") and not money_named("risk_score")
    )


def test_ddl_has_exactly_the_tables_of_centflow_tables(
    connection: duckdb.DuckDBPyConnection,
) -> None:
    tables = connection.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' ORDER BY 1"
    ).fetchall()
    assert [name for (name,) in tables] == sorted(TABLES)
    assert set(TABLE_KEYS) == set(TABLES)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_ddl_columns_match_tables(connection: duckdb.DuckDBPyConnection, table: str) -> None:
    expected = [(name, DUCKDB_TYPES[kind]) for name, kind in TABLES[table]]
    assert describe(connection, table) == expected


@pytest.mark.parametrize("table", sorted(TABLES))
def test_ddl_primary_key_is_table_key(connection: duckdb.DuckDBPyConnection, table: str) -> None:
    keys = connection.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() "
        "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'",
        [table],
    ).fetchall()
    assert [tuple(columns) for (columns,) in keys] == [TABLE_KEYS[table]]


def test_every_logical_type_is_mapped() -> None:
    kinds = {kind for columns in TABLES.values() for _, kind in columns}
    assert kinds <= set(DUCKDB_TYPES)


# (b) Arrow and Parquet -------------------------------------------------------


@pytest.mark.parametrize("table", sorted(TABLES))
def test_arrow_schema_matches_tables(table: str) -> None:
    schema = table_schema(table)
    assert schema.names == [name for name, _ in TABLES[table]]
    assert [field.type for field in schema] == [ARROW_TYPES[kind] for _, kind in TABLES[table]]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_parquet_reads_back_with_the_ddl_types(
    connection: duckdb.DuckDBPyConnection, table: str, tmp_path: Path
) -> None:
    """What the sinks write is what DuckDB's DDL declares, through Parquet's type system."""
    path = tmp_path / f"{table}.parquet"
    pq.write_table(rows_to_table(table, []), path)
    read = describe(connection, f"read_parquet('{path}')")
    assert read == describe(connection, table)


# (c) No float holds money ----------------------------------------------------


def test_money_columns_are_decimal_18_6(connection: duckdb.DuckDBPyConnection) -> None:
    checked = 0
    for table in TABLES:
        ddl = dict(describe(connection, table))
        arrow = table_schema(table)
        for name, _ in TABLES[table]:
            if money_named(name):
                checked += 1
                assert ddl[name] == "DECIMAL(18,6)", f"{table}.{name} is {ddl[name]}"
                assert arrow.field(name).type == pa.decimal128(18, 6), f"{table}.{name}"
    # amount x4 (payments, payouts, ledger, fx); batches: gross, refunds, fees, net, payout,
    # carry_in, carry_out, fx_converted, fx_spread; fees: gross, fee, chargeback_fees,
    # rail_cost, margin, fees_if_alone
    assert checked == 19


def test_only_allow_listed_columns_are_floating(connection: duckdb.DuckDBPyConnection) -> None:
    floating_ddl = {
        (table, name)
        for table in TABLES
        for name, kind in describe(connection, table)
        if kind in FLOATING_DUCKDB
    }
    floating_arrow = {
        (table, field.name)
        for table in TABLES
        for field in table_schema(table)
        if pa.types.is_floating(field.type)
    }
    assert floating_ddl == FLOAT_ALLOWED
    assert floating_arrow == FLOAT_ALLOWED
    assert not any(money_named(name) for _, name in FLOAT_ALLOWED)


def view_names(db: duckdb.DuckDBPyConnection) -> list[str]:
    rows = db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW' ORDER BY 1"
    ).fetchall()
    return [name for (name,) in rows]


def test_views_and_queries_keep_money_decimal(tmp_path: Path) -> None:
    """Sums in the reconciliation views and report queries stay DECIMAL with 6 places
    (in a database where a statement was matched, so the statement views exist too)."""
    from centflow.recon.matching import reconcile

    database = tmp_path / DATABASE_NAME
    with duckdb.connect(str(database)) as db:
        create_schema(db)
    reconcile(database, datetime(2026, 12, 1, tzinfo=UTC))
    with duckdb.connect(str(database), read_only=True) as connection:
        check_money_decimal(connection)


def check_money_decimal(connection: duckdb.DuckDBPyConnection) -> None:
    relations = {f"view {name}": name for name in view_names(connection)}
    assert {"view recon_batch_totals", "view recon_ledger_balance", "view recon_aging"} <= set(
        relations
    )
    for path in sorted(QUERIES_DIR.glob("*.sql")):
        text = path.read_text().strip().rstrip(";")
        # a parameter (a bucket length, a row limit) is described with the value 1
        relations[f"query {path.name}"] = f"({text.replace('?', '1')})"
    for label, relation in relations.items():
        for name, kind in describe(connection, relation):
            # a model's output carried along (recon_payout_lineage.risk_score), or a
            # figure of it (summary_risk_parties.max_score), may float: a score, not money
            floating_allowed = name in {column for _, column in FLOAT_ALLOWED} or (
                name.endswith("score") and not money_named(name)
            )
            assert kind not in FLOATING_DUCKDB or floating_allowed, f"{label}.{name} is {kind}"
            if money_named(name, AGGREGATE_MONEY_WORDS):
                assert re.fullmatch(r"DECIMAL\((18|38),6\)", kind), f"{label}.{name} is {kind}"


# (d) Round trip through Parquet ----------------------------------------------

money = st.one_of(
    st.integers(-AMOUNT_MICROS_MAX, AMOUNT_MICROS_MAX),
    st.sampled_from([AMOUNT_MICROS_MAX, -AMOUNT_MICROS_MAX, 1, -1, 0, 10_000, -999_999]),
)
timestamps_us = st.integers(
    int((datetime(1900, 1, 1, tzinfo=UTC) - EPOCH).total_seconds()) * 10**6,
    int((datetime(2200, 1, 1, tzinfo=UTC) - EPOCH).total_seconds()) * 10**6,
)
texts = st.text(max_size=12)
bigints = st.integers(-(2**63), 2**63 - 1)
rates = st.decimals(min_value=0, max_value=Decimal("999999.999999999999"), places=12)

ledger_rows = st.lists(
    st.tuples(texts, texts, st.none() | texts, texts, texts, texts, money, timestamps_us),
    max_size=8,
)
batch_rows = st.lists(
    st.tuples(
        texts,
        texts,
        texts,
        timestamps_us,
        timestamps_us,
        bigints,
        bigints,
        bigints,
        money,
        money,
        money,
        money,
        texts,
        rates,
        money,
        money,
        money,
        timestamps_us,
        texts,
        st.none() | money,
        st.none() | money,
        st.none() | timestamps_us,
    ),
    max_size=6,
)
LEDGER_EXTREMES = [
    ("e-1", "b-1", "evt-1", "payment", "rail_clearing:card", "USD", AMOUNT_MICROS_MAX, 0),
    ("e-2", "b-1", None, "payout", "payee_payout:p", "USD", -AMOUNT_MICROS_MAX, -1),
    ("e-3", "b-1", "evt-2", "payment", "x", "JPY", 1, 1_700_000_000_123_456),
    ("e-4", "b-1", "evt-2", "payment", "y", "JPY", -1, 4_102_444_799_999_999),
]
BATCH_EXTREMES = [
    (
        "b-1",
        "payee",
        "BHD",
        0,
        60_000_000,
        0,
        1,
        0,
        AMOUNT_MICROS_MAX,
        1,
        0,
        AMOUNT_MICROS_MAX - 1,
        "BHD",
        Decimal("999999.999999999999"),
        -AMOUNT_MICROS_MAX,
        -1,
        1,
        -86_400_000_000,
        "awaiting_rate",
        AMOUNT_MICROS_MAX,
        -AMOUNT_MICROS_MAX,
        None,
    )
]
counter = itertools.count()


def expected_value(kind: str, value: object) -> object:
    if value is None:
        return None
    if kind == "money":
        return Decimal(value).scaleb(-6)  # type: ignore[arg-type]
    if kind == "rate":
        return Decimal(value)  # type: ignore[arg-type]
    return value


def read_back(table: str, path: Path) -> list[tuple]:
    """Read a Parquet file with DuckDB; timestamps as µs since the epoch."""
    columns = ", ".join(
        f"epoch_us({name})" if kind == "timestamp" else name for name, kind in TABLES[table]
    )
    with duckdb.connect() as db:
        return db.execute(f"SELECT {columns} FROM read_parquet(?)", [str(path)]).fetchall()


def check_round_trip(table: str, rows: list[tuple], directory: Path) -> None:
    path = directory / f"{table}-{next(counter)}.parquet"
    pq.write_table(rows_to_table(table, rows), path)
    kinds = [kind for _, kind in TABLES[table]]
    got = read_back(table, path)
    assert len(got) == len(rows)
    for row, back in zip(rows, got, strict=True):
        assert back == tuple(
            expected_value(kind, value) for kind, value in zip(kinds, row, strict=True)
        )
        for kind, value, read in zip(kinds, row, back, strict=True):
            if kind == "money" and value is not None:  # exact to the micro-unit
                assert isinstance(read, Decimal) and int(read.scaleb(6)) == value
                assert read.as_tuple().exponent == -6


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=ledger_rows)
@example(rows=LEDGER_EXTREMES)
@example(rows=[])
def test_ledger_entries_round_trip(
    rows: list[tuple], tmp_path_factory: pytest.TempPathFactory
) -> None:
    check_round_trip("ledger_entries", rows, tmp_path_factory.getbasetemp())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=batch_rows)
@example(rows=BATCH_EXTREMES)
def test_settlement_batches_round_trip(
    rows: list[tuple], tmp_path_factory: pytest.TempPathFactory
) -> None:
    check_round_trip("settlement_batches", rows, tmp_path_factory.getbasetemp())


def test_timestamps_read_back_as_utc_instants(tmp_path: Path) -> None:
    """TIMESTAMPTZ values are the same instants (not shifted by a local zone)."""
    path = tmp_path / "ledger.parquet"
    pq.write_table(rows_to_table("ledger_entries", LEDGER_EXTREMES), path)
    with duckdb.connect() as db:
        got = [
            value
            for (value,) in db.execute(
                "SELECT posted_at FROM read_parquet(?)", [str(path)]
            ).fetchall()
        ]
    assert got == [EPOCH + timedelta(microseconds=row[7]) for row in LEDGER_EXTREMES]


# (e) materialize: idempotent loads -------------------------------------------

PAYMENT = (
    "evt-1",
    "payment",
    1_000_000,
    2_000_000,
    "payer-1",
    "payee-1",
    100_000,
    "USD",
    "card",
    "US",
    None,
    0.25,
    "approve",
    "m1",
    "velocity;new_device",
    "b-1",
    False,
    "dev-1",
    "10.0.0.1",
    "log:1",
    None,
    None,
    None,
)
REFUND = (
    "evt-2",
    "refund",
    3_000_000,
    3_000_000,
    "payer-1",
    "payee-1",
    1,
    "USD",
    "card",
    "US",
    "evt-1",
    None,
    "approve",
    None,
    None,
    "b-1",
    True,
    None,
    None,
    "log:2",
    None,
    None,
    None,
)
BATCH = (
    "b-1",
    "payee-1",
    "USD",
    0,
    60_000_000,
    0,
    2,
    1,
    100_000,
    1,
    0,
    99_999,
    "USD",
    Decimal("1.000000000"),
    90_000,
    0,
    9_999,
    60_000_000,
    "settled",
    None,
    None,
    60_000_000,
)
ENTRIES = [
    ("b-1:000000", "b-1", "evt-1", "payment", "rail_clearing:card", "USD", 100_000, 60_000_000),
    ("b-1:000001", "b-1", "evt-1", "payment", "payee_payable:payee-1", "USD", -100_000, 60_000_000),
]
DEAD = ("log:3", "invalid_json", "not JSON", b"\x00\xff{", 4_000_000)
DATASET = {
    "payments": [PAYMENT, REFUND],
    "settlement_batches": [BATCH],
    "ledger_entries": ENTRIES,
    "dead_letters": [DEAD],
}


def write_dataset(out: Path, files: dict[str, list[list[tuple]]]) -> None:
    for table, parts in files.items():
        directory = out / "parquet" / table
        directory.mkdir(parents=True, exist_ok=True)
        for index, rows in enumerate(parts):
            pq.write_table(rows_to_table(table, rows), directory / f"part-{index}.parquet")


def dump(database: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(database), read_only=True) as db:
        return {
            table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in TABLES
        }


def test_materialize_keeps_one_row_per_key_and_is_idempotent(tmp_path: Path) -> None:
    # A replay after a crash writes what was written before the crash again:
    # the same rows, in a second file and repeated within a file.
    write_dataset(tmp_path, {table: [rows, rows + rows[:1]] for table, rows in DATASET.items()})
    database = materialize(tmp_path)
    assert database == tmp_path / DATABASE_NAME
    first = dump(database)
    for table, rows in DATASET.items():
        assert len(first[table]) == len(rows), table
    with duckdb.connect(str(database), read_only=True) as db:
        amounts = db.execute("SELECT event_id, amount FROM payments ORDER BY event_id").fetchall()
        assert amounts == [("evt-1", Decimal("0.100000")), ("evt-2", Decimal("0.000001"))]
        assert db.execute("SELECT raw FROM dead_letters").fetchall() == [(b"\x00\xff{",)]
        assert db.execute("SELECT fx_rate, carry_out FROM settlement_batches").fetchall() == [
            (Decimal("1.000000000000"), Decimal("0.009999"))
        ]
    assert materialize(tmp_path) == database
    assert dump(database) == first


def test_materialize_replaces_rather_than_appends(tmp_path: Path) -> None:
    write_dataset(tmp_path, {table: [rows] for table, rows in DATASET.items()})
    materialize(tmp_path)
    # The dataset grows by one payment: the table follows it, nothing doubles.
    extra = ("evt-3", *PAYMENT[1:])
    write_dataset(tmp_path, {"payments": [[PAYMENT, REFUND], [extra, PAYMENT]]})
    tables = dump(materialize(tmp_path))
    assert sorted(row[0] for row in tables["payments"]) == ["evt-1", "evt-2", "evt-3"]
    assert len(tables["ledger_entries"]) == len(ENTRIES)


def test_materialize_refuses_a_key_with_two_contents(tmp_path: Path) -> None:
    changed = ("evt-1", *PAYMENT[1:6], PAYMENT[6] + 1, *PAYMENT[7:])
    write_dataset(tmp_path, {"payments": [[PAYMENT], [changed]]})
    with pytest.raises(InvariantViolation, match="payments"):
        materialize(tmp_path)


def test_materialize_of_an_empty_dataset_gives_empty_tables(tmp_path: Path) -> None:
    (tmp_path / "parquet").mkdir()
    tables = dump(materialize(tmp_path))
    assert tables == {table: [] for table in TABLES}
