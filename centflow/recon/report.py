"""The reconciliation report: what came in, what settled, and whether it all adds up.

Reads the DuckDB database a run produced (see `sinks.duckdb`) with the queries
in ``centflow/recon/queries/``; renders with rich. `Summary` is plain data so tests
can check the figures without parsing the text.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import msgspec
from rich.console import Console
from rich.table import Table

from centflow.errors import ConfigError

QUERIES_DIR = Path(__file__).resolve().parent / "queries"


class CurrencyTotals(msgspec.Struct, frozen=True):
    currency: str
    batches: int
    events: int
    late: int
    gross: Decimal
    refunds: Decimal
    fees: Decimal
    net: Decimal
    payout: Decimal
    ledger_balanced: bool
    ledger_balance: Decimal


class CurrencyFees(msgspec.Struct, frozen=True):
    """Fees of one currency: alone, netted, the saving, margin (`recon_unit_economics`)."""

    currency: str
    payments: int
    fees_if_alone: Decimal
    fees_netted: Decimal
    saving: Decimal
    margin: Decimal
    share_unpayable_alone: Decimal


class CurrencyPayouts(msgspec.Struct, frozen=True):
    """What was paid out in one settlement currency (``summary_payouts``)."""

    currency: str
    batches: int
    lines: int
    payout: Decimal
    to_split_parties: Decimal
    carried: Decimal
    fx_in: Decimal
    fx_spread: Decimal
    awaiting_rate: int


class Summary(msgspec.Struct, frozen=True):
    database: str
    outcomes: list[tuple[str, int]]
    currencies: list[CurrencyTotals]
    checks: list[tuple[str, int]]
    fees: list[CurrencyFees] = []
    # Event ids in payments more than once (`recon_event_repeats`): not a fault of
    # the tables, but each copy settled, so someone should look.
    repeated_event_ids: int = 0
    payouts: list[CurrencyPayouts] = []

    @property
    def ok(self) -> bool:
        """True when every reconciliation check passed."""
        return all(failures == 0 for _, failures in self.checks)

    def count(self, outcome: str) -> int:
        """The count of one outcome row (0 if absent)."""
        return next((count for name, count in self.outcomes if name == outcome), 0)


def query(name: str) -> str:
    """The text of ``centflow/recon/queries/<name>.sql``."""
    return (QUERIES_DIR / f"{name}.sql").read_text()


def summarize(database: Path) -> Summary:
    """Run the summary queries against a run's database (read-only)."""
    if not database.exists():
        raise ConfigError(
            f"no database at {database}: run `centflow run --out {database.parent}` first"
        )
    connection = duckdb.connect(str(database), read_only=True)
    try:
        outcomes = [
            (str(name), int(count))
            for name, count in connection.execute(query("summary_events")).fetchall()
        ]
        currencies = [
            CurrencyTotals(*row)
            for row in connection.execute(query("summary_currencies")).fetchall()
        ]
        checks = [
            (str(name), int(failures))
            for name, failures in connection.execute(query("summary_checks")).fetchall()
        ]
        (repeated,) = connection.execute(query("summary_repeats")).fetchall()[0]
        fees = [CurrencyFees(*row) for row in connection.execute(query("summary_fees")).fetchall()]
        payouts = [
            CurrencyPayouts(*row) for row in connection.execute(query("summary_payouts")).fetchall()
        ]
    finally:
        connection.close()
    return Summary(str(database), outcomes, currencies, checks, fees, int(repeated), payouts)


def render(summary: Summary, console: Console) -> None:
    """Print the report."""
    outcomes = Table(title="Events", title_justify="left")
    outcomes.add_column("outcome")
    outcomes.add_column("count", justify="right")
    for name, count in summary.outcomes:
        outcomes.add_row(name, f"{count:,}")
    console.print(outcomes)
    money = Table(title="Settled, per currency", title_justify="left")
    for column in (
        "currency",
        "batches",
        "events",
        "late",
        "gross",
        "refunds",
        "fees",
        "net",
        "paid out",
        "ledger",
    ):
        money.add_column(column, justify="left" if column == "currency" else "right")
    for row in summary.currencies:
        money.add_row(
            row.currency,
            f"{row.batches:,}",
            f"{row.events:,}",
            f"{row.late:,}",
            *(
                f"{value:,.6f}".rstrip("0").rstrip(".")
                for value in (row.gross, row.refunds, row.fees, row.net, row.payout)
            ),
            "balanced" if row.ledger_balanced else f"[red]off by {row.ledger_balance}[/red]",
        )
    console.print(money)
    if summary.payouts:
        console.print(_payout_table(summary.payouts))
    if summary.fees:
        console.print(_fee_table(summary.fees))
    for name, failures in summary.checks:
        mark = "[green]pass[/green]" if failures == 0 else f"[red]FAIL ({failures})[/red]"
        console.print(f"  {mark}  {name}")
    if summary.repeated_event_ids:
        console.print(
            f"  [yellow]note[/yellow]  {summary.repeated_event_ids:,} event id(s) settled more "
            "than once: see the view recon_event_repeats"
        )
    console.print(f"DuckDB: {summary.database}")


def _amount(value: Decimal) -> str:
    return f"{value:,.6f}".rstrip("0").rstrip(".")


def _payout_table(payouts: list[CurrencyPayouts]) -> Table:
    """Payouts per settlement currency: split parties' share, carry, FX."""
    table = Table(title="Paid out, per settlement currency (summary_payouts)", title_justify="left")
    for column in ("currency", "batches", "lines", "payout", "to split parties", "carried",
                   "from FX", "FX spread", "awaiting rate"):  # fmt: skip
        table.add_column(column, justify="left" if column == "currency" else "right")
    for row in payouts:
        table.add_row(
            row.currency,
            f"{row.batches:,}",
            f"{row.lines:,}",
            _amount(row.payout),
            _amount(row.to_split_parties),
            _amount(row.carried),
            _amount(row.fx_in),
            _amount(row.fx_spread),
            f"{row.awaiting_rate:,}" if row.awaiting_rate else "0",
        )
    return table


def _fee_table(fees: list[CurrencyFees]) -> Table:
    """Fees had every payment settled alone, against the batches' (unit economics)."""
    table = Table(
        title="Fees: every payment alone, against netted in batches (recon_unit_economics)",
        title_justify="left",
    )
    for column in ("currency", "payments", "alone", "netted", "saved", "margin", "own fee > value"):
        table.add_column(column, justify="left" if column == "currency" else "right")
    for row in fees:
        share = row.saving / row.fees_if_alone if row.fees_if_alone else Decimal(0)
        table.add_row(
            row.currency,
            f"{row.payments:,}",
            _amount(row.fees_if_alone),
            _amount(row.fees_netted),
            f"{_amount(row.saving)} ({share:.0%})",
            _amount(row.margin),
            f"{row.share_unpayable_alone:.0%}",
        )
    return table
