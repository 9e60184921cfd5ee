"""The timer supervisor: finishes every countdown run at its due time, whoever is watching.

It keeps a heap of (due time, task, run) and one sleeper that wakes when the
earliest due time comes or changes. A due run is finished by appending
`TimerFinished` with the task's expected version, so a run paused, stopped or
restarted meanwhile is never finished, and no run is finished twice. At
startup every running run is scheduled; those that fell due while the server
was down finish at once, with their true due time.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from tracker.clock import Clock
from tracker.errors import TrackerError
from tracker.projections.board import TaskChange
from tracker.service import Tracker

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
"""How long a finish that the store refused (say, a full disk) waits before trying again."""


class TimerSupervisor:
    """Schedules running timers and finishes them when due."""

    def __init__(
        self,
        tracker: Tracker,
        clock: Clock,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        *,
        leading: bool = True,
    ) -> None:
        self._tracker = tracker
        self._clock = clock
        self._sleep = sleep
        self._heap: list[tuple[float, str, str]] = []
        self._scheduled: set[tuple[float, str, str]] = set()
        self._wake = anyio.Event()
        self._leading = leading
        """Whether runs are scheduled as they start (only while this process leads)."""

    async def lead(self) -> None:
        """Finish timers while this process leads the ones sharing the log (until cancelled).

        Every run that is running is scheduled first, so those that fell due while
        no process led finish at once, with their true due time. When the lead
        ends, the schedule is dropped: the next leader builds its own.
        """
        self._leading = True
        try:
            started = time.perf_counter()
            scheduled = self.schedule_running()
            milliseconds = (time.perf_counter() - started) * 1000
            logger.info("%d running timers scheduled in %.2f ms", scheduled, milliseconds)
            await self.run()
        finally:
            self._leading = False
            self._heap.clear()
            self._scheduled.clear()

    def schedule_running(self) -> int:
        """Schedule every run that is running now (at startup); return how many."""
        clocks = self._tracker.model.board.clocks
        for task_id, clock in clocks.items():
            if clock.running_since is not None:
                self.schedule(task_id, clock.run, clock.ends_at)
        return len(self._heap)

    def on_changes(self, changes: Sequence[TaskChange]) -> None:
        """The read model's listener: schedule every run that a change set running."""
        if not self._leading:
            return
        clocks = self._tracker.model.board.clocks
        for change in changes:
            clock = clocks.get(change.task_id)
            if clock is not None and clock.running_since is not None:
                self.schedule(change.task_id, clock.run, clock.ends_at)

    def schedule(self, task_id: str, run: str, due: float) -> None:
        """Finish `run` of the task at `due` (unless it stops running before)."""
        entry = (due, task_id, run)
        if entry in self._scheduled:
            return
        self._scheduled.add(entry)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Runs scheduled and not yet finished (one waiting to retry a refused finish is
        not counted while it waits)."""
        return len(self._heap)

    async def run(self) -> None:
        """Finish runs as they fall due, for ever (until cancelled).

        Between due times it waits for whichever comes first: the earliest due
        time (through the injected `sleep`), or a new run due even earlier. A
        finish is not waited for: a slow append never holds up the next due run.
        """
        async with anyio.create_task_group() as finishing:
            while True:
                await self._start_finishing(finishing, self._take_due())
                self._wake = wake = anyio.Event()
                delay = self._heap[0][0] - self._clock() if self._heap else math.inf
                async with anyio.create_task_group() as alarm:
                    if delay < math.inf:
                        alarm.start_soon(self._ring, wake, max(0.0, delay))
                    await wake.wait()
                    alarm.cancel_scope.cancel()

    async def _ring(self, wake: anyio.Event, delay: float) -> None:
        await self._sleep(delay)
        wake.set()

    async def finish_due(self) -> int:
        """Finish every run due by now, concurrently (their appends share commits), and
        return once all are done; how many were due. (`run` starts the same finishes
        without waiting for them; this is for whoever must know they are done, such as
        tests moving a fake clock.)"""
        due = self._take_due()
        if due:
            async with anyio.create_task_group() as finishing:
                await self._start_finishing(finishing, due)
        return len(due)

    def _take_due(self) -> list[tuple[float, str, str]]:
        """Take every run due by now off the heap."""
        now = self._clock()
        due: list[tuple[float, str, str]] = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            self._scheduled.discard(entry)
            due.append(entry)
        return due

    async def _start_finishing(
        self, finishing: TaskGroup, due: Sequence[tuple[float, str, str]]
    ) -> None:
        for number, entry in enumerate(due, start=1):
            finishing.start_soon(self._finish, entry)
            if number % 100 == 0:  # let other requests in while thousands fall due
                await anyio.lowlevel.checkpoint()

    async def _finish(self, entry: tuple[float, str, str]) -> None:
        due, task_id, run = entry
        try:
            await self._tracker.finish_timer(task_id, run, due)
        except TrackerError as exc:
            logger.warning("could not finish timer run %s of task %s: %s", run, task_id, exc)
            await self._sleep(RETRY_SECONDS)
            self.schedule(task_id, run, due)  # due already: tried again at once
