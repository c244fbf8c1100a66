"""The review queue: payments held for review, and the resolutions that release or decline them.

The risk stage decides ``approve``, ``review`` or ``decline``; only approved
events settle at once. A payment in review is held until a person resolves it
with ``centflow review release`` or ``centflow review decline``. This module
owns what a resolution is, the file that records them, and the rules by which
settlement applies them (`ReviewBook`, used by
`centflow.money.settlement.SettlementShard`).

**The resolution file.** ``OUT/reviews/resolutions.jsonl``, one JSON object a
line (`Resolution`): the payment (payee and event id), the outcome
(``release`` or ``decline``), when it was made (``resolved_at``, this machine's
clock, µs) and an optional note. It is append-only: `append_resolutions`
writes the whole file again under a temporary name, fsyncs it and renames it
over the old one, under an exclusive ``flock`` of ``OUT/reviews/.lock``, so a
reader sees the file before or after an append, never half a line. Each
resolution gets the next ``sequence`` number and a ``resolved_at`` later than
every earlier one (the clock, or one µs past the last if the clock went back).
``--fresh`` keeps the file: it records decisions people made, not pipeline
state.

**Final and idempotent.** A payment is resolved at most once: resolving it
again the same way changes nothing; the other way is refused. Only payments
(not refunds or chargebacks) are resolved; a reversal held because its payment
is in review follows its payment: released with it (settling in the same
batch as its payment or later), declined with it. A reversal arriving after
its payment was resolved follows the resolution at once.

**How a release reaches settlement.** The file is an input of the dataflow
(`dataflows.sources.ReviewSource`, input partition ``reviews``): read at the
start of every run, and while a run follows a Kafka topic, every second. Its
watermark is the promise that every resolution still to come is stamped
later: the time the file was read under its lock (following a topic), or the
end of input (a replay or ``--until-idle`` run, which reads the file once, at
start). Settlement's frontier includes it, so no window closes before the
resolutions that could join it have been read, whatever the order the inputs
were read in. A released event joins the window

    target = max(own window, floor((resolved_at - lateness) / window length))

where *own window* is the one it would have joined had it been approved (from
its event and ingestion times, `centflow.money.settlement.assign_window`) and
the second term is the payee's next open batch at the moment of the release,
the rule late events follow. It is marked ``late`` when the target is not its
own window (nearly always: a review takes longer than a window). Both terms
come from the event and the resolution alone, so the batch a release joins
does not depend on workers, read order or crashes. When the run that reads a
resolution has already closed every window (a finished replay run again, or
``--until-idle``), the target window closes as soon as the release is in:
the rerun settles it in a batch of its own (with the releases of the same
payee and minute), window ``[target, target + length)`` in the resolution's
time, batch fees charged as for any batch, the carry from the payee's last
batch taken in. If a window at or after the target was already closed (a
resolution stamped behind the log's clock, read after a stop), the event
joins the earliest window still open instead.

A declined payment (and each reversal following it) never settles and posts
nothing; its ``payments`` row records the outcome.

**The tables.** A held event's ``payments`` row is written when it is decided,
with ``review_outcome = 'pending'`` and no batch; when it is resolved, a second
row with the same key is written with ``review_outcome`` ``released`` (and its
``batch_id`` and ``late``, once its window closes) or ``declined``,
``resolved_at`` and ``review_note``. The DuckDB load keeps the resolved row
(`sinks.duckdb`). ``decision`` stays the risk stage's (``review``).

**Memory.** Held events stay in settlement state until resolved (about 1 KB
each, like an open window's events), and each resolution's outcome is kept
(for reversals that come later): resolve reviews, and the state stays small.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import ConfigError, TerminalError, invariant
from centflow.ingest.timeparse import format_us, parse_rfc3339_us
from centflow.limits import MICROS_PER_SECOND

REVIEWS_DIR = "reviews"
RESOLUTIONS_FILE = "resolutions.jsonl"
LOCK_FILE = ".lock"
OUTCOMES = ("release", "decline")
#: The ``review_outcome`` of a ``payments`` row, by resolution outcome.
REVIEW_OUTCOME = {"release": "released", "decline": "declined"}
PENDING = "pending"
NOTE_CHARS_MAX = 500
EVENT_ID_CHARS_MAX = 64
RESOLUTIONS_PER_COMMAND_MAX = 10_000
RESOLUTIONS_MAX = 10_000_000  # lines a resolution file may hold
POLL_S = 1.0  # how often a run that follows a topic reads the file again
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Resolution(msgspec.Struct, frozen=True, array_like=True):
    """One person's resolution of one payment in review."""

    sequence: int  # 1, 2, ...: the line number in the file
    payee_id: str
    event_id: str
    outcome: str  # "release" | "decline"
    resolved_us: int
    note: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(payee, payment event id): the payment it resolves."""
        return (self.payee_id, self.event_id)


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    """A line of the resolution file, as written (times as RFC 3339 text)."""

    sequence: int
    payee_id: str
    event_id: str
    outcome: str
    resolved_at: str
    note: str | None = None


_line_decoder = msgspec.json.Decoder(_Line)
_line_encoder = msgspec.json.Encoder()


def resolutions_path(out_dir: Path) -> Path:
    """``OUT/reviews/resolutions.jsonl``."""
    return out_dir / REVIEWS_DIR / RESOLUTIONS_FILE


def encode_line(resolution: Resolution) -> bytes:
    """A resolution as its line in the file (with the newline).

    >>> encode_line(Resolution(1, "m1", "e1", "release", 1_500_000, None))
    b'{"sequence":1,"payee_id":"m1","event_id":"e1","outcome":"release","resolved_at":"1970-01-01T00:00:01.500000Z","note":null}\\n'
    """
    line = _Line(
        resolution.sequence,
        resolution.payee_id,
        resolution.event_id,
        resolution.outcome,
        format_us(resolution.resolved_us),
        resolution.note,
    )
    return _line_encoder.encode(line) + b"\n"


def decode_line(data: bytes, where: str) -> Resolution:
    """A line of the file as a `Resolution`; a line the file must never hold is a
    `TerminalError` naming it (the file is written by `append_resolutions` only)."""
    try:
        line = _line_decoder.decode(data)
        resolved_us = parse_rfc3339_us(line.resolved_at)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as error:
        raise TerminalError(f"{where}: not a resolution ({error}); restore the file") from None
    if line.outcome not in OUTCOMES:
        raise TerminalError(f"{where}: outcome {line.outcome!r} is not release or decline")
    return Resolution(
        line.sequence, line.payee_id, line.event_id, line.outcome, resolved_us, line.note
    )


@contextmanager
def locked(out_dir: Path, exclusive: bool) -> Iterator[Path]:
    """Hold the resolution file's lock (shared to read, exclusive to append); yield its path."""
    directory = out_dir / REVIEWS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield directory / RESOLUTIONS_FILE
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_resolutions(path: Path, skip: int = 0) -> list[Resolution]:
    """The resolutions in `path` after its first `skip` lines (none if it is missing);
    each line's sequence is checked against its position."""
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    invariant(len(lines) <= RESOLUTIONS_MAX, "%s holds more than %s lines", path, RESOLUTIONS_MAX)
    out = []
    for number, data in enumerate(lines[skip:], skip + 1):
        resolution = decode_line(data, f"{path}:{number}")
        if resolution.sequence != number:
            raise TerminalError(
                f"{path}:{number}: sequence {resolution.sequence}; restore the file"
            )
        out.append(resolution)
    return out


