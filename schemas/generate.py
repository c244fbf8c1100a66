"""Write the JSON Schemas in ``schemas/`` from centflow's own constants.

Owns ``payment_event.schema.json`` and ``fx_rate.schema.json``: both are
generated, never hand-edited. Limits come from `centflow.limits`, the enums
from `centflow.ingest.events`, the currency codes from `centflow.money.amounts` (the
``iso4217`` package the decoder asks) and the country codes from ``iso3166``,
so the schema cannot drift from the decoder. ``tests/test_schemas.py`` fails
when a file differs from what this script writes, and proves that the payment
schema and `centflow.ingest.decode.decode_message` accept the same events.

Usage (from the repository root)::

    .venv/bin/python schemas/generate.py          # rewrite the files
    .venv/bin/python schemas/generate.py --check  # exit 1 if a file is stale

It may not hold a rule of its own: a rule the decoder does not enforce does not
belong in the schema, and a decoder rule the schema cannot express is listed in
the schema's ``$comment``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import iso3166

from centflow.ingest.decode import REQUIRED_FIELDS
from centflow.errors import invariant
from centflow.ingest.events import EVENT_TYPES, RAILS, REVERSAL_TYPES
from centflow.limits import (
    AMOUNT_FRACTION_DIGITS_MAX,
    AMOUNT_INTEGER_DIGITS_MAX,
    BPS_WHOLE,
    DEVICE_ID_CHARS_MAX,
    EVENT_ID_CHARS_MAX,
    FUTURE_SKEW_S_DEFAULT,
    IP_CHARS_MAX,
    MESSAGE_BYTES_MAX,
    PARTY_ID_CHARS_MAX,
    RISK_SIGNAL_NAME_CHARS_MAX,
    RISK_SIGNALS_MAX,
    SPLITS_MAX,
)
from centflow.money.amounts import currency_codes
from centflow.ingest.timeparse import YEAR_MIN

SCHEMAS_DIR = Path(__file__).resolve().parent
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# Python's `re` (which the jsonschema package uses) lets "$" match before a
# final newline, ECMA-262 does not; the lookahead makes every pattern mean the
# same in both, so "1\n" is no amount anywhere.
PATTERN_END = r"$(?!\n)"
# centflow.ingest.timeparse accepts 1-9 fraction digits of a second (nanoseconds).
TIMESTAMP_FRACTION_DIGITS_MAX = 9
# FX rates: no decoder owns these yet; move them to centflow.limits when one does.
FX_RATE_INTEGER_DIGITS_MAX = 12
FX_RATE_FRACTION_DIGITS_MAX = 12


def positive_decimal_pattern(integer_digits_max: int, fraction_digits_max: int) -> str:
    """A plain decimal (no sign, exponent or spaces) with a non-zero digit, so > 0.

    >>> positive_decimal_pattern(12, 6)
    '^(?=.*[1-9])[0-9]{1,12}(?:\\\\.[0-9]{1,6})?$(?!\\\\n)'
    """
    invariant(integer_digits_max >= 1, f"integer digits {integer_digits_max} < 1")
    invariant(fraction_digits_max >= 1, f"fraction digits {fraction_digits_max} < 1")
    return (
        rf"^(?=.*[1-9])[0-9]{{1,{integer_digits_max}}}"
        rf"(?:\.[0-9]{{1,{fraction_digits_max}}})?{PATTERN_END}"
    )


def years_at_least_pattern(year_min: int) -> str:
    """A regex group matching every four-digit year >= `year_min`.

    >>> years_at_least_pattern(1970)
    '(?:1970|197[1-9]|19[8-9][0-9]|[2-9][0-9]{3})'
    """
    invariant(0 <= year_min <= 9999, f"year {year_min} is not four digits")
    digits = f"{year_min:04d}"
    alternatives = [digits]
    for position in range(3, -1, -1):
        digit = int(digits[position])
        if digit == 9:
            continue
        higher = "9" if digit == 8 else f"[{digit + 1}-9]"
        rest = 3 - position
        tail = "" if rest == 0 else "[0-9]" if rest == 1 else f"[0-9]{{{rest}}}"
        alternatives.append(digits[:position] + higher + tail)
    invariant(len(alternatives) <= 5, f"too many alternatives: {alternatives}")
    return "(?:" + "|".join(alternatives) + ")"


def timestamp_schema(description: str) -> dict[str, Any]:
    """RFC 3339 date-time with an offset, shaped as `centflow.ingest.timeparse` reads it."""
    pattern = (
        "^"
        + years_at_least_pattern(YEAR_MIN)
        + r"-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}"
        + rf"(?:\.[0-9]{{1,{TIMESTAMP_FRACTION_DIGITS_MAX}}})?"
        + r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
        + PATTERN_END
    )
    return {
        "description": description,
        "type": "string",
        "format": "date-time",
        "pattern": pattern,
        "$comment": (
            f"The pattern adds the decoder's limits to RFC 3339: year >= {YEAR_MIN}, at most "
            f"{TIMESTAMP_FRACTION_DIGITS_MAX} fraction digits. A second of 60 is a leap second "
            "and is valid only at 23:59:60 UTC (RFC 3339 section 5.7); rfc3339-validator 0.1.4, "
            "which Python's jsonschema uses for format, rejects every leap second."
        ),
    }


def currency_schema(description: str) -> dict[str, Any]:
    """An ISO 4217 alphabetic code, from the same package the decoder asks."""
    codes = sorted(currency_codes())
    invariant(len(codes) > 100, f"only {len(codes)} ISO 4217 codes: is iso4217 installed right?")
    invariant(all(len(code) == 3 and code.isupper() for code in codes), "odd ISO 4217 code")
    return {"description": description, "type": "string", "enum": codes}


def _string(
    description: str, chars_max: int, *, nullable: bool = False, chars_min: int = 1
) -> dict[str, Any]:
    return {
        "description": description,
        "type": ["string", "null"] if nullable else "string",
        "minLength": chars_min,
        "maxLength": chars_max,
    }


def _semantic_rules() -> str:
    """The decoder's rules that no JSON Schema keyword can say (reason code in brackets)."""
    rules = [
        f"the message is at most {MESSAGE_BYTES_MAX} bytes [oversize] of UTF-8 [not_utf8] "
        "holding one JSON object [invalid_json]",
        "occurred_at is a real calendar date and time of day: only validators that assert "
        "format check it, as Python's jsonschema does with a FORMAT_CHECKER and "
        "rfc3339-validator installed [invalid_timestamp]",
        "a second of 60 is a leap second, valid only at 23:59:60 UTC; rfc3339-validator "
        "0.1.4 rejects every leap second, the decoder accepts 23:59:60Z as RFC 3339 does "
        "[invalid_timestamp]",
        f"occurred_at is at most the future skew ({FUTURE_SKEW_S_DEFAULT} s by default) "
        "ahead of the message's ingestion time (the Kafka timestamp or the replay log "
        "clock) [future_timestamp]",
        f"the bps of splits sum to exactly {BPS_WHOLE} [invalid_splits]",
        "split party_ids are unique [invalid_splits]",
        "bps is written as a JSON integer (10000, not 10000.0 or 1e4) [invalid_splits]",
        "risk_signals values are finite IEEE 754 doubles (1e400 is valid JSON, but not "
        "finite) [invalid_risk_signals]",
        "no id (event_id, payer_id, payee_id, ref_event_id, device_id, a split's party_id) "
        "holds a card number: a run of 13 to 19 digits, at most one space or dash between "
        "two, passing the Luhn check; checked before every other field rule [pan_in_id]",
    ]
    stateful = (
        "Rules of the pipeline, not of one message: a repeated event_id is a duplicate "
        "[duplicate]; a refund or chargeback must reference a payment already seen "
        "[unknown_reference]."
    )
    return (
        "Generated by schemas/generate.py; do not edit. Rules this schema cannot express, "
        "enforced by centflow.ingest.decode (dead-letter reason in brackets): "
        + "; ".join(rules)
        + ". "
        + stateful
        + " A null optional field means the field is absent. Unknown fields are kept "
        "in the raw record, never fatal."
    )


