"""Differential tests of the reconciliation SQL against short Python twins.

Every view in ``schemas/recon_*.sql`` and every report query in
``centflow/queries/*.sql`` runs in an in-memory DuckDB (tables made by
`create_schema`, rows loaded through `sinks.arrow.rows_to_table`, the
production path) on hypothesis-generated `payments`, `settlement_batches`,
`ledger_entries` and `dead_letters`, and must return exactly what a Python
twin computes from the same rows with exact Decimals.

The generated data includes every kind of trouble the views exist to catch:
batches whose figures differ from their events (count, gross, refunds, or a
net that is not gross - refunds - fees), payments naming a batch that does not
exist, batches that no payment names, unsettled payments, and ledgers that do
not balance in some currency; amounts reach the largest DECIMAL(18,6).
For the risk queries, payments come from a few payers and payees (so ties in
rank are common, and "payer-10" sorts before "payer-2"), with scores on and
beside the bucket edges (0, 0.1, 1.0, none) and `;`-joined reasons that repeat,
are empty, or name `model_error`.
A pinned scenario checks named statuses, so twin and SQL cannot be wrong together.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from centflow.limits import AMOUNT_MICROS_MAX
from centflow.recon.report import FLAGGED_PARTIES_MAX, QUERIES_DIR, query, summarize
from centflow.recon.tables import TABLES
from sinks.arrow import rows_to_table
from sinks.duckdb import create_schema, recon_view_files

BATCH_IDS = ("b-0", "b-1", "b-2", "b-3", "b-4")
CURRENCIES = ("USD", "JPY", "BHD")
MINUTE_US = 60_000_000
TWINNED_VIEWS = {
    "recon_account_balances",
    "recon_batch_totals",
    "recon_event_repeats",
    "recon_ledger_balance",
    "recon_payee_conservation",
    "recon_unit_economics",
}
TWINNED_QUERIES = {
    "summary_checks",
    "summary_currencies",
    "summary_events",
    "summary_fees",
    "summary_payouts",
    "summary_repeats",
    "summary_risk_decisions",
    "summary_risk_parties",
    "summary_risk_scores",
}
RAILS = ("card", "sepa")
PAYERS = ("payer-1", "payer-2", "payer-10")
PAYEES = ("payee-1", "payee-2", "payee-3")
REASONS = ("model_error", "tier_limit", "card_testing", "velocity", "")
DECISION_RANK = {"approve": 0, "review": 1, "decline": 2}  # the order the risk queries use


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def dec(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6)


@dataclass
class Tables:
    """Rows in `centflow.recon.tables` column order (money as int micro-units)."""

    payments: list[tuple] = field(default_factory=list)
    settlement_batches: list[tuple] = field(default_factory=list)
    settlement_fees: list[tuple] = field(default_factory=list)
    settlement_payouts: list[tuple] = field(default_factory=list)
    settlement_fx: list[tuple] = field(default_factory=list)
    ledger_entries: list[tuple] = field(default_factory=list)
    dead_letters: list[tuple] = field(default_factory=list)


def payment(
    index: int,
    kind: str,
    batch_id: str | None,
    amount: int,
    currency: str,
    decision: str,
    event_id: str | None = None,
    payee_id: str = "payee-1",
    *,
    payer_id: str = "payer-1",
    risk_score: float | None = 0.5,
    risk_reasons: str | None = None,
) -> tuple:
    return (
        event_id or f"evt-{index}",
        kind,
        index * 1_000_000,
        index * 1_000_000,
        payer_id,
        payee_id,
        amount,
        currency,
        "card",
        "US",
        None if kind == "payment" else "evt-0",
        risk_score,
        decision,
        "m1",
        risk_reasons,
        batch_id,
        False,
        None,
        None,
        f"log:{index}",
        "pending" if decision == "review" else None,  # held for review, not yet resolved
        None,
        None,
    )


def batch(
    batch_id: str,
    currency: str,
    window: int,
    count: int,
    late: int,
    gross: int,
    refunds: int,
    fees: int,
    net: int,
    fx: tuple[str, str, int, int] | None = None,
) -> tuple:
    """A batch row; `fx` = (settlement currency, status, converted, spread)."""
    target, status, converted, spread = fx or (currency, "settled", None, None)
    credited = net if converted is None else converted - spread
    payout = 0 if status != "settled" else credited - credited % 10_000
    return (
        batch_id,
        "payee-1",
        currency,
        window * MINUTE_US,
        (window + 1) * MINUTE_US,
        0,
        count,
        late,
        gross,
        refunds,
        fees,
        net,
        target,
        None if status != "settled" else Decimal(1),
        payout,
        0,
        0 if status != "settled" else credited - payout,
        (window + 1) * MINUTE_US,
        status,
        None if status != "settled" else converted,
        None if status != "settled" else spread,
        None if status != "settled" else (window + 1) * MINUTE_US,
    )


def entry(index: int, batch_id: str, currency: str, amount: int) -> tuple:
    return (
        f"e-{index:04d}",
        batch_id,
        None,
        "payment",
        f"account-{index % 3}",
        currency,
        amount,
        (9 - sum(map(ord, batch_id)) % 7) // 2 * MINUTE_US,  # out of id order, ties too
    )


def dead_letter(index: int, reason: str) -> tuple:
    return (f"log:dead:{index}", reason, "detail", b"raw", 0)


# Strategy ---------------------------------------------------------------------

amounts = st.one_of(st.integers(1, 10**15), st.sampled_from([1, 10_000, 999_999]))
postings = st.one_of(st.integers(0, AMOUNT_MICROS_MAX), st.sampled_from([0, 1, AMOUNT_MICROS_MAX]))
PERTURBATIONS = ("none", "none", "none", "none", "count", "gross", "refunds", "net")
scores = st.one_of(
    st.none(),
    st.floats(0, 1),
    st.sampled_from([0.0, 0.1, 0.09999999999999999, 0.30000000000000004, 0.7, 0.9, 0.95, 1.0]),
)
reason_lists = st.none() | st.lists(st.sampled_from(REASONS), max_size=3).map(";".join)
risk_columns = st.tuples(
    st.sampled_from(PAYERS), st.sampled_from(PAYEES), scores, reason_lists
)  # (payer_id, payee_id, risk_score, risk_reasons)


@st.composite
def scenarios(draw: st.DrawFn) -> Tables:
    tables = Tables()
    payment_specs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(("payment", "payment", "refund", "chargeback")),
                st.none() | st.sampled_from(BATCH_IDS),
                amounts,
                st.sampled_from(CURRENCIES),
                st.sampled_from(("approve", "review", "decline")),
            ),
            max_size=12,
        )
    )
    risks = draw(st.lists(risk_columns, min_size=len(payment_specs), max_size=len(payment_specs)))
    tables.payments = [
        payment(index, *spec, None, payee, payer_id=payer, risk_score=score, risk_reasons=reasons)
        for index, (spec, (payer, payee, score, reasons)) in enumerate(
            zip(payment_specs, risks, strict=True)
        )
    ]
    # A few event ids come again (for the same payee or another), as they do
    # beyond the de-duplication horizon or when a producer reuses an id.
    if tables.payments:
        repeats = draw(
            st.lists(
                st.tuples(
                    st.integers(0, len(tables.payments) - 1),
                    st.sampled_from(("payee-1", "payee-2")),
                ),
                max_size=3,
            )
        )
        for of, payee_id in repeats:
            index = len(tables.payments)
            copied = tables.payments[of]
            tables.payments.append(
                payment(
                    index, *copied[1:2], None, copied[6], copied[7], "approve", copied[0], payee_id
                )
            )
    # Some batch ids named by payments have no batch (missing_batch); some
    # batches are named by no payment (empty_batch).
    named_ids = sorted({row[15] for row in tables.payments if row[15] is not None})
    present = [batch_id for batch_id in named_ids if draw(st.integers(0, 4)) < 4]  # most exist
    present += draw(st.lists(st.sampled_from(BATCH_IDS), unique=True, max_size=2))
    present = list(dict.fromkeys(present))
    for batch_id in present:
        named = [row for row in tables.payments if row[15] == batch_id]
        count = len(named)
        gross = sum(row[6] for row in named if row[1] == "payment")
        refunds = sum(row[6] for row in named if row[1] != "payment")
        fees = draw(st.integers(0, 5_000))
        net = gross - refunds - fees
        perturbation = draw(st.sampled_from(PERTURBATIONS))
        delta = draw(st.sampled_from((-1, 1)))
        count += delta * (perturbation == "count")
        gross += delta * (perturbation == "gross")
        refunds += delta * (perturbation == "refunds")
        net += delta * (perturbation == "net")
        currency = draw(st.sampled_from(CURRENCIES))
        # JPY batches settle in USD (one settlement currency per payee and currency)
        fx = None
        if currency == "JPY":
            fx = (
                "USD",
                draw(st.sampled_from(["settled", "settled", "awaiting_rate"])),
                draw(st.integers(-(10**9), 10**9)),
                draw(st.integers(0, 10**4)),
            )
        tables.settlement_batches.append(
            batch(
                batch_id,
                currency,
                draw(st.integers(0, 3)),
                count,
                draw(st.integers(0, 3)),
                gross,
                refunds,
                fees,
                net,
                fx,
            )
        )
    # Payout lines: the payee's, and sometimes a split party's share of the payout.
    for row in tables.settlement_batches:
        if row[14] <= 0:
            continue
        share = draw(st.integers(0, row[14]))
        if share:
            tables.settlement_payouts.append((row[0], "party-x", row[12], share))
        if row[14] - share:
            tables.settlement_payouts.append((row[0], row[1], row[12], row[14] - share))
    # Fee rows: per (batch, rail), any figures (the views only add them up).
    fee_specs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(BATCH_IDS),
                st.sampled_from(RAILS),
                st.sampled_from(CURRENCIES),
                st.integers(0, 5),
                st.lists(st.integers(0, 10**9), min_size=6, max_size=6),
                st.integers(0, 5),
            ),
            max_size=6,
            unique_by=lambda spec: spec[:2],
        )
    )
    tables.settlement_fees = [
        (batch_id, rail, currency, count, gross, fee, 0, 0, cost, fee - cost, alone, min(exceeds, count))
        for batch_id, rail, currency, count, (gross, fee, cost, alone, _, _), exceeds in fee_specs
    ]  # fmt: skip
    # Balanced postings (a debit and its credit), then a few strays that may
    # unbalance a currency.
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(BATCH_IDS), st.sampled_from(CURRENCIES), postings), max_size=6
        )
    )
    strays = draw(
        st.lists(
            st.tuples(
                st.sampled_from(BATCH_IDS),
                st.sampled_from(CURRENCIES),
                st.integers(-(10**12), 10**12),
            ),
            max_size=2,
        )
    )
    signed = [(b, c, a) for b, c, a in pairs] + [(b, c, -a) for b, c, a in pairs] + strays
    tables.ledger_entries = [entry(index, b, c, a) for index, (b, c, a) in enumerate(signed)]
    reasons = draw(
        st.lists(st.sampled_from(("invalid_json", "duplicate", "invalid_amount")), max_size=4)
    )
    tables.dead_letters = [dead_letter(index, reason) for index, reason in enumerate(reasons)]
    return tables


# Python twins -----------------------------------------------------------------


def twin_batch_totals(tables: Tables) -> dict[str, tuple]:
    """recon_batch_totals: batch_id -> (payee, currency, window_start_us, event_count,
    events_counted, gross, events_gross, refunds, events_refunds, net, status)."""
    by_events: dict[str, list[int]] = {}
    for row in tables.payments:
        kind, amount, batch_id = row[1], row[6], row[15]
        if batch_id is None:
            continue
        figures = by_events.setdefault(batch_id, [0, 0, 0])
        figures[0] += 1
        figures[1 if kind == "payment" else 2] += amount
    result = {}
    batches = {row[0]: row for row in tables.settlement_batches}
    for batch_id in batches.keys() | by_events.keys():
        own = batches.get(batch_id)
        events = by_events.get(batch_id)
        if own is None:
            status = "missing_batch"
        elif events is None:
            status = "empty_batch"
        else:
            count, gross, refunds, fees, net = own[6], own[8], own[9], own[10], own[11]
            same = (count, gross, refunds) == tuple(events) and net == gross - refunds - fees
            status = "ok" if same else "mismatch"
        mine = (None,) * 4 if own is None else (own[1], own[2], own[3], own[6])
        theirs = (None,) * 3 if events is None else (events[0], dec(events[1]), dec(events[2]))
        result[batch_id] = (
            *mine,
            theirs[0],
            None if own is None else dec(own[8]),
            theirs[1],
            None if own is None else dec(own[9]),
            theirs[2],
            None if own is None else dec(own[11]),
            status,
        )
    return result


def twin_ledger_balance(tables: Tables) -> dict[str, tuple]:
    """recon_ledger_balance: currency -> (entries, batches, debits, credits, balance, balanced)."""
    entries: dict[str, list[tuple]] = defaultdict(list)
    for row in tables.ledger_entries:
        entries[row[5]].append(row)
    result = {}
    for currency, rows in entries.items():
        amounts = [row[6] for row in rows]
        balance = sum(amounts)
        result[currency] = (
            len(rows),
            len({row[1] for row in rows}),
            dec(sum(a for a in amounts if a > 0)),
            dec(sum(a for a in amounts if a < 0)),
            dec(balance),
            balance == 0,
        )
    return result


def twin_account_balances(tables: Tables) -> dict[object, tuple]:
    """recon_account_balances: (account, currency, batch) -> (posted_at, movement, balance)."""
    moves: dict[tuple[str, str, str], list[int]] = {}
    for row in tables.ledger_entries:
        move = moves.setdefault((row[4], row[5], row[1]), [row[7], 0])
        move[0] = min(move[0], row[7])
        move[1] += row[6]
    result = {}
    balance: dict[tuple[str, str], int] = defaultdict(int)
    for (account, currency, batch), (posted, movement) in sorted(
        moves.items(), key=lambda item: (item[1][0], item[0][2])
    ):
        balance[(account, currency)] += movement
        result[(account, currency, batch)] = (
            EPOCH + timedelta(microseconds=posted),
            dec(movement),
            dec(balance[(account, currency)]),
        )
    return result


def twin_payee_conservation(tables: Tables) -> dict[object, tuple]:
    """recon_payee_conservation: (payee, currency) -> (accrued, fees, paid_out, carried,
    balanced, settlement_currency, awaiting, converted)."""
    sums: dict[tuple[str, str], list] = {}
    for row in tables.settlement_batches:
        figures = sums.setdefault((row[1], row[2]), [0, 0, 0, 0, row[12], 0, 0, 0])
        figures[0] += row[8] - row[9]
        figures[1] += row[10]
        figures[2] += row[14]
        figures[3] += row[16] - row[15]
        if row[18] != "settled":
            figures[5] += row[11]  # awaiting, in the batch's currency
        if row[19] is not None:
            figures[6] += row[11]  # converted away
            figures[7] += row[19] - row[20]  # credited in the settlement currency
    result = {}
    for key, (accrued, fees, paid, carried, target, awaiting, away, converted) in sums.items():
        balanced = accrued - fees - awaiting - away == paid + carried - converted
        result[key] = (
            *(dec(value) for value in (accrued, fees, paid, carried)),
            balanced,
            target,
            dec(awaiting),
            dec(converted),
        )
    return result


def _share(part: int, whole: int) -> Decimal | None:
    """A ratio rounded to 4 places, as the SQL gives it (None for 0 / 0)."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), ROUND_HALF_UP)


