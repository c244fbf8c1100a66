"""RFC 3339 timestamps to integer microseconds since the Unix epoch (UTC).

Written by hand rather than with `datetime.fromisoformat` because RFC 3339
allows what Python rejects (a leap second, ``23:59:60``; a lowercase ``t`` or
``z``) and Python accepts what RFC 3339 rejects (no offset, week dates). A
leap second is counted as the first microsecond of the next second, so times
stay non-decreasing. Fractions finer than a microsecond are truncated.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from centflow.errors import InvalidEvent

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_SECOND = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}")
_OFFSET = re.compile(r"[+-][0-9]{2}:[0-9]{2}")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_SECOND = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_SECOND
YEAR_MIN = 1970


def parse_rfc3339_us(text: str) -> int:
    """Parse an RFC 3339 timestamp with offset into microseconds since the epoch.

    A fast path handles the common shapes with a cache of whole seconds (a
    stream repeats each second many times); anything unusual, including every
    invalid text, goes to `_parse_full`, which gives the precise error.

    >>> parse_rfc3339_us("1970-01-01T00:00:01.5Z"), parse_rfc3339_us("1970-01-01T05:30:01+05:30")
    (1500000, 1000000)
    """
    if len(text) >= 20:
        base_us = _second_us(text[:19])
        if base_us is not None:
            rest = text[19:]
            if rest[-1] in "Zz":
                zone_us: int | None = 0
                fraction = rest[:-1]
            else:
                zone_us = _offset_us(rest[-6:])
                fraction = rest[:-6]
            if zone_us is not None:
                if not fraction:
                    return base_us - zone_us
                digits = fraction[1:]
                if (
                    fraction[0] == "."
                    and 1 <= len(digits) <= 9
                    and digits.isascii()
                    and digits.isdigit()
                ):
                    return base_us - zone_us + int(digits[:6].ljust(6, "0"))
    return _parse_full(text)


@lru_cache(maxsize=65_536)
def _second_us(prefix: str) -> int | None:
    """µs of a valid ``YYYY-MM-DDTHH:MM:SS`` (no leap second, year >= 1970), else None."""
    if _SECOND.fullmatch(prefix) is None:
        return None
    day_us = _day_us(prefix[:10])
    hour, minute, second = int(prefix[11:13]), int(prefix[14:16]), int(prefix[17:19])
    if day_us is None or hour > 23 or minute > 59 or second > 59:
        return None
    return day_us + ((hour * 60 + minute) * 60 + second) * _US_PER_SECOND


@lru_cache(maxsize=1024)
def _offset_us(offset: str) -> int | None:
    """µs of a ``+HH:MM`` / ``-HH:MM`` offset, else None."""
    if _OFFSET.fullmatch(offset) is None or int(offset[1:3]) > 23 or int(offset[4:6]) > 59:
        return None
    offset_us = (int(offset[1:3]) * 60 + int(offset[4:6])) * 60 * _US_PER_SECOND
    return -offset_us if offset[0] == "-" else offset_us


def _parse_full(text: str) -> int:
    """Parse an RFC 3339 timestamp with offset into microseconds since the epoch.

    >>> _parse_full("2016-12-31T23:59:60Z") == parse_rfc3339_us("2017-01-01T00:00:00Z")
    True
    >>> parse_rfc3339_us("2026-02-30T00:00:00Z")
    Traceback (most recent call last):
    ...
    centflow.errors.InvalidEvent: invalid_timestamp: '2026-02-30T00:00:00Z' is not a valid RFC 3339 date-time
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise InvalidEvent(
            "invalid_timestamp", f"{text[:64]!r} is not an RFC 3339 date-time with an offset"
        )
    _, _, _, hour_text, minute_text, second_text, fraction, zulu, sign, offset_h, offset_m = (
        match.groups()
    )
    hour, minute, second = int(hour_text), int(minute_text), int(second_text)
    day_us = _day_us(text[:10])
    if day_us is None or hour > 23 or minute > 59 or second > 60:
        raise InvalidEvent("invalid_timestamp", f"{text[:64]!r} is not a valid RFC 3339 date-time")
    offset_s = 0
    if zulu is None:
        if int(offset_h) > 23 or int(offset_m) > 59:
            raise InvalidEvent("invalid_timestamp", f"{text[:64]!r} has an offset out of range")
        offset_s = (int(offset_h) * 60 + int(offset_m)) * 60
        if sign == "-":
            offset_s = -offset_s
    fraction_us = int(fraction[1:7].ljust(6, "0")) if fraction else 0
    seconds_of_day = (hour * 60 + minute) * 60 + second - offset_s
    if second == 60 and seconds_of_day % 86_400 != 0:
        raise InvalidEvent(
            "invalid_timestamp", f"{text[:64]!r}: a leap second is only 23:59:60 UTC"
        )
    return day_us + seconds_of_day * _US_PER_SECOND + fraction_us


@lru_cache(maxsize=4096)
def _day_us(day_text: str) -> int | None:
    """µs at midnight UTC of a ``YYYY-MM-DD`` date, or None if no such day (or before 1970)."""
    try:
        day = date(int(day_text[:4]), int(day_text[5:7]), int(day_text[8:10]))
    except ValueError:
        return None
    if day.year < YEAR_MIN:
        return None
    return (day.toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY


def format_us(timestamp_us: int) -> str:
    """Microseconds since the epoch as RFC 3339 UTC text.

    >>> format_us(1500000)
    '1970-01-01T00:00:01.500000Z'
    """
    moment = _EPOCH + timedelta(microseconds=timestamp_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