def payment_event_schema() -> dict[str, Any]:
    """The wire format of one payment event (DESIGN.md, "Wire format")."""
    reversal_types = sorted(REVERSAL_TYPES)
    invariant(REVERSAL_TYPES <= EVENT_TYPES, "a reversal type is not an event type")
    invariant(len(REQUIRED_FIELDS) == len(set(REQUIRED_FIELDS)), "required field repeated")
    split = {
        "type": "object",
        "required": ["party_id", "bps"],
        "properties": {
            "party_id": _string("The party that receives this share.", PARTY_ID_CHARS_MAX),
            "bps": {
                "description": "Share of the payee's net in basis points.",
                "type": "integer",
                "minimum": 1,
                "maximum": BPS_WHOLE,
            },
        },
    }
    properties: dict[str, Any] = {
        "event_id": _string(
            "Unique per producer event; a repeat is a duplicate and is ignored.",
            EVENT_ID_CHARS_MAX,
        ),
        "type": {"type": "string", "enum": sorted(EVENT_TYPES)},
        "occurred_at": timestamp_schema("Event time: RFC 3339 with an offset."),
        "payer_id": _string("Opaque payer id (never a card number).", PARTY_ID_CHARS_MAX),
        "payee_id": _string("Opaque payee id (never a card number).", PARTY_ID_CHARS_MAX),
        "amount": {
            "description": (
                f"Decimal text > 0, at most {AMOUNT_INTEGER_DIGITS_MAX} integer and "
                f"{AMOUNT_FRACTION_DIGITS_MAX} fraction digits; a JSON number is rejected."
            ),
            "type": "string",
            "pattern": positive_decimal_pattern(
                AMOUNT_INTEGER_DIGITS_MAX, AMOUNT_FRACTION_DIGITS_MAX
            ),
        },
        "currency": currency_schema("ISO 4217 alphabetic code of the amount."),
        "rail": {"type": "string", "enum": sorted(RAILS)},
        "country": {
            "description": "ISO 3166-1 alpha-2 code of the payer.",
            "type": "string",
            "enum": sorted(iso3166.countries_by_alpha2),
        },
        "ref_event_id": _string(
            f"The payment a {' or '.join(reversal_types)} reverses.",
            EVENT_ID_CHARS_MAX,
            nullable=True,
        ),
        "splits": {
            "description": "Revenue split of the payee's net.",
            "type": ["array", "null"],
            "minItems": 1,
            "maxItems": SPLITS_MAX,
            "items": split,
            "$comment": f"bps sum to {BPS_WHOLE}; party_ids are unique.",
        },
        "device_id": _string(
            "Risk context (may be empty).", DEVICE_ID_CHARS_MAX, nullable=True, chars_min=0
        ),
        "ip": _string("Risk context (may be empty).", IP_CHARS_MAX, nullable=True, chars_min=0),
        "risk_signals": {
            "description": "Producer's own signals, used as model features, never as money.",
            "type": ["object", "null"],
            "maxProperties": RISK_SIGNALS_MAX,
            "propertyNames": {"minLength": 1, "maxLength": RISK_SIGNAL_NAME_CHARS_MAX},
            "additionalProperties": {"type": "number"},
            "$comment": "Values are finite doubles.",
        },
    }
    invariant(set(REQUIRED_FIELDS) <= set(properties), "a required field has no schema")
    return {
        "$schema": DRAFT_2020_12,
        "title": "centflow payment event",
        "description": "One Kafka value on the `payments` topic: a UTF-8 JSON object.",
        "$comment": _semantic_rules(),
        "type": "object",
        "required": list(REQUIRED_FIELDS),
        "properties": properties,
        "if": {"required": ["type"], "properties": {"type": {"enum": reversal_types}}},
        "then": {"required": ["ref_event_id"], "properties": {"ref_event_id": {"type": "string"}}},
        "additionalProperties": True,
    }


