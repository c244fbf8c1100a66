"""Replay logs: JSON lines, plain or gzipped, or a directory of them, and the log clock.

A replay file has no broker to stamp ingestion times, so centflow defines one
deterministically from the log itself: the **log clock**. A message's
ingestion time is the largest ``occurred_at`` seen so far in log order
(including its own), floored to the millisecond; a line without a readable
``occurred_at`` keeps the clock where it is (it starts at 1 ms after the
epoch, not 0, because Kafka reads a zero timestamp as "now"). ``centflow
produce`` stamps exactly this value as each Kafka message's timestamp, so
replay mode and Kafka mode see the same (event time, ingestion time) pairs and
settle into the same batches.

A replay decodes as it reads (`decode_log_block`): the clock needs every
line's event time, and decoding a block of lines at once (`centflow.ingest.decode`)
is cheaper than reading the event time of each line on its own. Only lines
that do not decode are read again for their event time.
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Generator, Iterator
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
from isal import igzip, isal_zlib

from centflow.errors import ConfigError, InvalidEvent
from centflow.ingest.columns import PAYMENT_SCHEMA, source_positions
from centflow.ingest.decode import decode_columns, decode_columns_at, decode_message, parse_times
from centflow.ingest.events import DeadLetter
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.limits import MICROS_PER_MILLISECOND, WATERMARK_END_US

_GZIP_MAGIC = b"\x1f\x8b"
# What reading a broken log can raise: a truncated or corrupt gzip stream among them.
_ISAL_ERROR: type[Exception] = isal_zlib.IsalError  # type: ignore[assignment]  # stubbed as an instance
_LOG_READ_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, zlib.error, _ISAL_ERROR)
CLOCK_START_US = 1_000
READ_BLOCK_BYTES = 1 << 20


class _ClockFields(msgspec.Struct):
    occurred_at: object = None
    payer_id: object = None


_clock_decoder = msgspec.json.Decoder(_ClockFields)


class LogClock:
    """The running maximum of event times in log order, in milliseconds (as µs).

    >>> clock = LogClock()
    >>> clock.advance(b'{"occurred_at": "1970-01-01T00:00:02.0009Z"}')
    2000000
    >>> clock.advance(b'{"occurred_at": "1970-01-01T00:00:01Z"}'), clock.advance(b'garbage')
    (2000000, 2000000)
    """

    __slots__ = ("now_us",)

    def __init__(self, now_us: int = CLOCK_START_US) -> None:
        self.now_us = now_us

    def advance(self, raw: bytes) -> int:
        """Move the clock past this line's event time, and return the line's ingestion time."""
        return self.advance_keyed(raw)[0]

    def advance_keyed(self, raw: bytes) -> tuple[int, str | None]:
        """Like `advance`, and also return the line's ``payer_id`` (None if it has none)."""
        payer_id = None
        try:
            fields = _clock_decoder.decode(raw)
            if isinstance(fields.payer_id, str):
                payer_id = fields.payer_id
            if isinstance(fields.occurred_at, str):
                occurred_us = parse_rfc3339_us(fields.occurred_at) // 1000 * 1000
                if occurred_us > self.now_us:
                    self.now_us = occurred_us
        except (msgspec.DecodeError, ValueError, InvalidEvent):  # not JSON, not UTF-8, bad time
            pass
        return self.now_us, payer_id


_INGEST = PAYMENT_SCHEMA.get_field_index("ingest_us")


class LineColumns(NamedTuple):
    """Consecutive lines of one log file, as columns: the file's name, each line's
    1-based number in the log (int64), and its bytes."""

    name: str
    numbers: np.ndarray
    lines: list[bytes]

    def rows(self) -> Iterator[tuple[str, int, bytes]]:
        """The lines as ``(file name, line number, raw)``, as `iter_lines` gives them."""
        return zip([self.name] * len(self.lines), self.numbers.tolist(), self.lines, strict=True)


def _positions(pieces: list[LineColumns]) -> pa.StringArray:
    """The source positions ``file:line`` of the lines."""
    arrays = [source_positions(f"{piece.name}:", pa.array(piece.numbers)) for piece in pieces]
    if not arrays:
        return pa.array([], pa.string())
    return arrays[0] if len(arrays) == 1 else pa.concat_arrays(arrays)


