"""Card numbers where an opaque id belongs: detecting them, and masking them.

The wire format says ids (event_id, payer_id, payee_id, ref_event_id,
device_id, a split's party_id) are opaque and never card numbers. A producer
that puts a primary account number (PAN) there anyway must not get it into a
table: decode dead-letters such an event as ``pan_in_id``, and every dead
letter's raw bytes and detail are masked before they are stored.

What looks like a PAN: a run of 13 to 19 digits, with at most one space or
dash between two digits (``4111 1111 1111 1111``, ``4111-1111-1111-1111``),
whose digits pass the Luhn check. A run is taken whole: a 20-digit number is
not a PAN, and neither is any 16 digits inside it. This errs on the safe side:
an ordinary id with such a run (a 13-digit numeric id has a one-in-ten chance
of passing Luhn) is refused rather than let through.

Masking keeps only the last four digits: every other digit of the run becomes
``*`` and the separators stay (``**** **** **** 1111``), the form receipts
print; the first six (the issuer's BIN) are not kept, because with a 13-digit
number six and four would leave only three digits hidden.

Cost: decode checks a block's ids a column at a time with `pan_rows`: one
NumPy pass over the column's bytes counts the digits of every id, and only an
id with 13 digits or more (rare in real traffic) goes through the regular
expression and the Luhn check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from centflow.errors import invariant

PAN_DIGITS_MIN = 13
PAN_DIGITS_MAX = 19
PAN_DIGITS_KEPT = 4
MASK_CHAR = "*"

# A maximal run of digits with at most one separator between two of them.
_RUN = re.compile(r"\d(?:[ -]?\d)*", re.ASCII)
_RUN_BYTES = re.compile(rb"[0-9](?:[ -]?[0-9])*")
# The cheap test that comes first: with the separators deleted and every digit
# made "0", a text holding a run of PAN_DIGITS_MIN digits holds this (two passes
# in C; deleting every separator can only find more runs than there are).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_SEPARATORS = b" -"
_ZEROS = b"0" * PAN_DIGITS_MIN


def _may_hold_pan(raw: bytes) -> bool:
    return raw.translate(_DIGITS_TO_ZERO, _SEPARATORS).find(_ZEROS) >= 0


def luhn_ok(digits: str) -> bool:
    """The Luhn check of a string of ASCII digits.

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    invariant(digits.isascii() and digits.isdigit(), "Luhn of a non-digit text %r", digits[:8])
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_pan_run(run: str) -> bool:
    digits = run.replace(" ", "").replace("-", "")
    return PAN_DIGITS_MIN <= len(digits) <= PAN_DIGITS_MAX and luhn_ok(digits)


def contains_pan(text: str) -> bool:
    """Whether `text` holds a run of digits that looks like a card number.

    >>> contains_pan("4111 1111 1111 1111"), contains_pan("payer-5500-0000-0000-0004")
    (True, True)
    >>> contains_pan("payer_0042"), contains_pan("4111111111111112")
    (False, False)
    """
    if not _may_hold_pan(text.encode("utf-8", "surrogatepass")):
        return False
    return any(_is_pan_run(match.group()) for match in _RUN.finditer(text))


def pan_rows(ids: pa.StringArray) -> npt.NDArray[np.bool_]:
    """Which ids of an Arrow string column (nulls: no) look like a card number.

    Cheap filters, a column at a time, before any regular expression: an id
    shorter than `PAN_DIGITS_MIN` characters cannot hold one (from the offsets
    alone); a column whose bytes, ids run together, hold no run of that many
    digits has none (two passes in C); else of the long ids only those with
    `PAN_DIGITS_MIN` digits or more (counted with NumPy) get `contains_pan`.

    >>> pan_rows(pa.array(["payer-1", None, "4111 1111 1111 1111", "1234567890123"])).tolist()
    [False, False, True, False]
    """
    count = len(ids)
    found = np.zeros(count, dtype=np.bool_)
    if count == 0:
        return found
    invariant(pa.types.is_string(ids.type), "pan_rows of a %s column", ids.type)
    offsets = np.frombuffer(
        ids.buffers()[1], dtype=np.int32, count=count + 1, offset=ids.offset * 4
    )
    long_rows = np.flatnonzero(np.diff(offsets) >= PAN_DIGITS_MIN)
    if len(long_rows) == 0:
        return found
    start, end = int(offsets[0]), int(offsets[-1])
    buffer = ids.buffers()[2]
    if buffer is None or not _may_hold_pan(buffer.to_pybytes()[start:end]):
        return found  # not even the ids run together hold 13 digits in a row
    data = np.frombuffer(buffer, dtype=np.uint8, count=end - start, offset=start)
    is_digit = np.zeros(len(data) + 1, dtype=np.uint8)  # one more: a row may end at the end
    np.less(data - np.uint8(48), 10, out=is_digit[:-1].view(np.bool_))
    bounds = np.empty(2 * len(long_rows), dtype=np.int64)
    bounds[0::2], bounds[1::2] = offsets[long_rows] - start, offsets[long_rows + 1] - start
    digit_counts = np.add.reduceat(is_digit, bounds, dtype=np.int32)[0::2]  # each [start, end)
    for index in long_rows[digit_counts >= PAN_DIGITS_MIN].tolist():
        value = ids[index].as_py()
        found[index] = value is not None and contains_pan(value)
    return found


