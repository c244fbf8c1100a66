"""Decoding: untrusted bytes to a `Payment` or a `DeadLetter`, never an exception.

`decode_message` is total: every input gives exactly one output. The fast
path decodes straight into a typed struct with msgspec; only when that fails
does the slow path look at the message as plain JSON to name the first broken
rule with a stable reason code. Checks run in a fixed order (size, UTF-8,
JSON, required fields, types, then each field's rule), so the same bad message
always gets the same reason.

Rules beyond what the JSON Schema in ``schemas/`` can say: calendar validity
of dates, the leap-second rule, years before 1970, splits summing to 10000 bps,
finite risk signals, timestamps too far ahead of their ingestion time, and no
card number in an id (`centflow.ingest.pan`: an id that looks like one is
``pan_in_id``, checked as soon as the message is a JSON object, before every
other field rule, so a card number in an id wins over any other fault).

A ``pan_in_id`` dead letter keeps no card number either: its raw bytes and its
detail are masked (`centflow.ingest.pan.mask_pans`: every digit of a card-like
run but the last four becomes ``*``; a message that spells digits with
``\\u`` escapes is stored re-encoded, masked). Other dead letters keep their
raw bytes exactly as received.

`decode_block` gives what `decode_message` gives for each message of a block,
as one Arrow record batch of payments plus the dead letters, and faster:
msgspec checks every single-field rule in C, the timestamps and amounts are
parsed a column at a time, and only the messages it is not sure of go
through `decode_message`, which stays the reference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import date
from itertools import compress
from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple, TypeAlias

import iso3166
import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import InvalidEvent, InvariantViolation, invariant
from centflow.ingest.columns import PAYMENT_SCHEMA, SIGNALS_TYPE, SPLIT_TYPE, to_batch
from centflow.ingest.events import EVENT_TYPES, RAILS, DeadLetter, Payment, RawMessage, Split
from centflow.ingest.pan import (
    columns_may_hold_pan,
    first_pan_field,
    mask_pans,
    mask_pans_text,
    pan_rows,
)
from centflow.ingest.timeparse import YEAR_MIN, parse_rfc3339_us
from centflow.limits import (
    BPS_WHOLE,
    DEVICE_ID_CHARS_MAX,
    EVENT_ID_CHARS_MAX,
    IP_CHARS_MAX,
    MESSAGE_BYTES_MAX,
    PARTY_ID_CHARS_MAX,
    RISK_SIGNAL_NAME_CHARS_MAX,
    RISK_SIGNALS_MAX,
    SPLITS_MAX,
)
from centflow.money.amounts import currency_codes, parse_amount_micros

REQUIRED_FIELDS = (
    "event_id",
    "type",
    "occurred_at",
    "payer_id",
    "payee_id",
    "amount",
    "currency",
    "rail",
    "country",
)
_COUNTRIES = frozenset(iso3166.countries_by_alpha2)
_CURRENCIES = currency_codes()


class _WireSplit(msgspec.Struct):
    party_id: str
    bps: int


class _WirePayment(msgspec.Struct):
    event_id: str
    type: str
    occurred_at: str
    payer_id: str
    payee_id: str
    amount: str
    currency: str
    rail: str
    country: str
    ref_event_id: str | None = None
    splits: list[_WireSplit] | None = None
    device_id: str | None = None
    ip: str | None = None
    risk_signals: dict[str, float] | None = None


_decoder = msgspec.json.Decoder(_WirePayment)
_untyped_decoder = msgspec.json.Decoder()

# The reason a field of the wrong JSON type gets; others get invalid_field.
_TYPE_REASONS = {"amount": "invalid_amount", "occurred_at": "invalid_timestamp"}


def decode_message(
    raw: bytes, source: str, ingest_us: int, future_skew_us: int
) -> Payment | DeadLetter:
    """Total: one `Payment` or one `DeadLetter` for every input; never raises."""
    try:
        return _decode(raw, source, ingest_us, future_skew_us)
    except InvalidEvent as error:
        return _dead_letter(source, error.reason, error.detail, raw, ingest_us)
    except Exception as error:
        return _dead_letter(source, "invalid_field", f"unexpected: {error!r}"[:500], raw, ingest_us)


def _dead_letter(source: str, reason: str, detail: str, raw: bytes, ingest_us: int) -> DeadLetter:
    """A dead letter; a ``pan_in_id`` one with its card numbers masked."""
    if reason != "pan_in_id":
        return DeadLetter(source, reason, detail, bytes(raw), ingest_us)
    masked = mask_pans(bytes(raw))
    if b"\\u" in masked:
        masked = _masked_document(masked)  # escapes may spell digits the byte scan missed
    return DeadLetter(source, reason, mask_pans_text(detail), masked, ingest_us)


def _masked_document(raw: bytes) -> bytes:
    """The JSON document of `raw` encoded again with every string masked: a card
    number written with ``\\u`` escapes is masked too. `raw` decoded as a payment."""
    try:
        document = _untyped_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return raw  # cannot be: only a message that decoded is a pan_in_id
    masked = mask_pans(msgspec.json.encode(_mask_strings(document)))
    invariant(b"\\u" not in masked or not _has_pan_in_ids(masked), "a card number left unmasked")
    return masked


def _has_pan_in_ids(raw: bytes) -> bool:
    try:
        document = _untyped_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return False
    return isinstance(document, dict) and _document_pan_field(document) is not None


def _document_pan_field(document: dict[str, object]) -> str | None:
    """`_id_fields`'s rule on a parsed JSON object (ids that are strings)."""
    fields = [(name, document.get(name)) for name in _ID_NAMES]
    splits = document.get("splits")
    if isinstance(splits, list):
        fields += [
            ("splits.party_id", split.get("party_id"))
            for split in splits
            if isinstance(split, dict)
        ]
    return first_pan_field((name, value) for name, value in fields if isinstance(value, str))


