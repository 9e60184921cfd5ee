"""Ids: opaque and URL-safe for clients, and in the order they were made for the log's index."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.support import FakeClock
from tracker.service import IdMaker

API_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # ../shared/API.md: what an id may be
MILLISECONDS_UNTIL_10000 = 253_402_300_800_000


def test_an_id_is_16_url_safe_characters() -> None:
    make_id = IdMaker(FakeClock())

    made = [make_id() for _ in range(1000)]

    assert all(len(id_) == 16 and API_ID.fullmatch(id_) for id_ in made)


def test_ids_made_in_the_same_millisecond_differ_in_their_random_half() -> None:
    make_id = IdMaker(FakeClock(), ids_per_block=7)  # refilled from the system many times

    made = [make_id() for _ in range(20_000)]

    assert len(set(made)) == len(made)
    assert len({id_[:8] for id_ in made}) == 1
    assert len({id_[8:] for id_ in made}) == len(made)


def test_ids_sort_as_text_in_the_order_they_were_made() -> None:
    clock = FakeClock()
    make_id = IdMaker(clock)
    made = []
    for step in (0.001, 0.002, 0.5, 1.0, 3600.0, 86400.0 * 365):
        clock.advance(step)
        made.append(make_id())

    assert sorted(made) == made


@given(
    st.lists(
        st.integers(min_value=0, max_value=MILLISECONDS_UNTIL_10000),
        min_size=2,
        max_size=50,
        unique=True,
    )
)
def test_the_text_order_of_ids_is_the_order_of_their_milliseconds(millis: list[int]) -> None:
    clock = FakeClock()
    make_id = IdMaker(clock)
    by_id: dict[str, int] = {}
    for ms in millis:
        clock.now = ms / 1000
        by_id[make_id()] = ms

    assert [by_id[id_] for id_ in sorted(by_id)] == sorted(millis)