def decode_log_block(
    pieces: list[LineColumns],
    clock: LogClock,
    future_skew_us: int,
    partition: int = 0,
    partition_count: int = 1,
) -> tuple[pa.RecordBatch, list[DeadLetter]]:
    """Decode consecutive log lines, move `clock` past them, and keep the lines of
    replay partition `partition`.

    Gives exactly what `decode_message` gives for each kept line with the
    line's log-clock ingestion time: payments as a block, dead letters in log
    order. With one partition, every line is decoded before its ingestion time
    is known (with a time no event can be ahead of); the clock is then a
    running maximum, and the one rule that depends on it, ``future_timestamp``,
    is applied after. With several, only the event time and payer of every
    line are read (`_clock_fields`, much cheaper than decoding), and only the
    partition's own lines are decoded, with their ingestion times known.
    """
    if partition_count > 1:
        return _decode_own_lines(pieces, clock, future_skew_us, partition, partition_count)
    sources = _positions(pieces)
    values = (
        pieces[0].lines if len(pieces) == 1 else [*chain.from_iterable(p.lines for p in pieces)]
    )
    payments, dead, dead_positions = decode_columns_at(
        sources, [WATERMARK_END_US] * len(values), values, future_skew_us
    )
    valid = np.ones(len(values), dtype=bool)
    valid[dead_positions] = False
    occurred = np.full(len(values), -1, dtype=np.int64)
    occurred[valid] = payments["occurred_us"].to_numpy()
    for position in dead_positions:
        occurred[position], _ = _clock_fields(values[position])
    ingest = _advance(clock, occurred)
    valid_ingest = ingest[valid]
    payments = payments.set_column(_INGEST, "ingest_us", pa.array(valid_ingest, pa.int64()))
    for letter, position in zip(dead, dead_positions, strict=True):
        letter.received_us = int(ingest[position])
    future = payments["occurred_us"].to_numpy() > valid_ingest + future_skew_us
    if future.any():  # the reference decode names them, with their real ingestion times
        future_positions = np.flatnonzero(valid)[future].tolist()
        for position in future_positions:
            dead.append(
                decode_message(
                    values[position],
                    sources[position].as_py(),
                    int(ingest[position]),
                    future_skew_us,
                )  # type: ignore[arg-type]
            )
        order = np.argsort(np.array([*dead_positions, *future_positions]), kind="stable")
        dead = [dead[index] for index in order.tolist()]
        payments = payments.filter(pa.array(~future))
    return payments, dead


def _decode_own_lines(
    pieces: list[LineColumns],
    clock: LogClock,
    future_skew_us: int,
    partition: int,
    partition_count: int,
) -> tuple[pa.RecordBatch, list[DeadLetter]]:
    """`decode_log_block` for one of several partitions."""
    values = [*chain.from_iterable(piece.lines for piece in pieces)]
    numbers = np.concatenate([piece.numbers for piece in pieces]).tolist() if pieces else []
    fields = [_clock_decode(raw) for raw in values]
    occurred = _event_times([times for times, _ in fields])
    ingest = _advance(clock, occurred)
    own = [
        position
        for position, (number, (_, payer)) in enumerate(zip(numbers, fields, strict=True))
        if replay_partition(payer, number, partition_count) == partition
    ]
    sources = _positions(pieces)
    return decode_columns(
        sources.take(pa.array(own, pa.int64())),
        ingest[own].tolist(),
        [values[position] for position in own],
        future_skew_us,
    )