def twin_unit_economics(tables: Tables) -> dict[object, tuple]:
    """recon_unit_economics: (rail, currency) -> (payments, batches, gross, alone,
    netted, saving, saving_share, rail_cost, margin, share_unpayable_alone)."""
    groups: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for row in tables.settlement_fees:
        groups[(row[1], row[2])].append(row)
    result = {}
    for key, rows in groups.items():
        payments = sum(row[3] for row in rows)
        if not payments:
            continue
        alone, netted = sum(row[10] for row in rows), sum(row[5] for row in rows)
        result[key] = (
            payments,
            sum(row[3] > 0 for row in rows),
            dec(sum(row[4] for row in rows)),
            dec(alone),
            dec(netted),
            dec(alone - netted),
            _share(alone - netted, alone),
            dec(sum(row[8] for row in rows)),
            dec(sum(row[9] for row in rows)),
            _share(sum(row[11] for row in rows), payments),
        )
    return result


def twin_summary_fees(tables: Tables) -> list[tuple]:
    by_currency: dict[str, list[tuple]] = defaultdict(list)
    for (_, currency), row in twin_unit_economics(tables).items():
        by_currency[currency].append(row)
    result = []
    for currency in sorted(by_currency):
        rows = by_currency[currency]
        payments = sum(row[0] for row in rows)
        exceeding = sum((row[9] or 0) * row[0] for row in rows)
        result.append(
            (
                currency,
                payments,
                sum((row[3] for row in rows), Decimal(0)),
                sum((row[4] for row in rows), Decimal(0)),
                sum((row[5] for row in rows), Decimal(0)),
                sum((row[8] for row in rows), Decimal(0)),
                (Decimal(exceeding) / payments).quantize(Decimal("0.0001"), ROUND_HALF_UP),
            )
        )
    return result


