"""The DuckDB database ``DIR/centflow.duckdb``: the analyst tables, loaded from Parquet.

Why load rather than write from the dataflow: DuckDB allows one read-write
process per file, while the dataflow runs one writer per worker, possibly in
several processes. So workers write the Parquet dataset (`sinks.parquet`), the
scale-out store, and `materialize` loads it into DuckDB in one process, after
a run and whenever ``centflow recon`` asks. Each load replaces a table's rows
in one transaction, keeping one row per key, so loading twice changes nothing
(for a payment held for review and resolved since, the row of its resolution;
for a batch that awaited its FX rate and got it since, its settled row).

Readers while it loads. Analysts open the file read-only (``duckdb -readonly
out/centflow.duckdb``, ``duckdb.connect(path, read_only=True)``) while the
pipeline runs. DuckDB locks a file for one writer *or* any number of readers,
so a load into the file itself would fail while anyone had it open (and a
reader could not open it during the load). So `materialize` builds the new
database in a file of its own beside it (``.centflow.duckdb.<pid>.loading``,
a copy of the current file, so that imported statements and matched recon
tables stay; a new, empty file when the current one holds nothing a load does
not make again, see `_rebuilt_by_a_load`), closes and fsyncs it, and renames
it over ``centflow.duckdb``
(`os.replace`, atomic). A reader that opens the path gets the previous load or
the new one, each whole, never a half-loaded table; a reader already open
keeps reading the load it opened until it reconnects, and never blocks the
next load. Copying takes a read-only lock on the current file, so it waits
for no reader but refuses (one line) while another process writes it
(``centflow recon import`` or ``match``).

The load is of what the Parquet dataset holds when it starts; a run loads at
its end, once every file is written, so every batch in the file has all its
events, fee lines, payouts and ledger entries.

The DDL is ``schemas/tables.sql``; the reconciliation views are
``schemas/recon_*.sql``, each with a header that says what it reads and returns.
"""

from __future__ import annotations

import os
import shutil
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


def _load_table(
    connection: duckdb.DuckDBPyConnection, table: str, parquet_dir: Path, resolved: bool = False
) -> int:
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
    selects = [f"SELECT {columns} FROM read_parquet(?)", f"SELECT DISTINCT {columns} FROM read_parquet(?)"]  # fmt: skip
    if (
        table == "payments"
    ):  # with resolutions recorded, rows of held payments repeat: go there first
        selects = [_resolved_payments(columns)] if resolved else [*selects, _resolved_payments(columns)]  # fmt: skip
    if table == "settlement_batches":  # a batch that awaited its FX rate has a row of each
        selects.append(_rated_batches(columns))
    for select in selects:  # table names come from centflow.recon.tables only
        connection.execute("BEGIN TRANSACTION")
        connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute(schema_sql("tables.sql"))  # creates what is missing: this table
        try:
            if files:
                connection.execute(f"INSERT INTO {table} {select}", [files])
        except duckdb.ConstraintException:
            connection.execute("ROLLBACK")
            continue
        loaded = connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        connection.execute("COMMIT")
        return int(loaded)
    raise InvariantViolation(f"{table}: rows share a key with different content")


def _resolved_payments(columns: str) -> str:
    """``payments`` rows, keeping for an event held for review its resolved row
    (`centflow.risk.review`): a key may have two rows only if one is its pending row
    and the other its resolution; anything else still fails on the primary key."""
    return f"""
        WITH rows AS (SELECT DISTINCT {columns} FROM read_parquet(?)),
        ranked AS (
            SELECT *, count(*) OVER (PARTITION BY event_id, source) AS copies,
                count(*) FILTER (WHERE review_outcome = 'pending')
                    OVER (PARTITION BY event_id, source) AS pending
            FROM rows
        )
        SELECT {columns} FROM ranked
        WHERE copies = 1 OR NOT (copies = 2 AND pending = 1 AND review_outcome = 'pending')
    """


def _rated_batches(columns: str) -> str:
    """``settlement_batches`` rows, keeping for a batch that awaited its FX rate and
    then got it (`centflow.money.fx`) its settled row: a key may have two rows only
    if one says ``awaiting_rate`` and the other does not."""
    return f"""
        WITH rows AS (SELECT DISTINCT {columns} FROM read_parquet(?)),
        ranked AS (
            SELECT *, count(*) OVER (PARTITION BY batch_id) AS copies,
                count(*) FILTER (WHERE status = 'awaiting_rate')
                    OVER (PARTITION BY batch_id) AS waiting
            FROM rows
        )
        SELECT {columns} FROM ranked
        WHERE copies = 1 OR NOT (copies = 2 AND waiting = 1 AND status = 'awaiting_rate')
    """