def read_since(out_dir: Path, skip: int) -> tuple[list[Resolution], int]:
    """(resolutions after the first `skip`, the time read): under the shared lock, so
    every resolution appended later is stamped after the time returned."""
    with locked(out_dir, exclusive=False) as path:
        resolutions = read_resolutions(path, skip)
        return resolutions, time.time_ns() // 1000


def check_note(note: str | None) -> str | None:
    """A note as recorded: one line, at most `NOTE_CHARS_MAX` characters."""
    if note is None:
        return None
    if len(note) > NOTE_CHARS_MAX or _CONTROL.search(note):
        raise ConfigError(
            f"--note must be one line of at most {NOTE_CHARS_MAX} characters "
            f"(got {len(note)} characters)"
        )
    return note or None


def append_resolutions(
    out_dir: Path, wanted: list[tuple[str, str, str]], note: str | None, now_us: int | None = None
) -> list[tuple[Resolution, bool]]:
    """Record the resolutions `wanted`, ``(payee_id, event_id, outcome)``, all or none.

    Returns, in order, each one's resolution and whether it was recorded now
    (False: the payment had been resolved the same way before, nothing written).
    A payment already resolved the other way is refused (`ConfigError`) and
    nothing is written. The file is replaced in one rename, fsynced.
    """
    invariant(
        0 < len(wanted) <= RESOLUTIONS_PER_COMMAND_MAX, "bad resolution count %s", len(wanted)
    )
    with locked(out_dir, exclusive=True) as path:
        existing = read_resolutions(path)
        known = {resolution.key: resolution for resolution in existing}
        last_us = existing[-1].resolved_us if existing else 0
        clock_us = time.time_ns() // 1000 if now_us is None else now_us
        results: list[tuple[Resolution, bool]] = []
        added: list[Resolution] = []
        for payee_id, event_id, outcome in wanted:
            invariant(outcome in OUTCOMES, "bad outcome %r", outcome)
            before = known.get((payee_id, event_id))
            if before is not None:
                if before.outcome != outcome:
                    raise ConfigError(
                        f"{event_id} was {REVIEW_OUTCOME[before.outcome]} at "
                        f"{format_us(before.resolved_us)}; a resolution is final"
                    )
                results.append((before, False))
                continue
            last_us = max(clock_us, last_us + 1)
            resolution = Resolution(
                len(existing) + len(added) + 1, payee_id, event_id, outcome, last_us, note
            )
            known[resolution.key] = resolution
            added.append(resolution)
            results.append((resolution, True))
        if added:
            _replace(path, path.read_bytes() if path.exists() else b"", added)
    return results


