"""Bank and rail statements into DuckDB: ISO 20022 camt.053 XML and a CSV layout.

A statement is what a bank or rail says it moved: per statement and currency an
opening balance, booked entries (credit positive, debit negative) and a closing
balance. `import_statement` reads one file, checks it, and loads it into two
tables of the analyst database:

``statements``         one row per (statement_id, currency): account, opening and
                       closing balance and their dates, entry count, format, file
``statement_entries``  one row per entry (the columns of the analyst contract):
                       statement_id, entry_id, booked_at, value_date, currency,
                       amount (signed: credit positive), reference, source_file

What this module owns, and what it may not do:

* **All or nothing.** A file is parsed and checked completely in memory first,
  then written in one DuckDB transaction. A refused file leaves the database
  exactly as it was; there is no half-loaded statement.
* **One clear refusal.** Anything wrong raises one `StatementRefused` subclass
  whose one-line message names the file, where (``line 7`` for CSV, an element
  path such as ``Document/BkToCstmrStmt/Stmt[1]/Ntry[3]/Amt`` for XML, ``line
  12, column 4`` for XML that is not well-formed) and what (the bad value and a
  hint). The stable `reason` code sits on the exception beside the message.
* **Statement arithmetic.** Per statement and currency, opening balance + the
  sum of its entries must equal the closing balance, to the micro-unit, or the
  file is refused (`StatementUnbalanced`). Amounts are parsed from text into
  integer micro-units and leave as `decimal.Decimal`; no float holds money. An
  amount finer than its currency's ISO 4217 minor unit (``1.005 USD``,
  ``100.5 JPY``) is refused: no bank books it, so it is a corrupt file.
* **Idempotent.** A statement is identified by its statement_id, an entry by
  (statement_id, entry_id). Importing a statement that is already loaded with
  the same content changes nothing (whatever the file is called now: the
  first file name is kept); the same ids with different content (an amount, a
  date, a reference, an extra or missing entry, another balance) are refused
  (`StatementConflict`), naming the first difference.
* **Bounded and safe.** A file larger than `STATEMENT_BYTES_MAX` (or the
  caller's `bytes_max`) is refused from its size on disk, before a byte is
  parsed. XML is parsed with ``defusedxml`` with DTDs forbidden: no entity can
  be declared, so no entity expansion (billion laughs) and no external entity
  or DTD is ever fetched (`StatementUnsafe`). Ids and references are at most
  `TEXT_CHARS_MAX` characters.

CSV layout (UTF-8, an optional BOM, comma-separated, RFC 4180 quoting)::

    statement_id,entry_id,booked_at,value_date,currency,amount,reference
    st-2026-11-02,OPBD,2026-11-02,,USD,1000.00,
    st-2026-11-02,e1,2026-11-02T09:15:00Z,2026-11-02,USD,125.40,b-4f9556c22ea547d8b8c4
    st-2026-11-02,e2,2026-11-02,2026-11-03,USD,-20.00,
    st-2026-11-02,CLBD,2026-11-02,,USD,1105.40,

* The header is exactly those seven names, in that order.
* ``entry_id`` ``OPBD`` and ``CLBD`` (the ISO 20022 balance codes) are reserved:
  such a line carries the opening or closing *booked balance* of its statement
  and currency, signed, dated by ``booked_at`` (a date or a timestamp; its UTC
  date is kept); its ``value_date`` and ``reference`` are left empty. Every
  (statement_id, currency) with entries needs exactly one of each; one with
  balances and no entries must have opening = closing. Balance lines may sit
  anywhere in the file.
* Every other line is an entry: ``booked_at`` is a date (``2026-11-02``, taken as
  midnight UTC) or an RFC 3339 timestamp with an offset (``Z`` or ``±hh:mm``);
  ``value_date`` is a date; ``currency`` an ISO 4217 code; ``amount`` a signed
  decimal (credit positive, debit negative; at most 12 integer and 6 fraction
  digits, and no finer than the currency's minor unit); ``reference`` is empty
  or the batch id the entry pays (or a combined reference, see
  `centflow.recon.matching`).
* Empty lines are skipped. Line numbers in messages are the file's physical lines.

camt.053 (any version ``urn:iso:std:iso:20022:tech:xsd:camt.053.001.NN``),
read as follows (paths below ``Document/BkToCstmrStmt/Stmt``):

* ``Id``: the statement_id. ``Acct/Id/IBAN`` or ``Acct/Id/Othr/Id``: the account.
* ``Bal``: ``Tp/CdOrPrtry/Cd`` ``OPBD`` is the opening balance (``PRCD``, the
  previous closing booked balance, stands in when there is no ``OPBD``), ``CLBD``
  the closing one; other balance types are ignored. ``Amt@Ccy``, ``CdtDbtInd``
  (``DBIT`` is negative), ``Dt/Dt`` or ``Dt/DtTm``. A statement may hold balances
  in several currencies; each currency is checked on its own.
* ``Ntry``: ``Amt@Ccy`` (unsigned) with ``CdtDbtInd`` gives the signed amount.
  ``RvslInd`` true marks a reversal. ISO 20022 defines ``CdtDbtInd`` of a
  reversal as the direction of the reversal booking itself, opposite to the
  original entry (a returned credit is booked ``DBIT`` with ``RvslInd`` true), so
  the sign comes from ``CdtDbtInd`` and the reversal flag does not flip it again:
  a returned payout nets its original entry to zero, and the booked balances
  (which the arithmetic check confirms) agree only with this reading.
  ``BookgDt`` (``Dt`` or ``DtTm``; required) gives booked_at; ``ValDt`` gives
  value_date (its date; the booking date when absent). A ``DtTm`` without an
  offset is taken as UTC. ``Sts`` (text, or ``Sts/Cd`` from version 8): only
  ``BOOK`` entries (or entries with no status) are loaded: pending (``PDNG``) and
  informational (``INFO``) entries are not in the booked balance, so they are
  skipped. ``NtryRef`` is the entry_id; without it the entry is ``ntry-K`` (its
  1-based position in the statement, stable for the same file).
* Reference: ``NtryDtls/TxDtls/Refs/EndToEndId`` (``NOTPROVIDED`` counts as
  none), else ``TxDtls/Refs/AcctSvcrRef``, else the entry's ``AcctSvcrRef``.
* **Batched entries**: an ``Ntry`` with several ``TxDtls`` (a batch booking:
  one amount on the account for several transactions) becomes **one
  statement_entries row per TxDtls**, with entry_id ``<entry id>/<n>`` (n the
  1-based position of the TxDtls in the entry), each with its own amount
  (``TxDtls/Amt``, or ``TxDtls/AmtDtls/TxAmt/Amt``; required when there are
  several), its own ``CdtDbtInd`` if it has one (the entry's otherwise) and
  its own reference. Why: each transaction names its own batch, so matching
  can pair them one by one; keeping one row would hide all references but
  one. The transactions must be in the entry's currency and sum exactly to
  the entry's amount, or the file is refused. An entry with one ``TxDtls``
  stays one row (its ``TxDtls`` amount, if given, must equal the entry's).

Limits: `STATEMENT_BYTES_MAX`, `TEXT_CHARS_MAX`, `ENTRIES_MAX` (all named
below). ISO 20022 bounds references at 35 characters; this importer accepts
up to `TEXT_CHARS_MAX`, because a combined reference of several batch ids is
longer than 35.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import duckdb
import pyarrow as pa
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from centflow.errors import CentflowError, invariant
from centflow.limits import MICROS_PER_SECOND, MICROS_PER_UNIT
from centflow.money.amounts import is_currency, minor_unit_exponent

#: The largest statement file accepted, checked on its size before parsing:
#: 64 MiB holds ~150k camt.053 entries or ~800k CSV lines, far more than a
#: day's statement of one account; a larger export is split by the bank.
STATEMENT_BYTES_MAX = 64 * 1024 * 1024
#: The longest statement id, entry id, account or reference.
TEXT_CHARS_MAX = 256
#: The most entries one file may hold (a bound on memory besides the size).
ENTRIES_MAX = 2_000_000

CSV_HEADER = (
    "statement_id",
    "entry_id",
    "booked_at",
    "value_date",
    "currency",
    "amount",
    "reference",
)
CSV_BALANCE_IDS = ("OPBD", "CLBD")
CAMT053_NAMESPACE_PREFIX = "urn:iso:std:iso:20022:tech:xsd:camt.053.001."
FORMATS = ("csv", "camt.053")

_MICROS_PER_DAY = 86_400 * MICROS_PER_SECOND
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNSIGNED_AMOUNT = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,6}))?")
_SIGNED_AMOUNT = re.compile(r"([+-]?)([0-9]{1,12})(?:\.([0-9]{1,6}))?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})?"
)

STATEMENT_TABLES_SQL = """
-- statements: one row per statement and currency, as imported.
CREATE TABLE IF NOT EXISTS statements (
    statement_id     VARCHAR NOT NULL,
    currency         VARCHAR NOT NULL,
    account          VARCHAR,                 -- IBAN or other account id, when given
    opening_balance  DECIMAL(18,6) NOT NULL,  -- signed: credit positive
    closing_balance  DECIMAL(18,6) NOT NULL,  -- = opening_balance + sum of the entries
    opening_date     DATE,
    closing_date     DATE,
    entry_count      BIGINT NOT NULL,
    format           VARCHAR NOT NULL,        -- csv | camt.053
    source_file      VARCHAR NOT NULL,        -- the file it was first imported from
    PRIMARY KEY (statement_id, currency)
);
-- statement_entries: one row per booked entry (per transaction of a batched camt.053 entry).
CREATE TABLE IF NOT EXISTS statement_entries (
    statement_id  VARCHAR NOT NULL,
    entry_id      VARCHAR NOT NULL,
    booked_at     TIMESTAMPTZ NOT NULL,
    value_date    DATE NOT NULL,
    currency      VARCHAR NOT NULL,
    amount        DECIMAL(18,6) NOT NULL,  -- signed: credit positive, debit negative
    reference     VARCHAR,                 -- the batch id(s) it pays, when the rail carries them
    source_file   VARCHAR NOT NULL,
    PRIMARY KEY (statement_id, entry_id)
);
"""


# --------------------------------------------------------------------------- errors


class StatementRefused(CentflowError):
    """A statement file that is not loaded, and why: one line naming file, place and problem.

    ``reason`` is a stable code (``oversize``, ``unsafe_xml``, ``not_well_formed``,
    ``invalid_amount`` …), ``location`` the CSV line or XML element path (may be
    empty), ``detail`` the problem with the bad value and a hint.
    """

    def __init__(self, reason: str, source: str, location: str, detail: str) -> None:
        place = f"{location}: " if location else ""
        super().__init__(f"statement {source} refused: {place}{detail}")
        self.reason = reason
        self.source = source
        self.location = location
        self.detail = detail


class StatementTooLarge(StatementRefused):
    """The file is larger than the size limit; nothing of it was parsed."""


class StatementUnsafe(StatementRefused):
    """The XML declares a DTD or entities (expansion bombs, external entities)."""


class StatementMalformed(StatementRefused):
    """A value or element is missing, unreadable or out of bounds."""


class StatementUnbalanced(StatementRefused):
    """Opening balance + entries is not the closing balance."""


class StatementConflict(StatementRefused):
    """The statement was imported before with different content under the same ids."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class StatementBalance:
    """Opening and closing booked balance of one statement in one currency (micro-units)."""

    statement_id: str
    currency: str
    account: str | None
    opening_micros: int
    closing_micros: int
    opening_date: date | None
    closing_date: date | None
    location: str  # where the opening balance was read, for messages


