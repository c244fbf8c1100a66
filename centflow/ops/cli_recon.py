"""The statement commands: ``centflow recon import|match`` and ``centflow statement simulate``.

They work on a run's output directory: statements are loaded into its
``centflow.duckdb`` beside the pipeline's tables (a reload from Parquet,
``centflow recon``, leaves them alone), and matching (`centflow.recon.matching`)
rewrites the ``recon_`` statement tables from what is loaded. Matching is
measured from an ``--as-of`` moment, never the clock: by default the latest
batch close or statement booking in the file, so the same data gives the same
tables on any day.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from centflow.errors import ConfigError
from centflow.recon.matching import DATE_WINDOW_DAYS_DEFAULT, GRACE_DAYS_DEFAULT, MatchSummary

statement_app = typer.Typer(no_args_is_help=True, help="Statements for trying reconciliation.")
report_console = Console(width=None if sys.stdout.isatty() else 132, soft_wrap=True)

Out = Annotated[Path, typer.Option(help="A run's output directory.")]


def database_of(out: Path) -> Path:
    """`out`'s DuckDB file, refused in one line when the run has not written it."""
    database = out / "centflow.duckdb"
    if not database.is_file():
        raise ConfigError(f"{out} holds no centflow.duckdb: run `centflow run --out {out}` first")
    return database


def import_command(
    file: Annotated[Path, typer.Argument(help="A camt.053 XML or CSV statement.")],
    out: Out = Path("out"),
    format: Annotated[
        str | None, typer.Option(help="camt.053 or csv (default: from the file).")
    ] = None,
) -> None:
    """Load a bank or rail statement into OUT's DuckDB file (all or nothing; twice changes nothing)."""
    from centflow.recon.statements import import_statement

    if not file.is_file():
        raise ConfigError(f"{file}: no such statement file")
    result = import_statement(file, database_of(out), format)
    report_console.print(
        f"{result.source_file} ({result.format}): statements {', '.join(result.statement_ids)}; "
        f"{result.entries_added} entries added, {result.entries_present} already loaded"
    )


def _default_as_of(database: Path) -> datetime:
    """The latest batch close or statement booking in `database` (UTC)."""
    import duckdb

    from centflow.recon.statements import ensure_statement_tables

    connection = duckdb.connect(str(database))
    try:
        ensure_statement_tables(connection)
        [(latest,)] = connection.execute(
            "SELECT epoch_us(greatest((SELECT max(closed_at) FROM settlement_batches), "
            "(SELECT max(booked_at) FROM statement_entries)))"
        ).fetchall()
    finally:
        connection.close()
    if latest is None:
        raise ConfigError(f"{database} holds no batch and no statement entry to match")
    return datetime.fromtimestamp(latest / 1e6, UTC).replace(microsecond=latest % 1_000_000)


def _as_of(text: str | None, database: Path) -> datetime:
    if text is None:
        return _default_as_of(database)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--as-of {text!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ConfigError(f"--as-of {text!r} has no time zone (add Z or +00:00)")
    return moment


def match_command(
    out: Out = Path("out"),
    as_of: Annotated[
        str | None,
        typer.Option(help="RFC 3339 moment ages are measured from (default: latest in the data)."),
    ] = None,
    grace_days: Annotated[
        int, typer.Option(help="Days a payout may wait for its entry before it is a break.")
    ] = GRACE_DAYS_DEFAULT,
    date_window_days: Annotated[
        int, typer.Option(help="Days between payout and entry that match by amount.")
    ] = DATE_WINDOW_DAYS_DEFAULT,
    tolerance: Annotated[
        str, typer.Option(help="Amount difference still matched, decimal (default 0).")
    ] = "0",
) -> None:
    """Match OUT's payouts against its imported statements; print the classes and the aging."""
    from centflow.recon.matching import reconcile

    database = database_of(out)
    try:
        allowed = Decimal(tolerance)
    except InvalidOperation:
        raise ConfigError(f"--tolerance {tolerance!r} is not a decimal amount") from None
    summary = reconcile(database, _as_of(as_of, database), grace_days, date_window_days, allowed)
    render_match(summary)


def render_match(summary: MatchSummary) -> None:
    """The matching summary: items per class, then the breaks' aging."""
    report_console.print(
        f"reconciliation as of {summary.as_of.isoformat()}: {summary.payout_lines} payout lines, "
        f"{summary.statement_entries} statement entries, grace {summary.grace_days} d"
    )
    classes = Table("class", "items", title="items by class")
    for name, count in sorted(summary.classes.items()):
        classes.add_row(name, str(count))
    report_console.print(classes)
    if summary.aging:
        aging = Table("class", "age", "currency", "items", "net", "gross", title="breaks by age")
        for row in summary.aging:
            aging.add_row(
                row.class_,
                row.age_bucket,
                row.currency,
                str(row.items),
                str(row.net),
                str(row.gross),
            )
        report_console.print(aging)
    report_console.print(
        f"{summary.breaks} breaks: SELECT * FROM recon_breaks" if summary.breaks else "no breaks"
    )


@statement_app.command("simulate")
def simulate_command(
    to: Annotated[Path, typer.Option("--to", help="The statement file to write.")],
    out: Out = Path("out"),
    seed: Annotated[int, typer.Option(help="Seed of the injected breaks.")] = 0,
    break_share: Annotated[
        float, typer.Option(help="Share of payout lines given a break, 0..1.")
    ] = 0.1,
    format: Annotated[str, typer.Option(help="csv or camt.053.")] = "csv",
    breaks: Annotated[
        Path | None, typer.Option(help="Write the injected breaks, as JSON, here.")
    ] = None,
) -> None:
    """Write a rail statement of OUT's payouts with a seeded share of injected breaks."""
    from centflow.recon.simulate import simulate_statement

    if not 0 <= break_share <= 1:
        raise ConfigError(f"--break-share {break_share} is out of range 0..1")
    simulation = simulate_statement(
        database_of(out), to, seed=seed, break_share=break_share, format=format,
        breaks_path=breaks,
    )  # fmt: skip
    kinds: dict[str, int] = {}
    for event in simulation.injected:
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    injected = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())) or "none"
    report_console.print(
        f"{to}: {simulation.entries} entries ({simulation.format}), injected: {injected}"
    )


