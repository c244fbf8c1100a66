"""`decode_block` is `decode_message` on each message, in columns.

What these tests prove: for every block, the batch `decode_block` returns holds
the payments `decode_message` gives, in input order, column for column (through
`to_batch` and `to_payments`), and its dead letters are the ones
`decode_message` gives, in input order, field for field. Blocks are arbitrary
bytes; valid events with one field broken (reusing the strategies of
`tests/test_schemas.py`); timestamps and amounts on and beside every rule; the
replay logs; and valid and invalid lines mixed, with several ingestion times.

And that the fast path is really taken: `decode_message` sees only the
messages that become dead letters, and when the fast path doubts a valid
message, the reference's payment still lands at its place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from centflow.ingest import decode
from centflow.ingest.columns import PAYMENT_SCHEMA, to_batch, to_payments
from centflow.ingest.decode import decode_block, decode_message
from centflow.ingest.events import DeadLetter, Payment, RawMessage
from centflow.ingest.replay import iter_log, log_files
from centflow.limits import MESSAGE_BYTES_MAX, MICROS_PER_SECOND, RISK_SIGNALS_MAX, SPLITS_MAX
from tests.test_schemas import (
    DELETE,
    EVENT,
    EVENT_BYTES,
    INVALID,
    MUTABLE_FIELDS,
    OVERSIZE,
    REFUND,
    UNEXPRESSIBLE,
    VALID,
    _broken_values,
    amount_like,
    amounts,
    damaged_bytes,
    encode,
    event,
    splits,
    timestamp_like,
    timestamps,
    valid_events,
)

INGEST_US = 4_102_444_800 * MICROS_PER_SECOND  # 2100-01-01T00:00:00Z: events are in the past
FUTURE_SKEW_US = 300 * MICROS_PER_SECOND
REPLAY_DIR = Path(__file__).resolve().parents[1] / "replay_data"
PROPERTY = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def messages_of(raws: list[bytes], ingest_us: int = INGEST_US) -> list[RawMessage]:
    return [RawMessage(f"payments:0:{offset}", ingest_us, raw) for offset, raw in enumerate(raws)]


def reference(
    messages: list[RawMessage], future_skew_us: int
) -> tuple[list[Payment], list[DeadLetter]]:
    """`decode_message` on each message: the payments and the dead letters, in input order."""
    payments, dead_letters = [], []
    for message in messages:
        result = decode_message(message.value, message.source, message.ingest_us, future_skew_us)
        (payments if isinstance(result, Payment) else dead_letters).append(result)
    return payments, dead_letters


def assert_same_as_each(
    messages: list[RawMessage], future_skew_us: int = FUTURE_SKEW_US
) -> tuple[list[Payment], list[DeadLetter]]:
    """decode_block gives exactly what decode_message gives (returned), and asks
    decode_message only about the messages that become dead letters."""
    with mock.patch.object(decode, "decode_message", wraps=decode_message) as asked:
        batch, dead_letters = decode_block(messages, future_skew_us)
    payments, expected_dead_letters = reference(messages, future_skew_us)
    assert batch.schema.equals(PAYMENT_SCHEMA)
    assert to_payments(batch) == payments
    assert batch.equals(to_batch(payments))  # column for column, map entries in order
    assert dead_letters == expected_dead_letters
    assert [call.args[1] for call in asked.call_args_list] == [
        letter.source for letter in dead_letters
    ]  # the fast path took every valid message
    for call, letter in zip(asked.call_args_list, dead_letters, strict=True):
        assert letter.raw == call.args[0] or letter.reason == "pan_in_id"  # masked there
    return payments, dead_letters


def with_field(document: dict[str, Any], name: str, value: Any) -> bytes:
    return encode({**document, name: value})


# --------------------------------------------------------------------------- corpora


def test_the_schema_corpora_in_one_block():
    raws = [encode(document) for (document,) in (param.values for param in VALID)]
    for message, _ in (param.values for param in INVALID):
        raws.append(message if isinstance(message, bytes) else encode(message))
    for document, raw, _ in (param.values for param in UNEXPRESSIBLE):
        raws.append(encode(document) if raw is None else raw)
    payments, dead_letters = assert_same_as_each(messages_of(raws))
    assert len(payments) == len(VALID)
    assert len(dead_letters) == len(INVALID) + len(UNEXPRESSIBLE)


EDGE_BYTES = [
    EVENT_BYTES[:-1] + b',"note":"caf\xe9"}',  # not UTF-8 in a field msgspec skips
    EVENT_BYTES[:-1] + b',"note":"caf\xc3\xa9"}',  # UTF-8 there: valid
    EVENT_BYTES[:-1] + b',"x":' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    EVENT_BYTES[:-1] + b',"risk_signals":{"bin":1e400}}',
    EVENT_BYTES[:-1] + b',"risk_signals":{"bin":-0.0,"n":' + b"9" * 300 + b"}}",
    EVENT_BYTES.replace(b'"evt_0001"', b'"evt_0001","event_id":"evt_0002"'),  # duplicate keys
    EVENT_BYTES.replace(b'"0.10"', b'"0.10","amount":"1e5"'),
    EVENT_BYTES.replace(b'"0.10"', b'"1e5","amount":"0.10"'),
    EVENT_BYTES.replace(b'"payer_17"', b'"p\\u00e9\\u0000\\ud83d\\ude00"'),  # escapes
    EVENT_BYTES.replace(b'"payer_17"', b'"\\ud800"'),  # a lone surrogate
    EVENT_BYTES.replace(b'Z"', b'Z\\u0000"'),  # a NUL after the zone
    EVENT_BYTES.replace(b'"0.10"', b'"0.10\\u0000"'),
    EVENT_BYTES.replace(b'"type"', b'"type":{"nested":[1,{"a":null}]},"type"'),
    b"\xef\xbb\xbf" + EVENT_BYTES,
    b"[" * 100_000,
    b" " * (MESSAGE_BYTES_MAX + 1),
    encode(OVERSIZE),
    b"",
    b"\xff",
    b"null",
    b"{}",
    encode(event(REFUND, ref_event_id=None)),
]


def test_edge_bytes_in_one_block_and_alone():
    assert_same_as_each(messages_of(EDGE_BYTES))
    for raw in EDGE_BYTES:
        assert_same_as_each(messages_of([raw]))


def test_empty_block():
    batch, dead_letters = decode_block([], FUTURE_SKEW_US)
    assert batch.num_rows == 0 and batch.schema.equals(PAYMENT_SCHEMA)
    assert dead_letters == []


@pytest.mark.parametrize("path", log_files(REPLAY_DIR), ids=lambda path: path.name)
def test_replay_logs_with_their_log_clock(path):
    messages = [RawMessage(source, ingest_us, raw) for source, raw, ingest_us in iter_log(path)]
    assert messages
    for start in range(0, len(messages), 1_000):
        assert_same_as_each(messages[start : start + 1_000])


# --------------------------------------------------------------------------- properties

ARBITRARY_LINES = st.one_of(st.binary(max_size=200), damaged_bytes(), valid_events().map(encode))


@PROPERTY
@given(raws=st.lists(ARBITRARY_LINES, max_size=12))
@example(raws=[b"", b"\xff", b"{"])
@example(raws=[b"[" * 60_000, EVENT_BYTES])
def test_arbitrary_bytes(raws):
    assert_same_as_each(messages_of(raws))


@st.composite
def blocks_with_one_field_broken(draw: st.DrawFn, field: str) -> list[bytes]:
    """A few valid events, and one with `field` broken, at a drawn place."""
    document = draw(valid_events(), label="valid event")
    value, _ = draw(_broken_values(field, document), label="broken value")
    broken = {name: existing for name, existing in document.items() if name != field}
    if value is not DELETE:
        broken[field] = value
    raws = [encode(draw(valid_events())) for _ in range(draw(st.integers(0, 3)))]
    raws.insert(draw(st.integers(0, len(raws))), encode(broken))
    return raws


@pytest.mark.parametrize("field", MUTABLE_FIELDS)
@settings(PROPERTY, max_examples=15)
@given(data=st.data())
def test_valid_events_with_one_field_broken(field, data):
    assert_same_as_each(messages_of(data.draw(blocks_with_one_field_broken(field))))


SPECIAL_TIMES = [
    "2016-12-31T23:59:60Z",  # a leap second
    "2016-12-31T15:59:60.5-08:00",
    "2016-12-31T23:58:60Z",  # a leap second at the wrong minute
    "2026-03-01t12:00:00z",
    "2026-03-01T12:00:00.123456789+05:30",
    "2026-03-01T12:00:00.1234567890Z",
    "2026-03-01T12:00:00.Z",
    "2026-03-01T12:00:00,5Z",
    "2026-03-01T12:00:00:12Z",
    "2026-03-01T12:00:00 123+01:00",
    "2026-03-01T12:00:00.5",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00+00:01",
    "1970-01-01T00:00:00-23:59",
    "2026-02-29T00:00:00Z",
    "2024-02-29T23:59:59.999999999-12:00",
    "2026-12-31T23:59:59.999999+23:59",
    "9999-12-31T23:59:59Z",
    "2026-03-01T12:00:00+24:00",
    "2026-03-01T12:00:00+01:60",
    "2026-03-01T12:00:00+0100",
    "2026-03-01 12:00:00Z",
    "2026-03-01T12:00:00ZZ",
    "2026-03-01T12:00:00.5Z ",
    "٢٠٢٦-03-01T12:00:00Z",
    "2026-03-01T12:00:00.１Z",
    "2026-03-01T12:00:00\x00Z",
    "",
]
SPECIAL_AMOUNTS = [
    *("1e5", "01.5", "-1", "+1", "1.1234567", "1234567890123", "123456789012.123456", "0"),
    *("0.000000", "0.000001", "000000000000.000001", "999999999999.999999", "1.", ".5", "1..5"),
    *("1,50", " 1", "1 ", "1\n", "\u0663", "１", "1\x00", "12345678901234567890", "", "."),
]


@settings(PROPERTY, max_examples=150)
@given(
    times=st.lists(
        st.one_of(
            timestamps(), timestamp_like(), st.text(max_size=36), st.sampled_from(SPECIAL_TIMES)
        ),
        min_size=1,
        max_size=40,
    )
)
@example(times=SPECIAL_TIMES)
def test_timestamps_on_and_beside_the_rule(times):
    raws = [with_field(EVENT, "occurred_at", text) for text in times]
    assert_same_as_each(messages_of(raws))


@settings(PROPERTY, max_examples=150)
@given(
    texts=st.lists(
        st.one_of(amounts(), amount_like(), st.text(max_size=22), st.sampled_from(SPECIAL_AMOUNTS)),
        min_size=1,
        max_size=40,
    )
)
@example(texts=SPECIAL_AMOUNTS)
def test_amounts_on_and_beside_the_rule(texts):
    raws = [with_field(EVENT, "amount", text) for text in texts]
    assert_same_as_each(messages_of(raws))


SPECIAL_SPLITS = [
    [],
    splits(("a", 5000), ("a", 5000)),
    splits(("a", 5000), ("b", 4999)),
    splits(("a", 0), ("b", 10000)),
    splits(("a", 10001)),
    splits(("a", 10000.0)),
    splits(*((f"p{index}", 1) for index in range(SPLITS_MAX + 1))),
    splits(*((f"p{index}", 1) for index in range(SPLITS_MAX - 1)), ("last", 10000 - 63)),
    [{"party_id": "a", "bps": 10000, "extra": [1]}],
    [{"party_id": "a", "bps": 10000, "bps": 1}],  # noqa: F601 - a duplicate key, on purpose
]
SPECIAL_SIGNALS = [
    {},
    {f"s{index}": 0.5 for index in range(RISK_SIGNALS_MAX + 1)},
    {f"s{index}": index for index in range(RISK_SIGNALS_MAX)},
    {"": 1.0},
    {"s" * 65: 1.0},
    {"bin": 10**309},  # a number beyond a double
    {"bin": True},
    {"a": 1.5, "b": -2},
]


@PROPERTY
@given(
    shares=st.lists(st.sampled_from(SPECIAL_SPLITS), max_size=6),
    signals=st.lists(st.sampled_from(SPECIAL_SIGNALS), max_size=6),
)
@example(shares=SPECIAL_SPLITS, signals=SPECIAL_SIGNALS)
def test_splits_and_risk_signals(shares, signals):
    raws = [with_field(EVENT, "splits", value) for value in shares]
    raws += [with_field(EVENT, "risk_signals", value) for value in signals]
    assert_same_as_each(messages_of(raws))


@st.composite
def mixed_messages(draw: st.DrawFn) -> list[RawMessage]:
    """Valid and invalid lines mixed, each with its own ingestion time (some in the past of
    their event, so `future_timestamp` fires)."""
    lines = st.one_of(
        valid_events().map(encode),
        valid_events().map(encode),
        st.sampled_from(EDGE_BYTES),
        damaged_bytes(),
        st.binary(max_size=40),
    )
    raws = draw(st.lists(lines, max_size=15))
    ingest_times = st.sampled_from([INGEST_US, 1_700_000_000 * MICROS_PER_SECOND, 0, 2**62])
    return [RawMessage(f"log:{line}", draw(ingest_times), raw) for line, raw in enumerate(raws, 1)]


@PROPERTY
@given(messages=mixed_messages(), future_skew_us=st.sampled_from([0, FUTURE_SKEW_US, 2**62]))
def test_mixed_blocks_keep_input_order(messages, future_skew_us):
    assert_same_as_each(messages, future_skew_us)


def test_future_timestamp_is_judged_per_message():
    occurred_us = 1_772_366_400 * MICROS_PER_SECOND  # EVENT's occurred_at, 2026-03-01T12:00:00Z
    messages = [
        RawMessage("f:1", occurred_us - FUTURE_SKEW_US, EVENT_BYTES),  # exactly the skew
        RawMessage("f:2", occurred_us - FUTURE_SKEW_US - 1, EVENT_BYTES),  # 1 µs too far ahead
        RawMessage("f:3", occurred_us, EVENT_BYTES),
    ]
    payments, dead_letters = assert_same_as_each(messages)
    assert [payment.source for payment in payments] == ["f:1", "f:3"]
    assert [letter.reason for letter in dead_letters] == ["future_timestamp"]


# --------------------------------------------------------------------------- the fast path


def test_a_whole_log_in_one_block():
    """Every check above also proves the fast path took each valid message; here on a
    realistic log of 5000 lines, every kind of fault among them, as one block."""
    path = REPLAY_DIR / "sample.jsonl.gz"
    messages = [RawMessage(source, ingest_us, raw) for source, raw, ingest_us in iter_log(path)]
    payments, _ = assert_same_as_each(messages)
    assert len(payments) > 4_000


def test_a_valid_message_the_fast_path_doubts_keeps_its_place(monkeypatch):
    """When the column parse refuses a valid amount, `decode_message` accepts the message,
    and its payment is merged back at its place in the batch."""
    raws = [encode(event(event_id="a")), b"{", encode(event(event_id="b", amount="7"))]
    raws += [EDGE_BYTES[0], encode(event(event_id="c"))]
    parse_amounts = decode._parse_amounts

    def doubting(texts: list[str]) -> tuple[Any, Any]:
        micros, ok = parse_amounts(texts)
        return micros, ok & [text != "7" for text in texts]

    monkeypatch.setattr(decode, "_parse_amounts", doubting)
    batch, dead_letters = decode_block(messages_of(raws), FUTURE_SKEW_US)
    payments, expected_dead_letters = reference(messages_of(raws), FUTURE_SKEW_US)
    assert [payment.event_id for payment in payments] == ["a", "b", "c"]
    assert to_payments(batch) == payments
    assert batch.equals(to_batch(payments))
    assert dead_letters == expected_dead_letters