def materialize(out_dir: Path) -> Path:
    """Load ``out_dir/parquet`` into ``out_dir/centflow.duckdb``; return the database path.

    Built beside the database and renamed over it (see the module docstring).
    """
    parquet_dir = out_dir / "parquet"
    database = out_dir / DATABASE_NAME
    building = out_dir / f".{DATABASE_NAME}.{os.getpid()}.loading"
    _remove_stale_loads(out_dir)
    try:
        _copy_current(database, building)
        connection = duckdb.connect(str(building))
        try:
            connection.execute("SET enable_progress_bar = false")
            # Rows of a table have no order (queries sort what they need): loading
            # without keeping the files' order lets DuckDB insert in parallel.
            connection.execute("SET preserve_insertion_order = false")
            create_schema(connection)
            resolved = _has_resolutions(out_dir)
            for table in TABLES:
                _load_table(connection, table, parquet_dir, resolved)
        finally:
            connection.close()
        _fsync(building)
        os.replace(building, database)
        _fsync(out_dir)
    finally:
        for leftover in (building, _wal_of(building)):
            leftover.unlink(missing_ok=True)
    return database


def _has_resolutions(out_dir: Path) -> bool:
    """Whether any review was resolved in `out_dir` (`centflow.risk.review`)."""
    path = out_dir / "reviews" / "resolutions.jsonl"
    return path.exists() and path.stat().st_size > 0


def _wal_of(database: Path) -> Path:
    return database.with_name(database.name + ".wal")


def _copy_current(database: Path, building: Path) -> None:
    """Copy the current database (if any) to `building`, under a read-only lock;
    unless it holds only what the load makes again, then `building` starts empty."""
    if not database.exists():
        return
    try:
        if _wal_of(database).exists():  # changes an unclean end left in its log: fold them in
            duckdb.connect(str(database)).close()
        reader = duckdb.connect(str(database), read_only=True)
    except duckdb.IOException as error:
        raise ConfigError(
            f"cannot open {database}: {str(error).splitlines()[0]} (is another process writing it?)"
        ) from None
    try:
        if not _rebuilt_by_a_load(reader):
            shutil.copyfile(database, building)
    finally:
        reader.close()


# Every object a database file can hold, by kind, outside DuckDB's own catalog.
_OBJECTS_SQL = """
SELECT 'table', schema_name || '.' || table_name FROM duckdb_tables()
    WHERE database_name = current_database()
UNION ALL SELECT 'view', schema_name || '.' || view_name FROM duckdb_views()
    WHERE database_name = current_database() AND NOT internal
UNION ALL SELECT 'sequence', sequence_name FROM duckdb_sequences()
    WHERE database_name = current_database()
UNION ALL SELECT 'index', index_name FROM duckdb_indexes()
    WHERE database_name = current_database()
UNION ALL SELECT 'type', type_name FROM duckdb_types()
    WHERE database_name = current_database() AND NOT internal
UNION ALL SELECT 'function', function_name FROM duckdb_functions()
    WHERE database_name = current_database() AND NOT internal
UNION ALL SELECT 'schema', schema_name FROM duckdb_schemas()
    WHERE database_name = current_database() AND NOT internal AND schema_name <> 'main'
"""


def _rebuilt_by_a_load(connection: duckdb.DuckDBPyConnection) -> bool:
    """Whether a database holds nothing but the analyst tables and the
    reconciliation views: all of it a load drops and makes again, so a copy of it
    would only be thrown away (copying costs a full read and write of the file,
    and dropping the copied tables frees their blocks without shrinking it).
    Anything else (imported statements, recon matching tables, an analyst's own
    table or view) and the file is copied, so that it stays."""
    rebuilt = {("table", f"main.{table}") for table in TABLES}
    rebuilt |= {("view", f"main.{view.stem}") for view in recon_view_files()}
    found = {(kind, name) for kind, name in connection.execute(_OBJECTS_SQL).fetchall()}
    return found <= rebuilt


def _remove_stale_loads(out_dir: Path) -> None:
    """Delete the building files of loads whose process is gone (a crash mid-load)."""
    for path in out_dir.glob(f".{DATABASE_NAME}.*.loading*"):
        pid = path.name.removeprefix(f".{DATABASE_NAME}.").partition(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
