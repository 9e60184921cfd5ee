"""JSON in and out: bodies read within the contract's limits, responses encoded by msgspec."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from tracker.errors import BadRequest, TrackerError

MAX_BODY = 64 * 1024
"""Bodies over 64 KiB are refused (413) before they are read whole."""

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class HTTPProblem(TrackerError):
    """An error that only exists at the HTTP edge (media type, size)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """`content` (Structs, lists, dicts) as a JSON response, encoded once."""
    return Response(_encoder.encode(content), status, headers, "application/json")


NDJSON = "application/x-ndjson"
NDJSON_CHUNK = 64 * 1024


def ndjson_response(items: AsyncIterable[Any], headers: dict[str, str] | None = None) -> Response:
    """`items` as newline-delimited JSON, streamed in chunks as they come (constant memory)."""
    return StreamingResponse(_ndjson_chunks(items), 200, headers, NDJSON)


async def _ndjson_chunks(items: AsyncIterable[Any]) -> AsyncIterator[bytes]:
    chunk = bytearray()
    async for item in items:
        _encoder.encode_into(item, chunk, -1)
        chunk += b"\n"
        if len(chunk) >= NDJSON_CHUNK:
            yield bytes(chunk)
            chunk.clear()
    if chunk:
        yield bytes(chunk)


def accepts(request: Request, media_type: str) -> bool:
    """Whether the request's `Accept` header names `media_type` (with any parameters)."""
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == media_type for part in accept.split(","))


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def _decoder(type_: type[T]) -> msgspec.json.Decoder[T]:
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    return decoder


async def read_json(request: Request, type_: type[T]) -> T:
    """The request's JSON body as `type_`: 415, 413, 400 or 422 when it cannot be."""
    if not is_json(request.headers.get("content-type", "")):
        raise HTTPProblem(
            415, "unsupported_media_type", "the body must be application/json (UTF-8)"
        )
    length = request.headers.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit()):
        raise BadRequest("invalid Content-Length")
    if length is not None and int(length) > MAX_BODY:
        raise _too_large()
    body = await _read_body(request)
    try:
        value: T = _decoder(type_).decode(body)
        return value
    except msgspec.ValidationError:
        raise
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc


async def _read_body(request: Request) -> bytes:
    """The whole body, counted as it arrives: 413 past `MAX_BODY`, whatever was declared."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large() -> HTTPProblem:
    return HTTPProblem(413, "payload_too_large", f"the body must be at most {MAX_BODY} bytes")


def is_json(content_type: str) -> bool:
    """Whether a Content-Type names JSON in UTF-8 (other parameters are ignored)."""
    if content_type == "application/json":
        return True
    media_type, *parameters = content_type.split(";")
    if media_type.strip().lower() != "application/json":
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return False
    return True
