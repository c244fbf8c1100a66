"""The DuckDB database ``DIR/centflow.duckdb``: the analyst tables, loaded from Parquet.

Why load rather than write from the dataflow: DuckDB allows one read-write
process per file, while the dataflow runs one writer per worker, possibly in
several processes. So workers write the Parquet dataset (`sinks.parquet`), the
scale-out store, and `materialize` loads it into DuckDB in one process, after
a run and whenever ``centflow recon`` asks. Each load replaces a table's rows
in one transaction, keeping one row per key, so loading twice changes nothing.

The DDL is ``schemas/tables.sql``; the reconciliation views are
``schemas/recon_*.sql``, each with a header that says what it reads and returns.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from centflow.errors import ConfigError, invariant
from centflow.tables import TABLE_KEYS, TABLES

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
DATABASE_NAME = "centflow.duckdb"


def schema_sql(name: str) -> str:
    """The text of ``schemas/<name>``."""
    return (SCHEMAS_DIR / name).read_text()


def recon_view_files() -> list[Path]:
    """The reconciliation views, ``schemas/recon_*.sql``, in name order."""
    return sorted(SCHEMAS_DIR.glob("recon_*.sql"))


def create_schema(connection: duckdb.DuckDBPyConnection) -> None:
    """Create the analyst tables (if missing) and (re)create the reconciliation views."""
    connection.execute(schema_sql("tables.sql"))
    for view in recon_view_files():
        connection.execute(view.read_text())


def _load_table(connection: duckdb.DuckDBPyConnection, table: str, parquet_dir: Path) -> int:
    """Replace `table` with the dataset's rows, one per key; return the row count."""
    files = sorted((parquet_dir / table).glob("*.parquet"))
    columns = ", ".join(name for name, _ in TABLES[table])
    key = ", ".join(TABLE_KEYS[table])
    connection.execute("BEGIN TRANSACTION")
    connection.execute(f"DELETE FROM {table}")  # table names come from centflow.tables only
    if files:
        connection.execute(
            f"INSERT INTO {table} SELECT {columns} FROM read_parquet(?) "
            f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {columns}) = 1",
            [[str(file) for file in files]],
        )
        distinct_rows = connection.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT {columns} FROM read_parquet(?))",
            [[str(file) for file in files]],
        ).fetchall()[0][0]
    else:
        distinct_rows = 0
    loaded = connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    invariant(
        loaded == distinct_rows,
        f"{table}: {distinct_rows - loaded} rows share a key with different content",
    )
    connection.execute("COMMIT")
    return int(loaded)


def materialize(out_dir: Path) -> Path:
    """Load ``out_dir/parquet`` into ``out_dir/centflow.duckdb``; return the database path."""
    parquet_dir = out_dir / "parquet"
    database = out_dir / DATABASE_NAME
    try:
        connection = duckdb.connect(str(database))
    except duckdb.IOException as error:
        raise ConfigError(
            f"cannot open {database}: {str(error).splitlines()[0]} (is another process using it?)"
        ) from None
    try:
        connection.execute("SET enable_progress_bar = false")
        create_schema(connection)
        for table in TABLES:
            _load_table(connection, table, parquet_dir)
    finally:
        connection.close()
    return database
