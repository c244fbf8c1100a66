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

from centflow.errors import ConfigError, InvariantViolation
from centflow.recon.tables import TABLES

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
    """Replace `table` with the dataset's rows, one per key; return the row count.

    In one transaction the table is dropped, created again from the DDL and
    filled (deleting every row and inserting them again under the primary key
    costs DuckDB ten times as much). The dataset normally holds each row once
    (`sinks.parquet` removes what a resume writes again), so the rows go
    straight in, the primary key checking them. Only if a key repeats are they
    loaded again through ``DISTINCT``: a row written twice collapses to one,
    and a key with two different contents is refused (`InvariantViolation`).
    """
    files = [str(file) for file in sorted((parquet_dir / table).glob("*.parquet"))]
    columns = ", ".join(name for name, _ in TABLES[table])
    for rows in ("", "DISTINCT "):  # table names come from centflow.recon.tables only
        connection.execute("BEGIN TRANSACTION")
        connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute(schema_sql("tables.sql"))  # creates what is missing: this table
        try:
            if files:
                connection.execute(
                    f"INSERT INTO {table} SELECT {rows}{columns} FROM read_parquet(?)", [files]
                )
        except duckdb.ConstraintException:
            connection.execute("ROLLBACK")
            continue
        loaded = connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        connection.execute("COMMIT")
        return int(loaded)
    raise InvariantViolation(f"{table}: rows share a key with different content")


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
        # Rows of a table have no order (queries sort what they need): loading
        # without keeping the files' order lets DuckDB insert in parallel.
        connection.execute("SET preserve_insertion_order = false")
        create_schema(connection)
        for table in TABLES:
            _load_table(connection, table, parquet_dir)
    finally:
        connection.close()
    return database