def _mask_strings(value: object) -> object:
    if isinstance(value, str):
        return mask_pans_text(value)
    if isinstance(value, dict):
        return {_mask_strings(key): _mask_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_strings(item) for item in value]
    return value


_ID_NAMES = ("event_id", "payer_id", "payee_id", "ref_event_id", "device_id")


def _id_fields(wire: _WirePayment) -> list[tuple[str, str | None]]:
    """The opaque ids of an event, by name: the fields that must never hold a card number."""
    fields = [
        ("event_id", wire.event_id),
        ("payer_id", wire.payer_id),
        ("payee_id", wire.payee_id),
        ("ref_event_id", wire.ref_event_id),
        ("device_id", wire.device_id),
    ]
    fields += [("splits.party_id", split.party_id) for split in wire.splits or ()]
    return fields


def _decode(raw: bytes, source: str, ingest_us: int, future_skew_us: int) -> Payment:
    if len(raw) > MESSAGE_BYTES_MAX:
        raise InvalidEvent("oversize", f"{len(raw)} bytes exceeds {MESSAGE_BYTES_MAX}")
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidEvent("not_utf8", f"byte {error.start} is not UTF-8") from None
    try:
        wire = _decoder.decode(raw)
    except msgspec.ValidationError as error:
        raise _explain(raw, error) from None
    except msgspec.DecodeError as error:
        raise _explain_undecodable(raw, error) from None
    except RecursionError:
        raise InvalidEvent("invalid_json", "JSON nested too deeply") from None
    return _validate(wire, raw, source, ingest_us, future_skew_us)


def _explain(raw: bytes, error: msgspec.ValidationError) -> InvalidEvent:
    """The slow path: name the first broken rule of a message msgspec refused."""
    try:
        document = _untyped_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as decode_error:
        return _explain_undecodable(raw, decode_error)  # e.g. a number beyond a double
    return _explain_document(document, str(error))


