"""The hub: per-principal queues that never make a publisher wait."""

from __future__ import annotations

import gc
import json
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from starlette.types import Message
from starlette.websockets import WebSocket

from tests.unit.support import FakeClock
from tracker.auth import Principal
from tracker.http.ws import live
from tracker.live import (
    MAX_SOCKETS_PER_PRINCIPAL,
    QUEUE_SIZE,
    STALL_SECONDS,
    TICK_BATCH,
    Hub,
    Subscription,
    TooManySockets,
    pong,
)
from tracker.projections.board import RunClock, Task, TaskChange
from tracker.projections.model import ReadModel


def task(task_id: str) -> Task:
    return Task(
        id=task_id,
        title=task_id,
        notes="",
        done=False,
        version=1,
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )


@pytest.fixture
def hub(clock: FakeClock) -> Hub:
    return Hub(ReadModel(), clock)


async def test_a_subscription_hands_out_its_messages_in_order() -> None:
    subscription = Subscription("alice")
    assert subscription.offer("1")
    assert subscription.offer("2")

    assert [await anext(subscription), subscription.receive_nowait()] == ["1", "2"]
    with pytest.raises(anyio.WouldBlock):
        subscription.receive_nowait()


async def test_a_full_subscription_refuses_the_next_message() -> None:
    subscription = Subscription("alice")
    assert all(subscription.offer(str(number)) for number in range(QUEUE_SIZE))

    assert not subscription.offer("one too many")
    assert [subscription.receive_nowait() for _ in range(QUEUE_SIZE)][-1] == str(QUEUE_SIZE - 1)


async def test_closing_ends_the_iteration_once_what_is_queued_is_read() -> None:
    subscription = Subscription("alice")
    subscription.offer("last")
    subscription.close()

    assert not subscription.offer("after the close")
    assert [message async for message in subscription] == ["last"]
    with pytest.raises(anyio.EndOfStream):
        subscription.receive_nowait()


async def test_a_waiting_reader_wakes_for_the_next_message_and_for_the_close() -> None:
    subscription = Subscription("alice")
    received: list[str] = []

    async def read() -> None:
        async for message in subscription:
            received.append(message)
        received.append("(ended)")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        subscription.offer("woken")
        await anyio.wait_all_tasks_blocked()
        assert received == ["woken"]
        subscription.close()

    assert received == ["woken", "(ended)"]


async def test_a_subscriber_starts_with_a_snapshot_and_gets_its_own_changes_only(hub: Hub) -> None:
    async with hub.subscribe("alice") as subscription:
        hub.on_changes([TaskChange("bob", "b1", task("b1")), TaskChange("alice", "a1", task("a1"))])
        hub.on_changes([TaskChange("alice", "a1", None)])
        messages = [json.loads(subscription.receive_nowait()) for _ in range(3)]
        with pytest.raises(anyio.WouldBlock):
            subscription.receive_nowait()

    assert [m["type"] for m in messages] == ["snapshot", "task", "task_deleted"]
    assert messages[1]["task"]["id"] == "a1"
    assert messages[2]["id"] == "a1"


async def test_a_subscriber_that_falls_behind_is_disconnected_not_waited_for(hub: Hub) -> None:
    async with hub.subscribe("alice") as slow, hub.subscribe("alice") as fast:
        fast.receive_nowait()  # its snapshot; `slow` never reads anything
        for number in range(QUEUE_SIZE + 5):
            hub.publish("alice", f'{{"n": {number}}}')
            fast.receive_nowait()

        assert hub.connections == 1
        received = [message async for message in slow]

    assert len(received) == QUEUE_SIZE


async def test_a_principal_holds_at_most_its_limit_of_subscriptions(hub: Hub) -> None:
    async with AsyncExitStack() as stack:
        for _ in range(MAX_SOCKETS_PER_PRINCIPAL):
            await stack.enter_async_context(hub.subscribe("alice"))
        with pytest.raises(TooManySockets, match=f"at most {MAX_SOCKETS_PER_PRINCIPAL}"):
            await stack.enter_async_context(hub.subscribe("alice"))
        async with hub.subscribe("bob"):  # others are not counted with her
            assert hub.connections == MAX_SOCKETS_PER_PRINCIPAL + 1

    async with hub.subscribe("alice"):  # all left: she may come back
        assert hub.connections == 1