def _replace(path: Path, before: bytes, added: list[Resolution]) -> None:
    invariant(before == b"" or before.endswith(b"\n"), "%s does not end a line", path)
    data = before + b"".join(encode_line(resolution) for resolution in added)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    invariant(path.read_bytes() == data, "%s: what was written is not what is read back", path)


class ReviewBlock(msgspec.Struct, frozen=True, array_like=True):
    """What the review input emits: resolutions read, and its watermark (µs)."""

    resolutions: list[Resolution]
    watermark_us: int


class ReviewEnvelope(msgspec.Struct, frozen=True, array_like=True):
    """A settlement shard's share of a `ReviewBlock` (its payees' resolutions)."""

    origin: str
    shard: int
    watermark_us: int
    resolutions: list[Resolution]


def release_window(resolved_us: int, window_us: int, lateness_us: int) -> int:
    """The payee's next open window at the moment of a release: the earliest window
    still accepting events ingested then (the rule of late events).

    >>> release_window(resolved_us=125, window_us=10, lateness_us=3)
    12
    """
    invariant(
        window_us > 0 and lateness_us >= 0, "bad window %s / lateness %s", window_us, lateness_us
    )
    return (resolved_us - lateness_us) // window_us


def held_key(events: pa.RecordBatch | pa.Table) -> list[tuple[str, str]]:
    """(payee, payment id) of each held event: its own id for a payment, the id of the
    payment it reverses for a refund or chargeback."""
    is_payment = pc.equal(events["type"], "payment").to_numpy(zero_copy_only=False)
    ids = events["event_id"].to_pylist()
    references = events["ref_event_id"].to_pylist()
    payees = events["payee_id"].to_pylist()
    return [
        (payee, event_id if payment else reference)
        for payee, event_id, reference, payment in zip(
            payees, ids, references, is_payment.tolist(), strict=True
        )
    ]


class ReviewState(msgspec.Struct, array_like=True):
    """Picklable part of a settlement shard's state: held events (Arrow IPC) and outcomes."""

    held: bytes
    outcomes: list[Resolution]