def _explain_undecodable(raw: bytes, error: Exception) -> InvalidEvent:
    """msgspec refused the text; the standard library still reads numbers beyond a
    double (as infinity), which are bad risk signals rather than bad JSON."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return InvalidEvent("invalid_json", "a byte-order mark is not JSON")
    try:
        document = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return InvalidEvent("invalid_json", str(error)[:200])
    return _explain_document(document, str(error))


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_number(value: object) -> bool:
    """A JSON number that fits a finite double (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _explain_document(document: object, message: str) -> InvalidEvent:
    """The first broken rule of a parsed JSON document that is not a valid event."""
    if not isinstance(document, dict):
        return InvalidEvent(
            "invalid_json", f"expected a JSON object, got {type(document).__name__}"
        )
    pan_field = _document_pan_field(document)
    if pan_field is not None:
        return _pan_in_id(pan_field)
    for name in REQUIRED_FIELDS:
        if document.get(name) is None:
            return InvalidEvent("missing_field", f"{name} is required")
    for name in REQUIRED_FIELDS:
        if not isinstance(document[name], str):
            kind = type(document[name]).__name__
            reason = _TYPE_REASONS.get(name, "invalid_field")
            return InvalidEvent(reason, f"{name} must be a string, got {kind}")
    signals = document.get("risk_signals")
    if isinstance(signals, dict) and not all(map(_finite_number, signals.values())):
        return InvalidEvent("invalid_risk_signals", "risk signals must be finite numbers")
    field = _error_field(message)
    reason = {"splits": "invalid_splits", "risk_signals": "invalid_risk_signals"}.get(
        field, "invalid_field"
    )
    return InvalidEvent(reason, message[:200])


def _error_field(message: str) -> str:
    """The top-level field a msgspec error names (``... - at `$.splits[0].bps` ``)."""
    marker = message.rfind("at `$.")
    if marker < 0:
        return ""
    path = message[marker + 6 :]
    end = min(
        (index for index in (path.find("."), path.find("["), path.find("`")) if index >= 0),
        default=len(path),
    )
    return path[:end]


def _validate(
    wire: _WirePayment, raw: bytes, source: str, ingest_us: int, future_skew_us: int
) -> Payment:
    """Each field's rule, in a fixed order (the order decides the reason code)."""
    pan_field = first_pan_field(_id_fields(wire))
    if pan_field is not None:
        raise _pan_in_id(pan_field)
    if not 0 < len(wire.event_id) <= EVENT_ID_CHARS_MAX:
        _bad_length("event_id", wire.event_id, EVENT_ID_CHARS_MAX)
    event_type = wire.type
    if event_type not in EVENT_TYPES:
        raise InvalidEvent(
            "invalid_type", f"type {event_type[:32]!r} is not one of {sorted(EVENT_TYPES)}"
        )
    occurred_us = parse_rfc3339_us(wire.occurred_at)
    if not 0 < len(wire.payer_id) <= PARTY_ID_CHARS_MAX:
        _bad_length("payer_id", wire.payer_id, PARTY_ID_CHARS_MAX)
    if not 0 < len(wire.payee_id) <= PARTY_ID_CHARS_MAX:
        _bad_length("payee_id", wire.payee_id, PARTY_ID_CHARS_MAX)
    amount_micros = parse_amount_micros(wire.amount)
    if wire.currency not in _CURRENCIES:
        raise InvalidEvent("unknown_currency", f"{wire.currency[:16]!r} is not an ISO 4217 code")
    if wire.rail not in RAILS:
        raise InvalidEvent("invalid_rail", f"rail {wire.rail[:32]!r} is not one of {sorted(RAILS)}")
    if wire.country not in _COUNTRIES:
        raise InvalidEvent("invalid_country", f"{wire.country[:16]!r} is not ISO 3166-1 alpha-2")
    reference = wire.ref_event_id
    if reference is not None and not 0 < len(reference) <= EVENT_ID_CHARS_MAX:
        _bad_length("ref_event_id", reference, EVENT_ID_CHARS_MAX)
    if event_type == "payment":
        reference = None  # a payment reverses nothing; the field is kept only in the raw record
    elif reference is None:
        raise InvalidEvent("missing_field", f"ref_event_id is required for a {event_type}")
    splits = None if wire.splits is None else _validate_splits(wire.splits)
    if wire.device_id is not None and len(wire.device_id) > DEVICE_ID_CHARS_MAX:
        _bad_length("device_id", wire.device_id, DEVICE_ID_CHARS_MAX, 0)
    if wire.ip is not None and len(wire.ip) > IP_CHARS_MAX:
        _bad_length("ip", wire.ip, IP_CHARS_MAX, 0)
    if wire.risk_signals is not None:
        _validate_signals(wire.risk_signals)
    if occurred_us > ingest_us + future_skew_us:
        raise InvalidEvent(
            "future_timestamp",
            f"occurred_at {wire.occurred_at!r} is {(occurred_us - ingest_us) // 1_000_000} s "
            f"ahead of its ingestion time",
        )
    return Payment(
        wire.event_id,
        event_type,
        occurred_us,
        ingest_us,
        wire.payer_id,
        wire.payee_id,
        amount_micros,
        wire.currency,
        wire.rail,
        wire.country,
        source,
        raw,
        reference,
        splits,
        wire.device_id,
        wire.ip,
        wire.risk_signals,
    )


def _pan_in_id(field: str) -> InvalidEvent:
    return InvalidEvent(
        "pan_in_id",
        f"{field} looks like a card number (13-19 digits passing the Luhn check); "
        "ids are opaque and never card numbers",
    )


def _bad_length(name: str, value: str, chars_max: int, chars_min: int = 1) -> None:
    allowed = f"{chars_min}-{chars_max}" if chars_min else f"at most {chars_max}"
    raise InvalidEvent("invalid_field", f"{name} must be {allowed} characters, got {len(value)}")


def _validate_splits(splits: list[_WireSplit]) -> tuple[Split, ...]:
    if not 1 <= len(splits) <= SPLITS_MAX:
        raise InvalidEvent(
            "invalid_splits", f"splits must have 1-{SPLITS_MAX} entries, got {len(splits)}"
        )
    parties = set()
    for split in splits:
        if not 1 <= len(split.party_id) <= PARTY_ID_CHARS_MAX or split.party_id in parties:
            raise InvalidEvent(
                "invalid_splits",
                f"split party {split.party_id[:64]!r} is empty, too long or repeated",
            )
        if not 0 < split.bps <= BPS_WHOLE:
            raise InvalidEvent("invalid_splits", f"split bps {split.bps} must be in 1..{BPS_WHOLE}")
        parties.add(split.party_id)
    total_bps = sum(split.bps for split in splits)
    if total_bps != BPS_WHOLE:
        raise InvalidEvent("invalid_splits", f"split bps sum to {total_bps}, not {BPS_WHOLE}")
    return tuple(Split(split.party_id, split.bps) for split in splits)


def _validate_signals(signals: dict[str, float]) -> None:
    if len(signals) > RISK_SIGNALS_MAX:
        raise InvalidEvent(
            "invalid_risk_signals", f"{len(signals)} risk signals exceed {RISK_SIGNALS_MAX}"
        )
    for name, value in signals.items():
        if not 1 <= len(name) <= RISK_SIGNAL_NAME_CHARS_MAX:
            raise InvalidEvent(
                "invalid_risk_signals",
                f"risk signal name {name[:64]!r} is not 1 to {RISK_SIGNAL_NAME_CHARS_MAX} chars",
            )
        if not math.isfinite(value):
            raise InvalidEvent(
                "invalid_risk_signals", f"risk signal {name!r}={value!r} is not a finite number"
            )


# --------------------------------------------------------------------------- blocks
#
# `decode_block` gives what `decode_message` gives, a block of messages at a
# time. It only ever *accepts* on its own: a message it is not sure is a valid
# payment goes to `decode_message`, the reference, which names the rule it
# breaks. So every dead letter comes from `decode_message`.

if TYPE_CHECKING:
    _EventType: TypeAlias = str
    _Rail: TypeAlias = str
    _Currency: TypeAlias = str
    _Country: TypeAlias = str
else:  # the codes as Literal types, which msgspec checks in C
    _EventType = Literal[tuple(sorted(EVENT_TYPES))]
    _Rail = Literal[tuple(sorted(RAILS))]
    _Currency = Literal[tuple(sorted(_CURRENCIES))]
    _Country = Literal[tuple(sorted(_COUNTRIES))]

_EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=EVENT_ID_CHARS_MAX)]
_PartyId = Annotated[str, msgspec.Meta(min_length=1, max_length=PARTY_ID_CHARS_MAX)]
_DeviceId = Annotated[str, msgspec.Meta(max_length=DEVICE_ID_CHARS_MAX)]  # may be empty
_Ip = Annotated[str, msgspec.Meta(max_length=IP_CHARS_MAX)]
_SignalName = Annotated[str, msgspec.Meta(min_length=1, max_length=RISK_SIGNAL_NAME_CHARS_MAX)]
_Bps = Annotated[int, msgspec.Meta(ge=1, le=BPS_WHOLE)]