async def test_a_subscription_dropped_for_falling_behind_counts_until_it_is_left(
    hub: Hub,
) -> None:
    async with AsyncExitStack() as stack:
        slow = await stack.enter_async_context(hub.subscribe("alice"))
        for _ in range(MAX_SOCKETS_PER_PRINCIPAL - 1):
            await stack.enter_async_context(hub.subscribe("alice"))
        for number in range(QUEUE_SIZE + 1):
            hub.publish("alice", f'{{"n": {number}}}')  # nobody reads: all are dropped
        assert slow.closed
        assert hub.connections == 0

        with pytest.raises(TooManySockets):  # their sockets are not done with them yet
            await stack.enter_async_context(hub.subscribe("alice"))

    async with hub.subscribe("alice"):
        pass


async def test_a_reply_goes_to_its_subscriber_only(hub: Hub) -> None:
    async with hub.subscribe("alice") as asking, hub.subscribe("alice") as other:
        asking.receive_nowait()  # the snapshots
        other.receive_nowait()
        hub.reply(asking, pong())

        assert json.loads(asking.receive_nowait()) == {"type": "pong"}
        with pytest.raises(anyio.WouldBlock):
            other.receive_nowait()


async def test_leaving_ends_the_subscription(hub: Hub) -> None:
    async with hub.subscribe("alice") as subscription:
        assert hub.connections == 1

    assert hub.connections == 0
    assert not subscription.offer("too late")


async def test_a_tick_carries_remaining_time_from_the_due_time(hub: Hub, clock: FakeClock) -> None:
    model = ReadModel()
    hub = Hub(model, clock)
    model.board.tasks["alice"] = {"t1": task("t1"), "t2": task("t2"), "t3": task("t3")}
    model.board.clocks["t1"] = RunClock("r1", clock() - 10, clock() + 2.5)
    model.board.clocks["t2"] = RunClock("r2", None, clock() + 99)  # paused: no tick

    async with hub.subscribe("alice") as subscription:
        subscription.receive_nowait()  # the snapshot
        await hub.tick()
        tick = json.loads(subscription.receive_nowait())

    assert tick["type"] == "tick"
    assert tick["timers"] == [{"id": "t1", "remaining_seconds": 2.5}]


async def test_a_tick_reaches_every_subscribed_principal_with_a_running_timer(
    clock: FakeClock,
) -> None:
    model = ReadModel()
    hub = Hub(model, clock)
    principals = [f"p{number}" for number in range(2 * TICK_BATCH + 1)]
    for principal in principals:
        model.board.tasks[principal] = {principal: task(principal)}
        model.board.clocks[principal] = RunClock("r", clock(), clock() + 60)
    model.board.tasks["idle"] = {"i1": task("i1")}

    async with AsyncExitStack() as stack:
        subscriptions = [
            await stack.enter_async_context(hub.subscribe(principal))
            for principal in [*principals, "idle"]
        ]
        await hub.tick()
        hub.close_all()
        received = [[message async for message in s] for s in subscriptions]

    assert all(len(messages) == 2 for messages in received[:-1])  # a snapshot, a tick
    assert len(received[-1]) == 1


async def test_the_ticker_survives_a_second_boundary_between_two_readings_of_the_clock() -> None:
    readings = iter([99.9999999, 100.0000001])
    ticked = anyio.Event()

    class Boundary(Hub):
        async def tick(self) -> None:
            ticked.set()

    hub = Boundary(ReadModel(), lambda: next(readings, 100.5))
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hub.run_ticker)
            await ticked.wait()
            tasks.cancel_scope.cancel()


async def test_closing_all_ends_every_subscription(hub: Hub) -> None:
    async with hub.subscribe("alice") as subscription:
        subscription.receive_nowait()
        hub.close_all()

        assert [message async for message in subscription] == []
        assert hub.connections == 0


# The /ws endpoint, on a fake ASGI channel (the real server is in the integration tests).


class Guests:
    """Stands in for the Tracker: every token is Alice's."""

    async def authenticate(self, token: str) -> Principal:
        return Principal(id="alice", kind="guest")


