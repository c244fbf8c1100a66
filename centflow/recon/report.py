"""The reconciliation report: what came in, what settled, and whether it all adds up.

Reads the DuckDB database a run produced (see `sinks.duckdb`) with the queries
in ``centflow/recon/queries/``; renders with rich. `Summary` is plain data so tests
can check the figures without parsing the text.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from centflow.errors import ConfigError, invariant
from centflow.risk.decision import DECISIONS

QUERIES_DIR = Path(__file__).resolve().parent / "queries"
FLAGGED_PARTIES_MAX = 10  # payers, and payees, listed with the most flagged payments
SCORE_BUCKETS = 10  # buckets of the score distribution, each 1 / SCORE_BUCKETS wide
SCORE_BAR_CHARS_MAX = 40  # the longest bar of the terminal's score distribution
SHARE_QUANTUM = Decimal("0.0001")  # shares of payments are rounded half up to this
DECISION_STYLES = {"approve": "green", "review": "dark_orange", "decline": "red"}


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


class DecisionTotals(msgspec.Struct, frozen=True):
    """The payments given one risk decision (``summary_risk_decisions``).

    `share` is of all payments, rounded half up to `SHARE_QUANTUM`; `amounts` are
    (currency, exact sum) by currency, never added across currencies; `model_errors`
    the payments among them whose features failed (reason ``model_error``).
    """

    decision: str
    payments: int
    share: Decimal
    amounts: list[tuple[str, Decimal]]
    model_errors: int


class ScoreBucket(msgspec.Struct, frozen=True):
    """Payments whose score is in one bucket, per decision (``summary_risk_scores``).

    `label` is the bucket as an interval, ``[0.3, 0.4)`` (the last one closed,
    ``[0.9, 1.0]``), or ``no score`` for payments without one.
    """

    label: str
    approve: int
    review: int
    decline: int

    @property
    def payments(self) -> int:
        return self.approve + self.review + self.decline


class FlaggedParty(msgspec.Struct, frozen=True):
    """A payer or payee with payments sent to review or declined (``summary_risk_parties``).

    Counts are of all its payments by decision; `max_score` the highest score of
    its flagged payments (None if none was scored); `reasons` (reason, flagged
    payments carrying it), the most frequent first, at most 3; `flagged_amounts`
    (currency, exact sum of its flagged payments) by currency.
    """

    role: str
    party_id: str
    payments: int
    approved: int
    reviewed: int
    declined: int
    max_score: float | None
    reasons: list[tuple[str, int]]
    flagged_amounts: list[tuple[str, Decimal]]

    @property
    def flagged(self) -> int:
        return self.reviewed + self.declined


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
    # Risk: payments per decision (every decision of DECISIONS, zeros included), the
    # score distribution (SCORE_BUCKETS buckets, then one of unscored payments if
    # any), and the payers and payees with the most flagged payments.
    decisions: list[DecisionTotals] = []
    score_buckets: list[ScoreBucket] = []
    flagged_payers: list[FlaggedParty] = []
    flagged_payees: list[FlaggedParty] = []

    @property
    def model_errors(self) -> int:
        """Payments sent to review because their features failed (reason ``model_error``)."""
        return sum(row.model_errors for row in self.decisions)

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
        decisions = decision_totals(connection.execute(query("summary_risk_decisions")).fetchall())
        buckets = score_buckets(connection.execute(query("summary_risk_scores")).fetchall())
        parties = flagged_parties(
            connection.execute(query("summary_risk_parties"), [FLAGGED_PARTIES_MAX]).fetchall()
        )
    finally:
        connection.close()
    return Summary(
        str(database),
        outcomes,
        currencies,
        checks,
        fees,
        int(repeated),
        payouts,
        decisions,
        buckets,
        [party for party in parties if party.role == "payer"],
        [party for party in parties if party.role == "payee"],
    )


def decision_totals(rows: list[tuple]) -> list[DecisionTotals]:
    """`DecisionTotals` per decision, in DECISIONS order, from ``summary_risk_decisions`` rows.

    >>> [(row.decision, row.payments, str(row.share)) for row in decision_totals(
    ...     [("approve", "USD", 2, Decimal("1.5"), 0), ("decline", "JPY", 1, Decimal(3), 0)])]
    [('approve', 2, '0.6667'), ('review', 0, '0.0000'), ('decline', 1, '0.3333')]
    """
    by_decision: dict[str, list[tuple]] = {decision: [] for decision in DECISIONS}
    for row in rows:
        invariant(row[0] in by_decision, "a payment decided %r", row[0])
        by_decision[row[0]].append(row)
    total = sum(int(row[2]) for row in rows)
    result = []
    for decision, own in by_decision.items():
        payments = sum(int(row[2]) for row in own)
        share = Decimal(payments) / total if total else Decimal(0)
        result.append(
            DecisionTotals(
                decision,
                payments,
                share.quantize(SHARE_QUANTUM, ROUND_HALF_UP),
                [(str(row[1]), row[3]) for row in own],
                sum(int(row[4]) for row in own),
            )
        )
    invariant(sum(row.payments for row in result) == total, "payments lost by decision")
    return result


def score_label(bucket: int | None) -> str:
    """The interval of score bucket `bucket` (None: no score).

    >>> score_label(0), score_label(SCORE_BUCKETS - 1), score_label(None)
    ('[0.0, 0.1)', '[0.9, 1.0]', 'no score')
    """
    if bucket is None:
        return "no score"
    invariant(0 <= bucket < SCORE_BUCKETS, "score bucket %s", bucket)
    low, high = (Decimal(edge) / SCORE_BUCKETS for edge in (bucket, bucket + 1))
    closing = "]" if bucket == SCORE_BUCKETS - 1 else ")"
    return f"[{low:.1f}, {high:.1f}{closing}"


def score_buckets(rows: list[tuple]) -> list[ScoreBucket]:
    """Every score bucket (empty ones too), then unscored payments if any, from
    ``summary_risk_scores`` rows."""
    counts: dict[int | None, dict[str, int]] = {
        bucket: dict.fromkeys(DECISIONS, 0) for bucket in range(SCORE_BUCKETS)
    }
    for bucket, decision, payments in rows:
        invariant(decision in DECISIONS, "a payment decided %r", decision)
        counts.setdefault(bucket, dict.fromkeys(DECISIONS, 0))[decision] += int(payments)
    invariant(
        set(counts) <= {*range(SCORE_BUCKETS), None}, "score buckets %s", sorted(counts, key=str)
    )
    result = [ScoreBucket(score_label(bucket), **counts[bucket]) for bucket in counts]
    invariant(
        sum(row.payments for row in result) == sum(int(row[2]) for row in rows),
        "payments lost by score bucket",
    )
    return result


def flagged_parties(rows: list[tuple]) -> list[FlaggedParty]:
    """`FlaggedParty` rows from ``summary_risk_parties`` (its structs become tuples)."""
    result = [
        FlaggedParty(
            role,
            party_id,
            int(payments),
            int(approved),
            int(reviewed),
            int(declined),
            max_score,
            [(item["reason"], int(item["payments"])) for item in reasons],
            [(item["currency"], item["amount"]) for item in amounts],
        )
        for role, party_id, payments, approved, reviewed, declined, max_score, reasons, amounts in rows
    ]
    invariant(all(party.flagged > 0 for party in result), "a party listed with nothing flagged")
    return result


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
    for table in _risk_tables(summary):
        console.print(table)
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


def _amounts(amounts: list[tuple[str, Decimal]]) -> str:
    """Exact amounts, one line per currency: '1,234.5 USD'."""
    return "\n".join(f"{_amount(amount)} {currency}" for currency, amount in amounts) or "0"


def _risk_tables(summary: Summary) -> list[Table]:
    """Decisions by class, the score distribution, the most flagged payers and payees."""
    if not any(row.payments for row in summary.decisions):
        return []
    decisions = Table(
        title="Risk decisions of payments (summary_risk_decisions; "
        f"{summary.model_errors:,} model errors)",
        title_justify="left",
    )
    for column in ("decision", "payments", "share", "amount", "model errors"):
        decisions.add_column(column, justify="left" if column == "decision" else "right")
    for row in summary.decisions:
        decisions.add_row(
            Text(row.decision, style=DECISION_STYLES.get(row.decision, "")),
            f"{row.payments:,}",
            f"{row.share:.2%}",
            _amounts(row.amounts),
            f"{row.model_errors:,}",
        )
    tables = [decisions, _score_table(summary.score_buckets)]
    for role, parties in (("payer", summary.flagged_payers), ("payee", summary.flagged_payees)):
        if parties:
            tables.append(_party_table(role, parties))
    return tables


def _score_table(buckets: list[ScoreBucket]) -> Table:
    """Payments per score bucket and decision, with a bar (the fullest about SCORE_BAR_CHARS_MAX)."""
    table = Table(
        title="Risk scores of payments, per decision (summary_risk_scores)", title_justify="left"
    )
    for column in ("score", *DECISIONS, ""):
        table.add_column(column, justify="left" if column in {"score", ""} else "right")
    largest = max((bucket.payments for bucket in buckets), default=0) or 1
    for bucket in buckets:
        bar = Text()
        for decision in DECISIONS:
            count = getattr(bucket, decision)
            # ceiling, so a bucket's every decision shows, however few its payments
            bar.append("█" * -(-count * SCORE_BAR_CHARS_MAX // largest), DECISION_STYLES[decision])
        table.add_row(bucket.label, *(f"{getattr(bucket, d):,}" for d in DECISIONS), bar)
    return table


def _reasons(reasons: list[tuple[str, int]]) -> str:
    """'card_testing ×6, velocity ×2' (the most frequent first)."""
    return ", ".join(f"{reason} ×{count:,}" for reason, count in reasons) or "–"


def _score(score: float | None) -> str:
    """A risk score to three places (a model output, not money), or a dash."""
    return "–" if score is None else f"{score:.3f}"


def _party_table(role: str, parties: list[FlaggedParty]) -> Table:
    """The parties of one role with the most payments sent to review or declined."""
    table = Table(
        title=f"{role.capitalize()}s with the most flagged payments (review or decline; "
        "summary_risk_parties)",
        title_justify="left",
    )
    for column in (role, "flagged", "review", "decline", "approve", "flagged amount",
                   "top reasons", "max score"):  # fmt: skip
        table.add_column(column, justify="left" if column in {role, "top reasons"} else "right")
    for party in parties:
        table.add_row(
            party.party_id,
            f"{party.flagged:,}",
            f"{party.reviewed:,}",
            f"{party.declined:,}",
            f"{party.approved:,}",
            _amounts(party.flagged_amounts),
            _reasons(party.reasons),
            _score(party.max_score),
        )
    return table