def twin_summary_checks(tables: Tables) -> dict[str, int]:
    return {
        "accrued = paid out + fees + carried, per payee": sum(
            not row[4] for row in twin_payee_conservation(tables).values()
        ),
        "batches equal their events": sum(
            row[-1] != "ok" for row in twin_batch_totals(tables).values()
        ),
        "ledger sums to zero per currency": sum(
            not row[-1] for row in twin_ledger_balance(tables).values()
        ),
    }


def twin_summary_currencies(tables: Tables) -> list[tuple]:
    ledger = twin_ledger_balance(tables)
    by_currency: dict[str, list[tuple]] = defaultdict(list)
    paid: dict[str, int] = defaultdict(int)
    for row in tables.settlement_batches:
        by_currency[row[2]].append(row)
        paid[row[12]] += row[14]  # payouts are in the settlement currency
    result = []
    for currency in sorted(set(by_currency) | set(paid)):
        rows = by_currency.get(currency, [])
        balanced, balance = (
            (ledger[currency][5], ledger[currency][4]) if currency in ledger else (False, 0)
        )
        result.append(
            (
                currency,
                len(rows),
                sum(row[6] for row in rows),
                sum(row[7] for row in rows),
                *(dec(sum(row[column] for row in rows)) for column in (8, 9, 10, 11)),
                dec(paid.get(currency, 0)),
                balanced,
                balance,
            )
        )
    return result


