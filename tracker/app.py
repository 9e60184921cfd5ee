"""`create_app(settings)`: the Starlette app, and the lifespan that runs the store beneath it."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware

from tracker.auth import Passwords, TokenService, load_or_create_secret
from tracker.clock import Clock, system_clock
from tracker.config import Settings
from tracker.http import api, openapi, pages, ws
from tracker.http.errors import EXCEPTION_HANDLERS
from tracker.http.middleware import EdgeMiddleware
from tracker.http.task_lists import TaskLists
from tracker.live import Hub
from tracker.projections.model import GIL_SWITCH_SECONDS, ReadModel
from tracker.service import Tracker
from tracker.snapshots import SnapshotKeeper
from tracker.storage import open_store
from tracker.timers import TimerSupervisor

logger = logging.getLogger(__name__)


def create_app(settings: Settings, clock: Clock = system_clock) -> Starlette:
    """The whole server for `settings`; nothing runs until its lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        key = settings.secret_key
        if key is None:
            key = await anyio.to_thread.run_sync(load_or_create_secret, settings.db)
        tokens = TokenService(
            key, clock, guest_ttl=settings.guest_token_ttl, user_ttl=settings.user_token_ttl
        )
        async with open_store(settings, clock) as store:
            started = clock()
            model = await ReadModel.build(store, until=store.head)
            logger.info(
                "read model ready at position %d in %.3f s", model.position, clock() - started
            )
            store.add_listener(model.on_commit)
            passwords = Passwords(settings.bcrypt_rounds)
            await passwords.prepare()
            tracker = Tracker(
                store,
                model,
                tokens,
                passwords,
                clock,
                admins=settings.admins,
                attempts=store.attempts,
            )
            keeper = SnapshotKeeper(store, model, every=settings.snapshot_every)
            supervisor = TimerSupervisor(tracker, clock, leading=False)
            model.add_listener(supervisor.on_changes)
            hub = Hub(model, clock)
            model.add_listener(hub.on_changes)
            task_lists = TaskLists(model.board, clock)
            model.add_listener(task_lists.on_changes)
            app.state.hub = hub  # for the server's shutdown: sockets close with 1001
            _tune_runtime()
            try:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(store.follow)
                    tasks.start_soon(keeper.run)
                    # Leading at once, if this instance can: then overdue timers are
                    # finishing before the first request is served.
                    await tasks.start(store.lead, supervisor.lead)
                    tasks.start_soon(hub.run_ticker)
                    try:
                        yield {
                            "tracker": tracker,
                            "hub": hub,
                            "task_lists": task_lists,
                            "cookie_secure": settings.cookie_secure,
                        }
                    finally:
                        hub.close_all()
                        tasks.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await keeper.save()

    return Starlette(
        routes=[*api.ROUTES, *openapi.ROUTES, *ws.ROUTES, *pages.ROUTES],
        middleware=[Middleware(EdgeMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )


def _tune_runtime() -> None:
    """Settings of the interpreter for a long-running server, made once startup is done."""
    # What startup built lives as long as the process: keep the cycle collector
    # from walking it again and again under load.
    gc.freeze()
    # At the default threshold (700 allocations) a young collection ran every few
    # requests, 78 us each on average: 5 % of a busy server's time. Every 10,000
    # allocations, most of a request's objects are gone before it looks (+12 %
    # POST /api/tasks under wrk, five alternating runs).
    # What outlives a young collection here is mostly a live socket's wait for its
    # next message, gone by the next tick. Collecting the middle generation often
    # only moves those waits into the oldest one and brings on full passes, each
    # about half a second with 5,000 sockets open; so it runs 100 times rarer than
    # by default, every 700,000 allocations.
    gc.set_threshold(10_000, 70, 10)
    # Every commit goes through the database's thread, which needs the GIL twice on
    # its way. While the event loop is busy (a tick going out to 5,000 sockets), it
    # lets go of the GIL at each turn of the loop and takes it back at once, and a
    # waiting thread asks for the GIL only after a whole switch interval without
    # any hand-over: with the default 5 ms it never does, and a commit (a timer's
    # finish) waited for the end of the tick, up to 200 ms. At 0.1 ms it asks in time.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