class Client:
    """The ASGI server's side of one socket: frames in, and what the app sent out."""

    def __init__(self, hub: Hub) -> None:
        self.scope = {
            "type": "websocket",
            "path": "/ws",
            "headers": [(b"authorization", b"Bearer token")],
            "state": {"tracker": Guests(), "hub": hub},
        }
        self.frames, self.incoming = anyio.create_memory_object_stream[Message](4)
        self.sent: list[Message] = []
        self.gone = False
        self.stalled: anyio.Event | None = None
        """When set, every send waits for it: the client's buffers are full."""
        self.websocket: weakref.ref[WebSocket] | None = None

    async def receive(self) -> Message:
        return await self.incoming.receive()

    async def send(self, message: Message) -> None:
        if self.gone:
            raise OSError("the client left")  # as uvicorn's ClientDisconnected
        if self.stalled is not None:
            await self.stalled.wait()
        self.sent.append(message)


@asynccontextmanager
async def connected(hub: Hub) -> AsyncIterator[Client]:
    """A client through its snapshot; on leaving, the endpoint must have returned."""
    client = Client(hub)
    with client.frames, client.incoming:
        async with anyio.create_task_group() as tasks:
            websocket = WebSocket(client.scope, client.receive, client.send)
            client.websocket = weakref.ref(websocket)
            tasks.start_soon(live, websocket)
            del websocket
            await client.frames.send({"type": "websocket.connect"})
            await anyio.wait_all_tasks_blocked()
            assert [message["type"] for message in client.sent] == [
                "websocket.accept",
                "websocket.send",
            ]
            yield client
    assert hub.connections == 0


async def test_a_client_that_leaves_ends_its_subscription(hub: Hub) -> None:
    async with connected(hub) as client:
        await client.frames.send({"type": "websocket.disconnect", "code": 1000})

    assert len(client.sent) == 2


async def test_a_connection_that_ended_is_freed_without_the_cycle_collector(hub: Hub) -> None:
    # A cancelled task would leave a cycle through its CancelledError's traceback, and
    # every object of the connection with it, until a full pass of the collector.
    gc.collect()
    gc.disable()
    try:
        async with connected(hub) as client:
            await client.frames.send({"type": "websocket.disconnect", "code": 1000})
        assert client.websocket is not None
        assert client.websocket() is None
    finally:
        gc.enable()


async def test_a_client_that_leaves_while_a_message_is_on_its_way_is_no_error(hub: Hub) -> None:
    async with connected(hub) as client:
        client.gone = True
        hub.publish("alice", '{"type": "tick"}')
        await anyio.wait_all_tasks_blocked()
        await client.frames.send({"type": "websocket.disconnect", "code": 1006})


async def test_a_socket_past_the_principals_limit_closes_with_1008_and_says_why(
    hub: Hub,
) -> None:
    async with AsyncExitStack() as stack:
        for _ in range(MAX_SOCKETS_PER_PRINCIPAL):
            await stack.enter_async_context(hub.subscribe("alice"))
        client = Client(hub)
        with client.frames, client.incoming, anyio.fail_after(2):
            await client.frames.send({"type": "websocket.connect"})
            await live(WebSocket(client.scope, client.receive, client.send))

    assert client.sent == [
        {"type": "websocket.accept", "subprotocol": None, "headers": []},
        {
            "type": "websocket.close",
            "code": 1008,
            "reason": f"at most {MAX_SOCKETS_PER_PRINCIPAL} live connections per principal",
        },
    ]


async def test_a_subscription_the_hub_ends_closes_the_socket_with_1001(hub: Hub) -> None:
    async with connected(hub) as client:
        hub.close_all()
        await anyio.wait_all_tasks_blocked()
        assert client.sent[-1] == {"type": "websocket.close", "code": 1001, "reason": ""}
        await client.frames.send({"type": "websocket.disconnect", "code": 1001})


async def test_a_client_that_reads_nothing_is_given_up_once_dropped_and_stalled(
    hub: Hub, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracker.live")
    with anyio.fail_after(2):  # leaving `connected` waits for the endpoint to return
        async with connected(hub) as client:
            client.stalled = anyio.Event()  # its buffers are full: every send waits
            for number in range(QUEUE_SIZE + 2):
                hub.publish("alice", f'{{"n": {number}}}')
            await anyio.wait_all_tasks_blocked()
            clock.advance(STALL_SECONDS - 0.1)
            await hub.tick()
            await anyio.wait_all_tasks_blocked()
            assert "giving it up" not in caplog.text  # not yet

            clock.advance(0.1)
            await hub.tick()
    assert "reads nothing: giving it up" in caplog.text
