"""Instants (docs/semantics.md section 2): strict ISO-8601 in, UTC `Z` out, exact to the microsecond."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protection_rules.timestamps import (
    MICROS_PER_DAY,
    MICROS_PER_SECOND,
    TIMESTAMP_PATTERN,
    _parse_checked,
    days,
    format_duration,
    format_instant,
    parse_instant,
)

HOUR = 3600 * MICROS_PER_SECOND
MINUTE = 60 * MICROS_PER_SECOND

# (input, its UTC rendering): offsets are honoured, no offset or a bare date means UTC.
ACCEPTED = [
    ("2026-03-10", "2026-03-10T00:00:00Z"),
    ("2026-03-10T09:00:00Z", "2026-03-10T09:00:00Z"),
    ("2026-03-10T09:00:00", "2026-03-10T09:00:00Z"),  # no offset: UTC
    ("2026-03-10T09:00", "2026-03-10T09:00:00Z"),  # seconds are optional
    ("2026-03-10T09:00Z", "2026-03-10T09:00:00Z"),
    ("2026-03-10T10:00:00+01:00", "2026-03-10T09:00:00Z"),
    ("2026-03-10T04:00:00-05:00", "2026-03-10T09:00:00Z"),
    ("2026-03-10T09:00:00+00:00", "2026-03-10T09:00:00Z"),
    ("2026-03-10T09:00:00-00:00", "2026-03-10T09:00:00Z"),
    ("2026-03-10T14:30:00+05:30", "2026-03-10T09:00:00Z"),  # half-hour offsets
    ("2026-03-10T00:30:00+01:00", "2026-03-09T23:30:00Z"),  # the offset moves the date back...
    ("2026-03-10T23:30:00-05:00", "2026-03-11T04:30:00Z"),  # ...or forward
    ("2026-01-01T00:30:00+01:00", "2025-12-31T23:30:00Z"),  # ...or the year
    ("2026-03-10T09:00:00.5Z", "2026-03-10T09:00:00.500000Z"),  # fractional seconds, 1 to 6 digits
    ("2026-03-10T09:00:00.123456Z", "2026-03-10T09:00:00.123456Z"),
    ("2026-03-10T09:00:00.000001+01:00", "2026-03-10T08:00:00.000001Z"),
    ("2026-03-10T09:00:00.000000Z", "2026-03-10T09:00:00Z"),  # zero fraction is not shown
    ("2024-02-29", "2024-02-29T00:00:00Z"),  # 2024 is a leap year
    ("2026-03-10T23:59:59.999999Z", "2026-03-10T23:59:59.999999Z"),
    ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
    ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59Z"),  # before the epoch
    ("1900-01-01", "1900-01-01T00:00:00Z"),  # the supported years' ends
    ("2999-12-31T23:59:59.999999Z", "2999-12-31T23:59:59.999999Z"),
]


@pytest.mark.parametrize(("text", "utc"), ACCEPTED)
def test_parse_then_format(text, utc):
    assert format_instant(parse_instant(text)) == utc


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.000001Z", 1),
        ("1969-12-31T23:59:59.999999Z", -1),
        ("1970-01-02", MICROS_PER_DAY),
        ("1970-01-01T01:00:00+01:00", 0),
        ("2026-03-10T09:00:00Z", int(datetime(2026, 3, 10, 9, tzinfo=UTC).timestamp()) * MICROS_PER_SECOND),
    ],
)
def test_parse_instant_is_epoch_microseconds(text, micros):
    assert parse_instant(text) == micros


REJECTED = [
    ("2026-3-1", "shape"),  # digits must be zero-padded
    ("2026-03-10 09:00", "shape"),  # a space for `T`
    ("2026-03-10t09:00", "shape"),  # lowercase `t`
    ("2026-03-10T09:00:00z", "shape"),  # lowercase `z`
    ("2026-W11-2", "shape"),  # week date
    ("2026-069", "shape"),  # ordinal date
    ("20260310", "shape"),  # basic format
    ("2026-03-10T0900", "shape"),
    ("2026-03-10T09", "shape"),  # hours only
    ("2026-03-10T09:00:00.1234567Z", "shape"),  # more than microseconds
    ("2026-03-10T09:00:00,5Z", "shape"),  # comma decimal
    ("2026-03-10T09:00:00+0100", "shape"),  # offset without colon
    ("2026-03-10T09:00:00+01", "shape"),  # hour-only offset
    ("2026-03-10T", "shape"),
    ("", "shape"),
    (" 2026-03-10", "shape"),
    ("2026-03-10\n", "shape"),  # a trailing newline is not ignored
    ("+2026-03-10", "shape"),
    ("２０２６-03-10", "real"),  # full-width digits: not ASCII
    ("2026-02-29", "real"),  # 2026 is not a leap year
    ("2026-02-30", "real"),
    ("2026-13-01", "real"),
    ("2026-00-10", "real"),
    ("2026-03-10T24:00", "real"),  # no 24:00, write the next day's 00:00
    ("2026-03-10T24:00:00Z", "real"),
    ("2026-03-10T25:00", "real"),
    ("2026-03-10T09:60", "real"),
    ("2026-03-10T23:59:60Z", "real"),  # no leap seconds
    ("2026-03-10T09:00:00+24:00", "real"),  # offsets stay within a day
    ("1899-12-31T23:59:59Z", "years"),  # supported years: 1900..2999
    ("3000-01-01", "years"),
    ("0001-01-01", "years"),
]


@pytest.mark.parametrize(("text", "why"), REJECTED)
def test_parse_instant_rejects(text, why):
    with pytest.raises(ValueError) as caught:
        parse_instant(text)
    # the message quotes the value and says whether its shape or its calendar is wrong
    assert f"`{text}`" in str(caught.value)
    expected = {
        "shape": "is not an ISO-8601 timestamp",
        "real": "is not a real date or time",
        "years": "is outside the supported years",
    }[why]
    assert expected in str(caught.value)


@pytest.mark.parametrize("value", [None, 20260310, 1.5, b"2026-03-10"])
def test_parse_instant_rejects_non_strings(value):
    with pytest.raises(ValueError):
        parse_instant(value)


def test_schema_pattern_is_the_parser_shape():
    # The JSON Schemas embed TIMESTAMP_PATTERN; a shape the schema accepts is one the parser
    # checks next (and vice versa), so the two layers cannot drift apart.
    import json
    import re
    from pathlib import Path

    schema = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "request.v1.schema.json").read_text())
    assert schema["properties"]["current_date"]["pattern"] == TIMESTAMP_PATTERN
    for text, _ in ACCEPTED:
        assert re.search(TIMESTAMP_PATTERN, text)


def test_days_is_exactly_24_hours_each():
    assert days(3) == 3 * 24 * HOUR
    assert days(0) == 0
    # across the 2026-03-29 EU daylight-saving change: still 24 h, we work in UTC
    assert parse_instant("2026-03-28T09:00:00Z") + days(1) == parse_instant("2026-03-29T09:00:00Z")


@given(st.integers(min_value=parse_instant("1900-01-01"), max_value=parse_instant("2999-12-31T23:59:59.999999")))
def test_format_then_parse_round_trips(micros):
    text = format_instant(micros)
    assert text.endswith("Z")
    assert parse_instant(text) == micros


@given(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2999, 12, 30)),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_offsets_are_honoured(moment, offset_minutes):
    # The same wall-clock reading with an offset of +X is X earlier in UTC.
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    local = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "")
    utc = parse_instant(local)
    assert parse_instant(f"{local}{sign}{hours:02d}:{minutes:02d}") == utc - offset_minutes * MINUTE


DURATIONS = [
    (0, "0s"),
    (-5 * MICROS_PER_SECOND, "0s"),  # negative is clamped
    (999_999, "0s"),  # under a second
    (1_500_000, "1s"),  # floored to the second
    (40 * MICROS_PER_SECOND, "40s"),
    (60 * MICROS_PER_SECOND, "1m"),
    (90 * MICROS_PER_SECOND, "1m 30s"),
    (2 * HOUR, "2h"),
    (3 * HOUR + 5 * MINUTE, "3h 5m"),
    (3 * HOUR + 5 * MINUTE + 7 * MICROS_PER_SECOND, "3h 5m"),  # seconds only shown under an hour
    (MICROS_PER_DAY, "1d"),
    (MICROS_PER_DAY + 22 * HOUR, "1d 22h"),
    (MICROS_PER_DAY + 5 * MINUTE, "1d 5m"),
    (3 * MICROS_PER_DAY + 30 * MICROS_PER_SECOND, "3d"),
    (400 * MICROS_PER_DAY + HOUR + MINUTE, "400d 1h 1m"),
]


@pytest.mark.parametrize(("micros", "text"), DURATIONS)
def test_format_duration(micros, text):
    assert format_duration(micros) == text


def _outcome(parse, text):
    try:
        return parse(text)
    except ValueError as exc:
        return str(exc)


# Digits anywhere in the usual zoned shapes, in or out of range, and a few characters that are not
# ASCII digits: the quick way (`parse_instant`) must answer what the checked way answers, value or message.
_DIGIT = st.sampled_from("0123456789" * 4 + "٣²x")


@given(
    st.lists(_DIGIT, min_size=20, max_size=20),
    st.sampled_from(["", ".", ".5", ".123", ".123456", ".1234567"]),
    st.sampled_from(["Z", "+", "-", "", "z"]),
)
def test_the_quick_way_agrees_with_the_checked_way(digits, fraction, zone):
    d = "".join(digits)
    offset = f"{zone}{d[14:16]}:{d[16:18]}" if zone in "+-" and zone else zone
    text = f"{d[0:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}{fraction}{offset}"
    assert _outcome(parse_instant.__wrapped__, text) == _outcome(_parse_checked, text)


@given(
    st.datetimes(min_value=datetime(1899, 12, 30), max_value=datetime(3000, 1, 2)),
    st.sampled_from(["Z", "+00:00", "-23:59", "+05:30", "+24:00"]),
)
def test_the_quick_way_agrees_with_the_checked_way_on_real_instants(moment, zone):
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "") + zone
    assert _outcome(parse_instant.__wrapped__, text) == _outcome(_parse_checked, text)
