"""Reading a log a page at a time, whatever the database: what every store shares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgspec

from tracker.background import background
from tracker.events.records import Recorded, ReplayRow

READ_PAGE = 5000
"""Events per page of a read or a replay."""
MAX_POSITION = 2**63 - 1

decode_replay_page = msgspec.json.Decoder(list[tuple[int, str, int, str, int, str, str]]).decode
"""A replay page built by the database as one JSON array of
[position, stream, version, type, schema, data as a string, recorded_at] arrays."""


RowReader = Callable[[int, int], Awaitable[Sequence[Any]]]
"""`read(after, size)`: up to `size` rows (position first) after a position, in order."""
PageBuilder = Callable[[int, int, int], Awaitable[Sequence[ReplayRow]]]
"""`read(after, until, size)`: up to `size` replay rows after a position, up to another."""


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
    built: PageBuilder, lean: PageBuilder, after: int, until: int | None
) -> AsyncIterator[Sequence[ReplayRow]]:
    """Replay rows, a page at a time, in position order.

    Each page is first asked of the database as one JSON document it builds itself
    (`built`, empty if it cannot): the work per row then happens in the database's
    own thread or process while the projection applies the page before. A page that
    does not run on from the last one without a gap (or is empty) is read again row
    by row (`lean`), as any other read: a damaged store then raises `StorageError`,
    and bad data or a gap is named when the event is applied.
    """
    last, end = after, MAX_POSITION if until is None else until
    while last < end:
        page = await built(last, end, READ_PAGE)
        if not follows(page, last):
            page = await lean(last, end, READ_PAGE)
        if page:
            yield page
        if len(page) < READ_PAGE:
            return
        last = page[-1][0]


async def replay_pages(
    pages: AsyncIterator[Sequence[ReplayRow]], callback: Callable[[ReplayRow], object]
) -> int:
    """Call `callback` with every row of `pages`; return how many.

    The next page is read while the callback works through this one (a store whose
    database works outside the GIL reads and applies at once), and rows are handed
    over as they come, without an envelope.
    """
    send, receive = anyio.create_memory_object_stream[Sequence[ReplayRow]](1)

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
            for row in page:
                callback(row)
            count += len(page)
    return count


def follows(page: Sequence[ReplayRow], last: int) -> bool:
    """Whether the page's positions run on from `last` without a gap (an empty page does
    not: it is read again row by row, to be sure the log ends there)."""
    return bool(page) and [row[0] for row in page] == list(range(last + 1, last + 1 + len(page)))


def record(row: Any) -> Recorded:
    """A `Recorded` from a row of its columns, in field order (a tuple or a driver's record)."""
    return Recorded(
        row[0], row[1], row[2], row[3], row[4], msgspec.Raw(row[5]), row[6], row[7], row[8]
    )
