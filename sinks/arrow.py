"""Rows to Arrow: the logical column types of `centflow.recon.tables` as Arrow types.

Money is written as decimal128(18, 6), built straight from ``int`` micro-units
(the 128-bit two's complement of the int64, no Python ``Decimal`` per value),
so no float ever holds an amount on the way to disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import invariant
from centflow.limits import AMOUNT_MICROS_MAX
from centflow.recon.tables import TABLES

MONEY = pa.decimal128(18, 6)
RATE = pa.decimal128(18, 12)
TIMESTAMP = pa.timestamp("us", tz="UTC")

ARROW_TYPES = {
    "text": pa.string(),
    "money": MONEY,
    "rate": RATE,
    "timestamp": TIMESTAMP,
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "double": pa.float64(),
    "bytes": pa.binary(),
}


def table_schema(table: str) -> pa.Schema:
    """The Arrow schema of an analyst table."""
    return pa.schema([pa.field(name, ARROW_TYPES[kind]) for name, kind in TABLES[table]])


def money_array(
    micros: Sequence[int] | pa.Array | pa.ChunkedArray, decimal_type: pa.DataType = MONEY
) -> pa.Array:
    """decimal128(18, 6) from int micro-units, exactly (or another decimal128 type
    from int units of its scale).

    >>> money_array([1, -100_000, 999_999_999_999_999_999]).to_pylist()
    [Decimal('0.000001'), Decimal('-0.100000'), Decimal('999999999999.999999')]
    """
    if isinstance(micros, pa.ChunkedArray):
        micros = micros.combine_chunks()
    integers = (
        micros.cast(pa.int64())
        if isinstance(micros, pa.Array)
        else pa.array(micros, type=pa.int64())  # C conversion, far cheaper than np.fromiter
    )
    validity = None
    if integers.null_count:  # a nullable column (fx_converted): the nulls stay nulls
        validity = pc.is_valid(integers).buffers()[1]
        integers = pc.fill_null(integers, 0)
    low = np.frombuffer(
        integers.buffers()[1], dtype=np.int64, count=len(integers), offset=integers.offset * 8
    )
    largest = int(np.abs(low).max()) if len(low) else 0
    invariant(
        largest <= AMOUNT_MICROS_MAX, "an amount of %s micro-units overflows DECIMAL(18,6)", largest
    )
    words = np.empty(2 * len(low), dtype=np.int64)
    words[0::2] = low
    words[1::2] = low >> 63  # sign extension into the high 64 bits
    array = pa.Array.from_buffers(decimal_type, len(low), [validity, pa.py_buffer(words.tobytes())])
    invariant(len(array) == len(micros), "money column lost values")
    return array


def _column(kind: str, values: Sequence[object]) -> pa.Array:
    if kind == "money":
        return money_array(values)
    if kind == "rate":
        return pa.array(
            [None if value is None else Decimal(value) for value in values],  # type: ignore[arg-type]
            type=RATE,
        )
    return pa.array(values, type=ARROW_TYPES[kind])


def to_analyst_table(table: str, columns: pa.Table) -> pa.Table:
    """An analyst table from a table in the domain's types (the same columns in the
    same order, money as int64 micro-units and time as int64 µs)."""
    spec = TABLES[table]
    invariant(columns.num_columns == len(spec), f"{table}: {columns.num_columns} columns")
    arrays = []
    for (_, kind), column in zip(spec, columns.columns, strict=True):
        if kind == "money":
            arrays.append(money_array(column))
        elif kind == "rate":  # int64 units of 10⁻¹²
            arrays.append(money_array(column, RATE))
        else:
            arrays.append(column.cast(ARROW_TYPES[kind]))
    return pa.Table.from_arrays(arrays, schema=table_schema(table))


def rows_to_table(table: str, rows: Sequence[tuple]) -> pa.Table:
    """An Arrow table from row tuples in the column order of `centflow.recon.tables`."""
    columns = TABLES[table]
    invariant(not rows or set(map(len, rows)) == {len(columns)}, f"{table} row of the wrong width")
    transposed = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    arrays = [_column(kind, values) for (_, kind), values in zip(columns, transposed, strict=True)]
    result = pa.Table.from_arrays(arrays, schema=table_schema(table))
    invariant(result.num_rows == len(rows), f"{table}: {len(rows)} rows became {result.num_rows}")
    return result
