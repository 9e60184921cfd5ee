"""`/ws`: the live feed of one principal's tasks, ticks and finished timers."""

from __future__ import annotations

import anyio
import msgspec
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tracker.errors import AuthError, Forbidden
from tracker.http.session import authenticate, check_same_origin
from tracker.live import Hub, PingMessage, pong
from tracker.service import Tracker

UNAUTHORIZED = 4401
POLICY_VIOLATION = 1008
GOING_AWAY = 1001

_client_decoder = msgspec.json.Decoder(PingMessage)


async def live(websocket: WebSocket) -> None:
    """Authenticate, then forward the hub's messages while answering pings."""
    tracker: Tracker = websocket.state.tracker
    hub: Hub = websocket.state.hub
    await websocket.accept()
    try:
        # A page of another site could open a socket with the visitor's cookie.
        check_same_origin(websocket, required=False)
        principal = authenticate(websocket, tracker)
    except (AuthError, Forbidden):
        await websocket.close(UNAUTHORIZED)
        return
    async with hub.subscribe(principal.id) as subscription, anyio.create_task_group() as tasks:

        async def forward() -> None:
            async for message in subscription:
                await websocket.send_text(message)
            # The hub ended the subscription: the server is going away, or we fell behind.
            await websocket.close(GOING_AWAY)
            tasks.cancel_scope.cancel()

        tasks.start_soon(forward)
        try:
            while True:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                text = frame.get("text")
                try:
                    if text is None:
                        raise msgspec.DecodeError("binary frame")
                    _client_decoder.decode(text)
                except msgspec.DecodeError:
                    await websocket.close(POLICY_VIOLATION)
                    break
                hub.reply(subscription, pong())
        except WebSocketDisconnect:
            pass
        tasks.cancel_scope.cancel()


ROUTES: list[BaseRoute] = [WebSocketRoute("/ws", live)]