def twin_summary_payouts(tables: Tables) -> list[tuple]:
    payee_of = {row[0]: row[1] for row in tables.settlement_batches}
    lines: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for batch_id, party, currency, amount in tables.settlement_payouts:
        if batch_id not in payee_of:
            continue
        lines[currency][0] += 1
        lines[currency][1] += amount if party != payee_of[batch_id] else 0
    by_target: dict[str, list[tuple]] = defaultdict(list)
    for row in tables.settlement_batches:
        by_target[row[12]].append(row)
    return [
        (
            currency,
            len(rows),
            lines[currency][0],
            dec(sum(row[14] for row in rows)),
            dec(lines[currency][1]),
            dec(sum(row[16] - row[15] for row in rows)),
            dec(sum(row[19] - row[20] for row in rows if row[19] is not None)),
            dec(sum(row[20] for row in rows if row[20] is not None)),
            sum(row[18] == "awaiting_rate" for row in rows),
        )
        for currency, rows in sorted(by_target.items())
    ]


def twin_event_repeats(tables: Tables) -> dict[str, tuple]:
    """recon_event_repeats: event_id -> (copies, payees, first and last ingestion µs,
    sources, reason)."""
    rows_of: dict[str, list[tuple]] = defaultdict(list)
    for row in tables.payments:
        rows_of[row[0]].append(row)
    result = {}
    for event_id, rows in rows_of.items():
        if len(rows) < 2:
            continue
        payees = sorted({row[5] for row in rows})
        result[event_id] = (
            len(rows),
            ",".join(payees),
            min(row[3] for row in rows),
            max(row[3] for row in rows),
            ",".join(row[19] for row in sorted(rows, key=lambda row: (row[3], row[19]))),
            "other_payee" if len(payees) > 1 else "beyond_horizon",
        )
    return result


