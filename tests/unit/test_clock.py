"""Timestamps as the contract writes them: RFC 3339, UTC, millisecond precision, a `Z`."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.clock import format_timestamp, parse_timestamp, system_clock


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_767_225_600.0, "2026-01-01T00:00:00.000Z"),
        (1_795_555_828.123, "2026-11-24T21:30:28.123Z"),
        (1_795_555_828.1234, "2026-11-24T21:30:28.123Z"),
        (1_795_555_828.1236, "2026-11-24T21:30:28.124Z"),
        (1_795_555_828.9996, "2026-11-24T21:30:29.000Z"),
        (951_782_400.5, "2000-02-29T00:00:00.500Z"),
    ],
)
def test_a_timestamp_is_formatted_to_the_nearest_millisecond(seconds: float, text: str) -> None:
    assert format_timestamp(seconds) == text


def test_the_contracts_example_round_trips() -> None:
    assert format_timestamp(parse_timestamp("2026-11-24T21:10:28.123Z")) == (
        "2026-11-24T21:10:28.123Z"
    )


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-24T21:10:28.123Z",
        "2026-11-24T21:10:28.123+00:00",
        "2026-11-24T22:10:28.123+01:00",
        "2026-11-24T21:10:28.123",
    ],
    ids=["z", "utc-offset", "other-offset", "naive-is-utc"],
)
def test_any_rfc_3339_form_is_read_in_utc(text: str) -> None:
    assert parse_timestamp(text) == pytest.approx(1_795_554_628.123, abs=1e-6)


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z"])
def test_a_timestamp_that_is_not_one_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


YEAR_2100 = 4_102_444_800_000
"""In milliseconds. Far later (around year 2600) float seconds lose the millisecond."""


@settings(max_examples=200, database=None, deadline=None)
@given(milliseconds=st.integers(min_value=0, max_value=YEAR_2100))
def test_formatting_then_parsing_keeps_every_millisecond(milliseconds: int) -> None:
    text = format_timestamp(milliseconds / 1000)

    assert len(text) == 24
    assert text.endswith("Z")
    assert round(parse_timestamp(text) * 1000) == milliseconds
    assert format_timestamp(parse_timestamp(text)) == text


def test_the_system_clock_is_the_wall_clock() -> None:
    before = time.time()
    assert before <= system_clock() <= time.time()
