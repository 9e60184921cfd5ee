"""Running a task in the background of a block, without wrapping the block's own errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anyio


@asynccontextmanager
async def background(
    task: Callable[[], Coroutine[Any, Any, None]], stop: Callable[[], None]
) -> AsyncIterator[None]:
    """Run `task` while the block runs; on leaving, call `stop` and wait for `task` to end.

    An error raised by the block itself comes out as it was raised, not wrapped
    in an exception group, so callers can catch it by its type.
    """
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(task)
            try:
                yield
            finally:
                stop()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