def twin_summary_events(tables: Tables) -> list[tuple]:
    outcomes = Counter(
        f"{row[1]} settled"
        if row[15] is not None
        else f"{row[1]} {row[12]}{' ' + row[20] if row[20] else ''}, unsettled"
        for row in tables.payments
    )
    letters = Counter(f"dead letter: {row[1]}" for row in tables.dead_letters)
    return sorted(outcomes.items()) + sorted(letters.items())


def _reasons(row: tuple) -> list[str]:
    """risk_reasons split on ';', as string_split does ('' for none, empty parts kept)."""
    return (row[14] or "").split(";")


def twin_summary_risk_decisions(tables: Tables) -> list[tuple]:
    """(decision, currency, payments, amount, model_errors) over rows of type payment."""
    groups: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for row in tables.payments:
        if row[1] == "payment":
            groups[(row[12], row[7])].append(row)
    return [
        (
            decision,
            currency,
            len(rows),
            dec(sum(row[6] for row in rows)),
            sum("model_error" in _reasons(row) for row in rows),
        )
        for (decision, currency), rows in sorted(
            groups.items(), key=lambda item: (DECISION_RANK.get(item[0][0], 3), *item[0])
        )
    ]


def score_bucket(score: float | None) -> int | None:
    """The bucket of a score: tenths, 1.0 in the last, clamped to 0..9 (None: no score)."""
    return None if score is None else min(max(math.floor(score * 10), 0), 9)


def twin_summary_risk_scores(tables: Tables) -> list[tuple]:
    """(bucket, decision, payments) over rows of type payment."""
    counts = Counter(
        (score_bucket(row[11]), row[12]) for row in tables.payments if row[1] == "payment"
    )
    return [
        (*key, count)
        for key, count in sorted(
            counts.items(),
            key=lambda item: (item[0][0] is None, item[0][0] or 0, DECISION_RANK[item[0][1]]),
        )
    ]


