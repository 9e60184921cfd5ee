"""`tracker serve`'s uvicorn server: an application that fails after startup stops it."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import uvicorn

from tracker.cli import _server_class


async def failing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Starts, then fails the way a crashed background task ends the lifespan."""
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await anyio.sleep(0.2)
    raise RuntimeError("a background task failed")


async def test_an_application_that_fails_after_startup_stops_the_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(failing_app, host="127.0.0.1", port=port, log_level="critical")
    server = _server_class()(config)

    with anyio.fail_after(5):
        await server.serve()

    assert server.started
    assert server.failed