class ReviewBook:
    """The events one settlement shard holds for review, and the resolutions it has heard.

    Pure bookkeeping: it says which events a resolution releases or declines;
    the shard puts released events into windows. Applying is order-free: an
    event is resolved when both it and its payment's resolution have arrived,
    whichever came first.
    """

    def __init__(self, schema: pa.Schema, state: ReviewState | None = None) -> None:
        self._schema = schema
        self.held: dict[tuple[str, str], list[pa.RecordBatch]] = {}
        self.outcomes: dict[tuple[str, str], Resolution] = {}
        if state is not None:
            self.outcomes = {resolution.key: resolution for resolution in state.outcomes}
            if state.held:
                for batch in pa.ipc.open_stream(state.held).read_all().to_batches():
                    self._hold(batch)

    @property
    def held_count(self) -> int:
        """Events held, not yet resolved."""
        return sum(batch.num_rows for batches in self.held.values() for batch in batches)

    def hold(self, events: pa.RecordBatch) -> list[tuple[pa.RecordBatch, Resolution]]:
        """Hold events decided ``review``; return those whose payment is resolved already,
        each with its resolution (they are not held)."""
        invariant(
            bool(pc.all(pc.equal(events["decision"], "review")).as_py()),
            "only events in review are held",
        )
        ready: list[tuple[pa.RecordBatch, Resolution]] = []
        for row, key in enumerate(held_key(events)):
            event = events.slice(row, 1)
            resolution = self.outcomes.get(key)
            if resolution is None:
                self.held.setdefault(key, []).append(event)
            else:
                ready.append((event, resolution))
        return ready

    def _hold(self, events: pa.RecordBatch) -> None:
        for row, key in enumerate(held_key(events)):
            self.held.setdefault(key, []).append(events.slice(row, 1))

    def resolve(self, resolution: Resolution) -> list[pa.RecordBatch]:
        """Record a resolution; return the held events it resolves (no longer held).
        A payment's first resolution is its outcome; a later one changes nothing."""
        if resolution.key in self.outcomes:
            return []
        self.outcomes[resolution.key] = resolution
        return self.held.pop(resolution.key, [])

    def state(self) -> ReviewState:
        """A copy for recovery."""
        rows = [batch for key in sorted(self.held) for batch in self.held[key]]
        held = b""
        if rows:  # one record batch, not one per event: snapshots stay cheap
            table = pa.Table.from_batches(rows, schema=self._schema).combine_chunks()
            invariant(table.num_rows == self.held_count, "held events lost in a snapshot")
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, self._schema) as writer:
                writer.write_table(table)
            held = sink.getvalue().to_pybytes()
        outcomes = sorted(self.outcomes.values(), key=lambda resolution: resolution.sequence)
        return ReviewState(held, outcomes)


def mark_resolved(events: pa.RecordBatch, resolution: Resolution) -> pa.RecordBatch:
    """`events` with the review columns of `resolution`: outcome, time and note."""
    count = events.num_rows
    outcome = REVIEW_OUTCOME[resolution.outcome]
    events = _set(events, "review_outcome", pa.array([outcome] * count, pa.string()))
    events = _set(events, "resolved_us", pa.array([resolution.resolved_us] * count, pa.int64()))
    return _set(events, "review_note", pa.array([resolution.note] * count, pa.string()))


def mark_pending(events: pa.RecordBatch) -> pa.RecordBatch:
    """`events` (decided ``review``) marked as waiting for a resolution."""
    return _set(events, "review_outcome", pa.array([PENDING] * events.num_rows, pa.string()))