class _CheckedSplit(msgspec.Struct, gc=False):
    party_id: _PartyId
    bps: _Bps


_CheckedSplits = Annotated[list[_CheckedSplit], msgspec.Meta(min_length=1, max_length=SPLITS_MAX)]
_CheckedSignals = Annotated[dict[_SignalName, float], msgspec.Meta(max_length=RISK_SIGNALS_MAX)]


class _CheckedPayment(msgspec.Struct, gc=False):
    """`_WirePayment` narrowed by every rule of a single field that msgspec checks in C.

    Same field names and JSON types as `_WirePayment`, only narrower, so a
    message this decodes is one `_WirePayment` decodes to the same values, and
    it already keeps `_validate`'s rules on lengths, codes, split items and
    risk signals (finite too: msgspec refuses a number beyond a double, and
    JSON has no NaN). Left to check: the timestamp, the amount, a reversal's
    reference, the split sum and unique parties, and the future.
    ``gc=False`` is safe: freshly decoded values cannot refer back to the
    struct. The fields are in the order producers write them, the order
    msgspec matches fastest.
    """

    event_id: _EventId
    type: _EventType
    occurred_at: str
    payer_id: _PartyId
    payee_id: _PartyId
    amount: str
    currency: _Currency
    rail: _Rail
    country: _Country
    ref_event_id: _EventId | None = None
    device_id: _DeviceId | None = None
    ip: _Ip | None = None
    splits: _CheckedSplits | None = None
    risk_signals: _CheckedSignals | None = None


_checked_decoder = msgspec.json.Decoder(_CheckedPayment)

_Bools = npt.NDArray[np.bool_]
_Ints = npt.NDArray[np.int64]
_Chars = npt.NDArray[np.uint8]
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def decode_block(
    messages: Sequence[RawMessage], future_skew_us: int
) -> tuple[pa.RecordBatch, list[DeadLetter]]:
    """Decode a block: exactly `decode_message` of each message, in columns; never raises.

    Returns the payments in input order as one batch of `PAYMENT_SCHEMA`
    (`centflow.ingest.columns.to_payments` of it equals the `Payment` records), and
    the dead letters in input order, each the one `decode_message` gives.

    >>> fields = dict(event_id="e1", type="payment", occurred_at="2026-03-01T12:00:00.5Z",
    ...     payer_id="p", payee_id="m", amount="0.10", currency="USD", rail="card", country="US")
    >>> valid, broken = msgspec.json.encode(fields), b'{"event_id": "e2"}'
    >>> block = [RawMessage("f:1", 2**62, broken), RawMessage("f:2", 2**62, valid)]
    >>> batch, dead = decode_block(block, future_skew_us=0)
    >>> batch.column("amount_micros").to_pylist(), batch.column("source").to_pylist()
    ([100000], ['f:2'])
    >>> [(letter.source, letter.reason) for letter in dead]
    [('f:1', 'missing_field')]

    Why it is safe: this accepts a message only when it is at most
    `MESSAGE_BYTES_MAX` bytes of UTF-8, `_CheckedPayment` decodes it (so
    `_WirePayment` decodes it to the same values, and every rule of a single
    field holds), and the column checks of `_fast_batch` pass: the timestamp
    and the amount parsed to the values `parse_rfc3339_us` and
    `parse_amount_micros` give, a reversal's reference, the splits' sum and
    parties, and the future rule. Every other message, valid or not, goes to
    `decode_message`, one at a time; a payment from there is merged back at
    its place. So every dead letter is the reference's own.

    Ingestion times must fit int64, and a block's raw bytes 2 GiB (Arrow
    binary).
    """
    return decode_columns(
        [message.source for message in messages],
        [message.ingest_us for message in messages],
        [message.value for message in messages],
        future_skew_us,
    )


