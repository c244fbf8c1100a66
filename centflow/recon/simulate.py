"""A statement simulator: what a rail would report for the payouts of a run, with breaks.

`simulate_statement` reads the payout lines of a DuckDB file (the same
``settlement_payouts`` as `centflow.recon.matching`, or its stand-in from
``settlement_batches``) and writes the statement a rail would send for them, as
CSV or camt.053 (the layouts of `centflow.recon.statements`): one statement per
currency, named ``<prefix>-<currency>``, every payout line paid by an entry
that names its batch, booked 0 to 2 days after the batch closed, with a
seeded, configurable share of the lines given one *injected event* each:

=========================  =================================================  =========================
kind                       what the statement holds                           reconciliation finds
=========================  =================================================  =========================
``dropped``                no entry                                           ``timing`` within the
                                                                              grace period of as_of,
                                                                              ``missing_in_statement``
                                                                              after
``delayed_within_grace``   no entry yet (it posts after the statement         ``timing``
                           closes); the batch closed within the grace period
``delayed_beyond_grace``   the same, for a batch older than the grace period  ``missing_in_statement``
``altered``                the amount off by 1 to 100 minor units             ``amount_mismatch``
``duplicated``             the entry twice (two entry ids)                    ``amount_mismatch``
``unexpected``             an entry for no batch (another reference or none)  ``unexpected_in_statement``
``split``                  two entries with the batch's reference that sum    ``matched``
                           to the payout
``merged``                 one entry for 2 or 3 batches: a combined           ``matched``
                           reference ``b1+b2`` in CSV; in camt.053 one
                           ``Ntry`` with a ``TxDtls`` per batch
``unreferenced``           the right entry with no reference                  ``matched`` (amount, date)
``merged_unreferenced``    one entry, no reference, for all of a party's      ``matched`` (amount group)
                           lines of one currency and close day
=========================  =================================================  =========================

The last four are not breaks: they are what real rails do and what matching
must see through, so they are injected and listed too, and a test can check
both that every break is found and that nothing else is.

Only payout lines of batches with one line are given an event (a batch paying
several parties is always paid one entry per party, all naming the batch),
each line at most one. An event whose conditions no remaining line meets (no
line old enough for ``delayed_beyond_grace``, no unique amount for
``unreferenced``, ...) is skipped, so fewer events than asked may be injected:
the returned list is the truth. The amounts of unexpected entries, amount-only
entries and merged sums are chosen so that no other rule could take them (an
amount no payout line has, no sum of a party's open lines of a day), so the
expected class of each event is certain, not likely.

Everything comes from ``random.Random(seed)`` and the payouts, so the same
database, seed and settings give the same file, byte for byte.
"""

from __future__ import annotations

import csv
import io
import json
import random
import xml.etree.ElementTree as ElementTree
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

import duckdb

from centflow.errors import ConfigError, invariant
from centflow.limits import AMOUNT_MICROS_MAX, MICROS_PER_SECOND
from centflow.money.amounts import minor_unit_exponent, minor_unit_step
from centflow.recon.matching import GRACE_DAYS_DEFAULT, MICROS_PER_DAY, ensure_payouts
from centflow.recon.statements import (
    CAMT053_NAMESPACE_PREFIX,
    CSV_HEADER,
    FORMATS,
    StatementBalance,
)

KINDS = (
    "dropped",
    "delayed_within_grace",
    "delayed_beyond_grace",
    "altered",
    "duplicated",
    "unexpected",
    "split",
    "merged",
    "unreferenced",
    "merged_unreferenced",
)
EXPECTED_CLASS = {
    "delayed_within_grace": "timing",
    "delayed_beyond_grace": "missing_in_statement",
    "altered": "amount_mismatch",
    "duplicated": "amount_mismatch",
    "unexpected": "unexpected_in_statement",
    "split": "matched",
    "merged": "matched",
    "unreferenced": "matched",
    "merged_unreferenced": "matched",
}  # dropped: timing or missing_in_statement, by age
CAMT053_NAMESPACE = CAMT053_NAMESPACE_PREFIX + "08"
BREAK_SHARE_MAX = 1.0
BOOKING_LAG_DAYS_MAX = 2
OPENING_BALANCE_UNITS_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class PayoutLine:
    """A payout line as the simulator sees it (money in micro-units, time in µs)."""

    batch_id: str
    party_id: str
    currency: str
    amount_micros: int
    expected_us: int
    lines_in_batch: int


