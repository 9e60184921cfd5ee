"""Reading a log a page at a time, whatever the database: what every store shares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import anyio
import msgspec

from tracker.background import background
from tracker.events import codec
from tracker.events.records import LeanRow, Recorded, ReplayRow
from tracker.events.types import EVENT_TYPES, Event

READ_PAGE = 5000
"""Events per page of a read or a replay."""
MAX_POSITION = 2**63 - 1

_decode_page = msgspec.json.Decoder(list[tuple[int, str, int, str, Event]]).decode


def decode_replay_page(page: str | bytes | None) -> list[ReplayRow] | None:
    """A replay page as a database builds it: one JSON array of [position, stream, version,
    recorded_at, data] arrays, each event's data embedded as it is stored (see
    `embeddable`), decoded at once, in C. None if it is not one (a null stands for an
    event the database would not embed)."""
    try:
        return _decode_page(page) if page is not None else None
    except msgspec.DecodeError:  # ValidationError is a subclass
        return None


_COMMONEST = {
    name: rank
    for rank, name in enumerate(
        ["TaskUpdated", "TaskCreated", "TimerStarted", "TimerFinished", "TimerPaused"]
    )
}
"""The types most events of a log are of, the commonest first (a CASE tries its branches
in turn, and this one runs for every event a replay reads)."""


def embeddable(data_begins_with: Callable[[bytes], str]) -> str:
    """SQL that is true for an event that a replay page may embed with its data as stored:
    its schema is its type's current one and its data begins with its type's tag (so it
    decodes to that type, as a row by row read would, and needs no upcasting).
    `data_begins_with(prefix)` is SQL that is true when the data begins with `prefix`.
    (The data must also be one valid JSON value: a store checks that in its own way.)"""
    by_frequency = sorted(EVENT_TYPES, key=lambda name: _COMMONEST.get(name, len(_COMMONEST)))
    cases = " ".join(
        f"WHEN '{name}' THEN schema = {EVENT_TYPES[name].schema} AND {data_begins_with(_tag(name))}"
        for name in by_frequency
    )
    return f"CASE type {cases} ELSE FALSE END"


def _tag(name: str) -> bytes:
    """How the stored data of an event of type `name` begins."""
    return b'{"type":"' + name.encode() + b'"'


class LeanPage:
    """Events read row by row, as stored, and decoded one by one as the page is iterated:
    an event that cannot be read is refused in its turn, after those before it were
    applied."""

    def __init__(self, rows: Sequence[LeanRow]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ReplayRow]:
        return map(_decoded, self.rows)


def _decoded(row: LeanRow) -> ReplayRow:
    position, stream, version, type_, schema, data, recorded_at = row
    return position, stream, version, recorded_at, codec.decode_data(type_, schema, data, position)


ReplayPage = Sequence[ReplayRow] | LeanPage
"""Events handed to a replay at once: decoded, or decoded as they are iterated."""
ReplayCallback = Callable[[Iterable[ReplayRow]], object]
"""What a replay hands its pages to: it applies every row, in order."""
RowReader = Callable[[int, int], Awaitable[Sequence[Any]]]
"""`read(after, size)`: up to `size` rows (position first) after a position, in order."""
PageBuilder = Callable[[int, int, int], Awaitable[Sequence[ReplayRow] | None]]
"""`read(after, until, size)`: up to `size` events after a position, up to another, as
one document the database builds (None if it cannot)."""
LeanReader = Callable[[int, int, int], Awaitable[Sequence[LeanRow]]]
"""`read(after, until, size)`: the same, read row by row, as stored."""


async def pages(read: RowReader, after: int, limit: int | None = None) -> AsyncIterator[Any]:
    """Every row after `after` (at most `limit` of them), a page at a time, in order."""
    last, left = after, limit
    while left != 0:
        size = READ_PAGE if left is None else min(READ_PAGE, left)
        rows = await read(last, size)
        if rows:
            yield rows
        if len(rows) < size:
            return
        last = rows[-1][0]
        if left is not None:
            left -= len(rows)


async def replay_rows(
    built: PageBuilder, lean: LeanReader, after: int, until: int | None
) -> AsyncIterator[ReplayPage]:
    """The events after `after` (up to `until`), a page at a time, in position order.

    Each page is first asked of the database as one JSON document it builds itself
    (`built`): the work per row then happens in the database's own thread or process,
    and the decoding in C, while the projection applies the page before. A page that
    cannot be had that way, or does not run on from the last one without a gap (or is
    empty), is read again row by row (`lean`), as any other read, and its events are
    decoded one by one: a damaged store then raises `StorageError`, and bad data or a
    gap is named when its event's turn comes.
    """
    last, end = after, MAX_POSITION if until is None else until
    while last < end:
        built_page = await built(last, end, READ_PAGE)
        page: ReplayPage
        if built_page is not None and follows(built_page, last):
            page, last = built_page, built_page[-1][0]
        else:
            rows = await lean(last, end, READ_PAGE)
            page, last = LeanPage(rows), rows[-1][0] if rows else last
        if page:
            yield page
        if len(page) < READ_PAGE:
            return


async def replay_pages(pages: AsyncIterator[ReplayPage], callback: ReplayCallback) -> int:
    """Hand every page of `pages` to `callback`; return how many rows they held.

    The next page is read while the callback works through this one (a store whose
    database works outside the GIL reads and applies at once).
    """
    send, receive = anyio.create_memory_object_stream[ReplayPage](1)

    async def read_ahead() -> None:
        async with send:
            try:
                async for page in pages:
                    await send.send(page)
            except anyio.BrokenResourceError:  # the callback failed: stop reading
                return

    count = 0
    async with receive, background(read_ahead, receive.close):
        async for page in receive:
            callback(page)
            count += len(page)
    return count


def follows(page: Sequence[ReplayRow], last: int) -> bool:
    """Whether the page's positions run on from `last` without a gap (an empty page does
    not: it is read again row by row, to be sure the log ends there). Positions only
    grow within a page (it is read in the order of the log's key), so its ends tell."""
    return bool(page) and page[0][0] == last + 1 and page[-1][0] == last + len(page)


def record(row: Any) -> Recorded:
    """A `Recorded` from a row of its columns, in field order (a tuple or a driver's record)."""
    return Recorded(
        row[0], row[1], row[2], row[3], row[4], msgspec.Raw(row[5]), row[6], row[7], row[8]
    )