def twin_summary_risk_parties(tables: Tables, limit: int) -> list[tuple]:
    """Per role, the `limit` parties with most payments in review or declined (ties by id):
    (role, party_id, payments, approved, reviewed, declined, max_score, reasons,
    flagged_amounts)."""
    payments = [row for row in tables.payments if row[1] == "payment"]
    result = []
    for role, column in (("payer", 4), ("payee", 5)):
        own: dict[str, list[tuple]] = defaultdict(list)
        for row in payments:
            own[row[column]].append(row)
        ranked = []
        for party, rows in own.items():
            flagged = [row for row in rows if row[12] in ("review", "decline")]
            if not flagged:
                continue
            reasons = Counter(name for row in flagged for name in set(_reasons(row)) if name)
            amounts: dict[str, int] = defaultdict(int)
            for row in flagged:
                amounts[row[7]] += row[6]
            decided = Counter(row[12] for row in rows)
            figures = (
                role,
                party,
                len(rows),
                decided["approve"],
                decided["review"],
                decided["decline"],
                max((row[11] for row in flagged if row[11] is not None), default=None),
                [
                    {"reason": name, "payments": count}
                    for name, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
                ],
                [{"currency": c, "amount": dec(amount)} for c, amount in sorted(amounts.items())],
            )
            ranked.append((-len(flagged), party, figures))
        result += [figures for _, _, figures in sorted(ranked)[:limit]]
    return result


# Running the SQL --------------------------------------------------------------


def test_every_view_and_query_has_a_twin() -> None:
    """A new view or query fails here until it gets its twin below."""
    assert {path.stem for path in recon_view_files()} == TWINNED_VIEWS
    queries = {path.stem for path in QUERIES_DIR.glob("*.sql")}
    # the HTML report's queries (report_*) have their twins in tests/test_report_sql.py
    assert {name for name in queries if not name.startswith("report_")} == TWINNED_QUERIES