def decode_columns(
    sources: list[str] | pa.StringArray,
    ingest_us: list[int],
    values: list[bytes],
    future_skew_us: int,
) -> tuple[pa.RecordBatch, list[DeadLetter]]:
    """`decode_block` of messages given as three columns (position, ingestion µs, bytes):
    the same result, without a `RawMessage` per message. The positions may come
    as an Arrow array (a replay builds them a block at a time)."""
    batch, dead, _ = decode_columns_at(sources, ingest_us, values, future_skew_us)
    return batch, dead


def decode_columns_at(
    sources: list[str] | pa.StringArray,
    ingest_us: list[int],
    values: list[bytes],
    future_skew_us: int,
) -> tuple[pa.RecordBatch, list[DeadLetter], list[int]]:
    """`decode_columns`, and the index (in the input) of each dead letter."""
    if not isinstance(sources, pa.StringArray):
        sources = pa.array(sources, pa.string())
    count = len(values)
    invariant(
        len(sources) == count and len(ingest_us) == count,
        "columns of %s sources, %s ingestion times, %s messages",
        len(sources),
        len(ingest_us),
        count,
    )
    rows, slow_positions = _decode_checked(values)
    if slow_positions:
        fast_positions = np.delete(np.arange(count, dtype=np.int64), slow_positions)
        fast = fast_positions.tolist()
        picked = _Picked(
            sources.take(pa.array(fast_positions)),
            [ingest_us[i] for i in fast],
            [values[i] for i in fast],
        )
    else:
        fast_positions = np.arange(count, dtype=np.int64)
        picked = _Picked(sources, ingest_us, values)
    batch, rejected = _fast_batch(rows, picked, future_skew_us)
    retry_positions = sorted([*slow_positions, *fast_positions[rejected].tolist()])
    invariant(
        batch.num_rows + len(retry_positions) == count,
        "%s rows accepted and %s left from %s messages",
        batch.num_rows,
        len(retry_positions),
        count,
    )
    payments: list[Payment] = []
    payment_positions: list[int] = []
    dead_letters: list[DeadLetter] = []
    dead_positions: list[int] = []
    for position in retry_positions:
        result = decode_message(
            values[position], sources[position].as_py(), ingest_us[position], future_skew_us
        )
        if isinstance(result, Payment):
            payments.append(result)
            payment_positions.append(position)
        else:
            dead_letters.append(result)
            dead_positions.append(position)
    if payments:  # the reference accepted some the fast path was unsure of
        accepted_positions = np.delete(fast_positions, rejected)
        batch = _merged(batch, accepted_positions, to_batch(payments), payment_positions)
    invariant(
        batch.num_rows + len(dead_letters) == count,
        "%s payments and %s dead letters from %s messages",
        batch.num_rows,
        len(dead_letters),
        count,
    )
    return batch, dead_letters, dead_positions


class _Picked(NamedTuple):
    """The columns of the messages `_CheckedPayment` decoded."""

    sources: pa.StringArray
    ingest_us: list[int]
    values: list[bytes]


def _merged(
    batch: pa.RecordBatch, positions: _Ints, extra: pa.RecordBatch, extra_positions: list[int]
) -> pa.RecordBatch:
    """The rows of two batches in one, in the order of their (distinct) input positions."""
    order = np.argsort(np.concatenate([positions, extra_positions]), kind="stable")
    columns = [pa.concat_arrays([*pair]) for pair in zip(batch.columns, extra.columns, strict=True)]
    merged = pa.RecordBatch.from_arrays(columns, schema=PAYMENT_SCHEMA).take(pa.array(order))
    invariant(
        merged.num_rows == batch.num_rows + extra.num_rows,
        "merging %s and %s rows gave %s",
        batch.num_rows,
        extra.num_rows,
        merged.num_rows,
    )
    return merged


def _decode_checked(values: list[bytes]) -> tuple[list[_CheckedPayment], list[int]]:
    """The messages `_CheckedPayment` decodes, and the positions of the others.

    An oversize message is not even tried (as ``b""``, which never decodes).
    """
    if max(map(len, values), default=0) > MESSAGE_BYTES_MAX:
        values = [b"" if len(raw) > MESSAGE_BYTES_MAX else raw for raw in values]
    decode = _checked_decoder.decode
    rows: list[_CheckedPayment] = []
    slow_positions: list[int] = []
    for raw in values:
        try:
            rows.append(decode(raw))
        except Exception:  # refused, whatever the way: decode_message names the broken rule
            slow_positions.append(len(rows) + len(slow_positions))
    return rows, slow_positions


