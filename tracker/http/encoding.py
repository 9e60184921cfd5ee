"""JSON in and out: bodies read within the contract's limits, responses encoded by msgspec."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from tracker.errors import BadRequest, TrackerError

MAX_BODY = 64 * 1024
"""Bodies over 64 KiB are refused (413) before they are read whole."""

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
encode = _encoder.encode
"""`content` (Structs, lists, dicts) as JSON bytes."""


class HTTPProblem(TrackerError):
    """An error that only exists at the HTTP edge (media type, size)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


RawHeaders = Iterable[tuple[bytes, bytes]]
"""Response headers as ASGI sends them: lower-case names, latin-1 bytes."""


class JSONResponse(Response):
    """A JSON body encoded once, with its headers given as raw pairs.

    Every API answer is one of these: Starlette's `Response` would turn a mapping of
    headers into raw pairs, and look through them for its own, on every request.
    """

    media_type = "application/json"

    def __init__(self, body: bytes, status: int = 200, headers: RawHeaders = ()) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"application/json"),
            *headers,
        ]


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """`content` (Structs, lists, dicts) as a JSON response."""
    return JSONResponse(encode(content), status, _raw_headers(headers or {}))


def _raw_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """`headers` as ASGI sends them."""
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]


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
    content_type, length = _body_headers(request.scope["headers"])
    if content_type is None or not is_json(content_type.decode("latin-1")):
        raise HTTPProblem(
            415, "unsupported_media_type", "the body must be application/json (UTF-8)"
        )
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


def _body_headers(headers: RawHeaders) -> tuple[bytes | None, bytes | None]:
    """The first Content-Type and Content-Length among a request's raw headers."""
    content_type = length = None
    for name, value in headers:
        if name == b"content-type" and content_type is None:
            content_type = value
        elif name == b"content-length" and length is None:
            length = value
    return content_type, length


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
