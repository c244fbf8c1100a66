"""The Parquet dataset: atomic files, exactly-once effect, two kinds of writer.

Layout: ``DIR/parquet/<table>/part-<writer>-<sequence>.parquet``.

`ShardTableWriter` is used *inside* each settlement shard's step for the three
big tables (``payments``, ``settlement_batches``, ``ledger_entries``): rows are
written where they are made, so they never cross a process boundary. Its
recovery state (next file number and the rows not yet written) is part of the
shard's snapshot, so state and output can never disagree: on resume it deletes
its files numbered at or above the restored number and writes the restored
rows again. It writes a file when a buffer reaches `SHARD_BUFFER_ROWS_MAX`
rows, when it has held rows for `SHARD_FLUSH_S` seconds (wall clock: this
decides file boundaries only, never content), and at the end of input.

`ParquetSink` is an ordinary Bytewax sink for the small outputs (dead
letters), with the same idempotence. Each of the
`WRITER_PARTITION_COUNT` writer partitions (spread over the workers) buffers
rows per table and writes a file when a buffer is full, at every recovery
snapshot, and at the end. A file is written under a temporary name, fsynced
and renamed, so a reader never sees half a file.

Idempotence. A writer's recovery state is the sequence number of its next
file. Bytewax replays everything after the last snapshot when it resumes, so
on resume a writer first deletes its files numbered at or above the restored
sequence: they hold exactly the output that is about to be produced again.
The dataset therefore holds each row once after any crash and resume. (The
DuckDB load still keeps one row per key, as a second line of defence.)
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from centflow.errors import invariant
from centflow.limits import SINK_BUFFER_ROWS_MAX, WRITER_PARTITION_COUNT
from centflow.recon.tables import TABLES
from sinks.arrow import rows_to_table, to_analyst_table

TableRows = tuple[str, list[tuple]]  # (table name, row tuples)
# zstd level 1 without dictionaries: a quarter of the default level's CPU cost, smaller files for our
# id-heavy columns, and DuckDB reads it all the same.
PARQUET_ZSTD_LEVEL = 1
_FILE_PATTERN = re.compile(r"part-([ws]\d+)-(\d{8})\.parquet")
SHARD_BUFFER_ROWS_MAX = 100_000
SHARD_FLUSH_S = 5.0


def writer_key(index: int) -> str:
    """Routing key of writer partition `index` (wraps around).

    >>> writer_key(3), writer_key(11)
    ('w03', 'w03')
    """
    return f"w{index % WRITER_PARTITION_COUNT:02d}"


class _WriterPartition(StatefulSinkPartition[TableRows, int]):
    def __init__(self, root: Path, writer: str, next_sequence: int) -> None:
        self._root = root
        self._writer = writer
        self._sequence = next_sequence
        self._buffers: dict[str, list[tuple]] = {table: [] for table in TABLES}
        for table in TABLES:
            (root / table).mkdir(parents=True, exist_ok=True)
        self._discard_unsnapshotted()

    def _discard_unsnapshotted(self) -> None:
        """Delete this writer's files written after the snapshot being resumed from."""
        for table in TABLES:
            _discard_from(self._root / table, self._writer, self._sequence)

    def write_batch(self, values: list[TableRows]) -> None:
        for table, rows in values:
            buffer = self._buffers[table]
            buffer.extend(rows)
            if len(buffer) >= SINK_BUFFER_ROWS_MAX:
                self._flush(table)

    def _flush(self, table: str) -> None:
        rows = self._buffers[table]
        if rows:
            _write_file(self._root / table, self._writer, self._sequence, table, rows)
            self._sequence += 1
            self._buffers[table] = []

    def snapshot(self) -> int:
        for table in TABLES:
            self._flush(table)
        return self._sequence

    def close(self) -> None:
        for table in TABLES:
            self._flush(table)


class WriterState(msgspec.Struct, array_like=True):
    """Recovery state of a `ShardTableWriter` (tables not yet written as Arrow IPC streams)."""

    name: str
    next_sequence: int
    pending: dict[str, bytes]


