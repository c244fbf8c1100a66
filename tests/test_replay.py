"""A replay decodes as it reads: the same results as the log clock and one decode per line."""

from __future__ import annotations

from itertools import groupby
from typing import Any

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from centflow.ingest.columns import to_payments
from centflow.ingest.decode import decode_message
from centflow.ingest.events import Payment
from centflow.ingest.replay import LineColumns, LogClock, decode_log_block, replay_partition
from tests.test_schemas import timestamp_like, valid_events


def _line(document: dict[str, Any]) -> bytes:
    return msgspec.json.encode(document)


@st.composite
def log_lines(draw: st.DrawFn) -> bytes:
    """A valid event, one with an unusual or broken event time, a broken one, or garbage."""
    document = draw(valid_events())
    kind = draw(st.sampled_from(["valid", "time", "no_payer", "bad_amount", "garbage"]))
    if kind == "time":
        document["occurred_at"] = draw(timestamp_like())
    elif kind == "no_payer":
        del document["payer_id"]
    elif kind == "bad_amount":
        document["amount"] = "1e5"
    elif kind == "garbage":
        return draw(st.binary(max_size=40))
    return _line(document)


def _reference(
    lines: list[tuple[str, int, bytes]], skew_us: int, partition: int, count: int
) -> tuple[list[Payment], list[Any], int]:
    clock = LogClock()
    payments, dead = [], []
    for name, number, raw in lines:
        ingest_us, payer = clock.advance_keyed(raw)
        if replay_partition(payer, number, count) != partition:
            continue
        result = decode_message(raw, f"{name}:{number}", ingest_us, skew_us)
        (payments if isinstance(result, Payment) else dead).append(result)
    return payments, dead, clock.now_us


@settings(max_examples=60, deadline=None)
@given(
    raws=st.lists(log_lines(), max_size=30),
    cuts=st.lists(st.integers(1, 8), max_size=10),
    skew_s=st.sampled_from([0, 1, 300]),
    count=st.integers(1, 3),
    data=st.data(),
)
def test_decoding_a_log_in_blocks_is_the_clock_and_a_decode_per_line(
    raws, cuts, skew_s, count, data
):
    partition = data.draw(st.integers(0, count - 1), label="partition")
    lines = [("log.jsonl", number, raw) for number, raw in enumerate(raws, 1)]
    skew_us = skew_s * 1_000_000
    clock = LogClock()
    payments, dead = [], []
    start = 0
    for size in [*cuts, len(lines)]:
        block = lines[start : start + size]
        start += size
        if block:
            batch, letters = decode_log_block(_columns(block), clock, skew_us, partition, count)
            payments += to_payments(batch)
            dead += letters
    assert start >= len(lines)
    expected_payments, expected_dead, expected_clock = _reference(lines, skew_us, partition, count)
    assert payments == expected_payments
    assert dead == expected_dead
    assert clock.now_us == expected_clock


def test_a_line_ahead_of_the_log_clock_is_a_future_timestamp():
    base = {
        "event_id": "e1",
        "type": "payment",
        "payer_id": "p1",
        "payee_id": "m1",
        "amount": "1.00",
        "currency": "USD",
        "rail": "card",
        "country": "US",
    }
    lines = [
        ("log", 1, _line({**base, "occurred_at": "2026-01-01T00:00:00.0009Z"})),
        ("log", 2, b"not json"),
    ]
    batch, dead = decode_log_block(_columns(lines), LogClock(), future_skew_us=0)
    assert batch.num_rows == 0
    assert [(letter.source, letter.reason) for letter in dead] == [
        ("log:1", "future_timestamp"),
        ("log:2", "invalid_json"),
    ]


def _reference_lines(
    files: list[tuple[str, bytes]], start_line: int
) -> list[tuple[str, int, bytes]]:
    """What `iter_lines` promises, line by line: numbered across files, a ``\\r``
    before the newline dropped, blank lines counted but not given."""
    out, number = [], 0
    for name, text in files:
        lines = text.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the text ended with a newline: no line after it
        for line in lines:
            number += 1
            line = line[:-1] if line.endswith(b"\r") else line
            if number > start_line and line.strip():
                out.append((name, number, line))
    return out


line_text = st.lists(
    st.sampled_from([b"{}", b"x", b"", b" ", b"\r", b"\t \r", b'{"a":1}\r', b"\xff\xfe", b"ab\rc"]),
    max_size=30,
).map(lambda parts: b"\n".join(parts))


@settings(max_examples=80, deadline=None)
@given(
    texts=st.lists(st.tuples(line_text, st.booleans()), min_size=1, max_size=3),
    block_bytes=st.integers(1, 16),
    start_line=st.integers(0, 40),
    take=st.integers(1, 7),
    gzipped=st.booleans(),
)
def test_lines_in_blocks_and_batches_are_the_lines_one_by_one(
    tmp_path_factory, texts, block_bytes, start_line, take, gzipped
):
    import gzip
    from unittest import mock

    from centflow.ingest import replay

    directory = tmp_path_factory.mktemp("log")
    files = []
    for index, (text, final_newline) in enumerate(texts):
        content = text + (b"\n" if final_newline else b"")
        name = f"part-{index}.jsonl" + (".gz" if gzipped else "")
        (directory / name).write_bytes(gzip.compress(content) if gzipped else content)
        files.append((name, content))
    expected = _reference_lines(files, start_line)
    with mock.patch.object(replay, "READ_BLOCK_BYTES", block_bytes):
        assert list(replay.iter_lines(directory, start_line)) == expected
        batches = replay.LineBatches(directory, start_line)
        taken = []
        while batch := batches.take(take):
            assert len(batch) <= take
            taken.extend(batch)
        assert batches.take(take) == []
        assert taken == expected


def _columns(lines: list[tuple[str, int, bytes]]) -> list[LineColumns]:
    """``(file name, line number, raw)`` lines as `LineColumns`, one per run of a file."""
    return [
        LineColumns(
            name,
            np.array([number for _, number, _ in rows], dtype=np.int64),
            [raw for *_, raw in rows],
        )
        for name, rows in (
            (name, list(group)) for name, group in groupby(lines, key=lambda line: line[0])
        )
    ]
