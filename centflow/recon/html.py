"""The HTML reconciliation report: one self-contained page of charts and tables.

`render_report` reads a run's DuckDB file read-only (`centflow.recon.report_data`)
and returns the page; `write_report` writes it under a temporary name and
renames it, so a reader never opens half a page.

The page holds, in order: the checks (batches against their events, ledger
balance, conservation per payee), settled volume over time per currency,
risk decisions over time, statement breaks by class and by age (or a panel
saying no statement was matched), unit economics (fees alone against
netted), risk decisions by class and the score distribution per decision (the
row ``id="risk"``), the payers and payees with the most flagged payments, then
the tables the terminal report prints and the breaks' aging.

What it may not do: load anything (inline CSS and SVG from `centflow.recon.svg`,
no script, no URL; a Content-Security-Policy forbids fetching in any case);
show an amount that went through ``float`` (amounts are DECIMAL columns,
printed exactly; only chart geometry is float); depend on anything but the
data (no clock, no random id, no path: every query is sorted), so the same
data gives a byte-identical file. All text is escaped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from pathlib import Path

from centflow.errors import invariant
from centflow.limits import MICROS_PER_SECOND
from centflow.recon.matching import AGE_BUCKETS, CLASSES
from centflow.recon.report import FlaggedParty, ScoreBucket, Summary
from centflow.recon.report_data import BREAK_ITEMS_MAX, ReportData, StatementData, gather
from centflow.recon.svg import (
    Bar,
    Series,
    Share,
    amount_text,
    bar_rows,
    column_chart,
    share_rows,
    stacked_columns,
    swatches,
)

VOLUME_COLOUR = "#1f77b4"
DECISION_COLOURS = {"approve": "#2ca02c", "review": "#ff7f0e", "decline": "#d62728"}
CLASS_COLOURS = {
    "matched": "#7f7f7f",
    "amount_mismatch": "#9467bd",
    "missing_in_statement": "#8c564b",
    "unexpected_in_statement": "#e377c2",
    "timing": "#17becf",
}
ALONE_COLOUR, NETTED_COLOUR = "#bcbd22", "#393b79"
BREAK_CLASSES = tuple(name for name in CLASSES if name != "matched")

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#fff;color:#2b2f36;font:13px/1.4 system-ui,-apple-system,"Segoe UI",
"DejaVu Sans",sans-serif}
main{max-width:1240px;margin:0 auto;padding:16px 20px 40px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:0 0 6px}h3{font-size:13px;margin:4px 0}
.sub{color:#5d6470;margin:0 0 12px}
.panel{border:1px solid #dfe2e6;border-radius:6px;padding:10px 12px;margin:0 0 14px;background:#fbfbfc}
.row{display:flex;flex-wrap:wrap;gap:14px}.row>.panel{flex:1 1 560px}
.multiples{display:flex;flex-wrap:wrap;gap:6px 12px}
.multiples figure{margin:0}.multiples figcaption{font-size:11px;color:#5d6470}
.chart{display:block;max-width:100%}
.checks{display:flex;flex-wrap:wrap;gap:8px}
.badge{border-radius:4px;padding:3px 8px;font-weight:600}
.pass{background:#e3f4e6;color:#1d6b2c}.fail{background:#fbe1e1;color:#9b1c1c}
.note{background:#fdf3d8;color:#7a5300}
.empty{padding:18px;text-align:center;color:#5d6470;border:1px dashed #c9ced4;border-radius:6px}
.swatch{margin-right:12px;font-size:11px}
.swatch i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:4px 0 10px;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:2px 0 4px}
th,td{padding:3px 8px;border-bottom:1px solid #e3e5e8;text-align:left;white-space:nowrap}
th{background:#f0f2f4}td.num,th.num{text-align:right}
"""


class Safe(str):
    """Markup made here, put into the page as it is (everything else is escaped)."""


def _utc(moment_us: int) -> str:
    """'2026-11-02 09:00' (UTC) for µs since the epoch.

    >>> _utc(1_793_610_000_000_000)
    '2026-11-02 09:00'
    """
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=moment_us)
    return moment.strftime("%Y-%m-%d %H:%M")


def _buckets(rows_us: Sequence[int], step_us: int) -> list[int]:
    """Every bucket start from the first to the last of `rows_us`, gaps included."""
    if not rows_us:
        return []
    return list(range(min(rows_us), max(rows_us) + 1, step_us))