class ShardTableWriter:
    """Buffers one shard's tables and writes them as atomic Parquet files."""

    def __init__(self, root: Path, state: WriterState | None = None) -> None:
        self._root = root
        self.name = state.name if state else ""
        self._sequence = state.next_sequence if state else 0
        self._buffers: dict[str, list[pa.Table]] = {table: [] for table in TABLES}
        if state is not None:
            for table, data in state.pending.items():
                self._buffers[table].append(pa.ipc.open_stream(data).read_all())
        self._rows = sum(part.num_rows for parts in self._buffers.values() for part in parts)
        self._oldest_s: float | None = None if not self._rows else time.monotonic()
        self._cleaned = False
        self._writing: list[Future[None]] = []

    def start(self, name: str) -> None:
        """Learn the writer's name (the shard key) and remove files a resume will write again."""
        invariant(not self.name or self.name == name, "writer %s renamed %s", self.name, name)
        self.name = name
        if not self._cleaned:
            for table in TABLES:
                (self._root / table).mkdir(parents=True, exist_ok=True)
                _discard_from(self._root / table, name, self._sequence)
            self._cleaned = True

    def add(self, table: str, rows: pa.Table) -> None:
        """Buffer rows of an analyst table in the domain's types (money and time as
        int64, `sinks.arrow.to_analyst_table`); write files when the buffers are full
        or old."""
        if rows.num_rows:
            self._buffers[table].append(rows)
            self._rows += rows.num_rows
            if self._oldest_s is None:
                self._oldest_s = time.monotonic()
        if self._rows >= SHARD_BUFFER_ROWS_MAX:
            self.flush()

    def due(self) -> bool:
        """True when buffered rows have waited `SHARD_FLUSH_S` seconds."""
        return self._oldest_s is not None and time.monotonic() - self._oldest_s >= SHARD_FLUSH_S

    def flush_at(self) -> float | None:
        """Monotonic time at which the buffered rows become due (None if empty)."""
        return None if self._oldest_s is None else self._oldest_s + SHARD_FLUSH_S

    def flush(self) -> None:
        """Write every non-empty buffer as a file.

        Conversion to the analyst types, encoding, compressing and writing the
        file run on a background thread
        (pyarrow releases the interpreter lock for them, so a single worker
        process uses a second core). `state` and `wait` wait for them, so a
        snapshot never counts a file not yet written; at the end of input,
        `WritesDoneSink` waits for all of a process's files at once, so the
        shards' last files are written side by side, not one shard after another.
        """
        invariant(bool(self.name), "a shard writer flushed before it knew its name")
        self._writing = [future for future in self._writing if not _done(future)]
        for table, parts in self._buffers.items():
            if parts:
                self._writing.append(
                    _submit(
                        self._root / table,
                        self.name,
                        self._sequence,
                        table,
                        pa.concat_tables(parts),
                    )
                )
                self._sequence += 1
                self._buffers[table] = []
        self._rows = 0
        self._oldest_s = None

    def wait(self) -> None:
        """Block until every file this writer started is written (errors re-raised)."""
        writing, self._writing = self._writing, []
        for future in writing:
            future.result()

    def state(self) -> WriterState:
        """Recovery state: next file number and the rows not yet written (after
        waiting for the files in flight, which the number already counts)."""
        self.wait()
        return WriterState(
            self.name,
            self._sequence,
            {
                table: _ipc_bytes(pa.concat_tables(parts))
                for table, parts in self._buffers.items()
                if parts
            },
        )


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _discard_from(directory: Path, writer: str, sequence: int) -> None:
    """Delete `writer`'s files numbered `sequence` or more, and its temporary files."""
    for path in directory.iterdir():
        match = _FILE_PATTERN.fullmatch(path.name)
        stale_temporary = path.name.startswith(f".part-{writer}-")
        if stale_temporary or (
            match and match.group(1) == writer and int(match.group(2)) >= sequence
        ):
            path.unlink()


_EXECUTOR: list[ThreadPoolExecutor] = []
WRITER_THREADS = 2


def _executor() -> ThreadPoolExecutor:
    """The process's file-writing threads (created on first use)."""
    if not _EXECUTOR:
        _EXECUTOR.append(ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="parquet-writer"))
    return _EXECUTOR[0]


_IN_FLIGHT: list[Future[None]] = []  # this process's file writes not yet waited for at the end
_IN_FLIGHT_LOCK = threading.Lock()


def _submit(
    directory: Path, writer: str, sequence: int, table: str, columns: pa.Table
) -> Future[None]:
    """Write a table's file on the writer threads. Its writer waits for it (and
    re-raises its error); so does `wait_for_all_writes`."""
    future = _executor().submit(_write_domain_table, directory, writer, sequence, table, columns)
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT[:] = [pending for pending in _IN_FLIGHT if not pending.done()]
        _IN_FLIGHT.append(future)
    return future


def wait_for_all_writes() -> None:
    """Block until every file write this process started has ended; re-raise the first error."""
    with _IN_FLIGHT_LOCK:
        pending, _IN_FLIGHT[:] = list(_IN_FLIGHT), []
    for future in pending:
        future.result()


class WritesDoneSink(DynamicSink[Any]):
    """An output that ends only once the process's shard files are written.

    At the end of input each settlement shard starts writing its last files
    and returns without waiting; this sink's partitions close after every
    shard upstream of them has ended, and wait for all those files at once.
    """

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Any]:
        return _WritesDone()


class _WritesDone(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        return None

    def close(self) -> None:
        wait_for_all_writes()


def _done(future: Future[None]) -> bool:
    """True for a finished write; a failed one raises here, in the caller's thread."""
    if future.done():
        future.result()
        return True
    return False


def _write_file(directory: Path, writer: str, sequence: int, table: str, rows: list[tuple]) -> None:
    """Write rows as ``part-<writer>-<sequence>.parquet``, atomically (temporary name, fsync, rename)."""
    _write_arrow(directory, writer, sequence, rows_to_table(table, rows))


def _write_domain_table(
    directory: Path, writer: str, sequence: int, table: str, columns: pa.Table
) -> None:
    """`_write_arrow` for a table in the domain's types."""
    _write_arrow(directory, writer, sequence, to_analyst_table(table, columns))


def _write_arrow(directory: Path, writer: str, sequence: int, arrow_table: pa.Table) -> None:
    """Write an Arrow table as ``part-<writer>-<sequence>.parquet``, atomically."""
    rows = arrow_table.num_rows
    name = f"part-{writer}-{sequence:08d}.parquet"
    temporary = directory / f".{name}.tmp"
    # A path, not a Python file object: Arrow then writes the file natively, and a
    # writer thread never needs the interpreter lock for a page (it would wait for
    # the worker's main thread at every page, and stall it in turn).
    pq.write_table(
        arrow_table,
        str(temporary),
        compression="zstd",
        compression_level=PARQUET_ZSTD_LEVEL,
        use_dictionary=False,
    )
    descriptor = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, directory / name)
    invariant(pq.read_metadata(directory / name).num_rows == rows, "%s lost rows on write", name)


class ParquetSink(FixedPartitionedSink[TableRows, int]):
    """Writes ``(writer key, (table, rows))`` items into the Parquet dataset under `root`."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def list_parts(self) -> list[str]:
        return [writer_key(index) for index in range(WRITER_PARTITION_COUNT)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key[1:])

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _WriterPartition:
        return _WriterPartition(self._root, for_part, resume_state or 0)