def load(tables: Tables, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    db = duckdb.connect(database)
    create_schema(db)
    for table in TABLES:
        arrow = rows_to_table(table, getattr(tables, table))
        db.register("incoming", arrow)
        db.execute(f"INSERT INTO {table} SELECT * FROM incoming")
        db.unregister("incoming")
    return db


def keyed(db: duckdb.DuckDBPyConnection, sql: str) -> dict[object, tuple]:
    """Rows of `sql` by their first column, which must not repeat."""
    rows = db.execute(sql).fetchall()
    result = {row[0]: row[1:] for row in rows}
    assert len(result) == len(rows), f"a key repeats in: {sql}"
    return result


def sql_batch_totals(db: duckdb.DuckDBPyConnection) -> dict[object, tuple]:
    return keyed(
        db,
        "SELECT batch_id, payee_id, currency, epoch_us(window_start), event_count, events_counted, "
        "gross, events_gross, refunds, events_refunds, net, status FROM recon_batch_totals",
    )


def sql_ledger_balance(db: duckdb.DuckDBPyConnection) -> dict[object, tuple]:
    return keyed(db, "SELECT * FROM recon_ledger_balance")


def sql_event_repeats(db: duckdb.DuckDBPyConnection) -> dict[object, tuple]:
    return keyed(
        db,
        "SELECT event_id, copies, payees, epoch_us(first_ingested_at), "
        "epoch_us(last_ingested_at), sources, reason FROM recon_event_repeats",
    )


def run_query(db: duckdb.DuckDBPyConnection, name: str) -> list[tuple]:
    return db.execute(query(name)).fetchall()


def compare_everything(tables: Tables) -> None:
    with load(tables) as db:
        assert sql_batch_totals(db) == twin_batch_totals(tables)
        assert sql_ledger_balance(db) == twin_ledger_balance(tables)
        checks = run_query(db, "summary_checks")
        assert len(checks) == 3
        assert dict(checks) == twin_summary_checks(tables)
        assert run_query(db, "summary_currencies") == twin_summary_currencies(tables)
        assert run_query(db, "summary_events") == twin_summary_events(tables)
        assert sql_event_repeats(db) == twin_event_repeats(tables)
        assert run_query(db, "summary_repeats") == [(len(twin_event_repeats(tables)),)]
        balances = db.execute("SELECT * FROM recon_account_balances").fetchall()
        assert {(r[0], r[1], r[2]): r[3:] for r in balances} == twin_account_balances(tables)
        conservation = db.execute("SELECT * FROM recon_payee_conservation").fetchall()
        assert {(r[0], r[1]): r[2:] for r in conservation} == twin_payee_conservation(tables)
        economics = db.execute("SELECT * FROM recon_unit_economics").fetchall()
        assert {(r[0], r[1]): r[2:] for r in economics} == twin_unit_economics(tables)
        assert run_query(db, "summary_fees") == twin_summary_fees(tables)
        assert run_query(db, "summary_payouts") == twin_summary_payouts(tables)
        assert run_query(db, "summary_risk_decisions") == twin_summary_risk_decisions(tables)
        assert run_query(db, "summary_risk_scores") == twin_summary_risk_scores(tables)
        for limit in (0, 1, 2, FLAGGED_PARTIES_MAX):  # 1 and 2 cut through ties
            parties = db.execute(query("summary_risk_parties"), [limit]).fetchall()
            assert parties == twin_summary_risk_parties(tables, limit), limit


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_recon_sql_matches_twins(tables: Tables) -> None:
    compare_everything(tables)


# A pinned scenario: the statuses by name ----------------------------------------


def pinned() -> Tables:
    tables = Tables()
    tables.payments = [
        payment(0, "payment", "b-ok", 1_500_000, "USD", "approve"),
        payment(1, "refund", "b-ok", 500_000, "USD", "approve"),
        payment(2, "payment", "b-gross", AMOUNT_MICROS_MAX, "BHD", "approve"),
        payment(3, "payment", "b-gone", 1, "JPY", "approve"),
        payment(4, "payment", None, 7, "JPY", "decline"),
        payment(5, "payment", "b-net", 10, "USD", "approve"),
    ]
    tables.settlement_batches = [
        batch("b-ok", "USD", 0, 2, 0, 1_500_000, 500_000, 1, 999_999),
        batch("b-gross", "BHD", 0, 1, 0, AMOUNT_MICROS_MAX - 1, 0, 0, AMOUNT_MICROS_MAX - 1),
        batch("b-empty", "USD", 1, 0, 0, 0, 0, 0, 0),
        batch("b-net", "USD", 2, 1, 0, 10, 0, 0, 9),
    ]
    tables.ledger_entries = [
        entry(0, "b-ok", "USD", 999_999),
        entry(1, "b-ok", "USD", -999_999),
        entry(2, "b-gross", "BHD", AMOUNT_MICROS_MAX),
        entry(3, "b-gross", "BHD", AMOUNT_MICROS_MAX),
        entry(4, "b-gross", "BHD", -AMOUNT_MICROS_MAX),
        entry(5, "b-gross", "BHD", -AMOUNT_MICROS_MAX + 1),  # off by one micro-unit
        entry(6, "b-gone", "JPY", 0),
    ]
    tables.dead_letters = [dead_letter(0, "invalid_json"), dead_letter(1, "invalid_json")]
    return tables


def test_pinned_statuses() -> None:
    tables = pinned()
    with load(tables) as db:
        statuses = {batch_id: row[-1] for batch_id, row in sql_batch_totals(db).items()}
        assert statuses == {
            "b-ok": "ok",
            "b-gross": "mismatch",
            "b-gone": "missing_batch",
            "b-empty": "empty_batch",
            "b-net": "mismatch",
        }
        ledger = sql_ledger_balance(db)
        assert ledger["USD"] == (2, 1, Decimal("0.999999"), Decimal("-0.999999"), 0, True)
        assert ledger["BHD"] == (
            4,
            1,
            Decimal("1999999999999.999998"),
            Decimal("-1999999999999.999997"),
            Decimal("0.000001"),
            False,
        )
        assert ledger["JPY"] == (1, 1, 0, 0, 0, True)
        assert dict(run_query(db, "summary_checks")) == {
            "batches equal their events": 4,
            "ledger sums to zero per currency": 1,
            # b-net nets 9 of its gross 10 with no fee: a micro-unit unaccounted for
            "accrued = paid out + fees + carried, per payee": 1,
        }
        assert run_query(db, "summary_events") == [
            ("payment decline, unsettled", 1),
            ("payment settled", 4),
            ("refund settled", 1),
            ("dead letter: invalid_json", 2),
        ]
    compare_everything(tables)


def test_summarize_reads_the_same_checks(tmp_path: Path) -> None:
    """`centflow.recon.report.summarize`, the report's reader, sees what the queries return."""
    tables = pinned()
    database = tmp_path / "centflow.duckdb"
    load(tables, str(database)).close()
    summary = summarize(database)
    assert not summary.ok
    assert dict(summary.checks) == twin_summary_checks(tables)
    assert summary.count("payment settled") == 4
    assert [row.currency for row in summary.currencies] == ["BHD", "USD"]
    usd = summary.currencies[1]
    assert (usd.batches, usd.events, usd.gross, usd.net, usd.ledger_balanced) == (
        3,
        3,
        Decimal("1.500010"),
        Decimal("1.000008"),
        True,
    )


def test_empty_tables_pass_every_check() -> None:
    with load(Tables()) as db:
        assert sql_batch_totals(db) == {}
        assert sql_ledger_balance(db) == {}
        assert dict(run_query(db, "summary_checks")) == {
            "batches equal their events": 0,
            "ledger sums to zero per currency": 0,
            "accrued = paid out + fees + carried, per payee": 0,
        }
        assert run_query(db, "summary_currencies") == []
        assert run_query(db, "summary_events") == []


def test_shares_round_exact_ties_half_up_in_both_directions() -> None:
    """0.00025 is 0.0003 and -0.00025 is -0.0003, as the twin rounds them: no double on the way."""
    fee = ("b-0", "card", "USD", 2, 10**6, 19_995, 0, 0, 0, 0, 20_000, 1)
    loss = ("b-1", "sepa", "USD", 2, 10**6, 20_005, 0, 0, 0, 0, 20_000, 0)
    tables = Tables(settlement_fees=[fee, loss])
    with load(tables) as db:
        shares = db.execute(
            "SELECT rail, saving_share, share_unpayable_alone FROM recon_unit_economics ORDER BY rail"
        ).fetchall()
    assert shares == [("card", Decimal("0.0003"), Decimal("0.5000")), ("sepa", Decimal("-0.0003"), Decimal("0.0000"))]  # fmt: skip
    assert {key: row[6] for key, row in twin_unit_economics(tables).items()} == {
        ("card", "USD"): Decimal("0.0003"),
        ("sepa", "USD"): Decimal("-0.0003"),
    }


# A pinned scenario: the risk figures by name --------------------------------------


def pinned_risk() -> Tables:
    """Two payers tie on flagged payments ("payer-10" sorts first); scores on bucket edges."""
    rows = [
        # (kind, amount, currency, decision, payer, payee, score, reasons)
        ("payment", 1_500_000, "USD", "approve", "payer-2", "payee-1", 0.0, None),
        ("payment", 250_000, "USD", "review", "payer-2", "payee-1", 0.1, "tier_limit"),
        ("payment", 7, "JPY", "decline", "payer-2", "payee-2", 0.95, "card_testing;velocity"),
        ("payment", AMOUNT_MICROS_MAX, "BHD", "review", "payer-10", "payee-2", 1.0, "model_error"),
        ("payment", 1, "USD", "decline", "payer-10", "payee-2", 0.9, "velocity;velocity"),
        ("payment", 3_000_000, "USD", "approve", "payer-3", "payee-1", None, ""),
        ("refund", 500_000, "USD", "review", "payer-3", "payee-1", 0.0, "model_error"),
    ]
    tables = Tables()
    tables.payments = [
        payment(index, kind, None, amount, currency, decision, None, payee, payer_id=payer,
                risk_score=score, risk_reasons=reasons)
        for index, (kind, amount, currency, decision, payer, payee, score, reasons) in enumerate(rows)
    ]  # fmt: skip
    return tables


def test_pinned_risk_figures(tmp_path: Path) -> None:
    """The Summary's risk figures, named: refunds left out, ties broken by id, amounts exact."""
    tables = pinned_risk()
    database = tmp_path / "centflow.duckdb"
    load(tables, str(database)).close()
    summary = summarize(database)
    assert [(row.decision, row.payments, row.share, row.amounts, row.model_errors)
            for row in summary.decisions] == [
        ("approve", 2, Decimal("0.3333"), [("USD", Decimal("4.5"))], 0),
        ("review", 2, Decimal("0.3333"),
         [("BHD", Decimal("999999999999.999999")), ("USD", Decimal("0.25"))], 1),
        ("decline", 2, Decimal("0.3333"), [("JPY", Decimal("0.000007")), ("USD", Decimal("0.000001"))], 0),
    ]  # fmt: skip
    assert summary.model_errors == 1
    buckets = {row.label: (row.approve, row.review, row.decline) for row in summary.score_buckets}
    assert list(buckets) == [f"[0.{k}, 0.{k + 1})" for k in range(9)] + ["[0.9, 1.0]", "no score"]
    assert buckets["[0.0, 0.1)"] == (1, 0, 0)  # the refund's 0.0 is not counted
    assert buckets["[0.1, 0.2)"] == (0, 1, 0)
    assert buckets["[0.9, 1.0]"] == (0, 1, 2)  # 1.0 is in the last bucket
    assert buckets["no score"] == (1, 0, 0)
    assert sum(map(sum, buckets.values())) == 6
    payers = [(p.party_id, p.flagged, p.reviewed, p.declined, p.approved, p.max_score, p.reasons,
               p.flagged_amounts) for p in summary.flagged_payers]  # fmt: skip
    assert payers == [
        ("payer-10", 2, 1, 1, 0, 1.0, [("model_error", 1), ("velocity", 1)],
         [("BHD", Decimal("999999999999.999999")), ("USD", Decimal("0.000001"))]),
        ("payer-2", 2, 1, 1, 1, 0.95, [("card_testing", 1), ("tier_limit", 1), ("velocity", 1)],
         [("JPY", Decimal("0.000007")), ("USD", Decimal("0.25"))]),
    ]  # fmt: skip
    assert [(p.party_id, p.flagged, p.reasons[0]) for p in summary.flagged_payees] == [
        ("payee-2", 3, ("velocity", 2)),
        ("payee-1", 1, ("tier_limit", 1)),
    ]
    compare_everything(tables)
