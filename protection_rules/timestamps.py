"""Instants as integer microseconds since the Unix epoch, UTC (docs/semantics.md section 2).

Integers keep every comparison exact to the microsecond, both in Python and in the rule
network, which has no date type. A duration of N days is exactly N x 24 h.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

MICROS_PER_SECOND = 1_000_000
MICROS_PER_DAY = 86_400 * MICROS_PER_SECOND

# Strict shape first, so that `datetime.fromisoformat`'s leniency (week dates, ordinal dates,
# a space for `T`, hours only) never decides what we accept.
_SHAPE = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?"
)
# As in the schemas: `(?!\n)$` is a strict end of text both in ECMA-262 and in Python's `re`,
# whose plain `$` also matches before a trailing newline.
TIMESTAMP_PATTERN = "^" + _SHAPE.pattern + "(?!\\n)$"

# What a timestamp may look like, for messages (the parser's and the schema checks')
TIMESTAMP_EXAMPLES = "such as `2026-03-10T09:00:00Z`, with an offset such as `+01:00`, or a bare date such as `2026-03-10`"

# Far enough for any position; narrow enough that adding a policy's days never overflows.
MIN_YEAR, MAX_YEAR = 1900, 2999

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)


# The usual shapes, with a zone: ASCII digits written as 9 (a byte translation, ~5x cheaper
# than the shape's regular expression) must give one of these; anything else, and any value
# these do not parse, takes the checked way (`_parse_checked`), which writes the messages.
_NINES = bytes.maketrans(b"0123456789", b"9999999999")
_ZONED_SHAPES = frozenset(
    f"9999-99-99T99:99:99{fraction}{zone}".encode()
    for fraction in ["", *("." + "9" * digits for digits in range(1, 7))]
    for zone in ("Z", "+99:99", "-99:99")
)


@lru_cache(maxsize=8192)
def parse_instant(text: str) -> int:
    """Parse an ISO-8601 timestamp or date into epoch microseconds (UTC).

    No offset means UTC; a bare date means 00:00. Raises ValueError with a human message
    for a malformed or impossible value (2026-02-30, 25:00).
    """
    if text.__class__ is str and text.isascii() and text.encode().translate(_NINES) in _ZONED_SHAPES:
        try:  # Python 3.11's parser reads `Z` itself
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if MIN_YEAR <= moment.year <= MAX_YEAR:
                delta = moment - _EPOCH
                return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND + delta.microseconds
    return _parse_checked(text)


def _parse_checked(text: str) -> int:
    """`parse_instant` of any value, its shape checked by `_SHAPE` first."""
    if not isinstance(text, str) or not _SHAPE.fullmatch(text):
        raise ValueError(f"`{text}` is not an ISO-8601 timestamp {TIMESTAMP_EXAMPLES}")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:  # the shape is right: a day, hour or offset out of range
        raise ValueError(f"`{text}` is not a real date or time: {str(exc).lower()}") from None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise ValueError(f"`{text}` is outside the supported years {MIN_YEAR}..{MAX_YEAR}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND + delta.microseconds


def to_instant(value: Any) -> int:
    """An instant from what a Python caller holds: epoch microseconds (int), a timezone-aware
    `datetime`, a `date` (00:00 UTC) or an ISO-8601 string. A naive `datetime` is refused:
    guessing its zone would move every window by hours."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        return parse_instant(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"`{value.isoformat()}` is a naive datetime; give it a timezone, "
                "for example `datetime(2026, 3, 10, 9, 0, tzinfo=timezone.utc)`"
            )
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
    else:
        raise ValueError(
            f"`{value!r}` is not an instant; give a timezone-aware datetime or an ISO-8601 timestamp "
            "such as `2026-03-10T09:00:00Z`"
        )
    if not MIN_YEAR <= moment.astimezone(UTC).year <= MAX_YEAR:
        raise ValueError(f"`{moment.isoformat()}` is outside the supported years {MIN_YEAR}..{MAX_YEAR}")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND + delta.microseconds


@lru_cache(maxsize=8192)
def format_instant(micros: int) -> str:
    """Render epoch microseconds as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`."""
    return (_EPOCH_NAIVE + timedelta(microseconds=micros)).isoformat() + "Z"


def days(count: int | float) -> int:
    """N days in microseconds (policy parameters are whole days)."""
    return int(count) * MICROS_PER_DAY


def format_duration(micros: int) -> str:
    """A short human duration: `1d 22h`, `3h 5m`, `40s`; negative durations are clamped at 0."""
    seconds = max(micros, 0) // MICROS_PER_SECOND
    day, rest = divmod(seconds, 86_400)
    hour, rest = divmod(rest, 3_600)
    minute, second = divmod(rest, 60)
    parts = [f"{day}d" if day else "", f"{hour}h" if hour else "", f"{minute}m" if minute else ""]
    if not day and not hour:
        parts.append(f"{second}s" if second or not minute else "")
    text = " ".join(p for p in parts if p)
    return text or "0s"
