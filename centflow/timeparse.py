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

from centflow.errors import InvalidEvent

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_SECOND = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_SECOND
YEAR_MIN = 1970


def parse_rfc3339_us(text: str) -> int:
    """Parse an RFC 3339 timestamp with offset into microseconds since the epoch.

    >>> parse_rfc3339_us("1970-01-01T00:00:01.5Z")
    1500000
    >>> parse_rfc3339_us("2016-12-31T23:59:60Z") == parse_rfc3339_us("2017-01-01T00:00:00Z")
    True
    >>> parse_rfc3339_us("2026-02-30T00:00:00Z")
    Traceback (most recent call last):
    ...
    centflow.errors.InvalidEvent: invalid_timestamp: '2026-02-30T00:00:00Z' is not a valid RFC 3339 date-time (day is out of range for month)
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise InvalidEvent(
            "invalid_timestamp", f"{text[:64]!r} is not an RFC 3339 date-time with an offset"
        )
    year, month, day, hour, minute, second = (int(match.group(index)) for index in range(1, 7))
    try:
        day_ordinal = date(year, month, day).toordinal()
        if hour > 23 or minute > 59 or second > 60:
            raise ValueError("time of day out of range")
    except ValueError as error:
        raise InvalidEvent(
            "invalid_timestamp", f"{text[:64]!r} is not a valid RFC 3339 date-time ({error})"
        ) from None
    offset_s = 0
    if match.group(8) is None:
        offset_hours, offset_minutes = int(match.group(10)), int(match.group(11))
        if offset_hours > 23 or offset_minutes > 59:
            raise InvalidEvent("invalid_timestamp", f"{text[:64]!r} has an offset out of range")
        offset_s = (offset_hours * 60 + offset_minutes) * 60
        if match.group(9) == "-":
            offset_s = -offset_s
    fraction = match.group(7)
    fraction_us = int(fraction[1:7].ljust(6, "0")) if fraction else 0
    seconds_of_day = (hour * 60 + minute) * 60 + second - offset_s
    if second == 60 and seconds_of_day % 86_400 != 0:
        raise InvalidEvent(
            "invalid_timestamp", f"{text[:64]!r}: a leap second is only 23:59:60 UTC"
        )
    if year < YEAR_MIN:
        raise InvalidEvent("invalid_timestamp", f"{text[:64]!r} is before {YEAR_MIN}")
    return (
        (day_ordinal - _EPOCH_ORDINAL) * _US_PER_DAY
        + seconds_of_day * _US_PER_SECOND
        + fraction_us
    )


def format_us(timestamp_us: int) -> str:
    """Microseconds since the epoch as RFC 3339 UTC text.

    >>> format_us(1500000)
    '1970-01-01T00:00:01.500000Z'
    """
    moment = _EPOCH + timedelta(microseconds=timestamp_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