def demo_reconciliation(out: Path, break_share: float, seed: int = 0) -> None:
    """Simulate a rail statement of `out`'s payouts with injected breaks, import it,
    match it, and say whether matching found exactly the breaks injected."""
    from centflow.recon.matching import reconcile
    from centflow.recon.simulate import simulate_statement
    from centflow.recon.statements import import_statement

    database = database_of(out)
    statement = out / "statement.xml"
    simulation = simulate_statement(
        database, statement, seed=seed, break_share=break_share, format="camt.053",
        breaks_path=out / "statement_breaks.json",
    )  # fmt: skip
    import_statement(statement, database)
    summary = reconcile(database, simulation.as_of, simulation.grace_days)
    report_console.print(
        f"\nsimulated rail statement {statement} ({simulation.entries} entries, "
        f"{len(simulation.injected)} injected events, listed in statement_breaks.json)"
    )
    render_match(summary)
    injected = {
        (event.expected_class, event.batch_ids or (event.statement_id, event.entry_ids[0]))
        for event in simulation.injected
        if event.expected_class != "matched"
    }
    found = {
        (class_, tuple(sorted(batches.split("+"))) if batches else (statement_id, entry_id))
        for class_, batches, statement_id, entry_id in _breaks(database)
    }
    verdict = "found exactly the injected breaks" if found == injected else "MISMATCH"
    report_console.print(
        f"{verdict}: {len(injected)} injected, {len(found)} found, "
        f"{len(injected - found)} missed, {len(found - injected)} not injected"
    )


def run_holding(out: Path) -> str | None:
    """Who holds `out` for a run (`centflow.ops.runner.out_dir_lock`), or None if no run does.

    While a run writes OUT, its Parquet dataset can hold a batch whose tables are
    not all written yet, so it is not loaded then: the run loads it when it ends.
    """
    import fcntl

    from centflow.ops.multihost import live_processes
    from centflow.ops.runner import LOCK_FILE

    cluster = live_processes(out) if out.is_dir() else {}
    if cluster:  # a cluster's processes hold the lock shared: ask their own locks
        index, holder = next(iter(cluster.items()))
        return f"a cluster: process {index}, {holder}"
    try:
        handle = (out / LOCK_FILE).open("r")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def write_html_report(database: Path, path: Path) -> None:
    """Write the HTML report of `database` to `path` (`centflow.recon.html`) and say where."""
    from centflow.recon.html import write_report

    write_report(database, path)
    report_console.print(f"HTML report: {path}")


def _breaks(database: Path) -> list[tuple[str, str | None, str | None, str | None]]:
    import duckdb

    connection = duckdb.connect(str(database), read_only=True)
    try:
        return connection.execute(
            "SELECT class, batch_id, statement_id, entry_id FROM recon_breaks"
        ).fetchall()
    finally:
        connection.close()