def columns_may_hold_pan(columns: Iterable[pa.StringArray], more: Iterable[str] = ()) -> bool:
    """False when no id of any of `columns`, nor any of the ids `more`, can hold a card
    number: the long ids' bytes of every column, in one text, tested in one pass
    (a block's usual case).

    >>> columns_may_hold_pan([pa.array(["payer-1", None]), pa.array(["device-0042"])])
    False
    >>> columns_may_hold_pan([pa.array(["payer-1"])], ["4111 1111 1111 1111"])
    True
    """
    texts = ["\x00".join(more).encode("utf-8", "surrogatepass")]
    for ids in columns:
        if len(ids) == 0 or ids.null_count == len(ids):
            continue
        invariant(pa.types.is_string(ids.type), "ids in a %s column", ids.type)
        offsets = np.frombuffer(
            ids.buffers()[1], dtype=np.int32, count=len(ids) + 1, offset=ids.offset * 4
        )
        if int(np.diff(offsets).max()) >= PAN_DIGITS_MIN:
            texts.append(ids.buffers()[2].to_pybytes()[int(offsets[0]) : int(offsets[-1])])
    return _may_hold_pan(b"\x00".join(texts))


def first_pan_field(fields: Iterable[tuple[str, str | None]]) -> str | None:
    """The name of the first ``(name, value)`` whose value looks like a card number."""
    fields = list(fields)
    if not _may_hold_pan(
        "\x00".join(value for _, value in fields if value).encode("utf-8", "surrogatepass")
    ):
        return None  # the usual case: one test for all the fields
    for name, value in fields:
        if value and contains_pan(value):
            return name
    return None


def _mask_run(run: bytes) -> bytes:
    digits_seen = sum(char in b"0123456789" for char in run)
    keep_from = digits_seen - PAN_DIGITS_KEPT
    out = bytearray()
    index = 0
    for char in run:
        if 48 <= char <= 57:
            out.append(char if index >= keep_from else ord(MASK_CHAR))
            index += 1
        else:
            out.append(char)
    return bytes(out)


def mask_pans(raw: bytes) -> bytes:
    """`raw` with every run of digits that looks like a card number masked
    (all digits but the last four become ``*``); anything else unchanged.

    >>> mask_pans(b'{"payer_id": "4111-1111-1111-1111", "amount": "1.00"}')
    b'{"payer_id": "****-****-****-1111", "amount": "1.00"}'
    >>> mask_pans(b'{"payer_id": "payer_0042"}')
    b'{"payer_id": "payer_0042"}'
    """
    if not _may_hold_pan(raw):
        return raw

    def masked(match: re.Match[bytes]) -> bytes:
        run = match.group()
        return _mask_run(run) if _is_pan_run(run.decode("ascii")) else run

    result = _RUN_BYTES.sub(masked, raw)
    invariant(len(result) == len(raw), "masking changed the length of a message")
    return result


def mask_pans_text(text: str) -> str:
    """`mask_pans` of a text (a dead letter's detail)."""
    if not _may_hold_pan(text.encode("utf-8", "surrogatepass")):
        return text
    return mask_pans(text.encode("utf-8", "surrogatepass")).decode("utf-8", "surrogatepass")