@dataclass(slots=True)
class StatementLine:
    """An entry to write; `parts` makes it a camt.053 batched entry (one TxDtls each)."""

    statement_id: str
    entry_id: str
    booked_us: int
    value_date: date
    currency: str
    amount_micros: int
    reference: str | None
    parts: tuple[tuple[int, str | None], ...] = ()
    event: int | None = None  # index of the injected event it belongs to


@dataclass(frozen=True, slots=True)
class InjectedBreak:
    """One injected event and the class reconciliation must give it."""

    kind: str
    expected_class: str
    batch_ids: tuple[str, ...]
    currency: str
    expected: Decimal  # what the payouts concerned expect
    actual: Decimal  # what the statement holds for them
    statement_id: str | None
    entry_ids: tuple[str, ...]  # ids as imported (a camt.053 batched entry: ``id/n``)


@dataclass(frozen=True, slots=True)
class Simulation:
    """What `simulate_statement` wrote, and the events injected."""

    path: str
    format: str
    as_of: datetime
    grace_days: int
    statement_ids: tuple[str, ...]
    entries: int
    injected: tuple[InjectedBreak, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        """The simulation as JSON (amounts as decimal strings, times as RFC 3339)."""
        document = asdict(self)
        document["as_of"] = self.as_of.isoformat()
        return json.dumps(document, default=str, indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- payouts


def load_payout_lines(db_path: Path | str) -> list[PayoutLine]:
    """The payout lines of a database, read-only, in (close, batch, party) order."""
    connection = duckdb.connect(str(db_path), read_only=True)
    try:
        connection.execute("SET TimeZone = 'UTC'")
        ensure_payouts(connection)
        rows = connection.execute(
            """
            SELECT p.batch_id, p.party_id, p.currency,
                   CAST(CAST(p.amount AS DECIMAL(38,6)) * 1000000 AS BIGINT),
                   epoch_us(coalesce(b.settled_at, b.closed_at)), count(*) OVER (PARTITION BY p.batch_id)
            FROM settlement_payouts AS p JOIN settlement_batches AS b USING (batch_id)
            ORDER BY coalesce(b.settled_at, b.closed_at), p.batch_id, p.party_id
            """
        ).fetchall()
    finally:
        connection.close()
    return [PayoutLine(*row) for row in rows]


# --------------------------------------------------------------------------- simulation


def simulate_statement(
    db_path: Path | str,
    out_path: Path | str,
    seed: int = 0,
    break_share: float = 0.1,
    format: str = "csv",
    as_of: datetime | None = None,
    grace_days: int = GRACE_DAYS_DEFAULT,
    kinds: Sequence[str] = KINDS,
    breaks_path: Path | str | None = None,
    prefix: str = "sim",
) -> Simulation:
    """Write a simulated statement of the payouts in `db_path`; return what was injected.

    `break_share` (0..1) is the share of payout lines given an event, `kinds` the
    events to draw from (uniformly). `as_of` (default: the UTC midnight after the
    last batch closed) and `grace_days` are those `reconcile` will be run with;
    they decide which lines are within the grace period. With `breaks_path`, the
    `Simulation` is also written there as JSON.
    """
    if format not in FORMATS:
        raise ConfigError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    if not 0 <= break_share <= BREAK_SHARE_MAX:
        raise ConfigError(f"break_share {break_share} is out of range 0..1")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ConfigError(f"unknown kind(s) {', '.join(unknown)}: choose from {', '.join(KINDS)}")
    lines = [line for line in load_payout_lines(db_path) if line.amount_micros != 0]
    for line in lines:
        if line.amount_micros % minor_unit_step(line.currency):
            raise ConfigError(
                f"payout of batch {line.batch_id} to {line.party_id} is finer than the minor unit "
                f"of {line.currency}: no rail can pay it"
            )
    if not lines:
        raise ConfigError(f"{db_path} holds no payout to simulate a statement of")
    if as_of is None:
        last_us = max((line.expected_us for line in lines), default=0)
        as_of = datetime.fromtimestamp(
            (last_us // MICROS_PER_DAY + 1) * MICROS_PER_DAY // MICROS_PER_SECOND, UTC
        )
    if as_of.tzinfo is None:
        raise ConfigError(f"as_of {as_of.isoformat()} has no time zone")
    builder = _Builder(lines, random.Random(seed), as_of, grace_days, prefix)
    builder.inject(round(break_share * len(lines)), list(kinds))
    builder.pay_the_rest()
    statement_lines, balances, injected = builder.finish(batched_merges=format == "camt.053")
    write_statement(out_path, balances, statement_lines, format)
    simulation = Simulation(
        str(out_path),
        format,
        as_of,
        grace_days,
        tuple(balance.statement_id for balance in balances),
        sum(max(1, len(line.parts)) for line in statement_lines),
        injected,
    )
    if breaks_path is not None:
        Path(breaks_path).write_text(simulation.to_json())
    return simulation


@dataclass
class _Event:
    kind: str
    expected_class: str
    lines: list[PayoutLine]
    entries: list[StatementLine] = field(default_factory=list)


class _Builder:
    """The state of one simulation: which lines are taken, the entries made so far."""

    def __init__(
        self,
        lines: list[PayoutLine],
        rng: random.Random,
        as_of: datetime,
        grace_days: int,
        prefix: str,
    ) -> None:
        self.lines = lines
        self.rng = rng
        self.as_of_us = (as_of - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        self.grace_us = grace_days * MICROS_PER_DAY
        self.prefix = prefix
        self.taken: set[int] = set()
        self.events: list[_Event] = []
        self.entries: list[StatementLine] = []
        self.amount_counts = Counter((line.currency, line.amount_micros) for line in lines)
        self.pool = [index for index, line in enumerate(lines) if line.lines_in_batch == 1]
        rng.shuffle(self.pool)

    # -- helpers

    def within_grace(self, line: PayoutLine) -> bool:
        return self.as_of_us - line.expected_us <= self.grace_us

    def entry(
        self, line: PayoutLine, amount: int, reference: str | None, lag_days: int | None = None
    ) -> StatementLine:
        lag = self.rng.randint(0, BOOKING_LAG_DAYS_MAX) if lag_days is None else lag_days
        day = _utc_date(line.expected_us) + timedelta(days=lag)
        booked_us = _day_us(day) + self.rng.randrange(6 * 3600, 20 * 3600) * MICROS_PER_SECOND
        return StatementLine(
            f"{self.prefix}-{line.currency}", "", booked_us, day, line.currency, amount, reference
        )

    def take(self, condition: Callable[[PayoutLine], bool] | None = None) -> PayoutLine | None:
        """The next untaken single-line payout meeting `condition`, taken."""
        for position, index in enumerate(self.pool):
            line = self.lines[index]
            if index not in self.taken and (condition is None or condition(line)):
                self.taken.add(index)
                del self.pool[position]
                return line
        return None

    def add(self, event: _Event) -> None:
        number = len(self.events)
        for entry in event.entries:
            entry.event = number
        self.events.append(event)
        self.entries.extend(event.entries)

    # -- events

    def inject(self, count: int, kinds: list[str]) -> None:
        for _ in range(count):
            if kinds:
                getattr(self, f"_{self.rng.choice(kinds)}")()

    def _dropped(self) -> None:
        line = self.take()
        if line is not None:
            kind = "timing" if self.within_grace(line) else "missing_in_statement"
            self.add(_Event("dropped", kind, [line]))

    def _delayed_within_grace(self) -> None:
        line = self.take(self.within_grace)
        if line is not None:
            self.add(_Event("delayed_within_grace", "timing", [line]))

    def _delayed_beyond_grace(self) -> None:
        line = self.take(lambda line: not self.within_grace(line))
        if line is not None:
            self.add(_Event("delayed_beyond_grace", "missing_in_statement", [line]))

    def _altered(self) -> None:
        line = self.take()
        if line is not None:
            delta = self.rng.randint(1, 100) * minor_unit_step(line.currency)
            amount = line.amount_micros + delta * self.rng.choice((-1, 1))
            self.add(
                _Event(
                    "altered", "amount_mismatch", [line], [self.entry(line, amount, line.batch_id)]
                )
            )

    def _duplicated(self) -> None:
        line = self.take()
        if line is not None:
            first = self.entry(line, line.amount_micros, line.batch_id)
            second = self.entry(line, line.amount_micros, line.batch_id)
            self.add(_Event("duplicated", "amount_mismatch", [line], [first, second]))

    def _split(self) -> None:
        line = self.take(lambda line: abs(line.amount_micros) >= 2 * minor_unit_step(line.currency))
        if line is not None:
            step = minor_unit_step(line.currency)
            units = abs(line.amount_micros) // step
            part = self.rng.randint(1, units - 1) * step * (1 if line.amount_micros > 0 else -1)
            entries = [
                self.entry(line, part, line.batch_id),
                self.entry(line, line.amount_micros - part, line.batch_id),
            ]
            self.add(_Event("split", "matched", [line], entries))

    @staticmethod
    def _fits(currency: str, total: int, line: PayoutLine) -> bool:
        """`line` may join a combined entry of `total` in `currency`: one entry can hold it."""
        return line.currency == currency and abs(total + line.amount_micros) <= AMOUNT_MICROS_MAX

    def _merged(self) -> None:
        first = self.take()
        if first is None:
            return
        group = [first]
        for _ in range(self.rng.randint(1, 2)):
            total = sum(line.amount_micros for line in group)
            other = self.take(partial(self._fits, first.currency, total))
            if other is not None:
                group.append(other)
        if len(group) == 1:  # no partner in its currency: paid as usual
            self.entries.append(self.entry(first, first.amount_micros, first.batch_id))
            return
        group.sort(key=lambda line: line.batch_id)
        latest = max(group, key=lambda line: line.expected_us)
        entry = self.entry(
            latest,
            sum(line.amount_micros for line in group),
            "+".join(line.batch_id for line in group),
        )
        entry.parts = tuple((line.amount_micros, line.batch_id) for line in group)
        self.add(_Event("merged", "matched", group, [entry]))

    def _unreferenced(self) -> None:
        line = self.take(lambda line: self.amount_counts[(line.currency, line.amount_micros)] == 1)
        if line is not None:
            entry = self.entry(line, line.amount_micros, None, lag_days=0)
            self.add(_Event("unreferenced", "matched", [line], [entry]))

    def _unexpected(self) -> None:
        if not self.lines:
            return
        like = self.lines[self.rng.randrange(len(self.lines))]
        step = minor_unit_step(like.currency)
        amount = self.rng.randint(1, 10**6) * step * self.rng.choice((-1, 1, 1))
        reference = self.rng.choice(
            (None, f"fee-{len(self.events)}", f"b-unknown{len(self.events)}")
        )
        entry = self.entry(like, amount, reference)
        self.add(_Event("unexpected", "unexpected_in_statement", [], [entry]))

    def _merged_unreferenced(self) -> None:
        """A party's whole day in one currency, in one entry with no reference."""
        days: dict[tuple[str, str, date], list[int]] = defaultdict(list)
        for index, line in enumerate(self.lines):
            days[(line.party_id, line.currency, _utc_date(line.expected_us))].append(index)
        choices = [
            indexes
            for indexes in days.values()
            if len(indexes) >= 2
            and all(self.lines[i].lines_in_batch == 1 and i not in self.taken for i in indexes)
            and abs(sum(self.lines[i].amount_micros for i in indexes)) <= AMOUNT_MICROS_MAX
        ]
        if not choices:
            return
        indexes = choices[self.rng.randrange(len(choices))]
        group = [self.lines[i] for i in indexes]
        total = sum(line.amount_micros for line in group)
        if total == 0:
            return
        for index in indexes:
            self.taken.add(index)
        self.pool = [index for index in self.pool if index not in self.taken]
        entry = self.entry(group[-1], total, None, lag_days=0)
        entry.value_date = _utc_date(group[0].expected_us)  # the day the group is dated by
        self.add(_Event("merged_unreferenced", "matched", group, [entry]))

    # -- the rest, and the safety of amounts

    def pay_the_rest(self) -> None:
        """Every line without an event: one entry naming its batch."""
        for index, line in enumerate(self.lines):
            if index not in self.taken:
                self.entries.append(self.entry(line, line.amount_micros, line.batch_id))

    def make_amounts_unambiguous(self) -> None:
        """Re-draw unexpected amounts, and undo merged_unreferenced groups, that another rule
        could take: an amount a payout line has, or the sum of a party's open lines of a day."""
        open_kinds = ("dropped", "delayed_within_grace", "delayed_beyond_grace")
        open_days: dict[tuple[str, str, date], int] = defaultdict(int)
        for event in self.events:
            if event.kind in open_kinds:
                line = event.lines[0]
                open_days[(line.party_id, line.currency, _utc_date(line.expected_us))] += (
                    line.amount_micros
                )
        taken_sums = {(key[1], total) for key, total in open_days.items()}
        line_amounts = set(self.amount_counts)
        for event in self.events:
            if event.kind == "merged_unreferenced":
                entry = event.entries[0]
                key = (entry.currency, entry.amount_micros)
                if key in line_amounts or key in taken_sums:
                    event.kind, event.expected_class = "merged_unreferenced_undone", "matched"
                    self.entries.remove(entry)
                    event.entries = [
                        self.entry(line, line.amount_micros, line.batch_id) for line in event.lines
                    ]
                    self.entries.extend(event.entries)
                else:
                    taken_sums.add(key)
        for event in self.events:
            if event.kind == "unexpected":
                entry = event.entries[0]
                step = minor_unit_step(entry.currency)
                while (entry.currency, entry.amount_micros) in line_amounts | taken_sums:
                    entry.amount_micros += step

    def finish(
        self, batched_merges: bool
    ) -> tuple[list[StatementLine], list[StatementBalance], tuple[InjectedBreak, ...]]:
        """Entry ids, balances and the injected list."""
        self.make_amounts_unambiguous()
        self.events = [event for event in self.events if event.kind != "merged_unreferenced_undone"]
        for entry in self.entries:
            if not batched_merges:
                entry.parts = ()
        self.entries.sort(
            key=lambda e: (
                e.statement_id,
                e.booked_us,
                e.reference or "",
                e.amount_micros,
                -1 if e.event is None else e.event,
            )
        )
        counters: Counter[str] = Counter()
        for entry in self.entries:
            counters[entry.statement_id] += 1
            entry.entry_id = f"e{counters[entry.statement_id]:07d}"
        balances = self.balances()
        injected = tuple(self.injected_break(number) for number in range(len(self.events)))
        return self.entries, balances, injected

    def balances(self) -> list[StatementBalance]:
        by_statement: dict[str, list[StatementLine]] = defaultdict(list)
        for entry in self.entries:
            by_statement[entry.statement_id].append(entry)
        balances = []
        for statement_id in sorted(by_statement):
            entries = by_statement[statement_id]
            currency = entries[0].currency
            opening = (
                self.rng.randint(0, OPENING_BALANCE_UNITS_MAX) * minor_unit_step(currency) * 100
            )
            closing = opening + sum(entry.amount_micros for entry in entries)
            if abs(closing) > AMOUNT_MICROS_MAX:
                raise ConfigError(
                    f"the {currency} payouts sum beyond what one statement's balance can hold "
                    f"(DECIMAL(18,6)): simulate a statement of a smaller run"
                )
            first = min(entry.value_date for entry in entries)
            last = max(entry.value_date for entry in entries)
            balances.append(
                StatementBalance(statement_id, currency, None, opening, closing, first, last, "")
            )
        return balances

    def injected_break(self, number: int) -> InjectedBreak:
        event = self.events[number]
        entry_ids: list[str] = []
        for entry in event.entries:
            if entry.parts:
                entry_ids.extend(f"{entry.entry_id}/{k}" for k in range(1, len(entry.parts) + 1))
            else:
                entry_ids.append(entry.entry_id)
        currency = (event.lines or event.entries)[0].currency
        statement = event.entries[0].statement_id if event.entries else None
        invariant(event.kind in KINDS, "unknown event kind %s", event.kind)
        return InjectedBreak(
            event.kind,
            event.expected_class,
            tuple(sorted(line.batch_id for line in event.lines)),
            currency,
            _decimal(sum(line.amount_micros for line in event.lines)),
            _decimal(sum(entry.amount_micros for entry in event.entries)),
            statement,
            tuple(sorted(entry_ids)),
        )


# --------------------------------------------------------------------------- writing


def write_statement(
    path: Path | str,
    balances: Sequence[StatementBalance],
    lines: Iterable[StatementLine],
    format: str,
) -> None:
    """Write balances and entries as CSV or camt.053 (layouts of `centflow.recon.statements`)."""
    text = _csv_text(balances, lines) if format == "csv" else _camt053_text(balances, lines)
    Path(path).write_text(text, encoding="utf-8")


def _csv_text(balances: Sequence[StatementBalance], lines: Iterable[StatementLine]) -> str:
    """CSV: a header, each statement's OPBD line, its entries, its CLBD line."""
    by_statement: dict[str, list[StatementLine]] = defaultdict(list)
    for line in lines:
        by_statement[line.statement_id].append(line)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for balance in balances:
        opened = balance.opening_date or date(1970, 1, 1)
        closed = balance.closing_date or opened
        writer.writerow(
            [balance.statement_id, "OPBD", opened.isoformat(), "", balance.currency,
             _amount_text(balance.opening_micros, balance.currency), ""]
        )  # fmt: skip
        for line in by_statement.get(balance.statement_id, []):
            if line.currency != balance.currency:
                continue
            parts = line.parts or ((line.amount_micros, line.reference),)
            for number, (amount, reference) in enumerate(parts, start=1):
                writer.writerow(
                    [line.statement_id, line.entry_id if not line.parts else f"{line.entry_id}/{number}",
                     _timestamp_text(line.booked_us), line.value_date.isoformat(), line.currency,
                     _amount_text(amount, line.currency), reference or ""]
                )  # fmt: skip
        writer.writerow(
            [balance.statement_id, "CLBD", closed.isoformat(), "", balance.currency,
             _amount_text(balance.closing_micros, balance.currency), ""]
        )  # fmt: skip
    return buffer.getvalue()


def _camt053_text(balances: Sequence[StatementBalance], lines: Iterable[StatementLine]) -> str:
    """camt.053.001.08: one Stmt per statement id (its balances per currency, then entries)."""
    ElementTree.register_namespace("", CAMT053_NAMESPACE)
    ns = f"{{{CAMT053_NAMESPACE}}}"

    def sub(parent: ElementTree.Element, name: str, text: str | None = None) -> ElementTree.Element:
        element = ElementTree.SubElement(parent, ns + name)
        if text is not None:
            element.text = text
        return element

    def amount(parent: ElementTree.Element, micros: int, currency: str) -> None:
        sub(parent, "Amt", _amount_text(abs(micros), currency)).set("Ccy", currency)
        sub(parent, "CdtDbtInd", "CRDT" if micros >= 0 else "DBIT")

    root = ElementTree.Element(ns + "Document")
    report = sub(root, "BkToCstmrStmt")
    header = sub(report, "GrpHdr")
    sub(header, "MsgId", "centflow-simulated")
    sub(header, "CreDtTm", "1970-01-01T00:00:00Z")
    by_statement: dict[str, list[StatementLine]] = defaultdict(list)
    for line in lines:
        by_statement[line.statement_id].append(line)
    grouped: dict[str, list[StatementBalance]] = defaultdict(list)
    for balance in balances:
        grouped[balance.statement_id].append(balance)
    for statement_id, statement_balances in grouped.items():
        statement = sub(report, "Stmt")
        sub(statement, "Id", statement_id)
        account = sub(sub(statement, "Acct"), "Id")
        sub(sub(account, "Othr"), "Id", statement_balances[0].account or f"acct-{statement_id}")
        for balance in statement_balances:
            for code, micros, day in (
                ("OPBD", balance.opening_micros, balance.opening_date),
                ("CLBD", balance.closing_micros, balance.closing_date),
            ):
                element = sub(statement, "Bal")
                sub(sub(sub(element, "Tp"), "CdOrPrtry"), "Cd", code)
                amount(element, micros, balance.currency)
                sub(sub(element, "Dt"), "Dt", (day or date(1970, 1, 1)).isoformat())
        for line in by_statement.get(statement_id, []):
            entry = sub(statement, "Ntry")
            sub(entry, "NtryRef", line.entry_id)
            amount(entry, line.amount_micros, line.currency)
            sub(sub(entry, "Sts"), "Cd", "BOOK")
            sub(sub(entry, "BookgDt"), "DtTm", _timestamp_text(line.booked_us))
            sub(sub(entry, "ValDt"), "Dt", line.value_date.isoformat())
            parts = line.parts or (
                ((line.amount_micros, line.reference),) if line.reference else ()
            )
            if parts:
                details = sub(entry, "NtryDtls")
                for part_micros, reference in parts:
                    transaction = sub(details, "TxDtls")
                    sub(sub(transaction, "Refs"), "EndToEndId", reference or "NOTPROVIDED")
                    if line.parts:
                        amount(transaction, part_micros, line.currency)
    ElementTree.indent(root)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + ElementTree.tostring(root, encoding="unicode")
        + "\n"
    )


# --------------------------------------------------------------------------- values


def _amount_text(micros: int, currency: str) -> str:
    """Decimal text at the currency's minor unit (never finer: statements are in minor units)."""
    exponent = minor_unit_exponent(currency)
    invariant(
        micros % minor_unit_step(currency) == 0,
        "%s %s is finer than its minor unit",
        micros,
        currency,
    )
    value = Decimal(micros).scaleb(-6).quantize(Decimal(1).scaleb(-exponent))
    return f"{value:f}"


def _timestamp_text(micros: int) -> str:
    seconds, fraction = divmod(micros, MICROS_PER_SECOND)
    moment = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{fraction:06d}Z" if fraction else f"{moment}Z"


def _utc_date(micros: int) -> date:
    return date(1970, 1, 1) + timedelta(days=micros // MICROS_PER_DAY)


def _day_us(day: date) -> int:
    return (day - date(1970, 1, 1)).days * MICROS_PER_DAY


def _decimal(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6)