@dataclass(frozen=True, slots=True)
class StatementEntry:
    """One booked entry: amount signed in micro-units, credit positive."""

    statement_id: str
    entry_id: str
    booked_us: int  # µs since the epoch, UTC
    value_date: date
    currency: str
    amount_micros: int
    reference: str | None
    location: str  # CSV line or XML element path, for messages


@dataclass(frozen=True, slots=True)
class Statement:
    """A parsed, checked statement file: every balance and entry it holds."""

    source: str
    format: str
    balances: tuple[StatementBalance, ...]
    entries: tuple[StatementEntry, ...]


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What `import_statement` did: how many statements and entries were new."""

    source_file: str
    format: str
    statement_ids: tuple[str, ...]
    statements_added: int  # (statement, currency) rows added
    statements_present: int  # already loaded with the same content: left as they were
    entries_added: int
    entries_present: int


# --------------------------------------------------------------------------- values


def _amount_micros(text: str, currency: str, signed: bool) -> int | str:
    """Micro-units of an amount text, or a description of what is wrong with it."""
    if signed:
        match = _SIGNED_AMOUNT.fullmatch(text)
        if match is None:
            return f"amount {text[:40]!r} is not a signed decimal with at most 12 integer and 6 fraction digits"
        sign, whole, fraction = match.group(1), match.group(2), match.group(3) or ""
    else:
        match = _UNSIGNED_AMOUNT.fullmatch(text)
        if match is None:
            return f"amount {text[:40]!r} is not an unsigned decimal with at most 12 integer and 6 fraction digits"
        sign, whole, fraction = "", match.group(1), match.group(2) or ""
    micros = int(whole) * MICROS_PER_UNIT + int(fraction.ljust(6, "0"))
    step = 10 ** (6 - minor_unit_exponent(currency))
    if micros % step:
        return (
            f"amount {text!r} is finer than the minor unit of {currency} "
            f"({minor_unit_exponent(currency)} decimals)"
        )
    return -micros if sign == "-" else micros


def _date_value(text: str) -> date | str:
    """A calendar date ``YYYY-MM-DD``, or what is wrong with the text."""
    if _DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    return f"date {text[:40]!r} is not a valid YYYY-MM-DD date"


def _timestamp_us(text: str, offset_required: bool) -> int | str:
    """µs since the epoch of an ISO 8601 date-time, or what is wrong with it.

    Fractions beyond the microsecond are cut (never rounded up to another second).
    Without an offset the time is UTC, unless `offset_required`.
    """
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return f"timestamp {text[:40]!r} is not YYYY-MM-DDThh:mm:ss[.f][Z|±hh:mm]"
    whole, fraction, offset = match.group(1), match.group(2) or "", match.group(3)
    if offset is None and offset_required:
        return f"timestamp {text!r} has no offset: add Z or ±hh:mm"
    try:
        moment = datetime.fromisoformat(whole + ("+00:00" if offset in (None, "Z") else offset))
    except ValueError:
        return f"timestamp {text[:40]!r} is not a valid date and time"
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND + micros


def _date_us(day: date) -> int:
    """Midnight UTC of a date, in µs since the epoch."""
    return (day - _EPOCH.date()).days * _MICROS_PER_DAY


def _utc_date(micros: int) -> date:
    """The UTC calendar date of µs since the epoch."""
    return _EPOCH.date() + timedelta(days=micros // _MICROS_PER_DAY)


def _text_problem(name: str, text: str) -> str | None:
    """What is wrong with an id or reference text, or None."""
    if not text:
        return f"{name} is empty"
    if len(text) > TEXT_CHARS_MAX:
        return f"{name} {text[:40]!r}… is longer than {TEXT_CHARS_MAX} characters"
    if not text.isprintable():
        return f"{name} {text[:40]!r} holds a control character"
    return None


# --------------------------------------------------------------------------- reading


def read_statement(
    path: Path | str, format: str | None = None, bytes_max: int = STATEMENT_BYTES_MAX
) -> Statement:
    """Parse and check a statement file; raise a `StatementRefused` subclass if it is bad.

    `format` is ``"csv"`` or ``"camt.053"``; by default it follows the file name
    (``.xml`` is camt.053, ``.csv`` CSV) and, failing that, the first byte
    (``<`` is XML). The size is checked on disk before the file is read.
    """
    path = Path(path)
    source = str(path)
    size = path.stat().st_size
    if size > bytes_max:
        raise StatementTooLarge(
            "oversize", source, "", f"{size:,} bytes is above the limit of {bytes_max:,} bytes"
        )
    with path.open("rb") as file:
        data = file.read(bytes_max + 1)  # the file may grow between stat and read
    if len(data) > bytes_max:
        raise StatementTooLarge("oversize", source, "", f"more than {bytes_max:,} bytes")
    chosen = format or _guess_format(path, data)
    if chosen not in FORMATS:
        raise StatementMalformed(
            "unknown_format", source, "", f"format {chosen!r} is not one of {', '.join(FORMATS)}"
        )
    if chosen == "csv":
        balances, entries = _parse_csv(data, source)
    else:
        balances, entries = _parse_camt053(data, source)
    _check_arithmetic(balances, entries, source)
    return Statement(source, chosen, tuple(balances), tuple(entries))


def _guess_format(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return "camt.053"
    if suffix == ".csv":
        return "csv"
    return "camt.053" if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<") else "csv"


def _check_arithmetic(
    balances: list[StatementBalance], entries: list[StatementEntry], source: str
) -> None:
    """Opening + entries = closing per (statement, currency); entries need balances."""
    by_key = {(balance.statement_id, balance.currency): balance for balance in balances}
    sums: dict[tuple[str, str], int] = dict.fromkeys(by_key, 0)
    for entry in entries:
        key = (entry.statement_id, entry.currency)
        if key not in by_key:
            raise StatementMalformed(
                "missing_balance",
                source,
                entry.location,
                f"statement {entry.statement_id!r} has no opening and closing balance in "
                f"{entry.currency} for this entry",
            )
        sums[key] += entry.amount_micros
    for key, balance in by_key.items():
        expected = balance.opening_micros + sums[key]
        if expected != balance.closing_micros:
            raise StatementUnbalanced(
                "unbalanced",
                source,
                balance.location,
                f"statement {key[0]!r} {key[1]}: opening {Decimal(balance.opening_micros).scaleb(-6)} "
                f"+ entries {Decimal(sums[key]).scaleb(-6)} = {Decimal(expected).scaleb(-6)}, "
                f"but the closing balance is {Decimal(balance.closing_micros).scaleb(-6)}",
            )


# --------------------------------------------------------------------------- CSV


def _parse_csv(data: bytes, source: str) -> tuple[list[StatementBalance], list[StatementEntry]]:
    """The balances and entries of a CSV statement (layout in the module docstring)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise StatementMalformed(
            "not_utf8", source, f"line {line}", f"byte {data[error.start]:#04x} is not UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows = _csv_rows(reader, source)
    try:
        line, header = next(rows)
    except StopIteration:
        raise StatementMalformed("missing_header", source, "line 1", "the file is empty") from None
    if tuple(name.strip() for name in header) != CSV_HEADER:
        raise StatementMalformed(
            "bad_header",
            source,
            f"line {line}",
            f"header {','.join(header)[:120]!r} is not {','.join(CSV_HEADER)!r}",
        )
    openings: dict[tuple[str, str], tuple[int, date, str]] = {}
    closings: dict[tuple[str, str], tuple[int, date, str]] = {}
    entries: list[StatementEntry] = []
    seen: dict[tuple[str, str], int] = {}
    for line, row in rows:
        where = f"line {line}"
        if len(row) != len(CSV_HEADER):
            raise StatementMalformed(
                "bad_row", source, where, f"{len(row)} fields, expected {len(CSV_HEADER)}"
            )
        statement_id, entry_id, booked_at, value_date, currency, amount, reference = (
            field.strip() for field in row
        )
        for name, value in (("statement_id", statement_id), ("entry_id", entry_id)):
            _refuse_if(_text_problem(name, value), "invalid_id", source, where)
        if not is_currency(currency):
            raise StatementMalformed(
                "unknown_currency",
                source,
                where,
                f"currency {currency[:12]!r} is not an ISO 4217 code",
            )
        micros = _amount_micros(amount, currency, signed=True)
        if isinstance(micros, str):
            raise StatementMalformed("invalid_amount", source, where, micros)
        booked_us = _csv_booked_us(booked_at, source, where)
        key = (statement_id, entry_id)
        if key in seen:
            raise StatementMalformed(
                "duplicate_entry",
                source,
                where,
                f"entry {entry_id!r} of statement {statement_id!r} is already on line {seen[key]}",
            )
        seen[key] = line
        if entry_id in CSV_BALANCE_IDS:
            if value_date or reference:
                raise StatementMalformed(
                    "bad_balance",
                    source,
                    where,
                    f"a {entry_id} line has no value_date or reference",
                )
            target = openings if entry_id == "OPBD" else closings
            target[(statement_id, currency)] = (micros, _utc_date(booked_us), where)
            continue
        value_day = _date_value(value_date)
        if isinstance(value_day, str):
            raise StatementMalformed("invalid_date", source, where, f"value_date: {value_day}")
        if reference:
            _refuse_if(_text_problem("reference", reference), "invalid_reference", source, where)
        entries.append(
            StatementEntry(
                statement_id,
                entry_id,
                booked_us,
                value_day,
                currency,
                micros,
                reference or None,
                where,
            )
        )
        if len(entries) > ENTRIES_MAX:
            raise StatementMalformed(
                "too_many_entries", source, where, f"more than {ENTRIES_MAX:,} entries"
            )
    return _csv_balances(openings, closings, entries, source), entries


def _csv_rows(reader: Any, source: str) -> Iterator[tuple[int, list[str]]]:
    """(physical line number, fields) of each non-empty CSV row."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise StatementMalformed(
                "bad_csv", source, f"line {reader.line_num}", f"unreadable CSV: {error}"
            ) from None
        if row and any(field.strip() for field in row):
            yield reader.line_num, row


def _csv_booked_us(text: str, source: str, where: str) -> int:
    if _DATE.fullmatch(text):
        day = _date_value(text)
        if isinstance(day, str):
            raise StatementMalformed("invalid_date", source, where, f"booked_at: {day}")
        return _date_us(day)
    micros = _timestamp_us(text, offset_required=True)
    if isinstance(micros, str):
        raise StatementMalformed("invalid_date", source, where, f"booked_at: {micros}")
    return micros


def _csv_balances(
    openings: dict[tuple[str, str], tuple[int, date, str]],
    closings: dict[tuple[str, str], tuple[int, date, str]],
    entries: list[StatementEntry],
    source: str,
) -> list[StatementBalance]:
    """Pair OPBD and CLBD lines; every (statement, currency) with entries needs both."""
    keys = dict.fromkeys([*openings, *closings, *((e.statement_id, e.currency) for e in entries)])
    first_line = {}
    for entry in reversed(entries):
        first_line[(entry.statement_id, entry.currency)] = entry.location
    balances = []
    for key in keys:
        for name, table in (("OPBD", openings), ("CLBD", closings)):
            if key not in table:
                where = first_line.get(key) or (openings.get(key) or closings[key])[2]
                raise StatementMalformed(
                    "missing_balance",
                    source,
                    where,
                    f"statement {key[0]!r} has no {name} line for {key[1]}",
                )
        opening, closing = openings[key], closings[key]
        balances.append(
            StatementBalance(
                key[0], key[1], None, opening[0], closing[0], opening[1], closing[1], closing[2]
            )
        )
    return balances


def _refuse_if(problem: str | None, reason: str, source: str, where: str) -> None:
    if problem is not None:
        raise StatementMalformed(reason, source, where, problem)


# --------------------------------------------------------------------------- camt.053


class _Camt:
    """Reading one camt.053 document: namespace-aware lookups that name the path on failure."""

    def __init__(self, namespace: str, source: str) -> None:
        self.namespace = namespace
        self.source = source

    def tag(self, name: str) -> str:
        return f"{{{self.namespace}}}{name}"

    def find(self, element: Element, path: str) -> Element | None:
        return element.find("/".join(self.tag(part) for part in path.split("/")))

    def all(self, element: Element, name: str) -> list[Element]:
        return element.findall(self.tag(name))

    def need(self, element: Element, path: str, where: str) -> Element:
        found = self.find(element, path)
        if found is None:
            raise StatementMalformed(
                "missing_element", self.source, where, f"missing element {path}"
            )
        return found

    def text(self, element: Element, path: str, where: str) -> str:
        text = (self.need(element, path, where).text or "").strip()
        if not text:
            raise StatementMalformed(
                "missing_element", self.source, f"{where}/{path}", "the element is empty"
            )
        return text

    def optional_text(self, element: Element, path: str) -> str | None:
        found = self.find(element, path)
        text = (found.text or "").strip() if found is not None else ""
        return text or None

    def amount(self, element: Element, where: str) -> tuple[str, int]:
        """(currency, unsigned micro-units) of an ``Amt`` element."""
        currency = element.get("Ccy", "").strip()
        if not is_currency(currency):
            raise StatementMalformed(
                "unknown_currency",
                self.source,
                where,
                f"currency {currency[:12]!r} (attribute Ccy) is not an ISO 4217 code",
            )
        micros = _amount_micros((element.text or "").strip(), currency, signed=False)
        if isinstance(micros, str):
            raise StatementMalformed("invalid_amount", self.source, where, micros)
        return currency, micros

    def sign(self, element: Element, where: str) -> int:
        """+1 for ``CdtDbtInd`` CRDT, -1 for DBIT."""
        indicator = self.text(element, "CdtDbtInd", where)
        if indicator not in ("CRDT", "DBIT"):
            raise StatementMalformed(
                "invalid_indicator",
                self.source,
                f"{where}/CdtDbtInd",
                f"{indicator[:12]!r} is neither CRDT nor DBIT",
            )
        return 1 if indicator == "CRDT" else -1

    def moment_us(self, element: Element, where: str) -> int:
        """µs since the epoch of a ``Dt``/``DtTm`` choice (a date is midnight UTC)."""
        day = self.optional_text(element, "Dt")
        if day is not None:
            value = _date_value(day)
            if isinstance(value, str):
                raise StatementMalformed("invalid_date", self.source, f"{where}/Dt", value)
            return _date_us(value)
        moment = self.optional_text(element, "DtTm")
        if moment is None:
            raise StatementMalformed("missing_element", self.source, where, "missing Dt or DtTm")
        micros = _timestamp_us(moment, offset_required=False)
        if isinstance(micros, str):
            raise StatementMalformed("invalid_date", self.source, f"{where}/DtTm", micros)
        return micros

    def checked_text(self, text: str | None, name: str, where: str) -> str | None:
        if text is not None:
            _refuse_if(_text_problem(name, text), "invalid_text", self.source, where)
        return text


def _parse_camt053(data: bytes, source: str) -> tuple[list[StatementBalance], list[StatementEntry]]:
    """The balances and entries of a camt.053 document (reading rules in the module docstring)."""
    try:
        root = defused_fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise StatementUnsafe(
            "unsafe_xml",
            source,
            "",
            f"the XML declares a DTD or entities ({type(error).__name__}); statements never need one",
        ) from None
    except ParseError as error:
        line, column = error.position
        raise StatementMalformed(
            "not_well_formed",
            source,
            f"line {line}, column {column}",
            f"the XML is not well-formed (truncated or corrupt): {str(error).split(':')[0]}",
        ) from None
    namespace, _, name = (
        root.tag[1:].partition("}") if root.tag.startswith("{") else ("", "", root.tag)
    )
    if name != "Document" or not namespace.startswith(CAMT053_NAMESPACE_PREFIX):
        raise StatementMalformed(
            "not_camt053",
            source,
            root.tag[:80],
            f"the root is not a Document in a {CAMT053_NAMESPACE_PREFIX}NN namespace",
        )
    camt = _Camt(namespace, source)
    report = camt.need(root, "BkToCstmrStmt", "Document")
    statements = camt.all(report, "Stmt")
    if not statements:
        raise StatementMalformed("missing_element", source, "Document/BkToCstmrStmt", "no Stmt")
    balances: list[StatementBalance] = []
    entries: list[StatementEntry] = []
    seen_ids: set[str] = set()
    for index, statement in enumerate(statements, start=1):
        where = f"Document/BkToCstmrStmt/Stmt[{index}]"
        statement_id = camt.text(statement, "Id", where)
        _refuse_if(_text_problem("Id", statement_id), "invalid_id", source, f"{where}/Id")
        if statement_id in seen_ids:
            raise StatementMalformed(
                "duplicate_statement",
                source,
                f"{where}/Id",
                f"statement {statement_id!r} is in the file twice",
            )
        seen_ids.add(statement_id)
        account = camt.optional_text(statement, "Acct/Id/IBAN") or camt.optional_text(
            statement, "Acct/Id/Othr/Id"
        )
        camt.checked_text(account, "account", f"{where}/Acct")
        balances.extend(_camt_balances(camt, statement, statement_id, account, where))
        entries.extend(_camt_entries(camt, statement, statement_id, where))
        if len(entries) > ENTRIES_MAX:
            raise StatementMalformed(
                "too_many_entries", source, where, f"more than {ENTRIES_MAX:,} entries"
            )
    return balances, entries


def _camt_balances(
    camt: _Camt, statement: Element, statement_id: str, account: str | None, where: str
) -> list[StatementBalance]:
    """OPBD (or PRCD) and CLBD per currency of one ``Stmt``."""
    found: dict[tuple[str, str], tuple[int, date, str]] = {}
    for index, balance in enumerate(camt.all(statement, "Bal"), start=1):
        path = f"{where}/Bal[{index}]"
        code = camt.optional_text(balance, "Tp/CdOrPrtry/Cd")
        if code not in ("OPBD", "PRCD", "CLBD"):
            continue
        currency, micros = camt.amount(camt.need(balance, "Amt", path), f"{path}/Amt")
        signed = micros * camt.sign(balance, path)
        day = _utc_date(camt.moment_us(camt.need(balance, "Dt", path), f"{path}/Dt"))
        if (code, currency) in found:
            raise StatementMalformed(
                "duplicate_balance", camt.source, path, f"a second {code} balance in {currency}"
            )
        found[(code, currency)] = (signed, day, path)
    result = []
    for currency in dict.fromkeys(currency for _, currency in found):
        opening = found.get(("OPBD", currency)) or found.get(("PRCD", currency))
        closing = found.get(("CLBD", currency))
        if opening is None or closing is None:
            missing = "OPBD (or PRCD)" if opening is None else "CLBD"
            raise StatementMalformed(
                "missing_balance", camt.source, where, f"no {missing} balance in {currency}"
            )
        result.append(
            StatementBalance(
                statement_id,
                currency,
                account,
                opening[0],
                closing[0],
                opening[1],
                closing[1],
                closing[2],
            )
        )
    return result


def _camt_entries(
    camt: _Camt, statement: Element, statement_id: str, where: str
) -> Iterable[StatementEntry]:
    """The booked entries of one ``Stmt``, batched entries split per transaction."""
    seen: dict[str, str] = {}
    for index, entry in enumerate(camt.all(statement, "Ntry"), start=1):
        path = f"{where}/Ntry[{index}]"
        status = camt.optional_text(entry, "Sts/Cd") or camt.optional_text(entry, "Sts")
        if status not in (None, "BOOK"):
            continue  # pending or informational: not in the booked balance
        entry_id = camt.checked_text(
            camt.optional_text(entry, "NtryRef"), "NtryRef", f"{path}/NtryRef"
        )
        entry_id = entry_id or f"ntry-{index}"
        if entry_id in seen:
            raise StatementMalformed(
                "duplicate_entry",
                camt.source,
                path,
                f"entry id {entry_id!r} is also {seen[entry_id]}",
            )
        seen[entry_id] = path
        currency, micros = camt.amount(camt.need(entry, "Amt", path), f"{path}/Amt")
        sign = camt.sign(entry, path)
        reversal = camt.optional_text(entry, "RvslInd")
        if reversal not in (None, "true", "false", "1", "0"):
            raise StatementMalformed(
                "invalid_indicator",
                camt.source,
                f"{path}/RvslInd",
                f"{reversal[:12]!r} is not a boolean",
            )
        booked_us = camt.moment_us(camt.need(entry, "BookgDt", path), f"{path}/BookgDt")
        value = camt.find(entry, "ValDt")
        value_date = _utc_date(
            camt.moment_us(value, f"{path}/ValDt") if value is not None else booked_us
        )
        entry_reference = camt.optional_text(entry, "AcctSvcrRef")
        details = [
            detail
            for entry_details in camt.all(entry, "NtryDtls")
            for detail in camt.all(entry_details, "TxDtls")
        ]
        parts = _camt_transactions(camt, details, currency, sign, entry_reference, path)
        if len(parts) == 1 and parts[0][0] is not None and parts[0][0] != sign * micros:
            raise StatementMalformed(
                "inconsistent_amount",
                camt.source,
                f"{path}/NtryDtls",
                "the TxDtls amount differs from the entry's Amt",
            )
        if len(parts) > 1 and sum(part[0] or 0 for part in parts) != sign * micros:
            raise StatementMalformed(
                "inconsistent_amount",
                camt.source,
                f"{path}/NtryDtls",
                f"the {len(parts)} TxDtls amounts do not sum to the entry's Amt",
            )
        for number, (part_micros, reference, part_path) in enumerate(parts, start=1):
            yield StatementEntry(
                statement_id,
                entry_id if len(parts) == 1 else f"{entry_id}/{number}",
                booked_us,
                value_date,
                currency,
                sign * micros if len(parts) == 1 else int(part_micros or 0),
                camt.checked_text(reference, "reference", part_path),
                part_path,
            )


def _camt_transactions(
    camt: _Camt,
    details: list[Element],
    currency: str,
    sign: int,
    entry_reference: str | None,
    path: str,
) -> list[tuple[int | None, str | None, str]]:
    """(signed micro-units or None, reference, element path) per TxDtls; one part if none."""
    if not details:
        return [(None, entry_reference, path)]
    parts: list[tuple[int | None, str | None, str]] = []
    for number, detail in enumerate(details, start=1):
        detail_path = f"{path}/NtryDtls/TxDtls[{number}]"
        amount = camt.find(detail, "Amt")  # an Element without children is falsy: no `or`
        if amount is None:
            amount = camt.find(detail, "AmtDtls/TxAmt/Amt")
        micros: int | None = None
        if amount is not None:
            detail_currency, unsigned = camt.amount(amount, f"{detail_path}/Amt")
            if detail_currency != currency:
                raise StatementMalformed(
                    "inconsistent_currency",
                    camt.source,
                    f"{detail_path}/Amt",
                    f"a {detail_currency} transaction in a {currency} entry",
                )
            own_sign = (
                camt.sign(detail, detail_path)
                if camt.find(detail, "CdtDbtInd") is not None
                else sign
            )
            micros = own_sign * unsigned
        elif len(details) > 1:
            raise StatementMalformed(
                "missing_element",
                camt.source,
                detail_path,
                "a batched entry needs an Amt in each TxDtls",
            )
        end_to_end = camt.optional_text(detail, "Refs/EndToEndId")
        if end_to_end == "NOTPROVIDED":
            end_to_end = None
        reference = end_to_end or camt.optional_text(detail, "Refs/AcctSvcrRef") or entry_reference
        parts.append((micros, reference, detail_path))
    return parts


# --------------------------------------------------------------------------- loading


def ensure_statement_tables(connection: duckdb.DuckDBPyConnection) -> None:
    """Create ``statements`` and ``statement_entries`` if they are missing."""
    connection.execute(STATEMENT_TABLES_SQL)


def _arrow_tables(statement: Statement) -> tuple[pa.Table, pa.Table]:
    """The statement as Arrow tables in the tables' column order (money exact)."""
    money = pa.decimal128(18, 6)
    counts: dict[tuple[str, str], int] = {}
    for entry in statement.entries:
        key = (entry.statement_id, entry.currency)
        counts[key] = counts.get(key, 0) + 1
    balances = statement.balances
    statements = pa.table(
        {
            "statement_id": [b.statement_id for b in balances],
            "currency": [b.currency for b in balances],
            "account": pa.array([b.account for b in balances], pa.string()),
            "opening_balance": pa.array(
                [Decimal(b.opening_micros).scaleb(-6) for b in balances], money
            ),
            "closing_balance": pa.array(
                [Decimal(b.closing_micros).scaleb(-6) for b in balances], money
            ),
            "opening_date": pa.array([b.opening_date for b in balances], pa.date32()),
            "closing_date": pa.array([b.closing_date for b in balances], pa.date32()),
            "entry_count": pa.array(
                [counts.get((b.statement_id, b.currency), 0) for b in balances], pa.int64()
            ),
            "format": [statement.format] * len(balances),
            "source_file": [statement.source] * len(balances),
        }
    )
    entries = statement.entries
    entry_table = pa.table(
        {
            "statement_id": pa.array([e.statement_id for e in entries], pa.string()),
            "entry_id": pa.array([e.entry_id for e in entries], pa.string()),
            "booked_at": pa.array([e.booked_us for e in entries], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "value_date": pa.array([e.value_date for e in entries], pa.date32()),
            "currency": pa.array([e.currency for e in entries], pa.string()),
            "amount": pa.array([Decimal(e.amount_micros).scaleb(-6) for e in entries], money),
            "reference": pa.array([e.reference for e in entries], pa.string()),
            "source_file": pa.array([statement.source] * len(entries), pa.string()),
        }
    )
    return statements, entry_table


_STATEMENT_CONTENT = (
    "statement_id, currency, account, opening_balance, closing_balance, opening_date, "
    "closing_date, entry_count"
)
_ENTRY_CONTENT = "statement_id, entry_id, booked_at, value_date, currency, amount, reference"

# The first difference between what is loaded and what comes, for statements
# already loaded: rows on one side only, either way (EXCEPT is set difference).
_DIFFERENCE_SQL = """
WITH known AS (SELECT DISTINCT statement_id FROM {table} SEMI JOIN incoming_{table} USING (statement_id)),
old AS (SELECT {columns} FROM {table} SEMI JOIN known USING (statement_id)),
new AS (SELECT {columns} FROM incoming_{table} SEMI JOIN known USING (statement_id))
SELECT * FROM ((SELECT 'now', * FROM new EXCEPT SELECT 'now', * FROM old)
               UNION ALL (SELECT 'before', * FROM old EXCEPT SELECT 'before', * FROM new))
ORDER BY ALL LIMIT 1
"""


def import_statement(
    path: Path | str,
    db_path: Path | str,
    format: str | None = None,
    bytes_max: int = STATEMENT_BYTES_MAX,
) -> ImportResult:
    """Load a statement file into the DuckDB file `db_path`, all or nothing, idempotently.

    Raises a `StatementRefused` subclass (the database untouched) when the file
    is too large, unsafe, malformed, unbalanced, or conflicts with what was
    imported before under the same ids.
    """
    statement = read_statement(path, format, bytes_max)
    statements, entries = _arrow_tables(statement)
    connection = duckdb.connect(str(db_path))
    try:
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("incoming_statements", statements)
        connection.register("incoming_statement_entries", entries)
        connection.execute("BEGIN TRANSACTION")
        try:
            result = _load(connection, statement)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    finally:
        connection.close()
    return result


def _load(connection: duckdb.DuckDBPyConnection, statement: Statement) -> ImportResult:
    """Inside the transaction: refuse conflicts, add what is new, check what was written."""
    ensure_statement_tables(connection)
    for table, columns in (
        ("statements", _STATEMENT_CONTENT),
        ("statement_entries", _ENTRY_CONTENT),
    ):
        difference = connection.execute(
            _DIFFERENCE_SQL.format(table=table, columns=columns)  # names from this module only
        ).fetchone()
        if difference is not None:
            side, statement_id, key = difference[0], difference[1], difference[2]
            what = f"entry {key!r}" if table == "statement_entries" else f"currency {key}"
            raise StatementConflict(
                "conflict",
                statement.source,
                "",
                f"statement {statement_id!r} was imported before with other content "
                f"({what} differs or exists only {'in this file' if side == 'now' else 'in the database'}); "
                "a corrected statement needs a new statement id",
            )
    present_statements, present_entries = connection.execute(
        """SELECT (SELECT count(*) FROM incoming_statements SEMI JOIN statements USING (statement_id)),
                  (SELECT count(*) FROM incoming_statement_entries SEMI JOIN statements USING (statement_id))"""
    ).fetchall()[0]
    # Entries first: a statement counts as present by its rows in `statements`.
    for table in ("statement_entries", "statements"):
        connection.execute(
            f"INSERT INTO {table} SELECT * FROM incoming_{table} "
            "ANTI JOIN (SELECT DISTINCT statement_id FROM statements) USING (statement_id)"
        )
    _check_written(connection, statement)
    ids = tuple(dict.fromkeys(balance.statement_id for balance in statement.balances))
    return ImportResult(
        statement.source,
        statement.format,
        ids,
        len(statement.balances) - int(present_statements),
        int(present_statements),
        len(statement.entries) - int(present_entries),
        int(present_entries),
    )


def _check_written(connection: duckdb.DuckDBPyConnection, statement: Statement) -> None:
    """Read back what the file's statements hold now: the arithmetic must still hold."""
    (bad, orphans) = connection.execute(
        """
        WITH mine AS (SELECT DISTINCT statement_id FROM incoming_statements),
        sums AS (
            SELECT statement_id, currency, count(*) AS entries, sum(amount) AS total
            FROM statement_entries SEMI JOIN mine USING (statement_id)
            GROUP BY ALL
        )
        SELECT
            (SELECT count(*) FROM statements AS s SEMI JOIN mine USING (statement_id)
             LEFT JOIN sums USING (statement_id, currency)
             WHERE coalesce(sums.entries, 0) <> s.entry_count
                OR s.opening_balance + coalesce(sums.total, 0) <> s.closing_balance),
            (SELECT count(*) FROM sums ANTI JOIN statements USING (statement_id, currency))
        """
    ).fetchall()[0]
    invariant(
        bad == 0, "%s: %s statement balance(s) do not add up once loaded", statement.source, bad
    )
    invariant(
        orphans == 0, "%s: entries without a statement balance row once loaded", statement.source
    )
