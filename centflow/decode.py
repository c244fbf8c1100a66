"""Decoding: untrusted bytes to a `Payment` or a `DeadLetter`, never an exception.

`decode_message` is total: every input gives exactly one output. The fast
path decodes straight into a typed struct with msgspec; only when that fails
does the slow path look at the message as plain JSON to name the first broken
rule with a stable reason code. Checks run in a fixed order (size, UTF-8,
JSON, required fields, types, then each field's rule), so the same bad message
always gets the same reason.

Rules beyond what the JSON Schema in ``schemas/`` can say: calendar validity
of dates, the leap-second rule, years before 1970, splits summing to 10000 bps,
finite risk signals, and timestamps too far ahead of their ingestion time.
"""

from __future__ import annotations

import json
import math

import iso3166
import msgspec

from centflow.errors import InvalidEvent
from centflow.events import EVENT_TYPES, RAILS, DeadLetter, Payment, Split
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
from centflow.money import currency_codes, parse_amount_micros
from centflow.timeparse import parse_rfc3339_us

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
        return DeadLetter(source, error.reason, error.detail, bytes(raw), ingest_us)
    except Exception as error:
        return DeadLetter(
            source, "invalid_field", f"unexpected: {error!r}"[:500], bytes(raw), ingest_us
        )


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
    if wire.device_id is not None and not 0 < len(wire.device_id) <= DEVICE_ID_CHARS_MAX:
        _bad_length("device_id", wire.device_id, DEVICE_ID_CHARS_MAX)
    if wire.ip is not None and not 0 < len(wire.ip) <= IP_CHARS_MAX:
        _bad_length("ip", wire.ip, IP_CHARS_MAX)
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


def _bad_length(name: str, value: str, chars_max: int) -> None:
    raise InvalidEvent(
        "invalid_field", f"{name} must be 1-{chars_max} characters, got {len(value)}"
    )


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
        if not 1 <= len(name) <= RISK_SIGNAL_NAME_CHARS_MAX or not math.isfinite(value):
            raise InvalidEvent(
                "invalid_risk_signals",
                f"risk signal {name[:64]!r}={value!r} is not a finite number",
            )