def _fast_batch(
    rows: list[_CheckedPayment], picked: _Picked, future_skew_us: int
) -> tuple[pa.RecordBatch, _Ints]:
    """The decoded rows that keep every remaining rule, as a batch, and the indices of the rest."""
    types = pa.array([row.type for row in rows], pa.string())
    references = pa.array([row.ref_event_id for row in rows], pa.string())
    event_ids = pa.array([row.event_id for row in rows], pa.string())
    payer_ids = pa.array([row.payer_id for row in rows], pa.string())
    payee_ids = pa.array([row.payee_id for row in rows], pa.string())
    device_ids = pa.array([row.device_id for row in rows], pa.string())
    raw = pa.array(picked.values, pa.binary())
    sources = picked.sources
    occurred_us, keep = parse_times([row.occurred_at for row in rows])
    amount_micros, amounts_ok = _parse_amounts([row.amount for row in rows])
    splits, splits_ok = _split_values([row.splits for row in rows])
    ingest_us = _int64s(picked.ingest_us)
    is_payment = pc.equal(types, "payment").to_numpy(zero_copy_only=False)
    keep &= amounts_ok & splits_ok & _not_future(occurred_us, ingest_us, future_skew_us)
    keep &= _utf8_rows(raw)
    has_reference = references.is_valid().to_numpy(zero_copy_only=False)
    keep &= is_payment | has_reference  # a refund or a chargeback names what it reverses
    keep &= ~_pan_rows((event_ids, payer_ids, payee_ids, references, device_ids), splits)
    if not keep.all():
        kept, mask, keep_list = np.flatnonzero(keep), pa.array(keep), keep.tolist()
        rows = list(compress(rows, keep_list))
        sources = sources.filter(mask)
        splits = list(compress(splits, keep_list))
        occurred_us, amount_micros, ingest_us = (
            occurred_us[kept],
            amount_micros[kept],
            ingest_us[kept],
        )
        is_payment = is_payment[kept]
        types, references, raw, event_ids, payer_ids, payee_ids, device_ids = (
            array.filter(mask)
            for array in (types, references, raw, event_ids, payer_ids, payee_ids, device_ids)
        )
    columns = {
        "event_id": event_ids,
        "type": types,
        "occurred_us": pa.array(occurred_us),
        "ingest_us": pa.array(ingest_us),
        "payer_id": payer_ids,
        "payee_id": payee_ids,
        "amount_micros": pa.array(amount_micros),
        "currency": pa.array([row.currency for row in rows], pa.string()),
        "rail": pa.array([row.rail for row in rows], pa.string()),
        "country": pa.array([row.country for row in rows], pa.string()),
        "source": sources,
        "raw": raw,
        "ref_event_id": pc.if_else(is_payment, None, references),  # as in `_validate`
        "splits": pa.array(splits, SPLIT_TYPE),
        "device_id": device_ids,
        "ip": pa.array([row.ip for row in rows], pa.string()),
        "risk_signals": pa.array([row.risk_signals for row in rows], SIGNALS_TYPE),
        "late": pa.array(np.zeros(len(rows), dtype=np.bool_)),
    }
    arrays = [
        columns[field.name] if field.name in columns else pa.nulls(len(rows), field.type)
        for field in PAYMENT_SCHEMA
    ]  # decision, risk_score, model_version, reasons: not decided yet
    batch = pa.RecordBatch.from_arrays(arrays, schema=PAYMENT_SCHEMA)
    invariant(
        batch.num_rows == int(keep.sum()),
        "%s rows kept, %s in the batch",
        keep.sum(),
        batch.num_rows,
    )
    invariant(len(raw) == len(rows), "%s raw messages for %s rows", len(raw), len(rows))
    return batch, np.flatnonzero(~keep)


def _pan_rows(
    ids: tuple[pa.StringArray, ...], splits: list[list[tuple[str, int]] | None]
) -> _Bools:
    """Which rows have an id that looks like a card number (`_validate`'s first rule):
    a digit count per id column first, so the regular expression sees almost nothing."""
    found = np.zeros(len(ids[0]), dtype=np.bool_)
    parties = [party for shares in splits if shares for party, _ in shares]
    if not columns_may_hold_pan(ids, parties):
        return found
    for column in ids:
        found |= pan_rows(column)
    rows_of_parties = [
        index for index in compress(range(len(splits)), splits) for _ in splits[index] or ()
    ]
    if rows_of_parties:  # split parties: every row's, in one column
        party_rows = np.array(rows_of_parties, dtype=np.int64)
        found[party_rows[pan_rows(pa.array(parties, pa.string()))]] = True
    return found


def _utf8_rows(raw: pa.BinaryArray) -> _Bools:
    """Which messages are UTF-8: msgspec does not read the text of the unknown fields it
    skips, so a message it decodes may still hold bytes that are not UTF-8 there."""
    if len(raw) == 0:
        return np.ones(0, dtype=np.bool_)
    offsets = np.frombuffer(raw.buffers()[1], dtype=np.int32, count=len(raw) + 1)
    data = np.frombuffer(raw.buffers()[2] or b"", dtype=np.uint8, count=int(offsets[-1]))
    non_ascii = np.searchsorted(offsets, np.flatnonzero(data >= 0x80), side="right") - 1
    ok = np.ones(len(raw), dtype=np.bool_)
    for index in np.unique(non_ascii).tolist():
        ok[index] = _is_utf8(raw[index].as_py())
    return ok


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _int64s(values: list[int]) -> _Ints:
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError as error:  # a caller's bug: the batch column is int64
        raise InvariantViolation(f"an ingestion time does not fit int64: {error}") from None