def _set(events: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    return events.set_column(events.schema.get_field_index(name), name, values)


def to_the_second(timestamp_us: int) -> str:
    """A time for people: RFC 3339 UTC, to the second.

    >>> to_the_second(1_500_000)
    '1970-01-01T00:00:01Z'
    """
    return format_us(timestamp_us - timestamp_us % MICROS_PER_SECOND).replace(".000000", "")


# -- the queue, as ``centflow review`` sees it: the Parquet dataset and the file

QUERIES_DIR = Path(__file__).resolve().parent / "queries"


class Reviewed(msgspec.Struct, frozen=True):
    """A payment as the dataset of a run shows it, for the review commands."""

    event_id: str
    source: str
    type: str
    payer_id: str
    payee_id: str
    amount: Decimal
    currency: str
    risk_score: float | None  # a model output, never money
    risk_reasons: str | None
    decision: str
    review_outcome: str | None
    resolved_us: int | None
    batch_id: str | None
    occurred_us: int


def payment_rows(out_dir: Path, event_ids: list[str] | None) -> list[Reviewed]:
    """The payments of `event_ids` in ``OUT/parquet/payments`` (or, with None, every
    payment whose review is pending there), each as its latest row."""
    import duckdb

    files = sorted(str(path) for path in (out_dir / "parquet" / "payments").glob("*.parquet"))
    if not files:
        raise ConfigError(f"{out_dir} holds no payments: run `centflow run --out {out_dir}` first")
    connection = duckdb.connect()
    try:
        rows = connection.execute(
            (QUERIES_DIR / "review_payments.sql").read_text(), [event_ids, files]
        ).fetchall()
    except duckdb.BinderException:
        raise ConfigError(
            f"{out_dir}: its payments have no review columns (made by an older centflow); "
            "rerun with --fresh"
        ) from None
    finally:
        connection.close()
    out = []
    for row in rows:
        invariant(len(row) == len(Reviewed.__struct_fields__), "review_payments: %s columns", len(row))  # fmt: skip
        values = list(row)
        values[11] = None if values[11] is None else _epoch_us(values[11])  # resolved_at
        values[13] = _epoch_us(values[13])  # occurred_at
        out.append(Reviewed(*values))
    return out


def _epoch_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Pending(msgspec.Struct, frozen=True):
    """The review queue: payments waiting, and resolutions recorded but not yet settled."""

    waiting: list[Reviewed]
    recorded: list[tuple[Reviewed, Resolution]]


def pending_reviews(out_dir: Path) -> Pending:
    """Payments in review in `out_dir`: unresolved, or resolved in the file but not yet
    applied by a run (their rows still pending)."""
    with locked(out_dir, exclusive=False) as path:
        resolutions = {resolution.key: resolution for resolution in read_resolutions(path)}
    waiting, recorded = [], []
    for row in payment_rows(out_dir, None):
        resolution = resolutions.get((row.payee_id, row.event_id))
        if resolution is None:
            waiting.append(row)
        else:
            recorded.append((row, resolution))
    return Pending(waiting, recorded)


def resolvable(out_dir: Path, event_ids: list[str]) -> list[Reviewed]:
    """The payments `event_ids` name, each one held for review (pending or resolved):
    an id that names none, a refund or chargeback, a payment never in review, or two
    payments is refused in one line (`ConfigError`), naming it."""
    for event_id in event_ids:
        if not 0 < len(event_id) <= EVENT_ID_CHARS_MAX:
            raise ConfigError(f"{event_id!r} is not an event id (1-{EVENT_ID_CHARS_MAX} chars)")
    if len(event_ids) > RESOLUTIONS_PER_COMMAND_MAX:
        raise ConfigError(f"at most {RESOLUTIONS_PER_COMMAND_MAX} event ids per command")
    found: dict[str, list[Reviewed]] = {}
    for row in payment_rows(out_dir, event_ids):
        found.setdefault(row.event_id, []).append(row)
    out = []
    for event_id in event_ids:
        rows = found.get(event_id, [])
        if not rows:
            raise ConfigError(f"{event_id}: no such payment in {out_dir}")
        held = [row for row in rows if row.decision == "review" and row.review_outcome]
        if not held:
            row = rows[0]
            if row.type != "payment":
                raise ConfigError(
                    f"{event_id} is a {row.type}, not a payment: a reversal follows "
                    "the resolution of the payment it reverses"
                )
            settled = f", settled in batch {row.batch_id}" if row.batch_id else ""
            raise ConfigError(f"{event_id}: not in review (decision {row.decision}{settled})")
        if held[0].type != "payment":
            raise ConfigError(
                f"{event_id} is a {held[0].type}, not a payment: it follows the "
                "resolution of the payment it reverses"
            )
        if len({row.payee_id for row in held}) > 1:
            raise ConfigError(
                f"{event_id}: in review for more than one payee "
                f"({', '.join(sorted({row.payee_id for row in held}))}); resolve it by hand"
            )
        out.append(held[0])
    return out
