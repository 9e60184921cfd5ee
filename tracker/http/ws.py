"""`/ws`: the live feed of one principal's tasks, ticks and finished timers."""

from __future__ import annotations

import anyio
import msgspec
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from tracker.errors import AuthError, Forbidden
from tracker.http.session import authenticate, check_same_origin
from tracker.live import Hub, PingMessage, Subscription, TooManySockets, pong
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
        principal = await authenticate(websocket, tracker)
    except (AuthError, Forbidden):
        await websocket.close(UNAUTHORIZED)
        return
    try:
        await _serve(websocket, hub, principal.id)
    except TooManySockets as refused:
        # A policy of the server's, like the frames it refuses: 1008, with the limit said.
        await websocket.close(POLICY_VIOLATION, str(refused))


async def _serve(websocket: WebSocket, hub: Hub, principal_id: str) -> None:
    """Subscribe (`TooManySockets` past the principal's limit), then forward and answer."""
    async with hub.subscribe(principal_id) as subscription, anyio.create_task_group() as tasks:
        # A client that stopped reading is given up by the hub: its sends would wait for ever.
        subscription.abandon = tasks.cancel_scope.cancel
        tasks.start_soon(_forward, websocket, subscription)
        await _answer(websocket, hub, subscription)
        # Ended, not cancelled: a cancellation's traceback would hold the whole connection
        # in a reference cycle, left for a full pass of the cycle collector to free.
        subscription.close()


async def _forward(websocket: WebSocket, subscription: Subscription) -> None:
    """Send the hub's messages until the subscription ends; if the hub ended it (the
    server is going away, or this client fell behind), close with 1001."""
    try:
        async for message in subscription:
            await websocket.send_text(message)
        if _open(websocket):  # else the client left, or was closed with 1008
            await websocket.close(GOING_AWAY)
    except WebSocketDisconnect:
        pass  # the client left while a message was on its way


async def _answer(websocket: WebSocket, hub: Hub, subscription: Subscription) -> None:
    """Answer pings until the client leaves; anything else closes with 1008."""
    try:
        while True:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            text = frame.get("text")
            try:
                if text is None:
                    raise msgspec.DecodeError("binary frame")
                _client_decoder.decode(text)
            except msgspec.DecodeError:
                await websocket.close(POLICY_VIOLATION)
                return
            hub.reply(subscription, pong())
    except WebSocketDisconnect:
        pass


def _open(websocket: WebSocket) -> bool:
    """Whether neither side has closed the socket yet."""
    connected = WebSocketState.CONNECTED
    return websocket.client_state is connected and websocket.application_state is connected


ROUTES: list[BaseRoute] = [WebSocketRoute("/ws", live)]