def _advance(clock: LogClock, occurred: np.ndarray) -> np.ndarray:
    """The ingestion times of lines with these event times (-1: none), moving `clock`."""
    ingest = np.maximum.accumulate(
        np.maximum(occurred // MICROS_PER_MILLISECOND * MICROS_PER_MILLISECOND, clock.now_us)
    )
    if len(ingest):
        clock.now_us = int(ingest[-1])
    return ingest


def _clock_decode(raw: bytes) -> tuple[str | None, str | None]:
    """(event time text, payer) of a line, each None where it is not a string."""
    try:
        fields = _clock_decoder.decode(raw)
    except (msgspec.DecodeError, ValueError):  # not JSON, not UTF-8
        return None, None
    occurred_at, payer_id = fields.occurred_at, fields.payer_id
    return (
        occurred_at if isinstance(occurred_at, str) else None,
        payer_id if isinstance(payer_id, str) else None,
    )


def _event_times(texts: list[str | None]) -> np.ndarray:
    """Event times in µs of a column of texts, -1 where there is none or it is invalid."""
    rows = [row for row, text in enumerate(texts) if text is not None]
    occurred = np.full(len(texts), -1, dtype=np.int64)
    if rows:
        values, ok = parse_times([texts[row] for row in rows])  # type: ignore[misc]
        occurred[np.array(rows)[ok]] = values[ok]
    return occurred


def _clock_fields(raw: bytes) -> tuple[int, str | None]:
    """(event time µs or -1, payer or None) of a line that did not decode."""
    payer_id = None
    occurred_us = -1
    try:
        fields = _clock_decoder.decode(raw)
        if isinstance(fields.payer_id, str):
            payer_id = fields.payer_id
        if isinstance(fields.occurred_at, str):
            occurred_us = parse_rfc3339_us(fields.occurred_at)
    except (msgspec.DecodeError, ValueError, InvalidEvent):  # not JSON, not UTF-8, bad time
        pass
    return occurred_us, payer_id


def replay_partition(payer_id: str | None, line_number: int, partition_count: int) -> int:
    """The replay partition of a line: by payer, as `centflow produce` keys Kafka messages,
    so a payer's events (retries, refunds) stay in one partition and in log order; a line
    without a payer goes by its line number.

    >>> replay_partition("payer-1", 7, 1), replay_partition(None, 7, 4)
    (0, 3)
    """
    if payer_id is None:
        return line_number % partition_count
    return zlib.crc32(payer_id.encode()) % partition_count


def log_files(path: Path) -> list[Path]:
    """The files of a log: the file itself, or a directory's logs in name order.

    In a directory, a log is a ``*.jsonl`` or ``*.jsonl.gz`` file; the side files
    the generator writes beside logs (``*.labels.jsonl``) are not logs.
    """
    if path.is_dir():
        files = sorted(
            child
            for child in path.iterdir()
            if child.is_file()
            and not child.name.startswith(".")
            and child.name.endswith((".jsonl", ".jsonl.gz"))
            and not child.name.endswith((".labels.jsonl", ".labels.jsonl.gz"))
        )
        if not files:
            raise ConfigError(f"replay directory {path} holds no .jsonl or .jsonl.gz logs")
        return files
    if not path.is_file():
        raise ConfigError(
            f"replay log {path} does not exist (give a .jsonl, .jsonl.gz or a directory)"
        )
    return [path]


def _open(path: Path):
    """A log file for reading, gunzipped if it is gzip (by its first bytes, not its name).

    Decompression is ISA-L's (``isal.igzip``): the same stream as the standard
    library's ``gzip`` gives, about three times faster, and it is a whole core's
    work in a replay of several partitions, each of which reads the whole log.
    """
    with path.open("rb") as probe:
        magic = probe.read(2)
    return igzip.open(path, "rb") if magic == _GZIP_MAGIC else path.open("rb")


def _raw_line_blocks(file: Path) -> Iterator[tuple[list[bytes], bool]]:
    """The lines of one file (without line ends), a read block at a time, each
    block with whether any of its lines may end in ``\r``. Reading large blocks
    is much faster than line-by-line reading of a gzip stream; blocks are read
    and decompressed on a background thread (ISA-L and zlib release the
    interpreter lock), a few ahead."""
    tail = b""
    for block in _read_ahead(file):
        text = tail + block
        lines = text.split(b"\n")
        tail = lines.pop()
        yield lines, b"\r" in text
    if tail:
        yield [tail], tail.endswith(b"\r")


READ_AHEAD_BLOCKS = 4


def _read_ahead(file: Path) -> Iterator[bytes]:
    """The file's (decompressed) blocks, read by a background thread."""
    blocks: queue.Queue[bytes | BaseException | None] = queue.Queue(READ_AHEAD_BLOCKS)
    stop = threading.Event()

    def read() -> None:
        try:
            with _open(file) as stream:
                while not stop.is_set() and (block := stream.read(READ_BLOCK_BYTES)):
                    _put(blocks, block, stop)
            _put(blocks, None, stop)
        except _LOG_READ_ERRORS as error:
            failure = ConfigError(
                f"cannot read replay log {file}: {error} (corrupt or truncated file?)"
            )
            _put(blocks, failure, stop)
        except BaseException as error:  # handed to the reader, raised there
            _put(blocks, error, stop)

    reader = threading.Thread(target=read, name=f"read-{file.name}", daemon=True)
    reader.start()
    try:
        while (item := blocks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _put(
    blocks: queue.Queue[bytes | BaseException | None],
    item: bytes | BaseException | None,
    stop: threading.Event,
) -> None:
    while not stop.is_set():
        try:
            blocks.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def iter_lines(path: Path, start_line: int = 0) -> Iterator[tuple[str, int, bytes]]:
    """Yield (file name, 1-based line number, raw line without its newline).

    Lines are numbered across the log (a directory counts on through its
    files); `start_line` skips the first lines (for resuming). Blank lines are
    skipped but counted; a ``\r`` before the newline is not part of the line.
    """
    for block in iter_line_columns(path, start_line):
        yield from block.rows()


def iter_line_columns(path: Path, start_line: int = 0) -> Generator[LineColumns, None, None]:
    """`iter_lines` a read block at a time (about `READ_BLOCK_BYTES` of text, never
    empty), as columns: no Python step, and no tuple, per line."""
    line_number = 0
    for file in log_files(path):
        name = file.name
        for lines, has_cr in _raw_line_blocks(file):
            first = line_number + 1
            line_number += len(lines)
            if line_number <= start_line:
                continue
            if first <= start_line:
                lines = lines[start_line - first + 1 :]
                first = start_line + 1
            if has_cr:
                lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
            numbers = np.arange(first, first + len(lines), dtype=np.int64)
            if not all(lines) or any(map(bytes.isspace, lines)):  # blank lines: counted, not given
                keep = [bool(line) and not line.isspace() for line in lines]
                numbers = numbers[np.array(keep, dtype=bool)]
                lines = [line for line, kept in zip(lines, keep, strict=True) if kept]
            if lines:
                yield LineColumns(name, numbers, lines)


class LineBatches:
    """The lines of a log (as `iter_lines` gives them) in batches of a chosen size."""

    def __init__(self, path: Path, start_line: int = 0) -> None:
        self._blocks = iter_line_columns(path, start_line)
        self._pending: list[LineColumns] = []

    def take(self, count: int) -> list[tuple[str, int, bytes]]:
        """The next `count` lines (fewer at the end of the log, none after it)."""
        return [line for piece in self.take_columns(count) for line in piece.rows()]

    def take_columns(self, count: int) -> list[LineColumns]:
        """`take` as columns: one `LineColumns` per file the lines come from (none
        after the end of the log)."""
        pieces: list[LineColumns] = []
        wanted = count
        while wanted > 0:
            if not self._pending:
                block = next(self._blocks, None)
                if block is None:
                    break
                self._pending.append(block)
            block = self._pending.pop(0)
            if len(block.lines) > wanted:
                self._pending.insert(
                    0, LineColumns(block.name, block.numbers[wanted:], block.lines[wanted:])
                )
                block = LineColumns(block.name, block.numbers[:wanted], block.lines[:wanted])
            pieces.append(block)
            wanted -= len(block.lines)
        return self._merged(pieces)

    @staticmethod
    def _merged(pieces: list[LineColumns]) -> list[LineColumns]:
        """Consecutive pieces of one file as one."""
        out: list[LineColumns] = []
        for piece in pieces:
            if out and out[-1].name == piece.name:
                last = out[-1]
                out[-1] = LineColumns(
                    last.name,
                    np.concatenate([last.numbers, piece.numbers]),
                    last.lines + piece.lines,
                )
            else:
                out.append(piece)
        return out

    def close(self) -> None:
        """Stop reading (ends the background reader now, not when collected)."""
        self._blocks.close()


def iter_log(path: Path) -> Iterator[tuple[str, bytes, int]]:
    """Yield (source position ``file:line``, raw bytes, ingestion µs) in log order."""
    clock = LogClock()
    for name, line_number, raw in iter_lines(path):
        yield f"{name}:{line_number}", raw, clock.advance(raw)