def render_report(database: Path) -> str:
    """The page for `database`: the same data gives the same text."""
    data = gather(database)
    body = [
        _header(data),
        _checks(data.summary),
        _volume_panel(data),
        Safe('<div class="row">'),
        _decisions_panel(data),
        _breaks_panel(data.statement),
        Safe("</div>"),
        _economics_panel(data),
        Safe('<div class="row" id="risk">'),
        _decision_class_panel(data.summary),
        _scores_panel(data.summary.score_buckets),
        Safe("</div>"),
        _flagged_panel(data.summary),
        _tables(data),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>centflow reconciliation report</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


def write_report(database: Path, path: Path) -> Path:
    """Write the page for `database` to `path` atomically (temporary name, then rename)."""
    text = render_report(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8", newline="\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    invariant(path.stat().st_size == len(text.encode()), "%s was not written whole", path)
    return path


def _header(data: ReportData) -> str:
    summary = data.summary
    events = sum(count for name, count in summary.outcomes if not name.startswith("dead letter"))
    dead = sum(count for name, count in summary.outcomes if name.startswith("dead letter"))
    batches = sum(row.batches for row in summary.currencies)
    facts = [
        f"{events:,} events, {dead:,} dead letters",
        f"{batches:,} batches in {len(summary.currencies)} currencies",
        f"DuckDB file {Path(summary.database).name}",
    ]
    if data.statement is not None:
        facts.append(f"statement matched as of {_utc(data.statement.as_of_us)} UTC")
    return Safe(
        "<h1>centflow reconciliation report</h1>"
        f'<p class="sub">{escape(" · ".join(facts))}. Times are UTC; amounts are exact, '
        "in each currency's major unit; currencies are never added together.</p>"
    )


def _checks(summary: Summary) -> str:
    badges = [
        f'<span class="badge {"pass" if failures == 0 else "fail"}">'
        f"{'pass' if failures == 0 else f'FAIL ({failures:,})'} · {escape(name)}</span>"
        for name, failures in summary.checks
    ]
    if summary.repeated_event_ids:
        badges.append(
            f'<span class="badge note">note · {summary.repeated_event_ids:,} event id(s) '
            "settled more than once (recon_event_repeats)</span>"
        )
    return Safe(
        f'<section class="panel"><h2>Checks</h2><div class="checks">{"".join(badges)}</div></section>'
    )


def _panel(title: str, subtitle: str, content: str) -> str:
    return Safe(
        f'<section class="panel"><h2>{escape(title)}</h2>'
        f'<p class="sub">{escape(subtitle)}</p>{content}</section>'
    )


def _volume_panel(data: ReportData) -> str:
    by_currency: dict[str, dict[int, tuple[int, Decimal]]] = {}
    for currency, bucket, batches, gross in data.volume:
        by_currency.setdefault(currency, {})[bucket] = (int(batches), gross)
    every = _buckets([row[1] for row in data.volume], data.volume_step_us)
    figures = []
    for currency in sorted(by_currency):
        series = by_currency[currency]
        total = sum((gross for _, gross in series.values()), Decimal(0))
        bars = []
        for bucket in every:
            batches, gross = series.get(bucket, (0, Decimal(0)))
            tooltip = (
                f"{_utc(bucket)} UTC: gross {amount_text(gross)} {currency}, {batches:,} batches"
            )
            bars.append(Bar(_utc(bucket)[5:], gross, tooltip))
        label = f"{currency}: gross {amount_text(total)}"
        figures.append(
            f"<figure>{column_chart(bars, VOLUME_COLOUR, label, width=280)}"
            f"<figcaption>{escape(label)}</figcaption></figure>"
        )
    step = _duration(data.volume_step_us)
    content = (
        f'<div class="multiples">{"".join(figures)}</div>'
        if figures
        else _empty("nothing has settled")
    )
    return _panel(
        "Settled volume per currency",
        f"Gross of the settled batches per {step} of their window start; each currency on its own scale.",
        content,
    )


def _duration(step_us: int) -> str:
    """'1 h', '15 min', '1 d' for a bucket length.

    >>> _duration(3_600_000_000), _duration(900_000_000), _duration(172_800_000_000)
    ('1 h', '15 min', '2 d')
    """
    seconds = step_us // MICROS_PER_SECOND
    for unit, length in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % length == 0:
            return f"{seconds // length} {unit}"
    return f"{seconds} s"


def _empty(text: str) -> str:
    return f'<div class="empty">{escape(text)}</div>'


def _decisions_panel(data: ReportData) -> str:
    counts = {(bucket, decision): int(events) for bucket, decision, events in data.decisions}
    every = _buckets([row[0] for row in data.decisions], data.decision_step_us)
    names = sorted({decision for _, decision in counts}, key=_decision_order)
    figures = []
    for decision in names:
        total = sum(count for (_, name), count in counts.items() if name == decision)
        bars = [
            Bar(_utc(bucket)[11:] if len(every) <= 24 else _utc(bucket)[5:],
                counts.get((bucket, decision), 0),
                f"{_utc(bucket)} UTC: {counts.get((bucket, decision), 0):,} {decision}")
            for bucket in every
        ]  # fmt: skip
        label = f"{decision}: {total:,} events"
        colour = DECISION_COLOURS.get(decision, "#555b66")
        figures.append(
            f"<figure>{column_chart(bars, colour, label, width=560, height=110)}"
            f"<figcaption>{escape(label)}</figcaption></figure>"
        )
    content = f'<div class="multiples">{"".join(figures)}</div>' if figures else _empty("no events")
    return _panel(
        "Risk decisions over time",
        f"Events (payments, refunds, chargebacks) per {_duration(data.decision_step_us)} of "
        "occurred_at, by decision; each decision on its own scale.",
        content,
    )


def _amount_lines(amounts: Sequence[tuple[str, Decimal]]) -> Safe:
    """Exact amounts, one line per currency ('1,234.5 USD'), as cell markup."""
    lines = [escape(f"{amount_text(amount)} {currency}") for currency, amount in amounts]
    return Safe("<br>".join(lines) or "0")


def _decision_class_panel(summary: Summary) -> str:
    """Payments per decision (a bar each, in DECISION_COLOURS), their share and amounts."""
    rows = summary.decisions
    if not any(row.payments for row in rows):
        return _panel("Risk decisions by class", "Payments per decision.", _empty("no payments"))
    bars = []
    for row in rows:
        amounts = ", ".join(f"{amount_text(a)} {currency}" for currency, a in row.amounts)
        tooltip = f"{row.decision}: {row.payments:,} payments ({_percent(row.share)})" + (
            f", {amounts}" if amounts else ""
        )
        bars.append((Bar(row.decision, row.payments, tooltip), _decision_colour(row.decision)))
    table = _table(
        "Payments per decision (summary_risk_decisions)",
        ("decision", "payments", "share", "amount", "model errors"),
        [
            (
                row.decision,
                row.payments,
                _percent(row.share),
                _amount_lines(row.amounts),
                row.model_errors,
            )
            for row in rows
        ],
    )
    return _panel(
        "Risk decisions by class",
        f"Payments (type payment; refunds and chargebacks follow theirs) per decision, their "
        f"share and amount per currency; {summary.model_errors:,} sent to review as model "
        "errors (reason model_error).",
        bar_rows(bars, "payments per decision", width=560) + table,
    )


def _decision_colour(decision: str) -> str:
    return DECISION_COLOURS.get(decision, "#555b66")


def _bucket_tick(bucket: ScoreBucket) -> str:
    """A bucket's axis label, its lower edge: '0.3' for '[0.3, 0.4)', 'none' unscored.

    >>> _bucket_tick(ScoreBucket("[0.3, 0.4)", 1, 0, 0)), _bucket_tick(ScoreBucket("no score", 0, 0, 1))
    ('0.3', 'none')
    """
    if not bucket.label.startswith("["):
        return "none"
    return bucket.label[1:].partition(",")[0]


def _scores_panel(buckets: Sequence[ScoreBucket]) -> str:
    """The score distribution: payments per score bucket, one chart per decision."""
    figures = []
    for decision in DECISION_COLOURS:
        counts = [getattr(bucket, decision) for bucket in buckets]
        bars = [
            Bar(_bucket_tick(bucket), count, f"score {bucket.label}: {count:,} {decision}")
            for bucket, count in zip(buckets, counts, strict=True)
        ]
        label = f"{decision}: {sum(counts):,} payments"
        chart = column_chart(bars, _decision_colour(decision), label, width=560, height=100)
        figures.append(f"<figure>{chart}<figcaption>{escape(label)}</figcaption></figure>")
    content = (
        f'<div class="multiples">{"".join(figures)}</div>'
        if any(bucket.payments for bucket in buckets)
        else _empty("no payments")
    )
    return _panel(
        "Risk score distribution",
        "Payments per score bucket of 0.1 (the last one [0.9, 1.0]), by decision; each "
        "decision on its own scale.",
        content,
    )


def _flagged_panel(summary: Summary) -> str:
    """The payers and payees with the most payments sent to review or declined."""
    tables = [
        _party_table(role, parties)
        for role, parties in (("payer", summary.flagged_payers), ("payee", summary.flagged_payees))
        if parties
    ]
    return _panel(
        "Most flagged payers and payees",
        "The parties with the most payments sent to review or declined (ties by id): "
        "payments by decision, the flagged amount per currency, the reasons their flagged "
        "payments carry most often, and the highest score among them (summary_risk_parties).",
        "".join(tables) or _empty("no payment was sent to review or declined"),
    )


def _party_table(role: str, parties: Sequence[FlaggedParty]) -> str:
    return _table(
        f"{role.capitalize()}s with the most flagged payments",
        (role, "top reasons", "flagged", "review", "decline", "approve", "flagged amount",
         "max score"),
        [
            (party.party_id,
             ", ".join(f"{reason} ×{count:,}" for reason, count in party.reasons) or "–",
             party.flagged, party.reviewed, party.declined, party.approved,
             _amount_lines(party.flagged_amounts),
             "–" if party.max_score is None else f"{party.max_score:.3f}")
            for party in parties
        ],
        left=2,
    )  # fmt: skip


def _decision_order(decision: str) -> tuple[int, str]:
    order = tuple(DECISION_COLOURS)
    return (order.index(decision) if decision in order else len(order), decision)


def _breaks_panel(statement: StatementData | None) -> str:
    if statement is None:
        return _panel(
            "Statement breaks",
            "Payouts against a bank or rail statement.",
            _empty(
                "No statement matched: import one with `centflow recon import FILE --out OUT`, "
                "then `centflow recon match --out OUT`."
            ),
        )
    by_class = {name: 0 for name in CLASSES}
    by_age = {(name, bucket): 0 for name in CLASSES for bucket in AGE_BUCKETS}
    for name, bucket, count in statement.items:
        by_class[name] = by_class.get(name, 0) + count
        by_age[(name, bucket)] = by_age.get((name, bucket), 0) + count
    breaks = sum(by_class[name] for name in BREAK_CLASSES)
    class_rows = [
        (Bar(name, by_class[name], f"{by_class[name]:,} {name}"), CLASS_COLOURS[name])
        for name in BREAK_CLASSES
    ]
    layers = [
        Series(name, CLASS_COLOURS[name], tuple(by_age[(name, bucket)] for bucket in AGE_BUCKETS))
        for name in BREAK_CLASSES
    ]
    legend = swatches([(name, CLASS_COLOURS[name]) for name in BREAK_CLASSES])
    content = (
        f"<h3>Breaks by class</h3>{bar_rows(class_rows, 'breaks by class')}"
        f"<h3>Breaks by age</h3>{stacked_columns(AGE_BUCKETS, layers, 'breaks by age', width=420)}"
        f"<div>{legend}</div>"
    )
    if not breaks:
        content = _empty("No breaks: every payout and every statement entry is matched.") + content
    items = sum(by_class.values())
    return _panel(
        "Statement breaks",
        f"{items:,} items: {by_class['matched']:,} matched, {breaks:,} breaks; as of "
        f"{_utc(statement.as_of_us)} UTC, grace {statement.grace_days} d, date window "
        f"{statement.date_window_days} d, tolerance {amount_text(statement.tolerance)}.",
        content,
    )


def _economics_panel(data: ReportData) -> str:
    fees = data.summary.fees
    if not fees:
        return _panel("Unit economics", "Fees alone against netted.", _empty("no settled fees"))
    rows = []
    for row in fees:
        share = row.saving / row.fees_if_alone if row.fees_if_alone else Decimal(0)
        text = (
            f"netted {amount_text(row.fees_netted)} of {amount_text(row.fees_if_alone)} alone: "
            f"saved {amount_text(row.saving)} {row.currency} ({share:.0%}) over {row.payments:,} payments"
        )
        rows.append(Share(row.currency, row.fees_if_alone, row.fees_netted, text))
    legend = swatches(
        [
            ("fees had each payment settled alone", ALONE_COLOUR),
            ("fees netted in batches", NETTED_COLOUR),
        ]
    )
    return _panel(
        "Unit economics",
        "Fees netted in batches as a share of the fees had every payment been settled alone "
        "(recon_unit_economics), per currency.",
        share_rows(rows, ALONE_COLOUR, NETTED_COLOUR, "fees netted against alone", width=1100)
        + f"<div>{legend}</div>",
    )


def _cell(value: object) -> str:
    """Text of one table cell: amounts exact, booleans as yes/no, null as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int | Decimal):
        return amount_text(value)
    invariant(not isinstance(value, float), "a float reached the report: %r", value)
    return str(value)


def _table(
    caption: str, headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1
) -> str:
    """An HTML table; the first `left` columns are text, the rest numbers (right-aligned)."""
    head = "".join(
        f"<th{_align(index, left)}>{escape(name)}</th>" for index, name in enumerate(headers)
    )
    body = []
    for row in rows:
        invariant(
            len(row) == len(headers), "row of %s cells under %s headers", len(row), len(headers)
        )
        cells = "".join(
            f"<td{_align(index, left)}>"
            f"{value if isinstance(value, Safe) else escape(_cell(value))}</td>"
            for index, value in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="scroll"><table><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _percent(share: Decimal | None) -> str:
    """A share (a DECIMAL fraction) as an exact percentage.

    >>> _percent(Decimal("0.2248")), _percent(Decimal("1.0000")), _percent(None)
    ('22.48 %', '100 %', '–')
    """
    return "–" if share is None else f"{amount_text(share * 100)} %"


def _align(index: int, left: int) -> str:
    """The class attribute of a cell: numbers (the columns from `left` on) align right."""
    return "" if index < left else ' class="num"'


def _tables(data: ReportData) -> str:
    summary = data.summary
    parts = [
        _table("Events", ("outcome", "count"), summary.outcomes),
        _table(
            "Settled, per currency",
            (
                "currency",
                "batches",
                "events",
                "late",
                "gross",
                "refunds",
                "fees",
                "net",
                "payout",
                "ledger",
            ),
            [
                (
                    row.currency,
                    row.batches,
                    row.events,
                    row.late,
                    row.gross,
                    row.refunds,
                    row.fees,
                    row.net,
                    row.payout,
                    "balanced"
                    if row.ledger_balanced
                    else f"off by {amount_text(row.ledger_balance)}",
                )
                for row in summary.currencies
            ],
        ),
        _table(
            "Ledger balance per currency (recon_ledger_balance)",
            ("currency", "entries", "batches", "debits", "credits", "balance", "balanced"),
            data.ledger,
        ),
        _table(
            "Conservation per currency: accrued = paid out + fees + carried, for every payee "
            "(recon_payee_conservation; paid out and carried in the settlement currency)",
            (
                "currency",
                "paid in",
                "payees",
                "unbalanced",
                "accrued",
                "fees",
                "paid out",
                "carried",
            ),
            data.conservation,
        ),
        _table(
            "Unit economics per currency and rail (recon_unit_economics)",
            (
                "currency",
                "rail",
                "payments",
                "batches",
                "fees alone",
                "fees netted",
                "saved",
                "saved share",
                "margin",
                "own fee > value",
            ),
            [(*row[:7], _percent(row[7]), row[8], _percent(row[9])) for row in data.economics],
            left=2,
        ),
    ]
    if data.summary.score_buckets:
        parts.append(
            _table(
                "Risk scores of payments per bucket and decision (summary_risk_scores)",
                ("score", *DECISION_COLOURS),
                [
                    (bucket.label, *(getattr(bucket, name) for name in DECISION_COLOURS))
                    for bucket in data.summary.score_buckets
                ],
            )
        )
    if data.statement is not None:
        parts += _statement_tables(data.statement)
    return Safe(f'<section class="panel"><h2>Tables</h2>{"".join(parts)}</section>')


def _statement_tables(statement: StatementData) -> list[str]:
    shown = statement.break_items[:BREAK_ITEMS_MAX]
    more = len(statement.break_items) > BREAK_ITEMS_MAX
    caption = (
        f"Breaks, oldest and largest first (the first {BREAK_ITEMS_MAX}; all in recon_breaks)"
        if more
        else "Breaks, oldest and largest first (recon_breaks)"
    )
    return [
        _table(
            "Statement entries per currency (statement_entries)",
            ("currency", "entries", "credits", "debits"),
            statement.entries,
        ),
        _table(
            "Breaks per class, age and currency (recon_aging; net and gross of the differences)",
            ("class", "age", "currency", "items", "net", "gross", "oldest, days"),
            statement.aging,
            left=3,
        ),
        _table(
            caption,
            (
                "item",
                "class",
                "batch",
                "statement",
                "entry",
                "currency",
                "expected",
                "actual",
                "difference",
                "age, days",
                "age",
            ),
            shown,
            left=6,
        ),
    ]
