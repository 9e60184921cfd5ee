"""The ceiling for the HTTP scenarios: a bare Starlette app under Tracker's uvicorn settings.

`POST /echo` reads a JSON body and answers a JSON object of `--post-bytes` bytes;
`GET /blob` answers a constant JSON body of `--get-bytes` bytes. Same event loop
and HTTP implementation as `tracker serve` (uvicorn's "auto": uvloop and
httptools when installed), one worker, access log off.

Run: python -m bench.bare --port 8000 --post-bytes 250 --get-bytes 12000
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app(post_bytes: int, get_bytes: int) -> Starlette:
    blob = _padded({"items": []}, get_bytes)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def echo(request: Request) -> Response:
        body = msgspec.json.decode(await request.body())
        answer = {"id": "0123456789abcdef", "title": body.get("title", ""), "pad": ""}
        return Response(_padded(answer, post_bytes), 201, media_type="application/json")

    async def get_blob(request: Request) -> Response:
        return Response(blob, media_type="application/json")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/echo", echo, methods=["POST"]),
            Route("/blob", get_blob, methods=["GET"]),
        ]
    )


def _padded(content: dict[str, object], size: int) -> bytes:
    """`content` as JSON, with a "pad" string making it `size` bytes (or just over)."""
    content = {**content, "pad": ""}
    short = size - len(msgspec.json.encode(content))
    content["pad"] = "x" * max(0, short)
    return msgspec.json.encode(content)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--post-bytes", type=int, default=200)
    parser.add_argument("--get-bytes", type=int, default=200)
    args = parser.parse_args(argv)
    # The settings of `tracker serve` (tracker/cli.py), access log off.
    config = uvicorn.Config(
        create_app(args.post_bytes, args.get_bytes),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        ws_max_size=4096,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