def _not_future(occurred_us: _Ints, ingest_us: _Ints, future_skew_us: int) -> _Bools:
    """``occurred_us <= ingest_us + future_skew_us``, row by row, as `_validate` compares."""
    if len(ingest_us) == 0:
        return np.ones(0, dtype=np.bool_)
    sums = (int(ingest_us.min()) + future_skew_us, int(ingest_us.max()) + future_skew_us)
    if all(_INT64_MIN <= value <= _INT64_MAX for value in (future_skew_us, *sums)):
        return occurred_us <= ingest_us + future_skew_us  # no sum overflows int64
    return np.array(
        [
            occurred <= ingest + future_skew_us
            for occurred, ingest in zip(occurred_us.tolist(), ingest_us.tolist(), strict=True)
        ],
        dtype=np.bool_,
    )


def _split_values(
    all_splits: list[list[_CheckedSplit] | None],
) -> tuple[list[list[tuple[str, int]] | None], _Bools]:
    """The splits as column values, and which rows keep the rules msgspec cannot check.

    msgspec has checked the count, each party's length and each share's range;
    left are unique parties and a sum of exactly `BPS_WHOLE`.
    """
    ok = np.ones(len(all_splits), dtype=np.bool_)
    values: list[list[tuple[str, int]] | None] = [None] * len(all_splits)
    for index in compress(range(len(all_splits)), all_splits):  # rows with splits (never [])
        shares = [(split.party_id, split.bps) for split in all_splits[index] or ()]
        parties, shares_bps = zip(*shares, strict=True)
        if len(set(parties)) == len(parties) and sum(shares_bps) == BPS_WHOLE:
            values[index] = shares
        else:
            ok[index] = False
    return values, ok


# RFC 3339 at fixed positions: YYYY-MM-DDTHH:MM:SS, then a fraction and a zone.
_TIME_CHARS_MIN = 20  # YYYY-MM-DDTHH:MM:SSZ
_TIME_CHARS_MAX = 35  # YYYY-MM-DDTHH:MM:SS.fffffffff+HH:MM
_TIME_DIGIT_POSITIONS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
# Weights of digits, as floats: BLAS sums them exactly (every sum is below 2**53).
_DATE_WEIGHTS = 10.0 ** np.arange(7, -1, -1)  # YYYYMMDD as one number
_SECOND_WEIGHTS = np.array([36_000.0, 3_600.0, 600.0, 60.0, 10.0, 1.0])  # HHMMSS in seconds
_FRACTION_WEIGHTS = 10.0 ** np.arange(5, -1, -1)  # the first 6 fraction digits in µs
_FRACTION_POSITIONS = np.arange(1, 10)  # of the digits: the dot is at 0
_ZONE_POSITIONS = np.arange(-6, 0)  # from the end of the text
_DATE_SPAN_MAX = 100  # YYYYMMDD numbers: a month's end to the next month's start is 70
_US_PER_SECOND = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_SECOND
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_LOWER = 0x20  # OR-ed into an ASCII letter, makes it lowercase


def _chars_by_position(texts: list[str], width: int) -> tuple[_Chars, _Ints]:
    """The bytes of ASCII texts by position: row ``k`` of the (`width`, len(texts)) array
    holds every text's ``k``-th byte (0 past its end); and each text's length (`width` for a
    longer text, which is cut; 0 for a text that is not ASCII, which is left out). One row
    per position, so each check below is one operation over a long contiguous row."""
    joined = "".join(texts)
    if not joined.isascii():
        texts = [text if text.isascii() else "" for text in texts]
    fixed = np.array(texts, dtype=f"S{width}")
    columns = np.ascontiguousarray(fixed.view(np.uint8).reshape(len(texts), width).T)
    if "\x00" in joined:  # a fixed-width string drops its trailing NULs: count them
        return columns, np.minimum(np.fromiter(map(len, texts), np.int64, len(texts)), width)
    return columns, np.char.str_len(fixed).astype(np.int64)


def _digits(chars: _Chars) -> _Chars:
    """Digit values of ASCII bytes; anything but ``0``-``9`` comes out above 9."""
    return chars - np.uint8(ord("0"))