def fx_rate_schema() -> dict[str, Any]:
    """One FX rate on `fx-rates`: 1 `base` = `rate` `quote` as of `as_of`."""
    return {
        "$schema": DRAFT_2020_12,
        "title": "centflow FX rate",
        "description": "One value on the `fx-rates` topic (or one line of a rates file).",
        "$comment": (
            "Generated by schemas/generate.py; do not edit. Not expressible here: base and "
            "quote differ; as_of is a real calendar date-time (a format assertion). Unknown "
            "fields are kept, never fatal."
        ),
        "type": "object",
        "required": ["base", "quote", "rate", "as_of"],
        "properties": {
            "base": currency_schema("ISO 4217 code of the currency priced."),
            "quote": currency_schema("ISO 4217 code of the currency the price is in."),
            "rate": {
                "description": (
                    f"Decimal text > 0: units of quote per unit of base, at most "
                    f"{FX_RATE_INTEGER_DIGITS_MAX} integer and {FX_RATE_FRACTION_DIGITS_MAX} "
                    "fraction digits; a JSON number is rejected."
                ),
                "type": "string",
                "pattern": positive_decimal_pattern(
                    FX_RATE_INTEGER_DIGITS_MAX, FX_RATE_FRACTION_DIGITS_MAX
                ),
            },
            "as_of": timestamp_schema("When the rate took effect: RFC 3339 with an offset."),
        },
        "additionalProperties": True,
    }


SCHEMA_BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "payment_event.schema.json": payment_event_schema,
    "fx_rate.schema.json": fx_rate_schema,
}


def render(schema: dict[str, Any]) -> str:
    """The exact text of a schema file: stable, two-space indented, newline-terminated."""
    text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    invariant(json.loads(text) == schema, "rendered schema does not read back equal")
    return text


def main(argv: list[str] | None = None) -> int:
    """Rewrite every schema file, or with ``--check`` report the stale ones (exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    arguments = parser.parse_args(argv)
    stale = []
    for name, build in SCHEMA_BUILDERS.items():
        path = SCHEMAS_DIR / name
        text = render(build())
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not arguments.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if arguments.check and stale:
        print(f"stale: {', '.join(stale)}; run python schemas/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
