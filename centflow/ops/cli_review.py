"""``centflow review list|release|decline``: the queue of payments held for review.

They work on a run's output directory while a run uses it or not: ``list`` reads
the Parquet dataset (and the resolution file); ``release`` and ``decline``
append to ``OUT/reviews/resolutions.jsonl``, which the next run (or the one
following a topic, within a second) settles (`centflow.risk.review` says how).
Resolving is idempotent: the same resolution again changes nothing and says
so; the opposite one, an unknown id, or a payment not in review is one line,
exit status 2, and nothing is written.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from centflow.ingest.timeparse import format_us
from centflow.risk import review

review_app = typer.Typer(
    no_args_is_help=True, help="Payments held for review: list, release, decline."
)
report_console = Console(width=None if sys.stdout.isatty() else 132, soft_wrap=True)

Out = Annotated[Path, typer.Option(help="A run's output directory.")]
EventIds = Annotated[list[str], typer.Argument(help="Event ids of payments in review.")]
Note = Annotated[str | None, typer.Option(help="Why (one line, kept with the resolution).")]


def _amount(amount: Decimal) -> str:
    """An exact amount without trailing zeros.

    >>> _amount(Decimal("1000.010000")), _amount(Decimal("5.000000"))
    ('1000.01', '5')
    """
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _row_data(row: review.Reviewed) -> dict[str, object]:
    return {
        "event_id": row.event_id,
        "occurred_at": format_us(row.occurred_us),
        "payer_id": row.payer_id,
        "payee_id": row.payee_id,
        "amount": _amount(row.amount),
        "currency": row.currency,
        "risk_score": row.risk_score,
        "reasons": row.risk_reasons.split(";") if row.risk_reasons else [],
    }


@review_app.command("list")
def list_command(
    out: Out = Path("out"),
    json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Payments in review and not yet resolved, oldest first."""
    pending = review.pending_reviews(out)
    if json:
        data = {
            "waiting": [_row_data(row) for row in pending.waiting],
            "resolved_not_settled": [
                {
                    **_row_data(row),
                    "outcome": review.REVIEW_OUTCOME[resolution.outcome],
                    "resolved_at": format_us(resolution.resolved_us),
                }
                for row, resolution in pending.recorded
            ],
        }
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(data)).decode() + "\n")
        return
    if not pending.waiting:
        report_console.print(f"no payment waiting for review in {out}")
    table = Table(title=f"Payments in review in {out}: {len(pending.waiting)}")
    for name, justify in (
        ("event_id", "left"),
        ("occurred_at", "left"),
        ("payer", "left"),
        ("payee", "left"),
        ("amount", "right"),
        ("currency", "left"),
        ("score", "right"),
        ("reasons", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in pending.waiting:
        table.add_row(
            row.event_id,
            review.to_the_second(row.occurred_us),
            row.payer_id,
            row.payee_id,
            _amount(row.amount),
            row.currency,
            "" if row.risk_score is None else f"{row.risk_score:.2f}",
            (row.risk_reasons or "").replace(";", ", "),
        )
    if pending.waiting:
        report_console.print(table)
    if pending.recorded:
        report_console.print(
            f"{len(pending.recorded)} more resolved, to be applied by the next run: "
            + ", ".join(
                f"{row.event_id} {review.REVIEW_OUTCOME[resolution.outcome]}"
                for row, resolution in pending.recorded[:10]
            )
            + (" ..." if len(pending.recorded) > 10 else "")
        )


def _resolve(event_ids: list[str], out: Path, outcome: str, note: str | None) -> None:
    unique = list(dict.fromkeys(event_ids))
    note = review.check_note(note)
    rows = review.resolvable(out, unique)
    results = review.append_resolutions(
        out, [(row.payee_id, row.event_id, outcome) for row in rows], note
    )
    done = review.REVIEW_OUTCOME[outcome]
    for resolution, recorded in results:
        when = review.to_the_second(resolution.resolved_us)
        if recorded:
            then = (
                f"the next run into {out} settles it in its payee's next batch"
                if outcome == "release"
                else "it never settles"
            )
            report_console.print(
                f"{resolution.event_id}: {done} at {when} (resolution {resolution.sequence}); {then}"
            )
        else:
            report_console.print(
                f"{resolution.event_id}: already {done} at {when}; nothing changed"
            )


@review_app.command("release")
def release_command(event_ids: EventIds, out: Out = Path("out"), note: Note = None) -> None:
    """Release payments held for review: they (and reversals held with them) settle."""
    _resolve(event_ids, out, "release", note)


@review_app.command("decline")
def decline_command(event_ids: EventIds, out: Out = Path("out"), note: Note = None) -> None:
    """Decline payments held for review: they (and reversals held with them) never settle."""
    _resolve(event_ids, out, "decline", note)