def parse_times(texts: list[str]) -> tuple[_Ints, _Bools]:
    """`parse_rfc3339_us` of each text, and which ones are valid; a column at a time.

    The column parse takes only the exact shape of the RFC 3339 pattern, each
    character checked (ASCII digits, ``-``, ``T``/``t``, ``:``, an optional
    ``.`` and 1-9 digits, then ``Z``/``z`` or ``+HH:MM``/``-HH:MM`` in range),
    the time in range with no leap second, and the day checked by
    `datetime.date`; its value is the sum `parse_rfc3339_us` makes, digits
    finer than a microsecond dropped. Every other text goes to
    `parse_rfc3339_us` itself: leap seconds, and every invalid text.
    """
    chars, lengths = _chars_by_position(texts, _TIME_CHARS_MAX + 1)
    digits = _digits(chars[_TIME_DIGIT_POSITIONS])
    ok = (digits.max(axis=0, initial=0) <= 9) & (lengths >= _TIME_CHARS_MIN)
    ok &= (lengths <= _TIME_CHARS_MAX) & (chars[4] == ord("-")) & (chars[7] == ord("-"))
    ok &= ((chars[10] | _LOWER) == ord("t")) & (chars[13] == ord(":")) & (chars[16] == ord(":"))
    values = np.minimum(digits, 9).astype(np.float64)
    clock = values[8:]  # H H M M S S
    ok &= (clock[0] * 10 + clock[1] <= 23) & (clock[2] <= 5) & (clock[4] <= 5)
    day_us = _midnights_us((_DATE_WEIGHTS @ values[:8]).astype(np.int64), ok)
    ok &= day_us >= 0
    zulu = (chars[np.maximum(lengths - 1, 0), np.arange(len(texts))] | _LOWER) == ord("z")
    zone_us = np.zeros(len(texts), dtype=np.int64)
    offset_rows = np.flatnonzero(ok & ~zulu)
    zone = chars[lengths[offset_rows] + _ZONE_POSITIONS[:, None], offset_rows]
    zone_us[offset_rows], ok[offset_rows] = _zones_us(zone)
    fraction_chars = lengths - 19 - np.where(zulu, 1, 6)  # the dot and the digits
    fraction_digits = _digits(chars[20:29])
    in_fraction = _FRACTION_POSITIONS[:, None] < fraction_chars
    ok &= (fraction_chars == 0) | (
        (fraction_chars >= 2)
        & (fraction_chars <= 10)
        & (chars[19] == ord("."))
        & ((fraction_digits <= 9) | ~in_fraction).all(axis=0)
    )
    fraction = np.where(in_fraction[:6], fraction_digits[:6], 0).astype(np.float64)
    times_us = (
        day_us
        + (_SECOND_WEIGHTS @ clock).astype(np.int64) * _US_PER_SECOND
        - zone_us
        + (_FRACTION_WEIGHTS @ fraction).astype(np.int64)
    )
    for index in np.flatnonzero(~ok).tolist():  # unusual or invalid: the reference decides
        try:
            times_us[index] = parse_rfc3339_us(texts[index])
        except InvalidEvent:
            continue
        ok[index] = True
    return times_us, ok


def _zones_us(zones: _Chars) -> tuple[_Ints, _Bools]:
    """µs of ``+HH:MM`` / ``-HH:MM`` offsets (columns of 6 bytes), and which ones are valid."""
    digits = _digits(zones[[1, 2, 4, 5]])
    values = np.minimum(digits, 9).astype(np.int64)
    hours, minutes = values[0] * 10 + values[1], values[2] * 10 + values[3]
    ok = ((zones[0] == ord("+")) | (zones[0] == ord("-"))) & (zones[3] == ord(":"))
    ok &= (digits.max(axis=0, initial=0) <= 9) & (hours <= 23) & (minutes <= 59)
    offset_us = (hours * 60 + minutes) * 60 * _US_PER_SECOND
    return np.where(zones[0] == ord("-"), -offset_us, offset_us), ok


def _midnights_us(days: _Ints, wanted: _Bools) -> _Ints:
    """µs at midnight UTC of each date (the number YYYYMMDD), or -1 if there is no such day
    or it is before 1970; rows not `wanted` may get -1 anyway.

    A block holds few distinct dates, and `datetime.date` checks each once: every
    number from the smallest wanted to the largest when they are close (the
    usual case), else each distinct one.
    """
    if not wanted.any():
        return np.full(len(days), -1, dtype=np.int64)
    low, high = int(days[wanted].min()), int(days[wanted].max())
    if high - low > _DATE_SPAN_MAX:
        keys, inverse = np.unique(days, return_inverse=True)
        return np.array([_midnight_us(key) for key in keys.tolist()], dtype=np.int64)[inverse]
    table = np.array([_midnight_us(key) for key in range(low, high + 1)], dtype=np.int64)
    inside = (days >= low) & (days <= high)
    return np.where(inside, table[np.clip(days - low, 0, high - low)], -1)


def _midnight_us(key: int) -> int:
    """`centflow.ingest.timeparse`'s day rule, for a date given as the number YYYYMMDD."""
    try:
        day = date(key // 10_000, key // 100 % 100, key % 100)
    except ValueError:
        return -1
    if day.year < YEAR_MIN:
        return -1
    return (day.toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY


_AMOUNT_REGEX = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"  # `centflow.money.amounts`'s rule, for RE2
_AMOUNT_TYPE = pa.decimal128(18, 6)


def _parse_amounts(texts: list[str]) -> tuple[_Ints, _Bools]:
    """`parse_amount_micros` of each text, and which ones are valid; a column at a time.

    A text must match `centflow.money.amounts`'s pattern (ASCII digits only; RE2's
    ``$`` is the end of the text); then Arrow's cast to decimal128(18, 6) is
    exact (at most 18 digits, at most 6 after the point), and the low 64 bits
    of each value are its micro-units. Zero is refused, as there.
    """
    if not texts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.bool_)
    strings = pa.array(texts, pa.string())
    matches = pc.match_substring_regex(strings, _AMOUNT_REGEX)
    decimals = pc.cast(pc.if_else(matches, strings, "1"), _AMOUNT_TYPE)
    words = np.frombuffer(decimals.buffers()[1], dtype=np.int64, count=2 * len(texts))
    micros, high_words = words[0::2].copy(), words[1::2]  # little-endian 128-bit integers
    invariant(not high_words.any(), "an amount of at most 18 digits overflowed 64 bits")
    return micros, matches.to_numpy(zero_copy_only=False) & (micros > 0)
