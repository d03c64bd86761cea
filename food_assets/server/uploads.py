"""What a client sent to `POST /predict`, checked before anything is decoded: the content type,
the body size (from the header and while reading), the multipart field, `k`. Each mistake is an
`ApiError` that becomes a 4xx with a JSON body naming it; nothing here returns a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request

RAW_TYPES = ("image/", "application/octet-stream")
MULTIPART = "multipart/form-data"
FIELD = "image"

#: Decode failures (`ImageDecodeError.reason`) -> (HTTP status, error code).
DECODE_ERRORS = {
    "empty file": (400, "empty_body"),
    "not an image": (400, "not_an_image"),
    "truncated or corrupt": (400, "corrupt_image"),
    "decompression bomb": (413, "too_many_pixels"),
    "unreadable": (400, "corrupt_image"),
}


@dataclass
class ApiError(Exception):
    """A client's mistake: `status` (4xx), a stable `code` and a one-line `message`."""

    status: int
    code: str
    message: str

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def check_content_type(headers: Mapping[str, str]) -> str:
    """`raw` or `multipart`; a 415 for anything else (or nothing)."""
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == MULTIPART:
        return "multipart"
    if ctype.startswith(RAW_TYPES):
        return "raw"
    got = ctype or "no Content-Type"
    raise ApiError(
        415,
        "unsupported_media_type",
        f"{got}: send the image as the raw body (image/* or application/octet-stream) or as "
        f"multipart/form-data field {FIELD!r}",
    )


def parse_k(value: str | None, default: int, upper: int) -> int:
    """`k` from the query string: an integer in [1, upper]; `default` (capped) when absent."""
    if value is None:
        return min(default, upper)
    try:
        k = int(value)
    except ValueError:
        raise ApiError(
            400, "bad_k", f"k must be an integer in [1, {upper}], not {value!r}"
        ) from None
    if not 1 <= k <= upper:
        raise ApiError(400, "bad_k", f"k must be in [1, {upper}], got {k}")
    return k


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the body is over the {limit}-byte limit (--max-body-mb)")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with a 413 as soon as it is known to exceed `limit` bytes (from
    Content-Length, else while streaming): an oversized upload is never held in memory whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def multipart_image(request: Request, body: bytes, limit: int) -> bytes:
    """The bytes of the multipart field `image` of an already read `body`."""

    async def replay() -> dict:
        nonlocal body
        chunk, body = body, b""
        return {"type": "http.request", "body": chunk, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=1, max_fields=8, max_part_size=limit
        )
    except Exception as exc:  # python-multipart / Starlette parse errors: the client's body
        raise ApiError(400, "bad_multipart", f"the multipart body does not parse ({exc})") from None
    try:
        part = form.get(FIELD)
        if part is None or isinstance(part, str):
            raise ApiError(
                400, "missing_field", f"multipart/form-data needs a file field named {FIELD!r}"
            )
        return await part.read()
    finally:
        await form.close()
